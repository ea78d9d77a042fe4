"""Observability (docs/api.md): /v1/status, /health, /ready and /metrics.

/metrics is checked with the strict little Prometheus text-format (0.0.4)
parser below, which is itself tested first.  The metric names are those of
src/metrics.c (docs/api.md refers to the README for the list).
"""

import math
import re

import pytest

from harness import (REPO, assert_json_error, is_int, leader_and_followers, paused, put_ok,
                     request_once, v1_delete, v1_get, wait_until)

STATUS_FIELDS = ("id", "raft_addr", "http_addr", "role", "term", "leader", "commit_index",
                 "applied_index", "last_log_index", "snapshot_index", "snapshots_taken",
                 "snapshots_restored", "elections_seen", "members", "cluster_id", "keys",
                 "db_bytes", "uptime_ms", "version")


# --------------------------------------------------------------------------
# A strict parser for the Prometheus text exposition format 0.0.4


class ExpositionError(AssertionError):
    pass


METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf|inf)\Z|NaN\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Family:
    def __init__(self, name):
        self.name = name
        self.type = None
        self.help = None
        self.samples = []   # (sample name, {label: value}, float)

    def value(self, sample_name=None, **labels):
        """The value of the one sample with exactly these labels (0 if absent)."""
        sample_name = sample_name or self.name
        for name, lab, v in self.samples:
            if name == sample_name and lab == labels:
                return v
        return 0.0

    def __repr__(self):
        return "<%s %s, %d samples>" % (self.type, self.name, len(self.samples))


def _parse_labels(line, pos, where):
    """Parse {a="x",b="y"} starting at line[pos] == "{"; return (labels, next pos)."""
    labels = {}
    pos += 1
    while True:
        if line.startswith("}", pos):
            return labels, pos + 1
        m = LABEL_NAME.match(line, pos)
        if not m:
            raise ExpositionError("%s: bad label name at column %d" % (where, pos + 1))
        name = m.group(0)
        pos = m.end()
        if not line.startswith('="', pos):
            raise ExpositionError("%s: expected =\" after label %s" % (where, name))
        pos += 2
        value = []
        while True:
            if pos >= len(line):
                raise ExpositionError("%s: unterminated value of label %s" % (where, name))
            c = line[pos]
            if c == "\\":
                esc = line[pos + 1:pos + 2]
                if esc not in ("\\", '"', "n"):
                    raise ExpositionError("%s: bad escape \\%s in label %s" % (where, esc, name))
                value.append("\n" if esc == "n" else esc)
                pos += 2
            elif c == '"':
                pos += 1
                break
            else:
                value.append(c)
                pos += 1
        if name in labels:
            raise ExpositionError("%s: label %s given twice" % (where, name))
        if name.startswith("__"):
            raise ExpositionError("%s: reserved label name %s" % (where, name))
        labels[name] = "".join(value)
        if line.startswith(",", pos):
            pos += 1
        elif not line.startswith("}", pos):
            raise ExpositionError("%s: expected , or } after label %s" % (where, name))


def _float(text, where):
    if not FLOAT.match(text):
        raise ExpositionError("%s: %r is not a number" % (where, text))
    return float(text.replace("Inf", "inf"))


