/* Pressure-to-size policy: one snapshot (levels, guest stats, bounds, clock) in, balloon targets out. */
#include <stddef.h>

#include "policy.h"

/* Moves smaller than this are not worth a QMP round trip, and the guest driver works in
 * 256-page (1 MiB) chunks anyway. Rounding takes down to it keeps targets off the floor. */
#define MOVE_GRANULE_BYTES (1 * MIB)

/* actual rising while above target is the guest handing itself pages back; below this slack it
 * may just be the last pages of our own move settling. */
#define SELF_DEFLATE_SLACK_BYTES (1 * MIB)

/* A guest whose available memory is below its reserve is living on its reserve: it counts as
 * under pressure even if the trend is flat. (Half the reserve was tried: on real guests growing
 * 20 MiB/s the relief then came a sample late and the guest's own OOM killer took the
 * workload. A guest an operator resized below its reserve is not in need while the resize
 * holds: state.manual_until_usec.) */
#define RESERVE_LOW_DIVISOR 1

/* A guest in need this recently is still growing: the budget does not take from it (but in the
 * last-victim pass), even if its latest sample looks comfortable because its last relief has
 * just landed. Measured: a guest growing 20 MiB/s for 10 s was taken from between two reliefs
 * and its workload was OOM-killed in the guest. A guest that grew and then freed its memory
 * gives again once this has passed. */
#define GROWTH_GRACE_USEC (10 * USEC_PER_SEC)

/* A move asked for this long ago and still not done is not "in flight" any more: a guest whose
 * driver does not follow must not hold up takes from the others for good. */
#define INFLIGHT_MAX_USEC (10 * USEC_PER_SEC)

/* Over budget by less than this share of the capacity is noise (a page cache breathing, a
 * sample between two moves), not worth a move: 1/256, 4 MiB per GiB. */
#define BUDGET_SLACK_DIVISOR 256

/* QEMU's own memory beside a guest's RAM, at most, for a first guess: 160 MiB for a 512 MiB TCG
 * guest (measured: 150-170 MiB just booted, 64 MiB of it the translation cache), more for
 * bigger guests (page tables, larger device state). Later samples only lower it. */
#define OVERHEAD_PRIOR_BYTES (128 * MIB)

/* A burst is a rise of the host's use within one to two buckets of this length; the largest one
 * is kept in mind this long, and counts as headroom to keep up to a third of the capacity. */
#define HOST_BURST_BUCKET_USEC (5 * USEC_PER_SEC)
#define HOST_BURST_MEMORY_USEC (60 * USEC_PER_SEC)
#define HOST_BURST_MAX_DIVISOR 3

/* Near the budget's line, at most 1/IDLE_TAKE_DIVISOR of a guest's RAM per guest-stats sample. */
#define IDLE_TAKE_DIVISOR 5

/* How long memory given back counts as promised room, in recovery intervals (10 s by default):
 * long enough for a guest that wanted it to show it in its footprint. */
#define PROMISE_INTERVALS 5

/* consecutive_events saturates here; escalation_max is bounded by the knob range anyway. */
#define CONSECUTIVE_EVENTS_MAX 64U

static const char *const pressure_level_table[_PRESSURE_LEVEL_MAX] = {
        [PRESSURE_NONE] = "none",
        [PRESSURE_LOW] = "low",
        [PRESSURE_MEDIUM] = "medium",
        [PRESSURE_CRITICAL] = "critical",
};

static const char *const policy_preset_table[_POLICY_PRESET_MAX] = {
        [POLICY_PRESET_DEFAULT] = "default",
        [POLICY_PRESET_SEED] = "seed",
};

static const char *const policy_reason_table[_POLICY_REASON_MAX] = {
        [POLICY_REASON_NONE] = "none",
        [POLICY_REASON_HOST_PRESSURE] = "host-pressure",
        [POLICY_REASON_SCOPE_PRESSURE] = "scope-pressure",
        [POLICY_REASON_RECOVERY] = "recovery",
        [POLICY_REASON_BOUNDS] = "bounds",
        [POLICY_REASON_ADOPT_SELF_DEFLATE] = "adopt-self-deflate",
        [POLICY_REASON_MANUAL] = "manual",
        [POLICY_REASON_GUEST_PRESSURE] = "guest-pressure",
        [POLICY_REASON_HOST_BUDGET] = "host-budget",
};

DEFINE_STRING_TABLE_TO_STRING(pressure_level, PressureLevel, _PRESSURE_LEVEL_MAX)
DEFINE_STRING_TABLE_FROM_STRING(pressure_level, PressureLevel, _PRESSURE_LEVEL_MAX, _PRESSURE_LEVEL_INVALID)
DEFINE_STRING_TABLE_TO_STRING(policy_preset, PolicyPreset, _POLICY_PRESET_MAX)
DEFINE_STRING_TABLE_FROM_STRING(policy_preset, PolicyPreset, _POLICY_PRESET_MAX, _POLICY_PRESET_INVALID)
DEFINE_STRING_TABLE_TO_STRING(policy_reason, PolicyReason, _POLICY_REASON_MAX)

void policy_knobs_init_default(PolicyKnobs *k) {
        *k = (PolicyKnobs) {
                .preset = POLICY_PRESET_DEFAULT,
                .enabled = true,
                /* 10 % / 20 % of a second with some task stalled, 10 % with all stalled: where
                 * systemd-oomd and low-memory-monitor also start to care. Without
                 * CAP_SYS_RESOURCE the kernel wants 2 s windows; psi.c rounds and says so. */
                .trigger = {
                        [PRESSURE_LOW] = { .full = false, .stall_usec = 100 * USEC_PER_MSEC, .window_usec = USEC_PER_SEC },
                        [PRESSURE_MEDIUM] = { .full = false, .stall_usec = 200 * USEC_PER_MSEC, .window_usec = USEC_PER_SEC },
                        [PRESSURE_CRITICAL] = { .full = true, .stall_usec = 100 * USEC_PER_MSEC, .window_usec = USEC_PER_SEC },
                },
                /* A quarter of RAM: enough for any distribution to boot and keep sshd and the
                 * journal alive; the working-set floor usually binds well above it. */
                .minimum_percent = 25,
                .weight = 100,
                /* 1 % / 2.5 % / 5 % of the VM's RAM per event, doubled per event in a row up to 4x:
                 * a 4 GiB guest gives 41 MiB on a first low event and at most 819 MiB per
                 * critical event, so a 1 s PSI window relieves gigabytes in seconds where the
                 * seed's 1-4 MiB needed minutes. */
                .step_permille = { 0, 10, 25, 50 },
                .step_escalation_max = 4,
                .seed_step_bytes = { 0, 1 * MIB, 2 * MIB, 4 * MIB },
                /* Headroom a guest keeps above its working set, for the next allocation burst
                 * before its own reclaim (and the balloon's self-deflate) react. */
                .reserve_bytes = 128 * MIB,
                /* 10 %: a guest growing at 5 % of its RAM per second (a build, a JVM filling its
                 * heap) has room for one guest-stats interval (2 s) before relief reaches it. */
                .reserve_percent = 10,
                /* Longer than the longest PSI window (10 s) times two: a quiet spell this long
                 * means relief, not a gap between two events of the same episode. */
                .recovery_delay_usec = 30 * USEC_PER_SEC,
                /* Pressure back within one cool-down of a recovery step means what was given
                 * back is still needed on the host (a host workload holding its memory): each
                 * such return doubles the cool-down, 30 s → 1 → 2 → 4 min, so the squeeze-and-
                 * give-back cycle slows to one try every few minutes. Four minutes of quiet
                 * (about a host job's length) resets it. */
                .recovery_delay_max_usec = 240 * USEC_PER_SEC,
                /* 2.5 % of RAM every 2 s: min (25 %) back to max in about a minute. */
                .recovery_permille = 25,
                .recovery_interval_usec = 2 * USEC_PER_SEC,
                .hold_off_usec = 120 * USEC_PER_SEC,
                /* QEMU's guest-stats polling is typically 1-10 s; three missed polls = no stats. */
                .stats_max_age_usec = 30 * USEC_PER_SEC,
                /* A guest refaulting 500 pages/s (2 MiB/s at 4 KiB) is thrashing, not warming up. */
                .guest_major_fault_rate = 500,
                /* 2 % of RAM of new use between two samples: a workload growing, not noise. */
                .available_drop_permille = 20,
                /* Five minutes: longer than the gap between bursts of most interactive and
                 * batch loads. It protects a guest from takes that PSI alone sizes (no budget,
                 * or a stall the budget cannot see): a guest between two bursts looks idle.
                 * Takes sized by the host's budget go by the guest's current use: memory it
                 * touched and freed is exactly what an over-budget host should take first (a
                 * peak window kept it out of reach while the host swapped, on real guests). */
                .working_set_window_usec = 300 * USEC_PER_SEC,
                /* 10 % of RAM per 2 s: a guest in need outruns its own shrinker-driven
                 * deflate (rate limited in the guest) by an order of magnitude. */
                .guest_pressure_permille = 100,
        };
}

