"""Event loops owned by threads: ``ferrio.run``, coroutines on workers, and calls into a loop
from another thread (the machinery under :mod:`ferrio.from_thread` and the blocking portal).

Design notes:

- ``ferrio.run()`` from a thread with no running loop uses that thread's own loop (``thread_loop``).
- ``ferrio.run()`` inside a running loop hands the coroutine to a *host thread*: a plain thread
  with its own loop, kept in a small cache of idle hosts and reused, retired after
  ``_HOST_IDLE_TIMEOUT`` seconds idle, and joined at interpreter exit. Hosts come from no bounded
  pool: each busy host is held by one blocked caller, so they are as many as the callers, and the
  coroutine's own ``to_thread`` work can never wait behind the coroutines that wait for it.
- A call into a loop from another thread (``LoopCall``) is claimed exactly once: by the loop when
  it starts the call, or by the caller that gives up on it first (a cancelled portal future,
  Ctrl-C, a loop that froze). A call given up before it started never runs.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import contextlib
import contextvars
import functools
import inspect
import itertools
import os
import queue
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

if sys.version_info >= (3, 11):
    from typing import TypeVarTuple, Unpack
else:
    from typing_extensions import TypeVarTuple, Unpack

from . import _ferrio
from ._errors import NoEventLoopError, describe, not_callable, safe_repr

T = TypeVar("T")
P = ParamSpec("P")
PosArgsT = TypeVarTuple("PosArgsT")

_local = threading.local()
# Loops whose thread is blocked in ferrio.run() waiting for another thread (with how many such
# calls deep it is): calling into them from that other thread could only deadlock.
_blocked_loops: dict[asyncio.AbstractEventLoop, int] = {}


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
    if inspect.iscoroutine(obj):
        state = inspect.getcoroutinestate(obj)
        if state != inspect.CORO_CREATED:
            done = "already ran to its end" if state == inspect.CORO_CLOSED else "already started elsewhere"
            name = describe(obj)
            raise RuntimeError(
                f"{api} got the coroutine {name}(), which {done}; a coroutine runs once: pass a new one, "
                f"{api[:-1]}{name}(...))"
            )
        return obj
    if isinstance(obj, asyncio.Future):
        fut: asyncio.Future[Any] = obj  # pyright: ignore[reportUnknownVariableType]  # any result type
        # The loop the awaitable will run on: this thread's, unless one is running here (then a host's).
        try:
            asyncio.get_running_loop()
            own = None
        except RuntimeError:
            holder = getattr(_local, "holder", None)
            own = holder.loop if holder is not None and not holder.loop.is_closed() else None
        if fut.get_loop() is not own:
            raise RuntimeError(
                f"{api} got {safe_repr(fut)}, a future of another event loop ({fut.get_loop()!r}); a future can "
                "only be awaited on its own loop: await it there, or pass ferrio.run() a coroutine"
            )
        return fut
    if inspect.isawaitable(obj):
        return obj
    if inspect.iscoroutinefunction(obj):
        name = describe(obj)
        raise TypeError(
            f"{api} expected a coroutine or awaitable, but got the coroutine function '{name}'; call it: "
            f"{api[:-1]}{name}(...))"
        )
    raise TypeError(f"{api} expected a coroutine or awaitable, got {safe_repr(obj)} of type '{type(obj).__name__}'")


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
    still works, without patching asyncio: the coroutine runs on the loop of a host thread while
    this thread blocks. Host threads are ferrio's own, one per blocked caller, reused and retired
    when idle; they come from no bounded pool, so any number of such callers, nested any number
    of levels deep, can each use :func:`ferrio.to_thread`. What it costs: **the calling loop is
    frozen** until the coroutine finishes, its other tasks wait, and the coroutine cannot use that
    loop's objects (awaiting one of its futures raises ``RuntimeError``; calling back into it with
    :mod:`ferrio.from_thread` raises instead of deadlocking). Cancelling the calling task, or
    Ctrl-C, cancels the coroutine and gives it up to 10 seconds to clean up. Await the coroutine
    directly where you can.

    Raises:
        TypeError: ``awaitable`` is not awaitable (for example a coroutine function, not called).
        RuntimeError: ``awaitable`` is a coroutine that already ran or started, or a future of
            another event loop; or no thread could be started to host the coroutine.
    """
    api = "ferrio.run()"
    awaitable = _check_awaitable(api, awaitable)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_this_thread(awaitable)
    return _run_elsewhere(running, awaitable)


