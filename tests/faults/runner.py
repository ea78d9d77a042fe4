"""One fault-injection run, start to verdict.

  hosts up -> 5-node cluster -> workloads (register + set) -> nemesis
  schedule -> heal everything -> workloads stop -> checks -> teardown

Checks, all after healing:
  availability  a write is acknowledged through every node within a bound
  convergence   all nodes reach the same applied index and identical
                contents (a hash of the whole store) within a bound
  set           every acknowledged insert is on every node; nothing that was
                never written (or whose every write was refused) appears
  no crash      every node incarnation is alive, or was killed on purpose,
                or stopped as a disk fault requires (exit 1 with a FATAL line)
  disk faults   (judged by the nemesis when each fault ends)
  linearizable  the register history, per key (v1 API; with the legacy API
                reads are stale by design, so the verdict is only printed)

A failed run writes report.txt (seed, schedule, nemesis log, problems, the
smallest failing part of the history), history.jsonl and the node logs into
its run directory, which is kept; a passing run's directory is removed
unless FAULTS_KEEP=1.
"""

import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import checker
import db
import history as hist
from client import OK, Session
from hosts import Net
from nemesis import Nemesis, make_schedule
from workloads import RegisterWorkload, SetWorkload, check_set


class RunFailed(AssertionError):
    pass


class Config:
    def __init__(self, name, kinds, seed, duration, run_dir, bin_path, shim, replay,
                 nodes=5, clock=None, on=(2.5, 4.5), off=(1.0, 2.5), recovery=2.0,
                 converge_timeout=40.0, check_limit=60.0, sanitized=False, say=print):
        self.name = name
        self.kinds = list(kinds)
        self.seed = seed
        self.duration = duration
        self.run_dir = Path(run_dir)
        self.bin = bin_path
        self.shim = shim
        self.replay = replay
        self.nodes = nodes
        self.clock = ("clock" in kinds) if clock is None else clock
        self.on, self.off = on, off
        self.recovery = recovery
        self.converge_timeout = converge_timeout
        self.check_limit = check_limit
        self.sanitized = sanitized
        self.say = say


def run(cfg):
    """Run one case; raise RunFailed with the report on any violation."""
    say = cfg.say
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    schedule = make_schedule(random.Random(cfg.seed), cfg.kinds, cfg.duration, cfg.nodes,
                             on=cfg.on, off=cfg.off)
    (cfg.run_dir / "schedule.json").write_text(json.dumps(schedule, indent=1))
    say("run %s: seed %d, %d faults planned over %.0f s" % (cfg.name, cfg.seed, len(schedule),
                                                         cfg.duration))
    problems = []
    notes = []
    nem = reg = sets = None
    net = Net(cfg.nodes, random.Random(), log=say)   # subnet choice need not replay
    cluster = None
    t_start = time.monotonic()
    try:
        net.up()
        cluster = db.Cluster(net, cfg.run_dir, cfg.bin, cfg.shim, clock=cfg.clock,
                             sanitized=cfg.sanitized)
        cluster.start()
        api = cluster.api
        say("cluster up in %.1f s, API %s" % (time.monotonic() - t_start, api.name))
        # Clients stop when told to; the deadline only bounds a run gone wrong.
        bound = cfg.duration * 2 + 300
        reg = RegisterWorkload(cluster, rng.random(), deadline_s=bound).start()
        sets = SetWorkload(cluster, rng.random(), deadline_s=bound,
                           max_ops=max(3000, int(cfg.duration * 80))).start()
        db.wait_for(lambda: sum(o.outcome == OK for o in reg.history.snapshot()) >= 10, 20,
                    "the first acknowledged register ops")

        def supported(kind):
            if kind == "membership" and not api.supports_membership_removal:
                return "awaits the server: DELETE /v1/cluster/members/{id}"
            return None

        nem = Nemesis(cluster, cfg.run_dir / "nemesis.jsonl", say=say)
        try:
            nem.run(schedule, supported)
        finally:
            nem.heal_all()
        # Let the healed cluster serve the clients for a while before they stop.
        nem.stop_event.wait(cfg.recovery)
        problems += reg.stop() + sets.stop()

        t = time.monotonic()
        problems += availability(cluster, api)
        t_avail = time.monotonic() - t
        contents, conv = converge(cluster, api, reg, sets, cfg.converge_timeout)
        problems += conv
        say("after healing: writes through every node in %.1f s, converged in %.1f s"
            % (t_avail, time.monotonic() - t - t_avail))
        if contents:
            problems += check_set(sets, contents)
        problems += nem.problems

        ops = reg.history.snapshot()
        # With stale reads (legacy API) the verdict is informative only, and
        # non-linearizable histories are the expensive ones: keep it cheap.
        strict = api.linearizable_reads
        report = checker.check(ops, time_limit_per_key=10 if strict else 1,
                               total_limit=cfg.check_limit if strict else 10)
        say("history: %s; set: %s" % (_counts(ops), sets.summary()))
        say("checker: " + report.summary())
        if report.valid is False:
            text = checker.explain(report, ops, shrink_time=15 if strict else 3)
            if strict:
                problems.append("history is not linearizable:\n" + text)
            else:
                notes.append("legacy API: reads are stale local reads, so this is expected:\n"
                             + text)
        elif report.valid is None:
            notes.append("linearizability undecided for some keys (time budget): "
                         + report.summary())
    except Exception as e:  # noqa: BLE001 - a harness failure is a failed run too
        import traceback
        problems.append("the run itself failed: %s\n%s" % (e, traceback.format_exc()))
    finally:
        if nem is not None:
            nem.stop_event.set()
        for w in (reg, sets):
            if w is not None:
                w.stop(10)
        if cluster is not None:
            problems += cluster.close()
            # judged last, so deaths during teardown (a crash on SIGTERM) count too
            problems += cluster.unexpected_deaths()
        net.down()
    elapsed = time.monotonic() - t_start
    say("run %s finished in %.1f s: %d problems" % (cfg.name, elapsed, len(problems)))
    for n in notes:
        lines = n.split("\n")
        say("note: " + "\n      ".join(lines[:25]) + ("\n      ..." if len(lines) > 25 else ""))
    if problems:
        text = write_report(cfg, schedule, nem, problems, notes, reg, elapsed)
        raise RunFailed(text)
    if os.environ.get("FAULTS_KEEP") != "1":
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
    return {"elapsed": elapsed, "notes": notes}


