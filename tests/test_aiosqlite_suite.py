"""aiosqlite's own test suite, run against ``ferrio.sqlite`` (issue 14).

``ferrio.sqlite`` claims to be a drop-in for aiosqlite, so aiosqlite's tests are the judge. They are
fetched at test time, pinned by version and sha256, from the sdist on PyPI; none of their code is
in this repository. Only ``aiosqlite/tests/`` is unpacked, as the package ``aiosqlite_tests``, and
run in a subprocess whose ``import aiosqlite`` finds tests/peers/shim/aiosqlite.py, which hands
over ``ferrio.sqlite``. The same run against aiosqlite itself, where it is installed, is the
control: it shows that the harness, not ferrio, is not what fails.

The record below is the result: the tests that fail against ferrio, each with why, and the number
that pass. Any change either way fails this test, naming the test that changed, so the record
stays true.

The sdist is cached in ``.peer-cache/`` at the repository root (ignored by git). Without network
the download fails and so does this test; set ``FERRIO_OFFLINE=1`` to skip it instead.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

AIOSQLITE_VERSION = "0.22.1"
AIOSQLITE_SDIST = f"aiosqlite-{AIOSQLITE_VERSION}.tar.gz"
# The sha256 of the file PyPI serves as aiosqlite 0.22.1's sdist, as downloaded on 2026-12-03.
AIOSQLITE_SDIST_SHA256 = "043e0bd78d32888c0a9ca90fc788b38796843360c855a7262a532813133a0650"

# The tests aiosqlite_tests (its aiosqlite/tests/__init__.py) loads: SmokeTest's methods.
PEER_TESTS = 30

# Every test of aiosqlite's suite that fails or errors against ferrio.sqlite, with why. "why it
# fails" marks a test of aiosqlite's private internals, where ferrio passes every assertion before
# the line that reads them; "ferrio bug" marks a real difference, to be fixed in ferrio.sqlite.
EXPECTED_FAILURES: dict[str, str] = {
    "test_close_blocking_until_transaction_queue_empty": (
        "why it fails: after close() it reads db._tx.empty(), aiosqlite's private queue of calls for"
        " its thread; ferrio.sqlite has no such queue (calls go to a ferrio.PinnedThread, and close()"
        " waits for those queued before it), so the read is an AttributeError. The 1000 executes and"
        " the close before it pass."
    ),
}
# Every test the suite skips against ferrio.sqlite, with why, beyond INTERPRETER_SKIPS.
EXPECTED_SKIPS: dict[str, str] = {}
# What the suite skips against either module, depending on how this Python's sqlite3 was built.
INTERPRETER_SKIPS: dict[str, str] = (
    {}
    if hasattr(sqlite3.Connection, "enable_load_extension")
    else {
        "test_enable_load_extension": "why it is skipped: this Python's sqlite3 was built without extension"
        " loading, so sqlite3.Connection has no enable_load_extension (pyenv's default build, for one)"
    }
)
# The rest pass: 26 against ferrio.sqlite (29 against aiosqlite) on this repository's CI interpreter,
# pyenv's CPython 3.11, whose sqlite3 has no extension loading.
EXPECTED_PASSED = PEER_TESTS - len(EXPECTED_FAILURES) - len({**EXPECTED_SKIPS, **INTERPRETER_SKIPS})

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
CACHE = ROOT / ".peer-cache"
# The subprocess's own deadline, inside pytest's 60 s per-test timeout (which also covers the
# fetch): the suite takes about 2 s, so either means a hang. The runner prints every thread's stack
# a little before it, so a hang shows where.
SUITE_TIMEOUT = 45.0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_sdist() -> Path:
    """The verified sdist: from the cache, or downloaded with pip into it."""
    sdist = CACHE / AIOSQLITE_SDIST
    if sdist.exists() and sha256(sdist) == AIOSQLITE_SDIST_SHA256:
        return sdist
    CACHE.mkdir(exist_ok=True)
    download = CACHE / "download"
    download.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
    command += ["--no-binary", ":all:", f"aiosqlite=={AIOSQLITE_VERSION}", "-d", str(download)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        proc = None
    if proc is None or proc.returncode != 0:
        why = "timed out after 120 s" if proc is None else f"exited with {proc.returncode}:\n{proc.stderr[-2000:]}"
        reason = f"could not download aiosqlite {AIOSQLITE_VERSION}'s sdist from PyPI ({' '.join(command)}) {why}"
        if os.environ.get("FERRIO_OFFLINE") == "1":
            pytest.skip(f"FERRIO_OFFLINE=1: {reason}")
        pytest.fail(f"{reason}\nWithout network, set FERRIO_OFFLINE=1 to skip this test.", pytrace=False)
    got = sha256(download / AIOSQLITE_SDIST)
    if got != AIOSQLITE_SDIST_SHA256:
        pytest.fail(
            f"{AIOSQLITE_SDIST} from PyPI has sha256 {got}, but {AIOSQLITE_SDIST_SHA256} is recorded;"
            f" the file is left in {download} to inspect",
            pytrace=False,
        )
    (download / AIOSQLITE_SDIST).replace(sdist)
    return sdist


@pytest.fixture(scope="module")
def peer_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding aiosqlite's ``aiosqlite/tests/`` as the package ``aiosqlite_tests``."""
    root = tmp_path_factory.mktemp("aiosqlite-peer")
    prefix = f"aiosqlite-{AIOSQLITE_VERSION}/aiosqlite/tests/"
    with tarfile.open(fetch_sdist()) as tar:
        # File by file, not extractall: only the tests, and no path from the archive is trusted.
        for member in tar.getmembers():
            name = member.name[len(prefix) :]
            if not member.name.startswith(prefix) or not member.isfile() or "/" in name or not name.endswith(".py"):
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            (root / "aiosqlite_tests").mkdir(exist_ok=True)
            (root / "aiosqlite_tests" / name).write_bytes(extracted.read())
    assert (root / "aiosqlite_tests" / "__init__.py").exists(), f"no {prefix}__init__.py in {AIOSQLITE_SDIST}"
    return root


