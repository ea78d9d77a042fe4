/* test_http.c - the HTTP server seen from a raw TCP client.
 *
 * Everything runs on one thread: the server and the test's clients share a
 * libuv loop.  Clients are plain sockets watched with uv_poll, so a test can
 * write bytes, then run the loop until a condition holds (a response has
 * arrived, a callback ran), bounded by a deadline instead of sleeping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "http.h"
#include "log.h"

#define DEADLINE_MS 5000
#define MAX_CLIENTS 4
#define MAX_PARAMS 10

/* --- Fixture ------------------------------------------------------------ */

struct client
{
    struct fixture *f;
    int fd;
    uv_poll_t poll;
    bool open;
    bool eof;
    char buf[256 * 1024];
    size_t len;
};

struct response
{
    int status;
    char head[8192];
    char body[64 * 1024];
    size_t body_len;
};

/* What a test's deferred request looks like from the API layer's side: it
 * keeps the pointer until it replies or is told the request is gone. */
struct pending
{
    struct http_req *req;
    int released;
    int late_replies;
    uv_timer_t timer;
    bool timer_fired;
};

struct param
{
    const char *name;
    int rc;
    char value[256];
    size_t len;
};

struct fixture
{
    uv_loop_t loop;
    uv_timer_t deadline;
    bool expired;

    struct http_options opts;
    struct http_server *srv;
    int port;
    void (*handle)(struct fixture *f, struct http_req *req);
    int requests;
    char order[64]; /* first letter of each handled path, in order */

    struct client clients[MAX_CLIENTS];
    int nclients;

    struct pending pend;
    int stopped;

    /* What handlers saw. */
    char method[16];
    char path[128];
    char query[256];
    bool query_null;
    char body[1024];
    size_t body_len;
    char trace[64];
    char host[64];
    bool no_such_header;
    struct param params[MAX_PARAMS];
};

static void on_deadline(uv_timer_t *t)
{
    struct fixture *f = t->data;
    f->expired = true;
}

/* Runs the loop until @cond holds, failing the test after DEADLINE_MS. */
#define RUN_UNTIL(f, cond)                                                    \
    do {                                                                      \
        (f)->expired = false;                                                 \
        uv_timer_start(&(f)->deadline, on_deadline, DEADLINE_MS, 0);          \
        while (!(cond) && !(f)->expired)                                      \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                  \
        uv_timer_stop(&(f)->deadline);                                        \
        assert_true(cond);                                                    \
    } while (0)

static void on_request(struct http_req *req, void *data)
{
    struct fixture *f = data;
    size_t len;
    const char *path = http_path(req, &len);

    if (f->requests < (int)sizeof f->order - 1)
        f->order[f->requests] = len > 1 ? path[1] : '/';
    f->requests++;
    f->handle(f, req);
}

static void start_server(struct fixture *f)
{
    assert_int_equal(http_start(&f->srv, &f->loop, &f->opts, on_request, f), 0);
    f->port = http_port(f->srv);
    assert_true(f->port > 0);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->deadline);
    f->deadline.data = f;
    uv_timer_init(&f->loop, &f->pend.timer);
    f->pend.timer.data = f;
    f->opts = (struct http_options){.host = "127.0.0.1",
                                    .port = 0,
                                    .max_body = 1 << 20,
                                    .max_header_bytes = 16 << 10};
    *state = f;
    return 0;
}

static void client_close(struct client *c);

