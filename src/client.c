/* client.c - outbound HTTP/1.1 requests, on the node's libuv loop.
 *
 * A node asks other nodes for little: a join, its HTTP address, and, on a
 * follower, every request it relays to the leader.  That last one is on the
 * path of each write a client sends to a follower, so it is built to cost
 * what the server side of a request costs: one write and one read.
 *
 *  - Connections are kept alive and reused, newest first, per "host:port".
 *    An idle connection stays in read mode, so a peer that closes it (a
 *    restarted leader) is noticed at once and the connection is dropped
 *    before anyone sends on it.  Idle connections are closed after
 *    CLIENT_IDLE_MS (4-6 s), inside the 10 s after which an h2o peer
 *    closes them itself, so a request does not race that close.
 *  - A connection carries one request at a time; concurrent requests open
 *    more connections.
 *  - Responses are parsed here: Content-Length, chunked, or until close.
 *    The body is handed over in the connection's read buffer, not copied.
 *
 * Only plain http: nodes serve no TLS.  (It replaces a libcurl-based client
 * whose per-request setup, socket watching and liveness polls cost a
 * follower ~84 us of CPU per relayed write, 38 us now; bench/NOTES.md has
 * the numbers.)
 *
 * Re-entrancy rules that shape the code:
 *  - A callback may start, cancel or close anything, the whole client
 *    included.  A request is unlinked and marked finishing before its
 *    callback runs, and is freed only from its timer's close callback.
 *  - Connections and the client are freed only from uv close callbacks,
 *    which run after every stack frame that could hold a pointer to them. */
#include "client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

/* A peer's answer is small JSON or one value; anything this large is a bug
 * or an attack, and buffering it would only hurt the node. */
#define CLIENT_BODY_MAX (16u * 1024u * 1024u)
#define CLIENT_HEAD_MAX (64u * 1024u)
#define CLIENT_IDLE_MS 4000
#define CLIENT_IDLE_MAX 128
/* A read buffer grown past this by one large answer is given back once the
 * connection is idle again. */
#define CLIENT_KEEP_BUF (64u * 1024u)

struct client_conn
{
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct client *c;
    struct client_request *req;      /* the request it carries, or NULL */
    struct client_conn *prev, *next; /* c->idle, while idle */
    char *peer;                      /* "host:port", the pool's key */
    uint64_t idle_since;
    bool idle;
    bool closing;
    char *in; /* bytes read and not consumed; one byte kept for a NUL */
    size_t in_len, in_cap;
};

/* One request's bytes, freed by its write callback. */
struct client_write
{
    uv_write_t req;
    size_t len;
    char data[];
};

struct client_resolve
{
    uv_getaddrinfo_t gai;
    struct client *c;
    struct client_request *req; /* NULL once the request is gone */
};

enum client_framing
{
    FRAME_NONE,    /* no body (1xx, 204, 304) */
    FRAME_LENGTH,  /* Content-Length */
    FRAME_CHUNKED, /* Transfer-Encoding: chunked */
    FRAME_EOF      /* until the peer closes */
};

enum client_chunk_state
{
    CHUNK_SIZE,
    CHUNK_DATA,
    CHUNK_DATA_END,
    CHUNK_TRAILER
};

struct client
{
    uv_loop_t *loop;
    uv_timer_t reaper;              /* closes connections idle too long */
    struct client_request *pending; /* doubly linked, not yet called back */
    struct client_conn *idle;       /* newest first */
    unsigned idle_count;
    unsigned handles_open; /* uv handles and lookups whose callback is due */
    bool closing;
    void (*done)(void *arg);
    void *done_arg;
};

struct client_request
{
    struct client *c;
    struct client_request *prev, *next;
    uv_timer_t timer; /* the whole exchange's deadline */
    client_cb cb;
    void *arg;
    long timeout_ms;
    bool finishing; /* its callback is running or has run */
    bool sent;      /* bytes were handed to a connection */

    char *peer; /* "host:port" as the URL gave it */
    char *host;
    int port;
    struct client_write *out; /* until it is sent */
    struct client_conn *conn;
    struct client_resolve *resolve;
    struct addrinfo *addrs, *next_addr; /* from a name lookup */

