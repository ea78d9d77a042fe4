"""Linearizable reads served by followers (src/followread.h; docs/api.md,
"Consistency of reads").  A follower asks the leader for a read index,
waits until its own store has applied it, and answers from its store; the
reads that arrive meanwhile share one question.  When no read index can be
had, the read is relayed to the leader as before; --follower-reads relay
relays every one."""

import http.client

from harness import (assert_json_error, header_int, kv_path, leader_and_followers, paused, put_ok,
                     request_once, requests_queued, split_addr, v1_get, wait_until)

FORWARDED = "raftkv_forwarded_requests_total"
ASKED = "raftkv_follower_read_index_requests_total"
RELAYED = "raftkv_follower_read_relays_total"
GIVEN = "raftkv_read_indexes_given_total"


def metric(node, name):
    for line in node.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError("%s not in %s's /metrics" % (name, node.name))


def counters(node):
    return {name: metric(node, name) for name in (FORWARDED, ASKED, RELAYED, GIVEN)}


def moved(node, before):
    after = counters(node)
    return {name: after[name] - before[name] for name in before}


def test_a_follower_reads_what_the_leader_just_acknowledged(cluster):
    """60 rounds: a write on the leader, then at once a linearizable read of
    that key on each follower.  Every read gives the value just written,
    marked linearizable, at an X-Raftkv-Index no lower than the write's.  No
    read was relayed: each follower asked the leader for one read index per
    read (they came one at a time) and served it from its own store, which
    had not always applied the write when the leader acknowledged it."""
    cluster.start_nodes(3)
    leader, followers = leader_and_followers(cluster)
    before = {f.name: counters(f) for f in followers}
    given_before = metric(leader, GIVEN)
    rounds = 60
    for i in range(rounds):
        value = b"round-%d" % i
        w = put_ok(leader, "fr/k", value)
        for f in followers:
            r = v1_get(f, "fr/k")
            assert r.status == 200 and r.body == value, \
                "round %d: read on %s after the leader acknowledged %r -> %r" % (
                    i, f.name, value, r)
            assert (r.header("X-Raftkv-Consistency") or "") == "linearizable", r
            assert header_int(r, "X-Raftkv-Index") >= w["index"], (w, r)
    for f in followers:
        d = moved(f, before[f.name])
        print("%s: %s" % (f.name, d))
        assert d[FORWARDED] == 0 and d[RELAYED] == 0, (f.name, d)
        assert d[ASKED] == rounds, (f.name, d)
    assert metric(leader, GIVEN) - given_before == 2 * rounds


def test_reads_that_arrive_together_share_a_read_index(cluster):
    """The leader is paused (the election timeout is long enough that nobody
    takes over) while 16 clients send a linearizable read of one key to the
    same follower.  At most FOLLOWREAD_DEPTH (2) questions to the leader are
    out at a time, so the other reads wait; once the leader continues and
    answers, they go out together as one question.  Every client gets the
    value, and the follower asked at most 3 times for its 16 reads."""
    cluster.start_nodes(3, args=("--election-timeout", "5000"))
    leader, (f, _) = leader_and_followers(cluster)
    put_ok(leader, "fr/shared", b"shared-value")
    assert v1_get(f, "fr/shared").body == b"shared-value"
    before = counters(f)
    given_before = metric(leader, GIVEN)
    host, port = split_addr(f.http_addr)
    conns = [http.client.HTTPConnection(host, port, timeout=30) for _ in range(16)]
    try:
        with paused(leader):
            for c in conns:
                c.request("GET", kv_path("fr/shared"))
            wait_until(lambda: requests_queued(port) == 0 and moved(f, before)[ASKED] >= 1, 10,
                       "the follower to take in the 16 reads")
            held = moved(f, before)[ASKED]
        answers = []
        for c in conns:
            r = c.getresponse()
            answers.append((r.status, r.read()))
    finally:
        for c in conns:
            c.close()
    assert answers == [(200, b"shared-value")] * 16, answers
    d = moved(f, before)
    print("questions while the leader was paused: %d; in all: %s" % (held, d))
    assert held <= 2, held
    assert d[FORWARDED] == 0 and d[RELAYED] == 0, d
    assert 1 <= d[ASKED] <= 3, d
    assert metric(leader, GIVEN) - given_before == d[ASKED]


