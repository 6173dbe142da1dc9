/* set-property persistence: rewriting drop-ins (keys replaced in their section, comments and
 * other keys kept), atomic updates, the paths, and removing only the daemon's own runtime files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "config.h"
#include "knob-bus.h"

static char dir[] = "/tmp/test-dropin-XXXXXX";

static char *rewrite(const char *text, const char *section, char **keys, char **values) {
        char *out = NULL;
        assert_int_equal(config_dropin_rewrite(text, section, keys, values, &out), 0);
        return out;
}

static void test_rewrite_new(void **state) {
        char *keys[] = { "Weight", "MinimumMemory", NULL }, *values[] = { "200", "512M", NULL };
        char *out = rewrite(NULL, "Machine", keys, values);

        assert_true(strncmp(out, SET_PROPERTY_HEADER, strlen(SET_PROPERTY_HEADER)) == 0);
        assert_non_null(strstr(out, "\n[Machine]\nWeight=200\nMinimumMemory=512M\n"));
        free(out);
}

static void test_rewrite_keeps_the_rest(void **state) {
        const char *text =
                "# by hand: keep me\n"
                "[Machine]\n"
                "QMPSocket=/run/vm1.qmp\n"
                "Weight = 50\n"
                "; and me\n"
                "RecoveryDelaySec=40s\n"
                "[Other]\n"
                "Weight=7\n";
        char *keys[] = { "Weight", "Enabled", NULL }, *values[] = { "300", "no", NULL };
        char *out = rewrite(text, "Machine", keys, values);

        /* the old Weight of [Machine] is gone, [Other]'s is not; the new keys go into a
         * [Machine] section at the end, since the file ends in another section */
        assert_string_equal(out,
                            "# by hand: keep me\n"
                            "[Machine]\n"
                            "QMPSocket=/run/vm1.qmp\n"
                            "; and me\n"
                            "RecoveryDelaySec=40s\n"
                            "[Other]\n"
                            "Weight=7\n"
                            "\n[Machine]\n"
                            "Weight=300\n"
                            "Enabled=no\n");
        free(out);
}

static void test_rewrite_remove(void **state) {
        const char *text = "[Defaults]\nWeight=5\n  continued\nLowStep=2%\nWeightX=1\n";
        char *keys[] = { "Weight", NULL }, *values[] = { NULL, NULL };
        char *out = rewrite(text, "Defaults", keys, values);

        /* a removed key takes its continuation lines along; a longer key is another key */
        assert_string_equal(out, "[Defaults]\nLowStep=2%\nWeightX=1\n");
        free(out);
}

static void test_rewrite_appends_to_last_section(void **state) {
        const char *text = "[Machine]\nWeight=5";   /* no final newline */
        char *keys[] = { "Weight", "Preset", NULL }, *values[] = { "6", "seed", NULL };
        char *out = rewrite(text, "Machine", keys, values);

        assert_string_equal(out, "[Machine]\nWeight=6\nPreset=seed\n");
        free(out);
}

static void test_update_and_load(void **state) {
        char path[300], main_path[300], text[512];
        const KnobInfo *w = policy_knob_find("Weight"), *min = policy_knob_find("MinimumMemory");
        PolicyKnobs knobs;
        MachineConfig mc;
        Config c;
        struct stat st;

        snprintf(main_path, sizeof main_path, "%s/ab.conf", dir);
        snprintf(text, sizeof text, "[Manager]\nMachinesDirectory=%s/m\nRuntimeMachinesDirectory=%s/r\n"
                 "RuntimeConfigDirectory=%s/rc\n", dir, dir, dir);
        FILE *f = fopen(main_path, "we");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);

        config_init(&c);
        assert_int_equal(config_load(&c, main_path), 0);

        /* the paths */
        char *p = NULL;
        assert_int_equal(config_machine_dropin_path(&c, "vm1", false, &p), 0);
        snprintf(path, sizeof path, "%s/m/vm1.conf", dir);
        assert_string_equal(p, path);
        free(p);
        assert_int_equal(config_defaults_dropin_path(&c, main_path, false, &p), 0);
        snprintf(path, sizeof path, "%s/ab.conf.d/50-set-property.conf", dir);
        assert_string_equal(p, path);
        free(p);
        assert_int_equal(config_machine_dropin_path(&c, "../etc", true, &p), -EINVAL);

        /* persistent machine knobs: written (directory created), loaded back */
        policy_knobs_init_default(&knobs);
        knobs.weight = 321;
        knobs.minimum_bytes = 300 * MIB;
        snprintf(path, sizeof path, "%s/m/vm1.conf", dir);
        assert_int_equal(config_dropin_save_knobs(path, "Machine", &knobs, knob_bit(w) | knob_bit(min)), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0644);
        /* removing from a missing file creates nothing */
        snprintf(path, sizeof path, "%s/r/vm1.conf", dir);
        assert_int_equal(config_dropin_save_knobs(path, "Machine", NULL, knob_bit(w)), 0);
        assert_int_equal(stat(path, &st), -1);
        /* a runtime value wins over the persistent one */
        knobs.weight = 999;
        assert_int_equal(config_dropin_save_knobs(path, "Machine", &knobs, knob_bit(w)), 0);

        assert_int_equal(machine_config_load(&c, "vm1", &mc), 0);
        assert_int_equal(mc.knobs.weight, 999);
        assert_int_equal(mc.knobs.minimum_bytes, 300 * MIB);
        assert_true(mc.knobs_set & knob_bit(w));
        assert_true(mc.knobs_set & knob_bit(min));
        machine_config_done(&mc);

        /* runtime defaults are read after the persistent ones */
        snprintf(path, sizeof path, "%s/ab.conf.d/50-set-property.conf", dir);
        knobs.weight = 11;
        assert_int_equal(config_dropin_save_knobs(path, "Defaults", &knobs, knob_bit(w)), 0);
        snprintf(path, sizeof path, "%s/rc/50-set-property.conf", dir);
        knobs.weight = 22;
        assert_int_equal(config_dropin_save_knobs(path, "Defaults", &knobs, knob_bit(w)), 0);
        config_done(&c);
        config_init(&c);
        assert_int_equal(config_load(&c, main_path), 0);
        assert_int_equal(c.defaults.weight, 22);

        config_done(&c);
}

static void test_knob_bus_types(void **state) {
        assert_string_equal(knob_bus_signature(policy_knob_find("Enabled")), "b");
        assert_string_equal(knob_bus_signature(policy_knob_find("MinimumMemory")), "t");
        assert_string_equal(knob_bus_signature(policy_knob_find("RecoveryDelaySec")), "t");
        assert_string_equal(knob_bus_signature(policy_knob_find("Preset")), "s");
        assert_string_equal(knob_bus_signature(policy_knob_find("Weight")), "u");
        assert_string_equal(knob_bus_signature(policy_knob_find("LowStep")), "u");
        /* every knob fits a 64-bit mask */
        assert_true(policy_knobs_count <= 64);

        char *range = NULL;
        assert_int_equal(knob_bus_describe_range(policy_knob_find("Weight"), &range), 0);
        assert_string_equal(range, "an integer (u) from 1 to 10000");
        free(range);
}

static int setup(void **state) {
        assert_non_null(mkdtemp(dir));
        return 0;
}

static int teardown(void **state) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        return system(cmd);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_rewrite_new),
                cmocka_unit_test(test_rewrite_keeps_the_rest),
                cmocka_unit_test(test_rewrite_remove),
                cmocka_unit_test(test_rewrite_appends_to_last_section),
                cmocka_unit_test(test_update_and_load),
                cmocka_unit_test(test_knob_bus_types),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
