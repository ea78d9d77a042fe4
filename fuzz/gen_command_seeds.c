/* gen_command_seeds.c - writes the seed corpus of fuzz_command.
 *
 *   build/gen_command_seeds DIR
 *
 * Seeds are produced by the real encoder (command_encode) and the real
 * snapshot writer (fsm_snapshot_full) rather than typed in as bytes, so that
 * they stay valid if the encoding ever changes: rerun and commit the result.
 * The malformed seeds are valid ones with one thing broken, each aimed at
 * one check of the decoder or the snapshot parser.
 *
 * Left out on purpose: inputs of findings (an empty key, two CMD_INIT in
 * one entry, snapshot keys out of order or repeated).  They live in
 * fuzz/regressions/, where they stay even once fixed. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "command.h"
#include "fsm.h"
#include "log.h"
#include "store.h"

static const char *outdir;

static void write_file(const char *name, const void *p, size_t len)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", outdir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "gen_command_seeds: %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static struct command_bytes B(const char *s)
{
    return (struct command_bytes){(const uint8_t *)s, strlen(s)};
}

static struct command_bytes BN(const void *p, size_t n)
{
    return (struct command_bytes){p, n};
}

/* Encode @cmds into a fresh buffer; exits on failure (a generator bug). */
static uint8_t *encode(const struct command *cmds, unsigned n, size_t *len)
{
    size_t cap = command_encoded_size(cmds, n);
    uint8_t *buf = malloc(cap + 64); /* room for the malformed variants */
    long rv;

    if (buf == NULL)
        exit(1);
    memset(buf, 0, cap + 64);
    rv = command_encode(cmds, n, buf, cap);
    if (rv < 0 || command_validate(buf, (size_t)rv) != (int)n) {
        fprintf(stderr, "gen_command_seeds: encoding failed (%ld)\n", rv);
        exit(1);
    }
    *len = (size_t)rv;
    return buf;
}

