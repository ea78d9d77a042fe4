/* cluster.c - the cluster subcommands of raftkv-cli: members, add, remove,
 * leader transfer and status, mapping onto /v1/cluster and /v1/status
 * (docs/api.md, "Cluster" and "Observability").
 *
 * Human output is meant for reading at a terminal: members as an aligned
 * table, status as aligned "key: value" lines; --json gives the server's
 * answer instead. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int run(struct cli_client *c, const char *method, const char *path,
               json_t *body, struct cli_response *resp)
{
    struct cli_request req = {.method = method, .path = path, .write = 1};
    char *text = NULL;

    if (body != NULL) {
        text = json_dumps(body, JSON_COMPACT);
        if (text == NULL) {
            fputs("raftkv-cli: out of memory\n", stderr);
            return CLI_EXIT_FAILED;
        }
        req.body = text;
        req.body_len = strlen(text);
        req.content_type = "application/json";
    }
    if (strcmp(method, "GET") == 0)
        req.write = 0;
    int rv = cli_http_do(c, &req, resp);
    free(text);
    return rv;
}

/* "-" stands in for a missing or empty field so table columns stay
 * aligned: a node that has not yet applied a new member's entry reports
 * it with an empty name and HTTP address. */
static const char *field(json_t *obj, const char *name)
{
    const char *s = json_string_value(json_object_get(obj, name));
    return s && *s ? s : "-";
}

enum
{
    COL_ID,
    COL_ROLE,
    COL_RAFT,
    COL_HTTP,
    COL_LEADER,
    N_COLS
};

static void member_row(json_t *m, const char *leader, const char **row)
{
    json_t *flag = json_object_get(m, "leader");
    int is_leader =
        json_is_boolean(flag)
            ? json_is_true(flag)
            : (leader != NULL && strcmp(field(m, "id"), leader) == 0);
    row[COL_ID] = field(m, "id");
    row[COL_ROLE] = field(m, "role");
    row[COL_RAFT] = field(m, "raft_addr");
    row[COL_HTTP] = field(m, "http_addr");
    row[COL_LEADER] = is_leader ? "*" : "";
}

/* Cells padded to their column's width, without trailing blanks (the
 * LEADER cell is usually empty). */
static void print_row(const char *const *row, const int *width)
{
    int pending = 0; /* padding owed before the next non-empty cell */
    for (int k = 0; k < N_COLS; k++) {
        if (row[k][0] == '\0') {
            pending += width[k] + 2;
            continue;
        }
        printf("%*s%s", pending, "", row[k]);
        pending = width[k] - (int)strlen(row[k]) + 2;
    }
    fputc('\n', stdout);
}

/* The leader is marked with "*" in the LEADER column rather than by
 * reordering, so the table keeps the server's order. */
static int print_members(json_t *doc)
{
    static const char *const header[N_COLS] = {"ID", "ROLE", "RAFT_ADDR",
                                               "HTTP_ADDR", "LEADER"};
    json_t *members = json_object_get(doc, "members");
    const char *leader = json_string_value(json_object_get(doc, "leader"));
    int width[N_COLS];
    const char *row[N_COLS];
    size_t i;
    json_t *m;

    if (!json_is_array(members))
        return -1;
    for (int k = 0; k < N_COLS; k++)
        width[k] = (int)strlen(header[k]);
    json_array_foreach (members, i, m) {
        if (!json_is_object(m))
            return -1;
        member_row(m, leader, row);
        for (int k = 0; k < N_COLS; k++) {
            int w = (int)strlen(row[k]);
            width[k] = w > width[k] ? w : width[k];
        }
    }
    print_row(header, width);
    json_array_foreach (members, i, m) {
        member_row(m, leader, row);
        print_row(row, width);
    }
    return 0;
}

int cli_cmd_members(struct cli_client *c, const struct cli_opts *o)
{
    struct cli_response resp = {0};
    int rv = run(c, "GET", "/v1/cluster/members", NULL, &resp);
    if (rv != CLI_EXIT_OK)
        goto out;
    if (resp.status != 200) {
        rv = cli_fail_response(o, "members", NULL, &resp);
        goto out;
    }
    json_t *doc = cli_response_json(&resp);
    if (doc == NULL) {
        rv = cli_fail_unexpected("members", &resp);
        goto out;
    }
    if (o->json)
        cli_print_json_line(&resp);
    else if (print_members(doc) != 0)
        rv = cli_fail_unexpected("members", &resp);
out:
    cli_response_free(&resp);
    return rv;
}

