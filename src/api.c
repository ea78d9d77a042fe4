/* api.c - routing and the glue every handler shares: replies, ops that wait
 * on Raft, and running a request where it must run (leader, barrier).  See
 * api.h. */
#include "api_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "text.h"

int api_init(struct api *a, struct node *node, const struct config *cfg)
{
    a->node = node;
    a->cfg = cfg;
    a->metrics = metrics_new();
    return a->metrics == NULL ? -1 : 0;
}

void api_close(struct api *a)
{
    metrics_free(a->metrics);
    a->metrics = NULL;
}

/* --- replies ---------------------------------------------------------------- */

void api_reply_json(struct http_req *req, int status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) {
        http_reply_error(req, 500, "out of memory");
        return;
    }
    http_reply_json(req, status, text, strlen(text));
    free(text);
}

json_t *api_member_json(const struct node_member *m)
{
    return json_pack("{s:s, s:s, s:s}", "id", m->name, "raft_addr",
                     m->raft_addr, "http_addr", m->http_addr);
}

const char *api_role_name(int role)
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

void api_reply_node_error(struct api *a, struct http_req *req, int code,
                          const char *msg)
{
    int status;

    if (code == NODE_ENOTLEADER) {
        api_to_leader(a, req);
        return;
    }
    if (msg == NULL || *msg == '\0')
        msg = node_strerror(code);
    switch (code) {
    case NODE_ENOLEADER:
    case NODE_ELEADERSHIPLOST:
    case NODE_ESHUTDOWN:
    case NODE_ENOTMEMBER:
    case NODE_ENOMEM:
    case NODE_EBUSY:
        http_add_header(req, "Retry-After", "1");
        status = 503;
        break;
    case NODE_ECONFLICT:
    case NODE_EOTHERCLUSTER:
        status = 409;
        break;
    case NODE_ENOTFOUND:
        status = 404;
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

int api_check_key(struct api *a, struct http_req *req, const void *key,
                  size_t len)
{
    if (len == 0 || len > a->cfg->max_key_size) {
        http_reply_error(req, 400, "key must be 1 to %zu bytes, got %zu",
                         a->cfg->max_key_size, len);
        return -1;
    }
    if (memchr(key, '\0', len) != NULL || !text_utf8_valid(key, len)) {
        http_reply_error(req, 400, "key must be UTF-8 text without NUL");
        return -1;
    }
    return 0;
}

/* --- ops -------------------------------------------------------------------- */

static void op_free(struct api_op *op)
{
    json_decref(op->doc);
    free(op->mem);
    free(op);
}

static void op_released(void *arg)
{
    struct api_op *op = arg;
    op->req = NULL;
    if (!op->pending)
        op_free(op);
}

struct api_op *api_op_new(struct api *a, struct http_req *req)
{
    struct api_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "out of memory");
        return NULL;
    }
    op->api = a;
    op->req = req;
    http_req_on_release(req, op_released, op);
    return op;
}

struct http_req *api_op_settle(struct api_op *op)
{
    struct http_req *req = op->req;
    op->pending = false;
    if (req == NULL)
        op_free(op);
    return req;
}

struct http_req *api_op_result(struct api_op *op, int status,
                               const char *msg)
{
    struct api *a = op->api;
    struct http_req *req = api_op_settle(op);

    if (req == NULL || status == 0)
        return req;
    api_reply_node_error(a, req, status, msg);
    return NULL;
}

void api_op_to_leader(struct api_op *op)
{
    struct api *a = op->api;
    struct http_req *req = api_op_settle(op);
    if (req != NULL)
        api_to_leader(a, req);
}

/* --- writes ------------------------------------------------------------------ */

static void submit_applied(struct node_apply_req *apply, int status,
                           const struct fsm_result *res)
{
    struct api_op *op = apply->data;
    struct http_req *req;

    metrics_count(op->api->metrics,
                  status == 0 ? METRICS_WRITES_COMMITTED
                              : METRICS_WRITES_FAILED,
                  1);
    if ((req = api_op_result(op, status, NULL)) != NULL)
        op->applied(op, req, res);
}

