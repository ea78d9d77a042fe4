/* fsm.h - the replicated state machine: Raft entries applied to the store.
 *
 * fsm_apply_entry is the one place where the database changes.  Each entry
 * (a batch of commands, see command.h) is applied in one LMDB transaction that
 * also records the entry's index, so entries already in the store are skipped
 * when libraft replays its log at start: restart time does not grow with
 * history.
 *
 * Snapshots come in two forms.  The one libraft takes and keeps on disk is a
 * marker: LMDB already is a durable, consistent copy of the state, so the
 * snapshot only needs to say "the store, synced at applied index N".
 * Copying the store instead cost a loop stall and a buffer proportional to
 * its size every few thousand entries (measured at 1M keys: 0.3 s on the
 * leader, over 1 s on followers, 100+ MiB each time).  Only a follower too
 * far behind for the log needs the data itself: it gets a full
 * serialization of one consistent read transaction (snapsend.h), which
 * restore loads into the store in one write transaction.  Both carry the
 * store's applied index, so a node restoring a snapshot older than its own
 * store keeps its store (libraft restores the newest snapshot on every
 * start).
 *
 * Marker: "RKVSNAPM" | u64 applied_index | u64 cluster_id.
 * Full snapshot, integers little-endian unless said otherwise:
 *   "RKVSNAP1" | u64 applied_index | u64 cluster_id | u64 n_members |
 *   u64 n_keys | members: varint id, name, raft_addr, http_addr |
 *   keys: key, varint create_index, varint mod_index, varint version, value
 * where strings are varint-length-prefixed. */
#ifndef RAFTKV_FSM_H
#define RAFTKV_FSM_H

#include <raft.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "command.h"
#include "store.h"

/* Outcome of one command of the entry just applied. */
struct fsm_outcome
{
    int status;      /* 0, FSM_ENOTFOUND or FSM_ECOMPARE */
    uint64_t index;  /* the entry's Raft index */
    /* PUT: the new metadata.  DELETE: the deleted key's.  ECOMPARE: the
     * current key's (all 0 when it does not exist). */
    bool exists;
    uint64_t create_index;
    uint64_t mod_index;
    uint64_t version;
    /* TXN: which branch ran and its op results in fsm_result.ops */
    bool succeeded;
    unsigned first_op, n_ops;
};

/* Result of one operation of a transaction. */
struct fsm_op_result
{
    enum command_op_kind kind;
    struct command_bytes key; /* points into the entry */
    bool found;               /* GET: key exists; DELETE: it existed */
    uint64_t create_index, mod_index, version;
    const void *value; /* GET: a copy owned by the fsm */
    size_t value_len;
    size_t value_off; /* where the copy sits in the arena (internal) */
};

#define FSM_ENOTFOUND 1 /* delete of a missing key */
#define FSM_ECOMPARE 2  /* a cas did not match */

/* What fsm_apply_entry hands to the apply callback (via raft's result
 * pointer).  Owned by the fsm and valid until the next apply: libraft runs
 * the callback of the leader's request right after applying its entry. */
struct fsm_result
{
    uint64_t index;
    unsigned n;                   /* 0 when the entry was skipped */
    struct fsm_outcome *outcomes; /* n of them, in command order */
    struct fsm_op_result *ops;    /* transaction op results */
    unsigned n_ops;
};

struct fsm
{
    struct store *store;
    struct raft *raft;       /* to learn the index being applied */
    uint64_t applied_index;  /* mirror of meta "applied" */
    uint64_t cluster_id;     /* mirror of meta "cluster_id"; 0 = none yet */
    uint64_t snapshots_taken;
    uint64_t snapshots_restored;
    uint64_t members_version; /* bumped when members change */
    /* Bytes of entries applied since the last snapshot taken or restored:
     * roughly what libraft still holds of its log in memory. */
    uint64_t log_bytes;
    uint64_t entry_bytes_avg; /* moving average of recent entry sizes */
    /* Called when the store fails (disk full, I/O error): the node must not
     * go on, since it can no longer apply what it acknowledged. */
    void (*fatal)(void *arg, const char *what);
    void *fatal_arg;
    struct fsm_result result;
    unsigned outcomes_cap;
    unsigned ops_cap;
    uint8_t *arena; /* copies of values read by transactions */
    size_t arena_len, arena_cap;
};

