//! Completion delivery: worker threads hand finished jobs to one event loop.
//!
//! Each event loop owns one [`CompletionQueue`]. A worker pushes its completion and then sets the
//! `scheduled` flag; only the push that flips the flag from `false` to `true` signals the loop (one
//! eventfd write). The loop's drain, in this order, (1) resets the signal, (2) clears the flag,
//! (3) takes every queued completion. A push that lands after step 3 saw the flag cleared by step 2
//! and signals again; a push before step 3 is taken by it. So no completion waits without a pending
//! signal, and a burst of N completions costs one wake-up, not N. `tests/loom_completion.rs` checks
//! this under every interleaving.
//!
//! A queue inherited by a forked child belongs to the parent ([`crate::fork`]): dropping it there
//! leaks its items (a parent thread may have been pushing at the fork) and closes only the child's
//! copy of the descriptor; pushing or draining there does nothing.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::fork::Owner;
use crate::sync::{AtomicBool, Mutex, Ordering};

/// How a [`CompletionQueue`] tells its consumer there is something to drain.
pub trait Signal: Send + Sync {
    /// Make the consumer drain soon. Called at most once between two drains.
    fn notify(&self);
    /// Forget past notifications. Called by the drain before it clears the flag.
    fn reset(&self);
}

/// A non-blocking eventfd (a pipe where there is no eventfd) that an event loop watches with
/// `add_reader`.
#[derive(Debug)]
pub struct EventFd {
    read: OwnedFd,
    /// `None` for an eventfd, where one descriptor both reads and writes.
    write: Option<OwnedFd>,
}

impl EventFd {
    /// Creates the descriptor, close-on-exec and non-blocking.
    pub fn new() -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: eventfd has no memory-safety preconditions; we check its result.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd >= 0 {
                // SAFETY: `fd` was just returned to us open and is owned by nobody else.
                return Ok(Self {
                    read: unsafe { OwnedFd::from_raw_fd(fd) },
                    write: None,
                });
            }
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid two-element array for pipe() to fill.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe() succeeded, so both descriptors are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [read.as_raw_fd(), write.as_raw_fd()] {
            // SAFETY: fcntl on a descriptor we own, with plain integer flags.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                let flags = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        Ok(Self {
            read,
            write: Some(write),
        })
    }

    /// The descriptor to watch for readability.
    #[must_use]
    pub fn fileno(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

impl Signal for EventFd {
    fn notify(&self) {
        let one: u64 = 1;
        let fd = self.write.as_ref().unwrap_or(&self.read).as_raw_fd();
        let len = if self.write.is_some() { 1 } else { 8 };
        // A full pipe or a saturated eventfd (EAGAIN) already means "readable": nothing to retry.
        // SAFETY: writing `len` <= 8 bytes from a live u64 to a descriptor we own.
        unsafe { libc::write(fd, std::ptr::addr_of!(one).cast(), len) };
    }

    fn reset(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into a live 64-byte buffer from a descriptor we own.
            let n = unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            // An eventfd empties in one read; a pipe may hold more than one byte.
            if n <= 0 || self.write.is_none() {
                break;
            }
        }
    }
}

/// Finished jobs waiting for their event loop, behind one wake-up per batch.
pub struct CompletionQueue<T, S: Signal = EventFd> {
    /// Dropped in `Drop` only in the process that made the queue.
    items: ManuallyDrop<Mutex<Vec<T>>>,
    scheduled: AtomicBool,
    /// Set when the signal is sent, cleared by the drain: a hint for a consumer that spins
    /// instead of waiting on the signal ([`Self::is_signalled`]).
    signalled: AtomicBool,
    signal: S,
    owner: Owner,
}

impl<T, S: Signal> Drop for CompletionQueue<T, S> {
    fn drop(&mut self) {
        if self.owner.is_current() {
            // SAFETY: dropped exactly once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.items) };
        }
    }
}

impl<T, S: Signal> CompletionQueue<T, S> {
    /// A queue that calls `signal` when a drain is due.
    pub fn new(signal: S) -> Self {
        Self {
            items: ManuallyDrop::new(Mutex::new(Vec::new())),
            scheduled: AtomicBool::new(false),
            signalled: AtomicBool::new(false),
            signal,
            owner: Owner::current(),
        }
    }

