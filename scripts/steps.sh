# Sourced by scripts/test.sh and scripts/lint.sh: `step NAME COMMAND...` runs COMMAND and, if it
# fails, records NAME in the array `failed`, so a script runs every step and reports them all.
failed=()
step() {
    local name=$1
    shift
    echo "== $name"
    if ! "$@"; then
        echo "== FAILED: $name"
        failed+=("$name")
    fi
}
