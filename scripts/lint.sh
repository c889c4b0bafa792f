#!/usr/bin/env bash
# Installs the pinned lint tools (the `lint` extra of pyproject.toml) and runs every check:
# rustfmt, clippy (warnings are errors), ruff check and format, mypy and pyright in strict mode
# on the whole package and on the user-style programs of tests/typing, and stubtest of the
# compiled module's stub.
#
# The tools live in their own venv, .venv-lint, or in $VENV when it is given (`make lint
# VENV=.venv` after `make build-dev`). ferrio is built into it with `maturin develop`, because
# mypy, pyright and stubtest import the compiled module. As in scripts/test.sh, every check runs
# even when an earlier one failed, so one run reports every failure, and the script exits non-zero
# if any failed. Only a failed set-up (venv, install, build) stops it early: no Python check can run.
set -uo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv-lint}

. scripts/steps.sh  # step NAME COMMAND...: runs COMMAND, records NAME in failed if it fails

setup() {
    { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } &&
        "$venv/bin/python" -m pip install -q "maturin>=1.7,<2" &&
        VIRTUAL_ENV=$PWD/$venv "$venv/bin/maturin" develop -q --locked --extras lint
}
echo "== Install the lint tools (the lint extra) into $venv and build ferrio there"
if ! setup; then
    echo "== FAILED: the lint tools or ferrio did not install; no check can run"
    exit 1
fi
py=$venv/bin/python

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy (warnings are errors)" cargo clippy --all-targets --locked -- -D warnings
step "ruff check" "$py" -m ruff check python tests examples
step "ruff format --check" "$py" -m ruff format --check python tests examples
step "mypy --strict (python/ferrio, tests/typing)" "$py" -m mypy
step "pyright --strict (python/ferrio, tests/typing)" "$py" -m pyright --pythonpath "$py"
step "stubtest (_ferrio.pyi against the compiled module)" \
    "$py" -m mypy.stubtest ferrio._ferrio --allowlist .config/stubtest-allowlist.txt

if [ ${#failed[@]} -gt 0 ]; then
    echo "== ${#failed[@]} lint step(s) failed:"
    printf '   - %s\n' "${failed[@]}"
    exit 1
fi
echo "== every lint step passed"
