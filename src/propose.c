/* propose.c - group commit of writes into one Raft entry; see propose.h. */
#include "propose.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "node.h"

struct propose_key
{
    uint64_t hash;
    uint32_t gen;
};

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
    p->keys = NULL;
    p->keys_cap = p->keys_n = 0;
    p->keys_gen = 1;
}

/* --- the keys a batch writes ---------------------------------------------- */

/* Why it matters: mod_index is the index of the entry that wrote a key.  Two
 * writes of one key in one entry would share it, and a compare-and-swap
 * against that index could not tell them apart (a lost update). */

static uint64_t key_hash(const struct command_bytes *key)
{
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < key->len; i++) {
        h ^= key->base[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void keys_forget(struct propose *p)
{
    p->keys_n = 0;
    if (++p->keys_gen == 0) { /* wrapped: no stamp may match by chance */
        if (p->keys != NULL)
            memset(p->keys, 0, p->keys_cap * sizeof *p->keys);
        p->keys_gen = 1;
    }
}

/* Slot of @h: where it is, or the free slot where it would go. */
static size_t keys_slot(const struct propose *p, uint64_t h)
{
    size_t mask = p->keys_cap - 1, i = (size_t)h & mask;
    while (p->keys[i].gen == p->keys_gen && p->keys[i].hash != h)
        i = (i + 1) & mask;
    return i;
}

static bool keys_has(const struct propose *p, uint64_t h)
{
    return p->keys_cap != 0 && p->keys[keys_slot(p, h)].gen == p->keys_gen;
}

/* Returns 0 or -1 (no memory: then the caller proposes the batch alone). */
static int keys_add(struct propose *p, uint64_t h)
{
    if (2 * (p->keys_n + 1) > p->keys_cap) {
        size_t cap = p->keys_cap ? 2 * p->keys_cap : 64;
        struct propose_key *old = p->keys;
        size_t old_cap = p->keys_cap;
        struct propose_key *keys = calloc(cap, sizeof *keys);
        if (keys == NULL)
            return -1;
        p->keys = keys;
        p->keys_cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].gen == p->keys_gen)
                p->keys[keys_slot(p, old[i].hash)] = old[i];
        free(old);
    }
    size_t i = keys_slot(p, h);
    if (p->keys[i].gen != p->keys_gen) {
        p->keys[i].hash = h;
        p->keys[i].gen = p->keys_gen;
        p->keys_n++;
    }
    return 0;
}

/* Calls @fn on each key @cmds may write (both branches of a txn). */
static bool cmds_each_key(const struct command *cmds, unsigned n,
                          bool (*fn)(struct propose *, uint64_t),
                          struct propose *p)
{
    for (unsigned i = 0; i < n; i++) {
        const struct command *c = &cmds[i];
        switch (c->type) {
        case CMD_PUT:
        case CMD_DELETE:
        case CMD_PUT_CAS:
        case CMD_DELETE_CAS:
            if (fn(p, key_hash(&c->key)))
                return true;
            break;
        case CMD_TXN:
            for (unsigned j = 0; c->txn != NULL && j < c->txn->n_success; j++)
                if (c->txn->success[j].kind != OP_GET &&
                    fn(p, key_hash(&c->txn->success[j].key)))
                    return true;
            for (unsigned j = 0; c->txn != NULL && j < c->txn->n_failure; j++)
                if (c->txn->failure[j].kind != OP_GET &&
                    fn(p, key_hash(&c->txn->failure[j].key)))
                    return true;
            break;
        default:
            break;
        }
    }
    return false;
}

static bool key_seen(struct propose *p, uint64_t h) { return keys_has(p, h); }

static bool key_note(struct propose *p, uint64_t h)
{
    return keys_add(p, h) != 0; /* true stops the walk */
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
    keys_forget(p);
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

    if (p->batch.count + n > PROPOSE_MAX_COMMANDS ||
        cmds_each_key(cmds, n, key_seen, p))
        propose_now(p);
    first = p->batch.count;
    rv = command_batch_add(&p->batch, cmds, n);
    if (rv != 0)
        return rv == COMMAND_ENOMEM ? NODE_ENOMEM : NODE_EIO;
    req->first = first;
    req->count = n;
    bool no_room = cmds_each_key(cmds, n, key_note, p);
    if (queue_empty(&p->reqs) && !p->closed)
        uv_idle_start(&p->idle, idle_cb); /* do not sleep before the check */
    queue_push(&p->reqs, &req->link);
    if (p->batch.len >= PROPOSE_MAX_BYTES || no_room)
        propose_now(p); /* no_room: the batch could not remember its keys */
    return 0;
}

void propose_close(struct propose *p, int status)
{
    command_batch_free(&p->batch);
    free(p->keys);
    p->keys = NULL;
    p->keys_cap = p->keys_n = 0;
    complete(&p->reqs, status, NULL);
    if (!p->closed) {
        p->closed = true;
        uv_close((uv_handle_t *)&p->idle, NULL);
        uv_close((uv_handle_t *)&p->hold, NULL);
    }
}
