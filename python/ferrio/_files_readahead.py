"""The read-ahead of an :class:`~ferrio.AsyncFile`: one small class per kind, each with its rewind.

A file holds one read-ahead at a time. :class:`ReadAhead` itself is the kind "none"; the others
hold what was read ahead and how much of it was handed out, and serve calls from memory while
they can. Before any other operation the file calls :meth:`ReadAhead.rewind` on the I/O thread,
which puts the builtin object exactly where it would stand without the read-ahead: a binary file
seeks to where the batch started plus what was consumed; a text file, whose positions are
cookies recording the decoder's history, was never moved (its read-ahead went through a second
reader of the same descriptor) and replays the calls that were served.

- :class:`TextLines`: a batch of lines from ``readlines(hint)``, for text files whose lines do
  not end at ``"\\n"`` in what ``read()`` returns (``newline`` ``""``, ``"\\r"`` or ``"\\r\\n"``).
- :class:`BinaryChunk`, :class:`TextChunk`: a chunk that small reads and ``readline`` slice and
  ``async for`` cuts into lines (in Rust), extended piece by piece as reading goes on.
- :class:`Pieces`: large binary reads, read ahead as whole pieces of the size asked for.
- :class:`Direct`: large binary reads of cached data, copied on the loop's thread; nothing is
  held, the position is counted.
"""

from __future__ import annotations

import collections
from typing import IO, Any, AnyStr, Generic

_SMALL_CHUNK = 64 * 1024  # read-ahead for small reads
# Each extension of a chunk read on sequentially doubles, up to this: measured on a 100,000-line
# file, a hop costs about 50-90 us here, and splitting 256 KiB of lines is as cheap per line as
# 64 KiB (1 MiB is twice as dear: the lines no longer fit in the cache).
_SEQUENTIAL_CHUNK = 256 * 1024


class ReadAhead(Generic[AnyStr]):
    """No read-ahead: the builtin object stands where it should, and nothing is served from
    memory. The base of every kind, whose methods say what the kinds answer by default."""

    __slots__ = ()

    def rewind(self, f: IO[Any]) -> None:
        """On an I/O thread: put the builtin object ``f`` where it would stand had nothing been
        read ahead (what seek, write, truncate and every other operation need first)."""

    def line(self, size: int) -> AnyStr | None:
        """The next line (at most ``size`` long if ``size >= 0``), from memory, or ``None`` if
        this read-ahead cannot tell it (then an I/O thread reads on)."""
        return None

    def serves(self, size: int) -> bool:
        """Whether :meth:`take` answers ``read(size)`` exactly as the builtin would."""
        return False

    def take(self, size: int) -> AnyStr:
        """``read(size)`` from memory; only when :meth:`serves` says so."""
        raise AssertionError("take() without serves()")

    def prefetch(self) -> None:
        """On an I/O thread, queued by ``async for``: read the next piece while the loop hands
        out the lines already in memory (a chunk does; nothing else reads ahead this way)."""

    def consumed_at(self, f: IO[Any]) -> int | None:
        """Binary files: where ``f`` stands once this read-ahead is rewound, if nothing read ahead
        is left to hand out (a read there may come straight from the page cache); else ``None``."""
        try:
            return f.tell()  # the builtin's own position, its buffer included
        except (OSError, ValueError):
            return None  # closed, or unusual: the I/O thread raises what the builtin raises


#: The read-ahead of a file that holds none. Stateless: one for every file.
NO_READ_AHEAD: ReadAhead[Any] = ReadAhead()


class TextLines(ReadAhead[str]):
    """Lines read ahead by ``readlines(hint)`` on the text reader that reads ahead (see
    ``AsyncFile._source()``); ``readline`` and ``async for`` hand them out, ``readline(size)``
    cuts them. The rewind replays every call served on the builtin, which never moved."""

    __slots__ = ("_consumed", "_crlf", "_lines", "_partial")

    def __init__(self, lines: list[str], newline: str | None) -> None:
        self._lines = lines
        self._consumed = 0  # lines handed out whole
        self._partial: dict[int, list[int]] = {}  # line index -> sizes of readline(size) cut from it
        self._crlf = newline == "\r\n"

    def line(self, size: int) -> str | None:
        i = self._consumed
        lines = self._lines
        if i >= len(lines):
            return None
        line = lines[i]
        if size < 0 or size >= len(line):
            self._consumed = i + 1
            return line
        lines[i] = line[size:]
        self._partial.setdefault(i, []).append(size)
        if self._crlf and line[size - 1 : size + 1] == "\r\n":
            # The cut split the line's "\r\n": what is left ("\n") ends no line, the builtin reads
            # on past it. End the batch here; the next readline() rewinds and reads anew.
            del lines[i:]
        return line[:size]

    def next_whole(self) -> str | None:
        """``async for``'s hot path: the next line, whole, or ``None`` when the batch is done."""
        i = self._consumed
        if i < len(self._lines):
            self._consumed = i + 1
            return self._lines[i]
        return None

    def rewind(self, f: IO[Any]) -> None:
        consumed, partial = self._consumed, self._partial
        # Replay the calls served, even all of them, as the builtin never moved.
        for idx in range(consumed + (1 if consumed in partial else 0)):
            for size in partial.get(idx, ()):
                f.readline(size)
            if idx < consumed:
                f.readline()

    def consumed_at(self, f: IO[Any]) -> int | None:
        return None  # text: never asked


