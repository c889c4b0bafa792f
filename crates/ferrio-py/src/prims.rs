//! Locks, semaphores, events and queues for threads and tasks at once (`ferrio-core::prims`).
//!
//! Sync waits release the GIL and wake every 50 ms to run signal handlers, so Ctrl-C interrupts
//! them; a thread that stops waiting gives back whatever reached it meanwhile. Async waits queue
//! the task's future: hand-offs resolve it directly on its own loop's thread, or through that
//! loop's completion queue from anywhere else, and a hand-off that finds the future cancelled
//! is given back to the primitive.
//!
//! Every call here holds the GIL, and no Python code runs under a primitive's lock except a
//! `PriorityQueue`'s `__lt__`: whatever leaves a primitive (a future, an item) is dropped after
//! its lock is released, and futures are resolved after the operation returns. Because `__lt__`
//! may release the GIL, queues wait for a contended lock with the GIL released
//! ([`wait_detached`]); that wait does not run signal handlers, and lasts as long as the other
//! thread's comparison.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrio_core::prims::{self, Attempt, Order, Put, QueueError, ThreadWaiter, Wakeups};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyTuple};

use crate::counts::{QueueCounts, SemaphoreCounts};
use crate::errors;
use crate::waker::{resolve, Completions, GiveBack, LoopWaker, Resolution};

/// A task's future waiting on a primitive.
pub(crate) struct TaskWaiter {
    fut: Py<PyAny>,
    loop_queue: Arc<Completions>,
    owner: std::thread::ThreadId,
}

impl TaskWaiter {
    fn new(waker: &Bound<'_, LoopWaker>, fut: Py<PyAny>) -> Self {
        let w = waker.get();
        Self {
            fut,
            loop_queue: Arc::clone(&w.queue),
            owner: w.owner,
        }
    }

    fn is(&self, fut: &Bound<'_, PyAny>) -> bool {
        self.fut.as_ptr() == fut.as_ptr()
    }

    fn deliver(self, py: Python<'_>, res: Resolution) {
        if std::thread::current().id() == self.owner {
            // On the loop's own thread: no need to go through the queue and a wake-up.
            let _ = resolve(py, self.fut.bind(py), res);
        } else {
            self.loop_queue.push((self.fut, res));
        }
    }
}

const SLICE: Duration = Duration::from_millis(50);

/// How a sync wait ended.
enum Waited<V> {
    Got(V),
    TimedOut,
    /// A signal handler raised (Ctrl-C): the caller abandons its wait, gives back anything
    /// that reached it, and re-raises.
    Interrupted(PyErr),
}

/// Blocks this thread, with the GIL released, until `w` is granted, `timeout` passes, or a
/// signal handler raises.
fn wait_thread<V: Send>(py: Python<'_>, w: &Arc<ThreadWaiter<V>>, timeout: Option<Duration>) -> Waited<V> {
    let deadline = errors::deadline_after(timeout);
    loop {
        let slice = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
        if let Some(v) = crate::finalize::detach(py, || w.wait(slice)) {
            return Waited::Got(v);
        }
        if let Err(e) = py.check_signals() {
            return Waited::Interrupted(e);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Waited::TimedOut;
        }
    }
}

/// Waits for a plain grant (a permit, an event, the end of a join): `Ok(true)` once granted,
/// `Ok(false)` at the timeout. `abandon` leaves the primitive's queue and says whether the grant
/// won the race; on Ctrl-C a grant that won goes to `give_back` before the error propagates.
fn wait_granted(
    py: Python<'_>,
    w: &Arc<ThreadWaiter<()>>,
    timeout: Option<Duration>,
    abandon: impl Fn(&Arc<ThreadWaiter<()>>) -> PyResult<bool>,
    give_back: impl FnOnce(),
) -> PyResult<bool> {
    match wait_thread(py, w, timeout) {
        Waited::Got(()) => Ok(true),
        Waited::TimedOut => abandon(w),
        Waited::Interrupted(e) => {
            if abandon(w)? {
                give_back();
            }
            Err(e)
        }
    }
}

