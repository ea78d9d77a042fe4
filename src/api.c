/* api.c - HTTP handlers; see api.h.  Each handler's comment shows its
 * syntax.  Deferred answers go through struct api_op, which outlives either
 * side: the client may leave before Raft answers, and Raft may answer after
 * the client left. */
#include "api.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "membership.h"

#ifndef RAFTKV_VERSION
#define RAFTKV_VERSION "0.0.0"
#endif

/* A request waiting on Raft. */
struct api_op
{
    struct api *api;
    struct http_req *req; /* NULL once the request is released */
    bool pending;         /* a node callback is still due */
    json_t *doc;          /* parsed body, owns key and value */
    const char *key, *value;
    size_t key_len, value_len;
    struct node_wait wait;
    struct node_apply_req apply;
    struct join_req join;
};

void api_init(struct api *a, struct node *node, const struct config *cfg)
{
    a->node = node;
    a->cfg = cfg;
}

/* --- replies ------------------------------------------------------------- */

static void reply_json(struct http_req *req, int status, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text == NULL) {
        http_reply_error(req, 500, "out of memory");
        return;
    }
    http_reply_json(req, status, text, strlen(text));
    free(text);
}

static json_t *member_json(const struct node_member *m)
{
    return json_pack("{s:s, s:s, s:s}", "id", m->name, "raft_addr",
                     m->raft_addr, "http_addr", m->http_addr);
}

/* Map a node error to a status and a JSON error, naming the leader when
 * that is what the client needs to know. */
static void reply_node_error(struct api *a, struct http_req *req, int code,
                             const char *msg)
{
    struct node_member leader;
    json_t *doc;
    int status;

    if (msg == NULL || *msg == '\0')
        msg = node_strerror(code);
    switch (code) {
    case NODE_ENOTLEADER:
        if (node_leader(a->node, &leader) == 0 && leader.id != a->node->id) {
            doc = json_pack("{s:s, s:o}", "error",
                            "not the leader; send writes to the leader",
                            "leader", member_json(&leader));
            reply_json(req, 421, doc);
            return;
        }
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "no leader is known right now; retry");
        return;
    case NODE_ENOLEADER:
    case NODE_ELEADERSHIPLOST:
    case NODE_ESHUTDOWN:
    case NODE_ENOTMEMBER:
    case NODE_ENOMEM:
        http_add_header(req, "Retry-After", "1");
        status = 503;
        break;
    case NODE_ECONFLICT:
    case NODE_EOTHERCLUSTER:
        status = 409;
        break;
    case NODE_ETIMEOUT:
        status = 504;
        break;
    case NODE_EUNREACHABLE:
        status = 400;
        break;
    default:
        status = 500;
        break;
    }
    http_reply_error(req, status, "%s", msg);
}

/* --- the op lifecycle ------------------------------------------------------ */

static void op_free(struct api_op *op)
{
    json_decref(op->doc);
    free(op);
}

static void op_released(void *arg)
{
    struct api_op *op = arg;
    op->req = NULL;
    if (!op->pending)
        op_free(op);
}

static struct api_op *op_new(struct api *a, struct http_req *req)
{
    struct api_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        http_reply_error(req, 503, "out of memory");
        return NULL;
    }
    op->api = a;
    op->req = req;
    http_req_on_release(req, op_released, op);
    return op;
}

/* A node callback arrived: returns the request to answer, or NULL when the
 * client is gone (then the op is freed here).  After answering, the op may be
 * freed by the release callback: do not touch it again. */
static struct http_req *op_settle(struct api_op *op)
{
    struct http_req *req = op->req;
    op->pending = false;
    if (req == NULL)
        op_free(op);
    return req;
}

/* --- /set ------------------------------------------------------------------ */

static void set_applied(struct node_apply_req *apply, int status,
                        const struct fsm_result *result)
{
    struct api_op *op = apply->data;
    struct api *a = op->api;
    struct http_req *req = op_settle(op);

    if (req == NULL)
        return;
    if (status != 0) {
        reply_node_error(a, req, status, NULL);
        return;
    }
    reply_json(req, 200,
               json_pack("{s:I}", "index", (json_int_t)result->index));
}

static void set_propose(struct api_op *op)
{
    struct command c = {.type = CMD_PUT};
    int rv;

    c.key.base = (const uint8_t *)op->key;
    c.key.len = op->key_len;
    c.value.base = (const uint8_t *)op->value;
    c.value.len = op->value_len;
    op->pending = true;
    rv = node_apply(op->api->node, &op->apply, &c, 1, set_applied, op);
    if (rv != 0) {
        struct http_req *req = op_settle(op);
        if (req != NULL)
            reply_node_error(op->api, req, rv, NULL);
    }
}

