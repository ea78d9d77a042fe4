"""raftkv-cli, the command-line client, against real raftkv clusters.

Most tests drive the CLI through a follower, so they also exercise the
server's forwarding.  A few client mechanics that a healthy cluster never
shows on demand (503 + Retry-After, 307 redirects, the bound on attempts)
are pinned against a tiny scripted HTTP server instead.

Environment (besides harness.py's):
  RAFTKV_CLI   the client binary (default: <repo>/raftkv-cli, which `make`
               builds).  A missing binary fails every test here.
"""

import base64
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import REPO, free_port, sanitizer_findings, scaled, wait_until

CLI = Path(os.environ.get("RAFTKV_CLI") or (REPO / "raftkv-cli")).resolve()

assert CLI.exists(), "raftkv-cli not built (%s): run make, or set RAFTKV_CLI" % CLI

WRITE_OK = re.compile(rb"^OK index=(\d+) version=(\d+)\n$")
DEL_OK = re.compile(rb"^OK index=(\d+) deleted=(true|false)\n$")


# --------------------------------------------------------------------------
# Running the CLI


class CliResult:
    def __init__(self, argv, rc, out, err):
        self.argv = argv
        self.rc = rc
        self.out = out                                  # bytes
        self.err = err.decode("utf-8", "replace")

    @property
    def text(self):
        return self.out.decode("utf-8", "replace")

    def __repr__(self):
        return "<raftkv-cli %s: rc=%s stdout=%r stderr=%r>" % (
            " ".join(self.argv[1:]), self.rc, self.out[:400], self.err[:400])

    def ok(self):
        assert self.rc == 0 and self.err == "", self
        return self

    def failed(self, rc, *needles):
        """Exit code rc, nothing on stdout, exactly one stderr line containing
        every needle."""
        assert self.rc == rc, self
        assert self.out == b"", self
        lines = self.err.splitlines()
        assert len(lines) == 1 and self.err.endswith("\n"), \
            "want exactly one error line: %r" % self
        for n in needles:
            assert n in lines[0], "error line lacks %r: %r" % (n, self)
        return self


def cli(*args, endpoints=None, stdin=b"", env=None, timeout=60):
    """Run raftkv-cli once; endpoints: Nodes or "HOST:PORT" strings."""
    argv = [str(CLI)]
    if endpoints is not None:
        argv += ["--endpoints",
                 ",".join(e if isinstance(e, str) else e.http_addr for e in endpoints)]
    argv += list(args)
    full_env = dict(os.environ)
    full_env.pop("RAFTKV_ENDPOINTS", None)
    full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    full_env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    full_env.update(env or {})
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, env=full_env,
                           timeout=scaled(timeout))
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s did not exit within %.0f s; stderr: %r"
                             % (argv, scaled(timeout), e.stderr)) from None
    r = CliResult(argv, p.returncode, p.stdout, p.stderr)
    found = sanitizer_findings(r.err)
    assert not found, "sanitizer report from raftkv-cli: %s\n%s" % (found, r.err)
    return r


def followers(nodes, leader):
    return [n for n in nodes if n is not leader]


