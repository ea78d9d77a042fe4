/* store.c - LMDB storage for the state machine; see store.h.
 *
 * Why LMDB: ordered keys (range and prefix reads come free), reads straight
 * from the page cache through mmap, and crash-safe copy-on-write commits.
 * MDB_NOMETASYNC skips the second fsync of each commit: after a machine crash
 * the newest commits may roll back, but never tear, and the Raft log (which
 * is fsynced before any write is acknowledged) replays them.
 *
 * Commits run on a writer thread (store.h): at 1M keys a commit of random
 * overwrites takes tens of milliseconds of page writes and fsync, which on
 * the loop thread stalled every request behind it (bench/README.md).  The
 * writer touches only the sealed overlay and its own LMDB transaction; the
 * loop thread owns everything else, and the two meet only under @mu. */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <pthread.h>
#include <stdatomic.h>

#include <openssl/evp.h>

#include "log.h"
#include "overlay.h"

#define STORE_RECORD_HEADER 24
#define STORE_MAP_CEILING ((size_t)1 << 40) /* 1 TiB of address space */

/* Overlay tables; the first two are the ones that count entries. */
enum
{
    T_KV = 0,
    T_MEMBERS = 1,
    T_META = 2,
};

enum writer_state
{
    W_IDLE, /* nothing handed over */
    W_WORK, /* the sealed overlay is being committed */
    W_DONE, /* committed (or failed: wrc): the loop thread must reap it */
    W_STOP, /* asked to exit */
};

struct store
{
    MDB_env *env;
    MDB_dbi kv, members, meta;
    size_t map_size;
    /* Applied writes not yet committed: ov[active] takes them; while
     * @sealed, ov[!active] is with the writer (or committed and not yet
     * reaped).  Reads look in ov[active], then the sealed one, then @rtxn. */
    struct overlay ov[2];
    int active;
    bool sealed;
    int64_t delta[2][2];   /* per overlay, per counted table: keys added */
    bool cleared[2][2];    /* per overlay, per table: emptied, then written */
    int64_t mark_delta[2]; /* ov[active]'s deltas when the txn began */
    bool mark_cleared[2];
    bool in_write;         /* a write transaction is open */
    MDB_txn *rtxn;         /* the last commit, as the loop thread sees it */
    pthread_t writer;
    bool writer_started;
    pthread_mutex_t mu; /* guards wstate and wrc */
    pthread_cond_t cv;
    enum writer_state wstate;
    int wrc;
    /* Detached read transactions open (store_txn_begin_detached): while
     * there are any, the map may not move, so growing it waits. */
    unsigned detached;
    /* A full map waits for the detached readers (written under @mu; read
     * without it by store_detached_wanted). */
    atomic_bool grow_waits;
    void (*notify)(void *arg); /* from the writer or a detached reader */
    void *notify_arg;
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

static MDB_dbi table_dbi(const struct store *s, unsigned table)
{
    return table == T_KV ? s->kv : table == T_MEMBERS ? s->members : s->meta;
}

static int writer_order_cmp(const void *pa, const void *pb)
{
    const struct overlay_entry *a = *(const struct overlay_entry *const *)pa;
    const struct overlay_entry *b = *(const struct overlay_entry *const *)pb;
    if (a->table != b->table)
        return a->table < b->table ? -1 : 1;
    return overlay_key_cmp(a->key, a->klen, b->key, b->klen);
}

/* Writer thread: commit the sealed overlay in one LMDB transaction, in key
 * order (LMDB takes sorted writes best).  The order is the writer's own:
 * the overlay's is the loop thread's, for its cursors. */
static int writer_commit(struct store *s, struct overlay *o)
{
    const struct overlay_entry **ix = malloc((o->n + 1) * sizeof *ix);
    MDB_txn *txn;
    int rc;

    if (ix == NULL)
        return ENOMEM;
    for (size_t i = 0; i < o->n; i++)
        ix[i] = &o->entries[i];
    qsort(ix, o->n, sizeof *ix, writer_order_cmp);
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        goto out;
    for (unsigned table = T_KV; table <= T_MEMBERS; table++) {
        if (s->cleared[!s->active][table] &&
            (rc = mdb_drop(txn, table_dbi(s, table), 0)) != 0)
            goto abort;
    }
    for (size_t i = 0; i < o->n; i++) {
        const struct overlay_entry *e = ix[i];
        MDB_val k = {e->klen, (void *)e->key}, v = {e->vlen, e->val};
        MDB_dbi dbi = table_dbi(s, e->table);
        rc = e->tomb ? mdb_del(txn, dbi, &k, NULL)
                     : mdb_put(txn, dbi, &k, &v, 0);
        if (rc == MDB_NOTFOUND) /* deleted here, never committed */
            rc = 0;
        if (rc != 0)
            goto abort;
    }
    rc = mdb_txn_commit(txn);
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    free(ix);
    return rc;
}

static void *writer_main(void *arg)
{
    struct store *s = arg;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->wstate != W_WORK && s->wstate != W_STOP)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->wstate == W_STOP)
            break;
        /* The loop thread reads the sealed overlay meanwhile, but does not
         * change it until this commit is reaped. */
        struct overlay *o = &s->ov[!s->active];
        pthread_mutex_unlock(&s->mu);
        int rc = writer_commit(s, o);
        pthread_mutex_lock(&s->mu);
        s->wrc = rc;
        s->wstate = W_DONE;
        pthread_cond_broadcast(&s->cv);
        if (s->notify != NULL)
            s->notify(s->notify_arg);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* See the last commit: the read transaction moves up to it. */
