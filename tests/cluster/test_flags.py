"""Command-line flags: bad ones exit 2 naming the flag; --help/--version exit 0."""

import signal
import subprocess

import pytest

from harness import BIN, REPO, free_port, process_env, sanitizer_findings, scaled


def run(args, cwd):
    try:
        return subprocess.run([str(BIN)] + args, cwd=str(cwd), capture_output=True,
                              stdin=subprocess.DEVNULL, env=process_env(),
                              timeout=scaled(20))
    except subprocess.TimeoutExpired as e:
        raise AssertionError("raftkv %s did not exit within %.0f s (it was killed); "
                             "stderr: %r" % (args, scaled(20), e.stderr)) from None


def base(tmp_path, **override):
    """A valid flag set with free ports; override/remove flags by name (value None)."""
    flags = {"--node-id": "flagtest", "--raft-port": str(free_port()),
             "--http-port": str(free_port()), "--data-dir": str(tmp_path / "data")}
    flags.update(override)
    args = []
    for k, v in flags.items():
        if v is not None:
            args += [k, v]
    return args


BAD = [
    # (case id, flag that must be named, args builder)
    ("unknown-flag", "--bogus-flag", lambda t: base(t) + ["--bogus-flag", "1"]),
    ("missing-value", "--raft-port", lambda t: base(t, **{"--raft-port": None}) + ["--raft-port"]),
    ("port-not-a-number", "--raft-port", lambda t: base(t, **{"--raft-port": "abc"})),
    ("port-not-a-number-equals", "--raft-port",
     lambda t: base(t, **{"--raft-port": None}) + ["--raft-port=abc"]),
    ("port-too-big", "--raft-port", lambda t: base(t, **{"--raft-port": "70000"})),
    ("http-port-negative", "--http-port", lambda t: base(t, **{"--http-port": "-1"})),
    ("node-id-bad-chars", "--node-id", lambda t: base(t, **{"--node-id": "bad/id!"})),
    ("node-id-too-long", "--node-id", lambda t: base(t, **{"--node-id": "n" * 65})),
    ("node-id-empty", "--node-id", lambda t: base(t, **{"--node-id": ""})),
    ("log-level-loud", "--log-level", lambda t: base(t) + ["--log-level", "loud"]),
    ("missing-node-id", "--node-id", lambda t: base(t, **{"--node-id": None})),
    ("election-timeout-word", "--election-timeout",
     lambda t: base(t) + ["--election-timeout", "soon"]),
    ("max-value-size-word", "--max-value-size", lambda t: base(t) + ["--max-value-size", "lots"]),
    ("raft-addr-without-port", "--raft-addr", lambda t: base(t) + ["--raft-addr", "localhost"]),
    ("follower-reads-stale", "--follower-reads",
     lambda t: base(t) + ["--follower-reads", "stale"]),
]


@pytest.mark.parametrize("flag,build", [(f, b) for _id, f, b in BAD], ids=[c[0] for c in BAD])
def test_bad_flag_exits_2_naming_it(tmp_path, flag, build):
    """A bad or missing flag value makes raftkv exit with code 2 and print exactly
    one line on stderr that names the offending flag, without starting a server."""
    args = build(tmp_path)
    p = run(args, tmp_path)
    err = p.stderr.decode("utf-8", "replace")
    assert not sanitizer_findings(err), err
    assert p.returncode == 2, "raftkv %s exited %d (want 2); stderr: %r" % (args, p.returncode, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, "want one line on stderr, got %d: %r" % (len(lines), err)
    assert flag in lines[0], "stderr does not name %s: %r" % (flag, err)


def test_help_and_version_exit_0(tmp_path):
    """--help prints a usage that mentions the flags and --version prints the
    version from VERSION, both on stdout with exit code 0."""
    p = run(["--help"], tmp_path)
    out = p.stdout.decode()
    assert p.returncode == 0, (p.returncode, p.stderr)
    for flag in ("--node-id", "--raft-port", "--http-port", "--data-dir", "--join"):
        assert flag in out, "--help output lacks %s:\n%s" % (flag, out)

    p = run(["--version"], tmp_path)
    assert p.returncode == 0, (p.returncode, p.stderr)
    version = (REPO / "VERSION").read_text().strip()
    assert version in p.stdout.decode(), "--version printed %r, want it to contain %r" % (
        p.stdout, version)
    assert not sanitizer_findings(p.stderr.decode("utf-8", "replace")), p.stderr


def test_equals_form_and_addr_flags(cluster):
    """--flag=value works for every flag, and --raft-addr/--http-addr with a host
    name (localhost) are resolved to IPv4: the node answers on 127.0.0.1, reports
    role "pristine" until its first write, then leads a one-node cluster whose
    member entry carries those addresses."""
    def argv(n):
        return [str(BIN), "--node-id=%s" % n.name,
                "--raft-addr=localhost:%d" % n.raft_port,
                "--http-addr=localhost:%d" % n.http_port,
                "--data-dir=%s" % n.data_dir, "--log-level=debug",
                "--election-timeout=1000", "--heartbeat-timeout=100",
                "--max-key-size=100", "--max-value-size=1000",
                "--max-body-size=2000", "--snapshot-threshold=64",
                "--snapshot-trailing=32"]
    node = cluster.node("eq.node-1", argv_builder=argv)
    s = node.status()
    assert s["id"] == "eq.node-1" and s["role"] == "pristine", s
    assert s["leader"] is None and s["cluster_id"] == "", s
    r = node.set("k", "v")
    assert r.status == 200, r
    s = node.status()
    assert s["role"] == "leader", s
    members = [{k: m.get(k) for k in ("id", "raft_addr", "http_addr", "role")}
               for m in s["members"]]
    assert members == [{"id": "eq.node-1", "raft_addr": node.raft_addr,
                        "http_addr": node.http_addr, "role": "voter"}], s
    r = node.set("k2", "x" * 1001)
    assert r.status == 413, "--max-value-size=1000 not applied: %r" % r


def test_sigint_and_sigterm_shut_down_cleanly(cluster):
    """SIGINT and SIGTERM both stop a node cleanly with exit code 0, and the node
    restarted on the same data dir still has its data and leads again."""
    node = cluster.node("node1")
    assert node.set("k", "v").status == 200
    assert node.stop(sig=signal.SIGINT) == 0
    node.start()
    cluster.wait_leader([node])
    assert node.value("k") == "v"
    assert node.set("k2", "v2").status == 200
    assert node.stop(sig=signal.SIGTERM) == 0
