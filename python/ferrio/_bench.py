"""The side-by-side benchmark: ferrio against the stdlib and the peers, in one process.

Each workload runs every contender once per round, rounds interleaved so drift on a noisy
machine hits everyone alike, and reports the median round. Every contender's throughput is
measured inside one running loop (never ``asyncio.run`` per iteration, which would time loop
start-up). The *ceiling* contender awaits futures the loop resolves itself
(``loop.call_soon(fut.set_result, x)``): the most any offload can reach through asyncio's own
tasks and futures.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import importlib
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import ferrio


def noop(x: int = 0) -> int:
    return x


@dataclass
class Result:
    workload: str
    loop: str
    contender: str
    value: float
    unit: str
    higher_is_better: bool
    samples: list[float] = field(default_factory=list)


def _results(
    workload: str, loop_name: str, samples: dict[str, list[float]], unit: str, higher_is_better: bool
) -> list[Result]:
    """One Result per contender: the median of its rounds."""
    return [Result(workload, loop_name, k, statistics.median(v), unit, higher_is_better, v) for k, v in samples.items()]


def _peer(name: str) -> Any:
    """The module ``name`` (say ``"anyio.to_thread"``) if that peer is installed, else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _loop_factories(which: str) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {}
    if which in ("asyncio", "both"):
        loops["asyncio"] = asyncio.new_event_loop
    if which in ("uvloop", "both"):
        uvloop = _peer("uvloop")
        if uvloop is None:
            print("uvloop is not installed: measuring on asyncio only", file=sys.stderr)
        else:
            loops["uvloop"] = uvloop.new_event_loop
    return loops


