/* Unit tests for the LMDB store (src/store.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store.h"

struct fixture
{
    char dir[64];
    struct store *s;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/raftkv-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(store_open(&f->s, f->dir, 1 << 20), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    store_close(f->s);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void put(struct store *s, const char *key, const char *value,
                uint64_t index)
{
    struct store_txn t;
    struct store_record rec = {index, index, 1, value, strlen(value)};
    assert_int_equal(store_txn_begin(s, true, &t), 0);
    assert_int_equal(store_kv_put(&t, key, strlen(key), &rec), 0);
    assert_int_equal(store_txn_commit(&t), 0);
}

/* A value written in one transaction is read back with its metadata. */
static void test_put_get_delete(void **state)
{
    struct fixture *f = *state;
    struct store_txn t;
    struct store_record rec;

    put(f->s, "x", "23", 7);
    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_kv_get(&t, "x", 1, &rec), 0);
    assert_int_equal(rec.create_index, 7);
    assert_int_equal(rec.mod_index, 7);
    assert_int_equal(rec.version, 1);
    assert_int_equal(rec.value_len, 2);
    assert_memory_equal(rec.value, "23", 2);
    assert_int_equal(store_kv_get(&t, "y", 1, &rec), STORE_ENOTFOUND);
    store_txn_abort(&t);

    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    assert_int_equal(store_kv_del(&t, "x", 1), 0);
    assert_int_equal(store_kv_del(&t, "x", 1), STORE_ENOTFOUND);
    assert_int_equal(store_txn_commit(&t), 0);
    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_kv_get(&t, "x", 1, &rec), STORE_ENOTFOUND);
    store_txn_abort(&t);
}

/* The bytes that memory limits go by (node.c waits for the writer past
 * STORE_PENDING_MAX) count every value of a key overwritten before the
 * commit, not only the last: each stays in memory until then. */
static void test_pending_bytes_count_overwritten_values(void **state)
{
    struct fixture *f = *state;
    enum { VALUE = 64 * 1024, TIMES = 64 };
    char *value = malloc(VALUE + 1);

    assert_non_null(value);
    memset(value, 'v', VALUE);
    value[VALUE] = '\0';
    for (int i = 0; i < TIMES; i++)
        put(f->s, "hot", value, (uint64_t)i + 1);
    assert_true(store_pending_bytes(f->s) >= (uint64_t)TIMES * VALUE);
    assert_int_equal(store_flush(f->s), 0);
    assert_int_equal(store_pending_bytes(f->s), 0);
    free(value);
}

/* An aborted write transaction leaves nothing behind. */
static void test_abort_discards(void **state)
{
    struct fixture *f = *state;
    struct store_txn t;
    struct store_record rec = {1, 1, 1, "v", 1};
    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    assert_int_equal(store_kv_put(&t, "k", 1, &rec), 0);
    store_txn_abort(&t);
    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_kv_get(&t, "k", 1, &rec), STORE_ENOTFOUND);
    store_txn_abort(&t);
}

/* Keys beyond LMDB's 511-byte limit work exactly, up to 4096 and more,
 * also when two long keys share their first 495 bytes. */
