/* api.h - the HTTP handlers: the reference endpoints (/set, /get, /join)
 * and the node's own (/v1/status, /health).
 *
 * Handlers validate everything before anything reaches the Raft log, and a
 * write is answered only once its entry is committed and applied. */
#ifndef RAFTKV_API_H
#define RAFTKV_API_H

#include "config.h"
#include "http.h"
#include "node.h"

struct api
{
    struct node *node;
    const struct config *cfg;
};

void api_init(struct api *a, struct node *node, const struct config *cfg);

/* The http_request_cb for http_start; @data is the struct api. */
void api_handle(struct http_req *req, void *data);

#endif
