/* confirm.h - ask the other voters whether this node still leads.
 *
 * A linearizable read must not be answered by a leader that a newer leader
 * has already replaced (readindex.h).  One proof is an entry this node
 * appends after the read arrived and then sees committed, but that costs a
 * disk write on the leader and on a follower for every batch of reads.
 * Raft's ReadIndex needs less: after the read arrived, ask each other voter
 * "are you still in term T, following me?".  A voter that answers yes has
 * not voted in any later term yet, and a newer leader needs the votes of a
 * majority, which shares a voter with any majority that said yes.  So once
 * a majority (this node included) has said yes, no newer leader had been
 * elected when the read arrived, and the commit index taken when the round
 * started covers every write acknowledged before it.
 *
 * libraft 0.15 has no ReadIndex and raftkv cannot add messages to its
 * connections, so the question travels as a tiny HTTP request,
 * "GET /v1/internal/confirm?cluster=C&term=T&leader=L&voter=V", on a
 * keep-alive connection to each voter's HTTP port.  It names the voter and
 * the cluster meant, so that a yes from whatever else listens at that
 * address (another cluster whose nodes have the same names, hence the same
 * ids; a node that took over the port) counts for nothing.  Requests are
 * pipelined: a connection carries up to CONFIRM_PIPELINE unanswered ones,
 * and h2o answers in order.
 *
 * This module only asks and counts; readindex.c decides what a round is
 * for.  A round ends exactly once: confirmed, refused (too many voters said
 * no or could not be asked), timed out, or cancelled at close.  A round
 * that does not end well proves nothing either way, and the reads go the
 * slow, always-safe way instead.
 *
 * Everything runs on the loop thread. */
#ifndef RAFTKV_CONFIRM_H
#define RAFTKV_CONFIRM_H

#include <raft.h>
#include <stdint.h>
#include <uv.h>

#include "queue.h"

/* Unanswered requests one connection may carry. */
#define CONFIRM_PIPELINE 8

enum confirm_result {
    CONFIRM_OK,        /* enough voters said yes */
    CONFIRM_REFUSED,   /* too many said no, or could not be asked */
    CONFIRM_TIMEOUT,   /* not enough answers in time */
    CONFIRM_CANCELLED, /* confirm_close */
};

/* Errors of confirm_start (negative). */
enum {
    CONFIRM_EUNAVAILABLE = -1, /* not enough voters can be asked right now */
    CONFIRM_ENOMEM = -2,
};

/* A voter to ask: its id and HTTP address "a.b.c.d:port" or "[v6]:port". */
struct confirm_peer
{
    raft_id id;
    const char *http_addr;
};

struct confirm_round;
typedef void (*confirm_cb)(struct confirm_round *round, int result);

/* One question to the voters.  Owned by the caller; must live until the
 * callback. */
struct confirm_round
{
    struct queue link; /* in confirm.rounds */
    uint64_t seq;
    uint64_t cluster, term;
    uint64_t started_ms;
    unsigned asked, yes, no; /* "no" includes peers that could not answer */
    unsigned need;           /* yes answers needed */
    confirm_cb cb;
    void *data;
};

struct confirm
{
    uv_loop_t *loop;
    raft_id self;
    unsigned timeout_ms;
    struct queue conns;  /* confirm_conn, one per voter ever asked */
    struct queue rounds; /* rounds waiting for answers, oldest first */
    uint64_t next_seq;
    uv_timer_t timer; /* ends rounds that take too long */
    struct confirm_round *starting; /* being asked: not ended early */
    bool closed;
    uint64_t requests; /* questions sent, for metrics */
};

/* Set up @c for node @self; rounds time out after @timeout_ms. */
void confirm_init(struct confirm *c, uv_loop_t *loop, raft_id self,
                  unsigned timeout_ms);

/* Ask each of @peers (the voters other than this node) whether it follows
 * @self in @term of cluster @cluster; @need of them must say yes.
 * Returns:
 *   1                     @need is 0: confirmed at once, @cb never runs;
 *   0                     asked, @cb runs exactly once later;
 *   CONFIRM_EUNAVAILABLE  fewer than @need peers can be asked now (no
 *                         connection and none allowed yet, pipeline full,
 *                         no usable address); @cb never runs;
 *   CONFIRM_ENOMEM.
 * A peer with an empty or unparsable address counts as unable to answer. */
int confirm_start(struct confirm *c, struct confirm_round *round,
                  uint64_t cluster, uint64_t term,
                  const struct confirm_peer *peers,
                  unsigned n_peers, unsigned need, confirm_cb cb, void *data);

/* End every round with CONFIRM_CANCELLED, close every connection and the
 * timer.  The loop must run afterwards for the handles to close. */
void confirm_close(struct confirm *c);

#endif
