"""A blocking call (sqlite3, a file read) offloaded from async code while the loop keeps ticking.

The loop stays responsive: a heartbeat task counts ticks while the worker threads do the
blocking work, and a CapacityLimiter keeps at most two database calls in flight.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

import ferrio


def query(db: str, n: int) -> int:
    with sqlite3.connect(db) as conn:  # sqlite3 connections are per thread: open one per call
        return conn.execute("select count(*) from t where x < ?", (n,)).fetchone()[0]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "demo.sqlite")
        with sqlite3.connect(db) as conn:
            conn.execute("create table t (x integer)")
            conn.executemany("insert into t values (?)", [(i,) for i in range(10_000)])

        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        beat = asyncio.ensure_future(heartbeat())
        db_slots = ferrio.CapacityLimiter(2)
        counts = await asyncio.gather(*(ferrio.to_thread(query, db, n, limiter=db_slots) for n in (10, 100, 1000)))
        text = await ferrio.to_thread(Path(db).read_bytes)
        beat.cancel()
        print("counts", counts)
        print("read", len(text) > 0, "bytes")
        print("loop stayed responsive", ticks > 0)


if __name__ == "__main__":
    asyncio.run(main())
