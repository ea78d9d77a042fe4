/* api_cluster.c - cluster operations and observability: members, leader
 * transfer, /v1/status, /health, /ready, /metrics.  Changes run on the
 * leader (relayed there from any node); views answer from the local node. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "log.h"
#include "text.h"

#ifndef RAFTKV_VERSION
#define RAFTKV_VERSION "0.0.0"
#endif

#define MEMBERS_PREFIX "/v1/cluster/members/"
#define MAX_MEMBERS 64

/* --- members -------------------------------------------------------------- */

static json_t *members_json(struct api *a, raft_id *leader_id)
{
    struct node_member ms[MAX_MEMBERS], leader;
    unsigned n = node_members(a->node, ms, MAX_MEMBERS);
    json_t *list = json_array();

    *leader_id = node_leader(a->node, &leader) == 0 ? leader.id : 0;
    for (unsigned i = 0; i < n && i < MAX_MEMBERS; i++) {
        json_t *m = api_member_json(&ms[i]);
        json_object_set_new(m, "role", json_string(api_role_name(ms[i].role)));
        json_object_set_new(m, "leader", json_boolean(ms[i].id == *leader_id));
        json_array_append_new(list, m);
    }
    return list;
}

static json_t *leader_name_json(struct api *a)
{
    struct node_member leader;
    if (node_leader(a->node, &leader) != 0)
        return json_null();
    return json_string(leader.name[0] ? leader.name : "");
}

/* GET  /v1/cluster/members  -> 200 {"leader": ID|null, "members": [...]}
 * POST /v1/cluster/members  {"id", "raft_addr", "http_addr"} -> adds it */
void api_cluster_members(struct api *a, struct http_req *req)
{
    const char *body;
    size_t blen;
    json_error_t jerr;
    json_t *doc;
    raft_id leader;

    if (!http_method_is(req, "POST")) {
        json_t *list = members_json(a, &leader);
        api_reply_json(req, 200,
                       json_pack("{s:o, s:o}", "leader", leader_name_json(a),
                                 "members", list));
        return;
    }
    body = http_body(req, &blen);
    doc = json_loadb(body ? body : "", blen, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        http_reply_error(req, 400, "invalid JSON: %s", jerr.text);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(doc, k, v)
    {
        if (strcmp(k, "id") != 0 && strcmp(k, "raft_addr") != 0 &&
            strcmp(k, "http_addr") != 0) {
            http_reply_error(req, 400, "unknown field \"%s\": use id, "
                                       "raft_addr, http_addr", k);
            json_decref(doc); /* after the reply: k points into it */
            return;
        }
    }
    json_t *id = json_object_get(doc, "id");
    json_t *raft = json_object_get(doc, "raft_addr");
    json_t *http = json_object_get(doc, "http_addr");
    if (!json_is_object(doc) || !json_is_string(id) || !json_is_string(raft) ||
        (http != NULL && !json_is_string(http))) {
        json_decref(doc);
        http_reply_error(req, 400, "body must be {\"id\": NAME, \"raft_addr\": "
                                   "\"HOST:PORT\", \"http_addr\": "
                                   "\"HOST:PORT\"}");
        return;
    }
    api_add_member(a, req, json_string_value(id), json_string_value(raft),
                   http ? json_string_value(http) : NULL);
    json_decref(doc);
}

/* Decode the member name from the path.  Returns 0, or -1 after 400. */
static int path_member(struct http_req *req, char *name, size_t cap)
{
    size_t plen, n = strlen(MEMBERS_PREFIX);
    const char *path = http_path(req, &plen);
    char buf[256];
    long len;

    if (plen - n >= sizeof buf ||
        (len = http_url_decode(path + n, plen - n, buf, false)) < 0 ||
        (size_t)len >= cap || !config_name_valid(buf)) {
        http_reply_error(req, 400, "a member id is 1-64 characters of A-Z a-z "
                                   "0-9 . _ -");
        return -1;
    }
    memcpy(name, buf, (size_t)len + 1);
    return 0;
}

static void removed_cb(struct member_change *c, int status, const char *msg)
{
    struct http_req *req = api_op_result(c->data, status, msg);
    if (req != NULL)
        api_reply_json(req, 200, json_pack("{s:s}", "removed", c->name));
}

static void remove_member(struct api_op *op);

/* Leadership moved away from this node: the new leader removes it. */
static void handed_over_cb(struct member_change *c, int status,
                           const char *msg)
{
    struct api_op *op = c->data;
    struct api *a = op->api;
    struct http_req *req = api_op_result(op, status, msg);
    struct node_member leader;

    if (req == NULL)
        return;
    /* One deliberate extra hop, even for a request relayed to us: the new
     * leader removes this node. */
    if (node_leader(a->node, &leader) != 0 || leader.http_addr[0] == '\0') {
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "leadership moved but the new leader is not "
                                   "known yet; retry");
        return;
    }
    forward_request(a, req, leader.http_addr);
}

