/* overlay.c - applied writes that LMDB has not committed yet; see overlay.h.
 *
 * An open-addressing hash table of entry indexes over an array of entries,
 * with keys and values in an arena.  Lookups are what the loop thread does
 * most (every read asks the overlay first), so a probe compares a stored
 * hash before it touches a key.  The key order is built only when asked
 * for, by sorting indexes: cursors and commits need it, writes do not. */
#include "overlay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define OVERLAY_CHUNK ((size_t)64 << 10)
#define OVERLAY_ENTRY_COST 64 /* what a commit writes per key beyond it */
#define OVERLAY_MIN_SLOTS 1024

/* What one write since the mark replaced in an entry that was there at
 * the mark (entries made since the mark are simply dropped). */
struct overlay_undo
{
    uint32_t entry;
    bool tomb;
    uint8_t *val;
    size_t vlen;
};

struct overlay_chunk
{
    struct overlay_chunk *next;
    size_t size, used;
    _Alignas(8) uint8_t data[];
};

/* A hash of (table, key): 8 bytes at a time, each multiplied in and folded
 * down; the tail and the length are folded in the same way. */
static uint64_t key_hash(unsigned table, const uint8_t *p, size_t n)
{
    const uint64_t m = 0x9e3779b97f4a7c15ULL;
    uint64_t h = 0x2545f4914f6cdd1dULL ^ ((uint64_t)table << 56) ^ n;
    uint64_t w;

    for (; n >= 8; n -= 8, p += 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * m;
        h ^= h >> 31;
    }
    w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * m;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 32);
}

int overlay_key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int r = n ? memcmp(a, b, n) : 0;
    if (r != 0)
        return r;
    return alen < blen ? -1 : alen > blen;
}

void overlay_init(struct overlay *o)
{
    memset(o, 0, sizeof *o);
}

static void chunks_free(struct overlay_chunk *c)
{
    while (c != NULL) {
        struct overlay_chunk *next = c->next;
        free(c);
        c = next;
    }
}

void overlay_free(struct overlay *o)
{
    chunks_free(o->chunks);
    free(o->entries);
    free(o->slots);
    free(o->order);
    free(o->undo);
    overlay_init(o);
}

void overlay_reset(struct overlay *o)
{
    /* Keep one chunk of the usual size; bigger ones held single values. */
    struct overlay_chunk *keep = NULL, **pp = &o->chunks;
    while (*pp != NULL) {
        struct overlay_chunk *c = *pp;
        if (keep == NULL && c->size == OVERLAY_CHUNK) {
            keep = c;
            *pp = c->next;
            continue;
        }
        pp = &c->next;
    }
    chunks_free(o->chunks);
    o->chunks = keep;
    if (keep != NULL) {
        keep->next = NULL;
        keep->used = 0;
    }
    if (o->slots != NULL)
        memset(o->slots, 0, o->nslots * sizeof *o->slots);
    o->n = 0;
    o->norder = 0;
    o->bytes = 0;
    o->held = 0;
    o->nundo = 0;
    o->marked = false;
}

/* @n bytes from the arena, 8-aligned; NULL when out of memory. */
static uint8_t *arena_alloc(struct overlay *o, size_t n)
{
    struct overlay_chunk *c = o->chunks;
    size_t need = (n + 7) & ~(size_t)7;

    if (need < n)
        return NULL;
    if (c == NULL || c->size - c->used < need) {
        size_t size = need > OVERLAY_CHUNK ? need : OVERLAY_CHUNK;
        c = malloc(sizeof *c + size);
        if (c == NULL)
            return NULL;
        c->size = size;
        c->used = 0;
        /* A big value gets a chunk of its own, behind the current one, so
         * that the current chunk's free space is not given up. */
        if (size > OVERLAY_CHUNK && o->chunks != NULL) {
            c->next = o->chunks->next;
            o->chunks->next = c;
        } else {
            c->next = o->chunks;
            o->chunks = c;
        }
    }
    uint8_t *p = c->data + c->used;
    c->used += need;
    o->held += need;
    return p;
}

/* The slot holding (@table, @key), or the empty slot where it would go. */
static size_t slot_find(const struct overlay *o, uint64_t h, unsigned table,
                        const void *key, size_t klen)
{
    size_t mask = o->nslots - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        uint32_t x = o->slots[i];
        if (x == 0)
            return i;
        const struct overlay_entry *e = &o->entries[x - 1];
        if (e->hash == h && e->table == table && e->klen == klen &&
            memcmp(e->key, key, klen) == 0)
            return i;
    }
}

