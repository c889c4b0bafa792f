//! The loop side of the block watchdog: a heartbeat an event loop runs on a timer, and the
//! arithmetic the watcher thread does with it, free of Python.
//!
//! A watched loop runs [`Watch::beat`] from a timer every [`Watch::period`]. A loop that is free
//! runs each timer within a few microseconds of its time; a loop stuck in one callback runs none.
//! So the watcher thread (in the bindings) only compares the clock with [`Watch::due`]: a lag past
//! half the threshold is sampled, and the beat that finally runs reports the whole lag back
//! ([`Watch::take_ended`]). Every operation on the loop's side is a few relaxed atomics, with no
//! lock, so a beat costs well under a microsecond and can never wait on the watcher.
//!
//! Time is `CLOCK_MONOTONIC` in nanoseconds, read with no state of our own, so a forked child
//! inherits nothing that could be half-set. A process stopped by `SIGSTOP` or a debugger stops its
//! watcher too: the watcher sees its own sleep overrun and records a [`Stalls`] window, which is
//! taken out of every lag that overlaps it, so a suspended process is not reported as blocked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::stats::Histogram;

/// The shortest threshold a watch accepts. Loops' timers are only good to a millisecond (uvloop
/// rounds delays to whole milliseconds, epoll its timeouts), so a heartbeat needs a period of a
/// millisecond or more, and a threshold well above it: an idle loop's timers may come a
/// millisecond late.
pub const MIN_THRESHOLD: Duration = Duration::from_millis(10);
/// The shortest time between beats (see [`MIN_THRESHOLD`]).
pub const MIN_PERIOD: Duration = Duration::from_millis(1);
/// The longest threshold a watch accepts: a day.
pub const MAX_THRESHOLD: Duration = Duration::from_secs(86_400);

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `time.monotonic()` and of asyncio's loops.
#[must_use]
#[allow(clippy::cast_sign_loss)] // reason: the monotonic clock is never negative
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One watched loop's heartbeat.
pub struct Watch {
    threshold: u64,
    period: u64,
    /// When the next beat is due, in [`now_ns`]; 0 while the loop is not running (paused).
    due: AtomicU64,
    /// The lag of the last beat that came at least [`Watch::first_sample`] late, 0 if taken.
    ended_lag: AtomicU64,
    /// When that beat ran.
    ended_at: AtomicU64,
    closed: AtomicBool,
    /// Every beat's lag; shared, so one histogram can cover several loops.
    lag: Arc<Histogram>,
}

impl Watch {
    /// A watch for blocks of `threshold` or more (clamped to [`MIN_THRESHOLD`], [`MAX_THRESHOLD`]).
    /// Its beat comes every eighth of the threshold, rounded up to whole milliseconds (at least
    /// every second): a beat's lag is a block's length less at most one period. Each lag is
    /// recorded into `lag`.
    #[must_use]
    pub fn new(threshold: Duration, lag: Arc<Histogram>) -> Self {
        let threshold = ns(threshold.clamp(MIN_THRESHOLD, MAX_THRESHOLD));
        Self {
            threshold,
            // Whole milliseconds: uvloop rounds timer delays to them, and would beat early.
            period: (threshold / 8)
                .div_ceil(1_000_000)
                .saturating_mul(1_000_000)
                .clamp(ns(MIN_PERIOD), 1_000_000_000),
            due: AtomicU64::new(0),
            ended_lag: AtomicU64::new(0),
            ended_at: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            lag,
        }
    }

    /// The threshold in nanoseconds.
    #[must_use]
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// The time between beats.
    #[must_use]
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period)
    }

    /// The lag at which the watcher first samples the loop: half the threshold, so that a block
    /// has two samples (one callback, or many?) by the time it reaches the threshold.
    #[must_use]
    pub fn first_sample(&self) -> u64 {
        self.threshold / 2
    }

    /// The loop (re)starts running: the next beat is due one period from now.
    pub fn arm(&self) {
        self.due.store(now_ns().saturating_add(self.period), Ordering::Release);
    }

    /// The loop stopped running: nothing is due until [`Watch::arm`].
    pub fn pause(&self) {
        self.due.store(0, Ordering::Release);
    }

    /// When the next beat is due, or `None` while paused or closed.
    #[must_use]
    pub fn due(&self) -> Option<u64> {
        match self.due.load(Ordering::Acquire) {
            0 => None,
            _ if self.is_closed() => None,
            due => Some(due),
        }
    }

    /// The beat, run by the loop: records how late it came, arms the next one and returns the
    /// time to wait for it; `None` once the watch is closed (the loop then stops beating).
    pub fn beat(&self) -> Option<Duration> {
        if self.is_closed() {
            return None;
        }
        let now = now_ns();
        let due = self.due.load(Ordering::Acquire);
        let lag = if due == 0 { 0 } else { now.saturating_sub(due) };
        self.lag.record(Duration::from_nanos(lag));
        if lag >= self.first_sample() {
            self.ended_at.store(now, Ordering::Relaxed);
            self.ended_lag.store(lag, Ordering::Release);
        }
        self.due.store(now.saturating_add(self.period), Ordering::Release);
        Some(self.period())
    }

    /// Whether a late beat's lag is waiting for [`Watch::take_ended`].
    #[must_use]
    pub fn has_ended(&self) -> bool {
        self.ended_lag.load(Ordering::Acquire) != 0
    }

    /// The lag and time of the late beat that ended a block since the last call, if any.
    pub fn take_ended(&self) -> Option<(u64, u64)> {
        match self.ended_lag.swap(0, Ordering::Acquire) {
            0 => None,
            lag => Some((lag, self.ended_at.load(Ordering::Relaxed))),
        }
    }

    /// How late the next beat is now, and when it was due (a block that just ended on the loop's
    /// own thread runs no beat before the loop or the watch stops); `None` while paused.
    #[must_use]
    pub fn overdue(&self) -> Option<(u64, u64)> {
        match self.due.load(Ordering::Acquire) {
            0 => None,
            due => Some((now_ns().saturating_sub(due), due)),
        }
    }

    /// Stops the beat for good.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether [`Watch::close`] ran.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// This thread's time spent runnable but waiting for a CPU, in nanoseconds, from
