"""Queues, locks, semaphores and events usable from threads and event-loop tasks at once.

Each object is one Rust primitive with two faces: the blocking methods of :mod:`threading` and
:mod:`queue` (which release the GIL while they wait and respond to Ctrl-C and ``timeout=``), and
awaitable ones that never block the event loop. Any number of threads and of event loops may use
one object at once, and it may be created before any loop runs. Waiters of both kinds are served
first come, first served; a cancelled ``await`` never loses an item or a permit.

Locks, semaphores, events and conditions take the name of whichever API the caller knows:
``lock.acquire()`` / ``event.wait()`` block a plain thread as threading's do, and return an
awaitable on a thread whose event loop is running, as asyncio's do.

After ``os.fork()``, primitives created in the child work normally, whatever the parent's threads
were doing. One that existed before the fork is like a :class:`threading.Lock` after fork: its
state (held, waiters, a half-done operation) is the parent's at that instant, and parent threads
waiting on it do not exist in the child. Create new ones in the child.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import warnings
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from . import _ferrio
from ._errors import QueueEmpty, QueueFull, QueueShutDown, check_nonnegative_int, check_timeout
from ._wakers import waker_for

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)
_get_running_loop = asyncio.get_running_loop
_running_loop = asyncio.events._get_running_loop  # None where no loop runs; asyncio's own cheap check


_SHUTDOWN = object()  # what a waiting getter's future receives when the queue shuts down
_ERRORS = (QueueEmpty, QueueFull, QueueShutDown)


class _QueueView:
    """What every view of a queue offers: its size, bound and shutdown."""

    __slots__ = ("_core",)
    _core: _ferrio.QueueCore

    @property
    def maxsize(self) -> int:
        return self._core.maxsize

    def qsize(self) -> int:
        return self._core.qsize()

    def empty(self) -> bool:
        return self._core.qsize() == 0

    def full(self) -> bool:
        return self._core.full()

    def shutdown(self, immediate: bool = False) -> None:
        """Puts fail from now on; gets fail once the queue is empty (at once with
        ``immediate``, which also drops the items). Waiters wake with :exc:`QueueShutDown`."""
        self._core.shutdown(immediate)


class _Put(Protocol[T_contra]):
    def __call__(self, item: T_contra, block: bool = True, timeout: float | None = None) -> None: ...


class _Get(Protocol[T_co]):
    def __call__(self, block: bool = True, timeout: float | None = None) -> T_co: ...


class _PutNowait(Protocol[T_contra]):
    def __call__(self, item: T_contra) -> None: ...


class _Join(Protocol):
    def __call__(self, timeout: float | None = None) -> bool: ...


class _SyncFace(_QueueView, Generic[T]):
    """``queue.Queue``'s API over a :class:`ferrio.Queue`, usable from any thread."""

    __slots__ = ("get", "get_nowait", "join", "put", "put_nowait", "task_done")

    # Bound Rust methods, set per instance (a call from a thread goes straight to Rust), typed here.
    put: _Put[T]
    """Put ``item``, blocking (the GIL released) while the queue is full; :exc:`QueueFull` after
    ``timeout`` or at once with ``block=False``, :exc:`QueueShutDown` after ``shutdown()``."""
    get: _Get[T]
    """Remove and return an item, blocking (the GIL released) while the queue is empty;
    :exc:`QueueEmpty` after ``timeout`` or at once with ``block=False``, :exc:`QueueShutDown` once
    a shut-down queue is empty."""
    put_nowait: _PutNowait[T]
    """``put(item, block=False)``."""
    get_nowait: Callable[[], T]
    """``get(block=False)``."""
    task_done: Callable[[], None]
    """Marks one item got as processed, for ``join()``."""
    join: _Join
    """Blocks until every item put was marked done with ``task_done()``; ``False`` if ``timeout``
    passed first."""

    def __init__(self, core: _ferrio.QueueCore) -> None:
        self._core = core
        # Bound Rust methods: a call from a thread goes straight to Rust.
        self.put, self.get, self.put_nowait, self.get_nowait = core.put, core.get, core.put_nowait, core.get_nowait
        self.task_done, self.join = core.task_done, core.join


