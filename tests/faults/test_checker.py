"""Tests of the linearizability checker itself (no server, no root needed).

Hand-made histories with a known verdict, then thousands of small random
histories -- both ones generated from a real register (linearizable by
construction) and corrupted ones -- compared with a brute-force checker, and
the properties the suite relies on: speed on large valid histories, the
per-key time budget giving "unknown" instead of hanging, and shrinking.
"""

import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checker  # noqa: E402
from history import CAS, FAIL, OK, READ, UNKNOWN, WRITE, History, Op, dump, load  # noqa: E402


def op(p, f, value, inv, comp, outcome=OK, result=None, key="k"):
    if outcome == UNKNOWN:
        comp = None
    return Op(process=p, f=f, key=key, value=value, outcome=outcome,
              invoke=float(inv), complete=None if comp is None else float(comp),
              result=result)


def R(p, v, inv, comp, **kw):
    return op(p, READ, v, inv, comp, **kw)


def W(p, v, inv, comp, **kw):
    return op(p, WRITE, v, inv, comp, **kw)


def C(p, exp, new, inv, comp, result=True, **kw):
    return op(p, CAS, (exp, new), inv, comp, result=result, **kw)


def verdict(ops):
    return checker.check(ops, time_limit_per_key=5).valid


# --- hand-made histories ------------------------------------------------------

LINEARIZABLE = {
    "empty": [],
    "initial read of an absent key": [R(1, None, 0, 1)],
    "sequential write then read": [W(1, "a", 0, 1), R(2, "a", 2, 3)],
    "read concurrent with write sees old": [W(1, "a", 0, 1), W(1, "b", 2, 5),
                                            R(2, "a", 3, 4)],
    "read concurrent with write sees new": [W(1, "a", 0, 1), W(1, "b", 2, 5),
                                            R(2, "b", 3, 4)],
    "reads overlapping a write see new then new": [
        W(1, "a", 0, 10), R(2, "a", 1, 2), R(3, "a", 3, 4)],
    "unknown write later observed": [W(1, "a", 0, None, outcome=UNKNOWN),
                                     R(2, "a", 5, 6)],
    "unknown write never observed": [W(1, "a", 0, None, outcome=UNKNOWN),
                                     R(2, None, 5, 6)],
    "unknown write observed then not? no: observed, then overwritten": [
        W(1, "a", 0, None, outcome=UNKNOWN), R(2, "a", 5, 6),
        W(2, "b", 7, 8), R(3, "b", 9, 10)],
    "failed write is ignored": [W(1, "a", 0, 1, outcome=FAIL), R(2, None, 2, 3)],
    "cas succeeds from current": [W(1, "a", 0, 1), C(2, "a", "b", 2, 3),
                                  R(3, "b", 4, 5)],
    "cas from absent": [C(1, None, "a", 0, 1), R(2, "a", 2, 3)],
    "cas compare fails on a different value": [W(1, "a", 0, 1),
                                               C(2, "x", "b", 2, 3, result=False),
                                               R(3, "a", 4, 5)],
    "unknown cas that took effect": [W(1, "a", 0, 1),
                                     C(2, "a", "b", 2, None, outcome=UNKNOWN),
                                     R(3, "b", 10, 11)],
    "unknown cas that did not take effect": [W(1, "a", 0, 1),
                                             C(2, "a", "b", 2, None, outcome=UNKNOWN),
                                             R(3, "a", 10, 11)],
    "unknown cas whose compare could not match": [
        W(1, "a", 0, 1), C(2, "zzz", "b", 2, None, outcome=UNKNOWN), R(3, "a", 4, 5)],
    "touching intervals count as concurrent": [W(1, "a", 0, 1), W(2, "b", 1, 2),
                                               R(3, "a", 2, 3)],
    "two keys, each fine": [W(1, "a", 0, 1, key="x"), W(1, "b", 0, 1, key="y"),
                            R(2, "a", 2, 3, key="x"), R(2, "b", 2, 3, key="y")],
}

