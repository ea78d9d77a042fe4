/* metrics.c - request counters, latency histograms and event counters,
 * rendered as Prometheus text (exposition format 0.0.4); see metrics.h.
 *
 * Why it looks like this: metrics_http runs once per request on the loop
 * thread, so recording must never allocate, lock or format.  Everything is
 * a fixed array indexed by route and method, sized once in metrics_new; the
 * only search is a short scan of the status codes a route has answered with.
 * All formatting cost lands in metrics_render, which runs only when
 * /metrics is scraped.
 *
 * Label values come from closed sets (route names, five methods plus
 * "OTHER", three-digit codes), so the number of series is bounded whatever
 * clients send.  They are still escaped on output so that a future label
 * value containing a quote or backslash cannot corrupt the exposition. */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- fixed label sets ---------------------------------------------------- */

static const char *const metrics_route_names[] = {
    [METRICS_ROUTE_SET] = "set",         [METRICS_ROUTE_GET] = "get",
    [METRICS_ROUTE_DELETE] = "delete",   [METRICS_ROUTE_JOIN] = "join",
    [METRICS_ROUTE_KV] = "kv",           [METRICS_ROUTE_KV_LIST] = "kv_list",
    [METRICS_ROUTE_TXN] = "txn",         [METRICS_ROUTE_MEMBERS] = "members",
    [METRICS_ROUTE_LEADER] = "leader",   [METRICS_ROUTE_STATUS] = "status",
    [METRICS_ROUTE_CONFIRM] = "confirm",
    [METRICS_ROUTE_READINDEX] = "readindex",
    [METRICS_ROUTE_HEALTH] = "health",   [METRICS_ROUTE_METRICS] = "metrics",
    [METRICS_ROUTE_OTHER] = "other",
};
_Static_assert(sizeof metrics_route_names / sizeof metrics_route_names[0] ==
                   METRICS_ROUTE_COUNT,
               "every route needs a label value");

/* Methods are matched case-sensitively, as HTTP defines them; "get" is not
 * GET and counts as OTHER. */
enum metrics_method {
    METRICS_METHOD_GET,
    METRICS_METHOD_HEAD,
    METRICS_METHOD_POST,
    METRICS_METHOD_PUT,
    METRICS_METHOD_DELETE,
    METRICS_METHOD_OTHER,
    METRICS_METHOD_COUNT
};

static const char *const metrics_method_names[] = {
    [METRICS_METHOD_GET] = "GET",       [METRICS_METHOD_HEAD] = "HEAD",
    [METRICS_METHOD_POST] = "POST",     [METRICS_METHOD_PUT] = "PUT",
    [METRICS_METHOD_DELETE] = "DELETE", [METRICS_METHOD_OTHER] = "OTHER",
};
_Static_assert(sizeof metrics_method_names / sizeof metrics_method_names[0] ==
                   METRICS_METHOD_COUNT,
               "every method needs a label value");

struct metrics_family
{
    const char *name;
    const char *help;
};