static int rtxn_renew(struct store *s)
{
    mdb_txn_reset(s->rtxn);
    return mdb_txn_renew(s->rtxn);
}

static void store_fail(struct store *s, int rc, const char *what)
{
    log_error("lmdb %s: %s", what, mdb_strerror(rc));
    if (s->fatal != NULL)
        s->fatal(s->fatal_arg, "cannot commit applied entries to the store");
}

/* Whether a detached reader is open.  If one is and @waits, the caller
 * keeps a commit for later: it is marked under the same lock, so the last
 * reader to end (detached_end) cannot miss it. */
static bool detached_open(struct store *s, bool waits)
{
    pthread_mutex_lock(&s->mu);
    bool open = s->detached > 0;
    if (open && waits)
        s->grow_waits = true;
    pthread_mutex_unlock(&s->mu);
    return open;
}

/* Double the map.  The writer must be idle: no transaction may be active
 * in the process, so the read transaction is reset around it.  Returns
 * MAP_LATER, changing nothing, while a detached reader (on another thread)
 * still uses the map. */
#define MAP_LATER 1
static int map_grow(struct store *s, bool for_commit)
{
    size_t next = s->map_size * 2;
    int rc;

    if (next > STORE_MAP_CEILING)
        return STORE_EFULL;
    if (detached_open(s, for_commit))
        return MAP_LATER;
    mdb_txn_reset(s->rtxn);
    rc = mdb_env_set_mapsize(s->env, next);
    int rc2 = mdb_txn_renew(s->rtxn);
    if (rc != 0)
        return store_err(rc, "set_mapsize");
    if (rc2 != 0)
        return store_err(rc2, "txn_renew");
    s->map_size = next;
    log_info("store map grown to %zu MiB", next >> 20);
    return 0;
}

/* Loop thread: if the writer finished a commit, take it in.  A full map is
 * grown and the same overlay handed over again; any other failure is fatal
 * (the node answered for those entries). */
