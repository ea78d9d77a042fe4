/* node.c - Raft lifecycle of one node: start, lazy bootstrap, writes, the
 * periodic tick (joining, announcing our addresses), and stop.  See node.h.
 */
#include "node.h"

#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "membership.h"

#define NODE_TICK_MS 100
#define NODE_JOIN_RETRY_MS 1000
#define NODE_JOIN_TIMEOUT_MS 60000
#define NODE_STORE_MAP_SIZE ((size_t)1 << 30)
/* libraft 0.15 keeps every entry since the last snapshot, plus the trailing
 * ones, in memory, and its threshold counts entries, not bytes: 8192 entries
 * of 16 KiB transactions held 119 MiB after loading 1M keys.  These bound the
 * log in memory (and on disk) by bytes as well.  16 MiB, not more, because
 * the heap is not trimmed while writes go on (node_trim_when_quiet): with
 * 24 MiB a leader held 56-57 MiB of RssAnon right after loading 1M keys,
 * with 16 MiB 46-48 MiB (the bench's limit is 64). */
#define NODE_LOG_BYTES ((uint64_t)16 << 20)
#define NODE_TRAILING_BYTES ((uint64_t)8 << 20)
/* Ticks without an applied entry before the heap is trimmed: 1 s. */
#define NODE_TRIM_QUIET_TICKS 10

raft_id node_name_id(const char *name)
{
    raft_id id = raft_digest(name, 0);
    return id == 0 ? 1 : id;
}

/* Every node applies the same entries, so with equal thresholds all of them
 * snapshot at the same index, and the leader's commits wait while both
 * followers are busy with theirs (measured with full copies of the store:
 * ~1 s at 1M keys; a marker still syncs the store and drops old segments).
 * Each node adds up to 7/16 of the threshold, derived from its id, to
 * spread them out. */
static uint64_t node_stagger(const struct node *n, uint64_t v)
{
    return v + v * ((n->id >> 17) % 8) / 16;
}

const char *node_strerror(int code)
{
    switch (code) {
    case 0:
        return "ok";
    case NODE_ENOTLEADER:
        return "not the leader";
    case NODE_ENOLEADER:
        return "no leader is known right now";
    case NODE_ELEADERSHIPLOST:
        return "leadership lost before the entry was committed; it may or "
               "may not be applied";
    case NODE_ESHUTDOWN:
        return "the node is shutting down";
    case NODE_ENOTMEMBER:
        return "this node is not a member of a cluster yet";
    case NODE_ECONFLICT:
        return "conflicts with the current membership";
    case NODE_EOTHERCLUSTER:
        return "the server belongs to another cluster";
    case NODE_ETIMEOUT:
        return "timed out";
    case NODE_EUNREACHABLE:
        return "address cannot be used";
    case NODE_ENOMEM:
        return "out of memory";
    case NODE_EIO:
        return "storage error";
    case NODE_ENOTFOUND:
        return "no such member";
    case NODE_EBUSY:
        return "another membership change is in progress; retry";
    }
    return "unknown error";
}

/* The transport's cluster check.  A node that is bootstrapping already
 * leads its one-node cluster before the first entry is applied; taking 0
 * ("not in a cluster yet") then would let another cluster's leader in, and
 * two leaders of one term in one libraft instance crash it. */
static uint64_t node_cluster_id(void *arg)
{
    struct node *n = arg;
    return n->fsm.cluster_id != 0 ? n->fsm.cluster_id : n->bootstrap_id;
}

/* The store failed under the state machine: the node can no longer apply
 * what the cluster committed, so it must not serve anything. */
static void node_fatal(void *arg, const char *what)
{
    (void)arg;
    log_error("FATAL: %s; stopping now so that nothing unpersisted is served "
              "(restart the node once the disk is fixed: it recovers from its "
              "Raft log and the other members)",
              what);
    _exit(1);
}

static bool raft_is_pristine(struct raft *r)
{
    return r->current_term == 0 && raft_last_index(r) == 0 &&
           r->configuration.n == 0 && r->log.snapshot.last_index == 0;
}

static int mkdir_p(const char *path)
{
    char buf[CONFIG_PATH_MAX + 16];
    size_t len = strlen(path);

    if (len >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -errno;
        buf[i] = saved;
    }
    return 0;
}

/* The election timeout until this node first sees a leader.  After a
 * restart of the whole cluster nobody leads, and the first election would
 * wait out the full timeout (1-2 s by default: randomized between one and
 * two timeouts).  A node that restarts into a working cluster hears its
 * leader within a heartbeat, and an early pre-vote against a cluster that
 * has a leader is refused, so a short first timeout costs nothing there.
 * node_tick sets the configured timeout once a leader is known. */
