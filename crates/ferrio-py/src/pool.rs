//! `ThreadPoolCore`: the Rust pool behind `ferrio.ThreadPool` and `ferrio.to_thread`.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrio_core::{Pool, PoolConfig};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict, PyTuple};

use crate::counts::PoolCounts;
use crate::errors;
use crate::finalize;
use crate::hooks;
use crate::interned;
use crate::job::{worker_body, Call, PyJob, Target};
use crate::limiter::LimiterCore;
use crate::statics::ForkSafeCell;
use crate::waker::{spin_for_signal, LoopWaker, Resolution};

const CO_COROUTINE: u32 = 0x80;

/// Whether `func` (known callable) is a coroutine function.
///
/// `known` is the answer the Python caller worked out itself (`_threads._coroutine_flag`) for
/// callables that are not plain functions, methods or builtins: the general answer comes from
/// `inspect.iscoroutinefunction`, which is Python code, and Python code run from under a Rust
/// frame can drop the GIL at any bytecode; if the interpreter starts finalizing meanwhile, a
/// daemon thread taking it back is ended by `pthread_exit()`, whose forced unwind through these
/// frames aborts the process (SIGABRT or SIGSEGV, often with nothing printed). In a Python frame
/// the same exit is harmless. The `inspect` fallback here serves callers that pass no answer.
fn is_coroutine_function(func: &Bound<'_, PyAny>, known: Option<bool>) -> PyResult<bool> {
    if let Some(known) = known {
        return Ok(known);
    }
    if func.is_instance_of::<PyCFunction>() {
        return Ok(false);
    }
    let py = func.py();
    // Fast path for functions and bound methods (which forward `__code__`); anything else asks
    // `inspect`, which also unwraps partials and honours `markcoroutinefunction`.
    let flags = func
        .getattr(interned!(py, "__code__"))
        .and_then(|c| c.getattr(interned!(py, "co_flags")));
    if let Ok(flags) = flags {
        Ok(flags.extract::<u32>().is_ok_and(|f| f & CO_COROUTINE != 0))
    } else {
        static ISCOROUTINEFUNCTION: ForkSafeCell<Py<PyAny>> = ForkSafeCell::new();
        ISCOROUTINEFUNCTION
            .get_or_try_init(py, || {
                py.import("inspect")?.getattr("iscoroutinefunction").map(Bound::unbind)
            })?
            .bind(py)
            .call1((func,))?
            .is_truthy()
    }
}

/// Fails unless `func` is callable; says whether it is a coroutine function (`known`: as
/// [`is_coroutine_function`]).
fn classify_callable(api: &str, func: &Bound<'_, PyAny>, known: Option<bool>) -> PyResult<bool> {
    if !func.is_callable() {
        return Err(errors::not_callable(api, func));
    }
    is_coroutine_function(func, known)
}

/// Fails unless `func` is a callable that is not a coroutine function.
#[pyfunction]
#[pyo3(signature = (api, func, coroutine=None))]
pub(crate) fn check_sync_callable(api: &str, func: &Bound<'_, PyAny>, coroutine: Option<bool>) -> PyResult<()> {
    if classify_callable(api, func, coroutine)? {
        return Err(errors::coroutine_function(api, func));
    }
    Ok(())
}

/// The call a job makes: `func(*args, **kwargs)`, or, for a coroutine function when
/// `run_coroutines`, the installed `run_coroutine_function(func, args, kwargs)` hook, which runs
/// the coroutine on the worker's own event loop. Otherwise coroutine functions are refused.
fn job_call(
    api: &str,
    func: &Bound<'_, PyAny>,
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
    run_coroutines: bool,
    coroutine: Option<bool>,
) -> PyResult<(Py<PyAny>, Call)> {
    if classify_callable(api, func, coroutine)? {
        let py = func.py();
        let runner = match hooks::get(py) {
            Some(hooks) if run_coroutines => &hooks.run_coroutine_function,
            _ => return Err(errors::coroutine_function(api, func)),
        };
        let wrapped = PyTuple::new(
            py,
            [
                func.clone().unbind(),
                args.into_any(),
                kwargs.map_or_else(|| py.None(), Py::into_any),
            ],
        )?;
        return Ok((
            runner.clone_ref(py),
            Call::One {
                args: wrapped.unbind(),
                kwargs: None,
            },
        ));
    }
    Ok((func.clone().unbind(), Call::One { args, kwargs }))
}

