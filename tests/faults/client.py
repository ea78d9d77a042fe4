"""HTTP access to raftkv nodes, and what an answer means for the history.

Two APIs are spoken, chosen by probing the server once per cluster:
  legacy  POST /set, GET /get (a stale local read), GET /join -- what the
          server has today; writes go to the leader (421 names it)
  v1      PUT/GET /v1/kv/{key} with ?cas=N and linearizable reads,
          DELETE/POST /v1/cluster/members (docs/api.md)

Every operation used by a workload opens a fresh connection and closes it
afterwards, so "the request was never sent" (the connection was refused:
certainly no effect) is told apart from "sent, no answer" (a timeout or a
reset: the effect is unknown).  Bulk reads for the final checks reuse one
keep-alive connection per node (`Session`): there nothing is ambiguous.

How answers map to outcomes (conservative: when in doubt, "unknown", which
only costs the checker time):
  2xx                          ok
  4xx (400, 404, 409, 413, 421) fail -- refused before reaching the Raft log
                               (a v1 409 "compare failed" is an ok cas
                               whose result is False)
  503 "no leader is known"     fail (nothing was proposed)
  other 5xx, timeouts, resets  unknown
"""

import base64
import http.client
import json
import urllib.parse

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


class Answer:
    """What came back: outcome, status (or the exception's name), body."""

    def __init__(self, outcome, status=None, body=b"", headers=None, error=""):
        self.outcome = outcome
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.error = error

    @property
    def json(self):
        try:
            return json.loads(self.body)
        except (ValueError, TypeError):
            return None

    def note(self):
        if self.status is not None:
            text = self.body[:120].decode("utf-8", "replace") if self.body else ""
            return "%s %s" % (self.status, text)
        return self.error

    def __repr__(self):
        return "<Answer %s %s>" % (self.outcome, self.note())


