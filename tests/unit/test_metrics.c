/* Unit tests for the Prometheus metrics (src/metrics.c).
 *
 * Every render is read back by expo_parse below, a deliberately strict
 * reader of the text exposition format 0.0.4: it rejects anything a
 * Prometheus server would reject and, beyond that, anything raftkv has
 * promised not to emit (missing HELP, a family split in two, empty lines,
 * timestamps).  The tests then query the parsed samples instead of matching
 * substrings, so they check values, not formatting accidents.  The last
 * test feeds the parser broken input, because a checker that accepts
 * everything proves nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* --- a strict exposition parser ------------------------------------------ */

#define EXPO_MAX_LABELS 4
#define EXPO_MAX_SAMPLES 2048
#define EXPO_MAX_FAMILIES 64

struct series
{
    char name[80];
    int nlabels;
    char lname[EXPO_MAX_LABELS][32];
    char lval[EXPO_MAX_LABELS][96]; /* unescaped */
    char key[400];                  /* name{sorted labels}: identity */
    char group[400];                /* sorted labels without le */
};

struct family
{
    char name[80];
    char type[16]; /* "" until the TYPE line */
};

struct sample
{
    struct series s;
    int fam;
    double value;
};

struct expo
{
    struct family fam[EXPO_MAX_FAMILIES];
    int nfam;
    struct sample smp[EXPO_MAX_SAMPLES];
    int ns;
    char err[256];
};

static int expo_fail(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int expo_fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_name_start(char c, int metric)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (metric && c == ':');
}

static int is_name_char(char c, int metric)
{
    return is_name_start(c, metric) || (c >= '0' && c <= '9');
}

/* A metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) or label name (no colons). */
static int parse_name(const char **pp, char *out, size_t cap, int metric)
{
    const char *p = *pp;
    size_t n = 0;
    if (!is_name_start(*p, metric))
        return -1;
    while (is_name_char(p[n], metric))
        n++;
    if (n >= cap)
        return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    *pp = p + n;
    return 0;
}

static void append_escaped(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(dst);
    for (; *v != '\0' && n + 3 < cap; v++) {
        if (*v == '\\' || *v == '"' || *v == '\n') {
            dst[n++] = '\\';
            dst[n++] = *v == '\n' ? 'n' : *v;
        } else {
            dst[n++] = *v;
        }
    }
    dst[n] = '\0';
}

/* The identity of a series is its name and its label set, in any order. */
static void series_keys(struct series *s)
{
    int order[EXPO_MAX_LABELS];
    for (int i = 0; i < s->nlabels; i++)
        order[i] = i;
    for (int i = 1; i < s->nlabels; i++)
        for (int j = i; j > 0 && strcmp(s->lname[order[j - 1]],
                                        s->lname[order[j]]) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    snprintf(s->key, sizeof s->key, "%s{", s->name);
    s->group[0] = '\0';
    for (int i = 0; i < s->nlabels; i++) {
        int k = order[i];
        char *dst[2] = {s->key, s->group};
        for (int d = 0; d < 2; d++) {
            if (d == 1 && strcmp(s->lname[k], "le") == 0)
                continue;
            size_t n = strlen(dst[d]);
            snprintf(dst[d] + n, sizeof s->key - n, "%s=\"", s->lname[k]);
            append_escaped(dst[d], sizeof s->key, s->lval[k]);
            n = strlen(dst[d]);
            snprintf(dst[d] + n, sizeof s->key - n, "\",");
        }
    }
    strncat(s->key, "}", sizeof s->key - strlen(s->key) - 1);
}

/* name, optionally followed by {label="value",...}.  Leaves *pp after it. */
static int parse_series(const char **pp, struct series *s, char *err,
                        size_t cap)
{
    const char *p = *pp;
    memset(s, 0, sizeof *s);
    if (parse_name(&p, s->name, sizeof s->name, 1) != 0)
        return expo_fail(err, cap, "bad metric name");
    if (*p == '{') {
        p++;
        for (;;) {
            if (s->nlabels == EXPO_MAX_LABELS)
                return expo_fail(err, cap, "too many labels");
            char *ln = s->lname[s->nlabels], *lv = s->lval[s->nlabels];
            /* A '}' here means "{}" or a trailing comma: both refused. */
            if (parse_name(&p, ln, sizeof s->lname[0], 0) != 0)
                return expo_fail(err, cap, "bad label name");
            if (strncmp(ln, "__", 2) == 0)
                return expo_fail(err, cap, "reserved label name %s", ln);
            for (int i = 0; i < s->nlabels; i++)
                if (strcmp(s->lname[i], ln) == 0)
                    return expo_fail(err, cap, "label %s twice", ln);
            if (p[0] != '=' || p[1] != '"')
                return expo_fail(err, cap, "expected =\" after %s", ln);
            p += 2;
            size_t n = 0;
            while (*p != '"') {
                char c = *p++;
                if (c == '\0')
                    return expo_fail(err, cap, "unterminated label value");
                if ((unsigned char)c < 0x20)
                    return expo_fail(err, cap, "control byte in label");
                if (c == '\\') {
                    c = *p++;
                    if (c == 'n')
                        c = '\n';
                    else if (c != '\\' && c != '"')
                        return expo_fail(err, cap, "bad escape in label");
                }
                if (n + 1 >= sizeof s->lval[0])
                    return expo_fail(err, cap, "label value too long");
                lv[n++] = c;
            }
            lv[n] = '\0';
            p++;
            s->nlabels++;
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == '}') {
                p++;
                break;
            }
            return expo_fail(err, cap, "expected , or } after label");
        }
    }
    series_keys(s);
    *pp = p;
    return 0;
}

