//! Locks, semaphores, events and queues for threads and tasks at once (`ferrio-core::prims`).
//!
//! Sync waits release the GIL and wake every 50 ms to run signal handlers, so Ctrl-C interrupts
//! them; a thread that stops waiting gives back whatever reached it meanwhile. Async waits queue
//! the task's future: hand-offs resolve it directly on its own loop's thread, or through that
//! loop's completion queue from anywhere else, and a hand-off that finds the future cancelled
//! is given back to the primitive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrio_core::prims::{self, Attempt, Order, Put, QueueError, ThreadWaiter, Wakeups};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

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
fn wait_thread<V: Send>(py: Python<'_>, w: &Arc<ThreadWaiter<V>>, timeout: Option<f64>) -> Waited<V> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    loop {
        let slice = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
        if let Some(v) = py.detach(|| w.wait(slice)) {
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
    timeout: Option<f64>,
    abandon: impl Fn(&Arc<ThreadWaiter<()>>) -> bool,
    give_back: impl FnOnce(),
) -> PyResult<bool> {
    match wait_thread(py, w, timeout) {
        Waited::Got(()) => Ok(true),
        Waited::TimedOut => Ok(abandon(w)),
        Waited::Interrupted(e) => {
            if abandon(w) {
                give_back();
            }
            Err(e)
        }
    }
}

fn check_timeout(timeout: Option<f64>) -> PyResult<Option<f64>> {
    match timeout {
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds or None, got {t}"
        ))),
        Some(t) if t.is_infinite() => Ok(None),
        other => Ok(other),
    }
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
    /// A lock: releasing it unlocked raises `RuntimeError`, as for `threading.Lock`.
    is_lock: bool,
}

#[pymethods]
impl SemaphoreCore {
    #[new]
    #[pyo3(signature = (value, bound=None, is_lock=false))]
    fn new(value: usize, bound: Option<usize>, is_lock: bool) -> Self {
        Self {
            inner: Arc::new(prims::Semaphore::new(value, bound)),
            is_lock,
        }
    }

    /// `threading`'s signature: blocks (GIL released) unless `blocking=False`; `timeout=-1` waits
    /// forever. Returns whether a permit was taken.
    #[pyo3(signature = (blocking=true, timeout=-1.0))]
    #[allow(clippy::float_cmp)] // reason: -1 is threading's exact sentinel for "wait forever"
    fn acquire(&self, py: Python<'_>, blocking: bool, timeout: f64) -> PyResult<bool> {
        if !blocking {
            if timeout != -1.0 {
                return Err(PyValueError::new_err("can't specify a timeout for a non-blocking call"));
            }
            return Ok(self.inner.try_acquire());
        }
        let timeout = if timeout == -1.0 {
            None
        } else {
            check_timeout(Some(timeout))?
        };
        let Attempt::Queued(Some(w)) = self.inner.acquire(None) else {
            return Ok(true);
        };
        wait_granted(
            py,
            &w,
            timeout,
            |w| self.inner.abandon(w),
            || drop(self.release_inner(py)),
        )
    }

    fn acquire_nowait(&self) -> bool {
        self.inner.try_acquire()
    }

    /// Async acquire, part 1: `True` if taken at once; else `fut` is queued and resolves when a
    /// permit is handed to it.
    fn acquire_async_(&self, waker: &Bound<'_, LoopWaker>, fut: Py<PyAny>) -> bool {
        matches!(
            self.inner.acquire(Some(TaskWaiter::new(waker, fut))),
            Attempt::Ready(())
        )
    }

    /// The awaiting task was cancelled: drop its queued future, or, if the permit already
    /// reached it (`fut` resolved), pass the permit on.
    fn cancel_acquire(&self, py: Python<'_>, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.forget(|t| t.is(fut));
        let got_it = fut.call_method0("done")?.is_truthy()? && !fut.call_method0("cancelled")?.is_truthy()?;
        if got_it {
            self.release_inner(py)?;
        }
        Ok(())
    }

    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.release_inner(py)
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<()> {
        self.acquire(py, true, -1.0).map(drop)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.release_inner(py)
    }

    /// `(free permits, waiters)`.
    fn stats(&self) -> (usize, usize) {
        self.inner.stats()
    }
}