static const struct metrics_family metrics_counter_families[] = {
    [METRICS_ELECTIONS] = {"raftkv_elections_total",
                           "Leader changes seen by this node."},
    [METRICS_SNAPSHOTS_TAKEN] = {"raftkv_snapshots_taken_total",
                                 "Snapshots of the state machine taken."},
    [METRICS_SNAPSHOTS_RESTORED] = {"raftkv_snapshots_restored_total",
                                    "Snapshots installed from the leader."},
    [METRICS_FORWARDED] = {"raftkv_forwarded_requests_total",
                           "Requests relayed to the leader."},
    [METRICS_FORWARD_ERRORS] = {"raftkv_forward_errors_total",
                                "Relays to the leader that failed."},
    [METRICS_BARRIERS] = {"raftkv_read_barriers_total",
                          "No-op entries appended only to confirm "
                          "linearizable reads."},
    [METRICS_LINEARIZABLE_READS] = {"raftkv_linearizable_reads_total",
                                    "Reads served after leadership was "
                                    "confirmed."},
    [METRICS_STALE_READS] = {"raftkv_stale_reads_total",
                             "Reads served from local state without a "
                             "barrier."},
    [METRICS_WRITES_COMMITTED] = {"raftkv_writes_committed_total",
                                  "Writes committed and acknowledged to "
                                  "clients."},
    [METRICS_WRITES_FAILED] = {"raftkv_writes_failed_total",
                               "Write proposals that failed, such as on "
                               "leadership loss."},
    [METRICS_ENTRIES_PROPOSED] = {"raftkv_entries_proposed_total",
                                  "Raft entries proposed with client "
                                  "commands."},
    [METRICS_COMMANDS_PROPOSED] = {"raftkv_commands_proposed_total",
                                   "Client commands proposed; several share "
                                   "an entry under load."},
    [METRICS_ENTRIES_HELD] = {"raftkv_entries_held_total",
                              "Entries whose commands waited for the "
                              "leader's log write in flight to complete."},
    [METRICS_HOLDS_EXPIRED] = {"raftkv_entry_holds_expired_total",
                               "Held entries proposed because that write "
                               "took longer than the hold (2 ms)."},
    [METRICS_READ_ROUNDS] = {"raftkv_read_rounds_total",
                             "Rounds of questions to the voters started "
                             "to confirm leadership for linearizable reads."},
    [METRICS_READ_ROUNDS_FAILED] = {"raftkv_read_rounds_failed_total",
                                    "Read rounds refused or timed out; their "
                                    "reads waited for a log entry."},
    [METRICS_READ_QUESTIONS] = {"raftkv_read_questions_total",
                                "Leadership questions sent to other voters."},
    [METRICS_HEAP_TRIMS] = {"raftkv_heap_trims_total",
                            "Times the heap's free pages went back to the "
                            "system: after a snapshot, once writes stopped."},
    [METRICS_LOG_STALL_TRANSFERS] = {"raftkv_log_stall_transfers_total",
                                     "Leadership transfers started because "
                                     "this leader's Raft log write had not "
                                     "completed for an election timeout."},
    [METRICS_READ_INDEXES_GIVEN] = {"raftkv_read_indexes_given_total",
                                    "Read indexes this leader gave followers "
                                    "for their linearizable reads."},
    [METRICS_FOLLOWER_READ_ASKS] = {"raftkv_follower_read_index_requests_total",
                                    "Read indexes this follower asked the "
                                    "leader for; the linearizable reads "
                                    "that arrived meanwhile share each."},
    [METRICS_FOLLOWER_READ_RELAYS] = {"raftkv_follower_read_relays_total",
                                      "Linearizable reads this follower "
                                      "relayed to the leader because no read "
                                      "index could be had or reached in "
                                      "time."},
};
_Static_assert(sizeof metrics_counter_families /
                       sizeof metrics_counter_families[0] ==
                   METRICS_COUNTER_COUNT,
               "every counter needs a family");

/* Upper bounds in 1-2.5-5 steps from 100 us (a local read) to 10 s (a
 * request that waited out a timeout).  The strings are the le label values,
 * kept beside the doubles so the output reads like any Prometheus client's
 * and never depends on printf rounding. */
static const double metrics_bounds[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,    5,     10,
};
static const char *const metrics_bound_labels[] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
    "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "0.5",
    "1",      "2.5",     "5",      "10",
};
#define METRICS_BUCKETS (sizeof metrics_bounds / sizeof metrics_bounds[0])
_Static_assert(sizeof metrics_bound_labels / sizeof metrics_bound_labels[0] ==
                   METRICS_BUCKETS,
               "every bound needs a label");

/* --- storage ------------------------------------------------------------- */

