//! Completion signals held back to the end of a worker's batch, for pools that ask for it
//! (`ferrio.PinnedThread`: one thread that runs short calls in bursts).
//!
//! Why: a loop woken by a burst's first completion wakes while the worker is still running the
//! rest of the burst, and takes the GIL the first time the worker drops it inside a call (sqlite3
//! drops it around every step). The worker then waits for the loop's whole iteration to get it
//! back, and the two threads hand the GIL over once or twice per call: a burst of 64 point
//! selects ran at a third of the speed of the same calls with the signal held to the batch's end,
//! which wakes the loop once, when the worker is done and out of its way.
//!
//! The bound: a signal is held at most [`BOUND`]. A flusher thread (one per process, Rust only,
//! never touching the interpreter) sends the signals of a worker whose batch outlasts it, so a call
//! that finished just before a long one started is not kept waiting for it.
//!
//! Fork: the registry is per process, like the watchdog's. A child leaks the parent's, never
//! touching its lock (the parent's flusher may have held it), and starts its own on first use.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use ferrio_core::fork::Owner;

use crate::waker::{Completions, WakeSignal};

/// The longest a completion's signal is held.
pub(crate) const BOUND: Duration = Duration::from_millis(2);
/// How long the flusher waits with nothing held before its thread exits.
const IDLE_EXIT: Duration = Duration::from_secs(1);

/// One worker's held signals.
pub(crate) struct Slot {
    /// When the oldest held signal was held, in ns since [`epoch`]; 0 while none is held.
    since: AtomicU64,
    held: Mutex<Vec<Arc<Completions>>>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Completions>>> {
        // Plain data, and nothing panics under the lock.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds back the signal of `queue` (whose last push asked for one). False if it cannot (an
    /// eventfd-less loop's signal runs Python code, which the flusher must not; or no memory):
    /// the caller signals now.
    pub(crate) fn hold(&self, queue: &Arc<Completions>) -> bool {
        if !matches!(queue.signal(), WakeSignal::Fd(_)) {
            return false;
        }
        let first = {
            let mut held = self.lock();
            if held.try_reserve(1).is_err() {
                return false;
            }
            held.push(Arc::clone(queue));
            // Under the lock, as in `release`: a held signal always has its time set.
            let first = self.since.load(Ordering::Acquire) == 0;
            if first {
                self.since.store(now_ns(), Ordering::Release);
            }
            first
        };
        if first {
            registry().kick();
        }
        true
    }

    /// Sends every held signal.
    pub(crate) fn release(&self) {
        let held = {
            let mut held = self.lock();
            self.since.store(0, Ordering::Release);
            std::mem::take(&mut *held)
        };
        for queue in held {
            queue.notify();
        }
    }
}

struct State {
    slots: Vec<Weak<Slot>>,
    /// Whether the flusher thread is alive.
    running: bool,
    /// Whether it waits without a deadline (nothing held): only then does a new hold wake it.
    idle: bool,
}

struct Registry {
    owner: Owner,
    state: Mutex<State>,
    wake: Condvar,
    /// Signals the flusher sent (for tests).
    flushed: AtomicU64,
}

static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(std::ptr::null_mut());

fn registry() -> &'static Registry {
    loop {
        let current = REGISTRY.load(Ordering::Acquire);
        // SAFETY: a published registry is leaked, never freed.
        if let Some(r) = unsafe { current.as_ref() } {
            if r.owner.is_current() {
                return r;
            }
        }
        let mine = Box::into_raw(Box::new(Registry {
            owner: Owner::current(),
            state: Mutex::new(State {
                slots: Vec::new(),
                running: false,
                idle: false,
            }),
            wake: Condvar::new(),
            flushed: AtomicU64::new(0),
        }));
        if REGISTRY
            .compare_exchange(current, mine, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `mine` was never published.
            drop(unsafe { Box::from_raw(mine) });
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new slot for a worker, watched by the flusher. `None` without memory for it: the worker
    /// then signals every completion at once, as other pools do.
    fn register(&'static self) -> Option<Arc<Slot>> {
        let slot = Arc::new(Slot {
            since: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
        });
        let mut st = self.lock();
        st.slots.retain(|w| w.strong_count() > 0);
        st.slots.try_reserve(1).ok()?;
        st.slots.push(Arc::downgrade(&slot));
        Some(slot)
    }

    /// A slot started holding: make sure the flusher will look at it in time.
    fn kick(&'static self) {
        let mut st = self.lock();
        if st.running {
            if st.idle {
                st.idle = false;
                self.wake.notify_one();
            }
            return;
        }
        st.running = true;
        st.idle = false;
        drop(st);
        let spawned = std::thread::Builder::new()
            .name("ferrio-flusher".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || self.flusher());
        if spawned.is_err() {
            // No thread: nobody bounds the hold, so every worker signals at its batch's end only.
            // Still correct (each batch ends), just without the bound on a long call.
            self.lock().running = false;
        }
    }

    fn flusher(&'static self) {
        let mut st = self.lock();
        loop {
            let now = now_ns();
            let bound = u64::try_from(BOUND.as_nanos()).unwrap_or(u64::MAX);
            let mut due: Vec<Arc<Slot>> = Vec::new();
            let mut next: Option<u64> = None;
            st.slots.retain(|w| w.strong_count() > 0);
            for slot in st.slots.iter().filter_map(Weak::upgrade) {
                let since = slot.since.load(Ordering::Acquire);
                if since == 0 {
                    continue;
                }
                let deadline = since.saturating_add(bound);
                if deadline <= now {
                    if due.try_reserve(1).is_ok() {
                        due.push(slot);
                    }
                } else {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                }
            }
            if !due.is_empty() {
                drop(st);
                for slot in due {
                    slot.release();
                    self.flushed.fetch_add(1, Ordering::Relaxed);
                }
                st = self.lock();
                continue;
            }
            if let Some(deadline) = next {
                st.idle = false;
                st = self
                    .wake
                    .wait_timeout(st, Duration::from_nanos(deadline - now))
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            } else {
                st.idle = true;
                let (guard, timeout) = self
                    .wake
                    .wait_timeout(st, IDLE_EXIT)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                st = guard;
                if timeout.timed_out() && st.idle {
                    st.running = false;
                    return;
                }
            }
        }
    }
}

/// A slot for the calling worker thread, or `None` (no memory: signal at once instead).
pub(crate) fn slot() -> Option<Arc<Slot>> {
    registry().register()
}

/// How many signals the flusher has sent because a batch outlasted [`BOUND`].
#[pyo3::pyfunction]
pub(crate) fn deferred_flushes() -> u64 {
    registry().flushed.load(Ordering::Relaxed)
}
