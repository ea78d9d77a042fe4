"""Read consistency (docs/api.md, "Consistency of reads").

A linearizable read reflects every write acknowledged before it started: a
node cut off from the majority must refuse it (503/504) or keep it waiting,
never answer from its possibly stale store; a stale read answers at once from
the local store.  SIGSTOP stands in for a partition: a stopped process keeps
its sockets but answers nothing.
"""

import base64
import threading
import time

import pytest

from harness import (HttpClient, assert_json_error, header_int, kv_path, leader_and_followers,
                     paused, put_ok, quote_key, request_once, requests_queued, scaled, v1_get,
                     v1_list, wait_until)

LINEARIZABLE_DEADLINE = 2.0   # s (scaled): how long a client waits for a refused read
AT_ONCE = 1.0                 # s (scaled): a stale read on a cut-off node answers within this


def consistency_of(r):
    return (r.header("X-Raftkv-Consistency") or "").strip().lower()


def start_linearizable_reads(node, key, deadline=LINEARIZABLE_DEADLINE):
    """Start, each in its own thread and connection, the linearizable reads of
    `key` that `node` must not answer from its own store.  Returns a function
    that waits for them and gives [(what, Response | "timeout" if the
    client's `deadline` (scaled) passed | the OSError)]."""
    q = quote_key(key)
    paths = [("GET /v1/kv (default)", "/v1/kv/" + q),
             ("GET /v1/kv?consistency=linearizable", "/v1/kv/%s?consistency=linearizable" % q),
             ("GET /v1/kv?format=json", "/v1/kv/%s?format=json" % q),
             ("GET /v1/kv?prefix (list)", "/v1/kv?prefix=" + q),
             ("GET /get?consistency=linearizable", "/get?key=%s&consistency=linearizable" % q)]
    results = [None] * len(paths)

    def read(i, path):
        try:
            results[i] = request_once(node.http_addr, "GET", path, timeout=deadline)
        except TimeoutError:
            results[i] = "timeout"
        except OSError as e:
            results[i] = e

    threads = [threading.Thread(target=read, args=(i, p), daemon=True)
               for i, (_, p) in enumerate(paths)]
    for t in threads:
        t.start()

    def finish():
        for t in threads:
            t.join(scaled(deadline) + 5)
        return [(what, results[i]) for i, (what, _) in enumerate(paths)]
    return finish


def check_refused(outcomes, node, stale_values):
    """Each outcome is a 503 (with Retry-After) or 504 JSON error, or the client's
    deadline passed; a 200 -- whatever its value -- is a read the node could not
    have confirmed with a majority."""
    problems = []
    for what, r in outcomes:
        if r == "timeout":
            continue
        if r is None or isinstance(r, Exception):
            problems.append("%s on %s: no answer (%r)" % (what, node.name, r))
            continue
        if r.status == 200:
            stale = any(v in r.body for v in stale_values)
            problems.append("%s on the cut-off %s answered 200 %s: %r" % (
                what, node.name, "with STALE data" if stale else "without confirming with a "
                "majority", r))
            continue
        try:
            assert_json_error(r, (503, 504), what)
            if r.status == 503:
                assert r.header("Retry-After"), "%s: 503 without Retry-After" % what
        except AssertionError as e:
            problems.append("%s on %s: %s" % (what, node.name, e))
    assert not problems, "\n  ".join(problems)


def check_stale_reads_at_once(node, key, allowed, stale_index_below=None):
    """Stale reads on `node` (v1 and the reference /get) answer within AT_ONCE with
    one of the `allowed` values and X-Raftkv-Consistency: stale."""
    started = time.monotonic()
    r = v1_get(node, key, consistency="stale", timeout=AT_ONCE * 5)
    took = time.monotonic() - started
    assert r.status == 200, "stale read on %s -> %r" % (node.name, r)
    assert took < scaled(AT_ONCE), "stale read on %s took %.2f s" % (node.name, took)
    assert r.body in allowed, "stale read on %s gave %r, want one of %s" % (node.name, r.body,
                                                                           allowed)
    assert consistency_of(r) == "stale", "X-Raftkv-Consistency %r" % consistency_of(r)
    index = header_int(r, "X-Raftkv-Index")
    if stale_index_below is not None and r.body == allowed[0]:
        assert index < stale_index_below, \
            "old value served with X-Raftkv-Index %d >= %d, the index of the newer write" % (
                index, stale_index_below)
    started = time.monotonic()
    r = node.request("GET", "/get?key=" + quote_key(key), timeout=AT_ONCE * 5)
    took = time.monotonic() - started
    assert r.status == 200 and (r.json or {}).get("data", "").encode() in allowed, \
        "/get on %s -> %r" % (node.name, r)
    assert took < scaled(AT_ONCE), "/get on %s took %.2f s" % (node.name, took)
    return r


