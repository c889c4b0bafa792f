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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
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

fn forget<V, A>(waiters: &mut VecDeque<Waiter<V, A>>, mut is_it: impl FnMut(&A) -> bool) {
    waiters.retain(|w| !matches!(w, Waiter::Task(a) if is_it(a)));
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
        st.permits += 1;
        Ok(None)
    }

    /// A thread stops waiting: `true` if the permit reached it anyway (it now holds it).
    pub fn abandon(&self, t: &Arc<ThreadWaiter<()>>) -> bool {
        abandon(&mut lock(&self.state).waiters, t).is_some()
    }

    /// A queued task was cancelled before a permit reached it: drop it from the queue.
    pub fn forget(&self, is_it: impl FnMut(&A) -> bool) {
        forget(&mut lock(&self.state).waiters, is_it);
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

    /// A queued task was cancelled: drop it.
    pub fn forget(&self, is_it: impl FnMut(&A) -> bool) {
        forget(&mut lock(&self.state).1, is_it);
    }
}

// -- queue ---------------------------------------------------------------------------------------

/// Why a queue operation could not proceed.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    Empty,
    Full,
    ShutDown,
    /// `task_done()` called more times than there were items.
    TooManyTaskDone,
}

/// What a getter receives: an item, or the news that the queue shut down.
pub type Got<T> = Option<T>;

/// A putter waiting for room: a thread brings its item (inserted at the hand-off); a task is
/// granted a reserved slot and inserts its item when it resumes ([`Queue::commit_reserved`]).
enum Putter<T, A> {
    Thread(Arc<ThreadWaiter<bool>>, T),
    Task(A),
}

/// The order a queue hands items out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Fifo,
    Lifo,
    /// Smallest first (`T: Ord`), as `heapq`.
    Priority,
}

enum Items<T> {
    Deque(VecDeque<T>),
    Heap(BinaryHeap<Reverse<T>>),
}

impl<T: Ord> Items<T> {
    fn len(&self) -> usize {
        match self {
            Items::Deque(d) => d.len(),
            Items::Heap(h) => h.len(),
        }
    }

    fn push(&mut self, item: T) {
        match self {
            Items::Deque(d) => d.push_back(item),
            Items::Heap(h) => h.push(Reverse(item)),
        }
    }

    fn drain(&mut self) -> Vec<T> {
        match self {
            Items::Deque(d) => d.drain(..).collect(),
            Items::Heap(h) => h.drain().map(|Reverse(t)| t).collect(),
        }
    }
}

struct QState<T, A> {
    items: Items<T>,
    /// Slots granted to task putters that have not inserted yet.
    reserved: usize,
    getters: VecDeque<Waiter<Got<T>, A>>,
    putters: VecDeque<Putter<T, A>>,
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
    /// The thread must wait on this.
    ThreadWait(Arc<ThreadWaiter<bool>>),
    /// The task was queued; here is its item back until it is granted a slot.
    TaskQueued(T),
}

/// A FIFO (or LIFO) queue with an optional bound, `task_done`/`join` and 3.13 shutdown semantics.
pub struct Queue<T, A> {
    state: Mutex<QState<T, A>>,
    maxsize: usize,
    order: Order,
}

impl<T: Ord, A> Queue<T, A> {
    /// `maxsize` 0 means unbounded.
    #[must_use]
    pub fn new(maxsize: usize, order: Order) -> Self {
        let items = if order == Order::Priority {
            Items::Heap(BinaryHeap::new())
        } else {
            Items::Deque(VecDeque::new())
        };
        Self {
            state: Mutex::new(QState {
                items,
                reserved: 0,
                getters: VecDeque::new(),
                putters: VecDeque::new(),
                joiners: VecDeque::new(),
                unfinished: 0,
                shutdown: false,
            }),
            maxsize,
            order,
        }
    }

    #[must_use]
    pub fn maxsize(&self) -> usize {
        self.maxsize
    }

    fn has_room(&self, st: &QState<T, A>) -> bool {
        self.maxsize == 0 || st.items.len() + st.reserved < self.maxsize
    }

