/* fsm.c - apply / snapshot / restore of the replicated state; see fsm.h.
 *
 * Everything runs on the loop thread, synchronously: libraft 0.15's async
 * snapshots do not work with its uv backend (raft_init fails), and an apply
 * is one short write transaction of the store (into its in-memory overlay;
 * the store's writer thread commits to LMDB). */
#include "fsm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "log.h"

#define META_APPLIED "applied_index"
#define META_CLUSTER "cluster_id"
#define SNAP_MAGIC "RKVSNAP1"
#define SNAP_HEADER 40
#define SNAP_INITIAL ((size_t)64 << 10)
#define SNAP_MARKER_MAGIC "RKVSNAPM"
#define SNAP_MARKER_LEN 24

int fsm_init(struct fsm *f, struct store *store)
{
    struct store_txn t;
    int rv;

    memset(f, 0, sizeof *f);
    f->store = store;
    rv = store_txn_begin(store, false, &t);
    if (rv != 0)
        return rv;
    rv = store_meta_get(&t, META_APPLIED, &f->applied_index);
    if (rv == 0 || rv == STORE_ENOTFOUND)
        rv = store_meta_get(&t, META_CLUSTER, &f->cluster_id);
    store_txn_abort(&t);
    return rv == STORE_ENOTFOUND ? 0 : rv;
}

void fsm_close(struct fsm *f)
{
    free(f->result.outcomes);
    free(f->result.ops);
    free(f->arena);
    f->result.outcomes = NULL;
    f->result.ops = NULL;
    f->arena = NULL;
    f->outcomes_cap = f->ops_cap = 0;
    f->arena_len = f->arena_cap = 0;
}

static void fsm_fail(struct fsm *f, const char *what, int rv)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s", what, store_strerror(rv));
    log_error("state machine storage failed: %s", msg);
    if (f->fatal != NULL)
        f->fatal(f->fatal_arg, msg);
}

static void meta_from(struct fsm_outcome *o, const struct store_record *rec)
{
    o->exists = true;
    o->create_index = rec->create_index;
    o->mod_index = rec->mod_index;
    o->version = rec->version;
}

/* Write @value under @key at @index; fills the new metadata into @o. */
static int do_put(struct store_txn *t, uint64_t index, struct command_bytes key,
                  struct command_bytes value, struct fsm_outcome *o)
{
    struct store_record rec;
    int rv = store_kv_update(t, key.base, key.len, index, value.base,
                             value.len, &rec);

    if (rv != 0)
        return rv;
    meta_from(o, &rec);
    return 0;
}

/* Delete @key; o->exists tells whether it was there. */
static int do_delete(struct store_txn *t, struct command_bytes key,
                     struct fsm_outcome *o)
{
    struct store_record rec;
    int rv = store_kv_get(t, key.base, key.len, &rec);

    if (rv == STORE_ENOTFOUND) {
        o->status = FSM_ENOTFOUND;
        return 0;
    }
    if (rv != 0)
        return rv;
    meta_from(o, &rec);
    return store_kv_del(t, key.base, key.len);
}

/* Does @key's current mod_index equal @cas (0: absent)?  Fills the current
 * metadata into @o either way. */
static int cas_matches(struct store_txn *t, struct command_bytes key,
                       uint64_t cas, struct fsm_outcome *o, bool *match)
{
    struct store_record rec;
    int rv = store_kv_get(t, key.base, key.len, &rec);

    if (rv == STORE_ENOTFOUND) {
        *match = cas == 0;
        return 0;
    }
    if (rv != 0)
        return rv;
    meta_from(o, &rec);
    *match = rec.mod_index == cas;
    return 0;
}

static int compare_holds(struct store_txn *t, const struct command_compare *c,
                         bool *holds)
{
    struct store_record rec;
    int rv = store_kv_get(t, c->key.base, c->key.len, &rec);
    bool exists = rv == 0;

    if (rv != 0 && rv != STORE_ENOTFOUND)
        return rv;
    switch (c->kind) {
    case CMP_MOD_INDEX:
        *holds = exists ? rec.mod_index == c->number : c->number == 0;
        break;
    case CMP_VERSION:
        *holds = exists ? rec.version == c->number : c->number == 0;
        break;
    case CMP_VALUE:
        *holds = exists && rec.value_len == c->value.len &&
                 (c->value.len == 0 ||
                  memcmp(rec.value, c->value.base, c->value.len) == 0);
        break;
    }
    return 0;
}

