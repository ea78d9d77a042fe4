/* Unit tests for src/epollskip.c: the process's epoll_ctl(), which answers
 * the calls that would change nothing without asking the kernel, and
 * close(), which makes it forget a descriptor.  Each story checks what an
 * epoll set really reports (epoll_wait), not only what epoll_ctl returned:
 * an answer given here must be the one the kernel would have given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <uv.h>

#include "epollskip.h"

struct pair
{
    int a, b; /* a is watched; writing to b makes it readable */
};

static struct pair pair_open(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    return (struct pair){sv[0], sv[1]};
}

static struct epoll_event as_libuv(int fd, uint32_t events)
{
    struct epoll_event e = {0};
    e.events = events;
    e.data.fd = fd;
    return e;
}

/* How many descriptors @ep reports ready within @ms, and whether @fd is. */
static int ready(int ep, int fd, int ms, bool *has_fd)
{
    struct epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, ms);
    *has_fd = false;
    for (int i = 0; i < n; i++)
        if (evs[i].data.fd == fd)
            *has_fd = true;
    return n;
}

static void poke(struct pair p)
{
    assert_int_equal(write(p.b, "x", 1), 1);
}

static void pair_close(struct pair p)
{
    close(p.a);
    close(p.b);
}

/* @fd, and nothing else, becomes ready within a second. */
static void assert_only_ready(int ep, int fd)
{
    bool has;
    assert_int_equal(ready(ep, fd, 1000, &has), 1);
    assert_true(has);
}

/* Nothing is ready now. */
static void assert_none_ready(int ep)
{
    bool has;
    assert_int_equal(ready(ep, -1, 0, &has), 0);
}

/* Every story starts with a fresh epoll set: closing the old one made the
 * module forget it, so the first ADD on the new one adopts it. */
static int setup(void **state)
{
    int *ep = malloc(sizeof *ep);
    *ep = epoll_create1(EPOLL_CLOEXEC);
    assert_true(*ep >= 0);
    *state = ep;
    return 0;
}

static int teardown(void **state)
{
    int *ep = *state;
    close(*ep);
    free(ep);
    return 0;
}

/* libuv's restart after h2o stopped reading: ADD fails with EEXIST, then
 * MOD to the same events.  Both are answered here, with the kernel's
 * answers, and the descriptor still reports readiness. */
static void test_restart_is_answered_here(void **state)
{
    int ep = *(int *)*state;
    struct pair p = pair_open();
    struct epoll_event e = as_libuv(p.a, EPOLLIN);

    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.a, &e), 0);
    unsigned long before = epollskip_answered();
    errno = 0;
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.a, &e), -1);
    assert_int_equal(errno, EEXIST);
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_MOD, p.a, &e), 0);
    assert_int_equal(epollskip_answered() - before, 2);

    assert_none_ready(ep);
    poke(p);
    assert_only_ready(ep, p.a);
    pair_close(p);
}

/* A change of events goes to the kernel, and the new events take. */
static void test_changed_events_reach_the_kernel(void **state)
{
    int ep = *(int *)*state;
    struct pair p = pair_open();
    struct epoll_event in = as_libuv(p.a, EPOLLIN);
    struct epoll_event out = as_libuv(p.a, EPOLLOUT);

    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.a, &in), 0);
    unsigned long before = epollskip_answered();
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_MOD, p.a, &out), 0);
    assert_int_equal(epollskip_answered(), before);
    /* A socket with room to write is ready for EPOLLOUT at once. */
    assert_only_ready(ep, p.a);
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_MOD, p.a, &in), 0);
    assert_none_ready(ep);
    pair_close(p);
}

static void close_by_libc(int fd)
{
    assert_int_equal(close(fd), 0);
}

static void close_by_syscall(int fd) /* the way libuv closes */
{
    assert_int_equal(syscall(SYS_close, (long)fd), 0);
}

/* The watched descriptor is closed by @close_fd without any epoll_ctl, and
 * its number comes back at once for a new socket: the ADD must reach the
 * kernel, or the new socket would never be watched. */
static void closed_number_reused(int ep, void (*close_fd)(int))
{
    struct pair p = pair_open();
    struct epoll_event e = as_libuv(p.a, EPOLLIN);

    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.a, &e), 0);
    int number = p.a;
    close_fd(p.a);
    close(p.b);

    struct pair q = pair_open();
    assert_int_equal(q.a, number);
    e = as_libuv(q.a, EPOLLIN);
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, q.a, &e), 0);
    poke(q);
    assert_only_ready(ep, q.a);
    pair_close(q);
}

static void test_closed_number_reused(void **state)
{
    closed_number_reused(*(int *)*state, close_by_libc);
}

static void test_closed_through_syscall(void **state)
{
    closed_number_reused(*(int *)*state, close_by_syscall);
}

/* An ADD that fails says nothing of the events the kernel holds: the MOD
 * that follows must reach it even when it asks for what the ADD asked. */
static void test_failed_add_leaves_events_unknown(void **state)
{
    int ep = *(int *)*state;
    struct pair p = pair_open();
    struct epoll_event in = as_libuv(p.a, EPOLLIN);
    struct epoll_event out = as_libuv(p.a, EPOLLOUT);

    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.a, &in), 0);
    errno = 0;
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.a, &out), -1);
    assert_int_equal(errno, EEXIST);
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_MOD, p.a, &out), 0);
    assert_only_ready(ep, p.a); /* writable */
    pair_close(p);
}

/* After a DEL the descriptor is out of the set: an ADD must go to the
 * kernel and succeed, not fail with EEXIST. */
