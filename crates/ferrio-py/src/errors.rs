//! Every error the bindings raise is built here, so messages stay consistent: the helpers that
//! read arguments and describe values first, then one section per area (pools and jobs,
//! limiters, locks, queues, files, process pools and loops). Core errors carry no Python context
//! (the call, the value), so they become `PyErr`s through these builders, which take it, rather
//! than through `From` impls, which could not (and which the orphan rule forbids for core types).

use std::time::{Duration, Instant};

use ferrio_core::pool::{RejectReason, Rejected};
use ferrio_core::prims::QueueError;
use pyo3::exceptions::{PyMemoryError, PyOSError, PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::statics::ForkSafeCell;

/// The error for a job a pool refused.
pub(crate) fn rejected<J>(api: &str, r: &Rejected<J>) -> PyErr {
    match &r.reason {
        RejectReason::Shutdown => PyRuntimeError::new_err(format!(
            "{api} cannot schedule new work after the pool was shut down; create a new pool"
        )),
        RejectReason::Spawn(e) => PyRuntimeError::new_err(format!(
            "{api} could not start a worker thread: {e}; no worker is alive to run the job"
        )),
        RejectReason::OutOfMemory => PyMemoryError::new_err(format!(
            "{api} could not queue the job: out of memory for the pool's queue"
        )),
        RejectReason::Exiting => PyRuntimeError::new_err(format!(
            "{api} cannot schedule new work after interpreter shutdown has begun"
        )),
        RejectReason::Forked => PyRuntimeError::new_err(format!(
            "{api} cannot use a pool or limiter inherited from the parent process through fork(); \
             create a new one in the child"
        )),
    }
}

/// A panic caught while a job ran, as the `PanicException` that `pyo3` raises for panics elsewhere.
#[allow(clippy::needless_pass_by_value)] // reason: takes what `catch_unwind` hands back, as is
pub(crate) fn panicked(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic from Rust code".to_owned());
    pyo3::panic::PanicException::new_err(msg)
}

/// `value`'s repr for a message, or "" if its `__repr__` raises: the message is raised either way.
pub(crate) fn repr_or_empty(value: &Bound<'_, PyAny>) -> String {
    value.repr().map(|r| r.to_string()).unwrap_or_default()
}

/// The name of `value`'s type for a message ("" if it cannot be read).
pub(crate) fn type_name(value: &Bound<'_, PyAny>) -> String {
    value.get_type().name().map(|n| n.to_string()).unwrap_or_default()
}

/// `func`'s name for messages: its `__qualname__`, else its repr.
pub(crate) fn describe(func: &Bound<'_, PyAny>) -> String {
    func.getattr(crate::interned!(func.py(), "__qualname__"))
        .and_then(|n| n.extract::<String>())
        .map(|n| format!("'{n}'"))
        .or_else(|_| func.repr().map(|r| r.to_string()))
        .unwrap_or_else(|_| "<unprintable object>".to_owned())
}

pub(crate) fn not_callable(api: &str, func: &Bound<'_, PyAny>) -> PyErr {
    let ty = type_name(func);
    PyTypeError::new_err(format!(
        "{api} expected a callable as its first argument, got {} of type '{ty}'",
        describe(func)
    ))
}

/// `_ferrio.install_hooks(name=hook)` with a `hook` that cannot be called.
pub(crate) fn hook_not_callable(name: &str, hook: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "_ferrio.install_hooks() expected {name} to be a callable, got {} of type '{}'",
        describe(hook),
        type_name(hook)
    ))
}

pub(crate) fn coroutine_function(api: &str, func: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "{api} expected a sync function, but {} is a coroutine function; await it directly",
        describe(func)
    ))
}

/// `StopIteration` cannot travel through a future (asyncio raises `TypeError` and leaves the future
/// pending); deliver it as a `RuntimeError` caused by it, as PEP 479 does for generators.
pub(crate) fn deliverable(py: Python<'_>, err: PyErr, func: &Bound<'_, PyAny>) -> PyErr {
    if !err.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) {
        return err;
    }
    let wrapped = PyRuntimeError::new_err(format!(
        "{} raised StopIteration, which a future cannot carry; it is the __cause__ of this error",
        describe(func)
    ));
    wrapped.set_cause(py, Some(err));
    wrapped
}

/// `threading.TIMEOUT_MAX`, read once: the bound every timeout is checked against.
fn timeout_max(py: Python<'_>) -> f64 {
    static MAX: ForkSafeCell<f64> = ForkSafeCell::new();
    *MAX.get_or_init(py, || {
        py.import("threading")
            .and_then(|t| t.getattr("TIMEOUT_MAX"))
            .and_then(|m| m.extract::<f64>())
            .unwrap_or(9_223_372_036.0)
    })
}

