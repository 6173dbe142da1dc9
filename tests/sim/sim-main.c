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
               "  --free-page-reporting  every balloon has free page reporting on\n"
               "  --no-swap          the host has no swap (over RAM: the host OOM killer)\n"
               "  --host-reserve SIZE|PCT%%  the host budget's reserve (default: HostMemoryReserve='s)\n"
               "  --swap-rate MIB    host swap bandwidth in MiB/s (default: 4 per GiB of RAM; timeline 256)\n"
               "  --timeline FILE    play a timeline (tests/bench/overcommit-timeline.json) for every\n"
               "                     controller with swap, then none and default with free page\n"
               "                     reporting and without swap (or only what --controller,\n"
               "                     --free-page-reporting, --no-swap ask for)\n"
               "  --check            exit 1 unless default beats every baseline (see docs/simulation.md);\n"
               "                     with --timeline: unless the model is consistent with itself\n"
               "Environment: SIM_DEBUG=1 prints each guest OOM and per-run counters on stderr;\n"
               "SIM_TRACE_VM=N prints every policy call as seen by VM N.\n");
}

static void print_row(const char *name, const SimResult *r);

/* ---- --timeline: the real benchmark's scenario ------------------------------------------------ */

typedef struct Variant {
        const char *key, *label;
        bool fpr, no_swap;
        unsigned controllers;   /* bit mask of Controller */
} Variant;

#define ALL_CONTROLLERS ((1u << _CONTROLLER_MAX) - 1)
#define NONE_AND_DEFAULT ((1u << CONTROLLER_NONE) | (1u << CONTROLLER_DEFAULT))

static const Variant variants[] = {
        { "swap", "swap", false, false, ALL_CONTROLLERS },
        { "fpr", "swap, FPR on", true, false, NONE_AND_DEFAULT },
        { "noswap", "no swap", false, true, NONE_AND_DEFAULT },
};
#define N_VARIANTS (sizeof variants / sizeof variants[0])

static void print_timeline_header(void) {
        printf("| host | controller | guest OOM kills | VMs killed by host OOM | host swap-out MiB | host swap-in MiB "
               "| PSI some stall s | peak over RAM MiB | over budget at end MiB | balloon moves | end size %% of max |\n");
        printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
}

static void print_timeline_row(const Variant *v, const SimResult *r) {
        printf("| %s | %s | %" PRIu64 " | %u | %.0f | %.0f | %.1f | %.0f | %.0f | %" PRIu64 " | %.1f |\n", v->label,
               controller_to_string(r->controller), r->guest_oom_events, r->host_oom_kills, r->swap_out_bytes / MIB,
               r->swap_in_bytes / MIB, r->stall_some_sec, MAX(0, r->peak_over_ram_bytes) / MIB,
               r->end_over_budget_bytes / MIB, r->balloon_moves, r->end_actual_pct);
}

/* The model against itself (docs/simulation.md, "The overcommit timeline"): what must hold
 * whatever the policy does. */
