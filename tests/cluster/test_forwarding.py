"""Followers forward writes and linearizable reads to the leader (docs/api.md):
every node serves every request; ?redirect asks for a 307 to the leader
instead; with no leader to forward to, a write is refused with 503 and
Retry-After and leaves nothing behind."""

import base64
import json
import shutil
import urllib.parse

from harness import (assert_json_error, get_raw, leader_and_followers, meta, paused,
                     put_ok, request_once, v1_delete, v1_get, v1_list, v1_put, v1_txn,
                     wait_until)


def test_followers_forward_writes_and_reads(cluster):
    """Through a follower: PUT (binary body), PUT with cas, DELETE, a transaction
    and a linearizable GET/list of what the other follower just wrote all succeed
    as if sent to the leader (same answers, metadata and X-Raftkv-* headers);
    errors are relayed too (409 compare failed, 404).  No answer is a 421."""
    nodes = cluster.start_nodes(3)
    leader, (f1, f2) = leader_and_followers(cluster)
    value = bytes(range(256)) * 4
    w = put_ok(f1, "fwd/bin", value)
    assert get_raw(f2, "fwd/bin") == (value, meta(w))
    assert get_raw(leader, "fwd/bin") == (value, meta(w))
    w2 = put_ok(f2, "fwd/bin", b"second", cas=w["mod_index"])
    assert w2["version"] == 2, w2
    r = v1_put(f1, "fwd/bin", b"third", cas=w["mod_index"])
    assert_json_error(r, 409, "stale CAS through a follower")
    assert (r.json.get("current") or {}).get("mod_index") == w2["mod_index"], r
    r = v1_txn(f2, {"compare": [{"key": "fwd/bin", "version": 2}],
                    "success": [{"op": "put", "key": "fwd/txn", "value": "t"},
                                {"op": "get", "key": "fwd/bin"}]})
    assert r.status == 200 and r.json.get("succeeded") is True, r
    assert base64.b64decode(r.json["results"][1]["value"]) == b"second", r.json
    r = v1_list(f1, prefix="fwd/", keys=None)
    assert r.status == 200 and r.json.get("keys") == ["fwd/bin", "fwd/txn"], r
    r = v1_delete(f1, "fwd/txn")
    assert r.status == 200 and r.json.get("deleted") is True, r
    r = v1_get(f2, "fwd/txn")
    assert_json_error(r, 404, "GET through a follower of a key just deleted through the other")
    for n in nodes:
        for i in range(5):
            r = v1_put(n, "fwd/each-%s" % n.name, str(i))
            assert r.status == 200, "PUT through %s -> %r (421 is no longer expected)" % (n.name, r)
            r = v1_get(nodes[(nodes.index(n) + 1) % 3], "fwd/each-%s" % n.name)
            assert r.status == 200 and r.body == str(i).encode(), r


def test_redirect_gives_307_to_the_leader(cluster):
    """?redirect on a follower answers 307 with Location: http://<leader's HTTP
    address><same path and other parameters>, and writes nothing; repeating the
    request at the Location succeeds.  Works for PUT (with cas), DELETE,
    linearizable GET and the listing; on the leader ?redirect is simply served."""
    nodes = cluster.start_nodes(3)
    leader, (f1, f2) = leader_and_followers(cluster)
    key = "redir/a b/ü"
    quoted = urllib.parse.quote(key.encode(), safe="")

    def redirected(node, method, path, body=None):
        r = request_once(node.http_addr, method, path, body=body)
        assert r.status == 307, "%s %s on follower %s -> %r" % (method, path, node.name, r)
        loc = r.header("Location") or ""
        u = urllib.parse.urlsplit(loc)
        assert u.scheme == "http" and u.netloc == leader.http_addr, \
            "Location %r does not point at the leader %s" % (loc, leader.http_addr)
        want_path = path.split("?")[0]
        assert urllib.parse.unquote_to_bytes(u.path) == urllib.parse.unquote_to_bytes(want_path), \
            "Location path %r, want %r" % (u.path, want_path)
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query, keep_blank_values=True)
        got = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        for name, values in params.items():
            if name != "redirect":
                assert got.get(name) == values, "Location %r lost ?%s=%s" % (loc, name, values)
        target = u.path + ("?" + u.query if u.query else "")
        return request_once(leader.http_addr, method, target, body=body)

    path = "/v1/kv/%s?cas=0&redirect" % quoted
    r = redirected(f1, "PUT", path, body=b"first")
    assert v1_get(leader, key).status == 200, "the key was not written at the Location"
    assert r.status == 200 and r.json.get("version") == 1, r
    for n in nodes:
        assert get_raw(n, key)[0] == b"first"
    r = redirected(f2, "GET", "/v1/kv/%s?redirect" % quoted)
    assert r.status == 200 and r.body == b"first", r
    r = redirected(f1, "GET", "/v1/kv?prefix=redir%2F&redirect")
    assert r.status == 200 and [it["key"] for it in r.json["items"]] == [key], r

    r = request_once(f2.http_addr, "PUT", "/v1/kv/redir%2Fnot-written?redirect", body=b"x")
    assert r.status == 307, r
    assert v1_get(leader, "redir/not-written").status == 404, "a 307 wrote the key"

    r = request_once(leader.http_addr, "PUT", "/v1/kv/%s?redirect" % quoted, body=b"on-leader")
    assert r.status == 200 and r.json.get("version") == 2, "?redirect on the leader -> %r" % r
    r = redirected(f2, "DELETE", "/v1/kv/%s?redirect" % quoted)
    assert r.status == 200 and r.json.get("deleted") is True, r


