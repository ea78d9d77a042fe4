"""A small harness for the raftkv cluster tests.

It starts real ``raftkv`` processes on free localhost ports, each with its own
fresh data directory and a log file (stdout+stderr) under pytest's tmp_path,
talks to them over HTTP with keep-alive connections (http.client), and stops
every process it started by PID (SIGTERM, wait up to 10 s, then SIGKILL).

Nothing here sleeps blindly: every wait is ``wait_until(fn, timeout, what)``,
which polls ``fn`` every ~50 ms and fails with a message saying what it waited
for and the last value (or exception) it saw.

Environment:
  RAFTKV_BIN            binary to test (default: <repo>/raftkv)
  RAFTKV_SANITIZED=1    the binary has ASan+UBSan: sanitizer options are set
                        for the processes, deadlines are stretched, and at
                        teardown every node must exit 0 on SIGTERM with no
                        sanitizer report in its log
  RAFTKV_TIMEOUT_SCALE  multiply every deadline (default 1, or 3 sanitized)
"""

import collections
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("RAFTKV_BIN") or (REPO / "raftkv")).resolve()
SANITIZED = os.environ.get("RAFTKV_SANITIZED") == "1"
SCALE = float(os.environ.get("RAFTKV_TIMEOUT_SCALE") or (3 if SANITIZED else 1))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:")
STOP_TIMEOUT = 10.0          # seconds between SIGTERM and SIGKILL
MiB = 1024 * 1024


def scaled(seconds):
    return seconds * SCALE


def _short(value, limit=600):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "...(%d chars)" % len(text)


class WaitTimeout(AssertionError):
    pass


class Abort(AssertionError):
    """Raised by a wait_until condition to give up at once (no point waiting)."""


def wait_until(fn, timeout, what, interval=0.05, scale=True):
    """Poll fn() every `interval` s until it returns something truthy; return it.

    fn may also raise (AssertionError with a message is the idiom for "not yet,
    and here is why"): the exception is remembered as the last value seen.
    `timeout` is multiplied by RAFTKV_TIMEOUT_SCALE unless scale=False.
    """
    limit = scaled(timeout) if scale else timeout
    deadline = time.monotonic() + limit
    last = "<never evaluated>"
    while True:
        try:
            value = fn()
        except Abort:
            raise
        except Exception as e:  # noqa: BLE001 - remembered and reported
            last = "%s: %s" % (type(e).__name__, e)
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout("timed out after %.1f s waiting for %s; last value seen: %s"
                              % (limit, what, _short(last)))
        time.sleep(interval)


_ports_lock = threading.Lock()
_ports_given = set()


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago (never the same twice)."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("could not find a free port")


def port_taken(port):
    """Is something else listening on 127.0.0.1:port right now?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def process_env():
    env = dict(os.environ)
    if SANITIZED:
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1"
    return env


def sanitizer_findings(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def dir_size(path):
    """Sum of the apparent sizes (st_size) of all files under path."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass  # a segment or snapshot removed while we walked
    return total


def dir_listing(path):
    out = []
    for root, _dirs, files in os.walk(path):
        for name in sorted(files):
            p = os.path.join(root, name)
            try:
                out.append("%10d %s" % (os.lstat(p).st_size, os.path.relpath(p, path)))
            except FileNotFoundError:
                pass
    return "\n".join(out)


# --------------------------------------------------------------------------
# HTTP


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def header(self, name):
        return self.headers.get(name) if self.headers is not None else None

    def __repr__(self):
        return "<HTTP %s %s>" % (self.status, _short(self.body.decode("utf-8", "replace"), 300))


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


class HttpClient:
    """One keep-alive HTTP/1.1 connection to one address (not thread-safe).

    A request that fails because the server closed a reused idle connection is
    retried once on a fresh connection; every other failure is raised.
    """

    def __init__(self, addr, timeout=10.0):
        self.addr = addr
        self.host, self.port = split_addr(addr)
        self.timeout = scaled(timeout)
        self._conn = None

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method, path, body=None, headers=None, timeout=None):
        if isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):
            conn = self._conn
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(
                    self.host, self.port,
                    timeout=scaled(timeout) if timeout else self.timeout)
            elif timeout:
                conn.timeout = scaled(timeout)
                if conn.sock is not None:
                    conn.sock.settimeout(scaled(timeout))
            self._conn = None
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError, http.client.BadStatusLine):
                conn.close()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                if timeout and conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
                self._conn = conn
            return Response(resp.status, resp.reason, resp.headers, data)
        raise AssertionError("unreachable")

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post_json(self, path, obj, **kw):
        return self.request("POST", path, body=json.dumps(obj),
                            headers={"Content-Type": "application/json"}, **kw)

    def set(self, key, value, **kw):
        return self.post_json("/set", {"key": key, "value": value}, **kw)

    def get_key(self, key, **kw):
        return self.get("/get?key=" + urllib.parse.quote(key, safe=""), **kw)


