"""The blocking portal: an event loop in a thread of its own, for sync applications.

Design notes:

- The loop lives and dies on the portal's thread: ``_serve`` runs it, and when it stops, cancels
  what is left, finalizes async generators and closes it there. Whoever calls :meth:`stop` only
  asks and joins, so stopping works from any thread, a thread whose own loop is running included.
- ``_lock`` orders calls against :meth:`stop`: a call is sent to the loop while the lock is held
  and the portal is open, so every call sent is ahead of the stop's drain in the loop's queue.
- Interpreter exit stops every portal still open (cancelling its tasks) once the threads that are
  not daemons have ended, while the portal's thread can still run: a portal left open must not
  hang exit. Once the interpreter finalizes no daemon thread runs again, so a ``stop()`` from a
  finalizer (a ``with`` block's generator collected at exit) then returns instead of waiting.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeVar, cast, overload

if sys.version_info >= (3, 11):
    from typing import TypeVarTuple, Unpack
else:
    from typing_extensions import TypeVarTuple, Unpack

from ._errors import not_callable, safe_repr
from ._loops import LoopCall, waits_for_this_thread

T = TypeVar("T")
PosArgsT = TypeVarTuple("PosArgsT")

#: Seconds interpreter exit gives each portal left open to cancel its tasks and stop.
_EXIT_TIMEOUT = 5.0

_OPEN, _STOPPING, _STOPPED = "open", "stopping", "stopped"

# Portals whose thread runs; interpreter exit stops them.
_running: set[BlockingPortal] = set()
_running_lock = threading.Lock()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancels the tasks left on a stopped loop and lets them finish, as ``asyncio.run`` does."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _check_callable(api: str, fn: object) -> None:
    if not callable(fn):
        raise not_callable(api, fn, "a callable (a sync or async function)")


class BlockingPortal:
    """Runs calls on an event loop in its own thread and hands results back to sync code.

    Made by :func:`ferrio.start_blocking_portal`. ``fn`` may be a sync function (called on the
    loop's thread) or an async one (run as a task there).

    Raises:
        TypeError: ``loop_factory`` is not callable, or did not return an event loop.
        ValueError: the loop ``loop_factory`` returned is closed or already running.
        RuntimeError: no thread could be started for the loop.
    """

    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> None:
        api = "ferrio.start_blocking_portal()"
        if loop_factory is not None and not callable(loop_factory):
            raise not_callable(api, loop_factory, "loop_factory to be a callable that makes an event loop")
        loop = (loop_factory or asyncio.new_event_loop)()
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(
                f"{api} expected loop_factory to return an asyncio event loop, but {safe_repr(loop_factory)} "
                f"returned {safe_repr(loop)}"
            )
        if loop.is_closed() or loop.is_running():
            raise ValueError(
                f"{api} needs a new event loop, but loop_factory returned one that is "
                f"{'closed' if loop.is_closed() else 'already running'}: {safe_repr(loop)}"
            )
        self._loop = loop
        self._lock = threading.Lock()
        self._state = _OPEN
        self._tasks: set[asyncio.Task[Any]] = set()
        # Futures of submitted calls not yet ended: those the loop never started fail as it closes.
        self._futures: set[concurrent.futures.Future[Any]] = set()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="ferrio-portal", daemon=True)
        with _running_lock:
            _running.add(self)
        try:
            self._thread.start()
        except RuntimeError as e:
            with _running_lock:
                _running.discard(self)
            loop.close()
            raise RuntimeError(f"{api} could not start the portal's thread: {e}") from e
        ready.wait()  # set by _serve however it goes

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        ended: BaseException | None = None
        try:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
        except BaseException as e:  # SystemExit or KeyboardInterrupt from a task: it ends the loop
            ended = e
        finally:
            ready.set()
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                with self._lock:
                    self._state = _STOPPED
                why = "BlockingPortal.submit(): the portal stopped before the loop could start the call"
                if ended is not None:
                    why += f" (a task raised {ended!r}, which ended the loop)"
                for fut in list(self._futures):
                    if fut.set_running_or_notify_cancel():
                        error = RuntimeError(why)
                        error.__cause__ = ended
                        fut.set_exception(error)
                self._futures.clear()
                with _running_lock:
                    _running.discard(self)

    def _check_can_wait(self, api: str) -> None:
        if waits_for_this_thread(self._loop):
            raise RuntimeError(
                f"{api} would deadlock: the portal's event loop is blocked in ferrio.run() waiting for this very "
                "call to finish; pass the values the coroutine needs as arguments instead of calling the portal"
            )

    def _send(self, api: str, call: LoopCall) -> None:
        with self._lock:
            if self._state is not _OPEN:
                raise RuntimeError(f"{api} was called on a blocking portal that has stopped; start a new one")
            call.submit(api)

    @overload
    def call(self, fn: Callable[[Unpack[PosArgsT]], Awaitable[T]], /, *args: Unpack[PosArgsT]) -> T: ...
    @overload
    def call(self, fn: Callable[[Unpack[PosArgsT]], T], /, *args: Unpack[PosArgsT]) -> T: ...
    def call(self, fn: Callable[[Unpack[PosArgsT]], Awaitable[T] | T], /, *args: Unpack[PosArgsT]) -> T:
        """Call ``fn(*args)`` on the portal's loop and return its result, blocking this thread.

        Ctrl-C while waiting gives up a call that has not started (it never runs) and cancels the
        task of one that has.

        Raises:
            RuntimeError: the portal has stopped; this is the portal's own thread; or the portal's
                loop is blocked in ``ferrio.run()`` waiting for this thread (each would deadlock).
            TypeError: ``fn`` is not callable.
        """
        api = "BlockingPortal.call()"
        if threading.current_thread() is self._thread:
            raise RuntimeError(f"{api} was called on the portal's own thread, where it would deadlock; await instead")
        self._check_can_wait(api)
        _check_callable(api, fn)
        call = LoopCall(self._loop, fn, args, None, track=self._tasks)
        self._send(api, call)
        return cast(T, call.result(api))

    @overload
    def submit(
        self, fn: Callable[[Unpack[PosArgsT]], Awaitable[T]], /, *args: Unpack[PosArgsT]
    ) -> concurrent.futures.Future[T]: ...
    @overload
    def submit(
        self, fn: Callable[[Unpack[PosArgsT]], T], /, *args: Unpack[PosArgsT]
    ) -> concurrent.futures.Future[T]: ...
    def submit(
        self, fn: Callable[[Unpack[PosArgsT]], Awaitable[T] | T], /, *args: Unpack[PosArgsT]
    ) -> concurrent.futures.Future[T]:
        """Start ``fn(*args)`` on the portal's loop; return a :class:`concurrent.futures.Future`.

        Cancelling the future before the call starts means it never runs; after, it cancels the
        task running an async ``fn``. The future stays pending (not "running") until the call ends,
        so :meth:`~concurrent.futures.Future.cancel` works until then; a task cancelled any other
        way (by :meth:`stop`, or by itself) leaves the future cancelled too. A call the loop never
        started because the portal stopped fails with :exc:`RuntimeError`.

        Raises:
            RuntimeError: the portal has stopped.
            TypeError: ``fn`` is not callable.
        """
        api = "BlockingPortal.submit()"
        _check_callable(api, fn)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        futures = self._futures

        def resolve(call: LoopCall) -> None:
            # On the loop's thread, as the call ends. The future stayed pending until now so that
            # cancelling it could still cancel the task (see on_cancel).
            futures.discard(fut)
            result, exc = call.outcome()
            if isinstance(exc, asyncio.CancelledError):
                fut.cancel()  # the task was cancelled (by the future, at stop, or by itself): so is the future
            if not fut.set_running_or_notify_cancel():
                return
            if exc is None:
                fut.set_result(result)
            else:
                fut.set_exception(exc)

        call = LoopCall(self._loop, fn, args, None, on_done=resolve, track=self._tasks)

        def on_cancel(f: concurrent.futures.Future[T]) -> None:
            if f.cancelled():
                futures.discard(f)
                if call.cancel():
                    # It will never start, so resolve() will never run: tell concurrent.futures.wait()
                    # and as_completed() that it is done, as an executor does for a cancelled work item.
                    f.set_running_or_notify_cancel()

        futures.add(fut)
        try:
            self._send(api, call)
        except BaseException:
            futures.discard(fut)
            raise
        fut.add_done_callback(on_cancel)
        return fut

    def wrap_async_context_manager(self, cm: AbstractAsyncContextManager[T]) -> AbstractContextManager[T]:
        """A sync context manager that enters and exits ``cm`` on the portal's loop."""

        @contextlib.contextmanager
        def wrapped() -> Generator[T, None, None]:
            value = self.call(cm.__aenter__)
            try:
                yield value
            except BaseException as e:
                if not self.call(cm.__aexit__, type(e), e, e.__traceback__):
                    raise
            else:
                self.call(cm.__aexit__, None, None, None)

        return wrapped()

    def stop(self, cancel_remaining: bool = False) -> None:
        """Stop the loop and its thread: after the tasks still running finish, or, with
        ``cancel_remaining``, after they are cancelled. Idempotent.

        Works from any thread but the portal's own, including one whose own loop is running
        (that loop waits meanwhile). Tasks the portal's calls spawned and left running are
        cancelled as the loop closes, as ``asyncio.run`` does. Ctrl-C while waiting stops the loop
        at once, cancelling what is left.

        Raises:
            RuntimeError: called on the portal's own thread, or where the portal's loop is blocked in
                ``ferrio.run()`` waiting for this thread (each would deadlock).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("BlockingPortal.stop() was called on the portal's own thread, where it would deadlock")
        self._check_can_wait("BlockingPortal.stop()")
        if self._begin_stop():
            self._shut_down(cancel_remaining, None)

    def _begin_stop(self) -> bool:
        """Closes the portal to new calls; True for the one caller that then shuts it down."""
        with self._lock:
            if self._state is not _OPEN:
                return False
            self._state = _STOPPING
        # Once the interpreter finalizes, the portal's thread can never run again: nobody to wait for.
        return not sys.is_finalizing()

    def _shut_down(self, cancel_remaining: bool, timeout: float | None) -> None:
        """Drains the portal's tasks (within ``timeout``), then stops the loop and joins its thread."""
        api = "BlockingPortal.stop()"
        deadline = None if timeout is None else time.monotonic() + timeout
        tasks = self._tasks

        async def drain() -> None:
            running = [t for t in tasks if not t.done()]
            if cancel_remaining:
                for t in running:
                    t.cancel()
            await asyncio.gather(*running, return_exceptions=True)

        call = LoopCall(self._loop, drain, (), True)
        try:
            call.submit(api)
            call.wait(api, timeout)
        except TimeoutError:
            pass  # at exit only: stop anyway; what is left is cancelled as the loop closes
        except RuntimeError:
            if not self._loop.is_closed():
                raise
            # The loop ended by itself (a task raised SystemExit): it is already stopped.
        except KeyboardInterrupt:
            call.cancel()
            raise
        finally:
            with contextlib.suppress(RuntimeError):  # closed already: its thread is ending
                self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


def _stop_all_at_exit() -> None:
    """Stops the portals left open, cancelling their tasks, while their threads can still run."""
    with _running_lock:
        portals = list(_running)
    for portal in portals:
        if portal._begin_stop():
            with contextlib.suppress(Exception):  # exit goes on whatever a portal does
                portal._shut_down(True, _EXIT_TIMEOUT)


@contextlib.contextmanager
def start_blocking_portal(
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> Generator[BlockingPortal, None, None]:
    """Start an event loop in a new thread and yield a portal to it, for sync applications.

    ::

        with ferrio.start_blocking_portal() as portal:
            status = portal.call(client.get, "/status")         # async or sync callables
            fut = portal.submit(client.get, "/slow")             # concurrent.futures.Future

    On exit the loop and its thread stop: tasks still running are awaited, or cancelled if the
    block raised (anyio's rule). ``loop_factory`` chooses the loop (e.g. ``uvloop.new_event_loop``).
    It works from any thread, one whose own loop is running included. A portal never stopped is
    stopped at interpreter exit, its tasks cancelled.

    Raises:
        TypeError: ``loop_factory`` is not callable, or did not return an event loop.
        ValueError: the loop ``loop_factory`` returned is closed or already running.
    """
    portal = BlockingPortal(loop_factory)
    try:
        yield portal
    except BaseException:
        portal.stop(cancel_remaining=True)
        raise
    else:
        portal.stop()


def _forget_in_child() -> None:
    """In a forked child no portal thread exists: every portal the parent had open is stopped here
    (and its lock, which a parent thread may have held, replaced)."""
    global _running, _running_lock
    _running_lock = threading.Lock()
    for portal in _running:
        portal._lock = threading.Lock()
        portal._state = _STOPPED
    _running = set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
# atexit, not threading's exit hook: it runs once the threads that are not daemons (which may be
# using a portal) have ended, and before the interpreter finalizes, while daemons still run.
atexit.register(_stop_all_at_exit)
