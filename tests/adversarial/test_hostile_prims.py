"""Hostile use of ferrio's queues and locks: misbehaving items, cancellation storms, fork, bad timeouts.

Every wait is bounded; a test that hangs here is a deadlock, and the ones that could freeze the
whole interpreter (holding the GIL) run in a subprocess so that the hang fails only them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sys
import threading
from collections.abc import Callable

import ferrio
import pytest
from conftest import run_or_fail

# -- misbehaving __lt__ ---------------------------------------------------------------------------


class Flaky:
    """Ordered by ``v``; every comparison raises while ``Flaky.broken`` is set."""

    broken = False

    def __init__(self, v: int) -> None:
        self.v = v

    def __lt__(self, other: Flaky) -> bool:
        if Flaky.broken and self is not other:
            raise ValueError("cannot compare right now")
        return self.v < other.v


def test_an_lt_that_raises_fails_the_call_and_leaves_the_queue_as_it_was() -> None:
    q: ferrio.PriorityQueue[Flaky] = ferrio.PriorityQueue()
    for v in (5, 3, 8, 1, 9, 2, 7):
        q.sync_q.put(Flaky(v))
    Flaky.broken = True
    try:
        with pytest.raises(ValueError, match="cannot compare right now"):
            q.sync_q.put(Flaky(4))
        with pytest.raises(ValueError, match="cannot compare right now"):
            q.sync_q.get_nowait()  # the smallest is not lost: the queue is as it was
        with pytest.raises(ValueError, match="cannot compare right now"):
            ferrio.run(q.async_q.get())
    finally:
        Flaky.broken = False
    assert q.statistics() == ferrio.QueueStatistics(7, 7, 0, 0)
    assert [q.sync_q.get_nowait().v for _ in range(7)] == [1, 2, 3, 5, 7, 8, 9]


def test_an_lt_whose_result_cannot_be_a_bool_and_an_item_whose_repr_raises() -> None:
    class Liar:
        def __bool__(self) -> bool:
            raise ArithmeticError("no truth here")

    class Odd:
        def __init__(self, v: int) -> None:
            self.v = v

        def __lt__(self, other: Odd) -> object:
            return Liar() if self is not other else False

        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    q: ferrio.PriorityQueue[object] = ferrio.PriorityQueue()
    q.sync_q.put(Odd(1))
    with pytest.raises(ArithmeticError, match="no truth here"):
        q.sync_q.put(Odd(0))

    class Unorderable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    with pytest.raises(TypeError, match=r"PriorityQueue.put\(\) needs items that support '<'"):
        q.sync_q.put(Unorderable())  # the message does without the repr
    assert q.qsize() == 1


def test_an_lt_that_uses_its_own_queue_is_refused_not_deadlocked() -> None:
    q: ferrio.PriorityQueue[object] = ferrio.PriorityQueue()
    other: ferrio.Queue[int] = ferrio.Queue()

    class Meddler:
        def __init__(self, v: int, meddle: Callable[[], object]) -> None:
            self.v, self.meddle = v, meddle

        def __lt__(self, o: Meddler) -> bool:
            if self is not o:
                self.meddle()
            return self.v < o.v

    q.sync_q.put(Meddler(1, lambda: None))
    for meddle in (lambda: q.sync_q.put_nowait(Meddler(0, lambda: None)), q.qsize, q.sync_q.get_nowait):
        with pytest.raises(RuntimeError, match=r"was called while the queue was ordering its items on this thread"):
            q.sync_q.put(Meddler(0, meddle))
    assert q.qsize() == 1
    q.sync_q.put(Meddler(2, lambda: other.sync_q.put(7)))  # another queue is fine
    assert other.sync_q.get_nowait() == 7
    assert [q.sync_q.get_nowait().v for _ in range(2)] == [1, 2]


def test_lts_that_release_the_gil_under_many_threads_lose_and_duplicate_nothing() -> None:
    out = run_or_fail(
        """
        import sys, threading, time, ferrio
        q = ferrio.PriorityQueue(maxsize=8)

        class Slow:
            def __init__(self, v):
                self.v = v
            def __lt__(self, other):
                time.sleep(0)  # releases the GIL inside every comparison
                return self.v < other.v

        n, producers = 300, 4
        STOP = n * producers  # sorts after every item: a smaller stop would overtake items still queued
        got = []
        def produce(p):
            for i in range(n):
                q.sync_q.put(Slow(p * n + i), timeout=20)
        def consume():
            while True:
                item = q.sync_q.get(timeout=20)
                if item.v == STOP:
                    return
                got.append(item.v)
        threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        threads += [threading.Thread(target=consume) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads[:producers]:
            t.join(30)
        for _ in range(2):
            q.sync_q.put(Slow(STOP), timeout=20)
        for t in threads:
            t.join(30)
        assert not [t for t in threads if t.is_alive()]
        assert sorted(got) == list(range(n * producers)), len(got)
        sys.stdout.write("ok\\n")
        """,
        timeout=60,
    )
    assert out == "ok\n"


def test_a_slow_lt_holds_up_only_its_own_queue() -> None:
    q: ferrio.PriorityQueue[object] = ferrio.PriorityQueue()
    fifo: ferrio.Queue[int] = ferrio.Queue()
    inside, go = threading.Event(), threading.Event()

    class Slow:
        def __init__(self, v: int) -> None:
            self.v = v

        def __lt__(self, other: Slow) -> bool:
            if self is not other and self.v == 0:
                inside.set()
                go.wait(10)
            return self.v < other.v

    q.sync_q.put(Slow(1))
    putter = threading.Thread(target=q.sync_q.put, args=(Slow(0),))
    putter.start()
    assert inside.wait(10)
    sizes: list[int] = []
    waiter = threading.Thread(target=lambda: sizes.append(q.qsize()))
    waiter.start()  # waits for the lock, the GIL released
    fifo.sync_q.put(1)  # other queues are unaffected
    assert fifo.sync_q.get(timeout=5) == 1
    go.set()
    putter.join(10)
    waiter.join(10)
    assert not putter.is_alive()
    assert not waiter.is_alive()
    assert sizes in ([1], [2])
    assert [q.sync_q.get_nowait().v for _ in range(2)] == [0, 1]


# -- __del__ that touches the queue ---------------------------------------------------------------


def test_items_whose_del_uses_the_queue_are_dropped_outside_its_lock() -> None:
    q: ferrio.Queue[object] = ferrio.Queue()
    pq: ferrio.PriorityQueue[object] = ferrio.PriorityQueue()
    seen: list[int] = []

    class Haunted:
        def __init__(self, v: int, queue: ferrio.Queue[object]) -> None:
            self.v, self.queue = v, queue

        def __lt__(self, other: Haunted) -> bool:
            return self.v < other.v

        def __del__(self) -> None:
            seen.append(self.queue.qsize())
            self.queue.statistics()

    for queue in (q, pq):
        for v in range(3):
            queue.sync_q.put(Haunted(v, queue))
        queue.sync_q.get_nowait()  # dropped by us, after the call
        queue.shutdown(immediate=True)  # the rest are dropped after the queue's lock is released
    assert len(seen) == 6
    assert seen.count(0) == 4


def test_shutdown_never_drops_a_waiting_putters_item_under_the_queues_lock() -> None:
    # A thread blocked in put() on a full queue; shutdown() used to drop its item under the
    # queue's lock, so an item whose __del__ uses the queue deadlocked on it (GIL held).
    out = run_or_fail(
        """
        import gc, sys, threading, ferrio
        q = ferrio.Queue(maxsize=1)
        q.sync_q.put(0)
        seen = []

        class Haunted:
            def __del__(self):
                seen.append(q.qsize())

        errors = []
        def putter():
            try:
                q.sync_q.put(Haunted(), timeout=10)
            except ferrio.QueueShutDown as e:
                errors.append(e)
        t = threading.Thread(target=putter)
        t.start()
        while not q.statistics().putters_waiting:
            pass  # bounded: the putter is about to wait
        q.shutdown()
        t.join(10)
        gc.collect()
        sys.stdout.write(f"{len(errors)} {seen}\\n")
        """
    )
    assert out == "1 [1]\n"


# -- cancellation storms ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ferrio.Queue, ferrio.LifoQueue, ferrio.PriorityQueue])
async def test_cancellation_storm_on_get_and_put_keeps_every_item_once_and_the_bound(kind: type) -> None:
    maxsize, rounds = 2, 150
    q = kind(maxsize=maxsize)
    rng = random.Random(1234)
    put_ok: list[int] = []
    got: list[int] = []
    over: list[int] = []

    async def putter(x: int) -> None:
        await q.async_q.put(x)
        put_ok.append(x)

    async def getter() -> None:
        got.append(await q.async_q.get())

    def check_bound() -> None:
        if q.qsize() > maxsize:
            over.append(q.qsize())

    next_item = 0
    for _ in range(rounds):
        tasks = []
        for _ in range(rng.randint(0, 4)):
            tasks.append(asyncio.ensure_future(putter(next_item)))
            next_item += 1
        tasks += [asyncio.ensure_future(getter()) for _ in range(rng.randint(0, 4))]
        rng.shuffle(tasks)
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
            check_bound()
        # Thread-side traffic in the middle of the storm.
        try:
            q.sync_q.put_nowait(next_item)
            put_ok.append(next_item)
        except ferrio.QueueFull:
            pass
        next_item += 1
        check_bound()
        for t in tasks:
            if rng.random() < 0.5:
                t.cancel()
        await asyncio.sleep(0)  # the cancelled ones run their cancellation (giving back what reached them)
        check_bound()
        # Let the survivors finish: getters are fed, putters drained, so nothing stays blocked.
        for t in tasks:
            t.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        check_bound()
    leftover = []
    while not q.empty():
        leftover.append(q.sync_q.get_nowait())
    assert over == []
    assert sorted(got + leftover) == sorted(put_ok), "an item was lost or duplicated"
    assert q.statistics() == ferrio.QueueStatistics(0, len(put_ok), 0, 0)


async def test_threads_and_cancelled_tasks_at_once_lose_nothing() -> None:
    q: ferrio.Queue[int] = ferrio.Queue(maxsize=3)
    n = 400
    got: list[int] = []
    stop = threading.Event()

    def producer() -> None:
        for i in range(n):
            q.sync_q.put(i, timeout=20)

    def thread_consumer() -> None:
        while not stop.is_set():
            with contextlib.suppress(ferrio.QueueEmpty):
                got.append(q.sync_q.get(timeout=0.01))

    threads = [threading.Thread(target=producer), threading.Thread(target=thread_consumer)]
    for t in threads:
        t.start()
    rng = random.Random(7)

    async def task_consumer() -> None:
        got.append(await q.async_q.get())

    while len(got) < n:
        tasks = [asyncio.ensure_future(task_consumer()) for _ in range(3)]
        await asyncio.sleep(0)
        for t in tasks:
            if rng.random() < 0.6:
                t.cancel()
        _, pending = await asyncio.wait(tasks, timeout=0.05)
        for t in pending:
            t.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        assert q.qsize() <= 3
        if not threads[0].is_alive() and q.empty() and len(got) < n:
            await asyncio.sleep(0.01)  # labelled polling: the thread consumer may hold the last item
            if q.empty() and len(got) < n:
                break
    stop.set()
    for t in threads:
        await asyncio.to_thread(t.join, 20)
    assert sorted(got) == list(range(n))


async def test_cancellation_storm_on_await_acquire_keeps_every_permit() -> None:
    value = 2
    sem = ferrio.Semaphore(value)
    inside = 0
    most = 0
    rng = random.Random(99)

    async def worker(timeout: float | None) -> None:
        nonlocal inside, most
        if not await sem.acquire(timeout=timeout):
            return
        try:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
        finally:
            inside -= 1
            sem.release()

    def thread_worker() -> None:
        for _ in range(100):
            with sem:
                pass

    t = threading.Thread(target=thread_worker)
    t.start()
    for _ in range(100):
        tasks = [asyncio.ensure_future(worker(rng.choice([None, 0, 0.001]))) for _ in range(6)]
        for _ in range(rng.randint(0, 2)):
            await asyncio.sleep(0)
        for task in tasks:
            if rng.random() < 0.4:
                task.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    await asyncio.to_thread(t.join, 20)
    assert most <= value
    counts = sem._counts()
    assert (counts.free, counts.waiting) == (value, 0), "a permit leaked or was duplicated"


# -- fork --------------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX-only")
def test_a_child_forked_mid_operation_can_use_new_primitives() -> None:
    out = run_or_fail(
        """
        import asyncio, os, sys, threading, ferrio, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running: on purpose
        pq = ferrio.PriorityQueue()
        inside, go = threading.Event(), threading.Event()

        class Stuck:
            def __init__(self, v):
                self.v = v
            def __lt__(self, other):
                if self is not other and self.v == 0:
                    inside.set()
                    go.wait(10)
                return self.v < other.v

        pq.sync_q.put(Stuck(1))
        # A thread inside the priority queue's lock, one blocked in a get, one holding a lock.
        putter = threading.Thread(target=pq.sync_q.put, args=(Stuck(0),))
        putter.start()
        inside.wait(10)
        empty = ferrio.Queue()
        getter = threading.Thread(target=empty.sync_q.get, kwargs={"timeout": 10})
        getter.start()
        while not empty.statistics().getters_waiting:
            pass  # bounded: the getter is about to wait
        held = ferrio.Lock()
        held.acquire()
        pid = os.fork()
        if pid == 0:
            q, lock, ev, sem = ferrio.PriorityQueue(maxsize=2), ferrio.Lock(), ferrio.Event(), ferrio.Semaphore(1)
            q.sync_q.put((1, "a"))
            with lock, sem:
                ev.set()
            async def main():
                await q.async_q.put((0, "b"))
                async with lock:
                    await ev.wait()
                return [await q.async_q.get(), q.sync_q.get(timeout=1)]
            got = asyncio.run(main())
            os._exit(0 if got == [(0, "b"), (1, "a")] else 3)
        _, status = os.waitpid(pid, 0)
        go.set()
        empty.sync_q.put(0)
        putter.join(10)
        getter.join(10)
        held.release()
        sys.stdout.write(f"child {os.waitstatus_to_exitcode(status)} {pq.qsize()} {empty.qsize()}\\n")
        """
    )
    assert out == "child 0 2 0\n"


# -- non-finite and wrong-typed timeouts -------------------------------------------------------------

BAD = [
    (float("nan"), ValueError),
    ("5", TypeError),
    (b"5", TypeError),
    (1e300, OverflowError),
    (object(), TypeError),
]


def _blocking_calls() -> list[tuple[str, Callable[[object], object]]]:
    def full_queue() -> ferrio.Queue[int]:
        q: ferrio.Queue[int] = ferrio.Queue(maxsize=1)
        q.sync_q.put(0)
        return q

    def held_lock() -> ferrio.Lock:
        lock = ferrio.Lock()
        lock.acquire()
        return lock

    def with_cond(method: str) -> Callable[[object], object]:
        def call(t: object) -> object:
            cond = ferrio.Condition()
            with cond:
                return getattr(cond, method)(*(() if method == "wait" else (lambda: False,)), t)

        return call

    return [
        ("Queue.get", lambda t: ferrio.Queue().sync_q.get(timeout=t)),
        ("Queue.put", lambda t: full_queue().sync_q.put(1, timeout=t)),
        ("Queue.join", lambda t: full_queue().sync_q.join(timeout=t)),
        ("Lock.acquire", lambda t: held_lock().acquire(timeout=t)),
        ("Semaphore.acquire", lambda t: ferrio.Semaphore(0).acquire(timeout=t)),
        ("Event.wait", lambda t: ferrio.Event().wait(t)),
        ("Condition.wait", with_cond("wait")),
        ("Condition.wait_for", with_cond("wait_for")),
    ]


@pytest.mark.parametrize(("api", "call"), _blocking_calls(), ids=[a for a, _ in _blocking_calls()])
@pytest.mark.parametrize(("timeout", "exc"), BAD, ids=["nan", "str", "bytes", "1e300", "object"])
def test_bad_timeouts_raise_at_the_call_naming_it(
    api: str, call: Callable[[object], object], timeout: object, exc: type
) -> None:
    with pytest.raises(exc, match=api.split(".")[-1]):
        call(timeout)


@pytest.mark.parametrize(("api", "call"), _blocking_calls(), ids=[a for a, _ in _blocking_calls()])
def test_negative_infinity_is_refused_or_only_tries_as_the_stdlib(api: str, call: Callable[[object], object]) -> None:
    if api in ("Semaphore.acquire", "Event.wait", "Condition.wait", "Condition.wait_for"):
        assert call(-math.inf) is False  # threading: a negative timeout only looks
    else:
        with pytest.raises(ValueError, match="expected timeout"):
            call(-math.inf)


@pytest.mark.parametrize("timeout", [float("nan"), "1", 1e300])
async def test_bad_timeouts_on_a_loop_thread_raise_at_the_call(timeout: object) -> None:
    lock, ev, sem = ferrio.Lock(), ferrio.Event(), ferrio.Semaphore(1)
    for call in (lambda: lock.acquire(timeout=timeout), lambda: ev.wait(timeout), lambda: sem.acquire(timeout=timeout)):
        with pytest.raises((ValueError, TypeError, OverflowError), match=r"expected timeout|more than"):
            call()
