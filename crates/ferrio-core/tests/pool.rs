//! The pool without Python: every job runs exactly once, bounds hold, idle exit races lose nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ferrio_core::pool::Outcome;
use ferrio_core::{Limiter, Pool, PoolConfig};

type Job = Box<dyn FnOnce() + Send>;

fn pool(max_workers: usize, idle_timeout: Duration) -> Pool<Job> {
    let config = PoolConfig {
        max_workers,
        idle_timeout,
        thread_name_prefix: "t".into(),
        ..PoolConfig::default()
    };
    Pool::new(config, |ctx: &ferrio_core::WorkerCtx<Job>| {
        while let Some(first) = ctx.next() {
            ctx.spread();
            let batch = Instant::now();
            let mut cur = first;
            loop {
                (cur.job)();
                ctx.finish(cur.at, Outcome::Completed);
                match ctx.next_in_batch(batch) {
                    Some(n) => cur = n,
                    None => break,
                }
            }
        }
    })
}

/// Submits a job that blocks until the returned sender is sent to (or 10 s pass), and returns once
/// a worker runs it.
fn occupy_a_worker(p: &Pool<Job>) -> mpsc::Sender<()> {
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel();
    p.submit(Box::new(move || {
        started_tx.send(()).unwrap();
        gate_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }))
    .unwrap_or_else(|_| panic!());
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    gate_tx
}

#[test]
fn every_job_runs_exactly_once_from_many_submitters() {
    let p = pool(4, Duration::from_secs(5));
    let hits: Arc<Vec<AtomicUsize>> = Arc::new((0..40_000).map(|_| AtomicUsize::new(0)).collect());
    thread::scope(|s| {
        for t in 0..4 {
            let (p, hits) = (&p, &hits);
            s.spawn(move || {
                for i in (t..40_000).step_by(4) {
                    let hits = Arc::clone(hits);
                    p.submit(Box::new(move || {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }))
                    .unwrap_or_else(|_| panic!("submit failed"));
                }
            });
        }
    });
    assert!(p.shutdown(false).is_empty());
    p.join();
    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    let s = p.stats();
    assert_eq!((s.completed, s.workers_alive, s.queued), (40_000, 0, 0));
}

#[test]
fn blocking_jobs_fan_out_to_max_workers_and_no_further() {
    let p = pool(6, Duration::from_secs(5));
    let barrier = Arc::new(Barrier::new(6));
    let (tx, rx) = mpsc::channel();
    for _ in 0..12 {
        let (barrier, tx) = (Arc::clone(&barrier), tx.clone());
        // Six at a time must be running at once to pass the barrier: proves the fan-out.
        p.submit(Box::new(move || {
            barrier.wait();
            tx.send(thread::current().name().unwrap().to_owned()).unwrap();
        }))
        .unwrap_or_else(|_| panic!("submit failed"));
    }
    let names: Vec<String> = (0..12)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("deadlock"))
        .collect();
    assert!(
        names
            .iter()
            .all(|n| ["t-0", "t-1", "t-2", "t-3", "t-4", "t-5"].contains(&n.as_str())),
        "{names:?}"
    );
    assert!(p.stats().workers_alive <= 6);
    assert!(p.shutdown(false).is_empty());
    p.join();
}

#[test]
fn idle_workers_exit_and_new_jobs_start_new_ones() {
    let p = pool(2, Duration::from_millis(20));
    let (tx, rx) = mpsc::channel();
    let t = tx.clone();
    p.submit(Box::new(move || t.send(1).unwrap()))
        .unwrap_or_else(|_| panic!());
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    // Polling a counter: the idle timeout has no event to hand off on.
    while p.stats().workers_alive > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(p.stats().workers_alive, 0);
    p.submit(Box::new(move || tx.send(2).unwrap()))
        .unwrap_or_else(|_| panic!());
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(2));
    assert!(p.shutdown(false).is_empty());
    p.join();
}

#[test]
fn idle_exit_racing_submissions_loses_nothing() {
    // A zero idle timeout makes every idle moment an exit decision racing the next submission.
    let p = pool(3, Duration::ZERO);
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..5_000u32 {
        let done = Arc::clone(&done);
        p.submit(Box::new(move || {
            done.fetch_add(1, Ordering::Relaxed);
        }))
        .unwrap_or_else(|_| panic!());
        if i % 7 == 0 {
            thread::yield_now();
        }
    }
    assert!(p.shutdown(false).is_empty());
    p.join();
    assert_eq!(done.load(Ordering::Relaxed), 5_000);
}

#[test]
fn shutdown_runs_queued_jobs_or_hands_them_back() {
    let p = pool(1, Duration::from_secs(5));
    let gate_tx = occupy_a_worker(&p);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let ran = Arc::clone(&ran);
        p.submit(Box::new(move || {
            ran.fetch_add(1, Ordering::Relaxed);
        }))
        .unwrap_or_else(|_| panic!());
    }
    let handed_back = p.shutdown(true);
    assert_eq!(handed_back.len(), 5);
    assert!(
        p.submit(Box::new(|| {})).is_err(),
        "submissions after shutdown are rejected"
    );
    gate_tx.send(()).unwrap();
    p.join();
    assert_eq!(ran.load(Ordering::Relaxed), 0);
}