    /* the response, as it is parsed */
    bool head_done;
    int minor, status;
    size_t head_len;
    enum client_framing framing;
    size_t content_length;
    bool keep_alive;
    enum client_chunk_state chunk_state;
    size_t chunk_left, chunk_pos, body_end;
    char *content_type;
    char *location;
    char *retry_after;
    char *relay; /* X-Raftkv-* header lines */
    size_t relay_len;
    char error[256];
};

static void conn_close(struct client_conn *cn);
static void request_send(struct client_request *r, struct client_conn *cn);
static void request_connect(struct client_request *r);
static void request_on_deferred_failure(uv_timer_t *t);

/* ---- bookkeeping --------------------------------------------------------- */

static void client_handle_closed(struct client *c)
{
    c->handles_open--;
    if (!c->closing || c->handles_open > 0) return;
    void (*done)(void *) = c->done;
    void *done_arg = c->done_arg;
    free(c);
    if (done) done(done_arg);
}

static void request_unlink(struct client_request *r)
{
    struct client *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->pending = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void request_timer_closed(uv_handle_t *h)
{
    struct client_request *r = h->data;
    struct client *c = r->c;

    free(r->peer);
    free(r->host);
    free(r->out);
    if (r->addrs) uv_freeaddrinfo(r->addrs);
    free(r->content_type);
    free(r->location);
    free(r->retry_after);
    free(r->relay);
    free(r);
    client_handle_closed(c);
}

/* Run @r's callback once, with @res, then let it go.  Whatever the request
 * still held (a connection, a name lookup) was detached by the caller or is
 * dropped here, so the callback cannot reach it twice. */
static void request_finish(struct client_request *r,
                           const struct client_response *res)
{
    r->finishing = true;
    request_unlink(r);
    uv_timer_stop(&r->timer);
    if (r->resolve) {
        r->resolve->req = NULL;
        uv_cancel((uv_req_t *)&r->resolve->gai);
        r->resolve = NULL;
    }
    if (r->conn) {
        struct client_conn *cn = r->conn;
        r->conn = NULL;
        cn->req = NULL;
        conn_close(cn); /* mid-exchange: its state is unknown */
    }
    if (res->status == 0) log_debug("client: %s: %s", r->peer, res->error);
    r->cb(r->arg, res);
    uv_close((uv_handle_t *)&r->timer, request_timer_closed);
}

static void request_fail(struct client_request *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void request_fail(struct client_request *r, const char *fmt, ...)
{
    struct client_response res = {.status = 0, .error = r->error};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    request_finish(r, &res);
}

/* ---- connections ----------------------------------------------------------- */

static void conn_closed(uv_handle_t *h)
{
    struct client_conn *cn = h->data;
    struct client *c = cn->c;
    free(cn->in);
    free(cn->peer);
    free(cn);
    client_handle_closed(c);
}

static void conn_unpark(struct client_conn *cn)
{
    struct client *c = cn->c;
    if (!cn->idle) return;
    if (cn->prev)
        cn->prev->next = cn->next;
    else
        c->idle = cn->next;
    if (cn->next) cn->next->prev = cn->prev;
    cn->prev = cn->next = NULL;
    cn->idle = false;
    c->idle_count--;
}

static void conn_close(struct client_conn *cn)
{
    if (cn->closing) return;
    cn->closing = true;
    conn_unpark(cn);
    uv_close((uv_handle_t *)&cn->tcp, conn_closed);
}

static void client_on_reap(uv_timer_t *t)
{
    struct client *c = t->data;
    uint64_t now = uv_now(c->loop);
    struct client_conn *cn = c->idle, *next;

    for (; cn != NULL; cn = next) {
        next = cn->next;
        if (now - cn->idle_since >= CLIENT_IDLE_MS) conn_close(cn);
    }
    if (c->idle == NULL) uv_timer_stop(&c->reaper);
}

/* Keep @cn for the next request to the same peer, or close it when the
 * client is closing or already keeps enough. */
static void conn_park(struct client_conn *cn)
{
    struct client *c = cn->c;

    cn->in_len = 0;
    if (c->closing || c->idle_count >= CLIENT_IDLE_MAX) {
        conn_close(cn);
        return;
    }
    cn->idle = true;
    cn->idle_since = uv_now(c->loop);
    cn->prev = NULL;
    cn->next = c->idle;
    if (c->idle) c->idle->prev = cn;
    c->idle = cn;
    c->idle_count++;
    if (!uv_is_active((uv_handle_t *)&c->reaper))
        uv_timer_start(&c->reaper, client_on_reap, CLIENT_IDLE_MS / 2,
                       CLIENT_IDLE_MS / 2);
}

static struct client_conn *conn_take_idle(struct client *c, const char *peer)
{
    for (struct client_conn *cn = c->idle; cn != NULL; cn = cn->next) {
        if (strcmp(cn->peer, peer) == 0) {
            conn_unpark(cn);
            return cn;
        }
    }
    return NULL;
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct client_conn *cn = h->data;
    (void)hint;

    if (cn->in_cap - cn->in_len < 4096 + 1) {
        size_t cap = cn->in_cap ? cn->in_cap * 2 : 16384;
        while (cap - cn->in_len < 4096 + 1) cap *= 2;
        char *p = realloc(cn->in, cap);
        if (p == NULL) {
            *b = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
            return;
        }
        cn->in = p;
        cn->in_cap = cap;
    }
    *b = uv_buf_init(cn->in + cn->in_len,
                     (unsigned)(cn->in_cap - cn->in_len - 1));
}

/* ---- parsing the response -------------------------------------------------- */

/* Replace *@slot with a copy of @v. */
static bool take_value(char **slot, const char *v, size_t len)
{
    char *copy = strndup(v, len);
    if (copy == NULL) return false;
    free(*slot);
    *slot = copy;
    return true;
}

static bool relay_take(struct client_request *r, const char *name,
                       size_t nlen, const char *v, size_t vlen)
{
    char *grown = realloc(r->relay, r->relay_len + nlen + vlen + 4);
    if (grown == NULL) return false;
    r->relay = grown;
    r->relay_len += (size_t)sprintf(r->relay + r->relay_len, "%.*s: %.*s\n",
                                    (int)nlen, name, (int)vlen, v);
    return true;
}

static void response_reset(struct client_request *r)
{
    free(r->content_type);
    free(r->location);
    free(r->retry_after);
    free(r->relay);
    r->content_type = r->location = r->retry_after = r->relay = NULL;
    r->relay_len = 0;
}

static bool name_is(const char *name, size_t nlen, const char *want)
{
    return strlen(want) == nlen && strncasecmp(name, want, nlen) == 0;
}

/* Parse the head in @p[0..@len) (ending with its empty line).  Returns
 * NULL, or what is wrong with it. */
static const char *head_parse(struct client_request *r, const char *p,
                              size_t len)
{
    const char *end = p + len, *eol;
    bool have_length = false, chunked = false, close = false;
    int digits = 0;

    response_reset(r);
    if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' ||
        p[7] > '9' || p[8] != ' ')
        return "not an HTTP/1.x status line";
    r->minor = p[7] - '0';
    r->status = 0;
    /* Count every digit but keep only three: a longer code is refused
     * below, and must not overflow on its way there. */
    for (const char *d = p + 9; d < end && *d >= '0' && *d <= '9'; d++)
        if (++digits <= 3) r->status = r->status * 10 + (*d - '0');
    if (digits != 3 || r->status < 100) return "bad status code";
    eol = memmem(p, len, "\r\n", 2);
    for (p = eol + 2; p < end; p = eol + 2) {
        eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == p) break; /* the empty line */
        if (*p == ' ' || *p == '\t') return "folded header line";
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon == NULL || colon == p) return "header line without a name";
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1, *vend = eol;
        while (v < vend && (*v == ' ' || *v == '\t')) v++;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) vend--;
        size_t vlen = (size_t)(vend - v);
        bool ok = true;

        if (name_is(p, nlen, "content-length")) {
            char *stop;
            unsigned long long n;
            if (have_length || vlen == 0 || *v < '0' || *v > '9')
                return "bad Content-Length";
            errno = 0;
            n = strtoull(v, &stop, 10);
            if (errno != 0 || stop != vend) return "bad Content-Length";
            if (n > CLIENT_BODY_MAX) return "too large";
            r->content_length = (size_t)n;
            have_length = true;
        } else if (name_is(p, nlen, "transfer-encoding")) {
            if (vlen != 7 || strncasecmp(v, "chunked", 7) != 0)
                return "unsupported Transfer-Encoding";
            chunked = true;
        } else if (name_is(p, nlen, "connection")) {
            if (vlen == 5 && strncasecmp(v, "close", 5) == 0) close = true;
        } else if (name_is(p, nlen, "content-type")) {
            ok = take_value(&r->content_type, v, vlen);
        } else if (name_is(p, nlen, "location")) {
            ok = take_value(&r->location, v, vlen);
        } else if (name_is(p, nlen, "retry-after")) {
            ok = take_value(&r->retry_after, v, vlen);
        } else if (nlen > 9 && strncasecmp(p, "x-raftkv-", 9) == 0) {
            ok = relay_take(r, p, nlen, v, vlen);
        }
        if (!ok) return "out of memory";
    }
    if (have_length && chunked) return "both Content-Length and chunked";
    if (r->status < 200 || r->status == 204 || r->status == 304)
        r->framing = FRAME_NONE;
    else if (chunked)
        r->framing = FRAME_CHUNKED;
    else if (have_length)
        r->framing = FRAME_LENGTH;
    else
        r->framing = FRAME_EOF;
    r->keep_alive = r->minor >= 1 && !close && r->framing != FRAME_EOF;
    return NULL;
}