/* Go's ParseFloat spellings that Prometheus documents: decimal, exponent,
 * +Inf, -Inf, NaN.  Nothing else (no hex, no "inf"). */
static int parse_value(const char *p, double *out)
{
    if (strcmp(p, "+Inf") == 0 || strcmp(p, "-Inf") == 0) {
        *out = p[0] == '+' ? INFINITY : -INFINITY;
        return 0;
    }
    if (strcmp(p, "NaN") == 0) {
        *out = NAN;
        return 0;
    }
    if (*p == '\0' || strspn(p, "0123456789.eE+-") != strlen(p))
        return -1;
    char *end;
    *out = strtod(p, &end);
    return *end == '\0' ? 0 : -1;
}

static int family_find(const struct expo *e, const char *name)
{
    for (int i = 0; i < e->nfam; i++)
        if (strcmp(e->fam[i].name, name) == 0)
            return i;
    return -1;
}

/* Whether family @f's samples may be called @name. */
static int family_owns(const struct family *f, const char *name)
{
    size_t n = strlen(f->name);
    if (strcmp(f->type, "histogram") != 0)
        return strcmp(f->name, name) == 0;
    return strncmp(name, f->name, n) == 0 &&
           (strcmp(name + n, "_bucket") == 0 || strcmp(name + n, "_sum") == 0 ||
            strcmp(name + n, "_count") == 0);
}

static const char *const family_suffixes[] = {"", "_bucket", "_sum",
                                              "_count"};

/* Two families must never claim the same sample name. */
static int family_collides(const struct expo *e, int f)
{
    for (int i = 0; i < e->nfam; i++) {
        if (i == f)
            continue;
        for (int s = 0; s < 4; s++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", e->fam[f].name,
                     family_suffixes[s]);
            if (family_owns(&e->fam[i], name) &&
                family_owns(&e->fam[f], name))
                return 1;
        }
    }
    return 0;
}

static int expo_meta(struct expo *e, const char *line)
{
    char name[80];
    const char *p = line + 7;
    int help = strncmp(line, "# HELP ", 7) == 0;

    if (!help && strncmp(line, "# TYPE ", 7) != 0)
        return expo_fail(e->err, sizeof e->err, "stray comment");
    if (parse_name(&p, name, sizeof name, 1) != 0 || *p != ' ')
        return expo_fail(e->err, sizeof e->err, "bad name in %.6s", line + 2);
    p++;
    if (help) {
        /* HELP opens a family; seeing the name again means the family was
         * split or repeated. */
        if (family_find(e, name) >= 0)
            return expo_fail(e->err, sizeof e->err, "second HELP for %s",
                             name);
        if (*p == '\0')
            return expo_fail(e->err, sizeof e->err, "empty HELP for %s", name);
        for (; *p != '\0'; p++)
            if (*p == '\\' && p[1] != '\\' && p[1] != 'n')
                return expo_fail(e->err, sizeof e->err, "bad escape in HELP");
            else if (*p == '\\')
                p++;
        if (e->nfam == EXPO_MAX_FAMILIES)
            return expo_fail(e->err, sizeof e->err, "too many families");
        snprintf(e->fam[e->nfam++].name, sizeof e->fam[0].name, "%s", name);
        return 0;
    }
    int f = e->nfam - 1;
    if (f < 0 || strcmp(e->fam[f].name, name) != 0)
        return expo_fail(e->err, sizeof e->err,
                         "TYPE %s not right after its HELP", name);
    if (e->fam[f].type[0] != '\0')
        return expo_fail(e->err, sizeof e->err, "second TYPE for %s", name);
    if (strcmp(p, "counter") != 0 && strcmp(p, "gauge") != 0 &&
        strcmp(p, "histogram") != 0)
        return expo_fail(e->err, sizeof e->err, "type %s for %s", p, name);
    snprintf(e->fam[f].type, sizeof e->fam[f].type, "%s", p);
    if (family_collides(e, f))
        return expo_fail(e->err, sizeof e->err, "%s collides", name);
    return 0;
}