static void set_cluster_ready(struct node_wait *w, int status)
{
    struct api_op *op = w->data;
    if (status != 0 || op->req == NULL) {
        struct http_req *req = op_settle(op);
        if (req != NULL)
            reply_node_error(op->api, req, status, NULL);
        return;
    }
    set_propose(op);
}

/* Find a member of @obj by name, ignoring case as the reference does.
 * Returns 0 (with *out NULL when absent), or -1 when two spellings of the
 * name are present. */
static int field_ci(json_t *obj, const char *name, json_t **out)
{
    const char *k;
    json_t *v;
    *out = NULL;
    json_object_foreach(obj, k, v)
    {
        if (strcasecmp(k, name) != 0)
            continue;
        if (*out != NULL)
            return -1;
        *out = v;
    }
    return 0;
}

/* POST /set   {"key": "K", "value": "V"}   -> 200 {"index": N}
 * Field names are matched ignoring case; both must be strings; nothing else
 * may be present.  Answered once committed by a majority and applied. */
static void handle_set(struct api *a, struct http_req *req)
{
    const char *body;
    size_t body_len;
    json_error_t jerr;
    json_t *doc, *key, *value;
    const char *k;
    json_t *v;
    struct api_op *op;
    int rv;

    body = http_body(req, &body_len);
    doc = json_loadb(body ? body : "", body_len, JSON_REJECT_DUPLICATES,
                     &jerr);
    if (doc == NULL) {
        http_reply_error(req, 400, "invalid JSON: %s (line %d, column %d)",
                         jerr.text, jerr.line, jerr.column);
        return;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        http_reply_error(req, 400,
                         "body must be a JSON object {\"key\": ..., "
                         "\"value\": ...}");
        return;
    }
    json_object_foreach(doc, k, v)
    {
        if (strcasecmp(k, "key") != 0 && strcasecmp(k, "value") != 0) {
            http_reply_error(req, 400,
                             "unknown field \"%s\": only \"key\" and "
                             "\"value\" are allowed",
                             k);
            json_decref(doc);
            return;
        }
    }
    if (field_ci(doc, "key", &key) != 0 ||
        field_ci(doc, "value", &value) != 0) {
        json_decref(doc);
        http_reply_error(req, 400, "a field is given twice (names ignore "
                                   "case)");
        return;
    }
    if (!json_is_string(key) || !json_is_string(value)) {
        json_decref(doc);
        http_reply_error(req, 400,
                         "fields \"key\" and \"value\" are required and must "
                         "be strings");
        return;
    }
    size_t klen = json_string_length(key), vlen = json_string_length(value);
    if (klen == 0 || klen > a->cfg->max_key_size) {
        json_decref(doc);
        http_reply_error(req, 400, "key must be 1 to %zu bytes, got %zu",
                         a->cfg->max_key_size, klen);
        return;
    }
    if (vlen > a->cfg->max_value_size) {
        json_decref(doc);
        http_reply_error(req, 413, "value is %zu bytes; the limit is %zu",
                         vlen, a->cfg->max_value_size);
        return;
    }

    op = op_new(a, req);
    if (op == NULL) {
        json_decref(doc);
        return;
    }
    op->doc = doc;
    op->key = json_string_value(key);
    op->key_len = klen;
    op->value = json_string_value(value);
    op->value_len = vlen;
    op->pending = true;
    rv = node_ensure_cluster(a->node, &op->wait, set_cluster_ready, op);
    if (rv == 1)
        return; /* bootstrapping; set_cluster_ready continues */
    op->pending = false;
    if (rv != 0) {
        reply_node_error(a, req, rv, NULL);
        return;
    }
    set_propose(op);
}

/* --- /get ------------------------------------------------------------------- */

/* GET /get?key=K   -> 200 {"data": "V"}, or {"data": ""} when K is missing.
 * A local read: on a follower it may lag the leader (stale). */