static void test_long_keys(void **state)
{
    struct fixture *f = *state;
    struct store_txn t;
    struct store_record rec;
    size_t sizes[] = {510, 511, 512, 600, 4096, 65535};
    char *a = malloc(65536), *b = malloc(65536);

    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        memset(a, 'a' + (int)i, n); /* no key is a prefix of another */
        memcpy(b, a, n);
        b[n - 1] = 'z'; /* same long prefix, different key */
        struct store_record ra = {1, 1, 1, "A", 1}, rb = {2, 2, 1, "B", 1};
        assert_int_equal(store_txn_begin(f->s, true, &t), 0);
        assert_int_equal(store_kv_put(&t, a, n, &ra), 0);
        assert_int_equal(store_kv_put(&t, b, n, &rb), 0);
        assert_int_equal(store_txn_commit(&t), 0);

        assert_int_equal(store_txn_begin(f->s, false, &t), 0);
        assert_int_equal(store_kv_get(&t, a, n, &rec), 0);
        assert_memory_equal(rec.value, "A", 1);
        assert_int_equal(store_kv_get(&t, b, n, &rec), 0);
        assert_memory_equal(rec.value, "B", 1);
        assert_int_equal(store_kv_get(&t, a, n - 1, &rec), STORE_ENOTFOUND);
        store_txn_abort(&t);
    }
    /* iteration hands back the whole key */
    struct store_cursor c;
    const void *key;
    size_t klen;
    size_t seen_4096 = 0;
    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_cursor_open(&t, STORE_KV, NULL, 0, &c), 0);
    while (store_cursor_next_kv(&c, &key, &klen, &rec) == 1)
        if (klen == 4096)
            seen_4096++;
    store_cursor_close(&c);
    store_txn_abort(&t);
    assert_int_equal(seen_4096, 2);

    memset(a, 'a' + 4, 4096); /* the keys of the 4096-byte round */
    memcpy(b, a, 4096);
    b[4095] = 'z';
    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    assert_int_equal(store_kv_del(&t, a, 4096), 0);
    assert_int_equal(store_kv_get(&t, b, 4096, &rec), 0);
    assert_int_equal(store_kv_put(&t, "", 0, &rec), STORE_EINVAL);
    store_txn_abort(&t);
    free(a);
    free(b);
}

static int cmp_bytes(const void *a, size_t al, const void *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = memcmp(a, b, n);
    return c != 0 ? c : (al > bl) - (al < bl);
}

/* Keys that share their first 495 bytes (stored under prefix + hash when
 * long) still iterate in exact byte order, also from a seek point inside
 * the group, and a snapshot-style bulk load in that order works. */
static void test_long_keys_iterate_in_byte_order(void **state)
{
    struct fixture *f = *state;
    struct store_txn t;
    struct store_cursor c;
    struct store_record rec = {1, 1, 1, "v", 1};
    const void *key, *prev = NULL;
    size_t klen, prev_len = 0;
    char buf[700];
    int n = 0;

    srand(7);
    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    for (int i = 0; i < 200; i++) {
        size_t len = 490 + (size_t)(rand() % 200);
        memset(buf, 'p', len);
        for (size_t j = 480; j < len; j++)
            buf[j] = (char)('a' + rand() % 3);
        assert_int_equal(store_kv_put(&t, buf, len, &rec), 0);
    }
    assert_int_equal(store_kv_put(&t, "a", 1, &rec), 0);
    assert_int_equal(store_kv_put(&t, "q", 1, &rec), 0);
    assert_int_equal(store_txn_commit(&t), 0);

    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_cursor_open(&t, STORE_KV, NULL, 0, &c), 0);
    while (store_cursor_next_kv(&c, &key, &klen, &rec) == 1) {
        if (prev != NULL)
            assert_true(cmp_bytes(prev, prev_len, key, klen) < 0);
        prev = key;
        prev_len = klen;
        n++;
    }
    store_cursor_close(&c);
    assert_true(n > 100);
    assert_memory_equal(prev, "q", 1);

    /* Seek into the middle of the group: nothing below the seek key. */
    memset(buf, 'p', 600);
    memset(buf + 480, 'b', 120);
    assert_int_equal(store_cursor_open(&t, STORE_KV, buf, 600, &c), 0);
    assert_int_equal(store_cursor_next_kv(&c, &key, &klen, &rec), 1);
    assert_true(cmp_bytes(key, klen, buf, 600) >= 0);
    prev = key;
    prev_len = klen;
    while (store_cursor_next_kv(&c, &key, &klen, &rec) == 1) {
        assert_true(cmp_bytes(prev, prev_len, key, klen) < 0);
        prev = key;
        prev_len = klen;
    }
    store_cursor_close(&c);
    store_txn_abort(&t);
}