void guest_stats_init(GuestStats *s) {
        *s = (GuestStats) {
                .valid = false,
                .total_bytes = UINT64_MAX,
                .free_bytes = UINT64_MAX,
                .available_bytes = UINT64_MAX,
                .caches_bytes = UINT64_MAX,
                .major_faults = UINT64_MAX,
                .minor_faults = UINT64_MAX,
                .swap_in_bytes = UINT64_MAX,
                .swap_out_bytes = UINT64_MAX,
                .oom_kills = UINT64_MAX,
                .alloc_stalls = UINT64_MAX,
                .direct_scan = UINT64_MAX,
                .direct_reclaim = UINT64_MAX,
                .async_scan = UINT64_MAX,
                .async_reclaim = UINT64_MAX,
        };
}

void guest_stats_clamp(GuestStats *s, uint64_t ram_bytes) {
        uint64_t *bytes[] = { &s->total_bytes, &s->free_bytes, &s->available_bytes, &s->caches_bytes };

        for (size_t i = 0; i < ELEMENTSOF(bytes); i++)
                if (*bytes[i] != UINT64_MAX)
                        *bytes[i] = MIN(*bytes[i], ram_bytes);
}

/* bytes * permille / 1000 without overflowing for any size below SIZE_KNOB_MAX. */
static uint64_t permille_of(uint64_t bytes, uint32_t permille) {
        return bytes / 1000 * permille + bytes % 1000 * permille / 1000;
}

/* bytes * percent / 100, exact for round sizes and without overflow. */
static uint64_t percent_of(uint64_t bytes, uint32_t percent) {
        percent = MIN(percent, 100U);
        return bytes / 100 * percent + bytes % 100 * percent / 100;
}

static uint64_t sub_sat(uint64_t a, uint64_t b) {
        return a > b ? a - b : 0;
}
static uint64_t add_sat(uint64_t a, uint64_t b);

static bool level_valid_event(PressureLevel l) {
        return l > PRESSURE_NONE && l < _PRESSURE_LEVEL_MAX;
}

uint64_t policy_maximum(const PolicyKnobs *k, uint64_t ram_bytes) {
        uint64_t max = k->maximum_bytes ? k->maximum_bytes : ram_bytes;
        return MIN(max, ram_bytes);
}

uint64_t policy_minimum(const PolicyKnobs *k, uint64_t ram_bytes) {
        uint64_t min = k->minimum_bytes ? k->minimum_bytes : percent_of(ram_bytes, k->minimum_percent);
        return MIN(min, policy_maximum(k, ram_bytes));
}

uint64_t policy_vm_maximum(const PolicyVM *vm) {
        return policy_maximum(vm->knobs, vm->ram_bytes);
}

uint64_t policy_vm_minimum(const PolicyVM *vm) {
        return policy_minimum(vm->knobs, vm->ram_bytes);
}

static uint64_t vm_reserve(const PolicyVM *vm) {
        return MAX(vm->knobs->reserve_bytes, percent_of(vm->ram_bytes, vm->knobs->reserve_percent));
}

void policy_vm_init(PolicyVM *vm, const PolicyKnobs *knobs, uint64_t ram_bytes) {
        *vm = (PolicyVM) {
                .knobs = knobs,
                .ram_bytes = ram_bytes,
                .actual_bytes = ram_bytes,
                .target_bytes = ram_bytes,
                .host_rss_bytes = UINT64_MAX,
                .host_swap_bytes = UINT64_MAX,
        };
        guest_stats_init(&vm->stats);
}

bool guest_stats_fresh(const GuestStats *s, const PolicyKnobs *k, usec_t now) {
        if (!s->valid || s->available_bytes == UINT64_MAX)
                return false;
        /* A sample stamped in the future (clock handed over from elsewhere) is taken as new. */
        return s->updated_usec >= now || now - s->updated_usec <= k->stats_max_age_usec;
}

static bool stats_fresh(const PolicyVM *vm, usec_t now) {
        return guest_stats_fresh(&vm->stats, vm->knobs, now);
}

/* What the guest uses itself: actual - available, whether or not the driver negotiated
 * deflate-on-oom (with it, balloon pages stay in MemTotal but are not available). The sample
 * may be older than actual: after an inflate, actual has dropped but the old sample's
 * available has not, which would make the guest look smaller by exactly what we took. So take
 * actual as it was at the sample, or now if larger (a deflate since: an overestimate, safe). */
static uint64_t guest_used(const PolicyVM *vm) {
        uint64_t actual = vm->actual_bytes;

        if (vm->state.last_stats_usec == vm->stats.updated_usec && vm->state.last_stats_usec != 0)
                actual = MAX(actual, vm->state.stats_actual_bytes);
        return sub_sat(actual, vm->stats.available_bytes);
}

static uint64_t vm_floor(const PolicyVM *vm, usec_t now, bool peak) {
        uint64_t min = policy_vm_minimum(vm), max = policy_vm_maximum(vm);

        if (!stats_fresh(vm, now))
                return min;

        uint64_t used = guest_used(vm);
        /* A spiky guest between two spikes looks idle; its working set is what it used lately. */
        if (peak && vm->state.used_peak_usec != 0 && now - vm->state.used_peak_usec <= vm->knobs->working_set_window_usec)
                used = MAX(used, vm->state.used_peak_bytes);
        uint64_t floor = add_sat(used, vm_reserve(vm));
        return MAX(min, MIN(floor, max));
}

uint64_t policy_vm_floor(const PolicyVM *vm, usec_t now) {
        return vm_floor(vm, now, true);
}

usec_t policy_vm_recovery_delay(const PolicyVM *vm) {
        const PolicyKnobs *k = vm->knobs;
        usec_t max = MAX(k->recovery_delay_max_usec, k->recovery_delay_usec);

        return CLAMP(vm->state.recovery_delay_usec, k->recovery_delay_usec, max);
}

/* Recovery back-off, on an event concerning this VM. Pressure back within one cool-down of a
 * recovery step doubles the cool-down (once per return: the step is then forgotten). Otherwise,
 * after a quiet spell of RecoveryDelayMaxSec= it is back to RecoveryDelaySec=. The quiet spell
 * of a backed-off cool-down itself does not reset it: the pressure that follows its recovery
 * steps is a return. */
