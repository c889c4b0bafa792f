"""``python -m ferrio bench``: the options, the plan of workloads, and the run that prints each
workload's block as soon as it is measured, with a progress line on stderr."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any

import ferrio

from . import _bridges, _files, _processes, _sqlite, _sync, _threads, _watchdog
from ._harness import Batches, LoopFactory, Result, peer
from ._report import report

#: The workload families ``--only`` chooses from, each a module of this package.
FAMILIES = ("threads", "bridges", "sync", "processes", "files", "watchdog", "sqlite")

# NOTE: measured with a release build on the 2-CPU x86_64 VM of benchmarks/README.md: 2 min 45 s
# wall for `python -m ferrio bench --quick` (both loops, every peer installed), other work running.
QUICK_HELP = "smaller workloads, fewer rounds: about 3 minutes on a 2-CPU x86_64 VM (release build)"


@dataclass(frozen=True)
class Sizes:
    """How much each workload does: the full run, ``--quick``, or ``--smoke``."""

    rounds: int
    n: int  # offloaded no-ops per round
    seq: int  # sequential awaits
    sleeps: int
    calls: int  # calls through one pool, for its memory
    bridges: int  # calls across a bridge
    items: int  # queue items (lock acquisitions: half as many)
    lines: int  # lines of the text file
    small_files: int
    big_mib: int
    proc_calls: int  # trivial calls on warm process pools
    proc_mib: int  # MiB per process round trip
    crash_calls: int
    kills: int
    crash_rounds: int
    watch_rounds: int  # the watchdog's on/off pairs: many short ones, since the difference is small
    watch_n: int  # offloaded no-ops per run of a pair
    pings: int  # sleep(0) hand-offs per run of a pair
    beats: int  # heartbeat beats timed in a row
    blocks: int  # deliberate blocks of each kind
    sql_selects: int  # point selects, from 64 tasks and from one
    sql_inserts: int  # inserts awaited one by one; rows of the executemany
    sql_rows: int  # rows of the fetchall and the async for
    sql_table: int  # rows of the users table


FULL = Sizes(
    rounds=5, n=20_000, seq=5_000, sleeps=2_000, calls=1_000_000, bridges=5_000, items=200_000,
    lines=100_000, small_files=2_000, big_mib=256,
    proc_calls=2_000, proc_mib=16, crash_calls=2_000, kills=100, crash_rounds=3,
    watch_rounds=31, watch_n=10_000, pings=40_000, beats=1_000_000, blocks=3,
    sql_selects=20_000, sql_inserts=100_000, sql_rows=10_000, sql_table=100_000,
)  # fmt: skip
QUICK = Sizes(
    rounds=3, n=20_000, seq=2_000, sleeps=2_000, calls=200_000, bridges=2_000, items=50_000,
    lines=20_000, small_files=2_000, big_mib=64,
    proc_calls=2_000, proc_mib=16, crash_calls=500, kills=25, crash_rounds=3,
    watch_rounds=15, watch_n=5_000, pings=20_000, beats=200_000, blocks=3,
    sql_selects=5_000, sql_inserts=20_000, sql_rows=10_000, sql_table=100_000,
)  # fmt: skip
# Tiny sizes that only prove every workload runs (the test suite uses it); not a measurement.
SMOKE = Sizes(
    rounds=1, n=640, seq=50, sleeps=128, calls=2_000, bridges=50, items=400,
    lines=200, small_files=20, big_mib=1,
    proc_calls=40, proc_mib=1, crash_calls=40, kills=3, crash_rounds=1,
    watch_rounds=1, watch_n=640, pings=200, beats=1_000, blocks=1,
    sql_selects=128, sql_inserts=200, sql_rows=100, sql_table=1_000,
)  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One workload (or a few measured together) of one family, on one loop.

    ``shared``: ``run`` gets the loop every shared step of ``loop_name`` runs in, in turn (the
    runner makes it, and closes it after the last of them); otherwise ``run`` gets None and
    makes its own loop, or needs none."""

    family: str
    title: str
    loop_name: str
    shared: bool
    run: Callable[[asyncio.AbstractEventLoop | None], Batches]


OnLoop = Callable[[asyncio.AbstractEventLoop, str, Sizes], Batches]
OwnLoop = Callable[[str, LoopFactory, Sizes], Batches]

