"""ferrio.ProcessPool and ferrio.to_process: real worker processes, real crashes and kills.

Hand-offs between the test and a worker go through a ferrio.SharedCounter the worker bumps; the
test waits for it with `wait_for`, which polls (labelled: no event crosses a process boundary
otherwise) under a bounded deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import pickle
import random
import signal
import threading
import time

import ferrio
import pytest
from conftest import process_alive, run_python, wait_for, wait_for_flag

pytestmark = pytest.mark.usefixtures("no_process_leaks")


# -- functions the workers run (module level, so they pickle by reference) -----------------------


def square(x: int) -> int:
    return x * x


def pid_of(_: object = None) -> int:
    return os.getpid()


def echo(*args: object, **kwargs: object) -> tuple:
    return args, kwargs


def raise_value_error(msg: str) -> None:
    raise ValueError(msg)


def die(how: str = "kill") -> None:
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    os._exit(3)


def die_if(i: int, doomed: frozenset[int]) -> int:
    if i in doomed:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


def mark_then_sleep(counter: ferrio.SharedCounter, seconds: float) -> str:
    counter.add(1)
    time.sleep(seconds)
    return "finished"


def add_many(counter: ferrio.SharedCounter, n: int) -> int:
    for _ in range(n):
        counter.add(1)
    return n


def returns_lock() -> object:
    return threading.Lock()


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # two required args: unpickling calls cls(*args)
        super().__init__(f"{a}-{b}")


def raise_unpicklable_exception() -> None:
    raise Unpicklable(1, 2)


def log_something(n: int) -> int:
    logging.getLogger(f"blocks({n})").info("running in %d", os.getpid())
    logging.getLogger("ferrio.tests").debug("debug is below the parent's level")
    return n


_worker_state: dict[str, object] = {}


def init_worker(counter: ferrio.SharedCounter, tag: str) -> None:
    _worker_state["counter"] = counter
    _worker_state["tag"] = tag
    counter.add(1)


def read_worker_state() -> tuple[str, int]:
    counter = _worker_state["counter"]
    assert isinstance(counter, ferrio.SharedCounter)
    return str(_worker_state["tag"]), counter.add(100)


def failing_init() -> None:
    raise RuntimeError("cannot initialize")


def exit_in_init() -> None:
    os._exit(3)


def block_first_init(counter: ferrio.SharedCounter) -> None:
    if counter.add(1) == 1:
        time.sleep(60)  # the first worker hangs here until the test kills it


def reverse_bytes(b: bytes) -> bytes:
    return b[::-1]


def describe_buffers(b: bytes, ba: bytearray, mv: memoryview) -> tuple:
    ba[0] = 0xFF  # writable in the worker, as it was in the parent
    return type(b).__name__, len(b), type(ba).__name__, len(ba), mv.format, mv.shape, mv.readonly, bytes(ba[:1])


def make_large(n: int) -> tuple[bytes, bytearray]:
    return b"x" * n, bytearray(b"y" * n)


class Blob:
    """Pickles its data out of band with protocol 5, as NumPy arrays do."""

    def __init__(self, data: bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: int):  # type: ignore[override]
        return Blob, (pickle.PickleBuffer(self.data),)


def blob_sum(blob: Blob) -> tuple[str, int]:
    return type(blob.data).__name__, sum(memoryview(blob.data)[:1000])


def print_and_return(text: str) -> str:
    print(text, flush=True)
    return text


def raises_pool_error(kind: str) -> None:
    if kind == "crashed":
        raise ferrio.WorkerCrashed(4312, -signal.SIGKILL, "resize")
    raise ferrio.BrokenProcessPool("broken in a worker")


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool():
    with ferrio.ProcessPool(2, name="test-process") as p:
        yield p


# -- basics ---------------------------------------------------------------------------------------


def test_is_an_executor_and_submit_runs_in_another_process(pool: ferrio.ProcessPool) -> None:
    assert isinstance(pool, concurrent.futures.Executor)
    assert pool.submit(square, 7).result(timeout=30) == 49
    assert pool.submit(pid_of).result(timeout=30) != os.getpid()
    assert list(pool.map(square, range(5), timeout=30)) == [0, 1, 4, 9, 16]


async def test_run_passes_args_and_kwargs(pool: ferrio.ProcessPool) -> None:
    assert await pool.run(echo, 1, "a", key=[1, 2]) == ((1, "a"), {"key": [1, 2]})
    results = await asyncio.gather(*(pool.run(square, i) for i in range(50)))
    assert results == [i * i for i in range(50)]


async def test_run_in_executor_accepts_the_pool(pool: ferrio.ProcessPool) -> None:
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(pool, square, 9) == 81


async def test_lambdas_and_closures_travel_by_value(pool: ferrio.ProcessPool) -> None:
    offset = 10
    assert await pool.run(lambda x: x + offset, 5) == 15

    def local(x: int) -> int:
        return x * offset

    assert await pool.run(local, 3) == 30


async def test_to_process_uses_a_lazily_created_default_pool() -> None:
    assert await ferrio.to_process(square, 12) == 144
    assert ferrio.default_process_pool() is ferrio.default_process_pool()


async def test_exceptions_carry_the_remote_traceback(pool: ferrio.ProcessPool) -> None:
    with pytest.raises(ValueError, match="from the worker") as info:
        await pool.run(raise_value_error, "from the worker")
    cause = info.value.__cause__
    assert cause is not None
    assert "raise_value_error" in str(cause)
    assert "raise ValueError(msg)" in str(cause)


async def test_an_exception_that_cannot_be_unpickled_arrives_as_runtime_error(pool: ferrio.ProcessPool) -> None:
    with pytest.raises(RuntimeError, match="could not be unpickled"):
        await pool.run(raise_unpicklable_exception)
    assert await pool.run(square, 2) == 4  # the worker stays alive


async def test_amap_is_ordered_and_raises_at_the_failing_position(pool: ferrio.ProcessPool) -> None:
    assert [x async for x in pool.amap(square, range(300))] == [i * i for i in range(300)]

    def fail_at_5(i: int) -> int:
        if i == 5:
            raise KeyError(i)
        return i

    seen = []
    with pytest.raises(KeyError):
        async for x in pool.amap(fail_at_5, range(20), chunksize=3):
            seen.append(x)
    assert seen == [0, 1, 2, 3, 4]


async def test_amap_rejects_bad_arguments(pool: ferrio.ProcessPool) -> None:
    with pytest.raises(ValueError, match="max_in_flight must be greater than 0"):
        async for _ in pool.amap(square, [1], max_in_flight=0):
            pass
    with pytest.raises(TypeError, match="expected a callable"):
        async for _ in pool.amap(42, [1]):  # type: ignore[arg-type]
            pass


def test_stats_counts_calls() -> None:
    pool = ferrio.ProcessPool(2)  # its own: calls other tests left running on a shared pool would count
    pool.submit(square, 2).result(timeout=30)
    before = pool.stats()
    pool.submit(square, 3).result(timeout=30)
    after = pool.stats()
    assert isinstance(after, ferrio.ProcessPoolStatistics)
    assert after.completed == before.completed + 1
    assert after.max_workers == 2
    assert 1 <= after.workers_alive <= 2
    assert after.run_time.count >= 1
    with pytest.raises(AttributeError):
        after.completed = 0  # type: ignore[misc]
    assert "ferrio.ProcessPool running" in repr(pool)
    pool.shutdown()


# -- large buffers ---------------------------------------------------------------------------------


async def test_large_buffers_travel_both_ways(pool: ferrio.ProcessPool) -> None:
    data = os.urandom(3 << 20)
    assert await pool.run(reverse_bytes, data) == data[::-1]
    n = 2 << 20
    b, ba = await pool.run(make_large, n)
    assert (type(b), type(ba)) == (bytes, bytearray)
    assert b == b"x" * n
    assert ba == bytearray(b"y" * n)
    mv = memoryview(bytearray(4 << 20)).cast("i")
    info = await pool.run(describe_buffers, bytes(n), bytearray(n), mv)
    assert info == ("bytes", n, "bytearray", n, "i", (1 << 20,), False, b"\xff")
    small = memoryview(b"abc")
    assert await pool.run(bytes, small) == b"abc"


async def test_pickle_buffers_of_any_object_travel_out_of_band(pool: ferrio.ProcessPool) -> None:
    data = bytearray(range(256)) * (8 << 10)  # 2 MiB
    assert await pool.run(blob_sum, Blob(data)) == ("bytearray", sum(data[:1000]))


async def test_growing_and_shrinking_transfers_stay_correct(pool: ferrio.ProcessPool) -> None:
    for size in (1 << 20, 9 << 20, 1 << 20, 17 << 20, 2 << 20):
        data = os.urandom(size)
        assert await pool.run(reverse_bytes, data) == data[::-1]


# -- errors at the call site -----------------------------------------------------------------------


async def test_unpicklable_argument_is_named_at_the_call_site(pool: ferrio.ProcessPool) -> None:
    lock = threading.Lock()
    with pytest.raises(TypeError, match=r"ProcessPool.run\(\): argument 1 of echo\(\) \(a lock\) cannot be pickled"):
        await pool.run(echo, 1, lock)
    with pytest.raises(TypeError, match=r"keyword argument 'k' of echo\(\)"):
        pool.submit(echo, k=lock)
    assert await pool.run(square, 3) == 9


async def test_unpicklable_result_fails_the_call_and_the_worker_lives(pool: ferrio.ProcessPool) -> None:
    await pool.run(square, 1)  # a worker is up
    pids = set(pool.worker_pids())
    with pytest.raises(TypeError, match=r"^'returns_lock' returned 'lock', which cannot be pickled") as info:
        await pool.run(returns_lock)
    assert "''" not in str(info.value)  # the name is quoted once
    assert await pool.run(square, 4) == 16
    assert pids <= set(pool.worker_pids())  # none died of it


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"max_workers": 0}, ValueError, "max_workers must be greater than 0, got 0"),
        ({"max_workers": "2"}, TypeError, "expected max_workers to be an int"),
        ({"max_tasks_per_child": 0}, ValueError, "max_tasks_per_child must be greater than 0"),
        ({"start_method": "fork"}, ValueError, "does not use start_method='fork'"),
        ({"start_method": "telepathy"}, ValueError, "got start_method='telepathy'"),
        ({"initializer": 42}, TypeError, "expected initializer to be callable"),
        ({"initargs": [1]}, TypeError, r"expected initargs to be a tuple, got \[1\] of type 'list'"),
        ({"max_workers": 10**9}, ValueError, r"got max_workers=1000000000; a pool runs at most 1024"),
        ({"max_workers": 2.0}, TypeError, "expected max_workers to be an int"),
        ({"max_tasks_per_child": True}, TypeError, "expected max_tasks_per_child to be an int"),
        ({"start_method": 5}, TypeError, r"expected start_method to be a str or None, got 5 of type 'int'"),
        ({"name": b"x"}, TypeError, r"expected name to be a str, got b'x'"),
        ({"initializer": asyncio.sleep}, TypeError, "expected a sync initializer, but 'sleep' is a coroutine"),
        ({"initializer": print, "initargs": (threading.Lock(),)}, TypeError, "argument 0 of print"),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        ferrio.ProcessPool(**kwargs)


def test_worker_crashed_is_a_ferrio_broken_process_pool() -> None:
    assert issubclass(ferrio.WorkerCrashed, ferrio.BrokenProcessPool)
    assert issubclass(ferrio.BrokenProcessPool, concurrent.futures.process.BrokenProcessPool)
    err = ferrio.WorkerCrashed(123, -signal.SIGKILL, "f")
    assert str(err).startswith("worker process 123 running 'f' was killed by SIGKILL")
    assert isinstance(pickle.loads(pickle.dumps(err)), ferrio.BrokenProcessPool)


async def test_pool_errors_pickle_across_processes_as_ferrio_classes(pool: ferrio.ProcessPool) -> None:
    # Pickled by reference under the names users import, so they cross to and from workers whole.
    err = ferrio.WorkerCrashed(123, 3, "f")
    data = pickle.dumps(err)
    assert b"ferrio._" not in data
    back = pickle.loads(data)
    assert (type(back), back.pid, back.exitcode, back.signal, back.function) == (
        ferrio.WorkerCrashed,
        123,
        3,
        None,
        "f",
    )
    assert str(back) == str(err)
    with pytest.raises(
        ferrio.WorkerCrashed, match=r"^worker process 4312 running 'resize' was killed by SIGKILL;"
    ) as info:
        await pool.run(raises_pool_error, "crashed")
    crashed = info.value
    assert (crashed.pid, crashed.exitcode, crashed.signal, crashed.function) == (
        4312,
        -signal.SIGKILL,
        signal.SIGKILL,
        "resize",
    )
    assert "raises_pool_error" in str(crashed.__cause__)  # the worker's traceback, as text
    with pytest.raises(ferrio.BrokenProcessPool, match=r"^broken in a worker$") as broken:
        await pool.run(raises_pool_error, "broken")
    assert type(broken.value) is ferrio.BrokenProcessPool


async def test_bad_calls_fail_at_the_call_site(pool: ferrio.ProcessPool) -> None:
    with pytest.raises(TypeError, match="expected a callable"):
        await pool.run(42)  # type: ignore[arg-type]

    async def coro() -> None:
        pass

    with pytest.raises(TypeError, match="is a coroutine function"):
        await pool.run(coro)
    with pytest.raises(ValueError, match="expected timeout to be a positive number"):
        await pool.run(square, 1, timeout=0)
    with pytest.raises(TypeError, match=r"ProcessPool.run\(\) expected timeout to be a number of seconds"):
        await pool.run(square, 1, timeout="5")
    with pytest.raises(OverflowError, match=r"more than threading\.TIMEOUT_MAX"):
        await pool.run(square, 1, timeout=1e300)
    assert await pool.run(square, 3, timeout=float("inf")) == 9  # no limit, and the manager lives


# -- crashes, timeouts, cancellation ---------------------------------------------------------------


async def test_a_crash_fails_only_its_call_and_a_replacement_starts() -> None:
    async with ferrio.ProcessPool(2) as pool:
        counter = ferrio.SharedCounter(0)
        others = [asyncio.ensure_future(pool.run(square, i)) for i in range(20)]
        with pytest.raises(ferrio.WorkerCrashed) as info:
            await pool.run(die, "kill")
        err = info.value
        assert isinstance(err, concurrent.futures.process.BrokenProcessPool)
        assert err.signal == signal.SIGKILL
        assert err.exitcode == -signal.SIGKILL
        assert err.function == "die"
        assert f"worker process {err.pid} running 'die' was killed by SIGKILL" in str(err)
        assert await asyncio.gather(*others) == [i * i for i in range(20)]
        with pytest.raises(ferrio.WorkerCrashed, match="exited with code 3"):
            await pool.run(die, "exit")
        with pytest.raises(ferrio.WorkerCrashed, match="'die' was killed by SIGSEGV"):
            await pool.run(die, "segfault")
        assert await pool.run(add_many, counter, 10) == 10
        s = pool.stats()
        assert s.crashed == 3
        assert s.workers_started >= 4
        assert err.pid not in pool.worker_pids()


async def test_crashes_while_calls_are_pipelined_fail_exactly_the_killed_calls() -> None:
    doomed = frozenset(random.Random(7).sample(range(400), 12))
    async with ferrio.ProcessPool(2) as pool:
        results = await asyncio.gather(*(pool.run(die_if, i, doomed) for i in range(400)), return_exceptions=True)
    crashed = {i for i, r in enumerate(results) if isinstance(r, ferrio.WorkerCrashed)}
    assert crashed == doomed
    assert all(r == i for i, r in enumerate(results) if i not in doomed)


async def test_timeout_kills_the_worker_and_raises_timeout_error() -> None:
    async with ferrio.ProcessPool(1) as pool:
        started = ferrio.SharedCounter(0)
        pid = await pool.run(pid_of)
        with pytest.raises(TimeoutError, match=r"'mark_then_sleep' was still running after timeout=0.2 s"):
            await pool.run(mark_then_sleep, started, 30, timeout=0.2)
        assert started.value == 1
        assert await pool.run(pid_of) != pid  # a replacement runs the next call
        assert pool.stats().timed_out == 1


async def test_calls_finished_before_their_timeout_do_not_pile_up(pool: ferrio.ProcessPool) -> None:
    for _ in range(10):
        await asyncio.gather(*(pool.run(square, i, timeout=3600) for i in range(50)))
    assert len(pool._core.timeouts) <= 64 + 50


async def test_cancelling_a_queued_call_drops_it() -> None:
    async with ferrio.ProcessPool(1) as pool:
        started, release = ferrio.SharedCounter(0), ferrio.SharedCounter(0)
        blocker = asyncio.ensure_future(pool.run(wait_for_flag, started, release))
        await asyncio.to_thread(wait_for, lambda: started.value == 1)
        ran = ferrio.SharedCounter(0)
        queued = [asyncio.ensure_future(pool.run(add_many, ran, 1)) for _ in range(4)]
        await asyncio.sleep(0)
        for q in queued:
            q.cancel()
        release.set(1)
        assert await blocker == "released"
        assert await pool.run(square, 2) == 4
        # Each busy worker holds one call in its socket: that one may run; the rest never do.
        assert ran.value <= 1
        assert pool.stats().cancelled >= 3


async def test_cancel_with_kill_on_cancel_kills_the_running_call() -> None:
    async with ferrio.ProcessPool(1, kill_on_cancel=True) as pool:
        started = ferrio.SharedCounter(0)
        pid = await pool.run(pid_of)
        task = asyncio.ensure_future(pool.run(mark_then_sleep, started, 30))
        await asyncio.to_thread(wait_for, lambda: started.value == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await pool.run(pid_of) != pid


async def test_cancel_without_kill_lets_the_call_finish() -> None:
    async with ferrio.ProcessPool(1) as pool:
        started, release = ferrio.SharedCounter(0), ferrio.SharedCounter(0)
        pid = await pool.run(pid_of)
        task = asyncio.ensure_future(pool.run(wait_for_flag, started, release))
        await asyncio.to_thread(wait_for, lambda: started.value == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set(1)
        assert await pool.run(pid_of) == pid  # the same worker: it was not killed


async def test_per_call_kill_on_cancel_overrides_the_pools_default() -> None:
    async with ferrio.ProcessPool(1) as pool:
        started = ferrio.SharedCounter(0)
        pid = await pool.run(pid_of)
        task = asyncio.ensure_future(pool.run(mark_then_sleep, started, 30, kill_on_cancel=True))
        await asyncio.to_thread(wait_for, lambda: started.value == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await pool.run(pid_of) != pid


def test_cancelling_a_queued_future_drops_it() -> None:
    with ferrio.ProcessPool(1) as pool:
        started, release = ferrio.SharedCounter(0), ferrio.SharedCounter(0)
        first = pool.submit(wait_for_flag, started, release)
        wait_for(lambda: started.value == 1)
        ran = ferrio.SharedCounter(0)
        later = [pool.submit(add_many, ran, 1) for _ in range(3)]
        cancelled = [f.cancel() for f in later]
        release.set(1)
        assert first.result(timeout=30) == "released"
    # One call may already sit in the busy worker's socket and run; the others are dropped.
    assert sum(cancelled) >= 2
    assert ran.value == 3 - sum(cancelled)


# -- lifecycle -------------------------------------------------------------------------------------


def test_initializer_runs_in_every_worker_with_shared_values() -> None:
    counter = ferrio.SharedCounter(0)
    with ferrio.ProcessPool(2, initializer=init_worker, initargs=(counter, "tagged")) as pool:
        tag, value = pool.submit(read_worker_state).result(timeout=30)
        assert tag == "tagged"
        assert value >= 101
    assert counter.value in (101, 102)  # one or two workers started, each added 1; one call added 100


async def test_a_failing_initializer_breaks_the_pool_with_the_cause() -> None:
    pool = ferrio.ProcessPool(1, initializer=failing_init)
    with pytest.raises(ferrio.BrokenProcessPool, match="the initializer failed") as info:
        await pool.run(square, 1)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "cannot initialize" in str(info.value.__cause__)
    with pytest.raises(ferrio.BrokenProcessPool, match="broken pool"):
        await pool.run(square, 1)
    pool.shutdown()


async def test_a_worker_killed_before_it_is_ready_is_replaced() -> None:
    inits = ferrio.SharedCounter(0)
    async with ferrio.ProcessPool(1, initializer=block_first_init, initargs=(inits,)) as pool:
        call = asyncio.ensure_future(pool.run(square, 6))
        await asyncio.to_thread(wait_for, lambda: inits.value == 1)
        (first,) = pool.worker_pids()
        os.kill(first, signal.SIGKILL)
        assert await call == 36  # run by the replacement; the call had not started
        assert pool.stats().workers_started == 2


async def test_a_worker_that_exits_before_it_is_ready_breaks_the_pool() -> None:
    async with ferrio.ProcessPool(1, initializer=exit_in_init) as pool:
        with pytest.raises(ferrio.BrokenProcessPool, match="exited with code 3 before it was ready"):
            await pool.run(square, 1)


def test_max_tasks_per_child_replaces_workers() -> None:
    with ferrio.ProcessPool(1, max_tasks_per_child=2) as pool:
        pids = [pool.submit(pid_of).result(timeout=30) for _ in range(6)]
        futures = [pool.submit(square, i) for i in range(10)]  # pipelined past a retiring worker
        assert [f.result(timeout=30) for f in futures] == [i * i for i in range(10)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
    assert pool.stats().crashed == 0


def test_shutdown_waits_for_queued_work() -> None:
    pool = ferrio.ProcessPool(1)
    futures = [pool.submit(square, i) for i in range(20)]
    pool.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == [i * i for i in range(20)]
    with pytest.raises(RuntimeError, match="after the pool was shut down"):
        pool.submit(square, 1)


def test_shutdown_cancel_futures_cancels_queued_work() -> None:
    pool = ferrio.ProcessPool(1)
    started, release = ferrio.SharedCounter(0), ferrio.SharedCounter(0)
    first = pool.submit(wait_for_flag, started, release)
    wait_for(lambda: started.value == 1)
    futures = [pool.submit(square, i) for i in range(10)]
    threading.Timer(0.05, release.set, (1,)).start()
    pool.shutdown(wait=True, cancel_futures=True)
    assert first.result(timeout=0) == "released"
    assert sum(f.cancelled() for f in futures) >= 9  # one may be in the worker's socket already


async def test_run_after_shutdown_raises() -> None:
    pool = ferrio.ProcessPool(1)
    pool.shutdown()
    with pytest.raises(RuntimeError, match=r"ProcessPool.run\(\) cannot schedule new work after the pool was shut"):
        await pool.run(square, 1)


def test_interpreter_exit_with_busy_workers_is_prompt_and_leaves_no_process(run_python_in_tmp) -> None:
    result = run_python_in_tmp(
        """
        import os, sys, time, ferrio

        def forever(_):
            time.sleep(600)

        if __name__ == "__main__":
            pool = ferrio.ProcessPool(2)
            futures = [pool.submit(forever, i) for i in range(6)]
            while len(pool.worker_pids()) < 2 or pool.stats().running < 2:
                time.sleep(0.01)  # polling: wait until both workers run a call
            print(" ".join(map(str, pool.worker_pids())), flush=True)
            sys.exit(0)  # with the pool busy and calls queued
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 2
    wait_for(lambda: not any(process_alive(p) for p in pids), timeout=10)