async def _tasks(n: int, in_flight: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Seconds for ``n`` calls of ``one(i)``, each in a task of its own, ``in_flight`` at a time
    (the shape of a ``gather`` or a ``TaskGroup`` bounded by a semaphore, minus the semaphore)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    it = iter(range(n))
    remaining = n

    def start() -> None:
        i = next(it, None)
        if i is not None:
            asyncio.ensure_future(one(i), loop=loop).add_done_callback(finished)

    def finished(task: asyncio.Task[Any]) -> None:
        nonlocal remaining
        if done.done():
            return
        if task.cancelled() or task.exception() is not None:  # a broken contender ends the run
            done.set_exception(task.exception() or asyncio.CancelledError())
            return
        remaining -= 1
        if remaining == 0:
            done.set_result(None)
        else:
            start()

    t0 = time.perf_counter()
    for _ in range(in_flight):
        start()
    await done
    return time.perf_counter() - t0


async def _fan(n: int, in_flight: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Seconds for ``n`` awaits of ``one(i)`` by ``in_flight`` tasks, each awaiting in turn."""
    per = n // in_flight

    async def worker(k: int) -> None:
        for i in range(per):
            await one(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(in_flight)))
    return time.perf_counter() - t0


def _ceiling_call() -> Callable[[int], Awaitable[Any]]:
    # Shaped like an offload call (a coroutine function awaiting a future), minus the offload.
    async def one(i: int) -> int:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_soon(fut.set_result, i)
        return await fut

    return one


def _contenders(pool_tpe: concurrent.futures.ThreadPoolExecutor) -> dict[str, Callable[[int], Awaitable[Any]]]:
    def executor(i: int) -> Awaitable[Any]:
        return asyncio.get_running_loop().run_in_executor(pool_tpe, noop, i)

    c: dict[str, Callable[[int], Awaitable[Any]]] = {
        "ceiling": _ceiling_call(),
        "ferrio.to_thread": lambda i: ferrio.to_thread(noop, i),
        "asyncio.to_thread": lambda i: asyncio.to_thread(noop, i),
        "run_in_executor(TPE)": executor,
    }
    anyio_to_thread = _peer("anyio.to_thread")
    if anyio_to_thread is not None:
        c["anyio.to_thread"] = lambda i: anyio_to_thread.run_sync(noop, i)
    return c


def bench_offload(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> list[Result]:
    """``n`` awaits of a no-op, 64 in flight: a task per call, and 64 tasks awaiting in turn."""
    tpe = concurrent.futures.ThreadPoolExecutor()
    contenders = _contenders(tpe)
    results = []
    for label, harness in (("a task per call", _tasks), ("64 tasks awaiting in turn", _fan)):
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(rounds):
            for name, one in contenders.items():
                samples[name].append(n / loop.run_until_complete(harness(n, 64, one)))
        results += _results(f"{n:,} x await noop, 64 in flight, {label}", loop_name, samples, "awaits/s", True)
    tpe.shutdown()
    return results


def bench_bulk(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> list[Result]:
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
    return _results(f"map noop over {n:,} items", loop_name, samples, "calls/s", True)


def bench_latency(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> list[Result]:
    """Median latency of ``n`` sequential awaits of a no-op."""
    tpe = concurrent.futures.ThreadPoolExecutor()
    contenders = _contenders(tpe)
    del contenders["ceiling"]
    samples: dict[str, list[float]] = {k: [] for k in contenders}

    async def seq(one: Callable[[int], Awaitable[Any]]) -> float:
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            await one(i)
            lat.append(time.perf_counter() - t0)
        return statistics.median(lat)

    for _ in range(rounds):
        for name, one in contenders.items():
            samples[name].append(loop.run_until_complete(seq(one)) * 1e6)
    tpe.shutdown()
    return _results(f"{n:,} sequential awaits, median latency", loop_name, samples, "us", False)


def bench_sleep(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> list[Result]:
    """``n`` x time.sleep(2 ms), 64 in flight on 64 workers: wall time against the ideal."""
    ideal = n * 0.002 / 64
    fpool = ferrio.ThreadPool(64, thread_name_prefix="bench-sleep")
    tpe = concurrent.futures.ThreadPoolExecutor(64)
    samples: dict[str, list[float]] = {"ferrio ThreadPool.run": [], "run_in_executor(TPE)": []}

    def sleep(_: int) -> None:
        time.sleep(0.002)

    for _ in range(rounds):
        samples["ferrio ThreadPool.run"].append(
            loop.run_until_complete(_fan(n, 64, lambda i: fpool.run(sleep, i))) / ideal
        )
        samples["run_in_executor(TPE)"].append(
            loop.run_until_complete(_fan(n, 64, lambda i: asyncio.get_running_loop().run_in_executor(tpe, sleep, i)))
            / ideal
        )
    fpool.shutdown()
    tpe.shutdown()
    return _results(
        f"{n:,} x sleep(2 ms), 64 in flight, 64 workers: wall / ideal ({ideal * 1e3:.1f} ms)",
        loop_name,
        samples,
        "x ideal",
        False,
    )


async def trivial(x: int = 0) -> int:
    return x


def _per_call_us(n: int, fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def bench_run_from_sync(rounds: int, n: int) -> list[Result]:
    """``n`` runs of a trivial coroutine from plain sync code (no loop running in this thread)."""
    contenders: dict[str, Callable[[], Any]] = {
        "ferrio.run": lambda: ferrio.run(trivial()),
        "asyncio.run": lambda: asyncio.run(trivial()),
    }
    runner = None
    if sys.version_info >= (3, 11):
        runner = asyncio.Runner()
        contenders["reused asyncio.Runner"] = lambda: runner.run(trivial())
    asgiref_sync = _peer("asgiref.sync")
    if asgiref_sync is not None:
        contenders["asgiref async_to_sync"] = lambda: asgiref_sync.async_to_sync(trivial)()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            # asyncio.run and asgiref start a loop or a thread per call: fewer calls keep the run short.
            k = n if name in ("ferrio.run", "reused asyncio.Runner") else max(1, n // 10)
            samples[name].append(_per_call_us(k, fn))
    if runner is not None:
        runner.close()
    return _results(f"{n:,} x run(trivial()) from sync code, per call", "asyncio", samples, "us", False)


def bench_from_thread(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> list[Result]:
    """``n`` calls from a worker thread back into the loop, and through a blocking portal."""

    def noop_sync() -> None:
        return None

    def ferrio_run() -> float:
        return _per_call_us(n, lambda: ferrio.from_thread.run(trivial))

    def ferrio_run_sync() -> float:
        return _per_call_us(n, lambda: ferrio.from_thread.run_sync(noop_sync))

    cases: dict[str, dict[str, Callable[[], Awaitable[float]]]] = {
        "from_thread.run(trivial) from a worker": {"ferrio": lambda: ferrio.to_thread(ferrio_run)},
        "from_thread.run_sync(noop) from a worker": {"ferrio": lambda: ferrio.to_thread(ferrio_run_sync)},
    }
    a_to, a_from = _peer("anyio.to_thread"), _peer("anyio.from_thread")
    if a_to is not None and a_from is not None:
        cases["from_thread.run(trivial) from a worker"]["anyio"] = lambda: a_to.run_sync(
            lambda: _per_call_us(n, lambda: a_from.run(trivial))
        )
        cases["from_thread.run_sync(noop) from a worker"]["anyio"] = lambda: a_to.run_sync(
            lambda: _per_call_us(n, lambda: a_from.run_sync(noop_sync))
        )
    results = []
    for workload, contenders in cases.items():
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(rounds):
            for name, make in contenders.items():
                samples[name].append(loop.run_until_complete(make()))
        results += _results(f"{n:,} x {workload}, per call", loop_name, samples, "us", False)
    return results


def bench_portal(rounds: int, n: int) -> list[Result]:
    """``n`` calls of a trivial coroutine through a blocking portal."""
    samples: dict[str, list[float]] = {"ferrio portal.call": []}
    a_from = _peer("anyio.from_thread")
    if a_from is not None:
        samples["anyio portal.call"] = []
    with contextlib.ExitStack() as stack:
        fp = stack.enter_context(ferrio.start_blocking_portal())
        ap = stack.enter_context(a_from.start_blocking_portal()) if a_from is not None else None
        for _ in range(rounds):
            samples["ferrio portal.call"].append(_per_call_us(n, lambda: fp.call(trivial)))
            if ap is not None:
                samples["anyio portal.call"].append(_per_call_us(n, lambda: ap.call(trivial)))
    return _results(f"{n:,} x portal.call(trivial), per call", "asyncio", samples, "us", False)


def _queue_contenders() -> dict[str, tuple[Callable[[int], Any], ...]]:
    """name -> (make(maxsize), sync put, async get, async put, sync get) for each installed queue."""
    c: dict[str, tuple[Callable[[int], Any], ...]] = {
        "ferrio.Queue": (
            ferrio.Queue,
            lambda q: q.sync_q.put,
            lambda q: q.async_q.get,
            lambda q: q.async_q.put,
            lambda q: q.sync_q.get,
        )
    }
    for name in ("culsans", "janus"):
        mod = _peer(name)
        if mod is None:
            continue
        c[name] = (
            mod.Queue,
            lambda q: q.sync_q.put,
            lambda q: q.async_q.get,
            lambda q: q.async_q.put,
            lambda q: q.sync_q.get,
        )
    aiologic = _peer("aiologic")
    if aiologic is not None:
        c["aiologic"] = (
            lambda m: aiologic.Queue(m or None),
            lambda q: q.green_put,
            lambda q: q.async_get,
            lambda q: q.async_put,
            lambda q: q.green_get,
        )
    return c


async def _thread_to_task(make: Callable[[int], Any], maxsize: int, n: int, sput: Any, aget: Any) -> float:
    q = make(maxsize)
    put = sput(q)

    def produce() -> None:
        for i in range(n):
            put(i)

    t = threading.Thread(target=produce)
    t0 = time.perf_counter()
    t.start()
    get = aget(q)
    for _ in range(n):
        await get()
    elapsed = time.perf_counter() - t0
    await asyncio.to_thread(t.join)
    return n / elapsed


async def _task_to_thread(make: Callable[[int], Any], maxsize: int, n: int, aput: Any, sget: Any) -> float:
    q = make(maxsize)
    get = sget(q)

    def consume() -> None:
        for _ in range(n):
            get()

    t = threading.Thread(target=consume)
    t0 = time.perf_counter()
    t.start()
    put = aput(q)
    for i in range(n):
        await put(i)
    await asyncio.to_thread(t.join)
    return n / (time.perf_counter() - t0)


def bench_queues(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> list[Result]:
    """One thread puts ``n`` ints and one task gets them, and the reverse; bounded and not."""
    contenders = _queue_contenders()
    results = []
    for maxsize in (64, 0):
        for direction in ("thread puts, task gets", "task puts, thread gets"):
            samples: dict[str, list[float]] = {k: [] for k in contenders}
            for _ in range(rounds):
                for name, (make, sput, aget, aput, sget) in contenders.items():
                    k = n if name == "ferrio.Queue" else max(1, n // 4)  # the peers are slower: fewer items
                    if direction.startswith("thread"):
                        rate = loop.run_until_complete(_thread_to_task(make, maxsize, k, sput, aget))
                    else:
                        rate = loop.run_until_complete(_task_to_thread(make, maxsize, k, aput, sget))
                    samples[name].append(rate)
            bound = f"maxsize {maxsize}" if maxsize else "unbounded"
            results += _results(f"queue, {direction}, {bound}", loop_name, samples, "items/s", True)
    # The documents' pattern: a sync producer, and the consumer parking a pool thread per item.
    m = max(1, n // 40)
    samples = {"ferrio.Queue": [], "run_in_executor(None, queue.Queue.get)": []}

    async def executor_pattern() -> float:
        import queue as _queue

        q: _queue.Queue[int] = _queue.Queue()

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
        samples["ferrio.Queue"].append(
            loop.run_until_complete(_thread_to_task(ferrio.Queue, 0, m * 10, *contenders["ferrio.Queue"][1:3]))
        )
        samples["run_in_executor(None, queue.Queue.get)"].append(loop.run_until_complete(executor_pattern()))
    results += _results("sync producer, async consumer (the documents' pattern)", loop_name, samples, "items/s", True)
    return results


def bench_locks(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> list[Result]:
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
    results = _results("uncontended `async with lock`", loop_name, samples, "ns", False)
    results += _results("uncontended `with lock` in a thread", loop_name, ssamples, "ns", False)

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
    aiologic = _peer("aiologic")
    if aiologic is not None:
        csamples["aiologic.Lock"] = []
    for _ in range(rounds):
        csamples["ferrio.Lock"].append(contended(ferrio.Lock()))
        if aiologic is not None:
            csamples["aiologic.Lock"].append(contended(aiologic.Lock()))
    results += _results(f"4 threads + 4 tasks, {per * 8:,} acquisitions", loop_name, csamples, "acquisitions/s", True)
    return results


def _alternate(contenders: dict[str, Any], round_: int) -> list[tuple[str, Any]]:
    """The contenders in order on even rounds and reversed on odd ones: nobody always goes first."""
    items = list(contenders.items())
    return items if round_ % 2 == 0 else items[::-1]


def _settle() -> None:
    """Untimed: write back dirty pages, so no contender pays for the previous one's writes."""
    if hasattr(os, "sync"):
        os.sync()


def bench_files(rounds: int, lines: int, files: int, big_mib: int) -> list[Result]:
    """Line iteration, many small files, and large sequential reads and writes, against plain sync
    code and the installed async file libraries. Runs on asyncio, in a temporary directory."""
    import tempfile

    peers = {name: mod for name in ("aiofiles", "aiofile", "anyio") if (mod := _peer(name)) is not None}
    results: list[Result] = []
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory(prefix="ferrio-bench-") as tmp:
        text = os.path.join(tmp, "lines.txt")
        with open(text, "w") as fh:
            fh.writelines(f"{i:08d} {'x' * 60}\n" for i in range(lines))
        small = [os.path.join(tmp, f"small-{i}.bin") for i in range(files)]
        for p in small:
            with open(p, "wb") as fh:
                fh.write(os.urandom(4096))
        big = os.path.join(tmp, "big.bin")
        with open(big, "wb") as fh:
            fh.truncate(big_mib * 2**20)

        # 1. iterate lines
        def sync_lines() -> float:
            t0 = time.perf_counter()
            with open(text) as fh:
                for _ in fh:
                    pass
            return time.perf_counter() - t0

        # How each contender opens a file: a callable returning an async context manager.
        @contextlib.asynccontextmanager
        async def anyio_open(path: str, mode: str = "r") -> Any:
            async with await peers["anyio"].open_file(path, mode) as fh:
                yield fh

        openers: dict[str, Callable[..., Any]] = {"ferrio.open_file": ferrio.open_file}
        if "aiofiles" in peers:
            openers["aiofiles"] = peers["aiofiles"].open
        if "anyio" in peers:
            openers["anyio"] = anyio_open
        if "aiofile" in peers:
            openers["aiofile"] = peers["aiofile"].async_open

        async def timed_lines(opener: Callable[..., Any]) -> float:
            t0 = time.perf_counter()
            async with opener(text) as fh:
                async for _ in fh:
                    pass
            return time.perf_counter() - t0

        runs: dict[str, Callable[[], float]] = {"plain sync": sync_lines}
        for name, opener in openers.items():
            runs[name] = lambda opener=opener: loop.run_until_complete(timed_lines(opener))
        slow = {"aiofiles", "anyio", "aiofile"}
        samples: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(rounds):
            for name, fn in _alternate(runs, r):
                if name in slow and r > 0:
                    continue  # the peers take seconds per run: one round is enough to show it
                _settle()
                samples[name].append(fn() * 1e3)
        results += _results(f"iterate the lines of a {lines:,}-line file", "asyncio", samples, "ms", False)

        # 2. many small files, 64 in flight; 3. read_files
        async def bounded(read_one: Callable[[str], Awaitable[bytes]]) -> float:
            sem = asyncio.Semaphore(64)

            async def one(p: str) -> None:
                async with sem:
                    await read_one(p)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(p) for p in small))
            return files / (time.perf_counter() - t0)

        def reader(opener: Callable[..., Any]) -> Callable[[str], Awaitable[bytes]]:
            async def read_one(p: str) -> bytes:
                async with opener(p, "rb") as fh:
                    return await fh.read()

            return read_one

        def sync_loop() -> float:
            # The same result read_files() returns: every file's bytes, in a list.
            t0 = time.perf_counter()
            contents = []
            for p in small:
                with open(p, "rb") as fh:
                    contents.append(fh.read())
            return files / (time.perf_counter() - t0)

        async def with_read_files() -> float:
            t0 = time.perf_counter()
            await ferrio.read_files(small)
            return files / (time.perf_counter() - t0)

        readers = {name: reader(opener) for name, opener in openers.items()}
        samples = {k: [] for k in readers}
        samples2: dict[str, list[float]] = {"ferrio.read_files": [], "plain sync loop": []}
        for r in range(rounds):
            for name, one in _alternate(readers, r):
                _settle()
                samples[name].append(loop.run_until_complete(bounded(one)))
            at_once = {
                "ferrio.read_files": lambda: loop.run_until_complete(with_read_files()),
                "plain sync loop": sync_loop,
            }
            for name, fn in _alternate(at_once, r):
                _settle()
                samples2[name].append(fn())
        results += _results(f"read {files:,} files of 4 KiB, 64 in flight", "asyncio", samples, "files/s", True)
        results += _results(f"read the same {files:,} files at once", "asyncio", samples2, "files/s", True)

        # 4./5. large sequential reads and writes in 64 KiB chunks
        chunk = 64 * 1024
        payload = os.urandom(chunk)
        count = big_mib * 2**20 // chunk

        def sync_read() -> float:
            t0 = time.perf_counter()
            with open(big, "rb") as fh:
                while fh.read(chunk):
                    pass
            return big_mib / (time.perf_counter() - t0)

        async def ferrio_read() -> float:
            t0 = time.perf_counter()
            async with ferrio.open_file(big, "rb") as fh:
                while await fh.read(chunk):
                    pass
            return big_mib / (time.perf_counter() - t0)

        out = os.path.join(tmp, "out.bin")

        def sync_write() -> float:
            t0 = time.perf_counter()
            with open(out, "wb") as fh:
                for _ in range(count):
                    fh.write(payload)
            return big_mib / (time.perf_counter() - t0)

        async def ferrio_write() -> float:
            t0 = time.perf_counter()
            async with ferrio.open_file(out, "wb") as fh:
                for _ in range(count):
                    await fh.write(payload)
            return big_mib / (time.perf_counter() - t0)

        rs: dict[str, list[float]] = {"ferrio.open_file": [], "plain sync": []}
        ws: dict[str, list[float]] = {"ferrio.open_file": [], "plain sync": []}
        reads = {"ferrio.open_file": lambda: loop.run_until_complete(ferrio_read()), "plain sync": sync_read}
        writes = {"ferrio.open_file": lambda: loop.run_until_complete(ferrio_write()), "plain sync": sync_write}
        for r in range(rounds):
            for name, fn in _alternate(reads, r):
                _settle()
                rs[name].append(fn())
            for name, fn in _alternate(writes, r):
                _settle()
                ws[name].append(fn())
        results += _results(f"read a {big_mib} MiB file in 64 KiB chunks", "asyncio", rs, "MiB/s", True)
        results += _results(f"write a {big_mib} MiB file in 64 KiB chunks", "asyncio", ws, "MiB/s", True)
    loop.close()
    return results


