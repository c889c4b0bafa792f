//! The block watchdog's watcher: one Rust thread, `ferrio-watchdog`, for every watched loop of
//! the process.
//!
//! Each [`LoopWatch`] wraps a core [`Watch`] whose beat the loop runs on a timer. The watcher wakes
//! every eighth of the smallest threshold, with the GIL released, and reads each watch's atomics.
//! Only when a beat is overdue past the next sampling point, or a late beat has ended a block, does
//! it take the GIL, once per wake-up for all of them, to call the watch's handler (Python):
//! `handler._sample(lag, gil_wait)` while a block lasts, which samples the loop thread's stack and
//! returns the lag for the next sample, and `handler._end()` after it, which takes the lag with
//! `LoopWatch.take_ended()`; and, once a second,
//! `handler._paused()` for a watch whose loop is not running. `gil_wait` is how long
//! taking the GIL took: a block in C code that holds the GIL is sampled only when it gives it back,
//! and the handler says so.
//!
//! The thread starts with the first armed watch and ends with the last closed one, on its own: a
//! close never waits for it (the loop's thread must not wait on a thread that may be stuck in a
//! user's `on_block`), and [`watchdog_wait_stopped`] is the bounded wait for those who must
//! (the exit hook, tests). The registry is per process: a forked child finds its
//! parent's (whose lock a parent thread may have held) owned by another pid and starts anew.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrio_core::fork::Owner;
use ferrio_core::watchdog::{now_ns, RunDelay, Stalls, Watch};
use pyo3::prelude::*;

use crate::counts::LatencyHistogram;
use crate::{errors, finalize};

struct Entry {
    watch: Arc<Watch>,
    /// The Python side's watch, until `close()`: it holds the `LoopWatch`, so holding it for good
    /// would be a cycle the garbage collector cannot see. Locked only with the GIL held, and no
    /// Python code runs under it.
    handler: Mutex<Option<Py<PyAny>>>,
    /// The lag (ns) at which the watcher samples next; only the watcher thread writes it.
    next_sample: AtomicU64,
}

#[derive(Default)]
struct State {
    entries: Vec<Arc<Entry>>,
    /// Whether the current generation's thread runs (or was started and has not yet ended).
    has_thread: bool,
    /// Which thread is the current one: bumped when one is started or told to end, so a thread
    /// told to end never mistakes itself for its successor.
    generation: u64,
    /// When the process was stopped (the watcher overslept without waiting for a CPU), kept here
    /// so the lags the Python side takes are corrected as the watcher's are.
    stalls: Stalls,
}

struct Registry {
    owner: Owner,
    state: Mutex<State>,
    wake: Condvar,
    /// Watcher threads alive in this process, current or told to end.
    live: AtomicUsize,
    /// Times a watcher thread woke from its wait: a test waits on it for the watcher to be back
    /// in its wait, out of Python.
    wakeups: AtomicU64,
}

static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(std::ptr::null_mut());

/// This process's registry. A child forked from a process with one leaks the parent's, never
/// touching its lock (the parent's watcher may have held it), and makes its own.
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
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            live: AtomicUsize::new(0),
            wakeups: AtomicU64::new(0),
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
        // The lock guards plain data and no Python code runs under it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `lag` (ending at `end`) less the time the process was stopped within it.
    fn unstalled(&self, lag: u64, end: u64) -> u64 {
        lag.saturating_sub(self.lock().stalls.overlap(end.saturating_sub(lag), end))
    }
}

/// Nanoseconds as seconds.
#[allow(clippy::cast_precision_loss)] // reason: durations far below 2^53 ns
fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// What the watcher hands to a handler on one wake-up.
enum Call {
    Sample(Arc<Entry>, u64),
    /// A late beat ended a block: the handler takes its lag (`LoopWatch.take_ended()`), under
    /// the lock it also holds when a stop concludes the block, so exactly one of them reports it.
    End(Arc<Entry>),
    /// A paused watch, every [`PAUSED_CHECK`]: its loop may have been closed since it stopped.
    Paused(Arc<Entry>),
}

/// How often a paused watch's handler is asked whether its loop still exists: a loop closed after
/// it stopped has no hook to say so, and its watch would keep this thread alive.
const PAUSED_CHECK: u64 = 1_000_000_000;

