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
        WORKLOAD_TIMELINE,        /* driven by a timeline's events (--timeline) */
        _WORKLOAD_MAX,
} Workload;

const char *controller_to_string(Controller c);
Controller controller_from_string(const char *s);

#define SIM_TRACKED_MAX 4
#define SIM_TIMELINE_GUESTS_MAX 16

/* A scripted scenario (tests/bench/overcommit-timeline.json): the same guests, host and events
 * the real-guest benchmark plays. */
typedef enum TimelineKind {
        TIMELINE_TOUCH_FREE,      /* allocate and touch MiB, free it at once */
        TIMELINE_CACHE,           /* read MiB of files: page cache, then left idle */
        TIMELINE_HOLD,            /* allocate MiB, keep using it for hold_sec, then free it */
        _TIMELINE_KIND_MAX,
} TimelineKind;

typedef struct TimelineEvent {
        double t_sec;
        unsigned vm;
        TimelineKind kind;
        double bytes;
        double hold_sec;
} TimelineEvent;

typedef struct SimTimeline {
        double host_ram_bytes, swap_bytes, guest_ram_bytes, duration_sec;
        unsigned n_guests;
        char guests[SIM_TIMELINE_GUESTS_MAX][32];
        TimelineEvent *events;
        size_t n_events;
} SimTimeline;

int sim_timeline_load(const char *path, SimTimeline *ret);
void sim_timeline_free(SimTimeline *tl);

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
        const SimTimeline *timeline;   /* play this instead of the synthetic workloads (NULL: none);
                                        * host RAM, swap, guests and duration come from it */
        bool free_page_reporting;      /* every balloon has free page reporting on */
        bool no_swap;                  /* the host has no swap: over RAM is a host OOM kill */
        double host_reserve_bytes;     /* HostBudget.reserve_bytes (--host-reserve); < 0: ... */
        double host_reserve_fraction;  /* ... this share of host RAM; < 0: HostMemoryReserve='s
                                        * default (config_init()) */
        double swap_bytes_per_sec;     /* host swap bandwidth; 0: the model's default */
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
        double host_swap_bytes;        /* the host's swap size */
        double host_reserve_bytes;     /* the budget's reserve */
        double initial_swapped_bytes;  /* swapped out at the start (steady state) */
        double peak_swapped_bytes;
        double stall_some_sec;         /* PSI "some" stall time of the host, summed */
        double tail_stall_sec;         /* ... of it in the last SIM_TAIL_SEC of the run */
        double peak_over_ram_bytes;    /* most the host's demand (guests' touched memory + its own)
                                        * exceeded RAM: what it must swap, or kill */
        double end_over_budget_bytes;  /* host_budget_balance() at the end: used + guests' swap +
                                        * reserve - capacity (> 0: over) */
        uint64_t guest_oom_events;
        unsigned host_oom_kills;       /* VMs killed by the host's OOM killer */
        uint64_t balloon_moves;
        uint64_t policy_calls, stats_calls, timer_wakeups, budget_wakeups;
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

#define SIM_TAIL_SEC 30.0

void sim_config_default(SimConfig *cfg);
int sim_run(const SimConfig *cfg, SimResult *res);
double sim_recovery_bound_sec(const PolicyKnobs *k);
/* "Name=value" for one policy knob, in config syntax (sizes "512M", times "30s", shares "2.5%"). */
int sim_knob_set(PolicyKnobs *k, const char *assignment);
