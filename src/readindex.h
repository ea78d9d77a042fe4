/* readindex.h - linearizable reads on the leader.
 *
 * A leader may only answer from its store once it knows it is still the
 * leader *after* the read arrived; otherwise a newer leader could already
 * have committed writes it has not seen.  libraft 0.15 has no ReadIndex, so
 * leadership is confirmed by the log itself: once an entry that this node
 * appended after the read arrived is committed and applied, a majority
 * accepted this node as leader at some point after the read started (a
 * newer leader would have needed votes from that same majority first), and
 * the store holds every entry committed before the read.
 *
 * Any entry will do, so reads first ride on writes: the writes of a loop
 * iteration go out as one entry (propose.c) and take every read that is
 * waiting along (readindex_attach).  Reads with no write to ride on get an
 * entry of their own, one CMD_NOOP command, at the end of the loop
 * iteration (readindex_flush).  Up to READINDEX_DEPTH such entries are in
 * flight, so a read waits about one commit round trip rather than the rest
 * of the previous round first.  They are ordinary raft_apply entries, not
 * raft_barrier ones: libraft 0.15 calls a barrier's callback twice and
 * is fragile with several barriers in flight, while applies pipeline.
 *
 * Entries are only appended from the loop's check phase, never from inside
 * a libraft callback: a failed entry is reported while libraft is tearing
 * its leader state down, and appending then crashes it. */
#ifndef RAFTKV_READINDEX_H
#define RAFTKV_READINDEX_H

#include <raft.h>
#include <stdbool.h>
#include <uv.h>

#include "queue.h"

struct node;
struct node_read;
typedef void (*node_read_cb)(struct node_read *r, int status);

/* One read waiting for leadership to be confirmed.  Owned by the caller;
 * must live until the callback, which runs exactly once. */
struct node_read
{
    struct queue link;
    node_read_cb cb;
    void *data;
};

/* Read-only entries in flight at most. */
#define READINDEX_DEPTH 16

struct readindex
{
    struct node *node;
    struct queue waiting; /* arrived, not yet behind an appended entry */
    struct queue flights; /* read-only entries in flight */
    unsigned in_flight;
    unsigned long long entries; /* read-only entries appended, for metrics */
    uv_idle_t idle;             /* no sleeping while reads wait */
    bool closed;
};

void readindex_init(struct readindex *ri, struct node *node, uv_loop_t *loop);

/* Stop the idle handle (at shutdown, after readindex_fail_all). */
void readindex_close(struct readindex *ri);

/* Queue @r; @cb runs with 0 once an entry appended after now has been
 * applied (then read the store), or with NODE_ENOTLEADER /
 * NODE_ELEADERSHIPLOST / NODE_ESHUTDOWN.  Returns 0, or NODE_ENOTLEADER at
 * once (then @cb never runs). */
int readindex_read(struct readindex *ri, struct node_read *r, node_read_cb cb,
                   void *data);

/* An entry has just been appended: move every waiting read onto @reads, to
 * be answered by readindex_complete when that entry is applied or fails. */
void readindex_attach(struct readindex *ri, struct queue *reads);

/* Answer every read of @reads: @status is libraft's for the entry they rode
 * on (0: applied). */
void readindex_complete(struct queue *reads, int raft_status);

/* End of a loop iteration: give the reads still waiting an entry of their
 * own, unless READINDEX_DEPTH are in flight (then the next one to land makes
 * room).  Fails them with NODE_ENOTLEADER if this node no longer leads. */
void readindex_flush(struct readindex *ri);

/* Fail every queued read with @status (shutdown). */
void readindex_fail_all(struct readindex *ri, int status);

#endif
