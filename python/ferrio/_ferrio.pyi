"""The compiled core of ferrio (crates/ferrio-py). Private: use the ``ferrio`` package's API."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable
from typing import Any

__version__: str

class LoopWaker:
    """One per event loop: workers push finished jobs into it, the loop drains them in batches.

    Registered with ``loop.add_reader(waker.fileno(), waker.drain)``; a burst of completions costs
    one eventfd wake-up and one call to :meth:`drain`, which resolves the whole batch under one
    GIL hold and skips futures already cancelled.
    """

    def __init__(self) -> None:
        """Creates the waker and its eventfd (close-on-exec, non-blocking).

        Raises:
            OSError: the eventfd (or pipe) could not be created.
        """
    @staticmethod
    def threadsafe(call_soon_threadsafe: Callable[[Callable[[], None]], object]) -> LoopWaker:
        """A waker for loops without ``add_reader``: schedules its drain with ``call_soon_threadsafe``."""
    def fileno(self) -> int | None:
        """The descriptor to watch for readability; ``None`` for a ``threadsafe`` waker."""
    def drain(self) -> None:
        """Resolves every queued completion. Call on the loop's thread only."""

class LimiterCore:
    """The Rust capacity limiter behind :class:`ferrio.CapacityLimiter`."""

    def __init__(self, total_tokens: float) -> None:
        """Raises:
        ValueError: ``total_tokens`` is less than 1.
        TypeError: ``total_tokens`` is neither an int nor ``math.inf``.
        """
    def set_total_tokens(self, total_tokens: float) -> None:
        """Changes the number of tokens; growing admits waiting jobs at once."""
    def stats(self) -> tuple[int, int, int]:
        """``(total_tokens, borrowed_tokens, waiting)``."""

_Percentiles = tuple[int, float, float, float, float]

class ThreadPoolCore:
    """The Rust pool behind :class:`ferrio.ThreadPool`.

    Every ``submit_*`` method holds the GIL only to validate and queue the job. ``api`` names the
    public call in error messages.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str, idle_timeout: float) -> None:
        """Raises:
        ValueError: ``max_workers`` is 0 or ``idle_timeout`` is negative or not finite.
        """
    @property
    def max_workers(self) -> int: ...
    def submit_async(
        self,
        api: str,
        waker: LoopWaker,
        fut: asyncio.Future[Any],
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        context: contextvars.Context | None,
        limiter: LimiterCore | None,
    ) -> None:
        """Queues ``func(*args, **kwargs)``; its outcome resolves ``fut`` on its loop through ``waker``.

        Raises:
            TypeError: ``func`` is not callable, or is a coroutine function.
            RuntimeError: the pool was shut down.
        """
    def submit_sync(
        self,
        api: str,
        fut: concurrent.futures.Future[Any],
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        context: contextvars.Context | None,
        limiter: LimiterCore | None,
    ) -> None:
        """Queues ``func(*args, **kwargs)``; its outcome resolves the ``concurrent.futures.Future``.

        Raises:
            TypeError: ``func`` is not callable, or is a coroutine function.
            RuntimeError: the pool was shut down.
        """
    def submit_map(
        self,
        api: str,
        waker: LoopWaker,
        fut: asyncio.Future[tuple[list[Any], BaseException | None]],
        func: Callable[[Any], Any],
        items: tuple[Any, ...],
        context: contextvars.Context | None,
        limiter: LimiterCore | None,
    ) -> None:
        """Queues ``[func(x) for x in items]`` as one job, stopping at the first exception.

        ``fut`` gets ``(results, exception_or_None)``. The caller validates ``func``.

        Raises:
            RuntimeError: the pool was shut down.
        """
    def shutdown(self, cancel_futures: bool) -> int:
        """Stops accepting work and wakes idle workers; returns how many queued jobs were cancelled."""
    def join(self) -> None:
        """Waits, with the GIL released, until every worker thread has exited."""
    def stats(self) -> tuple[int, int, int, int, int, int, int, int, _Percentiles, _Percentiles]:
        """``(max_workers, alive, idle, queued, running, completed, failed, cancelled, queue_wait, run_time)``."""
    def forget_after_fork(self) -> None:
        """In a forked child: abandon this pool without touching its locks or threads."""

def check_sync_callable(api: str, func: object) -> None:
    """Raises:
    TypeError: ``func`` is not callable, or is a coroutine function.
    """

def check_cancelled() -> None:
    """Raises:
    asyncio.CancelledError: the task awaiting the current job was cancelled.
    RuntimeError: not called from a job running on a ferrio worker.
    """

def is_cancelled() -> bool:
    """Whether the task awaiting the current job was cancelled.

    Raises:
        RuntimeError: not called from a job running on a ferrio worker.
    """

def in_worker() -> bool:
    """Whether the calling thread is running a ferrio job right now."""

def join_orphans() -> None:
    """Joins, with the GIL released, the threads of pools garbage-collected before they exited."""
