/* api_kv.c - the key-value API: /v1/kv/{key}, /v1/kv (range and prefix
 * listing) and /v1/txn.  Keys come percent-encoded in the path; values are
 * raw bytes in and out (base64 inside JSON). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "text.h"

#define KV_PREFIX "/v1/kv/"
#define LIST_DEFAULT_LIMIT 1000
#define LIST_MAX_LIMIT 10000
#define LIST_MAX_BYTES ((size_t)4 << 20) /* values per page, roughly */
#define TXN_MAX_COMPARES 64
#define TXN_MAX_OPS 128

/* Decode the key from the request path into @buf (capacity path length
 * + 1).  Returns its length, or -1 after answering 400. */
static long path_key(struct api *a, struct http_req *req, char *buf)
{
    size_t plen;
    const char *path = http_path(req, &plen);
    size_t n = strlen(KV_PREFIX);
    long klen;

    klen = http_url_decode(path + n, plen - n, buf, false);
    if (klen < 0) {
        http_reply_error(req, 400, "the key in the path is not valid "
                                   "percent-encoding");
        return -1;
    }
    if (api_check_key(a, req, buf, (size_t)klen) != 0)
        return -1;
    return klen;
}

/* Parse ?cas=N.  Returns 1 with *cas set, 0 when absent, -1 after 400. */
static int parse_cas(struct http_req *req, uint64_t *cas)
{
    char *v, *end;
    size_t len;
    int rv = http_query_param(req, "cas", &v, &len);

    if (rv == -ENOENT)
        return 0;
    if (rv != 0 || len == 0 || len > 20 || v[0] < '0' || v[0] > '9')
        goto bad;
    errno = 0;
    *cas = strtoull(v, &end, 10);
    if (errno != 0 || *end != '\0')
        goto bad;
    return 1;
bad:
    http_reply_error(req, 400, "cas must be a mod_index: a non-negative "
                               "integer (0: only if the key is absent)");
    return -1;
}

static json_t *meta_json(uint64_t create, uint64_t mod, uint64_t version)
{
    return json_pack("{s:I, s:I, s:I}", "create_index", (json_int_t)create,
                     "mod_index", (json_int_t)mod, "version",
                     (json_int_t)version);
}

static json_t *key_json(const void *key, size_t len)
{
    json_t *k = json_stringn(key, len);
    return k ? k : json_string("");
}

static void reply_compare_failed(struct http_req *req, struct api_op *op,
                                 const struct fsm_outcome *o)
{
    api_reply_json(
        req, 409,
        json_pack("{s:s, s:o, s:o}", "error", "compare failed", "key",
                  key_json(op->cmds[0].key.base, op->cmds[0].key.len),
                  "current",
                  o->exists ? meta_json(o->create_index, o->mod_index,
                                        o->version)
                            : json_null()));
}

/* 200 {"create_index", "mod_index", "version", "key", "index"}: what
 * jansson would print, written directly (every write answers this). */
static void reply_put(struct http_req *req, const struct fsm_outcome *o,
                      const void *key, size_t klen, uint64_t index)
{
    char small[512], *buf = small, *p;
    size_t cap = 5 * TEXT_U64_SIZE + 64 + text_json_quote_size(klen);

    if (!text_utf8_valid(key, klen))
        klen = 0; /* as key_json: such a key cannot be sent as a string */
    if (cap > sizeof small && (buf = malloc(cap)) == NULL) {
        http_reply_error(req, 503, "out of memory");
        return;
    }
    p = stpcpy(buf, "{\"create_index\":");
    p += text_u64(o->create_index, p);
    p = stpcpy(p, ",\"mod_index\":");
    p += text_u64(o->mod_index, p);
    p = stpcpy(p, ",\"version\":");
    p += text_u64(o->version, p);
    p = stpcpy(p, ",\"key\":");
    p += text_json_quote(key, klen, p);
    p = stpcpy(p, ",\"index\":");
    p += text_u64(index, p);
    p = stpcpy(p, "}");
    http_reply_json(req, 200, buf, (size_t)(p - buf));
    if (buf != small)
        free(buf);
}

