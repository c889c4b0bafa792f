"""The block watchdog: what it costs a busy loop, and what it catches against asyncio's debug mode.

Cost: the 64-wide ``ferrio.to_thread`` throughput workload and a ``sleep(0)`` ping-pong, each run
inside ``async with ferrio.watchdog(threshold=0.1, log=False)`` and without it, in many short
rounds whose order alternates, with the median of the rounds' on/off ratios; the ping-pong also
without the watchdog but with one timer pending, as the heartbeat's always is, to tell what any
timer costs from what the watchdog does; and the loop-side beat, timed alone.

Catch: one program makes deliberate blocks of four kinds, each through a sync helper the way real
code blocks (a driver call under a handler), and runs once under the watchdog and once in the
loop's debug mode (``slow_callback_duration = 0.1``), whose "Executing ... took ... seconds"
warnings are collected from the ``asyncio`` logger. A block counts for ferrio when a report names
the helper in its stack, sampled while the block lasted; the debug mode's warning comes after the
block ended and says only the handle's ``repr()``: the task and its coroutine (where it is
defined, or the line it is suspended at now), or the callback and where it was scheduled.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import ferrio

from .. import _ferrio
from ._harness import Batches, Result, alternate, noop, per_call_us, results, tasks

#: The watchdog's settings in every row: blocks of 100 ms or more; a beat every 13 ms.
THRESHOLD = 0.1
#: The idle time before each timed run of the cost rows: a little more than one watcher tick.
SETTLE = 0.03
#: How long each deliberate block lasts (at least: the ``re`` block is calibrated to 150-300 ms),
#: clear of the threshold, so neither side's resolution decides whether it counts.
BLOCK = 0.15
#: The idle time after each block, as a program would await something between two requests.
GAP = 0.05
#: How long the ferrio run waits for the watcher to deliver the last report (it wakes every
#: eighth of the threshold), before counting what it has.
DELIVERY = 1.0
#: Catastrophic backtracking: one C call that holds the GIL for 2**n steps of the ``re`` engine,
#: which never releases the GIL and never returns to the interpreter until it is done.
PATTERN = re.compile(r"(a+)+$")


# -- the cost of watching -----------------------------------------------------------------------


async def _settled(measure: Callable[[], Awaitable[float]]) -> float:
    # Untimed, before every contender alike: the watcher thread the watchdog just started gets
    # going (and ticks once) before the clock starts, so a short run does not time its start-up.
    await asyncio.sleep(SETTLE)
    return await measure()


async def _watched(measure: Callable[[], Awaitable[float]]) -> float:
    async with ferrio.watchdog(threshold=THRESHOLD, log=False):
        return await _settled(measure)


async def _with_a_timer(measure: Callable[[], Awaitable[float]]) -> float:
    """``measure()`` with one timer pending that never fires, as the heartbeat's always is."""
    handle = asyncio.get_running_loop().call_later(3600, noop)
    try:
        return await _settled(measure)
    finally:
        handle.cancel()


def _on_off(
    loop: asyncio.AbstractEventLoop,
    loop_name: str,
    workload: str,
    rounds: int,
    n: int,
    measure: Callable[[], Awaitable[float]],
    *,
    timer: bool = False,
) -> list[Result]:
    """``n / seconds`` of ``measure()`` with the watchdog on and off (and, with ``timer``, off but
    with a timer pending), interleaved, and the median of each round's on/off ratios (runs back to
    back, so drift between rounds cancels)."""
    contenders: dict[str, Callable[[], Awaitable[float]]] = {
        "ferrio.watchdog on": lambda: _watched(measure),
        "watchdog off": lambda: _settled(measure),
    }
    if timer:
        contenders["watchdog off, a timer pending"] = lambda: _with_a_timer(measure)
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds):
        for name, run in alternate(contenders, r):
            samples[name].append(n / loop.run_until_complete(run()))
    on = samples["ferrio.watchdog on"]
    out = results(workload, loop_name, samples, "awaits/s", True)
    for name, other in samples.items():
        if other is on:
            continue
        ratios = [a / b for a, b in zip(on, other, strict=True)]
        label = f"on / {name.removeprefix('watchdog ')}, median of {rounds} round{'s' if rounds > 1 else ''}"
        if rounds >= 4:  # the spread says how far the machine's noise lets the median be trusted
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            label += f" (quartiles {q1:.2f}-{q3:.2f})"
        out.append(Result(workload, loop_name, label, statistics.median(ratios), "x", True, ratios))
    return out


