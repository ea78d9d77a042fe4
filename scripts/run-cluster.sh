#!/bin/sh
# Start a local 3-node raftkv cluster on 127.0.0.1 in the foreground.
# node1 starts empty and bootstraps itself when node2 asks to join; node2
# and node3 join through node1.  Ctrl-C stops all three.
#
# Environment: RAFTKV (binary, default ./raftkv), DATA (default ./data),
# BASE_RAFT (default 2222), BASE_HTTP (default 8222).
set -eu

RAFTKV=${RAFTKV:-./raftkv}
DATA=${DATA:-./data}
BASE_RAFT=${BASE_RAFT:-2222}
BASE_HTTP=${BASE_HTTP:-8222}
pids=""

stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping: $pids"
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
    exit 0
}
trap stop INT TERM EXIT

for i in 1 2 3; do
    raft=$((BASE_RAFT + i - 1))
    http=$((BASE_HTTP + i - 1))
    join=""
    [ "$i" -gt 1 ] && join="--join 127.0.0.1:$BASE_HTTP"
    # shellcheck disable=SC2086
    "$RAFTKV" --node-id "node$i" --raft-port "$raft" --http-port "$http" \
        --data-dir "$DATA/node$i" $join &
    pids="$pids $!"
done

cat <<MSG

raftkv: 3 nodes starting (data in $DATA/node1..3). Try:

  curl -X POST 'localhost:$BASE_HTTP/set' -d '{"key": "x", "value": "23"}'
  curl 'localhost:$((BASE_HTTP + 1))/get?key=x'
  curl 'localhost:$BASE_HTTP/v1/status'

Ctrl-C stops all three.

MSG
wait
