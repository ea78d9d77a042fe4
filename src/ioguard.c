/* ioguard.c - turn Raft log write errors into a clean stop; see ioguard.h.
 */
#include "ioguard.h"

#include <stdio.h>
#include <stdlib.h>

#include "log.h"

/* Which guard a wrapped request belongs to, and whose callback it was. */
struct guarded
{
    struct queue link;
    struct ioguard *g;
    void *req;
    raft_io_append_cb append_cb;
    raft_io_snapshot_put_cb snapshot_cb;
};

/* A node may have had several libraft instances (bootstrap reopens one);
 * late callbacks of an old one must still find their guard. */
static struct ioguard *guards;
static struct queue pending = {&pending, &pending}; /* async writes */

static bool is_disk_error(int status)
{
    return status == RAFT_IOERR || status == RAFT_NOSPACE ||
           status == RAFT_CORRUPT;
}

static void stop(struct ioguard *g, const char *what, int status)
{
    char msg[RAFT_ERRMSG_BUF_SIZE + 128];
    snprintf(msg, sizeof msg, "Raft log %s failed: %s (%s)", what,
             raft_strerror(status), g->io->errmsg);
    g->fatal(g->arg, msg);
}

static struct guarded *take(void *req)
{
    for (struct queue *q = pending.next; q != &pending; q = q->next) {
        struct guarded *w = queue_data(q, struct guarded, link);
        if (w->req == req) {
            queue_remove(q);
            return w;
        }
    }
    return NULL;
}

static void append_done(struct raft_io_append *req, int status)
{
    struct guarded *w = take(req);
    struct ioguard *g;
    raft_io_append_cb cb;

    if (w == NULL)
        return; /* cannot happen: every append is tracked */
    cb = w->append_cb;
    g = w->g;
    free(w);
    if (is_disk_error(status))
        stop(g, "append", status);
    cb(req, status);
}

static struct ioguard *guard_of(struct raft_io *io)
{
    for (struct ioguard *g = guards; g != NULL; g = g->next)
        if (g->io == io)
            return g;
    abort(); /* only guarded I/O calls in here */
}

static int guard_append(struct raft_io *io, struct raft_io_append *req,
                        const struct raft_entry entries[], unsigned n,
                        raft_io_append_cb cb)
{
    struct ioguard *g = guard_of(io);
    struct guarded *w = calloc(1, sizeof *w);
    int rv;

    if (w == NULL)
        return RAFT_NOMEM;
    w->g = g;
    w->req = req;
    w->append_cb = cb;
    queue_push(&pending, &w->link);
    rv = g->append(io, req, entries, n, append_done);
    if (rv != 0) {
        queue_remove(&w->link);
        free(w);
        if (is_disk_error(rv))
            stop(g, "append", rv);
    }
    return rv;
}

static void snapshot_done(struct raft_io_snapshot_put *req, int status)
{
    struct guarded *w = take(req);
    struct ioguard *g;
    raft_io_snapshot_put_cb cb;

    if (w == NULL)
        return;
    cb = w->snapshot_cb;
    g = w->g;
    free(w);
    if (is_disk_error(status))
        stop(g, "snapshot write", status);
    cb(req, status);
}

static int guard_snapshot_put(struct raft_io *io, unsigned trailing,
                              struct raft_io_snapshot_put *req,
                              const struct raft_snapshot *snapshot,
                              raft_io_snapshot_put_cb cb)
{
    struct ioguard *g = guard_of(io);
    struct guarded *w = calloc(1, sizeof *w);
    int rv;

    if (w == NULL)
        return RAFT_NOMEM;
    w->g = g;
    w->req = req;
    w->snapshot_cb = cb;
    queue_push(&pending, &w->link);
    rv = g->snapshot_put(io, trailing, req, snapshot, snapshot_done);
    if (rv != 0) {
        queue_remove(&w->link);
        free(w);
        if (is_disk_error(rv))
            stop(g, "snapshot write", rv);
    }
    return rv;
}

static int guard_set_term(struct raft_io *io, raft_term term)
{
    struct ioguard *g = guard_of(io);
    int rv = g->set_term(io, term);
    if (is_disk_error(rv))
        stop(g, "term write", rv);
    return rv;
}

static int guard_set_vote(struct raft_io *io, raft_id id)
{
    struct ioguard *g = guard_of(io);
    int rv = g->set_vote(io, id);
    if (is_disk_error(rv))
        stop(g, "vote write", rv);
    return rv;
}

static int guard_truncate(struct raft_io *io, raft_index index)
{
    struct ioguard *g = guard_of(io);
    int rv = g->truncate(io, index);
    if (is_disk_error(rv))
        stop(g, "truncate", rv);
    return rv;
}

static void close_done(struct raft_io *io)
{
    struct ioguard *g = guard_of(io);
    if (g->close_reported)
        return; /* libraft 0.15 reports twice; its handler frees twice */
    g->close_reported = true;
    g->close_cb(io);
}

static void guard_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct ioguard *g = guard_of(io);
    g->close_cb = cb;
    g->close(io, close_done);
}

void ioguard_install(struct ioguard *g, struct raft_io *io,
                     void (*fatal)(void *arg, const char *what), void *arg)
{
    g->io = io;
    g->fatal = fatal;
    g->arg = arg;
    g->close_reported = false;
    g->close = io->close;
    g->append = io->append;
    g->snapshot_put = io->snapshot_put;
    g->set_term = io->set_term;
    g->set_vote = io->set_vote;
    g->truncate = io->truncate;
    io->append = guard_append;
    io->snapshot_put = guard_snapshot_put;
    io->set_term = guard_set_term;
    io->set_vote = guard_set_vote;
    io->truncate = guard_truncate;
    io->close = guard_close;
    g->next = guards;
    guards = g;
}

void ioguard_release(struct ioguard *g)
{
    struct queue *q, *next;

    /* Requests libraft never completed (it completes them on close; this
     * only guards against leaks). */
    for (q = pending.next; q != &pending; q = next) {
        next = q->next;
        struct guarded *w = queue_data(q, struct guarded, link);
        if (w->g == g) {
            queue_remove(q);
            free(w);
        }
    }
    for (struct ioguard **p = &guards; *p != NULL; p = &(*p)->next) {
        if (*p == g) {
            *p = g->next;
            break;
        }
    }
}
