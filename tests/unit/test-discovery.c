/* QMP socket discovery from a QEMU command line, as /proc/PID/cmdline holds it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cmocka.h>

#include "discovery.h"

/* Joins words into a NUL-separated buffer like /proc/PID/cmdline. */
static size_t cmdline(char *buf, size_t size, const char *const *argv) {
        size_t n = 0;
        for (; *argv; argv++) {
                size_t l = strlen(*argv) + 1;
                assert_true(n + l <= size);
                memcpy(buf + n, *argv, l);
                n += l;
        }
        return n;
}

static char *find(const char *cwd, const char *const *argv) {
        char buf[4096];
        size_t n = cmdline(buf, sizeof buf, argv);
        char *path = NULL;
        int r = qmp_socket_from_cmdline(buf, n, cwd, &path);
        if (r < 0)
                return NULL;
        return path;
}

static void expect(const char *want, const char *cwd, const char *const *argv) {
        char *got = find(cwd, argv);
        if (want) {
                assert_non_null(got);
                assert_string_equal(got, want);
        } else
                assert_null(got);
        free(got);
}

static void test_qmp_option(void **state) {
        expect("/run/vm1.qmp", NULL, (const char *const[]) {
                "qemu-system-x86_64", "-m", "512M", "-qmp", "unix:/run/vm1.qmp,server=on,wait=off", NULL });
        expect("/run/vm1.qmp", NULL, (const char *const[]) {
                "qemu", "-qmp", "unix:/run/vm1.qmp,server,nowait", NULL });
        expect("/run/vm1.qmp", NULL, (const char *const[]) { "qemu", "--qmp", "unix:/run/vm1.qmp", NULL });
        expect("/run/a,b.qmp", NULL, (const char *const[]) { "qemu", "-qmp", "unix:/run/a,,b.qmp,server=on", NULL });
        expect("/var/lib/vm/qmp.sock", "/var/lib/vm", (const char *const[]) {
                "qemu", "-qmp-pretty", "unix:qmp.sock,server=on,wait=off", NULL });
        /* tcp monitors and client-mode sockets are not for us */
        expect(NULL, NULL, (const char *const[]) { "qemu", "-qmp", "tcp:localhost:4444,server", NULL });
        expect(NULL, NULL, (const char *const[]) { "qemu", "-qmp", "unix:/run/x,server=off", NULL });
        expect(NULL, NULL, (const char *const[]) { "qemu", "-m", "1G", NULL });
        /* "-qmp" as the last word has no value */
        expect(NULL, NULL, (const char *const[]) { "qemu", "-qmp", NULL });
}

static void test_chardev_mon(void **state) {
        expect("/run/mon.sock", NULL, (const char *const[]) {
                "qemu", "-chardev", "socket,id=mon0,path=/run/mon.sock,server=on,wait=off",
                "-mon", "chardev=mon0,mode=control", NULL });
        /* readline monitor: not QMP */
        expect(NULL, NULL, (const char *const[]) {
                "qemu", "-chardev", "socket,id=mon0,path=/run/mon.sock,server=on,wait=off",
                "-mon", "chardev=mon0,mode=readline", NULL });
        /* libvirt passes its monitor as an fd: unreachable for us */
        expect(NULL, NULL, (const char *const[]) {
                "qemu", "-chardev", "socket,id=charmonitor,fd=23,server=on,wait=off",
                "-mon", "chardev=charmonitor,id=monitor,mode=control", NULL });
        /* QEMU as the client: nothing listens */
        expect(NULL, NULL, (const char *const[]) {
                "qemu", "-chardev", "socket,id=m,path=/run/m.sock", "-mon", "chardev=m,mode=control", NULL });
        /* chardev id must match */
        expect(NULL, NULL, (const char *const[]) {
                "qemu", "-chardev", "socket,id=other,path=/run/o.sock,server=on",
                "-mon", "chardev=mon0,mode=control", NULL });
}

static void test_prefer_own_monitor(void **state) {
        /* libvirt's fd monitor, a user's monitor, and one given to autoballoon */
        expect("/run/autoballoon/vm1.qmp", NULL, (const char *const[]) {
                "qemu", "-chardev", "socket,id=charmonitor,fd=23,server=on,wait=off",
                "-mon", "chardev=charmonitor,id=monitor,mode=control",
                "-qmp", "unix:/run/user-tools.qmp,server=on,wait=off",
                "-qmp", "unix:/run/autoballoon/vm1.qmp,server=on,wait=off", NULL });
        expect("/run/x.sock", NULL, (const char *const[]) {
                "qemu", "-qmp", "unix:/run/user.qmp,server=on,wait=off",
                "-chardev", "socket,id=autoballoon,path=/run/x.sock,server=on,wait=off",
                "-mon", "chardev=autoballoon,mode=control", NULL });
}

static void test_malformed(void **state) {
        char *path = NULL;
        /* not NUL-terminated */
        assert_int_equal(qmp_socket_from_cmdline("qemu\0-qmp\0unix:/x", 17, NULL, &path), -EINVAL);
        assert_int_equal(qmp_socket_from_cmdline("", 0, NULL, &path), -ENOENT);
}

static void test_cgroup2_mount(void **state) {
        char *p = NULL;
        /* Every Linux with PSI has cgroup2 somewhere (the daemon needs it for the VMs' scopes);
         * a machine the tests run on without it is a broken test machine, not a pass. */
        assert_int_equal(cgroup2_mount_point(&p), 0);
        assert_true(p[0] == '/');
        assert_int_equal(access(p, F_OK), 0);
        free(p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_qmp_option),
                cmocka_unit_test(test_chardev_mon),
                cmocka_unit_test(test_prefer_own_monitor),
                cmocka_unit_test(test_malformed),
                cmocka_unit_test(test_cgroup2_mount),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
