"""Snapshots keep the Raft log bounded, and bring a late joiner up to date."""

import os
import random
import time

from harness import MiB, Writer, dir_listing, dir_size, wait_until

# 8 MiB segments (raftkv's default, given here so that the bounds below keep
# measuring the log, not preallocated files, if the default changes).
SEGMENT = 8 * MiB  # a fresh raft dir preallocates three
SNAP_ARGS = ["--snapshot-threshold", "64", "--snapshot-trailing", "32",
             "--segment-size", str(SEGMENT)]


def _raft_sizes(nodes):
    return {n.name: dir_size(n.raft_dir) for n in nodes}


def _fmt(sizes):
    return ", ".join("%s %.1f MiB" % (k, v / MiB) for k, v in sorted(sizes.items()))


def test_snapshots_bound_the_raft_log(cluster):
    """~3000 writes of 8 KiB values over 48 keys (~24 MiB of log) from 16 writer
    threads with --snapshot-threshold 64 --snapshot-trailing 32: every node takes
    snapshots, its data-dir/raft stays under 40 MiB, and it does not grow with the
    number of writes (from ~1000 to ~3000 writes, i.e. 16 MiB more log, it grows by
    less than one 8 MiB segment plus 2 MiB).  All nodes end with the last
    acknowledged values."""
    nodes = cluster.start_nodes(3, SNAP_ARGS)
    leader = cluster.wait_converged(nodes)
    fresh = _raft_sizes(nodes)
    print("raft dir, fresh cluster: " + _fmt(fresh))

    threads = 16

    def phase(tag, per_thread):
        w = Writer(cluster, "snap", threads=threads, per_thread=per_thread, key_space=3,
                   value_size=8192, tag=tag).start()
        w.join(timeout=240)
        assert w.count == threads * per_thread, "only %d writes acknowledged; unexpected: %s" % (
            w.count, w.unexpected[:3])
        for n in nodes:
            cluster.wait_caught_up(n, leader, 60)
        return w.snapshot()

    acked = phase("a", 63)                 # 1008 writes
    after_1000 = _raft_sizes(nodes)
    print("raft dir after 1008 writes: " + _fmt(after_1000))
    acked.update(phase("b", 125))          # 2000 more: 3008
    after_3000 = _raft_sizes(nodes)
    print("raft dir after 3008 writes: " + _fmt(after_3000))

    def all_snapshotted():
        taken = {n.name: n.status()["snapshots_taken"] for n in nodes}
        assert all(v > 0 for v in taken.values()), "snapshots_taken: %s" % taken
        return taken
    print("snapshots taken: %s" % wait_until(all_snapshotted, 30, "every node to take a snapshot"))

    for n in nodes:
        listing = "\n" + dir_listing(n.raft_dir)
        assert after_1000[n.name] < 40 * MiB, "%s raft dir after 1000 writes: %.1f MiB%s" % (
            n.name, after_1000[n.name] / MiB, listing)
        assert after_3000[n.name] < 40 * MiB, "%s raft dir after 3000 writes: %.1f MiB%s" % (
            n.name, after_3000[n.name] / MiB, listing)
        growth = after_3000[n.name] - after_1000[n.name]
        assert growth < SEGMENT + 2 * MiB, \
            "%s raft dir grew by %.1f MiB from 1000 to 3000 writes%s" % (
                n.name, growth / MiB, listing)
    for n in nodes:
        cluster.wait_has_all(n, acked, 30)


def test_late_joiner_gets_a_snapshot(cluster):
    """With --snapshot-threshold 64 --snapshot-trailing 32, a node4 started with
    --join after 2000 writes cannot be sent the compacted log: it catches up,
    reports snapshots_restored >= 1, becomes a voter, and serves sampled keys."""
    nodes = cluster.start_nodes(3, SNAP_ARGS)
    leader = cluster.wait_converged(nodes)
    w = Writer(cluster, "late", threads=8, per_thread=250).start()
    w.join(timeout=240)
    acked = w.snapshot()
    assert len(acked) == 2000, "only %d writes acknowledged; unexpected: %s" % (
        len(acked), w.unexpected[:3])
    assert leader.status()["snapshot_index"] > 0, leader.status()

    node4 = cluster.node("node4", args=SNAP_ARGS, join=leader)
    cluster.wait_converged(nodes + [node4])
    s = cluster.wait_caught_up(node4, leader, 120)
    assert s["snapshots_restored"] >= 1, "node4 caught up without a snapshot: %s" % s
    sample = random.Random(7).sample(sorted(acked), 200) + list(acked)[-20:]
    cluster.wait_has_all(node4, {k: acked[k] for k in sample}, 30)


