"""``python -m ferrio watch``: real programs that block their event loop, run in a subprocess
as a user runs them, on asyncio and on uvloop (which the program imports itself)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ferrio._watch_cli import EXIT_BLOCKED, parse_threshold

LOOPS = ["asyncio", "uvloop"]

# A program that blocks its loop for 0.3 s in blocking_function(), three times the threshold the
# tests pass; `run()` runs a coroutine on the loop the test chose.
PROGRAM = """
import asyncio, sys, time

def blocking_function():
    time.sleep(0.3)

async def blocks():
    await asyncio.sleep(0)
    blocking_function()

async def does_not_block():
    for _ in range(5):
        await asyncio.sleep(0.01)

def run(coro):
    if {loop!r} == "uvloop":
        import uvloop  # after the watchdog started, as a program's own import is
        uvloop.run(coro)
    else:
        asyncio.run(coro)
"""


def _program(tmp_path: Path, loop: str, body: str, name: str = "prog.py") -> Path:
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
    path = tmp_path / name
    path.write_text(PROGRAM.format(loop=loop) + textwrap.dedent(body))
    return path


def _watch(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrio", "watch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


@pytest.mark.parametrize("loop", LOOPS)
def test_a_block_is_reported_with_the_blocking_function_and_summed_up_at_exit(tmp_path: Path, loop: str) -> None:
    script = _program(tmp_path, loop, 'run(blocks())\nprint("argv", sys.argv)\n')
    proc = _watch("--threshold", "100ms", script, "one", "--threshold", "two", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "was blocked for" in proc.stderr
    assert "in blocking_function\n    time.sleep(0.3)" in proc.stderr
    assert "(threshold 100 ms)" in proc.stderr
    assert "ferrio watch: 1 event loop block of 100 ms or more, the longest" in proc.stderr
    assert "blocked in all; loop lag p50" in proc.stderr
    # The program sees the arguments after its name, as under `python script.py`, options too.
    assert f"argv [{str(script)!r}, 'one', '--threshold', 'two']" in proc.stdout


@pytest.mark.parametrize("loop", LOOPS)
def test_a_program_that_does_not_block_reports_nothing_and_no_block(tmp_path: Path, loop: str) -> None:
    script = _program(tmp_path, loop, "run(does_not_block())\n")
    proc = _watch("--threshold", "0.2", "--strict", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "blocked for" not in proc.stderr
    assert "ferrio watch: 0 event loop blocks of 200 ms or more; loop lag p50" in proc.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_strict_exits_with_its_own_status_when_the_program_blocked(tmp_path: Path, loop: str) -> None:
    script = _program(tmp_path, loop, "run(blocks())\n")
    proc = _watch("--strict", "--threshold", "100ms", script, cwd=tmp_path)
    assert proc.returncode == EXIT_BLOCKED == 3, proc.stderr
    assert "in blocking_function" in proc.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_the_programs_exit_status_is_kept_even_under_strict(tmp_path: Path, loop: str) -> None:
    script = _program(tmp_path, loop, "run(blocks())\nsys.exit(5)\n")
    proc = _watch("--strict", "--threshold", "100ms", script, cwd=tmp_path)
    assert proc.returncode == 5, proc.stderr
    assert "in blocking_function" in proc.stderr
    assert "ferrio watch: 1 event loop block" in proc.stderr


def test_the_scripts_directory_comes_first_on_the_path_as_under_python(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "helper.py").write_text("NAME = 'the helper next to the script'\n")
    script = _program(app, "asyncio", "import helper\nprint(helper.NAME, sys.path[0])\n")
    proc = _watch(script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"the helper next to the script {app}\n"


def test_a_non_integer_exit_code_is_printed_and_exits_1_as_python_does(tmp_path: Path) -> None:
    script = _program(tmp_path, "asyncio", 'sys.exit("giving up")\n')
    proc = _watch(script, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("giving up\n")


@pytest.mark.parametrize("loop", LOOPS)
def test_an_uncaught_exception_prints_the_programs_traceback_and_exits_1(tmp_path: Path, loop: str) -> None:
    script = _program(
        tmp_path,
        loop,
        """
        async def fails():
            blocking_function()
            raise ValueError("the program failed")

        run(fails())
        """,
    )
    proc = _watch("--strict", "--threshold", "100ms", script, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert 'raise ValueError("the program failed")\nValueError: the program failed' in proc.stderr
    # The traceback starts at the program, as python's would: no runpy or ferrio frames above it.
    traceback = proc.stderr[proc.stderr.index("Traceback (most recent call last):") :]
    assert traceback.splitlines()[1].startswith(f'  File "{script}", line ')
    assert traceback.splitlines()[1].endswith(", in <module>")
    assert "runpy" not in proc.stderr
    assert "_watch_cli" not in proc.stderr
    assert "in blocking_function" in proc.stderr
    assert "ferrio watch: 1 event loop block" in proc.stderr


def test_ctrl_c_prints_the_traceback_and_exits_130_as_a_shell_reports_sigint(tmp_path: Path) -> None:
    script = _program(tmp_path, "asyncio", "run(blocks())\nraise KeyboardInterrupt\n")
    proc = _watch("--threshold", "100ms", script, cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr
    assert "\nKeyboardInterrupt\n" in proc.stderr
    assert "ferrio watch: 1 event loop block" in proc.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_dash_m_runs_a_module_from_the_path_as_python_dash_m_does(tmp_path: Path, loop: str) -> None:
    (tmp_path / "lib").mkdir()
    _program(tmp_path / "lib", loop, 'run(blocks())\nprint("argv", sys.argv, __name__)\n', name="blocker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "lib"), os.environ.get("PYTHONPATH", "")])}
    proc = _watch("--threshold", "100ms", "-m", "blocker", "--strict", "x", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"argv [{str(tmp_path / 'lib' / 'blocker.py')!r}, '--strict', 'x'] __main__" in proc.stdout
    assert "in blocking_function" in proc.stderr
    assert "ferrio watch: 1 event loop block of 100 ms or more" in proc.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_a_loop_in_another_thread_is_watched_too(tmp_path: Path, loop: str) -> None:
    script = _program(
        tmp_path,
        loop,
        """
        import threading
        t = threading.Thread(target=run, args=(blocks(),), name="worker-loop")
        t.start()
        t.join(30)
        """,
    )
    proc = _watch("--threshold", "100ms", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "in thread 'worker-loop' was blocked for" in proc.stderr
    assert "in blocking_function" in proc.stderr


def test_a_program_that_configures_logging_gets_each_report_once(tmp_path: Path) -> None:
    script = _program(
        tmp_path, "asyncio", 'import logging\nlogging.basicConfig(format="LOGGED %(message)s")\nrun(blocks())\n'
    )
    proc = _watch("--threshold", "100ms", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("was blocked for") == 1, proc.stderr
    assert "LOGGED event loop" in proc.stderr


def test_a_program_with_no_event_loop_is_said_to_have_none(tmp_path: Path) -> None:
    script = _program(tmp_path, "asyncio", 'print("no loop")\n')
    proc = _watch(script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "ferrio watch: no event loop ran, so none was watched\n"


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--threshold", "5x", "prog.py"], 2, "argument --threshold: expected a duration such as 50ms, 0.05s or 1s"),
        (["--threshold", "0", "prog.py"], 2, "argument --threshold: '0' is out of range"),
        (["--threshold", "100us", "prog.py"], 2, "argument --threshold: '100us' is out of range"),
        ([], 2, "error: expected a script to run, or -m MODULE"),
        (["-m"], 2, "error: argument -m: expected the name of a module to run"),
        (["missing.py"], 2, "python -m ferrio watch: can't open file"),
        (["-m", "no_such_module_here"], 1, "python -m ferrio watch: no module named 'no_such_module_here'"),
    ],
)
def test_a_bad_command_line_says_what_was_wrong(tmp_path: Path, args: list[str], status: int, message: str) -> None:
    proc = _watch(*args, cwd=tmp_path)
    assert proc.returncode == status
    assert message in proc.stderr


def test_help_documents_the_exit_statuses(tmp_path: Path) -> None:
    proc = _watch("--help", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m ferrio watch [-h] [--threshold DURATION] [--strict]")
    assert f"{EXIT_BLOCKED} with --strict if the program succeeded but blocked an event loop" in proc.stdout


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("50ms", 0.05), ("0.05", 0.05), ("0.05s", 0.05), ("1s", 1.0), ("2", 2.0), ("200000us", 0.2),
     ("15000us", 0.015), (" 50 ms ", 0.05), ("1e-2s", 0.01), (".5s", 0.5)],
)  # fmt: skip
def test_parse_threshold_reads_seconds_and_units(text: str, seconds: float) -> None:
    assert parse_threshold(text) == seconds


@pytest.mark.parametrize("text", ["", "ms", "5x", "5 m s", "-5ms", "fast", "5min"])
def test_parse_threshold_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a duration such as 50ms, 0.05s or 1s"):
        parse_threshold(text)


@pytest.mark.parametrize("text", ["0", "5ms", "1500us", "2000000s"])
def test_parse_threshold_rejects_what_the_watchdog_does_not_take(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=rf"'{text}' is out of range: .*from 0.01 to 86400"):
        parse_threshold(text)
