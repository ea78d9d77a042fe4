/* client.c - outbound HTTP requests, libcurl's multi interface on libuv.
 *
 * The node is single-threaded around one libuv loop: Raft, the HTTP server
 * and timers all run there.  Outbound requests (join, leader forwarding) must
 * not block that loop, and their results must arrive on the same thread so
 * that callers touch node state without locks.  libcurl's "multi socket" API
 * is made for exactly this: libcurl tells us which sockets it wants watched
 * (CURLMOPT_SOCKETFUNCTION) and when it next needs a timeout
 * (CURLMOPT_TIMERFUNCTION); we watch them with one uv_poll_t per socket and a
 * single uv_timer_t, and hand readiness back with curl_multi_socket_action.
 * One CURLM for the whole client keeps libcurl's connection cache, so
 * repeated requests to the same peer reuse a TCP connection.  (libcurl's
 * threaded resolver may look up a host name on a thread of its own; it
 * reports back through a socket, so callbacks still run on the loop.)
 *
 * Re-entrancy rules that shape the code:
 *  - libcurl forbids calling curl_multi_* from inside its own callbacks, so
 *    user callbacks are never run from a libcurl callback; completions are
 *    collected with curl_multi_info_read after curl_multi_socket_action has
 *    returned, and the body cap only flags the request and aborts the write.
 *  - A user callback may start, cancel, or close anything, including the
 *    whole client.  Requests are therefore unlinked before their callback
 *    runs, completions are drained one message at a time (removing an easy
 *    handle also drops its queued message), and the client struct is freed
 *    only from uv close callbacks, which run after every stack frame that
 *    could still hold a pointer to it has returned.
 *
 * The environment's proxy settings are ignored on purpose: nodes talk to
 * each other on local addresses, and a stray http_proxy would break the
 * cluster in ways that are hard to see.
 */
#include "client.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "log.h"

/* A peer's answer is small JSON; anything this large is a bug or an attack,
 * and buffering it would only hurt the node. */
#define CLIENT_BODY_MAX (16u * 1024u * 1024u)

struct client_socket
{
    uv_poll_t poll;
    curl_socket_t fd;
    struct client *c;
    struct client_socket *prev, *next;
};

struct client
{
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct client_request *pending; /* doubly linked, not yet called back */
    struct client_socket *sockets;  /* every poll handle not yet closing */
    unsigned handles_open;          /* uv handles whose close cb is due */
    bool closing;
    void (*done)(void *arg);
    void *done_arg;
};

struct client_request
{
    struct client *c;
    struct client_request *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    client_cb cb;
    void *arg;
    long timeout_ms;
    bool finishing; /* its callback is running or has run */
    bool too_large;
    char *body;
    size_t body_len, body_cap;
    char *content_type;
    char *location;
    char *retry_after;
    char *relay;      /* X-Raftkv-* header lines */
    size_t relay_len;
    char curl_error[CURL_ERROR_SIZE];
    char error[CURL_ERROR_SIZE + 64];
};

/* ---- requests ---------------------------------------------------------- */

static void client_request_unlink(struct client_request *r)
{
    struct client *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->pending = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void client_request_free(struct client_request *r)
{
    if (r->easy) curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->body);
    free(r->content_type);
    free(r->location);
    free(r->retry_after);
    free(r->relay);
    free(r);
}

/* Detach @r from libcurl and the pending list, then run its callback.  The
 * request is out of every structure before the callback runs, so whatever
 * the callback does (cancel, close, new requests) cannot reach it twice. */
static void client_finish(struct client_request *r,
                          const struct client_response *res)
{
    struct client *c = r->c;
    r->finishing = true;
    client_request_unlink(r);
    /* Removing the handle before the callback returns the connection to the
     * cache, so a follow-up request started by the callback can reuse it. */
    if (c->multi) curl_multi_remove_handle(c->multi, r->easy);
    r->cb(r->arg, res);
    client_request_free(r);
}

static void client_finish_cancelled(struct client_request *r)
{
    struct client_response res = {.status = 0, .error = "cancelled"};
    client_finish(r, &res);
}

static const char *client_describe_error(struct client_request *r,
                                         CURLcode rc)
{
    const char *detail = r->curl_error[0] ? r->curl_error
                                          : curl_easy_strerror(rc);
    long os_errno = 0;

    if (r->too_large) {
        snprintf(r->error, sizeof r->error,
                 "response body too large (over %u bytes)", CLIENT_BODY_MAX);
        return r->error;
    }
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(r->error, sizeof r->error, "timeout after %ld ms: %s",
                 r->timeout_ms, detail);
        break;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
        if (os_errno == ECONNREFUSED)
            snprintf(r->error, sizeof r->error, "connection refused: %s",
                     detail);
        else
            snprintf(r->error, sizeof r->error, "cannot connect: %s", detail);
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(r->error, sizeof r->error, "cannot resolve host: %s",
                 detail);
        break;
    default:
        snprintf(r->error, sizeof r->error, "%s", detail);
        break;
    }
    return r->error;
}

