"""ferrio.start_blocking_portal: an event loop in a thread, driven from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading

import ferrio
import pytest
from conftest import until_cancelled


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest):
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


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