def status_lines(text):
    """`status` output -> {key: value}."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        assert sep, "status line without a colon: %r" % line
        out[key] = value.strip()
    return out


def wait_leader_is(nodes, name, timeout=30):
    def check():
        seen = {n.name: (n.status().get("leader") or {}).get("id") for n in nodes}
        assert set(seen.values()) == {name}, "leaders seen: %s" % seen
        return True
    wait_until(check, timeout, "every node to name %s as leader" % name)


# --------------------------------------------------------------------------
# Key-value commands


def test_put_get_del_through_follower(cluster):
    """put/get/del through a follower: put prints the commit index, get prints
    the value (with a newline; --raw without), a missing key exits 1 with the
    server's error, binary values round-trip via stdin, keys with "/", spaces
    and UTF-8 are percent-encoded so the server stores exactly that key, and a
    linearizable read on another follower sees a write acknowledged before."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    f1, f2 = followers(nodes, leader)

    r = cli("put", "cli/a", "hello world", endpoints=[f1]).ok()
    m = WRITE_OK.match(r.out)
    assert m and m.group(2) == b"1", r
    first_index = int(m.group(1))
    assert first_index > 0
    assert cli("get", "cli/a", endpoints=[f2]).ok().out == b"hello world\n"
    assert cli("get", "--raw", "cli/a", endpoints=[f2]).ok().out == b"hello world"

    r = cli("put", "cli/a", "second", endpoints=[f1]).ok()
    m = WRITE_OK.match(r.out)
    assert m and int(m.group(1)) > first_index and m.group(2) == b"2", r

    r = cli("get", "--json", "cli/a", endpoints=[f2]).ok()
    assert r.out.count(b"\n") == 1, r
    doc = json.loads(r.out)
    assert doc["key"] == "cli/a" and base64.b64decode(doc["value"]) == b"second", doc
    assert doc["version"] == 2 and doc["mod_index"] > first_index, doc

    binary = bytes(range(256)) * 3
    cli("put", "cli/bin", "-", endpoints=[f1], stdin=binary).ok()
    assert cli("get", "--raw", "cli/bin", endpoints=[f2]).ok().out == binary
    cli("put", "cli/empty", "", endpoints=[f1]).ok()
    assert cli("get", "--raw", "cli/empty", endpoints=[f2]).ok().out == b""

    odd = "cli/dir/sp ace?&=#%+ü€"
    cli("put", odd, "odd", endpoints=[f1]).ok()
    assert cli("get", odd, endpoints=[f2]).ok().out == b"odd\n"
    # The reference endpoint on the leader names the key by query: the same key.
    wait_until(lambda: leader.value(odd) == "odd", 10, "the odd key on the leader")
    cli("--", "put", "-dash", "-5", endpoints=[f1]).ok()
    assert cli("get", "--", "-dash", endpoints=[f2]).ok().out == b"-5\n"

    cli("get", "cli/missing", endpoints=[f2]).failed(1, "key not found", "cli/missing")
    r = cli("--json", "get", "cli/missing", endpoints=[f2])
    assert r.rc == 1 and json.loads(r.out)["error"] == "key not found", r

    r = cli("del", "cli/a", endpoints=[f1]).ok()
    m = DEL_OK.match(r.out)
    assert m and m.group(2) == b"true", r
    cli("get", "cli/a", endpoints=[f2]).failed(1, "key not found")
    r = cli("del", "cli/a", endpoints=[f2]).ok()
    m = DEL_OK.match(r.out)
    assert m and m.group(2) == b"false", r

    # Stale reads are served locally: the follower catches up on its own.
    cli("put", "cli/stale", "s", endpoints=[leader]).ok()
    wait_until(lambda: cli("--consistency", "stale", "get", "cli/stale",
                           endpoints=[f2]).out == b"s\n",
               10, "a stale read of cli/stale on %s" % f2.name)


