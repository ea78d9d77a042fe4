/* readindex.c - linearizable reads confirmed by shared barriers; see
 * readindex.h. */
#include "readindex.h"

#include "log.h"
#include "node.h"

static void kick_cb(uv_timer_t *t);

void readindex_init(struct readindex *ri, struct node *node, uv_loop_t *loop)
{
    ri->node = node;
    uv_timer_init(loop, &ri->kick);
    ri->kick.data = ri;
    ri->closed = false;
    queue_init(&ri->waiting);
    for (unsigned i = 0; i < READINDEX_ROUNDS; i++) {
        ri->rounds[i].ri = ri;
        ri->rounds[i].in_flight = false;
        queue_init(&ri->rounds[i].reads);
    }
    ri->next_round = 0;
    ri->current = NULL;
    ri->barriers = 0;
}

static void complete(struct queue *reads, int status)
{
    while (!queue_empty(reads)) {
        struct queue *q = reads->next;
        struct node_read *r = queue_data(q, struct node_read, link);
        queue_remove(q);
        r->cb(r, status);
    }
}

static void start_round(struct readindex *ri);

static void barrier_done(struct raft_barrier *req, int status)
{
    struct readindex_round *round = (struct readindex_round *)req;
    struct readindex *ri = round->ri;
    int rv;

    if (!round->in_flight)
        return; /* libraft 0.15 may call back twice; the first one counts */
    round->in_flight = false;
    if (ri->current == round)
        ri->current = NULL;
    switch (status) {
    case 0:
        rv = 0;
        break;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        rv = NODE_ESHUTDOWN;
        break;
    default:
        rv = NODE_ELEADERSHIPLOST;
        break;
    }
    complete(&round->reads, rv);
    if (!queue_empty(&ri->waiting) && !ri->closed)
        uv_timer_start(&ri->kick, kick_cb, 0, 0);
}

static void kick_cb(uv_timer_t *t)
{
    struct readindex *ri = t->data;
    if (ri->current == NULL && !queue_empty(&ri->waiting))
        start_round(ri);
}

static void start_round(struct readindex *ri)
{
    struct node *n = ri->node;
    struct readindex_round *round = &ri->rounds[ri->next_round];
    int rv;

    if (round->in_flight) {
        /* All slots busy can only mean libraft never answered 16 barriers:
         * wait for them rather than reuse a live one. */
        log_warn("read barrier slot still in flight; reads wait");
        return;
    }
    ri->next_round = (ri->next_round + 1) % READINDEX_ROUNDS;
    /* Only reads that arrived before this barrier is appended ride on it. */
    queue_init(&round->reads);
    while (!queue_empty(&ri->waiting)) {
        struct queue *q = ri->waiting.next;
        queue_remove(q);
        queue_push(&round->reads, q);
    }
    if (!node_is_leader(n)) {
        complete(&round->reads, NODE_ENOTLEADER);
        return;
    }
    rv = raft_barrier(n->raft, &round->barrier, barrier_done);
    if (rv != 0) {
        /* During a leadership transfer libraft refuses barriers. */
        complete(&round->reads, rv == RAFT_NOTLEADER ? NODE_ENOTLEADER
                                                     : NODE_ELEADERSHIPLOST);
        return;
    }
    round->in_flight = true;
    ri->current = round;
    ri->barriers++;
}

int readindex_read(struct readindex *ri, struct node_read *r, node_read_cb cb,
                   void *data)
{
    if (!node_is_leader(ri->node))
        return NODE_ENOTLEADER;
    r->cb = cb;
    r->data = data;
    queue_push(&ri->waiting, &r->link);
    if (ri->current == NULL)
        start_round(ri);
    return 0;
}

void readindex_close(struct readindex *ri)
{
    if (ri->closed)
        return;
    ri->closed = true;
    uv_close((uv_handle_t *)&ri->kick, NULL);
}

void readindex_fail_all(struct readindex *ri, int status)
{
    complete(&ri->waiting, status);
    for (unsigned i = 0; i < READINDEX_ROUNDS; i++)
        complete(&ri->rounds[i].reads, status);
}
