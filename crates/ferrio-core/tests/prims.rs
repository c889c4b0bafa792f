//! The primitives without Python: hand-off order, abandon races, give-back of cancelled hand-offs.

use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ferrio_core::prims::{Attempt, LockWait, Order, Put, Queue, QueueError, QueueItem, Semaphore, Wakeups};

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
    q.give_back(1, &mut wake).unwrap();
    assert_eq!(wake.getters, vec![("g2", Some(1))]);
    let mut wake = Wakeups::default();
    q.received(&mut wake).unwrap(); // g2 took it
                                    // And with no getter left, back to the front of the queue.
    let mut wake = Wakeups::default();
    assert!(matches!(q.get(Some("g3"), &mut wake), Ok(Attempt::Queued(None))));
    q.put_nowait(1, &mut wake).unwrap();
    q.put_nowait(2, &mut wake).unwrap();
    q.give_back(1, &mut wake).unwrap();
    assert_eq!(q.get_nowait(&mut wake), Ok(1));
    assert_eq!(q.get_nowait(&mut wake), Ok(2));
}

#[test]
fn putters_of_both_worlds_are_granted_slots_in_order_and_insert_their_own_items() {
    let q: Arc<Queue<u32, &'static str>> = Arc::new(Queue::new(1, Order::Fifo));
    let mut wake = Wakeups::default();
    q.put_nowait(0, &mut wake).unwrap();
    let Ok(Put::Queued(Some(t), 1)) = q.put(1, None, &mut wake) else {
        panic!("full: the thread waits, keeping its item")
    };
    let Ok(Put::Queued(None, 2)) = q.put(2, Some("p"), &mut wake) else {
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
    assert!(q.is_full().unwrap(), "a reserved slot counts as taken");
    q.commit_reserved(1, &mut wake).unwrap();
    let mut wake = Wakeups::default();
    assert_eq!(q.get_nowait(&mut wake), Ok(1));
    assert_eq!(wake.putters, vec![("p", true)], "then a slot is reserved for the task");
    // The task was cancelled before inserting: its reservation is released.
    let mut wake = Wakeups::default();
    q.release_reservation(&mut wake).unwrap();
    assert!(!q.is_full().unwrap());
}

#[test]
fn a_slot_freed_by_a_hand_off_to_a_getter_goes_to_the_next_putter() {
    // maxsize 1, full, two task putters waiting; two gets. The first get grants p1 a slot; the
    // second waits; p1's item goes straight to it. Once that getter holds the item, p2 must be
    // granted the free slot (it used to wait forever).
    for order in [Order::Fifo, Order::Lifo, Order::Priority] {
        let q: Queue<u32, &'static str> = Queue::new(1, order);
        let mut wake = Wakeups::default();
        q.put_nowait(0, &mut wake).unwrap();
        assert!(matches!(q.put(1, Some("p1"), &mut wake), Ok(Put::Queued(None, 1))));
        assert!(matches!(q.put(2, Some("p2"), &mut wake), Ok(Put::Queued(None, 2))));
        assert_eq!(q.get_nowait(&mut wake), Ok(0));
        assert_eq!(wake.putters, vec![("p1", true)]);
        let mut wake = Wakeups::default();
        assert!(matches!(q.get(Some("g"), &mut wake), Ok(Attempt::Queued(None))));
        q.commit_reserved(1, &mut wake).unwrap();
        assert_eq!(wake.getters, vec![("g", Some(1))]);
        assert!(wake.putters.is_empty(), "the item is still on its way: no room yet");
        let mut wake = Wakeups::default();
        q.received(&mut wake).unwrap();
        assert_eq!(wake.putters, vec![("p2", true)], "{order:?}");
    }
}

#[test]
fn an_item_on_its_way_to_a_cancelled_getter_keeps_its_slot() {
    // maxsize 1: an item handed to a waiting getter still counts, so a put meanwhile is refused
    // and the give-back of a cancelled getter never makes the queue hold more than maxsize.
    let q: Queue<u32, &'static str> = Queue::new(1, Order::Fifo);
    let mut wake = Wakeups::default();
    assert!(matches!(q.get(Some("g"), &mut wake), Ok(Attempt::Queued(None))));
    q.put_nowait(1, &mut wake).unwrap();
    assert_eq!(q.put_nowait(2, &mut wake), Err((QueueError::Full, 2)));
    q.give_back(1, &mut wake).unwrap();
    assert_eq!(q.qsize(), Ok(1));
    assert_eq!(q.put_nowait(3, &mut wake), Err((QueueError::Full, 3)));
}

#[test]
fn a_priority_put_or_get_whose_comparison_fails_leaves_the_queue_unchanged() {
    /// An item whose comparisons with the value 13 fail.
    #[derive(Debug, PartialEq)]
    struct Picky(u32);
    impl QueueItem for Picky {
        type Error = &'static str;
        fn try_lt(&self, other: &Self) -> Result<bool, &'static str> {
            if self.0 == 13 || other.0 == 13 {
                Err("unorderable")
            } else {
                Ok(self.0 < other.0)
            }
        }
    }
    let q: Queue<Picky, ()> = Queue::new(0, Order::Priority);
    let mut wake = Wakeups::default();
    for x in [5, 1, 4, 2, 3, 8, 7, 6] {
        q.put_nowait(Picky(x), &mut wake).unwrap();
    }
    assert_eq!(
        q.put_nowait(Picky(13), &mut wake),
        Err((QueueError::Compare("unorderable"), Picky(13)))
    );
    assert_eq!(q.stats(), Ok((8, 8, 0, 0)), "nothing was added or counted");
    let out: Vec<u32> = (0..8).map(|_| q.get_nowait(&mut wake).unwrap().0).collect();
    assert_eq!(out, (1..=8).collect::<Vec<_>>());
    // An item that cannot be ordered reaches the heap only as a give-back (it went straight to
    // a getter, which was cancelled). A get whose sinking then meets it fails and takes nothing.
    for x in [1, 2, 3, 9] {
        q.put_nowait(Picky(x), &mut wake).unwrap();
    }
    let mut wake = Wakeups::default();
    let q: Queue<Picky, &'static str> = Queue::new(0, Order::Priority);
    assert!(matches!(q.get(Some("g"), &mut wake), Ok(Attempt::Queued(None))));
    q.put_nowait(Picky(13), &mut wake).unwrap();
    for x in [1, 2, 3, 9] {
        q.put_nowait(Picky(x), &mut wake).unwrap();
    }
    let (_, got) = wake.getters.pop().unwrap();
    q.give_back(got.unwrap(), &mut wake).unwrap();
    assert_eq!(q.qsize(), Ok(5));
    assert_eq!(q.get_nowait(&mut wake).unwrap_err(), QueueError::Compare("unorderable"));
    assert_eq!(q.qsize(), Ok(5), "the failed get took nothing out");
}