impl SemaphoreCore {
    fn release_inner(&self, py: Python<'_>) -> PyResult<()> {
        match self.inner.release() {
            Ok(task) => {
                hand_permit(py, &self.inner, task);
                Ok(())
            }
            Err(prims::Overflow) if self.is_lock => {
                Err(pyo3::exceptions::PyRuntimeError::new_err("release unlocked lock"))
            }
            Err(prims::Overflow) => Err(PyValueError::new_err("Semaphore released too many times")),
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
                Resolution::Value(true.into_pyobject(py).unwrap().to_owned().into_any().unbind()),
            );
        }
    }

    fn clear(&self) {
        self.inner.clear();
    }

    fn is_set(&self) -> bool {
        self.inner.is_set()
    }

    /// `threading.Event.wait`: blocks (GIL released); returns the flag.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = check_timeout(timeout)?;
        let Attempt::Queued(Some(w)) = self.inner.wait(None) else {
            return Ok(true);
        };
        // An event's grant consumes nothing: there is nothing to give back.
        wait_granted(py, &w, timeout, |w| self.inner.abandon(w), || ())
    }

    /// `True` if set; else `fut` is queued until `set()`.
    fn wait_async_(&self, waker: &Bound<'_, LoopWaker>, fut: Py<PyAny>) -> bool {
        matches!(self.inner.wait(Some(TaskWaiter::new(waker, fut))), Attempt::Ready(()))
    }

    fn cancel_wait(&self, fut: &Bound<'_, PyAny>) {
        self.inner.forget(|t| t.is(fut));
    }
}

// -- queue ---------------------------------------------------------------------------------------

/// A queued Python object, ordered (for `PriorityQueue`) by Python's `<`. Every queue operation
/// holds the GIL, so comparing here is safe; a comparison that raises counts as equal (the Python
/// side checks comparability before it puts).
pub(crate) struct Item(Py<PyAny>);

