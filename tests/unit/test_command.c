/* Unit tests for the log command encoding (src/command.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <malloc.h>
#include <stdio.h>
#include <raft.h>

#include "command.h"

static struct command_bytes B(const char *s)
{
    return (struct command_bytes){(const uint8_t *)s, strlen(s)};
}

static bool bytes_eq(struct command_bytes b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.base, s, b.len) == 0;
}

/* Encode a batch of every command type, decode it back field by field. */
static void test_roundtrip_every_type(void **state)
{
    (void)state;
    struct command in[6] = {
        {.type = CMD_PUT, .key = B("x"), .value = B("23")},
        {.type = CMD_DELETE, .key = B("gone")},
        {.type = CMD_INIT, .id = 0xfedcba9876543210ULL},
        {.type = CMD_MEMBER_PUT,
         .id = 42,
         .name = B("node2"),
         .raft_addr = B("127.0.0.1:2223"),
         .http_addr = B("")},
        {.type = CMD_MEMBER_DEL, .id = UINT64_MAX},
        {.type = CMD_NOOP},
    };
    uint8_t buf[256];
    long len = command_encode(in, 6, buf, sizeof buf);
    assert_true(len > 0);
    assert_int_equal(len % 8, 0);
    assert_int_equal((size_t)len, command_encoded_size(in, 6));

    struct command_iter it;
    struct command c;
    assert_int_equal(command_iter_init(&it, buf, (size_t)len), 6);
    assert_int_equal(command_iter_next(&it, &c), 1);
    assert_int_equal(c.type, CMD_PUT);
    assert_true(bytes_eq(c.key, "x") && bytes_eq(c.value, "23"));
    assert_int_equal(command_iter_next(&it, &c), 1);
    assert_int_equal(c.type, CMD_DELETE);
    assert_true(bytes_eq(c.key, "gone"));
    assert_int_equal(command_iter_next(&it, &c), 1);
    assert_int_equal(c.type, CMD_INIT);
    assert_true(c.id == 0xfedcba9876543210ULL);
    assert_int_equal(command_iter_next(&it, &c), 1);
    assert_int_equal(c.type, CMD_MEMBER_PUT);
    assert_true(c.id == 42 && bytes_eq(c.name, "node2") &&
                bytes_eq(c.raft_addr, "127.0.0.1:2223") && c.http_addr.len == 0);
    assert_int_equal(command_iter_next(&it, &c), 1);
    assert_int_equal(c.type, CMD_MEMBER_DEL);
    assert_true(c.id == UINT64_MAX);
    assert_int_equal(command_iter_next(&it, &c), 1);
    assert_int_equal(c.type, CMD_NOOP);
    assert_int_equal(command_iter_next(&it, &c), 0);
    assert_int_equal(command_validate(buf, (size_t)len), 6);
}

/* Every entry is padded to a multiple of 8 (libraft 0.15 needs it), for
 * every payload length, and the padding is zeros. */
static void test_padding_every_length(void **state)
{
    (void)state;
    char value[64];
    memset(value, 'v', sizeof value);
    for (size_t vlen = 0; vlen < sizeof value; vlen++) {
        struct command c = {.type = CMD_PUT, .key = B("k"),
                            .value = {(const uint8_t *)value, vlen}};
        void *base;
        size_t len;
        assert_int_equal(command_encode_alloc(&c, 1, &base, &len), 0);
        assert_int_equal(len % 8, 0);
        /* header 8 + type 1 + klen 1 + key 1 + vlen 1 + value */
        size_t used = 8 + 4 + vlen;
        assert_true(len >= used && len - used < 8);
        for (size_t i = used; i < len; i++)
            assert_int_equal(((uint8_t *)base)[i], 0);
        assert_int_equal(command_validate(base, len), 1);
        raft_free(base);
    }
}

