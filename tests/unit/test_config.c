/* Unit tests for flag parsing (src/config.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

static char err[512];

#define PARSE(c, ...)                                                          \
    ({                                                                         \
        char *argv_[] = {"raftkv", __VA_ARGS__};                               \
        config_parse(c, (int)(sizeof argv_ / sizeof argv_[0]), argv_, err,     \
                     sizeof err);                                              \
    })

/* The reference command line: three flags, everything else defaulted. */
static void test_reference_flags(void **state)
{
    (void)state;
    struct config c;
    assert_int_equal(PARSE(&c, "--node-id", "node1", "--raft-port", "2222",
                           "--http-port", "8222"),
                     0);
    assert_string_equal(c.node_id, "node1");
    assert_int_equal(c.raft_port, 2222);
    assert_int_equal(c.http_port, 8222);
    assert_string_equal(c.raft_host, "127.0.0.1");
    assert_string_equal(c.http_host, "127.0.0.1");
    assert_string_equal(c.data_dir, "data/node1");
    assert_string_equal(c.join_host, "");
    assert_int_equal(c.max_key_size, 4096);
    assert_int_equal(c.max_value_size, 1 << 20);
    assert_int_equal(c.max_body_size, 3 << 19);
}

/* An address's port wins over the port flag, in either order (README.md:
 * --raft-addr overrides --raft-port). */
static void test_address_overrides_port_in_any_order(void **state)
{
    (void)state;
    struct config c;
    assert_int_equal(PARSE(&c, "--node-id", "n", "--raft-addr", "127.0.0.1:23050",
                           "--raft-port", "23051", "--http-port", "23061",
                           "--http-addr", "127.0.0.1:23060"),
                     0);
    assert_int_equal(c.raft_port, 23050);
    assert_int_equal(c.http_port, 23060);
    assert_int_equal(PARSE(&c, "--node-id", "n", "--raft-port", "23051",
                           "--raft-addr", "127.0.0.1:23050", "--http-addr",
                           "127.0.0.1:23060", "--http-port", "23061"),
                     0);
    assert_int_equal(c.raft_port, 23050);
    assert_int_equal(c.http_port, 23060);
}

/* "--flag=value", Go-style single dash, addresses, and every other flag. */
static void test_all_forms(void **state)
{
    (void)state;
    struct config c;
    assert_int_equal(
        PARSE(&c, "-node-id=a.b_c-1", "--raft-addr", "localhost:7000",
              "--http-addr=0.0.0.0:7001", "--data-dir", "/tmp/x", "--join",
              "10.0.0.1:8222", "--log-level", "debug", "--max-key-size", "100",
              "--max-value-size=200", "--max-body-size", "400",
              "--snapshot-threshold", "64", "--snapshot-trailing", "32",
              "--segment-size", "8388608",
              "--election-timeout", "500", "--heartbeat-timeout", "50",
              "--read-confirm", "log", "--follower-reads", "relay"),
        0);
    assert_string_equal(c.node_id, "a.b_c-1");
    assert_string_equal(c.raft_host, "localhost");
    assert_int_equal(c.raft_port, 7000);
    assert_string_equal(c.http_host, "0.0.0.0");
    assert_int_equal(c.http_port, 7001);
    assert_string_equal(c.data_dir, "/tmp/x");
    assert_string_equal(c.join_host, "10.0.0.1");
    assert_int_equal(c.join_port, 8222);
    assert_int_equal(c.log_level, LOG_DEBUG);
    assert_int_equal(c.max_key_size, 100);
    assert_int_equal(c.max_value_size, 200);
    assert_int_equal(c.max_body_size, 400);
    assert_int_equal(c.snapshot_threshold, 64);
    assert_int_equal(c.snapshot_trailing, 32);
    assert_int_equal(c.segment_size, 8388608);
    assert_int_equal(c.election_timeout_ms, 500);
    assert_int_equal(c.heartbeat_timeout_ms, 50);
    assert_true(c.read_confirm_log);
    assert_true(c.follower_reads_relay);
    assert_int_equal(PARSE(&c, "--node-id", "n"), 0);
    assert_false(c.read_confirm_log);
    assert_false(c.follower_reads_relay);
    assert_int_equal(PARSE(&c, "--node-id", "n", "--read-confirm=voters",
                           "--follower-reads=local"),
                     0);
    assert_false(c.read_confirm_log);
    assert_false(c.follower_reads_relay);
}

