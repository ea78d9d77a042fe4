/* test_confirm.c - leadership rounds (confirm.c) against fake voters.
 *
 * A fake voter is a TCP listener on the test's loop that answers each
 * request it reads according to its mood: yes (200), no (409), never, by
 * hanging up, with garbage, or with a yes split over two writes.  Each test
 * starts rounds, runs the loop until they end (a deadline timer stops a hung
 * test), and checks how each round ended and what the voters were asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "confirm.h"

#define SELF_ID 424242u
#define CLUSTER 0xc1u
#define TERM 7u

enum mood { YES, NO, SILENT, HANG_UP, GARBAGE, SPLIT_YES };

static const char yes_answer[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    "Content-Length: 10\r\n\r\n{\"term\":7}";
static const char no_answer[] =
    "HTTP/1.1 409 Conflict\r\ncontent-length: 11\r\n\r\n{\"term\":99}";

struct voter
{
    uv_tcp_t listener;
    uv_tcp_t peer; /* one connection at a time is all confirm.c opens */
    bool has_peer;
    enum mood mood;
    char addr[32];
    char in[8192];
    size_t in_len;
    int connections, requests;
    char first_request[256];
    uv_timer_t split_timer;
};

static uv_loop_t loop;

/* --- the fake voter ----------------------------------------------------------- */

static void voter_send(struct voter *v, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    /* Small answers to an idle socket: the kernel takes them whole. */
    assert_int_equal(uv_try_write((uv_stream_t *)&v->peer, &b, 1), (int)len);
}

static void split_rest(uv_timer_t *t)
{
    struct voter *v = t->data;
    voter_send(v, yes_answer + 20, sizeof yes_answer - 1 - 20);
}

static void peer_closed(uv_handle_t *h)
{
    struct voter *v = h->data;
    v->has_peer = false;
}

static void voter_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct voter *v = h->data;
    (void)hint;
    *buf = uv_buf_init(v->in + v->in_len, (unsigned)(sizeof v->in - v->in_len));
}

static void voter_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct voter *v = s->data;
    char *end;
    (void)buf;

    if (nread < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, peer_closed);
        return;
    }
    v->in_len += (size_t)nread;
    while ((end = memmem(v->in, v->in_len, "\r\n\r\n", 4)) != NULL) {
        size_t len = (size_t)(end + 4 - v->in);
        if (v->requests++ == 0)
            snprintf(v->first_request, sizeof v->first_request, "%.*s",
                     (int)len, v->in);
        memmove(v->in, v->in + len, v->in_len - len);
        v->in_len -= len;
        switch (v->mood) {
        case YES:
            voter_send(v, yes_answer, sizeof yes_answer - 1);
            break;
        case NO:
            voter_send(v, no_answer, sizeof no_answer - 1);
            break;
        case SILENT:
            break;
        case HANG_UP:
            uv_close((uv_handle_t *)s, peer_closed);
            return;
        case GARBAGE:
            voter_send(v, "SPDY/3 OK\r\n\r\n", 13);
            break;
        case SPLIT_YES:
            voter_send(v, yes_answer, 20);
            uv_timer_start(&v->split_timer, split_rest, 5, 0);
            break;
        }
    }
}

static void voter_accept(uv_stream_t *server, int status)
{
    struct voter *v = server->data;
    assert_int_equal(status, 0);
    assert_false(v->has_peer);
    uv_tcp_init(&loop, &v->peer);
    v->peer.data = v;
    assert_int_equal(uv_accept(server, (uv_stream_t *)&v->peer), 0);
    v->has_peer = true;
    v->connections++;
    v->in_len = 0;
    uv_read_start((uv_stream_t *)&v->peer, voter_alloc, voter_read);
}

static void voter_start(struct voter *v, enum mood mood)
{
    struct sockaddr_in sa;
    struct sockaddr_storage name;
    int len = sizeof name;

    memset(v, 0, sizeof *v);
    v->mood = mood;
    uv_tcp_init(&loop, &v->listener);
    v->listener.data = v;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&v->listener, (struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&v->listener, 8, voter_accept),
                     0);
    uv_tcp_getsockname(&v->listener, (struct sockaddr *)&name, &len);
    snprintf(v->addr, sizeof v->addr, "127.0.0.1:%d",
             ntohs(((struct sockaddr_in *)&name)->sin_port));
    uv_timer_init(&loop, &v->split_timer);
    v->split_timer.data = v;
}

