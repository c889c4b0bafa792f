"""ferrio.open_file, Path and read_files: parity with the builtin open(), batching, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import sys
import threading
import time
from pathlib import Path as SyncPath

import ferrio
import pytest
from conftest import FifoWriter, LoopTicker
from ferrio import _ferrio, _files, _files_readahead
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# -- differential test: the same operations through the builtin and through ferrio ----------------

text_alphabet = st.sampled_from(["a", "b", " ", "\n", "\r", "\r\n", "é", "€", "😀", "\udcff"])
contents = st.one_of(
    st.binary(max_size=300),
    st.lists(text_alphabet, max_size=120).map(lambda parts: "".join(parts).encode("utf-8", "surrogateescape")),
)
sizes = st.one_of(st.just(-1), st.integers(0, 12), st.just(70_000))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("read"), sizes),
        st.tuples(st.just("readline"), sizes),
        st.tuples(st.just("readlines"), st.just(-1)),
        st.tuples(st.just("tell"), st.just(0)),
        st.tuples(st.just("seek0"), st.just(0)),
        st.tuples(st.just("seek_end"), st.just(0)),
        st.tuples(st.just("seek_saved"), st.just(0)),
        st.tuples(st.just("iter"), st.integers(1, 4)),
        # `async for` whose body operates on the file after each line, then goes on iterating.
        st.tuples(st.sampled_from(["iter+tell", "iter+read2", "iter+readline1"]), st.integers(1, 4)),
        st.tuples(st.just("write"), st.sampled_from(["x", "yz\n", "\r", "é"])),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("truncate"), st.just(0)),
    ),
    max_size=25,
)
modes = st.sampled_from(
    [
        ("r", {"encoding": "utf-8", "errors": "surrogateescape"}),
        ("r", {"encoding": "utf-8", "errors": "replace", "newline": ""}),
        ("r", {"encoding": "utf-8", "errors": "replace", "newline": "\r"}),
        ("r", {"encoding": "utf-8", "errors": "surrogateescape", "newline": "\r\n"}),
        ("r+", {"encoding": "utf-8", "errors": "surrogateescape"}),
        ("a+", {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}),
        ("rb", {}),
        ("rb", {"buffering": 0}),
        ("r+b", {}),
        ("wb", {}),
    ]
)


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # compared by type: the same operation must fail the same way
        return ("error", type(e))


async def _aoutcome(coro):
    try:
        return ("ok", await coro)
    except Exception as e:
        return ("error", type(e))


@pytest.fixture(params=["default batches", "tiny batches"])
def batch_sizes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "tiny batches":
        # Tiny read-ahead and line batches: every small file crosses many batch edges and rewinds.
        monkeypatch.setattr(_files_readahead, "_SMALL_CHUNK", 3)
        monkeypatch.setattr(_files_readahead, "_SEQUENTIAL_CHUNK", 7)
        monkeypatch.setattr(_files, "_LINES_HINT", 2)
        monkeypatch.setattr(_files, "_WRITE_BATCH", 4)
        monkeypatch.setattr(_files, "_PIECE_MIN", 5)
        monkeypatch.setattr(_files, "_BIG_CHUNK", 23)
        monkeypatch.setattr(_files, "_PIECES_BYTES", 23)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=contents, mode=modes, program=ops)
def test_same_results_positions_and_contents_as_builtin_open(
    tmp_path: SyncPath, batch_sizes: None, data: bytes, mode: tuple[str, dict], program: list
) -> None:
    _differential(tmp_path, data, mode, program)


# Many lines, and programs made mostly of `async for`, in the modes where lines are cut from the
# read-ahead in Rust and the next piece is read while they are handed out.
many_lines = st.lists(st.lists(text_alphabet, max_size=8).map("".join), max_size=60).map(
    lambda lines: "\n".join(lines).encode("utf-8", "surrogateescape")
)
line_modes = st.sampled_from(
    [
        ("r", {"encoding": "utf-8", "errors": "surrogateescape"}),
        ("r", {"encoding": "utf-8", "errors": "surrogateescape", "newline": "\n"}),
        ("rb", {}),
        ("rb", {"buffering": 0}),
    ]
)
iteration_ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["iter", "iter+tell", "iter+read2", "iter+readline1"]), st.integers(1, 30)),
        st.tuples(st.sampled_from(["read", "readline"]), sizes),
        st.tuples(st.sampled_from(["tell", "seek0", "seek_saved"]), st.just(0)),
    ),
    max_size=8,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=many_lines, mode=line_modes, program=iteration_ops)
def test_async_for_then_any_operation_matches_builtin_open(
    tmp_path: SyncPath, batch_sizes: None, data: bytes, mode: tuple[str, dict], program: list
) -> None:
    _differential(tmp_path, data, mode, program)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "latin-1"])
def test_bom_and_one_byte_encodings_match_builtin_open(tmp_path: SyncPath, batch_sizes: None, encoding: str) -> None:
    # The read-ahead's second reader starts where the builtin stands, from its tell() cookie: the
    # decoder state in it (a BOM already read, the byte order) must carry over.
    text = "".join(f"{i} é{'€' if encoding != 'latin-1' else ''}\n" for i in range(300))
    program = [
        ("iter", 5),
        ("tell", 0),
        ("iter+read2", 3),
        ("seek_saved", 0),
        ("readline", -1),
        ("iter", 30),
        ("read", 7),
        ("seek0", 0),
        ("iter+tell", 4),
        ("read", -1),
    ]
    _differential(tmp_path, text.encode(encoding), ("r", {"encoding": encoding}), program)


def _differential(tmp_path: SyncPath, data: bytes, mode: tuple[str, dict], program: list) -> None:
    """Runs ``program`` through the builtin ``open()`` on one copy of ``data`` and through
    ``ferrio.open_file`` on another: results, positions and final contents must match."""
    m, kwargs = mode
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(data)
    b.write_bytes(data)
    text = "b" not in m
    got_sync: list = []
    sync_saved = [0]
    with open(a, m, **kwargs) as f:
        for op, arg in program:
            if op == "read":
                got_sync.append(_outcome(lambda arg=arg: f.read(arg)))
            elif op == "readline":
                got_sync.append(_outcome(lambda arg=arg: f.readline(arg)))
            elif op == "readlines":
                got_sync.append(_outcome(f.readlines))
            elif op == "tell":
                r = _outcome(f.tell)
                if r[0] == "ok":
                    sync_saved[0] = r[1]
                got_sync.append(r)
            elif op == "seek0":
                got_sync.append(_outcome(lambda: f.seek(0)))
            elif op == "seek_end":
                got_sync.append(_outcome(lambda: f.seek(0, 2)))
            elif op == "seek_saved":
                got_sync.append(_outcome(lambda: f.seek(sync_saved[0])))
            elif op == "iter":
                lines = []
                for _ in range(arg):
                    r = _outcome(f.readline)
                    if r[0] == "error" or not r[1]:
                        break
                    lines.append(r[1])
                got_sync.append(("ok", lines))
            elif op.startswith("iter+"):
                inner = {"tell": f.tell, "read2": lambda: f.read(2), "readline1": lambda: f.readline(1)}[op[5:]]
                steps = []
                for _ in range(arg):
                    r = _outcome(f.readline)
                    if r[0] == "error" or not r[1]:
                        break
                    steps += [r[1], _outcome(inner)]
                got_sync.append(("ok", steps))
            elif op == "write":
                payload = arg if text else arg.encode("utf-8")
                got_sync.append(_outcome(lambda payload=payload: f.write(payload)))
            elif op == "flush":
                got_sync.append(_outcome(f.flush))
            elif op == "truncate":
                got_sync.append(_outcome(f.truncate))

    async def through_ferrio() -> list:
        got: list = []
        saved = 0
        async with ferrio.open_file(b, m, **kwargs) as f:
            for op, arg in program:
                if op == "read":
                    got.append(await _aoutcome(f.read(arg)))
                elif op == "readline":
                    got.append(await _aoutcome(f.readline(arg)))
                elif op == "readlines":
                    got.append(await _aoutcome(f.readlines()))
                elif op == "tell":
                    r = await _aoutcome(f.tell())
                    if r[0] == "ok":
                        saved = r[1]
                    got.append(r)
                elif op == "seek0":
                    got.append(await _aoutcome(f.seek(0)))
                elif op == "seek_end":
                    got.append(await _aoutcome(f.seek(0, 2)))
                elif op == "seek_saved":
                    got.append(await _aoutcome(f.seek(saved)))
                elif op == "iter":
                    lines = []
                    try:
                        async for line in f:
                            lines.append(line)
                            if len(lines) == arg:
                                break
                    except Exception:
                        pass  # the builtin side records the same failure as "no more lines"
                    got.append(("ok", lines))
                elif op.startswith("iter+"):
                    ainner = {"tell": f.tell, "read2": lambda: f.read(2), "readline1": lambda: f.readline(1)}[op[5:]]
                    steps = []
                    try:
                        async for line in f:
                            steps += [line, await _aoutcome(ainner())]
                            if len(steps) == 2 * arg:
                                break
                    except Exception:
                        pass
                    got.append(("ok", steps))
                elif op == "write":
                    payload = arg if text else arg.encode("utf-8")
                    got.append(await _aoutcome(f.write(payload)))
                elif op == "flush":
                    got.append(await _aoutcome(f.flush()))
                elif op == "truncate":
                    got.append(await _aoutcome(f.truncate()))
        return got

    got_async = asyncio.run(through_ferrio())
    assert got_async == got_sync
    assert b.read_bytes() == a.read_bytes()


# -- error parity ----------------------------------------------------------------------------------


async def test_open_errors_match_the_builtin(tmp_path: SyncPath) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match=r"\[Errno 2\] No such file or directory") as info:
        await ferrio.open_file(missing)
    assert (info.value.errno, info.value.filename) == (errno.ENOENT, str(missing))
    for mode in ("r", "rb"):  # "rb" opens cached paths on the loop's thread: same errors
        with pytest.raises(IsADirectoryError, match=r"\[Errno 21\] Is a directory") as info:
            await ferrio.open_file(tmp_path, mode)
        assert info.value.filename == str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"\[Errno 2\] No such file or directory"):
        await ferrio.open_file(missing, "rb")
    with pytest.raises(ValueError, match="binary mode doesn't take an encoding argument"):
        await ferrio.open_file(tmp_path / "x", "rb", encoding="utf-8")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.write_text("x")
        locked.chmod(0)
        with pytest.raises(PermissionError, match=r"\[Errno 13\] Permission denied"):
            await ferrio.open_file(locked)
    with pytest.raises(FileExistsError, match=r"\[Errno 17\] File exists"):
        await ferrio.open_file(missing.parent, "x")
    with pytest.raises(ValueError, match="must have exactly one of create/read/write/append mode"):
        await ferrio.open_file(missing, "rw")


async def test_a_cached_binary_file_opens_and_reads_without_a_thread_hop(tmp_path: SyncPath) -> None:
    p = tmp_path / "small.bin"
    p.write_bytes(b"0123456789" * 100)
    pool = _files.io_pool()
    before = pool.stats().completed
    async with ferrio.open_file(p, "rb") as f:
        assert await f.read(10) == b"0123456789"
        assert await f.read() == b"0123456789" * 99
    async with ferrio.open_file(str(p).encode(), "rb") as f:  # bytes paths too
        assert f.name == str(p).encode()
    if pool.stats().completed != before:
        pytest.skip("this kernel has no openat2(RESOLVE_CACHED) or RWF_NOWAIT: every open hops")
    with open(p, "rb") as builtin:
        async with ferrio.open_file(p, "rb") as f:
            assert (f.name, f.mode, f.closed) == (builtin.name, builtin.mode, builtin.closed)
            assert repr(f) == f"<ferrio.AsyncFile wrapping {builtin!r}>"
            assert await f.tell() == builtin.tell()
    assert f.closed


async def test_operation_errors_match_the_builtin(tmp_path: SyncPath) -> None:
    p = tmp_path / "f.txt"
    p.write_text("hello\n")
    async with ferrio.open_file(p) as f:
        with pytest.raises(io.UnsupportedOperation, match="not writable"):
            await f.write("x")
        with pytest.raises(TypeError, match=r"write\(\) argument must be str, not bytes"):
            await f.write(b"x")
    with pytest.raises(ValueError, match=r"I/O operation on closed file\."):
        await f.read()
    with pytest.raises(ValueError, match=r"I/O operation on closed file\."):
        await f.write("x")
    async with ferrio.open_file(p, "wb") as w:
        with pytest.raises(TypeError, match="a bytes-like object is required, not 'str'"):
            await w.write("text")
        with pytest.raises(io.UnsupportedOperation, match="read"):
            await w.read()
    async with ferrio.open_file(p, "w", encoding="ascii") as w:
        with pytest.raises(UnicodeEncodeError, match="'ascii' codec can't encode"):
            await w.write("é")


async def test_read_files_and_its_errors(tmp_path: SyncPath) -> None:
    paths = []
    for i in range(50):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(bytes([i]) * (i * 100))
        paths.append(p)
    assert await ferrio.read_files(paths) == [bytes([i]) * (i * 100) for i in range(50)]
    with pytest.raises(FileNotFoundError, match="No such file or directory") as info:
        await ferrio.read_files([paths[0], tmp_path / "nope"])
    assert (info.value.errno, info.value.filename) == (errno.ENOENT, str(tmp_path / "nope"))
    # Files are read in batches on several threads: still, the first failing file in order is named.
    many = paths * 3 + [tmp_path, tmp_path / "nope"]
    with pytest.raises(IsADirectoryError) as info:
        await ferrio.read_files(many)
    assert (info.value.errno, info.value.filename) == (errno.EISDIR, str(tmp_path))
    with pytest.raises(IsADirectoryError) as builtin:
        open(tmp_path, "rb")  # noqa: SIM115 - it raises
    assert str(info.value) == str(builtin.value)  # the same message, errno and filename as open()
    # Paths as open() takes them: str, bytes, os.PathLike.
    assert await ferrio.read_files([os.fsencode(paths[3]), str(paths[4])]) == [bytes([3]) * 300, bytes([4]) * 400]


async def test_read_files_rejects_bad_input_at_the_call(tmp_path: SyncPath) -> None:
    with pytest.raises(TypeError, match=r"read_files\(\) takes an iterable of paths, got the single path"):
        await ferrio.read_files(str(tmp_path / "a"))
    with pytest.raises(TypeError, match=r"read_files\(\) expected paths .* got 3 at index 1"):
        await ferrio.read_files([tmp_path / "a", 3])
    with pytest.raises(ValueError, match="threads must be greater than 0, got 0"):
        await ferrio.read_files([], threads=0)
    with pytest.raises(TypeError, match=r"read_files\(\) expected threads to be an int, got 2.5"):
        await ferrio.read_files([], threads=2.5)  # type: ignore[arg-type]


async def test_read_files_refuses_a_nul_in_a_path_as_open_does(tmp_path: SyncPath) -> None:
    (tmp_path / "a").write_bytes(b"a")
    for bad in (str(tmp_path / "a\0b"), os.fsencode(tmp_path / "a\0b")):
        with pytest.raises(ValueError, match="embedded null byte") as builtin:
            open(bad, "rb")  # noqa: SIM115 - it raises
        with pytest.raises(type(builtin.value), match=r"read_files\(\): embedded null byte .* at index 1"):
            await ferrio.read_files([tmp_path / "a", bad])
    # A huge threads= is as good as the most threads the reader starts, not an OverflowError.
    assert await ferrio.read_files([tmp_path / "a"], threads=10**30) == [b"a"]


async def test_odd_read_sizes_get_the_builtin_s_answer(tmp_path: SyncPath) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"line one\nline two\n")
    for mode in ("rb", "r"):
        for size in (2.5, "3", 10**100, -2, True, -(10**100)):
            for op in ("read", "readline"):
                with open(p, mode) as builtin:
                    want = _outcome(lambda op=op, size=size: getattr(builtin, op)(size))
                    want_pos = builtin.tell()
                async with ferrio.open_file(p, mode) as f:
                    got = await _aoutcome(getattr(f, op)(size))
                    got_pos = await f.tell()
                assert (got, got_pos) == (want, want_pos), (mode, op, size)


async def test_an_unbuffered_write_returns_what_os_write_wrote() -> None:
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        capacity = 1 << 20  # more than the pipe holds: a non-blocking os.write() writes part of it
        async with ferrio.open_file(w, "wb", buffering=0, closefd=False) as f:
            n = await f.write(b"x" * capacity)
            assert n is not None
            assert 0 < n < capacity
            os.set_blocking(r, False)
            written = b""
            while True:  # drain what is in the pipe
                try:
                    written += os.read(r, 1 << 20)
                except BlockingIOError:
                    break
            assert len(written) == n
            # The pipe is empty again: the next write takes all that fits, and says so.
            assert await f.write(b"y" * 10) == 10
            assert await f.writelines([b"a", b"bc"]) is None
            assert os.read(r, 100) == b"y" * 10 + b"abc"
            # Full pipe: a non-blocking os.write() writes nothing, and the builtin returns None.
            while True:
                try:
                    os.write(w, b"z" * 65536)
                except BlockingIOError:
                    break
            try:
                os.write(w, b"z")
            except BlockingIOError:
                assert await f.write(b"more") is None
    finally:
        os.close(r)
        os.close(w)


async def test_unbuffered_and_line_buffered_writes_land_as_the_builtin_s_do(tmp_path: SyncPath) -> None:
    p = tmp_path / "out.txt"
    async with ferrio.open_file(p, "wb", buffering=0) as f:
        assert await f.write(b"abc") == 3
        assert p.read_bytes() == b"abc"  # os.write() at once: another reader sees it
    # Line buffering: what another reader sees after each write is what it sees with the builtin.
    seen = {}
    with open(p, "w", buffering=1, encoding="utf-8") as builtin:
        seen["builtin"] = [(builtin.write(s), p.read_text()) for s in ("one\ntw", "o", "\n")]
    async with ferrio.open_file(p, "w", buffering=1, encoding="utf-8") as f:
        assert f.line_buffering
        seen["ferrio"] = [(await f.write(s), p.read_text()) for s in ("one\ntw", "o", "\n")]
    assert seen["ferrio"] == seen["builtin"] == [(6, "one\ntw"), (1, "one\ntw"), (1, "one\ntwo\n")]


@pytest.mark.parametrize("mode", ["wb", "w"])
async def test_writes_to_a_pipe_reach_its_reader_as_the_builtin_s_do(mode: str) -> None:
    r, w = os.pipe()
    got = bytearray()
    total = 200_000  # more than the builtin's buffer (and the pipe) holds: written through at once
    reader_done = threading.Event()

    def reader() -> None:
        import select

        while len(got) < total and select.select([r], [], [], 10)[0]:
            got.extend(os.read(r, 1 << 16))
        reader_done.set()

    th = threading.Thread(target=reader)
    th.start()
    try:
        kw = {} if mode == "wb" else {"encoding": "ascii"}
        async with ferrio.open_file(w, mode, closefd=False, **kw) as f:
            data = "x" * total
            await f.write(data.encode() if mode == "wb" else data)
            # No flush yet: the builtin wrote it through (past its 8 KiB buffer); gathering did not.
            assert await asyncio.to_thread(reader_done.wait, 10)
            assert len(got) == total
    finally:
        os.close(w)
        th.join(10)
        os.close(r)


async def test_writelines_on_a_closed_file_raises_as_the_builtin(tmp_path: SyncPath) -> None:
    p = tmp_path / "out.bin"
    f = await ferrio.open_file(p, "wb")
    await f.close()
    with open(p, "wb") as builtin:
        pass
    with pytest.raises(ValueError, match="I/O operation on closed file") as want:
        builtin.writelines([])
    with pytest.raises(type(want.value), match="I/O operation on closed file"):
        await f.writelines([])


async def test_a_fifo_opens_and_reads_without_blocking_the_loop(tmp_path: SyncPath) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = FifoWriter(fifo, "through the fifo")
    # Once the loop has ticked while open_file() waited, the writer may come.
    t = LoopTicker(0.001, until=20, then=writer.go)
    try:
        async with ferrio.open_file(fifo, "rb") as f:
            assert t.count == 20, "the loop stood still while the FIFO's open waited for a writer"
            assert await f.read() == b"through the fifo"
    finally:
        t.cancel()
        writer.go()
        writer.proc.kill()
        writer.proc.wait(10)


@pytest.mark.parametrize("how", ["read_files", "read_bytes", "read_text"])
async def test_cancelled_whole_reads_of_fifos_give_their_io_threads_back(tmp_path: SyncPath, how: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer ever comes: each read waits for one
    pool = _files.io_pool()
    more_than_the_pool = pool._max_workers + 4

    def read():
        if how == "read_files":
            return ferrio.read_files([fifo])
        return getattr(ferrio.Path(fifo), how)(*(("utf-8",) if how == "read_text" else ()))

    tasks = [asyncio.ensure_future(read()) for _ in range(more_than_the_pool)]
    try:
        done, _ = await asyncio.wait(tasks, timeout=0.2)
        assert not done
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        deadline = time.monotonic() + 5
        while pool.stats().running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # polling: the readers look at their stop flag every 50 ms
        assert pool.stats().running == 0, "cancelled reads of a FIFO still hold I/O threads"
        (tmp_path / "after").write_bytes(b"after")
        assert await asyncio.wait_for(ferrio.read_files([tmp_path / "after"]), 5) == [b"after"]
    finally:
        # Without the fix, the readers would wait for a writer forever: be one, and leave.
        with contextlib.suppress(OSError):  # ENXIO: no reader is left waiting
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_character_device_is_never_read_on_the_loop_s_thread() -> None:
    async with ferrio.open_file("/dev/zero", "rb") as f:
        assert f.seekable()  # /dev/zero seeks: read-ahead may hold its bytes, read on an I/O thread
        assert not f._direct  # but no read of it runs on the loop's thread
        assert await f.read(1 << 20) == bytes(1 << 20)
        assert await f.read(100) == bytes(100)


def test_read_cached_allocates_fallibly(tmp_path: SyncPath) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(MemoryError):
            _ferrio.read_cached(fd, 1 << 50, 0)  # the size asked for is allocated first
        with pytest.raises(OverflowError):
            _ferrio.read_cached(fd, 2**63, 0)
        assert _ferrio.read_cached(fd, 100, 0) in (b"abc", None, False)  # a short read: a fresh bytes
    finally:
        os.close(fd)


async def test_path_reads_match_pathlib(tmp_path: SyncPath) -> None:
    p = tmp_path / "t.txt"
    p.write_bytes(b"a\r\nb\rc\n\xc3\xa9\xff")  # newlines to translate, an "é", a byte no UTF-8 decodes
    for args in [("utf-8", "surrogateescape"), ("latin-1", None), ("utf-8", "replace"), ("ascii", "ignore")]:
        assert await ferrio.Path(p).read_text(*args) == SyncPath(p).read_text(*args), args
    assert await ferrio.Path(p).read_bytes() == SyncPath(p).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        SyncPath(p).read_text("utf-8")
    with pytest.raises(UnicodeDecodeError):
        await ferrio.Path(p).read_text("utf-8")
    for bad, error in [
        (tmp_path / "missing", FileNotFoundError),
        (tmp_path, IsADirectoryError),
        (tmp_path / "a\0b", ValueError),
    ]:
        for method, args in [("read_bytes", ()), ("read_text", ("utf-8",))]:
            with pytest.raises(error) as want:
                getattr(SyncPath(bad), method)(*args)
            with pytest.raises(error) as got:
                await getattr(ferrio.Path(bad), method)(*args)
            if error is ValueError:
                assert "embedded null byte" in str(got.value)
            else:
                assert str(got.value) == str(want.value)
    with pytest.raises(LookupError, match="unknown encoding: nope"):
        await ferrio.Path(p).read_text("nope")


async def test_path(tmp_path: SyncPath) -> None:
    d = ferrio.Path(tmp_path) / "sub"
    assert isinstance(d, ferrio.Path)
    assert not await d.exists()
    await d.mkdir()
    assert await d.is_dir()
    f = d / "x.json"
    assert await f.write_text('{"a": 1}') == 8
    assert await f.read_text() == '{"a": 1}'
    assert await f.read_bytes() == b'{"a": 1}'
    assert await f.is_file()
    assert (await f.stat()).st_size == 8
    assert [p.name async for p in d.iterdir()] == ["x.json"]
    assert [p.name async for p in d.glob("*.json")] == ["x.json"]
    g = await f.rename(d / "y.json")
    assert g.name == "y.json"
    async with g.open() as fh:
        assert await fh.read() == '{"a": 1}'
    await g.unlink()
    with pytest.raises(FileNotFoundError):
        await g.unlink()


# -- batching, cancellation, many files, the loop keeps ticking -----------------------------------


@pytest.mark.parametrize("mode", ["rb", "r"])
async def test_a_long_line_is_read_in_pieces_that_double(
    tmp_path: SyncPath, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "one-line"
    p.write_bytes(b"x" * (16 << 20) + b"\n" + b"tail")
    kw = {} if mode == "rb" else {"encoding": "ascii"}
    pieces = []
    read_more = _files_readahead.Chunk._read_more

    def counted(self):  # the real method, counted: how many pieces the line took
        pieces.append(1)
        return read_more(self)

    monkeypatch.setattr(_files_readahead.Chunk, "_read_more", counted)
    for how in ("readline", "iter"):
        pieces.clear()
        async with ferrio.open_file(p, mode, **kw) as f:
            if how == "readline":
                line = await f.readline()
            else:
                async for line in f:  # noqa: B007 - the first line is what is checked below
                    break
            assert len(line) == (16 << 20) + 1
            assert await f.read() == (b"tail" if mode == "rb" else "tail")
        # Pieces of a fixed 256 KiB would be 64, each copying all the line read so far: time
        # quadratic in the line's length (an endless line, as in /dev/zero, never reached MemoryError).
        assert len(pieces) <= 12, how


async def test_line_iteration_crosses_few_hops(tmp_path: SyncPath) -> None:
    p = tmp_path / "lines.txt"
    p.write_text("".join(f"line {i}\n" for i in range(20_000)))
    before = _files.io_pool().stats().completed
    async with ferrio.open_file(p) as f:
        count = sum([1 async for _ in f])
    hops = _files.io_pool().stats().completed - before
    assert count == 20_000
    assert hops < 10, f"{hops} hops for {p.stat().st_size} bytes: lines must come in batches"


@pytest.mark.parametrize("chunk", ["", "abc", "a\n", "\n\n", "é\n€x\n😀\n\r", "\udcff\nz"])
def test_split_lines_cuts_whole_lines_from_a_start(chunk: str) -> None:
    for piece in (chunk, chunk.encode("utf-8", "surrogateescape")):
        for start in range(len(piece) + 2):
            nl = b"\n" if isinstance(piece, bytes) else "\n"
            *whole, _unterminated = piece[start:].split(nl)
            expected = [line + nl for line in whole]
            assert _ferrio.split_lines(piece, start) == (expected, min(start, len(piece)) + sum(map(len, expected)))


@pytest.mark.parametrize("mode", ["r", "rb"])
async def test_cancelling_async_for_leaves_the_file_where_its_lines_ended(tmp_path: SyncPath, mode: str) -> None:
    p = tmp_path / "lines.txt"
    p.write_text("".join(f"line {i}\n" for i in range(50_000)))  # several read-ahead pieces
    got: list = []
    stuck = asyncio.Event()

    async def iterate(f: ferrio.AsyncFile) -> None:
        async for line in f:
            got.append(line)
            if len(got) == 30_000:  # well past the first piece: the next one is being read ahead
                stuck.set()
                await asyncio.Event().wait()  # until cancelled

    async with ferrio.open_file(p, mode) as f:
        task = asyncio.ensure_future(iterate(f))
        await asyncio.wait_for(stuck.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rest = await asyncio.wait_for(f.read(), 10)
    whole = p.read_text() if mode == "r" else p.read_bytes()
    assert len(got) == 30_000
    assert type(rest)().join(got) + rest == whole


async def test_a_decoding_error_ahead_of_the_lines_surfaces_as_the_builtin_s(tmp_path: SyncPath) -> None:
    p = tmp_path / "bad.txt"
    p.write_bytes(b"".join(b"line %d\n" % i for i in range(50_000)) + b"\xff\n")
    with open(p, encoding="utf-8") as f, pytest.raises(UnicodeDecodeError) as sync_error:
        for _ in f:
            pass
    got = 0
    async with ferrio.open_file(p, encoding="utf-8") as f:
        with pytest.raises(UnicodeDecodeError) as async_error:
            async for _ in f:
                got += 1
    assert got <= 50_000  # the lines before the bad byte's piece, never a garbled one
    assert (async_error.value.reason, async_error.value.encoding) == (sync_error.value.reason, "utf-8")


async def test_cancelled_writes_are_not_lost(tmp_path: SyncPath) -> None:
    p = tmp_path / "out.bin"
    async with ferrio.open_file(p, "wb") as f:
        for i in range(200):
            task = asyncio.ensure_future(f.write(bytes([i % 256]) * 50_000))
            if i % 3 == 0:
                task.cancel()  # before it ran: nothing was written, and it says so
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:
                continue
            await f.write(bytes([i % 256]) * 50_000)  # write it again: it must appear exactly once
    data = p.read_bytes()
    assert len(data) == 200 * 50_000
    assert all(data[i * 50_000] == i % 256 for i in range(200))


async def test_cancelling_a_read_leaves_the_file_consistent(tmp_path: SyncPath) -> None:
    p = tmp_path / "big.bin"
    p.write_bytes(bytes(range(256)) * 40_000)
    async with ferrio.open_file(p, "rb") as f:
        task = asyncio.ensure_future(f.read(5_000_000))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancelled read ran to completion in the background or never started: the next
        # operation sees a position the builtin could have reached, and reads continue from it.
        pos = await f.tell()
        assert pos in (0, 5_000_000)
        assert await f.read(3) == bytes(range(256))[pos % 256 : pos % 256 + 3]


async def test_operations_queued_on_one_file_hold_one_io_thread(tmp_path: SyncPath) -> None:
    # A pipe's read waits for its writer on an I/O thread; more reads than the pool has threads
    # queue behind it. They wait in the file's queue, not on pool threads: other files still get
    # I/O threads, and the reads run in the order they were asked for once the bytes come.
    r, w = os.pipe()
    pool = _files.io_pool()
    more_than_the_pool = pool._max_workers + 4
    (tmp_path / "other").write_bytes(b"other")
    try:
        async with ferrio.open_file(r, "rb", buffering=0) as f:
            reads = [asyncio.ensure_future(f.read(1)) for _ in range(more_than_the_pool)]
            assert await asyncio.wait_for(ferrio.read_files([tmp_path / "other"]), 10) == [b"other"]
            async with ferrio.open_file(tmp_path / "other", "r+b") as other:  # a hop per call
                assert await asyncio.wait_for(other.read(), 10) == b"other"
            assert not any(t.done() for t in reads)
            for t in reads[1::3]:
                t.cancel()  # queued, not started: each still reads its byte, in its turn
            os.write(w, bytes(range(more_than_the_pool)))
            got = await asyncio.wait_for(asyncio.gather(*reads, return_exceptions=True), 10)
        assert [type(g) for g in got[1::3]] == [asyncio.CancelledError] * len(got[1::3])
        del got[1::3]  # the others got the bytes after theirs: the cancelled reads ran, in turn
        assert got == [bytes([i]) for i in range(more_than_the_pool) if i % 3 != 1]
    finally:
        os.close(w)


async def test_many_files_open_at_once(tmp_path: SyncPath) -> None:
    paths = [tmp_path / f"{i}.txt" for i in range(300)]
    for i, p in enumerate(paths):
        p.write_text(f"{i}\n" * 10)
    files = [await ferrio.open_file(p) for p in paths]
    try:
        heads = await asyncio.gather(*(f.readline() for f in files))
        assert heads == [f"{i}\n" for i in range(300)]
    finally:
        await asyncio.gather(*(f.close() for f in files))
    assert all(f.closed for f in files)


async def test_the_loop_keeps_ticking_during_a_large_read(tmp_path: SyncPath) -> None:
    p = tmp_path / "large.bin"
    with open(p, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    t = LoopTicker()
    async with ferrio.open_file(p, "rb") as f:
        data = await f.read()
    t.cancel()
    assert len(data) == 64 * 1024 * 1024
    assert t.count > 10
    # Reading 64 MiB takes tens of ms; the loop must never have been stuck for the whole of it.
    assert t.longest_gap < 0.5


async def test_large_reads_match_the_builtin_whether_cached_or_not(tmp_path: SyncPath) -> None:
    # Cached bytes are copied on the loop's thread; evicted ones (EAGAIN from the non-waiting
    # read) must come from an I/O thread, with the same bytes and positions either way.
    p = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 12345)
    p.write_bytes(data)
    sizes = [70_000, 65536, 1, 300_000, 2 * 1024 * 1024, 65536, 65536]
    for evict in (False, True):
        if evict:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                if ferrio._ferrio.read_cached(fd, 65536, 0) is not None:
                    pytest.skip("the page cache kept the file after POSIX_FADV_DONTNEED; nothing to fall back from")
            finally:
                os.close(fd)
        got, positions = [], []
        async with ferrio.open_file(p, "rb") as f:
            for n in sizes:
                got.append(await f.read(n))
                positions.append(await f.tell())
            got.append(await f.read())
        with open(p, "rb") as f:
            want, want_positions = [], []
            for n in sizes:
                want.append(f.read(n))
                want_positions.append(f.tell())
            want.append(f.read())
        assert got == want
        assert positions == want_positions


@pytest.mark.usefixtures("no_thread_leaks")
def test_write_is_flushed_by_close_on_error(tmp_path: SyncPath) -> None:
    p = tmp_path / "e.txt"

    async def main() -> None:
        async with ferrio.open_file(p, "w") as f:
            await f.write("kept")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        asyncio.run(main())
    assert p.read_text() == "kept"


@pytest.mark.skipif(sys.platform == "win32", reason="needs os.mkfifo")
def test_non_seekable_files_work_without_read_ahead(tmp_path: SyncPath) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "w") as w:
            w.write("a\nb\nc\n")

    t = threading.Thread(target=writer)
    t.start()

    async def main() -> list[str]:
        async with ferrio.open_file(fifo) as f:
            return [await f.readline(), await f.read(2), await f.read()]

    assert asyncio.run(main()) == ["a\n", "b\n", "c\n"]
    t.join(10)
