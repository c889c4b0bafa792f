"""``python -m ferrio watch``: runs a program as ``python script.py`` or ``python -m module``
would, with a :func:`ferrio.watchdog` watching every event loop it starts; each block is printed
on stderr as it happens, and a summary when the program returns.

The watchdog starts before the program's first line runs, outside any loop, so it watches every
loop started afterwards in any thread, uvloop's included (uvloop is caught only if imported after
the watchdog started, which is why the program cannot start it itself as early).

The pytest plugin (``ferrio.pytest_plugin``) shares its threshold parser (``--ferrio-watchdog=50ms``).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import logging
import os
import re
import runpy
import sys
import types
from collections.abc import Callable

import ferrio
from ferrio._watchdog import format_duration

#: ``--strict``'s exit status: the program succeeded, but blocked an event loop.
EXIT_BLOCKED = 3
#: The exit status of a program interrupted by Ctrl-C, as a shell shows it (128 + SIGINT).
EXIT_INTERRUPTED = 130

#: ferrio.watchdog()'s own default, so the two never disagree.
DEFAULT_THRESHOLD: float = inspect.signature(ferrio.watchdog).parameters["threshold"].default

#: Units per second: divided by, so that 100us is 0.0001, not 9.999999999999999e-05.
_PER_SECOND = {"": 1.0, "s": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)\s*([a-zµ]*)\s*")

DESCRIPTION = """\
Run a Python program as `python script.py ARG...` or `python -m MODULE ARG...` would, with
ferrio.watchdog() watching every event loop it starts (asyncio and uvloop, in any thread).
Each block of the threshold or more is printed on stderr as it happens, with the stack of the
code that blocked, taken while it blocked; a summary follows when the program returns.
Reports go to the `ferrio.watchdog` logger: a program that configures logging gets them
through its own handlers."""

EPILOG = f"""\
exit status:
  the program's own (0, or its SystemExit code); 1 if it raised an uncaught exception
  (the traceback is printed, as python does); {EXIT_INTERRUPTED} if interrupted with Ctrl-C;
  {EXIT_BLOCKED} with --strict if the program succeeded but blocked an event loop;
  2 for a bad command line.

examples:
  python -m ferrio watch server.py --port 8000
  python -m ferrio watch --threshold 20ms --strict -m myapp.main"""


def parse_threshold(text: str) -> float:
    """Seconds from a duration as a user writes it: ``"50ms"``, ``"0.05"`` or ``"0.05s"``,
    ``"1s"``, ``"20000us"`` (a bare number is seconds).

    Raises:
        argparse.ArgumentTypeError: ``text`` is not a duration, or not one ``ferrio.watchdog()``
            takes; argparse (and so pytest's option parser) shows its message after the option's
            name.
    """
    match = _DURATION.fullmatch(text)
    if match is None or match.group(2) not in _PER_SECOND:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 50ms, 0.05s or 1s (a bare number is seconds), got {text!r}"
        )
    seconds = float(match.group(1)) / _PER_SECOND[match.group(2)]
    try:
        ferrio.watchdog(seconds)  # the limits live in the Rust core, which words the error
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: {e}") from None
    return seconds


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``watch`` command to ``commands`` (what ``add_subparsers`` returned)."""
    w = commands.add_parser(
        "watch",
        help="run a script or module with every event loop watched for blocks",
        usage="python -m ferrio watch [-h] [--threshold DURATION] [--strict] (script.py | -m MODULE) [ARG ...]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.add_argument(
        "--threshold",
        metavar="DURATION",
        type=parse_threshold,
        default=DEFAULT_THRESHOLD,
        help=(
            "report blocks of this long or longer: 50ms, 0.05s, 20000us, or seconds "
            f"(default: {DEFAULT_THRESHOLD * 1e3:.0f}ms, ferrio.watchdog()'s)"
        ),
    )
    w.add_argument(
        "--strict", action="store_true", help=f"exit with status {EXIT_BLOCKED} if the program succeeded but blocked"
    )
    # REMAINDER, as python's own -m: everything after the module name is the module's.
    w.add_argument(
        "-m",
        dest="module",
        nargs=argparse.REMAINDER,
        metavar="MODULE [ARG ...]",
        help="-m MODULE [ARG ...]: run library module MODULE as `python -m MODULE` does; ends the options",
    )
    w.add_argument("script", nargs="?", help="the program to run, as `python script.py` does; ends the options")
    w.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help="passed to the program in sys.argv[1:]")
    w.set_defaults(run=run, parser=w)
    return w