static unsigned node_first_election_ms(const struct config *cfg)
{
    unsigned ms = cfg->election_timeout_ms / 4;
    if (ms < 3 * cfg->heartbeat_timeout_ms)
        ms = 3 * cfg->heartbeat_timeout_ms;
    return ms < cfg->election_timeout_ms ? ms : cfg->election_timeout_ms;
}

/* Bring up a new libraft instance: transport, uv I/O, raft. */
static int raft_open(struct node *n, bool bootstrap)
{
    const struct config *cfg = n->cfg;
    struct raft_instance *ri = calloc(1, sizeof *ri);
    int rv;

    if (ri == NULL) {
        log_error("out of memory");
        return -1;
    }
    ri->next = n->instances;
    n->instances = ri;
    n->ri = ri;
    n->raft = &ri->raft;
    rv = transport_init(&ri->transport, n->loop, node_cluster_id, n);
    if (rv != 0) {
        log_error("raft transport: %s", raft_strerror(rv));
        return -1;
    }
    rv = raft_uv_init(&ri->io, n->loop, n->raft_dir, &ri->transport.iface);
    if (rv != 0) {
        log_error("raft storage in %s: %s", n->raft_dir, ri->io.errmsg);
        return -1;
    }
    ri->io_ready = true;
    /* A corrupt segment must stop the node, not be renamed away silently. */
    raft_uv_set_auto_recovery(&ri->io, false);
    /* libraft preallocates three segments.  32 MiB ones (the default until
     * aiodestroy.c) only hid the loop stall of closing a segment by closing
     * them less often; without the stall, 8 MiB ones measured the same
     * (3 nodes, 64 conns of 100-byte writes, 8 s: p99 4.5-5.2 ms with either;
     * 16 conns of 1 MiB values: 53-58 vs 60-61 writes/s) and a fresh node
     * preallocates 24 MiB instead of 96. */
    raft_uv_set_segment_size(&ri->io, cfg->segment_size);
    /* libraft retries a lost outgoing connection after 1 s by default, and a
     * restarted follower hears nothing from the leader until then: /ready
     * came after 0.21 s or after 1.08 s, depending on where that timer
     * stood.  Retrying every heartbeat costs one refused connect per
     * heartbeat while a peer is down. */
    raft_uv_set_connect_retry_delay(&ri->io, cfg->heartbeat_timeout_ms);
    ioguard_install(&ri->guard, &ri->io, node_fatal, n);
    snapsend_install(&ri->snapsend, &ri->io, &n->fsm, n->loop);
    rv = raft_init(n->raft, &ri->io, &n->raft_fsm, n->id, n->raft_addr);
    if (rv != 0) {
        log_error("raft init: %s", raft_errmsg(n->raft));
        return -1;
    }
    ri->raft_ready = true;
    n->raft->data = n;
    n->fsm.raft = n->raft;
    n->raft_open = true;
    raft_set_election_timeout(n->raft, node_first_election_ms(cfg));
    n->election_timeout_set = false;
    raft_set_heartbeat_timeout(n->raft, cfg->heartbeat_timeout_ms);
    n->snap_threshold = (unsigned)node_stagger(n, cfg->snapshot_threshold);
    n->snap_trailing = cfg->snapshot_trailing;
    raft_set_snapshot_threshold(n->raft, n->snap_threshold);
    raft_set_snapshot_trailing(n->raft, n->snap_trailing);
    /* A node coming back from a partition with a higher term would depose a
     * working leader; pre-vote makes it ask first. */
    raft_set_pre_vote(n->raft, true);

    if (bootstrap) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        rv = raft_configuration_add(&conf, n->id, n->raft_addr, RAFT_VOTER);
        if (rv == 0)
            rv = raft_bootstrap(n->raft, &conf);
        raft_configuration_close(&conf);
        if (rv != 0) {
            log_error("raft bootstrap: %s (%s)", raft_strerror(rv),
                      raft_errmsg(n->raft));
            return -1;
        }
    }
    rv = raft_start(n->raft);
    if (rv != 0) {
        log_error("raft start: %s (%s)", raft_strerror(rv),
                  raft_errmsg(n->raft));
        return -1;
    }
    return 0;
}

/* raft_close's callback ran for the current instance.  Returns false when
 * it already had (libraft 0.15 may call it twice): ignore that one. */
