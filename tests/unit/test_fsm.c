/* Unit tests for the state machine (src/fsm.c): apply, skip on replay,
 * snapshot and restore, without a Raft instance. */
#include <setjmp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "command.h"
#include "fsm.h"

struct side
{
    char dir[64];
    struct store *store;
    struct fsm fsm;
};

static void side_open(struct side *s)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/raftkv-fsm-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    assert_int_equal(store_open(&s->store, s->dir, 1 << 20), 0);
    assert_int_equal(fsm_init(&s->fsm, s->store), 0);
}

static void side_reopen(struct side *s)
{
    fsm_close(&s->fsm);
    store_close(s->store);
    assert_int_equal(store_open(&s->store, s->dir, 1 << 20), 0);
    assert_int_equal(fsm_init(&s->fsm, s->store), 0);
}

static void side_close(struct side *s)
{
    char cmd[128];
    fsm_close(&s->fsm);
    store_close(s->store);
    snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
    assert_int_equal(system(cmd), 0);
}

static struct command_bytes B(const char *s)
{
    return (struct command_bytes){(const uint8_t *)s, strlen(s)};
}

/* Encode @cmds and apply them as the entry at @index. */
static struct fsm_result *apply(struct fsm *f, uint64_t index,
                                const struct command *cmds, unsigned n)
{
    size_t cap = command_encoded_size(cmds, n);
    uint8_t *buf = malloc(cap);
    struct fsm_result *res = NULL;
    long len = command_encode(cmds, n, buf, cap);
    assert_true(len > 0);
    assert_int_equal(fsm_apply_entry(f, index, buf, (size_t)len, &res), 0);
    free(buf);
    return res;
}

static void set(struct fsm *f, uint64_t index, const char *k, const char *v)
{
    struct command c = {.type = CMD_PUT, .key = B(k), .value = B(v)};
    apply(f, index, &c, 1);
}

/* Returns the value of @k as a static string, or NULL when missing. */
static const char *get(struct store *s, const char *k, struct store_record *out)
{
    static char value[256];
    struct store_txn t;
    struct store_record rec;
    assert_int_equal(store_txn_begin(s, false, &t), 0);
    int rv = store_kv_get(&t, k, strlen(k), &rec);
    if (rv == STORE_ENOTFOUND) {
        store_txn_abort(&t);
        return NULL;
    }
    assert_int_equal(rv, 0);
    snprintf(value, sizeof value, "%.*s", (int)rec.value_len,
             (const char *)rec.value);
    if (out)
        *out = rec;
    store_txn_abort(&t);
    return value;
}

/* Puts create, overwrite (version counts up, create index stays), delete. */
static void test_apply_put_overwrite_delete(void **state)
{
    (void)state;
    struct side s;
    struct store_record rec;
    side_open(&s);

    set(&s.fsm, 1, "x", "23");
    struct command c = {.type = CMD_PUT, .key = B("x"), .value = B("24")};
    struct fsm_result *r = apply(&s.fsm, 2, &c, 1);
    assert_int_equal(r->n, 1);
    assert_int_equal(r->outcomes[0].create_index, 1);
    assert_int_equal(r->outcomes[0].mod_index, 2);
    assert_int_equal(r->outcomes[0].version, 2);
    assert_string_equal(get(s.store, "x", &rec), "24");
    assert_int_equal(rec.version, 2);

    struct command d[2] = {{.type = CMD_DELETE, .key = B("x")},
                           {.type = CMD_DELETE, .key = B("never")}};
    r = apply(&s.fsm, 3, d, 2);
    assert_int_equal(r->n, 2);
    assert_int_equal(r->outcomes[0].status, 0);
    assert_int_equal(r->outcomes[1].status, FSM_ENOTFOUND);
    assert_null(get(s.store, "x", NULL));
    assert_int_equal(s.fsm.applied_index, 3);
    side_close(&s);
}