def _counts(ops):
    c = {}
    for o in ops:
        k = "%s:%s" % (o.f, o.outcome)
        c[k] = c.get(k, 0) + 1
    return ", ".join("%s=%d" % kv for kv in sorted(c.items()))


def availability(cluster, api, timeout=30.0):
    """After healing, a write must be acknowledged through every node."""
    problems = []
    for n in cluster.nodes:
        if not n.alive:
            continue    # its death is reported on its own
        last = None
        deadline = time.monotonic() + timeout / len(cluster.nodes) * 2
        while time.monotonic() < deadline:
            if api.linearizable_reads:
                last = api.write(n.http_addr, "avail-%s" % n.name, "avail-%s" % n.name, 3.0)
            else:
                leader = cluster.leader()
                target = leader or n
                last = api.write(target.http_addr, "avail-%s" % n.name, "avail-%s" % n.name, 3.0)
            if last.outcome == OK:
                break
            time.sleep(0.2)
        else:
            problems.append("no write acknowledged through %s within %.0f s of healing; last "
                            "answer: %s" % (n.name, timeout / len(cluster.nodes) * 2, last))
    return problems


def node_contents(api, node, reg, sets, cluster):
    """A node's whole store (v1: a listing) or every key the workloads ever
    touched (legacy: no listing exists), from its own local state."""
    s = Session(node.http_addr)
    try:
        if hasattr(api, "local_items"):
            return api.local_items(s, "")
        keys = set(reg.all_keys) | set(sets.attempts) | extra_keys(cluster)
        out = {}
        for k in sorted(keys):
            v = api.local_value(s, k)
            if v is not None:
                out[k] = v
        return out
    finally:
        s.close()


def extra_keys(cluster):
    """Keys written outside the workloads: availability probes, disk fill."""
    return {"avail-%s" % n.name for n in cluster.nodes} | {"fill-%d" % k for k in range(16)}


def digest(contents):
    return hashlib.sha256(json.dumps(sorted(contents.items())).encode()).hexdigest()[:16]


