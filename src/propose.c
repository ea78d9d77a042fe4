/* propose.c - group commit of writes into one Raft entry; see propose.h. */
#include "propose.h"

#include <stdlib.h>

#include "log.h"
#include "node.h"

/* One raft_apply carrying the commands of several requests. */
struct proposal
{
    struct raft_apply raft; /* first: libraft hands it back */
    struct queue reqs;
    struct queue reads; /* linearizable reads riding on it (readindex.h) */
    struct propose *p;
    uint64_t term; /* the leader's term when appended */
};

static void idle_cb(uv_idle_t *idle) { (void)idle; }

static void hold_cb(uv_timer_t *t)
{
    struct propose *p = t->data;
    p->hold_expired = true;
    propose_flush(p);
}

void propose_init(struct propose *p, struct node *node, uv_loop_t *loop)
{
    p->node = node;
    command_batch_init(&p->batch);
    queue_init(&p->reqs);
    uv_idle_init(loop, &p->idle);
    p->idle.data = p;
    uv_timer_init(loop, &p->hold);
    p->hold.data = p;
    p->hold_expired = false;
    p->closed = false;
    p->entries = p->commands = 0;
    p->held = p->holds_expired = 0;
}

/* Hand every request of @reqs its result (or @status). */
static void complete(struct queue *reqs, int status,
                     const struct fsm_result *res)
{
    while (!queue_empty(reqs)) {
        struct queue *q = reqs->next;
        struct node_apply_req *req = queue_data(q, struct node_apply_req, link);
        queue_remove(q);
        if (req->done)
            continue;
        req->done = true;
        if (status != 0 || res == NULL) {
            req->cb(req, status != 0 ? status : NODE_EIO, NULL);
            continue;
        }
        if (res->n < req->first + req->count) {
            log_error("entry %llu applied %u commands, expected %u",
                      (unsigned long long)res->index, res->n,
                      req->first + req->count);
            req->cb(req, NODE_EIO, NULL);
            continue;
        }
        /* The request sees only its own commands. */
        struct fsm_result view = *res;
        view.n = req->count;
        view.outcomes = res->outcomes + req->first;
        req->cb(req, 0, &view); /* may free req */
    }
}

/* libraft calls an apply's callback exactly once (it is the barrier whose
 * callback may run twice in 0.15, and raftkv uses none), so the proposal
 * can be freed here. */
static void applied(struct raft_apply *raft_req, int status, void *result)
{
    struct proposal *prop = (struct proposal *)raft_req;
    int rv;

    switch (status) {
    case 0:
        rv = 0;
        break;
    case RAFT_LEADERSHIPLOST:
    case RAFT_NOTLEADER:
        rv = NODE_ELEADERSHIPLOST;
        break;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        rv = NODE_ESHUTDOWN;
        break;
    default:
        log_error("write failed: %s", raft_strerror(status));
        rv = NODE_EIO;
        break;
    }
    if (status == 0)
        readindex_term_applied(&prop->p->node->reads, prop->term);
    complete(&prop->reqs, rv, rv == 0 ? result : NULL);
    readindex_complete(&prop->reads, status);
    free(prop);
}

/* Whether the leader has entries libraft has not yet written: its next
 * write can only start once the one in flight completes. */
static bool leader_writing(struct node *n)
{
    return node_is_leader(n) && n->raft->last_stored < raft_last_index(n->raft);
}

/* Propose the queued commands as one entry, now. */
static void propose_now(struct propose *p)
{
    struct node *n = p->node;
    struct proposal *prop;
    struct raft_buffer buf;
    unsigned count = p->batch.count;
    int rv;

    uv_idle_stop(&p->idle);
    if (uv_is_active((uv_handle_t *)&p->hold) || p->hold_expired) {
        p->held++;
        p->holds_expired += p->hold_expired;
        uv_timer_stop(&p->hold);
        p->hold_expired = false;
    }
    if (queue_empty(&p->reqs))
        return;
    prop = calloc(1, sizeof *prop);
    if (prop == NULL) {
        command_batch_free(&p->batch);
        complete(&p->reqs, NODE_ENOMEM, NULL);
        return;
    }
    /* The queued requests move to the proposal. */
    queue_init(&prop->reqs);
    queue_init(&prop->reads);
    while (!queue_empty(&p->reqs)) {
        struct queue *q = p->reqs.next;
        queue_remove(q);
        queue_push(&prop->reqs, q);
    }
    command_batch_finish(&p->batch, &buf.base, &buf.len);
    prop->p = p;
    if (!node_is_leader(n)) {
        rv = RAFT_NOTLEADER;
    } else {
        prop->term = n->raft->current_term;
        rv = raft_apply(n->raft, &prop->raft, &buf, 1, applied);
    }
    if (rv != 0) {
        raft_free(buf.base);
        /* Nothing was appended: a request may safely go elsewhere. */
        complete(&prop->reqs,
                 rv == RAFT_NOTLEADER || rv == RAFT_LEADERSHIPLOST
                     ? NODE_ENOTLEADER
                     : rv == RAFT_NOMEM ? NODE_ENOMEM : NODE_EIO,
                 NULL);
        free(prop);
        return;
    }
    /* Appended after every read waiting now: it confirms them too. */
    readindex_attach(&n->reads, &prop->reads);
    p->entries++;
    p->commands += count;
}

void propose_flush(struct propose *p)
{
    if (!queue_empty(&p->reqs) && !p->hold_expired && !p->closed &&
        leader_writing(p->node)) {
        /* Sleep until the write's completion (or the timer) wakes us. */
        uv_idle_stop(&p->idle);
        if (!uv_is_active((uv_handle_t *)&p->hold))
            uv_timer_start(&p->hold, hold_cb, PROPOSE_HOLD_MS, 0);
        return;
    }
    propose_now(p);
}

int propose_add(struct propose *p, struct node_apply_req *req,
                const struct command *cmds, unsigned n)
{
    unsigned first = p->batch.count;
    int rv;

    if (p->batch.count + n > PROPOSE_MAX_COMMANDS)
        propose_now(p);
    first = p->batch.count;
    rv = command_batch_add(&p->batch, cmds, n);
    if (rv != 0)
        return rv == COMMAND_ENOMEM ? NODE_ENOMEM : NODE_EIO;
    req->first = first;
    req->count = n;
    if (queue_empty(&p->reqs) && !p->closed)
        uv_idle_start(&p->idle, idle_cb); /* do not sleep before the check */
    queue_push(&p->reqs, &req->link);
    if (p->batch.len >= PROPOSE_MAX_BYTES)
        propose_now(p);
    return 0;
}

void propose_close(struct propose *p, int status)
{
    command_batch_free(&p->batch);
    complete(&p->reqs, status, NULL);
    if (!p->closed) {
        p->closed = true;
        uv_close((uv_handle_t *)&p->idle, NULL);
        uv_close((uv_handle_t *)&p->hold, NULL);
    }
}
