"""The wire between a :class:`ferrio.ProcessPool` and its workers.

Frames travel on a Unix stream socket: a 19-byte header (kind, number of descriptors, task id,
payload length), then the payload. Payloads are pickles (protocol 5). Buffers of
:data:`LARGE` bytes or more - ``bytes``, ``bytearray``, ``memoryview`` and anything pickled as a
:class:`pickle.PickleBuffer`, such as NumPy arrays - leave the pickle: each is written once into
its own anonymous shared-memory file (``memfd``) whose descriptor travels beside the frame
(``SCM_RIGHTS``), and the receiver reads it once. The kernel frees such a file when its last
descriptor closes, so a crash on either side cannot leave a segment behind.

Functions and arguments are pickled by reference with the stdlib first; what it cannot pickle
(lambdas, closures, classes defined in a function, anything from an interactive ``__main__``)
goes by value with cloudpickle.
"""

from __future__ import annotations

import array
import io
import mmap
import os
import pickle
import socket
import struct
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

#: Buffers at least this large travel through shared memory instead of the socket.
LARGE = 1 << 20
#: The most descriptors one frame carries (the kernel's SCM_MAX_FD is 253).
MAX_FDS = 240

HEADER = struct.Struct("<BHQQ")  # kind, descriptors, task id, payload length
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
_SCRATCH = 1 << 16
_CTRUNC = int(socket.MSG_CTRUNC)

# Frame kinds.
INIT = 1  # parent -> worker: the initializer and the worker's settings
READY = 2  # worker -> parent: initialized, waiting for calls
INIT_FAILED = 3  # worker -> parent: the initializer raised (payload: the error); the worker exits
CALL = 4  # parent -> worker: (function, args, kwargs)
RESULT = 5  # worker -> parent: the return value
ERROR = 6  # worker -> parent: (exception, traceback text)
LOG = 7  # worker -> parent: a logging record's attributes
EXIT = 8  # parent -> worker: exit now
#: Or-ed into RESULT and ERROR when the worker exits after this call (``max_tasks_per_child``).
LAST = 0x80
#: Or-ed into CALL when it was queued behind an unanswered call (pipelined): the parent may not
#: have read that call's result, so the worker must not overwrite its buffers with this one's.
AHEAD = 0x40

_local = threading.local()


# -- shared-memory files -------------------------------------------------------------------------


