#!/usr/bin/env bash
# Installs what the tests need and runs them all: the Rust core's tests (nextest, or cargo test
# where nextest is missing), the loom model of the completion protocol, then pytest on the
# default python3 (whole suite) and on every other CPython 3.10-3.13 that pyenv has (the pool,
# bridge, primitive, file, process and lifecycle suites). Exits non-zero on any failure, including "no tests
# collected".
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Rust: ferrio-core"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p ferrio-core --locked
else
    cargo test -p ferrio-core --locked
fi
echo "== Rust: loom model of the completion hand-off"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ferrio-core --test loom_completion --release --locked

echo "== Build the abi3 wheel once, for every CPython >= 3.10"
PY=${PYTHON:-python3}
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip "maturin>=1.7,<2"
rm -rf dist
.venv/bin/maturin build --release --locked --out dist
wheel=$(ls dist/ferrio-*.whl)

run_pytest() {  # run_pytest VENV [pytest args...]
    local venv=$1
    shift
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
    "$venv/bin/python" -m pip install -q "${wheel}[test]"
    echo "== pytest on $("$venv/bin/python" --version)"
    "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
}

run_pytest .venv

if command -v pyenv >/dev/null 2>&1; then
    main_version=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    for minor in 3.10 3.11 3.12 3.13; do
        [ "$minor" = "$main_version" ] && continue
        prefix=$(pyenv prefix "$(pyenv versions --bare | grep -E "^${minor//./\\.}(\.[0-9]+)?$" | tail -n 1)" 2>/dev/null || true)
        if [ -z "$prefix" ] || [ ! -x "$prefix/bin/python" ]; then
            echo "== CPython $minor: not installed under pyenv, skipped"
            continue
        fi
        "$prefix/bin/python" -m venv ".venv-$minor"
        run_pytest ".venv-$minor" -q tests/test_to_thread.py tests/test_thread_pool.py tests/test_limiter.py \
            tests/test_lifecycle.py tests/test_run.py tests/test_from_thread.py tests/test_portal.py \
            tests/test_queue.py tests/test_sync_prims.py tests/test_files.py tests/test_process.py
    done
fi
