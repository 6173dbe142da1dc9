/* guest-stats parsing: QEMU's "not reported" spellings, missing fields, bad values; the
 * free-page-reporting property. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "balloon.h"

static json_object *parse(const char *s) {
        json_object *o = json_tokener_parse(s);
        assert_non_null(o);
        return o;
}

static void test_full_report(void **state) {
        GuestStats s;
        json_object *o = parse(
                "{\"stats\": {\"stat-swap-out\": 0, \"stat-available-memory\": 300000000, "
                "\"stat-free-memory\": 200000000, \"stat-minor-faults\": 12345, \"stat-major-faults\": 17, "
                "\"stat-total-memory\": 480000000, \"stat-swap-in\": 4096, \"stat-disk-caches\": 50000000, "
                "\"stat-htlb-pgalloc\": 0, \"stat-htlb-pgfail\": 0, \"stat-oom-kills\": 2, "
                "\"stat-alloc-stalls\": 5, \"stat-direct-scans\": 100, \"stat-direct-reclaims\": 90, "
                "\"stat-async-scans\": 1000, \"stat-async-reclaims\": 900}, \"last-update\": 1795696822}");

        assert_int_equal(balloon_parse_guest_stats(o, &s), 0);
        assert_true(s.valid);
        assert_int_equal(s.updated_usec, 0);
        assert_int_equal(s.total_bytes, 480000000);
        assert_int_equal(s.free_bytes, 200000000);
        assert_int_equal(s.available_bytes, 300000000);
        assert_int_equal(s.caches_bytes, 50000000);
        assert_int_equal(s.major_faults, 17);
        assert_int_equal(s.minor_faults, 12345);
        assert_int_equal(s.swap_in_bytes, 4096);
        assert_int_equal(s.swap_out_bytes, 0);
        assert_int_equal(s.oom_kills, 2);
        assert_int_equal(s.alloc_stalls, 5);
        assert_int_equal(s.direct_scan, 100);
        assert_int_equal(s.direct_reclaim, 90);
        assert_int_equal(s.async_scan, 1000);
        assert_int_equal(s.async_reclaim, 900);
        json_object_put(o);
}

static void test_not_reported(void **state) {
        GuestStats s;
        /* QEMU 7.2 with a 6.1 guest: no 6.12 counters; -1 and 2^64-1 both mean "not sent". */
        json_object *o = parse(
                "{\"stats\": {\"stat-free-memory\": 18446744073709551615, \"stat-available-memory\": -1, "
                "\"stat-total-memory\": 536870912, \"stat-disk-caches\": 0}, \"last-update\": 17}");

        assert_int_equal(balloon_parse_guest_stats(o, &s), 0);
        assert_true(s.valid);
        assert_int_equal(s.total_bytes, 536870912);
        assert_int_equal(s.caches_bytes, 0);
        assert_true(s.free_bytes == UINT64_MAX);
        assert_true(s.available_bytes == UINT64_MAX);
        assert_true(s.oom_kills == UINT64_MAX);
        assert_true(s.major_faults == UINT64_MAX);
        assert_true(s.swap_in_bytes == UINT64_MAX);
        json_object_put(o);
}

static void test_no_report_yet(void **state) {
        GuestStats s;
        /* What QEMU 7.2 answers before the guest driver reported anything (seen for real). */
        json_object *o = parse(
                "{\"stats\": {\"stat-htlb-pgalloc\": 18446744073709551615, \"stat-swap-out\": 18446744073709551615, "
                "\"stat-available-memory\": 18446744073709551615, \"stat-htlb-pgfail\": 18446744073709551615, "
                "\"stat-free-memory\": 18446744073709551615, \"stat-minor-faults\": 18446744073709551615, "
                "\"stat-major-faults\": 18446744073709551615, \"stat-total-memory\": 18446744073709551615, "
                "\"stat-swap-in\": 18446744073709551615, \"stat-disk-caches\": 18446744073709551615}, "
                "\"last-update\": 0}");

        assert_int_equal(balloon_parse_guest_stats(o, &s), 0);
        assert_false(s.valid);
        assert_true(s.total_bytes == UINT64_MAX);
        assert_true(s.available_bytes == UINT64_MAX);
        json_object_put(o);

        /* A timestamp but every value unreported is no data either. */
        o = parse("{\"stats\": {}, \"last-update\": 5}");
        assert_int_equal(balloon_parse_guest_stats(o, &s), 0);
        assert_false(s.valid);
        json_object_put(o);

        /* Values without last-update: QEMU always sends it; without it we cannot judge age. */
        o = parse("{\"stats\": {\"stat-total-memory\": 1}}");
        assert_int_equal(balloon_parse_guest_stats(o, &s), 0);
        assert_false(s.valid);
        assert_int_equal(s.total_bytes, 1);
        json_object_put(o);
}

static void test_malformed(void **state) {
        static const char *const bad[] = {
                "{}",
                "{\"stats\": 3, \"last-update\": 1}",
                "{\"stats\": [], \"last-update\": 1}",
                "{\"stats\": {\"stat-free-memory\": \"lots\"}, \"last-update\": 1}",
                "{\"stats\": {\"stat-free-memory\": 1.5}, \"last-update\": 1}",
                "{\"stats\": {\"stat-free-memory\": null}, \"last-update\": 1}",
                "{\"stats\": {}, \"last-update\": \"yesterday\"}",
                "[1]",
                "7",
        };
        GuestStats s;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                json_object *o = parse(bad[i]);
                if (balloon_parse_guest_stats(o, &s) != -EBADMSG)
                        fail_msg("accepted %s", bad[i]);
                assert_false(s.valid);
                json_object_put(o);
        }
        assert_int_equal(balloon_parse_guest_stats(NULL, &s), -EBADMSG);
}

static void test_unknown_stats_ignored(void **state) {
        GuestStats s;
        /* A newer QEMU may add stats; they must not break parsing. */
        json_object *o = parse("{\"stats\": {\"stat-free-memory\": 10, \"stat-from-the-future\": \"x\"}, "
                               "\"last-update\": 9, \"something-new\": true}");

        assert_int_equal(balloon_parse_guest_stats(o, &s), 0);
        assert_true(s.valid);
        assert_int_equal(s.free_bytes, 10);
        json_object_put(o);
}

static void test_free_page_reporting(void **state) {
        /* qom-get free-page-reporting returns a bare JSON bool (QEMU 7.2). */
        static const struct {
                const char *json;
                int want;
        } cases[] = {
                { "true", 1 },
                { "false", 0 },
                /* json-c would call these true or false; QEMU never sends them for a bool */
                { "1", -EBADMSG },
                { "0", -EBADMSG },
                { "\"on\"", -EBADMSG },
                { "{\"free-page-reporting\": true}", -EBADMSG },
                { "[true]", -EBADMSG },
                { "null", -EBADMSG },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_object *o = json_tokener_parse(cases[i].json);
                int r = balloon_parse_free_page_reporting(o);
                if (r != cases[i].want)
                        fail_msg("%s: got %d, expected %d", cases[i].json, r, cases[i].want);
                json_object_put(o);
        }
        assert_int_equal(balloon_parse_free_page_reporting(NULL), -EBADMSG);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_full_report),
                cmocka_unit_test(test_not_reported),
                cmocka_unit_test(test_no_report_yet),
                cmocka_unit_test(test_malformed),
                cmocka_unit_test(test_unknown_stats_ignored),
                cmocka_unit_test(test_free_page_reporting),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