def parse_prometheus(text):
    """Parse text format 0.0.4 strictly; return {family name: Family}.

    Beyond the grammar (names, labels, escapes, values, optional integer
    timestamps) it requires: a final newline; HELP and TYPE at most once per
    family, both present, TYPE before the family's samples; each family's lines
    in one group; no series twice; counters >= 0; histograms with, per label
    set, le-ordered cumulative buckets ending at +Inf == _count, and _sum/_count.
    """
    if text and not text.endswith("\n"):
        raise ExpositionError("the exposition does not end with a newline")
    families = {}
    current = None          # the family whose group we are in
    done = set()            # families whose group has ended
    series = set()

    def enter(name, where):
        nonlocal current
        if current is not None and current.name != name:
            done.add(current.name)
        if name in done:
            raise ExpositionError("%s: lines of family %s are not in one group" % (where, name))
        current = families.setdefault(name, Family(name))
        return current

    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d (%r)" % (lineno, line[:120])
        if not line.strip():
            continue
        if line.startswith("#"):
            m = re.match(r"#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?\Z", line)
            if not m:
                continue    # a plain comment
            kind, name, rest = m.group(1), m.group(2), m.group(3) or ""
            if not METRIC_NAME.match(name):
                raise ExpositionError("%s: bad metric name %r" % (where, name))
            fam = enter(name, where)
            if kind == "HELP":
                if fam.help is not None:
                    raise ExpositionError("%s: second HELP for %s" % (where, name))
                if re.sub(r"\\[\\n]", "", rest).count("\\"):
                    raise ExpositionError("%s: bad escape in HELP" % where)
                fam.help = rest
            else:
                if fam.type is not None:
                    raise ExpositionError("%s: second TYPE for %s" % (where, name))
                if fam.samples:
                    raise ExpositionError("%s: TYPE after samples of %s" % (where, name))
                if rest not in TYPES:
                    raise ExpositionError("%s: unknown type %r" % (where, rest))
                fam.type = rest
            continue
        m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        if not m:
            raise ExpositionError("%s: no metric name" % where)
        name = m.group(0)
        pos = m.end()
        labels = {}
        if line.startswith("{", pos):
            labels, pos = _parse_labels(line, pos, where)
        rest = line[pos:]
        if not rest or rest[0] not in " \t":
            raise ExpositionError("%s: expected whitespace before the value" % where)
        tokens = rest.split()
        if len(tokens) not in (1, 2):
            raise ExpositionError("%s: expected a value and an optional timestamp" % where)
        value = _float(tokens[0], where)
        if len(tokens) == 2 and not re.match(r"-?\d+\Z", tokens[1]):
            raise ExpositionError("%s: bad timestamp %r" % (where, tokens[1]))
        base = name
        for suffix in ("_bucket", "_sum", "_count"):
            stem = name[:-len(suffix)]
            if name.endswith(suffix) and stem in families and \
                    families[stem].type in ("histogram", "summary") and \
                    not (suffix == "_bucket" and families[stem].type == "summary"):
                base = stem
        fam = enter(base, where)
        if fam.type is None:
            raise ExpositionError("%s: sample of %s before (or without) its TYPE" % (where, base))
        if fam.type == "histogram" and name == base:
            raise ExpositionError("%s: a histogram has only _bucket/_sum/_count samples" % where)
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            raise ExpositionError("%s: series given twice" % where)
        series.add(key)
        if fam.type == "counter" and not value >= 0:
            raise ExpositionError("%s: counter value %r" % (where, value))
        if name.endswith("_bucket") and base != name:
            if "le" not in labels:
                raise ExpositionError("%s: bucket without le" % where)
            _float(labels["le"], where + " le")
        fam.samples.append((name, labels, value))

    for fam in families.values():
        if fam.type is None or fam.help is None:
            raise ExpositionError("family %s lacks %s" % (
                fam.name, "TYPE" if fam.type is None else "HELP"))
        if fam.type == "histogram":
            _check_histogram(fam)
    return families


def _check_histogram(fam):
    groups = {}
    for name, labels, value in fam.samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if name == fam.name + "_bucket":
            g["buckets"].append((float(labels["le"].replace("Inf", "inf")), value))
        elif name == fam.name + "_sum":
            g["sum"] = value
        else:
            g["count"] = value
    for rest, g in groups.items():
        where = "histogram %s%s" % (fam.name, dict(rest))
        b = g["buckets"]
        if not b or g["sum"] is None or g["count"] is None:
            raise ExpositionError("%s: needs buckets, _sum and _count" % where)
        les = [le for le, _ in b]
        if les != sorted(les) or len(set(les)) != len(les):
            raise ExpositionError("%s: le values not increasing: %s" % (where, les))
        if les[-1] != math.inf:
            raise ExpositionError("%s: no +Inf bucket" % where)
        counts = [v for _, v in b]
        if any(later < earlier for earlier, later in zip(counts, counts[1:])):
            raise ExpositionError("%s: buckets are not cumulative: %s" % (where, counts))
        if any(v != int(v) or v < 0 for v in counts + [g["count"]]):
            raise ExpositionError("%s: bucket counts must be non-negative integers" % where)
        if counts[-1] != g["count"]:
            raise ExpositionError("%s: +Inf bucket %s != _count %s" % (
                where, counts[-1], g["count"]))
        if g["sum"] < 0:
            raise ExpositionError("%s: negative _sum" % where)


GOOD = """# HELP a_total Things.
# TYPE a_total counter
a_total{route="x",code="200"} 3
a_total{route="y\\"q\\\\",code="404"} 1.5e1
# A comment.
# HELP h Latency.
# TYPE h histogram
h_bucket{route="x",le="0.1"} 1
h_bucket{route="x",le="1"} 2
h_bucket{route="x",le="+Inf"} 2
h_sum{route="x"} 0.3
h_count{route="x"} 2
# HELP g A gauge.
# TYPE g gauge
g -1 1700000000000
"""