/* After a restart the store knows its applied index, and entries at or
 * below it are skipped when libraft replays them: they must not apply
 * twice (the version would count up again). */
static void test_replay_is_skipped(void **state)
{
    (void)state;
    struct side s;
    struct store_record rec;
    side_open(&s);
    set(&s.fsm, 1, "k", "one");
    set(&s.fsm, 2, "k", "two");
    side_reopen(&s);
    assert_int_equal(s.fsm.applied_index, 2);

    struct command c = {.type = CMD_PUT, .key = B("k"), .value = B("one")};
    struct fsm_result *r = apply(&s.fsm, 1, &c, 1);
    assert_int_equal(r->n, 0); /* skipped */
    c.value = B("two");
    r = apply(&s.fsm, 2, &c, 1);
    assert_int_equal(r->n, 0);
    assert_string_equal(get(s.store, "k", &rec), "two");
    assert_int_equal(rec.version, 2);
    set(&s.fsm, 3, "k", "three");
    assert_string_equal(get(s.store, "k", &rec), "three");
    assert_int_equal(rec.version, 3);
    side_close(&s);
}

/* A committed entry that does not decode is skipped (and its index
 * recorded) instead of stopping the node. */
static void test_malformed_entry_skipped(void **state)
{
    (void)state;
    struct side s;
    struct fsm_result *r;
    uint8_t junk[16] = {9, 9, 9, 9, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8};
    side_open(&s);
    assert_int_equal(fsm_apply_entry(&s.fsm, 1, junk, sizeof junk, &r), 0);
    assert_int_equal(r->n, 0);
    assert_int_equal(s.fsm.applied_index, 1);
    side_reopen(&s);
    assert_int_equal(s.fsm.applied_index, 1);
    side_close(&s);
}

/* CMD_INIT sets the cluster id once; members are recorded. */
static void test_init_and_members(void **state)
{
    (void)state;
    struct side s;
    struct store_txn t;
    struct store_member m;
    side_open(&s);
    struct command c[2] = {
        {.type = CMD_INIT, .id = 0xabcdef},
        {.type = CMD_MEMBER_PUT, .id = 7, .name = B("node1"),
         .raft_addr = B("127.0.0.1:2222"), .http_addr = B("127.0.0.1:8222")},
    };
    uint64_t before = s.fsm.members_version;
    apply(&s.fsm, 1, c, 2);
    assert_int_equal(s.fsm.cluster_id, 0xabcdef);
    assert_true(s.fsm.members_version > before);
    struct command again = {.type = CMD_INIT, .id = 0x123};
    apply(&s.fsm, 2, &again, 1);
    assert_int_equal(s.fsm.cluster_id, 0xabcdef); /* not re-initialized */
    side_reopen(&s);
    assert_int_equal(s.fsm.cluster_id, 0xabcdef);
    assert_int_equal(store_txn_begin(s.store, false, &t), 0);
    assert_int_equal(store_member_get(&t, 7, &m), 0);
    assert_int_equal(m.http_addr_len, 14);
    store_txn_abort(&t);
    struct command del = {.type = CMD_MEMBER_DEL, .id = 7};
    apply(&s.fsm, 3, &del, 1);
    assert_int_equal(store_txn_begin(s.store, false, &t), 0);
    assert_int_equal(store_member_get(&t, 7, &m), STORE_ENOTFOUND);
    store_txn_abort(&t);
    side_close(&s);
}

/* The full serialization a follower would receive (fsm_snapshot_full). */
static void *full(struct fsm *f, size_t *len)
{
    void *data = NULL;
    assert_int_equal(fsm_snapshot_full(f, &data, len), 0);
    return data;
}

/* A snapshot of one store restored into another gives the same keys,
 * metadata, members, cluster id and applied index; keys that existed only in
 * the target are gone (restore replaces, it does not merge). */
