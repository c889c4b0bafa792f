//! One unit of work for a pool, and the body every worker thread runs.
//!
//! A worker attaches to the interpreter once, for its whole life, and detaches only while it waits
//! for work. After one job it keeps taking queued jobs under the same GIL hold until the pool's
//! batch budget runs out, so a burst of short jobs costs one GIL hand-off, not one each.
//!
//! No panic leaves a job: one raised while the job's function runs (a bug in some Rust extension,
//! or a `PanicException` the function raised, which `pyo3` turns back into a panic when it fetches
//! it) is delivered to the job's future as a `PanicException`, and one anywhere else in the job's
//! handling counts the job as failed; the worker lives on either way.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use ferrio_core::pool::Outcome;
use ferrio_core::{Limiter, PoolHandle, Rejected, WorkerCtx};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::deferred;
use crate::errors;
use crate::finalize;
use crate::hooks;
use crate::interned;
use crate::waker::{Completions, Resolution};

/// Where a job's result goes.
pub(crate) enum Target {
    /// An `asyncio.Future`, resolved on its loop's thread through that loop's completion queue.
    Async {
        fut: Py<PyAny>,
        loop_queue: Arc<Completions>,
    },
    /// A `concurrent.futures.Future`, resolved by the worker itself.
    Sync { fut: Py<PyAny> },
}

/// What to call.
pub(crate) enum Call {
    /// `func(*args, **kwargs)`.
    One {
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
    },
    /// `[func(x) for x in items]`, stopping at the first exception; the result is
    /// `(results, exception_or_None)`.
    Map { items: Py<PyTuple> },
}

pub(crate) struct PyJob {
    pub func: Py<PyAny>,
    pub call: Call,
    /// The `contextvars.Context` to run in, if any.
    pub context: Option<Py<PyAny>>,
    pub target: Target,
    pub limiter: Option<Arc<Limiter<PyJob>>>,
    /// Run even if the awaiting task was cancelled first (file operations, whose effects must
    /// happen once they were asked for); the result is then dropped.
    pub always_run: bool,
}

thread_local! {
    /// The future of the job this worker is running, for `check_cancelled()`.
    static CURRENT: RefCell<Option<Py<PyAny>>> = const { RefCell::new(None) };
    /// While a worker of a pool that holds signals to the batch's end runs a batch: its slot.
    static HOLDING: RefCell<Option<Arc<deferred::Slot>>> = const { RefCell::new(None) };
}

impl Target {
    fn future(&self) -> &Py<PyAny> {
        match self {
            Target::Async { fut, .. } | Target::Sync { fut } => fut,
        }
    }

    /// Whether nobody wants the result any more (read-only: does not claim the future).
    fn is_stale(&self, py: Python<'_>) -> bool {
        let (fut, method) = match self {
            Target::Async { fut, .. } => (fut, interned!(py, "done")),
            Target::Sync { fut } => (fut, interned!(py, "cancelled")),
        };
        fut.bind(py)
            .call_method0(method)
            .and_then(|r| r.is_truthy())
            .unwrap_or(true)
    }

    /// Claims the future for running; false if it was cancelled (the job must not run).
    fn claim(&self, py: Python<'_>) -> bool {
        match self {
            Target::Async { fut, .. } => !fut
                .bind(py)
                .call_method0(interned!(py, "done"))
                .and_then(|r| r.is_truthy())
                .unwrap_or(true),
            Target::Sync { fut } => fut
                .bind(py)
                .call_method0(interned!(py, "set_running_or_notify_cancel"))
                .and_then(|r| r.is_truthy())
                .unwrap_or(false),
        }
    }