static bool raft_closed(struct node *n, struct raft *r)
{
    struct raft_instance *ri = (struct raft_instance *)r; /* raft is first */
    if (ri->closed)
        return false;
    ri->closed = true;
    if (n->ri == ri)
        n->raft_open = false;
    return true;
}

void node_destroy(struct node *n)
{
    while (n->instances != NULL) {
        struct raft_instance *ri = n->instances;
        n->instances = ri->next;
        if (ri->io_ready) {
            ioguard_release(&ri->guard);
            snapsend_release(&ri->snapsend);
            raft_uv_close(&ri->io);
        }
        transport_release(&ri->transport);
        free(ri);
    }
    n->ri = NULL;
    n->raft = NULL;
}

/* --- waiting for a cluster ------------------------------------------------ */

static void wake_waiters(struct node *n, int status)
{
    while (!queue_empty(&n->waiters)) {
        struct queue *q = n->waiters.next;
        struct node_wait *w = queue_data(q, struct node_wait, link);
        queue_remove(q);
        w->cb(w, status);
    }
}

static void init_applied(struct node_apply_req *req, int status,
                         const struct fsm_result *result)
{
    struct node *n = req->data;
    (void)result;
    if (n->phase == NODE_STOPPING)
        return;
    n->phase = NODE_RUNNING;
    if (status != 0)
        log_error("bootstrap: first entry failed: %s", node_strerror(status));
    else
        log_info("bootstrapped cluster %016llx with this node as its only "
                 "member",
                 (unsigned long long)n->fsm.cluster_id);
    wake_waiters(n, status);
}

static struct command self_member_cmd(struct node *n)
{
    struct command c = {.type = CMD_MEMBER_PUT, .id = n->id};
    c.name.base = (const uint8_t *)n->cfg->node_id;
    c.name.len = strlen(n->cfg->node_id);
    c.raft_addr.base = (const uint8_t *)n->raft_addr;
    c.raft_addr.len = strlen(n->raft_addr);
    c.http_addr.base = (const uint8_t *)n->http_addr;
    c.http_addr.len = strlen(n->http_addr);
    return c;
}

static void stop_step(struct node *n);

static void bootstrap_closed(struct raft *r)
{
    struct node *n = r->data;
    struct command cmds[2];
    uint64_t cluster_id = 0;
    int rv;

    if (!raft_closed(n, r))
        return;
    n->bootstrap_closing = false;
    if (n->phase == NODE_STOPPING) {
        /* node_stop arrived while closing: finish the stop instead. */
        wake_waiters(n, NODE_ESHUTDOWN);
        stop_step(n);
        return;
    }
    while (cluster_id == 0)
        if (uv_random(NULL, NULL, &cluster_id, sizeof cluster_id, 0, NULL) !=
            0)
            node_fatal(n, "no randomness for a cluster id");
    n->bootstrap_id = cluster_id; /* before Raft listens again */
    if (raft_open(n, true) != 0)
        node_fatal(n, "cannot restart Raft to bootstrap");

    cmds[0] = (struct command){.type = CMD_INIT, .id = cluster_id};
    cmds[1] = self_member_cmd(n);
    rv = node_apply(n, &n->init, cmds, 2, init_applied, n);
    if (rv != 0) {
        log_error("bootstrap: cannot propose the first entry: %s",
                  node_strerror(rv));
        n->phase = NODE_RUNNING;
        wake_waiters(n, rv);
    }
}

int node_ensure_cluster(struct node *n, struct node_wait *w, node_wait_cb cb,
                        void *data)
{
    switch (n->phase) {
    case NODE_STOPPING:
        return NODE_ESHUTDOWN;
    case NODE_RUNNING:
        return 0;
    case NODE_BOOTSTRAPPING:
        break;
    case NODE_PRISTINE:
        if (!raft_is_pristine(n->raft)) {
            n->phase = NODE_RUNNING; /* a leader has reached us */
            return 0;
        }
        if (n->cfg->join_host[0] != '\0')
            return NODE_ENOTMEMBER;
        log_info("first request that needs a cluster: bootstrapping a "
                 "one-node cluster");
        n->phase = NODE_BOOTSTRAPPING;
        n->bootstrap_closing = true;
        raft_close(n->raft, bootstrap_closed);
        break;
    }
    w->cb = cb;
    w->data = data;
    queue_push(&n->waiters, &w->link);
    return 1;
}

/* --- writes ---------------------------------------------------------------- */

