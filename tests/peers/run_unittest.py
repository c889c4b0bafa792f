"""Runs a unittest suite and writes each test's outcome as JSON: the runner of
tests/test_aiosqlite_suite.py, started in a subprocess as ``python run_unittest.py SUITE OUT HANG LOOP``,
LOOP being ``asyncio`` or ``uvloop``.

The suite's verbose output goes to stderr as usual, for a person reading a failure; the JSON file
is what the pytest test reads, so a test that prints, logs or warns cannot garble the record. It
also says which ``aiosqlite`` the tests imported, the proof that the shim, not aiosqlite itself,
was under test. After HANG seconds faulthandler prints every thread's stack and exits, so a hang
shows where it hung rather than only that the subprocess timed out.
"""

from __future__ import annotations

import asyncio
import faulthandler
import importlib
import json
import sys
import traceback
import unittest
from types import TracebackType
from typing import Any

ExcInfo = tuple[type[BaseException], BaseException, TracebackType]


def _name(test: unittest.TestCase) -> str:
    # A method's name; an error outside any test (setUpClass, a failed import) has only its id.
    return getattr(test, "_testMethodName", None) or test.id()


class RecordingResult(unittest.TextTestResult):
    """A verbose text result that also keeps ``{test name: {"outcome": ..., "detail": ...}}``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, dict[str, str]] = {}

    def _record(self, test: unittest.TestCase, outcome: str, detail: str = "") -> None:
        # A test with failed subtests is reported once per failure: the first outcome that is not a
        # pass stays, and the details add up.
        entry = self.outcomes.get(_name(test))
        if entry is None or entry["outcome"] == "passed":
            self.outcomes[_name(test)] = {"outcome": outcome, "detail": detail}
        else:
            entry["detail"] += detail

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:  # type: ignore[override]
        super().addFailure(test, err)
        self._record(test, "failed", "".join(traceback.format_exception(*err)))

    def addError(self, test: unittest.TestCase, err: ExcInfo) -> None:  # type: ignore[override]
        super().addError(test, err)
        self._record(test, "error", "".join(traceback.format_exception(*err)))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: ExcInfo) -> None:  # type: ignore[override]
        super().addExpectedFailure(test, err)
        self._record(test, "passed")  # the suite's own expectation held

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "failed", "unexpected success")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: ExcInfo | None) -> None:  # type: ignore[override]
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._record(
                test, "failed" if failed else "error", f"{subtest}:\n" + "".join(traceback.format_exception(*err))
            )


def main() -> None:
    suite_name, out_path, hang_after, loop = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    faulthandler.dump_traceback_later(hang_after, exit=True)
    if loop == "uvloop":
        # IsolatedAsyncioTestCase makes each test's loop through the policy (before 3.13 there is
        # no other way in), so this puts every test on uvloop.
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    # Whichever aiosqlite the path gives: the shim's ferrio.sqlite, or aiosqlite itself.
    aiosqlite: Any = importlib.import_module("aiosqlite")

    identity: dict[str, object] = {
        "module": aiosqlite.__name__,
        "file": str(getattr(aiosqlite, "__file__", None)),
        "connect_module": aiosqlite.connect.__module__,
    }
    # The loop class the tests get, made the way IsolatedAsyncioTestCase makes theirs.
    probe = asyncio.new_event_loop()
    identity["loop"] = f"{type(probe).__module__}.{type(probe).__qualname__}"
    probe.close()
    print(f"aiosqlite is {identity['module']} from {identity['file']}; loops are {identity['loop']}", file=sys.stderr)
    print(f"aiosqlite.connect.__module__ == {identity['connect_module']!r}", file=sys.stderr, flush=True)

    suite = unittest.defaultTestLoader.loadTestsFromName(suite_name)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=RecordingResult).run(suite)
    assert isinstance(result, RecordingResult)
    # After the run, so a submodule of the real aiosqlite imported by anything (ferrio included) shows.
    identity["aiosqlite_submodules"] = sorted(m for m in sys.modules if m.startswith("aiosqlite."))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"identity": identity, "tests_run": result.testsRun, "outcomes": result.outcomes}, f, indent=1)


if __name__ == "__main__":
    main()
