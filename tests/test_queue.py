"""ferrio.Queue: two faces, FIFO/LIFO, shutdown, a model test, cross-world stress, cancellation."""

from __future__ import annotations

import asyncio
import collections
import math
import queue
import sys
import textwrap
import threading
from collections.abc import Callable

import ferrio
import pytest
from conftest import run_or_fail, run_python
from hypothesis import given, settings
from hypothesis import strategies as st


def test_exceptions_subclass_both_standard_families() -> None:
    assert issubclass(ferrio.QueueEmpty, asyncio.QueueEmpty)
    assert issubclass(ferrio.QueueEmpty, queue.Empty)
    assert issubclass(ferrio.QueueFull, asyncio.QueueFull)
    assert issubclass(ferrio.QueueFull, queue.Full)
    if sys.version_info >= (3, 13):
        assert issubclass(ferrio.QueueShutDown, asyncio.QueueShutDown)
        assert issubclass(ferrio.QueueShutDown, queue.ShutDown)


def test_nowait_errors_and_sizes() -> None:
    q: ferrio.Queue[int] = ferrio.Queue(maxsize=2)
    with pytest.raises(queue.Empty, match="the queue is empty"):
        q.sync_q.get_nowait()
    q.sync_q.put_nowait(1)
    q.async_q.put_nowait(2)
    assert (q.qsize(), q.full(), q.empty(), q.maxsize) == (2, True, False, 2)
    with pytest.raises(asyncio.QueueFull, match="the queue is full"):
        q.async_q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.sync_q.put(3, timeout=0.01)
    assert [q.async_q.get_nowait(), q.sync_q.get_nowait()] == [1, 2]
    with pytest.raises(queue.Empty):
        q.sync_q.get(timeout=0.01)


def test_priority_order_and_unorderable_items() -> None:
    q: ferrio.PriorityQueue[tuple[int, str]] = ferrio.PriorityQueue()
    for item in [(3, "c"), (1, "a"), (2, "b")]:
        q.sync_q.put(item)
    assert [q.sync_q.get() for _ in range(3)] == [(1, "a"), (2, "b"), (3, "c")]
    with pytest.raises(TypeError, match=r"PriorityQueue.put\(\) needs items that support '<'.* got \{\}"):
        q.sync_q.put({})
    with pytest.raises(TypeError, match="needs items that support '<'"):
        ferrio.run(q.async_q.put({}))


def test_lifo_order() -> None:
    q: ferrio.LifoQueue[int] = ferrio.LifoQueue()
    for i in range(3):
        q.sync_q.put(i)
    assert [q.sync_q.get() for _ in range(3)] == [2, 1, 0]