    /// Runs `f` on the items under their lock; `None` in a forked child, which must not lock.
    fn with_items<R>(&self, f: impl FnOnce(&mut Vec<T>) -> R) -> Option<R> {
        if !self.owner.is_current() {
            return None;
        }
        // Nothing panics while holding the lock, so a poisoned one still guards intact items.
        let mut items = self.items.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(f(&mut items))
    }

    /// Calls `f` on each queued item unless the queue is busy; false if it was (for a garbage
    /// collector's traversal, which must not wait and may under-report).
    pub fn try_for_each(&self, mut f: impl FnMut(&T)) -> bool {
        if !self.owner.is_current() {
            return false;
        }
        match self.items.try_lock() {
            Ok(items) => {
                items.iter().for_each(&mut f);
                true
            }
            Err(_) => false,
        }
    }

    /// The signal this queue notifies.
    pub fn signal(&self) -> &S {
        &self.signal
    }

    /// Queues one completion; signals the consumer unless a drain is already due.
    pub fn push(&self, item: T) {
        if !self.owner.is_current() {
            // A forked child's copy of a parent's queue: nobody will drain it; leak the item.
            std::mem::forget(item);
            return;
        }
        self.with_items(|items| items.push(item));
        if !self.scheduled.swap(true, Ordering::SeqCst) {
            self.notify();
        }
    }

    /// Queues one completion without signalling; true if the caller must call [`Self::notify`]
    /// (soon: until then the consumer may not know a drain is due).
    pub fn push_deferred(&self, item: T) -> bool {
        if !self.owner.is_current() {
            std::mem::forget(item);
            return false;
        }
        self.with_items(|items| items.push(item));
        !self.scheduled.swap(true, Ordering::SeqCst)
    }

    /// Signals the consumer, for a [`Self::push_deferred`] that returned true.
    pub fn notify(&self) {
        self.signalled.store(true, Ordering::Release);
        self.signal.notify();
    }

    /// Whether a signal was sent since the last drain (a hint: a drain may race it).
    pub fn is_signalled(&self) -> bool {
        self.signalled.load(Ordering::Acquire)
    }

    /// Moves every queued completion into `out` (which should be empty; it is appended to).
    pub fn drain_into(&self, out: &mut Vec<T>) {
        if !self.owner.is_current() {
            // The descriptor is shared with the parent: resetting it would steal its wake-up.
            return;
        }
        // The order of these three steps is the protocol; see the module documentation.
        self.signalled.store(false, Ordering::Release);
        self.signal.reset();
        // SeqCst on both sides: the clear must be ordered before the take below, and the pusher's
        // swap after its push, for the argument in the module documentation to hold.
        self.scheduled.store(false, Ordering::SeqCst);
        self.with_items(|items| {
            if out.is_empty() {
                std::mem::swap(items, out);
            } else {
                out.append(items);
            }
        });
    }

    /// Whether a drain is due (for tests and assertions).
    pub fn is_scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Signal for Count {
        fn notify(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        fn reset(&self) {}
    }

    #[test]
    fn a_burst_signals_once() {
        let q = CompletionQueue::new(Count::default());
        for i in 0..100 {
            q.push(i);
        }
        assert_eq!(q.signal().0.load(std::sync::atomic::Ordering::SeqCst), 1);
        let mut out = Vec::new();
        q.drain_into(&mut out);
        assert_eq!(out, (0..100).collect::<Vec<_>>());
        assert!(!q.is_scheduled());
        q.push(100);
        assert_eq!(q.signal().0.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn eventfd_is_readable_after_notify_and_not_after_reset() {
        let fd = EventFd::new().unwrap();
        let readable = |fd: &EventFd| {
            let mut p = libc::pollfd {
                fd: fd.fileno(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polling one valid pollfd with a zero timeout.
            unsafe { libc::poll(&raw mut p, 1, 0) == 1 }
        };
        assert!(!readable(&fd));
        fd.notify();
        fd.notify();
        assert!(readable(&fd));
        fd.reset();
        assert!(!readable(&fd));
    }
}