def run_suite(peer_tests: Path, tmp_path: Path, *, shim: bool, loop: str = "asyncio") -> dict[str, Any]:
    """Runs aiosqlite's tests in a subprocess on this interpreter, on ``loop``, with the shim first
    on its path or (the control) without it; returns what tests/peers/run_unittest.py recorded."""
    import ferrio

    # The ferrio this process imported, so the subprocess tests the same one.
    path = [str(PEERS / "shim"), str(Path(ferrio.__file__).parent.parent)] if shim else []
    path += [str(peer_tests), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    out = tmp_path / "outcomes.json"
    command = [
        sys.executable,
        str(PEERS / "run_unittest.py"),
        "aiosqlite_tests",
        str(out),
        str(SUITE_TIMEOUT - 5),
        loop,
    ]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=SUITE_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"aiosqlite's suite did not finish in {SUITE_TIMEOUT} s:\n{e.stderr!s}", pytrace=False)
    # Shown by pytest when the test fails: the suite's verbose output, and who `aiosqlite` was.
    sys.stderr.write(proc.stderr)
    assert out.exists(), f"the suite recorded nothing (exit status {proc.returncode}):\n{proc.stderr[-4000:]}"
    record: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return record


def check(record: dict[str, Any], failures: dict[str, str], skips: dict[str, str], expected_passed: int) -> None:
    """Asserts that exactly ``failures`` failed, exactly ``skips`` were skipped and ``expected_passed``
    passed, of the suite's ``PEER_TESTS``."""
    outcomes: dict[str, dict[str, str]] = record["outcomes"]
    failed = {name for name, o in outcomes.items() if o["outcome"] in ("failed", "error")}
    skipped = {name for name, o in outcomes.items() if o["outcome"] == "skipped"}
    passed = [name for name, o in outcomes.items() if o["outcome"] == "passed"]
    problems = [
        f"{name} now {outcomes[name]['outcome']}, but is not recorded as failing:\n{outcomes[name]['detail']}"
        for name in sorted(failed - failures.keys())
    ]
    for name in sorted(failures.keys() - failed):
        now = outcomes[name]["outcome"] if name in outcomes else "did not run"
        problems.append(f"{name} is recorded as failing ({failures[name]}), but now {now}")
    problems += [
        f"{name} was skipped ({outcomes[name]['detail']}), which is not recorded"
        for name in sorted(skipped - skips.keys())
    ]
    problems += [
        f"{name} is recorded as skipped ({skips[name]}), but was not" for name in sorted(skips.keys() - skipped)
    ]
    if record["tests_run"] != PEER_TESTS:
        problems.append(f"{record['tests_run']} tests ran, but aiosqlite {AIOSQLITE_VERSION}'s suite has {PEER_TESTS}")
    if len(passed) != expected_passed:
        problems.append(f"{len(passed)} tests passed, {expected_passed} are recorded as passing")
    assert not problems, "\n\n".join(problems)


def test_record_explains_every_failure() -> None:
    for name, why in {**EXPECTED_FAILURES, **EXPECTED_SKIPS, **INTERPRETER_SKIPS}.items():
        assert name.startswith("test_"), name
        assert why.startswith(("why it fails: ", "ferrio bug: ", "why it is skipped: ")), (name, why)


# ferrio delivers results to each kind of loop its own way; aiosqlite's own tests run on asyncio.
LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") is not None else [])


@pytest.mark.parametrize("loop", LOOPS)
def test_suite_against_ferrio_sqlite(peer_tests: Path, tmp_path: Path, loop: str) -> None:
    record = run_suite(peer_tests, tmp_path, shim=True, loop=loop)
    identity = record["identity"]
    assert identity["module"] == "ferrio.sqlite", identity
    assert identity["connect_module"].startswith("ferrio."), identity
    assert identity["aiosqlite_submodules"] == [], identity
    assert identity["loop"].startswith(f"{loop}."), identity
    check(record, EXPECTED_FAILURES, {**EXPECTED_SKIPS, **INTERPRETER_SKIPS}, EXPECTED_PASSED)


def test_suite_against_aiosqlite_itself(peer_tests: Path, tmp_path: Path) -> None:
    """The control: every test passes against the aiosqlite the suite was written for."""
    spec = importlib.util.find_spec("aiosqlite")
    if spec is None:
        pytest.skip("aiosqlite is not installed (no test dependency of ferrio), so there is no control run")
    installed = importlib.metadata.version("aiosqlite")
    if installed != AIOSQLITE_VERSION:
        pytest.skip(f"aiosqlite {installed} is installed, not {AIOSQLITE_VERSION}, whose suite this runs")
    record = run_suite(peer_tests, tmp_path, shim=False)
    identity = record["identity"]
    assert identity["connect_module"] == "aiosqlite.core", identity
    assert identity["file"] == spec.origin, identity
    check(record, {}, INTERPRETER_SKIPS, PEER_TESTS - len(INTERPRETER_SKIPS))
