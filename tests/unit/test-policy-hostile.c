/* The policy against guests that lie: actual and stats at UINT64_MAX, 0, above RAM, jumping
 * between calls; stats stamped in the future or going back; counters that wrap. Over many rounds
 * of several VMs, with and without a host budget: every managed VM's target stays within
 * [minimum, maximum] every round, and an honest VM is never taken below its floor (its working
 * set plus reserve) for a liar's sake. Built with UBSan: no overflow may abort it. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "policy.h"
#include "policy-test-util.h"

#define TRAJECTORIES 3000
#define ROUNDS 60
#define VMS_MAX 6
/* The largest RAM the daemon believes from QEMU (balloon.h's BALLOON_RAM_MAX_BYTES, 16 PiB). */
#define RAM_MAX_BYTES (UINT64_MAX / 1024)
#define POLICY_TEST_SEED_DEFAULT 0x51ed270b27a9c3f5ULL

/* What a lying guest (or the QEMU it took over) may send for a size or a counter: the edges,
 * its RAM and just past it, or any 64-bit value. */
static uint64_t hostile_u64(uint64_t ram) {
        const uint64_t edges[] = {
                0, 1, UINT64_MAX, UINT64_MAX - 1, INT64_MAX, (uint64_t) INT64_MAX + 1, UINT64_MAX / 2,
                ram, ram + 1, ram - 1, 2 * ram, UINT64_MAX - ram, 4096,
        };
        if (rnd_chance(60))
                return edges[rnd() % ELEMENTSOF(edges)];
        return rnd_chance(50) ? rnd() : rnd_range(0, 2 * ram);
}

/* When QEMU says a sample arrived: now, long ago, in the future, before the last one, never. */
static usec_t hostile_stamp(usec_t now, usec_t last) {
        switch (rnd() % 8) {
        case 0: return 0;
        case 1: return UINT64_MAX;
        case 2: return UINT64_MAX - 1;
        case 3: return now + rnd_range(1, 1000) * USEC_PER_SEC;          /* future */
        case 4: return last > 1 ? rnd_range(1, last - 1) : 1;             /* went back */
        case 5: return last;                                              /* the same sample */
        case 6: return now > 600 * USEC_PER_SEC ? now - rnd_range(0, 600) * USEC_PER_SEC : now;
        default: return now;
        }
}

typedef struct Guest {
        bool liar;
        uint64_t used_bytes;     /* an honest guest's working set */
} Guest;

static void liar_reports(PolicyVM *vm, usec_t now) {
        GuestStats *s = &vm->stats;
        uint64_t ram = vm->ram_bytes;
        uint64_t *fields[] = {
                &s->total_bytes, &s->free_bytes, &s->available_bytes, &s->caches_bytes, &s->major_faults,
                &s->minor_faults, &s->swap_in_bytes, &s->swap_out_bytes, &s->oom_kills, &s->alloc_stalls,
                &s->direct_scan, &s->direct_reclaim, &s->async_scan, &s->async_reclaim,
        };

        if (rnd_chance(70))
                vm->actual_bytes = hostile_u64(ram);
        if (rnd_chance(10)) {
                guest_stats_init(s);
                return;
        }
        s->valid = !rnd_chance(5);
        s->updated_usec = hostile_stamp(now, s->updated_usec);
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (rnd_chance(70))
                        *fields[i] = hostile_u64(ram);
        /* the classic: "I have nothing available", whatever the size */
        if (rnd_chance(30))
                s->available_bytes = 0;
}

/* An honest guest: follows the balloon, uses used_bytes, and says so every round. */
static void honest_reports(PolicyVM *vm, const Guest *g, usec_t now) {
        vm->actual_bytes = vm->target_bytes;
        vm->stats.valid = true;
        vm->stats.updated_usec = now;
        vm->stats.total_bytes = vm->actual_bytes;
        vm->stats.available_bytes = vm->actual_bytes > g->used_bytes ? vm->actual_bytes - g->used_bytes : 0;
        vm->stats.free_bytes = vm->stats.available_bytes / 2;
        vm->stats.caches_bytes = vm->stats.available_bytes / 2;
        if (vm->stats.major_faults == UINT64_MAX)
                vm->stats.major_faults = 0;
}