@pytest.mark.parametrize(
    ("maxsize", "exc", "match"),
    [
        (-1, ValueError, r"Queue\(\): maxsize must be 0 or greater, got -1"),
        ("8", TypeError, r"expected maxsize to be an int"),
    ],
)
def test_bad_maxsize(maxsize: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        ferrio.Queue(maxsize)  # type: ignore[arg-type]


def test_bad_timeout_and_too_many_task_done() -> None:
    q: ferrio.Queue[int] = ferrio.Queue()
    with pytest.raises(ValueError, match=r"Queue.get\(\) expected timeout to be a non-negative number .* got -1"):
        q.sync_q.get(timeout=-1)
    with pytest.raises(ValueError, match=r"task_done\(\) called more times than items were put"):
        q.sync_q.task_done()


def test_shutdown_semantics() -> None:
    q: ferrio.Queue[int] = ferrio.Queue()
    q.sync_q.put(1)
    q.shutdown()
    with pytest.raises(ferrio.QueueShutDown, match="the queue was shut down"):
        q.sync_q.put(2)
    assert q.sync_q.get() == 1  # items already in can still be taken
    with pytest.raises(ferrio.QueueShutDown):
        q.sync_q.get()
    q2: ferrio.Queue[int] = ferrio.Queue()
    q2.sync_q.put(1)
    q2.shutdown(immediate=True)
    assert q2.qsize() == 0
    assert q2.sync_q.join(timeout=1) is True  # dropped items count as done


async def test_async_faces_and_join() -> None:
    q: ferrio.Queue[int] = ferrio.Queue(maxsize=1)
    await q.async_q.put(1)
    putter = asyncio.ensure_future(q.async_q.put(2))  # waits: full
    await asyncio.sleep(0)
    assert not putter.done()
    assert await q.async_q.get() == 1
    await asyncio.wait_for(putter, 5)
    assert await q.async_q.get() == 2
    joiner = asyncio.ensure_future(q.async_q.join())
    await asyncio.sleep(0)
    assert not joiner.done()
    q.async_q.task_done()
    q.sync_q.task_done()
    await asyncio.wait_for(joiner, 5)


async def test_shutdown_wakes_waiting_getters_and_putters() -> None:
    q: ferrio.Queue[int] = ferrio.Queue(maxsize=1)
    getter = asyncio.ensure_future(q.async_q.get())
    await asyncio.sleep(0)
    q.shutdown()
    with pytest.raises(ferrio.QueueShutDown):
        await asyncio.wait_for(getter, 5)
    q2: ferrio.Queue[int] = ferrio.Queue(maxsize=1)
    q2.sync_q.put(0)
    putter = asyncio.ensure_future(q2.async_q.put(1))
    await asyncio.sleep(0)
    q2.shutdown()
    with pytest.raises(ferrio.QueueShutDown):
        await asyncio.wait_for(putter, 5)


def test_shutdown_wakes_a_blocked_thread() -> None:
    q: ferrio.Queue[int] = ferrio.Queue()
    errors: list[BaseException] = []
    waiting = threading.Event()

    def getter() -> None:
        waiting.set()
        try:
            q.sync_q.get(timeout=10)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=getter)
    t.start()
    assert waiting.wait(10)
    # The getter may not be blocked yet; shutdown wakes it either way (or it sees the flag).
    q.shutdown()
    t.join(10)
    assert len(errors) == 1
    assert isinstance(errors[0], ferrio.QueueShutDown)