static void reap(struct store *s)
{
    int rc;

    pthread_mutex_lock(&s->mu);
    if (s->wstate != W_DONE) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    rc = s->wrc;
    s->wstate = W_IDLE;
    s->grow_waits = false;
    pthread_mutex_unlock(&s->mu);
    int grown = rc == MDB_MAP_FULL ? map_grow(s, true) : -1;
    if (grown == MAP_LATER) {
        /* Keep the commit (grow_waits is set) for when the last detached
         * reader ends; it notifies, and the next store_poll comes back
         * here. */
        pthread_mutex_lock(&s->mu);
        s->wstate = W_DONE;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (grown == 0) {
        pthread_mutex_lock(&s->mu);
        s->wstate = W_WORK;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (rc != 0) {
        store_fail(s, rc, "commit");
        return; /* keep the sealed overlay: reads still see it */
    }
    if ((rc = rtxn_renew(s)) != 0) {
        store_fail(s, rc, "txn_renew");
        return;
    }
    overlay_reset(&s->ov[!s->active]);
    s->delta[!s->active][T_KV] = s->delta[!s->active][T_MEMBERS] = 0;
    s->cleared[!s->active][T_KV] = s->cleared[!s->active][T_MEMBERS] = false;
    s->sealed = false;
}

/* Loop thread: wait until the writer has nothing in hand.  A commit that
 * waits to grow the map waits for the detached readers too. */
static void wait_writer(struct store *s)
{
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (s->wstate == W_WORK || (s->grow_waits && s->detached > 0))
            pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
        bool was_sealed = s->sealed;
        reap(s);
        if (!s->sealed || !was_sealed)
            return;
        /* Handed over again after growth (W_WORK, or already W_DONE: the
         * writer may be that quick), or kept until the detached readers
         * end (W_DONE): wait again.  W_IDLE: it failed, fatal was called. */
        pthread_mutex_lock(&s->mu);
        bool again = s->wstate != W_IDLE;
        pthread_mutex_unlock(&s->mu);
        if (!again)
            return;
    }
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
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
    if (rc != 0)
        goto err_env;
    overlay_init(&s->ov[0]);
    overlay_init(&s->ov[1]);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if ((rc = pthread_create(&s->writer, NULL, writer_main, s)) != 0) {
        mdb_txn_abort(s->rtxn);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        goto err_env;
    }
    s->writer_started = true;
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

void store_set_notify(struct store *s, void (*notify)(void *arg), void *arg)
{
    pthread_mutex_lock(&s->mu);
    s->notify = notify;
    s->notify_arg = arg;
    pthread_mutex_unlock(&s->mu);
}

void store_poll(struct store *s)
{
    reap(s);
}

/* Grow the map before it fills, while the writer is idle: a full map in
 * the writer costs a retry of the whole commit.  LMDB reports committed
 * pages only; copy-on-write makes a commit take about its size again in
 * new pages, and the branch pages above each leaf it touches. */
static int headroom(struct store *s, uint64_t pending)
{
    MDB_envinfo info;
    MDB_stat ms;

    for (int i = 0; i < 8; i++) {
        mdb_env_info(s->env, &info);
        mdb_env_stat(s->env, &ms);
        uint64_t used = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
        if (used + 4 * pending < info.me_mapsize / 4 * 3)
            return 0;
        int rc = map_grow(s, false);
        if (rc == MAP_LATER)
            return 0; /* not now: the writer grows it if it must */
        if (rc != 0)
            return rc;
    }
    return 0;
}

bool store_commit_start(struct store *s)
{
    struct overlay *o = &s->ov[s->active];

    reap(s);
    if (s->sealed || s->in_write || overlay_len(o) == 0)
        return false;
    if (headroom(s, overlay_bytes(o)) != 0) {
        /* The writer will hit the full map and fail loudly. */
        log_warn("store map cannot grow ahead of a commit");
    }
    pthread_mutex_lock(&s->mu);
    s->active = !s->active;
    s->sealed = true;
    s->wstate = W_WORK;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return true;
}

int store_flush(struct store *s)
{
    if (s->in_write)
        return STORE_EINVAL;
    wait_writer(s);
    if (s->sealed)
        return STORE_EIO; /* the writer failed; fatal was called */
    if (store_commit_start(s))
        wait_writer(s);
    return s->sealed ? STORE_EIO : 0;
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    if (s->writer_started) {
        pthread_mutex_lock(&s->mu);
        while (s->detached > 0)
            pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
        s->in_write = false;
        store_flush(s);
        pthread_mutex_lock(&s->mu);
        s->wstate = W_STOP;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->writer, NULL);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        mdb_txn_abort(s->rtxn);
    }
    overlay_free(&s->ov[0]);
    overlay_free(&s->ov[1]);
    mdb_env_close(s->env);
    free(s);
}

int store_sync(struct store *s)
{
    int rc = store_flush(s);
    if (rc != 0)
        return rc;
    return store_err(mdb_env_sync(s->env, 1), "sync");
}

/* Entries of @table in the layers below the open overlay. */
static int64_t counted_below(const struct store *s, unsigned table)
{
    MDB_stat ms;
    int64_t n = 0;
    bool sealed_cleared = s->sealed && s->cleared[!s->active][table];
    if (!sealed_cleared && mdb_stat(s->rtxn, table_dbi(s, table), &ms) == 0)
        n = (int64_t)ms.ms_entries;
    if (s->sealed)
        n += s->delta[!s->active][table];
    return n;
}

static int64_t counted(const struct store *s, unsigned table)
{
    int64_t n = s->delta[s->active][table];
    if (!s->cleared[s->active][table])
        n += counted_below(s, table);
    return n < 0 ? 0 : n;
}

int store_stat(struct store *s, struct store_stat *st)
{
    MDB_stat ms;
    MDB_envinfo info;
    struct stat fs;
    char file[4200];

    memset(st, 0, sizeof *st);
    reap(s);
    /* Counts include the writes not committed yet; sizes are as of the
     * last commit. */
    st->keys = (uint64_t)counted(s, T_KV);
    st->members = (uint64_t)counted(s, T_MEMBERS);
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &ms);
    st->used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
    st->map_bytes = info.me_mapsize;
    snprintf(file, sizeof file, "%s/data.mdb", s->path);
    if (stat(file, &fs) == 0)
        st->file_bytes = (uint64_t)fs.st_size;
    return 0;
}

