"""ferrio's pytest plugin, run by pytest in a subprocess (the watchdog's state is per process) on
a small test folder whose tests block their loop, on asyncio and on uvloop."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import pytest

pytest_plugins = ["pytester"]

# Blocks of 0.3 s, three times the threshold the tests pass. uvloop is imported as the test module
# is collected, before any test runs: the plugin's watchdog must already be started by then.
TESTS = """
import asyncio, time
import pytest

try:
    import uvloop
except ImportError:
    uvloop = None

def blocking_function():
    time.sleep(0.3)

async def blocks():
    await asyncio.sleep(0)
    blocking_function()

async def does_not_block():
    for _ in range(5):
        await asyncio.sleep(0.01)

@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    if request.param == "uvloop":
        if uvloop is None:
            pytest.skip("uvloop is not available on this platform")
        return uvloop.run
    return asyncio.run

def test_blocks(run):
    run(blocks())

def test_does_not_block(run):
    run(does_not_block())
"""


@pytest.fixture
def folder(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The test folder, run with only the plugins named on the command line (faster to start)."""
    pytester.makepyfile(test_loops=TESTS)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "ferrio.pytest_plugin", *args, timeout=60)


def _loops() -> int:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return 1
    return 2


def test_without_the_option_the_plugin_does_nothing(folder: pytest.Pytester) -> None:
    result = _run(folder)
    result.assert_outcomes(passed=2 * _loops(), skipped=2 * (2 - _loops()))
    assert "ferrio watchdog" not in result.stdout.str()


def test_a_test_that_blocks_its_loop_fails_with_the_stack_of_the_blocking_function(folder: pytest.Pytester) -> None:
    result = _run(folder, "--ferrio-watchdog=100ms", "-v", "--junitxml=junit.xml")
    result.assert_outcomes(failed=_loops(), passed=_loops(), skipped=2 * (2 - _loops()))
    result.stdout.fnmatch_lines(
        [
            "*test_loops.py::test_blocks?asyncio? FAILED*",
            "*test_loops.py::test_does_not_block?asyncio? PASSED*",
            "*_ test_blocks?asyncio? _*",
            "The event loop was blocked once for 100 ms or more (--ferrio-watchdog); the longest for * ms.",
            "event loop <_UnixSelectorEventLoop * was blocked for * ms (threshold 100 ms), by task *",
            "*test_loops.py*, in blocking_function",
            "    time.sleep(0.3)",
            "Run the blocking call in blocking_function() off the loop*",
            "*= ferrio watchdog =*",
            "test_loops.py::test_blocks?asyncio?: blocked its event loop for * ms in blocking_function()",
            "FAILED test_loops.py::test_blocks?asyncio? - Failed: The event loop was block*",
        ]
    )
    if _loops() == 2:  # the uvloop imported at collection is watched too
        result.stdout.fnmatch_lines(
            [
                "*test_loops.py::test_blocks?uvloop? FAILED*",
                "event loop <uvloop.Loop * was blocked for * ms (threshold 100 ms), by task *",
                "FAILED test_loops.py::test_blocks?uvloop? - Failed: The event loop was block*",
            ]
        )
    assert "test_does_not_block" not in result.stdout.str().split("= ferrio watchdog =")[1]
    # Each test that blocked says so in a property of its own, which CI tools read from JUnit XML.
    cases = {c.get("name"): c for c in ElementTree.parse(folder.path / "junit.xml").iter("testcase")}
    said = [(p.get("name"), p.get("value")) for p in cases["test_blocks[asyncio]"].iter("property")]
    assert len(said) == 1, said
    assert said[0][0] == "ferrio_watchdog_call"
    assert re.fullmatch(r"blocked its event loop for \d+ ms in blocking_function\(\)", said[0][1] or ""), said
    assert not list(cases["test_does_not_block[asyncio]"].iter("property"))


def test_report_only_lists_the_tests_that_blocked_and_fails_none(folder: pytest.Pytester) -> None:
    result = _run(folder, "--ferrio-watchdog=100ms", "--ferrio-watchdog-report")
    result.assert_outcomes(passed=2 * _loops(), skipped=2 * (2 - _loops()))
    result.stdout.fnmatch_lines(
        [
            "*= ferrio watchdog =*",
            "test_loops.py::test_blocks?asyncio?: blocked its event loop for * ms in blocking_function()",
            "The event loop was blocked once for 100 ms or more (--ferrio-watchdog); the longest for * ms.",
            "*, in blocking_function",
        ]
    )
    assert result.ret == pytest.ExitCode.OK


def test_a_fixture_that_blocks_errors_the_test(folder: pytest.Pytester) -> None:
    folder.makepyfile(
        test_fixture="""
        import asyncio, pytest
        from test_loops import blocks

        @pytest.fixture
        def blocking_fixture():
            asyncio.run(blocks())

        def test_uses_it(blocking_fixture):
            pass
        """
    )
    result = _run(folder, "--ferrio-watchdog=100ms", "test_fixture.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_uses_it*",
            "The event loop was blocked once for 100 ms or more*",
            "test_fixture.py::test_uses_it (in setup): blocked its event loop for * ms in blocking_function()",
        ]
    )


def test_async_tests_run_by_anyios_plugin_are_watched(folder: pytest.Pytester) -> None:
    # anyio's runner keeps its loop from test to test; the watchdog sees it start each time.
    folder.makepyfile(
        test_anyio="""
        import time
        import anyio, pytest

        pytestmark = pytest.mark.anyio
        BACKENDS = ["asyncio"]
        try:
            import uvloop
        except ImportError:
            pass
        else:
            BACKENDS.append(("asyncio", {"use_uvloop": True}))

        @pytest.fixture(params=BACKENDS, ids=["asyncio", "uvloop"][: len(BACKENDS)])
        def anyio_backend(request):
            return request.param

        def blocking_function():
            time.sleep(0.3)

        async def test_blocks():
            blocking_function()

        async def test_does_not_block():
            await anyio.sleep(0.01)
        """
    )
    result = _run(folder, "-p", "anyio", "--ferrio-watchdog=100ms", "test_anyio.py")
    result.assert_outcomes(failed=_loops(), passed=_loops())
    result.stdout.fnmatch_lines(
        ["test_anyio.py::test_blocks?asyncio?: blocked its event loop for * ms in blocking_function()"]
    )
    if _loops() == 2:
        result.stdout.fnmatch_lines(["event loop <uvloop.Loop * was blocked for * ms (threshold 100 ms)*"])


def test_with_no_test_blocking_the_summary_says_so(folder: pytest.Pytester) -> None:
    result = _run(folder, "--ferrio-watchdog=100ms", "-k", "does_not_block")
    result.assert_outcomes(passed=_loops(), skipped=2 - _loops())
    result.stdout.fnmatch_lines(["*= ferrio watchdog =*", "no test blocked its event loop for 100 ms or more"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--ferrio-watchdog=fast"],
            "*argument --ferrio-watchdog: expected a duration such as 50ms, 0.05s or 1s*, got 'fast'",
        ),
        (["--ferrio-watchdog=0"], "*argument --ferrio-watchdog: '0' is out of range*"),
        (["--ferrio-watchdog-report"], "*--ferrio-watchdog-report needs --ferrio-watchdog=THRESHOLD*"),
    ],
)
def test_a_bad_option_is_a_usage_error(folder: pytest.Pytester, args: list[str], message: str) -> None:
    result = _run(folder, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
