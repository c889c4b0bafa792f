"""ferrio.run, syncify and asyncify: coroutines from sync code, loops reused, nesting, Ctrl-C."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import sys
import textwrap
import threading

import ferrio
import pytest
from conftest import run_python

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


async def trivial(x: int = 1) -> int:
    return x


async def loop_id() -> int:
    return id(asyncio.get_running_loop())


def test_run_returns_the_result_and_reuses_this_threads_loop() -> None:
    assert ferrio.run(trivial(5)) == 5
    first = ferrio.run(loop_id())
    assert all(ferrio.run(loop_id()) == first for _ in range(10))


def test_run_accepts_any_awaitable() -> None:
    class Awaitable:
        def __await__(self):
            return trivial(7).__await__()

    assert ferrio.run(Awaitable()) == 7


def test_run_raises_the_coroutines_exception() -> None:
    async def boom() -> None:
        raise LookupError("from the coroutine")

    with pytest.raises(LookupError, match="from the coroutine"):
        ferrio.run(boom())


@pytest.mark.parametrize("bad", [42, None, "coro"])
def test_run_rejects_non_awaitables(bad: object) -> None:
    with pytest.raises(TypeError, match=r"ferrio.run\(\) expected a coroutine or awaitable, got .* of type"):
        ferrio.run(bad)  # type: ignore[arg-type]


def test_run_rejects_an_uncalled_coroutine_function_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"got the coroutine function 'trivial'; call it: ferrio.run\(trivial\(...\)\)"):
        ferrio.run(trivial)  # type: ignore[arg-type]


def test_each_thread_gets_its_own_loop_closed_when_the_thread_ends() -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def grab() -> None:
        seen.append(asyncio.get_running_loop())

    t = threading.Thread(target=lambda: ferrio.run(grab()))
    t.start()
    t.join(10)
    ferrio.run(grab())
    assert seen[0] is not seen[1]
    import gc

    gc.collect()
    assert seen[0].is_closed()


async def test_run_from_inside_a_running_loop_works_without_patching() -> None:
    def legacy_sync_code() -> int:
        return ferrio.run(trivial(11))  # this loop is running: runs elsewhere, this thread blocks

    assert legacy_sync_code() == 11


async def test_nested_run_that_awaits_the_blocked_loops_future_fails_clearly() -> None:
    fut = asyncio.get_running_loop().create_future()

    async def wait_for_blocked() -> None:
        await fut

    with pytest.raises(RuntimeError, match="attached to a different loop"):
        ferrio.run(wait_for_blocked())


async def test_nested_run_calling_back_into_the_blocked_loop_fails_instead_of_deadlocking() -> None:
    token = ferrio.current_token()

    async def call_back() -> None:
        await asyncio.to_thread(ferrio.from_thread.run_sync, print, token=token)

    with pytest.raises(RuntimeError, match=r"would deadlock: the target event loop is blocked in ferrio.run"):
        ferrio.run(call_back())


def test_context_vars_reach_the_coroutine() -> None:
    var.set("from sync")

    async def read() -> str:
        return var.get()

    assert ferrio.run(read()) == "from sync"


def test_syncify_and_asyncify() -> None:
    @ferrio.syncify
    async def ping(host: str) -> str:
        await asyncio.sleep(0)
        return f"pong {host}"

    @ferrio.asyncify
    def blocking(x: int) -> str:
        return threading.current_thread().name

    limiter = ferrio.CapacityLimiter(1)
    pool = ferrio.ThreadPool(1, thread_name_prefix="asyncified")

    @ferrio.asyncify(pool=pool, limiter=limiter)
    def on_pool() -> str:
        return threading.current_thread().name

    assert ping("a") == "pong a"
    assert ping.__name__ == "ping"
    assert asyncio.iscoroutinefunction(blocking)
    assert ferrio.run(blocking(1)).startswith("ferrio-worker-")
    assert ferrio.run(on_pool()) == "asyncified-0"
    pool.shutdown()


def test_decorators_reject_the_wrong_kind_of_function() -> None:
    with pytest.raises(TypeError, match=r"ferrio.syncify expected an async function"):
        ferrio.syncify(len)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ferrio.asyncify expected a sync function, but '.*trivial' is a coroutine"):
        ferrio.asyncify(trivial)
    with pytest.raises(TypeError, match=r"ferrio.asyncify expected pool= to be a ferrio.ThreadPool or None"):
        ferrio.asyncify(pool="p")(len)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_run_cancels_the_coroutine_and_raises_keyboard_interrupt() -> None:
    code = textwrap.dedent(
        """
        import asyncio, os, signal, sys, threading, ferrio
        async def main():
            try:
                threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                sys.stdout.write("coroutine cancelled\\n")
                raise
        try:
            ferrio.run(main())
        except KeyboardInterrupt:
            sys.stdout.write("KeyboardInterrupt\\n")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        print(ferrio.run(asyncio.sleep(0, "loop still usable")))
        """
    )
    proc = run_python(code, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "coroutine cancelled\nKeyboardInterrupt\nloop still usable\n"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_a_nested_run_cancels_the_remote_coroutine() -> None:
    code = textwrap.dedent(
        """
        import asyncio, os, signal, sys, threading, ferrio
        cancelled = threading.Event()
        async def remote():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        async def main():
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
            ferrio.run(remote())   # blocks this loop; Ctrl-C must still get through
        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            sys.stdout.write("KeyboardInterrupt\\n")
        sys.stdout.write(f"remote cancelled {cancelled.wait(10)}\\n")
        """
    )
    proc = run_python(code, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "KeyboardInterrupt\nremote cancelled True\n"


def test_signal_handler_is_left_alone_off_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGINT)
    out = []
    t = threading.Thread(target=lambda: out.append(ferrio.run(trivial(3))))
    t.start()
    t.join(10)
    assert out == [3]
    assert signal.getsignal(signal.SIGINT) is before
