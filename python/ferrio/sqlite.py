"""sqlite3 from async code, with aiosqlite's API: moving from aiosqlite is an import change.

::

    import ferrio.sqlite as aiosqlite          # was: import aiosqlite

    async with aiosqlite.connect("app.db") as db:
        db.row_factory = aiosqlite.Row
        async with db.execute("select * from users where id = ?", (7,)) as cursor:
            row = await cursor.fetchone()
        await db.execute("insert into log values (?)", ("seen",))
        await db.commit()

Each connection lives on a thread of its own (a :class:`ferrio.PinnedThread`) and every call on
it runs there, in the order made, as with aiosqlite. What makes it faster:

- ``execute()`` of a statement that returns rows also fetches the first rows (up to 64) in the
  same trip to the thread, so ``fetchone()`` after it, and ``fetchall()`` of a short result,
  need no second trip; closing a cursor is queued without waiting for it.
- Calls from many tasks and threads reach the thread in bursts it runs back to back under one
  GIL hold, and results reach each event loop in batches behind one wake-up (ferrio's thread
  pool), where aiosqlite pays a queue hand-off and a ``call_soon_threadsafe`` per call.
- ``async for row in cursor`` fetches chunks that start at ``iter_chunk_size`` rows and double
  up to 1024 (or ``iter_chunk_size``, if larger).

What differs from aiosqlite, because of the read-ahead: rows are stepped when they are fetched
ahead, not when you ask for them (it shows only if the same connection changes the rows a cursor
is still reading, which sqlite leaves undefined anyway, or if a query calls a function with side
effects); and a cursor's ``row_factory`` runs on the thread that asks for the row, when it asks
for it (so setting it after ``execute()`` still applies, as in sqlite3). A closed connection
raises :exc:`ferrio.PinnedClosedError`, a :exc:`ValueError` saying "Connection closed", as
aiosqlite's does. Cancelling a call that has not started drops it; one that has started runs to
its end, its result discarded.
"""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable
from itertools import islice
from pathlib import Path
from sqlite3 import (
    DatabaseError,
    Error,
    IntegrityError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Row,
    Warning,
    paramstyle,
    register_adapter,
    register_converter,
    sqlite_version,
    sqlite_version_info,
)
from typing import Any, Generic, Literal, TypeVar

from . import _ferrio
from ._errors import PinnedClosedError, check_positive_int, not_callable, safe_repr
from ._pinned import DETACHED, Pinned, PinnedThread, _make_pinned

#: aiosqlite has one; this is ferrio's version.
__version__: str = _ferrio.__version__

__all__ = (
    "Connection",
    "Cursor",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Row",
    "Warning",
    "__version__",
    "connect",
    "paramstyle",
    "register_adapter",
    "register_converter",
    "sqlite_version",
    "sqlite_version_info",
)

T = TypeVar("T")
IsolationLevel = Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"] | None

#: Rows ``execute()`` fetches in the same trip as the statement.
READ_AHEAD = 64
#: The largest chunk ``async for`` grows to (unless ``iter_chunk_size`` is larger).
MAX_CHUNK = 1024

_get_running_loop = asyncio.get_running_loop
_NO_ROWS: list[Any] = []


# -- jobs: these run on the connection's thread ------------------------------------------------


def _fresh(cur: sqlite3.Cursor) -> tuple[sqlite3.Cursor, Any]:
    """Take the row factory the cursor inherited: rows travel bare and the caller applies it."""
    factory = cur.row_factory
    cur.row_factory = None
    return cur, factory


def _execute(conn: sqlite3.Connection, sql: str, parameters: Any, n: int) -> tuple[sqlite3.Cursor, Any, list[Any]]:
    cur, factory = _fresh(conn.execute(sql, parameters))
    return cur, factory, (cur.fetchmany(n) if cur.description is not None else _NO_ROWS)


def _executemany(conn: sqlite3.Connection, sql: str, parameters: Any) -> tuple[sqlite3.Cursor, Any]:
    return _fresh(conn.executemany(sql, parameters))


def _executescript(conn: sqlite3.Connection, script: str) -> tuple[sqlite3.Cursor, Any]:
    return _fresh(conn.executescript(script))


def _cursor(conn: sqlite3.Connection) -> tuple[sqlite3.Cursor, Any]:
    return _fresh(conn.cursor())


def _cursor_execute(cur: sqlite3.Cursor, sql: str, parameters: Any, n: int) -> list[Any]:
    cur.execute(sql, parameters)
    return cur.fetchmany(n) if cur.description is not None else _NO_ROWS


