/* The state file a machine keeps in /run for the next instance of the daemon: format, parse, and
 * hostile input (garbage, overflow, signs, times far in the future, another VM's file). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "machine-state.h"

#define NOW_MONO (1000 * USEC_PER_SEC)            /* the host has been up 1000 s */
#define NOW_REAL (UINT64_C(1800000000) * USEC_PER_SEC)
#define RAM (1 * GIB)

static const KeptOwner owner = {
        .leader = 4242,
        .machine_id = SD_ID128_MAKE(11, 22, 33, 44, 55, 66, 77, 88, 99, aa, bb, cc, dd, ee, ff, 00),
        .boot_id = SD_ID128_MAKE(01, 02, 03, 04, 05, 06, 07, 08, 09, 0a, 0b, 0c, 0d, 0e, 0f, 10),
};

static PolicyKnobs knobs(void) {
        PolicyKnobs k;

        policy_knobs_init_default(&k);   /* HoldOffSec=120s, RecoveryDelaySec=30s..240s */
        return k;
}

static int parse(const char *text, KeptState *ret, usec_t now_mono, usec_t now_real) {
        PolicyKnobs k = knobs();
        const char *why;

        return kept_state_parse(text, &owner, &k, RAM, now_mono, now_real, ret, &why);
}

/* Written by one instance, read by the next 5 s later: every deadline 5 s shorter, every time
 * 5 s older, sizes and the back-off as they were. */
static void test_round_trip(void **state) {
        KeptState k = {
                .hold_off_until_usec = NOW_MONO + 90 * USEC_PER_SEC,
                .manual_until_usec = NOW_MONO + 20 * USEC_PER_SEC,
                .recovery_delay_usec = 120 * USEC_PER_SEC,
                .last_event_usec = NOW_MONO - 3 * USEC_PER_SEC,
                .last_recovery_usec = NOW_MONO - 40 * USEC_PER_SEC,
                .last_grow_usec = NOW_MONO - 1 * USEC_PER_SEC,
                .last_grow_target_bytes = 700 * MIB,
                .guest_pressure_usec = NOW_MONO - 7 * USEC_PER_SEC,
                .used_peak_bytes = 600 * MIB,
                .used_peak_usec = NOW_MONO - 100 * USEC_PER_SEC,
        }, got;
        char *text = NULL;
        usec_t d = 5 * USEC_PER_SEC;

        assert_int_equal(kept_state_format(&k, &owner, NOW_MONO, NOW_REAL, &text), 0);
        assert_non_null(strstr(text, "leader=4242\n"));
        assert_int_equal(parse(text, &got, NOW_MONO + d, NOW_REAL + d), 0);
        assert_true(kept_state_equal(&k, &got));
        /* a suspend of 60 s between the two: the monotonic clock stood still, the deadlines
         * went on running in real time */
        assert_int_equal(parse(text, &got, NOW_MONO + d, NOW_REAL + 60 * USEC_PER_SEC + d), 0);
        assert_int_equal(got.hold_off_until_usec, k.hold_off_until_usec - 60 * USEC_PER_SEC);
        assert_int_equal(got.manual_until_usec, 0);   /* over during the suspend */
        free(text);
}

static void test_empty_and_over(void **state) {
        KeptState k = { .hold_off_until_usec = NOW_MONO - 1 }, got;
        char *text = NULL;

        /* a deadline already over is not written at all */
        assert_int_equal(kept_state_format(&k, &owner, NOW_MONO, NOW_REAL, &text), 0);
        assert_null(strstr(text, "hold-off-until"));
        assert_int_equal(parse(text, &got, NOW_MONO, NOW_REAL), 0);
        assert_true(kept_state_is_empty(&got));
        free(text);
}

