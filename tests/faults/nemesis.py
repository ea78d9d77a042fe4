"""The nemesis: faults, a seeded schedule of them, and the runner.

A schedule is made up front from a seed (`make_schedule`), so the same seed
gives the same sequence of faults, targets and timings; targets named
"leader" are resolved when the fault starts (whoever leads then), and the
resolution is logged.  Faults run one at a time: start, hold for a while,
stop (heal), pause, next.  Every start and stop is appended to the
nemesis log (also written as JSON lines next to the node logs), which a
failure report prints.

Faults (name: what start does / what stop does):
  isolate-node     cut one random node from all other nodes / heal
  isolate-leader   the same for the current leader
  split-majority   a 3|2 (or n//2+1 | rest) split, leader on a chosen side
  one-way          the leader stops hearing from some nodes, or they from it
  loss             every node drops 5-25% of packets from the other nodes
  kill             SIGKILL a node (random or leader) / restart it
  pause            SIGSTOP a node (leader or random) / SIGCONT
  disk-fsync-eio   fsync/fdatasync under its data dir return EIO
  disk-write-eio   writes under its data dir return EIO
  disk-enospc      writes under its data dir return ENOSPC
  disk-full        its tmpfs is filled up to the last few KiB
  clock            its wall clock jumps by -3 d .. +3 d (libfaketime)
  membership       remove a node from the cluster / add it back (v1 API)

A disk fault expects the node to stop by itself with a clear log line
(exit 1, "FATAL") once it hits an error; stop() checks that, records a
problem when the node kept running after failing writes (or died some other
way), and restarts it with the fault removed.
"""

import json
import os
import signal
import threading
import time

import db

ALL = ["isolate-node", "isolate-leader", "split-majority", "one-way", "loss", "kill",
       "pause", "disk-fsync-eio", "disk-write-eio", "disk-enospc", "disk-full", "clock",
       "membership"]
DISK = {"disk-fsync-eio": "fsync=EIO", "disk-write-eio": "write=EIO",
        "disk-enospc": "write=ENOSPC"}


def make_schedule(rng, kinds, duration, n, on=(2.5, 5.0), off=(1.5, 3.0)):
    """Faults drawn from `kinds` (each at least once per round, shuffled)
    starting within `duration` seconds."""
    events = []
    t = rng.uniform(*off) / 2
    order = []
    while t < duration or not events:
        if not order:
            order = list(kinds)
            rng.shuffle(order)
        kind = order.pop()
        length = rng.uniform(*on)
        events.append({"at": round(t, 3), "fault": kind, "hold": round(length, 3),
                       "params": params_for(kind, rng, n)})
        t += length + rng.uniform(*off)
    return events


def params_for(kind, rng, n):
    anyone = rng.randrange(n)
    if kind == "isolate-node":
        return {"target": anyone}
    if kind == "isolate-leader":
        return {"target": "leader"}
    if kind == "split-majority":
        return {"leader_side": rng.choice(["minority", "majority"]),
                "order": rng.sample(range(n), n)}
    if kind == "one-way":
        return {"direction": rng.choice(["into-leader", "out-of-leader"]),
                "count": rng.randint(1, n - 1), "order": rng.sample(range(n), n)}
    if kind == "loss":
        return {"probability": round(rng.uniform(0.05, 0.25), 3)}
    if kind in ("kill", "pause", "clock", "membership") or kind in DISK or kind == "disk-full":
        p = {"target": "leader" if rng.random() < 0.5 else anyone}
        if kind == "clock":
            p["offset"] = rng.choice([-1, 1]) * rng.randint(60, 3 * 86400)
        return p
    raise ValueError("unknown fault %r" % kind)