/// Validates a timeout as `threading` does (and as `ferrio._errors.check_timeout` does on the
/// Python side): `None` and `math.inf` mean no limit (`Ok(None)`); a non-number is a `TypeError`,
/// NaN or a negative number a `ValueError`, more than `threading.TIMEOUT_MAX` an `OverflowError`.
pub(crate) fn timeout_arg(api: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let py = value.py();
    let is_real = !value.is_instance_of::<pyo3::types::PyBool>()
        && !value.is_instance_of::<pyo3::types::PyString>()
        && (value.is_instance_of::<pyo3::types::PyFloat>()
            || value.is_instance_of::<pyo3::types::PyInt>()
            || py
                .import("numbers")
                .and_then(|n| n.getattr("Real"))
                .and_then(|real| value.is_instance(&real))
                .unwrap_or(false));
    let repr = || {
        value
            .repr()
            .map_or_else(|_| "an int too large to print".to_owned(), |r| r.to_string())
    };
    if !is_real {
        let ty = type_name(value);
        return Err(PyTypeError::new_err(format!(
            "{api} expected timeout to be a number of seconds or None, got {} of type '{ty}'",
            repr()
        )));
    }
    // An int too large for a float is finite, so past TIMEOUT_MAX (an OverflowError), not "no limit".
    let seconds = value.extract::<f64>().unwrap_or_else(|_| {
        if value.gt(0).unwrap_or(true) {
            f64::MAX
        } else {
            f64::MIN
        }
    });
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{api} expected timeout to be a non-negative number of seconds or None, got {}",
            repr()
        )));
    }
    if seconds == f64::INFINITY {
        return Ok(None);
    }
    let max = timeout_max(py);
    if seconds > max {
        return Err(PyOverflowError::new_err(format!(
            "{api} got timeout={}, more than threading.TIMEOUT_MAX ({max}); pass None or math.inf for no limit",
            repr()
        )));
    }
    Ok(Some(Duration::from_secs_f64(seconds)))
}

/// The instant `timeout` from now; `None` (wait forever) where there is no limit or the sum
/// does not fit an `Instant`.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// `value` as a `T` for `api`'s argument `name`: a `TypeError` naming the call for a non-int (a
/// bool counts as an int, as in Python), an `OverflowError` giving the range otherwise.
fn int_arg<T: std::fmt::Display>(
    api: &str,
    name: &str,
    value: &Bound<'_, PyAny>,
    extracted: PyResult<T>,
    range: &(T, T),
    hint: &str,
) -> PyResult<T> {
    extracted.map_err(|e| {
        let repr = repr_or_empty(value);
        if e.is_instance_of::<PyOverflowError>(value.py()) {
            PyOverflowError::new_err(format!(
                "{api} expected {name} between {} and {}, got {repr}{hint}",
                range.0, range.1
            ))
        } else {
            let ty = type_name(value);
            PyTypeError::new_err(format!("{api} expected {name} to be an int, got {repr} of type '{ty}'"))
        }
    })
}

/// An int argument that must fit `usize` (a count or a size); see [`int_arg`].
pub(crate) fn usize_arg(api: &str, name: &str, value: &Bound<'_, PyAny>, hint: &str) -> PyResult<usize> {
    int_arg(api, name, value, value.extract::<usize>(), &(0, usize::MAX), hint)
}

/// An int argument that must fit `i64`; see [`int_arg`].
pub(crate) fn i64_arg(api: &str, name: &str, value: &Bound<'_, PyAny>) -> PyResult<i64> {
    int_arg(api, name, value, value.extract::<i64>(), &(i64::MIN, i64::MAX), "")
}

// -- thread pools and jobs --------------------------------------------------------------------

/// `ThreadPoolCore()` once interpreter exit has begun.
pub(crate) fn pool_after_exit_began() -> PyErr {
    PyRuntimeError::new_err("ThreadPool() cannot create a pool after interpreter shutdown has begun")
}

pub(crate) fn no_workers() -> PyErr {
    PyValueError::new_err("max_workers must be greater than 0, got 0")
}

pub(crate) fn nul_in_thread_name_prefix(prefix: &str) -> PyErr {
    PyValueError::new_err(format!(
        "ThreadPool() expected thread_name_prefix without NUL characters, got {prefix:?}"
    ))
}

pub(crate) fn bad_idle_timeout(seconds: f64) -> PyErr {
    PyValueError::new_err(format!(
        "idle_timeout must be a non-negative number of seconds, got {seconds}"
    ))
}

/// `check_cancelled()` and friends called where no ferrio job runs.
pub(crate) fn outside_job(api: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "{api} was called outside a job running on a ferrio worker thread; \
         call it only from functions passed to ferrio.to_thread() or a ThreadPool"
    ))
}

