"""Process-level lifecycle: interpreter exit with busy workers, fork, orphaned pools."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest
from conftest import run_python

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork and /proc are POSIX-only")


def test_interpreter_exit_with_busy_workers_exits_zero_promptly() -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys, threading, time, ferrio
        started = threading.Event()
        def busy(tag):
            started.set()
            time.sleep(0.3)
            sys.stdout.write(f"finished {tag}\\n")  # one write: lines from threads do not interleave
        pool = ferrio.ThreadPool(4)
        futs = [pool.submit(busy, i) for i in range(4)]
        async def main():
            await ferrio.to_thread(int, "1")
            ferrio.default_pool().submit(busy, "default")
        asyncio.run(main())
        assert started.wait(10)
        print("main done", flush=True)
        """
    )
    t0 = time.monotonic()
    proc = run_python(code, timeout=30)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert "main done" in proc.stdout
    # Work already running when the interpreter exits is finished, as with ThreadPoolExecutor.
    assert sorted(proc.stdout.split("\n")[1:-1]) == sorted(
        [f"finished {i}" for i in range(4)] + ["finished default"]
    ), proc.stdout
    assert elapsed < 15


def test_exit_with_idle_workers_and_a_garbage_collected_pool() -> None:
    code = textwrap.dedent(
        """
        import gc, ferrio
        pool = ferrio.ThreadPool(8, idle_timeout=60)
        assert all(f.result(10) == 1 for f in [pool.submit(int, "1") for _ in range(50)])
        other = ferrio.ThreadPool(2)
        other.submit(int, "2").result(10)
        del other
        gc.collect()
        print("ok")
        """
    )
    proc = run_python(code, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_exits_cleanly_after_a_pool_was_orphaned_in_the_parent() -> None:
    # The child's normal exit runs ferrio's at-exit join; the orphaned threads are the parent's,
    # and joining them in the child used to panic ("threads should not terminate unexpectedly").
    code = textwrap.dedent(
        """
        import gc, os, sys, threading, warnings, ferrio
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
        release = threading.Event()
        pool = ferrio.ThreadPool(2)
        pool.submit(release.wait, 30)
        del pool
        gc.collect()  # its worker is still waiting: the pool is an orphan now
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit, at-exit hooks included
        release.set()
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "panicked" not in proc.stderr
    assert proc.stdout == "child 0\n", proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_after_the_pool_started_gives_the_child_a_fresh_pool() -> None:
    code = textwrap.dedent(
        """
        import asyncio, os, sys, threading, warnings, ferrio
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
        pool = ferrio.ThreadPool(2, thread_name_prefix="parent")
        async def use():
            return [await ferrio.to_thread(pow, 2, 10), await pool.run(pow, 3, 2)]
        assert asyncio.run(use()) == [1024, 9]
        pid = os.fork()
        if pid == 0:
            try:
                ok = asyncio.run(use()) == [1024, 9] and pool.submit(pow, 2, 3).result(10) == 8
                pool.shutdown(wait=True)
                os._exit(0 if ok else 3)
            except BaseException:
                import traceback; traceback.print_exc()
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        print("parent", asyncio.run(use()))
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "child 0\nparent [1024, 9]\n", proc.stderr