# -- a model test: random operations against a reference of queue.Queue's semantics -------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(["sync", "async"]), st.integers()),
        st.tuples(st.just("get"), st.sampled_from(["sync", "async"]), st.just(0)),
        st.tuples(st.just("task_done"), st.sampled_from(["sync", "async"]), st.just(0)),
        st.tuples(st.just("aput"), st.just("async"), st.integers()),
        st.tuples(st.just("aget"), st.just("async"), st.just(0)),
        st.tuples(st.just("join"), st.just("sync"), st.just(0)),
        st.tuples(st.just("shutdown"), st.booleans(), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(maxsize=st.integers(0, 4), kind=st.sampled_from(["fifo", "lifo", "priority"]), program=ops)
def test_model(maxsize: int, kind: str, program: list[tuple[str, object, int]]) -> None:
    q = {"fifo": ferrio.Queue, "lifo": ferrio.LifoQueue, "priority": ferrio.PriorityQueue}[kind](maxsize)
    lifo = kind == "lifo"
    items: collections.deque[int] = collections.deque()
    unfinished = 0
    shut = False

    def take_expected() -> int:
        """The item the reference queue hands out next, removed from it."""
        if kind == "priority":
            smallest = min(items)
            items.remove(smallest)
            return smallest
        return items.pop() if lifo else items.popleft()

    for op, arg, x in program:
        face = q.sync_q if arg == "sync" else q.async_q
        if op == "put":
            if shut:
                with pytest.raises(ferrio.QueueShutDown):
                    face.put_nowait(x)
            elif maxsize and len(items) >= maxsize:
                with pytest.raises(ferrio.QueueFull):
                    face.put_nowait(x)
            else:
                face.put_nowait(x)
                items.append(x)
                unfinished += 1
        elif op == "get":
            if items:
                assert face.get_nowait() == take_expected()
            else:
                with pytest.raises(ferrio.QueueShutDown if shut else ferrio.QueueEmpty):
                    face.get_nowait()
        elif op == "aput":
            # An awaited put: at once if there is room; if full it must wait, and cancelling that
            # wait (the timeout) must leave the queue as it was.
            if shut:
                with pytest.raises(ferrio.QueueShutDown):
                    ferrio.run(q.async_q.put(x))
            elif maxsize and len(items) >= maxsize:
                with pytest.raises(asyncio.TimeoutError):
                    ferrio.run(asyncio.wait_for(q.async_q.put(x), 0.001))
            else:
                ferrio.run(q.async_q.put(x))
                items.append(x)
                unfinished += 1
        elif op == "aget":
            if items:
                assert ferrio.run(q.async_q.get()) == take_expected()
            elif shut:
                with pytest.raises(ferrio.QueueShutDown):
                    ferrio.run(q.async_q.get())
            else:
                with pytest.raises(asyncio.TimeoutError):
                    ferrio.run(asyncio.wait_for(q.async_q.get(), 0.001))
        elif op == "join":
            assert q.sync_q.join(timeout=0) is (unfinished == 0)
        elif op == "task_done":
            if unfinished:
                face.task_done()
                unfinished -= 1
            else:
                with pytest.raises(ValueError, match="task_done"):
                    face.task_done()
        else:
            q.shutdown(immediate=bool(arg))
            shut = True
            if arg:  # 3.13: each dropped item is marked done, never below zero
                unfinished = max(0, unfinished - len(items))
                items.clear()
        assert q.qsize() == len(items)
        assert q.full() == bool(maxsize and len(items) >= maxsize)
        assert q.statistics().unfinished_tasks == unfinished


# -- stress: producers of both worlds, consumers of both worlds, two loops -----------------------


def test_stress_every_item_once_in_order_per_producer() -> None:
    # Two thread producers and a task producer on each of two loops, feeding two thread
    # consumers and a task consumer on each loop, through a bounded queue. Every wait is bounded:
    # a hang here is a lost wake-up, and fails the test instead of the run.
    n, producers, consumers = 2_000, 4, 4
    q: ferrio.Queue[tuple[int, int] | None] = ferrio.Queue(maxsize=16)
    got: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]
    produced = threading.Barrier(producers + 1, timeout=60)

    def thread_producer(p: int) -> None:
        for i in range(n):
            q.sync_q.put((p, i), timeout=30)
        produced.wait()

    def thread_consumer(k: int) -> None:
        while (item := q.sync_q.get(timeout=30)) is not None:
            got[k].append(item)

    def loop_thread(k: int, p: int) -> None:
        async def producer() -> None:
            for i in range(n):
                await q.async_q.put((p, i))
            await asyncio.to_thread(produced.wait)

        async def consumer() -> None:
            while (item := await q.async_q.get()) is not None:
                got[k].append(item)

        async def main() -> None:
            await asyncio.wait_for(asyncio.gather(producer(), consumer()), 60)

        asyncio.run(main())

    threads = [threading.Thread(target=thread_producer, args=(p,)) for p in (0, 1)]
    threads += [threading.Thread(target=thread_consumer, args=(k,)) for k in (0, 1)]
    threads += [threading.Thread(target=loop_thread, args=(k, p)) for k, p in ((2, 2), (3, 3))]
    for t in threads:
        t.start()
    produced.wait()
    for _ in range(consumers):
        q.sync_q.put(None, timeout=30)
    for t in threads:
        t.join(60)
    assert not [t for t in threads if t.is_alive()]
    assert sum(map(len, got)) == n * producers
    for p in range(producers):
        assert sorted(i for part in got for (pp, i) in part if pp == p) == list(range(n))
        for part in got:  # FIFO per producer, as each consumer saw them
            seq = [i for (pp, i) in part if pp == p]
            assert seq == sorted(seq)


async def test_cancellation_storm_on_get_loses_no_item() -> None:
    q: ferrio.Queue[int] = ferrio.Queue()
    n = 500
    received: list[int] = []

    async def getter() -> None:
        received.append(await q.async_q.get())

    for round_ in range(n):
        tasks = [asyncio.ensure_future(getter()) for _ in range(3)]
        await asyncio.sleep(0)
        q.sync_q.put(round_)  # handed to the first getter ...
        tasks[0].cancel()  # ... which is cancelled before it resumes: the item must come back
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks[2:]:
            t.cancel()
    # Whatever no getter kept is still in the queue: nothing lost, nothing duplicated.
    leftover = []
    while not q.empty():
        leftover.append(q.sync_q.get_nowait())
    assert sorted(received + leftover) == list(range(n))


