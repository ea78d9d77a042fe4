/* store.c - LMDB storage for the state machine; see store.h.
 *
 * Why LMDB: ordered keys (range and prefix reads come free), reads straight
 * from the page cache through mmap, and crash-safe copy-on-write commits.
 * MDB_NOMETASYNC skips the second fsync of each commit: after a machine crash
 * the newest commits may roll back, but never tear, and the Raft log (which
 * is fsynced before any write is acknowledged) replays them. */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "log.h"

#define STORE_RECORD_HEADER 24
#define STORE_MAP_CEILING ((size_t)1 << 40) /* 1 TiB of address space */

struct store
{
    MDB_env *env;
    MDB_dbi kv, members, meta;
    size_t map_size;
    MDB_txn *batch; /* open write transaction holding applied entries */
    uint64_t batch_bytes; /* bytes written into it, roughly */
    void (*fatal)(void *arg, const char *what);
    void *fatal_arg;
    char path[4096];
};

static int store_err(int rc, const char *what)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return STORE_ENOTFOUND;
    case MDB_MAP_FULL:
        return STORE_EFULL;
    case MDB_BAD_VALSIZE:
    case MDB_KEYEXIST: /* an append out of order: the input is bad */
        return STORE_EINVAL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
        log_error("lmdb %s: %s", what, mdb_strerror(rc));
        return STORE_ECORRUPT;
    default:
        log_error("lmdb %s: %s", what, mdb_strerror(rc));
        return STORE_EIO;
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void member_key(uint64_t id, uint8_t out[8])
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(id >> (56 - 8 * i));
}

static uint64_t member_key_id(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int store_open(struct store **out, const char *dir, size_t map_size)
{
    struct store *s = calloc(1, sizeof *s);
    MDB_txn *txn = NULL;
    int rc;

    if (s == NULL)
        return STORE_EIO;
    snprintf(s->path, sizeof s->path, "%s", dir);
    s->map_size = map_size;
    rc = mdb_env_create(&s->env);
    if (rc != 0)
        goto err;
    mdb_env_set_maxdbs(s->env, 4);
    rc = mdb_env_set_mapsize(s->env, map_size);
    if (rc != 0)
        goto err_env;
    rc = mdb_env_open(s->env, dir, MDB_NOTLS | MDB_NOMETASYNC | MDB_NORDAHEAD,
                      0644);
    if (rc != 0)
        goto err_env;
    /* A map larger than ours may have been set by an earlier run. */
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    s->map_size = info.me_mapsize;

    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        goto err_env;
    if ((rc = mdb_dbi_open(txn, "kv", MDB_CREATE, &s->kv)) != 0 ||
        (rc = mdb_dbi_open(txn, "members", MDB_CREATE, &s->members)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)) != 0)
        goto err_txn;
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        goto err_env;
    *out = s;
    return 0;

err_txn:
    mdb_txn_abort(txn);
err_env:
    mdb_env_close(s->env);
err:
    log_error("cannot open the store in %s: %s", dir, mdb_strerror(rc));
    free(s);
    return STORE_EIO;
}

void store_set_fatal(struct store *s, void (*fatal)(void *arg,
                                                    const char *what),
                     void *arg)
{
    s->fatal = fatal;
    s->fatal_arg = arg;
}

int store_flush(struct store *s)
{
    int rc;
    if (s->batch == NULL)
        return 0;
    rc = mdb_txn_commit(s->batch);
    s->batch = NULL;
    s->batch_bytes = 0;
    if (rc != 0) {
        /* Applied entries are gone from the store but the node already
         * answered for them: it must stop (they replay after a restart). */
        log_error("lmdb commit of applied entries failed: %s",
                  mdb_strerror(rc));
        if (s->fatal != NULL)
            s->fatal(s->fatal_arg, "cannot commit applied entries to the "
                                   "store");
        return rc == MDB_MAP_FULL ? STORE_EFULL : STORE_EIO;
    }
    return 0;
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    store_flush(s);
    mdb_env_close(s->env);
    free(s);
}

int store_grow(struct store *s)
{
    size_t next = s->map_size * 2;
    int rc;

    if (next > STORE_MAP_CEILING)
        return STORE_EFULL;
    if ((rc = store_flush(s)) != 0)
        return rc;
    rc = mdb_env_set_mapsize(s->env, next);
    if (rc != 0)
        return store_err(rc, "set_mapsize");
    s->map_size = next;
    log_info("store map grown to %zu MiB", next >> 20);
    return 0;
}

int store_sync(struct store *s)
{
    int rc = store_flush(s);
    if (rc != 0)
        return rc;
    return store_err(mdb_env_sync(s->env, 1), "sync");
}

