/* logwatch.c - leadership handed on when the leader's log write hangs; see
 * logwatch.h. */
#include "logwatch.h"

#include <string.h>

#include "log.h"
#include "node.h"

void logwatch_init(struct logwatch *w)
{
    memset(w, 0, sizeof *w);
}

static void transferred(struct raft_transfer *req)
{
    struct node *n = req->data;
    raft_id leader = 0;
    const char *addr = NULL;

    n->logwatch.transferring = false;
    raft_leader(n->raft, &leader, &addr);
    if (leader != 0 && leader != n->id)
        log_info("leadership moved to %s while this node's log write hung",
                 addr != NULL ? addr : "?");
    else
        log_error("leadership did not move within the election timeout; "
                  "writes wait for this node's disk");
}

void logwatch_tick(struct node *n)
{
    struct logwatch *w = &n->logwatch;
    struct raft *r = n->raft;
    uint64_t now = uv_now(n->loop);
    uint64_t step = now - w->tick_ms;
    int rv;

    w->tick_ms = now;
    if (!node_is_leader(n) || r->last_stored >= raft_last_index(r) ||
        r->last_stored != w->stored) {
        w->stored = r->last_stored;
        w->stalled_ms = 0;
        w->complained = false;
        return;
    }
    w->stalled_ms += step < LOGWATCH_STEP_MAX_MS ? step : LOGWATCH_STEP_MAX_MS;
    /* One transfer at a time, ours or an operator's (membership.c sets
     * r->transfer too).  Not held back by a membership change: a pending
     * removal cannot commit either while this log is stuck, and it fails
     * with "leadership lost" when leadership moves. */
    if (w->stalled_ms < r->election_timeout || w->transferring ||
        r->transfer != NULL)
        return;
    uint64_t waited = w->stalled_ms;
    w->stalled_ms = 0; /* the next try, if any, an election timeout later */
    w->req.data = n;
    rv = raft_transfer(r, &w->req, 0, transferred);
    if (rv != 0) {
        if (!w->complained)
            log_error("no Raft log write has completed for %llu ms, and "
                      "leadership cannot move: %s",
                      (unsigned long long)waited, raft_strerror(rv));
        w->complained = true;
        return;
    }
    w->transferring = true;
    w->transfers++;
    log_error("no Raft log write has completed for %llu ms: handing "
              "leadership to another voter",
              (unsigned long long)waited);
}
