/* The simulator's interface: one run of one controller over one scenario, and its figures. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "policy.h"
#include "util.h"

typedef enum Controller {
        CONTROLLER_NONE,          /* balloons stay at maximum; the host swaps */
        CONTROLLER_SEED,          /* policy_decide(), preset=seed, host events only */
        CONTROLLER_PROXMOX,       /* pvestatd + PVE::AutoBalloon, every 10 s */
        CONTROLLER_MOM,           /* oVirt MoM balloon rules, every 10 s */
        CONTROLLER_DEFAULT,       /* policy_decide(), preset=default, host + scope events */
        _CONTROLLER_MAX,
        _CONTROLLER_INVALID = -EINVAL,
} Controller;

typedef enum Workload {
        WORKLOAD_IDLE,
        WORKLOAD_STEADY,
        WORKLOAD_SPIKY,
        WORKLOAD_GROWING,
        _WORKLOAD_MAX,
} Workload;

const char *controller_to_string(Controller c);
Controller controller_from_string(const char *s);

#define SIM_TRACKED_MAX 4

typedef struct SimConfig {
        unsigned n_vms;
        double overcommit;             /* sum of guest RAM / host RAM */
        uint64_t seed;
        double duration_sec;
        double pressure_start_sec, pressure_end_sec;   /* the episode: spikes and growth */
        Controller controller;
        bool scope_events;             /* per-VM scope PSI triggers (default controller) */
        bool guest_self_deflate;       /* guests run the autoballoon guest patch */
        double spike_ramp_sec;         /* how fast a spiky guest's working set rises and falls */
        unsigned scope_limit_percent;  /* some idle and steady VMs' scopes get memory.high at this
                                        * share of their RAM (0: none): scope pressure the balloon
                                        * can relieve */
        double hog_fraction;           /* a host workload of this share of host RAM (0: none) ... */
        double hog_start_sec, hog_end_sec;  /* ... ramping up over HOG_RAMP_SEC from start, held until
                                             * end: memory the host needs back and keeps */
        double io_scale;               /* guests' read rates (cache refill) times this (default 1) */
        const char *csv_path;          /* NULL: no CSV */
        const PolicyKnobs *knobs;      /* policy knobs for seed/default; NULL: the defaults */
} SimConfig;

typedef struct SimResult {
        Controller controller;
        unsigned n_vms;
        double host_ram_bytes, total_max_bytes;
        double time_above_sec[4];      /* indexed by PressureLevel: low, medium, critical */
        double peak_stall_pct;
        double swap_in_bytes, swap_out_bytes;
        double host_swap_full_sec;
        uint64_t guest_oom_events;
        uint64_t balloon_moves;
        uint64_t policy_calls, stats_calls, timer_wakeups;
        double self_deflate_bytes;
        double peak_reclaimed_bytes;
        unsigned pressure_episodes;    /* host level none -> low or above */
        unsigned hog_episodes;         /* ... of them while the host workload held its memory */
        uint64_t recovery_moves;       /* balloon moves up (default/seed: reason recovery) */
        uint64_t recovery_returns;     /* a pressure event within RecoveryDelaySec= of a recovery
                                        * move of a VM (per VM): a give-back that did not last */
        double pressure_end_sec;       /* last PSI window at low or above; -1 = none */
        double recovery_sec;           /* from then until 95 % of maxima are back (for good);
                                        * -1 = never */
        double end_actual_pct;
} SimResult;

void sim_config_default(SimConfig *cfg);
int sim_run(const SimConfig *cfg, SimResult *res);
double sim_recovery_bound_sec(const PolicyKnobs *k);
/* "Name=value" for one policy knob, in config syntax (sizes "512M", times "30s", shares "2.5%"). */
int sim_knob_set(PolicyKnobs *k, const char *assignment);
