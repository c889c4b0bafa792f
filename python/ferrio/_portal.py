"""The blocking portal: an event loop in a thread of its own, for sync applications."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, TypeVar

from ._loops import LoopCall, call_in_loop

T = TypeVar("T")


class BlockingPortal:
    """Runs calls on an event loop in its own thread and hands results back to sync code.

    Made by :func:`ferrio.start_blocking_portal`. ``fn`` may be a sync function (called on the
    loop's thread) or an async one (run as a task there).
    """

    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> None:
        self._loop = (loop_factory or asyncio.new_event_loop)()
        self._stopped = False
        self._tasks: set[asyncio.Task[Any]] = set()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="ferrio-portal", daemon=True)
        self._thread.start()
        ready.wait()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()

    def _check(self, api: str) -> None:
        if self._stopped:
            raise RuntimeError(f"{api} was called on a blocking portal that has stopped; start a new one")

    def call(self, fn: Callable[..., Awaitable[T] | T], /, *args: Any) -> T:
        """Call ``fn(*args)`` on the portal's loop and return its result, blocking this thread.

        Raises:
            RuntimeError: the portal has stopped, or this is the portal's own thread.
        """
        api = "BlockingPortal.call()"
        self._check(api)
        if threading.current_thread() is self._thread:
            raise RuntimeError(f"{api} was called on the portal's own thread, where it would deadlock; await instead")
        return call_in_loop(api, self._loop, fn, args, None, self._tasks)

    def submit(self, fn: Callable[..., Awaitable[T] | T], /, *args: Any) -> concurrent.futures.Future[T]:
        """Start ``fn(*args)`` on the portal's loop; return a :class:`concurrent.futures.Future`.

        Cancelling the future cancels the task running an async ``fn``.

        Raises:
            RuntimeError: the portal has stopped.
        """
        api = "BlockingPortal.submit()"
        self._check(api)
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def resolve(call: LoopCall) -> None:
            # On the loop's thread, as the call ends. The future stayed pending until now so that
            # cancelling it could still cancel the task (see on_cancel).
            if not fut.set_running_or_notify_cancel():
                return
            result, exc = call.outcome()
            if exc is None:
                fut.set_result(result)
            else:
                fut.set_exception(exc)

        call = LoopCall(self._loop, fn, args, None, on_done=resolve, track=self._tasks)

        def on_cancel(f: concurrent.futures.Future[T]) -> None:
            if f.cancelled():
                call.cancel()

        fut.add_done_callback(on_cancel)
        call.submit(api)
        return fut

    def wrap_async_context_manager(self, cm: AbstractAsyncContextManager[T]) -> AbstractContextManager[T]:
        """A sync context manager that enters and exits ``cm`` on the portal's loop."""

        @contextlib.contextmanager
        def wrapped() -> Iterator[T]:
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
        ``cancel_remaining``, after they are cancelled. Idempotent."""
        if self._stopped:
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("BlockingPortal.stop() was called on the portal's own thread, where it would deadlock")
        self._stopped = True

        async def drain() -> None:
            tasks = [t for t in self._tasks if not t.done()]
            if cancel_remaining:
                for t in tasks:
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        call_in_loop("BlockingPortal.stop()", self._loop, drain, (), True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()


@contextlib.contextmanager
def start_blocking_portal(
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> Iterator[BlockingPortal]:
    """Start an event loop in a new thread and yield a portal to it, for sync applications.

    ::

        with ferrio.start_blocking_portal() as portal:
            status = portal.call(client.get, "/status")         # async or sync callables
            fut = portal.submit(client.get, "/slow")             # concurrent.futures.Future

    On exit the loop and its thread stop: tasks still running are awaited, or cancelled if the
    block raised (anyio's rule). ``loop_factory`` chooses the loop (e.g. ``uvloop.new_event_loop``).
    """
    portal = BlockingPortal(loop_factory)
    try:
        yield portal
    except BaseException:
        portal.stop(cancel_remaining=True)
        raise
    else:
        portal.stop()