/// Blocks in its comparison until told to go on (a second wait on its barrier): the queue's lock
/// is held meanwhile.
struct Gated(u32, Arc<Barrier>);

impl QueueItem for Gated {
    type Error = ();
    fn try_lt(&self, other: &Self) -> Result<bool, ()> {
        self.1.wait();
        self.1.wait();
        Ok(self.0 < other.0)
    }
}

/// A priority queue that waits for its contended lock through `lock_wait`, holding one item, and a
/// thread putting a second: on return the putter is inside its comparison, holding the lock, until
/// the test calls `gate.wait()`. The putter's thread returns whether its put succeeded.
fn locked_by_a_putter(lock_wait: LockWait) -> (Arc<Queue<Gated, ()>>, Arc<Barrier>, JoinHandle<bool>) {
    let gate = Arc::new(Barrier::new(2));
    let q: Arc<Queue<Gated, ()>> = Arc::new(Queue::with_lock_wait(0, Order::Priority, lock_wait));
    q.put_nowait(Gated(2, Arc::clone(&gate)), &mut Wakeups::default())
        .ok()
        .unwrap();
    let (q2, g2) = (Arc::clone(&q), Arc::clone(&gate));
    let putter = thread::spawn(move || q2.put_nowait(Gated(1, g2), &mut Wakeups::default()).is_ok());
    gate.wait(); // the putter holds the lock, inside its comparison
    (q, gate, putter)
}

#[test]
fn a_contended_lock_is_waited_for_through_the_embedders_hook() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WAITS: AtomicUsize = AtomicUsize::new(0);
    fn counting(wait_free: &(dyn Fn(Duration) + Sync), _interruptible: bool) -> bool {
        WAITS.fetch_add(1, Ordering::SeqCst);
        wait_free(LONG);
        true
    }
    let (q, gate, putter) = locked_by_a_putter(counting);
    let q3 = Arc::clone(&q);
    let other = thread::spawn(move || q3.qsize());
    while WAITS.load(Ordering::SeqCst) == 0 {
        thread::yield_now(); // bounded: `other` reaches the contended lock at once
    }
    gate.wait();
    assert!(putter.join().unwrap());
    assert_eq!(other.join().unwrap(), Ok(2));
}

#[test]
fn shutdown_wakes_waiters_and_immediate_drops_items() {
    let q: Queue<u32, &'static str> = Queue::new(1, Order::Fifo);
    let mut wake = Wakeups::default();
    q.put_nowait(1, &mut wake).unwrap();
    let Ok(Put::Queued(None, _)) = q.put(2, Some("p"), &mut wake) else {
        panic!()
    };
    let dropped = q.shutdown(true, &mut wake).unwrap();
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
    q.put_nowait(1, &mut wake).unwrap();
    let out: Vec<u32> = (0..5).map(|_| q.get_nowait(&mut wake).unwrap()).collect();
    assert_eq!(out, vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_wait_for_a_contended_lock_can_be_given_up_by_operations_that_changed_nothing() {
    fn give_up(wait_free: &(dyn Fn(Duration) + Sync), _interruptible: bool) -> bool {
        wait_free(Duration::from_millis(1));
        false // as on Ctrl-C
    }
    let (q, gate, putter) = locked_by_a_putter(give_up);
    let q3 = Arc::clone(&q);
    let asked = thread::spawn(move || q3.qsize()).join().unwrap();
    assert_eq!(asked, Err(QueueError::Interrupted));
    gate.wait();
    assert!(putter.join().unwrap());
    assert_eq!(q.qsize(), Ok(2));
}
