/* The policy's promises, checked on hand-made cases and on >= 100,000 random snapshots. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "policy.h"
#include "policy-test-util.h"

#define POLICY_TEST_SEED_DEFAULT 0x9e3779b97f4a7c15ULL

/* ---- helpers ---------------------------------------------------------------------------- */

static usec_t sub_now(usec_t now, usec_t d) {
        return now > d ? now - d : 1;
}

static void vm_init(PolicyVM *vm, const PolicyKnobs *k, uint64_t ram_bytes) {
        *vm = (PolicyVM) {
                .knobs = k,
                .ram_bytes = ram_bytes,
                .actual_bytes = ram_bytes,
                .target_bytes = ram_bytes,
                .controllable = true,
        };
        guest_stats_init(&vm->stats);
}

static void vm_stats(PolicyVM *vm, usec_t now, uint64_t available_bytes) {
        vm->stats.valid = true;
        vm->stats.updated_usec = now;
        vm->stats.total_bytes = vm->ram_bytes;
        vm->stats.available_bytes = available_bytes;
        vm->stats.free_bytes = available_bytes / 2;
        vm->stats.caches_bytes = available_bytes / 2;
}

/* The daemon's side of a call: apply the decision. */
static void vm_apply(PolicyVM *vm) {
        vm->target_bytes = vm->new_target_bytes;
        vm->actual_bytes = vm->new_target_bytes;
}

/* ---- tables and strings ----------------------------------------------------------------- */

static void test_strings(void **state) {
        for (int i = 0; i < _PRESSURE_LEVEL_MAX; i++)
                assert_int_equal(pressure_level_from_string(pressure_level_to_string(i)), i);
        for (int i = 0; i < _POLICY_PRESET_MAX; i++)
                assert_int_equal(policy_preset_from_string(policy_preset_to_string(i)), i);
        for (int i = 0; i < _POLICY_REASON_MAX; i++)
                assert_non_null(policy_reason_to_string(i));
        assert_string_equal(policy_preset_to_string(POLICY_PRESET_SEED), "seed");
        assert_string_equal(pressure_level_to_string(PRESSURE_CRITICAL), "critical");
        assert_int_equal(pressure_level_from_string("severe"), _PRESSURE_LEVEL_INVALID);
        assert_int_equal(policy_preset_from_string(NULL), _POLICY_PRESET_INVALID);
        assert_null(pressure_level_to_string(_PRESSURE_LEVEL_MAX));
        assert_null(policy_reason_to_string(_POLICY_REASON_MAX));
}

static void test_bounds_defaults(void **state) {
        PolicyKnobs k;
        PolicyVM vm;

        policy_knobs_init_default(&k);
        vm_init(&vm, &k, 4 * GIB);
        assert_int_equal(policy_vm_maximum(&vm), 4 * GIB);
        assert_int_equal(policy_vm_minimum(&vm), 1 * GIB);
        k.maximum_bytes = 8 * GIB;   /* above RAM: the balloon cannot give more than RAM */
        assert_int_equal(policy_vm_maximum(&vm), 4 * GIB);
        k.maximum_bytes = 3 * GIB;
        k.minimum_bytes = 3500 * MIB;   /* above maximum: maximum wins */
        assert_int_equal(policy_vm_minimum(&vm), 3 * GIB);
}

/* ---- behaviour on hand-made cases ------------------------------------------------------- */

static void test_seed_exact_steps(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        k.preset = POLICY_PRESET_SEED;
        vm_init(&vm, &k, 2 * GIB);
        vm_stats(&vm, now, 1 * GIB);

        for (PressureLevel l = PRESSURE_LOW; l <= PRESSURE_CRITICAL; l++)
                for (int i = 0; i < 5; i++) {
                        uint64_t before = vm.target_bytes;
                        host.event = host.level = l;
                        now += USEC_PER_SEC;
                        assert_int_equal(policy_decide(&host, &vm, 1, now), USEC_INFINITY);
                        assert_int_equal(before - vm.new_target_bytes, (uint64_t) 1 << (l - 1) << 20);
                        assert_int_equal(vm.reason, POLICY_REASON_HOST_PRESSURE);
                        vm_apply(&vm);
                }

        /* Nothing else: no recovery, however long it stays quiet. */
        host.event = host.level = PRESSURE_NONE;
        for (int i = 0; i < 10; i++) {
                now += 600 * USEC_PER_SEC;
                assert_int_equal(policy_decide(&host, &vm, 1, now), USEC_INFINITY);
                assert_int_equal(vm.new_target_bytes, vm.target_bytes);
        }

        /* At the minimum it stops: a step that would cross it is not taken at all. */
        vm.target_bytes = vm.actual_bytes = policy_vm_minimum(&vm) + 3 * MIB;
        host.event = host.level = PRESSURE_CRITICAL;
        policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
        assert_int_equal(vm.new_target_bytes, vm.target_bytes);
        host.event = PRESSURE_MEDIUM;
        policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
        assert_int_equal(vm.new_target_bytes, vm.target_bytes - 2 * MIB);
}

static void test_default_scales_and_escalates(void **state) {
        PolicyKnobs k;
        PolicyVM vm[2];
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        vm_init(&vm[0], &k, 4 * GIB);
        vm_init(&vm[1], &k, 16 * GIB);
        /* Both mostly idle: the same share of RAM available, so both give a full step. */
        vm_stats(&vm[0], now, 3 * GIB);
        vm_stats(&vm[1], now, 12 * GIB);

        host.event = host.level = PRESSURE_LOW;
        policy_decide(&host, vm, 2, now);
        uint64_t step0 = 4 * GIB - vm[0].new_target_bytes, step1 = 16 * GIB - vm[1].new_target_bytes;
        assert_true(step0 >= 40 * MIB && step0 <= 41 * MIB);   /* 1 % of 4 GiB, granule-rounded */
        assert_true(step1 >= 4 * step0 - 4 * MIB && step1 <= 4 * step0 + 4 * MIB);
        assert_int_equal(vm[0].reason, POLICY_REASON_HOST_PRESSURE);
        assert_int_equal(vm[0].reason_level, PRESSURE_LOW);

        /* A second event in a row: the last step was not enough, so it doubles. */
        for (int i = 0; i < 2; i++) {
                vm_apply(&vm[i]);
                vm_stats(&vm[i], now + USEC_PER_SEC, vm[i].actual_bytes - (i ? 4 : 1) * GIB);
        }
        now += USEC_PER_SEC;
        uint64_t before = vm[0].target_bytes;
        policy_decide(&host, vm, 2, now);
        uint64_t second = before - vm[0].new_target_bytes;
        assert_true(second >= 2 * step0 - 2 * MIB && second <= 2 * step0 + MIB);

        /* After relief (a call at level NONE), the next event starts small again. */
        for (int i = 0; i < 2; i++)
                vm_apply(&vm[i]);
        host.event = host.level = PRESSURE_NONE;
        policy_decide(&host, vm, 2, now += USEC_PER_SEC);
        host.event = host.level = PRESSURE_LOW;
        before = vm[0].target_bytes;
        policy_decide(&host, vm, 2, now += USEC_PER_SEC);
        assert_true(before - vm[0].new_target_bytes <= step0);
}

static void test_working_set_and_victims(void **state) {
        PolicyKnobs k;
        PolicyVM vm[3];
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        for (int i = 0; i < 3; i++)
                vm_init(&vm[i], &k, 4 * GIB);
        vm_stats(&vm[0], now, 3 * GIB);        /* idle: the donor */
        vm_stats(&vm[1], now, 150 * MIB);      /* at its working set already */
        vm_stats(&vm[2], now, 2 * GIB);        /* spare, but growing fast: its own pressure */

        /* Teach the policy vm[2]'s trend: one sample, then 500 MiB more used. */
        policy_decide(&host, vm, 3, now);
        vm_stats(&vm[2], now + 2 * USEC_PER_SEC, 1536 * MIB);
        vm_stats(&vm[0], now + 2 * USEC_PER_SEC, 3 * GIB);
        vm_stats(&vm[1], now + 2 * USEC_PER_SEC, 150 * MIB);
        now += 2 * USEC_PER_SEC;

        host.event = host.level = PRESSURE_MEDIUM;
        policy_decide(&host, vm, 3, now);
        assert_true(vm[0].new_target_bytes < vm[0].target_bytes);
        assert_int_equal(vm[1].new_target_bytes, vm[1].target_bytes);   /* reserve 204.8 MiB > 150 */
        assert_true(vm[2].guest_pressure);
        assert_int_equal(vm[2].new_target_bytes, vm[2].target_bytes);   /* last victim */

        /* Critical, and nobody else can give: then the last victim gives, above its floor. */
        vm_stats(&vm[0], now, 100 * MIB);
        host.event = host.level = PRESSURE_CRITICAL;
        policy_decide(&host, vm, 3, now += USEC_PER_SEC);
        assert_int_equal(vm[0].new_target_bytes, vm[0].target_bytes);
        assert_true(vm[2].new_target_bytes < vm[2].target_bytes);
        assert_true(vm[2].new_target_bytes >= vm[2].floor_bytes);
}

/* The guest's own signals (Linux 6.12 counters, refaults, swap-in) make it a last victim. */
static void test_guest_counters(void **state) {
        static const size_t offsets[] = {
                offsetof(GuestStats, alloc_stalls), offsetof(GuestStats, direct_scan),
                offsetof(GuestStats, direct_reclaim), offsetof(GuestStats, oom_kills),
                offsetof(GuestStats, swap_in_bytes), offsetof(GuestStats, major_faults),
        };
        PolicyKnobs k;

        policy_knobs_init_default(&k);
        for (size_t c = 0; c < ELEMENTSOF(offsets); c++) {
                PolicyVM vm[2];
                PolicyHost host = {};
                usec_t now = 1000 * USEC_PER_SEC;

                for (int i = 0; i < 2; i++) {
                        vm_init(&vm[i], &k, 4 * GIB);
                        vm_stats(&vm[i], now, 3 * GIB);
                        *(uint64_t *) ((char *) &vm[i].stats + offsets[c]) = 100;
                }
                policy_decide(&host, vm, 2, now);
                for (int i = 0; i < 2; i++)
                        vm_stats(&vm[i], now + 2 * USEC_PER_SEC, 3 * GIB);
                /* +1 of a count, +1 byte of swap-in; faults: 5000 in 2 s, over the 500/s rate */
                *(uint64_t *) ((char *) &vm[1].stats + offsets[c]) = c == 5 ? 100 + 5000 : 101;

                host.event = host.level = PRESSURE_MEDIUM;
                policy_decide(&host, vm, 2, now + 2 * USEC_PER_SEC);
                assert_false(vm[0].guest_pressure);
                assert_true(vm[1].guest_pressure);
                assert_true(vm[0].new_target_bytes < vm[0].target_bytes);
                assert_int_equal(vm[1].new_target_bytes, vm[1].target_bytes);
        }
}

