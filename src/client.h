/* client.h - outbound HTTP/1.1 requests from the node, on the node's loop.
 *
 * A node talks HTTP to other nodes: a fresh node asks a member to add it
 * (--join), a follower tells the leader its HTTP address, and later requests
 * are forwarded to the leader.  Everything runs on the libuv loop that runs
 * Raft and the server, so no thread is involved and callbacks run on the loop
 * thread like everything else.  Connections are kept alive and reused per
 * peer; only plain http is spoken.
 */
#ifndef RAFTKV_CLIENT_H
#define RAFTKV_CLIENT_H

#include <stddef.h>
#include <uv.h>

struct client;
struct client_request;

struct client_response
{
    int status;          /* HTTP status, or 0 when no response arrived */
    const char *error;   /* with status 0: why (connection refused, timeout) */
    const char *body;    /* response body, NUL-terminated; NULL if none */
    size_t body_len;
    const char *content_type; /* NULL if none */
    const char *location;     /* Location header or NULL */
    const char *retry_after;  /* Retry-After header or NULL */
    /* Every header whose name starts with "X-Raftkv-", as "Name: value\n"
     * lines ("" when none): what a relay passes on. */
    const char *raftkv_headers;
};

/* Called exactly once per request on the loop thread (also when cancelled
 * or when the client is closed: status 0, error "cancelled").  @res and its
 * strings are valid only during the call. */
typedef void (*client_cb)(void *arg, const struct client_response *res);

/* Create a client on @loop.  Returns 0 or a negative errno-style code. */
int client_init(struct client **out, uv_loop_t *loop);

/* Cancel every pending request (each callback runs with "cancelled"), then
 * release everything once its handles are closed; @done (may be NULL) runs
 * after that. */
void client_close(struct client *c, void (*done)(void *arg), void *arg);

/* Start a request.  @method "GET", "POST", "PUT", "DELETE"; @url absolute
 * ("http://127.0.0.1:8222/join?..."); @body may be NULL; it is copied, as are
 * @content_type and @url.  @timeout_ms bounds the whole exchange.  Redirects
 * are NOT followed.  Returns 0 (and later calls @cb), or a negative code (and
 * never calls @cb).  *@handle (if not NULL) can be passed to client_cancel
 * until @cb has run. */
int client_request(struct client *c, const char *method, const char *url,
                   const void *body, size_t body_len,
                   const char *content_type, long timeout_ms, client_cb cb,
                   void *arg, struct client_request **handle);

/* client_request with extra request headers: @headers is NULL or a
 * NULL-terminated array of "Name: value" lines (copied). */
int client_request_headers(struct client *c, const char *method,
                           const char *url, const void *body, size_t body_len,
                           const char *content_type,
                           const char *const *headers, long timeout_ms,
                           client_cb cb, void *arg,
                           struct client_request **handle);

/* Cancel a pending request: its callback runs at once with "cancelled". */
void client_cancel(struct client_request *r);

#endif