static void submit_propose(struct api_op *op)
{
    struct api *a = op->api;
    int rv;

    if (!node_is_leader(a->node)) {
        api_op_to_leader(op);
        return;
    }
    op->pending = true;
    rv = node_apply(a->node, &op->u.apply, op->cmds, op->n_cmds,
                    submit_applied, op);
    if (rv != 0) {
        struct http_req *req = api_op_settle(op);
        if (req != NULL)
            api_reply_node_error(a, req, rv, NULL);
    }
}

static void submit_cluster_ready(struct node_wait *w, int status)
{
    struct api_op *op = w->data;
    if (status != 0 || op->req == NULL) {
        struct http_req *req = api_op_settle(op);
        if (req != NULL)
            api_reply_node_error(op->api, req, status, NULL);
        return;
    }
    op->pending = false;
    submit_propose(op);
}

bool api_pristine(struct api *a)
{
    return a->node->phase == NODE_PRISTINE ||
           a->node->phase == NODE_BOOTSTRAPPING;
}

bool api_refuse_relayed_bootstrap(struct api *a, struct http_req *req)
{
    size_t len;

    if (!api_pristine(a) ||
        http_header(req, API_FORWARDED_HEADER, &len) == NULL)
        return false;
    http_add_header(req, "Retry-After", "1");
    http_reply_error(req, 503,
                     "this node is not in a cluster (was its data directory "
                     "emptied?) and does not start one for a relayed request; "
                     "retry once a leader is elected");
    return true;
}

void api_submit(struct api_op *op)
{
    struct api *a = op->api;
    int rv;

    if (api_refuse_relayed_bootstrap(a, op->req))
        return;
    if (api_pristine(a)) {
        op->pending = true;
        rv = node_ensure_cluster(a->node, &op->u.wait, submit_cluster_ready,
                                 op);
        if (rv == 1)
            return;
        op->pending = false;
        if (rv != 0) {
            api_reply_node_error(a, op->req, rv, NULL);
            return;
        }
    }
    submit_propose(op);
}

/* --- the leader ------------------------------------------------------------- */

void api_to_leader(struct api *a, struct http_req *req)
{
    struct node_member leader;
    char *value;
    size_t len;

    if (http_header(req, API_FORWARDED_HEADER, &len) != NULL) {
        /* Relayed to us by a node that took us for the leader: no second
         * hop, which could loop while leadership moves. */
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503,
                         "this node is no longer the leader; retry");
        return;
    }
    if (node_leader(a->node, &leader) != 0 || leader.id == a->node->id ||
        leader.http_addr[0] == '\0') {
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503,
                         api_pristine(a)
                             ? "this node is not a member of a cluster yet"
                             : "no leader is known right now; retry");
        return;
    }
    if (http_query_param(req, "redirect", &value, &len) == 0) {
        size_t plen, qlen;
        const char *path = http_path(req, &plen);
        const char *query = http_query(req, &qlen);
        char *location = malloc(plen + qlen + NODE_ADDR_MAX + 16);
        if (location == NULL) {
            http_reply_error(req, 503, "out of memory");
            return;
        }
        sprintf(location, "http://%s%.*s%s%.*s", leader.http_addr, (int)plen,
                path, qlen ? "?" : "", (int)qlen, query ? query : "");
        http_add_header(req, "Location", location);
        free(location);
        api_reply_json(req, 307,
                       json_pack("{s:s, s:o}", "error",
                                 "not the leader: redirected to the leader",
                                 "leader", api_member_json(&leader)));
        return;
    }
    forward_request(a, req, leader.http_addr);
}

/* --- reads ---------------------------------------------------------------- */

