//! Synchronisation primitives shared by threads and event-loop tasks: a semaphore (and so a
//! lock), an event, and a queue.
//!
//! Waiters of both kinds stand in one FIFO per primitive. Whoever frees a permit, a slot or an
//! item hands it *directly* to the first waiter, under the primitive's lock, so nobody can barge
//! in between and waiters are served first come, first served across both worlds.
//!
//! A thread waiter is a [`ThreadWaiter`]: the hand-off fills its slot and signals its condvar; a
//! thread that gives up (timeout, Ctrl-C) calls the primitive's `abandon_*`, which under the same
//! lock either removes it from the FIFO or reports that the hand-off won the race. A task waiter
//! is opaque here (`A`): the primitive returns it to the embedder, which resolves the task's
//! future on its loop. If that future turns out to be cancelled, the embedder gives the value
//! back (`release`, `give_back`, `release_reservation`), so a cancelled wait never loses a permit
//! or an item.
//!
//! A queue's room is handed out the same way. A putter that waits for room is granted a reserved
//! slot and inserts its own item when it resumes (so a priority queue orders it on the putter's
//! call, where an error can be raised); an item handed to a waiting getter keeps its slot until
//! the getter says it holds it ([`Queue::received`]) or gives it back. So `items + reserved +
//! in_flight` never exceeds `maxsize`, and every operation that frees room ends by granting it to
//! the waiting putters, in order.
//!
//! The embedder's code (Python: a `__del__`, an `__lt__`) must not run where it can wait for a lock
//! that another thread holds while it needs something that thread holds (the GIL). So waiters that
//! leave a primitive are returned to the caller, to be dropped after the lock is released, and the
//! only foreign code that runs under a lock is a priority queue's comparisons: the queue's lock is
//! taken with a try first, and a contended wait goes through the embedder's [`LockWait`], which
//! releases the GIL around it, so the comparing thread can always take the GIL back and finish. A
//! comparison that calls back into its own queue gets [`QueueError::Reentrant`], never a deadlock.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A thread blocked on a primitive.
pub struct ThreadWaiter<V> {
    slot: Mutex<Option<V>>,
    granted: Condvar,
}

impl<V> Default for ThreadWaiter<V> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(None),
            granted: Condvar::new(),
        }
    }
}

impl<V> ThreadWaiter<V> {
    fn grant(&self, v: V) {
        *lock(&self.slot) = Some(v);
        self.granted.notify_one();
    }

    /// Waits at most `slice` for the hand-off; `Some` once granted. Callers loop, checking for
    /// signals and their deadline between slices.
    pub fn wait(&self, slice: Duration) -> Option<V> {
        let mut slot = lock(&self.slot);
        if slot.is_none() {
            slot = self
                .granted
                .wait_timeout(slot, slice)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        slot.take()
    }

    fn take(&self) -> Option<V> {
        lock(&self.slot).take()
    }
}

/// A waiter of either world.
pub enum Waiter<V, A> {
    Thread(Arc<ThreadWaiter<V>>),
    Task(A),
}

impl<V, A> Waiter<V, A> {
    /// Hands `v` over: a thread is woken here; a task is returned for the embedder to resolve.
    fn hand(self, v: V) -> Option<(A, V)> {
        match self {
            Waiter::Thread(t) => {
                t.grant(v);
                None
            }
            Waiter::Task(a) => Some((a, v)),
        }
    }