    /// Delivers the job's outcome. Never raises: a future that can no longer take a result
    /// (cancelled meanwhile) just drops it.
    pub(crate) fn resolve(self, py: Python<'_>, res: Resolution) {
        match self {
            Target::Async { fut, loop_queue } => {
                let slot = HOLDING.with(|h| h.borrow().clone());
                match slot {
                    Some(slot) => {
                        if loop_queue.push_deferred((fut, res)) && !slot.hold(&loop_queue) {
                            loop_queue.notify();
                        }
                    }
                    None => loop_queue.push((fut, res)),
                }
            }
            Target::Sync { fut } => {
                let fut = fut.bind(py);
                let _ = match res {
                    Resolution::Value(v) | Resolution::Handoff(v, _) => {
                        fut.call_method1(interned!(py, "set_result"), (v,))
                    }
                    Resolution::Error(e) => fut.call_method1(interned!(py, "set_exception"), (e.into_value(py),)),
                    Resolution::Cancel => fut.call_method0(interned!(py, "cancel")),
                };
            }
        }
    }
}

impl PyJob {
    /// Runs the job on a worker thread and delivers its outcome.
    fn run(self, py: Python<'_>) -> Outcome {
        let PyJob {
            func,
            call,
            context,
            target,
            limiter,
            always_run,
        } = self;
        let outcome = if target.claim(py) || always_run {
            CURRENT.with(|c| *c.borrow_mut() = Some(target.future().clone_ref(py)));
            let result = catch_unwind(AssertUnwindSafe(|| invoke(py, func.bind(py), &call, context.as_ref())))
                .unwrap_or_else(|payload| Err(errors::panicked(payload)));
            CURRENT.with(|c| c.borrow_mut().take());
            match result {
                Ok(v) => {
                    target.resolve(py, Resolution::Value(v));
                    Outcome::Completed
                }
                Err(e) => {
                    target.resolve(py, Resolution::Error(errors::deliverable(py, e, func.bind(py))));
                    Outcome::Failed
                }
            }
        } else {
            Outcome::Cancelled
        };
        if let Some(limiter) = limiter {
            let leftovers = limiter.release(|j| j.target.is_stale(py));
            dispose(py, leftovers.stale, leftovers.rejected, "a limiter");
        }
        outcome
    }
}

/// Resolves jobs that a limiter dropped: stale ones are counted as cancelled on their pool;
/// rejected ones (their pool shut down while they waited) fail with the pool's error.
pub(crate) fn dispose(
    py: Python<'_>,
    stale: Vec<(PoolHandle<PyJob>, PyJob)>,
    rejected: Vec<Rejected<PyJob>>,
    api: &str,
) {
    for (pool, job) in stale {
        pool.count_cancelled(1);
        job.target.resolve(py, Resolution::Cancel);
    }
    for r in rejected {
        let err = errors::rejected(api, &r);
        r.job.target.resolve(py, Resolution::Error(err));
    }
}

fn invoke(py: Python<'_>, func: &Bound<'_, PyAny>, call: &Call, context: Option<&Py<PyAny>>) -> PyResult<Py<PyAny>> {
    match (call, context) {
        (Call::One { args, kwargs }, None) => func
            .call(args.bind(py), kwargs.as_ref().map(|k| k.bind(py)))
            .map(Bound::unbind),
        (Call::One { args, kwargs }, Some(ctx)) => {
            let args = args.bind(py);
            let mut full = Vec::with_capacity(args.len() + 1);
            full.push(func.clone());
            full.extend(args.iter());
            let full = PyTuple::new(py, full)?;
            ctx.bind(py)
                .call_method(interned!(py, "run"), full, kwargs.as_ref().map(|k| k.bind(py)))
                .map(Bound::unbind)
        }
        (Call::Map { items }, None) => Ok(run_map(py, func, items.bind(py))),
        (Call::Map { items }, Some(ctx)) => {
            let runner = wrap_pyfunction!(map_in_context, py)?;
            ctx.bind(py)
                .call_method1(interned!(py, "run"), (runner, func, items))
                .map(Bound::unbind)
        }
    }
}

