//! A thread pool whose workers run a body supplied by the embedder.
//!
//! The pool owns the threads, the FIFO job queue and the bookkeeping; what a worker does with a job
//! is the embedder's business. The embedder's body loops over [`WorkerCtx::next`] (which blocks,
//! so the Python bindings call it with the GIL released) and, while it still holds its locks,
//! over [`WorkerCtx::next_in_batch`], which never blocks and stops after a time budget.
//!
//! At most one worker is *searching* at a time: spinning briefly for the next job after finishing
//! one, or woken (or just spawned) and not yet holding a job. A submission wakes or spawns a worker
//! only when nobody is searching, so a burst of submissions costs the submitting thread (the
//! event loop) at most one wake-up, and a loop that submits right after its previous result
//! arrives usually finds the spinning worker and wakes nobody. Work spreads from there: when a
//! worker starts a batch it calls [`WorkerCtx::spread`], which wakes one more worker if jobs are
//! still queued, and so on down the chain. Tiny jobs thus stay on one or two threads (one GIL
//! holder drains the queue in a batch) while blocking jobs fan out to `max_workers` threads.
//!
//! Sleepers are kept LIFO (warm threads stay busy, cold ones reach their idle timeout) and woken
//! by name with a flag set under the pool lock, so an idle-timeout exit never races a submission:
//! both decide under the same lock.
//!
//! Joining waits on a condition variable that each worker signals as its body returns, with an
//! optional deadline, so the embedder can wait in slices and answer Ctrl-C between them.
//! A pool inherited by a forked child belongs to its parent ([`crate::fork`]): the child never
//! locks it, and dropping it there leaks it. Once the embedder calls [`refuse_new_work`] (at
//! interpreter exit) every pool refuses submissions, so no thread starts after the final join.
//! Memory whose size callers decide (the queue, the lists of workers) is reserved fallibly, and a
//! thread is started only while the address space has room for its stack and some headroom: a
//! process at its memory limit gets an error back, never an abort.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::fork::Owner;
use crate::stats::{Histogram, Percentiles};

/// How a pool is shaped.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The most threads alive at once; at least 1.
    pub max_workers: usize,
    /// An idle worker exits after this long without work.
    pub idle_timeout: Duration,
    /// Threads are named `{prefix}-{n}`.
    pub thread_name_prefix: String,
    /// How long a worker may keep running queued jobs back to back ([`WorkerCtx::next_in_batch`]).
    pub batch_budget: Duration,
    /// How long a worker that just finished a job spins for the next one before parking.
    pub spin: Duration,
    /// Each worker's stack size in bytes; `None` for [`default_stack_size`].
    pub stack_size: Option<usize>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_workers: 4,
            idle_timeout: Duration::from_secs(10),
            thread_name_prefix: "ferrio-worker".to_owned(),
            // NOTE: 1 ms lets a worker run ~5,000 no-op Python calls per GIL hold, while the event
            // loop waits no longer than it would for CPython's own 5 ms switch interval.
            batch_budget: Duration::from_millis(1),
            // NOTE: a no-op round trip through the event loop took 20-60 us here; spinning 100 us
            // after a job lets a loop that awaits results one by one skip the futex wake-up.
            spin: Duration::from_micros(100),
            stack_size: None,
        }
    }
}

