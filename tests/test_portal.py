"""ferrio.start_blocking_portal: an event loop in a thread, driven from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import textwrap
import threading

import ferrio
import pytest
from conftest import run_python, until_cancelled


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def test_call_and_submit(loop_factory) -> None:
    with ferrio.start_blocking_portal(loop_factory) as portal:
        assert portal.call(double, 4) == 8
        assert portal.call(len, "abc") == 3  # sync callables run on the loop's thread
        fut = portal.submit(double, 5)
        assert isinstance(fut, concurrent.futures.Future)
        assert fut.result(10) == 10
        with pytest.raises(ZeroDivisionError):
            portal.call(lambda: 1 / 0)


def test_cancelling_a_submitted_future_cancels_its_task(loop_factory) -> None:
    started, cancelled = threading.Event(), threading.Event()
    forever = until_cancelled(started, cancelled)

    with ferrio.start_blocking_portal(loop_factory) as portal:
        fut = portal.submit(forever)
        assert started.wait(10)
        assert fut.cancel()
        assert cancelled.wait(10)
        assert fut.cancelled()


def test_wrap_async_context_manager(loop_factory) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def resource():
        events.append("enter")
        try:
            yield "value"
        finally:
            events.append("exit")

    with ferrio.start_blocking_portal(loop_factory) as portal:
        with portal.wrap_async_context_manager(resource()) as value:
            assert value == "value"
        with pytest.raises(KeyError), portal.wrap_async_context_manager(resource()):
            raise KeyError("inside")
    assert events == ["enter", "exit", "enter", "exit"]


def test_exit_awaits_running_tasks_and_stops_the_thread(loop_factory) -> None:
    finished = threading.Event()

    async def slow() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    with ferrio.start_blocking_portal(loop_factory) as portal:
        portal.submit(slow)
        thread = portal._thread
    assert finished.is_set()
    assert not thread.is_alive()


def test_exit_on_error_cancels_running_tasks(loop_factory) -> None:
    started, cancelled = threading.Event(), threading.Event()
    forever = until_cancelled(started, cancelled)

    with pytest.raises(ValueError, match="leave"), ferrio.start_blocking_portal(loop_factory) as portal:
        portal.submit(forever)
        assert started.wait(10)
        raise ValueError("leave")
    assert cancelled.is_set()


def test_a_stopped_portal_refuses_calls(loop_factory) -> None:
    with ferrio.start_blocking_portal(loop_factory) as portal:
        pass
    with pytest.raises(RuntimeError, match=r"BlockingPortal.call\(\) was called on a blocking portal that has stopped"):
        portal.call(double, 1)
    with pytest.raises(
        RuntimeError, match=r"BlockingPortal.submit\(\) was called on a blocking portal that has stopped"
    ):
        portal.submit(double, 1)


def test_calling_the_portal_from_its_own_thread_is_refused(loop_factory) -> None:
    with ferrio.start_blocking_portal(loop_factory) as portal:

        def inner() -> None:
            portal.call(len, "x")

        with pytest.raises(RuntimeError, match="was called on the portal's own thread, where it would deadlock"):
            portal.call(inner)


def test_a_future_cancelled_before_its_call_starts_never_runs(loop_factory) -> None:
    holding, release = threading.Event(), threading.Event()
    ran: list[str] = []

    async def record() -> None:
        ran.append("async")

    with ferrio.start_blocking_portal(loop_factory) as portal:
        portal.submit(lambda: holding.set() or release.wait(10))  # holds the loop: what follows waits
        assert holding.wait(10)
        futs = [portal.submit(record), portal.submit(ran.append, "sync")]
        assert all(f.cancel() for f in futs)
        release.set()
        portal.call(len, "")  # sent after them: once it ran, they would have too
    assert ran == []
    assert all(f.cancelled() for f in futs)
    done, _ = concurrent.futures.wait(futs, timeout=10)  # cancelled futures count as done for wait()
    assert done == set(futs)


def test_a_future_whose_task_is_cancelled_is_cancelled(loop_factory) -> None:
    started, cancelled = threading.Event(), threading.Event()
    with ferrio.start_blocking_portal(loop_factory) as portal:
        fut = portal.submit(until_cancelled(started, cancelled))
        assert started.wait(10)
        portal.stop(cancel_remaining=True)
    assert cancelled.is_set()
    assert fut.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        fut.result(0)


async def test_a_portal_started_and_stopped_inside_a_running_loop(loop_factory) -> None:
    closed: list[str] = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append("async generator finalized")

    with ferrio.start_blocking_portal(loop_factory) as portal:
        assert portal.call(double, 2) == 4
        gen = agen()
        assert portal.call(gen.__anext__) == 1  # left suspended: the loop's shutdown must close it
        loop = portal._loop
    assert loop.is_closed()
    assert not portal._thread.is_alive()
    assert closed == ["async generator finalized"]


def test_exit_with_a_portal_left_open_is_prompt_and_cancels_its_tasks() -> None:
    code = textwrap.dedent(
        """
        import asyncio, ferrio
        async def forever():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                print("task cancelled", flush=True)
                raise
        cm = ferrio.start_blocking_portal()   # kept by the module: its generator is finalized at exit
        portal = cm.__enter__()
        fut = portal.submit(forever)
        portal.call(asyncio.sleep, 0)         # the task has started
        """
    )
    proc = run_python(code, timeout=20)  # a timeout here means exit hung
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "task cancelled\n"
    assert proc.stderr == ""


def test_bad_loop_factories_are_refused_at_the_call() -> None:
    with pytest.raises(TypeError, match=r"start_blocking_portal\(\) expected loop_factory to be a callable .* got 42"):
        ferrio.start_blocking_portal(42).__enter__()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"expected loop_factory to return an asyncio event loop, but .* returned 'x'"):
        ferrio.start_blocking_portal(lambda: "x").__enter__()  # type: ignore[arg-type, return-value]
    closed = asyncio.new_event_loop()
    closed.close()
    with pytest.raises(ValueError, match=r"start_blocking_portal\(\) needs a new event loop, .* that is closed"):
        ferrio.start_blocking_portal(lambda: closed).__enter__()


def test_calling_the_portal_from_a_nested_run_it_waits_for_is_refused(loop_factory) -> None:
    with ferrio.start_blocking_portal(loop_factory) as portal:

        async def hosted() -> None:
            # The portal's loop is frozen until this coroutine ends: from here, or from a worker it
            # awaits, waiting for the portal could never end.
            with pytest.raises(RuntimeError, match=r"BlockingPortal.call\(\) would deadlock: the portal's event loop"):
                portal.call(len, "x")
            with pytest.raises(RuntimeError, match=r"BlockingPortal.call\(\) would deadlock"):
                await ferrio.to_thread(portal.call, len, "x")
            with pytest.raises(RuntimeError, match=r"BlockingPortal.stop\(\) would deadlock"):
                portal.stop()

        async def on_the_portal() -> str:
            ferrio.run(hosted())  # sync code on the portal's loop, calling ferrio.run
            return "done"

        assert portal.call(on_the_portal) == "done"


def test_calls_of_junk_are_refused_at_the_call(loop_factory) -> None:
    with ferrio.start_blocking_portal(loop_factory) as portal:
        with pytest.raises(TypeError, match=r"BlockingPortal.call\(\) expected a callable .* got 3 of type 'int'"):
            portal.call(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"BlockingPortal.submit\(\) expected a callable .* got 'f' of type"):
            portal.submit("f")  # type: ignore[arg-type]


def test_a_coroutine_passed_instead_of_its_function_gets_a_hint(loop_factory) -> None:
    coro = double(1)
    try:
        with (
            ferrio.start_blocking_portal(loop_factory) as portal,
            pytest.raises(TypeError, match=r"got the coroutine double\(\) already called; pass the function"),
        ):
            portal.call(coro)  # type: ignore[arg-type]
    finally:
        coro.close()
