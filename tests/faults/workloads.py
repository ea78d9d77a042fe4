"""Client workloads that run while the nemesis breaks things.

RegisterWorkload: >= 5 client threads, each bound to one node, run reads,
writes and compare-and-sets on a few dozen keys and record every op in a
`History` for the linearizability checker.  To keep histories checkable
(the search explodes on long per-key histories with many unknown ops):
every written value is unique, and a key is retired after `ops_per_key`
ops and replaced by a fresh one.  A cas is a read (recorded) followed by a
conditional put on the mod_index that read returned; since values are
unique, "mod_index matches" is the same as "the key still holds the value
read", so it is recorded as cas(value read -> new value).

SetWorkload: clients insert unique elements (key = element, value = the
element name); each attempt's outcome is kept, to check at the end that
every acknowledged element is on every node and nothing else is.

With the legacy API (today's server before /v1), writes go to the leader
(a 421 names it; that attempt is recorded as failed) and reads are local,
stale reads: the register history is then only informative.

Every loop is bounded by a stop event, a deadline and a maximum op count;
every request by its own timeout.
"""

import random
import threading
import time

from client import FAIL, OK, UNKNOWN
from history import CAS, READ, WRITE, History


class _Worker:
    def __init__(self, cluster, seed, clients, deadline_s, max_ops, pace):
        self.cluster = cluster
        self.api = cluster.api
        self.rng = random.Random(seed)
        self.clients = clients
        self.deadline = time.monotonic() + deadline_s
        self.max_ops = max_ops
        self.pace = pace            # seconds between one client's ops
        self.stop_event = threading.Event()
        self.threads = []
        self.errors = []
        self.op_timeout = 3.0

    def start(self):
        for c in range(self.clients):
            t = threading.Thread(target=self._guard, args=(c,), daemon=True,
                                 name="%s-%d" % (type(self).__name__, c))
            self.threads.append(t)
            t.start()
        return self

    def _guard(self, c):
        try:
            self.run_client(c, random.Random(self.rng.random()))
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            import traceback
            self.errors.append("client %d crashed: %s" % (c, traceback.format_exc()))
            raise e

    def running(self):
        return not self.stop_event.is_set() and time.monotonic() < self.deadline

    def node_for(self, c):
        nodes = self.cluster.nodes
        return nodes[c % len(nodes)]

    def stop(self, timeout=30):
        self.stop_event.set()
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            self.errors.append("client threads still running after %.0f s: %s" % (timeout, stuck))
        return self.errors


class RegisterWorkload(_Worker):
    def __init__(self, cluster, seed, clients=5, keys=24, ops_per_key=100,
                 deadline_s=600, max_ops=200000, pace=0.02):
        super().__init__(cluster, seed, clients, deadline_s, max_ops, pace)
        self.history = History()
        self.ops_per_key = ops_per_key
        self.keys_live = ["r%d" % k for k in range(keys)]
        self.next_key = keys
        self.key_ops = {}
        self.all_keys = set(self.keys_live)
        self.lock = threading.Lock()
        self.ops = 0
        self.write_target = {}   # legacy: client -> the node that took its last write

    def pick_key(self, rng):
        with self.lock:
            slot = rng.randrange(len(self.keys_live))
            key = self.keys_live[slot]
            n = self.key_ops.get(key, 0) + 1
            self.key_ops[key] = n
            if n >= self.ops_per_key:
                self.keys_live[slot] = "r%d" % self.next_key
                self.all_keys.add(self.keys_live[slot])
                self.next_key += 1
            self.ops += 1
            return key

    def run_client(self, c, rng):
        seq = 0
        while self.running() and self.ops < self.max_ops:
            node = self.node_for(c)
            key = self.pick_key(rng)
            r = rng.random()
            if r < 0.45:
                self.do_read(c, node, key)
            elif r < 0.8 or not self.api.supports_cas:
                seq += 1
                self.do_write(c, node, key, "c%d-%d" % (c, seq))
            else:
                seq += 1
                self.do_cas(c, node, key, "c%d-%d" % (c, seq))
            self.stop_event.wait(self.pace * (0.5 + rng.random()))

    def do_read(self, c, node, key):
        op = self.history.invoke(c, READ, key, None, node.name)
        a, value, mod = self.api.read(node.http_addr, key, self.op_timeout)
        # A read that got no answer changes nothing: recording it as failed
        # (rather than unknown) lets the checker drop it.
        self.history.finish(op, OK if a.outcome == OK else FAIL, value=value, note=a.note())
        return a.outcome == OK, value, mod

    def do_write(self, c, node, key, value):
        target = node
        if not self.api.linearizable_reads:
            target = self.write_target.get(c, node)
        op = self.history.invoke(c, WRITE, key, value, target.name)
        a = self.api.write(target.http_addr, key, value, self.op_timeout)
        self.history.finish(op, a.outcome, note=a.note())
        hint = self.api.leader_hint(a)
        if hint:
            for n in self.cluster.nodes:
                if n.http_addr == hint:
                    self.write_target[c] = n
        elif a.outcome != OK:
            self.write_target.pop(c, None)

    def do_cas(self, c, node, key, new):
        ok, current, mod = self.do_read(c, node, key)
        if not ok or mod is None:
            return
        op = self.history.invoke(c, CAS, key, (current, new), node.name)
        a, swapped = self.api.cas(node.http_addr, key, mod, new, self.op_timeout)
        self.history.finish(op, a.outcome, result=swapped, note=a.note())