    fn is_thread(&self, t: &Arc<ThreadWaiter<V>>) -> bool {
        matches!(self, Waiter::Thread(w) if Arc::ptr_eq(w, t))
    }
}

/// Removes thread waiter `t` from `waiters`, or returns what was handed to it meanwhile.
fn abandon<V, A>(waiters: &mut VecDeque<Waiter<V, A>>, t: &Arc<ThreadWaiter<V>>) -> Option<V> {
    if let Some(v) = t.take() {
        return Some(v);
    }
    waiters.retain(|w| !w.is_thread(t));
    None
}

/// Removes the task `is_it` picks from `waiters` and returns it, so that the caller drops it (and
/// whatever the embedder's handle owns) after the primitive's lock is released.
fn forget<V, A>(waiters: &mut VecDeque<Waiter<V, A>>, mut is_it: impl FnMut(&A) -> bool) -> Option<A> {
    let i = waiters.iter().position(|w| matches!(w, Waiter::Task(a) if is_it(a)))?;
    match waiters.remove(i) {
        Some(Waiter::Task(a)) => Some(a),
        _ => None,
    }
}

/// The outcome of asking for something that may not be available.
pub enum Attempt<V> {
    /// Available at once.
    Ready(V),
    /// Queued: a thread waits on the returned waiter; a task's handle was queued.
    Queued(Option<Arc<ThreadWaiter<V>>>),
}

fn queue_waiter<V, A>(waiters: &mut VecDeque<Waiter<V, A>>, task: Option<A>) -> Option<Arc<ThreadWaiter<V>>> {
    if let Some(a) = task {
        waiters.push_back(Waiter::Task(a));
        None
    } else {
        let t = Arc::new(ThreadWaiter::default());
        waiters.push_back(Waiter::Thread(Arc::clone(&t)));
        Some(t)
    }
}

// -- semaphore -----------------------------------------------------------------------------------

/// A counting semaphore; with one permit and a bound of one, a lock.
pub struct Semaphore<A> {
    state: Mutex<SemState<A>>,
    bound: Option<usize>,
}

struct SemState<A> {
    permits: usize,
    waiters: VecDeque<Waiter<(), A>>,
}

/// Released more often than acquired (a bounded semaphore, or an unlocked lock).
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl<A> Semaphore<A> {
    /// `permits` free now; with `bound`, releasing past it fails.
    #[must_use]
    pub fn new(permits: usize, bound: Option<usize>) -> Self {
        Self {
            state: Mutex::new(SemState {
                permits,
                waiters: VecDeque::new(),
            }),
            bound,
        }
    }

    /// Takes a permit if one is free and nobody is queued before us.
    pub fn try_acquire(&self) -> bool {
        let mut st = lock(&self.state);
        if st.permits > 0 && st.waiters.is_empty() {
            st.permits -= 1;
            true
        } else {
            false
        }
    }

    /// Takes a permit, or queues `task` (or, with `None`, a new thread waiter) for the next one.
    pub fn acquire(&self, task: Option<A>) -> Attempt<()> {
        let mut st = lock(&self.state);
        if st.permits > 0 && st.waiters.is_empty() {
            st.permits -= 1;
            return Attempt::Ready(());
        }
        Attempt::Queued(queue_waiter(&mut st.waiters, task))
    }

    /// Gives a permit back: to the first waiter if any (a task is returned to be resolved).
    pub fn release(&self) -> Result<Option<A>, Overflow> {
        let mut st = lock(&self.state);
        if let Some(w) = st.waiters.pop_front() {
            return Ok(w.hand(()).map(|(a, ())| a));
        }
        if self.bound.is_some_and(|b| st.permits >= b) {
            return Err(Overflow);
        }
        st.permits = st.permits.checked_add(1).ok_or(Overflow)?;
        Ok(None)
    }

    /// A thread stops waiting: `true` if the permit reached it anyway (it now holds it).
    pub fn abandon(&self, t: &Arc<ThreadWaiter<()>>) -> bool {
        abandon(&mut lock(&self.state).waiters, t).is_some()
    }

    /// A queued task was cancelled before a permit reached it: unqueue it. Its handle is
    /// returned, for the caller to drop outside the lock.
    pub fn forget(&self, is_it: impl FnMut(&A) -> bool) -> Option<A> {
        forget(&mut lock(&self.state).waiters, is_it)
    }

    /// `(free permits, waiters)`.
    pub fn stats(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.permits, st.waiters.len())
    }
}

// -- event ---------------------------------------------------------------------------------------

/// A flag that tasks and threads can wait for.
pub struct Event<A> {
    state: Mutex<(bool, VecDeque<Waiter<(), A>>)>,
}

impl<A> Default for Event<A> {
    fn default() -> Self {
        Self {
            state: Mutex::new((false, VecDeque::new())),
        }
    }
}

impl<A> Event<A> {
    /// Sets the flag and wakes every waiter; returns the tasks to resolve.
    pub fn set(&self) -> Vec<A> {
        let mut st = lock(&self.state);
        st.0 = true;
        st.1.drain(..).filter_map(|w| w.hand(()).map(|(a, ())| a)).collect()
    }

