/* readindex.c - linearizable reads confirmed by the next appended entry;
 * see readindex.h. */
#include "readindex.h"

#include <stdlib.h>

#include "command.h"
#include "log.h"
#include "node.h"

/* A CMD_NOOP entry appended for reads that had no write to ride on.
 * libraft calls back once per raft_apply (only barriers repeat). */
struct flight
{
    struct raft_apply req; /* first: libraft hands it back */
    struct readindex *ri;
    struct queue link;  /* in ri->flights */
    struct queue reads; /* answered when the entry is applied */
};

static void idle_cb(uv_idle_t *idle) { (void)idle; }

void readindex_init(struct readindex *ri, struct node *node, uv_loop_t *loop)
{
    ri->node = node;
    queue_init(&ri->waiting);
    queue_init(&ri->flights);
    ri->in_flight = 0;
    ri->entries = 0;
    uv_idle_init(loop, &ri->idle);
    ri->idle.data = ri;
    ri->closed = false;
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

void readindex_complete(struct queue *reads, int raft_status)
{
    switch (raft_status) {
    case 0:
        complete(reads, 0);
        break;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        complete(reads, NODE_ESHUTDOWN);
        break;
    default:
        complete(reads, NODE_ELEADERSHIPLOST);
        break;
    }
}

static void move_all(struct queue *from, struct queue *to)
{
    while (!queue_empty(from)) {
        struct queue *q = from->next;
        queue_remove(q);
        queue_push(to, q);
    }
}

void readindex_attach(struct readindex *ri, struct queue *reads)
{
    move_all(&ri->waiting, reads);
}

static void flight_done(struct raft_apply *req, int status, void *result)
{
    struct flight *f = (struct flight *)req;
    struct readindex *ri = f->ri;
    (void)result;

    queue_remove(&f->link);
    ri->in_flight--;
    readindex_complete(&f->reads, status);
    free(f);
    /* Room for another entry: have the check phase run soon. */
    if (!queue_empty(&ri->waiting) && !ri->closed)
        uv_idle_start(&ri->idle, idle_cb);
}

void readindex_flush(struct readindex *ri)
{
    struct node *n = ri->node;
    struct command noop = {.type = CMD_NOOP};
    struct raft_buffer buf;
    struct flight *f;
    int rv;

    uv_idle_stop(&ri->idle);
    if (queue_empty(&ri->waiting) || ri->closed)
        return;
    if (!node_is_leader(n)) {
        complete(&ri->waiting, NODE_ENOTLEADER);
        return;
    }
    if (ri->in_flight >= READINDEX_DEPTH)
        return; /* flight_done restarts the idle handle */
    f = malloc(sizeof *f);
    if (f == NULL)
        goto err_nomem;
    if (command_encode_alloc(&noop, 1, &buf.base, &buf.len) != 0)
        goto err_free;
    rv = raft_apply(n->raft, &f->req, &buf, 1, flight_done);
    if (rv != 0) {
        raft_free(buf.base);
        free(f);
        /* During a leadership transfer libraft refuses new entries. */
        complete(&ri->waiting, rv == RAFT_NOTLEADER ? NODE_ENOTLEADER
                                                    : NODE_ELEADERSHIPLOST);
        return;
    }
    f->ri = ri;
    queue_init(&f->reads);
    move_all(&ri->waiting, &f->reads);
    queue_push(&ri->flights, &f->link);
    ri->in_flight++;
    ri->entries++;
    return;

err_free:
    free(f);
err_nomem:
    log_error("no memory for a read entry");
    complete(&ri->waiting, NODE_ENOMEM);
}

int readindex_read(struct readindex *ri, struct node_read *r, node_read_cb cb,
                   void *data)
{
    if (!node_is_leader(ri->node))
        return NODE_ENOTLEADER;
    r->cb = cb;
    r->data = data;
    if (queue_empty(&ri->waiting) && !ri->closed)
        uv_idle_start(&ri->idle, idle_cb); /* do not sleep before the check */
    queue_push(&ri->waiting, &r->link);
    return 0;
}

void readindex_close(struct readindex *ri)
{
    if (ri->closed)
        return;
    ri->closed = true;
    uv_close((uv_handle_t *)&ri->idle, NULL);
}

void readindex_fail_all(struct readindex *ri, int status)
{
    complete(&ri->waiting, status);
    /* The entries stay with libraft, which still calls back for each. */
    for (struct queue *q = ri->flights.next; q != &ri->flights; q = q->next)
        complete(&queue_data(q, struct flight, link)->reads, status);
}
