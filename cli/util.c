/* util.c - small helpers shared by raftkv-cli's commands: a byte buffer,
 * URL percent-encoding, base64 decoding, number parsing, and the printers
 * that keep output consistent across commands (escaped text for humans,
 * one-line JSON for --json, one-line errors on stderr). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CLI_KEY_SHOWN 80 /* bytes of a key quoted in an error */

/* A command-line tool has nothing sensible to do when memory runs out, and
 * checking every allocation would bury the logic. */
void *cli_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fputs("raftkv-cli: out of memory\n", stderr);
        exit(CLI_EXIT_FAILED);
    }
    return q;
}

char *cli_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = cli_xrealloc(NULL, n);
    memcpy(copy, s, n);
    return copy;
}

void cli_buf_add(struct cli_buf *b, const void *data, size_t n)
{
    if (b->cap - b->len <= n || b->data == NULL) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len <= n) {
            if (cap > SIZE_MAX / 2) {
                fputs("raftkv-cli: out of memory\n", stderr);
                exit(CLI_EXIT_FAILED);
            }
            cap *= 2;
        }
        b->data = cli_xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void cli_buf_adds(struct cli_buf *b, const char *s)
{
    cli_buf_add(b, s, strlen(s));
}

/* Everything but RFC 3986 unreserved characters is encoded, "/" included:
 * the server would take a raw "/" literally too, but an encoded one cannot
 * be mistaken for a path separator by anything in between. */
void cli_buf_add_encoded(struct cli_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        int plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
                    ch == '_' || ch == '~';
        if (plain) {
            cli_buf_add(b, &s[i], 1);
            continue;
        }
        char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
        cli_buf_add(b, esc, 3);
    }
}

/* Appends "?name=value" or "&name=value"; a NULL value gives a bare
 * "name" (the API's `keys` flag). */
void cli_buf_add_query(struct cli_buf *b, const char *name, const char *value)
{
    int first = b->data == NULL || strchr(b->data, '?') == NULL;
    cli_buf_adds(b, first ? "?" : "&");
    cli_buf_adds(b, name);
    if (value == NULL)
        return;
    cli_buf_adds(b, "=");
    cli_buf_add_encoded(b, value, strlen(value));
}

void cli_buf_free(struct cli_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Plain decimal only: strtoull alone would accept "-1", " 7" and "0x10". */
int cli_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Standard alphabet; padding optional, so a server that omits it still
 * decodes.  Returns -1 on anything else. */
int cli_base64_decode(const char *in, size_t n, struct cli_buf *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t i = 0;

    cli_buf_add(out, "", 0); /* an empty value is still a string */
    for (; i < n && in[i] != '='; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char byte = (char)((acc >> bits) & 0xff);
            cli_buf_add(out, &byte, 1);
        }
    }
    for (; i < n; i++) {
        if (in[i] != '=')
            return -1;
    }
    return 0;
}

static void put_escaped(FILE *f, const char *s, size_t n, int quote)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\\' || (quote && ch == '"'))
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch == '\r')
            fputs("\\r", f);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\x%02x", ch);
        else
            fputc(ch, f);
    }
}

/* For human output where one item must stay one line: control bytes and
 * backslashes are escaped, everything else (UTF-8 included) is kept. */
void cli_put_escaped(FILE *f, const char *s, size_t n)
{
    put_escaped(f, s, n, 0);
}

void cli_put_quoted(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    put_escaped(f, s, n, 1);
    fputc('"', f);
}

