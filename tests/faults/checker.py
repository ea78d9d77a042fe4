"""Linearizability checker for register histories (read / write / cas).

Why our own: no checker is packaged in Debian, and the suite must run with
the standard library only.

Algorithm: Wing & Gong's search as improved by Lowe (memoizing the pair
(set of linearized ops, model state) so no configuration is explored twice),
run per key as Porcupine does -- linearizability is local, so a history is
linearizable iff each key's sub-history is, and small per-key searches stay
cheap.  Each key gets a time budget; a search that runs out reports
"unknown" instead of hanging.

Ops with outcome "unknown" have no return event: the search may linearize
them at any point after their invocation (they took effect) or never (they
did not).  The search ends as soon as every op with a known outcome is
linearized.  "fail" ops never happened and are dropped, as are reads whose
outcome is unknown (they cannot change the state).

Model (a register per key, initially None = absent):
  read v           legal iff state == v
  write v          state := v
  cas (e, n) ok    result True: legal iff state == e, then state := n
                   result False (compare failed): legal iff state != e
  cas (e, n) ?     if it took effect: legal iff state == e, then state := n

`shrink()` reduces a failing key history to a small failing subset (ddmin),
which is what a report shows; `brute_force()` is an exponential reference
used only by the checker's own tests.
"""

import itertools
import time
from dataclasses import dataclass, field
from typing import List, Optional

from history import CAS, FAIL, OK, READ, UNKNOWN, WRITE, by_key, format_ops


class _Inconclusive(Exception):
    pass


def step(state, op):
    """Apply op to the register state: (legal, new_state)."""
    if op.f == READ:
        return state == op.value, state
    if op.f == WRITE:
        return True, op.value
    if op.f == CAS:
        expected, new = op.value
        if op.outcome == UNKNOWN or op.result:
            return state == expected, new
        return state != expected, state
    raise ValueError("unknown op kind %r" % (op.f,))


def relevant(ops):
    """The ops that constrain the search (see module docstring)."""
    out = []
    for op in ops:
        if op.outcome == FAIL:
            continue
        if op.outcome == UNKNOWN and op.f == READ:
            continue
        out.append(op)
    return out


@dataclass
class KeyResult:
    key: str
    valid: Optional[bool]          # None: ran out of time
    ops: int
    seconds: float
    message: str = ""
    # the longest sequence of ops the search managed to linearize (on failure)
    best_prefix: List = field(default_factory=list)


def _never_written(ops):
    """A quick, conclusive violation: an ok read of a value that no write or
    cas that might have happened wrote before the read returned."""
    written = {}
    for op in ops:
        if op.outcome == FAIL:
            continue
        if op.f == WRITE:
            written.setdefault(op.value, []).append(op.invoke)
        elif op.f == CAS:
            written.setdefault(op.value[1], []).append(op.invoke)
    for op in ops:
        if op.f == READ and op.outcome == OK and op.value is not None:
            starts = written.get(op.value, ())
            if not any(t <= op.complete for t in starts):
                return op
    return None


def check_key(ops, time_limit=10.0, key=None, initial=None):
    """Check one key's history.  Returns a KeyResult."""
    t_start = time.monotonic()
    deadline = t_start + time_limit
    ops = relevant(ops)
    key = key if key is not None else (ops[0].key if ops else "")

    bad = _never_written(ops)
    if bad is not None:
        return KeyResult(key, False, len(ops), time.monotonic() - t_start,
                         "read %r, a value never (possibly) written before the "
                         "read returned: %s" % (bad.value, bad.describe()))

    try:
        ok, best = _wgl(ops, deadline, initial)
    except _Inconclusive:
        return KeyResult(key, None, len(ops), time.monotonic() - t_start,
                         "search exceeded its %.1f s budget" % time_limit)
    elapsed = time.monotonic() - t_start
    if ok:
        return KeyResult(key, True, len(ops), elapsed)
    return KeyResult(key, False, len(ops), elapsed,
                     "no linearization exists; the longest legal prefix found "
                     "has %d ops" % len(best), best_prefix=best)


