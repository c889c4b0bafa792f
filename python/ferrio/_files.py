"""Async files: the builtin ``open()``'s semantics, without a thread hop per call.

An :class:`AsyncFile` wraps the very object the builtin ``open()`` returns, so bytes, decoded
text, newline translation, positions and errors are the builtin's by construction. What changes is
where and how often its methods run: on ferrio's I/O threads, in batches. ``readline`` and small
``read(n)`` calls are served from a read-ahead chunk (64 KiB, growing to 256 KiB as reading goes
on); ``async for`` has the chunk's lines cut in Rust and hands them out while an I/O thread reads
the next piece; writes are gathered and written together. Before any other operation the
read-ahead is *rewound*, so that the builtin object stands exactly where it would without it:
a binary file seeks to where the batch started plus what was consumed; a text file, whose
positions are cookies recording the decoder's history, was never moved (its read-ahead went
through a second reader of the same descriptor) and replays the calls that were served. Each
kind of read-ahead is a small class of ``_files_readahead``, with its own rewind.

The operations on one file run in the order they were asked for, one at a time: the file keeps
a FIFO of pending operations, and at most one job on the I/O pool (its drainer) runs them.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import io
import operator
import os
import pathlib
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, AnyStr, Generic, TypeAlias, TypeVar, cast, overload

from . import _ferrio
from . import _files_readahead as _readahead
from ._errors import check_positive_int, safe_repr
from ._files_readahead import NO_READ_AHEAD, BinaryChunk, Chunk, Direct, Pieces, ReadAhead, TextChunk, TextLines
from ._threads import ThreadPool
from ._wakers import waker_for

if TYPE_CHECKING:
    from _typeshed import FileDescriptorOrPath, OpenBinaryMode, OpenTextMode
if sys.version_info >= (3, 11):
    from io import text_encoding as _text_encoding
else:  # 3.10's io has it too, from the same C module; typeshed lists io's from 3.11 on
    from _io import text_encoding as _text_encoding
if sys.version_info >= (3, 12):
    from collections.abc import Buffer
elif TYPE_CHECKING:
    from typing_extensions import Buffer
else:  # a stand-in, so that typing.get_type_hints() resolves the annotations that name it
    Buffer = bytes | bytearray | memoryview

T = TypeVar("T")
# An operation queued behind a running one: what to run, its future, and its loop's waker.
_Op: TypeAlias = "tuple[Callable[[], Any], asyncio.Future[Any], _ferrio.LoopWaker]"

_get_running_loop = asyncio.get_running_loop

# (The read-ahead's own sizes, _SMALL_CHUNK and _SEQUENTIAL_CHUNK, are _files_readahead's.)
_LINES_HINT = 64 * 1024  # bytes (or characters) of lines fetched per hop
_BIG_CHUNK = 4 * 1024 * 1024  # read-ahead ceiling for large sequential reads
_WRITE_BATCH = 4 * 1024 * 1024  # gathered writes are flushed past this
_PIECE_MIN = 16 * 1024  # binary reads this large are read ahead as whole pieces, not sliced
# NOTE: pieces fetched per hop. Measured on a cached 256 MiB file read in 64 KiB pieces: 4 MiB
# per hop gave 1.7 GiB/s (each batch faults in fresh memory), 256 KiB gave 4.2 GiB/s, 128 KiB 2.3.
_PIECES_BYTES = 256 * 1024
# Reads of cached data up to this size are copied on the loop's thread (about 0.1 ms at most);
# larger ones go to an I/O thread, so a huge read never stalls the loop.
_DIRECT_MAX = 1024 * 1024

_io_pool: ThreadPool | None = None


def _always_run(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """Queues ``fn`` on the I/O pool; it runs even if the returned future is cancelled first."""
    return io_pool()._run_always("ferrio.open_file()", fn)


def io_pool() -> ThreadPool:
    """The pool whose threads run file operations (``ferrio-io-N``), created on first use."""
    global _io_pool
    if _io_pool is None:
        _io_pool = ThreadPool(16, thread_name_prefix="ferrio-io")
    return _io_pool


class _PositionalReader(io.RawIOBase):
    """Reads a descriptor at a position of its own (``pread``), never moving the descriptor's
    offset, which belongs to the builtin object reading the same descriptor. Never closes it."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = os.preadv(self._fd, [buffer], self._pos)
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._pos = offset
        elif whence == os.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = os.fstat(self._fd).st_size + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


def _size_or_none(size: Any) -> int | None:
    """A read size as the fast paths take it (``None`` is -1), or ``None`` if it is anything the
    builtin treats specially or refuses (not an int, below -1, past ``sys.maxsize``): then the
    builtin itself gets it and answers, or raises, as it does."""
    if size is None:
        return -1
    if type(size) is int and -1 <= size <= sys.maxsize:
        return size
    return None


