/* node.h - one raftkv node: Raft (libraft on libuv), the state machine, and
 * the cluster it belongs to.
 *
 * Lifecycle.  A node starts Raft on its data directory.  A node whose
 * directory is empty and that has no --join is "pristine": Raft runs with no
 * configuration, so a leader may still add it.  The first time it must act
 * as a leader (a write or a join arrives) it bootstraps itself as a one-node
 * cluster.  libraft 0.15.0 cannot bootstrap a started instance, so that means
 * closing Raft and opening it again on the same loop (node_ensure_cluster).
 * A node that has any Raft state -- a term, an entry, a snapshot -- has been
 * contacted by a leader and never bootstraps.
 *
 * Writes.  node_apply encodes commands (command.h), hands them to raft_apply
 * and calls back once the entry is committed and applied, or has failed.
 *
 * Names.  libraft names servers by 64-bit ids; raftkv by names like "node1".
 * node_name_id gives every name a stable id; the name and addresses of each
 * member are replicated in the store (members table).
 *
 * Everything runs on the loop thread. */
#ifndef RAFTKV_NODE_H
#define RAFTKV_NODE_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "client.h"
#include "command.h"
#include "config.h"
#include "followread.h"
#include "fsm.h"
#include "ioguard.h"
#include "logwatch.h"
#include "queue.h"
#include "propose.h"
#include "readindex.h"
#include "snapsend.h"
#include "store.h"
#include "transport.h"

/* Error codes (negative), see node_strerror. */
enum {
    NODE_ENOTLEADER = -1,      /* this node is not the leader */
    NODE_ENOLEADER = -2,       /* no leader known right now */
    NODE_ELEADERSHIPLOST = -3, /* lost leadership: outcome unknown */
    NODE_ESHUTDOWN = -4,       /* the node is stopping */
    NODE_ENOTMEMBER = -5,      /* waiting to be added to a cluster */
    NODE_ECONFLICT = -6,       /* request conflicts with the membership */
    NODE_EOTHERCLUSTER = -7,   /* the peer belongs to another cluster */
    NODE_ETIMEOUT = -8,        /* gave up waiting */
    NODE_EUNREACHABLE = -9,    /* a peer address cannot be resolved/used */
    NODE_ENOMEM = -10,
    NODE_EIO = -11,
    NODE_ENOTFOUND = -12,      /* no such member */
    NODE_EBUSY = -13,          /* another membership change is running */
};

enum node_phase {
    NODE_PRISTINE,      /* no cluster yet */
    NODE_BOOTSTRAPPING, /* closing and reopening Raft to bootstrap */
    NODE_RUNNING,       /* member of a cluster (or being added to one) */
    NODE_STOPPING,
};

#define NODE_ADDR_MAX 64 /* "255.255.255.255:65535" and then some */

/* A member as the node knows it (raft configuration + members table). */
struct node_member
{
    raft_id id;
    char name[CONFIG_NAME_MAX + 1]; /* empty when not recorded yet */
    char raft_addr[NODE_ADDR_MAX];
    char http_addr[NODE_ADDR_MAX]; /* empty when not known */
    int role;                      /* RAFT_VOTER, RAFT_STANDBY, RAFT_SPARE */
};

struct node_apply_req;
typedef void (*node_apply_cb)(struct node_apply_req *req, int status,
                              const struct fsm_result *result);

/* A write in flight.  Owned by the caller; must live until the callback,
 * which runs exactly once. */
struct node_apply_req
{
    node_apply_cb cb;
    void *data;
    bool done;
    struct queue link;     /* in the proposal that carries it */
    unsigned first, count; /* its commands within the entry */
};

struct node_wait;
typedef void (*node_wait_cb)(struct node_wait *w, int status);

/* Waiting for the node to have a cluster (see node_ensure_cluster). */
struct node_wait
{
    struct queue link;
    node_wait_cb cb;
    void *data;
};

struct join_req; /* membership.h */

/* One incarnation of libraft: a node has two when it bootstraps (libraft
 * 0.15 cannot bootstrap a started instance, so the first is closed and a
 * second opened).  libraft 0.15 may run the close callback of its uv I/O
 * twice, and uses its memory after the first: nothing of an instance is
 * freed or reused until the loop has stopped (node_destroy). */
struct raft_instance
{
    struct raft raft;
    struct raft_io io;
    struct transport transport;
    struct ioguard guard;
    struct snapsend snapsend;
    bool io_ready;   /* raft_uv_init succeeded */
    bool raft_ready; /* raft_init succeeded */
    bool closed;     /* raft_close's callback ran (once is enough) */
    struct raft_instance *next;
};

struct node
{
    uv_loop_t *loop;
    const struct config *cfg;
    char raft_addr[NODE_ADDR_MAX]; /* resolved, advertised */
    char http_addr[NODE_ADDR_MAX];
    raft_id id;
    char raft_dir[CONFIG_PATH_MAX + 16];
    char kv_dir[CONFIG_PATH_MAX + 16];
    enum node_phase phase;
    /* The bootstrap's raft_close is pending: bootstrap_closed will run and
     * must finish a stop that arrives meanwhile.  Only this part of
     * NODE_BOOTSTRAPPING: once Raft is reopened, a stop closes it itself. */
    bool bootstrap_closing;
    /* The cluster id this node's bootstrap drew: its Raft connections are
     * checked against it from the moment Raft reopens, before the first
     * entry (which carries it) is applied. */
    uint64_t bootstrap_id;
    uint64_t started_ms; /* uv_now at start, for uptime */