    pub fn clear(&self) {
        lock(&self.state).0 = false;
    }

    #[must_use]
    pub fn is_set(&self) -> bool {
        lock(&self.state).0
    }

    /// Ready if set, else queued.
    pub fn wait(&self, task: Option<A>) -> Attempt<()> {
        let mut st = lock(&self.state);
        if st.0 {
            return Attempt::Ready(());
        }
        Attempt::Queued(queue_waiter(&mut st.1, task))
    }

    /// A thread stops waiting: `true` if the event was set meanwhile.
    pub fn abandon(&self, t: &Arc<ThreadWaiter<()>>) -> bool {
        abandon(&mut lock(&self.state).1, t).is_some()
    }

    /// A queued task was cancelled: unqueue it; its handle is returned, to drop outside the lock.
    pub fn forget(&self, is_it: impl FnMut(&A) -> bool) -> Option<A> {
        forget(&mut lock(&self.state).1, is_it)
    }
}

// -- queue ---------------------------------------------------------------------------------------

/// How a priority queue orders its items: smallest first, by a comparison that may fail (a
/// Python `__lt__` that raises). Every `Ord` type qualifies and never fails.
pub trait QueueItem {
    type Error;
    /// `self < other`, or why the two cannot be compared.
    fn try_lt(&self, other: &Self) -> Result<bool, Self::Error>;
}

impl<T: Ord> QueueItem for T {
    type Error = Infallible;
    fn try_lt(&self, other: &Self) -> Result<bool, Infallible> {
        Ok(self < other)
    }
}

/// Why a queue operation could not proceed.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError<E = Infallible> {
    Empty,
    Full,
    ShutDown,
    /// `task_done()` called more times than there were items.
    TooManyTaskDone,
    /// A priority queue's items could not be compared; the queue is as it was before the call.
    Compare(E),
    /// The queue was used from inside one of its own items' comparisons, on the thread that is
    /// ordering them: waiting for the lock would wait for ourselves.
    Reentrant,
    /// Memory for one more item could not be allocated.
    NoMemory,
    /// The embedder's [`LockWait`] gave up waiting for the lock (a signal handler raised).
    Interrupted,
}

/// What a getter receives: an item, or the news that the queue shut down.
pub type Got<T> = Option<T>;

/// The order a queue hands items out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Fifo,
    Lifo,
    /// Smallest first ([`QueueItem::try_lt`]), as `heapq`.
    Priority,
}

/// A binary min-heap whose comparisons may fail. Each operation first works out, reading only,
/// where every moved item goes, and changes the heap only once every comparison has succeeded:
/// a failed push or pop leaves the heap exactly as it was (where `heapq` leaves the item in, or
/// loses the smallest one).
struct Heap<T>(Vec<T>);

impl<T: QueueItem> Heap<T> {
    /// Where `item` would settle if pushed: it climbs the path from the new leaf while it is
    /// smaller than the parent. With `lenient`, a failed comparison stops the climb instead.
    fn push_target(&self, item: &T, lenient: bool) -> Result<usize, T::Error> {
        let mut i = self.0.len();
        while i > 0 {
            let parent = (i - 1) / 2;
            match item.try_lt(&self.0[parent]) {
                Ok(true) => i = parent,
                Ok(false) => break,
                Err(_) if lenient => break,
                Err(e) => return Err(e),
            }
        }
        Ok(i)
    }

    fn push_at(&mut self, item: T, target: usize) {
        let mut i = self.0.len();
        self.0.push(item);
        while i > target {
            let parent = (i - 1) / 2;
            self.0.swap(i, parent);
            i = parent;
        }
    }

    fn push(&mut self, item: T) -> Result<(), (T::Error, T)> {
        match self.push_target(&item, false) {
            Ok(target) => {
                self.push_at(item, target);
                Ok(())
            }
            Err(e) => Err((e, item)),
        }
    }

    /// Puts back an item that was in the heap before; it must not be lost, so a comparison that
    /// fails now leaves it where the climb stopped.
    fn push_back_lenient(&mut self, item: T) {
        let target = self.push_target(&item, true).unwrap_or(0);
        self.push_at(item, target);
    }