static void test_no_stats_conservative(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = { .event = PRESSURE_CRITICAL, .level = PRESSURE_CRITICAL };
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        vm_init(&vm, &k, 4 * GIB);
        for (int i = 0; i < 200; i++) {
                uint64_t before = vm.target_bytes;
                policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
                /* At most a first low step, whatever the level and however many in a row. */
                assert_true(before - vm.new_target_bytes <= 4 * GIB / 100);
                assert_true(vm.new_target_bytes >= policy_vm_minimum(&vm));
                vm_apply(&vm);
        }
        assert_int_equal(vm.target_bytes, policy_vm_minimum(&vm));

        /* Stale stats are no stats. */
        vm_init(&vm, &k, 4 * GIB);
        vm_stats(&vm, now - 10 * 60 * USEC_PER_SEC, 3 * GIB);
        policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
        assert_true(vm.target_bytes - vm.new_target_bytes <= 4 * GIB / 100);
}

static void test_scope_pressure_that_vm(void **state) {
        PolicyKnobs k;
        PolicyVM vm[2];
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        for (int i = 0; i < 2; i++) {
                vm_init(&vm[i], &k, 4 * GIB);
                vm_stats(&vm[i], now, 3 * GIB);
        }
        vm[1].scope_event = vm[1].scope_level = PRESSURE_MEDIUM;
        policy_decide(&host, vm, 2, now);
        assert_int_equal(vm[0].new_target_bytes, vm[0].target_bytes);
        assert_true(vm[1].new_target_bytes < vm[1].target_bytes);
        assert_int_equal(vm[1].reason, POLICY_REASON_SCOPE_PRESSURE);
        assert_int_equal(host.last_pressure_usec, 0);
}

static void test_self_deflate_hold_off(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        k.working_set_window_usec = 0;   /* the floor follows current use: room for each step */
        vm_init(&vm, &k, 4 * GIB);
        vm.target_bytes = vm.actual_bytes = 2 * GIB;
        vm_stats(&vm, now, 1 * GIB);
        host.level = PRESSURE_CRITICAL;   /* no recovery, no relief: only the adoption shows */
        policy_decide(&host, &vm, 1, now);

        vm.actual_bytes = 2 * GIB + 256 * MIB;    /* the guest's shrinker gave itself 256 MiB */
        vm_stats(&vm, now + USEC_PER_SEC, 1 * GIB);
        policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
        assert_int_equal(vm.new_target_bytes, vm.actual_bytes);
        assert_int_equal(vm.reason, POLICY_REASON_ADOPT_SELF_DEFLATE);
        assert_true(vm.guest_pressure);

        /* Below critical, the same adoption comes with relief on top: it was a guest in need. */
        {
                PolicyVM again = vm;
                again.state.last_actual_bytes = 2 * GIB;
                again.state.last_grow_usec = 0;   /* as before the adoption: no grow of ours landing */
                host.level = PRESSURE_MEDIUM;
                policy_decide(&host, &again, 1, now);
                assert_int_equal(again.reason, POLICY_REASON_ADOPT_SELF_DEFLATE);
                assert_true(again.new_target_bytes > vm.actual_bytes);
                host.level = PRESSURE_LOW;
        }
        vm_apply(&vm);

        /* Low and medium events within the hold-off do not inflate it (it may even get more:
         * a guest that had to deflate itself is one in need) ... */
        for (PressureLevel l = PRESSURE_LOW; l <= PRESSURE_MEDIUM; l++) {
                host.event = host.level = l;
                policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
                assert_true(vm.new_target_bytes >= vm.target_bytes);
                vm_apply(&vm);
        }
        /* ... critical does not. */
        host.event = host.level = PRESSURE_CRITICAL;
        policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
        assert_true(vm.new_target_bytes < vm.target_bytes);
        vm_apply(&vm);

        /* After the hold-off, medium inflates again. */
        host.event = host.level = PRESSURE_MEDIUM;
        vm_stats(&vm, now + k.hold_off_usec, 1 * GIB);
        policy_decide(&host, &vm, 1, now += k.hold_off_usec);
        assert_true(vm.new_target_bytes < vm.target_bytes);
}

/* A guest between two bursts looks idle; its floor remembers the burst for WorkingSetWindowSec=. */
static void test_working_set_window(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t burst = 1000 * USEC_PER_SEC, now;

        policy_knobs_init_default(&k);
        k.working_set_window_usec = 300 * USEC_PER_SEC;   /* off by default; the mechanism stays */
        vm_init(&vm, &k, 4 * GIB);
        vm_stats(&vm, burst, 1 * GIB);            /* the burst: 3 GiB used */
        policy_decide(&host, &vm, 1, burst);

        /* A minute later it uses 1 GiB, and the host is critical for 20 s. */
        host.event = host.level = PRESSURE_CRITICAL;
        now = burst + 60 * USEC_PER_SEC;
        for (int i = 0; i < 20; i++) {
                vm_stats(&vm, now, vm.actual_bytes - 1 * GIB);
                policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
                vm_apply(&vm);
        }
        /* Never below the burst's 3 GiB plus the reserve (10 % of 4 GiB) ... */
        assert_true(vm.target_bytes >= 3 * GIB + 4 * GIB / 10 - MIB);
        assert_true(vm.target_bytes < 4 * GIB);

        /* ... until the window has passed without another burst. */
        now = burst + k.working_set_window_usec + USEC_PER_SEC;
        for (int i = 0; i < 20; i++) {
                vm_stats(&vm, now, vm.actual_bytes - 1 * GIB);
                policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
                vm_apply(&vm);
        }
        assert_true(vm.target_bytes < 2 * GIB);
        assert_true(vm.target_bytes >= 1 * GIB + 4 * GIB / 10 - MIB);
}

/* A host-pressure take on stale stats must not delay relief for a guest that turns out to be
 * growing; a scope event during host pressure goes through the host-wide share. */
static void test_relief_after_take(void **state) {
        PolicyKnobs k;
        PolicyVM vm[2];
        PolicyHost host = { .event = PRESSURE_LOW, .level = PRESSURE_LOW };
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        for (int i = 0; i < 2; i++) {
                vm_init(&vm[i], &k, 8 * GIB);
                vm[i].target_bytes = vm[i].actual_bytes = 5 * GIB;   /* squeezed in an earlier episode */
                vm_stats(&vm[i], now, 3 * GIB);
        }
        policy_decide(&host, vm, 2, now);
        for (int i = 0; i < 2; i++)
                vm_apply(&vm[i]);

        /* vm[1]'s scope stalls (it starts a burst): with the host under pressure too, that is
         * no reason to take from it first; it is taken from like vm[0], by score. */
        vm[1].scope_event = vm[1].scope_level = PRESSURE_CRITICAL;
        policy_decide(&host, vm, 2, now += USEC_PER_SEC);
        assert_int_equal(vm[1].reason, POLICY_REASON_HOST_PRESSURE);
        assert_int_equal(vm[0].target_bytes - vm[0].new_target_bytes, vm[1].target_bytes - vm[1].new_target_bytes);
        for (int i = 0; i < 2; i++)
                vm_apply(&vm[i]);

        /* The next sample shows the burst: 1 GiB more used in a second. Relief at once, twice
         * the growth, although the last move (the take) was a second ago. */
        vm[1].scope_event = PRESSURE_NONE;
        vm_stats(&vm[0], now + USEC_PER_SEC, vm[0].actual_bytes - 2 * GIB);
        vm_stats(&vm[1], now + USEC_PER_SEC, vm[1].actual_bytes - 2 * GIB - 1 * GIB);
        host.event = PRESSURE_NONE;
        uint64_t before = vm[1].target_bytes;
        usec_t t = policy_decide(&host, vm, 2, now += USEC_PER_SEC);
        assert_true(vm[1].guest_pressure);
        assert_int_equal(vm[1].reason, POLICY_REASON_GUEST_PRESSURE);
        assert_int_equal(vm[1].new_target_bytes, before + 2 * GIB);     /* twice its growth */
        assert_int_equal(vm[0].new_target_bytes, vm[0].target_bytes);   /* host still at low */
        assert_int_equal(t, now + k.recovery_interval_usec);
}

/* Applies a decision to n guests: the daemon sends it, the guest has not followed yet. */
static void vms_send(PolicyVM *vm, size_t n) {
        for (size_t i = 0; i < n; i++)
                vm[i].target_bytes = vm[i].new_target_bytes;
}

/* Two stale guests hit by the event 100 s after the last case: the blind steps sent. */
static usec_t blind_pair(PolicyHost *host, const PolicyHost *event, PolicyVM *vm, const PolicyKnobs *k, usec_t now) {
        for (int i = 0; i < 2; i++)
                vm_init(&vm[i], k, 4 * GIB);
        now += 100 * USEC_PER_SEC;
        *host = *event;
        policy_decide(host, vm, 2, now);
        vms_send(vm, 2);
        return now;
}

/* A host event that finds a guest without fresh stats: every guest gives at most a blind low step
 * at once, and the rest of the event, once the stats asked for are in, brings each to the target
 * the event gives with the stats at hand. */
