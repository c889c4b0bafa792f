//! Keeping Rust frames out of the interpreter's way as it finalizes.
//!
//! On `CPython` before 3.14, a thread that takes the GIL after finalization has begun is ended with
//! `pthread_exit()`, a forced unwind; through Rust frames (a worker's loop, a pyfunction that
//! released the GIL) that aborts the process with "FATAL: exception not rethrown". So every place
//! where ferrio gives the GIL up and takes it back goes through [`detach`], and a worker thread
//! attaches through [`attach`]: once [`stop_attaching`] has run (the last at-exit hook), a thread
//! coming back to the interpreter parks for good instead, holding nothing, and dies with the
//! process, which is what `CPython` 3.14 does with such threads itself.
//!
//! `Py_IsFinalizing` cannot close the window on its own: a thread may check it, then lose the race
//! to the finalizer. Here the returning thread announces itself in `ATTACHING` before it reads
//! `FINALIZING`, and `stop_attaching` sets `FINALIZING` before it waits, with the GIL released,
//! for `ATTACHING` to drain: with sequentially consistent atomics on both sides, either the thread
//! sees the flag and parks, or the finalizer sees it coming and lets it take the GIL first.
//! A thread that is *running* Python at that point (a job still running at exit) is beyond reach;
//! the exit-time join exists so that none is.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

static FINALIZING: AtomicBool = AtomicBool::new(false);
/// Threads between "done waiting" and "holding the GIL".
static ATTACHING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread called [`stop_attaching`]: it finalizes the interpreter and must keep
    /// working (module teardown may still call into ferrio).
    static FINALIZER: Cell<bool> = const { Cell::new(false) };
}

/// Announces that this thread is about to take the GIL; false (and unannounced) if it must not.
fn announce() -> bool {
    ATTACHING.fetch_add(1, Ordering::SeqCst);
    if FINALIZING.load(Ordering::SeqCst) && !FINALIZER.with(Cell::get) {
        ATTACHING.fetch_sub(1, Ordering::SeqCst);
        return false;
    }
    true
}

fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// `py.detach(f)`, except that a thread returning after [`stop_attaching`] parks for good instead
/// of taking the GIL back (module docs).
pub(crate) fn detach<T: Send>(py: Python<'_>, f: impl Send + FnOnce() -> T) -> T {
    let out = py.detach(|| {
        let out = f();
        if !announce() {
            park_forever();
        }
        out
    });
    ATTACHING.fetch_sub(1, Ordering::SeqCst);
    out
}

/// `Python::attach(f)` for a thread ferrio started; `None`, without touching the interpreter, once
/// it is finalizing.
pub(crate) fn attach<T>(f: impl for<'py> FnOnce(Python<'py>) -> T) -> Option<T> {
    if !announce() {
        return None;
    }
    Python::try_attach(|py| {
        ATTACHING.fetch_sub(1, Ordering::SeqCst);
        f(py)
    })
    .or_else(|| {
        ATTACHING.fetch_sub(1, Ordering::SeqCst);
        None
    })
}

/// From now on, threads returning to the interpreter through [`detach`] or [`attach`] park
/// instead; waits (GIL released, at most a second) for those already on their way in. Called by
/// the last at-exit hook, after every pool was joined.
#[pyfunction]
pub(crate) fn stop_attaching(py: Python<'_>) {
    FINALIZER.with(|f| f.set(true));
    FINALIZING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = Instant::now() + Duration::from_secs(1);
        // Polling: a thread on its way in only needs the GIL, which this wait released; there is
        // no event to hand off on, and this runs once, at exit.
        while ATTACHING.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}