def run(args: argparse.Namespace) -> int:
    """Runs the program under a watchdog; returns the exit status (the list is in :data:`EPILOG`)."""
    parser: argparse.ArgumentParser = args.parser
    module: list[str] | None = args.module
    if module is not None and not module:
        parser.error("argument -m: expected the name of a module to run")
    if module is None and args.script is None:
        parser.error("expected a script to run, or -m MODULE")
    printer = _ReportPrinter() if not _watchdog_logger.hasHandlers() else None
    if printer is not None:
        _watchdog_logger.addHandler(printer)
    dog = ferrio.watchdog(args.threshold).start()
    try:
        if module is not None:
            status = _run_program(lambda: _run_module(module[0], module[1:]))
        else:
            status = _run_program(lambda: _run_script(args.script, args.args))
    except _CannotRun as e:
        print(f"python -m ferrio watch: {e}", file=sys.stderr)
        return e.status
    finally:
        dog.stop()
        if printer is not None:
            _watchdog_logger.removeHandler(printer)
    stats = dog.statistics()
    sys.stdout.flush()
    print(summary(stats, dog.threshold), file=sys.stderr)
    if args.strict and status == 0 and stats.blocks:
        return EXIT_BLOCKED
    return status


def _run_script(script: str, args: list[str]) -> None:
    if not os.path.exists(script):
        raise _CannotRun(f"can't open file {os.path.abspath(script)!r}: no such file or directory", status=2)
    sys.argv[:] = [script, *args]
    # What python does for `python script.py`: the directory of the script, symbolic links
    # resolved (or the zip file or directory itself, whose __main__.py run_path runs) comes first.
    sys.path[0] = os.path.dirname(os.path.realpath(script)) if os.path.isfile(script) else script
    runpy.run_path(script, run_name="__main__")


def _run_module(module: str, args: list[str]) -> None:
    # sys.path[0] is already the working directory, as for `python -m`.
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise _CannotRun(f"no module named {module!r}", status=1)
    sys.argv[:] = [module, *args]  # run_module puts the module's file in sys.argv[0]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


class _CannotRun(Exception):
    """The program could not be started: no such file (python exits with 2) or module (1)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def _run_program(start: Callable[[], None]) -> int:
    """Runs ``start()`` (the program) and returns its exit status, as python would."""
    try:
        start()
    except SystemExit as e:
        return _exit_status(e.code)
    except _CannotRun:
        raise
    except BaseException as e:
        e = e.with_traceback(_program_frames(e.__traceback__))
        sys.excepthook(type(e), e, e.__traceback__)
        return EXIT_INTERRUPTED if isinstance(e, KeyboardInterrupt) else 1
    return 0


def _exit_status(code: object) -> int:
    """What python exits with for ``sys.exit(code)``: None is 0, an int itself, anything else is
    printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _program_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback from the program's first frame, without this module's and runpy's."""
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in (__name__, "runpy"):
        tb = tb.tb_next
    return tb


def summary(stats: ferrio.WatchdogStatistics, threshold: float) -> str:
    """The line ``watch`` prints at exit: the blocks, and how late the loops ran their timers."""
    if not stats.lag.count:
        return "ferrio watch: no event loop ran, so none was watched"
    plural = "" if stats.blocks == 1 else "s"
    blocks = f"{stats.blocks} event loop block{plural} of {format_duration(threshold)} or more"
    if stats.blocks:
        longest, total = format_duration(stats.longest), format_duration(stats.total_blocked)
        blocks += f", the longest {longest}, {total} blocked in all"
    if stats.busy:
        blocks += (
            f"; {stats.busy} time{'' if stats.busy == 1 else 's'} the loop took that long over many short callbacks"
        )
    lag = stats.lag
    return (
        f"ferrio watch: {blocks}; loop lag p50 {format_duration(lag.p50)}, p99 {format_duration(lag.p99)} "
        f"({lag.count} heartbeat{'' if lag.count == 1 else 's'})"
    )


_watchdog_logger = logging.getLogger("ferrio.watchdog")


class _ReportPrinter(logging.Handler):
    """Prints each report on stderr, unless the program has since configured logging that would
    show it (``logging.basicConfig()`` in the script): then its handlers do, and it is shown once."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        if self._shown_elsewhere():
            return
        try:
            sys.stderr.write(self.format(record) + "\n\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)

    def _shown_elsewhere(self) -> bool:
        logger: logging.Logger | None = _watchdog_logger
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return True
            if not logger.propagate:
                return False
            logger = logger.parent
        return False