static void test_blind_then_rest(void **state) {
        PolicyKnobs k;
        PolicyVM informed[2], vm[2];
        PolicyHost event = { .event = PRESSURE_CRITICAL, .level = PRESSURE_CRITICAL }, host;
        usec_t now = 1000 * USEC_PER_SEC, t;
        uint64_t low, avail[2] = { 600 * MIB, 3 * GIB };

        policy_knobs_init_default(&k);
        low = 4 * GIB / 1000 * k.step_permille[PRESSURE_LOW];
        low -= low % MIB;

        /* Two guests with stats at hand: the one with 3 GiB free gives a full critical step, the
         * one with 600 MiB free much less. */
        for (int i = 0; i < 2; i++) {
                vm_init(&informed[i], &k, 4 * GIB);
                vm_stats(&informed[i], now, avail[i]);
        }
        host = event;
        policy_decide(&host, informed, 2, now);
        assert_int_equal(host.rest_level, PRESSURE_NONE);
        assert_true(4 * GIB - informed[1].new_target_bytes > 4 * low);
        assert_true(4 * GIB - informed[0].new_target_bytes < low);

        /* The same without stats: the blind low step from both at once ... */
        for (int i = 0; i < 2; i++)
                vm_init(&vm[i], &k, 4 * GIB);
        host = event;
        policy_decide(&host, vm, 2, now);
        assert_int_equal(host.rest_level, PRESSURE_CRITICAL);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(vm[i].reason, POLICY_REASON_HOST_PRESSURE);
                assert_int_equal(4 * GIB - vm[i].new_target_bytes, low);
        }
        vms_send(vm, 2);
        /* ... nothing while stats are awaited, the first guest's in or not; the call says when
         * the wait ends ... */
        host.event = PRESSURE_NONE;
        host.stats_pending = true;
        t = policy_decide(&host, vm, 2, now + 5 * USEC_PER_MSEC);
        assert_true(t <= now + POLICY_REST_WAIT_USEC);
        vm_stats(&vm[0], now + 10 * USEC_PER_MSEC, avail[0]);
        policy_decide(&host, vm, 2, now + 10 * USEC_PER_MSEC);
        for (int i = 0; i < 2; i++)
                assert_int_equal(vm[i].new_target_bytes, vm[i].target_bytes);
        /* ... and with both in, the targets of the informed event, the blind step included (the
         * guest with little to spare has given more than its share: the blind step is all). */
        vm_stats(&vm[1], now + 20 * USEC_PER_MSEC, avail[1]);
        host.stats_pending = false;
        policy_decide(&host, vm, 2, now + 20 * USEC_PER_MSEC);
        assert_int_equal(host.rest_level, PRESSURE_NONE);
        assert_int_equal(vm[1].reason, POLICY_REASON_HOST_PRESSURE);
        assert_int_equal(vm[1].reason_level, PRESSURE_CRITICAL);
        assert_int_equal(vm[1].new_target_bytes, informed[1].new_target_bytes);
        assert_int_equal(vm[0].new_target_bytes, MIN(informed[0].new_target_bytes, 4 * GIB - low));
        assert_int_equal(vm[1].state.consecutive_events, informed[1].state.consecutive_events);
        vms_send(vm, 2);
        policy_decide(&host, vm, 2, now + 40 * USEC_PER_MSEC);
        for (int i = 0; i < 2; i++)
                assert_int_equal(vm[i].new_target_bytes, vm[i].target_bytes);

        /* One guest with stats, one without: the one with stats does not give a full step for
         * lack of a better donor; the rest shares it with the other's stats. */
        for (int i = 0; i < 2; i++)
                vm_init(&vm[i], &k, 4 * GIB);
        now += 100 * USEC_PER_SEC;
        vm_stats(&vm[0], now, avail[0]);
        host = event;
        policy_decide(&host, vm, 2, now);
        assert_true(4 * GIB - vm[0].new_target_bytes <= low);
        vms_send(vm, 2);
        vm_stats(&vm[1], now + 10 * USEC_PER_MSEC, avail[1]);
        host.event = PRESSURE_NONE;
        policy_decide(&host, vm, 2, now + 10 * USEC_PER_MSEC);
        assert_int_equal(vm[1].new_target_bytes, informed[1].new_target_bytes);
        assert_true(vm[0].new_target_bytes >= MIN(informed[0].new_target_bytes, 4 * GIB - low));

        /* The wait is bounded: a guest that does not answer gives the blind step, the other its
         * rest; a scope event meanwhile does not cancel it. */
        now = blind_pair(&host, &event, vm, &k, now);
        host.event = PRESSURE_NONE;
        host.stats_pending = true;
        vm[1].scope_event = vm[1].scope_level = PRESSURE_LOW;
        vm_stats(&vm[1], now + 10 * USEC_PER_MSEC, avail[1]);
        policy_decide(&host, vm, 2, now + 10 * USEC_PER_MSEC);
        assert_int_equal(host.rest_level, PRESSURE_CRITICAL);
        vm[1].scope_event = PRESSURE_NONE;
        vms_send(vm, 2);
        policy_decide(&host, vm, 2, now + POLICY_REST_WAIT_USEC);
        assert_int_equal(host.rest_level, PRESSURE_NONE);
        assert_int_equal(vm[0].new_target_bytes, vm[0].target_bytes);
        assert_true(vm[1].new_target_bytes < vm[1].target_bytes);

        /* Stats that come after POLICY_REST_MAX_USEC (no call in between): the next event decides. */
        now = blind_pair(&host, &event, vm, &k, now);
        vm_stats(&vm[1], now + POLICY_REST_MAX_USEC + 1, avail[1]);
        host.event = PRESSURE_NONE;
        policy_decide(&host, vm, 2, now + POLICY_REST_MAX_USEC + 1);
        assert_int_equal(host.rest_level, PRESSURE_NONE);
        assert_int_equal(vm[1].new_target_bytes, vm[1].target_bytes);

        /* At critical, a guest under pressure of its own gives when nobody else has anything:
         * the blind step of the other (at its floor, it turns out) does not count as something. */
        for (int i = 0; i < 2; i++)
                vm_init(&vm[i], &k, 4 * GIB);
        now += 100 * USEC_PER_SEC;
        vm_stats(&vm[0], now, avail[1]);
        vm[0].state.guest_pressure_usec = now;   /* P: in need, 3 GiB free */
        host = event;
        policy_decide(&host, vm, 2, now);
        assert_true(vm[0].guest_pressure);
        assert_int_equal(vm[0].new_target_bytes, 4 * GIB);
        assert_int_equal(4 * GIB - vm[1].new_target_bytes, low);
        vms_send(vm, 2);
        vm_stats(&vm[0], now + 10 * USEC_PER_MSEC, avail[1]);
        vm_stats(&vm[1], now + 10 * USEC_PER_MSEC, 64 * MIB);   /* C: at its floor */
        host.event = PRESSURE_NONE;
        policy_decide(&host, vm, 2, now + 10 * USEC_PER_MSEC);
        assert_int_equal(vm[0].reason, POLICY_REASON_HOST_PRESSURE);
        assert_true(vm[0].new_target_bytes < 4 * GIB);
}

/* Several events between two guest-stats samples: the old sample's "available" predates our
 * own inflation, and must not make the guest look smaller by what we just took. */
static void test_stale_sample_after_inflate(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        k.working_set_window_usec = 0;            /* the peak would hide it: current use only */
        vm_init(&vm, &k, 4 * GIB);
        vm_stats(&vm, now, 1536 * MIB);           /* 2.5 GiB used */
        host.event = host.level = PRESSURE_CRITICAL;
        for (int i = 0; i < 10; i++) {
                policy_decide(&host, &vm, 1, now += USEC_PER_SEC);   /* no new sample */
                vm_apply(&vm);
                assert_true(vm.target_bytes >= 2560 * MIB + 4 * GIB / 10);
        }
        assert_true(vm.target_bytes < 3 * GIB);   /* it did take what was there */
}

/* A sample the guest took before our inflation, seen after it (TCG guests, busy hosts): its
 * use looks smaller by what we took, and the next sample seems to grow by as much. That is our
 * own move, not the guest's growth: no guest pressure, no relief that would undo the take. A
 * real growth on top of it still counts. */
static void test_sample_skew_not_growth(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        vm_init(&vm, &k, 512 * MIB);
        vm_stats(&vm, now, 412 * MIB);                  /* 100 MiB used, sample 1 */
        host.level = PRESSURE_MEDIUM;
        policy_decide(&host, &vm, 1, now);
        assert_false(vm.guest_pressure);

        vm.actual_bytes = vm.target_bytes = 461 * MIB;  /* we inflated by 51 MiB ... */
        vm_stats(&vm, now + USEC_PER_SEC, 412 * MIB);   /* ... sample 2 taken before it landed */
        policy_decide(&host, &vm, 1, now += 2 * USEC_PER_SEC);
        assert_false(vm.guest_pressure);

        vm_stats(&vm, now + USEC_PER_SEC, 361 * MIB);   /* sample 3: 100 MiB used, as all along */
        policy_decide(&host, &vm, 1, now += 2 * USEC_PER_SEC);
        assert_false(vm.guest_pressure);
        assert_int_equal(vm.new_target_bytes, vm.target_bytes);

        vm_stats(&vm, now + USEC_PER_SEC, 311 * MIB);   /* sample 4: the guest really grew 50 MiB */
        policy_decide(&host, &vm, 1, now += 2 * USEC_PER_SEC);
        assert_true(vm.guest_pressure);
        assert_int_equal(vm.reason, POLICY_REASON_GUEST_PRESSURE);
}

/* A scope event with the host quiet inflates that VM, once per guest-stats sample. */
static void test_scope_once_per_sample(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        vm_init(&vm, &k, 4 * GIB);
        vm_stats(&vm, now, 3 * GIB);
        vm.scope_event = vm.scope_level = PRESSURE_MEDIUM;
        policy_decide(&host, &vm, 1, now);
        assert_int_equal(vm.reason, POLICY_REASON_SCOPE_PRESSURE);
        vm_apply(&vm);
        policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
        assert_int_equal(vm.new_target_bytes, vm.target_bytes);   /* same sample: wait */
        vm_stats(&vm, now, vm.actual_bytes - 1 * GIB);
        policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
        assert_true(vm.new_target_bytes < vm.target_bytes);       /* new sample: next step */
}

