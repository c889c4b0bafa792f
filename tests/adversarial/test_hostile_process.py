"""Hostile tests of ferrio.ProcessPool: payloads sized to fill sockets, descriptor shortages, kills
of workers that are still starting, pickling that raises, timeouts no clock can reach.

Every wait is bounded; a hang here means a deadlock between the pool's manager and a worker.
Hand-offs with a worker go through ferrio.SharedCounter, polled under a deadline (labelled: no
event crosses a process boundary otherwise).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import signal
import threading
import time

import ferrio
import pytest
from conftest import LoopTicker, process_alive, run_python, wait_for, wait_for_flag
from ferrio import _process_manager, _wire

pytestmark = pytest.mark.usefixtures("no_process_leaks")

#: Just under the size from which buffers travel through shared memory: these go in the socket,
#: and each is several times what a Unix socket buffers.
UNDER = _wire.LARGE - 4096


# -- functions the workers run --------------------------------------------------------------------


def big_echo(payload: bytes | None, fill: int) -> bytes | None:
    return None if payload is None else bytes([fill]) * UNDER


def tag_of(payload: bytes, fill: int) -> tuple[int, int, bytes]:
    # Reads back what arrived and returns a large buffer of its own, both through shared memory.
    return len(payload), payload[0], bytes([fill]) * (_wire.LARGE + 123)


def square(x: int) -> int:
    return x * x


def init_then_wait(pid_box: ferrio.SharedCounter, inits: ferrio.SharedCounter, release: ferrio.SharedCounter) -> None:
    pid_box.value = os.getpid()
    inits.add(1)
    deadline = time.monotonic() + 30
    while release.value == 0 and time.monotonic() < deadline:  # polling: the parent releases us
        time.sleep(0.001)


def segfault_in_init() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


class RaisesOnReduce:
    def __reduce__(self):  # type: ignore[override]
        raise RuntimeError("no pickling me")


class FailsToUnpickle:
    def __reduce__(self):  # type: ignore[override]
        return (_refuse, ())


def _refuse() -> None:
    raise ValueError("no unpickling me")


def returns(what: str) -> object:
    return {"reduce": RaisesOnReduce, "unpickle": FailsToUnpickle}[what]()


class BadError(Exception):
    def __reduce__(self):  # type: ignore[override]
        raise RuntimeError("this error cannot travel")


def raise_bad_error() -> None:
    raise BadError("boom")


def echo(x: object) -> object:
    return x


def log_unloadable(n: int) -> int:
    logging.getLogger("hostile").warning("with a bad extra", extra={"bad": FailsToUnpickle()})
    return n


def log_plain(n: int) -> int:
    logging.getLogger("hostile").warning("plain %d", n)
    return n


class UnloadableError(Exception):
    def __reduce__(self):  # type: ignore[override]
        return (_refuse, ())


def init_raises_unloadable() -> None:
    raise UnloadableError("from the initializer")


class BadRepr:
    """A callable whose __repr__ raises, and which has no __qualname__ of its own."""

    def __call__(self, x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x * x

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@pytest.fixture
def always_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipelining on whenever every worker is busy, however long calls take: a loaded machine
    would otherwise keep the running average of call times above the threshold."""
    monkeypatch.setattr(_process_manager, "_PIPELINE_BELOW", math.inf)


# -- item 1: the manager and a worker writing to each other at once --------------------------------


@pytest.mark.usefixtures("always_pipeline")
def test_pipelined_payloads_under_the_shm_threshold_both_ways_do_not_deadlock() -> None:
    # Pairs of calls with ~1 MB arguments and results (in the socket, not shared memory) between
    # runs of short calls, pipelined: a call written behind one whose result is on its way back.
    # Bounded: 600 calls, 20 s. A timeout here is the deadlock.
    pool = ferrio.ProcessPool(2)
    try:
        futures = []
        submitted = threading.Event()

        def submit_all() -> None:
            for i in range(600):
                big = i % 10 < 2
                futures.append(pool.submit(big_echo, bytes([i % 256]) * UNDER if big else None, i % 256))
            submitted.set()

        submitter = threading.Thread(target=submit_all)
        submitter.start()
        assert submitted.wait(20), "submit() blocked: it waited on a worker's socket"
        _, pending = concurrent.futures.wait(futures, timeout=20)
        assert not pending, f"{len(pending)} calls never finished: the pool deadlocked"
        for i, f in enumerate(futures):
            r = f.result()
            if i % 10 < 2:
                assert r == bytes([i % 256]) * UNDER
            else:
                assert r is None
        submitter.join(5)
    finally:
        for pid in pool.worker_pids():  # a deadlocked pool would never let go of them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pool.shutdown(wait=True)


