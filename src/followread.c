/* followread.c - a follower asks the leader for a read index and serves
 * linearizable reads from its own store; see followread.h. */
#include "followread.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "client.h"
#include "log.h"
#include "node.h"

/* One question to the leader, for the reads that were waiting when it was
 * sent; once answered, the same reads wait for the store to reach @index. */
struct ask
{
    struct followread *fr;
    uint64_t index;              /* the leader's answer */
    uint64_t deadline_ms;        /* for the store to reach @index */
    struct queue link;           /* in fr->asks, then fr->ready */
    struct queue reads;
};

static void idle_cb(uv_idle_t *idle) { (void)idle; }

void followread_init(struct followread *fr, struct node *node, uv_loop_t *loop,
                     unsigned timeout_ms)
{
    fr->node = node;
    queue_init(&fr->waiting);
    queue_init(&fr->asks);
    queue_init(&fr->ready);
    fr->in_flight = 0;
    fr->timeout_ms = timeout_ms;
    uv_idle_init(loop, &fr->idle);
    fr->idle.data = fr;
    fr->asked = 0;
    fr->closed = false;
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

static void wake(struct followread *fr)
{
    if (!fr->closed)
        uv_idle_start(&fr->idle, idle_cb); /* do not sleep before the check */
}

/* Serve every answered question whose index the store has reached, and
 * relay the reads of those that waited longer than the timeout for it.
 * Answers come back in any order, so the whole queue is looked at. */
static void serve_ready(struct followread *fr)
{
    uint64_t applied, now;

    if (queue_empty(&fr->ready))
        return;
    applied = node_applied_index(fr->node);
    now = uv_now(fr->node->loop);
    for (struct queue *q = fr->ready.next; q != &fr->ready;) {
        struct ask *a = queue_data(q, struct ask, link);
        if (a->index > applied && now < a->deadline_ms) {
            q = q->next;
            continue;
        }
        queue_remove(&a->link);
        if (a->index > applied)
            log_info("the store did not reach read index %" PRIu64
                     " (it is at %" PRIu64 ") within %u ms; relaying the "
                     "reads to the leader",
                     a->index, applied, fr->timeout_ms);
        complete(&a->reads, a->index > applied ? NODE_ENOTLEADER : 0);
        free(a);
        q = fr->ready.next; /* the replies may have changed the queue */
    }
}

/* The leader's answer: {"index": N}.  Returns 0 and sets *@index, or -1. */
static int parse_answer(const struct client_response *res, uint64_t *index)
{
    json_t *doc, *v;
    json_int_t n;

    if (res->status != 200 || res->body == NULL)
        return -1;
    doc = json_loadb(res->body, res->body_len, JSON_REJECT_DUPLICATES, NULL);
    v = json_is_object(doc) ? json_object_get(doc, "index") : NULL;
    n = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(doc);
    if (n < 0)
        return -1;
    *index = (uint64_t)n;
    return 0;
}

static void ask_done(void *arg, const struct client_response *res)
{
    struct ask *a = arg;
    struct followread *fr = a->fr;

    queue_remove(&a->link);
    fr->in_flight--;
    if (fr->closed) { /* its reads were failed at close */
        free(a);
        return;
    }
    if (parse_answer(res, &a->index) != 0) {
        log_debug("no read index from the leader (%d: %s); relaying reads",
                  res->status,
                  res->status == 0 && res->error ? res->error
                  : res->body                    ? res->body
                                                 : "");
        complete(&a->reads, NODE_ENOTLEADER);
        free(a);
    } else {
        a->deadline_ms = uv_now(fr->node->loop) + fr->timeout_ms;
        queue_push(&fr->ready, &a->link);
        serve_ready(fr);
    }
    if (!queue_empty(&fr->waiting))
        wake(fr); /* room for another question */
}

/* Send one question for every read waiting.  Returns 0, or NODE_ENOTLEADER
 * for the reads (which stay waiting) when none can be sent. */
static int ask_leader(struct followread *fr)
{
    static const char *const marker[] = {"X-Raftkv-Forwarded: 1", NULL};
    struct node *n = fr->node;
    struct node_member leader;
    char url[NODE_ADDR_MAX + 64];
    struct ask *a;

    if (node_is_leader(n) || node_leader(n, &leader) != 0 ||
        leader.id == n->id || leader.http_addr[0] == '\0' ||
        n->fsm.cluster_id == 0)
        return NODE_ENOTLEADER;
    a = malloc(sizeof *a);
    if (a == NULL)
        return NODE_ENOTLEADER; /* a relay may still get through */
    snprintf(url, sizeof url, "http://%s/v1/internal/readindex?cluster=%016" PRIx64,
             leader.http_addr, n->fsm.cluster_id);
    a->fr = fr;
    a->index = 0;
    queue_init(&a->reads);
    /* Everything ask_done undoes is in place before the request starts;
     * after it returns 0, @a belongs to ask_done. */
    queue_move_all(&fr->waiting, &a->reads);
    queue_push(&fr->asks, &a->link);
    fr->in_flight++;
    if (client_request_headers(n->client, "GET", url, NULL, 0, NULL, marker,
                               fr->timeout_ms, ask_done, a, NULL) != 0) {
        queue_remove(&a->link);
        fr->in_flight--;
        queue_move_all(&a->reads, &fr->waiting);
        free(a);
        return NODE_ENOTLEADER;
    }
    fr->asked++;
    return 0;
}

void followread_flush(struct followread *fr)
{
    int rv;

    if (fr->closed)
        return;
    uv_idle_stop(&fr->idle);
    serve_ready(fr);
    if (queue_empty(&fr->waiting) || fr->in_flight >= FOLLOWREAD_DEPTH)
        return; /* ask_done wakes the loop when room is made */
    if ((rv = ask_leader(fr)) != 0)
        complete(&fr->waiting, rv);
}

int followread_read(struct followread *fr, struct node_read *r,
                    node_read_cb cb, void *data)
{
    struct node *n = fr->node;
    raft_id leader = 0;
    const char *addr;

    if (!fr->closed && n->raft_open && !node_is_leader(n))
        raft_leader(n->raft, &leader, &addr);
    if (leader == 0 || leader == n->id)
        return NODE_ENOTLEADER;
    r->cb = cb;
    r->data = data;
    r->index = 0;
    if (queue_empty(&fr->waiting))
        wake(fr);
    queue_push(&fr->waiting, &r->link);
    return 0;
}

void followread_close(struct followread *fr, int status)
{
    if (fr->closed)
        return;
    complete(&fr->waiting, status);
    for (struct queue *q = fr->asks.next; q != &fr->asks; q = q->next)
        complete(&queue_data(q, struct ask, link)->reads, status);
    while (!queue_empty(&fr->ready)) {
        struct ask *a = queue_data(fr->ready.next, struct ask, link);
        queue_remove(&a->link);
        complete(&a->reads, status);
        free(a);
    }
    fr->closed = true;
    uv_close((uv_handle_t *)&fr->idle, NULL);
}