BAD = {
    "no final newline": GOOD.rstrip("\n"),
    "no TYPE": "# HELP x X.\nx 1\n",
    "no HELP": "# TYPE x gauge\nx 1\n",
    "TYPE after sample": "# HELP x X.\nx 1\n# TYPE x gauge\n",
    "two TYPEs": "# HELP x X.\n# TYPE x gauge\n# TYPE x gauge\nx 1\n",
    "unknown type": "# HELP x X.\n# TYPE x meter\nx 1\n",
    "bad name": "# HELP 1x X.\n# TYPE 1x gauge\n1x 1\n",
    "bad value": "# HELP x X.\n# TYPE x gauge\nx one\n",
    "no value": "# HELP x X.\n# TYPE x gauge\nx\n",
    "unquoted label": "# HELP x X.\n# TYPE x gauge\nx{a=b} 1\n",
    "bad escape": '# HELP x X.\n# TYPE x gauge\nx{a="\\t"} 1\n',
    "unterminated labels": '# HELP x X.\n# TYPE x gauge\nx{a="b" 1\n',
    "duplicate label": '# HELP x X.\n# TYPE x gauge\nx{a="b",a="c"} 1\n',
    "duplicate series": '# HELP x X.\n# TYPE x gauge\nx{a="b"} 1\nx{a="b"} 2\n',
    "negative counter": "# HELP x X.\n# TYPE x counter\nx -1\n",
    "split family": "# HELP x X.\n# TYPE x gauge\n# HELP y Y.\n# TYPE y gauge\n"
                    "x{a=\"1\"} 1\ny 1\nx{a=\"2\"} 1\n",
    "bad timestamp": "# HELP x X.\n# TYPE x gauge\nx 1 soon\n",
    "not cumulative": "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                      "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    "+Inf != count": "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                     "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
    "no +Inf": "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
    "no _count": "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n",
    "bucket without le": "# HELP h H.\n# TYPE h histogram\nh_bucket 1\nh_sum 1\nh_count 1\n",
}


def test_prometheus_parser_is_strict():
    """The parser accepts a well-formed exposition (with escapes, a comment, a
    timestamp) and reads its values, and rejects each of a list of malformed
    ones -- so a /metrics that passes it is well-formed."""
    fams = parse_prometheus(GOOD)
    assert fams["a_total"].value(route='y"q\\', code="404") == 15.0
    assert fams["h"].value("h_count", route="x") == 2 and fams["g"].value() == -1
    accepted = []
    for what, text in BAD.items():
        try:
            parse_prometheus(text)
        except ExpositionError:
            continue
        accepted.append(what)
    assert not accepted, "the parser accepted: %s" % accepted


# --------------------------------------------------------------------------
# Status, health, readiness


def ready(node, timeout=None):
    return node.request("GET", "/ready", timeout=timeout)