int api_consistency(struct http_req *req, bool def_linearizable,
                    bool *linearizable)
{
    char *value;
    size_t len;
    int rv = http_query_param(req, "consistency", &value, &len);

    *linearizable = def_linearizable;
    if (rv == -ENOENT)
        return 0;
    if (rv == 0 && strcmp(value, "linearizable") == 0) {
        *linearizable = true;
        return 0;
    }
    if (rv == 0 && strcmp(value, "stale") == 0) {
        *linearizable = false;
        return 0;
    }
    http_reply_error(req, 400,
                     "consistency must be \"linearizable\" or \"stale\"");
    return -1;
}

void api_read_headers(struct api *a, struct http_req *req, bool linearizable)
{
    char index[TEXT_U64_SIZE];
    text_u64(node_applied_index(a->node), index);
    http_add_header(req, "X-Raftkv-Consistency",
                    linearizable ? "linearizable" : "stale");
    http_add_header(req, "X-Raftkv-Index", index);
}

static void read_ready(struct node_read *r, int status)
{
    struct api_op *op = r->data;
    struct api *a = op->api;
    api_serve_fn serve = op->serve;
    struct http_req *req;

    /* A follower that has since been elected gets its read index from
     * itself: relaying would find that the leader is this node (503). */
    if (status == NODE_ENOTLEADER && !op->leader_read && op->req != NULL &&
        node_is_leader(a->node)) {
        op->leader_read = true;
        status = readindex_read(&a->node->reads, &op->u.read, read_ready, op);
        if (status == 0)
            return;
    }
    if (status == NODE_ENOTLEADER && !op->leader_read && op->req != NULL)
        metrics_count(a->metrics, METRICS_FOLLOWER_READ_RELAYS, 1);
    req = api_op_result(op, status, NULL);

    if (req == NULL)
        return;
    metrics_count(a->metrics, METRICS_LINEARIZABLE_READS, 1);
    serve(a, req);
}

void api_read(struct api *a, struct http_req *req, bool linearizable,
              api_serve_fn serve)
{
    struct api_op *op;
    char *value;
    size_t len;
    int rv;

    if (!linearizable) {
        metrics_count(a->metrics, METRICS_STALE_READS, 1);
        serve(a, req);
        return;
    }
    /* A follower serves it itself unless told not to, or asked for a 307
     * to the leader (?redirect), or the request was relayed to it by a node
     * that took it for the leader. */
    if (!node_is_leader(a->node) &&
        (a->cfg->follower_reads_relay ||
         http_header(req, API_FORWARDED_HEADER, &len) != NULL ||
         http_query_param(req, "redirect", &value, &len) == 0)) {
        api_to_leader(a, req);
        return;
    }
    op = api_op_new(a, req);
    if (op == NULL)
        return;
    op->serve = serve;
    op->pending = true;
    op->leader_read = node_is_leader(a->node);
    if (op->leader_read)
        rv = readindex_read(&a->node->reads, &op->u.read, read_ready, op);
    else /* NODE_ENOTLEADER, now or later, relays it (api_op_result) */
        rv = followread_read(&a->node->fread, &op->u.read, read_ready, op);
    if (rv != 0) {
        op->pending = false;
        api_reply_node_error(a, req, rv, NULL);
    }
}

/* --- routing ------------------------------------------------------------------ */

struct route
{
    const char *path;
    bool prefix; /* path is a prefix: "/v1/kv/" matches "/v1/kv/KEY" */
    const char *methods[5];
    const char *allow;
    enum metrics_route tag;
    void (*handle)(struct api *a, struct http_req *req);
};