/* Drives recovery with the returned timer as the daemon would (counting calls, not sleeping). */
static void test_recovery(void **state) {
        PolicyKnobs k;
        PolicyVM vm[3];
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC, t, relief;

        policy_knobs_init_default(&k);
        for (int i = 0; i < 3; i++) {
                vm_init(&vm[i], &k, 4 * GIB);
                vm[i].target_bytes = vm[i].actual_bytes = 1 * GIB;
                vm_stats(&vm[i], now, 512 * MIB);
        }
        vm_stats(&vm[1], now, 50 * MIB);   /* below half its reserve: in need */

        /* Under (non-critical) host pressure, only the guest in need gets memory back. */
        host.event = host.level = PRESSURE_LOW;
        t = policy_decide(&host, vm, 3, now);
        assert_int_equal(vm[1].reason, POLICY_REASON_GUEST_PRESSURE);
        assert_int_equal(vm[1].new_target_bytes, 1 * GIB + 4 * GIB / 10);
        assert_int_equal(vm[0].new_target_bytes, vm[0].target_bytes);
        assert_int_equal(vm[2].new_target_bytes, vm[2].target_bytes);
        assert_int_equal(t, now + k.recovery_interval_usec);
        for (int i = 0; i < 3; i++)
                vm_apply(&vm[i]);
        /* At critical, nobody grows, and no timer. */
        host.event = host.level = PRESSURE_CRITICAL;
        assert_int_equal(policy_decide(&host, vm, 3, now += k.recovery_interval_usec), USEC_INFINITY);
        assert_true(vm[1].new_target_bytes <= vm[1].target_bytes);
        for (int i = 0; i < 3; i++) {
                vm_apply(&vm[i]);
                vm_stats(&vm[i], now, i == 1 ? 50 * MIB : 512 * MIB);
        }

        host.event = host.level = PRESSURE_NONE;
        relief = now += USEC_PER_SEC;
        t = policy_decide(&host, vm, 3, now);
        /* The guest in need goes first, without waiting for the cool-down. */
        assert_int_equal(vm[1].reason, POLICY_REASON_GUEST_PRESSURE);
        assert_int_equal(vm[0].new_target_bytes, vm[0].target_bytes);
        assert_true(t > now && t <= now + k.recovery_interval_usec);

        unsigned calls = 0;
        usec_t vm1_full = 0;
        while (t != USEC_INFINITY) {
                assert_true(t > now);
                now = t;
                for (int i = 0; i < 3; i++) {
                        vm_apply(&vm[i]);
                        vm_stats(&vm[i], now, i == 1 ? 50 * MIB : 512 * MIB);
                }
                t = policy_decide(&host, vm, 3, now);
                if (!vm1_full && vm[1].new_target_bytes == 4 * GIB)
                        vm1_full = now;
                /* The others never grow before the cool-down. */
                if (vm[0].new_target_bytes > vm[0].target_bytes)
                        assert_true(now >= relief - USEC_PER_SEC + k.recovery_delay_usec);
                assert_true(++calls < 1000);
        }
        for (int i = 0; i < 3; i++) {
                vm_apply(&vm[i]);
                assert_int_equal(vm[i].target_bytes, 4 * GIB);
        }
        /* 3 GiB back at 2.5 % of 4 GiB per 2 s is 30 steps: about a minute after the cool-down,
         * and the guest in need was full a cool-down earlier. */
        assert_true(now <= relief + k.recovery_delay_usec + 31 * k.recovery_interval_usec);
        assert_true(vm1_full <= relief + 31 * k.recovery_interval_usec);
        assert_true(calls <= 70);

        /* Pressure back mid-recovery: the very call that sees it stops growth, and no timer. */
        vm[0].target_bytes = vm[0].actual_bytes = 2 * GIB;
        host.level = PRESSURE_NONE;
        t = policy_decide(&host, vm, 3, now += 100 * USEC_PER_SEC);
        assert_int_equal(vm[0].reason, POLICY_REASON_RECOVERY);
        vm_apply(&vm[0]);
        host.level = PRESSURE_LOW;
        assert_int_equal(policy_decide(&host, vm, 3, now += USEC_PER_SEC), USEC_INFINITY);
        assert_true(vm[0].new_target_bytes <= vm[0].target_bytes);
        vm[0].scope_level = PRESSURE_LOW;   /* and a VM's own scope pressure stops its own growth */
        host.level = PRESSURE_NONE;
        assert_int_equal(policy_decide(&host, vm, 3, now += 100 * USEC_PER_SEC), USEC_INFINITY);
        assert_int_equal(vm[0].new_target_bytes, vm[0].target_bytes);
}

/* ---- randomized properties -------------------------------------------------------------- */

#define N_KNOB_SETS 4
#define VMS_MAX 8
#define TRAJECTORIES 100000
#define CALLS_PER_TRAJECTORY 4
#define IDLE_CASES 100000

static unsigned cases_checked, inflations_checked, seed_moves_checked, floor_checked, recoveries_checked, rests_checked;

static void random_knobs(PolicyKnobs *k) {
        policy_knobs_init_default(k);
        if (rnd_chance(30))
                return;   /* the defaults, as most machines run */
        k->preset = rnd_chance(25) ? POLICY_PRESET_SEED : POLICY_PRESET_DEFAULT;
        k->enabled = !rnd_chance(5);
        k->minimum_bytes = rnd_chance(50) ? 0 : rnd_range(0, 8 * GIB);
        k->maximum_bytes = rnd_chance(50) ? 0 : rnd_range(0, 64 * GIB);
        k->minimum_percent = rnd_range(0, 100);
        k->weight = rnd_range(1, 10000);
        for (int l = PRESSURE_LOW; l < _PRESSURE_LEVEL_MAX; l++) {
                k->step_permille[l] = rnd_range(0, 300);
                if (rnd_chance(50))
                        k->seed_step_bytes[l] = rnd_range(0, 16 * MIB);
        }
        k->step_escalation_max = rnd_range(1, 16);
        k->reserve_bytes = rnd_range(0, 1 * GIB);
        k->reserve_percent = rnd_range(0, 30);
        k->recovery_delay_usec = rnd_range(0, 120 * USEC_PER_SEC);
        k->recovery_delay_max_usec = rnd_chance(30) ? 0 : rnd_range(0, 600 * USEC_PER_SEC);
        k->recovery_permille = rnd_range(1, 300);
        k->recovery_interval_usec = rnd_range(USEC_PER_MSEC, 10 * USEC_PER_SEC);
        k->hold_off_usec = rnd_range(0, 300 * USEC_PER_SEC);
        k->stats_max_age_usec = rnd_range(USEC_PER_SEC, 60 * USEC_PER_SEC);
        k->guest_major_fault_rate = rnd_range(1, 10000);
        k->available_drop_permille = rnd_range(1, 100);
        k->guest_pressure_permille = rnd_range(0, 300);
        k->working_set_window_usec = rnd_range(0, 600 * USEC_PER_SEC);
}

static PressureLevel random_level(unsigned none_percent) {
        return rnd_chance(none_percent) ? PRESSURE_NONE : (PressureLevel) rnd_range(PRESSURE_LOW, PRESSURE_CRITICAL);
}

static void counter_step(uint64_t *c, uint64_t max_step) {
        if (*c == UINT64_MAX || rnd_chance(10))
                *c = rnd_chance(20) ? UINT64_MAX : rnd_range(0, 1000);   /* not reported / reset */
        else if (rnd_chance(50))
                *c += rnd_range(0, max_step);
}

static void random_stats(PolicyVM *vm, usec_t now) {
        GuestStats *s = &vm->stats;

        if (rnd_chance(10)) {
                guest_stats_init(s);
                return;
        }
        if (!s->valid || rnd_chance(70)) {
                s->valid = true;
                s->updated_usec = rnd_chance(15) ? sub_now(now, rnd_range(0, 300 * USEC_PER_SEC)) : now;
                s->available_bytes = rnd_chance(5) ? UINT64_MAX : rnd_range(0, vm->actual_bytes);
                s->free_bytes = s->available_bytes == UINT64_MAX ? UINT64_MAX : s->available_bytes / 3;
                s->caches_bytes = s->free_bytes;
                counter_step(&s->major_faults, 100000);
                counter_step(&s->swap_in_bytes, 64 * MIB);
                counter_step(&s->oom_kills, 2);
                counter_step(&s->alloc_stalls, 100);
                counter_step(&s->direct_scan, 10000);
                counter_step(&s->direct_reclaim, 10000);
        }
}

static bool stats_fresh_independent(const PolicyVM *vm, usec_t now) {
        const GuestStats *s = &vm->stats;
        return s->valid && s->available_bytes != UINT64_MAX &&
               (s->updated_usec >= now || now - s->updated_usec <= vm->knobs->stats_max_age_usec);
}

static uint64_t bound_min(const PolicyVM *vm) {
        const PolicyKnobs *k = vm->knobs;
        uint64_t max = MIN(k->maximum_bytes ? k->maximum_bytes : vm->ram_bytes, vm->ram_bytes);
        uint64_t min = k->minimum_bytes ? k->minimum_bytes
                                        : vm->ram_bytes / 100 * k->minimum_percent + vm->ram_bytes % 100 * k->minimum_percent / 100;
        return MIN(min, max);
}

static uint64_t bound_max(const PolicyVM *vm) {
        const PolicyKnobs *k = vm->knobs;
        return MIN(k->maximum_bytes ? k->maximum_bytes : vm->ram_bytes, vm->ram_bytes);
}