def request_once(addr, method, path, body=None, headers=None, timeout=10.0):
    """One request on a fresh connection that is closed afterwards."""
    c = HttpClient(addr, timeout=timeout)
    try:
        return c.request(method, path, body=body, headers=headers)
    finally:
        c.close()


def raw_exchange(addr, payload, timeout=10.0):
    """Send raw bytes on a new socket and parse whatever HTTP response comes back."""
    host, port = split_addr(addr)
    with socket.create_connection((host, port), timeout=scaled(timeout)) as sock:
        sock.sendall(payload)
        resp = http.client.HTTPResponse(sock, method="GET")
        resp.begin()
        try:
            body = resp.read()
        except http.client.IncompleteRead as e:
            body = e.partial
        return Response(resp.status, resp.reason, resp.headers, body)


# --------------------------------------------------------------------------
# Nodes


class Node:
    """One raftkv process: its flags, ports, data dir and log survive restarts."""

    def __init__(self, cluster, name, args=(), join=None, data_dir=None,
                 cwd=None, reference_flags=False, argv_builder=None):
        self.cluster = cluster
        self.name = name
        self.extra_args = list(args)
        self.join = join                        # "HOST:PORT" or None
        self.cwd = Path(cwd or cluster.workdir)
        self.reference_flags = reference_flags  # only --node-id/--raft-port/--http-port
        self.argv_builder = argv_builder        # node -> full argv, replaces the default
        if data_dir is None:
            data_dir = (self.cwd / "data" / name) if reference_flags \
                else (cluster.tmp / "nodes" / name)
        self.data_dir = Path(data_dir)
        self.log_path = cluster.tmp / "logs" / ("%s.log" % name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.raft_port = free_port()
        self.http_port = free_port()
        self.proc = None
        self.starts = 0
        self.killed_on_purpose = False   # the current incarnation was SIGKILLed by a test
        self.expect_exit = False         # a test stopped or killed the current incarnation
        self.problems = []               # collected at teardown
        self._local = threading.local()

    # -- addresses -------------------------------------------------------
    @property
    def http_addr(self):
        return "127.0.0.1:%d" % self.http_port

    @property
    def raft_addr(self):
        return "127.0.0.1:%d" % self.raft_port

    @property
    def raft_dir(self):
        return self.data_dir / "raft"

    @property
    def kv_dir(self):
        return self.data_dir / "kv"

    def argv(self):
        if self.argv_builder is not None:
            return self.argv_builder(self)
        argv = [str(BIN), "--node-id", self.name,
                "--raft-port", str(self.raft_port),
                "--http-port", str(self.http_port)]
        if not self.reference_flags:
            argv += ["--data-dir", str(self.data_dir)]
        if self.join:
            argv += ["--join", self.join]
        return argv + self.extra_args

    # -- process control -------------------------------------------------
    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _spawn(self):
        self.starts += 1
        argv = self.argv()
        with open(self.log_path, "ab") as log:
            log.write(("\n=== harness: start #%d of %s at %s: %s\n"
                       % (self.starts, self.name, time.strftime("%H:%M:%S"),
                          " ".join(argv))).encode())
            log.flush()
            self._log_offset = log.tell()
            self.proc = subprocess.Popen(
                argv, cwd=str(self.cwd), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env=process_env(),
                start_new_session=True)
        self.killed_on_purpose = False
        self.expect_exit = False
        self.cluster.register_process(self.proc)

    def log_since_start(self):
        with open(self.log_path, "rb") as f:
            f.seek(getattr(self, "_log_offset", 0))
            return f.read().decode("utf-8", "replace")

    def start(self, timeout=30):
        """Start (or restart, with the very same flags) and wait for /health.

        On the first start, if the process dies and an address was in use (its
        log says so, or one of its ports is taken right now), retry with new
        ports: someone took a port between free_port() and the server's bind.
        """
        assert not self.alive, "%s is already running" % self.name
        for attempt in range(5):
            self._spawn()
            try:
                self.wait_healthy(timeout)
                return self
            except AssertionError:
                log = self.log_since_start().lower()
                in_use = ("in use" in log or "eaddrinuse" in log
                          or port_taken(self.raft_port) or port_taken(self.http_port))
                if self.proc.poll() is not None and in_use and self.starts == attempt + 1:
                    self.raft_port = free_port()
                    self.http_port = free_port()
                    continue
                raise
        raise AssertionError("%s: could not find free ports after 5 attempts" % self.name)

    def wait_healthy(self, timeout=30):
        def healthy():
            if self.proc.poll() is not None:
                self.expect_exit = True   # reported here; not again at teardown
                raise _ProcessExited("%s exited with code %s while starting; log:\n%s"
                                     % (self.name, self.proc.returncode,
                                        self.tail(30)))
            r = request_once(self.http_addr, "GET", "/health", timeout=2)
            assert r.status == 200, r
            return True
        try:
            wait_until(healthy, timeout, "%s to answer GET /health with 200" % self.name)
        except WaitTimeout as e:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with code %s while starting; log tail:\n%s"
                                     % (self.name, self.proc.returncode, self.tail(30))) from e
            raise

    def kill(self):
        """SIGKILL on purpose (a crash); no exit-code or sanitizer checks for it."""
        assert self.alive, "%s is not running" % self.name
        self.killed_on_purpose = True
        self.expect_exit = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=scaled(STOP_TIMEOUT))
        self._drop_connections()

    def stop(self, check=True, sig=signal.SIGTERM):
        """SIGTERM (or `sig`), wait up to 10 s, then SIGKILL.  Returns the exit code.

        A clean shutdown must exit 0: with check=True anything else fails the
        caller; either way it is recorded and reported at teardown.
        """
        assert self.proc is not None, "%s was never started" % self.name
        assert self.alive or self.expect_exit, \
            "%s had already died on its own (exit code %s)" % (self.name, self.proc.returncode)
        self.expect_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self._wait_or_kill()
        self._drop_connections()
        if check:
            assert rc == 0, ("%s exited with %s after signal %s (want 0); log tail:\n%s"
                             % (self.name, rc, sig, self.tail(30)))
        return rc

    def _wait_or_kill(self):
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)
            self.problems.append("%s did not exit within %.0f s of SIGTERM/SIGINT (SIGKILLed)"
                                 % (self.name, STOP_TIMEOUT))
            return "timeout"
        if rc != 0:
            self.problems.append("%s exited with code %s after SIGTERM/SIGINT (want 0)"
                                 % (self.name, rc))
        return rc

    def restart(self, timeout=30):
        if self.alive:
            self.stop()
        return self.start(timeout)

    # -- logs --------------------------------------------------------------
    def log_text(self):
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines=40):
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])

    # -- HTTP helpers ------------------------------------------------------
    @property
    def http(self):
        """This thread's keep-alive connection to the node."""
        c = getattr(self._local, "client", None)
        if c is None or c.port != self.http_port:
            c = HttpClient(self.http_addr)
            self._local.client = c
            self.cluster.register_client(c)
        return c

    def _drop_connections(self):
        c = getattr(self._local, "client", None)
        if c is not None:
            c.close()

    def check_not_dead(self):
        """Raise Abort (stop waiting at once) if the process died on its own."""
        if self.proc is not None and not self.expect_exit and self.proc.poll() is not None:
            raise NodeDied("%s died on its own (exit code %s); log tail:\n%s"
                           % (self.name, self.proc.returncode, self.tail(30)))

    def request(self, method, path, body=None, headers=None, fresh=False, timeout=None):
        try:
            if fresh:
                return request_once(self.http_addr, method, path, body=body,
                                    headers=headers, timeout=timeout or 10)
            return self.http.request(method, path, body=body, headers=headers, timeout=timeout)
        except (OSError, http.client.HTTPException):
            self.check_not_dead()
            raise

    def get(self, key):
        return self.request("GET", "/get?key=" + urllib.parse.quote(key, safe=""))

    def value(self, key):
        r = self.get(key)
        assert r.status == 200, "%s: GET /get?key=%s -> %r" % (self.name, key, r)
        data = r.json
        assert isinstance(data, dict) and isinstance(data.get("data"), str), \
            "%s: GET /get?key=%s: bad body %r" % (self.name, key, r)
        return data["data"]

    def set(self, key, value, timeout=None):
        return self.request("POST", "/set", body=json.dumps({"key": key, "value": value}),
                            headers={"Content-Type": "application/json"}, timeout=timeout)

    def status(self):
        r = self.request("GET", "/v1/status")
        assert r.status == 200, "%s: GET /v1/status -> %r" % (self.name, r)
        s = r.json
        assert isinstance(s, dict), "%s: /v1/status body is not a JSON object: %r" % (self.name, r)
        return s

    def __repr__(self):
        return "<Node %s raft=%s http=%s pid=%s>" % (self.name, self.raft_addr,
                                                     self.http_addr, self.pid)


