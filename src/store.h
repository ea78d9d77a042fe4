/* store.h - the state machine's storage: LMDB.
 *
 * Three tables in one LMDB environment (directory DATA_DIR/kv):
 *   kv       user key -> record (create_index, mod_index, version, value)
 *   members  server id (8 bytes, big-endian so ids sort) -> name and addresses
 *   meta     small named integers: the applied Raft index, the cluster id
 *
 * The applied index is written in the same transaction as the commands of
 * the entry it names, so after any crash the store is exactly the state as
 * of some applied index and the node replays only what comes after it.
 *
 * Applied writes go to an in-memory overlay (overlay.h) that reads consult
 * before LMDB.  store_commit_start hands the overlay to a writer thread,
 * which commits it to LMDB in one transaction, one fsync for many applied
 * entries, while the loop thread fills a fresh overlay; store_poll takes
 * the finished commit in.  So the loop thread never waits for the disk,
 * except in store_flush and store_sync, and readers always see every
 * applied write.  Losing uncommitted overlays in a crash loses nothing: the
 * Raft log (or the last snapshot and the log after it) replays them.
 *
 * Everything but the writer and detached reads (store_txn_begin_detached)
 * happens on the loop thread.  Records returned by reads point into LMDB's
 * map or into an overlay, and stay valid until the next store_poll,
 * store_flush or write of the same key (for a detached read: until it
 * ends).
 *
 * Every call returns 0 or one of the negative codes below. */
#ifndef RAFTKV_STORE_H
#define RAFTKV_STORE_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_ENOTFOUND (-1) /* no such key / member / meta name */
#define STORE_EFULL (-2)     /* the LMDB map is full and cannot grow */
#define STORE_EIO (-3)       /* LMDB or the file system failed */
#define STORE_ECORRUPT (-4)  /* a stored record does not decode */
#define STORE_EINVAL (-5)    /* bad argument (e.g. empty or oversized key) */

/* Keys up to STORE_MAX_KEY bytes are accepted.  LMDB itself refuses keys
 * over 511 bytes, so a key of STORE_SHORT_KEY bytes or more is stored under
 * its first STORE_LONG_PREFIX bytes plus a 16-byte SHA-256 prefix of the
 * whole key, with the whole key kept in the record.  Lookups are exact.  In
 * LMDB's order such keys sit among the keys that share their first
 * STORE_LONG_PREFIX bytes, ordered by hash; cursors sort each such group by
 * the whole key, so iteration is in exact byte order. */
#define STORE_MAX_KEY 65535
#define STORE_SHORT_KEY 511
#define STORE_LONG_PREFIX 495

struct store;

struct store_txn
{
    MDB_txn *txn;
    struct store *store;
    bool write;
    bool shared;   /* a read inside the open batch: ending it ends nothing */
    bool detached; /* store_txn_begin_detached: LMDB only, any thread */
};

struct store_record
{
    uint64_t create_index; /* Raft index that created the key */
    uint64_t mod_index;    /* Raft index that last wrote it */
    uint64_t version;      /* writes since creation, starting at 1 */
    const void *value;
    size_t value_len;
};

struct store_member
{
    uint64_t id;
    const char *name; /* not NUL-terminated: use the lengths */
    size_t name_len;
    const char *raft_addr;
    size_t raft_addr_len;
    const char *http_addr; /* empty when not yet known */
    size_t http_addr_len;
};

enum store_table { STORE_KV, STORE_MEMBERS };

struct store_stat
{
    uint64_t keys;       /* entries in kv */
    uint64_t members;    /* entries in members */
    uint64_t used_bytes; /* pages in use times page size */
    uint64_t file_bytes; /* size of data.mdb on disk */
    uint64_t map_bytes;  /* current map size */
};

/* Open (creating if needed) the environment in directory @dir, which must
 * exist.  @map_size is the initial map size in bytes (grows on demand).
 * Errors: STORE_EIO (with a log line naming the cause). */
int store_open(struct store **out, const char *dir, size_t map_size);

/* Close the environment (flushing the batch).  No transaction may be open. */
void store_close(struct store *s);

