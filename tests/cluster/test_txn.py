"""POST /v1/txn (docs/api.md): atomic compare-and-operations, on one shared
3-node cluster.  Each story uses its own key prefix and leaves every node
running with the membership unchanged."""

import base64
import json
import threading

import pytest

from harness import (assert_json_error, attach_cluster, get_json, get_raw, is_int,
                     json_error_problem, leader_and_followers, meta, put_ok, request_once,
                     scaled, send_body_read_answer, shared_cluster_fixture, v1_get, v1_list,
                     v1_txn, wait_until)

MAX_KEY = 4096
MAX_VALUE = 1048576
MAX_BODY = 1572864

shared = shared_cluster_fixture(3)


@pytest.fixture
def txc(shared, request):
    return attach_cluster(request, shared)


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def txn_ok(node, body):
    """A transaction that must answer 200 {"succeeded": bool, "index": N, "results": [...]}."""
    r = v1_txn(node, body)
    assert r.status == 200, "%s: POST /v1/txn %s -> %r" % (node.name, json.dumps(body)[:300], r)
    out = r.json
    assert isinstance(out, dict) and isinstance(out.get("succeeded"), bool) \
        and is_int(out.get("index")) and isinstance(out.get("results"), list), \
        "POST /v1/txn: %r" % r
    return out


def check_result(result, op, key, **want):
    assert isinstance(result, dict) and result.get("op") == op and result.get("key") == key, \
        "result %r, want op %r on key %r" % (result, op, key)
    for field, value in want.items():
        got = result.get(field)
        if field == "value":
            assert isinstance(got, str), "result %r: value is not base64 text" % result
            got = base64.b64decode(got, validate=True)
        assert got == value, "result %r: %s is %r, want %r" % (result, field, got, value)


def assert_missing(node, key):
    r = v1_get(node, key)
    assert r.status == 404, "%s: GET %s -> %r (want 404)" % (node.name, key, r)


def test_success_branch_puts_deletes_gets_atomically(txc):
    """Through a follower, one transaction whose compares all hold (mod_index,
    version, text value, version 0 and mod_index 0 of absent keys) runs its
    success branch: get-before-put sees the old value, the put answers the new
    metadata (create_index kept, mod_index = the transaction's index, version +1),
    get-after-put sees the new value, a put of a binary value_base64 creates a key,
    a delete removes one (then a get finds nothing), deleting an absent key answers
    deleted: false.  Every written key carries mod_index = the transaction's index
    on every node; the failure branch's write did not happen."""
    leader, followers = leader_and_followers(txc)
    A, B, C, D, E, F = ("txn1/" + k for k in "abcdef")
    a = put_ok(leader, A, "a0")
    b = put_ok(leader, B, "b0")
    c = put_ok(leader, C, "text")
    binary = bytes(range(256))
    body = {
        "compare": [{"key": A, "mod_index": a["mod_index"]},
                    {"key": B, "version": 1},
                    {"key": C, "value": "text"},
                    {"key": D, "version": 0},
                    {"key": E, "mod_index": 0}],
        "success": [{"op": "get", "key": A},
                    {"op": "put", "key": A, "value": "a1"},
                    {"op": "get", "key": A},
                    {"op": "put", "key": D, "value_base64": b64(binary)},
                    {"op": "delete", "key": B},
                    {"op": "get", "key": B},
                    {"op": "get", "key": C},
                    {"op": "delete", "key": E}],
        "failure": [{"op": "put", "key": F, "value": "must not happen"}],
    }
    out = txn_ok(followers[0], body)
    n = out["index"]
    assert out["succeeded"] is True, out
    assert n > c["index"], out
    res = out["results"]
    assert len(res) == len(body["success"]), "%d results for %d operations: %s" % (
        len(res), len(body["success"]), res)
    check_result(res[0], "get", A, found=True, value=b"a0", **meta(a))
    check_result(res[1], "put", A, create_index=a["create_index"], mod_index=n, version=2)
    check_result(res[2], "get", A, found=True, value=b"a1", create_index=a["create_index"],
                 mod_index=n, version=2)
    check_result(res[3], "put", D, create_index=n, mod_index=n, version=1)
    check_result(res[4], "delete", B, deleted=True)
    check_result(res[5], "get", B, found=False)
    check_result(res[6], "get", C, found=True, value=b"text", **meta(c))
    check_result(res[7], "delete", E, deleted=False)
    assert b["version"] == 1, b

    for node in txc.nodes:
        assert get_raw(node, A) == (b"a1", {"create_index": a["create_index"], "mod_index": n,
                                            "version": 2}), node.name
        assert get_raw(node, D) == (binary, {"create_index": n, "mod_index": n, "version": 1})
        assert get_raw(node, C) == (b"text", meta(c))
        assert_missing(node, B)
        assert_missing(node, F)