class _AsyncFace(_QueueView, Generic[T]):
    """``asyncio.Queue``'s API over a :class:`ferrio.Queue`, usable from any event loop."""

    __slots__ = ("get_nowait", "put_nowait", "task_done")

    put_nowait: _PutNowait[T]
    """Put ``item`` if there is room; :exc:`QueueFull` if not, :exc:`QueueShutDown` after ``shutdown()``."""
    get_nowait: Callable[[], T]
    """Remove and return an item if one is there; :exc:`QueueEmpty` if not."""
    task_done: Callable[[], None]
    """Marks one item got as processed, for ``join()``."""

    def __init__(self, core: _ferrio.QueueCore) -> None:
        self._core = core
        self.put_nowait, self.get_nowait = core.put_nowait, core.get_nowait
        self.task_done = core.task_done

    async def put(self, item: T) -> None:
        """Put ``item``, waiting (without blocking the loop) while the queue is full.

        Raises:
            QueueShutDown: the queue was shut down.
        """
        core = self._core
        if core.try_put(item):
            return
        loop = _get_running_loop()
        fut = loop.create_future()
        held = core.put_async(waker_for(loop), fut, item)
        if held is None:
            return
        try:
            granted = await fut
        except asyncio.CancelledError:
            core.cancel_wait(fut, "put")
            raise
        if not granted:
            raise QueueShutDown("the queue was shut down")
        core.commit_put(held)

    async def get(self) -> T:
        """Remove and return an item, waiting (without blocking the loop) while empty.

        Raises:
            QueueShutDown: the queue was shut down and is empty.
        """
        core = self._core
        ready, item = core.try_get()
        if ready:
            return cast(T, item)
        loop = _get_running_loop()
        fut = loop.create_future()
        ready, item = core.get_async(waker_for(loop), fut)
        if ready:
            return cast(T, item)
        try:
            item = await fut
        except asyncio.CancelledError:
            core.cancel_wait(fut, "get")
            raise
        if item is _SHUTDOWN:
            raise QueueShutDown("the queue was shut down")
        core.got_item()  # the item counted against maxsize until now, in case we gave it back
        return cast(T, item)

    async def join(self) -> None:
        """Wait until every item put has been marked done with ``task_done()``."""
        core = self._core
        loop = _get_running_loop()
        fut = loop.create_future()
        if core.join_async(waker_for(loop), fut):
            return
        try:
            await fut
        except asyncio.CancelledError:
            core.cancel_wait(fut, "join")
            raise


class Queue(_QueueView, Generic[T]):
    """A FIFO queue for threads and tasks at once, with janus's two faces.

    ::

        q = ferrio.Queue(maxsize=64)
        q.sync_q.put(item, timeout=1.0)         # queue.Queue's API, from any thread
        item = await q.async_q.get()            # asyncio.Queue's API, from any event loop

    Moving from janus is an import change. Unlike janus, it may be created before any event loop
    runs, and used from any number of threads and loops at once. ``shutdown()`` follows Python
    3.13's semantics on every version; ``close()`` / ``await aclose()`` are janus's names for an
    immediate shutdown.

    Raises:
        TypeError: ``maxsize`` is not an int.
        ValueError: ``maxsize`` is negative.
    """

    _order = "fifo"

    def __init__(self, maxsize: int = 0) -> None:
        api = f"{type(self).__name__}()"
        self._core = _ferrio.QueueCore(check_nonnegative_int(api, "maxsize", maxsize), self._order, _SHUTDOWN, _ERRORS)
        self.sync_q: _SyncFace[T] = _SyncFace(self._core)
        self.async_q: _AsyncFace[T] = _AsyncFace(self._core)

    @property
    def closed(self) -> bool:
        return self._core.is_shutdown()

    def close(self) -> None:
        """janus's ``close()``: an immediate shutdown."""
        self._core.shutdown(True)

    async def wait_closed(self) -> None:
        """janus's ``wait_closed()``: nothing is left to wait for once ``close()`` returned."""

    async def aclose(self) -> None:
        """janus's ``aclose()``: ``close()``, awaitable."""
        self.close()

    def statistics(self) -> QueueStatistics:
        c = self._core.counts()
        return QueueStatistics(
            qsize=c.items,
            unfinished_tasks=c.unfinished_tasks,
            getters_waiting=c.getters_waiting,
            putters_waiting=c.putters_waiting,
        )


