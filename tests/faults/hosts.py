"""Hosts for the fault tests: one network namespace per node, on one segment.

Why this layout (measured on this kind of machine, see
shared/notes/faults.md): a bridge in the root namespace is subject to the
host's FORWARD policy (bridge-nf-call-iptables) and silently drops traffic,
so the bridge lives in a namespace of its own.  Each node namespace has an
`eth0` veth whose peer is a bridge port; one more veth from the root
namespace into the bridge gives the test process an address on the same
/24, so it reaches every node without routing.  The /24 is picked at random
among 10.200-249.x.0/24 ranges that no route of the host uses, and exists
only on these interfaces.

Names carry the owner's pid (`rkf<pid hex>...`), so a run can clean up what
an earlier, crashed run left (namespaces, the root-side veth, processes in
those namespaces, tmpfs mounts) without touching a concurrent live run.

Faults on the network are iptables rules inside the node namespaces (each
namespace has its own tables, so a flush heals exactly one node):
  - `block(a, b)`: a drops every packet from b (one-way); a symmetric cut
    is block(a, b) + block(b, a)
  - `loss(a, p)`: a drops a fraction p of packets from the other nodes
Only node-to-node traffic is dropped: the test clients keep reaching every
node, as in Jepsen, so that a node on the wrong side of a partition is asked
to serve and must refuse (or time out) rather than answer stale data.
"""

import ipaddress
import os
import random
import re
import signal
import subprocess
import time

PREFIX = "rkf"
_counter = [0]


def sh(argv, check=True, timeout=20, input=None):
    """Run a command; raise with its stderr on failure (when check)."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s" % (
            p.returncode, " ".join(argv), p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


def available():
    """Why the suite cannot build hosts here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables, mounts)"
    for tool in ("ip", "iptables", "nsenter", "mount"):
        if subprocess.run(["which", tool], stdout=subprocess.DEVNULL).returncode != 0:
            return "missing tool %r (Debian: iproute2 iptables util-linux)" % tool
    return None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_OWNER = re.compile(r"^%s([0-9a-f]+)x" % PREFIX)


def _owner(name):
    m = _OWNER.match(name)
    return int(m.group(1), 16) if m else None