    /// Inserts `item` where there is room: to the first getter if one waits, else into the queue.
    fn insert(st: &mut QState<T, A>, item: T, wake: &mut Wakeups<T, A>) {
        match st.getters.pop_front() {
            Some(g) => wake.getters.extend(g.hand(Some(item))),
            None => st.items.push(item),
        }
    }

    fn pop(&self, st: &mut QState<T, A>) -> Option<T> {
        match &mut st.items {
            Items::Deque(d) if self.order == Order::Lifo => d.pop_back(),
            Items::Deque(d) => d.pop_front(),
            Items::Heap(h) => h.pop().map(|Reverse(t)| t),
        }
    }

    /// One slot came free: hand it to the first putter.
    fn refill(st: &mut QState<T, A>, wake: &mut Wakeups<T, A>) {
        match st.putters.pop_front() {
            Some(Putter::Thread(t, item)) => {
                Self::insert(st, item, wake);
                st.unfinished += 1;
                t.grant(true);
            }
            Some(Putter::Task(a)) => {
                st.reserved += 1;
                wake.putters.push((a, true));
            }
            None => {}
        }
    }

    /// Puts without waiting.
    pub fn put_nowait(&self, item: T, wake: &mut Wakeups<T, A>) -> Result<(), (QueueError, T)> {
        let mut st = lock(&self.state);
        if st.shutdown {
            return Err((QueueError::ShutDown, item));
        }
        if !st.putters.is_empty() || !self.has_room(&st) {
            return Err((QueueError::Full, item));
        }
        st.unfinished += 1;
        Self::insert(&mut st, item, wake);
        Ok(())
    }

    /// Puts, or queues the putter: a thread with its item, or task `task`, whose item is handed
    /// back to the caller to keep until the task is granted a slot.
    pub fn put(&self, item: T, task: Option<A>, wake: &mut Wakeups<T, A>) -> Result<Put<T>, (QueueError, T)> {
        let mut st = lock(&self.state);
        if st.shutdown {
            return Err((QueueError::ShutDown, item));
        }
        if st.putters.is_empty() && self.has_room(&st) {
            st.unfinished += 1;
            Self::insert(&mut st, item, wake);
            return Ok(Put::Done);
        }
        if let Some(a) = task {
            st.putters.push_back(Putter::Task(a));
            return Ok(Put::TaskQueued(item));
        }
        let t = Arc::new(ThreadWaiter::default());
        st.putters.push_back(Putter::Thread(Arc::clone(&t), item));
        Ok(Put::ThreadWait(t))
    }

    /// A task putter granted a slot inserts its item.
    pub fn commit_reserved(&self, item: T, wake: &mut Wakeups<T, A>) {
        let mut st = lock(&self.state);
        st.reserved -= 1;
        st.unfinished += 1;
        Self::insert(&mut st, item, wake);
    }

    /// A task putter granted a slot was cancelled before inserting: pass the slot on.
    pub fn release_reservation(&self, wake: &mut Wakeups<T, A>) {
        let mut st = lock(&self.state);
        st.reserved -= 1;
        Self::refill(&mut st, wake);
    }

    /// A queued task (getter, putter or joiner) was cancelled before anything reached it:
    /// drop it. `is_it` identifies its handle.
    pub fn forget(&self, mut is_it: impl FnMut(&A) -> bool) {
        let mut st = lock(&self.state);
        st.putters.retain(|p| !matches!(p, Putter::Task(a) if is_it(a)));
        forget(&mut st.getters, &mut is_it);
        forget(&mut st.joiners, &mut is_it);
    }

    /// Gets without waiting.
    pub fn get_nowait(&self, wake: &mut Wakeups<T, A>) -> Result<T, QueueError> {
        let mut st = lock(&self.state);
        match self.pop(&mut st) {
            Some(item) => {
                Self::refill(&mut st, wake);
                Ok(item)
            }
            None if st.shutdown => Err(QueueError::ShutDown),
            None => Err(QueueError::Empty),
        }
    }