/* Checks one VM's decision against the promises, from the inputs as they were before the call. */
static void check_decision(const PolicyHost *host, const PolicyVM *pre, const PolicyVM *vm, usec_t now) {
        const PolicyKnobs *k = vm->knobs;
        uint64_t min = bound_min(pre), max = bound_max(pre);
        bool managed = pre->controllable && k->enabled && pre->ram_bytes > 0;
        PressureLevel level = MAX(pre->scope_event, host->event);
        bool fresh = stats_fresh_independent(pre, now);
        /* The rest of an earlier host event decided on blind steps that counted this VM in. */
        PressureLevel rest = host->event == PRESSURE_NONE && host->rest_level > PRESSURE_NONE &&
                        host->rest_level < _PRESSURE_LEVEL_MAX && pre->state.rest_usec == host->rest_usec &&
                        pre->state.rest_usec != 0 ? host->rest_level : PRESSURE_NONE;

        cases_checked++;
        if (!managed) {
                assert_int_equal(vm->new_target_bytes, pre->target_bytes);
                return;
        }

        /* 1. Bounds. */
        if (vm->new_target_bytes < min || vm->new_target_bytes > max)
                fail_msg("target %" PRIu64 " outside [%" PRIu64 ", %" PRIu64 "]", vm->new_target_bytes, min, max);

        /* The point a move starts from: the target, or the guest's own size when it deflated
         * itself (the policy adopts that first), within the bounds. */
        /* The guest's actual counts at most as its RAM, whatever it says. */
        uint64_t actual = MIN(pre->actual_bytes, pre->ram_bytes);
        bool own_landing = pre->state.last_grow_usec != 0 && now - pre->state.last_grow_usec < 10 * USEC_PER_SEC &&
                           actual <= pre->state.last_grow_target_bytes + MIB;
        bool adopted = pre->state.last_actual_bytes != 0 && actual > pre->state.last_actual_bytes &&
                       actual > pre->target_bytes + MIB && !own_landing;
        uint64_t base = CLAMP(adopted ? actual : pre->target_bytes, min, max);

        /* The seed moves on every event it has room for: exactly its step, never nothing. */
        if (k->preset == POLICY_PRESET_SEED && level > PRESSURE_NONE && k->seed_step_bytes[level] > 0 &&
            base >= min + k->seed_step_bytes[level])
                assert_int_equal(vm->new_target_bytes, base - k->seed_step_bytes[level]);

        if (vm->new_target_bytes < base) {
                uint64_t drop = base - vm->new_target_bytes;

                /* No inflation without an event (or the rest of one). */
                assert_true(level > PRESSURE_NONE || rest > PRESSURE_NONE);
                if (level == PRESSURE_NONE)
                        rests_checked++;
                level = MAX(level, rest);

                inflations_checked++;
                if (k->preset == POLICY_PRESET_SEED) {
                        /* 4. The seed moves exactly its step. */
                        seed_moves_checked++;
                        assert_int_equal(drop, k->seed_step_bytes[level]);
                        return;
                }

                /* 3. No move above the level's step (escalation included): the level of the
                 * host's or the scope's event, whichever allows more (knobs need not grow with the
                 * level, and either event may be the one that moved it). */
                uint64_t ram = pre->ram_bytes;
                uint32_t permille = MAX(MAX(k->step_permille[host->event], k->step_permille[pre->scope_event]),
                                        k->step_permille[rest]);
                uint64_t level_step = ram / 1000 * permille + ram % 1000 * permille / 1000;
                if (drop > level_step * k->step_escalation_max)
                        fail_msg("drop %" PRIu64 " above step %" PRIu64 " x %u", drop, level_step, k->step_escalation_max);
                if (!fresh) {
                        uint64_t low = ram / 1000 * k->step_permille[PRESSURE_LOW] + ram % 1000 * k->step_permille[PRESSURE_LOW] / 1000;
                        assert_true(drop <= MIN(level_step, low));
                } else {
                        /* 2. Never into the working set (plus its reserve). */
                        floor_checked++;
                        uint64_t used = actual > pre->stats.available_bytes ? actual - pre->stats.available_bytes : 0;
                        uint64_t reserve = MAX(k->reserve_bytes, ram / 100 * k->reserve_percent + ram % 100 * k->reserve_percent / 100);
                        if (vm->new_target_bytes < MIN(used + reserve, max))
                                fail_msg("target %" PRIu64 " below working set %" PRIu64 " + reserve %" PRIu64,
                                         vm->new_target_bytes, used, reserve);
                }
                /* Hold-off after a self-deflate: only critical pressure inflates. */
                if (level < PRESSURE_CRITICAL)
                        assert_true(adopted ? false : now >= pre->state.hold_off_until_usec);
        } else if (vm->new_target_bytes > base) {
                /* Growth is recovery: only with neither host nor scope pressure, one step at a time. */
                /* Growth is recovery (no host or scope pressure, one step at a time), or relief
                 * for a guest in need (host pressure low at most, its scope quiet). */
                recoveries_checked++;
                assert_int_equal(k->preset, POLICY_PRESET_DEFAULT);
                uint32_t permille = k->recovery_permille;
                uint64_t growth = 0;
                /* An adoption may come with relief on top (and keeps its reason). */
                if (vm->reason == POLICY_REASON_GUEST_PRESSURE ||
                    (vm->reason == POLICY_REASON_ADOPT_SELF_DEFLATE && vm->guest_pressure &&
                     host->event < PRESSURE_CRITICAL && host->level < PRESSURE_CRITICAL)) {
                        assert_true(vm->guest_pressure);
                        assert_true(host->event < PRESSURE_CRITICAL && host->level < PRESSURE_CRITICAL);
                        permille = MAX(permille, k->guest_pressure_permille);
                        growth = 2 * vm->state.used_growth_bytes;
                } else {
                        assert_int_equal(vm->reason, POLICY_REASON_RECOVERY);
                        assert_int_equal(host->event, PRESSURE_NONE);
                        assert_int_equal(host->level, PRESSURE_NONE);
                        assert_int_equal(pre->scope_level, PRESSURE_NONE);
                        assert_int_equal(pre->scope_event, PRESSURE_NONE);
                }
                uint64_t step = MAX(MAX(pre->ram_bytes / 1000 * permille, MIB), growth);
                assert_true(vm->new_target_bytes - base <= step + MIB);
        }
}

/* Pressure back soon after a recovery step doubles the cool-down, up to RecoveryDelayMaxSec=; a
 * long quiet spell resets it; RecoveryDelayMaxSec= at or below RecoveryDelaySec= turns it off. */
static void test_recovery_backoff(void **state) {
        static const unsigned expected_sec[] = { 30, 60, 120, 240, 240 };
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC, t;

        policy_knobs_init_default(&k);
        assert_int_equal(k.recovery_delay_max_usec, 240 * USEC_PER_SEC);
        vm_init(&vm, &k, 4 * GIB);
        vm.target_bytes = vm.actual_bytes = 2 * GIB;
        assert_int_equal(policy_vm_recovery_delay(&vm), k.recovery_delay_usec);

        for (size_t i = 0; i < ELEMENTSOF(expected_sec); i++) {
                usec_t event = now, delay = expected_sec[i] * USEC_PER_SEC;

                /* A host event (the first, or pressure back 10 s after a recovery step). The
                 * guest's own use stays at 1 GiB: no guest pressure, plain recovery. */
                host.event = host.level = PRESSURE_LOW;
                vm_stats(&vm, now, vm.actual_bytes - GIB);
                policy_decide(&host, &vm, 1, now);
                vm_apply(&vm);
                assert_int_equal(policy_vm_recovery_delay(&vm), delay);

                /* The level back at none arms the timer at the cool-down in force ... */
                host.event = host.level = PRESSURE_NONE;
                t = policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
                assert_int_equal(t, event + delay);
                /* ... nothing grows before it ... */
                vm_stats(&vm, t - USEC_PER_SEC, vm.actual_bytes - GIB);
                policy_decide(&host, &vm, 1, t - USEC_PER_SEC);
                assert_int_equal(vm.new_target_bytes, vm.target_bytes);
                /* ... and the recovery step comes then. */
                vm_stats(&vm, t, vm.actual_bytes - GIB);
                policy_decide(&host, &vm, 1, now = t);
                assert_int_equal(vm.reason, POLICY_REASON_RECOVERY);
                assert_true(vm.new_target_bytes > vm.target_bytes);
                vm_apply(&vm);
                now += 10 * USEC_PER_SEC;
        }

        /* Pressure long after the last step, after a quiet spell of RecoveryDelayMaxSec=: reset. */
        now += 600 * USEC_PER_SEC;
        host.event = host.level = PRESSURE_LOW;
        vm_stats(&vm, now, vm.actual_bytes - GIB);
        policy_decide(&host, &vm, 1, now);
        vm_apply(&vm);
        assert_int_equal(policy_vm_recovery_delay(&vm), k.recovery_delay_usec);

        /* A return after the backed-off cool-down's own recovery steps is a return, not a quiet
         * spell: at the cap, the cool-down stays at the cap. */
        vm.state.recovery_delay_usec = k.recovery_delay_max_usec;
        vm.state.last_recovery_usec = now + 240 * USEC_PER_SEC;
        policy_decide(&host, &vm, 1, now += 250 * USEC_PER_SEC);
        assert_int_equal(policy_vm_recovery_delay(&vm), k.recovery_delay_max_usec);

        /* Off: the cool-down never grows. */
        k.recovery_delay_max_usec = 0;
        vm.state.recovery_delay_usec = 0;
        vm.state.last_recovery_usec = now - USEC_PER_SEC;
        policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
        assert_int_equal(policy_vm_recovery_delay(&vm), k.recovery_delay_usec);
}

static void test_random_properties(void **state) {
        static PolicyKnobs sets[N_KNOB_SETS];
        PolicyVM vm[VMS_MAX], pre[VMS_MAX];

        seed_rng(POLICY_TEST_SEED_DEFAULT);
        for (unsigned tr = 0; tr < TRAJECTORIES; tr++) {
                PolicyHost host = {};
                usec_t now = rnd_range(1, 1000000) * USEC_PER_SEC;
                size_t n = rnd_range(1, VMS_MAX);

                for (int i = 0; i < N_KNOB_SETS; i++)
                        random_knobs(&sets[i]);
                for (size_t i = 0; i < n; i++) {
                        vm_init(&vm[i], &sets[rnd() % N_KNOB_SETS], rnd_chance(3) ? 0 : rnd_range(64 * MIB, 64 * GIB));
                        vm[i].target_bytes = rnd_range(0, vm[i].ram_bytes);
                        vm[i].actual_bytes = rnd_range(0, vm[i].ram_bytes);
                }
                if (rnd_chance(50))
                        host.last_pressure_usec = sub_now(now, rnd_range(0, 200 * USEC_PER_SEC));

                for (unsigned c = 0; c < CALLS_PER_TRAJECTORY; c++) {
                        host.event = random_level(50);
                        host.stats_pending = rnd_chance(30);
                        host.level = host.event != PRESSURE_NONE ? MAX(host.event, random_level(50)) : random_level(50);
                        for (size_t i = 0; i < n; i++) {
                                vm[i].controllable = !rnd_chance(5);
                                vm[i].scope_event = random_level(80);
                                vm[i].scope_level = vm[i].scope_event != PRESSURE_NONE ? vm[i].scope_event : random_level(80);
                                random_stats(&vm[i], now);
                                pre[i] = vm[i];
                        }
                        PolicyHost host_pre = host;
                        usec_t next = policy_decide(&host, vm, n, now);
                        assert_true(next == USEC_INFINITY || next > now);
                        for (size_t i = 0; i < n; i++)
                                check_decision(&host_pre, &pre[i], &vm[i], now);

                        /* The daemon applies; the guest follows part of the way, or deflates itself. */
                        now += rnd_chance(30) ? rnd_range(0, USEC_PER_SEC) : rnd_range(0, 60 * USEC_PER_SEC);
                        if (rnd_chance(20) && next != USEC_INFINITY)
                                now = MAX(now, next);
                        for (size_t i = 0; i < n; i++) {
                                vm[i].target_bytes = vm[i].new_target_bytes;
                                if (rnd_chance(15))
                                        vm[i].actual_bytes = MIN(vm[i].ram_bytes, vm[i].actual_bytes + rnd_range(0, 512 * MIB));
                                else if (rnd_chance(70))
                                        vm[i].actual_bytes = vm[i].target_bytes;
                        }
                }
        }
        print_message("policy properties: %u decisions checked: %u inflations (%u seed, %u against the "
                      "working set, %u rests of a blind event), %u recovery steps\n",
                      cases_checked, inflations_checked, seed_moves_checked, floor_checked, rests_checked,
                      recoveries_checked);
        /* The generator reached every kind of move the checks are about, not only quiet calls. */
        assert_true(inflations_checked > 10000 && seed_moves_checked > 1000 && floor_checked > 5000);
        assert_true(recoveries_checked > 10000 && rests_checked > 100);
}