/* Hand the applied writes to the writer thread, unless it is busy or
 * there are none (or a write transaction is open).  Returns whether it did.
 * A failure shows later, in store_poll. */
bool store_commit_start(struct store *s);

/* Take in a commit the writer finished: reads then see it in LMDB.  A full
 * map is grown and the commit tried again; any other failure calls @fatal
 * (see store_set_fatal).  Cheap when there is nothing to take in. */
void store_poll(struct store *s);

/* Called on the writer thread when a commit ends, and on a detached
 * reader's thread when the last one ends while a commit waits for it, so
 * that the loop thread can wake up and call store_poll (uv_async_send is
 * safe to call). */
void store_set_notify(struct store *s, void (*notify)(void *arg), void *arg);

/* Commit every applied write and wait for it.  No write transaction may be
 * open.  Errors: STORE_EINVAL (a write transaction is open), STORE_EIO (the
 * commit failed; @fatal has been called). */
int store_flush(struct store *s);

/* How often the node starts a commit, and how big the overlay may grow
 * before one starts sooner. */
#define STORE_FLUSH_MS 100
#define STORE_FLUSH_BYTES ((uint64_t)32 << 20)
/* Past this many bytes waiting while the writer is busy, the node waits
 * for it (store_flush) rather than let the overlay grow without bound. */
#define STORE_PENDING_MAX ((uint64_t)96 << 20)

/* Are there applied writes not handed to the writer, and how many bytes of
 * memory do they hold (overwritten values included, until the commit)? */
uint64_t store_pending_bytes(const struct store *s);
bool store_pending(const struct store *s);

/* What to call when a flush fails: the applied entries it held are lost
 * from the store, so the node cannot go on. */
void store_set_fatal(struct store *s, void (*fatal)(void *arg,
                                                    const char *what),
                     void *arg);

/* Flush everything to disk (fsync). Errors: STORE_EIO. */
int store_sync(struct store *s);

int store_stat(struct store *s, struct store_stat *st);

/* --- Transactions ------------------------------------------------------ */

/* Begin a read (write=false) or write transaction into @t.  A write
 * transaction writes into the overlay: committing it keeps its writes for
 * the next commit to LMDB, aborting it undoes only it.  A read sees every
 * applied write.  One write transaction at a time.
 * Errors: STORE_EINVAL (a write transaction is already open), STORE_EIO. */
int store_txn_begin(struct store *s, bool write, struct store_txn *t);

/* Begin a read of the last commit to LMDB alone, for use on another
 * thread (one thread at a time).  It sees no overlay, so it may be behind
 * the applied writes; the meta table says which index it holds (the applied
 * index is committed with the writes it names).  Until it ends, the map
 * cannot be grown: a commit that needs more room waits for it (and
 * store_flush with it), and store_close waits for it too.  Call on the loop
 * thread; end it with store_txn_abort on any thread.  Meant for long scans
 * (a follower's snapshot) that must not hold up the loop.
 * Errors: STORE_EIO. */
int store_txn_begin_detached(struct store *s, struct store_txn *t);

/* Any thread: false once a commit waits for the detached readers to end
 * (the map is full and must grow), until the map has grown.  A long scan
 * should then give up, and no new one begin: the loop thread may be about
 * to wait for the commit, and with it for every detached reader. */
bool store_detached_wanted(const struct store_txn *t);

/* Commit a transaction (a read transaction is simply ended): its writes
 * wait in the overlay for the next commit to LMDB.  Returns 0. */
int store_txn_commit(struct store_txn *t);

void store_txn_abort(struct store_txn *t);

/* --- kv ------------------------------------------------------------------ */

/* Errors: STORE_ENOTFOUND, STORE_ECORRUPT, STORE_EINVAL, STORE_EIO. */
int store_kv_get(struct store_txn *t, const void *key, size_t klen,
                 struct store_record *rec);

/* Write @rec under @key (write txn), as it is: a snapshot's restore.
 * Errors: STORE_EINVAL, STORE_EIO (out of memory). */
