"""raftkv nodes running inside the namespaces of a `hosts.Net`.

Each node is one process started with nsenter (which execs, so the PID we
hold is the server's and signals reach it directly), listening on
<its ip>:7000 (Raft) and <its ip>:8000 (HTTP).  Its data directory lives on
a tmpfs of its own (so a "disk full" fault can fill exactly that disk); its
log is on the real disk under the run directory so it survives teardown.

Every node runs with the diskfault shim preloaded (inert until its control
file says otherwise) and, when the cluster is built with clock=True, with
libfaketime reading a per-node offset file, so a fault can be injected
into a live process without restarting it.

Every incarnation of every node is remembered with how it ended, so the
"no crash" check can tell a death we caused (SIGKILL, a disk fault that
must stop the node) from one we did not.
"""

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import client
from hosts import Mount

RAFT_PORT = 7000
HTTP_PORT = 8000
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


def remove_faketime_files(pid):
    """libfaketime keeps a shared-memory segment and a semaphore per process
    in /dev/shm and removes them only when the process exits normally; a node
    killed by a fault leaves them behind, two files per incarnation, run
    after run.  Called once the process is gone."""
    for name in ("faketime_shm_%d" % pid, "sem.faketime_sem_%d" % pid):
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except FileNotFoundError:
            pass
STOP_TIMEOUT = 10.0


class WaitTimeout(AssertionError):
    pass


