/* membership.c - adding servers, one configuration change at a time; see
 * membership.h for the steps and why. */
#include "membership.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

enum {
    JOIN_RESOLVING,
    JOIN_QUEUED,
    JOIN_ADDING,    /* raft_add in flight */
    JOIN_STANDBY,   /* raft_assign(standby) in flight */
    JOIN_CATCHUP,   /* waiting for its log to catch up (tick) */
    JOIN_PROMOTING, /* raft_assign(voter) in flight */
    JOIN_RECORDING, /* members table write in flight */
    JOIN_UNDO,      /* failed: remove it again (from the tick) */
    JOIN_REMOVING,  /* raft_remove in flight */
};

static void start_next(struct node *n);

static void finish(struct join_req *j, int status)
{
    struct node *n = j->node;
    if (n->join_active == j)
        n->join_active = NULL;
    if (status == 0)
        log_info("member %s (%016llx) at %s is a voter", j->name,
                 (unsigned long long)j->id, j->raft_addr);
    else
        log_warn("join of %s at %s failed: %s", j->name, j->raft_addr,
                 j->msg[0] ? j->msg : node_strerror(status));
    if (status != 0 && j->msg[0] == '\0')
        snprintf(j->msg, sizeof j->msg, "%s", node_strerror(status));
    j->cb(j, status, j->msg); /* may free j */
    /* The next join starts from the tick, never from inside a libraft
     * callback: a failure is reported while libraft tears its leader state
     * down, and a new configuration change then would crash it. */
    (void)n;
}

static int change_status(int status)
{
    switch (status) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
        return NODE_ENOTLEADER;
    case RAFT_LEADERSHIPLOST:
        return NODE_ELEADERSHIPLOST;
    case RAFT_CANTCHANGE: /* a configuration entry is not committed yet */
        return NODE_EBUSY;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return NODE_ESHUTDOWN;
    case RAFT_NOCONNECTION:
        return NODE_ETIMEOUT;
    default:
        return NODE_EIO;
    }
}

/* --- failure path: take the half-added server out again ------------------ */

static void removed_cb(struct raft_change *change, int status)
{
    struct join_req *j = change->data;
    if (status != 0)
        log_warn("could not remove %s after a failed join: %s", j->name,
                 raft_strerror(status));
    finish(j, j->error);
}

/* Undo the add from the tick (see finish). */
static void fail_and_remove(struct join_req *j, int error)
{
    j->error = error;
    j->step = JOIN_UNDO;
}

static void undo(struct join_req *j)
{
    struct node *n = j->node;
    int rv;

    if (!node_is_leader(n)) {
        finish(j, j->error);
        return;
    }
    j->step = JOIN_REMOVING;
    j->change.data = j;
    rv = raft_remove(n->raft, &j->change, j->id, removed_cb);
    if (rv != 0) {
        log_warn("could not remove %s after a failed join: %s", j->name,
                 raft_strerror(rv));
        finish(j, j->error);
    }
}

/* --- the steps -------------------------------------------------------------- */

static void record_cb(struct node_apply_req *req, int status,
                      const struct fsm_result *result)
{
    struct join_req *j = req->data;
    (void)result;
    finish(j, status);
}

/* Write name and addresses unless the store already has them. */
static void step_record(struct join_req *j)
{
    struct node *n = j->node;
    struct node_member m;
    struct command c = {.type = CMD_MEMBER_PUT, .id = j->id};
    int rv;

    if (node_member(n, j->id, &m) == 0 && strcmp(m.name, j->name) == 0 &&
        (j->http_addr[0] == '\0' || strcmp(m.http_addr, j->http_addr) == 0)) {
        finish(j, 0);
        return;
    }
    if (j->http_addr[0] == '\0' && m.http_addr[0] != '\0')
        snprintf(j->http_addr, sizeof j->http_addr, "%s", m.http_addr);
    c.name.base = (const uint8_t *)j->name;
    c.name.len = strlen(j->name);
    c.raft_addr.base = (const uint8_t *)j->raft_addr;
    c.raft_addr.len = strlen(j->raft_addr);
    c.http_addr.base = (const uint8_t *)j->http_addr;
    c.http_addr.len = strlen(j->http_addr);
    j->step = JOIN_RECORDING;
    rv = node_apply(n, &j->apply, &c, 1, record_cb, j);
    if (rv != 0)
        finish(j, rv);
}