/// The stack a thread started by the platform's C library gets, which is what the Python
/// interpreter gives its own threads unless `threading.stack_size()` was set: C code (recursive
/// `repr`, parsers) that works on a `threading.Thread` must work on a worker too, and Rust's own
/// default is 2 MiB.
///
/// On Linux (glibc, musl) that is the default thread attribute, which glibc derives from
/// `RLIMIT_STACK` (8 MiB on most systems; 2 MiB when unlimited). The interpreter overrides the
/// platform on macOS (16 MiB) and FreeBSD (4 MiB) with its `THREAD_STACK_SIZE`; so do we.
#[must_use]
pub fn default_stack_size() -> Option<usize> {
    if cfg!(target_os = "macos") {
        return Some(0x100_0000);
    }
    if cfg!(target_os = "freebsd") {
        return Some(0x40_0000);
    }
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: `attr` is initialised by pthread_attr_init before it is read, and destroyed once.
    unsafe {
        if libc::pthread_attr_init(attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut size = 0;
        let ok = libc::pthread_attr_getstacksize(attr.as_ptr(), &raw mut size) == 0;
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        (ok && size > 0).then_some(size)
    }
}

/// Address space a new thread needs beyond its stack before it can run any code: its TLS blocks,
/// its malloc arena, the interpreter's thread state. Without it, a thread started at the memory
/// limit aborts the process inside glibc or Rust's allocator instead of failing to start.
// NOTE: 3000 blocking jobs on ThreadPool(10**9) under RLIMIT_AS set 20 to 400 MiB above the
// process's size: before this check, runs aborted ("cannot allocate memory for thread-local
// data", "memory allocation of 16 bytes failed"); with the stack alone checked, one hung (a
// MemoryError inside threading.Condition left its lock held); with 4 MiB or 32 MiB of headroom,
// 36 of 36 runs each finished. 32 MiB leaves the jobs themselves room to allocate.
const SPAWN_HEADROOM: usize = 32 << 20;

/// Fails with ENOMEM unless `bytes` of address space can be mapped now.
fn check_address_space(bytes: usize) -> io::Result<()> {
    // SAFETY: maps fresh anonymous memory nobody else refers to, and unmaps exactly that.
    unsafe {
        let p = libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        libc::munmap(p, bytes);
    }
    Ok(())
}

/// Whether a new thread with a stack of `stack` bytes fits under `RLIMIT_AS`, with room for what
/// it needs before it runs ([`SPAWN_HEADROOM`]): the check the pool makes before each spawn, for
/// other threads of ferrio's.
pub fn check_thread_room(stack: usize) -> io::Result<()> {
    check_address_space(stack.saturating_add(SPAWN_HEADROOM))
}

/// Set once the embedder is going away: see [`refuse_new_work`].
static REFUSING: AtomicBool = AtomicBool::new(false);

/// From now on every pool, existing or new, refuses submissions with [`RejectReason::Exiting`].
/// The bindings call it when the interpreter starts to exit, before the final join, so no worker
/// thread can start after that join.
pub fn refuse_new_work() {
    REFUSING.store(true, Ordering::SeqCst);
}

/// Whether [`refuse_new_work`] was called.
#[must_use]
pub fn refusing_new_work() -> bool {
    REFUSING.load(Ordering::SeqCst)
}

/// Why a job was handed back instead of queued.
#[derive(Debug)]
pub enum RejectReason {
    /// The pool was shut down.
    Shutdown,
    /// No worker was alive and the OS refused a new thread.
    Spawn(io::Error),
    /// The queue could not grow.
    OutOfMemory,
    /// The process is exiting ([`refuse_new_work`]).
    Exiting,
    /// The pool was inherited from the parent process by `fork()`.
    Forked,
}

/// A job the pool did not accept, handed back to the caller.
#[derive(Debug)]
pub struct Rejected<J> {
    pub job: J,
    pub reason: RejectReason,
}

/// How a job ended, for the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    /// Skipped before it ran: its caller no longer wanted it.
    Cancelled,
}

/// A snapshot of a pool's state and history.
#[derive(Clone, Debug, Default)]
pub struct PoolStats {
    pub max_workers: usize,
    pub workers_alive: usize,
    pub workers_idle: usize,
    pub queued: usize,
    pub running: usize,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub queue_wait: Percentiles,
    pub run_time: Percentiles,
}

struct Queued<J> {
    job: J,
    enqueued: Instant,
}

struct Sleeper {
    id: usize,
    thread: Thread,
    woken: Arc<AtomicBool>,
}

