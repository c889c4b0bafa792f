"""The compiled core of ferrio (crates/ferrio-py). Private: use the ``ferrio`` package's API."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
from collections.abc import Callable
from typing import Any, TypeVar, final, overload

from typing_extensions import Self, disjoint_base

_T = TypeVar("_T", str, bytes)

__all__ = [
    "INFINITE_TOKENS",
    "MAX_READ_THREADS",
    "AtomicInt",
    "EventCore",
    "LatencyCounts",
    "LatencyHistogram",
    "LimiterCore",
    "LimiterCounts",
    "LoopWaker",
    "LoopWatch",
    "PanicException",
    "PoolCounts",
    "QueueCore",
    "QueueCounts",
    "SemaphoreCore",
    "SemaphoreCounts",
    "SharedCell",
    "ThreadPoolCore",
    "__version__",
    "after_fork_in_child",
    "after_fork_in_parent",
    "before_fork",
    "check_cancelled",
    "check_sync_callable",
    "current_job_future",
    "deferred_flushes",
    "forget_orphans_after_fork",
    "install_hooks",
    "is_cancelled",
    "join_orphans",
    "open_cached",
    "read_cached",
    "read_files_blocking",
    "refuse_new_work",
    "set_parent_death_signal",
    "split_lines",
    "stop_attaching",
    "watchdog_thread_running",
    "watchdog_wait_stopped",
    "watchdog_wakeups",
]

__version__: str
#: The total a ``LimiterCore`` stores for ``math.inf`` tokens.
INFINITE_TOKENS: int
#: The most threads :func:`read_files_blocking` starts.
MAX_READ_THREADS: int

@final
class LoopWaker:
    """One per event loop: workers push finished jobs into it, the loop drains them in batches.

    Registered with ``loop.add_reader(waker.fileno(), waker.drain)``; a burst of completions costs
    one eventfd wake-up and one call to :meth:`drain`, which resolves the whole batch under one
    GIL hold and skips futures already cancelled.
    """

    def __new__(cls) -> Self:
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
    def post(self, fut: asyncio.Future[Any], value: Any, failed: bool) -> None:
        """Queues ``fut.set_result(value)``, or ``fut.set_exception(value)`` when ``failed``, for
        the loop's next drain; callable from any thread. A future done by then is skipped."""

@final
class LimiterCore:
    """The Rust capacity limiter behind :class:`ferrio.CapacityLimiter`."""

    def __new__(cls, total_tokens: float) -> Self:
        """Raises:
        ValueError: ``total_tokens`` is less than 1.
        TypeError: ``total_tokens`` is neither an int nor ``math.inf``.
        """
    def set_total_tokens(self, total_tokens: float) -> None:
        """Changes the number of tokens; growing admits waiting jobs at once."""
    def counts(self) -> LimiterCounts:
        """Total and borrowed tokens, and how many jobs wait."""

@final
class LatencyCounts:
    """Latency percentiles in seconds (within 12.5%) over ``count`` samples."""

    @property
    def count(self) -> int: ...
    @property
    def p50(self) -> float: ...
    @property
    def p90(self) -> float: ...
    @property
    def p99(self) -> float: ...
    @property
    def max(self) -> float: ...

@final
class PoolCounts:
    """A thread pool's workers, jobs and latencies, from :meth:`ThreadPoolCore.counts`."""

    @property
    def max_workers(self) -> int: ...
    @property
    def workers_alive(self) -> int: ...
    @property
    def workers_idle(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def running(self) -> int: ...
    @property
    def completed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def cancelled(self) -> int: ...
    @property
    def queue_wait(self) -> LatencyCounts: ...
    @property
    def run_time(self) -> LatencyCounts: ...

@final
class LimiterCounts:
    """A limiter's tokens (``INFINITE_TOKENS`` for no limit) and waiting jobs."""

    @property
    def total_tokens(self) -> int: ...
    @property
    def borrowed_tokens(self) -> int: ...
    @property
    def tasks_waiting(self) -> int: ...

@final
class SemaphoreCounts:
    """A semaphore's free permits and waiting acquirers."""

    @property
    def free(self) -> int: ...
    @property
    def waiting(self) -> int: ...

@final
class QueueCounts:
    """A queue's items, unfinished tasks and waiters."""

    @property
    def items(self) -> int: ...
    @property
    def unfinished_tasks(self) -> int: ...
    @property
    def getters_waiting(self) -> int: ...
    @property
    def putters_waiting(self) -> int: ...

def install_hooks(
    *,
    worker_started: Callable[[str], object],
    worker_exiting: Callable[[], object],
    run_coroutine_function: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any] | None], Any],
) -> None:
    """Registers the Python functions the Rust side calls back into (``ferrio._threads`` does, at
    import): ``worker_started(name)`` and ``worker_exiting()`` on each worker thread as it starts
    and exits, and ``run_coroutine_function(func, args, kwargs)`` to run a coroutine function on
    a worker's own loop. A later call replaces them.

    Raises:
        TypeError: a hook is not callable.
    """

