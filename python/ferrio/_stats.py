"""Frozen snapshots returned by ``stats()`` and ``statistics()``."""

from __future__ import annotations

from dataclasses import dataclass

from . import _ferrio


@dataclass(frozen=True)
class Percentiles:
    """Latency percentiles in seconds over every job a pool has run (within 12.5%)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a :class:`ferrio.ThreadPool`, from :meth:`ferrio.ThreadPool.stats`."""

    max_workers: int
    #: Worker threads alive now (busy, idle or between jobs).
    workers_alive: int
    #: Worker threads parked waiting for work.
    workers_idle: int
    #: Jobs waiting for a worker.
    queued: int
    #: Jobs running now.
    running: int
    #: Jobs that returned a value.
    completed: int
    #: Jobs that raised.
    failed: int
    #: Jobs dropped before they ran because their caller cancelled (or at shutdown).
    cancelled: int
    #: Time from submission to start.
    queue_wait: Percentiles
    #: Time from start to end, for jobs that ran.
    run_time: Percentiles


def percentiles_of(counts: _ferrio.LatencyCounts) -> Percentiles:
    """The percentiles the Rust side counted, as users see them."""
    return Percentiles(count=counts.count, p50=counts.p50, p90=counts.p90, p99=counts.p99, max=counts.max)


def pool_statistics_of(counts: _ferrio.PoolCounts) -> PoolStatistics:
    """The snapshot of a thread pool the Rust side counted, as users see it."""
    return PoolStatistics(
        max_workers=counts.max_workers,
        workers_alive=counts.workers_alive,
        workers_idle=counts.workers_idle,
        queued=counts.queued,
        running=counts.running,
        completed=counts.completed,
        failed=counts.failed,
        cancelled=counts.cancelled,
        queue_wait=percentiles_of(counts.queue_wait),
        run_time=percentiles_of(counts.run_time),
    )


@dataclass(frozen=True)
class ProcessPoolStatistics(PoolStatistics):
    """A snapshot of a :class:`ferrio.ProcessPool`, from :meth:`ferrio.ProcessPool.stats`.

    The fields of :class:`PoolStatistics` count worker processes and calls; ``queued`` includes
    calls already sent to a busy worker's pipeline, and ``failed`` includes crashes and timeouts.
    """

    #: Calls whose worker died under them (:exc:`ferrio.WorkerCrashed`).
    crashed: int
    #: Calls whose worker was killed for running past ``timeout=``.
    timed_out: int
    #: Worker processes started, replacements included.
    workers_started: int


@dataclass(frozen=True)
class LimiterStatistics:
    """A snapshot of a :class:`ferrio.CapacityLimiter` (anyio's field names)."""

    total_tokens: float
    borrowed_tokens: int
    #: Jobs waiting for a token.
    tasks_waiting: int
