//! The Python functions the extension calls back into, registered once, when `ferrio._threads`
//! is imported, with `_ferrio.install_hooks(...)`: not looked up by module name, nor passed with
//! every call.

use pyo3::prelude::*;

use crate::errors;
use crate::statics::ForkSafeCell;

/// What `install_hooks` registered.
pub(crate) struct Hooks {
    /// `worker_started(name)`: each worker thread calls it once, as it starts.
    pub worker_started: Py<PyAny>,
    /// `worker_exiting()`: each worker thread calls it once, as it exits.
    pub worker_exiting: Py<PyAny>,
    /// `run_coroutine_function(func, args, kwargs)`: runs a coroutine function on the worker's
    /// own event loop, for jobs submitted with `run_coroutines=True`.
    pub run_coroutine_function: Py<PyAny>,
}

static HOOKS: ForkSafeCell<Hooks> = ForkSafeCell::new();

/// The hooks, or `None` before `ferrio._threads` installed them (workers then skip them, and
/// coroutine functions are refused).
pub(crate) fn get(py: Python<'_>) -> Option<&'static Hooks> {
    HOOKS.get(py)
}

/// Registers the Python functions the Rust side calls; a later call replaces them (a reloaded
/// `ferrio._threads`).
#[pyfunction]
#[pyo3(signature = (*, worker_started, worker_exiting, run_coroutine_function))]
pub(crate) fn install_hooks(
    py: Python<'_>,
    worker_started: &Bound<'_, PyAny>,
    worker_exiting: &Bound<'_, PyAny>,
    run_coroutine_function: &Bound<'_, PyAny>,
) -> PyResult<()> {
    for (name, hook) in [
        ("worker_started", worker_started),
        ("worker_exiting", worker_exiting),
        ("run_coroutine_function", run_coroutine_function),
    ] {
        if !hook.is_callable() {
            return Err(errors::hook_not_callable(name, hook));
        }
    }
    HOOKS.replace(
        py,
        Hooks {
            worker_started: worker_started.clone().unbind(),
            worker_exiting: worker_exiting.clone().unbind(),
            run_coroutine_function: run_coroutine_function.clone().unbind(),
        },
    );
    Ok(())
}
