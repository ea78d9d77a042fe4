/* diskfault.c - LD_PRELOAD shim that makes disk writes and syncs fail with
 * EIO or ENOSPC, only for files under one directory, while a control file
 * says so.
 *
 * Why a shim: this kernel has no dm-flakey/dm-error/fail_make_request, and
 * the fault must hit one node's data directory only (failing every write of
 * the process would also break its log on stderr).
 *
 * Environment:
 *   DISKFAULT_DIR   absolute path; only fds whose /proc/self/fd link starts
 *                   with it are affected
 *   DISKFAULT_CTL   path of a control file (outside DISKFAULT_DIR), read
 *                   through a shared mapping so a change takes effect at the
 *                   next call without any extra system call
 *
 * Control file: whitespace-separated words, e.g. "fsync=EIO write=ENOSPC";
 * empty or "off" means no fault.  Classes:
 *   fsync  fsync, fdatasync, sync_file_range, msync
 *   write  write, pwrite, pwrite64, writev, pwritev, pwritev2, the
 *          pwritev/pwritev2 and io_submit system calls made through
 *          syscall(2) (libuv and libraft use them), fallocate,
 *          posix_fallocate, ftruncate
 * Values: EIO, ENOSPC, EROFS, EDQUOT.  Every injected error is logged on
 * stderr as "diskfault: ..." (the first 20, then every 1000th).
 *
 * Two more classes model a disk that stops answering rather than failing:
 *   snap   writes to libraft's snapshot files ("snapshot-*", written as
 *          "tmp-snapshot-*" and renamed); the only value
 *          is HANG: the writing thread (libuv's pool, where libraft stores
 *          a snapshot it receives) waits until the control file no longer
 *          says so.  A slow snapshot install, without slowing the log.
 *   aio    io_submit writes (libraft's log); the only value is HANG: the
 *          calling thread waits until the control file no longer says so,
 *          then the write goes ahead.  Not libraft's ".probe" file: it
 *          probes the file system on the loop thread whenever Raft opens
 *          (a bootstrap reopens it), and holding that would stop the loop.  Where the file system has no direct
 *          I/O (tmpfs, as in the fault tests) libraft submits from a worker
 *          thread, so the node keeps serving while its log is stuck.
 *
 * And one a disk that answers, but slowly, to reads:
 *   scan   LMDB cursor steps (mdb_cursor_get); the only value is SLOW:
 *          each step waits 1 ms.  LMDB reads its map through page faults,
 *          which no system call shows, so a store on a cold, slow disk is
 *          modelled where raftkv steps through it: a whole-store scan (a
 *          follower's snapshot) of N keys takes N ms, on whatever thread
 *          runs it.  Not tied to DISKFAULT_DIR: a mapping has no fd.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define CTL_SIZE 256

#define HANG (-1) /* configured("aio"): wait instead of failing */
#define SLOW (-2) /* configured("scan"): go ahead, late */

static const char *volatile ctl_map; /* NULL: no control file (no faults) */
static char dir[4096];
static size_t dir_len;
static unsigned long injected;