def test_write_without_a_leader_gets_503_and_leaves_nothing(cluster):
    """Follower F2 is paused (so no election can finish) and the leader is
    killed: writes to the remaining follower F1 -- PUT, DELETE, a multi-key
    transaction, a ?redirect PUT -- get 503 with Retry-After and a JSON error,
    both at once (forwarding to the dead leader) and once F1 knows of no leader;
    F1's commit index does not move.  After F2 continues and the old leader is
    restarted, none of the attempted writes is found on any node (nothing
    half-applied), the old data is intact and writes work again."""
    nodes = cluster.start_nodes(3)
    leader, (f1, f2) = leader_and_followers(cluster)
    put_ok(leader, "nolead/old", b"old")
    wait_until(lambda: v1_get(f1, "nolead/old", consistency="stale").status == 200, 10,
               "%s to apply nolead/old" % f1.name)
    attempted = []

    def refused(what, r):
        body = assert_json_error(r, 503, what)
        assert r.header("Retry-After"), "%s: 503 without Retry-After: %r" % (what, r)
        return body

    def try_writes(round_):
        k1, k2, k3 = ("nolead/%s-%d" % (round_, i) for i in range(3))
        attempted.extend([k1, k2, k3])
        refused("PUT (%s)" % round_, v1_put(f1, k1, b"x", timeout=30))
        refused("DELETE (%s)" % round_, v1_delete(f1, "nolead/old", timeout=30))
        refused("txn (%s)" % round_, v1_txn(f1, {"success": [
            {"op": "put", "key": k2, "value": "t"}, {"op": "put", "key": k3, "value": "t"},
            {"op": "delete", "key": "nolead/old"}]}, timeout=30))

    with paused(f2):
        before = f1.status()
        leader.kill()
        try_writes("at-once")
        wait_until(lambda: f1.status().get("leader") is None, 15,
                   "%s to know of no leader" % f1.name)
        try_writes("no-leader")
        r = request_once(f1.http_addr, "PUT", "/v1/kv/nolead%2Fredirect?redirect", body=b"x")
        attempted.append("nolead/redirect")
        refused("?redirect PUT with no leader", r)
        after = f1.status()
        assert after["commit_index"] == before["commit_index"], (before, after)
    leader.start()
    cluster.wait_converged(nodes)
    for n in nodes:
        for key in attempted:
            r = v1_get(n, key)
            assert r.status == 404, "%s: %s exists after a refused write: %r" % (n.name, key, r)
        assert get_raw(n, "nolead/old")[0] == b"old", n.name
    put_ok(f1, "nolead/after", b"works")


def _counter(node, name):
    r = node.request("GET", "/metrics")
    assert r.status == 200, r
    for line in r.body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("%s: no %s in /metrics" % (node.name, name))


def test_a_relayed_write_does_not_bootstrap_an_emptied_leader(cluster):
    """The leader is killed, its data directory emptied, and it is started
    again at the same addresses, pristine.  Before the election timeout (3 s
    here) a follower still takes it for the leader and relays a write to it.
    The pristine node must not bootstrap a cluster of its own for it (that
    would acknowledge a write the real cluster never sees): the client gets
    503, the node stays pristine, and once the others elect a leader it
    rejoins as a follower and the key was written nowhere.  (It used to
    answer 200 from a one-node cluster of its own.)"""
    cluster.start_nodes(3, args=("--election-timeout", "3000", "--heartbeat-timeout", "100"))
    old, (f, other) = leader_and_followers(cluster)
    put_ok(old, "fw/before", b"v")
    old.kill()
    shutil.rmtree(old.data_dir)
    old.start()
    assert old.status()["role"] == "pristine", old.status()
    r = v1_put(f, "fw/relayed", b"lost?", timeout=30)
    print("the relayed write: %r" % (r,))
    assert r.status == 503, r
    assert "bootstrapping a one-node cluster" not in old.log_since_start(), old.tail(10)
    new = cluster.wait_converged([old, f, other])
    assert new is not old
    wait_until(lambda: v1_get(old, "fw/before", consistency="stale").status == 200, 30,
               "the emptied node to catch up as a follower")
    for n in (old, f, other):
        assert v1_get(n, "fw/relayed").status == 404


def test_relays_survive_the_leader_restarting(cluster):
    """A follower keeps its connections to the leader open between relays.
    The leader restarts and is made leader again at the same address: the
    connections the follower kept went away with the old process, and the very
    first write relayed afterwards succeeds, as does every one after it; the
    follower counts them as relayed and counts no relay error."""
    cluster.start_nodes(3)
    leader, (f1, f2) = leader_and_followers(cluster)
    for i in range(20):
        put_ok(f1, "relay/before-%d" % i, b"v")

    leader.restart()
    now = cluster.wait_leader()
    if now is not leader:
        r = now.request("POST", "/v1/cluster/leader", body=json.dumps({"id": leader.name}),
                        headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status == 200 and r.json.get("leader") == leader.name, r
    assert leader_and_followers(cluster)[0] is leader
    relayed, errors = (_counter(f1, "raftkv_forwarded_requests_total"),
                       _counter(f1, "raftkv_forward_errors_total"))

    for i in range(20):
        r = v1_put(f1, "relay/after-%d" % i, b"w")
        assert r.status == 200, "relayed write %d after the restart -> %r" % (i, r)
    assert _counter(f1, "raftkv_forwarded_requests_total") - relayed == 20
    assert _counter(f1, "raftkv_forward_errors_total") == errors
    for i in range(20):
        assert get_raw(f2, "relay/after-%d" % i)[0] == b"w"