/* Room for one more element in the array *@arr of *@cap elements of @size
 * bytes, @len of them used: doubled when full.  Errors: -ENOMEM. */
static int array_room(void **arr, size_t *cap, size_t len, size_t size,
                      size_t first)
{
    if (len < *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : first;
    void *p = realloc(*arr, n * size);
    if (p == NULL)
        return -ENOMEM;
    *arr = p;
    *cap = n;
    return 0;
}

/* Point the (zeroed) hash table @slots at the first @n entries. */
static void slots_fill(uint32_t *slots, size_t nslots,
                       const struct overlay_entry *entries, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        size_t i = (size_t)entries[j].hash & (nslots - 1);
        while (slots[i] != 0)
            i = (i + 1) & (nslots - 1);
        slots[i] = (uint32_t)(j + 1);
    }
}

/* Room for one more key in the entries and the hash table. */
static int reserve_one(struct overlay *o)
{
    if (array_room((void **)&o->entries, &o->cap, o->n, sizeof *o->entries,
                   1024) != 0)
        return -ENOMEM;
    if ((o->n + 1) * 2 <= o->nslots)
        return 0;
    size_t nslots = o->nslots ? o->nslots * 2 : OVERLAY_MIN_SLOTS;
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (slots == NULL)
        return -ENOMEM;
    slots_fill(slots, nslots, o->entries, o->n);
    free(o->slots);
    o->slots = slots;
    o->nslots = nslots;
    return 0;
}

/* The entry for (@table, @key), made if new; NULL when out of memory. */
static struct overlay_entry *entry_for(struct overlay *o, unsigned table,
                                       const void *key, size_t klen)
{
    uint64_t h = key_hash(table, key, klen);
    size_t i;

    if (o->nslots > 0) {
        i = slot_find(o, h, table, key, klen);
        if (o->slots[i] != 0)
            return &o->entries[o->slots[i] - 1];
    }
    if (o->n >= UINT32_MAX - 1 || reserve_one(o) != 0)
        return NULL;
    uint8_t *k = arena_alloc(o, klen);
    if (k == NULL)
        return NULL;
    memcpy(k, key, klen);
    i = slot_find(o, h, table, key, klen); /* the table may have grown */
    struct overlay_entry *e = &o->entries[o->n];
    memset(e, 0, sizeof *e);
    e->key = k;
    e->klen = (uint32_t)klen;
    e->table = (uint8_t)table;
    e->hash = h;
    e->tomb = true; /* until the caller says otherwise */
    o->slots[i] = (uint32_t)++o->n;
    o->bytes += klen + OVERLAY_ENTRY_COST;
    return e;
}

/* Before changing @e: if a mark is set and @e was there at the mark,
 * remember what it held.  Errors: -ENOMEM (nothing changed). */
static int undo_note(struct overlay *o, const struct overlay_entry *e)
{
    size_t i = (size_t)(e - o->entries);
    if (!o->marked || i >= o->mark_n)
        return 0;
    if (array_room((void **)&o->undo, &o->undo_cap, o->nundo, sizeof *o->undo,
                   64) != 0)
        return -ENOMEM;
    o->undo[o->nundo++] = (struct overlay_undo){
        .entry = (uint32_t)i, .tomb = e->tomb, .val = e->val, .vlen = e->vlen};
    return 0;
}

static int check_key(unsigned table, size_t klen)
{
    if (klen == 0 || klen > UINT32_MAX || table > UINT8_MAX)
        return -EINVAL;
    return 0;
}

int overlay_put(struct overlay *o, unsigned table, const void *key,
                size_t klen, size_t vlen, void **val)
{
    int rv = check_key(table, klen);
    if (rv != 0)
        return rv;
    /* The value first: if it cannot be had, nothing has changed. */
    uint8_t *v = arena_alloc(o, vlen);
    if (v == NULL)
        return -ENOMEM;
    struct overlay_entry *e = entry_for(o, table, key, klen);
    if (e == NULL || undo_note(o, e) != 0)
        return -ENOMEM;
    if (!e->tomb) /* a new entry starts as a tombstone */
        o->bytes -= e->vlen;
    e->val = v;
    e->vlen = vlen;
    e->tomb = false;
    o->bytes += vlen;
    *val = v;
    return 0;
}