def new_shared_fd(size: int, name: str = "ferrio") -> int:
    """An anonymous shared-memory file of ``size`` bytes: a memfd, or an unlinked file elsewhere."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
    else:  # pragma: no cover - macOS and the BSDs
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryFile(dir=shm) as f:
            fd = os.dup(f.fileno())
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


_ALIGN = 64  # NumPy and SIMD code like buffers on cache-line boundaries


class Arena:
    """The shared memory one side of a channel writes large buffers into, reused frame after frame.

    The writer sizes it to the largest frame so far (a power of two; shrunk when far too big)
    and sends a descriptor of it only with the first frame after it changed; the reader maps
    that once. Reuse is safe because of the protocol: a side sends its next frame with buffers
    only after the other side answered the last one, which it does after reading its buffers.
    """

    __slots__ = ("fd", "map", "size")

    def __init__(self) -> None:
        self.fd = -1
        self.map: mmap.mmap | None = None
        self.size = 0

    def place(self, buffers: list[memoryview], fresh: bool = False) -> tuple[bytes, int]:
        """Copies ``buffers`` in; returns their ``(offset, length, read-only)`` records and, if the
        arena changed, a new descriptor to send with this frame (the caller closes it), else -1.

        With ``fresh``, the buffers go to a new arena even if they fit the current one: the peer
        may not have read the last frame's yet (it keeps its mapping of the old arena until it
        reads the frame that names the new one, so what it has not read stays intact)."""
        offsets: list[int] = []
        total = 0
        for b in buffers:
            offsets.append(total)
            total += (b.nbytes + _ALIGN - 1) // _ALIGN * _ALIGN
        new_fd = -1
        if fresh or total > self.size or (self.size > 64 * LARGE and total * 8 < self.size):
            self.close()
            size = max(4 * LARGE, 1 << (total - 1).bit_length())
            fd = new_shared_fd(size, "ferrio-arena")
            try:
                self.map = mmap.mmap(fd, size)
                new_fd = os.dup(fd)
            except BaseException:
                os.close(fd)
                raise
            self.fd, self.size = fd, size
        m = self.map
        assert m is not None
        records: list[bytes] = []
        for b, off in zip(buffers, offsets, strict=True):
            n = b.nbytes
            m[off : off + n] = b
            records.append(_BUFFER.pack(off, n, b.readonly))
        return b"".join(records), new_fd

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.size = 0


_BUFFER = struct.Struct("<QQB")  # offset, length, read-only


# -- pickling ------------------------------------------------------------------------------------


def _recast(view: memoryview, fmt: str, shape: Any) -> memoryview:
    # typeshed types cast() per literal format; these formats come from another memoryview.
    return view.cast(fmt, shape)  # type: ignore[call-overload, no-any-return]


def _as_memoryview(buf: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    view = memoryview(buf)
    return view if fmt == "B" and shape == (view.nbytes,) else _recast(view.cast("B"), fmt, shape)


def _big_id(obj: object, big: list[memoryview]) -> Any:
    """The persistent id that sends a large bytes-like object out of band, or ``None``.

    The C pickler consults ``persistent_id`` before its own handling of bytes and bytearray (and
    ``reducer_override`` only after it), so this is the hook that can take them out of the pickle.
    """
    kind = type(obj)
    o: Any = obj  # what `kind` says it is; called for every object pickled, where a cast() costs a call
    if kind is bytes or kind is bytearray:
        if len(o) < LARGE or len(big) >= MAX_FDS // 2:
            return None
        big.append(memoryview(o))
        return ("b" if kind is bytes else "a", len(big) - 1)
    if kind is memoryview:  # the stdlib cannot pickle these at all
        mv: memoryview = o
        view = mv if mv.c_contiguous else _recast(memoryview(mv.tobytes()), mv.format, mv.shape)
        if view.nbytes < LARGE or len(big) >= MAX_FDS // 2:
            return ("m", view.tobytes(), view.format, view.shape, mv.readonly)
        big.append(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
        return ("m", len(big) - 1, view.format, view.shape, mv.readonly)
    return None


class _MakePickler(Protocol):
    """A pickler class that sends large buffers to ``big``: how :func:`dumps` calls one."""

    def __call__(
        self,
        file: io.BytesIO,
        big: list[memoryview],
        *,
        protocol: int,
        buffer_callback: Callable[[pickle.PickleBuffer], bool],
    ) -> pickle.Pickler: ...


def _pickler_class(base: type[pickle.Pickler]) -> _MakePickler:
    class BigBufferPickler(base):  # type: ignore[misc, valid-type]  # a base chosen at run time
        def __init__(self, file: io.BytesIO, big: list[memoryview], **kwargs: Any) -> None:
            super().__init__(file, **kwargs)
            self._big = big

        def persistent_id(self, obj: Any) -> Any:
            return _big_id(obj, self._big)

    return BigBufferPickler


_BigPickler = _pickler_class(pickle.Pickler)
_cloud_pickler: _MakePickler | None = None


def _cloudpickler() -> _MakePickler:
    global _cloud_pickler
    if _cloud_pickler is None:
        import cloudpickle  # type: ignore[import-untyped]  # it ships no types

        _cloud_pickler = _pickler_class(cloudpickle.Pickler)
    return _cloud_pickler


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, big: list[bytes | bytearray], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._big = big

    def persistent_load(self, pid: Any) -> Any:
        if pid[0] == "m":
            _, data, fmt, shape, readonly = pid
            buf = self._big[data] if type(data) is int else data if readonly else bytearray(data)
            return _as_memoryview(buf, fmt, shape)
        index: int = pid[1]
        return self._big[index]


def _interactive_main() -> bool:
    # Workers import the parent's main script by path; without one (python -c, a REPL, a
    # notebook), what it defines exists only here and must travel by value.
    return getattr(sys.modules.get("__main__"), "__file__", None) is None


# Payload prefix: whether persistent ids are used, out-of-band pickle buffers, large bytes-likes,
# descriptors of shared values, whether the sender's arena changed (its descriptor comes first);
# then one _BUFFER record per buffer, then the pickle.
_PREFIX = struct.Struct("<BHHHB")
_PLAIN = _PREFIX.pack(0, 0, 0, 0, 0)  # a pickle with nothing beside it


_BYTES_LIKE = (bytes, bytearray, memoryview)


def _needs_big_pickler(obj: object, depth: int = 2) -> bool:
    """Whether ``obj`` or its items (two levels deep) are large bytes-likes or memoryviews, which the
    C pickler would copy into the pickle (or refuse): a cheap look that saves pickling twice."""
    kind = type(obj)
    o: Any = obj  # what `kind` says it is; on every call's pickling path, where a cast() costs a call
    if kind is memoryview or (kind in _BYTES_LIKE and len(o) >= LARGE):
        return True
    if depth:
        items: Iterable[object] = o if kind is tuple or kind is list else o.values() if kind is dict else ()
        for x in items:
            if _needs_big_pickler(x, depth - 1):
                return True
    return False


class Pickled:
    """A pickled object: the pickle, the buffers that travel beside it, shared-value descriptors."""

    __slots__ = ("buffers", "data", "npb", "persistent", "shared")

    def __init__(self, data: bytes, persistent: bool, npb: int, buffers: list[memoryview], shared: list[int]) -> None:
        self.data = data
        self.persistent = persistent
        self.npb = npb  # the first npb buffers are pickle buffers, the rest large bytes-likes
        self.buffers = buffers
        self.shared = shared

    def close(self) -> None:
        """Releases the buffers and closes the descriptors; idempotent."""
        self.buffers = []
        while self.shared:
            os.close(self.shared.pop())


def dumps(obj: Any) -> Pickled:
    """Pickles ``obj``: by reference with the C pickler where it can, else by value with cloudpickle.

    Large buffers are kept aside (referenced, not copied) for :meth:`Channel.send_pickled` to
    place in shared memory. Close the result when done with it. Raises what pickling raises.
    """
    shared: list[int] = []
    oob: list[pickle.PickleBuffer] = []
    big: list[memoryview] = []

    def keep_large(pb: pickle.PickleBuffer) -> bool:
        if len(oob) < MAX_FDS // 2 and pb.raw().nbytes >= LARGE:
            oob.append(pb)
            return False
        return True

    def attempt(pickler: _MakePickler) -> bytes:
        f = io.BytesIO()
        try:
            pickler(f, big, protocol=5, buffer_callback=keep_large).dump(obj)
        except BaseException:
            oob.clear()
            big.clear()
            while shared:
                os.close(shared.pop())
            raise
        return f.getvalue()

    _local.sink = shared
    try:
        data = None
        if not _interactive_main() and not _needs_big_pickler(obj):
            try:  # the C pickler alone is fastest for small calls; buffers stay in band here
                data = pickle.dumps(obj, protocol=5)
            except Exception:
                while shared:
                    os.close(shared.pop())
            else:
                if len(data) < LARGE:
                    return Pickled(data, False, 0, [], shared)
                while shared:  # a large pickle: again, with its large buffers out of band
                    os.close(shared.pop())
        if _interactive_main():
            data = attempt(_cloudpickler())
        else:
            try:
                data = attempt(_BigPickler)
            except Exception:
                data = attempt(_cloudpickler())  # lambdas, closures, local classes
    finally:
        _local.sink = None
    buffers = [pb.raw() for pb in oob] + big
    return Pickled(data, True, len(oob), buffers, shared)


def loads(payload: bytes | bytearray | memoryview, fds: list[int], peer: mmap.mmap | None = None) -> Any:
    """Unpickles a payload; closes or takes ownership of every descriptor. ``peer`` is the mapping
    of the sender's arena, for payloads with buffers."""
    try:
        persistent, npb, nbig, nshared, new_arena = _PREFIX.unpack_from(payload)
        nbuf = npb + nbig
        if new_arena + nshared != len(fds):
            raise pickle.UnpicklingError(f"a frame promised {new_arena + nshared} descriptors and carried {len(fds)}")
        start = _PREFIX.size + nbuf * _BUFFER.size
        buffers: list[Any] = []
        if nbuf:
            if peer is None:
                raise pickle.UnpicklingError("a frame with buffers arrived before its shared memory")
            for i in range(nbuf):
                off, n, readonly = _BUFFER.unpack_from(payload, _PREFIX.size + i * _BUFFER.size)
                buffers.append(peer[off : off + n] if readonly else bytearray(memoryview(peer)[off : off + n]))
        data = memoryview(payload)[start:]
        _local.source = (fds, new_arena)  # shared values' descriptors follow the arena's
        try:
            if not persistent:
                return pickle.loads(data, buffers=buffers)
            return _Unpickler(io.BytesIO(data), buffers[npb:], buffers=buffers[:npb]).load()
        finally:
            _local.source = None
    finally:
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def has_buffers(payload: bytes | bytearray) -> bool:
    """Whether a received payload's buffers are in the sender's arena (read them before answering)."""
    npb: int
    nbig: int
    _, npb, nbig, _, _ = _PREFIX.unpack_from(payload)
    return npb + nbig > 0


