/* api_ref.c - the reference example's endpoints, kept byte-compatible:
 * /set, /get and /join, plus /delete in the same style. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_internal.h"
#include "log.h"

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

static void set_applied(struct api_op *op, struct http_req *req,
                        const struct fsm_result *res)
{
    (void)op;
    api_reply_json(req, 200, json_pack("{s:I}", "index", (json_int_t)res->index));
}

/* POST /set   {"key": "K", "value": "V"}   -> 200 {"index": N}
 * Field names are matched ignoring case; both must be strings; nothing else
 * may be present.  Answered once committed by a majority and applied. */
void api_ref_set(struct api *a, struct http_req *req)
{
    const char *body, *k;
    size_t body_len;
    json_error_t jerr;
    json_t *doc, *key, *value, *v;
    struct api_op *op;

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
        http_reply_error(req, 400, "body must be a JSON object {\"key\": ..., "
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
    if (field_ci(doc, "key", &key) != 0 || field_ci(doc, "value", &value) != 0) {
        json_decref(doc);
        http_reply_error(req, 400, "a field is given twice (names ignore "
                                   "case)");
        return;
    }
    if (!json_is_string(key) || !json_is_string(value)) {
        json_decref(doc);
        http_reply_error(req, 400, "fields \"key\" and \"value\" are required "
                                   "and must be strings");
        return;
    }
    size_t klen = json_string_length(key), vlen = json_string_length(value);
    if (api_check_key(a, req, json_string_value(key), klen) != 0) {
        json_decref(doc);
        return;
    }
    if (vlen > a->cfg->max_value_size) {
        json_decref(doc);
        http_reply_error(req, 413, "value is %zu bytes; the limit is %zu",
                         vlen, a->cfg->max_value_size);
        return;
    }
    op = api_op_new(a, req);
    if (op == NULL) {
        json_decref(doc);
        return;
    }
    op->doc = doc;
    op->cmds[0] = (struct command){.type = CMD_PUT};
    op->cmds[0].key.base = (const uint8_t *)json_string_value(key);
    op->cmds[0].key.len = klen;
    op->cmds[0].value.base = (const uint8_t *)json_string_value(value);
    op->cmds[0].value.len = vlen;
    op->n_cmds = 1;
    op->applied = set_applied;
    api_submit(op);
}

/* Read ?key= of a reference endpoint.  Returns 0, or -1 after answering. */
static int ref_key(struct api *a, struct http_req *req, char **key,
                   size_t *klen, const char *usage)
{
    int rv = http_query_param(req, "key", key, klen);
    if (rv == -EINVAL) {
        http_reply_error(req, 400, "query parameter key is not valid "
                                   "percent-encoding");
        return -1;
    }
    if (rv != 0 || *klen == 0) {
        http_reply_error(req, 400, "query parameter key is required: %s",
                         usage);
        return -1;
    }
    return api_check_key(a, req, *key, *klen);
}

static void get_serve(struct api *a, struct http_req *req, bool linearizable)
{
    struct store_txn t;
    struct store_record rec;
    char *key;
    size_t klen;
    json_t *data;
    int rv;

    http_query_param(req, "key", &key, &klen);
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
        http_reply_error(req, 422, "the value is not UTF-8 text; read it with "
                                   "GET /v1/kv/KEY");
        return;
    }
    api_read_headers(a, req, linearizable);
    api_reply_json(req, 200, json_pack("{s:o}", "data", data));
}

static void get_serve_stale(struct api *a, struct http_req *req)
{
    get_serve(a, req, false);
}

static void get_serve_linearizable(struct api *a, struct http_req *req)
{
    get_serve(a, req, true);
}

/* GET /get?key=K[&consistency=linearizable]   -> 200 {"data": "V"}
 * {"data": ""} when K is missing.  By default a local (stale) read, as in
 * the reference; consistency=linearizable confirms with the leader. */
void api_ref_get(struct api *a, struct http_req *req)
{
    char *key;
    size_t klen;
    bool lin;

    if (ref_key(a, req, &key, &klen, "/get?key=NAME") != 0)
        return;
    if (api_consistency(req, false, &lin) != 0)
        return;
    api_read(a, req, lin, lin ? get_serve_linearizable : get_serve_stale);
}

static void delete_applied(struct api_op *op, struct http_req *req,
                           const struct fsm_result *res)
{
    (void)op;
    api_reply_json(req, 200,
                   json_pack("{s:I, s:b}", "index", (json_int_t)res->index,
                             "deleted", res->outcomes[0].status == 0));
}

/* DELETE /delete?key=K   -> 200 {"index": N, "deleted": true|false}
 * (POST and GET work too, for clients that only speak those.) */
void api_ref_delete(struct api *a, struct http_req *req)
{
    char *key;
    size_t klen;
    struct api_op *op;

    if (ref_key(a, req, &key, &klen, "/delete?key=NAME") != 0)
        return;
    op = api_op_new(a, req);
    if (op == NULL)
        return;
    /* The decoded key lives in the request's memory, which outlives the
     * proposal (the op is dropped when the request goes). */
    op->cmds[0] = (struct command){.type = CMD_DELETE};
    op->cmds[0].key.base = (const uint8_t *)key;
    op->cmds[0].key.len = klen;
    op->n_cmds = 1;
    op->applied = delete_applied;
    api_submit(op);
}