int node_apply(struct node *n, struct node_apply_req *req,
               const struct command *cmds, unsigned n_cmds, node_apply_cb cb,
               void *data)
{
    if (n->phase == NODE_STOPPING || !n->raft_open)
        return NODE_ESHUTDOWN;
    if (raft_state(n->raft) != RAFT_LEADER)
        return NODE_ENOTLEADER;
    memset(req, 0, sizeof *req);
    req->cb = cb;
    req->data = data;
    return propose_add(&n->propose, req, cmds, n_cmds);
}

/* --- membership views ---------------------------------------------------- */

uint64_t node_applied_index(struct node *n)
{
    uint64_t raft = n->raft_open ? raft_last_applied(n->raft) : 0;
    return raft > n->fsm.applied_index ? raft : n->fsm.applied_index;
}

bool node_is_leader(struct node *n)
{
    return n->raft_open && raft_state(n->raft) == RAFT_LEADER;
}

bool node_follows(struct node *n, uint64_t term, raft_id leader)
{
    raft_id id = 0;
    const char *addr = NULL;

    if (!n->raft_open || n->phase == NODE_STOPPING ||
        raft_state(n->raft) != RAFT_FOLLOWER ||
        n->raft->current_term != term)
        return false;
    raft_leader(n->raft, &id, &addr);
    return id != 0 && id == leader;
}

static void copy_field(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* Fill name and http address of @m from the store (left empty if unknown). */
static void member_fill(struct store_txn *t, struct node_member *m)
{
    struct store_member sm;
    m->name[0] = '\0';
    m->http_addr[0] = '\0';
    if (store_member_get(t, m->id, &sm) != 0)
        return;
    copy_field(m->name, sizeof m->name, sm.name, sm.name_len);
    copy_field(m->http_addr, sizeof m->http_addr, sm.http_addr,
               sm.http_addr_len);
}

int node_member(struct node *n, raft_id id, struct node_member *out)
{
    const struct raft_configuration *c = &n->raft->configuration;
    struct store_txn t;

    if (!n->raft_open)
        return -1;
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id != id)
            continue;
        if (out == NULL)
            return 0;
        out->id = id;
        out->role = c->servers[i].role;
        snprintf(out->raft_addr, sizeof out->raft_addr, "%s",
                 c->servers[i].address);
        if (store_txn_begin(n->store, false, &t) == 0) {
            member_fill(&t, out);
            store_txn_abort(&t);
        }
        return 0;
    }
    return -1;
}

int node_leader(struct node *n, struct node_member *out)
{
    raft_id id = 0;
    const char *addr = NULL;

    if (!n->raft_open)
        return NODE_ENOLEADER;
    raft_leader(n->raft, &id, &addr);
    if (id == 0)
        return NODE_ENOLEADER;
    if (node_member(n, id, out) != 0) {
        memset(out, 0, sizeof *out);
        out->id = id;
        out->role = RAFT_VOTER;
        snprintf(out->raft_addr, sizeof out->raft_addr, "%s",
                 addr ? addr : "");
    }
    return 0;
}

unsigned node_members(struct node *n, struct node_member *out, unsigned cap)
{
    const struct raft_configuration *c = &n->raft->configuration;
    struct store_txn t;
    bool have_txn;
    unsigned k = 0;

    if (!n->raft_open)
        return 0;
    have_txn = store_txn_begin(n->store, false, &t) == 0;
    for (unsigned i = 0; i < c->n && k < cap; i++, k++) {
        out[k].id = c->servers[i].id;
        out[k].role = c->servers[i].role;
        snprintf(out[k].raft_addr, sizeof out[k].raft_addr, "%s",
                 c->servers[i].address);
        out[k].name[0] = out[k].http_addr[0] = '\0';
        if (have_txn)
            member_fill(&t, &out[k]);
    }
    if (have_txn)
        store_txn_abort(&t);
    return c->n;
}

const char *node_role(struct node *n)
{
    if (n->phase == NODE_PRISTINE && raft_is_pristine(n->raft))
        return "pristine";
    if (n->phase == NODE_BOOTSTRAPPING)
        return "bootstrapping";
    if (n->phase == NODE_STOPPING || !n->raft_open)
        return "stopping";
    switch (raft_state(n->raft)) {
    case RAFT_LEADER:
        return "leader";
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_CANDIDATE:
        return "candidate";
    }
    return "unavailable";
}

/* --- tick: joining and announcing ------------------------------------------ */

static int self_role(struct node *n)
{
    const struct raft_configuration *c = &n->raft->configuration;
    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == n->id)
            return c->servers[i].role;
    return -1;
}