/* Each route keeps exact status codes in a small sorted table.  raftkv
 * answers with about a dozen distinct codes, far below the table size; the
 * last METRICS_CLASS_SLOTS slots are reserved for 100, 200, ..., 500 so that
 * a route that somehow sees more distinct codes folds the excess into its
 * class ("x00") instead of dropping it: totals stay exact and the series
 * count stays bounded. */
#define METRICS_CODE_SLOTS 24
#define METRICS_CLASS_SLOTS 5

struct metrics_code
{
    int code;
    uint64_t by_method[METRICS_METHOD_COUNT];
};

struct metrics_route_stats
{
    struct metrics_code codes[METRICS_CODE_SLOTS];
    unsigned ncodes;
    /* Per bucket, not cumulative: the last element counts requests slower
     * than every bound.  Cumulating happens at render time. */
    uint64_t buckets[METRICS_BUCKETS + 1];
    uint64_t count;
    double sum;
};

struct metrics
{
    uint64_t counters[METRICS_COUNTER_COUNT];
    struct metrics_route_stats routes[METRICS_ROUTE_COUNT];
};

struct metrics *metrics_new(void)
{
    return calloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m)
{
    free(m);
}

/* --- recording ----------------------------------------------------------- */

static enum metrics_method metrics_method_of(const char *method, size_t len)
{
    if (method == NULL)
        return METRICS_METHOD_OTHER;
    for (int i = 0; i < METRICS_METHOD_OTHER; i++) {
        const char *name = metrics_method_names[i];
        if (strlen(name) == len && memcmp(name, method, len) == 0)
            return (enum metrics_method)i;
    }
    return METRICS_METHOD_OTHER;
}

/* The slot for @status, inserted in order if new.  Never NULL: see the
 * reservation comment at METRICS_CODE_SLOTS. */
static struct metrics_code *metrics_code_slot(struct metrics_route_stats *r,
                                              int status)
{
    /* A status outside 100..599 is a handler bug, which is a server error
     * from the client's point of view. */
    if (status < 100 || status > 599)
        status = 500;

    for (;;) {
        unsigned i = 0;
        while (i < r->ncodes && r->codes[i].code < status)
            i++;
        if (i < r->ncodes && r->codes[i].code == status)
            return &r->codes[i];

        unsigned limit = status % 100 == 0
                             ? METRICS_CODE_SLOTS
                             : METRICS_CODE_SLOTS - METRICS_CLASS_SLOTS;
        if (r->ncodes < limit) {
            memmove(&r->codes[i + 1], &r->codes[i],
                    (r->ncodes - i) * sizeof r->codes[0]);
            memset(&r->codes[i], 0, sizeof r->codes[i]);
            r->codes[i].code = status;
            r->ncodes++;
            return &r->codes[i];
        }
        status = status / 100 * 100;
    }
}

void metrics_http(struct metrics *m, enum metrics_route route,
                  const char *method, size_t method_len, int status,
                  double seconds)
{
    if (m == NULL)
        return;
    /* An out-of-range route is a caller bug; counting it as "other" keeps
     * the totals right without growing the label set. */
    if ((unsigned)route >= METRICS_ROUTE_COUNT)
        route = METRICS_ROUTE_OTHER;
    /* A negative or non-finite duration is a clock or caller bug.  The
     * request still counts, but as 0 s: one NaN or Inf added to _sum would
     * poison it for the life of the process. */
    if (!(seconds > 0) || isinf(seconds))
        seconds = 0;

    struct metrics_route_stats *r = &m->routes[route];
    metrics_code_slot(r, status)
        ->by_method[metrics_method_of(method, method_len)]++;

    size_t b = 0;
    while (b < METRICS_BUCKETS && seconds > metrics_bounds[b])
        b++;
    r->buckets[b]++;
    r->count++;
    r->sum += seconds;
}

void metrics_count(struct metrics *m, enum metrics_counter c, uint64_t by)
{
    if (m == NULL || (unsigned)c >= METRICS_COUNTER_COUNT)
        return;
    m->counters[c] += by;
}

