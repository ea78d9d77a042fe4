"""Cluster operations (docs/api.md, "Cluster"): listing members, removing and
re-adding a follower, removing the leader itself, leadership transfer, and the
errors of these endpoints -- each also sent to a follower, which forwards."""

import json
import threading

from harness import (assert_json_error, json_error_problem, leader_and_followers, paused, put_ok,
                     request_once, v1_get, wait_until)

JSON_CT = {"Content-Type": "application/json"}


def members(node):
    r = node.request("GET", "/v1/cluster/members")
    assert r.status == 200, "%s: GET /v1/cluster/members -> %r" % (node.name, r)
    body = r.json
    assert isinstance(body, dict) and isinstance(body.get("members"), list) \
        and "leader" in body, "%s: /v1/cluster/members body %r" % (node.name, r)
    return body


def check_members(node, nodes, leader):
    """node lists exactly `nodes` as voters with their addresses, `leader` as the
    leader (top-level "leader" and the one member with leader: true)."""
    body = members(node)
    ids = [m.get("id") for m in body["members"]]
    assert sorted(ids) == sorted(n.name for n in nodes), \
        "%s lists members %s, want %s" % (node.name, ids, [n.name for n in nodes])
    assert body["leader"] == leader.name, "%s names leader %r, want %s" % (
        node.name, body["leader"], leader.name)
    for m in body["members"]:
        n = next(x for x in nodes if x.name == m["id"])
        want = {"id": n.name, "raft_addr": n.raft_addr, "http_addr": n.http_addr,
                "role": "voter", "leader": n is leader}
        got = {k: m.get(k) for k in want}
        assert got == want, "%s lists %r, want %r" % (node.name, m, want)
    return True


def wait_members(nodes, leader, timeout=30):
    for n in nodes:
        wait_until(lambda n=n: check_members(n, nodes, leader), timeout,
                   "%s to list members %s with leader %s" % (
                       n.name, [x.name for x in nodes], leader.name))


def transfer(node, body):
    r = node.request("POST", "/v1/cluster/leader", body=json.dumps(body), headers=JSON_CT,
                     timeout=60)
    assert r.status == 200, "%s: POST /v1/cluster/leader %s -> %r" % (node.name, body, r)
    assert isinstance(r.json, dict) and isinstance(r.json.get("leader"), str), r
    return r.json["leader"]


def add_member(node, target, timeout=60):
    return node.request("POST", "/v1/cluster/members", body=json.dumps({
        "id": target.name, "raft_addr": target.raft_addr, "http_addr": target.http_addr}),
        headers=JSON_CT, timeout=timeout)


def remove_member(node, name, timeout=60):
    return node.request("DELETE", "/v1/cluster/members/" + name, timeout=timeout)


