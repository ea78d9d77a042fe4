/* Unit tests for src/overlay.c: the table of applied writes LMDB has not
 * committed yet.  Reads trust it before LMDB, so it must never lose a
 * write, mix up two tables, or show a deleted key; cursors and the writer
 * trust its order, which must be LMDB's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>

#include "overlay.h"

static void put_str(struct overlay *o, unsigned table, const char *key,
                    const char *value)
{
    void *v;
    assert_int_equal(overlay_put(o, table, key, strlen(key), strlen(value),
                                 &v),
                     0);
    memcpy(v, value, strlen(value));
}

static void assert_value(const struct overlay *o, unsigned table,
                         const char *key, const char *want)
{
    const void *v = NULL;
    size_t n = 0;
    assert_int_equal(overlay_get(o, table, key, strlen(key), &v, &n),
                     OVERLAY_VALUE);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(v, want, n);
}

/* A write is found under its own table and key, and nowhere else. */
static void test_put_then_get(void **state)
{
    struct overlay o;
    (void)state;
    overlay_init(&o);
    assert_int_equal(overlay_get(&o, 0, "a", 1, NULL, NULL), OVERLAY_ABSENT);
    put_str(&o, 0, "a", "one");
    assert_value(&o, 0, "a", "one");
    assert_int_equal(overlay_get(&o, 1, "a", 1, NULL, NULL), OVERLAY_ABSENT);
    assert_int_equal(overlay_get(&o, 0, "ab", 2, NULL, NULL), OVERLAY_ABSENT);
    assert_int_equal(overlay_get(&o, 0, "b", 1, NULL, NULL), OVERLAY_ABSENT);
    assert_int_equal(overlay_len(&o), 1);
    overlay_free(&o);
}

/* The second write of a key replaces the first; an empty value is a value. */
static void test_overwrite_replaces(void **state)
{
    struct overlay o;
    (void)state;
    overlay_init(&o);
    put_str(&o, 0, "k", "first");
    size_t bytes = overlay_bytes(&o);
    put_str(&o, 0, "k", "second!");
    assert_value(&o, 0, "k", "second!");
    assert_int_equal(overlay_len(&o), 1);
    assert_int_equal(overlay_bytes(&o), bytes + 2);
    put_str(&o, 0, "k", "");
    assert_value(&o, 0, "k", "");
    overlay_free(&o);
}

/* A delete hides the key until it is written again. */
static void test_delete_is_a_tombstone(void **state)
{
    struct overlay o;
    (void)state;
    overlay_init(&o);
    assert_int_equal(overlay_del(&o, 0, "gone", 4), 0);
    assert_int_equal(overlay_get(&o, 0, "gone", 4, NULL, NULL),
                     OVERLAY_TOMBSTONE);
    put_str(&o, 0, "gone", "back");
    assert_value(&o, 0, "gone", "back");
    assert_int_equal(overlay_del(&o, 0, "gone", 4), 0);
    assert_int_equal(overlay_get(&o, 0, "gone", 4, NULL, NULL),
                     OVERLAY_TOMBSTONE);
    assert_int_equal(overlay_len(&o), 1);
    overlay_free(&o);
}

/* 200k keys: every one is found with its own value after the table grew
 * many times. */
static void test_many_keys_survive_growth(void **state)
{
    struct overlay o;
    char key[32], val[32];
    (void)state;
    overlay_init(&o);
    for (int i = 0; i < 200000; i++) {
        snprintf(key, sizeof key, "key%d", i);
        snprintf(val, sizeof val, "v%d", i * 7);
        put_str(&o, (unsigned)(i % 3), key, val);
    }
    assert_int_equal(overlay_len(&o), 200000);
    for (int i = 0; i < 200000; i++) {
        snprintf(key, sizeof key, "key%d", i);
        snprintf(val, sizeof val, "v%d", i * 7);
        assert_value(&o, (unsigned)(i % 3), key, val);
        assert_int_equal(overlay_get(&o, (unsigned)((i + 1) % 3), key,
                                     strlen(key), NULL, NULL),
                         OVERLAY_ABSENT);
    }
    overlay_free(&o);
}

/* A value bigger than an arena chunk, between small ones, keeps them all. */
static void test_big_value(void **state)
{
    struct overlay o;
    size_t big = (size_t)1 << 20;
    void *v;
    (void)state;
    overlay_init(&o);
    put_str(&o, 0, "before", "small");
    assert_int_equal(overlay_put(&o, 0, "big", 3, big, &v), 0);
    memset(v, 0xab, big);
    put_str(&o, 0, "after", "small too");
    const void *got;
    size_t n;
    assert_int_equal(overlay_get(&o, 0, "big", 3, &got, &n), OVERLAY_VALUE);
    assert_int_equal(n, big);
    assert_int_equal(((const uint8_t *)got)[0], 0xab);
    assert_int_equal(((const uint8_t *)got)[big - 1], 0xab);
    assert_value(&o, 0, "before", "small");
    assert_value(&o, 0, "after", "small too");
    overlay_free(&o);
}