class LifoQueue(Queue[T]):
    """A :class:`Queue` that returns the most recently added item first."""

    _order = "lifo"


class PriorityQueue(Queue[T]):
    """A :class:`Queue` that returns the smallest item first (``heapq`` order), such as
    ``(priority, data)`` tuples.

    Raises:
        TypeError: from ``put``, for an item that does not support ``<``.
    """

    _order = "priority"


@dataclass(frozen=True)
class QueueStatistics:
    """A snapshot of a :class:`ferrio.Queue`."""

    qsize: int
    unfinished_tasks: int
    getters_waiting: int
    putters_waiting: int


@dataclass(frozen=True)
class LockStatistics:
    """A snapshot of a lock or semaphore: whether it is held (no permit free) and how many wait."""

    locked: bool
    waiting: int


_TIMED_OUT = False  # what a timed-out wait's future is resolved with (a hand-off resolves to None/True)


def _time_out(fut: asyncio.Future[object]) -> None:
    if not fut.done():
        fut.set_result(_TIMED_OUT)


async def _await_queued(
    loop: asyncio.AbstractEventLoop,
    fut: asyncio.Future[object],
    timeout: float | None,
    unqueue: Callable[[asyncio.Future[object]], object],
) -> object:
    """Awaits ``fut``, a waiter queued in Rust, for at most ``timeout`` seconds (None: no limit).

    Returns what it was resolved with, ``_TIMED_OUT`` if the time ran out. A cancelled or timed-out
    waiter is unqueued with ``unqueue(fut)``, which passes on a hand-off that raced in late.
    """
    timer = None if timeout is None else loop.call_later(timeout, _time_out, fut)
    try:
        got = await fut
    except asyncio.CancelledError:
        unqueue(fut)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if got is _TIMED_OUT:
        unqueue(fut)
    return got


class _Pending:
    """What ``acquire()`` / ``wait()`` return on a thread whose event loop is running: an
    awaitable, as asyncio's coroutines are. Nothing happens until it is awaited.

    It refuses to be used as a bool: ``if lock.acquire():`` written for threading would otherwise
    be always true without acquiring anything.
    """

    __slots__ = ("_api", "_args", "_awaited", "_start")

    def __init__(self, api: str, start: Callable[..., Awaitable[Any]], *args: object) -> None:
        self._api, self._start, self._args, self._awaited = api, start, args, False

    def __await__(self) -> Generator[Any, None, Any]:
        self._awaited = True
        return self._start(*self._args).__await__()

    def __bool__(self) -> bool:
        kind, method = self._api[:-2].split(".")
        raise TypeError(
            f"{self._api} was called on a thread running an event loop, where it returns an awaitable, as "
            f"asyncio's does: write `await {kind.lower()}.{method}()`; for an answer at once use "
            "acquire(blocking=False), acquire_nowait() or is_set()"
        )

    def __del__(self) -> None:
        if not self._awaited:
            warnings.warn(f"{self._api}'s awaitable was never awaited, so it did nothing", RuntimeWarning, 2)


