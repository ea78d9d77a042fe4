/* http.c - the HTTP server: h2o 2.2.5 (libuv flavour) behind the small API
 * of http.h.
 *
 * Why it is built this way:
 *
 * - h2o is used as a library, not as a server: one globalconf, one hostconf,
 *   one handler on "/" that hands every request to the user callback.  We
 *   bind the listening socket ourselves (plain syscalls) so that a failed
 *   bind leaves nothing on the loop, and we own every connection's uv_tcp_t
 *   so that we learn when h2o closes it (the close callback of
 *   h2o_uv_socket_create) and can shut all of them down in http_stop.
 *   HTTP/2 is switched off: everything below assumes HTTP/1.x, where a
 *   connection carries at most one request at a time.
 *
 * - A request that is not answered inside the callback stays "pending".
 *   While the handler runs, h2o stops reading the socket, so it would only
 *   notice a vanished client when it writes the reply.  We cannot read the
 *   socket for it either: the request's method, path, headers and body point
 *   into h2o's input buffer, which may move when it grows.  So a request
 *   pending for HTTP_WATCH_AFTER_MS watches the fd with a uv_poll_t for
 *   UV_DISCONNECT only (peer sent FIN or RST), which reads nothing.  When it
 *   fires we answer 499 on the dead socket with keep-alive off: that is the
 *   only public way to make h2o tear the connection down, and doing so frees
 *   the request.  Watching every pending request at once cost five syscalls
 *   each (epoll_ctl on a shared fd, FIONBIO), a fifth of the kernel time of
 *   a write or linearizable read that is answered a millisecond later
 *   anyway; a vanished client only matters for requests that wait long.
 *
 * - The request lives in h2o's memory pool.  One still pending when its
 *   callback returns, or with release watchers, also gets a shared
 *   allocation linked to that pool: h2o disposes it exactly when it frees the
 *   request, after the reply was handed to the socket or when the connection
 *   dies, and that runs the release callbacks.  A request answered inside
 *   its callback, most reads, needs neither, and costs no malloc.
 *
 * - Body limits: h2o refuses a body larger than max_request_entity_size with
 *   its own text/plain 413 before reading it (at once for a declared
 *   Content-Length, as soon as a chunked body crosses it).  Rather than
 *   buffer bodies past max_body just to refuse them ourselves, we let h2o
 *   refuse them and rewrite its error into our JSON shape with an output
 *   filter on the hostconf's fallback path.  That path is only used by
 *   errors h2o raises before any handler runs (413, 400 for broken framing,
 *   417), because our "/" path matches every request.  h2o's limit is
 *   max_body + 1 because its chunked check is ">=" and its Content-Length
 *   check is ">": the handler refuses the one remaining size, so both
 *   framings flip to 413 at exactly max_body + 1 bytes.  Only the raw 400
 *   h2o writes for an unparsable request line bypasses filters; it stays
 *   text/plain.
 *
 * - h2o accepts huge header blocks (~400 KB), so max_header_bytes is checked
 *   in the handler (431).  h2o consumes Host, Content-Length,
 *   Transfer-Encoding, Expect and Upgrade while parsing; of these only Host
 *   is visible through http_header() and counted.
 *
 * - Every response carries Content-Length (204 and 304 excepted, where it
 *   is forbidden): without one h2o would chunk a 200 and close the
 *   connection after any other status.
 */
#include "http.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>

#include "log.h"

/* After http_stop has half-closed every connection, a client that does not
 * read its response can keep a write pending forever (h2o 2.2.5 has no write
 * timeout for HTTP/1); past this grace period we shut writing too. */
#define HTTP_STOP_GRACE_MS 1000

#define HTTP_CLIENT_GONE 499

/* A pending request starts watching for its client vanishing after this. */
#define HTTP_WATCH_AFTER_MS 50

struct http_server;

struct http_conn
{
    uv_tcp_t tcp; /* owned by us, driven by h2o; tcp.data is h2o's */
    struct http_server *server;
    struct http_conn *prev, *next;
};

struct http_handler
{
    h2o_handler_t super;
    struct http_server *server;
};

struct http_error_filter
{
    h2o_filter_t super;
    struct http_server *server;
};

struct http_error_ostream
{
    h2o_ostream_t super;
    struct http_server *server;
};

/* Heap-allocated because uv_close is asynchronous and the request (pool
 * memory) may be gone before the close callback runs. */
struct http_watch
{
    uv_poll_t poll;
    struct http_req *req;
};

enum http_req_state
{
    HTTP_REQ_IN_CALLBACK, /* the user callback is running */
    HTTP_REQ_PENDING,     /* callback returned without a reply */
    HTTP_REQ_REPLIED,     /* handed to h2o; waiting to be freed */
};

