/* snapsend.h - send followers the data, not the marker.
 *
 * The snapshots libraft takes are markers that stand for the local store
 * (fsm.h).  When the leader has to bring a follower up to date with a
 * snapshot, libraft reads its newest snapshot file (io->snapshot_get) and
 * sends that buffer.  This wraps snapshot_get: a marker is replaced, before
 * libraft sees it, by a full serialization of the store (fsm_snapshot_full).
 *
 * The full state is as of the leader's applied index now, which may be past
 * the snapshot's index: the follower then holds state ahead of its log for a
 * while, and skips the entries it already has when they arrive (the store
 * records its applied index).  Everything it holds is committed.
 *
 * Serializing runs on the loop thread and blocks it (~0.3 s per million
 * 100-byte keys), but only when a follower needs a snapshot, not every time
 * one is taken. */
#ifndef RAFTKV_SNAPSEND_H
#define RAFTKV_SNAPSEND_H

#include <raft.h>

#include "fsm.h"

struct snapsend
{
    struct raft_io *io;
    struct fsm *fsm;
    int (*snapshot_get)(struct raft_io *io, struct raft_io_snapshot_get *req,
                        raft_io_snapshot_get_cb cb);
    struct snapsend *next; /* every instance of the process */
};

/* Wrap @io's snapshot_get.  @s and @fsm must outlive @io. */
void snapsend_install(struct snapsend *s, struct raft_io *io, struct fsm *fsm);

/* Free what is left once libraft's I/O has closed. */
void snapsend_release(struct snapsend *s);

#endif