static int ops_reserve(struct fsm *f, unsigned n)
{
    struct fsm_op_result *o;
    if (n <= f->ops_cap)
        return 0;
    o = realloc(f->result.ops, n * sizeof *o);
    if (o == NULL)
        return STORE_EIO;
    f->result.ops = o;
    f->ops_cap = n;
    return 0;
}

/* Copy a value read by a transaction; returns its offset in the arena (the
 * arena may move while the entry applies, so pointers are fixed up last). */
static int arena_copy(struct fsm *f, const void *p, size_t len, size_t *off)
{
    if (f->arena_len + len > f->arena_cap) {
        size_t cap = f->arena_cap ? f->arena_cap : 4096;
        while (cap < f->arena_len + len)
            cap *= 2;
        uint8_t *a = realloc(f->arena, cap);
        if (a == NULL)
            return STORE_EIO;
        f->arena = a;
        f->arena_cap = cap;
    }
    if (len > 0)
        memcpy(f->arena + f->arena_len, p, len);
    *off = f->arena_len;
    f->arena_len += len;
    return 0;
}

static int apply_txn_op(struct fsm *f, struct store_txn *t, uint64_t index,
                        const struct command_op *op, struct fsm_op_result *r)
{
    struct fsm_outcome o = {0};
    struct store_record rec;
    int rv;

    memset(r, 0, sizeof *r);
    r->kind = op->kind;
    r->key = op->key;
    switch (op->kind) {
    case OP_PUT:
        rv = do_put(t, index, op->key, op->value, &o);
        r->found = true;
        break;
    case OP_DELETE:
        rv = do_delete(t, op->key, &o);
        r->found = o.status == 0;
        break;
    case OP_GET:
        rv = store_kv_get(t, op->key.base, op->key.len, &rec);
        if (rv == STORE_ENOTFOUND)
            return 0;
        if (rv != 0)
            return rv;
        meta_from(&o, &rec);
        r->found = true;
        rv = arena_copy(f, rec.value, rec.value_len, &r->value_off);
        if (rv != 0)
            return rv;
        r->value_len = rec.value_len;
        break;
    default:
        return 0;
    }
    r->create_index = o.create_index;
    r->mod_index = o.mod_index;
    r->version = o.version;
    return rv;
}

static int apply_txn(struct fsm *f, struct store_txn *t, uint64_t index,
                     const struct command *c, struct fsm_outcome *o)
{
    struct command_txn_reader rd;
    struct command_compare cmp;
    struct command_op op;
    bool all = true;
    int rv;

    command_txn_reader_init(&rd, c);
    for (unsigned i = 0; i < c->n_compares; i++) {
        bool holds = false;
        command_txn_next_compare(&rd, &cmp);
        if ((rv = compare_holds(t, &cmp, &holds)) != 0)
            return rv;
        all = all && holds;
    }
    o->succeeded = all;
    o->first_op = f->result.n_ops;
    o->n_ops = all ? c->n_success : c->n_failure;
    if ((rv = ops_reserve(f, f->result.n_ops + o->n_ops)) != 0)
        return rv;
    for (unsigned i = 0; i < c->n_success; i++) {
        command_txn_next_op(&rd, &op);
        if (!all)
            continue;
        rv = apply_txn_op(f, t, index, &op, &f->result.ops[f->result.n_ops]);
        if (rv != 0)
            return rv;
        f->result.n_ops++;
    }
    for (unsigned i = 0; all == false && i < c->n_failure; i++) {
        command_txn_next_op(&rd, &op);
        rv = apply_txn_op(f, t, index, &op, &f->result.ops[f->result.n_ops]);
        if (rv != 0)
            return rv;
        f->result.n_ops++;
    }
    return 0;
}