/* Decode chunks in place: data moves down to r->body_end as its framing is
 * read at r->chunk_pos.  Returns 1 when the body is complete, 0 when more
 * is needed, or -1 with the reason in r->error. */
static int chunks_decode(struct client_request *r, struct client_conn *cn)
{
    char *in = cn->in;

    for (;;) {
        size_t avail = cn->in_len - r->chunk_pos;
        const char *at = in + r->chunk_pos;
        const char *eol;

        switch (r->chunk_state) {
        case CHUNK_DATA: {
            size_t n = avail < r->chunk_left ? avail : r->chunk_left;
            if (n == 0) return 0;
            memmove(in + r->body_end, at, n);
            r->body_end += n;
            r->chunk_pos += n;
            r->chunk_left -= n;
            if (r->chunk_left == 0) r->chunk_state = CHUNK_DATA_END;
            break;
        }
        case CHUNK_DATA_END:
            if (avail < 2) return 0;
            if (at[0] != '\r' || at[1] != '\n') goto bad;
            r->chunk_pos += 2;
            r->chunk_state = CHUNK_SIZE;
            break;
        case CHUNK_SIZE: {
            unsigned long long size = 0;
            int digits = 0;
            eol = memmem(at, avail, "\r\n", 2);
            if (eol == NULL) {
                if (avail > 1024) goto bad;
                return 0;
            }
            for (; at < eol; at++, digits++) {
                int d = *at >= '0' && *at <= '9'   ? *at - '0'
                        : *at >= 'a' && *at <= 'f' ? *at - 'a' + 10
                        : *at >= 'A' && *at <= 'F' ? *at - 'A' + 10
                                                   : -1;
                if (d < 0) break;
                if (size > CLIENT_BODY_MAX) goto too_large;
                size = size * 16 + (unsigned)d;
            }
            if (digits == 0 || (at < eol && *at != ';' && *at != ' '))
                goto bad;
            if (size > CLIENT_BODY_MAX - (r->body_end - r->head_len))
                goto too_large;
            r->chunk_pos = (size_t)(eol + 2 - in);
            r->chunk_left = (size_t)size;
            r->chunk_state = size ? CHUNK_DATA : CHUNK_TRAILER;
            break;
        }
        case CHUNK_TRAILER:
            eol = memmem(at, avail, "\r\n", 2);
            if (eol == NULL) {
                if (avail > 4096) goto bad;
                return 0;
            }
            r->chunk_pos = (size_t)(eol + 2 - in);
            if (eol == at) {
                if (r->chunk_pos != cn->in_len) r->keep_alive = false;
                return 1;
            }
            break;
        }
    }
bad:
    snprintf(r->error, sizeof r->error, "bad response from %s: bad chunk",
             r->peer);
    return -1;
too_large:
    snprintf(r->error, sizeof r->error,
             "response body too large (over %u bytes)", CLIENT_BODY_MAX);
    return -1;
}