def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path) -> None:
    # No shutdown, no atexit: the kernel's parent-death signal (and the forkserver exiting with
    # its parent) must take the workers down.
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "orphans.py"
    script.write_text(
        textwrap.dedent(
            """
            import time, ferrio

            def forever(_):
                time.sleep(600)

            if __name__ == "__main__":
                pool = ferrio.ProcessPool(2)
                futures = [pool.submit(forever, i) for i in range(2)]
                while pool.stats().running < 2:
                    time.sleep(0.01)  # polling: wait until both workers run a call
                print(" ".join(map(str, pool.worker_pids())), flush=True)
                time.sleep(600)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, line
        proc.kill()
        proc.wait(30)
        wait_for(lambda: not any(process_alive(p) for p in pids), timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_pool_collected_without_shutdown_stops_its_workers() -> None:
    pool = ferrio.ProcessPool(1)
    pid = pool.submit(pid_of).result(timeout=30)
    thread = pool._core.thread
    del pool
    import gc

    gc.collect()
    assert thread is not None
    thread.join(30)
    assert not thread.is_alive()
    assert not process_alive(pid)


# -- output and logging ----------------------------------------------------------------------------


async def test_worker_log_records_reach_the_parents_loggers_with_the_worker_pid(
    pool: ferrio.ProcessPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    root = logging.getLogger()
    # Workers take the root logger's level when they start: this pool starts after caplog set it.
    async with ferrio.ProcessPool(1) as fresh:
        pid = await fresh.run(log_something, 3)
        assert pid == 3
        worker_pid = await fresh.run(pid_of)
    records = [r for r in caplog.records if r.name == "blocks(3)"]
    assert len(records) == 1
    assert records[0].process == worker_pid != os.getpid()
    assert records[0].getMessage() == f"running in {worker_pid}"
    assert not [r for r in caplog.records if r.name == "ferrio.tests"]
    assert root.level == logging.INFO


def test_worker_output_reaches_the_inherited_stdout(run_python_in_tmp) -> None:
    result = run_python_in_tmp(
        """
        import ferrio

        def hello(n):
            print(f"hello from the worker {n}", flush=True)
            return n

        if __name__ == "__main__":
            with ferrio.ProcessPool(1) as pool:
                assert pool.submit(hello, 7).result(timeout=30) == 7
        """
    )
    assert result.returncode == 0, result.stderr
    assert "hello from the worker 7" in result.stdout


def test_lines_printed_by_workers_at_once_do_not_tear(run_python_in_tmp) -> None:
    # multiprocessing gives workers unbuffered output, where print() writes the text and its "\n"
    # apart, so two workers printing at once interleaved halves of lines ("howare", then "").
    result = run_python_in_tmp(
        """
        import time
        import ferrio

        def shout(started, n):
            started.add(1)
            deadline = time.monotonic() + 10
            while started.value < 2 and time.monotonic() < deadline:
                pass  # both workers print at the same time
            for i in range(2000):
                print(f"worker-line-{n}-{i}")
            return n

        if __name__ == "__main__":
            started = ferrio.SharedCounter(0)
            with ferrio.ProcessPool(2) as pool:
                calls = [pool.submit(shout, started, n) for n in range(2)]
                assert [c.result(timeout=30) for c in calls] == [0, 1]
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines) == sorted(f"worker-line-{n}-{i}" for n in range(2) for i in range(2000))


def test_functions_of_an_interactive_main_travel_by_value_and_share_globals() -> None:
    # As in a notebook: no file to import, so functions go by value, and an initializer's globals
    # must still be seen by the functions called later (the documents' shared-counter pattern).
    result = run_python(
        "import ferrio\n"
        "factor = None\n"
        "def init(f):\n"
        "    global factor\n"
        "    factor = f\n"
        "def scale(x):\n"
        "    return factor * x\n"
        "with ferrio.ProcessPool(1, initializer=init, initargs=(3,), start_method='spawn') as pool:\n"
        "    print(pool.submit(scale, 5).result(timeout=30), pool.submit(scale, 7).result(timeout=30))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "15 21"


# -- shared values ---------------------------------------------------------------------------------


def test_shared_counter_counts_from_threads_and_processes_at_once(pool: ferrio.ProcessPool) -> None:
    counter = ferrio.SharedCounter(0)
    futures = [pool.submit(add_many, counter, 5_000) for _ in range(4)]
    threads = [threading.Thread(target=add_many, args=(counter, 5_000)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [f.result(timeout=30) for f in futures] == [5_000] * 4
    assert counter.value == 40_000


def test_shared_value_operations() -> None:
    v = ferrio.SharedValue(1.5)
    assert v.add(2.25) == 3.75
    assert v.compare_exchange(3.75, -1.0) == (True, 3.75)
    assert v.compare_exchange(3.75, 0.0) == (False, -1.0)
    assert v.swap(2.0) == -1.0
    v.value = 4.0
    assert v.get() == 4.0
    assert repr(v) == "ferrio.SharedValue(4.0)"
    c = ferrio.SharedCounter(2**63 - 1)
    assert c.add(1) == -(2**63)  # wraps at 64 bits
    with pytest.raises(TypeError, match="expected an int as its initial value"):
        ferrio.SharedCounter(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected an int or a float"):
        ferrio.SharedValue("1")  # type: ignore[arg-type]
    with pytest.raises(OverflowError, match="does not fit"):
        ferrio.SharedValue(2**64)
    with pytest.raises(TypeError, match=r"can only be sent to ferrio\.ProcessPool workers"):
        pickle.dumps(c)


def _bump_in_child(counter: ferrio.SharedCounter) -> None:
    counter.add(5)


def test_shared_counter_goes_to_a_multiprocessing_process_at_start() -> None:
    import multiprocessing

    counter = ferrio.SharedCounter(1)
    proc = multiprocessing.get_context("spawn").Process(target=_bump_in_child, args=(counter,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert counter.value == 6


# -- bounded stress --------------------------------------------------------------------------------


async def test_random_external_kills_fail_only_the_calls_they_hit() -> None:
    # Bounded: 300 calls of ~2 ms, 10 external SIGKILLs. A hang here means a lost call (deadlock).
    async with ferrio.ProcessPool(2) as pool:
        started = ferrio.SharedCounter(0)
        tasks = [asyncio.ensure_future(pool.run(mark_then_sleep, started, 0.002)) for _ in range(300)]
        kills = 0
        rng = random.Random(3)
        while kills < 10 and not all(t.done() for t in tasks):
            await asyncio.sleep(rng.uniform(0.005, 0.02))
            # Workers running a call (a worker killed while starting is another test's case).
            with pool._core.lock:
                pids = [w.pid for w in pool._core.workers.values() if w.tasks]
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                except ProcessLookupError:  # killed a moment ago and reaped since we looked
                    continue
                kills += 1
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if not isinstance(r, str)]
    assert all(isinstance(r, ferrio.WorkerCrashed) for r in failures), failures
    assert len(failures) <= kills
    assert results.count("finished") == 300 - len(failures)
    assert pool.stats().crashed == len(failures)


async def test_pools_with_crashes_shut_down_promptly_again_and_again() -> None:
    # Bounded: 12 pools x 40 calls, 2 of which kill their worker. Each crash and replacement wakes
    # the manager thread; a lost wake-up (found by the benchmark) hung the shutdown here.
    for round_ in range(12):
        doomed = frozenset({round_ % 40, (round_ * 7 + 3) % 40})
        async with ferrio.ProcessPool(2) as pool:
            results = await asyncio.gather(*(pool.run(die_if, i, doomed) for i in range(40)), return_exceptions=True)
        assert {i for i, r in enumerate(results) if isinstance(r, ferrio.WorkerCrashed)} == doomed


def test_fork_of_a_process_with_a_pool_gives_the_child_a_fresh_default(run_python_in_tmp) -> None:
    result = run_python_in_tmp(
        """
        import os, ferrio

        def sq(x):
            return x * x

        if __name__ == "__main__":
            pool = ferrio.ProcessPool(1)
            assert pool.submit(sq, 3).result(timeout=30) == 9
            pid = os.fork()
            if pid == 0:
                try:
                    pool.submit(sq, 2)
                except RuntimeError as e:
                    assert "created in the parent process before os.fork()" in str(e)
                    fresh = ferrio.ProcessPool(1)
                    code = 0 if fresh.submit(sq, 4).result(timeout=30) == 16 else 1
                    fresh.shutdown()
                    os._exit(code)
                os._exit(2)
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status))
            pool.shutdown()
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