def check_all_read(nodes, key, value):
    for n in nodes:
        r = v1_get(n, key)
        assert r.status == 200 and r.body == value, \
            "linearizable read on %s after the partition healed: %r, want %r" % (n.name, r, value)


def test_cut_off_follower_refuses_linearizable_reads(cluster):
    """k=v1 everywhere; follower F1 is paused while k=v2 commits on the leader and
    F2; then the leader and F2 are paused and F1 continued, alone.  Linearizable
    reads on F1 (GET /v1/kv default, explicit, ?format=json, a listing, /get with
    consistency=linearizable) are refused with 503/504 or keep waiting -- none
    answers 200 -- while, meanwhile, stale reads on F1 answer at once with
    X-Raftkv-Consistency: stale (v1 at an index below v2's, or v2 if F1 had it
    buffered).  Once everyone continues, every node reads v2 linearizably."""
    nodes = cluster.start_nodes(3)
    leader, (f1, f2) = leader_and_followers(cluster)
    key = "cons/k"
    put_ok(leader, key, b"v1")
    wait_until(lambda: v1_get(f1, key, consistency="stale").body == b"v1", 10,
               "%s to apply v1" % f1.name)
    with paused(f1) as p_f1:
        v2 = put_ok(leader, key, b"v2")
        with paused(leader, f2):
            p_f1.resume(f1)
            finish = start_linearizable_reads(f1, key)
            check_stale_reads_at_once(f1, key, [b"v1", b"v2"], stale_index_below=v2["index"])
            outcomes = finish()
            check_stale_reads_at_once(f1, key, [b"v1", b"v2"], stale_index_below=v2["index"])
            print("outcomes on the cut-off follower: %s" % outcomes)
            check_refused(outcomes, f1, [b"v1"])
    cluster.wait_converged(nodes)
    check_all_read(nodes, key, b"v2")


def test_deposed_leader_refuses_linearizable_reads(cluster):
    """k=v1 everywhere; the leader L is paused, the two others elect a new leader
    and commit k=v2; then they are paused and L continued, alone (it may still
    believe it leads).  Linearizable reads on L are refused with 503/504 or keep
    waiting -- none answers 200, in particular none answers the stale v1 -- while
    stale reads on L answer at once with X-Raftkv-Consistency: stale.  Once
    everyone continues, every node reads v2."""
    nodes = cluster.start_nodes(3)
    old, followers = leader_and_followers(cluster)
    key = "cons/k"
    put_ok(old, key, b"v1")
    term = old.status()["term"]
    with paused(old) as p_old:
        new = cluster.wait_leader(followers, timeout=30, min_term=term)
        v2 = put_ok(new, key, b"v2")
        with paused(*followers):
            p_old.resume(old)
            print("the old leader after it continued: %s" % {
                k: v for k, v in old.status().items() if k in ("role", "term", "leader")})
            finish = start_linearizable_reads(old, key)
            check_stale_reads_at_once(old, key, [b"v1", b"v2"], stale_index_below=v2["index"])
            outcomes = finish()
            check_stale_reads_at_once(old, key, [b"v1", b"v2"], stale_index_below=v2["index"])
            print("outcomes on the deposed leader: %s" % outcomes)
            check_refused(outcomes, old, [b"v1"])
    cluster.wait_converged(nodes)
    check_all_read(nodes, key, b"v2")


