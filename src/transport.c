/* transport.c - the cluster check around libraft's TCP transport; see
 * transport.h for why it exists and what goes over the wire. */
#include "transport.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

#define HELLO_MAGIC "RKVHELO1"
#define ACK_MAGIC "RKVACK01"
#define EXCHANGE_SIZE 24
#define EXCHANGE_TIMEOUT_MS 5000
#define ACK_OK 0
#define ACK_REFUSED 1

/* One connection between libraft's handshake and our verdict. */
struct exchange
{
    struct queue link;
    struct transport *t;
    bool outgoing;
    raft_id peer_id;
    struct raft_uv_connect *req;    /* outgoing: libraft's request */
    struct raft_uv_connect inner_req;
    char *address;                  /* incoming: the peer's address */
    uv_stream_t *stream;            /* NULL while TCP is still connecting */
    uv_timer_t timer;
    bool timer_started;
    uint8_t in[EXCHANGE_SIZE];
    size_t nread;
};

/* A write outlives the exchange when the stream is handed over or closed,
 * so it carries its own buffer. */
struct exchange_write
{
    uv_write_t req;
    uint8_t buf[EXCHANGE_SIZE];
    bool close_after; /* close the stream once the bytes are out */
};

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t local_cluster(struct transport *t)
{
    return t->cluster_id ? t->cluster_id(t->cluster_id_arg) : 0;
}

static void maybe_fire_close(struct transport *t)
{
    if (!t->closing || !t->inner_closed || !queue_empty(&t->pending))
        return;
    if (t->close_cb != NULL) {
        raft_uv_transport_close_cb cb = t->close_cb;
        t->close_cb = NULL;
        cb(&t->iface);
    }
}

static void exchange_free_cb(uv_handle_t *h)
{
    struct exchange *x = h->data;
    free(x->address);
    free(x);
}

/* Forget the exchange: unlink it and free it once its timer is closed.  The
 * stream is not touched. */
static void exchange_dispose(struct exchange *x)
{
    struct transport *t = x->t;
    queue_remove(&x->link);
    if (x->timer_started) {
        x->timer.data = x;
        uv_close((uv_handle_t *)&x->timer, exchange_free_cb);
    } else {
        free(x->address);
        free(x);
    }
    maybe_fire_close(t);
}

static void stream_close(uv_stream_t *s)
{
    if (!uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, (uv_close_cb)raft_free);
}

static void write_cb(uv_write_t *req, int status)
{
    struct exchange_write *w = (struct exchange_write *)req;
    (void)status; /* a failed write shows up as a failed read on the peer */
    if (w->close_after)
        stream_close(req->handle);
    free(w);
}

static int exchange_send(struct exchange *x, const char *magic, uint64_t a,
                         uint64_t b, bool close_after)
{
    struct exchange_write *w = malloc(sizeof *w);
    uv_buf_t buf;
    int rv;

    if (w == NULL)
        return UV_ENOMEM;
    memcpy(w->buf, magic, 8);
    put64(w->buf + 8, a);
    put64(w->buf + 16, b);
    w->close_after = close_after;
    buf = uv_buf_init((char *)w->buf, EXCHANGE_SIZE);
    rv = uv_write(&w->req, x->stream, &buf, 1, write_cb);
    if (rv != 0)
        free(w);
    return rv;
}

/* Outgoing exchange failed or was cancelled: tell libraft, drop the stream. */
static void outgoing_fail(struct exchange *x, int status)
{
    struct raft_uv_connect *req = x->req;
    if (x->stream != NULL) {
        uv_read_stop(x->stream);
        stream_close(x->stream);
    }
    exchange_dispose(x);
    req->cb(req, NULL, status);
}

static void incoming_fail(struct exchange *x)
{
    uv_read_stop(x->stream);
    stream_close(x->stream);
    exchange_dispose(x);
}

static void record_refusal(struct transport *t, raft_id id, uint64_t cluster)
{
    unsigned slot = t->n_refusals;
    for (unsigned i = 0; i < t->n_refusals; i++) {
        if (t->refusals[i].id == id) {
            slot = i;
            break;
        }
    }
    if (slot == TRANSPORT_MAX_REFUSALS)
        slot = 0; /* full: overwrite the oldest slot */
    else if (slot == t->n_refusals)
        t->n_refusals++;
    t->refusals[slot].id = id;
    t->refusals[slot].cluster_id = cluster;
    t->refusals[slot].when_ms = uv_now(t->loop);
}

const struct transport_refusal *transport_refusal(const struct transport *t,
                                                  raft_id id)
{
    for (unsigned i = 0; i < t->n_refusals; i++)
        if (t->refusals[i].id == id)
            return &t->refusals[i];
    return NULL;
}

