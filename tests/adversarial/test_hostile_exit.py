"""Interpreter exit with work in flight in every part of ferrio at once.

Each scenario runs in a fresh interpreter that starts work and then lets the main module end
(or raises, or calls sys.exit) without cleaning anything up. The interpreter must exit promptly
with the expected status, print no fatal error, and leave no worker process behind. A timeout
here means exit hung: a deadlock between ferrio's exit hooks and the work they wait for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import process_alive

EXIT_BOUND = 30.0  # seconds; a healthy exit takes well under one

IN_FLIGHT = """
import asyncio, os, sys, threading, time
import ferrio

def slow(x):
    time.sleep(0.2)
    return x

def crunch(n):
    return sum(range(n))

started = threading.Event()

def blocked_consumer(q):
    started.set()
    q.sync_q.get()          # never fed: a daemon thread blocked in Rust at exit

async def main():
    q = ferrio.Queue()
    threading.Thread(target=blocked_consumer, args=(q,), daemon=True).start()
    assert started.wait(10)
    pool = ferrio.ThreadPool(4)
    for i in range(8):
        pool.submit(slow, i)                                  # queued and running thread jobs
    ferrio.default_pool().submit(slow, 1)
    procs = ferrio.ProcessPool(2)
    for _ in range(4):
        procs.submit(crunch, 10**6)                           # running and queued process calls
    procs.submit(int, "1").result(timeout=10)
    deadline = time.monotonic() + 10
    while len(procs.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling: the second worker starts on the pool's manager thread
    print("pids", *procs.worker_pids(), flush=True)
    portal_cm = ferrio.start_blocking_portal()
    portal = portal_cm.__enter__()                            # a portal left open
    portal.submit(asyncio.sleep, 0.1)
    path = os.path.join(os.environ["TMPDIR_FOR_TEST"], "f.txt")
    async with ferrio.open_file(path, "w") as f:
        await f.write("x" * 100_000)
    asyncio.get_running_loop().create_task(ferrio.to_thread(slow, 2))   # a task left pending
    globals()["keep"] = (pool, procs, portal_cm, q)

if __name__ == "__main__":       # worker processes import this file
    asyncio.run(main())
    {ending}
"""


@pytest.mark.parametrize(
    ("ending", "status"),
    [
        ("pass", 0),
        ("sys.exit(3)", 3),
        ("raise SystemExit('bye')", 1),
        ("raise ValueError('boom')", 1),
    ],
)
def test_exit_with_work_everywhere_is_prompt_and_leaves_nothing(tmp_path, ending: str, status: int) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(IN_FLIGHT.format(ending=ending)))
    env = dict(os.environ, TMPDIR_FOR_TEST=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=EXIT_BOUND, env=env, check=False
    )
    assert proc.returncode == status, proc.stderr
    assert "Fatal Python error" not in proc.stderr
    assert "panicked" not in proc.stderr
    pids = [int(p) for line in proc.stdout.splitlines() if line.startswith("pids") for p in line.split()[1:]]
    assert len(pids) == 2, proc.stdout
    assert not [p for p in pids if process_alive(p)], "worker processes outlived the interpreter"


def test_exit_while_a_daemon_thread_keeps_submitting_everywhere(tmp_path) -> None:
    """A daemon thread creates pools and submits to them through the whole of finalization."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading, ferrio
            go = threading.Event()

            def churn():
                while True:
                    try:
                        pool = ferrio.ThreadPool(2)
                        pool.submit(int, "1")
                        ferrio.default_pool().submit(int, "2")
                        go.set()
                    except RuntimeError:   # refused during shutdown: what it should say
                        go.set()

            threading.Thread(target=churn, daemon=True).start()
            assert go.wait(10)
            """
        )
    )
    for _ in range(5):
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=EXIT_BOUND)
        assert proc.returncode == 0, proc.stderr
        assert "Fatal Python error" not in proc.stderr
        assert "FATAL" not in proc.stderr


# Each submit asks `inspect.iscoroutinefunction` about `slow`, which runs `Slow.__getattr__`:
# the daemon thread spends nearly all its time in Python code reached from a submit. Before the
# fix that code ran under ferrio's Rust frames, so when it gave up the GIL and the interpreter
# started finalizing, the thread's forced exit unwound through Rust and killed the process
# (SIGABRT or SIGSEGV, with "FATAL: exception not rethrown", a fatal PyThreadState_Get, or
# nothing at all on stderr) in about four runs out of five.
SLOW_LOOKUP = """
import threading, ferrio
go = threading.Event()

class Slow:
    def __call__(self):
        return 1

    def __getattr__(self, name):
        for _ in range(300):   # Python code inspect runs: it may drop the GIL anywhere in here
            pass
        raise AttributeError(name)

slow = Slow()

def churn():
    pool = ferrio.ThreadPool(2)
    while True:
        try:
            pool.submit(slow)
            ferrio.default_pool().submit(slow)
            ferrio.asyncify(slow)
        except RuntimeError:   # refused during shutdown
            pass
        go.set()

threading.Thread(target=churn, daemon=True).start()
assert go.wait(10)
"""


def test_exit_while_a_daemon_thread_submits_callables_that_run_python_to_classify(tmp_path) -> None:
    """Working out whether a callable is a coroutine function runs no Python code under Rust frames."""
    script = tmp_path / "script.py"
    script.write_text(SLOW_LOOKUP)
    for _ in range(4):
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=EXIT_BOUND)
        assert proc.returncode == 0, (proc.returncode, proc.stderr)
        assert proc.stderr == ""