# -- host threads: ferrio.run() inside a running loop ------------------------------------------------

#: Seconds an idle host thread waits for another nested ``ferrio.run()`` before it exits.
_HOST_IDLE_TIMEOUT = 10.0
#: Seconds a cancelled (or Ctrl-C'd) nested ``ferrio.run()`` lets its coroutine clean up.
_CANCEL_GRACE = 10.0
#: Seconds interpreter exit waits for idle host threads to close their loops and end.
_EXIT_JOIN_TIMEOUT = 5.0
#: How often a blocked caller looks at its own task, to notice a cancellation of it (asyncio.run's
#: Ctrl-C handler cancels the main task rather than raising). The result itself wakes it at once.
_CANCEL_POLL = 0.05

# Guards the idle list and the exit flag; held only for list operations, never while waiting.
_hosts_lock = threading.Lock()
_idle_hosts: list[_Host] = []
_hosts_exiting = False
_host_numbers = itertools.count(1)
# Each host loop running a job, and that job: what lets a call find the loops frozen waiting for it.
_serving: dict[asyncio.AbstractEventLoop, _Hosted] = {}


class _Hosted:
    """One coroutine run on a host thread for a caller blocked in ``ferrio.run()``.

    The caller and the host share it. Cancellation crosses threads without a lock: the caller sets
    ``cancelled`` then reads ``task``; the host publishes ``task`` then reads ``cancelled``; under
    the GIL one of them sees the other, so a cancel is never lost, whenever it comes.
    """

    __slots__ = (
        "_claim",
        "_done",
        "_ended",
        "awaitable",
        "caller_loop",
        "cancelled",
        "child",
        "context",
        "exc",
        "loop",
        "result",
        "retired_host",
        "task",
    )

    def __init__(
        self, awaitable: Awaitable[Any], context: contextvars.Context, caller_loop: asyncio.AbstractEventLoop
    ) -> None:
        self.awaitable: Awaitable[Any] | None = awaitable
        self.context = context
        #: The loop frozen until this job ends.
        self.caller_loop = caller_loop
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False
        #: The nested run this job's coroutine is itself blocked in, if any: a cancel goes down the chain,
        #: since this job's own loop is frozen and would never run the cancellation of its task.
        self.child: _Hosted | None = None
        self.result: Any = None
        self.exc: BaseException | None = None
        #: Set when the host ended after this job (interpreter exit): the caller joins it.
        self.retired_host: threading.Thread | None = None
        #: Set by the host just before it releases ``_done`` (see :meth:`wait`).
        self._ended = False
        self._done = _thread.allocate_lock()
        self._done.acquire()
        # Taken once: by the host that runs the job, or by a caller interrupted while handing it
        # over, so a job is either run or withdrawn, never both.
        self._claim = _thread.allocate_lock()

    def withdraw(self) -> bool:
        """From the caller: take the job back before any host claims it; false if one already has."""
        return self._claim.acquire(blocking=False)

    def run(self) -> None:
        """On the host thread: run the coroutine on the host's loop, keeping the outcome."""
        if not self._claim.acquire(blocking=False):
            return  # withdrawn by its caller
        awaitable, self.awaitable = self.awaitable, None
        _local.hosting = self
        try:
            loop = thread_loop()
            coro = _as_coroutine(awaitable)  # type: ignore[arg-type]
            # The task copies the caller's context, as it would on the caller's own loop.
            task = self.context.run(loop.create_task, coro)
            self.loop = loop
            self.task = task
            if self.cancelled:
                task.cancel()
            _serving[loop] = self
            self.result = loop.run_until_complete(task)
        except BaseException as e:  # the caller re-raises it, whatever it is
            self.exc = e
        finally:
            _local.hosting = None
            if self.loop is not None:
                _serving.pop(self.loop, None)
            if inspect.iscoroutine(awaitable) and inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED:
                awaitable.close()  # never started (the loop could not be made): no "never awaited" warning

    def finish(self) -> None:
        self._ended = True
        self._done.release()

    def wait(self, timeout: float) -> bool:
        """Blocks up to ``timeout`` seconds for the job to end; interruptible by Ctrl-C.

        Whether it ended is the host's flag, not what ``acquire`` returned: a Ctrl-C that lands just
        after ``acquire`` took the release loses that result, and the wait after it (the caller's
        clean-up) would then sit out its whole timeout for a job long done (10 s, a CI timeout).
        """
        if not self._ended:
            self._done.acquire(timeout=timeout)
        return self._ended

    def cancel(self) -> None:
        """From any thread: cancel the coroutine (before it starts, or while it runs), and its nested runs."""
        self.cancelled = True
        task, loop = self.task, self.loop
        if task is not None and loop is not None:
            _cancel_threadsafe(loop, task)
        child = self.child
        if child is not None:
            child.cancel()

    def outcome(self) -> Any:
        exc = self.exc
        if exc is not None:
            self.exc = None
            try:
                raise exc
            finally:
                exc = None
        return self.result