struct http_req
{
    h2o_req_t *h2o;
    struct http_server *server;
    enum http_req_state state;
    bool server_answered; /* 499 or 503 on the user's behalf */
    struct http_watch *watch;
    struct http_req *prev, *next; /* server->pending, while PENDING */
    /* Release watchers: a request can be handed from one waiting operation
     * to the next (a write that turns into a relay to the leader). */
    struct
    {
        void (*cb)(void *arg);
        void *arg;
    } release[HTTP_MAX_RELEASE_WATCHERS];
    unsigned n_release;
    uint64_t start_ns; /* uv_hrtime when the handler got the request */
    int tag;
};

struct http_server
{
    uv_loop_t *loop;
    http_request_cb cb;
    void *data;
    size_t max_body;
    size_t max_header_bytes;
    int port;

    h2o_globalconf_t config;
    h2o_hostconf_t *hostconf;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;

    uv_tcp_t listener;
    uv_timer_t grace; /* stop escalation; later the first close fence */
    uv_timer_t watch_timer; /* watches requests pending for a while */
    uv_idle_t fence;  /* never started; the second close fence */

    struct http_conn *conns;
    size_t nconns;
    struct http_req *pending;
    http_observer_cb observer;
    void *observer_arg;

    bool listener_open;
    bool stopping;
    bool finishing;
    void (*done)(void *arg);
    void *done_arg;
};

/* --- Small helpers --------------------------------------------------- */

static const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Entity";
    case 425: return "Too Early";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case HTTP_CLIENT_GONE: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 507: return "Insufficient Storage";
    }
    if (status < 300)
        return "OK";
    if (status < 400)
        return "Redirection";
    if (status < 500)
        return "Client Error";
    return "Server Error";
}

static int http_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Length of the well-formed UTF-8 sequence at @p, or 0 (overlong forms,
 * surrogates and code points past U+10FFFF are not well-formed). */
static size_t http_utf8_len(const unsigned char *p, const unsigned char *end)
{
    uint32_t cp, min;
    size_t n;

    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        n = 2, cp = p[0] & 0x1Fu, min = 0x80;
    } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        n = 3, cp = p[0] & 0x0Fu, min = 0x800;
    } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        n = 4, cp = p[0] & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Writes @in as the inside of a JSON string; @out needs 6 * len bytes.
 * Messages may quote client input, so bytes that are not UTF-8 become
 * U+FFFD: the error body must always parse. */
static size_t http_json_escape(char *out, const char *in, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)in, *end = p + len;
    char *o = out;

    while (p < end) {
        unsigned c = *p;
        if (c >= 0x80) {
            size_t n = http_utf8_len(p, end);
            if (n == 0) {
                memcpy(o, "\xEF\xBF\xBD", 3);
                o += 3, p++;
            } else {
                memcpy(o, p, n);
                o += n, p += n;
            }
            continue;
        }
        p++;
        switch (c) {
        case '"': *o++ = '\\', *o++ = '"'; break;
        case '\\': *o++ = '\\', *o++ = '\\'; break;
        case '\b': *o++ = '\\', *o++ = 'b'; break;
        case '\f': *o++ = '\\', *o++ = 'f'; break;
        case '\n': *o++ = '\\', *o++ = 'n'; break;
        case '\r': *o++ = '\\', *o++ = 'r'; break;
        case '\t': *o++ = '\\', *o++ = 't'; break;
        default:
            if (c < 0x20) {
                memcpy(o, "\\u00", 4);
                o[4] = hex[c >> 4], o[5] = hex[c & 15];
                o += 6;
            } else {
                *o++ = (char)c;
            }
        }
    }
    return (size_t)(o - out);
}

/* {"error":"<msg>"} in @pool. */
static h2o_iovec_t http_error_body(h2o_mem_pool_t *pool, const char *msg,
                                   size_t len)
{
    static const char head[] = "{\"error\":\"", tail[] = "\"}";
    char *buf = h2o_mem_alloc_pool(pool, sizeof head + 6 * len + sizeof tail);
    size_t n = sizeof head - 1;

    memcpy(buf, head, n);
    n += http_json_escape(buf + n, msg, len);
    memcpy(buf + n, tail, sizeof tail - 1);
    n += sizeof tail - 1;
    return h2o_iovec_init(buf, n);
}

/* Appends a response header whose strings already live as long as the
 * request.  h2o's own h2o_add_header* would copy the original-case name once
 * more; on a small read that copy was a visible share of the work. */
static void http_push_header(h2o_req_t *req, const h2o_iovec_t *name,
                             const char *orig_name, h2o_iovec_t value)
{
    h2o_header_t *slot;

    h2o_vector_reserve(&req->pool, &req->res.headers, req->res.headers.size + 1);
    slot = req->res.headers.entries + req->res.headers.size++;
    slot->name = (h2o_iovec_t *)name;
    slot->orig_name = orig_name;
    slot->value = value;
}

static void http_set_content_type(h2o_req_t *req, const char *type, size_t len)
{
    ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);

    if (i != -1) {
        req->res.headers.entries[i].value = h2o_iovec_init(type, len);
        return;
    }
    http_push_header(req, &H2O_TOKEN_CONTENT_TYPE->buf, "Content-Type",
                     h2o_iovec_init(type, len));
}