static void put_applied(struct api_op *op, struct http_req *req,
                        const struct fsm_result *res)
{
    const struct fsm_outcome *o = &res->outcomes[0];
    if (o->status == FSM_ECOMPARE) {
        reply_compare_failed(req, op, o);
        return;
    }
    reply_put(req, o, op->cmds[0].key.base, op->cmds[0].key.len, res->index);
}

static void delete_applied(struct api_op *op, struct http_req *req,
                           const struct fsm_result *res)
{
    const struct fsm_outcome *o = &res->outcomes[0];
    if (o->status == FSM_ECOMPARE) {
        reply_compare_failed(req, op, o);
        return;
    }
    api_reply_json(req, 200,
                   json_pack("{s:o, s:I, s:b}", "key",
                             key_json(op->cmds[0].key.base,
                                      op->cmds[0].key.len),
                             "index", (json_int_t)res->index, "deleted",
                             o->status == 0));
}

/* Serve GET/HEAD /v1/kv/{key} from the local store. */
static void item_serve(struct api *a, struct http_req *req, bool lin)
{
    size_t plen;
    char *key, *fmt;
    size_t flen;
    long klen;
    struct store_txn t;
    struct store_record rec;
    char num[TEXT_U64_SIZE], small[256];
    int rv;

    http_path(req, &plen);
    key = plen < sizeof small ? small : malloc(plen + 1);
    if (key == NULL) {
        http_reply_error(req, 503, "out of memory");
        return;
    }
    klen = path_key(a, req, key);
    if (klen < 0)
        goto out;
    bool json = http_query_param(req, "format", &fmt, &flen) == 0 &&
                strcmp(fmt, "json") == 0;
    rv = store_txn_begin(a->node->store, false, &t);
    if (rv != 0) {
        http_reply_error(req, 500, "store: %s", store_strerror(rv));
        goto out;
    }
    rv = store_kv_get(&t, key, (size_t)klen, &rec);
    if (rv != 0) {
        store_txn_abort(&t);
        api_read_headers(a, req, lin);
        if (rv == STORE_ENOTFOUND)
            api_reply_json(req, 404,
                           json_pack("{s:s, s:o}", "error", "key not found",
                                     "key", key_json(key, (size_t)klen)));
        else
            http_reply_error(req, 500, "store: %s", store_strerror(rv));
        goto out;
    }
    api_read_headers(a, req, lin);
    if (json) {
        char *b64 = malloc(text_base64_size(rec.value_len));
        if (b64 == NULL) {
            store_txn_abort(&t);
            http_reply_error(req, 503, "out of memory");
            goto out;
        }
        text_base64_encode(rec.value, rec.value_len, b64, false);
        json_t *doc = meta_json(rec.create_index, rec.mod_index, rec.version);
        json_object_set_new(doc, "key", key_json(key, (size_t)klen));
        json_object_set_new(doc, "value", json_string(b64));
        free(b64);
        store_txn_abort(&t);
        api_reply_json(req, 200, doc);
        goto out;
    }
    text_u64(rec.create_index, num);
    http_add_header(req, "X-Raftkv-Create-Index", num);
    text_u64(rec.mod_index, num);
    http_add_header(req, "X-Raftkv-Mod-Index", num);
    text_u64(rec.version, num);
    http_add_header(req, "X-Raftkv-Version", num);
    /* The body is copied out of the map before the transaction ends. */
    http_reply(req, 200, "application/octet-stream", rec.value,
               rec.value_len);
    store_txn_abort(&t);
out:
    if (key != small)
        free(key);
}

static void item_serve_stale(struct api *a, struct http_req *req)
{
    item_serve(a, req, false);
}

static void item_serve_linearizable(struct api *a, struct http_req *req)
{
    item_serve(a, req, true);
}

/* PUT    /v1/kv/{key}[?cas=N]   body: the value -> 200 {"key", "index", ...}
 * GET    /v1/kv/{key}[?format=json][&consistency=stale]  -> the value
 * DELETE /v1/kv/{key}[?cas=N]   -> 200 {"key", "index", "deleted"} */
