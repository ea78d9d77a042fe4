/* epollskip.h - epoll_ctl calls that change nothing, answered without the
 * kernel; see epollskip.c.
 *
 * The file defines epoll_ctl() and close() for the process.  Both behave as
 * glibc's do, errno included: epoll_ctl answers a few calls from what it
 * knows the kernel holds, and passes every other one on; close forgets the
 * descriptor first, then passes the call on. */
#ifndef RAFTKV_EPOLLSKIP_H
#define RAFTKV_EPOLLSKIP_H

/* Forget what is known about @fd: it is being closed.  Closing the epoll
 * descriptor being followed forgets everything.  Called by close() and by
 * aiodestroy.c's syscall() for SYS_close (libuv closes through it).  Any
 * thread; never fails. */
void epollskip_forget(int fd);

/* How many epoll_ctl calls have been answered here since start.  For tests
 * and bench notes; never fails. */
unsigned long epollskip_answered(void);

#endif