/// `value` if it is an int or a float (not a bool) below zero: the negative timeouts whose
/// meaning differs between the stdlib's primitives.
fn negative(value: Option<&Bound<'_, PyAny>>) -> Option<f64> {
    let v = value?;
    if v.is_instance_of::<PyBool>() || !(v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>()) {
        return None;
    }
    // A huge negative int does not fit a float: it is negative all the same.
    let f = v.extract::<f64>().unwrap_or_else(|_| {
        if v.lt(0).unwrap_or(false) {
            f64::NEG_INFINITY
        } else {
            0.0
        }
    });
    (f < 0.0).then_some(f)
}

/// Whether an event loop is running on this thread (`asyncio._get_running_loop()`, read once).
fn loop_is_running(py: Python<'_>) -> PyResult<bool> {
    static GET: crate::statics::ForkSafeCell<Py<PyAny>> = crate::statics::ForkSafeCell::new();
    let get = GET.get_or_try_init(py, || {
        py.import("asyncio.events")?
            .getattr("_get_running_loop")
            .map(Bound::unbind)
    })?;
    Ok(!get.bind(py).call0()?.is_none())
}

// -- semaphore -----------------------------------------------------------------------------------

type Sem = prims::Semaphore<TaskWaiter>;

/// Resolves the task a released permit went to; if that task was cancelled meanwhile, the
/// permit is released again (to the next waiter).
fn hand_permit(py: Python<'_>, sem: &Arc<Sem>, task: Option<TaskWaiter>) {
    if let Some(t) = task {
        let sem = Arc::clone(sem);
        let give_back: GiveBack = Box::new(move |py| {
            if let Ok(next) = sem.release() {
                hand_permit(py, &sem, next);
            }
        });
        t.deliver(py, Resolution::Handoff(py.None(), give_back));
    }
}

#[pyclass(subclass, frozen, module = "ferrio._ferrio")]
pub struct SemaphoreCore {
    inner: Arc<Sem>,
    /// A lock: releasing it unlocked raises `RuntimeError`, and `timeout=-1` means no limit, as
    /// for `threading.Lock`.
    is_lock: bool,
    bounded: bool,
}

#[pymethods]
impl SemaphoreCore {
    #[new]
    #[pyo3(signature = (value, bound=None, is_lock=false))]
    fn new(value: &Bound<'_, PyAny>, bound: Option<&Bound<'_, PyAny>>, is_lock: bool) -> PyResult<Self> {
        let api = if is_lock { "Lock()" } else { "Semaphore()" };
        let value = errors::usize_arg(api, "value", value, "")?;
        let bound = bound.map(|b| errors::usize_arg(api, "value", b, "")).transpose()?;
        Ok(Self {
            inner: Arc::new(prims::Semaphore::new(value, bound)),
            is_lock,
            bounded: bound.is_some(),
        })
    }

