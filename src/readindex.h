/* readindex.h - linearizable reads on the leader.
 *
 * A leader may only answer from its store once it knows it is still the
 * leader *after* the read arrived; otherwise a newer leader could already
 * have committed writes it has not seen.  libraft 0.15 has no ReadIndex, so
 * leadership is confirmed by a Raft barrier: once a barrier appended after
 * the read arrived is committed and applied, this node was the leader at some
 * point after the read started, and its store holds every entry committed
 * before it.
 *
 * Barriers cost a log entry and a round trip, so reads share them: all reads
 * that arrive while one barrier is in flight wait together for the next one.
 * Only one barrier is ever in flight (libraft 0.15 is fragile with several),
 * and each barrier's callback is honoured once even if libraft calls it
 * again.  The next barrier is never appended from inside libraft's callback:
 * a failed barrier is reported while libraft is tearing its leader state
 * down, and appending then crashes it; a zero timer starts it instead. */
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

#define READINDEX_ROUNDS 16

/* One barrier and the reads it answers. */
struct readindex_round
{
    struct raft_barrier barrier; /* first: libraft hands it back */
    struct readindex *ri;
    struct queue reads;
    bool in_flight;
};

struct readindex
{
    struct node *node;
    struct queue waiting; /* arrived since the current barrier started */
    struct readindex_round rounds[READINDEX_ROUNDS]; /* reused in turn */
    unsigned next_round;
    struct readindex_round *current; /* the barrier in flight, or NULL */
    unsigned long long barriers;     /* appended, for metrics */
    uv_timer_t kick;                 /* starts the next round, outside libraft */
    bool closed;
};

void readindex_init(struct readindex *ri, struct node *node, uv_loop_t *loop);

/* Stop the timer (at shutdown, after readindex_fail_all). */
void readindex_close(struct readindex *ri);

/* Queue @r; @cb runs with 0 once a barrier appended after now has been
 * applied (then read the store), or with NODE_ENOTLEADER /
 * NODE_ELEADERSHIPLOST / NODE_ESHUTDOWN.  Returns 0, or NODE_ENOTLEADER at
 * once (then @cb never runs). */
int readindex_read(struct readindex *ri, struct node_read *r, node_read_cb cb,
                   void *data);

/* Fail every queued read with @status (leadership lost, shutdown). */
void readindex_fail_all(struct readindex *ri, int status);

#endif