static void voter_stop(struct voter *v)
{
    uv_close((uv_handle_t *)&v->listener, NULL);
    uv_close((uv_handle_t *)&v->split_timer, NULL);
    if (v->has_peer && !uv_is_closing((uv_handle_t *)&v->peer))
        uv_close((uv_handle_t *)&v->peer, peer_closed);
}

/* A port nobody listens on: bind one, note it, close it. */
static void closed_port_addr(char *out, size_t len)
{
    static struct voter v; /* closing handles must outlive this call */
    voter_start(&v, YES);
    snprintf(out, len, "%s", v.addr);
    voter_stop(&v);
    uv_run(&loop, UV_RUN_NOWAIT);
}

/* --- rounds ------------------------------------------------------------------- */

struct outcome
{
    struct confirm_round round;
    int result;
    int calls;
    uint64_t ended_ms;
};

static int rounds_open;

static void round_cb(struct confirm_round *r, int result)
{
    struct outcome *o = r->data;
    o->calls++;
    o->result = result;
    o->ended_ms = uv_now(&loop);
    rounds_open--;
}

static int start(struct confirm *c, struct outcome *o,
                 const struct confirm_peer *peers, unsigned n, unsigned need)
{
    memset(o, 0, sizeof *o);
    o->result = -1;
    int rv = confirm_start(c, &o->round, CLUSTER, TERM, peers, n, need,
                           round_cb, o);
    if (rv == 0)
        rounds_open++;
    return rv;
}

static void deadline_cb(uv_timer_t *t)
{
    (void)t;
    fail_msg("a round did not end within the deadline");
}

/* Run the loop until every started round has ended. */
static void run_rounds(void)
{
    uv_timer_t deadline;
    uv_timer_init(&loop, &deadline);
    uv_timer_start(&deadline, deadline_cb, 5000, 0);
    while (rounds_open > 0)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(&loop, UV_RUN_NOWAIT); /* the close completes: it is on the stack */
}

static void stop_timer(uv_timer_t *t) { uv_timer_stop(t); }

/* Run the loop a little longer: late answers, closes. */
static void run_for(uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, stop_timer, ms, 0);
    while (uv_is_active((uv_handle_t *)&t))
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_NOWAIT); /* the close completes: it is on the stack */
}

/* Close everything and check that nothing is left on the loop. */
static void teardown_all(struct confirm *c, struct voter *voters, unsigned n)
{
    confirm_close(c);
    for (unsigned i = 0; i < n; i++)
        voter_stop(&voters[i]);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
}

static int setup(void **state)
{
    (void)state;
    rounds_open = 0;
    return uv_loop_init(&loop);
}

static int teardown(void **state)
{
    (void)state;
    return uv_loop_close(&loop);
}

/* --- the stories -------------------------------------------------------------- */

/* Two voters who both still follow: one yes is enough for a round that
 * needs one, and each voter is asked once, with the cluster, this node's
 * term and id, and the id of the voter meant. */
static void test_majority_says_yes(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v[2];
    struct outcome o;
    char want[256];

    voter_start(&v[0], YES);
    voter_start(&v[1], YES);
    confirm_init(&c, &loop, SELF_ID, 200);
    struct confirm_peer peers[] = {{1, v[0].addr}, {2, v[1].addr}};
    assert_int_equal(start(&c, &o, peers, 2, 1), 0);
    run_rounds();
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.result, CONFIRM_OK);
    run_for(20); /* the second yes arrives after the round ended */
    assert_int_equal(o.calls, 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(v[i].requests, 1);
        snprintf(want, sizeof want,
                 "GET /v1/internal/confirm?cluster=%016x&term=%u&leader=%u"
                 "&voter=%d HTTP/1.1\r\nHost: %s\r\n\r\n",
                 CLUSTER, TERM, SELF_ID, i + 1, v[i].addr);
        assert_string_equal(v[i].first_request, want);
    }
    assert_int_equal(c.requests, 2);
    teardown_all(&c, v, 2);
}

/* One voter says no, the other yes: a round needing one yes succeeds; a
 * round needing both is refused as soon as the no arrives. */
static void test_one_no(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v[2];
    struct outcome one, both;

    voter_start(&v[0], NO);
    voter_start(&v[1], YES);
    confirm_init(&c, &loop, SELF_ID, 200);
    struct confirm_peer peers[] = {{1, v[0].addr}, {2, v[1].addr}};
    assert_int_equal(start(&c, &one, peers, 2, 1), 0);
    assert_int_equal(start(&c, &both, peers, 2, 2), 0);
    run_rounds();
    assert_int_equal(one.result, CONFIRM_OK);
    assert_int_equal(both.result, CONFIRM_REFUSED);
    assert_int_equal(one.calls + both.calls, 2);
    teardown_all(&c, v, 2);
}