/* Does the replicated record of this node match its flags? */
static bool self_record_ok(struct node *n)
{
    struct node_member m = {.id = n->id};
    struct store_txn t;
    struct store_member sm;
    bool ok = false;

    if (store_txn_begin(n->store, false, &t) != 0)
        return true; /* cannot tell; do not spam */
    if (store_member_get(&t, n->id, &sm) == 0) {
        copy_field(m.name, sizeof m.name, sm.name, sm.name_len);
        copy_field(m.raft_addr, sizeof m.raft_addr, sm.raft_addr,
                   sm.raft_addr_len);
        copy_field(m.http_addr, sizeof m.http_addr, sm.http_addr,
                   sm.http_addr_len);
        ok = strcmp(m.name, n->cfg->node_id) == 0 &&
             strcmp(m.raft_addr, n->raft_addr) == 0 &&
             strcmp(m.http_addr, n->http_addr) == 0;
    }
    store_txn_abort(&t);
    return ok;
}

static void self_record_applied(struct node_apply_req *req, int status,
                                const struct fsm_result *result)
{
    (void)result;
    if (status == 0)
        log_info("recorded this node's name and addresses");
    free(req);
}

static void join_response(void *arg, const struct client_response *res)
{
    struct node *n = arg;
    uint64_t now = uv_now(n->loop);

    n->join_inflight = false;
    if (n->phase == NODE_STOPPING)
        return;
    n->join_attempts++;
    n->next_announce_ms = now + NODE_JOIN_RETRY_MS;
    if (res->status == 200) {
        log_info("joined: %s accepted this node", n->join_target);
        n->join_attempts = 0;
        return;
    }
    if (res->status == 421 && res->body != NULL) {
        /* Not the leader: it names the leader; ask there next, at once. */
        json_t *doc = json_loadb(res->body, res->body_len, 0, NULL);
        const char *http = json_string_value(
            json_object_get(json_object_get(doc, "leader"), "http_addr"));
        if (http != NULL && *http != '\0') {
            snprintf(n->join_target, sizeof n->join_target, "%s", http);
            n->next_announce_ms = now;
        }
        json_decref(doc);
        return;
    }
    if (n->join_attempts == 1 || n->join_attempts % 10 == 0)
        log_warn("join via %s not accepted yet (attempt %u): %s%.*s",
                 n->join_target, n->join_attempts,
                 res->status ? "" : res->error,
                 res->status ? (int)(res->body_len > 300 ? 300 : res->body_len)
                             : 0,
                 res->body ? res->body : "");
}

/* Ask @target (HOST:PORT of a member) to add this node, or to update its
 * recorded addresses: both are the same idempotent /join. */
static void send_join(struct node *n, const char *target)
{
    char url[1024];
    int rv;

    snprintf(n->join_target, sizeof n->join_target, "%s", target);
    snprintf(url, sizeof url,
             "http://%s/join?followerId=%s&followerAddr=%s&httpAddr=%s",
             target, n->cfg->node_id, n->raft_addr, n->http_addr);
    rv = client_request(n->client, "GET", url, NULL, 0, NULL,
                        NODE_JOIN_TIMEOUT_MS, join_response, n, NULL);
    if (rv != 0) {
        log_warn("join via %s: cannot send: %d", target, rv);
        n->next_announce_ms = uv_now(n->loop) + NODE_JOIN_RETRY_MS;
        return;
    }
    n->join_inflight = true;
}

static void node_keep_membership(struct node *n)
{
    uint64_t now = uv_now(n->loop);
    int role = self_role(n);
    struct node_member leader;
    bool have_leader;
    char target[CONFIG_HOST_MAX + 8] = "";

    if (n->phase != NODE_RUNNING && n->phase != NODE_PRISTINE)
        return;
    if (n->join_inflight || now < n->next_announce_ms)
        return;

    if (node_is_leader(n)) {
        if (!self_record_ok(n)) {
            struct node_apply_req *req = malloc(sizeof *req);
            struct command c = self_member_cmd(n);
            if (req != NULL &&
                node_apply(n, req, &c, 1, self_record_applied, n) != 0)
                free(req);
            n->next_announce_ms = now + NODE_JOIN_RETRY_MS;
        }
        return;
    }

    bool want_join = role != RAFT_VOTER && n->cfg->join_host[0] != '\0';
    bool want_announce = role >= 0 && !self_record_ok(n);
    if (!want_join && !want_announce)
        return;
    have_leader = node_leader(n, &leader) == 0;
    if (have_leader && leader.http_addr[0] != '\0')
        snprintf(target, sizeof target, "%s", leader.http_addr);
    else if (n->join_target[0] != '\0' && n->join_attempts > 0 &&
             n->join_attempts % 5 != 0)
        snprintf(target, sizeof target, "%s", n->join_target);
    else if (n->cfg->join_host[0] != '\0')
        snprintf(target, sizeof target, "%s:%d", n->cfg->join_host,
                 n->cfg->join_port);
    if (target[0] == '\0')
        return;
    send_join(n, target);
}

