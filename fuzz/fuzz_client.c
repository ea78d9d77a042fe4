/* fuzz_client.c - libFuzzer target for the node's outbound HTTP client
 * (client.c): the requests it builds and the responses it parses.
 *
 * A follower relays every write and linearizable read it is sent to the
 * leader through client.c, a joining node asks a member, and each parses
 * whatever comes back.  Those peers are raftkv nodes, but an address given
 * by mistake can point a node at any server, and the node must not crash,
 * hang or misread a body whatever it says.
 *
 * Each input is one exchange with a tiny server in this process, on the
 * same loop as the client:
 *
 *     FLAGS PIECE PATH "\n" RESPONSE-1 [ "\n--next-response--\n" RESPONSE-2 ]
 *
 *  - FLAGS bits 0-1 pick the method (GET, PUT, POST, DELETE; PUT and POST
 *    carry a 2-byte body); bit 2 makes the server hang up after each
 *    response, otherwise it keeps the connection while a response is left.
 *  - PIECE: the server writes each response PIECE bytes at a time (0: all
 *    at once), one write per loop turn, so that the client parses each
 *    part as it arrives.
 *  - PATH goes into the URL, http://127.0.0.1:PORT/PATH.
 *  - With a second response, the harness sends the second request from the
 *    first one's callback (the client then reuses the connection it just
 *    parked, if it kept it).
 *
 * The server reads one whole request, answers with the next response and
 * hangs up once it has no response left (or, with a response left and the
 * client still waiting, after TURNS_BEFORE_HANGUP quiet loop turns, which
 * ends a response read until close).
 *
 * What counts as a finding, besides sanitizer reports and leaks:
 *  - client_request refusing a path without a control character or a
 *    space, or accepting one with them; the server seeing a request line
 *    other than "METHOD /PATH HTTP/1.1", or more header lines than the
 *    client writes (a path must not split the request);
 *  - a callback that runs twice, never, or with a timeout: the server
 *    always hangs up in the end, so the client always has an answer;
 *  - an answer that breaks client.h's contract: status 0 without an error
 *    text; a body that is NULL while its length is not 0 (or the other way
 *    round) or is not NUL-terminated;
 *  - a response that the strict reading below (ref_parse) takes in full,
 *    with a different status, body, Content-Type, Location, Retry-After or
 *    X-Raftkv-* headers than the client's answer, or with no answer at
 *    all.  That reading accepts a strict subset of HTTP/1.1 (no folding,
 *    no duplicate Content-Length, lower-case "chunked" only, no chunk
 *    extensions or trailers), which the client must read the same way;
 *    what it does not take is only required not to crash.
 *
 * Reproduce: fuzz/build/fuzz_client FILE (RAFTKV_FUZZ_SHOW=1 prints each
 * answer). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <arpa/inet.h>
#include <uv.h>

#include "client.h"

#include "fuzz_common.h"

#define SEPARATOR "\n--next-response--\n"
#define MAX_RESPONSES 2
#define TURNS_BEFORE_HANGUP 3
#define CLIENT_TIMEOUT_MS 5000
#define HANG_MS 10000
#define REQUEST_BODY "{}"
#define REQUEST_IN_MAX (64 * 1024)

static const char *const methods[4] = {"GET", "PUT", "POST", "DELETE"};

/* What ref_parse makes of one response. */
struct expect
{
    bool known; /* taken in full by the strict reading */
    bool exact; /* ... and nothing follows it */
    int status;
    const char *body; /* into the input */
    size_t body_len;
    char *chunked;    /* decoded chunked body (owned), or NULL */
    char *content_type, *location, *retry_after;
    char relay[4096];
};

struct sconn
{
    uv_tcp_t tcp;
    struct sconn *next;
    char *in;
    size_t in_len;
    int response;      /* the response being written, or -1 */
    int queued[MAX_RESPONSES]; /* requests read while it was being written */
    int n_queued;
    size_t sent;       /* bytes of it written so far */
    unsigned quiet;    /* turns since the last byte, waiting for the client */
    unsigned writes;   /* uv_write callbacks due */
    bool closing;
};

struct answer
{
    int calls;
    int status;
    char error[300];
    char *body;
    size_t body_len;
    bool body_null;
    char *content_type, *location, *retry_after, *relay;
};

static struct
{
    bool up;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_idle_t pump;
    int port;
    bool show;