static int expo_sample(struct expo *e, const char *line)
{
    struct sample *s = &e->smp[e->ns];
    const char *p = line;
    int f = e->nfam - 1;

    if (e->ns == EXPO_MAX_SAMPLES)
        return expo_fail(e->err, sizeof e->err, "too many samples");
    if (parse_series(&p, &s->s, e->err, sizeof e->err) != 0)
        return -1;
    /* Samples must follow their own family's TYPE, contiguously. */
    if (f < 0 || e->fam[f].type[0] == '\0' ||
        !family_owns(&e->fam[f], s->s.name))
        return expo_fail(e->err, sizeof e->err,
                         "%s outside its family or before TYPE", s->s.name);
    if (*p++ != ' ')
        return expo_fail(e->err, sizeof e->err, "no space before value");
    /* raftkv never sends timestamps, so a second field is an error. */
    if (strchr(p, ' ') != NULL || parse_value(p, &s->value) != 0)
        return expo_fail(e->err, sizeof e->err, "bad value \"%s\"", p);
    for (int i = 0; i < e->ns; i++)
        if (strcmp(e->smp[i].s.key, s->s.key) == 0)
            return expo_fail(e->err, sizeof e->err, "duplicate series %s",
                             s->s.key);

    int has_le = 0;
    for (int i = 0; i < s->s.nlabels; i++)
        has_le |= strcmp(s->s.lname[i], "le") == 0;
    size_t n = strlen(e->fam[f].name);
    int bucket = strcmp(e->fam[f].type, "histogram") == 0 &&
                 strcmp(s->s.name + n, "_bucket") == 0;
    if (bucket != has_le)
        return expo_fail(e->err, sizeof e->err, "le misplaced on %s",
                         s->s.key);
    if (strcmp(e->fam[f].type, "gauge") != 0 &&
        strcmp(s->s.name + n, "_sum") != 0 && !(s->value >= 0))
        return expo_fail(e->err, sizeof e->err, "negative count %s",
                         s->s.key);
    s->fam = f;
    e->ns++;
    return 0;
}

static double le_of(const struct sample *s)
{
    double v;
    for (int i = 0; i < s->s.nlabels; i++)
        if (strcmp(s->s.lname[i], "le") == 0)
            return parse_value(s->s.lval[i], &v) == 0 ? v : NAN;
    return NAN;
}

static const struct sample *find_named(const struct expo *e, const char *name,
                                       const char *group)
{
    for (int i = 0; i < e->ns; i++)
        if (strcmp(e->smp[i].s.name, name) == 0 &&
            strcmp(e->smp[i].s.group, group) == 0)
            return &e->smp[i];
    return NULL;
}

/* Per label set: buckets in increasing le, non-decreasing counts, ending at
 * +Inf, which must equal _count; _sum present; no _sum/_count orphans. */
static int expo_check_histogram(struct expo *e, int f)
{
    char bucket[128], sum[128], count[128];
    snprintf(bucket, sizeof bucket, "%s_bucket", e->fam[f].name);
    snprintf(sum, sizeof sum, "%s_sum", e->fam[f].name);
    snprintf(count, sizeof count, "%s_count", e->fam[f].name);

    for (int i = 0; i < e->ns; i++) {
        const struct sample *s = &e->smp[i];
        if (s->fam != f)
            continue;
        if (strcmp(s->s.name, bucket) != 0) {
            if (find_named(e, bucket, s->s.group) == NULL)
                return expo_fail(e->err, sizeof e->err, "%s without buckets",
                                 s->s.key);
            continue;
        }
        if (find_named(e, bucket, s->s.group) != s)
            continue; /* not the first bucket of its group */
        double le = -INFINITY, prev = 0;
        for (int j = i; j < e->ns; j++) {
            const struct sample *b = &e->smp[j];
            if (strcmp(b->s.name, bucket) != 0 ||
                strcmp(b->s.group, s->s.group) != 0)
                continue;
            double bl = le_of(b);
            if (isinf(le) && le > 0)
                return expo_fail(e->err, sizeof e->err, "bucket after +Inf");
            if (isnan(bl) || !(bl > le))
                return expo_fail(e->err, sizeof e->err, "le not increasing");
            if (b->value < prev || b->value != floor(b->value))
                return expo_fail(e->err, sizeof e->err, "bucket %s decreases",
                                 b->s.key);
            le = bl;
            prev = b->value;
        }
        if (!(isinf(le) && le > 0))
            return expo_fail(e->err, sizeof e->err, "no +Inf bucket");
        const struct sample *c = find_named(e, count, s->s.group);
        if (c == NULL || c->value != prev)
            return expo_fail(e->err, sizeof e->err, "_count != +Inf bucket");
        if (find_named(e, sum, s->s.group) == NULL)
            return expo_fail(e->err, sizeof e->err, "no _sum");
    }
    return 0;
}

/* 0 when @text is a valid exposition, else -1 with e->err set. */
static int expo_parse(struct expo *e, const char *text, size_t len)
{
    char line[1024];
    int lineno = 0;

    memset(e, 0, sizeof *e);
    if (strlen(text) != len)
        return expo_fail(e->err, sizeof e->err, "length or NUL mismatch");
    if (len == 0 || text[len - 1] != '\n')
        return expo_fail(e->err, sizeof e->err, "no final newline");
    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = (size_t)(nl - p);
        lineno++;
        if (n == 0 || n >= sizeof line)
            return expo_fail(e->err, sizeof e->err, "line %d: length %zu",
                             lineno, n);
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl + 1;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] > 0x7e)
                return expo_fail(e->err, sizeof e->err,
                                 "line %d: byte 0x%02x", lineno,
                                 (unsigned char)line[i]);
        int rc = line[0] == '#' ? expo_meta(e, line) : expo_sample(e, line);
        if (rc != 0) {
            char why[sizeof e->err];
            snprintf(why, sizeof why, "%s", e->err);
            return expo_fail(e->err, sizeof e->err, "line %d: %s", lineno,
                             why);
        }
    }
    for (int f = 0; f < e->nfam; f++) {
        if (e->fam[f].type[0] == '\0')
            return expo_fail(e->err, sizeof e->err, "no TYPE for %s",
                             e->fam[f].name);
        if (strcmp(e->fam[f].type, "histogram") == 0 &&
            expo_check_histogram(e, f) != 0)
            return -1;
    }
    return 0;
}