NOT_LINEARIZABLE = {
    "stale read after acknowledged write": [W(1, "a", 0, 1), W(1, "b", 2, 3),
                                            R(2, "a", 4, 5)],
    "absent after acknowledged write": [W(1, "a", 0, 1), R(2, None, 2, 3)],
    "read of a value never written": [R(1, "ghost", 0, 1)],
    "read of a failed write's value": [W(1, "a", 0, 1, outcome=FAIL), R(2, "a", 2, 3)],
    "new then old (non-monotonic reads)": [
        W(1, "a", 0, 1), W(1, "b", 2, 10), R(2, "b", 3, 4), R(3, "a", 5, 6)],
    "cas swapped from a value the key did not hold": [
        W(1, "a", 0, 1), C(2, "x", "b", 2, 3), R(3, "b", 4, 5)],
    "cas compare failed though it held the value": [
        W(1, "a", 0, 1), C(2, "a", "b", 2, 3, result=False)],
    "two cas from the same value both succeed": [
        W(1, "a", 0, 1), C(2, "a", "b", 2, 5), C(3, "a", "c", 2, 5)],
    "unknown write observed and then un-observed": [
        W(1, "a", 0, None, outcome=UNKNOWN), R(2, "a", 5, 6), R(3, None, 7, 8)],
    "one bad key among good ones": [
        W(1, "a", 0, 1, key="x"), R(2, "a", 2, 3, key="x"),
        W(1, "b", 0, 1, key="y"), W(1, "c", 2, 3, key="y"), R(2, "b", 4, 5, key="y")],
}


@pytest.mark.parametrize("name", sorted(LINEARIZABLE))
def test_hand_made_linearizable(name):
    ops = LINEARIZABLE[name]
    assert verdict(ops) is True
    for kops in _by_key(ops).values():
        assert checker.brute_force(kops) is True


@pytest.mark.parametrize("name", sorted(NOT_LINEARIZABLE))
def test_hand_made_not_linearizable(name):
    ops = NOT_LINEARIZABLE[name]
    report = checker.check(ops, time_limit_per_key=5)
    assert report.valid is False
    assert any(not checker.brute_force(k) for k in _by_key(ops).values())
    text = checker.explain(report, ops, shrink_time=2)
    assert "NOT linearizable" in text


def _by_key(ops):
    out = {}
    for o in ops:
        out.setdefault(o.key, []).append(o)
    return out


# --- random histories against the brute-force reference -----------------------

def simulate(rng, procs, ops_per_proc, p_unknown=0.15, key="k", spread=3.0):
    """A history of a real register: each op takes effect at a random point
    inside its interval (an unknown op: at any point after its invocation, or
    never).  Linearizable by construction."""
    counter = [0]

    def fresh():
        counter[0] += 1
        return "v%d" % counter[0]

    planned = []
    for p in range(procs):
        t = rng.random() * spread
        for _ in range(ops_per_proc):
            inv = t + rng.random() * spread
            comp = inv + 0.01 + rng.random() * spread
            t = comp
            f = rng.choice((READ, WRITE, WRITE, CAS))
            unknown = f != READ and rng.random() < p_unknown
            if unknown:
                applied = rng.random() < 0.5
                point = inv + rng.random() * 3 * spread if applied else None
            else:
                point = inv + rng.random() * (comp - inv)
            planned.append([p, f, inv, comp, point, unknown])

    history = []
    state = None
    seen = [None]
    for p, f, inv, comp, point, unknown in sorted(
            planned, key=lambda x: (x[4] is None, x[4] or 0)):
        outcome = UNKNOWN if unknown else OK
        if f == READ:
            history.append(R(p, state, inv, comp))
        elif f == WRITE:
            v = fresh()
            history.append(W(p, v, inv, comp, outcome=outcome))
            if point is not None:
                state = v
                seen.append(v)
        else:
            expected = state if rng.random() < 0.6 else rng.choice(seen + ["nope"])
            new = fresh()
            swapped = expected == state
            if point is None:
                history.append(C(p, expected, new, inv, comp, outcome=outcome))
                continue
            history.append(C(p, expected, new, inv, comp, result=swapped, outcome=outcome))
            if swapped:
                state = new
                seen.append(new)
    return history


def corrupt(rng, history):
    """Change one observable result: usually makes the history illegal."""
    h = [Op(**{**o.__dict__}) for o in history]
    candidates = [o for o in h if o.outcome == OK and o.f in (READ, CAS)]
    if not candidates:
        return h
    o = rng.choice(candidates)
    if o.f == READ:
        values = [x.value for x in h if x.f == WRITE] + [None]
        o.value = rng.choice(values)
    else:
        o.result = not o.result
    return h


