/* snapsend.c - replace snapshot markers by the full state when sending;
 * see snapsend.h. */
#include "snapsend.h"

#include <stdlib.h>

#include "log.h"
#include "queue.h"

struct get_req
{
    struct queue link;
    struct snapsend *s;
    struct raft_io_snapshot_get *req;
    raft_io_snapshot_get_cb cb;
};

/* Gets in flight and wrapped I/Os of the process (bootstrap reopens Raft,
 * so there may be several). */
static struct queue all = {&all, &all};
static struct snapsend *instances;

static struct get_req *take(struct raft_io_snapshot_get *req)
{
    for (struct queue *q = all.next; q != &all; q = q->next) {
        struct get_req *g = queue_data(q, struct get_req, link);
        if (g->req == req) {
            queue_remove(q);
            return g;
        }
    }
    return NULL;
}

/* What libraft's snapshotClose would do; it is not exported. */
static void snapshot_destroy(struct raft_snapshot *snap)
{
    raft_configuration_close(&snap->configuration);
    for (unsigned i = 0; i < snap->n_bufs; i++)
        raft_free(snap->bufs[i].base);
    raft_free(snap->bufs);
    raft_free(snap);
}

static void get_done(struct raft_io_snapshot_get *req,
                     struct raft_snapshot *snap, int status)
{
    struct get_req *g = take(req);
    raft_io_snapshot_get_cb cb;
    struct snapsend *s;
    void *data;
    size_t len;
    int rv;

    if (g == NULL)
        return; /* cannot happen: every get is tracked */
    cb = g->cb;
    s = g->s;
    free(g);
    if (status != 0 || snap == NULL || snap->n_bufs != 1 ||
        !fsm_snapshot_is_marker(snap->bufs[0].base, snap->bufs[0].len)) {
        cb(req, snap, status);
        return;
    }
    rv = fsm_snapshot_full(s->fsm, &data, &len);
    if (rv != 0) {
        log_error("cannot serialize the store for a follower: %s",
                  raft_strerror(rv));
        snapshot_destroy(snap);
        cb(req, NULL, rv);
        return;
    }
    log_info("sending a follower the store as of index %llu (%zu bytes) for "
             "the snapshot at %llu",
             (unsigned long long)s->fsm->applied_index, len,
             (unsigned long long)snap->index);
    raft_free(snap->bufs[0].base);
    snap->bufs[0].base = data;
    snap->bufs[0].len = len;
    cb(req, snap, 0);
}

static struct snapsend *snapsend_of(struct raft_io *io)
{
    for (struct snapsend *s = instances; s != NULL; s = s->next)
        if (s->io == io)
            return s;
    abort(); /* only wrapped I/O calls in here */
}

static int wrapped_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                       raft_io_snapshot_get_cb cb)
{
    struct snapsend *s = snapsend_of(io);
    struct get_req *g = calloc(1, sizeof *g);
    int rv;

    if (g == NULL)
        return RAFT_NOMEM;
    g->s = s;
    g->req = req;
    g->cb = cb;
    queue_push(&all, &g->link);
    rv = s->snapshot_get(io, req, get_done);
    if (rv != 0) {
        queue_remove(&g->link);
        free(g);
    }
    return rv;
}

void snapsend_install(struct snapsend *s, struct raft_io *io, struct fsm *fsm)
{
    s->io = io;
    s->fsm = fsm;
    s->snapshot_get = io->snapshot_get;
    io->snapshot_get = wrapped_get;
    s->next = instances;
    instances = s;
}

void snapsend_release(struct snapsend *s)
{
    struct queue *q, *next;
    for (q = all.next; q != &all; q = next) {
        next = q->next;
        struct get_req *g = queue_data(q, struct get_req, link);
        if (g->s == s) {
            queue_remove(q);
            free(g);
        }
    }
    for (struct snapsend **p = &instances; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
}