/* Deadlines never beyond the knob from now, the back-off within its knobs, sizes within RAM. */
static void test_clamped(void **state) {
        KeptState got;
        char text[1024];

        snprintf(text, sizeof text,
                 "leader=4242\n"
                 "hold-off-until=%llu\n"              /* a year from now */
                 "manual-hold-until=18446744073709551615\n"
                 "recovery-delay-usec=99999999999999\n"
                 "working-set-peak-bytes=18446744073709551615\n"
                 "working-set-peak=%llu\n"            /* in the future */
                 "last-grow=%llu\nlast-grow-target-bytes=%llu\n",
                 (unsigned long long) (NOW_REAL + 365ULL * 24 * 3600 * USEC_PER_SEC),
                 (unsigned long long) (NOW_REAL + 3600 * USEC_PER_SEC),
                 (unsigned long long) (NOW_REAL - USEC_PER_SEC), (unsigned long long) (8 * GIB));
        assert_int_equal(parse(text, &got, NOW_MONO, NOW_REAL), 6);
        assert_int_equal(got.hold_off_until_usec, NOW_MONO + 120 * USEC_PER_SEC);
        assert_int_equal(got.manual_until_usec, NOW_MONO + 240 * USEC_PER_SEC);  /* the longest hold */
        assert_int_equal(got.recovery_delay_usec, 240 * USEC_PER_SEC);
        assert_int_equal(got.used_peak_bytes, RAM);
        assert_int_equal(got.used_peak_usec, NOW_MONO);                          /* taken as now */
        assert_int_equal(got.last_grow_usec, NOW_MONO - USEC_PER_SEC);
        assert_int_equal(got.last_grow_target_bytes, RAM);

        /* a back-off below RecoveryDelaySec= is RecoveryDelaySec= */
        assert_int_equal(parse("leader=4242\nrecovery-delay-usec=1\n", &got, NOW_MONO, NOW_REAL), 1);
        assert_int_equal(got.recovery_delay_usec, 30 * USEC_PER_SEC);
        /* older than the monotonic clock (the real one set forward since): as old as can be */
        snprintf(text, sizeof text, "leader=4242\nlast-event=%llu\n",
                 (unsigned long long) (NOW_REAL - 5000 * USEC_PER_SEC));
        assert_int_equal(parse(text, &got, NOW_MONO, NOW_REAL), 0);
        assert_int_equal(got.last_event_usec, 1);
}

/* Garbage, overflow, signs, blanks: that value dropped, the rest kept, nothing trusted. */
static void test_garbage(void **state) {
        KeptState got;
        char text[2048];
        unsigned long long at = (unsigned long long) (NOW_REAL - 2 * USEC_PER_SEC);

        snprintf(text, sizeof text,
                 "leader=4242\n"
                 "hold-off-until=-5\n"
                 "manual-hold-until=18446744073709551616\n"      /* 2^64: overflow */
                 "recovery-delay-usec= 60000000\n"
                 "last-recovery=0x10\n"
                 "guest-pressure=\n"
                 "working-set-peak-bytes=1e9\n"
                 "no equals sign here\n"
                 "future-key=1\n"
                 "\x01\xff=\xfe\n"
                 "last-event=%llu\n"
                 "last-event-but-longer-than-any-line-we-would-ever-write-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx=1\n",
                 at);
        assert_int_equal(parse(text, &got, NOW_MONO, NOW_REAL), 10);
        KeptState want = { .last_event_usec = NOW_MONO - 2 * USEC_PER_SEC };
        assert_true(kept_state_equal(&got, &want));
        /* half a pair does not stand alone */
        snprintf(text, sizeof text, "leader=4242\nworking-set-peak-bytes=1000\n");
        assert_int_equal(parse(text, &got, NOW_MONO, NOW_REAL), 0);
        assert_int_equal(got.used_peak_bytes, 0);
        /* not a file of ours at all */
        assert_int_equal(parse("", &got, NOW_MONO, NOW_REAL), -ESTALE);
        assert_int_equal(parse("\n\n\n", &got, NOW_MONO, NOW_REAL), -ESTALE);
        char *big = malloc(KEPT_STATE_SIZE_MAX + 2);
        memset(big, 'x', KEPT_STATE_SIZE_MAX + 1);
        big[KEPT_STATE_SIZE_MAX + 1] = 0;
        assert_int_equal(parse(big, &got, NOW_MONO, NOW_REAL), -EFBIG);
        assert_true(kept_state_is_empty(&got));
        free(big);
}

/* Another VM's file (recreated under the same name while the daemon was down), or another boot's:
 * nothing of it is used. */
