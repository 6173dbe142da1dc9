/* Pressure-to-size policy: a pure function of a snapshot. No I/O, no globals, no clock reads.
 * The daemon, the unit tests and the simulator all call policy_decide() with the same inputs. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef enum PressureLevel {
        PRESSURE_NONE,
        PRESSURE_LOW,
        PRESSURE_MEDIUM,
        PRESSURE_CRITICAL,
        _PRESSURE_LEVEL_MAX,
        _PRESSURE_LEVEL_INVALID = -EINVAL,
} PressureLevel;

const char *pressure_level_to_string(PressureLevel l);
PressureLevel pressure_level_from_string(const char *s);

typedef enum PolicyPreset {
        POLICY_PRESET_DEFAULT,
        POLICY_PRESET_SEED,      /* the 2013 auto-ballooning: 1/2/4 MiB per event, nothing else */
        _POLICY_PRESET_MAX,
        _POLICY_PRESET_INVALID = -EINVAL,
} PolicyPreset;

const char *policy_preset_to_string(PolicyPreset p);

/* A PSI trigger as the kernel takes it (psi.h arms it). Pure data, so that the pressure
 * thresholds are knobs like any other: per machine for its scope, defaults for the host. */
typedef struct PsiTriggerSpec {
        bool full;               /* "full" instead of "some" */
        usec_t stall_usec;       /* stall within ... */
        usec_t window_usec;      /* ... this window makes the trigger fire */
} PsiTriggerSpec;
PolicyPreset policy_preset_from_string(const char *s);

/* The tunables of one machine. The manager holds a default copy; each machine starts from it
 * and may override single knobs. Every knob is described in policy_knobs[] below, which the
 * config parser and the D-Bus layer both iterate: a knob added here is a config key and a
 * property at once. */
typedef struct PolicyKnobs {
        PolicyPreset preset;
        bool enabled;
        uint64_t minimum_bytes;          /* floor; 0 = minimum_percent of the VM's RAM */
        uint64_t maximum_bytes;          /* ceiling; 0 = the VM's configured RAM */
        uint32_t minimum_percent;        /* used when minimum_bytes == 0 */
        uint32_t weight;                 /* 1..10000, like CPUWeight=; higher = squeezed less */
        uint32_t step_permille[_PRESSURE_LEVEL_MAX];  /* default preset: inflate step per event,
                                                       * in 1/1000 of the VM's RAM */
        uint32_t step_escalation_max;    /* the step doubles per event in a row, up to this factor */
        uint64_t seed_step_bytes[_PRESSURE_LEVEL_MAX]; /* seed preset: 0, 1, 2, 4 MiB */
        uint64_t reserve_bytes;          /* never take a guest's available memory below this ... */
        uint32_t reserve_percent;        /* ... nor below this share of its RAM (the larger wins) */
        usec_t recovery_delay_usec;      /* no pressure for this long before giving memory back */
        usec_t recovery_delay_max_usec;  /* pressure back within one cool-down of a recovery step
                                          * doubles the VM's cool-down, up to this; a quiet spell
                                          * this long resets it. <= recovery_delay_usec: off */
        uint32_t recovery_permille;      /* give back this share of RAM per recovery step */
        usec_t recovery_interval_usec;   /* ... at most this often */
        usec_t hold_off_usec;            /* after a guest deflated itself, leave it alone this long */
        usec_t stats_max_age_usec;       /* older guest stats count as none (conservative steps) */
        uint32_t guest_major_fault_rate; /* major faults/s above which a guest is "under pressure" */
        uint32_t available_drop_permille;/* available falling by this share of RAM between two
                                          * samples marks a guest as under pressure */
        uint32_t guest_pressure_permille;/* a guest under pressure of its own gets this share of
                                          * RAM back per recovery interval, even while the host
                                          * is under (non-critical) pressure */
        usec_t working_set_window_usec;  /* the working set is the guest's peak use over this
                                          * long: a guest between two spikes is not idle */
        PsiTriggerSpec trigger[_PRESSURE_LEVEL_MAX]; /* PSI thresholds per level: the host's from the
                                                      * defaults, a scope's from its machine */
} PolicyKnobs;

void policy_knobs_init_default(PolicyKnobs *k);