/* Grow the map before it fills: a full map inside the batch would cost the
 * whole batch, not just one entry.  LMDB reports only committed pages, so
 * the batch's own writes are counted twice over (copy-on-write touches the
 * branch pages above each leaf too). */
static int store_headroom(struct store *s)
{
    MDB_envinfo info;
    MDB_stat ms;
    int rc;

    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &ms);
    uint64_t used = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize +
                    2 * s->batch_bytes;
    if (used < info.me_mapsize / 4 * 3)
        return 0;
    if ((rc = store_flush(s)) != 0)
        return rc;
    mdb_env_info(s->env, &info);
    used = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
    if (used < info.me_mapsize / 2)
        return 0;
    return store_grow(s);
}

int store_stat(struct store *s, struct store_stat *st)
{
    MDB_txn *txn;
    MDB_stat ms;
    MDB_envinfo info;
    struct stat fs;
    char file[4200];
    int rc;

    memset(st, 0, sizeof *st);
    /* Counted inside the batch when one is open; sizes are as last flushed. */
    txn = s->batch;
    rc = txn ? 0 : mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return store_err(rc, "stat");
    if (mdb_stat(txn, s->kv, &ms) == 0)
        st->keys = ms.ms_entries;
    if (mdb_stat(txn, s->members, &ms) == 0)
        st->members = ms.ms_entries;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &ms);
    st->used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
    st->map_bytes = info.me_mapsize;
    if (txn != s->batch)
        mdb_txn_abort(txn);
    snprintf(file, sizeof file, "%s/data.mdb", s->path);
    if (stat(file, &fs) == 0)
        st->file_bytes = (uint64_t)fs.st_size;
    return 0;
}

int store_txn_begin(struct store *s, bool write, struct store_txn *t)
{
    int rc;

    t->store = s;
    t->write = write;
    t->shared = false;
    t->txn = NULL;
    if (!write) {
        /* Readers must see every applied entry: inside the batch if one is
         * open, rather than forcing a disk sync. */
        if (s->batch != NULL) {
            t->txn = s->batch;
            t->shared = true;
            return 0;
        }
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t->txn);
        return store_err(rc, "txn_begin");
    }
    if ((rc = store_headroom(s)) != 0)
        return rc;
    if (s->batch == NULL) {
        rc = mdb_txn_begin(s->env, NULL, 0, &s->batch);
        if (rc != 0)
            return store_err(rc, "txn_begin");
    }
    /* A child per write: one that fails is undone alone. */
    rc = mdb_txn_begin(s->env, s->batch, 0, &t->txn);
    return store_err(rc, "txn_begin");
}

int store_txn_commit(struct store_txn *t)
{
    int rc;
    if (!t->write) {
        store_txn_abort(t);
        return 0;
    }
    rc = mdb_txn_commit(t->txn);
    t->txn = NULL;
    return store_err(rc, "commit");
}

void store_txn_abort(struct store_txn *t)
{
    if (t->txn != NULL && !t->shared)
        mdb_txn_abort(t->txn);
    t->txn = NULL;
}

uint64_t store_batch_bytes(const struct store *s) { return s->batch_bytes; }

bool store_batch_open(const struct store *s) { return s->batch != NULL; }

/* Record layout: u64 create_index, u64 mod_index, u64 version, then (only
 * for long keys) u16 key length and the whole key, then the value. */
static int record_decode(const MDB_val *k, const MDB_val *v,
                         struct store_record *rec, const void **key,
                         size_t *klen)
{
    const uint8_t *p = v->mv_data;
    size_t off = STORE_RECORD_HEADER;

    if (v->mv_size < STORE_RECORD_HEADER)
        return STORE_ECORRUPT;
    rec->create_index = get_u64(p);
    rec->mod_index = get_u64(p + 8);
    rec->version = get_u64(p + 16);
    if (k->mv_size == STORE_SHORT_KEY) {
        size_t n;
        if (v->mv_size < off + 2)
            return STORE_ECORRUPT;
        n = (size_t)p[off] | (size_t)p[off + 1] << 8;
        if (n < STORE_SHORT_KEY || v->mv_size < off + 2 + n)
            return STORE_ECORRUPT;
        if (key != NULL) {
            *key = p + off + 2;
            *klen = n;
        }
        off += 2 + n;
    } else if (key != NULL) {
        *key = k->mv_data;
        *klen = k->mv_size;
    }
    rec->value = p + off;
    rec->value_len = v->mv_size - off;
    return 0;
}

