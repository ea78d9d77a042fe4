"""The v1 key-value API (docs/api.md) on one shared 3-node cluster.

Every story writes under its own key prefix, so the stories are independent
of each other's data; none of them stops a node or changes the membership.
Reads without ?consistency are linearizable (the /v1 default), so a read on
any node right after an acknowledged write must see it.
"""

import base64
import os
import threading

import pytest

from harness import (assert_json_error, attach_cluster, get_json, get_raw, is_int,
                     json_error_problem, kv_path, leader_and_followers, meta, put_ok,
                     query_string, quote_key, request_once, scaled, shared_cluster_fixture,
                     v1_delete, v1_get, v1_list, v1_put, wait_until)

MAX_KEY = 4096          # the defaults of --max-key-size / --max-value-size
MAX_VALUE = 1048576

shared = shared_cluster_fixture(3)


@pytest.fixture
def kv(shared, request):
    return attach_cluster(request, shared)


# --------------------------------------------------------------------------
# helpers


def delete_ok(node, key, **query):
    r = v1_delete(node, key, **query)
    assert r.status == 200, "%s: DELETE %s%s -> %r" % (node.name, key[:80], query_string(query), r)
    body = r.json
    assert isinstance(body, dict) and body.get("key") == key and is_int(body.get("index")) \
        and isinstance(body.get("deleted"), bool), "DELETE %s: %r" % (key[:80], r)
    return body


def assert_missing(node, key, **query):
    r = v1_get(node, key, **query)
    assert r.status == 404, "%s: GET %s%s of a missing key -> %r" % (
        node.name, key[:80], query_string(query), r)
    body = assert_json_error(r, 404, "GET of a missing key")
    assert body.get("error") == "key not found" and body.get("key") == key, \
        "404 body %r (want {\"error\": \"key not found\", \"key\": %r})" % (body, key)


# --------------------------------------------------------------------------
# PUT / GET / DELETE


def test_put_get_metadata_via_leader_and_follower(kv):
    """A key written with PUT through the leader, and another through a follower
    (forwarded), reads back from every node with the raw value, Content-Type
    application/octet-stream and X-Raftkv-Create-Index/Mod-Index/Version headers.
    The PUT answers the Raft index it committed at, which is also mod_index;
    create_index stays at the first write while mod_index follows each write and
    version counts the writes (1, 2, 3, including a write of an empty value
    through a third node); indexes of successive writes grow and the leader has
    applied (and committed) at least the index of every acknowledged write."""
    leader, followers = leader_and_followers(kv)
    for label, entry, other in (("leader", leader, followers[0]),
                                ("follower", followers[0], followers[1])):
        key = "meta/via-" + label
        first = put_ok(entry, key, b"one")
        assert first["create_index"] == first["index"] and first["version"] == 1, first
        for reader in kv.nodes:
            value, m = get_raw(reader, key)
            assert value == b"one", "%s read %r" % (reader.name, value)
            assert m == {"create_index": first["index"], "mod_index": first["index"],
                         "version": 1}, "%s: metadata %s after the first PUT %s" % (
                             reader.name, m, first)

        second = put_ok(entry, key, b"two")
        assert second["index"] > first["index"], (first, second)
        assert meta(second) == {"create_index": first["index"], "mod_index": second["index"],
                                "version": 2}, second

        third = put_ok(other, key, b"")
        assert third["index"] > second["index"], (second, third)
        assert meta(third) == {"create_index": first["index"], "mod_index": third["index"],
                               "version": 3}, third
        for reader in kv.nodes:
            value, m = get_raw(reader, key)
            assert value == b"", "%s read %r after writing an empty value" % (reader.name, value)
            assert m == meta(third), "%s: metadata %s, want %s" % (reader.name, m, meta(third))
            j = get_json(reader, key)
            assert j["value"] == b"" and meta(j) == meta(third), j
        s = leader.status()
        assert s["applied_index"] >= third["index"] and s["commit_index"] >= third["index"], \
            "leader status %s after a write acknowledged at index %d" % (s, third["index"])


def test_binary_values_and_format_json(kv):
    """Values are arbitrary bytes: all 256 byte values (and their reverse, and a
    lone NUL) written through a follower read back byte for byte from every node,
    raw and as base64 in ?format=json (with the key and the PUT's metadata); a
    value of exactly --max-value-size (1 MiB of random bytes) round-trips too."""
    leader, followers = leader_and_followers(kv)
    values = {
        "bin/all-bytes": bytes(range(256)),
        "bin/reversed": bytes(reversed(range(256))) * 3,
        "bin/nul": b"\x00",
        "bin/crlf": b"\r\n\r\nHTTP/1.1 200 OK\r\n",
        "bin/max": os.urandom(MAX_VALUE),
    }
    written = {}
    for i, (key, value) in enumerate(values.items()):
        written[key] = put_ok(followers[i % 2], key, value)
    for key, value in values.items():
        for reader in kv.nodes:
            got, m = get_raw(reader, key)
            assert got == value, "%s: %s read back %d bytes differing from the %d written" % (
                reader.name, key, len(got), len(value))
            assert m == meta(written[key]), (key, m, written[key])
            j = get_json(reader, key)
            assert j["value"] == value and meta(j) == meta(written[key]), \
                "%s: %s?format=json differs" % (reader.name, key)