static void promoted_cb(struct raft_change *change, int status)
{
    struct join_req *j = change->data;
    if (status != 0) {
        snprintf(j->msg, sizeof j->msg, "promotion of %s to voter failed: %s",
                 j->name, raft_strerror(status));
        finish(j, change_status(status));
        return;
    }
    step_record(j);
}

static void step_catchup(struct join_req *j)
{
    j->step = JOIN_CATCHUP;
    j->target = raft_last_index(j->node->raft);
    j->last_match = 0;
    j->last_progress_ms = uv_now(j->node->loop);
    membership_tick(j->node);
}

static void standby_cb(struct raft_change *change, int status)
{
    struct join_req *j = change->data;
    if (status != 0) {
        snprintf(j->msg, sizeof j->msg, "cannot make %s a standby: %s",
                 j->name, raft_strerror(status));
        if (status == RAFT_LEADERSHIPLOST || status == RAFT_SHUTDOWN)
            finish(j, change_status(status));
        else
            fail_and_remove(j, change_status(status));
        return;
    }
    step_catchup(j);
}

static void assign(struct join_req *j, int role, raft_change_cb cb)
{
    int rv;
    j->change.data = j;
    rv = raft_assign(j->node->raft, &j->change, j->id, role, cb);
    if (rv != 0) {
        snprintf(j->msg, sizeof j->msg, "cannot change the role of %s: %s",
                 j->name, raft_strerror(rv));
        finish(j, change_status(rv));
    }
}

static void added_cb(struct raft_change *change, int status)
{
    struct join_req *j = change->data;
    if (status != 0) {
        snprintf(j->msg, sizeof j->msg, "cannot add %s: %s", j->name,
                 raft_strerror(status));
        finish(j, change_status(status));
        return;
    }
    j->step = JOIN_STANDBY;
    assign(j, RAFT_STANDBY, standby_cb);
}

static void begin(struct join_req *j)
{
    struct node *n = j->node;
    const struct raft_configuration *c = &n->raft->configuration;
    const struct raft_server *same_id = NULL, *same_addr = NULL;
    struct store_txn t;
    struct store_member sm;
    int rv;

    if (!node_is_leader(n)) {
        finish(j, NODE_ENOTLEADER);
        return;
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id == j->id)
            same_id = &c->servers[i];
        if (strcmp(c->servers[i].address, j->raft_addr) == 0)
            same_addr = &c->servers[i];
    }
    if (same_addr != NULL && same_addr->id != j->id) {
        struct node_member m;
        node_member(n, same_addr->id, &m);
        snprintf(j->msg, sizeof j->msg,
                 "Raft address %s is already used by member %s", j->raft_addr,
                 m.name[0] ? m.name : "(unnamed)");
        finish(j, NODE_ECONFLICT);
        return;
    }
    if (same_id != NULL && strcmp(same_id->address, j->raft_addr) != 0) {
        snprintf(j->msg, sizeof j->msg,
                 "%s is already a member with Raft address %s; remove it "
                 "first to change its address",
                 j->name, same_id->address);
        finish(j, NODE_ECONFLICT);
        return;
    }
    /* Two names that hash to one id cannot both be members. */
    if (store_txn_begin(n->store, false, &t) == 0) {
        rv = store_member_get(&t, j->id, &sm);
        bool clash = rv == 0 && (sm.name_len != strlen(j->name) ||
                                 memcmp(sm.name, j->name, sm.name_len) != 0);
        if (clash)
            snprintf(j->msg, sizeof j->msg,
                     "name %s has the same id as member %.*s; choose "
                     "another name",
                     j->name, (int)sm.name_len, sm.name);
        store_txn_abort(&t);
        if (clash) {
            finish(j, NODE_ECONFLICT);
            return;
        }
    }

    j->started_ms = uv_now(n->loop);
    if (same_id == NULL) {
        log_info("adding %s (%016llx) at %s", j->name,
                 (unsigned long long)j->id, j->raft_addr);
        transport_forget(&n->ri->transport, j->id);
        j->step = JOIN_ADDING;
        j->change.data = j;
        rv = raft_add(n->raft, &j->change, j->id, j->raft_addr, added_cb);
        if (rv != 0) {
            snprintf(j->msg, sizeof j->msg, "cannot add %s: %s", j->name,
                     raft_strerror(rv));
            finish(j, change_status(rv));
        }
        return;
    }
    switch (same_id->role) {
    case RAFT_VOTER:
        step_record(j);
        return;
    case RAFT_SPARE:
        j->step = JOIN_STANDBY;
        assign(j, RAFT_STANDBY, standby_cb);
        return;
    default:
        step_catchup(j);
        return;
    }
}