    /// `threading`'s acquire: blocks (GIL released) unless `blocking=False`. For a lock,
    /// `timeout=-1` (or `None`) waits forever and other negatives are refused, as
    /// `threading.Lock`'s; for a semaphore `None` waits forever and a negative timeout only
    /// tries, as `threading.Semaphore`'s. Returns whether a permit was taken.
    #[pyo3(signature = (blocking=true, timeout=None))]
    #[allow(clippy::float_cmp)] // reason: -1 is threading's exact sentinel for "wait forever"
    fn acquire(&self, py: Python<'_>, blocking: bool, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let api = if self.is_lock {
            "Lock.acquire()"
        } else {
            "Semaphore.acquire()"
        };
        let timeout = timeout.filter(|t| !t.is_none());
        let forever = timeout.is_none() || (self.is_lock && negative(timeout) == Some(-1.0));
        if !blocking {
            if !forever {
                return Err(errors::timeout_without_blocking(api, timeout));
            }
            return Ok(self.inner.try_acquire());
        }
        let timeout = if forever {
            None
        } else if let Some(t) = negative(timeout) {
            if self.is_lock {
                return Err(errors::negative_lock_timeout(api, t));
            }
            Some(Duration::ZERO) // threading.Semaphore: a negative timeout only tries
        } else {
            errors::timeout_arg(api, timeout)?
        };
        let Attempt::Queued(Some(w)) = self.inner.acquire(None) else {
            return Ok(true);
        };
        wait_granted(
            py,
            &w,
            timeout,
            |w| Ok(self.inner.abandon(w)),
            || drop(self.release_inner(py)),
        )
    }

    fn acquire_nowait(&self) -> bool {
        self.inner.try_acquire()
    }

    /// Async acquire, part 1: `True` if taken at once; else `fut` is queued and resolves (to
    /// `None`) when a permit is handed to it.
    #[pyo3(name = "_queue_acquire")]
    fn queue_acquire(&self, waker: &Bound<'_, LoopWaker>, fut: Py<PyAny>) -> bool {
        matches!(
            self.inner.acquire(Some(TaskWaiter::new(waker, fut))),
            Attempt::Ready(())
        )
    }

    /// The awaiting task was cancelled (or its wait timed out, resolving `fut` to something other
    /// than `None`): unqueue `fut`, or, if a permit already reached it (`fut` resolved to
    /// `None`), pass the permit on.
    #[pyo3(name = "_cancel_acquire")]
    fn cancel_acquire(&self, py: Python<'_>, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        // Dropped after the semaphore's lock is released: dropping a future can run Python code.
        let forgotten = self.inner.forget(|t| t.is(fut));
        drop(forgotten);
        let got_it = fut.call_method0("done")?.is_truthy()?
            && !fut.call_method0("cancelled")?.is_truthy()?
            && fut.call_method0("result")?.is_none();
        if got_it {
            self.release_inner(py)?;
        }
        Ok(())
    }

    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.release_inner(py)
    }

    /// `with lock:` in a thread blocks it (GIL released) as threading's does. On a thread whose
    /// event loop is running, waiting would freeze the loop (and deadlock it, if a task of that
    /// loop holds the lock), so a lock that is not free at once raises instead.
    fn __enter__(&self, py: Python<'_>) -> PyResult<()> {
        if self.inner.try_acquire() {
            return Ok(());
        }
        if loop_is_running(py)? {
            let what = if self.is_lock { "lock" } else { "semaphore" };
            return Err(errors::with_would_block_loop(what));
        }
        self.acquire(py, true, None).map(drop)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.release_inner(py)
    }

    /// Free permits and waiters.
    #[pyo3(name = "_counts")]
    fn counts(&self) -> SemaphoreCounts {
        SemaphoreCounts::new(self.inner.stats())
    }
}

impl SemaphoreCore {
    fn release_inner(&self, py: Python<'_>) -> PyResult<()> {
        match self.inner.release() {
            Ok(task) => {
                hand_permit(py, &self.inner, task);
                Ok(())
            }
            Err(prims::Overflow) => Err(errors::release_overflow(self.is_lock, self.bounded)),
        }
    }
}

// -- event ---------------------------------------------------------------------------------------

#[pyclass(subclass, frozen, module = "ferrio._ferrio")]
pub struct EventCore {
    inner: prims::Event<TaskWaiter>,
}

#[pymethods]
impl EventCore {
    #[new]
    fn new() -> Self {
        Self {
            inner: prims::Event::default(),
        }
    }

    fn set(&self, py: Python<'_>) {
        for t in self.inner.set() {
            t.deliver(
                py,
                Resolution::Value(PyBool::new(py, true).to_owned().into_any().unbind()),
            );
        }
    }

    fn clear(&self) {
        self.inner.clear();
    }

    fn is_set(&self) -> bool {
        self.inner.is_set()
    }

    /// `threading.Event.wait`: blocks (GIL released); returns the flag. A negative timeout
    /// only looks, as threading's does.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let timeout = if negative(timeout).is_some() {
            Some(Duration::ZERO)
        } else {
            errors::timeout_arg("Event.wait()", timeout)?
        };
        let Attempt::Queued(Some(w)) = self.inner.wait(None) else {
            return Ok(true);
        };
        // An event's grant consumes nothing: there is nothing to give back.
        wait_granted(py, &w, timeout, |w| Ok(self.inner.abandon(w)), || ())
    }

    /// `True` if set; else `fut` is queued until `set()`.
    #[pyo3(name = "_queue_wait")]
    fn queue_wait(&self, waker: &Bound<'_, LoopWaker>, fut: Py<PyAny>) -> bool {
        matches!(self.inner.wait(Some(TaskWaiter::new(waker, fut))), Attempt::Ready(()))
    }

    #[pyo3(name = "_cancel_wait")]
    fn cancel_wait(&self, fut: &Bound<'_, PyAny>) {
        // Dropped after the event's lock is released: dropping a future can run Python code.
        drop(self.inner.forget(|t| t.is(fut)));
    }
}