/* A voter that never answers: the round ends with a timeout, not before
 * the timeout has passed. */
static void test_silent_voter_times_out(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v;
    struct outcome o;

    voter_start(&v, SILENT);
    confirm_init(&c, &loop, SELF_ID, 60);
    struct confirm_peer peers[] = {{1, v.addr}};
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(start(&c, &o, peers, 1, 1), 0);
    run_rounds();
    assert_int_equal(o.result, CONFIRM_TIMEOUT);
    assert_true(o.ended_ms - t0 >= 60);
    assert_int_equal(v.requests, 1);
    teardown_all(&c, &v, 1);
}

/* A voter nobody listens for: a round that can do without it succeeds; one
 * that needs it is refused once the connect fails; for a while after that
 * the voter is not tried again, so a round needing it cannot even start. */
static void test_unreachable_voter(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v;
    struct outcome one, both, again;
    char dead[32];

    closed_port_addr(dead, sizeof dead);
    voter_start(&v, YES);
    confirm_init(&c, &loop, SELF_ID, 500);
    struct confirm_peer peers[] = {{1, dead}, {2, v.addr}};
    assert_int_equal(start(&c, &one, peers, 2, 1), 0);
    assert_int_equal(start(&c, &both, peers, 2, 2), 0);
    run_rounds();
    assert_int_equal(one.result, CONFIRM_OK);
    assert_int_equal(both.result, CONFIRM_REFUSED);
    assert_int_equal(start(&c, &again, peers, 2, 2), CONFIRM_EUNAVAILABLE);
    assert_int_equal(again.calls, 0);
    assert_int_equal(start(&c, &again, peers, 2, 1), 0);
    run_rounds();
    assert_int_equal(again.result, CONFIRM_OK);
    teardown_all(&c, &v, 1);
}

/* Rounds started back to back share one connection, pipelined, and end in
 * the order they started; the pipeline has a limit, past which a voter
 * cannot be asked until it answers. */
static void test_pipelined_rounds(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v;
    struct outcome o[CONFIRM_PIPELINE + 1];

    voter_start(&v, YES);
    confirm_init(&c, &loop, SELF_ID, 500);
    struct confirm_peer peers[] = {{1, v.addr}};
    for (int i = 0; i < CONFIRM_PIPELINE; i++)
        assert_int_equal(start(&c, &o[i], peers, 1, 1), 0);
    assert_int_equal(start(&c, &o[CONFIRM_PIPELINE], peers, 1, 1),
                     CONFIRM_EUNAVAILABLE);
    run_rounds();
    for (int i = 0; i < CONFIRM_PIPELINE; i++) {
        assert_int_equal(o[i].result, CONFIRM_OK);
        assert_int_equal(o[i].calls, 1);
        if (i > 0)
            assert_true(o[i].round.seq > o[i - 1].round.seq);
    }
    assert_int_equal(v.connections, 1);
    assert_int_equal(v.requests, CONFIRM_PIPELINE);
    /* Answered: the voter can be asked again, on the same connection. */
    assert_int_equal(start(&c, &o[0], peers, 1, 1), 0);
    run_rounds();
    assert_int_equal(o[0].result, CONFIRM_OK);
    assert_int_equal(v.connections, 1);
    teardown_all(&c, &v, 1);
}

/* A voter that goes silent while another answers every round at once:
 * each round ends well on the other's yes, before any timeout, yet the
 * silent one is cut once its oldest question is 4 timeouts old and, after
 * a pause, asked again on a new connection. */
static void test_silent_voter_cut_while_others_answer(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v[2];
    struct outcome o;

    voter_start(&v[0], SILENT);
    voter_start(&v[1], YES);
    confirm_init(&c, &loop, SELF_ID, 40);
    struct confirm_peer peers[] = {{1, v[0].addr}, {2, v[1].addr}};
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    /* Rounds every 10 ms: its pipeline fills, and it stays full. */
    while (v[0].connections < 2) {
        assert_true(uv_now(&loop) - t0 < 2000);
        assert_int_equal(start(&c, &o, peers, 2, 1), 0);
        run_rounds();
        assert_int_equal(o.result, CONFIRM_OK);
        run_for(10);
    }
    /* Cut no sooner than 4 timeouts after its first question, then the
     * pause of one timeout before it is tried again. */
    assert_true(uv_now(&loop) - t0 >= 5 * 40);
    assert_int_equal(v[1].connections, 1);
    teardown_all(&c, v, 2);
}

