/* api.h - the HTTP API: routing, and the glue every handler shares.
 *
 * Handlers live in api_ref.c (the reference endpoints /set, /get, /delete,
 * /join), api_kv.c (/v1/kv, /v1/txn) and api_cluster.c (/v1/cluster/...,
 * /v1/status, /health, /ready, /metrics).  Every node serves every request:
 * what must run on the leader is forwarded to it (forward.c), or redirected
 * with ?redirect.  Handlers validate everything before anything reaches the
 * Raft log, and a write is answered only once its entry is committed and
 * applied. */
#ifndef RAFTKV_API_H
#define RAFTKV_API_H

#include "client.h"
#include "config.h"
#include "http.h"
#include "metrics.h"
#include "node.h"

struct api
{
    struct node *node;
    const struct config *cfg;
    struct metrics *metrics;
};

/* Returns 0, or -1 when out of memory. */
int api_init(struct api *a, struct node *node, const struct config *cfg);
void api_close(struct api *a);

/* The http_request_cb for http_start; @data is the struct api. */
void api_handle(struct http_req *req, void *data);

/* The http_observer_cb: metrics and the debug request log. */
void api_observe(struct http_req *req, int status, uint64_t elapsed_ns,
                 int tag, void *data);

#endif
