"""ferrio.sqlite: aiosqlite's API, what ferrio does differently (rows read ahead, cursors closed
without a trip, batched delivery, the answer waited for), and hostile use. aiosqlite's own suite
runs in tests/test_aiosqlite_suite.py."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any

import ferrio
import ferrio.sqlite as fsql
import pytest

WAIT = 10.0


def _make(tmp_path: Path, rows: int) -> str:
    path = str(tmp_path / "t.db")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("create table t (i integer primary key, s text)")
        conn.executemany("insert into t values (?, ?)", ((i, f"s{i}") for i in range(rows)))
    return path


def _expected(path: str, rows: int, factory: Any = None, text_factory: Any = str) -> list[Any]:
    conn = sqlite3.connect(path)
    conn.row_factory = factory
    conn.text_factory = text_factory
    try:
        return conn.execute("select * from t order by i limit ?", (rows,)).fetchall()
    finally:
        conn.close()


def _row_as_dict(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


SIZES = [0, 1, 63, 64, 65, 128, 129, 1000]


@pytest.mark.parametrize("rows", SIZES)
@pytest.mark.parametrize(
    "how", ["fetchone", "fetchmany7", "fetchmany100", "fetchmany_default", "mixed", "iter1", "iter64"]
)
async def test_every_fetch_gives_what_sqlite3_gives(tmp_path: Path, rows: int, how: str) -> None:
    path = _make(tmp_path, 1000)
    want = _expected(path, rows)
    chunk = 1 if how == "iter1" else 64
    async with (
        fsql.connect(path, iter_chunk_size=chunk) as db,
        db.execute("select * from t order by i limit ?", (rows,)) as cur,
    ):
        got: list[Any] = []
        if how == "fetchone":
            while (row := await cur.fetchone()) is not None:
                got.append(row)
        elif how.startswith("fetchmany"):
            size = {"fetchmany7": 7, "fetchmany100": 100, "fetchmany_default": None}[how]
            while batch := await (cur.fetchmany(size) if size else cur.fetchmany()):
                got.extend(batch)
        elif how == "mixed":
            got += [r for r in [await cur.fetchone()] if r is not None]
            got += await cur.fetchmany(70)
            got += await cur.fetchall()
            assert await cur.fetchone() is None
            assert await cur.fetchall() == []
        else:
            got = [row async for row in cur]
    assert got == want


@pytest.mark.parametrize("rows", [1, 64, 65, 200])
async def test_row_factories_apply_as_in_sqlite3_even_when_set_after_execute(tmp_path: Path, rows: int) -> None:
    path = _make(tmp_path, 300)
    async with fsql.connect(path) as db:
        db.row_factory = fsql.Row
        async with db.execute("select * from t order by i limit ?", (rows,)) as cur:
            got = await cur.fetchall()
        assert [tuple(r) for r in got] == _expected(path, rows)
        assert all(type(r) is sqlite3.Row for r in got)
        db.row_factory = None
        async with db.execute("select * from t order by i limit ?", (rows,)) as cur:
            cur.row_factory = _row_as_dict  # after execute: sqlite3 applies it at fetch, so do we
            first = await cur.fetchone()
            rest = await cur.fetchall()
        assert [first, *rest] == _expected(path, rows, _row_as_dict)
        db.text_factory = bytes
        async with db.execute("select * from t order by i limit ?", (rows,)) as cur:
            assert await cur.fetchall() == _expected(path, rows, text_factory=bytes)


async def test_a_closed_cursor_refuses_and_a_closed_connection_says_so(tmp_path: Path) -> None:
    path = _make(tmp_path, 200)
    db = await fsql.connect(path)
    short = await db.execute("select * from t limit 2")  # read to its end in the first trip
    long = await db.execute("select * from t")  # still open on the thread
    await short.close()
    await long.close()
    await short.close()  # twice is fine
    for cur in (short, long):
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            await cur.fetchone()
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            await cur.fetchall()
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            await cur.execute("select 1")
    open_cursor = await db.execute("select * from t limit 5")
    await db.close()
    with pytest.raises(ferrio.PinnedClosedError, match="Connection closed"):
        await open_cursor.fetchone()  # its rows were read ahead, but the connection is gone
    with pytest.raises(ValueError, match="Connection closed"):
        await db.execute("select 1")
    with pytest.raises(ValueError, match="Connection closed"):
        db.row_factory  # noqa: B018 - the property raises
    with pytest.raises(ferrio.PinnedClosedError, match="reopened"):
        await db
    await db.close()  # twice is fine


async def test_execute_is_awaitable_a_context_manager_and_a_coroutine(tmp_path: Path) -> None:
    async with fsql.connect(_make(tmp_path, 3)) as db:
        task = asyncio.create_task(db.execute("select count(*) from t"))
        cur = await task
        assert await cur.fetchone() == (3,)
        async with db.execute("select i from t") as cur2:
            assert len(await cur2.fetchall()) == 3
        with pytest.raises(sqlite3.ProgrammingError):
            await cur2.fetchone()


async def test_transactions_across_awaits_and_two_connections(tmp_path: Path) -> None:
    path = _make(tmp_path, 0)
    async with fsql.connect(path) as a, fsql.connect(path) as b:
        await a.execute("insert into t values (1, 'a')")
        assert a.in_transaction
        await asyncio.sleep(0)
        assert await b.execute_fetchall("select count(*) from t") == [(0,)]
        await a.rollback()
        assert not a.in_transaction
        rows = (i for i in range(2, 102))  # a generator: consumed on the connection's thread
        await a.executemany("insert into t values (?, 'g')", ((i,) for i in rows))
        await a.commit()
        assert await b.execute_fetchall("select count(*) from t") == [(100,)]
        assert await a.execute_insert("insert into t (s) values ('x')") == (102,)
        with pytest.raises(sqlite3.IntegrityError) as info:
            await a.executemany("insert into t values (?, 'dup')", [(500,), (500,)])
        # The traceback runs on into the connection's thread, to the call that raised there.
        assert traceback.extract_tb(info.value.__traceback__)[-1].name == "_executemany"
        cur = await a.executescript("create table u (x); insert into u values (1);")
        assert await cur.fetchall() == []


async def test_iterdump_matches_sqlite3_and_can_be_left_early(tmp_path: Path) -> None:
    path = _make(tmp_path, 600)  # more lines than one chunk of 256
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        want = list(conn.iterdump())
    async with fsql.connect(path) as db:
        assert [line async for line in db.iterdump()] == want
        async for _ in db.iterdump():
            break
        assert await db.execute_fetchall("select count(*) from t") == [(600,)]


async def test_backup_to_a_ferrio_and_a_sqlite3_connection(tmp_path: Path) -> None:
    async with fsql.connect(_make(tmp_path, 10)) as src, fsql.connect(":memory:") as dst:
        await src.backup(dst)
        assert await dst.execute_fetchall("select count(*) from t") == [(10,)]
        plain = sqlite3.connect(":memory:", check_same_thread=False)
        await src.backup(plain)
        assert plain.execute("select count(*) from t").fetchone() == (10,)
        plain.close()


async def test_functions_run_on_the_connections_thread_and_interrupt_stops_a_query(tmp_path: Path) -> None:
    async with fsql.connect(_make(tmp_path, 3)) as db:
        seen: list[int] = []
        await db.create_function("who", 0, lambda: seen.append(threading.get_ident()) or 1)
        await db.execute_fetchall("select who() from t")
        assert db._thread is not None
        assert set(seen) == {await db._thread.run(threading.get_ident)}
        assert threading.get_ident() not in seen
        started = threading.Event()
        await db.create_function("started", 0, lambda: started.set() or 1)
        endless = "with recursive c(x) as (select started() union all select x + 1 from c) select count(*) from c"
        query = asyncio.ensure_future(db.execute_fetchall(endless))
        assert await asyncio.to_thread(started.wait, WAIT)
        await db.interrupt()
        with pytest.raises(sqlite3.OperationalError, match="interrupted"):
            await asyncio.wait_for(query, WAIT)


async def test_cancelled_before_it_starts_never_runs_started_runs_to_its_end(tmp_path: Path) -> None:
    async with fsql.connect(_make(tmp_path, 0)) as db:
        started, release = threading.Event(), threading.Event()
        await db.create_function("hold", 0, lambda: (started.set(), release.wait(WAIT))[1] and 1)
        running = asyncio.ensure_future(db.execute("insert into t values (1, hold())"))
        assert await asyncio.to_thread(started.wait, WAIT)
        queued = asyncio.ensure_future(db.execute("insert into t values (2, 'queued')"))
        await asyncio.sleep(0)
        queued.cancel()
        running.cancel()
        release.set()
        for task in (queued, running):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await db.execute_fetchall("select i from t") == [(1,)]


async def test_queries_answered_at_once_do_not_starve_other_tasks(tmp_path: Path) -> None:
    async with fsql.connect(_make(tmp_path, 100)) as db:
        ticks, stop = 0, False

        async def counter() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(counter())
        await asyncio.sleep(0)
        before = ticks
        for i in range(500):
            async with db.execute("select s from t where i = ?", (i % 100,)) as cur:
                assert await cur.fetchone() == (f"s{i % 100}",)
        during = ticks - before
        stop = True
        await task
    assert during >= 500 // ferrio._pinned.YIELD_EVERY // 2


async def test_quick_results_arrive_while_a_long_query_runs(tmp_path: Path) -> None:
    async with fsql.connect(_make(tmp_path, 100)) as db:
        release = threading.Event()
        await db.create_function("hold", 0, lambda: release.wait(WAIT) and 1)
        quick = [asyncio.ensure_future(db.execute_fetchall("select s from t where i = ?", (i,))) for i in range(32)]
        long = asyncio.ensure_future(db.execute_fetchall("select hold()"))
        try:
            assert await asyncio.wait_for(asyncio.gather(*quick), WAIT) == [[(f"s{i}",)] for i in range(32)]
            assert not long.done()
        finally:
            release.set()
        assert await asyncio.wait_for(long, WAIT) == [(1,)]


def test_one_connection_serves_loops_in_several_threads(tmp_path: Path) -> None:
    path = _make(tmp_path, 2)
    db = asyncio.run(fsql.connect(path).__aenter__())
    results: dict[int, Any] = {}

    def run(k: int) -> None:
        async def query() -> Any:
            async with db.execute("select * from t") as cur:
                return await cur.fetchall()

        results[k] = asyncio.run(query())

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == {k: [(0, "s0"), (1, "s1")] for k in range(4)}
    asyncio.run(db.close())


async def test_bad_input_fails_at_the_call_with_what_was_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="iter_chunk_size"):
        fsql.connect(":memory:", iter_chunk_size=0)
    with pytest.raises(TypeError, match="iter_chunk_size"):
        fsql.connect(":memory:", iter_chunk_size="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="connector"):
        fsql.Connection(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not a sqlite3\.Connection"):
        await fsql.Connection(lambda: "nope")  # type: ignore[arg-type,return-value]
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await fsql.connect(tmp_path / "missing" / "x.db")

    def broken(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Any:
        raise LookupError("row factory")

    async with fsql.connect(_make(tmp_path, 3)) as db:
        async with db.execute("select * from t") as cur:
            cur.row_factory = broken
            with pytest.raises(LookupError, match="row factory"):
                await cur.fetchone()

        class BadRepr:
            def __repr__(self) -> str:
                raise RuntimeError("repr")

            def __conform__(self, protocol: object) -> object:
                raise RuntimeError("no adaptation")

        with pytest.raises((sqlite3.Error, RuntimeError)):
            await db.execute("select ?", (BadRepr(),))
        assert await db.execute_fetchall("select 1") == [(1,)]


def test_exit_with_an_open_connection_keeps_what_was_committed(tmp_path: Path) -> None:
    path = _make(tmp_path, 0)
    code = textwrap.dedent(
        f"""
        import asyncio, ferrio.sqlite as aiosqlite

        async def main():
            global db
            db = await aiosqlite.connect({path!r})
            await db.execute("insert into t values (1, 'kept')")
            await db.commit()
            await db.execute("insert into t values (2, 'lost')")

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("select s from t").fetchall() == [("kept",)]


async def test_a_connection_dropped_open_warns_and_is_closed() -> None:
    db = await fsql.connect(":memory:")
    thread = db._thread
    assert thread is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del db
        gc.collect()
    assert any("was deleted before being closed" in str(w.message) for w in caught)
    await thread._pool.__aexit__(None, None, None)
    assert thread.closed


def test_a_forked_child_gets_a_clear_error(tmp_path: Path) -> None:
    path = _make(tmp_path, 1)
    db = asyncio.run(fsql.connect(path).__aenter__())
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            asyncio.run(db.execute_fetchall("select 1"))
        except ferrio.PinnedClosedError as e:
            code = 0 if "parent" in str(e) else 4
        except BaseException:
            code = 5
        os._exit(code)
    for _ in range(int(WAIT / 0.05)):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        threading.Event().wait(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(status) == 0
    assert asyncio.run(db.execute_fetchall("select count(*) from t")) == [(1,)]
    asyncio.run(db.close())


def test_stop_from_sync_code_closes_without_a_loop() -> None:
    db = asyncio.run(fsql.connect(":memory:").__aenter__())
    assert db.stop() is None
    assert not db._running
    with pytest.raises(ValueError, match="Connection closed"):
        asyncio.run(db.execute_fetchall("select 1"))