def test_read_after_write_elsewhere_and_headers(cluster):
    """30 rounds: a write through one node, then at once a read through another:
    the default /v1 read, ?consistency=linearizable, a listing and the reference
    /get?consistency=linearizable all see that write, with X-Raftkv-Consistency:
    linearizable and X-Raftkv-Index >= the write's index (the listing's "index"
    too).  Stale reads (?consistency=stale, and the reference /get without
    consistency) carry X-Raftkv-Consistency: stale and an X-Raftkv-Index no
    greater than the node's applied_index, and converge to the last value."""
    nodes = cluster.start_nodes(3)
    leader_and_followers(cluster)
    key = "cons/rw"
    for i in range(30):
        writer, reader = nodes[i % 3], nodes[(i + 1) % 3]
        value = ("round-%d" % i).encode()
        w = put_ok(writer, key, value)
        for what, r in (("default", v1_get(reader, key)),
                        ("linearizable", v1_get(reader, key, consistency="linearizable")),
                        ("/get linearizable", reader.request(
                            "GET", "/get?key=%s&consistency=linearizable" % quote_key(key)))):
            assert r.status == 200, "round %d, %s read on %s: %r" % (i, what, reader.name, r)
            got = r.json["data"].encode() if what.startswith("/get") else r.body
            assert got == value, "round %d: %s read on %s after a write on %s gave %r, want %r" % (
                i, what, reader.name, writer.name, got, value)
            assert consistency_of(r) == "linearizable", \
                "%s read: X-Raftkv-Consistency %r" % (what, r.header("X-Raftkv-Consistency"))
            assert header_int(r, "X-Raftkv-Index") >= w["index"], \
                "%s read: X-Raftkv-Index %s < write index %d" % (
                    what, r.header("X-Raftkv-Index"), w["index"])
        r = v1_list(reader, prefix=key)
        assert r.status == 200 and [it["key"] for it in r.json["items"]] == [key], r
        assert r.json["index"] >= w["index"], r.json

    last = ("round-%d" % 29).encode()
    for n in nodes:
        r = v1_get(n, key, consistency="stale")
        assert r.status == 200 and consistency_of(r) == "stale", (n.name, r)
        assert header_int(r, "X-Raftkv-Index") <= n.status()["applied_index"], r
        r = n.request("GET", "/get?key=" + quote_key(key))
        assert r.status == 200 and consistency_of(r) == "stale", \
            "/get on %s: X-Raftkv-Consistency %r" % (n.name, r.header("X-Raftkv-Consistency"))
        header_int(r, "X-Raftkv-Index")
        wait_until(lambda n=n: v1_get(n, key, consistency="stale").body == last, 10,
                   "%s's stale read to reach the last write" % n.name)


def metric(node, name):
    for line in node.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("%s not in %s's /metrics" % (name, node.name))