def test_failing_compare_runs_failure_branch_only(txc):
    """With several compares of which only the last fails, the failure branch runs
    (succeeded: false, one result per failure operation, at a Raft index) and
    nothing of the success branch is written: its put target stays absent, the
    key it would overwrite keeps value and metadata, the key it would delete
    stays; the failure branch's own put is there at the transaction's index."""
    leader, followers = leader_and_followers(txc)
    X, KEEP, S1, F1 = "txn2/x", "txn2/keep", "txn2/s1", "txn2/f1"
    x = put_ok(leader, X, "x0")
    keep = put_ok(leader, KEEP, "keep")
    out = txn_ok(followers[1], {
        "compare": [{"key": X, "mod_index": x["mod_index"]},
                    {"key": KEEP, "version": 1},
                    {"key": X, "value": "not-x0"}],
        "success": [{"op": "put", "key": S1, "value": "s"},
                    {"op": "put", "key": X, "value": "overwritten"},
                    {"op": "delete", "key": KEEP}],
        "failure": [{"op": "get", "key": X},
                    {"op": "put", "key": F1, "value": "from-failure"}]})
    assert out["succeeded"] is False, out
    res = out["results"]
    assert len(res) == 2, res
    check_result(res[0], "get", X, found=True, value=b"x0", **meta(x))
    check_result(res[1], "put", F1, create_index=out["index"], mod_index=out["index"], version=1)
    for node in txc.nodes:
        assert_missing(node, S1)
        assert get_raw(node, X) == (b"x0", meta(x)), node.name
        assert get_raw(node, KEEP) == (b"keep", meta(keep)), node.name
        assert get_raw(node, F1)[0] == b"from-failure"


def test_each_compare_kind(txc):
    """Each kind of compare, alone, holds or fails as documented: mod_index equal /
    stale / 0 on an absent key / 0 on an existing key / non-zero on an absent key;
    version equal / other / 0 absent / 0 existing; value equal / different / on an
    absent key; value_base64 equal (binary) / different.  The branch that ran is
    the one whose key got written."""
    leader, _followers = leader_and_followers(txc)
    K, ABSENT = "txn3/k", "txn3/absent"
    put_ok(leader, K, bytes([0, 1, 2, 255]))
    k = put_ok(leader, K, bytes([0, 1, 2, 255]))    # version 2
    cases = [
        ({"mod_index": k["mod_index"]}, K, True),
        ({"mod_index": k["mod_index"] - 1}, K, False),
        ({"mod_index": 0}, ABSENT, True),
        ({"mod_index": 0}, K, False),
        ({"mod_index": k["mod_index"]}, ABSENT, False),
        ({"version": 2}, K, True),
        ({"version": 1}, K, False),
        ({"version": 0}, ABSENT, True),
        ({"version": 0}, K, False),
        ({"value": "\u0001\u0002"}, K, False),
        ({"value": ""}, ABSENT, False),
        ({"value_base64": b64(bytes([0, 1, 2, 255]))}, K, True),
        ({"value_base64": b64(bytes([0, 1, 2, 254]))}, K, False),
        ({"value_base64": b64(b"")}, ABSENT, False),
    ]
    put_ok(leader, "txn3/text", "héllo wörld")
    cases += [({"value": "héllo wörld"}, "txn3/text", True),
              ({"value": "héllo world"}, "txn3/text", False)]
    problems = []
    for i, (cmp, key, holds) in enumerate(cases):
        node = txc.nodes[i % 3]
        out = txn_ok(node, {"compare": [dict(cmp, key=key)],
                            "success": [{"op": "put", "key": "txn3/s%d" % i, "value": "s"}],
                            "failure": [{"op": "put", "key": "txn3/f%d" % i, "value": "f"}]})
        if out["succeeded"] is not holds:
            problems.append("compare %r on %s: succeeded=%s, want %s" % (
                cmp, key, out["succeeded"], holds))
        present = "txn3/s%d" % i if holds else "txn3/f%d" % i
        absent = "txn3/f%d" % i if holds else "txn3/s%d" % i
        if v1_get(leader, present).status != 200 or v1_get(leader, absent).status != 404:
            problems.append("compare %r on %s: wrong branch's key written" % (cmp, key))
    assert not problems, "\n  ".join(problems)


