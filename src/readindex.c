/* readindex.c - linearizable reads, confirmed by a round of questions to
 * the voters or by the next appended entry; see readindex.h. */
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
    uint64_t term;      /* the leader's term when appended */
    struct queue link;  /* in ri->flights */
    struct queue reads; /* answered when the entry is applied */
};

/* A round of questions to the voters (confirm.h) for the reads that were
 * waiting when it started. */
struct round
{
    struct confirm_round confirm;
    struct readindex *ri;
    uint64_t commit;    /* the read index: commit index at the start */
    struct queue link;  /* in ri->rounds, then ri->ready */
    struct queue reads;
};

/* After a round that failed, reads take the log way for this long: a voter
 * that says no is usually about to start an election, and one that cannot
 * be reached is better left to the reconnect pause. */
#define ROUNDS_PAUSE_MS 1000

/* Voters a round can ask. */
#define READINDEX_PEERS_MAX 64

static void idle_cb(uv_idle_t *idle) { (void)idle; }

void readindex_init(struct readindex *ri, struct node *node, uv_loop_t *loop,
                    unsigned round_timeout_ms, bool rounds)
{
    ri->node = node;
    queue_init(&ri->waiting);
    queue_init(&ri->flights);
    ri->in_flight = 0;
    ri->entries = 0;
    uv_idle_init(loop, &ri->idle);
    ri->idle.data = ri;
    ri->closed = false;
    confirm_init(&ri->confirm, loop, node->id, round_timeout_ms);
    queue_init(&ri->rounds);
    queue_init(&ri->ready);
    ri->rounds_in_flight = 0;
    ri->own_term = 0;
    ri->rounds_off_until_ms = 0;
    ri->rounds_disabled = !rounds;
    ri->rounds_started = ri->rounds_failed = 0;
}

static void complete_at(struct queue *reads, int status, uint64_t index)
{
    while (!queue_empty(reads)) {
        struct queue *q = reads->next;
        struct node_read *r = queue_data(q, struct node_read, link);
        queue_remove(q);
        r->index = index;
        r->cb(r, status);
    }
}

