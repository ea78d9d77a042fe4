/* Unit tests for src/aiodestroy.c: the process's syscall(), which runs
 * io_destroy on a thread of its own and passes every other call through
 * unchanged.  The AIO context really goes away, just not on the caller's
 * time; nothing else about syscall() changes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <linux/aio_abi.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "aiodestroy.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* True once the kernel no longer knows @ctx. */
static bool ctx_gone(aio_context_t ctx)
{
    struct io_event ev;
    struct timespec zero = {0, 0};
    long rv = syscall(SYS_io_getevents, ctx, 0L, 1L, &ev, &zero);
    return rv == -1 && errno == EINVAL;
}

static bool wait_gone(const aio_context_t *ctx, int n, double deadline_s)
{
    double end = now_s() + deadline_s;
    for (;;) {
        bool all = aiodestroy_pending() == 0;
        for (int i = 0; all && i < n; i++)
            all = ctx_gone(ctx[i]);
        if (all)
            return true;
        if (now_s() > end)
            return false;
        usleep(1000);
    }
}

/* A context is made, destroyed through syscall(): the call reports success
 * straight away and the context is gone a little later. */
static void test_destroy_happens_on_a_thread(void **state)
{
    aio_context_t ctx = 0;
    (void)state;

    unsigned long before = aiodestroy_deferred();
    assert_int_equal(syscall(SYS_io_setup, 8L, &ctx), 0);
    assert_false(ctx_gone(ctx));
    assert_int_equal(syscall(SYS_io_destroy, ctx), 0);
    assert_int_equal(aiodestroy_deferred(), before + 1);
    assert_true(wait_gone(&ctx, 1, 10.0));
}

static void io_closed(struct raft_io *io)
{
    *(bool *)io->data = true;
}

/* What it is for: libraft's own io_destroy calls reach it.  Starting a raft
 * uv instance probes the data directory for AIO, which makes and destroys
 * a context. */
static void test_libraft_calls_reach_it(void **state)
{
    char dir[] = "/var/tmp/raftkv-aiodestroy-XXXXXX";
    struct uv_loop_s loop;
    struct raft_uv_transport transport;
    struct raft_io io;
    bool closed = false;
    (void)state;

    assert_non_null(mkdtemp(dir));
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(raft_uv_tcp_init(&transport, &loop), 0);
    assert_int_equal(raft_uv_init(&io, &loop, dir, &transport), 0);
    unsigned long before = aiodestroy_deferred();
    assert_int_equal(io.init(&io, 1, "127.0.0.1:9"), 0);
    assert_true(aiodestroy_deferred() > before);
    io.data = &closed;
    io.close(&io, io_closed);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
    raft_uv_close(&io);
    raft_uv_tcp_close(&transport);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    assert_true(wait_gone(NULL, 0, 10.0));
}

/* Forty at once: more than the threads it keeps waiting, so some are
 * destroyed in place; every one of them goes. */
static void test_many_destroys(void **state)
{
    aio_context_t ctx[40];
    (void)state;

    memset(ctx, 0, sizeof ctx);
    for (int i = 0; i < 40; i++)
        assert_int_equal(syscall(SYS_io_setup, 4L, &ctx[i]), 0);
    for (int i = 0; i < 40; i++)
        assert_int_equal(syscall(SYS_io_destroy, ctx[i]), 0);
    assert_true(wait_gone(ctx, 40, 20.0));
}

/* Any other call goes through with its arguments, result and errno: one
 * without arguments, one failing, one with all six. */
static void test_other_calls_pass_through(void **state)
{
    (void)state;

    assert_int_equal(syscall(SYS_getpid), getpid());

    errno = 0;
    assert_int_equal(syscall(SYS_close, -1L), -1);
    assert_int_equal(errno, EBADF);

    void *p = (void *)syscall(SYS_mmap, NULL, 8192L,
                              (long)(PROT_READ | PROT_WRITE),
                              (long)(MAP_PRIVATE | MAP_ANONYMOUS), -1L, 0L);
    assert_true(p != MAP_FAILED);
    memset(p, 0x5a, 8192);
    assert_int_equal(((unsigned char *)p)[8191], 0x5a);
    assert_int_equal(syscall(SYS_munmap, p, 8192L), 0);
}

/* A bad context: io_destroy's own error is not reported (libraft ignores
 * it too), and nothing is left waiting. */
static void test_bad_context_leaves_nothing_waiting(void **state)
{
    (void)state;
    assert_int_equal(syscall(SYS_io_destroy, 12345L), 0);
    aio_context_t none = 12345;
    assert_true(wait_gone(&none, 1, 10.0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_destroy_happens_on_a_thread),
        cmocka_unit_test(test_libraft_calls_reach_it),
        cmocka_unit_test(test_many_destroys),
        cmocka_unit_test(test_other_calls_pass_through),
        cmocka_unit_test(test_bad_context_leaves_nothing_waiting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