/* Back to the configured election timeout.  libraft 0.15 draws a
 * follower's randomized timeout only when it becomes a follower (a leader's
 * heartbeats just restart the timer), so the one drawn from the short first
 * timeout would stay until the next term: draw it again here, in the same
 * range libraft uses (one to two timeouts). */
static void node_set_election_timeout(struct node *n)
{
    unsigned t = n->cfg->election_timeout_ms;

    raft_set_election_timeout(n->raft, t);
    if (n->raft->state == RAFT_FOLLOWER)
        n->raft->follower_state.randomized_election_timeout =
            t + (unsigned)((uv_hrtime() / 1000 ^ n->id) % (t + 1));
    n->election_timeout_set = true;
}

/* A snapshot lets libraft free the log before it, which leaves holes in the
 * heap.  While writes go on, the log grows back into them before the next
 * snapshot, so handing them to the system then is churn: every page comes
 * back as a page fault.  Trimmed after each snapshot, a leader under writes
 * at 64 connections took ~2.5k page faults/s, and writes ran ~9% slower
 * (median of 8 alternated pairs on a paravirtualized guest; bench/NOTES.md,
 * "Page faults").  So the holes are given back only
 * once no entry has been applied for NODE_TRIM_QUIET_TICKS; until then the
 * heap stays at its high mark, which NODE_LOG_BYTES bounds. */
static void node_trim_when_quiet(struct node *n)
{
    uint64_t snaps = n->fsm.snapshots_taken + n->fsm.snapshots_restored;
    uint64_t applied = node_applied_index(n);

    if (applied != n->trim_applied) {
        n->trim_applied = applied;
        n->trim_quiet_ticks = 0;
        return;
    }
    if (n->trim_quiet_ticks < NODE_TRIM_QUIET_TICKS) {
        n->trim_quiet_ticks++;
        return;
    }
    if (snaps == n->trimmed_at_snapshot)
        return;
    n->trimmed_at_snapshot = snaps;
    n->heap_trims++;
    malloc_trim(0);
}

static void node_tick(uv_timer_t *timer)
{
    struct node *n = timer->data;
    raft_id id = 0;
    const char *addr = NULL;

    if (n->phase == NODE_STOPPING || !n->raft_open)
        return;
    if (n->phase == NODE_PRISTINE && !raft_is_pristine(n->raft)) {
        n->phase = NODE_RUNNING;
        log_info("contacted by a leader: this node is now part of a cluster");
    }
    raft_leader(n->raft, &id, &addr);
    if (id != 0 && !n->election_timeout_set)
        node_set_election_timeout(n);
    if (id != n->last_leader) {
        struct node_member m;
        if (id != 0) {
            n->elections_seen++;
            if (node_member(n, id, &m) != 0)
                m.name[0] = '\0';
            log_info("leader is now %s (%016llx) at %s%s",
                     m.name[0] ? m.name : "?", (unsigned long long)id,
                     addr ? addr : "?", id == n->id ? ", this node" : "");
        }
        n->last_leader = id;
    }
    membership_tick(n);
    logwatch_tick(n);
    node_keep_membership(n);
    node_trim_when_quiet(n);
}

/* Snapshot when the configured number of entries is reached (libraft's own
 * rule) or when the entries since the last snapshot pass NODE_LOG_BYTES; keep
 * as many trailing entries as fit in NODE_TRAILING_BYTES. */
