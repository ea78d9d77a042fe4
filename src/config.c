/* config.c - flag parsing and validation; see config.h.
 *
 * Hand-rolled rather than getopt_long: the reference accepts Go-style
 * "-flag" as well as "--flag", and every error must name its flag. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum flag_kind { F_NAME, F_PORT, F_HOSTPORT, F_PATH, F_LEVEL, F_SIZE, F_COUNT,
                 F_MS, F_BOOL, F_READ, F_FREAD };

struct flag
{
    const char *name;
    enum flag_kind kind;
    const char *help;
};

static const struct flag flags[] = {
    {"node-id", F_NAME, "NAME  this node's name, 1-64 of [A-Za-z0-9._-] (required)"},
    {"raft-port", F_PORT, "PORT  Raft port on 127.0.0.1 (default 2222)"},
    {"http-port", F_PORT, "PORT  HTTP port on 127.0.0.1 (default 8222)"},
    {"raft-addr", F_HOSTPORT, "HOST:PORT  Raft address to bind and advertise (overrides --raft-port)"},
    {"http-addr", F_HOSTPORT, "HOST:PORT  HTTP address to bind and advertise (overrides --http-port)"},
    {"data-dir", F_PATH, "DIR  where the node keeps its data (default ./data/NODE-ID)"},
    {"join", F_HOSTPORT, "HOST:PORT  HTTP address of a member to ask to add this node"},
    {"log-level", F_LEVEL, "LEVEL  debug, info, warn or error (default info)"},
    {"max-key-size", F_SIZE, "BYTES  largest key accepted (default 4096)"},
    {"max-value-size", F_SIZE, "BYTES  largest value accepted (default 1048576)"},
    {"max-body-size", F_SIZE, "BYTES  largest request body accepted (default 1572864)"},
    {"snapshot-threshold", F_COUNT, "N  log entries between snapshots (default 8192; sooner after 16 MiB)"},
    {"segment-size", F_SIZE, "BYTES  Raft log segment file size (default 8388608)"},
    {"snapshot-trailing", F_COUNT, "N  log entries kept after a snapshot (default 2048; at most ~8 MiB)"},
    {"election-timeout", F_MS, "MS  Raft election timeout (default 1000)"},
    {"heartbeat-timeout", F_MS, "MS  Raft heartbeat interval (default 100)"},
    {"read-confirm", F_READ, "HOW  how a leader proves it leads before a linearizable read: 'voters' asks them over HTTP (default), 'log' appends an entry"},
    {"follower-reads", F_FREAD, "HOW  how a follower serves a linearizable read: 'local' asks the leader for a read index and reads its own store (default), 'relay' relays the read to the leader"},
    {"help", F_BOOL, "      print this help and exit"},
    {"version", F_BOOL, "      print the version and exit"},
};

#define N_FLAGS (sizeof flags / sizeof flags[0])

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

bool config_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CONFIG_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
              ch == '-'))
            return false;
    }
    return true;
}

static int parse_u64(const char *s, unsigned long long max,
                     unsigned long long *out)
{
    char *end;
    unsigned long long v;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_port(const char *s, int *port)
{
    unsigned long long v;
    if (parse_u64(s, 65535, &v) != 0 || v == 0)
        return -1;
    *port = (int)v;
    return 0;
}

int config_split_hostport(const char *s, char *host, size_t hostlen,
                          int *port)
{
    const char *colon = strrchr(s, ':');
    size_t n;

    if (colon == NULL)
        return -1;
    n = (size_t)(colon - s);
    if (n >= hostlen)
        return -1;
    if (parse_port(colon + 1, port) != 0)
        return -1;
    if (n == 0) {
        snprintf(host, hostlen, "127.0.0.1");
        return 0;
    }
    memcpy(host, s, n);
    host[n] = '\0';
    /* Host names and IPv4 literals only: no spaces, no brackets. */
    for (size_t i = 0; i < n; i++) {
        char ch = host[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' ||
              ch == '_'))
            return -1;
    }
    return 0;
}

