/* propose.h - group commit: the writes that arrive while the leader's own
 * log write is on the disk travel to the Raft log together, as the commands
 * of a single entry.
 *
 * One entry costs one round of AppendEntries, one decode and one apply on
 * every node whatever it carries, so under load packing commands is what
 * makes a replicated write cheap.  An entry is proposed at the end of the
 * loop iteration (a check handle; an idle handle keeps the loop from
 * sleeping while commands wait), except while the leader has a log write
 * in flight.  libraft 0.15 writes one batch at a time and commits nothing
 * past what the leader itself has stored, so commands proposed then could
 * not commit before the next write completes anyway: they wait in the
 * batch until that write's completion wakes the loop, and go out as one
 * entry.  On a 2-core machine that is CPU-bound under load, this made
 * three times fewer entries and ~6% more writes/s (bench/NOTES.md).  The
 * hold is bounded by PROPOSE_HOLD_MS so that it never depends on the write
 * completing: if it does not, the commands are proposed anyway and wait in
 * libraft's log like any other (and if it never does, src/logwatch.h hands
 * leadership on).  Each request still gets its own outcome
 * once the entry is committed and applied. */
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

/* Longest a batch waits for the leader's log write in flight: above what a
 * healthy write takes (0.3-0.7 ms measured here), so that it rarely runs
 * out (2-4% of held entries at 64 writers). */
#define PROPOSE_HOLD_MS 2

struct propose
{
    struct node *node;
    struct command_batch batch;
    struct queue reqs; /* node_apply_req waiting for the next entry */
    uv_idle_t idle;
    uv_timer_t hold;   /* PROPOSE_HOLD_MS from the first held flush */
    bool hold_expired; /* the next flush proposes whatever the disk does */
    bool closed;
    /* The keys the batch writes, as hashes: a command writing one of them
     * again goes into the next entry (see propose_add).  Open addressing;
     * a slot belongs to the batch when its stamp is @keys_gen. */
    struct propose_key *keys;
    size_t keys_cap, keys_n;
    uint32_t keys_gen;
    uint64_t entries;  /* proposed, for metrics */
    uint64_t commands;
    uint64_t held;     /* entries whose batch waited for a log write */
    uint64_t holds_expired; /* ...and of those, the ones the timer sent */
};

void propose_init(struct propose *p, struct node *node, uv_loop_t *loop);

/* Queue @n commands of @req for the next entry.  A key is written at most
 * once per entry: if @cmds write a key the queued commands already write,
 * those are proposed first, so that every write of a key gets a mod_index
 * of its own (compare-and-swap relies on it).  Returns 0 (then req->cb
 * runs once), or NODE_ENOMEM / NODE_EIO (malformed command) at once. */
int propose_add(struct propose *p, struct node_apply_req *req,
                const struct command *cmds, unsigned n);

/* Propose what is queued as one entry (end of the loop iteration), unless
 * the leader's log write is in flight: then keep it queued until a flush
 * after that write completes, or until the hold timer runs out. */
void propose_flush(struct propose *p);

/* Fail everything queued with @status, then close the handles. */
void propose_close(struct propose *p, int status);

#endif