@pytest.mark.parametrize("confirm", ["voters", "log"])
def test_reads_during_writes_see_every_acknowledged_write(cluster, confirm):
    """Three writers count up, each its own key, on the leader; meanwhile three
    readers read those keys, linearizably, from the leader and the followers.
    A read must return at least the last count acknowledged to its writer
    before the read started (and never a count not yet sent).  With
    --read-confirm voters (the default) the leader confirms reads by rounds of
    questions to the voters; with --read-confirm log they ride on the entries
    of the concurrent writes or, between writes, on no-op entries, and no
    round is asked.  Either way all reads are served, the followers' from
    their own stores once the leader gave them a read index."""
    nodes = cluster.start_nodes(3, args=("--read-confirm", confirm))
    leader, followers = leader_and_followers(cluster)
    writers, readers, rounds = 3, 3, 150
    acked = [0] * writers   # last count acknowledged to writer i
    sent = [0] * writers    # last count writer i has sent
    lock = threading.Lock()
    stop = threading.Event()
    failures = []
    reads = [0] * readers
    noops_before = metric(leader, "raftkv_read_barriers_total")
    lin_before = sum(metric(n, "raftkv_linearizable_reads_total") for n in nodes)
    rounds_before = metric(leader, "raftkv_read_rounds_total")

    def write(i):
        c = HttpClient(leader.http_addr)
        try:
            for n in range(1, rounds + 1):
                with lock:
                    sent[i] = n
                r = c.request("PUT", kv_path("ride/%d" % i), body=b"%d" % n)
                if r.status != 200:
                    failures.append("writer %d, count %d: %r" % (i, n, r))
                    return
                with lock:
                    acked[i] = n
        finally:
            c.close()

    def read(j):
        node = [leader, *followers][j % 3]
        c = HttpClient(node.http_addr)
        try:
            while not stop.is_set() and not failures:
                i = reads[j] % writers
                with lock:
                    floor = acked[i]
                r = c.request("GET", kv_path("ride/%d" % i))
                with lock:
                    ceiling = sent[i]
                got = int(r.body) if r.status == 200 else (0 if r.status == 404 else None)
                if got is None or not floor <= got <= ceiling:
                    failures.append("reader %d on %s, key ride/%d: %r (status %d); "
                                    "acked %d before the read, sent %d after" % (
                                        j, node.name, i, r.body, r.status, floor, ceiling))
                    return
                reads[j] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(writers)]
    threads += [threading.Thread(target=read, args=(j,), daemon=True) for j in range(readers)]
    for t in threads:
        t.start()
    for t in threads[:writers]:
        t.join(scaled(60))
    # A little more reading once the writes are done: only no-ops carry these.
    wait_until(lambda: failures or all(r >= 20 for r in reads), 30, "the readers to read")
    before_quiet = list(reads)
    wait_until(lambda: failures or all(r >= b + 10 for r, b in zip(reads, before_quiet)), 30,
               "the readers to read after the writes ended")
    stop.set()
    for t in threads[writers:]:
        t.join(scaled(30))
    assert not failures, failures[:5]
    assert not any(t.is_alive() for t in threads), "a client thread hangs"
    assert acked == [rounds] * writers
    lin = sum(metric(n, "raftkv_linearizable_reads_total") for n in nodes) - lin_before
    noops = metric(leader, "raftkv_read_barriers_total") - noops_before
    asked = metric(leader, "raftkv_read_rounds_total") - rounds_before
    given = metric(leader, "raftkv_read_indexes_given_total")
    print("reads per reader %s; %d linearizable reads served; on the leader %d no-op "
          "entries, %d rounds, %d read indexes given" % (reads, lin, noops, asked, given))
    assert lin >= sum(reads) - readers
    assert given > 0
    for f in followers:
        assert metric(f, "raftkv_follower_read_relays_total") == 0, f.name
    if confirm == "log":
        assert 0 < noops and asked == 0
    else:
        assert 0 < asked


def confirm_path(cluster_id, term, leader_raft_id, voter_raft_id):
    return "/v1/internal/confirm?cluster=%s&term=%d&leader=%s&voter=%s" % (
        cluster_id, term, leader_raft_id, voter_raft_id)


def test_confirm_endpoint(cluster):
    """GET /v1/internal/confirm?cluster=C&term=T&leader=L&voter=V is the
    question a leader asks the voters before linearizable reads.  A follower
    says 200 {"term": T} when it is voter V of cluster C and follows leader L
    in term T, and 409 with its own term when any of the four is not so: a yes
    meant for another node or another cluster must not count.  The leader,
    following nobody, says 409.  A missing or malformed parameter is 400,
    another method 405."""
    cluster.start_nodes(3)
    leader, followers = leader_and_followers(cluster)
    st = leader.status()
    cid, term, lid = st["cluster_id"], st["term"], st["raft_id"]
    assert lid.isdigit(), st
    other_cid = "%016x" % (int(cid, 16) ^ 1)
    for f in followers:
        fid = f.status()["raft_id"]
        r = f.request("GET", confirm_path(cid, term, lid, fid))
        assert r.status == 200 and r.json == {"term": term}, "%s: %r" % (f.name, r)
        other = next(g for g in followers if g is not f).status()["raft_id"]
        for c, t, who, voter in ((cid, term + 1, lid, fid), (cid, term - 1, lid, fid),
                                 (cid, term, fid, fid), (cid, term, lid, other),
                                 (cid, term, lid, lid), (other_cid, term, lid, fid)):
            r = f.request("GET", confirm_path(c, t, who, voter))
            assert_json_error(r, (409,), "%s asked for cluster %s, term %d, leader %s, voter %s"
                              % (f.name, c, t, who, voter))
            assert r.json["term"] == term, r.json
    r = leader.request("GET", confirm_path(cid, term, lid, lid))
    assert_json_error(r, (409,), "the leader asked about itself")
    f = followers[0]
    good = dict(cluster=cid, term=str(term), leader=lid, voter=f.status()["raft_id"])
    bad = [dict(good, **{k: None}) for k in good]            # each one missing
    bad += [dict(good, term="x"), dict(good, leader="-1"), dict(good, term=""),
            dict(good, voter="123456789012345678901234"), dict(good, cluster="0x" + cid[2:]),
            dict(good, cluster="1" + cid), dict(good, cluster="g" + cid[1:])]
    for params in bad:
        query = "&".join("%s=%s" % kv for kv in params.items() if kv[1] is not None)
        assert_json_error(f.request("GET", "/v1/internal/confirm?" + query), (400,), query)
    r = f.request("POST", confirm_path(cid, term, lid, good["voter"]), body=b"")
    assert_json_error(r, (405,), "POST")
    assert "GET" in (r.header("Allow") or "")