def _wgl(ops, deadline, initial):
    """Wing & Gong / Lowe search.  Returns (linearizable, best_prefix_ops)."""
    n = len(ops)
    known = [op.outcome != UNKNOWN for op in ops]
    known_left = sum(known)
    if known_left == 0:
        return True, []

    # Events: (time, 0=call / 1=return, op id).  Calls sort before returns at
    # equal times, so touching intervals count as concurrent (the lenient,
    # safe reading).
    events = []
    for i, op in enumerate(ops):
        events.append((op.invoke, 0, i))
        if known[i]:
            events.append((op.complete, 1, i))
    events.sort()
    E = len(events)
    # A circular doubly linked list over the events; index E is the head
    # sentinel, so reaching HEAD again means the end of the list.
    HEAD = E
    nxt = list(range(1, E + 1)) + [0]
    prv = [E] + list(range(0, E - 1)) + [E - 1]
    is_call = [ev[1] == 0 for ev in events]
    ev_op = [ev[2] for ev in events]
    ret_of = [-1] * n
    call_of = [-1] * n
    for e, (_, kind, i) in enumerate(events):
        if kind == 0:
            call_of[i] = e
        else:
            ret_of[i] = e

    def unlink(e):
        nxt[prv[e]] = nxt[e]
        prv[nxt[e]] = prv[e]

    def relink(e):
        nxt[prv[e]] = e
        prv[nxt[e]] = e

    state = initial
    linearized = 0
    cache = set()
    stack = []          # (call event, state before)
    best = []
    steps = 0
    e = nxt[HEAD]
    while known_left:
        steps += 1
        if steps & 0x3FF == 0 and time.monotonic() > deadline:
            raise _Inconclusive()
        if e == HEAD:
            # Only unknown ops' calls were left to try: back up.
            if not stack:
                return False, best
            e, state = stack.pop()
            i = ev_op[e]
            linearized &= ~(1 << i)
            if known[i]:
                relink(ret_of[i])
                known_left += 1
            relink(e)
            e = nxt[e]
            continue
        if is_call[e]:
            i = ev_op[e]
            legal, new_state = step(state, ops[i])
            if legal:
                new_lin = linearized | (1 << i)
                memo = (new_lin, new_state)
                if memo not in cache:
                    cache.add(memo)
                    stack.append((e, state))
                    state = new_state
                    linearized = new_lin
                    unlink(e)
                    if known[i]:
                        unlink(ret_of[i])
                        known_left -= 1
                    if len(stack) > len(best):
                        best = [ops[ev_op[c]] for c, _ in stack]
                    e = nxt[HEAD]
                    continue
            e = nxt[e]
        else:
            # The op returning here was not linearized before its return.
            if not stack:
                return False, best
            e, state = stack.pop()
            i = ev_op[e]
            linearized &= ~(1 << i)
            if known[i]:
                relink(ret_of[i])
                known_left += 1
            relink(e)
            e = nxt[e]
    return True, []


@dataclass
class Report:
    valid: Optional[bool]              # False if any key failed; None if any unknown
    keys: dict                         # key -> KeyResult
    seconds: float

    def failures(self):
        return [r for r in self.keys.values() if r.valid is False]

    def unknowns(self):
        return [r for r in self.keys.values() if r.valid is None]

    def summary(self):
        return ("linearizable=%s: %d keys, %d ops, %d failed, %d unknown, %.2f s"
                % (self.valid, len(self.keys),
                   sum(r.ops for r in self.keys.values()),
                   len(self.failures()), len(self.unknowns()), self.seconds))


def check(ops, time_limit_per_key=10.0, total_limit=None):
    """Check a whole history, key by key."""
    t0 = time.monotonic()
    results = {}
    for key, kops in sorted(by_key(ops).items()):
        limit = time_limit_per_key
        if total_limit is not None:
            left = total_limit - (time.monotonic() - t0)
            limit = max(0.05, min(limit, left))
        results[key] = check_key(kops, limit, key=key)
    valid = True
    if any(r.valid is None for r in results.values()):
        valid = None
    if any(r.valid is False for r in results.values()):
        valid = False
    return Report(valid, results, time.monotonic() - t0)


