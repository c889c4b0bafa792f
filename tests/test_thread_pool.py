"""ferrio.ThreadPool: the Executor API, amap, shutdown, limits, idle exit, stats."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import math
import threading
import time

import ferrio
import pytest
from conftest import LoopTicker, until_cancelled
from ferrio import _ferrio
from ferrio._ferrio import PanicException


def square(x: int) -> int:
    return x * x


@pytest.fixture(params=[1, 8], ids=["1-worker", "8-workers"])
def pool(request: pytest.FixtureRequest):
    p = ferrio.ThreadPool(request.param, thread_name_prefix="test-pool")
    yield p
    p.shutdown(wait=True)


def test_is_a_thread_pool_executor() -> None:
    with ferrio.ThreadPool(2) as p:
        assert isinstance(p, concurrent.futures.ThreadPoolExecutor)


def test_submit_from_sync_code(pool: ferrio.ThreadPool) -> None:
    fut = pool.submit(square, 7)
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=10) == 49


def test_submit_exception_reaches_the_future(pool: ferrio.ThreadPool) -> None:
    fut = pool.submit(int, "not a number")
    with pytest.raises(ValueError, match="invalid literal"):
        fut.result(timeout=10)


def test_executor_map_is_ordered(pool: ferrio.ThreadPool) -> None:
    assert list(pool.map(square, range(100), timeout=10)) == [x * x for x in range(100)]


async def test_run_and_amap(pool: ferrio.ThreadPool) -> None:
    assert await pool.run(square, 3) == 9
    assert [r async for r in pool.amap(square, range(1000))] == [x * x for x in range(1000)]
    assert [r async for r in pool.amap(square, range(10), chunksize=3, max_in_flight=2)] == [x * x for x in range(10)]


async def test_amap_raises_at_the_failing_position(pool: ferrio.ThreadPool) -> None:
    def inv(x: int) -> float:
        return 1 / x

    got = []
    with pytest.raises(ZeroDivisionError):
        async for r in pool.amap(inv, [1, 2, 0, 4], chunksize=1):
            got.append(r)
    assert got == [1.0, 0.5]


async def test_amap_consumes_lazily_and_stops_when_the_loop_breaks(pool: ferrio.ThreadPool) -> None:
    calls = itertools.count()

    def counted(x: int) -> int:
        next(calls)
        return x

    out = []
    async for r in pool.amap(counted, itertools.count(), chunksize=4, max_in_flight=2):
        out.append(r)
        if r == 9:
            break
    assert out == list(range(10))
    pool.shutdown(wait=True)
    # At most the chunks in flight ran beyond what was consumed, never the infinite rest.
    assert next(calls) <= 12 + 8


async def test_amap_rejects_bad_arguments(pool: ferrio.ThreadPool) -> None:
    async def coro(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"ThreadPool.amap\(\) expected a sync function, but '.*coro'"):
        async for _ in pool.amap(coro, [1]):
            pass
    with pytest.raises(ValueError, match="max_in_flight must be greater than 0, got 0"):
        async for _ in pool.amap(square, [1], max_in_flight=0):
            pass
    with pytest.raises(ValueError, match="chunksize must be greater than 0, got -1"):
        async for _ in pool.amap(square, [1], chunksize=-1):
            pass


async def test_amap_rejects_a_non_iterable_at_the_call(pool: ferrio.ThreadPool) -> None:
    # Used to raise only at the first `async for` step, far from the mistake.
    with pytest.raises(TypeError, match=r"ThreadPool.amap\(\) expected an iterable as its second argument, got 5 "):
        pool.amap(str, 5)  # type: ignore[arg-type]


async def test_coroutine_functions_run_on_the_workers_own_loop(pool: ferrio.ThreadPool) -> None:
    caller_loop = asyncio.get_running_loop()

    async def where(x: int) -> tuple[int, str, bool]:
        await asyncio.sleep(0)
        return x, threading.current_thread().name, asyncio.get_running_loop() is caller_loop

    x, name, same_loop = await pool.run(where, 1)
    assert (x, same_loop) == (1, False)
    assert name.startswith("test-pool-")
    assert pool.submit(where, 2).result(10)[0] == 2
    # The worker's loop is made once and reused.
    loops = {await pool.run(_loop_id) for _ in range(20)}
    assert len(loops) <= pool.stats().max_workers


async def _loop_id() -> int:
    return id(asyncio.get_running_loop())


async def test_cancelling_the_awaiting_task_cancels_the_coroutine_on_the_worker(pool: ferrio.ThreadPool) -> None:
    started, cancelled = threading.Event(), threading.Event()
    forever = until_cancelled(started, cancelled)

    task = asyncio.ensure_future(pool.run(forever))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(cancelled.wait, 10)


@pytest.mark.usefixtures("no_thread_leaks")
def test_workers_are_named_and_bounded_by_max_workers() -> None:
    pool = ferrio.ThreadPool(3, thread_name_prefix="bounded")
    lock = threading.Lock()
    running = peak = 0
    gate = threading.Event()
    names = set()

    def job() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            names.add(threading.current_thread().name)
        gate.wait(10)
        with lock:
            running -= 1

    futs = [pool.submit(job) for _ in range(9)]
    # Wait until 3 are running (bounded poll on a counter another thread updates).
    deadline = time.monotonic() + 10
    while pool.stats().running < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert pool.stats().running == 3
    assert pool.stats().queued == 6
    gate.set()
    concurrent.futures.wait(futs, timeout=10)
    pool.shutdown()
    assert peak == 3
    assert names <= {"bounded-0", "bounded-1", "bounded-2"}


@pytest.mark.usefixtures("no_thread_leaks")
def test_idle_workers_exit_and_the_pool_starts_new_ones() -> None:
    pool = ferrio.ThreadPool(2, thread_name_prefix="idle", idle_timeout=0.05)
    assert pool.submit(square, 2).result(10) == 4
    # Wait for the idle timeout to retire the worker (bounded poll: nothing to hand off on).
    deadline = time.monotonic() + 10
    while pool.stats().workers_alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.stats().workers_alive == 0
    assert pool.submit(square, 3).result(10) == 9
    pool.shutdown()


def test_idle_exit_racing_new_jobs_loses_no_job() -> None:
    # An idle timeout this short makes workers retire between almost every burst, so
    # submissions keep landing as workers decide to exit; every job must still run.
    pool = ferrio.ThreadPool(4, thread_name_prefix="race", idle_timeout=0.0005)
    futs = []
    for burst in range(200):
        futs += [pool.submit(square, burst) for _ in range(3)]
        time.sleep(0.0002 * (burst % 5))
    _, not_done = concurrent.futures.wait(futs, timeout=30)
    assert not not_done
    assert all(f.result() == square(i // 3) for i, f in enumerate(futs))
    pool.shutdown()


@pytest.mark.usefixtures("no_thread_leaks")
def test_shutdown_waits_and_runs_queued_work() -> None:
    pool = ferrio.ThreadPool(1, thread_name_prefix="sd")
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    rest = [pool.submit(square, i) for i in range(5)]
    threading.Timer(0.05, gate.set).start()
    pool.shutdown(wait=True)
    assert first.result(0) is True
    assert [f.result(0) for f in rest] == [0, 1, 4, 9, 16]
    assert pool.stats().workers_alive == 0


@pytest.mark.usefixtures("no_thread_leaks")
def test_shutdown_cancel_futures_cancels_queued_work() -> None:
    pool = ferrio.ThreadPool(1, thread_name_prefix="sdc")
    gate, started = threading.Event(), threading.Event()
    first = pool.submit(lambda: (started.set(), gate.wait(10)))
    assert started.wait(10)
    rest = [pool.submit(square, i) for i in range(5)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in rest)
    gate.set()
    pool.shutdown(wait=True)
    assert first.result(0) == (None, True)
    assert pool.stats().cancelled == 5


async def test_shutdown_cancel_futures_cancels_awaiting_tasks() -> None:
    pool = ferrio.ThreadPool(1, thread_name_prefix="sdca")
    gate, started = threading.Event(), threading.Event()
    first = asyncio.ensure_future(pool.run(lambda: (started.set(), gate.wait(10))))
    assert await asyncio.to_thread(started.wait, 10)
    queued = asyncio.ensure_future(pool.run(square, 2))
    await asyncio.sleep(0)
    pool.shutdown(wait=False, cancel_futures=True)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(queued, 5)
    gate.set()
    await first


@pytest.mark.usefixtures("no_thread_leaks")
def test_submit_after_shutdown_raises() -> None:
    pool = ferrio.ThreadPool(1)
    pool.shutdown()
    with pytest.raises(
        RuntimeError, match=r"ThreadPool.submit\(\) cannot schedule new work after the pool was shut down"
    ):
        pool.submit(square, 1)


async def test_run_after_shutdown_raises() -> None:
    pool = ferrio.ThreadPool(1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match=r"ThreadPool.run\(\) cannot schedule new work after the pool was shut down"):
        await pool.run(square, 1)


def test_shutdown_from_a_worker_of_the_same_pool_does_not_deadlock() -> None:
    pool = ferrio.ThreadPool(1)
    assert pool.submit(pool.shutdown, True).result(10) is None
    pool.shutdown(wait=True)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_workers": 0}, ValueError, "max_workers must be greater than 0, got 0"),
        ({"max_workers": -3}, ValueError, "max_workers must be greater than 0, got -3"),
        ({"max_workers": "8"}, TypeError, r"ThreadPool\(\) expected max_workers to be an int, got '8'"),
        ({"idle_timeout": -1}, ValueError, "idle_timeout must be a non-negative number of seconds, got -1"),
        ({"thread_name_prefix": 5}, TypeError, r"expected thread_name_prefix to be a str, got 5"),
        # A NUL used to pass here and panic at the first submit, when the first thread was named.
        (
            {"thread_name_prefix": "db\0x"},
            ValueError,
            r"ThreadPool\(\) expected thread_name_prefix without NUL characters, got \"db\\0x\"",
        ),
        (
            {"max_workers": 2**70},
            OverflowError,
            r"ThreadPool\(\) expected max_workers at most \d+, got 1180591620717411303424",
        ),
        ({"idle_timeout": float("nan")}, ValueError, "idle_timeout must be a non-negative number of seconds, got nan"),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        ferrio.ThreadPool(**kwargs)


def test_an_infinite_idle_timeout_keeps_workers_and_still_shuts_down() -> None:
    # 1e18 s fits a Duration but not an Instant: the idle deadline used to overflow (a panic).
    for idle in (math.inf, 1e18):
        p = ferrio.ThreadPool(2, idle_timeout=idle)
        assert p.submit(square, 4).result(10) == 16
        p.shutdown(wait=True)
        assert p.stats().workers_alive == 0


def _boom() -> None:
    raise PanicException("a job panicked")


def test_a_panic_in_a_job_reaches_its_future_and_the_worker_lives_on() -> None:
    # PyO3 turns a PanicException fetched from Python back into a Rust panic; it used to unwind
    # out of the worker, leaving the future pending forever and `running` stuck at 1.
    with ferrio.ThreadPool(1, thread_name_prefix="panicky") as p:
        futs = [p.submit(_boom) for _ in range(3)]
        for f in futs:
            with pytest.raises(PanicException, match="a job panicked"):
                f.result(timeout=10)
        assert p.submit(square, 3).result(timeout=10) == 9
        s = p.stats()
        assert (s.failed, s.completed, s.running, s.workers_alive) == (3, 1, 0, 1)


async def test_a_panic_in_a_job_reaches_the_awaiting_task(pool: ferrio.ThreadPool) -> None:
    with pytest.raises(PanicException, match="a job panicked"):
        await pool.run(_boom)
    assert await pool.run(square, 5) == 25


def test_submit_rejects_non_callables() -> None:
    with ferrio.ThreadPool(1) as p, pytest.raises(TypeError, match=r"ThreadPool.submit\(\) expected a callable"):
        p.submit("nope")  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_thread_leaks")
def test_stats_is_a_frozen_snapshot() -> None:
    with ferrio.ThreadPool(2, thread_name_prefix="stats") as p:
        for f in [p.submit(square, i) for i in range(10)] + [p.submit(int, "x")]:
            f.exception(10)
        s = p.stats()
    assert dataclasses.is_dataclass(s)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.completed = 0  # type: ignore[misc]
    assert (s.completed, s.failed, s.max_workers) == (10, 1, 2)
    assert s.run_time.count == 11
    assert 0 <= s.run_time.p50 <= s.run_time.p99 <= s.run_time.max
    assert "ferrio.ThreadPool" in repr(p)


async def test_async_with_waits_for_running_work_without_blocking_the_loop() -> None:
    gate = threading.Event()
    t = LoopTicker(0.001, until=5, then=gate.set)
    pool = ferrio.ThreadPool(1, thread_name_prefix="aw")
    async with pool:
        fut = pool.submit(gate.wait, 10)
    # The exit waited for the job, and the loop kept ticking meanwhile (the job needed it to).
    assert fut.result(0) is True
    assert pool.stats().workers_alive == 0
    t.cancel()


def test_install_hooks_names_a_hook_that_is_not_callable_and_keeps_the_installed_ones() -> None:
    with pytest.raises(TypeError, match=r"install_hooks\(\) expected worker_exiting to be a callable, got 3"):
        _ferrio.install_hooks(worker_started=print, worker_exiting=3, run_coroutine_function=print)
    pool = ferrio.ThreadPool(1, thread_name_prefix="hooked")
    try:
        # worker_started still names the thread, so the refused call replaced nothing.
        assert pool.submit(lambda: threading.current_thread().name).result(30) == "hooked-0"
    finally:
        pool.shutdown()