def test_readers_never_see_half_a_transaction(txc):
    """A writer runs 25 transactions each setting txn5/p and txn5/q to the same
    new value (the second as value_base64); meanwhile readers list the txn5/
    prefix (linearizable through a follower, stale on the other follower) and
    must always see p and q with equal values and equal mod_index."""
    leader, followers = leader_and_followers(txc)
    P, Q = "txn5/p", "txn5/q"
    first = txn_ok(leader, {"success": [{"op": "put", "key": P, "value": "0"},
                                        {"op": "put", "key": Q, "value": "0"}]})
    for f in followers:
        wait_until(lambda f=f: f.status()["applied_index"] >= first["index"], 10,
                   "%s to apply the first transaction" % f.name)
    done = threading.Event()
    seen, torn, errors = [], [], []

    def reader(node, consistency):
        while not done.is_set():
            r = v1_list(node, prefix="txn5/", consistency=consistency)
            if r.status != 200:
                errors.append((node.name, r))
                return
            items = {it["key"]: it for it in r.json["items"]}
            p, q = items.get(P), items.get(Q)
            if not p or not q or p["value"] != q["value"] or p["mod_index"] != q["mod_index"]:
                torn.append((node.name, consistency, p, q))
            seen.append(p["value"] if p else None)

    threads = [threading.Thread(target=reader, args=(followers[0], "linearizable"), daemon=True),
               threading.Thread(target=reader, args=(followers[1], "stale"), daemon=True)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 26):
            txn_ok(txc.nodes[i % 3], {"success": [
                {"op": "put", "key": P, "value": str(i)},
                {"op": "put", "key": Q, "value_base64": b64(str(i))}]})
    finally:
        done.set()
        for t in threads:
            t.join(scaled(30))
    assert not errors, errors[:3]
    assert not torn, "%d torn reads, e.g. %s" % (len(torn), torn[:3])
    assert len(set(seen)) > 1, "the readers saw only %s" % set(seen)


