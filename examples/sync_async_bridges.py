"""Every direction between sync and async code, each in a few lines of ferrio.

Blocking calls offloaded from async code (``ferrio.to_thread``), worker threads calling back
into the loop (``ferrio.from_thread``), async functions called from sync code (``ferrio.run``,
``@ferrio.syncify``), a nested call from inside a running loop, and a thread with its own loop.
Each prints one line; nothing here creates, patches or closes an event loop by hand.
"""

from __future__ import annotations

import asyncio
import threading
import time

import ferrio

POOL = ferrio.ThreadPool(max_workers=4, thread_name_prefix="bridge")


async def sample_coroutine(x: int, y: int) -> int:
    await asyncio.sleep(0.01)
    return x * y


def blocking_io(x: int, y: int) -> int:
    time.sleep(0.01)  # a blocking call
    return x + y


def blocking_io_that_needs_async(x: int, y: int) -> int:
    # On a ferrio worker: this thread has its own loop, created once and reused.
    return ferrio.run(sample_coroutine(x, y))


# 1. async code calls sync code
async def async_calls_sync() -> int:
    return await ferrio.to_thread(blocking_io, 2, 3)


# 2. sync code calls sync code that calls async code
def some_legacy_function() -> int:
    return POOL.submit(blocking_io_that_needs_async, 2, 3).result(timeout=10)


# 3. async code calls sync code that calls async code (on the worker's loop, or back on ours)
async def async_sync_async() -> tuple[int, int]:
    on_worker_loop = await ferrio.to_thread(blocking_io_that_needs_async, 2, 3)

    def back_on_the_callers_loop() -> int:
        return ferrio.from_thread.run(sample_coroutine, 2, 3)

    return on_worker_loop, await ferrio.to_thread(back_on_the_callers_loop)


# 4. async code runs a coroutine on a worker thread (its own loop)
async def async_runs_coroutine_on_worker() -> int:
    return await POOL.run(sample_coroutine, 2, 3)


# 5. sync code runs a coroutine on a worker thread
def sync_runs_coroutine_on_worker() -> int:
    return POOL.submit(sample_coroutine, 2, 3).result(timeout=10)


# A decorator, a sync wrapper, a nested call from a running loop, and a thread with its own loop.
@ferrio.asyncify
def read_file(path: str) -> int:
    with open(path, "rb") as f:
        return len(f.read())


@ferrio.syncify
async def async_function() -> str:
    await asyncio.sleep(0.01)
    return "done"


def notebook_cell() -> str:
    # Called from code already inside a running loop (as in a notebook): no nest_asyncio needed.
    return ferrio.run(async_function.__wrapped__())


def run_in_new_thread() -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(ferrio.run(async_function.__wrapped__())))
    t.start()
    t.join(10)
    return out[0]


async def main() -> None:
    print("1 async -> sync:", await async_calls_sync())
    print("2 sync -> sync -> async:", some_legacy_function())
    print("3 async -> sync -> async:", await async_sync_async())
    print("4 async -> coroutine on a worker:", await async_runs_coroutine_on_worker())
    print("5 sync -> coroutine on a worker:", sync_runs_coroutine_on_worker())
    print("decorator:", await read_file(__file__) > 0)
    print("nested call inside a running loop:", notebook_cell())


if __name__ == "__main__":
    asyncio.run(main())
    print("sync wrapper:", async_function())
    print("thread with its own loop:", run_in_new_thread())
    POOL.shutdown()
