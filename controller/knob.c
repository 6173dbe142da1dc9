/* The knob table and the knobs' text form (knob.h). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knob.h"
#include "psi.h"
#include "util.h"

#define KNOB(n, t, field, lo, hi, d) \
        { .name = n, .type = t, .offset = offsetof(PolicyKnobs, field), .min = lo, .max = hi, .doc = d }

/* Sizes are bounded to 16 EiB/1024 so that sums over a few thousand VMs cannot overflow. */
#define SIZE_KNOB_MAX (UINT64_MAX / 1024)
#define USEC_KNOB_MAX (30ULL * 24 * 3600 * USEC_PER_SEC)

const KnobInfo policy_knobs[] = {
        KNOB("Preset", KNOB_PRESET, preset, 0, _POLICY_PRESET_MAX - 1,
             "Policy: \"default\", or \"seed\" (the 2013 auto-ballooning: fixed steps per event, nothing else)"),
        KNOB("LowPressure", KNOB_TRIGGER, trigger[PRESSURE_LOW], 0, 0,
             "PSI trigger of the low level: \"some|full STALL WINDOW\" (e.g. \"some 100ms 1s\")"),
        KNOB("MediumPressure", KNOB_TRIGGER, trigger[PRESSURE_MEDIUM], 0, 0,
             "PSI trigger of the medium level"),
        KNOB("CriticalPressure", KNOB_TRIGGER, trigger[PRESSURE_CRITICAL], 0, 0,
             "PSI trigger of the critical level"),
        KNOB("Enabled", KNOB_BOOL, enabled, 0, 1,
             "Whether the policy moves this machine's balloon at all"),
        KNOB("MinimumMemory", KNOB_SIZE, minimum_bytes, 0, SIZE_KNOB_MAX,
             "Never shrink the guest below this; 0 = MinimumMemoryPercent of its RAM"),
        KNOB("MinimumMemoryPercent", KNOB_PERCENT, minimum_percent, 0, 100,
             "Floor as a share of the guest's RAM, used when MinimumMemory=0"),
        KNOB("MaximumMemory", KNOB_SIZE, maximum_bytes, 0, SIZE_KNOB_MAX,
             "Recovery grows the guest back to this; 0 = its configured RAM"),
        KNOB("Weight", KNOB_UINT32, weight, 1, 10000,
             "Relative claim on memory under host pressure, like CPUWeight=: higher is squeezed less"),
        KNOB("LowStep", KNOB_PERMILLE, step_permille[PRESSURE_LOW], 0, 1000,
             "Inflate step per low-pressure event, as a share of the guest's RAM"),
        KNOB("MediumStep", KNOB_PERMILLE, step_permille[PRESSURE_MEDIUM], 0, 1000,
             "Inflate step per medium-pressure event, as a share of the guest's RAM"),
        KNOB("CriticalStep", KNOB_PERMILLE, step_permille[PRESSURE_CRITICAL], 0, 1000,
             "Inflate step per critical-pressure event, as a share of the guest's RAM"),
        KNOB("StepEscalationMax", KNOB_UINT32, step_escalation_max, 1, 64,
             "Each event in a row doubles the step, up to this factor"),
        KNOB("SeedLowStep", KNOB_SIZE, seed_step_bytes[PRESSURE_LOW], 0, SIZE_KNOB_MAX,
             "Seed preset: inflate step per low-pressure event"),
        KNOB("SeedMediumStep", KNOB_SIZE, seed_step_bytes[PRESSURE_MEDIUM], 0, SIZE_KNOB_MAX,
             "Seed preset: inflate step per medium-pressure event"),
        KNOB("SeedCriticalStep", KNOB_SIZE, seed_step_bytes[PRESSURE_CRITICAL], 0, SIZE_KNOB_MAX,
             "Seed preset: inflate step per critical-pressure event"),
        KNOB("Reserve", KNOB_SIZE, reserve_bytes, 0, SIZE_KNOB_MAX,
             "Available memory a guest always keeps above its working set"),
        KNOB("ReservePercent", KNOB_PERCENT, reserve_percent, 0, 100,
             "The same reserve as a share of the guest's RAM; the larger of the two applies"),
        KNOB("RecoveryDelaySec", KNOB_USEC, recovery_delay_usec, 0, USEC_KNOB_MAX,
             "Time without pressure before memory is given back"),
        KNOB("RecoveryDelayMaxSec", KNOB_USEC, recovery_delay_max_usec, 0, USEC_KNOB_MAX,
             "Pressure back soon after giving memory back doubles the time without pressure, up to this"),
        KNOB("RecoveryStep", KNOB_PERMILLE, recovery_permille, 1, 1000,
             "Memory given back per recovery step, as a share of the guest's RAM"),
        KNOB("RecoveryIntervalSec", KNOB_USEC, recovery_interval_usec, USEC_PER_MSEC, USEC_KNOB_MAX,
             "Minimum time between two recovery steps of one guest"),
        KNOB("HoldOffSec", KNOB_USEC, hold_off_usec, 0, USEC_KNOB_MAX,
             "After a guest deflated its balloon itself, do not inflate it again for this long unless pressure is critical"),
        KNOB("GuestStatsMaxAgeSec", KNOB_USEC, stats_max_age_usec, USEC_PER_SEC, USEC_KNOB_MAX,
             "Guest statistics older than this count as missing: the guest gets only small steps"),
        KNOB("GuestMajorFaultRate", KNOB_UINT32, guest_major_fault_rate, 1, UINT32_MAX,
             "Major faults per second above which a guest counts as under pressure of its own"),
        KNOB("GuestAvailableDrop", KNOB_PERMILLE, available_drop_permille, 1, 1000,
             "Growth of the guest's own use between two samples, as a share of RAM, that counts as pressure"),
        KNOB("GuestPressureStep", KNOB_PERMILLE, guest_pressure_permille, 0, 1000,
             "Memory given back per interval to a guest under pressure of its own, unless host pressure is critical"),
        KNOB("WorkingSetWindowSec", KNOB_USEC, working_set_window_usec, 0, USEC_KNOB_MAX,
             "The working set never inflated into is the guest's peak use over this window"),
};

