/* aiodestroy.c - libraft's io_destroy calls, moved off the loop thread.
 *
 * libraft 0.15 gives every open log segment its own kernel AIO context and
 * destroys it with io_destroy(2) when the segment is closed: when it fills
 * up, and at every snapshot (which closes the open segment early).  That
 * call runs on the loop thread, and io_destroy waits for an RCU grace period
 * before it returns: 25-30 ms here (perf sched: the loop thread asleep in
 * __x64_sys_io_destroy -> wait_for_completion, right after each snapshot).
 * Meanwhile the node answers nothing, and on the leader every request in
 * flight waits: at 64 connections the write p99.9 went from 6-9 ms without
 * snapshots to 32-46 ms with them.
 *
 * libraft makes the call through glibc's syscall(), so this file defines
 * syscall() for the whole process (an executable's definition wins, as with
 * segalloc.c's posix_fallocate).  io_destroy is handed to a short-lived
 * detached thread and reported done at once; every other number goes to the
 * next syscall() in the lookup order (glibc's, or the fault-injection shim's
 * when that is preloaded).  libraft ignores io_destroy's result and never
 * touches the context again; a write still in flight on it completes before
 * the context goes, as it did when the loop waited.  libraft also makes and
 * destroys a context per write on its worker threads when a write would
 * block: past AIODESTROY_MAX_THREADS waiting, a call is made in place. */
#include "aiodestroy.h"
#include "epollskip.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>

#define AIODESTROY_MAX_THREADS 16

typedef long (*aiodestroy_syscall_fn)(long, ...);

static aiodestroy_syscall_fn aiodestroy_next;
static pthread_once_t aiodestroy_once = PTHREAD_ONCE_INIT;
static atomic_uint aiodestroy_waiting;
static atomic_ulong aiodestroy_handed;

static void aiodestroy_resolve(void)
{
    aiodestroy_next = (aiodestroy_syscall_fn)dlsym(RTLD_NEXT, "syscall");
}

static long aiodestroy_forward(long number, const long a[6])
{
    pthread_once(&aiodestroy_once, aiodestroy_resolve);
    if (aiodestroy_next == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return aiodestroy_next(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

static void *aiodestroy_main(void *arg)
{
    long a[6] = {(long)(uintptr_t)arg, 0, 0, 0, 0, 0};
    aiodestroy_forward(SYS_io_destroy, a);
    atomic_fetch_sub(&aiodestroy_waiting, 1);
    return NULL;
}

/* 0 once a thread owns the call; -1 (nothing started) to make it here. */
static int aiodestroy_defer(long ctx)
{
    pthread_attr_t attr;
    pthread_t tid;
    int rv;

    if (atomic_load(&aiodestroy_waiting) >= AIODESTROY_MAX_THREADS)
        return -1;
    if (pthread_attr_init(&attr) != 0)
        return -1;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 << 10);
    atomic_fetch_add(&aiodestroy_waiting, 1);
    rv = pthread_create(&tid, &attr, aiodestroy_main, (void *)(uintptr_t)ctx);
    pthread_attr_destroy(&attr);
    if (rv != 0) {
        atomic_fetch_sub(&aiodestroy_waiting, 1);
        return -1;
    }
    atomic_fetch_add(&aiodestroy_handed, 1);
    return 0;
}

/* Like glibc's, this reads six argument words whatever the number takes;
 * the sixth comes from the caller's stack, past what a caller with fewer
 * arguments wrote, which AddressSanitizer would flag: not checked here. */
__attribute__((no_sanitize_address)) long syscall(long number, ...)
{
    va_list ap;
    long a[6];

    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_io_destroy && aiodestroy_defer(a[0]) == 0)
        return 0;
    if (number == SYS_close)
        epollskip_forget((int)a[0]); /* libuv closes this way */
    return aiodestroy_forward(number, a);
}

unsigned aiodestroy_pending(void)
{
    return atomic_load(&aiodestroy_waiting);
}

unsigned long aiodestroy_deferred(void)
{
    return atomic_load(&aiodestroy_handed);
}
