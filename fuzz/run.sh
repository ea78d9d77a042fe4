#!/bin/sh
# fuzz/run.sh - a bounded fuzzing run: build the targets, then fuzz each for
# SECONDS of wall-clock time.  New crashers (crash-*, leak-*, timeout-*,
# oom-*) are written to fuzz/regressions/TARGET/, minimized when possible,
# and make the script exit non-zero; commit them, so that regress.sh keeps
# replaying them.
#
#   sh fuzz/run.sh SECONDS [TARGET...]     (default targets: command request client)
#
# Environment:
#   FUZZ_WORK=DIR     where the growing corpus lives between runs
#                     (default fuzz/work/, ignored by git); the committed
#                     seeds in fuzz/corpus/ are only read
#   FUZZ_JOBS=N       fuzz with N child processes per target (libFuzzer's
#                     -fork=N; default 1: one process, no fork)
#   FUZZ_MINIMIZE=S   seconds to spend minimizing each new crasher (60; 0: no)
#   FUZZ_ARGS=...     more libFuzzer flags
#   RAFTKV_FUZZ_TOLERATE=name,...   step over findings already reported
#                     (see fuzz/README.md); never set it in CI
#
# Memory stays bounded (-rss_limit_mb, -max_len, stores emptied by the
# harnesses), every process started here is stopped on exit or signal, and
# the scratch directory under /dev/shm is removed.
set -u

here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ] || ! [ "$1" -gt 0 ] 2>/dev/null; then
    echo "usage: sh fuzz/run.sh SECONDS [TARGET...]" >&2
    exit 2
fi
secs=$1
shift
targets=${*:-command request client}
work=${FUZZ_WORK:-$here/work}
jobs=${FUZZ_JOBS:-1}
minimize=${FUZZ_MINIMIZE:-60}

make -C "$here" --no-print-directory build || exit 2

base=/dev/shm
[ -w "$base" ] || base=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$base/raftkv-fuzz-run.XXXXXX") || exit 2
child=
cleanup() {
    [ -n "$child" ] && kill "$child" 2>/dev/null && wait "$child" 2>/dev/null
    rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export RAFTKV_FUZZ_TMPDIR="$scratch"
# UBSan reports without a stack trace by default.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

run() {
    "$@" &
    child=$!
    wait "$child"
    rc=$?
    child=
    return $rc
}

# Per target: longest input, extra flags.  An entry is a few KiB at most;
# a request needs room for headers plus a body up to the harness's
# --max-body-size (4096); a client input holds one or two responses.
flags_command="-max_len=4096 -use_value_profile=1"
flags_request="-max_len=8192 -dict=$here/request.dict"
flags_client="-max_len=16384 -dict=$here/client.dict"

status=0
for t in $targets; do
    bin="$here/build/fuzz_$t"
    regr="$here/regressions/$t"
    mkdir -p "$work/$t" "$regr"
    eval "extra=\${flags_$t:-}"
    before=$(ls "$regr" | wc -l)
    echo "== fuzz_$t for $secs s (corpus $work/$t)"
    jobflags=
    [ "$jobs" -gt 1 ] && jobflags="-fork=$jobs"
    # shellcheck disable=SC2086
    run "$bin" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$regr/" $extra $jobflags \
        ${FUZZ_ARGS:-} "$work/$t" "$here/corpus/$t" \
        >"$scratch/$t.log" 2>&1
    rc=$?
    grep -E '^(#[0-9]+ +DONE|stat::|Done )' "$scratch/$t.log" | sed 's/^/   /'
    if [ "$rc" -ne 0 ]; then
        status=1
        echo "   FAILED (exit $rc):"
        grep -m3 -E '==FUZZ FINDING==|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' \
            "$scratch/$t.log" | sed 's/^/      /'
    fi
    # New artifacts: keep the fuzzer's log beside the work corpus, and
    # minimize them in place.
    for a in $(ls -t "$regr" | head -n $(( $(ls "$regr" | wc -l) - before ))); do
        f="$regr/$a"
        mkdir -p "$work/logs"
        cp "$scratch/$t.log" "$work/logs/$a.log"
        echo "   new: ${f#"$here"/} (log: $work/logs/$a.log)"
        case "$a" in crash-* | leak-*) ;; *) continue ;; esac
        [ "$minimize" -gt 0 ] || continue
        if run "$bin" -minimize_crash=1 -max_total_time="$minimize" \
            -exact_artifact_path="$scratch/min" "$f" \
            >"$scratch/min.log" 2>&1 && [ -s "$scratch/min" ]; then
            mv "$scratch/min" "$f"
            echo "     minimized to $(wc -c <"$f") bytes"
        elif grep -q 'did not crash' "$scratch/min.log"; then
            # fuzz_request's server keeps state between inputs: this one
            # needed what earlier inputs left.  Write a standalone
            # reproducer from the log before committing it.
            echo "     does not fail alone: it needs state left by earlier" \
                 "inputs (see the log)"
        fi
    done
done
exit $status
