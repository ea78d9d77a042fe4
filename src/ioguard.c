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

static struct ioguard *installed; /* one raft instance per process */

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

static struct guarded *take(struct ioguard *g, void *req)
{
    for (struct queue *q = g->pending.next; q != &g->pending; q = q->next) {
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
    struct guarded *w = take(installed, req);
    raft_io_append_cb cb;

    if (w == NULL)
        return; /* cannot happen: every append is tracked */
    cb = w->append_cb;
    free(w);
    if (is_disk_error(status))
        stop(installed, "append", status);
    cb(req, status);
}

static int guard_append(struct raft_io *io, struct raft_io_append *req,
                        const struct raft_entry entries[], unsigned n,
                        raft_io_append_cb cb)
{
    struct ioguard *g = installed;
    struct guarded *w = calloc(1, sizeof *w);
    int rv;

    if (w == NULL)
        return RAFT_NOMEM;
    w->g = g;
    w->req = req;
    w->append_cb = cb;
    queue_push(&g->pending, &w->link);
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
    struct guarded *w = take(installed, req);
    raft_io_snapshot_put_cb cb;

    if (w == NULL)
        return;
    cb = w->snapshot_cb;
    free(w);
    if (is_disk_error(status))
        stop(installed, "snapshot write", status);
    cb(req, status);
}

static int guard_snapshot_put(struct raft_io *io, unsigned trailing,
                              struct raft_io_snapshot_put *req,
                              const struct raft_snapshot *snapshot,
                              raft_io_snapshot_put_cb cb)
{
    struct ioguard *g = installed;
    struct guarded *w = calloc(1, sizeof *w);
    int rv;

    if (w == NULL)
        return RAFT_NOMEM;
    w->g = g;
    w->req = req;
    w->snapshot_cb = cb;
    queue_push(&g->pending, &w->link);
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
    int rv = installed->set_term(io, term);
    if (is_disk_error(rv))
        stop(installed, "term write", rv);
    return rv;
}

static int guard_set_vote(struct raft_io *io, raft_id id)
{
    int rv = installed->set_vote(io, id);
    if (is_disk_error(rv))
        stop(installed, "vote write", rv);
    return rv;
}

static int guard_truncate(struct raft_io *io, raft_index index)
{
    int rv = installed->truncate(io, index);
    if (is_disk_error(rv))
        stop(installed, "truncate", rv);
    return rv;
}

void ioguard_install(struct ioguard *g, struct raft_io *io,
                     void (*fatal)(void *arg, const char *what), void *arg)
{
    g->io = io;
    g->fatal = fatal;
    g->arg = arg;
    queue_init(&g->pending);
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
    installed = g;
}

void ioguard_release(struct ioguard *g)
{
    /* Requests libraft never completed (it does complete them on close;
     * this only guards against leaks). */
    while (!queue_empty(&g->pending)) {
        struct queue *q = g->pending.next;
        queue_remove(q);
        free(queue_data(q, struct guarded, link));
    }
    if (installed == g)
        installed = NULL;
}