def test_list(cluster):
    """list --prefix prints KEY<TAB>VALUE lines in byte order and nothing
    outside the prefix; --keys prints names; --limit stops early; --start/--end
    is half-open; and without --limit the CLI follows `next` past the
    server's default page of 1000."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    f1, _f2 = followers(nodes, leader)

    for i in range(5):
        cli("put", "ls/%d" % i, "v%d" % i, endpoints=[f1]).ok()
    cli("put", "ls/tab", "a\tb\nc", endpoints=[f1]).ok()
    cli("put", "lt", "outside", endpoints=[f1]).ok()
    cli("put", "lr", "outside", endpoints=[f1]).ok()

    r = cli("list", "--prefix", "ls/", endpoints=[f1]).ok()
    assert r.text.splitlines() == ["ls/%d\tv%d" % (i, i) for i in range(5)] + \
        ["ls/tab\ta\\tb\\nc"], r
    r = cli("list", "--prefix", "ls/", "--keys", endpoints=[f1]).ok()
    assert r.text.splitlines() == ["ls/%d" % i for i in range(5)] + ["ls/tab"], r
    r = cli("list", "--prefix", "ls/", "--keys", "--limit", "2", endpoints=[f1]).ok()
    assert r.text.splitlines() == ["ls/0", "ls/1"], r
    r = cli("list", "--start", "ls/1", "--end", "ls/3", "--keys", endpoints=[f1]).ok()
    assert r.text.splitlines() == ["ls/1", "ls/2"], r
    r = cli("list", "--start", "lt", "--keys", endpoints=[f1]).ok()
    assert r.text.splitlines() == ["lt"], r

    r = cli("--json", "list", "--prefix", "ls/", "--limit", "3", endpoints=[f1]).ok()
    lines = r.out.splitlines()
    assert len(lines) == 1, r
    page = json.loads(lines[0])
    assert [i["key"] for i in page["items"]] == ["ls/0", "ls/1", "ls/2"], page
    assert base64.b64decode(page["items"][0]["value"]) == b"v0", page

    count = 1001
    for i in range(count):
        r = leader.set("page/%04d" % i, "p")
        assert r.status == 200, r
    want = ["page/%04d" % i for i in range(count)]
    r = cli("list", "--prefix", "page/", "--keys", endpoints=[f1]).ok()
    assert r.text.splitlines() == want, "%d lines" % len(r.text.splitlines())
    r = cli("list", "--prefix", "page/", endpoints=[f1]).ok()
    assert r.text.splitlines() == [k + "\tp" for k in want]
    r = cli("list", "--prefix", "page/", "--keys", "--limit", "1000", endpoints=[f1]).ok()
    assert r.text.splitlines() == want[:1000]
    r = cli("--json", "list", "--prefix", "page/", "--keys", endpoints=[f1]).ok()
    pages = [json.loads(line) for line in r.out.splitlines()]
    assert len(pages) >= 2 and pages[-1]["next"] is None, [len(p["keys"]) for p in pages]
    assert [k for p in pages for k in p["keys"]] == want


def test_cas(cluster):
    """cas through a follower: MOD_INDEX 0 creates only if absent; a matching
    mod_index writes; a mismatch exits 1 with one stderr line naming the key's
    current mod_index and version (or that it does not exist), and --json puts
    the server's 409 body on stdout.  del --cas behaves the same way."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    f1, f2 = followers(nodes, leader)

    r = cli("cas", "cas/k", "0", "v1", endpoints=[f1]).ok()
    m = WRITE_OK.match(r.out)
    assert m and m.group(2) == b"1", r
    n1 = int(m.group(1))

    cli("cas", "cas/k", "0", "v2", endpoints=[f2]).failed(
        1, "compare failed", "mod_index=%d" % n1, "version=1", "cas/k")
    assert cli("get", "cas/k", endpoints=[f2]).ok().out == b"v1\n"

    r = cli("cas", "cas/k", str(n1), "v2", endpoints=[f2]).ok()
    m = WRITE_OK.match(r.out)
    assert m and m.group(2) == b"2", r
    n2 = int(m.group(1))
    assert n2 > n1
    assert cli("get", "cas/k", endpoints=[f1]).ok().out == b"v2\n"

    cli("cas", "cas/k", str(n1), "v3", endpoints=[f1]).failed(
        1, "compare failed", "mod_index=%d" % n2, "version=2")
    r = cli("--json", "cas", "cas/k", str(n1), "v3", endpoints=[f1])
    assert r.rc == 1 and len(r.err.splitlines()) == 1, r
    doc = json.loads(r.out)
    assert doc["error"] == "compare failed" and doc["current"]["mod_index"] == n2, doc

    cli("cas", "cas/absent", "5", "x", endpoints=[f1]).failed(
        1, "compare failed", "does not exist")

    cli("del", "--cas", str(n1), "cas/k", endpoints=[f2]).failed(
        1, "compare failed", "mod_index=%d" % n2)
    r = cli("del", "--cas", str(n2), "cas/k", endpoints=[f2]).ok()
    assert DEL_OK.match(r.out).group(2) == b"true", r
    cli("get", "cas/k", endpoints=[f1]).failed(1, "key not found")


# --------------------------------------------------------------------------
# Cluster commands