def test_status_health_and_ready(cluster):
    """/v1/status on every node of a 3-node cluster has every documented field with
    the right type and consistent values (own id and addresses, role, one term and
    leader for all, applied <= commit <= last_log_index, the three voters, one
    cluster_id, the VERSION, keys counting writes and deletes, db_bytes > 0,
    uptime growing).  /health answers {"status": "ok"}; /ready answers 200
    {"ready": true} on every caught-up member, 503 {"ready": false, "reason"} on
    a follower whose two peers are paused (while /health stays 200), and 200
    again once they continue; a pristine node is not ready and /ready does not
    make it bootstrap.  Wrong methods get 405."""
    nodes = cluster.start_nodes(3)
    leader, followers = leader_and_followers(cluster)
    version = (REPO / "VERSION").read_text().strip()
    statuses = {n.name: n.status() for n in nodes}
    for n in nodes:
        s = statuses[n.name]
        missing = [f for f in STATUS_FIELDS if f not in s]
        assert not missing, "%s: /v1/status lacks %s: %s" % (n.name, missing, s)
        assert (s["id"], s["raft_addr"], s["http_addr"]) == (n.name, n.raft_addr, n.http_addr), s
        assert s["role"] == ("leader" if n is leader else "follower"), (n.name, s["role"])
        assert s["leader"] == {"id": leader.name, "raft_addr": leader.raft_addr,
                               "http_addr": leader.http_addr}, (n.name, s["leader"])
        for f in ("term", "commit_index", "applied_index", "last_log_index", "snapshot_index",
                  "snapshots_taken", "snapshots_restored", "elections_seen", "keys",
                  "db_bytes", "uptime_ms"):
            assert is_int(s[f]) and s[f] >= 0, "%s: %s = %r" % (n.name, f, s[f])
        assert s["term"] >= 1 and s["db_bytes"] > 0, s
        assert s["snapshot_index"] <= s["applied_index"] <= s["commit_index"] \
            <= s["last_log_index"], "%s: indexes out of order: %s" % (n.name, s)
        assert sorted((m["id"], m["raft_addr"], m["http_addr"], m["role"]) for m in s["members"]) \
            == sorted((x.name, x.raft_addr, x.http_addr, "voter") for x in nodes), s["members"]
        assert isinstance(s["cluster_id"], str) and re.match(r"[0-9a-fA-F]+\Z", s["cluster_id"])
        assert isinstance(s["version"], str) and version in s["version"], \
            "version %r does not mention VERSION %s" % (s["version"], version)
    assert len({s["term"] for s in statuses.values()}) == 1, statuses
    assert len({s["cluster_id"] for s in statuses.values()}) == 1

    keys0 = leader.status()["keys"]
    for i in range(5):
        put_ok(leader, "obs/k%d" % i, b"x")
    assert v1_delete(leader, "obs/k0").status == 200
    assert leader.status()["keys"] == keys0 + 4, (keys0, leader.status()["keys"])
    for f in followers:
        wait_until(lambda f=f: f.status()["keys"] == keys0 + 4, 10,
                   "%s to count %d keys" % (f.name, keys0 + 4))
    up = leader.status()["uptime_ms"]
    wait_until(lambda: leader.status()["uptime_ms"] > up, 5, "uptime_ms to grow")

    for n in nodes:
        r = n.request("GET", "/health")
        assert (r.status, r.json) == (200, {"status": "ok"}), r

        def is_ready(n=n):
            r = ready(n)
            assert r.status == 200 and isinstance(r.json, dict) and r.json.get("ready") is True, r
            return True
        wait_until(is_ready, 10, "%s to be ready" % n.name)

    lone = followers[0]
    with paused(leader, followers[1]):
        def not_ready():
            r = ready(lone, timeout=5)
            assert r.status == 503, r
            body = r.json
            assert isinstance(body, dict) and body.get("ready") is False \
                and isinstance(body.get("reason"), str) and body["reason"], r
            return r
        r = wait_until(not_ready, 15, "%s, alone, to answer /ready with 503" % lone.name)
        print("/ready on the lone follower: %r" % r)
        r = lone.request("GET", "/health", timeout=5)
        assert (r.status, r.json) == (200, {"status": "ok"}), r
    cluster.wait_converged(nodes)
    for n in nodes:
        wait_until(lambda n=n: ready(n).status == 200, 15, "%s to be ready again" % n.name)

    pristine = cluster.node("pristine")
    r = ready(pristine)
    assert r.status == 503 and (r.json or {}).get("ready") is False, \
        "/ready on a pristine node -> %r" % r
    assert pristine.status()["role"] == "pristine", "/ready made the pristine node bootstrap"

    for path, allow in (("/ready", "GET"), ("/metrics", "GET"), ("/health", "GET")):
        r = request_once(leader.http_addr, "POST", path, body="{}")
        assert_json_error(r, 405, "POST " + path)
        assert allow in (r.header("Allow") or "").upper(), r.header("Allow")


# --------------------------------------------------------------------------
# Metrics


def scrape(node):
    r = node.request("GET", "/metrics")
    assert r.status == 200, "%s: GET /metrics -> %r" % (node.name, r)
    ctype = (r.header("Content-Type") or "").replace(" ", "").lower()
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, \
        "Content-Type %r (want text/plain; version=0.0.4)" % r.header("Content-Type")
    try:
        return parse_prometheus(r.body.decode("utf-8"))
    except ExpositionError as e:
        pytest.fail("%s: /metrics is not valid Prometheus text: %s" % (node.name, e),
                    pytrace=False)


REQUIRED = {
    "raftkv_http_requests_total": "counter",
    "raftkv_http_request_duration_seconds": "histogram",
    "raftkv_raft_term": "gauge",
    "raftkv_raft_commit_index": "gauge",
    "raftkv_raft_applied_index": "gauge",
    "raftkv_elections_total": "counter",
    "raftkv_snapshots_taken_total": "counter",
    "raftkv_snapshots_restored_total": "counter",
    "raftkv_forwarded_requests_total": "counter",
    "raftkv_store_size_bytes": "gauge",
    "raftkv_store_keys": "gauge",
}