/* An answer that arrives in two pieces is put together. */
static void test_answer_in_pieces(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v;
    struct outcome o;

    voter_start(&v, SPLIT_YES);
    confirm_init(&c, &loop, SELF_ID, 500);
    struct confirm_peer peers[] = {{1, v.addr}};
    assert_int_equal(start(&c, &o, peers, 1, 1), 0);
    run_rounds();
    assert_int_equal(o.result, CONFIRM_OK);
    teardown_all(&c, &v, 1);
}

/* A voter that hangs up, or answers something that is not HTTP, gives no
 * yes: the round is refused and the connection dropped.  After the pause
 * the voter is tried again on a new connection. */
static void test_hang_up_and_garbage(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v[2];
    struct outcome o;

    voter_start(&v[0], HANG_UP);
    voter_start(&v[1], GARBAGE);
    confirm_init(&c, &loop, SELF_ID, 40);
    for (int i = 0; i < 2; i++) {
        struct confirm_peer peers[] = {{(raft_id)(i + 1), v[i].addr}};
        assert_int_equal(start(&c, &o, peers, 1, 1), 0);
        run_rounds();
        assert_int_equal(o.result, CONFIRM_REFUSED);
        assert_int_equal(start(&c, &o, peers, 1, 1), CONFIRM_EUNAVAILABLE);
        run_for(60); /* past the pause */
        v[i].mood = YES;
        assert_int_equal(start(&c, &o, peers, 1, 1), 0);
        run_rounds();
        assert_int_equal(o.result, CONFIRM_OK);
        assert_int_equal(v[i].connections, 2);
    }
    teardown_all(&c, v, 2);
}

/* A voter closing an idle connection, as h2o does after a while, is no
 * failure: the next round connects again at once. */
static void test_idle_close_reconnects_at_once(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v;
    struct outcome o;

    voter_start(&v, YES);
    confirm_init(&c, &loop, SELF_ID, 1000);
    struct confirm_peer peers[] = {{1, v.addr}};
    assert_int_equal(start(&c, &o, peers, 1, 1), 0);
    run_rounds();
    assert_int_equal(o.result, CONFIRM_OK);
    uv_close((uv_handle_t *)&v.peer, peer_closed);
    run_for(20); /* confirm.c reads the end of the connection */
    assert_false(v.has_peer);
    assert_int_equal(start(&c, &o, peers, 1, 1), 0);
    run_rounds();
    assert_int_equal(o.result, CONFIRM_OK);
    assert_int_equal(v.connections, 2);
    teardown_all(&c, &v, 1);
}

/* No other voter needed: confirmed at once, no callback.  An address that
 * is empty or not an IP address cannot be asked. */
static void test_edge_cases(void **state)
{
    (void)state;
    struct confirm c;
    struct outcome o;

    confirm_init(&c, &loop, SELF_ID, 100);
    assert_int_equal(start(&c, &o, NULL, 0, 0), 1);
    struct confirm_peer bad[] = {{1, ""}, {2, "node2:8222"}, {3, "1.2.3.4"},
                                 {4, "[::1]:0"}, {5, NULL}};
    for (unsigned i = 0; i < 5; i++)
        assert_int_equal(start(&c, &o, &bad[i], 1, 1), CONFIRM_EUNAVAILABLE);
    assert_int_equal(o.calls, 0);
    confirm_close(&c);
    assert_int_equal(start(&c, &o, NULL, 0, 1), CONFIRM_EUNAVAILABLE);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
}

/* Closing ends the rounds still waiting, each exactly once. */
static void test_close_cancels(void **state)
{
    (void)state;
    struct confirm c;
    struct voter v;
    struct outcome o[2];

    voter_start(&v, SILENT);
    confirm_init(&c, &loop, SELF_ID, 1000);
    struct confirm_peer peers[] = {{1, v.addr}};
    assert_int_equal(start(&c, &o[0], peers, 1, 1), 0);
    run_for(20); /* connected and asked */
    assert_int_equal(start(&c, &o[1], peers, 1, 1), 0);
    confirm_close(&c);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].result, CONFIRM_CANCELLED);
    }
    voter_stop(&v);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(o[0].calls + o[1].calls, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_majority_says_yes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_one_no, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_voter_times_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_voter, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_rounds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_silent_voter_cut_while_others_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answer_in_pieces, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hang_up_and_garbage, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_idle_close_reconnects_at_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_edge_cases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