static int apply_command(struct fsm *f, struct store_txn *t, uint64_t index,
                         const struct command *c, struct fsm_outcome *o,
                         uint64_t *cluster_id)
{
    struct store_member m;
    bool match = false;
    int rv;

    switch (c->type) {
    case CMD_PUT:
        return do_put(t, index, c->key, c->value, o);
    case CMD_DELETE:
        return do_delete(t, c->key, o);
    case CMD_PUT_CAS:
        if ((rv = cas_matches(t, c->key, c->cas, o, &match)) != 0)
            return rv;
        if (!match) {
            o->status = FSM_ECOMPARE;
            return 0;
        }
        return do_put(t, index, c->key, c->value, o);
    case CMD_DELETE_CAS:
        if ((rv = cas_matches(t, c->key, c->cas, o, &match)) != 0)
            return rv;
        if (!match) {
            o->status = FSM_ECOMPARE;
            return 0;
        }
        if (!o->exists) {
            o->status = FSM_ENOTFOUND; /* cas=0 on a missing key */
            return 0;
        }
        return store_kv_del(t, c->key.base, c->key.len);
    case CMD_TXN:
        return apply_txn(f, t, index, c, o);
    case CMD_INIT:
        /* Only the first INIT counts, also within one entry. */
        if (*cluster_id != 0) {
            if (*cluster_id != c->id)
                log_warn("entry %llu re-initializes cluster %016llx as "
                         "%016llx; ignored",
                         (unsigned long long)index,
                         (unsigned long long)*cluster_id,
                         (unsigned long long)c->id);
            return 0;
        }
        *cluster_id = c->id;
        return store_meta_put(t, META_CLUSTER, c->id);
    case CMD_MEMBER_PUT:
        if (c->id == 0)
            return 0;
        m.id = c->id;
        m.name = (const char *)c->name.base;
        m.name_len = c->name.len;
        m.raft_addr = (const char *)c->raft_addr.base;
        m.raft_addr_len = c->raft_addr.len;
        m.http_addr = (const char *)c->http_addr.base;
        m.http_addr_len = c->http_addr.len;
        return store_member_put(t, &m, false);
    case CMD_MEMBER_DEL:
        rv = store_member_del(t, c->id);
        return rv == STORE_ENOTFOUND ? 0 : rv;
    case CMD_NOOP:
        return 0;
    }
    return 0;
}

static int outcomes_reserve(struct fsm *f, unsigned n)
{
    struct fsm_outcome *o;
    if (n <= f->outcomes_cap)
        return 0;
    o = realloc(f->result.outcomes, n * sizeof *o);
    if (o == NULL)
        return -1;
    f->result.outcomes = o;
    f->outcomes_cap = n;
    return 0;
}

/* Apply the entry's commands and its index in one store transaction. */
static int apply_commands(struct fsm *f, uint64_t index, const void *buf,
                      size_t len, unsigned n, uint64_t *cluster_id,
                      bool *members_changed)
{
    struct store_txn t;
    struct command_iter it;
    struct command c;
    int rv;

    rv = store_txn_begin(f->store, true, &t);
    if (rv != 0)
        return rv;
    f->result.n_ops = 0;
    f->arena_len = 0;
    command_iter_init(&it, buf, len);
    for (unsigned i = 0; i < n; i++) {
        struct fsm_outcome *o = &f->result.outcomes[i];
        command_iter_next(&it, &c);
        memset(o, 0, sizeof *o);
        o->index = index;
        rv = apply_command(f, &t, index, &c, o, cluster_id);
        if (rv != 0)
            goto abort;
        if (c.type == CMD_MEMBER_PUT || c.type == CMD_MEMBER_DEL)
            *members_changed = true;
    }
    rv = store_meta_put(&t, META_APPLIED, index);
    if (rv != 0)
        goto abort;
    return store_txn_commit(&t);

abort:
    store_txn_abort(&t);
    return rv;
}

