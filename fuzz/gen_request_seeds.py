#!/usr/bin/env python3
"""gen_request_seeds.py - writes the seed corpus of fuzz_request.

    python3 fuzz/gen_request_seeds.py fuzz/corpus/request

Each seed is the raw bytes of one connection: one request, or several
pipelined when a later one needs state from an earlier one (a key to read,
a page token to follow).  Together they reach every endpoint of README.md
and docs/api.md, each with good input and with the bad input each handler
checks for, so that the fuzzer starts past every check and mutates from
there.  The server they run against is the harness's one-node cluster
(node id fuzz1; --max-key-size 1024, --max-value-size 2048,
--max-body-size 4096).

Rerun after changing the API and commit the result; files are written
afresh, named by what they exercise.  Inputs that reproduce a finding are
not seeds (the corpus must pass); they live in fuzz/regressions/request/.
"""
import base64
import json
import os
import sys

CRLF = "\r\n"


def req(method, target, body=None, headers=None, version="HTTP/1.1",
        content_type=None):
    """One request as bytes, with Host and (when there is a body)
    Content-Length."""
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    for h in headers or []:
        lines.append(h)
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = (CRLF.join(lines) + CRLF + CRLF).encode()
    return head + (body or b"")


def js(obj):
    return json.dumps(obj, separators=(",", ":"))


def b64(raw):
    return base64.b64encode(raw).decode()


def b64url(raw):
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


SEEDS = {}


def seed(name, *parts):
    SEEDS[name] = b"".join(p if isinstance(p, bytes) else p.encode()
                           for p in parts)


def reference():
    j = "application/json"
    seed("set", req("POST", "/set", js({"key": "x", "value": "23"}),
                    content_type=j))
    seed("set-field-case", req("POST", "/set", '{"Key": "x", "VALUE": "y"}',
                               content_type=j))
    seed("set-unicode-escapes", req(
        "POST", "/set", '{"key": "cl\\u00e9 \\ud83d\\ude00", "value": "\\"\\n\\t"}'))
    seed("set-missing-value", req("POST", "/set", js({"key": "x"})))
    seed("set-extra-field", req("POST", "/set",
                                js({"key": "x", "value": "1", "ttl": 5})))
    seed("set-twice-ignoring-case", req("POST", "/set",
                                        '{"key":"a","KEY":"b","value":"v"}'))
    seed("set-duplicate-field", req("POST", "/set",
                                    '{"key":"a","key":"b","value":"v"}'))
    seed("set-number-value", req("POST", "/set", '{"key":"a","value":5}'))
    seed("set-array", req("POST", "/set", '["key","value"]'))
    seed("set-invalid-json", req("POST", "/set", '{"key": "a", "value": '))
    seed("set-empty-body", req("POST", "/set", ""))
    seed("set-empty-key", req("POST", "/set", js({"key": "", "value": "v"})))
    seed("set-nul-in-key", req("POST", "/set", '{"key":"a\\u0000b","value":"v"}'))
    seed("set-value-too-large", req("POST", "/set",
                                    js({"key": "big", "value": "v" * 2100})))
    seed("set-key-too-long", req("POST", "/set",
                                 js({"key": "k" * 1100, "value": "v"})))
    seed("set-long-key", req("POST", "/set",
                             js({"key": "L" * 600, "value": "long"})))
    seed("set-wrong-method", req("GET", "/set"))

    seed("set-then-get", req("POST", "/set", js({"key": "x", "value": "23"})),
         req("GET", "/get?key=x"))
    seed("get-missing", req("GET", "/get?key=nothing"))
    seed("get-linearizable", req("GET", "/get?key=x&consistency=linearizable"))
    seed("get-stale", req("GET", "/get?key=x&consistency=stale"))
    seed("get-bad-consistency", req("GET", "/get?key=x&consistency=strong"))
    seed("get-no-key", req("GET", "/get"))
    seed("get-empty-key", req("GET", "/get?key="))
    seed("get-bad-percent", req("GET", "/get?key=%zz"))
    seed("get-encoded-name", req("GET", "/get?k%65y=x&consistency"))
    seed("get-plus-space", req("GET", "/get?key=a+b%20c"))
    seed("get-head", req("HEAD", "/get?key=x"))
    seed("get-binary-value", req("PUT", "/v1/kv/bin", b"\xff\xfe\x00"),
         req("GET", "/get?key=bin"))

    seed("delete", req("DELETE", "/delete?key=x"))
    seed("delete-post", req("POST", "/delete?key=x"))
    seed("delete-get", req("GET", "/delete?key=x"))
    seed("delete-no-key", req("DELETE", "/delete"))

    # /join is answered by the harness's stub once validation passed.
    seed("join", req("GET", "/join?followerAddr=127.0.0.1:2223&followerId=node2"))
    seed("join-http-addr", req(
        "POST", "/join?followerId=node2&followerAddr=localhost:2223"
        "&httpAddr=127.0.0.1:8223"))
    seed("join-no-params", req("GET", "/join"))
    seed("join-bad-id", req("GET", "/join?followerId=no%20spaces&followerAddr=a:1"))
    seed("join-bad-addr", req("GET", "/join?followerId=n2&followerAddr=nohost"))
    seed("join-bad-port", req("GET", "/join?followerId=n2&followerAddr=h:99999"))
    seed("join-bad-http", req("GET",
                              "/join?followerId=n2&followerAddr=h:1&httpAddr=%zz"))


