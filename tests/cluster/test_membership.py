"""Membership: joins that must be refused, restarts of joined nodes, joins via a follower."""

import time
import urllib.parse

from harness import wait_until


def _join_path(node):
    return "/join?" + urllib.parse.urlencode({
        "followerId": node.name, "followerAddr": node.raft_addr, "httpAddr": node.http_addr})


def _member_ids(node):
    return [m["id"] for m in node.status()["members"]]


def test_merge_of_two_clusters_is_refused(cluster):
    """Two independent nodes A and B each bootstrap their own cluster with a write.
    Asking A to add B answers 409 with an error about B belonging to another
    cluster; afterwards both are still alive, still lead their own cluster, still
    serve their own data, accept new writes, and B is not (or no longer) a member
    of A."""
    a = cluster.node("alpha")
    b = cluster.node("beta")
    assert a.set("a-key", "from-a").status == 200
    assert b.set("b-key", "from-b").status == 200
    sa, sb = a.status(), b.status()
    assert sa["role"] == "leader" and sb["role"] == "leader", (sa, sb)
    assert sa["cluster_id"] and sb["cluster_id"] and sa["cluster_id"] != sb["cluster_id"], (sa, sb)

    r = a.request("GET", _join_path(b), timeout=60)
    assert r.status == 409, "join of a node holding another cluster's data: %r" % r
    error = (r.json or {}).get("error", "")
    assert "cluster" in error.lower(), "409 error does not say why: %r" % r

    def beta_not_member():
        members = a.status()["members"]
        assert "beta" not in [m["id"] for m in members], "alpha's members: %s" % members
        return True
    wait_until(beta_not_member, 30, "beta to be absent from alpha's members")
    assert _member_ids(a) == ["alpha"], a.status()
    assert _member_ids(b) == ["beta"], b.status()
    for node, key, value, other_key in ((a, "a-key", "from-a", "b-key"),
                                        (b, "b-key", "from-b", "a-key")):
        assert node.alive, "%s died" % node.name
        assert node.value(key) == value
        assert node.value(other_key) == "", "%s got the other cluster's data" % node.name
        r = node.set(node.name + "-after", "still-writable")
        assert r.status == 200, "%s refuses writes after the refused merge: %r" % (node.name, r)
        assert node.value(node.name + "-after") == "still-writable"
        s = node.status()
        assert s["role"] == "leader", s
    assert a.status()["cluster_id"] == sa["cluster_id"]
    assert b.status()["cluster_id"] == sb["cluster_id"]


def test_restart_of_joined_node_resumes_membership(cluster):
    """node2, started with --join, stopped with SIGTERM (exit 0) and restarted with
    the very same flags (still --join) resumes as the same member: it keeps the data
    it had, the cluster lists node1 and node2 exactly once each, a re-join of node2
    with the same address is an idempotent 200, and new writes reach node2."""
    nodes = cluster.start_nodes(2)
    leader = cluster.wait_converged(nodes)
    node2 = cluster.by_name("node2")
    for i in range(10):
        assert leader.set("before-%d" % i, str(i)).status == 200
    cluster.wait_has_all(node2, {"before-%d" % i: str(i) for i in range(10)}, 30)
    members_before = leader.status()["members"]

    node2.stop()   # asserts exit code 0
    node2.start()
    def old_data():
        got = node2.value("before-9")
        assert got == "9", "node2 /get?key=before-9 -> %r" % got
        return True
    wait_until(old_data, 10, "node2 to serve its old data after the restart")
    leader = cluster.wait_converged(nodes)

    for n in nodes:
        members = n.status()["members"]
        ids = [m["id"] for m in members]
        assert sorted(ids) == ["node1", "node2"], "%s lists members %s" % (n.name, members)
        assert len({m["raft_addr"] for m in members}) == 2, members
    assert sorted(m["raft_addr"] for m in leader.status()["members"]) == \
        sorted(m["raft_addr"] for m in members_before)

    r = leader.request("GET", _join_path(node2), timeout=60)
    assert r.status == 200, "re-join of an existing member: %r" % r
    assert sorted(_member_ids(leader)) == ["node1", "node2"], leader.status()

    assert leader.set("after", "restart").status == 200
    cluster.wait_has_all(node2, {"after": "restart"}, 30)


def test_join_through_a_follower(cluster):
    """--join accepts the HTTP address of any member: node3 pointed at a follower
    (which relays the join to the leader) becomes a voter; a /join sent to a
    follower with ?redirect answers 307 with the leader's address instead."""
    nodes = cluster.start_nodes(2)
    leader = cluster.wait_converged(nodes)
    follower = next(n for n in nodes if n is not leader)

    node3 = cluster.node("node3", start=False, join=follower)
    r = follower.request("GET", _join_path(node3) + "&redirect")
    assert r.status == 307, "/join?redirect sent to follower %s: %r" % (follower.name, r)
    assert (r.header("Location") or "").startswith("http://%s/join?" % leader.http_addr), r
    hint = (r.json or {}).get("leader") or {}
    assert hint.get("id") == leader.name and hint.get("http_addr") == leader.http_addr, r

    node3.start()
    cluster.wait_converged(nodes + [node3])
    assert leader.set("k", "v").status == 200
    cluster.wait_has_all(node3, {"k": "v"}, 30)


def test_join_retries_until_the_member_is_up(cluster):
    """A node started with --join pointing at a member that is not running yet keeps
    retrying (and keeps running): once node1 comes up, node2 joins as a voter and
    receives writes."""
    node1 = cluster.node("node1", start=False)
    node2 = cluster.node("node2", join=node1)
    started = time.monotonic()

    def waited_while_alone():
        s = node2.status()
        assert "node2" not in [m["id"] for m in s["members"] if m.get("role") == "voter"], s
        assert time.monotonic() - started > 1.5, "node2 alone for %.1f s so far" % (
            time.monotonic() - started)
        return True
    wait_until(waited_while_alone, 10, "node2 to have spent 1.5 s retrying its join, still alive")

    node1.start()
    leader = cluster.wait_converged([node1, node2])
    assert leader.set("k", "v").status == 200
    cluster.wait_has_all(node2, {"k": "v"}, 30)