// -- queue ---------------------------------------------------------------------------------------

/// A queued Python object, ordered (for `PriorityQueue`) by Python's `<`. The comparison runs
/// under the queue's lock, and may release the GIL (any Python code may): the queue is built with
/// [`wait_detached`], so no thread ever waits for that lock with the GIL held, and a comparison
/// that calls back into its own queue is refused ([`QueueError::Reentrant`]).
pub(crate) struct Item(Py<PyAny>);

impl prims::QueueItem for Item {
    type Error = PyErr;
    fn try_lt(&self, other: &Self) -> PyResult<bool> {
        Python::attach(|py| self.0.bind(py).lt(other.0.bind(py)))
    }
}

/// How a thread waits for a queue's lock held by another thread: with the GIL released, since
/// the holder may be running an item's `__lt__` and need the GIL back to finish, in slices
/// between which signal handlers run. An operation that has changed nothing yet gives up when
/// one raises; the error is left set, for [`QueueCore::error`] to take. Every caller holds the
/// GIL already, so `attach` only hands us the token.
fn wait_detached(wait_free: &(dyn Fn(Duration) + Sync), interruptible: bool) -> bool {
    Python::attach(|py| {
        crate::finalize::detach(py, || wait_free(SLICE));
        if !interruptible {
            return true;
        }
        match py.check_signals() {
            Ok(()) => true,
            Err(e) => {
                e.restore(py);
                false
            }
        }
    })
}

type Q = prims::Queue<Item, TaskWaiter>;
type QErr = QueueError<PyErr>;

#[pyclass(subclass, frozen, module = "ferrio._ferrio")]
pub struct QueueCore {
    inner: Arc<Q>,
    /// What a getter's future gets when the queue shut down (the Python side raises).
    shutdown_marker: Py<PyAny>,
    /// The exception classes to raise: `(Empty, Full, ShutDown)`.
    errors: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
    /// The Python class's name, for messages: `Queue`, `LifoQueue` or `PriorityQueue`.
    name: &'static str,
}

/// Resolves everything a queue operation woke; hand-offs to cancelled futures come back here.
fn wake_all(py: Python<'_>, q: &Arc<Q>, marker: &Py<PyAny>, wake: Wakeups<Item, TaskWaiter>) {
    for (t, got) in wake.getters {
        match got {
            Some(Item(item)) => {
                let (q2, m2) = (Arc::clone(q), marker.clone_ref(py));
                let back = item.clone_ref(py);
                let give_back: GiveBack = Box::new(move |py| {
                    let mut w = Wakeups::default();
                    // Fails only re-entrantly, which a loop's drain never is.
                    let _ = q2.give_back(Item(back), &mut w);
                    wake_all(py, &q2, &m2, w);
                });
                t.deliver(py, Resolution::Handoff(item, give_back));
            }
            None => t.deliver(py, Resolution::Value(marker.clone_ref(py))),
        }
    }
    for (t, granted) in wake.putters {
        let value = PyBool::new(py, granted).to_owned().into_any().unbind();
        if granted {
            let (q2, m2) = (Arc::clone(q), marker.clone_ref(py));
            let give_back: GiveBack = Box::new(move |py| {
                let mut w = Wakeups::default();
                let _ = q2.release_reservation(&mut w);
                wake_all(py, &q2, &m2, w);
            });
            t.deliver(py, Resolution::Handoff(value, give_back));
        } else {
            t.deliver(py, Resolution::Value(value));
        }
    }
    for t in wake.joiners {
        t.deliver(py, Resolution::Value(py.None()));
    }
}

impl QueueCore {
    /// For a priority queue, fails unless `item < item` works, so that an item that cannot be
    /// ordered is refused even when nothing is there to compare it with (where `heapq` takes it).
    fn check_orderable(&self, api: &str, item: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.name == "PriorityQueue" {
            if let Err(e) = item.lt(item) {
                return Err(errors::unorderable(self.name, api, item, e));
            }
        }
        Ok(())
    }