/* No pressure and every VM at its maximum: no timer, no move, whatever else the snapshot says. */

/* ---- the host memory budget ------------------------------------------------------------- */

static void vm_footprint(PolicyVM *vm, uint64_t rss_bytes, uint64_t swap_bytes) {
        vm->host_rss_bytes = rss_bytes;
        vm->host_swap_bytes = swap_bytes;
}

static HostBudget budget_of(uint64_t capacity, uint64_t used, uint64_t reserve) {
        return (HostBudget) {
                .valid = true,
                .capacity_bytes = capacity,
                .used_bytes = used,
                .reserve_bytes = reserve,
                .interval_usec = 2 * USEC_PER_SEC,
                .swap_capable = true,
        };
}

/* Swap has absorbed the shortfall: PSI is quiet, the host is still over. The daemon takes what
 * is over from the guest that holds touched-and-freed memory, and gives nothing back until the
 * room is there; a timer runs while over, none once every VM is back and the room is ample. */
static void test_budget_over_but_quiet(void **state) {
        PolicyKnobs k;
        PolicyVM vms[2];
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC, next;

        policy_knobs_init_default(&k);
        vm_init(&vms[0], &k, 1 * GIB);   /* idle: touched 900 MiB, freed it; uses 100 MiB */
        vm_init(&vms[1], &k, 1 * GIB);   /* busy: uses 900 MiB */
        vm_stats(&vms[0], now, 924 * MIB);
        vm_stats(&vms[1], now, 124 * MIB);
        vms[0].stats.free_bytes = vms[1].stats.free_bytes = 0;   /* cache: only what is over goes */
        /* vm 0 holds 300 MiB unused beyond its use (100) and QEMU's overhead (a first guess of
         * 192 MiB): 292 MiB resident, 300 swapped */
        vm_footprint(&vms[0], 292 * MIB, 300 * MIB);
        vm_footprint(&vms[1], 800 * MIB, 100 * MIB);
        /* 1,648 MiB of RAM used of 2 GiB, 400 MiB of the guests' in swap, 200 MiB reserve:
         * 200 MiB over */
        host.budget = budget_of(2 * GIB, 1648 * MIB, 200 * MIB);
        assert_int_equal(host_budget_balance(&host.budget, vms, 2), (int64_t) (200 * MIB));

        next = policy_decide(&host, vms, 2, now);
        /* the idle one gives what is over and half a reserve more (headroom for the next burst);
         * the busy one holds nothing unused: it gives nothing */
        assert_int_equal(vms[1].new_target_bytes, 1 * GIB);
        assert_true(vms[0].new_target_bytes <= 1 * GIB - 300 * MIB);
        assert_true(vms[0].new_target_bytes >= 1 * GIB - 310 * MIB);
        assert_int_equal(vms[0].reason, POLICY_REASON_HOST_BUDGET);
        assert_int_equal(next, now + 2 * USEC_PER_SEC);

        /* The inflation is in flight (actual not there yet): nothing is taken twice. */
        vms[0].target_bytes = vms[0].new_target_bytes;
        next = policy_decide(&host, vms, 2, now += USEC_PER_SEC);
        assert_int_equal(vms[0].new_target_bytes, vms[0].target_bytes);

        /* Done: the host got its 300 MiB back (the swap freed), half a reserve of room: no take,
         * no give-back, however long PSI stays quiet. */
        vm_apply(&vms[0]);
        vm_footprint(&vms[0], 292 * MIB, 0);
        for (int i = 0; i < 60; i++) {
                vm_stats(&vms[0], now, vms[0].actual_bytes - 100 * MIB);
                vm_stats(&vms[1], now, 124 * MIB);
                vms[0].stats.free_bytes = vms[1].stats.free_bytes = 0;
                next = policy_decide(&host, vms, 2, now += 2 * USEC_PER_SEC);
                assert_int_equal(vms[0].new_target_bytes, vms[0].target_bytes);
                assert_int_equal(vms[1].new_target_bytes, 1 * GIB);
                assert_true(next != USEC_INFINITY);
        }

        /* Room for one recovery step (2.5 % of 1 GiB) beyond that half reserve, but not two:
         * one step, then none. */
        host.budget.used_bytes -= 30 * MIB;
        vm_stats(&vms[0], now, vms[0].actual_bytes - 100 * MIB);
        vms[0].stats.free_bytes = 0;
        policy_decide(&host, vms, 2, now += 2 * USEC_PER_SEC);
        assert_int_equal(vms[0].reason, POLICY_REASON_RECOVERY);
        uint64_t step = vms[0].new_target_bytes - vms[0].target_bytes;
        assert_true(step > 0 && step <= 30 * MIB);
        vms[0].target_bytes = vms[0].new_target_bytes;
        vms[0].actual_bytes = vms[0].new_target_bytes;
        vm_stats(&vms[0], now, vms[0].actual_bytes - 100 * MIB);
        vms[0].stats.free_bytes = 0;
        policy_decide(&host, vms, 2, now += 2 * USEC_PER_SEC);
        /* the guest has not touched it: the host's use is the same, the room is what is left */
        assert_int_equal(vms[0].new_target_bytes, vms[0].target_bytes);

        /* Ample room: back to the maximum, then no timer. */
        host.budget.used_bytes = 200 * MIB;
        vm_footprint(&vms[0], 200 * MIB, 0);
        vm_footprint(&vms[1], 200 * MIB, 0);
        for (int i = 0; i < 100 && vms[0].target_bytes < 1 * GIB; i++) {
                vm_stats(&vms[0], now, vms[0].actual_bytes - 100 * MIB);
                next = policy_decide(&host, vms, 2, now += 2 * USEC_PER_SEC);
                vm_apply(&vms[0]);
        }
        assert_int_equal(vms[0].target_bytes, 1 * GIB);
        next = policy_decide(&host, vms, 2, now += 2 * USEC_PER_SEC);
        assert_int_equal(next, USEC_INFINITY);
}

/* A guest in need gets its step even when the host has no room; what is missing is taken from
 * an idle guest's unused memory in the same call. */
static void test_budget_relief_from_idle(void **state) {
        PolicyKnobs k;
        PolicyVM vms[2];
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        vm_init(&vms[0], &k, 1 * GIB);
        vm_init(&vms[1], &k, 1 * GIB);
        vms[1].target_bytes = vms[1].actual_bytes = 512 * MIB;   /* squeezed earlier */
        vm_stats(&vms[0], now, 800 * MIB);
        vm_stats(&vms[1], now, 200 * MIB);
        vms[0].stats.free_bytes = vms[1].stats.free_bytes = 0;   /* cache */
        vm_footprint(&vms[0], 900 * MIB, 0);
        vm_footprint(&vms[1], 500 * MIB, 0);
        host.budget = budget_of(2 * GIB, 1840 * MIB, 200 * MIB);   /* 8 MiB of room: less than a step */
        /* near the line: the idle guest's cache goes, a fifth of its RAM per sample */
        policy_decide(&host, vms, 2, now);
        assert_int_equal(vms[0].new_target_bytes, 1 * GIB - 204 * MIB);
        assert_int_equal(vms[1].new_target_bytes, 512 * MIB);
        vms[0].target_bytes = vms[0].actual_bytes = vms[0].new_target_bytes;
        vm_stats(&vms[0], now + USEC_PER_SEC, 800 * MIB - 204 * MIB);
        vms[0].stats.free_bytes = 0;

        /* vm 1 grows by 150 MiB in one sample: in need */
        vm_stats(&vms[1], now + 2 * USEC_PER_SEC, 50 * MIB);
        policy_decide(&host, vms, 2, now += 2 * USEC_PER_SEC);
        assert_int_equal(vms[1].reason, POLICY_REASON_GUEST_PRESSURE);
        uint64_t given = vms[1].new_target_bytes - 512 * MIB;
        assert_true(given >= 100 * MIB);
        assert_int_equal(vms[0].reason, POLICY_REASON_HOST_BUDGET);
        uint64_t taken = vms[0].target_bytes - vms[0].new_target_bytes;
        /* what the room did not cover, at least; at most that plus the near-the-line fifth */
        assert_true(taken + 10 * MIB >= given);
        assert_true(taken <= given + 205 * MIB);
}

/* Free page reporting: the guest's free memory went back by itself, so the budget goes after its
 * cache only, even when its host footprint (QEMU's own overhead) suggests more. */
static void test_budget_free_page_reporting(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        vm_init(&vm, &k, 1 * GIB);
        vm.free_page_reporting = true;
        vm_stats(&vm, now, 800 * MIB);            /* uses 224 MiB */
        vm.stats.free_bytes = 700 * MIB;          /* 100 MiB of it cache */
        vm_footprint(&vm, 600 * MIB, 0);
        host.budget = budget_of(2 * GIB, 2 * GIB + 512 * MIB, 0);   /* far over */
        policy_decide(&host, &vm, 1, now);
        assert_int_equal(vm.reason, POLICY_REASON_HOST_BUDGET);
        assert_int_equal(vm.new_target_bytes, 1 * GIB - 100 * MIB);

        /* without it, what the footprint shows unused beyond QEMU's overhead (a first guess of
         * 128 MiB + RAM/16): 600 - 224 - 192 = 184 MiB, more than the cache */
        vm_init(&vm, &k, 1 * GIB);
        vm_stats(&vm, now, 800 * MIB);
        vm.stats.free_bytes = 700 * MIB;
        vm_footprint(&vm, 600 * MIB, 0);
        policy_decide(&host, &vm, 1, now);
        assert_true(vm.new_target_bytes <= 1 * GIB - 180 * MIB);
        assert_true(vm.new_target_bytes >= 1 * GIB - 190 * MIB);
}