/* Large values use multi-byte varints and still round-trip. */
static void test_large_value(void **state)
{
    (void)state;
    size_t vlen = 1 << 20;
    char *value = malloc(vlen);
    for (size_t i = 0; i < vlen; i++)
        value[i] = (char)(i * 7);
    struct command c = {.type = CMD_PUT, .key = B("big"),
                        .value = {(const uint8_t *)value, vlen}};
    void *base;
    size_t len;
    assert_int_equal(command_encode_alloc(&c, 1, &base, &len), 0);
    struct command_iter it;
    struct command d;
    assert_int_equal(command_iter_init(&it, base, len), 1);
    assert_int_equal(command_iter_next(&it, &d), 1);
    assert_int_equal(d.value.len, vlen);
    assert_memory_equal(d.value.base, value, vlen);
    raft_free(base);
    free(value);
}

/* Requests added to one batch come out as one entry, in order, and the
 * entry's buffer is cut to its length: libraft keeps it in memory until a
 * snapshot passes it, so doubling slack would be resident too. */
static void test_batch_is_one_entry_cut_to_size(void **state)
{
    (void)state;
    char key[16], value[200];
    struct command_batch b;
    void *base;
    size_t len;

    memset(value, 'v', sizeof value);
    command_batch_init(&b);
    assert_int_equal(command_batch_finish(&b, &base, &len), COMMAND_EMALFORMED);
    for (unsigned i = 0; i < 40; i++) { /* ~5 KiB in all: grown to 8 KiB */
        snprintf(key, sizeof key, "k%02u", i);
        struct command c = {.type = CMD_PUT, .key = B(key),
                            .value = {(const uint8_t *)value, 100 + i}};
        assert_int_equal(command_batch_add(&b, &c, 1), 0);
    }
    assert_int_equal(command_batch_finish(&b, &base, &len), 0);
    assert_int_equal(len % 8, 0);
    assert_true(len > 4096);
    assert_true(malloc_usable_size(base) < len + 64);

    struct command_iter it;
    struct command d;
    assert_int_equal(command_iter_init(&it, base, len), 40);
    for (unsigned i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "k%02u", i);
        assert_int_equal(command_iter_next(&it, &d), 1);
        assert_true(bytes_eq(d.key, key));
        assert_int_equal(d.value.len, 100 + i);
    }
    assert_int_equal(command_iter_next(&it, &d), 0);
    raft_free(base);
}

/* Every truncation of a valid entry (every shorter length) is rejected
 * without reading out of bounds: copies go to exact-size heap buffers so
 * that AddressSanitizer sees any overread. */
static void test_truncated_everywhere(void **state)
{
    (void)state;
    struct command in[2] = {
        {.type = CMD_PUT, .key = B("alpha"), .value = B("bravo charlie")},
        {.type = CMD_MEMBER_PUT, .id = 300, .name = B("n"),
         .raft_addr = B("1.2.3.4:5"), .http_addr = B("1.2.3.4:6")},
    };
    uint8_t buf[128];
    long len = command_encode(in, 2, buf, sizeof buf);
    assert_true(len > 0);
    for (long cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? (size_t)cut : 1);
        memcpy(copy, buf, (size_t)cut);
        assert_true(command_validate(copy, (size_t)cut) < 0);
        free(copy);
    }
}

/* Headers that lie are rejected: version, flags, zero count, a payload
 * length beyond the buffer, non-zero padding, too much padding. */
