"""Fault-injection tests against real raftkv clusters in network namespaces.

Short mode (default, `make test`): one run per fault kind, each a seeded
schedule of about FAULTS_CASE_SECONDS of that fault under load, then every
check (see runner.py).  Long mode (FAULTS_MODE=long, `make
test-faults-long`): rounds of FAULTS_ROUND seconds mixing every fault
kind, seed base+i for round i, until FAULTS_DURATION is spent.

A failure message starts with the seed, a replay command, the fault
schedule and the problems found, including the smallest failing part of
the history; the run's node logs are kept (path in the message).
"""

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import conftest
import client
import db
import nemesis
import runner
from hosts import Net


def _say(msg):
    sys.stdout.write("%s %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


def _config(name, kinds, seed, duration, run_dir, raftkv_bin, shim, replay, **kw):
    return runner.Config(name, kinds, seed, duration, run_dir, raftkv_bin, shim, replay,
                         sanitized=os.environ.get("RAFTKV_SANITIZED") == "1", say=_say, **kw)


def test_hosts_partition_blocks_traffic(env_ok):
    """The harness itself: nodes reach each other and the test process; a
    cut blocks exactly the node-to-node traffic; healing restores it."""
    net = Net(3, log=_say).up()
    servers = []
    try:
        for i in range(3):
            servers.append(subprocess.Popen(
                net.ns_argv(i, [sys.executable, "-c",
                                "import socket,sys\n"
                                "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
                                "socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 9000)); "
                                "s.listen(16)\n"
                                "while True:\n  c,_=s.accept(); c.close()\n"]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def reach(frm, to):
            """Can node `frm` (None: the test process) connect to node `to`?"""
            if frm is None:
                try:
                    socket.create_connection((net.ips[to], 9000), timeout=0.5).close()
                    return True
                except OSError:
                    return False
            p = subprocess.run(net.ns_argv(frm, [
                sys.executable, "-c",
                "import socket,sys\ntry:\n socket.create_connection(('%s', 9000), timeout=0.5)"
                "\nexcept OSError: sys.exit(1)" % net.ips[to]]))
            return p.returncode == 0

        db.wait_for(lambda: all(reach(None, i) for i in range(3)), 10, "listeners")
        assert reach(0, 1) and reach(1, 2) and reach(2, 0)
        net.isolate(0)
        assert not reach(0, 1) and not reach(1, 0) and not reach(2, 0)
        assert reach(1, 2), "the majority side must still talk"
        assert reach(None, 0), "the test process must still reach an isolated node"
        net.heal()
        assert reach(0, 1) and reach(1, 0)
    finally:
        for s in servers:
            s.kill()
            s.wait(5)
        net.down()
    assert not any(ns in subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                                        text=True).stdout for ns in net.namespaces)


SHORT_KINDS = conftest.KINDS or nemesis.ALL


@pytest.mark.parametrize("kind", SHORT_KINDS)
def test_fault(kind, raftkv_bin, shim, run_dir):
    assert kind != "clock" or os.path.exists(db.FAKETIME_LIB), \
        "libfaketime is not installed (Debian: libfaketime)"
    seed = conftest.BASE_SEED
    replay = ("FAULTS_SEED=%d FAULTS_CASE_SECONDS=%g /usr/bin/python3 -m pytest "
              "tests/faults/test_faults.py -k 'test_fault and %s'"
              % (seed, conftest.CASE_SECONDS, kind))
    cfg = _config(kind, [kind], seed, conftest.CASE_SECONDS, run_dir, raftkv_bin, shim,
                  replay, on=(2.5, 4.0), off=(1.0, 2.5), recovery=1.0)
    failure = None
    try:
        runner.run(cfg)
    except runner.RunFailed as e:
        failure = str(e)
    if failure:
        pytest.fail(failure, pytrace=False)


def _rounds():
    if conftest.MODE != "long":
        return [0]
    return list(range(max(1, int(conftest.DURATION // (conftest.ROUND + 25)))))


@pytest.mark.parametrize("round_no", _rounds())
def test_long_mixed(round_no, raftkv_bin, shim, run_dir):
    seed = conftest.BASE_SEED + round_no
    kinds = conftest.KINDS or nemesis.ALL
    if not os.path.exists(db.FAKETIME_LIB):
        kinds = [k for k in kinds if k != "clock"]   # libfaketime missing
    replay = ("FAULTS_MODE=long FAULTS_SEED=%d FAULTS_ROUND=%g FAULTS_DURATION=%g%s "
              "/usr/bin/python3 -m pytest tests/faults/test_faults.py -k test_long_mixed"
              % (seed, conftest.ROUND, conftest.ROUND + 25,
                 " FAULTS_KINDS=" + ",".join(conftest.KINDS) if conftest.KINDS else ""))
    cfg = _config("mixed-%d" % round_no, kinds, seed, conftest.ROUND, run_dir, raftkv_bin,
                  shim, replay, clock="clock" in kinds, on=(2.0, 8.0), off=(1.0, 4.0))
    failure = None
    try:
        runner.run(cfg)
    except runner.RunFailed as e:
        failure = str(e)
    if failure:
        pytest.fail(failure, pytrace=False)


def _counter(node, name):
    a = client.request(node.http_addr, "GET", "/metrics", timeout=3.0)
    assert a.status == 200, a
    for line in a.body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError("no %s in %s's /metrics" % (name, node.name))


@contextlib.contextmanager
def _disk_fault_cluster(run_dir, raftkv_bin, shim, size=3, start=True, **opts):
    """A cluster of `size` nodes whose disks the test faults, started (n1
    first, the others joining it) unless `start` is false.  On the way out
    every fault is switched off and every node stopped by its PID, and no
    node may have died on its own."""
    net = Net(size, random.Random(), log=_say)
    cluster = None
    problems = []
    try:
        net.up()
        cluster = db.Cluster(net, run_dir, raftkv_bin, shim,
                             sanitized=os.environ.get("RAFTKV_SANITIZED") == "1", **opts)
        if start:
            cluster.start()
        yield cluster
    finally:
        if cluster is not None:
            for n in cluster.nodes:
                n.set_disk_fault("off")
            problems += cluster.close()
            problems += cluster.unexpected_deaths()
        net.down()
    assert not problems, problems


def _wait_takeover(others, term, timeout=20):
    """The node of `others` that leads in a term after `term`, once one
    does (a follower taking over from a hung leader)."""
    def new_leader():
        for n in others:
            s = n.status()
            if s["role"] == "leader" and s["term"] > term:
                return n
        return None
    return db.wait_for(new_leader, timeout, "a follower taking over from the hung leader")


def _every_node_holds(cluster, commit, values, timeout):
    """Every node applies `commit`, then reads each of `values` locally."""
    db.wait_for(lambda: all(n.status()["applied_index"] >= commit for n in cluster.nodes),
                timeout, "every node applying index %d" % commit)
    for n in cluster.nodes:
        s = client.Session(n.http_addr)
        try:
            missing = [k for k, v in values.items() if cluster.api.local_value(s, k) != v]
        finally:
            s.close()
        assert not missing, "%s lacks %s" % (n.name, missing)


def test_writes_wait_out_a_leader_log_stall(raftkv_bin, shim, run_dir):
    """The leader's Raft log writes stop completing: its disk hangs, the
    process does not.  libraft 0.15 commits nothing past what the leader has
    itself stored, so writes wait; the leader holds new commands back while
    its write is in flight (src/propose.h), but only for PROPOSE_HOLD_MS,
    so they still reach the followers' logs.  When the disk answers again,
    every waiting write is acknowledged and every node has it.  The stall
    is shorter than the election timeout, so the leader keeps its place (the
    next test is the one where it does not)."""
    with _disk_fault_cluster(run_dir, raftkv_bin, shim, snapshot_threshold=4096,
                             election_timeout=10000, heartbeat_timeout=500) as cluster:
        api = cluster.api
        leader = cluster.wait_leader()
        followers = [n for n in cluster.nodes if n is not leader]
        for i in range(5):
            a = api.write(leader.http_addr, "before-%d" % i, "v", timeout=5.0)
            assert a.outcome == client.OK, a
        expired0 = _counter(leader, "raftkv_entry_holds_expired_total")

        leader.set_disk_fault("aio=HANG")
        answers = {}

        def write(key):
            answers[key] = api.write(leader.http_addr, key, "v-" + key, timeout=30.0)

        first = threading.Thread(target=write, args=("stalled-0",), daemon=True)
        first.start()   # its entry's write is the one that hangs
        db.wait_for(lambda: "while aio=HANG" in leader.log_text(since_start=True), 10,
                    "the shim holding the leader's log write")
        rest = [threading.Thread(target=write, args=("stalled-%d" % i,), daemon=True)
                for i in range(1, 9)]
        for t in rest:
            t.start()
        db.wait_for(lambda: _counter(leader, "raftkv_entry_holds_expired_total") > expired0,
                    10, "a held batch proposed once the hold ran out")
        last = leader.status()["last_log_index"]
        db.wait_for(lambda: all(f.status()["last_log_index"] >= last for f in followers), 10,
                    "the followers receiving the entries the stalled leader proposed")

        leader.set_disk_fault("off")
        for t in [first] + rest:
            t.join(40)
        bad = {k: a for k, a in answers.items() if a.outcome != client.OK}
        assert len(answers) == 9 and not bad, (sorted(answers), bad)
        _every_node_holds(cluster, leader.status()["commit_index"],
                          {k: "v-" + k for k in answers}, 15)


def test_a_leader_whose_log_write_hangs_hands_leadership_on(raftkv_bin, shim, run_dir):
    """The leader's disk hangs and stays hung.  Once none of its log writes
    has completed for an election timeout, it hands leadership to a follower
    (src/logwatch.h), which holds the entries the old leader could not store.
    The writes that were waiting on the old leader get an answer; with its
    disk still hung, writes through every node succeed; once it answers, the
    old leader catches up and every node holds every acknowledged write."""
    with _disk_fault_cluster(run_dir, raftkv_bin, shim, snapshot_threshold=4096) as cluster:
        api = cluster.api
        old = cluster.wait_leader()
        others = [n for n in cluster.nodes if n is not old]
        acked = {}
        for i in range(5):
            k = "before-%d" % i
            a = api.write(old.http_addr, k, "v-" + k, timeout=5.0)
            assert a.outcome == client.OK, a
            acked[k] = "v-" + k
        term = old.status()["term"]
        assert _counter(old, "raftkv_log_stall_transfers_total") == 0

        old.set_disk_fault("aio=HANG")
        answers = {}

        def write(key):
            answers[key] = api.write(old.http_addr, key, "v-" + key, timeout=30.0)

        stalled = [threading.Thread(target=write, args=("stalled-%d" % i,), daemon=True)
                   for i in range(4)]
        stalled[0].start()
        db.wait_for(lambda: "while aio=HANG" in old.log_text(since_start=True), 10,
                    "the shim holding the leader's log write")
        for t in stalled[1:]:
            t.start()
        new = _wait_takeover(others, term)
        assert _counter(old, "raftkv_log_stall_transfers_total") == 1
        assert "handing leadership to another voter" in old.log_text(since_start=True)
        for t in stalled:
            t.join(30)
        assert len(answers) == len(stalled), sorted(answers)
        for k, a in answers.items():
            if a.outcome == client.OK:
                acked[k] = "v-" + k

        # The old leader's disk still hangs: nothing below may wait for it.
        for i, n in enumerate([new, old] + [x for x in others if x is not new]):
            k = "after-%d" % i
            a = api.write(n.http_addr, k, "v-" + k, timeout=10.0)
            assert a.outcome == client.OK, (n.name, a)
            acked[k] = "v-" + k
        assert old.status()["role"] != "leader"

        old.set_disk_fault("off")
        _every_node_holds(cluster, new.status()["commit_index"], acked, 30)


def test_a_hung_leader_hands_leadership_on_with_a_removal_pending(raftkv_bin, shim, run_dir):
    """Four voters.  The leader's disk hangs while an operator removes one
    of the others: the removal cannot commit (the leader commits nothing
    past what it has stored), and it must not keep the leader from handing
    leadership on once its log has been stuck for an election timeout.  The
    removal gets an answer, and the two remaining followers, a majority of
    the three voters left, go on committing writes without the old leader's
    disk.  (logwatch.c used to wait for any membership change to finish
    first, so the cluster stayed stuck until the disk answered.)"""
    with _disk_fault_cluster(run_dir, raftkv_bin, shim, size=4,
                             snapshot_threshold=4096) as cluster:
        old = cluster.wait_leader()
        others = [n for n in cluster.nodes if n is not old]
        gone = others[-1]
        others = others[:-1]
        a = client.request(old.http_addr, "PUT", "/v1/kv/before", b"v", timeout=5.0)
        assert a.status == 200, a
        term = old.status()["term"]

        old.set_disk_fault("aio=HANG")
        removal = []
        remover = threading.Thread(target=lambda: removal.append(client.request(
            old.http_addr, "DELETE", "/v1/cluster/members/" + gone.name, timeout=60.0)),
            daemon=True)
        remover.start()
        db.wait_for(lambda: "while aio=HANG" in old.log_text(since_start=True), 10,
                    "the shim holding the leader's log write")
        new = _wait_takeover(others, term)
        print("new leader %s" % new.name)
        assert _counter(old, "raftkv_log_stall_transfers_total") == 1
        remover.join(30)
        assert len(removal) == 1, "the removal got no answer"
        print("the removal: %r" % (removal[0],))
        a = client.request(new.http_addr, "PUT", "/v1/kv/after", b"v", timeout=10.0)
        assert a.status == 200, a
        old.set_disk_fault("off")


def _voters(n):
    return sorted(m["id"] for m in n.status().get("members", []) if m.get("role") == "voter")


def _three_of_four_with_a_snapshot(cluster, keys):
    """n1, n2 and n3 as voters, `keys` keys k00000.. (value "v<i>") written
    through n1 in transactions of 128, and a snapshot on n1, so that n4,
    still down, will have to be sent the store."""
    n1, n2, n3, _ = cluster.nodes
    n1.start()
    a = client.request(n1.http_addr, "PUT", "/v1/kv/first", b"v", timeout=10.0)
    assert a.status == 200, a
    for n in (n2, n3):
        n.join = n1.http_addr
        n.start()
    db.wait_for(lambda: _voters(n1) == ["n1", "n2", "n3"], 30, "three voters")
    for start in range(0, keys, 128):
        ops = [{"op": "put", "key": "k%05d" % i, "value": "v%d" % i}
               for i in range(start, min(start + 128, keys))]
        a = client.request(n1.http_addr, "POST", "/v1/txn", json.dumps({"success": ops}),
                           {"Content-Type": "application/json"}, timeout=10.0)
        assert a.status == 200, a
    # Snapshots come every so many log entries, and those were few.
    pad = 0
    while n1.status()["snapshots_taken"] < 1:
        assert pad < 5000, "no snapshot on n1 after %d more writes" % pad
        for _ in range(32):
            a = client.request(n1.http_addr, "PUT", "/v1/kv/pad-%d" % pad, b"v", timeout=10.0)
            assert a.status == 200, a
            pad += 1


def _n4_joins_under(cluster, node, fault, text, what):
    """Switch `fault` on at `node`, start n4 joining n1, and wait until
    `node` logs `text`."""
    n1, n4 = cluster.nodes[0], cluster.nodes[3]
    node.set_disk_fault(fault)
    n4.join = n1.http_addr
    n4.spawn()
    db.wait_for(lambda: text in node.log_text(since_start=True), 30, what)


def test_a_join_waits_out_a_slow_snapshot_install(raftkv_bin, shim, run_dir):
    """n4 joins a cluster whose log has been cut by a snapshot, so it must
    be sent one; the shim holds n4's write of the snapshot file (snap=HANG)
    for longer than a join may go without progress (MEMBERSHIP_STALL_MS,
    10 s).  A snapshot being installed counts as progress: the join is not
    undone, and once the disk answers n4 becomes a voter.  (It used to be
    undone after 10 s as "did not catch up", which a store of a few million
    keys reaches without any fault: its snapshot takes that long.)"""
    with _disk_fault_cluster(run_dir, raftkv_bin, shim, size=4, start=False) as cluster:
        n1, n2, n3, n4 = cluster.nodes
        _three_of_four_with_a_snapshot(cluster, 400)
        _n4_joins_under(cluster, n4, "snap=HANG", "while snap=HANG",
                        "the shim holding n4's snapshot")
        held = time.monotonic()
        # Longer than the no-progress limit, polled: the join must not give up.
        while time.monotonic() - held < 13.0:
            assert "did not catch up" not in n1.log_text(since_start=True), \
                n1.tail(10, since_start=True)
            time.sleep(0.2)
        n4.set_disk_fault("off")
        db.wait_for(lambda: _voters(n1) == ["n1", "n2", "n3", "n4"], 30,
                    "n4 to become a voter")
        assert "did not catch up" not in n1.log_text(since_start=True)


def test_a_leader_keeps_leading_while_it_serializes_a_snapshot(raftkv_bin, shim, run_dir):
    """n4 joins a cluster whose log has been cut by a snapshot, so n1, the
    leader, serializes its whole store to send it.  The shim makes every
    step through n1's store take 1 ms (scan=SLOW), as a cold store on a slow
    disk would: 2,000 keys take over 2 s, four election timeouts.  The
    serialization runs beside n1's loop (src/snapsend.h), so n1 keeps
    sending heartbeats and answering writes meanwhile: no follower calls an
    election, the term stays the same, and n4 ends up a voter with every
    key.  (On the loop, n1 answered nothing for the whole scan.)"""
    with _disk_fault_cluster(run_dir, raftkv_bin, shim, size=4, start=False,
                             election_timeout=500, heartbeat_timeout=50) as cluster:
        n1, n2, n3, n4 = cluster.nodes
        _three_of_four_with_a_snapshot(cluster, 2000)
        before = n1.status()
        assert before["role"] == "leader", before

        _n4_joins_under(cluster, n1, "scan=SLOW", "serializing the store for a follower",
                        "n1 serializing its store for n4")
        started = time.monotonic()
        writes = 0
        while "sending a follower the store" not in n1.log_text(since_start=True):
            assert time.monotonic() - started < 60, n1.tail(10, since_start=True)
            a = client.request(n1.http_addr, "PUT", "/v1/kv/during-%d" % writes, b"v",
                               timeout=10.0)
            assert a.status == 200, a
            writes += 1
        took = time.monotonic() - started
        print("serialization with scan=SLOW: %.2f s, %d writes acknowledged meanwhile"
              % (took, writes))
        assert took > 2.0, "the shim did not slow the scan (%.2f s)" % took
        assert writes >= 2, writes
        n1.set_disk_fault("off")

        db.wait_for(lambda: _voters(n1) == ["n1", "n2", "n3", "n4"], 30,
                    "n4 to become a voter")
        after = n1.status()
        assert after["role"] == "leader" and after["term"] == before["term"], (before, after)
        for n in (n2, n3):
            assert n.status()["term"] == before["term"], n.name
        cluster.api = client.V1API()
        _every_node_holds(cluster, after["commit_index"],
                          {"k00000": "v0", "k01999": "v1999",
                           "during-%d" % (writes - 1): "v"}, 30)


def test_a_leader_stopped_while_it_serializes_a_snapshot_exits(raftkv_bin, shim, run_dir):
    """The same, with 30,000 keys: a slowed scan of 30 s.  n1 is stopped
    with SIGTERM while it serializes.  Raft's close waits for the scan
    (libraft's callback must find its instance), and the scan gives up
    within 1,024 keys of being told to: n1 exits with 0 in a few seconds,
    not after the whole scan; n2 and n3 elect a leader and keep every key."""
    with _disk_fault_cluster(run_dir, raftkv_bin, shim, size=4, start=False) as cluster:
        n1, n2, n3, n4 = cluster.nodes
        _three_of_four_with_a_snapshot(cluster, 30000)
        _n4_joins_under(cluster, n1, "scan=SLOW", "serializing the store for a follower",
                        "n1 serializing its store for n4")
        started = time.monotonic()
        code, problem = n1.stop()
        took = time.monotonic() - started
        print("n1 exited %s in %.2f s of SIGTERM" % (code, took))
        assert problem is None, problem
        assert took < 5.0, took
        log = n1.log_text(since_start=True)
        assert "stopped serializing the store for a follower" in log, n1.tail(10, since_start=True)
        assert "sending a follower the store" not in log
        n4.stop()

        cluster.api = client.V1API()
        leader = db.wait_for(lambda: next((n for n in (n2, n3)
                                           if n.status()["role"] == "leader"), None),
                             30, "n2 or n3 leading")
        commit = leader.status()["commit_index"]
        db.wait_for(lambda: all(n.status()["applied_index"] >= commit for n in (n2, n3)),
                    30, "n2 and n3 applying index %d" % commit)
        for n in (n2, n3):
            s = client.Session(n.http_addr)
            try:
                assert cluster.api.local_value(s, "k29999") == "v29999", n.name
            finally:
                s.close()


def test_a_follower_whose_log_write_hangs_relays_its_linearizable_reads(raftkv_bin, shim,
                                                                         run_dir):
    """A follower's disk hangs: it stores, and so applies, nothing new, yet
    it still hears from the leader.  A write commits on the other two.  A
    linearizable read on the hung follower gets a read index from the leader
    (src/followread.h) that its store cannot reach; once it has waited an
    election timeout and a second for it, the follower relays the read to
    the leader, and the client gets the new value -- never the old one that
    the follower's store still holds, as a stale read there shows."""
    with _disk_fault_cluster(run_dir, raftkv_bin, shim, snapshot_threshold=4096) as cluster:
        leader = cluster.wait_leader()
        f = next(n for n in cluster.nodes if n is not leader)
        a = client.request(leader.http_addr, "PUT", "/v1/kv/k", b"old", timeout=5.0)
        assert a.outcome == client.OK, a
        db.wait_for(lambda: client.request(f.http_addr, "GET", "/v1/kv/k?consistency=stale",
                                           timeout=3.0).body == b"old", 10,
                    "the follower to apply the first write")
        relays = _counter(f, "raftkv_follower_read_relays_total")

        f.set_disk_fault("aio=HANG")
        a = client.request(leader.http_addr, "PUT", "/v1/kv/k", b"new", timeout=10.0)
        assert a.outcome == client.OK, a
        db.wait_for(lambda: "while aio=HANG" in f.log_text(since_start=True), 10,
                    "the shim holding the follower's log write")
        stale = client.request(f.http_addr, "GET", "/v1/kv/k?consistency=stale", timeout=3.0)
        assert stale.status == 200 and stale.body == b"old", stale

        started = time.monotonic()
        r = client.request(f.http_addr, "GET", "/v1/kv/k", timeout=30.0)
        took = time.monotonic() - started
        print("linearizable read on the hung follower: %r in %.2f s" % (r, took))
        assert r.status == 200 and r.body == b"new", r
        assert _counter(f, "raftkv_follower_read_relays_total") == relays + 1
        assert "did not reach read index" in f.log_text(since_start=True)

        f.set_disk_fault("off")
        _every_node_holds(cluster, leader.status()["commit_index"], {}, 30)


def _write_held_by_the_shim(node, key, value, timeout, what):
    """Hang `node`'s log writes (aio=HANG), PUT `key` to it from a thread,
    and wait until the shim holds the write.  Returns the thread and the
    list its answer will land in."""
    node.set_disk_fault("aio=HANG")
    answers = []
    writer = threading.Thread(target=lambda: answers.append(client.request(
        node.http_addr, "PUT", "/v1/kv/" + key, value, timeout=timeout)), daemon=True)
    writer.start()
    db.wait_for(lambda: "while aio=HANG" in node.log_text(since_start=True), 10, what)
    return writer, answers


def test_a_node_stopped_while_it_bootstraps_exits(raftkv_bin, shim, run_dir):
    """A pristine node's first write makes it bootstrap: it closes Raft,
    reopens it as a one-node cluster and proposes its first entry, whose log
    write the shim holds.  SIGTERM arrives then.  Once the disk answers, the
    node stops and exits 0, and the write gets an answer.  (node_stop took
    the whole bootstrap for "Raft is being closed", so after the reopen it
    left the new instance open and the process never exited.)"""
    with _disk_fault_cluster(run_dir, raftkv_bin, shim, size=1, start=False) as cluster:
        n = cluster.nodes[0]
        n.start()
        writer, answers = _write_held_by_the_shim(
            n, "first", b"v", 30.0, "the shim holding the first entry's log write")
        n.current.expected = "stopped by the test"
        n.proc.send_signal(signal.SIGTERM)
        db.wait_for(lambda: "SIGTERM: shutting down" in n.log_text(since_start=True), 10,
                    "the node to take the SIGTERM")
        n.set_disk_fault("off")
        try:
            code = n.proc.wait(timeout=db.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("the node did not exit within %.0f s of its disk answering:\n%s"
                        % (db.STOP_TIMEOUT, n.tail(15, since_start=True)))
        n.reap()
        assert code == 0, n.tail(15, since_start=True)
        # It is not left waiting, and it cannot have succeeded: its own
        # entry was never proposed.  (Here it gets 503 "server is shutting
        # down"; a connection closed by the stop would be as good.)
        writer.join(10)
        assert len(answers) == 1 and answers[0].status != 200, answers
        print("the write during the stop: %r" % (answers[0],))


def test_a_bootstrapping_node_refuses_another_clusters_leader(raftkv_bin, shim, run_dir):
    """n2 bootstraps a cluster of its own: Raft reopened, its first entry
    (which carries the new cluster id) not yet stored, because the shim
    holds n2's log write.  Meanwhile n1, the leader of another cluster, is
    asked to add n2.  n2 refuses n1's Raft connection as another cluster's,
    n1's join fails saying so, and n2 lives on as its own cluster once its
    disk answers.  (n2 used to take 0 for its cluster id until that entry
    was applied, accept n1 as a peer, and crash in libraft with two leaders
    of one term.)"""
    with _disk_fault_cluster(run_dir, raftkv_bin, shim, size=2, start=False) as cluster:
        n1, n2 = cluster.nodes
        n1.start()
        n2.start()
        a = client.request(n1.http_addr, "PUT", "/v1/kv/one", b"1", timeout=10.0)
        assert a.status == 200, a
        writer, answers = _write_held_by_the_shim(n2, "two", b"2", 60.0,
                                                  "the shim holding n2's first entry")
        body = json.dumps({"id": n2.name, "raft_addr": n2.raft_addr,
                           "http_addr": n2.http_addr}).encode()
        join = client.request(n1.http_addr, "POST", "/v1/cluster/members", body,
                              {"Content-Type": "application/json"}, timeout=60.0)
        print("n1 adding n2: %r" % (join,))
        assert join.status != 200, join
        assert b"belongs to another cluster" in join.body, join
        assert n2.alive, n2.tail(20, since_start=True)
        assert "refused Raft connection" in n2.log_text(since_start=True)
        n2.set_disk_fault("off")
        writer.join(30)
        assert len(answers) == 1 and answers[0].status == 200, answers
        s1, s2 = n1.status(), n2.status()
        assert s2["role"] == "leader" and s1["cluster_id"] != s2["cluster_id"], (s1, s2)
        assert n2.alive


def test_stale_hosts_of_a_dead_run_are_removed(env_ok):
    """What a crashed run left (namespaces named after its pid) is removed at
    the start of the next run; a live owner's namespaces are left alone."""
    import hosts
    p = subprocess.Popen(["true"])
    p.wait()
    dead = p.pid                                # a pid that no longer runs
    stale = "%s%xx1-n1" % (hosts.PREFIX, dead)
    mine = "%s%xx999-n1" % (hosts.PREFIX, os.getpid())
    for ns in (stale, mine):
        hosts.sh(["ip", "netns", "add", ns])
    try:
        removed = hosts.cleanup_stale(log=_say)
        listed = hosts.sh(["ip", "netns", "list"])
        assert stale in removed and stale not in listed
        assert mine in listed and mine not in removed
    finally:
        for ns in (stale, mine):
            hosts.sh(["ip", "netns", "del", ns], check=False)


def test_diskfault_shim(shim, tmp_path):
    """The shim fails writes/fsyncs under its directory only, switched live
    through the control file; other files and stderr are untouched."""
    data = tmp_path / "data"
    data.mkdir()
    ctl = tmp_path / "ctl"
    ctl.write_bytes(b"off".ljust(256))
    script = r'''
import errno, os, sys
ctl, data, other = sys.argv[1:4]
def setctl(s):
    fd = os.open(ctl, os.O_RDWR); os.pwrite(fd, s.encode().ljust(256), 0); os.close(fd)
def attempt(path, call):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if call == "write": os.write(fd, b"x")
        else: os.fsync(fd)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        os.close(fd)
inside, outside = os.path.join(data, "f"), other
out = [attempt(inside, "write"), attempt(inside, "fsync")]
setctl("fsync=EIO write=ENOSPC")
out += [attempt(inside, "write"), attempt(inside, "fsync"), attempt(outside, "write"),
        attempt(outside, "fsync")]
sys.stderr.write("stderr still works\n")
setctl("off")
out += [attempt(inside, "write"), attempt(inside, "fsync")]
print(" ".join(out))
'''
    env = dict(os.environ, LD_PRELOAD=str(shim), DISKFAULT_DIR=str(data),
               DISKFAULT_CTL=str(ctl))
    p = subprocess.run([sys.executable, "-c", script, str(ctl), str(data),
                        str(tmp_path / "other")], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["ok", "ok", "ENOSPC", "EIO", "ok", "ok", "ok", "ok"]
    assert "stderr still works" in p.stderr
    assert "diskfault: injecting ENOSPC into write" in p.stderr