static int timeline_check(SimResult res[N_VARIANTS][_CONTROLLER_MAX]) {
        const SimResult *none = &res[0][CONTROLLER_NONE], *fpr = &res[1][CONTROLLER_NONE],
                        *noswap = &res[2][CONTROLLER_NONE];
        int failed = 0;
#define CHECK(cond, ...)                                \
        do {                                            \
                if (!(cond)) {                          \
                        printf("FAIL: " __VA_ARGS__);   \
                        printf("\n");                   \
                        failed++;                       \
                }                                       \
        } while (0)

        /* Without a controller the host swaps out at least what it is over, and kills nothing. */
        CHECK(none->peak_over_ram_bytes > 0, "the scenario never takes the host over its RAM");
        CHECK(none->swap_out_bytes >= none->peak_over_ram_bytes - MIB,
              "none swapped out %.0f MiB, but the host was %.0f MiB over its RAM", none->swap_out_bytes / MIB,
              none->peak_over_ram_bytes / MIB);
        CHECK(none->guest_oom_events == 0 && none->host_oom_kills == 0, "none: %" PRIu64 " guest OOM kills, %u host OOM kills",
              none->guest_oom_events, none->host_oom_kills);
        CHECK(none->balloon_moves == 0, "none moved a balloon");
        /* Swap absorbs the shortfall and PSI goes quiet: no stall at the end although the host is
         * still over its budget (guest memory in swap counts). */
        CHECK(none->end_over_budget_bytes > 0, "none: the host ends within its budget (%.0f MiB)",
              none->end_over_budget_bytes / MIB);
        CHECK(none->tail_stall_sec < 0.01, "none: %.3f s of stall in the last %.0f s, with nothing touching swap",
              none->tail_stall_sec, SIM_TAIL_SEC);
        /* Free page reporting returns what the guests free: less to swap. */
        CHECK(fpr->swap_out_bytes < none->swap_out_bytes, "free page reporting: none swapped %.0f MiB, without it %.0f MiB",
              fpr->swap_out_bytes / MIB, none->swap_out_bytes / MIB);
        /* Without swap, over RAM means the host OOM killer, and no swap traffic at all. */
        CHECK(noswap->swap_out_bytes == 0 && noswap->swap_in_bytes == 0, "no swap, yet swap traffic");
        CHECK(noswap->peak_over_ram_bytes <= 0 || noswap->host_oom_kills >= 1,
              "no swap: the host was %.0f MiB over its RAM and killed nothing", noswap->peak_over_ram_bytes / MIB);
        /* Every run: pages come back from swap only after going there; swap never overflows. */
        for (size_t k = 0; k < N_VARIANTS; k++)
                for (int c = 0; c < _CONTROLLER_MAX; c++) {
                        const SimResult *r = &res[k][c];
                        if (!(variants[k].controllers & (1u << c)))
                                continue;
                        CHECK(r->swap_in_bytes <= r->swap_out_bytes + r->initial_swapped_bytes + MIB,
                              "%s %s: swapped in %.0f MiB, out %.0f MiB", variants[k].key, controller_to_string(c),
                              r->swap_in_bytes / MIB, r->swap_out_bytes / MIB);
                        CHECK(r->peak_swapped_bytes <= r->host_swap_bytes + MIB, "%s %s: %.0f MiB in %.0f MiB of swap",
                              variants[k].key, controller_to_string(c), r->peak_swapped_bytes / MIB,
                              r->host_swap_bytes / MIB);
                }
#undef CHECK
        printf("%s: %d failed model checks\n", failed ? "FAIL" : "PASS", failed);
        return failed;
}

static int run_timeline(SimConfig *cfg, const char *path, const char *name, const char *csv_dir, int only,
                        bool fpr, bool no_swap, bool check, bool header) {
        static SimResult res[N_VARIANTS][_CONTROLLER_MAX];
        SimTimeline tl;
        bool filtered = only >= 0 || fpr || no_swap;
        int r = sim_timeline_load(path, &tl);
        if (r < 0)
                return 2;
        if (check && filtered) {
                fprintf(stderr, "--check with --timeline needs every run (no --controller, --free-page-reporting, --no-swap)\n");
                sim_timeline_free(&tl);
                return 2;
        }
        cfg->timeline = &tl;
        cfg->n_vms = tl.n_guests;
        cfg->duration_sec = tl.duration_sec;
        cfg->pressure_start_sec = 0;
        cfg->pressure_end_sec = tl.duration_sec;
        if (header)
                print_timeline_header();
        for (size_t k = 0; k < N_VARIANTS; k++) {
                Variant v = variants[k];
                if (filtered) {
                        if (k > 0)
                                break;
                        v = (Variant) { fpr || no_swap ? "custom" : "swap",
                                        fpr && no_swap ? "no swap, FPR on" : fpr ? "swap, FPR on" : no_swap ? "no swap" : "swap",
                                        fpr, no_swap, only >= 0 ? 1u << only : ALL_CONTROLLERS };
                }
                for (int c = 0; c < _CONTROLLER_MAX; c++) {
                        char csv[4096];
                        if (!(v.controllers & (1u << c)))
                                continue;
                        cfg->controller = (Controller) c;
                        cfg->free_page_reporting = v.fpr;
                        cfg->no_swap = v.no_swap;
                        cfg->csv_path = NULL;
                        if (csv_dir) {
                                snprintf(csv, sizeof csv, "%s/%s-%s-%s.csv", csv_dir, name, v.key, controller_to_string(c));
                                cfg->csv_path = csv;
                        }
                        r = sim_run(cfg, &res[k][c]);
                        if (r < 0) {
                                fprintf(stderr, "Simulation failed: %s\n", strerror(-r));
                                sim_timeline_free(&tl);
                                return 1;
                        }
                        print_timeline_row(&v, &res[k][c]);
                        fflush(stdout);
                }
        }
        sim_timeline_free(&tl);
        cfg->timeline = NULL;
        return check && timeline_check(res) ? 1 : 0;
}