void api_kv_item(struct api *a, struct http_req *req)
{
    size_t plen, blen, flen;
    const char *body;
    char *fmt;
    struct api_op *op;
    uint64_t cas = 0;
    long klen;
    int has_cas;
    bool lin;

    if (http_method_is(req, "GET") || http_method_is(req, "HEAD")) {
        int rv = http_query_param(req, "format", &fmt, &flen);
        if (rv == -EINVAL || (rv == 0 && strcmp(fmt, "json") != 0 &&
                              strcmp(fmt, "raw") != 0)) {
            http_reply_error(req, 400, "format must be \"raw\" or \"json\"");
            return;
        }
        if (api_consistency(req, true, &lin) != 0)
            return;
        char small[256];
        char *key = http_path(req, &plen) && plen >= sizeof small
                        ? malloc(plen + 1)
                        : small;
        if (key == NULL) {
            http_reply_error(req, 503, "out of memory");
            return;
        }
        klen = path_key(a, req, key);
        if (key != small)
            free(key);
        if (klen < 0)
            return;
        api_read(a, req, lin,
                 lin ? item_serve_linearizable : item_serve_stale);
        return;
    }

    has_cas = parse_cas(req, &cas);
    if (has_cas < 0)
        return;
    body = http_body(req, &blen);
    if (http_method_is(req, "PUT") && blen > a->cfg->max_value_size) {
        http_reply_error(req, 413, "value is %zu bytes; the limit is %zu",
                         blen, a->cfg->max_value_size);
        return;
    }
    op = api_op_new(a, req);
    if (op == NULL)
        return;
    http_path(req, &plen);
    op->mem = malloc(plen + 1);
    if (op->mem == NULL) {
        http_reply_error(req, 503, "out of memory");
        return;
    }
    klen = path_key(a, req, op->mem);
    if (klen < 0)
        return;
    struct command *c = &op->cmds[0];
    c->key.base = op->mem;
    c->key.len = (size_t)klen;
    c->cas = cas;
    if (http_method_is(req, "PUT")) {
        c->type = has_cas ? CMD_PUT_CAS : CMD_PUT;
        c->value.base = (const uint8_t *)(body ? body : "");
        c->value.len = blen;
        op->applied = put_applied;
    } else {
        c->type = has_cas ? CMD_DELETE_CAS : CMD_DELETE;
        op->applied = delete_applied;
    }
    op->n_cmds = 1;
    api_submit(op);
}

/* --- listing ---------------------------------------------------------------- */

struct list_query
{
    char *prefix, *start, *end;
    size_t prefix_len, start_len, end_len;
    char *after; /* continue: resume after this key (request memory) */
    size_t after_len;
    unsigned long limit;
    bool keys_only;
};

/* Returns 0, or -1 after answering 400. */
static int list_parse(struct api *a, struct http_req *req,
                      struct list_query *q)
{
    char *v;
    size_t len;
    int rv;

    memset(q, 0, sizeof *q);
    q->limit = LIST_DEFAULT_LIMIT;
    if (http_query_param(req, "prefix", &q->prefix, &q->prefix_len) == -EINVAL ||
        http_query_param(req, "start", &q->start, &q->start_len) == -EINVAL ||
        http_query_param(req, "end", &q->end, &q->end_len) == -EINVAL) {
        http_reply_error(req, 400, "a query parameter is not valid "
                                   "percent-encoding");
        return -1;
    }
    if (q->prefix != NULL && (q->start != NULL || q->end != NULL)) {
        http_reply_error(req, 400, "use either prefix or start/end, not both");
        return -1;
    }
    size_t max = a->cfg->max_key_size;
    if (q->prefix_len > max || q->start_len > max || q->end_len > max) {
        http_reply_error(req, 400, "prefix, start and end are at most %zu "
                                   "bytes", max);
        return -1;
    }
    rv = http_query_param(req, "limit", &v, &len);
    if (rv == 0) {
        char *endp;
        errno = 0;
        q->limit = strtoul(v, &endp, 10);
        if (len == 0 || v[0] < '0' || v[0] > '9' || *endp != '\0' ||
            errno != 0 || q->limit < 1 || q->limit > LIST_MAX_LIMIT) {
            http_reply_error(req, 400, "limit must be 1 to %d",
                             LIST_MAX_LIMIT);
            return -1;
        }
    } else if (rv == -EINVAL) {
        http_reply_error(req, 400, "limit must be 1 to %d", LIST_MAX_LIMIT);
        return -1;
    }
    rv = http_query_param(req, "continue", &v, &len);
    if (rv == 0) {
        /* The token is the last key of the previous page, base64url; the
         * decoded bytes overwrite the token in place (they are shorter). */
        long n = text_base64_decode(v, len, v);
        if (n <= 0 || (size_t)n > max) {
            http_reply_error(req, 400, "continue is not a token this server "
                                       "handed out");
            return -1;
        }
        q->after = v;
        q->after_len = (size_t)n;
    } else if (rv == -EINVAL) {
        http_reply_error(req, 400, "continue is not valid percent-encoding");
        return -1;
    }
    q->keys_only = http_query_param(req, "keys", &v, &len) == 0;
    return 0;
}

