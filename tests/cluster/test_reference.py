"""The reference session from the README, run verbatim with the real curl."""

import subprocess

from harness import scaled, wait_until


def curl(*args):
    """Run curl; return (status code, stdout exactly as printed)."""
    cmd = ["curl", "-sS", "--max-time", str(int(scaled(60))),
           "--write-out", "%{stderr}%{http_code}"] + list(args)
    p = subprocess.run(cmd, capture_output=True, timeout=scaled(90))
    code = p.stderr.decode().strip().splitlines()[-1] if p.stderr.strip() else ""
    assert p.returncode == 0, "curl %s failed (rc %d): %s" % (args, p.returncode, p.stderr)
    return int(code), p.stdout.decode()


def test_reference_session(cluster):
    """Two nodes started with only --node-id/--raft-port/--http-port in one working
    directory, joined and written with curl exactly as documented: the join and the
    write answer 200, both nodes print exactly {"data":"23"} for x, a missing key
    prints {"data":""}, and the default data dirs land under ./data/NODE-ID."""
    cwd = cluster.workdir
    n1 = cluster.node("node1", reference_flags=True)
    n2 = cluster.node("node2", reference_flags=True)
    h1, h2, p2 = n1.http_port, n2.http_port, n2.raft_port

    code, out = curl("localhost:%d/join?followerAddr=localhost:%d&followerId=node2" % (h1, p2))
    assert code == 200, "join answered %d: %s" % (code, out)

    code, out = curl("-X", "POST", "localhost:%d/set" % h1,
                     "-d", '{"key": "x", "value": "23"}',
                     "-H", "content-type: application/json")
    assert code == 200, "set answered %d: %s" % (code, out)

    code, out = curl("localhost:%d/get?key=x" % h1)
    assert (code, out) == (200, '{"data":"23"}')

    def node2_has_x():
        c, o = curl("localhost:%d/get?key=x" % h2)
        assert (c, o) == (200, '{"data":"23"}'), (c, o)
        return True
    wait_until(node2_has_x, 30, 'node2 to print {"data":"23"} for key x')

    for h in (h1, h2):
        assert curl("localhost:%d/get?key=nope" % h) == (200, '{"data":""}')

    for name in ("node1", "node2"):
        d = cwd / "data" / name
        assert d.is_dir(), "%s missing; ./data holds %s" % (
            d, sorted(p.name for p in (cwd / "data").iterdir()) if (cwd / "data").exists() else None)
        assert (d / "raft").is_dir() and (d / "kv").is_dir(), \
            "%s holds %s, want raft/ and kv/" % (d, sorted(p.name for p in d.iterdir()))
