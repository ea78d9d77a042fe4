"""Acknowledged writes survive crashes: of every node at once, and of a follower."""

import random

from harness import Writer, wait_until


def _wait_same_indexes(cluster, nodes, timeout=60):
    def check():
        st = {n.name: n.status() for n in nodes}
        idx = {k: (s["applied_index"], s["commit_index"], s["last_log_index"])
               for k, s in st.items()}
        assert len(set(idx.values())) == 1, \
            "(applied, commit, last_log) per node: %s" % idx
        return st
    return wait_until(check, timeout, "all nodes to report the same applied/commit/last-log index")


def test_kill_all_nodes_during_writes(cluster):
    """kill -9 of all three nodes while writes are in flight, then a restart of all
    three with the same flags: every acknowledged write is on every node, the nodes
    agree on applied/commit/last-log index and on the values, and the cluster takes
    new writes."""
    nodes = cluster.start_nodes(3)
    cluster.wait_converged(nodes)

    w = Writer(cluster, "crash", threads=3).start()
    w.wait_acked(300)
    for n in nodes:
        n.kill()
    w.stop()
    acked = w.snapshot()
    print("%d writes acknowledged before the crash; answers seen: %s; unexpected: %s"
          % (len(acked), dict(w.statuses), w.unexpected[:5]))

    for n in nodes:
        n._spawn()
    for n in nodes:
        n.wait_healthy()
    leader = cluster.wait_converged(nodes)

    for n in nodes:
        cluster.wait_has_all(n, acked, 60)

    r = leader.set("after-restart", "yes")
    assert r.status == 200, r
    st = _wait_same_indexes(cluster, nodes)
    print("indexes after restart: %s" % {k: s["applied_index"] for k, s in st.items()})
    sample = random.Random(4).sample(sorted(acked), min(200, len(acked))) + ["after-restart"]
    for key in sample:
        values = {n.name: n.value(key) for n in nodes}
        assert len(set(values.values())) == 1, "nodes disagree on %r: %s" % (key, values)


def test_follower_killed_during_10k_writes_catches_up(cluster):
    """A follower SIGKILLed during 10,000 writes (10 writer threads over keep-alive
    connections) and restarted after them catches up: its applied_index reaches the
    leader's and sampled keys read locally on it have the acknowledged values."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    follower = next(n for n in nodes if n is not leader)

    w = Writer(cluster, "bulk", threads=10, per_thread=1000).start()
    w.wait_acked(2500, 120)
    follower.kill()
    w.join(timeout=300)
    acked = w.snapshot()
    assert len(acked) == 10000, "%d of 10000 writes acknowledged; unexpected answers: %s" % (
        len(acked), w.unexpected[:5])
    assert not w.unexpected, "writers saw unexpected answers: %s" % w.unexpected[:5]

    follower.start()
    s = cluster.wait_caught_up(follower, leader, 120)
    assert s["applied_index"] == leader.status()["applied_index"], (s, leader.status())
    keys = sorted(acked)
    sample = random.Random(6).sample(keys, 300) + list(acked)[-50:]
    for key in sample:
        assert follower.value(key) == acked[key] == leader.value(key), key
    cluster.wait_converged(nodes)