    /// Removes the smallest item. The last item takes the root's place and sinks along the path
    /// of smaller children; that path is recorded (one bit per level: right child) before
    /// anything moves.
    fn pop(&mut self) -> Result<Option<T>, T::Error> {
        let n = self.0.len();
        if n <= 2 {
            // No sinking to do: with two items the second is the only candidate for the root.
            return Ok(if n == 0 { None } else { Some(self.0.remove(0)) });
        }
        let rest = n - 1; // the heap once the last item is lifted out
        let last = &self.0[rest];
        let (mut hole, mut depth, mut rights) = (0usize, 0u32, 0u64);
        loop {
            let mut child = 2 * hole + 1;
            if child >= rest {
                break;
            }
            let right = child + 1 < rest && self.0[child + 1].try_lt(&self.0[child])?;
            if right {
                child += 1;
            }
            if !self.0[child].try_lt(last)? {
                break;
            }
            rights |= u64::from(right) << depth;
            depth += 1;
            hole = child;
        }
        let smallest = self.0.swap_remove(0);
        let mut hole = 0;
        for level in 0..depth {
            let child = 2 * hole + 1 + usize::from(rights >> level & 1 == 1);
            self.0.swap(hole, child);
            hole = child;
        }
        Ok(Some(smallest))
    }
}

enum Items<T> {
    Deque(VecDeque<T>),
    Heap(Heap<T>),
}

impl<T: QueueItem> Items<T> {
    fn len(&self) -> usize {
        match self {
            Items::Deque(d) => d.len(),
            Items::Heap(h) => h.0.len(),
        }
    }

    /// Adds an item; fails, leaving the queue as it was, if it cannot be ordered against the
    /// others or memory for it cannot be had.
    fn push(&mut self, item: T) -> Result<(), (QueueError<T::Error>, T)> {
        let grown = match self {
            Items::Deque(d) => d.try_reserve(1),
            Items::Heap(h) => h.0.try_reserve(1),
        };
        if grown.is_err() {
            return Err((QueueError::NoMemory, item));
        }
        match self {
            Items::Deque(d) => {
                d.push_back(item);
                Ok(())
            }
            Items::Heap(h) => h.push(item).map_err(|(e, item)| (QueueError::Compare(e), item)),
        }
    }

    fn drain(&mut self) -> Vec<T> {
        match self {
            Items::Deque(d) => d.drain(..).collect(),
            Items::Heap(h) => std::mem::take(&mut h.0),
        }
    }
}

struct QState<T, A> {
    items: Items<T>,
    /// Slots granted to putters that have not inserted their item yet.
    reserved: usize,
    /// Items handed to getters that have not confirmed they hold them ([`Queue::received`]): a
    /// getter cancelled meanwhile gives its item back, and there must be room for it.
    in_flight: usize,
    getters: VecDeque<Waiter<Got<T>, A>>,
    /// Putters waiting for room. A putter keeps its item; it is granted a reserved slot (`true`)
    /// or told of a shutdown (`false`), and inserts the item itself ([`Queue::commit_reserved`]),
    /// so a priority queue compares it on the putter's own call, where an error can be raised.
    putters: VecDeque<Waiter<bool, A>>,
    joiners: VecDeque<Waiter<(), A>>,
    unfinished: usize,
    shutdown: bool,
}

/// Tasks to resolve after a queue operation, collected under the lock and resolved outside it.
#[derive(Debug)]
pub struct Wakeups<T, A> {
    /// Getters and the item (or shutdown) each receives.
    pub getters: Vec<(A, Got<T>)>,
    /// Putters granted a slot (`true`) or told of a shutdown (`false`).
    pub putters: Vec<(A, bool)>,
    /// Joiners whose wait is over.
    pub joiners: Vec<A>,
}

impl<T, A> Default for Wakeups<T, A> {
    fn default() -> Self {
        Self {
            getters: Vec::new(),
            putters: Vec::new(),
            joiners: Vec::new(),
        }
    }
}

impl<T, A> Wakeups<T, A> {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.getters.is_empty() && self.putters.is_empty() && self.joiners.is_empty()
    }
}

