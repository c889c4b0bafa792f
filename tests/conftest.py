"""Every ``async def`` test runs on plain asyncio (debug mode on) and on uvloop, each under a
hard timeout so a hang fails the test instead of the CI run."""

from __future__ import annotations

import asyncio
import gc
import inspect
import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest

LOOPS = ["asyncio"]
try:
    import uvloop
except ImportError:  # uvloop does not build on Windows; everywhere else the test extra installs it
    uvloop = None
else:
    LOOPS.append("uvloop")

ASYNC_TEST_TIMEOUT = 30.0

# A test run started with SIGINT ignored (nohup, some CI runners) has no KeyboardInterrupt handler:
# Python installs one only where SIGINT was not ignored, and a child inherits the ignoring. Ctrl-C
# tests send SIGINT to this process or to children, so give this process Python's handler; its
# children then start with the default disposition and install the handler themselves. Only in the
# test run itself: a ProcessPool worker imports this module when it unpickles a test module's
# function, and a worker ignores SIGINT on purpose.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN and multiprocessing.parent_process() is None:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        return uvloop.new_event_loop()
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 1.0  # debug mode's 0.1 s flags a busy CI machine, not a bug
    return loop


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if inspect.iscoroutinefunction(metafunc.function):
        metafunc.fixturenames.append("loop_kind")
        metafunc.parametrize("loop_kind", LOOPS)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kind = pyfuncitem.callspec.params["loop_kind"]
    argnames = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    loop = new_loop(kind)
    try:
        loop.run_until_complete(asyncio.wait_for(pyfuncitem.obj(**kwargs), ASYNC_TEST_TIMEOUT))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return True


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest):
    """A function that makes a new event loop, once per loop kind: for sync tests that start loops
    of their own (in threads, or under a portal)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_on_new_loop(factory, main, timeout: float = 10.0):
    """Runs ``main()`` on a new loop from ``factory`` in a daemon thread and returns its result (or
    raises its exception); fails in bounded time instead of hanging if it takes longer than
    ``timeout``, since a loop frozen in a blocking call (ferrio.run() nested in a running loop)
    cannot time itself out."""
    out: list[object] = []

    def target() -> None:
        loop = factory()
        try:
            out.append(loop.run_until_complete(main()))
        except BaseException as e:
            out.append(e)
        finally:
            loop.close()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"deadlock: ferrio.run() inside a running loop not done after {timeout} s"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


class LoopTicker:
    """A task that counts turns of the running event loop, for "never blocks the loop" tests: a
    count that grows while the test awaits something else shows the loop kept running meanwhile.

    Each tick is one ``asyncio.sleep(interval)`` (0: every turn of the loop); ``longest_gap`` is the
    longest a tick took. With ``until``, the task stops after that many ticks and calls ``then``
    (the hand-off: let a writer or a job go only once the loop has been seen to run). Call
    :meth:`cancel` when done.
    """

    def __init__(self, interval: float = 0.0, *, until: int | None = None, then=None) -> None:
        self.count = 0
        self.longest_gap = 0.0
        self._task = asyncio.ensure_future(self._tick(interval, until, then))

    async def _tick(self, interval: float, until: int | None, then) -> None:
        last = time.perf_counter()
        while until is None or self.count < until:
            await asyncio.sleep(interval)
            now = time.perf_counter()
            self.longest_gap = max(self.longest_gap, now - last)
            last = now
            self.count += 1
        if then is not None:
            then()

    def cancel(self) -> None:
        self._task.cancel()


# Writes `data` to the FIFO `sys.argv[1]` once told to (stdin closes), or after 10 s anyway: a loop
# that blocks in open() holds the GIL, so it could not tell a thread of this process to write.
_FIFO_WRITER = """
import select, sys
select.select([sys.stdin], [], [], 10)
with open(sys.argv[1], "wb") as w:
    w.write(sys.argv[2].encode())