def _execute_insert(conn: sqlite3.Connection, sql: str, parameters: Any) -> Any:
    cursor = conn.execute(sql, parameters)
    cursor.execute("SELECT last_insert_rowid()")
    return cursor.fetchone()


def _execute_fetchall(conn: sqlite3.Connection, sql: str, parameters: Any) -> list[Any]:
    return conn.execute(sql, parameters).fetchall()


def _dump_chunk(it: Iterable[str], n: int) -> list[str]:
    return list(islice(it, n))


def _close_quietly(cur: sqlite3.Cursor) -> None:
    cur.close()


# -- the API -------------------------------------------------------------------------------------


class Result(Coroutine[Any, Any, T], Generic[T]):
    """What ``execute()`` and its siblings return: await it, or use it as ``async with``, which
    closes the cursor at the end, as aiosqlite's does."""

    __slots__ = ("_coro", "_obj")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._obj: Any = None

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None:
            return self._coro.throw(typ)
        if tb is None:
            return self._coro.throw(typ, val)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    async def __aenter__(self) -> T:
        obj = await self._coro
        self._obj = obj
        return obj

    async def __aexit__(self, *exc_info: object) -> None:
        if isinstance(self._obj, Cursor):
            await self._obj.close()


class Connection:
    """An sqlite3 connection on a thread of its own; made by :func:`connect`.

    Awaiting it (or ``async with``) opens the connection on its thread. Attributes that sqlite3
    lets any thread read and set (``row_factory``, ``text_factory``, ``isolation_level``,
    ``in_transaction``, ``total_changes``) are read and set directly, as aiosqlite does.

    Args:
        connector: Makes the ``sqlite3.Connection``; runs on the connection's thread.
        iter_chunk_size: Rows ``async for`` fetches per trip at first (it doubles from there).
    """

    def __init__(
        self,
        connector: Callable[[], sqlite3.Connection],
        iter_chunk_size: int = 64,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not callable(connector):
            raise not_callable(
                "ferrio.sqlite.Connection()", connector, "connector to be a function that returns a sqlite3.Connection"
            )
        check_positive_int("ferrio.sqlite.Connection()", "iter_chunk_size", iter_chunk_size)
        if loop is not None:
            warnings.warn(
                "ferrio.sqlite.Connection() does not use the `loop` parameter", DeprecationWarning, stacklevel=2
            )
        self._connector = connector
        self._iter_chunk_size = iter_chunk_size
        self._connection: sqlite3.Connection | None = None
        self._thread: PinnedThread | None = None
        self._pinned: Pinned[sqlite3.Connection] | None = None
        # Set once close() has finished or stop() was called: from then on every call raises, even
        # one a cursor could answer from the rows it read ahead (a call made while close() runs is
        # answered, as aiosqlite queues it behind the close).
        self._close_finished = False

    def __repr__(self) -> str:
        if self._connection is not None:
            state = "open"
        elif self._thread is None:
            state = "not connected"
        else:
            state = "closed"
        return f"<ferrio.sqlite.Connection {state}>"

    def __del__(self) -> None:
        if getattr(self, "_connection", None) is None:
            return
        warnings.warn(
            f"{self!r} was deleted before being closed. Use 'async with' or 'await db.close()' to close it.",
            ResourceWarning,
            stacklevel=1,
        )
        self._connection = None
        self._close_finished = True
        if self._pinned is not None:
            self._pinned._queue_close("was deleted before being closed")

    @property
    def _running(self) -> bool:
        """Whether the connection's thread still takes calls (aiosqlite's private flag of that name,
        which its own tests read)."""
        return self._thread is not None and not self._thread.closed

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = self._connection
        if conn is None:
            self._refuse(None)
        return conn  # type: ignore[return-value]  # _refuse() raised

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` on the connection's thread: the one hop every call makes."""
        thread = self._thread
        if thread is None or thread._refusal is not None or self._connection is None:
            self._refuse(func)
        return await thread._hop("ferrio.sqlite", func, args)  # type: ignore[union-attr]  # _refuse() raised

    def _refuse(self, func: object) -> None:
        thread = self._thread
        if thread is not None and thread._refusal is not None and "parent" in thread._refusal:
            raise PinnedClosedError(f"ferrio.sqlite: this connection {thread._refusal}")
        if self._pinned is not None and not self._close_finished:
            # close() is under way: aiosqlite queues this call behind the close, where sqlite3 raises.
            raise ProgrammingError("Cannot operate on a closed database.")
        raise PinnedClosedError("ferrio.sqlite: Connection closed (or never opened: await connect(...) first)")

    # -- opening and closing -------------------------------------------------------------------

    async def _connect(self) -> Connection:
        if self._connection is not None:
            return self
        if self._thread is not None:
            raise PinnedClosedError("ferrio.sqlite: Connection closed: a closed connection cannot be reopened")
        thread = self._thread = PinnedThread(name="ferrio-sqlite")
        try:
            conn = await thread.run(self._connector)
            if not isinstance(conn, sqlite3.Connection):
                raise TypeError(
                    f"ferrio.sqlite.Connection()'s connector returned {safe_repr(conn)}, not a sqlite3.Connection"
                )
        except BaseException:
            thread._queue_close("was closed: the connection failed to open")
            raise
        # The root proxy: closes the connection on its thread at exit, at fork refuses its use.
        self._pinned = _make_pinned(thread, conn, False, owns_thread=True)
        self._connection = conn
        return self

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._connect().__await__()

    async def __aenter__(self) -> Connection:
        return await self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Finish the queued calls, close the connection on its thread and end the thread.
        Idempotent."""
        pinned = self._pinned
        self._connection = None
        try:
            if pinned is not None:
                await pinned.aclose()
        finally:
            self._close_finished = True

    def stop(self) -> asyncio.Future[None] | None:
        """Close without waiting: for sync code and finalizers. Returns a future to await when
        called on a running event loop, else None. Prefer ``async with`` or ``await close()``."""
        self._connection = None
        self._close_finished = True
        pinned = self._pinned
        fut = pinned._queue_close("was closed") if pinned is not None else None
        try:
            loop = _get_running_loop()
        except RuntimeError:
            return None
        if fut is None:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        return asyncio.wrap_future(fut, loop=loop)

    # -- statements ----------------------------------------------------------------------------

    def cursor(self) -> Result[Cursor]:
        """A new cursor (``await db.cursor()`` or ``async with db.cursor() as cursor``)."""
        return Result(self._new_cursor())

    async def _new_cursor(self) -> Cursor:
        cur, factory = await self._run(_cursor, self._conn)
        return Cursor(self, cur, factory)

    def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Result[Cursor]:
        """Run one statement; a cursor over its rows (the first of them already fetched)."""
        return Result(self._execute(sql, [] if parameters is None else parameters))

    async def _execute(self, sql: str, parameters: Any) -> Cursor:
        cur, factory, rows = await self._run(_execute, self._connection, sql, parameters, READ_AHEAD)
        return Cursor(self, cur, factory, rows)

    def execute_insert(self, sql: str, parameters: Iterable[Any] | None = None) -> Result[Any]:
        """Run an insert; the row ``(last_insert_rowid(),)``."""
        return Result(self._run(_execute_insert, self._connection, sql, [] if parameters is None else parameters))

    def execute_fetchall(self, sql: str, parameters: Iterable[Any] | None = None) -> Result[Iterable[Any]]:
        """Run one statement and return all its rows, in one trip."""
        return Result(self._run(_execute_fetchall, self._connection, sql, [] if parameters is None else parameters))

    def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Result[Cursor]:
        """Run one statement for each parameter set, in one trip (the iterable is consumed on the
        connection's thread)."""
        return Result(self._executemany(_executemany, sql, parameters))

    def executescript(self, sql_script: str) -> Result[Cursor]:
        """Run a script of statements, in one trip."""
        return Result(self._executemany(_executescript, sql_script))

    async def _executemany(self, job: Callable[..., tuple[sqlite3.Cursor, Any]], *args: Any) -> Cursor:
        cur, factory = await self._run(job, self._connection, *args)
        return Cursor(self, cur, factory)

    async def commit(self) -> None:
        """Commit the current transaction."""
        await self._run(self._conn.commit)

    async def rollback(self) -> None:
        """Roll back the current transaction."""
        await self._run(self._conn.rollback)

    async def interrupt(self) -> None:
        """Interrupt the query running now (sqlite3 lets any thread do this; it does not wait)."""
        self._conn.interrupt()

    async def create_function(
        self, name: str, num_params: int, func: Callable[..., Any], deterministic: bool = False
    ) -> None:
        """Register a SQL function; it runs on the connection's thread."""
        await self._run(_create_function, self._conn, name, num_params, func, deterministic)

    async def enable_load_extension(self, value: bool) -> None:
        await self._run(self._conn.enable_load_extension, value)  # type: ignore[attr-defined,unused-ignore]

    async def load_extension(self, path: str) -> None:
        await self._run(self._conn.load_extension, path)  # type: ignore[attr-defined,unused-ignore]

    async def set_progress_handler(self, handler: Callable[[], int | None] | None, n: int) -> None:
        await self._run(self._conn.set_progress_handler, handler, n)

    async def set_trace_callback(self, handler: Callable[[str], object] | None) -> None:
        await self._run(self._conn.set_trace_callback, handler)

    async def set_authorizer(
        self, authorizer_callback: Callable[[int, str | None, str | None, str | None, str | None], int] | None
    ) -> None:
        await self._run(self._conn.set_authorizer, authorizer_callback)

    async def iterdump(self) -> AsyncIterator[str]:
        """The database as SQL text, line by line, fetched in chunks from the connection's thread."""
        it = await self._run(self._conn.iterdump)
        done = False
        try:
            while not done:
                lines = await self._run(_dump_chunk, it, 256)
                done = len(lines) < 256
                for line in lines:
                    yield line
        finally:
            # Left early: the dump's generator reads the connection, so it is closed on its thread.
            if not done and self._connection is not None:
                self._thread._core.submit(  # type: ignore[union-attr]  # open, so it has a thread
                    api="ferrio.sqlite.Connection.iterdump()", fut=DETACHED, func=it.close, args=(), coroutine=False
                )

    async def backup(
        self,
        target: Connection | sqlite3.Connection,
        *,
        pages: int = 0,
        progress: Callable[[int, int, int], object] | None = None,
        name: str = "main",
        sleep: float = 0.250,
    ) -> None:
        """Copy this database into ``target`` (a ferrio.sqlite or a sqlite3 connection)."""
        if isinstance(target, Connection):
            target = target._conn
        await self._run(_backup, self._conn, target, pages, progress, name, sleep)

    # -- attributes read and set directly, as aiosqlite does -------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: IsolationLevel) -> None:
        self._conn.isolation_level = value

    @property
    def row_factory(self) -> Any:
        return self._conn.row_factory

    @row_factory.setter
    def row_factory(self, factory: Any) -> None:
        self._conn.row_factory = factory

    @property
    def text_factory(self) -> Any:
        return self._conn.text_factory

    @text_factory.setter
    def text_factory(self, factory: Any) -> None:
        self._conn.text_factory = factory

    @property
    def total_changes(self) -> int:
        return self._conn.total_changes


def _create_function(
    conn: sqlite3.Connection, name: str, n: int, func: Callable[..., Any], deterministic: bool
) -> None:
    conn.create_function(name, n, func, deterministic=deterministic)


def _backup(
    conn: sqlite3.Connection,
    target: sqlite3.Connection,
    pages: int,
    progress: Callable[[int, int, int], object] | None,
    name: str,
    sleep: float,
) -> None:
    conn.backup(target, pages=pages, progress=progress, name=name, sleep=sleep)


class Cursor:
    """A sqlite3 cursor whose calls run on its connection's thread, with the rows fetched ahead
    kept here.

    ``rowcount``, ``lastrowid``, ``description``, ``arraysize`` and ``connection`` are read
    directly, as aiosqlite does; ``row_factory`` is this cursor's own (inherited from the
    connection when the cursor was made), applied to each row as it is handed out.
    """

    def __init__(
        self, conn: Connection, cursor: sqlite3.Cursor, row_factory: Any, rows: list[Any] | None = None
    ) -> None:
        self._conn = conn
        self._cursor = cursor
        self.row_factory = row_factory
        self.iter_chunk_size = conn._iter_chunk_size
        self._rows: deque[Any] = deque(rows) if rows else deque()
        # Whether the cursor has nothing more to give beyond _rows: nothing executed yet, no
        # result set, or a read that came back short.
        self._done = rows is None or len(rows) < READ_AHEAD
        self._cursor_closed = False

    def __repr__(self) -> str:
        return f"<ferrio.sqlite.Cursor of {self._conn!r}>"

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for row in cursor``: the rows, fetched in growing chunks."""
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        size = self.iter_chunk_size
        cap = max(size, MAX_CHUNK)
        while True:
            rows = await self.fetchmany(size)
            if not rows:
                return
            for row in rows:
                yield row
            size = min(size * 2, cap)

    def _made(self, rows: list[Any]) -> list[Any]:
        factory = self.row_factory
        if factory is None:
            return rows
        cur = self._cursor
        return [factory(cur, r) for r in rows]

    def _closed(self) -> None:
        raise ProgrammingError("Cannot operate on a closed cursor.")

    def _check_open(self) -> None:
        # The rows read ahead must not outlive the connection: aiosqlite makes a trip for every
        # fetch, so after close() each one raises "Connection closed".
        if self._conn._close_finished:
            self._conn._refuse(None)

    def _reset(self, rows: list[Any], n: int) -> None:
        self._rows = deque(rows)
        self._done = len(rows) < n

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Cursor:
        """Run one statement on this cursor; returns the cursor."""
        if self._cursor_closed:
            self._closed()
        rows = await self._conn._run(
            _cursor_execute, self._cursor, sql, [] if parameters is None else parameters, READ_AHEAD
        )
        self._reset(rows, READ_AHEAD)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Cursor:
        """Run one statement for each parameter set; returns the cursor."""
        if self._cursor_closed:
            self._closed()
        await self._conn._run(self._cursor.executemany, sql, parameters)
        self._reset(_NO_ROWS, 1)
        return self

    async def executescript(self, sql_script: str) -> Cursor:
        """Run a script; returns the cursor."""
        if self._cursor_closed:
            self._closed()
        await self._conn._run(self._cursor.executescript, sql_script)
        self._reset(_NO_ROWS, 1)
        return self

    async def fetchone(self) -> Any:
        """The next row, or None."""
        self._check_open()
        rows = self._rows
        if not rows:
            if self._cursor_closed:
                self._closed()
            if self._done:
                return None
            more = await self._conn._run(self._cursor.fetchmany, self.iter_chunk_size)
            self._reset(more, self.iter_chunk_size)
            rows = self._rows
            if not rows:
                return None
        row = rows.popleft()
        factory = self.row_factory
        return row if factory is None else factory(self._cursor, row)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` rows (default: ``arraysize``)."""
        self._check_open()
        if self._cursor_closed:
            self._closed()
        n = self._cursor.arraysize if size is None else size
        rows = self._rows
        have = len(rows)
        if have >= n:
            out = [rows.popleft() for _ in range(n)]
        else:
            out = list(rows)
            rows.clear()
            if not self._done:
                more = await self._conn._run(self._cursor.fetchmany, n - have)
                self._done = len(more) < n - have
                out.extend(more)
        return self._made(out)

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        self._check_open()
        if self._cursor_closed:
            self._closed()
        out = list(self._rows)
        self._rows.clear()
        if not self._done:
            out.extend(await self._conn._run(self._cursor.fetchall))
            self._done = True
        return self._made(out)

    async def close(self) -> None:
        """Close the cursor on its connection's thread, after the calls queued before it (without
        waiting for it).

        Raises:
            ferrio.PinnedClosedError: the connection was closed.
        """
        if self._cursor_closed:
            return
        conn = self._conn
        thread = conn._thread
        if conn._connection is None or thread is None or thread._refusal is not None:
            conn._refuse(None)
        self._rows.clear()
        if self._done:
            # sqlite3 has already let go of the statement of a cursor read to its end: closing it
            # on the thread would change nothing, so mark it closed here and skip the trip.
            self._cursor_closed = True
            return
        self._done = self._cursor_closed = True
        # Queued, not awaited: the next call on the connection runs after it all the same.
        thread._core.submit(  # type: ignore[union-attr]  # _refuse() raised if thread is None
            api="ferrio.sqlite.Cursor.close()", fut=DETACHED, func=_close_quietly, args=(self._cursor,), coroutine=False
        )

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def connection(self) -> sqlite3.Connection:
        return self._cursor.connection


def connect(
    database: str | bytes | Path,
    *,
    iter_chunk_size: int = 64,
    loop: asyncio.AbstractEventLoop | None = None,
    **kwargs: Any,
) -> Connection:
    """A connection to ``database``, opened on its own thread when awaited (or entered with
    ``async with``). ``kwargs`` go to :func:`sqlite3.connect`.

    ::

        async with ferrio.sqlite.connect("app.db") as db:
            ...
    """
    if loop is not None:
        warnings.warn("ferrio.sqlite.connect() does not use the `loop` parameter", DeprecationWarning, stacklevel=2)
    location = database.decode("utf-8") if isinstance(database, bytes) else str(database)

    def connector() -> sqlite3.Connection:
        conn: sqlite3.Connection = sqlite3.connect(location, **kwargs)
        return conn

    return Connection(connector, iter_chunk_size)
