//! The `ferrio._ferrio` extension module: thin wrappers over `ferrio-core`.
//!
//! Each file wraps one area; `python/ferrio` holds the typed public API and `_ferrio.pyi` the
//! docstrings of everything defined here.
//!
//! Layers (a module uses only modules of the layers below it, never one above or beside it):
//! 1. `statics`, `finalize`: fork-safe cells and the attach/detach gate; no `crate::` imports.
//! 2. `errors`: every message, on `statics`; `counts`: the statistics snapshots.
//! 3. `waker`: per-loop completion queues; `hooks`: the Python functions registered at import.
//! 4. `job`: one unit of work and the worker body, on `waker`, `hooks`, `errors`, `finalize`.
//! 5. `limiter`, then `pool` (which uses `limiter`); `prims`, `files`, `process`, `watchdog`
//!    beside them.

mod counts;
mod deferred;
mod errors;
mod files;
mod finalize;
mod hooks;
mod job;
mod limiter;
mod pool;
mod prims;
mod process;
mod statics;
mod waker;
mod watchdog;

use pyo3::prelude::*;

#[pymodule]
mod _ferrio {
    #[pymodule_export]
    use super::counts::{LatencyCounts, LatencyHistogram, LimiterCounts, PoolCounts, QueueCounts, SemaphoreCounts};
    #[pymodule_export]
    use super::deferred::deferred_flushes;
    #[pymodule_export]
    use super::files::{open_cached, read_cached, read_files_blocking, split_lines};
    #[pymodule_export]
    use super::finalize::{after_fork_in_child, after_fork_in_parent, before_fork, stop_attaching};
    #[pymodule_export]
    use super::hooks::install_hooks;
    #[pymodule_export]
    use super::job::{check_cancelled, current_job_future, is_cancelled};
    #[pymodule_export]
    use super::limiter::LimiterCore;
    #[pymodule_export]
    use super::pool::{check_sync_callable, forget_orphans_after_fork, join_orphans, refuse_new_work, ThreadPoolCore};
    #[pymodule_export]
    use super::prims::{AtomicInt, EventCore, QueueCore, SemaphoreCore};
    #[pymodule_export]
    use super::process::{set_parent_death_signal, SharedCell};
    #[pymodule_export]
    use super::waker::LoopWaker;
    #[pymodule_export]
    use super::watchdog::{watchdog_thread_running, watchdog_wait_stopped, watchdog_wakeups, LoopWatch};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        // What a Rust panic inside a job arrives as (pyo3_runtime has no importable module).
        m.add("PanicException", m.py().get_type::<pyo3::panic::PanicException>())?;
        // Nothing pyo3 does lazily may be left half-done in a forked child (see `statics`).
        super::statics::settle_at_import(m.py());
        // Made now rather than by the first `LoopWaker.threadsafe` (see `statics`): not exported.
        m.py().get_type::<super::waker::Drainer>();
        // Shared with the Python side rather than copied there.
        m.add("INFINITE_TOKENS", ferrio_core::limiter::INFINITE_TOKENS)?;
        m.add("MAX_READ_THREADS", ferrio_core::fileio::MAX_READ_THREADS)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