/* --- test helpers -------------------------------------------------------- */

static const struct metrics_gauges no_gauges;

static char *render(const struct metrics *m, const struct metrics_gauges *g)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(m, g, &out, &len), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

/* Render and parse; fails the test with the parser's reason. */
static struct expo *scrape(const struct metrics *m,
                           const struct metrics_gauges *g)
{
    char *text = render(m, g);
    struct expo *e = calloc(1, sizeof *e);
    assert_non_null(e);
    if (expo_parse(e, text, strlen(text)) != 0)
        fail_msg("invalid exposition: %s\n%s", e->err, text);
    free(text);
    return e;
}

/* The sample named by a selector such as name{b="2",a="1"} (any label
 * order), or NULL. */
static const struct sample *sample_at(const struct expo *e, const char *sel)
{
    struct series s;
    char err[128];
    const char *p = sel;
    if (parse_series(&p, &s, err, sizeof err) != 0 || *p != '\0')
        fail_msg("bad selector %s: %s", sel, err);
    for (int i = 0; i < e->ns; i++)
        if (strcmp(e->smp[i].s.key, s.key) == 0)
            return &e->smp[i];
    return NULL;
}

static double value_at(const struct expo *e, const char *sel)
{
    const struct sample *s = sample_at(e, sel);
    if (s == NULL)
        fail_msg("no sample %s", sel);
    return s->value;
}

static const struct family *family_at(const struct expo *e, const char *name)
{
    int f = family_find(e, name);
    return f < 0 ? NULL : &e->fam[f];
}

static int samples_named(const struct expo *e, const char *name)
{
    int n = 0;
    for (int i = 0; i < e->ns; i++)
        n += strcmp(e->smp[i].s.name, name) == 0;
    return n;
}

/* Sum of a family's samples whose label @label equals @value. */
static double sum_where(const struct expo *e, const char *name,
                        const char *label, const char *value)
{
    double sum = 0;
    for (int i = 0; i < e->ns; i++) {
        const struct series *s = &e->smp[i].s;
        if (strcmp(s->name, name) != 0)
            continue;
        for (int l = 0; l < s->nlabels; l++)
            if (strcmp(s->lname[l], label) == 0 &&
                strcmp(s->lval[l], value) == 0)
                sum += e->smp[i].value;
    }
    return sum;
}

static void http(struct metrics *m, enum metrics_route r, const char *method,
                 int status, double seconds)
{
    metrics_http(m, r, method, strlen(method), status, seconds);
}

#define REQ "raftkv_http_requests_total"
#define DUR "raftkv_http_request_duration_seconds"

static const char *const counter_names[] = {
    "raftkv_elections_total",          "raftkv_snapshots_taken_total",
    "raftkv_snapshots_restored_total", "raftkv_forwarded_requests_total",
    "raftkv_forward_errors_total",     "raftkv_read_barriers_total",
    "raftkv_linearizable_reads_total", "raftkv_stale_reads_total",
    "raftkv_writes_committed_total",   "raftkv_writes_failed_total",
    "raftkv_entries_proposed_total",   "raftkv_commands_proposed_total",
    "raftkv_read_rounds_total",        "raftkv_read_rounds_failed_total",
    "raftkv_read_questions_total",     "raftkv_heap_trims_total",
    "raftkv_entries_held_total",       "raftkv_entry_holds_expired_total",
    "raftkv_log_stall_transfers_total", "raftkv_read_indexes_given_total",
    "raftkv_follower_read_index_requests_total",
    "raftkv_follower_read_relays_total",
};