/* Cursors walk keys in byte order, optionally from a seek point. */
static void test_cursor_order_and_seek(void **state)
{
    struct fixture *f = *state;
    const char *keys[] = {"b", "a", "ab", "c", "aa"};
    const char *sorted[] = {"a", "aa", "ab", "b", "c"};
    struct store_txn t;
    struct store_cursor c;
    struct store_record rec;
    const void *key;
    size_t klen;
    int i = 0;
    uint64_t n;

    for (int k = 0; k < 5; k++)
        put(f->s, keys[k], keys[k], (uint64_t)k + 1);
    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_count(&t, STORE_KV, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(store_cursor_open(&t, STORE_KV, NULL, 0, &c), 0);
    while (store_cursor_next_kv(&c, &key, &klen, &rec) == 1) {
        assert_int_equal(klen, strlen(sorted[i]));
        assert_memory_equal(key, sorted[i], klen);
        i++;
    }
    store_cursor_close(&c);
    assert_int_equal(i, 5);

    assert_int_equal(store_cursor_open(&t, STORE_KV, "ab", 2, &c), 0);
    assert_int_equal(store_cursor_next_kv(&c, &key, &klen, &rec), 1);
    assert_memory_equal(key, "ab", 2);
    assert_int_equal(store_cursor_next_kv(&c, &key, &klen, &rec), 1);
    assert_memory_equal(key, "b", 1);
    store_cursor_close(&c);

    assert_int_equal(store_cursor_open(&t, STORE_KV, "zz", 2, &c), 0);
    assert_int_equal(store_cursor_next_kv(&c, &key, &klen, &rec), 0);
    store_cursor_close(&c);
    store_txn_abort(&t);
}

/* Members and meta values round-trip; members iterate in id order. */
static void test_members_and_meta(void **state)
{
    struct fixture *f = *state;
    struct store_txn t;
    struct store_member m = {.id = 0x0200000000000000ULL, .name = "node2",
                             .name_len = 5, .raft_addr = "127.0.0.1:2223",
                             .raft_addr_len = 14, .http_addr = "",
                             .http_addr_len = 0};
    struct store_member m1 = {.id = 5, .name = "node1", .name_len = 5,
                              .raft_addr = "127.0.0.1:2222",
                              .raft_addr_len = 14,
                              .http_addr = "127.0.0.1:8222",
                              .http_addr_len = 14};
    struct store_member out;
    struct store_cursor c;
    uint64_t v;

    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    assert_int_equal(store_member_put(&t, &m, false), 0);
    assert_int_equal(store_member_put(&t, &m1, false), 0);
    assert_int_equal(store_meta_put(&t, "applied_index", 99), 0);
    assert_int_equal(store_txn_commit(&t), 0);

    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_member_get(&t, m.id, &out), 0);
    assert_int_equal(out.name_len, 5);
    assert_memory_equal(out.name, "node2", 5);
    assert_int_equal(out.http_addr_len, 0);
    assert_int_equal(store_meta_get(&t, "applied_index", &v), 0);
    assert_int_equal(v, 99);
    assert_int_equal(store_meta_get(&t, "nothing", &v), STORE_ENOTFOUND);
    assert_int_equal(store_cursor_open(&t, STORE_MEMBERS, NULL, 0, &c), 0);
    assert_int_equal(store_cursor_next_member(&c, &out), 1);
    assert_int_equal(out.id, 5); /* big-endian keys: numeric order */
    assert_int_equal(store_cursor_next_member(&c, &out), 1);
    assert_true(out.id == m.id);
    assert_int_equal(store_cursor_next_member(&c, &out), 0);
    store_cursor_close(&c);
    store_txn_abort(&t);

    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    assert_int_equal(store_member_del(&t, 5), 0);
    assert_int_equal(store_member_get(&t, 5, &out), STORE_ENOTFOUND);
    assert_int_equal(store_txn_commit(&t), 0);
}

/* Writes never fail for a full map: the map grows before a commit that
 * would not fit, or when the commit finds it full, and the commit is made
 * again.  400 values of 4 KiB go into a 1 MiB map. */
static void test_map_grows_for_a_commit(void **state)
{
    struct fixture *f = *state;
    struct store_txn t;
    struct store_stat st;
    struct store_record got;
    char key[16], *value = malloc(4096);
    struct store_record rec = {1, 1, 1, value, 4096};

    memset(value, 'v', 4096);
    assert_int_equal(store_stat(f->s, &st), 0);
    uint64_t map0 = st.map_bytes;
    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    for (int i = 0; i < 400; i++) {
        snprintf(key, sizeof key, "k%05d", i);
        assert_int_equal(store_kv_put(&t, key, strlen(key), &rec), 0);
    }
    assert_int_equal(store_txn_commit(&t), 0);
    assert_int_equal(store_flush(f->s), 0);
    assert_int_equal(store_stat(f->s, &st), 0);
    assert_true(st.map_bytes > map0);
    assert_true(st.used_bytes > 400 * 4096);
    assert_int_equal(st.keys, 400);
    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_kv_get(&t, "k00399", 6, &got), 0);
    assert_int_equal(got.value_len, 4096);
    store_txn_abort(&t);
    free(value);
}