/* The LMDB key for a user key; see STORE_SHORT_KEY in store.h. */
struct lmdb_key
{
    MDB_val val;
    uint8_t buf[STORE_SHORT_KEY];
};

static int key_encode(const void *key, size_t klen, struct lmdb_key *out)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;

    if (klen == 0 || klen > STORE_MAX_KEY)
        return STORE_EINVAL;
    if (klen < STORE_SHORT_KEY) {
        out->val.mv_size = klen;
        out->val.mv_data = (void *)key;
        return 0;
    }
    if (EVP_Digest(key, klen, digest, &dlen, EVP_sha256(), NULL) != 1 ||
        dlen < STORE_SHORT_KEY - STORE_LONG_PREFIX)
        return STORE_EIO;
    memcpy(out->buf, key, STORE_LONG_PREFIX);
    memcpy(out->buf + STORE_LONG_PREFIX, digest,
           STORE_SHORT_KEY - STORE_LONG_PREFIX);
    out->val.mv_size = STORE_SHORT_KEY;
    out->val.mv_data = out->buf;
    return 0;
}

int store_kv_get(struct store_txn *t, const void *key, size_t klen,
                 struct store_record *rec)
{
    struct lmdb_key k;
    MDB_val v;
    const void *full;
    size_t full_len;
    int rc;

    if ((rc = key_encode(key, klen, &k)) != 0)
        return rc;
    rc = mdb_get(t->txn, t->store->kv, &k.val, &v);
    if (rc != 0)
        return store_err(rc, "get");
    rc = record_decode(&k.val, &v, rec, &full, &full_len);
    if (rc != 0)
        return rc;
    /* A 128-bit hash collision is not expected, but never return the wrong
     * key's value. */
    if (full_len != klen || memcmp(full, key, klen) != 0)
        return STORE_ENOTFOUND;
    return 0;
}

int store_kv_put(struct store_txn *t, const void *key, size_t klen,
                 const struct store_record *rec, bool append)
{
    struct lmdb_key k;
    size_t extra = klen >= STORE_SHORT_KEY ? 2 + klen : 0;
    MDB_val v = {STORE_RECORD_HEADER + extra + rec->value_len, NULL};
    int rc;

    if ((rc = key_encode(key, klen, &k)) != 0)
        return rc;
    /* Keys that share a long prefix are ordered by hash in LMDB but by the
     * whole key in iteration: only shorter keys may be appended in
     * iteration order. */
    if (klen >= STORE_LONG_PREFIX)
        append = false;
    /* MDB_RESERVE lets us write the record in place: no temporary copy. */
    rc = mdb_put(t->txn, t->store->kv, &k.val, &v,
                 MDB_RESERVE | (append ? MDB_APPEND : 0));
    if (rc != 0)
        return store_err(rc, "put");
    t->store->batch_bytes += k.val.mv_size + v.mv_size + 64;
    uint8_t *p = v.mv_data;
    put_u64(p, rec->create_index);
    put_u64(p + 8, rec->mod_index);
    put_u64(p + 16, rec->version);
    p += STORE_RECORD_HEADER;
    if (extra > 0) {
        p[0] = (uint8_t)klen;
        p[1] = (uint8_t)(klen >> 8);
        memcpy(p + 2, key, klen);
        p += extra;
    }
    if (rec->value_len > 0)
        memcpy(p, rec->value, rec->value_len);
    return 0;
}

int store_kv_del(struct store_txn *t, const void *key, size_t klen)
{
    struct lmdb_key k;
    int rc;
    if ((rc = key_encode(key, klen, &k)) != 0)
        return rc;
    return store_err(mdb_del(t->txn, t->store->kv, &k.val, NULL), "del");
}

int store_count(struct store_txn *t, enum store_table table, uint64_t *n)
{
    MDB_stat ms;
    MDB_dbi dbi = table == STORE_KV ? t->store->kv : t->store->members;
    int rc = mdb_stat(t->txn, dbi, &ms);
    if (rc != 0)
        return store_err(rc, "stat");
    *n = ms.ms_entries;
    return 0;
}

int store_clear(struct store_txn *t, enum store_table table)
{
    MDB_dbi dbi = table == STORE_KV ? t->store->kv : t->store->members;
    return store_err(mdb_drop(t->txn, dbi, 0), "drop");
}

/* members value: u16 name_len, u16 raft_len, u16 http_len, then the bytes */
static int member_decode(const MDB_val *k, const MDB_val *v,
                         struct store_member *m)
{
    const uint8_t *p = v->mv_data;
    size_t nl, rl, hl;