fn run_map(py: Python<'_>, func: &Bound<'_, PyAny>, items: &Bound<'_, PyTuple>) -> Py<PyAny> {
    let results = PyList::empty(py);
    let mut error = py.None();
    for item in items.iter() {
        // Per item, so the results before a panicking one are kept, as for an exception.
        let res = catch_unwind(AssertUnwindSafe(|| func.call1((item,)))).unwrap_or_else(|p| Err(errors::panicked(p)));
        match res {
            Ok(v) => {
                let _ = results.append(v);
            }
            Err(e) => {
                error = errors::deliverable(py, e, func).into_value(py).into_any();
                break;
            }
        }
    }
    (results, error).into_py_any(py).expect("a 2-tuple always converts")
}

/// Runs a map chunk inside `Context.run`, so the whole chunk enters its context once.
#[pyfunction]
fn map_in_context(py: Python<'_>, func: &Bound<'_, PyAny>, items: &Bound<'_, PyTuple>) -> Py<PyAny> {
    run_map(py, func, items)
}

/// The body of every worker thread (see the module documentation).
///
/// `hold_signals`: hold each batch's completion signals to its end ([`deferred`]).
pub(crate) fn worker_body(ctx: &WorkerCtx<PyJob>, hold_signals: bool) {
    // `None`: started as the interpreter finalizes; exit without touching it.
    let _ = finalize::attach(|py| {
        // Give `threading` (and so logging's %(threadName)s) this thread's real name, and take
        // the entry out again at exit so `threading.enumerate()` lists only live workers.
        let hooks = hooks::get(py);
        if let Some(hooks) = hooks {
            // Borrowed, not copied: a worker that starts at the memory limit must not abort the
            // process on a Rust allocation ("memory allocation of 15 bytes failed", the length of
            // "ferrio-worker-0", in a CI run under RLIMIT_AS); Python's own failure is a MemoryError.
            let me = std::thread::current();
            let _ = hooks
                .worker_started
                .bind(py)
                .call1((me.name().unwrap_or("ferrio-worker"),));
        }
        let slot = if hold_signals { deferred::slot() } else { None };
        let mut held: Option<Arc<deferred::Slot>> = None;
        while let Some(first) = finalize::detach(py, || {
            // The batch's held signals go out once the GIL is released: a loop spinning for its
            // answer (`submit_and_wait`) then finds the GIL free when it comes back.
            if let Some(slot) = held.take() {
                slot.release();
            }
            ctx.next()
        }) {
            ctx.spread();
            let batch_start = Instant::now();
            let mut current = first;
            HOLDING.with(|h| h.borrow_mut().clone_from(&slot));
            loop {
                let job = current.job;
                let outcome = catch_unwind(AssertUnwindSafe(|| job.run(py))).unwrap_or(Outcome::Failed);
                ctx.finish(current.at, outcome);
                match ctx.next_in_batch(batch_start) {
                    Some(next) => current = next,
                    None => break,
                }
            }
            held = HOLDING.with(|h| h.borrow_mut().take());
        }
        if let Some(hooks) = hooks {
            let _ = hooks.worker_exiting.bind(py).call0();
        }
    });
}

fn current_cancelled(py: Python<'_>, api: &str) -> PyResult<bool> {
    CURRENT.with(|c| match &*c.borrow() {
        Some(fut) => fut.bind(py).call_method0(interned!(py, "cancelled"))?.is_truthy(),
        None => Err(errors::outside_job(api)),
    })
}

#[pyfunction]
pub(crate) fn is_cancelled(py: Python<'_>) -> PyResult<bool> {
    current_cancelled(py, "ferrio.is_cancelled()")
}

#[pyfunction]
pub(crate) fn check_cancelled(py: Python<'_>) -> PyResult<()> {
    if current_cancelled(py, "ferrio.check_cancelled()")? {
        let cancelled = py
            .import(interned!(py, "asyncio"))?
            .getattr(interned!(py, "CancelledError"))?;
        return Err(PyErr::from_value(cancelled.call0()?));
    }
    Ok(())
}

/// The future of the job running on this thread (an `asyncio.Future` when an event loop awaits
/// it, a `concurrent.futures.Future` otherwise), or `None` outside a ferrio job.
#[pyfunction]
pub(crate) fn current_job_future(py: Python<'_>) -> Option<Py<PyAny>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|f| f.clone_ref(py)))
}
