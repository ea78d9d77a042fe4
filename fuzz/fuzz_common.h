/* fuzz_common.h - what both libFuzzer targets share: a scratch directory
 * that is removed again, quiet logging, failing loudly, and the list of
 * known findings a run may be told to step over.
 *
 * Header-only on purpose: each target is one translation unit plus the
 * library objects, so the Makefile needs no extra object per helper. */
#ifndef RAFTKV_FUZZ_COMMON_H
#define RAFTKV_FUZZ_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* A finding is a bug in src/, so the default is to stop at it with a
 * message that names it.  RAFTKV_FUZZ_TOLERATE=name[,name...] steps over
 * the named (already reported) findings so that a long run can look for
 * the next one; regress.sh never sets it, so kept reproducers keep failing
 * until src/ is fixed. */
static inline bool fuzz_tolerated(const char *name)
{
    const char *list = getenv("RAFTKV_FUZZ_TOLERATE");
    size_t n = strlen(name);

    while (list != NULL && *list != '\0') {
        const char *comma = strchr(list, ',');
        size_t len = comma ? (size_t)(comma - list) : strlen(list);
        if ((len == n && memcmp(list, name, n) == 0) ||
            (len == 3 && memcmp(list, "all", 3) == 0))
            return true;
        list = comma ? comma + 1 : NULL;
    }
    return false;
}

/* abort() rather than exit(): libFuzzer and the sanitizers turn an abort
 * into a crash report with a stack trace and save the input. */
__attribute__((noreturn, format(printf, 1, 2))) static inline void
fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n==FUZZ FINDING== ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    abort();
}

/* A finding with a name: fail, unless the run tolerates it (then count). */
static inline void fuzz_finding(const char *name, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void fuzz_finding(const char *name, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!fuzz_tolerated(name))
        fuzz_fail("[%s] %s", name, msg);
}

#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond))                                                          \
            fuzz_fail("%s:%d: check failed: %s", __FILE__, __LINE__, #cond);  \
    } while (0)

/* The library logs every rejected entry at error level; at thousands of
 * inputs a second that drowns the fuzzer's own output.  RAFTKV_FUZZ_LOG
 * (debug|info|warn|error) turns it back on when reproducing. */
static inline void fuzz_quiet_logs(void)
{
    enum log_level level;
    const char *want = getenv("RAFTKV_FUZZ_LOG");

    if (want != NULL && log_level_parse(want, &level) == 0)
        log_set_level(level);
    else
        log_set_level((enum log_level)(LOG_ERROR + 1));
}

static inline void fuzz_remove_dir(const char *dir);

/* Scratch space: $RAFTKV_FUZZ_TMPDIR (the scripts point it at a directory
 * they remove even after a crash) or /dev/shm, so that LMDB and libraft hit
 * memory, not a disk.  The name carries the pid: a run that died (a finding
 * aborts before any cleanup) leaves its directory behind, and the next run
 * removes the directories of processes that no longer exist. */
static inline void fuzz_make_dir(char *out, size_t cap, const char *what)
{
    const char *base = getenv("RAFTKV_FUZZ_TMPDIR");
    char prefix[64], path[4096];
    DIR *d;

    if (base == NULL || *base == '\0')
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(prefix, sizeof prefix, "raftkv-%s-", what);
    if ((d = opendir(base)) != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            long pid;
            char *end;
            if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
                continue;
            pid = strtol(e->d_name + strlen(prefix), &end, 10);
            if (pid <= 0 || *end != '-' ||
                (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
                snprintf(path, sizeof path, "%s/%s", base, e->d_name);
                if (pid > 0)
                    fuzz_remove_dir(path);
            }
        }
        closedir(d);
    }
    snprintf(out, cap, "%s/%s%ld-XXXXXX", base, prefix, (long)getpid());
    if (mkdtemp(out) == NULL)
        fuzz_fail("mkdtemp %s: %s", out, strerror(errno));
}

static inline int fuzz_rm_one(const char *path, const struct stat *st,
                              int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static inline void fuzz_remove_dir(const char *dir)
{
    if (dir != NULL && dir[0] != '\0')
        nftw(dir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