static void defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->raft_host, sizeof c->raft_host, "127.0.0.1");
    snprintf(c->http_host, sizeof c->http_host, "127.0.0.1");
    c->raft_port = 2222;
    c->http_port = 8222;
    c->log_level = LOG_INFO;
    c->max_key_size = 4096;
    c->max_value_size = 1 << 20;
    c->max_body_size = 3 << 19; /* 1.5 MiB: a 1 MiB value with JSON room */
    c->snapshot_threshold = 8192;
    c->snapshot_trailing = 2048;
    c->segment_size = (size_t)8 << 20;
    c->election_timeout_ms = 1000;
    c->heartbeat_timeout_ms = 100;
    c->read_confirm_log = false;
    c->follower_reads_relay = false;
}

static int set_flag(struct config *c, const struct flag *f, const char *v,
                    char *err, size_t errlen)
{
    unsigned long long n;
    char host[CONFIG_HOST_MAX + 1];
    int port;

    switch (f->kind) {
    case F_NAME:
        if (!config_name_valid(v))
            return fail(err, errlen,
                        "--%s: '%s' is not a valid name (1-64 characters of "
                        "A-Z a-z 0-9 . _ -)",
                        f->name, v);
        snprintf(c->node_id, sizeof c->node_id, "%s", v);
        return 0;
    case F_PORT:
        if (parse_port(v, &port) != 0)
            return fail(err, errlen, "--%s: '%s' is not a port (1-65535)",
                        f->name, v);
        if (strcmp(f->name, "raft-port") == 0) {
            if (!c->raft_addr_given)
                c->raft_port = port;
        } else if (!c->http_addr_given) {
            c->http_port = port;
        }
        return 0;
    case F_HOSTPORT:
        if (config_split_hostport(v, host, sizeof host, &port) != 0)
            return fail(err, errlen,
                        "--%s: '%s' is not HOST:PORT (port 1-65535)", f->name,
                        v);
        if (strcmp(f->name, "raft-addr") == 0) {
            memcpy(c->raft_host, host, sizeof host);
            c->raft_port = port;
            c->raft_addr_given = true;
        } else if (strcmp(f->name, "http-addr") == 0) {
            memcpy(c->http_host, host, sizeof host);
            c->http_port = port;
            c->http_addr_given = true;
        } else {
            memcpy(c->join_host, host, sizeof host);
            c->join_port = port;
        }
        return 0;
    case F_PATH:
        if (*v == '\0' || strlen(v) > CONFIG_PATH_MAX)
            return fail(err, errlen, "--%s: path is empty or too long",
                        f->name);
        snprintf(c->data_dir, sizeof c->data_dir, "%s", v);
        return 0;
    case F_LEVEL:
        if (log_level_parse(v, &c->log_level) != 0)
            return fail(err, errlen,
                        "--%s: '%s' is not one of debug, info, warn, error",
                        f->name, v);
        return 0;
    case F_SIZE:
        if (parse_u64(v, (unsigned long long)1 << 30, &n) != 0 || n == 0)
            return fail(err, errlen,
                        "--%s: '%s' is not a size in bytes (1 to 1073741824)",
                        f->name, v);
        if (strcmp(f->name, "max-key-size") == 0) {
            if (n > 65535)
                return fail(err, errlen, "--%s: at most 65535", f->name);
            c->max_key_size = (size_t)n;
        } else if (strcmp(f->name, "max-value-size") == 0) {
            c->max_value_size = (size_t)n;
        } else if (strcmp(f->name, "segment-size") == 0) {
            if (n < (1 << 20) || n % 4096 != 0)
                return fail(err, errlen,
                            "--%s: '%s' must be at least 1048576 and a "
                            "multiple of 4096",
                            f->name, v);
            c->segment_size = (size_t)n;
        } else {
            c->max_body_size = (size_t)n;
        }
        return 0;
    case F_COUNT:
        if (parse_u64(v, UINT_MAX, &n) != 0 || n == 0)
            return fail(err, errlen, "--%s: '%s' is not a positive count",
                        f->name, v);
        if (strcmp(f->name, "snapshot-threshold") == 0)
            c->snapshot_threshold = (unsigned)n;
        else
            c->snapshot_trailing = (unsigned)n;
        return 0;
    case F_MS:
        if (parse_u64(v, 600000, &n) != 0 || n < 10)
            return fail(err, errlen,
                        "--%s: '%s' is not a duration in ms (10-600000)",
                        f->name, v);
        if (strcmp(f->name, "election-timeout") == 0)
            c->election_timeout_ms = (unsigned)n;
        else
            c->heartbeat_timeout_ms = (unsigned)n;
        return 0;
    case F_READ:
        if (strcmp(v, "voters") == 0)
            c->read_confirm_log = false;
        else if (strcmp(v, "log") == 0)
            c->read_confirm_log = true;
        else
            return fail(err, errlen, "--%s: '%s' is not 'voters' or 'log'",
                        f->name, v);
        return 0;
    case F_FREAD:
        if (strcmp(v, "local") == 0)
            c->follower_reads_relay = false;
        else if (strcmp(v, "relay") == 0)
            c->follower_reads_relay = true;
        else
            return fail(err, errlen, "--%s: '%s' is not 'local' or 'relay'",
                        f->name, v);
        return 0;
    case F_BOOL:
        if (strcmp(f->name, "help") == 0)
            c->help = true;
        else
            c->version = true;
        return 0;
    }
    return fail(err, errlen, "--%s: unsupported", f->name);
}

