"""Event loops owned by threads: ``ferrio.run``, coroutines on workers, and calls into a loop
from another thread (the machinery under :mod:`ferrio.from_thread` and the blocking portal)."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _ferrio
from ._errors import NoEventLoopError

T = TypeVar("T")

_local = threading.local()
# Loops whose thread is blocked in ferrio.run() waiting for another thread: calling into them
# from that other thread could only deadlock.
_blocked_loops: set[asyncio.AbstractEventLoop] = set()


def _cancel_threadsafe(loop: asyncio.AbstractEventLoop, task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` from any thread; if its loop already closed there is nothing left to cancel."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(task.cancel)


class _ThreadLoop:
    """A thread's own event loop, closed (with its async generators) when the thread ends."""

    __slots__ = ("loop",)

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        loop = self.loop
        if not loop.is_closed() and not loop.is_running():
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def __del__(self) -> None:  # the thread ended: its threading.local dropped us
        self.close()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's own event loop: created on first need, reused by every later call."""
    holder = getattr(_local, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _local.holder = _ThreadLoop()
    return holder.loop


def close_thread_loop() -> None:
    """Closes this thread's loop, if it has one (ferrio workers call it as they exit)."""
    holder = getattr(_local, "holder", None)
    if holder is not None:
        del _local.holder
        holder.close()


def _check_awaitable(api: str, obj: object) -> Awaitable[Any]:
    if inspect.isawaitable(obj):
        return obj
    if inspect.iscoroutinefunction(obj):
        name = getattr(obj, "__qualname__", repr(obj))
        raise TypeError(
            f"{api} expected a coroutine or awaitable, but got the coroutine function '{name}'; call it: "
            f"{api[:-1]}{name}(...))"
        )
    raise TypeError(f"{api} expected a coroutine or awaitable, got {obj!r} of type '{type(obj).__name__}'")


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _as_coroutine(awaitable: Awaitable[T]) -> Coroutine[Any, Any, T]:
    return awaitable if inspect.iscoroutine(awaitable) else _await(awaitable)


def _run_on_this_thread(awaitable: Awaitable[T]) -> T:
    loop = thread_loop()
    task = loop.create_task(_as_coroutine(awaitable))
    try:
        return loop.run_until_complete(task)
    except KeyboardInterrupt:
        # Ctrl-C: Python's default handler raised it, usually inside select() while the coroutine
        # awaited something. Cancel the coroutine, let it clean up, then raise. No handler is
        # installed per call (that costs more than the rest of a call), so if the signal lands
        # while the coroutine's own code runs, the coroutine sees KeyboardInterrupt instead.
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):  # a second Ctrl-C cuts the clean-up short
                loop.run_until_complete(task)
        raise