static void client_complete(struct client_request *r, CURLcode rc)
{
    struct client_response res = {0};
    long status = 0;

    if (rc == CURLE_OK && !r->too_large) {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status <= 0) {
            res.error = "no HTTP response";
        } else {
            res.status = (int)status;
            res.body = r->body;
            res.body_len = r->body_len;
            res.content_type = r->content_type;
            res.location = r->location;
            res.retry_after = r->retry_after;
            res.raftkv_headers = r->relay ? r->relay : "";
        }
    } else {
        res.error = client_describe_error(r, rc);
        log_debug("client: request failed: %s", res.error);
    }
    client_finish(r, &res);
}

/* Drain finished transfers.  One message at a time, re-checking the client
 * after each callback: the callback may have closed it (multi is gone) or
 * cancelled a request whose message was queued (libcurl drops the message
 * when the handle is removed, so it will not show up here). */
static void client_check_done(struct client *c)
{
    while (!c->closing) {
        int left = 0;
        CURLMsg *m = curl_multi_info_read(c->multi, &left);
        if (!m) return;
        if (m->msg != CURLMSG_DONE) continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        client_complete((struct client_request *)priv, m->data.result);
    }
}

/* ---- libcurl callbacks (no user code and no curl_multi_* calls here) --- */

static size_t client_on_body(char *data, size_t size, size_t n, void *arg)
{
    struct client_request *r = arg;
    size_t len = size * n;

    if (len == 0) return 0;
    if (len > CLIENT_BODY_MAX - r->body_len) {
        /* Returning short makes libcurl abort with CURLE_WRITE_ERROR; the
         * flag tells client_complete why. */
        r->too_large = true;
        return 0;
    }
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + len + 1) cap *= 2;
        char *p = realloc(r->body, cap);
        if (!p) return 0;
        r->body = p;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return len;
}

/* Replace *@slot with the trimmed value of a header line. */
static bool client_header_take(char **slot, const char *v, size_t len)
{
    while (len > 0 && (*v == ' ' || *v == '\t')) v++, len--;
    while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' ||
                       v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    char *copy = strndup(v, len);
    if (!copy) return false;
    free(*slot);
    *slot = copy;
    return true;
}

/* Keep an X-Raftkv-* header line for relaying, normalised to "N: v\n". */
static bool client_relay_take(struct client_request *r, const char *line,
                              size_t len)
{
    static const char prefix[] = "x-raftkv-";
    char *grown;

    if (len < sizeof prefix - 1 ||
        strncasecmp(line, prefix, sizeof prefix - 1) != 0)
        return true;
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    grown = realloc(r->relay, r->relay_len + len + 2);
    if (!grown) return false;
    r->relay = grown;
    memcpy(r->relay + r->relay_len, line, len);
    r->relay_len += len;
    r->relay[r->relay_len++] = '\n';
    r->relay[r->relay_len] = '\0';
    return true;
}

static size_t client_on_header(char *line, size_t size, size_t n, void *arg)
{
    struct client_request *r = arg;
    size_t len = size * n;
    static const struct
    {
        const char *name;
        size_t off;
    } wanted[] = {
        {"content-type", offsetof(struct client_request, content_type)},
        {"location", offsetof(struct client_request, location)},
        {"retry-after", offsetof(struct client_request, retry_after)},
    };

    /* An interim response (100 Continue) has its own header block; only the
     * final response's headers describe the body we return. */
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
            char **slot = (char **)((char *)r + wanted[i].off);
            free(*slot);
            *slot = NULL;
        }
        free(r->relay);
        r->relay = NULL;
        r->relay_len = 0;
        return len;
    }
    if (!client_relay_take(r, line, len)) return 0;
    const char *colon = memchr(line, ':', len);
    if (!colon) return len;
    size_t name_len = (size_t)(colon - line);
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
        if (strlen(wanted[i].name) != name_len ||
            strncasecmp(line, wanted[i].name, name_len) != 0)
            continue;
        char **slot = (char **)((char *)r + wanted[i].off);
        if (!client_header_take(slot, colon + 1, len - name_len - 1))
            return 0;
        break;
    }
    return len;
}

static void client_socket_close_cb(uv_handle_t *h);

static void client_socket_release(struct client_socket *s)
{
    struct client *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->sockets = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    /* Closing (not just stopping) the poll handle: libcurl is about to close
     * the fd, and the number may come back at once for a new connection,
     * which needs a fresh uv_poll_t (libuv refuses two on one fd). */
    uv_close((uv_handle_t *)&s->poll, client_socket_close_cb);
}

