/* kv.c - the key-value subcommands of raftkv-cli: get, put, cas, del and
 * list, each a thin mapping onto /v1/kv (docs/api.md, "Key-value").
 *
 * Keys always travel percent-encoded in the path, so any valid key
 * (slashes, spaces, UTF-8) round-trips.  Values are bytes: get writes them
 * unchanged, put sends them unchanged. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CLI_LIST_PAGE_MAX 10000 /* the server's largest `limit` */

static void kv_path(struct cli_buf *b, const char *key)
{
    cli_buf_adds(b, "/v1/kv/");
    cli_buf_add_encoded(b, key, strlen(key));
}

static void add_consistency(struct cli_buf *b, const struct cli_opts *o)
{
    if (o->consistency != NULL)
        cli_buf_add_query(b, "consistency", o->consistency);
}

static void add_cas(struct cli_buf *b, uint64_t cas)
{
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)cas);
    cli_buf_add_query(b, "cas", num);
}

static int run(struct cli_client *c, const char *method, struct cli_buf *path,
               const struct cli_buf *body, int write, struct cli_response *resp)
{
    struct cli_request req = {
        .method = method,
        .path = path->data,
        .write = write,
    };
    if (body != NULL) {
        req.body = body->data ? body->data : "";
        req.body_len = body->len;
        req.content_type = "application/octet-stream";
    }
    return cli_http_do(c, &req, resp);
}

int cli_cmd_get(struct cli_client *c, const struct cli_opts *o)
{
    const char *key = o->args[0];
    struct cli_buf path = {0};
    struct cli_response resp = {0};

    kv_path(&path, key);
    if (o->json)
        cli_buf_add_query(&path, "format", "json");
    add_consistency(&path, o);

    int rv = run(c, "GET", &path, NULL, 0, &resp);
    if (rv != CLI_EXIT_OK)
        goto out;
    if (resp.status != 200) {
        rv = cli_fail_response(o, "get", key, &resp);
        goto out;
    }
    if (o->json) {
        if (cli_response_json(&resp) == NULL)
            rv = cli_fail_unexpected("get", &resp);
        else
            cli_print_json_line(&resp);
        goto out;
    }
    fwrite(resp.body.data, 1, resp.body.len, stdout);
    if (!o->raw)
        fputc('\n', stdout);
out:
    cli_response_free(&resp);
    cli_buf_free(&path);
    return rv;
}

/* "-" reads the value from stdin, byte for byte (binary safe). */
static int read_value(const char *arg, struct cli_buf *value)
{
    if (strcmp(arg, "-") != 0) {
        cli_buf_adds(value, arg);
        return 0;
    }
    char chunk[65536];
    size_t n;
    cli_buf_add(value, "", 0);
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        cli_buf_add(value, chunk, n);
    if (ferror(stdin)) {
        perror("raftkv-cli: reading the value from stdin");
        return -1;
    }
    return 0;
}

static const char *const write_fields[] = {"index", "version", NULL};

/* put and cas differ only in the `cas` query parameter. */
static int put_value(struct cli_client *c, const struct cli_opts *o,
                     const char *what, const char *key, int with_cas,
                     const char *value_arg)
{
    struct cli_buf path = {0}, value = {0};
    struct cli_response resp = {0};
    int rv = CLI_EXIT_FAILED;

    if (read_value(value_arg, &value) != 0)
        goto out;
    kv_path(&path, key);
    if (with_cas)
        add_cas(&path, o->cas);

    rv = run(c, "PUT", &path, &value, 1, &resp);
    if (rv != CLI_EXIT_OK)
        goto out;
    if (resp.status != 200)
        rv = cli_fail_response(o, what, key, &resp);
    else
        rv = cli_write_result(o, what, &resp, write_fields);
out:
    cli_response_free(&resp);
    cli_buf_free(&value);
    cli_buf_free(&path);
    return rv;
}

int cli_cmd_put(struct cli_client *c, const struct cli_opts *o)
{
    return put_value(c, o, "put", o->args[0], 0, o->args[1]);
}

/* main.c parsed MOD_INDEX into o->cas. */
int cli_cmd_cas(struct cli_client *c, const struct cli_opts *o)
{
    return put_value(c, o, "cas", o->args[0], 1, o->args[2]);
}

int cli_cmd_del(struct cli_client *c, const struct cli_opts *o)
{
    static const char *const fields[] = {"index", "deleted", NULL};
    const char *key = o->args[0];
    struct cli_buf path = {0};
    struct cli_response resp = {0};

    kv_path(&path, key);
    if (o->have_cas)
        add_cas(&path, o->cas);
    int rv = run(c, "DELETE", &path, NULL, 1, &resp);
    if (rv != CLI_EXIT_OK)
        goto out;
    if (resp.status != 200) {
        rv = cli_fail_response(o, "del", key, &resp);
        goto out;
    }
    rv = cli_write_result(o, "del", &resp, fields);
    /* "deleted=false" after a retry may be our own earlier attempt. */
    json_t *deleted = json_object_get(cli_response_json(&resp), "deleted");
    if (rv == CLI_EXIT_OK && resp.maybe_applied && json_is_false(deleted))
        fputs("raftkv-cli: note: an earlier attempt of this delete failed "
              "and may have deleted the key\n",
              stderr);
out:
    cli_response_free(&resp);
    cli_buf_free(&path);
    return rv;
}

