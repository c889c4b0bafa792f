//! Every error the bindings raise is built here, so messages stay consistent.

use std::time::{Duration, Instant};

use ferrio_core::pool::{RejectReason, Rejected};
use pyo3::exceptions::{PyMemoryError, PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
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