static const char *const gauge_names[] = {
    "raftkv_raft_term",           "raftkv_raft_commit_index",
    "raftkv_raft_applied_index",  "raftkv_raft_last_log_index",
    "raftkv_raft_snapshot_index", "raftkv_raft_is_leader",
    "raftkv_cluster_members",     "raftkv_cluster_voters",
    "raftkv_store_keys",          "raftkv_store_size_bytes",
    "raftkv_uptime_seconds",
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* --- tests --------------------------------------------------------------- */

/* A node that has served nothing still exposes every family, each
 * announced once, named by the conventions, and the request families are
 * announced without samples rather than with made-up zeros. */
static void test_fresh_node_renders_every_family(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    struct expo *e = scrape(m, &no_gauges);

    assert_int_equal(e->nfam, 2 + COUNT_OF(counter_names) +
                                  COUNT_OF(gauge_names));
    assert_string_equal(family_at(e, REQ)->type, "counter");
    assert_string_equal(family_at(e, DUR)->type, "histogram");
    assert_int_equal(samples_named(e, REQ), 0);
    assert_int_equal(samples_named(e, DUR "_count"), 0);
    for (size_t i = 0; i < COUNT_OF(counter_names); i++) {
        assert_non_null(family_at(e, counter_names[i]));
        assert_string_equal(family_at(e, counter_names[i])->type, "counter");
        assert_true(value_at(e, counter_names[i]) == 0);
    }
    for (size_t i = 0; i < COUNT_OF(gauge_names); i++) {
        assert_non_null(family_at(e, gauge_names[i]));
        assert_string_equal(family_at(e, gauge_names[i])->type, "gauge");
        assert_true(value_at(e, gauge_names[i]) == 0);
    }
    /* raftkv_ prefix, snake_case, counters end in _total. */
    for (int f = 0; f < e->nfam; f++) {
        const char *name = e->fam[f].name;
        size_t n = strlen(name);
        assert_int_equal(strncmp(name, "raftkv_", 7), 0);
        assert_int_equal(strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_"),
                         n);
        assert_null(strstr(name, "__"));
        if (strcmp(e->fam[f].type, "counter") == 0)
            assert_string_equal(name + n - 6, "_total");
    }
    free(e);

    /* Without gauges the rest is still a valid exposition. */
    e = scrape(m, NULL);
    assert_int_equal(e->nfam, 2 + COUNT_OF(counter_names));
    assert_null(family_at(e, "raftkv_raft_term"));
    free(e);
    metrics_free(m);
}

/* A client writes a key, reads it back twice, misses once, probes health
 * and stumbles on a few odd requests: each lands in exactly one series
 * labelled by route, method and the exact status code. */
static void test_requests_labelled_by_route_method_code(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);

    http(m, METRICS_ROUTE_SET, "POST", 200, 0.002);
    http(m, METRICS_ROUTE_GET, "GET", 200, 0.0003);
    http(m, METRICS_ROUTE_GET, "GET", 200, 0.0004);
    http(m, METRICS_ROUTE_GET, "GET", 404, 0.0002);
    http(m, METRICS_ROUTE_HEALTH, "HEAD", 200, 0.00001);
    http(m, METRICS_ROUTE_KV, "PUT", 503, 0.5);
    http(m, METRICS_ROUTE_KV, "DELETE", 204, 0.01);
    http(m, METRICS_ROUTE_KV, "PATCH", 405, 0.0001);
    /* Methods are case-sensitive, and only method_len bytes count. */
    http(m, METRICS_ROUTE_KV, "get", 405, 0.0001);
    metrics_http(m, METRICS_ROUTE_KV, "GETAWAY", 3, 200, 0.001);
    metrics_http(m, METRICS_ROUTE_KV, NULL, 0, 400, 0.001);
    http(m, METRICS_ROUTE_OTHER, "GET", 404, 0.0001);
    /* An out-of-range route is counted, as "other". */
    http(m, (enum metrics_route)METRICS_ROUTE_COUNT, "GET", 404, 0.0001);

    struct expo *e = scrape(m, &no_gauges);
    assert_true(value_at(e, REQ "{route=\"set\",method=\"POST\",code=\"200\"}")
                == 1);
    assert_true(value_at(e, REQ "{route=\"get\",method=\"GET\",code=\"200\"}")
                == 2);
    assert_true(value_at(e, REQ "{route=\"get\",method=\"GET\",code=\"404\"}")
                == 1);
    assert_true(
        value_at(e, REQ "{route=\"health\",method=\"HEAD\",code=\"200\"}") ==
        1);
    assert_true(value_at(e, REQ "{route=\"kv\",method=\"PUT\",code=\"503\"}")
                == 1);
    assert_true(
        value_at(e, REQ "{route=\"kv\",method=\"DELETE\",code=\"204\"}") == 1);
    assert_true(
        value_at(e, REQ "{route=\"kv\",method=\"OTHER\",code=\"405\"}") == 2);
    assert_true(value_at(e, REQ "{route=\"kv\",method=\"GET\",code=\"200\"}")
                == 1);
    assert_true(
        value_at(e, REQ "{route=\"kv\",method=\"OTHER\",code=\"400\"}") == 1);
    assert_true(
        value_at(e, REQ "{route=\"other\",method=\"GET\",code=\"404\"}") == 2);
    /* Only what was seen: 10 series, nothing for unseen combinations. */
    assert_int_equal(samples_named(e, REQ), 10);
    assert_null(
        sample_at(e, REQ "{route=\"set\",method=\"GET\",code=\"200\"}"));
    assert_null(
        sample_at(e, REQ "{route=\"txn\",method=\"POST\",code=\"200\"}"));

    /* The histogram saw the same requests per route. */
    assert_int_equal(samples_named(e, DUR "_count"), 5);
    assert_true(value_at(e, DUR "_count{route=\"get\"}") == 3);
    assert_true(value_at(e, DUR "_count{route=\"kv\"}") == 6);
    assert_true(value_at(e, DUR "_count{route=\"other\"}") == 2);
    assert_null(sample_at(e, DUR "_count{route=\"txn\"}"));
    for (int i = 0; i < e->ns; i++)
        if (strcmp(e->smp[i].s.name, DUR "_count") == 0)
            assert_true(sum_where(e, REQ, "route", e->smp[i].s.lval[0]) ==
                        e->smp[i].value);
    free(e);
    metrics_free(m);
}

/* Durations land in the first bucket whose bound they do not exceed
 * (bounds are inclusive), buckets are cumulative, and nonsense durations
 * count as zero instead of poisoning the sum. */