def cleanup_stale(log=print):
    """Remove namespaces, links and mounts left by runs whose process is gone."""
    removed = []
    for line in sh(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        owner = _owner(name)
        if owner is None or _pid_alive(owner):
            continue
        for pid in sh(["ip", "netns", "pids", name], check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)   # a node of the dead run
            except (ProcessLookupError, ValueError):
                pass
        sh(["ip", "netns", "del", name], check=False)
        removed.append(name)
    for line in sh(["ip", "-o", "link", "show"], check=False).splitlines():
        m = re.match(r"^\d+:\s+([^:@\s]+)", line)
        if m:
            owner = _owner(m.group(1))
            if owner is not None and not _pid_alive(owner):
                sh(["ip", "link", "del", m.group(1)], check=False)
                removed.append(m.group(1))
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for mnt in reversed(mounts):
        base = os.path.basename(mnt)
        owner = _owner(base)
        if owner is not None and not _pid_alive(owner):
            sh(["umount", "-l", mnt], check=False)
            removed.append(mnt)
    if removed:
        log("hosts: removed stale %s" % ", ".join(removed))
    return removed


def _used_networks():
    nets = []
    for line in sh(["ip", "-4", "-o", "addr", "show"], check=False).splitlines() + \
            sh(["ip", "-4", "route", "show", "table", "all"], check=False).splitlines():
        for tok in line.split():
            if re.match(r"^\d+\.\d+\.\d+\.\d+(/\d+)?$", tok):
                try:
                    nets.append(ipaddress.ip_network(tok, strict=False))
                except ValueError:
                    pass
    return nets


def pick_subnet(rng):
    used = _used_networks()
    for _ in range(200):
        net = ipaddress.ip_network("10.%d.%d.0/24" % (rng.randint(200, 249),
                                                      rng.randint(0, 255)))
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.x.y.0/24 found")


class Net:
    """n node namespaces + a bridge namespace + a root-side veth."""

    def __init__(self, n, rng=None, log=print):
        self.n = n
        self.log = log
        _counter[0] += 1
        self.tag = "%s%xx%d" % (PREFIX, os.getpid(), _counter[0])
        assert len(self.tag) + 3 <= 15, "interface names must fit in 15 bytes"
        rng = rng or random.Random()
        self.subnet = pick_subnet(rng)
        hosts = list(self.subnet.hosts())
        self.host_ip = str(hosts[0])                       # .1: the test process
        self.ips = [str(hosts[10 + i]) for i in range(n)]  # .11, .12, ...
        self.bridge_ns = self.tag + "-br"
        self.namespaces = ["%s-n%d" % (self.tag, i + 1) for i in range(n)]
        self.root_if = self.tag + "h"
        self.rules = {i: [] for i in range(n)}   # what each namespace has now
        self._up = False

    # -- setup / teardown ---------------------------------------------------
    def up(self):
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self._up = True
        return self

    def _build(self):
        br = self.bridge_ns
        sh(["ip", "netns", "add", br])
        sh(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", br, "link", "set", "br0", "up"])
        sh(["ip", "-n", br, "link", "set", "lo", "up"])
        for i, ns in enumerate(self.namespaces):
            a, b = "%sa%d" % (self.tag, i), "%sb%d" % (self.tag, i)
            sh(["ip", "netns", "add", ns])
            sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            sh(["ip", "link", "set", a, "netns", ns])
            sh(["ip", "link", "set", b, "netns", br])
            sh(["ip", "-n", ns, "link", "set", a, "name", "eth0"])
            sh(["ip", "-n", ns, "addr", "add", "%s/%d" % (self.ips[i], self.subnet.prefixlen),
                "dev", "eth0"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            sh(["ip", "-n", br, "link", "set", b, "master", "br0"])
            sh(["ip", "-n", br, "link", "set", b, "up"])
        peer = self.tag + "p"
        sh(["ip", "link", "add", self.root_if, "type", "veth", "peer", "name", peer])
        sh(["ip", "link", "set", peer, "netns", br])
        sh(["ip", "-n", br, "link", "set", peer, "master", "br0"])
        sh(["ip", "-n", br, "link", "set", peer, "up"])
        sh(["ip", "addr", "add", "%s/%d" % (self.host_ip, self.subnet.prefixlen),
            "dev", self.root_if])
        sh(["ip", "link", "set", self.root_if, "up"])
        self.log("hosts: %d namespaces %s-n1..n%d on %s (test process %s)"
                 % (self.n, self.tag, self.n, self.subnet, self.host_ip))

    def down(self):
        """Remove everything this Net created; safe to call twice."""
        for ns in self.namespaces:
            for pid in sh(["ip", "netns", "pids", ns], check=False).split():
                # Only processes inside our own namespaces: nodes that a
                # failed test left running.  Normally none remain.
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        sh(["ip", "link", "del", self.root_if], check=False)
        for ns in self.namespaces + [self.bridge_ns]:
            sh(["ip", "netns", "del", ns], check=False)
        self._up = False

    # -- running things inside ----------------------------------------------
    def ns_argv(self, i, argv):
        """argv that runs `argv` inside node i's namespace, as the same PID
        (nsenter execs), without a new mount namespace (unlike ip netns exec),
        so tmpfs mounts made by the test are seen by the node."""
        return ["nsenter", "--net=/run/netns/%s" % self.namespaces[i], "--"] + list(argv)

    def iptables(self, i, *args):
        sh(["ip", "netns", "exec", self.namespaces[i], "iptables", "-w", "5"] + list(args))

    # -- faults --------------------------------------------------------------
    def block(self, dst, src):
        """Node dst drops every packet coming from node src (one way)."""
        self.iptables(dst, "-A", "INPUT", "-s", self.ips[src], "-j", "DROP")
        self.rules[dst].append("drop from n%d" % (src + 1))

    def cut(self, a, b):
        self.block(a, b)
        self.block(b, a)

    def partition(self, groups):
        """Cut every pair of nodes that are in different groups."""
        where = {}
        for g, members in enumerate(groups):
            for m in members:
                where[m] = g
        for a in range(self.n):
            for b in range(self.n):
                if a != b and a in where and b in where and where[a] != where[b]:
                    self.block(a, b)

    def isolate(self, i):
        self.partition([[i], [j for j in range(self.n) if j != i]])

    def loss(self, i, probability):
        """Node i drops `probability` of the packets from the other nodes."""
        for j, ip in enumerate(self.ips):
            if j != i:
                self.iptables(i, "-A", "INPUT", "-s", ip, "-m", "statistic", "--mode",
                              "random", "--probability", "%.3f" % probability, "-j", "DROP")
        self.rules[i].append("loss %.0f%%" % (probability * 100))

    def heal(self, i=None):
        for j in ([i] if i is not None else range(self.n)):
            if self.rules[j]:
                self.iptables(j, "-F", "INPUT")
                self.iptables(j, "-F", "OUTPUT")
                self.rules[j] = []

    def describe(self):
        return {"n%d" % (i + 1): list(r) for i, r in self.rules.items() if r}


class Mount:
    """A tmpfs of `size_mb` at path (a node's disk); removed by close()."""

    def __init__(self, path, size_mb):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        sh(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0755" % size_mb, "tmpfs", self.path])
        self.size_mb = size_mb

    def free_bytes(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def close(self):
        for _ in range(20):
            if sh(["umount", self.path], check=False, timeout=10) == "" and \
                    not self.mounted():
                return
            time.sleep(0.1)   # a just-killed node may still hold files open
        sh(["umount", "-l", self.path], check=False)

    def mounted(self):
        with open("/proc/mounts") as f:
            return any(line.split()[1] == self.path for line in f)