struct State<J> {
    queue: VecDeque<Queued<J>>,
    /// Idle workers, most recently idle last.
    idle: Vec<Sleeper>,
    alive: usize,
    /// Workers woken or spawned that have not yet looked at the queue, plus a spinning worker.
    searching: usize,
    shutdown: bool,
    handles: Vec<JoinHandle<()>>,
    spawned: usize,
    /// Threads started whose body has not returned yet (what `join` waits for).
    threads: usize,
}

type Body<J> = dyn Fn(&WorkerCtx<J>) + Send + Sync;

struct Shared<J> {
    state: Mutex<State<J>>,
    /// Signalled (under `state`'s lock) each time a worker's body returns.
    exits: Condvar,
    /// The process that made the pool; in any other the state is never touched.
    owner: Owner,
    config: PoolConfig,
    /// `config.stack_size`, or the default resolved once.
    stack_size: Option<usize>,
    body: Box<Body<J>>,
    running: AtomicUsize,
    /// `state.queue.len()`, readable without the lock by a spinning worker.
    queued: AtomicUsize,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    queue_wait: Histogram,
    run_time: Histogram,
}

impl<J> Shared<J> {
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        // A panic while holding this lock is a bug in this file; the state is still consistent
        // enough to shut down, so keep going rather than cascade panics into every worker.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

thread_local! {
    /// The `Shared` of the pool this thread works for (as an address), so a worker that joins its
    /// own pool does not wait for itself.
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

/// A cloneable handle that submits to a pool (what a [`crate::Limiter`] keeps for its waiters).
pub struct PoolHandle<J>(Arc<Shared<J>>);

impl<J> Clone for PoolHandle<J> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// The owner of a pool: dropping it shuts the pool down without waiting.
pub struct Pool<J: Send + 'static> {
    handle: PoolHandle<J>,
}

/// Threads of pools dropped before their workers had exited, pushed by `Pool::drop` and taken by
/// [`join_orphans`]. A lock-free stack rather than a mutex: a forked child must be able to read it
/// even if a parent thread was pushing at the fork, and an atomic cannot be left held.
static ORPHANS: AtomicPtr<Orphans> = AtomicPtr::new(ptr::null_mut());

struct Orphans {
    owner: Owner,
    handles: Vec<JoinHandle<()>>,
    next: *mut Orphans,
}

fn push_orphans(handles: Vec<JoinHandle<()>>) {
    if handles.is_empty() {
        return;
    }
    let node = Box::into_raw(Box::new(Orphans {
        owner: Owner::current(),
        handles,
        next: ptr::null_mut(),
    }));
    let mut head = ORPHANS.load(Ordering::Acquire);
    loop {
        // SAFETY: `node` is ours alone until the exchange below publishes it.
        unsafe { (*node).next = head };
        match ORPHANS.compare_exchange_weak(head, node, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(now) => head = now,
        }
    }
}

/// Takes every orphan list; those of another process (a forked child's parent) are leaked.
fn take_orphans() -> Vec<JoinHandle<()>> {
    let mut node = ORPHANS.swap(ptr::null_mut(), Ordering::AcqRel);
    let mut out = Vec::new();
    while !node.is_null() {
        // SAFETY: the swap made this thread the only owner of the whole list, whose nodes were
        // made by `Box::into_raw` and published complete (Release in the push, Acquire here).
        let orphans = unsafe { Box::from_raw(node) };
        node = orphans.next;
        if orphans.owner.is_current() {
            out.extend(orphans.handles);
        } else {
            // The parent's threads do not exist here: joining (or detaching) them is undefined.
            std::mem::forget(orphans.handles);
        }
    }
    out
}

/// Joins the threads of every pool dropped before its workers had exited. Call with the
/// embedder's locks released, before the embedder goes away (the bindings call it at exit).
pub fn join_orphans() {
    join_all(take_orphans());
}

/// In a forked child: forgets the parent's orphaned threads, which do not exist here. (Also done
/// by [`join_orphans`]; calling this early just frees the list sooner.)
pub fn forget_orphans_after_fork() {
    push_orphans(take_orphans());
}

fn join_all(handles: Vec<JoinHandle<()>>) {
    let me = thread::current().id();
    for h in handles {
        // A job that shuts down its own pool must not wait for itself.
        if h.thread().id() != me {
            let _ = h.join();
        }
    }
}

impl<J: Send + 'static> Pool<J> {
    /// Creates a pool; no thread starts until the first submission.
    pub fn new(config: PoolConfig, body: impl Fn(&WorkerCtx<J>) + Send + Sync + 'static) -> Self {
        assert!(config.max_workers > 0, "max_workers must be at least 1");
        assert!(
            !config.thread_name_prefix.contains('\0'),
            "thread_name_prefix must not contain NUL"
        );
        let shared = Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                idle: Vec::new(),
                alive: 0,
                searching: 0,
                shutdown: false,
                handles: Vec::new(),
                spawned: 0,
                threads: 0,
            }),
            exits: Condvar::new(),
            owner: Owner::current(),
            stack_size: config.stack_size.or_else(default_stack_size),
            config,
            body: Box::new(body),
            running: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            queue_wait: Histogram::default(),
            run_time: Histogram::default(),
        };
        Self {
            handle: PoolHandle(Arc::new(shared)),
        }
    }

    /// A handle that can submit to this pool from elsewhere.
    #[must_use]
    pub fn handle(&self) -> &PoolHandle<J> {
        &self.handle
    }

    /// Leaks the pool without touching its lock: in a forked child the lock may be held by a
    /// thread that does not exist there, and the parent's threads must not be joined.
    pub fn forget_after_fork(self) {
        std::mem::forget(self);
    }
}