static void handle_get(struct api *a, struct http_req *req)
{
    struct store_txn t;
    struct store_record rec;
    char *key;
    size_t klen;
    json_t *data;
    int rv;

    rv = http_query_param(req, "key", &key, &klen);
    if (rv == -EINVAL) {
        http_reply_error(req, 400, "query parameter key is not valid "
                                   "percent-encoding");
        return;
    }
    if (rv != 0 || klen == 0) {
        http_reply_error(req, 400, "query parameter key is required: "
                                   "/get?key=NAME");
        return;
    }
    if (klen > a->cfg->max_key_size) {
        http_reply_error(req, 400, "key must be 1 to %zu bytes, got %zu",
                         a->cfg->max_key_size, klen);
        return;
    }
    rv = store_txn_begin(a->node->store, false, &t);
    if (rv != 0) {
        http_reply_error(req, 500, "store: %s", store_strerror(rv));
        return;
    }
    rv = store_kv_get(&t, key, klen, &rec);
    if (rv == STORE_ENOTFOUND) {
        data = json_string("");
    } else if (rv != 0) {
        store_txn_abort(&t);
        http_reply_error(req, 500, "store: %s", store_strerror(rv));
        return;
    } else {
        data = json_stringn(rec.value, rec.value_len);
    }
    store_txn_abort(&t);
    if (data == NULL) {
        http_reply_error(req, 422, "the value is not valid UTF-8 text");
        return;
    }
    reply_json(req, 200, json_pack("{s:o}", "data", data));
}

/* --- /join ------------------------------------------------------------------ */

static void join_done(struct join_req *j, int status, const char *msg)
{
    struct api_op *op = j->data;
    struct api *a = op->api;
    struct http_req *req = op_settle(op);
    struct node_member m;

    if (req == NULL)
        return;
    if (status != 0) {
        reply_node_error(a, req, status, msg);
        return;
    }
    if (node_member(a->node, j->id, &m) != 0) {
        snprintf(m.name, sizeof m.name, "%s", j->name);
        snprintf(m.raft_addr, sizeof m.raft_addr, "%s", j->raft_addr);
        snprintf(m.http_addr, sizeof m.http_addr, "%s", j->http_addr);
    }
    reply_json(req, 200, member_json(&m));
}

static void join_start(struct api_op *op)
{
    struct api *a = op->api;
    char *name, *addr, *http;
    size_t len;
    int rv;

    /* Parameters were validated before; the request is still alive. */
    http_query_param(op->req, "followerId", &name, &len);
    http_query_param(op->req, "followerAddr", &addr, &len);
    if (http_query_param(op->req, "httpAddr", &http, &len) != 0)
        http = NULL;
    if (!node_is_leader(a->node)) {
        struct http_req *req = op_settle(op);
        if (req != NULL)
            reply_node_error(a, req, NODE_ENOTLEADER, NULL);
        return;
    }
    op->pending = true;
    rv = membership_join(a->node, &op->join, name, addr, http, join_done, op);
    if (rv != 0) {
        struct http_req *req = op_settle(op);
        if (req != NULL)
            reply_node_error(a, req, rv,
                             "followerAddr must be HOST:PORT (the follower's "
                             "Raft address)");
    }
}

static void join_cluster_ready(struct node_wait *w, int status)
{
    struct api_op *op = w->data;
    if (status != 0 || op->req == NULL) {
        struct http_req *req = op_settle(op);
        if (req != NULL)
            reply_node_error(op->api, req, status, NULL);
        return;
    }
    op->pending = false;
    join_start(op);
}

/* GET /join?followerId=NAME&followerAddr=HOST:RAFTPORT[&httpAddr=HOST:PORT]
 *   -> 200 {"id", "raft_addr", "http_addr"} once NAME is a voting member.
 * Only the leader adds members: elsewhere 421 names the leader. */
static void handle_join(struct api *a, struct http_req *req)
{
    static const char *const params[] = {"followerId", "followerAddr"};
    char *value, host[CONFIG_HOST_MAX + 1];
    size_t len;
    int port, rv;
    struct api_op *op;

    for (unsigned i = 0; i < 2; i++) {
        rv = http_query_param(req, params[i], &value, &len);
        if (rv != 0 || len == 0) {
            http_reply_error(req, 400,
                             "query parameter %s is required: "
                             "/join?followerId=NAME&followerAddr=HOST:PORT",
                             params[i]);
            return;
        }
    }
    http_query_param(req, "followerId", &value, &len);
    if (!config_name_valid(value)) {
        http_reply_error(req, 400,
                         "followerId must be 1-64 characters of A-Z a-z 0-9 "
                         ". _ -");
        return;
    }
    http_query_param(req, "followerAddr", &value, &len);
    if (config_split_hostport(value, host, sizeof host, &port) != 0) {
        http_reply_error(req, 400,
                         "followerAddr must be HOST:PORT (the follower's "
                         "Raft address)");
        return;
    }
    rv = http_query_param(req, "httpAddr", &value, &len);
    if (rv == -EINVAL ||
        (rv == 0 && (len >= NODE_ADDR_MAX ||
                     config_split_hostport(value, host, sizeof host,
                                           &port) != 0))) {
        http_reply_error(req, 400, "httpAddr must be HOST:PORT");
        return;
    }

    op = op_new(a, req);
    if (op == NULL)
        return;
    op->pending = true;
    rv = node_ensure_cluster(a->node, &op->wait, join_cluster_ready, op);
    if (rv == 1)
        return;
    op->pending = false;
    if (rv != 0) {
        reply_node_error(a, req, rv, NULL);
        return;
    }
    join_start(op);
}

