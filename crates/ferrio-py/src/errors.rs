//! Every error the bindings raise is built here, so messages stay consistent.

use ferrio_core::pool::{RejectReason, Rejected};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;

/// The error for a job a pool refused.
pub(crate) fn rejected<J>(api: &str, r: &Rejected<J>) -> PyErr {
    match &r.reason {
        RejectReason::Shutdown => PyRuntimeError::new_err(format!(
            "{api} cannot schedule new work after the pool was shut down; create a new pool"
        )),
        RejectReason::Spawn(e) => PyRuntimeError::new_err(format!(
            "{api} could not start a worker thread: {e}; no worker is alive to run the job"
        )),
    }
}

/// `func`'s name for messages: its `__qualname__`, else its repr.
pub(crate) fn describe(func: &Bound<'_, PyAny>) -> String {
    func.getattr(pyo3::intern!(func.py(), "__qualname__"))
        .and_then(|n| n.extract::<String>())
        .map(|n| format!("'{n}'"))
        .or_else(|_| func.repr().map(|r| r.to_string()))
        .unwrap_or_else(|_| "<unprintable object>".to_owned())
}

pub(crate) fn not_callable(api: &str, func: &Bound<'_, PyAny>) -> PyErr {
    let ty = func.get_type().name().map(|n| n.to_string()).unwrap_or_default();
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