int fsm_apply_entry(struct fsm *f, uint64_t index, const void *buf,
                    size_t len, struct fsm_result **result)
{
    int n, rv;

    f->result.index = index;
    f->result.n = 0;
    f->result.n_ops = 0;
    *result = &f->result;
    if (index <= f->applied_index)
        return 0; /* already in the store: replayed at start */

    n = command_validate(buf, len);
    if (n < 0) {
        /* Committed, so every replica sees the same bytes and skips them
         * alike; refusing to go on would stop the whole cluster. */
        log_error("entry %llu is not a valid command (%s); skipped",
                  (unsigned long long)index, command_strerror(n));
        n = 0;
    }
    if (outcomes_reserve(f, (unsigned)n) != 0) {
        fsm_fail(f, "apply", STORE_EIO);
        return RAFT_NOMEM;
    }

    /* A write into the store goes to its overlay and cannot find the map
     * full (the store grows the map for its commits): any failure here is
     * out of memory or I/O, and fatal. */
    uint64_t cluster_id = f->cluster_id;
    bool members_changed = false;
    if (n == 0) {
        /* Still record the index so that the entry is not seen again. */
        struct store_txn t;
        rv = store_txn_begin(f->store, true, &t);
        if (rv == 0) {
            rv = store_meta_put(&t, META_APPLIED, index);
            rv = rv == 0 ? store_txn_commit(&t) : (store_txn_abort(&t), rv);
        }
    } else {
        rv = apply_commands(f, index, buf, len, (unsigned)n, &cluster_id,
                        &members_changed);
    }
    if (rv != 0) {
        fsm_fail(f, "apply", rv);
        return RAFT_IOERR;
    }
    f->cluster_id = cluster_id;
    if (members_changed)
        f->members_version++;
    f->applied_index = index;
    f->result.n = (unsigned)n;
    /* The arena is final now: turn value offsets into pointers. */
    for (unsigned i = 0; i < f->result.n_ops; i++) {
        struct fsm_op_result *r = &f->result.ops[i];
        if (r->kind == OP_GET && r->found)
            r->value = r->value_len ? (const void *)(f->arena + r->value_off)
                                    : (const void *)"";
    }
    return 0;
}

/* --- Snapshots ------------------------------------------------------------ */

/* Appends bytes to one raft_malloc'ed buffer: libraft sends a snapshot to
 * a follower as a single buffer. */
struct snap_writer
{
    uint8_t *buf;
    size_t len, cap;
    bool failed;
};

