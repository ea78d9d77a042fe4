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

/* One serialization on the thread pool, for one get. */
struct serial_job
{
    struct queue link; /* in s->jobs */
    uv_work_t work;
    struct snapsend *s;
    struct raft_io_snapshot_get *req;
    raft_io_snapshot_get_cb cb;
    struct raft_snapshot *snap; /* libraft's, holding the marker */
    uint64_t marker_index;      /* what the marker stands for */
    struct fsm_serial serial;
    void *data;
    size_t len;
    uint64_t index; /* the state the data holds */
    int rv;
};

static void serial_work(uv_work_t *work)
{
    struct serial_job *j = work->data;
    j->rv = fsm_serial_run(&j->serial, &j->data, &j->len, &j->index);
}

static void serial_done(uv_work_t *work, int status)
{
    struct serial_job *j = work->data;
    struct snapsend *s = j->s;
    struct raft_snapshot *snap = j->snap;
    int rv = j->rv;

    (void)status; /* never cancelled */
    if (rv == 0 && s->closing) {
        raft_free(j->data); /* nobody to send it to */
        rv = RAFT_CANCELED;
    }
    if (rv == 0 && j->index < j->marker_index) {
        /* The follower would take it for the state at snap->index and
         * never apply the commands in between.  (snap->index itself may be
         * past both: libraft counts configuration entries and barriers,
         * which never reach the store.) */
        log_error("the store holds index %llu, behind the snapshot's %llu: "
                  "not sending it",
                  (unsigned long long)j->index,
                  (unsigned long long)j->marker_index);
        raft_free(j->data);
        rv = RAFT_IOERR;
    }
    if (rv != 0) {
        if (rv == RAFT_CANCELED)
            log_info("stopped serializing the store for a follower: raft "
                     "is closing");
        else if (rv == RAFT_BUSY)
            log_info("stopped serializing the store for a follower: the "
                     "store's map must grow first; libraft will ask again");
        else
            log_error("cannot serialize the store for a follower: %s",
                      raft_strerror(rv));
        snapshot_destroy(snap);
        j->cb(j->req, NULL, rv);
    } else {
        log_info("sending a follower the store as of index %llu (%zu bytes) "
                 "for the snapshot at %llu",
                 (unsigned long long)j->index, j->len,
                 (unsigned long long)snap->index);
        raft_free(snap->bufs[0].base);
        snap->bufs[0].base = j->data;
        snap->bufs[0].len = j->len;
        j->cb(j->req, snap, 0);
    }
    queue_remove(&j->link);
    free(j);
    if (queue_empty(&s->jobs) && s->close_deferred) {
        s->close_deferred = false;
        s->close(s->io, s->close_cb);
    }
}

static void get_done(struct raft_io_snapshot_get *req,
                     struct raft_snapshot *snap, int status)
{
    struct get_req *g = take(req);
    struct serial_job *j;
    raft_io_snapshot_get_cb cb;
    struct snapsend *s;
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
    if (s->closing) {
        /* libraft's close waited for its own read of the file, and fires
         * once this returns: nothing may outlive it. */
        snapshot_destroy(snap);
        cb(req, NULL, RAFT_CANCELED);
        return;
    }
    j = calloc(1, sizeof *j);
    if (j == NULL) {
        rv = RAFT_NOMEM;
        goto err;
    }
    j->s = s;
    j->req = req;
    j->cb = cb;
    j->snap = snap;
    j->marker_index = fsm_snapshot_marker_index(snap->bufs[0].base);
    j->work.data = j;
    if ((rv = fsm_serial_begin(s->fsm, &j->serial)) != 0)
        goto err_job;
    if (uv_queue_work(s->loop, &j->work, serial_work, serial_done) != 0) {
        fsm_serial_cancel(&j->serial);
        rv = RAFT_IOERR;
        goto err_job;
    }
    queue_push(&s->jobs, &j->link);
    log_info("serializing the store for a follower, for the snapshot at %llu",
             (unsigned long long)snap->index);
    return;

err_job:
    free(j);
err:
    if (rv == RAFT_BUSY)
        log_info("not serializing the store for a follower now: the "
                 "store's map must grow first");
    else
        log_error("cannot serialize the store for a follower: %s",
                  raft_strerror(rv));
    snapshot_destroy(snap);
    cb(req, NULL, rv);
}

static struct snapsend *snapsend_of(struct raft_io *io)
{
    for (struct snapsend *s = instances; s != NULL; s = s->next)
        if (s->io == io)
            return s;
    abort(); /* only wrapped I/O calls in here */
}

static void wrapped_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct snapsend *s = snapsend_of(io);
    s->closing = true;
    if (!queue_empty(&s->jobs)) {
        log_info("closing raft once the store's serialization for a "
                 "follower stops");
        for (struct queue *q = s->jobs.next; q != &s->jobs; q = q->next)
            fsm_serial_stop(&queue_data(q, struct serial_job, link)->serial);
        s->close_cb = cb;
        s->close_deferred = true;
        return;
    }
    s->close(io, cb);
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

void snapsend_install(struct snapsend *s, struct raft_io *io, struct fsm *fsm,
                      uv_loop_t *loop)
{
    s->io = io;
    s->fsm = fsm;
    s->loop = loop;
    queue_init(&s->jobs);
    s->closing = false;
    s->close_deferred = false;
    s->close_cb = NULL;
    s->snapshot_get = io->snapshot_get;
    s->close = io->close;
    io->snapshot_get = wrapped_get;
    io->close = wrapped_close;
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
