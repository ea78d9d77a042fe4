/* fuzz_request.c - libFuzzer target for HTTP request handling end to end:
 * h2o's parser, http.c, routing, every handler's validation of path, query
 * string, headers and JSON body, and the writes they commit through Raft.
 *
 * The server is real and runs in this process: it is assembled as main.c
 * assembles it (config_parse -> node_start -> api_init -> http_start ->
 * http_set_observer) on a loop this harness drives, as a one-node cluster
 * bootstrapped once by a POST /set.  Each input is written, as raw bytes,
 * to a fresh TCP connection to its HTTP port (or to up to MAX_CONNS
 * connections at once, see CONN_SEPARATOR); the loop is pumped until the
 * server has answered everything and closed the connections.
 *
 * What counts as a finding (besides sanitizer reports):
 *  - a hang: the exchange does not finish within RAFTKV_FUZZ_HANG_MS
 *    (default 5000) wall-clock milliseconds;
 *  - a 5xx answer: a one-node leader on tmpfs has no reason to give one;
 *  - an error answer that is not a JSON {"error": ...} (README.md), or an
 *    answer without Content-Length (http.c);
 *  - the node no longer leads, or is left with a read, a join or a change
 *    in flight once its connection is done.
 *
 * Departures from main.c, each about what is not fuzzed or to make a
 * failure readable:
 *  - membership_join is replaced at link time (-Wl,--wrap) by a stub that
 *    answers "cannot use that address": a real join resolves a fuzzed host
 *    name (DNS from a fuzzer) and waits 10 s for a server that never
 *    answers.  Everything before it (/join and POST /v1/cluster/members
 *    parameter and body validation) is still fuzzed.  Removals and
 *    leadership transfers need no stub: on a one-node cluster they fail at
 *    once (last voter, no other voter).
 *  - No signal handlers: libFuzzer owns SIGINT and friends.
 *
 * The request callback and the observer are thin wrappers around
 * api_handle and api_observe that count requests in flight and look at
 * each status. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "api.h"
#include "config.h"
#include "http.h"
#include "membership.h"
#include "node.h"
#include "store.h"

#include "fuzz_common.h"

#define MAX_HEADER_BYTES (64 * 1024) /* as main.c */
#define CLEAR_EVERY 2000              /* inputs between emptying the store */

static struct
{
    uv_loop_t loop;
    struct config cfg;
    struct node node;
    struct api api;
    struct http_server *http;
    int port;
    char dir[256];
    bool up;
    unsigned in_flight;    /* requests handed to the API, not yet released */
    unsigned long inputs;
    long hang_ms;
    bool show; /* RAFTKV_FUZZ_SHOW=1: print each answer (reproducing) */
    long slow_ms; /* RAFTKV_FUZZ_SLOW_MS=N: name inputs slower than N ms */
    /* what the current input did, for messages */
    char last_method[24], last_path[96];
    int last_status;
    /* every answer sent through the handler path, in order */
    struct
    {
        int status;
        bool head;
    } obs[256];
    unsigned n_obs;
} S;

/* --- the stub and the wrappers ------------------------------------------- */

int __real_membership_join(struct node *n, struct join_req *j,
                           const char *name, const char *raft_hostport,
                           const char *http_addr, join_cb cb, void *data);
int __wrap_membership_join(struct node *n, struct join_req *j,
                           const char *name, const char *raft_hostport,
                           const char *http_addr, join_cb cb, void *data);

/* Everything api_add_member checks has been checked by now; answering as
 * for an address that cannot be used is a documented outcome (400). */
int __wrap_membership_join(struct node *n, struct join_req *j,
                           const char *name, const char *raft_hostport,
                           const char *http_addr, join_cb cb, void *data)
{
    (void)n, (void)j, (void)name, (void)raft_hostport, (void)http_addr;
    (void)cb, (void)data;
    return NODE_EUNREACHABLE;
}