int overlay_del(struct overlay *o, unsigned table, const void *key,
                size_t klen)
{
    int rv = check_key(table, klen);
    if (rv != 0)
        return rv;
    struct overlay_entry *e = entry_for(o, table, key, klen);
    if (e == NULL || undo_note(o, e) != 0)
        return -ENOMEM;
    if (!e->tomb)
        o->bytes -= e->vlen;
    e->val = NULL;
    e->vlen = 0;
    e->tomb = true;
    return 0;
}

enum overlay_found overlay_get(const struct overlay *o, unsigned table,
                               const void *key, size_t klen,
                               const void **val, size_t *vlen)
{
    if (o->n == 0 || check_key(table, klen) != 0)
        return OVERLAY_ABSENT;
    size_t i = slot_find(o, key_hash(table, key, klen), table, key, klen);
    if (o->slots[i] == 0)
        return OVERLAY_ABSENT;
    const struct overlay_entry *e = &o->entries[o->slots[i] - 1];
    if (e->tomb)
        return OVERLAY_TOMBSTONE;
    if (val != NULL)
        *val = e->val;
    if (vlen != NULL)
        *vlen = e->vlen;
    return OVERLAY_VALUE;
}

int overlay_mark(struct overlay *o)
{
    if (o->marked)
        return -EBUSY;
    o->marked = true;
    o->mark_n = o->n;
    o->mark_bytes = o->bytes;
    o->nundo = 0;
    return 0;
}

void overlay_release(struct overlay *o)
{
    o->marked = false;
    o->nundo = 0;
}

void overlay_rollback(struct overlay *o)
{
    if (!o->marked)
        return;
    /* Newest first, so that an entry written twice ends as at the mark. */
    while (o->nundo > 0) {
        const struct overlay_undo *u = &o->undo[--o->nundo];
        struct overlay_entry *e = &o->entries[u->entry];
        e->tomb = u->tomb;
        e->val = u->val;
        e->vlen = u->vlen;
    }
    if (o->n > o->mark_n) {
        /* Entries made since the mark go; rebuilding the hash table is
         * simpler than deleting from it, and a rollback is rare (a write
         * transaction that failed). */
        o->n = o->mark_n;
        memset(o->slots, 0, o->nslots * sizeof *o->slots);
        slots_fill(o->slots, o->nslots, o->entries, o->n);
        if (o->norder > o->n)
            o->norder = 0;
    }
    o->bytes = o->mark_bytes;
    o->marked = false;
}

size_t overlay_len(const struct overlay *o) { return o->n; }

size_t overlay_bytes(const struct overlay *o) { return o->bytes; }

size_t overlay_held_bytes(const struct overlay *o) { return o->held; }

static int entry_cmp(const struct overlay_entry *a, unsigned table,
                     const void *key, size_t klen)
{
    if (a->table != table)
        return a->table < table ? -1 : 1;
    return overlay_key_cmp(a->key, a->klen, key, klen);
}

static int order_cmp(const void *pa, const void *pb, void *arg)
{
    const struct overlay_entry *entries = arg;
    const struct overlay_entry *a = &entries[*(const uint32_t *)pa];
    const struct overlay_entry *b = &entries[*(const uint32_t *)pb];
    return entry_cmp(a, b->table, b->key, b->klen);
}

int overlay_sort(struct overlay *o)
{
    if (o->norder == o->n)
        return 0;
    uint32_t *order = realloc(o->order, o->n * sizeof *order);
    if (order == NULL)
        return -ENOMEM;
    o->order = order;
    for (size_t i = 0; i < o->n; i++)
        order[i] = (uint32_t)i;
    qsort_r(order, o->n, sizeof *order, order_cmp, o->entries);
    o->norder = o->n;
    return 0;
}

size_t overlay_seek(const struct overlay *o, unsigned table, const void *key,
                    size_t klen)
{
    size_t lo = 0, hi = o->norder;
    if (key == NULL)
        klen = 0; /* below every key: keys are never empty */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (entry_cmp(&o->entries[o->order[mid]], table, key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const struct overlay_entry *overlay_at(const struct overlay *o,
                                       unsigned table, size_t i)
{
    if (i >= o->norder)
        return NULL;
    const struct overlay_entry *e = &o->entries[o->order[i]];
    return e->table == table ? e : NULL;
}