static void complete(struct queue *reads, int status)
{
    complete_at(reads, status, 0);
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

/* May the reads waiting now go by round? */
static bool rounds_usable(struct readindex *ri)
{
    struct raft *r = ri->node->raft;
    return !ri->rounds_disabled && ri->own_term == r->current_term &&
           uv_now(ri->node->loop) >= ri->rounds_off_until_ms;
}

void readindex_attach(struct readindex *ri, struct queue *reads)
{
    if (!rounds_usable(ri))
        queue_move_all(&ri->waiting, reads);
}

void readindex_term_applied(struct readindex *ri, uint64_t term)
{
    struct node *n = ri->node;
    if (node_is_leader(n) && n->raft->current_term == term)
        ri->own_term = term;
}

static void flight_done(struct raft_apply *req, int status, void *result)
{
    struct flight *f = (struct flight *)req;
    struct readindex *ri = f->ri;
    (void)result;

    queue_remove(&f->link);
    ri->in_flight--;
    if (status == 0)
        readindex_term_applied(ri, f->term);
    readindex_complete(&f->reads, status);
    free(f);
    /* Room for another entry: have the check phase run soon. */
    if (!queue_empty(&ri->waiting) && !ri->closed)
        uv_idle_start(&ri->idle, idle_cb);
}

/* Answer the reads of every confirmed round whose read index the store
 * has reached.  Rounds are confirmed out of the order of their commit
 * index when the voters that answer first change between rounds, so the
 * whole queue is looked at; it is short (rounds wait there only for the
 * store to apply what was committed when they started). */
static void serve_ready(struct readindex *ri)
{
    uint64_t applied;

    if (queue_empty(&ri->ready))
        return;
    applied = node_applied_index(ri->node);
    for (struct queue *q = ri->ready.next; q != &ri->ready;) {
        struct round *rd = queue_data(q, struct round, link);
        if (rd->commit > applied) {
            q = q->next;
            continue;
        }
        queue_remove(&rd->link);
        complete_at(&rd->reads, 0, rd->commit);
        free(rd);
        q = ri->ready.next; /* the replies may have changed the queue */
    }
}

static void round_done(struct confirm_round *cr, int result)
{
    struct round *rd = cr->data;
    struct readindex *ri = rd->ri;
    struct node *n = ri->node;

    queue_remove(&rd->link);
    ri->rounds_in_flight--;
    switch (result) {
    case CONFIRM_OK:
        if (!node_is_leader(n) || n->raft->current_term != cr->term) {
            /* Confirmed, but this node has moved on since: the reads would
             * still be correct, yet its store may never reach the commit
             * index it had as leader if the log was truncated below it. */
            complete(&rd->reads, NODE_ELEADERSHIPLOST);
            free(rd);
            break;
        }
        queue_push(&ri->ready, &rd->link);
        serve_ready(ri);
        break;
    case CONFIRM_CANCELLED:
        complete(&rd->reads, NODE_ESHUTDOWN);
        free(rd);
        break;
    default:
        /* No proof either way: the reads go the log way, which always
         * settles.  They are older than anything waiting, so go first. */
        ri->rounds_failed++;
        if (uv_now(n->loop) >= ri->rounds_off_until_ms) /* once per pause */
            log_info("leadership round %s; linearizable reads use log "
                     "entries for %d ms",
                     result == CONFIRM_TIMEOUT ? "timed out" : "refused",
                     ROUNDS_PAUSE_MS);
        ri->rounds_off_until_ms = uv_now(n->loop) + ROUNDS_PAUSE_MS;
        while (!queue_empty(&rd->reads)) {
            struct queue *q = rd->reads.prev;
            queue_remove(q);
            queue_push_front(&ri->waiting, q);
        }
        free(rd);
        break;
    }
    if (!queue_empty(&ri->waiting) && !ri->closed)
        uv_idle_start(&ri->idle, idle_cb);
}

/* Start a round for every read waiting.  Returns 0, or -1 when rounds
 * cannot be used now (the reads stay waiting). */
static int start_round(struct readindex *ri)
{
    struct node *n = ri->node;
    struct node_member members[READINDEX_PEERS_MAX];
    struct confirm_peer peers[READINDEX_PEERS_MAX];
    unsigned count, voters = 0, n_peers = 0;
    bool self_votes = false;
    struct round *rd;
    int rv;

    count = node_members(n, members, READINDEX_PEERS_MAX);
    if (count > READINDEX_PEERS_MAX)
        return -1;
    for (unsigned i = 0; i < count; i++) {
        if (members[i].role != RAFT_VOTER)
            continue;
        voters++;
        if (members[i].id == n->id) {
            self_votes = true;
            continue;
        }
        peers[n_peers].id = members[i].id;
        peers[n_peers].http_addr = members[i].http_addr;
        n_peers++;
    }
    if (!self_votes)
        return -1;
    rd = malloc(sizeof *rd);
    if (rd == NULL)
        return -1;
    rd->ri = ri;
    rd->commit = n->raft->commit_index;
    queue_init(&rd->reads);
    rv = confirm_start(&ri->confirm, &rd->confirm, n->fsm.cluster_id,
                       n->raft->current_term, peers, n_peers, voters / 2,
                       round_done, rd);
    if (rv < 0) {
        free(rd);
        return -1;
    }
    queue_move_all(&ri->waiting, &rd->reads);
    ri->rounds_started++;
    if (rv == 1) { /* the only voter: nobody else can lead */
        queue_push(&ri->ready, &rd->link);
        serve_ready(ri);
        return 0;
    }
    queue_push(&ri->rounds, &rd->link);
    ri->rounds_in_flight++;
    return 0;
}

void readindex_flush(struct readindex *ri)
{
    struct node *n = ri->node;
    struct command noop = {.type = CMD_NOOP};
    struct raft_buffer buf;
    struct flight *f;
    int rv;

    uv_idle_stop(&ri->idle);
    serve_ready(ri);
    if (queue_empty(&ri->waiting) || ri->closed)
        return;
    if (!node_is_leader(n)) {
        complete(&ri->waiting, NODE_ENOTLEADER);
        return;
    }
    if (rounds_usable(ri)) {
        if (ri->rounds_in_flight >= READINDEX_ROUNDS)
            return; /* round_done restarts the idle handle */
        if (start_round(ri) == 0)
            return;
        /* Not enough voters reachable: the log way, and no new round for a
         * while. */
        ri->rounds_off_until_ms = uv_now(n->loop) + ROUNDS_PAUSE_MS;
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
    f->term = n->raft->current_term;
    queue_init(&f->reads);
    queue_move_all(&ri->waiting, &f->reads);
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
    r->index = 0;
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
    confirm_close(&ri->confirm);
    uv_close((uv_handle_t *)&ri->idle, NULL);
}

void readindex_fail_all(struct readindex *ri, int status)
{
    complete(&ri->waiting, status);
    /* Rounds stay with confirm.c until readindex_close cancels them. */
    for (struct queue *q = ri->rounds.next; q != &ri->rounds; q = q->next)
        complete(&queue_data(q, struct round, link)->reads, status);
    while (!queue_empty(&ri->ready)) {
        struct round *rd = queue_data(ri->ready.next, struct round, link);
        queue_remove(&rd->link);
        complete(&rd->reads, status);
        free(rd);
    }
    /* The entries stay with libraft, which still calls back for each. */
    for (struct queue *q = ri->flights.next; q != &ri->flights; q = q->next)
        complete(&queue_data(q, struct flight, link)->reads, status);
}
