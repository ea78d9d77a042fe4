/* config.h - command-line flags of the raftkv server.
 *
 * The reference example's three flags (--node-id, --raft-port, --http-port)
 * are enough to run a node; everything else has a default.  Parsing is pure
 * (no I/O, no name resolution) so that it can be unit-tested; main() prints
 * the error and exits with status 2. */
#ifndef RAFTKV_CONFIG_H
#define RAFTKV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "log.h"

#define CONFIG_NAME_MAX 64
#define CONFIG_HOST_MAX 255
#define CONFIG_PATH_MAX 4000

struct config
{
    char node_id[CONFIG_NAME_MAX + 1];
    char raft_host[CONFIG_HOST_MAX + 1]; /* as given: name or IPv4 */
    int raft_port;
    char http_host[CONFIG_HOST_MAX + 1];
    int http_port;
    /* --raft-addr / --http-addr given: their port wins over --raft-port /
     * --http-port, whatever the order of the flags. */
    bool raft_addr_given, http_addr_given;
    char data_dir[CONFIG_PATH_MAX + 1];
    char join_host[CONFIG_HOST_MAX + 1]; /* empty: no --join */
    int join_port;
    enum log_level log_level;
    size_t max_key_size;
    size_t max_value_size;
    size_t max_body_size;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
    size_t segment_size; /* libraft's log segment files */
    unsigned election_timeout_ms;
    unsigned heartbeat_timeout_ms;
    bool read_confirm_log; /* linearizable reads by log entry only */
    bool follower_reads_relay; /* followers relay linearizable reads whole */
    bool help;
    bool version;
};

/* Parse @argv into @c (defaults first).  Accepts "--flag value",
 * "--flag=value" and the single-dash forms.  Returns 0, or -1 with a
 * one-line message naming the flag in @err. */
int config_parse(struct config *c, int argc, char *const argv[], char *err,
                 size_t errlen);

/* Print the usage text. */
void config_usage(FILE *out);

/* Is @name a valid node name: 1-64 of [A-Za-z0-9._-]? */
bool config_name_valid(const char *name);

/* Split "HOST:PORT" (HOST may be empty: 127.0.0.1) into @host and @port.
 * Returns 0, or -1 when malformed or the port is not in 1..65535. */
int config_split_hostport(const char *s, char *host, size_t hostlen,
                          int *port);

#endif
