"""A sync producer thread feeding an async consumer through one ferrio.Queue.

With a ``queue.Queue`` the consumer would park a pool thread per item
(``await loop.run_in_executor(None, q.get)``). Here the producer thread blocks only while the
bounded queue is full, the consumer awaits without any thread, and a shared lock and counter
work from both sides.
"""

from __future__ import annotations

import asyncio
import threading

import ferrio

processed = ferrio.AtomicInt(0)
log_lock = ferrio.Lock()
log: list[str] = []


def sync_producer(q: ferrio.Queue[int | None]) -> None:
    for i in range(10):
        q.sync_q.put(i)  # queue.Queue's API: blocks this thread only while the queue is full
        with log_lock:  # the same lock the consumer takes with `async with`
            log.append(f"put {i}")
    q.sync_q.put(None)  # sentinel


async def process(item: int) -> None:
    await asyncio.sleep(0)
    processed.add(1)


async def async_consumer(q: ferrio.Queue[int | None]) -> list[int]:
    seen = []
    while (item := await q.async_q.get()) is not None:  # asyncio.Queue's API: never blocks the loop
        await process(item)
        async with log_lock:
            log.append(f"got {item}")
        seen.append(item)
    return seen


async def main() -> None:
    q: ferrio.Queue[int | None] = ferrio.Queue(maxsize=4)
    producer = threading.Thread(target=sync_producer, args=(q,))
    producer.start()
    seen = await async_consumer(q)
    await asyncio.to_thread(producer.join)
    print("consumed", seen)
    print("processed", processed.get())
    print("log entries", len(log))


if __name__ == "__main__":
    asyncio.run(main())