def _lock_timeout(api: str, timeout: object, *, minus_one_is_forever: bool) -> float | None:
    """A timeout as threading's ``Lock`` (``-1`` is no limit, other negatives an error) or
    ``Semaphore`` / ``Event`` (``None`` is no limit, a negative one only tries) take it."""
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout < 0:
        if minus_one_is_forever and timeout == -1:
            return None
        if minus_one_is_forever:
            raise ValueError(
                f"{api} expected timeout to be -1 (no limit) or a non-negative number of seconds, got {timeout!r}"
            )
        return 0.0
    return check_timeout(api, timeout)


class _AsyncAcquire(_ferrio.SemaphoreCore):
    """The acquire of :class:`Lock` and :class:`Semaphore`: threading's in a plain thread,
    asyncio's where an event loop runs."""

    _api = "Semaphore.acquire()"
    _minus_one_is_forever = False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> Any:
        """``threading``'s acquire in a plain thread; ``asyncio``'s on an event loop's thread.

        In a thread: blocks (the GIL released, Ctrl-C works) until a permit is taken, or
        ``timeout`` passes; returns whether it was taken. Where an event loop is running, returns
        an awaitable instead, so ``await lock.acquire()`` works as for :class:`asyncio.Lock`
        without blocking the loop (``await lock.acquire(timeout=1)`` gives ``False`` once the
        timeout passes). ``acquire(blocking=False)`` answers at once everywhere.

        Raises:
            ValueError: a timeout with ``blocking=False``, or a negative timeout (other than -1)
                for a lock.
            TypeError: ``timeout`` is not a number; or the awaitable was used as a bool.
        """
        if not blocking or _running_loop() is None:
            return _ferrio.SemaphoreCore.acquire(self, blocking, timeout)
        t = _lock_timeout(self._api, timeout, minus_one_is_forever=self._minus_one_is_forever)
        return _Pending(self._api, self._acquire_async, t)

    async def acquire_async(self) -> bool:
        """Acquire without blocking the event loop; waiters of both worlds are served in order.

        Cancelling the awaiting task never leaks the permit.
        """
        return await self._acquire_async(None)

    async def _acquire_async(self, timeout: float | None) -> bool:
        if self.acquire_nowait():
            return True
        loop = _get_running_loop()
        fut = loop.create_future()
        if self._queue_acquire(waker_for(loop), fut):
            return True
        # A cancelled or timed-out waiter is unqueued; a permit that reached it late passes on.
        return await _await_queued(loop, fut, timeout, self._cancel_acquire) is not _TIMED_OUT

    async def __aenter__(self) -> None:
        if not self.acquire_nowait():
            await self._acquire_async(None)

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def statistics(self) -> LockStatistics:
        c = self._counts()
        return LockStatistics(locked=c.free == 0, waiting=c.waiting)


class Lock(_AsyncAcquire):
    """A mutual-exclusion lock for threads and tasks at once.

    ::

        with lock: ...           # in a thread: blocks that thread (GIL released), Ctrl-C works
        async with lock: ...     # in a task: never blocks the loop

    A thread and a task can never hold it at once; waiters are served first come, first served
    across both worlds. In a plain thread, ``acquire(blocking=True, timeout=-1)``, ``release()``
    and ``locked()`` are :class:`threading.Lock`'s; on a thread whose event loop is running,
    ``await lock.acquire()`` is :class:`asyncio.Lock`'s (so is ``await acquire_async()``);
    ``acquire_nowait()`` and ``statistics()`` are anyio's. Any thread or task may release it.
    ``with lock:`` on an event loop's thread takes a free lock but raises rather than block the
    loop: use ``async with lock:`` there.

    Raises:
        RuntimeError: ``release()`` of an unlocked lock; ``with lock:`` on a running event loop's
            thread while the lock is held.
    """

    _api = "Lock.acquire()"
    _minus_one_is_forever = True

    def __new__(cls) -> Lock:
        return super().__new__(cls, 1, 1, True)

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> Any:
        return _AsyncAcquire.acquire(self, blocking, timeout)

    def locked(self) -> bool:
        return self._counts().free == 0