static int bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static void list_serve(struct api *a, struct http_req *req, bool lin)
{
    struct list_query q;
    struct store_txn t;
    struct store_cursor c;
    struct store_record rec;
    const void *key = NULL, *from = NULL, *last = NULL;
    size_t klen = 0, from_len = 0, last_len = 0, bytes = 0;
    unsigned long count = 0;
    json_t *items, *next = json_null();
    char *b64 = NULL;
    size_t b64_cap = 0;
    bool more = false;
    int rv;

    if (list_parse(a, req, &q) != 0)
        return;
    if (q.after != NULL) {
        from = q.after;
        from_len = q.after_len;
    } else if (q.prefix_len > 0) {
        from = q.prefix;
        from_len = q.prefix_len;
    } else if (q.start_len > 0) {
        from = q.start;
        from_len = q.start_len;
    }
    if ((rv = store_txn_begin(a->node->store, false, &t)) != 0) {
        http_reply_error(req, 500, "store: %s", store_strerror(rv));
        return;
    }
    if ((rv = store_cursor_open(&t, STORE_KV, from, from_len, &c)) != 0) {
        store_txn_abort(&t);
        http_reply_error(req, 500, "store: %s", store_strerror(rv));
        return;
    }
    items = json_array();
    while ((rv = store_cursor_next_kv(&c, &key, &klen, &rec)) == 1) {
        if (q.after != NULL &&
            bytes_cmp(key, klen, q.after, q.after_len) <= 0)
            continue;
        if (q.prefix != NULL &&
            (klen < q.prefix_len || memcmp(key, q.prefix, q.prefix_len) != 0))
            break;
        if (q.end != NULL && q.end_len > 0 &&
            bytes_cmp(key, klen, q.end, q.end_len) >= 0)
            break;
        if (count == q.limit || (count > 0 && bytes >= LIST_MAX_BYTES)) {
            more = true; /* a matching key remains for the next page */
            break;
        }
        if (q.keys_only) {
            json_array_append_new(items, key_json(key, klen));
        } else {
            size_t need = text_base64_size(rec.value_len);
            if (need > b64_cap) {
                free(b64);
                b64 = malloc(need);
                b64_cap = b64 ? need : 0;
                if (b64 == NULL) {
                    rv = STORE_EIO;
                    break;
                }
            }
            text_base64_encode(rec.value, rec.value_len, b64, false);
            json_t *item =
                meta_json(rec.create_index, rec.mod_index, rec.version);
            json_object_set_new(item, "key", key_json(key, klen));
            json_object_set_new(item, "value", json_string(b64));
            json_array_append_new(items, item);
            bytes += rec.value_len;
        }
        count++;
        last = key;
        last_len = klen;
    }
    if (more && last != NULL) {
        char *token = malloc(text_base64_size(last_len));
        if (token != NULL) {
            text_base64_encode(last, last_len, token, true);
            next = json_string(token);
            free(token);
        }
    }
    store_cursor_close(&c);
    store_txn_abort(&t);
    free(b64);
    if (rv < 0) {
        json_decref(items);
        json_decref(next);
        http_reply_error(req, 500, "store: %s", store_strerror(rv));
        return;
    }
    api_read_headers(a, req, lin);
    api_reply_json(req, 200,
                   json_pack("{s:o, s:o, s:I}", q.keys_only ? "keys" : "items",
                             items, "next", next, "index",
                             (json_int_t)node_applied_index(a->node)));
}