/* The whole response is in: hand it over, the connection first (so that a
 * request started from the callback can reuse it). */
static void response_complete(struct client_request *r, size_t body_len)
{
    struct client_conn *cn = r->conn;
    struct client_response res = {
        .status = r->status,
        .body = body_len ? cn->in + r->head_len : NULL,
        .body_len = body_len,
        .content_type = r->content_type,
        .location = r->location,
        .retry_after = r->retry_after,
        .raftkv_headers = r->relay ? r->relay : "",
    };

    if (body_len) cn->in[r->head_len + body_len] = '\0';
    r->conn = NULL;
    cn->req = NULL;
    if (r->keep_alive)
        conn_park(cn); /* the body stays where it is until the next read */
    else
        conn_close(cn);
    request_finish(r, &res);
    if (!cn->closing && cn->req == NULL && cn->in_cap > CLIENT_KEEP_BUF) {
        free(cn->in);
        cn->in = NULL;
        cn->in_cap = 0;
    }
}

/* Parse what has arrived on @cn for its request; finishes the request when
 * the response is complete or broken. */
static void response_parse(struct client_request *r, struct client_conn *cn)
{
    for (;;) {
        if (!r->head_done) {
            char *end = memmem(cn->in, cn->in_len, "\r\n\r\n", 4);
            const char *why;
            if (end == NULL) {
                if (cn->in_len > CLIENT_HEAD_MAX)
                    request_fail(r, "bad response from %s: head too large",
                                 r->peer);
                return;
            }
            r->head_len = (size_t)(end + 4 - cn->in);
            why = head_parse(r, cn->in, r->head_len);
            if (why != NULL && strcmp(why, "too large") == 0) {
                request_fail(r, "response body too large (over %u bytes)",
                             CLIENT_BODY_MAX);
                return;
            }
            if (why != NULL) {
                request_fail(r, "bad response from %s: %s", r->peer, why);
                return;
            }
            if (r->status < 200) {
                /* An interim answer (100 Continue): the final one follows. */
                memmove(cn->in, cn->in + r->head_len, cn->in_len - r->head_len);
                cn->in_len -= r->head_len;
                continue;
            }
            r->head_done = true;
            r->chunk_state = CHUNK_SIZE;
            r->chunk_pos = r->body_end = r->head_len;
        }
        break;
    }

    size_t have = cn->in_len - r->head_len;
    switch (r->framing) {
    case FRAME_NONE:
        if (have > 0) r->keep_alive = false;
        response_complete(r, 0);
        return;
    case FRAME_LENGTH:
        if (have < r->content_length) return;
        if (have > r->content_length) r->keep_alive = false;
        response_complete(r, r->content_length);
        return;
    case FRAME_CHUNKED:
        switch (chunks_decode(r, cn)) {
        case 1:
            response_complete(r, r->body_end - r->head_len);
            return;
        case 0:
            /* Keep the buffer to decoded data plus what is not read yet. */
            memmove(cn->in + r->body_end, cn->in + r->chunk_pos,
                    cn->in_len - r->chunk_pos);
            cn->in_len -= r->chunk_pos - r->body_end;
            r->chunk_pos = r->body_end;
            return;
        default:
            request_finish(r, &(struct client_response){.error = r->error});
            return;
        }
    case FRAME_EOF:
        if (have > CLIENT_BODY_MAX)
            request_fail(r, "response body too large (over %u bytes)",
                         CLIENT_BODY_MAX);
        return;
    }
}