class Semaphore(_AsyncAcquire):
    """A counting semaphore for threads and tasks at once: ``threading.Semaphore``'s API in a
    plain thread, ``asyncio.Semaphore``'s (``await sem.acquire()``, ``async with sem:``) on a
    thread whose event loop is running; ``await acquire_async()`` is the async acquire anywhere.

    Raises:
        ValueError: ``value`` is negative.
        TypeError: ``value`` is not an int.
    """

    _bounded = False

    def __new__(cls, value: int = 1) -> Semaphore:
        value = check_nonnegative_int(f"{cls.__name__}()", "value", value)
        return super().__new__(cls, value, value if cls._bounded else None)

    def locked(self) -> bool:
        """Whether no permit is free."""
        return self._counts().free == 0


class BoundedSemaphore(Semaphore):
    """A :class:`Semaphore` whose ``release()`` raises ``ValueError`` past its initial value."""

    _bounded = True


class Event(_ferrio.EventCore):
    """A flag that threads and tasks can wait for.

    ``set()``, ``clear()``, ``is_set()`` are :class:`threading.Event`'s. ``wait(timeout=None)``
    blocks a plain thread (the GIL released) as threading's does; on a thread whose event loop is
    running it returns an awaitable, so ``await event.wait()`` works as for
    :class:`asyncio.Event` without blocking the loop. ``await wait_async()`` is the same wait.
    """

    def wait(self, timeout: float | None = None) -> Any:
        """Wait until the flag is set, or ``timeout`` passes; return the flag.

        Raises:
            TypeError: ``timeout`` is not a number; or the awaitable was used as a bool.
            ValueError: ``timeout`` is NaN.
            OverflowError: ``timeout`` is above ``threading.TIMEOUT_MAX``.
        """
        if _running_loop() is None:
            return _ferrio.EventCore.wait(self, timeout)
        t = _lock_timeout("Event.wait()", timeout, minus_one_is_forever=False)
        return _Pending("Event.wait()", self._wait_async, t)

    async def wait_async(self) -> bool:
        """Wait until the flag is set; returns ``True``."""
        return await self._wait_async(None)

    async def _wait_async(self, timeout: float | None) -> bool:
        loop = _get_running_loop()
        fut = loop.create_future()
        if self._queue_wait(waker_for(loop), fut):
            return True
        if await _await_queued(loop, fut, timeout, self._cancel_wait) is _TIMED_OUT:
            return self.is_set()
        return True


AtomicInt = _ferrio.AtomicInt