static void on_stopped(void *arg)
{
    struct fixture *f = arg;
    f->stopped++;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    if (f->srv != NULL) {
        http_stop(f->srv, on_stopped, f);
        f->srv = NULL;
    }
    for (int i = 0; i < f->nclients; i++)
        client_close(&f->clients[i]);
    uv_close((uv_handle_t *)&f->deadline, NULL);
    uv_close((uv_handle_t *)&f->pend.timer, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* --- Clients --------------------------------------------------------------- */

static void client_on_readable(uv_poll_t *poll, int status, int events)
{
    struct client *c = poll->data;

    (void)events;
    for (;;) {
        ssize_t n;
        if (status < 0 || c->len == sizeof c->buf) {
            n = -1;
            errno = EIO;
        } else {
            n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        }
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* EOF or error: the server is done with us.  Stop polling so that
         * this client does not keep the loop alive. */
        c->eof = true;
        uv_poll_stop(poll);
        return;
    }
}

/* @rcvbuf > 0 pins the receive buffer (before connect, so the kernel does
 * not grow it). */
static struct client *client_connect_ex(struct fixture *f, int rcvbuf)
{
    struct client *c;
    struct sockaddr_in addr;

    assert_true(f->nclients < MAX_CLIENTS);
    c = &f->clients[f->nclients++];
    memset(c, 0, sizeof *c);
    c->f = f;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    if (rcvbuf > 0)
        assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
                                    sizeof rcvbuf),
                         0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)f->port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* The kernel completes the handshake from the listen backlog, so a
     * blocking connect returns without the loop running. */
    assert_int_equal(connect(c->fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(uv_poll_init(&f->loop, &c->poll, c->fd), 0);
    c->poll.data = c;
    assert_int_equal(uv_poll_start(&c->poll, UV_READABLE, client_on_readable), 0);
    c->open = true;
    return c;
}

static struct client *client_connect(struct fixture *f)
{
    return client_connect_ex(f, 0);
}

static void client_send(struct client *c, const char *data, size_t len)
{
    /* Requests here are small: the socket buffer takes them whole. */
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    assert_int_equal(n, (ssize_t)len);
}

static void client_sends(struct client *c, const char *data)
{
    client_send(c, data, strlen(data));
}

static void client_close(struct client *c)
{
    if (!c->open)
        return;
    c->open = false;
    uv_close((uv_handle_t *)&c->poll, NULL); /* drops the fd from epoll */
    close(c->fd);
}

/* Length of the first complete response in the client's buffer, or 0. */
static size_t response_size(const struct client *c, bool head_request)
{
    const char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    size_t hlen, clen = 0;
    const char *cl;

    if (end == NULL)
        return 0;
    hlen = (size_t)(end - c->buf) + 4;
    cl = memmem(c->buf, hlen, "\r\nContent-Length: ", 18);
    if (cl != NULL && !head_request)
        clen = strtoul(cl + 18, NULL, 10);
    return c->len >= hlen + clen ? hlen + clen : 0;
}

/* Takes the next response off @c, waiting for it.  Every response must
 * carry Content-Length (204 and 304 aside): that is part of the contract. */
static void read_response_ex(struct client *c, struct response *r,
                             bool head_request)
{
    struct fixture *f = c->f;
    size_t size, hlen;
    const char *end;

    RUN_UNTIL(f, response_size(c, head_request) > 0 || c->eof);
    size = response_size(c, head_request);
    assert_true(size > 0);
    end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    hlen = (size_t)(end - c->buf) + 4;
    assert_true(hlen < sizeof r->head);
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
    if (r->status != 204 && r->status != 304)
        assert_non_null(strstr(r->head, "\r\nContent-Length: "));
    r->body_len = size - hlen;
    assert_true(r->body_len < sizeof r->body);
    memcpy(r->body, c->buf + hlen, r->body_len);
    r->body[r->body_len] = '\0';
    memmove(c->buf, c->buf + size, c->len - size);
    c->len -= size;
}

static void read_response(struct client *c, struct response *r)
{
    read_response_ex(c, r, false);
}

/* Value of header @name in @r (case-insensitive), copied into @out. */
static const char *resp_header(const struct response *r, const char *name,
                               char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p = strstr(r->head, "\r\n");

    while (p != NULL && p[2] != '\r') {
        const char *line = p + 2, *eol = strstr(line, "\r\n");
        if ((size_t)(eol - line) > nlen && line[nlen] == ':' &&
            strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(eol - v), v);
            return out;
        }
        p = eol;
    }
    return NULL;
}

static void assert_header(const struct response *r, const char *name,
                          const char *want)
{
    char got[256];
    const char *v = resp_header(r, name, got, sizeof got);
    if (v == NULL)
        fail_msg("header %s missing in:\n%s", name, r->head);
    assert_string_equal(v, want);
}

/* The response is {"error": "<want>"} served as JSON. */
static void assert_json_error(const struct response *r, int status,
                              const char *want)
{
    json_error_t err;
    json_t *doc;

    assert_int_equal(r->status, status);
    assert_header(r, "Content-Type", "application/json");
    doc = json_loadb(r->body, r->body_len, 0, &err);
    if (doc == NULL)
        fail_msg("not JSON (%s): %s", err.text, r->body);
    assert_string_equal(json_string_value(json_object_get(doc, "error")), want);
    assert_int_equal(json_object_size(doc), 1);
    json_decref(doc);
}

/* --- Handlers ---------------------------------------------------------------- */

static void copy_view(char *dst, size_t cap, const char *src, size_t len)
{
    snprintf(dst, cap, "%.*s", (int)len, src ? src : "");
}

static void handle_inspect(struct fixture *f, struct http_req *req)
{
    size_t len;
    const char *v;

    v = http_method(req, &len);
    copy_view(f->method, sizeof f->method, v, len);
    v = http_path(req, &len);
    copy_view(f->path, sizeof f->path, v, len);
    v = http_query(req, &len);
    f->query_null = v == NULL;
    copy_view(f->query, sizeof f->query, v, len);
    v = http_body(req, &f->body_len);
    copy_view(f->body, sizeof f->body, v, f->body_len);
    v = http_header(req, "x-TRACE", &len);
    copy_view(f->trace, sizeof f->trace, v, len);
    v = http_header(req, "Host", &len);
    copy_view(f->host, sizeof f->host, v, len);
    f->no_such_header = http_header(req, "x-absent", &len) == NULL && len == 0;
    for (int i = 0; i < MAX_PARAMS && f->params[i].name != NULL; i++) {
        struct param *p = &f->params[i];
        char *value = NULL;
        p->rc = http_query_param(req, p->name, &value, &p->len);
        if (p->rc == 0)
            copy_view(p->value, sizeof p->value, value, p->len);
    }

    if (http_method_is(req, "HEAD")) {
        http_reply(req, 200, "text/plain", "hello", 5);
        return;
    }
    if (http_method_is(req, "POST") && http_path_is(req, "/kv")) {
        char out[1200];
        int n = snprintf(out, sizeof out, "{\"echo\":%.*s}", (int)f->body_len,
                         f->body);
        http_add_header(req, "X-Raft-Index", "42");
        http_add_header(req, "X-Evil", "a\r\nInjected: 1");
        http_add_header(req, "Bad Name", "1");
        http_add_header(req, "", "1");
        http_add_header(req, "Content-LENGTH", "1");
        http_add_header(req, "Cache-Control", "no-store"); /* an h2o token */
        http_reply_json(req, 201, out, (size_t)n);
        return;
    }
    http_reply_json(req, 200, "{\"ok\":true}", 11);
}

static void on_release(void *arg)
{
    struct pending *p = arg;
    p->req = NULL;
    p->released++;
}

/* "Commit" time: answer the pending request, unless it is gone. */
static void on_commit(uv_timer_t *t)
{
    struct fixture *f = t->data;
    struct pending *p = &f->pend;

    p->timer_fired = true;
    if (p->req == NULL)
        return;
    p->late_replies++;
    http_reply_json(p->req, 200, "{\"committed\":true}", 18);
}

/* /hold waits for a commit that the test triggers (or never does); the
 * other paths answer at once with their own name. */
static void handle_deferred(struct fixture *f, struct http_req *req)
{
    char name[64];
    size_t len;
    const char *path = http_path(req, &len);

    if (http_path_is(req, "/hold")) {
        f->pend.req = req;
        http_req_on_release(req, on_release, &f->pend);
        return;
    }
    if (http_path_is(req, "/slow")) {
        f->pend.req = req;
        http_req_on_release(req, on_release, &f->pend);
        uv_timer_start(&f->pend.timer, on_commit, 30, 0);
        return;
    }
    copy_view(name, sizeof name, path + 1, len - 1);
    {
        size_t blen;
        const char *body = http_body(req, &blen);
        char out[256];
        int n = snprintf(out, sizeof out, "%s%s%.*s", name, blen ? ":" : "",
                         (int)blen, body);
        http_reply(req, 200, "text/plain", out, (size_t)n);
    }
}

/* --- Tests ------------------------------------------------------------------- */

static void test_url_decode(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(http_url_decode("plain", 5, out, false), 5);
    assert_string_equal(out, "plain");
    assert_int_equal(http_url_decode("a%20b%2Fc", 9, out, false), 5);
    assert_string_equal(out, "a b/c");
    assert_int_equal(http_url_decode("%e2%82%AC", 9, out, false), 3);
    assert_string_equal(out, "\xe2\x82\xac");
    assert_int_equal(http_url_decode("a+b", 3, out, true), 3);
    assert_string_equal(out, "a b");
    assert_int_equal(http_url_decode("a+b", 3, out, false), 3);
    assert_string_equal(out, "a+b");
    assert_int_equal(http_url_decode("%2B", 3, out, true), 1);
    assert_string_equal(out, "+");
    assert_int_equal(http_url_decode("", 0, out, true), 0);
    assert_string_equal(out, "");
    /* "%00" decodes to a NUL byte inside the value. */
    assert_int_equal(http_url_decode("a%00b", 5, out, false), 3);
    assert_memory_equal(out, "a\0b", 4);
    /* Only the first @len bytes count, even if more follow. */
    assert_int_equal(http_url_decode("ab%41", 2, out, false), 2);
    assert_string_equal(out, "ab");

    assert_int_equal(http_url_decode("%zz", 3, out, false), -1);
    assert_int_equal(http_url_decode("%4", 2, out, false), -1);
    assert_int_equal(http_url_decode("x%", 2, out, false), -1);
    assert_int_equal(http_url_decode("%4g", 3, out, false), -1);
    assert_int_equal(http_url_decode("ab%41", 4, out, false), -1);
}

static void test_get_with_query(void **state)
{
    struct fixture *f = *state;
    struct client *c;
    struct response r;
    const char *names[] = {"key", "plus", "bare", "empty", "bad", "missing",
                           "a b", "dup", "ke", NULL};

    f->handle = handle_inspect;
    for (int i = 0; names[i] != NULL; i++)
        f->params[i].name = names[i];
    start_server(f);

    c = client_connect(f);
    client_sends(c, "GET /kv/some%20key?key=caf%C3%A9%20au+lait&plus=1+2&bare"
                    "&empty=&bad=%zz&a+b=sp%41ce&&dup=first&dup=second HTTP/1.1\r\n"
                    "Host: localhost:8080\r\n"
                    "X-Trace: abc123\r\n"
                    "\r\n");
    read_response(c, &r);

    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "application/json");
    assert_header(&r, "Content-Length", "11");
    assert_string_equal(r.body, "{\"ok\":true}");

    assert_string_equal(f->method, "GET");
    assert_string_equal(f->path, "/kv/some%20key"); /* raw, as sent */
    assert_false(f->query_null);
    assert_string_equal(f->query, "key=caf%C3%A9%20au+lait&plus=1+2&bare&empty="
                                  "&bad=%zz&a+b=sp%41ce&&dup=first&dup=second");
    assert_int_equal(f->body_len, 0);
    assert_string_equal(f->trace, "abc123");
    assert_string_equal(f->host, "localhost:8080");
    assert_true(f->no_such_header);

    assert_int_equal(f->params[0].rc, 0); /* key */
    assert_string_equal(f->params[0].value, "caf\xc3\xa9 au lait");
    assert_int_equal(f->params[0].len, strlen("caf\xc3\xa9 au lait"));
    assert_int_equal(f->params[1].rc, 0); /* plus */
    assert_string_equal(f->params[1].value, "1 2");
    assert_int_equal(f->params[2].rc, 0); /* bare: present, empty */
    assert_int_equal(f->params[2].len, 0);
    assert_string_equal(f->params[2].value, "");
    assert_int_equal(f->params[3].rc, 0); /* empty */
    assert_int_equal(f->params[3].len, 0);
    assert_int_equal(f->params[4].rc, -EINVAL); /* bad */
    assert_int_equal(f->params[5].rc, -ENOENT); /* missing */
    assert_int_equal(f->params[6].rc, 0);       /* "a b", key decoded too */
    assert_string_equal(f->params[6].value, "spAce");
    assert_int_equal(f->params[7].rc, 0); /* dup: first wins */
    assert_string_equal(f->params[7].value, "first");
    assert_int_equal(f->params[8].rc, -ENOENT); /* "ke" is no prefix match */

    /* Same connection (keep-alive): no query at all, and a HEAD request
     * that gets the length of the body it does not get. */
    client_sends(c, "HEAD /plain HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response_ex(c, &r, true);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Length", "5");
    assert_int_equal(r.body_len, 0);
    assert_true(f->query_null);
    assert_string_equal(f->query, "");
    assert_string_equal(f->path, "/plain");
    assert_int_equal(f->params[0].rc, -ENOENT);

    /* "/?" has an empty query, which is not an absent one. */
    client_sends(c, "GET /? HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(c, &r);
    assert_false(f->query_null);
    assert_string_equal(f->query, "");
    assert_int_equal(f->requests, 3);
}

static void test_post_json(void **state)
{
    struct fixture *f = *state;
    struct client *c;
    struct response r;
    static const char body[] = "{\"value\":\"hello \\\"world\\\"\"}";
    char req[512], got[64];

    f->handle = handle_inspect;
    start_server(f);
    c = client_connect(f);

    snprintf(req, sizeof req,
             "POST /kv HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             sizeof body - 1, body);
    client_sends(c, req);
    read_response(c, &r);

    assert_string_equal(f->method, "POST");
    assert_int_equal(f->body_len, sizeof body - 1);
    assert_string_equal(f->body, body);
    assert_int_equal(r.status, 201);
    assert_header(&r, "Content-Type", "application/json");
    assert_header(&r, "X-Raft-Index", "42");
    /* A value with CR/LF is refused rather than splitting the response. */
    assert_null(resp_header(&r, "X-Evil", got, sizeof got));
    assert_null(resp_header(&r, "Injected", got, sizeof got));
    /* Names go out as the handler wrote them; bad or framing names do not. */
    assert_non_null(strstr(r.head, "\r\nX-Raft-Index: 42\r\n"));
    assert_non_null(strstr(r.head, "\r\nCache-Control: no-store\r\n"));
    assert_null(resp_header(&r, "Bad Name", got, sizeof got));
    assert_null(strstr(r.head, "\r\n: 1\r\n"));
    assert_null(strstr(r.head, "Content-LENGTH"));
    {
        char len[32];
        const char *first = strstr(r.head, "Content-Length:");
        snprintf(len, sizeof len, "%zu", r.body_len);
        assert_header(&r, "Content-Length", len);
        assert_null(strstr(first + 1, "Content-Length:"));
    }
    /* No Server header advertising the HTTP library's version. */
    assert_null(resp_header(&r, "Server", got, sizeof got));
    {
        json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
        assert_non_null(doc);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(doc, "echo"), "value")),
            "hello \"world\"");
        json_decref(doc);
    }

    /* A chunked body arrives buffered the same way. */
    client_sends(c, "POST /kv HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                    "\r\n6\r\n{\"a\":1\r\n1\r\n}\r\n0\r\n\r\n");
    read_response(c, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(f->body, "{\"a\":1}");
    assert_string_equal(r.body, "{\"echo\":{\"a\":1}}");
}

static void test_deferred_reply_from_timer(void **state)
{
    struct fixture *f = *state;
    struct client *c;
    struct response r;

    f->handle = handle_deferred;
    start_server(f);
    c = client_connect(f);

    client_sends(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(f, f->pend.req != NULL);
    assert_int_equal(c->len, 0); /* nothing answered yet */

    read_response(c, &r); /* the timer answers 30 ms later */
    assert_true(f->pend.timer_fired);
    assert_int_equal(f->pend.late_replies, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"committed\":true}");
    RUN_UNTIL(f, f->pend.released == 1);
    assert_null(f->pend.req);

    /* The connection is still usable. */
    client_sends(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(c, &r);
    assert_string_equal(r.body, "next");
    assert_int_equal(f->pend.released, 1);
}

static void test_client_disconnects_while_pending(void **state)
{
    struct fixture *f = *state;
    struct client *c;
    struct response r;

    f->handle = handle_deferred;
    start_server(f);
    c = client_connect(f);
    client_sends(c, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(f, f->pend.req != NULL);

    /* The client gives up before the "commit" happens. */
    client_close(c);
    RUN_UNTIL(f, f->pend.released == 1);
    assert_null(f->pend.req);

    /* The commit comes later; the API layer knows not to answer. */
    uv_timer_start(&f->pend.timer, on_commit, 10, 0);
    RUN_UNTIL(f, f->pend.timer_fired);
    assert_int_equal(f->pend.late_replies, 0);
    assert_int_equal(f->pend.released, 1);

    /* The server carries on. */
    c = client_connect(f);
    client_sends(c, "GET /alive HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(c, &r);
    assert_string_equal(r.body, "alive");
}

static void test_body_over_limit(void **state)
{
    struct fixture *f = *state;
    struct client *c;
    struct response r;
    static const char *const too_large = "request body too large (limit 16 bytes)";

    f->handle = handle_deferred;
    f->opts.max_body = 16;
    start_server(f);

    /* One byte over: refused with JSON, the connection stays open... */
    c = client_connect(f);
    client_sends(c, "POST /put HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n"
                    "0123456789abcdefX");
    read_response(c, &r);
    assert_json_error(&r, 413, too_large);
    /* ...and exactly at the limit is fine. */
    client_sends(c, "POST /put HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n"
                    "0123456789abcdef");
    read_response(c, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "put:0123456789abcdef");
    assert_int_equal(f->requests, 1);

    /* A declared 10 GB body is refused before a byte of it is read, and the
     * connection is closed since the body would follow. */
    c = client_connect(f);
    client_sends(c, "POST /put HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n");
    read_response(c, &r);
    assert_json_error(&r, 413, too_large);
    assert_header(&r, "Connection", "close");
    RUN_UNTIL(f, c->eof);

    /* A chunked body is cut off as soon as it crosses the limit. */
    c = client_connect(f);
    client_sends(c, "POST /put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "11\r\n0123456789abcdefX\r\n0\r\n\r\n");
    read_response(c, &r);
    assert_json_error(&r, 413, too_large);

    /* Broken framing is h2o's error too, and comes out as JSON as well. */
    c = client_connect(f);
    client_sends(c, "POST /put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "zz\r\n");
    read_response(c, &r);
    assert_json_error(&r, 400, "broken chunked-encoding");
    assert_int_equal(f->requests, 1);
}

static void test_headers_over_limit(void **state)
{
    struct fixture *f = *state;
    struct client *c;
    struct response r;
    char req[1024], big[301];

    f->handle = handle_deferred;
    f->opts.max_header_bytes = 256;
    start_server(f);
    c = client_connect(f);

    memset(big, 'a', 300);
    big[300] = '\0';
    snprintf(req, sizeof req, "GET /h HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", big);
    client_sends(c, req);
    read_response(c, &r);
    assert_json_error(&r, 431, "request headers too large (310 bytes, limit 256)");
    assert_int_equal(f->requests, 0);

    client_sends(c, "GET /small HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(c, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "small");
}

static void test_malformed_request_line(void **state)
{
    struct fixture *f = *state;
    struct client *c;
    struct response r;

    f->handle = handle_deferred;
    start_server(f);

    c = client_connect(f);
    client_sends(c, "THIS IS NOT HTTP\r\n\r\n");
    read_response(c, &r);
    assert_int_equal(r.status, 400);
    RUN_UNTIL(f, c->eof);
    assert_int_equal(f->requests, 0);

    c = client_connect(f);
    client_sends(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(c, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "next");
}

static void test_pipelined_requests(void **state)
{
    struct fixture *f = *state;
    struct client *c;
    struct response r;

    f->handle = handle_deferred;
    start_server(f);
    c = client_connect(f);

    /* Three requests in one write; the first is answered late, yet the
     * answers come back in order and the later requests wait their turn. */
    client_sends(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
                    "POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
    RUN_UNTIL(f, f->requests == 1);
    read_response(c, &r);
    assert_string_equal(r.body, "{\"committed\":true}");
    read_response(c, &r);
    assert_string_equal(r.body, "fast");
    read_response(c, &r);
    assert_string_equal(r.body, "post:body");
    assert_string_equal(f->order, "sfp");
    assert_int_equal(f->pend.released, 1);
}

static void test_stop_with_open_connections(void **state)
{
    struct fixture *f = *state;
    struct client *idle, *waiting, *partial;
    struct response r;

    f->handle = handle_deferred;
    start_server(f);

    /* One connection in the middle of sending its request (connected
     * first, so the server has accepted it by the time it sees the others)... */
    partial = client_connect(f);
    client_sends(partial, "GET /never HTTP/1.1\r\nHo");
    /* ...a keep-alive connection that has been served and sits idle... */
    idle = client_connect(f);
    client_sends(idle, "GET /done HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(idle, &r);
    assert_int_equal(r.status, 200);
    /* ...and one whose request waits for a commit that never comes. */
    waiting = client_connect(f);
    client_sends(waiting, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(f, f->pend.req != NULL);
    assert_int_equal(f->requests, 2);

    http_stop(f->srv, on_stopped, f);
    f->srv = NULL;

    /* The waiting request is answered and released; everyone is hung up on;
     * then the server is gone. */
    read_response(waiting, &r);
    assert_json_error(&r, 503, "server is shutting down");
    assert_header(&r, "Connection", "close");
    assert_header(&r, "Retry-After", "1"); /* docs/api.md promises it */
    RUN_UNTIL(f, f->stopped == 1 && idle->eof && waiting->eof && partial->eof);
    assert_int_equal(f->pend.released, 1);
    assert_null(f->pend.req);
    assert_int_equal(idle->len, 0);
    assert_int_equal(partial->len, 0);

    /* Nothing of the server is left on the loop: with the clients at EOF
     * (their polls stopped), the loop has nothing to wait for. */
    assert_int_equal(uv_loop_alive(&f->loop), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->stopped, 1);
}

#define BIG_BODY (16u << 20)

static void handle_big(struct fixture *f, struct http_req *req)
{
    char *big = malloc(BIG_BODY);

    (void)f;
    assert_non_null(big);
    memset(big, 'x', BIG_BODY);
    http_reply(req, 200, "application/octet-stream", big, BIG_BODY);
    free(big);
}

static void test_stop_does_not_wait_for_a_stalled_reader(void **state)
{
    struct fixture *f = *state;
    struct client *c;

    f->handle = handle_big;
    start_server(f);

    /* A client asks for far more than the socket buffers hold and then
     * stops reading, so the server's write can never finish. */
    c = client_connect_ex(f, 4096);
    uv_poll_stop(&c->poll);
    client_sends(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    RUN_UNTIL(f, f->requests == 1);

    /* Stopping still completes: after a grace period the connection is
     * shut down under the stuck write. */
    http_stop(f->srv, on_stopped, f);
    f->srv = NULL;
    RUN_UNTIL(f, f->stopped == 1);
    assert_int_equal(uv_loop_alive(&f->loop), 0);
}

static void test_stop_when_idle_and_start_errors(void **state)
{
    struct fixture *f = *state;
    struct http_server *other = (void *)1;
    struct http_options opts = f->opts;

    f->handle = handle_deferred;
    start_server(f);

    opts.port = f->port;
    assert_int_equal(http_start(&other, &f->loop, &opts, on_request, f),
                     UV_EADDRINUSE);
    assert_null(other);
    opts.host = "localhost"; /* not an IPv4 literal */
    assert_int_equal(http_start(&other, &f->loop, &opts, on_request, f),
                     UV_EINVAL);
    assert_null(other);

    /* Failed starts left nothing behind, and a stop with no connections
     * finishes on its own. */
    http_stop(f->srv, on_stopped, f);
    f->srv = NULL;
    RUN_UNTIL(f, f->stopped == 1);
    assert_int_equal(uv_loop_alive(&f->loop), 0);
}

static void handle_error_reply(struct fixture *f, struct http_req *req)
{
    (void)f;
    if (http_path_is(req, "/long")) {
        char key[600];
        memset(key, 'k', sizeof key - 1);
        key[sizeof key - 1] = '\0';
        http_reply_error(req, 404, "no such key: %s", key);
        return;
    }
    http_reply_error(req, 409, "key \"%s\" has\\ a\nnewline,\x01 bad \xff%s", "q",
                     " utf-8 and \xc3\xa9");
    /* A second answer is refused, not sent. */
    http_reply(req, 200, "text/plain", "again", 5);
}

static void test_reply_error_escapes_json(void **state)
{
    struct fixture *f = *state;
    struct client *c;
    struct response r;
    char want[600];

    f->handle = handle_error_reply;
    start_server(f);
    c = client_connect(f);

    client_sends(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(c, &r);
    assert_json_error(&r, 409, "key \"q\" has\\ a\nnewline,\x01 bad \xef\xbf\xbd"
                               " utf-8 and \xc3\xa9");

    client_sends(c, "GET /long HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(c, &r);
    memset(want, 'k', 599);
    want[599] = '\0';
    {
        char msg[sizeof "no such key: " + sizeof want];
        snprintf(msg, sizeof msg, "no such key: %s", want);
        assert_json_error(&r, 404, msg);
    }
    /* Nothing else arrived: the second reply was dropped. */
    client_sends(c, "GET /y HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(c, &r);
    assert_int_equal(r.status, 409);
    assert_int_equal(c->len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_decode),
        cmocka_unit_test_setup_teardown(test_get_with_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_reply_from_timer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_client_disconnects_while_pending,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_request_line, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_open_connections, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_stop_does_not_wait_for_a_stalled_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_when_idle_and_start_errors,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_error_escapes_json, setup,
                                        teardown),
    };

    log_set_level(LOG_WARN);
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