static void recovery_backoff(PolicyVM *vm, usec_t now) {
        PolicyVMState *st = &vm->state;
        const PolicyKnobs *k = vm->knobs;
        usec_t max = MAX(k->recovery_delay_max_usec, k->recovery_delay_usec);
        usec_t delay = policy_vm_recovery_delay(vm);

        if (st->last_recovery_usec != 0 && now - st->last_recovery_usec < delay)
                st->recovery_delay_usec = delay > max / 2 ? max : 2 * delay;
        else if (st->last_event_usec != 0 && now - st->last_event_usec >= max)
                st->recovery_delay_usec = 0;
        st->last_recovery_usec = 0;
}

static uint64_t escalation(const PolicyKnobs *k, unsigned consecutive) {
        uint64_t f = 1, max = MAX(k->step_escalation_max, 1U);

        for (unsigned i = 1; i < consecutive && f < max; i++)
                f *= 2;
        return MIN(f, max);
}

/* The step of one event for this VM, before it is shared out by spare memory and weight. */
static uint64_t vm_step(const PolicyVM *vm, PressureLevel level, bool fresh) {
        const PolicyKnobs *k = vm->knobs;
        uint64_t level_step = permille_of(vm->ram_bytes, k->step_permille[level]);

        /* Without stats we cannot see the working set: move as on a first low event, never
         * more, and let the minimum be the only floor. */
        if (!fresh)
                return MIN(level_step, permille_of(vm->ram_bytes, k->step_permille[PRESSURE_LOW]));
        return level_step * escalation(k, vm->state.consecutive_events);
}

static bool counter_grew(uint64_t now, uint64_t before) {
        return now != UINT64_MAX && before != UINT64_MAX && now > before;
}

/* Reads the guest's own signals from a new stats sample: its use growing, stalls, direct
 * reclaim, OOM kills, swap-in, refaults. Marks state.guest_pressure_usec. */
static void observe_guest(PolicyVM *vm, usec_t now) {
        PolicyVMState *st = &vm->state;
        const GuestStats *s = &vm->stats;
        const PolicyKnobs *k = vm->knobs;

        if (!stats_fresh(vm, now))
                return;

        /* The guest's available memory and the balloon's actual size are not read at the same
         * moment: the guest takes its sample some time before the host sees it, and QEMU reports
         * actual late (BALLOON_CHANGE is throttled to one a second) while the driver is still
         * moving. A balloon move around a sample makes the guest's use look off by up to that
         * move, and the next sample seems to grow by as much: our own move mistaken for the
         * guest's growth. Seen on real TCG guests: relief of exactly twice the last inflation
         * right after it, and recovery steps feeding relief, which fed more relief. Growth
         * between two samples is counted net of the moves that can fake it: the previous sample
         * looks too small by an inflation that landed after the guest took it (actual fell in
         * the interval before) or a deflation the guest had and QEMU had not reported yet
         * (actual rose since); this one looks too big by an inflation the guest has made and
         * QEMU not yet reported (actual still above target). */
        uint64_t discount = 0;
        if (s->updated_usec != st->last_stats_usec) {
                discount = add_sat(add_sat(st->fell_prev_bytes, st->rose_bytes), sub_sat(vm->actual_bytes, vm->target_bytes));
                st->fell_prev_bytes = st->fell_bytes;
                st->fell_bytes = st->rose_bytes = 0;
                st->stats_actual_bytes = vm->actual_bytes;   /* a new sample: actual as of now */
        }
        uint64_t used = guest_used(vm);
        bool pressure = s->available_bytes < vm_reserve(vm) / RESERVE_LOW_DIVISOR &&
                        vm->actual_bytes < policy_vm_maximum(vm) && now >= st->manual_until_usec;

        if (st->last_stats_usec != 0 && s->updated_usec > st->last_stats_usec) {
                usec_t dt_usec = s->updated_usec - st->last_stats_usec;

                if (used > add_sat(st->last_used_bytes, discount) &&
                    used - st->last_used_bytes - discount >= permille_of(vm->ram_bytes, k->available_drop_permille))
                        pressure = true;
                if (counter_grew(s->alloc_stalls, st->last_alloc_stalls) ||
                    counter_grew(s->oom_kills, st->last_oom_kills) ||
                    counter_grew(s->direct_scan, st->last_direct_scan) ||
                    counter_grew(s->direct_reclaim, st->last_direct_reclaim) ||
                    counter_grew(s->swap_in_bytes, st->last_swap_in_bytes))
                        pressure = true;
                if (counter_grew(s->major_faults, st->last_major_faults) &&
                    (double) (s->major_faults - st->last_major_faults) * USEC_PER_SEC / (double) dt_usec >=
                    (double) k->guest_major_fault_rate)
                        pressure = true;
        }

        if (used >= st->used_peak_bytes || st->used_peak_usec == 0 ||
            now - st->used_peak_usec > k->working_set_window_usec) {
                st->used_peak_bytes = used;
                st->used_peak_usec = now;
        }

        if (s->updated_usec != st->last_stats_usec) {
                st->used_growth_bytes = st->last_stats_usec != 0 ? sub_sat(used, add_sat(st->last_used_bytes, discount)) : 0;
                st->last_stats_usec = s->updated_usec;
                st->last_used_bytes = used;
                st->last_major_faults = s->major_faults;
                st->last_swap_in_bytes = s->swap_in_bytes;
                st->last_oom_kills = s->oom_kills;
                st->last_alloc_stalls = s->alloc_stalls;
                st->last_direct_scan = s->direct_scan;
                st->last_direct_reclaim = s->direct_reclaim;
        }

        if (pressure)
                st->guest_pressure_usec = now;
}

static bool guest_pressured(const PolicyVM *vm, usec_t now) {
        usec_t t = vm->state.guest_pressure_usec;
        return t != 0 && now - t < MAX(vm->knobs->recovery_delay_usec, vm->knobs->recovery_interval_usec);
}

static bool vm_managed(const PolicyVM *vm) {
        return vm->controllable && vm->knobs->enabled && vm->ram_bytes > 0;
}

static void vm_move(PolicyVM *vm, uint64_t new_target, PolicyReason reason, PressureLevel level, usec_t now) {
        if (new_target == vm->new_target_bytes)
                return;
        if (new_target > vm->new_target_bytes) {
                vm->state.last_grow_usec = now;
                vm->state.last_grow_target_bytes = new_target;
        }
        vm->new_target_bytes = new_target;
        vm->reason = reason;
        vm->reason_level = level;
        vm->state.last_move_usec = now;
}

/* Takes up to `take` bytes (rounded down to the granule) from the VM's current decision,
 * never below floor. Returns what was taken. */
static uint64_t vm_take_to(PolicyVM *vm, uint64_t take, uint64_t floor, PolicyReason reason, PressureLevel level,
                           usec_t now) {
        uint64_t spare = sub_sat(vm->new_target_bytes, floor);

        take = MIN(take, spare);
        take -= take % MOVE_GRANULE_BYTES;
        if (take == 0)
                return 0;
        vm_move(vm, vm->new_target_bytes - take, reason, level, now);
        vm->state.recovered_bytes = sub_sat(vm->state.recovered_bytes, take);
        return take;
}

/* A take sized by PSI alone, which cannot tell how much the host needs: never below the
 * working set's recent peak (floor_bytes). */
static uint64_t vm_take(PolicyVM *vm, uint64_t take, PolicyReason reason, PressureLevel level, usec_t now) {
        return vm_take_to(vm, take, vm->floor_bytes, reason, level, now);
}

static uint64_t vm_host_swap(const PolicyVM *vm);

