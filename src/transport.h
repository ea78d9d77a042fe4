/* transport.h - libraft's TCP transport with a cluster check on every
 * connection.
 *
 * libraft 0.15.0 crashes a node that receives Raft messages from a leader of
 * another cluster, and a leader that adds such a node can lose quorum.  The
 * Raft handshake carries only a server id and address, so this wrapper adds
 * one exchange of its own right after it: the connecting side sends its
 * cluster id, the accepting side answers "ok" or "wrong cluster" and only
 * then do both sides hand the stream to libraft.  A node that has no cluster
 * id yet (a fresh node waiting to be added) accepts anyone; two nodes that
 * both know their cluster ids talk only if the ids are equal.
 *
 * The exchange, all integers little-endian:
 *   connector -> acceptor  "RKVHELO1" | u64 cluster id | u64 server id
 *   acceptor -> connector  "RKVACK01" | u64 status (0 ok, 1 refused) |
 *                          u64 acceptor's cluster id
 * libraft reads its own handshake with exact-size reads and the connector
 * sends nothing after its hello until the answer arrives, so no byte meant
 * for libraft is ever consumed here.
 */
#ifndef RAFTKV_TRANSPORT_H
#define RAFTKV_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stdint.h>

#include "queue.h"

#define TRANSPORT_MAX_REFUSALS 16

struct transport_refusal
{
    raft_id id;          /* server whose acceptor refused us */
    uint64_t cluster_id; /* the cluster it belongs to */
    uint64_t when_ms;    /* uv_now of the refusal */
};

struct transport
{
    struct raft_uv_transport iface; /* what raft_uv_init takes */
    struct raft_uv_transport inner; /* libraft's own TCP transport */
    uv_loop_t *loop;
    uint64_t (*cluster_id)(void *arg);
    void *cluster_id_arg;
    raft_id id;
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    bool closing;
    bool inner_closed;
    struct queue pending; /* exchanges in progress, both directions */
    struct transport_refusal refusals[TRANSPORT_MAX_REFUSALS];
    unsigned n_refusals;
};

/* Set up @t on @loop; @cluster_id(@arg) tells the local cluster id (0 when
 * none yet) at the time of each exchange.  Pass &t->iface to raft_uv_init.
 * Returns 0 or a RAFT_* error code. */
int transport_init(struct transport *t, uv_loop_t *loop,
                   uint64_t (*cluster_id)(void *arg), void *arg);

/* Release memory after libraft has closed the transport (that is, after
 * raft_close's callback).  @t may then be initialized again. */
void transport_release(struct transport *t);

/* If our last attempt to connect to server @id was refused because it
 * belongs to another cluster, return that refusal; NULL otherwise. */
const struct transport_refusal *transport_refusal(const struct transport *t,
                                                  raft_id id);

/* Forget refusals recorded for @id (before trying to add it again). */
void transport_forget(struct transport *t, raft_id id);

#endif