/* Prints a page's entries (the `items` or `keys` array) for humans, one
 * per line; returns how many it printed (at most `room`), or -1 if an entry
 * is malformed. */
static long print_page(json_t *arr, int keys_only, uint64_t room)
{
    struct cli_buf value = {0};
    long printed = 0;
    size_t i;
    json_t *it;

    json_array_foreach (arr, i, it) {
        if ((uint64_t)printed >= room)
            break;
        if (keys_only) {
            if (!json_is_string(it))
                goto bad;
            cli_put_escaped(stdout, json_string_value(it),
                            json_string_length(it));
            fputc('\n', stdout);
            printed++;
            continue;
        }
        json_t *k = json_object_get(it, "key");
        json_t *v = json_object_get(it, "value");
        if (!json_is_string(k) || !json_is_string(v))
            goto bad;
        value.len = 0;
        if (cli_base64_decode(json_string_value(v), json_string_length(v),
                              &value) != 0)
            goto bad;
        cli_put_escaped(stdout, json_string_value(k), json_string_length(k));
        fputc('\t', stdout);
        cli_put_escaped(stdout, value.data, value.len);
        fputc('\n', stdout);
        printed++;
    }
    cli_buf_free(&value);
    return printed;
bad:
    cli_buf_free(&value);
    return -1;
}

static void list_path(struct cli_buf *b, const struct cli_opts *o,
                      uint64_t remaining, const char *token)
{
    b->len = 0;
    cli_buf_adds(b, "/v1/kv");
    if (o->prefix != NULL)
        cli_buf_add_query(b, "prefix", o->prefix);
    if (o->start != NULL)
        cli_buf_add_query(b, "start", o->start);
    if (o->end != NULL)
        cli_buf_add_query(b, "end", o->end);
    if (o->have_limit) {
        char num[32];
        uint64_t page =
            remaining < CLI_LIST_PAGE_MAX ? remaining : CLI_LIST_PAGE_MAX;
        snprintf(num, sizeof num, "%llu", (unsigned long long)page);
        cli_buf_add_query(b, "limit", num);
    }
    if (o->keys)
        cli_buf_add_query(b, "keys", NULL);
    add_consistency(b, o);
    if (token != NULL)
        cli_buf_add_query(b, "continue", token);
}

/* Pages through the range by following `next` until it is null or --limit
 * entries were printed.  Each page is its own read: the listing is not one
 * snapshot when writes happen meanwhile. */
int cli_cmd_list(struct cli_client *c, const struct cli_opts *o)
{
    struct cli_buf path = {0};
    struct cli_response resp = {0};
    char *token = NULL;
    uint64_t printed = 0;
    int rv;

    for (;;) {
        uint64_t remaining = o->have_limit ? o->limit - printed : UINT64_MAX;
        list_path(&path, o, remaining, token);
        rv = run(c, "GET", &path, NULL, 0, &resp);
        if (rv != CLI_EXIT_OK)
            break;
        if (resp.status != 200) {
            rv = cli_fail_response(o, "list", NULL, &resp);
            break;
        }
        json_t *doc = cli_response_json(&resp);
        json_t *arr =
            doc ? json_object_get(doc, o->keys ? "keys" : "items") : NULL;
        if (!json_is_array(arr)) {
            rv = cli_fail_unexpected("list", &resp);
            break;
        }
        long n;
        if (o->json) {
            /* Pages are printed whole; --limit already sized the last one. */
            size_t got = json_array_size(arr);
            n = (long)(got < remaining ? got : remaining);
            cli_print_json_line(&resp);
        } else {
            n = print_page(arr, o->keys, remaining);
        }
        if (n < 0) {
            rv = cli_fail_unexpected("list", &resp);
            break;
        }
        printed += (uint64_t)n;

        json_t *next = json_object_get(doc, "next");
        if (!json_is_string(next) || (o->have_limit && printed >= o->limit))
            break;
        /* A server handing back the same token would loop us forever. */
        if (token != NULL && strcmp(token, json_string_value(next)) == 0) {
            fputs("raftkv-cli: list: the server returned the same "
                  "continuation token twice; stopping\n",
                  stderr);
            rv = CLI_EXIT_FAILED;
            break;
        }
        free(token);
        token = cli_xstrdup(json_string_value(next));
        cli_response_free(&resp);
    }
    free(token);
    cli_response_free(&resp);
    cli_buf_free(&path);
    return rv;
}
