/* forward.c - relay a request to the leader and its answer back.
 *
 * A follower cannot commit a write or confirm a linearizable read itself, so
 * it sends the request unchanged (method, path, query, body, content type)
 * to the leader's HTTP address, marked with X-Raftkv-Forwarded so that the
 * leader never relays it again, and answers its client with what came back:
 * status, body, content type, Retry-After and the X-Raftkv-* headers.
 *
 * When the leader cannot be reached the client gets 503 with Retry-After.
 * If the connection failed, nothing was sent; if it timed out after the
 * request went out, a write may or may not have been applied, and the error
 * says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "log.h"

#define FORWARD_TIMEOUT_MS 30000
#define FORWARD_JOIN_TIMEOUT_MS 120000

static void relay_headers(struct http_req *req, const char *lines)
{
    char name[128], value[512];

    while (lines != NULL && *lines != '\0') {
        const char *eol = strchr(lines, '\n');
        const char *colon = memchr(lines, ':', eol ? (size_t)(eol - lines)
                                                   : strlen(lines));
        size_t len = eol ? (size_t)(eol - lines) : strlen(lines);
        if (colon != NULL && (size_t)(colon - lines) < sizeof name) {
            const char *v = colon + 1;
            size_t vlen = len - (size_t)(v - lines);
            while (vlen > 0 && *v == ' ')
                v++, vlen--;
            snprintf(name, sizeof name, "%.*s", (int)(colon - lines), lines);
            snprintf(value, sizeof value, "%.*s", (int)vlen, v);
            http_add_header(req, name, value);
        }
        if (eol == NULL)
            break;
        lines = eol + 1;
    }
}

static void forward_done(void *arg, const struct client_response *res)
{
    struct api_op *op = arg;
    struct api *a = op->api;
    struct http_req *req = api_op_settle(op);

    if (res->status == 0)
        metrics_count(a->metrics, METRICS_FORWARD_ERRORS, 1);
    if (req == NULL)
        return;
    if (res->status == 0) {
        bool unsent = res->error != NULL &&
                      (strstr(res->error, "refused") != NULL ||
                       strstr(res->error, "cannot connect") != NULL);
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503,
                         "the leader could not be reached (%s)%s",
                         res->error ? res->error : "no answer",
                         unsent ? "; nothing was applied"
                                : "; a write may or may not have been "
                                  "applied");
        return;
    }
    relay_headers(req, res->raftkv_headers);
    if (res->retry_after != NULL)
        http_add_header(req, "Retry-After", res->retry_after);
    if (res->location != NULL)
        http_add_header(req, "Location", res->location);
    http_reply(req, res->status,
               res->content_type ? res->content_type : "application/json",
               res->body ? res->body : "", res->body_len);
}

void forward_request(struct api *a, struct http_req *req,
                     const char *leader_http)
{
    static const char *const marker[] = {"X-Raftkv-Forwarded: 1", NULL};
    size_t mlen, plen, qlen, blen, tlen;
    const char *method = http_method(req, &mlen);
    const char *path = http_path(req, &plen);
    const char *query = http_query(req, &qlen);
    const char *body = http_body(req, &blen);
    const char *type = http_header(req, "content-type", &tlen);
    char meth[16], *url, *ctype = NULL;
    struct api_op *op;
    long timeout = FORWARD_TIMEOUT_MS;
    int rv;

    if (mlen >= sizeof meth)
        mlen = sizeof meth - 1;
    memcpy(meth, method, mlen);
    meth[mlen] = '\0';
    if (strcmp(meth, "HEAD") == 0)
        strcpy(meth, "GET");
    if (http_path_is(req, "/join") || http_path_is(req, "/v1/cluster/members"))
        timeout = FORWARD_JOIN_TIMEOUT_MS; /* a join waits for catch-up */

    op = api_op_new(a, req);
    if (op == NULL)
        return;
    url = malloc(plen + qlen + strlen(leader_http) + 16);
    if (type != NULL)
        ctype = strndup(type, tlen);
    if (url == NULL || (type != NULL && ctype == NULL)) {
        free(url);
        free(ctype);
        http_reply_error(req, 503, "out of memory");
        return;
    }
    sprintf(url, "http://%s%.*s%s%.*s", leader_http, (int)plen, path,
            qlen ? "?" : "", (int)qlen, query ? query : "");
    op->pending = true;
    rv = client_request_headers(a->node->client, meth, url,
                                blen ? body : NULL, blen, ctype, marker,
                                timeout, forward_done, op, &op->u.forward);
    free(url);
    free(ctype);
    if (rv != 0) {
        op->pending = false;
        log_warn("cannot relay %s to the leader at %s: %d", meth, leader_http,
                 rv);
        http_add_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "cannot relay the request to the leader");
        return;
    }
    metrics_count(a->metrics, METRICS_FORWARDED, 1);
}