static bool has(struct store *s, const char *key, const char *want)
{
    struct store_txn t;
    struct store_record rec;
    assert_int_equal(store_txn_begin(s, false, &t), 0);
    int rv = store_kv_get(&t, key, strlen(key), &rec);
    bool ok = rv == 0 && want != NULL && rec.value_len == strlen(want) &&
              memcmp(rec.value, want, rec.value_len) == 0;
    if (rv == STORE_ENOTFOUND && want == NULL)
        ok = true;
    store_txn_abort(&t);
    return ok;
}

static uint64_t keys(struct store *s)
{
    struct store_stat st;
    assert_int_equal(store_stat(s, &st), 0);
    return st.keys;
}

/* A write is read back the same before its commit starts, while the
 * writer thread commits it, after the commit, and after a reopen; a
 * later write of the same key wins over the one being committed. */
static void test_reads_across_a_commit(void **state)
{
    struct fixture *f = *state;

    for (int round = 0; round < 50; round++) {
        char v[16];
        snprintf(v, sizeof v, "v%d", round);
        put(f->s, "k", v, (uint64_t)round + 1);
        put(f->s, "other", "x", (uint64_t)round + 1);
        assert_true(has(f->s, "k", v));
        assert_true(store_commit_start(f->s));
        /* the writer has it; nothing new is pending */
        assert_false(store_commit_start(f->s));
        assert_true(has(f->s, "k", v)); /* in the sealed overlay or LMDB */
        put(f->s, "k", "newer", 1000);
        assert_true(has(f->s, "k", "newer"));
        store_poll(f->s);
        assert_true(has(f->s, "k", "newer"));
        assert_int_equal(keys(f->s), 2);
        assert_int_equal(store_flush(f->s), 0);
        assert_false(store_pending(f->s));
        assert_true(has(f->s, "k", "newer"));
    }
    store_close(f->s);
    assert_int_equal(store_open(&f->s, f->dir, 1 << 20), 0);
    assert_true(has(f->s, "k", "newer"));
    assert_int_equal(keys(f->s), 2);
}

static atomic_int notified;

static void count_notify(void *arg)
{
    (void)arg;
    atomic_fetch_add(&notified, 1);
}

/* A detached read sees the last commit as it was when it began: a write
 * applied before it and not committed, and everything committed after it,
 * stay out of its view.  While it is open the map cannot move, so a commit
 * that finds the map full is kept, not failed; ending the read wakes the
 * loop (the notify callback), and the commit then grows the map and lands.
 * 400 values of 4 KiB into a 1 MiB map, as above. */
