/* epollskip.c - epoll_ctl calls that change nothing, answered here.
 *
 * h2o 2.2.5 stops reading a connection while it handles a request and
 * starts again once the answer is out.  libuv 1.44 leaves the descriptor in
 * its epoll set when reading stops, but forgets that it did: the restart is
 * an EPOLL_CTL_ADD, which fails with EEXIST, then an EPOLL_CTL_MOD to the
 * events the descriptor already has.  Two system calls per request that
 * change nothing: 12% of a leader's CPU under writes on the bench machine
 * (a paravirtualized guest where every system call is dear).  Answering
 * them here lifted stale reads 9-35% (10 alternated pairs), linearizable
 * reads a median 4%, writes not at all (bench/NOTES.md).
 *
 * So this file defines epoll_ctl for the whole process (an executable's
 * definition wins over glibc's, as with segalloc.c and aiodestroy.c) and
 * records, for one epoll set (the first one anything is added to: the
 * loop's), which events the kernel holds for each descriptor.  A call whose
 * answer is known is answered without the kernel, as the kernel would: an
 * ADD of what is already there fails with EEXIST, a MOD to what is already
 * there succeeds.  Every other call goes to the kernel, and its result
 * becomes the record: the events on success, "unknown" otherwise.
 *
 * The record may know less than the kernel, never more.  A descriptor
 * leaves every epoll set when it is closed, with no epoll_ctl, and its
 * number comes back for the next socket.  So close() is defined here too,
 * and aiodestroy.c's syscall() reports SYS_close (how libuv closes): either
 * forgets the descriptor before it goes, and closing the followed epoll
 * descriptor forgets them all.  Only registrations as libuv makes them are
 * recorded (the data word is the descriptor, no edge-triggered or one-shot
 * flag: for those a MOD with the same events re-arms, so it is not a no-op).
 */
#include "epollskip.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <unistd.h>

#define EPOLLSKIP_FDS 65536 /* higher descriptors are passed on */
#define EPOLLSKIP_KNOWN ((uint64_t)1 << 32)
#define EPOLLSKIP_REARMS ((uint32_t)(EPOLLET | EPOLLONESHOT | EPOLLEXCLUSIVE))

typedef int (*epollskip_ctl_fn)(int, int, int, struct epoll_event *);
typedef int (*epollskip_close_fn)(int);

/* Per descriptor: 0 (unknown) or EPOLLSKIP_KNOWN | the events it holds. */
static _Atomic uint64_t epollskip_fd[EPOLLSKIP_FDS];
static atomic_int epollskip_epfd = -1; /* the followed epoll set, or -1 */
static atomic_ulong epollskip_count;

static epollskip_ctl_fn epollskip_next_ctl;
static epollskip_close_fn epollskip_next_close;
static pthread_once_t epollskip_once = PTHREAD_ONCE_INIT;

static void epollskip_resolve(void)
{
    epollskip_next_ctl = (epollskip_ctl_fn)dlsym(RTLD_NEXT, "epoll_ctl");
    epollskip_next_close = (epollskip_close_fn)dlsym(RTLD_NEXT, "close");
}

static void epollskip_forget_all(void)
{
    for (size_t i = 0; i < EPOLLSKIP_FDS; i++)
        atomic_store_explicit(&epollskip_fd[i], 0, memory_order_relaxed);
}

void epollskip_forget(int fd)
{
    if (fd < 0)
        return;
    if (fd == atomic_load(&epollskip_epfd)) {
        epollskip_forget_all();
        atomic_store(&epollskip_epfd, -1);
        return;
    }
    if (fd < EPOLLSKIP_FDS)
        atomic_store(&epollskip_fd[fd], 0);
}

unsigned long epollskip_answered(void)
{
    return atomic_load(&epollskip_count);
}

/* The record a successful @op with @ev would leave, or 0 when such a
 * registration is not one this file keeps. */
static uint64_t epollskip_want(int op, int fd, const struct epoll_event *ev)
{
    if (op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD)
        return 0;
    if (ev == NULL || ev->data.u64 != (uint64_t)fd ||
        (ev->events & EPOLLSKIP_REARMS) != 0)
        return 0;
    return EPOLLSKIP_KNOWN | ev->events;
}

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    int followed;
    uint64_t want;
    int rv;

    pthread_once(&epollskip_once, epollskip_resolve);
    if (epollskip_next_ctl == NULL) {
        errno = ENOSYS;
        return -1;
    }
    followed = atomic_load(&epollskip_epfd);
    if (followed < 0 && op == EPOLL_CTL_ADD &&
        atomic_compare_exchange_strong(&epollskip_epfd, &followed, epfd))
        followed = epfd;
    if (epfd != followed || fd < 0 || fd >= EPOLLSKIP_FDS)
        return epollskip_next_ctl(epfd, op, fd, ev);

    want = epollskip_want(op, fd, ev);
    if (want != 0 && atomic_load(&epollskip_fd[fd]) == want) {
        atomic_fetch_add(&epollskip_count, 1);
        if (op == EPOLL_CTL_MOD)
            return 0;
        errno = EEXIST;
        return -1;
    }
    rv = epollskip_next_ctl(epfd, op, fd, ev);
    /* A failed call leaves the registration unknown (an ADD failing with
     * EEXIST, say, says nothing of the events there). */
    atomic_store(&epollskip_fd[fd], rv == 0 ? want : 0);
    return rv;
}

int close(int fd)
{
    pthread_once(&epollskip_once, epollskip_resolve);
    epollskip_forget(fd);
    if (epollskip_next_close == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return epollskip_next_close(fd);
}