def test_limits(txc):
    """64 compares and 128 operations are accepted (the 128 puts all land at the
    transaction's index); 65 compares, 129 operations, a value one byte over
    --max-value-size and a body one byte over --max-body-size are
    refused with 413 and a JSON error (README: "a transaction over 64 compares
    or 128 operations" is a 413), write nothing, and leave commit_index where
    it was."""
    leader, followers = leader_and_followers(txc)
    ok64 = txn_ok(leader, {"compare": [{"key": "txn4/c%d" % i, "mod_index": 0} for i in range(64)],
                           "success": [{"op": "put", "key": "txn4/ok64", "value": "1"}]})
    assert ok64["succeeded"] is True, ok64
    ok128 = txn_ok(followers[0], {"success": [{"op": "put", "key": "txn4/op%03d" % i,
                                               "value": str(i)} for i in range(128)]})
    assert ok128["succeeded"] is True and len(ok128["results"]) == 128, ok128
    r = v1_list(leader, prefix="txn4/op")
    assert r.status == 200, r
    items = r.json["items"]
    assert len(items) == 128 and all(it["mod_index"] == ok128["index"] for it in items), \
        "%d keys after a 128-put transaction at index %d: %s" % (
            len(items), ok128["index"], [(it["key"], it["mod_index"]) for it in items][:5])

    before = leader.status()
    bad = [
        ("65 compares", {"compare": [{"key": "txn4/c%d" % i, "mod_index": 0} for i in range(65)],
                         "success": [{"op": "put", "key": "txn4/bad", "value": "1"}]}, (413,)),
        ("129 operations", {"success": [{"op": "put", "key": "txn4/over%03d" % i, "value": "x"}
                                        for i in range(129)]}, (413,)),
        ("value of max+1 bytes", {"success": [{"op": "put", "key": "txn4/bad",
                                               "value": "v" * (MAX_VALUE + 1)}]}, (413,)),
    ]
    for what, body, statuses in bad:
        for node in (leader, followers[1]):
            r = v1_txn(node, body)
            assert_json_error(r, statuses, "%s via %s" % (what, node.name))
    # A valid transaction whose body is one byte over --max-body-size.
    half = MAX_VALUE // 4 * 3 - 100
    big = {"success": [{"op": "put", "key": "txn4/bad", "value": "v" * half},
                       {"op": "put", "key": "txn4/bad2", "value": "w" * half}]}
    raw = json.dumps(big)
    raw = raw[:-1] + " " * (MAX_BODY + 1 - len(raw)) + "}"
    assert len(raw) == MAX_BODY + 1
    for node in (leader, followers[1]):
        r = send_body_read_answer(node.http_addr, "POST", "/v1/txn", raw.encode(),
                                  {"Content-Type": "application/json"})
        assert_json_error(r, 413, "a transaction body of %d bytes via %s" % (MAX_BODY + 1,
                                                                            node.name))
    after = leader.status()
    assert (after["commit_index"], after["last_log_index"]) == \
        (before["commit_index"], before["last_log_index"]), (before, after)
    for key in ("txn4/bad", "txn4/bad2", "txn4/over000", "txn4/over128"):
        assert_missing(leader, key)