def test_marker_snapshots_survive_crashes(cluster):
    """The snapshots a node keeps are markers for its LMDB store.  After
    snapshots were taken under load, SIGKILL every node (no clean shutdown, no
    final flush) and start them again: each resumes from its own marker and
    log, holds every acknowledged write, and the snapshot files on disk stay
    small (a marker, not a copy of the store)."""
    nodes = cluster.start_nodes(3, SNAP_ARGS)
    leader = cluster.wait_converged(nodes)
    w = Writer(cluster, "crash", threads=8, per_thread=150, value_size=1000).start()
    w.join(timeout=240)
    acked = w.snapshot()
    assert len(acked) == 1200, "only %d writes acknowledged; unexpected: %s" % (
        len(acked), w.unexpected[:3])
    for n in nodes:
        cluster.wait_caught_up(n, leader, 60)
    assert all(n.status()["snapshots_taken"] > 0 for n in nodes), [n.status() for n in nodes]
    # The leader never installs a snapshot: its newest one is its own marker.
    snaps = sorted((p for p in os.listdir(leader.raft_dir)
                    if p.startswith("snapshot-") and not p.endswith(".meta")),
                   key=lambda p: int(p.split("-")[2]))
    assert snaps, "no snapshot file:\n" + dir_listing(leader.raft_dir)
    newest = os.path.getsize(os.path.join(leader.raft_dir, snaps[-1]))
    assert newest < 4096, "the leader's snapshot %s is %d bytes: a copy of the store?" % (
        snaps[-1], newest)

    for n in nodes:
        n.kill()
    for n in nodes:
        n.start()
    cluster.wait_converged(nodes)
    for n in nodes:
        cluster.wait_has_all(n, acked, 60)


def test_heap_is_trimmed_once_writes_stop(cluster):
    """A snapshot frees the log before it.  Under a steady write load the log
    grows straight back into that memory, so the node keeps it; it gives the
    free pages back to the system only once no entry has been applied for a
    second.  One node with --snapshot-threshold 32 under 4 writer threads for
    2 s or more (20 ticks of the node's timer) takes 8 or more snapshots while
    heap_trims moves by at most one (a machine that stalls the writers for a
    second may earn one); after the writers stop, heap_trims goes up within
    seconds, with no new snapshot taken meanwhile."""
    node = cluster.node("node1", args=["--snapshot-threshold", "32",
                                       "--snapshot-trailing", "16"])
    before = node.status()  # the first write bootstraps the cluster
    w = Writer(cluster, "trim", threads=4, value_size=200).start()
    started = time.monotonic()

    def snapshots_under_writes():
        assert not w.errors, "writer thread crashed: %r" % w.errors
        s = node.status()
        assert s["snapshots_taken"] >= before["snapshots_taken"] + 8, \
            "%d snapshots so far" % s["snapshots_taken"]
        assert time.monotonic() - started >= 2.0, "writing for 2 s"
        return s
    loaded = wait_until(snapshots_under_writes, 60, "2 s of writes and 8 snapshots")
    w.stop()
    stopped = node.status()
    print("under writes: %d snapshots, %d trims; %d writes acknowledged" % (
        stopped["snapshots_taken"] - before["snapshots_taken"],
        stopped["heap_trims"] - before["heap_trims"], w.count))
    assert loaded["heap_trims"] - before["heap_trims"] <= 1, (before, loaded)
    assert stopped["heap_trims"] - before["heap_trims"] <= 1, (before, stopped)

    def trimmed_when_quiet():
        s = node.status()
        assert s["snapshots_taken"] == stopped["snapshots_taken"], \
            "a snapshot with no writes: %s" % s
        assert s["heap_trims"] > stopped["heap_trims"], "heap_trims %d" % s["heap_trims"]
        return s
    wait_until(trimmed_when_quiet, 10, "a trim once writes stopped")
