"""`python -m ferrio bench` runs end to end (tiny sizes) and reports every contender."""

from __future__ import annotations

import json
import subprocess
import sys


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
