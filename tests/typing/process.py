"""The README's process pool example, as a user types it: calls keep the function's types, and a
WorkerCrashed says which pid, signal, exit code and function."""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import os
import signal

import ferrio
from typing_extensions import assert_type

hits: ferrio.SharedCounter | None = None


def crunch(data: bytes) -> int:  # CPU-bound work, in a worker process
    return sum(data[::4096])


def init(counter: ferrio.SharedCounter) -> None:  # runs once in each worker
    global hits
    hits = counter


def count(n: int) -> int:
    assert hits is not None
    return hits.add(n)


async def main() -> None:
    assert_type(await ferrio.to_process(crunch, os.urandom(1 << 20)), int)
    assert_type(await ferrio.to_process(crunch, b"x", timeout=5.0), int)
    counter = ferrio.SharedCounter(0)
    async with ferrio.ProcessPool(2, initializer=init, initargs=(counter,)) as pool:
        assert_type(await asyncio.gather(*(pool.run(count, 1) for _ in range(10))), list[int])
        assert_type(counter.value, int)
        assert_type(await pool.run(crunch, b"x", timeout=5.0), int)
        assert_type(await pool.run(crunch, b"x", kill_on_cancel=True), int)
        try:
            await pool.run(signal.raise_signal, signal.SIGKILL)  # the worker dies...
        except ferrio.WorkerCrashed as e:  # ...and only this call fails
            assert_type(e.pid, int)
            assert_type(e.exitcode, int | None)
            assert_type(e.signal, signal.Signals | None)
            assert_type(e.function, str)
            if e.signal is not None:  # None when the worker exited instead
                print(e.signal.name, e.function)
            caught: concurrent.futures.process.BrokenProcessPool = e  # what ProcessPoolExecutor code catches
            print(caught)
        assert_type(await pool.run(crunch, b"still up"), int)

        # The concurrent.futures.Executor side, and the ordered async map.
        assert_type(pool.submit(crunch, b"y"), concurrent.futures.Future[int])
        assert_type(list(pool.map(crunch, [b"a", b"b"])), list[int])
        assert_type([n async for n in pool.amap(crunch, [b"a", b"b"])], list[int])
        assert_type(await asyncio.get_running_loop().run_in_executor(pool, crunch, b"z"), int)
        assert_type(pool.stats().crashed, int)
        assert_type(pool.worker_pids(), list[int])


async def wrong_arguments_are_caught(pool: ferrio.ProcessPool) -> None:
    # Each line is an error a type checker must report (mypy fails on an unused ignore).
    await pool.run(crunch, "text, not bytes")  # type: ignore[call-overload]
    await pool.run(crunch, b"x", timeout="5")  # type: ignore[call-arg]
    pool.submit(count, "one")  # type: ignore[arg-type]
    await ferrio.to_process(crunch)  # type: ignore[call-overload]


if __name__ == "__main__":  # worker processes import this file
    asyncio.run(main())
