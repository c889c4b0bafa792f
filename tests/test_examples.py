"""Every script in examples/ runs and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(name: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_thread_pool_counter() -> None:
    lines = run("thread_pool_counter.py").splitlines()
    words = [line for line in lines if ":" not in line]
    assert sorted(words) == sorted(["hello", "how", "are", "you"] * 3)
    assert [line for line in lines if ":" in line] == [
        "explicit_pool: counter=4",
        "run_in_executor_with_ferrio_as_default: counter=8",
        "with_to_thread: counter=12",
    ]


def test_offload_blocking_io() -> None:
    assert run("offload_blocking_io.py").splitlines() == [
        "counts [10, 100, 1000]",
        "read True bytes",
        "loop stayed responsive True",
    ]


def test_sync_async_bridges() -> None:
    assert run("sync_async_bridges.py").splitlines() == [
        "1 async -> sync: 5",
        "2 sync -> sync -> async: 6",
        "3 async -> sync -> async: (6, 6)",
        "4 async -> coroutine on a worker: 6",
        "5 sync -> coroutine on a worker: 6",
        "decorator: True",
        "nested call inside a running loop: done",
        "sync wrapper: done",
        "thread with its own loop: done",
    ]


def test_sync_producer_async_consumer() -> None:
    assert run("sync_producer_async_consumer.py").splitlines() == [
        f"consumed {list(range(10))}",
        "processed 10",
        "log entries 20",
    ]


def test_read_without_blocking() -> None:
    assert run("read_without_blocking.py").splitlines() == [
        "lines 1000 line 0 line 999",
        "same as read_text True",
        "read_files [8890, 8890]",
        "loop kept ticking True",
    ]


def test_process_shared_counter() -> None:
    lines = run("process_shared_counter.py").splitlines()
    words = [line for line in lines if ":" not in line]
    assert sorted(words) == sorted(["hello", "how", "are", "you"] + ["again"] * 4)
    assert [line for line in lines if ":" in line] == [
        "shared_counter: 4",
        "crash: SIGKILL in 'crash', pool still up",
        "shared_counter: 8",
    ]


def test_process_blocks_logs_which_worker_ran_each_call() -> None:
    import os
    import re

    lines = run("process_blocks.py").splitlines()
    parsed = [re.fullmatch(r"PID\s+(\d+)\s+(.+?): (.*)", line) for line in lines]
    assert all(parsed), lines
    main_pid = {int(m[1]) for m in parsed if m and m[2] == "run_blocking_tasks"}
    assert len(main_pid) == 1
    workers = {int(m[1]) for m in parsed if m and m[2].startswith("blocks(")}
    assert len(workers) == 3
    assert not workers & main_pid
    assert main_pid != {os.getpid()}
    for n in range(6):
        mine = [m for m in parsed if m and m[2] == f"blocks({n})"]
        assert [m[3] for m in mine] == ["running", "done"]
        assert mine[0][1] == mine[1][1]  # both lines of one call come from the same worker
    assert lines[-2].endswith("results: [0, 1, 4, 9, 16, 25]")


def test_find_blocking_calls() -> None:
    assert run("find_blocking_calls.py").splitlines() == [
        "handler_that_blocks: 1 block(s)",
        "  in main -> handler_that_blocks -> count_rows, at least the threshold: True",
        "handler_that_offloads: 0 block(s)",
    ]
