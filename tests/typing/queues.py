"""A queue between a thread and a task is typed by its items on both faces."""

from __future__ import annotations

import threading

import ferrio
from typing_extensions import assert_type


async def consume(q: ferrio.Queue[int]) -> int:
    total = 0
    for _ in range(3):
        item = await q.async_q.get()
        assert_type(item, int)
        total += item
    return total


def produce(q: ferrio.Queue[int]) -> None:
    for i in range(3):
        q.sync_q.put(i, timeout=1.0)
    assert_type(q.sync_q.get_nowait(), int)


async def main() -> None:
    q: ferrio.Queue[int] = ferrio.Queue(maxsize=8)
    thread = threading.Thread(target=produce, args=(q,))
    thread.start()
    assert_type(await consume(q), int)
    thread.join()
    lock = ferrio.Lock()
    async with lock:
        assert_type(lock.statistics(), ferrio.LockStatistics)