static void test_owner(void **state) {
        KeptState got;
        char text[512];

        snprintf(text, sizeof text, "leader=4243\nhold-off-until=%llu\n",
                 (unsigned long long) (NOW_REAL + USEC_PER_SEC));
        assert_int_equal(parse(text, &got, NOW_MONO, NOW_REAL), -ESTALE);
        assert_true(kept_state_is_empty(&got));
        assert_int_equal(parse("leader=-4242\n", &got, NOW_MONO, NOW_REAL), -ESTALE);
        assert_int_equal(parse("leader=4242\nleader=99999999999\n", &got, NOW_MONO, NOW_REAL), -ESTALE);
        assert_int_equal(parse("leader=4242\nmachine-id=00000000000000000000000000000001\n", &got, NOW_MONO, NOW_REAL),
                         -ESTALE);
        assert_int_equal(parse("leader=4242\nboot-id=nothex\n", &got, NOW_MONO, NOW_REAL), -ESTALE);
        assert_int_equal(parse("leader=4242\nboot-id=0102030405060708090a0b0c0d0e0f10\n", &got, NOW_MONO, NOW_REAL), 0);
        /* no owner at all: not ours */
        snprintf(text, sizeof text, "hold-off-until=%llu\n", (unsigned long long) (NOW_REAL + USEC_PER_SEC));
        assert_int_equal(parse(text, &got, NOW_MONO, NOW_REAL), -ESTALE);
}

/* Into the policy's state: the later time and the longer back-off win, so events the new
 * instance saw before the first attach are not undone. */
static void test_merge(void **state) {
        PolicyVMState st = { .last_event_usec = 500, .recovery_delay_usec = 0, .used_peak_bytes = 10, .used_peak_usec = 400 };
        KeptState k = { .last_event_usec = 300, .recovery_delay_usec = 60 * USEC_PER_SEC, .hold_off_until_usec = 900,
                        .used_peak_bytes = 20, .used_peak_usec = 100 };

        kept_state_merge(&st, &k);
        assert_int_equal(st.last_event_usec, 500);
        assert_int_equal(st.recovery_delay_usec, 60 * USEC_PER_SEC);
        assert_int_equal(st.hold_off_until_usec, 900);
        assert_int_equal(st.used_peak_bytes, 20);
        assert_int_equal(st.used_peak_usec, 100);   /* with its own age */
        KeptState back = kept_state_get(&st);
        assert_int_equal(back.hold_off_until_usec, 900);
}

/* What is worth a write: any deadline, back-off or size at once; a past time once it moved on by
 * an eighth of its window (RecoveryDelaySec= 30 s: 3.75 s; WorkingSetWindowSec= 5 min: 37.5 s). */
static void test_worth_writing(void **state) {
        PolicyKnobs k = knobs();
        KeptState saved = { .last_event_usec = NOW_MONO, .used_peak_bytes = 100, .used_peak_usec = NOW_MONO }, now = saved;

        assert_false(kept_state_worth_writing(&saved, &now, &k, RAM));
        now.last_event_usec = NOW_MONO + 3 * USEC_PER_SEC;
        now.used_peak_usec = NOW_MONO + 30 * USEC_PER_SEC;
        assert_false(kept_state_worth_writing(&saved, &now, &k, RAM));
        now.last_event_usec = NOW_MONO + 4 * USEC_PER_SEC;
        assert_true(kept_state_worth_writing(&saved, &now, &k, RAM));
        now = saved;
        now.used_peak_usec = NOW_MONO + 38 * USEC_PER_SEC;
        assert_true(kept_state_worth_writing(&saved, &now, &k, RAM));
        now = saved;
        now.last_recovery_usec = NOW_MONO;          /* a first recovery step: new */
        assert_true(kept_state_worth_writing(&saved, &now, &k, RAM));
        now = saved;
        now.hold_off_until_usec = NOW_MONO + 1;     /* a deadline, however small the change */
        assert_true(kept_state_worth_writing(&saved, &now, &k, RAM));
        now = saved;
        now.used_peak_bytes = 100 + RAM / 64 - 1;   /* a peak a few pages higher: not yet */
        assert_false(kept_state_worth_writing(&saved, &now, &k, RAM));
        now.used_peak_bytes = 100 + RAM / 64;
        assert_true(kept_state_worth_writing(&saved, &now, &k, RAM));
        now.used_peak_bytes = 99;                   /* lower (a new window): at once */
        assert_true(kept_state_worth_writing(&saved, &now, &k, RAM));
        now = saved;
        now.recovery_delay_usec = 60 * USEC_PER_SEC;
        assert_true(kept_state_worth_writing(&saved, &now, &k, RAM));
        now = saved;
        now.last_event_usec = NOW_MONO - 1;         /* back: written */
        assert_true(kept_state_worth_writing(&saved, &now, &k, RAM));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_empty_and_over),
                cmocka_unit_test(test_clamped),
                cmocka_unit_test(test_garbage),
                cmocka_unit_test(test_owner),
                cmocka_unit_test(test_merge),
                cmocka_unit_test(test_worth_writing),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