uint64_t metrics_get(const struct metrics *m, enum metrics_counter c)
{
    if (m == NULL || (unsigned)c >= METRICS_COUNTER_COUNT)
        return 0;
    return m->counters[c];
}

/* --- rendering ----------------------------------------------------------- */

/* Output buffer that remembers running out of memory, so the render code
 * can write straight through and check once at the end. */
struct metrics_buf
{
    char *base;
    size_t len, cap;
    int oom;
};

static int metrics_buf_reserve(struct metrics_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->base, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->base = p;
    b->cap = cap;
    return 0;
}

static void metrics_put(struct metrics_buf *b, const char *s, size_t n)
{
    if (metrics_buf_reserve(b, n) != 0)
        return;
    memcpy(b->base + b->len, s, n);
    b->len += n;
    b->base[b->len] = '\0';
}

static void metrics_puts(struct metrics_buf *b, const char *s)
{
    metrics_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void
metrics_printf(struct metrics_buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        metrics_put(b, small, (size_t)n);
        return;
    }
    if (metrics_buf_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->base + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* The format escapes backslash and newline in HELP text, and additionally
 * the double quote in label values. */
static void metrics_put_escaped(struct metrics_buf *b, const char *s,
                                int quote)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            metrics_puts(b, "\\\\");
        else if (*s == '\n')
            metrics_puts(b, "\\n");
        else if (*s == '"' && quote)
            metrics_puts(b, "\\\"");
        else
            metrics_put(b, s, 1);
    }
}

static void metrics_put_family(struct metrics_buf *b, const char *name,
                               const char *type, const char *help)
{
    metrics_printf(b, "# HELP %s ", name);
    metrics_put_escaped(b, help, 0);
    metrics_printf(b, "\n# TYPE %s %s\n", name, type);
}

static void metrics_put_label(struct metrics_buf *b, const char *sep,
                              const char *name, const char *value)
{
    metrics_printf(b, "%s%s=\"", sep, name);
    metrics_put_escaped(b, value, 1);
    metrics_puts(b, "\"");
}

/* Shortest text that reads back as the same double, in the spellings the
 * format accepts for the special values. */
static void metrics_put_double(struct metrics_buf *b, double v)
{
    if (isnan(v)) {
        metrics_puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        metrics_puts(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char text[32];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, v);
        if (strtod(text, NULL) == v)
            break;
    }
    metrics_puts(b, text);
}

static void metrics_render_requests(struct metrics_buf *b,
                                    const struct metrics *m)
{
    metrics_put_family(b, "raftkv_http_requests_total", "counter",
                       "HTTP requests answered, by route, method and status "
                       "code.");
    for (int r = 0; r < METRICS_ROUTE_COUNT; r++) {
        const struct metrics_route_stats *rs = &m->routes[r];
        for (unsigned i = 0; i < rs->ncodes; i++) {
            const struct metrics_code *c = &rs->codes[i];
            char code[8];
            snprintf(code, sizeof code, "%03d", c->code);
            for (int k = 0; k < METRICS_METHOD_COUNT; k++) {
                if (c->by_method[k] == 0)
                    continue;
                metrics_puts(b, "raftkv_http_requests_total");
                metrics_put_label(b, "{", "route", metrics_route_names[r]);
                metrics_put_label(b, ",", "method", metrics_method_names[k]);
                metrics_put_label(b, ",", "code", code);
                metrics_printf(b, "} %" PRIu64 "\n", c->by_method[k]);
            }
        }
    }
}

