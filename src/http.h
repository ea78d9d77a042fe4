/* http.h - the HTTP server: h2o 2.2.5 (libuv flavour) on the node's loop.
 *
 * This is the only file that knows h2o.  The API layer sees a request as a
 * method, a raw path, a raw query string, headers and a fully buffered body,
 * and answers with a status and a body.  One callback receives every request;
 * routing (and therefore 404 vs 405) is the API layer's business.
 *
 * A request may be answered later (after a Raft commit): keep the pointer,
 * return from the callback, call http_reply* once.  Because the client may go
 * away first, whoever keeps the pointer must register http_req_on_release():
 * after that callback has run the pointer is dead and must not be used.
 *
 * Everything here runs on the loop thread. */
#ifndef RAFTKV_HTTP_H
#define RAFTKV_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_server;
struct http_req;

typedef void (*http_request_cb)(struct http_req *req, void *data);

struct http_options
{
    const char *host;        /* IPv4 literal to bind, e.g. "127.0.0.1" */
    int port;                /* TCP port; 0 picks a free one (tests) */
    size_t max_body;         /* larger bodies: 413 with a JSON error */
    size_t max_header_bytes; /* sum of header names+values; larger: 431 */
};

/* Bind, listen and start serving on @loop.  Returns 0, or a negative libuv
 * error code (e.g. UV_EADDRINUSE) with nothing left open. */
int http_start(struct http_server **out, uv_loop_t *loop,
               const struct http_options *opts, http_request_cb cb,
               void *data);

/* The port actually bound (useful with port 0). */
int http_port(const struct http_server *s);

/* Stop accepting, close every connection, and free the server.  Requests
 * still pending get their release callback.  @done (may be NULL) runs once
 * all handles are closed; after it the loop holds nothing of the server. */
void http_stop(struct http_server *s, void (*done)(void *arg), void *arg);

/* --- Reading a request (valid until release) ------------------------- */

/* Method and path exactly as sent; path excludes the query string.  Not
 * NUL-terminated: use the lengths. */
const char *http_method(const struct http_req *req, size_t *len);
const char *http_path(const struct http_req *req, size_t *len);
/* Raw query string without the '?', or NULL (and *len = 0) when absent. */
const char *http_query(const struct http_req *req, size_t *len);
const char *http_body(const struct http_req *req, size_t *len);
/* Value of a header (name matched case-insensitively), or NULL. */
const char *http_header(const struct http_req *req, const char *name,
                        size_t *len);
bool http_method_is(const struct http_req *req, const char *method);
bool http_path_is(const struct http_req *req, const char *path);

/* Find query parameter @name (exact, case-sensitive) and percent-decode its
 * value ('+' means space) into memory owned by the request.  Returns 0 and
 * sets *value (NUL-terminated) and *len; -ENOENT when absent (a bare "name"
 * with no '=' is present with an empty value); -EINVAL when the encoding is
 * invalid. */
int http_query_param(struct http_req *req, const char *name, char **value,
                     size_t *len);

/* --- Answering (exactly once per request) ---------------------------- */

/* Add a response header; call before http_reply*. Copies both strings. */
void http_add_header(struct http_req *req, const char *name,
                     const char *value);

/* Send @status with @body (copied) and Content-Type @content_type. */
void http_reply(struct http_req *req, int status, const char *content_type,
                const void *body, size_t len);

/* Send @status with a JSON body (copied), Content-Type application/json. */
void http_reply_json(struct http_req *req, int status, const char *json,
                     size_t len);

/* Send {"error": "<formatted message>"} with @status; the message is JSON
 * escaped. */
void http_reply_error(struct http_req *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Run @cb(@arg) exactly once when @req is freed: after its reply has been
 * handed to the connection, or when the client went away before a reply.
 * Up to HTTP_MAX_RELEASE_WATCHERS per request, run in the order added. */
#define HTTP_MAX_RELEASE_WATCHERS 4
void http_req_on_release(struct http_req *req, void (*cb)(void *arg),
                         void *arg);

/* --- Observing ------------------------------------------------------------ */

/* An integer the application attaches to a request (its route, say), handed
 * back to the observer.  Default 0. */
void http_req_set_tag(struct http_req *req, int tag);

/* Called once for every response this server sends through the handler
 * path (the application's replies and the server's own 413/431/499/503),
 * just before it goes out: @elapsed_ns counts from the request's arrival at
 * the handler.  The request is still readable during the call. */
typedef void (*http_observer_cb)(struct http_req *req, int status,
                                 uint64_t elapsed_ns, int tag, void *arg);
void http_set_observer(struct http_server *s, http_observer_cb cb, void *arg);

/* --- Helpers that need no request ------------------------------------ */

/* Percent-decode @in[0..len) into @out (capacity >= len + 1, NUL-terminated);
 * if @plus_is_space, '+' decodes to ' '.  Returns the decoded length, or -1
 * on a malformed escape (a '%' not followed by two hex digits). */
long http_url_decode(const char *in, size_t len, char *out,
                     bool plus_is_space);

#endif