static void test_duration_buckets(void **state)
{
    (void)state;
    static const char *const les[] = {
        "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
        "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
        "1",      "2.5",     "5",      "10",    "+Inf",
    };
    struct metrics *m = metrics_new();
    assert_non_null(m);

    http(m, METRICS_ROUTE_TXN, "POST", 200, 0.00005); /* le=0.0001 */
    http(m, METRICS_ROUTE_TXN, "POST", 200, 0.0001);  /* le=0.0001 */
    http(m, METRICS_ROUTE_TXN, "POST", 200, 0.0003);  /* le=0.0005 */
    http(m, METRICS_ROUTE_TXN, "POST", 200, 0.2);     /* le=0.25 */
    http(m, METRICS_ROUTE_TXN, "POST", 504, 10);      /* le=10 */
    http(m, METRICS_ROUTE_TXN, "POST", 504, 12.5);    /* +Inf only */
    http(m, METRICS_ROUTE_TXN, "POST", 200, -1);      /* clock stepped */
    http(m, METRICS_ROUTE_TXN, "POST", 200, NAN);
    http(m, METRICS_ROUTE_TXN, "POST", 200, INFINITY);

    struct expo *e = scrape(m, &no_gauges);
    const double want[] = {5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 8, 9};
    int nb = 0;
    for (int i = 0; i < e->ns; i++) {
        const struct sample *s = &e->smp[i];
        if (strcmp(s->s.name, DUR "_bucket") != 0)
            continue;
        assert_true(nb < (int)COUNT_OF(les));
        char sel[160];
        snprintf(sel, sizeof sel, DUR "_bucket{route=\"txn\",le=\"%s\"}",
                 les[nb]);
        assert_ptr_equal(sample_at(e, sel), s); /* in order, exact le text */
        assert_true(s->value == want[nb]);
        nb++;
    }
    assert_int_equal(nb, COUNT_OF(les));
    assert_true(value_at(e, DUR "_count{route=\"txn\"}") == 9);
    double sum = value_at(e, DUR "_sum{route=\"txn\"}");
    assert_true(fabs(sum - (0.00005 + 0.0001 + 0.0003 + 0.2 + 10 + 12.5)) <
                1e-9);
    assert_true(value_at(e, REQ "{route=\"txn\",method=\"POST\",code=\"200\"}")
                == 7);
    free(e);
    metrics_free(m);
}

/* Counters only go up by what was added, one family each, exact to the
 * last digit even past 2^53 (printed as integers, not doubles). */
static void test_counters_add_up(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);

    metrics_count(m, METRICS_ELECTIONS, 1);
    metrics_count(m, METRICS_ELECTIONS, 1);
    metrics_count(m, METRICS_WRITES_COMMITTED, 5);
    metrics_count(m, METRICS_WRITES_COMMITTED, 0);
    metrics_count(m, METRICS_WRITES_COMMITTED, 37);
    metrics_count(m, METRICS_LINEARIZABLE_READS, 3);
    metrics_count(m, METRICS_BARRIERS, 2);
    metrics_count(m, METRICS_FORWARD_ERRORS, UINT64_MAX - 1);
    metrics_count(m, METRICS_FORWARD_ERRORS, 1);
    /* Not a counter: ignored, and so is a missing registry. */
    metrics_count(m, (enum metrics_counter)METRICS_COUNTER_COUNT, 9);
    metrics_count(NULL, METRICS_ELECTIONS, 1);
    http(NULL, METRICS_ROUTE_GET, "GET", 200, 0.1);

    assert_int_equal(metrics_get(m, METRICS_ELECTIONS), 2);
    assert_int_equal(metrics_get(m, METRICS_WRITES_COMMITTED), 42);
    assert_int_equal(metrics_get(m, METRICS_LINEARIZABLE_READS), 3);
    assert_int_equal(metrics_get(m, METRICS_BARRIERS), 2);
    assert_int_equal(metrics_get(m, METRICS_STALE_READS), 0);
    assert_true(metrics_get(m, METRICS_FORWARD_ERRORS) == UINT64_MAX);
    assert_int_equal(
        metrics_get(m, (enum metrics_counter)METRICS_COUNTER_COUNT), 0);

    char *text = render(m, &no_gauges);
    assert_non_null(strstr(text, "\nraftkv_forward_errors_total "
                                 "18446744073709551615\n"));
    free(text);

    struct expo *e = scrape(m, &no_gauges);
    assert_true(value_at(e, "raftkv_elections_total") == 2);
    assert_true(value_at(e, "raftkv_writes_committed_total") == 42);
    assert_true(value_at(e, "raftkv_linearizable_reads_total") == 3);
    assert_true(value_at(e, "raftkv_read_barriers_total") == 2);
    assert_true(value_at(e, "raftkv_stale_reads_total") == 0);
    assert_true(value_at(e, "raftkv_writes_failed_total") == 0);
    /* Every enum value has its own family and its own single sample. */
    for (size_t i = 0; i < COUNT_OF(counter_names); i++) {
        assert_int_equal(samples_named(e, counter_names[i]), 1);
        assert_true(value_at(e, counter_names[i]) ==
                    (double)metrics_get(m, (enum metrics_counter)i));
    }
    free(e);
    metrics_free(m);
}