static void test_del_then_add(void **state)
{
    int ep = *(int *)*state;
    struct pair p = pair_open();
    struct epoll_event e = as_libuv(p.a, EPOLLIN);

    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.a, &e), 0);
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_DEL, p.a, &e), 0);
    poke(p);
    assert_none_ready(ep);
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.a, &e), 0);
    assert_only_ready(ep, p.a);
    pair_close(p);
}

/* One-shot registrations are re-armed by a MOD with the same events: that
 * MOD must reach the kernel. */
static void test_oneshot_is_rearmed(void **state)
{
    int ep = *(int *)*state;
    struct pair p = pair_open();
    struct epoll_event e = as_libuv(p.a, EPOLLIN | EPOLLONESHOT);
    char c;

    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.a, &e), 0);
    poke(p);
    assert_only_ready(ep, p.a);
    assert_int_equal(read(p.a, &c, 1), 1);
    poke(p);
    assert_none_ready(ep); /* disarmed */
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_MOD, p.a, &e), 0);
    assert_only_ready(ep, p.a);
    pair_close(p);
}

/* A second epoll set is not followed: its calls all reach the kernel. */
static void test_other_set_passes_through(void **state)
{
    int ep = *(int *)*state;
    struct pair p = pair_open();
    struct epoll_event e = as_libuv(p.a, EPOLLIN);

    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, p.b, &e), 0); /* adopt ep */
    int other = epoll_create1(EPOLL_CLOEXEC);
    assert_true(other >= 0);
    assert_int_equal(epoll_ctl(other, EPOLL_CTL_ADD, p.a, &e), 0);
    unsigned long before = epollskip_answered();
    errno = 0;
    assert_int_equal(epoll_ctl(other, EPOLL_CTL_ADD, p.a, &e), -1);
    assert_int_equal(errno, EEXIST);
    assert_int_equal(epoll_ctl(other, EPOLL_CTL_MOD, p.a, &e), 0);
    assert_int_equal(epollskip_answered(), before);
    close(other);
    pair_close(p);
}

/* A real libuv loop: a TCP echo over loopback whose server stops and
 * restarts reading between messages, as h2o does.  Calls get answered
 * here, and every message still arrives. */
struct echo
{
    uv_tcp_t server, conn, client;
    uv_connect_t connect;
    uv_write_t w_client;
    char buf[64];
    int got, rounds;
    bool failed;
};

static void echo_alloc(uv_handle_t *h, size_t size, uv_buf_t *b)
{
    struct echo *e = h->data;
    (void)size;
    *b = uv_buf_init(e->buf, sizeof e->buf);
}

static void echo_send(struct echo *e);

static void echo_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct echo *e = s->data;
    (void)b;
    if (n <= 0) {
        if (n < 0)
            e->failed = true;
        return;
    }
    uv_read_stop(s); /* what h2o does while it handles a request */
    e->got++;
    if (e->got == e->rounds) {
        uv_close((uv_handle_t *)&e->conn, NULL);
        uv_close((uv_handle_t *)&e->client, NULL);
        uv_close((uv_handle_t *)&e->server, NULL);
        return;
    }
    uv_read_start(s, echo_alloc, echo_on_read);
    echo_send(e);
}

static void echo_on_write(uv_write_t *w, int status)
{
    struct echo *e = w->data;
    if (status != 0)
        e->failed = true;
}

static void echo_send(struct echo *e)
{
    uv_buf_t b = uv_buf_init("ping", 4);
    e->w_client.data = e;
    if (uv_write(&e->w_client, (uv_stream_t *)&e->client, &b, 1,
                 echo_on_write) != 0)
        e->failed = true;
}

static void echo_on_connection(uv_stream_t *server, int status)
{
    struct echo *e = server->data;
    if (status != 0 || uv_tcp_init(server->loop, &e->conn) != 0 ||
        uv_accept(server, (uv_stream_t *)&e->conn) != 0) {
        e->failed = true;
        return;
    }
    e->conn.data = e;
    uv_read_start((uv_stream_t *)&e->conn, echo_alloc, echo_on_read);
}

static void echo_on_connect(uv_connect_t *c, int status)
{
    struct echo *e = c->data;
    if (status != 0) {
        e->failed = true;
        return;
    }
    echo_send(e);
}

static void test_libuv_restarts_are_answered(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct echo e = {.rounds = 200};
    struct sockaddr_in addr;
    int len = sizeof addr;

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_tcp_init(&loop, &e.server), 0);
    assert_int_equal(uv_tcp_init(&loop, &e.client), 0);
    e.server.data = e.client.data = e.connect.data = &e;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&e.server, (struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&e.server, 4,
                               echo_on_connection), 0);
    assert_int_equal(uv_tcp_getsockname(&e.server, (struct sockaddr *)&addr,
                                        &len), 0);
    assert_int_equal(uv_tcp_connect(&e.connect, &e.client,
                                    (struct sockaddr *)&addr,
                                    echo_on_connect), 0);
    unsigned long before = epollskip_answered();
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_false(e.failed);
    assert_int_equal(e.got, e.rounds);
    /* Two calls answered per restart, give or take the first and last. */
    assert_true(epollskip_answered() - before >= 2 * (unsigned long)(e.rounds - 2));
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_restart_is_answered_here, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_changed_events_reach_the_kernel,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_number_reused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_closed_through_syscall, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_failed_add_leaves_events_unknown,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_del_then_add, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oneshot_is_rearmed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_other_set_passes_through, setup,
                                        teardown),
        cmocka_unit_test(test_libuv_restarts_are_answered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
