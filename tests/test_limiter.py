"""ferrio.CapacityLimiter: bounds across pools, FIFO admission, cancellation, options."""

from __future__ import annotations

import asyncio
import math
import threading

import ferrio
import pytest


async def test_limiter_bounds_concurrency_across_pools_under_load() -> None:
    limiter = ferrio.CapacityLimiter(3)
    pools = [ferrio.ThreadPool(8, thread_name_prefix=f"lim{i}") for i in range(2)]
    lock = threading.Lock()
    running = peak = 0
    release = threading.Event()
    three_in = threading.Event()

    def job() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == 3:
                three_in.set()
        release.wait(10)
        with lock:
            running -= 1

    tasks = [asyncio.ensure_future(pools[i % 2].run(job, limiter=limiter)) for i in range(40)]
    assert await asyncio.to_thread(three_in.wait, 10)
    s = limiter.statistics()
    assert (s.borrowed_tokens, s.tasks_waiting) == (3, 37)
    release.set()
    await asyncio.gather(*tasks)
    for p in pools:
        p.shutdown()
    assert peak == 3
    assert limiter.statistics() == ferrio.LimiterStatistics(3, 0, 0)


async def test_growing_total_tokens_admits_waiters() -> None:
    limiter = ferrio.CapacityLimiter(1)
    both_in = threading.Barrier(2, timeout=10)
    tasks = [asyncio.ensure_future(ferrio.to_thread(both_in.wait, limiter=limiter)) for _ in range(2)]
    await asyncio.sleep(0)
    limiter.total_tokens = 2  # without this the barrier could never be passed
    await asyncio.gather(*tasks)
    assert limiter.total_tokens == 2


async def test_a_cancelled_waiter_never_runs_and_leaks_no_token() -> None:
    limiter = ferrio.CapacityLimiter(1)
    gate, started, ran = threading.Event(), threading.Event(), threading.Event()
    holder = asyncio.ensure_future(ferrio.to_thread(lambda: (started.set(), gate.wait(10)), limiter=limiter))
    assert await asyncio.to_thread(started.wait, 10)
    waiter = asyncio.ensure_future(ferrio.to_thread(ran.set, limiter=limiter))
    await asyncio.sleep(0)
    waiter.cancel()
    gate.set()
    await holder
    assert await ferrio.to_thread(lambda: 7, limiter=limiter) == 7
    assert not ran.is_set()
    assert limiter.statistics() == ferrio.LimiterStatistics(1, 0, 0)


def test_infinite_tokens() -> None:
    assert ferrio.CapacityLimiter(math.inf).total_tokens == math.inf


@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        (0, ValueError, r"CapacityLimiter\(\) total_tokens must be at least 1, got 0"),
        (-2, ValueError, "must be at least 1, got -2"),
        ("3", TypeError, r"total_tokens must be an int or math.inf, got '3'"),
        (1.5, TypeError, r"total_tokens must be an int or math.inf, got 1.5"),
    ],
)
def test_bad_total_tokens(value: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        ferrio.CapacityLimiter(value)  # type: ignore[arg-type]
    limiter = ferrio.CapacityLimiter(1)
    with pytest.raises(exc):
        limiter.total_tokens = value  # type: ignore[assignment]


def test_infinite_total_is_the_constant_rust_exports() -> None:
    from ferrio import _ferrio

    limiter = ferrio.CapacityLimiter(math.inf)
    assert limiter._core.counts().total_tokens == _ferrio.INFINITE_TOKENS
    assert limiter.total_tokens == math.inf
    assert limiter.statistics().total_tokens == math.inf
