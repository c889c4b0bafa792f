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
from conftest import run_on_new_loop, run_python

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
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the run may have started with SIGINT ignored
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
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the run may have started with SIGINT ignored
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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("runner", ["asyncio.run", "run_until_complete"])
def test_ctrl_c_reaches_the_innermost_of_nested_runs(runner: str) -> None:
    # asyncio.run (3.11+) turns Ctrl-C into a cancellation of the main task; a bare loop gets
    # KeyboardInterrupt. Either way the cancellation must reach the innermost coroutine, though the
    # loops between are frozen and cannot run a cancellation of their own tasks.
    code = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys, threading, ferrio
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the run may have started with SIGINT ignored
        waiting, cancelled = threading.Event(), threading.Event()
        async def innermost():
            try:
                waiting.set()
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        async def middle():
            return ferrio.run(innermost())
        async def main():
            threading.Thread(target=lambda: waiting.wait(10) and os.kill(os.getpid(), signal.SIGINT)).start()
            ferrio.run(middle())
        try:
            if "{runner}" == "asyncio.run":
                asyncio.run(main())
            else:
                asyncio.new_event_loop().run_until_complete(main())
        except KeyboardInterrupt:
            sys.stdout.write("KeyboardInterrupt\\n")
        sys.stdout.write(f"innermost cancelled {{cancelled.wait(10)}}\\n")
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "KeyboardInterrupt\ninnermost cancelled True\n"


def test_signal_handler_is_left_alone_off_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGINT)
    out = []
    t = threading.Thread(target=lambda: out.append(ferrio.run(trivial(3))))
    t.start()
    t.join(10)
    assert out == [3]
    assert signal.getsignal(signal.SIGINT) is before


# -- ferrio.run() inside a running loop: host threads ------------------------------------------------


def test_more_nested_callers_than_pool_workers_can_all_use_to_thread(loop_factory) -> None:
    # One more blocked caller than the default pool has workers, all hosted at once (the barrier),
    # then each needs a worker: hosting on pool workers deadlocked here.
    n = ferrio.default_pool().stats().max_workers + 1
    barrier = threading.Barrier(n)

    async def hosted(i: int) -> int:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, 10)
        return await ferrio.to_thread(lambda: i)

    async def caller(i: int) -> int:
        return ferrio.run(hosted(i))  # this loop is running: the coroutine is hosted elsewhere

    results: list[object] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(run_on_new_loop(loop_factory, lambda: caller(i))))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert sorted(results) == list(range(n))  # type: ignore[type-var]


def test_nesting_deeper_than_the_pool_is_wide(loop_factory) -> None:
    depth = ferrio.default_pool().stats().max_workers + 5

    async def level(n: int) -> str:
        if n == 0:
            return await ferrio.to_thread(lambda: "bottom")
        return ferrio.run(level(n - 1))

    assert run_on_new_loop(loop_factory, lambda: level(depth)) == "bottom"


async def test_nested_runs_reuse_a_host_thread_that_is_no_pool_worker() -> None:
    async def where() -> threading.Thread:
        return threading.current_thread()

    first = ferrio.run(where())
    assert first.name.startswith("ferrio-run-host-")
    assert ferrio.run(where()) is first


