"""Queues and locks shared by threads and tasks: ``ferrio.Queue`` against culsans, janus and
aiologic (and the ``run_in_executor(None, q.get)`` pattern), ``ferrio.Lock`` against the stdlib's
locks and aiologic's."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import ferrio

from ._harness import Batches, peer, results


@dataclass(frozen=True)
class _QueueKind:
    """How one library's queue is made and used from each side."""

    make: Callable[[int], Any]  # maxsize (0: unbounded) -> queue
    sync_put: Callable[[Any], Callable[[int], object]]
    async_get: Callable[[Any], Callable[[], Awaitable[object]]]
    async_put: Callable[[Any], Callable[[int], Awaitable[object]]]
    sync_get: Callable[[Any], Callable[[], object]]


def _two_faced(make: Callable[[int], Any]) -> _QueueKind:
    """A janus-style queue: a ``sync_q`` and an ``async_q`` face."""
    return _QueueKind(
        make,
        lambda q: q.sync_q.put,
        lambda q: q.async_q.get,
        lambda q: q.async_q.put,
        lambda q: q.sync_q.get,
    )


def _queue_contenders() -> dict[str, _QueueKind]:
    """Each installed queue, by name, ferrio's first."""
    c = {"ferrio.Queue": _two_faced(lambda m: ferrio.Queue[int](m))}
    for name in ("culsans", "janus"):
        mod = peer(name)
        if mod is not None:
            c[name] = _two_faced(mod.Queue)
    aiologic = peer("aiologic")
    if aiologic is not None:
        aiologic_queue = aiologic.Queue
        c["aiologic"] = _QueueKind(
            lambda m: aiologic_queue(m or None),
            lambda q: q.green_put,
            lambda q: q.async_get,
            lambda q: q.async_put,
            lambda q: q.green_get,
        )
    return c


async def _thread_to_task(kind: _QueueKind, maxsize: int, n: int) -> float:
    q = kind.make(maxsize)
    put = kind.sync_put(q)

    def produce() -> None:
        for i in range(n):
            put(i)

    t = threading.Thread(target=produce)
    t0 = time.perf_counter()
    t.start()
    get = kind.async_get(q)
    for _ in range(n):
        await get()
    elapsed = time.perf_counter() - t0
    await asyncio.to_thread(t.join)
    return n / elapsed


async def _task_to_thread(kind: _QueueKind, maxsize: int, n: int) -> float:
    q = kind.make(maxsize)
    get = kind.sync_get(q)

    def consume() -> None:
        for _ in range(n):
            get()

    t = threading.Thread(target=consume)
    t0 = time.perf_counter()
    t.start()
    put = kind.async_put(q)
    for i in range(n):
        await put(i)
    await asyncio.to_thread(t.join)
    return n / (time.perf_counter() - t0)


def queues(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> Batches:
    """One thread puts ``n`` ints and one task gets them, and the reverse; bounded and not."""
    contenders = _queue_contenders()
    for maxsize in (64, 0):
        for direction in ("thread puts, task gets", "task puts, thread gets"):
            samples: dict[str, list[float]] = {k: [] for k in contenders}
            for _ in range(rounds):
                for name, kind in contenders.items():
                    k = n if name == "ferrio.Queue" else max(1, n // 4)  # the peers are slower: fewer items
                    if direction.startswith("thread"):
                        rate = loop.run_until_complete(_thread_to_task(kind, maxsize, k))
                    else:
                        rate = loop.run_until_complete(_task_to_thread(kind, maxsize, k))
                    samples[name].append(rate)
            bound = f"maxsize {maxsize}" if maxsize else "unbounded"
            yield results(f"queue, {direction}, {bound}", loop_name, samples, "items/s", True)
    # The documents' pattern: a sync producer, and the consumer parking a pool thread per item.
    m = max(1, n // 40)
    samples = {"ferrio.Queue": [], "run_in_executor(None, queue.Queue.get)": []}

    async def executor_pattern() -> float:
        q: queue.Queue[int] = queue.Queue()

        def produce() -> None:
            for i in range(m):
                q.put(i)

        t = threading.Thread(target=produce)
        t0 = time.perf_counter()
        t.start()
        running = asyncio.get_running_loop()
        for _ in range(m):
            await running.run_in_executor(None, q.get)
        rate = m / (time.perf_counter() - t0)
        await asyncio.to_thread(t.join)
        return rate

    for _ in range(rounds):
        samples["ferrio.Queue"].append(loop.run_until_complete(_thread_to_task(contenders["ferrio.Queue"], 0, m * 10)))
        samples["run_in_executor(None, queue.Queue.get)"].append(loop.run_until_complete(executor_pattern()))
    yield results("sync producer, async consumer (the documents' pattern)", loop_name, samples, "items/s", True)


def locks(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> Batches:
    """Uncontended lock costs against the stdlib, and a contended mix of threads and tasks."""
    flock = ferrio.Lock()

    async def async_with(lock: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            async with lock:
                pass
        return (time.perf_counter() - t0) / n * 1e9

    def sync_with(lock: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with lock:
                pass
        return (time.perf_counter() - t0) / n * 1e9

    samples: dict[str, list[float]] = {"ferrio.Lock": [], "asyncio.Lock": []}
    ssamples: dict[str, list[float]] = {"ferrio.Lock": [], "threading.Lock": []}
    for _ in range(rounds):
        samples["ferrio.Lock"].append(loop.run_until_complete(async_with(flock)))
        samples["asyncio.Lock"].append(loop.run_until_complete(async_with(asyncio.Lock())))
        ssamples["ferrio.Lock"].append(sync_with(flock))
        ssamples["threading.Lock"].append(sync_with(threading.Lock()))
    yield results("uncontended `async with lock`", loop_name, samples, "ns", False) + results(
        "uncontended `with lock` in a thread", loop_name, ssamples, "ns", False
    )

    # 4 threads and 4 tasks share one lock: n acquisitions in all.
    per = max(1, n // 8)

    def contended(lock: Any) -> float:
        async def main() -> float:
            def worker() -> None:
                for _ in range(per):
                    with lock:
                        pass

            async def task() -> None:
                for _ in range(per):
                    async with lock:
                        await asyncio.sleep(0)

            threads = [threading.Thread(target=worker) for _ in range(4)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            await asyncio.gather(*(task() for _ in range(4)))
            for t in threads:
                await asyncio.to_thread(t.join)
            return per * 8 / (time.perf_counter() - t0)

        return loop.run_until_complete(main())

    csamples: dict[str, list[float]] = {"ferrio.Lock": []}
    aiologic = peer("aiologic")
    if aiologic is not None:
        csamples["aiologic.Lock"] = []
    for _ in range(rounds):
        csamples["ferrio.Lock"].append(contended(ferrio.Lock()))
        if aiologic is not None:
            csamples["aiologic.Lock"].append(contended(aiologic.Lock()))
    yield results(f"4 threads + 4 tasks, {per * 8:,} acquisitions", loop_name, csamples, "acquisitions/s", True)
