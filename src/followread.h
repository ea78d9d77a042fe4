/* followread.h - linearizable reads served by a follower from its own store.
 *
 * A follower may not answer a linearizable read from its store as it
 * stands: it may not have applied the newest writes.  Relaying the whole
 * read to the leader (forward.c) is correct but makes every read two HTTP
 * hops and puts its whole cost on the leader.  Raft's answer, which etcd
 * uses for follower reads, is to ask the leader only for a read index: the
 * leader confirms it still leads (readindex.h) and answers with its commit
 * index at that point, which covers every write acknowledged before the
 * question was asked.  Once the follower's store has applied that index, it
 * holds every such write, and the read may be served locally.
 *
 * Questions are shared: the reads that arrive during one loop iteration go
 * out as one question, "GET /v1/internal/readindex?cluster=C", on a kept-
 * alive connection to the leader's HTTP address (client.h), and up to
 * FOLLOWREAD_DEPTH questions are in flight at once.  A read is only ever
 * answered with an index asked for after it arrived.
 *
 * When no read index can be had -- no leader known, the leader cannot be
 * reached, it is no longer the leader, it does not answer in time -- or the
 * store does not reach the index in time, the read fails with
 * NODE_ENOTLEADER, and the caller relays it whole as before: that way gives
 * the client the leader's own answer or the relay's own error, and never a
 * stale value.
 *
 * Everything runs on the loop thread. */
#ifndef RAFTKV_FOLLOWREAD_H
#define RAFTKV_FOLLOWREAD_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "queue.h"
#include "readindex.h"

struct node;

/* Questions to the leader in flight at most. */
#define FOLLOWREAD_DEPTH 2

struct followread
{
    struct node *node;
    struct queue waiting; /* arrived, not yet in a question */
    struct queue asks;    /* questions in flight */
    struct queue ready;   /* answered, waiting for the store to apply */
    unsigned in_flight;
    unsigned timeout_ms;  /* for a question, and then for the store */
    uv_idle_t idle;       /* no sleeping while reads wait */
    unsigned long long asked;   /* questions sent, for metrics */
    bool closed;
};

/* @timeout_ms bounds the wait for the leader's answer, and then the wait
 * for the store to apply the index it gave. */
void followread_init(struct followread *fr, struct node *node, uv_loop_t *loop,
                     unsigned timeout_ms);

/* Queue @r; @cb runs exactly once: with 0 once the store holds every write
 * acknowledged before now (then read the store), with NODE_ENOTLEADER when
 * the read must be relayed to the leader instead, or with NODE_ESHUTDOWN.
 * Returns 0, or NODE_ENOTLEADER at once when no leader other than this
 * node is known (then @cb never runs). */
int followread_read(struct followread *fr, struct node_read *r,
                    node_read_cb cb, void *data);

/* End of a loop iteration: serve the reads whose index the store has
 * reached, relay those that waited too long, and ask about the waiting
 * ones unless FOLLOWREAD_DEPTH questions are out. */
void followread_flush(struct followread *fr);

/* Fail every queued read with @status, then stop the idle handle (at
 * shutdown, before the client is closed: questions still in flight are
 * cancelled with it and end with no reads). */
void followread_close(struct followread *fr, int status);

#endif
