/* The libvirt backend's pure parts: the domain XML's <memballoon> (model, free page reporting), and virDomainMemoryStats()
 * read as the QMP layer's GuestStats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <libvirt/libvirt.h>

#include "balloon-libvirt.h"

static void expect_model(const char *xml, int ret, const char *model) {
        char *m = NULL;

        assert_int_equal(libvirt_xml_memballoon_attribute(xml, "model", &m), ret);
        if (model)
                assert_string_equal(m, model);
        else
                assert_null(m);
        free(m);
}

static void test_memballoon_model(void **state) {
        /* as virsh dumpxml formats it */
        expect_model("<domain type='qemu'>\n  <name>vm</name>\n  <devices>\n"
                     "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
                     "    <memballoon model='virtio'>\n      <stats period='2'/>\n"
                     "      <alias name='balloon0'/>\n    </memballoon>\n  </devices>\n</domain>\n",
                     0, "virtio");
        expect_model("<domain><devices><memballoon model='none'/></devices></domain>", 0, "none");
        expect_model("<domain><devices><memballoon model=\"virtio-non-transitional\" "
                     "freePageReporting=\"on\"/></devices></domain>", 0, "virtio-non-transitional");
        /* the model is an attribute of <memballoon>, not of a later element */
        expect_model("<domain><devices><memballoon><stats period='2'/></memballoon>"
                     "<video><model type='none'/></video></devices></domain>", -ENODATA, NULL);
        /* no <memballoon> (an s390 or an old definition), or only a look-alike */
        expect_model("<domain><devices><disk/></devices></domain>", -ENOENT, NULL);
        expect_model("<domain><devices><memballoonx model='virtio'/></devices></domain>", -ENOENT, NULL);
        /* <memballoon> outside <devices> is not the device; no <devices> at all is not a domain */
        expect_model("<domain><metadata><memballoon model='virtio'/></metadata></domain>", -EBADMSG, NULL);
        /* cut short */
        expect_model("<domain><devices><memballoon model='virt", -EBADMSG, NULL);
        expect_model("<domain><devices><memballoon model='virtio'", -EBADMSG, NULL);
}

static void test_free_page_reporting(void **state) {
        char *v = NULL;

        assert_int_equal(libvirt_xml_memballoon_attribute(
                "<domain><devices><memballoon model='virtio' freePageReporting='on'>"
                "<stats period='2'/></memballoon></devices></domain>", "freePageReporting", &v), 0);
        assert_string_equal(v, "on");
        free(v);
        v = NULL;
        /* libvirt leaves it out when not set: off */
        assert_int_equal(libvirt_xml_memballoon_attribute(
                "<domain><devices><memballoon model='virtio'/></devices></domain>", "freePageReporting", &v),
                -ENODATA);
        /* a name that only ends like the attribute is not it */
        assert_int_equal(libvirt_xml_memballoon_attribute(
                "<domain><devices><memballoon xmodel='virtio'/></devices></domain>", "model", &v), -ENODATA);
        assert_null(v);
}

static void test_memory_stats(void **state) {
        /* virsh dommemstat of a booted guest (libvirt 9.0, QEMU 7.2) */
        const LibvirtMemoryStat s[] = {
                { VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON, 524288 },
                { VIR_DOMAIN_MEMORY_STAT_SWAP_IN, 0 },
                { VIR_DOMAIN_MEMORY_STAT_SWAP_OUT, 8 },
                { VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT, 97 },
                { VIR_DOMAIN_MEMORY_STAT_MINOR_FAULT, 146345 },
                { VIR_DOMAIN_MEMORY_STAT_UNUSED, 452064 },
                { VIR_DOMAIN_MEMORY_STAT_AVAILABLE, 497224 },
                { VIR_DOMAIN_MEMORY_STAT_USABLE, 437900 },
                { VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE, 1796295779 },
                { VIR_DOMAIN_MEMORY_STAT_DISK_CACHES, 3632 },
                { VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGALLOC, 0 },
                { VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGFAIL, 0 },
                { VIR_DOMAIN_MEMORY_STAT_RSS, 204800 },
        };
        uint64_t actual;
        int64_t last_update;
        GuestStats g;

        libvirt_parse_memory_stats(s, ELEMENTSOF(s), &g, &actual, &last_update);
        assert_true(g.valid);
        assert_int_equal(actual, 524288 * KIB);
        assert_int_equal(last_update, 1796295779);
        /* libvirt's AVAILABLE is the guest's MemTotal, USABLE its MemAvailable */
        assert_int_equal(g.total_bytes, 497224 * KIB);
        assert_int_equal(g.available_bytes, 437900 * KIB);
        assert_int_equal(g.free_bytes, 452064 * KIB);
        assert_int_equal(g.caches_bytes, 3632 * KIB);
        assert_int_equal(g.swap_out_bytes, 8 * KIB);
        assert_int_equal(g.swap_in_bytes, 0);
        /* faults are counts, not KiB */
        assert_int_equal(g.major_faults, 97);
        assert_int_equal(g.minor_faults, 146345);
        /* what libvirt 9.0 does not pass on stays "not reported"; RSS is the host's, not a guest stat */
        assert_int_equal(g.oom_kills, UINT64_MAX);
        assert_int_equal(g.alloc_stalls, UINT64_MAX);
        assert_int_equal(g.direct_reclaim, UINT64_MAX);
        assert_int_equal(g.updated_usec, 0);

        /* before the guest driver's first report: only actual and RSS. No data, not zeros. */
        const LibvirtMemoryStat early[] = {
                { VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON, 524288 },
                { VIR_DOMAIN_MEMORY_STAT_RSS, 180000 },
        };
        libvirt_parse_memory_stats(early, ELEMENTSOF(early), &g, &actual, &last_update);
        assert_false(g.valid);
        assert_int_equal(actual, 524288 * KIB);
        assert_int_equal(last_update, 0);
        assert_int_equal(g.available_bytes, UINT64_MAX);

        /* stats without LAST_UPDATE cannot be dated: not valid either */
        const LibvirtMemoryStat undated[] = { { VIR_DOMAIN_MEMORY_STAT_USABLE, 1000 } };
        libvirt_parse_memory_stats(undated, ELEMENTSOF(undated), &g, &actual, &last_update);
        assert_false(g.valid);
        assert_int_equal(actual, UINT64_MAX);

        /* a guest's absurd numbers saturate instead of wrapping; unknown tags are skipped */
        const LibvirtMemoryStat odd[] = {
                { VIR_DOMAIN_MEMORY_STAT_USABLE, UINT64_MAX / 2 },
                { VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON, UINT64_MAX },
                { VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE, UINT64_MAX },
                { 4242, 1 },
        };
        libvirt_parse_memory_stats(odd, ELEMENTSOF(odd), &g, &actual, &last_update);
        assert_int_equal(g.available_bytes, UINT64_MAX);
        assert_int_equal(actual, UINT64_MAX);
        assert_int_equal(last_update, 0);
        assert_false(g.valid);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_memballoon_model),
                cmocka_unit_test(test_free_page_reporting),
                cmocka_unit_test(test_memory_stats),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