class _ProcessExited(Abort):
    pass


class NodeDied(Abort):
    pass


# --------------------------------------------------------------------------
# Cluster


class Cluster:
    """All raftkv processes of one test, and the waits that involve several."""

    def __init__(self, tmp_path):
        self.tmp = Path(tmp_path)
        self.workdir = self.tmp / "cwd"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = []
        self._procs = []
        self._clients = []
        self._clients_lock = threading.Lock()

    # -- bookkeeping -------------------------------------------------------
    def register_process(self, proc):
        self._procs.append(proc)

    def register_client(self, client):
        with self._clients_lock:
            self._clients.append(client)

    def node(self, name, args=(), join=None, start=True, **kw):
        """Create (and by default start) a node.  join may be a Node or "HOST:PORT"."""
        if isinstance(join, Node):
            join = join.http_addr
        n = Node(self, name, args=args, join=join, **kw)
        self.nodes.append(n)
        if start:
            n.start()
        return n

    def by_name(self, name):
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def by_http_addr(self, addr):
        _host, port = split_addr(addr)
        for n in self.nodes:
            if n.http_port == port:
                return n
        return None

    def alive_nodes(self):
        return [n for n in self.nodes if n.alive]

    # -- cluster formation -------------------------------------------------
    def start_nodes(self, count, args=()):
        """node1 (pristine, no --join) plus node2..nodeN started with --join node1.

        Returns the nodes once all agree on one leader and on `count` voters.
        """
        first = self.node("node1", args=args)
        others = [self.node("node%d" % i, args=args, join=first, start=False)
                  for i in range(2, count + 1)]
        for n in others:
            n._spawn()
        for n in others:
            n.wait_healthy()
        nodes = [first] + others
        self.wait_converged(nodes)
        return nodes

    def wait_converged(self, nodes, timeout=60):
        """Wait until every node in `nodes` reports the same leader (one of them,
        whose role is "leader") and exactly these nodes as voters.  Returns the
        leader Node."""
        names = sorted(n.name for n in nodes)

        def check():
            st = {n.name: n.status() for n in nodes}
            leaders = {(s.get("leader") or {}).get("id") for s in st.values()}
            assert len(leaders) == 1 and None not in leaders, \
                "leaders seen: %s" % {k: s.get("leader") for k, s in st.items()}
            leader = leaders.pop()
            assert leader in names, "leader %r is not one of %s" % (leader, names)
            assert st[leader]["role"] == "leader", \
                "%s is named leader but has role %r" % (leader, st[leader]["role"])
            for name, s in st.items():
                voters = sorted(m["id"] for m in s["members"] if m.get("role") == "voter")
                assert voters == names, "%s sees voters %s" % (name, voters)
            return self.by_name(leader)

        return wait_until(check, timeout,
                          "nodes %s to agree on one leader and on voters %s" % (names, names))

    def wait_leader(self, nodes=None, timeout=30, min_term=0):
        """A node that reports role "leader" at a term > min_term (highest term wins)."""
        nodes = nodes or self.alive_nodes()

        def check():
            best = None
            for n in nodes:
                try:
                    s = n.status()
                except (OSError, http.client.HTTPException):
                    continue
                if s.get("role") == "leader" and s.get("term", 0) > min_term:
                    if best is None or s["term"] > best[1]["term"]:
                        best = (n, s)
            assert best, "no node among %s is leader above term %d" % (
                [n.name for n in nodes], min_term)
            return best[0]

        return wait_until(check, timeout, "a leader among %s" % [n.name for n in nodes])

    def wait_caught_up(self, node, reference, timeout=60):
        """Wait until node.applied_index >= reference.applied_index (read once
        writes have stopped) and return node's status."""
        target = reference.status()["applied_index"]

        def check():
            s = node.status()
            assert s["applied_index"] >= target, \
                "%s applied_index %s < %s's %s" % (node.name, s["applied_index"],
                                                    reference.name, target)
            return s

        return wait_until(check, timeout, "%s to apply up to index %d like %s"
                          % (node.name, target, reference.name))

    def wait_has_all(self, node, expected, timeout=60):
        """Wait until node's local /get returns every key of `expected` with its value."""
        remaining = dict(expected)
        client = HttpClient(node.http_addr)
        self.register_client(client)

        def check():
            for key, want in list(remaining.items()):
                try:
                    r = client.get_key(key)
                except (OSError, http.client.HTTPException):
                    node.check_not_dead()
                    raise
                got = r.json.get("data") if r.status == 200 and isinstance(r.json, dict) else r
                if got != want:
                    raise AssertionError(
                        "%d of %d keys still missing or different on %s, e.g. %r: got %s, want %s"
                        % (len(remaining), len(expected), node.name, key,
                           _short(got, 80), _short(want, 80)))
                del remaining[key]
            return True

        try:
            return wait_until(check, timeout, "%s to hold all %d expected keys"
                              % (node.name, len(expected)))
        finally:
            client.close()

    # -- teardown ----------------------------------------------------------
    def close(self):
        """Stop every node by PID; return a list of problems (empty if clean)."""
        with self._clients_lock:
            for c in self._clients:
                c.close()
        problems = []
        running = []
        for n in self.nodes:
            if n.proc is None:
                continue
            if n.proc.poll() is not None:
                if not n.expect_exit:
                    problems.append("%s died on its own during the test (exit code %s)"
                                    % (n.name, n.proc.returncode))
                continue
            n.proc.send_signal(signal.SIGTERM)
            running.append(n)
        for n in running:
            n._wait_or_kill()
        for n in self.nodes:
            problems.extend(n.problems)
            found = sanitizer_findings(n.log_text())
            if found:
                problems.append("%s's log contains sanitizer reports: %s (see %s)"
                                % (n.name, ", ".join(found), n.log_path))
        # Belt and braces: nothing we started may outlive the test.
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=STOP_TIMEOUT)
        return problems

    def log_tails(self, lines=40):
        out = []
        for n in self.nodes:
            out.append("===== %s (pid %s, %s) log %s — last %d lines =====\n%s"
                       % (n.name, n.pid, "running" if n.alive else
                          "exited %s" % (n.proc.returncode if n.proc else "never started"),
                          n.log_path, lines, n.tail(lines)))
        return "\n".join(out)


