"""Async files: the builtin ``open()``'s semantics, without a thread hop per call.

An :class:`AsyncFile` wraps the very object the builtin ``open()`` returns, so bytes, decoded
text, newline translation, positions and errors are the builtin's by construction. What changes is
where and how often its methods run: on ferrio's I/O threads, in batches. Line iteration and
``readline`` take a batch of lines (about 64 KiB) per hop, small ``read(n)`` calls are served from a
read-ahead chunk, and writes are gathered and written together. Before any other operation the
read-ahead is *rewound*: the file seeks back to where the batch started and replays what was
consumed, so the file's position is exactly where the builtin's would be.
"""

from __future__ import annotations

import asyncio
import io
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from . import _ferrio
from ._sync import Lock
from ._threads import ThreadPool

_LINES_HINT = 64 * 1024  # bytes (or characters) of lines fetched per hop
_SMALL_CHUNK = 64 * 1024  # read-ahead for small reads
_BIG_CHUNK = 4 * 1024 * 1024  # read-ahead ceiling for large sequential reads
_WRITE_BATCH = 4 * 1024 * 1024  # gathered writes are flushed past this

_io_pool: ThreadPool | None = None


def io_pool() -> ThreadPool:
    """The pool whose threads run file operations (``ferrio-io-N``), created on first use."""
    global _io_pool
    if _io_pool is None:
        _io_pool = ThreadPool(16, thread_name_prefix="ferrio-io")
    return _io_pool