#[pyclass(frozen, module = "ferrio._ferrio")]
pub struct ThreadPoolCore {
    /// Dropped in `Drop` unless the pool was forgotten after a fork.
    pool: ManuallyDrop<Pool<PyJob>>,
    forgotten: AtomicBool,
}

impl Drop for ThreadPoolCore {
    fn drop(&mut self) {
        if !self.forgotten.load(Ordering::Relaxed) {
            // SAFETY: dropped exactly once, here, and never touched again.
            unsafe { ManuallyDrop::drop(&mut self.pool) };
        }
    }
}

impl ThreadPoolCore {
    /// Hands `job` to its limiter or straight to the pool. On refusal the job is dropped unrun
    /// and its future stays pending: the Python caller raises instead of awaiting it.
    fn enqueue(&self, api: &str, job: PyJob) -> PyResult<()> {
        let res = match &job.limiter {
            Some(limiter) => Arc::clone(limiter).submit(self.pool.handle(), job),
            None => self.pool.submit(job),
        };
        res.map_err(|r| errors::rejected(api, &r))
    }
}

fn limiter_arc(limiter: Option<&Bound<'_, LimiterCore>>) -> Option<Arc<ferrio_core::Limiter<PyJob>>> {
    limiter.map(|l| Arc::clone(&l.get().inner))
}

#[pymethods]
impl ThreadPoolCore {
    #[new]
    #[pyo3(signature = (max_workers, thread_name_prefix, idle_timeout, stack_size=0, hold_signals=false))]
    fn new(
        max_workers: usize,
        thread_name_prefix: String,
        idle_timeout: f64,
        stack_size: usize,
        hold_signals: bool,
    ) -> PyResult<Self> {
        if ferrio_core::pool::refusing_new_work() {
            return Err(errors::pool_after_exit_began());
        }
        if max_workers == 0 {
            return Err(errors::no_workers());
        }
        if thread_name_prefix.contains('\0') {
            return Err(errors::nul_in_thread_name_prefix(&thread_name_prefix));
        }
        if idle_timeout.is_nan() || idle_timeout < 0.0 {
            return Err(errors::bad_idle_timeout(idle_timeout));
        }
        // Longer than a Duration holds (math.inf included): workers never retire.
        let idle_timeout = Duration::try_from_secs_f64(idle_timeout).unwrap_or(Duration::MAX);
        let config = PoolConfig {
            max_workers,
            idle_timeout,
            thread_name_prefix,
            // 0, as for threading.stack_size(): what a new thread gets by default.
            stack_size: (stack_size > 0).then_some(stack_size),
            ..PoolConfig::default()
        };
        Ok(Self {
            pool: ManuallyDrop::new(Pool::new(config, move |ctx| worker_body(ctx, hold_signals))),
            forgotten: AtomicBool::new(false),
        })
    }

