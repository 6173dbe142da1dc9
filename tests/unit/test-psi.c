/* PSI trigger strings: parsing, the kernel format, rounding for unprivileged writers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse),
                cmocka_unit_test(test_round),
                cmocka_unit_test(test_read_averages),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