/* Guest statistics as virtio-balloon reports them (QEMU guest-stats). UINT64_MAX = not reported. */
typedef struct GuestStats {
        bool valid;
        usec_t updated_usec;              /* when the host received them (monotonic) */
        uint64_t total_bytes;
        uint64_t free_bytes;
        uint64_t available_bytes;
        uint64_t caches_bytes;
        uint64_t major_faults;
        uint64_t minor_faults;
        uint64_t swap_in_bytes;
        uint64_t swap_out_bytes;
        uint64_t oom_kills;               /* Linux 6.12+ */
        uint64_t alloc_stalls;            /* Linux 6.12+ */
        uint64_t direct_scan, direct_reclaim, async_scan, async_reclaim;  /* Linux 6.12+ */
} GuestStats;

/* Whether a sample can size a decision: received within GuestStatsMaxAgeSec= and telling what
 * the guest has available. The one rule: the policy's and the manager's (which asks for stats
 * on an event when they are not). */
bool guest_stats_fresh(const GuestStats *s, const PolicyKnobs *k, usec_t now);
void guest_stats_init(GuestStats *s);
/* The byte-valued stats (total, free, available, caches) are the guest's own word: clamped to
 * [0, ram_bytes]; "not reported" stays so. Counters (faults, swap, stalls) are left alone: they
 * are cumulative and may pass the RAM size; the policy only ever compares them. */
void guest_stats_clamp(GuestStats *s, uint64_t ram_bytes);

/* A host event that finds a guest without fresh statistics (with the PSI share deciding) takes
 * at most a blind low step from every guest at once; the caller asks the guests without
 * statistics for theirs, and the rest of the event is decided when they are in
 * (PolicyHost.stats_pending false), or POLICY_REST_WAIT_USEC after the event whatever is in; an
 * event whose rest is not decided within POLICY_REST_MAX_USEC is dropped, the next one decides. */
#define POLICY_REST_WAIT_USEC (250 * USEC_PER_MSEC)
#define POLICY_REST_MAX_USEC (1 * USEC_PER_SEC)

/* Policy-private memory of one VM, kept by the caller between calls, zero-initialised. */
typedef struct PolicyVMState {
        unsigned consecutive_events;      /* pressure events in a row without relief */
        bool relieved;                    /* a call saw no pressure since the last event */
        usec_t last_event_usec;           /* last host or scope event that concerned this VM */
        usec_t last_move_usec;            /* last move, either way */
        usec_t last_grow_usec;            /* last move up: recovery and relief steps are spaced by it */
        uint64_t last_grow_target_bytes;  /* ... and the target it set: actual rising toward it is our
                                           * own deflate landing, not the guest deflating itself */
        usec_t hold_off_until_usec;       /* self-deflate hold-off */
        usec_t manual_until_usec;         /* an operator's ResizeMachine() holds until then: a guest
                                           * sized below its reserve by hand is not "in need" */
        usec_t guest_pressure_usec;       /* last time the guest showed pressure of its own, 0 = never */
        uint64_t last_actual_bytes;       /* previous actual, to tell a self-deflate from our inflate */
        usec_t last_stats_usec;           /* updated_usec of the previous guest-stats sample */
        uint64_t stats_actual_bytes;      /* actual when that sample was first seen */
        uint64_t fell_bytes, rose_bytes;  /* how far actual fell and rose since the last sample ... */
        uint64_t fell_prev_bytes;         /* ... and fell in the interval before: balloon moves in
                                           * flight around a sample skew the guest's use it shows */
        uint64_t last_used_bytes;         /* actual - available at the previous guest-stats sample:
                                           * the guest's own use, net of our balloon moves */
        uint64_t last_major_faults;
        uint64_t last_swap_in_bytes;
        uint64_t last_oom_kills;
        uint64_t last_alloc_stalls;
        uint64_t last_direct_scan;
        uint64_t last_direct_reclaim;
        uint64_t used_growth_bytes;       /* growth of the guest's use between its last two samples */
        usec_t scope_take_stats_usec;     /* last_stats_usec when a scope event last inflated it */
        uint64_t used_peak_bytes;         /* highest actual - available seen ... */
        usec_t used_peak_usec;            /* ... when; forgotten after working_set_window_usec */
        usec_t recovery_delay_usec;       /* the cool-down in force (back-off); 0 = RecoveryDelaySec= */
        usec_t last_recovery_usec;        /* last recovery step not yet followed by an event, 0 = none */
        uint64_t recovered_bytes;         /* given back by recovery and not yet seen in the VM's host
                                           * footprint: the guest may touch it any time, so it is
                                           * room already promised */
        usec_t recovered_usec;            /* last recovery step: a promise not kept within a cool-down
                                           * of it is dropped (the guest did not need it) */
        uint64_t last_footprint_bytes;    /* host RSS + swap at the previous call, 0 = unknown */
        uint64_t overhead_bytes;          /* lowest footprint - guest use seen: QEMU's own memory (and
                                           * what the guest touched at boot), never taken; 0 = none
                                           * seen yet */
        usec_t budget_take_stats_usec;    /* last_stats_usec when the budget last took from it */
        usec_t rest_usec;                 /* a host event with its rest due counts this VM in
                                           * (PolicyHost.rest_usec), 0 = none ... */
        uint64_t blind_taken_bytes;       /* ... and took this blind step from it */
} PolicyVMState;