const size_t policy_knobs_count = ELEMENTSOF(policy_knobs);

const KnobInfo *policy_knob_find(const char *name) {
        for (size_t i = 0; name && i < policy_knobs_count; i++)
                if (streq(policy_knobs[i].name, name))
                        return &policy_knobs[i];
        return NULL;
}

/* A knob mask is a uint64_t, one bit per knob (knob_bit()). */
_Static_assert(ELEMENTSOF(policy_knobs) <= 64, "the knob table no longer fits the 64-bit knob masks");

int knob_describe_range(const KnobInfo *k, char **ret) {
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX];
        int r = -1;

        switch (k->type) {
        case KNOB_BOOL:
                r = asprintf(ret, "a boolean");
                break;
        case KNOB_SIZE:
                r = asprintf(ret, "a size from %s to %s (e.g. 512M, 2G)",
                             format_size(a, sizeof a, k->min), format_size(b, sizeof b, k->max));
                break;
        case KNOB_UINT32:
                r = asprintf(ret, "an integer from %" PRIu64 " to %" PRIu64, k->min, k->max);
                break;
        case KNOB_PERMILLE:
                r = asprintf(ret, "a percentage from %.1f%% to %.1f%%", k->min / 10.0, k->max / 10.0);
                break;
        case KNOB_PERCENT:
                r = asprintf(ret, "a percentage from %" PRIu64 "%% to %" PRIu64 "%%", k->min, k->max);
                break;
        case KNOB_USEC:
                r = asprintf(ret, "a duration from %.3gs to %.3gs (e.g. 500ms, 30s, 2min)",
                             (double) k->min / USEC_PER_SEC, (double) k->max / USEC_PER_SEC);
                break;
        case KNOB_PRESET:
                r = asprintf(ret, "one of: default, seed");
                break;
        case KNOB_TRIGGER:
                r = asprintf(ret, "a PSI trigger \"some|full STALL WINDOW\" with 500ms <= WINDOW <= 10s "
                             "and 0 < STALL <= WINDOW (e.g. \"some 100ms 1s\")");
                break;
        }
        return r < 0 ? -ENOMEM : 0;
}

static int knob_error(const KnobInfo *k, const char *value, int error, char **ret) {
        _cleanup_free_ char *range = NULL;

        if (knob_describe_range(k, &range) < 0 ||
            asprintf(ret, "Invalid value \"%s\" for %s: expected %s.", value, k->name, range) < 0)
                return -ENOMEM;
        return error;
}

/* "12.5%" or "12.5" → permille; "12.5‰" is not worth supporting. */
static int parse_percent_permille(const char *value, uint64_t *ret) {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (errno != 0 || end == value || (*end && !streq(end, "%")) || !isfinite(v) || v < 0)
                return -EINVAL;
        *ret = (uint64_t) llround(v * 10.0);
        return 0;
}

