/* logwatch.h - a leader whose own Raft log write hangs hands leadership on.
 *
 * libraft 0.15 commits nothing past what the leader itself has stored
 * (replicationQuorum(r, r->last_stored) in its replication.c), and the
 * leader's loop keeps running while its write sits in a hung disk: it still
 * sends heartbeats, so no follower ever starts an election, and every write
 * of the cluster waits for that one disk.  (etcd's leader blocks on its
 * fsync and stops heartbeating, so it is replaced after an election
 * timeout.)  The watchdog gives raftkv the same bound: once the leader has
 * had entries waiting to be stored, and stored none of them, for an election
 * timeout, it asks libraft to hand leadership to a voter whose log is up to
 * date (raft_transfer).  Replication does not wait for the leader's disk,
 * so the followers hold those entries and the new leader commits them.
 *
 * The wait is counted in steps of the node's tick, each counted as at most
 * LOGWATCH_STEP_MAX_MS: a callback that blocks the loop (a snapshot syncing
 * the store, say) also keeps the loop from seeing the write complete, and
 * must not pass for a hung disk.  A write that slow on a healthy disk (a
 * batch of large values) costs at most one needless change of leader per
 * election timeout. */
#ifndef RAFTKV_LOGWATCH_H
#define RAFTKV_LOGWATCH_H

#include <raft.h>
#include <stdbool.h>
#include <stdint.h>

struct node;

/* Most loop time one tick may add to the wait (the tick is 100 ms). */
#define LOGWATCH_STEP_MAX_MS 200

struct logwatch
{
    raft_index stored;   /* raft->last_stored when last checked */
    uint64_t tick_ms;    /* uv_now at the last check */
    uint64_t stalled_ms; /* loop time since it moved, with entries waiting */
    bool transferring;   /* our raft_transfer has not called back yet */
    bool complained;     /* this stall was logged */
    struct raft_transfer req;
    uint64_t transfers;  /* started: raftkv_log_stall_transfers_total */
};

void logwatch_init(struct logwatch *w);

/* Called from the node's tick on the loop thread: notes whether the
 * leader's stored index moved, and starts a transfer once it has not for
 * the election timeout in use (again at most once per timeout). */
void logwatch_tick(struct node *n);

#endif
