"""`python -m ferrio` and its `bench` command: real runs of the tiny `--smoke` sizes (a few
seconds on a debug build), and the report's wording checked on figures whose direction is known."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import ferrio
import pytest
from ferrio._bench._harness import Result
from ferrio._bench._report import block, compare, figure

BENCH = [sys.executable, "-m", "ferrio", "bench"]
# Without PYTHONUNBUFFERED, so a report that forgot to flush is caught: piped stdout is block-buffered.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
# A row of a workload's block: label, value, unit, and the optional ratio worded from ferrio's side.
ROW = re.compile(
    r"^  (?P<label>\S.*?) +(?P<value>[\d,]+(?:\.\d+)?) (?P<unit>\S+(?: \S+)?) *(?:   (?P<ratio>ferrio .+))?$"
)
RATIO = re.compile(
    r"^ferrio (?:[\d,.]+x (?:faster|slower|better|worse)|about as (?:fast|good)|[\d,]+ (?:more|fewer)|as many)$"
)
PROGRESS = re.compile(r"^\[\d+/\d+, \d+ s\] \w+: .+ on (asyncio|uvloop)$")


def _run(*args: str, merge: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m ferrio *args``, which must succeed; ``merge``: stderr into stdout, in order."""
    proc = subprocess.run(
        [sys.executable, "-m", "ferrio", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        text=True,
        timeout=50,
        check=False,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stdout + (proc.stderr or "")
    return proc


@pytest.fixture(scope="module")
def smoke_text() -> list[str]:
    """Every workload once, on asyncio, text report with the progress lines merged in (stderr is a pipe)."""
    return _run("bench", "--smoke", "--loop", "asyncio", merge=True).stdout.splitlines()


def _blocks(lines: list[str]) -> list[tuple[str, list[re.Match[str]]]]:
    """(title, rows) per workload block of a text report."""
    out: list[tuple[str, list[re.Match[str]]]] = []
    for line in lines:
        if line.endswith(("  [asyncio]", "  [uvloop]")):
            out.append((line, []))
        elif line.startswith("  ") and out:
            row = ROW.match(line)
            assert row, f"not a report row: {line!r}"
            out[-1][1].append(row)
    return out


def test_bench_smoke_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ferrio", "bench", "--smoke", "--json", "--loop", "asyncio"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    contenders = {(r["workload"].split(",")[0], r["contender"]) for r in report["results"]}
    assert any(c == "ferrio.to_thread" for _, c in contenders)
    assert any(c == "asyncio.to_thread" for _, c in contenders)
    assert any(c == "ceiling" for _, c in contenders)
    assert all(r["value"] >= 0 for r in report["results"])
    # The schema scripts read: these meta keys, these fields per result, nothing else on stdout.
    assert list(report) == ["meta", "results"]
    assert list(report["meta"]) == ["python", "ferrio", "machine", "max_rss_mb"]
    assert report["meta"]["ferrio"] == ferrio.__version__
    fields = {"workload": str, "loop": str, "contender": str, "value": (int, float), "unit": str}
    for r in report["results"]:
        assert list(r) == [*fields, "higher_is_better", "samples"]
        assert all(isinstance(r[k], t) for k, t in fields.items()), r
        assert isinstance(r["higher_is_better"], bool)
        assert isinstance(r["samples"], list)  # the rounds' figures (empty for one-off figures)
        assert all(isinstance(s, (int, float)) for s in r["samples"])
    assert {r["loop"] for r in report["results"]} == {"asyncio"}
    # Progress went to stderr, one plain line per workload (stderr is not a terminal here).
    progress = proc.stderr.splitlines()
    assert progress
    assert all(PROGRESS.match(line) for line in progress), progress


def test_help_describes_the_package_and_lists_its_commands() -> None:
    out = _run("--help").stdout
    assert out.startswith("usage: python -m ferrio [-h] [--version] COMMAND ...")
    assert "ferrio bridges sync and async Python" in out
    assert "Linux only." in out
    assert re.search(r"^commands:\n  COMMAND\n    bench +compare ferrio with the stdlib", out, re.M), out
    assert "``" not in out  # plain text, not reST


def test_version_prints_the_version() -> None:
    assert _run("--version").stdout == f"ferrio {ferrio.__version__}\n"


def test_bench_help_says_how_long_quick_takes() -> None:
    out = _run("bench", "--help").stdout
    quick = re.search(r"--quick\s+(.*?)\n  --", out, re.S)
    assert quick, out
    assert re.search(r"about \d+ (seconds|minutes?)", " ".join(quick.group(1).split())), quick.group(1)


def test_bench_prints_each_workload_as_soon_as_it_is_measured(smoke_text: list[str]) -> None:
    # stdout and stderr share one pipe: a block printed before the next workload's progress line
    # proves it was printed (and flushed) when its workload finished, not at the end of the run.
    assert smoke_text[0].startswith(f"ferrio {ferrio.__version__} on Python ")
    kinds = ["p" if PROGRESS.match(line) else "b" if line.endswith("  [asyncio]") else "" for line in smoke_text]
    sequence = "".join(k for k in kinds if k)
    assert sequence.count("p") == 17, smoke_text
    assert sequence.startswith("p")
    assert "pp" not in sequence, smoke_text  # no workload finished without printing
    assert sequence.endswith("b")


def test_ratios_are_worded_from_ferrios_side_in_both_directions() -> None:
    def r(contender: str, value: float, unit: str, higher: bool) -> Result:
        return Result("w", "asyncio", contender, value, unit, higher)

    # Higher is better (a rate): ferrio's 210/s against 100/s is faster; 100/s against 140/s slower.
    assert compare(r("ferrio", 210, "calls/s", True), r("peer", 100, "calls/s", True)) == "ferrio 2.1x faster"
    assert compare(r("ferrio", 100, "calls/s", True), r("peer", 140, "calls/s", True)) == "ferrio 1.4x slower"
    # Lower is better (a latency): 10 us against 21 us is faster; 14 us against 10 us slower.
    assert compare(r("ferrio", 10, "us", False), r("peer", 21, "us", False)) == "ferrio 2.1x faster"
    assert compare(r("ferrio", 14, "us", False), r("peer", 10, "us", False)) == "ferrio 1.4x slower"
    assert compare(r("ferrio", 10, "us", False), r("peer", 10.2, "us", False)) == "ferrio about as fast"
    assert compare(r("ferrio", 1, "us", False), r("peer", 1234, "us", False)) == "ferrio 1,234x faster"
    # Counts compare by difference, so a peer's zero still reads.
    assert compare(r("ferrio", 1900, "calls", True), r("ppe", 0, "calls", True)) == "ferrio 1,900 more"
    assert compare(r("ferrio", 0, "fds", False), r("peer", 2, "fds", False)) == "ferrio 2 fewer"


def test_ratios_in_a_real_report_agree_with_the_figures(smoke_text: list[str]) -> None:
    lower_is_better = {"us", "ns", "ms", "x ideal"}
    checked = 0
    for title, rows in _blocks(smoke_text):
        ref = next((row for row in rows if row["label"].startswith("ferrio")), rows[0])
        for row in rows:
            if row is ref:
                assert row["ratio"] is None, title
                continue
            if row["ratio"] is None:  # a zero figure has no ratio
                continue
            assert RATIO.match(row["ratio"]), row.string
            ferrio_value, value = (float(x.replace(",", "")) for x in (ref["value"], row["value"]))
            if row["unit"] in lower_is_better | {"awaits/s", "calls/s", "items/s", "files/s", "MiB/s"}:
                better = value > ferrio_value if row["unit"] in lower_is_better else value < ferrio_value
                if "about as fast" not in row["ratio"]:
                    assert row["ratio"].endswith("faster" if better else "slower"), (title, row.string)
                    checked += 1
    assert checked > 20


def test_counts_print_as_integers() -> None:
    assert figure(Result("w", "asyncio", "ferrio", 1900.0, "calls", True)) == "1,900"
    assert figure(Result("w", "asyncio", "ferrio", 3.0, "fds", False)) == "3"
    assert figure(Result("w", "asyncio", "ferrio", 1234.56, "calls/s", True)) == "1,234.6"


def test_counts_in_a_real_report_are_integers(smoke_text: list[str]) -> None:
    counts = [row for _, rows in _blocks(smoke_text) for row in rows if row["unit"] in ("calls", "fds", "threads")]
    assert len(counts) >= 4, smoke_text  # the crash workload's successes; the fds and threads left
    assert all(re.fullmatch(r"[\d,]+", row["value"]) for row in counts), [row.string for row in counts]


def test_columns_stay_aligned_for_long_labels() -> None:
    long = "a contender with a label far longer than the column"
    lines = block(
        [
            Result("w", "uvloop", "ferrio.Queue", 5_900_000.0, "items/s", True),
            Result("w", "uvloop", long, 22_000.0, "items/s", True),
            Result("w", "uvloop", "x", 0.5, "items/s", True),
        ]
    )
    assert lines[0] == "w  [uvloop]"
    ends = {line.index(" items/s") for line in lines[1:]}
    assert len(ends) == 1, lines
    assert lines[2].startswith(f"  {long} ")


def test_columns_are_aligned_in_a_real_report(smoke_text: list[str]) -> None:
    longest = 0
    for title, rows in _blocks(smoke_text):
        assert len({row.end("value") for row in rows}) == 1, title
        assert len({row.start("unit") for row in rows}) == 1, title
        longest = max(longest, *(len(row["label"]) for row in rows))
    assert longest > 28  # "run_in_executor(None, queue.Queue.get)" is wider than the default column


def test_bench_respects_loop() -> None:
    pytest.importorskip("uvloop")
    proc = _run("bench", "--smoke", "--json", "--loop", "uvloop", "--only", "bridges,files")
    results = json.loads(proc.stdout)["results"]
    workloads = {r["workload"] for r in results}
    # The portal and the files make their own loops: those are uvloop's too now.
    assert any("portal.call" in w for w in workloads), workloads
    assert any("files of 4 KiB" in w for w in workloads), workloads
    assert {r["loop"] for r in results} == {"uvloop"}
    assert not any("run(trivial())" in w for w in workloads)  # ferrio.run and asyncio.run are asyncio's
    assert "run() from sync code: skipped" in proc.stderr


def test_bench_rejects_an_unknown_family() -> None:
    proc = subprocess.run([*BENCH, "--only", "threads,nope"], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert (
        "expected families among threads, bridges, sync, processes, files, watchdog, sqlite, got 'threads,nope'"
        in proc.stderr
    )


def test_watchdog_rows_give_the_cost_on_vs_off_and_the_blocks_each_side_caught() -> None:
    proc = _run("bench", "--smoke", "--only", "watchdog", "--loop", "asyncio")
    blocks = dict(_blocks(proc.stdout.splitlines()))
    values = {
        title: {row["label"]: float(row["value"].replace(",", "")) for row in rows} for title, rows in blocks.items()
    }
    costs = [t for t in values if t.endswith("watchdog on vs off  [asyncio]")]
    assert len(costs) == 2, list(values)  # to_thread throughput and the sleep(0) ping-pong
    for title in costs:
        rows = values[title]
        on = rows["ferrio.watchdog on"]
        assert on > 0, title
        others = [label for label in rows if label.startswith("watchdog off")]
        assert "watchdog off" in others, title
        for label in others:
            assert rows[label] > 0, title
            # One round: the ratio is the figures' own, to two decimals.
            (ratio,) = (v for k, v in rows.items() if k.startswith(f"on / {label.removeprefix('watchdog ')}, median"))
            assert ratio == pytest.approx(on / rows[label], abs=0.006), (title, label)
    (beat,) = (v for t, v in values.items() if t.startswith("the heartbeat's beat"))
    assert beat["ferrio LoopWatch.beat()"] > 0
    caught = {t: v for t, v in values.items() if "caught at threshold 100 ms" in t}
    functions: set[str] = set()
    for title in caught:
        name = re.search(r"ms in (\w+)\(\)", title)
        assert name, title
        functions.add(name[1])
    assert functions == {"read_config", "checksum", "match_pattern", "flush_cache"}, list(values)
    for title, counts in caught.items():
        (fn,) = (f for f in functions if f"ms in {f}()" in title)
        # One block of each kind, well past the threshold: both sides see it.
        caught_by_ferrio = counts[f"ferrio.watchdog, {fn}() in the stack"]
        assert caught_by_ferrio == 1, (title, counts)
        assert counts["asyncio debug mode, slow-callback warnings"] == 1, (title, counts)
        assert counts[f"... of which name {fn}()"] <= 1, (title, counts)


def test_sqlite_rows_compare_every_installed_contender_on_a_real_file() -> None:
    proc = _run("bench", "--smoke", "--json", "--only", "sqlite", "--loop", "asyncio")
    report = json.loads(proc.stdout)["results"]
    by_workload: dict[str, dict[str, float]] = {}
    for r in report:
        by_workload.setdefault(r["workload"], {})[r["contender"]] = r["value"]
    assert list(by_workload) == [  # the --smoke sizes
        "128 indexed point selects from 64 tasks, one connection",
        "128 indexed point selects in a row, one task",
        "200 inserts awaited one by one, one transaction",
        "executemany of 200 rows",
        "fetchall of 100 rows",
        "async for over 100 rows",
    ], list(by_workload)
    expected = {"ferrio.sqlite", "sqlite3 on the loop (blocks it)"}
    if importlib.util.find_spec("aiosqlite") is not None:
        expected.add("aiosqlite")
    if importlib.util.find_spec("asgiref") is not None:
        expected.add("asgiref thread_sensitive")
    for workload, figures in by_workload.items():
        assert set(figures) == expected, workload
        assert all(v > 0 and math.isfinite(v) for v in figures.values()), (workload, figures)