    /* the current input */
    const char *method;
    bool with_body, hang_up_each;
    size_t piece;
    char *path;
    const uint8_t *resp[MAX_RESPONSES];
    size_t resp_len[MAX_RESPONSES];
    int n_resp;
    struct expect exp[MAX_RESPONSES];

    /* the server */
    struct sconn *conns;
    unsigned open_conns;
    int next_response; /* handed to the next whole request */

    /* the client */
    struct client *client;
    bool client_closed;
    int started;
    struct answer ans[MAX_RESPONSES];
} H;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* --- the strict reading ---------------------------------------------------- */

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Finds "\r\n" in p[0..n); returns its offset or n. */
static size_t line_end(const char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++)
        if (p[i] == '\r' && p[i + 1] == '\n') return i;
    return n;
}

static void expect_reset(struct expect *e)
{
    free(e->chunked);
    free(e->content_type);
    free(e->location);
    free(e->retry_after);
    memset(e, 0, sizeof *e);
}

static void take(char **slot, const char *v, size_t n)
{
    free(*slot);
    *slot = dup_n(v, n);
}

/* Reads one response from @p[0..@n) (after interim 1xx ones), the peer
 * hanging up after it.  Sets e->known only for a response inside the
 * strict subset described at the top, read in full. */
static void ref_parse(const char *p, size_t n, struct expect *e)
{
    expect_reset(e);
    for (;;) {
        size_t at, len, cl = 0;
        bool have_cl = false, chunked = false;
        int status = 0;

        /* status line: HTTP/1.x DDD reason */
        len = line_end(p, n);
        if (len == n || len < 12 || memcmp(p, "HTTP/1.", 7) != 0 ||
            (p[7] != '0' && p[7] != '1') || p[8] != ' ' || p[12] != ' ')
            return;
        for (int i = 9; i < 12; i++) {
            if (p[i] < '0' || p[i] > '9') return;
            status = status * 10 + (p[i] - '0');
        }
        if (status < 100 || status > 599) return;
        for (size_t i = 13; i < len; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) return;
        e->relay[0] = '\0';
        free(e->content_type);
        free(e->location);
        free(e->retry_after);
        e->content_type = e->location = e->retry_after = NULL;
        at = len + 2;
        /* headers: token ":" OWS value OWS, no control characters */
        for (;;) {
            const char *line = p + at, *v, *vend;
            size_t name_len = 0;

            len = line_end(line, n - at);
            if (len == n - at) return; /* the head is not all there */
            at += len + 2;
            if (len == 0) break;
            while (name_len < len && is_tchar((unsigned char)line[name_len]))
                name_len++;
            if (name_len == 0 || name_len == len || line[name_len] != ':')
                return;
            v = line + name_len + 1;
            vend = line + len;
            for (const char *q = v; q < vend; q++)
                if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
                    return;
            while (v < vend && (*v == ' ' || *v == '\t')) v++;
            while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) vend--;
            if (strncasecmp(line, "content-length", 14) == 0 &&
                name_len == 14) {
                if (have_cl || v == vend || vend - v > 6) return;
                for (const char *q = v; q < vend; q++) {
                    if (*q < '0' || *q > '9') return;
                    cl = cl * 10 + (size_t)(*q - '0');
                }
                have_cl = true;
            } else if (strncasecmp(line, "transfer-encoding", 17) == 0 &&
                       name_len == 17) {
                if (chunked || vend - v != 7 || memcmp(v, "chunked", 7) != 0)
                    return;
                chunked = true;
            } else if (strncasecmp(line, "content-type", 12) == 0 &&
                       name_len == 12) {
                take(&e->content_type, v, (size_t)(vend - v));
            } else if (strncasecmp(line, "location", 8) == 0 &&
                       name_len == 8) {
                take(&e->location, v, (size_t)(vend - v));
            } else if (strncasecmp(line, "retry-after", 11) == 0 &&
                       name_len == 11) {
                take(&e->retry_after, v, (size_t)(vend - v));
            } else if (name_len > 9 && strncasecmp(line, "x-raftkv-", 9) == 0) {
                size_t used = strlen(e->relay);
                int w = snprintf(e->relay + used, sizeof e->relay - used,
                                 "%.*s: %.*s\n", (int)name_len, line,
                                 (int)(vend - v), v);
                if (w < 0 || (size_t)w >= sizeof e->relay - used) return;
            }
        }
        if (have_cl && chunked) return;
        if (status < 200) { /* interim: the final answer follows */
            p += at;
            n -= at;
            continue;
        }
        e->status = status;
        if (status == 204 || status == 304) {
            e->known = true;
            e->exact = at == n;
            return;
        }
        if (have_cl) {
            if (n - at < cl) return;
            e->body = p + at;
            e->body_len = cl;
            e->known = true;
            e->exact = at + cl == n;
            return;
        }
        if (!chunked) { /* until the peer hangs up */
            e->body = p + at;
            e->body_len = n - at;
            e->known = e->exact = true;
            return;
        }
        /* chunks: HEX CRLF DATA CRLF ... "0" CRLF CRLF, nothing else */
        e->chunked = malloc(n + 1);
        FUZZ_CHECK(e->chunked != NULL);
        for (;;) {
            size_t size = 0, digits;
            len = line_end(p + at, n - at);
            if (len == n - at || len == 0 || len > 6) return;
            for (digits = 0; digits < len; digits++) {
                int d = hex_value((unsigned char)p[at + digits]);
                if (d < 0) return;
                size = size * 16 + (size_t)d;
            }
            at += len + 2;
            if (size == 0) {
                if (n - at < 2 || p[at] != '\r' || p[at + 1] != '\n') return;
                e->known = true;
                e->exact = at + 2 == n;
                return;
            }
            if (n - at < size + 2 || p[at + size] != '\r' ||
                p[at + size + 1] != '\n')
                return;
            memcpy(e->chunked + e->body_len, p + at, size);
            e->body_len += size;
            at += size + 2;
        }
    }
}

