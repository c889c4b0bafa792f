"""Process pools: ``ferrio.ProcessPool`` against ``ProcessPoolExecutor`` (forkserver),
``anyio.to_process`` and loky, warm and cold, and with workers that kill themselves."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import random
import signal
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import ferrio

from ._harness import Batches, LoopFactory, alternate, identity, noop, peer, results, tasks

#: ``call(fn, arg)`` awaits ``fn(arg)`` in a worker process of one contender's pool.
ProcessCall = Callable[[Callable[[Any], Any], Any], Awaitable[Any]]


def _die_if(i: int, doomed: frozenset[int]) -> int:
    if i in doomed:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


def _process_contenders(workers: int) -> tuple[dict[str, ProcessCall], Callable[[], None]]:
    """name -> call(fn, arg) for each process pool, and a function that shuts them all down."""
    fpool = ferrio.ProcessPool(workers, name="bench-process")
    ppe = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
    calls: dict[str, ProcessCall] = {
        "ferrio ProcessPool.run": lambda fn, x: fpool.run(fn, x),
        "run_in_executor(PPE)": lambda fn, x: asyncio.get_running_loop().run_in_executor(ppe, fn, x),
    }
    closers: list[Callable[[], object]] = [fpool.shutdown, ppe.shutdown]
    a_to_process = peer("anyio.to_process")
    if a_to_process is not None:
        to_process: ProcessCall = a_to_process.run_sync
        calls["anyio.to_process"] = to_process
    loky = peer("loky")
    if loky is not None:
        lpool: concurrent.futures.Executor = loky.get_reusable_executor(max_workers=workers)
        calls["loky"] = lambda fn, x: asyncio.get_running_loop().run_in_executor(lpool, fn, x)
        closers.append(lambda: lpool.shutdown(wait=True))

    def close() -> None:
        for c in closers:
            c()

    return calls, close


def _noops(call: ProcessCall) -> Callable[[int], Awaitable[Any]]:
    return lambda i: call(noop, i)


def warm(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int, mib: int) -> Batches:
    """Trivial calls with 8 in flight, and large arguments and results, on warm process pools."""
    workers = os.cpu_count() or 2
    calls, close = _process_contenders(workers)
    trips = 20 if n >= 1000 else 2
    small: dict[str, list[float]] = {k: [] for k in calls}
    large: dict[str, list[float]] = {k: [] for k in calls}
    try:
        for call in calls.values():  # warm: every worker started, imports done
            loop.run_until_complete(tasks(4 * workers, 2 * workers, _noops(call)))
        data = os.urandom(mib * 2**20)

        async def round_trips(call: ProcessCall) -> float:
            t0 = time.perf_counter()
            for _ in range(trips):
                out = await call(identity, data)
                assert len(out) == len(data)
            return trips * 2 * mib / (time.perf_counter() - t0)

        for r in range(rounds):
            for name, call in alternate(calls, r):
                small[name].append(n / loop.run_until_complete(tasks(n, 8, _noops(call))))
                large[name].append(loop.run_until_complete(round_trips(call)))
    finally:
        close()
        # anyio keeps a task per loop that stops its workers when cancelled, as asyncio.run would.
        leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in leftover:
            t.cancel()
        if leftover:  # (gather() of nothing would make its future on another loop, and hide the error)
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
    yield results(
        f"{n:,} x await noop in a worker process, 8 in flight, warm pools of {workers}",
        loop_name,
        small,
        "calls/s",
        True,
    ) + results(f"{mib} MiB bytes argument and result, {trips} round trips", loop_name, large, "MiB/s", True)


def start(loop_name: str, new_loop: LoopFactory, rounds: int) -> Batches:
    """Milliseconds from creating a 2-worker pool to its first result (start-up included), with
    the forkserver already running, as it is after any pool's first use."""
    loop = new_loop()

    async def ferrio_start() -> float:
        t0 = time.perf_counter()
        async with ferrio.ProcessPool(2, name="bench-start") as pool:
            await pool.run(noop, 1)
            elapsed = time.perf_counter() - t0
        return elapsed

    async def ppe_start(method: str) -> float:
        t0 = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as ppe:
            await asyncio.get_running_loop().run_in_executor(ppe, noop, 1)
            elapsed = time.perf_counter() - t0
        return elapsed

    contenders: dict[str, Callable[[], Awaitable[float]]] = {
        "ferrio ProcessPool (forkserver)": ferrio_start,
        "PPE (forkserver)": lambda: ppe_start("forkserver"),
    }
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    fork: list[float] = []
    try:
        loop.run_until_complete(ferrio_start())  # the forkserver starts once per interpreter: not timed
        for r in range(rounds):
            for name, make in alternate(contenders, r):
                samples[name].append(loop.run_until_complete(make()) * 1e3)
            with warnings.catch_warnings():  # 3.12+ warns that fork with threads running may deadlock
                warnings.simplefilter("ignore", DeprecationWarning)
                fork.append(loop.run_until_complete(ppe_start("fork")) * 1e3)
    finally:
        loop.close()
    samples["PPE (fork), for reference"] = fork
    yield results("cold start of a 2-worker pool to its first result", loop_name, samples, "ms", False)


def crashes(loop_name: str, new_loop: LoopFactory, rounds: int, n: int, kills: int) -> Batches:
    """``n`` calls, ``kills`` of which SIGKILL their own worker at random points in the stream."""
    workers = os.cpu_count() or 2
    doomed = frozenset(random.Random(0).sample(range(n), kills))

    async def ferrio_run() -> tuple[int, float]:
        async with ferrio.ProcessPool(workers, name="bench-crash") as pool:
            t0 = time.perf_counter()
            sem = asyncio.Semaphore(8)

            async def one(i: int) -> int:
                async with sem:
                    return await pool.run(_die_if, i, doomed)

            out = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
            elapsed = time.perf_counter() - t0
            assert await pool.run(noop, 1) == 1  # the pool stays up
        crashed = frozenset(i for i, r in enumerate(out) if isinstance(r, ferrio.WorkerCrashed))
        ok = sum(1 for i, r in enumerate(out) if r == i)
        if crashed != doomed or ok != n - kills:
            raise RuntimeError(f"calls {sorted(crashed ^ doomed)} failed wrongly: only the killed ones may fail")
        return ok, elapsed

    async def ppe_run() -> int:
        ppe = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        running = asyncio.get_running_loop()
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> int:
            async with sem:
                return await running.run_in_executor(ppe, _die_if, i, doomed)

        out = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        ppe.shutdown(wait=True, cancel_futures=True)
        return sum(1 for i, r in enumerate(out) if r == i)

    ok: dict[str, list[float]] = {"ferrio ProcessPool": [], "run_in_executor(PPE)": []}
    rate: dict[str, list[float]] = {"ferrio ProcessPool": []}
    loop = new_loop()
    try:
        for _ in range(rounds):
            good, elapsed = loop.run_until_complete(ferrio_run())
            ok["ferrio ProcessPool"].append(good)
            rate["ferrio ProcessPool"].append(n / elapsed)
            ok["run_in_executor(PPE)"].append(loop.run_until_complete(ppe_run()))
    finally:
        loop.close()
    w = f"{n:,} calls, {kills} of which SIGKILL their worker"
    yield results(f"{w}: calls that succeeded ({n - kills:,} possible)", loop_name, ok, "calls", True) + results(
        f"{w}: throughput, exactly the {kills} killed calls failing", loop_name, rate, "calls/s", True
    )