class AsyncFile(Generic[AnyStr]):
    """A file opened by :func:`ferrio.open_file`: the builtin file object's methods, as coroutines.

    Everything the builtin object does, this does identically, in the same order; only the
    hops are batched (see the module docstring). ``name``, ``mode``, ``closed``, ``encoding``,
    ``errors`` and ``newlines`` are the builtin's attributes. ``AsyncFile[str]`` for a file
    opened in text mode, ``AsyncFile[bytes]`` in binary mode: what ``read()`` returns and
    ``async for`` yields.

    Cancellation: every operation that was asked for happens, once, in the order asked, even if
    its awaiting task is cancelled (the task gets ``CancelledError`` at once; the result is
    dropped). So a cancelled ``write`` or ``flush`` is never lost nor written twice, and a cancelled
    ``seek`` still moves the position before the next operation runs. ``close()`` (and leaving
    ``async with``, also on error or cancellation) flushes.

    One difference: under ``errors="strict"``, bytes that cannot be decoded raise
    ``UnicodeDecodeError`` (as with the builtin) from the read that meets them, and with read-ahead
    that read can come up to one read-ahead piece (at most 256 KiB) earlier than the builtin's
    8 KiB refills would: lines before the bad bytes in that piece are not handed out.
    """

    # Slots: a file is opened per small read in some programs; this makes opening it cheaper.
    __slots__ = (
        "_ahead",
        "_direct",
        "_draining",
        "_empty",
        "_f",
        "_fd",
        "_gather",
        "_head",
        "_newline",
        "_nl",
        "_pending",
        "_queue_lock",
        "_ra",
        "_regular",
        "_seekable",
        "_shadow",
        "_strict_encoding",
        "_taking",
        "_text",
        "_wbuf",
        "_wlen",
        "_writable",
    )

    def __init__(self, f: Any, newline: str | None = None, *, regular: bool | None = None) -> None:
        self._f = f
        if regular is None:
            try:
                regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
            except (OSError, ValueError, AttributeError):  # no descriptor (io.BytesIO, say)
                regular = False
        # Only a regular file is read or closed on the loop's thread: a pipe's, a socket's or a
        # device's reads wait for whatever feeds them, and closing a device may wait for it.
        self._regular = regular
        self._text = isinstance(f, io.TextIOBase)
        self._newline = newline
        self._shadow: io.TextIOWrapper | None = None  # text: the second reader that read-ahead goes through
        self._empty: AnyStr = "" if self._text else b""  # type: ignore[assignment]  # the mode decides
        # Where lines end at "\n" in what read() returns (binary; text with newline None, which
        # read() has already translated, or "\n"), lines are cut from a read-ahead chunk.
        self._nl: Any = (None if newline not in (None, "\n") else "\n") if self._text else b"\n"
        self._seekable: bool = f.seekable()
        # Read-ahead needs a position to rewind to, and must not call tell() between a write and
        # a read (it flushes, and the builtin's read-after-write differs with and without it):
        # so it is for seekable read-only files; others make one hop per call.
        self._writable: bool = f.writable()
        # The builtin raises UnicodeEncodeError at write() under errors="strict": check the same.
        self._strict_encoding: str | None = f.encoding if self._text and f.errors == "strict" else None
        self._ahead = self._seekable and not self._writable
        # Writes are gathered only where that changes nothing the builtin lets anyone see: a
        # regular file behind a buffer that is not flushed per line. An unbuffered file's write()
        # is one os.write(), whose count (maybe short, on a pipe) is the result; a pipe's or a
        # socket's reader, and a line-buffered file's, sees each write as the builtin makes it.
        self._gather: bool = (
            self._writable and regular and not isinstance(f, io.RawIOBase) and not getattr(f, "line_buffering", False)
        )
        # Operations run on I/O threads one at a time, in the order they were asked for: a FIFO
        # of pending ones, which at most one pool job at a time (the drainer) runs; `_draining`
        # is true from the first operation's submission until the drainer finds the FIFO empty.
        self._queue_lock = threading.Lock()
        self._pending: collections.deque[_Op] = collections.deque()
        self._draining = False
        self._head: tuple[asyncio.Future[Any], _ferrio.LoopWaker] | None = None  # the drainer's own
        # The read-ahead (see _files_readahead), replaced whole and rewound by _sync().
        self._ra: ReadAhead[AnyStr] = NO_READ_AHEAD
        # Lines `async for` is taking from a chunk without updating it line by line: (the chunk,
        # the lines cut from its `off` on, their iterator, where they end); see _settle().
        self._taking: tuple[Chunk[AnyStr], list[AnyStr], Iterator[AnyStr], int] | None = None
        # Large binary reads of cached data are copied on the loop's thread by a read that cannot
        # wait for the disk (read-ahead kind Direct).
        self._fd: int = f.fileno() if self._ahead and not self._text else -1
        self._direct = self._fd >= 0 and regular
        # Gathered writes.
        self._wbuf: list[AnyStr] = []
        self._wlen = 0

    # -- attributes ----------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name in ("name", "mode", "closed", "encoding", "errors", "newlines", "line_buffering"):
            return getattr(self._f, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def readable(self) -> bool:
        return bool(self._f.readable())

    def writable(self) -> bool:
        return bool(self._f.writable())  # the builtin's: raises on a closed file

    def seekable(self) -> bool:
        return self._seekable

    def fileno(self) -> int:
        return int(self._f.fileno())

    def __repr__(self) -> str:
        return f"<ferrio.AsyncFile wrapping {self._f!r}>"

    # -- the machinery ---------------------------------------------------------------------------

    def _idle(self) -> bool:
        """No operation is running or pending: memory-only fast paths may touch the state."""
        return not self._draining

    def _sync(self, rewind: bool = True) -> None:
        """On an I/O thread: write what was gathered, then rewind any read-ahead (module docs);
        ``rewind=False`` just drops it (when the position no longer matters)."""
        f = self._f
        if self._wbuf:
            chunks, self._wbuf, self._wlen = self._wbuf, [], 0
            for data in chunks:  # one by one: joining would copy (and fault in) it all again
                f.write(data)
        ra = self._ra
        if ra is not NO_READ_AHEAD:
            self._ra = NO_READ_AHEAD
            if rewind:
                ra.rewind(f)

    async def _run(self, fn: Callable[[], T]) -> T:
        """Runs ``fn`` (which may touch the builtin object and the state) on an I/O thread, after
        every operation asked for before it; it runs even if the awaiting task is cancelled."""
        return await self._submit(fn)

    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """:meth:`_run`, queued now: returns the future of ``fn``'s result.

        With nothing in flight, ``fn`` starts a drainer on the I/O pool, whose job's future is
        ``fn``'s own; behind a running drainer, ``fn`` joins the file's FIFO with a future of its
        own. No pool thread ever waits for its turn: one drainer runs the operations in order."""
        with self._queue_lock:
            loop = _get_running_loop()
            if self._draining:
                fut: asyncio.Future[T] = loop.create_future()
                self._pending.append((fn, fut, waker_for(loop)))
                return fut
            # The lock is held until `_head` is set: the drainer reads it, under the lock, only
            # once it has run `fn` and found more to run (the job then outlives its own result).
            fut = _always_run(functools.partial(self._drain, fn))
            self._head = (fut, waker_for(loop))
            self._draining = True
            return fut

    def _drain(self, fn: Callable[[], Any]) -> Any:
        """On an I/O thread: run ``fn``, then the operations queued behind it, one after another,
        each outcome resolving its future as it finishes, until none is left. The first one's
        outcome is this job's when it is the only one (the common case: one hop, one completion);
        otherwise each is posted. Each runs even if its future was cancelled (its outcome is then
        dropped), so what was asked for happens, once, in order."""
        lock, pending = self._queue_lock, self._pending
        first = True  # this job's own operation: its outcome is the job's unless more follow
        op: _Op | None = None
        while True:
            value: Any
            try:
                value, failed = fn(), False
            except BaseException as e:  # delivered to the awaiting task, as the pool delivers a job's
                value, failed = e, True
            with lock:
                if first:
                    first = False
                    head, self._head = self._head, None
                    if not pending:
                        self._draining = False
                        del head  # it holds this job's future, whose exception would hold this frame
                        break
                    assert head is not None  # set by _submit() before it let go of the lock
                    fut, waker = head
                    del head
                else:
                    assert op is not None
                    _, fut, waker = op
                op = pending.popleft() if pending else None
                if op is None:
                    self._draining = False  # before the post: the operation's effects are all done
            waker.post(fut, value, failed)
            # Hold no outcome while the next one runs, nor after: an exception's traceback holds
            # this frame, and a reference from it back to the exception would make a cycle that
            # only the garbage collector frees (with the buffers a MemoryError's frames hold).
            del fut, value
            if op is None:
                return None
            fn = op[0]
        try:
            if failed:
                raise value
            return value
        finally:
            del value  # as above: the raised exception's traceback holds this frame

    def _source(self) -> Any:
        """On an I/O thread, after ``_sync()``: what a new read-ahead batch reads from. A binary
        file reads ahead itself (a rewind seeks back exactly). A text file reads ahead through a
        second text reader of the same descriptor, placed where the builtin stands, so the builtin
        itself never moves: a text position is a cookie holding the decoder's state as of its last
        buffer refill, and seeking back would change that history."""
        f = self._f
        if self._text:
            shadow = self._shadow
            if shadow is None:
                raw = io.BufferedReader(_PositionalReader(f.fileno()), _readahead._SMALL_CHUNK)
                shadow = io.TextIOWrapper(raw, encoding=f.encoding, errors=f.errors, newline=self._newline)
                shadow._CHUNK_SIZE = _readahead._SMALL_CHUNK  # type: ignore[attr-defined]  # fewer, larger refills
                self._shadow = shadow
            shadow.seek(f.tell())  # the cookie restores the decoder's state too
            return shadow
        return f

    def _after_sync(self, op: Callable[[], T]) -> Callable[[], T]:
        def run() -> T:
            self._sync()
            return op()

        return run

    def _check_open(self) -> None:
        if self._f.closed:
            raise ValueError("I/O operation on closed file.")

    # -- reading -----------------------------------------------------------------------------------

    def _begin_chunk(self, size: int) -> Chunk[AnyStr]:
        """On an I/O thread, after ``_sync()``: a new read-ahead chunk of ``size`` from where the
        file stands."""
        source = self._source()
        ra: Any  # the mode decides: TextChunk when AnyStr is str, BinaryChunk when bytes
        if self._text:
            chunk = source.read(size)
            ra = TextChunk(source, chunk, len(chunk) < size, self._nl)
        else:
            start = source.tell()
            chunk = source.read(size)
            ra = BinaryChunk(source, start, chunk, len(chunk) < size)
        began: Chunk[AnyStr] = ra
        self._ra = began
        return began

    def _prefetch(self) -> None:
        """On an I/O thread, queued by ``async for``: the current read-ahead's next piece."""
        self._ra.prefetch()

    def _line(self, size: int) -> AnyStr:
        """On an I/O thread: the next line (at most ``size`` characters or bytes if ``size >= 0``),
        from the read-ahead when it has it, else from a new batch."""
        line = self._ra.line(size)
        if line is not None:
            return line
        if self._nl is not None:  # lines are cut from a chunk, extended as needed
            ra = self._ra
            if not isinstance(ra, Chunk):
                self._sync()
                ra = self._begin_chunk(_readahead._SMALL_CHUNK)
            while (line := ra.line(size)) is None:
                ra.extend()
            return line
        self._sync()
        lines = self._source().readlines(_LINES_HINT)
        if not lines:
            return self._empty
        batch: Any = TextLines(lines, self._newline)  # text only: AnyStr is str
        self._ra = batch
        first: AnyStr = batch.line(size)  # a line: the batch is not empty
        return first

    async def readline(self, size: int | None = -1) -> AnyStr:
        """The builtin ``readline``, served from a batch of lines when one is there."""
        self._settle()
        # (n None: not an int in range, or None for a text file's readline, which refuses it.)
        n = None if size is None and self._text else _size_or_none(size)
        if not self._ahead or n is None:
            f = self._f
            return await self._run(self._after_sync(lambda: cast("AnyStr", f.readline(size))))
        if self._idle():
            line = self._ra.line(n)
            if line is not None:
                return line
        return await self._run(lambda: self._line(n))

    def __aiter__(self) -> AsyncIterator[AnyStr]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[AnyStr]:
        nl = self._nl
        while True:
            # The hot loops: lines already in memory and nothing else in flight on this file. (As
            # with the builtin, iterating a file while other tasks operate on it is not meaningful.)
            ra = self._ra
            if nl is not None and isinstance(ra, Chunk) and self._idle():
                self._settle()  # another iterator's lines, if any
                if ra.more is not None:
                    ra.extend()  # the piece read ahead: memory only
                lines, end = _ferrio.split_lines(ra.chunk, ra.off)
                if lines:
                    # While the loop hands these out, an I/O thread reads the next piece.
                    ahead = None if ra.eof else self._submit(self._prefetch)
                    it = iter(lines)
                    self._taking = armed = (ra, lines, it, end)
                    # Nothing is counted per line: _settle() works out from `it` how many were
                    # taken when anything else touches the file, and empties `lines` so that
                    # this loop ends at its next step.
                    for line in it:
                        yield line
                    if self._taking is armed:
                        self._settle()
                    if ahead is not None:
                        await ahead  # never raises: a read error is kept for the next extend()
                    continue
            if isinstance(ra, TextLines):
                batch: Any = ra  # text only: AnyStr is str
                while self._idle() and (whole := batch.next_whole()) is not None:
                    yield whole
                    if self._ra is not batch:
                        break
            line = await self.readline()
            if not line:
                return
            yield line

    def _settle(self) -> None:
        """Account for the lines ``async for`` took from the read-ahead chunk, and stop it taking
        more. Every operation calls this first, on the loop's thread."""
        armed = self._taking
        if armed is None:
            return
        self._taking = None
        chunk, lines, it, end = armed
        chunk.took_lines(lines, len(lines) - operator.length_hint(it), end)
        lines.clear()

    def _read(self, size: int) -> AnyStr:
        """``read(size)``: from the read-ahead when it serves, else rewind and read ahead."""
        ra = self._ra
        if ra.serves(size):
            return ra.take(size)
        if isinstance(ra, Chunk) and size >= 0 and (self._text or size < _PIECE_MIN):
            while not ra.serves(size):
                ra.extend()
            taken: AnyStr = ra.take(size)
            return taken
        self._sync()
        f = self._f
        if size < 0 or not self._ahead:
            return cast("AnyStr", f.read(size))
        if not self._text and size >= _PIECE_MIN:
            # Large binary reads: read ahead whole pieces of the size asked for, so that each one
            # handed out is the very object the builtin would have returned (no slicing copy).
            pieces, first = Pieces.read(f, size, _PIECES_BYTES)
            self._ra = cast(Any, pieces)  # binary only: AnyStr is bytes
            piece: AnyStr = cast(Any, first)
            return piece
        small = _readahead._SMALL_CHUNK
        want = max(size, small) if size < small else max(size, min(size * 64, _BIG_CHUNK))
        return self._begin_chunk(want).take(size)

    def _read_cached(self, size: int) -> bytes | None:
        """On the loop's thread, with nothing else in flight: ``read(size)`` of a binary file if the
        page cache holds those bytes, else ``None`` (then an I/O thread reads them)."""
        ra = self._ra
        pos = ra.consumed_at(self._f)
        if pos is None:
            return None  # read-ahead left over: served from it, or rewound on an I/O thread
        data = _ferrio.read_cached(self._fd, size, pos)
        if data is None:
            return None
        if data is False:
            self._direct = False  # this file system cannot read without waiting: stop trying
            return None
        assert isinstance(data, bytes)
        if len(data) < size and pos + len(data) < os.fstat(self._fd).st_size:
            return None  # the cache ended part-way: the builtin would have read on
        direct = ra if isinstance(ra, Direct) else Direct(pos)
        if direct is not ra:  # the old read-ahead is consumed: its rewind is this one's
            self._ra = cast(Any, direct)  # binary only: AnyStr is bytes
        direct.position += len(data)
        return data

    async def read(self, size: int | None = -1) -> AnyStr:
        """The builtin ``read``; small reads are served from a read-ahead chunk, large binary
        reads of cached data straight from the page cache on the loop's thread (a read that
        cannot wait for the disk), and everything else on an I/O thread."""
        if self._taking is not None:
            self._settle()
        n = _size_or_none(size)
        if n is None or n > _BIG_CHUNK:
            # Not an int in range: the builtin says how (TypeError, OverflowError, ...). Larger than
            # any read-ahead: the builtin allocates `n` up front, and its MemoryError (or not) is
            # the answer, even where the read-ahead happens to hold the rest of the file.
            f = self._f
            return await self._run(self._after_sync(lambda: cast("AnyStr", f.read(size))))
        ra = self._ra
        if type(ra) is Direct and _PIECE_MIN <= n <= _DIRECT_MAX and self._idle():
            # The hot path of a large sequential read of cached data: _read_cached(), inlined.
            data = _ferrio.read_cached(self._fd, n, ra.position)
            if type(data) is bytes and len(data) == n:
                ra.position += n
                got: AnyStr = cast(Any, data)
                return got
        if ra.serves(n) and self._idle():
            return self._read(n)
        if _PIECE_MIN <= n <= _DIRECT_MAX and self._direct and self._idle():
            cached: AnyStr | None = cast(Any, self._read_cached(n))
            if cached is not None:
                return cached
        return await self._run(lambda: self._read(n))

    async def read1(self, size: int = -1) -> AnyStr:
        self._settle()
        f = self._f
        return await self._run(self._after_sync(lambda: cast("AnyStr", f.read1(size))))

    async def readinto(self, buffer: Buffer) -> int:
        self._settle()
        f = self._f
        return await self._run(self._after_sync(lambda: cast(int, f.readinto(buffer))))

    async def readlines(self, hint: int = -1) -> list[AnyStr]:
        self._settle()
        f = self._f
        return await self._run(self._after_sync(lambda: cast("list[AnyStr]", f.readlines(hint))))

    # -- writing -----------------------------------------------------------------------------------

    @overload
    async def write(self: AsyncFile[str], data: str) -> int: ...
    @overload
    async def write(self: AsyncFile[bytes], data: Buffer) -> int | None: ...
    async def write(self, data: Any) -> int | None:
        """The builtin ``write``: checked here, and gathered and written with the next batch where
        that changes nothing visible (a buffered regular file not flushed per line); elsewhere
        (``buffering=0``, line buffering, pipes, sockets, devices) written now, returning what the
        builtin returns: for ``buffering=0``, the count ``os.write`` wrote, maybe short, or
        ``None`` if a non-blocking descriptor took nothing."""
        self._settle()
        self._check_open()
        if self._text:
            if not isinstance(data, str):
                raise TypeError(f"write() argument must be str, not {type(data).__name__}")
            if self._strict_encoding:
                data.encode(self._strict_encoding)
            n = len(data)
        else:
            try:
                view = memoryview(data)
            except TypeError:
                raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
            if not view.c_contiguous:  # the builtin takes a simple buffer; tobytes() would copy any
                raise BufferError("memoryview: underlying buffer is not C-contiguous")
            n = view.nbytes
            if type(data) is not bytes:
                data = view.tobytes()  # a mutable buffer may change after we return, as with the builtin
        if not self._writable:
            raise io.UnsupportedOperation("not writable")
        checked: Any = data  # a str for a text file, bytes for a binary one, as AnyStr says
        if not self._gather:
            f = self._f
            return await self._run(self._after_sync(lambda: cast("int | None", f.write(checked))))
        if self._ra is NO_READ_AHEAD and self._idle():
            self._wbuf.append(checked)
            self._wlen += n
            if self._wlen >= _WRITE_BATCH:
                await self._run(self._sync)
        else:  # a read-ahead to rewind, or operations in flight that own the state: queue behind them

            def gather() -> None:
                self._sync()
                self._wbuf.append(checked)

            await self._run(gather)
        return n

    async def writelines(self, lines: Iterable[AnyStr]) -> None:
        """The builtin ``writelines``: ``write()`` for each line, its result ignored (as the
        builtin ignores a short write)."""
        self._settle()
        self._check_open()  # as the builtin, even for no lines
        writer: Any = self  # write()'s overloads bind AsyncFile[str] or [bytes], not AnyStr
        for line in lines:
            await writer.write(line)

    async def flush(self) -> None:
        self._settle()
        await self._run(self._after_sync(self._f.flush))

    # -- positioning and lifecycle ---------------------------------------------------------------

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._settle()
        f = self._f
        return await self._run(self._after_sync(lambda: cast(int, f.seek(offset, whence))))

    async def tell(self) -> int:
        self._settle()
        f = self._f
        return await self._run(self._after_sync(lambda: cast(int, f.tell())))

    async def truncate(self, size: int | None = None) -> int:
        self._settle()
        f = self._f
        return await self._run(self._after_sync(lambda: cast(int, f.truncate(size))))

    async def close(self) -> None:
        """Flush what was gathered and close. Idempotent. If the awaiting task is cancelled, the
        close still completes on the I/O thread."""
        self._settle()
        if self._f.closed:
            return
        if not self._writable and self._regular and self._idle():
            # Nothing to flush: closing a read-only regular file does not wait on the disk.
            self._ra = NO_READ_AHEAD
            self._close_now()
            return

        def close() -> None:
            try:
                self._sync(rewind=False)
            finally:
                self._close_now()

        await self._run(close)

    def _close_now(self) -> None:
        """Close the builtin object, and the second reader a text file reads ahead through."""
        try:
            self._f.close()
        finally:
            if self._shadow is not None:
                self._shadow.close()  # its raw reader leaves the descriptor to the builtin

    async def __aenter__(self) -> AsyncFile[AnyStr]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()  # runs to the end on its I/O thread even if this task is cancelled


_Opener: TypeAlias = Callable[[str, int], int]
# What open() takes as its file; the overloads say it as typeshed's open() does.
_FileArg: TypeAlias = int | str | bytes | os.PathLike[str] | os.PathLike[bytes]
# open()'s arguments, in order.
_OpenArgs: TypeAlias = "tuple[_FileArg, str, int, str | None, str | None, str | None, bool, _Opener | None]"


class _Opening(Generic[AnyStr]):
    """What ``open_file()`` returns: await it for the file, or use it with ``async with``."""

    def __init__(self, args: _OpenArgs, kwargs: dict[str, Any]) -> None:
        self._args, self._kwargs = args, kwargs
        self._file: AsyncFile[AnyStr] | None = None

    def __await__(self) -> Generator[Any, None, AsyncFile[AnyStr]]:
        return self._open().__await__()

    def _open_cached(self) -> AsyncFile[AnyStr] | None:
        """``open(path, "rb")`` on the loop's thread when neither the lookup nor the first read
        needs the disk (``openat2`` with ``RESOLVE_CACHED``, then a non-waiting read); else
        ``None``, and the open goes to an I/O thread, which also reports any error as ``open()``
        does."""
        file, mode, buffering, encoding, errors, newline, closefd, opener = self._args
        if self._kwargs or mode != "rb" or opener is not None or not closefd or isinstance(file, int):
            return None
        if encoding is not None or errors is not None or newline is not None:
            return None  # open() refuses these in binary mode: let it say so
        try:
            path: str | bytes = os.fspath(file)
        except TypeError:
            return None
        fd = _ferrio.open_cached(os.fsdecode(path))
        if fd is None:
            return None
        try:
            f: Any = open(fd, "rb", buffering)  # noqa: SIM115 - closed by AsyncFile.close()
        except BaseException:
            os.close(fd)
            return None  # a directory, say: the I/O thread's open() raises the builtin's error
        try:
            getattr(f, "raw", f).name = path  # what open(path) would show (buffering=0 gives a FileIO)
            small = _readahead._SMALL_CHUNK
            chunk = _ferrio.read_cached(fd, small, 0)
            af: AsyncFile[AnyStr] = AsyncFile(f, regular=True)  # open_cached() opens nothing else
            if isinstance(chunk, bytes) and (len(chunk) == small or len(chunk) >= os.fstat(fd).st_size):
                f.seek(len(chunk))  # where f.read(small) would have left it
                af._ra = cast("ReadAhead[AnyStr]", BinaryChunk(f, 0, chunk, len(chunk) < small))
            return af
        except BaseException:
            f.close()
            raise

    async def _open(self) -> AsyncFile[AnyStr]:
        args, kwargs = self._args, self._kwargs
        cached = self._open_cached()
        if cached is not None:
            return cached

        def open_and_prefetch() -> AsyncFile[AnyStr]:
            f: Any = open(*args, **kwargs)  # noqa: SIM115 - closed by AsyncFile.close()
            try:
                af: AsyncFile[AnyStr] = AsyncFile(f, newline=args[5])
                if af._ahead and f.readable():
                    af._begin_chunk(_readahead._SMALL_CHUNK)  # the first read of a small file needs no hop
                return af
            except BaseException:
                f.close()
                raise

        # If the awaiting task is cancelled, whichever side comes second closes the file: the
        # open, if it finishes after the cancel; the cancel, if the open already finished.
        handshake = threading.Lock()
        state: dict[str, Any] = {"cancelled": False, "file": None}

        def run() -> AsyncFile[AnyStr]:
            af = open_and_prefetch()
            with handshake:
                if state["cancelled"]:
                    af._close_now()
                else:
                    state["file"] = af
            return af

        try:
            af: AsyncFile[AnyStr] = await _always_run(run)
            return af
        except asyncio.CancelledError:
            with handshake:
                state["cancelled"] = True
                opened = state["file"]
            if opened is not None:
                opened._close_now()  # nothing was written through it: nothing to flush
            raise

    async def __aenter__(self) -> AsyncFile[AnyStr]:
        self._file = await self._open()
        return self._file

    async def __aexit__(self, *exc_info: object) -> None:
        if self._file is None:  # only reachable by calling __aexit__ by hand
            raise RuntimeError("open_file(...).__aexit__() was called without __aenter__()")
        await self._file.__aexit__(*exc_info)


@overload
def open_file(
    file: FileDescriptorOrPath,
    mode: OpenTextMode = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: _Opener | None = None,
) -> _Opening[str]: ...
@overload
def open_file(
    file: FileDescriptorOrPath,
    mode: OpenBinaryMode,
    buffering: int = -1,
    encoding: None = None,
    errors: None = None,
    newline: None = None,
    closefd: bool = True,
    opener: _Opener | None = None,
) -> _Opening[bytes]: ...
@overload
def open_file(
    file: FileDescriptorOrPath,
    mode: str,
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: _Opener | None = None,
) -> _Opening[Any]: ...
def open_file(
    file: _FileArg,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: _Opener | None = None,
) -> _Opening[Any]:
    """Open a file for async use: exactly the builtin ``open()``'s arguments and behaviour.

    ::

        async with ferrio.open_file("log.txt", encoding="utf-8") as f:
            async for line in f:
                ...
        f = await ferrio.open_file("out.bin", "wb")

    The open itself, and every batch of reads and writes, runs on ferrio's I/O threads; errors are
    the builtin's (``FileNotFoundError`` with its errno and filename, and so on), raised here.
    As with the builtin, the mode gives the file's type: ``AsyncFile[str]`` for a text mode,
    ``AsyncFile[bytes]`` for a binary one (``"b"`` in it).
    """
    return _Opening((file, mode, buffering, encoding, errors, newline, closefd, opener), {})


def _checked_name(api: str, path: str | bytes | os.PathLike[str] | os.PathLike[bytes], where: str = "") -> str:
    """``path`` as a ``str`` for the Rust reader, refusing a NUL in it as ``open()`` does."""
    name = os.fsdecode(path)
    if "\0" in name:
        raise ValueError(f"{api}: embedded null byte in the path{where}: {name!r}")
    return name


async def read_files(paths: Iterable[str | os.PathLike[str]], *, threads: int = 8) -> list[bytes]:
    """Read many whole files in one hop, in parallel in Rust, with the GIL released.

    Returns their contents in order. Raises the first failing file's error, as ``open()`` would
    (``FileNotFoundError`` with its errno and filename, ...). ``threads`` is the most files read at
    once (up to 64).

    Any file ``open()`` reads can be read, a FIFO or a device too: those are read on ferrio's
    threads, never the loop's. Cancellation: the awaiting task gets ``CancelledError`` at once,
    and the reads stop within about 50 ms, even one that waits for a FIFO's writer or reads an
    endless file.

    Raises:
        TypeError: ``paths`` is a single path rather than an iterable of them, or holds something
            that is not a path (``str``, ``bytes`` or ``os.PathLike``); ``threads`` is not an int.
        ValueError: ``threads`` is 0 or negative; a path holds a NUL character ("embedded null
            byte", as ``open()`` says).
        MemoryError: a file does not fit in the memory left (an endless one like ``/dev/zero``
            never does), as ``open().read()`` raises.
        RuntimeError: not even one reading thread could be started.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(f"read_files() takes an iterable of paths, got the single path {safe_repr(paths)}: pass [path]")
    check_positive_int("read_files()", "threads", threads)
    names: list[str] = []
    for i, p in enumerate(paths):
        try:
            name = os.fsdecode(p)  # bytes paths too, as open() takes them
        except TypeError:
            raise TypeError(
                f"read_files() expected paths (str, bytes or os.PathLike), got {safe_repr(p)} at index {i}"
            ) from None
        names.append(_checked_name("read_files()", name, f" at index {i}"))
    # More threads than the reader starts change nothing, and a huge int would not fit Rust's.
    return await io_pool().run(_ferrio.read_files_blocking, names, min(threads, _ferrio.MAX_READ_THREADS))


if TYPE_CHECKING:
    _PurePath = pathlib.PurePath
else:
    _PurePath = type(pathlib.PurePath())  # this system's flavour, as pathlib.Path() picks


class Path(_PurePath):
    """``pathlib``'s pure path operations, with async versions of the ones that touch the disk.

    ::

        p = ferrio.Path("data") / "x.json"
        text = await p.read_text()

    Each disk operation is one hop to ferrio's I/O threads, running the ``pathlib.Path`` method of
    the same name, so results and errors are pathlib's.
    """

    def _blocking(self) -> pathlib.Path:
        return pathlib.Path(self)

    # read_bytes() and read_text() read through read_files' reader rather than pathlib's open():
    # the same bytes and errors, but a cancelled read stops, even one waiting for a FIFO's writer.

    async def read_bytes(self) -> bytes:
        name = _checked_name("Path.read_bytes()", self)
        return (await io_pool().run(_ferrio.read_files_blocking, [name], 1))[0]

    async def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        name = _checked_name("Path.read_text()", self)
        encoding = _text_encoding(encoding)  # as pathlib: its EncodingWarning, at the call

        def read() -> str:
            (data,) = _ferrio.read_files_blocking([name], 1)
            # What open(mode="r").read() makes of those bytes: the decoding, the newlines.
            return io.TextIOWrapper(io.BytesIO(data), encoding=encoding, errors=errors).read()

        return await io_pool().run(read)

    async def write_bytes(self, data: Buffer) -> int:
        return await io_pool().run(self._blocking().write_bytes, bytes(memoryview(data)))

    async def write_text(self, data: str, encoding: str | None = None, errors: str | None = None) -> int:
        return await io_pool().run(self._blocking().write_text, data, encoding, errors)

    async def stat(self) -> os.stat_result:
        return await io_pool().run(self._blocking().stat)

    async def exists(self) -> bool:
        return await io_pool().run(self._blocking().exists)

    async def is_file(self) -> bool:
        return await io_pool().run(self._blocking().is_file)

    async def is_dir(self) -> bool:
        return await io_pool().run(self._blocking().is_dir)

    async def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        await io_pool().run(self._blocking().mkdir, mode, parents, exist_ok)

    async def unlink(self, missing_ok: bool = False) -> None:
        await io_pool().run(self._blocking().unlink, missing_ok)

    async def rename(self, target: str | os.PathLike[str]) -> Path:
        return Path(await io_pool().run(self._blocking().rename, os.fspath(target)))

    async def iterdir(self) -> AsyncIterator[Path]:
        for p in await io_pool().run(lambda: list(self._blocking().iterdir())):
            yield Path(p)

    async def glob(self, pattern: str) -> AsyncIterator[Path]:
        for p in await io_pool().run(lambda: list(self._blocking().glob(pattern))):
            yield Path(p)

    @overload
    def open(
        self,
        mode: OpenTextMode = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> _Opening[str]: ...
    @overload
    def open(
        self,
        mode: OpenBinaryMode,
        buffering: int = -1,
        encoding: None = None,
        errors: None = None,
        newline: None = None,
    ) -> _Opening[bytes]: ...
    @overload
    def open(
        self,
        mode: str,
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> _Opening[Any]: ...
    def open(  # pyright: ignore[reportIncompatibleMethodOverride]  # async, unlike PurePath's (none)
        self,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> _Opening[Any]:
        """``ferrio.open_file(self, ...)``."""
        return open_file(self, mode, buffering, encoding, errors, newline)


__all__ = ("AsyncFile", "Path", "open_file", "read_files")
