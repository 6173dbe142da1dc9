/* log.c's batches: what is logged between log_batch_begin() and the outermost log_batch_end()
 * reaches stderr only at that end, in order, with nothing lost; a large batch is written as it
 * grows, never held without bound. stderr is a pipe here, read back by the test. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

static int pipe_rd = -1, saved_stderr = -1;

static int setup(void **state) {
        int p[2];

        assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
        /* room for the large batch below without a reader */
        (void) fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
        saved_stderr = dup(STDERR_FILENO);
        assert_true(saved_stderr >= 0);
        assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
        close(p[1]);
        pipe_rd = p[0];
        log_set_max_level(LOG_INFO);
        return 0;
}

static int teardown(void **state) {
        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
        close(pipe_rd);
        return 0;
}

/* Everything the pipe holds now, as a string ("" when empty). */
static char *drain(void) {
        size_t size = 0, allocated = 4096;
        char *buf = malloc(allocated);

        assert_non_null(buf);
        for (;;) {
                if (allocated - size < 4096) {
                        allocated *= 2;
                        buf = realloc(buf, allocated);
                        assert_non_null(buf);
                }
                ssize_t k = read(pipe_rd, buf + size, allocated - size - 1);
                if (k <= 0)
                        break;
                size += (size_t) k;
        }
        buf[size] = 0;
        return buf;
}

static void test_unbatched(void **state) {
        log_info("one %d", 1);
        char *s = drain();
        assert_string_equal(s, "one 1\n");
        free(s);
}

static void test_batch_held_until_end(void **state) {
        log_batch_begin();
        log_info("first");
        log_warning("second %s", "line");
        char *s = drain();
        assert_string_equal(s, "");   /* nothing yet: the batch holds it */
        free(s);

        log_batch_begin();            /* nested: the inner end writes nothing */
        log_info("third");
        log_batch_end();
        s = drain();
        assert_string_equal(s, "");
        free(s);

        log_batch_end();
        s = drain();
        assert_string_equal(s, "first\nsecond line\nthird\n");
        free(s);

        log_info("after");            /* unbatched again */
        s = drain();
        assert_string_equal(s, "after\n");
        free(s);
}

static void test_debug_filtered_in_batch(void **state) {
        log_batch_begin();
        log_debug("not shown");
        log_info("shown");
        log_batch_end();
        char *s = drain();
        assert_string_equal(s, "shown\n");
        free(s);
}

/* 1,000 moves' lines (the size of a batch at 1,000 VMs) and more: written as the batch grows
 * past its flush size, all of them, in order. */
static void test_large_batch(void **state) {
        enum { LINES = 3000 };
        size_t seen_during = 0;

        log_batch_begin();
        for (int i = 0; i < LINES; i++) {
                log_info("Machine vm-%04d: balloon target 512M → 486M (host-pressure, low pressure) %0100d", i, 0);
                if (i == LINES / 2) {
                        char *s = drain();
                        seen_during = strlen(s);
                        free(s);
                }
        }
        log_batch_end();
        char *rest = drain();
        /* part of it was written before the end (the batch does not grow without bound) */
        assert_true(seen_during > 0);
        /* and the end wrote the rest: the last line is there, whole */
        assert_non_null(strstr(rest, "Machine vm-2999: balloon target"));
        assert_true(rest[strlen(rest) - 1] == '\n');
        free(rest);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_unbatched, setup, teardown),
                cmocka_unit_test_setup_teardown(test_batch_held_until_end, setup, teardown),
                cmocka_unit_test_setup_teardown(test_debug_filtered_in_batch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_large_batch, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
