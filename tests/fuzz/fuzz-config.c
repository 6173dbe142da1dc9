/* Fuzz target: the configuration parser (main file and per-machine drop-ins) and PSI trigger
 * strings. Drop-ins are written by hand and by set-property: treat them as input.
 *
 * Input: one driver byte (the shared drivers' one; not used here), then the file as written.
 * Every input is parsed as the main file, as a machine drop-in, and whole as one PSI trigger
 * string (LowPressure= and friends). */
#include <stdio.h>
#include <sys/mman.h>

#include "config.h"
#include "fuzz.h"
#include "log.h"

/* One memfd holds the current input for the whole run; the main file is read through
 * /proc/self/fd/N, the drop-in through DIR/vm.conf, a symlink to the same memfd, so that no
 * input is ever written to a disk. */
static int input_fd = -1;
static char dir[] = "/tmp/fuzz-config-XXXXXX";
static char dropin[sizeof dir + 16], input_path[64];

static void cleanup(void) {
        unlink(dropin);
        rmdir(dir);
}

static int setup(void) {
        input_fd = memfd_create("fuzz-config", MFD_CLOEXEC);
        if (input_fd < 0)
                return -errno;
        snprintf(input_path, sizeof input_path, "/proc/self/fd/%d", input_fd);
        if (!mkdtemp(dir))
                return -errno;
        snprintf(dropin, sizeof dropin, "%s/vm.conf", dir);
        if (symlink(input_path, dropin) < 0) {
                rmdir(dir);
                return -errno;
        }
        atexit(cleanup);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool ready;
        Config c;
        MachineConfig mc;

        if (!ready) {
                log_set_max_level(LOG_CRIT);   /* every bad line is logged: keep the run quiet */
                if (setup() < 0)
                        abort();   /* no scratch space: nothing would be fuzzed */
                ready = true;
        }
        if (size < 1)
                return 0;
        data++, size--;

        if (ftruncate(input_fd, 0) < 0 || pwrite(input_fd, data, size, 0) != (ssize_t) size)
                abort();

        /* as the main configuration file (input_path.d/ does not exist: no drop-ins) */
        config_init(&c);
        free(c.runtime_config_directory);   /* never the host's /run drop-ins; an input may name one */
        c.runtime_config_directory = NULL;
        (void) config_load(&c, input_path);

        /* as the machine drop-in DIR/vm.conf, on top of whatever the main file set */
        free(c.machines_directory);
        c.machines_directory = strdup(dir);
        free(c.runtime_machines_directory);
        c.runtime_machines_directory = NULL;
        if (c.machines_directory && machine_config_load(&c, "vm", &mc) >= 0)
                machine_config_done(&mc);
        config_done(&c);

        char *s = strndup((const char *) data, size);
        PsiTriggerSpec spec;
        if (s && psi_trigger_parse(s, &spec) >= 0) {
                /* what the parser accepts, the formatter writes back the same */
                char buf[64];
                PsiTriggerSpec again;
                psi_trigger_format(&spec, buf, sizeof buf);
                if (psi_trigger_parse(buf, &again) < 0 || again.full != spec.full ||
                    again.stall_usec != spec.stall_usec || again.window_usec != spec.window_usec)
                        abort();
        }
        free(s);
        return 0;
}