static void test_a_detached_read_keeps_its_view_and_holds_the_map(void **state)
{
    struct fixture *f = *state;
    struct store_txn d, t;
    struct store_stat st;
    struct store_record got;
    struct store_cursor c;
    const void *key;
    size_t klen;
    uint64_t n;
    char k[16], *value = malloc(4096);
    struct store_record rec = {3, 3, 1, value, 4096};

    put(f->s, "old", "v1", 1);
    assert_int_equal(store_flush(f->s), 0);
    put(f->s, "applied", "not committed", 2);
    atomic_store(&notified, 0);
    store_set_notify(f->s, count_notify, NULL);
    assert_int_equal(store_txn_begin_detached(f->s, &d), 0);
    assert_int_equal(store_stat(f->s, &st), 0);
    uint64_t map0 = st.map_bytes;

    memset(value, 'v', 4096);
    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    for (int i = 0; i < 400; i++) {
        snprintf(k, sizeof k, "k%05d", i);
        assert_int_equal(store_kv_put(&t, k, strlen(k), &rec), 0);
    }
    assert_int_equal(store_txn_commit(&t), 0);
    assert_true(store_commit_start(f->s));
    /* The writer finds the map full and says so (deadline: 10 s). */
    for (int i = 0; i < 10000 && atomic_load(&notified) == 0; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&notified), 1);
    store_poll(f->s); /* cannot grow the map now: keeps the commit */
    assert_int_equal(store_stat(f->s, &st), 0);
    assert_int_equal(st.map_bytes, map0);
    assert_int_equal(st.keys, 402);
    assert_true(has(f->s, "applied", "not committed"));
    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_kv_get(&t, "k00399", 6, &got), 0);
    store_txn_abort(&t);

    assert_int_equal(store_count(&d, STORE_KV, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_kv_get(&d, "applied", 7, &got), STORE_ENOTFOUND);
    assert_int_equal(store_kv_get(&d, "k00000", 6, &got), STORE_ENOTFOUND);
    assert_int_equal(store_kv_get(&d, "old", 3, &got), 0);
    assert_int_equal(got.value_len, 2);
    assert_memory_equal(got.value, "v1", 2);
    assert_int_equal(store_cursor_open(&d, STORE_KV, NULL, 0, &c), 0);
    assert_int_equal(store_cursor_next_kv(&c, &key, &klen, &got), 1);
    assert_int_equal(klen, 3);
    assert_memory_equal(key, "old", 3);
    assert_int_equal(store_cursor_next_kv(&c, &key, &klen, &got), 0);
    store_cursor_close(&c);

    store_txn_abort(&d);
    assert_int_equal(atomic_load(&notified), 2); /* the loop is woken */
    assert_int_equal(store_flush(f->s), 0);
    assert_int_equal(store_stat(f->s, &st), 0);
    assert_true(st.map_bytes > map0);
    assert_int_equal(st.keys, 402);
    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_kv_get(&t, "k00399", 6, &got), 0);
    assert_int_equal(got.value_len, 4096);
    store_txn_abort(&t);
    store_set_notify(f->s, NULL, NULL);
    free(value);
}

/* Emptying a table hides every key below it at once (committed, being
 * committed, or only applied), counts from zero, and an abort puts all of
 * it back; committed, the table holds only what followed the clear. */