#: Workloads measured on every chosen loop, one loop at a time, in this order.
ON_EACH_LOOP: list[tuple[str, str, OnLoop]] = [
    ("threads", "await a no-op in a thread", lambda lp, ln, s: _threads.offload(lp, ln, s.rounds, s.n)),
    ("threads", "map a no-op over a pool", lambda lp, ln, s: _threads.bulk(lp, ln, s.rounds, s.n)),
    ("threads", "sequential awaits", lambda lp, ln, s: _threads.latency(lp, ln, s.rounds, s.seq)),
    ("threads", "sleeps on 64 workers", lambda lp, ln, s: _threads.sleep(lp, ln, s.rounds, s.sleeps)),
    ("bridges", "from_thread calls", lambda lp, ln, s: _bridges.from_thread(lp, ln, s.rounds, s.bridges)),
    ("sync", "queues", lambda lp, ln, s: _sync.queues(lp, ln, s.rounds, s.items)),
    ("sync", "locks", lambda lp, ln, s: _sync.locks(lp, ln, s.rounds, s.items // 2)),
    (
        "processes",
        "warm process pools",
        lambda lp, ln, s: _processes.warm(lp, ln, s.rounds, s.proc_calls, s.proc_mib),
    ),
    (
        "watchdog",
        "the watchdog on vs off",
        lambda lp, ln, s: _watchdog.cost(lp, ln, s.watch_rounds, s.watch_n, s.pings, s.beats),
    ),
    ("watchdog", "blocks caught", lambda lp, ln, s: _watchdog.detection(lp, ln, s.blocks)),
    (
        "sqlite",
        "sqlite3 from async code",
        lambda lp, ln, s: _sqlite.sqlite(lp, ln, s.rounds, s.sql_selects, s.sql_inserts, s.sql_rows, s.sql_table),
    ),
]
#: Workloads that make their own loops (or threads with loops): measured once, on the first chosen loop.
ONCE: list[tuple[str, str, OwnLoop]] = [
    ("bridges", "portal calls", lambda ln, f, s: _bridges.portal(ln, f, s.rounds, s.bridges)),
    ("processes", "process pool cold start", lambda ln, f, s: _processes.start(ln, f, s.rounds)),
    (
        "processes",
        "workers killed mid-stream",
        lambda ln, f, s: _processes.crashes(ln, f, s.crash_rounds, s.crash_calls, s.kills),
    ),
    ("files", "files", lambda ln, f, s: _files.files(ln, f, s.rounds, s.lines, s.small_files, s.big_mib)),
    ("threads", "memory, fds and threads left", lambda ln, f, s: _threads.memory(ln, f, s.calls)),
]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``bench`` command to ``commands`` (what ``add_subparsers`` returned)."""
    b = commands.add_parser(
        "bench",
        help="compare ferrio with the stdlib and the installed peers, in one process",
        description=(
            "Compare ferrio with the stdlib and the installed peers (pip install 'ferrio[bench]'), "
            "interleaved in one process: every round runs each contender once, and the median round "
            "is reported. Each workload's figures print as soon as it is measured; a progress line "
            "goes to stderr."
        ),
    )
    b.add_argument("--quick", action="store_true", help=QUICK_HELP)
    b.add_argument("--json", action="store_true", help="print every result as one JSON document on stdout, at the end")
    b.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="both",
        help=(
            "the event loops to measure on (default: both). Workloads that make their own loop run once, "
            "on the first of them; `run()` from sync code runs only on asyncio, whose loops "
            "ferrio.run and asyncio.run make"
        ),
    )
    b.add_argument(
        "--only",
        metavar="FAMILY[,FAMILY]",
        type=_families,
        default=FAMILIES,
        help=f"run only these workload families: {', '.join(FAMILIES)} (default: all)",
    )
    # Tiny sizes that only prove every workload runs (the test suite uses it); not a measurement.
    b.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    b.set_defaults(run=run)
    return b


def _families(text: str) -> tuple[str, ...]:
    chosen = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FAMILIES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected families among {', '.join(FAMILIES)}, got {text!r}")
    return chosen


def _loop_factories(which: str, err: IO[str]) -> dict[str, LoopFactory]:
    loops: dict[str, LoopFactory] = {}
    if which in ("asyncio", "both"):
        loops["asyncio"] = asyncio.new_event_loop
    if which in ("uvloop", "both"):
        uvloop = peer("uvloop")
        if uvloop is not None:
            loops["uvloop"] = uvloop.new_event_loop
        elif loops:
            print("uvloop is not installed: measuring on asyncio only", file=err)
    return loops


class Progress:
    """The line on stderr that says which workload runs: rewritten in place on a terminal, one
    plain line per workload otherwise (a log, a pipe), so stdout carries only the report."""

    def __init__(self, stream: IO[str], total: int) -> None:
        self.stream = stream
        self.total = total
        self.tty = stream.isatty()
        self.count = 0
        self.text = ""
        self.started = time.monotonic()

    def start(self, step: Step) -> None:
        self.count += 1
        elapsed = time.monotonic() - self.started
        self.text = f"[{self.count}/{self.total}, {elapsed:.0f} s] {step.family}: {step.title} on {step.loop_name}"
        self.stream.write(f"\r\x1b[K{self.text} ..." if self.tty else f"{self.text}\n")
        self.stream.flush()

    def clear(self) -> None:
        """Before stdout prints, so a report line never lands after a half progress line."""
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def resume(self) -> None:
        """After stdout printed, while the same step goes on measuring."""
        if self.tty and self.text:
            self.stream.write(f"{self.text} ...")
            self.stream.flush()


def _plan(only: Sequence[str], sizes: Sizes, loops: dict[str, LoopFactory], err: IO[str]) -> list[Step]:
    """Every step of the run, in order: the per-loop workloads on each loop, then the rest once."""

    def on(fn: OnLoop, loop_name: str) -> Callable[[asyncio.AbstractEventLoop | None], Batches]:
        def run(loop: asyncio.AbstractEventLoop | None) -> Batches:
            assert loop is not None
            return fn(loop, loop_name, sizes)

        return run

    steps: list[Step] = []
    for loop_name in loops:
        for family, title, fn in ON_EACH_LOOP:
            if family in only:
                steps.append(Step(family, title, loop_name, True, on(fn, loop_name)))
    first, factory = next(iter(loops.items()))
    if "bridges" in only:
        if first == "asyncio":
            steps.append(
                Step(
                    "bridges",
                    "run() from sync code",
                    first,
                    False,
                    lambda _: _bridges.run_from_sync(sizes.rounds, sizes.bridges),
                )
            )
        else:
            print("run() from sync code: skipped, it runs only on asyncio (--loop asyncio or both)", file=err)

    def once(fn: OwnLoop) -> Callable[[asyncio.AbstractEventLoop | None], Batches]:
        return lambda _: fn(first, factory, sizes)

    for family, title, own in ONCE:
        if family in only:
            steps.append(Step(family, title, first, False, once(own)))
    return steps


def _close(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def _execute(steps: list[Step], loops: dict[str, LoopFactory], out: IO[str] | None, progress: Progress) -> list[Result]:
    """Run ``steps`` in order; print each workload's block on ``out`` as soon as it is measured
    (unless ``out`` is None, for ``--json``)."""
    everything: list[Result] = []
    shared: tuple[str, asyncio.AbstractEventLoop] | None = None
    try:
        for step in steps:
            if shared is not None and (not step.shared or shared[0] != step.loop_name):
                _close(shared[1])
                shared = None
            if step.shared and shared is None:
                shared = (step.loop_name, loops[step.loop_name]())
            progress.start(step)
            for batch in step.run(shared[1] if shared is not None else None):
                everything += batch
                if out is not None:
                    progress.clear()
                    print(*report(batch), sep="\n", file=out, flush=True)
                    progress.resume()
    finally:
        if shared is not None:
            _close(shared[1])
        progress.clear()
    return everything


def run(args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run the benchmark ``args`` describe; the exit status."""
    # (sys.stdout and sys.stderr are None in an interpreter started without them.)
    stdout: IO[str] = out or sys.stdout or io.StringIO()
    stderr: IO[str] = err or sys.stderr or io.StringIO()
    loops = _loop_factories(args.loop, stderr)
    if not loops:
        print("uvloop is not installed (pip install uvloop): nothing to measure with --loop uvloop", file=stderr)
        return 2
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    steps = _plan(args.only, sizes, loops, stderr)
    meta: dict[str, Any] = {
        "python": sys.version.split()[0],
        "ferrio": ferrio.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    if not args.json:
        print(f"ferrio {meta['ferrio']} on Python {meta['python']}, {meta['machine']}", file=stdout, flush=True)
    results = _execute(steps, loops, None if args.json else stdout, Progress(stderr, len(steps)))
    if args.json:
        meta["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2), file=stdout, flush=True)
    return 0
