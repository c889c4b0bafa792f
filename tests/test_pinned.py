"""ferrio.pinned: objects that live on one thread, reached from tasks, threads and other loops.

Real sqlite3 files and real threads throughout; hand-offs go through events with bounded waits.
"""

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

import ferrio
import pytest

WAIT = 10.0


class Recorder:
    """A thread-affine stand-in: records the thread of every call, and of its close."""

    def __init__(self) -> None:
        self.made_on = threading.get_ident()
        self.calls: list[tuple[str, int, int]] = []
        self.closed_on: int | None = None
        self.value = 1

    def call(self, who: str, seq: int) -> int:
        self.calls.append((who, seq, threading.get_ident()))
        return seq

    def ident(self) -> int:
        return threading.get_ident()

    def block(self, started: threading.Event, release: threading.Event) -> str:
        started.set()
        assert release.wait(WAIT)
        return "done"

    def fail(self) -> None:
        raise KeyError("from the pinned thread")

    def close(self) -> None:
        self.closed_on = threading.get_ident()


def recorder(box: list[Recorder]) -> Recorder:
    """A factory for ferrio.pinned that makes a Recorder there and keeps it in ``box`` for the test."""
    rec = Recorder()
    box.append(rec)
    return rec


def _db(tmp_path: Path) -> str:
    path = str(tmp_path / "t.db")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("create table t (x integer)")
    return path


async def test_calls_from_tasks_and_threads_run_in_order_on_the_thread_that_made_the_object() -> None:
    box: list[Recorder] = []
    p = await ferrio.pinned(recorder, box)
    (rec,) = box
    async with p:
        made_on = rec.made_on

        async def task(name: str) -> None:
            for i in range(50):
                await p.call(name, i)

        def thread(name: str) -> None:
            for i in range(50):
                p.sync.call(name, i)

        threads = [threading.Thread(target=thread, args=(f"thread{k}",)) for k in range(3)]
        for t in threads:
            t.start()
        await asyncio.gather(*(task(f"task{k}") for k in range(8)))
        for t in threads:
            await asyncio.get_running_loop().run_in_executor(None, t.join, WAIT)
            assert not t.is_alive()
    assert made_on != threading.get_ident()
    assert {ident for _, _, ident in rec.calls} == {made_on}
    by_caller: dict[str, list[int]] = {}
    for who, seq, _ in rec.calls:
        by_caller.setdefault(who, []).append(seq)
    assert len(by_caller) == 11
    assert all(seqs == list(range(50)) for seqs in by_caller.values())
    assert rec.closed_on == made_on


async def test_cursors_come_back_proxied_and_rows_as_plain_data(tmp_path: Path) -> None:
    conn = await ferrio.pinned(sqlite3.connect, _db(tmp_path))
    async with conn:
        await conn.executemany("insert into t values (?)", [(i,) for i in range(5)])
        cur = await conn.execute("select x from t order by x")
        assert isinstance(cur, ferrio.Pinned)
        assert "sqlite3.Cursor" in repr(cur)
        assert await cur.fetchone() == (0,)
        assert await cur.fetchall() == [(1,), (2,), (3,), (4,)]
        await conn.row_factory.set(sqlite3.Row)
        assert await conn.row_factory is sqlite3.Row
        row = await (await conn.execute("select x from t where x = 3")).fetchone()
        assert type(row) is sqlite3.Row
        assert row["x"] == 3
        assert await conn.total_changes == 5
        assert await conn.in_transaction is True
        await conn.commit()
        assert await conn.in_transaction is False


async def test_proxy_rules_choose_what_comes_back_proxied() -> None:
    owner = ferrio.PinnedThread()
    async with owner:
        plain = await ferrio.pinned(lambda: Recorder(), thread=owner, proxy=False)
        every = await ferrio.pinned(lambda: Recorder(), thread=owner, proxy=True)
        typed = await ferrio.pinned(lambda: Recorder(), thread=owner, proxy=(int,))
        judged = await ferrio.pinned(lambda: Recorder(), thread=owner, proxy=lambda r: r == 7)
        assert await plain.call("a", 7) == 7
        assert isinstance(await every.call("a", 7), ferrio.Pinned)
        assert isinstance(await typed.call("a", 7), ferrio.Pinned)
        assert isinstance(await judged.call("a", 7), ferrio.Pinned)
        assert await judged.call("a", 8) == 8
        # Several objects, one thread.
        other = await ferrio.pinned(lambda: Recorder(), thread=owner)
        assert await plain.ident() == await other.ident()
    assert plain.closed
    assert every.closed