static void copy_cut(char *dst, size_t cap, const char *src, size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
    dst[n] = '\0';
}

static void on_request_released(void *arg)
{
    (void)arg;
    FUZZ_CHECK(S.in_flight > 0);
    S.in_flight--;
}

static void fuzz_handle(struct http_req *req, void *data)
{
    size_t mlen, plen;
    const char *m = http_method(req, &mlen), *p = http_path(req, &plen);

    copy_cut(S.last_method, sizeof S.last_method, m, mlen);
    copy_cut(S.last_path, sizeof S.last_path, p, plen);
    S.in_flight++;
    http_req_on_release(req, on_request_released, NULL);
    api_handle(req, data);
}

static void fuzz_observe(struct http_req *req, int status, uint64_t elapsed_ns,
                         int tag, void *data)
{
    S.last_status = status;
    if (S.n_obs < sizeof S.obs / sizeof S.obs[0]) {
        S.obs[S.n_obs].status = status;
        S.obs[S.n_obs].head = http_method_is(req, "HEAD");
    }
    S.n_obs++;
    if (status >= 500 && S.up) {
        size_t mlen, plen;
        const char *m = http_method(req, &mlen), *p = http_path(req, &plen);
        fuzz_finding("server-5xx",
                     "the leader of a one-node cluster answered %d to %.*s "
                     "%.*s",
                     status, (int)(mlen > 16 ? 16 : mlen), m,
                     (int)(plen > 200 ? 200 : plen), p);
    }
    api_observe(req, status, elapsed_ns, tag, data);
}

/* The store failed under the state machine (or its batch commit failed);
 * the real node exits at once (node.c), which would end the fuzzer without
 * a report. */
static void on_fatal(void *arg, const char *what)
{
    (void)arg;
    fuzz_fail("the state machine called fatal: %s (last request %s %s)",
              what, S.last_method, S.last_path);
}

/* node.c stops the process with _exit(1) when it cannot go on (node_fatal,
 * and whatever else it hands that to); in a fuzzer that would be an exit
 * without a report or a saved input.  The executable's own _exit wins over
 * libc's for calls from node.c, so make it a finding with a stack trace.
 * (exit() reaches libc's internal _exit directly, not this one.) */
void _exit(int status)
{
    fuzz_fail("the server called _exit(%d) (see the log line before; last "
              "request %s %s)",
              status, S.last_method, S.last_path);
}

/* --- driving the loop --------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Nothing for the loop to do right now: no due timer or pending callback,
 * and nothing ready in its epoll set.  Timers in the future (Raft's
 * heartbeat, the node's tick) do not count. */
static bool loop_idle(void)
{
    struct pollfd p = {.fd = uv_backend_fd(&S.loop), .events = POLLIN};

    if (uv_backend_timeout(&S.loop) == 0)
        return false;
    return poll(&p, 1, 0) == 0;
}

struct reply
{
    char *p;
    size_t len, cap;
};

static void reply_add(struct reply *r, const char *p, size_t n)
{
    if (r == NULL)
        return;
    if (r->len + n + 1 > r->cap) {
        r->cap = (r->len + n + 1) * 2;
        r->p = realloc(r->p, r->cap);
        FUZZ_CHECK(r->p != NULL);
    }
    memcpy(r->p + r->len, p, n);
    r->len += n;
    r->p[r->len] = '\0';
}

/* An input may hold several connections' worth of bytes, separated by
 * this line: they are all connected and written before the loop runs, so
 * that their requests arrive in one loop iteration.  That is what makes
 * group commit put several clients' writes into one entry (propose.h),
 * and several reads share one entry; one connection never does, since
 * h2o handles its requests one at a time. */
#define CONN_SEPARATOR "\n--next-connection--\n"
#define MAX_CONNS 8

struct conn
{
    int fd;
    const uint8_t *data;
    size_t size, sent, received;
    bool shut, eof;
    struct reply reply;
};

