/* fuzz_command.c - libFuzzer target for what a Raft log entry or a snapshot
 * can do to a node: the entry decoder (command.c), the state machine that
 * applies entries to LMDB (fsm.c, store.c) and the snapshot parser
 * (fsm_restore).
 *
 * Every input is used three ways:
 *
 *  1. Decoded.  command_validate and command_iter_* must agree, and every
 *     decoded field must lie inside the input; a CMD_TXN is read back with
 *     the transaction reader.  A valid entry is re-encoded with
 *     command_encode and decoded again: the commands must survive the round
 *     trip, and the encoding must be canonical; group commit's builder
 *     (command_batch_*) must produce the very same bytes.
 *
 *  2. Applied with fsm_apply_entry to store A at the next index, next to an
 *     in-memory model written from the contracts in fsm.h, command.h and
 *     docs/api.md.  Outcomes, transaction results and the keys the entry
 *     touched must match the model; the fsm's mirrors (applied index,
 *     cluster id) must match what it stored.  Replaying the same index must
 *     be a no-op.
 *
 *  3. Restored with fsm_restore into store B, next to an independent parser
 *     of the snapshot format in fsm.h: a good snapshot must restore to
 *     exactly its content, a bad one must give RAFT_CORRUPT and leave the
 *     store as it was.
 *
 * Store A is emptied every CLEAR_EVERY inputs (after a full comparison with
 * the model) so that LMDB stays small; every ROUNDTRIP_EVERY inputs A's own
 * snapshot is restored into B and must come back byte for byte; every
 * RESTART_EVERY inputs A's fsm is closed and opened again, as a restart.
 *
 * A failure is reported by aborting with "==FUZZ FINDING==" and a name; see
 * fuzz_common.h for stepping over names already reported. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "fsm.h"
#include "store.h"

#include "fuzz_common.h"

#define CLEAR_EVERY 512
#define ROUNDTRIP_EVERY 64
#define RESTART_EVERY 16
#define STORE_MAP ((size_t)16 << 20)

static struct
{
    char dir[256];
    struct store *sa, *sb;
    struct fsm fa, fb;
    uint64_t index;
    unsigned long inputs;
    bool fatal;
    char fatal_msg[256];
} G;

/* The node's fatal handler exits the process; here the harness decides
 * whether the failure was legitimate, so it only records it. */
static void on_fatal(void *arg, const char *what)
{
    (void)arg;
    G.fatal = true;
    snprintf(G.fatal_msg, sizeof G.fatal_msg, "%s", what);
}

/* The store's batch commit failed (store.h): on tmpfs with a map that grows
 * on demand, that is never legitimate. */
static void on_store_fatal(void *arg, const char *what)
{
    (void)arg;
    fuzz_fail("store flush failed: %s", what);
}

/* --- small helpers ------------------------------------------------------ */

