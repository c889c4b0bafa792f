"""``ProcessPool`` and ``to_process``: CPU-bound work in worker processes that survive crashes.

The public API: checking arguments, pickling a call on the caller's thread (so a bad argument
fails at the call site) and awaiting or returning its future. What happens to a call next, in the
pool's manager thread and its workers, is :mod:`ferrio._process_manager`; how workers are started,
:mod:`ferrio._process_forkserver`; the frames on their sockets, :mod:`ferrio._wire`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, NoReturn, ParamSpec, TypeVar, overload

from . import _process_worker, _wire
from ._chunks import Submitted, ordered_map
from ._errors import check_positive_int, check_timeout, describe, not_callable, with_remote_traceback
from ._process_forkserver import start_context
from ._process_manager import Core, Task
from ._stats import ProcessPoolStatistics
from ._threads import to_thread
from ._wakers import waker_for

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")

_get_running_loop = asyncio.get_running_loop

#: The most worker processes a pool runs: each is a whole interpreter with its own descriptors.
_MAX_WORKERS = 1024
_default: ProcessPool | None = None
_default_lock = threading.Lock()


def _explain_unpicklable(
    api: str, func: object, args: tuple[Any, ...], kwargs: dict[str, Any], error: Exception
) -> NoReturn:
    """Raises a TypeError naming the first part of a call that cannot be pickled."""
    parts: list[tuple[str, Any]] = [("the function", func)]
    parts += [(f"argument {i}", a) for i, a in enumerate(args)]
    parts += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    culprit = ("the call", (func, args, kwargs))
    for part in parts:
        try:
            _wire.dumps(part[1]).close()
        except Exception as e:
            error = e
            culprit = part
            break
    label, value = culprit
    raise TypeError(
        f"{api}: {label} of {describe(func)}() (a {type(value).__qualname__}) cannot be pickled to send it "
        f"to a worker process ({type(error).__name__}: {error}); pass plain data, or create the object in "
        "the worker (in the function itself or in the pool's initializer)"
    ) from error


def _check_call_timeout(api: str, timeout: object) -> float | None:
    """A call's ``timeout=``, checked as :mod:`threading` checks one (None and ``math.inf``: no
    limit); 0 is refused too, as no call finishes in no time: pass None for no limit."""
    seconds = check_timeout(api, timeout)
    if seconds == 0:
        raise ValueError(
            f"{api} expected timeout to be a positive number of seconds or None, got {timeout!r}: "
            "a call cannot finish in no time; pass None for no limit"
        )
    return seconds


class ProcessPool(concurrent.futures.Executor):
    """A pool of worker processes for CPU-bound work that survives worker crashes.

    ::

        pool = ferrio.ProcessPool(max_workers=4, initializer=init, initargs=(counter,))
        async with pool:
            r = await pool.run(crunch, data, timeout=5.0)       # the worker is killed past the timeout
            fut = pool.submit(crunch, data)                     # concurrent.futures.Future
            out = [x async for x in pool.amap(crunch, chunks)]  # ordered, bounded in flight

    It is a :class:`concurrent.futures.Executor`, so ``loop.run_in_executor(pool, fn)`` works too.
    Unlike ``ProcessPoolExecutor``, a worker that dies (a signal, a segfault, ``os._exit``, the
    out-of-memory killer) fails only the call it was running, with :exc:`ferrio.WorkerCrashed`
    naming the pid, the signal or exit code and the function; a replacement starts and every
    other call completes.

    Calls and results are pickled with protocol 5, by reference first and with cloudpickle where
    that fails, so lambdas, closures and functions of an interactive ``__main__`` work. Buffers of
    1 MiB or more (bytes, bytearray, memoryview, NumPy arrays) travel through shared memory, not
    the socket, both ways. Pickling happens on the calling thread, so an argument that cannot be
    pickled raises :exc:`TypeError` at the call. Workers' log records are handed to the parent's
    loggers (``%(process)d`` shows the worker's pid); their output goes to the inherited stdout
    and stderr. Workers ignore Ctrl-C (the parent decides) and die with the parent.

    Workers start on first use, up to ``max_workers``, and live until shutdown (or for
    ``max_tasks_per_child`` calls each). Neither submitting nor awaiting waits on a worker: the
    pool's manager thread starts processes and writes calls to their sockets, never blocking on
    one. A worker that cannot be started for want of resources (EMFILE, EAGAIN) fails the call
    it was for with :exc:`OSError` if no other worker can run it; the pool stays usable.

    Args:
        max_workers: The most worker processes at once; defaults to the number of CPUs.
        initializer: Called with ``*initargs`` in each worker before its first call. If it raises,
            the pool is broken: pending and later calls raise :exc:`ferrio.BrokenProcessPool`.
        initargs: Arguments for ``initializer``; may hold :class:`ferrio.SharedValue` objects.
        max_tasks_per_child: A worker exits after this many calls and a fresh one replaces it.
        start_method: ``"forkserver"`` (the default where available) or ``"spawn"``. ``"fork"`` is
            refused: the pool starts workers from its own thread, and forking a process that runs
            threads can deadlock the child.
        kill_on_cancel: The default for :meth:`run`: whether cancelling the awaiting task kills
            the worker running its call. ``False`` by default, as killing mid-call may leave what
            the call was writing (files, shared values) half done; a call not yet started is
            always dropped.
        name: Worker processes are named ``{name}-{n}``.

    Raises:
        ValueError: ``max_workers`` or ``max_tasks_per_child`` is less than 1, ``max_workers`` is
            more than 1024, or ``start_method`` is unknown or ``"fork"``.
        TypeError: ``max_workers`` or ``max_tasks_per_child`` is not an int, ``start_method`` or
            ``name`` is not a str, ``initializer`` is not callable or is a coroutine function,
            ``initargs`` is not a tuple or cannot be pickled.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        start_method: str | None = None,
        kill_on_cancel: bool = False,
        name: str = "ferrio-process",
    ) -> None:
        api = "ProcessPool()"
        if max_workers is None:
            max_workers = min(os.cpu_count() or 1, _MAX_WORKERS)
        check_positive_int(api, "max_workers", max_workers)
        if max_workers > _MAX_WORKERS:
            raise ValueError(
                f"{api} got max_workers={max_workers}; a pool runs at most {_MAX_WORKERS} worker processes "
                "(each is a whole interpreter); pass a smaller number, such as os.cpu_count()"
            )
        if max_tasks_per_child is not None:
            check_positive_int(api, "max_tasks_per_child", max_tasks_per_child)
        if initializer is not None and not callable(initializer):
            raise TypeError(f"{api} expected initializer to be callable or None, got {initializer!r}")
        if inspect.iscoroutinefunction(initializer):
            raise TypeError(
                f"{api} expected a sync initializer, but '{describe(initializer)}' is a coroutine function; "
                "wrap it in a sync function that calls asyncio.run()"
            )
        if not isinstance(initargs, tuple):
            raise TypeError(
                f"{api} expected initargs to be a tuple, got {initargs!r} of type '{type(initargs).__name__}'; "
                "pass initargs=(value,) for one argument"
            )
        if start_method is not None and not isinstance(start_method, str):
            raise TypeError(
                f"{api} expected start_method to be a str or None, got {start_method!r} of type "
                f"'{type(start_method).__name__}'"
            )
        if not isinstance(name, str):
            raise TypeError(f"{api} expected name to be a str, got {name!r} of type '{type(name).__name__}'")
        ctx, method = start_context(api, start_method)
        try:
            init = _wire.dumps((initializer, initargs, max_tasks_per_child, logging.getLogger().getEffectiveLevel()))
        except Exception as e:
            _explain_unpicklable(api, initializer, initargs, {}, e)
        self._max_workers = max_workers
        self._start_method = method
        self._kill_on_cancel = bool(kill_on_cancel)
        self._core = Core(max_workers, ctx, name, init, max_tasks_per_child)
        weakref.finalize(self, self._core.close, False)

    def __repr__(self) -> str:
        s = self.stats()
        state = "shut down" if self._core.closed else "running"
        return (
            f"<ferrio.ProcessPool {state} max_workers={s.max_workers} start_method={self._start_method!r} "
            f"alive={s.workers_alive} queued={s.queued} running={s.running}>"
        )

    def _task(
        self, api: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> Task:
        if not callable(func):
            raise not_callable(api, func, "a callable as its first argument")
        if inspect.iscoroutinefunction(func):
            raise TypeError(
                f"{api} expected a sync function, but '{describe(func)}' is a coroutine function; "
                "wrap it in a sync function that calls asyncio.run() to run it in a worker"
            )
        try:
            pickled = _wire.dumps((func, args, kwargs))
        except Exception as e:
            _explain_unpicklable(api, func, args, kwargs, e)
        return Task(next(self._core.ids), describe(func), pickled, timeout)

    # -- async ---------------------------------------------------------------------------------

    # Keyword-only options cannot follow ``*args: P.args`` (PEP 612): a call that passes an option
    # is typed by its result only; one that passes none is checked against ``func``'s signature.
    @overload
    async def run(
        self,
        func: Callable[..., R],
        /,
        *args: Any,
        timeout: float | None,
        kill_on_cancel: bool | None = None,
        **kwargs: Any,
    ) -> R: ...
    @overload
    async def run(self, func: Callable[..., R], /, *args: Any, kill_on_cancel: bool | None, **kwargs: Any) -> R: ...
    @overload
    async def run(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    async def run(  # type: ignore[misc]  # P.kwargs may name timeout too: checked at run time
        self,
        func: Callable[..., R],
        /,
        *args: Any,
        timeout: float | None = None,
        kill_on_cancel: bool | None = None,
        **kwargs: Any,
    ) -> R:
        """Run ``func(*args, **kwargs)`` in a worker process and return its result.

        ``timeout=`` bounds the call's running time (not its wait for a worker): past it the
        worker is killed, a replacement starts, and :exc:`TimeoutError` is raised. ``None`` and
        ``math.inf`` mean no limit; 0 is refused (no call finishes in no time). ``timeout``
        and ``kill_on_cancel`` are keyword-only and reserved; to pass keyword arguments of those
        names to ``func``, wrap it in :func:`functools.partial`.

        Cancellation: a call still queued is dropped and never runs. A running call is killed
        with its worker when ``kill_on_cancel`` (default: the pool's) is true; otherwise it runs
        to its end and the result is discarded.

        Raises:
            TypeError: ``func`` is not callable or is a coroutine function, an argument cannot
                be pickled (the message names which), or ``timeout`` is not a number.
            ValueError: ``timeout`` is 0, negative or NaN.
            OverflowError: ``timeout`` is finite and more than :data:`threading.TIMEOUT_MAX`.
            TimeoutError: the call ran past ``timeout``.
            OSError: no worker process could be started for the call (out of descriptors or
                processes, say); the pool stays usable.
            WorkerCrashed: the worker process died while running the call.
            BrokenProcessPool: the pool's initializer failed, or a worker could not start.
            RuntimeError: the pool was shut down.
        """
        api = "ProcessPool.run()"
        task = self._task(api, func, args, kwargs, _check_call_timeout(api, timeout))
        loop = _get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        task.afut = fut
        task.waker = waker_for(loop)
        self._core.submit(api, task)
        try:
            return await fut
        except asyncio.CancelledError:
            self._core.cancel(task, self._kill_on_cancel if kill_on_cancel is None else bool(kill_on_cancel))
            raise

    def amap(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T],
        /,
        *,
        max_in_flight: int | None = None,
        chunksize: int | None = None,
    ) -> AsyncIterator[R]:
        """Yield ``func(x)`` for each ``x`` of ``iterable``, in order, computed in worker processes.

        The iterable is consumed lazily: at most ``max_in_flight`` chunks (default
        ``2 * max_workers``) are submitted ahead of what has been yielded. By default a chunk
        grows until it runs for about 20 ms, so cheap calls share one round trip and slow ones
        travel alone. An exception from ``func`` is raised at its item's position after the
        results before it; leaving the loop early cancels what was submitted ahead. Call it from a
        task (``async for x in pool.amap(...)``): bad arguments raise at the call.

        Raises:
            TypeError: ``func`` is not callable, or an item cannot be pickled.
            ValueError: ``max_in_flight`` or ``chunksize`` is less than 1.
            RuntimeError: the pool was shut down.
        """
        api = "ProcessPool.amap()"
        if not callable(func):
            raise not_callable(api, func, "a callable as its first argument")
        window = (
            self._max_workers * 2 if max_in_flight is None else check_positive_int(api, "max_in_flight", max_in_flight)
        )
        fixed = None if chunksize is None else check_positive_int(api, "chunksize", chunksize)
        loop = _get_running_loop()
        waker = waker_for(loop)

        def submit(chunk: tuple[Any, ...]) -> Submitted:
            try:
                pickled = _wire.dumps((_process_worker.run_chunk, (func, chunk), {}))
            except Exception as e:
                _explain_unpicklable(api, func, chunk, {}, e)
            task = Task(next(self._core.ids), describe(func), pickled, None)
            fut = task.afut = loop.create_future()
            task.waker = waker
            self._core.submit(api, task)

            def cancel() -> None:
                fut.cancel()
                self._core.cancel(task, False)

            return fut, cancel

        # About 20 ms of work per chunk: long enough to hide a round trip to the worker.
        return ordered_map(
            iterable,
            submit,
            window=window,
            chunksize=fixed,
            seconds_per_chunk=20e-3,
            to_exception=lambda error: with_remote_traceback(*error),
        )

    async def __aenter__(self) -> ProcessPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Shut down, waiting for running and queued calls without blocking the event loop."""
        self.shutdown(wait=False)
        thread = self._core.thread
        if thread is not None:
            await asyncio.shield(to_thread(thread.join))

    # -- concurrent.futures.Executor ------------------------------------------------------------

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)`` in a worker; return a :class:`concurrent.futures.Future`.

        Usable from any thread. Cancelling the future drops a call not yet started.

        Raises:
            TypeError: ``fn`` is not callable or is a coroutine function, or an argument cannot be
                pickled (the message names which).
            BrokenProcessPool: the pool's initializer failed, or a worker could not start.
            OSError: the pool's manager thread could not start (out of descriptors, say); the
                future fails with OSError when no worker process could be started for the call.
            RuntimeError: the pool was shut down.
        """
        api = "ProcessPool.submit()"
        task = self._task(api, fn, args, kwargs, None)
        fut: concurrent.futures.Future[R] = concurrent.futures.Future()
        task.cf = fut
        self._core.submit(api, task)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls; queued calls still run unless ``cancel_futures``.

        With ``wait``, block until every call has finished and every worker has exited. Idempotent.
        """
        core = self._core
        core.close(cancel_futures)
        thread = core.thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> ProcessPoolStatistics:
        """A frozen snapshot of the pool's workers, calls and latencies."""
        return self._core.statistics()

    def worker_pids(self) -> list[int]:
        """The process ids of the workers alive now."""
        return self._core.worker_pids()


def default_process_pool() -> ProcessPool:
    """The process-wide pool behind :func:`ferrio.to_process`, created on first use."""
    global _default
    pool = _default
    if pool is None:
        with _default_lock:
            if _default is None:
                _default = ProcessPool(name="ferrio-process")
            pool = _default
    return pool


@overload
async def to_process(
    func: Callable[..., R], /, *args: Any, timeout: float | None, kill_on_cancel: bool | None = None, **kwargs: Any
) -> R: ...
@overload
async def to_process(func: Callable[..., R], /, *args: Any, kill_on_cancel: bool | None, **kwargs: Any) -> R: ...
@overload
async def to_process(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
async def to_process(  # type: ignore[misc]  # P.kwargs may name timeout too: checked at run time
    func: Callable[..., R],
    /,
    *args: Any,
    timeout: float | None = None,
    kill_on_cancel: bool | None = None,
    **kwargs: Any,
) -> R:
    """Run ``func(*args, **kwargs)`` in a worker process of the default pool; return its result.

    ::

        result = await ferrio.to_process(crunch, data)
        result = await loop.run_in_executor(ProcessPoolExecutor(), crunch, data)   # roughly

    The default pool has one worker per CPU, started on first use. Everything
    :meth:`ProcessPool.run` says holds: ``timeout=`` kills a call that runs too long, a worker
    crash fails only its call with :exc:`ferrio.WorkerCrashed`, lambdas and closures work.
    """
    return await default_process_pool().run(func, *args, timeout=timeout, kill_on_cancel=kill_on_cancel, **kwargs)


def _forget_default_in_child() -> None:
    # After os.fork(), in the child: the default pool is the parent's (and refuses calls here);
    # the child's first to_process() creates its own.
    global _default
    _default = None


os.register_at_fork(after_in_child=_forget_default_in_child)