def request(addr, method, path, body=None, headers=None, timeout=3.0):
    """One request on a fresh connection; never raises for network errors."""
    host, _, port = addr.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError as e:
            return Answer(FAIL, error="not sent: %s" % type(e).__name__)
        try:
            hdrs = {"Connection": "close"}
            hdrs.update(headers or {})
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            return Answer(UNKNOWN, error="no answer: %s" % (type(e).__name__ if not str(e)
                                                            else "%s %s" % (type(e).__name__, e)))
        return Answer(_classify(resp.status, data), resp.status, data,
                      {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def _classify(status, body):
    if 200 <= status < 300:
        return OK
    if 400 <= status < 500:
        return FAIL
    if status == 503 and b"no leader is known" in body:
        return FAIL
    return UNKNOWN


class Session:
    """Keep-alive connection to one node for bulk reads (raises on errors)."""

    def __init__(self, addr, timeout=5.0):
        host, _, port = addr.rpartition(":")
        self.addr = addr
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def get(self, path):
        for attempt in (0, 1):
            try:
                self.conn.request("GET", path)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        self.conn.close()


def q(key):
    return urllib.parse.quote(key, safe="")


def status(addr, timeout=2.0):
    """/v1/status as a dict, or None when the node does not answer."""
    a = request(addr, "GET", "/v1/status", timeout=timeout)
    return a.json if a.status == 200 and isinstance(a.json, dict) else None


def probe_api(addr):
    """'v1' if the node serves /v1/kv, else 'legacy'."""
    a = request(addr, "GET", "/v1/kv/%s?consistency=stale" % q("rkf-probe"), timeout=3)
    if a.status == 404 and b"key not found" in a.body:
        return "v1"
    if a.status == 200:
        return "v1"
    return "legacy"


class LegacyAPI:
    """Today's server.  Reads are stale local reads: not linearizable."""

    name = "legacy"
    linearizable_reads = False
    supports_cas = False
    supports_membership_removal = False

    def write(self, addr, key, value, timeout=3.0):
        return request(addr, "POST", "/set", json.dumps({"key": key, "value": value}),
                       {"Content-Type": "application/json"}, timeout)

    def read(self, addr, key, timeout=3.0):
        """(answer, value or None, mod_index or None)."""
        a = request(addr, "GET", "/get?key=" + q(key), timeout=timeout)
        if a.outcome == OK:
            doc = a.json
            if not isinstance(doc, dict) or not isinstance(doc.get("data"), str):
                return Answer(FAIL, a.status, a.body, error="malformed"), None, None
            return a, (doc["data"] or None), None   # "" = absent (values are never empty)
        return a, None, None

    def leader_hint(self, answer):
        if answer.status == 421 and isinstance(answer.json, dict):
            return (answer.json.get("leader") or {}).get("http_addr")
        return None

    def local_value(self, session, key):
        st, body = session.get("/get?key=" + q(key))
        if st != 200:
            raise AssertionError("GET /get on %s: %s %r" % (session.addr, st, body[:200]))
        return json.loads(body)["data"] or None

    def add_member(self, addr, name, raft_addr, http_addr, timeout=30.0):
        return request(addr, "GET", "/join?followerId=%s&followerAddr=%s&httpAddr=%s"
                       % (q(name), q(raft_addr), q(http_addr)), timeout=timeout)


class V1API(LegacyAPI):
    """docs/api.md: linearizable reads, CAS by mod_index, follower forwarding."""

    name = "v1"
    linearizable_reads = True
    supports_cas = True
    supports_membership_removal = True

    def write(self, addr, key, value, timeout=3.0):
        return request(addr, "PUT", "/v1/kv/" + q(key), value.encode(),
                       {"Content-Type": "application/octet-stream"}, timeout)

    def read(self, addr, key, timeout=3.0):
        a = request(addr, "GET", "/v1/kv/%s?format=json" % q(key), timeout=timeout)
        if a.status == 404 and b"key not found" in a.body:
            return Answer(OK, 404, a.body), None, 0
        if a.outcome == OK:
            doc = a.json
            try:
                value = base64.b64decode(doc["value"]).decode()
                return a, value, int(doc["mod_index"])
            except (KeyError, TypeError, ValueError):
                return Answer(FAIL, a.status, a.body, error="malformed"), None, None
        return a, None, None

    def cas(self, addr, key, mod_index, value, timeout=3.0):
        """(answer, swapped): swapped None unless the outcome is ok."""
        a = request(addr, "PUT", "/v1/kv/%s?cas=%d" % (q(key), mod_index), value.encode(),
                    {"Content-Type": "application/octet-stream"}, timeout)
        if a.status == 409 and b"compare failed" in a.body:
            return Answer(OK, 409, a.body), False
        if a.outcome == OK:
            return a, True
        return a, None

    def leader_hint(self, answer):
        return None   # followers forward

    def local_items(self, session, prefix=""):
        """Every key -> value under prefix in this node's own store."""
        out = {}
        token = None
        for _ in range(10000):
            path = "/v1/kv?consistency=stale&limit=10000&prefix=" + q(prefix)
            if token:
                path += "&continue=" + q(token)
            st, body = session.get(path)
            if st != 200:
                raise AssertionError("list on %s: %s %r" % (session.addr, st, body[:200]))
            doc = json.loads(body)
            for it in doc["items"]:
                out[it["key"]] = base64.b64decode(it["value"]).decode("utf-8", "replace")
            token = doc.get("next")
            if not token:
                return out
        raise AssertionError("listing did not end after 10000 pages")

    def local_value(self, session, key):
        st, body = session.get("/v1/kv/%s?format=json&consistency=stale" % q(key))
        if st == 404:
            return None
        if st != 200:
            raise AssertionError("GET on %s: %s %r" % (session.addr, st, body[:200]))
        return base64.b64decode(json.loads(body)["value"]).decode()

    def remove_member(self, addr, name, timeout=30.0):
        return request(addr, "DELETE", "/v1/cluster/members/" + q(name), timeout=timeout)

    def add_member(self, addr, name, raft_addr, http_addr, timeout=30.0):
        return request(addr, "POST", "/v1/cluster/members",
                       json.dumps({"id": name, "raft_addr": raft_addr, "http_addr": http_addr}),
                       {"Content-Type": "application/json"}, timeout)


def api_for(addr):
    return V1API() if probe_api(addr) == "v1" else LegacyAPI()