static void test_snapshot_restore_roundtrip(void **state)
{
    (void)state;
    struct side a, b;
    size_t len;
    struct store_record rec;
    char key[32], value[64];

    side_open(&a);
    side_open(&b);
    struct command init[2] = {
        {.type = CMD_INIT, .id = 77},
        {.type = CMD_MEMBER_PUT, .id = 1, .name = B("node1"),
         .raft_addr = B("127.0.0.1:1"), .http_addr = B("")}};
    apply(&a.fsm, 1, init, 2);
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof key, "key-%05d", i);
        snprintf(value, sizeof value, "value-%d", i * 3);
        set(&a.fsm, (uint64_t)i + 2, key, value);
    }
    set(&a.fsm, 4000, "key-00010", "rewritten");
    set(&b.fsm, 1, "only-in-b", "x");

    void *data = full(&a.fsm, &len);
    assert_int_equal(fsm_restore(&b.fsm, data, len), 0);
    assert_int_equal(b.fsm.applied_index, 4000);
    assert_int_equal(b.fsm.cluster_id, 77);
    assert_int_equal(b.fsm.snapshots_restored, 1);
    assert_null(get(b.store, "only-in-b", NULL));
    assert_string_equal(get(b.store, "key-02999", NULL), "value-8997");
    assert_string_equal(get(b.store, "key-00010", &rec), "rewritten");
    assert_int_equal(rec.create_index, 12);
    assert_int_equal(rec.mod_index, 4000);
    assert_int_equal(rec.version, 2);

    /* The restored store survives a restart with its applied index. */
    side_reopen(&b);
    assert_int_equal(b.fsm.applied_index, 4000);
    assert_int_equal(b.fsm.cluster_id, 77);

    /* Restoring the same snapshot again is a no-op: not newer. */
    set(&b.fsm, 4001, "after", "snapshot");
    assert_int_equal(fsm_restore(&b.fsm, data, len), 0);
    assert_string_equal(get(b.store, "after", NULL), "snapshot");
    raft_free(data);
    side_close(&a);
    side_close(&b);
}

/* A corrupt snapshot is refused and leaves the target store untouched:
 * truncations and a flipped count. */
static void test_corrupt_snapshot_refused(void **state)
{
    (void)state;
    struct side a, b;
    size_t len;
    side_open(&a);
    side_open(&b);
    set(&a.fsm, 1, "a", "1");
    set(&a.fsm, 2, "b", "2");
    set(&b.fsm, 1, "keep", "me");
    uint8_t *data = full(&a.fsm, &len);

    for (size_t cut = 0; cut < len; cut += 3)
        assert_int_equal(fsm_restore(&b.fsm, data, cut), RAFT_CORRUPT);
    data[32]++; /* n_keys one too many */
    assert_int_equal(fsm_restore(&b.fsm, data, len), RAFT_CORRUPT);
    data[32] -= 2; /* one too few: trailing bytes */
    assert_int_equal(fsm_restore(&b.fsm, data, len), RAFT_CORRUPT);
    assert_string_equal(get(b.store, "keep", NULL), "me");
    assert_int_equal(b.fsm.applied_index, 1);
    raft_free(data);
    side_close(&a);
    side_close(&b);
}

/* Long keys sharing a prefix survive a snapshot round trip (restore loads
 * keys in iteration order, which differs from LMDB's for them). */
static void test_snapshot_long_keys(void **state)
{
    (void)state;
    struct side a, b;
    size_t len;
    char key[800];
    side_open(&a);
    side_open(&b);
    for (int i = 0; i < 50; i++) {
        size_t klen = 500 + (size_t)(i * 7 % 200);
        memset(key, 'k', klen);
        key[klen - 1] = (char)('a' + i % 26);
        key[klen - 2] = (char)('a' + i / 26);
        key[klen] = '\0';
        set(&a.fsm, (uint64_t)i + 1, key, "v");
    }
    set(&a.fsm, 51, "short", "s");
    void *data = full(&a.fsm, &len);
    assert_int_equal(fsm_restore(&b.fsm, data, len), 0);
    struct store_txn t;
    uint64_t count;
    assert_int_equal(store_txn_begin(b.store, false, &t), 0);
    assert_int_equal(store_count(&t, STORE_KV, &count), 0);
    store_txn_abort(&t);
    assert_int_equal(count, 51);
    raft_free(data);
    side_close(&a);
    side_close(&b);
}