/* A join waits while a removal or a transfer is under way: libraft takes
 * one configuration change at a time and would refuse it (the node's tick
 * calls this again). */
static void start_next(struct node *n)
{
    if (n->change_active && !queue_empty(&n->joins)) {
        struct join_req *j = queue_data(n->joins.next, struct join_req, link);
        if (!j->told_waiting)
            log_info("join of %s waits for the membership change under way",
                     j->name);
        j->told_waiting = true;
    }
    while (n->join_active == NULL && !n->change_active &&
           !queue_empty(&n->joins)) {
        struct queue *q = n->joins.next;
        struct join_req *j = queue_data(q, struct join_req, link);
        queue_remove(q);
        n->join_active = j;
        begin(j); /* may finish synchronously and loop */
    }
}

/* Called from the node's tick while a new server catches up. */
void membership_tick(struct node *n)
{
    struct join_req *j = n->join_active;
    const struct raft_configuration *c = &n->raft->configuration;
    const struct transport_refusal *refusal;
    uint64_t now = uv_now(n->loop);
    raft_index match = 0;
    const struct raft_progress *progress = NULL;
    bool found = false;

    if (j == NULL) {
        start_next(n);
        return;
    }
    if (j->step == JOIN_UNDO) {
        undo(j);
        return;
    }
    if (j->step != JOIN_CATCHUP)
        return;
    if (!node_is_leader(n)) {
        finish(j, NODE_ELEADERSHIPLOST);
        return;
    }
    refusal = transport_refusal(&n->ri->transport, j->id);
    if (refusal != NULL && refusal->when_ms >= j->started_ms) {
        snprintf(j->msg, sizeof j->msg,
                 "%s at %s belongs to another cluster (%016llx; this cluster "
                 "is %016llx) and refused to join; to add it, stop it, empty "
                 "its data directory and start it again",
                 j->name, j->raft_addr,
                 (unsigned long long)refusal->cluster_id,
                 (unsigned long long)n->fsm.cluster_id);
        fail_and_remove(j, NODE_EOTHERCLUSTER);
        return;
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id == j->id) {
            progress = &n->raft->leader_state.progress[i];
            match = progress->match_index;
            found = true;
        }
    }
    if (!found) {
        snprintf(j->msg, sizeof j->msg,
                 "%s left the configuration while catching up", j->name);
        finish(j, NODE_ECONFLICT);
        return;
    }
    if (match >= j->target) {
        j->step = JOIN_PROMOTING;
        assign(j, RAFT_VOTER, promoted_cb);
        return;
    }
    if (match > j->last_match) {
        j->last_match = match;
        j->last_progress_ms = now;
        return;
    }
    /* A snapshot being sent and installed moves no match index for as long
     * as it takes, seconds per million keys: it counts as progress until
     * libraft itself gives it up (install_snapshot_timeout) and sends it
     * again. */
    if (progress->state == RAFT_PROGRESS_SNAPSHOT &&
        n->raft->io->time(n->raft->io) - progress->snapshot_last_send <
            n->raft->install_snapshot_timeout) {
        j->last_progress_ms = now;
        return;
    }
    if (now - j->last_progress_ms > MEMBERSHIP_STALL_MS) {
        snprintf(j->msg, sizeof j->msg,
                 "%s at %s did not catch up (no progress for %d s; its log "
                 "is at %llu of %llu): is it running and reachable?",
                 j->name, j->raft_addr, MEMBERSHIP_STALL_MS / 1000,
                 (unsigned long long)match, (unsigned long long)j->target);
        fail_and_remove(j, NODE_ETIMEOUT);
    }
}