/* The order is by table, then bytewise with the shorter key first on a
 * common prefix, as LMDB orders keys; a new key makes it stale until the
 * next sort. */
static void test_sorted_like_lmdb(void **state)
{
    static const char *keys[] = {"b", "a", "ab", "\xff", "a\x00z", "aa", "B"};
    static const char *want[] = {"B", "a", "a\x00z", "aa", "ab", "b", "\xff"};
    static const size_t want_len[] = {1, 1, 3, 2, 2, 1, 1};
    struct overlay o;
    void *v;
    (void)state;
    overlay_init(&o);
    for (size_t i = 0; i < 7; i++) {
        size_t len = i == 4 ? 3 : strlen(keys[i]);
        assert_int_equal(overlay_put(&o, 1, keys[i], len, 0, &v), 0);
    }
    put_str(&o, 0, "zzz", "other table, first");
    put_str(&o, 2, "000", "other table, last");
    assert_int_equal(overlay_sort(&o), 0);

    size_t i = overlay_seek(&o, 1, NULL, 0);
    for (size_t j = 0; j < 7; j++, i++) {
        const struct overlay_entry *e = overlay_at(&o, 1, i);
        assert_non_null(e);
        assert_int_equal(e->klen, want_len[j]);
        assert_memory_equal(e->key, want[j], want_len[j]);
    }
    assert_null(overlay_at(&o, 1, i)); /* table 2 starts here */
    assert_non_null(overlay_at(&o, 2, i));
    assert_null(overlay_at(&o, 2, i + 1));

    /* seek lands on the first key at least the one asked for */
    i = overlay_seek(&o, 1, "a\x01", 2);
    assert_memory_equal(overlay_at(&o, 1, i)->key, "aa", 2);
    i = overlay_seek(&o, 1, "ab", 2);
    assert_memory_equal(overlay_at(&o, 1, i)->key, "ab", 2);
    i = overlay_seek(&o, 1, "\xff\x00", 2);
    assert_null(overlay_at(&o, 1, i));
    i = overlay_seek(&o, 0, NULL, 0);
    assert_int_equal(i, 0);
    assert_memory_equal(overlay_at(&o, 0, i)->key, "zzz", 3);

    /* a new key is in the order after the next sort, not before */
    put_str(&o, 1, "ac", "new");
    assert_int_equal(overlay_sort(&o), 0);
    i = overlay_seek(&o, 1, "ab", 2);
    assert_memory_equal(overlay_at(&o, 1, i + 1)->key, "ac", 2);
    /* an overwrite or a delete does not move anything */
    assert_int_equal(overlay_del(&o, 1, "ac", 2), 0);
    assert_int_equal(overlay_sort(&o), 0);
    assert_true(overlay_at(&o, 1, i + 1)->tomb);
    overlay_free(&o);
}

/* After a reset nothing is found, and the overlay fills again. */
static void test_reset_forgets(void **state)
{
    struct overlay o;
    char key[16];
    (void)state;
    overlay_init(&o);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5000; i++) {
            snprintf(key, sizeof key, "r%dk%d", round, i);
            put_str(&o, 0, key, key);
        }
        assert_int_equal(overlay_sort(&o), 0);
        assert_int_equal(overlay_len(&o), 5000);
        overlay_reset(&o);
        assert_int_equal(overlay_len(&o), 0);
        assert_int_equal(overlay_bytes(&o), 0);
        snprintf(key, sizeof key, "r%dk%d", round, 7);
        assert_int_equal(overlay_get(&o, 0, key, strlen(key), NULL, NULL),
                         OVERLAY_ABSENT);
        assert_null(overlay_at(&o, 0, overlay_seek(&o, 0, NULL, 0)));
    }
    overlay_free(&o);
}

/* A rollback puts back, key by key, what the overlay held at the mark:
 * an old value, a tombstone, or nothing at all. */