int config_parse(struct config *c, int argc, char *const argv[], char *err,
                 size_t errlen)
{
    defaults(c);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *name, *eq, *value = NULL;
        const struct flag *f = NULL;
        size_t len;

        if (arg[0] != '-' || arg[1] == '\0')
            return fail(err, errlen, "unexpected argument '%s' (flags start "
                        "with --)", arg);
        name = arg + (arg[1] == '-' ? 2 : 1);
        eq = strchr(name, '=');
        len = eq ? (size_t)(eq - name) : strlen(name);
        for (size_t k = 0; k < N_FLAGS; k++) {
            if (strlen(flags[k].name) == len &&
                strncmp(flags[k].name, name, len) == 0) {
                f = &flags[k];
                break;
            }
        }
        if (f == NULL)
            return fail(err, errlen, "--%.*s: unknown flag (see --help)",
                        (int)len, name);
        if (f->kind == F_BOOL) {
            if (eq != NULL)
                return fail(err, errlen, "--%s takes no value", f->name);
        } else if (eq != NULL) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            return fail(err, errlen, "--%s: missing value", f->name);
        }
        if (set_flag(c, f, value, err, errlen) != 0)
            return -1;
    }
    if (c->help || c->version)
        return 0;
    if (c->node_id[0] == '\0')
        return fail(err, errlen, "--node-id: required (e.g. --node-id node1)");
    if (c->data_dir[0] == '\0')
        snprintf(c->data_dir, sizeof c->data_dir, "data/%s", c->node_id);
    if (c->snapshot_trailing > c->snapshot_threshold)
        return fail(err, errlen,
                    "--snapshot-trailing: %u is larger than "
                    "--snapshot-threshold %u",
                    c->snapshot_trailing, c->snapshot_threshold);
    if (c->heartbeat_timeout_ms >= c->election_timeout_ms)
        return fail(err, errlen,
                    "--heartbeat-timeout: must be shorter than "
                    "--election-timeout");
    if (strcmp(c->raft_host, c->http_host) == 0 &&
        c->raft_port == c->http_port)
        return fail(err, errlen, "--http-port: same address as --raft-port");
    return 0;
}

void config_usage(FILE *out)
{
    fprintf(out,
            "usage: raftkv --node-id NAME [--raft-port PORT] [--http-port PORT] "
            "[flags]\n\n"
            "raftkv is a replicated key-value store: every node keeps the "
            "same data by\nreplicating a Raft log; clients talk HTTP/JSON to "
            "any node.\n\nflags:\n");
    for (size_t k = 0; k < N_FLAGS; k++)
        fprintf(out, "  --%-20s %s\n", flags[k].name, flags[k].help);
    fprintf(out, "\nexample (two nodes, then add the second to the first):\n"
                 "  raftkv --node-id node1 --raft-port 2222 --http-port 8222\n"
                 "  raftkv --node-id node2 --raft-port 2223 --http-port 8223\n"
                 "  curl 'localhost:8222/join?followerAddr=localhost:2223&"
                 "followerId=node2'\n");
}