static uint64_t bound_max(const PolicyVM *vm) {
        const PolicyKnobs *k = vm->knobs;
        return MIN(k->maximum_bytes ? k->maximum_bytes : vm->ram_bytes, vm->ram_bytes);
}

static uint64_t bound_min(const PolicyVM *vm) {
        const PolicyKnobs *k = vm->knobs;
        uint64_t min = k->minimum_bytes ? k->minimum_bytes
                                        : vm->ram_bytes / 100 * k->minimum_percent + vm->ram_bytes % 100 * k->minimum_percent / 100;
        return MIN(min, bound_max(vm));
}

static uint64_t reserve_of(const PolicyVM *vm) {
        const PolicyKnobs *k = vm->knobs;
        uint64_t ram = vm->ram_bytes;
        return MAX(k->reserve_bytes, ram / 100 * k->reserve_percent + ram % 100 * k->reserve_percent / 100);
}

static void random_knobs(PolicyKnobs *k, bool honest) {
        policy_knobs_init_default(k);
        if (rnd_chance(40))
                return;
        /* an honest guest's floor is the default preset's promise; a liar may run either */
        k->preset = !honest && rnd_chance(20) ? POLICY_PRESET_SEED : POLICY_PRESET_DEFAULT;
        k->minimum_bytes = rnd_chance(60) ? 0 : rnd_range(0, 4 * GIB);
        k->maximum_bytes = rnd_chance(60) ? 0 : rnd_range(64 * MIB, 64 * GIB);
        k->minimum_percent = rnd_range(0, 100);
        k->weight = rnd_range(1, 10000);
        k->reserve_bytes = rnd_range(0, 1 * GIB);
        k->reserve_percent = rnd_range(0, 30);
        k->recovery_delay_usec = rnd_range(0, 60 * USEC_PER_SEC);
        k->recovery_interval_usec = rnd_range(USEC_PER_MSEC, 5 * USEC_PER_SEC);
        k->hold_off_usec = rnd_range(0, 120 * USEC_PER_SEC);
        k->guest_pressure_permille = rnd_range(0, 1000);
        k->recovery_permille = rnd_range(1, 1000);
        k->step_escalation_max = rnd_range(1, 64);
        for (int l = PRESSURE_LOW; l < _PRESSURE_LEVEL_MAX; l++)
                k->step_permille[l] = rnd_range(0, 1000);
}

static PressureLevel random_level(unsigned none_percent) {
        return rnd_chance(none_percent) ? PRESSURE_NONE : (PressureLevel) rnd_range(PRESSURE_LOW, PRESSURE_CRITICAL);
}

static uint64_t rounds_checked, honest_takes_checked, liar_rounds, liar_at_max, budget_rounds, lies_above_ram;

/* What the daemon's decode boundary makes of a guest's numbers: sizes within its RAM, "not
 * reported" (UINT64_MAX) kept; counters and stamps as they came. */
static void clamp_like_the_boundary(PolicyVM *vm) {
        GuestStats *s = &vm->stats;
        uint64_t *bytes[] = { &s->total_bytes, &s->free_bytes, &s->available_bytes, &s->caches_bytes };

        if (vm->actual_bytes > vm->ram_bytes)
                lies_above_ram++;
        vm->actual_bytes = MIN(vm->actual_bytes, vm->ram_bytes);
        for (size_t i = 0; i < ELEMENTSOF(bytes); i++)
                if (*bytes[i] != UINT64_MAX)
                        *bytes[i] = MIN(*bytes[i], vm->ram_bytes);
}