@pytest.mark.parametrize("seed", range(8))
def test_random_histories_match_brute_force(seed):
    rng = random.Random(seed)
    disagreements = []
    counts = {True: 0, False: 0}
    for trial in range(250):
        procs = rng.randint(1, 4)
        per = rng.randint(1, max(1, 9 // procs))
        h = simulate(rng, procs, per)
        assert checker.check_key(h, 5).valid is True, \
            "simulated (linearizable) history rejected:\n" + checker.format_ops(h)
        assert checker.brute_force(h) is True
        bad = corrupt(rng, h)
        want = checker.brute_force(bad)
        got = checker.check_key(bad, 5).valid
        counts[want] += 1
        if got is not want:
            disagreements.append((trial, want, got, checker.format_ops(bad)))
    assert not disagreements, "checker and brute force disagree:\n%s" % "\n\n".join(
        "trial %d: brute force %s, checker %s\n%s" % d for d in disagreements[:3])
    # The corruption must produce both verdicts, or the comparison is weak.
    assert counts[True] > 10 and counts[False] > 50, counts


def test_large_valid_history_is_fast():
    # 5 clients x 1000 ops over 20 keys, as a workload would produce.
    rng = random.Random(42)
    ops = []
    for k in range(20):
        for o in simulate(rng, 5, 50, key="k%d" % k, p_unknown=0.03):
            o.key = "k%d" % k
            ops.append(o)
    t = time.monotonic()
    report = checker.check(ops, time_limit_per_key=10)
    assert report.valid is True, report.summary()
    assert time.monotonic() - t < 20


def test_budget_gives_unknown_not_a_hang():
    # Many concurrent unknown writes, a few values read back in an order no
    # linearization allows: the search space explodes.
    ops = [W(p, "w%d" % p, 0, None, outcome=UNKNOWN) for p in range(40)]
    t = 1.0
    for i in range(30):
        ops.append(R(100 + i, "w%d" % (i % 40), t, t + 0.5))
        t += 1
    ops.append(R(999, "w0", t + 10, t + 11))   # w0 again after others: impossible
    ops.append(W(998, "last", t + 20, t + 21))
    ops.append(R(997, "w1", t + 30, t + 31))   # after "last" was acknowledged
    start = time.monotonic()
    r = checker.check_key(ops, time_limit=0.5)
    assert time.monotonic() - start < 3
    assert r.valid is None, r.message


def test_shrink_finds_a_small_failing_part():
    rng = random.Random(7)
    h = simulate(rng, 4, 12, p_unknown=0.1)
    # Make one late read stale.
    writes = [o for o in h if o.f == WRITE and o.outcome == OK]
    first = min(writes, key=lambda o: o.complete)
    late = max(h, key=lambda o: o.invoke)
    h.append(R(77, first.value, late.invoke + 100, late.invoke + 101))
    h.append(W(78, "zz", late.invoke + 50, late.invoke + 51))
    assert checker.check_key(h, 5).valid is False
    small = checker.shrink(h, time_limit=10)
    assert checker.check_key(small, 5).valid is False
    assert len(small) <= 4, checker.format_ops(small)
    # Never the useless "read of a value never written": the writer stays.
    assert first in small and any(o.value == "zz" for o in small), checker.format_ops(small)


def test_history_recorder_roundtrip(tmp_path):
    h = History()
    a = h.invoke(1, WRITE, "k", "v1", node="n1")
    h.finish(a, OK)
    b = h.invoke(2, CAS, "k", ("v1", "v2"), node="n2")
    h.finish(b, OK, result=True)
    c = h.invoke(3, READ, "k", None, node="n3")
    h.finish(c, OK, value="v2")
    d = h.invoke(4, WRITE, "k", "v3", node="n3")
    h.finish(d, UNKNOWN, note="timeout")
    path = tmp_path / "h.jsonl"
    dump(h.snapshot(), path)
    back = load(path)
    assert back == h.snapshot()
    assert back[1].value == ("v1", "v2")
    assert back[3].complete is None
    assert checker.check(back).valid is True