typedef enum PolicyReason {
        POLICY_REASON_NONE,
        POLICY_REASON_HOST_PRESSURE,
        POLICY_REASON_SCOPE_PRESSURE,
        POLICY_REASON_RECOVERY,
        POLICY_REASON_BOUNDS,             /* target moved only to respect Minimum/Maximum */
        POLICY_REASON_ADOPT_SELF_DEFLATE,
        POLICY_REASON_MANUAL,             /* ResizeMachine(): an operator set the target */
        POLICY_REASON_GUEST_PRESSURE,     /* grown because the guest shows pressure of its own */
        POLICY_REASON_HOST_BUDGET,        /* taken because the host holds more than its budget */
        _POLICY_REASON_MAX,
} PolicyReason;

const char *policy_reason_to_string(PolicyReason r);

typedef struct PolicyVM {
        /* inputs */
        const PolicyKnobs *knobs;
        uint64_t ram_bytes;               /* configured guest RAM: the balloon's 0 */
        uint64_t actual_bytes;            /* what the guest reports */
        uint64_t target_bytes;            /* what we last asked for */
        PressureLevel scope_event;        /* a trigger on this VM's scope fired for this call */
        PressureLevel scope_level;        /* current level of the VM's scope */
        GuestStats stats;
        bool controllable;                /* connected and balloon ready; otherwise only observed */
        uint64_t host_rss_bytes;          /* what the host holds for this VM: its QEMU's VmRSS ... */
        uint64_t host_swap_bytes;         /* ... and VmSwap (UINT64_MAX: unknown). Guest memory the
                                           * host holds but the guest does not use (touched, then
                                           * freed) is what a take gives the host back at once */
        bool free_page_reporting;         /* the balloon has free-page-reporting on: memory the guest
                                           * frees goes back to the host by itself */
        bool outside_budget;              /* its QEMU is not in HostMemorySource='s cgroup: the budget
                                           * neither counts what it holds nor takes from it */
        /* kept across calls by the caller */
        PolicyVMState state;
        /* outputs */
        uint64_t new_target_bytes;        /* == target_bytes when nothing changes */
        PolicyReason reason;
        PressureLevel reason_level;       /* the level that caused a pressure move, for the log */
        bool guest_pressure;              /* the guest shows pressure of its own (stats trend) */
        uint64_t floor_bytes;             /* the lowest target the policy would set now: max(minimum,
                                           * working set + reserve); minimum without fresh stats */
} PolicyVM;

/* A VM at its maximum (ram_bytes), nothing known of its guest stats or footprint, not
 * controllable until the caller says so: the starting point of every PolicyVM the simulator
 * and the tests build (the daemon's come from machine_policy_vm()). */
void policy_vm_init(PolicyVM *vm, const PolicyKnobs *knobs, uint64_t ram_bytes);

/* The host's memory budget: what the host holds against what it can hold. PSI says when the
 * host hurts; only this says how much: once swap has absorbed a shortfall PSI goes quiet while
 * the host is still over. Read by the caller from HostMemorySource= at every decision. */
typedef struct HostBudget {
        bool valid;                       /* false: no source could be read; PSI steps only */
        uint64_t capacity_bytes;          /* MemTotal, or the cgroup's memory.max/high/limit */
        uint64_t used_bytes;              /* held in RAM, reclaimable file cache not counted */
        uint64_t swap_bytes;              /* swap in use by the source (shown, not budgeted: only
                                           * the guests' own swap, PolicyVM.host_swap_bytes, is) */
        bool swap_capable;                /* the source may swap at all: a burst beyond the reserve
                                           * then swaps for a moment instead of an OOM kill */
        uint64_t reserve_bytes;           /* HostMemoryReserve=, resolved: headroom to keep */
        usec_t interval_usec;             /* how often to look again while over budget or short of
                                           * room (the caller's guest-stats interval) */
} HostBudget;