    /// Gets, or queues the getter.
    pub fn get(&self, task: Option<A>, wake: &mut Wakeups<T, A>) -> Result<Attempt<Got<T>>, QueueError> {
        let mut st = lock(&self.state);
        if let Some(item) = self.pop(&mut st) {
            Self::refill(&mut st, wake);
            return Ok(Attempt::Ready(Some(item)));
        }
        if st.shutdown {
            return Err(QueueError::ShutDown);
        }
        Ok(Attempt::Queued(queue_waiter(&mut st.getters, task)))
    }

    /// A task getter that was handed `item` turned out to be cancelled: the item goes back to the
    /// front (to the next getter, if one waits). Its `unfinished` count stays.
    pub fn give_back(&self, item: T, wake: &mut Wakeups<T, A>) {
        let mut st = lock(&self.state);
        match (st.getters.pop_front(), &mut st.items) {
            (Some(g), _) => wake.getters.extend(g.hand(Some(item))),
            (None, Items::Deque(d)) if self.order == Order::Fifo => d.push_front(item),
            (None, items) => items.push(item),
        }
    }

    /// A thread getter stops waiting; `Some` if an item (or the shutdown) reached it anyway.
    pub fn abandon_get(&self, t: &Arc<ThreadWaiter<Got<T>>>) -> Option<Got<T>> {
        abandon(&mut lock(&self.state).getters, t)
    }

    /// A thread putter stops waiting: `Some(true)` if its item went in anyway, `Some(false)` if
    /// the queue shut down, else its item comes back.
    pub fn abandon_put(&self, t: &Arc<ThreadWaiter<bool>>) -> Result<bool, T> {
        let mut st = lock(&self.state);
        if let Some(done) = t.take() {
            return Ok(done);
        }
        let pos = st
            .putters
            .iter()
            .position(|p| matches!(p, Putter::Thread(w, _) if Arc::ptr_eq(w, t)));
        match pos.and_then(|i| st.putters.remove(i)) {
            Some(Putter::Thread(_, item)) => Err(item),
            _ => unreachable!("a thread putter not granted is still queued"),
        }
    }

    pub fn task_done(&self, wake: &mut Wakeups<T, A>) -> Result<(), QueueError> {
        let mut st = lock(&self.state);
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
    pub fn join(&self, task: Option<A>) -> Attempt<()> {
        let mut st = lock(&self.state);
        if st.unfinished == 0 {
            return Attempt::Ready(());
        }
        Attempt::Queued(queue_waiter(&mut st.joiners, task))
    }

    pub fn abandon_join(&self, t: &Arc<ThreadWaiter<()>>) -> bool {
        abandon(&mut lock(&self.state).joiners, t).is_some()
    }

    /// Shuts the queue down (3.13 semantics): puts fail from now on; gets fail once it is empty,
    /// at once with `immediate`, which also drops the items (marking them done). Waiting putters
    /// and, where no item is left for them, waiting getters wake with the shutdown.
    pub fn shutdown(&self, immediate: bool, wake: &mut Wakeups<T, A>) -> Vec<T> {
        let mut st = lock(&self.state);
        st.shutdown = true;
        let dropped: Vec<T> = if immediate { st.items.drain() } else { Vec::new() };
        st.unfinished = st.unfinished.saturating_sub(dropped.len());
        if st.items.len() == 0 {
            for g in st.getters.drain(..) {
                wake.getters.extend(g.hand(None));
            }
        }
        for p in st.putters.drain(..) {
            match p {
                Putter::Thread(t, _) => t.grant(false),
                Putter::Task(a) => wake.putters.push((a, false)),
            }
        }
        if st.unfinished == 0 {
            for j in st.joiners.drain(..) {
                wake.joiners.extend(j.hand(()).map(|(a, ())| a));
            }
        }
        dropped
    }

    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        lock(&self.state).shutdown
    }

    /// `(items, unfinished, getters waiting, putters waiting)`.
    #[must_use]
    pub fn stats(&self) -> (usize, usize, usize, usize) {
        let st = lock(&self.state);
        (st.items.len(), st.unfinished, st.getters.len(), st.putters.len())
    }

    #[must_use]
    pub fn qsize(&self) -> usize {
        lock(&self.state).items.len()
    }

    #[must_use]
    pub fn is_full(&self) -> bool {
        let st = lock(&self.state);
        !self.has_room(&st)
    }
}
