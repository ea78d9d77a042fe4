/* snapsend.h - send followers the data, not the marker.
 *
 * The snapshots libraft takes are markers that stand for the local store
 * (fsm.h).  When the leader has to bring a follower up to date with a
 * snapshot, libraft reads its newest snapshot file (io->snapshot_get) and
 * sends that buffer.  This wraps snapshot_get: a marker is replaced, before
 * libraft sees it, by a full serialization of the store (fsm_serial_run).
 *
 * The full state is as of the leader's last commit to LMDB, which may be
 * past the snapshot's index (never before it: taking a snapshot syncs the
 * store): the follower then holds state ahead of its log for a while, and
 * skips the entries it already has when they arrive (the store records its
 * applied index).  Everything it holds is committed.
 *
 * Serializing takes ~0.3 s per million 100-byte keys, so it runs on libuv's
 * thread pool (fsm_serial_*): a leader that held its loop that long would
 * miss heartbeats past a few million keys, and its followers would elect
 * another.  libraft counts a get as finished once its own read of the file
 * is done, so the wrapped close waits for the serializations still running
 * (and tells them to stop): libraft's callback must find its instance alive.
 */
#ifndef RAFTKV_SNAPSEND_H
#define RAFTKV_SNAPSEND_H

#include <raft.h>
#include <uv.h>

#include "fsm.h"
#include "queue.h"

struct snapsend
{
    struct raft_io *io;
    struct fsm *fsm;
    uv_loop_t *loop;
    int (*snapshot_get)(struct raft_io *io, struct raft_io_snapshot_get *req,
                        raft_io_snapshot_get_cb cb);
    void (*close)(struct raft_io *io, raft_io_close_cb cb);
    bool closing;              /* libraft asked to close the I/O */
    bool close_deferred;       /* ...while serializations ran */
    raft_io_close_cb close_cb; /* libraft's, held meanwhile */
    struct queue jobs;         /* serializations on the thread pool */
    struct snapsend *next;     /* every instance of the process */
};

/* Wrap @io's snapshot_get and close.  Serializations run on @loop's thread
 * pool.  @s and @fsm must outlive @io. */
void snapsend_install(struct snapsend *s, struct raft_io *io, struct fsm *fsm,
                      uv_loop_t *loop);

/* Free what is left once libraft's I/O has closed. */
void snapsend_release(struct snapsend *s);

#endif
