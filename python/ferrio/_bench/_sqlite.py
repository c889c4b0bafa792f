"""sqlite3 from async code: ``ferrio.sqlite`` against aiosqlite, asgiref's
``sync_to_async(thread_sensitive=True)`` and plain sqlite3 called on the loop's thread.

One real database file per run, in a temporary directory: ``users(id integer primary key, name,
email, age)`` with ``table_rows`` rows and an index on ``email``. Point selects look a user up by
``email = ?`` (the index, then the row). Each async contender uses its API the way its
documentation shows: ``async with db.execute(sql, params) as cursor: await cursor.fetchone()``
for ferrio.sqlite and aiosqlite; for asgiref, the blocking function wrapped once in
``sync_to_async(..., thread_sensitive=True)``, its connection opened through the same wrapper so it
lives on asgiref's one thread-sensitive thread. Plain sqlite3 runs on the loop's thread: the
floor nobody can beat, and what async code must not do (it blocks the loop for every call).
"""

from __future__ import annotations

import abc
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import ferrio.sqlite

from ._harness import Batches, alternate, fan, peer, results

SELECT = "select * from users where email = ?"
SCAN = "select * from users order by id limit ?"
INSERT = "insert into bench_inserts values (?, ?)"


def _email(i: int, table_rows: int) -> str:
    return f"user{(i * 7919) % table_rows}@example.org"


def build(path: str, table_rows: int) -> None:
    """The users table, with an index on email (untimed)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("create table users (id integer primary key, name text, email text, age integer)")
        conn.executemany(
            "insert into users values (?, ?, ?, ?)",
            ((i, f"user {i}", f"user{i}@example.org", 18 + i % 70) for i in range(table_rows)),
        )
        conn.execute("create index users_email on users (email)")
        conn.commit()
    finally:
        conn.close()


class Contender(abc.ABC):
    """One way to reach sqlite3 from a coroutine; every method is awaited from the loop."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def select(self, email: str) -> object: ...

    @abc.abstractmethod
    async def insert(self, i: int) -> None: ...

    @abc.abstractmethod
    async def executemany(self, rows: list[tuple[int, str]]) -> None: ...

    @abc.abstractmethod
    async def fetchall(self, n: int) -> int: ...

    @abc.abstractmethod
    async def iterate(self, n: int) -> int: ...

    async def prepare_inserts(self) -> None:
        await self.script("drop table if exists bench_inserts; create table bench_inserts (a integer, b text)")

    @abc.abstractmethod
    async def script(self, sql: str) -> None: ...

    @abc.abstractmethod
    async def commit(self) -> None: ...


class AioSqliteApi(Contender):
    """ferrio.sqlite or aiosqlite: the same code, the module differs."""

    def __init__(self, module: ModuleType, path: str) -> None:
        self.module = module
        self.path = path
        self.db: Any = None

    async def open(self) -> None:
        self.db = await self.module.connect(self.path)

    async def close(self) -> None:
        await self.db.close()

    async def select(self, email: str) -> object:
        async with self.db.execute(SELECT, (email,)) as cursor:
            return await cursor.fetchone()

    async def insert(self, i: int) -> None:
        await self.db.execute(INSERT, (i, "x"))

    async def executemany(self, rows: list[tuple[int, str]]) -> None:
        await self.db.executemany(INSERT, rows)

    async def fetchall(self, n: int) -> int:
        async with self.db.execute(SCAN, (n,)) as cursor:
            return len(await cursor.fetchall())

    async def iterate(self, n: int) -> int:
        count = 0
        async with self.db.execute(SCAN, (n,)) as cursor:
            async for _ in cursor:
                count += 1
        return count

    async def script(self, sql: str) -> None:
        await self.db.executescript(sql)

    async def commit(self) -> None:
        await self.db.commit()