def test_metrics(cluster):
    """/metrics on every node is valid Prometheus text (strict parser above) with
    request counts by route/method/code, latency histograms by route, Raft term,
    commit and applied index, elections, snapshots, forwarded requests, store size
    and keys -- the gauges equal to /v1/status read at the same moment.  After 5
    PUTs, 3 GETs of a missing key and 4 GET /v1/status on a follower, that
    follower's counters moved by exactly those requests (route kv PUT 200 +5, kv
    GET 404 +3, status GET 200 +4, one more scrape, histogram counts +8 and +4),
    it forwarded at least the 5 writes, and the leader's commit index and key
    count grew."""
    nodes = cluster.start_nodes(3)
    leader, (f1, f2) = leader_and_followers(cluster)
    for n in nodes:
        fams = scrape(n)
        s = n.status()
        for name, kind in REQUIRED.items():
            assert name in fams, "%s: /metrics lacks %s (has %s)" % (n.name, name, sorted(fams))
            assert fams[name].type == kind, "%s is a %s, want %s" % (name, fams[name].type, kind)
        for name, field in (("raftkv_raft_term", "term"),
                            ("raftkv_raft_commit_index", "commit_index"),
                            ("raftkv_raft_applied_index", "applied_index"),
                            ("raftkv_store_keys", "keys"),
                            ("raftkv_store_size_bytes", "db_bytes"),
                            ("raftkv_elections_total", "elections_seen"),
                            ("raftkv_snapshots_taken_total", "snapshots_taken"),
                            ("raftkv_snapshots_restored_total", "snapshots_restored")):
            assert fams[name].value() == s[field], "%s: %s = %s but /v1/status %s = %s" % (
                n.name, name, fams[name].value(), field, s[field])
        assert fams["raftkv_elections_total"].value() >= 1, n.name
        for _name, labels, _v in fams["raftkv_http_requests_total"].samples:
            assert set(labels) == {"route", "method", "code"}, labels
        for _name, labels, _v in fams["raftkv_http_request_duration_seconds"].samples:
            assert set(labels) - {"le"} == {"route"}, labels

    before_leader = scrape(leader)
    before = scrape(f1)
    for i in range(5):
        put_ok(f1, "metrics/k%d" % i, b"v")
    for _ in range(3):
        assert v1_get(f1, "metrics/missing").status == 404
    for _ in range(4):
        f1.status()
    after = scrape(f1)
    after_leader = scrape(leader)

    def delta(fams_a, fams_b, family, sample=None, **labels):
        return fams_b[family].value(sample, **labels) - fams_a[family].value(sample, **labels)

    req = "raftkv_http_requests_total"
    dur = "raftkv_http_request_duration_seconds"
    moves = {
        "kv PUT 200": (delta(before, after, req, route="kv", method="PUT", code="200"), 5),
        "kv GET 404": (delta(before, after, req, route="kv", method="GET", code="404"), 3),
        "status GET 200": (delta(before, after, req, route="status", method="GET", code="200"), 4),
        "metrics GET 200": (delta(before, after, req, route="metrics", method="GET",
                                  code="200"), 1),
        "kv latency count": (delta(before, after, dur, dur + "_count", route="kv"), 8),
        "status latency count": (delta(before, after, dur, dur + "_count", route="status"), 4),
    }
    wrong = {k: v for k, v in moves.items() if v[0] != v[1]}
    assert not wrong, "counters on %s moved by (got, want): %s" % (f1.name, wrong)

    # Refused before any route is known (headers over the limit): counted
    # as route "other", not as the first route in the list ("set").
    big = f1.request("GET", "/health", headers={"X-Big": "a" * (70 * 1024)}, fresh=True)
    assert big.status == 431, big
    after_big = scrape(f1)
    assert delta(after, after_big, req, route="other", method="GET", code="431") == 1
    assert delta(after, after_big, req, route="set", method="GET", code="431") == 0
    assert delta(before, after, "raftkv_forwarded_requests_total") >= 5, \
        "forwarded requests moved by %s after 5 PUTs through a follower" % delta(
            before, after, "raftkv_forwarded_requests_total")
    assert delta(before_leader, after_leader, "raftkv_raft_commit_index") >= 5
    assert delta(before_leader, after_leader, "raftkv_raft_applied_index") >= 5
    assert delta(before_leader, after_leader, "raftkv_store_keys") == 5
    assert delta(before_leader, after_leader, "raftkv_store_size_bytes") >= 0