/* Any thread: one detached reader fewer.  The last one wakes whoever
 * waits to grow the map: wait_writer and store_close through the
 * condition, the loop (store_poll) through the notify callback. */
static void detached_end(struct store *s)
{
    pthread_mutex_lock(&s->mu);
    if (--s->detached == 0) {
        pthread_cond_broadcast(&s->cv);
        if (s->grow_waits && s->notify != NULL)
            s->notify(s->notify_arg);
    }
    pthread_mutex_unlock(&s->mu);
}

int store_txn_begin(struct store *s, bool write, struct store_txn *t)
{
    t->store = s;
    t->write = write;
    t->shared = true;
    t->detached = false;
    t->txn = s->rtxn;
    if (!write)
        return 0;
    if (s->in_write)
        return STORE_EINVAL;
    if (overlay_mark(&s->ov[s->active]) != 0)
        return STORE_EIO;
    s->mark_delta[T_KV] = s->delta[s->active][T_KV];
    s->mark_delta[T_MEMBERS] = s->delta[s->active][T_MEMBERS];
    s->mark_cleared[T_KV] = s->cleared[s->active][T_KV];
    s->mark_cleared[T_MEMBERS] = s->cleared[s->active][T_MEMBERS];
    s->in_write = true;
    return 0;
}

int store_txn_commit(struct store_txn *t)
{
    if (t->detached) {
        store_txn_abort(t);
        return 0;
    }
    if (t->write && t->store->in_write) {
        overlay_release(&t->store->ov[t->store->active]);
        t->store->in_write = false;
    }
    t->txn = NULL;
    return 0;
}

bool store_detached_wanted(const struct store_txn *t)
{
    return !atomic_load(&t->store->grow_waits);
}

int store_txn_begin_detached(struct store *s, struct store_txn *t)
{
    MDB_txn *txn;
    int rc;

    /* Counted before LMDB maps anything for it: map_grow, on this thread,
     * must see it from here on. */
    pthread_mutex_lock(&s->mu);
    s->detached++;
    pthread_mutex_unlock(&s->mu);
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        detached_end(s);
        return store_err(rc, "detached txn begin");
    }
    t->store = s;
    t->txn = txn;
    t->write = false;
    t->shared = false;
    t->detached = true;
    return 0;
}

void store_txn_abort(struct store_txn *t)
{
    struct store *s = t->store;
    if (t->detached) {
        mdb_txn_abort(t->txn);
        t->txn = NULL;
        t->detached = false;
        detached_end(s);
        return;
    }
    if (t->write && s != NULL && s->in_write) {
        overlay_rollback(&s->ov[s->active]);
        s->delta[s->active][T_KV] = s->mark_delta[T_KV];
        s->delta[s->active][T_MEMBERS] = s->mark_delta[T_MEMBERS];
        s->cleared[s->active][T_KV] = s->mark_cleared[T_KV];
        s->cleared[s->active][T_MEMBERS] = s->mark_cleared[T_MEMBERS];
        s->in_write = false;
    }
    t->txn = NULL;
}