    if (k->mv_size != 8 || v->mv_size < 6)
        return STORE_ECORRUPT;
    nl = (size_t)p[0] | (size_t)p[1] << 8;
    rl = (size_t)p[2] | (size_t)p[3] << 8;
    hl = (size_t)p[4] | (size_t)p[5] << 8;
    if (6 + nl + rl + hl != v->mv_size)
        return STORE_ECORRUPT;
    m->id = member_key_id(k->mv_data);
    m->name = (const char *)p + 6;
    m->name_len = nl;
    m->raft_addr = m->name + nl;
    m->raft_addr_len = rl;
    m->http_addr = m->raft_addr + rl;
    m->http_addr_len = hl;
    return 0;
}

int store_member_put(struct store_txn *t, const struct store_member *m,
                     bool append)
{
    uint8_t key[8];
    MDB_val k = {8, key};
    MDB_val v;
    int rc;

    if (m->name_len > 0xffff || m->raft_addr_len > 0xffff ||
        m->http_addr_len > 0xffff)
        return STORE_EINVAL;
    member_key(m->id, key);
    v.mv_size = 6 + m->name_len + m->raft_addr_len + m->http_addr_len;
    rc = mdb_put(t->txn, t->store->members, &k, &v,
                 MDB_RESERVE | (append ? MDB_APPEND : 0));
    if (rc != 0)
        return store_err(rc, "member put");
    uint8_t *p = v.mv_data;
    p[0] = (uint8_t)m->name_len;
    p[1] = (uint8_t)(m->name_len >> 8);
    p[2] = (uint8_t)m->raft_addr_len;
    p[3] = (uint8_t)(m->raft_addr_len >> 8);
    p[4] = (uint8_t)m->http_addr_len;
    p[5] = (uint8_t)(m->http_addr_len >> 8);
    p += 6;
    memcpy(p, m->name, m->name_len);
    memcpy(p + m->name_len, m->raft_addr, m->raft_addr_len);
    memcpy(p + m->name_len + m->raft_addr_len, m->http_addr,
           m->http_addr_len);
    return 0;
}

int store_member_get(struct store_txn *t, uint64_t id, struct store_member *m)
{
    uint8_t key[8];
    MDB_val k = {8, key}, v;
    int rc;

    member_key(id, key);
    rc = mdb_get(t->txn, t->store->members, &k, &v);
    if (rc != 0)
        return store_err(rc, "member get");
    return member_decode(&k, &v, m);
}

int store_member_del(struct store_txn *t, uint64_t id)
{
    uint8_t key[8];
    MDB_val k = {8, key};
    member_key(id, key);
    return store_err(mdb_del(t->txn, t->store->members, &k, NULL),
                     "member del");
}

int store_meta_get(struct store_txn *t, const char *name, uint64_t *value)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(t->txn, t->store->meta, &k, &v);
    if (rc != 0)
        return store_err(rc, "meta get");
    if (v.mv_size != 8)
        return STORE_ECORRUPT;
    *value = get_u64(v.mv_data);
    return 0;
}

int store_meta_put(struct store_txn *t, const char *name, uint64_t value)
{
    uint8_t buf[8];
    MDB_val k = {strlen(name), (void *)name}, v = {8, buf};
    put_u64(buf, value);
    return store_err(mdb_put(t->txn, t->store->meta, &k, &v, 0), "meta put");
}

int store_cursor_open(struct store_txn *t, enum store_table table,
                      const void *from, size_t from_len,
                      struct store_cursor *c)
{
    MDB_dbi dbi = table == STORE_KV ? t->store->kv : t->store->members;
    int rc;

    memset(c, 0, sizeof *c);
    rc = mdb_cursor_open(t->txn, dbi, &c->cur);
    if (rc != 0)
        return store_err(rc, "cursor open");
    c->next_op = MDB_FIRST;
    if (from == NULL || from_len == 0)
        return 0;
    /* A long key's group starts at its prefix; entries below @from inside
     * the group are skipped once the group is sorted. */
    MDB_val k = {from_len < STORE_LONG_PREFIX ? from_len : STORE_LONG_PREFIX,
                 (void *)from},
            v;
    c->from = malloc(from_len);
    if (c->from == NULL) {
        store_cursor_close(c);
        return STORE_EIO;
    }
    memcpy(c->from, from, from_len);
    c->from_len = from_len;
    rc = mdb_cursor_get(c->cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) {
        c->next_op = -1;
        return 0;
    }
    if (rc != 0) {
        store_cursor_close(c);
        return store_err(rc, "cursor seek");
    }
    c->next_op = MDB_GET_CURRENT; /* the seek landed on the first entry */
    return 0;
}

