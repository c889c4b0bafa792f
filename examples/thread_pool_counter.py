"""Worker threads printing words and bumping a shared counter, run four ways with ferrio.

Four words printed from worker threads, a shared counter under a lock, run four ways: on an
explicit pool, on the default executor, with ferrio set as the loop's default executor, and with
``ferrio.to_thread``. Each run prints its words and the final count.
"""

from __future__ import annotations

import asyncio
import threading

import ferrio

WORDS = ("hello", "how", "are", "you")
counter = 0
lock = threading.Lock()


def increment_and_print(word: str) -> None:
    global counter
    with lock:  # printing under the lock too keeps lines from different threads whole
        counter += 1
        print(word, flush=True)


async def explicit_pool() -> None:
    async with ferrio.ThreadPool() as pool:
        await asyncio.gather(*(pool.run(increment_and_print, w) for w in WORDS))


async def run_in_executor_with_ferrio_as_default() -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ferrio.ThreadPool(max_workers=2))  # unlike the stdlib, no "with" needed:
    await asyncio.gather(*(loop.run_in_executor(None, increment_and_print, w) for w in WORDS))
    # asyncio.run() shuts the default executor down (waiting for it) when main() returns.


async def with_to_thread() -> None:
    await asyncio.gather(*(ferrio.to_thread(increment_and_print, w) for w in WORDS))


def main() -> None:
    for scenario in (explicit_pool, run_in_executor_with_ferrio_as_default, with_to_thread):
        asyncio.run(scenario())
        print(f"{scenario.__name__}: counter={counter}", flush=True)


if __name__ == "__main__":
    main()