uint64_t store_pending_bytes(const struct store *s)
{
    /* Memory, not what a commit writes: a key overwritten 100 times holds
     * 100 values until the commit. */
    const struct overlay *o = &s->ov[s->active];
    size_t held = overlay_held_bytes(o), counted = overlay_bytes(o);
    return held > counted ? held : counted;
}

bool store_pending(const struct store *s)
{
    return overlay_len(&s->ov[s->active]) > 0;
}

/* --- the layers: the open overlay, the sealed one, the last commit ------ */

static int raw_get(struct store *s, unsigned table, const MDB_val *k,
                   MDB_val *v)
{
    const void *val;
    size_t vlen;
    enum overlay_found f =
        overlay_get(&s->ov[s->active], table, k->mv_data, k->mv_size, &val,
                    &vlen);
    bool below_gone = table != T_META && s->cleared[s->active][table];
    if (f == OVERLAY_ABSENT && s->sealed && !below_gone) {
        f = overlay_get(&s->ov[!s->active], table, k->mv_data, k->mv_size,
                        &val, &vlen);
        below_gone = table != T_META && s->cleared[!s->active][table];
    }
    if (f == OVERLAY_TOMBSTONE || (f == OVERLAY_ABSENT && below_gone))
        return MDB_NOTFOUND;
    if (f == OVERLAY_VALUE) {
        v->mv_data = (void *)val;
        v->mv_size = vlen;
        return 0;
    }
    MDB_val kk = *k;
    return mdb_get(s->rtxn, table_dbi(s, table), &kk, v);
}

/* A read through @t: a detached transaction sees its own LMDB snapshot
 * and nothing of the overlays (another thread may be changing them). */
static int txn_get(struct store_txn *t, unsigned table, const MDB_val *k,
                   MDB_val *v)
{
    if (t->detached) {
        MDB_val kk = *k;
        return mdb_get(t->txn, table_dbi(t->store, table), &kk, v);
    }
    return raw_get(t->store, table, k, v);
}

/* Room for a value of v->mv_size bytes under @k, at v->mv_data.  @existed
 * says whether @k is already stored (its last lookup found it): the count of
 * @table grows only when it was not. */
static int raw_put_known(struct store_txn *t, unsigned table, const MDB_val *k,
                         MDB_val *v, bool existed)
{
    struct store *s = t->store;
    void *p;
    int rc;

    if (!t->write || !s->in_write)
        return EINVAL;
    rc = overlay_put(&s->ov[s->active], table, k->mv_data, k->mv_size,
                     v->mv_size, &p);
    if (rc != 0)
        return rc == -EINVAL ? MDB_BAD_VALSIZE : ENOMEM;
    v->mv_data = p;
    if (!existed && table != T_META)
        s->delta[s->active][table]++;
    return 0;
}

static int raw_put(struct store_txn *t, unsigned table, const MDB_val *k,
                   MDB_val *v)
{
    MDB_val old;
    bool existed = table == T_META || raw_get(t->store, table, k, &old) == 0;
    return raw_put_known(t, table, k, v, existed);
}

static int raw_del(struct store_txn *t, unsigned table, const MDB_val *k)
{
    struct store *s = t->store;
    MDB_val old;
    int rc;

    if (!t->write || !s->in_write)
        return EINVAL;
    if ((rc = raw_get(s, table, k, &old)) != 0)
        return rc;
    rc = overlay_del(&s->ov[s->active], table, k->mv_data, k->mv_size);
    if (rc != 0)
        return rc == -EINVAL ? MDB_BAD_VALSIZE : ENOMEM;
    if (table != T_META)
        s->delta[s->active][table]--;
    return 0;
}

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

/* Looks @key up, encoding it into @k.  Returns 0 with @rec filled,
 * STORE_ENOTFOUND, or another error of store_kv_get's.  *taken says whether
 * @k is stored at all: by @key, or by another long key whose 128-bit hash
 * collides with it (not expected), whose value is never returned as
 * @key's. */