"""


class FifoWriter:
    """A process that writes ``data`` to ``fifo`` when :meth:`go` is called (or after 10 s)."""

    def __init__(self, fifo: os.PathLike[str] | str, data: str) -> None:
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", _FIFO_WRITER, os.fspath(fifo), data], stdin=subprocess.PIPE)

    def go(self) -> None:
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    def close(self) -> None:
        """Lets the writer go and waits until it has written and left."""
        self.go()
        self.proc.wait(15)


def until_cancelled(started: threading.Event, cancelled: threading.Event):
    """An async function that sets ``started``, then waits until it is cancelled, setting
    ``cancelled`` as it goes: for checking that a cancel really reached a coroutine."""

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return forever


def run_python(code: str, timeout: float = 60.0, **kw):
    """Runs ``code`` in a fresh interpreter (for exit, fork and signal tests)."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )


def run_or_fail(code: str, timeout: float = 30, *, froze: str = "the subprocess froze (deadlock)") -> str:
    """Runs ``code`` (dedented) in a fresh interpreter and returns what it printed; fails the test
    with ``froze`` if it outlives ``timeout``, and with its stderr if it exits non-zero."""
    import subprocess
    import textwrap

    try:
        proc = run_python(textwrap.dedent(code), timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(froze)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# Threads of ferrio's process-wide pools (the default pool, the file I/O pool, ferrio.run's hosts) outlive tests
# by design: they retire after their idle timeout.
SHARED_POOL_THREADS = ("ferrio-worker-", "ferrio-io-", "ferrio-run-host-")


@pytest.fixture
def no_thread_leaks():
    """Fails the test if it leaves threads (other than the shared pools') or file descriptors behind."""
    before = set(threading.enumerate())
    fds = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    yield
    gc.collect()

    def leftover() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and not t.name.startswith(SHARED_POOL_THREADS)]

    deadline = time.monotonic() + 10
    while leftover() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling: ferrio's Rust workers show as dummy threads, which cannot be joined
    assert not leftover(), f"threads left running: {leftover()}"
    if fds:
        new = set(os.listdir("/proc/self/fd")) - fds
        assert not new, f"file descriptors left open: {sorted(new)}"


def wait_for_flag(started, release) -> str:
    """A ProcessPool job (it pickles by reference: this module imports in a worker) that bumps the
    ferrio.SharedCounter ``started``, then waits (30 s at most) until the parent sets ``release``."""
    started.add(1)
    deadline = time.monotonic() + 30
    while release.value == 0 and time.monotonic() < deadline:  # polling: no cross-process event
        time.sleep(0.001)
    return "released"


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first, then the parent's
    pid), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def wait_for(predicate, timeout: float = 20.0) -> None:
    """Waits until ``predicate()`` is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # polling: the state lives in another process
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def _child_processes() -> set[int]:
    """Live processes whose parent is this process or multiprocessing's forkserver (which, like
    its resource tracker, is shared by the whole test run and expected to stay)."""
    from multiprocessing import forkserver, resource_tracker

    server = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    tracker = getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None)
    parents = {os.getpid(), server}
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (server, tracker):
            continue
        fields = _stat_fields(entry)
        if fields is not None and fields[0] != "Z" and int(fields[1]) in parents:
            found.add(int(entry))
    return found


def _default_process_pool_workers() -> set[int]:
    # ferrio.to_process's pool lives until interpreter exit by design, like the default thread pool.
    from ferrio import _process

    pool = _process._default
    return set(pool.worker_pids()) if pool is not None else set()


@pytest.fixture(scope="module")
def no_process_leaks():
    """Fails the module if it leaves worker processes, /dev/shm segments or descriptors behind."""
    if not os.path.isdir("/proc"):
        yield
        return
    procs = _child_processes()
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    yield
    gc.collect()
    deadline = time.monotonic() + 15
    while _child_processes() - procs - _default_process_pool_workers() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling: pools reap their workers on their manager threads
    left = _child_processes() - procs - _default_process_pool_workers()
    assert not left, f"processes left running: {sorted(left)}"
    if shm:
        new = set(os.listdir("/dev/shm")) - shm
        assert not new, f"shared-memory segments left in /dev/shm: {sorted(new)}"


@pytest.fixture
def run_python_in_tmp(tmp_path):
    """Runs a script from a file (worker processes import the main module by path)."""
    import subprocess
    import textwrap

    def run(code: str, timeout: float = 60.0):
        script = tmp_path / "script.py"
        script.write_text(textwrap.dedent(code))
        return subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout, check=False
        )

    return run