class SetWorkload(_Worker):
    def __init__(self, cluster, seed, clients=3, deadline_s=600, max_ops=3000, pace=0.03):
        super().__init__(cluster, seed, clients, deadline_s, max_ops, pace)
        self.attempts = {}        # element -> [outcome, ...]
        self.lock = threading.Lock()
        self.count = 0
        self.write_target = {}

    def run_client(self, c, rng):
        seq = 0
        while self.running():
            with self.lock:
                if self.count >= self.max_ops:
                    return
                self.count += 1
            seq += 1
            element = "s%d-%d" % (c, seq)
            node = self.node_for(c)
            target = self.write_target.get(c, node)
            for _attempt in range(2):
                a = self.api.write(target.http_addr, element, element, self.op_timeout)
                with self.lock:
                    self.attempts.setdefault(element, []).append(a.outcome)
                hint = self.api.leader_hint(a)
                if hint:
                    target = next((n for n in self.cluster.nodes if n.http_addr == hint), node)
                    self.write_target[c] = target
                    continue      # retry the same element at the leader
                if a.outcome != OK:
                    self.write_target.pop(c, None)
                break
            self.stop_event.wait(self.pace * (0.5 + rng.random()))

    def status_of(self, element):
        """ok if any attempt was acknowledged; fail if every attempt certainly
        failed; else unknown."""
        outs = self.attempts.get(element, [])
        if OK in outs:
            return OK
        if outs and all(o == FAIL for o in outs):
            return FAIL
        return UNKNOWN

    def acked(self):
        with self.lock:
            return {e for e in self.attempts if self.status_of(e) == OK}

    def summary(self):
        with self.lock:
            c = {OK: 0, FAIL: 0, UNKNOWN: 0}
            for e in self.attempts:
                c[self.status_of(e)] += 1
            return c


def check_set(workload, contents_by_node):
    """Problems with the set workload given each node's final contents
    (key -> value, at least every key starting with "s")."""
    problems = []
    with workload.lock:
        elements = {e: workload.status_of(e) for e in workload.attempts}
    acked = {e for e, s in elements.items() if s == OK}
    for node, contents in sorted(contents_by_node.items()):
        present = {k for k in contents if k.startswith("s") and k[1:2].isdigit()}
        lost = sorted(acked - present)
        if lost:
            problems.append("%s lost %d acknowledged inserts, e.g. %s"
                            % (node, len(lost), lost[:10]))
        ghosts = sorted(k for k in present if k not in elements)
        if ghosts:
            problems.append("%s holds %d elements never written, e.g. %s"
                            % (node, len(ghosts), ghosts[:10]))
        failed = sorted(k for k in present if elements.get(k) == FAIL)
        if failed:
            problems.append("%s holds %d elements whose every write was refused, e.g. %s"
                            % (node, len(failed), failed[:10]))
        wrong = sorted(k for k in present if contents[k] != k)
        if wrong:
            problems.append("%s holds %d elements with a wrong value, e.g. %s=%r"
                            % (node, len(wrong), wrong[0], contents[wrong[0]]))
    return problems
