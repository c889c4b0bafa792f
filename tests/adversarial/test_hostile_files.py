"""Hostile uses of ferrio's files: FIFOs, devices and sockets where a file is expected, memory and
descriptor limits, cancellation storms, files that shrink or vanish mid-read, misbehaving arguments.

The loop's thread must never block on any of them, nothing may abort the process, and what the
builtin ``open()`` would raise is what is raised."""

from __future__ import annotations

import array
import asyncio
import errno
import os
import random
import socket
import threading
import time
from pathlib import Path as SyncPath

import ferrio
import pytest
from conftest import LOOPS, FifoWriter, LoopTicker, run_python


async def _while_ticking(op, writer: FifoWriter, ticks_first: int = 20):
    """Awaits ``op`` while a task counts loop ticks; after ``ticks_first`` of them the writer is let
    go. Returns ``op``'s result and whether the loop ticked that often before ``op`` finished."""
    t = LoopTicker(0.001, until=ticks_first, then=writer.go)
    try:
        result = await op
        return result, t.count == ticks_first
    finally:
        t.cancel()
        writer.close()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _wait_for_fds(expected: set[str]) -> set[str]:
    """The open descriptors once they are back to ``expected`` (or after 10 s)."""
    deadline = time.monotonic() + 10
    while _open_fds() - expected and time.monotonic() < deadline:
        time.sleep(0.005)  # polling: the I/O thread closes the late-opened file on its own time
    return _open_fds() - expected


# -- FIFOs, devices and sockets where a file is expected ------------------------------------------


