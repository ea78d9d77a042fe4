/* Unit tests for src/snapsend.c: what a leader sends a follower in place of
 * a snapshot marker, and how that work meets libraft's close.  libraft's
 * I/O is a fake that hands snapsend a snapshot when the test says so; the
 * store, the state machine and the libuv loop (whose thread pool runs the
 * serialization) are real. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "command.h"
#include "fsm.h"
#include "snapsend.h"

/* libraft's side: its I/O, and what its callbacks were given. */
struct world
{
    char dir[64];
    struct store *store;
    struct fsm fsm;
    uv_loop_t loop;
    struct raft_io io;
    struct snapsend snapsend;
    struct raft_io_snapshot_get get;
    raft_io_snapshot_get_cb get_done; /* snapsend's, for the read in hand */
    int real_closes;
    /* what snapsend answered the get with */
    int answers;
    int status;
    void *data;
    size_t len;
};

static struct world *W;

static int fake_snapshot_get(struct raft_io *io,
                             struct raft_io_snapshot_get *req,
                             raft_io_snapshot_get_cb cb)
{
    (void)io;
    W->get_done = cb;
    (void)req;
    return 0;
}

static void fake_close(struct raft_io *io, raft_io_close_cb cb)
{
    (void)io;
    (void)cb;
    W->real_closes++;
}

/* libraft's sendSnapshotGetCb, as far as the test cares. */
static void answered(struct raft_io_snapshot_get *req,
                     struct raft_snapshot *snap, int status)
{
    assert_ptr_equal(req, &W->get);
    W->answers++;
    W->status = status;
    if (snap == NULL)
        return;
    assert_int_equal(snap->n_bufs, 1);
    W->data = snap->bufs[0].base; /* kept: the test reads it */
    W->len = snap->bufs[0].len;
    raft_configuration_close(&snap->configuration);
    raft_free(snap->bufs);
    raft_free(snap);
}

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/raftkv-snapsend-XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    assert_int_equal(store_open(&w->store, w->dir, 1 << 20), 0);
    assert_int_equal(fsm_init(&w->fsm, w->store), 0);
    assert_int_equal(uv_loop_init(&w->loop), 0);
    w->io.snapshot_get = fake_snapshot_get;
    w->io.close = fake_close;
    snapsend_install(&w->snapsend, &w->io, &w->fsm, &w->loop);
    W = w;
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    char cmd[128];
    assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
    snapsend_release(&w->snapsend);
    assert_int_equal(uv_loop_close(&w->loop), 0);
    raft_free(w->data);
    fsm_close(&w->fsm);
    store_close(w->store);
    snprintf(cmd, sizeof cmd, "rm -rf %s", w->dir);
    assert_int_equal(system(cmd), 0);
    free(w);
    return 0;
}

/* Commands at log indexes 1..@n: key-<i> = "v". */
static void write_keys(struct fsm *f, int n)
{
    for (int i = 1; i <= n; i++) {
        char key[16];
        uint8_t buf[64];
        snprintf(key, sizeof key, "key-%d", i);
        struct command c = {.type = CMD_PUT,
                            .key = {(const uint8_t *)key, strlen(key)},
                            .value = {(const uint8_t *)"v", 1}};
        struct fsm_result *res = NULL;
        long len = command_encode(&c, 1, buf, sizeof buf);
        assert_true(len > 0);
        assert_int_equal(
            fsm_apply_entry(f, (uint64_t)i, buf, (size_t)len, &res), 0);
    }
}

/* Ask snapsend for the snapshot at libraft index @index, and have libraft's
 * read of the file come back with @marker (copied). */
static void get_and_read(struct world *w, uint64_t index,
                         const void *marker, size_t len)
{
    struct raft_snapshot *snap = raft_calloc(1, sizeof *snap);
    assert_int_equal(w->io.snapshot_get(&w->io, &w->get, answered), 0);
    assert_non_null(w->get_done);
    snap->index = index;
    snap->term = 1;
    raft_configuration_init(&snap->configuration);
    snap->bufs = raft_malloc(sizeof *snap->bufs);
    snap->bufs[0].base = raft_malloc(len);
    memcpy(snap->bufs[0].base, marker, len);
    snap->bufs[0].len = len;
    snap->n_bufs = 1;
    w->get_done(&w->get, snap, 0);
}

static void take_marker(struct world *w, struct raft_buffer **bufs)
{
    unsigned n;
    assert_int_equal(fsm_snapshot_take(&w->fsm, bufs, &n), 0);
    assert_int_equal(n, 1);
}

