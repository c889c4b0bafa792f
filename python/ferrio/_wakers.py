"""One :class:`~ferrio._ferrio.LoopWaker` per event loop: how completions from other threads
reach a loop. Every part of ferrio that resolves asyncio futures from a Rust or worker thread
gets the loop's waker here."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

from . import _ferrio

T = TypeVar("T")

# The waker is held weakly where the loop's reader holds it: its queued completions hold futures,
# which hold the loop, so a strong value here would keep every loop closed with a job in flight
# (and its eventfd) alive for good.
_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Callable[[], _ferrio.LoopWaker | None]] = (
    weakref.WeakKeyDictionary()
)
_wakers_lock = threading.Lock()


def waker_for(loop: asyncio.AbstractEventLoop) -> _ferrio.LoopWaker:
    """The waker of ``loop``, made and registered with the loop's reader on first use."""
    ref = _wakers.get(loop)
    waker = None if ref is None else ref()
    if waker is not None:
        return waker
    with _wakers_lock:
        ref = _wakers.get(loop)
        waker = None if ref is None else ref()
        if waker is None:
            waker = _ferrio.LoopWaker()
            fd = waker.fileno()
            assert fd is not None  # for the type checker: a LoopWaker() made here always has its pipe
            try:
                loop.add_reader(fd, waker.drain)
            except NotImplementedError:  # loops without add_reader (Windows' proactor)
                # Nothing else holds this kind: keep it strongly (its loop is held by the waker's
                # call_soon_threadsafe, so such loops live until exit).
                waker = _ferrio.LoopWaker.threadsafe(loop.call_soon_threadsafe)
                _wakers[loop] = functools.partial(_identity, waker)
            else:
                _wakers[loop] = weakref.ref(waker)
        return waker


def _identity(x: T) -> T:
    return x


def _after_fork_in_child() -> None:
    # The parent's wakers belong to the parent's loops' readers; the lock may be held by a parent
    # thread that does not exist here.
    global _wakers, _wakers_lock
    _wakers = weakref.WeakKeyDictionary()
    _wakers_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