class Condition:
    """A condition variable for threads and tasks at once, over a :class:`ferrio.Lock`.

    ::

        with cond:                       # in a thread
            cond.wait_for(lambda: ready)
        async with cond:                 # in a task
            await cond.wait_for_async(lambda: ready)
            cond.notify_all()

    ``wait``/``wait_for`` (blocking, ``timeout=``) and ``notify``/``notify_all`` are
    :class:`threading.Condition`'s; ``await wait_async()`` / ``await wait_for_async()`` are the
    async waits. Waiters of both worlds are notified in the order they started waiting. A task
    cancelled while waiting re-acquires the lock before ``CancelledError`` propagates (as
    :class:`asyncio.Condition` does) and passes on a notification it already received.

    Raises:
        TypeError: ``lock`` is not a :class:`ferrio.Lock`.
        RuntimeError: ``wait``/``notify`` called while the lock is not held.
    """

    def __init__(self, lock: Lock | None = None) -> None:
        if lock is None:
            lock = Lock()
        elif not isinstance(lock, Lock):
            raise TypeError(f"Condition() expected lock= to be a ferrio.Lock or None, got {lock!r}")
        self._lock = lock
        self._waiters: collections.deque[Event] = collections.deque()
        self.acquire, self.release, self.acquire_nowait = lock.acquire, lock.release, lock.acquire_nowait
        self.acquire_async, self.locked = lock.acquire_async, lock.locked

    def __enter__(self) -> bool:
        self._lock.__enter__()
        return True

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    async def __aenter__(self) -> None:
        await self._lock.__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()

    def _check_held(self, api: str) -> None:
        # The lock does not track its owner: this catches the common mistake (not holding it at
        # all), not a wait by a thread other than the holder.
        if not self._lock.locked():
            raise RuntimeError(f"Condition.{api}() was called without holding the condition's lock; acquire it first")

    def _forget(self, ev: Event) -> None:
        with contextlib.suppress(ValueError):  # already taken by notify()
            self._waiters.remove(ev)

    def wait(self, timeout: float | None = None) -> Any:
        """Release the lock, wait until notified (or ``timeout``), re-acquire; ``False`` on timeout.

        Blocks a plain thread as :class:`threading.Condition`'s does; on a thread whose event loop
        is running, returns an awaitable (``await cond.wait()``, as :class:`asyncio.Condition`).
        """
        if _running_loop() is not None:
            t = _lock_timeout("Condition.wait()", timeout, minus_one_is_forever=False)
            self._check_held("wait")
            return _Pending("Condition.wait()", self._wait_async, t)
        return self._wait_blocking(timeout)

    def _wait_blocking(self, timeout: float | None) -> bool:
        self._check_held("wait")
        ev = Event()
        self._waiters.append(ev)
        self._lock.release()
        try:
            return _ferrio.EventCore.wait(ev, timeout)
        finally:
            _ferrio.SemaphoreCore.acquire(self._lock)
            if not ev.is_set():
                self._forget(ev)

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true (or ``timeout``); returns its last value.

        On a thread whose event loop is running, returns an awaitable, as
        :meth:`asyncio.Condition.wait_for` is a coroutine.
        """
        t = _lock_timeout("Condition.wait_for()", timeout, minus_one_is_forever=False)
        if _running_loop() is not None:
            return _Pending("Condition.wait_for()", self._wait_for_async, predicate, t)
        deadline = None if t is None else time.monotonic() + t
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self._wait_blocking(remaining)
            result = predicate()
        return result

    async def wait_async(self) -> bool:
        """Release the lock, wait until notified without blocking the loop, re-acquire."""
        self._check_held("wait_async")
        return await self._wait_async(None)

    async def _wait_async(self, timeout: float | None) -> bool:
        ev = Event()
        self._waiters.append(ev)
        self._lock.release()
        cancelled: BaseException | None = None
        notified = False
        try:
            notified = await ev._wait_async(timeout)
        except asyncio.CancelledError as e:
            cancelled = e
        while True:  # the lock is re-acquired whatever happens, as asyncio.Condition does
            try:
                await self._lock._acquire_async(None)
                break
            except asyncio.CancelledError as e:
                cancelled = e
        if not ev.is_set():
            self._forget(ev)
        elif cancelled is not None:
            self._notify(1)  # we were notified but will not act on it: pass it on
        if cancelled is not None:
            raise cancelled
        return notified

    async def wait_for_async(self, predicate: Callable[[], T]) -> T:
        """Wait (without blocking the loop) until ``predicate()`` is true; returns its value."""
        return await self._wait_for_async(predicate, None)

    async def _wait_for_async(self, predicate: Callable[[], T], timeout: float | None) -> T:
        loop = _get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            self._check_held("wait_for")
            await self._wait_async(remaining)
            result = predicate()
        return result

    def _notify(self, n: int) -> None:
        while n > 0 and self._waiters:
            ev = self._waiters.popleft()
            if not ev.is_set():
                ev.set()
                n -= 1

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters, oldest first."""
        self._check_held("notify")
        self._notify(n)

    def notify_all(self) -> None:
        """Wake every waiter."""
        self._check_held("notify_all")
        self._notify(len(self._waiters))

    def statistics(self) -> LockStatistics:
        """Whether the lock is held, and how many wait on the condition."""
        return LockStatistics(locked=self._lock.locked(), waiting=len(self._waiters))
