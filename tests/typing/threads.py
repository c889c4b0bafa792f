"""The README's first example: blocking calls offloaded to threads keep their result types."""

from __future__ import annotations

import concurrent.futures

import ferrio
from typing_extensions import assert_type


def query(sql: str) -> list[tuple[object, ...]]:
    return []


async def fetch(x: int) -> int:
    return x * 2


@ferrio.asyncify
def read_config(path: str, *, strict: bool = False) -> dict[str, str]:
    return {}


async def main() -> None:
    assert_type(await ferrio.to_thread(query, "select 1"), list[tuple[object, ...]])

    pool = ferrio.ThreadPool(max_workers=8, thread_name_prefix="db")
    async with pool:
        assert_type(await pool.run(query, "select 2"), list[tuple[object, ...]])
        assert_type(await pool.run(fetch, 3), int)  # a coroutine function: its awaited type
        assert_type(pool.submit(query, "select 3"), concurrent.futures.Future[list[tuple[object, ...]]])
        results = [r async for r in pool.amap(query, ["a", "b"])]
        assert_type(results, list[list[tuple[object, ...]]])

    db = ferrio.CapacityLimiter(4)
    assert_type(await ferrio.to_thread(query, "select 4", limiter=db), list[tuple[object, ...]])
    assert_type(db.statistics(), ferrio.LimiterStatistics)
    assert_type(pool.stats().queue_wait.p99, float)

    assert_type(await read_config("app.toml", strict=True), dict[str, str])
    slow = ferrio.asyncify(pool=pool, limiter=db)(query)
    assert_type(await slow("select 5"), list[tuple[object, ...]])
