/* overlay.h - applied writes that LMDB has not committed yet.
 *
 * Why: committing to LMDB on the loop thread stops the loop for the page
 * writes and the fsync, and at 1M keys a commit of random overwrites takes
 * tens of milliseconds (bench/README.md).  The plan is to commit on a writer
 * thread while the loop thread goes on applying entries.  Until its commit
 * ends, an applied write lives here: a table from (table, LMDB key) to the
 * LMDB value, or to a tombstone for a deleted key, that reads consult before
 * LMDB.
 *
 * One overlay is filled by the loop thread, then sealed and handed to the
 * writer; from then on both threads only read it, until the commit ends
 * and the loop thread resets it.  Nothing here locks: the hand-over must.
 *
 * Memory: keys and values are copied into an arena that only
 * overlay_reset() gives back, so a value written twice keeps its first copy
 * until then.  An overlay lives for one commit.
 *
 * Keys are compared as LMDB compares them by default: bytewise, and on a
 * common prefix the shorter first. */
#ifndef RAFTKV_OVERLAY_H
#define RAFTKV_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum overlay_found
{
    OVERLAY_ABSENT = 0,    /* not written here: ask LMDB */
    OVERLAY_VALUE = 1,     /* written here */
    OVERLAY_TOMBSTONE = 2, /* deleted here: absent, whatever LMDB says */
};

struct overlay_entry
{
    const uint8_t *key;
    uint8_t *val; /* NULL for a tombstone */
    size_t vlen;
    uint64_t hash; /* of (table, key); overlay.c's own */
    uint32_t klen;
    uint8_t table;
    bool tomb;
};

struct overlay_chunk;
struct overlay_undo;

struct overlay
{
    struct overlay_entry *entries; /* in order of first write */
    size_t n, cap;
    uint32_t *slots; /* open addressing: entry index + 1, 0 = empty */
    size_t nslots;   /* a power of two, at least twice n */
    struct overlay_chunk *chunks; /* the arena, newest first */
    size_t bytes;                 /* keys, values and a cost per entry */
    size_t held;                  /* arena handed out since the reset */
    uint32_t *order;              /* entry indexes in key order */
    size_t norder;                /* how many of them are valid */
    struct overlay_undo *undo;    /* what writes since the mark replaced */
    size_t nundo, undo_cap;
    bool marked;
    size_t mark_n, mark_bytes; /* entries and bytes at the mark */
};

/* An empty overlay; allocates nothing until the first write. */
void overlay_init(struct overlay *o);

/* Give back all memory; @o is then as after overlay_init(). */
void overlay_free(struct overlay *o);

/* Forget every entry.  Keeps the hash table and one arena chunk, so that
 * the next commit's writes do not allocate them again. */
void overlay_reset(struct overlay *o);

/* Make room for a value of @vlen bytes under (@table, @key), replacing
 * what the overlay held for that key (value or tombstone), and point @val
 * at it: the caller writes the value there, as with LMDB's MDB_RESERVE.
 * Errors: -EINVAL (@klen is 0 or above UINT32_MAX), -ENOMEM.  On an error
 * the overlay is unchanged. */
int overlay_put(struct overlay *o, unsigned table, const void *key,
                size_t klen, size_t vlen, void **val);

/* Record that (@table, @key) is deleted.  Errors as overlay_put(). */
int overlay_del(struct overlay *o, unsigned table, const void *key,
                size_t klen);

/* What the overlay holds for (@table, @key).  For OVERLAY_VALUE, @val and
 * @vlen (either may be NULL) get the value, valid until the next write of
 * that key or overlay_reset(). */
enum overlay_found overlay_get(const struct overlay *o, unsigned table,
                               const void *key, size_t klen,
                               const void **val, size_t *vlen);

/* Mark the present state: the writes after it can be taken back together
 * with overlay_rollback(), or kept with overlay_release().  One mark at a
 * time (it is a store write transaction: several writes that stand or fall
 * together).  Errors: -EBUSY (already marked). */
int overlay_mark(struct overlay *o);

/* Put back what the overlay held at the mark, and drop the mark. */
void overlay_rollback(struct overlay *o);

/* Keep the writes since the mark, and drop the mark. */
void overlay_release(struct overlay *o);

/* Distinct keys written (tombstones included). */
size_t overlay_len(const struct overlay *o);

/* About how many bytes the overlay stands for: keys and values plus a
 * fixed cost per entry; what a commit of it will write, roughly. */
size_t overlay_bytes(const struct overlay *o);

/* How much of the arena it has used since the last reset: what
 * overlay_bytes counts plus every value since replaced or deleted, which
 * stays until the reset.  What memory limits go by. */
size_t overlay_held_bytes(const struct overlay *o);

/* Put the entries in key order, by table then key, for cursors and for
 * the writer (LMDB takes sorted writes best).  Cheap when no key was added
 * since the last call.  Errors: -ENOMEM (the old order stays valid for the
 * keys it had). */
int overlay_sort(struct overlay *o);

/* Position in the key order of the first entry of @table whose key is at
 * least @key (@key NULL: the table's first entry).  Call overlay_sort()
 * after the last new key first. */
size_t overlay_seek(const struct overlay *o, unsigned table, const void *key,
                    size_t klen);

/* The entry at position @i of the key order if it belongs to @table, else
 * NULL (past the table's last entry). */
const struct overlay_entry *overlay_at(const struct overlay *o,
                                       unsigned table, size_t i);

/* Compare keys as LMDB does by default. */
int overlay_key_cmp(const void *a, size_t alen, const void *b, size_t blen);

#endif