class Nemesis:
    def __init__(self, cluster, log_path=None, say=print):
        self.cluster = cluster
        self.net = cluster.net
        self.log = []
        self.problems = []          # violations the nemesis itself observed
        self.log_path = log_path
        self.say = say
        self.active = None          # (kind, state) of the running fault
        self.removed = set()        # node names removed from the membership
        self.ballast = {}           # node name -> ballast path
        self.t0 = time.monotonic()
        self.stop_event = threading.Event()

    # -- bookkeeping ---------------------------------------------------------
    def record(self, what, **info):
        entry = {"t": round(time.monotonic() - self.t0, 3), "event": what}
        entry.update(info)
        self.log.append(entry)
        self.say("nemesis %7.3f %s %s" % (entry["t"], what, json.dumps(info, default=str)))
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry, default=str) + "\n")

    def restart(self, node, why):
        """Start a stopped node; a node that cannot start is a problem, not
        an exception that would abandon the run."""
        try:
            node.start()
            return True
        except AssertionError as e:
            self.problems.append("%s could not be restarted (%s): %s" % (node.name, why, e))
            return False

    def target(self, spec):
        if spec == "leader":
            leader = self.cluster.leader()
            if leader is not None:
                return leader
            live = [n for n in self.cluster.nodes if n.alive and not n.paused]
            return live[0] if live else self.cluster.nodes[0]
        return self.cluster.nodes[spec]

    # -- running a schedule ----------------------------------------------------
    def run(self, schedule, supported=None):
        """Run the schedule (blocking).  `supported(kind)` -> reason to skip or None."""
        self.t0 = time.monotonic()
        for ev in schedule:
            if self.stop_event.wait(max(0.0, self.t0 + ev["at"] - time.monotonic())):
                break
            why = supported(ev["fault"]) if supported else None
            if why:
                self.record("skip", fault=ev["fault"], reason=why)
                continue
            self.start(ev["fault"], ev["params"])
            self.stop_event.wait(ev["hold"])
            self.stop()

    def start(self, kind, params):
        state = {"kind": kind, "params": params}
        method = getattr(self, "_start_" + kind.replace("-", "_"), None)
        if method is None:
            method = self._start_disk if kind in DISK else None
        resolved = method(params, state)
        self.active = state
        self.record("start", fault=kind, params=params, resolved=resolved)

    def stop(self):
        if self.active is None:
            return
        state, self.active = self.active, None
        kind = state["kind"]
        method = getattr(self, "_stop_" + kind.replace("-", "_"), None)
        if method is None:
            method = self._stop_disk if kind in DISK else None
        result = method(state)
        self.record("stop", fault=kind, result=result)

    def heal_all(self):
        """Remove every fault and bring every node back."""
        self.stop()
        self.net.heal()
        for n in self.cluster.nodes:
            n.set_disk_fault("off")
            n.set_clock("+0")
            if n.paused:
                n.resume()
        for name, path in list(self.ballast.items()):
            _remove(path)
            del self.ballast[name]
        for n in self.cluster.nodes:
            if not n.alive:
                n.reap()
                self.restart(n, "healing")
        for name in sorted(self.removed):
            self._readd(self.cluster.by_name(name))
        self.record("healed")

    # -- network -----------------------------------------------------------------
    def _start_isolate_node(self, p, st):
        node = self.target(p["target"])
        self.net.isolate(node.i)
        return {"isolated": node.name}

    _start_isolate_leader = _start_isolate_node

    def _stop_isolate_node(self, st):
        self.net.heal()
        return "healed"

    _stop_isolate_leader = _stop_split_majority = _stop_one_way = _stop_loss = _stop_isolate_node

    def _start_split_majority(self, p, st):
        n = len(self.cluster.nodes)
        order = list(p["order"])
        leader = self.cluster.leader()
        big = n // 2 + 1
        if leader is not None:
            order.remove(leader.i)
            order.insert(0 if p["leader_side"] == "majority" else n - 1, leader.i)
        majority, minority = sorted(order[:big]), sorted(order[big:])
        self.net.partition([majority, minority])
        return {"majority": ["n%d" % (i + 1) for i in majority],
                "minority": ["n%d" % (i + 1) for i in minority],
                "leader": leader.name if leader else None}

    def _start_one_way(self, p, st):
        leader = self.target("leader")
        others = [i for i in p["order"] if i != leader.i][:p["count"]]
        for o in others:
            if p["direction"] == "into-leader":
                self.net.block(leader.i, o)     # the leader stops hearing o
            else:
                self.net.block(o, leader.i)     # o stops hearing the leader
        return {"leader": leader.name, "direction": p["direction"],
                "others": ["n%d" % (i + 1) for i in others]}

    def _start_loss(self, p, st):
        for i in range(len(self.cluster.nodes)):
            self.net.loss(i, p["probability"])
        return {"probability": p["probability"]}

    # -- processes -----------------------------------------------------------------
    def _start_kill(self, p, st):
        node = self.target(p["target"])
        st["node"] = node
        node.kill("killed by the nemesis")
        return {"killed": node.name}

    def _stop_kill(self, st):
        node = st["node"]
        ok = self.restart(node, "after SIGKILL")
        return {"restarted": node.name, "ok": ok, "pid": node.proc.pid}

    def _start_pause(self, p, st):
        node = self.target(p["target"])
        st["node"] = node
        node.pause()
        return {"paused": node.name}

    def _stop_pause(self, st):
        st["node"].resume()
        return {"resumed": st["node"].name}

    # -- disks ---------------------------------------------------------------------
    def _start_disk(self, p, st):
        node = self.target(p["target"])
        spec = DISK[st["kind"]]
        st.update(node=node, spec=spec, inc=node.current)
        if node.current is not None:
            node.current.expected = "its disk failing (%s)" % spec
        node.set_disk_fault(spec)
        return {"node": node.name, "fault": spec}

    def _stop_disk(self, st):
        node = st["node"]
        node.set_disk_fault("off")
        return self._after_disk_fault(node, st, "diskfault: injecting")

    def _start_disk_full(self, p, st):
        node = self.target(p["target"])
        st.update(node=node, inc=node.current, spec="disk full")
        if node.current is not None:
            node.current.expected = "its disk filling up"
        path = os.path.join(node.disk.path, "ballast")
        self.ballast[node.name] = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # The node keeps writing meanwhile, so a reservation of "all that
            # is free" can fail with ENOSPC (all or nothing): retry smaller.
            for _ in range(20):
                free = node.disk.free_bytes()
                if free <= 65536:
                    break
                try:
                    os.posix_fallocate(fd, os.fstat(fd).st_size, free - 32768)
                except OSError:
                    continue
            chunk = b"\0" * 4096
            for _ in range(64):     # the last pages, one at a time
                try:
                    os.write(fd, chunk)
                except OSError:
                    break
        finally:
            os.close(fd)
        free = node.disk.free_bytes()
        # The workloads write a few bytes per op, which LMDB's free pages
        # and libraft's preallocated segments absorb for a long time: a few
        # large values make the full disk matter within the fault's hold.
        acked = 0
        leader = self.cluster.leader()
        for k in range(16):
            if leader is None:
                break
            a = self.cluster.api.write(leader.http_addr, "fill-%d" % k, "f" * 65536, 3.0)
            acked += a.outcome == "ok"
            if not node.alive:
                break
        return {"node": node.name, "free_after": free, "large_writes_acked": acked}

    def _stop_disk_full(self, st):
        node = st["node"]
        _remove(self.ballast.pop(node.name, ""))
        return self._after_disk_fault(node, st, None)

    def _after_disk_fault(self, node, st, marker):
        """Judge how the node dealt with its failed disk; restart it clean."""
        inc = st["inc"]
        if inc is None or inc is not node.current:
            return {"node": node.name, "note": "restarted meanwhile"}
        text = node.log_text(incarnation=inc)
        hit = (marker in text) if marker else _looks_like_disk_error(text)
        result = {"node": node.name, "hit_errors": hit}
        # A node that hit an error gets a moment to finish stopping.
        if hit:
            try:
                db.wait_for(lambda: not node.alive, 3.0, "%s to stop" % node.name)
            except db.WaitTimeout:
                pass
        node.reap()
        if not node.alive:
            code = inc.code
            fatal = [ln for ln in text.splitlines() if "FATAL" in ln]
            result.update(exit=code, fatal=fatal[:1])
            if code != 1 or not fatal:
                self.problems.append(
                    "%s died with %s after its disk failed (%s); expected exit 1 with a "
                    "FATAL log line. Log tail:\n%s" % (
                        node.name, _how(code), st["spec"], _tail(text)) + db._cores(node))
            result["restarted"] = self.restart(node, "after its disk fault")
            return result
        if hit:
            age = time.monotonic() - inc.started
            self.problems.append(
                "%s kept running after its disk failed (%s): it hit injected errors but did "
                "not stop (must stop cleanly with a clear log line). Log tail:\n%s" % (
                    node.name, st["spec"], _tail(text)))
            inc.expected = "restarted after a disk fault"
            code, problem = node.stop("restarted after a disk fault")
            result.update(kept_running=True, exit_on_sigterm=code, uptime=round(age, 1))
            if problem:
                self.problems.append("after its disk fault: " + problem + "\n" + _tail(
                    node.log_text(incarnation=inc)))
            result["restarted"] = self.restart(node, "after its disk fault")
        else:
            inc.expected = None     # untouched: it must go on living
        return result

    # -- clock -----------------------------------------------------------------------
    def _start_clock(self, p, st):
        node = self.target(p["target"])
        st["node"] = node
        offset = "%+d" % p["offset"]
        node.set_clock(offset)
        return {"node": node.name, "offset_s": p["offset"],
                "preloaded": self.cluster.clock}

    def _stop_clock(self, st):
        st["node"].set_clock("+0")
        return {"node": st["node"].name}

    # -- membership ----------------------------------------------------------------------
    def _start_membership(self, p, st):
        node = self.target(p["target"])
        api = self.cluster.api
        via = next((n for n in self.cluster.nodes
                    if n is not node and n.alive and not n.paused), node)
        a = api.remove_member(via.http_addr, node.name)
        st.update(node=node)
        if a.status == 200:
            self.removed.add(node.name)
        elif a.status not in (409, 503, 504):
            self.problems.append("removing %s via %s answered %s" % (node.name, via.name,
                                                                   a.note()))
        return {"remove": node.name, "via": via.name, "answer": a.note()}

    def _stop_membership(self, st):
        node = st["node"]
        if node.name not in self.removed:
            return {"readd": node.name, "note": "was not removed"}
        return self._readd(node)

    def _readd(self, node):
        api = self.cluster.api
        answers = []
        for _ in range(5):
            via = next((n for n in self.cluster.nodes
                        if n is not node and n.alive and not n.paused), None)
            if via is None:
                break
            a = api.add_member(via.http_addr, node.name, node.raft_addr, node.http_addr)
            answers.append(a.note())
            if a.status == 200:
                self.removed.discard(node.name)
                return {"readd": node.name, "via": via.name, "answer": a.note()}
            if self.stop_event.wait(1.0):
                break
        self.problems.append("could not add %s back after removing it: %s"
                             % (node.name, answers))
        return {"readd": node.name, "answers": answers}


def _remove(path):
    try:
        os.unlink(path)
    except (FileNotFoundError, IsADirectoryError, TypeError):
        pass


def _looks_like_disk_error(text):
    low = text.lower()
    return any(s in low for s in ("no space", "enospc", "i/o error", "input/output",
                                  "fatal", "storage"))


def _how(code):
    if code is None:
        return "no exit code"
    if code < 0:
        return "signal %d (%s)" % (-code, signal.Signals(-code).name)
    return "exit %d" % code


def _tail(text, n=12):
    """The node's own last lines, plus a summary of the shim's (which would
    otherwise crowd them out)."""
    lines = text.splitlines()
    own = [ln for ln in lines if not ln.startswith("diskfault: ")]
    shim = [ln for ln in lines if ln.startswith("diskfault: ")]
    out = own[-n:]
    if shim:
        out.append("(%d injected-error lines from the shim, first and last:)" % len(shim))
        out += [shim[0]] + ([shim[-1]] if len(shim) > 1 else [])
    return "\n".join("    " + ln for ln in out)