/// The watcher thread's body: runs until no watch is left or a newer generation replaced it.
fn watch_loop(reg: &'static Registry, generation: u64, started: u64) {
    struct Alive(&'static Registry);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.live.fetch_sub(1, Ordering::Release);
        }
    }
    let _alive = Alive(reg);
    let run_delay = RunDelay::of_this_thread();
    // From the spawn, not from this thread's first instruction: a process stopped in between
    // is a stall too.
    let mut last = started;
    let mut last_delay = run_delay.read();
    let mut last_paused_check = last;
    loop {
        let (entries, tick) = {
            let mut st = reg.lock();
            if st.generation != generation {
                return;
            }
            if st.entries.is_empty() {
                st.has_thread = false;
                st.generation += 1;
                return;
            }
            let tick = st
                .entries
                .iter()
                .map(|e| e.watch.period())
                .min()
                .unwrap_or(Duration::from_millis(1));
            let st = reg
                .wake
                .wait_timeout(st, tick)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
            if st.generation != generation {
                continue;
            }
            (st.entries.clone(), tick)
        };
        reg.wakeups.fetch_add(1, Ordering::Relaxed);
        let now = now_ns();
        let delay = run_delay.read();
        let min_threshold = entries.iter().map(|e| e.watch.threshold()).min().unwrap_or(0);
        let expected = last.saturating_add(u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX));
        // This thread overslept: either the process was stopped (SIGSTOP, a debugger), or the
        // machine had no CPU for it. Only the first is a stall: time spent waiting for a CPU
        // shows in the run delay (and the loop's thread, blocked, was running all along).
        let waited_for_cpu = match (last_delay, delay) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        let stopped = now.saturating_sub(expected).saturating_sub(waited_for_cpu);
        if stopped > min_threshold / 2 {
            reg.lock().stalls.record(now - stopped, now);
        }
        let mut calls = Vec::new();
        let check_paused = now.saturating_sub(last_paused_check) >= PAUSED_CHECK;
        if check_paused {
            last_paused_check = now;
        }
        for e in &entries {
            if e.watch.has_ended() {
                e.next_sample.store(e.watch.first_sample(), Ordering::Relaxed);
                calls.push(Call::End(Arc::clone(e)));
                continue;
            }
            let Some(due) = e.watch.due() else {
                if check_paused && !e.watch.is_closed() {
                    calls.push(Call::Paused(Arc::clone(e)));
                }
                continue;
            };
            if now <= due {
                continue;
            }
            let lag = reg.unstalled(now - due, now);
            if lag >= e.next_sample.load(Ordering::Relaxed) {
                calls.push(Call::Sample(Arc::clone(e), lag));
            }
        }
        if !calls.is_empty() {
            let asked = now_ns();
            // `None` once the interpreter finalizes: the exit hook stops this thread before that.
            let _ = finalize::attach(|py| {
                let gil_wait = now_ns().saturating_sub(asked);
                for call in calls {
                    dispatch(py, call, gil_wait);
                }
            });
        }
        // Time spent waiting for the GIL and in the handlers is not a stall.
        last = now_ns();
        last_delay = run_delay.read();
    }
}

fn handler_of(py: Python<'_>, e: &Entry) -> Option<Py<PyAny>> {
    let handler = e.handler.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    handler.as_ref().map(|h| h.clone_ref(py))
}

fn dispatch(py: Python<'_>, call: Call, gil_wait: u64) {
    match call {
        Call::Sample(e, lag) => {
            let Some(handler) = handler_of(py, &e) else { return };
            let handler = handler.bind(py);
            let next = handler
                .call_method1("_sample", (secs(lag), secs(gil_wait)))
                .and_then(|next| next.extract::<f64>());
            // The handler decides when to look again; if it failed, the error is reported and the
            // watch samples again one threshold later.
            let next = match next {
                Ok(s) if s.is_finite() && s > 0.0 => {
                    u64::try_from(Duration::from_secs_f64(s).as_nanos()).unwrap_or(u64::MAX)
                }
                Ok(_) => u64::MAX,
                Err(err) => {
                    err.write_unraisable(py, Some(handler));
                    lag.saturating_add(e.watch.threshold())
                }
            };
            e.next_sample.store(next, Ordering::Relaxed);
        }
        Call::End(e) => {
            let Some(handler) = handler_of(py, &e) else { return };
            let handler = handler.bind(py);
            if let Err(err) = handler.call_method0("_end") {
                err.write_unraisable(py, Some(handler));
            }
        }
        Call::Paused(e) => {
            let Some(handler) = handler_of(py, &e) else { return };
            let handler = handler.bind(py);
            if let Err(err) = handler.call_method0("_paused") {
                err.write_unraisable(py, Some(handler));
            }
        }
    }
}