static void conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct client_conn *cn = s->data;
    struct client_request *r = cn->req;
    (void)b;

    if (n == 0 || cn->closing) return;
    if (r == NULL) {
        /* Idle: the peer closed it, or says something nobody asked for. */
        conn_close(cn);
        return;
    }
    if (n > 0) {
        cn->in_len += (size_t)n;
        response_parse(r, cn);
        return;
    }
    if (n == UV_EOF && r->head_done && r->framing == FRAME_EOF) {
        r->keep_alive = false;
        response_complete(r, cn->in_len - r->head_len);
        return;
    }
    if (n == UV_ENOBUFS) {
        request_fail(r, "out of memory reading the response from %s",
                     r->peer);
        return;
    }
    request_fail(r, "connection to %s lost before the whole response: %s",
                 r->peer, n == UV_EOF ? "closed by the peer" : uv_strerror((int)n));
}

/* ---- sending ----------------------------------------------------------------- */

static void request_on_written(uv_write_t *w, int status)
{
    struct client_conn *cn = w->handle->data;

    free(w);
    if (status >= 0 || status == UV_ECANCELED || cn->closing) return;
    if (cn->req != NULL)
        request_fail(cn->req, "connection to %s lost while sending: %s",
                     cn->req->peer, uv_strerror(status));
    else
        conn_close(cn);
}

