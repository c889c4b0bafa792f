"""The text report: one block per workload, its contenders' figures aligned, and beside each
peer a ratio worded from ferrio's side ("ferrio 2.1x faster", "ferrio 1.4x slower")."""

from __future__ import annotations

from collections.abc import Iterable

from ._harness import Result

#: Units whose figures are counts of things: printed as integers, compared by difference.
COUNT_UNITS = frozenset({"blocks", "calls", "fds", "threads"})
#: Units that are not speeds (rates or times): their ratios read "better"/"worse".
OTHER_UNITS = frozenset({"MB"})
#: Units of a ratio between two of a block's figures (the watchdog on / off): printed to two
#: decimals, since the differences that matter are a few percent, and compared with nothing.
RATIO_UNITS = frozenset({"x"})
#: The contender column is at least this wide, so most blocks line up with each other.
MIN_LABEL_WIDTH = 28


def _times(x: float) -> str:
    """A ratio as a reader wants it: 2 significant figures below 10, whole numbers above."""
    if x >= 99.5:
        return f"{x:,.0f}x"
    if x >= 9.95:
        return f"{x:.0f}x"
    return f"{x:.1f}x"


def compare(ref: Result, other: Result) -> str:
    """How ferrio (``ref``) does against ``other``, in words that need no thought about which
    way the unit goes: "ferrio 2.1x faster", "ferrio 1.4x slower", "ferrio 1,899 more"."""
    if other.unit in COUNT_UNITS:
        diff = round(ref.value) - round(other.value)
        if diff == 0:
            return "ferrio as many"
        return f"ferrio {abs(diff):,} {'more' if diff > 0 else 'fewer'}"
    if not ref.value or not other.value:
        return ""
    # x > 1: ferrio is better by that factor, whichever way the unit goes.
    x = ref.value / other.value if ref.higher_is_better else other.value / ref.value
    better, worse = ("better", "worse") if other.unit in OTHER_UNITS else ("faster", "slower")
    word, factor = (better, x) if x >= 1 else (worse, 1 / x)
    if _times(factor) == "1.0x":
        return f"ferrio about as {'good' if better == 'better' else 'fast'}"
    return f"ferrio {_times(factor)} {word}"


def figure(r: Result) -> str:
    """The value as printed: counts as integers, ratios to two decimals, measurements to one."""
    if r.unit in COUNT_UNITS:
        return f"{round(r.value):,}"
    if r.unit in RATIO_UNITS:
        return f"{r.value:,.2f}"
    return f"{r.value:,.1f}"


def block(rs: list[Result]) -> list[str]:
    """The lines of one workload's block: a title, then one aligned line per contender, and beside
    each figure in the unit of ferrio's, how ferrio compares."""
    ref = next((r for r in rs if r.contender.startswith("ferrio")), rs[0])
    label_w = max(MIN_LABEL_WIDTH, *(len(r.contender) for r in rs))
    value_w = max(14, *(len(figure(r)) for r in rs))
    unit_w = max(len(r.unit) for r in rs)
    lines = [f"{rs[0].workload}  [{rs[0].loop}]"]
    for r in rs:
        ratio = compare(ref, r) if r is not ref and r.unit == ref.unit else ""
        line = f"  {r.contender:<{label_w}} {figure(r):>{value_w}} {r.unit:<{unit_w}}"
        lines.append(f"{line}   {ratio}".rstrip() if ratio else line.rstrip())
    return lines


def report(results: Iterable[Result]) -> list[str]:
    """Every workload's block, in the order the workloads ran, a blank line before each."""
    by_workload: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by_workload.setdefault((r.workload, r.loop), []).append(r)
    lines: list[str] = []
    for rs in by_workload.values():
        lines += ["", *block(rs)]
    return lines