static bool http_is_head(const h2o_req_t *req)
{
    return h2o_memis(req->input.method.base, req->input.method.len,
                     H2O_STRLIT("HEAD"));
}

/* --- Pending requests ------------------------------------------------- */

static void http_pending_link(struct http_req *r)
{
    struct http_server *s = r->server;

    r->prev = NULL;
    r->next = s->pending;
    if (s->pending != NULL)
        s->pending->prev = r;
    s->pending = r;
}

static void http_pending_unlink(struct http_req *r)
{
    if (r->state != HTTP_REQ_PENDING)
        return;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        r->server->pending = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void http_watch_closed(uv_handle_t *h)
{
    free(H2O_STRUCT_FROM_MEMBER(struct http_watch, poll, h));
}

static void http_unwatch(struct http_req *r)
{
    if (r->watch == NULL)
        return;
    /* Closing the poll handle drops the fd from epoll before h2o touches the
     * socket again; uv_tcp re-registers it when h2o next reads or writes. */
    uv_close((uv_handle_t *)&r->watch->poll, http_watch_closed);
    r->watch = NULL;
}

static void http_send(struct http_req *r, int status, const char *type,
                      h2o_iovec_t body);

static void http_on_client_gone(uv_poll_t *poll, int status, int events)
{
    struct http_watch *w = H2O_STRUCT_FROM_MEMBER(struct http_watch, poll, poll);
    struct http_req *r = w->req;

    (void)status, (void)events;
    log_debug("http: client went away before its reply");
    r->server_answered = true;
    r->h2o->http1_is_persistent = 0;
    http_send(r, HTTP_CLIENT_GONE, NULL, h2o_iovec_init("", 0));
}

static void http_watch(struct http_req *r)
{
    h2o_conn_t *conn = r->h2o->conn;
    h2o_socket_t *sock = conn->callbacks->get_socket(conn);
    struct http_watch *w;
    int fd, rc;

    fd = sock != NULL ? h2o_socket_get_fd(sock) : -1;
    if (fd < 0)
        return;
    w = malloc(sizeof *w);
    if (w == NULL)
        return;
    /* Fails with UV_EEXIST if h2o still had the fd registered (it never does
     * while a handler owns the request); we then merely lose early
     * disconnect detection. */
    rc = uv_poll_init(r->server->loop, &w->poll, fd);
    if (rc != 0) {
        log_debug("http: cannot watch pending request: %s", uv_strerror(rc));
        free(w);
        return;
    }
    w->req = r;
    r->watch = w;
    rc = uv_poll_start(&w->poll, UV_DISCONNECT, http_on_client_gone);
    if (rc != 0) {
        log_debug("http: cannot watch pending request: %s", uv_strerror(rc));
        http_unwatch(r);
    }
}

/* Watch the requests that have been pending for HTTP_WATCH_AFTER_MS; come
 * back for the younger ones when they are old enough. */
static void http_on_watch_timer(uv_timer_t *t)
{
    struct http_server *s =
        H2O_STRUCT_FROM_MEMBER(struct http_server, watch_timer, t);
    uint64_t now = uv_hrtime(), after = (uint64_t)HTTP_WATCH_AFTER_MS * 1000000;
    uint64_t next = 0; /* ns until the youngest unwatched one is due */

    for (struct http_req *r = s->pending; r != NULL; r = r->next) {
        uint64_t age = now - r->start_ns;
        if (r->watch != NULL)
            continue;
        if (age >= after)
            http_watch(r); /* a failure is retried on a later pass */
        else if (after - age > next)
            next = after - age;
    }
    if (next > 0 && !s->stopping)
        uv_timer_start(t, http_on_watch_timer, next / 1000000 + 1, 0);
}

/* Runs when h2o frees the request's pool: the request is gone for good. */
static void http_req_dispose(struct http_req *r)
{
    unsigned n = r->n_release;

    http_unwatch(r);
    http_pending_unlink(r);
    r->state = HTTP_REQ_REPLIED;
    r->n_release = 0;
    for (unsigned i = 0; i < n; i++)
        r->release[i].cb(r->release[i].arg);
}

/* --- Answering ---------------------------------------------------------- */

static void http_send(struct http_req *r, int status, const char *type,
                      h2o_iovec_t body)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_req_t *req = r->h2o;

    http_unwatch(r);
    http_pending_unlink(r);
    r->state = HTTP_REQ_REPLIED;

    if (status < 200 || status > 999) {
        log_error("http: invalid status %d, sending 500", status);
        status = 500, type = NULL, body = h2o_iovec_init("", 0);
    }
    if (r->server->stopping)
        req->http1_is_persistent = 0;
    if (r->server->observer != NULL)
        r->server->observer(r, status, uv_hrtime() - r->start_ns, r->tag,
                            r->server->observer_arg);
    req->res.status = status;
    req->res.reason = http_reason(status);
    if (type != NULL)
        http_set_content_type(req, type, strlen(type));
    if (status == 204 || status == 304)
        body.len = 0; /* no body and no Content-Length (RFC 7230 3.3.2) */
    else
        req->res.content_length = body.len;

    h2o_start_response(req, &generator);
    if (body.len == 0 || http_is_head(req))
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else
        h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

static bool http_can_reply(const struct http_req *r)
{
    if (r->state != HTTP_REQ_REPLIED)
        return true;
    /* Losing the race against a vanished client or a shutdown is normal; a
     * second reply from the API layer is a bug. */
    if (r->server_answered)
        log_debug("http: request already answered by the server; reply dropped");
    else
        log_warn("http: request already answered; reply dropped");
    return false;
}

void http_reply(struct http_req *req, int status, const char *content_type,
                const void *body, size_t len)
{
    if (!http_can_reply(req))
        return;
    http_send(req, status, content_type,
              h2o_strdup(&req->h2o->pool, len ? body : "", len));
}

void http_reply_json(struct http_req *req, int status, const char *json,
                     size_t len)
{
    http_reply(req, status, "application/json", json, len);
}

void http_reply_error(struct http_req *req, int status, const char *fmt, ...)
{
    char small[256], *msg = small;
    va_list ap;
    int n;

    if (!http_can_reply(req))
        return;
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
        small[0] = '\0';
    } else if ((size_t)n >= sizeof small) {
        msg = h2o_mem_alloc_pool(&req->h2o->pool, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(msg, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    http_send(req, status, "application/json",
              http_error_body(&req->h2o->pool, msg, (size_t)n));
}

/* The lowercase form of each byte that may appear in a header name (RFC 7230
 * tchar), 0 for every other byte: one lookup both checks and folds a name.
 * Filled by http_start, before any request can arrive. */
static unsigned char http_name_lc[256];

static void http_name_table_init(void)
{
    for (int c = 1; c < 256; c++) {
        bool tchar = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
        http_name_lc[c] = tchar ? (unsigned char)h2o_tolower(c) : 0;
    }
}

void http_add_header(struct http_req *req, const char *name,
                     const char *value)
{
    h2o_req_t *h = req->h2o;
    size_t nlen = strlen(name), vlen = 0;
    const h2o_token_t *token;
    h2o_iovec_t *lower;
    char *text;
    bool bad = nlen == 0;

    if (req->state == HTTP_REQ_REPLIED) {
        log_warn("http: header %s added after the reply; dropped", name);
        return;
    }
    /* A CR or LF would let a value smuggle headers into the response. */
    for (; value[vlen] != '\0'; vlen++)
        bad |= value[vlen] == '\r' || value[vlen] == '\n';
    /* One pool block: the lowercase name h2o matches on, then the name as
     * the caller wrote it (what HTTP/1 sends), then the value. */
    lower = h2o_mem_alloc_pool(&h->pool, sizeof *lower + 2 * nlen + vlen + 1);
    text = (char *)(lower + 1);
    for (size_t i = 0; i < nlen; i++) {
        text[i] = (char)http_name_lc[(unsigned char)name[i]];
        bad |= text[i] == '\0';
    }
    if (bad) {
        log_warn("http: malformed response header %s; dropped", name);
        return;
    }
    /* h2o writes the framing headers itself; a second copy would make the
     * response ambiguous. */
    if (h2o_memis(text, nlen, H2O_STRLIT("content-length")) ||
        h2o_memis(text, nlen, H2O_STRLIT("transfer-encoding")) ||
        h2o_memis(text, nlen, H2O_STRLIT("connection"))) {
        log_warn("http: header %s is managed by the server; dropped", name);
        return;
    }
    memcpy(text + nlen, name, nlen);
    memcpy(text + 2 * nlen, value, vlen + 1);
    token = h2o_lookup_token(text, nlen);
    if (token != NULL) {
        http_push_header(h, &token->buf, text + nlen,
                         h2o_iovec_init(text + 2 * nlen, vlen));
        return;
    }
    *lower = h2o_iovec_init(text, nlen);
    http_push_header(h, lower, text + nlen, h2o_iovec_init(text + 2 * nlen, vlen));
}

void http_req_on_release(struct http_req *req, void (*cb)(void *arg),
                         void *arg)
{
    if (req->n_release == HTTP_MAX_RELEASE_WATCHERS) {
        /* A bug in the caller; refusing would leak its operation, so this
         * aborts loudly instead. */
        log_error("http: more than %d release watchers on one request",
                  HTTP_MAX_RELEASE_WATCHERS);
        abort();
    }
    req->release[req->n_release].cb = cb;
    req->release[req->n_release].arg = arg;
    req->n_release++;
}

/* --- Reading a request ---------------------------------------------------- */

const char *http_method(const struct http_req *req, size_t *len)
{
    *len = req->h2o->input.method.len;
    return req->h2o->input.method.base;
}

static size_t http_path_len(const h2o_req_t *req)
{
    const char *q = memchr(req->input.path.base, '?', req->input.path.len);
    return q != NULL ? (size_t)(q - req->input.path.base) : req->input.path.len;
}

const char *http_path(const struct http_req *req, size_t *len)
{
    *len = http_path_len(req->h2o);
    return req->h2o->input.path.base;
}

const char *http_query(const struct http_req *req, size_t *len)
{
    const h2o_req_t *h = req->h2o;
    size_t at = http_path_len(h);

    if (at == h->input.path.len) {
        *len = 0;
        return NULL;
    }
    *len = h->input.path.len - at - 1;
    return h->input.path.base + at + 1;
}

const char *http_body(const struct http_req *req, size_t *len)
{
    *len = req->h2o->entity.len;
    return req->h2o->entity.base != NULL ? req->h2o->entity.base : "";
}

/* h2o lowercases request header names, so matching only folds @name. */
static bool http_name_is(const h2o_iovec_t *have, const char *name, size_t len)
{
    if (have->len != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)name[i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if ((unsigned char)have->base[i] != c)
            return false;
    }
    return true;
}

/* h2o moves Host out of the header list and makes up one when absent. */
static bool http_has_host(const struct http_server *s, const h2o_req_t *req)
{
    return req->input.authority.base != NULL &&
           req->input.authority.base != s->hostconf->authority.hostport.base;
}

const char *http_header(const struct http_req *req, const char *name,
                        size_t *len)
{
    const h2o_req_t *h = req->h2o;
    size_t nlen = strlen(name);
    static const h2o_iovec_t host = {(char *)"host", 4};

    for (size_t i = 0; i < h->headers.size; i++) {
        const h2o_header_t *e = h->headers.entries + i;
        if (http_name_is(e->name, name, nlen)) {
            *len = e->value.len;
            return e->value.base;
        }
    }
    if (http_name_is(&host, name, nlen) && http_has_host(req->server, h)) {
        *len = h->input.authority.len;
        return h->input.authority.base;
    }
    *len = 0;
    return NULL;
}

bool http_method_is(const struct http_req *req, const char *method)
{
    const h2o_iovec_t *m = &req->h2o->input.method;
    return h2o_memis(m->base, m->len, method, strlen(method));
}

bool http_path_is(const struct http_req *req, const char *path)
{
    size_t len;
    const char *p = http_path(req, &len);
    return h2o_memis(p, len, path, strlen(path));
}

long http_url_decode(const char *in, size_t len, char *out,
                     bool plus_is_space)
{
    size_t i = 0, o = 0;

    while (i < len) {
        if (in[i] == '%') {
            int hi = len - i > 2 ? http_hexval((unsigned char)in[i + 1]) : -1;
            int lo = len - i > 2 ? http_hexval((unsigned char)in[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                out[0] = '\0';
                return -1;
            }
            out[o++] = (char)(hi << 4 | lo);
            i += 3;
        } else {
            out[o++] = plus_is_space && in[i] == '+' ? ' ' : in[i];
            i++;
        }
    }
    out[o] = '\0';
    return (long)o;
}

/* Compares a raw query key with @name after decoding it on the fly, so that
 * "a%62c" finds "abc" without allocating. */
static bool http_query_key_is(const char *k, size_t klen, const char *name,
                              size_t nlen)
{
    size_t i = 0, j = 0;

    while (i < klen) {
        int c = (unsigned char)k[i];
        if (c == '%') {
            int hi = klen - i > 2 ? http_hexval((unsigned char)k[i + 1]) : -1;
            int lo = klen - i > 2 ? http_hexval((unsigned char)k[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return false;
            c = hi << 4 | lo;
            i += 3;
        } else {
            c = c == '+' ? ' ' : c;
            i++;
        }
        if (j == nlen || (unsigned char)name[j] != c)
            return false;
        j++;
    }
    return j == nlen;
}

int http_query_param(struct http_req *req, const char *name, char **value,
                     size_t *len)
{
    size_t qlen, nlen = strlen(name);
    const char *p = http_query(req, &qlen), *end;

    if (p == NULL)
        return -ENOENT;
    end = p + qlen;
    for (;;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp != NULL ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        const char *kend = eq != NULL ? eq : stop;

        if (kend > p && http_query_key_is(p, (size_t)(kend - p), name, nlen)) {
            const char *v = eq != NULL ? eq + 1 : stop;
            size_t vlen = (size_t)(stop - v);
            char *out = h2o_mem_alloc_pool(&req->h2o->pool, vlen + 1);
            long n = http_url_decode(v, vlen, out, true);
            if (n < 0)
                return -EINVAL;
            *value = out;
            if (len != NULL)
                *len = (size_t)n;
            return 0;
        }
        if (amp == NULL)
            return -ENOENT;
        p = amp + 1;
    }
}

/* --- The handler and the error filter ------------------------------------ */

static size_t http_header_bytes(const struct http_server *s, const h2o_req_t *req)
{
    size_t n = 0;

    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len;
    if (http_has_host(s, req))
        n += sizeof "host" - 1 + req->input.authority.len;
    return n;
}

/* h2o calls this from h2o_mem_clear_pool, before the pool's memory (and so
 * the request, which lives in it) goes away. */
static void http_req_dispose_ref(void *p)
{
    http_req_dispose(*(struct http_req **)p);
}

/* The request itself lives in h2o's pool, which h2o recycles.  Only a
 * request that outlives its callback (pending) or has release watchers must
 * hear when h2o frees it, so only those pay for the shared allocation (one
 * malloc) that carries the dispose hook; most reads are answered inside the
 * callback. */
static void http_req_finish_callback(struct http_req *r)
{
    struct http_req **ref;

    if (r->state == HTTP_REQ_PENDING || r->n_release > 0) {
        ref = h2o_mem_alloc_shared(&r->h2o->pool, sizeof *ref,
                                   http_req_dispose_ref);
        *ref = r;
    }
}

static int http_on_req(h2o_handler_t *self, h2o_req_t *hreq)
{
    struct http_server *s = ((struct http_handler *)self)->server;
    struct http_req *r = h2o_mem_alloc_pool(&hreq->pool, sizeof *r);
    size_t hbytes;

    /* tag -1 until a route sets one: what is refused here (431, 413, 503)
     * is counted as "other", not as the first route. */
    *r = (struct http_req){.h2o = hreq, .server = s,
                           .state = HTTP_REQ_IN_CALLBACK,
                           .start_ns = uv_hrtime(), .tag = -1};
    /* Room for the headers a reply usually carries, in one allocation. */
    h2o_vector_reserve(&hreq->pool, &hreq->res.headers, 8);
    if (s->stopping) {
        http_add_header(r, "Retry-After", "1");
        http_reply_error(r, 503, "server is shutting down");
        return 0;
    }
    hbytes = http_header_bytes(s, hreq);
    if (hbytes > s->max_header_bytes) {
        http_reply_error(r, 431, "request headers too large (%zu bytes, limit %zu)",
                         hbytes, s->max_header_bytes);
        return 0;
    }
    if (hreq->entity.len > s->max_body) {
        http_reply_error(r, 413, "request body too large (limit %zu bytes)",
                         s->max_body);
        return 0;
    }

    s->cb(r, s->data);

    if (r->state == HTTP_REQ_IN_CALLBACK && s->stopping) {
        /* the callback itself called http_stop */
        http_add_header(r, "Retry-After", "1");
        http_reply_error(r, 503, "server is shutting down");
    }
    if (r->state != HTTP_REQ_IN_CALLBACK) {
        http_req_finish_callback(r);
        return 0;
    }
    r->state = HTTP_REQ_PENDING;
    http_req_finish_callback(r);
    http_pending_link(r);
    if (!uv_is_active((uv_handle_t *)&s->watch_timer))
        uv_timer_start(&s->watch_timer, http_on_watch_timer,
                       HTTP_WATCH_AFTER_MS, 0);
    return 0;
}

/* What snprintf actually wrote into a buffer of @size. */
static size_t http_clamp(int written, size_t size)
{
    if (written < 0)
        return 0;
    return (size_t)written < size ? (size_t)written : size - 1;
}

/* h2o's own errors arrive here with a text/plain body set by
 * h2o_send_error_generic (Content-Length already known, one final send). */
static void http_error_ostream_send(h2o_ostream_t *self, h2o_req_t *req,
                                    h2o_iovec_t *bufs, size_t bufcnt,
                                    h2o_send_state_t state)
{
    struct http_error_ostream *o = (struct http_error_ostream *)self;
    char small[256];
    h2o_iovec_t body;
    size_t n = 0;

    if (h2o_send_state_is_in_progress(state)) {
        h2o_ostream_send_next(self, req, bufs, bufcnt, state);
        return;
    }
    if (req->res.status == 413) {
        n = http_clamp(snprintf(small, sizeof small,
                                "request body too large (limit %zu bytes)",
                                o->server->max_body),
                       sizeof small);
    } else {
        for (size_t i = 0; i < bufcnt; i++) {
            size_t k = bufs[i].len < sizeof small - n ? bufs[i].len
                                                      : sizeof small - n;
            memcpy(small + n, bufs[i].base, k);
            n += k;
        }
        if (n == 0) /* HEAD: h2o sent no text */
            n = http_clamp(snprintf(small, sizeof small, "%s", req->res.reason),
                           sizeof small);
    }
    body = http_error_body(&req->pool, small, n);
    req->res.content_length = body.len;
    if (bufcnt == 0) /* HEAD */
        h2o_ostream_send_next(self, req, NULL, 0, state);
    else
        h2o_ostream_send_next(self, req, &body, 1, state);
}

static void http_on_setup_error_ostream(h2o_filter_t *self, h2o_req_t *req,
                                        h2o_ostream_t **slot)
{
    struct http_error_filter *f = (struct http_error_filter *)self;

    if (req->res.status >= 400) {
        struct http_error_ostream *o =
            (void *)h2o_add_ostream(req, sizeof *o, slot);
        o->super.do_send = http_error_ostream_send;
        o->server = f->server;
        slot = &o->super.next;
        http_set_content_type(req, H2O_STRLIT("application/json"));
    }
    h2o_setup_next_ostream(req, slot);
}

/* --- Connections ---------------------------------------------------------- */

static void http_maybe_finish(struct http_server *s);

static void http_on_conn_closed(uv_handle_t *h)
{
    struct http_conn *c = H2O_STRUCT_FROM_MEMBER(struct http_conn, tcp, h);
    struct http_server *s = c->server;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    s->nconns--;
    free(c);
    http_maybe_finish(s);
}

static void http_on_unaccepted_closed(uv_handle_t *h)
{
    free(H2O_STRUCT_FROM_MEMBER(struct http_conn, tcp, h));
}

static void http_on_accept(uv_stream_t *listener, int status)
{
    struct http_server *s =
        H2O_STRUCT_FROM_MEMBER(struct http_server, listener, listener);
    struct http_conn *c;
    h2o_socket_t *sock;
    int rc;

    if (status < 0) {
        log_warn("http: accept: %s", uv_strerror(status));
        return;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        log_error("http: out of memory accepting a connection");
        return;
    }
    uv_tcp_init(s->loop, &c->tcp);
    rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
    if (rc != 0) {
        log_warn("http: accept: %s", uv_strerror(rc));
        uv_close((uv_handle_t *)&c->tcp, http_on_unaccepted_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->server = s;
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;

    sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, http_on_conn_closed);
    h2o_accept(&s->accept_ctx, sock);
}

/* h2o has no call that closes an HTTP/1 connection from outside.  Shutting
 * the socket down makes h2o's own reader see EOF (or its writer EPIPE), and
 * h2o then closes the connection through its normal path. */
static void http_shutdown_conns(struct http_server *s, int how)
{
    for (struct http_conn *c = s->conns; c != NULL; c = c->next) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            shutdown(fd, how);
    }
}

/* --- Start and stop ------------------------------------------------------ */

static int http_listen_socket(const struct sockaddr_in *addr, int *out,
                              int *port)
{
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    int fd, one = 1, rc;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)addr, sizeof *addr) != 0 ||
        listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *out = fd;
    *port = ntohs(bound.sin_port);
    return 0;
}

/* libuv writes with writev(2), so a peer that reset the connection raises
 * SIGPIPE; every server on libuv must ignore it.  A handler someone else
 * installed is left alone. */
static void http_ignore_sigpipe(void)
{
    struct sigaction sa;

    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
}

static void http_on_start_failed(uv_handle_t *h)
{
    struct http_server *s =
        H2O_STRUCT_FROM_MEMBER(struct http_server, listener, h);
    free(s);
}

int http_start(struct http_server **out, uv_loop_t *loop,
               const struct http_options *opts, http_request_cb cb,
               void *data)
{
    struct http_server *s;
    struct sockaddr_in addr;
    h2o_pathconf_t *root;
    struct http_handler *handler;
    struct http_error_filter *filter;
    int fd = -1, port = 0, rc;

    *out = NULL;
    if (opts == NULL || opts->host == NULL || cb == NULL || opts->port < 0 ||
        opts->port > 65535)
        return UV_EINVAL;
    rc = uv_ip4_addr(opts->host, opts->port, &addr);
    if (rc != 0)
        return rc;
    rc = http_listen_socket(&addr, &fd, &port);
    if (rc != 0)
        return rc;
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        close(fd);
        return UV_ENOMEM;
    }
    s->loop = loop;
    s->cb = cb;
    s->data = data;
    s->max_body = opts->max_body;
    s->max_header_bytes = opts->max_header_bytes;
    s->port = port;

    /* From here on, everything lives on the loop and goes away only through
     * uv_close; the one call that can fail comes first. */
    uv_tcp_init(loop, &s->listener);
    rc = uv_tcp_open(&s->listener, fd);
    if (rc != 0)
        close(fd); /* not adopted by the handle */
    else
        rc = uv_listen((uv_stream_t *)&s->listener, SOMAXCONN, http_on_accept);
    if (rc != 0) {
        uv_close((uv_handle_t *)&s->listener, http_on_start_failed);
        return rc;
    }
    s->listener_open = true;
    uv_timer_init(loop, &s->grace);
    uv_timer_init(loop, &s->watch_timer);
    uv_unref((uv_handle_t *)&s->watch_timer);
    uv_idle_init(loop, &s->fence);

    http_name_table_init();
    h2o_config_init(&s->config);
    s->config.max_request_entity_size =
        s->max_body < SIZE_MAX ? s->max_body + 1 : SIZE_MAX;
    s->config.http1.upgrade_to_http2 = 0;
    /* No Server header: it told every client h2o's version, and h2o formats
     * it with a sprintf of its own on every response. */
    s->config.server_name = h2o_iovec_init("", 0);
    s->hostconf = h2o_config_register_host(
        &s->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    root = h2o_config_register_path(s->hostconf, "/", 0);
    handler = (void *)h2o_create_handler(root, sizeof *handler);
    handler->super.on_req = http_on_req;
    handler->server = s;
    filter = (void *)h2o_create_filter(&s->hostconf->fallback_path,
                                       sizeof *filter);
    filter->super.on_setup_ostream = http_on_setup_error_ostream;
    filter->server = s;
    h2o_context_init(&s->ctx, loop, &s->config);
    s->accept_ctx.ctx = &s->ctx;
    s->accept_ctx.hosts = s->config.hosts;

    http_ignore_sigpipe();
    log_info("http: listening on %s:%d", opts->host, port);
    *out = s;
    return 0;
}

int http_port(const struct http_server *s) { return s->port; }

static void http_on_fence_closed(uv_handle_t *h)
{
    struct http_server *s = H2O_STRUCT_FROM_MEMBER(struct http_server, fence, h);
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;

    free(s);
    if (done != NULL)
        done(arg);
}

/* Handles closed in one loop iteration all finish in the next one, in an
 * order libuv does not promise.  h2o's timers (embedded in s->ctx) were
 * closed together with s->grace, so s may only be freed one close later. */
static void http_on_grace_closed(uv_handle_t *h)
{
    struct http_server *s = H2O_STRUCT_FROM_MEMBER(struct http_server, grace, h);
    uv_close((uv_handle_t *)&s->fence, http_on_fence_closed);
}

static void http_maybe_finish(struct http_server *s)
{
    unsigned int stop_flag;

    if (!s->stopping || s->listener_open || s->nconns != 0 || s->finishing)
        return;
    s->finishing = true;
    uv_timer_stop(&s->grace);

    /* h2o_context_dispose ends with uv_run(UV_RUN_NOWAIT) to reap the timer
     * handles it closes, but we are inside a loop callback and libuv's
     * uv_run must not be re-entered: it would run other callbacks (user
     * timers, I/O) in the middle of this teardown.  A pending stop request
     * makes that nested uv_run return at once (it clears the flag on the
     * way out); our close fences reap the handles instead. */
    stop_flag = s->loop->stop_flag;
    uv_stop(s->loop);
    h2o_context_dispose(&s->ctx);
    s->loop->stop_flag = stop_flag;
    h2o_config_dispose(&s->config);

    uv_close((uv_handle_t *)&s->watch_timer, NULL);
    uv_close((uv_handle_t *)&s->grace, http_on_grace_closed);
}

static void http_on_listener_closed(uv_handle_t *h)
{
    struct http_server *s =
        H2O_STRUCT_FROM_MEMBER(struct http_server, listener, h);
    s->listener_open = false;
    http_maybe_finish(s);
}

static void http_on_stop_grace(uv_timer_t *t)
{
    struct http_server *s = H2O_STRUCT_FROM_MEMBER(struct http_server, grace, t);

    log_warn("http: %zu connection(s) still open %d ms into shutdown; "
             "forcing them closed",
             s->nconns, HTTP_STOP_GRACE_MS);
    http_shutdown_conns(s, SHUT_RDWR);
}

void http_stop(struct http_server *s, void (*done)(void *arg), void *arg)
{
    if (s->stopping) {
        log_warn("http: http_stop called twice");
        return;
    }
    s->stopping = true;
    s->done = done;
    s->done_arg = arg;
    /* Not h2o_context_request_shutdown(): for HTTP/1 it only turns off
     * keep-alive on later requests (http_send does that already), and its
     * HTTP/2 half links a one-second timer entry that makes
     * h2o_context_dispose() assert unless that timer has fired. */
    uv_close((uv_handle_t *)&s->listener, http_on_listener_closed);

    /* Pending requests get an answer, which also ends keep-alive (stopping
     * is set); their release callbacks run once h2o has written it. */
    while (s->pending != NULL) {
        s->pending->server_answered = true;
        http_add_header(s->pending, "Retry-After", "1");
        http_reply_error(s->pending, 503, "server is shutting down");
    }

    /* Idle connections: h2o reads EOF and closes.  Busy ones close after
     * their current response, since keep-alive is now off. */
    http_shutdown_conns(s, SHUT_RD);
    uv_timer_start(&s->grace, http_on_stop_grace, HTTP_STOP_GRACE_MS, 0);
}

void http_req_set_tag(struct http_req *req, int tag) { req->tag = tag; }

void http_set_observer(struct http_server *s, http_observer_cb cb, void *arg)
{
    s->observer = cb;
    s->observer_arg = arg;
}
