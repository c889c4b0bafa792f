//! Process-wide values computed on first use (interned names, imported callables) that a forked
//! child can always use.
//!
//! `pyo3`'s `PyOnceLock` (behind `pyo3::intern!` too) gives up the GIL, marks its `Once` as being
//! initialised, and then waits for the GIL again to compute the value. A thread caught in that
//! window when another thread calls `os.fork()` (which holds the GIL) leaves the child a cell
//! marked "being initialised" by a thread that does not exist there: the first child thread to
//! use it parks forever. A worker of the child's fresh pool did exactly that on
//! `intern!(py, "run")` about once in a thousand forks of a process whose threads were
//! submitting work.
//!
//! [`ForkSafeCell`] has no such state: it is either empty or set, in one atomic pointer. The value
//! is computed with the GIL held and published with a compare-exchange; if two threads race (the
//! computation may run Python code, which can switch threads), the first to publish wins and the
//! other drops its copy. A child forked at any moment finds the cell empty or set, never busy.
//! [`interned!`](crate::interned) is the `intern!` built on it; use these, not `PyOnceLock` or
//! `intern!` (clippy's `disallowed-macros` and `disallowed-types` in `clippy.toml` say so too).
//!
//! `pyo3` keeps two more such states of its own, which [`settle_at_import`] runs to completion
//! while the module is imported, before any thread of ours exists: the `Once` that the first
//! thread attaching from outside the interpreter runs (a child that inherited it running could
//! never attach a worker), and the lock under which it builds a class's type object on first use.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyString;

/// A value computed once per process on first use, with no "being initialised" state; or, for
/// the few cells set explicitly ([`ForkSafeCell::replace`]), the value published last.
pub(crate) struct ForkSafeCell<T> {
    /// Null until set; then a leaked `Box<T>`, never freed (cells are statics).
    value: AtomicPtr<T>,
}

impl<T: Send + Sync> ForkSafeCell<T> {
    pub(crate) const fn new() -> Self {
        Self {
            value: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The value, computing it with `init` (GIL held) if no thread has published one yet. An
    /// error is returned and the cell stays empty, so a later call tries again.
    pub(crate) fn get_or_try_init<E>(&self, _py: Python<'_>, init: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        let current = self.value.load(Ordering::Acquire);
        if !current.is_null() {
            // SAFETY: a non-null pointer was published complete (Release below) and is never
            // freed or written through again.
            return Ok(unsafe { &*current });
        }
        let mine = Box::into_raw(Box::new(init()?));
        match self
            .value
            .compare_exchange(ptr::null_mut(), mine, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: `mine` is published now, and so lives (unchanged) for the rest of the process.
            Ok(_) => Ok(unsafe { &*mine }),
            Err(winner) => {
                // SAFETY: `mine` was never published, so nobody else refers to it; dropping it here
                // with the GIL held (`_py`) releases any Python reference it holds at once.
                drop(unsafe { Box::from_raw(mine) });
                // SAFETY: as for `current` above.
                Ok(unsafe { &*winner })
            }
        }
    }

    /// The value, if one was published.
    pub(crate) fn get(&self, _py: Python<'_>) -> Option<&T> {
        let current = self.value.load(Ordering::Acquire);
        // SAFETY: as in `get_or_try_init`: published complete, never freed.
        (!current.is_null()).then(|| unsafe { &*current })
    }

    /// Publishes `value` in place of any earlier one. The earlier value is leaked, not dropped:
    /// another thread may still be reading it (cells are statics, replaced at most a few times).
    pub(crate) fn replace(&self, _py: Python<'_>, value: T) {
        let _leaked = self.value.swap(Box::into_raw(Box::new(value)), Ordering::AcqRel);
    }

    /// As [`Self::get_or_try_init`], for an `init` that cannot fail.
    pub(crate) fn get_or_init(&self, py: Python<'_>, init: impl FnOnce() -> T) -> &T {
        match self.get_or_try_init::<std::convert::Infallible>(py, || Ok(init())) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }
}

/// An interned Python `str` for a name used on a hot path; see [`interned!`](crate::interned).
pub(crate) struct Interned {
    text: &'static str,
    cell: ForkSafeCell<Py<PyString>>,
}

impl Interned {
    pub(crate) const fn new(text: &'static str) -> Self {
        Self {
            text,
            cell: ForkSafeCell::new(),
        }
    }

    pub(crate) fn get<'py>(&self, py: Python<'py>) -> &Bound<'py, PyString> {
        self.cell
            .get_or_init(py, || PyString::intern(py, self.text).unbind())
            .bind(py)
    }
}

/// `interned!(py, "name")`: the interned `str` "name", made once per process, as `pyo3::intern!`
/// but safe to race with `fork()` (module docs).
#[macro_export]
macro_rules! interned {
    ($py:expr, $text:expr) => {{
        static INTERNED: $crate::statics::Interned = $crate::statics::Interned::new($text);
        INTERNED.get($py)
    }};
}

/// Completes, at import, what `pyo3` would otherwise do lazily under a `Once` in whichever thread
/// first needs it (module docs). Type objects of classes that are not exported are made by the
/// module's init in `lib.rs`, which knows them, so this module imports no other of the crate.
pub(crate) fn settle_at_import(py: Python<'_>) {
    // Attaching from a detached thread is what runs pyo3's start-up `Once`; workers would be the
    // first to do so.
    py.detach(|| Python::try_attach(|_| ()));
}
