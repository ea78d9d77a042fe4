/* propose.h - group commit: the writes that arrive in one loop iteration
 * travel to the Raft log together, as the commands of a single entry.
 *
 * One entry costs one disk write and one round of AppendEntries whatever it
 * carries, so under load packing commands is what makes a replicated write
 * cheap.  Nothing waits for a batch to fill: the entry is proposed at the
 * end of the same loop iteration (a check handle), and an idle handle keeps
 * the loop from sleeping while commands wait.  Each request still gets its
 * own outcome once the entry is committed and applied. */
#ifndef RAFTKV_PROPOSE_H
#define RAFTKV_PROPOSE_H

#include <raft.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "command.h"
#include "queue.h"

struct node;
struct node_apply_req;

/* Propose early when a batch gets this big. */
#define PROPOSE_MAX_BYTES ((size_t)4 << 20)
#define PROPOSE_MAX_COMMANDS 4096

struct propose
{
    struct node *node;
    struct command_batch batch;
    struct queue reqs; /* node_apply_req waiting for the next entry */
    uv_idle_t idle;
    bool closed;
    uint64_t entries;  /* proposed, for metrics */
    uint64_t commands;
};

void propose_init(struct propose *p, struct node *node, uv_loop_t *loop);

/* Queue @n commands of @req for the next entry.  Returns 0 (then req->cb
 * runs once), or NODE_ENOMEM / NODE_EIO (malformed command) at once. */
int propose_add(struct propose *p, struct node_apply_req *req,
                const struct command *cmds, unsigned n);

/* Propose what is queued as one entry (end of the loop iteration). */
void propose_flush(struct propose *p);

/* Fail everything queued with @status, then stop the idle handle. */
void propose_close(struct propose *p, int status);

#endif
