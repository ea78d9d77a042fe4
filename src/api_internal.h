/* api_internal.h - what the handler files (api_*.c, forward.c) share. */
#ifndef RAFTKV_API_INTERNAL_H
#define RAFTKV_API_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "api.h"
#include "command.h"
#include "membership.h"
#include "readindex.h"

/* The request header that marks a request relayed by another node: a node
 * that is not the leader answers it with 503 instead of relaying again. */
#define API_FORWARDED_HEADER "x-raftkv-forwarded"

struct api_op;
typedef void (*api_applied_fn)(struct api_op *op, struct http_req *req,
                               const struct fsm_result *res);
typedef void (*api_serve_fn)(struct api *a, struct http_req *req);

/* A request waiting on something (Raft, a barrier, the leader), which
 * outlives either side: the client may leave before the answer, and the
 * answer may come after the client left. */
struct api_op
{
    struct api *api;
    struct http_req *req; /* NULL once the request is released */
    bool pending;         /* a callback is still due */
    json_t *doc;          /* parsed body, owns strings the commands use */
    void *mem;            /* more memory the commands use (free()) */
    struct command cmds[2];
    unsigned n_cmds;
    struct command_txn txn;
    api_applied_fn applied; /* writes: builds the answer */
    api_serve_fn serve;     /* linearizable reads: serves after a barrier */
    bool leader_read;       /* the read waits on this node's read index */
    int tag;                /* handler-specific */
    union {
        struct node_wait wait;
        struct node_apply_req apply;
        struct node_read read;
        struct join_req join;
        struct member_change change;
        struct client_request *forward;
    } u;
};

/* --- replies -------------------------------------------------------------- */

/* Send @doc (reference stolen) as the JSON answer. */
void api_reply_json(struct http_req *req, int status, json_t *doc);

/* Map a NODE_E* code to a status and a JSON error.  NODE_ENOTLEADER goes to
 * api_to_leader (nothing was proposed, so relaying is safe). */
void api_reply_node_error(struct api *a, struct http_req *req, int code,
                          const char *msg);

/* --- ops ------------------------------------------------------------------ */

struct api_op *api_op_new(struct api *a, struct http_req *req);

/* A callback arrived: returns the request to answer, or NULL when the client
 * is gone (the op is then freed).  Once answered the op may be freed by the
 * release callback: do not touch it afterwards. */
struct http_req *api_op_settle(struct api_op *op);

/* A callback arrived with @status: returns the request to answer when
 * @status is 0 and the client is still there; otherwise answers the error
 * (@msg, or the code's own text), or drops the op when the client left, and
 * returns NULL.  Like api_op_settle, the op may be gone after answering. */
struct http_req *api_op_result(struct api_op *op, int status,
                               const char *msg);

/* The op ends because this node is not the leader: its request goes to the
 * leader (api_to_leader) if the client is still there. */
void api_op_to_leader(struct api_op *op);

/* --- running where it must run ------------------------------------------- */

/* Propose op->cmds and call op->applied once applied.  Bootstraps a pristine
 * node first; on a follower relays the original request to the leader.
 * Takes over the op (it replies in every case). */
void api_submit(struct api_op *op);

/* For a request that must run on the leader and this node is not it:
 * ?redirect -> 307; leader known -> relay (forward.c); else 503. */
void api_to_leader(struct api *a, struct http_req *req);

/* Parse ?consistency (default @def_linearizable).  Returns 0, or -1 after
 * answering 400. */
int api_consistency(struct http_req *req, bool def_linearizable,
                    bool *linearizable);

/* Run @serve now (stale), or (linearizable) once the store holds every
 * write acknowledged before now: on the leader after it confirmed that it
 * still leads (readindex.h), on a follower after the leader gave it a read
 * index (followread.h), or relayed to the leader (--follower-reads relay,
 * or when no read index can be had). */
void api_read(struct api *a, struct http_req *req, bool linearizable,
              api_serve_fn serve);

/* Add X-Raftkv-Consistency and X-Raftkv-Index headers. */
void api_read_headers(struct api *a, struct http_req *req, bool linearizable);

/* True when this node is pristine and may bootstrap on demand. */
bool api_pristine(struct api *a);

/* A pristine node bootstraps for a client's request, never for one another
 * node relayed to it: that node took it for its cluster's leader, so it has
 * lost its data (emptied and restarted at the same address), and a cluster
 * of its own would acknowledge writes the real cluster never sees.  Answers
 * such a request 503 and returns true; otherwise returns false. */
bool api_refuse_relayed_bootstrap(struct api *a, struct http_req *req);

/* Relay @req to the leader at @leader_http and its answer back. */
void forward_request(struct api *a, struct http_req *req,
                     const char *leader_http);

/* --- handlers ------------------------------------------------------------- */

void api_ref_set(struct api *a, struct http_req *req);
void api_ref_get(struct api *a, struct http_req *req);
void api_ref_delete(struct api *a, struct http_req *req);
void api_ref_join(struct api *a, struct http_req *req);

void api_kv_item(struct api *a, struct http_req *req);
void api_kv_list(struct api *a, struct http_req *req);
void api_kv_txn(struct api *a, struct http_req *req);

void api_cluster_members(struct api *a, struct http_req *req);
void api_cluster_member(struct api *a, struct http_req *req);
void api_cluster_leader(struct api *a, struct http_req *req);
void api_status(struct api *a, struct http_req *req);
void api_internal_confirm(struct api *a, struct http_req *req);
void api_internal_readindex(struct api *a, struct http_req *req);
void api_health(struct api *a, struct http_req *req);
void api_ready(struct api *a, struct http_req *req);
void api_metrics(struct api *a, struct http_req *req);

/* Shared by /join and POST /v1/cluster/members. */
void api_add_member(struct api *a, struct http_req *req, const char *name,
                    const char *raft_addr, const char *http_addr);

/* Helpers */
json_t *api_member_json(const struct node_member *m);
const char *api_role_name(int role);

/* Validate a key: 1..max bytes of UTF-8 without NUL.  Returns 0, or -1
 * after answering 400. */
int api_check_key(struct api *a, struct http_req *req, const void *key,
                  size_t len);

#endif
