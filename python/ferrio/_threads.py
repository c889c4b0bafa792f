"""Thread offloading: ``to_thread``, ``ThreadPool`` and the per-loop completion wakers."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
import sys
import threading
import types
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar, overload

from . import _ferrio, _loops
from ._chunks import Submitted, ordered_map
from ._errors import check_positive_int
from ._limiter import CapacityLimiter, limiter_core
from ._stats import PoolStatistics, pool_statistics_of
from ._wakers import waker_for

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

_get_running_loop = asyncio.get_running_loop
_copy_context = contextvars.copy_context

# Every pool alive, so interpreter exit and fork can reach them.
_pools: weakref.WeakSet[ThreadPool] = weakref.WeakSet()
_default: ThreadPool | None = None
_default_lock = threading.Lock()
_exiting = False

# Callables whose kind the Rust side reads off their code object without running Python code.
_READ_IN_RUST = frozenset({types.FunctionType, types.MethodType, types.BuiltinFunctionType})
_iscoroutinefunction = inspect.iscoroutinefunction


def _coroutine_flag(func: object) -> bool | None:
    """Whether ``func`` is a coroutine function, worked out here unless Rust can read it (None).

    ``inspect.iscoroutinefunction`` is Python code: run from under a Rust frame, it may drop the
    GIL, and a daemon thread taking it back once the interpreter finalizes is ended by a forced
    unwind that aborts the process when Rust frames are on its stack (crates/ferrio-py/src/pool.rs).
    Here, in a Python frame, that end is harmless.
    """
    return None if type(func) in _READ_IN_RUST else _iscoroutinefunction(func)


def _default_max_workers() -> int:
    # Threads start lazily and retire when idle, so a generous cap costs nothing until used;
    # 40 is the default of anyio's and trio's thread limiters, sized for blocking I/O.
    return 40


def default_pool() -> ThreadPool:
    """The process-wide pool behind :func:`ferrio.to_thread`, created on first use."""
    global _default
    pool = _default
    if pool is not None:
        return pool
    with _default_lock:
        if _default is None:
            if _exiting:
                raise RuntimeError("ferrio.to_thread() cannot schedule new work after interpreter shutdown")
            _default = ThreadPool(_default_max_workers(), thread_name_prefix="ferrio-worker")
        return _default


class ThreadPool(concurrent.futures.ThreadPoolExecutor):
    """A pool of worker threads managed in Rust, usable from async and sync code.

    ::

        pool = ferrio.ThreadPool(max_workers=8, thread_name_prefix="db")
        async with pool:
            rows = await pool.run(query, "select 1")           # await from a task
            fut = pool.submit(query, "select 2")               # concurrent.futures.Future
            async for row in pool.amap(query, statements):     # ordered, bounded in flight
                ...

    It is a :class:`concurrent.futures.ThreadPoolExecutor`, so ``loop.run_in_executor(pool, ...)``
    and ``loop.set_default_executor(pool)`` accept it, and with the latter, existing
    ``run_in_executor(None, ...)`` and ``asyncio.to_thread`` calls run on ferrio.

    Workers start on demand up to ``max_workers``, are named ``{thread_name_prefix}-{n}``, and
    exit after ``idle_timeout`` seconds without work. Each worker attaches to the interpreter once
    and releases the GIL only while it waits; it runs queued jobs back to back for up to 1 ms per
    GIL hold. Results of :meth:`run` reach each event loop in batches, one wake-up per batch.

    Worker threads get the stack size a :class:`threading.Thread` started at the pool's creation
    would get: :func:`threading.stack_size` if set, else the platform's default for new threads
    (on Linux, derived from ``ulimit -s``; typically 8 MiB).

    Args:
        max_workers: The most threads alive at once. Defaults to ``min(32, os.cpu_count() + 4)``,
            as for ``ThreadPoolExecutor``.
        thread_name_prefix: Worker threads are named ``{thread_name_prefix}-{n}``.
        idle_timeout: Seconds an idle worker waits for work before it exits.

    Raises:
        ValueError: ``max_workers`` is 0 or negative, ``idle_timeout`` is negative, or
            ``thread_name_prefix`` contains a NUL character.
        TypeError: ``max_workers`` is not an int.
        RuntimeError: the interpreter is exiting.
    """

    #: Whether workers hold a batch's completion signals to its end (crates/ferrio-py/src/deferred.rs);
    #: for ferrio.PinnedThread's one-worker pool.
    _hold_signals = False

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        thread_name_prefix: str = "ferrio-worker",
        idle_timeout: float = 10.0,
    ) -> None:
        # ThreadPoolExecutor.__init__ is deliberately not called: it would build the Python
        # machinery this class replaces.
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        check_positive_int("ThreadPool()", "max_workers", max_workers)
        if max_workers > sys.maxsize:
            raise OverflowError(f"ThreadPool() expected max_workers at most {sys.maxsize}, got {max_workers}")
        if not isinstance(thread_name_prefix, str):
            raise TypeError(f"ThreadPool() expected thread_name_prefix to be a str, got {thread_name_prefix!r}")
        if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)) or not idle_timeout >= 0:
            raise ValueError(f"idle_timeout must be a non-negative number of seconds, got {idle_timeout!r}")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix
        self._idle_timeout = float(idle_timeout)
        # Workers get the stack a threading.Thread started now would get (0: the platform's).
        self._stack_size = threading.stack_size()
        self._core = _ferrio.ThreadPoolCore(
            max_workers, thread_name_prefix, self._idle_timeout, self._stack_size, self._hold_signals
        )
        self._shutdown = False
        self._shutdown_lock = threading.Lock()
        _pools.add(self)

    def __repr__(self) -> str:
        s = self.stats()
        state = "shut down" if self._shutdown else "running"
        return (
            f"<ferrio.ThreadPool {state} max_workers={s.max_workers} alive={s.workers_alive} "
            f"queued={s.queued} running={s.running}>"
        )

    # -- async ---------------------------------------------------------------------------------

    @overload
    async def run(
        self,
        func: Callable[..., Coroutine[Any, Any, R]],
        /,
        *args: Any,
        limiter: CapacityLimiter | None = None,
        **kwargs: Any,
    ) -> R: ...
    @overload
    async def run(
        self, func: Callable[..., R], /, *args: Any, limiter: CapacityLimiter | None = None, **kwargs: Any
    ) -> R: ...
    async def run(
        self, func: Callable[..., Any], /, *args: Any, limiter: CapacityLimiter | None = None, **kwargs: Any
    ) -> Any:
        """Run ``func(*args, **kwargs)`` on a worker thread and return its result.

        ``func`` may be a coroutine function: it then runs on the worker thread's own event loop
        (created once per worker, reused), which suits async libraries that must not share the
        caller's loop, or coroutines that block. Cancelling the awaiting task cancels it there.

        The caller's :mod:`contextvars` context is copied into the call, as
        :func:`asyncio.to_thread` does. ``limiter=`` is keyword-only and reserved: to pass a
        keyword argument named ``limiter`` to ``func``, wrap it in :func:`functools.partial`.

        Cancellation: cancelling the awaiting task before the job starts drops it; it never runs.
        Once it runs, the task gets :exc:`asyncio.CancelledError` at once, the result is discarded,
        and the thread keeps running ``func`` to its end (Python cannot stop a thread), but
        ``func`` can notice with :func:`ferrio.check_cancelled` or :func:`ferrio.is_cancelled` and
        return early.

        Raises:
            TypeError: ``func`` is not callable.
            RuntimeError: the pool was shut down.
        """
        loop = _get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._core.submit(
            api="ThreadPool.run()",
            fut=fut,
            func=func,
            args=args,
            kwargs=kwargs or None,
            context=_copy_context(),
            limiter=limiter_core("ThreadPool.run()", limiter),
            waker=waker_for(loop),
            run_coroutines=True,
            coroutine=_coroutine_flag(func),
        )
        return await fut

    def _run_always(self, api: str, fn: Callable[[], R], /) -> asyncio.Future[R]:
        """Queue ``fn()`` and return a future for its result; ``fn`` runs even if the future is
        cancelled before it starts (for ferrio's own jobs that must not be lost, such as a file's
        close). ``api`` names the public call in error messages."""
        loop = _get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        # coroutine=False: ferrio's own jobs are plain callables (a partial, say), which Rust would
        # otherwise classify by calling inspect (see _coroutine_flag).
        self._core.submit(api=api, fut=fut, func=fn, args=(), waker=waker_for(loop), coroutine=False, always_run=True)
        return fut

    def amap(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T],
        /,
        *,
        limiter: CapacityLimiter | None = None,
        max_in_flight: int | None = None,
        chunksize: int | None = None,
    ) -> AsyncIterator[R]:
        """Yield ``func(x)`` for each ``x`` of ``iterable``, in order, computed on the pool.

        The iterable is consumed lazily: at most ``max_in_flight`` chunks (default
        ``2 * max_workers``) are submitted ahead of what has been yielded. Items travel in chunks
        run back to back by one worker under one GIL hold; by default a chunk grows until it runs
        for about a millisecond, so calls that take microseconds are batched and calls that block
        run one per worker. An exception from ``func`` is raised at its item's position after the
        results before it; leaving the loop early cancels what was submitted ahead. Call it from a
        task (``async for x in pool.amap(...)``): bad arguments raise at the call.

        Raises:
            TypeError: ``func`` is not callable, or is a coroutine function, or ``iterable`` is
                not iterable.
            ValueError: ``max_in_flight`` or ``chunksize`` is less than 1.
            RuntimeError: the pool was shut down.
        """
        api = "ThreadPool.amap()"
        _ferrio.check_sync_callable(api, func, _coroutine_flag(func))
        core = limiter_core(api, limiter)
        window = (
            self._max_workers * 2 if max_in_flight is None else check_positive_int(api, "max_in_flight", max_in_flight)
        )
        fixed = None if chunksize is None else check_positive_int(api, "chunksize", chunksize)
        loop = _get_running_loop()
        waker = waker_for(loop)
        context = _copy_context()

        def submit(chunk: tuple[Any, ...]) -> Submitted:
            fut = loop.create_future()
            self._core.submit_map(
                api=api, waker=waker, fut=fut, func=func, items=chunk, context=context.copy(), limiter=core
            )
            return fut, fut.cancel

        # About 1 ms of work per chunk: one GIL hold runs it back to back.
        return ordered_map(iterable, submit, window=window, chunksize=fixed, seconds_per_chunk=1e-3, api=api)

    async def __aenter__(self) -> ThreadPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Shut down, waiting for running and queued work without blocking the event loop."""
        self.shutdown(wait=False)
        loop = _get_running_loop()
        done = loop.create_future()

        def join() -> None:
            self._core.join()
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(_set_done, done)

        threading.Thread(target=join, name=f"{self._thread_name_prefix}-joiner", daemon=True).start()
        await asyncio.shield(done)

    # -- concurrent.futures.Executor ------------------------------------------------------------

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)``; return a :class:`concurrent.futures.Future`.

        Usable from any thread. As with ``ThreadPoolExecutor``, the call runs in the worker's own
        context (use :meth:`run` from async code to carry the caller's context variables). A
        coroutine function runs on the worker thread's own event loop.

        Raises:
            TypeError: ``fn`` is not callable.
            RuntimeError: the pool was shut down.
        """
        fut: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._core.submit(
            api="ThreadPool.submit()",
            fut=fut,
            func=fn,
            args=args,
            kwargs=kwargs or None,
            run_coroutines=True,
            coroutine=_coroutine_flag(fn),
        )
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; jobs already queued still run unless ``cancel_futures``.

        With ``wait``, block (with the GIL released) until every worker has exited. Idempotent,
        and callable from any thread, including a worker of this pool (which is not waited for).

        Raises:
            KeyboardInterrupt: Ctrl-C during the wait (or whatever a signal handler raises); the
                pool is shut down all the same, and its workers finish on their own.
        """
        with self._shutdown_lock:
            self._shutdown = True
        self._core.shutdown(cancel_futures)
        if wait:
            self._core.join()

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> PoolStatistics:
        """A frozen snapshot of the pool's workers, jobs and latencies."""
        return pool_statistics_of(self._core.counts())

    def _reset_after_fork(self) -> None:
        # A parent thread may have held the lock at the fork (in shutdown()); nobody holds it here.
        self._shutdown_lock = threading.Lock()
        self._core.forget_after_fork()
        self._core = _ferrio.ThreadPoolCore(
            self._max_workers, self._thread_name_prefix or "", self._idle_timeout, self._stack_size, self._hold_signals
        )
        if self._shutdown:
            self._core.shutdown(False)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def to_thread(func: Callable[..., R], /, *args: Any, limiter: CapacityLimiter | None = None, **kwargs: Any) -> R:
    """Run ``func(*args, **kwargs)`` on ferrio's default thread pool and return its result.

    ::

        data = await asyncio.to_thread(blocking_io, "a.txt")
        data = await ferrio.to_thread(blocking_io, "a.txt")     # same call, on ferrio

    What differs from :func:`asyncio.to_thread`: the pool is managed in Rust (up to 40 threads,
    started on demand, retired after 10 s idle), results reach the loop in batches behind one
    wake-up, bad input fails here rather than in a worker, and ``StopIteration`` raised by
    ``func`` arrives as a ``RuntimeError`` caused by it instead of leaving the await hanging.
    The caller's :mod:`contextvars` context is copied into the call.

    ``limiter=`` (keyword-only, reserved) bounds how many calls sharing a
    :class:`ferrio.CapacityLimiter` run at once.

    Cancellation: cancelling the awaiting task before the call starts drops it; it never runs.
    Once it runs, the task gets :exc:`asyncio.CancelledError` at once and the result is
    discarded; the thread finishes ``func`` (Python cannot stop a thread), which can notice with
    :func:`ferrio.check_cancelled` and return early.

    When not to use it: for CPU-bound pure-Python work, which holds the GIL and gains nothing from
    threads, use a process pool.

    Raises:
        TypeError: ``func`` is not callable, or is a coroutine function (await it directly).
        RuntimeError: called during interpreter shutdown.
    """
    loop = _get_running_loop()
    fut: asyncio.Future[R] = loop.create_future()
    (_default or default_pool())._core.submit(
        api="ferrio.to_thread()",
        fut=fut,
        func=func,
        args=args,
        kwargs=kwargs or None,
        context=_copy_context(),
        limiter=limiter_core("ferrio.to_thread()", limiter),
        waker=waker_for(loop),
        coroutine=_coroutine_flag(func),
    )
    return await fut


def check_cancelled() -> None:
    """From a function running on a ferrio worker: raise if its awaiting task was cancelled.

    Raises:
        asyncio.CancelledError: the task awaiting this job was cancelled.
        RuntimeError: not called from a job running on a ferrio worker thread.
    """
    _ferrio.check_cancelled()


def is_cancelled() -> bool:
    """From a function running on a ferrio worker: whether its awaiting task was cancelled.

    Raises:
        RuntimeError: not called from a job running on a ferrio worker thread.
    """
    return _ferrio.is_cancelled()


@overload
def asyncify(func: Callable[P, R], /) -> Callable[P, Coroutine[Any, Any, R]]: ...
@overload
def asyncify(
    func: None = None, /, *, pool: ThreadPool | None = None, limiter: CapacityLimiter | None = None
) -> Callable[[Callable[P, R]], Callable[P, Coroutine[Any, Any, R]]]: ...
def asyncify(
    func: Callable[P, R] | None = None, /, *, pool: ThreadPool | None = None, limiter: CapacityLimiter | None = None
) -> Callable[P, Coroutine[Any, Any, R]] | Callable[[Callable[P, R]], Callable[P, Coroutine[Any, Any, R]]]:
    """Turn a blocking function into an async one that runs it on a thread pool.

    ::

        @ferrio.asyncify
        def read_config(path: str) -> dict: ...

        @ferrio.asyncify(pool=db_pool, limiter=db_slots)
        def query(sql: str) -> list: ...

        config = await read_config("app.toml")

    Each call is ``await pool.run(func, *args, limiter=limiter, **kwargs)`` (the default pool if
    ``pool`` is None), so it carries the caller's context variables and cancels like
    :func:`ferrio.to_thread`.

    Raises:
        TypeError: ``func`` is not callable, or is a coroutine function.
    """

    def decorate(f: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
        _ferrio.check_sync_callable("ferrio.asyncify", f, _coroutine_flag(f))
        limiter_core("ferrio.asyncify", limiter)
        if pool is not None and not isinstance(pool, ThreadPool):
            raise TypeError(f"ferrio.asyncify expected pool= to be a ferrio.ThreadPool or None, got {pool!r}")

        @functools.wraps(f)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return await (pool or _default or default_pool()).run(f, *args, limiter=limiter, **kwargs)

        return wrapper

    return decorate if func is None else decorate(func)


def _worker_started(name: str) -> None:
    """Called by each Rust worker thread once, when it starts."""
    threading.current_thread().name = name


def _worker_exiting() -> None:
    """Called by each Rust worker thread once, as it exits: close its event loop, if it made one,
    and drop its ``threading`` entry."""
    _loops.close_thread_loop()
    with threading._active_limbo_lock:  # type: ignore[attr-defined]
        threading._active.pop(threading.get_ident(), None)  # type: ignore[attr-defined]


def _quiesce_at_exit() -> None:
    """Before the interpreter finalizes, let every worker finish and exit.

    A Rust thread that touches the interpreter after finalization has begun aborts the process
    on CPython < 3.14, so workers must be gone first. Queued work still runs, as with
    ``ThreadPoolExecutor``; Ctrl-C ends the wait, cancelling what has not started.
    """
    global _exiting
    _exiting = True
    # First, so that a pool made or a job submitted from here on (by a daemon thread, or by a job
    # still running) is refused: none can start a thread after the joins below.
    _ferrio.refuse_new_work()
    pools = list(_pools)
    try:
        for pool in pools:
            pool.shutdown(wait=True)
        _ferrio.join_orphans()
    except BaseException:
        # Ctrl-C: exit without waiting, as ThreadPoolExecutor does, but let no queued job start
        # while the interpreter finalizes. Jobs already running cannot be stopped.
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        raise


def _after_fork_in_child() -> None:
    # The parent's worker threads do not exist here and its locks may be held by them: give every
    # pool (the default one included) a fresh core, and every loop a fresh waker. The old cores
    # are leaked, never locked (the Rust side knows they belong to the parent). Nothing here may
    # drop the last reference to a pool before it was reset.
    global _default_lock
    _default_lock = threading.Lock()
    for pool in list(_pools):
        pool._reset_after_fork()
    _ferrio.forget_orphans_after_fork()


_ferrio.install_hooks(
    worker_started=_worker_started,
    worker_exiting=_worker_exiting,
    run_coroutine_function=_loops.run_coroutine_function,
)
threading._register_atexit(_quiesce_at_exit)  # type: ignore[attr-defined]
# The last at-exit hook (the first registered runs last): from then on a worker thread that
# comes back to the interpreter parks for good instead of being unwound by finalization.
atexit.register(_ferrio.stop_attaching)
if hasattr(os, "register_at_fork"):
    # No ferrio worker creates its interpreter thread state while the process forks (see
    # crates/ferrio-py/src/finalize.rs). `before` hooks run in reverse order of registration, so
    # those registered after ferrio's import (which may submit work) run before the gate closes.
    os.register_at_fork(
        before=_ferrio.before_fork,
        after_in_parent=_ferrio.after_fork_in_parent,
        after_in_child=_ferrio.after_fork_in_child,
    )
    os.register_at_fork(after_in_child=_after_fork_in_child)
