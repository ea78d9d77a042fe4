/* confirm.c - leadership questions to the other voters, pipelined on one
 * keep-alive HTTP connection per voter; see confirm.h.
 *
 * It does not use client.c, which carries one request per connection,
 * because it runs for every batch of linearizable reads: questions are
 * pipelined, one is a few dozen bytes written with uv_try_write, usually
 * together with the other voters' in the same loop iteration, and an answer
 * is parsed in place. */
#include "confirm.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "text.h"

/* One answer's head and body must fit (h2o sends ~150 bytes). */
#define CONFIRM_IN_MAX 2048
/* Room for one request line and Host header (addresses are < 64 bytes). */
#define CONFIRM_REQ_MAX 256

enum conn_state {
    CONN_IDLE,       /* no handle; may connect (after retry_at_ms) */
    CONN_CONNECTING, /* questions wait until the connection is up */
    CONN_OPEN,
    CONN_CLOSING, /* handle closing: not usable until its callback */
};

struct ask
{
    uint64_t seq, cluster, term;
    uint64_t asked_ms;
};

struct confirm_conn
{
    struct confirm *c;
    struct queue link; /* in c->conns */
    raft_id id;
    char addr[64];
    struct sockaddr_storage sa;
    bool sa_ok;
    enum conn_state state;
    bool free_on_close;
    uv_tcp_t tcp;
    uv_connect_t connect;
    /* Questions in order; the first @sent of them have been written. */
    struct ask asks[CONFIRM_PIPELINE];
    unsigned head, count, sent;
    char in[CONFIRM_IN_MAX];
    size_t in_len;
    uint64_t retry_at_ms;
};

struct write_req
{
    uv_write_t req;
    char data[];
};

/* --- rounds --------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* The timer runs while a round is pending or a voter owes an answer.  The
 * second matters when the other voters answer every round at once: the
 * rounds then end before any timeout, and only the timer cuts a voter that
 * went silent (see on_timer). */
static void timer_arm(struct confirm *c)
{
    uint64_t every = c->timeout_ms / 4 ? c->timeout_ms / 4 : 1;
    if (!c->closed && !uv_is_active((uv_handle_t *)&c->timer))
        uv_timer_start(&c->timer, on_timer, every, every);
}

static void timer_disarm_if_idle(struct confirm *c)
{
    if (c->closed || !queue_empty(&c->rounds))
        return;
    for (struct queue *q = c->conns.next; q != &c->conns; q = q->next)
        if (queue_data(q, struct confirm_conn, link)->count > 0)
            return;
    uv_timer_stop(&c->timer);
}

static void finish(struct confirm *c, struct confirm_round *r, int result)
{
    queue_remove(&r->link);
    timer_disarm_if_idle(c);
    r->cb(r, result);
}

static void check_round(struct confirm *c, struct confirm_round *r)
{
    if (r == c->starting)
        return; /* confirm_start decides once every voter has been asked */
    if (r->yes >= r->need)
        finish(c, r, CONFIRM_OK);
    else if (r->asked - r->no < r->need)
        finish(c, r, CONFIRM_REFUSED);
}

/* An answer (or the lack of one) for round @seq. */
static void deliver(struct confirm *c, uint64_t seq, bool yes)
{
    for (struct queue *q = c->rounds.next; q != &c->rounds; q = q->next) {
        struct confirm_round *r = queue_data(q, struct confirm_round, link);
        if (r->seq != seq)
            continue;
        if (yes)
            r->yes++;
        else
            r->no++;
        check_round(c, r);
        return;
    }
    /* The round has already ended: a late answer changes nothing. */
}

/* --- connections ------------------------------------------------------------ */

static int parse_addr(const char *addr, struct sockaddr_storage *sa)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    size_t hlen;
    char *end;
    unsigned long port;

    if (colon == NULL || colon == addr)
        return -1;
    port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port == 0 || port > 65535)
        return -1;
    hlen = (size_t)(colon - addr);
    if (addr[0] == '[' && hlen >= 2 && addr[hlen - 1] == ']') {
        if (hlen - 2 >= sizeof host)
            return -1;
        memcpy(host, addr + 1, hlen - 2);
        host[hlen - 2] = '\0';
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)sa) == 0
                   ? 0
                   : -1;
    }
    if (hlen >= sizeof host)
        return -1;
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa) == 0 ? 0
                                                                       : -1;
}

static void on_close(uv_handle_t *h)
{
    struct confirm_conn *conn = h->data;
    conn->state = CONN_IDLE;
    if (conn->free_on_close)
        free(conn);
}

/* The connection is of no more use: close it and count every question it
 * still carries as unanswered.  It may reconnect after a pause, so that a
 * dead voter costs one refused connect per timeout, not one per round. */