static void list_serve_stale(struct api *a, struct http_req *req)
{
    list_serve(a, req, false);
}

static void list_serve_linearizable(struct api *a, struct http_req *req)
{
    list_serve(a, req, true);
}

/* GET /v1/kv?prefix=P | ?start=A&end=B  [&limit=N][&keys][&continue=T]
 *   -> 200 {"items": [...], "next": TOKEN|null, "index": N} */
void api_kv_list(struct api *a, struct http_req *req)
{
    struct list_query q;
    bool lin;

    if (list_parse(a, req, &q) != 0 || api_consistency(req, true, &lin) != 0)
        return;
    api_read(a, req, lin, lin ? list_serve_linearizable : list_serve_stale);
}

/* --- transactions ------------------------------------------------------------- */

struct txn_mem
{
    struct command_compare compares[TXN_MAX_COMPARES];
    struct command_op ops[TXN_MAX_OPS];
    size_t data_used, data_cap;
    uint8_t data[]; /* decoded base64 values */
};

/* Take a value from "value" (text) or "value_base64" in @obj.  Returns 1
 * when present, 0 when absent, -1 after answering 400. */
static int txn_value(struct api *a, struct http_req *req, json_t *obj,
                     struct txn_mem *m, struct command_bytes *out,
                     const char *where)
{
    json_t *text = json_object_get(obj, "value");
    json_t *b64 = json_object_get(obj, "value_base64");

    if (text != NULL && b64 != NULL) {
        http_reply_error(req, 400, "%s: give value or value_base64, not both",
                         where);
        return -1;
    }
    if (text != NULL) {
        if (!json_is_string(text)) {
            http_reply_error(req, 400, "%s: value must be a string", where);
            return -1;
        }
        out->base = (const uint8_t *)json_string_value(text);
        out->len = json_string_length(text);
    } else if (b64 != NULL) {
        size_t len;
        if (!json_is_string(b64) ||
            (len = json_string_length(b64)) / 4 * 3 + 3 >
                m->data_cap - m->data_used) {
            http_reply_error(req, 400, "%s: value_base64 must be a base64 "
                                       "string", where);
            return -1;
        }
        long n = text_base64_decode(json_string_value(b64), len,
                                    m->data + m->data_used);
        if (n < 0) {
            http_reply_error(req, 400, "%s: value_base64 is not base64",
                             where);
            return -1;
        }
        out->base = m->data + m->data_used;
        out->len = (size_t)n;
        m->data_used += (size_t)n;
    } else {
        return 0;
    }
    if (out->len > a->cfg->max_value_size) {
        http_reply_error(req, 413, "%s: value is %zu bytes; the limit is %zu",
                         where, out->len, a->cfg->max_value_size);
        return -1;
    }
    return 1;
}

static int txn_key(struct api *a, struct http_req *req, json_t *obj,
                   struct command_bytes *out, const char *where)
{
    json_t *k = json_object_get(obj, "key");
    if (!json_is_string(k)) {
        http_reply_error(req, 400, "%s: key must be a string", where);
        return -1;
    }
    out->base = (const uint8_t *)json_string_value(k);
    out->len = json_string_length(k);
    return api_check_key(a, req, out->base, out->len);
}

static int only_fields(struct http_req *req, json_t *obj,
                       const char *const *allowed, const char *where)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool ok = false;
        for (unsigned i = 0; allowed[i] != NULL; i++)
            ok = ok || strcmp(k, allowed[i]) == 0;
        if (!ok) {
            http_reply_error(req, 400, "%s: unknown field \"%s\"", where, k);
            return -1;
        }
    }
    return 0;
}

