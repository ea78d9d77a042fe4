"""Election timeouts (src/node.c, node_first_election_ms).

Until a node has seen a leader it uses a quarter of --election-timeout (at
least three heartbeats), so that a cluster restarted as a whole elects a
leader without waiting out the full timeout; once it has seen one it goes
back to the configured timeout.  Both tests use a long --election-timeout,
so that the two regimes are seconds apart and a slow machine can only make
the first one later, never the second one earlier.
"""

import time

from harness import leader_and_followers, paused, scaled, wait_until

TIMEOUT_MS = 4000
ARGS = ["--election-timeout", str(TIMEOUT_MS)]


def leader_name(node):
    leader = node.status().get("leader")
    return leader["id"] if leader else None


def test_first_timeout_until_a_leader_is_seen(cluster):
    """/v1/status shows the election timeout in use: a quarter of the configured
    one on a node that has not seen a leader yet (a pristine node waiting to be
    joined), the configured one on every member of a running cluster."""
    nodes = cluster.start_nodes(3, args=ARGS)
    lone = cluster.node("lone", args=ARGS)
    assert lone.status()["election_timeout_ms"] == TIMEOUT_MS // 4
    wait_until(lambda: all(n.status()["election_timeout_ms"] == TIMEOUT_MS for n in nodes),
               10, "every member to use the configured election timeout")


def test_whole_cluster_restart_elects_before_the_full_timeout(cluster):
    """Three nodes with a 4 s election timeout are stopped together and started
    together: a leader is elected well before 4 s (the first timeout is 1 s,
    randomized to 1-2 s), where the configured timeout alone would take 4-8 s."""
    nodes = cluster.start_nodes(3, args=ARGS)
    leader_and_followers(cluster)
    for n in nodes:
        n.stop()
    started = time.monotonic()
    for n in nodes:
        n._spawn()
    wait_until(lambda: any(n.request("GET", "/ready").status == 200 for n in nodes),
               TIMEOUT_MS / 1000 - 0.5, "a leader before the configured timeout ran out")
    print("ready %.2f s after the restart" % (time.monotonic() - started))


def test_failover_waits_for_the_configured_timeout(cluster):
    """Once a leader is known, the followers are back on the configured 4 s: when
    the leader is paused, no new leader appears before 4 s minus one heartbeat
    (the followers' timers started at the last heartbeat they got), and one
    appears after that."""
    nodes = cluster.start_nodes(3, args=ARGS)
    leader, followers = leader_and_followers(cluster)
    wait_until(lambda: all(f.status()["election_timeout_ms"] == TIMEOUT_MS for f in followers),
               10, "the followers to go back to the configured election timeout")
    with paused(leader):
        paused_at = time.monotonic()
        new = [None]

        def elected():
            for f in followers:
                name = leader_name(f)
                if name is not None and name != leader.name:
                    new[0] = name
                    return True
            return False
        wait_until(elected, TIMEOUT_MS * 2 / 1000 + 10, "a new leader while %s is paused"
                   % leader.name)
        took = time.monotonic() - paused_at
    print("new leader %s %.2f s after pausing %s" % (new[0], took, leader.name))
    assert took >= TIMEOUT_MS / 1000 - 0.2, \
        "a follower started an election %.2f s after the leader stopped: it still " \
        "used the short first timeout" % took
    cluster.wait_converged(nodes)
