//! A capacity limiter: at most `total` jobs holding its tokens run at once, across any pools.
//!
//! A job that finds no free token waits in the limiter's FIFO, not in a pool's queue, so it holds
//! no worker while it waits. When a running job gives its token back, the token passes straight to
//! the oldest waiter, which is then submitted to its own pool: first come, first served, and no
//! thread ever blocks on the limiter.
//!
//! A limiter inherited by a forked child belongs to the parent ([`crate::fork`]): the child never
//! locks it (a parent thread may have held the lock at the fork) and dropping it there leaks it.
//! The child makes a new limiter with the same [`Limiter::total`], which is readable lock-free.

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::fork::Owner;
use crate::pool::{PoolHandle, RejectReason, Rejected};

/// The total a limiter without a limit stores (what `math.inf` tokens become).
pub const INFINITE_TOKENS: usize = usize::MAX / 2;

/// A snapshot of a limiter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterStats {
    pub total_tokens: usize,
    pub borrowed_tokens: usize,
    pub waiting: usize,
}

struct State<J: Send + 'static> {
    total: usize,
    borrowed: usize,
    waiting: VecDeque<(PoolHandle<J>, J)>,
}

/// Jobs the limiter could not run, for the caller to resolve.
pub struct Leftovers<J> {
    /// Waiters `is_stale` said nobody wants any more; they never ran.
    pub stale: Vec<(PoolHandle<J>, J)>,
    /// Waiters whose pool refused them (it was shut down while they waited).
    pub rejected: Vec<Rejected<J>>,
}

impl<J> Default for Leftovers<J> {
    fn default() -> Self {
        Self {
            stale: Vec::new(),
            rejected: Vec::new(),
        }
    }
}

/// A FIFO capacity limiter; see the module documentation.
pub struct Limiter<J: Send + 'static> {
    /// Dropped in `Drop` only in the process that made it.
    state: ManuallyDrop<Mutex<State<J>>>,
    owner: Owner,
    /// `state.total`, readable without the lock (after a fork).
    total: AtomicUsize,
}

impl<J: Send + 'static> Drop for Limiter<J> {
    fn drop(&mut self) {
        if self.owner.is_current() {
            // SAFETY: dropped exactly once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.state) };
        }
    }
}

impl<J: Send + 'static> Limiter<J> {
    /// A limiter with `total` tokens (at least 1).
    #[must_use]
    pub fn new(total: usize) -> Self {
        assert!(total > 0, "a limiter needs at least one token");
        Self {
            state: ManuallyDrop::new(Mutex::new(State {
                total,
                borrowed: 0,
                waiting: VecDeque::new(),
            })),
            owner: Owner::current(),
            total: AtomicUsize::new(total),
        }
    }

    /// The number of tokens, without locking (so a forked child can copy the limiter).
    #[must_use]
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Submits `job` to `pool` holding a token, or queues it until one is free. The job must call
    /// [`Self::release`] exactly once when it ends, if it was ever submitted to the pool.
    pub fn submit(&self, pool: &PoolHandle<J>, job: J) -> Result<(), Rejected<J>> {
        if !self.owner.is_current() {
            return Err(Rejected {
                job,
                reason: RejectReason::Forked,
            });
        }
        if pool.is_shutdown() {
            return Err(Rejected {
                job,
                reason: RejectReason::Shutdown,
            });
        }
        let mut st = self.lock();
        if st.borrowed < st.total && st.waiting.is_empty() {
            st.borrowed += 1;
            drop(st);
            pool.submit(job).inspect_err(|_| self.lock().borrowed -= 1)
        } else if st.waiting.try_reserve(1).is_err() {
            Err(Rejected {
                job,
                reason: RejectReason::OutOfMemory,
            })
        } else {
            st.waiting.push_back((pool.clone(), job));
            Ok(())
        }
    }

    /// Gives back one token: it passes to the oldest waiter that `is_stale` does not reject.
    pub fn release(&self, is_stale: impl FnMut(&J) -> bool) -> Leftovers<J> {
        let mut out = Leftovers::default();
        if self.owner.is_current() {
            self.hand_over(1, is_stale, &mut out);
        }
        out
    }

    /// Passes each of `tokens` held tokens to a waiter, returning the rest to the pool of tokens.
    fn hand_over(&self, tokens: usize, mut is_stale: impl FnMut(&J) -> bool, out: &mut Leftovers<J>) {
        let mut tokens = tokens;
        while tokens > 0 {
            let next = {
                let mut st = self.lock();
                if st.borrowed > st.total {
                    // The total shrank: retire this token instead of passing it on.
                    st.borrowed -= 1;
                    tokens -= 1;
                    continue;
                }
                let Some(waiter) = st.waiting.pop_front() else {
                    st.borrowed -= tokens;
                    return;
                };
                waiter
            };
            // Evaluated without the lock: `is_stale` may be slow, and may take other locks.
            if is_stale(&next.1) {
                out.stale.push(next);
                continue;
            }
            match next.0.submit(next.1) {
                Ok(()) => tokens -= 1,
                Err(r) => out.rejected.push(r),
            }
        }
    }

    /// Changes the number of tokens. Growing admits waiters at once; shrinking takes effect as
    /// running jobs give their tokens back.
    pub fn set_total(&self, total: usize, is_stale: impl FnMut(&J) -> bool) -> Leftovers<J> {
        assert!(total > 0, "a limiter needs at least one token");
        if !self.owner.is_current() {
            return Leftovers::default();
        }
        let free = {
            let mut st = self.lock();
            st.total = total;
            self.total.store(total, Ordering::Relaxed);
            let free = st.total.saturating_sub(st.borrowed).min(st.waiting.len());
            st.borrowed += free;
            free
        };
        let mut out = Leftovers::default();
        self.hand_over(free, is_stale, &mut out);
        out
    }

    /// A snapshot of the limiter.
    #[must_use]
    pub fn stats(&self) -> LimiterStats {
        if !self.owner.is_current() {
            return LimiterStats {
                total_tokens: self.total(),
                ..LimiterStats::default()
            };
        }
        let st = self.lock();
        LimiterStats {
            total_tokens: st.total,
            borrowed_tokens: st.borrowed,
            waiting: st.waiting.len(),
        }
    }
}