/* --- the server --------------------------------------------------------------- */

static void sconn_closed(uv_handle_t *h)
{
    struct sconn *s = h->data, **pp;

    for (pp = &H.conns; *pp != s; pp = &(*pp)->next)
        ;
    *pp = s->next;
    free(s->in);
    free(s);
    H.open_conns--;
}

static void sconn_close(struct sconn *s)
{
    if (s->closing) return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->tcp, sconn_closed);
}

static void sconn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct sconn *s = h->data;
    (void)hint;
    if (s->in == NULL) {
        s->in = malloc(REQUEST_IN_MAX);
        FUZZ_CHECK(s->in != NULL);
    }
    *b = uv_buf_init(s->in + s->in_len, (unsigned)(REQUEST_IN_MAX - s->in_len));
}

/* A whole request is in @s->in[0..@len): check how the client wrote it. */
static void request_check(const char *in, size_t head_len)
{
    char want[64];
    size_t lines = 0, first = line_end(in, head_len);
    size_t mlen = strlen(H.method), plen = strlen(H.path);
    size_t expected = 2 + (H.with_body ? 2 : 0); /* Host, User-Agent, ... */

    snprintf(want, sizeof want, "%s /", H.method);
    if (first != mlen + 2 + plen + 9 || memcmp(in, want, mlen + 2) != 0 ||
        memcmp(in + mlen + 2, H.path, plen) != 0 ||
        memcmp(in + mlen + 2 + plen, " HTTP/1.1", 9) != 0)
        fuzz_finding("request-line", "the server read the request line "
                     "\"%.*s\" for %s /%s", (int)(first < 200 ? first : 200),
                     in, H.method, H.path);
    for (size_t i = 0; i + 1 < head_len; i++)
        if (in[i] == '\r' && in[i + 1] == '\n') lines++;
    /* request line + headers + the empty line */
    if (lines != 1 + expected + 1)
        fuzz_finding("request-split", "%zu lines in the request head for "
                     "%s /%s, %zu expected", lines, H.method, H.path,
                     1 + expected + 1);
}

static void sconn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct sconn *s = st->data;
    const char *end;
    size_t head_len, need;
    (void)b;

    if (n < 0) {
        sconn_close(s);
        return;
    }
    s->in_len += (size_t)n;
    end = memmem(s->in, s->in_len, "\r\n\r\n", 4);
    if (end == NULL) {
        FUZZ_CHECK(s->in_len < REQUEST_IN_MAX);
        return;
    }
    head_len = (size_t)(end + 4 - s->in);
    need = head_len + (H.with_body ? strlen(REQUEST_BODY) : 0);
    if (s->in_len < need) return;
    request_check(s->in, head_len);
    if (H.next_response >= H.n_resp || H.next_response >= H.started)
        fuzz_finding("extra-request", "request %d reached the server; %d "
                     "started", H.next_response + 1, H.started);
    memmove(s->in, s->in + need, s->in_len - need);
    s->in_len -= need;
    FUZZ_CHECK(s->n_queued < MAX_RESPONSES);
    s->queued[s->n_queued++] = H.next_response++;
}