class Blocking(Contender):
    """Plain sqlite3 on the loop's thread (the reference: it blocks the loop)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def _c(self) -> sqlite3.Connection:
        assert self.conn is not None
        return self.conn

    async def open(self) -> None:
        self.conn = sqlite3.connect(self.path)

    async def close(self) -> None:
        self._c().close()

    async def select(self, email: str) -> object:
        return self._c().execute(SELECT, (email,)).fetchone()

    async def insert(self, i: int) -> None:
        self._c().execute(INSERT, (i, "x"))

    async def executemany(self, rows: list[tuple[int, str]]) -> None:
        self._c().executemany(INSERT, rows)

    async def fetchall(self, n: int) -> int:
        return len(self._c().execute(SCAN, (n,)).fetchall())

    async def iterate(self, n: int) -> int:
        return sum(1 for _ in self._c().execute(SCAN, (n,)))

    async def script(self, sql: str) -> None:
        self._c().executescript(sql)

    async def commit(self) -> None:
        self._c().commit()


class ThreadSensitive(Contender):
    """asgiref: each blocking function wrapped once in ``sync_to_async(thread_sensitive=True)``."""

    def __init__(self, sync_to_async: Callable[..., Any], path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

        def wrap(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
            wrapped: Callable[..., Awaitable[Any]] = sync_to_async(fn, thread_sensitive=True)
            return wrapped

        def select(email: str) -> object:
            return self._c().execute(SELECT, (email,)).fetchone()

        def insert(i: int) -> None:
            self._c().execute(INSERT, (i, "x"))

        def executemany(rows: list[tuple[int, str]]) -> None:
            self._c().executemany(INSERT, rows)

        def fetchall(n: int) -> int:
            return len(self._c().execute(SCAN, (n,)).fetchall())

        def iterate(n: int) -> int:
            return sum(1 for _ in self._c().execute(SCAN, (n,)))

        def script(sql: str) -> None:
            self._c().executescript(sql)

        self._connect = wrap(sqlite3.connect)
        self._select = wrap(select)
        self._insert = wrap(insert)
        self._executemany = wrap(executemany)
        self._fetchall = wrap(fetchall)
        self._iterate = wrap(iterate)
        self._script = wrap(script)
        self._commit = wrap(self._commit_sync)
        self._close = wrap(self._close_sync)

    def _commit_sync(self) -> None:
        self._c().commit()

    def _close_sync(self) -> None:
        self._c().close()

    def _c(self) -> sqlite3.Connection:
        assert self.conn is not None
        return self.conn

    async def open(self) -> None:
        self.conn = await self._connect(self.path)

    async def close(self) -> None:
        await self._close()

    async def select(self, email: str) -> object:
        return await self._select(email)

    async def insert(self, i: int) -> None:
        await self._insert(i)

    async def executemany(self, rows: list[tuple[int, str]]) -> None:
        await self._executemany(rows)

    async def fetchall(self, n: int) -> int:
        result: int = await self._fetchall(n)
        return result

    async def iterate(self, n: int) -> int:
        result: int = await self._iterate(n)
        return result

    async def script(self, sql: str) -> None:
        await self._script(sql)

    async def commit(self) -> None:
        await self._commit()


def contenders(path: str) -> dict[str, Contender]:
    """Every contender installed, ferrio's first."""
    c: dict[str, Contender] = {"ferrio.sqlite": AioSqliteApi(ferrio.sqlite, path)}
    aiosqlite = peer("aiosqlite")
    if aiosqlite is not None:
        c["aiosqlite"] = AioSqliteApi(aiosqlite, path)
    asgiref_sync = peer("asgiref.sync")
    if asgiref_sync is not None:
        c["asgiref thread_sensitive"] = ThreadSensitive(asgiref_sync.sync_to_async, path)
    c["sqlite3 on the loop (blocks it)"] = Blocking(path)
    return c


Measure = Callable[[Contender], Awaitable[float]]


async def _opened(c: Contender, measure: Measure) -> float:
    await c.open()
    try:
        return await measure(c)
    finally:
        await c.close()


def sqlite(
    loop: asyncio.AbstractEventLoop,
    loop_name: str,
    rounds: int,
    selects: int,
    inserts: int,
    rows: int,
    table_rows: int,
) -> Batches:
    """The issue's workloads, each contender once per round, the order alternating by round."""
    with tempfile.TemporaryDirectory(prefix="ferrio-bench-sqlite-") as tmp:
        path = str(Path(tmp) / "bench.sqlite")
        build(path, table_rows)
        cs = contenders(path)
        emails = [_email(i, table_rows) for i in range(max(selects, 64))]

        async def many(c: Contender) -> float:
            async def one(i: int) -> object:
                return await c.select(emails[i])

            return (selects // 64 * 64) / await fan(selects // 64 * 64, 64, one)

        async def sequential(c: Contender) -> float:
            t0 = time.perf_counter()
            for i in range(selects):
                await c.select(emails[i])
            return selects / (time.perf_counter() - t0)

        async def one_by_one(c: Contender) -> float:
            await c.prepare_inserts()
            await c.commit()
            t0 = time.perf_counter()
            for i in range(inserts):
                await c.insert(i)
            await c.commit()
            return inserts / (time.perf_counter() - t0)

        batch = [(i, "x") for i in range(inserts)]

        async def bulk(c: Contender) -> float:
            await c.prepare_inserts()
            await c.commit()
            t0 = time.perf_counter()
            await c.executemany(batch)
            await c.commit()
            return inserts / (time.perf_counter() - t0)

        async def fetchall(c: Contender) -> float:
            t0 = time.perf_counter()
            got = await c.fetchall(rows)
            elapsed = time.perf_counter() - t0
            assert got == rows, (got, rows)
            return rows / elapsed

        async def iterate(c: Contender) -> float:
            t0 = time.perf_counter()
            got = await c.iterate(rows)
            elapsed = time.perf_counter() - t0
            assert got == rows, (got, rows)
            return rows / elapsed

        workloads: list[tuple[str, str, Measure]] = [
            (f"{selects // 64 * 64:,} indexed point selects from 64 tasks, one connection", "queries/s", many),
            (f"{selects:,} indexed point selects in a row, one task", "queries/s", sequential),
            (f"{inserts:,} inserts awaited one by one, one transaction", "inserts/s", one_by_one),
            (f"executemany of {inserts:,} rows", "rows/s", bulk),
            (f"fetchall of {rows:,} rows", "rows/s", fetchall),
            (f"async for over {rows:,} rows", "rows/s", iterate),
        ]
        for title, unit, measure in workloads:
            samples: dict[str, list[float]] = {k: [] for k in cs}
            for r in range(rounds):
                for name, c in alternate(cs, r):
                    samples[name].append(loop.run_until_complete(_opened(c, measure)))
            yield results(title, loop_name, samples, unit, True)