static int txn_compare(struct api *a, struct http_req *req, json_t *obj,
                       struct txn_mem *m, struct command_compare *c,
                       unsigned i)
{
    static const char *const fields[] = {"key", "mod_index", "version",
                                         "value", "value_base64", NULL};
    char where[32];
    json_t *num;
    int kinds = 0, rv;

    snprintf(where, sizeof where, "compare[%u]", i);
    if (!json_is_object(obj)) {
        http_reply_error(req, 400, "%s must be an object", where);
        return -1;
    }
    if (only_fields(req, obj, fields, where) != 0 ||
        txn_key(a, req, obj, &c->key, where) != 0)
        return -1;
    if ((num = json_object_get(obj, "mod_index")) != NULL) {
        c->kind = CMP_MOD_INDEX;
        kinds++;
    }
    if (json_object_get(obj, "version") != NULL) {
        num = json_object_get(obj, "version");
        c->kind = CMP_VERSION;
        kinds++;
    }
    rv = txn_value(a, req, obj, m, &c->value, where);
    if (rv < 0)
        return -1;
    if (rv == 1) {
        c->kind = CMP_VALUE;
        kinds++;
    }
    if (kinds != 1) {
        http_reply_error(req, 400, "%s needs exactly one of mod_index, "
                                   "version, value, value_base64", where);
        return -1;
    }
    if (c->kind != CMP_VALUE) {
        if (!json_is_integer(num) || json_integer_value(num) < 0) {
            http_reply_error(req, 400, "%s: the index must be a non-negative "
                                       "integer", where);
            return -1;
        }
        c->number = (uint64_t)json_integer_value(num);
    }
    return 0;
}

static int txn_op(struct api *a, struct http_req *req, json_t *obj,
                  struct txn_mem *m, struct command_op *op, const char *list,
                  unsigned i)
{
    static const char *const fields[] = {"op", "key", "value", "value_base64",
                                         NULL};
    char where[32];
    const char *kind;
    int rv;

    snprintf(where, sizeof where, "%s[%u]", list, i);
    if (!json_is_object(obj)) {
        http_reply_error(req, 400, "%s must be an object", where);
        return -1;
    }
    if (only_fields(req, obj, fields, where) != 0 ||
        txn_key(a, req, obj, &op->key, where) != 0)
        return -1;
    kind = json_string_value(json_object_get(obj, "op"));
    if (kind == NULL) {
        http_reply_error(req, 400, "%s: op must be \"put\", \"delete\" or "
                                   "\"get\"", where);
        return -1;
    }
    if (strcmp(kind, "put") == 0)
        op->kind = OP_PUT;
    else if (strcmp(kind, "delete") == 0)
        op->kind = OP_DELETE;
    else if (strcmp(kind, "get") == 0)
        op->kind = OP_GET;
    else {
        http_reply_error(req, 400, "%s: op must be \"put\", \"delete\" or "
                                   "\"get\"", where);
        return -1;
    }
    rv = txn_value(a, req, obj, m, &op->value, where);
    if (rv < 0)
        return -1;
    if ((op->kind == OP_PUT) != (rv == 1)) {
        http_reply_error(req, 400, "%s: a put needs a value; %s takes none",
                         where, op->kind == OP_PUT ? "it" : kind);
        return -1;
    }
    return 0;
}

/* No key written twice in one branch: the outcome would depend on order in
 * ways callers rarely mean. */
static int txn_unique_writes(struct http_req *req, const struct command_op *ops,
                             unsigned n, const char *list)
{
    for (unsigned i = 0; i < n; i++) {
        if (ops[i].kind == OP_GET)
            continue;
        for (unsigned j = i + 1; j < n; j++) {
            if (ops[j].kind != OP_GET && ops[j].key.len == ops[i].key.len &&
                memcmp(ops[j].key.base, ops[i].key.base, ops[i].key.len) == 0) {
                http_reply_error(req, 400, "%s writes key \"%.*s\" twice",
                                 list, (int)(ops[i].key.len > 100
                                                 ? 100 : ops[i].key.len),
                                 ops[i].key.base);
                return -1;
            }
        }
    }
    return 0;
}