impl<J: Send + 'static> std::ops::Deref for Pool<J> {
    type Target = PoolHandle<J>;
    fn deref(&self) -> &PoolHandle<J> {
        &self.handle
    }
}

impl<J: Send + 'static> Drop for Pool<J> {
    fn drop(&mut self) {
        if !self.handle.0.owner.is_current() {
            // A forked child: the lock may be held by a parent thread that does not exist here, and
            // the state behind it may be half-updated. Leak it all (module docs).
            std::mem::forget(Arc::clone(&self.handle.0));
            return;
        }
        drop(self.shutdown(false));
        push_orphans(std::mem::take(&mut self.handle.0.lock().handles));
    }
}

impl<J: Send + 'static> PoolHandle<J> {
    /// The configuration the pool was built with.
    #[must_use]
    pub fn config(&self) -> &PoolConfig {
        &self.0.config
    }

    /// Whether the pool belongs to another process (it was inherited through `fork()`).
    fn foreign(&self) -> bool {
        !self.0.owner.is_current()
    }

    /// Queues a job, waking or starting a worker for it unless one is already searching.
    pub fn submit(&self, job: J) -> Result<(), Rejected<J>> {
        if self.foreign() {
            return Err(Rejected {
                job,
                reason: RejectReason::Forked,
            });
        }
        let mut st = self.0.lock();
        // Exiting first: the exit-time join shuts every pool down, and "interpreter shutdown"
        // says why better than "the pool was shut down".
        let refused = if refusing_new_work() {
            Some(RejectReason::Exiting)
        } else if st.shutdown {
            Some(RejectReason::Shutdown)
        } else if st.queue.try_reserve(1).is_err() {
            Some(RejectReason::OutOfMemory)
        } else {
            None
        };
        if let Some(reason) = refused {
            return Err(Rejected { job, reason });
        }
        st.queue.push_back(Queued {
            job,
            enqueued: Instant::now(),
        });
        self.0.queued.fetch_add(1, Ordering::Release);
        if st.searching > 0 {
            return Ok(());
        }
        match self.wake_one(&mut st) {
            Err(e) if st.alive == 0 => {
                let queued = st.queue.pop_back().expect("the job pushed above");
                self.0.queued.fetch_sub(1, Ordering::Release);
                Err(Rejected {
                    job: queued.job,
                    reason: RejectReason::Spawn(e),
                })
            }
            // Workers alive will get to it.
            _ => Ok(()),
        }
    }

    /// Wakes the most recently idle worker, or spawns one if there is room; it searches.
    fn wake_one(&self, st: &mut MutexGuard<'_, State<J>>) -> io::Result<()> {
        if let Some(sleeper) = st.idle.pop() {
            // Set under the lock so the sleeper's timeout path sees it (module docs).
            sleeper.woken.store(true, Ordering::Release);
            st.searching += 1;
            sleeper.thread.unpark();
        } else if st.alive < self.0.config.max_workers {
            self.spawn(st)?;
            st.searching += 1;
        }
        Ok(())
    }

    fn spawn(&self, st: &mut State<J>) -> io::Result<()> {
        st.handles.retain(|h| !h.is_finished());
        let no_memory = || io::Error::from_raw_os_error(libc::ENOMEM);
        // Room for every list this worker will be in, reserved before it exists.
        st.handles.try_reserve(1).map_err(|_| no_memory())?;
        st.idle
            .try_reserve((st.alive + 1).saturating_sub(st.idle.len()))
            .map_err(|_| no_memory())?;
        let stack = self.0.stack_size;
        check_address_space(stack.unwrap_or(2 << 20).saturating_add(SPAWN_HEADROOM))?;
        let n = st.spawned;
        let shared = Arc::clone(&self.0);
        let name = format!("{}-{}", self.0.config.thread_name_prefix, n);
        let mut builder = thread::Builder::new().name(name);
        if let Some(bytes) = stack {
            builder = builder.stack_size(bytes);
        }
        // Made here, just after the address-space check, rather than by the new thread: a worker
        // that starts late, once other threads have filled the heap, must not need to allocate.
        let woken = Arc::new(AtomicBool::new(false));
        let handle = builder.spawn(move || {
            // Dropped last (locals drop in reverse): counts this thread out once all else is done.
            let _exit = ExitSignal(Arc::clone(&shared));
            WORKER_OF.with(|w| w.set(Arc::as_ptr(&shared).cast::<()>() as usize));
            let ctx = WorkerCtx {
                shared,
                id: n,
                woken,
                searching: AtomicBool::new(true),
                exited: AtomicBool::new(false),
            };
            // A panic is the embedder's bug; it ends this worker only (`WorkerCtx::drop` keeps the
            // counts honest and a replacement starts on the next submission), never the process.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (ctx.shared.body)(&ctx)));
        })?;
        st.spawned += 1;
        st.alive += 1;
        st.threads += 1;
        st.handles.push(handle);
        Ok(())
    }

    /// Stops accepting jobs and wakes every idle worker so it can exit. Jobs already queued still
    /// run unless `cancel_queued`, in which case they are handed back, in order, never to run.
    #[must_use = "jobs handed back must be resolved by the caller"]
    pub fn shutdown(&self, cancel_queued: bool) -> Vec<J> {
        if self.foreign() {
            return Vec::new();
        }
        let mut st = self.0.lock();
        st.shutdown = true;
        let dropped: Vec<J> = if cancel_queued {
            st.queue.drain(..).map(|q| q.job).collect()
        } else {
            Vec::new()
        };
        self.0.queued.fetch_sub(dropped.len(), Ordering::Release);
        let sleepers = std::mem::take(&mut st.idle);
        // Each woken sleeper counts itself out of `searching` when it wakes.
        st.searching += sleepers.len();
        for s in &sleepers {
            s.woken.store(true, Ordering::Release);
        }
        drop(st);
        for s in sleepers {
            s.thread.unpark();
        }
        dropped
    }

    /// Waits until every worker thread has exited. Call after [`Self::shutdown`], with the
    /// embedder's locks released.
    pub fn join(&self) {
        self.join_until(None);
    }

    /// Waits until every worker thread has exited, or until `deadline` (`None`: no limit); true if
    /// they all did. A worker of this pool that calls it does not wait for itself, and threads
    /// started meanwhile (to run jobs still queued) are waited for too.
    pub fn join_until(&self, deadline: Option<Instant>) -> bool {
        if self.foreign() {
            return true;
        }
        let me = usize::from(WORKER_OF.with(Cell::get) == Arc::as_ptr(&self.0).cast::<()>() as usize);
        let mut st = self.0.lock();
        while st.threads > me {
            st = match deadline {
                None => self.0.exits.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.0
                        .exits
                        .wait_timeout(st, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        let handles = std::mem::take(&mut st.handles);
        drop(st);
        // Each has returned from its body, so these joins wait only for thread teardown.
        join_all(handles);
        true
    }

    /// Whether [`Self::shutdown`] was called (always true for a pool inherited through `fork()`).
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.foreign() || self.0.lock().shutdown
    }

    /// Counts jobs dropped before a worker took them (cancelled at shutdown, or stale at a limiter).
    pub fn count_cancelled(&self, n: u64) {
        self.0.cancelled.fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot of the pool's statistics.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let (alive, idle, queued) = if self.foreign() {
            (0, 0, 0)
        } else {
            let st = self.0.lock();
            (st.alive, st.idle.len(), st.queue.len())
        };
        let sh = &self.0;
        PoolStats {
            max_workers: sh.config.max_workers,
            workers_alive: alive,
            workers_idle: idle,
            queued,
            running: sh.running.load(Ordering::Relaxed),
            completed: sh.completed.load(Ordering::Relaxed),
            failed: sh.failed.load(Ordering::Relaxed),
            cancelled: sh.cancelled.load(Ordering::Relaxed),
            queue_wait: sh.queue_wait.percentiles(),
            run_time: sh.run_time.percentiles(),
        }
    }
}

