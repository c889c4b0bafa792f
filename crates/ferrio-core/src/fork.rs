//! Which process owns a piece of state, so a forked child never touches its parent's locks.
//!
//! `fork()` copies memory but only the calling thread: a mutex that another parent thread held at
//! that instant stays locked forever in the child, and whatever it guarded may be half-updated.
//! So every structure here that a child can still reach (pools, limiters, completion queues)
//! records [`Owner::current`] when it is made; in any other process its `Drop` leaks it instead of
//! locking or freeing anything, and its operations refuse work without locking.
//!
//! `getpid()` is a system call on every glibc since 2.25, too slow for every submission, so the
//! pid is cached and a `pthread_atfork` child handler refreshes it: it runs in the child before
//! anything else there (Python's own at-fork hooks included) can reach a pool.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The pid of this process, 0 until the at-fork handler is installed.
static PID: AtomicU32 = AtomicU32::new(0);
/// Whether some thread took on installing the handler. Not a `Once`: a child forked while a parent
/// thread was inside `call_once` would find it running forever.
static INSTALLING: AtomicBool = AtomicBool::new(false);

extern "C" fn refresh_in_child() {
    PID.store(std::process::id(), Ordering::Relaxed);
}

/// The process a piece of state belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner(u32);

impl Owner {
    /// This process.
    #[must_use]
    pub fn current() -> Self {
        let pid = PID.load(Ordering::Acquire);
        if pid != 0 {
            return Self(pid);
        }
        // Until the handler is installed (and in a child forked before it was), ask the kernel.
        if !INSTALLING.swap(true, Ordering::AcqRel) {
            // SAFETY: registers a handler that only does an atomic store, which is
            // async-signal-safe as a child-after-fork handler must be. A failure (ENOMEM) leaves
            // PID at 0, so every call asks the kernel: slower, still right.
            if unsafe { libc::pthread_atfork(None, None, Some(refresh_in_child)) } == 0 {
                // Stored after the handler exists: a nonzero PID is always refreshed by a fork.
                PID.store(std::process::id(), Ordering::Release);
            }
        }
        Self(std::process::id())
    }

    /// Whether this is the current process (false in a child forked after the state was made).
    #[must_use]
    pub fn is_current(self) -> bool {
        self == Self::current()
    }
}
