#!/bin/sh
# fuzz/coverage.sh - how much of src/ the fuzz corpora reach: builds the
# targets with llvm source coverage, replays corpus/ and work/ (and
# regressions/, with their findings stepped over), and prints llvm-cov's
# per-file report for src/.
#
#   sh fuzz/coverage.sh [TARGET...]      (default: command request)
set -u
here=$(cd "$(dirname "$0")" && pwd)
targets=${*:-command request}
make -C "$here" --no-print-directory coverage || exit 2
base=/dev/shm
[ -w "$base" ] || base=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$base/raftkv-fuzz-cov.XXXXXX") || exit 2
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM
export RAFTKV_FUZZ_TMPDIR="$scratch"
# Coverage, not findings: replay everything to the end.
export RAFTKV_FUZZ_TOLERATE=all
for t in $targets; do
    bin="$here/build/cov/fuzz_$t"
    dirs=
    for d in "$here/work/$t" "$here/corpus/$t"; do
        [ -d "$d" ] && dirs="$dirs $d"
    done
    # shellcheck disable=SC2086
    LLVM_PROFILE_FILE="$scratch/$t.profraw" "$bin" -runs=0 $dirs \
        >"$scratch/$t.log" 2>&1 || { echo "fuzz_$t: replay failed"; \
        tail -5 "$scratch/$t.log"; continue; }
    llvm-profdata merge -sparse "$scratch/$t.profraw" -o "$scratch/$t.profdata"
    echo "== fuzz_$t"
    llvm-cov report "$bin" -instr-profile="$scratch/$t.profdata" \
        $(ls "$here"/../src/*.c | grep -v '/main\.c$')
done