def wait_for(fn, timeout, what, interval=0.1):
    """Poll fn() until truthy; raise WaitTimeout naming `what` and the last
    value or exception seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except AssertionError as e:
            last = str(e)
        except OSError as e:
            last = "%s: %s" % (type(e).__name__, e)
        if time.monotonic() >= deadline:
            raise WaitTimeout("timed out after %.1f s waiting for %s; last: %s"
                              % (timeout, what, str(last)[:800]))
        time.sleep(interval)


class Incarnation:
    def __init__(self, pid, started, log_offset):
        self.pid = pid
        self.started = started
        self.log_offset = log_offset
        self.ended = None
        self.code = None
        self.expected = None     # why it was allowed to end (None: it was not)


class Node:
    def __init__(self, cluster, i):
        self.cluster = cluster
        self.i = i
        self.name = "n%d" % (i + 1)
        self.ip = cluster.net.ips[i]
        self.raft_addr = "%s:%d" % (self.ip, RAFT_PORT)
        self.http_addr = "%s:%d" % (self.ip, HTTP_PORT)
        run = cluster.run_dir
        self.disk_path = run / ("%s-disk-%s" % (cluster.net.tag, self.name))
        self.data_dir = self.disk_path / "data"
        self.log_path = run / "logs" / ("%s.log" % self.name)
        self.ctl_path = run / "ctl" / ("%s.diskfault" % self.name)
        self.clock_path = run / "ctl" / ("%s.faketime" % self.name)
        self.cwd = run / "cwd" / self.name     # a crash leaves its core file here
        self.join = None
        self.proc = None
        self.paused = False
        self.incarnations = []
        self.disk = None
        self.set_disk_fault("off")
        self.set_clock("+0")

    # -- fault controls ------------------------------------------------------
    def set_disk_fault(self, spec):
        """spec e.g. "fsync=EIO", "write=ENOSPC" or "off" (see shim/diskfault.c)."""
        self.ctl_path.parent.mkdir(parents=True, exist_ok=True)
        data = spec.encode().ljust(256, b" ")
        fd = os.open(str(self.ctl_path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, 0)   # same size every time: the shim maps it
        finally:
            os.close(fd)

    def set_clock(self, offset):
        """libfaketime offset such as "+3600" or "-86400" (seconds)."""
        tmp = self.clock_path.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        os.replace(tmp, self.clock_path)

    # -- process -------------------------------------------------------------
    def argv(self):
        o = self.cluster.opts
        argv = [str(self.cluster.bin), "--node-id", self.name,
                "--raft-addr", self.raft_addr, "--http-addr", self.http_addr,
                "--data-dir", str(self.data_dir),
                "--election-timeout", str(o["election_timeout"]),
                "--heartbeat-timeout", str(o["heartbeat_timeout"]),
                "--snapshot-threshold", str(o["snapshot_threshold"]),
                "--snapshot-trailing", str(o["snapshot_trailing"]),
                "--log-level", o["log_level"]]
        if self.join:
            argv += ["--join", self.join]
        return argv

    def env(self):
        env = dict(os.environ)
        preload = [str(self.cluster.shim)]
        if self.cluster.clock:
            preload.append(FAKETIME_LIB)
            env.update(FAKETIME_TIMESTAMP_FILE=str(self.clock_path), FAKETIME_NO_CACHE="1",
                       FAKETIME_DONT_FAKE_MONOTONIC="1")
        env.update(LD_PRELOAD=" ".join(preload), DISKFAULT_DIR=str(self.data_dir),
                   DISKFAULT_CTL=str(self.ctl_path))
        if self.cluster.sanitized:
            env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
        return env

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def current(self):
        return self.incarnations[-1] if self.incarnations else None

    def reap(self):
        """Record how the current incarnation ended, if it did."""
        inc = self.current
        if inc is not None and inc.ended is None and self.proc.poll() is not None:
            inc.ended = time.monotonic()
            inc.code = self.proc.returncode
        return inc

    def spawn(self):
        assert not self.alive, "%s is running" % self.name
        if self.disk is None:
            self.disk = Mount(self.disk_path, self.cluster.opts["disk_mb"])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.cluster.net.ns_argv(self.i, self.argv())
        with open(self.log_path, "ab") as log:
            log.write(("\n=== faults: start #%d of %s at %s: %s\n" % (
                len(self.incarnations) + 1, self.name, time.strftime("%H:%M:%S"),
                " ".join(self.argv()))).encode())
            log.flush()
            offset = log.tell()
            self.cwd.mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env(),
                                         cwd=str(self.cwd), start_new_session=True,
                                         preexec_fn=_allow_core_dumps)
        self.paused = False
        self.incarnations.append(Incarnation(self.proc.pid, time.monotonic(), offset))
        self.cluster.procs.append(self.proc)

    def start(self, timeout=30):
        self.spawn()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=30):
        def ok():
            if self.proc.poll() is not None:
                self.reap()
                raise _Died("%s exited with %s while starting:\n%s"
                            % (self.name, self.proc.returncode, self.tail(20)))
            a = client.request(self.http_addr, "GET", "/health", timeout=1)
            return a.status == 200
        try:
            wait_for(ok, timeout, "%s to answer /health" % self.name)
        except _Died as e:
            raise AssertionError(str(e)) from None

    def signal(self, sig):
        if self.alive:
            self.proc.send_signal(sig)

    def kill(self, why="killed on purpose"):
        if not self.alive:
            return
        self.current.expected = why
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)
        self.paused = False
        self.reap()

    def pause(self):
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self, why="stopped by the test"):
        """SIGTERM, wait, then SIGKILL.  Returns (exit code, problem or None)."""
        if self.proc is None:
            return None, None
        if self.proc.poll() is not None:
            self.reap()
            return self.proc.returncode, None
        self.current.expected = why
        if self.paused:
            self.resume()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
            problem = None
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)
            problem = ("%s did not exit within %.0f s of SIGTERM (killed)"
                       % (self.name, STOP_TIMEOUT))
        self.reap()
        code = self.proc.returncode
        if problem is None and code != 0:
            problem = "%s exited with %s on SIGTERM%s" % (
                self.name, code, " (signal %d)" % -code if code < 0 else "")
        return code, problem

    # -- logs ----------------------------------------------------------------
    def log_text(self, since_start=False, incarnation=None):
        """The whole log, or only what one incarnation (default: the
        current one when since_start) wrote."""
        inc = incarnation or (self.current if since_start else None)
        try:
            with open(self.log_path, "rb") as f:
                if inc is None:
                    return f.read().decode("utf-8", "replace")
                f.seek(inc.log_offset)
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        cut = text.find("\n=== faults: start #")
        return text if cut < 0 else text[:cut]

    def tail(self, lines=30, since_start=False):
        return "\n".join(self.log_text(since_start).splitlines()[-lines:])

    def status(self, timeout=2.0):
        return client.status(self.http_addr, timeout)

    def __repr__(self):
        return "<%s %s pid=%s>" % (self.name, self.http_addr, self.proc.pid if self.proc else None)


class _Died(AssertionError):
    pass


def _allow_core_dumps():
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


class Cluster:
    DEFAULTS = dict(election_timeout=1000, heartbeat_timeout=100, snapshot_threshold=256,
                    snapshot_trailing=64, log_level="info", disk_mb=256)

    def __init__(self, net, run_dir, bin_path, shim, clock=False, sanitized=False, **opts):
        self.net = net
        self.run_dir = Path(run_dir)
        self.bin = Path(bin_path)
        self.shim = Path(shim)
        self.clock = clock
        self.sanitized = sanitized
        self.opts = dict(self.DEFAULTS, **opts)
        self.procs = []
        self.nodes = [Node(self, i) for i in range(net.n)]
        self.api = None

    def by_name(self, name):
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout=60):
        """n1 alone (it bootstraps when the first /join arrives), the others
        with --join n1; returns once all agree on a leader and n voters."""
        first = self.nodes[0]
        first.start()
        for n in self.nodes[1:]:
            n.join = first.http_addr
            n.spawn()
        for n in self.nodes[1:]:
            n.wait_healthy()
        self.wait_converged(timeout)
        forced = os.environ.get("FAULTS_API", "auto")
        self.api = {"v1": client.V1API, "legacy": client.LegacyAPI}.get(forced, lambda: None)() \
            or client.api_for(first.http_addr)
        return self

    def statuses(self, nodes=None):
        out = {}
        for n in nodes or self.nodes:
            out[n.name] = n.status() if n.alive and not n.paused else None
        return out

    def leader(self):
        """The node reporting role leader at the highest term, or None."""
        best = None
        for name, s in self.statuses().items():
            if s and s.get("role") == "leader":
                if best is None or s["term"] > best[1]["term"]:
                    best = (name, s)
        return self.by_name(best[0]) if best else None

    def wait_leader(self, timeout=30):
        return wait_for(self.leader, timeout, "a leader")

    def voters(self, status):
        return sorted(m["id"] for m in status.get("members", []) if m.get("role") == "voter")

    def wait_converged(self, timeout=60, nodes=None):
        """All `nodes` (default: all) alive, agreeing on one leader, with every
        node a voter."""
        nodes = nodes or self.nodes
        names = sorted(n.name for n in self.nodes)

        def check():
            st = self.statuses(nodes)
            missing = [k for k, s in st.items() if s is None]
            assert not missing, "no status from %s" % missing
            leaders = {(s.get("leader") or {}).get("id") for s in st.values()}
            assert len(leaders) == 1 and None not in leaders, "leaders seen: %s" % leaders
            for k, s in st.items():
                assert self.voters(s) == names, "%s sees voters %s" % (k, self.voters(s))
            return self.by_name(leaders.pop())

        return wait_for(check, timeout, "every node to agree on a leader and %s voters"
                        % len(names))

    def close(self):
        """Stop every node by PID; returns problems found while stopping."""
        problems = []
        # SIGTERM to all first, then wait for each: stopping is parallel.
        stopping = [n for n in self.nodes if n.alive]
        for n in stopping:
            n.current.expected = "teardown"
            if n.paused:
                n.resume()
            n.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for n in stopping:
            try:
                n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.send_signal(signal.SIGKILL)
                n.proc.wait(timeout=STOP_TIMEOUT)
                problems.append("%s did not exit within %.0f s of SIGTERM at teardown (killed)"
                                % (n.name, STOP_TIMEOUT))
            n.reap()
            code = n.proc.returncode
            if code > 0:
                problems.append("%s exited with %d on SIGTERM at teardown:\n%s"
                                % (n.name, code, n.tail(10, since_start=True)))
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=STOP_TIMEOUT)
        for n in self.nodes:
            if n.disk is not None:
                n.disk.close()
            if self.clock:
                for inc in n.incarnations:
                    remove_faketime_files(inc.pid)
        return problems

    def unexpected_deaths(self):
        """Incarnations that ended without us causing or allowing it."""
        out = []
        for n in self.nodes:
            if n.proc is not None:
                n.reap()
            for k, inc in enumerate(n.incarnations):
                if inc.ended is None or (inc.expected or "").startswith("its disk"):
                    continue   # running, or judged by the nemesis's disk fault
                code = inc.code
                how = "signal %d" % -code if code is not None and code < 0 else "exit %s" % code
                log = n.log_text(incarnation=inc)
                if code is not None and code < 0 and code != -signal.SIGKILL:
                    out.append("%s (start #%d, pid %d) died by %s%s:\n%s" % (
                        n.name, k + 1, inc.pid, how,
                        " while %s" % inc.expected if inc.expected else "",
                        "\n".join(log.splitlines()[-15:]) + _cores(n)))
                elif inc.expected is None:
                    out.append("%s (start #%d, pid %d) ended on its own (%s):\n%s" % (
                        n.name, k + 1, inc.pid, how,
                        "\n".join(log.splitlines()[-15:]) + _cores(n)))
        return out


def _cores(node):
    cores = sorted(str(p) for p in node.cwd.glob("core*")) if node.cwd.exists() else []
    return ("\n(core files: %s)" % ", ".join(cores)) if cores else ""