def test_members_and_status_output(cluster):
    """members: an aligned table with one row per node (id, role, addresses)
    and "*" on exactly the leader's row; status: "key: value" lines of the
    answering node; both with --json: the server's JSON on one line."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    f1, _f2 = followers(nodes, leader)

    r = cli("members", endpoints=[f1]).ok()
    lines = r.text.splitlines()
    assert lines[0].split() == ["ID", "ROLE", "RAFT_ADDR", "HTTP_ADDR", "LEADER"], r
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == sorted(n.name for n in nodes), r
    for n in nodes:
        want = [n.name, "voter", n.raft_addr, n.http_addr]
        if n is leader:
            want.append("*")
        assert rows[n.name] == want, r
    # Aligned: every column starts at the same offset on every line.
    starts = {lines[0].index("RAFT_ADDR")}
    starts |= {line.index(rows[line.split()[0]][2]) for line in lines[1:]}
    assert len(starts) == 1, r

    r = cli("--json", "members", endpoints=[f1]).ok()
    assert r.out.count(b"\n") == 1, r
    doc = json.loads(r.out)
    assert doc["leader"] == leader.name, doc
    assert sorted(m["id"] for m in doc["members"]) == sorted(n.name for n in nodes), doc
    assert [m["id"] for m in doc["members"] if m["leader"]] == [leader.name], doc

    r = cli("status", endpoints=[f1]).ok()
    st = status_lines(r.text)
    assert st["id"] == f1.name and st["role"] == "follower", r
    assert st["leader"].split()[0] == leader.name, r
    assert int(st["applied_index"]) > 0 and int(st["term"]) >= 1, r
    for n in nodes:
        assert n.name in st["members"], r

    r = cli("--json", "status", endpoints=[f1]).ok()
    assert r.out.count(b"\n") == 1, r
    doc = json.loads(r.out)
    assert doc["id"] == f1.name and doc["leader"]["id"] == leader.name, doc


def test_first_endpoint_down(cluster):
    """With the first endpoint killed (it was the leader), commands given
    --endpoints DEAD,A,B still work once the survivors have elected a leader;
    status answers from the first live endpoint.  With every endpoint down
    the CLI exits 3, naming each endpoint."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    f1, f2 = followers(nodes, leader)
    leader.kill()
    cluster.wait_leader([f1, f2])

    eps = [leader, f1, f2]
    cli("put", "down/k", "v", endpoints=eps).ok()
    assert cli("get", "down/k", endpoints=eps).ok().out == b"v\n"
    assert status_lines(cli("status", endpoints=eps).ok().text)["id"] == f1.name
    # Through the environment variable as well.
    r = cli("get", "down/k", env={"RAFTKV_ENDPOINTS": ",".join(n.http_addr for n in eps)})
    assert r.ok().out == b"v\n"

    f1.kill()
    f2.kill()
    r = cli("--timeout", "2", "get", "down/k", endpoints=eps)
    r.failed(3, leader.http_addr, f1.http_addr, f2.http_addr)


def test_leader_transfer(cluster):
    """leader transfer NAME (sent to another follower) moves leadership to NAME;
    leader transfer without a name moves it to some other voter; an unknown
    name exits 1."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    target, via = followers(nodes, leader)

    r = cli("leader", "transfer", target.name, endpoints=[via]).ok()
    assert r.out == ("OK leader=%s\n" % target.name).encode(), r
    wait_leader_is(nodes, target.name)

    r = cli("leader", "transfer", endpoints=[via]).ok()
    m = re.match(rb"^OK leader=(\S+)\n$", r.out)
    assert m and m.group(1).decode() != target.name, r
    wait_leader_is(nodes, m.group(1).decode())

    r = cli("leader", "transfer", "no-such-node", endpoints=[via])
    r.failed(1, "no-such-node")


def test_add_and_remove(cluster):
    """add NAME RAFT HTTP (through a follower) makes a fresh node a voter that
    gets the data; adding a taken name exits 1; remove NAME takes it out of
    every node's membership; removing it again exits 1."""
    nodes = cluster.start_nodes(3)
    leader = cluster.wait_converged(nodes)
    f1, _f2 = followers(nodes, leader)
    cli("put", "grow/k", "before", endpoints=[f1]).ok()

    n4 = cluster.node("node4")
    r = cli("--timeout", "60", "add", n4.name, n4.raft_addr, n4.http_addr,
            endpoints=[f1], timeout=120).ok()
    assert r.out == ("OK id=node4 role=voter raft_addr=%s http_addr=%s\n"
                     % (n4.raft_addr, n4.http_addr)).encode(), r
    cluster.wait_converged(nodes + [n4])
    cluster.wait_has_all(n4, {"grow/k": "before"}, 30)
    rows = [line.split()[0] for line in cli("members", endpoints=[n4]).ok().text.splitlines()[1:]]
    assert sorted(rows) == ["node1", "node2", "node3", "node4"], rows

    cli("add", "node2", "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port(),
        endpoints=[f1]).failed(1, "node2")

    r = cli("remove", "node4", endpoints=[f1]).ok()
    assert r.out == b"OK removed=node4\n", r
    cluster.wait_converged(nodes)
    rows = [line.split()[0] for line in cli("members", endpoints=[f1]).ok().text.splitlines()[1:]]
    assert sorted(rows) == ["node1", "node2", "node3"], rows
    cli("remove", "node4", endpoints=[f1]).failed(1, "node4")