def test_malformed_bodies_write_nothing(txc):
    """Malformed transactions -- not JSON, not an object, compare/success not
    arrays or with non-object entries, a compare without key or with none or two
    of mod_index/version/value/value_base64, negative or string indexes, unknown
    op, put without value or with both value and value_base64, bad base64, empty,
    non-string, NUL, lone-surrogate or over-long keys, a key written twice or put and deleted in
    one branch, a bad operation after a good one -- each get 400 with a JSON
    error from leader and follower; nothing under txnbad/ is written and the
    leader's commit_index does not move."""
    leader, followers = leader_and_followers(txc)
    put_ok(leader, "txnbad/existing", "e")
    W = {"op": "put", "key": "txnbad/w", "value": "1"}
    cases = [
        ("not JSON", '{"success": [', None),
        ("empty body", "", None),
        ("a JSON array", "[]", None),
        ("a JSON string", '"txn"', None),
        ("compare is an object", {"compare": {"key": "a", "version": 0}, "success": [W]}, None),
        ("success is a string", {"success": "put"}, None),
        ("failure is a number", {"success": [W], "failure": 5}, None),
        ("compare entry is a string", {"compare": ["txnbad/x"], "success": [W]}, None),
        ("operation is a string", {"success": ["put"]}, None),
        ("compare without key", {"compare": [{"version": 0}], "success": [W]}, None),
        ("compare without target", {"compare": [{"key": "txnbad/x"}], "success": [W]}, None),
        ("compare with mod_index and version",
         {"compare": [{"key": "txnbad/x", "mod_index": 0, "version": 0}], "success": [W]}, None),
        ("compare with value and value_base64",
         {"compare": [{"key": "txnbad/x", "value": "a", "value_base64": "YQ=="}],
          "success": [W]}, None),
        ("negative mod_index", {"compare": [{"key": "txnbad/x", "mod_index": -1}],
                                "success": [W]}, None),
        ("string mod_index", {"compare": [{"key": "txnbad/x", "mod_index": "0"}],
                              "success": [W]}, None),
        ("fractional version", {"compare": [{"key": "txnbad/x", "version": 1.5}],
                                "success": [W]}, None),
        ("number value", {"compare": [{"key": "txnbad/x", "value": 5}], "success": [W]}, None),
        ("compare bad base64", {"compare": [{"key": "txnbad/x", "value_base64": "!!!"}],
                                "success": [W]}, None),
        ("unknown op", {"success": [{"op": "incr", "key": "txnbad/w"}]}, None),
        ("op missing", {"success": [{"key": "txnbad/w", "value": "1"}]}, None),
        ("put without value", {"success": [{"op": "put", "key": "txnbad/w"}]}, None),
        ("put with value and value_base64",
         {"success": [{"op": "put", "key": "txnbad/w", "value": "a", "value_base64": "YQ=="}]},
         None),
        ("put bad base64", {"success": [{"op": "put", "key": "txnbad/w",
                                         "value_base64": "not base64!"}]}, None),
        ("put value not a string", {"success": [{"op": "put", "key": "txnbad/w", "value": 1}]},
         None),
        ("empty key", {"success": [{"op": "put", "key": "", "value": "1"}]}, None),
        ("key not a string", {"success": [{"op": "put", "key": 7, "value": "1"}]}, None),
        ("key with NUL", {"success": [{"op": "put", "key": "txnbad/a\u0000b", "value": "1"}]},
         None),
        ("key with a lone surrogate (not UTF-8)",
         {"success": [{"op": "put", "key": "txnbad/\ud800", "value": "1"}]}, None),
        ("key over max-key-size", {"success": [{"op": "put", "key": "txnbad/" + "k" * MAX_KEY,
                                                "value": "1"}]}, None),
        ("key written twice", {"success": [W, dict(W, value="2")]}, None),
        ("put and delete of one key", {"success": [W, {"op": "delete", "key": "txnbad/w"}]},
         None),
        ("delete twice", {"success": [{"op": "delete", "key": "txnbad/existing"},
                                      {"op": "delete", "key": "txnbad/existing"}]}, None),
        ("bad op after a good one", {"success": [W, {"op": "put", "key": "txnbad/w2"}]}, None),
        ("bad failure op after a good success",
         {"compare": [{"key": "txnbad/x", "version": 0}], "success": [W],
          "failure": [{"op": "frobnicate", "key": "txnbad/w2"}]}, None),
        ("bad compare after a good one",
         {"compare": [{"key": "txnbad/x", "version": 0}, {"key": "txnbad/y"}],
          "success": [W]}, None),
    ]
    before = leader.status()
    failures = []
    for target in (leader, followers[0]):
        for what, body, _ in cases:
            raw = body if isinstance(body, str) else json.dumps(body)
            r = request_once(target.http_addr, "POST", "/v1/txn", body=raw,
                             headers={"Content-Type": "application/json"})
            problem = json_error_problem(r, 400)
            if problem:
                failures.append("%s via %s: %s" % (what, target.name, problem))
    after = leader.status()
    for field in ("commit_index", "last_log_index"):
        if after[field] != before[field]:
            failures.append("leader %s moved from %s to %s across the malformed transactions"
                            % (field, before[field], after[field]))
    r = v1_list(leader, prefix="txnbad/", keys=None)
    if r.status != 200 or (r.json or {}).get("keys") != ["txnbad/existing"]:
        failures.append("keys under txnbad/ afterwards: %r" % r)
    assert get_json(leader, "txnbad/existing")["version"] == 1
    assert not failures, "%d problems:\n  %s" % (len(failures), "\n  ".join(failures))