static void expect_error(int rv, const char *flag)
{
    assert_int_equal(rv, -1);
    if (strstr(err, flag) == NULL)
        fail_msg("error '%s' does not name %s", err, flag);
}

/* Every bad value names its flag. */
static void test_errors_name_the_flag(void **state)
{
    (void)state;
    struct config c;
    expect_error(PARSE(&c, "--raft-port", "2222"), "--node-id");
    expect_error(PARSE(&c, "--node-id", "n", "--raft-port", "abc"),
                 "--raft-port");
    expect_error(PARSE(&c, "--node-id", "n", "--raft-port", "70000"),
                 "--raft-port");
    expect_error(PARSE(&c, "--node-id", "n", "--raft-port", "0"),
                 "--raft-port");
    expect_error(PARSE(&c, "--node-id", "n", "--http-port", "-1"),
                 "--http-port");
    expect_error(PARSE(&c, "--node-id", "bad name!"), "--node-id");
    expect_error(PARSE(&c, "--node-id", ""), "--node-id");
    expect_error(PARSE(&c, "--node-id", "n", "--log-level", "loud"),
                 "--log-level");
    expect_error(PARSE(&c, "--node-id", "n", "--bogus", "1"), "--bogus");
    expect_error(PARSE(&c, "--node-id", "n", "--join"), "--join");
    expect_error(PARSE(&c, "--node-id", "n", "--join", "nohost"), "--join");
    expect_error(PARSE(&c, "--node-id", "n", "--raft-addr", "a b:1"),
                 "--raft-addr");
    expect_error(PARSE(&c, "--node-id", "n", "--max-key-size", "0"),
                 "--max-key-size");
    expect_error(PARSE(&c, "--node-id", "n", "--max-key-size", "70000"),
                 "--max-key-size");
    expect_error(PARSE(&c, "--node-id", "n", "--snapshot-threshold", "10",
                       "--snapshot-trailing", "20"),
                 "--snapshot-trailing");
    expect_error(PARSE(&c, "--node-id", "n", "--segment-size", "65536"),
                 "--segment-size");
    expect_error(PARSE(&c, "--node-id", "n", "--segment-size", "2000000"),
                 "--segment-size");
    expect_error(PARSE(&c, "--node-id", "n", "--election-timeout", "5"),
                 "--election-timeout");
    expect_error(PARSE(&c, "--node-id", "n", "--heartbeat-timeout", "2000"),
                 "--heartbeat-timeout");
    expect_error(PARSE(&c, "--node-id", "n", "--read-confirm", "lease"),
                 "--read-confirm");
    expect_error(PARSE(&c, "--node-id", "n", "--follower-reads", "stale"),
                 "--follower-reads");
    expect_error(PARSE(&c, "--node-id", "n", "--http-port", "2222"),
                 "--http-port");
    expect_error(PARSE(&c, "--node-id", "n", "stray"), "stray");
    expect_error(PARSE(&c, "--node-id", "n", "--help=yes"), "--help");
}

static void test_help_and_version(void **state)
{
    (void)state;
    struct config c;
    assert_int_equal(PARSE(&c, "--help"), 0);
    assert_true(c.help);
    assert_int_equal(PARSE(&c, "--version"), 0);
    assert_true(c.version);
}

static void test_hostport_split(void **state)
{
    (void)state;
    char host[64];
    int port;
    assert_int_equal(config_split_hostport("localhost:2223", host, sizeof host,
                                           &port),
                     0);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 2223);
    assert_int_equal(config_split_hostport(":80", host, sizeof host, &port),
                     0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(config_split_hostport("h:", host, sizeof host, &port),
                     -1);
    assert_int_equal(config_split_hostport("h:1x", host, sizeof host, &port),
                     -1);
    assert_int_equal(config_split_hostport("h", host, sizeof host, &port),
                     -1);
    assert_int_equal(config_split_hostport("[::1]:80", host, sizeof host,
                                           &port),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_overrides_port_in_any_order),
        cmocka_unit_test(test_reference_flags),
        cmocka_unit_test(test_all_forms),
        cmocka_unit_test(test_errors_name_the_flag),
        cmocka_unit_test(test_help_and_version),
        cmocka_unit_test(test_hostport_split),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