static bool bytes_eq(struct command_bytes a, struct command_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

static bool mem_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static void check_inside(struct command_bytes b, const uint8_t *lo,
                         const uint8_t *hi, const char *what)
{
    if (b.len == 0)
        return;
    if (b.base < lo || b.base > hi || b.len > (size_t)(hi - b.base))
        fuzz_fail("decoded %s (%zu bytes) points outside the entry", what,
                  b.len);
}

/* A decoded command with its transaction read back into arrays. */
struct dcmd
{
    struct command c;
    struct command_txn txn;
    struct command_compare *cmps;
    struct command_op *ops; /* success ops, then failure ops */
};

static void dcmds_free(struct dcmd *d, unsigned n)
{
    for (unsigned i = 0; d != NULL && i < n; i++) {
        free(d[i].cmps);
        free(d[i].ops);
    }
    free(d);
}

/* Decode @buf fully.  Returns the number of commands (and *out), or the
 * negative error; checks that the decoder and the validator agree and that
 * every field lies inside the buffer. */
static int decode_all(const uint8_t *buf, size_t len, struct dcmd **out)
{
    struct command_iter it;
    struct dcmd *d = NULL;
    int n = command_iter_init(&it, buf, len), rv = 0, validated;
    unsigned got = 0;

    *out = NULL;
    validated = command_validate(buf, len);
    if (n < 0) {
        if (validated != n)
            fuzz_fail("command_validate says %d, command_iter_init %d",
                      validated, n);
        return n;
    }
    FUZZ_CHECK(n >= 1 && n <= COMMAND_MAX_COUNT);
    d = calloc((size_t)n, sizeof *d);
    FUZZ_CHECK(d != NULL);
    for (;;) {
        struct command c;
        if (got == (unsigned)n) {
            rv = command_iter_next(&it, &c);
            if (rv != 0)
                fuzz_fail("iterator yields %d after all %d commands", rv, n);
            break;
        }
        rv = command_iter_next(&it, &c);
        if (rv != 1)
            break;
        FUZZ_CHECK(c.type >= CMD_PUT && c.type <= CMD_NOOP);
        check_inside(c.key, buf, buf + len, "key");
        check_inside(c.value, buf, buf + len, "value");
        check_inside(c.name, buf, buf + len, "name");
        check_inside(c.raft_addr, buf, buf + len, "raft_addr");
        check_inside(c.http_addr, buf, buf + len, "http_addr");
        d[got].c = c;
        if (c.type == CMD_TXN) {
            struct command_txn_reader r;
            unsigned nops = c.n_success + c.n_failure;
            check_inside(c.txn_raw, buf, buf + len, "txn");
            /* The decoder bounds counts by the bytes left: never huge. */
            FUZZ_CHECK(c.n_compares <= len && nops <= len);
            d[got].cmps = calloc(c.n_compares + 1, sizeof *d[got].cmps);
            d[got].ops = calloc(nops + 1, sizeof *d[got].ops);
            FUZZ_CHECK(d[got].cmps != NULL && d[got].ops != NULL);
            command_txn_reader_init(&r, &c);
            for (unsigned i = 0; i < c.n_compares; i++) {
                struct command_compare *cmp = &d[got].cmps[i];
                command_txn_next_compare(&r, cmp);
                FUZZ_CHECK(cmp->kind >= CMP_MOD_INDEX &&
                           cmp->kind <= CMP_VALUE);
                check_inside(cmp->key, c.txn_raw.base,
                             c.txn_raw.base + c.txn_raw.len, "compare key");
                check_inside(cmp->value, c.txn_raw.base,
                             c.txn_raw.base + c.txn_raw.len, "compare value");
                FUZZ_CHECK(r.pos <= r.end);
            }
            for (unsigned i = 0; i < nops; i++) {
                struct command_op *op = &d[got].ops[i];
                command_txn_next_op(&r, op);
                FUZZ_CHECK(op->kind >= OP_PUT && op->kind <= OP_GET);
                check_inside(op->key, c.txn_raw.base,
                             c.txn_raw.base + c.txn_raw.len, "op key");
                check_inside(op->value, c.txn_raw.base,
                             c.txn_raw.base + c.txn_raw.len, "op value");
                FUZZ_CHECK(op->kind == OP_PUT || op->value.len == 0);
                FUZZ_CHECK(r.pos <= r.end);
            }
            if (c.n_failure > 0 && r.pos != r.end)
                fuzz_fail("transaction reader stopped %td bytes before the "
                          "end of the transaction",
                          r.end - r.pos);
            d[got].txn = (struct command_txn){
                d[got].cmps, c.n_compares, d[got].ops, c.n_success,
                d[got].ops + c.n_success, c.n_failure};
            d[got].c.txn = &d[got].txn;
        }
        got++;
    }
    if (rv < 0) {
        if (validated != rv)
            fuzz_fail("command_validate says %d, the iterator %d", validated,
                      rv);
        dcmds_free(d, got);
        return rv;
    }
    if (validated != n)
        fuzz_fail("command_validate says %d for an entry of %d good commands",
                  validated, n);
    *out = d;
    return n;
}

static bool cmd_eq(const struct dcmd *a, const struct dcmd *b)
{
    const struct command *x = &a->c, *y = &b->c;
    if (x->type != y->type)
        return false;
    switch (x->type) {
    case CMD_PUT:
        return bytes_eq(x->key, y->key) && bytes_eq(x->value, y->value);
    case CMD_DELETE:
        return bytes_eq(x->key, y->key);
    case CMD_INIT:
    case CMD_MEMBER_DEL:
        return x->id == y->id;
    case CMD_MEMBER_PUT:
        return x->id == y->id && bytes_eq(x->name, y->name) &&
               bytes_eq(x->raft_addr, y->raft_addr) &&
               bytes_eq(x->http_addr, y->http_addr);
    case CMD_PUT_CAS:
        return bytes_eq(x->key, y->key) && bytes_eq(x->value, y->value) &&
               x->cas == y->cas;
    case CMD_DELETE_CAS:
        return bytes_eq(x->key, y->key) && x->cas == y->cas;
    case CMD_NOOP:
        return true;
    case CMD_TXN:
        if (x->n_compares != y->n_compares || x->n_success != y->n_success ||
            x->n_failure != y->n_failure)
            return false;
        for (unsigned i = 0; i < x->n_compares; i++) {
            const struct command_compare *p = &a->cmps[i], *q = &b->cmps[i];
            if (p->kind != q->kind || !bytes_eq(p->key, q->key) ||
                p->number != q->number || !bytes_eq(p->value, q->value))
                return false;
        }
        for (unsigned i = 0; i < x->n_success + x->n_failure; i++) {
            const struct command_op *p = &a->ops[i], *q = &b->ops[i];
            if (p->kind != q->kind || !bytes_eq(p->key, q->key) ||
                !bytes_eq(p->value, q->value))
                return false;
        }
        return true;
    }
    return false;
}

/* Group commit builds one entry from the commands of several requests
 * (command_batch_*): in whatever pieces they come, the entry must be the
 * very bytes command_encode gives for all of them at once. */
static void check_batch(const struct command *cmds, int n, const uint8_t *enc,
                        size_t len)
{
    struct command_batch b;
    void *base = NULL;
    size_t blen = 0;
    int rv;

    command_batch_init(&b);
    FUZZ_CHECK(command_batch_finish(&b, &base, &blen) == COMMAND_EMALFORMED);
    for (int i = 0; i < n;) {
        /* Piece sizes 1..3, varied by the input itself. */
        int k = 1 + (int)((cmds[i].key.len + cmds[i].value.len + (size_t)i) % 3);
        if (k > n - i)
            k = n - i;
        rv = command_batch_add(&b, cmds + i, (unsigned)k);
        if (rv != 0)
            fuzz_fail("command_batch_add refused commands %d..%d: %d", i,
                      i + k - 1, rv);
        i += k;
    }
    rv = command_batch_finish(&b, &base, &blen);
    if (rv != 0 || blen != len || memcmp(base, enc, len) != 0)
        fuzz_fail("command_batch_* built another entry (%d, %zu bytes) than "
                  "command_encode (%zu bytes)",
                  rv, blen, len);
    raft_free(base);
    command_batch_free(&b); /* empty again after finish: a no-op */
}

/* Re-encode what was decoded: the encoder must take it, size it exactly,
 * and produce an entry that decodes to the same commands and re-encodes to
 * the same bytes. */
static void check_roundtrip(const struct dcmd *d, int n)
{
    struct command *cmds = calloc((size_t)n, sizeof *cmds);
    struct dcmd *d2 = NULL;
    uint8_t *enc, *enc2;
    size_t size, size2;
    long len, len2;
    int n2;

    FUZZ_CHECK(cmds != NULL);
    for (int i = 0; i < n; i++)
        cmds[i] = d[i].c;
    size = command_encoded_size(cmds, (unsigned)n);
    FUZZ_CHECK(size % 8 == 0 && size >= COMMAND_HEADER_SIZE);
    enc = malloc(size);
    FUZZ_CHECK(enc != NULL);
    len = command_encode(cmds, (unsigned)n, enc, size);
    if (len < 0 || (size_t)len != size)
        fuzz_fail("command_encode of %d decoded commands gave %ld, "
                  "command_encoded_size %zu",
                  n, len, size);
    check_batch(cmds, n, enc, (size_t)len);
    n2 = decode_all(enc, (size_t)len, &d2);
    if (n2 != n)
        fuzz_fail("re-encoded entry decodes to %d commands, not %d", n2, n);
    for (int i = 0; i < n; i++)
        if (!cmd_eq(&d[i], &d2[i]))
            fuzz_fail("command %d (type %d) changed in an encode/decode "
                      "round trip",
                      i, (int)d[i].c.type);
    for (int i = 0; i < n; i++)
        cmds[i] = d2[i].c;
    size2 = command_encoded_size(cmds, (unsigned)n);
    enc2 = malloc(size2);
    FUZZ_CHECK(enc2 != NULL);
    len2 = command_encode(cmds, (unsigned)n, enc2, size2);
    if (len2 != len || memcmp(enc, enc2, (size_t)len) != 0)
        fuzz_fail("encoding is not canonical: re-encoding a decoded entry "
                  "gives other bytes");
    /* A buffer one padding unit short must be refused, not overrun. */
    if (size >= 8) {
        long short_len = command_encode(cmds, (unsigned)n, enc2, size - 8);
        FUZZ_CHECK(short_len == COMMAND_EMALFORMED);
    }
    free(enc2);
    free(enc);
    dcmds_free(d2, (unsigned)n);
    free(cmds);
}

/* --- the model of the key-value table ------------------------------------ */

struct mentry
{
    struct mentry *next;
    uint8_t *key;
    size_t klen;
    uint8_t *val;
    size_t vlen;
    uint64_t create, mod, version;
    bool present;
};

struct mundo
{
    struct mentry *e;
    uint8_t *val;
    size_t vlen;
    uint64_t create, mod, version;
    bool present;
};

#define MBUCKETS 4096
static struct mentry *mtab[MBUCKETS];
static struct mundo *undo;
static size_t n_undo, cap_undo;
static struct mentry **touched;
static size_t n_touched, cap_touched;

static size_t mhash(const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    return (size_t)(h % MBUCKETS);
}

static struct mentry *model_get(struct command_bytes key, bool create)
{
    size_t h = mhash(key.base, key.len);
    for (struct mentry *e = mtab[h]; e != NULL; e = e->next)
        if (mem_eq(e->key, e->klen, key.base, key.len))
            return e;
    if (!create)
        return NULL;
    struct mentry *e = calloc(1, sizeof *e);
    FUZZ_CHECK(e != NULL);
    e->key = malloc(key.len + 1);
    FUZZ_CHECK(e->key != NULL);
    if (key.len > 0)
        memcpy(e->key, key.base, key.len);
    e->klen = key.len;
    e->next = mtab[h];
    mtab[h] = e;
    return e;
}

static void model_touch(struct mentry *e)
{
    if (n_touched == cap_touched) {
        cap_touched = cap_touched ? cap_touched * 2 : 64;
        touched = realloc(touched, cap_touched * sizeof *touched);
        FUZZ_CHECK(touched != NULL);
    }
    touched[n_touched++] = e;
}

static void model_save(struct mentry *e)
{
    if (n_undo == cap_undo) {
        cap_undo = cap_undo ? cap_undo * 2 : 64;
        undo = realloc(undo, cap_undo * sizeof *undo);
        FUZZ_CHECK(undo != NULL);
    }
    undo[n_undo++] = (struct mundo){e, e->val, e->vlen, e->create, e->mod,
                                    e->version, e->present};
}

static void model_put(struct mentry *e, struct command_bytes v, uint64_t index)
{
    model_save(e);
    e->val = malloc(v.len + 1);
    FUZZ_CHECK(e->val != NULL);
    if (v.len > 0)
        memcpy(e->val, v.base, v.len);
    e->vlen = v.len;
    if (!e->present) {
        e->create = index;
        e->version = 0;
    }
    e->version++;
    e->mod = index;
    e->present = true;
}

static void model_del(struct mentry *e)
{
    model_save(e);
    e->val = NULL;
    e->vlen = 0;
    e->present = false;
    e->create = e->mod = e->version = 0;
}

static void model_commit(void)
{
    for (size_t i = 0; i < n_undo; i++)
        free(undo[i].val);
    n_undo = 0;
}

static void model_rollback(void)
{
    while (n_undo > 0) {
        struct mundo *u = &undo[--n_undo];
        free(u->e->val);
        u->e->val = u->val;
        u->e->vlen = u->vlen;
        u->e->create = u->create;
        u->e->mod = u->mod;
        u->e->version = u->version;
        u->e->present = u->present;
    }
}

static void model_clear(void)
{
    for (size_t h = 0; h < MBUCKETS; h++) {
        struct mentry *e = mtab[h];
        while (e != NULL) {
            struct mentry *next = e->next;
            free(e->key);
            free(e->val);
            free(e);
            e = next;
        }
        mtab[h] = NULL;
    }
}

/* What the fsm must report for one command / one transaction op. */
struct expect
{
    int status;
    bool exists;
    uint64_t create, mod, version;
    bool succeeded;
    unsigned first_op, n_ops;
};

struct expect_op
{
    enum command_op_kind kind;
    struct command_bytes key;
    bool found;
    uint64_t create, mod, version;
    uint8_t *value; /* GET: a copy, as the value was at that point */
    size_t value_len;
};

static struct expect_op *xops;
static size_t n_xops, cap_xops;

static struct expect_op *xop_new(void)
{
    if (n_xops == cap_xops) {
        cap_xops = cap_xops ? cap_xops * 2 : 64;
        xops = realloc(xops, cap_xops * sizeof *xops);
        FUZZ_CHECK(xops != NULL);
    }
    memset(&xops[n_xops], 0, sizeof xops[n_xops]);
    return &xops[n_xops++];
}

static void xops_reset(void)
{
    for (size_t i = 0; i < n_xops; i++)
        free(xops[i].value);
    n_xops = 0;
}

/* The store takes keys of 1..STORE_MAX_KEY bytes (store.h); anything else
 * is STORE_EINVAL, which fails the whole entry. */
static bool key_storable(struct command_bytes k)
{
    return k.len >= 1 && k.len <= STORE_MAX_KEY;
}

static void meta_of(const struct mentry *e, uint64_t *c, uint64_t *m,
                    uint64_t *v)
{
    *c = e && e->present ? e->create : 0;
    *m = e && e->present ? e->mod : 0;
    *v = e && e->present ? e->version : 0;
}

/* Apply @cmds to the model at @index, filling the expectations.  Returns 0,
 * or -1 when the store must refuse the entry (a key it cannot hold): then
 * the model is rolled back. */
static int model_apply(const struct dcmd *d, int n, uint64_t index,
                       struct expect *x)
{
    n_touched = 0;
    xops_reset();
    for (int i = 0; i < n; i++) {
        const struct command *c = &d[i].c;
        struct expect *o = &x[i];
        struct mentry *e;
        memset(o, 0, sizeof *o);
        switch (c->type) {
        case CMD_PUT:
        case CMD_PUT_CAS:
        case CMD_DELETE:
        case CMD_DELETE_CAS:
            if (!key_storable(c->key))
                goto refuse;
            e = model_get(c->key, true);
            model_touch(e);
            if (c->type == CMD_PUT_CAS || c->type == CMD_DELETE_CAS) {
                /* cas is the key's mod_index, 0 meaning "absent". */
                bool match = e->present ? e->mod == c->cas : c->cas == 0;
                if (!match) {
                    o->status = FSM_ECOMPARE;
                    o->exists = e->present;
                    meta_of(e, &o->create, &o->mod, &o->version);
                    break;
                }
            }
            if (c->type == CMD_PUT || c->type == CMD_PUT_CAS) {
                model_put(e, c->value, index);
                o->exists = true;
                meta_of(e, &o->create, &o->mod, &o->version);
            } else if (!e->present) {
                o->status = FSM_ENOTFOUND;
            } else {
                o->exists = true;
                meta_of(e, &o->create, &o->mod, &o->version);
                model_del(e);
            }
            break;
        case CMD_TXN: {
            bool all = true;
            for (unsigned k = 0; k < c->n_compares; k++) {
                const struct command_compare *cmp = &d[i].cmps[k];
                if (!key_storable(cmp->key))
                    goto refuse;
                e = model_get(cmp->key, false);
                bool present = e != NULL && e->present;
                bool holds = false;
                switch (cmp->kind) {
                case CMP_MOD_INDEX:
                    holds = present ? e->mod == cmp->number : cmp->number == 0;
                    break;
                case CMP_VERSION:
                    holds = present ? e->version == cmp->number
                                    : cmp->number == 0;
                    break;
                case CMP_VALUE:
                    holds = present && mem_eq(e->val, e->vlen, cmp->value.base,
                                              cmp->value.len);
                    break;
                }
                all = all && holds;
            }
            o->succeeded = all;
            o->first_op = (unsigned)n_xops;
            const struct command_op *ops =
                all ? d[i].ops : d[i].ops + c->n_success;
            o->n_ops = all ? c->n_success : c->n_failure;
            for (unsigned k = 0; k < o->n_ops; k++) {
                const struct command_op *op = &ops[k];
                if (!key_storable(op->key))
                    goto refuse;
                e = model_get(op->key, true);
                model_touch(e);
                struct expect_op *r = xop_new();
                r->kind = op->kind;
                r->key = op->key;
                switch (op->kind) {
                case OP_PUT:
                    model_put(e, op->value, index);
                    r->found = true;
                    meta_of(e, &r->create, &r->mod, &r->version);
                    break;
                case OP_DELETE:
                    r->found = e->present;
                    if (e->present)
                        model_del(e);
                    break;
                case OP_GET:
                    r->found = e->present;
                    meta_of(e, &r->create, &r->mod, &r->version);
                    if (e->present) {
                        r->value = malloc(e->vlen + 1);
                        FUZZ_CHECK(r->value != NULL);
                        if (e->vlen > 0)
                            memcpy(r->value, e->val, e->vlen);
                        r->value_len = e->vlen;
                    }
                    break;
                }
            }
            break;
        }
        case CMD_INIT:
        case CMD_MEMBER_PUT:
        case CMD_MEMBER_DEL:
            break; /* checked against the store after the apply */
        case CMD_NOOP:
            break; /* changes nothing */
        }
    }
    return 0;
refuse:
    model_rollback();
    return -1;
}

/* --- store reads -------------------------------------------------------- */

static void check_key_in_store(struct store *s, const struct mentry *e,
                               const char *when)
{
    struct store_txn t;
    struct store_record rec;
    int rv;

    FUZZ_CHECK(store_txn_begin(s, false, &t) == 0);
    rv = store_kv_get(&t, e->key, e->klen, &rec);
    if (!e->present) {
        if (rv != STORE_ENOTFOUND)
            fuzz_fail("%s: key of %zu bytes should be absent; store says %d",
                      when, e->klen, rv);
    } else if (rv != 0) {
        fuzz_fail("%s: key of %zu bytes should exist; store says %d", when,
                  e->klen, rv);
    } else if (rec.create_index != e->create || rec.mod_index != e->mod ||
               rec.version != e->version ||
               !mem_eq(rec.value, rec.value_len, e->val, e->vlen)) {
        fuzz_fail("%s: key of %zu bytes holds (create %llu, mod %llu, "
                  "version %llu, %zu value bytes), expected (%llu, %llu, "
                  "%llu, %zu bytes)",
                  when, e->klen, (unsigned long long)rec.create_index,
                  (unsigned long long)rec.mod_index,
                  (unsigned long long)rec.version, rec.value_len,
                  (unsigned long long)e->create, (unsigned long long)e->mod,
                  (unsigned long long)e->version, e->vlen);
    }
    store_txn_abort(&t);
}

static uint64_t meta_u64(struct store *s, const char *name)
{
    struct store_txn t;
    uint64_t v = 0;
    int rv;

    FUZZ_CHECK(store_txn_begin(s, false, &t) == 0);
    rv = store_meta_get(&t, name, &v);
    store_txn_abort(&t);
    FUZZ_CHECK(rv == 0 || rv == STORE_ENOTFOUND);
    return v;
}

/* The fsm keeps the applied index and cluster id in memory too; they must
 * say what the store says, or a restart changes the node's mind. */
static void check_mirrors(struct fsm *f, struct store *s, const char *when)
{
    uint64_t applied = meta_u64(s, "applied_index");
    uint64_t cluster = meta_u64(s, "cluster_id");

    if (applied != f->applied_index)
        fuzz_fail("%s: fsm applied_index %llu, store %llu", when,
                  (unsigned long long)f->applied_index,
                  (unsigned long long)applied);
    if (cluster != f->cluster_id)
        fuzz_finding("cluster-id-mirror",
                     "%s: fsm cluster_id %016llx but the store holds "
                     "%016llx: after a restart this node names another "
                     "cluster",
                     when, (unsigned long long)f->cluster_id,
                     (unsigned long long)cluster);
}

/* Members named by the entry must end up as its last command on them says. */
static void check_members(const struct dcmd *d, int n)
{
    struct store_txn t;

    FUZZ_CHECK(store_txn_begin(G.sa, false, &t) == 0);
    for (int i = 0; i < n; i++) {
        const struct command *c = &d[i].c, *last = NULL;
        struct store_member m;
        int rv;
        if (c->type != CMD_MEMBER_PUT && c->type != CMD_MEMBER_DEL)
            continue;
        for (int j = 0; j < n; j++) {
            const struct command *cj = &d[j].c;
            if ((cj->type == CMD_MEMBER_PUT && cj->id != 0) ||
                cj->type == CMD_MEMBER_DEL)
                if (cj->id == c->id)
                    last = cj;
        }
        rv = store_member_get(&t, c->id, &m);
        if (last == NULL || last->type == CMD_MEMBER_DEL) {
            /* id 0 is never recorded; an earlier entry may have it. */
            if (last != NULL && rv != STORE_ENOTFOUND)
                fuzz_fail("member %016llx should be gone; store says %d",
                          (unsigned long long)c->id, rv);
            continue;
        }
        if (rv != 0 || !mem_eq(m.name, m.name_len, last->name.base,
                               last->name.len) ||
            !mem_eq(m.raft_addr, m.raft_addr_len, last->raft_addr.base,
                    last->raft_addr.len) ||
            !mem_eq(m.http_addr, m.http_addr_len, last->http_addr.base,
                    last->http_addr.len))
            fuzz_fail("member %016llx is not stored as the entry says (%d)",
                      (unsigned long long)c->id, rv);
    }
    store_txn_abort(&t);
}

/* Every key in store A against the model, both ways. */
static void check_store_against_model(void)
{
    struct store_txn t;
    struct store_cursor cur;
    struct store_record rec;
    const void *key;
    size_t klen, in_store = 0, in_model = 0;
    int rv;

    FUZZ_CHECK(store_txn_begin(G.sa, false, &t) == 0);
    FUZZ_CHECK(store_cursor_open(&t, STORE_KV, NULL, 0, &cur) == 0);
    while ((rv = store_cursor_next_kv(&cur, &key, &klen, &rec)) == 1) {
        struct command_bytes k = {key, klen};
        struct mentry *e = model_get(k, false);
        in_store++;
        if (e == NULL || !e->present)
            fuzz_fail("store holds a key of %zu bytes the model does not",
                      klen);
    }
    FUZZ_CHECK(rv == 0);
    store_cursor_close(&cur);
    store_txn_abort(&t);
    for (size_t h = 0; h < MBUCKETS; h++)
        for (struct mentry *e = mtab[h]; e != NULL; e = e->next)
            if (e->present) {
                in_model++;
                check_key_in_store(G.sa, e, "full check");
            }
    if (in_model != in_store)
        fuzz_fail("model has %zu keys, store %zu", in_model, in_store);
}

static void clear_store_a(void)
{
    struct store_txn t;

    FUZZ_CHECK(store_txn_begin(G.sa, true, &t) == 0);
    FUZZ_CHECK(store_clear(&t, STORE_KV) == 0);
    FUZZ_CHECK(store_clear(&t, STORE_MEMBERS) == 0);
    /* A fresh cluster id lets CMD_INIT take effect again. */
    FUZZ_CHECK(store_meta_put(&t, "cluster_id", 0) == 0);
    FUZZ_CHECK(store_txn_commit(&t) == 0);
    G.fa.cluster_id = 0;
    model_clear();
}

/* --- applying ------------------------------------------------------------- */

static void check_outcomes(const struct fsm_result *res, const struct dcmd *d,
                           int n, const struct expect *x)
{
    unsigned total_ops = 0;

    FUZZ_CHECK(res->n == (unsigned)n);
    FUZZ_CHECK(res->index == G.index);
    for (int i = 0; i < n; i++) {
        const struct fsm_outcome *o = &res->outcomes[i];
        const struct expect *e = &x[i];
        enum command_type type = d[i].c.type;
        if (o->index != G.index)
            fuzz_fail("command %d: outcome index %llu, entry index %llu", i,
                      (unsigned long long)o->index,
                      (unsigned long long)G.index);
        if (o->status != e->status)
            fuzz_fail("command %d (type %d): status %d, expected %d", i,
                      (int)type, o->status, e->status);
        if (type == CMD_TXN) {
            if (o->succeeded != e->succeeded || o->n_ops != e->n_ops ||
                o->first_op != e->first_op)
                fuzz_fail("txn %d: succeeded %d ops %u+%u, expected %d "
                          "ops %u+%u",
                          i, o->succeeded, o->first_op, o->n_ops,
                          e->succeeded, e->first_op, e->n_ops);
            total_ops += o->n_ops;
            continue;
        }
        if (type == CMD_INIT || type == CMD_MEMBER_PUT ||
            type == CMD_MEMBER_DEL || type == CMD_NOOP) {
            FUZZ_CHECK(o->status == 0);
            continue;
        }
        if (e->status == FSM_ENOTFOUND)
            continue;
        if (o->exists != e->exists || o->create_index != e->create ||
            o->mod_index != e->mod || o->version != e->version)
            fuzz_fail("command %d (type %d, status %d): exists %d meta "
                      "%llu/%llu/%llu, expected %d %llu/%llu/%llu",
                      i, (int)type, o->status, o->exists,
                      (unsigned long long)o->create_index,
                      (unsigned long long)o->mod_index,
                      (unsigned long long)o->version, e->exists,
                      (unsigned long long)e->create,
                      (unsigned long long)e->mod,
                      (unsigned long long)e->version);
    }
    if (res->n_ops != total_ops || total_ops != n_xops)
        fuzz_fail("fsm reports %u transaction op results, expected %zu",
                  res->n_ops, n_xops);
    for (unsigned k = 0; k < res->n_ops; k++) {
        const struct fsm_op_result *r = &res->ops[k];
        const struct expect_op *e = &xops[k];
        if (r->kind != e->kind || !bytes_eq(r->key, e->key))
            fuzz_fail("op result %u: kind %d or key differs from the op", k,
                      (int)r->kind);
        if ((r->kind == OP_DELETE || r->kind == OP_GET) && r->found != e->found)
            fuzz_fail("op result %u (kind %d): found %d, expected %d", k,
                      (int)r->kind, r->found, e->found);
        if ((r->kind == OP_PUT || (r->kind == OP_GET && e->found)) &&
            (r->create_index != e->create || r->mod_index != e->mod ||
             r->version != e->version))
            fuzz_fail("op result %u (kind %d): meta %llu/%llu/%llu, expected "
                      "%llu/%llu/%llu",
                      k, (int)r->kind, (unsigned long long)r->create_index,
                      (unsigned long long)r->mod_index,
                      (unsigned long long)r->version,
                      (unsigned long long)e->create,
                      (unsigned long long)e->mod,
                      (unsigned long long)e->version);
        if (r->kind == OP_GET && e->found &&
            !mem_eq(r->value, r->value_len, e->value, e->value_len))
            fuzz_fail("op result %u: GET returned %zu bytes, not the %zu "
                      "the key held at that point",
                      k, r->value_len, e->value_len);
    }
}

static void apply_input(const uint8_t *data, size_t size, struct dcmd *d,
                        int n)
{
    struct fsm_result *res = NULL;
    struct expect *x = NULL;
    int expect_ok = 0, rv;

    G.index++;
    if (n > 0) {
        x = calloc((size_t)n, sizeof *x);
        FUZZ_CHECK(x != NULL);
        expect_ok = model_apply(d, n, G.index, x);
    }
    G.fatal = false;
    rv = fsm_apply_entry(&G.fa, G.index, data, size, &res);
    if (expect_ok != 0) {
        /* A committed entry every replica decodes but none can apply: a
         * node that calls fatal exits, restarts, replays it and exits
         * again, and so does every other node. */
        if (rv == 0)
            fuzz_fail("an entry with a key the store cannot hold was "
                      "applied");
        fuzz_finding("apply-einval",
                     "entry %llu passes command_validate but applying it "
                     "fails (%d, fatal: %s): on a real node fatal exits the "
                     "process, and every replica does the same on every "
                     "restart",
                     (unsigned long long)G.index, rv,
                     G.fatal ? G.fatal_msg : "not called");
        /* Tolerated: the fsm must have kept its old state, as the model
         * did. */
        FUZZ_CHECK(G.fa.applied_index < G.index);
        for (size_t i = 0; i < n_touched; i++)
            check_key_in_store(G.sa, touched[i], "after a refused entry");
        free(x);
        return;
    }
    if (rv != 0 || G.fatal)
        fuzz_fail("fsm_apply_entry(%llu) failed with %d (fatal: %s)",
                  (unsigned long long)G.index, rv,
                  G.fatal ? G.fatal_msg : "not called");
    FUZZ_CHECK(res != NULL);
    FUZZ_CHECK(G.fa.applied_index == G.index);
    if (n <= 0) {
        FUZZ_CHECK(res->n == 0);
    } else {
        check_outcomes(res, d, n, x);
        for (size_t i = 0; i < n_touched; i++)
            check_key_in_store(G.sa, touched[i], "after apply");
        check_members(d, n);
        model_commit();
    }
    check_mirrors(&G.fa, G.sa, "after apply");

    /* libraft replays entries the store already has at every start. */
    res = NULL;
    rv = fsm_apply_entry(&G.fa, G.index, data, size, &res);
    FUZZ_CHECK(rv == 0 && res != NULL && res->n == 0);
    free(x);
}

/* --- snapshots ------------------------------------------------------------ */

struct snap_member
{
    uint64_t id;
    struct command_bytes name, raft, http;
    size_t order;
};

struct snap_key
{
    struct command_bytes key, value;
    uint64_t create, mod, version;
};

struct snap
{
    uint64_t applied, cluster, n_members, n_keys;
    bool complete; /* every item parsed, nothing after: only order is off */
    struct snap_member *members;
    struct snap_key *keys;
};

struct rd
{
    const uint8_t *p, *end;
};

/* Little-endian base-128, at most 10 bytes (fsm.c writes what
 * command.c's varints hold: up to 64 bits). */
static int rd_varint(struct rd *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (r->p == r->end)
            return -1;
        uint8_t b = *r->p++;
        if (shift < 64)
            v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static int rd_bytes(struct rd *r, struct command_bytes *out)
{
    uint64_t n;
    if (rd_varint(r, &n) != 0 || n > (uint64_t)(r->end - r->p))
        return -1;
    out->base = r->p;
    out->len = (size_t)n;
    r->p += n;
    return 0;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

enum snap_verdict {
    SNAP_BAD_HEADER, /* RAFT_CORRUPT before touching the store */
    SNAP_NOT_NEWER,  /* 0, store kept */
    SNAP_CORRUPT,    /* RAFT_CORRUPT, store unchanged */
    SNAP_UNSORTED,   /* keys out of order or repeated (and maybe more) */
    SNAP_OK,
};

/* Snapshots list keys in iteration order, which store.h defines as exact
 * byte order (shorter first on a common prefix). */
static int key_cmp(struct command_bytes a, struct command_bytes b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.base, b.base, n) : 0;
    if (c != 0)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

/* Parse a snapshot by the format in fsm.h, independently of fsm.c. */
static enum snap_verdict snap_parse(const uint8_t *data, size_t size,
                                    uint64_t store_applied, struct snap *s)
{
    struct rd r = {data, data + size};
    bool sorted = true;

    memset(s, 0, sizeof *s);
    /* A marker (24 bytes: magic, applied index, cluster id) stands for the
     * store itself: fine if the store is at least that far, else the store
     * lost data and it is refused like a bad header. */
    if (size == 24 && memcmp(data, "RKVSNAPM", 8) == 0)
        return le64(data + 8) <= store_applied ? SNAP_NOT_NEWER
                                               : SNAP_BAD_HEADER;
    if (size < 40 || memcmp(data, "RKVSNAP1", 8) != 0)
        return SNAP_BAD_HEADER;
    s->applied = le64(data + 8);
    s->cluster = le64(data + 16);
    s->n_members = le64(data + 24);
    s->n_keys = le64(data + 32);
    if (s->applied <= store_applied)
        return SNAP_NOT_NEWER;
    r.p += 40;
    /* Counts are read as the loader reads them, one item at a time: a count
     * far beyond the data is only noticed when the data runs out, and an
     * earlier item may fail first.  Arrays grow with what was read. */
    size_t cap_m = 0, cap_k = 0;
    for (uint64_t i = 0; i < s->n_members; i++) {
        if (i == cap_m) {
            cap_m = cap_m ? cap_m * 2 : 8;
            s->members = realloc(s->members, cap_m * sizeof *s->members);
            FUZZ_CHECK(s->members != NULL);
        }
        struct snap_member *m = &s->members[i];
        if (rd_varint(&r, &m->id) != 0 || rd_bytes(&r, &m->name) != 0 ||
            rd_bytes(&r, &m->raft) != 0 || rd_bytes(&r, &m->http) != 0)
            return SNAP_CORRUPT;
        m->order = i;
    }
    for (uint64_t i = 0; i < s->n_keys; i++) {
        if (i == cap_k) {
            cap_k = cap_k ? cap_k * 2 : 8;
            s->keys = realloc(s->keys, cap_k * sizeof *s->keys);
            FUZZ_CHECK(s->keys != NULL);
        }
        struct snap_key *k = &s->keys[i];
        if (rd_bytes(&r, &k->key) != 0 || rd_varint(&r, &k->create) != 0 ||
            rd_varint(&r, &k->mod) != 0 || rd_varint(&r, &k->version) != 0 ||
            rd_bytes(&r, &k->value) != 0)
            return sorted ? SNAP_CORRUPT : SNAP_UNSORTED;
        if (!key_storable(k->key))
            return sorted ? SNAP_CORRUPT : SNAP_UNSORTED;
        if (i > 0 && key_cmp(s->keys[i - 1].key, k->key) >= 0)
            sorted = false;
    }
    if (r.p != r.end)
        return sorted ? SNAP_CORRUPT : SNAP_UNSORTED;
    s->complete = true;
    return sorted ? SNAP_OK : SNAP_UNSORTED;
}

static void snap_free(struct snap *s)
{
    free(s->members);
    free(s->keys);
}

/* A growing byte buffer for the expected snapshot. */
struct buf
{
    uint8_t *p;
    size_t len, cap;
};

static void buf_put(struct buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        FUZZ_CHECK(b->p != NULL);
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_le64(struct buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    buf_put(b, x, 8);
}

static void buf_varint(struct buf *b, uint64_t v)
{
    uint8_t x[10];
    size_t n = 0;
    while (v >= 0x80) {
        x[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    x[n++] = (uint8_t)v;
    buf_put(b, x, n);
}

static void buf_bytes(struct buf *b, struct command_bytes v)
{
    buf_varint(b, v.len);
    buf_put(b, v.base, v.len);
}

static int snap_key_cmp(const void *a, const void *b)
{
    return key_cmp(((const struct snap_key *)a)->key,
                   ((const struct snap_key *)b)->key);
}

/* Sort the keys into iteration order; false if one is repeated. */
static bool snap_sort_keys(struct snap *s)
{
    if (s->n_keys == 0)
        return true;
    qsort(s->keys, s->n_keys, sizeof *s->keys, snap_key_cmp);
    for (uint64_t i = 1; i < s->n_keys; i++)
        if (key_cmp(s->keys[i - 1].key, s->keys[i].key) == 0)
            return false;
    return true;
}

static int member_cmp(const void *a, const void *b)
{
    const struct snap_member *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* What a store restored from @s serializes to: members once per id (the
 * last one given wins) in id order, keys as given, shortest varints. */
static void snap_canonical(struct snap *s, struct buf *out)
{
    uint64_t distinct = 0;

    if (s->n_members > 0)
        qsort(s->members, s->n_members, sizeof *s->members, member_cmp);
    for (uint64_t i = 0; i < s->n_members; i++)
        if (i + 1 == s->n_members || s->members[i + 1].id != s->members[i].id)
            distinct++;
    out->len = 0;
    buf_put(out, "RKVSNAP1", 8);
    buf_le64(out, s->applied);
    buf_le64(out, s->cluster);
    buf_le64(out, distinct);
    buf_le64(out, s->n_keys);
    for (uint64_t i = 0; i < s->n_members; i++) {
        const struct snap_member *m = &s->members[i];
        if (i + 1 < s->n_members && s->members[i + 1].id == m->id)
            continue;
        buf_varint(out, m->id);
        buf_bytes(out, m->name);
        buf_bytes(out, m->raft);
        buf_bytes(out, m->http);
    }
    for (uint64_t i = 0; i < s->n_keys; i++) {
        const struct snap_key *k = &s->keys[i];
        buf_bytes(out, k->key);
        buf_varint(out, k->create);
        buf_varint(out, k->mod);
        buf_varint(out, k->version);
        buf_bytes(out, k->value);
    }
}

/* fsm_snapshot_full: what a follower would be sent. */
static void take(struct fsm *f, struct buf *out)
{
    void *data = NULL;
    size_t len = 0;
    int rv = fsm_snapshot_full(f, &data, &len);

    if (rv != 0)
        fuzz_fail("fsm_snapshot_full failed: %d", rv);
    out->len = 0;
    buf_put(out, data, len);
    raft_free(data);
}

/* A digest of everything in a store, to tell whether it changed. */
static uint64_t store_digest(struct store *s)
{
    struct store_txn t;
    struct store_cursor c;
    struct store_record rec;
    struct store_member m;
    const void *key;
    size_t klen;
    uint64_t h = 1469598103934665603ull;
    int rv;

#define MIX(p, n)                                                              \
    do {                                                                       \
        const uint8_t *q_ = (const uint8_t *)(p);                              \
        for (size_t i_ = 0; i_ < (size_t)(n); i_++)                            \
            h = (h ^ q_[i_]) * 1099511628211ull;                               \
        h = (h ^ (n)) * 1099511628211ull;                                      \
    } while (0)

    FUZZ_CHECK(store_txn_begin(s, false, &t) == 0);
    FUZZ_CHECK(store_cursor_open(&t, STORE_KV, NULL, 0, &c) == 0);
    while ((rv = store_cursor_next_kv(&c, &key, &klen, &rec)) == 1) {
        MIX(key, klen);
        MIX(&rec.create_index, 8);
        MIX(&rec.mod_index, 8);
        MIX(&rec.version, 8);
        MIX(rec.value, rec.value_len);
    }
    FUZZ_CHECK(rv == 0);
    store_cursor_close(&c);
    FUZZ_CHECK(store_cursor_open(&t, STORE_MEMBERS, NULL, 0, &c) == 0);
    while ((rv = store_cursor_next_member(&c, &m)) == 1) {
        MIX(&m.id, 8);
        MIX(m.name, m.name_len);
        MIX(m.raft_addr, m.raft_addr_len);
        MIX(m.http_addr, m.http_addr_len);
    }
    FUZZ_CHECK(rv == 0);
    store_cursor_close(&c);
    store_txn_abort(&t);
#undef MIX
    uint64_t applied = meta_u64(s, "applied_index");
    uint64_t cluster = meta_u64(s, "cluster_id");
    return h ^ applied * 31 ^ cluster * 131;
}

/* Store B after a successful restore of @s: its mirrors and its own
 * snapshot must say exactly what @s said. */
static void check_restored(struct snap *s)
{
    struct buf want = {0}, got = {0};

    FUZZ_CHECK(G.fb.applied_index == s->applied);
    FUZZ_CHECK(G.fb.cluster_id == s->cluster);
    check_mirrors(&G.fb, G.sb, "after restore");
    snap_canonical(s, &want);
    take(&G.fb, &got);
    if (want.len != got.len || memcmp(want.p, got.p, want.len) != 0) {
        size_t at = 0;
        while (at < want.len && at < got.len && want.p[at] == got.p[at])
            at++;
        fuzz_fail("restored store does not hold what the snapshot said "
                  "(%zu bytes expected, %zu serialized, first difference at "
                  "byte %zu)",
                  want.len, got.len, at);
    }
    free(want.p);
    free(got.p);
}

static void restore_input(const uint8_t *data, size_t size)
{
    struct snap s;
    enum snap_verdict v;
    uint64_t before = 0;
    int rv;

    /* As on a node that has applied nothing: every snapshot is newer. */
    G.fb.applied_index = 0;
    v = snap_parse(data, size, G.fb.applied_index, &s);
    if (v == SNAP_CORRUPT || v == SNAP_UNSORTED)
        before = store_digest(G.sb);
    G.fatal = false;
    rv = fsm_restore(&G.fb, data, size);
    switch (v) {
    case SNAP_BAD_HEADER:
        if (rv != RAFT_CORRUPT)
            fuzz_fail("snapshot without a valid header: fsm_restore gave %d",
                      rv);
        break;
    case SNAP_NOT_NEWER:
        if (rv != 0)
            fuzz_fail("snapshot not newer than the store: fsm_restore gave %d",
                      rv);
        break;
    case SNAP_UNSORTED:
        if (rv == RAFT_CORRUPT && !G.fatal)
            break; /* rejected, as a bad snapshot should be */
        if (rv == 0 && !G.fatal && s.complete && snap_sort_keys(&s)) {
            /* Accepted although out of order: harmless if the store ends
             * up holding exactly the keys given. */
            check_restored(&s);
            break;
        }
        /* Keys out of order or repeated: fsm.c appends them (store_kv_put
         * with append), LMDB refuses a short key that is not past the last
         * one with MDB_KEYEXIST, and that surfaces as an I/O error; long
         * keys are never appended, so a repeated one is silently merged. */
        fuzz_finding("restore-unsorted",
                     "a snapshot whose keys are out of order or repeated "
                     "gives fsm_restore %d (fatal: %s) instead of "
                     "RAFT_CORRUPT%s",
                     rv, G.fatal ? G.fatal_msg : "not called",
                     rv == 0 ? "; it was accepted with a key repeated"
                             : ": the node stops instead of refusing it");
        break;
    case SNAP_CORRUPT:
        if (rv != RAFT_CORRUPT || G.fatal)
            fuzz_fail("corrupt snapshot: fsm_restore gave %d (fatal: %s), "
                      "expected RAFT_CORRUPT",
                      rv, G.fatal ? G.fatal_msg : "not called");
        break;
    case SNAP_OK:
        if (rv != 0 || G.fatal)
            fuzz_fail("good snapshot refused: fsm_restore gave %d (fatal: "
                      "%s)",
                      rv, G.fatal ? G.fatal_msg : "not called");
        check_restored(&s);
        break;
    }
    if ((v == SNAP_CORRUPT || v == SNAP_UNSORTED) && rv != 0 &&
        store_digest(G.sb) != before)
        fuzz_fail("fsm_restore failed (%d) but changed the store", rv);
    snap_free(&s);
}

/* Store A's own snapshot restored into B must serialize identically. */
static void roundtrip_a_to_b(void)
{
    struct buf a = {0}, b = {0};
    int rv;

    take(&G.fa, &a);
    G.fb.applied_index = 0;
    G.fatal = false;
    rv = fsm_restore(&G.fb, a.p, a.len);
    if (rv != 0 || G.fatal)
        fuzz_fail("a snapshot from fsm_snapshot_full does not restore: "
                  "%d (fatal: %s)",
                  rv, G.fatal ? G.fatal_msg : "not called");
    take(&G.fb, &b);
    if (a.len != b.len || memcmp(a.p, b.p, a.len) != 0)
        fuzz_fail("snapshot -> restore -> snapshot changed the bytes (%zu "
                  "-> %zu)",
                  a.len, b.len);
    free(a.p);
    free(b.p);
}

/* A node restart, as far as the state machine goes: what fsm_init reads
 * back from the store must be what the fsm had in memory.  It also puts
 * the fsm back in its first-use state (no result buffers, no arena), which
 * an entry may meet only once per process otherwise. */
static void restart_a(void)
{
    uint64_t applied = G.fa.applied_index, cluster = G.fa.cluster_id;

    fsm_close(&G.fa);
    FUZZ_CHECK(fsm_init(&G.fa, G.sa) == 0);
    G.fa.fatal = on_fatal;
    if (G.fa.applied_index != applied || G.fa.cluster_id != cluster)
        fuzz_fail("after a restart the fsm reads applied index %llu and "
                  "cluster %016llx; before it had %llu and %016llx",
                  (unsigned long long)G.fa.applied_index,
                  (unsigned long long)G.fa.cluster_id,
                  (unsigned long long)applied, (unsigned long long)cluster);
}

/* --- libFuzzer entry points ------------------------------------------------ */

static void cleanup(void)
{
    if (G.sa != NULL) {
        fsm_close(&G.fa);
        store_close(G.sa);
    }
    if (G.sb != NULL) {
        fsm_close(&G.fb);
        store_close(G.sb);
    }
    G.sa = G.sb = NULL;
    model_clear();
    model_commit();
    xops_reset();
    free(undo);
    free(touched);
    free(xops);
    fuzz_remove_dir(G.dir);
}

static void open_side(const char *name, struct store **s, struct fsm *f)
{
    char dir[512];

    snprintf(dir, sizeof dir, "%s/%s", G.dir, name);
    if (mkdir(dir, 0700) != 0)
        fuzz_fail("mkdir %s: %s", dir, strerror(errno));
    if (store_open(s, dir, STORE_MAP) != 0 || fsm_init(f, *s) != 0)
        fuzz_fail("cannot open a store in %s", dir);
    f->fatal = on_fatal;
    store_set_fatal(*s, on_store_fatal, NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_quiet_logs();
    fuzz_make_dir(G.dir, sizeof G.dir, "fuzz-command");
    open_side("a", &G.sa, &G.fa);
    open_side("b", &G.sb, &G.fb);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dcmd *d = NULL;
    int n;

    n = decode_all(data, size, &d);
    if (n > 0)
        check_roundtrip(d, n);
    apply_input(data, size, d, n);
    dcmds_free(d, n > 0 ? (unsigned)n : 0);
    xops_reset();

    restore_input(data, size);

    /* The node commits the store's batch once per loop iteration. */
    FUZZ_CHECK(store_flush(G.sa) == 0 && store_flush(G.sb) == 0);
    G.inputs++;
    if (G.inputs % RESTART_EVERY == 0)
        restart_a();
    if (G.inputs % ROUNDTRIP_EVERY == 0)
        roundtrip_a_to_b();
    if (G.inputs % CLEAR_EVERY == 0) {
        check_store_against_model();
        clear_store_a();
    }
    return 0;
}