static void remove_member(struct api_op *op)
{
    struct api *a = op->api;
    char name[CONFIG_NAME_MAX + 1];
    int rv;

    path_member(op->req, name, sizeof name);
    op->pending = true;
    rv = membership_remove(a->node, &op->u.change, name, removed_cb, op);
    if (rv == 1) {
        /* Removing the leader itself: hand leadership over first, so that
         * the cluster never waits for a leader that is leaving. */
        rv = membership_transfer(a->node, &op->u.change, NULL, handed_over_cb,
                                 op);
    }
    if (rv != 0) {
        struct http_req *req = api_op_settle(op);
        if (req != NULL)
            api_reply_node_error(a, req, rv, op->u.change.msg);
    }
}

/* GET    /v1/cluster/members/{id}  -> 200 {"id", "raft_addr", ...}
 * DELETE /v1/cluster/members/{id}  -> 200 {"removed": ID} */
void api_cluster_member(struct api *a, struct http_req *req)
{
    char name[CONFIG_NAME_MAX + 1];
    struct node_member m;
    struct api_op *op;

    if (path_member(req, name, sizeof name) != 0)
        return;
    if (node_member(a->node, node_name_id(name), &m) != 0) {
        http_reply_error(req, 404, "%s is not a member", name);
        return;
    }
    if (!http_method_is(req, "DELETE")) {
        json_t *doc = api_member_json(&m);
        json_object_set_new(doc, "role", json_string(api_role_name(m.role)));
        api_reply_json(req, 200, doc);
        return;
    }
    if (!node_is_leader(a->node)) {
        api_to_leader(a, req);
        return;
    }
    op = api_op_new(a, req);
    if (op != NULL)
        remove_member(op);
}

/* --- leader ----------------------------------------------------------------- */

static void transferred_cb(struct member_change *c, int status,
                           const char *msg)
{
    struct api_op *op = c->data;
    struct api *a = op->api;
    struct http_req *req = api_op_result(op, status, msg);

    if (req != NULL)
        api_reply_json(req, 200,
                       json_pack("{s:o}", "leader", leader_name_json(a)));
}

/* GET  /v1/cluster/leader              -> 200 {"leader": ID|null}
 * POST /v1/cluster/leader {"id": NAME}  -> 200 {"leader": NAME} once moved
 *      ({} or no id: any up-to-date voter) */
