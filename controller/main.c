/* autoballoond: arguments, configuration, the event loop, and sd_notify. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "log.h"
#include "manager.h"

static const char *arg_config = CONFIG_FILE_DEFAULT;

static void help(void) {
        printf("%s [OPTIONS...]\n\n"
               "Drives the virtio-balloon of every VM registered with systemd-machined from\n"
               "memory pressure (PSI): inflates under host pressure, gives memory back after it.\n\n"
               "  -h --help              Show this help\n"
               "     --version           Show the version\n"
               "     --config=PATH       Configuration file (default: %s;\n"
               "                         drop-ins in PATH.d/*.conf)\n"
               "     --log-level=LEVEL   debug, info, notice, warning, err (default: info)\n\n"
               "See autoballoond(8) and autoballoond.conf(5).\n",
               program_invocation_short_name, CONFIG_FILE_DEFAULT);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_CONFIG, ARG_LOG_LEVEL };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("autoballoond %s\n", PROJECT_VERSION);
                        return 0;
                case ARG_CONFIG:
                        arg_config = optarg;
                        break;
                case ARG_LOG_LEVEL: {
                        int l = log_parse_level(optarg);
                        if (l < 0) {
                                log_error("Invalid log level: %s", optarg);
                                return -EINVAL;
                        }
                        log_set_max_level(l);
                        break;
                }
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                log_error("%s takes no positional arguments.", program_invocation_short_name);
                return -EINVAL;
        }
        return 1;
}

/* The kernel's system-wide pressure file. Without it (a kernel built without CONFIG_PSI, or
 * booted with psi=0) there is no PSI anywhere, host or cgroup: the daemon would run and never
 * see pressure, so it refuses to start. $AUTOBALLOON_TEST_PSI_PATH points the check elsewhere,
 * for the tests only. */
#define PSI_PROBE_PATH "/proc/pressure/memory"

static int check_psi(void) {
        const char *p = secure_getenv("AUTOBALLOON_TEST_PSI_PATH") ?: PSI_PROBE_PATH;

        if (access(p, F_OK) >= 0 || errno != ENOENT)
                return 0;   /* there (or unreadable: opening it will say why) */
        log_error("%s does not exist: this kernel has no pressure stall information (PSI), so autoballoond "
                  "could never see memory pressure. Boot with psi=1 on the kernel command line (a kernel built "
                  "with CONFIG_PSI_DEFAULT_DISABLED=y, or booted with psi=0), or use a kernel built with "
                  "CONFIG_PSI=y.", p);
        return -ENOENT;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        log_info("Received %s, shutting down.", strsignal((int) si->ssi_signo));
        manager_begin_exit(m);
        return 0;
}

int main(int argc, char *argv[]) {
        _cleanup_(manager_freep) Manager *m = NULL;
        sigset_t mask;
        int r;

        log_setup();
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 2 : 0;

        if (check_psi() < 0)
                return 1;

        /* Four fds per VM (QMP + three PSI triggers): raise the soft limit to the hard one,
         * as systemd's own daemons do; select() is never used here. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }

        /* Every signal the daemon handles, blocked here and only here, before any thread (the
         * trigger closer in psi.c) exists: a thread started earlier would take a SIGHUP with
         * the default action and end the daemon. sd-event takes them through a signalfd
         * (SIGTERM and SIGINT below, SIGHUP in manager.c). */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        r = manager_new(&m, arg_config);
        if (r < 0) {
                log_error_errno(r, "Failed to set up: %m");
                return 1;
        }
        /* WatchdogSec= in the unit: sd-event sends WATCHDOG=1 from the loop itself, so a loop
         * that stops turning stops the pings. This is the one timer that runs while nothing
         * moves, and only when systemd asks for it (WATCHDOG_USEC): every half period. */
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0) {
                log_error_errno(r, "Failed to enable the service watchdog: %m");
                return 1;
        }
        if (r > 0) {
                uint64_t usec = 0;
                (void) sd_watchdog_enabled(false, &usec);
                log_debug("Service watchdog of %" PRIu64 " ms: WATCHDOG=1 from the event loop.", usec / 1000);
        }
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m);
        if (r < 0) {
                log_error_errno(r, "Failed to install signal handlers: %m");
                return 1;
        }
        r = manager_start(m);
        if (r < 0)
                return 1;

        log_info("autoballoond %s running (config %s%s).", PROJECT_VERSION, arg_config,
                 m->config.n_errors ? ", with errors: see above" : "");
        /* READY=1 comes from the manager once it owns its bus name. */
        sd_notify(false, "STATUS=Looking up VMs...");
        r = sd_event_loop(m->event);
        if (r < 0) {
                log_error_errno(r, "Event loop failed: %m");
                return 1;
        }
        log_info("Exiting.");
        return 0;
}