async def test_an_idle_host_thread_retires(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferrio import _loops

    monkeypatch.setattr(_loops, "_HOST_IDLE_TIMEOUT", 0.05)

    async def where() -> threading.Thread:
        return threading.current_thread()

    host = ferrio.run(where())
    host.join(10)
    assert not host.is_alive()
    assert ferrio.run(where()) is not host  # the next call starts a new one


def test_host_threads_are_gone_at_exit() -> None:
    code = textwrap.dedent(
        """
        import asyncio, atexit, threading
        # Registered before ferrio is imported, so it runs after ferrio's exit hooks.
        atexit.register(lambda: print(sorted(t.name for t in threading.enumerate() if "host" in t.name)))
        import ferrio

        async def where():
            return threading.current_thread().name

        async def main():
            names = {ferrio.run(where())}
            async def nested():
                return ferrio.run(where())
            names.add(ferrio.run(nested()))   # two levels: two hosts, both idle afterwards
            print(len(names))

        asyncio.run(main())
        """
    )
    proc = run_python(code, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "2\n[]\n"


async def test_context_vars_reach_a_hosted_coroutine() -> None:
    var.set("from the blocked task")

    async def read() -> str:
        return var.get()

    assert ferrio.run(read()) == "from the blocked task"


async def test_a_hosted_coroutine_can_call_back_into_its_host_loop() -> None:
    async def hosted() -> bool:
        loop = asyncio.get_running_loop()
        return await ferrio.to_thread(ferrio.from_thread.run_sync, lambda: asyncio.get_running_loop() is loop)

    assert ferrio.run(hosted()) is True


def test_run_refuses_a_coroutine_that_already_ran() -> None:
    coro = trivial()
    assert ferrio.run(coro) == 1
    with pytest.raises(RuntimeError, match=r"ferrio.run\(\) got the coroutine trivial\(\), which already ran to its"):
        ferrio.run(coro)


def test_run_refuses_a_coroutine_that_started_elsewhere() -> None:
    async def two_steps() -> None:
        await asyncio.sleep(0)

    coro = two_steps()
    coro.send(None)  # suspended at its first await, as if another loop were running it
    try:
        with pytest.raises(RuntimeError, match=r"got the coroutine .*two_steps\(\), which already started elsewhere"):
            ferrio.run(coro)
    finally:
        coro.close()


def test_run_refuses_a_future_of_another_loop() -> None:
    other = asyncio.new_event_loop()
    try:
        fut = other.create_future()
        with pytest.raises(RuntimeError, match=r"ferrio.run\(\) got .*, a future of another event loop"):
            ferrio.run(fut)
    finally:
        other.close()


async def test_nested_run_refuses_a_future_of_the_frozen_loop() -> None:
    fut = asyncio.get_running_loop().create_future()
    with pytest.raises(RuntimeError, match=r"ferrio.run\(\) got .*, a future of another event loop"):
        ferrio.run(fut)


def test_run_accepts_a_future_of_this_threads_loop() -> None:
    async def make() -> asyncio.Future[int]:
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, 9)
        return fut

    assert ferrio.run(ferrio.run(make())) == 9


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX threads")
@pytest.mark.parametrize("lands", ["after the host took the job", "before any host exists"])
def test_ctrl_c_while_a_nested_run_starts_its_host_is_resolved_exactly_once(lands: str) -> None:
    # Ctrl-C can land while thread.start() waits for a new host thread, which may already be running
    # the coroutine (a loaded machine schedules the new thread first). Staged here by a start() that
    # raises KeyboardInterrupt at either moment: the coroutine is then cancelled, or never runs.
    code = textwrap.dedent(
        f"""
        import asyncio, sys, threading, warnings, ferrio
        warnings.simplefilter("error")                      # a coroutine never awaited fails the run
        started, cancelled = threading.Event(), threading.Event()
        start = threading.Thread.start
        def interrupted_start(self):
            if self.name.startswith("ferrio-run-host-"):
                if "{lands}" == "before any host exists":
                    raise KeyboardInterrupt
                start(self)
                started.wait(10)
                raise KeyboardInterrupt
            start(self)
        threading.Thread.start = interrupted_start
        async def hosted():
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        async def main():
            ferrio.run(hosted())
        try:
            asyncio.new_event_loop().run_until_complete(main())
        except KeyboardInterrupt:
            sys.stdout.write("KeyboardInterrupt\\n")
        ran = started.is_set()
        sys.stdout.write(f"started {{ran}} cancelled {{cancelled.wait(10 if ran else 0)}}\\n")
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    ran = lands == "after the host took the job"
    assert proc.stdout == f"KeyboardInterrupt\nstarted {ran} cancelled {ran}\n", proc.stderr