static void request_send(struct client_request *r, struct client_conn *cn)
{
    struct client_write *w = r->out;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
    int rv;

    r->conn = cn;
    cn->req = r;
    cn->in_len = 0;
    r->out = NULL;
    r->sent = true;
    rv = uv_write(&w->req, (uv_stream_t *)&cn->tcp, &buf, 1,
                  request_on_written);
    if (rv < 0) {
        /* Fail from the loop, not from here: an idle connection is reused
         * from inside client_request, and client.h promises no callback
         * before that returns. */
        free(w);
        r->conn = NULL;
        cn->req = NULL;
        conn_close(cn);
        snprintf(r->error, sizeof r->error,
                 "connection to %s lost while sending: %s", r->peer,
                 uv_strerror(rv));
        uv_timer_start(&r->timer, request_on_deferred_failure, 0, 0);
    }
}

/* ---- connecting -------------------------------------------------------------- */

static void conn_on_connect(uv_connect_t *creq, int status)
{
    struct client_conn *cn = creq->data;
    struct client_request *r = cn->req;
    int rv;

    if (status == UV_ECANCELED || cn->closing) return;
    if (r == NULL) {
        conn_close(cn);
        return;
    }
    if (status < 0) {
        r->conn = NULL;
        cn->req = NULL;
        conn_close(cn);
        if (r->next_addr != NULL) {
            request_connect(r); /* the lookup gave another address */
            return;
        }
        request_fail(r, "%s %s: %s",
                     status == UV_ECONNREFUSED ? "connection refused by"
                                               : "cannot connect to",
                     r->peer, uv_strerror(status));
        return;
    }
    rv = uv_read_start((uv_stream_t *)&cn->tcp, conn_alloc, conn_on_read);
    if (rv < 0) {
        request_fail(r, "cannot connect to %s: %s", r->peer, uv_strerror(rv));
        return;
    }
    request_send(r, cn);
}

/* Fail @r from the loop rather than from inside client_request. */
static void request_on_deferred_failure(uv_timer_t *t)
{
    struct client_request *r = t->data;
    struct client_response res = {.status = 0, .error = r->error};
    request_finish(r, &res);
}

static void request_defer_failure(struct client_request *r, const char *what,
                                  int err)
{
    snprintf(r->error, sizeof r->error, "cannot connect to %s: %s: %s",
             r->peer, what, uv_strerror(err));
    uv_timer_start(&r->timer, request_on_deferred_failure, 0, 0);
}

/* Open a connection for @r to @sa. */
static void request_connect_to(struct client_request *r,
                               const struct sockaddr *sa)
{
    struct client *c = r->c;
    struct client_conn *cn = calloc(1, sizeof *cn);
    int rv;

    if (cn == NULL || (cn->peer = strdup(r->peer)) == NULL) {
        free(cn);
        request_defer_failure(r, "out of memory", UV_ENOMEM);
        return;
    }
    cn->c = c;
    rv = uv_tcp_init(c->loop, &cn->tcp);
    if (rv < 0) {
        free(cn->peer);
        free(cn);
        request_defer_failure(r, "socket", rv);
        return;
    }
    c->handles_open++;
    cn->tcp.data = cn;
    cn->connect.data = cn;
    cn->req = r;
    r->conn = cn;
    rv = uv_tcp_connect(&cn->connect, &cn->tcp, sa, conn_on_connect);
    if (rv == 0) rv = uv_tcp_nodelay(&cn->tcp, 1);
    if (rv < 0) {
        r->conn = NULL;
        cn->req = NULL;
        conn_close(cn);
        request_defer_failure(r, "connect", rv);
    }
}

static void request_connect(struct client_request *r)
{
    struct addrinfo *ai = r->next_addr;
    r->next_addr = ai->ai_next;
    request_connect_to(r, ai->ai_addr);
}

static void request_on_resolved(uv_getaddrinfo_t *gai, int status,
                                struct addrinfo *res)
{
    struct client_resolve *rs = gai->data;
    struct client_request *r = rs->req;
    struct client *c = rs->c;