static void run_trajectory(bool with_budget) {
        PolicyKnobs knobs[VMS_MAX];
        PolicyVM vm[VMS_MAX], twin[VMS_MAX];
        Guest guest[VMS_MAX];
        PolicyHost host = {}, twin_host;
        size_t n = rnd_range(2, VMS_MAX);
        usec_t now = rnd_range(1, 100000) * USEC_PER_SEC;
        bool any_liar = false;

        for (size_t i = 0; i < n; i++) {
                /* at least one liar and one honest guest in every trajectory */
                guest[i].liar = i == 0 || (i > 1 && rnd_chance(40));
                any_liar = any_liar || guest[i].liar;
                random_knobs(&knobs[i], !guest[i].liar);
                uint64_t ram = rnd_chance(5) ? RAM_MAX_BYTES : rnd_range(64, 65536) * MIB;
                vm[i] = (PolicyVM) {
                        .knobs = &knobs[i],
                        .ram_bytes = ram,
                        .actual_bytes = ram,
                        .target_bytes = ram,
                        .controllable = true,
                        .host_rss_bytes = UINT64_MAX,
                        .host_swap_bytes = UINT64_MAX,
                };
                guest_stats_init(&vm[i].stats);
                guest[i].used_bytes = rnd_range(0, ram / 10 * 7);
        }
        assert_true(any_liar);

        for (unsigned round = 0; round < ROUNDS; round++) {
                PolicyVM pre[VMS_MAX];

                host.event = random_level(60);
                host.level = host.event != PRESSURE_NONE ? MAX(host.event, random_level(50)) : random_level(70);
                host.budget = (HostBudget) {};
                if (with_budget) {
                        uint64_t capacity = rnd_range(1, 256) * GIB;
                        host.budget = (HostBudget) {
                                .valid = true,
                                .capacity_bytes = capacity,
                                .used_bytes = rnd_chance(5) ? UINT64_MAX : rnd_range(0, capacity + capacity / 2),
                                .swap_capable = rnd_chance(50),
                                .reserve_bytes = rnd_range(0, 4 * GIB),
                                .interval_usec = 2 * USEC_PER_SEC,
                        };
                        budget_rounds++;
                }
                for (size_t i = 0; i < n; i++) {
                        PolicyVM *v = vm + i;
                        v->scope_event = random_level(85);
                        v->scope_level = v->scope_event != PRESSURE_NONE ? v->scope_event : random_level(85);
                        v->free_page_reporting = rnd_chance(30);
                        if (guest[i].liar) {
                                liar_reports(v, now);
                                /* its QEMU's footprint: what the host sees, as a compromised QEMU shapes it */
                                v->host_rss_bytes = rnd_chance(30) ? UINT64_MAX : hostile_u64(v->ram_bytes);
                                v->host_swap_bytes = rnd_chance(30) ? UINT64_MAX : hostile_u64(v->ram_bytes);
                        } else {
                                honest_reports(v, &guest[i], now);
                                v->host_rss_bytes = rnd_chance(20) ? UINT64_MAX : rnd_range(0, v->ram_bytes);
                                v->host_swap_bytes = rnd_chance(50) ? 0 : rnd_range(0, v->ram_bytes / 4);
                        }
                        pre[i] = *v;
                        /* The twin sees the same guest through the boundary's clamps, and keeps
                         * its own policy state. */
                        PolicyVMState st = i < n && round > 0 ? twin[i].state : (PolicyVMState) {};
                        twin[i] = *v;
                        twin[i].state = st;
                        clamp_like_the_boundary(&twin[i]);
                }

                twin_host = host;
                usec_t next = policy_decide(&host, vm, n, now);
                assert_true(next > now);
                /* A lie above RAM buys nothing beyond what the RAM itself would: the same
                 * decisions, whatever the raw values were. */
                usec_t twin_next = policy_decide(&twin_host, twin, n, now);
                assert_int_equal(next, twin_next);
                host.last_pressure_usec = MAX(host.last_pressure_usec, twin_host.last_pressure_usec);
                for (size_t i = 0; i < n; i++)
                        if (vm[i].new_target_bytes != twin[i].new_target_bytes || vm[i].reason != twin[i].reason)
                                fail_msg("round %u, VM %zu (%s): target %" PRIu64 " (%s) from the raw values, %" PRIu64
                                         " (%s) from the same values clamped to its RAM %" PRIu64 " (actual reported %"
                                         PRIu64 ", available %" PRIu64 ")", round, i, guest[i].liar ? "liar" : "honest",
                                         vm[i].new_target_bytes, policy_reason_to_string(vm[i].reason),
                                         twin[i].new_target_bytes, policy_reason_to_string(twin[i].reason),
                                         vm[i].ram_bytes, pre[i].actual_bytes, pre[i].stats.available_bytes);

                for (size_t i = 0; i < n; i++) {
                        const PolicyVM *p = pre + i, *v = vm + i;
                        uint64_t min = bound_min(p), max = bound_max(p);

                        rounds_checked++;
                        if (v->new_target_bytes < min || v->new_target_bytes > max)
                                fail_msg("round %u, VM %zu (%s): target %" PRIu64 " outside [%" PRIu64 ", %" PRIu64
                                         "] (actual reported %" PRIu64 ", available %" PRIu64 ")", round, i,
                                         guest[i].liar ? "liar" : "honest", v->new_target_bytes, min, max,
                                         p->actual_bytes, p->stats.available_bytes);
                        if (guest[i].liar) {
                                liar_rounds++;
                                liar_at_max += v->new_target_bytes == max;
                                continue;
                        }
                        /* An honest guest is never taken below its floor, however the liars lie. */
                        if (v->new_target_bytes < p->target_bytes && knobs[i].preset == POLICY_PRESET_DEFAULT) {
                                uint64_t used = MIN(guest[i].used_bytes, p->actual_bytes);
                                uint64_t floor = CLAMP(MIN(used + reserve_of(p), max), min, max);
                                honest_takes_checked++;
                                if (v->new_target_bytes < MIN(p->target_bytes, floor))
                                        fail_msg("round %u: honest VM %zu taken to %" PRIu64 ", below its floor %" PRIu64
                                                 " (used %" PRIu64 ", reason %s)", round, i, v->new_target_bytes, floor,
                                                 used, policy_reason_to_string(v->reason));
                        }
                }

                for (size_t i = 0; i < n; i++)
                        vm[i].target_bytes = vm[i].new_target_bytes;
                /* time goes on, mostly a little, sometimes to the policy's own timer */
                now += rnd_chance(20) && next != USEC_INFINITY && next - now < 600 * USEC_PER_SEC ? next - now
                                                                                               : rnd_range(1, 30 * USEC_PER_SEC);
        }
}