def test_members_leader_transfer_and_errors(cluster):
    """GET /v1/cluster/members on every node lists the three voters with their
    addresses and exactly one leader: true.  Malformed member/leader requests get
    400, wrong methods 405, an unknown member id 404 (DELETE) -- from leader and
    follower, with commit_index unchanged.  POST /v1/cluster/leader moves the
    leadership to a named follower (asked on the leader), to any other voter
    ({} asked on a follower) and to a named node asked on a follower; each answers
    200 {"leader": NAME} and every node then agrees; a transfer to an unknown id
    is refused; writes work after every transfer."""
    nodes = cluster.start_nodes(3)
    leader, followers = leader_and_followers(cluster)
    for n in nodes:
        check_members(n, nodes, leader)

    cases = [
        ("members: not JSON", "POST", "/v1/cluster/members", '{"id": ', 400),
        ("members: a JSON array", "POST", "/v1/cluster/members", "[]", 400),
        ("members: empty object", "POST", "/v1/cluster/members", "{}", 400),
        ("members: no raft_addr", "POST", "/v1/cluster/members", {"id": "node9"}, 400),
        ("members: id not a string", "POST", "/v1/cluster/members",
         {"id": 9, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}, 400),
        ("members: empty id", "POST", "/v1/cluster/members",
         {"id": "", "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}, 400),
        ("members: id with bad characters", "POST", "/v1/cluster/members",
         {"id": "bad name!", "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}, 400),
        ("members: id of 65 characters", "POST", "/v1/cluster/members",
         {"id": "n" * 65, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"}, 400),
        ("members: raft_addr without port", "POST", "/v1/cluster/members",
         {"id": "node9", "raft_addr": "127.0.0.1", "http_addr": "127.0.0.1:2"}, 400),
        ("members: raft_addr port out of range", "POST", "/v1/cluster/members",
         {"id": "node9", "raft_addr": "127.0.0.1:99999", "http_addr": "127.0.0.1:2"}, 400),
        ("members: raft_addr port not a number", "POST", "/v1/cluster/members",
         {"id": "node9", "raft_addr": "127.0.0.1:abc", "http_addr": "127.0.0.1:2"}, 400),
        ("members: http_addr not a string", "POST", "/v1/cluster/members",
         {"id": "node9", "raft_addr": "127.0.0.1:1", "http_addr": 2}, 400),
        ("leader: not JSON", "POST", "/v1/cluster/leader", "{", 400),
        ("leader: a JSON array", "POST", "/v1/cluster/leader", "[]", 400),
        ("leader: id not a string", "POST", "/v1/cluster/leader", {"id": 5}, 400),
        ("remove: bad percent-encoding", "DELETE", "/v1/cluster/members/node%ZZ", None, 400),
        ("remove: unknown id", "DELETE", "/v1/cluster/members/nosuch", None, 404),
        ("PUT /v1/cluster/members", "PUT", "/v1/cluster/members", "{}", 405),
        ("DELETE /v1/cluster/leader", "DELETE", "/v1/cluster/leader", None, 405),
    ]
    allow_want = {"PUT /v1/cluster/members": ("GET", "POST"),
                  "DELETE /v1/cluster/leader": ("POST",)}
    before = leader.status()
    failures = []
    for target in [leader] + followers:
        for what, method, path, body, status in cases:
            if body is not None and not isinstance(body, str):
                body = json.dumps(body)
            r = request_once(target.http_addr, method, path, body=body,
                             headers=JSON_CT if body is not None else None)
            problem = json_error_problem(r, status)
            if problem:
                failures.append("%s via %s: %s" % (what, target.name, problem))
            elif status == 405:
                allow = (r.header("Allow") or "").upper()
                if not all(m in allow for m in allow_want[what]):
                    failures.append("%s: Allow %r lacks %s" % (what, allow, allow_want[what]))
    after = leader.status()
    for field in ("commit_index", "last_log_index"):
        if after[field] != before[field]:
            failures.append("leader %s moved from %s to %s across the bad requests"
                            % (field, before[field], after[field]))
    for n in nodes:
        try:
            check_members(n, nodes, leader)
        except AssertionError as e:
            failures.append("after the bad requests: %s" % e)
    assert not failures, "%d problems:\n  %s" % (len(failures), "\n  ".join(failures))

    # A named follower, asked on the leader.
    target = followers[0]
    assert transfer(leader, {"id": target.name}) == target.name
    assert cluster.wait_converged(nodes) is target
    wait_members(nodes, target)
    put_ok(leader, "ops/after-transfer-1", b"1")

    # Any other voter, asked on a follower.
    current = target
    asked = next(n for n in nodes if n is not current)
    moved_to = transfer(asked, {})
    assert moved_to in [n.name for n in nodes] and moved_to != current.name, \
        "transfer to any voter moved leadership to %r (was %s)" % (moved_to, current.name)
    current = cluster.wait_converged(nodes)
    assert current.name == moved_to, (current, moved_to)
    wait_members(nodes, current)
    put_ok(asked, "ops/after-transfer-2", b"2")

    # A named node, asked on a follower that is not the target.
    via = next(n for n in nodes if n is not current)
    target = next(n for n in nodes if n is not current and n is not via)
    assert transfer(via, {"id": target.name}) == target.name
    assert cluster.wait_converged(nodes) is target
    wait_members(nodes, target)
    put_ok(via, "ops/after-transfer-3", b"3")

    # Unknown target: refused, nothing moves.
    for n in nodes:
        r = n.request("POST", "/v1/cluster/leader", body='{"id": "nosuch"}', headers=JSON_CT,
                      timeout=30)
        assert_json_error(r, (404, 409), "transfer to an unknown id via %s" % n.name)
    assert cluster.wait_converged(nodes) is target
    for i in (1, 2, 3):
        assert v1_get(nodes[i - 1], "ops/after-transfer-%d" % i).body == str(i).encode()


def test_remove_and_readd_a_follower(cluster):
    """A follower F is removed through the other follower (200 {"removed": F}):
    the two remaining nodes list only themselves and elect/keep a leader; 20
    writes go through meanwhile.  F (still running) is added back through the
    follower with POST /v1/cluster/members (200, role voter): all three converge,
    F serves every write made while it was out, and adding it again is an
    idempotent 200 while adding its address under another name, or its name at
    another address, is a 409 that changes nothing."""
    nodes = cluster.start_nodes(3)
    leader, (f, other) = leader_and_followers(cluster)
    expected = {}
    for i in range(5):
        put_ok(leader, "ops/before-%d" % i, str(i))
        expected["ops/before-%d" % i] = str(i)

    r = remove_member(other, f.name)
    assert r.status == 200 and r.json == {"removed": f.name}, \
        "DELETE /v1/cluster/members/%s via %s -> %r" % (f.name, other.name, r)
    rest = [leader, other]
    new_leader = cluster.wait_converged(rest)
    wait_members(rest, new_leader)
    for i in range(20):
        put_ok(other if i % 2 else new_leader, "ops/while-out-%d" % i, str(i))
        expected["ops/while-out-%d" % i] = str(i)
    f.check_not_dead()

    r = add_member(other, f)
    assert r.status == 200, "POST /v1/cluster/members %s via %s -> %r" % (f.name, other.name, r)
    assert r.json == {"id": f.name, "raft_addr": f.raft_addr, "http_addr": f.http_addr,
                      "role": "voter"}, r.json
    current = cluster.wait_converged(nodes)
    wait_members(nodes, current)
    cluster.wait_has_all(f, expected, 30)

    r = add_member(current, f)
    assert r.status == 200 and (r.json or {}).get("role") == "voter", \
        "adding an existing member again at the same address -> %r" % r
    for what, body in (
            ("its raft address under another name",
             {"id": "impostor", "raft_addr": f.raft_addr, "http_addr": f.http_addr}),
            ("its name at another address",
             {"id": f.name, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"})):
        for via in (current, f):
            r = via.request("POST", "/v1/cluster/members", body=json.dumps(body),
                            headers=JSON_CT, timeout=60)
            assert_json_error(r, 409, "adding %s via %s" % (what, via.name))
    wait_members(nodes, cluster.wait_converged(nodes))


def test_a_join_waits_for_a_removal_under_way(cluster):
    """A removal of node3 cannot commit while node2 and node3 are paused
    (the new configuration needs node2).  A join of a fresh node4 asked
    meanwhile waits for it instead of failing; once they continue, both
    answer 200 and the members are node1, node2 and node4.  (libraft takes
    one configuration change at a time: the join used to reach it at once
    and come back as a 500.)"""
    cluster.start_nodes(3)
    leader, _ = leader_and_followers(cluster)
    others = sorted((n for n in cluster.nodes if n is not leader), key=lambda n: n.name)
    gone = others[-1]
    fresh = cluster.node("node4")
    answers = {}

    def ask(what, fn):
        answers[what] = fn()
    with paused(*others):
        remover = threading.Thread(target=ask, args=(
            "remove", lambda: remove_member(leader, gone.name)), daemon=True)
        remover.start()
        wait_until(lambda: "removing member %s" % gone.name in leader.log_since_start(), 10,
                   "the leader to start removing %s" % gone.name)
        joiner = threading.Thread(target=ask, args=(
            "join", lambda: add_member(leader, fresh)), daemon=True)
        joiner.start()
        wait_until(lambda: "join" in answers or "join of %s waits" % fresh.name
                   in leader.log_since_start(), 10, "the leader to take in the join")
        assert "join" not in answers, answers["join"]
    remover.join(60)
    joiner.join(60)
    print(answers)
    assert answers["remove"].status == 200, answers
    assert answers["join"].status == 200, answers
    members = [leader] + [n for n in others if n is not gone] + [fresh]
    wait_members(members, cluster.wait_converged(members))


def test_remove_the_leader_itself(cluster):
    """DELETE /v1/cluster/members/<leader> sent to the leader answers 200
    {"removed": L}: the other two elect a new leader among themselves, list only
    themselves, and writes go on through both; the old leader process keeps
    running.  Removing one of the two then leaves a single voter, and removing
    that last voter is refused with 409 while it still takes writes."""
    cluster.start_nodes(3)
    old, rest = leader_and_followers(cluster)
    put_ok(old, "ops/before", b"1")
    r = remove_member(old, old.name)
    assert r.status == 200 and r.json == {"removed": old.name}, \
        "removing the leader %s through itself -> %r" % (old.name, r)
    new = cluster.wait_converged(rest)
    assert new is not old
    wait_members(rest, new)
    for n in rest:
        put_ok(n, "ops/after-%s" % n.name, n.name)
    for n in rest:
        for m in rest:
            assert v1_get(n, "ops/after-%s" % m.name).body == m.name.encode()
        assert v1_get(n, "ops/before").body == b"1"
    old.check_not_dead()

    follower = next(n for n in rest if n is not new)
    r = remove_member(new, follower.name)
    assert r.status == 200 and r.json == {"removed": follower.name}, r
    assert cluster.wait_converged([new]) is new
    r = remove_member(new, new.name)
    assert_json_error(r, 409, "removing the last voter")
    assert cluster.wait_converged([new]) is new
    put_ok(new, "ops/alone", b"still writable")
    old.check_not_dead()
    follower.check_not_dead()