#[test]
fn limiter_bounds_concurrency_and_passes_tokens_in_order() {
    let p = pool(8, Duration::from_secs(5));
    let limiter: Arc<Limiter<Job>> = Arc::new(Limiter::new(2));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    for i in 0..20 {
        let (running, peak, tx, lim) = (
            Arc::clone(&running),
            Arc::clone(&peak),
            tx.clone(),
            Arc::clone(&limiter),
        );
        limiter
            .submit(
                p.handle(),
                Box::new(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(2));
                    running.fetch_sub(1, Ordering::SeqCst);
                    tx.send(i).unwrap();
                    let left = lim.release(|_| false);
                    assert!(left.stale.is_empty() && left.rejected.is_empty());
                }),
            )
            .unwrap_or_else(|_| panic!());
    }
    let order: Vec<i32> = (0..20)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("deadlock"))
        .collect();
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    // Admission is FIFO: job i cannot finish before job i-2 started.
    for (pos, i) in order.iter().enumerate() {
        assert!(usize::try_from(*i).unwrap() <= pos + 2, "{order:?}");
    }
    assert!(p.shutdown(false).is_empty());
    p.join();
    assert_eq!(limiter.stats().borrowed_tokens, 0);
}

#[test]
fn join_until_times_out_while_a_job_runs_and_succeeds_once_it_ends() {
    let p = pool(2, Duration::from_secs(5));
    let gate_tx = occupy_a_worker(&p);
    assert!(p.shutdown(false).is_empty());
    // The slices the bindings wait in, to answer Ctrl-C between them.
    assert!(!p.join_until(Some(Instant::now() + Duration::from_millis(20))));
    gate_tx.send(()).unwrap();
    assert!(p.join_until(Some(Instant::now() + Duration::from_secs(10))), "deadlock");
    assert_eq!(p.stats().workers_alive, 0);
}

#[test]
fn a_worker_joining_its_own_pool_does_not_wait_for_itself() {
    let p = Arc::new(pool(1, Duration::from_secs(5)));
    let (tx, rx) = mpsc::channel();
    let me = Arc::clone(&p);
    p.submit(Box::new(move || {
        drop(me.shutdown(false));
        tx.send(me.join_until(Some(Instant::now() + Duration::from_secs(10))))
            .unwrap();
    }))
    .unwrap_or_else(|_| panic!());
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    p.join();
}

/// The stack size of the calling thread, as glibc reports it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn my_stack_size() -> usize {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    let mut size = 0;
    // SAFETY: pthread_getattr_np initialises `attr`, which is read and then destroyed once.
    unsafe {
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()), 0);
        assert_eq!(libc::pthread_attr_getstacksize(attr.as_ptr(), &raw mut size), 0);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
    }
    size
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn workers_get_the_stack_a_thread_started_by_the_c_library_gets() {
    // Rust's own default is 2 MiB; C code that runs on any other thread must run on a worker.
    let native = {
        extern "C" fn probe(out: *mut libc::c_void) -> *mut libc::c_void {
            // SAFETY: `out` points at the usize the spawner below keeps alive until the join.
            unsafe { *out.cast::<usize>() = my_stack_size() };
            std::ptr::null_mut()
        }
        let mut size = 0usize;
        let mut t: libc::pthread_t = 0;
        // SAFETY: default attributes; `size` outlives the thread, which is joined right away.
        unsafe {
            assert_eq!(
                libc::pthread_create(&raw mut t, std::ptr::null(), probe, (&raw mut size).cast()),
                0
            );
            assert_eq!(libc::pthread_join(t, std::ptr::null_mut()), 0);
        }
        size
    };
    let p = pool(1, Duration::from_secs(5));
    let (tx, rx) = mpsc::channel();
    p.submit(Box::new(move || tx.send(my_stack_size()).unwrap()))
        .unwrap_or_else(|_| panic!());
    let worker = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(worker >= native, "worker stack {worker}, C thread stack {native}");
    assert!(
        worker < native + (1 << 20),
        "worker stack {worker}, C thread stack {native}"
    );
    assert!(p.shutdown(false).is_empty());
    p.join();
}

#[cfg(target_os = "linux")]
#[test]
fn a_forked_child_neither_locks_nor_uses_its_parents_pool() {
    let p = pool(2, Duration::from_secs(5));
    let (tx, rx) = mpsc::channel();
    p.submit(Box::new(move || tx.send(()).unwrap()))
        .unwrap_or_else(|_| panic!());
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // SAFETY: the child touches only the pool, whose fork handling is under test, and leaves with
    // _exit, so no other state inherited from the parent (the test harness's) is used.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let rejected = matches!(
            p.submit(Box::new(|| {})),
            Err(ferrio_core::Rejected {
                reason: ferrio_core::pool::RejectReason::Forked,
                ..
            })
        );
        let ok = rejected && p.is_shutdown() && p.shutdown(true).is_empty() && p.join_until(None);
        drop(p); // leaks: never locks, never joins the parent's threads
                 // SAFETY: ends the child at once.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
    assert!(p.shutdown(false).is_empty());
    p.join();
}