static void client_on_poll(uv_poll_t *p, int status, int events)
{
    struct client_socket *s = p->data;
    struct client *c = s->c;
    int flags = 0;
    int running = 0;

    if (c->closing) return;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    /* @s may be closed by libcurl's socket callback during this call. */
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    client_check_done(c);
}

static int client_on_socket(CURL *easy, curl_socket_t fd, int what,
                            void *userp, void *socketp)
{
    struct client *c = userp;
    struct client_socket *s = socketp;
    int events = 0;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (s) client_socket_release(s);
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return -1;
        int rc = uv_poll_init_socket(c->loop, &s->poll, fd);
        if (rc < 0) {
            log_error("client: cannot watch socket %d: %s", (int)fd,
                      uv_strerror(rc));
            free(s);
            return -1;
        }
        s->fd = fd;
        s->c = c;
        s->poll.data = s;
        s->next = c->sockets;
        if (c->sockets) c->sockets->prev = s;
        c->sockets = s;
        c->handles_open++;
        curl_multi_assign(c->multi, fd, s);
    }
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    int rc = uv_poll_start(&s->poll, events, client_on_poll);
    if (rc < 0) {
        log_error("client: cannot poll socket %d: %s", (int)fd,
                  uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void client_on_timer(uv_timer_t *t)
{
    struct client *c = t->data;
    int running = 0;

    if (c->closing) return;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    client_check_done(c);
}

static int client_on_timeout_change(CURLM *multi, long timeout_ms, void *userp)
{
    struct client *c = userp;
    (void)multi;

    if (timeout_ms < 0) {
        uv_timer_stop(&c->timer);
        return 0;
    }
    if (c->closing) return 0;
    /* Even 0 goes through the timer: socket_action must not be called from
     * inside this callback, and a 0 ms timer fires on the next iteration. */
    uv_timer_start(&c->timer, client_on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- lifetime ---------------------------------------------------------- */

static void client_handle_closed(struct client *c)
{
    c->handles_open--;
    if (c->handles_open > 0) return;
    void (*done)(void *) = c->done;
    void *done_arg = c->done_arg;
    free(c);
    curl_global_cleanup();
    if (done) done(done_arg);
}

static void client_socket_close_cb(uv_handle_t *h)
{
    struct client_socket *s = h->data;
    struct client *c = s->c;
    free(s);
    client_handle_closed(c);
}

static void client_timer_close_cb(uv_handle_t *h)
{
    client_handle_closed(h->data);
}

int client_init(struct client **out, uv_loop_t *loop)
{
    *out = NULL;
    if (!loop) return -EINVAL;
    /* Reference-counted by libcurl, and thread-safe in the libcurl we build
     * against (7.84+, "threadsafe" feature); paired with the cleanup in
     * client_handle_closed so each client holds one reference. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return -EIO;

    struct client *c = calloc(1, sizeof *c);
    if (!c) {
        curl_global_cleanup();
        return -ENOMEM;
    }
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) {
        free(c);
        curl_global_cleanup();
        return -ENOMEM;
    }
    int rc = uv_timer_init(loop, &c->timer);
    if (rc < 0) {
        curl_multi_cleanup(c->multi);
        free(c);
        curl_global_cleanup();
        return rc;
    }
    c->timer.data = c;
    c->handles_open = 1;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, client_on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION,
                      client_on_timeout_change);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    *out = c;
    return 0;
}

void client_close(struct client *c, void (*done)(void *arg), void *arg)
{
    if (!c) return;
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
    while (c->pending) client_finish_cancelled(c->pending);

    /* Closes cached connections; libcurl may report their sockets removed
     * through client_on_socket, which closes the poll handles. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;

    while (c->sockets) client_socket_release(c->sockets);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, client_timer_close_cb);
}

/* ---- starting and cancelling ------------------------------------------- */

static int client_request_setup(struct client_request *r, const char *method,
                                const char *url, const void *body,
                                size_t body_len, const char *content_type,
                                const char *const *extra)
{
    CURL *e = r->easy;
    bool has_body = body != NULL || strcmp(method, "POST") == 0 ||
                    strcmp(method, "PUT") == 0;

    /* libcurl sends Expect: 100-continue with large bodies (over 1 MiB in
     * 7.88, 1 KiB in older releases) and then waits a round trip, or a full
     * second against servers that do not answer it; peers need no such
     * negotiation. */
    r->headers = curl_slist_append(NULL, "Expect:");
    if (!r->headers) return -ENOMEM;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        struct curl_slist *l = curl_slist_append(r->headers, extra[i]);
        if (!l) return -ENOMEM;
        r->headers = l;
    }
    if (content_type) {
        size_t n = strlen("Content-Type: ") + strlen(content_type) + 1;
        char *h = malloc(n);
        if (!h) return -ENOMEM;
        snprintf(h, n, "Content-Type: %s", content_type);
        struct curl_slist *l = curl_slist_append(r->headers, h);
        free(h);
        if (!l) return -ENOMEM;
        r->headers = l;
    } else if (has_body) {
        /* libcurl would otherwise label the body as a urlencoded form. */
        struct curl_slist *l = curl_slist_append(r->headers, "Content-Type:");
        if (!l) return -ENOMEM;
        r->headers = l;
    }

    CURLcode rc = CURLE_OK;
#define CLIENT_SETOPT(opt, val)                                               \
    do {                                                                      \
        if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val);               \
    } while (0)
    CLIENT_SETOPT(CURLOPT_URL, url);
    CLIENT_SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    CLIENT_SETOPT(CURLOPT_PRIVATE, (void *)r);
    CLIENT_SETOPT(CURLOPT_NOSIGNAL, 1L);
    CLIENT_SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    CLIENT_SETOPT(CURLOPT_PROXY, "");
    CLIENT_SETOPT(CURLOPT_NOPROXY, "*");
    CLIENT_SETOPT(CURLOPT_TCP_NODELAY, 1L);
    CLIENT_SETOPT(CURLOPT_TIMEOUT_MS, r->timeout_ms);
    CLIENT_SETOPT(CURLOPT_ERRORBUFFER, r->curl_error);
    CLIENT_SETOPT(CURLOPT_WRITEFUNCTION, client_on_body);
    CLIENT_SETOPT(CURLOPT_WRITEDATA, (void *)r);
    CLIENT_SETOPT(CURLOPT_HEADERFUNCTION, client_on_header);
    CLIENT_SETOPT(CURLOPT_HEADERDATA, (void *)r);
    CLIENT_SETOPT(CURLOPT_HTTPHEADER, r->headers);
    CLIENT_SETOPT(CURLOPT_USERAGENT, "raftkv");
    if (has_body) {
        /* Size first: COPYPOSTFIELDS copies exactly that many bytes, so
         * binary bodies with NULs survive and the caller's buffer is free
         * as soon as client_request returns. */
        CLIENT_SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        CLIENT_SETOPT(CURLOPT_COPYPOSTFIELDS, body ? (const char *)body : "");
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        CLIENT_SETOPT(CURLOPT_CUSTOMREQUEST, method);
#undef CLIENT_SETOPT
    if (rc == CURLE_OUT_OF_MEMORY) return -ENOMEM;
    if (rc != CURLE_OK) {
        log_warn("client: cannot set up %s %s: %s", method, url,
                 curl_easy_strerror(rc));
        return -EINVAL;
    }
    return 0;
}

/* Reject what libcurl would only report later through the callback: a
 * caller passing a malformed URL has a bug, and should hear of it now. */
static int client_check_url(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL;
    int rc = 0;

    if (!u) return -ENOMEM;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
        rc = -EINVAL;
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
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
    if (handle) *handle = NULL;
    if (!c || !method || !url || !cb) return -EINVAL;
    if (c->closing) return -ESHUTDOWN;
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 &&
        strcmp(method, "PUT") != 0 && strcmp(method, "DELETE") != 0)
        return -EINVAL;
    /* libcurl reads 0 as "no limit"; the contract promises a bound. */
    if (timeout_ms <= 0) return -EINVAL;
    if (!body && body_len > 0) return -EINVAL;
    /* libcurl would turn a GET with a body into a POST. */
    if (body && strcmp(method, "GET") == 0) return -EINVAL;
    int rc = client_check_url(url);
    if (rc < 0) return rc;

    struct client_request *r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;
    r->c = c;
    r->cb = cb;
    r->arg = arg;
    r->timeout_ms = timeout_ms;
    r->easy = curl_easy_init();
    if (!r->easy) {
        client_request_free(r);
        return -ENOMEM;
    }
    rc = client_request_setup(r, method, url, body, body_len, content_type,
                              headers);
    if (rc < 0) {
        client_request_free(r);
        return rc;
    }
    CURLMcode mrc = curl_multi_add_handle(c->multi, r->easy);
    if (mrc != CURLM_OK) {
        log_error("client: cannot start %s %s: %s", method, url,
                  curl_multi_strerror(mrc));
        client_request_free(r);
        return mrc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;
    }
    r->next = c->pending;
    if (c->pending) c->pending->prev = r;
    c->pending = r;
    if (handle) *handle = r;
    return 0;
}

void client_cancel(struct client_request *r)
{
    /* From inside its own callback the request is already done; cancelling
     * it there is harmless and must not call back a second time. */
    if (!r || r->finishing) return;
    client_finish_cancelled(r);
}