static void print_row(const char *name, const SimResult *r) {
        char rec[32];
        if (r->recovery_sec < 0)
                snprintf(rec, sizeof rec, "never");
        else
                snprintf(rec, sizeof rec, "%.0f", r->recovery_sec);
        printf("| %s | %u | %s | %.0f | %.0f | %.0f | %.0f | %.1f | %" PRIu64 " | %u | %" PRIu64 " | %.1f | %s | %.1f |\n",
               name, r->n_vms, controller_to_string(r->controller), r->time_above_sec[1], r->time_above_sec[2],
               r->time_above_sec[3], r->peak_stall_pct, (r->swap_in_bytes + r->swap_out_bytes) / GIB,
               r->guest_oom_events, r->host_oom_kills, r->balloon_moves, r->peak_reclaimed_bytes / GIB, rec,
               r->end_actual_pct);
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
                { "timeline", required_argument, NULL, 'T' },
                { "free-page-reporting", no_argument, NULL, 'F' },
                { "no-swap", no_argument, NULL, 'W' },
                { "host-reserve", required_argument, NULL, 'V' },
                { "swap-rate", required_argument, NULL, 'Q' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        SimConfig cfg;
        PolicyKnobs knobs;
        const char *csv_dir = NULL, *name = NULL, *timeline = NULL;
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
                case 'T':
                        timeline = optarg;
                        break;
                case 'F':
                        cfg.free_page_reporting = true;
                        break;
                case 'W':
                        cfg.no_swap = true;
                        break;
                case 'V': {
                        size_t l = strlen(optarg);
                        uint64_t bytes;
                        if (l > 1 && optarg[l - 1] == '%') {
                                char *end;
                                cfg.host_reserve_fraction = strtod(optarg, &end) / 100;
                                if (end != optarg + l - 1 || cfg.host_reserve_fraction < 0 || cfg.host_reserve_fraction >= 1) {
                                        fprintf(stderr, "--host-reserve wants a size (64M) or a share (5%%)\n");
                                        return 2;
                                }
                                cfg.host_reserve_bytes = -1;
                        } else if (parse_size(optarg, &bytes) < 0) {
                                fprintf(stderr, "--host-reserve wants a size (64M) or a share (5%%)\n");
                                return 2;
                        } else
                                cfg.host_reserve_bytes = (double) bytes;
                        break;
                }
                case 'Q':
                        cfg.swap_bytes_per_sec = strtod(optarg, NULL) * MIB;
                        if (cfg.swap_bytes_per_sec <= 0) {
                                fprintf(stderr, "--swap-rate wants MiB/s > 0\n");
                                return 2;
                        }
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
        if (timeline)
                return run_timeline(&cfg, timeline, name ? name : "overcommit", csv_dir, only, cfg.free_page_reporting,
                                    cfg.no_swap, check, header);
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
                       "| guest OOMs | host OOM kills | balloon moves | peak reclaimed GiB | recovery s | end size %% of max |\n");
                printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
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
        /* With a host memory budget, memory goes back only into room: a host whose guests have
         * touched more than it can hold ends at its budget, not at the maxima. Giving back beyond
         * that is what made PSI-only recovery fail on real hosts (docs/simulation.md). */
        bool at_budget = d->end_over_budget_bytes > -d->host_reserve_bytes;
        if ((d->recovery_sec < 0 || d->recovery_sec > bound) && !at_budget) {
                printf("FAIL: default returned 95 %% of maxima after %.0f s, bound %.0f s, and ended with %.0f MiB of "
                       "room in the host's budget\n", d->recovery_sec, bound, -d->end_over_budget_bytes / MIB);
                failed++;
        }
        printf("%s: %d failed checks (recovery bound %.0f s)\n", failed ? "FAIL" : "PASS", failed, bound);
        return failed ? 1 : 0;
}
