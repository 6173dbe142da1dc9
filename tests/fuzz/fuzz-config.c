/* Fuzz target: the configuration parser (main file and per-machine drop-ins), knob values and
 * PSI trigger strings. Drop-ins are written by hand and by set-property: treat them as input. */
#include <stdio.h>
#include <sys/mman.h>

#include "config.h"
#include "fuzz.h"
#include "log.h"

/* One scratch directory for the whole run: a machine drop-in is written there per input. */
static char dir[] = "/tmp/fuzz-config-XXXXXX";

static void remove_dir(void) {
        rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool have_dir = false;
        char path[64], mpath[sizeof dir + 32];
        Config c;
        MachineConfig mc;
        int fd;

        log_set_max_level(LOG_CRIT);   /* every bad line is logged: keep the run quiet */

        /* as the main configuration file */
        fd = memfd_create("fuzz-config", MFD_CLOEXEC);
        if (fd < 0)
                return 0;
        if (write(fd, data, size) != (ssize_t) size) {
                close(fd);
                return 0;
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        config_init(&c);
        (void) config_load(&c, path);
        close(fd);

        /* as a machine drop-in */
        if (!have_dir && mkdtemp(dir)) {
                have_dir = true;
                atexit(remove_dir);
        }
        if (have_dir) {
                free(c.machines_directory);
                c.machines_directory = strdup(dir);
                free(c.runtime_machines_directory);
                c.runtime_machines_directory = NULL;
                snprintf(mpath, sizeof mpath, "%s/vm.conf", dir);
                FILE *f = fopen(mpath, "we");
                if (f) {
                        fwrite(data, 1, size, f);
                        fclose(f);
                        if (machine_config_load(&c, "vm", &mc) >= 0)
                                machine_config_done(&mc);
                        unlink(mpath);
                }
        }

        /* every knob and the trigger syntax on the raw bytes as one value */
        char *s = strndup((const char *) data, size);
        if (s) {
                PolicyKnobs k = c.defaults;
                PsiTriggerSpec spec;
                for (size_t i = 0; i < policy_knobs_count; i++) {
                        char *error = NULL;
                        (void) knob_parse(&policy_knobs[i], s, &k, &error);
                        free(error);
                }
                (void) psi_trigger_parse(s, &spec);
                free(s);
        }
        config_done(&c);
        return 0;
}