    fn finish(&self, py: Python<'_>, wake: Wakeups<Item, TaskWaiter>) {
        if !wake.is_empty() {
            wake_all(py, &self.inner, &self.shutdown_marker, wake);
        }
    }

    /// The exception for `e`, raised by `api` (`put()`, `get()`...); `item` is the one the call
    /// was about, if any.
    fn error(&self, py: Python<'_>, api: &str, e: QErr, item: Option<&Bound<'_, PyAny>>) -> PyErr {
        errors::queue_error(py, self.name, api, e, item, &self.errors)
    }

    /// A putter was granted a slot: insert its item (or pass the slot on, and raise).
    fn commit(&self, py: Python<'_>, api: &str, item: Py<PyAny>) -> PyResult<()> {
        let mut wake = Wakeups::default();
        let r = self.inner.commit_reserved(Item(item), &mut wake);
        self.finish(py, wake);
        r.map_err(|(e, Item(item))| self.error(py, api, e, Some(item.bind(py))))
    }

    fn received(&self, py: Python<'_>) -> PyResult<()> {
        let mut wake = Wakeups::default();
        let r = self.inner.received(&mut wake);
        self.finish(py, wake);
        r.map_err(|e| self.error(py, "get()", e, None))
    }

    fn give_back(&self, py: Python<'_>, item: Item) -> PyResult<()> {
        let mut wake = Wakeups::default();
        let r = self.inner.give_back(item, &mut wake);
        self.finish(py, wake);
        r.map_err(|(e, _)| self.error(py, "get()", e, None))
    }

    fn release_reservation(&self, py: Python<'_>) -> PyResult<()> {
        let mut wake = Wakeups::default();
        let r = self.inner.release_reservation(&mut wake);
        self.finish(py, wake);
        r.map_err(|e| self.error(py, "put()", e, None))
    }
}

#[pymethods]
impl QueueCore {
    #[new]
    fn new(
        maxsize: &Bound<'_, PyAny>,
        order: &str,
        shutdown_marker: Py<PyAny>,
        errors: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
    ) -> PyResult<Self> {
        let (order, name) = match order {
            "fifo" => (Order::Fifo, "Queue"),
            "lifo" => (Order::Lifo, "LifoQueue"),
            "priority" => (Order::Priority, "PriorityQueue"),
            other => return Err(errors::unknown_queue_order(other)),
        };
        let maxsize = errors::usize_arg(
            &format!("{name}()"),
            "maxsize",
            maxsize,
            "; pass maxsize=0 for no bound",
        )?;
        Ok(Self {
            inner: Arc::new(Q::with_lock_wait(maxsize, order, wait_detached)),
            shutdown_marker,
            errors,
            name,
        })
    }

    fn put_nowait(&self, py: Python<'_>, item: Py<PyAny>) -> PyResult<()> {
        self.check_orderable("put_nowait()", item.bind(py))?;
        let mut wake = Wakeups::default();
        let r = self.inner.put_nowait(Item(item), &mut wake);
        self.finish(py, wake);
        r.map_err(|(e, Item(item))| self.error(py, "put_nowait()", e, Some(item.bind(py))))
    }