def converge(cluster, api, reg, sets, timeout):
    """Wait for identical applied indexes and contents on all nodes."""
    problems = []
    dead = [n.name for n in cluster.nodes if not n.alive]
    if dead:
        return None, ["cannot check convergence: %s not running" % dead]
    deadline = time.monotonic() + timeout
    last = "nothing yet"
    try:
        cluster.wait_converged(timeout)
    except db.WaitTimeout as e:
        return None, ["nodes did not agree on a leader and the membership after healing: %s"
                      % e]
    while time.monotonic() < deadline:
        st = cluster.statuses()
        if any(s is None for s in st.values()):
            last = "no status from %s" % [k for k, s in st.items() if s is None]
            time.sleep(0.2)
            continue
        applied = {k: s["applied_index"] for k, s in st.items()}
        commit = {k: s["commit_index"] for k, s in st.items()}
        if len(set(applied.values())) != 1 or len(set(commit.values())) != 1:
            last = "applied %s, commit %s" % (applied, commit)
            time.sleep(0.2)
            continue
        contents = {n.name: node_contents(api, n, reg, sets, cluster) for n in cluster.nodes}
        hashes = {k: digest(c) for k, c in contents.items()}
        keys = {k: s.get("keys") for k, s in st.items()}
        if len(set(hashes.values())) == 1:
            if not hasattr(api, "local_items"):
                # legacy: only the keys we know were compared; the count
                # must match too, or a key we never wrote exists
                for k, c in contents.items():
                    if keys[k] is not None and keys[k] != len(c):
                        problems.append("%s reports %d keys but holds %d of the keys the "
                                        "workloads wrote" % (k, keys[k], len(c)))
            return contents, problems
        last = "applied %s; store hashes %s; keys %s; differences: %s" % (
            applied, hashes, keys, _diff(contents))
        time.sleep(0.3)
    problems.append("nodes did not converge within %.0f s of healing: %s" % (timeout, last))
    return None, problems


def _diff(contents):
    names = sorted(contents)
    ref = contents[names[0]]
    out = []
    for n in names[1:]:
        c = contents[n]
        missing = sorted(set(ref) - set(c))[:3]
        extra = sorted(set(c) - set(ref))[:3]
        changed = sorted(k for k in set(ref) & set(c) if ref[k] != c[k])[:3]
        if missing or extra or changed:
            out.append("%s vs %s: missing %s extra %s changed %s" % (n, names[0], missing,
                                                                      extra, changed))
    return "; ".join(out)


def binary_id(path):
    """Version line and content hash: the server changes between runs."""
    try:
        out = subprocess.run([str(path), "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=10).stdout.decode().strip()
    except (OSError, subprocess.SubprocessError) as e:
        out = "(--version failed: %s)" % e
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()[:16]
    return "%s, sha256 %s" % (out, sha)


def write_report(cfg, schedule, nem, problems, notes, reg, elapsed):
    lines = ["FAULT RUN FAILED: %s" % cfg.name,
             "binary: %s" % binary_id(cfg.bin),
             "seed: %d   faults: %s   duration: %.0f s (run took %.0f s)" % (
                 cfg.seed, ",".join(cfg.kinds), cfg.duration, elapsed),
             "replay: %s" % cfg.replay,
             "artifacts (node logs, history, schedule): %s" % cfg.run_dir,
             "", "== problems (%d)" % len(problems)]
    for i, p in enumerate(problems, 1):
        lines.append("%d. %s" % (i, p))
    lines += ["", "== fault schedule (planned from the seed)"]
    lines += ["  at %6.2f s hold %4.1f s  %-15s %s" % (e["at"], e["hold"], e["fault"],
                                                       json.dumps(e["params"]))
              for e in schedule]
    if nem is not None:
        lines += ["", "== nemesis log (what happened)"]
        lines += ["  %7.3f %-6s %s" % (e["t"], e["event"], json.dumps(
            {k: v for k, v in e.items() if k not in ("t", "event")}, default=str))
            for e in nem.log]
    for n in notes:
        lines += ["", "note: " + n]
    if reg is not None:
        hist.dump(reg.history.snapshot(), cfg.run_dir / "history.jsonl")
        lines += ["", "history: %s (full: %s)" % (_counts(reg.history.snapshot()),
                                                 cfg.run_dir / "history.jsonl")]
    lines += ["logs: %s" % (cfg.run_dir / "logs")]
    text = "\n".join(lines)
    (cfg.run_dir / "report.txt").write_text(text + "\n")
    return text
