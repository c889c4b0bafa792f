"""Thread-affine objects from async code: :func:`pinned`, :class:`Pinned` and :class:`PinnedThread`.

An object pinned to a thread is made there by a factory and only ever touched there. The thread
is a one-worker :class:`~ferrio.ThreadPool` whose worker never retires, so every job it runs runs
on the same OS thread, in submission order, and a burst of calls from many tasks and threads costs
it one wake-up and one GIL hold (the pool's batches); results reach each event loop in batches
behind one wake-up (the loop's waker), as for :func:`ferrio.to_thread`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import itertools
import math
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar, cast

from ._errors import PinnedClosedError, describe, not_callable, safe_repr
from ._threads import ThreadPool, _coroutine_flag
from ._wakers import waker_for

T = TypeVar("T")
R = TypeVar("R")

_get_running_loop = asyncio.get_running_loop
_running_loop_or_none = asyncio._get_running_loop
_copy_context = contextvars.copy_context
_get_ident = threading.get_ident


async def _yield() -> None:
    await asyncio.sleep(0)


#: Every thread alive, so interpreter exit and fork can reach them.
_threads: weakref.WeakSet[PinnedThread] = weakref.WeakSet()
_counter_lock = threading.Lock()
_counter = 0

#: Types that are plain data even though their module makes thread-affine objects: never proxied
#: by the default rule. ``sqlite3.Row`` is the one case of the standard library; :func:`pinned`'s
#: ``proxy=`` covers the rest.
VALUE_TYPES: set[type] = set()
try:
    import sqlite3 as _sqlite3
except ImportError:  # pragma: no cover - CPython built without sqlite3
    pass
else:
    VALUE_TYPES.add(_sqlite3.Row)

ProxyRule = Callable[[object], bool]

#: How long a call made with nothing else in flight waits for its result with the GIL released
#: before it lets the loop sleep (a round trip through a sleeping loop took 60-150 us here; a
#: call answered within the wait takes 10-20 us).
SPIN_US = 50
#: Calls answered within the wait in a row before the caller yields to the loop once.
YIELD_EVERY = 16


def _next_name() -> str:
    global _counter
    with _counter_lock:
        _counter += 1
        return f"ferrio-pinned-{_counter}"


class _OwnerPool(ThreadPool):
    """The one-worker pool of a :class:`PinnedThread`. It holds each batch's completion signals
    to the batch's end (at most 2 ms): a burst of short calls then wakes each loop once, after
    the worker is done, instead of at its first result, when the loop would take the GIL the
    worker drops inside each call (crates/ferrio-py/src/deferred.rs)."""

    _hold_signals = True


class PinnedThread:
    """One OS thread that owns objects and runs every call on them, in order.

    ::

        owner = ferrio.PinnedThread()
        a = await ferrio.pinned(sqlite3.connect, "a.db", thread=owner)
        b = await ferrio.pinned(sqlite3.connect, "b.db", thread=owner)   # the same thread
        await owner.aclose()                                            # closes a and b there

    The thread starts on the first call and lives until :meth:`aclose` (or :meth:`close`),
    or interpreter exit, which close the objects pinned to it on the thread first. Calls made
    after that raise :exc:`ferrio.PinnedClosedError`, as do calls from a forked child (the
    thread, and so the objects, belong to the parent).

    Args:
        name: The thread's name, for tracebacks, logs and the watchdog (default
            ``ferrio-pinned-N``).
    """

    def __init__(self, *, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"ferrio.PinnedThread() expected name= to be a str or None, got {safe_repr(name)}")
        self._name = _next_name() if name is None else name
        # A one-worker pool whose worker never retires: one OS thread for the pool's whole life.
        self._pool = _OwnerPool(1, thread_name_prefix=self._name, idle_timeout=math.inf)
        self._core = self._pool._core
        #: Why calls are refused (closed, forked), or None while open.
        self._refusal: str | None = None
        self._objects: weakref.WeakSet[Pinned[Any]] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._ident: int | None = None
        # Calls awaited from tasks now, and calls answered in a row without the loop (_hop).
        self._in_flight = 0
        self._streak = 0
        _threads.add(self)
        # The first job: the thread records who it is, so run_sync() on it calls directly.
        self._core.submit(api="PinnedThread()", fut=DETACHED, func=_record_ident, args=(self,), coroutine=False)

    def __repr__(self) -> str:
        state = "open" if self._refusal is None else "closed"
        return f"<ferrio.PinnedThread {self._name!r} {state}>"

    @property
    def name(self) -> str:
        """The thread's name (the pool names its one worker ``{name}-0``)."""
        return self._name

    @property
    def closed(self) -> bool:
        """Whether calls are refused: closed, or this is a forked child."""
        return self._refusal is not None

    # -- running calls --------------------------------------------------------------------------

    def _check(self, api: str) -> None:
        if self._refusal is not None:
            raise PinnedClosedError(f"{api} was called on {self!r}, which {self._refusal}")

    async def run(self, func: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run ``func(*args, **kwargs)`` on the thread, after every call submitted before it.

        The caller's :mod:`contextvars` context is copied into the call. Cancellation: a call not
        yet started is dropped; one that has started runs to its end (a thread cannot be
        interrupted safely) and its result is discarded.

        Raises:
            ferrio.PinnedClosedError: the thread was closed, or this is a forked child.
            TypeError: ``func`` is not callable, or is a coroutine function.
        """
        if self._refusal is not None:
            self._check("PinnedThread.run()")
        return await self._hop("PinnedThread.run()", func, args, kwargs or None, _copy_context(), _coroutine_flag(func))

    async def _hop(
        self,
        api: str,
        func: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        context: contextvars.Context | None = None,
        coroutine: bool | None = False,
    ) -> R:
        """The trip every async call makes: queue ``func(*args, **kwargs)``, and wait for it.

        When nothing else of this thread's is in flight from a task, the call is most likely
        back sooner than the loop could sleep and wake (tens of microseconds here): wait for it
        up to :data:`SPIN_US` microseconds with the GIL released, and take the result without
        the loop's wake-up. Every :data:`YIELD_EVERY` calls answered that way in a row give the
        loop a turn, so a task that makes such calls back to back does not starve the others.
        """
        if _get_ident() == self._ident:
            raise RuntimeError(
                f"{api} was awaited on {self._name!r} itself (from an event loop running inside a pinned call): "
                "it would wait forever for its own thread; call the object directly there, or use proxy.sync"
            )
        loop = _get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        waker = waker_for(loop)
        if self._in_flight:
            self._core.submit(
                api=api, fut=fut, func=func, args=args, kwargs=kwargs, context=context, waker=waker, coroutine=coroutine
            )
        elif self._core.submit_and_wait(
            api=api,
            fut=fut,
            func=func,
            args=args,
            kwargs=kwargs,
            context=context,
            waker=waker,
            coroutine=coroutine,
            micros=SPIN_US,
        ):
            waker.drain()
            if fut.done():
                self._streak += 1
                if self._streak >= YIELD_EVERY:
                    self._streak = 0
                    await _yield()
                return fut.result()
        self._streak = 0
        self._in_flight += 1
        try:
            return await fut
        finally:
            self._in_flight -= 1

    def submit(self, func: Callable[..., R], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[R]:
        """Queue ``func(*args, **kwargs)`` on the thread from any thread; a
        :class:`concurrent.futures.Future` gets its outcome.

        Raises:
            ferrio.PinnedClosedError: the thread was closed, or this is a forked child.
            TypeError: ``func`` is not callable, or is a coroutine function.
        """
        self._check("PinnedThread.submit()")
        fut: concurrent.futures.Future[R] = concurrent.futures.Future()
        self._core.submit(
            api="PinnedThread.submit()",
            fut=fut,
            func=func,
            args=args,
            kwargs=kwargs or None,
            coroutine=_coroutine_flag(func),
        )
        return fut

    def run_sync(self, func: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run ``func(*args, **kwargs)`` on the thread and wait for it: for sync code and other
        threads. Called on the thread itself (from inside a pinned call), it calls ``func``
        directly, so it cannot deadlock.

        Raises:
            ferrio.PinnedClosedError: the thread was closed, or this is a forked child.
            RuntimeError: called on a thread running an event loop, which it would block; await
                :meth:`run` (or the proxy's method) there instead.
            KeyboardInterrupt: Ctrl-C during the wait; the call itself still runs.
        """
        if _get_ident() == self._ident:
            return func(*args, **kwargs)
        self._check("PinnedThread.run_sync()")
        if _running_loop_or_none() is not None:
            raise RuntimeError(
                f"PinnedThread.run_sync() would block the event loop running on this thread until "
                f"{describe(func)} finishes on {self._name!r}: await the async form instead "
                "(await proxy.method(...), or await thread.run(func, ...))"
            )
        return self.submit(func, *args, **kwargs).result()

    # -- pinning --------------------------------------------------------------------------------

    async def pin(
        self,
        factory: Callable[..., T],
        /,
        *args: Any,
        proxy: ProxyRule | tuple[type, ...] | bool | None = None,
        **kwargs: Any,
    ) -> Pinned[T]:
        """Call ``factory(*args, **kwargs)`` on this thread and return a proxy to its result; see
        :func:`ferrio.pinned`."""
        if not callable(factory):
            raise not_callable("ferrio.pinned()", factory, "a factory that makes the object to pin")
        rule = _proxy_rule(proxy)
        self._check("ferrio.pinned()")
        obj = await self.run(factory, *args, **kwargs)
        return _make_pinned(self, obj, rule, owns_thread=False)

    # -- closing --------------------------------------------------------------------------------

    def _queue_close(self, why: str) -> concurrent.futures.Future[None] | None:
        """Refuse new calls, close every object pinned here on the thread, then let the thread
        exit; None if it was already closing. Usable where no loop is (exit, a finalizer)."""
        with self._lock:
            if self._refusal is not None:
                return None
            self._refusal = why
            # Oldest first: _close_all closes them newest first (a cursor before its connection).
            open_ = sorted((p for p in list(self._objects) if p._refusal is None), key=_seq_of)
            objects = [p._refuse(why) for p in open_]
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            self._core.submit(
                api="PinnedThread.aclose()", fut=fut, func=_close_all, args=(objects,), coroutine=False, always_run=True
            )
        except RuntimeError:  # the interpreter is exiting and refuses new jobs: nothing more to do
            fut.set_result(None)
        self._pool.shutdown(wait=False)
        return fut

    async def aclose(self) -> None:
        """Close every object pinned to this thread (calling its ``close()``, if it has one) on the
        thread, after the calls already queued, then let the thread exit; wait for both without
        blocking the loop. Idempotent. Cancelling the wait does not stop the close."""
        fut = self._queue_close("was closed")
        if fut is not None:
            await asyncio.shield(asyncio.wrap_future(fut))
        await self._pool.__aexit__(None, None, None)

    def close(self) -> None:
        """:meth:`aclose` for sync code: block until the objects are closed and the thread exited.

        Raises:
            RuntimeError: called on a thread running an event loop (await :meth:`aclose` there).
        """
        if _running_loop_or_none() is not None:
            raise RuntimeError("PinnedThread.close() would block the event loop: await thread.aclose() instead")
        fut = self._queue_close("was closed")
        if fut is not None:
            fut.result()
        if _get_ident() != self._ident:
            self._pool.shutdown(wait=True)

    async def __aenter__(self) -> PinnedThread:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._refusal = "belongs to the parent process (this is a forked child): pin a new object here"
        for p in list(self._objects):
            p._refuse(self._refusal)


class _Detached:
    """The target of a job nobody waits for: quacks like the :class:`concurrent.futures.Future`
    the pool resolves from the worker, and drops the outcome (one shared, stateless instance)."""

    __slots__ = ()

    def cancelled(self) -> bool:
        return False

    def set_running_or_notify_cancel(self) -> bool:
        return True

    def set_result(self, result: object) -> None:
        pass

    def set_exception(self, exception: BaseException) -> None:
        pass

    def cancel(self) -> bool:
        return False


#: Pass as ``fut=`` to queue a job without anyone waiting for it.
DETACHED: Any = _Detached()


def _close_all(objects: list[list[Any]]) -> None:
    """On the owner thread: close each object, newest first (a cursor before its connection), and
    drop it here. A failing ``close()`` does not stop the others; the first error is raised."""
    first: BaseException | None = None
    for holder in reversed(objects):
        obj = holder.pop() if holder else None
        close = getattr(obj, "close", None) if obj is not None else None
        if callable(close):
            try:
                close()
            except Exception as e:
                first = first or e
        del obj, close
    if first is not None:
        raise first


def _drop(holder: list[Any]) -> None:
    """On the owner thread: drop the last reference to an object there."""
    holder.clear()


def _proxy_rule(proxy: ProxyRule | tuple[type, ...] | bool | None) -> ProxyRule | tuple[type, ...] | bool | None:
    if proxy is None or isinstance(proxy, bool) or callable(proxy):
        return proxy
    if isinstance(proxy, tuple) and all(isinstance(t, type) for t in proxy):
        return proxy
    raise TypeError(
        "ferrio.pinned() expected proxy= to be None (the default rule), True, False, a tuple of types or "
        f"a callable taking a result and returning whether to proxy it, got {safe_repr(proxy)}"
    )


class Pinned(Generic[T]):
    """A proxy to an object that lives on a :class:`PinnedThread`: every attribute access and
    call runs there, in the order made.

    ::

        conn = await ferrio.pinned(sqlite3.connect, "app.db")
        cur = await conn.execute("select * from users where id = ?", (7,))   # a Pinned cursor
        rows = await cur.fetchall()
        n = await conn.total_changes                  # an attribute: await it
        await conn.row_factory.set(sqlite3.Row)       # set one
        conn.sync.execute("vacuum")                   # from sync code or another thread: blocking
        await conn.aclose()                           # or: async with conn: ...

    ``proxy.name`` is a :class:`PinnedAttribute`: call it to call the method on the thread
    (``await proxy.name(...)``), await it for the attribute's value, or ``await
    proxy.name.set(value)``. Results are returned as they are, except those the pinned call's
    proxy rule selects, which come back as :class:`Pinned` proxies on the same thread (by
    default: objects whose type is defined in the same module as the pinned object's type, such
    as the ``sqlite3.Cursor`` of a ``sqlite3.Connection``, but not plain data like
    ``sqlite3.Row``; see :func:`ferrio.pinned`).

    The proxy's own names are ``attr``, ``sync``, ``thread``, ``closed``, ``aclose``, ``close``
    and the ``async with`` protocol; an attribute of the object with one of those names is
    reached as ``proxy.attr("name")``.

    ``close()``/``aclose()`` call the object's own ``close()`` (if it has one) on its thread and
    refuse later calls; a proxy that made its own thread (``ferrio.pinned()`` without
    ``thread=``) also ends that thread. A proxy dropped while open does the same from the garbage
    collector, with a :exc:`ResourceWarning`; at interpreter exit every open proxy is closed on
    its thread before ferrio's threads are joined.
    """

    __slots__ = ("__weakref__", "_holder", "_owns_thread", "_refusal", "_root", "_rule", "_seq", "_thread", "_type")

    _thread: PinnedThread
    _holder: list[Any]
    _rule: ProxyRule | tuple[type, ...] | bool | None
    _owns_thread: bool
    _root: bool
    _refusal: str | None
    _type: type
    _seq: int

    def _take(self) -> list[Any]:
        """Detach the object's holder from this proxy (for a close job)."""
        holder = self._holder
        object.__setattr__(self, "_holder", [])
        return holder

    def _refuse(self, why: str) -> list[Any]:
        """Refuse later calls; return the object's holder, for the caller's close job."""
        object.__setattr__(self, "_refusal", why)
        return self._take()

    def __repr__(self) -> str:
        state = "open" if self._refusal is None else "closed"
        return f"<ferrio.Pinned {self._type.__module__}.{self._type.__qualname__} on {self._thread._name!r} {state}>"

    def __getattr__(self, name: str) -> PinnedAttribute:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # copy, pickle and friends probe dunders: never proxied
        return PinnedAttribute(self, name)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"cannot set {name!r} on {self!r} from here: use `await proxy.{name}.set(value)`, or "
            f"`proxy.sync.{name} = value` from sync code"
        )

    def attr(self, name: str) -> PinnedAttribute:
        """The object's attribute ``name``, even where the proxy has a name of its own
        (``await proxy.attr("close")()`` calls the object's ``close`` without closing the proxy)."""
        if not isinstance(name, str):
            raise TypeError(f"Pinned.attr() expected name to be a str, got {safe_repr(name)}")
        return PinnedAttribute(self, name)

    @property
    def thread(self) -> PinnedThread:
        """The thread the object lives on."""
        return self._thread

    @property
    def closed(self) -> bool:
        """Whether calls are refused (the proxy or its thread was closed, or this is a forked child)."""
        return self._refusal is not None

    @property
    def sync(self) -> SyncPinned[T]:
        """A blocking view for sync code and other threads: ``proxy.sync.method(...)`` runs on the
        object's thread and returns its result (proxied results as blocking views too)."""
        return SyncPinned(self)

    def _check(self, api: str) -> None:
        if self._refusal is not None:
            raise PinnedClosedError(f"{api} was called on {self!r}, which {self._refusal}")

    def _wrap(self, result: Any) -> Any:
        rule = self._rule
        if rule is False or result is None:
            return result
        t: type[object] = type(cast(object, result))
        if rule is None:
            keep = t.__module__ == self._type.__module__ and t not in VALUE_TYPES
        elif rule is True:
            keep = True
        elif isinstance(rule, tuple):
            keep = isinstance(result, rule)  # pyright: ignore[reportUnknownArgumentType]
        else:
            keep = bool(rule(result))
        if not keep:
            return result
        return _make_pinned(self._thread, result, self._rule, root=False)

    async def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._refusal is not None:
            self._check(f"{self._type.__qualname__}.{name}()")
        holder = self._holder
        return self._wrap(await self._thread.run(_call_on, holder, name, args, kwargs))

    async def _get(self, name: str) -> Any:
        if self._refusal is not None:
            self._check(f"reading {self._type.__qualname__}.{name}")
        return self._wrap(await self._thread.run(_get_on, self._holder, name))

    async def _set(self, name: str, value: object) -> None:
        if self._refusal is not None:
            self._check(f"setting {self._type.__qualname__}.{name}")
        await self._thread.run(_set_on, self._holder, name, value)

    def _queue_close(self, why: str) -> concurrent.futures.Future[None] | None:
        thread = self._thread
        if self._owns_thread:
            return thread._queue_close(why)
        with thread._lock:
            if self._refusal is not None:
                return None
            holder = self._refuse(why)
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            thread._core.submit(
                api="Pinned.aclose()", fut=fut, func=_close_all, args=([holder],), coroutine=False, always_run=True
            )
        except RuntimeError:
            fut.set_result(None)
        return fut

    async def aclose(self) -> None:
        """Close the object on its thread, after the calls already queued, and wait for it without
        blocking the loop; a proxy that owns its thread also ends the thread. Idempotent; a
        failing ``close()`` raises here (the proxy is closed all the same)."""
        fut = self._queue_close("was closed")
        if fut is not None:
            await asyncio.shield(asyncio.wrap_future(fut))
        if self._owns_thread:
            await self._thread._pool.__aexit__(None, None, None)

    async def close(self) -> None:
        """The same as :meth:`aclose` (so ``await conn.close()`` closes the pinned connection)."""
        await self.aclose()

    async def __aenter__(self) -> Pinned[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        try:
            refusal = self._refusal
        except AttributeError:  # __init__ never ran
            return
        if refusal is not None or not self._holder:
            return
        if self._root:
            warnings.warn(
                f"{self!r} was garbage-collected while open: close it with `async with` or aclose()",
                ResourceWarning,
                stacklevel=1,
            )
            self._queue_close("was garbage-collected")
            return
        # A derived object (a cursor): drop it on its thread (if the thread still takes jobs).
        with contextlib.suppress(RuntimeError):
            self._thread._core.submit(
                api="Pinned.__del__", fut=DETACHED, func=_drop, args=(self._take(),), coroutine=False, always_run=True
            )


_sequence = itertools.count()


def _seq_of(p: Pinned[Any]) -> int:
    return p._seq


def _make_pinned(
    thread: PinnedThread,
    obj: T,
    rule: ProxyRule | tuple[type, ...] | bool | None,
    *,
    owns_thread: bool = False,
    root: bool = True,
) -> Pinned[T]:
    """A proxy to ``obj``, which lives on ``thread``; ``root``: made by :func:`pinned` (closed
    with a warning if dropped open) rather than returned by a call (dropped quietly)."""
    self = cast("Pinned[T]", object.__new__(Pinned))
    set_ = object.__setattr__
    set_(self, "_thread", thread)
    # The object, in a list the owner thread empties when it closes or drops the object, so
    # the last reference always dies there, whichever thread drops the proxy.
    set_(self, "_holder", [obj])
    set_(self, "_rule", rule)
    set_(self, "_owns_thread", owns_thread)
    set_(self, "_root", root)
    set_(self, "_refusal", None)
    set_(self, "_type", type(obj))
    set_(self, "_seq", next(_sequence))
    with thread._lock:
        thread._objects.add(self)
    return self


def _call_on(holder: list[Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return getattr(holder[0], name)(*args, **kwargs)


def _get_on(holder: list[Any], name: str) -> Any:
    return getattr(holder[0], name)


def _set_on(holder: list[Any], name: str, value: object) -> None:
    setattr(holder[0], name, value)


class PinnedAttribute:
    """``proxy.name``: call it (``await proxy.name(...)``), await it for the value, or ``await
    proxy.name.set(value)``; each runs on the object's thread."""

    __slots__ = ("_name", "_proxy")

    def __init__(self, proxy: Pinned[Any], name: str) -> None:
        self._proxy = proxy
        self._name = name

    def __repr__(self) -> str:
        return f"<ferrio.PinnedAttribute {self._name!r} of {self._proxy!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._proxy._call(self._name, args, kwargs)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._proxy._get(self._name).__await__()

    async def set(self, value: object) -> None:
        """Set the attribute on the object's thread."""
        await self._proxy._set(self._name, value)


class SyncPinned(Generic[T]):
    """``proxy.sync``: blocking access from sync code or other threads (never from a thread
    running an event loop, which it would block: that raises :exc:`RuntimeError`)."""

    __slots__ = ("_proxy",)

    def __init__(self, proxy: Pinned[T]) -> None:
        object.__setattr__(self, "_proxy", proxy)

    def __repr__(self) -> str:
        return f"<ferrio.SyncPinned of {self._proxy!r}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        p = self._proxy
        p._check(f"reading {p._type.__qualname__}.{name}")
        _refuse_on_a_loop(f"proxy.sync.{name}")
        value = p._thread.run_sync(_get_on, p._holder, name)
        if callable(value) and not isinstance(value, type):
            return _SyncMethod(p, name)
        return _sync_view(p._wrap(value))

    def __setattr__(self, name: str, value: object) -> None:
        p = self._proxy
        p._check(f"setting {p._type.__qualname__}.{name}")
        _refuse_on_a_loop(f"setting proxy.sync.{name}")
        p._thread.run_sync(_set_on, p._holder, name, value)

    def close(self) -> None:
        """Close the object on its thread and wait (see :meth:`Pinned.aclose`)."""
        p = self._proxy
        if _running_loop_or_none() is not None:
            raise RuntimeError("proxy.sync.close() would block the event loop: await proxy.aclose() instead")
        fut = p._queue_close("was closed")
        if fut is not None:
            fut.result()
        if p._owns_thread and _get_ident() != p._thread._ident:
            p._thread._pool.shutdown(wait=True)


def _sync_view(result: Any) -> Any:
    """A proxied result as its blocking view, for the sync API; anything else as it is."""
    if isinstance(result, Pinned):
        return result.sync  # pyright: ignore[reportUnknownMemberType,reportUnknownVariableType]
    return result


def _refuse_on_a_loop(what: str) -> None:
    if _running_loop_or_none() is not None:
        raise RuntimeError(
            f"{what} would block the event loop running on this thread until the object's thread "
            f"answers: await the proxy instead (await proxy.name(...), await proxy.name)"
        )


class _SyncMethod:
    __slots__ = ("_name", "_proxy")

    def __init__(self, proxy: Pinned[Any], name: str) -> None:
        self._proxy = proxy
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        p = self._proxy
        p._check(f"{p._type.__qualname__}.{self._name}()")
        return _sync_view(p._wrap(p._thread.run_sync(_call_on, p._holder, self._name, args, kwargs)))


async def pinned(
    factory: Callable[..., T],
    /,
    *args: Any,
    thread: PinnedThread | None = None,
    proxy: ProxyRule | tuple[type, ...] | bool | None = None,
    **kwargs: Any,
) -> Pinned[T]:
    """Make an object on a thread of its own (or on ``thread``) and return a proxy that runs every
    call on it there.

    ::

        conn = await ferrio.pinned(sqlite3.connect, "app.db")       # made on its own thread
        async with conn:
            cur = await conn.execute("select * from users where id = ?", (7,))
            row = await cur.fetchone()                                # cursors are proxied too

    ``factory(*args, **kwargs)`` runs on the thread, so the object is born there (sqlite3's
    ``check_same_thread`` is satisfied, thread-local state is the thread's). ``thread=`` puts
    several objects on one :class:`PinnedThread`; without it, the proxy owns a new thread, which
    ends when the proxy is closed.

    Which results come back proxied: by default (``proxy=None``) those whose type is defined in
    the module of the pinned object's type, except plain data types (``sqlite3.Row``); ``proxy=``
    may instead be a tuple of types (proxy instances of those), a callable ``f(result) -> bool``,
    True (proxy every result but None) or False (proxy nothing). A result that is not proxied is
    handed over as it is: it must be safe to use from other threads.

    Calls on one thread run in the order made, one at a time. Cancellation: a call not yet started
    is dropped; one that has started runs to its end, its result discarded. Errors keep their type
    and traceback.

    Raises:
        TypeError: ``factory`` is not callable, or ``thread=``/``proxy=`` has the wrong type.
        ferrio.PinnedClosedError: ``thread`` was closed.
        Exception: whatever ``factory`` raises, as it raised it.
    """
    if not callable(factory):
        raise not_callable(
            "ferrio.pinned()", factory, "a factory that makes the object to pin, such as sqlite3.connect"
        )
    rule = _proxy_rule(proxy)
    if thread is not None:
        if not isinstance(thread, PinnedThread):
            raise TypeError(
                f"ferrio.pinned() expected thread= to be a ferrio.PinnedThread or None, got {safe_repr(thread)}"
            )
        return await thread.pin(factory, *args, proxy=rule, **kwargs)
    own = PinnedThread()
    try:
        obj = await own.run(factory, *args, **kwargs)
    except BaseException:
        own._queue_close("was closed")
        raise
    return _make_pinned(own, obj, rule, owns_thread=True)


def _close_at_exit() -> None:
    """Before ferrio's pools are joined at exit: close every pinned object on its thread."""
    for t in list(_threads):
        t._queue_close("was closed at interpreter exit")


def _after_fork_in_child() -> None:
    global _counter_lock
    _counter_lock = threading.Lock()
    for t in list(_threads):
        t._after_fork_in_child()


def _record_ident(thread: PinnedThread) -> None:
    thread._ident = _get_ident()


# Registered after ferrio._threads' hook, so it runs before it: threading runs them last first.
threading._register_atexit(_close_at_exit)  # type: ignore[attr-defined]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
