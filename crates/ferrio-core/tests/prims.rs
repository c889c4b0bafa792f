//! The primitives without Python: hand-off order, abandon races, give-back of cancelled hand-offs.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ferrio_core::prims::{Attempt, Order, Put, Queue, QueueError, Semaphore, Wakeups};

const LONG: Duration = Duration::from_secs(10);

#[test]
fn semaphore_serves_threads_and_tasks_in_arrival_order() {
    let sem: Arc<Semaphore<&'static str>> = Arc::new(Semaphore::new(1, Some(1)));
    assert!(sem.try_acquire());
    let Attempt::Queued(Some(first)) = sem.acquire(None) else {
        panic!("should queue")
    };
    assert!(matches!(sem.acquire(Some("task")), Attempt::Queued(None)));
    assert!(!sem.try_acquire(), "no barging past queued waiters");
    assert_eq!(sem.release(), Ok(None)); // to the thread
    assert_eq!(first.wait(LONG), Some(()));
    assert_eq!(sem.release(), Ok(Some("task"))); // to the task: the embedder resolves it
    assert_eq!(sem.release(), Ok(None)); // the task "gave it back" (cancelled): free again
    assert_eq!(sem.release(), Err(ferrio_core::prims::Overflow));
}

#[test]
fn an_abandoning_thread_keeps_a_permit_that_reached_it() {
    let sem: Semaphore<()> = Semaphore::new(0, None);
    let Attempt::Queued(Some(w)) = sem.acquire(None) else {
        panic!()
    };
    assert_eq!(sem.release(), Ok(None));
    assert!(sem.abandon(&w), "the hand-off won the race with the timeout");
    let Attempt::Queued(Some(w2)) = sem.acquire(None) else {
        panic!()
    };
    assert!(!sem.abandon(&w2), "nothing reached it: it leaves the queue");
    assert_eq!(sem.stats(), (0, 0));
}

#[test]
fn queue_hands_items_directly_and_takes_cancelled_ones_back_in_front() {
    let q: Queue<u32, &'static str> = Queue::new(0, Order::Fifo);
    let mut wake = Wakeups::default();
    assert!(matches!(q.get(Some("g1"), &mut wake), Ok(Attempt::Queued(None))));
    assert!(matches!(q.get(Some("g2"), &mut wake), Ok(Attempt::Queued(None))));
    q.put_nowait(1, &mut wake).unwrap();
    assert_eq!(wake.getters, vec![("g1", Some(1))]);
    // g1 was cancelled before it resumed: the item goes to the next getter.
    let mut wake = Wakeups::default();
    q.give_back(1, &mut wake);
    assert_eq!(wake.getters, vec![("g2", Some(1))]);
    // And with no getter left, back to the front of the queue.
    let mut wake = Wakeups::default();
    q.put_nowait(2, &mut wake).unwrap();
    q.give_back(1, &mut wake);
    assert_eq!(q.get_nowait(&mut wake), Ok(1));
    assert_eq!(q.get_nowait(&mut wake), Ok(2));
}

#[test]
fn a_blocked_thread_putter_is_refilled_in_order_and_task_putters_reserve() {
    let q: Arc<Queue<u32, &'static str>> = Arc::new(Queue::new(1, Order::Fifo));
    let mut wake = Wakeups::default();
    q.put_nowait(0, &mut wake).unwrap();
    let Ok(Put::ThreadWait(t)) = q.put(1, None, &mut wake) else {
        panic!("full: the thread waits")
    };
    let Ok(Put::TaskQueued(2)) = q.put(2, Some("p"), &mut wake) else {
        panic!("full: the task queues")
    };
    assert_eq!(q.put_nowait(9, &mut wake), Err((QueueError::Full, 9)));
    let q2 = Arc::clone(&q);
    let getter = thread::spawn(move || {
        let mut w = Wakeups::default();
        let got = q2.get_nowait(&mut w);
        (got, w.putters)
    });
    let (got, putters) = getter.join().unwrap();
    assert_eq!(got, Ok(0));
    assert!(putters.is_empty(), "the slot went to the thread putter first");
    assert_eq!(t.wait(LONG), Some(true));
    let mut wake = Wakeups::default();
    assert_eq!(q.get_nowait(&mut wake), Ok(1));
    assert_eq!(wake.putters, vec![("p", true)], "then a slot is reserved for the task");
    assert!(q.is_full(), "a reserved slot counts as taken");
    // The task was cancelled before inserting: its reservation is released.
    let mut wake = Wakeups::default();
    q.release_reservation(&mut wake);
    assert!(!q.is_full());
}

#[test]
fn shutdown_wakes_waiters_and_immediate_drops_items() {
    let q: Queue<u32, &'static str> = Queue::new(1, Order::Fifo);
    let mut wake = Wakeups::default();
    q.put_nowait(1, &mut wake).unwrap();
    let Ok(Put::TaskQueued(_)) = q.put(2, Some("p"), &mut wake) else {
        panic!()
    };
    let dropped = q.shutdown(true, &mut wake);
    assert_eq!(dropped, vec![1]);
    assert_eq!(wake.putters, vec![("p", false)]);
    assert_eq!(q.get_nowait(&mut wake), Err(QueueError::ShutDown));
    assert_eq!(q.task_done(&mut wake), Err(QueueError::TooManyTaskDone));
}

#[test]
fn priority_order_smallest_first_and_give_back_keeps_it() {
    let q: Queue<u32, ()> = Queue::new(0, Order::Priority);
    let mut wake = Wakeups::default();
    for x in [5, 1, 4, 2, 3] {
        q.put_nowait(x, &mut wake).unwrap();
    }
    assert_eq!(q.get_nowait(&mut wake), Ok(1));
    q.give_back(1, &mut wake);
    let out: Vec<u32> = (0..5).map(|_| q.get_nowait(&mut wake).unwrap()).collect();
    assert_eq!(out, vec![1, 2, 3, 4, 5]);
}