class Chunk(ReadAhead[AnyStr]):
    """A chunk read ahead from ``source`` (the builtin object for binary files, the second text
    reader for text), sliced by small reads and ``readline`` and cut into lines by ``async for``;
    :meth:`extend` appends the next piece, dropping what was consumed.

    ``off`` is what was consumed of ``chunk``; ``more`` is the chunk's next piece, read ahead
    by :meth:`prefetch` while ``async for`` hands out the chunk's lines: (data, at EOF) or the
    exception reading it raised. ``source`` stands past it; :meth:`extend` appends it, a rewind
    drops it. The subclasses differ in their rewind, which the bookkeeping here serves:
    ``dropped`` (what was dropped from the front since the chunk's start) and ``whole_lines``
    (``readline()`` calls served since the last logged call)."""

    __slots__ = ("chunk", "dropped", "eof", "extend_by", "more", "nl", "off", "source", "whole_lines")

    def __init__(self, source: IO[AnyStr], chunk: AnyStr, eof: bool, nl: AnyStr | None) -> None:
        self.source: IO[AnyStr] = source
        self.chunk: AnyStr = chunk
        self.off = 0
        self.eof = eof
        # Where lines end at "\n" in what read() returns: None where they do not, and this chunk
        # then serves reads only.
        self.nl: AnyStr | None = nl
        self.extend_by = _SMALL_CHUNK  # what the next extension reads
        self.more: tuple[AnyStr, bool] | BaseException | None = None
        self.dropped = 0
        self.whole_lines = 0

    def note(self, op: str, n: int) -> None:
        """Log a call other than readline() for a text chunk's replay (binary: nothing to log)."""

    def line(self, size: int) -> AnyStr | None:
        nl = self.nl
        if nl is None:
            return None
        chunk, off = self.chunk, self.off
        j = chunk.find(nl, off)
        if j >= 0:
            end = j + 1
        elif self.eof:
            end = len(chunk)
        elif size >= 0 and len(chunk) - off >= size:
            end = off + size
        else:
            return None
        if size >= 0:
            end = min(end, off + size)
            self.note("l", size)
        else:
            self.whole_lines += 1
        self.off = end
        return chunk[off:end]

    def serves(self, size: int) -> bool:
        if size < 0:
            return self.eof
        return self.off + size <= len(self.chunk) or self.eof

    def take(self, size: int) -> AnyStr:
        off, chunk = self.off, self.chunk
        end = len(chunk) if size < 0 else min(off + size, len(chunk))
        self.off = end
        self.note("r", size)
        return chunk[off:end]

    def took_lines(self, lines: list[AnyStr], taken: int, end: int) -> None:
        """``async for`` handed out the first ``taken`` of ``lines``, cut from ``off`` on up to
        ``end``: account for them as that many ``readline()`` calls."""
        self.off = end if taken == len(lines) else self.off + sum(map(len, lines[:taken]))
        self.whole_lines += taken

    def _read_more(self) -> tuple[AnyStr, bool]:
        """On an I/O thread: the chunk's next piece, from ``source`` (it stands at the chunk's
        end), and whether it reached EOF. Pieces grow as reading goes on."""
        want = self.extend_by
        self.extend_by = min(2 * want, _SEQUENTIAL_CHUNK)
        # A line longer than that (or endless, as in /dev/zero) doubles what is kept of the chunk
        # with each piece: the copies that extend() makes add up to a few times the line, as the
        # builtin's do, where pieces of a fixed size would copy the whole line per piece.
        want = max(want, len(self.chunk) - self.off)
        more = self.source.read(want)
        return more, len(more) < want

    def prefetch(self) -> None:
        if self.eof or self.more is not None:
            return  # nothing left to read, or read already
        try:
            self.more = self._read_more()
        except Exception as e:  # raised by the extend() that takes it, as a plain read would
            self.more = e

    def extend(self) -> None:
        """Append the next piece to the chunk, dropping what was consumed; the rewind's record
        still holds. On an I/O thread, or (memory only) the loop's thread when the piece was
        read ahead and nothing is in flight."""
        more = self.more
        if more is None:
            more = self._read_more()
        else:
            self.more = None
            if isinstance(more, BaseException):
                raise more
        data, self.eof = more
        off = self.off
        self.dropped += off
        self.chunk = self.chunk[off:] + data
        self.off = 0