/// `/proc/thread-self/schedstat` (its second field): what tells a thread the machine starved
/// (its wait grows) from a process that was stopped (a stopped thread waits for no CPU).
pub struct RunDelay(Option<std::fs::File>);

impl RunDelay {
    /// Opens this thread's `schedstat`; without it (no procfs), every reading is `None`.
    #[must_use]
    pub fn of_this_thread() -> Self {
        Self(std::fs::File::open("/proc/thread-self/schedstat").ok())
    }

    /// The wait so far, or `None` if it cannot be read.
    #[must_use]
    pub fn read(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 96];
        let n = self.0.as_ref()?.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        text.split_ascii_whitespace().nth(1)?.parse().ok()
    }
}

/// The last few windows in which the watcher itself did not run (the process was stopped, or the
/// machine gave it no CPU), kept to take them out of lags measured across them.
#[derive(Default)]
pub struct Stalls {
    windows: [(u64, u64); 8],
    next: usize,
}

impl Stalls {
    /// Records that nothing ran from `start` to `end`.
    pub fn record(&mut self, start: u64, end: u64) {
        self.windows[self.next] = (start, end);
        self.next = (self.next + 1) % self.windows.len();
    }

    /// How much of `start..end` fell in recorded windows.
    #[must_use]
    pub fn overlap(&self, start: u64, end: u64) -> u64 {
        self.windows
            .iter()
            .map(|&(s, e)| e.min(end).saturating_sub(s.max(start)))
            .sum::<u64>()
            .min(end.saturating_sub(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_on_time_ends_nothing_and_a_late_one_reports_its_lag() {
        let w = Watch::new(Duration::from_millis(40), Arc::default());
        assert_eq!(w.period(), Duration::from_millis(5));
        assert_eq!(w.due(), None, "paused until armed");
        w.arm();
        assert!(w.beat().is_some());
        assert_eq!(w.take_ended(), None);
        std::thread::sleep(Duration::from_millis(5 + 25));
        w.beat();
        assert!(w.has_ended());
        let (lag, at) = w.take_ended().expect("25 ms late, past half the threshold");
        assert!(lag >= 20_000_000, "lag {lag}");
        assert!(at <= now_ns());
        assert_eq!(w.take_ended(), None, "taken once");
        w.close();
        assert_eq!(w.beat(), None);
        assert_eq!(w.due(), None);
    }

    #[test]
    fn thresholds_are_clamped() {
        assert_eq!(Watch::new(Duration::ZERO, Arc::default()).threshold(), 10_000_000);
        assert_eq!(
            Watch::new(Duration::ZERO, Arc::default()).period(),
            Duration::from_millis(2)
        );
        assert_eq!(
            Watch::new(Duration::MAX, Arc::default()).threshold(),
            86_400_000_000_000
        );
        assert_eq!(
            Watch::new(Duration::from_secs(3600), Arc::default()).period(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn run_delay_reads_and_grows_only_while_waiting() {
        let d = RunDelay::of_this_thread();
        let Some(before) = d.read() else { return }; // no procfs here
        std::thread::sleep(Duration::from_millis(20));
        let after = d.read().expect("readable once, readable again");
        assert!(after >= before);
        assert!(after - before < 20_000_000, "a sleeping thread waits for no CPU");
    }

    #[test]
    fn stalls_are_taken_out_of_overlapping_lags_only() {
        let mut s = Stalls::default();
        s.record(100, 200);
        assert_eq!(s.overlap(0, 50), 0);
        assert_eq!(s.overlap(150, 400), 50);
        assert_eq!(s.overlap(0, 1000), 100);
        for i in 0..20 {
            s.record(1000 + i * 10, 1005 + i * 10);
        }
        assert_eq!(s.overlap(100, 200), 0, "the oldest windows are forgotten");
        assert_eq!(s.overlap(1000, 1200), 40);
    }
}