def test_percent_encoded_keys(kv):
    """Keys travel percent-encoded in the path: "/" (as %2F, as lower-case %2f,
    and unencoded), spaces, "%", "?", "#", "+", ";", a tab, dots, UTF-8 text and
    emoji, and keys of exactly --max-key-size bytes (ASCII, and 2-byte UTF-8
    characters) -- including two keys of 4096 bytes that differ only in their last
    byte -- each name exactly one key: written through one node, read through
    another, named back decoded in ?format=json, and the same key for the
    reference /get (one key space)."""
    leader, followers = leader_and_followers(kv)
    keys = ["pct/a/b", "pct/dir/sub/leaf/", "pct/with space", "pct/  ", "pct/100%",
            "pct/q?x=1&y=2#frag", "pct/plus+sign", "pct/semi;colon,comma", "pct/tab\tkey",
            "pct/../up", "pct/./x/../y", "pct/ünïcødé/ключ/键/🔑",
            "pct/" + "k" * (MAX_KEY - 5) + "a", "pct/" + "k" * (MAX_KEY - 5) + "b",
            "pct/" + "é" * ((MAX_KEY - 4) // 2)]
    assert all(len(k.encode()) <= MAX_KEY for k in keys)
    assert len(keys[-1].encode()) == MAX_KEY and len(keys[-2].encode()) == MAX_KEY
    nodes = kv.nodes
    for i, key in enumerate(keys):
        put_ok(nodes[i % 3], key, "value-%d" % i)
    for i, key in enumerate(keys):
        reader = nodes[(i + 1) % 3]
        got, _m = get_raw(reader, key)
        assert got == ("value-%d" % i).encode(), "%s: key %r read %r" % (reader.name, key[:80], got)
        j = get_json(reader, key)
        assert j["key"] == key and j["value"] == ("value-%d" % i).encode(), j
        assert leader.value(key) == "value-%d" % i, \
            "/get?key=%r on the leader does not see the /v1/kv write" % key[:80]

    # Lower-case hex digits decode the same.
    r = leader.request("GET", "/v1/kv/pct%2fa%2fb")
    assert r.status == 200 and r.body == b"value-0", "GET /v1/kv/pct%%2fa%%2fb -> %r" % r
    # An unencoded "/" is taken literally, also mixed with %2F.
    put_ok_path = followers[0].request("PUT", "/v1/kv/lit/eral/key", body=b"literal")
    assert put_ok_path.status == 200 and (put_ok_path.json or {}).get("key") == "lit/eral/key", \
        "PUT /v1/kv/lit/eral/key -> %r" % put_ok_path
    for path in ("/v1/kv/lit%2Feral%2Fkey", "/v1/kv/lit/eral%2Fkey", "/v1/kv/lit/eral/key"):
        r = leader.request("GET", path)
        assert r.status == 200 and r.body == b"literal", "GET %s -> %r" % (path, r)
    # A key written with /set reads back through /v1/kv.
    assert leader.set("pct/from set", "via-set").status == 200
    got, m = get_raw(followers[1], "pct/from set")
    assert got == b"via-set" and m["version"] == 1, (got, m)


def test_delete_and_missing_keys(kv):
    """DELETE through the leader and through a follower answers 200 {"key", "index",
    "deleted": true} at a new index; afterwards every node answers 404 {"error":
    "key not found", "key": K} (raw, ?format=json, and stale); deleting again
    answers deleted: false; writing the key again starts over (create_index = the
    new index, version 1).  A key never written is 404 on every node."""
    leader, followers = leader_and_followers(kv)
    for label, entry in (("leader", leader), ("follower", followers[0])):
        key = "del/via-" + label
        put_ok(entry, key, b"1")
        put_ok(entry, key, b"2")
        last = put_ok(entry, key, b"3")
        d = delete_ok(entry, key)
        assert d["deleted"] is True and d["index"] > last["index"], d
        for reader in kv.nodes:
            assert_missing(reader, key)
            assert_missing(reader, key, format="json")
        wait_until(lambda: assert_missing(followers[1], key, consistency="stale") or True, 10,
                   "the delete to reach %s's local store" % followers[1].name)
        again = delete_ok(followers[1], key)
        assert again["deleted"] is False, "second DELETE of %s: %r" % (key, again)
        reborn = put_ok(entry, key, b"new")
        assert meta(reborn) == {"create_index": reborn["index"], "mod_index": reborn["index"],
                                "version": 1}, "re-created after a delete: %r" % reborn
        assert get_raw(followers[1], key) == (b"new", meta(reborn))
    for reader in kv.nodes:
        assert_missing(reader, "del/never-written")
        assert_missing(reader, "del/never-written", consistency="stale")
        assert_missing(reader, "del/never-written", format="json")


# --------------------------------------------------------------------------
# CAS


def assert_compare_failed(r, key, current, what):
    """409 {"error": "compare failed", "key": K, "current": {...} | None}."""
    body = assert_json_error(r, 409, what)
    assert body.get("error") == "compare failed", "%s: error %r" % (what, body.get("error"))
    assert body.get("key") == key, "%s: key %r" % (what, body.get("key"))
    assert "current" in body, "%s: no 'current' in %r" % (what, body)
    got = body["current"]
    if current is None:
        assert got is None, "%s: current %r, want null (absent)" % (what, got)
    else:
        assert isinstance(got, dict) and meta(got) == current, \
            "%s: current %r, want %r" % (what, got, current)


def test_cas_put_and_delete(kv):
    """cas=0 creates only: it succeeds on an absent key and then fails with 409
    {"error": "compare failed", "current": metadata}; cas=<mod_index> succeeds and
    a stale cas fails with the current metadata, leaving the value alone; cas on an
    absent key with a non-zero index fails with current: null.  DELETE with a stale
    cas fails (the key stays), with the current mod_index deletes, and on a missing
    key with a non-zero cas fails with current: null.  Through leader and follower."""
    leader, followers = leader_and_followers(kv)
    f = followers[0]
    key = "cas/k"
    created = put_ok(f, key, b"v1", cas=0)
    assert created["version"] == 1, created
    m1 = meta(created)

    r = v1_put(leader, key, b"clobber", cas=0)
    assert_compare_failed(r, key, m1, "PUT cas=0 on an existing key")
    assert get_raw(leader, key) == (b"v1", m1)

    second = put_ok(leader, key, b"v2", cas=created["mod_index"])
    assert second["version"] == 2 and second["create_index"] == created["index"], second
    m2 = meta(second)

    r = v1_put(f, key, b"stale", cas=created["mod_index"])
    assert_compare_failed(r, key, m2, "PUT with a stale cas via a follower")
    r = v1_put(leader, key, b"stale", cas=second["mod_index"] + 1000)
    assert_compare_failed(r, key, m2, "PUT with a cas from the future")
    for n in kv.nodes:
        assert get_raw(n, key) == (b"v2", m2), "%s: failed CAS changed the key" % n.name

    r = v1_put(leader, "cas/absent", b"x", cas=second["index"])
    assert_compare_failed(r, "cas/absent", None, "PUT with a non-zero cas on an absent key")
    assert_missing(leader, "cas/absent")

    r = v1_delete(f, key, cas=created["mod_index"])
    assert_compare_failed(r, key, m2, "DELETE with a stale cas")
    assert get_raw(leader, key) == (b"v2", m2)
    d = delete_ok(f, key, cas=second["mod_index"])
    assert d["deleted"] is True and d["index"] > second["index"], d
    assert_missing(leader, key)
    r = v1_delete(leader, key, cas=second["mod_index"])
    assert_compare_failed(r, key, None, "DELETE with a non-zero cas on a missing key")

    again = put_ok(leader, key, b"v3", cas=0)
    assert meta(again) == {"create_index": again["index"], "mod_index": again["index"],
                           "version": 1}, again


def test_cas_create_race(kv):
    """Eight clients race to create one key with cas=0 through all three nodes at
    once: exactly one gets 200; every other gets 409 naming the winner's metadata;
    the key holds the winner's value."""
    key = "cas/race"
    start = threading.Barrier(8)
    answers = [None] * 8

    def racer(i):
        node = kv.nodes[i % 3]
        start.wait(timeout=scaled(30))
        answers[i] = v1_put(node, key, ("racer-%d" % i).encode(), cas=0)

    threads = [threading.Thread(target=racer, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(60))
    assert all(a is not None for a in answers), "some racers got no answer: %r" % answers
    winners = [i for i, a in enumerate(answers) if a.status == 200]
    assert len(winners) == 1, "answers: %r" % answers
    win = answers[winners[0]].json
    for i, a in enumerate(answers):
        if i != winners[0]:
            assert_compare_failed(a, key, meta(win), "racer %d" % i)
    got, m = get_raw(kv.nodes[0], key)
    assert got == ("racer-%d" % winners[0]).encode() and m == meta(win), (got, m, win)


def _run_clients(fn, n, who):
    """fn(0) .. fn(n - 1) on n threads at once; all must end within 120 s
    (scaled)."""
    threads = [threading.Thread(target=fn, args=(t,), daemon=True) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(120))
    assert not any(t.is_alive() for t in threads), "%s still running after 120 s" % who


def test_cas_counter_16_concurrent_clients(kv):
    """16 clients, spread over the three nodes, each loop (a bounded 12 times):
    read the counter (?format=json) and PUT value+1 with cas=mod_index.  Every
    answer is 200 or 409 (409 always names a newer mod_index).  At the end the
    counter equals the number of 200s, the successful writes wrote exactly the
    values 1..n, each at its own version (2..n+1, one per write since creation)."""
    key = "cas/counter"
    leader, _ = leader_and_followers(kv)
    put_ok(leader, key, b"0", cas=0)
    clients, attempts = 16, 12
    lock = threading.Lock()
    wins = []            # (value written, version answered, index)
    conflicts = []
    unexpected = []
    start = threading.Barrier(clients)

    def client(t):
        node = kv.nodes[t % 3]
        start.wait(timeout=scaled(30))
        for _ in range(attempts):
            r = v1_get(node, key, format="json")
            if r.status != 200:
                with lock:
                    unexpected.append(("GET", node.name, r))
                continue
            body = r.json
            value = int(base64.b64decode(body["value"]))
            cas = body["mod_index"]
            r = v1_put(node, key, str(value + 1), cas=cas)
            with lock:
                if r.status == 200:
                    wins.append((value + 1, r.json["version"], r.json["index"]))
                elif r.status == 409 and isinstance((r.json or {}).get("current"), dict) \
                        and r.json["current"]["mod_index"] > cas:
                    conflicts.append(r.json["current"]["mod_index"])
                else:
                    unexpected.append(("PUT cas=%d" % cas, node.name, r))

    _run_clients(client, clients, "CAS clients")
    print("%d successful CAS writes, %d conflicts" % (len(wins), len(conflicts)))
    assert not unexpected, "%d unexpected answers, e.g. %r" % (len(unexpected), unexpected[:5])
    assert len(wins) + len(conflicts) == clients * attempts
    n = len(wins)
    assert n >= 1
    final = get_json(leader, key)
    assert int(final["value"]) == n, "counter is %r after %d successful CAS writes" % (
        final["value"], n)
    assert final["version"] == n + 1, "version %d after creation + %d writes" % (
        final["version"], n)
    assert sorted(w[0] for w in wins) == list(range(1, n + 1)), \
        "successful writes wrote %s" % sorted(w[0] for w in wins)
    assert all(version == value + 1 for value, version, _ in wins), wins
    assert len({w[2] for w in wins}) == n, "two successful writes share an index: %s" % wins


# --------------------------------------------------------------------------
# Range listing


RNG = "rng/"
RNG_NAMES = ["a", "b", "a/x", "A", "Z", "é", "e", "0", "~", " space", "a b", "aa", "ab",
             "b/c/d", "ключ", "🔑", "x" * 60, "x" * 60 + "a", "x" * 60 + "az", "x" * 60 + "b"]
RNG_OUTSIDE = ["rng", "rng.", "rng0", "rnf/zzz", "rnh/", "RNG/a"]


def bkey(k):
    return k.encode("utf-8")


def short(k):
    """A long key shown by its head, length and tail (the tails tell them apart)."""
    return k if len(k) <= 40 else "%s...[%d chars]...%s" % (k[:12], len(k), k[-6:])


def shorts(keys):
    return [short(k) for k in keys]


def walk(node, limit, keys_only=False, max_pages=None, **query):
    """Follow `next` tokens from the first page to the last; returns (entries, pages).
    Every page must hold at most `limit` entries, and a page with a `next` token
    must not be followed by an empty page (next means more remain)."""
    out, pages, token = [], 0, None
    field = "keys" if keys_only else "items"
    extra = {"keys": None} if keys_only else {}
    max_pages = max_pages or 10000
    while True:
        q = dict(query, limit=limit, **extra)
        if token is not None:
            q["continue"] = token
        r = v1_list(node, **q)
        assert r.status == 200, "%s: GET /v1/kv%s -> %r" % (node.name, query_string(q), r)
        body = r.json
        assert isinstance(body, dict) and isinstance(body.get(field), list), \
            "GET /v1/kv%s: %r" % (query_string(q), r)
        assert is_int(body.get("index")), "no applied index in %r" % body
        assert ("items" if keys_only else "keys") not in body, body
        page = body[field]
        pages += 1
        assert len(page) <= limit, "page of %d entries with limit=%d" % (len(page), limit)
        if token is not None:
            assert page, "next token %r led to an empty page (limit=%d): next should be " \
                         "null when no more remain" % (token, limit)
        out.extend(page)
        token = body.get("next", "<missing>")
        assert token is None or (isinstance(token, str) and token), \
            "next is %r (want a non-empty string or null)" % token
        if token is None:
            return out, pages
        assert pages < max_pages, "more than %d pages for limit=%d" % (max_pages, limit)


def item_key(item):
    return item["key"]


def test_concurrent_writes_of_one_key_each_get_their_own_mod_index(kv):
    """32 clients write one key 8 times each, all at once, so that group
    commit packs several of them into one Raft entry.  Every answer names a
    mod_index of its own, and a compare-and-swap against any but the
    newest fails with 409.  (mod_index is the index of the entry that wrote
    the key: two writes of a key in one entry used to share it, and a CAS
    against it then overwrote the later one, a lost update.)"""
    key = "cas/hot"
    leader, _ = leader_and_followers(kv)
    clients, rounds = 32, 8
    lock = threading.Lock()
    answers = []
    problems = []
    start = threading.Barrier(clients)

    def client(t):
        start.wait(timeout=scaled(30))
        for i in range(rounds):
            r = v1_put(leader, key, "c%d-%d" % (t, i))
            with lock:
                if r.status == 200:
                    answers.append((r.json["mod_index"], r.json["version"]))
                else:
                    problems.append(r)

    _run_clients(client, clients, "writers")
    assert not problems, problems[:5]
    indexes = sorted(m for m, _ in answers)
    shared = sorted({m for m in indexes if indexes.count(m) > 1})
    assert not shared, "writes sharing a mod_index: %s" % shared[:10]
    newest = get_json(leader, key)["mod_index"]
    assert newest == indexes[-1]
    for m in indexes[-6:-1]:
        r = v1_put(leader, key, "stale-cas", cas=m)
        assert r.status == 409, "PUT cas=%d (newest %d) -> %r" % (m, newest, r)
    assert get_json(leader, key)["mod_index"] == newest


def test_range_and_prefix_listing(kv):
    """Keys under "rng/" (ASCII, UTF-8, emoji, a space, keys that extend one
    another) plus neighbours just outside the prefix.  ?prefix lists exactly the prefix's keys in byte
    order with base64 values and their metadata; limit=1/2/5/7/all walks every
    page with continue tokens (no duplicates, no gaps, byte order, next null at
    the end), through leader and follower, with ?keys too; start/end is
    start-inclusive and end-exclusive; start alone runs to the last key; a UTF-8
    or space prefix works; an empty prefix or range answers empty lists with next
    null; no parameters lists every key once (keys up to 495 bytes checked for
    byte order here, longer ones in the next story)."""
    leader, followers = leader_and_followers(kv)
    expected = {}
    for i, name in enumerate(RNG_NAMES):
        key = RNG + name
        value = ("v%d" % i).encode() if i % 5 else bytes([i, 0, 255, i])
        body = put_ok(leader, key, value)
        expected[key] = (value, meta(body))
    for key in RNG_OUTSIDE:
        put_ok(leader, key, b"outside")
    ordered = sorted(expected, key=bkey)

    # One page with everything, checked item by item.
    for reader in (leader, followers[0]):
        items, pages = walk(reader, 10000, prefix=RNG)
        assert pages == 1
        got = [it["key"] for it in items]
        if got != ordered:
            raise AssertionError("%s: prefix listing not in byte order or not exact\n got %s\n"
                                 "want %s" % (reader.name, shorts(got), shorts(ordered)))
        for it in items:
            value, m = expected[it["key"]]
            assert base64.b64decode(it["value"], validate=True) == value, it
            assert meta(it) == m, "listing metadata %r, PUT answered %r" % (it, m)
        r = v1_list(reader, prefix=RNG)
        assert r.status == 200 and r.json["index"] >= max(m["mod_index"] for _, m in
                                                          expected.values()), r

    # Pages of every size, items and keys, leader and follower.
    for limit in (1, 2, 5, 7, len(ordered) - 1, len(ordered), len(ordered) + 1):
        for keys_only in (False, True):
            reader = followers[limit % 2] if keys_only else leader
            entries, pages = walk(reader, limit, keys_only=keys_only, max_pages=len(ordered) + 2,
                                  prefix=RNG)
            got = entries if keys_only else [it["key"] for it in entries]
            assert len(got) == len(set(got)), "duplicates with limit=%d: %s" % (limit, shorts(got))
            if got != ordered:
                raise AssertionError("limit=%d keys=%s: walked\n %s\nwant %s" % (
                    limit, keys_only, shorts(got), shorts(ordered)))
            want_pages = max(1, -(-len(ordered) // limit))
            assert pages == want_pages, "limit=%d: %d pages, want %d" % (limit, pages, want_pages)

    # start <= key < end.
    ranges = [(RNG + "a", RNG + "b"), (RNG + "0", RNG + "é"),
              (RNG + "x" * 60, RNG + "x" * 60 + "b"),
              (RNG + "x" * 60 + "a", RNG + "x" * 60 + "az"), (RNG + "b", RNG + "b")]
    for start, end in ranges:
        want = [k for k in ordered if bkey(start) <= bkey(k) < bkey(end)]
        for limit in (3, 10000):
            items, _ = walk(followers[1], limit, start=start, end=end)
            got = [it["key"] for it in items]
            assert got == want, "start=%r end=%r limit=%d:\n got %s\nwant %s" % (
                short(start), short(end), limit, shorts(got), shorts(want))
        keys, _ = walk(leader, 4, keys_only=True, start=start, end=end)
        assert keys == want, (short(start), short(end), shorts(keys))
    # start alone: to the last key, including other stories' keys after ours.
    start = RNG + "ключ"
    keys, _ = walk(leader, 6, keys_only=True, start=start)
    assert keys == sorted(keys, key=bkey) and len(keys) == len(set(keys)), shorts(keys)
    assert all(bkey(k) >= bkey(start) for k in keys), shorts(keys)
    mine = [k for k in keys if k.startswith(RNG)]
    assert mine == [k for k in ordered if bkey(k) >= bkey(start)], shorts(mine)
    assert "rng0" in keys and "rnh/" in keys and "rnf/zzz" not in keys, shorts(keys)

    # Prefixes with UTF-8 and a space.
    for prefix, want in ((RNG + "ключ", [RNG + "ключ"]), (RNG + "a ", [RNG + "a b"]),
                         (RNG + " ", [RNG + " space"]), (RNG + "x" * 60 + "a",
                                                         [RNG + "x" * 60 + "a",
                                                          RNG + "x" * 60 + "az"])):
        keys, _ = walk(followers[0], 100, keys_only=True, prefix=prefix)
        assert keys == want, "prefix %r: %s" % (short(prefix), shorts(keys))

    # Empty results.
    for query in ({"prefix": "rng-nothing/"}, {"start": RNG + "zzz", "end": RNG + "zzzz"},
                  {"start": RNG + "b", "end": RNG + "b"}):
        for keys_only in (False, True):
            q = dict(query, **({"keys": None} if keys_only else {}))
            r = v1_list(leader, **q)
            field = "keys" if keys_only else "items"
            assert r.status == 200 and isinstance(r.json, dict), r
            assert r.json.get(field) == [] and "next" in r.json and r.json["next"] is None, \
                "GET /v1/kv%s: %r" % (query_string(q), r)
            assert is_int(r.json.get("index")), r

    # No parameters: every key, once; the keys of up to 495 bytes in byte order
    # (the order of longer keys, which other stories write, is the next story's).
    everything, _ = walk(leader, 10000, keys_only=True)
    assert len(everything) == len(set(everything)), "full listing has duplicates"
    short_keys = [k for k in everything if len(bkey(k)) <= 495]
    if short_keys != sorted(short_keys, key=bkey):
        raise AssertionError("full listing: keys of up to 495 bytes not in byte order: %s"
                             % shorts(short_keys))
    missing = set(ordered + RNG_OUTSIDE) - set(everything)
    assert not missing, "full listing lacks %s" % shorts(sorted(missing))


def test_listing_orders_long_keys_by_bytes(kv):
    """Keys longer than LMDB's 511-byte limit (stored under a 495-byte prefix plus
    a digest, README) still list in byte order and exactly: keys of 490 to 4096
    bytes that share up to 4000 leading bytes and differ just before, at, and
    well after the 495-byte mark, are listed in byte order by ?prefix (one page,
    and pages of 1, 2 and 3 via continue tokens, items and ?keys) and by
    start/end ranges whose bounds are themselves long keys; the listing of all
    keys (no parameters) is in byte order too."""
    leader, followers = leader_and_followers(kv)
    p = "rnglong/"
    names = ["x" * 480 + "y", "x" * 486, "x" * 487 + "a", "x" * 487 + "b",
             "x" * 600, "x" * 600 + "a", "x" * 600 + "az", "x" * 600 + "b", "x" * 600 + "~",
             "x" * 1000 + "a", "x" * 999 + "b",
             "x" * (MAX_KEY - len(p) - 1) + "a", "x" * (MAX_KEY - len(p) - 1) + "b",
             "x" * 4000]
    written = {}
    for i, name in enumerate(names):
        key = p + name
        assert len(key.encode()) <= MAX_KEY
        written[key] = meta(put_ok(leader, key, "long-%d" % i))
    ordered = sorted(written, key=bkey)
    for limit in (10000, 1, 2, 3):
        for keys_only in (False, True):
            reader = followers[limit % 2]
            entries, _ = walk(reader, limit, keys_only=keys_only, max_pages=len(ordered) + 2,
                              prefix=p)
            got = entries if keys_only else [it["key"] for it in entries]
            if got != ordered:
                raise AssertionError("long keys, limit=%d keys=%s: listed\n %s\nwant %s" % (
                    limit, keys_only, shorts(got), shorts(ordered)))
            if not keys_only:
                for it in entries:
                    assert meta(it) == written[it["key"]], short(it["key"])
    for start, end in ((p + "x" * 600, p + "x" * 600 + "b"), (p + "x" * 487, p + "x" * 1000),
                       (p + "x" * 600 + "a", p + "x" * 4000)):
        want = [k for k in ordered if bkey(start) <= bkey(k) < bkey(end)]
        keys, _ = walk(leader, 2, keys_only=True, start=start, end=end)
        if keys != want:
            raise AssertionError("long keys, start=%s end=%s:\n got %s\nwant %s" % (
                short(start), short(end), shorts(keys), shorts(want)))
    # No parameters: every key of the store (these and other stories'), once,
    # in byte order, also across pages.
    for limit in (10000, 7):
        everything, _ = walk(followers[0], limit, keys_only=True)
        assert len(everything) == len(set(everything)), "full listing has duplicates"
        assert set(ordered) <= set(everything), "full listing lacks long keys"
        if everything != sorted(everything, key=bkey):
            raise AssertionError("full listing (limit=%d) is not in byte order: %s"
                                 % (limit, shorts(everything)))


# --------------------------------------------------------------------------
# Reference /delete


def test_reference_delete(kv):
    """/delete?key=K (DELETE, and also POST and GET) answers 200 {"index": N,
    "deleted": true} for a key written with /set, after which /get gives
    {"data": ""} and /v1/kv gives 404 on every node; deleting again answers
    deleted: false.  /delete without a key or with an empty one is 400, and PUT
    /delete is 405 with an Allow header naming DELETE, GET and POST."""
    leader, followers = leader_and_followers(kv)
    for method in ("DELETE", "POST", "GET"):
        key = "refdel/" + method
        r = leader.set(key, "x")
        assert r.status == 200, r
        set_index = r.json["index"]
        r = leader.request(method, "/delete?key=" + quote_key(key))
        assert r.status == 200 and isinstance(r.json, dict), "%s /delete -> %r" % (method, r)
        assert set(r.json) == {"index", "deleted"}, "%s /delete body %r" % (method, r.json)
        assert r.json["deleted"] is True and is_int(r.json["index"]) \
            and r.json["index"] > set_index, r.json
        assert leader.value(key) == ""
        for n in kv.nodes:
            assert_missing(n, key)
        for n in followers:
            wait_until(lambda n=n: n.value(key) == "", 10,
                       "%s's /get to see %s deleted" % (n.name, key))
        r = leader.request(method, "/delete?key=" + quote_key(key))
        assert r.status == 200 and r.json.get("deleted") is False, \
            "%s /delete of a missing key -> %r" % (method, r)
    for path in ("/delete", "/delete?key="):
        r = request_once(leader.http_addr, "DELETE", path)
        assert_json_error(r, 400, "DELETE " + path)
    r = request_once(leader.http_addr, "PUT", "/delete?key=a", body=b"")
    assert_json_error(r, 405, "PUT /delete")
    allow = (r.header("Allow") or "").upper()
    assert all(m in allow for m in ("DELETE", "GET", "POST")), "Allow: %r" % allow


# --------------------------------------------------------------------------
# Bad input


def test_bad_input_is_rejected_and_writes_nothing(kv):
    """Each malformed request to the new key-value endpoints -- a bad cas (abc,
    -1, empty, 1.5, hex, beyond 64 bits), invalid percent-encoding, invalid UTF-8
    (bad sequence, lone 0xFF, overlong, surrogate), NUL, an empty key, a key one
    byte over --max-key-size (ASCII and UTF-8), a value one byte over
    --max-value-size, unknown values of consistency/format/limit/continue, a
    wrong method -- gets its 4xx with a JSON {"error": ...} body, the same from
    the leader and from a follower; afterwards the leader's commit_index and
    last_log_index have not moved and none of the keys exist."""
    leader, followers = leader_and_followers(kv)
    long_key = "k" * (MAX_KEY + 1)
    long_utf8 = "é" * (MAX_KEY // 2 + 1)
    too_big = b"v" * (MAX_VALUE + 1)
    cases = [
        ("cas=abc", "PUT", kv_path("bad/k", cas="abc"), b"x", 400),
        ("cas=-1", "PUT", kv_path("bad/k", cas="-1"), b"x", 400),
        ("empty cas", "PUT", "/v1/kv/bad%2Fk?cas=", b"x", 400),
        ("cas=1.5", "PUT", kv_path("bad/k", cas="1.5"), b"x", 400),
        ("cas=0x10", "PUT", kv_path("bad/k", cas="0x10"), b"x", 400),
        ("cas beyond 64 bits", "PUT", kv_path("bad/k", cas="99999999999999999999999"), b"x", 400),
        ("cas=' 1'", "PUT", "/v1/kv/bad%2Fk?cas=%201", b"x", 400),
        ("DELETE cas=abc", "DELETE", kv_path("bad/k", cas="abc"), None, 400),
        ("DELETE cas=-1", "DELETE", kv_path("bad/k", cas="-1"), None, 400),
        ("bad percent-encoding %ZZ", "PUT", "/v1/kv/bad%ZZk", b"x", 400),
        ("truncated percent-encoding", "PUT", "/v1/kv/bad%2", b"x", 400),
        ("GET bad percent-encoding", "GET", "/v1/kv/bad%G1", None, 400),
        ("DELETE bad percent-encoding", "DELETE", "/v1/kv/bad%%", None, 400),
        ("invalid UTF-8 C3 28", "PUT", "/v1/kv/bad%C3%28", b"x", 400),
        ("invalid UTF-8 lone FF", "PUT", "/v1/kv/bad%FF", b"x", 400),
        ("overlong UTF-8 C0 AF", "PUT", "/v1/kv/bad%C0%AF", b"x", 400),
        ("UTF-8 surrogate ED A0 80", "PUT", "/v1/kv/bad%ED%A0%80", b"x", 400),
        ("truncated UTF-8 E2 82", "PUT", "/v1/kv/bad%E2%82", b"x", 400),
        ("GET invalid UTF-8", "GET", "/v1/kv/bad%FF", None, 400),
        ("NUL in the key", "PUT", "/v1/kv/bad%00k", b"x", 400),
        ("empty key PUT", "PUT", "/v1/kv/", b"x", 400),
        ("empty key DELETE", "DELETE", "/v1/kv/", None, 400),
        ("key of max+1 bytes PUT", "PUT", kv_path(long_key), b"x", 400),
        ("key of max+1 bytes GET", "GET", kv_path(long_key), None, 400),
        ("key of max+1 bytes DELETE", "DELETE", kv_path(long_key), None, 400),
        ("UTF-8 key of max+1 bytes", "PUT", kv_path(long_utf8), b"x", 400),
        ("value of max+1 bytes", "PUT", kv_path("bad/big"), too_big, 413),
        ("consistency=bogus", "GET", kv_path("bad/k", consistency="bogus"), None, 400),
        ("format=xml", "GET", kv_path("bad/k", format="xml"), None, 400),
        ("list consistency=bogus", "GET", "/v1/kv?prefix=bad&consistency=bogus", None, 400),
        ("list limit=abc", "GET", "/v1/kv?prefix=bad&limit=abc", None, 400),
        ("list limit=-1", "GET", "/v1/kv?prefix=bad&limit=-1", None, 400),
        ("list limit=10001", "GET", "/v1/kv?prefix=bad&limit=10001", None, 400),
        ("list continue=garbage", "GET", "/v1/kv?prefix=bad&continue=%21%21garbage", None, 400),
        ("list prefix bad percent-encoding", "GET", "/v1/kv?prefix=bad%ZZ", None, 400),
        ("/get consistency=bogus", "GET", "/get?key=bad&consistency=bogus", None, 400),
        ("/delete key of max+1 bytes", "DELETE", "/delete?key=" + long_key, None, 400),
        ("/delete bad percent-encoding", "DELETE", "/delete?key=bad%ZZ", None, 400),
        ("POST /v1/kv/{key}", "POST", kv_path("bad/k"), b"x", 405),
        ("PUT /v1/kv", "PUT", "/v1/kv", b"x", 405),
        ("GET /v1/txn", "GET", "/v1/txn", None, 405),
    ]
    allow_want = {"POST /v1/kv/{key}": ("GET", "PUT", "DELETE"), "PUT /v1/kv": ("GET",),
                  "GET /v1/txn": ("POST",)}
    before = leader.status()
    failures = []
    for target in (leader, followers[0]):
        for what, method, path, body, status in cases:
            r = request_once(target.http_addr, method, path, body=body,
                             headers={"Content-Type": "application/octet-stream"}
                             if body is not None else None)
            problem = json_error_problem(r, status)
            if problem:
                failures.append("%s via %s (%s %s): %s" % (
                    what, target.name, method, path[:60], problem))
            elif status == 405:
                allow = (r.header("Allow") or "").upper()
                if not all(m in allow for m in allow_want[what]):
                    failures.append("%s: Allow %r lacks %s" % (what, allow, allow_want[what]))
        r = request_once(target.http_addr, "GET", "/health")
        if r.status != 200:
            failures.append("%s: /health -> %r after the bad requests" % (target.name, r))
    after = leader.status()
    for field in ("commit_index", "last_log_index"):
        if after[field] != before[field]:
            failures.append("leader %s moved from %s to %s across the bad requests"
                            % (field, before[field], after[field]))
    r = v1_list(leader, prefix="bad", keys=None, consistency="stale")
    if r.status != 200 or (r.json or {}).get("keys") != []:
        failures.append("keys starting with 'bad' exist after the bad requests: %r" % r)
    assert not failures, "%d problems:\n  %s" % (len(failures), "\n  ".join(failures))