// -- capacity limiters ------------------------------------------------------------------------

pub(crate) fn too_few_tokens(api: &str, tokens: i64) -> PyErr {
    PyValueError::new_err(format!("{api} total_tokens must be at least 1, got {tokens}"))
}

pub(crate) fn tokens_not_a_number(api: &str, value: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "{api} total_tokens must be an int or math.inf, got {}",
        repr_or_empty(value)
    ))
}

// -- locks and semaphores ---------------------------------------------------------------------

pub(crate) fn timeout_without_blocking(api: &str, timeout: Option<&Bound<'_, PyAny>>) -> PyErr {
    PyValueError::new_err(format!(
        "{api} can't specify a timeout for a non-blocking call, got timeout={}",
        timeout.map(repr_or_empty).unwrap_or_default()
    ))
}

pub(crate) fn negative_lock_timeout(api: &str, seconds: f64) -> PyErr {
    PyValueError::new_err(format!(
        "{api} expected timeout to be -1 (no limit) or a non-negative number of seconds, got {seconds}"
    ))
}

/// `with lock:` (`what`: "lock" or "semaphore") on the thread of a running event loop.
pub(crate) fn with_would_block_loop(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "`with {what}:` would block the event loop running on this thread until the {what} is free; \
         use `async with {what}:` in a coroutine"
    ))
}

/// A release with no permit to give back: `threading`'s wording for a lock and a bounded
/// semaphore, and the range for an unbounded semaphore at its limit.
pub(crate) fn release_overflow(is_lock: bool, bounded: bool) -> PyErr {
    if is_lock {
        PyRuntimeError::new_err("release unlocked lock")
    } else if bounded {
        PyValueError::new_err("Semaphore released too many times")
    } else {
        PyOverflowError::new_err(format!(
            "Semaphore.release() would take the semaphore past {} free permits",
            usize::MAX
        ))
    }
}

// -- queues -----------------------------------------------------------------------------------

pub(crate) fn unknown_queue_order(order: &str) -> PyErr {
    PyValueError::new_err(format!("unknown queue order {order:?}"))
}

/// `queue.api` (`queue`: the class name) refused `item` because comparing it raised `e`; an
/// `__lt__` that raised something other than `TypeError` passes through, as with `heapq`.
pub(crate) fn unorderable(queue: &str, api: &str, item: &Bound<'_, PyAny>, e: PyErr) -> PyErr {
    let py = item.py();
    if !e.is_instance_of::<PyTypeError>(py) {
        return e;
    }
    let err = PyTypeError::new_err(format!(
        "{queue}.{api} needs items that support '<' with each other (such as (priority, data) tuples), \
         got {}: {e}; the queue is unchanged",
        repr_or_empty(item)
    ));
    err.set_cause(py, Some(e));
    err
}