static void snap_put(struct snap_writer *w, const void *data, size_t len)
{
    if (w->failed || len == 0)
        return;
    if (w->cap - w->len < len) {
        size_t cap = w->cap ? w->cap : SNAP_INITIAL;
        while (cap - w->len < len)
            cap *= 2;
        uint8_t *b = raft_realloc(w->buf, cap);
        if (b == NULL) {
            w->failed = true;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, len);
    w->len += len;
}

static void snap_varint(struct snap_writer *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    while (v >= 0x80) {
        b[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b[n++] = (uint8_t)v;
    snap_put(w, b, n);
}

static void snap_bytes(struct snap_writer *w, const void *p, size_t len)
{
    snap_varint(w, len);
    snap_put(w, p, len);
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void fsm_snapshot_free(struct raft_buffer *bufs, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        raft_free(bufs[i].base);
    raft_free(bufs);
}

int fsm_snapshot_take(struct fsm *f, struct raft_buffer **bufs, unsigned *n)
{
    struct raft_buffer *b;
    uint8_t *marker;
    int rv;

    /* The marker stands for the store, so the store must be on disk at
     * (at least) the applied index before libraft drops the log below it. */
    rv = store_sync(f->store);
    if (rv != 0) {
        log_error("snapshot: cannot sync the store: %s", store_strerror(rv));
        return RAFT_IOERR;
    }
    b = raft_malloc(sizeof *b);
    marker = raft_malloc(SNAP_MARKER_LEN);
    if (b == NULL || marker == NULL) {
        raft_free(b);
        raft_free(marker);
        return RAFT_NOMEM;
    }
    memcpy(marker, SNAP_MARKER_MAGIC, 8);
    le64(marker + 8, f->applied_index);
    le64(marker + 16, f->cluster_id);
    b[0].base = marker;
    b[0].len = SNAP_MARKER_LEN;
    *bufs = b;
    *n = 1;
    f->snapshots_taken++;
    f->log_bytes = 0;
    return 0;
}

bool fsm_snapshot_is_marker(const void *data, size_t len)
{
    return len == SNAP_MARKER_LEN && memcmp(data, SNAP_MARKER_MAGIC, 8) == 0;
}

uint64_t fsm_snapshot_marker_index(const void *marker)
{
    return get_le64((const uint8_t *)marker + 8);
}

int fsm_serial_begin(struct fsm *f, struct fsm_serial *out)
{
    int rv = store_txn_begin_detached(f->store, &out->txn);
    if (rv != 0) {
        log_error("snapshot: cannot read the store: %s", store_strerror(rv));
        return RAFT_IOERR;
    }
    if (!store_detached_wanted(&out->txn)) {
        store_txn_abort(&out->txn);
        return RAFT_BUSY;
    }
    out->cluster_id = f->cluster_id;
    atomic_init(&out->stop, false);
    return 0;
}

void fsm_serial_cancel(struct fsm_serial *s)
{
    store_txn_abort(&s->txn);
}

void fsm_serial_stop(struct fsm_serial *s)
{
    atomic_store_explicit(&s->stop, true, memory_order_relaxed);
}

/* Runs on a worker thread: its caller logs the outcome. */
int fsm_serial_run(struct fsm_serial *s, void **data, size_t *len,
                   uint64_t *index)
{
    struct snap_writer w = {0};
    struct store_txn *t = &s->txn;
    struct store_cursor c;
    struct store_member m;
    struct store_record rec;
    const void *key;
    size_t klen;
    uint8_t header[SNAP_HEADER];
    uint64_t applied, n_members, n_keys, seen = 0;
    int rv;

    if (!store_detached_wanted(t)) {
        store_txn_abort(t);
        return RAFT_BUSY;
    }
    /* The index and the counts come from the same LMDB snapshot as the
     * data: the applied index is committed with the writes it names. */
    if ((rv = store_meta_get(t, META_APPLIED, &applied)) != 0 ||
        (rv = store_count(t, STORE_MEMBERS, &n_members)) != 0 ||
        (rv = store_count(t, STORE_KV, &n_keys)) != 0)
        goto err;

    memcpy(header, SNAP_MAGIC, 8);
    le64(header + 8, applied);
    le64(header + 16, s->cluster_id);
    le64(header + 24, n_members);
    le64(header + 32, n_keys);
    snap_put(&w, header, sizeof header);

    if ((rv = store_cursor_open(t, STORE_MEMBERS, NULL, 0, &c)) != 0)
        goto err;
    while ((rv = store_cursor_next_member(&c, &m)) == 1) {
        snap_varint(&w, m.id);
        snap_bytes(&w, m.name, m.name_len);
        snap_bytes(&w, m.raft_addr, m.raft_addr_len);
        snap_bytes(&w, m.http_addr, m.http_addr_len);
    }
    store_cursor_close(&c);
    if (rv < 0)
        goto err;

    if ((rv = store_cursor_open(t, STORE_KV, NULL, 0, &c)) != 0)
        goto err;
    while ((rv = store_cursor_next_kv(&c, &key, &klen, &rec)) == 1) {
        snap_bytes(&w, key, klen);
        snap_varint(&w, rec.create_index);
        snap_varint(&w, rec.mod_index);
        snap_varint(&w, rec.version);
        snap_bytes(&w, rec.value, rec.value_len);
        /* A node that stops should not wait for millions of keys, nor
         * a commit that needs the map to grow. */
        if (++seen % 1024 == 0 &&
            (atomic_load_explicit(&s->stop, memory_order_relaxed) ||
             !store_detached_wanted(t))) {
            rv = atomic_load_explicit(&s->stop, memory_order_relaxed)
                     ? RAFT_CANCELED
                     : RAFT_BUSY;
            store_cursor_close(&c);
            store_txn_abort(t);
            raft_free(w.buf);
            return rv;
        }
    }
    store_cursor_close(&c);
    if (rv < 0)
        goto err;
    store_txn_abort(t);
    if (w.failed) {
        raft_free(w.buf);
        return RAFT_NOMEM;
    }
    *data = w.buf;
    *len = w.len;
    *index = applied;
    return 0;

err:
    store_txn_abort(t);
    raft_free(w.buf);
    return RAFT_IOERR;
}

int fsm_snapshot_full(struct fsm *f, void **data, size_t *len)
{
    struct fsm_serial s;
    uint64_t index;
    int rv;

    if (store_flush(f->store) != 0)
        return RAFT_IOERR;
    if ((rv = fsm_serial_begin(f, &s)) != 0)
        return rv;
    return fsm_serial_run(&s, data, len, &index);
}

struct snap_reader
{
    const uint8_t *pos, *end;
};

static int rd_varint(struct snap_reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->pos == r->end)
            return -1;
        uint8_t b = *r->pos++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static int rd_bytes(struct snap_reader *r, const void **p, size_t *len)
{
    uint64_t n;
    if (rd_varint(r, &n) != 0 || n > (uint64_t)(r->end - r->pos))
        return -1;
    *p = r->pos;
    *len = (size_t)n;
    r->pos += n;
    return 0;
}

static int bytes_order(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* Load the snapshot body into an open write transaction. */
static int restore_into(struct store_txn *t, struct snap_reader *r,
                        uint64_t n_members, uint64_t n_keys)
{
    int rv;
    for (uint64_t i = 0; i < n_members; i++) {
        struct store_member m;
        const void *name, *raft, *http;
        if (rd_varint(r, &m.id) != 0 ||
            rd_bytes(r, &name, &m.name_len) != 0 ||
            rd_bytes(r, &raft, &m.raft_addr_len) != 0 ||
            rd_bytes(r, &http, &m.http_addr_len) != 0)
            return STORE_ECORRUPT;
        m.name = name;
        m.raft_addr = raft;
        m.http_addr = http;
        if ((rv = store_member_put(t, &m, false)) != 0)
            return rv;
    }
    const void *prev = NULL;
    size_t prev_len = 0;
    for (uint64_t i = 0; i < n_keys; i++) {
        struct store_record rec;
        const void *key;
        size_t klen;
        if (rd_bytes(r, &key, &klen) != 0 ||
            rd_varint(r, &rec.create_index) != 0 ||
            rd_varint(r, &rec.mod_index) != 0 ||
            rd_varint(r, &rec.version) != 0 ||
            rd_bytes(r, &rec.value, &rec.value_len) != 0)
            return STORE_ECORRUPT;
        /* A snapshot lists keys in strictly increasing byte order; anything
         * else (a repeat, say) was not written by fsm_snapshot_take. */
        if (prev != NULL && bytes_order(prev, prev_len, key, klen) >= 0)
            return STORE_ECORRUPT;
        prev = key;
        prev_len = klen;
        if ((rv = store_kv_put(t, key, klen, &rec)) != 0)
            return rv == STORE_EINVAL ? STORE_ECORRUPT : rv;
    }
    if (r->pos != r->end)
        return STORE_ECORRUPT;
    return 0;
}

int fsm_restore(struct fsm *f, const void *data, size_t len)
{
    struct snap_reader r = {data, (const uint8_t *)data + len};
    uint64_t applied, cluster_id, n_members, n_keys;
    int rv;

    if (fsm_snapshot_is_marker(data, len)) {
        applied = get_le64(r.pos + 8);
        if (applied <= f->applied_index)
            return 0; /* our own snapshot: the store already has it */
        log_error("the snapshot at index %llu stands for this node's store, "
                  "but the store holds only %llu: the store lost data "
                  "(remove this node's data directory and add it again)",
                  (unsigned long long)applied,
                  (unsigned long long)f->applied_index);
        return RAFT_CORRUPT;
    }
    if (len < SNAP_HEADER || memcmp(data, SNAP_MAGIC, 8) != 0) {
        log_error("snapshot has no valid header");
        return RAFT_CORRUPT;
    }
    applied = get_le64(r.pos + 8);
    cluster_id = get_le64(r.pos + 16);
    n_members = get_le64(r.pos + 24);
    n_keys = get_le64(r.pos + 32);
    r.pos += SNAP_HEADER;

    if (applied <= f->applied_index) {
        log_info("snapshot at %llu is not newer than the store (%llu): kept "
                 "the store",
                 (unsigned long long)applied,
                 (unsigned long long)f->applied_index);
        return 0;
    }

    struct store_txn t;
    rv = store_txn_begin(f->store, true, &t);
    if (rv == 0) {
        rv = store_clear(&t, STORE_KV);
        if (rv == 0)
            rv = store_clear(&t, STORE_MEMBERS);
        if (rv == 0)
            rv = restore_into(&t, &r, n_members, n_keys);
        if (rv == 0)
            rv = store_meta_put(&t, META_APPLIED, applied);
        if (rv == 0)
            rv = store_meta_put(&t, META_CLUSTER, cluster_id);
        if (rv == 0)
            rv = store_txn_commit(&t);
        else
            store_txn_abort(&t);
    }
    if (rv == STORE_ECORRUPT) {
        log_error("snapshot at %llu is corrupt; store unchanged",
                  (unsigned long long)applied);
        return RAFT_CORRUPT;
    }
    if (rv != 0) {
        fsm_fail(f, "restore", rv);
        return RAFT_IOERR;
    }
    f->applied_index = applied;
    f->cluster_id = cluster_id;
    f->snapshots_restored++;
    f->members_version++;
    f->log_bytes = 0;
    log_info("restored snapshot at index %llu: %llu keys, %llu members",
             (unsigned long long)applied, (unsigned long long)n_keys,
             (unsigned long long)n_members);
    return 0;
}

/* --- libraft glue ------------------------------------------------------- */

static int fsm_raft_apply(struct raft_fsm *rf, const struct raft_buffer *buf,
                          void **result)
{
    struct fsm *f = rf->data;
    /* libraft sets last_applied after each entry, so the entry being applied
     * is the next one. */
    uint64_t index = f->raft->last_applied + 1;
    f->log_bytes += buf->len;
    /* Weight 1/16: follows a change of workload within a few dozen
     * entries. */
    if (f->entry_bytes_avg == 0)
        f->entry_bytes_avg = buf->len;
    else if (buf->len > f->entry_bytes_avg)
        f->entry_bytes_avg += (buf->len - f->entry_bytes_avg) / 16;
    else
        f->entry_bytes_avg -= (f->entry_bytes_avg - buf->len) / 16;
    return fsm_apply_entry(f, index, buf->base, buf->len,
                           (struct fsm_result **)result);
}

static int fsm_raft_snapshot(struct raft_fsm *rf, struct raft_buffer *bufs[],
                             unsigned *n)
{
    return fsm_snapshot_take(rf->data, bufs, n);
}

static int fsm_raft_snapshot_finalize(struct raft_fsm *rf,
                                      struct raft_buffer *bufs[], unsigned *n)
{
    (void)rf;
    if (*bufs != NULL)
        fsm_snapshot_free(*bufs, *n);
    *bufs = NULL;
    *n = 0;
    return 0;
}

static int fsm_raft_restore(struct raft_fsm *rf, struct raft_buffer *buf)
{
    int rv = fsm_restore(rf->data, buf->base, buf->len);
    if (rv == 0)
        raft_free(buf->base); /* on failure libraft frees it */
    return rv;
}

void fsm_raft_bind(struct fsm *f, struct raft_fsm *out)
{
    memset(out, 0, sizeof *out);
    out->version = 2;
    out->data = f;
    out->apply = fsm_raft_apply;
    out->snapshot = fsm_raft_snapshot;
    out->restore = fsm_raft_restore;
    out->snapshot_finalize = fsm_raft_snapshot_finalize;
}