# --------------------------------------------------------------------------
# Load


class Writer:
    """Writes keys in background threads through whichever node is the leader.

    Thread t writes key "<prefix>-<t>-<j % key_space>" with value
    "<tag><j>" (padded to value_size), for j = 0, 1, ... (forever until stop()
    or `per_thread` writes).  A write is recorded in `acked` only when the
    server answered 200 with an index.  On 421 it follows leader.http_addr;
    on 503, connection errors and timeouts it retries the same key/value
    (idempotent) on the next live node.
    """

    def __init__(self, cluster, prefix, threads=1, per_thread=None, value_size=0,
                 key_space=None, tag="v", timeout=10.0):
        self.cluster = cluster
        self.prefix = prefix
        self.threads = threads
        self.per_thread = per_thread
        self.value_size = value_size
        self.key_space = key_space
        self.tag = tag
        self.timeout = timeout
        self.acked = {}            # key -> value, in order of acknowledgement
        self.ack_times = []        # monotonic time of every ack
        self.ack_addrs = []        # the node address that acknowledged it
        self.unexpected = []       # (addr, key, status, body) other than 200/421/503
        self.statuses = collections.Counter()   # every answer, e.g. {200: 950, 421: 3}
        self.no_retry_after = []   # 503 answers without a Retry-After header
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self.errors = []           # exceptions that killed a writer thread

    def key_value(self, t, j):
        k = j if self.key_space is None else j % self.key_space
        key = "%s-%d-%d" % (self.prefix, t, k)
        value = "%s%d" % (self.tag, j)
        if self.value_size > len(value):
            value += "." * (self.value_size - len(value))
        return key, value

    def start(self):
        for t in range(self.threads):
            th = threading.Thread(target=self._run_guarded, args=(t,),
                                  name="writer-%s-%d" % (self.prefix, t), daemon=True)
            self._threads.append(th)
            th.start()
        return self

    def _run_guarded(self, t):
        try:
            self._run(t)
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.errors.append(e)

    def _addrs(self):
        return [n.http_addr for n in self.cluster.alive_nodes()]

    def _run(self, t):
        clients = {}
        addrs = self._addrs()
        addr = addrs[0] if addrs else None
        j = 0
        while not self._stop.is_set() and (self.per_thread is None or j < self.per_thread):
            key, value = self.key_value(t, j)
            while not self._stop.is_set():
                if addr is None:
                    self._stop.wait(0.05)
                    addrs = self._addrs()
                    addr = random.choice(addrs) if addrs else None
                    continue
                client = clients.get(addr)
                if client is None:
                    client = clients[addr] = HttpClient(addr, timeout=self.timeout)
                try:
                    r = client.set(key, value)
                except (OSError, http.client.HTTPException) as e:
                    with self.lock:
                        self.statuses[type(e).__name__] += 1
                    client.close()
                    addr = self._next(addr)
                    self._stop.wait(0.05)
                    continue
                with self.lock:
                    self.statuses[r.status] += 1
                    if r.status == 503 and not r.header("Retry-After"):
                        self.no_retry_after.append((addr, r.body[:200]))
                if r.status == 200 and isinstance(r.json, dict) and "index" in r.json:
                    with self.lock:
                        self.acked.pop(key, None)   # keep dict order = ack order
                        self.acked[key] = value
                        self.ack_times.append(time.monotonic())
                        self.ack_addrs.append(addr)
                    j += 1
                    break
                if r.status == 421:
                    hint = ((r.json or {}).get("leader") or {}).get("http_addr")
                    if hint and hint != addr:
                        addr = hint
                    else:
                        addr = self._next(addr)
                        self._stop.wait(0.05)
                    continue
                if r.status != 503:
                    with self.lock:
                        self.unexpected.append((addr, key, r.status, r.body[:200]))
                self._stop.wait(0.05)
                addr = self._next(addr)
        for c in clients.values():
            c.close()

    def _next(self, addr):
        addrs = self._addrs()
        if not addrs:
            return None
        if addr in addrs:
            return addrs[(addrs.index(addr) + 1) % len(addrs)]
        return random.choice(addrs)

    @property
    def count(self):
        with self.lock:
            return len(self.ack_times)

    def first_ack_after(self, since, not_from=None):
        """Time of the first ack after `since` that did not come from `not_from`."""
        with self.lock:
            for t, addr in zip(self.ack_times, self.ack_addrs):
                if t > since and addr != not_from:
                    return t
        return None

    def snapshot(self):
        with self.lock:
            return dict(self.acked)

    def wait_acked(self, n, timeout=60):
        def check():
            assert not self.errors, "writer thread crashed: %r" % self.errors
            c = self.count
            assert c >= n, "%d writes acknowledged so far (unexpected answers: %s)" % (
                c, self.unexpected[-3:])
            return c
        return wait_until(check, timeout, "%d acknowledged writes" % n)

    def stop(self, timeout=60):
        self._stop.set()
        return self.join(timeout)

    def join(self, timeout=120):
        deadline = time.monotonic() + scaled(timeout)
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))
        alive = [th.name for th in self._threads if th.is_alive()]
        if alive:
            self._stop.set()
            raise AssertionError("writer threads %s still running after %.0f s (%d acked)"
                                 % (alive, scaled(timeout), self.count))
        if self.errors:
            raise AssertionError("writer thread crashed: %r" % self.errors)
        return self.count