class BinaryChunk(Chunk[bytes]):
    """A binary file's chunk, read from the builtin object itself; ``start`` is its position
    before the chunk. The rewind seeks back: binary positions are byte offsets."""

    __slots__ = ("start",)

    def __init__(self, source: IO[bytes], start: int, chunk: bytes, eof: bool) -> None:
        super().__init__(source, chunk, eof, b"\n")
        self.start = start

    def rewind(self, f: IO[Any]) -> None:
        if self.off == len(self.chunk) and self.more is None:
            return  # reading it all left the position exactly there
        f.seek(self.start + self.dropped + self.off)

    def consumed_at(self, f: IO[Any]) -> int | None:
        if self.off == len(self.chunk):
            return self.start + self.dropped + self.off
        return None


class TextChunk(Chunk[str]):
    """A text file's chunk, read through the second text reader. The builtin's position cookie
    records decoder state that depends on which calls read the text (reaching EOF, a pending
    ``"\\r"``), so the rewind replays the very calls served, logged as ("r", n) for read(n),
    ("l", n) for readline(n) and ("L", count) for a run of readline() calls (the trailing run is
    ``whole_lines``)."""

    __slots__ = ("log",)

    def __init__(self, source: IO[str], chunk: str, eof: bool, nl: str | None) -> None:
        super().__init__(source, chunk, eof, nl)
        self.log: list[tuple[str, int]] = []

    def note(self, op: str, n: int) -> None:
        if self.whole_lines:
            self.log.append(("L", self.whole_lines))
            self.whole_lines = 0
        self.log.append((op, n))

    def rewind(self, f: IO[Any]) -> None:
        for op, n in self.log:
            if op == "r":
                f.read(n)
            elif op == "l":
                f.readline(n)
            else:
                for _ in range(n):
                    f.readline()
        for _ in range(self.whole_lines):
            f.readline()

    def consumed_at(self, f: IO[Any]) -> int | None:
        return None  # text: never asked


class Pieces(ReadAhead[bytes]):
    """Large binary reads: whole pieces of the size asked for, read ahead from ``start``, each
    the very object the builtin would have returned (no slicing copy); ``handed`` counts the
    bytes handed out. The rewind seeks to ``start + handed`` if pieces are left."""

    __slots__ = ("_handed", "_pieces", "_size", "_start")

    def __init__(self, start: int, size: int, pieces: collections.deque[bytes], handed: int) -> None:
        self._start = start
        self._size = size
        self._pieces = pieces
        self._handed = handed

    @classmethod
    def read(cls, f: IO[bytes], size: int, batch_bytes: int) -> tuple[Pieces, bytes]:
        """On an I/O thread: ``f.read(size)``, with the pieces after it (up to ``batch_bytes``,
        at least one) read ahead; returns the read-ahead and the first piece."""
        start = f.tell()
        pieces: collections.deque[bytes] = collections.deque()
        for _ in range(max(1, batch_bytes // size)):
            piece = f.read(size)
            pieces.append(piece)
            if len(piece) < size:
                break
        first = pieces.popleft()
        return cls(start, size, pieces, len(first)), first

    def serves(self, size: int) -> bool:
        return size == self._size and bool(self._pieces)

    def take(self, size: int) -> bytes:
        piece = self._pieces.popleft()
        self._handed += len(piece)
        return piece

    def rewind(self, f: IO[Any]) -> None:
        if self._pieces:
            f.seek(self._start + self._handed)

    def consumed_at(self, f: IO[Any]) -> int | None:
        return None if self._pieces else self._start + self._handed


class Direct(ReadAhead[bytes]):
    """Large binary reads of cached data, copied on the loop's thread by a read that cannot
    wait for the disk (``_ferrio.read_cached``): nothing is held; the reads went on to
    ``position``, where the rewind seeks the builtin object."""

    __slots__ = ("position",)

    def __init__(self, position: int) -> None:
        self.position = position

    def rewind(self, f: IO[Any]) -> None:
        f.seek(self.position)

    def consumed_at(self, f: IO[Any]) -> int | None:
        return self.position