def run(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` to completion from sync code and return its result.

    ::

        result = asyncio.run(fetch_all(urls))    # creates and closes a loop every call
        result = ferrio.run(fetch_all(urls))     # reuses this thread's loop: cheap in a loop

    From a thread with no running event loop, the coroutine runs on the thread's own loop, created
    on first use and kept for the next call (like a reused :class:`asyncio.Runner`: tasks it leaves
    behind resume at the next call; the loop closes when the thread ends). Ctrl-C cancels the
    coroutine, lets it clean up, and raises :exc:`KeyboardInterrupt`, as ``asyncio.run`` does.

    From a thread whose loop is running (sync code called from async code, a notebook cell), it
    still works, without patching asyncio: the coroutine runs on a ferrio worker thread's own loop
    while this thread blocks. What that costs: **the calling loop is frozen** until the coroutine
    finishes, its other tasks wait, and the coroutine cannot use that loop's objects (awaiting one
    of its futures raises ``RuntimeError``; calling back into it with :mod:`ferrio.from_thread`
    raises instead of deadlocking). Await the coroutine directly where you can.

    Raises:
        TypeError: ``awaitable`` is not awaitable (for example a coroutine function, not called).
    """
    api = "ferrio.run()"
    awaitable = _check_awaitable(api, awaitable)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_this_thread(awaitable)
    return _run_elsewhere(running, awaitable)


@dataclass
class _Remote:
    """A coroutine running on a worker's loop for a blocked caller; lets the caller cancel it."""

    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        if self.loop is not None and self.task is not None:
            _cancel_threadsafe(self.loop, self.task)


def _run_for_blocked_caller(awaitable: Awaitable[T], remote: _Remote) -> T:
    loop = thread_loop()
    task = loop.create_task(_as_coroutine(awaitable))
    remote.loop, remote.task = loop, task
    return loop.run_until_complete(task)


def _run_elsewhere(running: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
    from ._threads import default_pool

    remote = _Remote()
    fut = default_pool().submit(_run_for_blocked_caller, awaitable, remote)
    caller = asyncio.current_task(running)
    _blocked_loops.add(running)
    try:
        while True:
            try:
                # Polling every 50 ms only to notice a cancellation of the calling task (asyncio.run's
                # Ctrl-C handler cancels it rather than raising); the result itself wakes us at once.
                return fut.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if caller is not None and _cancel_requested(caller):
                    remote.cancel()
                    concurrent.futures.wait([fut], timeout=10)
                    raise asyncio.CancelledError from None
    except KeyboardInterrupt:
        remote.cancel()
        raise
    finally:
        _blocked_loops.discard(running)


def _cancel_requested(task: asyncio.Task[Any]) -> bool:
    cancelling = getattr(task, "cancelling", None)  # 3.11+
    if cancelling is not None:
        return cancelling() > 0
    return bool(getattr(task, "_must_cancel", False))  # 3.10: the flag Task.cancel() sets


def run_coroutine_function(afn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> T:
    """Runs ``afn(*args, **kwargs)`` on this worker thread's own loop (for ``ThreadPool.run``).

    If the job's awaiting task is cancelled, the coroutine is cancelled too.
    """
    loop = thread_loop()
    task = loop.create_task(_as_coroutine(afn(*args, **(kwargs or {}))))
    awaiting = _ferrio.current_job_future()
    if isinstance(awaiting, asyncio.Future):
        owner = awaiting.get_loop()

        def on_done(f: asyncio.Future[Any]) -> None:
            if f.cancelled() and not task.done():
                _cancel_threadsafe(loop, task)

        try:
            owner.call_soon_threadsafe(awaiting.add_done_callback, on_done)
        except RuntimeError:  # the awaiting loop closed: nobody wants the result
            task.cancel()
    return loop.run_until_complete(task)


# -- calling into a loop from another thread -------------------------------------------------------


@dataclass(frozen=True)
class EventLoopToken:
    """Identifies an event loop for :mod:`ferrio.from_thread` calls from threads ferrio did not start."""

    loop: asyncio.AbstractEventLoop


def current_token() -> EventLoopToken:
    """A token for the running event loop, to pass as ``token=`` to :mod:`ferrio.from_thread`.

    Raises:
        NoEventLoopError: no event loop is running in this thread.
    """
    try:
        return EventLoopToken(asyncio.get_running_loop())
    except RuntimeError:
        raise NoEventLoopError(
            "ferrio.current_token()",
            "ferrio.current_token() must be called on an event loop's thread, "
            "inside a coroutine or callback; no loop is running in this thread",
        ) from None


class LoopCall:
    """One call made into an event loop from another thread, and the blocked thread's wait for it.

    The loop runs :meth:`start` (through ``call_soon_threadsafe``); the caller blocks on a plain
    lock, released by the loop when the call (or the task it started) ends. No
    ``concurrent.futures.Future``, no extra task.
    """

    __slots__ = ("_done", "_exc", "_result", "args", "fn", "is_async", "loop", "on_done", "task", "track")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        is_async: bool | None,
        on_done: Callable[[LoopCall], None] | None = None,
        track: set[asyncio.Task[Any]] | None = None,
    ) -> None:
        self.loop, self.fn, self.args, self.is_async, self.on_done = loop, fn, args, is_async, on_done
        #: Where to register the task that drives an async call while it runs (the portal's set).
        self.track = track
        self.task: asyncio.Future[Any] | None = None
        self._result: Any = None
        self._exc: BaseException | None = None
        self._done = _thread.allocate_lock()
        self._done.acquire()

    def start(self) -> None:
        """On the loop's thread: make the call, or start the task it returns."""
        try:
            r = self.fn(*self.args)
            if self.is_async is not False and inspect.isawaitable(r):
                self.task = task = self.loop.create_task(self._drive(r))
                if self.track is not None:
                    self.track.add(task)
                    task.add_done_callback(self.track.discard)
                return
            if self.is_async:
                raise TypeError(
                    f"ferrio.from_thread.run() expected an async function, but {self.fn!r} returned "
                    f"{r!r}; use ferrio.from_thread.run_sync() for sync functions"
                )
            self._result = r
        except BaseException as e:
            self._exc = e
        self._finish()

    async def _drive(self, awaitable: Awaitable[Any]) -> None:
        # Finishing inside the task's own step, not in a done callback, saves a loop iteration.
        try:
            self._result = await awaitable
        except BaseException as e:  # CancelledError included: the waiting thread re-raises it
            self._exc = e
        finally:
            self._finish()

    def _finish(self) -> None:
        try:
            if self.on_done is not None:
                self.on_done(self)
        finally:
            self._done.release()  # whatever happens, the waiting thread wakes

    def outcome(self) -> tuple[Any, BaseException | None]:
        """``(result, exception)`` once the call has finished."""
        return self._result, self._exc

    def submit(self, api: str) -> None:
        try:
            self.loop.call_soon_threadsafe(self.start, context=contextvars.copy_context())
        except RuntimeError:
            raise RuntimeError(f"{api} cannot call into the event loop: it is closed") from None

    def wait(self, api: str) -> Any:
        # Polling every 0.25 s only to notice a loop that closed without running the call; the
        # normal wake-up is the release of the lock.
        while not self._done.acquire(timeout=0.25):
            if self.loop.is_closed():
                raise RuntimeError(f"{api} failed: the event loop closed before the call finished")
        exc = self._exc
        if exc is not None:
            self._exc = None
            try:
                raise exc
            finally:
                exc = None
        return self._result

    def cancel(self) -> None:
        """From the waiting thread (e.g. on Ctrl-C): cancel the task, if one started."""
        if self.task is not None:
            _cancel_threadsafe(self.loop, self.task)


def _target_loop(api: str, token: EventLoopToken | None) -> asyncio.AbstractEventLoop:
    if token is not None:
        if not isinstance(token, EventLoopToken):
            raise TypeError(
                f"{api} expected token= to be a ferrio.EventLoopToken from ferrio.current_token(), got {token!r}"
            )
        loop = token.loop
    else:
        fut = _ferrio.current_job_future()
        if not isinstance(fut, asyncio.Future):
            raise NoEventLoopError(api)
        loop = fut.get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError(
            f"{api} was called on the event loop's own thread, where waiting for the loop would deadlock; "
            "await the call directly instead"
        )
    if loop in _blocked_loops:
        raise RuntimeError(
            f"{api} would deadlock: the target event loop is blocked in ferrio.run() waiting for this very call "
            "to finish; pass the values the coroutine needs as arguments instead of calling back into that loop"
        )
    return loop


def call_in_loop(
    api: str,
    loop: asyncio.AbstractEventLoop,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    is_async: bool | None,
    track: set[asyncio.Task[Any]] | None = None,
) -> Any:
    """Makes one call into ``loop`` from another thread and blocks until it ends (see LoopCall)."""
    call = LoopCall(loop, fn, args, is_async, track=track)
    call.submit(api)
    try:
        return call.wait(api)
    except KeyboardInterrupt:
        call.cancel()
        raise


def from_thread_run(afn: Callable[..., Awaitable[T]], /, *args: Any, token: EventLoopToken | None = None) -> T:
    """Run ``afn(*args)`` on the event loop and return its result, blocking this thread.

    Raises:
        NoEventLoopError: no ``token=``, and this thread is not running a job that an event loop awaits.
        RuntimeError: called on the loop's own thread (it would deadlock); the loop is blocked in
            ``ferrio.run()`` waiting for this thread; or the loop closed before the call finished.
        TypeError: ``afn`` is not callable, or did not return an awaitable.
    """
    api = "ferrio.from_thread.run()"
    if not callable(afn):
        raise TypeError(f"{api} expected an async function, got {afn!r}")
    return call_in_loop(api, _target_loop(api, token), afn, args, True)


def from_thread_run_sync(fn: Callable[..., T], /, *args: Any, token: EventLoopToken | None = None) -> T:
    """Call ``fn(*args)`` on the event loop's thread and return its result, blocking this thread.

    Raises:
        NoEventLoopError: no ``token=``, and this thread is not running a job that an event loop awaits.
        RuntimeError: called on the loop's own thread (it would deadlock); the loop is blocked in
            ``ferrio.run()`` waiting for this thread; or the loop closed before the call finished.
        TypeError: ``fn`` is not callable, or is a coroutine function.
    """
    api = "ferrio.from_thread.run_sync()"
    if not callable(fn):
        raise TypeError(f"{api} expected a callable, got {fn!r}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"{api} expected a sync function, but {getattr(fn, '__qualname__', fn)!r} is a coroutine "
            "function; use ferrio.from_thread.run()"
        )
    return call_in_loop(api, _target_loop(api, token), fn, args, False)


# -- decorators --------------------------------------------------------------------------------------


def syncify(afn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Turn an async function into a plain function that runs it with :func:`ferrio.run`.

    ::

        @ferrio.syncify
        async def ping(host: str) -> float: ...

        latency = ping("example.org")      # from sync code, no event loop needed

    Raises:
        TypeError: ``afn`` is not a coroutine function.
    """
    if not inspect.iscoroutinefunction(afn):
        raise TypeError(f"ferrio.syncify expected an async function, got {afn!r}")

    @functools.wraps(afn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return run(afn(*args, **kwargs))

    return wrapper
