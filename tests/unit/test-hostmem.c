/* HostMemorySource= readers: /proc/meminfo, memory cgroups v2 and v1 (as files in a temporary
 * directory laid out like the kernel's), /proc/PID/status, HostMemoryReserve= values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "config.h"
#include "hostmem.h"

static const char meminfo_text[] =
        "MemTotal:       24683912 kB\n"
        "MemFree:        23000000 kB\n"
        "MemAvailable:   20000000 kB\n"
        "Buffers:            1000 kB\n"
        "SwapTotal:       1048576 kB\n"
        "SwapFree:         524288 kB\n";

static void test_meminfo(void **state) {
        uint64_t total, available, swap;

        assert_int_equal(meminfo_parse(meminfo_text, &total, &available, &swap), 0);
        assert_int_equal(total, UINT64_C(24683912) * 1024);
        assert_int_equal(available, UINT64_C(20000000) * 1024);
        assert_int_equal(swap, UINT64_C(524288) * 1024);
        /* no MemAvailable (kernels before 3.14, or not meminfo at all) */
        assert_int_equal(meminfo_parse("MemTotal: 100 kB\n", &total, &available, &swap), -EBADMSG);
        assert_int_equal(meminfo_parse("", &total, &available, &swap), -EBADMSG);
        /* MemAvailable above MemTotal (a lying source) is clamped */
        assert_int_equal(meminfo_parse("MemTotal: 100 kB\nMemAvailable: 200 kB\n", &total, &available, &swap), 0);
        assert_int_equal(available, total);
}

static void test_limits_and_stat(void **state) {
        uint64_t v;

        assert_int_equal(memory_limit_parse("max\n", &v), 0);
        assert_true(v == UINT64_MAX);
        assert_int_equal(memory_limit_parse("9223372036854771712\n", &v), 0);   /* v1 unlimited */
        assert_true(v == UINT64_MAX);
        assert_int_equal(memory_limit_parse("734003200\n", &v), 0);
        assert_int_equal(v, 700 * MIB);
        assert_int_equal(memory_limit_parse("-1\n", &v), -EINVAL);
        assert_int_equal(memory_limit_parse("maximal\n", &v), -EINVAL);

        const char *stat = "cache 100\nswap 4096\ninactive_file 8192\ntotal_swap 12288\ntotal_inactive_file 16384\n";
        assert_int_equal(memory_stat_get(stat, "swap", &v), 0);
        assert_int_equal(v, 4096);
        assert_int_equal(memory_stat_get(stat, "total_swap", &v), 0);
        assert_int_equal(v, 12288);
        assert_int_equal(memory_stat_get(stat, "inactive_file", &v), 0);
        assert_int_equal(v, 8192);
        assert_int_equal(memory_stat_get(stat, "inactive", &v), -ENOENT);   /* a prefix is not a key */
        assert_int_equal(memory_stat_get(stat, "active_file", &v), -ENOENT);
}

static void test_process_status(void **state) {
        uint64_t rss, swap;

        assert_int_equal(process_status_parse("Name:\tqemu\nVmRSS:\t  204800 kB\nVmSwap:\t   10240 kB\n", &rss, &swap), 0);
        assert_int_equal(rss, 200 * MIB);
        assert_int_equal(swap, 10 * MIB);
        /* a zombie has no VmRSS */
        assert_int_equal(process_status_parse("Name:\tqemu\nState:\tZ (zombie)\n", &rss, &swap), -ENODATA);
        /* our own: present */
        assert_int_equal(process_footprint(getpid(), &rss, &swap), 0);
        assert_true(rss > 0);
}