/* --- /v1/status, /health ----------------------------------------------------- */

static const char *role_name(int role)
{
    switch (role) {
    case RAFT_VOTER:
        return "voter";
    case RAFT_STANDBY:
        return "standby";
    case RAFT_SPARE:
        return "spare";
    }
    return "unknown";
}

/* GET /v1/status   -> 200 {"id", "role", "term", "leader", ...} */
static void handle_status(struct api *a, struct http_req *req)
{
    struct node *n = a->node;
    struct node_member members[64], leader;
    unsigned count = node_members(n, members, 64);
    json_t *list = json_array();
    char cluster[17] = "";
    struct store_stat st;

    for (unsigned i = 0; i < count && i < 64; i++) {
        json_t *m = member_json(&members[i]);
        json_object_set_new(m, "role", json_string(role_name(members[i].role)));
        json_array_append_new(list, m);
    }
    if (n->fsm.cluster_id != 0)
        snprintf(cluster, sizeof cluster, "%016llx",
                 (unsigned long long)n->fsm.cluster_id);
    store_stat(n->store, &st);
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, "
        "s:s, s:I, s:I, s:I, s:s}",
        "id", n->cfg->node_id, "raft_addr", n->raft_addr, "role",
        node_role(n), "term", (json_int_t)n->raft.current_term, "leader",
        node_leader(n, &leader) == 0 ? member_json(&leader) : json_null(),
        "commit_index", (json_int_t)n->raft.commit_index, "applied_index",
        (json_int_t)n->fsm.applied_index, "last_log_index",
        (json_int_t)(n->raft_open ? raft_last_index(&n->raft) : 0),
        "snapshot_index", (json_int_t)n->raft.log.snapshot.last_index,
        "snapshots_taken", (json_int_t)n->fsm.snapshots_taken,
        "snapshots_restored", (json_int_t)n->fsm.snapshots_restored,
        "elections_seen", (json_int_t)n->elections_seen, "members", list,
        "cluster_id", cluster, "keys", (json_int_t)st.keys, "db_bytes",
        (json_int_t)st.file_bytes, "uptime_ms",
        (json_int_t)(uv_now(n->loop) - n->started_ms), "version",
        RAFTKV_VERSION);
    json_object_set_new(doc, "http_addr", json_string(n->http_addr));
    reply_json(req, 200, doc);
}

/* GET /health   -> 200 {"status": "ok"} while the process serves. */
static void handle_health(struct api *a, struct http_req *req)
{
    (void)a;
    http_reply_json(req, 200, "{\"status\":\"ok\"}", 15);
}

/* --- routing --------------------------------------------------------------- */

struct route
{
    const char *path;
    const char *methods[3]; /* NULL-terminated */
    const char *allow;
    void (*handle)(struct api *a, struct http_req *req);
};

static const struct route routes[] = {
    {"/set", {"POST", NULL}, "POST", handle_set},
    {"/get", {"GET", "HEAD", NULL}, "GET, HEAD", handle_get},
    {"/join", {"GET", "POST", NULL}, "GET, POST", handle_join},
    {"/v1/status", {"GET", "HEAD", NULL}, "GET, HEAD", handle_status},
    {"/health", {"GET", "HEAD", NULL}, "GET, HEAD", handle_health},
};

void api_handle(struct http_req *req, void *data)
{
    struct api *a = data;
    size_t path_len, method_len;
    const char *path = http_path(req, &path_len);
    const char *method = http_method(req, &method_len);

    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *r = &routes[i];
        if (!http_path_is(req, r->path))
            continue;
        for (unsigned m = 0; r->methods[m] != NULL; m++) {
            if (http_method_is(req, r->methods[m])) {
                r->handle(a, req);
                return;
            }
        }
        http_add_header(req, "Allow", r->allow);
        http_reply_error(req, 405, "method %.*s is not allowed on %s; use %s",
                         (int)method_len, method, r->path, r->allow);
        return;
    }
    http_reply_error(req, 404, "no such endpoint: %.*s",
                     (int)(path_len > 200 ? 200 : path_len), path);
}