async def test_the_objects_own_close_is_reachable_through_attr() -> None:
    box: list[Recorder] = []
    p = await ferrio.pinned(recorder, box)
    (rec,) = box
    await p.attr("close")()  # the object's close(), not the proxy's
    assert rec.closed_on is not None
    assert not p.closed
    await p.aclose()
    assert p.closed


async def test_errors_keep_their_type_and_the_frame_that_raised() -> None:
    p = await ferrio.pinned(Recorder)
    async with p:
        with pytest.raises(KeyError, match="from the pinned thread") as info:
            await p.fail()
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert "fail" in frames
        with pytest.raises(AttributeError):
            await p.no_such_method()


async def test_bad_arguments_raise_at_the_call() -> None:
    with pytest.raises(TypeError, match=r"ferrio.pinned\(\).*factory"):
        await ferrio.pinned(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="thread="):
        await ferrio.pinned(Recorder, thread="t")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="proxy="):
        await ferrio.pinned(Recorder, proxy=[int])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name="):
        ferrio.PinnedThread(name=3)  # type: ignore[arg-type]
    owner = ferrio.PinnedThread()
    async with owner:

        async def coro() -> None:
            pass

        with pytest.raises(TypeError, match="coroutine"):
            await owner.run(coro)


async def test_a_call_cancelled_before_it_starts_never_runs_and_a_started_one_runs_to_its_end() -> None:
    box: list[Recorder] = []
    p = await ferrio.pinned(recorder, box)
    (rec,) = box
    async with p:
        started, release = threading.Event(), threading.Event()
        blocker = asyncio.ensure_future(p.block(started, release))
        assert await asyncio.to_thread(started.wait, WAIT)
        queued = asyncio.ensure_future(p.call("queued", 1))
        await asyncio.sleep(0)
        queued.cancel()
        blocker.cancel()  # running: it goes on to its end
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await queued
        with pytest.raises(asyncio.CancelledError):
            await blocker
        assert await p.call("after", 2) == 2
    assert [who for who, _, _ in rec.calls] == ["after"]


async def test_closing_with_calls_in_flight_hangs_nothing_and_later_calls_say_closed() -> None:
    p = await ferrio.pinned(Recorder)
    started, release = threading.Event(), threading.Event()
    blocker = asyncio.ensure_future(p.block(started, release))
    assert await asyncio.to_thread(started.wait, WAIT)
    queued = [asyncio.ensure_future(p.call("q", i)) for i in range(5)]
    closing = asyncio.ensure_future(p.aclose())
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(blocker, WAIT) == "done"
    assert await asyncio.wait_for(asyncio.gather(*queued), WAIT) == list(range(5))
    await asyncio.wait_for(closing, WAIT)
    with pytest.raises(ferrio.PinnedClosedError, match=r"Recorder\.call\(\).*closed"):
        await p.call("late", 0)
    with pytest.raises(ValueError, match="closed"):  # what aiosqlite users catch
        await p.value
    await p.aclose()  # twice is fine


def test_close_from_sync_code_waits_for_the_close_on_the_thread() -> None:
    box: list[Recorder] = []
    owner = ferrio.PinnedThread()
    p = asyncio.run(ferrio.pinned(recorder, box, thread=owner))
    (rec,) = box
    assert p.sync.call("sync", 1) == 1
    owner.close()
    assert rec.closed_on == rec.made_on
    assert p.closed
    with pytest.raises(ferrio.PinnedClosedError):
        owner.run_sync(int)


async def test_the_sync_view_refuses_to_block_a_running_loop() -> None:
    p = await ferrio.pinned(Recorder)
    async with p:
        with pytest.raises(RuntimeError, match="would block the event loop"):
            p.sync.call("x", 1)
        with pytest.raises(RuntimeError, match="would block the event loop"):
            p.thread.run_sync(int)


async def test_the_sync_view_on_the_owner_thread_calls_directly() -> None:
    p = await ferrio.pinned(Recorder)
    async with p:
        # From inside a pinned call, the blocking view must not queue behind the call itself.
        assert await p.thread.run(lambda: p.sync.call("inner", 5)) == 5


async def test_awaiting_a_pinned_call_from_its_own_thread_raises_instead_of_hanging() -> None:
    p = await ferrio.pinned(Recorder)
    async with p:

        def nested_loop() -> str:
            async def inner() -> object:
                return await p.call("x", 1)

            try:
                asyncio.run(inner())
            except RuntimeError as e:
                return str(e)
            return "no error"

        assert "itself" in await p.thread.run(nested_loop)


