/* bench/lookup.c - what one LMDB point lookup costs in a raftkv store.
 *
 * bench/run.py runs this beside the 64-connection stale reads of its 1M-key
 * phase.  Those reads lose more throughput as the store grows than any other
 * workload; this tells how much of the loss is the B-tree lookup itself, with
 * no HTTP, kernel or load generator around it: a random key of a 1M-key store
 * misses the CPU caches several times on its way down, one of a 1k-key store
 * never does.
 *
 * It opens a node's store read-only, as a second LMDB reader beside the
 * running node (LMDB serves many processes), walks the whole "kv" table once
 * so that every page is mapped, then times mdb_get of random keys
 * rk0000000.. (the names bench/run.py loads; keys under 511 bytes are
 * stored under their own bytes, see STORE_SHORT_KEY in src/store.h).  The
 * key is built by hand, not by snprintf, so that formatting stays a small
 * part of the figure.
 *
 * Usage: lookup DIR KEYS [SECONDS]     DIR: a node's data dir/kv
 * Prints one JSON line: {"ns_per_get":..., "gets":..., "depth":...,
 * "branch_pages":..., "leaf_pages":..., "entries":...}
 * Exit codes: 0 done; 1 the store cannot be read or a key is missing;
 * 2 bad arguments. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lmdb.h>

#define KEY_DIGITS 7

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A small xorshift: rand() takes a lock, and its cost would blur the figure. */
static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void key_name(char out[2 + KEY_DIGITS], unsigned long n)
{
    out[0] = 'r';
    out[1] = 'k';
    for (int i = 2 + KEY_DIGITS - 1; i >= 2; i--) {
        out[i] = (char)('0' + n % 10);
        n /= 10;
    }
}

static int parse_count(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v == 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Touches every entry once: maps every page, and checks the key count. */
static int warm(MDB_txn *txn, MDB_dbi dbi, size_t *entries)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t n = 0;
    int rc;

    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return rc;
    while ((rc = mdb_cursor_get(cur, &k, &v, n ? MDB_NEXT : MDB_FIRST)) == 0)
        n++;
    mdb_cursor_close(cur);
    *entries = n;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int main(int argc, char **argv)
{
    unsigned long keys, seconds = 2;
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_stat st;
    size_t entries, gets = 0;
    uint64_t seed = 0x9e3779b97f4a7c15u;
    volatile unsigned char sink; /* each value is read, as a GET would */
    char name[2 + KEY_DIGITS];
    MDB_val k = {sizeof name, name}, v;
    double t0, t1;
    int rc;

    if (argc < 3 || argc > 4 || parse_count(argv[2], 10000000, &keys) != 0 ||
        (argc == 4 && parse_count(argv[3], 600, &seconds) != 0)) {
        fprintf(stderr, "usage: lookup DIR KEYS [SECONDS]  (KEYS 1..10000000, "
                        "SECONDS 1..600)\n");
        return 2;
    }
    if ((rc = mdb_env_create(&env)) != 0 ||
        (rc = mdb_env_set_maxdbs(env, 8)) != 0 ||
        (rc = mdb_env_open(env, argv[1], MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD,
                           0)) != 0 ||
        (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) != 0 ||
        (rc = mdb_dbi_open(txn, "kv", 0, &dbi)) != 0 ||
        (rc = mdb_stat(txn, dbi, &st)) != 0 ||
        (rc = warm(txn, dbi, &entries)) != 0) {
        fprintf(stderr, "lookup: %s: %s\n", argv[1], mdb_strerror(rc));
        goto err;
    }
    if (entries < keys) {
        fprintf(stderr, "lookup: %s holds %zu keys, fewer than %lu\n", argv[1],
                entries, keys);
        goto err;
    }

    /* Batches of 1024 between clock reads keep the clock out of the figure. */
    t0 = now_s();
    do {
        for (int i = 0; i < 1024; i++) {
            key_name(name, (unsigned long)(next_random(&seed) % keys));
            rc = mdb_get(txn, dbi, &k, &v);
            if (rc != 0) {
                fprintf(stderr, "lookup: %.*s: %s\n", (int)sizeof name, name,
                        mdb_strerror(rc));
                goto err;
            }
            sink = ((const unsigned char *)v.mv_data)[v.mv_size - 1];
        }
        gets += 1024;
        t1 = now_s();
    } while (t1 - t0 < (double)seconds);

    printf("{\"ns_per_get\": %.1f, \"gets\": %zu, \"depth\": %u, "
           "\"branch_pages\": %zu, \"leaf_pages\": %zu, \"entries\": %zu}\n",
           (t1 - t0) * 1e9 / (double)gets, gets, st.ms_depth,
           st.ms_branch_pages, st.ms_leaf_pages, entries);
    (void)sink;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return 0;

err:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (env != NULL)
        mdb_env_close(env);
    return 1;
}