def plain(data: bytes) -> list[bytes]:
    """Payload parts for a pickle made with :func:`pickle.dumps` alone (no buffers, no descriptors)."""
    return [_PLAIN, data]


def send_fd(fd: int) -> int | None:
    """While :func:`dumps` runs on this thread: sends a copy of ``fd`` with the frame and returns its
    index for :func:`take_fd`; otherwise ``None``."""
    sink = getattr(_local, "sink", None)
    if sink is None:
        return None
    sink.append(os.dup(fd))
    return len(sink) - 1


def take_fd(index: int) -> int:
    """While :func:`loads` runs on this thread: takes ownership of shared descriptor ``index``."""
    source = getattr(_local, "source", None)
    if source is not None:
        fds: list[int]
        first: int
        fds, first = source
        if 0 <= index < len(fds) - first and fds[first + index] >= 0:
            fd = fds[first + index]
            fds[first + index] = -1
            return fd
    raise pickle.UnpicklingError("a shared object arrived without its shared-memory descriptor")


# -- framing -------------------------------------------------------------------------------------


class Channel:
    """One end of a parent-worker socket: whole frames out, frames in (one reader).

    Two ways out. A worker writes with :meth:`send` and :meth:`send_pickled`, which block until
    the kernel has taken the frame (thread-safe: log records may come from any of its threads).
    The parent never blocks on a worker's socket: its one manager thread puts frames in an
    outgoing queue with :meth:`queue` and writes what the socket takes without waiting with
    :meth:`flush`, again when the socket is writable. So the parent always gets back to reading,
    and a worker blocked writing a result to a full socket is always drained: neither side can
    wait on the other while both write.
    """

    __slots__ = (
        "_arena",
        "_big",
        "_closed",
        "_fds",
        "_fill",
        "_frames",
        "_out",
        "_peer",
        "_scratch",
        "_send_lock",
        "sock",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._scratch = bytearray(_SCRATCH)  # received bytes; the first `_fill` are not consumed yet
        self._fill = 0
        self._fds: deque[int] = deque()
        self._frames: deque[tuple[int, int, bytes | bytearray, list[int]]] = deque()
        # A payload too big for the scratch buffer, read straight into place:
        # [kind, nfds, task id, payload, bytes received].
        self._big: list[Any] | None = None
        self._arena = Arena()  # where this side writes large buffers
        self._peer: mmap.mmap | None = None  # the other side's arena
        self._closed = False
        # Frames queued and not fully written: [the parts left to write, descriptors it owns that
        # go with its first byte]. Only the parent's manager thread touches it.
        self._out: deque[list[Any]] = deque()

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- blocking writes (the worker's side) ---------------------------------------------------

    def send(self, kind: int, tid: int, parts: list[bytes] | tuple[bytes, ...] = ()) -> None:
        """Sends one frame of raw parts; blocks until the kernel has taken all of it. Raises OSError."""
        with self._send_lock:
            self._send_locked(kind, tid, parts, [])

    def send_pickled(self, kind: int, tid: int, p: Pickled, fresh: bool = False) -> None:
        """Sends a pickled object, its large buffers through this side's arena (a new one when
        ``fresh``, see :meth:`Arena.place`); blocks until sent. Raises OSError."""
        with self._send_lock:
            if self._closed:
                raise OSError(f"the channel is closed; frame of kind {kind} not sent")
            parts, fds, new_fd = self._frame_parts(p, fresh)
            try:
                self._send_locked(kind, tid, parts, fds)
            finally:
                if new_fd >= 0:
                    os.close(new_fd)

    def _frame_parts(self, p: Pickled, fresh: bool) -> tuple[tuple[bytes, ...], list[int], int]:
        """The payload parts and descriptors of a pickled object; places its buffers in the arena.
        Returns the arena's new descriptor too (-1 if unchanged), which the caller closes."""
        if not p.buffers and not p.shared and not p.persistent:
            return (_PLAIN, p.data), [], -1
        records, new_fd = self._arena.place(p.buffers, fresh) if p.buffers else (b"", -1)
        fds = [new_fd, *p.shared] if new_fd >= 0 else list(p.shared)
        nbuf = len(p.buffers)
        prefix = _PREFIX.pack(p.persistent, p.npb, nbuf - p.npb, len(p.shared), new_fd >= 0)
        return (prefix, records, p.data), fds, new_fd

    def _send_locked(self, kind: int, tid: int, parts: list[bytes] | tuple[bytes, ...], fds: list[int]) -> None:
        length = 0
        for p in parts:
            length += len(p)
        bufs = [HEADER.pack(kind, len(fds), tid, length), *parts]
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sent = self.sock.sendmsg(bufs, anc)
        if sent < HEADER.size + length:
            for b in bufs:
                n = len(b)
                if sent >= n:
                    sent -= n
                    continue
                self.sock.sendall(memoryview(b)[sent:])
                sent = 0

    # -- non-blocking writes (the parent's side) ------------------------------------------------

    def queue(self, kind: int, tid: int, p: Pickled | None = None, fresh: bool = False) -> None:
        """Adds a frame to the outgoing queue; :meth:`flush` writes it.

        Large buffers are copied into this side's arena now (a new arena when ``fresh``), and the
        frame keeps copies of the descriptors it carries, so ``p`` may be closed at once. Raises
        OSError (the arena could not be made).
        """
        if self._closed:
            return
        if p is None:
            parts: tuple[bytes, ...] = ()
            fds: list[int] = []
        else:
            parts, shared, new_fd = self._frame_parts(p, fresh)
            fds = []
            try:
                for fd in shared:
                    fds.append(fd if fd == new_fd else os.dup(fd))
            except BaseException:
                for fd in fds:
                    os.close(fd)
                if new_fd >= 0 and new_fd not in fds:
                    os.close(new_fd)
                raise
        length = 0
        for part in parts:
            length += len(part)
        bufs = [memoryview(HEADER.pack(kind, len(fds), tid, length)), *(memoryview(x) for x in parts if x)]
        self._out.append([bufs, fds])

    def wants_write(self) -> bool:
        """Whether queued frames wait for the socket to become writable."""
        return bool(self._out)

    def flush(self) -> bool:
        """Writes queued frames until the socket would block; ``True`` when all are written.

        Never blocks (the socket is non-blocking). Raises OSError if the peer is gone; the
        frames left are dropped then.
        """
        out = self._out
        sock = self.sock
        try:
            while out:
                frame = out[0]
                bufs, fds = frame
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
                try:
                    sent = sock.sendmsg(bufs, anc)
                except BlockingIOError:
                    return False
                if fds:  # they went with the first byte
                    frame[1] = []
                    for fd in fds:
                        os.close(fd)
                while bufs and sent >= len(bufs[0]):
                    sent -= len(bufs.pop(0))
                if bufs:
                    bufs[0] = bufs[0][sent:]
                    return False  # the socket took part of it: it is full
                out.popleft()
        except OSError:
            self._drop_queued()
            raise
        return True

    def _drop_queued(self) -> None:
        while self._out:
            for fd in self._out.popleft()[1]:
                os.close(fd)

    def loads(self, payload: bytes | bytearray, fds: list[int]) -> Any:
        """Unpickles a received payload; closes or takes ownership of every descriptor."""
        if payload[_PREFIX.size - 1] and fds:  # the sender's arena changed: map the new one
            fd = fds[0]
            fds[0] = -1
            try:
                if self._peer is not None:
                    self._peer.close()
                    self._peer = None
                self._peer = mmap.mmap(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
        return loads(payload, fds, self._peer)

    def pump(self) -> bool:
        """Reads what the socket has (blocking if nothing, unless the socket is non-blocking);
        returns ``False`` at end of stream. Raises OSError, BlockingIOError when a non-blocking
        socket has nothing to read."""
        big = self._big
        if big is not None:
            n = self.sock.recv_into(memoryview(big[3])[big[4] :])
            if n == 0:
                return False
            big[4] += n
            if big[4] == len(big[3]):
                self._big = None
                self._frames.append((big[0], big[2], big[3], [self._fds.popleft() for _ in range(big[1])]))
            return True
        scratch = self._scratch
        fill = self._fill
        with memoryview(scratch) as view:
            n, anc, flags, _ = self.sock.recvmsg_into([view[fill:]], _ANCILLARY)
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                    self._fds.extend(fds)
            if flags & _CTRUNC:
                raise OSError("a frame carried more descriptors than ferrio allows")
            if n == 0:
                return False
            fill += n
            start = 0
            while fill - start >= HEADER.size:
                kind, nfds, tid, length = HEADER.unpack_from(scratch, start)
                end = start + HEADER.size + length
                if end <= fill:
                    payload = bytes(view[start + HEADER.size : end])
                    self._frames.append((kind, tid, payload, [self._fds.popleft() for _ in range(nfds)]))
                    start = end
                    continue
                if HEADER.size + length > _SCRATCH:  # read the rest straight into place
                    rest = bytearray(length)
                    have = fill - start - HEADER.size
                    rest[:have] = view[start + HEADER.size : fill]
                    self._big = [kind, nfds, tid, rest, have]
                    start = fill
                break
            if start:
                scratch[: fill - start] = view[start:fill]
            self._fill = fill - start
        return True

    def frames(self) -> deque[tuple[int, int, bytes | bytearray, list[int]]]:
        """Complete frames received so far, oldest first; pop them to consume."""
        return self._frames

    def recv(self) -> tuple[int, int, bytes | bytearray, list[int]]:
        """Blocks for the next whole frame: ``(kind, task id, payload, descriptors)``.

        Raises:
            EOFError: the other end closed.
        """
        while not self._frames:
            if not self.pump():
                raise EOFError("the other end of the channel closed")
        return self._frames.popleft()

    def close(self) -> None:
        """Closes the socket and every received descriptor nobody took."""
        with self._send_lock:  # not while another thread writes into the arena
            self._closed = True
            self.sock.close()
            self._arena.close()
        self._drop_queued()
        while self._fds:
            os.close(self._fds.popleft())
        while self._frames:
            for fd in self._frames.popleft()[3]:
                os.close(fd)
        if self._peer is not None:
            self._peer.close()
            self._peer = None