#define REAL(name) real_##name
#define DECLARE_REAL(ret, name, ...)                                         \
    static ret (*real_##name)(__VA_ARGS__);                                  \
    static ret (*get_##name(void))(__VA_ARGS__)                              \
    {                                                                        \
        if (real_##name == NULL)                                             \
            real_##name = dlsym(RTLD_NEXT, #name);                           \
        return real_##name;                                                  \
    }

DECLARE_REAL(ssize_t, write, int, const void *, size_t)
DECLARE_REAL(ssize_t, pwrite, int, const void *, size_t, off_t)
DECLARE_REAL(ssize_t, pwrite64, int, const void *, size_t, off_t)
DECLARE_REAL(ssize_t, writev, int, const struct iovec *, int)
DECLARE_REAL(ssize_t, pwritev, int, const struct iovec *, int, off_t)
DECLARE_REAL(ssize_t, pwritev2, int, const struct iovec *, int, off_t, int)
DECLARE_REAL(int, fsync, int)
DECLARE_REAL(int, fdatasync, int)
DECLARE_REAL(int, msync, void *, size_t, int)
DECLARE_REAL(int, sync_file_range, int, off_t, off_t, unsigned int)
DECLARE_REAL(int, fallocate, int, int, off_t, off_t)
DECLARE_REAL(int, posix_fallocate, int, off_t, off_t)
DECLARE_REAL(int, ftruncate, int, off_t)
DECLARE_REAL(long, syscall, long, long, long, long, long, long, long)
/* LMDB's types are pointers and an enum: declared here as such, so the shim
 * builds without lmdb.h. */
DECLARE_REAL(int, mdb_cursor_get, void *, void *, void *, int)

__attribute__((constructor)) static void diskfault_init(void)
{
    const char *d = getenv("DISKFAULT_DIR");
    const char *c = getenv("DISKFAULT_CTL");
    int fd;
    void *m;

    if (d == NULL || c == NULL || d[0] != '/')
        return;
    snprintf(dir, sizeof dir, "%s", d);
    dir_len = strlen(dir);
    while (dir_len > 1 && dir[dir_len - 1] == '/')
        dir[--dir_len] = '\0';
    fd = open(c, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    m = mmap(NULL, CTL_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m != MAP_FAILED)
        ctl_map = m;
}

/* The errno configured for @class ("fsync" or "write"), HANG, or 0. */
static int configured(const char *class)
{
    char buf[CTL_SIZE + 1];
    size_t clen = strlen(class);
    const char *p;

    if (ctl_map == NULL)
        return 0;
    memcpy(buf, (const char *)ctl_map, CTL_SIZE);
    buf[CTL_SIZE] = '\0';
    for (p = buf; (p = strstr(p, class)) != NULL; p += clen) {
        if ((p != buf && p[-1] != ' ' && p[-1] != '\n') || p[clen] != '=')
            continue;
        p += clen + 1;
        if (strncmp(p, "EIO", 3) == 0)
            return EIO;
        if (strncmp(p, "ENOSPC", 6) == 0)
            return ENOSPC;
        if (strncmp(p, "EROFS", 5) == 0)
            return EROFS;
        if (strncmp(p, "EDQUOT", 6) == 0)
            return EDQUOT;
        if (strncmp(p, "HANG", 4) == 0)
            return HANG;
        if (strncmp(p, "SLOW", 4) == 0)
            return SLOW;
        return 0;
    }
    return 0;
}

static int fd_in_dir(int fd, char *path, size_t cap)
{
    char link[64];
    ssize_t n;

    if (fd < 0)
        return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, path, cap - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    return (size_t)n >= dir_len && strncmp(path, dir, dir_len) == 0 &&
           (path[dir_len] == '/' || path[dir_len] == '\0');
}

static void note(const char *call, int fd, const char *path, int err)
{
    char msg[4400];
    int len;

    injected++;
    if (injected > 20 && injected % 1000 != 0)
        return;
    len = snprintf(msg, sizeof msg,
                   "diskfault: injecting %s into %s(fd %d %s) [#%lu]\n",
                   err == EIO ? "EIO" : err == ENOSPC ? "ENOSPC"
                                      : err == EROFS  ? "EROFS"
                                                      : "EDQUOT",
                   call, fd, path, injected);
    if (len > 0)
        get_write()(2, msg, (size_t)len < sizeof msg ? (size_t)len
                                                     : sizeof msg - 1);
}

/* While snap=HANG, a write to a snapshot file under the dir waits. */
static void snapshot_hang(int fd)
{
    char path[4096];
    const char *slash;
    int said = 0;

    if (configured("snap") != HANG || !fd_in_dir(fd, path, sizeof path))
        return;
    slash = strrchr(path, '/');
    if (slash != NULL && strncmp(slash + 1, "tmp-", 4) == 0)
        slash += 4; /* libraft writes "tmp-NAME", then renames it */
    if (slash == NULL || strncmp(slash + 1, "snapshot-", 9) != 0)
        return;
    while (configured("snap") == HANG) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        if (!said) {
            char msg[4400];
            int len = snprintf(msg, sizeof msg,
                               "diskfault: holding a write to %s while "
                               "snap=HANG\n",
                               path);
            if (len > 0)
                get_write()(2, msg, (size_t)len < sizeof msg ? (size_t)len
                                                             : sizeof msg - 1);
            said = 1;
        }
        nanosleep(&ts, NULL);
    }
}

/* 0: go ahead; else the errno to fail with. */
static int fault(const char *class, const char *call, int fd)
{
    char path[4096];
    int err;

    if (strcmp(class, "write") == 0)
        snapshot_hang(fd);
    err = configured(class);

    if (err <= 0 || !fd_in_dir(fd, path, sizeof path)) /* HANG: aio only */
        return 0;
    note(call, fd, path, err);
    return err;
}

#define FAIL_IF(class, call, fd, failval)                                    \
    do {                                                                     \
        int e_ = fault(class, call, fd);                                     \
        if (e_ != 0) {                                                       \
            errno = e_;                                                      \
            return failval;                                                  \
        }                                                                    \
    } while (0)

ssize_t write(int fd, const void *buf, size_t count)
{
    if (fd > 2)
        FAIL_IF("write", "write", fd, -1);
    return get_write()(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t off)
{
    FAIL_IF("write", "pwrite", fd, -1);
    return get_pwrite()(fd, buf, count, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off)
{
    FAIL_IF("write", "pwrite64", fd, -1);
    return get_pwrite64()(fd, buf, count, off);
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    if (fd > 2)
        FAIL_IF("write", "writev", fd, -1);
    return get_writev()(fd, iov, n);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    FAIL_IF("write", "pwritev", fd, -1);
    return get_pwritev()(fd, iov, n, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t off, int fl)
{
    FAIL_IF("write", "pwritev2", fd, -1);
    return get_pwritev2()(fd, iov, n, off, fl);
}

int fsync(int fd)
{
    FAIL_IF("fsync", "fsync", fd, -1);
    return get_fsync()(fd);
}

int fdatasync(int fd)
{
    FAIL_IF("fsync", "fdatasync", fd, -1);
    return get_fdatasync()(fd);
}

int sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
    FAIL_IF("fsync", "sync_file_range", fd, -1);
    return get_sync_file_range()(fd, off, n, flags);
}

int msync(void *addr, size_t len, int flags)
{
    /* LMDB msyncs only its data file, which lives under the data dir; a
     * mapping has no fd, so any msync counts while the fault is set. */
    int err = configured("fsync");
    if (err > 0 && dir_len > 0) {
        note("msync", -1, "(mapping)", err);
        errno = err;
        return -1;
    }
    return get_msync()(addr, len, flags);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    FAIL_IF("write", "fallocate", fd, -1);
    return get_fallocate()(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    /* returns the error number instead of setting errno */
    int e = fault("write", "posix_fallocate", fd);
    if (e != 0)
        return e;
    return get_posix_fallocate()(fd, off, len);
}

int ftruncate(int fd, off_t len)
{
    FAIL_IF("write", "ftruncate", fd, -1);
    return get_ftruncate()(fd, len);
}

/* io_submit of a write under the dir, while aio=HANG: wait it out. */
static void io_submit_hang(long nr, struct iocb **iocbs)
{
    char path[4096];
    char msg[4400];
    int len;

    for (long i = 0; i < nr && iocbs != NULL; i++) {
        struct iocb *cb = iocbs[i];
        if (cb == NULL || (cb->aio_lio_opcode != IOCB_CMD_PWRITE &&
                           cb->aio_lio_opcode != IOCB_CMD_PWRITEV))
            continue;
        if (configured("aio") != HANG ||
            !fd_in_dir((int)cb->aio_fildes, path, sizeof path) ||
            strstr(path, "/.probe") != NULL)
            continue;
        len = snprintf(msg, sizeof msg,
                       "diskfault: holding io_submit(fd %d %s) while aio=HANG\n",
                       (int)cb->aio_fildes, path);
        if (len > 0)
            get_write()(2, msg, (size_t)len < sizeof msg ? (size_t)len
                                                         : sizeof msg - 1);
        while (configured("aio") == HANG) {
            struct timespec ts = {0, 2 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        return;
    }
}

/* io_submit: fail the whole submission if any write iocb targets the dir. */
static int io_submit_fault(long nr, struct iocb **iocbs)
{
    io_submit_hang(nr, iocbs);
    for (long i = 0; i < nr && iocbs != NULL; i++) {
        struct iocb *cb = iocbs[i];
        if (cb == NULL)
            continue;
        if (cb->aio_lio_opcode != IOCB_CMD_PWRITE &&
            cb->aio_lio_opcode != IOCB_CMD_PWRITEV &&
            cb->aio_lio_opcode != IOCB_CMD_FSYNC &&
            cb->aio_lio_opcode != IOCB_CMD_FDSYNC)
            continue;
        int e = fault(cb->aio_lio_opcode == IOCB_CMD_FSYNC ||
                              cb->aio_lio_opcode == IOCB_CMD_FDSYNC
                          ? "fsync"
                          : "write",
                      "io_submit", (int)cb->aio_fildes);
        if (e != 0)
            return e;
    }
    return 0;
}

long syscall(long number, ...)
{
    va_list ap;
    long a[6];

    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);

    switch (number) {
    case SYS_io_submit: {
        int e = io_submit_fault(a[1], (struct iocb **)a[2]);
        if (e != 0) {
            errno = e;
            return -1;
        }
        break;
    }
    case SYS_pwritev:
    case SYS_pwritev2:
    case SYS_write:
    case SYS_pwrite64:
        FAIL_IF("write", "syscall-write", (int)a[0], -1);
        break;
    case SYS_fsync:
    case SYS_fdatasync:
        FAIL_IF("fsync", "syscall-fsync", (int)a[0], -1);
        break;
    }
    return get_syscall()(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* While scan=SLOW, every LMDB cursor step waits 1 ms; the first one says so
 * on stderr. */
int mdb_cursor_get(void *cursor, void *key, void *data, int op)
{
    static int said;

    if (configured("scan") == SLOW) {
        struct timespec ts = {0, 1000 * 1000};
        if (!said) {
            static const char msg[] = "diskfault: slowing LMDB cursor steps "
                                      "while scan=SLOW\n";
            get_write()(2, msg, sizeof msg - 1);
            said = 1;
        }
        nanosleep(&ts, NULL);
    }
    return get_mdb_cursor_get()(cursor, key, data, op);
}