class _Host:
    """An idle host thread's handle: a job put in ``inbox`` wakes it."""

    __slots__ = ("inbox", "thread")

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[_Hosted | None] = queue.SimpleQueue()
        self.thread = threading.current_thread()


def _host_main(job: _Hosted | None) -> None:
    """A host thread: runs jobs one at a time on its own loop until idle too long, or exit."""
    host = _Host()
    try:
        while job is not None:
            job.run()
            with _hosts_lock:
                stay = not _hosts_exiting
                if stay:
                    # Back in the cache before the caller wakes, so its next nested run finds us.
                    _idle_hosts.append(host)
            if not stay:
                try:
                    close_thread_loop()  # before the caller wakes: then it has only to join us
                finally:
                    job.retired_host = host.thread
                    job.finish()
                return
            job.finish()
            job = _next_job(host)
    finally:
        close_thread_loop()


def _next_job(host: _Host) -> _Hosted | None:
    try:
        return host.inbox.get(timeout=_HOST_IDLE_TIMEOUT)
    except queue.Empty:
        pass
    with _hosts_lock:
        # Jobs are put while the lock is held, so an empty inbox here means nobody took this host.
        if not host.inbox.empty():
            return host.inbox.get_nowait()
        with contextlib.suppress(ValueError):  # absent if a caller popped it and died before the put
            _idle_hosts.remove(host)
        return None