/// Counts a worker thread out of `State::threads` and wakes joiners, even if its body panicked.
struct ExitSignal<J>(Arc<Shared<J>>);

impl<J> Drop for ExitSignal<J> {
    fn drop(&mut self) {
        self.0.lock().threads -= 1;
        self.0.exits.notify_all();
    }
}

/// What a worker's body sees: its source of jobs and the place to report how they ended.
pub struct WorkerCtx<J> {
    shared: Arc<Shared<J>>,
    id: usize,
    woken: Arc<AtomicBool>,
    /// Whether this worker is counted in `State::searching`.
    searching: AtomicBool,
    exited: AtomicBool,
}

/// A job taken from the queue, with the instant it started (for [`WorkerCtx::finish`]).
pub struct Started<J> {
    pub job: J,
    pub at: Instant,
}

impl<J: Send + 'static> WorkerCtx<J> {
    /// This worker's number within its pool (`{prefix}-{n}`).
    #[must_use]
    pub fn id(&self) -> usize {
        self.id
    }

    fn start(&self, q: Queued<J>) -> Started<J> {
        let at = Instant::now();
        self.shared.queue_wait.record(at - q.enqueued);
        self.shared.running.fetch_add(1, Ordering::Relaxed);
        Started { job: q.job, at }
    }

    /// Takes the front job; the caller holds the lock.
    fn pop(&self, st: &mut State<J>) -> Option<Queued<J>> {
        let q = st.queue.pop_front()?;
        self.shared.queued.fetch_sub(1, Ordering::Release);
        Some(q)
    }

    fn stop_searching(&self, st: &mut State<J>) {
        if self.searching.swap(false, Ordering::Relaxed) {
            st.searching -= 1;
        }
    }

    /// The next job, waiting up to the idle timeout for one. `None` means this worker must exit:
    /// the pool shut down and its queue is empty, or no job came in time.
    pub fn next(&self) -> Option<Started<J>> {
        let sh = &*self.shared;
        let mut st = sh.lock();
        self.stop_searching(&mut st);
        if st.searching == 0 && st.queue.is_empty() && !st.shutdown && !sh.config.spin.is_zero() {
            // Become the searcher and spin: a job submitted meanwhile wakes nobody.
            st.searching += 1;
            self.searching.store(true, Ordering::Relaxed);
            drop(st);
            let deadline = Instant::now() + sh.config.spin;
            let mut spins = 0u32;
            while sh.queued.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
                spins += 1;
                if spins % 64 == 0 {
                    thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            st = sh.lock();
            self.stop_searching(&mut st);
        }
        let mut timed_out = false;
        loop {
            if let Some(q) = self.pop(&mut st) {
                drop(st);
                return Some(self.start(q));
            }
            if st.shutdown || timed_out {
                st.alive -= 1;
                self.exited.store(true, Ordering::Relaxed);
                return None;
            }
            if st.idle.try_reserve(1).is_err() {
                // No memory to list this worker as idle: exit instead; a later job starts another.
                st.alive -= 1;
                self.exited.store(true, Ordering::Relaxed);
                return None;
            }
            self.woken.store(false, Ordering::Relaxed);
            st.idle.push(Sleeper {
                id: self.id,
                thread: thread::current(),
                woken: Arc::clone(&self.woken),
            });
            drop(st);
            // `None`: an idle timeout too long for an `Instant` (`math.inf`) never expires.
            let deadline = Instant::now().checked_add(sh.config.idle_timeout);
            while !self.woken.load(Ordering::Acquire) {
                let Some(deadline) = deadline else {
                    thread::park();
                    continue;
                };
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                thread::park_timeout(deadline - now);
            }
            st = sh.lock();
            // `woken` is only set under the lock, so reading it here is exact: unset means we are
            // still listed as idle and nobody is counting on us.
            if self.woken.load(Ordering::Acquire) {
                // The waker counted us as searching; we are looking at the queue now.
                st.searching -= 1;
            } else {
                st.idle.retain(|s| s.id != self.id);
                timed_out = true;
            }
        }
    }

    /// Wakes (or spawns) up to two more workers while jobs are queued beyond those already
    /// searching. Call when this worker starts a batch, once it holds whatever lock its jobs
    /// need: jobs fan out to more threads only when they outlast a batch, and then in a doubling
    /// tree (each new worker wakes two), so 64 blocking jobs reach 64 threads in 6 steps while a
    /// burst of tiny jobs, drained by this worker's batch, wakes at most two.
    pub fn spread(&self) {
        if self.shared.queued.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut st = self.shared.lock();
        let handle = PoolHandle(Arc::clone(&self.shared));
        for _ in 0..2 {
            if st.queue.len() <= st.searching {
                break;
            }
            let before = st.searching;
            if handle.wake_one(&mut st).is_err() || st.searching == before {
                break; // no idle worker and no room for another
            }
        }
    }

    /// Another queued job, without waiting, while `batch_start` is within the batch budget.
    pub fn next_in_batch(&self, batch_start: Instant) -> Option<Started<J>> {
        if batch_start.elapsed() >= self.shared.config.batch_budget {
            return None;
        }
        if self.shared.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let q = self.pop(&mut self.shared.lock())?;
        Some(self.start(q))
    }

    /// Records how a job taken from [`Self::next`] or [`Self::next_in_batch`] ended.
    pub fn finish(&self, started: Instant, outcome: Outcome) {
        let sh = &*self.shared;
        sh.running.fetch_sub(1, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Completed => &sh.completed,
            Outcome::Failed => &sh.failed,
            Outcome::Cancelled => &sh.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if outcome != Outcome::Cancelled {
            sh.run_time.record(started.elapsed());
        }
    }
}

impl<J> Drop for WorkerCtx<J> {
    fn drop(&mut self) {
        // The body returned or panicked without `next` handing it `None`: keep `alive` honest so
        // the pool starts a replacement.
        if !self.exited.load(Ordering::Relaxed) {
            let mut st = self.shared.lock();
            st.alive -= 1;
            if self.searching.swap(false, Ordering::Relaxed) {
                st.searching -= 1;
            }
            st.idle.retain(|s| s.id != self.id);
        }
    }
}
