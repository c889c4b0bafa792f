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

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// The pid of this process, 0 until the at-fork handler is installed.
static PID: AtomicU32 = AtomicU32::new(0);
static INSTALL: Once = Once::new();

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
        INSTALL.call_once(|| {
            PID.store(std::process::id(), Ordering::Relaxed);
            // SAFETY: registers a handler that only does an atomic store, which is
            // async-signal-safe as a child-after-fork handler must be. The return value only
            // reports ENOMEM; without the handler a child would keep the parent's pid and treat
            // its inherited state as its own, which is the behaviour without this module.
            unsafe { libc::pthread_atfork(None, None, Some(refresh_in_child)) };
        });
        Self(PID.load(Ordering::Relaxed))
    }

    /// Whether this is the current process (false in a child forked after the state was made).
    #[must_use]
    pub fn is_current(self) -> bool {
        self == Self::current()
    }
}