static void conn_fail(struct confirm_conn *conn, const char *why)
{
    struct confirm *c = conn->c;
    struct ask lost[CONFIRM_PIPELINE];
    unsigned n = conn->count;

    for (unsigned i = 0; i < n; i++)
        lost[i] = conn->asks[(conn->head + i) % CONFIRM_PIPELINE];
    conn->head = conn->count = conn->sent = 0;
    conn->in_len = 0;
    /* A voter closing an idle connection (h2o does after 10 s) is no
     * failure: reconnect at once. */
    bool idle_close = n == 0 && conn->state == CONN_OPEN;
    conn->retry_at_ms = uv_now(c->loop) + (idle_close ? 0 : c->timeout_ms);
    if (conn->state == CONN_CONNECTING || conn->state == CONN_OPEN) {
        log_debug("leadership checks to %s: %s", conn->addr, why);
        conn->state = CONN_CLOSING;
        uv_close((uv_handle_t *)&conn->tcp, on_close);
    }
    for (unsigned i = 0; i < n; i++)
        deliver(c, lost[i].seq, false);
}

static void on_write(uv_write_t *req, int status)
{
    struct confirm_conn *conn = req->data;
    free(req);
    if (status != 0 && status != UV_ECANCELED && conn->state == CONN_OPEN)
        conn_fail(conn, uv_strerror(status));
}

static size_t format_ask(const struct confirm_conn *conn, const struct ask *a,
                         char *out)
{
    char term[TEXT_U64_SIZE], leader[TEXT_U64_SIZE], voter[TEXT_U64_SIZE];
    int n;

    text_u64(a->term, term);
    text_u64(conn->c->self, leader);
    text_u64(conn->id, voter);
    n = snprintf(out, CONFIRM_REQ_MAX,
                 "GET /v1/internal/confirm?cluster=%016llx&term=%s&leader=%s"
                 "&voter=%s HTTP/1.1\r\nHost: %s\r\n\r\n",
                 (unsigned long long)a->cluster, term, leader, voter,
                 conn->addr);
    return n > 0 && n < CONFIRM_REQ_MAX ? (size_t)n : 0;
}

/* Write every question not yet written, in one go. */
static void conn_send(struct confirm_conn *conn)
{
    char buf[CONFIRM_PIPELINE * CONFIRM_REQ_MAX];
    size_t len = 0;
    uv_buf_t b;
    int rv;

    if (conn->state != CONN_OPEN || conn->sent == conn->count)
        return;
    for (unsigned i = conn->sent; i < conn->count; i++) {
        size_t n = format_ask(
            conn, &conn->asks[(conn->head + i) % CONFIRM_PIPELINE], buf + len);
        if (n == 0) {
            conn_fail(conn, "address too long");
            return;
        }
        len += n;
    }
    conn->sent = conn->count;
    b = uv_buf_init(buf, (unsigned)len);
    rv = uv_try_write((uv_stream_t *)&conn->tcp, &b, 1);
    if (rv == (int)len)
        return;
    if (rv < 0 && rv != UV_EAGAIN) {
        conn_fail(conn, uv_strerror(rv));
        return;
    }
    if (rv > 0) { /* the kernel took part of it: queue the rest */
        memmove(buf, buf + rv, len - (size_t)rv);
        len -= (size_t)rv;
    }
    struct write_req *w = malloc(sizeof *w + len);
    if (w == NULL) {
        conn_fail(conn, "out of memory");
        return;
    }
    memcpy(w->data, buf, len);
    w->req.data = conn;
    b = uv_buf_init(w->data, (unsigned)len);
    rv = uv_write(&w->req, (uv_stream_t *)&conn->tcp, &b, 1, on_write);
    if (rv != 0) {
        free(w);
        conn_fail(conn, uv_strerror(rv));
    }
}

/* Parse one complete answer at the start of conn->in.  Returns its length,
 * 0 when more bytes are needed, or -1 when it is not a response we asked
 * for.  *@yes is whether it said 200. */