/* The node's state at scrape time comes out as given. */
static void test_gauges_from_node_state(void **state)
{
    (void)state;
    struct metrics *m = metrics_new();
    assert_non_null(m);
    struct metrics_gauges g = {
        .term = 7,
        .commit_index = 120,
        .applied_index = 119,
        .last_log_index = 121,
        .snapshot_index = 100,
        .is_leader = 5, /* any true value is 1 */
        .members = 3,
        .voters = 3,
        .keys = 42,
        .db_bytes = 1ULL << 40,
        .uptime_seconds = 12.5,
    };

    char *text = render(m, &g);
    assert_non_null(strstr(text, "\nraftkv_uptime_seconds 12.5\n"));
    assert_non_null(strstr(text, "\nraftkv_store_size_bytes 1099511627776\n"));
    free(text);

    struct expo *e = scrape(m, &g);
    assert_true(value_at(e, "raftkv_raft_term") == 7);
    assert_true(value_at(e, "raftkv_raft_commit_index") == 120);
    assert_true(value_at(e, "raftkv_raft_applied_index") == 119);
    assert_true(value_at(e, "raftkv_raft_last_log_index") == 121);
    assert_true(value_at(e, "raftkv_raft_snapshot_index") == 100);
    assert_true(value_at(e, "raftkv_raft_is_leader") == 1);
    assert_true(value_at(e, "raftkv_cluster_members") == 3);
    assert_true(value_at(e, "raftkv_cluster_voters") == 3);
    assert_true(value_at(e, "raftkv_store_keys") == 42);
    assert_true(value_at(e, "raftkv_uptime_seconds") == 12.5);
    free(e);

    /* A value with no short decimal form still reads back exactly. */
    g.uptime_seconds = 0.1 + 0.2;
    e = scrape(m, &g);
    assert_true(value_at(e, "raftkv_uptime_seconds") == 0.1 + 0.2);
    free(e);
    metrics_free(m);
}

/* A route keeps the exact codes it answers with; a client that somehow
 * provokes every code still cannot grow the series without bound, and no
 * request goes uncounted. */
static void test_status_codes_exact_and_bounded(void **state)
{
    (void)state;
    static const int raftkv_codes[] = {200, 201, 204, 400, 404, 405, 409,
                                       413, 421, 431, 500, 503, 504};
    struct metrics *m = metrics_new();
    assert_non_null(m);

    for (size_t i = 0; i < COUNT_OF(raftkv_codes); i++)
        http(m, METRICS_ROUTE_KV, "PUT", raftkv_codes[i], 0.001);
    for (int code = 100; code <= 599; code++)
        http(m, METRICS_ROUTE_TXN, "POST", code, 0.001);
    /* Not an HTTP status at all: a server error. */
    http(m, METRICS_ROUTE_LEADER, "GET", 0, 0.001);
    http(m, METRICS_ROUTE_LEADER, "GET", -3, 0.001);
    http(m, METRICS_ROUTE_LEADER, "GET", 1000, 0.001);

    struct expo *e = scrape(m, &no_gauges);
    for (size_t i = 0; i < COUNT_OF(raftkv_codes); i++) {
        char sel[160];
        snprintf(sel, sizeof sel,
                 REQ "{route=\"kv\",method=\"PUT\",code=\"%d\"}",
                 raftkv_codes[i]);
        assert_true(value_at(e, sel) == 1);
    }
    assert_true(
        value_at(e, REQ "{route=\"leader\",method=\"GET\",code=\"500\"}") ==
        3);

    int txn_series = 0;
    for (int i = 0; i < e->ns; i++) {
        const struct series *s = &e->smp[i].s;
        if (strcmp(s->name, REQ) != 0 || strcmp(s->lval[0], "txn") != 0)
            continue;
        txn_series++;
        /* Every code label is a 3-digit status. */
        assert_string_equal(s->lname[2], "code");
        assert_int_equal(strlen(s->lval[2]), 3);
        assert_int_equal(strspn(s->lval[2], "0123456789"), 3);
        int code = atoi(s->lval[2]);
        assert_true(code >= 100 && code <= 599);
    }
    assert_true(txn_series > 13 && txn_series <= 24);
    assert_true(value_at(e, REQ "{route=\"txn\",method=\"POST\",code=\"101\"}")
                == 1);
    assert_true(sum_where(e, REQ, "route", "txn") == 500);
    assert_true(value_at(e, DUR "_count{route=\"txn\"}") == 500);
    free(e);
    metrics_free(m);
}

/* Label values are escaped as the format requires.  Every label value
 * metrics.c can emit comes from a fixed table (routes, methods, codes), so
 * no public input can put a quote or backslash into one; what can be
 * checked is that the parser decodes escapes exactly, and that every route
 * and method label reads back as the name it was meant to be. */