static void metrics_render_durations(struct metrics_buf *b,
                                     const struct metrics *m)
{
    static const char family[] = "raftkv_http_request_duration_seconds";

    metrics_put_family(b, family, "histogram",
                       "Time from the start of the handler to the reply.");
    for (int r = 0; r < METRICS_ROUTE_COUNT; r++) {
        const struct metrics_route_stats *rs = &m->routes[r];
        const char *route = metrics_route_names[r];
        /* Like the request counter, only routes that were hit get series. */
        if (rs->count == 0)
            continue;
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= METRICS_BUCKETS; i++) {
            cumulative += rs->buckets[i];
            metrics_printf(b, "%s_bucket", family);
            metrics_put_label(b, "{", "route", route);
            metrics_put_label(b, ",", "le",
                              i < METRICS_BUCKETS ? metrics_bound_labels[i]
                                                  : "+Inf");
            metrics_printf(b, "} %" PRIu64 "\n", cumulative);
        }
        metrics_printf(b, "%s_sum", family);
        metrics_put_label(b, "{", "route", route);
        metrics_puts(b, "} ");
        metrics_put_double(b, rs->sum);
        metrics_printf(b, "\n%s_count", family);
        metrics_put_label(b, "{", "route", route);
        metrics_printf(b, "} %" PRIu64 "\n", rs->count);
    }
}

static void metrics_render_counters(struct metrics_buf *b,
                                    const struct metrics *m)
{
    for (int c = 0; c < METRICS_COUNTER_COUNT; c++) {
        const struct metrics_family *f = &metrics_counter_families[c];
        metrics_put_family(b, f->name, "counter", f->help);
        metrics_printf(b, "%s %" PRIu64 "\n", f->name, m->counters[c]);
    }
}

static void metrics_put_gauge(struct metrics_buf *b, const char *name,
                              const char *help, uint64_t v)
{
    metrics_put_family(b, name, "gauge", help);
    metrics_printf(b, "%s %" PRIu64 "\n", name, v);
}

static void metrics_render_gauges(struct metrics_buf *b,
                                  const struct metrics_gauges *g)
{
    metrics_put_gauge(b, "raftkv_raft_term", "Current Raft term.", g->term);
    metrics_put_gauge(b, "raftkv_raft_commit_index",
                      "Highest log index known to be committed.",
                      g->commit_index);
    metrics_put_gauge(b, "raftkv_raft_applied_index",
                      "Highest log index applied to the state machine.",
                      g->applied_index);
    metrics_put_gauge(b, "raftkv_raft_last_log_index",
                      "Index of the last entry in the local log.",
                      g->last_log_index);
    metrics_put_gauge(b, "raftkv_raft_snapshot_index",
                      "Last log index covered by the latest snapshot.",
                      g->snapshot_index);
    metrics_put_gauge(b, "raftkv_raft_is_leader",
                      "1 if this node is the Raft leader, else 0.",
                      g->is_leader != 0);
    metrics_put_gauge(b, "raftkv_cluster_members",
                      "Servers in the cluster configuration.", g->members);
    metrics_put_gauge(b, "raftkv_cluster_voters",
                      "Voting servers in the cluster configuration.",
                      g->voters);
    metrics_put_gauge(b, "raftkv_store_keys",
                      "Keys in the replicated key-value table.", g->keys);
    metrics_put_gauge(b, "raftkv_store_size_bytes",
                      "Size of the LMDB data file.", g->db_bytes);

    metrics_put_family(b, "raftkv_uptime_seconds", "gauge",
                       "Seconds since this process started.");
    metrics_puts(b, "raftkv_uptime_seconds ");
    metrics_put_double(b, g->uptime_seconds);
    metrics_puts(b, "\n");
}

int metrics_render(const struct metrics *m, const struct metrics_gauges *g,
                   char **out, size_t *len)
{
    struct metrics_buf b = {0};

    *out = NULL;
    *len = 0;
    metrics_render_requests(&b, m);
    metrics_render_durations(&b, m);
    metrics_render_counters(&b, m);
    /* Without a snapshot of the node's state there is nothing to report,
     * which beats reporting zeros that look like real values. */
    if (g != NULL)
        metrics_render_gauges(&b, g);
    if (b.oom || metrics_buf_reserve(&b, 0) != 0) {
        free(b.base);
        return -1;
    }
    *out = b.base;
    *len = b.len;
    return 0;
}