impl Item {
    fn lt(&self, other: &Self) -> bool {
        Python::attach(|py| self.0.bind(py).lt(other.0.bind(py)).unwrap_or(false))
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Item {}

impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Item {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.lt(other) {
            std::cmp::Ordering::Less
        } else if other.lt(self) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }
}

type Q = prims::Queue<Item, TaskWaiter>;

#[pyclass(subclass, frozen, module = "ferrio._ferrio")]
pub struct QueueCore {
    inner: Arc<Q>,
    /// What a getter's future gets when the queue shut down (the Python side raises).
    shutdown_marker: Py<PyAny>,
    /// The exception classes to raise: `(Empty, Full, ShutDown)`.
    errors: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
    /// A priority queue: items must support `<`, checked at the call site.
    priority: bool,
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
                    q2.give_back(Item(back), &mut w);
                    wake_all(py, &q2, &m2, w);
                });
                t.deliver(py, Resolution::Handoff(item, give_back));
            }
            None => t.deliver(py, Resolution::Value(marker.clone_ref(py))),
        }
    }
    for (t, granted) in wake.putters {
        let value = granted.into_pyobject(py).unwrap().to_owned().into_any().unbind();
        if granted {
            let (q2, m2) = (Arc::clone(q), marker.clone_ref(py));
            let give_back: GiveBack = Box::new(move |py| {
                let mut w = Wakeups::default();
                q2.release_reservation(&mut w);
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
    /// For a priority queue, fails unless `item < item` works: an item that cannot be ordered
    /// would otherwise be placed arbitrarily, since the heap's comparisons cannot raise.
    fn check_orderable(&self, item: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.priority {
            if let Err(e) = item.lt(item) {
                let msg = format!(
                    "PriorityQueue.put() needs items that support '<' (such as (priority, data) tuples), got {}: {e}",
                    item.repr().map(|r| r.to_string()).unwrap_or_default()
                );
                return Err(pyo3::exceptions::PyTypeError::new_err(msg));
            }
        }
        Ok(())
    }

    fn finish(&self, py: Python<'_>, wake: Wakeups<Item, TaskWaiter>) {
        if !wake.is_empty() {
            wake_all(py, &self.inner, &self.shutdown_marker, wake);
        }
    }

    fn error(&self, py: Python<'_>, e: &QueueError) -> PyErr {
        let (cls, msg) = match e {
            QueueError::Empty => (&self.errors.0, "the queue is empty"),
            QueueError::Full => (&self.errors.1, "the queue is full"),
            QueueError::ShutDown => (&self.errors.2, "the queue was shut down"),
            QueueError::TooManyTaskDone => {
                return PyValueError::new_err("task_done() called more times than items were put");
            }
        };
        match cls.bind(py).call1((msg,)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }
}

#[pymethods]
impl QueueCore {
    #[new]
    fn new(
        maxsize: usize,
        order: &str,
        shutdown_marker: Py<PyAny>,
        errors: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
    ) -> PyResult<Self> {
        let order = match order {
            "fifo" => Order::Fifo,
            "lifo" => Order::Lifo,
            "priority" => Order::Priority,
            other => return Err(PyValueError::new_err(format!("unknown queue order {other:?}"))),
        };
        let priority = order == Order::Priority;
        Ok(Self {
            inner: Arc::new(prims::Queue::new(maxsize, order)),
            shutdown_marker,
            errors,
            priority,
        })
    }

    fn put_nowait(&self, py: Python<'_>, item: Py<PyAny>) -> PyResult<()> {
        self.check_orderable(item.bind(py))?;
        let mut wake = Wakeups::default();
        let r = self.inner.put_nowait(Item(item), &mut wake);
        self.finish(py, wake);
        r.map_err(|(e, _)| self.error(py, &e))
    }

    fn get_nowait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut wake = Wakeups::default();
        let r = self.inner.get_nowait(&mut wake);
        self.finish(py, wake);
        r.map(|i| i.0).map_err(|e| self.error(py, &e))
    }

    /// `(True, item)` if an item is there now, else `(False, None)`; never raises or waits.
    fn try_get(&self, py: Python<'_>) -> (bool, Py<PyAny>) {
        let mut wake = Wakeups::default();
        let r = self.inner.get_nowait(&mut wake);
        self.finish(py, wake);
        match r {
            Ok(item) => (true, item.0),
            Err(_) => (false, py.None()),
        }
    }

    /// Puts `item` if there is room now; `False` (item not taken) otherwise. Never raises.
    fn try_put(&self, py: Python<'_>, item: Py<PyAny>) -> PyResult<bool> {
        self.check_orderable(item.bind(py))?;
        let mut wake = Wakeups::default();
        let r = self.inner.put_nowait(Item(item), &mut wake);
        self.finish(py, wake);
        Ok(r.is_ok())
    }

    /// `queue.Queue.put`: blocks (GIL released) while full.
    #[pyo3(signature = (item, block=true, timeout=None))]
    fn put(&self, py: Python<'_>, item: Py<PyAny>, block: bool, timeout: Option<f64>) -> PyResult<()> {
        if !block {
            return self.put_nowait(py, item);
        }
        let timeout = check_timeout(timeout)?;
        self.check_orderable(item.bind(py))?;
        let mut wake = Wakeups::default();
        let r = self.inner.put(Item(item), None, &mut wake);
        self.finish(py, wake);
        let w = match r {
            Ok(Put::ThreadWait(w)) => w,
            Ok(_) => return Ok(()),
            Err((e, _)) => return Err(self.error(py, &e)),
        };
        let outcome = wait_thread(py, &w, timeout);
        let granted = match outcome {
            Waited::Got(g) => Ok(g),
            Waited::TimedOut => self
                .inner
                .abandon_put(&w)
                .map_err(|_| self.error(py, &QueueError::Full)),
            Waited::Interrupted(e) => {
                // If the item went in meanwhile, it stays in: the put happened.
                let _ = self.inner.abandon_put(&w);
                return Err(e);
            }
        };
        match granted {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.error(py, &QueueError::ShutDown)),
            Err(e) => Err(e),
        }
    }

    /// `queue.Queue.get`: blocks (GIL released) while empty.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        if !block {
            return self.get_nowait(py);
        }
        let timeout = check_timeout(timeout)?;
        let mut wake = Wakeups::default();
        let r = self.inner.get(None, &mut wake);
        self.finish(py, wake);
        let w = match r {
            Ok(Attempt::Ready(Some(item))) => return Ok(item.0),
            Ok(Attempt::Queued(Some(w))) => w,
            Ok(_) | Err(QueueError::ShutDown) => return Err(self.error(py, &QueueError::ShutDown)),
            Err(e) => return Err(self.error(py, &e)),
        };
        let got = match wait_thread(py, &w, timeout) {
            Waited::Got(g) => g,
            Waited::TimedOut => match self.inner.abandon_get(&w) {
                Some(g) => g,
                None => return Err(self.error(py, &QueueError::Empty)),
            },
            Waited::Interrupted(e) => {
                if let Some(Some(item)) = self.inner.abandon_get(&w) {
                    let mut wake = Wakeups::default();
                    self.inner.give_back(item, &mut wake);
                    self.finish(py, wake);
                }
                return Err(e);
            }
        };
        got.map(|i| i.0).ok_or_else(|| self.error(py, &QueueError::ShutDown))
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
        self.check_orderable(item.bind(py))?;
        let mut wake = Wakeups::default();
        let r = self.inner.put(Item(item), Some(TaskWaiter::new(waker, fut)), &mut wake);
        self.finish(py, wake);
        match r {
            Ok(Put::TaskQueued(item)) => Ok(Some(item.0)),
            Ok(_) => Ok(None),
            Err((e, _)) => Err(self.error(py, &e)),
        }
    }

    fn commit_put(&self, py: Python<'_>, item: Py<PyAny>) {
        let mut wake = Wakeups::default();
        self.inner.commit_reserved(Item(item), &mut wake);
        self.finish(py, wake);
    }

    /// Async get, part 1: `(True, item)` at once, or `(False, None)` with `fut` queued (it
    /// resolves to the item, or to the shutdown marker).
    fn get_async(&self, py: Python<'_>, waker: &Bound<'_, LoopWaker>, fut: Py<PyAny>) -> PyResult<(bool, Py<PyAny>)> {
        let mut wake = Wakeups::default();
        let r = self.inner.get(Some(TaskWaiter::new(waker, fut)), &mut wake);
        self.finish(py, wake);
        match r {
            Ok(Attempt::Ready(Some(item))) => Ok((true, item.0)),
            Ok(Attempt::Ready(None)) => Err(self.error(py, &QueueError::ShutDown)),
            Ok(Attempt::Queued(_)) => Ok((false, py.None())),
            Err(e) => Err(self.error(py, &e)),
        }
    }

    /// The task awaiting `fut` was cancelled (from `get`, `put` or `join`): drop `fut` from the
    /// queue, or give back what already reached it: `result` is what `fut` carries.
    #[pyo3(signature = (fut, kind))]
    fn cancel_wait(&self, py: Python<'_>, fut: &Bound<'_, PyAny>, kind: &str) -> PyResult<()> {
        self.inner.forget(|t| t.is(fut));
        if !fut.call_method0("done")?.is_truthy()? || fut.call_method0("cancelled")?.is_truthy()? {
            return Ok(());
        }
        let value = fut.call_method0("result")?;
        let mut wake = Wakeups::default();
        match kind {
            "get" if !value.is(&self.shutdown_marker) => self.inner.give_back(Item(value.unbind()), &mut wake),
            "put" if value.is_truthy()? => self.inner.release_reservation(&mut wake),
            _ => {}
        }
        self.finish(py, wake);
        Ok(())
    }

    fn task_done(&self, py: Python<'_>) -> PyResult<()> {
        let mut wake = Wakeups::default();
        let r = self.inner.task_done(&mut wake);
        self.finish(py, wake);
        r.map_err(|e| self.error(py, &e))
    }

    /// `queue.Queue.join`: blocks (GIL released) until every item is marked done.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = check_timeout(timeout)?;
        let Attempt::Queued(Some(w)) = self.inner.join(None) else {
            return Ok(true);
        };
        wait_granted(py, &w, timeout, |w| self.inner.abandon_join(w), || ())
    }

    fn join_async(&self, waker: &Bound<'_, LoopWaker>, fut: Py<PyAny>) -> bool {
        matches!(self.inner.join(Some(TaskWaiter::new(waker, fut))), Attempt::Ready(()))
    }

    /// Returns the items an immediate shutdown dropped.
    #[pyo3(signature = (immediate=false))]
    fn shutdown(&self, py: Python<'_>, immediate: bool) -> Vec<Py<PyAny>> {
        let mut wake = Wakeups::default();
        let dropped = self.inner.shutdown(immediate, &mut wake);
        self.finish(py, wake);
        dropped.into_iter().map(|i| i.0).collect()
    }

    fn is_shutdown(&self) -> bool {
        self.inner.is_shutdown()
    }

    fn qsize(&self) -> usize {
        self.inner.qsize()
    }

    fn full(&self) -> bool {
        self.inner.is_full()
    }

    #[getter]
    fn maxsize(&self) -> usize {
        self.inner.maxsize()
    }

    /// `(items, unfinished, getters waiting, putters waiting)`.
    fn stats(&self) -> (usize, usize, usize, usize) {
        self.inner.stats()
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

#[pymethods]
impl AtomicInt {
    #[new]
    #[pyo3(signature = (value=0))]
    fn new(value: i64) -> Self {
        Self {
            value: std::sync::atomic::AtomicI64::new(value),
        }
    }

    fn get(&self) -> i64 {
        self.value.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set(&self, value: i64) {
        self.value.store(value, std::sync::atomic::Ordering::SeqCst);
    }

    /// Adds `delta` (wrapping at 64 bits) and returns the new value.
    #[pyo3(signature = (delta=1))]
    fn add(&self, delta: i64) -> i64 {
        self.value
            .fetch_add(delta, std::sync::atomic::Ordering::SeqCst)
            .wrapping_add(delta)
    }

    /// Swaps in `value`, returning the old one.
    fn swap(&self, value: i64) -> i64 {
        self.value.swap(value, std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets `new` if the value is `expected`; returns `(succeeded, value before)`.
    fn compare_exchange(&self, expected: i64, new: i64) -> (bool, i64) {
        match self.value.compare_exchange(
            expected,
            new,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        ) {
            Ok(v) => (true, v),
            Err(v) => (false, v),
        }
    }

    fn __int__(&self) -> i64 {
        self.get()
    }

    fn __repr__(&self) -> String {
        format!("ferrio.AtomicInt({})", self.get())
    }
}