async def _ping_pong(n: int) -> float:
    """Seconds for two tasks to hand the loop to each other ``n`` times with ``sleep(0)``."""

    async def player() -> None:
        for _ in range(n // 2):
            await asyncio.sleep(0)

    t0 = time.perf_counter()
    await asyncio.gather(player(), player())
    return time.perf_counter() - t0


def cost(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int, pings: int, beats: int) -> Batches:
    """The watchdog on vs off: 64-wide ``to_thread`` throughput, a ``sleep(0)`` ping-pong; one beat."""
    yield _on_off(
        loop,
        loop_name,
        f"{n:,} x await ferrio.to_thread(noop), 64 in flight: watchdog on vs off",
        rounds,
        n,
        lambda: tasks(n, 64, lambda i: ferrio.to_thread(noop, i)),
    )
    yield _on_off(
        loop,
        loop_name,
        f"{pings:,} x await asyncio.sleep(0), two tasks in turn: watchdog on vs off",
        rounds,
        pings,
        lambda: _ping_pong(pings),
        timer=True,  # asyncio's loop does a little more per iteration while a timer is pending
    )
    # The beat the loop runs every eighth of the threshold, unarmed: no watcher thread, the same atomics.
    watch = _ferrio.LoopWatch(threshold=THRESHOLD, handler=object(), lag=_ferrio.LatencyHistogram())
    try:
        per_beat = [per_call_us(beats, watch.beat) * 1e3 for _ in range(min(rounds, 5))]
    finally:
        watch.close()
    yield results(
        f"the heartbeat's beat, every {watch.period * 1e3:.0f} ms at threshold {THRESHOLD * 1e3:.0f} ms, per call",
        loop_name,
        {"ferrio LoopWatch.beat()": per_beat},
        "ns",
        False,
    )


# -- what it catches ----------------------------------------------------------------------------
# The helpers block; the handlers (a task's coroutine, a call_soon callback) call them. Their names
# are what each side's report is searched for.


def read_config(seconds: float) -> None:
    time.sleep(seconds)  # releases the GIL


def checksum(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:  # pure Python: the GIL is held, and switched every 5 ms
        total += 1
    return total


def match_pattern(text: str) -> bool:
    return PATTERN.match(text) is not None  # one C call holding the GIL throughout


def flush_cache(seconds: float) -> None:
    time.sleep(seconds)


async def sleep_handler(seconds: float) -> None:
    read_config(seconds)


async def cpu_handler(seconds: float) -> None:
    checksum(seconds)


async def regex_handler(text: str) -> None:
    match_pattern(text)


def on_timer(seconds: float, done: asyncio.Future[None]) -> None:
    flush_cache(seconds)
    done.set_result(None)


@dataclass(frozen=True)
class Kind:
    """One kind of deliberate block."""

    what: str  # for the report's title
    handler: str  # the coroutine or callback the loop runs: what attributes a report to this kind
    function: str  # the helper that blocks: what a report should name
    block: Callable[[], Awaitable[None]]


def _kinds(text: str) -> list[Kind]:
    async def in_callback() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        loop.call_soon(on_timer, BLOCK, done)
        await done

    return [
        Kind("time.sleep (GIL released) in task sleep_handler()", "sleep_handler", "read_config",
             lambda: asyncio.ensure_future(sleep_handler(BLOCK))),
        Kind("a pure-Python loop (GIL held, switched) in task cpu_handler()", "cpu_handler", "checksum",
             lambda: asyncio.ensure_future(cpu_handler(BLOCK))),
        Kind("a re match (one C call holding the GIL) in task regex_handler()", "regex_handler", "match_pattern",
             lambda: asyncio.ensure_future(regex_handler(text))),
        Kind("time.sleep in call_soon callback on_timer()", "on_timer", "flush_cache", in_callback),
    ]  # fmt: skip


def _pathological_text() -> str:
    """The shortest ``"a" * n + "b"`` whose match takes ``BLOCK`` or more on this machine (each
    ``a`` more doubles it, so at most twice that)."""
    n = 16
    while True:
        text = "a" * n + "b"
        t0 = time.perf_counter()
        match_pattern(text)
        if time.perf_counter() - t0 >= BLOCK:
            return text
        n += 1


async def _program(kinds: list[Kind], n: int) -> None:
    for kind in kinds:
        for _ in range(n):
            await kind.block()
            await asyncio.sleep(GAP)


def _names(report: ferrio.BlockReport) -> set[str]:
    return {report.coroutine or "", *(f.name for s in report.samples for f in s.stack)}


def _names_function(report: ferrio.BlockReport, function: str) -> bool:
    if not report.samples:
        return False
    return report.function == function or any(f.name == function for f in report.samples[0].stack)


class _Warnings(logging.Handler):
    """Collects the loop's "Executing <handle> took ... seconds" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing "):
            self.messages.append(message)


def _under_watchdog(loop: asyncio.AbstractEventLoop, kinds: list[Kind], n: int) -> list[ferrio.BlockReport]:
    async def main() -> list[ferrio.BlockReport]:
        async with ferrio.watchdog(threshold=THRESHOLD, log=False) as dog:
            await _program(kinds, n)
            # Polling, bounded: the watcher tells a block (reported) from a busy spell (counted)
            # within a tick of the late beat that ended it.
            deadline = time.monotonic() + DELIVERY
            while time.monotonic() < deadline:
                seen = dog.statistics()
                if seen.blocks + seen.busy >= n * len(kinds):
                    break
                await asyncio.sleep(0.01)
        return list(dog.reports)

    return loop.run_until_complete(main())


def _in_debug_mode(loop: asyncio.AbstractEventLoop, kinds: list[Kind], n: int) -> list[str]:
    log = logging.getLogger("asyncio")
    handler = _Warnings()
    debug, slow, propagate = loop.get_debug(), loop.slow_callback_duration, log.propagate
    log.addHandler(handler)
    log.propagate = False  # collected, not printed
    loop.set_debug(True)
    loop.slow_callback_duration = THRESHOLD
    try:
        loop.run_until_complete(_program(kinds, n))
    finally:
        loop.set_debug(debug)
        loop.slow_callback_duration = slow
        log.propagate = propagate
        log.removeHandler(handler)
    return handler.messages


def _counts(kind: Kind, reports: list[ferrio.BlockReport], warnings: list[str]) -> Iterator[tuple[str, int]]:
    mine = [r for r in reports if kind.handler in _names(r)]
    yield f"ferrio.watchdog, {kind.function}() in the stack", sum(_names_function(r, kind.function) for r in mine)
    # uvloop's handles say "<Handle on_timer created at ...>", asyncio's "<Handle on_timer(...) at ...>".
    theirs = [w for w in warnings if re.search(rf"\b{kind.handler}\b", w)]
    yield "{loop} debug mode, slow-callback warnings", len(theirs)
    yield f"... of which name {kind.function}()", sum(bool(re.search(rf"\b{kind.function}\b", w)) for w in theirs)


def detection(loop: asyncio.AbstractEventLoop, loop_name: str, n: int) -> Batches:
    """``n`` deliberate blocks of each kind, caught by the watchdog and by the loop's debug mode."""
    kinds = _kinds(_pathological_text())
    reports = _under_watchdog(loop, kinds, n)
    warnings = _in_debug_mode(loop, kinds, n)
    threshold = f"{THRESHOLD * 1e3:.0f} ms"
    for kind in kinds:
        workload = f"{n} x {BLOCK * 1e3:.0f}+ ms in {kind.function}(): {kind.what}, caught at threshold {threshold}"
        yield [
            Result(workload, loop_name, label.format(loop=loop_name), count, "blocks", True)
            for label, count in _counts(kind, reports, warnings)
        ]