def identity(x: Any) -> Any:
    return x


def _die_if(i: int, doomed: frozenset[int]) -> int:
    if i in doomed:
        os.kill(os.getpid(), 9)
    return i


def _process_contenders(workers: int) -> tuple[dict[str, Callable[[Callable[..., Any], Any], Awaitable[Any]]], Any]:
    """name -> call(fn, arg) for each process pool, and a function that shuts them all down."""
    import multiprocessing

    fpool = ferrio.ProcessPool(workers, name="bench-process")
    ppe = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
    calls: dict[str, Callable[[Callable[..., Any], Any], Awaitable[Any]]] = {
        "ferrio ProcessPool.run": lambda fn, x: fpool.run(fn, x),
        "run_in_executor(PPE)": lambda fn, x: asyncio.get_running_loop().run_in_executor(ppe, fn, x),
    }
    closers: list[Callable[[], Any]] = [fpool.shutdown, ppe.shutdown]
    a_to_process = _peer("anyio.to_process")
    if a_to_process is not None:
        calls["anyio.to_process"] = lambda fn, x: a_to_process.run_sync(fn, x)
    loky = _peer("loky")
    if loky is not None:
        lpool = loky.get_reusable_executor(max_workers=workers)
        calls["loky"] = lambda fn, x: asyncio.get_running_loop().run_in_executor(lpool, fn, x)
        closers.append(lambda: lpool.shutdown(wait=True))

    def close() -> None:
        for c in closers:
            c()

    return calls, close