/// The exception for the core queue's error `e`, raised by `queue.api` (`queue`: the class name,
/// `api`: `put()`, `get()`...). `item` is the one the call was about, if any; `classes` are the
/// Python `(Empty, Full, ShutDown)` exceptions.
pub(crate) fn queue_error(
    py: Python<'_>,
    queue: &str,
    api: &str,
    e: QueueError<PyErr>,
    item: Option<&Bound<'_, PyAny>>,
    classes: &(Py<PyAny>, Py<PyAny>, Py<PyAny>),
) -> PyErr {
    let (cls, msg) = match e {
        QueueError::Empty => (&classes.0, "the queue is empty"),
        QueueError::Full => (&classes.1, "the queue is full"),
        QueueError::ShutDown => (&classes.2, "the queue was shut down"),
        QueueError::TooManyTaskDone => {
            return PyValueError::new_err("task_done() called more times than items were put");
        }
        QueueError::Compare(e) => {
            return match item {
                Some(item) => unorderable(queue, api, item, e),
                None if e.is_instance_of::<PyTypeError>(py) => {
                    let err = PyTypeError::new_err(format!(
                        "{queue}.{api} could not order the queued items: {e}; the queue is unchanged"
                    ));
                    err.set_cause(py, Some(e));
                    err
                }
                None => e,
            };
        }
        QueueError::Reentrant => {
            return PyRuntimeError::new_err(format!(
                "{queue}.{api} was called while the queue was ordering its items on this thread \
                 (from an item's __lt__, or code it ran); a comparison must not use the queue it is in"
            ));
        }
        QueueError::Interrupted => {
            return PyErr::take(py).unwrap_or_else(|| {
                PyRuntimeError::new_err(format!("{queue}.{api} was interrupted waiting for the queue"))
            });
        }
        QueueError::NoMemory => {
            return PyMemoryError::new_err(format!("{queue}.{api} could not allocate room for one more item"));
        }
    };
    match cls.bind(py).call1((msg,)) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

// -- files ------------------------------------------------------------------------------------

/// The `OSError` subclass `open()` would raise for `err`, on `path` if given: same errno, same
/// message (the C library's; Rust's own text appends " (os error N)"), same filename. A file
/// that did not fit in memory is a `MemoryError`, as `open().read()` raises.
pub(crate) fn os_error(err: &std::io::Error, path: Option<&std::path::Path>) -> PyErr {
    if err.kind() == std::io::ErrorKind::OutOfMemory {
        return PyMemoryError::new_err(match path {
            Some(path) => format!(
                "read_files(): '{}' does not fit in the memory left: {err}",
                path.display()
            ),
            None => err.to_string(),
        });
    }
    let Some(code) = err.raw_os_error() else {
        return PyOSError::new_err(match path {
            Some(path) => format!("{err}: {}", path.display()),
            None => err.to_string(),
        });
    };
    let message = err.to_string();
    let message = message
        .strip_suffix(&format!(" (os error {code})"))
        .unwrap_or(&message)
        .to_owned();
    // OSError(errno, strerror[, filename]) picks the subclass (FileNotFoundError, ...) itself.
    match path {
        Some(path) => PyOSError::new_err((code, message, path.to_string_lossy().into_owned())),
        None => PyOSError::new_err((code, message)),
    }
}

pub(crate) fn read_too_large(size: usize) -> PyErr {
    PyOverflowError::new_err(format!("cannot read {size} bytes at once"))
}

/// `read_files()`'s job was cancelled, yet `check_cancelled()` raised nothing.
pub(crate) fn read_cancelled() -> PyErr {
    PyRuntimeError::new_err("read_files() was cancelled")
}

pub(crate) fn reader_ended_early() -> PyErr {
    PyRuntimeError::new_err("read_files(): a reading thread ended early")
}

/// As `threading.Thread.start()` says it: "can't start new thread" is a `RuntimeError`.
pub(crate) fn reader_not_started(err: &std::io::Error) -> PyErr {
    PyRuntimeError::new_err(format!(
        "read_files() could not start a thread to read with: {err} \
         (is the process at its limit of threads or memory?)"
    ))
}

pub(crate) fn chunk_too_long() -> PyErr {
    PyOverflowError::new_err("split_lines(): chunk too long")
}

// -- process pools and event loops ------------------------------------------------------------

pub(crate) fn shared_memory_unmappable(fd: i32, err: &std::io::Error) -> PyErr {
    PyOSError::new_err(format!("ferrio could not map shared memory from fd {fd}: {err}"))
}

pub(crate) fn bad_signal_number(signal: i32) -> PyErr {
    PyValueError::new_err(format!("signal must be a positive signal number, got {signal}"))
}

pub(crate) fn parent_death_signal_refused(err: &std::io::Error) -> PyErr {
    PyOSError::new_err(format!("ferrio could not set the parent-death signal: {err}"))
}

pub(crate) fn eventfd_failed(err: &std::io::Error) -> PyErr {
    PyOSError::new_err(format!("ferrio could not create an eventfd: {err}"))
}

// -- the watchdog ------------------------------------------------------------------------------

/// Reads a watchdog threshold in seconds: a real number from a millisecond to a day.
pub(crate) fn watchdog_threshold(api: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    use ferrio_core::watchdog::{MAX_THRESHOLD, MIN_THRESHOLD};
    let bad = || {
        PyValueError::new_err(format!(
            "{api}: threshold must be a number of seconds from {} to {}, got {}; pass e.g. 0.1 for 100 ms",
            MIN_THRESHOLD.as_secs_f64(),
            MAX_THRESHOLD.as_secs_f64(),
            repr_or_empty(value)
        ))
    };
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{api}: threshold must be a number of seconds, not a bool"
        )));
    }
    let seconds: f64 = value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{api}: threshold must be a number of seconds, got {}",
            type_name(value)
        ))
    })?;
    if !seconds.is_finite() {
        return Err(bad());
    }
    let d = Duration::try_from_secs_f64(seconds).map_err(|_| bad())?;
    if d < MIN_THRESHOLD || d > MAX_THRESHOLD {
        return Err(bad());
    }
    Ok(d)
}

pub(crate) fn watch_closed() -> PyErr {
    PyRuntimeError::new_err("this loop's watch was closed; start a new ferrio.watchdog() to watch it again")
}

pub(crate) fn watchdog_thread_failed(err: &std::io::Error) -> PyErr {
    if err.kind() == std::io::ErrorKind::OutOfMemory {
        return PyMemoryError::new_err(format!("ferrio.watchdog() could not start its thread: {err}"));
    }
    PyRuntimeError::new_err(format!("ferrio.watchdog() could not start its thread: {err}"))
}