    struct store *store;
    struct fsm fsm;
    struct raft_fsm raft_fsm;
    struct raft_instance *ri; /* the current one */
    struct raft *raft;        /* &ri->raft */
    bool raft_open; /* raft_init done and raft_close not yet finished */

    struct queue waiters;        /* node_wait, until a cluster exists */
    struct node_apply_req init;  /* the bootstrap's first entry */
    uv_timer_t tick;
    uv_check_t flush; /* proposes writes, starts the store's commits */
    uv_async_t committed; /* the store's writer thread ended a commit */
    uint64_t last_flush_ms;
    /* Snapshot settings last given to libraft (node_snapshot_policy). */
    unsigned snap_threshold, snap_trailing;
    /* node_trim_when_quiet */
    uint64_t trimmed_at_snapshot; /* snapshots seen by the last malloc_trim */
    uint64_t trim_applied;        /* applied index at the last tick */
    unsigned trim_quiet_ticks;    /* ticks since it last moved */
    uint64_t heap_trims;          /* malloc_trim calls */
    struct client *client;
    struct raft_instance *instances; /* every one opened, newest first */

    /* --join and address announcements */
    bool join_inflight;
    char join_target[CONFIG_HOST_MAX + 8]; /* HOST:PORT to ask next */
    unsigned join_attempts;
    uint64_t next_announce_ms;
    bool announce_inflight;

    /* membership changes, one at a time (membership.c) */
    struct queue joins;
    struct join_req *join_active;
    bool change_active; /* a removal or transfer is running */

    struct readindex reads; /* linearizable reads (readindex.c) */
    struct followread fread; /* ...served by this node as a follower */
    struct propose propose; /* group commit of writes (propose.c) */
    struct logwatch logwatch; /* a hung log write hands leadership on */

    uint64_t elections_seen; /* leader changes observed */
    raft_id last_leader;
    bool election_timeout_set; /* the configured one, after a leader was seen */
    void (*stopped_cb)(struct node *n);
};

/* The stable Raft id of node name @name (never 0). */
raft_id node_name_id(const char *name);

/* Open the store and start Raft.  @raft_addr and @http_addr are resolved
 * "a.b.c.d:port" strings.  Returns 0, or -1 after logging why. */
int node_start(struct node *n, uv_loop_t *loop, const struct config *cfg,
               const char *raft_addr, const char *http_addr);

/* Stop Raft, fail pending requests, close the store; @cb runs when done. */
void node_stop(struct node *n, void (*cb)(struct node *n));

/* Free what libraft still holds, once the loop has stopped. */
void node_destroy(struct node *n);

/* If the node has a cluster, return 0 at once.  If it is pristine without
 * --join, start the bootstrap and return 1: @w->cb runs later with 0 or an
 * error.  Otherwise return NODE_ENOTMEMBER or NODE_ESHUTDOWN. */
int node_ensure_cluster(struct node *n, struct node_wait *w, node_wait_cb cb,
                        void *data);

/* Propose @cmds, applied atomically (they share an entry with the other
 * writes of this loop iteration: see propose.h).  Returns 0 (then @cb runs
 * exactly once with 0 and the fsm result of these commands, or
 * NODE_ENOTLEADER when nothing was proposed, NODE_ELEADERSHIPLOST when the
 * outcome is unknown, NODE_ESHUTDOWN), or an error at once:
 * NODE_ENOTLEADER, NODE_ENOMEM, NODE_EIO. */
int node_apply(struct node *n, struct node_apply_req *req,
               const struct command *cmds, unsigned n_cmds, node_apply_cb cb,
               void *data);

bool node_is_leader(struct node *n);

/* Is this node a follower of @leader in @term right now?  A yes means it
 * has not voted in any later term (confirm.h). */
bool node_follows(struct node *n, uint64_t term, raft_id leader);

/* Highest log index this node has applied: Raft's count (which includes
 * configuration changes and barriers) or the store's (which may be ahead
 * right after a restart), whichever is higher. */
uint64_t node_applied_index(struct node *n);

/* The current leader as far as this node knows.  Returns 0 and fills @out,
 * or NODE_ENOLEADER. */
int node_leader(struct node *n, struct node_member *out);

/* Members from the Raft configuration, names and HTTP addresses from the
 * store.  Fills up to @cap entries; returns the number of members. */
unsigned node_members(struct node *n, struct node_member *out, unsigned cap);

/* Look up one member by id in the configuration (@out may be NULL to ask
 * only whether it is there).  Returns 0 or -1. */
int node_member(struct node *n, raft_id id, struct node_member *out);

const char *node_role(struct node *n); /* leader/follower/candidate/... */
const char *node_strerror(int code);

#endif