/* Load the applied index and cluster id from @store.  Errors: STORE_E*. */
int fsm_init(struct fsm *f, struct store *store);
void fsm_close(struct fsm *f);

/* Fill @out with callbacks for raft_init (FSM version 2, with
 * snapshot_finalize).  @f->raft must be set before raft_start. */
void fsm_raft_bind(struct fsm *f, struct raft_fsm *out);

/* Apply entry @buf/@len at Raft index @index.  Returns 0 and sets *result
 * (entries at or below the applied index are skipped: n = 0).  A malformed
 * entry is logged and skipped (it is committed: every node skips it alike).
 * Errors: RAFT_IOERR after calling f->fatal. */
int fsm_apply_entry(struct fsm *f, uint64_t index, const void *buf,
                    size_t len, struct fsm_result **result);

/* The snapshot libraft takes and keeps on disk: a marker that stands for
 * the store itself, which is first synced so that it holds at least the
 * applied index.  O(1) in the size of the store, unlike a copy of it.
 * Free the buffers with fsm_snapshot_free.  Errors: RAFT_NOMEM, RAFT_IOERR
 * (the store could not be synced). */
int fsm_snapshot_take(struct fsm *f, struct raft_buffer **bufs, unsigned *n);
void fsm_snapshot_free(struct raft_buffer *bufs, unsigned n);

/* Whether @data/@len is such a marker. */
bool fsm_snapshot_is_marker(const void *data, size_t len);

/* The applied index a marker stands for: the last command the store held,
 * synced, when it was taken.  libraft's own index for the snapshot may be
 * higher (configuration entries and barriers never reach the store). */
uint64_t fsm_snapshot_marker_index(const void *marker);

/* The whole store serialized into one buffer: what a follower that is too
 * far behind receives instead of a marker (snapsend.h).  It takes ~0.3 s
 * per million 100-byte keys, so it runs on a worker thread while the loop
 * goes on applying: fsm_serial_begin, on the loop thread, opens a detached
 * read of the store (store.h) as of its last commit to LMDB, which may be
 * behind the applied index but is never behind the last snapshot taken
 * (fsm_snapshot_take syncs the store first); fsm_serial_run, on any one
 * thread, writes it out and ends the read; fsm_serial_cancel ends a read
 * that will not run, and fsm_serial_stop (any thread) makes a running one
 * give up soon.  Until it ends, the store's map cannot grow (store.h).
 */
struct fsm_serial
{
    struct store_txn txn;
    uint64_t cluster_id;
    atomic_bool stop;
};

/* Errors: RAFT_IOERR (the store could not be read; logged), RAFT_BUSY (as
 * below). */
int fsm_serial_begin(struct fsm *f, struct fsm_serial *s);

/* Into one raft_malloc'ed buffer (*data, *len), which holds the state as of
 * log index *index.  Logs only what the store logs of an LMDB failure (one
 * line each).  Errors: RAFT_NOMEM, RAFT_IOERR, RAFT_CANCELED
 * (fsm_serial_stop), RAFT_BUSY (the store's map must grow first:
 * store_detached_wanted; try again later). */
int fsm_serial_run(struct fsm_serial *s, void **data, size_t *len,
                   uint64_t *index);

void fsm_serial_cancel(struct fsm_serial *s);
void fsm_serial_stop(struct fsm_serial *s);

/* The same in one call on the calling thread, of everything applied: the
 * store is flushed first.  For tests and tools, which have no loop to keep
 * going.  Errors: RAFT_NOMEM, RAFT_IOERR. */
int fsm_snapshot_full(struct fsm *f, void **data, size_t *len);

/* Replace the store with snapshot @data/@len, unless the store is already
 * at or past the snapshot's applied index.  A marker is only ever restored
 * on the node that took it, whose store is at or past it.  Does not free
 * @data.  Errors: RAFT_CORRUPT (bad snapshot, or a marker newer than the
 * store: store untouched), RAFT_IOERR. */
int fsm_restore(struct fsm *f, const void *data, size_t len);

#endif
