"""ferrio.to_thread: results, errors, context, cancellation, loops and executors."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import threading
import time
import traceback
import weakref

import ferrio
import pytest
from conftest import LOOPS, new_loop

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def fail_deep() -> None:
    raise ValueError("boom from the worker")


async def test_returns_the_result_with_args_and_kwargs() -> None:
    assert await ferrio.to_thread(add, 2, 3, scale=10) == 50


async def test_runs_on_a_named_ferrio_worker_thread() -> None:
    name = await ferrio.to_thread(lambda: threading.current_thread().name)
    assert name.startswith("ferrio-worker-")
    assert threading.current_thread() is threading.main_thread()


async def test_exception_keeps_its_original_traceback() -> None:
    with pytest.raises(ValueError, match="boom from the worker") as info:
        await ferrio.to_thread(fail_deep)
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "fail_deep" in frames


async def test_context_is_copied_into_the_call_and_not_back() -> None:
    request_id.set("req-42")

    def read_and_write() -> str:
        seen = request_id.get()
        request_id.set("changed in worker")
        return seen

    assert await ferrio.to_thread(read_and_write) == "req-42"
    assert request_id.get() == "req-42"


async def test_stop_iteration_arrives_as_runtime_error_caused_by_it() -> None:
    def stop() -> None:
        raise StopIteration("done early")

    with pytest.raises(RuntimeError, match="raised StopIteration, which a future cannot carry") as info:
        await ferrio.to_thread(stop)
    assert isinstance(info.value.__cause__, StopIteration)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_base_exceptions_are_delivered_not_lost(exc_type: type[BaseException]) -> None:
    def raise_it() -> None:
        raise exc_type("from worker")

    with pytest.raises(exc_type, match="from worker"):
        await ferrio.to_thread(raise_it)


async def test_coroutine_function_is_rejected_at_the_call_site() -> None:
    async def fetch() -> None:
        pass

    with pytest.raises(
        TypeError,
        match=r"ferrio.to_thread\(\) expected a sync function, but '.*fetch' is a coroutine function; "
        r"await it directly",
    ):
        await ferrio.to_thread(fetch)


async def test_non_callable_is_rejected_at_the_call_site() -> None:
    with pytest.raises(TypeError, match=r"ferrio.to_thread\(\) expected a callable .* got 42 of type 'int'"):
        await ferrio.to_thread(42)  # type: ignore[arg-type]


async def test_bad_limiter_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"expected limiter= to be a ferrio.CapacityLimiter or None, got 3"):
        await ferrio.to_thread(add, 1, 2, limiter=3)  # type: ignore[arg-type]


async def test_cancelling_a_queued_job_means_it_never_runs() -> None:
    pool = ferrio.ThreadPool(1, thread_name_prefix="cancel-queued")
    gate, started = threading.Event(), threading.Event()
    ran = threading.Event()

    def blocker() -> None:
        started.set()
        assert gate.wait(10)

    first = asyncio.ensure_future(pool.run(blocker))
    assert await asyncio.to_thread(started.wait, 10)
    second = asyncio.ensure_future(pool.run(ran.set))
    await asyncio.sleep(0)  # let the task submit its job
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    gate.set()
    await first
    pool.shutdown(wait=True)
    assert not ran.is_set()
    assert pool.stats().cancelled == 1


async def test_cancelling_a_running_job_returns_at_once_and_the_job_can_notice() -> None:
    started, noticed = threading.Event(), threading.Event()

    def long_loop() -> None:
        started.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                ferrio.check_cancelled()
            except asyncio.CancelledError:
                assert ferrio.is_cancelled()
                noticed.set()
                raise
            time.sleep(0.001)

    task = asyncio.ensure_future(ferrio.to_thread(long_loop))
    assert await asyncio.to_thread(started.wait, 10)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert await asyncio.to_thread(noticed.wait, 10)


def test_check_cancelled_outside_a_worker_raises() -> None:
    with pytest.raises(RuntimeError, match=r"ferrio.check_cancelled\(\) was called outside a job"):
        ferrio.check_cancelled()
    with pytest.raises(RuntimeError, match=r"ferrio.is_cancelled\(\) was called outside a job"):
        ferrio.is_cancelled()


async def test_is_cancelled_is_false_for_a_live_job() -> None:
    assert await ferrio.to_thread(ferrio.is_cancelled) is False


async def test_many_calls_each_resolve_exactly_once() -> None:
    n = 5_000
    results = await asyncio.gather(*(ferrio.to_thread(add, i, 0) for i in range(n)))
    assert results == list(range(n))


def test_two_loops_in_two_threads_share_one_pool() -> None:
    pool = ferrio.ThreadPool(4, thread_name_prefix="two-loops")
    barrier = threading.Barrier(2, timeout=10)
    out: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def run_loop(key: str, offset: int) -> None:
        async def main() -> list[int]:
            barrier.wait()
            return list(await asyncio.gather(*(pool.run(add, offset, i) for i in range(500))))

        try:
            out[key] = asyncio.run(main())
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run_loop, args=(k, o)) for k, o in (("a", 0), ("b", 1000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    pool.shutdown()
    assert not errors
    assert out["a"] == list(range(500))
    assert out["b"] == list(range(1000, 1500))


async def test_set_default_executor_runs_asyncio_to_thread_on_ferrio() -> None:
    loop = asyncio.get_running_loop()
    pool = ferrio.ThreadPool(2, thread_name_prefix="default-exec")
    loop.set_default_executor(pool)
    name = await asyncio.to_thread(lambda: threading.current_thread().name)
    assert name.startswith("default-exec-")
    assert await loop.run_in_executor(None, add, 1, 2) == 3
    await loop.shutdown_default_executor()
    assert pool.stats().workers_alive == 0


async def test_run_in_executor_with_a_ferrio_pool_and_its_cancellation() -> None:
    loop = asyncio.get_running_loop()
    async with ferrio.ThreadPool(1, thread_name_prefix="rie") as pool:
        assert await loop.run_in_executor(pool, add, 2, 2) == 4
        gate, started, ran = threading.Event(), threading.Event(), threading.Event()
        blocker = loop.run_in_executor(pool, lambda: (started.set(), gate.wait(10)))
        assert await asyncio.to_thread(started.wait, 10)
        queued = loop.run_in_executor(pool, ran.set)
        queued.cancel()
        # asyncio passes the cancel on to the pool's future from a done callback that the loop
        # runs before resuming this task: let it, then release the worker.
        await asyncio.sleep(0)
        gate.set()
        await blocker
    assert not ran.is_set()


async def test_a_closed_loops_pending_results_are_discarded_cleanly() -> None:
    pool = ferrio.ThreadPool(1, thread_name_prefix="closed-loop")
    gate, started = threading.Event(), threading.Event()

    def other_loop() -> None:
        loop = asyncio.new_event_loop()

        async def main() -> None:
            task = asyncio.ensure_future(pool.run(lambda: (started.set(), gate.wait(10))))
            await asyncio.sleep(0)
            assert not task.done()

        loop.run_until_complete(main())
        loop.close()  # the job is still running; its result has nowhere to go

    t = threading.Thread(target=other_loop)
    t.start()
    t.join(10)
    assert await asyncio.to_thread(started.wait, 10)
    gate.set()
    pool.shutdown(wait=True)
    assert pool.stats().completed == 1
    # and this loop is unaffected
    assert await ferrio.to_thread(add, 1, 1) == 2


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
@pytest.mark.parametrize("kind", LOOPS)
def test_loops_closed_with_a_job_in_flight_are_freed_with_their_eventfds(kind: str) -> None:
    # Each such loop used to stay alive for good, with its eventfd: its waker, held strongly by
    # ferrio, kept the finished job's future, which kept the loop.
    pool = ferrio.ThreadPool(4, thread_name_prefix="closed-loops")
    gate = threading.Event()
    gc.collect()
    fds = _open_fds()
    loops = []
    for _ in range(100):
        loop = new_loop(kind)

        async def submit() -> None:
            asyncio.ensure_future(pool.run(gate.wait, 10))  # noqa: RUF006 - left pending as the loop closes
            await asyncio.sleep(0)

        loop.run_until_complete(submit())
        loop.close()
        loops.append(weakref.ref(loop))
        del loop
    gate.set()
    pool.shutdown(wait=True)
    assert pool.stats().completed == 100
    deadline = time.monotonic() + 10
    while True:  # retried: a collection may find a cycle only on a later pass
        gc.collect()
        alive = sum(r() is not None for r in loops)
        if (alive == 0 and _open_fds() <= fds) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert alive == 0, f"{alive} of 100 closed loops still alive"
    assert _open_fds() <= fds


class _NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop without add_reader, like Windows' proactor: ferrio must fall back to call_soon_threadsafe."""

    def add_reader(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError


def test_loops_without_add_reader_get_results_through_call_soon_threadsafe() -> None:
    loop = _NoReaderLoop()
    pool = ferrio.ThreadPool(2, thread_name_prefix="no-reader")

    async def main() -> list[int]:
        return list(await asyncio.gather(*(pool.run(add, i, 1) for i in range(200))))

    try:
        assert loop.run_until_complete(asyncio.wait_for(main(), 20)) == list(range(1, 201))
        with pytest.raises(ValueError, match="boom from the worker"):
            loop.run_until_complete(asyncio.wait_for(pool.run(fail_deep), 20))
    finally:
        loop.close()
        pool.shutdown()
