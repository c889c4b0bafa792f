"""ferrio.Lock, Semaphore, BoundedSemaphore, Event, AtomicInt across threads and tasks."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable

import ferrio
import pytest
from conftest import LoopTicker


async def test_mutual_exclusion_across_threads_and_tasks() -> None:
    lock = ferrio.Lock()
    inside = ferrio.AtomicInt(0)
    count = 0
    overlaps = 0
    per = 500

    def enter() -> None:
        nonlocal count, overlaps
        if inside.add(1) != 1:
            overlaps += 1
        value = count
        time.sleep(0)  # invite a switch inside the critical section
        count = value + 1
        inside.add(-1)

    def thread_worker() -> None:
        for _ in range(per):
            with lock:
                enter()

    async def task_worker() -> None:
        for _ in range(per):
            async with lock:
                enter()
                await asyncio.sleep(0)

    threads = [threading.Thread(target=thread_worker) for _ in range(4)]
    for t in threads:
        t.start()
    await asyncio.gather(*(task_worker() for _ in range(4)))
    for t in threads:
        await asyncio.to_thread(t.join, 30)
    assert overlaps == 0
    assert count == 8 * per
    assert not lock.locked()


async def test_waiters_are_served_first_come_first_served_across_worlds() -> None:
    lock = ferrio.Lock()
    order: list[str] = []
    assert await lock.acquire()  # on the loop's thread: asyncio's acquire

    def thread_waiter(name: str, queued: threading.Event) -> None:
        queued.set()
        with lock:
            order.append(name)

    async def task_waiter(name: str) -> None:
        async with lock:
            order.append(name)

    # Queue A (thread), B (task), C (thread), in that order, each confirmed before the next.
    a_q, c_q = threading.Event(), threading.Event()
    a = threading.Thread(target=thread_waiter, args=("A", a_q))
    a.start()
    assert await asyncio.to_thread(a_q.wait, 10)
    while lock.statistics().waiting < 1:  # bounded by the test timeout: A is about to queue
        await asyncio.sleep(0.001)
    b = asyncio.ensure_future(task_waiter("B"))
    while lock.statistics().waiting < 2:
        await asyncio.sleep(0.001)
    c = threading.Thread(target=thread_waiter, args=("C", c_q))
    c.start()
    while lock.statistics().waiting < 3:
        await asyncio.sleep(0.001)
    lock.release()
    await asyncio.wait_for(b, 10)
    for t in (a, c):
        await asyncio.to_thread(t.join, 10)
    assert order == ["A", "B", "C"]


async def test_cancellation_storm_on_acquire_leaks_no_permit() -> None:
    sem = ferrio.Semaphore(2)
    for _ in range(200):
        held = [await sem.acquire_async(), await sem.acquire_async()]
        assert held == [True, True]
        waiters = [asyncio.ensure_future(sem.acquire_async()) for _ in range(5)]
        await asyncio.sleep(0)
        sem.release()  # handed to waiters[0] ...
        waiters[0].cancel()  # ... cancelled before it resumes: the permit must pass on
        waiters[3].cancel()
        sem.release()
        results = await asyncio.gather(*waiters[:3], return_exceptions=True)
        winners = [r for r in results if r is True]
        for w in waiters[3:]:
            w.cancel()
        await asyncio.gather(*waiters[3:], return_exceptions=True)
        for _ in winners:
            sem.release()
        # Waiter 4 may have won a permit before it was cancelled; either way nothing leaked.
        counts = sem._counts()
        free, waiting = counts.free, counts.waiting
        assert waiting == 0
        assert free == 2
    assert sem.statistics() == ferrio.LockStatistics(locked=False, waiting=0)


def test_thread_acquire_timeout_and_nonblocking() -> None:
    lock = ferrio.Lock()
    assert lock.acquire()
    assert lock.acquire(timeout=0.01) is False
    assert lock.acquire(blocking=False) is False
    assert lock.acquire_nowait() is False
    with pytest.raises(ValueError, match="can't specify a timeout for a non-blocking call"):
        lock.acquire(blocking=False, timeout=1)
    lock.release()
    assert lock.acquire_nowait() is True
    lock.release()


def test_release_errors() -> None:
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        ferrio.Lock().release()
    sem = ferrio.BoundedSemaphore(1)
    with pytest.raises(ValueError, match="Semaphore released too many times"):
        sem.release()
    ferrio.Semaphore(0).release()  # unbounded: fine
    with pytest.raises(ValueError, match=r"Semaphore\(\): value must be 0 or greater, got -1"):
        ferrio.Semaphore(-1)


async def test_event_across_worlds() -> None:
    ev = ferrio.Event()
    woke = threading.Event()

    def thread_waits() -> None:
        assert ev.wait(10)
        woke.set()

    t = threading.Thread(target=thread_waits)
    t.start()
    waiter = asyncio.ensure_future(ev.wait_async())
    await asyncio.sleep(0)
    assert not waiter.done()
    await asyncio.to_thread(ev.set)  # set from another thread wakes both
    assert await asyncio.wait_for(waiter, 10) is True
    assert await asyncio.to_thread(woke.wait, 10)
    await asyncio.to_thread(t.join, 10)
    ev.clear()
    assert ev.is_set() is False
    assert await ev.wait(timeout=0.01) is False  # on the loop's thread: awaitable, as asyncio's


def test_atomic_int_under_contention() -> None:
    hits = ferrio.AtomicInt(0)

    def bump() -> None:
        for _ in range(10_000):
            hits.add(1)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert hits.get() == 40_000
    assert hits.compare_exchange(40_000, 7) == (True, 40_000)
    assert hits.compare_exchange(40_000, 9) == (False, 7)
    assert hits.swap(3) == 7
    assert int(hits) == 3
    assert repr(hits) == "ferrio.AtomicInt(3)"


async def test_condition_across_worlds() -> None:
    cond = ferrio.Condition()
    ready: list[str] = []
    thread_saw = threading.Event()

    def thread_waits() -> None:
        with cond:
            assert cond.wait_for(lambda: "go" in ready, timeout=10) is True
            thread_saw.set()

    t = threading.Thread(target=thread_waits)
    t.start()

    async def task_waits() -> str:
        async with cond:
            await cond.wait_for_async(lambda: "go" in ready)
            return "task saw it"

    waiter = asyncio.ensure_future(task_waits())
    while cond.statistics().waiting < 2:  # bounded by the test timeout: both are about to wait
        await asyncio.sleep(0.001)
    async with cond:
        ready.append("go")
        cond.notify_all()
    assert await asyncio.wait_for(waiter, 10) == "task saw it"
    assert await asyncio.to_thread(thread_saw.wait, 10)
    await asyncio.to_thread(t.join, 10)


async def test_condition_cancelled_waiter_passes_its_notification_on() -> None:
    cond = ferrio.Condition()
    woke: list[int] = []

    async def waiter(i: int) -> None:
        async with cond:
            await cond.wait_async()
            woke.append(i)

    first = asyncio.ensure_future(waiter(1))
    second = asyncio.ensure_future(waiter(2))
    while cond.statistics().waiting < 2:
        await asyncio.sleep(0.001)
    async with cond:
        cond.notify(1)  # goes to the first waiter ...
        first.cancel()  # ... which is cancelled before it acts: the second must wake instead
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 10)
    assert woke == [2]
    assert not cond.locked()


def test_condition_errors_and_timeout() -> None:
    cond = ferrio.Condition()
    with pytest.raises(RuntimeError, match=r"Condition.notify\(\) was called without holding the condition's lock"):
        cond.notify()
    with pytest.raises(RuntimeError, match=r"Condition.wait\(\) was called without holding"):
        cond.wait(0.01)
    with pytest.raises(TypeError, match=r"expected lock= to be a ferrio.Lock or None"):
        ferrio.Condition(threading.Lock())  # type: ignore[arg-type]
    with cond:
        assert cond.wait(timeout=0.01) is False
        assert cond.wait_for(lambda: False, timeout=0.01) is False
    assert cond.statistics() == ferrio.LockStatistics(locked=False, waiting=0)


# -- asyncio's API on a loop's thread ------------------------------------------------------------


async def _held_by_a_thread_until(acquire: Callable[[], object], release: Callable[[], object]) -> threading.Event:
    """Has a thread take the primitive, hold it until the returned event is set, then release."""
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        acquire()
        held.set()
        done.wait(10)
        release()

    threading.Thread(target=holder, daemon=True).start()
    assert await asyncio.to_thread(held.wait, 10)
    return done


@pytest.mark.parametrize("make", [ferrio.Lock, lambda: ferrio.Semaphore(1), lambda: ferrio.BoundedSemaphore(1)])
async def test_await_acquire_waits_without_blocking_the_loop(make: Callable[[], ferrio.Lock]) -> None:
    lock = make()
    release_it = await _held_by_a_thread_until(lock.acquire, lock.release)
    beat = LoopTicker()
    acquiring = asyncio.ensure_future(lock.acquire())
    while beat.count < 20:  # bounded by the test timeout: the loop runs while the acquire waits
        await asyncio.sleep(0)
    assert not acquiring.done()
    release_it.set()
    assert await asyncio.wait_for(acquiring, 10) is True
    assert lock.locked()
    lock.release()
    beat.cancel()


async def test_await_acquire_with_a_timeout_gives_false_and_leaves_no_waiter() -> None:
    lock = ferrio.Lock()
    release_it = await _held_by_a_thread_until(lock.acquire, lock.release)
    assert await lock.acquire(timeout=0.01) is False
    assert lock.statistics() == ferrio.LockStatistics(locked=True, waiting=0)
    release_it.set()
    assert await asyncio.wait_for(lock.acquire(), 10) is True
    lock.release()


async def test_acquire_results_on_a_loop_thread_are_never_mistaken_for_bools() -> None:
    lock = ferrio.Lock()
    assert lock.acquire(blocking=False) is True  # a try answers at once, everywhere
    assert lock.acquire(blocking=False) is False
    lock.release()
    pending = lock.acquire()
    with pytest.raises(TypeError, match=r"Lock.acquire\(\) was called on a thread running an event loop.*await"):
        bool(pending)
    assert await pending is True
    lock.release()
    with pytest.raises(ValueError, match=r"Lock.acquire\(\) expected timeout to be -1 \(no limit\) or a non-negative"):
        lock.acquire(timeout=-2)


async def test_with_lock_on_a_loop_thread_takes_a_free_lock_and_refuses_to_wait() -> None:
    lock = ferrio.Lock()
    with lock:
        assert lock.locked()
    release_it = await _held_by_a_thread_until(lock.acquire, lock.release)
    with pytest.raises(RuntimeError, match=r"`with lock:` would block the event loop.*`async with lock:`"), lock:
        pass
    release_it.set()
    async with lock:
        pass


async def test_await_event_wait_and_condition_wait_as_asyncio() -> None:
    ev = ferrio.Event()
    waiting = asyncio.ensure_future(ev.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    await asyncio.to_thread(ev.set)
    assert await asyncio.wait_for(waiting, 10) is True
    ev.clear()
    assert await ev.wait(0.01) is False
    assert await ev.wait(-1) is False  # threading's: a negative timeout only looks
    cond = ferrio.Condition()
    async with cond:
        assert await cond.wait(0.01) is False
        assert cond.locked()
        assert await cond.wait_for(lambda: True) is True

    def notify() -> None:
        with cond:
            cond.notify_all()

    async def waits() -> bool:
        async with cond:
            return bool(await cond.wait())

    waiter = asyncio.ensure_future(waits())
    while cond.statistics().waiting < 1:  # bounded by the test timeout: the waiter is about to wait
        await asyncio.sleep(0.001)
    await asyncio.to_thread(notify)
    assert await asyncio.wait_for(waiter, 10) is True
    assert not cond.locked()


def test_from_a_plain_thread_acquire_and_wait_stay_threadings() -> None:
    lock, ev, sem = ferrio.Lock(), ferrio.Event(), ferrio.Semaphore(0)
    assert lock.acquire() is True
    assert lock.acquire(timeout=0.01) is False
    lock.release()
    assert lock.acquire(timeout=-1) is True  # -1: no limit, as threading.Lock
    lock.release()
    assert lock.acquire(timeout=math.inf) is True
    lock.release()
    assert ev.wait(0.01) is False
    assert ev.wait(-1) is False  # threading.Event: a negative timeout only looks
    assert sem.acquire(timeout=-1) is False  # threading.Semaphore: a negative timeout only tries


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: ferrio.Event().wait(1e300), OverflowError, r"Event.wait\(\) got timeout=1e\+300, more than"),
        (lambda: ferrio.Event().wait("5"), TypeError, r"Event.wait\(\) expected timeout to be a number.*'str'"),
        (lambda: ferrio.Event().wait(float("nan")), ValueError, r"Event.wait\(\) expected timeout"),
        (lambda: ferrio.Lock().acquire(timeout=float("nan")), ValueError, r"Lock.acquire\(\) expected timeout"),
        (lambda: ferrio.Lock().acquire(timeout="1"), TypeError, r"Lock.acquire\(\) expected timeout to be a number"),
        (lambda: ferrio.Semaphore(0).acquire(timeout=1e300), OverflowError, r"Semaphore.acquire\(\) got timeout"),
        (lambda: ferrio.Semaphore(1).acquire(False, 1), ValueError, r"can't specify a timeout for a non-blocking"),
        (lambda: ferrio.Semaphore(10**30), OverflowError, r"Semaphore\(\) expected value between 0 and 18446744"),
        (lambda: ferrio.Semaphore(2**64 - 1).release(), OverflowError, r"Semaphore.release\(\) would take"),
        (lambda: ferrio.AtomicInt("1"), TypeError, r"ferrio.AtomicInt\(\) expected value to be an int, got '1'"),
        (lambda: ferrio.AtomicInt(2**63), OverflowError, r"AtomicInt\(\) expected value between -9223372036854775808"),
        (lambda: ferrio.AtomicInt().add("x"), TypeError, r"AtomicInt.add\(\) expected delta to be an int"),
        (lambda: ferrio.AtomicInt().add(2**64), OverflowError, r"AtomicInt.add\(\) expected delta between"),
        (lambda: ferrio.AtomicInt().set(1.5), TypeError, r"AtomicInt.set\(\) expected value to be an int"),
        (lambda: ferrio.AtomicInt().compare_exchange(0, None), TypeError, r"compare_exchange\(\) expected new"),
    ],
)
def test_bad_arguments_raise_clear_errors(call: Callable[[], object], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_atomic_int_wraps_as_documented() -> None:
    hits = ferrio.AtomicInt(2**63 - 1)
    assert hits.add() == -(2**63)