static void resolved_cb(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res)
{
    struct join_req *j = req->data;
    struct node *n = j->node;
    char ip[INET_ADDRSTRLEN] = "";

    j->resolving = false;
    if (status == 0 && res != NULL)
        uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    uv_freeaddrinfo(res);
    if (n->phase == NODE_STOPPING || status == UV_ECANCELED) {
        j->cb(j, NODE_ESHUTDOWN, node_strerror(NODE_ESHUTDOWN));
        return;
    }
    if (ip[0] == '\0') {
        snprintf(j->msg, sizeof j->msg,
                 "cannot resolve %s to an IPv4 address: %s", j->host,
                 status ? uv_strerror(status) : "no address");
        j->cb(j, NODE_EUNREACHABLE, j->msg);
        return;
    }
    snprintf(j->raft_addr, sizeof j->raft_addr, "%s:%d", ip, j->port);
    j->step = JOIN_QUEUED;
    queue_push(&n->joins, &j->link);
    start_next(n);
}

int membership_join(struct node *n, struct join_req *j, const char *name,
                    const char *raft_hostport, const char *http_addr,
                    join_cb cb, void *data)
{
    struct addrinfo hints;
    char port[8];
    int rv;

    memset(j, 0, sizeof *j);
    j->node = n;
    j->cb = cb;
    j->data = data;
    snprintf(j->name, sizeof j->name, "%s", name);
    snprintf(j->http_addr, sizeof j->http_addr, "%s",
             http_addr ? http_addr : "");
    j->id = node_name_id(name);
    if (config_split_hostport(raft_hostport, j->host, sizeof j->host,
                              &j->port) != 0)
        return NODE_EUNREACHABLE;
    if (n->phase == NODE_STOPPING)
        return NODE_ESHUTDOWN;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET; /* libraft's transport speaks IPv4 only */
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", j->port);
    j->resolve.data = j;
    j->step = JOIN_RESOLVING;
    j->resolving = true;
    rv = uv_getaddrinfo(n->loop, &j->resolve, resolved_cb, j->host, port,
                        &hints);
    if (rv != 0) {
        j->resolving = false;
        return NODE_EUNREACHABLE;
    }
    return 0;
}

void membership_stop(struct node *n)
{
    while (!queue_empty(&n->joins)) {
        struct queue *q = n->joins.next;
        struct join_req *j = queue_data(q, struct join_req, link);
        queue_remove(q);
        j->cb(j, NODE_ESHUTDOWN, node_strerror(NODE_ESHUTDOWN));
    }
    /* The active join ends through its Raft callback (libraft fails pending
     * changes on close), or here if it is only waiting on our tick. */
    if (n->join_active != NULL && (n->join_active->step == JOIN_CATCHUP ||
                                   n->join_active->step == JOIN_UNDO)) {
        struct join_req *j = n->join_active;
        n->join_active = NULL;
        j->cb(j, NODE_ESHUTDOWN, node_strerror(NODE_ESHUTDOWN));
    }
}

/* --- removal and transfer ---------------------------------------------- */

static const struct raft_server *config_find(struct node *n, raft_id id)
{
    const struct raft_configuration *c = &n->raft->configuration;
    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == id)
            return &c->servers[i];
    return NULL;
}

static unsigned voter_count(struct node *n)
{
    const struct raft_configuration *c = &n->raft->configuration;
    unsigned v = 0;
    for (unsigned i = 0; i < c->n; i++)
        v += c->servers[i].role == RAFT_VOTER;
    return v;
}

static void change_finish(struct member_change *c, int status)
{
    c->node->change_active = false;
    if (status != 0 && c->msg[0] == '\0')
        snprintf(c->msg, sizeof c->msg, "%s", node_strerror(status));
    c->cb(c, status, c->msg); /* may free c */
}

static void unrecorded_cb(struct node_apply_req *req, int status,
                          const struct fsm_result *result)
{
    struct member_change *c = req->data;
    (void)result;
    if (status != 0)
        log_warn("member %s removed, but its record stays: %s", c->name,
                 node_strerror(status));
    log_info("member %s removed", c->name);
    change_finish(c, 0); /* the removal itself is committed */
}