/* A JSON value as a human reads it: strings bare, null as "none". */
void cli_put_json_value(FILE *f, json_t *v)
{
    char *text;

    switch (json_typeof(v)) {
    case JSON_STRING:
        cli_put_escaped(f, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    case JSON_NULL:
        fputs("none", f);
        return;
    default:
        text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (text != NULL)
            fputs(text, f);
        free(text);
        return;
    }
}

/* Parsed once, on demand: a raw GET body is never JSON. */
json_t *cli_response_json(struct cli_response *r)
{
    if (r->json_tried)
        return r->json;
    r->json_tried = 1;
    if (r->body.len == 0)
        return NULL;
    json_t *doc = json_loadb(r->body.data, r->body.len, 0, NULL);
    if (doc != NULL && !json_is_object(doc)) {
        json_decref(doc);
        doc = NULL;
    }
    r->json = doc;
    return doc;
}

/* --json promises the server's JSON as is, on one line: the body is
 * printed verbatim unless it spans lines, in which case it is re-encoded
 * compactly.  A body that is not JSON prints nothing. */
void cli_print_json_line(struct cli_response *r)
{
    json_t *doc = cli_response_json(r);
    if (doc == NULL)
        return;
    size_t len = r->body.len;
    while (len > 0 &&
           (r->body.data[len - 1] == '\n' || r->body.data[len - 1] == '\r'))
        len--;
    if (memchr(r->body.data, '\n', len) == NULL &&
        memchr(r->body.data, '\r', len) == NULL) {
        fwrite(r->body.data, 1, len, stdout);
        fputc('\n', stdout);
        return;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    if (text == NULL)
        return;
    puts(text);
    free(text);
}

static void put_server_error(FILE *f, struct cli_response *r)
{
    json_t *doc = cli_response_json(r);
    json_t *err = doc ? json_object_get(doc, "error") : NULL;
    if (json_is_string(err)) {
        cli_put_escaped(f, json_string_value(err), json_string_length(err));
        return;
    }
    if (r->body.len == 0) {
        fputs("(empty body)", f);
        return;
    }
    size_t n = r->body.len < 200 ? r->body.len : 200;
    cli_put_escaped(f, r->body.data, n);
    if (n < r->body.len)
        fputs("...", f);
}

static void put_outcome_note(FILE *f, const struct cli_response *r)
{
    if (r->maybe_applied)
        fputs("; an earlier attempt of this write failed and may have been "
              "applied",
              f);
}

/* Keys may be 4 KiB long; the error line only needs enough to recognise
 * one.  The cut backs off to a UTF-8 character boundary. */
static void put_key(FILE *f, const char *key)
{
    size_t n = strlen(key);
    size_t shown = n;
    if (n > CLI_KEY_SHOWN) {
        shown = CLI_KEY_SHOWN;
        while (shown > 0 && ((unsigned char)key[shown] & 0xC0) == 0x80)
            shown--;
    }
    fputc(' ', f);
    cli_put_quoted(f, key, shown);
    if (shown < n)
        fprintf(f, "...(%zu bytes)", n);
}

/* The one-line error for an answer that is not a success.  A 409 from a
 * compare-and-set carries the key's current metadata, which is the point
 * of the error, so it is spelled out. */
int cli_fail_response(const struct cli_opts *o, const char *what,
                      const char *key, struct cli_response *r)
{
    if (o->json)
        cli_print_json_line(r);
    fprintf(stderr, "raftkv-cli: %s", what);
    if (key != NULL)
        put_key(stderr, key);
    fputs(": ", stderr);
    put_server_error(stderr, r);

    json_t *doc = cli_response_json(r);
    json_t *cur = doc ? json_object_get(doc, "current") : NULL;
    if (r->status == 409 && cur != NULL) {
        if (json_is_object(cur)) {
            fputs(": current", stderr);
            const char *names[] = {"mod_index", "create_index", "version"};
            for (size_t i = 0; i < 3; i++) {
                json_t *v = json_object_get(cur, names[i]);
                if (v == NULL)
                    continue;
                fprintf(stderr, " %s=", names[i]);
                cli_put_json_value(stderr, v);
            }
        } else {
            fputs(": the key does not exist", stderr);
        }
        if (o->have_cas)
            fprintf(stderr, ", wanted mod_index=%llu",
                    (unsigned long long)o->cas);
    }
    fprintf(stderr, " (HTTP %ld from %s)", r->status, r->endpoint);
    put_outcome_note(stderr, r);
    fputc('\n', stderr);
    return CLI_EXIT_FAILED;
}

int cli_fail_unexpected(const char *what, struct cli_response *r)
{
    fprintf(stderr,
            "raftkv-cli: %s: unexpected answer (HTTP %ld from %s): ", what,
            r->status, r->endpoint);
    put_server_error(stderr, r);
    fputc('\n', stderr);
    return CLI_EXIT_FAILED;
}

/* Writes answer with a small JSON object; humans get "OK name=value ..."
 * for the fields that matter to them, --json gets the object itself. */
int cli_write_result(const struct cli_opts *o, const char *what,
                     struct cli_response *r, const char *const *fields)
{
    json_t *doc = cli_response_json(r);
    if (doc == NULL)
        return cli_fail_unexpected(what, r);
    if (o->json) {
        cli_print_json_line(r);
        return CLI_EXIT_OK;
    }
    fputs("OK", stdout);
    for (; *fields != NULL; fields++) {
        json_t *v = json_object_get(doc, *fields);
        if (v == NULL)
            continue;
        printf(" %s=", *fields);
        cli_put_json_value(stdout, v);
    }
    fputc('\n', stdout);
    return CLI_EXIT_OK;
}