static void test_clear_then_abort_or_commit(void **state)
{
    struct fixture *f = *state;
    struct store_txn t;
    struct store_record rec = {9, 9, 1, "after", 5};
    uint64_t n;

    put(f->s, "committed", "1", 1);
    assert_int_equal(store_flush(f->s), 0);
    put(f->s, "sealed", "2", 2);
    assert_true(store_commit_start(f->s));
    put(f->s, "open", "3", 3);
    assert_int_equal(keys(f->s), 3);

    for (int commit = 0; commit < 2; commit++) {
        assert_int_equal(store_txn_begin(f->s, true, &t), 0);
        assert_int_equal(store_clear(&t, STORE_KV), 0);
        assert_int_equal(store_count(&t, STORE_KV, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(store_kv_get(&t, "committed", 9, &rec),
                         STORE_ENOTFOUND);
        assert_int_equal(store_kv_get(&t, "sealed", 6, &rec),
                         STORE_ENOTFOUND);
        assert_int_equal(store_kv_get(&t, "open", 4, &rec), STORE_ENOTFOUND);
        rec = (struct store_record){9, 9, 1, "after", 5};
        assert_int_equal(store_kv_put(&t, "new", 3, &rec), 0);
        assert_int_equal(store_count(&t, STORE_KV, &n), 0);
        assert_int_equal(n, 1);
        if (commit) {
            assert_int_equal(store_txn_commit(&t), 0);
            break;
        }
        store_txn_abort(&t);
        assert_true(has(f->s, "committed", "1"));
        assert_true(has(f->s, "sealed", "2"));
        assert_true(has(f->s, "open", "3"));
        assert_true(has(f->s, "new", NULL));
        assert_int_equal(keys(f->s), 3);
    }
    assert_true(has(f->s, "committed", NULL));
    assert_true(has(f->s, "new", "after"));
    assert_int_equal(keys(f->s), 1);
    assert_int_equal(store_flush(f->s), 0);
    assert_true(has(f->s, "sealed", NULL));
    assert_true(has(f->s, "open", NULL));
    assert_true(has(f->s, "new", "after"));
    assert_int_equal(keys(f->s), 1);
}

static void del(struct store *s, const char *key)
{
    struct store_txn t;
    assert_int_equal(store_txn_begin(s, true, &t), 0);
    assert_int_equal(store_kv_del(&t, key, strlen(key)), 0);
    assert_int_equal(store_txn_commit(&t), 0);
}

/* A cursor sees the three layers as one: LMDB, the overlay being
 * committed and the open overlay, the newest write of each key winning
 * and deleted keys absent, in byte order, long-key groups spread over the
 * layers included; a seek lands in the middle of it alike. */
static void test_cursor_merges_layers(void **state)
{
    struct fixture *f = *state;
    char key[700], lk[3][700];
    struct store_txn t;
    struct store_cursor c;
    struct store_record rec;
    const void *k;
    size_t klen;

    for (int i = 0; i < 3; i++) { /* same first 495 bytes, longer keys */
        memset(lk[i], 'x', 600);
        lk[i][600] = '\0';
        lk[i][599] = (char)('c' - i);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "k%02d", i);
        put(f->s, key, "L", 1);
    }
    put(f->s, lk[0], "L", 1);
    assert_int_equal(store_flush(f->s), 0);

    put(f->s, "k05", "S", 2); /* the layer handed to the writer */
    del(f->s, "k06");
    put(f->s, "k10", "S", 2);
    put(f->s, lk[1], "S", 2);
    assert_true(store_commit_start(f->s));

    put(f->s, "k07", "A", 3); /* the open layer */
    del(f->s, "k05");
    put(f->s, "k06", "A", 3);
    put(f->s, "k055", "A", 3);
    put(f->s, lk[2], "A", 3);
    del(f->s, lk[0]);

    static const char *want_key[] = {"k00", "k01", "k02", "k03", "k04",
                                     "k055", "k06", "k07", "k08", "k09",
                                     "k10"};
    static const char *want_val = "LLLLLAAALLS";
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(store_txn_begin(f->s, false, &t), 0);
        assert_int_equal(store_cursor_open(&t, STORE_KV, NULL, 0, &c), 0);
        for (int i = 0; i < 11; i++) {
            assert_int_equal(store_cursor_next_kv(&c, &k, &klen, &rec), 1);
            assert_int_equal(klen, strlen(want_key[i]));
            assert_memory_equal(k, want_key[i], klen);
            assert_int_equal(rec.value_len, 1);
            assert_int_equal(((const char *)rec.value)[0], want_val[i]);
        }
        /* the long keys, sorted by the whole key: lk[2] < lk[1] */
        for (int i = 2; i >= 1; i--) {
            assert_int_equal(store_cursor_next_kv(&c, &k, &klen, &rec), 1);
            assert_int_equal(klen, 600);
            assert_memory_equal(k, lk[i], 600);
            assert_int_equal(((const char *)rec.value)[0], i == 2 ? 'A' : 'S');
        }
        assert_int_equal(store_cursor_next_kv(&c, &k, &klen, &rec), 0);
        store_cursor_close(&c);

        assert_int_equal(store_cursor_open(&t, STORE_KV, "k05", 3, &c), 0);
        assert_int_equal(store_cursor_next_kv(&c, &k, &klen, &rec), 1);
        assert_memory_equal(k, "k055", 4);
        store_cursor_close(&c);
        assert_int_equal(store_cursor_open(&t, STORE_KV, lk[1], 600, &c), 0);
        assert_int_equal(store_cursor_next_kv(&c, &k, &klen, &rec), 1);
        assert_memory_equal(k, lk[1], 600);
        assert_int_equal(store_cursor_next_kv(&c, &k, &klen, &rec), 0);
        store_cursor_close(&c);
        store_txn_abort(&t);
        assert_int_equal(keys(f->s), 13);
        /* the second pass reads all of it from LMDB */
        assert_int_equal(store_flush(f->s), 0);
    }
}

/* Data survives closing and reopening the environment. */
static void test_reopen(void **state)
{
    struct fixture *f = *state;
    struct store_txn t;
    struct store_record rec;
    struct store_stat st;

    put(f->s, "durable", "yes", 3);
    store_close(f->s);
    assert_int_equal(store_open(&f->s, f->dir, 1 << 20), 0);
    assert_int_equal(store_txn_begin(f->s, false, &t), 0);
    assert_int_equal(store_kv_get(&t, "durable", 7, &rec), 0);
    assert_memory_equal(rec.value, "yes", 3);
    store_txn_abort(&t);
    assert_int_equal(store_stat(f->s, &st), 0);
    assert_int_equal(st.keys, 1);
    assert_true(st.file_bytes > 0);
}