void transport_forget(struct transport *t, raft_id id)
{
    for (unsigned i = 0; i < t->n_refusals; i++) {
        if (t->refusals[i].id == id) {
            t->refusals[i] = t->refusals[--t->n_refusals];
            return;
        }
    }
}

static void exchange_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct exchange *x = h->data;
    (void)suggested;
    /* Exactly what is missing: never read past the exchange. */
    buf->base = (char *)x->in + x->nread;
    buf->len = EXCHANGE_SIZE - x->nread;
}

static void timeout_cb(uv_timer_t *timer)
{
    struct exchange *x = timer->data;
    log_warn("raft connection %s server %llu: no cluster check answer in "
             "%d ms",
             x->outgoing ? "to" : "from", (unsigned long long)x->peer_id,
             EXCHANGE_TIMEOUT_MS);
    if (x->outgoing)
        outgoing_fail(x, RAFT_NOCONNECTION);
    else
        incoming_fail(x);
}

static void start_timer(struct exchange *x)
{
    uv_timer_init(x->t->loop, &x->timer);
    x->timer.data = x;
    x->timer_started = true;
    uv_timer_start(&x->timer, timeout_cb, EXCHANGE_TIMEOUT_MS, 0);
}

/* --- connecting side ------------------------------------------------------ */

static void ack_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct exchange *x = s->data;
    struct transport *t = x->t;
    (void)buf;

    if (nread == 0)
        return;
    if (nread < 0) {
        outgoing_fail(x, RAFT_NOCONNECTION);
        return;
    }
    x->nread += (size_t)nread;
    if (x->nread < EXCHANGE_SIZE)
        return;
    uv_read_stop(s);
    if (memcmp(x->in, ACK_MAGIC, 8) != 0) {
        log_warn("raft connection to server %llu: peer does not speak the "
                 "raftkv cluster check",
                 (unsigned long long)x->peer_id);
        outgoing_fail(x, RAFT_NOCONNECTION);
        return;
    }
    if (get64(x->in + 8) != ACK_OK) {
        uint64_t theirs = get64(x->in + 16);
        const struct transport_refusal *prev =
            transport_refusal(t, x->peer_id);
        if (prev == NULL || prev->cluster_id != theirs)
            log_warn("server %llu refused our Raft connection: it belongs to "
                     "cluster %016llx, we are %016llx",
                     (unsigned long long)x->peer_id,
                     (unsigned long long)theirs,
                     (unsigned long long)local_cluster(t));
        record_refusal(t, x->peer_id, theirs);
        outgoing_fail(x, RAFT_NOCONNECTION);
        return;
    }
    transport_forget(t, x->peer_id);
    struct raft_uv_connect *req = x->req;
    uv_stream_t *stream = x->stream;
    exchange_dispose(x);
    req->cb(req, stream, 0);
}

/* libraft 0.15 leaves Nagle on.  Its messages are small and pipelined, so a
 * second AppendEntries (or its result) would wait for the ACK of the first:
 * measured here, that made writes stall in bursts of 40-80 ms. */
static void stream_nodelay(uv_stream_t *s)
{
    if (s->type == UV_TCP)
        uv_tcp_nodelay((uv_tcp_t *)s, 1);
}

static void inner_connect_cb(struct raft_uv_connect *inner_req,
                             uv_stream_t *stream, int status)
{
    struct exchange *x = inner_req->data;
    struct transport *t = x->t;

    if (status != 0) {
        outgoing_fail(x, status);
        return;
    }
    if (t->closing) {
        stream_close(stream);
        outgoing_fail(x, RAFT_CANCELED);
        return;
    }
    x->stream = stream;
    stream->data = x;
    stream_nodelay(stream);
    start_timer(x);
    if (exchange_send(x, HELLO_MAGIC, local_cluster(t), t->id, false) != 0 ||
        uv_read_start(stream, exchange_alloc_cb, ack_read_cb) != 0)
        outgoing_fail(x, RAFT_NOCONNECTION);
}

static int iface_connect(struct raft_uv_transport *iface,
                         struct raft_uv_connect *req, raft_id id,
                         const char *address, raft_uv_connect_cb cb)
{
    struct transport *t = iface->impl;
    struct exchange *x = calloc(1, sizeof *x);
    int rv;

    if (x == NULL)
        return RAFT_NOMEM;
    x->t = t;
    x->outgoing = true;
    x->peer_id = id;
    x->req = req;
    req->cb = cb;
    x->inner_req.data = x;
    queue_push(&t->pending, &x->link);
    rv = t->inner.connect(&t->inner, &x->inner_req, id, address,
                          inner_connect_cb);
    if (rv != 0) {
        queue_remove(&x->link);
        free(x);
        memcpy(iface->errmsg, t->inner.errmsg, sizeof iface->errmsg);
    }
    return rv;
}