void api_cluster_leader(struct api *a, struct http_req *req)
{
    const char *body;
    size_t blen;
    json_error_t jerr;
    json_t *doc = NULL, *id = NULL;
    struct api_op *op;
    int rv;

    if (!http_method_is(req, "POST")) {
        api_reply_json(req, 200, json_pack("{s:o}", "leader",
                                           leader_name_json(a)));
        return;
    }
    body = http_body(req, &blen);
    if (blen > 0) {
        doc = json_loadb(body, blen, JSON_REJECT_DUPLICATES, &jerr);
        if (doc == NULL || !json_is_object(doc)) {
            json_decref(doc);
            http_reply_error(req, 400, "body must be {\"id\": NAME} or {}");
            return;
        }
        const char *k;
        json_t *v;
        json_object_foreach(doc, k, v)
        {
            if (strcmp(k, "id") != 0) {
                http_reply_error(req, 400, "unknown field \"%s\"", k);
                json_decref(doc); /* after the reply: k points into it */
                return;
            }
        }
        id = json_object_get(doc, "id");
        if (id != NULL && (!json_is_string(id) ||
                           !config_name_valid(json_string_value(id)))) {
            json_decref(doc);
            http_reply_error(req, 400, "id must be a member name");
            return;
        }
    }
    if (id != NULL &&
        node_member(a->node, node_name_id(json_string_value(id)), NULL) != 0) {
        http_reply_error(req, 404, "%s is not a member",
                         json_string_value(id));
        json_decref(doc);
        return;
    }
    if (!node_is_leader(a->node)) {
        json_decref(doc);
        api_to_leader(a, req);
        return;
    }
    op = api_op_new(a, req);
    if (op == NULL) {
        json_decref(doc);
        return;
    }
    op->doc = doc;
    op->pending = true;
    rv = membership_transfer(a->node, &op->u.change,
                             id ? json_string_value(id) : NULL,
                             transferred_cb, op);
    if (rv == 1) { /* already the leader */
        op->pending = false;
        api_reply_json(req, 200, json_pack("{s:o}", "leader",
                                           leader_name_json(a)));
        return;
    }
    if (rv != 0) {
        op->pending = false;
        api_reply_node_error(a, req, rv, op->u.change.msg);
    }
}

/* --- observability ---------------------------------------------------------- */

/* GET /v1/status   -> 200 {"id", "role", "term", "leader", ...} */
void api_status(struct api *a, struct http_req *req)
{
    struct node *n = a->node;
    struct node_member leader;
    struct store_stat st;
    char cluster[17] = "";
    raft_id leader_id;
    json_t *members = members_json(a, &leader_id);
    char raft_id_text[TEXT_U64_SIZE];

    text_u64(n->id, raft_id_text); /* a string: JSON numbers lose u64 bits */
    if (n->fsm.cluster_id != 0)
        snprintf(cluster, sizeof cluster, "%016llx",
                 (unsigned long long)n->fsm.cluster_id);
    store_stat(n->store, &st);
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:o, s:s, s:I, s:I, s:I, s:s, s:I, s:s, s:I, s:I}",
        "id", n->cfg->node_id, "raft_addr", n->raft_addr, "http_addr",
        n->http_addr, "role", node_role(n), "term",
        (json_int_t)n->raft->current_term, "leader",
        node_leader(n, &leader) == 0 ? api_member_json(&leader) : json_null(),
        "commit_index", (json_int_t)n->raft->commit_index, "applied_index",
        (json_int_t)node_applied_index(n), "last_log_index",
        (json_int_t)(n->raft_open ? raft_last_index(n->raft) : 0),
        "snapshot_index", (json_int_t)n->raft->log.snapshot.last_index,
        "snapshots_taken", (json_int_t)n->fsm.snapshots_taken,
        "snapshots_restored", (json_int_t)n->fsm.snapshots_restored,
        "elections_seen", (json_int_t)n->elections_seen, "members", members,
        "cluster_id", cluster, "keys", (json_int_t)st.keys, "db_bytes",
        (json_int_t)st.file_bytes, "uptime_ms",
        (json_int_t)(uv_now(n->loop) - n->started_ms), "version",
        RAFTKV_VERSION, "election_timeout_ms",
        (json_int_t)(n->raft_open ? n->raft->election_timeout : 0),
        "raft_id", raft_id_text, "heap_trims", (json_int_t)n->heap_trims,
        "log_stall_transfers", (json_int_t)n->logwatch.transfers);
    api_reply_json(req, 200, doc);
}

/* A u64 query parameter in decimal (@base 10) or hex (@base 16, as
 * /v1/status shows a cluster id); false when absent or malformed. */
static bool query_u64(struct http_req *req, const char *name, int base,
                      uint64_t *out)
{
    const char *digits = base == 16 ? "0123456789abcdefABCDEF" : "0123456789";
    char *v, *end;
    size_t len;

    if (http_query_param(req, name, &v, &len) != 0 || len == 0 ||
        len > (base == 16 ? 16u : 20u) || strspn(v, digits) != len)
        return false;
    errno = 0;
    *out = strtoull(v, &end, base);
    return errno == 0 && *end == '\0';
}