def bench_processes(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int, mib: int) -> list[Result]:
    """Trivial calls with 8 in flight, and large arguments and results, on warm process pools."""
    workers = os.cpu_count() or 2
    calls, close = _process_contenders(workers)
    try:
        for call in calls.values():  # warm: every worker started, imports done
            loop.run_until_complete(_tasks(4 * workers, 2 * workers, lambda i, call=call: call(noop, i)))
        data = os.urandom(mib * 2**20)
        trips = 20 if n >= 1000 else 2

        async def round_trips(call: Callable[[Callable[..., Any], Any], Awaitable[Any]]) -> float:
            t0 = time.perf_counter()
            for _ in range(trips):
                out = await call(identity, data)
                assert len(out) == len(data)
            return trips * 2 * mib / (time.perf_counter() - t0)

        small: dict[str, list[float]] = {k: [] for k in calls}
        large: dict[str, list[float]] = {k: [] for k in calls}
        for r in range(rounds):
            for name, call in _alternate(calls, r):
                small[name].append(n / loop.run_until_complete(_tasks(n, 8, lambda i, call=call: call(noop, i))))
                large[name].append(loop.run_until_complete(round_trips(call)))
    finally:
        close()
        # anyio keeps a task per loop that stops its workers when cancelled, as asyncio.run would.
        leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in leftover:
            t.cancel()
        if leftover:  # (gather() of nothing would make its future on another loop, and hide the error)
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
    return _results(
        f"{n:,} x await noop in a worker process, 8 in flight, warm pools of {workers}",
        loop_name,
        small,
        "calls/s",
        True,
    ) + _results(f"{mib} MiB bytes argument and result, {trips} round trips", loop_name, large, "MiB/s", True)