static int kv_lookup(struct store_txn *t, const void *key, size_t klen,
                     struct lmdb_key *k, struct store_record *rec, bool *taken)
{
    MDB_val v;
    const void *full;
    size_t full_len;
    int rc;

    *taken = false;
    if ((rc = key_encode(key, klen, k)) != 0)
        return rc;
    rc = txn_get(t, T_KV, &k->val, &v);
    if (rc != 0)
        return store_err(rc, "get");
    *taken = true;
    if ((rc = record_decode(&k->val, &v, rec, &full, &full_len)) != 0)
        return rc;
    if (full_len != klen || memcmp(full, key, klen) != 0)
        return STORE_ENOTFOUND;
    return 0;
}

int store_kv_get(struct store_txn *t, const void *key, size_t klen,
                 struct store_record *rec)
{
    struct lmdb_key k;
    bool taken;
    return kv_lookup(t, key, klen, &k, rec, &taken);
}

/* Writes @rec under @k, the encoded form of @key. */
static int kv_write(struct store_txn *t, struct lmdb_key *k, const void *key,
                    size_t klen, const struct store_record *rec, bool existed)
{
    size_t extra = klen >= STORE_SHORT_KEY ? 2 + klen : 0;
    MDB_val v = {STORE_RECORD_HEADER + extra + rec->value_len, NULL};
    /* Like MDB_RESERVE: the record is written in place, no temporary copy. */
    int rc = raw_put_known(t, T_KV, &k->val, &v, existed);

    if (rc != 0)
        return store_err(rc, "put");
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

int store_kv_put(struct store_txn *t, const void *key, size_t klen,
                 const struct store_record *rec)
{
    struct lmdb_key k;
    MDB_val old;
    int rc;

    if ((rc = key_encode(key, klen, &k)) != 0)
        return rc;
    return kv_write(t, &k, key, klen, rec,
                    raw_get(t->store, T_KV, &k.val, &old) == 0);
}

int store_kv_update(struct store_txn *t, const void *key, size_t klen,
                    uint64_t index, const void *value, size_t vlen,
                    struct store_record *rec)
{
    struct lmdb_key k;
    struct store_record prev;
    bool taken;
    int rc = kv_lookup(t, key, klen, &k, &prev, &taken);

    if (rc != 0 && rc != STORE_ENOTFOUND)
        return rc;
    /* A long key whose hash collides replaces the other key, as a put after
     * a failed get would, but starts a history of its own. */
    rec->create_index = rc == 0 ? prev.create_index : index;
    rec->version = rc == 0 ? prev.version + 1 : 1;
    rec->mod_index = index;
    rec->value = value;
    rec->value_len = vlen;
    return kv_write(t, &k, key, klen, rec, taken);
}

int store_kv_del(struct store_txn *t, const void *key, size_t klen)
{
    struct lmdb_key k;
    int rc;
    if ((rc = key_encode(key, klen, &k)) != 0)
        return rc;
    return store_err(raw_del(t, T_KV, &k.val), "del");
}

int store_count(struct store_txn *t, enum store_table table, uint64_t *n)
{
    struct store *s = t->store;
    unsigned tb = table == STORE_KV ? T_KV : T_MEMBERS;
    if (t->detached) {
        MDB_stat ms;
        int rc = mdb_stat(t->txn, table_dbi(s, tb), &ms);
        if (rc != 0)
            return store_err(rc, "stat");
        *n = (uint64_t)ms.ms_entries;
        return 0;
    }
    *n = (uint64_t)counted(s, tb);
    return 0;
}

/* Emptying a table is one more write of the transaction: the open
 * overlay hides everything below it for that table (and what it held for
 * it), and the writer drops the LMDB table before it writes the rest. */
int store_clear(struct store_txn *t, enum store_table table)
{
    struct store *s = t->store;
    struct overlay *o = &s->ov[s->active];
    unsigned tb = table == STORE_KV ? T_KV : T_MEMBERS;
    int rc;

    if (!t->write || !s->in_write)
        return STORE_EINVAL;
    if ((rc = overlay_sort(o)) != 0)
        return STORE_EIO;
    const struct overlay_entry *e;
    for (size_t i = overlay_seek(o, tb, NULL, 0);
         (e = overlay_at(o, tb, i)) != NULL; i++)
        if (!e->tomb && overlay_del(o, tb, e->key, e->klen) != 0)
            return STORE_EIO;
    /* Nothing is left below: counted() then sums this overlay only. */
    s->cleared[s->active][tb] = true;
    s->delta[s->active][tb] = 0;
    return 0;
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

    (void)append;
    if (m->name_len > 0xffff || m->raft_addr_len > 0xffff ||
        m->http_addr_len > 0xffff)
        return STORE_EINVAL;
    member_key(m->id, key);
    v.mv_size = 6 + m->name_len + m->raft_addr_len + m->http_addr_len;
    rc = raw_put(t, T_MEMBERS, &k, &v);
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
    rc = txn_get(t, T_MEMBERS, &k, &v);
    if (rc != 0)
        return store_err(rc, "member get");
    return member_decode(&k, &v, m);
}

int store_member_del(struct store_txn *t, uint64_t id)
{
    uint8_t key[8];
    MDB_val k = {8, key};
    member_key(id, key);
    return store_err(raw_del(t, T_MEMBERS, &k), "member del");
}

int store_meta_get(struct store_txn *t, const char *name, uint64_t *value)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = txn_get(t, T_META, &k, &v);
    if (rc != 0)
        return store_err(rc, "meta get");
    if (v.mv_size != 8)
        return STORE_ECORRUPT;
    *value = get_u64(v.mv_data);
    return 0;
}

