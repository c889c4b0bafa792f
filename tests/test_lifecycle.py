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


def test_a_job_running_at_exit_can_still_use_a_process_pool_executor() -> None:
    # ferrio's pools are waited for before concurrent.futures.process's own exit hook shuts
    # ProcessPoolExecutors down (ferrio imports that module before it registers its hook).
    code = textwrap.dedent(
        """
        import concurrent.futures, threading, ferrio
        ppe = concurrent.futures.ProcessPoolExecutor(1)
        assert ppe.submit(int, "1").result(30) == 1  # its worker runs now: Python 3.12 cannot fork at exit
        exiting = threading.Event()
        threading._register_atexit(exiting.set)  # registered last, so the first to run at exit
        def job():
            assert exiting.wait(30)
            print("ppe", ppe.submit(pow, 2, 5).result(30), flush=True)
        ferrio.ThreadPool(1).submit(job)
        print("main done", flush=True)
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main done", "ppe 32"], (proc.stdout, proc.stderr)


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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_a_thread_fills_a_process_wide_cache_leaves_the_child_working() -> None:
    # ferrio computes some values once per process on first use (interned method names, callables
    # it imports). pyo3's cells release the GIL while marked "being filled", so a fork in that
    # window gave the child a cell stuck busy for good: its first use hung (a worker of the
    # child's pool on the name "run", about once in a thousand forks of a busy process). Here the
    # parent's first fill (inspect.iscoroutinefunction, looked up for a callable without
    # __code__ when the caller did not classify it, as ThreadPool.submit does in Python) is held
    # open across the fork by a gate on `inspect`.
    code = textwrap.dedent(
        """
        import concurrent.futures, faulthandler, functools, inspect, os, sys, threading, types, warnings, ferrio
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
        parent = os.getpid()
        filling, release = threading.Event(), threading.Event()

        class Gate(types.ModuleType):
            def __getattr__(self, name):
                if name == "iscoroutinefunction" and os.getpid() == parent:
                    filling.set()
                    release.wait(30)
                return getattr(inspect, name)

        sys.modules["inspect"] = Gate("inspect")
        pool = ferrio.ThreadPool(2)

        def unclassified():
            fut = concurrent.futures.Future()
            pool._core.submit(api="test", fut=fut, func=functools.partial(pow, 2, 3), args=())
            fut.result(30)

        first = threading.Thread(target=unclassified)
        first.start()
        assert filling.wait(10)
        pid = os.fork()
        if pid == 0:
            faulthandler.dump_traceback_later(10, exit=True)  # a hang exits 1, with stacks
            ok = pool.submit(functools.partial(pow, 2, 5)).result(10) == 32
            os._exit(0 if ok else 3)
        release.set()
        first.join(10)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "child 0\n", proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_a_thread_holds_a_pools_shutdown_lock_leaves_the_child_able_to_shut_down() -> None:
    # shutdown() from another thread holds the pool's lock for an instant; a fork then gave the
    # child the lock held by a thread that does not exist there.
    code = textwrap.dedent(
        """
        import faulthandler, os, threading, warnings, ferrio
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
        pool = ferrio.ThreadPool(2)
        assert pool.submit(pow, 2, 3).result(10) == 8
        held, release = threading.Event(), threading.Event()

        def hold():
            with pool._shutdown_lock:
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:
            faulthandler.dump_traceback_later(10, exit=True)  # a hang exits 1, with stacks
            ok = pool.submit(pow, 2, 5).result(10) == 32
            pool.shutdown(wait=True)
            os._exit(0 if ok else 3)
        release.set()
        holder.join(10)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "child 0\n", proc.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_no_worker_thread_attaches_to_the_interpreter_while_the_process_forks() -> None:
    # A worker's first attach creates its thread state under the runtime's list lock, without the
    # GIL; on 3.10 and 3.11 a child forked meanwhile deadlocked inside os.fork(). The hook below is
    # registered before ferrio's, so it runs after ferrio closed its gate: a worker started there
    # must wait until the fork is over.
    code = textwrap.dedent(
        """
        import os, threading, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
        ran = threading.Event()
        futures = []

        def during_fork():
            if not futures:
                futures.append(pool.submit(ran.set))
                print("ran during fork", ran.wait(0.5))

        os.register_at_fork(before=during_fork)
        import ferrio
        pool = ferrio.ThreadPool(2)
        pid = os.fork()
        if pid == 0:
            os._exit(0 if pool.submit(pow, 2, 5).result(10) == 32 else 3)
        futures[0].result(10)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ran during fork False\nchild 0\n", proc.stderr


_STACK_SIZE_CODE = """
import ctypes, sys
_libc = ctypes.CDLL(None)
_libc.pthread_self.restype = ctypes.c_ulong

def stack_size():
    attr = ctypes.create_string_buffer(256)  # larger than any pthread_attr_t
    assert _libc.pthread_getattr_np(ctypes.c_ulong(_libc.pthread_self()), attr) == 0
    size = ctypes.c_size_t()
    assert _libc.pthread_attr_getstacksize(attr, ctypes.byref(size)) == 0
    _libc.pthread_attr_destroy(attr)
    return size.value

def in_a_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start(); t.join(10)
    return out[0]
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pthread_getattr_np is glibc's")
def test_workers_get_the_stack_a_python_thread_gets() -> None:
    # Workers used to get Rust's 2 MiB, where a Python thread gets the pthread default (8 MiB from
    # `ulimit -s` here) or threading.stack_size().
    code = (
        "import threading, asyncio, ferrio\n"
        + _STACK_SIZE_CODE
        + textwrap.dedent(
            """
        default = in_a_thread(stack_size)
        print(default == ferrio.ThreadPool(1).submit(stack_size).result(10))
        print(default == asyncio.run(ferrio.to_thread(stack_size)))
        threading.stack_size(48 << 20)
        print(in_a_thread(stack_size) == ferrio.ThreadPool(1).submit(stack_size).result(10) >= 48 << 20)
        """
        )
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "True\nTrue\nTrue\n", proc.stderr


def test_c_recursion_that_works_on_a_python_thread_works_in_a_job() -> None:
    # `repr` of a 20,000-deep list recurses in C: fine on a threading.Thread, and it used to
    # overflow a worker's 2 MiB stack (SIGSEGV). Where the interpreter caps C recursion itself
    # (3.12+), both raise RecursionError: the outcome must be the same either way.
    code = textwrap.dedent(
        """
        import asyncio, sys, threading, ferrio
        sys.setrecursionlimit(100_000)
        def deep():
            x = []
            for _ in range(20_000):
                x = [x]
            try:
                return len(repr(x))
            except RecursionError:
                return "RecursionError"
        out = []
        t = threading.Thread(target=lambda: out.append(deep()))
        t.start(); t.join(30)
        print(out[0] == asyncio.run(ferrio.to_thread(deep)), out[0])
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("True "), proc.stdout + proc.stderr


def test_ctrl_c_interrupts_shutdown_wait() -> None:
    # The join used to ignore Ctrl-C until every worker had finished.
    code = textwrap.dedent(
        """
        import os, signal, threading, time, ferrio
        signal.signal(signal.SIGINT, signal.default_int_handler)  # pytest may run us with SIGINT ignored
        started, release = threading.Event(), threading.Event()
        pool = ferrio.ThreadPool(2)
        pool.submit(lambda: (started.set(), release.wait(30)))
        assert started.wait(10)
        t0 = time.monotonic()
        try:
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
            pool.shutdown(wait=True)
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted", time.monotonic() - t0 < 10)
        release.set()
        pool.shutdown(wait=True)
        print("joined", pool.stats().workers_alive)
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "interrupted True\njoined 0\n", proc.stderr


def test_ctrl_c_interrupts_the_exit_time_join_without_crashing() -> None:
    code = textwrap.dedent(
        """
        import os, signal, threading, ferrio
        signal.signal(signal.SIGINT, signal.default_int_handler)
        started = threading.Event()
        pool = ferrio.ThreadPool(2)
        pool.submit(lambda: (started.set(), threading.Event().wait(30)))
        assert started.wait(10)
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        print("main done", flush=True)
        """
    )
    t0 = time.monotonic()
    proc = run_python(code, timeout=60)
    assert time.monotonic() - t0 < 20, "the exit-time join ignored Ctrl-C"
    assert proc.returncode >= 0, proc.stderr  # not killed by a signal (SIGABRT, SIGSEGV)
    assert proc.stdout == "main done\n"
    assert "KeyboardInterrupt" in proc.stderr
    assert "FATAL" not in proc.stderr, proc.stderr
    assert "panicked" not in proc.stderr, proc.stderr


def test_pools_and_submissions_are_refused_once_the_interpreter_exits() -> None:
    # A daemon thread that keeps making pools while the main thread exits: pools made after the
    # exit-time join used to start workers that finalization then unwound (SIGABRT).
    code = textwrap.dedent(
        """
        import threading, time, ferrio
        started = threading.Event()
        def churn():
            while True:
                try:
                    pool = ferrio.ThreadPool(2)
                    pool.submit(time.sleep, 0.001)
                except RuntimeError as e:
                    assert "interpreter shutdown" in str(e), e
                started.set()
        threading.Thread(target=churn, daemon=True).start()
        assert started.wait(10)
        """
    )
    for _ in range(3):
        proc = run_python(code, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "FATAL" not in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr


def test_after_exit_begins_new_pools_and_jobs_raise_naming_the_call() -> None:
    code = textwrap.dedent(
        """
        import atexit, threading, ferrio
        pool = ferrio.ThreadPool(1)
        def late():  # atexit hooks run after threading's, so ferrio's exit-time join is done
            for make in (lambda: ferrio.ThreadPool(1), lambda: pool.submit(int, "1")):
                try:
                    make()
                except RuntimeError as e:
                    print(e)
        atexit.register(late)
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "ThreadPool() cannot create a pool after interpreter shutdown has begun\n"
        "ThreadPool.submit() cannot schedule new work after interpreter shutdown has begun\n"
    ), proc.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics are Linux's")
def test_no_room_for_a_worker_is_a_clear_runtime_error_at_submit() -> None:
    # With no address space for a worker's stack, starting one used to abort the process.
    code = textwrap.dedent(
        """
        import resource, ferrio
        pool = ferrio.ThreadPool(4)
        vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) << 10
        resource.setrlimit(resource.RLIMIT_AS, (vm + (4 << 20), resource.RLIM_INFINITY))
        try:
            pool.submit(int, "1")
        except RuntimeError as e:
            print(e)
        """
    )
    proc = run_python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ThreadPool.submit() could not start a worker thread: "), proc.stdout + proc.stderr
    assert "no worker is alive to run the job" in proc.stdout