static int cursor_step(struct store_cursor *c, MDB_val *k, MDB_val *v)
{
    int rc;
    if (c->next_op < 0)
        return 0;
    rc = mdb_cursor_get(c->cur, k, v, (MDB_cursor_op)c->next_op);
    c->next_op = MDB_NEXT;
    if (rc == MDB_NOTFOUND) {
        c->next_op = -1;
        return 0;
    }
    if (rc != 0)
        return store_err(rc, "cursor next");
    return 1;
}

static int bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int r = n ? memcmp(a, b, n) : 0;
    if (r != 0)
        return r;
    return alen < blen ? -1 : alen > blen;
}

static int group_cmp(const void *pa, const void *pb)
{
    const struct store_group_entry *a = pa, *b = pb;
    return bytes_cmp(a->key, a->klen, b->key, b->klen);
}

static int group_add(struct store_cursor *c, const MDB_val *k, const MDB_val *v)
{
    struct store_group_entry *e;
    int rc;

    if (c->group_n == c->group_cap) {
        size_t cap = c->group_cap ? c->group_cap * 2 : 16;
        e = realloc(c->group, cap * sizeof *e);
        if (e == NULL)
            return STORE_EIO;
        c->group = e;
        c->group_cap = cap;
    }
    e = &c->group[c->group_n];
    rc = record_decode(k, v, &e->rec, &e->key, &e->klen);
    if (rc != 0)
        return rc;
    c->group_n++;
    return 0;
}

/* The entry at @k starts a group of keys sharing their first
 * STORE_LONG_PREFIX bytes: read all of it and sort it by the whole key. */
static int group_load(struct store_cursor *c, const MDB_val *k,
                      const MDB_val *v)
{
    uint8_t prefix[STORE_LONG_PREFIX];
    MDB_val nk, nv;
    int rc;

    memcpy(prefix, k->mv_data, STORE_LONG_PREFIX);
    c->group_n = c->group_i = 0;
    if ((rc = group_add(c, k, v)) != 0)
        return rc;
    for (;;) {
        rc = mdb_cursor_get(c->cur, &nk, &nv, MDB_NEXT);
        if (rc == MDB_NOTFOUND) {
            c->next_op = -1;
            break;
        }
        if (rc != 0)
            return store_err(rc, "cursor next");
        if (nk.mv_size < STORE_LONG_PREFIX ||
            memcmp(nk.mv_data, prefix, STORE_LONG_PREFIX) != 0) {
            c->next_op = MDB_GET_CURRENT; /* first entry after the group */
            break;
        }
        if ((rc = group_add(c, &nk, &nv)) != 0)
            return rc;
    }
    qsort(c->group, c->group_n, sizeof *c->group, group_cmp);
    return 0;
}

int store_cursor_next_kv(struct store_cursor *c, const void **key,
                         size_t *klen, struct store_record *rec)
{
    MDB_val k, v;
    int rc;

    for (;;) {
        if (c->group_i < c->group_n) {
            struct store_group_entry *e = &c->group[c->group_i++];
            *key = e->key;
            *klen = e->klen;
            *rec = e->rec;
        } else {
            rc = cursor_step(c, &k, &v);
            if (rc <= 0)
                return rc;
            if (k.mv_size >= STORE_LONG_PREFIX) {
                if ((rc = group_load(c, &k, &v)) != 0)
                    return rc;
                continue;
            }
            rc = record_decode(&k, &v, rec, key, klen);
            if (rc < 0)
                return rc;
        }
        if (c->from != NULL) {
            if (bytes_cmp(*key, *klen, c->from, c->from_len) < 0)
                continue;
            free(c->from); /* everything after this is larger */
            c->from = NULL;
        }
        return 1;
    }
}

int store_cursor_next_member(struct store_cursor *c, struct store_member *m)
{
    MDB_val k, v;
    int rc = cursor_step(c, &k, &v);
    if (rc <= 0)
        return rc;
    rc = member_decode(&k, &v, m);
    return rc < 0 ? rc : 1;
}

void store_cursor_close(struct store_cursor *c)
{
    if (c->cur != NULL)
        mdb_cursor_close(c->cur);
    c->cur = NULL;
    free(c->group);
    free(c->from);
    c->group = NULL;
    c->from = NULL;
    c->group_n = c->group_i = c->group_cap = 0;
}

const char *store_strerror(int code)
{
    switch (code) {
    case 0:
        return "ok";
    case STORE_ENOTFOUND:
        return "not found";
    case STORE_EFULL:
        return "database map full";
    case STORE_EIO:
        return "storage I/O error";
    case STORE_ECORRUPT:
        return "stored data is corrupt";
    case STORE_EINVAL:
        return "invalid argument";
    }
    return "unknown store error";
}