/* GET /v1/internal/confirm?cluster=C&term=T&leader=L&voter=V
 *   -> 200 {"term": T} when this node is voter V (a raft id, in decimal) of
 *      cluster C (hex, as /v1/status shows it) and follows leader L in
 *      term T;
 *   -> 409 {"error": "...", "term": CURRENT} when it is not or does not.
 * The question a leader asks every voter before it answers linearizable
 * reads (confirm.h).  Answered at once, from memory, changing nothing. */
void api_internal_confirm(struct api *a, struct http_req *req)
{
    struct node *n = a->node;
    uint64_t cluster, term, leader, voter, current;
    char body[64], digits[TEXT_U64_SIZE];
    const char *why = "not a follower of that leader in that term";
    size_t len;

    if (!query_u64(req, "cluster", 16, &cluster) ||
        !query_u64(req, "term", 10, &term) ||
        !query_u64(req, "leader", 10, &leader) ||
        !query_u64(req, "voter", 10, &voter)) {
        http_reply_error(req, 400, "cluster (hex), term, leader and voter "
                                   "(decimal) are required");
        return;
    }
    current = n->raft_open ? n->raft->current_term : 0;
    if (voter != n->id)
        why = "not that voter";
    else if (cluster == 0 || cluster != n->fsm.cluster_id)
        why = "not in that cluster";
    else if (node_follows(n, term, leader)) {
        len = text_u64(current, digits);
        memcpy(body, "{\"term\":", 8);
        memcpy(body + 8, digits, len);
        body[8 + len] = '}';
        http_reply_json(req, 200, body, 9 + len);
        return;
    }
    api_reply_json(req, 409, json_pack("{s:s, s:I}", "error", why, "term",
                                       (json_int_t)current));
}

static void readindex_given(struct node_read *r, int status)
{
    struct api_op *op = r->data;
    struct api *a = op->api;
    struct http_req *req = api_op_result(op, status, NULL);
    char body[32], digits[TEXT_U64_SIZE];
    size_t len;

    if (req == NULL)
        return;
    metrics_count(a->metrics, METRICS_READ_INDEXES_GIVEN, 1);
    len = text_u64(r->index ? r->index : node_applied_index(a->node), digits);
    memcpy(body, "{\"index\":", 9);
    memcpy(body + 9, digits, len);
    body[9 + len] = '}';
    http_reply_json(req, 200, body, 10 + len);
}

/* GET /v1/internal/readindex?cluster=C
 *   -> 200 {"index": N} once this node, the leader of cluster C (hex, as
 *      /v1/status shows it), has confirmed that it still leads after the
 *      question arrived: every write acknowledged before then is at or
 *      below N.  A follower asks this for its linearizable reads
 *      (followread.h), then serves them once its store has applied N;
 *   -> 409 when this node is not in cluster C; 503 when it cannot confirm
 *      (not the leader, leadership lost); a question that is not marked as
 *      relayed is relayed to the leader like a read.
 * It changes nothing. */
void api_internal_readindex(struct api *a, struct http_req *req)
{
    struct node *n = a->node;
    struct api_op *op;
    uint64_t cluster;
    int rv;

    if (!query_u64(req, "cluster", 16, &cluster)) {
        http_reply_error(req, 400, "cluster (hex, as /v1/status shows it) "
                                   "is required");
        return;
    }
    if (cluster == 0 || cluster != n->fsm.cluster_id) {
        http_reply_error(req, 409, "not in that cluster");
        return;
    }
    op = api_op_new(a, req);
    if (op == NULL)
        return;
    op->pending = true;
    rv = readindex_read(&n->reads, &op->u.read, readindex_given, op);
    if (rv != 0) {
        op->pending = false;
        api_reply_node_error(a, req, rv, NULL);
    }
}

/* GET /health   -> 200 {"status": "ok"} while the process serves. */
void api_health(struct api *a, struct http_req *req)
{
    (void)a;
    http_reply_json(req, 200, "{\"status\":\"ok\"}", 15);
}