static void server_accept(uv_stream_t *l, int status)
{
    struct sconn *s;

    FUZZ_CHECK(status == 0);
    s = calloc(1, sizeof *s);
    FUZZ_CHECK(s != NULL);
    s->response = -1;
    FUZZ_CHECK(uv_tcp_init(&H.loop, &s->tcp) == 0);
    s->tcp.data = s;
    s->next = H.conns;
    H.conns = s;
    H.open_conns++;
    FUZZ_CHECK(uv_accept(l, (uv_stream_t *)&s->tcp) == 0);
    FUZZ_CHECK(uv_read_start((uv_stream_t *)&s->tcp, sconn_alloc,
                             sconn_read) == 0);
}

static void sconn_written(uv_write_t *w, int status)
{
    struct sconn *s = w->data;
    (void)status;
    free(w);
    s->writes--;
}

/* One loop turn of the server: each connection writes its next piece, or
 * hangs up once its last response is out (or the client has gone quiet). */
static void server_turn(uv_idle_t *idle)
{
    (void)idle;
    for (struct sconn *s = H.conns; s != NULL; s = s->next) {
        int i = s->response;
        size_t len, n;

        if (s->closing) continue;
        if (i < 0 || (s->sent == H.resp_len[i] && s->writes == 0 &&
                      H.ans[i].calls > 0)) {
            /* idle, or its answer is in: on to the next request read */
            if (s->n_queued == 0) {
                s->response = -1;
                continue;
            }
            i = s->response = s->queued[0];
            memmove(s->queued, s->queued + 1,
                    (size_t)--s->n_queued * sizeof s->queued[0]);
            s->sent = 0;
            s->quiet = 0;
        }
        len = H.resp_len[i];
        if (s->sent < len) {
            uv_write_t *w = malloc(sizeof *w);
            uv_buf_t buf;
            FUZZ_CHECK(w != NULL);
            n = H.piece == 0 || H.piece > len - s->sent ? len - s->sent
                                                         : H.piece;
            buf = uv_buf_init((char *)H.resp[i] + s->sent, (unsigned)n);
            w->data = s;
            FUZZ_CHECK(uv_write(w, (uv_stream_t *)&s->tcp, &buf, 1,
                                sconn_written) == 0);
            s->writes++;
            s->sent += n;
            continue;
        }
        if (s->writes > 0) continue;
        if (H.hang_up_each || i == H.n_resp - 1 ||
            ++s->quiet > TURNS_BEFORE_HANGUP)
            sconn_close(s);
    }
}

static void server_start(void)
{
    struct sockaddr_in sa;
    struct sockaddr_storage bound;
    int len = sizeof bound;

    FUZZ_CHECK(uv_loop_init(&H.loop) == 0);
    FUZZ_CHECK(uv_tcp_init(&H.loop, &H.listener) == 0);
    FUZZ_CHECK(uv_ip4_addr("127.0.0.1", 0, &sa) == 0);
    FUZZ_CHECK(uv_tcp_bind(&H.listener, (struct sockaddr *)&sa, 0) == 0);
    FUZZ_CHECK(uv_listen((uv_stream_t *)&H.listener, 64, server_accept) == 0);
    FUZZ_CHECK(uv_tcp_getsockname(&H.listener, (struct sockaddr *)&bound,
                                  &len) == 0);
    H.port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    FUZZ_CHECK(uv_idle_init(&H.loop, &H.pump) == 0);
    H.up = true;
}

/* --- the client side ------------------------------------------------------- */

static void answer_free(struct answer *a)
{
    free(a->body);
    free(a->content_type);
    free(a->location);
    free(a->retry_after);
    free(a->relay);
    memset(a, 0, sizeof *a);
}

static char *dup_or_null(const char *s)
{
    return s == NULL ? NULL : dup_n(s, strlen(s));
}

static int send_request(int i);