def test_reads_confirmed_with_a_follower_paused(cluster):
    """Three voters, one follower paused.  The leader and the other follower
    are a majority, so rounds still confirm linearizable reads: 30 times, a
    write and then a read on the leader that sees it, each read answered
    within a second, and no round fails (the paused voter's silence costs
    nothing while the other answers)."""
    cluster.start_nodes(3)
    leader, (f1, f2) = leader_and_followers(cluster)
    key = "cons/paused"
    put_ok(leader, key, b"first")
    assert v1_get(leader, key).status == 200  # a round, now that the term has an entry
    rounds_before = metric(leader, "raftkv_read_rounds_total")
    failed_before = metric(leader, "raftkv_read_rounds_failed_total")
    with paused(f1):
        for i in range(30):
            value = b"value-%d" % i
            put_ok(leader, key, value)
            started = time.monotonic()
            r = v1_get(leader, key, timeout=10)
            took = time.monotonic() - started
            assert r.status == 200 and r.body == value, "read %d: %r" % (i, r)
            assert took < scaled(1.0), "read %d took %.2f s" % (i, took)
        rounds = metric(leader, "raftkv_read_rounds_total") - rounds_before
        failed = metric(leader, "raftkv_read_rounds_failed_total") - failed_before
    print("with %s paused: %d rounds, %d failed" % (f1.name, rounds, failed))
    assert rounds >= 30 and failed == 0


def test_deposed_leader_with_followers_up_never_reads_old_value(cluster):
    """k=old everywhere; the leader L is paused, the two others elect a new
    leader and commit k=new.  Linearizable reads are sent to L while it is
    still paused, so that it finds them the moment it continues, before or
    after it hears of the newer term.  Each read answers new (L stepped down
    and forwarded it) or a 503/504 error -- never old: the voters L asks are
    in a newer term and say no.  With the others up, L hears of the newer
    term within a heartbeat, so a read still waiting after 10 s is a read
    that would wait forever."""
    nodes = cluster.start_nodes(3)
    old, followers = leader_and_followers(cluster)
    key = "cons/deposed"
    put_ok(old, key, b"old-value")
    assert v1_get(old, key).body == b"old-value"  # L reads by rounds from here on
    term = old.status()["term"]
    with paused(old) as p_old:
        new = cluster.wait_leader(followers, timeout=30, min_term=term)
        put_ok(new, key, b"new-value")
        port = int(old.http_addr.rsplit(":", 1)[1])
        finish = start_linearizable_reads(old, key, deadline=10.0)
        wait_until(lambda: requests_queued(port) >= 5, 10,
                   "the reads to wait in the paused leader's sockets")
        p_old.resume(old)
        outcomes = finish()
    print("outcomes on the deposed leader: %s" % outcomes)
    problems = []
    stale = (b"old-value", base64.b64encode(b"old-value"))
    fresh = (b"new-value", base64.b64encode(b"new-value"))
    for what, r in outcomes:
        if r is None or r == "timeout" or isinstance(r, Exception):
            problems.append("%s: no answer (%r)" % (what, r))
        elif r.status == 200:
            if any(v in r.body for v in stale) or not any(v in r.body for v in fresh):
                problems.append("%s answered 200 without the new value: %r" % (what, r))
        else:
            try:
                assert_json_error(r, (503, 504), what)
            except AssertionError as e:
                problems.append(str(e))
    assert not problems, "\n  ".join(problems)
    cluster.wait_converged(nodes)
    check_all_read(nodes, key, b"new-value")
