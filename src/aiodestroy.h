/* aiodestroy.h - io_destroy(2) off the loop thread; see aiodestroy.c.
 *
 * The file defines syscall() for the process: SYS_io_destroy returns 0 at
 * once and runs on a detached thread (or right here when 16 are already
 * waiting or no thread can be started); every other number is passed on
 * unchanged, errno included.  SYS_close also tells epollskip.c that the
 * descriptor is going. */
#ifndef RAFTKV_AIODESTROY_H
#define RAFTKV_AIODESTROY_H

/* How many io_destroy calls have been handed to a thread and not finished
 * yet.  For tests; never fails. */
unsigned aiodestroy_pending(void);

/* How many io_destroy calls have been handed to a thread since start. */
unsigned long aiodestroy_deferred(void);

#endif