/* --- accepting side ------------------------------------------------------- */

static void hello_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct exchange *x = s->data;
    struct transport *t = x->t;
    uint64_t ours, theirs;
    (void)buf;

    if (nread == 0)
        return;
    if (nread < 0) {
        incoming_fail(x);
        return;
    }
    x->nread += (size_t)nread;
    if (x->nread < EXCHANGE_SIZE)
        return;
    uv_read_stop(s);
    if (memcmp(x->in, HELLO_MAGIC, 8) != 0) {
        log_warn("raft connection from %s: no cluster check hello; closed",
                 x->address);
        incoming_fail(x);
        return;
    }
    theirs = get64(x->in + 8);
    ours = local_cluster(t);
    if (ours != 0 && theirs != 0 && ours != theirs) {
        log_warn("refused Raft connection from server %llu at %s: it belongs "
                 "to cluster %016llx, we are %016llx",
                 (unsigned long long)x->peer_id, x->address,
                 (unsigned long long)theirs, (unsigned long long)ours);
        if (exchange_send(x, ACK_MAGIC, ACK_REFUSED, ours, true) != 0)
            stream_close(x->stream);
        exchange_dispose(x);
        return;
    }
    if (exchange_send(x, ACK_MAGIC, ACK_OK, ours, false) != 0) {
        incoming_fail(x);
        return;
    }
    /* Hand over: libraft now owns the stream. */
    char *address = x->address;
    raft_id id = x->peer_id;
    x->address = NULL;
    exchange_dispose(x);
    t->accept_cb(&t->iface, id, address, s);
    free(address);
}

static void inner_accept_cb(struct raft_uv_transport *inner, raft_id id,
                            const char *address, uv_stream_t *stream)
{
    struct transport *t = inner->data;
    struct exchange *x;

    if (t->closing) {
        stream_close(stream);
        return;
    }
    x = calloc(1, sizeof *x);
    if (x == NULL || (x->address = strdup(address)) == NULL) {
        free(x);
        stream_close(stream);
        return;
    }
    x->t = t;
    x->peer_id = id;
    x->stream = stream;
    stream->data = x;
    stream_nodelay(stream);
    queue_push(&t->pending, &x->link);
    start_timer(x);
    if (uv_read_start(stream, exchange_alloc_cb, hello_read_cb) != 0)
        incoming_fail(x);
}

/* --- the raft_uv_transport interface ------------------------------------- */

static int iface_init(struct raft_uv_transport *iface, raft_id id,
                      const char *address)
{
    struct transport *t = iface->impl;
    int rv;
    t->id = id;
    rv = t->inner.init(&t->inner, id, address);
    if (rv != 0)
        memcpy(iface->errmsg, t->inner.errmsg, sizeof iface->errmsg);
    return rv;
}

static int iface_listen(struct raft_uv_transport *iface, raft_uv_accept_cb cb)
{
    struct transport *t = iface->impl;
    int rv;
    t->accept_cb = cb;
    rv = t->inner.listen(&t->inner, inner_accept_cb);
    if (rv != 0)
        memcpy(iface->errmsg, t->inner.errmsg, sizeof iface->errmsg);
    return rv;
}

static void inner_close_cb(struct raft_uv_transport *inner)
{
    struct transport *t = inner->data;
    t->inner_closed = true;
    maybe_fire_close(t);
}

static void iface_close(struct raft_uv_transport *iface,
                        raft_uv_transport_close_cb cb)
{
    struct transport *t = iface->impl;
    struct queue *q, *next;

    t->closing = true;
    t->close_cb = cb;
    /* Exchanges that own a stream end now; those still connecting end when
     * the inner transport cancels them. */
    for (q = t->pending.next; q != &t->pending; q = next) {
        struct exchange *x = queue_data(q, struct exchange, link);
        next = q->next;
        if (x->stream == NULL)
            continue;
        if (x->outgoing)
            outgoing_fail(x, RAFT_CANCELED);
        else
            incoming_fail(x);
    }
    t->inner.close(&t->inner, inner_close_cb);
}

int transport_init(struct transport *t, uv_loop_t *loop,
                   uint64_t (*cluster_id)(void *arg), void *arg)
{
    int rv;

    memset(t, 0, sizeof *t);
    t->loop = loop;
    t->cluster_id = cluster_id;
    t->cluster_id_arg = arg;
    queue_init(&t->pending);
    rv = raft_uv_tcp_init(&t->inner, loop);
    if (rv != 0)
        return rv;
    t->inner.data = t;
    t->iface.impl = t;
    t->iface.init = iface_init;
    t->iface.listen = iface_listen;
    t->iface.connect = iface_connect;
    t->iface.close = iface_close;
    return 0;
}

void transport_release(struct transport *t)
{
    raft_uv_tcp_close(&t->inner);
}