int store_meta_put(struct store_txn *t, const char *name, uint64_t value)
{
    MDB_val k = {strlen(name), (void *)name}, v = {8, NULL};
    int rc = raw_put(t, T_META, &k, &v);
    if (rc == 0)
        put_u64(v.mv_data, value);
    return store_err(rc, "meta put");
}

int store_cursor_open(struct store_txn *t, enum store_table table,
                      const void *from, size_t from_len,
                      struct store_cursor *c)
{
    struct store *s = t->store;
    unsigned tb = table == STORE_KV ? T_KV : T_MEMBERS;
    MDB_dbi dbi = table_dbi(s, tb);
    int rc;

    memset(c, 0, sizeof *c);
    c->store = s;
    c->table = tb;
    if (t->detached) {
        c->use_lmdb = true; /* LMDB alone; use[] stay false */
        rc = mdb_cursor_open(t->txn, dbi, &c->cur);
        if (rc != 0)
            return store_err(rc, "cursor open");
        c->next_op = MDB_FIRST;
        goto lmdb_only;
    }
    /* Which layers count: an emptied table hides those below it. */
    c->use[0] = true;
    c->use[1] = s->sealed && !s->cleared[s->active][tb];
    c->use_lmdb = !s->cleared[s->active][tb] &&
                  !(s->sealed && s->cleared[!s->active][tb]);
    /* The writer sorts its own index of the sealed overlay, so the loop
     * thread may sort the overlay's (it reads the entries only). */
    if (overlay_sort(&s->ov[s->active]) != 0 ||
        (c->use[1] && overlay_sort(&s->ov[!s->active]) != 0))
        return STORE_EIO;
    rc = mdb_cursor_open(s->rtxn, dbi, &c->cur);
    if (rc != 0)
        return store_err(rc, "cursor open");
    c->next_op = c->use_lmdb ? MDB_FIRST : -1;
lmdb_only:;
    /* A long key's group starts at its prefix; entries below @from inside
     * the group are skipped once the group is sorted. */
    const void *seek = NULL;
    size_t seek_len = 0;
    if (from != NULL && from_len > 0) {
        seek = from;
        seek_len = from_len < STORE_LONG_PREFIX ? from_len : STORE_LONG_PREFIX;
        c->from = malloc(from_len);
        if (c->from == NULL) {
            store_cursor_close(c);
            return STORE_EIO;
        }
        memcpy(c->from, from, from_len);
        c->from_len = from_len;
    }
    for (int j = 0; j < 2; j++)
        if (c->use[j])
            c->pos[j] = overlay_seek(&s->ov[j ? !s->active : s->active], tb,
                                     seek, seek_len);
    if (seek == NULL || !c->use_lmdb)
        return 0;
    MDB_val k = {seek_len, (void *)seek}, v;
    rc = mdb_cursor_get(c->cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) {
        c->next_op = -1;
        return 0;
    }
    if (rc != 0) {
        store_cursor_close(c);
        return store_err(rc, "cursor seek");
    }
    c->lk = k;
    c->lv = v;
    c->lmdb_ok = true;
    c->next_op = MDB_NEXT;
    return 0;
}