static void test_escaping(void **state)
{
    (void)state;
    static const char *const routes[] = {
        "set",  "get",     "delete", "join",   "kv",     "kv_list", "txn",
        "members", "leader", "status", "confirm", "readindex", "health",
        "metrics", "other",
    };
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT",
                                          "DELETE", "BREW"};
    static const char *const method_labels[] = {"GET", "HEAD", "POST",
                                                "PUT", "DELETE", "OTHER"};
    assert_int_equal(COUNT_OF(routes), METRICS_ROUTE_COUNT);

    static const char escaped[] =
        "# HELP x_total Back\\\\slash and\\nnewline.\n"
        "# TYPE x_total counter\n"
        "x_total{v=\"a\\\\b\\\"c\\nd\"} 1\n";
    struct expo *e = calloc(1, sizeof *e);
    assert_non_null(e);
    assert_int_equal(expo_parse(e, escaped, strlen(escaped)), 0);
    assert_string_equal(e->smp[0].s.lval[0], "a\\b\"c\nd");
    assert_non_null(sample_at(e, "x_total{v=\"a\\\\b\\\"c\\nd\"}"));
    free(e);

    struct metrics *m = metrics_new();
    assert_non_null(m);
    for (int r = 0; r < METRICS_ROUTE_COUNT; r++)
        for (size_t k = 0; k < COUNT_OF(methods); k++)
            http(m, (enum metrics_route)r, methods[k], 200, 0.001);
    e = scrape(m, &no_gauges);
    assert_int_equal(samples_named(e, REQ),
                     METRICS_ROUTE_COUNT * COUNT_OF(methods));
    for (size_t r = 0; r < COUNT_OF(routes); r++)
        for (size_t k = 0; k < COUNT_OF(method_labels); k++) {
            char sel[160];
            snprintf(sel, sizeof sel,
                     REQ "{route=\"%s\",method=\"%s\",code=\"200\"}",
                     routes[r], method_labels[k]);
            assert_true(value_at(e, sel) == 1);
        }
    free(e);
    metrics_free(m);
}

/* The checker itself: each input breaks one rule and must be refused. */
static void test_parser_refuses_malformed(void **state)
{
    (void)state;
#define H "# HELP a_total A.\n# TYPE a_total counter\n"
#define HH "# HELP h H.\n# TYPE h histogram\n"
    static const char *const bad[] = {
        "",
        H "a_total 1",                                 /* no final newline */
        H "\na_total 1\n",                             /* empty line */
        "a_total 1\n",                                 /* no HELP/TYPE */
        "# HELP a_total A.\na_total 1\n",              /* sample before TYPE */
        "# TYPE a_total counter\na_total 1\n",         /* TYPE without HELP */
        H "a_total 1\n" H,                             /* family twice */
        H "# TYPE a_total counter\na_total 1\n",       /* TYPE twice */
        H "a_total 1\na_total 2\n",                    /* duplicate series */
        H "a_total{x=\"1\",y=\"2\"} 1\na_total{y=\"2\",x=\"1\"} 1\n",
        H "a_total{x=\"1\",x=\"2\"} 1\n",              /* label twice */
        H "a_total{x=\"1\",} 1\n",                     /* trailing comma */
        H "a_total{} 1\n",
        H "a_total{x=\"1} 1\n",                        /* unterminated */
        H "a_total{x=\"\\t\"} 1\n",                    /* bad escape */
        H "a_total{9x=\"1\"} 1\n",                     /* bad label name */
        H "a_total{__x=\"1\"} 1\n",                    /* reserved */
        H "a_total 1.2.3\n",                           /* bad number */
        H "a_total 0x10\n",
        H "a_total inf\n",
        H "a_total -1\n",                              /* negative counter */
        H "a_total 1 1700000000000\n",                 /* timestamp */
        H "a_total  1\n",
        H "b_total 1\n",                               /* other family */
        "# HELP 9a A.\n# TYPE 9a gauge\n",             /* bad metric name */
        "# HELP a A.\n# TYPE a summary\n",             /* unchecked type */
        "# HELP a A.\n# TYPE a gauge\n# comment\n",    /* stray comment */
        "# HELP a A\\t.\n# TYPE a gauge\n",            /* bad HELP escape */
        HH "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
           "h_sum 1\nh_count 1\n",                     /* decreasing */
        HH "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
           "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", /* le order */
        HH "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",  /* no +Inf */
        HH "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n", /* count */
        HH "h_bucket{le=\"+Inf\"} 1\nh_count 1\n",        /* no _sum */
        HH "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"
           "h_count{x=\"1\"} 1\n",                     /* orphan _count */
        HH "h_sum{le=\"1\"} 1\n",                      /* le off bucket */
        HH "h 1\n",                                    /* bare histogram */
        HH "# HELP h_count C.\n# TYPE h_count gauge\n", /* name clash */
    };
#undef H
#undef HH
    struct expo *e = calloc(1, sizeof *e);
    assert_non_null(e);
    for (size_t i = 0; i < COUNT_OF(bad); i++)
        if (expo_parse(e, bad[i], strlen(bad[i])) == 0)
            fail_msg("accepted bad input #%zu:\n%s", i, bad[i]);

    static const char good[] =
        "# HELP h H.\n# TYPE h histogram\n"
        "h_bucket{r=\"a\",le=\"1\"} 1\nh_bucket{r=\"a\",le=\"+Inf\"} 2\n"
        "h_sum{r=\"a\"} 3.5\nh_count{r=\"a\"} 2\n"
        "# HELP g G.\n# TYPE g gauge\ng -1.5e-3\n";
    if (expo_parse(e, good, strlen(good)) != 0)
        fail_msg("refused good input: %s", e->err);
    free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_node_renders_every_family),
        cmocka_unit_test(test_requests_labelled_by_route_method_code),
        cmocka_unit_test(test_duration_buckets),
        cmocka_unit_test(test_counters_add_up),
        cmocka_unit_test(test_gauges_from_node_state),
        cmocka_unit_test(test_status_codes_exact_and_bounded),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_parser_refuses_malformed),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