/* GET /ready   -> 200 {"ready": true} when a leader is known and this node
 * has applied everything it knows to be committed; else 503 with why. */
void api_ready(struct api *a, struct http_req *req)
{
    struct node *n = a->node;
    struct node_member leader;
    const char *reason = NULL;

    if (api_pristine(a))
        reason = "not a member of a cluster yet";
    else if (!n->raft_open || n->phase == NODE_STOPPING)
        reason = "stopping";
    else if (node_leader(n, &leader) != 0)
        reason = "no leader is known";
    else if (node_applied_index(n) < n->raft->commit_index)
        reason = "still applying committed entries";
    if (reason != NULL) {
        http_add_header(req, "Retry-After", "1");
        api_reply_json(req, 503, json_pack("{s:b, s:s}", "ready", 0,
                                           "reason", reason));
        return;
    }
    api_reply_json(req, 200,
                   json_pack("{s:b, s:s, s:I}", "ready", 1, "leader",
                             leader.name, "applied_index",
                             (json_int_t)node_applied_index(n)));
}

/* Counters kept elsewhere (node, fsm, read barriers) catch up in the
 * metrics at scrape time. */
static void sync_counter(struct api *a, enum metrics_counter c, uint64_t now)
{
    uint64_t seen = metrics_get(a->metrics, c);
    if (now > seen)
        metrics_count(a->metrics, c, now - seen);
}

/* GET /metrics   -> Prometheus text format 0.0.4 */
void api_metrics(struct api *a, struct http_req *req)
{
    struct node *n = a->node;
    struct metrics_gauges g = {0};
    struct store_stat st;
    struct node_member ms[MAX_MEMBERS];
    unsigned count = node_members(n, ms, MAX_MEMBERS);
    char *text;
    size_t len;

    sync_counter(a, METRICS_ELECTIONS, n->elections_seen);
    sync_counter(a, METRICS_SNAPSHOTS_TAKEN, n->fsm.snapshots_taken);
    sync_counter(a, METRICS_SNAPSHOTS_RESTORED, n->fsm.snapshots_restored);
    sync_counter(a, METRICS_BARRIERS, n->reads.entries);
    sync_counter(a, METRICS_READ_ROUNDS, n->reads.rounds_started);
    sync_counter(a, METRICS_READ_ROUNDS_FAILED, n->reads.rounds_failed);
    sync_counter(a, METRICS_READ_QUESTIONS, n->reads.confirm.requests);
    sync_counter(a, METRICS_ENTRIES_PROPOSED, n->propose.entries);
    sync_counter(a, METRICS_COMMANDS_PROPOSED, n->propose.commands);
    sync_counter(a, METRICS_ENTRIES_HELD, n->propose.held);
    sync_counter(a, METRICS_HOLDS_EXPIRED, n->propose.holds_expired);
    sync_counter(a, METRICS_HEAP_TRIMS, n->heap_trims);
    sync_counter(a, METRICS_LOG_STALL_TRANSFERS, n->logwatch.transfers);
    sync_counter(a, METRICS_FOLLOWER_READ_ASKS, n->fread.asked);
    store_stat(n->store, &st);
    g.term = n->raft->current_term;
    g.commit_index = n->raft->commit_index;
    g.applied_index = node_applied_index(n);
    g.last_log_index = n->raft_open ? raft_last_index(n->raft) : 0;
    g.snapshot_index = n->raft->log.snapshot.last_index;
    g.is_leader = node_is_leader(n);
    g.members = count;
    for (unsigned i = 0; i < count && i < MAX_MEMBERS; i++)
        g.voters += ms[i].role == RAFT_VOTER;
    g.keys = st.keys;
    g.db_bytes = st.file_bytes;
    g.uptime_seconds = (double)(uv_now(n->loop) - n->started_ms) / 1000.0;
    if (metrics_render(a->metrics, &g, &text, &len) != 0) {
        http_reply_error(req, 503, "out of memory");
        return;
    }
    http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text,
               len);
    free(text);
}
