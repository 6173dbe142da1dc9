/* Size, duration and boolean parsing shared by config, CLI and D-Bus; /proc/PID/cgroup. */
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

/* /proc/PID/cgroup, for the QMP peer check (cgroup2) and the budget's membership (v2, or v1's
 * memory hierarchy). */
static void test_proc_cgroup(void **state) {
        const char *hybrid = "12:cpu,cpuacct:/other\n11:memory:/host/vms/vm1\n1:name=systemd:/x\n"
                             "0::/machine.slice/machine-vm1.scope\n";
        char *p = NULL;

        assert_int_equal(cgroup_path_from_proc("0::/machine.slice/machine-vm1.scope\n", NULL, &p), 0);
        assert_string_equal(p, "/machine.slice/machine-vm1.scope");
        free(p);
        assert_int_equal(cgroup_path_from_proc("0::/\n", NULL, &p), 0);
        assert_string_equal(p, "/");
        free(p);

        /* a hybrid host: each hierarchy its own line */
        assert_int_equal(cgroup_path_from_proc(hybrid, NULL, &p), 0);
        assert_string_equal(p, "/machine.slice/machine-vm1.scope");
        free(p);
        assert_int_equal(cgroup_path_from_proc(hybrid, "memory", &p), 0);
        assert_string_equal(p, "/host/vms/vm1");
        free(p);
        assert_int_equal(cgroup_path_from_proc(hybrid, "cpuacct", &p), 0);
        assert_string_equal(p, "/other");
        free(p);
        assert_int_equal(cgroup_path_from_proc("3:memory,foo:/a/b", "memory", &p), 0);   /* no newline */
        assert_string_equal(p, "/a/b");
        free(p);
        assert_int_equal(cgroup_path_from_proc("garbage\n0::/a\n", NULL, &p), 0);
        assert_string_equal(p, "/a");
        free(p);
        /* controllers match whole, and v2 and v1 lines are not confused */
        assert_int_equal(cgroup_path_from_proc(hybrid, "mem", &p), -ENOENT);
        assert_int_equal(cgroup_path_from_proc(hybrid, "blkio", &p), -ENOENT);
        assert_int_equal(cgroup_path_from_proc("0::/a\n", "memory", &p), -ENOENT);
        assert_int_equal(cgroup_path_from_proc("4:memory:/a\n", NULL, &p), -ENOENT);
        assert_int_equal(cgroup_path_from_proc("", NULL, &p), -ENOENT);

        assert_int_equal(cgroup_path_from_proc("0::\n", NULL, &p), -EBADMSG);
        assert_int_equal(cgroup_path_from_proc("0::relative\n", NULL, &p), -EBADMSG);
        /* an exiting process whose cgroup was removed: no path that could match a live one */
        p = NULL;
        assert_int_equal(cgroup_path_from_proc("0::/machine.slice/machine-vm1.scope (deleted)\n", NULL, &p),
                         -EIDRM);
        assert_null(p);

        /* the file read the real way: no such process, and our own */
        assert_int_equal(pid_cgroup_path(INT32_MAX, NULL, &p), -ENOENT);
        if (pid_cgroup_path(getpid(), NULL, &p) == 0) {
                assert_true(p[0] == '/');
                assert_true(cgroup_path_is_under(p, p));
                free(p);
        }
}

static void test_cgroup_path_is_under(void **state) {
        assert_true(cgroup_path_is_under("/m.slice/machine-vm1.scope", "/m.slice/machine-vm1.scope"));
        assert_true(cgroup_path_is_under("/m.slice/machine-vm1.scope/vcpu0", "/m.slice/machine-vm1.scope"));
        assert_true(cgroup_path_is_under("/m.slice/machine-vm1.scope/x", "/m.slice/machine-vm1.scope/"));
        assert_false(cgroup_path_is_under("/m.slice/machine-vm1.scope2", "/m.slice/machine-vm1.scope"));
        assert_false(cgroup_path_is_under("/m.slice/machine-vm2.scope", "/m.slice/machine-vm1.scope"));
        assert_false(cgroup_path_is_under("/m.slice", "/m.slice/machine-vm1.scope"));
        assert_true(cgroup_path_is_under("/host/vms/vm1", "/host"));
        assert_false(cgroup_path_is_under("/host/vms/vm1", "/hos"));
        assert_true(cgroup_path_is_under("/anything", "/"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_size),
                cmocka_unit_test(test_parse_duration),
                cmocka_unit_test(test_parse_boolean),
                cmocka_unit_test(test_format_size),
                cmocka_unit_test(test_proc_cgroup),
                cmocka_unit_test(test_cgroup_path_is_under),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