def shrink(ops, time_limit=20.0, check_limit=2.0):
    """ddmin: a small subset of a failing key history that still fails.

    Only subsets that are conclusively non-linearizable count as failing; the
    result is 1-minimal unless the time budget ran out first.
    """
    deadline = time.monotonic() + time_limit
    ops = relevant(ops)
    position = {id(o): i for i, o in enumerate(ops)}
    writer = {}
    for o in ops:
        if o.f == WRITE:
            writer[o.value] = o
        elif o.f == CAS:
            writer[o.value[1]] = o

    def closed(subset):
        """subset plus the writers of every value its ops read or compare
        against: dropping a value's writer would leave a trivial, useless
        "read of a value never written" failure."""
        have = {id(o) for o in subset}
        todo = list(subset)
        out = list(subset)
        while todo:
            o = todo.pop()
            needed = o.value if o.f == READ else o.value[0] if o.f == CAS else None
            w = writer.get(needed) if needed is not None else None
            if w is not None and id(w) not in have:
                have.add(id(w))
                out.append(w)
                todo.append(w)
        return sorted(out, key=lambda o: position[id(o)])

    def fails(subset):
        if time.monotonic() > deadline:
            raise _Inconclusive()
        return check_key(subset, check_limit).valid is False

    if not fails(ops):
        return ops
    n = 2
    current = list(ops)
    try:
        while len(current) >= 2:
            chunk = max(1, len(current) // n)
            reduced = False
            for start in range(0, len(current), chunk):
                complement = closed(current[:start] + current[start + chunk:])
                if len(complement) < len(current) and fails(complement):
                    current = complement
                    n = max(n - 1, 2)
                    reduced = True
                    break
            if not reduced:
                if chunk == 1:
                    break
                n = min(len(current), n * 2)
    except _Inconclusive:
        pass
    return current


def explain(report, ops, shrink_time=20.0, max_keys=3):
    """Human-readable account of a failed check: for the first failing keys,
    the smallest failing part of the history (shrinking shares
    `shrink_time`) and the end of the longest legal prefix."""
    out = [report.summary()]
    per_key = by_key(ops)
    failures = report.failures()
    shown = failures[:max_keys]
    if len(failures) > len(shown):
        out.append("%d keys failed; the first %d are shown: %s" % (
            len(failures), len(shown), ", ".join(r.key for r in failures)))
    for r in shown:
        kops = per_key.get(r.key, [])
        small = shrink(kops, time_limit=shrink_time / len(shown))
        t0 = min(o.invoke for o in kops) if kops else 0.0
        out.append("key %r NOT linearizable (%d ops): %s" % (r.key, r.ops, r.message))
        out.append("  smallest failing part (%d ops; times relative to the key's first op):"
                   % len(small))
        out.append("    " + format_ops(small, t0).replace("\n", "\n    "))
        if r.best_prefix:
            tail = r.best_prefix[-5:]
            out.append("  end of the longest legal linearization found:")
            out.append("    " + "\n    ".join(o.describe(t0) for o in tail))
    for r in report.unknowns():
        out.append("key %r: %s (%d ops)" % (r.key, r.message, r.ops))
    return "\n".join(out)


# --------------------------------------------------------------------------
# Reference for the checker's own tests: exponential, only for tiny histories.

def brute_force(ops, initial=None):
    """True iff some subset of the unknown ops plus all known ops has a
    legal order consistent with real time.  Exponential: tests only."""
    ops = relevant(ops)
    known = [o for o in ops if o.outcome != UNKNOWN]
    unknown = [o for o in ops if o.outcome == UNKNOWN]

    def end(o):
        return float("inf") if o.outcome == UNKNOWN else o.complete

    def search(remaining, state):
        if not remaining:
            return True
        for o in remaining:
            # o may go next iff no remaining op finished before o started.
            if any(end(p) < o.invoke for p in remaining if p is not o):
                continue
            legal, new = step(state, o)
            if legal and search([p for p in remaining if p is not o], new):
                return True
        return False

    for r in range(len(unknown) + 1):
        for subset in itertools.combinations(unknown, r):
            if search(known + list(subset), initial):
                return True
    return False