def test_a_proxy_outlives_its_loop_and_serves_other_loops_and_threads(tmp_path: Path) -> None:
    db = _db(tmp_path)
    conn = asyncio.run(ferrio.pinned(sqlite3.connect, db))

    async def insert(i: int) -> None:
        await conn.execute("insert into t values (?)", (i,))

    asyncio.run(insert(1))  # a second loop, after the first closed
    errors: list[BaseException] = []

    def own_loop(k: int) -> None:
        try:
            asyncio.run(insert(10 + k))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=own_loop, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors
    conn.sync.commit()
    assert sorted(x for (x,) in conn.sync.execute("select x from t").fetchall()) == [1, 10, 11, 12, 13]
    conn.sync.close()
    assert conn.closed


async def test_transactions_stay_apart_across_awaits_until_commit(tmp_path: Path) -> None:
    db = _db(tmp_path)
    owner = ferrio.PinnedThread()
    async with owner:
        a = await ferrio.pinned(sqlite3.connect, db, thread=owner)
        b = await ferrio.pinned(sqlite3.connect, db, thread=owner)
        await a.execute("insert into t values (1)")
        await asyncio.sleep(0)
        assert await (await b.execute("select count(*) from t")).fetchone() == (0,)
        await a.rollback()
        await a.execute("insert into t values (2)")
        await a.commit()
        assert await (await b.execute("select x from t")).fetchall() == [(2,)]


def test_a_forked_child_gets_a_clear_error(tmp_path: Path) -> None:
    conn = asyncio.run(ferrio.pinned(sqlite3.connect, _db(tmp_path)))
    pid = os.fork()
    if pid == 0:  # the child: report by exit code only
        code = 3
        try:
            asyncio.run(conn.execute("select 1"))
        except ferrio.PinnedClosedError as e:
            code = 0 if "forked child" in str(e) else 4
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
    assert conn.sync.execute("select 1").fetchone() == (1,)  # the parent's proxy still works
    conn.sync.close()


def test_interpreter_exit_closes_open_pinned_objects_on_their_thread(tmp_path: Path) -> None:
    db = _db(tmp_path)
    code = textwrap.dedent(
        f"""
        import asyncio, sqlite3, threading, ferrio

        class Closer:
            def close(self):
                print("closed on", threading.current_thread().name, flush=True)

        async def main():
            global conn, closer
            conn = await ferrio.pinned(sqlite3.connect, {db!r})
            await conn.execute("insert into t values (1)")
            await conn.commit()
            await conn.execute("insert into t values (2)")   # never committed
            closer = await ferrio.pinned(Closer)

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("closed on ferrio-pinned-"), proc.stdout
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        assert conn.execute("select x from t").fetchall() == [(1,)]


async def test_a_root_proxy_dropped_open_warns_and_closes_on_its_thread() -> None:
    box: list[Recorder] = []
    p = await ferrio.pinned(recorder, box)
    (rec,) = box
    owner = p.thread
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del p
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    await owner._pool.__aexit__(None, None, None)  # the close ran, then the thread ended
    assert rec.closed_on == rec.made_on


async def test_calls_answered_at_once_still_let_other_tasks_run() -> None:
    p = await ferrio.pinned(Recorder)
    async with p:
        ticks = 0
        stop = False

        async def counter() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(counter())
        await asyncio.sleep(0)
        before = ticks
        for i in range(200):
            await p.call("fast", i)
        during = ticks - before
        stop = True
        await task
    assert during >= 200 // ferrio._pinned.YIELD_EVERY // 2


async def test_results_finished_before_a_long_call_arrive_while_it_runs() -> None:
    p = await ferrio.pinned(Recorder)
    async with p:
        started, release = threading.Event(), threading.Event()
        quick = [asyncio.ensure_future(p.call("quick", i)) for i in range(32)]
        long = asyncio.ensure_future(p.block(started, release))
        try:
            # The quick calls ran before the long one on the same thread, in one batch with it: their
            # results must not wait for it (the held signals go out within 2 ms).
            assert await asyncio.wait_for(asyncio.gather(*quick), WAIT) == list(range(32))
            assert not long.done()
        finally:
            release.set()
        assert await asyncio.wait_for(long, WAIT) == "done"


def test_pinned_thread_repr_and_name() -> None:
    owner = ferrio.PinnedThread(name="gui")
    assert owner.name == "gui"
    assert "'gui' open" in repr(owner)
    assert owner.run_sync(lambda: threading.current_thread().name).startswith("gui")
    owner.close()
    assert owner.closed
    assert "closed" in repr(owner)