static void removed_member_cb(struct raft_change *change, int status)
{
    struct member_change *c = change->data;
    struct command cmd = {.type = CMD_MEMBER_DEL, .id = c->id};
    int rv;

    if (status == RAFT_LEADERSHIPLOST) {
        /* The entry may already be on the next leader, which then
         * commits it. */
        snprintf(c->msg, sizeof c->msg,
                 "leadership moved before removing %s was committed; the "
                 "new leader may still complete it (see GET "
                 "/v1/cluster/members)",
                 c->name);
        change_finish(c, change_status(status));
        return;
    }
    if (status != 0) {
        snprintf(c->msg, sizeof c->msg, "removing %s failed: %s", c->name,
                 raft_strerror(status));
        change_finish(c, change_status(status));
        return;
    }
    rv = node_apply(c->node, &c->apply, &cmd, 1, unrecorded_cb, c);
    if (rv != 0) {
        log_warn("member %s removed, but its record stays: %s", c->name,
                 node_strerror(rv));
        change_finish(c, 0);
    }
}

static int change_begin(struct node *n, struct member_change *c,
                        const char *name, member_change_cb cb, void *data)
{
    memset(c, 0, sizeof *c);
    c->node = n;
    c->cb = cb;
    c->data = data;
    if (name != NULL)
        snprintf(c->name, sizeof c->name, "%s", name);
    if (!node_is_leader(n))
        return NODE_ENOTLEADER;
    if (n->change_active || n->join_active != NULL)
        return NODE_EBUSY;
    return 0;
}

int membership_remove(struct node *n, struct member_change *c,
                      const char *name, member_change_cb cb, void *data)
{
    const struct raft_server *s;
    int rv = change_begin(n, c, name, cb, data);

    if (rv != 0)
        return rv;
    c->id = node_name_id(name);
    s = config_find(n, c->id);
    if (s == NULL)
        return NODE_ENOTFOUND;
    if (c->id == n->id)
        return 1;
    if (s->role == RAFT_VOTER && voter_count(n) <= 1)
        return NODE_ECONFLICT;
    c->change.data = c;
    rv = raft_remove(n->raft, &c->change, c->id, removed_member_cb);
    if (rv != 0) {
        snprintf(c->msg, sizeof c->msg, "cannot remove %s: %s", name,
                 raft_strerror(rv));
        return change_status(rv) == 0 ? NODE_EIO : change_status(rv);
    }
    n->change_active = true;
    log_info("removing member %s", name);
    return 0;
}

static void transferred_cb(struct raft_transfer *t)
{
    struct member_change *c = t->data;
    struct node *n = c->node;
    raft_id leader = 0;
    const char *addr = NULL;

    raft_leader(n->raft, &leader, &addr);
    bool moved = leader != 0 && leader != n->id &&
                 (c->id == 0 || leader == c->id);
    if (!moved) {
        snprintf(c->msg, sizeof c->msg,
                 "leadership did not move%s%s within the election timeout",
                 c->name[0] ? " to " : "", c->name);
        change_finish(c, NODE_ETIMEOUT);
        return;
    }
    c->id = leader;
    change_finish(c, 0);
}

int membership_transfer(struct node *n, struct member_change *c,
                        const char *name, member_change_cb cb, void *data)
{
    const struct raft_server *s;
    int rv = change_begin(n, c, name, cb, data);

    if (rv != 0)
        return rv;
    if (name != NULL && name[0] != '\0') {
        c->id = node_name_id(name);
        s = config_find(n, c->id);
        if (s == NULL)
            return NODE_ENOTFOUND;
        if (c->id == n->id)
            return 1;
        if (s->role != RAFT_VOTER) {
            snprintf(c->msg, sizeof c->msg, "%s is not a voter", name);
            return NODE_ECONFLICT;
        }
    } else if (voter_count(n) < 2) {
        snprintf(c->msg, sizeof c->msg, "there is no other voter");
        return NODE_ECONFLICT;
    }
    c->transfer.data = c;
    rv = raft_transfer(n->raft, &c->transfer, c->id, transferred_cb);
    if (rv != 0) {
        snprintf(c->msg, sizeof c->msg, "cannot transfer leadership: %s",
                 raft_strerror(rv));
        return rv == RAFT_NOTFOUND || rv == RAFT_BADID ? NODE_ECONFLICT
                                                       : NODE_EBUSY;
    }
    n->change_active = true;
    log_info("transferring leadership to %s", c->name[0] ? c->name : "any voter");
    return 0;
}