/* Per-call bookkeeping of one VM: adopt a self-deflate, respect bounds, count events in a row. */
static void vm_prepare(PolicyVM *vm, const PolicyHost *host, bool host_event, usec_t now) {
        PolicyVMState *st = &vm->state;
        const PolicyKnobs *k = vm->knobs;
        bool vm_event = host_event || level_valid_event(vm->scope_event);

        vm->new_target_bytes = vm->target_bytes;
        vm->reason = POLICY_REASON_NONE;
        vm->reason_level = PRESSURE_NONE;

        /* What the guest reports is its own word, whoever built this snapshot: within its RAM. */
        if (vm->ram_bytes > 0) {
                vm->actual_bytes = MIN(vm->actual_bytes, vm->ram_bytes);
                guest_stats_clamp(&vm->stats, vm->ram_bytes);
        }
        if (st->last_actual_bytes != 0) {
                st->fell_bytes = add_sat(st->fell_bytes, sub_sat(st->last_actual_bytes, vm->actual_bytes));
                st->rose_bytes = add_sat(st->rose_bytes, sub_sat(vm->actual_bytes, st->last_actual_bytes));
        }
        observe_guest(vm, now);

        /* What the guest touched of what recovery gave back shows in its host footprint: no
         * longer a promise, it is in the host's use now. */
        if (vm->host_rss_bytes != UINT64_MAX) {
                uint64_t footprint = add_sat(MIN(vm->host_rss_bytes, vm->ram_bytes), vm_host_swap(vm));
                if (st->last_footprint_bytes != 0)
                        st->recovered_bytes = sub_sat(st->recovered_bytes, sub_sat(footprint, st->last_footprint_bytes));
                st->last_footprint_bytes = footprint;
                if (stats_fresh(vm, now)) {
                        uint64_t overhead = sub_sat(footprint, guest_used(vm));
                        if (st->overhead_bytes == 0)
                                overhead = MIN(overhead, OVERHEAD_PRIOR_BYTES + vm->ram_bytes / 16);
                        if (st->overhead_bytes == 0 || overhead < st->overhead_bytes)
                                st->overhead_bytes = MAX(overhead, 1);
                }
        }
        /* A promise lasts PROMISE_INTERVALS recovery intervals: memory a guest leaves untouched
         * that long after it got it back is not a burst about to land, and if it comes later the
         * budget takes it back within a stats interval (the reserve absorbs it meanwhile). Kept
         * for good, promises left idle guests squeezed on an empty host (the simulator found it).
         * Without swap they are kept until the guest uses the memory: there a burst beyond the
         * reserve is not a moment of swapping but the host's OOM killer taking a whole VM. */
        if (host->budget.swap_capable && st->recovered_usec != 0 &&
            now - st->recovered_usec > PROMISE_INTERVALS * vm->knobs->recovery_interval_usec) {
                st->recovered_bytes = 0;
                st->recovered_usec = 0;
        }

        if (vm_event) {
                recovery_backoff(vm, now);
                if (st->relieved || st->consecutive_events == 0 ||
                    now - st->last_event_usec > k->recovery_delay_usec)
                        st->consecutive_events = 1;
                else if (st->consecutive_events < CONSECUTIVE_EVENTS_MAX)
                        st->consecutive_events++;
                st->relieved = false;
                st->last_event_usec = now;
        } else if (host->level == PRESSURE_NONE && vm->scope_level == PRESSURE_NONE)
                st->relieved = true;
        if (host_event) {
                /* a new host event is decided afresh: an earlier one's rest is no longer due */
                st->rest_usec = 0;
                st->blind_taken_bytes = 0;
        }

        /* A deflate we asked for and then cut short by a take lands late: actual rising to the
         * target of our last grow is that, not the guest deflating itself (seen on a real guest:
         * the adoption marked it "in need" and held it off for 2 min while the host swapped). */
        bool own_deflate_landing = st->last_grow_usec != 0 && now - st->last_grow_usec < INFLIGHT_MAX_USEC &&
                                   vm->actual_bytes <= st->last_grow_target_bytes + SELF_DEFLATE_SLACK_BYTES;
        bool self_deflated = st->last_actual_bytes != 0 && !own_deflate_landing &&
                             vm->actual_bytes > st->last_actual_bytes &&
                             vm->actual_bytes > vm->target_bytes + SELF_DEFLATE_SLACK_BYTES;
        st->last_actual_bytes = vm->actual_bytes;

        vm->guest_pressure = guest_pressured(vm, now);
        vm->floor_bytes = policy_vm_floor(vm, now);

        if (!vm_managed(vm))
                return;

        uint64_t min = policy_vm_minimum(vm), max = policy_vm_maximum(vm);

        if (self_deflated) {
                /* The guest needed those pages: its shrinker gave them back. Taking them again
                 * right away would just make it reclaim again. */
                if (k->preset == POLICY_PRESET_DEFAULT) {
                        st->hold_off_until_usec = now + k->hold_off_usec;
                        st->guest_pressure_usec = now;
                        vm->guest_pressure = true;
                }
                vm_move(vm, CLAMP(vm->actual_bytes, min, max), POLICY_REASON_ADOPT_SELF_DEFLATE, PRESSURE_NONE, now);
        } else if (vm->target_bytes < min || vm->target_bytes > max)
                vm_move(vm, CLAMP(vm->target_bytes, min, max), POLICY_REASON_BOUNDS, PRESSURE_NONE, now);
}

/* A VM whose scope fired this call is served by its own event, not by the host's: always for
 * the seed, and for the default preset when the host itself is quiet. */
static bool scope_handled(const PolicyVM *vm, const PolicyHost *host) {
        if (!level_valid_event(vm->scope_event))
                return false;
        return vm->knobs->preset == POLICY_PRESET_SEED ||
               (!level_valid_event(host->event) && host->level == PRESSURE_NONE);
}

static bool vm_held_off(const PolicyVM *vm, PressureLevel level, usec_t now) {
        return level < PRESSURE_CRITICAL && now < vm->state.hold_off_until_usec;
}

/* Seed preset: exactly the per-level step, or nothing if that would cross the minimum. */
static void seed_event(PolicyVM *vm, PressureLevel level, PolicyReason reason, usec_t now) {
        uint64_t step = vm->knobs->seed_step_bytes[level];
        uint64_t base = vm->new_target_bytes;

        if (step == 0 || base < step || base - step < policy_vm_minimum(vm))
                return;
        vm_move(vm, base - step, reason, level, now);
}

/* Who takes part in a host event's share, and in which pass: guests showing pressure of their
 * own only in the second (last-victim) pass; guests without fresh stats only in the first. */
static bool share_eligible(const PolicyVM *vm, const PolicyHost *host, PressureLevel level, bool last_pass, usec_t now) {
        if (scope_handled(vm, host) || !vm_managed(vm) || vm->knobs->preset != POLICY_PRESET_DEFAULT ||
            vm_held_off(vm, level, now))
                return false;
        if (!stats_fresh(vm, now))
                return !last_pass;
        return vm->guest_pressure == last_pass;
}

/* How well a guest can spare memory: its spare above the floor as a share of its RAM, divided
 * by its weight (a heavier guest is squeezed less). */
static double share_score(const PolicyVM *vm) {
        return (double) sub_sat(vm->new_target_bytes, vm->floor_bytes) / (double) vm->ram_bytes /
               (double) MAX(vm->knobs->weight, 1U);
}

/* How well a guest could spare memory before the blind step of the event whose rest this is:
 * the rest is shared as the event would have been with the stats at hand. */
static double rest_score(const PolicyVM *vm) {
        PolicyVM before = *vm;

        before.new_target_bytes = add_sat(vm->new_target_bytes, vm->state.blind_taken_bytes);
        return share_score(&before);
}

typedef enum ShareMode {
        SHARE_EVENT,    /* a host event: informed, or blind steps if a guest lacks stats */
        SHARE_REST,     /* the rest of an event decided on blind steps */
} ShareMode;

