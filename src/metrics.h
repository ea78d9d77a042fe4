/* metrics.h - the node's counters and latency histograms, rendered in the
 * Prometheus text exposition format (version 0.0.4) for GET /metrics.
 *
 * Recording is a few integer increments on the loop thread (no locks, no
 * allocation); rendering happens only when /metrics is scraped.  Values that
 * are the node's state at scrape time (term, indexes, store size) are not
 * stored here: the caller passes them to metrics_render. */
#ifndef RAFTKV_METRICS_H
#define RAFTKV_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Routes are a fixed set of labels so that the number of series is bounded
 * whatever clients send. */
enum metrics_route {
    METRICS_ROUTE_SET,         /* POST /set */
    METRICS_ROUTE_GET,         /* GET /get */
    METRICS_ROUTE_DELETE,      /* /delete */
    METRICS_ROUTE_JOIN,        /* /join */
    METRICS_ROUTE_KV,          /* /v1/kv/{key} */
    METRICS_ROUTE_KV_LIST,     /* /v1/kv */
    METRICS_ROUTE_TXN,         /* /v1/txn */
    METRICS_ROUTE_MEMBERS,     /* /v1/cluster/members[/{id}] */
    METRICS_ROUTE_LEADER,      /* /v1/cluster/leader */
    METRICS_ROUTE_STATUS,      /* /v1/status */
    METRICS_ROUTE_CONFIRM,     /* /v1/internal/confirm */
    METRICS_ROUTE_READINDEX,   /* /v1/internal/readindex */
    METRICS_ROUTE_HEALTH,      /* /health, /ready */
    METRICS_ROUTE_METRICS,     /* /metrics */
    METRICS_ROUTE_OTHER,       /* anything else (404s) */
    METRICS_ROUTE_COUNT
};

/* Event counters. */
enum metrics_counter {
    METRICS_ELECTIONS,          /* leader changes seen */
    METRICS_SNAPSHOTS_TAKEN,
    METRICS_SNAPSHOTS_RESTORED,
    METRICS_FORWARDED,          /* requests relayed to the leader */
    METRICS_FORWARD_ERRORS,     /* relays that failed (leader unreachable) */
    METRICS_BARRIERS,           /* read barriers appended */
    METRICS_LINEARIZABLE_READS, /* reads served after a barrier */
    METRICS_STALE_READS,
    METRICS_WRITES_COMMITTED,   /* commands acknowledged to clients */
    METRICS_WRITES_FAILED,      /* proposals that failed (leadership lost) */
    METRICS_ENTRIES_PROPOSED,   /* Raft entries carrying client commands */
    METRICS_COMMANDS_PROPOSED,  /* commands in them (group commit ratio) */
    METRICS_ENTRIES_HELD,       /* entries that waited for the leader's write */
    METRICS_HOLDS_EXPIRED,      /* ...proposed by the timer instead */
    METRICS_READ_ROUNDS,        /* leadership rounds for reads (confirm.h) */
    METRICS_READ_ROUNDS_FAILED, /* rounds that fell back to log entries */
    METRICS_READ_QUESTIONS,     /* questions sent to voters */
    METRICS_HEAP_TRIMS,         /* heap given back once writes went quiet */
    METRICS_LOG_STALL_TRANSFERS, /* leadership handed on: log write hung */
    METRICS_READ_INDEXES_GIVEN, /* read indexes given to followers */
    METRICS_FOLLOWER_READ_ASKS, /* read indexes asked of the leader */
    METRICS_FOLLOWER_READ_RELAYS, /* linearizable reads relayed after all */
    METRICS_COUNTER_COUNT
};

/* State read at scrape time. */
struct metrics_gauges
{
    uint64_t term;
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_log_index;
    uint64_t snapshot_index;
    int is_leader;      /* 0 or 1 */
    uint64_t members;   /* servers in the configuration */
    uint64_t voters;
    uint64_t keys;      /* entries in the kv table */
    uint64_t db_bytes;  /* size of data.mdb */
    double uptime_seconds;
};

struct metrics;

/* Returns NULL when out of memory. */
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* Record one finished HTTP request: @method as sent (only GET, HEAD, POST,
 * PUT, DELETE get their own label; others count as "OTHER"), @status the
 * HTTP status, @seconds from the start of the handler to the reply. */
void metrics_http(struct metrics *m, enum metrics_route route,
                  const char *method, size_t method_len, int status,
                  double seconds);

void metrics_count(struct metrics *m, enum metrics_counter c, uint64_t by);
uint64_t metrics_get(const struct metrics *m, enum metrics_counter c);

/* Render everything (counters, histograms and @g) as Prometheus text into a
 * malloc'ed, NUL-terminated buffer.  Returns 0, or -1 when out of memory. */
int metrics_render(const struct metrics *m, const struct metrics_gauges *g,
                   char **out, size_t *len);

#endif