static void node_snapshot_policy(struct node *n)
{
    struct raft *r = n->raft;
    uint64_t since = r->last_applied > r->log.snapshot.last_index
                         ? r->last_applied - r->log.snapshot.last_index
                         : 0;
    uint64_t threshold = node_stagger(n, n->cfg->snapshot_threshold);
    uint64_t trailing = n->cfg->snapshot_trailing;

    /* libraft reads the trailing count when a snapshot completes, so it
     * comes from a moving average of recent entry sizes, not from the
     * entries since the last snapshot (none, right after one) nor from all
     * entries since start (a bulk load after small writes kept 90 MiB). */
    if (n->fsm.entry_bytes_avg > 0) {
        uint64_t avg = n->fsm.entry_bytes_avg + 1;
        uint64_t fit = NODE_TRAILING_BYTES / avg;
        if (fit < trailing)
            trailing = fit > 16 ? fit : 16;
    }
    if (since > 0 && since < threshold &&
        n->fsm.log_bytes >= node_stagger(n, NODE_LOG_BYTES))
        threshold = since; /* taken after the next apply */
    if (threshold > UINT32_MAX)
        threshold = UINT32_MAX;
    if (threshold != n->snap_threshold) {
        raft_set_snapshot_threshold(r, (unsigned)threshold);
        n->snap_threshold = (unsigned)threshold;
    }
    if (trailing != n->snap_trailing) {
        raft_set_snapshot_trailing(r, (unsigned)trailing);
        n->snap_trailing = (unsigned)trailing;
    }
}

/* End of each loop iteration: the writes that arrived go to Raft as one
 * entry, which the linearizable reads that arrived ride on (or a no-op entry
 * if there was no write).  Applied entries go to LMDB in one commit, made
 * by the store's writer thread, every STORE_FLUSH_MS or when they grow big
 * (and not while the last commit runs); until then the Raft log holds them
 * durably and reads see them in the store's overlay. */
/* The store's writer thread ended a commit (called on that thread). */
static void node_store_notify(void *arg)
{
    struct node *n = arg;
    uv_async_send(&n->committed);
}

static void node_committed(uv_async_t *a)
{
    struct node *n = a->data;
    if (n->store != NULL)
        store_poll(n->store);
}

static void node_flush(uv_check_t *check)
{
    struct node *n = check->data;
    uint64_t now = uv_now(n->loop);

    if (n->raft_open) {
        propose_flush(&n->propose);
        readindex_flush(&n->reads); /* reads no write took along */
        node_snapshot_policy(n);
    }
    followread_flush(&n->fread);
    if (n->store == NULL)
        return;
    store_poll(n->store);
    if (!store_pending(n->store))
        return;
    if ((now - n->last_flush_ms >= STORE_FLUSH_MS ||
         store_pending_bytes(n->store) >= STORE_FLUSH_BYTES) &&
        store_commit_start(n->store)) {
        n->last_flush_ms = now;
        return;
    }
    if (store_pending_bytes(n->store) >= STORE_PENDING_MAX) {
        store_flush(n->store); /* a failure is fatal inside */
        n->last_flush_ms = uv_now(n->loop);
    }
}

/* --- start and stop ------------------------------------------------------ */

int node_start(struct node *n, uv_loop_t *loop, const struct config *cfg,
               const char *raft_addr, const char *http_addr)
{
    int rv;

    memset(n, 0, sizeof *n);
    n->loop = loop;
    n->cfg = cfg;
    n->id = node_name_id(cfg->node_id);
    n->started_ms = uv_now(loop);
    queue_init(&n->waiters);
    queue_init(&n->joins);
    readindex_init(&n->reads, n, loop, cfg->heartbeat_timeout_ms,
                   !cfg->read_confirm_log);
    /* A read index comes from a leader that confirms it still leads, which
     * may take it an entry commit (readindex.h); an election timeout and a
     * second cover that, and a slow store. */
    followread_init(&n->fread, n, loop, cfg->election_timeout_ms + 1000);
    propose_init(&n->propose, n, loop);
    logwatch_init(&n->logwatch);
    snprintf(n->raft_addr, sizeof n->raft_addr, "%s", raft_addr);
    snprintf(n->http_addr, sizeof n->http_addr, "%s", http_addr);
    snprintf(n->raft_dir, sizeof n->raft_dir, "%s/raft", cfg->data_dir);
    snprintf(n->kv_dir, sizeof n->kv_dir, "%s/kv", cfg->data_dir);

    if ((rv = mkdir_p(n->raft_dir)) != 0 || (rv = mkdir_p(n->kv_dir)) != 0) {
        log_error("cannot create the data directory %s: %s", cfg->data_dir,
                  strerror(-rv));
        return -1;
    }
    if (store_open(&n->store, n->kv_dir, NODE_STORE_MAP_SIZE) != 0)
        return -1;
    if ((rv = fsm_init(&n->fsm, n->store)) != 0) {
        log_error("cannot read the store: %s", store_strerror(rv));
        goto err_store;
    }
    n->fsm.fatal = node_fatal;
    n->fsm.fatal_arg = n;
    store_set_fatal(n->store, node_fatal, n);
    fsm_raft_bind(&n->fsm, &n->raft_fsm);
    if (client_init(&n->client, loop) != 0) {
        log_error("cannot create the HTTP client");
        goto err_store;
    }
    if (raft_open(n, false) != 0)
        goto err_client;

    if (raft_is_pristine(n->raft)) {
        if (n->fsm.applied_index > 0) {
            log_error("%s holds data up to index %llu but %s is empty: "
                      "refusing to start with a store Raft does not know",
                      n->kv_dir, (unsigned long long)n->fsm.applied_index,
                      n->raft_dir);
            goto err_client;
        }
        n->phase = NODE_PRISTINE;
        if (cfg->join_host[0] != '\0')
            log_info("new node: asking %s:%d to add it to its cluster",
                     cfg->join_host, cfg->join_port);
        else
            log_info("new node: no cluster yet; the first write or /join "
                     "bootstraps one");
    } else {
        n->phase = NODE_RUNNING;
        log_info("resuming: term %llu, last index %llu, applied in store "
                 "%llu, %u servers in configuration",
                 (unsigned long long)n->raft->current_term,
                 (unsigned long long)raft_last_index(n->raft),
                 (unsigned long long)n->fsm.applied_index,
                 n->raft->configuration.n);
    }

    uv_timer_init(loop, &n->tick);
    n->tick.data = n;
    uv_timer_start(&n->tick, node_tick, NODE_TICK_MS, NODE_TICK_MS);
    uv_check_init(loop, &n->flush);
    n->flush.data = n;
    uv_check_start(&n->flush, node_flush);
    uv_async_init(loop, &n->committed, node_committed);
    n->committed.data = n;
    store_set_notify(n->store, node_store_notify, n);
    return 0;

err_client:
    /* Startup failures exit the process; nothing else runs on this loop. */
    return -1;
err_store:
    store_close(n->store);
    n->store = NULL;
    return -1;
}

