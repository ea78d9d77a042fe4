"""Replication across three nodes, and leader failover under load."""

import string
import time

from harness import Writer, wait_until

STATUS_FIELDS = ("id", "role", "term", "leader", "commit_index", "applied_index",
                 "last_log_index", "snapshot_index", "snapshots_taken",
                 "snapshots_restored", "members", "cluster_id")


def test_three_nodes_replicate(cluster):
    """node1 plus node2/node3 started with --join H1 form one cluster: every node's
    /v1/status shows the same leader and three voters (with the addresses they were
    started with), writes through the leader show up on every node, and a write sent
    to a follower is relayed to the leader and acknowledged once committed."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)

    for n in nodes:
        r = n.request("GET", "/health")
        assert (r.status, r.json) == (200, {"status": "ok"}), r
        s = n.status()
        missing = [f for f in STATUS_FIELDS if f not in s]
        assert not missing, "%s: /v1/status lacks %s: %s" % (n.name, missing, s)
        assert s["id"] == n.name
        members = {m["id"]: m for m in s["members"]}
        for m in nodes:
            assert members[m.name]["raft_addr"] == m.raft_addr, (n.name, members)
        assert s["cluster_id"] and all(c in string.hexdigits for c in s["cluster_id"]), \
            "%s: cluster_id should be a hex string: %s" % (n.name, s)
    assert len({n.status()["cluster_id"] for n in nodes}) == 1

    expected = {}
    for i in range(20):
        r = leader.set("rep-%d" % i, "value-%d" % i)
        assert r.status == 200 and isinstance(r.json.get("index"), int), r
        expected["rep-%d" % i] = "value-%d" % i
    for n in nodes:
        cluster.wait_has_all(n, expected, 30)

    follower = next(n for n in nodes if n is not leader)
    r = follower.set("via-follower", "1")
    assert r.status == 200, "a write to follower %s answered %r" % (follower.name, r)
    assert isinstance(r.json.get("index"), int), r
    # Relayed to the leader, committed there: the leader has it at once.
    assert leader.value("via-follower") == "1"
    for n in nodes:
        cluster.wait_has_all(n, {"via-follower": "1"}, 30)


def test_leader_killed_during_writes(cluster):
    """kill -9 of the leader while a writer writes continuously: the two survivors
    elect a new leader within 10 s, the writer (following 421 leader hints) gets
    writes acknowledged again, every acknowledged write is on both survivors, and
    the killed node, restarted with the same flags, gets all of them too."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    old_term = leader.status()["term"]

    w = Writer(cluster, "failover", threads=2).start()
    w.wait_acked(200)
    killed_at = time.monotonic()
    leader.kill()
    survivors = [n for n in nodes if n is not leader]

    new_leader = _wait_new_leader(survivors, old_term)
    elected_after = time.monotonic() - killed_at
    print("new leader %s elected %.2f s after the kill" % (new_leader.name, elected_after))
    assert elected_after < 10, "election took %.1f s" % elected_after

    w.wait_acked(w.count + 200, 30)
    resumed_after = w.first_ack_after(killed_at, not_from=leader.http_addr) - killed_at
    print("writes resumed %.2f s after the kill" % resumed_after)
    w.stop()
    acked = w.snapshot()
    print("%d writes acknowledged; answers seen: %s; unexpected: %s; 503 without Retry-After: %s"
          % (len(acked), dict(w.statuses), w.unexpected[:5], w.no_retry_after[:3]))

    for n in survivors:
        cluster.wait_has_all(n, acked, 60)

    leader.start()
    cluster.wait_has_all(leader, acked, 60)
    cluster.wait_converged(nodes)


def _wait_new_leader(survivors, old_term):
    """A survivor that is leader at a term above old_term; deadline 10 s, not scaled."""
    def check():
        for n in survivors:
            s = n.status()
            if s["role"] == "leader" and s["term"] > old_term:
                return n
        raise AssertionError("roles/terms: %s" % {
            n.name: (s["role"], s["term"]) for n, s in ((n, n.status()) for n in survivors)})
    return wait_until(check, 10, "a new leader among the survivors above term %d" % old_term,
                      scale=False)


def test_clients_that_leave_before_commit(cluster):
    """With both followers paused (SIGSTOP) nothing can commit, so writes stay
    pending on the leader.  Clients that send a /set and hang up meanwhile must
    not crash the leader or leak anything (the sanitized run checks at exit):
    once the followers resume, the leader still serves, and its commit index
    moves past the abandoned writes."""
    import os
    import re
    import signal
    import socket

    from harness import split_addr

    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    followers = [n for n in nodes if n is not leader]

    def proposed():
        """Client commands the leader has put in the log so far (several
        may share one entry)."""
        text = leader.request("GET", "/metrics").body.decode()
        m = re.search(r"^raftkv_commands_proposed_total (\d+)$", text, re.M)
        assert m, "no raftkv_commands_proposed_total in /metrics"
        return int(m.group(1))

    before = proposed()
    for f in followers:
        os.kill(f.pid, signal.SIGSTOP)
    try:
        host, port = split_addr(leader.http_addr)
        for i in range(40):
            body = ('{"key": "gone-%d", "value": "v"}' % i).encode()
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"POST /set HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
            if i % 2:
                s.shutdown(socket.SHUT_RDWR)  # FIN; the other half just RST on close
            s.close()
        wait_until(lambda: proposed() >= before + 40, 30,
                   "the leader to propose the 40 abandoned writes")
        appended = leader.status()["last_log_index"]
        assert leader.request("GET", "/health").status == 200
    finally:
        for f in followers:
            os.kill(f.pid, signal.SIGCONT)
    wait_until(lambda: leader.status()["commit_index"] >= appended, 60,
               "the abandoned writes to commit once the followers resume")
    r = leader.set("after", "1")
    assert r.status == 200, r


def test_writes_that_arrive_during_a_log_write_share_the_next_entry(cluster):
    """libraft 0.15 writes the log one batch at a time, and a leader commits
    nothing past what it has itself stored.  A write that arrives while the
    leader's log write is on the disk therefore waits for the next one
    anyway, so the leader holds such writes back (src/propose.h) and
    proposes them as one entry when the write completes.  Under 24
    concurrent writers /metrics counts held entries, entries carry several
    commands each, every write is acknowledged, and every node has them."""
    import re

    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)

    def counters():
        text = leader.request("GET", "/metrics").body.decode()
        out = {}
        for name in ("entries_proposed", "commands_proposed", "entries_held"):
            m = re.search(r"^raftkv_%s_total (\d+)$" % name, text, re.M)
            assert m, "no raftkv_%s_total in /metrics" % name
            out[name] = int(m.group(1))
        return out

    before = counters()
    w = Writer(cluster, "held", threads=24, per_thread=50).start()
    w.join(120)
    assert not w.errors and not w.unexpected, (w.errors, w.unexpected)
    assert len(w.acked) == 24 * 50, w.statuses
    after = counters()
    d = {k: after[k] - before[k] for k in after}
    assert d["commands_proposed"] == 24 * 50, d
    assert d["entries_held"] > 0, "no write waited for the leader's log write: %s" % d
    assert d["commands_proposed"] >= 2 * d["entries_proposed"], d
    for n in nodes:
        cluster.wait_has_all(n, w.acked, 60)