/* --- membership --------------------------------------------------------- */

static void join_done(struct join_req *j, int status, const char *msg)
{
    struct api_op *op = j->data;
    struct api *a = op->api;
    struct http_req *req = api_op_result(op, status, msg);
    struct node_member m;

    if (req == NULL)
        return;
    if (node_member(a->node, j->id, &m) != 0) {
        snprintf(m.name, sizeof m.name, "%s", j->name);
        snprintf(m.raft_addr, sizeof m.raft_addr, "%s", j->raft_addr);
        snprintf(m.http_addr, sizeof m.http_addr, "%s", j->http_addr);
        m.role = RAFT_VOTER;
    }
    json_t *doc = api_member_json(&m);
    json_object_set_new(doc, "role", json_string(api_role_name(m.role)));
    api_reply_json(req, 200, doc);
}

/* Parameters live in the request; the op keeps their copies in its join. */
struct add_args
{
    char name[CONFIG_NAME_MAX + 1];
    char raft_addr[CONFIG_HOST_MAX + 8];
    char http_addr[NODE_ADDR_MAX];
};

static void add_start(struct api_op *op)
{
    struct api *a = op->api;
    struct add_args *args = op->mem;
    int rv;

    if (!node_is_leader(a->node)) {
        api_op_to_leader(op);
        return;
    }
    op->pending = true;
    rv = membership_join(a->node, &op->u.join, args->name, args->raft_addr,
                         args->http_addr, join_done, op);
    if (rv != 0) {
        struct http_req *req = api_op_settle(op);
        if (req != NULL)
            api_reply_node_error(a, req, rv,
                                 "the Raft address must be HOST:PORT");
    }
}

static void add_cluster_ready(struct node_wait *w, int status)
{
    struct api_op *op = w->data;
    if (status != 0 || op->req == NULL) {
        struct http_req *req = api_op_settle(op);
        if (req != NULL)
            api_reply_node_error(op->api, req, status, NULL);
        return;
    }
    op->pending = false;
    add_start(op);
}

void api_add_member(struct api *a, struct http_req *req, const char *name,
                    const char *raft_addr, const char *http_addr)
{
    char host[CONFIG_HOST_MAX + 1];
    struct add_args *args;
    struct api_op *op;
    int port, rv;

    if (!config_name_valid(name)) {
        http_reply_error(req, 400, "the member id must be 1-64 characters of "
                                   "A-Z a-z 0-9 . _ -");
        return;
    }
    if (strlen(raft_addr) >= sizeof args->raft_addr ||
        config_split_hostport(raft_addr, host, sizeof host, &port) != 0) {
        http_reply_error(req, 400, "the Raft address must be HOST:PORT, got "
                                   "\"%.100s\"",
                         raft_addr);
        return;
    }
    if (http_addr != NULL &&
        (strlen(http_addr) >= NODE_ADDR_MAX ||
         config_split_hostport(http_addr, host, sizeof host, &port) != 0)) {
        http_reply_error(req, 400, "the HTTP address must be HOST:PORT, got "
                                   "\"%.100s\"",
                         http_addr);
        return;
    }
    op = api_op_new(a, req);
    if (op == NULL)
        return;
    op->mem = args = calloc(1, sizeof *args);
    if (args == NULL) {
        http_reply_error(req, 503, "out of memory");
        return;
    }
    snprintf(args->name, sizeof args->name, "%s", name);
    snprintf(args->raft_addr, sizeof args->raft_addr, "%s", raft_addr);
    snprintf(args->http_addr, sizeof args->http_addr, "%s",
             http_addr ? http_addr : "");
    if (api_refuse_relayed_bootstrap(a, req))
        return;
    if (api_pristine(a)) {
        op->pending = true;
        rv = node_ensure_cluster(a->node, &op->u.wait, add_cluster_ready, op);
        if (rv == 1)
            return;
        op->pending = false;
        if (rv != 0) {
            api_reply_node_error(a, req, rv, NULL);
            return;
        }
    }
    add_start(op);
}

/* GET /join?followerId=NAME&followerAddr=HOST:RAFTPORT[&httpAddr=HOST:PORT]
 *   -> 200 {"id", "raft_addr", "http_addr", "role"} once NAME votes. */
void api_ref_join(struct api *a, struct http_req *req)
{
    static const char *const params[] = {"followerId", "followerAddr"};
    char *value[2], *http;
    size_t len;
    int rv;

    for (unsigned i = 0; i < 2; i++) {
        rv = http_query_param(req, params[i], &value[i], &len);
        if (rv != 0 || len == 0) {
            http_reply_error(req, 400,
                             "query parameter %s is required: "
                             "/join?followerId=NAME&followerAddr=HOST:PORT",
                             params[i]);
            return;
        }
    }
    rv = http_query_param(req, "httpAddr", &http, &len);
    if (rv == -EINVAL) {
        http_reply_error(req, 400, "httpAddr is not valid percent-encoding");
        return;
    }
    api_add_member(a, req, value[0], value[1], rv == 0 ? http : NULL);
}
