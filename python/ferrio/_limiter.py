"""``CapacityLimiter``: bound how many calls of one kind run at once, across pools."""

from __future__ import annotations

import math
import os
import weakref

from ._ferrio import INFINITE_TOKENS, LimiterCore, LimiterCounts
from ._stats import LimiterStatistics

# Every limiter alive, so a forked child can give each a fresh core.
_limiters: weakref.WeakSet[CapacityLimiter] = weakref.WeakSet()


def _total(counts: LimiterCounts) -> float:
    """The total as users see it: the Rust side stores "no limit" as ``INFINITE_TOKENS``."""
    return math.inf if counts.total_tokens >= INFINITE_TOKENS else counts.total_tokens


class CapacityLimiter:
    """Admits at most ``total_tokens`` jobs at once, first come, first served.

    Pass it as ``limiter=`` to :func:`ferrio.to_thread` or :meth:`ferrio.ThreadPool.run`; every
    job given the same limiter counts against the same tokens, whichever pool runs it::

        db = ferrio.CapacityLimiter(4)          # the database takes 4 connections
        rows = await ferrio.to_thread(query, sql, limiter=db)

    A job that finds no free token waits inside the limiter, holding no worker thread, and never
    blocks the event loop. Cancelling its awaiting task while it waits removes it unrun.
    """

    __slots__ = ("__weakref__", "_core")

    def __init__(self, total_tokens: float) -> None:
        self._core = LimiterCore(total_tokens)
        _limiters.add(self)

    @property
    def total_tokens(self) -> float:
        """How many jobs may hold a token at once (``math.inf`` for no limit). Settable."""
        return _total(self._core.counts())

    @total_tokens.setter
    def total_tokens(self, value: float) -> None:
        self._core.set_total_tokens(value)

    @property
    def borrowed_tokens(self) -> int:
        """How many tokens running jobs hold now."""
        return self._core.counts().borrowed_tokens

    @property
    def available_tokens(self) -> float:
        """``total_tokens - borrowed_tokens`` (never negative)."""
        return max(0, self.total_tokens - self.borrowed_tokens)

    def statistics(self) -> LimiterStatistics:
        """A frozen snapshot: total and borrowed tokens, and how many jobs wait."""
        counts = self._core.counts()
        return LimiterStatistics(
            total_tokens=_total(counts),
            borrowed_tokens=counts.borrowed_tokens,
            tasks_waiting=counts.tasks_waiting,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<ferrio.CapacityLimiter total_tokens={s.total_tokens} borrowed={s.borrowed_tokens} "
            f"waiting={s.tasks_waiting}>"
        )


def _after_fork_in_child() -> None:
    # A parent thread may have held a limiter's lock at the fork, and the jobs waiting in it are
    # the parent's: give each limiter a fresh core with the same total. `counts()` on a core of the
    # parent reads the total without locking; the old core is leaked, never locked.
    for limiter in list(_limiters):
        limiter._core = LimiterCore(_total(limiter._core.counts()))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def limiter_core(api: str, limiter: object) -> LimiterCore | None:
    """The Rust limiter behind ``limiter=``, or a clear error for anything else."""
    if limiter is None:
        return None
    if isinstance(limiter, CapacityLimiter):
        return limiter._core
    raise TypeError(f"{api} expected limiter= to be a ferrio.CapacityLimiter or None, got {limiter!r}")