/* libraft's index for a snapshot counts configuration entries and
 * barriers, which never reach the store: a snapshot taken just after one
 * has a higher index than the marker it holds.  The store is still whole
 * as of that snapshot, and is sent, as of the last command. */
static void test_a_snapshot_taken_after_a_configuration_entry_is_sent(
    void **state)
{
    struct world *w = *state;
    struct raft_buffer *marker;
    struct store_txn t;
    uint64_t n;

    write_keys(&w->fsm, 10);
    take_marker(w, &marker);
    get_and_read(w, 12, marker[0].base, marker[0].len);
    fsm_snapshot_free(marker, 1);
    assert_int_equal(w->answers, 0); /* it runs on the thread pool */
    assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(w->answers, 1);
    assert_int_equal(w->status, 0);
    assert_false(fsm_snapshot_is_marker(w->data, w->len));

    /* It restores to the ten keys, at index 10. */
    struct store *other;
    struct fsm f2;
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/raftkv-snapsend-XXXXXX");
    assert_non_null(mkdtemp(dir));
    assert_int_equal(store_open(&other, dir, 1 << 20), 0);
    assert_int_equal(fsm_init(&f2, other), 0);
    assert_int_equal(fsm_restore(&f2, w->data, w->len), 0);
    assert_int_equal(f2.applied_index, 10);
    assert_int_equal(store_txn_begin(other, false, &t), 0);
    assert_int_equal(store_count(&t, STORE_KV, &n), 0);
    store_txn_abort(&t);
    assert_int_equal(n, 10);
    fsm_close(&f2);
    store_close(other);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* A marker that claims more than the store holds is never sent: the
 * follower would skip the commands in between. */
static void test_a_store_behind_its_marker_is_not_sent(void **state)
{
    struct world *w = *state;
    struct raft_buffer *marker;

    write_keys(&w->fsm, 10);
    take_marker(w, &marker);
    uint8_t *m = marker[0].base;
    m[8] = 20; /* the marker's applied index, little-endian: now 20 */
    get_and_read(w, 20, marker[0].base, marker[0].len);
    fsm_snapshot_free(marker, 1);
    assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(w->answers, 1);
    assert_int_equal(w->status, RAFT_IOERR);
    assert_null(w->data);
}

/* libraft closes its I/O while a serialization runs: the real close waits
 * until it has ended, and the get is answered RAFT_CANCELED (there is
 * nobody left to send it to) before the close goes ahead. */
static void test_close_waits_for_a_running_serialization(void **state)
{
    struct world *w = *state;
    struct raft_buffer *marker;

    write_keys(&w->fsm, 10);
    take_marker(w, &marker);
    get_and_read(w, 10, marker[0].base, marker[0].len);
    fsm_snapshot_free(marker, 1);
    w->io.close(&w->io, NULL);
    assert_int_equal(w->real_closes, 0);
    assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(w->answers, 1);
    assert_int_equal(w->status, RAFT_CANCELED);
    assert_int_equal(w->real_closes, 1);
}

/* libraft's own read of the file can end after its close began (the close
 * waits for it): no serialization starts then, the get is answered
 * RAFT_CANCELED at once. */
static void test_a_read_ending_after_close_began_is_canceled(void **state)
{
    struct world *w = *state;
    struct raft_buffer *marker;

    write_keys(&w->fsm, 10);
    take_marker(w, &marker);
    assert_int_equal(w->io.snapshot_get(&w->io, &w->get, answered), 0);
    w->io.close(&w->io, NULL);
    assert_int_equal(w->real_closes, 1); /* nothing of ours running */
    raft_io_snapshot_get_cb done = w->get_done;
    struct raft_snapshot *snap = raft_calloc(1, sizeof *snap);
    raft_configuration_init(&snap->configuration);
    snap->index = 10;
    snap->bufs = raft_malloc(sizeof *snap->bufs);
    snap->bufs[0] = marker[0];
    snap->n_bufs = 1;
    raft_free(marker); /* the buffer now belongs to snap */
    done(&w->get, snap, 0);
    assert_int_equal(w->answers, 1);
    assert_int_equal(w->status, RAFT_CANCELED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_snapshot_taken_after_a_configuration_entry_is_sent, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_store_behind_its_marker_is_not_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_close_waits_for_a_running_serialization, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_read_ending_after_close_began_is_canceled, setup,
            teardown),
    };
    return cmocka_run_group_tests_name("snapsend", tests, NULL, NULL);
}