@pytest.mark.usefixtures("always_pipeline")
async def test_pipelined_shared_memory_buffers_are_not_overwritten_before_they_are_read() -> None:
    # Large buffers both ways, pipelined: each side must not reuse its shared-memory arena for
    # a frame while the other may not have read the last one. Every result must carry its own
    # call's bytes.
    async with ferrio.ProcessPool(2) as pool:
        await asyncio.gather(*(pool.run(square, i) for i in range(10)))
        calls = [pool.run(tag_of, bytes([i % 251]) * (_wire.LARGE + i), (i * 7) % 251) for i in range(120)]
        results = await asyncio.wait_for(asyncio.gather(*calls), 30)
    for i, (n, first, back) in enumerate(results):
        assert (n, first) == (_wire.LARGE + i, i % 251)
        assert len(back) == _wire.LARGE + 123
        assert back[0] == back[-1] == (i * 7) % 251


# -- item 2: the event loop never waits on a worker's socket ------------------------------------------


@pytest.mark.usefixtures("always_pipeline")
async def test_a_huge_pipelined_payload_does_not_stall_the_event_loop() -> None:
    async with ferrio.ProcessPool(1) as pool:
        assert await pool.run(square, 1) == 1  # the worker is up
        started, release = ferrio.SharedCounter(0), ferrio.SharedCounter(0)
        blocker = asyncio.ensure_future(pool.run(wait_for_flag, started, release))
        await asyncio.to_thread(wait_for, lambda: started.value == 1)
        # The worker runs `blocker` and reads nothing: a payload behind it fills its socket.
        ticks = LoopTicker(0.0005)  # counts from this coroutine's next await on
        saw_ticks = threading.Event()

        def release_when_the_loop_ticked() -> None:
            # Bounded: releases the worker after 5 s anyway, so a stalled loop fails, not hangs.
            deadline = time.monotonic() + 5
            while ticks.count < 50 and time.monotonic() < deadline:  # polling: the loop's own counter
                time.sleep(0.001)
            if ticks.count >= 50:
                saw_ticks.set()
            release.value = 1

        releaser = threading.Thread(target=release_when_the_loop_ticked)
        releaser.start()
        # 8 MB of pickle, in the socket (no single buffer reaches the shared-memory threshold).
        big = asyncio.ensure_future(pool.run(len, [bytes([i % 256]) * 8192 for i in range(1000)]))
        await asyncio.sleep(0)  # run() runs up to its await: pickled and handed over
        # It is pipelined behind `blocker` (the case at stake), not queued.
        assert (pool._core.n_sent, pool._core.n_queued) == (1, 0)
        await asyncio.wait({big})
        ticks.cancel()
        releaser.join(10)
        assert saw_ticks.is_set(), "the event loop stalled while a payload waited for the worker's socket"
        assert await big == 1000
        assert await blocker == "released"


# -- item 13: descriptors run out while a worker starts -------------------------------------------


