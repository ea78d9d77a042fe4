/* cli.h - shared declarations of raftkv-cli, the command-line client for
 * raftkv's HTTP API (docs/api.md).
 *
 * The client is split by concern so each file stays small: main.c parses
 * the command line and dispatches, http.c talks to the cluster (endpoint
 * failover, retries, redirects), kv.c and cluster.c implement the
 * subcommands, util.c holds the encoders and printers they share. */
#ifndef RAFTKV_CLI_H
#define RAFTKV_CLI_H

#include <stdint.h>
#include <stdio.h>

#include <curl/curl.h>
#include <jansson.h>

/* Exit statuses; documented in --help, relied on by scripts. */
enum
{
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILED = 1,      /* the operation failed: not found, 4xx, ... */
    CLI_EXIT_USAGE = 2,       /* bad command line */
    CLI_EXIT_UNAVAILABLE = 3, /* no endpoint could serve the request */
};

/* A growable byte buffer, always NUL-terminated (len excludes the NUL) so
 * text in it can be used as a C string. */
struct cli_buf
{
    char *data;
    size_t len, cap;
};

/* The parsed command line.  Command-specific flags live here too: main.c
 * rejects those given to a command that does not take them. */
struct cli_opts
{
    char **endpoints; /* base URLs, "http://HOST:PORT" */
    size_t n_endpoints;
    const char *consistency; /* NULL: the server's default */
    int json;
    long timeout_ms;

    /* list */
    const char *prefix, *start, *end;
    int have_limit;
    uint64_t limit;
    int keys;
    /* get */
    int raw;
    /* cas MOD_INDEX, or del --cas */
    int have_cas;
    uint64_t cas;

    const char *command;
    char **args; /* positional arguments after the command */
    int n_args;
};

/* One connection to the cluster, reused for every request of a command so
 * that list pages share a keep-alive connection. */
struct cli_client
{
    const struct cli_opts *opts;
    CURL *curl;
};

struct cli_request
{
    const char *method; /* GET, PUT, POST, DELETE */
    const char *path;   /* already percent-encoded, with its query */
    const char *body;   /* NULL: no body */
    size_t body_len;
    const char *content_type; /* for the body */
    int write;                /* changes state: a retry may apply it twice */
};

struct cli_response
{
    long status;
    struct cli_buf body;
    const char *endpoint; /* the endpoint that answered (borrowed) */
    int maybe_applied;    /* a failed earlier attempt of this write may
                           * have been applied anyway */
    json_t *json;         /* parsed body, see cli_response_json */
    int json_tried;
};

/* util.c */
void *cli_xrealloc(void *p, size_t n);
char *cli_xstrdup(const char *s);
void cli_buf_add(struct cli_buf *b, const void *data, size_t n);
void cli_buf_adds(struct cli_buf *b, const char *s);
void cli_buf_add_encoded(struct cli_buf *b, const char *s, size_t n);
void cli_buf_add_query(struct cli_buf *b, const char *name, const char *value);
void cli_buf_free(struct cli_buf *b);
int cli_parse_u64(const char *s, uint64_t *out);
int cli_base64_decode(const char *in, size_t n, struct cli_buf *out);
void cli_put_escaped(FILE *f, const char *s, size_t n);
void cli_put_quoted(FILE *f, const char *s, size_t n);
void cli_put_json_value(FILE *f, json_t *v);
json_t *cli_response_json(struct cli_response *r);
void cli_print_json_line(struct cli_response *r);
int cli_fail_response(const struct cli_opts *o, const char *what,
                      const char *key, struct cli_response *r);
int cli_fail_unexpected(const char *what, struct cli_response *r);
int cli_write_result(const struct cli_opts *o, const char *what,
                     struct cli_response *r, const char *const *fields);

/* http.c */
int cli_client_init(struct cli_client *c, const struct cli_opts *o);
void cli_client_free(struct cli_client *c);
int cli_http_do(struct cli_client *c, const struct cli_request *req,
                struct cli_response *resp);
void cli_response_free(struct cli_response *r);

/* kv.c */
int cli_cmd_get(struct cli_client *c, const struct cli_opts *o);
int cli_cmd_put(struct cli_client *c, const struct cli_opts *o);
int cli_cmd_cas(struct cli_client *c, const struct cli_opts *o);
int cli_cmd_del(struct cli_client *c, const struct cli_opts *o);
int cli_cmd_list(struct cli_client *c, const struct cli_opts *o);

/* cluster.c */
int cli_cmd_members(struct cli_client *c, const struct cli_opts *o);
int cli_cmd_add(struct cli_client *c, const struct cli_opts *o);
int cli_cmd_remove(struct cli_client *c, const struct cli_opts *o);
int cli_cmd_leader(struct cli_client *c, const struct cli_opts *o);
int cli_cmd_status(struct cli_client *c, const struct cli_opts *o);

#endif
