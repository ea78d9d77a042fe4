#!/bin/sh
# fuzz/regress.sh - build the fuzz targets and replay, without fuzzing, their
# seed corpus (fuzz/corpus/TARGET/) and every crasher ever kept
# (fuzz/regressions/TARGET/).  Exits non-zero if any input crashes, hangs,
# leaks or trips a check, and names every such input.
#
#   sh fuzz/regress.sh [TARGET...]        (default: command request client)
#
# The seeds run in one process per target (fast when all is well; if that
# fails each is replayed alone, so that the report names every failing
# input); each kept crasher runs in a process of its own.  Scratch data goes to a private
# directory under /dev/shm that is removed on exit, crash or Ctrl-C.
set -u

here=$(cd "$(dirname "$0")" && pwd)
targets=${*:-command request client}

make -C "$here" --no-print-directory build || exit 2

base=/dev/shm
[ -w "$base" ] || base=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$base/raftkv-fuzz-regress.XXXXXX") || exit 2
child=
cleanup() {
    [ -n "$child" ] && kill "$child" 2>/dev/null
    rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export RAFTKV_FUZZ_TMPDIR="$scratch"
# UBSan reports without a stack trace by default.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

# Run the fuzzer binary in the background so that a signal to this script
# can stop it; returns its exit status.
run() {
    "$@" &
    child=$!
    wait "$child"
    rc=$?
    child=
    return $rc
}

# Replay each file of $1 (a list) in a process of its own; count failures.
replay_alone() {
    bad=0
    while IFS= read -r f; do
        if ! run "$bin" -timeout=30 -rss_limit_mb=2048 "$f" \
            >"$scratch/one.log" 2>&1; then
            bad=$((bad + 1))
            echo "   FAIL ${f#"$here"/}"
            grep -m1 -E '==FUZZ FINDING==|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' \
                "$scratch/one.log" | sed 's/^/        /'
        fi
    done <"$1"
}

inputs() {
    find "$1" -type f ! -name '.*' ! -name '*.md' ! -name '*.sh' \
        2>/dev/null | sort
}

failed=0
for t in $targets; do
    bin="$here/build/fuzz_$t"
    inputs "$here/corpus/$t" >"$scratch/$t.corpus"
    inputs "$here/regressions/$t" >"$scratch/$t.regr"
    nc=$(wc -l <"$scratch/$t.corpus")
    nr=$(wc -l <"$scratch/$t.regr")
    echo "== fuzz_$t: $nc seeds in one run, $nr kept crashers one by one"
    # Seeds: one process is fast, and what they do to each other is fair
    # game.  A failure is then narrowed down input by input.
    # shellcheck disable=SC2046
    if [ "$nc" -gt 0 ] && ! run "$bin" -timeout=30 -rss_limit_mb=2048 \
        $(cat "$scratch/$t.corpus") >"$scratch/$t.log" 2>&1; then
        echo "   seeds FAILED; replaying each alone:"
        replay_alone "$scratch/$t.corpus"
        if [ "$bad" -eq 0 ]; then
            # Only together (state carried between inputs) or at exit.
            bad=1
            echo "   no seed fails alone; end of the full run:"
            tail -n 40 "$scratch/$t.log" | sed 's/^/        /'
        fi
        failed=$((failed + bad))
    fi
    # Kept crashers: each in a fresh process, as it was minimized (in a
    # process that ran other inputs first it may pass by accident).
    replay_alone "$scratch/$t.regr"
    failed=$((failed + bad))
done

if [ "$failed" -ne 0 ]; then
    echo "fuzz regressions: $failed failing input(s)"
    exit 1
fi
echo "fuzz regressions: all passed"
