/* Size, duration and boolean parsing shared by config, CLI and D-Bus. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "util.h"

static void test_parse_size(void **state) {
        uint64_t v;

        assert_int_equal(parse_size("512M", &v), 0);
        assert_int_equal(v, 512 * MIB);
        assert_int_equal(parse_size("2G", &v), 0);
        assert_int_equal(v, 2 * GIB);
        assert_int_equal(parse_size("1.5G", &v), 0);
        assert_int_equal(v, 3 * GIB / 2);
        assert_int_equal(parse_size("4096", &v), 0);
        assert_int_equal(v, 4096);
        assert_int_equal(parse_size("1KiB", &v), 0);
        assert_int_equal(v, 1024);
        assert_int_equal(parse_size("", &v), -EINVAL);
        assert_int_equal(parse_size("-1M", &v), -EINVAL);
        assert_int_equal(parse_size("12X", &v), -EINVAL);
        assert_int_equal(parse_size("1.5", &v), -EINVAL);
        assert_int_equal(parse_size("99999999999T", &v), -ERANGE);
}

static void test_parse_duration(void **state) {
        usec_t v;

        assert_int_equal(parse_duration("30s", &v), 0);
        assert_int_equal(v, 30 * USEC_PER_SEC);
        assert_int_equal(parse_duration("500ms", &v), 0);
        assert_int_equal(v, 500 * USEC_PER_MSEC);
        assert_int_equal(parse_duration("2min", &v), 0);
        assert_int_equal(v, 120 * USEC_PER_SEC);
        assert_int_equal(parse_duration("5", &v), 0);
        assert_int_equal(v, 5 * USEC_PER_SEC);
        assert_int_equal(parse_duration("5 parsecs", &v), -EINVAL);
}

static void test_parse_boolean(void **state) {
        assert_int_equal(parse_boolean("yes"), 1);
        assert_int_equal(parse_boolean("OFF"), 0);
        assert_int_equal(parse_boolean("maybe"), -EINVAL);
}

static void test_format_size(void **state) {
        char buf[FORMAT_SIZE_MAX];

        assert_string_equal(format_size(buf, sizeof buf, 512 * MIB), "512M");
        assert_string_equal(format_size(buf, sizeof buf, 3 * GIB / 2), "1.5G");
        assert_string_equal(format_size(buf, sizeof buf, 100), "100B");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_size),
                cmocka_unit_test(test_parse_duration),
                cmocka_unit_test(test_parse_boolean),
                cmocka_unit_test(test_format_size),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