static void on_answer(void *arg, const struct client_response *res)
{
    int i = (int)(intptr_t)arg;
    struct answer *a = &H.ans[i];

    if (++a->calls > 1)
        fuzz_finding("called-twice", "request %d called back %d times", i + 1,
                     a->calls);
    if (a->calls > 1) return;
    FUZZ_CHECK(res != NULL);
    a->status = res->status;
    if (res->status == 0) {
        if (res->error == NULL || res->error[0] == '\0')
            fuzz_finding("no-error-text", "status 0 without an error text");
        else
            snprintf(a->error, sizeof a->error, "%s", res->error);
        if (strstr(a->error, "timeout") != NULL)
            fuzz_finding("hang", "request %d: %s (the server hung up)", i + 1,
                         a->error);
    } else {
        if (res->status < 200 || res->status > 999)
            fuzz_finding("status", "status %d", res->status);
        if ((res->body == NULL) != (res->body_len == 0))
            fuzz_finding("body-null", "body %p with length %zu",
                         (const void *)res->body, res->body_len);
        if (res->body != NULL && res->body[res->body_len] != '\0')
            fuzz_finding("body-nul", "body of %zu bytes not NUL-terminated",
                         res->body_len);
        if (res->raftkv_headers == NULL)
            fuzz_finding("relay-null", "raftkv_headers is NULL");
        a->body_null = res->body == NULL;
        a->body_len = res->body_len;
        if (res->body != NULL) a->body = dup_n(res->body, res->body_len);
        a->content_type = dup_or_null(res->content_type);
        a->location = dup_or_null(res->location);
        a->retry_after = dup_or_null(res->retry_after);
        a->relay = dup_or_null(res->raftkv_headers);
    }
    if (H.show)
        fprintf(stderr, "answer %d: status %d%s%s, %zu body bytes\n", i + 1,
                res->status, res->status ? "" : ", ",
                res->status ? "" : a->error, res->body_len);
    /* The same path was taken for the first request. */
    if (i + 1 < H.n_resp) FUZZ_CHECK(send_request(i + 1) == 0);
}

/* Starts request @i; returns client_request's result. */
static int send_request(int i)
{
    char *url;
    size_t len = strlen(H.path) + 64;
    int rv;

    url = malloc(len);
    FUZZ_CHECK(url != NULL);
    snprintf(url, len, "http://127.0.0.1:%d/%s", H.port, H.path);
    rv = client_request(H.client, H.method, url,
                        H.with_body ? REQUEST_BODY : NULL,
                        H.with_body ? strlen(REQUEST_BODY) : 0,
                        H.with_body ? "application/json" : NULL,
                        CLIENT_TIMEOUT_MS, on_answer, (void *)(intptr_t)i,
                        NULL);
    free(url);
    if (rv == 0) H.started++;
    return rv;
}

static bool same_text(const char *a, const char *b)
{
    if (a == NULL || b == NULL) return a == b;
    return strcmp(a, b) == 0;
}

/* The client's answer against the strict reading of what was sent. */
static void answer_check(int i)
{
    const struct expect *e = &H.exp[i];
    const struct answer *a = &H.ans[i];
    const char *body = e->chunked ? e->chunked : e->body;

    if (!e->known) return;
    if (a->status == 0)
        fuzz_finding("refused", "response %d, complete and well formed "
                     "(status %d, %zu body bytes), gave: %s", i + 1,
                     e->status, e->body_len, a->error);
    if (a->status != e->status)
        fuzz_finding("status", "response %d: status %d read as %d", i + 1,
                     e->status, a->status);
    if (a->body_len != e->body_len ||
        (e->body_len > 0 && memcmp(a->body, body, e->body_len) != 0))
        fuzz_finding("body", "response %d: a %zu-byte body read as %zu bytes"
                     " that differ", i + 1, e->body_len, a->body_len);
    if (!same_text(a->content_type, e->content_type) ||
        !same_text(a->location, e->location) ||
        !same_text(a->retry_after, e->retry_after))
        fuzz_finding("headers", "response %d: Content-Type/Location/"
                     "Retry-After read as \"%s\" \"%s\" \"%s\", sent \"%s\" "
                     "\"%s\" \"%s\"", i + 1,
                     a->content_type ? a->content_type : "(none)",
                     a->location ? a->location : "(none)",
                     a->retry_after ? a->retry_after : "(none)",
                     e->content_type ? e->content_type : "(none)",
                     e->location ? e->location : "(none)",
                     e->retry_after ? e->retry_after : "(none)");
    if (!same_text(a->relay, e->relay))
        fuzz_finding("relay-headers", "response %d: X-Raftkv-* read as "
                     "\"%s\", sent \"%s\"", i + 1, a->relay, e->relay);
}