    /// Queues `func(*args, **kwargs)`. Its outcome resolves `fut`: an asyncio future, through
    /// its loop's `waker`, or, without a `waker`, a `concurrent.futures.Future`, by the worker.
    #[pyo3(signature = (
        *, api, fut, func, args, kwargs=None, context=None, limiter=None, waker=None,
        run_coroutines=false, coroutine=None, always_run=false,
    ))]
    #[allow(clippy::too_many_arguments)] // reason: one flat call from Python on the hot path
    fn submit(
        &self,
        api: &str,
        fut: Py<PyAny>,
        func: &Bound<'_, PyAny>,
        args: Py<PyTuple>,
        kwargs: Option<Py<PyDict>>,
        context: Option<Py<PyAny>>,
        limiter: Option<&Bound<'_, LimiterCore>>,
        waker: Option<&Bound<'_, LoopWaker>>,
        run_coroutines: bool,
        coroutine: Option<bool>,
        always_run: bool,
    ) -> PyResult<()> {
        let (func, call) = job_call(api, func, args, kwargs, run_coroutines, coroutine)?;
        let target = match waker {
            Some(waker) => Target::Async {
                fut,
                loop_queue: Arc::clone(&waker.get().queue),
            },
            None => Target::Sync { fut },
        };
        let job = PyJob {
            func,
            call,
            context,
            target,
            limiter: limiter_arc(limiter),
            always_run,
        };
        self.enqueue(api, job)
    }

    /// `submit` for a task on the loop's thread that expects the answer sooner than the loop
    /// could sleep and wake: queues the job with the GIL released (a worker that sees it then
    /// finds the GIL free, rather than sleeping until the caller lets go of it), and spins up to
    /// `micros` microseconds for the loop's completion signal. True if it came: drain the waker.
    #[pyo3(signature = (*, api, fut, func, args, waker, micros, kwargs=None, context=None, coroutine=None))]
    #[allow(clippy::too_many_arguments)] // reason: as submit
    fn submit_and_wait(
        &self,
        py: Python<'_>,
        api: &str,
        fut: Py<PyAny>,
        func: &Bound<'_, PyAny>,
        args: Py<PyTuple>,
        waker: &Bound<'_, LoopWaker>,
        micros: u32,
        kwargs: Option<Py<PyDict>>,
        context: Option<Py<PyAny>>,
        coroutine: Option<bool>,
    ) -> PyResult<bool> {
        let (func, call) = job_call(api, func, args, kwargs, false, coroutine)?;
        let queue = Arc::clone(&waker.get().queue);
        let job = PyJob {
            func,
            call,
            context,
            target: Target::Async {
                fut,
                loop_queue: Arc::clone(&queue),
            },
            limiter: None,
            always_run: false,
        };
        let pool = &*self.pool;
        match py.detach(|| pool.submit(job).map(|()| spin_for_signal(&queue, micros))) {
            Ok(signalled) => Ok(signalled),
            Err(r) => Err(errors::rejected(api, &r)),
        }
    }

    /// Queues `func(x) for x in items` as one job; `fut` gets `(results, exception_or_None)`.
    #[pyo3(signature = (*, api, waker, fut, func, items, context=None, limiter=None))]
    #[allow(clippy::too_many_arguments)] // reason: as submit
    fn submit_map(
        &self,
        api: &str,
        waker: &Bound<'_, LoopWaker>,
        fut: Py<PyAny>,
        func: &Bound<'_, PyAny>,
        items: Py<PyTuple>,
        context: Option<Py<PyAny>>,
        limiter: Option<&Bound<'_, LimiterCore>>,
    ) -> PyResult<()> {
        let job = PyJob {
            func: func.clone().unbind(),
            call: Call::Map { items },
            context,
            target: Target::Async {
                fut,
                loop_queue: Arc::clone(&waker.get().queue),
            },
            limiter: limiter_arc(limiter),
            always_run: false,
        };
        self.enqueue(api, job)
    }

    /// Stops accepting work and wakes idle workers; with `cancel_futures`, cancels every queued
    /// job's future. Returns how many were cancelled. Does not wait: see `join`.
    fn shutdown(&self, py: Python<'_>, cancel_futures: bool) -> usize {
        let dropped = self.pool.shutdown(cancel_futures);
        let n = dropped.len();
        self.pool.count_cancelled(n as u64);
        for job in dropped {
            job.target.resolve(py, Resolution::Cancel);
        }
        n
    }

    /// Waits, with the GIL released, for every worker thread to exit; a signal handler that
    /// raises (Ctrl-C's `KeyboardInterrupt`) ends the wait with its exception.
    fn join(&self, py: Python<'_>) -> PyResult<()> {
        // NOTE: a slice bounds how long Ctrl-C waits to be noticed; the wait itself ends as soon
        // as the last worker exits, whatever the slice.
        const SLICE: Duration = Duration::from_millis(50);
        let pool = self.pool.handle().clone();
        while !finalize::detach(py, || pool.join_until(Instant::now().checked_add(SLICE))) {
            py.check_signals()?;
        }
        Ok(())
    }

    #[getter]
    fn max_workers(&self) -> usize {
        self.pool.config().max_workers
    }

    /// The pool's workers, jobs and latencies.
    fn counts(&self) -> PoolCounts {
        self.pool.stats().into()
    }

    /// In a forked child: abandon this pool without touching its lock or threads.
    fn forget_after_fork(&self) {
        self.forgotten.store(true, Ordering::Relaxed);
    }
}

/// Joins the threads of pools that were garbage-collected before their workers exited.
#[pyfunction]
pub(crate) fn join_orphans(py: Python<'_>) {
    finalize::detach(py, ferrio_core::pool::join_orphans);
}

/// From now on every pool refuses new work and no pool can be created (interpreter exit).
#[pyfunction]
pub(crate) fn refuse_new_work() {
    ferrio_core::pool::refuse_new_work();
}

/// In a forked child: forgets the parent's orphaned threads instead of joining them.
#[pyfunction]
pub(crate) fn forget_orphans_after_fork() {
    ferrio_core::pool::forget_orphans_after_fork();
}
