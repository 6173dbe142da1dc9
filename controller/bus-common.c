/* What the Manager's and the Machines' bus faces share: the checks and the persistence of knob
 * writes, and the vtables with one writable property per knob (bus-common.h). */
#include <inttypes.h>
#include <stdio.h>

#include "auth.h"
#include "bus-common.h"
#include "config.h"
#include "knob-bus.h"
#include "log.h"

/* The checks between knobs: the floor below the ceiling, both within the VM's RAM (ram_bytes
 * 0: not known yet, or the defaults). Only when the call touches a bound: a hand-written
 * drop-in that disagrees must not block unrelated changes. */
int bus_check_bounds(const PolicyKnobs *k, uint64_t mask, uint64_t ram_bytes, sd_bus_error *error) {
        const KnobInfo *kmin = policy_knob_find("MinimumMemory"), *kmax = policy_knob_find("MaximumMemory");
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX];
        uint64_t max;

        if (!(mask & (knob_bit(kmin) | knob_bit(kmax))))
                return 0;
        if (ram_bytes > 0) {
                if (k->minimum_bytes > ram_bytes)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid value %" PRIu64 " for MinimumMemory: above the machine's "
                                                 "configured RAM; expected a size in bytes (t) from 0 to %" PRIu64 " (%s).",
                                                 k->minimum_bytes, ram_bytes, format_size(a, sizeof a, ram_bytes));
                if (k->maximum_bytes > ram_bytes)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Invalid value %" PRIu64 " for MaximumMemory: above the machine's "
                                                 "configured RAM; expected a size in bytes (t) from 0 to %" PRIu64 " (%s), "
                                                 "0 meaning all of it.",
                                                 k->maximum_bytes, ram_bytes, format_size(a, sizeof a, ram_bytes));
        }
        max = k->maximum_bytes ?: ram_bytes;
        if (k->minimum_bytes > 0 && max > 0 && k->minimum_bytes > max)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid value %" PRIu64 " (%s) for MinimumMemory: above MaximumMemory "
                                         "(%" PRIu64 ", %s); expected MinimumMemory from 0 to %" PRIu64 ".",
                                         k->minimum_bytes, format_size(a, sizeof a, k->minimum_bytes), max,
                                         format_size(b, sizeof b, max), max);
        return 0;
}

/* "Weight=200 Enabled=no" for the log. */
char *bus_format_assignments(const PolicyKnobs *knobs, uint64_t mask) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        const char *sep = "";

        if (!f)
                return NULL;
        for (size_t i = 0; i < policy_knobs_count; i++) {
                _cleanup_free_ char *v = NULL;
                if ((mask & knob_bit(&policy_knobs[i])) && knob_format(&policy_knobs[i], knobs, &v) >= 0) {
                        fprintf(f, "%s%s=%s", sep, policy_knobs[i].name, v);
                        sep = " ";
                }
        }
        fclose(f);
        return buf;
}

/* Write the drop-in, then apply: a file that cannot be written changes nothing. A persistent
 * change also takes the same keys out of the runtime drop-in, which is read later and would
 * otherwise win at the next reload. */
int bus_save_knobs(const char *path, const char *runtime_path, const char *section, const PolicyKnobs *knobs,
                      uint64_t mask, bool runtime, sd_bus_error *error) {
        int r;

        r = config_dropin_save_knobs(runtime ? runtime_path : path, section, knobs, mask);
        if (r < 0) {
                log_error_errno(r, "Failed to write %s: %m", runtime ? runtime_path : path);
                return sd_bus_error_set_errnof(error, r, "Failed to write %s: %m", runtime ? runtime_path : path);
        }
        if (!runtime) {
                r = config_dropin_save_knobs(runtime_path, section, NULL, mask);
                if (r < 0)
                        log_warning_errno(r, "Failed to remove the same settings from %s, which overrides %s "
                                          "until the daemon restarts: %m", runtime_path, path);
        }
        return 0;
}

/* busctl set-property: a runtime change of one knob. polkit was asked (asynchronously) by
 * on_property_write() before sd-bus called the setter. Reads the new value into a copy of
 * current; *ret_k says which knob. */
int bus_read_knob_write(sd_bus *bus, AuthRegistry *auth, const char *property, sd_bus_message *value,
                           const PolicyKnobs *current, PolicyKnobs *ret, const KnobInfo **ret_k, sd_bus_error *error) {
        const KnobInfo *k = policy_knob_find(property);
        int r;

        if (!k)
                return -ENOENT;
        r = auth_check_granted(auth, sd_bus_get_current_message(bus), AUTH_ACTION_MANAGE, error);
        if (r < 0)
                return r;
        *ret = *current;
        *ret_k = k;
        return knob_bus_read(value, k, ret, error);
}

/* START + fixed + one writable property per knob + END. */
sd_bus_vtable *bus_build_vtable(const sd_bus_vtable *fixed, size_t n_fixed, sd_bus_property_get_t getter,
                                   sd_bus_property_set_t setter) {
        sd_bus_vtable *vt = calloc(n_fixed + policy_knobs_count + 2, sizeof *vt);
        size_t n = 0;

        if (!vt)
                return NULL;
        vt[n++] = (sd_bus_vtable) SD_BUS_VTABLE_START(0);
        for (size_t i = 0; i < n_fixed; i++)
                vt[n++] = fixed[i];
        for (size_t i = 0; i < policy_knobs_count; i++)
                vt[n++] = (sd_bus_vtable) SD_BUS_WRITABLE_PROPERTY(policy_knobs[i].name,
                                                                   knob_bus_signature(&policy_knobs[i]), getter, setter, 0,
                                                                   SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE |
                                                                   SD_BUS_VTABLE_UNPRIVILEGED);
        vt[n++] = (sd_bus_vtable) SD_BUS_VTABLE_END;
        return vt;
}

int bus_property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        char **s = userdata;
        return sd_bus_message_append(reply, "s", *s ?: "");
}

int bus_property_get_level(sd_bus *bus, const char *path, const char *interface, const char *property,
                           sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        PressureLevel *l = userdata;
        return sd_bus_message_append(reply, "s", pressure_level_to_string(*l));
}
