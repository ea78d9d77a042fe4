/* membership.h - adding servers to the cluster, one change at a time.
 *
 * A join goes: resolve the address -> check it against the configuration ->
 * raft_add (spare) -> raft_assign standby -> wait until its log has caught up
 * -> raft_assign voter -> record its name and addresses in the store.  A new
 * server votes only once it holds the log, so adding a slow or empty server
 * never stalls the cluster.  If the server refuses our connections because it
 * belongs to another cluster (transport.h), or makes no progress, it is
 * removed again and the join fails with a clear error.
 *
 * Joins are idempotent: asking again for a member with the same address
 * finishes whatever is missing (promotion, record) and succeeds. */
#ifndef RAFTKV_MEMBERSHIP_H
#define RAFTKV_MEMBERSHIP_H

#include "node.h"

/* How long a new server may go without replication progress. */
#define MEMBERSHIP_STALL_MS 10000

/* libraft 0.15's progress state of a server being sent a snapshot
 * (PROGRESS__SNAPSHOT in its src/progress.h, not in its public header). */
#define RAFT_PROGRESS_SNAPSHOT 2

struct join_req;
typedef void (*join_cb)(struct join_req *j, int status, const char *msg);

/* One request to add (or confirm) a server.  Owned by the caller; must live
 * until @cb, which runs exactly once. */
struct join_req
{
    struct queue link;
    struct node *node;
    char name[CONFIG_NAME_MAX + 1];
    char host[CONFIG_HOST_MAX + 1];
    int port;
    char raft_addr[NODE_ADDR_MAX];
    char http_addr[NODE_ADDR_MAX]; /* empty: keep what is recorded */
    raft_id id;
    join_cb cb;
    void *data;
    /* progress */
    int step;
    bool resolving;
    bool told_waiting;        /* logged that it waits for another change */
    uv_getaddrinfo_t resolve;
    struct raft_change change;
    struct node_apply_req apply;
    raft_index target;        /* match index that counts as caught up */
    raft_index last_match;
    uint64_t last_progress_ms;
    uint64_t started_ms;
    int error;                /* while removing after a failure */
    char msg[384];
};

/* Ask the cluster to take server @name at Raft address @raft_hostport
 * ("host:port", host may be a name) with HTTP address @http_addr (may be
 * empty or NULL).  Returns 0 (then @cb runs exactly once with 0 or a NODE_E*
 * code and a message), or an error at once: NODE_EUNREACHABLE when the
 * address is malformed. */
int membership_join(struct node *n, struct join_req *j, const char *name,
                    const char *raft_hostport, const char *http_addr,
                    join_cb cb, void *data);

struct member_change;
typedef void (*member_change_cb)(struct member_change *c, int status,
                                 const char *msg);

/* A removal or a leadership transfer.  Owned by the caller; must live until
 * @cb, which runs exactly once. */
struct member_change
{
    struct node *node;
    raft_id id;
    char name[CONFIG_NAME_MAX + 1];
    member_change_cb cb;
    void *data;
    struct raft_change change;
    struct raft_transfer transfer;
    struct node_apply_req apply;
    char msg[256];
};

/* Remove member @name.  Returns 0 (then @cb runs once), or at once:
 * NODE_ENOTLEADER, NODE_ENOTFOUND (not a member), NODE_ECONFLICT (it is the
 * last voter), NODE_EBUSY, or 1 when @name is this node, the leader: the
 * caller must first move leadership away (membership_transfer) and let the
 * new leader remove it. */
int membership_remove(struct node *n, struct member_change *c,
                      const char *name, member_change_cb cb, void *data);

/* Hand leadership to @name (NULL or "": any up-to-date voter).  Returns 0
 * (then @cb runs once: 0 when leadership moved there, NODE_ETIMEOUT when it
 * did not), or at once: NODE_ENOTLEADER, NODE_ENOTFOUND, NODE_ECONFLICT
 * (not a voter, or no other voter), NODE_EBUSY, or 1 when @name is this
 * node, which already leads. */
int membership_transfer(struct node *n, struct member_change *c,
                        const char *name, member_change_cb cb, void *data);

/* Drive waiting joins; called from the node's tick. */
void membership_tick(struct node *n);

/* Fail every queued join with NODE_ESHUTDOWN (the active one ends when its
 * Raft callback fails). */
void membership_stop(struct node *n);

#endif