static void test_bad_headers(void **state)
{
    (void)state;
    struct command c = {.type = CMD_DELETE, .key = B("k")};
    uint8_t good[16], bad[24];
    long len = command_encode(&c, 1, good, sizeof good);
    assert_int_equal(len, 16);

    memcpy(bad, good, 16);
    bad[0] = 2;
    assert_int_equal(command_validate(bad, 16), COMMAND_EVERSION);
    memcpy(bad, good, 16);
    bad[1] = 1;
    assert_int_equal(command_validate(bad, 16), COMMAND_EVERSION);
    memcpy(bad, good, 16);
    bad[2] = bad[3] = 0;
    assert_int_equal(command_validate(bad, 16), COMMAND_EMALFORMED);
    memcpy(bad, good, 16);
    bad[4] = 0xff;
    assert_int_equal(command_validate(bad, 16), COMMAND_EMALFORMED);
    memcpy(bad, good, 16);
    bad[15] = 1; /* padding byte */
    assert_int_equal(command_validate(bad, 16), COMMAND_EMALFORMED);
    memcpy(bad, good, 16);
    memset(bad + 16, 0, 8); /* a whole extra block of padding */
    assert_int_equal(command_validate(bad, 24), COMMAND_EMALFORMED);
    assert_int_equal(command_validate(good, 12), COMMAND_EMALFORMED);
}

/* The count says 2 but only one command is there; or 1 with bytes left. */
static void test_count_mismatch(void **state)
{
    (void)state;
    struct command two[2] = {{.type = CMD_DELETE, .key = B("a")},
                             {.type = CMD_DELETE, .key = B("b")}};
    uint8_t buf[32];
    long len = command_encode(two, 2, buf, sizeof buf);
    assert_true(len > 0);
    buf[2] = 1; /* claims one command: trailing bytes */
    assert_int_equal(command_validate(buf, (size_t)len), COMMAND_EMALFORMED);
    buf[2] = 3; /* claims three: runs out */
    assert_int_equal(command_validate(buf, (size_t)len), COMMAND_EMALFORMED);
}

static void test_unknown_type(void **state)
{
    (void)state;
    struct command c = {.type = CMD_DELETE, .key = B("k")};
    uint8_t buf[16];
    assert_int_equal(command_encode(&c, 1, buf, sizeof buf), 16);
    buf[8] = 99;
    assert_int_equal(command_validate(buf, 16), COMMAND_ETYPE);
    /* and the encoder refuses what it cannot encode */
    c.type = (enum command_type)99;
    assert_int_equal(command_encode(&c, 1, buf, sizeof buf),
                     COMMAND_EMALFORMED);
}

/* A varint longer than 64 bits, and a string length past the end. */
static void test_bad_varints(void **state)
{
    (void)state;
    uint8_t buf[24] = {1, 0, 1, 0, 12, 0, 0, 0, CMD_INIT, 0xff, 0xff, 0xff,
                       0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0};
    assert_int_equal(command_validate(buf, 24), COMMAND_EMALFORMED);
    uint8_t buf2[16] = {1, 0, 1, 0, 3, 0, 0, 0, CMD_DELETE, 0x7f, 'k', 0};
    assert_int_equal(command_validate(buf2, 16), COMMAND_EMALFORMED);
}

/* Fuzz-ish: random bytes never crash the decoder. */
static void test_random_garbage(void **state)
{
    (void)state;
    srand(1234);
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(rand() % 64);
        uint8_t *buf = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rand();
        if (len >= 8 && rand() % 2) {
            buf[0] = COMMAND_VERSION;
            buf[1] = 0;
        }
        (void)command_validate(buf, len);
        free(buf);
    }
}

static void test_encode_refuses_small_buffer(void **state)
{
    (void)state;
    struct command c = {.type = CMD_PUT, .key = B("k"), .value = B("v")};
    uint8_t buf[8];
    assert_int_equal(command_encode(&c, 1, buf, sizeof buf),
                     COMMAND_EMALFORMED);
    assert_int_equal(command_encode(&c, 0, buf, sizeof buf),
                     COMMAND_EMALFORMED);
}

/* A transaction round-trips: compares of every kind, both op lists, and
 * the reader walks them in order even when the success list is empty. */