def _start_hosting(job: _Hosted) -> None:
    """Hands ``job`` to an idle host thread, or starts a new one."""
    with _hosts_lock:
        if _idle_hosts:
            _idle_hosts.pop().inbox.put(job)
            return
    name = f"ferrio-run-host-{next(_host_numbers)}"
    # A daemon: a host only lives as long as the caller it serves needs it, and exit joins idle ones.
    thread = threading.Thread(target=_host_main, args=(job,), name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError as e:  # "can't start new thread": out of threads or memory, or at shutdown
        raise RuntimeError(
            f"ferrio.run() could not start a thread to host the coroutine, as it must inside a running event "
            f"loop ({e}); await the coroutine directly instead"
        ) from e


def _run_elsewhere(running: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
    job = _Hosted(awaitable, contextvars.copy_context(), running)
    # If this thread is itself a host, the job it serves is frozen until this call returns: link
    # them so that cancelling that job reaches this one. Link first, then check, so no cancel is lost.
    parent: _Hosted | None = getattr(_local, "hosting", None)
    if parent is not None:
        parent.child = job
        if parent.cancelled:
            job.cancel()
    interrupted: BaseException | None = None
    try:
        _start_hosting(job)
    except BaseException as e:
        if job.withdraw():  # no host took it: nothing runs, nothing to cancel
            if parent is not None:
                parent.child = None
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise
        # A host took the job before the exception landed (Ctrl-C while thread.start() waited for
        # the new thread): the coroutine runs, so this is an interrupted wait like any other.
        interrupted = e
    caller = asyncio.current_task(running)
    _blocked_loops[running] = _blocked_loops.get(running, 0) + 1
    try:
        if interrupted is not None:
            raise interrupted
        while not job.wait(_CANCEL_POLL):
            if caller is not None and _cancel_requested(caller):
                job.cancel()
                job.wait(_CANCEL_GRACE)
                raise asyncio.CancelledError from None
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt) or e is interrupted:
            job.cancel()
            with contextlib.suppress(BaseException):  # a second Ctrl-C cuts the clean-up short
                job.wait(_CANCEL_GRACE)
        raise
    finally:
        depth = _blocked_loops[running] - 1
        if depth:
            _blocked_loops[running] = depth
        else:
            del _blocked_loops[running]
        if parent is not None:
            parent.child = None
        if job.retired_host is not None:
            job.retired_host.join(_EXIT_JOIN_TIMEOUT)  # it has only to return: it closed its loop already
    return job.outcome()  # type: ignore[no-any-return]


def waits_for_this_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is frozen in ``ferrio.run()`` until this thread's current work ends.

    True when this thread runs a host loop serving ``loop`` (or a job awaited by one), directly or
    through nested runs: blocking this thread on ``loop`` can then only deadlock.
    """
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        fut = _ferrio.current_job_future()
        here = fut.get_loop() if isinstance(fut, asyncio.Future) else None
    for _ in range(len(_serving) + 1):  # a chain is no longer than the number of hosts serving
        job = _serving.get(here) if here is not None else None
        if job is None:
            return False
        if job.caller_loop is loop:
            return True
        here = job.caller_loop
    return False


def _retire_hosts_at_exit() -> None:
    """Before the interpreter finalizes: end the idle host threads; busy ones end after their job."""
    global _hosts_exiting
    with _hosts_lock:
        _hosts_exiting = True
        idle = list(_idle_hosts)
        _idle_hosts.clear()
        for host in idle:
            host.inbox.put(None)
    deadline = time.monotonic() + _EXIT_JOIN_TIMEOUT
    for host in idle:
        host.thread.join(max(0.0, deadline - time.monotonic()))


def _forget_hosts_in_child() -> None:
    # The parent's host threads do not exist in a forked child, and one of them may have held the lock.
    global _hosts_lock, _idle_hosts
    _hosts_lock = threading.Lock()
    _idle_hosts = []


def _cancel_requested(task: asyncio.Task[Any]) -> bool:
    cancelling: Callable[[], int] | None = getattr(task, "cancelling", None)  # 3.11+
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
    """Identifies an event loop for :mod:`ferrio.from_thread` calls from threads ferrio did not start.

    Raises:
        TypeError: ``loop`` is not an :class:`asyncio.AbstractEventLoop`.
    """

    loop: asyncio.AbstractEventLoop

    def __post_init__(self) -> None:
        if not isinstance(self.loop, asyncio.AbstractEventLoop):
            raise TypeError(
                f"ferrio.EventLoopToken() expected an asyncio event loop, got {safe_repr(self.loop)} of type "
                f"'{type(self.loop).__name__}'; take a token with ferrio.current_token() on the loop's thread"
            )


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


def _blocked_loop_error(api: str) -> RuntimeError:
    return RuntimeError(
        f"{api} would deadlock: the target event loop is blocked in ferrio.run() waiting for this very call "
        "to finish; pass the values the coroutine needs as arguments instead of calling back into that loop"
    )


class LoopCall:
    """One call made into an event loop from another thread, and the blocked thread's wait for it.

    The loop runs :meth:`start` (through ``call_soon_threadsafe``); the caller blocks on a plain
    lock, released by the loop when the call (or the task it started) ends. No
    ``concurrent.futures.Future``, no extra task.

    ``_claim`` is taken exactly once: by :meth:`start`, or by a caller giving the call up before it
    started (:meth:`cancel`, or :meth:`wait` seeing the loop frozen). Whoever takes it decides: the
    call runs once, or never.
    """

    __slots__ = (
        "_cancelled",
        "_claim",
        "_done",
        "_exc",
        "_result",
        "args",
        "fn",
        "give_up_if_frozen",
        "is_async",
        "loop",
        "on_done",
        "task",
        "track",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        is_async: bool | None,
        on_done: Callable[[LoopCall], None] | None = None,
        track: set[asyncio.Task[Any]] | None = None,
        give_up_if_frozen: bool = False,
    ) -> None:
        self.loop, self.fn, self.args, self.is_async, self.on_done = loop, fn, args, is_async, on_done
        #: Where to register the task that drives an async call while it runs (the portal's set).
        self.track = track
        #: Whether a loop that freezes in ferrio.run() before starting the call makes :meth:`wait`
        #: give it up (from_thread, which refuses frozen loops at the call too).
        self.give_up_if_frozen = give_up_if_frozen
        self.task: asyncio.Future[Any] | None = None
        self._result: Any = None
        self._exc: BaseException | None = None
        self._cancelled = False
        self._claim = _thread.allocate_lock()
        self._done = _thread.allocate_lock()
        self._done.acquire()

    def start(self) -> None:
        """On the loop's thread: make the call, or start the task it returns."""
        if not self._claim.acquire(False):
            return  # given up before it started: it must not run at all
        try:
            r = self.fn(*self.args)
            if self.is_async is not False and inspect.isawaitable(r):
                self.task = task = self.loop.create_task(self._drive(r))
                if self.track is not None:
                    self.track.add(task)
                    task.add_done_callback(self.track.discard)
                if self._cancelled:  # cancelled while fn ran, before the task was there to cancel
                    task.cancel()
                return
            if self.is_async:
                raise TypeError(
                    f"ferrio.from_thread.run() expected an async function, but {safe_repr(self.fn)} returned "
                    f"{safe_repr(r)}; use ferrio.from_thread.run_sync() for sync functions"
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

    def wait(self, api: str, timeout: float | None = None) -> Any:
        """Blocks until the call ends and returns its result (or raises its exception).

        Raises:
            RuntimeError: the loop closed before the call finished, or (with ``give_up_if_frozen``)
                froze in ``ferrio.run()`` before starting it: the call is then given up, it never runs.
            TimeoutError: ``timeout`` seconds passed (the call goes on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # Polling every 0.25 s only to notice a loop that closed, or froze, without running the
        # call; the normal wake-up is the release of the lock.
        while True:
            step = 0.25 if deadline is None else min(0.25, max(0.0, deadline - time.monotonic()))
            if self._done.acquire(timeout=step):
                break
            if self.loop.is_closed():
                raise RuntimeError(f"{api} failed: the event loop closed before the call finished")
            # The loop froze in ferrio.run() after this call was sent: if that run waits for this
            # thread, waiting here deadlocks; give the call up, as if it had been refused at once.
            if self.give_up_if_frozen and self.loop in _blocked_loops and self._claim.acquire(False):
                raise _blocked_loop_error(api)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{api} timed out after {timeout} seconds")
        exc = self._exc
        if exc is not None:
            self._exc = None
            try:
                raise exc
            finally:
                exc = None
        return self._result

    def result(self, api: str) -> Any:
        """:meth:`wait`, and on Ctrl-C :meth:`cancel` the call before raising."""
        try:
            return self.wait(api)
        except KeyboardInterrupt:
            self.cancel()
            raise

    def cancel(self) -> bool:
        """From any thread: give the call up if it has not started (then it never runs, and this
        returns True), else cancel the task it started, if any."""
        self._cancelled = True
        if self._claim.acquire(False):
            return True
        task = self.task
        if task is not None:
            _cancel_threadsafe(self.loop, task)
        return False


def _target_loop(api: str, token: EventLoopToken | None) -> asyncio.AbstractEventLoop:
    if token is not None:
        if not isinstance(token, EventLoopToken):
            raise TypeError(
                f"{api} expected token= to be a ferrio.EventLoopToken from ferrio.current_token(), "
                f"got {safe_repr(token)}"
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
        raise _blocked_loop_error(api)
    return loop


def call_in_loop(
    api: str,
    loop: asyncio.AbstractEventLoop,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    is_async: bool | None,
    track: set[asyncio.Task[Any]] | None = None,
    give_up_if_frozen: bool = False,
) -> Any:
    """Makes one call into ``loop`` from another thread and blocks until it ends (see LoopCall)."""
    call = LoopCall(loop, fn, args, is_async, track=track, give_up_if_frozen=give_up_if_frozen)
    call.submit(api)
    return call.result(api)


def from_thread_run(
    afn: Callable[[Unpack[PosArgsT]], Awaitable[T]], /, *args: Unpack[PosArgsT], token: EventLoopToken | None = None
) -> T:
    """Run ``afn(*args)`` on the event loop and return its result, blocking this thread.

    Raises:
        NoEventLoopError: no ``token=``, and this thread is not running a job that an event loop awaits.
        RuntimeError: called on the loop's own thread (it would deadlock); the loop is blocked in
            ``ferrio.run()`` (or blocks in it before the call starts: the call is then given up, it
            never runs); or the loop closed before the call finished.
        TypeError: ``afn`` is not callable, or did not return an awaitable.
    """
    api = "ferrio.from_thread.run()"
    if not callable(afn):
        raise not_callable(api, afn, "an async function")
    return cast(T, call_in_loop(api, _target_loop(api, token), afn, args, True, give_up_if_frozen=True))


def from_thread_run_sync(
    fn: Callable[[Unpack[PosArgsT]], T], /, *args: Unpack[PosArgsT], token: EventLoopToken | None = None
) -> T:
    """Call ``fn(*args)`` on the event loop's thread and return its result, blocking this thread.

    Raises:
        NoEventLoopError: no ``token=``, and this thread is not running a job that an event loop awaits.
        RuntimeError: called on the loop's own thread (it would deadlock); the loop is blocked in
            ``ferrio.run()`` (or blocks in it before the call starts: the call is then given up, it
            never runs); or the loop closed before the call finished.
        TypeError: ``fn`` is not callable, or is a coroutine function.
    """
    api = "ferrio.from_thread.run_sync()"
    if not callable(fn):
        raise not_callable(api, fn, "a callable")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"{api} expected a sync function, but '{describe(fn)}' is a coroutine function; "
            "use ferrio.from_thread.run()"
        )
    return cast(T, call_in_loop(api, _target_loop(api, token), fn, args, False, give_up_if_frozen=True))


# -- decorators --------------------------------------------------------------------------------------


def syncify(afn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """Turn an async function into a plain function that runs it with :func:`ferrio.run`.

    ::

        @ferrio.syncify
        async def ping(host: str) -> float: ...

        latency = ping("example.org")      # from sync code, no event loop needed

    Raises:
        TypeError: ``afn`` is not a coroutine function.
    """
    if not inspect.iscoroutinefunction(afn):
        raise TypeError(f"ferrio.syncify expected an async function, got {safe_repr(afn)}")

    @functools.wraps(afn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run(afn(*args, **kwargs))

    return wrapper


# atexit, not threading's exit hook: threads that are not daemons may still call ferrio.run()
# until they end; this runs after they have, before the interpreter finalizes.
atexit.register(_retire_hosts_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_hosts_in_child)
