/* Configuration: main file, drop-ins, per-machine files, knob parsing, bad lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "config.h"

static char dir[] = "/tmp/test-config-XXXXXX";

static void write_file(const char *name, const char *text) {
        char p[256];
        FILE *f;

        snprintf(p, sizeof p, "%s/%s", dir, name);
        f = fopen(p, "we");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static int setup(void **state) {
        char p[256];

        assert_non_null(mkdtemp(dir));
        snprintf(p, sizeof p, "%s/ab.conf.d", dir);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/machines", dir);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/run", dir);
        mkdir(p, 0755);
        return 0;
}

static int teardown(void **state) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        return system(cmd);
}

static void test_defaults(void **state) {
        Config c;

        config_init(&c);
        assert_string_equal(c.host_pressure_source, "/proc/pressure/memory");
        assert_true(c.deflate_on_exit);
        assert_int_equal(c.defaults.trigger[PRESSURE_LOW].window_usec, USEC_PER_SEC);
        assert_false(c.defaults.trigger[PRESSURE_LOW].full);
        assert_true(c.defaults.trigger[PRESSURE_CRITICAL].full);
        assert_true(c.defaults.enabled);
        config_done(&c);
}

static void test_load(void **state) {
        char main_path[256], p[1024];
        MachineConfig mc;
        Config c;

        snprintf(main_path, sizeof main_path, "%s/ab.conf", dir);
        snprintf(p, sizeof p, "[Manager]\nHostPressureSource=machine.slice\nMachinesDirectory=%s/machines\n"
                 "RuntimeMachinesDirectory=%s/run\nStatsIntervalSec=5\nDeflateOnExit=no\n"
                 "[Pressure]\nLow=some 150ms 2s\nMedium=sometimes 1 2\n"
                 "[Defaults]\nWeight=200\nMinimumMemory=256M\nNoSuchKnob=1\n", dir, dir);
        write_file("ab.conf", p);
        /* a drop-in overrides, a bad value is skipped with the rest kept */
        write_file("ab.conf.d/50-tune.conf", "[Defaults]\nWeight=300\nMaximumMemory=lots\nLowStep=2.5%\n");
        write_file("ab.conf.d/README", "[Defaults]\nWeight=999\n");   /* not *.conf: ignored */

        config_init(&c);
        assert_int_equal(config_load(&c, main_path), 0);
        assert_string_equal(c.host_pressure_source, "machine.slice");
        assert_int_equal(c.stats_interval_sec, 5);
        assert_false(c.deflate_on_exit);
        assert_int_equal(c.defaults.trigger[PRESSURE_LOW].stall_usec, 150000);
        assert_int_equal(c.defaults.trigger[PRESSURE_LOW].window_usec, 2000000);
        /* the bad Medium= line kept the default */
        assert_int_equal(c.defaults.trigger[PRESSURE_MEDIUM].stall_usec, 200000);
        assert_int_equal(c.defaults.weight, 300);
        assert_int_equal(c.defaults.minimum_bytes, 256 * MIB);
        assert_int_equal(c.defaults.maximum_bytes, 0);
        assert_int_equal(c.defaults.step_permille[PRESSURE_LOW], 25);
        assert_int_equal(c.n_errors, 3);   /* Medium=, NoSuchKnob=, MaximumMemory= */

        /* per machine: persistent, then runtime on top */
        write_file("machines/vm1.conf", "[Machine]\nQMPSocket=/run/vm1.qmp\nWeight=50\nMinimumMemory=1G\n");
        write_file("run/vm1.conf", "[Machine]\nWeight=70\n");
        assert_int_equal(machine_config_load(&c, "vm1", &mc), 0);
        assert_string_equal(mc.qmp_socket, "/run/vm1.qmp");
        assert_int_equal(mc.knobs.weight, 70);
        assert_int_equal(mc.knobs.minimum_bytes, GIB);
        assert_true(mc.knobs_set & (UINT64_C(1) << (policy_knob_find("Weight") - policy_knobs)));
        machine_config_done(&mc);

        /* a machine with no drop-in gets the defaults */
        assert_int_equal(machine_config_load(&c, "vm2", &mc), 0);
        assert_null(mc.qmp_socket);
        assert_int_equal(mc.knobs.weight, 300);
        assert_int_equal(mc.knobs_set, 0);
        machine_config_done(&mc);

        assert_int_equal(machine_config_load(&c, "../etc/passwd", &mc), -EINVAL);
        config_done(&c);
}

static void test_knob_parse(void **state) {
        PolicyKnobs k;
        char *error = NULL, *s = NULL;

        policy_knobs_init_default(&k);
        assert_int_equal(knob_parse(policy_knob_find("Weight"), "0", &k, &error), -ERANGE);
        assert_non_null(strstr(error, "Weight"));
        assert_non_null(strstr(error, "1 to 10000"));
        free(error);
        error = NULL;
        assert_int_equal(knob_parse(policy_knob_find("Weight"), "-5", &k, &error), -EINVAL);
        free(error);
        error = NULL;
        assert_int_equal(knob_parse(policy_knob_find("Enabled"), "no", &k, &error), 0);
        assert_false(k.enabled);
        assert_int_equal(knob_parse(policy_knob_find("Preset"), "seed", &k, &error), 0);
        assert_int_equal(k.preset, POLICY_PRESET_SEED);
        assert_int_equal(knob_parse(policy_knob_find("Preset"), "fancy", &k, &error), -EINVAL);
        assert_non_null(strstr(error, "default, seed"));
        free(error);
        error = NULL;
        assert_int_equal(knob_parse(policy_knob_find("HoldOffSec"), "90s", &k, &error), 0);
        assert_int_equal(k.hold_off_usec, 90 * USEC_PER_SEC);
        assert_int_equal(knob_format(policy_knob_find("HoldOffSec"), &k, &s), 0);
        assert_string_equal(s, "90s");
        free(s);

        /* every knob formats to something that parses back to the same value */
        for (size_t i = 0; i < policy_knobs_count; i++) {
                PolicyKnobs a, b;
                policy_knobs_init_default(&a);
                policy_knobs_init_default(&b);
                assert_int_equal(knob_format(&policy_knobs[i], &a, &s), 0);
                memset(knob_ptr(&policy_knobs[i], &b), 0xff, 1);   /* disturb, then restore by parsing */
                assert_int_equal(knob_parse(&policy_knobs[i], s, &b, &error), 0);
                assert_memory_equal(&a, &b, sizeof a);
                free(s);
        }
}