# --------------------------------------------------------------------------
# v1 API helpers (docs/api.md) and shared clusters

import base64  # noqa: E402 - only these helpers need it


def quote_key(key):
    """Percent-encode a key (str as UTF-8, or bytes) for a URL path, "/" included."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    return urllib.parse.quote_from_bytes(key, safe="")


def query_string(params):
    """"?a=1&flag" from {"a": 1, "flag": None}; values are percent-encoded
    (str as UTF-8); None gives a bare name; an empty dict gives ""."""
    if not params:
        return ""
    parts = []
    for name, value in params.items():
        if value is None:
            parts.append(name)
        else:
            if not isinstance(value, (str, bytes)):
                value = str(value)
            parts.append("%s=%s" % (name, urllib.parse.quote(value, safe="")))
    return "?" + "&".join(parts)


def kv_path(key, **query):
    """/v1/kv/{key} with the key fully percent-encoded, plus a query string."""
    return "/v1/kv/" + quote_key(key) + query_string(query)


def v1_put(node, key, value, timeout=None, **query):
    if isinstance(value, str):
        value = value.encode("utf-8")
    return node.request("PUT", kv_path(key, **query), body=value,
                        headers={"Content-Type": "application/octet-stream"},
                        timeout=timeout)


def v1_get(node, key, timeout=None, **query):
    return node.request("GET", kv_path(key, **query), timeout=timeout)


def v1_delete(node, key, timeout=None, **query):
    return node.request("DELETE", kv_path(key, **query), timeout=timeout)


def v1_list(node, timeout=None, **query):
    return node.request("GET", "/v1/kv" + query_string(query), timeout=timeout)


def v1_txn(node, body, timeout=None):
    """POST /v1/txn; body is a JSON-able object, or str/bytes sent as is."""
    if not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    return node.request("POST", "/v1/txn", body=body,
                        headers={"Content-Type": "application/json"}, timeout=timeout)


def json_error_problem(r, statuses):
    """None if r has one of `statuses` (an int or a collection) and a JSON
    {"error": "<non-empty string>", ...} body; else a description of what is wrong."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    if r.status not in statuses:
        return "got %r, want %s" % (r, "/".join(str(s) for s in statuses))
    body = r.json
    if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]):
        return "%d but the body is not a JSON {\"error\": ...}: %r" % (r.status, r.body[:200])
    return None