static void put(const char *dir, const char *file, const char *text) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, file);
        FILE *f = fopen(p, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

/* Cgroup directories as the kernel lays them out (plain files here, named as fakes). */
static void test_sources(void **state) {
        char dir[] = "/tmp/test-hostmem-XXXXXX", v1[600], v2[600], meminfo[600];
        HostMemory *h = NULL;
        HostBudget b = {};
        uint64_t total, available, swap;
        _cleanup_free_ char *text = NULL;

        assert_non_null(mkdtemp(dir));
        snprintf(v2, sizeof v2, "%s/fake-cgroup2", dir);
        snprintf(v1, sizeof v1, "%s/fake-cgroup1", dir);
        snprintf(meminfo, sizeof meminfo, "%s/meminfo", dir);
        assert_int_equal(mkdir(v2, 0755), 0);
        assert_int_equal(mkdir(v1, 0755), 0);
        put(dir, "meminfo", meminfo_text);

        /* /proc/meminfo format */
        assert_int_equal(host_memory_new(&h, NULL, meminfo, NULL, NULL), 0);
        assert_int_equal(host_memory_kind(h), HOST_MEMORY_MEMINFO);
        assert_int_equal(host_memory_read(h, &b), 0);
        assert_true(b.valid);
        assert_int_equal(b.capacity_bytes, UINT64_C(24683912) * 1024);
        assert_int_equal(b.used_bytes, UINT64_C(4683912) * 1024);
        assert_int_equal(b.swap_bytes, 512 * MIB);
        h = host_memory_free(h);

        /* v2: the lower of memory.max and memory.high; inactive file cache is not use */
        put(v2, "memory.current", "734003200\n");
        put(v2, "memory.max", "max\n");
        put(v2, "memory.high", "1073741824\n");
        put(v2, "memory.swap.current", "52428800\n");
        put(v2, "memory.stat", "anon 600000000\nfile 134003200\ninactive_file 104857600\nactive_file 29145600\n");
        assert_int_equal(host_memory_new(&h, NULL, v2, NULL, NULL), 0);
        assert_int_equal(host_memory_kind(h), HOST_MEMORY_CGROUP2);
        assert_int_equal(host_memory_read(h, &b), 0);
        assert_int_equal(b.capacity_bytes, 1 * GIB);
        assert_int_equal(b.used_bytes, 600 * MIB);
        assert_int_equal(b.swap_bytes, 50 * MIB);
        /* no limit at all: the host's RAM is the capacity */
        put(v2, "memory.high", "max\n");
        assert_int_equal(host_memory_read(h, &b), 0);
        assert_int_equal(read_full_file("/proc/meminfo", &text, NULL), 0);
        assert_int_equal(meminfo_parse(text, &total, &available, &swap), 0);
        assert_int_equal(b.capacity_bytes, total);
        h = host_memory_free(h);

        /* v1: hierarchical total_* keys win; swap from memory.stat */
        put(v1, "memory.limit_in_bytes", "734003200\n");
        put(v1, "memory.usage_in_bytes", "700000000\n");
        put(v1, "memory.stat", "cache 1\ninactive_file 1\nswap 1\ntotal_inactive_file 16000000\ntotal_swap 209715200\n");
        assert_int_equal(host_memory_new(&h, NULL, v1, NULL, NULL), 0);
        assert_int_equal(host_memory_kind(h), HOST_MEMORY_CGROUP1);
        assert_int_equal(host_memory_read(h, &b), 0);
        assert_int_equal(b.capacity_bytes, 700 * MIB);
        assert_int_equal(b.used_bytes, 700000000 - 16000000);
        assert_int_equal(b.swap_bytes, 200 * MIB);
        /* a source that goes away reads as an error, not as zeros */
        char p[1024];
        snprintf(p, sizeof p, "%s/memory.usage_in_bytes", v1);
        unlink(p);
        assert_true(host_memory_read(h, &b) < 0);
        assert_false(b.valid);
        h = host_memory_free(h);

        /* a directory without a memory controller, and a path that does not exist */
        assert_int_equal(host_memory_new(&h, NULL, dir, NULL, NULL), -EMEDIUMTYPE);
        assert_int_equal(host_memory_new(&h, NULL, "/nonexistent/autoballoon", NULL, NULL), -ENOENT);

        char cmd[1024];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        assert_int_equal(system(cmd), 0);
}

static void test_reserve(void **state) {
        uint64_t bytes;
        uint32_t permille;
        _cleanup_free_ char *s = NULL, *s2 = NULL;

        assert_int_equal(host_memory_reserve_parse("10%", &bytes, &permille), 0);
        assert_int_equal(bytes, 0);
        assert_int_equal(permille, 100);
        assert_int_equal(host_memory_reserve_resolve(bytes, permille, 1000 * MIB), 100 * MIB);
        assert_int_equal(host_memory_reserve_parse("2.5%", &bytes, &permille), 0);
        assert_int_equal(permille, 25);
        assert_int_equal(host_memory_reserve_format(bytes, permille, &s), 0);
        assert_string_equal(s, "2.5%");
        assert_int_equal(host_memory_reserve_parse("512M", &bytes, &permille), 0);
        assert_int_equal(bytes, 512 * MIB);
        assert_int_equal(permille, 0);
        assert_int_equal(host_memory_reserve_resolve(bytes, permille, 100 * GIB), 512 * MIB);
        assert_int_equal(host_memory_reserve_format(bytes, permille, &s2), 0);
        assert_string_equal(s2, "536870912");
        assert_int_equal(host_memory_reserve_parse("0", &bytes, &permille), 0);
        assert_int_equal(host_memory_reserve_resolve(bytes, permille, 100 * GIB), 0);
        assert_true(host_memory_reserve_parse("51%", &bytes, &permille) < 0);
        assert_true(host_memory_reserve_parse("-1%", &bytes, &permille) < 0);
        assert_true(host_memory_reserve_parse("%", &bytes, &permille) < 0);
        assert_true(host_memory_reserve_parse("lots", &bytes, &permille) < 0);
}

/* Which VMs a cgroup source holds: the source's path in its hierarchy from mountinfo (a bind
 * mount of a subtree, a nested mount); the process's side is test-util's test_proc_cgroup. */
static void test_membership(void **state) {
        (void) state;
        const char *mi =
                "25 1 0:22 / / rw - ext4 /dev/root rw\n"
                "30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                "31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
                "32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                "33 30 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
                "40 25 0:28 /ab/env /run/ab-memcg rw - cgroup cgroup rw,memory\n";
        char *p = NULL;

        assert_int_equal(mountinfo_cgroup_path(mi, "/sys/fs/cgroup/memory/host", true, &p), 0);
        assert_string_equal(p, "/host");
        free(p);
        assert_int_equal(mountinfo_cgroup_path(mi, "/sys/fs/cgroup/memory", true, &p), 0);
        assert_string_equal(p, "/");
        free(p);
        assert_int_equal(mountinfo_cgroup_path(mi, "/run/ab-memcg/host/vms", true, &p), 0);
        assert_string_equal(p, "/ab/env/host/vms");
        free(p);
        assert_int_equal(mountinfo_cgroup_path(mi, "/run/ab-memcg", true, &p), 0);
        assert_string_equal(p, "/ab/env");
        free(p);
        assert_int_equal(mountinfo_cgroup_path(mi, "/sys/fs/cgroup/unified/machine.slice", false, &p), 0);
        assert_string_equal(p, "/machine.slice");
        free(p);
        /* not a prefix at a path boundary; a v1 hierarchy without the memory controller */
        assert_int_equal(mountinfo_cgroup_path(mi, "/sys/fs/cgroup/memoryx/a", true, &p), -ENOENT);
        assert_int_equal(mountinfo_cgroup_path(mi, "/sys/fs/cgroup/cpu/a", true, &p), -ENOENT);

}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_meminfo),
                cmocka_unit_test(test_limits_and_stat),
                cmocka_unit_test(test_process_status),
                cmocka_unit_test(test_sources),
                cmocka_unit_test(test_reserve),
                cmocka_unit_test(test_membership),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