@pytest.mark.parametrize("via", ["fifo", "symlink to fifo"])
@pytest.mark.parametrize(("mode", "buffering"), [("rb", -1), ("rb", 0), ("r", -1)])
async def test_fifo_opens_and_reads_never_block_the_loop(
    tmp_path: SyncPath, via: str, mode: str, buffering: int
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = fifo
    if via == "symlink to fifo":
        path = tmp_path / "link"
        path.symlink_to(fifo)
    writer = FifoWriter(fifo, "line 1\nline 2\n")

    async def op():
        async with ferrio.open_file(path, mode, buffering) as f:
            return await f.read()

    data, ticked = await _while_ticking(op(), writer)
    assert ticked, "the loop stood still while the FIFO's open waited for a writer"
    assert data == (b"line 1\nline 2\n" if mode == "rb" else "line 1\nline 2\n")


@pytest.mark.parametrize("how", ["read_bytes", "read_text", "read_files"])
async def test_whole_file_reads_of_a_fifo_never_block_the_loop(tmp_path: SyncPath, how: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = FifoWriter(fifo, "payload")
    if how == "read_files":
        op = ferrio.read_files([fifo])
        want = [b"payload"]
    else:
        op = getattr(ferrio.Path(fifo), how)()
        want = b"payload" if how == "read_bytes" else "payload"
    data, ticked = await _while_ticking(op, writer)
    assert ticked, f"the loop stood still during {how}() of a FIFO"
    assert data == want


async def test_cancelling_a_fifo_open_that_waits_for_a_writer(tmp_path: SyncPath) -> None:
    # (A cancelled read_files() or Path.read_bytes() of a FIFO stops waiting at once: test_files.py.
    # open_file()'s open is the builtin's, on an I/O thread: it ends when the writer comes.)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = FifoWriter(fifo, "late")
    before = _open_fds()
    try:
        task = asyncio.ensure_future(ferrio.open_file(fifo, "rb"))
        # The open waits on an I/O thread for a writer that is not there yet; the cancel is at once.
        done, _ = await asyncio.wait([task], timeout=0.05)
        assert not done
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    finally:
        writer.close()  # the writer comes: the I/O thread's open and read finish, and let go
    # The file the I/O thread opened after the cancel is closed by it, not leaked.
    assert not _wait_for_fds(before), "a descriptor was left open"


async def test_a_socket_through_proc_self_fd_raises_as_open_does() -> None:
    a, b = socket.socketpair()
    try:
        path = f"/proc/self/fd/{a.fileno()}"
        with pytest.raises(OSError) as builtin:  # noqa: PT011 - its errno is checked next
            open(path, "rb")  # noqa: SIM115 - it raises
        assert builtin.value.errno == errno.ENXIO
        for mode in ("rb", "r"):
            with pytest.raises(type(builtin.value)) as info:
                await ferrio.open_file(path, mode)
            assert (info.value.errno, info.value.filename) == (builtin.value.errno, path)
        with pytest.raises(type(builtin.value)) as info:
            await ferrio.read_files([path])
        assert str(info.value) == str(builtin.value)
    finally:
        a.close()
        b.close()


async def test_character_devices_read_as_the_builtin() -> None:
    async with ferrio.open_file("/dev/null", "rb") as f:
        assert await f.read() == b""
    assert await ferrio.read_files(["/dev/null"]) == [b""]
    for buffering in (-1, 0):
        async with ferrio.open_file("/dev/zero", "rb", buffering) as f:
            for size in (1, 10, 70_000, 1 << 20, 3):
                assert await f.read(size) == bytes(size)
            assert await f.readline(5) == bytes(5)
    # An endless file: read-ahead is bounded, and async for never finds a line end in it.
    async with ferrio.open_file("/dev/zero", "rb") as f:
        assert len(await f.read1(100)) <= 100


# -- memory and descriptor limits, in a child process -----------------------------------------------

_LIMITS_CHILD = """
import asyncio, errno, os, resource, sys
import ferrio
kind, small, big = sys.argv[1:4]

def outcome(fn):
    try:
        fn()
        return "ok"
    except BaseException as e:
        return type(e).__name__

async def aoutcome(coro):
    try:
        await coro
        return "ok"
    except BaseException as e:
        return type(e).__name__

async def read_whole(path, **kw):
    async with ferrio.open_file(path, "rb", **kw) as f:
        return await f.read()

async def main():
    # Warm up: the I/O pool's threads, the loop's waker, a read_files() call.
    assert await ferrio.read_files([small]) == [b"small"]
    assert await read_whole(small) == b"small"
    if kind == "as":
        mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (mapped + (256 << 20), hard))  # 256 MiB more: no 3 GiB file
        for path in (big, "/dev/zero"):
            print(path, outcome(lambda: open(path, "rb").read()), await aoutcome(ferrio.read_files([path])),
                  await aoutcome(read_whole(path)), await aoutcome(read_whole(path, buffering=0)),
                  await aoutcome(ferrio.read_files([small, path, small])))
        # An endless line: readline() and async for grow it to MemoryError, as the builtin's readline().
        async def first_line(mode, how):
            async with ferrio.open_file("/dev/zero", mode, **({} if mode == "rb" else {"encoding": "latin-1"})) as f:
                if how == "readline":
                    return await f.readline()
                async for line in f:
                    return line
        print("/dev/zero lines", outcome(lambda: open("/dev/zero", "rb").readline()),
              *[await aoutcome(first_line(m, h)) for m in ("rb", "r") for h in ("readline", "iter")])
        # Still alive, and memory was given back: small reads work again.
        assert await ferrio.read_files([small] * 100) == [b"small"] * 100
        assert await read_whole(small) == b"small"
        print("recovered")
    else:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, hard))
        hogs = []
        while True:  # take every descriptor left
            try:
                hogs.append(os.open(small, os.O_RDONLY))
            except OSError as e:
                assert e.errno == errno.EMFILE
                break
        try:
            open(small, "rb")
        except OSError as e:
            builtin = e
        for coro in (ferrio.read_files([small]), read_whole(small), read_whole(small, buffering=0),
                     ferrio.Path(small).read_bytes()):
            try:
                await coro
            except OSError as e:
                assert (type(e), e.errno, str(e)) == (type(builtin), builtin.errno, str(builtin)), (e, builtin)
            else:
                raise AssertionError("no EMFILE")
        for fd in hogs:
            os.close(fd)
        assert await ferrio.read_files([small] * 100) == [b"small"] * 100
        print("recovered")

if sys.argv[4] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_memory_limit_gives_memory_error_as_open_read_does(tmp_path: SyncPath, loop: str) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"small")
    with open(big, "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB to read, no disk used
    proc = run_python(
        _LIMITS_CHILD.replace("sys.argv[1:4]", f"{['as', str(small), str(big)]!r}").replace("sys.argv[4]", repr(loop)),
        timeout=60,
    )
    # (The child reads 3 GiB of zeros four times over: a few seconds at most.)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines == [
        f"{big} MemoryError MemoryError MemoryError MemoryError MemoryError",
        "/dev/zero MemoryError MemoryError MemoryError MemoryError MemoryError",
        "/dev/zero lines MemoryError MemoryError MemoryError MemoryError MemoryError",
        "recovered",
    ], proc.stdout + proc.stderr[-3000:]


@pytest.mark.parametrize("loop", LOOPS)
def test_descriptor_limit_gives_the_builtin_s_emfile(tmp_path: SyncPath, loop: str) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"small")
    code = _LIMITS_CHILD.replace("sys.argv[1:4]", f"{['nofile', str(small), '']!r}").replace("sys.argv[4]", repr(loop))
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["recovered"]


# -- cancellation storms ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "buffering"), [("wb", -1), ("wb", 0), ("w", -1), ("w", 1)])
async def test_a_cancellation_storm_loses_and_repeats_no_write(tmp_path: SyncPath, mode: str, buffering: int) -> None:
    rng = random.Random(1234)
    p = tmp_path / "out"
    asked: list[int] = []

    def chunk(i: int):
        text = f"<{i}:" + "x" * rng.choice([0, 1, 100, 5000, 70_000]) + ">\n"
        return text.encode() if "b" in mode else text

    async with ferrio.open_file(p, mode, buffering, **({} if "b" in mode else {"encoding": "ascii"})) as f:
        chunks = [chunk(i) for i in range(300)]

        async def write(i: int):
            asked.append(i)  # no await before the write is asked for: a cancel lands after it
            return await f.write(chunks[i])

        tasks = []
        for i in range(300):
            tasks.append(asyncio.ensure_future(write(i)))
            if rng.random() < 0.3:
                victim = rng.choice(tasks)
                victim.cancel()
            if rng.random() < 0.2:
                await asyncio.sleep(0)  # let some start, some finish, between cancels
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, r in enumerate(results):
            if not isinstance(r, BaseException):
                assert r == len(chunks[i])  # a regular file takes all of a write, even unbuffered
    want = "".join(c if isinstance(c, str) else c.decode() for c in (chunks[i] for i in asked))
    assert p.read_text("ascii") == want


async def test_a_cancellation_storm_of_reads_keeps_every_read_exact(tmp_path: SyncPath) -> None:
    rng = random.Random(99)
    # Each 4-byte word is its own offset: a read's bytes say where it read from.
    data = b"".join((4 * i).to_bytes(4, "big") for i in range(1 << 18))
    p = tmp_path / "words"
    p.write_bytes(data)
    async with ferrio.open_file(p, "rb") as f:
        tasks = []
        for _ in range(300):
            size = 4 * rng.choice([1, 3, 100, 4096, 20_000, 70_000])
            tasks.append(asyncio.ensure_future(f.read(size)))
            if rng.random() < 0.4:
                rng.choice(tasks).cancel()
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        last = -1
        for r in results:
            if isinstance(r, bytes) and r:
                at = int.from_bytes(r[:4], "big")
                assert at > last, "reads went back"
                assert r == data[at : at + len(r)]
                last = at
        pos = await f.tell()
        assert await f.read(8) == data[pos : pos + 8]


# -- files that shrink, grow or vanish mid-read ---------------------------------------------------


async def test_a_file_deleted_mid_read_reads_on_exactly(tmp_path: SyncPath) -> None:
    p = tmp_path / "doomed"
    data = os.urandom(1 << 20)
    p.write_bytes(data)
    for mode in ("rb", "r"):
        async with ferrio.open_file(p, mode, **({} if mode == "rb" else {"encoding": "latin-1"})) as f:
            head = await f.read(1000)
            os.unlink(p)
            rest = await f.read()
        got = head + rest
        assert got == (data if mode == "rb" else data.decode("latin-1").replace("\r\n", "\n").replace("\r", "\n"))
        p.write_bytes(data)


async def test_a_file_truncated_mid_read_ends_without_error_or_garbage(tmp_path: SyncPath) -> None:
    p = tmp_path / "shrinking"
    data = bytes(range(256)) * 4096  # 1 MiB
    for cut in (0, 500, 5000, 100_000):
        p.write_bytes(data)
        async with ferrio.open_file(p, "rb") as f:
            head = await f.read(1000)
            os.truncate(p, cut)
            pieces = [head]
            while piece := await f.read(7000):
                pieces.append(piece)
                assert len(piece) <= 7000
            got = b"".join(pieces)
            assert got == data[: len(got)]  # what was read is the file's bytes, however far it got
            assert await f.read() == b""
        assert await ferrio.read_files([p]) == [data[:cut]]


async def test_read_files_of_a_growing_file_reads_a_prefix_of_it(tmp_path: SyncPath) -> None:
    p = tmp_path / "growing"
    data = os.urandom(4 << 20)
    p.write_bytes(b"")
    stop = threading.Event()

    def grow() -> None:
        with open(p, "ab", buffering=0) as w:
            for i in range(0, len(data), 65536):
                if stop.is_set():
                    return
                w.write(data[i : i + 65536])

    th = threading.Thread(target=grow)
    th.start()
    try:
        for _ in range(20):
            (got,) = await ferrio.read_files([p])
            assert got == data[: len(got)]
    finally:
        stop.set()
        th.join(10)
    # A file that says it is empty (st_size 0) but is not: read all the same, as open() does.
    with open("/proc/self/cmdline", "rb") as f:
        assert await ferrio.read_files(["/proc/self/cmdline"]) == [f.read()]


# -- misbehaving and out-of-range arguments ----------------------------------------------------------


class _BadPath:
    def __fspath__(self) -> str:
        raise RuntimeError("no path for you")


class _Index:
    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        if self.value < 0:
            raise ArithmeticError("bad index")
        return self.value


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:
        return ("error", type(e), str(e))


async def _aoutcome(coro):
    try:
        return ("ok", await coro)
    except Exception as e:
        return ("error", type(e), str(e))


async def test_misbehaving_and_out_of_range_arguments_get_the_builtin_s_errors(tmp_path: SyncPath) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"0123456789\n" * 10)
    with pytest.raises(RuntimeError, match="no path for you"):
        open(_BadPath())  # noqa: SIM115 - it raises
    with pytest.raises(RuntimeError, match="no path for you"):
        await ferrio.open_file(_BadPath(), "rb")
    with pytest.raises(RuntimeError, match="no path for you"):
        await ferrio.read_files([_BadPath()])
    args = [_Index(3), _Index(-1), float("inf"), float("nan"), 10**100, -(10**100), None, "1", b"1", 2**63 - 1]
    # A read of 1 TiB: the builtin allocates it up front and (unless memory is overcommitted
    # without limit) raises MemoryError, even with only 110 bytes to read; so must this.
    args.append(1 << 40)
    for mode in ("rb", "r"):
        for op in ("read", "readline", "read1", "readlines", "seek", "truncate"):
            for arg in args:
                if op == "read1" and mode == "r":
                    continue  # text files have no read1, either way
                kw = {} if mode == "rb" else {"encoding": "ascii"}
                fmode = "r+b" if op == "truncate" and mode == "rb" else ("r+" if op == "truncate" else mode)
                p.write_bytes(b"0123456789\n" * 10)
                with open(p, fmode, **kw) as builtin:
                    want = _outcome(lambda op=op, arg=arg: getattr(builtin, op)(arg))
                p.write_bytes(b"0123456789\n" * 10)
                async with ferrio.open_file(p, fmode, **kw) as f:
                    got = await _aoutcome(getattr(f, op)(arg))
                assert got == want, (mode, op, arg)
    async with ferrio.open_file(p, "wb") as f:
        for data in (memoryview(b"abcdef")[::2], array.array("i", [1, 2]), memoryview(b"abcd").cast("B", (2, 2))):
            with open(tmp_path / "builtin", "wb") as builtin:
                want = _outcome(lambda data=data: builtin.write(data))
            assert await _aoutcome(f.write(data)) == want, data
    for threads in (float("inf"), float("nan"), -(10**100), "8"):
        with pytest.raises((TypeError, ValueError), match="threads"):
            await ferrio.read_files([p], threads=threads)  # type: ignore[arg-type]


async def test_open_file_refuses_what_open_refuses_with_the_same_error(tmp_path: SyncPath) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"data")
    calls = [
        ((str(p) + "\0x", "rb"), {}),
        ((os.fsencode(p) + b"\0", "rb"), {}),
        ((str(p) + "\0x",), {}),
        ((2.5, "rb"), {}),
        ((None, "rb"), {}),
        ((-1, "rb"), {}),
        ((10**30, "rb"), {}),
        ((p, 3), {}),
        ((p, "rbx"), {}),
        ((p, "rb", 10**30), {}),
        ((p, "rb", "big"), {}),
        ((p, "rb", 2.5), {}),
        ((p, "r"), {"encoding": 3}),
        ((p, "r"), {"encoding": "no-such-codec"}),
        ((p, "r"), {"newline": "x"}),
        ((p, "r"), {"errors": 3}),
        ((p, "rb"), {"closefd": False}),
        ((p, "rb"), {"opener": lambda path, flags: -5}),
        ((p, "rb"), {"opener": lambda path, flags: "fd"}),
        ((_BadPath(), "rb"), {}),
    ]
    for args, kwargs in calls:
        want = _outcome(lambda args=args, kwargs=kwargs: open(*args, **kwargs).close())
        got = await _aoutcome(_open_and_close(*args, **kwargs))
        assert got == want, (args, kwargs)


async def _open_and_close(*args, **kwargs) -> None:
    f = await ferrio.open_file(*args, **kwargs)
    await f.close()


@pytest.mark.parametrize("files", [1, 40])  # read on the calling thread; on reading threads
def test_ctrl_c_stops_a_read_files_that_waits_on_the_main_thread(tmp_path: SyncPath, files: int) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer ever comes
    (tmp_path / "f").write_bytes(b"f")
    paths = [str(fifo)] + [str(tmp_path / "f")] * (files - 1)
    code = f"""
import os, signal, threading, time
from ferrio import _ferrio

def waiting_in_poll():
    for t in os.listdir("/proc/self/task"):
        try:
            if "poll" in open(f"/proc/self/task/{{t}}/wchan").read():
                return True
        except OSError:
            pass
    return False

def interrupt():
    deadline = time.monotonic() + 10
    while not waiting_in_poll() and time.monotonic() < deadline:
        time.sleep(0.005)  # polling: the read's wait for the FIFO's writer shows in /proc
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupt, daemon=True).start()
try:
    _ferrio.read_files_blocking({paths!r}, 4)
except KeyboardInterrupt:
    print("interrupted")
"""
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "interrupted"


def test_fork_while_read_files_runs_leaves_a_child_that_reads(tmp_path: SyncPath) -> None:
    for i in range(100):
        (tmp_path / f"{i}").write_bytes(bytes([i]) * (i * 500))
    code = f"""
import os, signal, threading, time, warnings
from ferrio import _ferrio
warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: the point of the test
paths = [os.path.join({str(tmp_path)!r}, str(i)) for i in range(100)]
want = [bytes([i]) * (i * 500) for i in range(100)]
done = threading.Event()

def busy():
    while not done.is_set():
        assert _ferrio.read_files_blocking(paths, 8) == want

t = threading.Thread(target=busy)
t.start()
hung = 0
for _ in range(20):
    pid = os.fork()
    if pid == 0:  # the child: its readers must not wait on a lock a parent reader held
        os._exit(0 if _ferrio.read_files_blocking(paths[:40], 4) == want[:40] else 1)
    deadline = time.monotonic() + 10
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            assert os.waitstatus_to_exitcode(status) == 0, status
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            hung += 1
            break
        time.sleep(0.005)  # polling: waitpid has no timeout
done.set()
t.join(30)
print("hung", hung)
"""
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "hung 0"


def test_a_file_size_limit_raises_efbig_as_the_builtin_does(tmp_path: SyncPath) -> None:
    # Python ignores SIGXFSZ: past RLIMIT_FSIZE a write fails with EFBIG instead of killing us.
    code = f"""
import asyncio, os, resource, ferrio
path = {str(tmp_path / "out")!r}
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

def builtin(buffering):
    try:
        with open(path, "wb", buffering) as f:
            for _ in range(64):
                f.write(b"x" * 65536)
    except OSError as e:
        return e.errno, os.path.getsize(path)

async def ours(buffering):
    try:
        async with ferrio.open_file(path, "wb", buffering) as f:
            for _ in range(64):
                await f.write(b"x" * 65536)
    except OSError as e:
        return e.errno, os.path.getsize(path)

async def main():
    for buffering in (-1, 0):
        print(builtin(buffering) == await ours(buffering) == (27, 1 << 20))

asyncio.run(main())
"""
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "True"]


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr refused")


class _BadReprPath(os.PathLike):
    def __fspath__(self) -> str:
        return "x"

    def __repr__(self) -> str:
        raise RuntimeError("repr refused")


async def test_a_failing_repr_does_not_hide_what_was_wrong() -> None:
    with pytest.raises(TypeError, match=r"expected paths .* got <_BadRepr object> at index 0"):
        await ferrio.read_files([_BadRepr()])
    with pytest.raises(TypeError, match=r"got the single path <_BadReprPath object>"):
        await ferrio.read_files(_BadReprPath())


def test_no_room_for_a_reading_thread_is_a_runtime_error_not_a_panic(tmp_path: SyncPath) -> None:
    (tmp_path / "f").write_bytes(b"f")
    code = f"""
import os, resource
from ferrio import _ferrio
# No read_files() before: glibc would keep the stack of its finished thread, and reuse it.
mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (mapped + (512 << 10), resource.RLIM_INFINITY))  # no 2 MiB stack
try:
    _ferrio.read_files_blocking([{str(tmp_path / "f")!r}] * 40, 4)  # more than one batch: threads
except RuntimeError as e:
    print(e)
"""
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "read_files() could not start a thread to read with: Resource temporarily unavailable" in proc.stdout