def assert_json_error(r, statuses, what=""):
    problem = json_error_problem(r, statuses)
    assert problem is None, "%s%s" % (what + ": " if what else "", problem)
    return r.json


def requests_queued(port):
    """Connections to 127.0.0.1:`port` with bytes the server has not read yet
    (from /proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if int(local.split(":")[1], 16) == port and state == "01" and \
                    int(queues.split(":")[1], 16) > 0:
                count += 1
    return count


class paused:
    """Context manager: SIGSTOP the given nodes' processes, SIGCONT them on exit
    (also when the body fails).  resume(node) continues one of them early."""

    def __init__(self, *nodes):
        self.nodes = [n for n in nodes]
        self.stopped = []

    def __enter__(self):
        for n in self.nodes:
            assert n.alive, "%s is not running" % n.name
            os.kill(n.pid, signal.SIGSTOP)
            self.stopped.append(n)
        return self

    def resume(self, node):
        if node in self.stopped:
            self.stopped.remove(node)
            if node.alive:
                os.kill(node.pid, signal.SIGCONT)

    def __exit__(self, *exc):
        for n in list(self.stopped):
            self.resume(n)
        return False


def leader_and_followers(cluster, nodes=None, timeout=60):
    """Wait for `nodes` (default: all) to converge; return (leader, [followers])."""
    nodes = nodes or cluster.nodes
    leader = cluster.wait_converged(nodes, timeout)
    return leader, [n for n in nodes if n is not leader]


def shared_cluster_fixture(count, args=(), scope="module"):
    """A pytest fixture giving a Cluster of `count` nodes (start_nodes) that
    several tests share; stopped and checked like the `cluster` fixture once
    the last test of the scope is done.  Tests sharing it must leave every node
    running and the membership as they found it.  Use it in a test module as

        shared = shared_cluster_fixture(3)

        @pytest.fixture
        def kv(shared, request):
            return attach_cluster(request, shared)
    """
    import pytest

    @pytest.fixture(scope=scope)
    def fixture(tmp_path_factory):
        c = Cluster(tmp_path_factory.mktemp("shared%d" % count))
        try:
            c.start_nodes(count, args)
        except BaseException:
            c.close()
            raise
        yield c
        problems = c.close()
        if problems:
            pytest.fail("node problems found at teardown of a shared cluster:\n  "
                        + "\n  ".join(problems), pytrace=False)
    return fixture


def attach_cluster(request, cluster):
    """Have a failing test's report carry the node log tails of `cluster`
    (as the `cluster` fixture does).  Returns cluster."""
    request.node._raftkv_cluster = cluster
    return cluster


# Checked v1 calls: each asserts the documented shape of a successful answer.


def header_int(r, name):
    """The integer value of header `name` (which must be a plain decimal)."""
    value = r.header(name)
    assert value is not None and value.isdigit(), \
        "header %s is %r (want a decimal integer) in %r" % (name, value, r)
    return int(value)


def raw_meta(r):
    """Key metadata from the X-Raftkv-* headers of a raw GET."""
    return {"create_index": header_int(r, "X-Raftkv-Create-Index"),
            "mod_index": header_int(r, "X-Raftkv-Mod-Index"),
            "version": header_int(r, "X-Raftkv-Version")}


def meta(body):
    """The create_index/mod_index/version of a JSON answer."""
    return {f: body.get(f) for f in ("create_index", "mod_index", "version")}


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def put_ok(node, key, value, **query):
    """PUT that must answer 200 {"key", "index", "create_index", "mod_index", "version"}."""
    r = v1_put(node, key, value, **query)
    assert r.status == 200, "%s: PUT %s%s -> %r" % (node.name, key[:80], query_string(query), r)
    body = r.json
    assert isinstance(body, dict), r
    for f in ("index", "create_index", "mod_index", "version"):
        assert is_int(body.get(f)) and body[f] > 0, "PUT %s: field %s in %r" % (key[:80], f, body)
    assert body.get("key") == key, "PUT %s: the answer names key %r" % (key[:80], body.get("key"))
    assert body["mod_index"] == body["index"], "PUT: mod_index != index in %r" % body
    assert body["create_index"] <= body["index"], body
    return body


def get_raw(node, key, **query):
    """(value bytes, metadata from the X-Raftkv-* headers) of a GET that must be 200."""
    r = v1_get(node, key, **query)
    assert r.status == 200, "%s: GET %s%s -> %r" % (node.name, key[:80], query_string(query), r)
    ctype = (r.header("Content-Type") or "").split(";")[0].strip().lower()
    assert ctype == "application/octet-stream", \
        "GET %s: Content-Type %r" % (key[:80], r.header("Content-Type"))
    return r.body, raw_meta(r)


def get_json(node, key, **query):
    """The ?format=json body (value decoded to bytes) of a GET that must be 200."""
    r = v1_get(node, key, format="json", **query)
    assert r.status == 200, "%s: GET %s?format=json -> %r" % (node.name, key[:80], r)
    body = r.json
    assert isinstance(body, dict) and body.get("key") == key, "GET %s: %r" % (key[:80], r)
    for f in ("create_index", "mod_index", "version"):
        assert is_int(body.get(f)), "GET %s?format=json: %s in %r" % (key[:80], f, body)
    assert isinstance(body.get("value"), str), body
    body["value"] = base64.b64decode(body["value"], validate=True)
    return body


def send_body_read_answer(addr, method, path, body, headers=None, timeout=10.0):
    """One request on a new socket whose body is sent by a second thread while
    this one reads the answer: a server may refuse an oversized body (413) and
    close before reading it all, which a client that first sends everything
    would see as a reset instead of the answer."""
    host, port = split_addr(addr)
    head = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % addr,
            "Content-Length: %d" % len(body), "Connection: close"]
    head += ["%s: %s" % kv for kv in (headers or {}).items()]
    sock = socket.create_connection((host, port), timeout=scaled(timeout))
    sent = []

    def send():
        try:
            sock.sendall(body)
            sent.append(True)
        except OSError as e:
            sent.append(e)

    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        try:
            data = resp.read()
        except http.client.IncompleteRead as e:
            data = e.partial
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(scaled(timeout))
        return Response(resp.status, resp.reason, resp.headers, data)
    finally:
        sock.close()