/* A host without swap: what the guests may still grow into counts, so an idle guest at its
 * maximum that touched little is squeezed before it can touch past the capacity; with swap,
 * the same host is left alone. */
static void test_budget_no_swap(void **state) {
        PolicyKnobs k;
        PolicyVM vms[2];
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        for (int i = 0; i < 2; i++) {
                vm_init(&vms[i], &k, 1 * GIB);
                vm_stats(&vms[i], now, 900 * MIB);       /* uses 124 MiB */
                vm_footprint(&vms[i], 200 * MIB, 0);     /* touched little: 824 MiB left to grow */
        }
        /* 1 GiB host, 400 MiB used, 100 MiB reserve: 524 MiB of room, 1,648 MiB of growth */
        host.budget = budget_of(1 * GIB, 400 * MIB, 100 * MIB);
        assert_int_equal(policy_decide(&host, vms, 2, now), USEC_INFINITY);
        assert_int_equal(vms[0].new_target_bytes, 1 * GIB);

        host.budget.swap_capable = false;
        policy_decide(&host, vms, 2, now += USEC_PER_SEC);
        uint64_t left = 0;
        for (int i = 0; i < 2; i++) {
                assert_int_equal(vms[i].reason, POLICY_REASON_HOST_BUDGET);
                assert_true(vms[i].new_target_bytes >= vms[i].floor_bytes);
                left += vms[i].new_target_bytes - 200 * MIB;
        }
        /* what both may still grow into fits the room, with half a reserve to spare */
        assert_true(left + 50 * MIB <= 1 * GIB - 400 * MIB - 100 * MIB + 2 * MIB);
}

/* A VM whose QEMU is outside the budget's cgroup neither fills it nor makes room in it: the same
 * host as above with one VM outside squeezes only the one inside, and with both outside nothing
 * moves at all. */
static void test_budget_outside_source(void **state) {
        PolicyKnobs k;
        PolicyVM vms[2];
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        for (int i = 0; i < 2; i++) {
                vm_init(&vms[i], &k, 1 * GIB);
                vm_stats(&vms[i], now, 900 * MIB);
                vm_footprint(&vms[i], 200 * MIB, 0);
        }
        /* 524 MiB of room: one guest's 824 MiB of growth does not fit, two guests' would not either */
        host.budget = budget_of(1 * GIB, 400 * MIB, 100 * MIB);
        host.budget.swap_capable = false;
        vms[1].outside_budget = true;
        policy_decide(&host, vms, 2, now);
        assert_int_equal(vms[0].reason, POLICY_REASON_HOST_BUDGET);
        assert_true(vms[0].new_target_bytes < 1 * GIB);
        assert_int_equal(vms[1].new_target_bytes, 1 * GIB);
        /* only the inside guest's growth is counted: it is squeezed to fit the room alone */
        assert_true(vms[0].new_target_bytes - 200 * MIB + 50 * MIB <= 1 * GIB - 500 * MIB + 2 * MIB);
        assert_true(vms[0].new_target_bytes - 200 * MIB + 50 * MIB + 20 * MIB >= 1 * GIB - 500 * MIB);

        for (int i = 0; i < 2; i++) {
                vm_init(&vms[i], &k, 1 * GIB);
                vm_stats(&vms[i], now, 900 * MIB);
                vm_footprint(&vms[i], 200 * MIB, 0);
                vms[i].outside_budget = true;
        }
        assert_int_equal(policy_decide(&host, vms, 2, now += USEC_PER_SEC), USEC_INFINITY);
        for (int i = 0; i < 2; i++)
                assert_int_equal(vms[i].new_target_bytes, 1 * GIB);
}

/* Near the line, not over: what a guest touched and freed goes (as free page reporting would
 * return it), its cache stays; far from the line nothing moves. */
static void test_budget_free_near_line(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        vm_init(&vm, &k, 1 * GIB);
        vm_stats(&vm, now, 800 * MIB);           /* uses 224 MiB */
        vm.stats.free_bytes = 500 * MIB;         /* 300 MiB of cache */
        vm_footprint(&vm, 900 * MIB, 0);         /* touched nearly all of it */
        host.budget = budget_of(4 * GIB, 2 * GIB, 400 * MIB);   /* 1.6 GiB of room */
        assert_int_equal(policy_decide(&host, &vm, 1, now), USEC_INFINITY);
        assert_int_equal(vm.new_target_bytes, 1 * GIB);

        host.budget.used_bytes = 3 * GIB + 500 * MIB;           /* 100 MiB of room: near the line */
        host.burst = (HostBurst) {};                            /* (reached slowly, not a burst) */
        policy_decide(&host, &vm, 1, now += USEC_PER_SEC);
        assert_int_equal(vm.reason, POLICY_REASON_HOST_BUDGET);
        /* a fifth of its RAM per sample ... */
        assert_int_equal(vm.new_target_bytes, 1 * GIB - 204 * MIB);
        vm.target_bytes = vm.actual_bytes = vm.new_target_bytes;
        /* (the host did not get it back yet: still near the line) */
        for (int i = 0; i < 5; i++) {
                vm_stats(&vm, now, vm.actual_bytes - 224 * MIB);
                vm.stats.free_bytes = sub_now(vm.stats.available_bytes, 300 * MIB);
                vm_footprint(&vm, 900 * MIB - (1 * GIB - vm.actual_bytes), 0);
                policy_decide(&host, &vm, 1, now += 2 * USEC_PER_SEC);
                vm.target_bytes = vm.actual_bytes = vm.new_target_bytes;
        }
        /* ... until the free part the footprint shows is gone (900 - 224 MiB used - 192 MiB taken
         * for QEMU's overhead = 484 MiB); the cache stays */
        assert_true(vm.target_bytes <= 1 * GIB - 480 * MIB);
        assert_true(vm.target_bytes >= 1 * GIB - 500 * MIB);
}

/* A burst raises the headroom kept: after the host's use jumped by 600 MiB in two seconds, the
 * budget takes what an idle guest touched and freed while there is still more than a reserve of
 * room (where without the burst nothing would move), and it forgets the burst after a
 * minute. The tracker itself: rises within one or two 5 s buckets, the largest kept. */
static void test_budget_burst(void **state) {
        PolicyKnobs k;
        PolicyVM vm;
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;
        HostBurst b = {};

        assert_int_equal(host_burst_update(&b, 1000 * MIB, now), 0);
        assert_int_equal(host_burst_update(&b, 1300 * MIB, now + 2 * USEC_PER_SEC), 300 * MIB);
        assert_int_equal(host_burst_update(&b, 1100 * MIB, now + 6 * USEC_PER_SEC), 300 * MIB);
        /* a slow climb, 100 MiB per 5 s bucket, is no burst beyond the 300 MiB kept */
        for (int i = 0; i < 10; i++)
                assert_int_equal(host_burst_update(&b, (1100 + 100 * i) * MIB, now + (11 + 5 * i) * USEC_PER_SEC),
                                 300 * MIB);
        /* forgotten after a minute: the rise of the moment counts again */
        assert_int_equal(host_burst_update(&b, 2000 * MIB, now + 400 * USEC_PER_SEC), 0);

        policy_knobs_init_default(&k);
        vm_init(&vm, &k, 1 * GIB);
        vm_stats(&vm, now, 900 * MIB);           /* uses 124 MiB, touched 800 and freed them */
        vm.stats.free_bytes = 900 * MIB;
        vm_footprint(&vm, 950 * MIB, 0);
        /* 4 GiB host, reserve 200 MiB: 1,448 MiB of room, nothing to do */
        host.budget = budget_of(4 * GIB, 2400 * MIB, 200 * MIB);
        assert_int_equal(policy_decide(&host, &vm, 1, now), USEC_INFINITY);
        assert_int_equal(vm.new_target_bytes, 1 * GIB);
        /* +1 GiB in two seconds: 448 MiB of room is more than a reserve, but less than the burst */
        host.budget.used_bytes = 3424 * MIB;
        policy_decide(&host, &vm, 1, now += 2 * USEC_PER_SEC);
        assert_int_equal(vm.reason, POLICY_REASON_HOST_BUDGET);
        assert_true(vm.new_target_bytes < 1 * GIB);
        assert_int_equal(host.budget.reserve_bytes, 1 * GIB);        /* the burst: the reserve grew to it */

        /* the same host without the burst in mind: nothing moves */
        vm_init(&vm, &k, 1 * GIB);
        vm_stats(&vm, now, 900 * MIB);
        vm.stats.free_bytes = 900 * MIB;
        vm_footprint(&vm, 950 * MIB, 0);
        host = (PolicyHost) { .budget = budget_of(4 * GIB, 3424 * MIB, 200 * MIB) };
        assert_int_equal(policy_decide(&host, &vm, 1, now), USEC_INFINITY);
        assert_int_equal(vm.new_target_bytes, 1 * GIB);
}

/* Plenty of room, every VM at its maximum, no pressure: no timer, whatever the guests hold. */
static void test_budget_idle_no_timer(void **state) {
        PolicyKnobs k;
        PolicyVM vms[3];
        PolicyHost host = {};
        usec_t now = 1000 * USEC_PER_SEC;

        policy_knobs_init_default(&k);
        for (int i = 0; i < 3; i++) {
                vm_init(&vms[i], &k, 1 * GIB);
                vm_footprint(&vms[i], 600 * MIB, 0);
        }
        /* (no stats: nothing known to be free, so nothing is taken near the line either) */
        host.budget = budget_of(8 * GIB, 2 * GIB, 400 * MIB);
        assert_int_equal(policy_decide(&host, vms, 3, now), USEC_INFINITY);
        /* within one reserve of the budget: watched at the stats interval */
        host.budget.used_bytes = 8 * GIB - 700 * MIB;
        host.burst = (HostBurst) {};                            /* (reached slowly, not a burst) */
        now += USEC_PER_SEC;
        assert_int_equal(policy_decide(&host, vms, 3, now), now + 2 * USEC_PER_SEC);
        for (int i = 0; i < 3; i++)
                assert_int_equal(vms[i].new_target_bytes, 1 * GIB);
}

