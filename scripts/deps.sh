#!/bin/sh
# Install the Debian packages raftkv needs to build, run and test, if any is
# missing.  Safe to run again: it does nothing when everything is there.
set -eu

PKGS="build-essential clang pkg-config make git curl ca-certificates
      libraft-dev libuv1-dev libh2o-dev libssl-dev liblmdb-dev libjansson-dev
      libcurl4-openssl-dev libcmocka-dev python3 python3-pytest wrk
      iproute2 iptables util-linux faketime libfaketime libclang-rt-14-dev"
# `deps.sh compare`: also what `make bench-compare` measures raftkv against.
if [ "${1:-}" = compare ]; then
    PKGS="$PKGS etcd-server etcd-client redis-server redis-tools"
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