/// What [`Queue::put`] did.
pub enum Put<T> {
    Done,
    /// The putter was queued (a thread waits on the returned waiter; a task's handle was
    /// queued) and keeps its item until it is granted a slot.
    Queued(Option<Arc<ThreadWaiter<bool>>>, T),
}

/// How a thread waits for a queue's lock that another thread holds: `wait_free(slice)` waits at
/// most `slice` for it to come free, and the queue calls the hook again until it gets the lock.
/// The Python bindings call `wait_free` with the GIL released, since the holder may need the GIL
/// to finish (it may be running a Python `__lt__`), and then run signal handlers. Returning
/// `false` gives up ([`QueueError::Interrupted`]); it is honoured only when `interruptible`, that
/// is for operations that have changed nothing yet.
pub type LockWait = fn(wait_free: &(dyn Fn(Duration) + Sync), interruptible: bool) -> bool;

fn wait_in_place(wait_free: &(dyn Fn(Duration) + Sync), _interruptible: bool) -> bool {
    wait_free(Duration::from_millis(50));
    true
}

/// A number unique to the calling thread while it lives (never 0).
fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| std::ptr::from_ref(t) as usize)
}

/// The queue's state, locked; remembers the holding thread so a re-entrant call is refused, and
/// wakes threads waiting for the lock when it is released.
struct QGuard<'a, T, A> {
    queue: &'a Queue<T, A>,
    /// Dropped by hand in `drop`, between clearing the owner and waking the waiters.
    state: ManuallyDrop<MutexGuard<'a, QState<T, A>>>,
}

impl<T, A> Drop for QGuard<'_, T, A> {
    fn drop(&mut self) {
        self.queue.owner.store(0, AtomicOrdering::Relaxed);
        // SAFETY: `state` is dropped exactly once, here, and not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.state) };
        if self.queue.contended.load(AtomicOrdering::SeqCst) > 0 {
            // A waiter that checked just before this unlock may miss the notification; it then
            // sleeps out its slice (50 ms at most) and tries again, so this can delay, never hang.
            let _free = lock(&self.queue.free_lock);
            self.queue.free.notify_all();
        }
    }
}

impl<T, A> std::ops::Deref for QGuard<'_, T, A> {
    type Target = QState<T, A>;
    fn deref(&self) -> &QState<T, A> {
        &self.state
    }
}

impl<T, A> std::ops::DerefMut for QGuard<'_, T, A> {
    fn deref_mut(&mut self) -> &mut QState<T, A> {
        &mut self.state
    }
}

/// A FIFO, LIFO or priority queue with an optional bound, `task_done`/`join` and 3.13 shutdown
/// semantics. `items + reserved + in_flight` never exceeds `maxsize`, and after every operation
/// no putter waits while there is room (`settle`).
pub struct Queue<T, A> {
    state: Mutex<QState<T, A>>,
    /// The thread holding `state` ([`thread_token`]), or 0.
    owner: AtomicUsize,
    lock_wait: LockWait,
    /// Threads waiting for `state` to come free sleep on `free` (under `free_lock`).
    contended: AtomicUsize,
    free_lock: Mutex<()>,
    free: Condvar,
    maxsize: usize,
    order: Order,
}

type QResult<R, T> = Result<R, QueueError<<T as QueueItem>::Error>>;

impl<T: QueueItem + Send, A: Send> Queue<T, A> {
    /// `maxsize` 0 means unbounded. A contended lock is waited for in place.
    #[must_use]
    pub fn new(maxsize: usize, order: Order) -> Self {
        Self::with_lock_wait(maxsize, order, wait_in_place)
    }

    /// As [`Queue::new`], waiting for a contended lock through `lock_wait`.
    #[must_use]
    pub fn with_lock_wait(maxsize: usize, order: Order, lock_wait: LockWait) -> Self {
        let items = if order == Order::Priority {
            Items::Heap(Heap(Vec::new()))
        } else {
            Items::Deque(VecDeque::new())
        };
        Self {
            state: Mutex::new(QState {
                items,
                reserved: 0,
                in_flight: 0,
                getters: VecDeque::new(),
                putters: VecDeque::new(),
                joiners: VecDeque::new(),
                unfinished: 0,
                shutdown: false,
            }),
            owner: AtomicUsize::new(0),
            lock_wait,
            contended: AtomicUsize::new(0),
            free_lock: Mutex::new(()),
            free: Condvar::new(),
            maxsize,
            order,
        }
    }