def test_a_follower_elected_while_its_reads_wait_serves_them(cluster):
    """The leader is paused while each follower holds a linearizable read,
    its question for a read index out to the paused leader.  One follower
    is elected; when their questions time out, the new leader serves its
    read from its own read index, and the other follower relays its read to
    the new leader.  Both clients get the value.  (The new leader used to
    relay its read too, found that the leader was itself, and answered 503
    "no leader is known".)  A question waits an election timeout plus a
    second; with a 300 ms election timeout the election is over well
    before that."""
    cluster.start_nodes(3, args=("--election-timeout", "300", "--heartbeat-timeout", "50"))
    old, followers = leader_and_followers(cluster)
    put_ok(old, "fr/elected", b"before-the-election")
    for f in followers:
        wait_until(lambda f=f: v1_get(f, "fr/elected").status == 200, 10,
                   "%s to read the key" % f.name)
    before = {f.name: counters(f) for f in followers}
    conns = {}
    try:
        with paused(old):
            for f in followers:
                host, port = split_addr(f.http_addr)
                conns[f.name] = http.client.HTTPConnection(host, port, timeout=30)
                conns[f.name].request("GET", kv_path("fr/elected"))
            for f in followers:
                wait_until(lambda f=f: moved(f, before[f.name])[ASKED] >= 1, 10,
                           "%s to ask the paused leader for a read index" % f.name)
            new = wait_until(lambda: next((f for f in followers
                                           if f.status().get("role") == "leader"), None),
                             30, "a follower to be elected")
            answers = {}
            for name, c in conns.items():
                r = c.getresponse()
                answers[name] = (r.status, r.read())
    finally:
        for c in conns.values():
            c.close()
    print("new leader %s; answers %s" % (new.name, answers))
    assert answers == {f.name: (200, b"before-the-election") for f in followers}, answers
    other = next(f for f in followers if f is not new)
    assert moved(new, before[new.name])[RELAYED] == 0, counters(new)
    assert moved(other, before[other.name])[RELAYED] == 1, counters(other)


def test_follower_reads_relay_keeps_the_relay(cluster):
    """With --follower-reads relay a follower relays each linearizable read
    whole to the leader and asks for no read index; the answers are the
    same.  A stale read is still served by the follower itself."""
    cluster.start_nodes(3, args=("--follower-reads", "relay"))
    leader, followers = leader_and_followers(cluster)
    w = put_ok(leader, "fr/relay", b"relayed")
    for f in followers:
        wait_until(lambda: v1_get(f, "fr/relay", consistency="stale").status == 200, 10,
                   "%s to apply the write" % f.name)
        before = counters(f)
        for _ in range(5):
            r = v1_get(f, "fr/relay")
            assert r.status == 200 and r.body == b"relayed", r
            assert header_int(r, "X-Raftkv-Index") >= w["index"], r
        r = v1_get(f, "fr/relay", consistency="stale")
        assert r.status == 200 and r.header("X-Raftkv-Consistency") == "stale", r
        d = moved(f, before)
        assert d[FORWARDED] == 5 and d[ASKED] == 0, (f.name, d)


def test_read_index_endpoint(cluster):
    """GET /v1/internal/readindex?cluster=C on the leader gives {"index": N}
    with N at least the index of the last acknowledged write, and appends
    nothing to the log.  Another cluster id is a 409, a missing or malformed
    one a 400, another method a 405.  A follower answers a question marked
    as relayed with 503 and Retry-After (it does not relay it a second
    time); an unmarked one it relays to the leader."""
    cluster.start_nodes(3)
    leader, (f, _) = leader_and_followers(cluster)
    w = put_ok(leader, "fr/endpoint", b"x")
    cid = leader.status()["cluster_id"]
    path = "/v1/internal/readindex?cluster=" + cid
    wait_until(lambda: leader.status()["commit_index"] >= w["index"], 10, "the write to commit")
    last = leader.status()["last_log_index"]
    r = request_once(leader.http_addr, "GET", path)
    assert r.status == 200 and r.json.get("index", -1) >= w["index"], r
    assert set(r.json) == {"index"}, r
    assert r.json["index"] <= leader.status()["commit_index"], r
    assert leader.status()["last_log_index"] == last, "a read index appended an entry"

    other = "%016x" % (int(cid, 16) ^ 1)
    assert_json_error(request_once(leader.http_addr, "GET",
                                   "/v1/internal/readindex?cluster=" + other), 409,
                      "another cluster's id")
    for bad in ("", "?cluster=", "?cluster=xyz", "?cluster=" + "1" * 17):
        assert_json_error(request_once(leader.http_addr, "GET", "/v1/internal/readindex" + bad),
                          400, "readindex%s" % bad)
    r = request_once(leader.http_addr, "POST", path, body=b"")
    assert_json_error(r, 405, "POST")

    r = request_once(f.http_addr, "GET", path, headers={"X-Raftkv-Forwarded": "1"})
    assert_json_error(r, 503, "a relayed question on a follower")
    assert r.header("Retry-After"), r
    r = request_once(f.http_addr, "GET", path)
    assert r.status == 200 and r.json.get("index", -1) >= w["index"], r