    fn get_nowait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut wake = Wakeups::default();
        let r = self.inner.get_nowait(&mut wake);
        self.finish(py, wake);
        r.map(|i| i.0).map_err(|e| self.error(py, "get_nowait()", e, None))
    }

    /// `(True, item)` if an item is there now, else `(False, None)`; never waits. Raises only
    /// what a wait would not change (items that cannot be ordered, a re-entrant call).
    fn try_get(&self, py: Python<'_>) -> PyResult<(bool, Py<PyAny>)> {
        let mut wake = Wakeups::default();
        let r = self.inner.get_nowait(&mut wake);
        self.finish(py, wake);
        match r {
            Ok(item) => Ok((true, item.0)),
            Err(QueueError::Empty | QueueError::ShutDown) => Ok((false, py.None())),
            Err(e) => Err(self.error(py, "get()", e, None)),
        }
    }

    /// Puts `item` if there is room now; `False` (item not taken) if full or shut down.
    fn try_put(&self, py: Python<'_>, item: Py<PyAny>) -> PyResult<bool> {
        self.check_orderable("put()", item.bind(py))?;
        let mut wake = Wakeups::default();
        let r = self.inner.put_nowait(Item(item), &mut wake);
        self.finish(py, wake);
        match r {
            Ok(()) => Ok(true),
            Err((QueueError::Full | QueueError::ShutDown, _)) => Ok(false),
            Err((e, Item(item))) => Err(self.error(py, "put()", e, Some(item.bind(py)))),
        }
    }

    /// `queue.Queue.put`: blocks (GIL released) while full. As in `queue`, `timeout` is not
    /// looked at when `block` is false.
    #[pyo3(signature = (item, block=true, timeout=None))]
    fn put(&self, py: Python<'_>, item: Py<PyAny>, block: bool, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        if !block {
            return self.put_nowait(py, item);
        }
        let timeout = errors::timeout_arg(&format!("{}.put()", self.name), timeout)?;
        self.check_orderable("put()", item.bind(py))?;
        let mut wake = Wakeups::default();
        let r = self.inner.put(Item(item), None, &mut wake);
        self.finish(py, wake);
        let (w, item) = match r {
            Ok(Put::Queued(Some(w), Item(item))) => (w, item),
            Ok(_) => return Ok(()),
            Err((e, Item(item))) => return Err(self.error(py, "put()", e, Some(item.bind(py)))),
        };
        let granted = match wait_thread(py, &w, timeout) {
            Waited::Got(g) => Some(g),
            // A slot that reached us as we gave up is ours: the put goes ahead.
            Waited::TimedOut => self
                .inner
                .abandon_put(&w)
                .map_err(|e| self.error(py, "put()", e, None))?,
            Waited::Interrupted(e) => {
                // The put did not happen: a slot granted meanwhile passes on.
                if self.inner.abandon_put(&w).ok().flatten() == Some(true) {
                    self.release_reservation(py)?;
                }
                return Err(e);
            }
        };
        match granted {
            Some(true) => self.commit(py, "put()", item),
            Some(false) => Err(self.error(py, "put()", QueueError::ShutDown, None)),
            None => Err(self.error(py, "put()", QueueError::Full, None)),
        }
    }

    /// `queue.Queue.get`: blocks (GIL released) while empty.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get(&self, py: Python<'_>, block: bool, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        if !block {
            return self.get_nowait(py);
        }
        let timeout = errors::timeout_arg(&format!("{}.get()", self.name), timeout)?;
        let mut wake = Wakeups::default();
        let r = self.inner.get(None, &mut wake);
        self.finish(py, wake);
        let w = match r {
            Ok(Attempt::Ready(Some(item))) => return Ok(item.0),
            Ok(Attempt::Queued(Some(w))) => w,
            Ok(_) => return Err(self.error(py, "get()", QueueError::ShutDown, None)),
            Err(e) => return Err(self.error(py, "get()", e, None)),
        };
        let got = match wait_thread(py, &w, timeout) {
            Waited::Got(g) => g,
            Waited::TimedOut => match self
                .inner
                .abandon_get(&w)
                .map_err(|e| self.error(py, "get()", e, None))?
            {
                Some(g) => g,
                None => return Err(self.error(py, "get()", QueueError::Empty, None)),
            },
            Waited::Interrupted(e) => {
                if let Ok(Some(Some(item))) = self.inner.abandon_get(&w) {
                    self.give_back(py, item)?;
                }
                return Err(e);
            }
        };
        match got {
            Some(Item(item)) => {
                self.received(py)?;
                Ok(item)
            }
            None => Err(self.error(py, "get()", QueueError::ShutDown, None)),
        }
    }

    /// Async put, part 1: `None` if the item went in; else `fut` is queued for a slot and the
    /// item comes back to the caller, who awaits `fut` (`True`: slot granted, call
    /// `commit_put`; `False`: the queue shut down).
    fn put_async(
        &self,
        py: Python<'_>,
        waker: &Bound<'_, LoopWaker>,
        fut: Py<PyAny>,
        item: Py<PyAny>,
    ) -> PyResult<Option<Py<PyAny>>> {
        self.check_orderable("put()", item.bind(py))?;
        let mut wake = Wakeups::default();
        let r = self.inner.put(Item(item), Some(TaskWaiter::new(waker, fut)), &mut wake);
        self.finish(py, wake);
        match r {
            Ok(Put::Queued(_, item)) => Ok(Some(item.0)),
            Ok(Put::Done) => Ok(None),
            Err((e, Item(item))) => Err(self.error(py, "put()", e, Some(item.bind(py)))),
        }
    }

    /// Inserts the item of a putter whose slot was granted; raises (and passes the slot on) if
    /// the queue shut down meanwhile or the item cannot be ordered.
    fn commit_put(&self, py: Python<'_>, item: Py<PyAny>) -> PyResult<()> {
        self.commit(py, "put()", item)
    }

    /// Async get, part 1: `(True, item)` at once, or `(False, None)` with `fut` queued (it
    /// resolves to the item, or to the shutdown marker). A getter that receives an item from
    /// `fut` calls `got_item()`.
    fn get_async(&self, py: Python<'_>, waker: &Bound<'_, LoopWaker>, fut: Py<PyAny>) -> PyResult<(bool, Py<PyAny>)> {
        let mut wake = Wakeups::default();
        let r = self.inner.get(Some(TaskWaiter::new(waker, fut)), &mut wake);
        self.finish(py, wake);
        match r {
            Ok(Attempt::Ready(Some(item))) => Ok((true, item.0)),
            Ok(Attempt::Ready(None)) => Err(self.error(py, "get()", QueueError::ShutDown, None)),
            Ok(Attempt::Queued(_)) => Ok((false, py.None())),
            Err(e) => Err(self.error(py, "get()", e, None)),
        }
    }

    /// A task getter now holds the item its future carried: the item's slot is free.
    fn got_item(&self, py: Python<'_>) -> PyResult<()> {
        self.received(py)
    }

    /// The task awaiting `fut` was cancelled (from `get`, `put` or `join`): drop `fut` from the
    /// queue, or give back what already reached it: `result` is what `fut` carries.
    #[pyo3(signature = (fut, kind))]
    fn cancel_wait(&self, py: Python<'_>, fut: &Bound<'_, PyAny>, kind: &str) -> PyResult<()> {
        let forgotten = self
            .inner
            .forget(|t| t.is(fut))
            .map_err(|e| self.error(py, "get()", e, None))?;
        drop(forgotten); // after the queue's lock is released: dropping a future can run Python code
        if !fut.call_method0("done")?.is_truthy()? || fut.call_method0("cancelled")?.is_truthy()? {
            return Ok(());
        }
        let value = fut.call_method0("result")?;
        match kind {
            "get" if !value.is(&self.shutdown_marker) => self.give_back(py, Item(value.unbind())),
            "put" if value.is_truthy()? => self.release_reservation(py),
            _ => Ok(()),
        }
    }

    fn task_done(&self, py: Python<'_>) -> PyResult<()> {
        let mut wake = Wakeups::default();
        let r = self.inner.task_done(&mut wake);
        self.finish(py, wake);
        r.map_err(|e| self.error(py, "task_done()", e, None))
    }

    /// `queue.Queue.join`: blocks (GIL released) until every item is marked done.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        let timeout = errors::timeout_arg(&format!("{}.join()", self.name), timeout)?;
        let Attempt::Queued(Some(w)) = self.inner.join(None).map_err(|e| self.error(py, "join()", e, None))? else {
            return Ok(true);
        };
        wait_granted(
            py,
            &w,
            timeout,
            |w| {
                self.inner
                    .abandon_join(w)
                    .map_err(|e| self.error(py, "join()", e, None))
            },
            || (),
        )
    }

    fn join_async(&self, py: Python<'_>, waker: &Bound<'_, LoopWaker>, fut: Py<PyAny>) -> PyResult<bool> {
        let r = self.inner.join(Some(TaskWaiter::new(waker, fut)));
        Ok(matches!(
            r.map_err(|e| self.error(py, "join()", e, None))?,
            Attempt::Ready(())
        ))
    }

    /// Returns the items an immediate shutdown dropped (so that they are freed outside the lock).
    #[pyo3(signature = (immediate=false))]
    fn shutdown(&self, py: Python<'_>, immediate: bool) -> PyResult<Vec<Py<PyAny>>> {
        let mut wake = Wakeups::default();
        let dropped = self.inner.shutdown(immediate, &mut wake);
        self.finish(py, wake);
        Ok(dropped
            .map_err(|e| self.error(py, "shutdown()", e, None))?
            .into_iter()
            .map(|i| i.0)
            .collect())
    }

    fn is_shutdown(&self, py: Python<'_>) -> PyResult<bool> {
        self.inner
            .is_shutdown()
            .map_err(|e| self.error(py, "shutdown()", e, None))
    }

    fn qsize(&self, py: Python<'_>) -> PyResult<usize> {
        self.inner.qsize().map_err(|e| self.error(py, "qsize()", e, None))
    }

    fn full(&self, py: Python<'_>) -> PyResult<bool> {
        self.inner.is_full().map_err(|e| self.error(py, "full()", e, None))
    }

    #[getter]
    fn maxsize(&self) -> usize {
        self.inner.maxsize()
    }

    /// Items, unfinished tasks and waiters.
    fn counts(&self, py: Python<'_>) -> PyResult<QueueCounts> {
        self.inner
            .stats()
            .map(QueueCounts::new)
            .map_err(|e| self.error(py, "statistics()", e, None))
    }
}

