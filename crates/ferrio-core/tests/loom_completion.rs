//! Model check of the completion hand-off: under every interleaving of two pushing workers and a
//! draining loop, no completion is left queued without a pending signal (a lost wake-up).
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p ferrio-core --test loom_completion --release`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use ferrio_core::{CompletionQueue, Signal};

/// An eventfd modelled as a counter.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Signal for Counter {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn reset(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

#[test]
fn no_completion_is_stranded_without_a_signal() {
    loom::model(|| {
        let q = Arc::new(CompletionQueue::new(Counter::default()));
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let q = Arc::clone(&q);
                thread::spawn(move || q.push(i))
            })
            .collect();
        let mut got = Vec::new();
        // The loop drains once concurrently with the pushes...
        if q.signal().0.load(Ordering::SeqCst) > 0 {
            q.drain_into(&mut got);
        }
        for w in workers {
            w.join().unwrap();
        }
        // ...and afterwards keeps draining while signalled, as the event loop would.
        while q.signal().0.load(Ordering::SeqCst) > 0 {
            q.drain_into(&mut got);
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1], "a completion was stranded with no signal pending");
    });
}