static const struct route routes[] = {
    {"/set", false, {"POST"}, "POST", METRICS_ROUTE_SET, api_ref_set},
    {"/get", false, {"GET", "HEAD"}, "GET, HEAD", METRICS_ROUTE_GET,
     api_ref_get},
    {"/delete", false, {"DELETE", "POST", "GET"}, "DELETE, POST, GET",
     METRICS_ROUTE_DELETE, api_ref_delete},
    {"/join", false, {"GET", "POST"}, "GET, POST", METRICS_ROUTE_JOIN,
     api_ref_join},
    {"/v1/kv", false, {"GET", "HEAD"}, "GET, HEAD", METRICS_ROUTE_KV_LIST,
     api_kv_list},
    {"/v1/kv/", true, {"GET", "HEAD", "PUT", "DELETE"},
     "GET, HEAD, PUT, DELETE", METRICS_ROUTE_KV, api_kv_item},
    {"/v1/txn", false, {"POST"}, "POST", METRICS_ROUTE_TXN, api_kv_txn},
    {"/v1/cluster/members", false, {"GET", "HEAD", "POST"}, "GET, HEAD, POST",
     METRICS_ROUTE_MEMBERS, api_cluster_members},
    {"/v1/cluster/members/", true, {"GET", "HEAD", "DELETE"},
     "GET, HEAD, DELETE", METRICS_ROUTE_MEMBERS, api_cluster_member},
    {"/v1/cluster/leader", false, {"GET", "HEAD", "POST"}, "GET, HEAD, POST",
     METRICS_ROUTE_LEADER, api_cluster_leader},
    {"/v1/status", false, {"GET", "HEAD"}, "GET, HEAD", METRICS_ROUTE_STATUS,
     api_status},
    {"/v1/internal/confirm", false, {"GET"}, "GET", METRICS_ROUTE_CONFIRM,
     api_internal_confirm},
    {"/v1/internal/readindex", false, {"GET"}, "GET", METRICS_ROUTE_READINDEX,
     api_internal_readindex},
    {"/health", false, {"GET", "HEAD"}, "GET, HEAD", METRICS_ROUTE_HEALTH,
     api_health},
    {"/ready", false, {"GET", "HEAD"}, "GET, HEAD", METRICS_ROUTE_HEALTH,
     api_ready},
    {"/metrics", false, {"GET", "HEAD"}, "GET, HEAD", METRICS_ROUTE_METRICS,
     api_metrics},
};

static bool route_matches(const struct route *r, const char *path,
                          size_t len)
{
    size_t n = strlen(r->path);
    if (r->prefix)
        return len >= n && memcmp(path, r->path, n) == 0;
    return len == n && memcmp(path, r->path, n) == 0;
}

void api_handle(struct http_req *req, void *data)
{
    struct api *a = data;
    size_t path_len, method_len;
    const char *path = http_path(req, &path_len);
    const char *method = http_method(req, &method_len);

    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *r = &routes[i];
        if (!route_matches(r, path, path_len))
            continue;
        http_req_set_tag(req, r->tag);
        for (unsigned m = 0; r->methods[m] != NULL; m++) {
            if (http_method_is(req, r->methods[m])) {
                r->handle(a, req);
                return;
            }
        }
        http_add_header(req, "Allow", r->allow);
        http_reply_error(req, 405, "method %.*s is not allowed on %s; use %s",
                         (int)(method_len > 16 ? 16 : method_len), method,
                         r->path, r->allow);
        return;
    }
    http_req_set_tag(req, METRICS_ROUTE_OTHER);
    http_reply_error(req, 404, "no such endpoint: %.*s",
                     (int)(path_len > 200 ? 200 : path_len), path);
}

void api_observe(struct http_req *req, int status, uint64_t elapsed_ns,
                 int tag, void *data)
{
    struct api *a = data;
    size_t mlen, plen;
    const char *method = http_method(req, &mlen);

    if (tag < 0 || tag >= METRICS_ROUTE_COUNT)
        tag = METRICS_ROUTE_OTHER;
    metrics_http(a->metrics, (enum metrics_route)tag, method, mlen, status,
                 (double)elapsed_ns / 1e9);
    if (log_get_level() <= LOG_DEBUG) {
        const char *path = http_path(req, &plen);
        log_debug("%.*s %.*s %d %.3f ms", (int)(mlen > 16 ? 16 : mlen),
                  method, (int)(plen > 200 ? 200 : plen), path, status,
                  (double)elapsed_ns / 1e6);
    }
}
