"""Hostile use of the bridges: ferrio.run inside running loops, from_thread, blocking portals.

Many nested callers at once, deep nesting, cancellations and Ctrl-C at awkward moments, exit and
fork with work in flight, threads that cannot start, junk awaitables. Every wait is bounded: a
timeout in one of these tests means a deadlock or a hang, which is the bug.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import sys
import textwrap
import threading
import time

import ferrio
import pytest
from conftest import run_on_new_loop, run_python

# -- many nested runs ------------------------------------------------------------------------------


def test_sixty_concurrent_nested_callers_each_using_to_thread(loop_factory) -> None:
    n = 60  # more than the default pool's 40 workers, all blocked at once
    barrier = threading.Barrier(n)

    async def hosted(i: int) -> int:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, 10)
        return await ferrio.to_thread(lambda: i * i)

    async def caller(i: int) -> int:
        return ferrio.run(hosted(i))

    results: list[object] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results.append(run_on_new_loop(loop_factory, lambda: caller(i), 15))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert sorted(results) == [i * i for i in range(n)]  # type: ignore[type-var]
    assert time.monotonic() - t0 < 10  # a few seconds on a loaded machine; deadlocked before


def test_nesting_fifty_deep_with_to_thread_at_every_level(loop_factory) -> None:
    async def level(n: int) -> int:
        below = 0 if n == 0 else ferrio.run(level(n - 1))
        return below + await ferrio.to_thread(lambda: 1)

    assert run_on_new_loop(loop_factory, lambda: level(50), 20) == 51


async def test_a_failing_or_junk_awaitable_leaves_the_hosts_usable() -> None:
    class BadAwait:
        def __await__(self):
            raise LookupError("from __await__")

    class NotAnIterator:
        def __await__(self):
            return 42

    with pytest.raises(LookupError, match="from __await__"):
        ferrio.run(BadAwait())
    with pytest.raises(TypeError):
        ferrio.run(NotAnIterator())
    with pytest.raises(TypeError, match=r"ferrio.run\(\) expected a coroutine or awaitable, got 3"):
        ferrio.run(3)  # type: ignore[arg-type]
    assert ferrio.run(asyncio.sleep(0, "still works")) == "still works"


# -- cancellation and Ctrl-C -----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
async def test_cancelling_the_task_blocked_in_a_nested_run_cancels_the_hosted_coroutine() -> None:
    # A signal handler is what cancels a task on a frozen loop (asyncio.run's Ctrl-C handler does
    # this): it runs on the main thread while that thread waits for the hosted coroutine.
    assert threading.current_thread() is threading.main_thread()
    waiting, cleaned_up = threading.Event(), threading.Event()
    blocked: list[asyncio.Task] = []

    async def hosted() -> None:
        try:
            waiting.set()
            await asyncio.sleep(30)
        finally:
            cleaned_up.set()

    async def blocked_caller() -> None:
        blocked.append(asyncio.current_task())  # type: ignore[arg-type]
        threading.Thread(target=lambda: waiting.wait(10) and signal.raise_signal(signal.SIGUSR1)).start()
        ferrio.run(hosted())

    before = signal.signal(signal.SIGUSR1, lambda *_: blocked[0].cancel())
    try:
        task = asyncio.ensure_future(blocked_caller())
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        signal.signal(signal.SIGUSR1, before)
    assert task.cancelled()
    assert cleaned_up.is_set()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_ctrl_c_in_a_nested_run_at_random_moments(kind: str) -> None:
    if kind == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
    code = textwrap.dedent(
        f"""
        import asyncio, os, random, signal, sys, threading, time, ferrio
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the run may have started with SIGINT ignored
        new_loop = asyncio.new_event_loop
        if "{kind}" == "uvloop":
            import uvloop
            new_loop = uvloop.new_event_loop

        async def hosted(depth):
            if depth:
                return ferrio.run(hosted(depth - 1))
            return await ferrio.to_thread(time.sleep, 0.001)

        async def main(delay):
            threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
            while True:   # nested runs back to back, until Ctrl-C lands somewhere in them
                ferrio.run(hosted(random.randrange(3)))
                await asyncio.sleep(0)

        for delay in (0.0, 0.003, 0.01, 0.03, 0.07):
            loop = new_loop()
            try:
                loop.run_until_complete(main(delay))
            except (KeyboardInterrupt, asyncio.CancelledError):
                pass
            finally:
                loop.close()
        # Hosts were left mid-job by each Ctrl-C; they still serve, and exit still joins them.
        print(new_loop().run_until_complete(hosted(2)) is None)
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True\n"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_a_nested_coroutine_ignores_cancellation_is_bounded() -> None:
    code = textwrap.dedent(
        """
        import asyncio, os, signal, sys, threading, time, ferrio
        from ferrio import _loops
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the run may have started with SIGINT ignored
        _loops._CANCEL_GRACE = 0.3   # how long a cancelled nested run waits for clean-up
        waiting = threading.Event()

        async def stubborn():
            waiting.set()
            for _ in range(100):
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    pass   # refuses to be cancelled: the caller must not wait for it forever

        async def main():
            threading.Thread(target=lambda: waiting.wait(10) and os.kill(os.getpid(), signal.SIGINT)).start()
            ferrio.run(stubborn())

        t0 = time.monotonic()
        try:
            asyncio.new_event_loop().run_until_complete(main())
        except KeyboardInterrupt:
            print("KeyboardInterrupt", time.monotonic() - t0 < 3)
        os._exit(0)   # the stubborn coroutine is still running on its host: do not wait for it
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "KeyboardInterrupt True\n"


# -- exit, fork, threads that cannot start -------------------------------------------------------------


@pytest.mark.parametrize(
    "setup",
    [
        "portal.submit(forever)",  # a task waiting, cancelled at exit
        "portal.submit(stubborn)",  # a task that ignores cancellation: exit gives up on it, bounded
        "portal.submit(time.sleep, 30)",  # the portal's loop blocked in a sync call
        "threading.Thread(target=portal.call, args=(forever,), daemon=True).start()",  # a thread waiting on it
    ],
)
def test_exit_with_an_open_portal_is_prompt(setup: str) -> None:
    code = textwrap.dedent(
        f"""
        import asyncio, sys, threading, time, ferrio
        from ferrio import _portal
        _portal._EXIT_TIMEOUT = 0.5
        async def forever():
            await asyncio.sleep(60)
        async def stubborn():
            for _ in range(600):
                try:
                    await asyncio.sleep(0.1)
                except asyncio.CancelledError:
                    pass
        cm = ferrio.start_blocking_portal()
        portal = cm.__enter__()
        {setup}
        portal.call(asyncio.sleep, 0.01) if "time.sleep" not in {setup!r} else None
        print("leaving", flush=True)
        """
    )
    t0 = time.monotonic()
    proc = run_python(code, timeout=20)  # a timeout here means exit hung
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "leaving\n"
    assert "Fatal Python error" not in proc.stderr
    assert time.monotonic() - t0 < 10


def test_exit_while_a_daemon_thread_is_blocked_in_a_nested_run() -> None:
    code = textwrap.dedent(
        """
        import asyncio, threading, ferrio
        hosted = threading.Event()
        async def forever():
            hosted.set()
            await asyncio.sleep(60)
        async def caller():
            ferrio.run(forever())
        threading.Thread(target=asyncio.run, args=(caller(),), daemon=True).start()
        assert hosted.wait(10)
        print("leaving", flush=True)
        """
    )
    proc = run_python(code, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "leaving\n"
    assert "Fatal Python error" not in proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_nested_run_in_a_child_forked_while_hosts_idle_and_busy() -> None:
    code = textwrap.dedent(
        """
        import asyncio, os, signal, threading, warnings, ferrio
        warnings.simplefilter("ignore", DeprecationWarning)   # "fork() in a multi-threaded process"
        busy, release = threading.Event(), threading.Event()

        async def where():
            return threading.current_thread().name

        async def hold():
            busy.set()
            await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)

        async def nested(coro):
            return ferrio.run(coro)

        holder = threading.Thread(target=asyncio.run, args=(nested(hold()),))
        holder.start()
        assert busy.wait(10)                     # a busy host
        asyncio.run(nested(where()))            # and an idle one
        pid = os.fork()
        if pid == 0:
            signal.alarm(10)   # if it hangs anyway, do not outlive the test
            # Neither host exists here: a nested run must start a new one, not hand work to a ghost.
            name = asyncio.run(nested(where()))
            os._exit(0 if name.startswith("ferrio-run-host-") else 1)
        release.set()
        holder.join(10)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "0\n"


