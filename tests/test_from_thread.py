"""ferrio.from_thread: calls from worker threads back into the loop, tokens, errors."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import ferrio
import pytest

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def test_run_and_run_sync_target_the_loop_that_sent_the_job() -> None:
    loop = asyncio.get_running_loop()
    progress: list[int] = []

    def blocking_step(x: int) -> tuple[int, bool]:
        ferrio.from_thread.run_sync(progress.append, x)
        on_loop = ferrio.from_thread.run_sync(lambda: asyncio.get_running_loop() is loop)
        return ferrio.from_thread.run(double, x), on_loop

    assert await ferrio.to_thread(blocking_step, 21) == (42, True)
    assert progress == [21]


async def test_exceptions_come_back_to_the_worker() -> None:
    async def fail() -> None:
        raise KeyError("on the loop")

    def step() -> str:
        with pytest.raises(KeyError, match="on the loop"):
            ferrio.from_thread.run(fail)
        with pytest.raises(ZeroDivisionError):
            ferrio.from_thread.run_sync(lambda: 1 / 0)
        return "ok"

    assert await ferrio.to_thread(step) == "ok"


async def test_context_vars_are_visible_across_hops() -> None:
    var.set("task value")

    async def read_async() -> str:
        return var.get()

    def step() -> tuple[str, str, str]:
        return var.get(), ferrio.from_thread.run_sync(var.get), ferrio.from_thread.run(read_async)

    assert await ferrio.to_thread(step) == ("task value",) * 3


async def test_token_lets_foreign_threads_call_in() -> None:
    token = ferrio.current_token()
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(ferrio.from_thread.run(double, 4, token=token)))
    t.start()
    await asyncio.to_thread(t.join, 10)
    assert out == [8]


def test_foreign_thread_without_token_gets_no_event_loop_error() -> None:
    with pytest.raises(ferrio.NoEventLoopError, match=r"ferrio.from_thread.run\(\) has no event loop to call into"):
        ferrio.from_thread.run(double, 1)
    with pytest.raises(ferrio.NoEventLoopError, match=r"ferrio.from_thread.run_sync\(\) has no event loop"):
        ferrio.from_thread.run_sync(print)
    assert issubclass(ferrio.NoEventLoopError, RuntimeError)


def test_a_job_submitted_from_sync_code_has_no_loop_to_call() -> None:
    with ferrio.ThreadPool(1) as pool:
        fut = pool.submit(ferrio.from_thread.run_sync, print)
        with pytest.raises(ferrio.NoEventLoopError):
            fut.result(10)


async def test_calling_from_the_loops_own_thread_is_refused() -> None:
    token = ferrio.current_token()
    with pytest.raises(
        RuntimeError, match="called on the event loop's own thread, where waiting for the loop would deadlock"
    ):
        ferrio.from_thread.run_sync(print, token=token)


def test_current_token_without_a_loop() -> None:
    with pytest.raises(
        ferrio.NoEventLoopError, match=r"ferrio.current_token\(\) must be called on an event loop's thread"
    ):
        ferrio.current_token()


async def test_wrong_kinds_of_function_and_token() -> None:
    async def coro() -> None:
        pass

    def step() -> None:
        with pytest.raises(TypeError, match=r"run_sync\(\) expected a sync function, but .* is a coroutine function"):
            ferrio.from_thread.run_sync(coro)
        with pytest.raises(TypeError, match=r"from_thread.run\(\) expected an async function, but .* returned 3"):
            ferrio.from_thread.run(lambda: 3)
        with pytest.raises(TypeError, match=r"expected token= to be a ferrio.EventLoopToken"):
            ferrio.from_thread.run(coro, token="loop")  # type: ignore[arg-type]

    await ferrio.to_thread(step)


def test_loop_closing_while_a_worker_waits_raises_instead_of_hanging() -> None:
    loop = asyncio.new_event_loop()
    token_box: list[ferrio.EventLoopToken] = []
    errors: list[BaseException] = []
    waiting = threading.Event()

    async def get_token() -> None:
        token_box.append(ferrio.current_token())

    loop.run_until_complete(get_token())

    def worker() -> None:
        waiting.set()
        try:
            ferrio.from_thread.run_sync(print, "never runs", token=token_box[0])
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    assert waiting.wait(10)
    loop.close()  # the loop is not running, and now never will: the call can never happen
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1
    assert "closed" in str(errors[0])


async def test_check_cancelled_is_reexported() -> None:
    assert ferrio.from_thread.check_cancelled is ferrio.check_cancelled
    assert await ferrio.to_thread(ferrio.from_thread.check_cancelled) is None


@pytest.mark.parametrize("junk", [None, "loop", 3])
def test_a_token_needs_an_event_loop(junk: object) -> None:
    with pytest.raises(TypeError, match=r"ferrio.EventLoopToken\(\) expected an asyncio event loop, got .* of type"):
        ferrio.EventLoopToken(junk)  # type: ignore[arg-type]


class SignallingLoop(asyncio.SelectorEventLoop):
    """A real selector loop that also says when another thread has queued a call on it."""

    def __init__(self) -> None:
        super().__init__()
        self.queued = threading.Event()

    def call_soon_threadsafe(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        handle = super().call_soon_threadsafe(*args, **kwargs)
        self.queued.set()
        return handle


def test_a_call_sent_just_before_its_loop_froze_is_given_up_and_never_runs() -> None:
    loop = SignallingLoop()
    ran: list[str] = []
    errors: list[BaseException] = []

    async def main() -> threading.Thread:
        token = ferrio.current_token()

        def worker() -> None:
            try:
                ferrio.from_thread.run_sync(ran.append, "ran", token=token)
            except RuntimeError as e:
                errors.append(e)

        t = threading.Thread(target=worker)
        t.start()
        assert loop.queued.wait(10)  # the call is in the loop's queue, and the loop has not run it

        async def wait_for_worker() -> None:
            await asyncio.to_thread(t.join, 10)

        ferrio.run(wait_for_worker())  # freezes this loop until the worker gives up
        await asyncio.sleep(0)  # the given-up call's turn in the queue comes: it must not run
        return t

    try:
        t = loop.run_until_complete(main())
    finally:
        loop.close()
    assert not t.is_alive()
    assert ran == []
    assert len(errors) == 1
    assert "would deadlock: the target event loop is blocked in ferrio.run()" in str(errors[0])


async def test_a_coroutine_passed_instead_of_its_function_gets_a_hint() -> None:
    def step() -> None:
        coro = double(1)
        try:
            with pytest.raises(TypeError, match=r"from_thread.run\(\) expected an async function, but got the corou"):
                ferrio.from_thread.run(coro)  # type: ignore[arg-type]
        finally:
            coro.close()

    await ferrio.to_thread(step)