/* store_clear empties a table in one transaction. */
static void test_clear(void **state)
{
    struct fixture *f = *state;
    struct store_txn t;
    uint64_t n;
    put(f->s, "a", "1", 1);
    put(f->s, "b", "2", 2);
    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    assert_int_equal(store_clear(&t, STORE_KV), 0);
    assert_int_equal(store_count(&t, STORE_KV, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_txn_commit(&t), 0);
}

static void update(struct store *s, const char *key, size_t klen,
                   const char *value, uint64_t index, uint64_t want_create,
                   uint64_t want_version)
{
    struct store_txn t;
    struct store_record rec;
    assert_int_equal(store_txn_begin(s, true, &t), 0);
    assert_int_equal(store_kv_update(&t, key, klen, index, value,
                                     strlen(value), &rec), 0);
    assert_int_equal(rec.create_index, want_create);
    assert_int_equal(rec.mod_index, index);
    assert_int_equal(rec.version, want_version);
    assert_ptr_equal(rec.value, value);
    assert_int_equal(store_txn_commit(&t), 0);
    assert_int_equal(store_txn_begin(s, false, &t), 0);
    assert_int_equal(store_kv_get(&t, key, klen, &rec), 0);
    assert_int_equal(rec.create_index, want_create);
    assert_int_equal(rec.mod_index, index);
    assert_int_equal(rec.version, want_version);
    assert_memory_equal(rec.value, value, strlen(value));
    store_txn_abort(&t);
}

/* An update keeps a key's history wherever its last version lives (just
 * applied, committed to LMDB, after a reopen), for short and long keys,
 * and the key count grows only with new keys, also across an abort. */
static void test_update_keeps_history_and_count(void **state)
{
    struct fixture *f = *state;
    char big[STORE_SHORT_KEY + 40];
    struct store_txn t;
    struct store_record rec;

    memset(big, 'L', sizeof big);
    update(f->s, "k", 1, "one", 5, 5, 1);
    update(f->s, big, sizeof big, "b1", 6, 6, 1);
    assert_int_equal(keys(f->s), 2);
    update(f->s, "k", 1, "two", 7, 5, 2); /* still in the overlay */
    assert_int_equal(store_flush(f->s), 0);
    update(f->s, "k", 1, "three", 8, 5, 3); /* from LMDB */
    update(f->s, big, sizeof big, "b2", 9, 6, 2);
    assert_int_equal(keys(f->s), 2);

    /* an aborted update of a new key leaves neither key nor count */
    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    assert_int_equal(store_kv_update(&t, "n", 1, 10, "x", 1, &rec), 0);
    assert_int_equal(rec.version, 1);
    store_txn_abort(&t);
    assert_int_equal(keys(f->s), 2);

    /* a deleted key starts a new history */
    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    assert_int_equal(store_kv_del(&t, "k", 1), 0);
    assert_int_equal(store_txn_commit(&t), 0);
    assert_int_equal(keys(f->s), 1);
    update(f->s, "k", 1, "again", 11, 11, 1);
    assert_int_equal(keys(f->s), 2);

    assert_int_equal(store_flush(f->s), 0);
    store_close(f->s);
    assert_int_equal(store_open(&f->s, f->dir, 1 << 20), 0);
    assert_int_equal(keys(f->s), 2);
    update(f->s, "k", 1, "reopened", 12, 11, 2);
    update(f->s, big, sizeof big, "b3", 13, 6, 3);
    assert_int_equal(keys(f->s), 2);

    assert_int_equal(store_txn_begin(f->s, true, &t), 0);
    assert_int_equal(store_kv_update(&t, "", 0, 14, "x", 1, &rec), STORE_EINVAL);
    store_txn_abort(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_discards, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_pending_bytes_count_overwritten_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_order_and_seek, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_long_keys_iterate_in_byte_order,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_members_and_meta, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_map_grows_for_a_commit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reads_across_a_commit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_detached_read_keeps_its_view_and_holds_the_map, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_clear_then_abort_or_commit,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_merges_layers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_keeps_history_and_count,
                                        setup, teardown),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