static long parse_answer(const char *in, size_t len, bool *yes)
{
    const char *end = NULL;
    unsigned long body = 0;
    bool have_length = false;

    for (size_t i = 0; i + 3 < len; i++) {
        if (memcmp(in + i, "\r\n\r\n", 4) == 0) {
            end = in + i + 2; /* the blank line */
            break;
        }
    }
    if (end == NULL)
        return len >= CONFIRM_IN_MAX ? -1 : 0;
    if (end - in < 13 || memcmp(in, "HTTP/1.", 7) != 0 ||
        (in[12] != ' ' && in[12] != '\r'))
        return -1;
    *yes = memcmp(in + 9, "200", 3) == 0;
    /* Headers: only Content-Length matters. */
    for (const char *line = memchr(in, '\n', (size_t)(end - in));
         line != NULL && line + 1 < end;) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            return -1;
        if ((size_t)(eol - line) > 15 &&
            strncasecmp(line, "content-length:", 15) == 0) {
            char *stop;
            body = strtoul(line + 15, &stop, 10);
            if (stop == line + 15 || (*stop != '\r' && *stop != ' '))
                return -1;
            have_length = true;
        }
        line = eol;
    }
    if (!have_length || body > CONFIRM_IN_MAX)
        return -1;
    size_t total = (size_t)(end + 2 - in) + body;
    if (total > CONFIRM_IN_MAX)
        return -1;
    return total <= len ? (long)total : 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct confirm_conn *conn = h->data;
    (void)hint;
    *buf = uv_buf_init(conn->in + conn->in_len,
                       (unsigned)(sizeof conn->in - conn->in_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct confirm_conn *conn = s->data;
    struct confirm *c = conn->c;
    (void)buf;

    if (nread == 0)
        return;
    if (nread < 0) {
        conn_fail(conn, nread == UV_EOF ? "closed by the voter"
                                        : uv_strerror((int)nread));
        return;
    }
    conn->in_len += (size_t)nread;
    while (conn->state == CONN_OPEN && conn->in_len > 0) {
        bool yes = false;
        long n = parse_answer(conn->in, conn->in_len, &yes);
        if (n == 0)
            return;
        if (n < 0 || conn->sent == 0) {
            conn_fail(conn, "unexpected answer");
            return;
        }
        uint64_t seq = conn->asks[conn->head].seq;
        conn->head = (conn->head + 1) % CONFIRM_PIPELINE;
        conn->count--;
        conn->sent--;
        memmove(conn->in, conn->in + n, conn->in_len - (size_t)n);
        conn->in_len -= (size_t)n;
        deliver(c, seq, yes); /* may end rounds; conn stays open */
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct confirm_conn *conn = req->data;

    if (conn->state != CONN_CONNECTING)
        return; /* closed meanwhile (status is UV_ECANCELED) */
    if (status != 0) {
        conn_fail(conn, uv_strerror(status));
        return;
    }
    conn->state = CONN_OPEN;
    uv_tcp_nodelay(&conn->tcp, 1);
    status = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
    if (status != 0) {
        conn_fail(conn, uv_strerror(status));
        return;
    }
    conn_send(conn);
}

static int conn_connect(struct confirm_conn *conn)
{
    int rv = uv_tcp_init(conn->c->loop, &conn->tcp);
    if (rv != 0)
        return -1;
    conn->tcp.data = conn;
    conn->connect.data = conn;
    conn->state = CONN_CONNECTING;
    rv = uv_tcp_connect(&conn->connect, &conn->tcp,
                        (const struct sockaddr *)&conn->sa, on_connect);
    if (rv != 0) {
        conn_fail(conn, uv_strerror(rv));
        return -1;
    }
    return 0;
}

static bool conn_usable(const struct confirm_conn *conn, uint64_t now)
{
    switch (conn->state) {
    case CONN_IDLE:
        return conn->sa_ok && now >= conn->retry_at_ms;
    case CONN_CONNECTING:
    case CONN_OPEN:
        return conn->count < CONFIRM_PIPELINE;
    default:
        return false;
    }
}

/* The connection for voter @p, made (not connected) if new; its address
 * follows the configuration.  NULL when out of memory. */
static struct confirm_conn *conn_get(struct confirm *c,
                                     const struct confirm_peer *p)
{
    struct confirm_conn *conn = NULL;
    const char *addr = p->http_addr != NULL ? p->http_addr : "";

    for (struct queue *q = c->conns.next; q != &c->conns; q = q->next) {
        struct confirm_conn *x = queue_data(q, struct confirm_conn, link);
        if (x->id == p->id) {
            conn = x;
            break;
        }
    }
    if (conn == NULL) {
        conn = calloc(1, sizeof *conn);
        if (conn == NULL)
            return NULL;
        conn->c = c;
        conn->id = p->id;
        conn->state = CONN_IDLE;
        queue_push(&c->conns, &conn->link);
        conn->addr[0] = '\x01'; /* differs from any address: parsed below */
    }
    if (strcmp(conn->addr, addr) != 0) {
        conn_fail(conn, "address changed");
        snprintf(conn->addr, sizeof conn->addr, "%s", addr);
        conn->sa_ok = strlen(addr) < sizeof conn->addr &&
                      parse_addr(addr, &conn->sa) == 0;
        conn->retry_at_ms = 0;
    }
    return conn;
}

/* Queue a question on @conn (usable), connecting first if needed. */
static int conn_ask(struct confirm_conn *conn, const struct confirm_round *r)
{
    if (conn->state == CONN_IDLE && conn_connect(conn) != 0)
        return -1;
    struct ask *a =
        &conn->asks[(conn->head + conn->count) % CONFIRM_PIPELINE];
    a->seq = r->seq;
    a->cluster = r->cluster;
    a->term = r->term;
    a->asked_ms = r->started_ms;
    conn->count++;
    conn_send(conn); /* waits for the connection if not open yet */
    return 0;
}

/* --- timer -------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    struct confirm *c = t->data;
    uint64_t now = uv_now(c->loop);

    /* A voter that has not answered for a while is cut off and, after a
     * pause, reconnected: behind a partition a connection can stay "open"
     * for minutes with its pipeline full. */
    for (struct queue *q = c->conns.next; q != &c->conns;) {
        struct confirm_conn *conn = queue_data(q, struct confirm_conn, link);
        q = q->next;
        if ((conn->state == CONN_OPEN || conn->state == CONN_CONNECTING) &&
            conn->count > 0 &&
            now - conn->asks[conn->head].asked_ms >= 4ull * c->timeout_ms)
            conn_fail(conn, "no answer");
    }
    while (!queue_empty(&c->rounds)) {
        struct confirm_round *r =
            queue_data(c->rounds.next, struct confirm_round, link);
        if (now - r->started_ms < c->timeout_ms)
            break; /* oldest first: the rest are younger */
        finish(c, r, CONFIRM_TIMEOUT);
    }
    timer_disarm_if_idle(c);
}

/* --- API ---------------------------------------------------------------------- */

void confirm_init(struct confirm *c, uv_loop_t *loop, raft_id self,
                  unsigned timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->loop = loop;
    c->self = self;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
    queue_init(&c->conns);
    queue_init(&c->rounds);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
}

int confirm_start(struct confirm *c, struct confirm_round *round,
                  uint64_t cluster, uint64_t term,
                  const struct confirm_peer *peers, unsigned n_peers,
                  unsigned need, confirm_cb cb, void *data)
{
    uint64_t now = uv_now(c->loop);
    struct confirm_conn *conns[64];
    unsigned usable = 0;

    if (need == 0)
        return 1;
    if (c->closed || n_peers > sizeof conns / sizeof conns[0])
        return CONFIRM_EUNAVAILABLE;
    for (unsigned i = 0; i < n_peers; i++) {
        conns[i] = conn_get(c, &peers[i]);
        if (conns[i] == NULL)
            return CONFIRM_ENOMEM;
        if (conn_usable(conns[i], now))
            usable++;
        else
            conns[i] = NULL;
    }
    if (usable < need)
        return CONFIRM_EUNAVAILABLE;

    memset(round, 0, sizeof *round);
    round->seq = ++c->next_seq;
    round->cluster = cluster;
    round->term = term;
    round->started_ms = now;
    round->need = need;
    round->cb = cb;
    round->data = data;
    queue_push(&c->rounds, &round->link);
    c->starting = round;
    for (unsigned i = 0; i < n_peers; i++) {
        if (conns[i] == NULL)
            continue;
        round->asked++;
        if (conn_ask(conns[i], round) != 0)
            round->no++;
        else
            c->requests++;
    }
    c->starting = NULL;
    /* Before the check below: questions already queued need the timer
     * even when the round is given up. */
    timer_arm(c);
    if (round->asked - round->no < need) {
        /* Connections failed at once; answers that may still come for this
         * seq find no round. */
        queue_remove(&round->link);
        timer_disarm_if_idle(c);
        return CONFIRM_EUNAVAILABLE;
    }
    return 0;
}

void confirm_close(struct confirm *c)
{
    if (c->closed)
        return;
    c->closed = true;
    while (!queue_empty(&c->rounds))
        finish(c, queue_data(c->rounds.next, struct confirm_round, link),
               CONFIRM_CANCELLED);
    uv_close((uv_handle_t *)&c->timer, NULL);
    while (!queue_empty(&c->conns)) {
        struct confirm_conn *conn =
            queue_data(c->conns.next, struct confirm_conn, link);
        queue_remove(&conn->link);
        conn->head = conn->count = conn->sent = 0;
        switch (conn->state) {
        case CONN_CONNECTING:
        case CONN_OPEN:
            conn->state = CONN_CLOSING;
            conn->free_on_close = true;
            uv_close((uv_handle_t *)&conn->tcp, on_close);
            break;
        case CONN_CLOSING:
            conn->free_on_close = true;
            break;
        default:
            free(conn);
        }
    }
}
