/* Policy knobs as D-Bus values: one table of types and ranges for the daemon and the CLI. */
#include <inttypes.h>
#include <stdio.h>

#include "config.h"
#include "knob-bus.h"
#include "psi.h"

char knob_bus_type(const KnobInfo *k) {
        switch (k->type) {
        case KNOB_BOOL:
                return 'b';
        case KNOB_SIZE:
        case KNOB_USEC:
                return 't';
        case KNOB_PRESET:
        case KNOB_TRIGGER:
                return 's';
        default:
                return 'u';
        }
}

const char *knob_bus_signature(const KnobInfo *k) {
        switch (knob_bus_type(k)) {
        case 'b':
                return "b";
        case 't':
                return "t";
        case 's':
                return "s";
        default:
                return "u";
        }
}

int knob_bus_append(sd_bus_message *m, const KnobInfo *k, const PolicyKnobs *knobs) {
        const void *p = knob_cptr(k, knobs);

        switch (knob_bus_type(k)) {
        case 'b': {
                int b = *(const bool *) p;
                return sd_bus_message_append_basic(m, 'b', &b);
        }
        case 's':
                if (k->type == KNOB_TRIGGER) {
                        char buf[64];
                        psi_trigger_format(p, buf, sizeof buf);
                        return sd_bus_message_append_basic(m, 's', buf);
                }
                return sd_bus_message_append_basic(m, 's', policy_preset_to_string(*(const PolicyPreset *) p));
        default:
                return sd_bus_message_append_basic(m, knob_bus_type(k), p);
        }
}

int knob_bus_describe_range(const KnobInfo *k, char **ret) {
        const char *what;
        int r;

        switch (k->type) {
        case KNOB_BOOL:
                return (*ret = strdup("a boolean (b)")) ? 0 : -ENOMEM;
        case KNOB_PRESET:
                return (*ret = strdup("one of \"default\", \"seed\" (s)")) ? 0 : -ENOMEM;
        case KNOB_TRIGGER:
                return (*ret = strdup("a PSI trigger \"some|full STALL WINDOW\", 500ms <= WINDOW <= 10s, "
                                      "0 < STALL <= WINDOW, plain numbers in microseconds (s)")) ? 0 : -ENOMEM;
        case KNOB_SIZE:
                what = "a size in bytes (t)";
                break;
        case KNOB_USEC:
                what = "a duration in microseconds (t)";
                break;
        case KNOB_PERMILLE:
                what = "permille of the guest's RAM (u)";
                break;
        case KNOB_PERCENT:
                what = "a percentage (u)";
                break;
        default:
                what = "an integer (u)";
        }
        r = asprintf(ret, "%s from %" PRIu64 " to %" PRIu64, what, k->min, k->max);
        return r < 0 ? -ENOMEM : 0;
}

static int range_error(const KnobInfo *k, const char *value, sd_bus_error *error) {
        _cleanup_free_ char *range = NULL;

        if (knob_bus_describe_range(k, &range) < 0)
                return -ENOMEM;
        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid value %s for %s: expected %s.",
                                 value, k->name, range);
}

int knob_bus_read(sd_bus_message *m, const KnobInfo *k, PolicyKnobs *knobs, sd_bus_error *error) {
        char buf[32];
        int r;

        switch (knob_bus_type(k)) {
        case 'b': {
                int b;
                r = sd_bus_message_read_basic(m, 'b', &b);
                if (r < 0)
                        return r;
                *(bool *) knob_ptr(k, knobs) = b;
                return 0;
        }
        case 's': {
                const char *s;
                PolicyPreset p;
                r = sd_bus_message_read_basic(m, 's', &s);
                if (r < 0)
                        return r;
                if (k->type == KNOB_TRIGGER) {
                        PsiTriggerSpec spec;
                        if (psi_trigger_parse(s, &spec) < 0) {
                                _cleanup_free_ char *quoted = NULL;
                                if (asprintf(&quoted, "\"%s\"", s) < 0)
                                        return -ENOMEM;
                                return range_error(k, quoted, error);
                        }
                        *(PsiTriggerSpec *) knob_ptr(k, knobs) = spec;
                        return 0;
                }
                p = policy_preset_from_string(s);
                if (p < 0) {
                        _cleanup_free_ char *quoted = NULL;
                        if (asprintf(&quoted, "\"%s\"", s) < 0)
                                return -ENOMEM;
                        return range_error(k, quoted, error);
                }
                *(PolicyPreset *) knob_ptr(k, knobs) = p;
                return 0;
        }
        case 't': {
                uint64_t v;
                r = sd_bus_message_read_basic(m, 't', &v);
                if (r < 0)
                        return r;
                if (v < k->min || v > k->max) {
                        snprintf(buf, sizeof buf, "%" PRIu64, v);
                        return range_error(k, buf, error);
                }
                *(uint64_t *) knob_ptr(k, knobs) = v;
                return 0;
        }
        default: {
                uint32_t v;
                r = sd_bus_message_read_basic(m, 'u', &v);
                if (r < 0)
                        return r;
                if (v < k->min || v > k->max) {
                        snprintf(buf, sizeof buf, "%" PRIu32, v);
                        return range_error(k, buf, error);
                }
                *(uint32_t *) knob_ptr(k, knobs) = v;
                return 0;
        }
        }
}

int knob_bus_read_assignments(sd_bus_message *m, PolicyKnobs *knobs, uint64_t *ret_mask, sd_bus_error *error) {
        uint64_t mask = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "(sv)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'r', "sv")) > 0) {
                const char *name, *contents;
                const KnobInfo *k;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                k = policy_knob_find(name);
                if (!k)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown property %s: not a policy knob (see org.autoballoon1(5)).",
                                                 name);
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        return r;
                if (!streq(contents, knob_bus_signature(k))) {
                        _cleanup_free_ char *range = NULL;
                        if (knob_bus_describe_range(k, &range) < 0)
                                return -ENOMEM;
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Wrong type '%s' for %s: expected %s.", contents, name, range);
                }
                r = sd_bus_message_enter_container(m, 'v', contents);
                if (r < 0)
                        return r;
                r = knob_bus_read(m, k, knobs, error);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                mask |= knob_bit(k);
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret_mask = mask;
        return 0;
}