static void txn_applied(struct api_op *op, struct http_req *req,
                        const struct fsm_result *res)
{
    const struct fsm_outcome *o = &res->outcomes[0];
    json_t *results = json_array();
    (void)op;

    for (unsigned i = 0; i < o->n_ops; i++) {
        const struct fsm_op_result *r = &res->ops[o->first_op + i];
        json_t *item;
        switch (r->kind) {
        case OP_PUT:
            item = meta_json(r->create_index, r->mod_index, r->version);
            json_object_set_new(item, "op", json_string("put"));
            break;
        case OP_DELETE:
            item = json_pack("{s:s, s:b}", "op", "delete", "deleted",
                             r->found);
            break;
        default:
            if (r->found) {
                char *b64 = malloc(text_base64_size(r->value_len));
                item = meta_json(r->create_index, r->mod_index, r->version);
                if (b64 != NULL) {
                    text_base64_encode(r->value, r->value_len, b64, false);
                    json_object_set_new(item, "value", json_string(b64));
                    free(b64);
                }
            } else {
                item = json_object();
            }
            json_object_set_new(item, "op", json_string("get"));
            json_object_set_new(item, "found", json_boolean(r->found));
            break;
        }
        json_object_set_new(item, "key", key_json(r->key.base, r->key.len));
        json_array_append_new(results, item);
    }
    api_reply_json(req, 200,
                   json_pack("{s:b, s:I, s:o}", "succeeded", o->succeeded,
                             "index", (json_int_t)res->index, "results",
                             results));
}

/* POST /v1/txn   {"compare": [...], "success": [...], "failure": [...]}
 *   -> 200 {"succeeded": bool, "index": N, "results": [...]}
 * All compares and the chosen branch apply atomically, as one entry. */
void api_kv_txn(struct api *a, struct http_req *req)
{
    static const char *const fields[] = {"compare", "success", "failure",
                                         NULL};
    const char *body;
    size_t blen;
    json_error_t jerr;
    json_t *doc, *cmp, *succ, *fail;
    struct api_op *op;
    struct txn_mem *m;
    size_t i;

    body = http_body(req, &blen);
    doc = json_loadb(body ? body : "", blen, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        http_reply_error(req, 400, "invalid JSON: %s (line %d, column %d)",
                         jerr.text, jerr.line, jerr.column);
        return;
    }
    op = api_op_new(a, req);
    if (op == NULL) {
        json_decref(doc);
        return;
    }
    op->doc = doc;
    if (!json_is_object(doc)) {
        http_reply_error(req, 400, "body must be a JSON object with compare, "
                                   "success and failure");
        return;
    }
    if (only_fields(req, doc, fields, "txn") != 0)
        return;
    cmp = json_object_get(doc, "compare");
    succ = json_object_get(doc, "success");
    fail = json_object_get(doc, "failure");
    if ((cmp && !json_is_array(cmp)) || (succ && !json_is_array(succ)) ||
        (fail && !json_is_array(fail))) {
        http_reply_error(req, 400, "compare, success and failure must be "
                                   "arrays");
        return;
    }
    size_t nc = json_array_size(cmp), ns = json_array_size(succ),
           nf = json_array_size(fail);
    if (nc > TXN_MAX_COMPARES || ns + nf > TXN_MAX_OPS) {
        http_reply_error(req, 413, "a transaction has at most %d compares "
                                   "and %d operations",
                         TXN_MAX_COMPARES, TXN_MAX_OPS);
        return;
    }
    /* Decoded base64 is never longer than the body that carried it. */
    op->mem = m = malloc(sizeof *m + blen + 4);
    if (m == NULL) {
        http_reply_error(req, 503, "out of memory");
        return;
    }
    m->data_used = 0;
    m->data_cap = blen + 4;
    for (i = 0; i < nc; i++)
        if (txn_compare(a, req, json_array_get(cmp, i), m, &m->compares[i],
                        (unsigned)i) != 0)
            return;
    for (i = 0; i < ns; i++)
        if (txn_op(a, req, json_array_get(succ, i), m, &m->ops[i], "success",
                   (unsigned)i) != 0)
            return;
    for (i = 0; i < nf; i++)
        if (txn_op(a, req, json_array_get(fail, i), m, &m->ops[ns + i],
                   "failure", (unsigned)i) != 0)
            return;
    if (txn_unique_writes(req, m->ops, (unsigned)ns, "success") != 0 ||
        txn_unique_writes(req, m->ops + ns, (unsigned)nf, "failure") != 0)
        return;
    op->txn = (struct command_txn){m->compares, (unsigned)nc, m->ops,
                                   (unsigned)ns, m->ops + ns, (unsigned)nf};
    op->cmds[0] = (struct command){.type = CMD_TXN, .txn = &op->txn};
    op->n_cmds = 1;
    op->applied = txn_applied;
    api_submit(op);
}