/* Wait (at most @max_ms) until the loop or a client socket has work. */
static void wait_events(struct conn *c, unsigned n, int max_ms)
{
    struct pollfd p[MAX_CONNS + 1];
    unsigned k = 0;
    int t = uv_backend_timeout(&S.loop);

    p[k++] = (struct pollfd){.fd = uv_backend_fd(&S.loop), .events = POLLIN};
    for (unsigned i = 0; i < n; i++)
        if (!c[i].eof)
            p[k++] = (struct pollfd){.fd = c[i].fd, .events = POLLIN};
    if (t < 0 || t > max_ms)
        t = max_ms;
    poll(p, k, t);
}

/* Send each connection's bytes and pump the loop until the server has
 * closed every one.  Write sides are shut only once the server is idle
 * with nothing in flight: a half-close while a request waits on Raft
 * answers it 499 (http.c watches for the peer going away), which would
 * skip every reply built after a commit. */
static void exchange(struct conn *c, unsigned n)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)S.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    uint64_t deadline = now_ms() + (uint64_t)S.hang_ms;
    unsigned open = n;
    bool shut = false;
    char buf[65536];

    S.last_method[0] = S.last_path[0] = '\0';
    S.last_status = 0;
    S.n_obs = 0;
    for (unsigned i = 0; i < n; i++) {
        c[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                         0);
        FUZZ_CHECK(c[i].fd >= 0);
        if (connect(c[i].fd, (struct sockaddr *)&sa, sizeof sa) != 0 &&
            errno != EINPROGRESS)
            fuzz_fail("connect to the server: %s", strerror(errno));
    }
    while (open > 0) {
        bool all_sent = true;
        for (unsigned i = 0; i < n; i++) {
            struct conn *k = &c[i];
            if (k->eof)
                continue;
            if (k->sent < k->size) {
                ssize_t m = send(k->fd, k->data + k->sent, k->size - k->sent,
                                 MSG_NOSIGNAL);
                if (m > 0)
                    k->sent += (size_t)m;
                else if (m < 0 && errno != EAGAIN && errno != EINPROGRESS &&
                         errno != ENOTCONN)
                    k->sent = k->size; /* the server closed early: fine */
            }
            all_sent = all_sent && k->sent == k->size;
            for (;;) {
                ssize_t m = recv(k->fd, buf, sizeof buf, 0);
                if (m > 0) {
                    reply_add(&k->reply, buf, (size_t)m);
                    k->received += (size_t)m;
                    continue;
                }
                if (m == 0 || (errno != EAGAIN && errno != EINTR)) {
                    k->eof = true;
                    close(k->fd);
                    open--;
                }
                break;
            }
        }
        if (open == 0)
            break;
        uv_run(&S.loop, UV_RUN_NOWAIT);
        if (!shut && all_sent && S.in_flight == 0 && loop_idle()) {
            for (unsigned i = 0; i < n; i++)
                if (!c[i].eof)
                    shutdown(c[i].fd, SHUT_WR);
            shut = true;
        }
        if (now_ms() > deadline)
            fuzz_fail("hang: the exchange did not finish within %ld ms "
                      "(%u of %u connection(s) still open, %s, %u "
                      "request(s) in flight, last request %s %s, last "
                      "status %d)",
                      S.hang_ms, open, n,
                      shut ? "write sides shut" : "not all written yet",
                      S.in_flight, S.last_method, S.last_path,
                      S.last_status);
        wait_events(c, n, 10);
    }
    /* Let the server finish closing its side before the next input. */
    for (int i = 0; i < 1000 && !loop_idle(); i++)
        uv_run(&S.loop, UV_RUN_NOWAIT);
}