@final
class ThreadPoolCore:
    """The Rust pool behind :class:`ferrio.ThreadPool`.

    ``submit`` and ``submit_map`` hold the GIL only to validate and queue the job. ``api`` names the
    public call in error messages.
    """

    def __new__(
        cls,
        max_workers: int,
        thread_name_prefix: str,
        idle_timeout: float,
        stack_size: int = 0,
        hold_signals: bool = False,
    ) -> Self:
        """``stack_size`` is each worker's stack in bytes, 0 for what a new thread gets by default.
        ``hold_signals``: workers hold each batch's completion signals to the batch's end, at most
        2 ms (crates/ferrio-py/src/deferred.rs).

        Raises:
            ValueError: ``max_workers`` is 0, ``idle_timeout`` is negative or NaN, or
                ``thread_name_prefix`` contains a NUL character.
            RuntimeError: the interpreter is exiting (:func:`refuse_new_work` was called).
        """
    @property
    def max_workers(self) -> int: ...
    @overload
    def submit(
        self,
        *,
        fut: asyncio.Future[Any],
        api: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        context: contextvars.Context | None = None,
        limiter: LimiterCore | None = None,
        waker: LoopWaker,
        run_coroutines: bool = False,
        coroutine: bool | None = None,
        always_run: bool = False,
    ) -> None: ...
    @overload
    def submit(
        self,
        *,
        fut: concurrent.futures.Future[Any],
        api: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        context: contextvars.Context | None = None,
        limiter: LimiterCore | None = None,
        waker: None = None,
        run_coroutines: bool = False,
        coroutine: bool | None = None,
        always_run: bool = False,
    ) -> None:
        """Queues ``func(*args, **kwargs)``, run in ``context`` if given. Its outcome resolves
        ``fut``: an asyncio future, on its loop through ``waker``, or, without a ``waker``, a
        ``concurrent.futures.Future``, from the worker.

        ``run_coroutines``: run a coroutine function on the worker's own loop (the hook given to
        :func:`install_hooks`) instead of refusing it. ``coroutine``: whether ``func`` is a
        coroutine function, if the caller worked it out (None: asked here; pass it for anything
        but plain functions, methods and builtins, see ``_threads._coroutine_flag``).
        ``always_run``: run even if ``fut`` was cancelled before the job started.

        Raises:
            TypeError: ``func`` is not callable, or is a coroutine function that may not run.
            RuntimeError: the pool was shut down.
        """
    def submit_and_wait(
        self,
        *,
        api: str,
        fut: asyncio.Future[Any],
        func: Callable[..., Any],
        args: tuple[Any, ...],
        waker: LoopWaker,
        micros: int,
        kwargs: dict[str, Any] | None = None,
        context: contextvars.Context | None = None,
        coroutine: bool | None = None,
    ) -> bool:
        """``submit`` for a task on the loop's thread that expects the answer sooner than the loop
        could sleep and wake: queues the job with the GIL released, then spins up to ``micros``
        microseconds for the loop's completion signal. True if it came (drain ``waker``).

        Raises:
            RuntimeError: the pool was shut down.
        """
    def submit_map(
        self,
        *,
        api: str,
        waker: LoopWaker,
        fut: asyncio.Future[tuple[list[Any], BaseException | None]],
        func: Callable[[Any], Any],
        items: tuple[Any, ...],
        context: contextvars.Context | None = None,
        limiter: LimiterCore | None = None,
    ) -> None:
        """Queues ``[func(x) for x in items]`` as one job, stopping at the first exception.

        ``fut`` gets ``(results, exception_or_None)``. The caller validates ``func``.

        Raises:
            RuntimeError: the pool was shut down.
        """
    def shutdown(self, cancel_futures: bool) -> int:
        """Stops accepting work and wakes idle workers; returns how many queued jobs were cancelled."""
    def join(self) -> None:
        """Waits, with the GIL released, until every worker thread has exited.

        Raises:
            KeyboardInterrupt: Ctrl-C during the wait (whatever a signal handler raises); checked
                every 50 ms.
        """
    def counts(self) -> PoolCounts:
        """The pool's workers, jobs and latencies."""
    def forget_after_fork(self) -> None:
        """In a forked child: abandon this pool without touching its locks or threads."""