// -- atomic counter ------------------------------------------------------------------------------

/// A lock-free 64-bit integer shared by threads and tasks (wraps on overflow).
///
///     hits = ferrio.AtomicInt(0)
///     hits.add(1); hits.get(); ok, before = hits.compare_exchange(1, 5)
#[pyclass(frozen, module = "ferrio")]
pub struct AtomicInt {
    value: std::sync::atomic::AtomicI64,
}

fn i64_arg(api: &str, name: &str, value: &Bound<'_, PyAny>) -> PyResult<i64> {
    errors::i64_arg(&format!("AtomicInt.{api}"), name, value)
}

#[pymethods]
impl AtomicInt {
    #[new]
    #[pyo3(signature = (value=None), text_signature = "(value=0)")] // None stands for the default 0
    fn new(value: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let value = value.map_or(Ok(0), |v| errors::i64_arg("ferrio.AtomicInt()", "value", v))?;
        Ok(Self {
            value: std::sync::atomic::AtomicI64::new(value),
        })
    }

    fn get(&self) -> i64 {
        self.value.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = i64_arg("set()", "value", value)?;
        self.value.store(value, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Adds `delta` (wrapping at 64 bits) and returns the new value.
    #[pyo3(signature = (delta=None), text_signature = "($self, delta=1)")] // None stands for the default 1
    fn add(&self, delta: Option<&Bound<'_, PyAny>>) -> PyResult<i64> {
        let delta = delta.map_or(Ok(1), |d| i64_arg("add()", "delta", d))?;
        Ok(self
            .value
            .fetch_add(delta, std::sync::atomic::Ordering::SeqCst)
            .wrapping_add(delta))
    }

    /// Swaps in `value`, returning the old one.
    fn swap(&self, value: &Bound<'_, PyAny>) -> PyResult<i64> {
        let value = i64_arg("swap()", "value", value)?;
        Ok(self.value.swap(value, std::sync::atomic::Ordering::SeqCst))
    }

    /// Sets `new` if the value is `expected`; returns `(succeeded, value before)`.
    fn compare_exchange(&self, expected: &Bound<'_, PyAny>, new: &Bound<'_, PyAny>) -> PyResult<(bool, i64)> {
        let expected = i64_arg("compare_exchange()", "expected", expected)?;
        let new = i64_arg("compare_exchange()", "new", new)?;
        Ok(
            match self.value.compare_exchange(
                expected,
                new,
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
            ) {
                Ok(v) => (true, v),
                Err(v) => (false, v),
            },
        )
    }

    fn __int__(&self) -> i64 {
        self.get()
    }

    fn __repr__(&self) -> String {
        format!("ferrio.AtomicInt({})", self.get())
    }
}