struct serial_thread
{
    struct fsm_serial serial;
    void *data;
    size_t len;
    uint64_t index;
    int rv;
};

static void *serial_thread_main(void *arg)
{
    struct serial_thread *st = arg;
    st->rv = fsm_serial_run(&st->serial, &st->data, &st->len, &st->index);
    return NULL;
}

/* A serialization holds the store as of its last commit when it began:
 * writes applied before it (not yet committed) and after it (committed while
 * it runs on another thread) are not in it, and it says which index it
 * holds.  The node keeps applying meanwhile; a follower that restores it
 * then applies the entries after that index. */
static void test_serialization_runs_beside_the_applies(void **state)
{
    (void)state;
    struct side a, b;
    struct serial_thread st = {0};
    pthread_t th;
    char key[32];

    side_open(&a);
    side_open(&b);
    for (int i = 1; i <= 100; i++) {
        snprintf(key, sizeof key, "before-%03d", i);
        set(&a.fsm, (uint64_t)i, key, "v");
    }
    assert_int_equal(store_flush(a.store), 0);
    set(&a.fsm, 101, "applied-only", "v"); /* in the overlay */
    assert_int_equal(fsm_serial_begin(&a.fsm, &st.serial), 0);
    assert_int_equal(pthread_create(&th, NULL, serial_thread_main, &st), 0);
    for (int i = 102; i <= 400; i++) {
        snprintf(key, sizeof key, "after-%03d", i);
        set(&a.fsm, (uint64_t)i, key, "v");
        if (i % 50 == 0)
            assert_int_equal(store_flush(a.store), 0);
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(st.rv, 0);
    assert_int_equal(st.index, 100);

    assert_int_equal(fsm_restore(&b.fsm, st.data, st.len), 0);
    assert_int_equal(b.fsm.applied_index, 100);
    assert_string_equal(get(b.store, "before-100", NULL), "v");
    assert_null(get(b.store, "applied-only", NULL));
    assert_null(get(b.store, "after-102", NULL));
    set(&b.fsm, 101, "applied-only", "v");
    assert_string_equal(get(b.store, "applied-only", NULL), "v");
    raft_free(st.data);

    /* One that is begun and not run ends cleanly, and a later one sees
     * everything committed by then. */
    assert_int_equal(fsm_serial_begin(&a.fsm, &st.serial), 0);
    fsm_serial_cancel(&st.serial);
    size_t len;
    void *data = full(&a.fsm, &len);
    assert_int_equal(fsm_restore(&b.fsm, data, len), 0);
    assert_int_equal(b.fsm.applied_index, 400);
    assert_string_equal(get(b.store, "after-400", NULL), "v");
    raft_free(data);
    side_close(&a);
    side_close(&b);
}

static atomic_int woken;

static void wake(void *arg)
{
    (void)arg;
    atomic_fetch_add(&woken, 1);
}

/* A commit that finds the map full waits for the detached readers, and the
 * loop may have to wait for that commit: so a serialization gives up
 * (RAFT_BUSY) once a commit waits, and none begins until the map has grown.
 * libraft asks again later, and then one runs.  400 x 4 KiB into the 1 MiB
 * map. */
static void test_a_serialization_gives_way_to_a_growing_map(void **state)
{
    (void)state;
    struct side a;
    struct fsm_serial s1, s2;
    void *data = NULL;
    size_t len;
    uint64_t index;
    char key[16], *value = malloc(4097);

    memset(value, 'v', 4096);
    value[4096] = '\0';
    side_open(&a);
    set(&a.fsm, 1, "first", "v");
    assert_int_equal(store_flush(a.store), 0);
    atomic_store(&woken, 0);
    store_set_notify(a.store, wake, NULL);
    assert_int_equal(fsm_serial_begin(&a.fsm, &s1), 0);
    for (int i = 0; i < 400; i++) {
        snprintf(key, sizeof key, "big-%03d", i);
        set(&a.fsm, (uint64_t)i + 2, key, value);
    }
    assert_true(store_commit_start(a.store));
    for (int i = 0; i < 10000 && atomic_load(&woken) == 0; i++)
        usleep(1000); /* the writer finds the map full (deadline 10 s) */
    assert_int_equal(atomic_load(&woken), 1);
    store_poll(a.store); /* the commit now waits for s1 */

    assert_int_equal(fsm_serial_run(&s1, &data, &len, &index), RAFT_BUSY);
    assert_null(data);
    assert_int_equal(atomic_load(&woken), 2); /* s1 ended: wake the loop */
    assert_int_equal(fsm_serial_begin(&a.fsm, &s2), RAFT_BUSY);
    store_poll(a.store); /* the map grows; the commit goes again */
    assert_int_equal(store_flush(a.store), 0);
    assert_int_equal(fsm_serial_begin(&a.fsm, &s2), 0);
    assert_int_equal(fsm_serial_run(&s2, &data, &len, &index), 0);
    assert_int_equal(index, 401);
    raft_free(data);
    store_set_notify(a.store, NULL, NULL);
    side_close(&a);
    free(value);
}

/* The snapshot libraft keeps is a marker for the store: taking one flushes
 * the store's applied writes to disk; restoring it on the same node is a no-op, and
 * on a node whose store is behind it is refused (that store lost data). */
static void test_marker_snapshot(void **state)
{
    (void)state;
    struct side a, b;
    struct raft_buffer *bufs;
    unsigned n;
    side_open(&a);
    side_open(&b);
    set(&a.fsm, 1, "a", "1");
    set(&a.fsm, 2, "b", "2");
    set(&b.fsm, 1, "keep", "me");
    assert_true(store_pending(a.store));

    assert_int_equal(fsm_snapshot_take(&a.fsm, &bufs, &n), 0);
    assert_int_equal(n, 1);
    assert_true(fsm_snapshot_is_marker(bufs[0].base, bufs[0].len));
    assert_false(store_pending(a.store));
    assert_int_equal(a.fsm.snapshots_taken, 1);

    assert_int_equal(fsm_restore(&a.fsm, bufs[0].base, bufs[0].len), 0);
    assert_string_equal(get(a.store, "b", NULL), "2");
    assert_int_equal(a.fsm.snapshots_restored, 0);

    assert_int_equal(fsm_restore(&b.fsm, bufs[0].base, bufs[0].len),
                     RAFT_CORRUPT);
    assert_string_equal(get(b.store, "keep", NULL), "me");
    assert_null(get(b.store, "a", NULL));
    assert_int_equal(b.fsm.applied_index, 1);

    /* A full snapshot is never mistaken for a marker. */
    size_t len;
    void *data = full(&a.fsm, &len);
    assert_false(fsm_snapshot_is_marker(data, len));
    raft_free(data);
    fsm_snapshot_free(bufs, n);
    side_close(&a);
    side_close(&b);
}

/* A full snapshot of several MiB grows its one buffer as it goes. */
static void test_snapshot_grows(void **state)
{
    (void)state;
    struct side a, b;
    size_t len;
    char key[32];
    char *value = malloc(100001);
    memset(value, 'v', 100000);
    value[100000] = '\0';
    side_open(&a);
    side_open(&b);
    for (int i = 0; i < 60; i++) {
        snprintf(key, sizeof key, "big-%02d", i);
        set(&a.fsm, (uint64_t)i + 1, key, value);
    }
    void *data = full(&a.fsm, &len);
    assert_true(len > 6000000);
    assert_int_equal(fsm_restore(&b.fsm, data, len), 0);
    struct store_record rec;
    assert_non_null(get(b.store, "big-59", &rec));
    assert_int_equal(rec.value_len, 100000);
    raft_free(data);
    free(value);
    side_close(&a);
    side_close(&b);
}

/* CAS: 0 means "only if absent"; otherwise the mod_index must match; a
 * failed compare writes nothing and reports the current metadata. */
static void test_cas_put_and_delete(void **state)
{
    (void)state;
    struct side s;
    struct fsm_result *r;
    side_open(&s);

    struct command c = {.type = CMD_PUT_CAS, .key = B("k"), .value = B("1"),
                        .cas = 0};
    r = apply(&s.fsm, 1, &c, 1);
    assert_int_equal(r->outcomes[0].status, 0);
    r = apply(&s.fsm, 2, &c, 1); /* exists now: cas=0 fails */
    assert_int_equal(r->outcomes[0].status, FSM_ECOMPARE);
    assert_true(r->outcomes[0].exists);
    assert_int_equal(r->outcomes[0].mod_index, 1);
    c.cas = 1;
    c.value = B("2");
    r = apply(&s.fsm, 3, &c, 1);
    assert_int_equal(r->outcomes[0].status, 0);
    assert_int_equal(r->outcomes[0].version, 2);
    assert_string_equal(get(s.store, "k", NULL), "2");

    struct command d = {.type = CMD_DELETE_CAS, .key = B("k"), .cas = 1};
    r = apply(&s.fsm, 4, &d, 1); /* stale */
    assert_int_equal(r->outcomes[0].status, FSM_ECOMPARE);
    assert_string_equal(get(s.store, "k", NULL), "2");
    d.cas = 3;
    r = apply(&s.fsm, 5, &d, 1);
    assert_int_equal(r->outcomes[0].status, 0);
    assert_null(get(s.store, "k", NULL));
    d.cas = 7;
    r = apply(&s.fsm, 6, &d, 1); /* missing never matches a non-zero cas */
    assert_int_equal(r->outcomes[0].status, FSM_ECOMPARE);
    assert_false(r->outcomes[0].exists);
    side_close(&s);
}

/* A transaction runs its success ops when every compare holds, in order,
 * with gets seeing earlier writes; otherwise only the failure ops. */
static void test_txn_branches(void **state)
{
    (void)state;
    struct side s;
    struct fsm_result *r;
    side_open(&s);
    set(&s.fsm, 1, "a", "old");

    struct command_compare cmps[2] = {
        {.kind = CMP_MOD_INDEX, .key = B("a"), .number = 1},
        {.kind = CMP_VERSION, .key = B("new"), .number = 0},
    };
    struct command_op succ[3] = {
        {.kind = OP_PUT, .key = B("new"), .value = B("n")},
        {.kind = OP_DELETE, .key = B("a")},
        {.kind = OP_GET, .key = B("new")},
    };
    struct command_op fail[1] = {{.kind = OP_GET, .key = B("a")}};
    struct command_txn txn = {cmps, 2, succ, 3, fail, 1};
    struct command c = {.type = CMD_TXN, .txn = &txn};

    r = apply(&s.fsm, 2, &c, 1);
    assert_true(r->outcomes[0].succeeded);
    assert_int_equal(r->n_ops, 3);
    assert_true(r->ops[1].found); /* a existed */
    assert_true(r->ops[2].found);
    assert_int_equal(r->ops[2].value_len, 1);
    assert_memory_equal(r->ops[2].value, "n", 1);
    assert_int_equal(r->ops[2].create_index, 2);
    assert_null(get(s.store, "a", NULL));

    /* Again: "new" exists now, so the failure branch runs and writes
     * nothing. */
    r = apply(&s.fsm, 3, &c, 1);
    assert_false(r->outcomes[0].succeeded);
    assert_int_equal(r->n_ops, 1);
    assert_false(r->ops[0].found);
    assert_string_equal(get(s.store, "new", NULL), "n");

    /* Value compare. */
    struct command_compare vc = {.kind = CMP_VALUE, .key = B("new"),
                                 .value = B("n")};
    struct command_op put = {.kind = OP_PUT, .key = B("x"), .value = B("y")};
    struct command_txn t2 = {&vc, 1, &put, 1, NULL, 0};
    struct command c2 = {.type = CMD_TXN, .txn = &t2};
    r = apply(&s.fsm, 4, &c2, 1);
    assert_true(r->outcomes[0].succeeded);
    assert_string_equal(get(s.store, "x", NULL), "y");
    side_close(&s);
}

/* Found by fuzzing: committed entries the store would refuse, or a
 * snapshot out of order, must never stop a node. */
static void test_fuzz_regressions(void **state)
{
    (void)state;
    struct side s, b;
    struct fsm_result *r;
    side_open(&s);
    side_open(&b);

    /* An empty key is malformed: the entry is skipped, the node goes on. */
    uint8_t empty_key[16] = {1, 0, 1, 0, 4, 0, 0, 0, CMD_PUT_CAS, 0, 1, 'v',
                             0, 0, 0, 0};
    empty_key[12] = 0; /* cas varint */
    assert_true(command_validate(empty_key, 16) < 0);
    assert_int_equal(fsm_apply_entry(&s.fsm, 1, empty_key, 16, &r), 0);
    assert_int_equal(r->n, 0);

    /* Two INITs in one entry: the first wins, in memory and on disk. */
    struct command two[2] = {{.type = CMD_INIT, .id = 11},
                             {.type = CMD_INIT, .id = 22}};
    apply(&s.fsm, 2, two, 2);
    assert_int_equal(s.fsm.cluster_id, 11);
    side_reopen(&s);
    assert_int_equal(s.fsm.cluster_id, 11);

    /* A snapshot whose keys are out of order is corrupt, not fatal. */
    uint8_t snap[64] = "RKVSNAP1";
    snap[8] = 9;  /* applied index */
    snap[32] = 2; /* two keys, "b" then "a" */
    uint8_t *p = snap + 40;
    const char *keys[2] = {"b", "a"};
    for (int i = 0; i < 2; i++) {
        *p++ = 1;
        *p++ = (uint8_t)keys[i][0];
        *p++ = 1; /* create */
        *p++ = 1; /* mod */
        *p++ = 1; /* version */
        *p++ = 0; /* empty value */
    }
    assert_int_equal(fsm_restore(&b.fsm, snap, (size_t)(p - snap)),
                     RAFT_CORRUPT);
    side_close(&s);
    side_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_put_overwrite_delete),
        cmocka_unit_test(test_replay_is_skipped),
        cmocka_unit_test(test_malformed_entry_skipped),
        cmocka_unit_test(test_init_and_members),
        cmocka_unit_test(test_snapshot_restore_roundtrip),
        cmocka_unit_test(test_corrupt_snapshot_refused),
        cmocka_unit_test(test_snapshot_grows),
        cmocka_unit_test(test_marker_snapshot),
        cmocka_unit_test(test_snapshot_long_keys),
        cmocka_unit_test(test_serialization_runs_beside_the_applies),
        cmocka_unit_test(test_a_serialization_gives_way_to_a_growing_map),
        cmocka_unit_test(test_cas_put_and_delete),
        cmocka_unit_test(test_txn_branches),
        cmocka_unit_test(test_fuzz_regressions),
    };
    return cmocka_run_group_tests_name("fsm", tests, NULL, NULL);
}
