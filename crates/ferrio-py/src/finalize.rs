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
//!
//! A worker's first attach also creates its interpreter thread state, under the runtime's list
//! lock and without the GIL. On Python 3.10 and 3.11 a child forked while a parent thread held that
//! lock deadlocks inside `os.fork()` itself (`PyOS_AfterFork_Child` takes it before re-creating
//! it; 3.12 re-creates it first), about once in a few thousand forks of a process whose pools start
//! threads. So [`attach`] first passes a gate that `os.fork()` closes for its duration
//! ([`before_fork`]), and a fork waits, with the GIL released, for the attaches already past it.
//! The gate is one atomic, so a child can never inherit it held: [`after_fork_in_child`] resets
//! it (and `ATTACHING`, which counted parent threads).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// Forks in progress (high half) and threads of ours creating their thread state (low half).
static FORK_GATE: AtomicU64 = AtomicU64::new(0);
const ONE_FORK: u64 = 1 << 32;
const ENTERED: u64 = ONE_FORK - 1;

/// Waits until no fork is in progress, then counts this thread in until [`leave_fork_gate`].
fn enter_fork_gate() {
    let mut s = FORK_GATE.load(Ordering::SeqCst);
    loop {
        if s >= ONE_FORK {
            // Polling: the fork that closed the gate reopens it within a millisecond or so, and an
            // atomic is the one thing its child cannot inherit locked.
            std::thread::sleep(Duration::from_micros(100));
            s = FORK_GATE.load(Ordering::SeqCst);
            continue;
        }
        match FORK_GATE.compare_exchange_weak(s, s + 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return,
            Err(now) => s = now,
        }
    }
}

fn leave_fork_gate() {
    FORK_GATE.fetch_sub(1, Ordering::SeqCst);
}

/// `Python::attach(f)` for a thread ferrio started; `None`, without touching the interpreter, once
/// it is finalizing. Never runs while `os.fork()` is (module docs).
pub(crate) fn attach<T>(f: impl for<'py> FnOnce(Python<'py>) -> T) -> Option<T> {
    enter_fork_gate();
    if !announce() {
        leave_fork_gate();
        return None;
    }
    Python::try_attach(|py| {
        // The thread state exists and this thread holds the GIL: a fork may proceed.
        leave_fork_gate();
        ATTACHING.fetch_sub(1, Ordering::SeqCst);
        f(py)
    })
    .or_else(|| {
        leave_fork_gate();
        ATTACHING.fetch_sub(1, Ordering::SeqCst);
        None
    })
}

/// `os.register_at_fork(before=)`: closes the gate of [`attach`], then waits, with the GIL
/// released, for threads already past it to finish creating their thread state.
#[pyfunction]
pub(crate) fn before_fork(py: Python<'_>) {
    FORK_GATE.fetch_add(ONE_FORK, Ordering::SeqCst);
    if FORK_GATE.load(Ordering::SeqCst) & ENTERED != 0 {
        // Polling: each of them needs only the GIL, which this wait releases, to count itself out.
        detach(py, || {
            while FORK_GATE.load(Ordering::SeqCst) & ENTERED != 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        });
    }
}

/// `os.register_at_fork(after_in_parent=)`: reopens the gate closed by [`before_fork`].
#[pyfunction]
pub(crate) fn after_fork_in_parent() {
    FORK_GATE.fetch_sub(ONE_FORK, Ordering::SeqCst);
}

/// `os.register_at_fork(after_in_child=)`: the parent's threads, forks and attaches, are not here.
#[pyfunction]
pub(crate) fn after_fork_in_child() {
    FORK_GATE.store(0, Ordering::SeqCst);
    ATTACHING.store(0, Ordering::SeqCst);
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
