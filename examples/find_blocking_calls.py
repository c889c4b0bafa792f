"""Finding the call that blocks an event loop: the watchdog reports it while it blocks, then the
fix (the same call offloaded with ``ferrio.to_thread``) reports nothing.

A handler calls a blocking sqlite3 query (a slow recursive query, 0.3 s or so) straight from a
coroutine. Every other request waits that long; the watchdog names the function and the line.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import ferrio

SLOW_QUERY = """
with recursive n(i) as (select 1 union all select i + 1 from n where i < ?)
select count(*) from n
"""


def count_rows(limit: int) -> int:
    with sqlite3.connect(":memory:") as conn:  # sqlite3 releases the GIL while it runs the query
        return int(conn.execute(SLOW_QUERY, (limit,)).fetchone()[0])


async def handler_that_blocks(limit: int) -> int:
    return count_rows(limit)  # the bug: a blocking call on the loop's thread


async def handler_that_offloads(limit: int) -> int:
    return await ferrio.to_thread(count_rows, limit)


def calibrated_limit() -> int:
    """A query size that takes 0.3 s or more here: the machine's speed decides."""
    limit = 100_000
    while True:
        start = time.perf_counter()
        count_rows(limit)
        if time.perf_counter() - start >= 0.3:
            return limit
        limit *= 2


async def main() -> None:
    limit = calibrated_limit()
    for handler in (handler_that_blocks, handler_that_offloads):
        async with ferrio.watchdog(threshold=0.1, log=False) as dog:
            await handler(limit)
        reports = dog.reports
        print(f"{handler.__name__}: {len(reports)} block(s)")
        for report in reports:
            frames = [frame.name for frame in report.samples[0].stack]
            print(f"  in {' -> '.join(frames)}, at least the threshold: {report.duration >= dog.threshold}")


asyncio.run(main())