    free(rs);
    if (r == NULL || status < 0) {
        if (res) uv_freeaddrinfo(res);
        if (r != NULL) {
            r->resolve = NULL;
            request_fail(r, "cannot connect to %s: cannot resolve host: %s",
                         r->peer, uv_strerror(status));
        }
        client_handle_closed(c);
        return;
    }
    r->resolve = NULL;
    r->addrs = r->next_addr = res;
    if (res == NULL)
        request_fail(r, "cannot connect to %s: no address", r->peer);
    else
        request_connect(r);
    client_handle_closed(c);
}

/* Send @r on an idle connection to its peer, or open one. */
static void request_start(struct client_request *r)
{
    struct client *c = r->c;
    struct client_conn *cn = conn_take_idle(c, r->peer);
    struct sockaddr_storage ss;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    char port[8];
    int rv;

    if (cn != NULL) {
        request_send(r, cn);
        return;
    }
    if (uv_ip4_addr(r->host, r->port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(r->host, r->port, (struct sockaddr_in6 *)&ss) == 0) {
        request_connect_to(r, (struct sockaddr *)&ss);
        return;
    }
    r->resolve = calloc(1, sizeof *r->resolve);
    if (r->resolve == NULL) {
        request_defer_failure(r, "out of memory", UV_ENOMEM);
        return;
    }
    r->resolve->c = c;
    r->resolve->req = r;
    r->resolve->gai.data = r->resolve;
    snprintf(port, sizeof port, "%d", r->port);
    rv = uv_getaddrinfo(c->loop, &r->resolve->gai, request_on_resolved,
                        r->host, port, &hints);
    if (rv < 0) {
        free(r->resolve);
        r->resolve = NULL;
        request_defer_failure(r, "cannot resolve host", rv);
        return;
    }
    c->handles_open++;
}

static void request_on_timeout(uv_timer_t *t)
{
    struct client_request *r = t->data;

    if (r->sent)
        request_fail(r, "timeout after %ld ms waiting for %s", r->timeout_ms,
                     r->peer);
    else
        request_fail(r, "cannot connect to %s: timeout after %ld ms",
                     r->peer, r->timeout_ms);
}

/* ---- the request's bytes ----------------------------------------------------- */

static bool text_is_clean(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return false;
    return true;
}

/* Split "http://host[:port]/path" into @r's peer, host and port; *@path
 * points into @url.  Returns 0 or -EINVAL. */
static int url_split(struct client_request *r, const char *url,
                     const char **path)
{
    const char *host, *host_end, *p;
    long port = 80;

    if (strncasecmp(url, "http://", 7) != 0 || !text_is_clean(url) ||
        strchr(url, ' ') != NULL)
        return -EINVAL;
    host = url + 7;
    if (*host == '[') {
        host_end = strchr(host, ']');
        if (host_end == NULL) return -EINVAL;
        p = host_end + 1;
        host++;
    } else {
        host_end = host + strcspn(host, ":/?#");
        p = host_end;
    }
    if (host_end == host) return -EINVAL;
    if (*p == ':') {
        char *stop;
        port = strtol(p + 1, &stop, 10);
        if (stop == p + 1 || port < 1 || port > 65535) return -EINVAL;
        p = stop;
    }
    if (*p != '\0' && *p != '/' && *p != '?') return -EINVAL;
    r->peer = strndup(url + 7, (size_t)(p - (url + 7)));
    r->host = strndup(host, (size_t)(host_end - host));
    if (r->peer == NULL || r->host == NULL) return -ENOMEM;
    r->port = (int)port;
    *path = p;
    return 0;
}

static int request_build(struct client_request *r, const char *method,
                         const char *path, const void *body, size_t body_len,
                         const char *content_type, const char *const *extra)
{
    bool has_body = body != NULL || strcmp(method, "POST") == 0 ||
                    strcmp(method, "PUT") == 0;
    size_t head = 128 + strlen(path) + strlen(r->peer);
    char *at;

    if (content_type != NULL) {
        if (!text_is_clean(content_type)) return -EINVAL;
        head += strlen(content_type);
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (!text_is_clean(extra[i]) || strchr(extra[i], ':') == NULL)
            return -EINVAL;
        head += strlen(extra[i]) + 2;
    }
    r->out = malloc(sizeof *r->out + head + body_len);
    if (r->out == NULL) return -ENOMEM;
    at = r->out->data;
    at += sprintf(at, "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: raftkv\r\n",
                  method, *path == '/' ? "" : "/", path, r->peer);
    if (content_type != NULL)
        at += sprintf(at, "Content-Type: %s\r\n", content_type);
    if (has_body) at += sprintf(at, "Content-Length: %zu\r\n", body_len);
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        at += sprintf(at, "%s\r\n", extra[i]);
    at += sprintf(at, "\r\n");
    if (body_len) memcpy(at, body, body_len);
    r->out->len = (size_t)(at - r->out->data) + body_len;
    return 0;
}

/* ---- the API ----------------------------------------------------------------- */

static void client_reaper_closed(uv_handle_t *h)
{
    client_handle_closed(h->data);
}

int client_init(struct client **out, uv_loop_t *loop)
{
    struct client *c;
    int rv;

    *out = NULL;
    if (loop == NULL) return -EINVAL;
    c = calloc(1, sizeof *c);
    if (c == NULL) return -ENOMEM;
    c->loop = loop;
    rv = uv_timer_init(loop, &c->reaper);
    if (rv < 0) {
        free(c);
        return rv;
    }
    c->reaper.data = c;
    c->handles_open = 1;
    *out = c;
    return 0;
}

void client_close(struct client *c, void (*done)(void *arg), void *arg)
{
    if (c == NULL) return;
    if (c->closing) {
        /* A second close (say from a callback run by the first) would free
         * twice; the first close's @done is the one that will run. */
        log_warn("client: client_close called twice; ignored");
        return;
    }
    c->closing = true;
    c->done = done;
    c->done_arg = arg;

    /* Always take the head: a callback may cancel other pending requests,
     * which unlinks them before we get there. */
    while (c->pending) client_cancel(c->pending);
    while (c->idle) conn_close(c->idle);
    uv_timer_stop(&c->reaper);
    uv_close((uv_handle_t *)&c->reaper, client_reaper_closed);
}

int client_request(struct client *c, const char *method, const char *url,
                   const void *body, size_t body_len,
                   const char *content_type, long timeout_ms, client_cb cb,
                   void *arg, struct client_request **handle)
{
    return client_request_headers(c, method, url, body, body_len,
                                  content_type, NULL, timeout_ms, cb, arg,
                                  handle);
}

int client_request_headers(struct client *c, const char *method,
                           const char *url, const void *body, size_t body_len,
                           const char *content_type,
                           const char *const *headers, long timeout_ms,
                           client_cb cb, void *arg,
                           struct client_request **handle)
{
    struct client_request *r;
    const char *path;
    int rv;

    if (handle) *handle = NULL;
    if (c == NULL || method == NULL || url == NULL || cb == NULL)
        return -EINVAL;
    if (c->closing) return -ESHUTDOWN;
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 &&
        strcmp(method, "PUT") != 0 && strcmp(method, "DELETE") != 0)
        return -EINVAL;
    if (timeout_ms <= 0) return -EINVAL; /* the contract promises a bound */
    if (body == NULL && body_len > 0) return -EINVAL;
    if (body != NULL && strcmp(method, "GET") == 0) return -EINVAL;

    r = calloc(1, sizeof *r);
    if (r == NULL) return -ENOMEM;
    r->c = c;
    r->cb = cb;
    r->arg = arg;
    r->timeout_ms = timeout_ms;
    rv = url_split(r, url, &path);
    if (rv == 0)
        rv = request_build(r, method, path, body, body_len, content_type,
                           headers);
    if (rv == 0) rv = uv_timer_init(c->loop, &r->timer);
    if (rv < 0) {
        free(r->peer);
        free(r->host);
        free(r->out);
        free(r);
        return rv;
    }
    c->handles_open++;
    r->timer.data = r;
    uv_timer_start(&r->timer, request_on_timeout, (uint64_t)timeout_ms, 0);
    r->next = c->pending;
    if (c->pending) c->pending->prev = r;
    c->pending = r;
    if (handle) *handle = r;
    request_start(r);
    return 0;
}

void client_cancel(struct client_request *r)
{
    /* From inside its own callback the request is already done; cancelling
     * it there is harmless and must not call back a second time. */
    if (r == NULL || r->finishing) return;
    request_finish(r, &(struct client_response){.error = "cancelled"});
}