static void on_client_closed(void *arg)
{
    (void)arg;
    H.client_closed = true;
}

/* Runs the loop until @done() or the wall-clock deadline. */
static void run_until(bool (*done)(void), const char *what)
{
    uint64_t deadline = now_ms() + HANG_MS;

    while (!done()) {
        uv_run(&H.loop, UV_RUN_ONCE);
        if (now_ms() > deadline)
            fuzz_fail("hang: %s not done after %d ms", what, HANG_MS);
    }
}

static bool all_answered(void)
{
    for (int i = 0; i < H.started; i++)
        if (H.ans[i].calls == 0) return false;
    return H.started == H.n_resp;
}

static bool all_closed(void)
{
    return H.client_closed && H.open_conns == 0;
}

/* --- libFuzzer ------------------------------------------------------------- */

static void stop_server(void)
{
    if (!H.up) return;
    uv_idle_stop(&H.pump);
    uv_close((uv_handle_t *)&H.pump, NULL);
    uv_close((uv_handle_t *)&H.listener, NULL);
    uv_run(&H.loop, UV_RUN_DEFAULT);
    uv_loop_close(&H.loop);
    H.up = false;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_quiet_logs();
    H.show = getenv("RAFTKV_FUZZ_SHOW") != NULL;
    server_start();
    atexit(stop_server);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *rest, *nl, *sep;
    size_t rest_len;
    bool refuse = false;
    int rv;

    if (size < 2) return 0;
    H.method = methods[data[0] & 3];
    H.with_body = (data[0] & 3) == 1 || (data[0] & 3) == 2;
    H.hang_up_each = (data[0] & 4) != 0;
    H.piece = data[1];
    rest = data + 2;
    rest_len = size - 2;
    nl = memchr(rest, '\n', rest_len);
    H.path = dup_n((const char *)rest, nl ? (size_t)(nl - rest) : rest_len);
    rest_len = nl ? rest_len - (size_t)(nl + 1 - rest) : 0;
    rest = nl ? nl + 1 : rest + (size - 2);
    H.n_resp = 1;
    H.resp[0] = rest;
    H.resp_len[0] = rest_len;
    sep = memmem(rest, rest_len, SEPARATOR, strlen(SEPARATOR));
    if (sep != NULL) {
        H.resp_len[0] = (size_t)(sep - rest);
        H.resp[1] = sep + strlen(SEPARATOR);
        H.resp_len[1] = rest_len - H.resp_len[0] - strlen(SEPARATOR);
        H.n_resp = 2;
    }
    for (int i = 0; i < H.n_resp; i++)
        ref_parse((const char *)H.resp[i], H.resp_len[i], &H.exp[i]);
    /* A second response is read the strict way only if the first one ends
     * exactly where its framing says, on a connection kept for it: bytes
     * after it would be read as the start of the second. */
    if (H.n_resp == 2 && (H.hang_up_each || !H.exp[0].exact))
        H.exp[1].known = false;

    for (const char *p = H.path; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == ' ') refuse = true;

    H.next_response = 0;
    H.started = 0;
    H.client_closed = false;
    FUZZ_CHECK(client_init(&H.client, &H.loop) == 0);
    FUZZ_CHECK(uv_idle_start(&H.pump, server_turn) == 0);

    rv = send_request(0);
    if (rv != 0) {
        if (!refuse || rv != -EINVAL)
            fuzz_finding("path-refused", "client_request refused /%s: %s",
                         H.path, strerror(-rv));
    } else {
        if (refuse)
            fuzz_finding("path-accepted", "client_request took a path with a "
                         "control character or a space");
        run_until(all_answered, "the exchange");
        for (int i = 0; i < H.n_resp; i++) answer_check(i);
    }

    client_close(H.client, on_client_closed, NULL);
    for (struct sconn *s = H.conns; s != NULL; s = s->next) sconn_close(s);
    run_until(all_closed, "closing the client and the server's connections");
    uv_idle_stop(&H.pump);
    H.client = NULL;
    for (int i = 0; i < MAX_RESPONSES; i++) {
        answer_free(&H.ans[i]);
        expect_reset(&H.exp[i]);
    }
    free(H.path);
    H.path = NULL;
    return 0;
}
