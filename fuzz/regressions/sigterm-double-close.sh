#!/bin/sh
# fuzz/regressions/sigterm-double-close.sh - reproducer, with the real server,
# of a shutdown crash fuzz_request found (libraft 0.15 reports its I/O
# closed twice; node.c freed it in the first report; fixed in 4383fb5):
# start a one-node cluster, write one key, SIGTERM it, and count the runs
# that do not exit 0 (README: "SIGINT or SIGTERM stops the node cleanly
# (exit 0)").  It is a race, so it loops; before the fix a few runs in 30
# crashed.
#
#   sh fuzz/regressions/sigterm-double-close.sh [RAFTKV_BINARY] [RUNS]
#
# Not part of regress.sh: it needs a built ./raftkv and curl, and takes a
# few seconds per run.  Exits 1 if any run crashed.
set -u
bin=${1:-./raftkv}
runs=${2:-30}
[ -x "$bin" ] || { echo "no executable $bin" >&2; exit 2; }
command -v curl >/dev/null || { echo "needs curl" >&2; exit 2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

base=/dev/shm
[ -w "$base" ] || base=${TMPDIR:-/tmp}
dir=$(mktemp -d "$base/raftkv-sigterm.XXXXXX") || exit 2
pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM

bad=0
i=0
while [ "$i" -lt "$runs" ]; do
    i=$((i + 1))
    rp=$(free_port)
    hp=$(free_port)
    rm -rf "$dir/data"
    "$bin" --node-id n1 --raft-port "$rp" --http-port "$hp" \
        --data-dir "$dir/data" --log-level error 2>"$dir/err" &
    pid=$!
    t=0
    until curl -s -o /dev/null "http://127.0.0.1:$hp/health"; do
        t=$((t + 1))
        [ "$t" -gt 100 ] && break
        sleep 0.05
    done
    curl -s -o /dev/null -X PUT --data-binary v "http://127.0.0.1:$hp/v1/kv/k"
    kill -TERM "$pid"
    wait "$pid"
    rc=$?
    pid=
    if [ "$rc" -ne 0 ]; then
        bad=$((bad + 1))
        echo "run $i: exit status $rc"
        tail -n 3 "$dir/err" | sed 's/^/    /'
    fi
done
echo "$bad of $runs runs did not stop cleanly"
[ "$bad" -eq 0 ]
