//! Named, frozen snapshots the cores' `counts()` methods return, so the Python side builds its
//! public statistics from fields by name instead of unpacking positional tuples.

use ferrio_core::limiter::LimiterStats;
use ferrio_core::pool::PoolStats;
use std::sync::Arc;
use std::time::Duration;

use ferrio_core::stats::{Histogram, Percentiles};
use pyo3::prelude::*;

/// Latency percentiles in seconds (within 12.5%) over `count` samples.
#[pyclass(get_all, frozen, module = "ferrio._ferrio")]
#[derive(Clone)]
pub struct LatencyCounts {
    count: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl From<Percentiles> for LatencyCounts {
    fn from(p: Percentiles) -> Self {
        Self {
            count: p.count,
            p50: p.p50,
            p90: p.p90,
            p99: p.p99,
            max: p.max,
        }
    }
}

/// A thread pool's workers, jobs and latencies (`ThreadPoolCore.counts()`).
#[pyclass(get_all, frozen, module = "ferrio._ferrio")]
pub struct PoolCounts {
    max_workers: usize,
    workers_alive: usize,
    workers_idle: usize,
    queued: usize,
    running: usize,
    completed: u64,
    failed: u64,
    cancelled: u64,
    queue_wait: LatencyCounts,
    run_time: LatencyCounts,
}

impl From<PoolStats> for PoolCounts {
    fn from(s: PoolStats) -> Self {
        Self {
            max_workers: s.max_workers,
            workers_alive: s.workers_alive,
            workers_idle: s.workers_idle,
            queued: s.queued,
            running: s.running,
            completed: s.completed,
            failed: s.failed,
            cancelled: s.cancelled,
            queue_wait: s.queue_wait.into(),
            run_time: s.run_time.into(),
        }
    }
}

/// A capacity limiter's tokens and waiting jobs (`LimiterCore.counts()`); `total_tokens` is
/// `INFINITE_TOKENS` for no limit.
#[pyclass(get_all, frozen, module = "ferrio._ferrio")]
pub struct LimiterCounts {
    total_tokens: usize,
    borrowed_tokens: usize,
    tasks_waiting: usize,
}

impl From<LimiterStats> for LimiterCounts {
    fn from(s: LimiterStats) -> Self {
        Self {
            total_tokens: s.total_tokens,
            borrowed_tokens: s.borrowed_tokens,
            tasks_waiting: s.waiting,
        }
    }
}

/// A semaphore's free permits and waiters (`SemaphoreCore._counts()`).
#[pyclass(get_all, frozen, module = "ferrio._ferrio")]
pub struct SemaphoreCounts {
    free: usize,
    waiting: usize,
}

impl SemaphoreCounts {
    pub(crate) fn new((free, waiting): (usize, usize)) -> Self {
        Self { free, waiting }
    }
}

/// A queue's items and waiters (`QueueCore.counts()`).
#[pyclass(get_all, frozen, module = "ferrio._ferrio")]
pub struct QueueCounts {
    items: usize,
    unfinished_tasks: usize,
    getters_waiting: usize,
    putters_waiting: usize,
}

impl QueueCounts {
    pub(crate) fn new(
        (items, unfinished_tasks, getters_waiting, putters_waiting): (usize, usize, usize, usize),
    ) -> Self {
        Self {
            items,
            unfinished_tasks,
            getters_waiting,
            putters_waiting,
        }
    }
}

/// A lock-free latency histogram (percentiles within 12.5%), as the thread pool keeps in Rust.
#[pyclass(frozen, module = "ferrio._ferrio")]
#[derive(Default)]
pub struct LatencyHistogram {
    /// Shared with what records into it from Rust (a watchdog's beats).
    pub(crate) inner: Arc<Histogram>,
}

#[pymethods]
impl LatencyHistogram {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Records one sample of `seconds` (negative counts as zero).
    fn record(&self, seconds: f64) {
        self.inner
            .record(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX));
    }

    /// The percentiles in seconds.
    fn percentiles(&self) -> LatencyCounts {
        self.inner.percentiles().into()
    }
}