# --------------------------------------------------------------------------
# Command line


USAGE = [
    # (case id, argv, text the error line must contain)
    ("no-command", [], "no command"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
    ("unknown-flag", ["--bogus", "status"], "--bogus"),
    ("get-no-key", ["get"], "get"),
    ("get-two-keys", ["get", "a", "b"], "get"),
    ("get-empty-key", ["get", ""], "empty"),
    ("put-no-value", ["put", "k"], "put"),
    ("cas-bad-index", ["cas", "k", "x1", "v"], "MOD_INDEX"),
    ("cas-negative-index", ["cas", "k", "-1", "v"], "-1"),
    ("timeout-word", ["--timeout", "soon", "status"], "--timeout"),
    ("timeout-zero", ["--timeout=0", "status"], "--timeout"),
    ("timeout-no-value", ["status", "--timeout"], "--timeout"),
    ("consistency-bad", ["--consistency", "eventual", "get", "k"], "--consistency"),
    ("endpoints-no-port", ["--endpoints", "localhost", "status"], "--endpoints"),
    ("endpoints-empty", ["--endpoints", ",", "status"], "--endpoints"),
    ("endpoints-bad-port", ["--endpoints", "h:99999", "status"], "--endpoints"),
    ("limit-zero", ["list", "--limit", "0"], "--limit"),
    ("prefix-and-start", ["list", "--prefix", "a", "--start", "b"], "--prefix"),
    ("prefix-on-get", ["get", "k", "--prefix", "a"], "--prefix"),
    ("raw-on-put", ["put", "k", "v", "--raw"], "--raw"),
    ("json-with-value", ["status", "--json=yes"], "json"),
    ("leader-no-sub", ["leader"], "leader"),
    ("leader-bad-sub", ["leader", "move", "node1"], "move"),
    ("add-missing-addr", ["add", "n4", "127.0.0.1:1"], "add"),
    ("del-bad-cas", ["del", "k", "--cas", "x"], "--cas"),
]


@pytest.mark.parametrize("argv,needle", [(a, n) for _i, a, n in USAGE],
                         ids=[c[0] for c in USAGE])
def test_usage_error_exits_2(argv, needle):
    """A bad command line exits 2 with one stderr line naming what is wrong,
    before contacting anything (the endpoint has nothing listening, which
    would otherwise give exit 3)."""
    cli(*argv, endpoints=["127.0.0.1:%d" % free_port()]).failed(2, needle)


def test_bad_endpoints_env_exits_2():
    r = cli("status", env={"RAFTKV_ENDPOINTS": "not an endpoint"})
    r.failed(2, "RAFTKV_ENDPOINTS")


def test_help_and_version():
    r = cli("--help").ok()
    assert r.text.startswith("Usage: raftkv-cli"), r
    for word in ("get", "put", "cas", "del", "list", "members", "add", "remove",
                 "leader transfer", "status", "--endpoints", "--consistency",
                 "--json", "--timeout", "RAFTKV_ENDPOINTS", "Exit status"):
        assert word in r.text, "--help does not mention %s" % word
    assert cli("help").ok().out == r.out
    version = (REPO / "VERSION").read_text().strip()
    r = cli("--version").ok()
    assert r.text.startswith("raftkv-cli %s" % version), r


def test_nothing_listening_exits_3():
    eps = ["127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()]
    cli("get", "k", endpoints=eps).failed(3, eps[0], eps[1])


# --------------------------------------------------------------------------
# Client mechanics against a scripted server


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True          # a handler held back by a test never blocks close()

    def handle_error(self, request, client_address):
        pass                       # the CLI hanging up on a slow answer is expected


class Scripted:
    """An HTTP server answering with respond(method, path, body) ->
    (status, headers, body); records (time, method, path, body) per request."""

    def __init__(self, respond):
        self.respond = respond
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                outer.requests.append((time.monotonic(), self.command, self.path, body))
                status, headers, payload = outer.respond(self.command, self.path, body)
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = _any

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.addr = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(respond):
        s = Scripted(respond)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


def _json(status, obj, headers=()):
    return status, [("Content-Type", "application/json")] + list(headers), \
        json.dumps(obj).encode()


UNAVAILABLE = _json(503, {"error": "no leader is known right now; retry"},
                    [("Retry-After", "1")])


def test_503_moves_to_next_endpoint_and_keys_are_encoded(scripted):
    """A 503 from the first endpoint sends the request on to the second at
    once; the key goes out percent-encoded, "/" included."""
    busy = scripted(lambda *_: UNAVAILABLE)
    good = scripted(lambda *_: (200, [("Content-Type", "application/octet-stream")], b"v"))
    t0 = time.monotonic()
    r = cli("get", "a/b c?ü", endpoints=[busy.addr, good.addr]).ok()
    assert r.out == b"v\n"
    assert time.monotonic() - t0 < scaled(5)
    assert len(busy.requests) == 1 and len(good.requests) == 1
    assert good.requests[0][2] == "/v1/kv/a%2Fb%20c%3F%C3%BC", good.requests


def test_503_retry_after_is_respected(scripted):
    """With one endpoint, a 503 with Retry-After: 1 is retried no sooner than
    about a second later."""
    answers = [UNAVAILABLE, _json(200, {"key": "k", "index": 7, "create_index": 7,
                                        "mod_index": 7, "version": 1})]
    s = scripted(lambda *_: answers.pop(0))
    r = cli("put", "k", "v", endpoints=[s.addr]).ok()
    assert r.out == b"OK index=7 version=1\n", r
    assert len(s.requests) == 2
    assert s.requests[1][0] - s.requests[0][0] >= 0.9, s.requests
    assert s.requests[1][3] == b"v"


def test_503_everywhere_gives_up_after_two_rounds(scripted):
    """When every attempt is a 503 the CLI stops after two rounds over the
    endpoints and exits 3 with the server's error text; for a write it says
    the outcome is unknown."""
    a = scripted(lambda *_: UNAVAILABLE)
    b = scripted(lambda *_: UNAVAILABLE)
    r = cli("put", "k", "v", endpoints=[a.addr, b.addr])
    r.failed(3, "no leader is known", a.addr, b.addr, "may or may not have been applied")
    assert len(a.requests) == 2 and len(b.requests) == 2, (a.requests, b.requests)


def test_307_redirect_is_followed_with_the_body(scripted):
    """A 307 (the server's ?redirect mode) is followed with the same method
    and body."""
    target = scripted(lambda *_: _json(200, {"key": "k", "index": 9, "create_index": 9,
                                             "mod_index": 9, "version": 1}))

    def redirect(method, path, body):
        return 307, [("Location", "http://%s%s" % (target.addr, path))], b""
    front = scripted(redirect)
    r = cli("cas", "k", "0", "payload", endpoints=[front.addr]).ok()
    assert r.out == b"OK index=9 version=1\n", r
    assert len(front.requests) == 1
    (_t, method, path, body), = target.requests
    assert (method, body) == ("PUT", b"payload")
    assert urllib.parse.urlsplit(path).query == "cas=0", path


def test_timeout_moves_to_next_endpoint(scripted):
    """An endpoint that accepts the request but never answers costs one
    --timeout, then the next endpoint serves it."""
    gate = threading.Event()

    def stuck_answer(*_):
        gate.wait(scaled(30))
        return UNAVAILABLE
    stuck = scripted(stuck_answer)
    good = scripted(lambda *_: (200, [("Content-Type", "application/octet-stream")], b"v"))
    try:
        t0 = time.monotonic()
        r = cli("--timeout", "0.5", "get", "k", endpoints=[stuck.addr, good.addr]).ok()
        elapsed = time.monotonic() - t0
    finally:
        gate.set()
    assert r.out == b"v\n"
    assert 0.4 <= elapsed < scaled(10), elapsed
    assert len(stuck.requests) == 1 and len(good.requests) == 1
