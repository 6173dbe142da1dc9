/* PSI trigger strings: parsing, the kernel format, rounding for unprivileged writers; the
 * closer that keeps trigger closes off the event loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <unistd.h>

#include "async-close.h"
#include "psi.h"

static void test_parse(void **state) {
        PsiTriggerSpec s;
        char buf[64];

        assert_int_equal(psi_trigger_parse("some 100ms 1s", &s), 0);
        assert_false(s.full);
        assert_int_equal(s.stall_usec, 100000);
        assert_int_equal(s.window_usec, 1000000);
        psi_trigger_format(&s, buf, sizeof buf);
        assert_string_equal(buf, "some 100000 1000000");

        assert_int_equal(psi_trigger_parse("full 150000 2000000", &s), 0);
        assert_true(s.full);
        assert_int_equal(s.stall_usec, 150000);

        assert_int_equal(psi_trigger_parse("half 1s 2s", &s), -EINVAL);
        assert_int_equal(psi_trigger_parse("some 1s", &s), -EINVAL);
        assert_int_equal(psi_trigger_parse("some 1s 2s extra", &s), -EINVAL);
        assert_int_equal(psi_trigger_parse("some 3s 2s", &s), -ERANGE);      /* stall > window */
        assert_int_equal(psi_trigger_parse("some 10ms 100ms", &s), -ERANGE); /* window < 500 ms */
        assert_int_equal(psi_trigger_parse("some 1s 11s", &s), -ERANGE);     /* window > 10 s */
        assert_int_equal(psi_trigger_parse("some 0 1s", &s), -ERANGE);
}

static void test_round(void **state) {
        PsiTriggerSpec s;

        assert_int_equal(psi_trigger_parse("some 100ms 1s", &s), 0);
        assert_true(psi_trigger_round_unprivileged(&s));
        /* same share of the window: 10 % */
        assert_int_equal(s.window_usec, 2000000);
        assert_int_equal(s.stall_usec, 200000);
        assert_false(psi_trigger_round_unprivileged(&s));

        assert_int_equal(psi_trigger_parse("full 1s 9s", &s), 0);
        assert_true(psi_trigger_round_unprivileged(&s));
        assert_int_equal(s.window_usec, 10000000);
        assert_true(s.stall_usec <= s.window_usec);
}

static void test_read_averages(void **state) {
        char path[] = "/tmp/test-psi-XXXXXX";
        int fd = mkstemp(path);
        PsiAverages a;
        const char *text = "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n"
                           "full avg10=0.50 avg60=0.10 avg300=0.00 total=678\n";

        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
        assert_int_equal(psi_read_averages(path, &a), 0);
        assert_true(a.some_avg10 > 1.49 && a.some_avg10 < 1.51);
        assert_int_equal(a.some_total_usec, 12345);
        assert_int_equal(a.full_total_usec, 678);
        unlink(path);
        assert_int_equal(psi_read_averages(path, &a), -ENOENT);
}

static bool fd_open(int fd) {
        return fcntl(fd, F_GETFD) >= 0 || errno != EBADF;
}

/* The closer thread closes what it is handed without anyone waiting for it; finish closes the
 * rest and counts everything; after finish, fds are closed at once. The fds are pipes: what is
 * checked is the hand-over, not the RCU wait of a real trigger (the benchmark measures that). */
static void test_close_later(void **state) {
        int p[64][2], q[2];

        for (size_t i = 0; i < 64; i++)
                assert_int_equal(pipe(p[i]), 0);
        for (size_t i = 0; i < 32; i++)
                async_close(p[i][0]);
        /* the closer works from several threads: any order, so wait for all 32 (at most 5 s) */
        for (int tries = 0; tries < 500; tries++) {
                size_t open = 0;
                for (size_t i = 0; i < 32; i++)
                        open += fd_open(p[i][0]);
                if (open == 0)
                        break;
                usleep(10000);
        }
        for (size_t i = 0; i < 32; i++)
                assert_false(fd_open(p[i][0]));   /* closed by the thread, nobody waited */
        for (size_t i = 32; i < 64; i++)
                async_close(p[i][0]);
        assert_int_equal(async_close_finish(), 64);
        for (size_t i = 0; i < 64; i++) {
                assert_false(fd_open(p[i][0]));
                assert_true(fd_open(p[i][1]));
                close(p[i][1]);
        }
        assert_int_equal(pipe(q), 0);
        async_close(q[0]);                  /* after finish: closed right here */
        assert_false(fd_open(q[0]));
        close(q[1]);
        async_close(-1);                    /* nothing to do */
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_round),
                cmocka_unit_test(test_read_averages),
                cmocka_unit_test(test_close_later),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
