"""Operation histories: what each client asked, when, and what came back.

A history is a list of `Op`s, one per completed-or-abandoned client request,
recorded by `History` from many threads.  Times are `time.monotonic()`
seconds taken just before the request is sent (`invoke`) and just after the
answer arrived (`complete`); an op whose outcome is uncertain (a timeout, a
connection dropped after the request was sent, a 503 "leadership lost") is
recorded as outcome "unknown" with complete = None, which the checker reads
as "may have taken effect at any time after invoke, or never".

Outcomes:
  ok       the server answered and the answer is definitive (for a cas, the
           boolean `result` says whether it swapped or the compare failed)
  fail     the op certainly had no effect (refused before reaching Raft)
  unknown  it may or may not have taken effect

Values: a register key holds a string or None (absent).  `value` is, per f:
  read   the value read (None: key absent)
  write  the value written
  cas    (expected, new): swap to `new` only if the key holds `expected`
"""

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
READ, WRITE, CAS = "read", "write", "cas"


@dataclass
class Op:
    process: int            # client id (one client = one thread, sequential ops)
    f: str                  # read | write | cas
    key: str
    value: Any              # see module docstring
    outcome: str = OK       # ok | fail | unknown
    invoke: float = 0.0
    complete: Optional[float] = None
    result: Optional[bool] = None   # cas only: True swapped, False compare failed
    node: str = ""          # which node the client sent it to
    note: str = ""          # status / error, for the humans reading a report
    index: int = field(default=-1, compare=False)  # position in the full history

    def describe(self, t0=0.0):
        """One line such as `[ 1.234- 1.300] p3 cas k7 'a'->'b' ok:False @n2 (409)`."""
        def ts(t):
            return "   ?  " if t is None else "%6.3f" % (t - t0)
        if self.f == CAS:
            what = "%r->%r" % tuple(self.value)
        else:
            what = repr(self.value)
        res = self.outcome
        if self.f == CAS and self.outcome == OK:
            res += ":%s" % self.result
        extra = " (%s)" % self.note if self.note else ""
        return "[%s-%s] p%d %-5s %s %s %s @%s%s" % (
            ts(self.invoke), ts(self.complete), self.process, self.f, self.key,
            what, res, self.node or "?", extra)


def op_from_dict(d):
    d = dict(d)
    if d.get("f") == CAS and isinstance(d.get("value"), list):
        d["value"] = tuple(d["value"])
    return Op(**d)


def dump(ops, path):
    with open(path, "w") as f:
        for op in ops:
            f.write(json.dumps(asdict(op)) + "\n")


def load(path):
    with open(path) as f:
        return [op_from_dict(json.loads(line)) for line in f if line.strip()]


def by_key(ops):
    """Split a history per key (linearizability is local: P-compositionality)."""
    out = {}
    for op in ops:
        out.setdefault(op.key, []).append(op)
    return out


def format_ops(ops, t0=None, limit=200):
    ops = sorted(ops, key=lambda o: o.invoke)
    if t0 is None:
        t0 = ops[0].invoke if ops else 0.0
    lines = [op.describe(t0) for op in ops[:limit]]
    if len(ops) > limit:
        lines.append("... %d more" % (len(ops) - limit))
    return "\n".join(lines)


class History:
    """Thread-safe recorder.  `invoke()` then `finish()` on the returned op."""

    def __init__(self):
        self._lock = threading.Lock()
        self.ops = []
        self.t0 = time.monotonic()

    def invoke(self, process, f, key, value, node=""):
        return Op(process=process, f=f, key=key, value=value, outcome=UNKNOWN,
                  invoke=time.monotonic(), node=node)

    def finish(self, op, outcome, value=None, result=None, note=""):
        """Record op's outcome.  For a read, `value` is what was read."""
        now = time.monotonic()
        op.outcome = outcome
        op.note = note
        if outcome == UNKNOWN:
            op.complete = None
        else:
            op.complete = now
        if op.f == READ and outcome == OK:
            op.value = value
        if op.f == CAS and outcome == OK:
            op.result = bool(result)
        with self._lock:
            op.index = len(self.ops)
            self.ops.append(op)
        return op

    def snapshot(self):
        with self._lock:
            return list(self.ops)

    def counts(self):
        c = {}
        for op in self.snapshot():
            k = "%s:%s" % (op.f, op.outcome)
            c[k] = c.get(k, 0) + 1
        return c