    /// Locks the state for an operation that has changed nothing yet: the wait for a contended
    /// lock may be interrupted.
    fn lock(&self) -> QResult<QGuard<'_, T, A>, T> {
        self.lock_for(true)
    }

    /// Locks the state for an operation that must finish (it gives back an item or a slot).
    fn lock_to_finish(&self) -> QResult<QGuard<'_, T, A>, T> {
        self.lock_for(false)
    }

    fn lock_for(&self, interruptible: bool) -> QResult<QGuard<'_, T, A>, T> {
        let me = thread_token();
        loop {
            let state = match self.state.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    // Only this thread stores its own token, so reading it means we hold the lock.
                    if self.owner.load(AtomicOrdering::Relaxed) == me {
                        return Err(QueueError::Reentrant);
                    }
                    if !(self.lock_wait)(&|slice| self.wait_free(slice), interruptible) && interruptible {
                        return Err(QueueError::Interrupted);
                    }
                    continue;
                }
            };
            self.owner.store(me, AtomicOrdering::Relaxed);
            return Ok(QGuard {
                queue: self,
                state: ManuallyDrop::new(state),
            });
        }
    }

    /// Waits at most `slice` for the state's lock to come free (without taking it).
    fn wait_free(&self, slice: Duration) {
        let free = lock(&self.free_lock);
        self.contended.fetch_add(1, AtomicOrdering::SeqCst);
        // Taken and released at once if free: the caller's next try will likely get it.
        let busy = matches!(self.state.try_lock(), Err(TryLockError::WouldBlock));
        if busy {
            drop(self.free.wait_timeout(free, slice));
        }
        self.contended.fetch_sub(1, AtomicOrdering::SeqCst);
    }

    #[must_use]
    pub fn maxsize(&self) -> usize {
        self.maxsize
    }

    fn has_room(&self, st: &QState<T, A>) -> bool {
        self.maxsize == 0 || st.items.len() + st.reserved + st.in_flight < self.maxsize
    }

    /// Inserts `item` where there is room: to the first getter if one waits, else into the queue.
    fn insert(st: &mut QState<T, A>, item: T, wake: &mut Wakeups<T, A>) -> Result<(), (QueueError<T::Error>, T)> {
        if let Some(g) = st.getters.pop_front() {
            st.in_flight += 1;
            wake.getters.extend(g.hand(Some(item)));
            return Ok(());
        }
        st.items.push(item)
    }

    fn pop(&self, st: &mut QState<T, A>) -> QResult<Option<T>, T> {
        Ok(match &mut st.items {
            Items::Deque(d) if self.order == Order::Lifo => d.pop_back(),
            Items::Deque(d) => d.pop_front(),
            Items::Heap(h) => h.pop().map_err(QueueError::Compare)?,
        })
    }

    /// Grants reserved slots to waiting putters, in order, while there is room. Every operation
    /// that can make room ends here, so no putter is left waiting on a queue with room.
    fn settle(&self, st: &mut QState<T, A>, wake: &mut Wakeups<T, A>) {
        while self.has_room(st) {
            let Some(p) = st.putters.pop_front() else { break };
            st.reserved += 1;
            wake.putters.extend(p.hand(true));
        }
    }

    /// Puts without waiting.
    pub fn put_nowait(&self, item: T, wake: &mut Wakeups<T, A>) -> Result<(), (QueueError<T::Error>, T)> {
        let mut st = match self.lock() {
            Ok(st) => st,
            Err(e) => return Err((e, item)),
        };
        if st.shutdown {
            return Err((QueueError::ShutDown, item));
        }
        if !st.putters.is_empty() || !self.has_room(&st) {
            return Err((QueueError::Full, item));
        }
        Self::insert(&mut st, item, wake)?;
        st.unfinished += 1;
        Ok(())
    }

    /// Puts, or queues the putter (a thread, or task `task`), which keeps its item until it is
    /// granted a slot and then calls [`Queue::commit_reserved`].
    pub fn put(&self, item: T, task: Option<A>, wake: &mut Wakeups<T, A>) -> Result<Put<T>, (QueueError<T::Error>, T)> {
        let mut st = match self.lock() {
            Ok(st) => st,
            Err(e) => return Err((e, item)),
        };
        if st.shutdown {
            return Err((QueueError::ShutDown, item));
        }
        if st.putters.is_empty() && self.has_room(&st) {
            Self::insert(&mut st, item, wake)?;
            st.unfinished += 1;
            return Ok(Put::Done);
        }
        Ok(Put::Queued(queue_waiter(&mut st.putters, task), item))
    }

    /// A putter granted a slot inserts its item. If it cannot (the queue shut down meanwhile, or
    /// the item cannot be ordered), the slot passes on and the item comes back with the error.
    pub fn commit_reserved(&self, item: T, wake: &mut Wakeups<T, A>) -> Result<(), (QueueError<T::Error>, T)> {
        let mut st = match self.lock_to_finish() {
            Ok(st) => st,
            Err(e) => return Err((e, item)),
        };
        st.reserved = st.reserved.saturating_sub(1); // saturating: a stray call from Python must not panic
        let r = if st.shutdown {
            Err((QueueError::ShutDown, item))
        } else {
            Self::insert(&mut st, item, wake)
        };
        if r.is_ok() {
            st.unfinished += 1;
        }
        self.settle(&mut st, wake);
        r
    }

    /// A putter granted a slot gives up before inserting: pass the slot on.
    pub fn release_reservation(&self, wake: &mut Wakeups<T, A>) -> QResult<(), T> {
        let mut st = self.lock_to_finish()?;
        st.reserved = st.reserved.saturating_sub(1); // saturating: a stray call from Python must not panic
        self.settle(&mut st, wake);
        Ok(())
    }

    /// A queued task (getter, putter or joiner) was cancelled before anything reached it:
    /// unqueue it. `is_it` identifies its handle, which is returned to be dropped outside the lock.
    pub fn forget(&self, mut is_it: impl FnMut(&A) -> bool) -> QResult<Option<A>, T> {
        let mut st = self.lock_to_finish()?;
        let st = &mut *st;
        Ok(forget(&mut st.putters, &mut is_it)
            .or_else(|| forget(&mut st.getters, &mut is_it))
            .or_else(|| forget(&mut st.joiners, &mut is_it)))
    }

    /// Gets without waiting.
    pub fn get_nowait(&self, wake: &mut Wakeups<T, A>) -> QResult<T, T> {
        let mut st = self.lock()?;
        match self.pop(&mut st)? {
            Some(item) => {
                self.settle(&mut st, wake);
                Ok(item)
            }
            None if st.shutdown => Err(QueueError::ShutDown),
            None => Err(QueueError::Empty),
        }
    }

    /// Gets, or queues the getter. An item handed to a queued getter later counts against
    /// `maxsize` until the getter calls [`Queue::received`] or [`Queue::give_back`].
    pub fn get(&self, task: Option<A>, wake: &mut Wakeups<T, A>) -> QResult<Attempt<Got<T>>, T> {
        let mut st = self.lock()?;
        if let Some(item) = self.pop(&mut st)? {
            self.settle(&mut st, wake);
            return Ok(Attempt::Ready(Some(item)));
        }
        if st.shutdown {
            return Err(QueueError::ShutDown);
        }
        Ok(Attempt::Queued(queue_waiter(&mut st.getters, task)))
    }

    /// A getter that was handed an item now holds it: its slot is free.
    pub fn received(&self, wake: &mut Wakeups<T, A>) -> QResult<(), T> {
        let mut st = self.lock_to_finish()?;
        st.in_flight = st.in_flight.saturating_sub(1);
        self.settle(&mut st, wake);
        Ok(())
    }

    /// A getter that was handed `item` will not take it (its task was cancelled, its thread
    /// interrupted): the item goes to the next getter, or back to the front. Its `unfinished`
    /// count stays. Fails only when called re-entrantly, and then returns the item.
    pub fn give_back(&self, item: T, wake: &mut Wakeups<T, A>) -> Result<(), (QueueError<T::Error>, T)> {
        let mut st = match self.lock_to_finish() {
            Ok(st) => st,
            Err(e) => return Err((e, item)),
        };
        let st = &mut *st;
        if let Some(g) = st.getters.pop_front() {
            wake.getters.extend(g.hand(Some(item)));
            return Ok(());
        }
        st.in_flight = st.in_flight.saturating_sub(1);
        // The item's slot was counted in `in_flight`: there is room for it, and the push below
        // only grows the buffer back to a size it had (an allocation failure here would abort,
        // as any infallible push; losing the item is not an option).
        match &mut st.items {
            Items::Deque(d) if self.order == Order::Fifo => d.push_front(item),
            Items::Deque(d) => d.push_back(item),
            Items::Heap(h) => h.push_back_lenient(item),
        }
        Ok(())
    }

    /// A thread getter stops waiting; `Some` if an item (or the shutdown) reached it anyway. An
    /// item that did must then be [`Queue::received`] or given back.
    pub fn abandon_get(&self, t: &Arc<ThreadWaiter<Got<T>>>) -> QResult<Option<Got<T>>, T> {
        Ok(abandon(&mut self.lock_to_finish()?.getters, t))
    }

    /// A thread putter stops waiting: `Some(true)` if a slot was reserved for it meanwhile (it
    /// must commit or release it), `Some(false)` if the queue shut down, `None` if it was
    /// unqueued.
    pub fn abandon_put(&self, t: &Arc<ThreadWaiter<bool>>) -> QResult<Option<bool>, T> {
        Ok(abandon(&mut self.lock_to_finish()?.putters, t))
    }

    pub fn task_done(&self, wake: &mut Wakeups<T, A>) -> QResult<(), T> {
        let mut st = self.lock()?;
        if st.unfinished == 0 {
            return Err(QueueError::TooManyTaskDone);
        }
        st.unfinished -= 1;
        if st.unfinished == 0 {
            for j in st.joiners.drain(..) {
                wake.joiners.extend(j.hand(()).map(|(a, ())| a));
            }
        }
        Ok(())
    }

    /// Ready once every item put has been marked done.
    pub fn join(&self, task: Option<A>) -> QResult<Attempt<()>, T> {
        let mut st = self.lock()?;
        if st.unfinished == 0 {
            return Ok(Attempt::Ready(()));
        }
        Ok(Attempt::Queued(queue_waiter(&mut st.joiners, task)))
    }

    pub fn abandon_join(&self, t: &Arc<ThreadWaiter<()>>) -> QResult<bool, T> {
        Ok(abandon(&mut self.lock_to_finish()?.joiners, t).is_some())
    }

    /// Shuts the queue down (3.13 semantics): puts fail from now on; gets fail once it is empty,
    /// at once with `immediate`, which also drops the items (marking them done; they are
    /// returned, to be dropped outside the lock). Waiting putters and, where no item is left for
    /// them, waiting getters wake with the shutdown.
    pub fn shutdown(&self, immediate: bool, wake: &mut Wakeups<T, A>) -> QResult<Vec<T>, T> {
        let mut st = self.lock()?;
        st.shutdown = true;
        let dropped: Vec<T> = if immediate { st.items.drain() } else { Vec::new() };
        st.unfinished = st.unfinished.saturating_sub(dropped.len());
        if st.items.len() == 0 {
            for g in st.getters.drain(..) {
                wake.getters.extend(g.hand(None));
            }
        }
        for p in st.putters.drain(..) {
            wake.putters.extend(p.hand(false));
        }
        if st.unfinished == 0 {
            for j in st.joiners.drain(..) {
                wake.joiners.extend(j.hand(()).map(|(a, ())| a));
            }
        }
        Ok(dropped)
    }

    pub fn is_shutdown(&self) -> QResult<bool, T> {
        Ok(self.lock()?.shutdown)
    }

    /// `(items, unfinished, getters waiting, putters waiting)`.
    pub fn stats(&self) -> QResult<(usize, usize, usize, usize), T> {
        let st = self.lock()?;
        Ok((st.items.len(), st.unfinished, st.getters.len(), st.putters.len()))
    }

    pub fn qsize(&self) -> QResult<usize, T> {
        Ok(self.lock()?.items.len())
    }

    pub fn is_full(&self) -> QResult<bool, T> {
        let st = self.lock()?;
        Ok(!self.has_room(&st))
    }
}
