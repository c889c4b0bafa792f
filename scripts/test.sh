#!/usr/bin/env bash
# Installs what the tests need and runs them all: the Rust core's tests (nextest, or cargo test
# where nextest is missing), the loom model of the completion protocol, then pytest on the
# default python3 (whole suite) and on every other CPython 3.10-3.13 that pyenv has (the pool,
# bridge, primitive, file, process, lifecycle, adversarial, watchdog, pinned and sqlite suites).
#
# Every step runs even when an earlier one failed, so one run reports every failure (a failing
# 3.11 suite must not hide the state of 3.12 and 3.13); the script then exits non-zero if any
# step failed, including pytest's "no tests collected". Only a failed wheel build stops it early:
# nothing after it can run.
set -uo pipefail
cd "$(dirname "$0")/.."

. scripts/steps.sh  # step NAME COMMAND...: runs COMMAND, records NAME in failed if it fails

if cargo nextest --version >/dev/null 2>&1; then
    step "Rust: ferrio-core" cargo nextest run -p ferrio-core --locked
else
    step "Rust: ferrio-core" cargo test -p ferrio-core --locked
fi
step "Rust: loom model of the completion hand-off" \
    env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ferrio-core --test loom_completion --release --locked

build_wheel() {
    local py=${PYTHON:-python3}
    "$py" -m venv .venv &&
        .venv/bin/python -m pip install -q --upgrade pip "maturin>=1.7,<2" &&
        rm -rf dist &&
        .venv/bin/maturin build --release --locked --out dist
}
echo "== Build the abi3 wheel once, for every CPython >= 3.10"
if ! build_wheel; then
    echo "== FAILED: the wheel did not build; no Python test can run"
    exit 1
fi
wheel=$(ls dist/ferrio-*.whl)

run_pytest() {  # run_pytest VENV [pytest args...]
    local venv=$1
    shift
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel" &&
        "$venv/bin/python" -m pip install -q "${wheel}[test]" &&
        echo "== pytest on $("$venv/bin/python" --version)" &&
        "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
}

step "pytest on $(.venv/bin/python --version)" run_pytest .venv

if command -v pyenv >/dev/null 2>&1; then
    main_version=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    for minor in 3.10 3.11 3.12 3.13; do
        [ "$minor" = "$main_version" ] && continue
        prefix=$(pyenv prefix "$(pyenv versions --bare | grep -E "^${minor//./\\.}(\.[0-9]+)?$" | tail -n 1)" 2>/dev/null || true)
        if [ -z "$prefix" ] || [ ! -x "$prefix/bin/python" ]; then
            echo "== CPython $minor: not installed under pyenv, skipped"
            continue
        fi
        if ! "$prefix/bin/python" -m venv ".venv-$minor"; then
            failed+=("venv for CPython $minor")
            continue
        fi
        step "pytest on CPython $minor" run_pytest ".venv-$minor" -q tests/test_to_thread.py tests/test_thread_pool.py \
            tests/test_limiter.py tests/test_lifecycle.py tests/test_run.py tests/test_from_thread.py tests/test_portal.py \
            tests/test_queue.py tests/test_sync_prims.py tests/test_files.py tests/test_process.py tests/test_errors.py tests/adversarial \
            tests/test_watchdog.py tests/test_watchdog_seeds.py tests/test_watch_cli.py tests/test_pytest_plugin.py \
            tests/test_pinned.py tests/test_sqlite.py tests/test_aiosqlite_suite.py
    done
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "== ${#failed[@]} step(s) failed:"
    printf '   - %s\n' "${failed[@]}"
    exit 1
fi
echo "== every step passed"