def test_ctrl_c_interrupts_a_blocked_get_in_the_main_thread() -> None:
    code = textwrap.dedent(
        """
        import os, signal, sys, threading, ferrio
        q = ferrio.Queue()
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            q.sync_q.get(timeout=30)
        except KeyboardInterrupt:
            sys.stdout.write("interrupted\\n")
        q.sync_q.put(1)
        sys.stdout.write(f"still usable {q.sync_q.get(timeout=5)}\\n")
        """
    )
    proc = run_python(code, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "interrupted\nstill usable 1\n"


def test_janus_style_close() -> None:
    q: ferrio.Queue[int] = ferrio.Queue()
    q.sync_q.put(1)
    q.close()
    assert q.closed
    with pytest.raises(ferrio.QueueShutDown):
        q.sync_q.get_nowait()
    ferrio.run(q.aclose())
    ferrio.run(q.wait_closed())


# -- regressions ---------------------------------------------------------------------------------

KINDS = [ferrio.Queue, ferrio.LifoQueue, ferrio.PriorityQueue]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_slot_freed_by_a_hand_off_reaches_the_second_waiting_putter(kind: type[ferrio.Queue[int]]) -> None:
    # maxsize 1, full, two putters waiting: the first get grants the first putter a slot; the
    # second get waits and receives that putter's item directly. The room it leaves must go to
    # the second putter, which used to wait forever.
    q = kind(maxsize=1)
    q.sync_q.put(0)
    putters = [asyncio.ensure_future(q.async_q.put(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    assert q.statistics().putters_waiting == 2
    # Both getters start before the first putter resumes: the second one waits.
    got = await asyncio.wait_for(asyncio.gather(q.async_q.get(), q.async_q.get()), 5)
    await asyncio.wait_for(asyncio.gather(*putters), 5)
    got.append(q.sync_q.get_nowait())
    assert got == [0, 1, 2]


async def test_a_getter_cancelled_after_its_hand_off_never_lets_the_queue_exceed_maxsize() -> None:
    q: ferrio.Queue[int] = ferrio.Queue(maxsize=1)
    getter = asyncio.ensure_future(q.async_q.get())
    await asyncio.sleep(0)
    q.sync_q.put_nowait(1)  # handed straight to the waiting getter ...
    getter.cancel()  # ... which is cancelled before it resumes: it will give the item back
    with pytest.raises(ferrio.QueueFull):
        q.async_q.put_nowait(2)  # the item on its way still holds the only slot
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert q.qsize() == 1
    assert q.sync_q.get_nowait() == 1


def test_priority_put_of_an_unorderable_item_raises_and_leaves_the_queue_unchanged() -> None:
    q: ferrio.PriorityQueue[object] = ferrio.PriorityQueue()
    for x in (3, 1, 2):
        q.sync_q.put(x)
    with pytest.raises(TypeError, match=r"PriorityQueue.put\(\) needs items that support '<'.*got 'a'.*unchanged"):
        q.sync_q.put("a")  # 'a' < 'a' works: only the comparison with the numbers fails
    with pytest.raises(TypeError, match=r"PriorityQueue.put_nowait\(\) needs items"):
        q.async_q.put_nowait("b")
    with pytest.raises(TypeError, match="needs items that support '<'"):
        ferrio.run(q.async_q.put("c"))
    assert q.qsize() == 3
    assert q.statistics().unfinished_tasks == 3
    assert [q.sync_q.get_nowait() for _ in range(3)] == [1, 2, 3]


def test_priority_put_lets_an_lt_error_other_than_type_error_through() -> None:
    class Touchy:
        def __lt__(self, other: object) -> bool:
            if isinstance(other, Touchy) and other is self:
                return False
            raise ZeroDivisionError("touchy")

    q: ferrio.PriorityQueue[object] = ferrio.PriorityQueue()
    q.sync_q.put(Touchy())
    with pytest.raises(ZeroDivisionError, match="touchy"):
        q.sync_q.put(Touchy())
    assert q.qsize() == 1


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda q: q.sync_q.get(timeout=-1), ValueError, r"Queue.get\(\) expected timeout to be a non-negative"),
        (lambda q: q.sync_q.get(timeout=float("nan")), ValueError, r"Queue.get\(\) expected timeout"),
        (lambda q: q.sync_q.get(timeout="5"), TypeError, r"Queue.get\(\) expected timeout to be a number.*'str'"),
        (lambda q: q.sync_q.get(timeout=True), TypeError, r"expected timeout to be a number"),
        (lambda q: q.sync_q.get(timeout=1e300), OverflowError, r"Queue.get\(\) got timeout=1e\+300, more than"),
        (lambda q: q.sync_q.get(timeout=10**10), OverflowError, r"more than threading.TIMEOUT_MAX"),
        (lambda q: q.sync_q.put(1, timeout=-0.5), ValueError, r"Queue.put\(\) expected timeout"),
        (lambda q: q.sync_q.join(timeout=float("nan")), ValueError, r"Queue.join\(\) expected timeout"),
    ],
)
def test_timeouts_are_checked_as_queue_does(call: Callable[[ferrio.Queue[int]], object], exc: type, match: str) -> None:
    q: ferrio.Queue[int] = ferrio.Queue(maxsize=1)
    q.sync_q.put(0)
    q.sync_q.get()
    with pytest.raises(exc, match=match):
        call(q)


def test_infinite_and_ignored_timeouts() -> None:
    q: ferrio.Queue[int] = ferrio.Queue()
    q.sync_q.put(1, timeout=math.inf)
    assert q.sync_q.get(timeout=math.inf) == 1
    with pytest.raises(ferrio.QueueEmpty):
        q.sync_q.get(False, "ignored, as queue.Queue ignores it")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("maxsize", "exc", "match"),
    [
        (10**30, OverflowError, r"Queue\(\) expected maxsize between 0 and 18446744073709551615, got 10{30}.*=0"),
        (1.5, TypeError, r"Queue\(\) expected maxsize to be an int"),
    ],
)
def test_huge_or_wrong_typed_maxsize(maxsize: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match.replace("10{30}", str(10**30))):
        ferrio.Queue(maxsize)  # type: ignore[arg-type]