int store_kv_put(struct store_txn *t, const void *key, size_t klen,
                 const struct store_record *rec);

/* Write @value under @key as the command at log @index (write txn), and
 * keep the key's history: mod_index becomes @index; a new key gets
 * create_index @index and version 1, a stored one keeps its create_index and
 * counts its version up by one.  @rec receives what was written (its value
 * points at @value).  It looks the key up once, where store_kv_get followed
 * by store_kv_put would look twice.
 * Errors: STORE_ECORRUPT (the stored record), STORE_EINVAL, STORE_EIO. */
int store_kv_update(struct store_txn *t, const void *key, size_t klen,
                    uint64_t index, const void *value, size_t vlen,
                    struct store_record *rec);

/* Errors: STORE_ENOTFOUND, STORE_EINVAL, STORE_EIO. */
int store_kv_del(struct store_txn *t, const void *key, size_t klen);

/* Number of entries in @table as seen by @t.  Errors: STORE_EIO. */
int store_count(struct store_txn *t, enum store_table table, uint64_t *n);

/* Empty a table (write txn); an abort undoes it like any write.
 * Errors: STORE_EINVAL (not in a write txn), STORE_EIO. */
int store_clear(struct store_txn *t, enum store_table table);

/* --- members ------------------------------------------------------------- */

/* Errors: STORE_EINVAL, STORE_EIO (out of memory). */
int store_member_put(struct store_txn *t, const struct store_member *m,
                     bool append);
/* Errors: STORE_ENOTFOUND, STORE_ECORRUPT, STORE_EIO. */
int store_member_get(struct store_txn *t, uint64_t id,
                     struct store_member *m);
/* Errors: STORE_ENOTFOUND, STORE_EIO. */
int store_member_del(struct store_txn *t, uint64_t id);

/* --- meta ---------------------------------------------------------------- */

/* Errors: STORE_ENOTFOUND, STORE_ECORRUPT, STORE_EIO. */
int store_meta_get(struct store_txn *t, const char *name, uint64_t *value);
/* Errors: STORE_EIO (out of memory). */
int store_meta_put(struct store_txn *t, const char *name, uint64_t value);

/* --- iteration ------------------------------------------------------------- */

struct store_group_entry
{
    const void *key;
    size_t klen;
    struct store_record rec;
};

struct store_cursor
{
    /* The entries of three layers, merged in key order: the open overlay
     * wins over the sealed one, which wins over LMDB (@cur). */
    struct store *store;
    unsigned table;
    MDB_cursor *cur;
    int next_op;        /* MDB_cursor_op for LMDB's next step; -1: at end */
    bool lmdb_ok;       /* LMDB's head is in lk/lv */
    MDB_val lk, lv;
    size_t pos[2];      /* next position in the open / sealed overlay */
    bool use[2];        /* whether each overlay takes part */
    bool use_lmdb;
    bool pushed;        /* pk/pv is the next entry (a step taken back) */
    MDB_val pk, pv;
    /* kv: entries sharing their first STORE_LONG_PREFIX bytes, sorted */
    struct store_group_entry *group;
    size_t group_n, group_i, group_cap;
    void *from; /* kv: return no key below this (a copy) */
    size_t from_len;
};

/* Open a cursor on @table.  With @from (kv only) iteration starts at the
 * first key >= @from; otherwise at the first key.  It sees every applied
 * write.  Entries stay valid until the transaction ends; no write may
 * happen while the cursor is open.  Errors: STORE_EIO. */
int store_cursor_open(struct store_txn *t, enum store_table table,
                      const void *from, size_t from_len,
                      struct store_cursor *c);

/* Step: returns 1 with the next entry, 0 at the end, or an error code.
 * For kv: @key/@klen and @rec are set.  For members: @m is set. */
int store_cursor_next_kv(struct store_cursor *c, const void **key,
                         size_t *klen, struct store_record *rec);
int store_cursor_next_member(struct store_cursor *c, struct store_member *m);

void store_cursor_close(struct store_cursor *c);

const char *store_strerror(int code);

#endif