def check_sync_callable(api: str, func: object, coroutine: bool | None = None) -> None:
    """``coroutine``: as for :meth:`ThreadPoolCore.submit`.

    Raises:
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

def join_orphans() -> None:
    """Joins, with the GIL released, the threads of pools garbage-collected before they exited."""

def forget_orphans_after_fork() -> None:
    """In a forked child: forgets the parent's orphaned threads, which do not exist there."""

class PanicException(BaseException):
    """PyO3's exception for a Rust panic; a panic inside a job reaches its future as one."""

def refuse_new_work() -> None:
    """From now on every pool refuses submissions and ``ThreadPoolCore()`` raises (interpreter exit)."""

def stop_attaching() -> None:
    """The last at-exit hook: from now on a ferrio thread (or a call that released the GIL) coming
    back to the interpreter parks for good instead of being unwound by finalization."""

def before_fork() -> None:
    """``os.register_at_fork(before=)``: holds back ferrio threads about to create their thread
    state until the fork is done, and waits (GIL released) for those already doing so."""

def after_fork_in_parent() -> None:
    """``os.register_at_fork(after_in_parent=)``: lets ferrio threads attach again."""

def after_fork_in_child() -> None:
    """``os.register_at_fork(after_in_child=)``: forgets the parent's attaching threads."""

def current_job_future() -> asyncio.Future[Any] | concurrent.futures.Future[Any] | None:
    """The future of the job running on this thread, or ``None`` outside a ferrio job."""

@disjoint_base
class SemaphoreCore:
    """The Rust semaphore behind ``ferrio.Lock``, ``Semaphore`` and ``BoundedSemaphore``.

    Blocking calls release the GIL and wake every 50 ms to run signal handlers.
    """

    def __new__(cls, value: int, bound: int | None = None, is_lock: bool = False) -> Self: ...
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """``threading``'s blocking acquire. For a lock ``-1`` (or ``None``) is no limit and other
        negatives are refused; for a semaphore a negative timeout only tries. Raises:
        ValueError: a timeout with ``blocking=False``, NaN, or a lock's negative timeout other than -1.
        TypeError: a timeout that is not a number. OverflowError: above ``threading.TIMEOUT_MAX``.
        """
    def acquire_nowait(self) -> bool:
        """Take a free permit if nobody is queued; never waits."""
    def _queue_acquire(self, waker: LoopWaker, fut: asyncio.Future[Any]) -> bool:
        """``True`` if taken at once; else ``fut`` is queued and resolves when a permit reaches it."""
    def _cancel_acquire(self, fut: asyncio.Future[Any]) -> None:
        """The awaiting task was cancelled, or its wait timed out (``fut`` resolved to something
        other than ``None``): unqueue ``fut``, or pass on a permit that reached it."""
    def release(self) -> None:
        """Raises:
        RuntimeError: a lock released while unlocked.
        ValueError: a bounded semaphore released past its initial value.
        """
    def __enter__(self) -> None:
        """Blocks as ``acquire()``; on a running event loop's thread, raises RuntimeError rather
        than wait for a permit that is not free at once."""
    def __exit__(self, *args: object) -> None: ...
    def _counts(self) -> SemaphoreCounts:
        """Free permits and waiters."""