int knob_parse(const KnobInfo *k, const char *value, PolicyKnobs *knobs, char **error) {
        uint64_t v = 0;
        int r;

        switch (k->type) {
        case KNOB_BOOL:
                r = parse_boolean(value);
                if (r < 0)
                        return knob_error(k, value, -EINVAL, error);
                *(bool *) knob_ptr(k, knobs) = r;
                return 0;
        case KNOB_PRESET: {
                PolicyPreset p = policy_preset_from_string(value);
                if (p < 0)
                        return knob_error(k, value, -EINVAL, error);
                *(PolicyPreset *) knob_ptr(k, knobs) = p;
                return 0;
        }
        case KNOB_TRIGGER: {
                PsiTriggerSpec spec;
                r = psi_trigger_parse(value, &spec);
                if (r < 0)
                        return knob_error(k, value, r, error);
                *(PsiTriggerSpec *) knob_ptr(k, knobs) = spec;
                return 0;
        }
        case KNOB_SIZE:
                r = parse_size(value, &v);
                break;
        case KNOB_USEC:
                r = parse_duration(value, &v);
                break;
        case KNOB_PERMILLE:
                r = parse_percent_permille(value, &v);
                break;
        case KNOB_PERCENT:
        case KNOB_UINT32: {
                char *end;
                errno = 0;
                unsigned long long u = strtoull(value, &end, 10);
                bool pct_ok = k->type == KNOB_PERCENT && streq(end, "%");
                r = errno != 0 || end == value || (*end && !pct_ok) || value[0] == '-' ? -EINVAL : 0;
                v = u;
                break;
        }
        default:
                r = -EINVAL;
        }
        if (r < 0)
                return knob_error(k, value, -EINVAL, error);
        if (v < k->min || v > k->max)
                return knob_error(k, value, -ERANGE, error);

        switch (k->type) {
        case KNOB_SIZE:
        case KNOB_USEC:
                *(uint64_t *) knob_ptr(k, knobs) = v;
                break;
        default:
                *(uint32_t *) knob_ptr(k, knobs) = (uint32_t) v;
        }
        return 0;
}

int knob_format(const KnobInfo *k, const PolicyKnobs *knobs, char **ret) {
        const void *p = knob_cptr(k, knobs);
        int r = -1;

        switch (k->type) {
        case KNOB_BOOL:
                r = asprintf(ret, "%s", *(const bool *) p ? "yes" : "no");
                break;
        case KNOB_PRESET:
                r = asprintf(ret, "%s", policy_preset_to_string(*(const PolicyPreset *) p));
                break;
        case KNOB_TRIGGER: {
                char buf[64];
                psi_trigger_format(p, buf, sizeof buf);
                r = asprintf(ret, "%s", buf);
                break;
        }
        case KNOB_SIZE:
                r = asprintf(ret, "%" PRIu64, *(const uint64_t *) p);
                break;
        case KNOB_USEC: {
                uint64_t u = *(const uint64_t *) p;
                if (u % USEC_PER_SEC == 0)
                        r = asprintf(ret, "%" PRIu64 "s", u / USEC_PER_SEC);
                else if (u % USEC_PER_MSEC == 0)
                        r = asprintf(ret, "%" PRIu64 "ms", u / USEC_PER_MSEC);
                else
                        r = asprintf(ret, "%" PRIu64 "us", u);
                break;
        }
        case KNOB_PERMILLE: {
                uint32_t u = *(const uint32_t *) p;
                r = u % 10 == 0 ? asprintf(ret, "%u%%", u / 10) : asprintf(ret, "%.1f%%", u / 10.0);
                break;
        }
        case KNOB_PERCENT:
                r = asprintf(ret, "%u%%", *(const uint32_t *) p);
                break;
        case KNOB_UINT32:
                r = asprintf(ret, "%u", *(const uint32_t *) p);
                break;
        }
        return r < 0 ? -ENOMEM : 0;
}

size_t knob_size(const KnobInfo *k) {
        switch (k->type) {
        case KNOB_BOOL:
                return sizeof(bool);
        case KNOB_PRESET:
                return sizeof(PolicyPreset);
        case KNOB_TRIGGER:
                return sizeof(PsiTriggerSpec);
        case KNOB_SIZE:
        case KNOB_USEC:
                return sizeof(uint64_t);
        default:
                return sizeof(uint32_t);
        }
}

bool knob_equal(const KnobInfo *k, const PolicyKnobs *a, const PolicyKnobs *b) {
        if (k->type == KNOB_TRIGGER) {   /* has padding: compare the fields */
                const PsiTriggerSpec *x = knob_cptr(k, a), *y = knob_cptr(k, b);
                return x->full == y->full && x->stall_usec == y->stall_usec && x->window_usec == y->window_usec;
        }
        return memcmp(knob_cptr(k, a), knob_cptr(k, b), knob_size(k)) == 0;
}