def kv():
    seed("kv-put", req("PUT", "/v1/kv/greeting", "hello"))
    seed("kv-put-get", req("PUT", "/v1/kv/greeting", "hello"),
         req("GET", "/v1/kv/greeting"))
    seed("kv-put-get-json", req("PUT", "/v1/kv/greeting", "hello"),
         req("GET", "/v1/kv/greeting?format=json&consistency=stale"))
    seed("kv-get-raw", req("GET", "/v1/kv/greeting?format=raw"))
    seed("kv-get-bad-format", req("GET", "/v1/kv/greeting?format=xml"))
    seed("kv-get-bad-consistency", req("GET", "/v1/kv/greeting?consistency="))
    seed("kv-get-missing", req("GET", "/v1/kv/nothing-here"))
    seed("kv-head", req("HEAD", "/v1/kv/greeting"))
    seed("kv-put-cas", req("PUT", "/v1/kv/c?cas=0", "first"),
         req("PUT", "/v1/kv/c?cas=0", "second"),
         req("PUT", "/v1/kv/c?cas=99", "third"))
    seed("kv-put-bad-cas", req("PUT", "/v1/kv/c?cas=abc", "v"))
    seed("kv-put-cas-overflow", req("PUT", "/v1/kv/c?cas=99999999999999999999", "v"))
    seed("kv-put-cas-negative", req("PUT", "/v1/kv/c?cas=-1", "v"))
    seed("kv-put-empty-value", req("PUT", "/v1/kv/empty", ""))
    seed("kv-put-binary", req("PUT", "/v1/kv/bin", bytes(range(256)),
                              content_type="application/octet-stream"))
    seed("kv-put-slash-encoded", req("PUT", "/v1/kv/a%2Fb", "v"),
         req("GET", "/v1/kv/a/b"))
    seed("kv-put-utf8-key", req("PUT", "/v1/kv/cl%C3%A9", "v"))
    seed("kv-put-bad-utf8-key", req("PUT", "/v1/kv/%ff%fe", "v"))
    seed("kv-put-nul-key", req("PUT", "/v1/kv/a%00b", "v"))
    seed("kv-put-bad-percent", req("PUT", "/v1/kv/a%2", "v"))
    seed("kv-put-empty-key", req("PUT", "/v1/kv/", "v"))
    seed("kv-put-long-keys", req("PUT", "/v1/kv/" + "p" * 600, "1"),
         req("PUT", "/v1/kv/" + "p" * 599 + "q", "2"),
         req("GET", "/v1/kv/" + "p" * 600),
         req("GET", "/v1/kv?prefix=" + "p" * 500 + "&keys"))
    seed("kv-put-key-too-long", req("PUT", "/v1/kv/" + "k" * 1100, "v"))
    seed("kv-put-value-too-large", req("PUT", "/v1/kv/big", "v" * 2100))
    seed("kv-put-chunked", b"PUT /v1/kv/chunk HTTP/1.1\r\nHost: a\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    seed("kv-delete", req("PUT", "/v1/kv/d", "v"), req("DELETE", "/v1/kv/d"),
         req("DELETE", "/v1/kv/d"))
    seed("kv-delete-cas", req("PUT", "/v1/kv/d", "v"),
         req("DELETE", "/v1/kv/d?cas=1"), req("DELETE", "/v1/kv/d?cas=0"))
    seed("kv-wrong-method", req("POST", "/v1/kv/x", "v"))

    puts = [req("PUT", f"/v1/kv/page{i}", f"v{i}") for i in range(5)]
    seed("kv-list-pages", *puts, req("GET", "/v1/kv?prefix=page&limit=2"),
         req("GET", "/v1/kv?prefix=page&limit=2&continue=" + b64url(b"page1")))
    seed("kv-list-prefix-keys", *puts[:2], req("GET", "/v1/kv?prefix=pa&keys"))
    seed("kv-list-range", *puts[:3],
         req("GET", "/v1/kv?start=page0&end=page2&limit=10"))
    seed("kv-list-all", req("GET", "/v1/kv"))
    seed("kv-list-stale", req("GET", "/v1/kv?keys&consistency=stale"))
    seed("kv-list-head", req("HEAD", "/v1/kv?prefix=a"))
    seed("kv-list-prefix-and-start", req("GET", "/v1/kv?prefix=a&start=b"))
    seed("kv-list-limit-zero", req("GET", "/v1/kv?limit=0"))
    seed("kv-list-limit-too-big", req("GET", "/v1/kv?limit=10001"))
    seed("kv-list-limit-junk", req("GET", "/v1/kv?limit=1x"))
    seed("kv-list-bad-continue", req("GET", "/v1/kv?continue=!!!"))
    seed("kv-list-long-continue", req("GET", "/v1/kv?continue=" +
                                      b64url(b"z" * 511)))
    seed("kv-list-bad-percent", req("GET", "/v1/kv?prefix=%g0"))
    seed("kv-list-end-only", req("GET", "/v1/kv?end=m&keys"))
    seed("kv-list-wrong-method", req("DELETE", "/v1/kv"))


