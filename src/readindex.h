/* readindex.h - linearizable reads on the leader.
 *
 * A leader may only answer from its store once it knows it was still the
 * leader *after* the read arrived; otherwise a newer leader could already
 * have committed writes it has not seen.  libraft 0.15 has no ReadIndex, so
 * raftkv builds its own, with two ways to prove leadership:
 *
 * Rounds (the fast way, confirm.h).  Ask the other voters whether they
 * still follow this node in its term; once a majority said yes, every read
 * that arrived before the round started may be answered as soon as the
 * store has applied the commit index taken at that start.  No disk write.
 * This needs the commit index to be current, which in Raft it is only once
 * the leader has committed an entry of its own term: until then (and for a
 * while after a round failed) reads use the slow way.
 *
 * Entries (the slow way, always safe).  Once an entry that this node
 * appended after the read arrived is committed and applied, a majority
 * accepted this node as leader at some point after the read started (a
 * newer leader would have needed votes from that same majority first), and
 * the store holds every entry committed before the read.  Any entry will
 * do, so reads ride on writes: the writes of a loop iteration go out as one
 * entry (propose.c) and take every read that is waiting along
 * (readindex_attach).  Reads with no write to ride on get an entry of their
 * own, one CMD_NOOP command (readindex_flush).  Up to READINDEX_DEPTH such
 * entries are in flight.  They are ordinary raft_apply entries, not
 * raft_barrier ones: libraft 0.15 calls a barrier's callback twice and is
 * fragile with several barriers in flight, while applies pipeline.
 *
 * Entries are only appended, and rounds only started, from the loop's check
 * phase, never from inside a libraft callback: a failed entry is reported
 * while libraft is tearing its leader state down, and appending then
 * crashes it. */
#ifndef RAFTKV_READINDEX_H
#define RAFTKV_READINDEX_H

#include <raft.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "confirm.h"
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
    /* With status 0: the read index that was confirmed (the store has
     * applied at least this much), or 0 when it is the store's applied
     * index at the callback. */
    uint64_t index;
};

/* Read-only entries in flight at most. */
#define READINDEX_DEPTH 16
/* Leadership rounds waiting for answers at most. */
#define READINDEX_ROUNDS 4

struct readindex
{
    struct node *node;
    struct queue waiting; /* arrived, not yet behind an appended entry */
    struct queue flights; /* read-only entries in flight */
    unsigned in_flight;
    unsigned long long entries; /* read-only entries appended, for metrics */

    struct confirm confirm;
    struct queue rounds;      /* rounds waiting for the voters */
    struct queue ready;       /* confirmed, waiting for the store to apply */
    unsigned rounds_in_flight;
    uint64_t own_term;        /* an entry this leader appended in it applied */
    uint64_t rounds_off_until_ms; /* after a failed round: entries only */
    bool rounds_disabled;         /* --read-confirm log */
    unsigned long long rounds_started, rounds_failed; /* for metrics */
    uv_idle_t idle;             /* no sleeping while reads wait */
    bool closed;
};

/* @round_timeout_ms bounds how long a round waits for the voters before
 * its reads take the slow way; @rounds false disables rounds altogether. */
void readindex_init(struct readindex *ri, struct node *node, uv_loop_t *loop,
                    unsigned round_timeout_ms, bool rounds);

/* Stop the idle handle and close the voters' connections (at shutdown,
 * after readindex_fail_all). */
void readindex_close(struct readindex *ri);

/* Queue @r; @cb runs with 0 once an entry appended after now has been
 * applied (then read the store), or with NODE_ENOTLEADER /
 * NODE_ELEADERSHIPLOST / NODE_ESHUTDOWN, or NODE_ENOMEM when there was no
 * memory to start the confirmation it waits on.  Returns 0, or NODE_ENOTLEADER at
 * once (then @cb never runs). */
int readindex_read(struct readindex *ri, struct node_read *r, node_read_cb cb,
                   void *data);

/* An entry has just been appended: move every waiting read onto @reads, to
 * be answered by readindex_complete when that entry is applied or fails.
 * While rounds work, reads are left for the next round instead, which
 * answers them sooner than a commit would. */
void readindex_attach(struct readindex *ri, struct queue *reads);

/* An entry this node appended as leader in @term has been applied: from now
 * on its commit index is current for that term, and rounds may be used. */
void readindex_term_applied(struct readindex *ri, uint64_t term);

/* Answer every read of @reads: @status is libraft's for the entry they rode
 * on (0: applied). */
void readindex_complete(struct queue *reads, int raft_status);

/* End of a loop iteration: answer the confirmed reads the store has caught
 * up with; start a round for the reads still waiting, or give them an entry
 * of their own, unless READINDEX_ROUNDS / READINDEX_DEPTH are already out
 * (then the next one to end makes room).  Fails them with NODE_ENOTLEADER
 * if this node no longer leads. */
void readindex_flush(struct readindex *ri);

/* Fail every queued read with @status (shutdown). */
void readindex_fail_all(struct readindex *ri, int status);

#endif