/* Random budgets, footprints and hostile values (UINT64_MAX, 0, sizes above RAM): every target
 * stays within its bounds, a budget take never goes below the floor nor takes more than the
 * host is over (plus what guests in need were given), and recovery never gives more than the
 * room there was. */
static void test_budget_random(void **state) {
        unsigned checked = 0, takes = 0, recoveries = 0;

        seed_rng(POLICY_TEST_SEED_DEFAULT);
        for (int t = 0; t < 20000; t++) {
                PolicyKnobs knobs[2];
                PolicyVM vms[VMS_MAX], pre[VMS_MAX];
                PolicyHost host = {};
                size_t n = rnd_range(1, VMS_MAX);
                usec_t now = rnd_range(1, 1000) * USEC_PER_SEC;

                random_knobs(&knobs[0]);
                policy_knobs_init_default(&knobs[1]);
                for (size_t i = 0; i < n; i++) {
                        uint64_t ram = rnd_range(64, 16384) * MIB;
                        vm_init(&vms[i], &knobs[rnd_range(0, 1)], ram);
                        vms[i].target_bytes = rnd_chance(50) ? ram : rnd_range(0, ram);
                        vms[i].actual_bytes = rnd_chance(10) ? UINT64_MAX / 2 : rnd_chance(70) ? vms[i].target_bytes : rnd_range(0, ram);
                        if (rnd_chance(80))
                                vm_stats(&vms[i], now, rnd_chance(5) ? 0 : rnd_range(0, ram));
                        vm_footprint(&vms[i], rnd_chance(10) ? UINT64_MAX : rnd_chance(5) ? UINT64_MAX - 1 : rnd_range(0, ram + GIB),
                                     rnd_chance(10) ? UINT64_MAX : rnd_chance(5) ? UINT64_MAX - 1 : rnd_range(0, ram));
                }
                host.budget = budget_of(rnd_range(1, 65536) * MIB, rnd_chance(5) ? UINT64_MAX : rnd_range(0, 65536) * MIB,
                                        rnd_range(0, 4096) * MIB);
                host.budget.swap_capable = !rnd_chance(20);
                host.level = host.event = random_level(70);
                int64_t balance = host_budget_balance(&host.budget, vms, n);

                memcpy(pre, vms, n * sizeof *vms);
                policy_decide(&host, vms, n, now);

                uint64_t taken = 0, given_relief = 0, given_recovery = 0, inflight = 0, free_sum = 0;
                for (size_t i = 0; i < n; i++) {
                        const PolicyVM *vm = vms + i;
                        bool managed = vm->controllable && vm->knobs->enabled && vm->ram_bytes > 0;
                        checked++;
                        if (!managed)
                                continue;
                        uint64_t min = bound_min(vm), max = bound_max(vm);
                        if (vm->new_target_bytes < min || vm->new_target_bytes > max)
                                fail_msg("target %" PRIu64 " outside [%" PRIu64 ", %" PRIu64 "]", vm->new_target_bytes, min, max);
                        if (vm->reason == POLICY_REASON_HOST_BUDGET) {
                                takes++;
                                assert_true(vm->new_target_bytes >= vm->floor_bytes);
                                /* from the target within its bounds: a bounds move comes first */
                                taken += CLAMP(pre[i].target_bytes, min, max) - vm->new_target_bytes;
                        } else if (vm->reason == POLICY_REASON_GUEST_PRESSURE)
                                given_relief += vm->new_target_bytes - pre[i].target_bytes;
                        else if (vm->reason == POLICY_REASON_ADOPT_SELF_DEFLATE) {
                                /* the relief step on top of what the guest took itself */
                                uint64_t adopted = CLAMP(pre[i].actual_bytes, min, max);
                                given_relief += vm->new_target_bytes > adopted ? vm->new_target_bytes - adopted : 0;
                        }
                        else if (vm->reason == POLICY_REASON_RECOVERY) {
                                recoveries++;
                                given_recovery += vm->new_target_bytes - pre[i].target_bytes;
                        }
                        free_sum += pre[i].ram_bytes / 5;   /* near the line: a fifth of RAM each */
                        uint64_t a = MIN(pre[i].actual_bytes, pre[i].ram_bytes);
                        inflight += a > pre[i].target_bytes ? a - pre[i].target_bytes : 0;
                }
                uint64_t room = balance < 0 ? (uint64_t) -balance + inflight : inflight;
                /* over, plus the half reserve a take restores */
                uint64_t over = balance > 0 ? (uint64_t) balance + host.budget.reserve_bytes / 2 : 0;
                /* each donor may round its share up to a granule; a PSI event may add its own
                 * share when the budget sees no deficit, so the bound holds without one; near the
                 * line up to a fifth of each guest's RAM goes too */
                if (host.budget.swap_capable && host.event == PRESSURE_NONE &&
                    taken > over + given_relief + (balance > -(int64_t) host.budget.reserve_bytes ? free_sum : 0) + 2 * n * MIB)
                        fail_msg("took %" PRIu64 " with %" PRIu64 " over and %" PRIu64 " given", taken, over, given_relief);
                if (given_recovery > room)
                        fail_msg("gave back %" PRIu64 " into %" PRIu64 " of room", given_recovery, room);
        }
        printf("budget cases: %u VMs, %u budget takes, %u recoveries checked\n", checked, takes, recoveries);
        assert_true(takes > 1000 && recoveries > 100);
}

static void test_idle_no_timer(void **state) {
        static PolicyKnobs sets[N_KNOB_SETS];
        PolicyVM vm[VMS_MAX];
        unsigned cases = 0, tempting = 0;

        seed_rng(POLICY_TEST_SEED_DEFAULT);
        for (unsigned c = 0; c < IDLE_CASES / 4; c++) {
                PolicyHost host = {};
                usec_t now = rnd_range(1, 1000000) * USEC_PER_SEC;
                size_t n = rnd_range(1, VMS_MAX);

                for (int i = 0; i < N_KNOB_SETS; i++)
                        random_knobs(&sets[i]);
                if (rnd_chance(70))
                        host.last_pressure_usec = sub_now(now, rnd_range(0, 200 * USEC_PER_SEC));
                for (size_t i = 0; i < n; i++) {
                        vm_init(&vm[i], &sets[rnd() % N_KNOB_SETS], rnd_range(64 * MIB, 64 * GIB));
                        vm[i].target_bytes = bound_max(&vm[i]);
                        vm[i].actual_bytes = rnd_chance(50) ? vm[i].target_bytes : rnd_range(0, vm[i].target_bytes);
                        vm[i].controllable = !rnd_chance(5);
                        /* Leftovers of past episodes: recent events, hold-offs, a guest in need. */
                        vm[i].state.last_event_usec = rnd_chance(50) ? sub_now(now, rnd_range(0, 100 * USEC_PER_SEC)) : 0;
                        vm[i].state.last_move_usec = rnd_chance(50) ? sub_now(now, rnd_range(0, 10 * USEC_PER_SEC)) : 0;
                        vm[i].state.hold_off_until_usec = rnd_chance(30) ? now + rnd_range(0, 100 * USEC_PER_SEC) : 0;
                        vm[i].state.guest_pressure_usec = rnd_chance(30) ? sub_now(now, rnd_range(0, 10 * USEC_PER_SEC)) : 0;
                        vm[i].state.consecutive_events = rnd_range(0, 5);
                        vm[i].state.last_actual_bytes = rnd_chance(50) ? 0 : vm[i].actual_bytes;
                }
                /* A few quiet calls in a row, as guest-stats updates arrive. */
                for (int call = 0; call < 4; call++) {
                        for (size_t i = 0; i < n; i++)
                                random_stats(&vm[i], now);
                        /* a snapshot where a careless policy would arm something: a guest below
                         * its target, in a hold-off, or lately in need */
                        for (size_t i = 0; i < n; i++)
                                if (vm[i].actual_bytes < vm[i].target_bytes || vm[i].state.hold_off_until_usec > now ||
                                    vm[i].state.guest_pressure_usec != 0) {
                                        tempting++;
                                        break;
                                }
                        usec_t next = policy_decide(&host, vm, n, now);
                        if (next != USEC_INFINITY)
                                fail_msg("idle snapshot armed a timer in %" PRIu64 " us", next - now);
                        for (size_t i = 0; i < n; i++)
                                assert_int_equal(vm[i].new_target_bytes, vm[i].target_bytes);
                        cases++;
                        now += rnd_range(0, 60 * USEC_PER_SEC);
                }
        }
        print_message("idle snapshots: %u (%u with a guest below its target, held off or lately in need), "
                      "no timer armed\n", cases, tempting);
        /* the property is only worth as much as the snapshots that could have broken it */
        assert_true(tempting > cases / 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_strings),
                cmocka_unit_test(test_bounds_defaults),
                cmocka_unit_test(test_seed_exact_steps),
                cmocka_unit_test(test_default_scales_and_escalates),
                cmocka_unit_test(test_working_set_and_victims),
                cmocka_unit_test(test_guest_counters),
                cmocka_unit_test(test_no_stats_conservative),
                cmocka_unit_test(test_scope_pressure_that_vm),
                cmocka_unit_test(test_self_deflate_hold_off),
                cmocka_unit_test(test_working_set_window),
                cmocka_unit_test(test_budget_over_but_quiet),
                cmocka_unit_test(test_budget_relief_from_idle),
                cmocka_unit_test(test_budget_idle_no_timer),
                cmocka_unit_test(test_budget_free_page_reporting),
                cmocka_unit_test(test_budget_no_swap),
                cmocka_unit_test(test_budget_burst),
                cmocka_unit_test(test_budget_outside_source),
                cmocka_unit_test(test_budget_free_near_line),
                cmocka_unit_test(test_budget_random),
                cmocka_unit_test(test_relief_after_take),
                cmocka_unit_test(test_blind_then_rest),
                cmocka_unit_test(test_scope_once_per_sample),
                cmocka_unit_test(test_stale_sample_after_inflate),
                cmocka_unit_test(test_sample_skew_not_growth),
                cmocka_unit_test(test_recovery),
                cmocka_unit_test(test_recovery_backoff),
                cmocka_unit_test(test_random_properties),
                cmocka_unit_test(test_idle_no_timer),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
