/* autoballoon-sim: runs the controllers over a scenario, writes a CSV per run, prints a table,
 * and with --check fails unless the default policy beats every baseline. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "policy.h"
#include "sim.h"

static void help(void) {
        printf("autoballoon-sim [OPTIONS]\n"
               "  --vms N            number of guests (default 100)\n"
               "  --overcommit X     guest RAM / host RAM (default 1.3)\n"
               "  --seed N           scenario seed (default 1)\n"
               "  --duration SEC     simulated time (default 900)\n"
               "  --controller NAME  none, seed, proxmox, mom, default, or all (default all)\n"
               "  --name NAME        scenario name used in file names (default vmsN)\n"
               "  --csv-dir DIR      write DIR/NAME-CONTROLLER.csv per run\n"
               "  --no-scope         no per-VM scope events for the default policy\n"
               "  --no-self-deflate  guests without the guest patch\n"
               "  --spike-ramp SEC   rise (and fall) time of a spiky guest's bursts (default 15)\n"
               "  --scope-limit PCT  some idle and steady VMs' scopes have memory.high at PCT %% of RAM\n"
               "  --host-hog PCT,START,END  a host workload of PCT %% of host RAM from START to END s\n"
               "  --io-scale X       guests read X times faster (their cache refills X times faster)\n"
               "  --set Knob=VALUE   a policy knob for the seed and default runs, as in the config\n"
               "  --check            exit 1 unless default beats every baseline (see docs/simulation.md)\n"
               "Environment: SIM_DEBUG=1 prints each guest OOM and per-run counters on stderr;\n"
               "SIM_TRACE_VM=N prints every policy call as seen by VM N.\n");
}

static void print_row(const char *name, const SimResult *r) {
        char rec[32];
        if (r->recovery_sec < 0)
                snprintf(rec, sizeof rec, "never");
        else
                snprintf(rec, sizeof rec, "%.0f", r->recovery_sec);
        printf("| %s | %u | %s | %.0f | %.0f | %.0f | %.0f | %.1f | %" PRIu64 " | %" PRIu64 " | %.1f | %s | %.1f |\n",
               name, r->n_vms, controller_to_string(r->controller), r->time_above_sec[1], r->time_above_sec[2],
               r->time_above_sec[3], r->peak_stall_pct, (r->swap_in_bytes + r->swap_out_bytes) / GIB,
               r->guest_oom_events, r->balloon_moves, r->peak_reclaimed_bytes / GIB, rec, r->end_actual_pct);
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "vms", required_argument, NULL, 'n' },
                { "overcommit", required_argument, NULL, 'o' },
                { "seed", required_argument, NULL, 's' },
                { "duration", required_argument, NULL, 'd' },
                { "controller", required_argument, NULL, 'c' },
                { "name", required_argument, NULL, 'N' },
                { "csv-dir", required_argument, NULL, 'C' },
                { "no-scope", no_argument, NULL, 'S' },
                { "no-self-deflate", no_argument, NULL, 'D' },
                { "check", no_argument, NULL, 'k' },
                { "header", no_argument, NULL, 'H' },
                { "set", required_argument, NULL, 'K' },
                { "spike-ramp", required_argument, NULL, 'R' },
                { "scope-limit", required_argument, NULL, 'L' },
                { "host-hog", required_argument, NULL, 'G' },
                { "io-scale", required_argument, NULL, 'I' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        SimConfig cfg;
        PolicyKnobs knobs;
        const char *csv_dir = NULL, *name = NULL;
        int only = -1;
        bool check = false, header = false;
        int c;

        sim_config_default(&cfg);
        policy_knobs_init_default(&knobs);
        cfg.knobs = &knobs;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'n':
                        cfg.n_vms = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'o':
                        cfg.overcommit = strtod(optarg, NULL);
                        break;
                case 's':
                        cfg.seed = strtoull(optarg, NULL, 0);
                        break;
                case 'd':
                        cfg.duration_sec = strtod(optarg, NULL);
                        break;
                case 'c':
                        if (!streq(optarg, "all") && (only = controller_from_string(optarg)) < 0) {
                                fprintf(stderr, "Unknown controller: %s\n", optarg);
                                return 2;
                        }
                        break;
                case 'N':
                        name = optarg;
                        break;
                case 'C':
                        csv_dir = optarg;
                        break;
                case 'S':
                        cfg.scope_events = false;
                        break;
                case 'D':
                        cfg.guest_self_deflate = false;
                        break;
                case 'k':
                        check = true;
                        break;
                case 'H':
                        header = true;
                        break;
                case 'R':
                        cfg.spike_ramp_sec = strtod(optarg, NULL);
                        break;
                case 'I':
                        cfg.io_scale = strtod(optarg, NULL);
                        break;
                case 'G':
                        if (sscanf(optarg, "%lf,%lf,%lf", &cfg.hog_fraction, &cfg.hog_start_sec, &cfg.hog_end_sec) != 3 ||
                            cfg.hog_fraction <= 0 || cfg.hog_fraction >= 100 || cfg.hog_end_sec <= cfg.hog_start_sec) {
                                fprintf(stderr, "--host-hog wants PCT,START,END\n");
                                return 2;
                        }
                        cfg.hog_fraction /= 100;
                        break;
                case 'L':
                        cfg.scope_limit_percent = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'K': {
                        int r = sim_knob_set(&knobs, optarg);
                        if (r < 0) {
                                fprintf(stderr, "Bad knob setting %s: %s\n", optarg, strerror(-r));
                                return 2;
                        }
                        break;
                }
                case 'h':
                        help();
                        return 0;
                default:
                        return 2;
                }
        if (cfg.n_vms == 0 || cfg.overcommit < 1 || cfg.duration_sec < cfg.pressure_end_sec) {
                fprintf(stderr, "Need --vms >= 1, --overcommit >= 1, --duration >= %.0f\n", cfg.pressure_end_sec);
                return 2;
        }

        char default_name[32];
        snprintf(default_name, sizeof default_name, "vms%u", cfg.n_vms);
        if (!name)
                name = default_name;

        if (header) {
                printf("| scenario | VMs | controller | s >= low | s >= medium | s >= critical | peak stall %% | swap I/O GiB "
                       "| guest OOMs | balloon moves | peak reclaimed GiB | recovery s | end size %% of max |\n");
                printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        }

        SimResult res[_CONTROLLER_MAX] = {};
        for (int k = 0; k < _CONTROLLER_MAX; k++) {
                char path[4096];
                if (only >= 0 && k != only)
                        continue;
                cfg.controller = (Controller) k;
                if (csv_dir) {
                        snprintf(path, sizeof path, "%s/%s-%s.csv", csv_dir, name, controller_to_string(k));
                        cfg.csv_path = path;
                }
                int r = sim_run(&cfg, &res[k]);
                if (r < 0) {
                        fprintf(stderr, "Simulation failed: %s\n", strerror(-r));
                        return 1;
                }
                print_row(name, &res[k]);
                if (cfg.hog_fraction > 0)
                        fprintf(stderr, "%s %s: %u pressure episodes, %u while the host workload held its memory; "
                                "%" PRIu64 " recovery moves, %" PRIu64 " of them undone by pressure within RecoveryDelaySec=\n",
                                name, controller_to_string(k), res[k].pressure_episodes, res[k].hog_episodes,
                                res[k].recovery_moves, res[k].recovery_returns);
                fflush(stdout);
        }

        if (!check)
                return 0;
        if (only >= 0) {
                fprintf(stderr, "--check needs every controller\n");
                return 2;
        }

        /* What the policy must show (docs/simulation.md): fewer guest OOM events than every
         * baseline, or none at all (no controller never shrinks a guest, so it never OOMs one:
         * its cost is the host swapping; "fewer than zero" cannot be asked); strictly less time
         * above medium than every baseline; and 95 % of the maxima back within the recovery
         * bound after the last pressure. */
        const SimResult *d = &res[CONTROLLER_DEFAULT];
        int failed = 0;
        double bound = sim_recovery_bound_sec(&knobs);
        for (int k = 0; k < _CONTROLLER_MAX; k++) {
                if (k == CONTROLLER_DEFAULT)
                        continue;
                const SimResult *b = &res[k];
                bool oom_ok = d->guest_oom_events < b->guest_oom_events || d->guest_oom_events == 0;
                if (!oom_ok) {
                        printf("FAIL: default has %" PRIu64 " guest OOM events, %s %" PRIu64 "\n", d->guest_oom_events,
                               controller_to_string(k), b->guest_oom_events);
                        failed++;
                }
                if (!(d->time_above_sec[PRESSURE_MEDIUM] < b->time_above_sec[PRESSURE_MEDIUM])) {
                        printf("FAIL: default spends %.0f s above medium, %s %.0f s\n", d->time_above_sec[PRESSURE_MEDIUM],
                               controller_to_string(k), b->time_above_sec[PRESSURE_MEDIUM]);
                        failed++;
                }
        }
        if (d->recovery_sec < 0 || d->recovery_sec > bound) {
                printf("FAIL: default returned 95 %% of maxima after %.0f s, bound %.0f s\n", d->recovery_sec, bound);
                failed++;
        }
        printf("%s: %d failed checks (recovery bound %.0f s)\n", failed ? "FAIL" : "PASS", failed, bound);
        return failed ? 1 : 0;
}