static void test_rollback_to_mark(void **state)
{
    struct overlay o;
    char key[16];
    (void)state;
    overlay_init(&o);
    put_str(&o, 0, "kept", "old");
    put_str(&o, 0, "changed", "old");
    assert_int_equal(overlay_del(&o, 0, "deleted", 7), 0);
    put_str(&o, 0, "revived", "x");
    assert_int_equal(overlay_del(&o, 0, "revived", 7), 0);
    assert_int_equal(overlay_sort(&o), 0);
    size_t bytes = overlay_bytes(&o);

    assert_int_equal(overlay_mark(&o), 0);
    assert_int_equal(overlay_mark(&o), -EBUSY);
    put_str(&o, 0, "changed", "new");
    put_str(&o, 0, "changed", "newer");
    put_str(&o, 0, "deleted", "back");
    put_str(&o, 0, "revived", "alive");
    assert_int_equal(overlay_del(&o, 0, "kept", 4), 0);
    for (int i = 0; i < 3000; i++) { /* enough to grow the table */
        snprintf(key, sizeof key, "new%d", i);
        put_str(&o, 1, key, "n");
    }
    assert_int_equal(overlay_sort(&o), 0);
    overlay_rollback(&o);

    assert_value(&o, 0, "kept", "old");
    assert_value(&o, 0, "changed", "old");
    assert_int_equal(overlay_get(&o, 0, "deleted", 7, NULL, NULL),
                     OVERLAY_TOMBSTONE);
    assert_int_equal(overlay_get(&o, 0, "revived", 7, NULL, NULL),
                     OVERLAY_TOMBSTONE);
    assert_int_equal(overlay_get(&o, 1, "new7", 4, NULL, NULL),
                     OVERLAY_ABSENT);
    assert_int_equal(overlay_len(&o), 4);
    assert_int_equal(overlay_bytes(&o), bytes);
    /* the order holds the four again, and nothing of table 1 */
    assert_int_equal(overlay_sort(&o), 0);
    assert_null(overlay_at(&o, 1, overlay_seek(&o, 1, NULL, 0)));
    size_t i = overlay_seek(&o, 0, NULL, 0);
    assert_memory_equal(overlay_at(&o, 0, i)->key, "changed", 7);
    assert_memory_equal(overlay_at(&o, 0, i + 3)->key, "revived", 7);
    assert_null(overlay_at(&o, 0, i + 4));

    /* the mark is gone: a new one can be set, and released keeps writes */
    assert_int_equal(overlay_mark(&o), 0);
    put_str(&o, 0, "kept", "for good");
    overlay_release(&o);
    overlay_rollback(&o); /* no mark: nothing to do */
    assert_value(&o, 0, "kept", "for good");
    overlay_free(&o);
}

/* Keys the store can never hold are refused, and change nothing. */
/* Overwrites of one key: overlay_bytes counts the last value only (what a
 * commit writes), overlay_held_bytes every value the arena still holds
 * (what memory limits must go by); a reset gives both back. */
static void test_overwrites_are_held_until_reset(void **state)
{
    struct overlay o;
    enum { VALUE = 64 * 1024, TIMES = 64 };
    (void)state;

    overlay_init(&o);
    for (int i = 0; i < TIMES; i++) {
        void *v;
        assert_int_equal(overlay_put(&o, 0, "hot", 3, VALUE, &v), 0);
        memset(v, i, VALUE);
    }
    assert_true(overlay_bytes(&o) < 2 * VALUE);
    assert_true(overlay_held_bytes(&o) >= (size_t)TIMES * VALUE);
    assert_int_equal(overlay_del(&o, 0, "hot", 3), 0);
    assert_true(overlay_held_bytes(&o) >= (size_t)TIMES * VALUE);
    overlay_reset(&o);
    assert_int_equal(overlay_bytes(&o), 0);
    assert_int_equal(overlay_held_bytes(&o), 0);
    overlay_free(&o);
}

static void test_bad_keys_refused(void **state)
{
    struct overlay o;
    void *v;
    (void)state;
    overlay_init(&o);
    assert_int_equal(overlay_put(&o, 0, "", 0, 1, &v), -EINVAL);
    assert_int_equal(overlay_del(&o, 0, "", 0), -EINVAL);
    assert_int_equal(overlay_put(&o, 256, "k", 1, 1, &v), -EINVAL);
    assert_int_equal(overlay_len(&o), 0);
    assert_int_equal(overlay_get(&o, 0, "", 0, NULL, NULL), OVERLAY_ABSENT);
    overlay_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_then_get),
        cmocka_unit_test(test_overwrite_replaces),
        cmocka_unit_test(test_delete_is_a_tombstone),
        cmocka_unit_test(test_many_keys_survive_growth),
        cmocka_unit_test(test_big_value),
        cmocka_unit_test(test_sorted_like_lmdb),
        cmocka_unit_test(test_reset_forgets),
        cmocka_unit_test(test_rollback_to_mark),
        cmocka_unit_test(test_overwrites_are_held_until_reset),
        cmocka_unit_test(test_bad_keys_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
