"""Offloading to threads: ``ferrio.to_thread`` and the pools against ``asyncio.to_thread``,
``run_in_executor`` and anyio, and what a pool leaves behind (memory, fds, threads)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import statistics
import time

import ferrio

from ._harness import Batches, Call, LoopFactory, Result, fan, noop, peer, results, tasks


def _ceiling_call() -> Call:
    # Shaped like an offload call (a coroutine function awaiting a future), minus the offload.
    async def one(i: int) -> int:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        loop.call_soon(fut.set_result, i)
        return await fut

    return one


def _contenders(pool_tpe: concurrent.futures.ThreadPoolExecutor) -> dict[str, Call]:
    def executor(i: int) -> asyncio.Future[int]:
        return asyncio.get_running_loop().run_in_executor(pool_tpe, noop, i)

    c: dict[str, Call] = {
        "ceiling": _ceiling_call(),
        "ferrio.to_thread": lambda i: ferrio.to_thread(noop, i),
        "asyncio.to_thread": lambda i: asyncio.to_thread(noop, i),
        "run_in_executor(TPE)": executor,
    }
    anyio_to_thread = peer("anyio.to_thread")
    if anyio_to_thread is not None:
        run_sync = anyio_to_thread.run_sync
        c["anyio.to_thread"] = lambda i: run_sync(noop, i)
    return c


def offload(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> Batches:
    """``n`` awaits of a no-op, 64 in flight: a task per call, and 64 tasks awaiting in turn."""
    tpe = concurrent.futures.ThreadPoolExecutor()
    contenders = _contenders(tpe)
    try:
        for label, harness in (("a task per call", tasks), ("64 tasks awaiting in turn", fan)):
            samples: dict[str, list[float]] = {k: [] for k in contenders}
            for _ in range(rounds):
                for name, one in contenders.items():
                    samples[name].append(n / loop.run_until_complete(harness(n, 64, one)))
            yield results(f"{n:,} x await noop, 64 in flight, {label}", loop_name, samples, "awaits/s", True)
    finally:
        tpe.shutdown()


def bulk(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> Batches:
    """One bulk call over ``n`` items vs a gather of per-item offloads."""
    pool = ferrio.default_pool()

    async def amap() -> float:
        t0 = time.perf_counter()
        count = 0
        async for _ in pool.amap(noop, range(n)):
            count += 1
        assert count == n
        return time.perf_counter() - t0

    async def gather() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(asyncio.to_thread(noop, i) for i in range(n)))
        return time.perf_counter() - t0

    samples: dict[str, list[float]] = {"ferrio pool.amap": [], "gather(asyncio.to_thread)": []}
    for _ in range(rounds):
        samples["ferrio pool.amap"].append(n / loop.run_until_complete(amap()))
        samples["gather(asyncio.to_thread)"].append(n / loop.run_until_complete(gather()))
    yield results(f"map noop over {n:,} items", loop_name, samples, "calls/s", True)


def latency(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> Batches:
    """Median latency of ``n`` sequential awaits of a no-op."""
    tpe = concurrent.futures.ThreadPoolExecutor()
    contenders = _contenders(tpe)
    del contenders["ceiling"]
    samples: dict[str, list[float]] = {k: [] for k in contenders}

    async def seq(one: Call) -> float:
        lat: list[float] = []
        for i in range(n):
            t0 = time.perf_counter()
            await one(i)
            lat.append(time.perf_counter() - t0)
        return statistics.median(lat)

    try:
        for _ in range(rounds):
            for name, one in contenders.items():
                samples[name].append(loop.run_until_complete(seq(one)) * 1e6)
    finally:
        tpe.shutdown()
    yield results(f"{n:,} sequential awaits, median latency", loop_name, samples, "us", False)


def sleep(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> Batches:
    """``n`` x time.sleep(2 ms), 64 in flight on 64 workers: wall time against the ideal."""
    ideal = n * 0.002 / 64
    fpool = ferrio.ThreadPool(64, thread_name_prefix="bench-sleep")
    tpe = concurrent.futures.ThreadPoolExecutor(64)
    samples: dict[str, list[float]] = {"ferrio ThreadPool.run": [], "run_in_executor(TPE)": []}

    def sleep_2ms(_: int) -> None:
        time.sleep(0.002)

    def in_tpe(i: int) -> asyncio.Future[None]:
        return asyncio.get_running_loop().run_in_executor(tpe, sleep_2ms, i)

    try:
        for _ in range(rounds):
            samples["ferrio ThreadPool.run"].append(
                loop.run_until_complete(fan(n, 64, lambda i: fpool.run(sleep_2ms, i))) / ideal
            )
            samples["run_in_executor(TPE)"].append(loop.run_until_complete(fan(n, 64, in_tpe)) / ideal)
    finally:
        fpool.shutdown()
        tpe.shutdown()
    yield results(
        f"{n:,} x sleep(2 ms), 64 in flight, 64 workers: wall / ideal ({ideal * 1e3:.1f} ms)",
        loop_name,
        samples,
        "x ideal",
        False,
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads_named(prefix: str) -> int:
    """OS threads of this process whose name starts with ``prefix`` (Linux names: 15 chars)."""
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as fh:
                count += fh.read().startswith(prefix[:15])
        except OSError:  # the thread exited meanwhile
            pass
    return count


def memory(loop_name: str, new_loop: LoopFactory, n: int) -> Batches:
    """RSS growth over ``n`` no-op calls through a fresh pool; threads and fds left after it."""
    gc.collect()
    fds_before = _fds()
    loop = new_loop()
    pool = ferrio.ThreadPool(8, thread_name_prefix="bench-mem")

    async def run(k: int) -> None:
        async for _ in pool.amap(noop, range(k // 2)):
            pass
        await fan(k // 2, 64, lambda i: pool.run(noop, i))

    loop.run_until_complete(run(min(n, 20_000)))  # warm up: allocator pools, histograms, caches
    gc.collect()
    rss0 = _rss_mb()
    loop.run_until_complete(run(n))
    gc.collect()
    grown = _rss_mb() - rss0
    pool.shutdown(wait=True)
    loop.close()
    del loop
    gc.collect()
    w = f"{n:,} no-op calls through one pool"
    yield [
        Result(f"{w}: RSS growth", loop_name, "ferrio", grown, "MB", False),
        Result(f"{w}: fds left after shutdown", loop_name, "ferrio", _fds() - fds_before, "fds", False),
        Result(f"{w}: threads left after shutdown", loop_name, "ferrio", _threads_named("bench-mem"), "threads", False),
    ]