def txn():
    doc = {"compare": [{"key": "a", "mod_index": 0},
                       {"key": "b", "version": 0},
                       {"key": "c", "value": "text"}],
           "success": [{"op": "put", "key": "a", "value": "text"},
                       {"op": "put", "key": "d", "value_base64": "AAE="},
                       {"op": "delete", "key": "b"},
                       {"op": "get", "key": "c"}],
           "failure": [{"op": "get", "key": "a"}]}
    seed("txn-doc-example", req("POST", "/v1/txn", js(doc)))
    ok = {"compare": [{"key": "t", "version": 0}],
          "success": [{"op": "put", "key": "t", "value": "1"},
                      {"op": "get", "key": "t"}],
          "failure": [{"op": "get", "key": "t"}]}
    seed("txn-success-then-failure", req("POST", "/v1/txn", js(ok)),
         req("POST", "/v1/txn", js(ok)))
    seed("txn-value-compare", req("PUT", "/v1/kv/v", "abc"),
         req("POST", "/v1/txn", js({
             "compare": [{"key": "v", "value_base64": b64(b"abc")}],
             "success": [{"op": "delete", "key": "v"}]})))
    seed("txn-empty", req("POST", "/v1/txn", "{}"))
    seed("txn-only-gets", req("POST", "/v1/txn", js(
        {"success": [{"op": "get", "key": "a"}, {"op": "get", "key": "a"}]})))
    seed("txn-too-many-compares", req("POST", "/v1/txn", js(
        {"compare": [{"key": "k", "version": 0}] * 65})))
    seed("txn-too-many-ops", req("POST", "/v1/txn", js(
        {"success": [{"op": "get", "key": "k"}] * 129})))
    seed("txn-duplicate-write", req("POST", "/v1/txn", js(
        {"success": [{"op": "put", "key": "k", "value": "1"},
                     {"op": "delete", "key": "k"}]})))
    seed("txn-two-compare-kinds", req("POST", "/v1/txn", js(
        {"compare": [{"key": "k", "version": 0, "mod_index": 0}]})))
    seed("txn-negative-index", req("POST", "/v1/txn", js(
        {"compare": [{"key": "k", "mod_index": -1}]})))
    seed("txn-float-index", req("POST", "/v1/txn",
                                '{"compare":[{"key":"k","version":1.5}]}'))
    seed("txn-bad-base64", req("POST", "/v1/txn", js(
        {"success": [{"op": "put", "key": "k", "value_base64": "A"}]})))
    seed("txn-both-values", req("POST", "/v1/txn", js(
        {"success": [{"op": "put", "key": "k", "value": "1",
                      "value_base64": "MQ=="}]})))
    seed("txn-put-without-value", req("POST", "/v1/txn", js(
        {"success": [{"op": "put", "key": "k"}]})))
    seed("txn-get-with-value", req("POST", "/v1/txn", js(
        {"success": [{"op": "get", "key": "k", "value": "x"}]})))
    seed("txn-unknown-op", req("POST", "/v1/txn", js(
        {"success": [{"op": "cas", "key": "k"}]})))
    seed("txn-unknown-field", req("POST", "/v1/txn", js({"then": []})))
    seed("txn-not-array", req("POST", "/v1/txn", js({"compare": {}})))
    seed("txn-item-not-object", req("POST", "/v1/txn", js({"success": [1]})))
    seed("txn-bad-key", req("POST", "/v1/txn", js(
        {"success": [{"op": "get", "key": ""}]})))
    seed("txn-value-too-large", req("POST", "/v1/txn", js(
        {"success": [{"op": "put", "key": "k", "value": "v" * 2100}]})))
    seed("txn-invalid-json", req("POST", "/v1/txn", '{"compare": [}'))
    seed("txn-wrong-method", req("GET", "/v1/txn"))


