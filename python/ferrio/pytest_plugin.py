"""ferrio's pytest plugin: fails the tests that block their event loop.

::

    pytest -p ferrio.pytest_plugin --ferrio-watchdog=50ms          # a test that blocked a loop 50 ms fails
    pytest -p ferrio.pytest_plugin --ferrio-watchdog=50ms --ferrio-watchdog-report   # listed instead

Load it with ``-p ferrio.pytest_plugin`` (on the command line, or in ``addopts``); it does nothing
unless ``--ferrio-watchdog`` is given too. There is no entry point that would load it by itself:
that would import ferrio into every pytest session of every project where it is installed.

A test fails with the report of each block: how long, and the stack of the code that blocked,
taken while it blocked. Any blocking code is caught, C extensions included, on asyncio and uvloop,
whoever runs the loop: ``asyncio.run`` in the test, anyio's or pytest-asyncio's plugins. A
fixture's setup or teardown that blocks errors the same way.

One watchdog, started outside any loop, watches every loop the session starts, in any thread. It
starts before the first conftest is imported, because uvloop is watched only if imported after it
(a conftest that names this plugin in ``pytest_plugins`` starts it later, and a uvloop imported
by then is not watched). A loop that was already running when the watchdog started (in another
thread, say) is not watched.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

import ferrio
from ferrio._watch_cli import parse_threshold
from ferrio._watchdog import format_duration

#: How many reports of one test its failure shows in full; the rest are counted.
SHOWN_REPORTS = 5
#: The name of the user property (``item.user_properties``, a ``<property>`` in JUnit XML) that
#: says a test phase blocked its loop, and of its report section: ``ferrio_watchdog_call``, ...
PROPERTY = "ferrio_watchdog"


class _SessionWatch:
    """The session's watchdog, started outside any loop."""

    def __init__(self, threshold: float) -> None:
        self.dog = ferrio.watchdog(threshold, log=False).start()

    def blocks_since(self, count: int) -> list[ferrio.BlockReport]:
        """The blocks reported after the first ``count``."""
        new = self.dog.statistics().blocks - count
        return list(self.dog.reports[-new:]) if new > 0 else []


class _Summary:
    """The summary at the end of the run: the tests that blocked, read from their reports (so
    from pytest-xdist's workers too)."""

    def __init__(self, threshold: float, *, report_only: bool) -> None:
        self.threshold = threshold
        self.report_only = report_only
        self.lines: dict[str, None] = {}  # in order, once each (a report repeats earlier phases')
        self.texts: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = f"{PROPERTY}_{report.when}"
        for key, value in report.user_properties:
            if key == name:
                where = "" if report.when == "call" else f" (in {report.when})"
                self.lines.setdefault(f"{report.nodeid}{where}: {value}")
        if self.report_only:
            self.texts += [text for title, text in report.sections if title == f"Captured {PROPERTY} {report.when}"]

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_sep("=", "ferrio watchdog")
        if not self.lines:
            terminalreporter.write_line(f"no test blocked its event loop for {format_duration(self.threshold)} or more")
        for line in self.lines:
            terminalreporter.write_line(line)
        for text in self.texts:
            terminalreporter.write_line("\n" + text)


_WATCH = pytest.StashKey[_SessionWatch]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ferrio", "ferrio's watchdog for blocked event loops")
    group.addoption(
        "--ferrio-watchdog",
        metavar="THRESHOLD",
        type=parse_threshold,
        default=None,
        dest="ferrio_watchdog",
        help=(
            "fail each test whose event loop blocked for THRESHOLD or longer (50ms, 0.05s, 20000us, or "
            "seconds), with the stack of the code that blocked. Off unless given."
        ),
    )
    group.addoption(
        "--ferrio-watchdog-report",
        action="store_true",
        dest="ferrio_watchdog_report",
        help="with --ferrio-watchdog: list the tests that blocked at the end, instead of failing them",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Before the conftests are imported: a uvloop they import is then watched too.
    _start(early_config, early_config.known_args_namespace.ferrio_watchdog)


def pytest_configure(config: pytest.Config) -> None:
    threshold: float | None = config.getoption("ferrio_watchdog")
    report_only = bool(config.getoption("ferrio_watchdog_report"))
    if threshold is None:
        if report_only:
            raise pytest.UsageError(
                "--ferrio-watchdog-report needs --ferrio-watchdog=THRESHOLD, e.g. --ferrio-watchdog=50ms"
            )
        return
    _start(config, threshold)  # loaded from a conftest's pytest_plugins: too late for the hook above
    config.pluginmanager.register(_Summary(threshold, report_only=report_only), f"{PROPERTY}_summary")


def _start(config: pytest.Config, threshold: float | None) -> None:
    if threshold is None or _WATCH in config.stash:
        return
    config.stash[_WATCH] = _SessionWatch(threshold)


def pytest_unconfigure(config: pytest.Config) -> None:
    watch = config.stash.get(_WATCH, None)
    if watch is not None:
        watch.dog.stop()
        del config.stash[_WATCH]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _watched(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _watched(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _watched(item, "teardown"))


def _watched(item: pytest.Item, when: str) -> Generator[None, None, None]:
    """Runs one phase of a test, and fails it if it blocked a loop (unless only reporting)."""
    watch = item.config.stash.get(_WATCH, None)
    if watch is None:
        return (yield)
    before = watch.dog.statistics().blocks
    blocks: list[ferrio.BlockReport] = []
    try:
        result = yield
    finally:
        # A block that ended as the phase did was concluded when its loop stopped: it is in the
        # watchdog's reports once the loop's run() returned.
        blocks = watch.blocks_since(before)
        if blocks:
            longest = max(blocks, key=lambda b: b.duration)
            function = f" in {longest.function}()" if longest.function else ""
            said = f"blocked its event loop for {format_duration(longest.duration)}{function}"
            item.user_properties.append((f"{PROPERTY}_{when}", said))
    if blocks and not item.config.getoption("ferrio_watchdog_report"):
        pytest.fail(_explain(blocks, watch.dog.threshold), pytrace=False)
    if blocks:  # shown with -rP, and in the summary at the end
        item.add_report_section(when, PROPERTY, _explain(blocks, watch.dog.threshold))
    return result


def _explain(blocks: list[ferrio.BlockReport], threshold: float) -> str:
    times = "once" if len(blocks) == 1 else f"{len(blocks)} times"
    lines = [
        f"The event loop was blocked {times} for {format_duration(threshold)} or more (--ferrio-watchdog); "
        f"the longest for {format_duration(max(b.duration for b in blocks))}.",
        "",
    ]
    lines += [b.format() + "\n" for b in blocks[:SHOWN_REPORTS]]
    if len(blocks) > SHOWN_REPORTS:
        lines.append(f"... and {len(blocks) - SHOWN_REPORTS} more blocks.")
    return "\n".join(lines).rstrip("\n")