/* LMDB's next entry into lk/lv, unless one is there already. */
static int lmdb_head(struct store_cursor *c)
{
    if (c->lmdb_ok || c->next_op < 0)
        return 0;
    int rc = mdb_cursor_get(c->cur, &c->lk, &c->lv,
                            (MDB_cursor_op)c->next_op);
    c->next_op = MDB_NEXT;
    if (rc == MDB_NOTFOUND) {
        c->next_op = -1;
        return 0;
    }
    if (rc != 0)
        return store_err(rc, "cursor next");
    c->lmdb_ok = true;
    return 0;
}

/* The next raw entry of the merged layers: 1 with @k/@v, 0 at the end. */
static int cursor_step(struct store_cursor *c, MDB_val *k, MDB_val *v)
{
    struct store *s = c->store;
    int rc;

    if (c->pushed) {
        c->pushed = false;
        *k = c->pk;
        *v = c->pv;
        return 1;
    }
    for (;;) {
        const struct overlay_entry *head[2] = {NULL, NULL};
        const void *best = NULL;
        size_t best_len = 0;
        int from = -1; /* 0, 1: an overlay; 2: LMDB */

        if ((rc = lmdb_head(c)) != 0)
            return rc;
        for (int j = 0; j < 2; j++) {
            if (!c->use[j])
                continue;
            head[j] = overlay_at(&s->ov[j ? !s->active : s->active], c->table,
                                 c->pos[j]);
            if (head[j] != NULL &&
                (from < 0 || overlay_key_cmp(head[j]->key, head[j]->klen, best,
                                             best_len) < 0)) {
                best = head[j]->key;
                best_len = head[j]->klen;
                from = j;
            }
        }
        if (c->lmdb_ok && (from < 0 || overlay_key_cmp(c->lk.mv_data,
                                                        c->lk.mv_size, best,
                                                        best_len) < 0)) {
            best = c->lk.mv_data;
            best_len = c->lk.mv_size;
            from = 2;
        }
        if (from < 0)
            return 0;
        /* Every layer holding this key moves past it; the highest wins. */
        const struct overlay_entry *win = NULL;
        for (int j = 0; j < 2; j++) {
            if (head[j] != NULL &&
                overlay_key_cmp(head[j]->key, head[j]->klen, best,
                                best_len) == 0) {
                if (win == NULL)
                    win = head[j];
                c->pos[j]++;
            }
        }
        if (c->lmdb_ok && overlay_key_cmp(c->lk.mv_data, c->lk.mv_size,
                                          best, best_len) == 0) {
            c->lmdb_ok = false;
            if (win == NULL) {
                *k = c->lk;
                *v = c->lv;
                return 1;
            }
        }
        if (win->tomb)
            continue;
        k->mv_data = (void *)win->key;
        k->mv_size = win->klen;
        v->mv_data = win->val;
        v->mv_size = win->vlen;
        return 1;
    }
}

/* Take back the step that returned @k/@v: it comes again next. */
static void cursor_unstep(struct store_cursor *c, const MDB_val *k,
                          const MDB_val *v)
{
    c->pushed = true;
    c->pk = *k;
    c->pv = *v;
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
        rc = cursor_step(c, &nk, &nv);
        if (rc < 0)
            return rc;
        if (rc == 0)
            break;
        if (nk.mv_size < STORE_LONG_PREFIX ||
            memcmp(nk.mv_data, prefix, STORE_LONG_PREFIX) != 0) {
            cursor_unstep(c, &nk, &nv); /* first entry after the group */
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
