"""Bad requests get a precise 4xx, write nothing, and do not hurt the server."""

import http.client
import json

from harness import HttpClient, Response, raw_exchange, request_once, scaled, split_addr

MAX_KEY, MAX_VALUE, MAX_BODY = 16, 64, 512
LIMIT_ARGS = ["--max-key-size", str(MAX_KEY), "--max-value-size", str(MAX_VALUE),
              "--max-body-size", str(MAX_BODY)]
JSON_CT = {"Content-Type": "application/json"}


def _set_body(key, value):
    return json.dumps({"key": key, "value": value})


def _huge_content_length(addr):
    """POST /set declaring a 1 TiB body and sending none of it."""
    host, port = split_addr(addr)
    conn = http.client.HTTPConnection(host, port, timeout=scaled(10))
    try:
        conn.putrequest("POST", "/set")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(1 << 40))
        conn.endheaders()
        resp = conn.getresponse()
        return Response(resp.status, resp.reason, resp.headers, resp.read())
    finally:
        conn.close()


def test_bad_requests_are_rejected_and_write_nothing(cluster):
    """Each malformed or oversized request (bad JSON, wrong types, bad or oversized
    key/value/body/headers, unknown route, wrong method, bad /join, /get without key)
    gets its 4xx with a JSON {"error": ...} body (405 also with an Allow header);
    raw garbage and a bad request line on a socket get 400.  After every case the
    node still serves, a keep-alive connection opened before keeps working, and
    commit_index/last_log_index do not move."""
    node = cluster.node("node1", args=LIMIT_ARGS)
    # Bootstrap with a good write, and check the limits are inclusive.
    r = node.set("k" * MAX_KEY, "v" * MAX_VALUE)
    assert r.status == 200, "a key of %d and a value of %d bytes: %r" % (MAX_KEY, MAX_VALUE, r)
    assert node.value("k" * MAX_KEY) == "v" * MAX_VALUE
    # Field names are case-insensitive.
    r = node.request("POST", "/set", body='{"Key": "mixed", "VALUE": "case"}', headers=JSON_CT)
    assert r.status == 200, r
    assert node.value("mixed") == "case"

    before = node.status()
    keepalive = HttpClient(node.http_addr)
    cluster.register_client(keepalive)
    assert keepalive.get("/health").status == 200

    padded = _set_body("a", "b") + " " * (MAX_BODY + 10)
    cases = [
        # (what, method, path, body, extra headers, status)
        ("invalid JSON", "POST", "/set", '{"key": "a", "value": ', JSON_CT, 400),
        ("a JSON array", "POST", "/set", '["a", "b"]', JSON_CT, 400),
        ("a JSON string", "POST", "/set", '"key"', JSON_CT, 400),
        ("missing key", "POST", "/set", '{"value": "1"}', JSON_CT, 400),
        ("missing value", "POST", "/set", '{"key": "a"}', JSON_CT, 400),
        ("non-string value", "POST", "/set", '{"key": "a", "value": 23}', JSON_CT, 400),
        ("non-string key", "POST", "/set", '{"key": 5, "value": "1"}', JSON_CT, 400),
        ("empty key", "POST", "/set", _set_body("", "1"), JSON_CT, 400),
        ("empty body", "POST", "/set", "", JSON_CT, 400),
        ("key of max+1 bytes", "POST", "/set", _set_body("k" * (MAX_KEY + 1), "1"), JSON_CT, 400),
        ("value of max+1 bytes", "POST", "/set", _set_body("a", "v" * (MAX_VALUE + 1)),
         JSON_CT, 413),
        ("body over max-body-size", "POST", "/set", padded, JSON_CT, 413),
        ("headers over 64 KiB", "GET", "/get?key=a", None,
         {"X-Pad-%d" % i: "p" * 7000 for i in range(10)}, 431),
        ("unknown route", "GET", "/nope", None, None, 404),
        ("unknown route (POST)", "POST", "/v1/nope", "{}", JSON_CT, 404),
        ("GET /set", "GET", "/set", None, None, 405),
        ("DELETE /get", "DELETE", "/get?key=a", None, None, 405),
        ("POST /v1/status", "POST", "/v1/status", "{}", JSON_CT, 405),
        ("/join without parameters", "GET", "/join", None, None, 400),
        ("/join without followerAddr", "GET", "/join?followerId=node9", None, None, 400),
        ("/join without followerId", "GET", "/join?followerAddr=127.0.0.1:1", None, None, 400),
        ("/get without key", "GET", "/get", None, None, 400),
        ("/get with another parameter", "GET", "/get?kee=a", None, None, 400),
    ]
    failures = []

    def check_serving(what):
        r = request_once(node.http_addr, "GET", "/health")
        if r.status != 200:
            failures.append("after %s: /health -> %r" % (what, r))
        r = keepalive.get("/get?key=mixed")
        if r.status != 200 or r.json != {"data": "case"}:
            failures.append("after %s: keep-alive GET -> %r" % (what, r))

    def check_error(what, r, status):
        if r.status != status:
            failures.append("%s: got %r, want %d" % (what, r, status))
            return
        body = r.json
        if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]):
            failures.append("%s: %d but the body is not a JSON {\"error\": ...}: %r"
                            % (what, status, r.body[:200]))

    for what, method, path, body, headers, status in cases:
        r = request_once(node.http_addr, method, path, body=body, headers=headers)
        check_error(what, r, status)
        if status == 405:
            allow = r.header("Allow") or ""
            want = {"/set": "POST", "/get": "GET", "/v1/status": "GET"}[path.split("?")[0]]
            if want not in allow.upper():
                failures.append("%s: Allow header %r lacks %s" % (what, allow, want))
        check_serving(what)

    r = _huge_content_length(node.http_addr)
    check_error("declared Content-Length of 1 TiB", r, 413)
    check_serving("declared Content-Length of 1 TiB")

    for what, payload in [
            ("garbage bytes", b"\x00\x01\x02\xff\xfe garbage \x7f\r\n\r\n"),
            ("bad request line", b"THIS IS NOT HTTP\r\n\r\n"),
            ("request line without version", b"GET\r\nHost: x\r\n\r\n")]:
        try:
            r = raw_exchange(node.http_addr, payload)
        except (OSError, http.client.HTTPException) as e:
            failures.append("%s: no HTTP response (%r)" % (what, e))
        else:
            if r.status != 400:
                failures.append("%s: got %r, want 400" % (what, r))
        check_serving(what)

    after = node.status()
    for field in ("commit_index", "last_log_index", "applied_index"):
        if after[field] != before[field]:
            failures.append("%s moved from %s to %s across the bad requests"
                            % (field, before[field], after[field]))
    assert node.value("a") == "", "key 'a' was written by a bad request"
    assert not failures, "%d problems:\n  %s" % (len(failures), "\n  ".join(failures))