/* Backend= in a machine's drop-in, LibvirtURI= for the manager. */
static void test_backend(void **state) {
        char main_path[256], p[1024];
        MachineConfig mc;
        Config c;

        config_init(&c);
        assert_string_equal(c.libvirt_uri, "qemu:///system");
        config_done(&c);

        snprintf(main_path, sizeof main_path, "%s/backend.conf", dir);
        snprintf(p, sizeof p, "[Manager]\nMachinesDirectory=%s/machines\nRuntimeMachinesDirectory=%s/run\n"
                 "LibvirtURI=qemu+unix:///system?socket=/run/other/libvirt-sock\n", dir, dir);
        write_file("backend.conf", p);
        config_init(&c);
        assert_int_equal(config_load(&c, main_path), 0);
        assert_string_equal(c.libvirt_uri, "qemu+unix:///system?socket=/run/other/libvirt-sock");
        assert_int_equal(c.n_errors, 0);

        assert_int_equal(machine_config_load(&c, "none", &mc), 0);
        assert_int_equal(mc.backend, MACHINE_BACKEND_AUTO);
        machine_config_done(&mc);

        write_file("machines/lv1.conf", "[Machine]\nBackend=libvirt\n");
        assert_int_equal(machine_config_load(&c, "lv1", &mc), 0);
        assert_int_equal(mc.backend, MACHINE_BACKEND_LIBVIRT);
        machine_config_done(&mc);

        /* a bad value is logged and leaves the default */
        write_file("machines/lv2.conf", "[Machine]\nBackend=monitor\n");
        assert_int_equal(machine_config_load(&c, "lv2", &mc), 0);
        assert_int_equal(mc.backend, MACHINE_BACKEND_AUTO);
        machine_config_done(&mc);

        /* the runtime drop-in has the last word */
        write_file("machines/lv3.conf", "[Machine]\nBackend=libvirt\n");
        write_file("run/lv3.conf", "[Machine]\nBackend=qmp\n");
        assert_int_equal(machine_config_load(&c, "lv3", &mc), 0);
        assert_int_equal(mc.backend, MACHINE_BACKEND_QMP);
        machine_config_done(&mc);
        config_done(&c);

        for (MachineBackend b = 0; b < _MACHINE_BACKEND_MAX; b++)
                assert_int_equal(machine_backend_from_string(machine_backend_to_string(b)), b);
        assert_int_equal((int) machine_backend_from_string("QMP"), -EINVAL);
        assert_null(machine_backend_to_string(_MACHINE_BACKEND_MAX));
}

/* The knob table (knob.c): names unique and found, documented, defaults within range. */
static uint64_t knob_value(const PolicyKnobs *k, const KnobInfo *ki) {
        const char *p = (const char *) k + ki->offset;
        switch (ki->type) {
        case KNOB_BOOL:
                return *(const bool *) p;
        case KNOB_SIZE:
        case KNOB_USEC:
                return *(const uint64_t *) p;
        case KNOB_PRESET:
                return (uint64_t) *(const PolicyPreset *) p;
        case KNOB_TRIGGER:
                return 0;   /* validated by psi_trigger_parse, not by a range */
        default:
                return *(const uint32_t *) p;
        }
}

static void test_knob_table(void **state) {
        PolicyKnobs k;

        policy_knobs_init_default(&k);
        for (size_t i = 0; i < policy_knobs_count; i++) {
                const KnobInfo *ki = &policy_knobs[i];

                assert_non_null(ki->name);
                assert_non_null(ki->doc);
                assert_true(ki->offset < sizeof(PolicyKnobs));
                assert_true(ki->min <= ki->max);
                assert_ptr_equal(policy_knob_find(ki->name), ki);
                for (size_t j = 0; j < i; j++)
                        assert_false(streq(policy_knobs[j].name, ki->name));
                uint64_t v = knob_value(&k, ki);
                if (v < ki->min || v > ki->max)
                        fail_msg("default of %s (%" PRIu64 ") outside [%" PRIu64 ", %" PRIu64 "]",
                                 ki->name, v, ki->min, ki->max);
        }
        assert_null(policy_knob_find("NoSuchKnob"));
        assert_null(policy_knob_find(NULL));
        assert_non_null(policy_knob_find("MinimumMemory"));
        assert_non_null(policy_knob_find("MaximumMemory"));
        assert_non_null(policy_knob_find("Weight"));
        assert_non_null(policy_knob_find("Preset"));
        assert_non_null(policy_knob_find("Enabled"));
        assert_non_null(policy_knob_find("HoldOffSec"));
        assert_non_null(policy_knob_find("RecoveryDelaySec"));
        assert_non_null(policy_knob_find("CriticalStep"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_knob_table),
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_load),
                cmocka_unit_test(test_knob_parse),
                cmocka_unit_test(test_backend),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
