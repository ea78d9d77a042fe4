/* Unit tests for src/segalloc.c: the process's posix_fallocate, which
 * libraft uses to prepare log segments.  It must keep posix_fallocate's
 * contract (size, zeros, existing bytes untouched, errors returned rather
 * than set in errno) and leave the new blocks written, not "unwritten". */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/raftkv-segalloc-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    *state = (void *)(intptr_t)fd;
    return 0;
}

static int teardown(void **state)
{
    close((int)(intptr_t)*state);
    unlink(path);
    return 0;
}

static off_t size_of(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return st.st_size;
}

static bool all_zero(int fd, off_t from, off_t to)
{
    static char buf[65536];
    while (from < to) {
        size_t n = (size_t)(to - from) < sizeof buf ? (size_t)(to - from)
                                                    : sizeof buf;
        ssize_t r = pread(fd, buf, n, from);
        assert_true(r > 0);
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != 0)
                return false;
        from += r;
    }
    return true;
}

/* Does any extent of @fd carry the "unwritten" flag?  -1 when the file
 * system cannot tell (no FIEMAP, as on tmpfs). */
static int has_unwritten_extent(int fd)
{
    size_t size = sizeof(struct fiemap) + 64 * sizeof(struct fiemap_extent);
    struct fiemap *fm = calloc(1, size);
    int found = 0;
    assert_non_null(fm);
    fm->fm_length = FIEMAP_MAX_OFFSET;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = 64;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) != 0) {
        free(fm);
        return -1;
    }
    for (unsigned i = 0; i < fm->fm_mapped_extents; i++)
        if (fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
            found = 1;
    free(fm);
    return found;
}

/* A new segment: the file grows to the size asked, reads as zeros, and (where
 * the file system says) has no unwritten extents left. */
static void test_new_file_is_written_zeros(void **state)
{
    int fd = (int)(intptr_t)*state;
    off_t len = (off_t)3 << 20 | 4096; /* over one write chunk, odd tail */

    assert_int_equal(posix_fallocate(fd, 0, len), 0);
    assert_int_equal(size_of(fd), len);
    assert_true(all_zero(fd, 0, len));
    assert_int_not_equal(has_unwritten_extent(fd), 1);
}

/* Bytes already in the file stay as they are; only the part past the old
 * end is added. */
static void test_existing_bytes_untouched(void **state)
{
    int fd = (int)(intptr_t)*state;
    char data[10000], back[sizeof data];

    memset(data, 'x', sizeof data);
    assert_int_equal(pwrite(fd, data, sizeof data, 0), (ssize_t)sizeof data);
    assert_int_equal(posix_fallocate(fd, 4096, 65536), 0);
    assert_int_equal(size_of(fd), 4096 + 65536);
    assert_int_equal(pread(fd, back, sizeof back, 0), (ssize_t)sizeof back);
    assert_memory_equal(back, data, sizeof data);
    assert_true(all_zero(fd, sizeof data, 4096 + 65536));

    /* Inside the file: nothing changes at all. */
    assert_int_equal(posix_fallocate(fd, 0, 8192), 0);
    assert_int_equal(size_of(fd), 4096 + 65536);
    assert_int_equal(pread(fd, back, sizeof back, 0), (ssize_t)sizeof back);
    assert_memory_equal(back, data, sizeof data);
}

/* Past the end: the gap reads as zeros too, and the size is offset + len. */
static void test_range_past_the_end(void **state)
{
    int fd = (int)(intptr_t)*state;

    assert_int_equal(pwrite(fd, "abc", 3, 0), 3);
    assert_int_equal(posix_fallocate(fd, 100000, 5000), 0);
    assert_int_equal(size_of(fd), 105000);
    assert_true(all_zero(fd, 3, 105000));
}

/* Errors come back as the return value, as posix_fallocate's do. */
static void test_errors_are_returned(void **state)
{
    int fd = (int)(intptr_t)*state, pipefd[2];

    assert_int_equal(posix_fallocate(fd, 0, 0), EINVAL);
    assert_int_equal(posix_fallocate(fd, -1, 10), EINVAL);
    assert_int_equal(posix_fallocate(-1, 0, 10), EBADF);
    assert_int_equal(pipe(pipefd), 0);
    assert_int_not_equal(posix_fallocate(pipefd[1], 0, 10), 0);
    close(pipefd[0]);
    close(pipefd[1]);
    assert_int_equal(size_of(fd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_file_is_written_zeros, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_existing_bytes_untouched, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_range_past_the_end, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_errors_are_returned, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