/// Adds `entry`, starting the watcher thread if none runs.
fn register(entry: Arc<Entry>) -> std::io::Result<()> {
    let reg = registry();
    let mut st = reg.lock();
    if st.entries.iter().any(|e| Arc::ptr_eq(e, &entry)) {
        return Ok(());
    }
    st.entries
        .try_reserve(1)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
    st.entries.push(entry);
    if !st.has_thread {
        st.generation += 1;
        let generation = st.generation;
        let stack = ferrio_core::pool::default_stack_size();
        let spawned = ferrio_core::pool::check_thread_room(stack.unwrap_or(2 << 20)).and_then(|()| {
            let mut b = std::thread::Builder::new().name("ferrio-watchdog".into());
            if let Some(bytes) = stack {
                b = b.stack_size(bytes);
            }
            reg.live.fetch_add(1, Ordering::AcqRel);
            let started = now_ns();
            b.spawn(move || watch_loop(reg, generation, started)).inspect_err(|_| {
                reg.live.fetch_sub(1, Ordering::AcqRel);
            })
        });
        match spawned {
            // Detached: it ends on its own (module docs).
            Ok(_) => st.has_thread = true,
            Err(e) => {
                st.entries.pop();
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Removes `entry`; the thread, if this was the last, is told to end.
fn unregister(entry: &Arc<Entry>) {
    let reg = registry();
    let mut st = reg.lock();
    let before = st.entries.len();
    st.entries.retain(|e| !Arc::ptr_eq(e, entry));
    if st.entries.len() < before && st.entries.is_empty() && st.has_thread {
        st.has_thread = false;
        st.generation += 1;
        reg.wake.notify_all();
    }
}

/// The heartbeat of one watched event loop, and its place in the watcher's list.
#[pyclass(frozen, module = "ferrio._ferrio")]
pub struct LoopWatch {
    entry: Arc<Entry>,
}

#[pymethods]
impl LoopWatch {
    #[new]
    #[pyo3(signature = (*, threshold, handler, lag))]
    fn new(threshold: &Bound<'_, PyAny>, handler: &Bound<'_, PyAny>, lag: &LatencyHistogram) -> PyResult<Self> {
        let threshold = errors::watchdog_threshold("ferrio.watchdog()", threshold)?;
        Ok(Self {
            entry: Arc::new(Entry {
                next_sample: AtomicU64::new(0),
                watch: Arc::new(Watch::new(threshold, Arc::clone(&lag.inner))),
                handler: Mutex::new(Some(handler.clone().unbind())),
            }),
        })
    }

    /// Seconds between beats.
    #[getter]
    fn period(&self) -> f64 {
        self.entry.watch.period().as_secs_f64()
    }

    /// The threshold in seconds.
    #[getter]
    fn threshold(&self) -> f64 {
        secs(self.entry.watch.threshold())
    }

    /// The loop runs: the next beat is due one period from now, and the watcher (started if
    /// need be) watches for it. Returns the period.
    fn arm(&self) -> PyResult<f64> {
        if self.entry.watch.is_closed() {
            return Err(errors::watch_closed());
        }
        self.entry
            .next_sample
            .store(self.entry.watch.first_sample(), Ordering::Relaxed);
        self.entry.watch.arm();
        register(Arc::clone(&self.entry)).map_err(|e| errors::watchdog_thread_failed(&e))?;
        Ok(self.period())
    }

    /// The beat: records its lag and returns the seconds until the next one, or `None` once closed.
    fn beat(&self) -> Option<f64> {
        self.entry.watch.beat().map(|d| d.as_secs_f64())
    }

    /// The lag in seconds of the late beat that ended a block, if no one took it yet (less the
    /// time the process was stopped within it).
    fn take_ended(&self) -> Option<f64> {
        let (lag, at) = self.entry.watch.take_ended()?;
        Some(secs(registry().unstalled(lag, at)))
    }

    /// How late the next beat is now, in seconds (less the time the process was stopped), or
    /// `None` while paused: a block that ended as the loop or the watch stops ran no late beat.
    fn overdue(&self) -> Option<f64> {
        let (lag, _) = self.entry.watch.overdue()?;
        Some(secs(registry().unstalled(lag, now_ns())))
    }

    /// The loop stopped running: nothing is due until `arm()`.
    fn pause(&self) {
        self.entry.watch.pause();
    }

    /// Stops watching for good and lets go of the handler; the last watch closed ends the
    /// watcher thread, which this does not wait for.
    fn close(&self) {
        self.entry.watch.close();
        let handler = self
            .entry
            .handler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(handler);
        unregister(&self.entry);
    }
}

/// Whether a watcher thread of this process is alive (the current one, or one told to end that
/// has not yet).
#[pyfunction]
pub(crate) fn watchdog_thread_running() -> bool {
    registry().live.load(Ordering::Acquire) > 0
}

/// How many times a watcher thread of this process woke from its wait (for tests: two more
/// wake-ups mean it went back to its wait once, out of any Python call).
#[pyfunction]
pub(crate) fn watchdog_wakeups() -> u64 {
    registry().wakeups.load(Ordering::Relaxed)
}

/// Waits up to `timeout` seconds, with the GIL released, for every watcher thread of this process
/// to end; whether they did.
#[pyfunction]
pub(crate) fn watchdog_wait_stopped(py: Python<'_>, timeout: f64) -> bool {
    let reg = registry();
    let deadline =
        Instant::now() + Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::from_secs(86_400));
    finalize::detach(py, || {
        // Polling: a thread ending has no one to tell; this runs at exit and in tests.
        while reg.live.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    })
}