static void test_txn_roundtrip(void **state)
{
    (void)state;
    struct command_compare cmps[3] = {
        {.kind = CMP_MOD_INDEX, .key = B("a"), .number = 5},
        {.kind = CMP_VERSION, .key = B("b"), .number = 0},
        {.kind = CMP_VALUE, .key = B("c"), .value = B("text")},
    };
    struct command_op fail[2] = {
        {.kind = OP_GET, .key = B("a")},
        {.kind = OP_PUT, .key = B("d"), .value = B("vv")},
    };
    struct command_txn txn = {cmps, 3, NULL, 0, fail, 2};
    struct command in[2] = {
        {.type = CMD_TXN, .txn = &txn},
        {.type = CMD_PUT_CAS, .key = B("k"), .value = B("v"), .cas = 300},
    };
    uint8_t buf[256];
    long len = command_encode(in, 2, buf, sizeof buf);
    assert_true(len > 0 && len % 8 == 0);

    struct command_iter it;
    struct command c;
    struct command_txn_reader rd;
    struct command_compare cmp;
    struct command_op op;
    assert_int_equal(command_iter_init(&it, buf, (size_t)len), 2);
    assert_int_equal(command_iter_next(&it, &c), 1);
    assert_int_equal(c.type, CMD_TXN);
    assert_int_equal(c.n_compares, 3);
    assert_int_equal(c.n_success, 0);
    assert_int_equal(c.n_failure, 2);
    command_txn_reader_init(&rd, &c);
    command_txn_next_compare(&rd, &cmp);
    assert_true(cmp.kind == CMP_MOD_INDEX && cmp.number == 5);
    command_txn_next_compare(&rd, &cmp);
    assert_true(cmp.kind == CMP_VERSION && bytes_eq(cmp.key, "b"));
    command_txn_next_compare(&rd, &cmp);
    assert_true(cmp.kind == CMP_VALUE && bytes_eq(cmp.value, "text"));
    command_txn_next_op(&rd, &op);
    assert_true(op.kind == OP_GET && bytes_eq(op.key, "a"));
    command_txn_next_op(&rd, &op);
    assert_true(op.kind == OP_PUT && bytes_eq(op.value, "vv"));
    assert_int_equal(command_iter_next(&it, &c), 1);
    assert_true(c.type == CMD_PUT_CAS && c.cas == 300);
    assert_int_equal(command_iter_next(&it, &c), 0);

    for (long cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? (size_t)cut : 1);
        memcpy(copy, buf, (size_t)cut);
        assert_true(command_validate(copy, (size_t)cut) < 0);
        free(copy);
    }
}

/* A transaction whose counts promise more than the bytes hold, or with an
 * unknown op kind, is malformed. */
static void test_txn_lies(void **state)
{
    (void)state;
    struct command_op ok = {.kind = OP_DELETE, .key = B("z")};
    struct command_txn txn = {NULL, 0, &ok, 1, NULL, 0};
    struct command c = {.type = CMD_TXN, .txn = &txn};
    uint8_t buf[32];
    long len = command_encode(&c, 1, buf, sizeof buf);
    assert_true(len > 0);
    /* payload: type, n_cmp=0, n_succ=1, op kind at offset 11 */
    buf[11] = 9;
    assert_int_equal(command_validate(buf, (size_t)len), COMMAND_EMALFORMED);
    buf[11] = OP_DELETE;
    buf[10] = 100; /* n_success far beyond the bytes */
    assert_int_equal(command_validate(buf, (size_t)len), COMMAND_EMALFORMED);
    struct command_op bad = {.kind = (enum command_op_kind)7, .key = B("z")};
    txn.success = &bad;
    assert_int_equal(command_encode(&c, 1, buf, sizeof buf),
                     COMMAND_EMALFORMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_padding_every_length),
        cmocka_unit_test(test_large_value),
        cmocka_unit_test(test_batch_is_one_entry_cut_to_size),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_count_mismatch),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_bad_varints),
        cmocka_unit_test(test_random_garbage),
        cmocka_unit_test(test_encode_refuses_small_buffer),
        cmocka_unit_test(test_txn_roundtrip),
        cmocka_unit_test(test_txn_lies),
    };
    return cmocka_run_group_tests_name("command", tests, NULL, NULL);
}