/* Host pressure: every eligible guest is asked for its step scaled by its score, normalised so
 * that the best donor gives a full step and the others in proportion; nobody below its floor.
 * Guests showing pressure of their own are the last victims: taken from only at critical
 * level, and only when nobody else had anything to give.
 *
 * An event that finds a guest without fresh stats cannot share yet (that guest may be the best
 * donor, and the last-victim pass depends on what the others give): every guest gives at most
 * the blind low step at once (lighter for heavier weights, above its floor where its stats say
 * where that is), so that the host's relief does not wait for a QMP round trip to every guest
 * (at 1,000 VMs, tens of milliseconds), and the event is shared when the stats are in
 * (SHARE_REST): the same share as with the stats at hand, less what each gave blind. A guest
 * still without stats then gives the blind step and nothing more. Returns true if the rest is
 * due. */
static bool host_event_share(const PolicyHost *host, PolicyVM *vms, size_t n_vms, PressureLevel level, bool escalate,
                             ShareMode mode, usec_t now) {
        if (mode == SHARE_EVENT) {
                bool blind = false;

                for (size_t i = 0; i < n_vms && !blind; i++)
                        blind = share_eligible(vms + i, host, level, false, now) && !stats_fresh(vms + i, now);
                if (blind) {
                        for (size_t i = 0; i < n_vms; i++) {
                                PolicyVM *vm = vms + i;
                                bool first = share_eligible(vm, host, level, false, now);

                                if (!first && !share_eligible(vm, host, level, true, now))
                                        continue;
                                vm->state.rest_usec = now;
                                vm->state.blind_taken_bytes = !first ? 0 :
                                        vm_take(vm, vm_step(vm, level, false) * 100 / MAX(100U, vm->knobs->weight),
                                                POLICY_REASON_HOST_PRESSURE, level, now);
                        }
                        return true;
                }
        }

        for (int pass = 0; pass < 2; pass++) {
                bool last_pass = pass == 1;
                double score_max = 0;
                uint64_t taken = 0;

                for (size_t i = 0; i < n_vms; i++) {
                        PolicyVM *vm = vms + i;
                        if (mode == SHARE_REST && vm->state.rest_usec != host->rest_usec)
                                continue;
                        if (share_eligible(vm, host, level, last_pass, now) && stats_fresh(vm, now))
                                score_max = MAX(score_max, mode == SHARE_REST ? rest_score(vm) : share_score(vm));
                }

                for (size_t i = 0; i < n_vms; i++) {
                        PolicyVM *vm = vms + i;
                        uint64_t blind = 0, take;

                        if (mode == SHARE_REST) {
                                if (vm->state.rest_usec != host->rest_usec)
                                        continue;
                                blind = vm->state.blind_taken_bytes;
                        }
                        if (!share_eligible(vm, host, level, last_pass, now))
                                continue;
                        if (!stats_fresh(vm, now))
                                /* Lighter for heavier weights, never heavier than a low step. */
                                take = vm_step(vm, level, false) * 100 / MAX(100U, vm->knobs->weight);
                        else if (score_max > 0)
                                take = (uint64_t) ((double) (escalate ? vm_step(vm, level, true)
                                                                      : permille_of(vm->ram_bytes, vm->knobs->step_permille[level])) *
                                                   ((mode == SHARE_REST ? rest_score(vm) : share_score(vm)) / score_max));
                        else
                                continue;
                        if (blind == 0) {
                                taken += vm_take(vm, take, POLICY_REASON_HOST_PRESSURE, level, now);
                                continue;
                        }
                        /* What the event takes from it, from where it was before the blind step;
                         * what that step took already counts. */
                        uint64_t informed = MIN(take, sub_sat(add_sat(vm->new_target_bytes, blind), vm->floor_bytes));
                        informed -= informed % MOVE_GRANULE_BYTES;
                        (void) vm_take(vm, sub_sat(informed, blind), POLICY_REASON_HOST_PRESSURE, level, now);
                        taken += informed;
                }

                if (taken > 0 || level < PRESSURE_CRITICAL)
                        break;
        }
        if (mode == SHARE_REST)
                for (size_t i = 0; i < n_vms; i++)
                        if (vms[i].state.rest_usec == host->rest_usec) {
                                vms[i].state.rest_usec = 0;
                                vms[i].state.blind_taken_bytes = 0;
                        }
        return false;
}

/* --- the host's memory budget ---------------------------------------------------------------- */

/* A VM's swap as the host counts it, clamped to its RAM: QEMU (or a guest that compromised it)
 * cannot make the host look further over budget than the VM's size. */
static uint64_t vm_host_swap(const PolicyVM *vm) {
        if (vm->host_swap_bytes == UINT64_MAX)
                return 0;
        return vm->ram_bytes > 0 ? MIN(vm->host_swap_bytes, vm->ram_bytes) : 0;
}