/* Over budget (> 0) or room left (< 0): used + the guests' swap + reserve - capacity. */
int64_t host_budget_balance(const HostBudget *b, const PolicyVM *vms, size_t n_vms);

/* The largest rise of the host's use (RAM + the guests' swap) within a few seconds, seen lately:
 * the budget keeps at least that much headroom, its reserve grown to it, for the next burst of
 * its kind. Kept by the caller across calls (zeroed at the start). */
typedef struct HostBurst {
        uint64_t bucket_min_bytes;        /* lowest use seen in the current bucket ... */
        uint64_t prev_min_bytes;          /* ... and in the one before */
        usec_t bucket_usec;               /* start of the current bucket, 0 = nothing seen yet */
        uint64_t peak_bytes;              /* largest rise seen ... */
        usec_t peak_usec;                 /* ... when; forgotten after HOST_BURST_MEMORY_USEC */
} HostBurst;

/* Feeds one look at the host's use; returns the burst to keep room for (0 = none seen). */
uint64_t host_burst_update(HostBurst *b, uint64_t held_bytes, usec_t now);
/* The reserve the budget keeps: HostMemoryReserve= (budget->reserve_bytes), or the last burst
 * when it is larger (with swap only; at most a third of the capacity, for a minute). */
uint64_t host_burst_reserve(const HostBurst *b, const HostBudget *budget, usec_t now);

typedef struct PolicyHost {
        HostBudget budget;
        HostBurst burst;                  /* kept across calls by the caller */
        PressureLevel event;              /* a host trigger fired for this call (NONE: not a host event) */
        PressureLevel level;              /* current host level */
        usec_t last_pressure_usec;        /* last pressure event, 0 = never: recovery waits
                                           * RecoveryDelaySec= after it. policy_decide() sets it on
                                           * host events; scope events also count per VM, in its
                                           * state, so the caller need not add them here */
        PressureLevel rest_level;         /* a host event decided on blind steps, its rest due
                                           * (PRESSURE_NONE: none); kept across calls by the
                                           * caller, which may raise the level (another trigger
                                           * of the same stall while the stats are awaited) ... */
        usec_t rest_usec;                 /* ... when it came */
        bool stats_pending;               /* guest stats the caller asked for are still awaited:
                                           * the rest waits (at most POLICY_REST_WAIT_USEC) */
} PolicyHost;

/* Effective bounds of a VM after defaults: minimum <= maximum <= ram. */
uint64_t policy_vm_minimum(const PolicyVM *vm);
uint64_t policy_vm_maximum(const PolicyVM *vm);
/* The same from the knobs and the RAM size alone (no PolicyVM to build: the manager asks for
 * every machine's bounds after each policy run). */
uint64_t policy_minimum(const PolicyKnobs *k, uint64_t ram_bytes);
uint64_t policy_maximum(const PolicyKnobs *k, uint64_t ram_bytes);

/* The working-set floor: with fresh guest stats, the guest's use (actual - available, or its
 * peak over WorkingSetWindowSec= if higher) + reserve, never below the minimum; without fresh
 * stats, the minimum. Exposed for the tests and the simulator. */
uint64_t policy_vm_floor(const PolicyVM *vm, usec_t now);

/* The cool-down in force for this VM: RecoveryDelaySec=, or longer after pressure came back
 * soon after a recovery step (doubled each time, up to RecoveryDelayMaxSec=). */
usec_t policy_vm_recovery_delay(const PolicyVM *vm);

/* Decide new targets for all VMs at time now. Fills each vm->new_target_bytes and vm->reason
 * and updates vm->state (and host->last_pressure_usec on an event). Returns the monotonic time
 * (> now) at which it wants to be called again without an event (the next recovery step), or
 * USEC_INFINITY when nothing is pending: the daemon arms no timer then.
 *
 * Call it on every host or scope PSI event, on guest-stats and BALLOON_CHANGE updates, when a
 * level changes (including back to NONE: recovery starts from there), and when the returned
 * time comes. While host pressure is current, only a guest showing pressure of its own may keep
 * a timer (its next relief step); recovery timers are armed by the call that reports the level
 * back at NONE, since PSI events keep coming while pressure lasts. No pressure and every VM at
 * its maximum: USEC_INFINITY, always. */
usec_t policy_decide(PolicyHost *host, PolicyVM *vms, size_t n_vms, usec_t now);