static void test_hostile_guests(void **state) {
        seed_rng(POLICY_TEST_SEED_DEFAULT);
        for (unsigned t = 0; t < TRAJECTORIES; t++)
                run_trajectory(t % 2 == 1);
        print_message("hostile guests: %" PRIu64 " VM decisions in bounds (%" PRIu64 " of liars, %" PRIu64
                      " at their maximum; %" PRIu64 " rounds with a budget), %" PRIu64
                      " takes from honest guests checked against their floor; %" PRIu64 " reports of an actual"
                      " above RAM decided as if at RAM\n",
                      rounds_checked, liar_rounds, liar_at_max, budget_rounds, honest_takes_checked, lies_above_ram);
        assert_true(rounds_checked >= 500000);
        assert_true(honest_takes_checked >= 10000);
        assert_true(lies_above_ram >= 50000);
}

/* The listed edges, one at a time, against a fixed honest neighbour: the liar's target never
 * leaves its bounds, the neighbour's never goes below its floor. */
static void test_hostile_edges(void **state) {
        const uint64_t values[] = { 0, 1, UINT64_MAX, UINT64_MAX - 1, INT64_MAX, 2 * (uint64_t) 4 * GIB };
        PolicyKnobs k;

        policy_knobs_init_default(&k);
        for (size_t a = 0; a < ELEMENTSOF(values); a++)
                for (size_t b = 0; b < ELEMENTSOF(values); b++)
                        for (int budget = 0; budget < 2; budget++) {
                                PolicyVM vm[2];
                                PolicyHost host = {};
                                usec_t now = 1000 * USEC_PER_SEC;

                                for (int i = 0; i < 2; i++) {
                                        vm[i] = (PolicyVM) { .knobs = &k, .ram_bytes = 4 * GIB, .actual_bytes = 4 * GIB,
                                                             .target_bytes = 4 * GIB, .controllable = true,
                                                             .host_rss_bytes = 4 * GIB, .host_swap_bytes = 0 };
                                        guest_stats_init(&vm[i].stats);
                                }
                                if (budget)
                                        host.budget = (HostBudget) { .valid = true, .capacity_bytes = 6 * GIB,
                                                                     .used_bytes = 7 * GIB, .reserve_bytes = 512 * MIB,
                                                                     .swap_capable = true, .interval_usec = 2 * USEC_PER_SEC };
                                for (unsigned round = 0; round < 40; round++) {
                                        /* the liar: actual and available from the list, stamp jumping
                                         * back and forth, counters going up and down */
                                        vm[0].actual_bytes = values[(a + round) % ELEMENTSOF(values)];
                                        vm[0].stats.valid = true;
                                        vm[0].stats.available_bytes = values[b];
                                        vm[0].stats.free_bytes = values[(b + 1) % ELEMENTSOF(values)];
                                        vm[0].stats.major_faults = values[(a + b + round) % ELEMENTSOF(values)];
                                        vm[0].stats.alloc_stalls = values[(a + 2 * round) % ELEMENTSOF(values)];
                                        vm[0].stats.updated_usec = round % 3 == 0 ? now + 3600 * USEC_PER_SEC :
                                                                   round % 3 == 1 ? now - 20 * USEC_PER_SEC : UINT64_MAX;
                                        /* the neighbour: 1 GiB of its own, honest */
                                        vm[1].actual_bytes = vm[1].target_bytes;
                                        vm[1].stats.valid = true;
                                        vm[1].stats.updated_usec = now;
                                        vm[1].stats.available_bytes = vm[1].actual_bytes - GIB;
                                        host.event = host.level = round % 4 == 0 ? PRESSURE_NONE : (PressureLevel) (1 + round % 3);

                                        uint64_t before = vm[1].target_bytes;
                                        policy_decide(&host, vm, 2, now);
                                        for (int i = 0; i < 2; i++) {
                                                assert_true(vm[i].new_target_bytes >= 1 * GIB);   /* 25 % of 4 GiB */
                                                assert_true(vm[i].new_target_bytes <= 4 * GIB);
                                                vm[i].target_bytes = vm[i].new_target_bytes;
                                        }
                                        /* 1 GiB used + a 409.6 MiB reserve */
                                        assert_true(vm[1].new_target_bytes >= MIN(before, GIB + 4 * GIB / 10));
                                        now += 2 * USEC_PER_SEC;
                                }
                        }
}

/* guest_stats_clamp: byte values to RAM, "not reported" and counters untouched. */
static void test_stats_clamp(void **state) {
        GuestStats s;

        guest_stats_init(&s);
        s.available_bytes = UINT64_MAX - 1;
        s.free_bytes = 5 * GIB;
        s.caches_bytes = GIB;
        s.major_faults = UINT64_MAX - 1;
        s.swap_in_bytes = 100 * GIB;
        guest_stats_clamp(&s, 4 * GIB);
        assert_int_equal(s.available_bytes, 4 * GIB);
        assert_int_equal(s.free_bytes, 4 * GIB);
        assert_int_equal(s.caches_bytes, GIB);
        assert_int_equal(s.total_bytes, UINT64_MAX);     /* not reported */
        assert_int_equal(s.major_faults, UINT64_MAX - 1);
        assert_int_equal(s.swap_in_bytes, 100 * GIB);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_stats_clamp),
                cmocka_unit_test(test_hostile_edges),
                cmocka_unit_test(test_hostile_guests),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