@disjoint_base
class EventCore:
    """The Rust event behind ``ferrio.Event``."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool:
        """``threading.Event.wait``: blocks with the GIL released; returns the flag. A negative
        timeout only looks; NaN is a ValueError, a non-number a TypeError."""
    def _queue_wait(self, waker: LoopWaker, fut: asyncio.Future[Any]) -> bool:
        """``True`` if set; else ``fut`` is queued until ``set()``."""
    def _cancel_wait(self, fut: asyncio.Future[Any]) -> None: ...

@disjoint_base
class QueueCore:
    """The Rust queue behind ``ferrio.Queue``, ``LifoQueue`` and ``PriorityQueue``.

    ``order`` is ``"fifo"``, ``"lifo"`` or ``"priority"``; a waiting getter's future receives
    ``shutdown_marker`` when the queue shuts down; ``errors`` are the ``(Empty, Full, ShutDown)``
    classes to raise.
    """

    def __new__(cls, maxsize: int, order: str, shutdown_marker: object, errors: tuple[type, type, type]) -> Self: ...
    @property
    def maxsize(self) -> int: ...
    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        """``queue.Queue.put``: blocks (GIL released) while full. Raises Full, ShutDown,
        TypeError (an unorderable item in a priority queue; the queue is unchanged), ValueError
        (a negative or NaN timeout), RuntimeError (called from an item's ``__lt__`` on the
        thread ordering the queue)."""
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """``queue.Queue.get``: blocks (GIL released) while empty. Raises Empty, ShutDown."""
    def put_nowait(self, item: object) -> None: ...
    def get_nowait(self) -> Any: ...
    def try_put(self, item: object) -> bool:
        """Put if there is room now; ``False`` if full or shut down; never waits."""
    def try_get(self) -> tuple[bool, Any]:
        """``(True, item)`` if one is there now, else ``(False, None)``; never waits."""
    def put_async(self, waker: LoopWaker, fut: asyncio.Future[bool], item: object) -> object | None:
        """``None`` if the item went in; else ``fut`` waits for a slot and the item comes back."""
    def commit_put(self, item: object) -> None:
        """Insert an item into the slot reserved for it (after ``fut`` resolved ``True``); raises
        ShutDown or TypeError (and passes the slot on) if it cannot."""
    def get_async(self, waker: LoopWaker, fut: asyncio.Future[Any]) -> tuple[bool, Any]:
        """``(True, item)`` at once, or ``(False, None)`` with ``fut`` queued; a getter that then
        receives an item from ``fut`` calls ``got_item()``."""
    def got_item(self) -> None:
        """A task getter holds the item its future carried: its slot no longer counts."""
    def cancel_wait(self, fut: asyncio.Future[Any], kind: str) -> None:
        """The task awaiting ``fut`` (``kind`` is ``"get"``, ``"put"`` or ``"join"``) was cancelled:
        unqueue it, or give back the item or slot that already reached it."""
    def task_done(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...
    def join_async(self, waker: LoopWaker, fut: asyncio.Future[None]) -> bool: ...
    def shutdown(self, immediate: bool = False) -> list[Any]:
        """Returns the items an immediate shutdown dropped."""
    def is_shutdown(self) -> bool: ...
    def qsize(self) -> int: ...
    def full(self) -> bool: ...
    def counts(self) -> QueueCounts:
        """Items, unfinished tasks and waiters."""

@final
class AtomicInt:
    """A lock-free 64-bit integer shared by threads and tasks (wraps on overflow). Arguments
    must be ints within 64 bits: TypeError or OverflowError naming the call otherwise."""

    def __new__(cls, value: int = 0) -> Self: ...
    def get(self) -> int: ...
    def set(self, value: int) -> None: ...
    def add(self, delta: int = 1) -> int:
        """Adds ``delta`` and returns the new value."""
    def swap(self, value: int) -> int:
        """Stores ``value``; returns the old one."""
    def compare_exchange(self, expected: int, new: int) -> tuple[bool, int]:
        """Stores ``new`` if the value is ``expected``; returns ``(succeeded, value before)``."""
    def __int__(self) -> int: ...

@final
class SharedCell:
    """A 64-bit int or float in shared memory (the first 8 bytes of a file descriptor's file),
    changed only with atomic operations; the memory behind :class:`ferrio.SharedValue`."""

    def __new__(cls, fd: int, float: bool) -> Self:
        """Maps the file; ``fd`` may be closed afterwards.

        Raises:
            OSError: the file is smaller than 8 bytes or cannot be mapped.
        """
    def get(self) -> Any: ...
    def set(self, value: Any) -> None: ...
    def add(self, delta: Any) -> Any:
        """Adds ``delta`` (ints wrap at 64 bits) and returns the new value."""
    def swap(self, value: Any) -> Any:
        """Stores ``value``; returns the old one."""
    def compare_exchange(self, expected: Any, new: Any) -> tuple[bool, Any]:
        """Stores ``new`` if the value is ``expected`` (floats: bit for bit); returns
        ``(succeeded, value before)``."""

def set_parent_death_signal(signal: int) -> bool:
    """Has the kernel send ``signal`` to this process when its parent exits (Linux's
    ``PR_SET_PDEATHSIG``); returns ``False`` where the platform has no such thing.

    Raises:
        ValueError: ``signal`` is not positive.
        OSError: the kernel refused.
    """

@final
class LatencyHistogram:
    """A lock-free latency histogram (percentiles within 12.5%), as the thread pool keeps in Rust."""

    def __init__(self) -> None: ...
    def record(self, seconds: float) -> None:
        """Records one sample (negative counts as zero)."""
    def percentiles(self) -> LatencyCounts:
        """The percentiles in seconds."""

@final
class LoopWatch:
    """The heartbeat of one watched event loop (``ferrio.watchdog``), and its place in the list
    of the one watcher thread, ``ferrio-watchdog``. ``handler._sample(lag, gil_wait)`` is called
    on that thread, with the GIL, while a beat is late past the lag it last returned (the first
    time at half the threshold); ``handler._end()`` once a beat that came that late ran (the
    handler takes its lag with ``take_ended()``);
    ``handler._paused()`` once a second while the watch is paused.
    Raises ``ValueError``/``TypeError`` for a threshold that is not a number of seconds from
    0.01 to 86400."""

    def __new__(cls, *, threshold: float, handler: object, lag: LatencyHistogram) -> Self: ...
    @property
    def period(self) -> float:
        """Seconds between beats: an eighth of the threshold, at most a second."""
    @property
    def threshold(self) -> float:
        """The threshold in seconds."""
    def arm(self) -> float:
        """The loop runs: the next beat is due one period from now, and the watcher thread (started
        if need be) watches it. Returns the period. ``RuntimeError`` once closed; ``MemoryError``
        or ``RuntimeError`` if the thread cannot start."""
    def beat(self) -> float | None:
        """The beat, run by the loop: records its lag into ``lag``; the seconds until the next
        one, or ``None`` once closed."""
    def take_ended(self) -> float | None:
        """The lag in seconds of the late beat that ended a block, if no one took it yet (less the
        time the process was stopped within it)."""
    def overdue(self) -> float | None:
        """How late the next beat is now, in seconds (less the time the process was stopped), or
        ``None`` while paused."""
    def pause(self) -> None:
        """The loop stopped running: nothing is due until ``arm()``."""
    def close(self) -> None:
        """Stops watching for good and lets go of the handler; closing the last watch ends the
        watcher thread, without waiting for it (``watchdog_wait_stopped`` does)."""

def watchdog_thread_running() -> bool:
    """Whether a ``ferrio-watchdog`` thread of this process is alive (the current one, or one
    told to end that has not yet)."""

def deferred_flushes() -> int:
    """How many held completion signals the flusher thread sent because a batch outlasted the
    2 ms bound (``ThreadPoolCore(hold_signals=True)``)."""

def watchdog_wakeups() -> int:
    """How many times a ``ferrio-watchdog`` thread of this process woke from its wait (two more
    mean it went back to its wait once, out of any Python call)."""

def watchdog_wait_stopped(timeout: float) -> bool:
    """Waits up to ``timeout`` seconds (GIL released) for every ``ferrio-watchdog`` thread of this
    process to end; whether they did."""

def read_cached(fd: int, size: int, offset: int) -> bytes | bool | None:
    """Up to ``size`` bytes at ``offset`` of ``fd`` if the page cache holds them, read without
    waiting for the disk (``preadv2(RWF_NOWAIT)``) and with the GIL held (a memory copy);
    ``None`` if they are not cached, ``False`` if this file cannot be read that way. Fewer bytes
    at end of file or where the cache ends.

    Raises:
        OSError: the read failed (a bad descriptor, say).
        MemoryError: ``size`` bytes cannot be allocated (they are, before reading).
        OverflowError: ``size`` is more than a ``bytes`` can hold.
    """

def split_lines(chunk: _T, start: int) -> tuple[list[_T], int]:
    """The lines of ``chunk`` (``str`` or ``bytes``) from index ``start`` on that end in ``"\\n"``,
    each with its ``"\\n"``, and the index where the last of them ends (``start`` if none does);
    a trailing piece without ``"\\n"`` is left out. Cut in Rust, one call per read-ahead chunk.

    Raises:
        TypeError: ``chunk`` is neither ``str`` nor ``bytes``.
    """

def open_cached(path: str | bytes | os.PathLike[str]) -> int | None:
    """Opens ``path`` read-only and close-on-exec if its lookup needs no I/O (``openat2`` with
    ``RESOLVE_CACHED``) and it is a regular file; returns the descriptor, or ``None`` (not cached,
    not a regular file, an error, or unsupported: open it the usual way). Never waits: a FIFO or
    a device is opened non-blocking, seen not to be a regular file, and closed unread."""

def read_files_blocking(paths: list[str], threads: int = 8) -> list[bytes]:
    """Reads every file in ``paths`` whole with the GIL released: up to 32 on the calling thread,
    more on up to ``threads`` (at most 64) threads of its own; their contents in order. Ctrl-C (on
    the main thread) or cancelling the ferrio job it runs in stops it within about 50 ms, even a
    read waiting for a FIFO's writer.

    Raises:
        OSError: the first failing file's error, as ``open()`` raises it.
        MemoryError: a file does not fit in the memory left.
        RuntimeError: not even one reading thread could be started.
        KeyboardInterrupt: Ctrl-C, on the main thread.
        asyncio.CancelledError: the job it runs in was cancelled.
    """