static uint64_t add_sat(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static int64_t to_balance(uint64_t held, uint64_t capacity) {
        if (held >= capacity)
                return (int64_t) MIN(held - capacity, (uint64_t) INT64_MAX);
        return -(int64_t) MIN(capacity - held, (uint64_t) INT64_MAX);
}

uint64_t host_burst_update(HostBurst *b, uint64_t held_bytes, usec_t now) {
        if (b->bucket_usec == 0 || now < b->bucket_usec) {
                *b = (HostBurst) { .bucket_min_bytes = held_bytes, .prev_min_bytes = held_bytes, .bucket_usec = now };
                return 0;
        }
        if (now >= b->bucket_usec + HOST_BURST_BUCKET_USEC) {
                /* a new bucket; after a gap (no look for a whole bucket) the old low is stale */
                b->prev_min_bytes = now >= b->bucket_usec + 2 * HOST_BURST_BUCKET_USEC ? held_bytes : b->bucket_min_bytes;
                b->bucket_min_bytes = held_bytes;
                b->bucket_usec = now;
        }
        b->bucket_min_bytes = MIN(b->bucket_min_bytes, held_bytes);
        uint64_t rise = held_bytes - MIN(b->bucket_min_bytes, b->prev_min_bytes);
        if (rise >= b->peak_bytes || now >= b->peak_usec + HOST_BURST_MEMORY_USEC) {
                b->peak_bytes = rise;
                b->peak_usec = now;
        }
        return b->peak_bytes;
}

uint64_t host_burst_reserve(const HostBurst *b, const HostBudget *budget, usec_t now) {
        uint64_t burst = 0;

        if (budget->swap_capable && b->peak_usec != 0 && now < b->peak_usec + HOST_BURST_MEMORY_USEC)
                burst = MIN(b->peak_bytes, budget->capacity_bytes / HOST_BURST_MAX_DIVISOR);
        return MAX(budget->reserve_bytes, burst);
}

int64_t host_budget_balance(const HostBudget *b, const PolicyVM *vms, size_t n_vms) {
        uint64_t held;

        if (!b->valid)
                return 0;
        /* The guests' swap is memory the host took from them blindly: it is part of what they
         * hold, and a balloon take of those pages frees the swap without a page of RAM. Other
         * swap (a host daemon's cold pages) is nobody's to give back, so it is not counted. */
        held = add_sat(b->used_bytes, b->reserve_bytes);
        for (size_t i = 0; i < n_vms; i++)
                if (!vms[i].outside_budget)
                        held = add_sat(held, vm_host_swap(vms + i));
        return to_balance(held, b->capacity_bytes);
}

/* Guest memory the host holds for this VM that the guest does not use: touched, then freed, or
 * cache. A take from it gives the host RAM (or swap) back at once; a take from memory the guest
 * never touched only lowers a limit. UINT64_MAX: the host footprint is unknown. Includes QEMU's
 * own overhead, which only makes the estimate generous; the floor still bounds every take. */
static uint64_t vm_held_unused(const PolicyVM *vm) {
        /* The footprint holds QEMU's own memory too (under TCG a 64 MiB translation cache, plus
         * the binary and its heap): 150-170 MiB for a 512 MiB guest just booted, which a take
         * counted as the guest's unused memory squeezed idle guests to their floors before they
         * had touched anything (measured). The lowest footprint - use seen so far is that
         * overhead, or more (what the guest touched at boot and freed): never taken. A VM first
         * seen after it touched and freed memory (the daemon started late) would make all of it
         * "overhead": the first guess is capped at OVERHEAD_PRIOR_BYTES + RAM/16. */
        if (vm->host_rss_bytes == UINT64_MAX)
                return UINT64_MAX;
        uint64_t footprint = add_sat(MIN(vm->host_rss_bytes, vm->ram_bytes), vm_host_swap(vm));
        return sub_sat(sub_sat(footprint, guest_used(vm)), vm->state.overhead_bytes);
}

/* Room promised: what recovery gave back that the guest has not touched yet (vm_prepare() counts
 * the growth of its host footprint against it). It may any time, so it is not room for another
 * give-back. Without a known footprint nothing is counted. */
static uint64_t vm_promised(const PolicyVM *vm) {
        return vm->host_rss_bytes == UINT64_MAX || vm->outside_budget ? 0 : vm->state.recovered_bytes;
}

/* What the guest may still grow into on the host: its balloon limit beyond what the host holds
 * for it. QEMU's own overhead is in the footprint, so this errs low by that much. */
static uint64_t vm_potential(const PolicyVM *vm) {
        if (vm->host_rss_bytes == UINT64_MAX || vm->outside_budget || !vm_managed(vm))
                return 0;
        uint64_t footprint = add_sat(MIN(vm->host_rss_bytes, vm->ram_bytes), vm_host_swap(vm));
        return sub_sat(MIN(vm->new_target_bytes, vm->ram_bytes), footprint);
}

static bool grown_this_call(const PolicyVM *vm) {
        return vm->reason == POLICY_REASON_RECOVERY || vm->reason == POLICY_REASON_GUEST_PRESSURE ||
               vm->reason == POLICY_REASON_ADOPT_SELF_DEFLATE;
}

/* Who gives toward the budget, and in which pass: guests in need of memory only in the second
 * (last-victim) pass, guests without fresh stats only in the first (a blind step at most). */
static bool budget_donor(const PolicyVM *vm, PressureLevel level, bool last_pass, usec_t now) {
        if (!vm_managed(vm) || vm->outside_budget || vm->knobs->preset != POLICY_PRESET_DEFAULT ||
            vm_held_off(vm, level, now) || grown_this_call(vm))
                return false;
        /* One take per guest-stats sample: the next one sees what this one did to the guest and
         * the host (a take of swapped-out guest pages can swap some in first, and the host's use
         * lags). A blind take (no sample yet) does not hold up the first informed one. */
        if (vm->state.budget_take_stats_usec != 0 && vm->state.budget_take_stats_usec == vm->state.last_stats_usec &&
            vm->reason != POLICY_REASON_HOST_BUDGET)
                return false;

        if (!stats_fresh(vm, now))
                return !last_pass;
        /* In need is what the latest sample shows, not the sticky window PSI takes use: a guest
         * that grew a while ago and now sits on free memory gives like any other (on real guests
         * one that had touched and freed 300 MiB kept it, "in need", while the host swapped). */
        bool in_need = (vm->guest_pressure && vm->state.guest_pressure_usec >= vm->state.last_stats_usec) ||
                       (vm->state.guest_pressure_usec != 0 && now < vm->state.guest_pressure_usec + GROWTH_GRACE_USEC);
        return in_need == last_pass;
}

/* What a donor can give this call: down to its floor, limited to what the host holds for it
 * unused (the take must give the host something), a blind low step without fresh stats. */
typedef enum BudgetTake {
        BUDGET_TAKE_HELD,        /* what the host holds for the guest and it does not use */
        BUDGET_TAKE_STRICT,      /* no swap: anything down to the floor */
        BUDGET_TAKE_IDLE,        /* near the line: the same, a fifth of RAM per sample at most */
} BudgetTake;

static uint64_t budget_limit(const PolicyVM *vm, BudgetTake mode, usec_t now) {
        bool strict = mode == BUDGET_TAKE_STRICT;
        uint64_t limit = sub_sat(vm->new_target_bytes, vm_floor(vm, now, false));

        if (!stats_fresh(vm, now))
                return vm->reason == POLICY_REASON_HOST_BUDGET || mode == BUDGET_TAKE_IDLE ? 0 :
                        MIN(limit, permille_of(vm->ram_bytes, vm->knobs->step_permille[PRESSURE_LOW]));
        /* Without swap, lowering a limit the guest could grow into is the point: anything down
         * to the floor counts. */
        if (strict)
                return limit;
        /* With free page reporting the guest's free memory is back on the host already: a take
         * from it would give the host nothing. What is left for the balloon is what the guest
         * holds but can drop (its reclaimable cache: available - free). */
        uint64_t unused = vm_held_unused(vm);
        if (vm->free_page_reporting && vm->stats.free_bytes != UINT64_MAX)
                unused = MIN(unused, sub_sat(vm->stats.available_bytes, vm->stats.free_bytes));
        /* Memory a guest is about to use again looks the same as memory it is done with (a
         * spiky guest between two bursts): near the line a fifth of its RAM per sample at most,
         * so that a guest that starts growing shows it before it has lost everything (in the
         * simulator a spiky guest lost 5 of its 8 GiB at once between two bursts, and OOMed). */
        if (mode == BUDGET_TAKE_IDLE)
                unused = MIN(unused, vm->ram_bytes / IDLE_TAKE_DIVISOR);
        /* what this call took already (an earlier water-filling round, a scope or PSI take) came
         * out of the same unused memory */
        return MIN(limit, sub_sat(unused, sub_sat(vm->target_bytes, vm->new_target_bytes)));
}

/* Takes `over` bytes from the donors, each in proportion to what it can give divided by its
 * weight (water-filling: what one cannot give is shared by the others). Returns what was taken. */
static uint64_t budget_take(PolicyVM *vms, size_t n_vms, uint64_t over, PressureLevel level, BudgetTake mode,
                            usec_t now) {
        uint64_t taken = 0;

        for (int pass = 0; pass < 2 && taken < over; pass++) {
                bool last_pass = pass == 1;

                if (last_pass && level < PRESSURE_CRITICAL)
                        break;
                for (int round = 0; round < 8 && over - taken >= MOVE_GRANULE_BYTES; round++) {
                        double sum = 0;
                        uint64_t round_taken = 0, left = over - taken;

                        for (size_t i = 0; i < n_vms; i++)
                                if (budget_donor(vms + i, level, last_pass, now))
                                        sum += (double) budget_limit(vms + i, mode, now) / (double) MAX(vms[i].knobs->weight, 1U);
                        if (sum <= 0)
                                break;
                        for (size_t i = 0; i < n_vms; i++) {
                                PolicyVM *vm = vms + i;
                                if (!budget_donor(vm, level, last_pass, now))
                                        continue;
                                uint64_t limit = budget_limit(vm, mode, now);
                                double share = (double) left * ((double) limit / (double) MAX(vm->knobs->weight, 1U)) / sum;
                                /* Round up to the granule: a share below it would never be taken. */
                                uint64_t want = MIN(limit, (uint64_t) share + MOVE_GRANULE_BYTES - 1);
                                round_taken += vm_take_to(vm, want, vm_floor(vm, now, false), POLICY_REASON_HOST_BUDGET,
                                                          level, now);
                        }
                        if (round_taken == 0)
                                break;
                        taken += round_taken;
                        if (taken >= over)
                                break;
                }
        }
        for (size_t i = 0; i < n_vms; i++)
                if (vms[i].reason == POLICY_REASON_HOST_BUDGET)
                        vms[i].state.budget_take_stats_usec = vms[i].state.last_stats_usec;
        return taken;
}


/* Inflations asked for and not yet done: the host gets that memory back when the guest follows,
 * so the budget must not take it a second time meanwhile. */
static uint64_t inflight_takes(const PolicyVM *vms, size_t n_vms, usec_t now) {
        uint64_t sum = 0;

        for (size_t i = 0; i < n_vms; i++) {
                const PolicyVM *vm = vms + i;
                if (!vm_managed(vm) || vm->reason == POLICY_REASON_ADOPT_SELF_DEFLATE ||
                    vm->state.last_move_usec == 0 || now - vm->state.last_move_usec > INFLIGHT_MAX_USEC)
                        continue;
                sum = add_sat(sum, sub_sat(MIN(vm->actual_bytes, vm->ram_bytes), vm->target_bytes));
        }
        return sum;
}

usec_t policy_decide(PolicyHost *host, PolicyVM *vms, size_t n_vms, usec_t now) {
        bool host_event = level_valid_event(host->event);
        bool host_quiet = !host_event && host->level == PRESSURE_NONE;
        const HostBudget *budget = &host->budget;
        usec_t next = USEC_INFINITY;

        if (host_event)
                host->last_pressure_usec = now;

        for (size_t i = 0; i < n_vms; i++) {
                /* each VM's knobs are elsewhere (the caller's), cold at an event: ask ahead */
                if (i + 4 < n_vms)
                        for (size_t o = 0; o < sizeof *vms[i + 4].knobs; o += 64)
                                __builtin_prefetch((const char *) vms[i + 4].knobs + o);
                vm_prepare(vms + i, host, host_event, now);
        }

        /* The reserve grows to the largest burst seen lately: on real guests, warm-ups that
         * touched 300 MiB in two seconds went to swap through a reserve of 100 MiB while
         * another guest still held 300 MiB it had freed (the idle take starts within a reserve
         * of the line, and came too late). Room for the last burst is room for the next.
         * Without swap the budget counts every guest's room to grow already. */
        if (budget->valid && budget->swap_capable) {
                uint64_t held = budget->used_bytes;
                for (size_t i = 0; i < n_vms; i++)
                        if (!vms[i].outside_budget)
                                held = add_sat(held, vm_host_swap(vms + i));
                (void) host_burst_update(&host->burst, held, now);
                host->budget.reserve_bytes = host_burst_reserve(&host->burst, budget, now);
        }

        /* The budget: over (> 0) or room left (< 0), net of inflations still in flight. */
        int64_t balance = 0;
        uint64_t room = 0;
        if (budget->valid) {
                int64_t inflight = (int64_t) MIN(inflight_takes(vms, n_vms, now), (uint64_t) INT64_MAX / 2);
                balance = host_budget_balance(budget, vms, n_vms);
                balance = balance < INT64_MIN / 2 + inflight ? INT64_MIN / 2 : balance - inflight;
                if (!budget->swap_capable) {
                        /* Without swap, memory a guest has not touched but may is spoken for: a
                         * guest touching it past the capacity is not a moment of swapping but the
                         * OOM killer taking a whole VM (measured: a guest touching 350 MiB in a
                         * second, 5 s after the start, killed VMs before any controller could
                         * move). So the budget counts every guest's room to grow, and keeps it
                         * within the host's; a squeezed guest's own OOM killer takes a process,
                         * not the VM. */
                        uint64_t potential = 0;
                        for (size_t i = 0; i < n_vms; i++)
                                potential = add_sat(potential, vm_potential(vms + i));
                        balance = balance > INT64_MAX / 2 - (int64_t) MIN(potential, (uint64_t) INT64_MAX / 4)
                                        ? INT64_MAX / 2 : balance + (int64_t) MIN(potential, (uint64_t) INT64_MAX / 4);
                }
                room = balance < 0 ? (uint64_t) -balance : 0;
                for (size_t i = 0; budget->swap_capable && i < n_vms; i++)
                        room = sub_sat(room, vm_promised(vms + i));
        }

        /* Scope events first: the VM whose own cgroup is squeezed gives, so that the guest frees
         * pages cooperatively instead of the host swapping them out blindly. While the host is
         * under pressure too, a scope stall is more likely a symptom of host-wide reclaim (the
         * VM touching pages the host swapped out: a VM that is growing stalls first), so those
         * VMs are left to the host-wide share, which picks donors by what they can spare. */
        for (size_t i = 0; i < n_vms; i++) {
                PolicyVM *vm = vms + i;
                PressureLevel level = MAX(vm->scope_event, host_event ? host->event : PRESSURE_NONE);

                if (!scope_handled(vm, host) || !vm_managed(vm))
                        continue;
                if (vm->knobs->preset == POLICY_PRESET_SEED)
                        seed_event(vm, level, POLICY_REASON_SCOPE_PRESSURE, now);
                /* A guest growing into its memory stalls its own scope too (it touches pages the
                 * host swapped out): inflating it then would only take what it is about to use.
                 * And a scope stall can come from growth the last sample has not seen yet: one
                 * step per guest-stats sample, so the next step sees what the last one did. */
                else if (!vm_held_off(vm, level, now) && !vm->guest_pressure &&
                         (vm->state.scope_take_stats_usec == 0 || vm->state.scope_take_stats_usec != vm->state.last_stats_usec) &&
                         vm_take(vm, vm_step(vm, level, stats_fresh(vm, now)), POLICY_REASON_SCOPE_PRESSURE, level, now) > 0)
                        vm->state.scope_take_stats_usec = vm->state.last_stats_usec;
        }

        bool psi_share = !budget->valid ||
                balance < (int64_t) MAX(MOVE_GRANULE_BYTES, budget->capacity_bytes / BUDGET_SLACK_DIVISOR);
        if (host_event) {
                for (size_t i = 0; i < n_vms; i++)
                        if (vms[i].knobs->preset == POLICY_PRESET_SEED && vm_managed(vms + i) && !scope_handled(vms + i, host))
                                seed_event(vms + i, host->event, POLICY_REASON_HOST_PRESSURE, now);
                /* With a budget, PSI says when and the budget says how much: the take below. A
                 * stall while the budget shows no deficit is reclaim the budget cannot see (a
                 * guest refaulting what the host swapped earlier, cache thrashing that
                 * MemAvailable counts as free): then the PSI share, as without a budget, above
                 * each guest's working-set peak, but one level step per event: with room in the
                 * budget, events in a row are no sign that the last step was too small. */
                host->rest_level = PRESSURE_NONE;
                if (psi_share && host_event_share(host, vms, n_vms, host->event, !budget->valid, SHARE_EVENT, now)) {
                        host->rest_level = host->event;
                        host->rest_usec = now;
                }
        } else if (level_valid_event(host->rest_level)) {
                /* The rest of an event decided on blind steps: once the stats asked for are in,
                 * or when the wait is over with what is in. Too late (a lost timer, a clock
                 * stepped back), the next event decides. */
                if (now < host->rest_usec || now > host->rest_usec + POLICY_REST_MAX_USEC)
                        host->rest_level = PRESSURE_NONE;
                else if (!host->stats_pending || now >= host->rest_usec + POLICY_REST_WAIT_USEC) {
                        if (psi_share)
                                (void) host_event_share(host, vms, n_vms, host->rest_level, !budget->valid, SHARE_REST, now);
                        host->rest_level = PRESSURE_NONE;
                }
        }

        /* Giving back. Recovery: a guest is quiet when neither the host nor its scope is under
         * pressure; it grows after the cool-down, one step per interval. A guest under pressure of
         * its own is the first to get memory back: it skips the cool-down, and unless the host is
         * critical it gets bigger steps while its latest sample shows the need (it
         * would otherwise deflate itself, slower, or OOM). At critical host pressure nobody grows. */
        bool host_not_critical = host->level < PRESSURE_CRITICAL && host->event < PRESSURE_CRITICAL;
        uint64_t relief_uncovered = 0, strict_spare = UINT64_MAX;
        /* Without swap, relief past the room only as far as the idle guests can cover it: beyond
         * that it would be the host's OOM killer taking a whole VM instead of the guest's own
         * taking a process (measured: a growing guest's relief ran the host into its limit). */
        if (budget->valid && !budget->swap_capable) {
                strict_spare = 0;
                for (size_t i = 0; i < n_vms; i++)
                        if (budget_donor(vms + i, MAX(host->event, host->level), false, now))
                                strict_spare = add_sat(strict_spare, budget_limit(vms + i, BUDGET_TAKE_STRICT, now));
        }
        for (size_t n = 0; n < 2 * n_vms; n++) {
                /* Guests in need first: they have the first claim on the room there is. */
                bool relief_pass = n < n_vms;
                PolicyVM *vm = vms + n % n_vms;
                const PolicyKnobs *k = vm->knobs;
                const PolicyVMState *st = &vm->state;
                uint64_t max = policy_vm_maximum(vm);
                /* Relief only while the latest sample still shows the need, not for the whole
                 * sticky period: under host pressure we give what is asked for, no more. */
                bool relief = vm->guest_pressure && host_not_critical && k->guest_pressure_permille > 0 &&
                              st->guest_pressure_usec >= st->last_stats_usec;

                /* Its own scope's pressure does not stop relief: a guest growing into pages the
                 * host swapped out stalls its scope because it needs them. */
                if (relief != relief_pass)
                        continue;
                if (!vm_managed(vm) || k->preset != POLICY_PRESET_DEFAULT || vm->new_target_bytes >= max)
                        continue;
                if (!relief && (!host_quiet || vm->scope_level != PRESSURE_NONE || level_valid_event(vm->scope_event)))
                        continue;
                if (vm->reason != POLICY_REASON_NONE && vm->reason != POLICY_REASON_ADOPT_SELF_DEFLATE &&
                    vm->reason != POLICY_REASON_BOUNDS)
                        continue;   /* moved down by an event this very call */

                usec_t at = 0, delay = policy_vm_recovery_delay(vm);
                if (!vm->guest_pressure) {
                        if (host->last_pressure_usec != 0)
                                at = MAX(at, host->last_pressure_usec + delay);
                        if (st->last_event_usec != 0)
                                at = MAX(at, st->last_event_usec + delay);
                }
                /* Spaced from the last growth: a take in between (host pressure acting on
                 * stale stats) must not delay relief for a guest that turned out to be growing. */
                if (st->last_grow_usec != 0)
                        at = MAX(at, st->last_grow_usec + k->recovery_interval_usec);

                /* After an adoption or a bounds fix this call, the step starts from there. */
                if (at <= now || (relief && vm->reason == POLICY_REASON_ADOPT_SELF_DEFLATE)) {
                        uint64_t step = permille_of(vm->ram_bytes, relief ? MAX(k->guest_pressure_permille, k->recovery_permille)
                                                                          : k->recovery_permille);
                        /* A guest growing faster than the step gets twice its last growth: the
                         * next sample should find it with room, not in reclaim. */
                        if (relief)
                                step = MAX(step, add_sat(st->used_growth_bytes, st->used_growth_bytes));
                        step = MIN(MAX(step, MOVE_GRANULE_BYTES), max - vm->new_target_bytes);
                        /* With a budget, memory goes back only into room that can hold it: a
                         * guest in need gets its step all the same (the room there is, and what
                         * is missing is taken from the idle guests below); recovery waits for
                         * room. */
                        bool go = true;
                        if (budget->valid) {
                                uint64_t covered = MIN(step, room);
                                if (relief) {
                                        uint64_t uncovered = MIN(step - covered, strict_spare);
                                        if (strict_spare != UINT64_MAX)
                                                strict_spare -= uncovered;
                                        step = covered + uncovered;
                                        go = step >= MOVE_GRANULE_BYTES;
                                        relief_uncovered = add_sat(relief_uncovered, uncovered);
                                        room -= covered;
                                } else if (step > sub_sat(room, budget->reserve_bytes / 2))
                                        go = false;   /* the half reserve a take restores is not room */
                                else
                                        room -= step;
                        }
                        /* After an adoption the move is still the adoption (relief on top of it):
                         * the log says why the guest grew, "it deflated itself". */
                        PolicyReason reason = vm->reason == POLICY_REASON_ADOPT_SELF_DEFLATE ? vm->reason :
                                              relief ? POLICY_REASON_GUEST_PRESSURE : POLICY_REASON_RECOVERY;
                        if (go) {
                                vm_move(vm, vm->new_target_bytes + step, reason, PRESSURE_NONE, now);
                                if (!relief) {
                                        vm->state.last_recovery_usec = now;
                                        vm->state.recovered_bytes = add_sat(vm->state.recovered_bytes, step);
                                        vm->state.recovered_usec = now;
                                }
                        }
                        at = now + k->recovery_interval_usec;
                }

                if (vm->new_target_bytes < max)
                        next = MIN(next, at);
        }

        /* Take what the host is over, and what guests in need got beyond the room. */
        if (budget->valid) {
                uint64_t slack = MAX(MOVE_GRANULE_BYTES, budget->capacity_bytes / BUDGET_SLACK_DIVISOR);
                /* Over the line, the take restores half a reserve beyond it: a host that is over
                 * is most often still growing (a workload ramping up, a cache filling), and a
                 * take of exactly the excess leaves the next burst no headroom at all (measured on
                 * real guests: the host sat at its line and swapped the next 50 MiB/s while
                 * each take chased the last sample). Recovery does not undo it: it waits its
                 * cool-down after a take. */
                uint64_t over = balance >= (int64_t) slack ? add_sat((uint64_t) balance, budget->reserve_bytes / 2) : 0;
                over = add_sat(over, relief_uncovered);
                PressureLevel level = MAX(host->event, host->level);
                bool managed = false;

                /* Recovery waits its cool-down after a take for a host over budget; a transfer to
                 * a guest in need is no sign of that, and must not hold up everyone's recovery. */
                if (over >= slack && budget_take(vms, n_vms, over, level,
                                                 budget->swap_capable ? BUDGET_TAKE_HELD : BUDGET_TAKE_STRICT, now) > 0 &&
                    balance >= (int64_t) slack)
                        host->last_pressure_usec = now;
                /* Near the line (less than one reserve of room): memory a guest holds on the host
                 * and does not use (touched and freed, or cache) is what the next burst needs as
                 * headroom. Take it from the guests before anyone is over: on real guests a
                 * 300 MiB page-cache fill in two seconds went to swap because the take had
                 * stopped at the line while another guest still held 300 MiB it had freed, and a
                 * 300 MiB touch went to swap while a third sat on 300 MiB of cache. The guest
                 * loses nothing it uses (cache it reads again, at worst); it gets memory back as
                 * it grows. */
                if (balance > -(int64_t) MIN(budget->reserve_bytes, (uint64_t) INT64_MAX / 2))
                        (void) budget_take(vms, n_vms, UINT64_MAX / 2, level, BUDGET_TAKE_IDLE, now);
                for (size_t i = 0; i < n_vms && !managed; i++)
                        managed = vm_managed(vms + i) && vms[i].knobs->preset == POLICY_PRESET_DEFAULT;
                /* Over budget, or less than two reserves of room left: look again at the next
                 * stats interval. With more room than that and every VM at its maximum, no timer. */
                if (managed && budget->interval_usec > 0 &&
                    (over >= slack || balance > -(int64_t) MIN(2 * budget->reserve_bytes, (uint64_t) INT64_MAX / 2)))
                        next = MIN(next, now + budget->interval_usec);
        }

        if (level_valid_event(host->rest_level))
                next = MIN(next, host->rest_usec + POLICY_REST_WAIT_USEC);
        return next;
}
