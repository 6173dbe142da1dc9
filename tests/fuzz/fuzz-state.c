/* Fuzz target: a machine's state file in /run (machine-state.h), as the next instance of the
 * daemon reads it: kept_state_parse() and kept_state_format().
 *
 * Input: one driver byte (the shared drivers' one; not used here), then the file as written.
 * Checks what the policy relies on: every value it gets is within the machine's knobs and RAM
 * (deadlines no further than their knob from now, the back-off within RecoveryDelaySec= ..
 * RecoveryDelayMaxSec=, sizes within RAM, past times not after now), a refused file gives
 * nothing, and an accepted one reads back the same from what kept_state_format() writes. */
#include <stdio.h>

#include "fuzz.h"
#include "machine-state.h"

#define NOW_MONO (1000 * USEC_PER_SEC)
#define NOW_REAL (UINT64_C(1800000000) * USEC_PER_SEC)
#define RAM (1 * GIB)

static void check(bool ok, const char *what) {
        if (!ok) {
                fprintf(stderr, "fuzz-state: %s\n", what);
                abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const KeptOwner owner = { .leader = 4242 };
        PolicyKnobs k;
        KeptState got, again;
        const char *why;
        char *text, *written = NULL;
        int r;

        if (size < 1)
                return 0;
        text = strndup((const char *) data + 1, size - 1);
        if (!text)
                return 0;
        policy_knobs_init_default(&k);
        r = kept_state_parse(text, &owner, &k, RAM, NOW_MONO, NOW_REAL, &got, &why);
        free(text);
        if (r < 0) {
                check(kept_state_is_empty(&got), "a refused file gave values");
                check(why != NULL, "a refused file without a reason");
                return 0;
        }
        check(got.hold_off_until_usec == 0 || got.hold_off_until_usec <= NOW_MONO + k.hold_off_usec, "hold-off beyond HoldOffSec=");
        check(got.manual_until_usec == 0 || got.manual_until_usec <= NOW_MONO + MAX(MANUAL_HOLD_USEC, k.recovery_delay_max_usec),
              "manual hold beyond its longest");
        check(got.recovery_delay_usec == 0 ||
              (got.recovery_delay_usec >= k.recovery_delay_usec && got.recovery_delay_usec <= k.recovery_delay_max_usec),
              "back-off outside its knobs");
        check(got.used_peak_bytes <= RAM && got.last_grow_target_bytes <= RAM, "a size above RAM");
        check(got.last_event_usec <= NOW_MONO && got.last_recovery_usec <= NOW_MONO && got.last_grow_usec <= NOW_MONO &&
              got.guest_pressure_usec <= NOW_MONO && got.used_peak_usec <= NOW_MONO, "a past time after now");
        check(kept_state_format(&got, &owner, NOW_MONO, NOW_REAL, &written) == 0, "format failed");
        check(kept_state_parse(written, &owner, &k, RAM, NOW_MONO, NOW_REAL, &again, &why) == 0, "own file refused");
        check(kept_state_equal(&got, &again), "own file read back differently");
        free(written);
        return 0;
}