def bench_process_start(rounds: int) -> list[Result]:
    """Seconds from creating a 2-worker pool to its first result (start-up included), with the
    forkserver already running, as it is after any pool's first use."""
    import multiprocessing

    loop = asyncio.new_event_loop()

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
    import warnings

    samples: dict[str, list[float]] = {k: [] for k in contenders}
    fork: list[float] = []
    loop.run_until_complete(ferrio_start())  # the forkserver starts once per interpreter: not timed
    for r in range(rounds):
        for name, make in _alternate(contenders, r):
            samples[name].append(loop.run_until_complete(make()) * 1e3)
        with warnings.catch_warnings():  # 3.12+ warns that fork with threads running may deadlock
            warnings.simplefilter("ignore", DeprecationWarning)
            fork.append(loop.run_until_complete(ppe_start("fork")) * 1e3)
    loop.close()
    samples["PPE (fork), for reference"] = fork
    return _results("cold start of a 2-worker pool to its first result", "asyncio", samples, "ms", False)


def bench_process_crashes(rounds: int, n: int, kills: int) -> list[Result]:
    """``n`` calls, ``kills`` of which SIGKILL their own worker at random points in the stream."""
    import multiprocessing
    import random

    loop = asyncio.new_event_loop()
    workers = os.cpu_count() or 2
    doomed = frozenset(random.Random(0).sample(range(n), kills))

    async def ferrio_run() -> tuple[int, int, float]:
        async with ferrio.ProcessPool(workers, name="bench-crash") as pool:
            t0 = time.perf_counter()
            sem = asyncio.Semaphore(8)

            async def one(i: int) -> Any:
                async with sem:
                    return await pool.run(_die_if, i, doomed)

            out = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
            elapsed = time.perf_counter() - t0
            assert await pool.run(noop, 1) == 1  # the pool stays up
        crashed = {i for i, r in enumerate(out) if isinstance(r, ferrio.WorkerCrashed)}
        ok = sum(1 for i, r in enumerate(out) if r == i)
        if crashed != doomed or ok != n - kills:
            raise RuntimeError(f"calls {sorted(crashed ^ doomed)} failed wrongly: only the killed ones may fail")
        return ok, len(crashed), elapsed

    async def ppe_run() -> int:
        ppe = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        running = asyncio.get_running_loop()
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> Any:
            async with sem:
                return await running.run_in_executor(ppe, _die_if, i, doomed)

        out = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        ppe.shutdown(wait=True, cancel_futures=True)
        return sum(1 for i, r in enumerate(out) if r == i)

    ok: dict[str, list[float]] = {"ferrio ProcessPool": [], "run_in_executor(PPE)": []}
    rate: dict[str, list[float]] = {"ferrio ProcessPool": []}
    for _ in range(rounds):
        good, _, elapsed = loop.run_until_complete(ferrio_run())
        ok["ferrio ProcessPool"].append(good)
        rate["ferrio ProcessPool"].append(n / elapsed)
        ok["run_in_executor(PPE)"].append(loop.run_until_complete(ppe_run()))
    loop.close()
    w = f"{n:,} calls, {kills} of which SIGKILL their worker"
    return _results(f"{w}: calls that succeeded ({n - kills:,} possible)", "asyncio", ok, "calls", True) + _results(
        f"{w}: throughput, exactly the {kills} killed calls failing", "asyncio", rate, "calls/s", True
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


def bench_memory(n: int) -> list[Result]:
    """RSS growth over ``n`` no-op calls through a fresh pool; threads and fds left after it."""
    gc.collect()
    fds_before = _fds()
    loop = asyncio.new_event_loop()
    pool = ferrio.ThreadPool(8, thread_name_prefix="bench-mem")

    async def run(k: int) -> None:
        async for _ in pool.amap(noop, range(k // 2)):
            pass
        await _fan(k // 2, 64, lambda i: pool.run(noop, i))

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
    return [
        Result(f"{w}: RSS growth", "asyncio", "ferrio", grown, "MB", False),
        Result(f"{w}: fds left after shutdown", "asyncio", "ferrio", _fds() - fds_before, "fds", False),
        Result(f"{w}: threads left after shutdown", "asyncio", "ferrio", _threads_named("bench-mem"), "threads", False),
    ]


def _report(results: list[Result]) -> None:
    by_workload: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by_workload.setdefault((r.workload, r.loop), []).append(r)
    for (workload, loop_name), rs in by_workload.items():
        print(f"\n{workload}  [{loop_name}]")
        ref = next((r for r in rs if r.contender.startswith("ferrio")), rs[0])
        for r in rs:
            ratio = ""
            if r is not ref and ref.value and r.value:
                x = ref.value / r.value if r.higher_is_better else r.value / ref.value
                ratio = f"   ferrio is {x:.2f}x {'this' if len(rs) > 1 else ''}".rstrip()
            print(f"  {r.contender:<28} {r.value:>14,.1f} {r.unit}{ratio}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferrio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="compare ferrio with the stdlib and installed peers")
    b.add_argument("--quick", action="store_true", help="smaller workloads, fewer rounds (under a minute)")
    b.add_argument("--json", action="store_true", help="print results as JSON")
    b.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    # Tiny sizes that only prove every workload runs (the test suite uses it); not a measurement.
    b.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.smoke:
        rounds, n, seq, sleeps, calls, bridges, items = 1, 640, 50, 128, 2_000, 50, 400
        file_sizes = (200, 20, 1)  # lines, small files, MiB
        procs = (40, 1, 40, 3)  # trivial calls, MiB per round trip, calls under kills, kills
    elif args.quick:
        rounds, n, seq, sleeps, calls, bridges, items = 3, 20_000, 2_000, 2_000, 200_000, 2_000, 50_000
        file_sizes = (20_000, 2_000, 64)
        procs = (2_000, 16, 500, 25)
    else:
        rounds, n, seq, sleeps, calls, bridges, items = 5, 20_000, 5_000, 2_000, 1_000_000, 5_000, 200_000
        file_sizes = (100_000, 2_000, 256)
        procs = (2_000, 16, 2_000, 100)
    results: list[Result] = []
    for loop_name, factory in _loop_factories(args.loop).items():
        loop = factory()
        try:
            results += bench_offload(loop, loop_name, rounds, n)
            results += bench_bulk(loop, loop_name, rounds, n)
            results += bench_latency(loop, loop_name, rounds, seq)
            results += bench_sleep(loop, loop_name, rounds, sleeps)
            results += bench_from_thread(loop, loop_name, rounds, bridges)
            results += bench_queues(loop, loop_name, rounds, items)
            results += bench_locks(loop, loop_name, rounds, items // 2)
            results += bench_processes(loop, loop_name, rounds, procs[0], procs[1])
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
    results += bench_run_from_sync(rounds, bridges)
    results += bench_portal(rounds, bridges)
    results += bench_process_start(rounds)
    results += bench_process_crashes(1 if args.smoke else 3, procs[2], procs[3])
    results += bench_files(rounds, *file_sizes)
    results += bench_memory(calls)

    meta = {
        "python": sys.version.split()[0],
        "ferrio": ferrio.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.json:
        print(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))
    else:
        print(f"ferrio {meta['ferrio']} on Python {meta['python']}, {meta['machine']}")
        _report(results)
    return 0