def test_a_priority_comparison_that_releases_the_gil_does_not_freeze_other_threads() -> None:
    # Thread A compares under the queue's lock and its __lt__ releases the GIL; thread B then
    # uses the queue. B used to wait for the lock holding the GIL, which A needed to finish:
    # the whole process froze. Run in a subprocess: a freeze holds the GIL and would stop pytest.
    code = textwrap.dedent(
        """
        import sys, threading, time, ferrio
        q = ferrio.PriorityQueue()
        b_started = threading.Event()

        class Yielding:
            def __init__(self, v):
                self.v = v
            def __lt__(self, other):
                if self is not other:
                    b_started.wait(10)
                    for _ in range(20):  # give B many chances to reach the lock meanwhile
                        time.sleep(0.001)
                return self.v < other.v

        q.sync_q.put(Yielding(2))
        a = threading.Thread(target=q.sync_q.put, args=(Yielding(1),))
        a.start()
        b_started.set()  # A's comparison yields the GIL 20 times from here on: B comes in meanwhile
        sizes = []
        b = threading.Thread(target=lambda: sizes.append(q.qsize()))
        b.start()
        a.join(10)
        b.join(10)
        assert not a.is_alive() and not b.is_alive()
        assert sizes[0] in (1, 2)
        assert [q.sync_q.get_nowait().v for _ in range(2)] == [1, 2]
        sys.stdout.write("ok\\n")
        """
    )
    out = run_or_fail(code, timeout=30, froze="the process froze: a thread waited for the queue's lock holding the GIL")
    assert out == "ok\n"


def test_ctrl_c_interrupts_a_wait_for_a_priority_queue_held_by_a_slow_comparison() -> None:
    code = textwrap.dedent(
        """
        import os, signal, sys, threading, time, ferrio
        q = ferrio.PriorityQueue()
        inside, go = threading.Event(), threading.Event()

        class Slow:
            def __init__(self, v):
                self.v = v
            def __lt__(self, other):
                if self is not other and self.v == 0:
                    inside.set()
                    go.wait(10)
                return self.v < other.v

        q.sync_q.put(Slow(1))
        a = threading.Thread(target=q.sync_q.put, args=(Slow(0),))
        a.start()
        inside.wait(10)
        start = time.monotonic()
        try:
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
            q.qsize()  # waits for A's comparison to end
            sys.stdout.write("not interrupted\\n")
        except KeyboardInterrupt:
            sys.stdout.write("interrupted\\n")
        took = time.monotonic() - start
        go.set()
        a.join(10)
        sys.stdout.write(f"{took < 5} {q.qsize()}\\n")
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "interrupted\nTrue 2\n"