def test_emfile_while_starting_a_worker_fails_the_call_and_the_pool_stays_usable() -> None:
    result = run_python(
        """
import os, resource, errno, ferrio

def main():
    warm = ferrio.ProcessPool(1)
    assert warm.submit(abs, -1).result(timeout=30) == 1  # the forkserver runs from here on
    warm.shutdown()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    outcomes = []
    for extra in range(16):
        pool = ferrio.ProcessPool(1)
        probe = os.dup(0)
        os.close(probe)
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe + extra, hard))
        try:
            try:
                fut = pool.submit(abs, -2)
            except OSError as e:
                assert e.errno == errno.EMFILE, e
                assert "ProcessPool.submit() could not start the pool's manager thread" in str(e), e
                outcomes.append("refused")
            else:
                try:
                    outcomes.append(fut.result(timeout=30))
                except OSError as e:
                    assert e.errno == errno.EMFILE, e
                    assert "could not start a worker process to run 'abs'" in str(e), e
                    assert "the pool stays usable" in str(e), e
                    outcomes.append("failed")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert pool.submit(abs, -3).result(timeout=30) == 3, outcomes  # usable again
        pool.shutdown()
    print(outcomes)
    assert "failed" in outcomes and 2 in outcomes, outcomes  # short of descriptors, then enough

if __name__ == "__main__":
    main()
""",
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # No start ran out of descriptors half-way through a request to the forkserver, which
    # would have killed it (and every worker it forked).
    assert "EOFError" not in result.stderr, result.stderr


def test_emfile_with_a_worker_alive_lets_the_call_wait_for_it() -> None:
    result = run_python(
        """
import os, resource, ferrio

def main():
    pool = ferrio.ProcessPool(2)
    assert pool.submit(abs, -1).result(timeout=30) == 1  # one worker up; a second starts for a second call
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.dup(0)
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
    try:
        results = [f.result(timeout=30) for f in [pool.submit(abs, -i) for i in range(20)]]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert results == list(range(20)), results
    assert len(pool.worker_pids()) >= 1
    assert [f.result(timeout=30) for f in [pool.submit(abs, -i) for i in range(20)]] == list(range(20))
    pool.shutdown()

if __name__ == "__main__":
    main()
""",
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- item 15: workers killed before they are ready ----------------------------------------------


async def test_workers_killed_while_starting_again_and_again_are_replaced() -> None:
    # Five SIGKILLs in a row to workers still in their initializer (the OOM killer under load):
    # none of them ran a call, so the call waits for a worker that lives, and the pool is fine.
    pid_box, inits, release = ferrio.SharedCounter(0), ferrio.SharedCounter(0), ferrio.SharedCounter(0)
    async with ferrio.ProcessPool(1, initializer=init_then_wait, initargs=(pid_box, inits, release)) as pool:
        call = asyncio.ensure_future(pool.run(square, 6))
        for k in range(1, 6):
            await asyncio.to_thread(wait_for, lambda k=k: inits.value == k)
            os.kill(pid_box.value, signal.SIGKILL)
        await asyncio.to_thread(wait_for, lambda: inits.value == 6)
        release.value = 1
        assert await asyncio.wait_for(call, 20) == 36
        assert await pool.run(square, 7) == 49
        s = pool.stats()
        assert s.workers_started == 6
        assert s.crashed == 0


async def test_workers_that_crash_while_starting_break_the_pool_and_say_so() -> None:
    async with ferrio.ProcessPool(1, initializer=segfault_in_init) as pool:
        with pytest.raises(ferrio.BrokenProcessPool, match=r"killed by SIGSEGV before it was ready \(3 in a row\)"):
            await asyncio.wait_for(pool.run(square, 1), 30)


# -- pickling that raises -------------------------------------------------------------------------


async def test_arguments_and_results_whose_pickling_raises() -> None:
    async with ferrio.ProcessPool(1) as pool:
        with pytest.raises(TypeError, match=r"argument 0 of echo\(\) \(a RaisesOnReduce\) cannot be pickled"):
            await pool.run(echo, RaisesOnReduce())
        with pytest.raises(TypeError, match=r"^'returns' returned 'RaisesOnReduce', which cannot be pickled"):
            await pool.run(returns, "reduce")
        with pytest.raises(RuntimeError, match=r"the result of 'returns' could not be unpickled in the parent"):
            await pool.run(returns, "unpickle")
        with pytest.raises(RuntimeError, match=r"^'raise_bad_error' raised BadError: boom, which cannot be sent"):
            await pool.run(raise_bad_error)
        with pytest.raises(ValueError, match="no unpickling me"):  # unpickling the call, in the worker
            await pool.run(echo, FailsToUnpickle())
        pid = pool.worker_pids()
        assert await pool.run(square, 5) == 25
        assert pool.worker_pids() == pid  # the worker survived all of it


async def test_a_log_record_the_parent_cannot_unpickle_does_not_kill_the_manager(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with ferrio.ProcessPool(1) as pool:
        assert await pool.run(log_unloadable, 3) == 3
        assert await pool.run(square, 4) == 16
    assert any("a log record from worker process" in r.getMessage() for r in caplog.records), caplog.records


async def test_a_parent_log_filter_that_raises_does_not_kill_the_manager(capfd: pytest.CaptureFixture[str]) -> None:
    def explode(record: logging.LogRecord) -> bool:
        raise RuntimeError("a filter that raises")

    logger = logging.getLogger("hostile")
    logger.addFilter(explode)
    try:
        async with ferrio.ProcessPool(1) as pool:
            assert await pool.run(log_plain, 5) == 5
            assert await pool.run(log_plain, 6) == 6
    finally:
        logger.removeFilter(explode)
    assert "a filter that raises" in capfd.readouterr().err


async def test_an_initializer_error_the_parent_cannot_unpickle_breaks_the_pool_with_a_reason() -> None:
    async with ferrio.ProcessPool(1, initializer=init_raises_unloadable) as pool:
        with pytest.raises(ferrio.BrokenProcessPool, match="its error could not be unpickled in the parent"):
            await asyncio.wait_for(pool.run(square, 1), 20)


async def test_a_callable_whose_repr_raises_still_gets_clear_messages() -> None:
    async with ferrio.ProcessPool(1) as pool:
        assert await pool.run(BadRepr(), 3) == 9
        with pytest.raises(ValueError, match="negative"):
            await pool.run(BadRepr(), -1)
        with pytest.raises(TypeError, match=r"argument 0 of <BadRepr object>\(\) \(a lock\) cannot be pickled"):
            await pool.run(BadRepr(), threading.Lock())


# -- item 14: timeouts no clock reaches, and wrong ones --------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "exc", "match"),
    [
        (1e300, OverflowError, r"ProcessPool.run\(\) got timeout=1e\+300, more than threading.TIMEOUT_MAX"),
        (math.nan, ValueError, r"ProcessPool.run\(\) expected timeout to be a non-negative number"),
        (-1, ValueError, "non-negative number"),
        (-math.inf, ValueError, "non-negative number"),
        (0, ValueError, r"expected timeout to be a positive number of seconds or None, got 0"),
        ("5", TypeError, r"ProcessPool.run\(\) expected timeout to be a number of seconds or None, got '5'"),
        (True, TypeError, "got True of type 'bool'"),
    ],
)
async def test_bad_timeouts_fail_at_the_call_and_the_pool_lives(timeout: object, exc: type, match: str) -> None:
    async with ferrio.ProcessPool(1) as pool:
        with pytest.raises(exc, match=match):
            await pool.run(square, 2, timeout=timeout)
        assert await pool.run(square, 3) == 9


async def test_timeouts_no_clock_reaches_mean_no_limit() -> None:
    async with ferrio.ProcessPool(1) as pool:
        assert await pool.run(square, 2, timeout=math.inf) == 4
        assert await pool.run(square, 3, timeout=threading.TIMEOUT_MAX) == 9  # its deadline is years away
        assert await pool.run(square, 4, timeout=1e-9 + 3600) == 16
        assert await pool.run(square, 5) == 25  # the manager lived through them
        assert pool.stats().timed_out == 0


# -- exit and fork with work in flight ------------------------------------------------------------


def test_exit_with_pipelined_payloads_in_flight_is_prompt_and_leaves_no_process(run_python_in_tmp) -> None:
    result = run_python_in_tmp(
        f"""
        import sys, time, ferrio

        def slow_echo(b):
            time.sleep(0.05)
            return b

        if __name__ == "__main__":
            pool = ferrio.ProcessPool(2)
            for f in [pool.submit(abs, -i) for i in range(100)]:
                f.result(timeout=30)
            futures = [pool.submit(slow_echo, bytes({UNDER})) for _ in range(40)]
            while pool.stats().running < 2:
                time.sleep(0.01)  # polling: wait until both workers run a call
            print(" ".join(map(str, pool.worker_pids())), flush=True)
            sys.exit(0)
        """,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 2
    wait_for(lambda: not any(process_alive(p) for p in pids), timeout=10)


def test_fork_while_the_pool_is_busy_neither_hangs_nor_leaks(run_python_in_tmp) -> None:
    result = run_python_in_tmp(
        """
        import os, sys, time, ferrio

        def wait_for_flag(started, release):
            started.add(1)
            deadline = time.monotonic() + 30
            while release.value == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            return "released"

        if __name__ == "__main__":
            started, release = ferrio.SharedCounter(0), ferrio.SharedCounter(0)
            pool = ferrio.ProcessPool(2)
            futures = [pool.submit(wait_for_flag, started, release) for _ in range(6)]
            futures += [pool.submit(abs, -i) for i in range(50)]
            deadline = time.monotonic() + 20
            while started.value < 2 and time.monotonic() < deadline:
                time.sleep(0.005)  # polling: both workers busy
            pid = os.fork()
            if pid == 0:
                fresh = ferrio.ProcessPool(1)
                ok = fresh.submit(abs, -4).result(timeout=20) == 4
                fresh.shutdown()
                sys.exit(0 if ok else 1)  # a normal exit: atexit hooks run on the parent's pool copy
            release.value = 1
            _, status = os.waitpid(pid, 0)
            results = [f.result(timeout=30) for f in futures]
            assert results[:6] == ["released"] * 6 and results[6:] == list(range(50)), results
            workers = pool.worker_pids()
            pool.shutdown()
            print(os.waitstatus_to_exitcode(status), " ".join(map(str, workers)))
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    code, *pids = result.stdout.split()
    assert code == "0", result.stderr
    wait_for(lambda: not any(process_alive(int(p)) for p in pids), timeout=10)