/* Split an input into connections (see CONN_SEPARATOR); returns how many. */
static unsigned split_input(const uint8_t *data, size_t size, struct conn *c)
{
    const size_t sl = sizeof CONN_SEPARATOR - 1;
    unsigned n = 0;
    size_t at = 0;

    for (;;) {
        const uint8_t *sep = n + 1 < MAX_CONNS
                                 ? memmem(data + at, size - at,
                                          CONN_SEPARATOR, sl)
                                 : NULL;
        size_t end = sep ? (size_t)(sep - data) : size;
        c[n] = (struct conn){.fd = -1, .data = data + at, .size = end - at};
        n++;
        if (sep == NULL)
            return n;
        at = end + sl;
    }
}

/* --- what came back ----------------------------------------------------- */

/* picohttpparser, bundled in libh2o and exported by it (no header). */
struct phr_header
{
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_response(const char *buf, size_t len, int *minor_version,
                       int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers,
                       size_t last_len);

static const struct phr_header *find_header(const struct phr_header *h,
                                            size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (h[i].name_len == strlen(name) &&
            strncasecmp(h[i].name, name, h[i].name_len) == 0)
            return &h[i];
    return NULL;
}

/* Every error is a JSON body {"error": "..."} (README.md), except the raw
 * text/plain 400 h2o writes for a request line it cannot parse (http.c).
 * Responses are framed by Content-Length; a HEAD answer has none of its
 * body, so on a lone connection answers are matched in order with what the
 * observer saw, and checking stops wherever that match is not certain.
 * With several connections the observer's order mixes them: then only a
 * connection that cannot have sent HEAD is checked, without matching. */
static void check_responses(const char *p, size_t len, bool matched)
{
    size_t off = 0, j = 0, n_obs = matched ? S.n_obs : 0;

    if (n_obs > sizeof S.obs / sizeof S.obs[0])
        return;
    while (off < len) {
        struct phr_header h[64];
        size_t nh = 64, body_len = 0, type_len = 0;
        int minor, status, r;
        const char *msg, *type = "";
        size_t msg_len;
        bool head = false, observed = false;

        r = phr_parse_response(p + off, len - off, &minor, &status, &msg,
                               &msg_len, h, &nh, 0);
        if (r <= 0)
            return; /* truncated or not understood: nothing certain */
        off += (size_t)r;
        if (status < 200)
            continue; /* 100 Continue */
        if (j < n_obs && S.obs[j].status == status) {
            observed = true;
            head = S.obs[j].head;
            j++;
        } else if (j < n_obs) {
            return; /* an answer from h2o itself, in the middle: unsure */
        }
        const struct phr_header *cl = find_header(h, nh, "content-length");
        const struct phr_header *ct = find_header(h, nh, "content-type");
        if (ct != NULL)
            type = ct->value, type_len = ct->value_len;
        if (cl == NULL) {
            if (observed && status != 204 && status != 304)
                fuzz_finding("no-content-length",
                             "a %d answer has no Content-Length (http.c "
                             "promises one on every response)",
                             status);
            return;
        }
        body_len = (size_t)strtoull(cl->value, NULL, 10);
        if (head || status == 204 || status == 304)
            body_len = 0;
        if (body_len > len - off)
            return; /* cut short (the server closed): unsure */
        const char *body = p + off;
        off += body_len;
        if (status < 400 || head)
            continue;
        bool json = type_len >= 16 && strncmp(type, "application/json", 16) == 0;
        if (!json) {
            if (!observed && status == 400 && body_len == 11 &&
                memcmp(body, "Bad Request", 11) == 0)
                continue; /* h2o's own, documented */
            fuzz_finding("error-not-json",
                         "a %d answer%s has Content-Type %.*s, not a JSON "
                         "error: %.*s",
                         status, observed ? "" : " (maybe h2o's own)",
                         (int)type_len,
                         type, (int)(body_len > 200 ? 200 : body_len), body);
            continue;
        }
        json_error_t err;
        json_t *doc = json_loadb(body, body_len, 0, &err);
        if (doc == NULL || !json_is_object(doc) ||
            (!json_is_string(json_object_get(doc, "error")) &&
             json_object_get(doc, "ready") == NULL))
            fuzz_finding("error-not-json",
                         "a %d answer%s is not a JSON object with an \"error\" "
                         "string: %.*s",
                         status, observed ? "" : " (maybe h2o's own)",
                         (int)(body_len > 200 ? 200 : body_len), body);
        json_decref(doc);
    }
}

/* --- invariants between inputs ------------------------------------------- */

static void check_node(void)
{
    struct node *n = &S.node;

    if (n->phase != NODE_RUNNING || !node_is_leader(n))
        fuzz_finding("not-leader",
                     "after %s %s the node is in phase %d and %s the leader",
                     S.last_method, S.last_path, (int)n->phase,
                     node_is_leader(n) ? "is" : "is not");
    if (S.in_flight != 0)
        fuzz_fail("%u request(s) still in flight after their connection "
                  "closed",
                  S.in_flight);
    if (n->join_active != NULL || n->change_active || !queue_empty(&n->joins))
        fuzz_fail("a membership change is still running after %s %s",
                  S.last_method, S.last_path);
    if (n->reads.in_flight != 0 || !queue_empty(&n->reads.waiting))
        fuzz_fail("a linearizable read is still waiting after %s %s",
                  S.last_method, S.last_path);
}

/* Keep LMDB (in /dev/shm) small: the data written by past inputs does not
 * matter to the next one.  Done behind Raft's back, between requests. */
static void clear_store(void)
{
    struct store_txn t;

    FUZZ_CHECK(store_txn_begin(S.node.store, true, &t) == 0);
    FUZZ_CHECK(store_clear(&t, STORE_KV) == 0);
    FUZZ_CHECK(store_txn_commit(&t) == 0);
}

/* --- start and stop --------------------------------------------------------- */

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    FUZZ_CHECK(fd >= 0);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        fuzz_fail("cannot find a free port: %s", strerror(errno));
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void on_node_stopped(struct node *n) { (void)n; }

static void on_http_stopped(void *arg)
{
    (void)arg;
    S.http = NULL;
    node_stop(&S.node, on_node_stopped);
}

/* As main.c's SIGTERM path: HTTP first, then the node, then the loop, and
 * libraft's memory only once the loop has stopped (node_destroy). */
static void stop_server(void)
{
    if (!S.up)
        return;
    S.up = false;
    http_stop(S.http, on_http_stopped, NULL);
    uv_run(&S.loop, UV_RUN_DEFAULT);
    node_destroy(&S.node);
    api_close(&S.api);
    if (uv_loop_close(&S.loop) != 0)
        fprintf(stderr, "fuzz_request: loop closed with handles open\n");
    fuzz_remove_dir(S.dir);
}

static void start_server(void)
{
    char data_dir[512], raft_port[16], web_port[16], err[512];
    char raft_addr[NODE_ADDR_MAX], http_addr[NODE_ADDR_MAX];
    struct http_options opts;
    int rv;

    fuzz_make_dir(S.dir, sizeof S.dir, "fuzz-request");
    snprintf(data_dir, sizeof data_dir, "%s/node", S.dir);
    snprintf(raft_port, sizeof raft_port, "%d", free_port());
    snprintf(web_port, sizeof web_port, "%d", free_port());
    /* Small limits so that inputs of a few KiB reach every 413 and 400 for
     * size; frequent snapshots so that they happen under fuzzing too. */
    char *argv[] = {"raftkv", "--node-id", "fuzz1",
                    "--raft-port", raft_port,
                    "--http-port", web_port,
                    "--data-dir", data_dir,
                    "--max-key-size", "1024",
                    "--max-value-size", "2048",
                    "--max-body-size", "4096",
                    "--snapshot-threshold", "64",
                    "--snapshot-trailing", "32",
                    "--election-timeout", "200",
                    "--heartbeat-timeout", "50",
                    NULL};
    int argc = (int)(sizeof argv / sizeof argv[0]) - 1;

    if (config_parse(&S.cfg, argc, argv, err, sizeof err) != 0)
        fuzz_fail("config_parse: %s", err);
    /* main.c resolves the hosts; they are IPv4 literals already. */
    snprintf(raft_addr, sizeof raft_addr, "%s:%d", S.cfg.raft_host,
             S.cfg.raft_port);
    snprintf(http_addr, sizeof http_addr, "%s:%d", S.cfg.http_host,
             S.cfg.http_port);
    log_set_node(S.cfg.node_id);
    fuzz_quiet_logs();
    signal(SIGPIPE, SIG_IGN);

    uv_loop_init(&S.loop);
    if (node_start(&S.node, &S.loop, &S.cfg, raft_addr, http_addr) != 0)
        fuzz_fail("node_start failed");
    S.node.fsm.fatal = on_fatal;
    store_set_fatal(S.node.store, on_fatal, NULL);
    if (api_init(&S.api, &S.node, &S.cfg) != 0)
        fuzz_fail("api_init failed");
    opts = (struct http_options){.host = S.cfg.http_host,
                                 .port = S.cfg.http_port,
                                 .max_body = S.cfg.max_body_size,
                                 .max_header_bytes = MAX_HEADER_BYTES};
    rv = http_start(&S.http, &S.loop, &opts, fuzz_handle, &S.api);
    if (rv != 0)
        fuzz_fail("http_start: %s", uv_strerror(rv));
    http_set_observer(S.http, fuzz_observe, &S.api);
    S.port = http_port(S.http);

    /* The first write bootstraps the one-node cluster. */
    static const char body[] = "{\"key\":\"boot\",\"value\":\"strap\"}";
    char boot[256];
    int blen = snprintf(boot, sizeof boot,
                        "POST /set HTTP/1.1\r\nHost: fuzz\r\n"
                        "Content-Type: application/json\r\n"
                        "Content-Length: %zu\r\n\r\n%s",
                        sizeof body - 1, body);
    struct conn c = {.data = (const uint8_t *)boot, .size = (size_t)blen};
    exchange(&c, 1);
    if (c.reply.p == NULL || strncmp(c.reply.p, "HTTP/1.1 200 ", 13) != 0)
        fuzz_fail("bootstrap request failed: %s",
                  c.reply.p ? c.reply.p : "(no answer)");
    free(c.reply.p);
    S.up = true;
    check_node();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *hang = getenv("RAFTKV_FUZZ_HANG_MS");
    const char *slow = getenv("RAFTKV_FUZZ_SLOW_MS");

    (void)argc, (void)argv;
    S.show = getenv("RAFTKV_FUZZ_SHOW") != NULL;
    S.slow_ms = slow != NULL ? atol(slow) : 0;
    S.hang_ms = hang != NULL ? atol(hang) : 5000;
    if (S.hang_ms <= 0)
        S.hang_ms = 5000;
    start_server();
    atexit(stop_server);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conn c[MAX_CONNS];
    uint64_t start = now_ms();
    unsigned n;

    if (size == 0)
        return 0;
    n = split_input(data, size, c);
    exchange(c, n);
    if (S.slow_ms > 0 && now_ms() - start >= (uint64_t)S.slow_ms)
        fprintf(stderr, "slow input: %llu ms, %zu bytes, last request %s %s "
                        "(status %d)\n",
                (unsigned long long)(now_ms() - start), size, S.last_method,
                S.last_path, S.last_status);
    for (unsigned i = 0; i < n; i++) {
        struct reply *r = &c[i].reply;
        if (S.show)
            fprintf(stderr, "---- connection %u: %zu bytes answered:\n%.*s\n"
                            "----\n",
                    i, r->len, (int)r->len, r->p ? r->p : "");
        if (n == 1)
            check_responses(r->p, r->len, true);
        else if (memmem(c[i].data, c[i].size, "HEAD", 4) == NULL)
            check_responses(r->p, r->len, false);
        free(r->p);
    }
    check_node();
    if (++S.inputs % CLEAR_EVERY == 0)
        clear_store();
    return 0;
}
