//! `LoopWaker`: one per event loop; workers push finished jobs into it, the loop drains them.
//!
//! The Python side registers [`LoopWaker::fileno`] with `loop.add_reader(fd, waker.drain)`, so a
//! burst of completions costs the loop one wake-up and one call into Rust that resolves the whole
//! batch under one GIL hold. Loops without `add_reader` get [`LoopWaker::threadsafe`], which
//! schedules the same drain with `call_soon_threadsafe`, still once per batch.
//!
//! Completions waiting in the queue hold their futures, which hold the loop, whose reader holds
//! this waker: a reference cycle that runs through Rust. A loop closed with a job in flight
//! leaves its completion there for good, so the waker tells the garbage collector about those
//! references (`__traverse__`) and drops them when asked (`__clear__`); and `ferrio._threads`
//! holds wakers only weakly, leaving the loop's reader the one strong reference.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ferrio_core::{CompletionQueue, EventFd, Signal};
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

use crate::errors;
use crate::interned;

/// Called on the loop's thread when a hand-off reaches a future that was cancelled meanwhile:
/// gives the permit or item back to its primitive.
pub(crate) type GiveBack = Box<dyn FnOnce(Python<'_>) + Send>;

/// How a finished job (or a primitive's hand-off) resolves its future.
pub(crate) enum Resolution {
    Value(Py<PyAny>),
    Error(PyErr),
    Cancel,
    /// A value that must not be lost: if the future is already done, `GiveBack` runs instead.
    Handoff(Py<PyAny>, GiveBack),
}

/// Spins up to `micros` microseconds (call it with the GIL released) for `queue`'s signal; true
/// if it came. It does not look for signals (Ctrl-C): callers keep `micros` to tens of microseconds.
pub(crate) fn spin_for_signal(queue: &Completions, micros: u32) -> bool {
    let deadline = Instant::now() + Duration::from_micros(u64::from(micros));
    let mut spins = 0u32;
    while !queue.is_signalled() {
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 && Instant::now() >= deadline {
            return false;
        }
        std::hint::spin_loop();
    }
    true
}

pub(crate) type Completions = CompletionQueue<(Py<PyAny>, Resolution), WakeSignal>;

pub(crate) enum WakeSignal {
    Fd(EventFd),
    /// `loop.call_soon_threadsafe` and the drain to schedule with it.
    Threadsafe {
        call_soon_threadsafe: Py<PyAny>,
        drain: Py<Drainer>,
    },
}

impl Signal for WakeSignal {
    fn notify(&self) {
        match self {
            WakeSignal::Fd(fd) => fd.notify(),
            WakeSignal::Threadsafe {
                call_soon_threadsafe,
                drain,
            } => Python::attach(|py| {
                // A closed loop raises RuntimeError: nobody is left to drain, so dropping is right.
                let _ = call_soon_threadsafe.call1(py, (drain.clone_ref(py),));
            }),
        }
    }

    fn reset(&self) {
        if let WakeSignal::Fd(fd) = self {
            fd.reset();
        }
    }
}

/// Resolves a batch of completions on the loop's thread.
fn drain(py: Python<'_>, queue: &Completions) -> PyResult<()> {
    let mut batch = Vec::new();
    queue.drain_into(&mut batch);
    let mut first_error = None;
    for (fut, res) in batch {
        if let Err(e) = resolve(py, fut.bind(py), res) {
            first_error.get_or_insert(e);
        }
    }
    // One bad future must not strand the rest of the batch; report the first failure to the
    // loop's exception handler once everything else is resolved.
    first_error.map_or(Ok(()), Err)
}

/// Resolves one future on its loop's thread; a future already done (its task was cancelled) is
/// skipped, and a hand-off to it is given back.
pub(crate) fn resolve(py: Python<'_>, fut: &Bound<'_, PyAny>, res: Resolution) -> PyResult<()> {
    if fut.call_method0(interned!(py, "done"))?.is_truthy()? {
        if let Resolution::Handoff(_, give_back) = res {
            give_back(py);
        }
        return Ok(());
    }
    {
        let r = match res {
            Resolution::Value(v) | Resolution::Handoff(v, _) => fut.call_method1(interned!(py, "set_result"), (v,)),
            Resolution::Error(e) => fut.call_method1(interned!(py, "set_exception"), (e.into_value(py),)),
            Resolution::Cancel => fut.call_method0(interned!(py, "cancel")),
        };
        r.map(drop)
    }
}

#[pyclass(frozen, weakref, module = "ferrio._ferrio")]
pub struct LoopWaker {
    pub(crate) queue: Arc<Completions>,
    /// The loop's thread (wakers are made on it): hand-offs from that thread resolve directly.
    pub(crate) owner: std::thread::ThreadId,
}

/// The callable that a `threadsafe` waker schedules; holds its queue weakly to avoid a cycle.
#[pyclass(frozen, module = "ferrio._ferrio")]
pub struct Drainer {
    queue: Weak<Completions>,
}

#[pymethods]
impl Drainer {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        match self.queue.upgrade() {
            Some(q) => drain(py, &q),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl LoopWaker {
    #[new]
    fn new() -> PyResult<Self> {
        let fd = EventFd::new().map_err(|e| errors::eventfd_failed(&e))?;
        Ok(Self {
            queue: Arc::new(CompletionQueue::new(WakeSignal::Fd(fd))),
            owner: std::thread::current().id(),
        })
    }

    /// A waker for loops without `add_reader`.
    #[staticmethod]
    fn threadsafe(py: Python<'_>, call_soon_threadsafe: Py<PyAny>) -> Self {
        let queue = Arc::new_cyclic(|weak: &Weak<Completions>| {
            let drain = Py::new(py, Drainer { queue: weak.clone() }).expect("allocating a small object");
            CompletionQueue::new(WakeSignal::Threadsafe {
                call_soon_threadsafe,
                drain,
            })
        });
        Self {
            queue,
            owner: std::thread::current().id(),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let WakeSignal::Threadsafe {
            call_soon_threadsafe,
            drain,
        } = self.queue.signal()
        {
            visit.call(call_soon_threadsafe)?;
            visit.call(drain)?;
        }
        let mut res = Ok(());
        // A busy queue (a worker pushing without the GIL) is skipped: reporting fewer references
        // only keeps objects alive until the next collection.
        self.queue.try_for_each(|(fut, r)| {
            if res.is_ok() {
                res = visit.call(fut).and_then(|()| match r {
                    Resolution::Value(v) | Resolution::Handoff(v, _) => visit.call(v),
                    Resolution::Error(_) | Resolution::Cancel => Ok(()),
                });
            }
        });
        res
    }

    fn __clear__(&self) {
        // Taken out under the queue's lock, dropped (running any `__del__`) after it.
        let mut batch = Vec::new();
        self.queue.drain_into(&mut batch);
        drop(batch);
    }

    fn fileno(&self) -> Option<i32> {
        match self.queue.signal() {
            WakeSignal::Fd(fd) => Some(fd.fileno()),
            WakeSignal::Threadsafe { .. } => None,
        }
    }

    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        drain(py, &self.queue)
    }

    /// Queues `fut.set_result(value)` (or `set_exception(value)` when `failed`) for the loop's
    /// next drain; callable from any thread. A future done by then is skipped.
    fn post(&self, py: Python<'_>, fut: Py<PyAny>, value: Py<PyAny>, failed: bool) {
        let res = if failed {
            Resolution::Error(PyErr::from_value(value.into_bound(py)))
        } else {
            Resolution::Value(value)
        };
        self.queue.push((fut, res));
    }
}