static void seed(const char *name, const struct command *cmds, unsigned n)
{
    size_t len;
    uint8_t *buf = encode(cmds, n, &len);
    write_file(name, buf, len);
    free(buf);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* --- valid entries ------------------------------------------------------- */

static uint8_t long_a[600], long_b[600], binary[256];

static const struct command_compare txn_cmps[] = {
    {.kind = CMP_MOD_INDEX, .key = {(const uint8_t *)"a", 1}, .number = 0},
    {.kind = CMP_VERSION, .key = {(const uint8_t *)"b", 1}, .number = 0},
    {.kind = CMP_VALUE, .key = {(const uint8_t *)"c", 1},
     .value = {(const uint8_t *)"text", 4}},
};
static const struct command_op txn_success[] = {
    {.kind = OP_PUT, .key = {(const uint8_t *)"a", 1},
     .value = {(const uint8_t *)"1", 1}},
    {.kind = OP_GET, .key = {(const uint8_t *)"a", 1}},
    {.kind = OP_DELETE, .key = {(const uint8_t *)"b", 1}},
    {.kind = OP_PUT, .key = {(const uint8_t *)"d", 1},
     .value = {(const uint8_t *)"\x00\x01", 2}},
};
static const struct command_op txn_failure[] = {
    {.kind = OP_GET, .key = {(const uint8_t *)"a", 1}},
    {.kind = OP_PUT, .key = {(const uint8_t *)"failed", 6},
     .value = {(const uint8_t *)"yes", 3}},
};

static const struct command_txn txn_mixed = {
    txn_cmps, 3, txn_success, 4, txn_failure, 2};
/* Holds for a fresh store: "a" absent, "b" absent. */
static const struct command_txn txn_fresh = {
    txn_cmps, 2, txn_success, 4, txn_failure, 2};
static const struct command_txn txn_empty = {NULL, 0, NULL, 0, NULL, 0};
static const struct command_txn txn_only_failure = {
    txn_cmps + 2, 1, NULL, 0, txn_failure, 2};

static void valid_entries(void)
{
    for (size_t i = 0; i < sizeof long_a; i++)
        long_a[i] = long_b[i] = (uint8_t)('a' + i % 26);
    long_b[sizeof long_b - 1] = 'Z'; /* same 495-byte prefix, other hash */
    for (size_t i = 0; i < sizeof binary; i++)
        binary[i] = (uint8_t)i;

    struct command put = {.type = CMD_PUT, .key = B("greeting"),
                          .value = B("hello")};
    seed("put", &put, 1);
    struct command put_empty = {.type = CMD_PUT, .key = B("k"),
                                .value = B("")};
    seed("put-empty-value", &put_empty, 1);
    struct command put_bin = {.type = CMD_PUT, .key = B("bin"),
                              .value = BN(binary, sizeof binary)};
    seed("put-binary-value", &put_bin, 1);
    struct command put_utf8 = {.type = CMD_PUT, .key = B("cl\xc3\xa9/\xe2\x82\xac"),
                               .value = B("utf-8 key")};
    seed("put-utf8-key", &put_utf8, 1);
    struct command put_long = {.type = CMD_PUT,
                               .key = BN(long_a, sizeof long_a),
                               .value = B("long")};
    seed("put-long-key", &put_long, 1);
    struct command two_long[] = {
        {.type = CMD_PUT, .key = BN(long_a, sizeof long_a), .value = B("A")},
        {.type = CMD_PUT, .key = BN(long_b, sizeof long_b), .value = B("B")},
        {.type = CMD_PUT, .key = BN(long_a, 511), .value = B("511")},
        {.type = CMD_PUT, .key = BN(long_a, 510), .value = B("510")},
        {.type = CMD_DELETE, .key = BN(long_a, sizeof long_a)},
    };
    seed("batch-long-keys-shared-prefix", two_long, 5);

    struct command del = {.type = CMD_DELETE, .key = B("greeting")};
    seed("delete", &del, 1);
    struct command init = {.type = CMD_INIT, .id = 0x1234567890abcdefull};
    seed("init", &init, 1);
    struct command init_max = {.type = CMD_INIT, .id = UINT64_MAX};
    seed("init-max-id", &init_max, 1);
    struct command mput = {.type = CMD_MEMBER_PUT, .id = 42,
                           .name = B("node1"),
                           .raft_addr = B("127.0.0.1:2222"),
                           .http_addr = B("127.0.0.1:8222")};
    seed("member-put", &mput, 1);
    struct command mput_nohttp = {.type = CMD_MEMBER_PUT, .id = 43,
                                  .name = B("node2"),
                                  .raft_addr = B("127.0.0.1:2223")};
    seed("member-put-no-http", &mput_nohttp, 1);
    struct command mput_zero = {.type = CMD_MEMBER_PUT, .id = 0,
                                .name = B("zero"),
                                .raft_addr = B("127.0.0.1:1")};
    seed("member-put-id-zero", &mput_zero, 1);
    struct command mdel = {.type = CMD_MEMBER_DEL, .id = 42};
    seed("member-del", &mdel, 1);

    struct command cas = {.type = CMD_PUT_CAS, .key = B("greeting"),
                          .value = B("v2"), .cas = 1};
    seed("put-cas", &cas, 1);
    struct command cas0 = {.type = CMD_PUT_CAS, .key = B("fresh"),
                           .value = B("v"), .cas = 0};
    seed("put-cas-absent", &cas0, 1);
    struct command cas_max = {.type = CMD_PUT_CAS, .key = B("greeting"),
                              .value = B("v"), .cas = UINT64_MAX};
    seed("put-cas-max", &cas_max, 1);
    struct command dcas = {.type = CMD_DELETE_CAS, .key = B("greeting"),
                           .cas = 5};
    seed("delete-cas", &dcas, 1);
    struct command dcas0 = {.type = CMD_DELETE_CAS, .key = B("nothing"),
                            .cas = 0};
    seed("delete-cas-absent", &dcas0, 1);

    struct command txn = {.type = CMD_TXN, .txn = &txn_mixed};
    seed("txn-mixed", &txn, 1);
    struct command txn2 = {.type = CMD_TXN, .txn = &txn_fresh};
    seed("txn-success", &txn2, 1);
    struct command txn3 = {.type = CMD_TXN, .txn = &txn_empty};
    seed("txn-empty", &txn3, 1);
    struct command txn4 = {.type = CMD_TXN, .txn = &txn_only_failure};
    seed("txn-failure-only", &txn4, 1);

    /* A batch that exercises state within one entry: later commands see
     * what earlier ones wrote, and results of two transactions follow one
     * another. */
    struct command batch[] = {
        {.type = CMD_PUT, .key = B("a"), .value = B("1")},
        {.type = CMD_PUT, .key = B("b"), .value = B("2")},
        {.type = CMD_PUT, .key = B("a"), .value = B("3")},
        {.type = CMD_DELETE, .key = B("b")},
        {.type = CMD_TXN, .txn = &txn_mixed},
        {.type = CMD_PUT_CAS, .key = B("c"), .value = B("text"), .cas = 0},
        {.type = CMD_TXN, .txn = &txn_mixed},
        {.type = CMD_DELETE_CAS, .key = B("c"), .cas = 0},
        {.type = CMD_MEMBER_PUT, .id = 7, .name = B("n7"),
         .raft_addr = B("10.0.0.7:2222"), .http_addr = B("")},
        {.type = CMD_MEMBER_DEL, .id = 7},
        {.type = CMD_INIT, .id = 99},
    };
    seed("batch-mixed", batch, sizeof batch / sizeof batch[0]);

    struct command group[8];
    char keys[8][8];
    for (int i = 0; i < 8; i++) {
        snprintf(keys[i], sizeof keys[i], "g%d", i);
        group[i] = (struct command){.type = CMD_PUT, .key = B(keys[i]),
                                    .value = B(keys[i])};
    }
    seed("batch-group-commit", group, 8);
}

/* --- malformed entries ------------------------------------------------------ */

/* Fix up the header's payload length and padding for a hand-edited body. */
static void malformed_entries(void)
{
    struct command put = {.type = CMD_PUT, .key = B("key"), .value = B("value")};
    size_t len;
    uint8_t *buf = encode(&put, 1, &len), *copy = malloc(len + 64);

    write_file("bad-short", buf, 3);
    write_file("bad-not-multiple-of-8", buf, len - 1);

    memcpy(copy, buf, len);
    copy[0] = 2;
    write_file("bad-version", copy, len);

    memcpy(copy, buf, len);
    copy[1] = 1;
    write_file("bad-flags", copy, len);

    memcpy(copy, buf, len);
    copy[2] = copy[3] = 0;
    write_file("bad-zero-count", copy, len);

    memcpy(copy, buf, len);
    copy[2] = 2; /* says two commands, holds one */
    write_file("bad-count-too-high", copy, len);

    memcpy(copy, buf, len);
    put_u32(copy + 4, 1000);
    write_file("bad-payload-length", copy, len);

    memcpy(copy, buf, len);
    copy[len - 1] = 0xff; /* padding must be zero */
    write_file("bad-nonzero-padding", copy, len);

    memcpy(copy, buf, len);
    memset(copy + len, 0, 8);
    write_file("bad-padding-of-8", copy, len + 8);

    memcpy(copy, buf, len);
    copy[8] = 9; /* command type */
    write_file("bad-type", copy, len);

    memcpy(copy, buf, len);
    copy[9] = 100; /* key length beyond the payload */
    write_file("bad-key-length", copy, len);

    /* Two commands' worth of payload under a count of one. */
    struct command two[] = {put, put};
    uint8_t *b2 = encode(two, 2, &len);
    b2[2] = 1;
    write_file("bad-trailing-command", b2, len);
    free(b2);

    /* An id of 11 varint bytes (more than 64 bits). */
    uint8_t overflow[24] = {COMMAND_VERSION, 0, 1, 0, 12, 0, 0, 0, CMD_INIT};
    memset(overflow + 9, 0xff, 10);
    overflow[19] = 0x01;
    write_file("bad-varint-overflow", overflow, sizeof overflow);
    /* Exactly 64 bits, the largest id: valid. */
    uint8_t max64[24] = {COMMAND_VERSION, 0, 1, 0, 11, 0, 0, 0, CMD_INIT};
    memset(max64 + 9, 0xff, 9);
    max64[18] = 0x01;
    write_file("init-varint-64-bits", max64, sizeof max64);

    /* Transactions: counts beyond the bytes left, unknown kinds. */
    struct command txn = {.type = CMD_TXN, .txn = &txn_mixed};
    uint8_t *t = encode(&txn, 1, &len);
    memcpy(copy, t, len);
    copy[9] = 0x7f; /* n_compares */
    write_file("bad-txn-count", copy, len);
    memcpy(copy, t, len);
    copy[10] = 9; /* first compare's kind */
    write_file("bad-txn-compare-kind", copy, len);
    /* first success op kind: after the compares */
    size_t at = 9 + 1 + (1 + 2 + 1) + (1 + 2 + 1) + (1 + 2 + 5) + 1;
    memcpy(copy, t, len);
    copy[at] = 0;
    write_file("bad-txn-op-kind", copy, len);
    free(t);

    free(copy);
    free(buf);
}

/* --- snapshots ------------------------------------------------------------- */

static void apply(struct fsm *f, uint64_t index, const struct command *cmds,
                  unsigned n)
{
    size_t len;
    uint8_t *buf = encode(cmds, n, &len);
    struct fsm_result *res;
    if (fsm_apply_entry(f, index, buf, len, &res) != 0) {
        fprintf(stderr, "gen_command_seeds: apply failed\n");
        exit(1);
    }
    free(buf);
}

static uint8_t *take(struct fsm *f, size_t *len)
{
    void *data;

    if (fsm_snapshot_full(f, &data, len) != 0)
        exit(1);
    return data;
}

static void snapshots(void)
{
    char dir[] = "/tmp/raftkv-gen-XXXXXX", cmd[256];
    struct store *s;
    struct fsm f;
    size_t len;
    uint8_t *snap, *copy;

    if (mkdtemp(dir) == NULL || store_open(&s, dir, 1 << 20) != 0 ||
        fsm_init(&f, s) != 0)
        exit(1);

    struct command init = {.type = CMD_INIT, .id = 0xfeedface};
    apply(&f, 1, &init, 1);
    snap = take(&f, &len);
    write_file("snapshot-empty", snap, len);
    raft_free(snap);

    struct command cmds[] = {
        {.type = CMD_MEMBER_PUT, .id = 42, .name = B("node1"),
         .raft_addr = B("127.0.0.1:2222"), .http_addr = B("127.0.0.1:8222")},
        {.type = CMD_MEMBER_PUT, .id = 1ull << 63, .name = B("node2"),
         .raft_addr = B("127.0.0.1:2223"), .http_addr = B("")},
        {.type = CMD_PUT, .key = B("a"), .value = B("1")},
        {.type = CMD_PUT, .key = B("b"), .value = BN(binary, sizeof binary)},
        {.type = CMD_PUT, .key = BN(long_a, sizeof long_a), .value = B("A")},
        {.type = CMD_PUT, .key = BN(long_b, sizeof long_b), .value = B("B")},
        {.type = CMD_PUT, .key = B("z"), .value = B("")},
    };
    apply(&f, 2, cmds, sizeof cmds / sizeof cmds[0]);
    struct command again = {.type = CMD_PUT, .key = B("a"), .value = B("2")};
    apply(&f, 3, &again, 1);
    snap = take(&f, &len);
    write_file("snapshot-full", snap, len);

    copy = malloc(len + 1);
    memcpy(copy, snap, len);
    copy[0] = 'X';
    write_file("snapshot-bad-magic", copy, len);
    write_file("snapshot-short-header", snap, 39);
    write_file("snapshot-truncated", snap, len - 1);
    memcpy(copy, snap, len);
    copy[len] = 0;
    write_file("snapshot-trailing-byte", copy, len + 1);
    memcpy(copy, snap, len);
    copy[32] = 0xff; /* n_keys far beyond the data */
    write_file("snapshot-count-too-high", copy, len);
    memcpy(copy, snap, len);
    memset(copy + 8, 0, 8); /* applied index 0: never newer than a store */
    write_file("snapshot-not-newer", copy, len);
    free(copy);
    raft_free(snap);

    fsm_close(&f);
    store_close(s);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_command_seeds DIR\n");
        return 2;
    }
    outdir = argv[1];
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "gen_command_seeds: %s: %s\n", outdir,
                strerror(errno));
        return 1;
    }
    log_set_level(LOG_ERROR);
    valid_entries();
    malformed_entries();
    snapshots();
    return 0;
}