class AsyncFile:
    """A file opened by :func:`ferrio.open_file`: the builtin file object's methods, as coroutines.

    Everything the builtin object does, this does identically, in the same order; only the
    hops are batched (see the module docstring). ``name``, ``mode``, ``closed``, ``encoding``,
    ``errors`` and ``newlines`` are the builtin's attributes.

    Cancellation: an operation that already crossed to an I/O thread runs to completion there
    even if the awaiting task is cancelled, and the next operation on the file waits for it first.
    So a cancelled ``write``/``flush`` either was buffered (and is written by the next flush or by
    ``close()``) or was written whole; nothing is lost or written twice. ``close()`` (and leaving
    ``async with``, also on error or cancellation) flushes.
    """

    def __init__(self, f: Any, prefetched: tuple[Any, Any] | None = None) -> None:
        self._f = f
        self._text = isinstance(f, io.TextIOBase)
        self._empty: Any = "" if self._text else b""
        self._seekable = f.seekable()
        # Read-ahead needs a position to rewind to, and must not call tell() between a write and
        # a read (it flushes, and the builtin's read-after-write differs with and without it):
        # so it is for seekable read-only files; others make one hop per call.
        self._ahead = self._seekable and not f.writable()
        self._lock = Lock()
        self._inflight: asyncio.Future[Any] | None = None
        # Read-ahead: kind is None, "lines" or "chunk"; start is the position before the batch.
        self._kind: str | None = None
        self._start: Any = None
        self._lines: list[Any] = []
        self._i = 0  # lines consumed whole
        self._partial: dict[int, list[int]] = {}  # line index -> sizes of readline(size) cut from it
        self._chunk: Any = self._empty
        self._off = 0
        self._chunk_eof = False
        # Gathered writes.
        self._wbuf: list[Any] = []
        self._wlen = 0
        if prefetched is not None:
            self._start, self._chunk = prefetched
            self._kind = "chunk"
            self._chunk_eof = len(self._chunk) < _SMALL_CHUNK

    # -- attributes ----------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name in ("name", "mode", "closed", "encoding", "errors", "newlines", "line_buffering"):
            return getattr(self._f, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def readable(self) -> bool:
        return self._f.readable()

    def writable(self) -> bool:
        return self._f.writable()

    def seekable(self) -> bool:
        return self._seekable

    def fileno(self) -> int:
        return self._f.fileno()

    def __repr__(self) -> str:
        return f"<ferrio.AsyncFile wrapping {self._f!r}>"

    # -- the machinery ---------------------------------------------------------------------------

    def _idle(self) -> bool:
        """No operation is running or pending: memory-only fast paths may touch the state."""
        return self._inflight is None and not self._lock.locked()

    def _sync(self) -> None:
        """On an I/O thread: write what was gathered, then rewind any read-ahead (module docs)."""
        f = self._f
        if self._wbuf:
            data = self._empty.join(self._wbuf)
            self._wbuf, self._wlen = [], 0
            f.write(data)
        kind = self._kind
        if kind is None:
            return
        self._kind = None
        if kind == "lines":
            lines, consumed, partial = self._lines, self._i, self._partial
            self._lines, self._i, self._partial = [], 0, {}
            if consumed == len(lines) and not partial:
                return  # all consumed: the builtin's position is already right
            f.seek(self._start)
            for idx in range(consumed + (1 if consumed in partial else 0)):
                for size in partial.get(idx, ()):
                    f.readline(size)
                if idx < consumed:
                    f.readline()
        else:
            chunk, off = self._chunk, self._off
            self._chunk, self._off = self._empty, 0
            if off == len(chunk):
                return
            f.seek(self._start)
            if off:
                f.read(off)

    async def _run(self, fn: Callable[[], Any]) -> Any:
        """Runs ``fn`` (which may touch the builtin object and the state) on an I/O thread, one at
        a time per file; a cancelled caller leaves it running, and the next call waits for it."""
        async with self._lock:
            if self._inflight is not None:
                pending, self._inflight = self._inflight, None
                await asyncio.wait([pending])  # its outcome went to the cancelled caller
            fut = asyncio.wrap_future(io_pool().submit(fn))
            try:
                return await asyncio.shield(fut)
            except asyncio.CancelledError:
                if not fut.done():
                    self._inflight = fut
                raise

    def _after_sync(self, op: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            self._sync()
            return op()

        return run

    def _check_open(self) -> None:
        if self._f.closed:
            raise ValueError("I/O operation on closed file.")

    # -- reading -----------------------------------------------------------------------------------

    def _line(self, size: int) -> Any:
        """The next line (at most ``size`` characters or bytes if ``size >= 0``): from the batch
        when one is there, else from a new batch. Needs an I/O thread unless ``_has_line()``."""
        if not self._has_line():
            self._sync()
            f = self._f
            start = f.tell()
            # A readline() loop, not readlines(): that iterates with next(), which disables the
            # text file's tell() until the next seek.
            lines, total, readline = [], 0, f.readline
            while total < _LINES_HINT:
                line = readline()
                if not line:
                    break
                lines.append(line)
                total += len(line)
            if not lines:
                return self._empty
            self._kind, self._start, self._lines, self._i, self._partial = "lines", start, lines, 0, {}
        i = self._i
        line = self._lines[i]
        if size < 0 or size >= len(line):
            self._i = i + 1
            return line
        self._lines[i] = line[size:]
        self._partial.setdefault(i, []).append(size)
        return line[:size]

    def _has_line(self) -> bool:
        return self._kind == "lines" and self._i < len(self._lines)

    async def readline(self, size: int | None = -1) -> Any:
        """The builtin ``readline``, served from a batch of lines when one is there."""
        n = -1 if size is None else size
        if not self._ahead:
            return await self._run(self._after_sync(lambda: self._f.readline(n)))
        if self._has_line() and self._idle():
            return self._line(n)
        return await self._run(lambda: self._line(n))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            # The hot loop: lines already fetched and nothing else in flight on this file. (Like the
            # builtin's, iterating a file while other tasks operate on it is not meaningful.)
            while self._kind == "lines" and self._i < len(self._lines) and self._inflight is None:
                i = self._i
                self._i = i + 1
                yield self._lines[i]
            line = await self.readline()
            if not line:
                return
            yield line

    def _chunk_serves(self, size: int) -> bool:
        """Whether the read-ahead chunk answers ``read(size)`` exactly as the builtin would."""
        if self._kind != "chunk":
            return False
        if size < 0:
            return self._chunk_eof
        return self._off + size <= len(self._chunk) or self._chunk_eof

    def _read(self, size: int) -> Any:
        """``read(size)``: from the chunk when it serves, else rewind and read (ahead, if small)."""
        if self._chunk_serves(size):
            off, chunk = self._off, self._chunk
            end = len(chunk) if size < 0 else min(off + size, len(chunk))
            self._off = end
            return chunk[off:end]
        self._sync()
        f = self._f
        if size < 0 or not self._ahead:
            return f.read(size)
        start = f.tell()
        want = max(size, _SMALL_CHUNK) if size < _SMALL_CHUNK else max(size, min(size * 64, _BIG_CHUNK))
        chunk = f.read(want)
        self._kind, self._start, self._chunk, self._chunk_eof = "chunk", start, chunk, len(chunk) < want
        self._off = min(size, len(chunk))
        return chunk[: self._off]

    async def read(self, size: int | None = -1) -> Any:
        """The builtin ``read``; small reads are served from a read-ahead chunk."""
        n = -1 if size is None else size
        if self._chunk_serves(n) and self._idle():
            return self._read(n)
        return await self._run(lambda: self._read(n))

    async def read1(self, size: int = -1) -> Any:
        return await self._run(self._after_sync(lambda: self._f.read1(size)))

    async def readinto(self, buffer: Any) -> int:
        return await self._run(self._after_sync(lambda: self._f.readinto(buffer)))

    async def readlines(self, hint: int = -1) -> list[Any]:
        return await self._run(self._after_sync(lambda: self._f.readlines(hint)))

    # -- writing -----------------------------------------------------------------------------------

    async def write(self, data: Any) -> int:
        """The builtin ``write``: checked here, gathered, and written with the next batch."""
        self._check_open()
        if self._text:
            if not isinstance(data, str):
                raise TypeError(f"write() argument must be str, not {type(data).__name__}")
            if self._f.encoding and self._f.errors == "strict":
                data.encode(self._f.encoding)  # the builtin raises UnicodeEncodeError at write()
            n = len(data)
        else:
            try:
                view = memoryview(data)
            except TypeError:
                raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
            n = view.nbytes
            data = view.tobytes()  # the caller may reuse its buffer, as with the builtin
        if not self._f.writable():
            raise io.UnsupportedOperation("not writable")
        if self._kind is not None or not self._idle():
            await self._run(self._sync)  # a read-ahead to rewind, or an operation to wait for
        self._wbuf.append(data)
        self._wlen += len(data)
        if self._wlen >= _WRITE_BATCH:
            await self._run(self._sync)
        return n

    async def writelines(self, lines: Iterable[Any]) -> None:
        for line in lines:
            await self.write(line)

    async def flush(self) -> None:
        await self._run(self._after_sync(self._f.flush))

    # -- positioning and lifecycle ---------------------------------------------------------------

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return await self._run(self._after_sync(lambda: self._f.seek(offset, whence)))

    async def tell(self) -> int:
        return await self._run(self._after_sync(self._f.tell))

    async def truncate(self, size: int | None = None) -> int:
        return await self._run(self._after_sync(lambda: self._f.truncate(size)))

    async def close(self) -> None:
        """Flush what was gathered and close. Idempotent. If the awaiting task is cancelled, the
        close still completes on the I/O thread."""
        if self._f.closed:
            return

        def close() -> None:
            try:
                self._sync()
            finally:
                self._f.close()

        await self._run(close)

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.close()
        except asyncio.CancelledError:
            # Leaving the block because of a cancellation still closes the file: wait for it.
            if self._inflight is not None:
                await asyncio.shield(self._inflight)
            raise


class _Opening:
    """What ``open_file()`` returns: await it for the file, or use it with ``async with``."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._args, self._kwargs = args, kwargs
        self._file: AsyncFile | None = None

    def __await__(self) -> Any:
        return self._open().__await__()

    async def _open(self) -> AsyncFile:
        args, kwargs = self._args, self._kwargs

        def open_and_prefetch() -> tuple[Any, tuple[Any, Any] | None]:
            f = open(*args, **kwargs)  # noqa: SIM115 - closed by AsyncFile.close()
            try:
                if f.readable() and not f.writable() and f.seekable():
                    start = f.tell()
                    return f, (start, f.read(_SMALL_CHUNK))  # the first read of a small file needs no hop
                return f, None
            except BaseException:
                f.close()
                raise

        fut = asyncio.wrap_future(io_pool().submit(open_and_prefetch))
        try:
            f, prefetched = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The open may still complete: close what it opened rather than leak the descriptor.
            fut.add_done_callback(lambda d: d.cancelled() or d.exception() or d.result()[0].close())
            raise
        return AsyncFile(f, prefetched)

    async def __aenter__(self) -> AsyncFile:
        self._file = await self._open()
        return self._file

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._file is not None
        await self._file.__aexit__(*exc_info)


def open_file(
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[str, int], int] | None = None,
) -> _Opening:
    """Open a file for async use: exactly the builtin ``open()``'s arguments and behaviour.

    ::

        async with ferrio.open_file("log.txt", encoding="utf-8") as f:
            async for line in f:
                ...
        f = await ferrio.open_file("out.bin", "wb")

    The open itself, and every batch of reads and writes, runs on ferrio's I/O threads; errors are
    the builtin's (``FileNotFoundError`` with its errno and filename, and so on), raised here.
    """
    return _Opening((file, mode, buffering, encoding, errors, newline, closefd, opener), {})


async def read_files(paths: Iterable[str | os.PathLike[str]], *, threads: int = 8) -> list[bytes]:
    """Read many whole files in one hop, in parallel in Rust, with the GIL released.

    Returns their contents in order. Raises the first failing file's error, as ``open()`` would
    (``FileNotFoundError`` with its errno and filename, ...).
    """
    names = [os.fspath(p) for p in paths]
    fut = asyncio.wrap_future(io_pool().submit(_ferrio.read_files_blocking, names, threads))
    return await fut


_PurePath = type(pathlib.PurePath())


class Path(_PurePath):  # type: ignore[valid-type, misc]
    """``pathlib``'s pure path operations, with async versions of the ones that touch the disk.

    ::

        p = ferrio.Path("data") / "x.json"
        text = await p.read_text()

    Each disk operation is one hop to ferrio's I/O threads, running the ``pathlib.Path`` method of
    the same name, so results and errors are pathlib's.
    """

    def _blocking(self) -> pathlib.Path:
        return pathlib.Path(self)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._blocking(), name)
        return await asyncio.wrap_future(io_pool().submit(method, *args, **kwargs))

    async def read_bytes(self) -> bytes:
        return await self._call("read_bytes")

    async def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        return await self._call("read_text", encoding, errors)

    async def write_bytes(self, data: bytes) -> int:
        return await self._call("write_bytes", bytes(memoryview(data)))

    async def write_text(self, data: str, encoding: str | None = None, errors: str | None = None) -> int:
        return await self._call("write_text", data, encoding, errors)

    async def stat(self) -> os.stat_result:
        return await self._call("stat")

    async def exists(self) -> bool:
        return await self._call("exists")

    async def is_file(self) -> bool:
        return await self._call("is_file")

    async def is_dir(self) -> bool:
        return await self._call("is_dir")

    async def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        await self._call("mkdir", mode, parents, exist_ok)

    async def unlink(self, missing_ok: bool = False) -> None:
        await self._call("unlink", missing_ok)

    async def rename(self, target: str | os.PathLike[str]) -> Path:
        return Path(await self._call("rename", os.fspath(target)))

    async def iterdir(self) -> AsyncIterator[Path]:
        for p in await asyncio.wrap_future(io_pool().submit(lambda: list(self._blocking().iterdir()))):
            yield Path(p)

    async def glob(self, pattern: str) -> AsyncIterator[Path]:
        for p in await asyncio.wrap_future(io_pool().submit(lambda: list(self._blocking().glob(pattern)))):
            yield Path(p)

    def open(
        self,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> _Opening:
        """``ferrio.open_file(self, ...)``."""
        return open_file(self, mode, buffering, encoding, errors, newline)


__all__ = ("AsyncFile", "Path", "open_file", "read_files")