/* Pending parts of a stop: client, tick timer, raft. */
static void stop_step(struct node *n)
{
    if (n->client != NULL || n->raft_open || n->tick.data != NULL ||
        n->flush.data != NULL || n->committed.data != NULL)
        return;
    fsm_close(&n->fsm);
    store_close(n->store);
    n->store = NULL;
    if (n->stopped_cb != NULL)
        n->stopped_cb(n);
}

static void stop_client_closed(void *arg)
{
    struct node *n = arg;
    n->client = NULL;
    stop_step(n);
}

static void stop_tick_closed(uv_handle_t *h)
{
    struct node *n = h->data;
    n->tick.data = NULL;
    stop_step(n);
}

static void stop_flush_closed(uv_handle_t *h)
{
    struct node *n = h->data;
    n->flush.data = NULL;
    stop_step(n);
}

static void stop_committed_closed(uv_handle_t *h)
{
    struct node *n = h->data;
    n->committed.data = NULL;
    stop_step(n);
}

static void stop_raft_closed(struct raft *r)
{
    struct node *n = r->data;
    if (!raft_closed(n, r))
        return;
    stop_step(n);
}

void node_stop(struct node *n, void (*cb)(struct node *n))
{
    /* Not the whole of NODE_BOOTSTRAPPING: after bootstrap_closed has
     * reopened Raft (its first entry not yet applied), nothing else would
     * close it, and the stop would never finish. */
    bool closing_raft_already = n->bootstrap_closing;

    n->stopped_cb = cb;
    n->phase = NODE_STOPPING;
    membership_stop(n);
    readindex_fail_all(&n->reads, NODE_ESHUTDOWN);
    readindex_close(&n->reads);
    followread_close(&n->fread, NODE_ESHUTDOWN);
    propose_close(&n->propose, NODE_ESHUTDOWN);
    if (!closing_raft_already)
        wake_waiters(n, NODE_ESHUTDOWN);
    if (n->tick.data != NULL)
        uv_close((uv_handle_t *)&n->tick, stop_tick_closed);
    if (n->flush.data != NULL)
        uv_close((uv_handle_t *)&n->flush, stop_flush_closed);
    if (n->committed.data != NULL) {
        /* After this the writer thread no longer touches the handle. */
        store_set_notify(n->store, NULL, NULL);
        uv_close((uv_handle_t *)&n->committed, stop_committed_closed);
    }
    if (n->client != NULL)
        client_close(n->client, stop_client_closed, n);
    if (closing_raft_already)
        return; /* bootstrap_closed sees NODE_STOPPING and finishes */
    if (n->raft_open)
        raft_close(n->raft, stop_raft_closed);
    else
        stop_step(n);
}
