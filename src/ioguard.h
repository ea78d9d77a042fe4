/* ioguard.h - stop the node at the first failed write of the Raft log.
 *
 * Measured with an fsync/write fault shim: when libraft 0.15's disk write
 * of log entries fails, a leader goes on to corrupt its heap and crash
 * (SIGSEGV or "munmap_chunk(): invalid pointer") and a follower keeps its
 * unpersisted entries in memory, stays a voter and never catches up.  Either
 * way the node may act on data it did not persist.  The guard wraps the
 * persistence calls of libraft's uv I/O (append, snapshot_put, set_term,
 * set_vote, truncate) and turns the first I/O error into a clean stop with a
 * clear log line, before libraft sees it.  After the fault is fixed the node
 * restarts from what is on disk and catches up from the others.
 *
 * It also wraps close: libraft 0.15's uv I/O may report "closed" twice when
 * a late write completes after the first report, and libraft's own close
 * handler then frees the same memory twice ("double free detected" at
 * SIGTERM right after a write, with the data directory on tmpfs).  Only the
 * first report is passed on. */
#ifndef RAFTKV_IOGUARD_H
#define RAFTKV_IOGUARD_H

#include <raft.h>

#include "queue.h"

struct ioguard
{
    struct raft_io *io;
    struct ioguard *next; /* every guard of the process */
    void (*close)(struct raft_io *io, raft_io_close_cb cb);
    raft_io_close_cb close_cb;
    bool close_reported;
    void (*fatal)(void *arg, const char *what);
    void *arg;
    int (*append)(struct raft_io *io, struct raft_io_append *req,
                  const struct raft_entry entries[], unsigned n,
                  raft_io_append_cb cb);
    int (*snapshot_put)(struct raft_io *io, unsigned trailing,
                        struct raft_io_snapshot_put *req,
                        const struct raft_snapshot *snapshot,
                        raft_io_snapshot_put_cb cb);
    int (*set_term)(struct raft_io *io, raft_term term);
    int (*set_vote)(struct raft_io *io, raft_id server_id);
    int (*truncate)(struct raft_io *io, raft_index index);
};

/* Wrap @io (after raft_uv_init, before raft_init).  @fatal(@arg, what)
 * must not return.  The guard must outlive @io. */
void ioguard_install(struct ioguard *g, struct raft_io *io,
                     void (*fatal)(void *arg, const char *what), void *arg);

/* Free what is left once libraft's I/O has closed. */
void ioguard_release(struct ioguard *g);

#endif