def cluster():
    seed("members", req("GET", "/v1/cluster/members"))
    seed("members-head", req("HEAD", "/v1/cluster/members"))
    seed("member-self", req("GET", "/v1/cluster/members/fuzz1"))
    seed("member-unknown", req("GET", "/v1/cluster/members/ghost"))
    seed("member-bad-name", req("GET", "/v1/cluster/members/%00"))
    seed("member-remove-self", req("DELETE", "/v1/cluster/members/fuzz1"))
    seed("member-remove-unknown", req("DELETE", "/v1/cluster/members/ghost"))
    seed("members-add", req("POST", "/v1/cluster/members", js(
        {"id": "node2", "raft_addr": "127.0.0.1:2223",
         "http_addr": "127.0.0.1:8223"})))
    seed("members-add-bad", req("POST", "/v1/cluster/members", js(
        {"id": "node 2", "raft_addr": "x"})))
    # An unknown field in POST /v1/cluster/members or /v1/cluster/leader is
    # a known finding (fuzz/regressions/request/*-unknown-field-uaf), so
    # not a seed: the corpus must pass.
    seed("members-add-not-object", req("POST", "/v1/cluster/members", "[]"))
    seed("members-wrong-method", req("PUT", "/v1/cluster/members", "{}"))
    seed("leader", req("GET", "/v1/cluster/leader"))
    seed("leader-transfer-self", req("POST", "/v1/cluster/leader",
                                     js({"id": "fuzz1"})))
    seed("leader-transfer-any", req("POST", "/v1/cluster/leader", "{}"))
    seed("leader-transfer-no-body", req("POST", "/v1/cluster/leader"))
    seed("leader-transfer-unknown", req("POST", "/v1/cluster/leader",
                                        js({"id": "ghost"})))
    seed("leader-transfer-bad", req("POST", "/v1/cluster/leader",
                                    js({"id": 5})))
    seed("status", req("GET", "/v1/status"))
    seed("health", req("GET", "/health"))
    seed("health-head", req("HEAD", "/health"))
    seed("ready", req("GET", "/ready"))
    seed("metrics", req("GET", "/metrics"))
    seed("metrics-after-traffic", req("PUT", "/v1/kv/m", "1"),
         req("PATCH", "/v1/kv/m"), req("GET", "/nowhere"),
         req("GET", "/metrics"))