int cli_cmd_add(struct cli_client *c, const struct cli_opts *o)
{
    static const char *const fields[] = {"id", "role", "raft_addr", "http_addr",
                                         NULL};
    struct cli_response resp = {0};
    json_t *body = json_pack("{s:s, s:s, s:s}", "id", o->args[0], "raft_addr",
                             o->args[1], "http_addr", o->args[2]);
    if (body == NULL) {
        /* jansson refuses strings that are not UTF-8. */
        fputs("raftkv-cli: add: NAME and addresses must be valid UTF-8\n",
              stderr);
        return CLI_EXIT_USAGE;
    }
    int rv = run(c, "POST", "/v1/cluster/members", body, &resp);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        goto out;
    if (resp.status != 200)
        rv = cli_fail_response(o, "add", o->args[0], &resp);
    else
        rv = cli_write_result(o, "add", &resp, fields);
out:
    cli_response_free(&resp);
    return rv;
}

int cli_cmd_remove(struct cli_client *c, const struct cli_opts *o)
{
    static const char *const fields[] = {"removed", NULL};
    struct cli_buf path = {0};
    struct cli_response resp = {0};

    cli_buf_adds(&path, "/v1/cluster/members/");
    cli_buf_add_encoded(&path, o->args[0], strlen(o->args[0]));
    int rv = run(c, "DELETE", path.data, NULL, &resp);
    if (rv != CLI_EXIT_OK)
        goto out;
    if (resp.status != 200)
        rv = cli_fail_response(o, "remove", o->args[0], &resp);
    else
        rv = cli_write_result(o, "remove", &resp, fields);
out:
    cli_response_free(&resp);
    cli_buf_free(&path);
    return rv;
}

/* `leader transfer [NAME]`; main.c checked the "transfer" word. */
int cli_cmd_leader(struct cli_client *c, const struct cli_opts *o)
{
    static const char *const fields[] = {"leader", NULL};
    struct cli_response resp = {0};
    const char *name = o->n_args > 1 ? o->args[1] : NULL;
    json_t *body = name ? json_pack("{s:s}", "id", name) : json_object();
    if (body == NULL) {
        fputs("raftkv-cli: leader transfer: NAME must be valid UTF-8\n",
              stderr);
        return CLI_EXIT_USAGE;
    }
    int rv = run(c, "POST", "/v1/cluster/leader", body, &resp);
    json_decref(body);
    if (rv != CLI_EXIT_OK)
        goto out;
    if (resp.status != 200)
        rv = cli_fail_response(o, "leader transfer", name, &resp);
    else
        rv = cli_write_result(o, "leader transfer", &resp, fields);
out:
    cli_response_free(&resp);
    return rv;
}

/* Nested values get a one-line human form; anything else unknown is shown
 * as compact JSON so new server fields still appear. */
static void put_status_value(const char *key, json_t *v)
{
    if (strcmp(key, "leader") == 0 && json_is_object(v)) {
        printf("%s (raft %s, http %s)", field(v, "id"), field(v, "raft_addr"),
               field(v, "http_addr"));
        return;
    }
    if (strcmp(key, "members") == 0 && json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach (v, i, m) {
            printf("%s%s (%s)", i ? ", " : "", field(m, "id"),
                   field(m, "role"));
        }
        return;
    }
    cli_put_json_value(stdout, v);
}

int cli_cmd_status(struct cli_client *c, const struct cli_opts *o)
{
    struct cli_response resp = {0};
    int rv = run(c, "GET", "/v1/status", NULL, &resp);
    if (rv != CLI_EXIT_OK)
        goto out;
    if (resp.status != 200) {
        rv = cli_fail_response(o, "status", NULL, &resp);
        goto out;
    }
    json_t *doc = cli_response_json(&resp);
    if (doc == NULL) {
        rv = cli_fail_unexpected("status", &resp);
        goto out;
    }
    if (o->json) {
        cli_print_json_line(&resp);
        goto out;
    }
    const char *key;
    json_t *v;
    int width = 0;
    json_object_foreach (doc, key, v) {
        int w = (int)strlen(key);
        width = w > width ? w : width;
    }
    /* Server order is kept: jansson preserves it when parsing. */
    json_object_foreach (doc, key, v) {
        printf("%s:%*s ", key, width - (int)strlen(key), "");
        put_status_value(key, v);
        fputc('\n', stdout);
    }
out:
    cli_response_free(&resp);
    return rv;
}