def test_threads_that_cannot_start_give_clear_errors() -> None:
    code = textwrap.dedent(
        """
        import asyncio, threading, warnings, ferrio
        warnings.simplefilter("error")   # a coroutine left never awaited would fail here
        async def trivial():
            return 1
        async def main():
            threading.stack_size(2**40)  # no thread can be started any more
            try:
                ferrio.run(trivial())
            except RuntimeError as e:
                print(e)
            try:
                ferrio.start_blocking_portal().__enter__()
            except RuntimeError as e:
                print(e)
        asyncio.run(main())
        """
    )
    proc = run_python(code, timeout=20)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ferrio.run() could not start a thread to host the coroutine"), lines
    assert "await the coroutine directly instead" in lines[0]
    assert lines[1].startswith("ferrio.start_blocking_portal() could not start the portal's thread"), lines


# -- portals ---------------------------------------------------------------------------------------


def test_cancel_storm_on_portal_futures(loop_factory) -> None:
    runs: dict[int, int] = {}
    n = 400

    async def job(i: int) -> int:
        runs[i] = runs.get(i, 0) + 1
        await asyncio.sleep(0)
        return i

    def sync_job(i: int) -> int:
        runs[i] = runs.get(i, 0) + 1
        return i

    with ferrio.start_blocking_portal(loop_factory) as portal:
        futs = [portal.submit(job if i % 2 else sync_job, i) for i in range(n)]
        go = threading.Barrier(4)

        def canceller(k: int) -> None:
            go.wait(10)
            for f in futs[k::4]:
                f.cancel()

        threads = [threading.Thread(target=canceller, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        _, pending = concurrent.futures.wait(futs, timeout=10)
        assert not pending, "futures never resolved"
    assert all(count == 1 for count in runs.values()), "a call ran twice"
    for i, f in enumerate(futs):
        if not f.cancelled():
            assert f.result(0) == i
            assert runs[i] == 1


def test_many_threads_calling_a_portal_while_it_stops(loop_factory) -> None:
    stop_now = threading.Event()
    outcomes: list[str] = []

    def hammer(portal: ferrio.BlockingPortal) -> None:
        # Calls until the portal refuses one: a fixed count could all finish before stop() on a
        # busy machine, and say nothing about calls made while it stops.
        deadline = time.monotonic() + 20
        i = 0
        while time.monotonic() < deadline:
            if i == 20:
                stop_now.set()
            try:
                assert portal.call(asyncio.sleep, 0, i) == i
                outcomes.append("ok")
            except RuntimeError as e:
                outcomes.append("refused" if "stopped" in str(e) or "closed" in str(e) else repr(e))
                return
            i += 1
        outcomes.append("never refused")

    portal = ferrio.BlockingPortal(loop_factory)
    threads = [threading.Thread(target=hammer, args=(portal,)) for _ in range(8)]
    for t in threads:
        t.start()
    assert stop_now.wait(10)
    portal.stop()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a caller hung on a stopping portal"
    assert outcomes.count("refused") == 8, [o for o in outcomes if o != "ok"]
    assert portal._loop.is_closed()


def test_a_task_that_ends_the_portals_loop_leaves_no_call_hanging(loop_factory) -> None:
    gate = threading.Event()
    deaths: list[asyncio.Task[None]] = []

    async def die() -> None:
        raise SystemExit  # escapes run_forever: the portal's loop ends at once

    def spawn_death_then_wait() -> None:
        deaths.append(asyncio.get_running_loop().create_task(die()))  # runs ahead of the calls below
        gate.wait(10)

    with ferrio.start_blocking_portal(loop_factory) as portal:
        portal.submit(spawn_death_then_wait)
        late = [portal.submit(len, "queued behind the death") for _ in range(5)]
        gate.set()
        _, pending = concurrent.futures.wait(late, timeout=10)
        assert not pending, "a call was left pending by a loop that ended"
        portal._thread.join(10)
        refused = r"BlockingPortal.call\(\) was called on a blocking portal that has stopped"
        with pytest.raises(RuntimeError, match=refused):
            portal.call(len, "")
    # Leaving the block stopped nothing more and raised nothing: the portal had already stopped.
    assert portal._loop.is_closed()
    assert isinstance(deaths[0].exception(), SystemExit)


# -- from_thread -------------------------------------------------------------------------------------


def test_from_thread_into_a_loop_that_closes_mid_call_raises() -> None:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    errors: list[BaseException] = []

    async def get_token() -> ferrio.EventLoopToken:
        return ferrio.current_token()

    token = loop.run_until_complete(get_token())

    async def never_ends() -> None:
        started.set()
        await asyncio.sleep(60)

    def worker() -> None:
        try:
            ferrio.from_thread.run(never_ends, token=token)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()

    async def until_started() -> None:
        while not started.is_set():  # polling: the loop must run for the call to start
            await asyncio.sleep(0.001)

    loop.run_until_complete(until_started())
    loop.close()  # with the call's task still pending
    t.join(10)
    assert not t.is_alive()
    assert "the event loop closed before the call finished" in str(errors[0])


async def test_from_thread_from_many_threads_and_from_a_finalizer() -> None:
    token = ferrio.current_token()
    seen: list[int] = []

    class CallsBackWhenCollected:
        def __del__(self) -> None:
            seen.append(ferrio.from_thread.run_sync(len, "abc", token=token))

    def worker(i: int) -> int:
        CallsBackWhenCollected()  # dropped at once: its __del__ calls into the loop from this thread
        return ferrio.from_thread.run_sync(lambda: i) + sum(ferrio.from_thread.run_sync(int, "1") for _ in range(20))

    results = await asyncio.gather(*(ferrio.to_thread(worker, i) for i in range(16)))
    assert results == [i + 20 for i in range(16)]
    assert seen == [3] * 16


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_waiting_on_a_blocked_loop_gives_the_call_up() -> None:
    code = textwrap.dedent(
        """
        import asyncio, os, signal, threading, ferrio
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the run may have started with SIGINT ignored
        ran, tokens = [], []
        blocked, release = threading.Event(), threading.Event()

        def loop_thread():
            loop = asyncio.new_event_loop()
            async def main():
                tokens.append(ferrio.current_token())
                blocked.set()
                release.wait(10)              # sync code blocks the loop: calls sent to it wait
                await asyncio.sleep(0.05)     # then the loop runs again, and whatever was queued
            loop.run_until_complete(main())
            loop.close()

        t = threading.Thread(target=loop_thread)
        t.start()
        assert blocked.wait(10)
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            ferrio.from_thread.run_sync(ran.append, "ran", token=tokens[0])
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        release.set()
        t.join(10)
        print(ran)   # given up before it started: it must never run
        """
    )
    proc = run_python(code, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "KeyboardInterrupt\n[]\n"


class BrokenRepr:
    """Junk whose ``__repr__`` raises, and is huge when it does not."""

    def __init__(self, huge: bool = False) -> None:
        self.huge = huge

    def __repr__(self) -> str:
        if self.huge:
            return "x" * 1_000_000
        raise RuntimeError("__repr__ is broken")


@pytest.mark.parametrize("huge", [False, True])
def test_junk_with_a_hostile_repr_still_gets_a_clear_error(loop_factory, huge: bool) -> None:
    junk = BrokenRepr(huge)
    with pytest.raises(TypeError, match=r"ferrio.run\(\) expected a coroutine or awaitable, got .* of type"):
        ferrio.run(junk)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ferrio.from_thread.run_sync\(\) expected a callable, got "):
        ferrio.from_thread.run_sync(junk)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ferrio.EventLoopToken\(\) expected an asyncio event loop"):
        ferrio.EventLoopToken(junk)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"expected loop_factory to be a callable") as info:
        ferrio.BlockingPortal(junk)  # type: ignore[arg-type]
    assert len(str(info.value)) < 1000  # a huge repr is cut short
    with (
        ferrio.start_blocking_portal(loop_factory) as portal,
        pytest.raises(TypeError, match=r"BlockingPortal.submit\(\) expected a callable .* of type 'BrokenRepr'"),
    ):
        portal.submit(junk)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_finds_the_parents_portal_stopped_and_exits_promptly() -> None:
    code = textwrap.dedent(
        """
        import asyncio, os, signal, time, warnings, ferrio
        warnings.simplefilter("ignore", DeprecationWarning)   # "fork() in a multi-threaded process"
        with ferrio.start_blocking_portal() as portal:
            portal.submit(asyncio.sleep, 30)                  # busy when the child is forked
            t0 = time.monotonic()
            pid = os.fork()
            if pid == 0:
                # The portal's thread does not exist here: a call must be refused, not wait forever,
                # and exit must not wait for it either.
                signal.alarm(10)   # if it hangs anyway, do not outlive the test
                try:
                    portal.call(len, "x")
                    os._exit(2)
                except RuntimeError as e:
                    if "stopped" not in str(e):
                        os._exit(3)
                with ferrio.start_blocking_portal() as own:   # the child can have portals of its own
                    assert own.call(len, "ab") == 2
                raise SystemExit(0)
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status), time.monotonic() - t0 < 4)
            portal.stop(cancel_remaining=True)
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "0 True\n"