def http():
    seed("not-found", req("GET", "/nowhere"))
    seed("http10", req("GET", "/health", version="HTTP/1.0"))
    seed("connection-close", req("GET", "/health",
                                 headers=["Connection: close"]),
         req("GET", "/health"))
    seed("pipelined", req("GET", "/health"), req("GET", "/ready"),
         req("GET", "/v1/status"))
    seed("no-host", b"GET /health HTTP/1.1\r\n\r\n")
    seed("garbage", b"\x00\x01 not http\r\n\r\n")
    seed("bad-request-line", b"GET\r\n\r\n")
    seed("lf-only", b"GET /health HTTP/1.1\nHost: a\n\n")
    seed("expect-continue", req("PUT", "/v1/kv/e", "value",
                                headers=["Expect: 100-continue"]))
    seed("body-declared-too-large", b"PUT /v1/kv/x HTTP/1.1\r\nHost: a\r\n"
         b"Content-Length: 5000\r\n\r\nxxxx")
    seed("body-short", b"PUT /v1/kv/x HTTP/1.1\r\nHost: a\r\n"
         b"Content-Length: 10\r\n\r\nabc")
    seed("chunked-too-large", b"POST /v1/txn HTTP/1.1\r\nHost: a\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n1001\r\n" + b"x" * 4097 +
         b"\r\n0\r\n\r\n")
    seed("chunked-bad", b"POST /set HTTP/1.1\r\nHost: a\r\n"
         b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    seed("forwarded-header", req("PUT", "/v1/kv/f", "v",
                                 headers=["X-Raftkv-Forwarded: 1"]))
    seed("redirect-param", req("PUT", "/v1/kv/f?redirect", "v"))
    seed("absolute-target", req("GET", "http://127.0.0.1/health"))
    seed("asterisk-target", req("OPTIONS", "*"))
    seed("many-headers", req("GET", "/health",
                             headers=[f"X-H{i}: {'v' * 40}" for i in range(60)]))
    # 431 needs more than 64 KiB of headers: larger than -max_len, so the
    # fuzzer only sees a prefix of it, but regress.sh replays it whole.
    seed("headers-too-large", req("GET", "/health",
                                  headers=[f"X-Big: {'b' * 8000}"] * 9))
    seed("upgrade-h2c", req("GET", "/health", headers=[
        "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]))


# fuzz_request.c's CONN_SEPARATOR: the parts go out on separate connections
# at once, so their requests reach the server in one loop iteration.
SEP = b"\n--next-connection--\n"


def conns(*parts):
    return SEP.join(p if isinstance(p, bytes) else p.encode() for p in parts)


def group_commit():
    """Writes from several connections in one loop iteration share one Raft
    entry (group commit): outcomes and transaction results must go back to
    the right client."""
    seed("gc-puts", conns(*[req("PUT", f"/v1/kv/gc{i}", f"v{i}")
                            for i in range(4)]))
    seed("gc-cas-race", conns(*[req("PUT", "/v1/kv/race?cas=0", f"w{i}")
                                for i in range(3)]))
    txn = lambda i: js({
        "compare": [{"key": f"t{i}", "version": 0}],
        "success": [{"op": "put", "key": f"t{i}", "value": str(i)},
                    {"op": "get", "key": f"t{i}"}],
        "failure": [{"op": "get", "key": f"t{i}"},
                    {"op": "delete", "key": f"t{i}"}]})
    seed("gc-txns", conns(*[req("POST", "/v1/txn", txn(i)) for i in range(3)]),)
    seed("gc-txns-twice", conns(*[req("POST", "/v1/txn", txn(i)) +
                                  req("POST", "/v1/txn", txn(i))
                                  for i in range(3)]))
    seed("gc-reads-and-writes", conns(
        req("PUT", "/v1/kv/r", "1"), req("GET", "/v1/kv/r"),
        req("GET", "/get?key=r&consistency=linearizable"),
        req("GET", "/v1/kv?prefix=r"), req("PUT", "/v1/kv/r", "2")))
    seed("gc-mixed", conns(
        req("POST", "/set", js({"key": "m", "value": "1"})),
        req("DELETE", "/delete?key=m"),
        req("DELETE", "/v1/kv/m?cas=0"),
        req("POST", "/v1/txn", js({"success": [{"op": "get", "key": "m"}]})),
        req("PUT", "/v1/kv/m?cas=0", "x"),
        req("GET", "/v1/status")))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_request_seeds.py DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    reference()
    kv()
    txn()
    cluster()
    http()
    group_commit()
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main()
