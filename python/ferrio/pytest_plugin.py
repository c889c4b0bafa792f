"""ferrio's pytest plugin: fails the tests that block their event loop.

::

    pytest --ferrio-watchdog=50ms                           # a test that blocked a loop 50 ms fails
    pytest --ferrio-watchdog=50ms --ferrio-watchdog-report  # listed at the end instead

It does nothing unless ``--ferrio-watchdog`` is given. Installed with ferrio, pytest loads it by
itself (through the ``pytest11`` entry point ``ferrio.pytest_plugin``); with plugin autoloading off,
pass ``-p ferrio.pytest_plugin``, and ``-p no:ferrio.pytest_plugin`` keeps it out.

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
from ferrio._watch_cli import parse_threshold, settle

#: How many reports of one test its failure shows in full; the rest are counted.
SHOWN_REPORTS = 5


#: A test phase that blocked: the test's node id, the phase ("setup", "call", "teardown"), the blocks.
_Blocked = tuple[str, str, tuple[ferrio.BlockReport, ...]]


class _SessionWatch:
    """The session's watchdog, started outside any loop, and the blocks of the test phase running."""

    def __init__(self, threshold: float) -> None:
        #: The blocks of the phase running, or None between phases (blocks then are no test's).
        self.current: list[ferrio.BlockReport] | None = None
        #: Each test phase that blocked.
        self.blocked: list[_Blocked] = []
        self.dog = ferrio.watchdog(threshold, on_block=self._on_block, log=False).start()

    def _on_block(self, report: ferrio.BlockReport) -> None:
        """Runs on the watcher thread: keeps the block for the phase running now."""
        current = self.current
        if current is not None and not report.ongoing:
            current.append(report)


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
            "fail each test whose event loop blocked for THRESHOLD or longer (50ms, 0.05s, 1500us, or "
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
    if config.getoption("ferrio_watchdog_report") and threshold is None:
        raise pytest.UsageError(
            "--ferrio-watchdog-report needs --ferrio-watchdog=THRESHOLD, e.g. --ferrio-watchdog=50ms"
        )
    _start(config, threshold)  # loaded from a conftest's pytest_plugins: too late for the hook above


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
    blocks: list[ferrio.BlockReport] = []
    watch.current = blocks
    try:
        result = yield
    finally:
        settle(watch.dog)  # a block that ended as the phase did is still this phase's
        watch.current = None
        if blocks:
            watch.blocked.append((item.nodeid, when, tuple(blocks)))
    if blocks and not item.config.getoption("ferrio_watchdog_report"):
        pytest.fail(_explain(blocks, watch), pytrace=False)
    if blocks:  # shown with -rP, and in the terminal summary
        item.add_report_section(when, "ferrio watchdog", _explain(blocks, watch))
    return result


def _explain(blocks: list[ferrio.BlockReport], watch: _SessionWatch) -> str:
    times = "once" if len(blocks) == 1 else f"{len(blocks)} times"
    lines = [
        f"The event loop was blocked {times} for {_ms(watch.dog.threshold)} or more "
        f"(--ferrio-watchdog); the longest for {_ms(max(b.duration for b in blocks))}.",
        "",
    ]
    lines += [b.format() + "\n" for b in blocks[:SHOWN_REPORTS]]
    if len(blocks) > SHOWN_REPORTS:
        lines.append(f"... and {len(blocks) - SHOWN_REPORTS} more blocks.")
    return "\n".join(lines).rstrip("\n")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    watch = config.stash.get(_WATCH, None)
    if watch is None:
        return
    report_only = config.getoption("ferrio_watchdog_report")
    terminalreporter.write_sep("=", "ferrio watchdog")
    if not watch.blocked:
        terminalreporter.write_line(f"no test blocked its event loop for {_ms(watch.dog.threshold)} or more")
        return
    for nodeid, when, blocks in watch.blocked:
        where = "" if when == "call" else f" (in {when})"
        longest = max(blocks, key=lambda b: b.duration)
        function = f" in {longest.function}()" if longest.function else ""
        terminalreporter.write_line(f"{nodeid}{where}: blocked its event loop for {_ms(longest.duration)}{function}")
        if report_only:
            terminalreporter.write_line(_explain(list(blocks), watch) + "\n")
