/* org.autoballoon1: the Manager object and one Machine object per VM. Only vtables and their
 * handlers live here; the state is in manager.c and machine.c, persistence in config.c.
 * The documented API is dbus/org.autoballoon1.*.xml; a test compares it with what this
 * file registers. */
#include <inttypes.h>
#include <stdio.h>

#include "auth.h"
#include "bus-names.h"
#include "config.h"
#include "knob-bus.h"
#include "log.h"
#include "machine.h"
#include "manager.h"

/* --- knobs: reading, checking, applying --------------------------------------------------- */

/* The checks between knobs: the floor below the ceiling, both within the VM's RAM (ram_bytes
 * 0: not known yet, or the defaults). Only when the call touches a bound: a hand-written
 * drop-in that disagrees must not block unrelated changes. */
static int check_bounds(const PolicyKnobs *k, uint64_t mask, uint64_t ram_bytes, sd_bus_error *error) {
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
static char *format_assignments(const PolicyKnobs *knobs, uint64_t mask) {
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
static int save_knobs(const char *path, const char *runtime_path, const char *section, const PolicyKnobs *knobs,
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

static int machine_set_knobs(sd_bus_message *message, Machine *machine, const PolicyKnobs *knobs, uint64_t mask,
                             bool runtime, sd_bus_error *error) {
        Manager *m = machine->manager;
        _cleanup_free_ char *path = NULL, *runtime_path = NULL, *what = NULL;
        int r;

        r = check_bounds(knobs, mask, machine->ram_bytes, error);
        if (r < 0 || mask == 0)
                return r;
        r = config_machine_dropin_path(&m->config, machine->name, false, &path);
        if (r >= 0)
                r = config_machine_dropin_path(&m->config, machine->name, true, &runtime_path);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "No drop-in path for machine %s: %m", machine->name);
        r = save_knobs(path, runtime_path, "Machine", knobs, mask, runtime, error);
        if (r < 0)
                return r;

        what = format_assignments(knobs, mask);
        log_info("Machine %s: %s set by %s%s.", machine->name, strempty(what),
                 strempty(sd_bus_message_get_sender(message)), runtime ? " (runtime)" : "");
        machine_apply_knobs(machine, knobs, machine->config.knobs_set | mask);
        manager_run_policy(m, PRESSURE_NONE, NULL, PRESSURE_NONE);
        return 0;
}

static int manager_set_default_knobs(sd_bus_message *message, Manager *m, const PolicyKnobs *knobs, uint64_t mask,
                                     bool runtime, sd_bus_error *error) {
        _cleanup_free_ char *path = NULL, *runtime_path = NULL, *what = NULL;
        int r;

        r = check_bounds(knobs, mask, 0, error);
        if (r < 0 || mask == 0)
                return r;
        r = config_defaults_dropin_path(&m->config, m->config_path, false, &path);
        if (r >= 0)
                r = config_defaults_dropin_path(&m->config, m->config_path, true, &runtime_path);
        if (r < 0)
                return r;
        r = save_knobs(path, runtime_path, "Defaults", knobs, mask, runtime, error);
        if (r < 0)
                return r;

        what = format_assignments(knobs, mask);
        log_info("Defaults: %s set by %s%s.", strempty(what), strempty(sd_bus_message_get_sender(message)),
                 runtime ? " (runtime)" : "");
        manager_apply_defaults(m, knobs);
        return 0;
}

/* --- knob properties, generated from policy_knobs[] -------------------------------------- */

static int property_get_machine_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        const KnobInfo *k = policy_knob_find(property);

        return k ? knob_bus_append(reply, k, &machine->config.knobs) : -ENOENT;
}

static int property_get_default_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const KnobInfo *k = policy_knob_find(property);

        return k ? knob_bus_append(reply, k, &m->config.defaults) : -ENOENT;
}

/* busctl set-property: a runtime change of one knob. polkit was asked (asynchronously) by
 * on_property_write() before sd-bus called the setter. Reads the new value into a copy of
 * current; *ret_k says which knob. */
static int read_knob_write(sd_bus *bus, Manager *m, const char *property, sd_bus_message *value,
                           const PolicyKnobs *current, PolicyKnobs *ret, const KnobInfo **ret_k, sd_bus_error *error) {
        const KnobInfo *k = policy_knob_find(property);
        int r;

        if (!k)
                return -ENOENT;
        r = auth_check_granted(m->auth, sd_bus_get_current_message(bus), AUTH_ACTION_MANAGE, error);
        if (r < 0)
                return r;
        *ret = *current;
        *ret_k = k;
        return knob_bus_read(value, k, ret, error);
}

static int property_set_machine_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *value, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        const KnobInfo *k;
        PolicyKnobs knobs;
        int r;

        r = read_knob_write(bus, machine->manager, property, value, &machine->config.knobs, &knobs, &k, error);
        if (r < 0)
                return r;
        return machine_set_knobs(sd_bus_get_current_message(bus), machine, &knobs, knob_bit(k), true, error);
}

static int property_set_default_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *value, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const KnobInfo *k;
        PolicyKnobs knobs;
        int r;

        r = read_knob_write(bus, m, property, value, &m->config.defaults, &knobs, &k, error);
        if (r < 0)
                return r;
        return manager_set_default_knobs(sd_bus_get_current_message(bus), m, &knobs, knob_bit(k), true, error);
}

/* --- Machine ------------------------------------------------------------------------------- */

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        return sd_bus_message_append(reply, "s", machine_state_to_string(machine->state));
}

static int property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        char **s = userdata;
        return sd_bus_message_append(reply, "s", *s ?: "");
}

static int property_get_level(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        PressureLevel *l = userdata;
        return sd_bus_message_append(reply, "s", pressure_level_to_string(*l));
}

static int property_get_available(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        uint64_t v = machine->stats.valid ? machine->stats.available_bytes : UINT64_MAX;
        return sd_bus_message_append(reply, "t", v);
}

static int property_get_bool(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        bool *b = userdata;
        return sd_bus_message_append(reply, "b", *b);
}

static int property_get_last_move(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        return sd_bus_message_append(reply, "(tsstt)", machine->last_move.realtime_usec,
                                     machine->last_move.realtime_usec ? policy_reason_to_string(machine->last_move.reason) : "",
                                     machine->last_move.realtime_usec ? pressure_level_to_string(machine->last_move.level) : "",
                                     machine->last_move.before_bytes, machine->last_move.after_bytes);
}

static int property_get_effective(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        return sd_bus_message_append(reply, "t", streq(property, "EffectiveMinimumMemory") ?
                                     machine_minimum(machine) : machine_maximum(machine));
}

/* What the host holds for the VM, as last read (with the guest stats, or on a budget or pressure
 * event): it changes all the time, so no signal. UINT64_MAX: not read (yet). */
static int property_get_footprint(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        return sd_bus_message_append(reply, "t", streq(property, "HostSwapMemory") ? machine->host_swap_bytes
                                                                                    : machine->host_rss_bytes);
}

static const sd_bus_vtable machine_vtable_fixed[] = {
        SD_BUS_PROPERTY("Name", "s", property_get_string, offsetof(Machine, name), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Unit", "s", property_get_string, offsetof(Machine, unit), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ControlGroup", "s", property_get_string, offsetof(Machine, control_group), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Leader", "u", NULL, offsetof(Machine, leader), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("QMPSocket", "s", property_get_string, offsetof(Machine, qmp_socket), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Backend", "s", property_get_string, offsetof(Machine, backend), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StateReason", "s", property_get_string, offsetof(Machine, state_reason), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MemorySize", "t", NULL, offsetof(Machine, ram_bytes), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActualMemory", "t", NULL, offsetof(Machine, actual_bytes), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TargetMemory", "t", NULL, offsetof(Machine, target_bytes), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("EffectiveMinimumMemory", "t", property_get_effective, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("EffectiveMaximumMemory", "t", property_get_effective, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("GuestAvailableMemory", "t", property_get_available, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ScopePressure", "s", property_get_level, offsetof(Machine, scope_level), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastMove", "(tsstt)", property_get_last_move, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("HostResidentMemory", "t", property_get_footprint, 0, 0),
        SD_BUS_PROPERTY("HostSwapMemory", "t", property_get_footprint, 0, 0),
        SD_BUS_PROPERTY("FreePageReporting", "b", property_get_bool, offsetof(Machine, free_page_reporting), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
};

/* --- Manager ------------------------------------------------------------------------------- */

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PROJECT_VERSION);
}

static int property_get_host_memory_source(sd_bus *bus, const char *path, const char *interface, const char *property,
                                           sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        return sd_bus_message_append(reply, "s", m->host_memory ? host_memory_path(m->host_memory) : "");
}

static int property_get_host_reserve(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_free_ char *s = NULL;
        int r = host_memory_reserve_format(m->config.host_memory_reserve_bytes, m->config.host_memory_reserve_permille, &s);

        return r < 0 ? r : sd_bus_message_append(reply, "s", s);
}

/* busctl set-property: a runtime change, written to the runtime drop-in of the main config as
 * set-default does for the knobs, so that it lasts as long as they do. */
static int property_set_host_reserve(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *value, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_free_ char *dropin = NULL, *text = NULL;
        uint64_t bytes;
        uint32_t permille;
        const char *v;
        int r;

        r = auth_check_granted(m->auth, sd_bus_get_current_message(bus), AUTH_ACTION_MANAGE, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(value, "s", &v);
        if (r < 0)
                return r;
        r = host_memory_reserve_parse(v, &bytes, &permille);
        if (r < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid HostMemoryReserve \"%s\": a size (512M, 2G) or a share of the host's memory from 0%% to %u%%",
                                         v, HOST_MEMORY_RESERVE_PERMILLE_MAX / 10);
        r = config_defaults_dropin_path(&m->config, m->config_path, true, &dropin);
        if (r >= 0)
                r = host_memory_reserve_format(bytes, permille, &text);
        if (r >= 0)
                r = config_dropin_update(dropin, "Manager", (char *[]) { (char *) "HostMemoryReserve", NULL },
                                         (char *[]) { text, NULL });
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to save HostMemoryReserve=: %m");
        log_info("HostMemoryReserve=%s set by %s (runtime).", text, strempty(sd_bus_message_get_sender(sd_bus_get_current_message(bus))));
        manager_set_host_reserve(m, bytes, permille);
        return 0;
}

/* The budget as it is now, read when asked (it changes all the time, so no signal). */
static int property_get_budget(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        HostBudget b = {};
        int64_t balance = 0;

        (void) manager_budget_now(m, &b, &balance);
        if (streq(property, "HostMemoryBalance"))
                return sd_bus_message_append(reply, "x", b.valid ? balance : INT64_MIN);
        uint64_t v = streq(property, "HostMemoryCapacity") ? b.capacity_bytes :
                     streq(property, "HostMemoryUsed") ? b.used_bytes :
                     streq(property, "HostMemorySwap") ? b.swap_bytes : b.reserve_bytes;
        return sd_bus_message_append(reply, "t", b.valid ? v : UINT64_MAX);
}

/* The kernel's running averages, read when asked: they change all the time, so no signal. */
static int property_get_host_average(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        PsiAverages a = {};

        if (m->host_pressure_path)
                (void) psi_read_averages(m->host_pressure_path, &a);
        return sd_bus_message_append(reply, "d",
                                     streq(property, "HostPressureSomeAvg10") ? a.some_avg10 :
                                     streq(property, "HostPressureSomeAvg60") ? a.some_avg60 :
                                     streq(property, "HostPressureFullAvg10") ? a.full_avg10 : a.full_avg60);
}

/* The PSI triggers as armed on the host source (after rounding for an unprivileged kernel
 * interface), or as configured when that source could not be watched. */
static int property_get_triggers(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "(sstt)");
        if (r < 0)
                return r;
        for (PressureLevel l = PRESSURE_LOW; l < _PRESSURE_LEVEL_MAX; l++) {
                const PsiTriggerSpec *spec = m->host_psi ? psi_watch_spec(m->host_psi, l) : &m->config.defaults.trigger[l];
                r = sd_bus_message_append(reply, "(sstt)", pressure_level_to_string(l), spec->full ? "full" : "some",
                                          spec->stall_usec, spec->window_usec);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int reply_no_such_machine(sd_bus_error *error, const char *name) {
        return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_MACHINE, "No machine '%s' known.", name);
}

static int method_list_machines(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Manager *m = userdata;
        int r;

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(sso)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < m->n_machines; i++) {
                Machine *machine = m->machines[i];
                r = sd_bus_message_append(reply, "(sso)", machine->name, machine_state_to_string(machine->state),
                                          machine->object_path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name;
        Machine *machine;
        int r;

        r = sd_bus_message_read(message, "s", &name);
        if (r < 0)
                return r;
        machine = manager_find_machine(m, name);
        if (!machine)
                return reply_no_such_machine(error, name);
        return sd_bus_reply_method_return(message, "o", machine->object_path);
}

static int method_set_machine_properties(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name;
        Machine *machine;
        PolicyKnobs knobs;
        uint64_t mask;
        int runtime, r;

        r = auth_check_async(&m->auth, message, AUTH_ACTION_MANAGE, error);
        if (r <= 0)
                return r < 0 ? r : 1;   /* 0: polkit asked, the call comes back */
        r = sd_bus_message_read(message, "sb", &name, &runtime);
        if (r < 0)
                return r;
        machine = manager_find_machine(m, name);
        if (!machine)
                return reply_no_such_machine(error, name);

        knobs = machine->config.knobs;
        r = knob_bus_read_assignments(message, &knobs, &mask, error);
        if (r < 0)
                return r;
        r = machine_set_knobs(message, machine, &knobs, mask, runtime, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, NULL);
}

static int method_set_default_properties(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        PolicyKnobs knobs;
        uint64_t mask;
        int runtime, r;

        r = auth_check_async(&m->auth, message, AUTH_ACTION_MANAGE, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = sd_bus_message_read(message, "b", &runtime);
        if (r < 0)
                return r;
        knobs = m->config.defaults;
        r = knob_bus_read_assignments(message, &knobs, &mask, error);
        if (r < 0)
                return r;
        r = manager_set_default_knobs(message, m, &knobs, mask, runtime, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, NULL);
}

static int method_resize_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX], c[FORMAT_SIZE_MAX];
        Manager *m = userdata;
        uint64_t bytes, min, max;
        const char *name;
        Machine *machine;
        int r;

        r = auth_check_async(&m->auth, message, AUTH_ACTION_MANAGE, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = sd_bus_message_read(message, "st", &name, &bytes);
        if (r < 0)
                return r;
        machine = manager_find_machine(m, name);
        if (!machine)
                return reply_no_such_machine(error, name);
        if (!machine->balloon || !balloon_is_ready(machine->balloon) || machine->ram_bytes == 0)
                return sd_bus_error_setf(error, BUS_ERROR_NO_BALLOON,
                                         "Machine %s has no balloon under control (state %s%s%s).", name,
                                         machine_state_to_string(machine->state),
                                         machine->state_reason ? ": " : "", strempty(machine->state_reason));

        min = machine_minimum(machine);
        max = machine_maximum(machine);
        if (bytes < min || bytes > max)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Invalid size %" PRIu64 " (%s) for machine %s: expected a size in bytes (t) "
                                         "from %" PRIu64 " (%s, EffectiveMinimumMemory) to %" PRIu64 " (%s, "
                                         "EffectiveMaximumMemory).", bytes, format_size(a, sizeof a, bytes), name,
                                         min, format_size(b, sizeof b, min), max, format_size(c, sizeof c, max));
        if (bytes != machine->target_bytes) {
                log_info("Machine %s: resized to %s by %s.", name, format_size(a, sizeof a, bytes),
                         strempty(sd_bus_message_get_sender(message)));
                r = machine_resize(machine, bytes);
                if (r < 0)
                        return sd_bus_error_set_errnof(error, r, "Failed to resize machine %s: %m", name);
        }
        return sd_bus_reply_method_return(message, NULL);
}

static int method_reload(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        int r;

        r = auth_check_async(&m->auth, message, AUTH_ACTION_MANAGE, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        log_info("Reload requested by %s.", strempty(sd_bus_message_get_sender(message)));
        r = manager_reload(m);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Failed to reload %s: %m", m->config_path);
        return sd_bus_reply_method_return(message, NULL);
}

static const sd_bus_vtable manager_vtable_fixed[] = {
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HostPressureSource", "s", property_get_string, offsetof(Manager, host_pressure_path), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HostPressure", "s", property_get_level, offsetof(Manager, host_level), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("HostMemorySource", "s", property_get_host_memory_source, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_WRITABLE_PROPERTY("HostMemoryReserve", "s", property_get_host_reserve, property_set_host_reserve, 0,
                                 SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE | SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_PROPERTY("HostMemoryCapacity", "t", property_get_budget, 0, 0),
        SD_BUS_PROPERTY("HostMemoryUsed", "t", property_get_budget, 0, 0),
        SD_BUS_PROPERTY("HostMemorySwap", "t", property_get_budget, 0, 0),
        SD_BUS_PROPERTY("HostMemoryReserveBytes", "t", property_get_budget, 0, 0),
        SD_BUS_PROPERTY("HostMemoryBalance", "x", property_get_budget, 0, 0),
        SD_BUS_PROPERTY("PressureTriggers", "a(sstt)", property_get_triggers, 0, 0),
        SD_BUS_PROPERTY("HostPressureSomeAvg10", "d", property_get_host_average, 0, 0),
        SD_BUS_PROPERTY("HostPressureSomeAvg60", "d", property_get_host_average, 0, 0),
        SD_BUS_PROPERTY("HostPressureFullAvg10", "d", property_get_host_average, 0, 0),
        SD_BUS_PROPERTY("HostPressureFullAvg60", "d", property_get_host_average, 0, 0),
        SD_BUS_METHOD_WITH_ARGS("ListMachines", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sso)", machines),
                                method_list_machines, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetMachine", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", machine),
                                method_get_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetMachineProperties", SD_BUS_ARGS("s", name, "b", runtime, "a(sv)", properties),
                                SD_BUS_NO_RESULT, method_set_machine_properties, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetDefaultProperties", SD_BUS_ARGS("b", runtime, "a(sv)", properties),
                                SD_BUS_NO_RESULT, method_set_default_properties, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ResizeMachine", SD_BUS_ARGS("s", name, "t", bytes),
                                SD_BUS_NO_RESULT, method_resize_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Reload", NULL, NULL, method_reload, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("MachineAdded", SD_BUS_ARGS("s", name, "o", machine), 0),
        SD_BUS_SIGNAL_WITH_ARGS("MachineRemoved", SD_BUS_ARGS("s", name, "o", machine), 0),
};

/* START + fixed + one writable property per knob + END. */
static sd_bus_vtable *build_vtable(const sd_bus_vtable *fixed, size_t n_fixed, sd_bus_property_get_t getter,
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

static int machine_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                        void **found, sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        Manager *m = userdata;
        Machine *machine;

        if (sd_bus_path_decode(path, BUS_MACHINE_PREFIX, &name) <= 0)
                return 0;
        machine = manager_find_machine(m, name);
        if (!machine)
                return 0;
        *found = machine;
        return 1;
}

static int machine_enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Manager *m = userdata;
        char **l = calloc(m->n_machines + 1, sizeof *l);

        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_machines; i++) {
                l[i] = strdup(m->machines[i]->object_path);
                if (!l[i]) {
                        for (size_t j = 0; j < i; j++)
                                free(l[j]);
                        free(l);
                        return -ENOMEM;
                }
        }
        *nodes = l;
        return 1;
}

/* Properties.Set of one of our writable properties, before sd-bus dispatches it: sd-bus answers
 * a write as soon as the setter returns, so the setter cannot wait for polkit. Ask here, hold
 * the call, and let it through once polkit has answered (auth_check_async() dispatches it
 * again); the setter then finds it granted. Anything else passes untouched. */
static int on_property_write(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        _cleanup_free_ char *name = NULL;
        const char *path = sd_bus_message_get_path(message), *iface, *property;
        bool writable;
        int r;

        if (!sd_bus_message_is_method_call(message, "org.freedesktop.DBus.Properties", "Set") || !path)
                return 0;
        r = sd_bus_message_read(message, "ss", &iface, &property);
        (void) sd_bus_message_rewind(message, true);
        if (r < 0)
                return 0;   /* malformed: sd-bus answers it */
        if (streq(path, BUS_PATH) && streq(iface, BUS_MANAGER_IFACE))
                writable = policy_knob_find(property) || streq(property, "HostMemoryReserve");
        else if (streq(iface, BUS_MACHINE_IFACE) && sd_bus_path_decode(path, BUS_MACHINE_PREFIX, &name) > 0)
                writable = manager_find_machine(m, name) && policy_knob_find(property);
        else
                writable = false;
        if (!writable)
                return 0;   /* read-only, unknown, not ours: sd-bus says so */

        _cleanup_(sd_bus_error_free) sd_bus_error denied = SD_BUS_ERROR_NULL;
        r = auth_check_write(&m->auth, message, AUTH_ACTION_MANAGE, &denied);
        if (r < 0) {
                /* refused: answered here, the setter never runs */
                if (!sd_bus_error_is_set(&denied))
                        sd_bus_error_set_errno(&denied, r);
                (void) sd_bus_reply_method_error(message, &denied);
                return 1;
        }
        return r == 0;       /* 0: polkit asked, the call comes back; 1: on to the setter */
}

int manager_bus_setup(Manager *m) {
        /* built once from policy_knobs[], which never changes: kept for the process' life */
        static sd_bus_vtable *manager_vtable = NULL, *machine_vtable = NULL;
        int r;

        if (!manager_vtable)
                manager_vtable = build_vtable(manager_vtable_fixed, ELEMENTSOF(manager_vtable_fixed),
                                              property_get_default_knob, property_set_default_knob);
        if (!machine_vtable)
                machine_vtable = build_vtable(machine_vtable_fixed, ELEMENTSOF(machine_vtable_fixed),
                                              property_get_machine_knob, property_set_machine_knob);
        if (!manager_vtable || !machine_vtable)
                return -ENOMEM;

        r = sd_bus_add_filter(m->bus, NULL, on_property_write, m);
        if (r < 0)
                return log_error_errno(r, "Failed to install the property write filter: %m");
        r = sd_bus_add_object_vtable(m->bus, NULL, BUS_PATH, BUS_MANAGER_IFACE, manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the Manager object: %m");
        r = sd_bus_add_fallback_vtable(m->bus, NULL, BUS_MACHINE_PREFIX, BUS_MACHINE_IFACE, machine_vtable,
                                       machine_find, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register Machine objects: %m");
        r = sd_bus_add_node_enumerator(m->bus, NULL, BUS_MACHINE_PREFIX, machine_enumerate, m);
        if (r < 0)
                return r;
        return sd_bus_add_object_manager(m->bus, NULL, BUS_PATH);
}

int machine_bus_emit_changed(Machine *machine, char **props) {
        Manager *m = machine->manager;

        if (!m->bus || !props[0])
                return 0;
        return sd_bus_emit_properties_changed_strv(m->bus, machine->object_path, BUS_MACHINE_IFACE, props);
}

/* ObjectManager clients (GetManagedObjects once, then InterfacesAdded/Removed, as gdbus and
 * sd-bus's own clients do) and clients of our own MachineAdded/MachineRemoved see the same
 * set of machines. */
void manager_bus_emit_machine_added(Manager *m, Machine *machine) {
        if (!m->bus)
                return;
        (void) sd_bus_emit_object_added(m->bus, machine->object_path);
        (void) sd_bus_emit_signal(m->bus, BUS_PATH, BUS_MANAGER_IFACE, "MachineAdded", "so",
                                  machine->name, machine->object_path);
}

/* Called while the machine can still be found by its path: InterfacesRemoved lists the
 * interfaces the object has. */
void manager_bus_emit_machine_removed(Manager *m, Machine *machine) {
        if (!m->bus)
                return;
        (void) sd_bus_emit_object_removed(m->bus, machine->object_path);
        (void) sd_bus_emit_signal(m->bus, BUS_PATH, BUS_MANAGER_IFACE, "MachineRemoved", "so",
                                  machine->name, machine->object_path);
}

void manager_bus_emit_host_changed(Manager *m) {
        if (m->bus)
                (void) sd_bus_emit_properties_changed(m->bus, BUS_PATH, BUS_MANAGER_IFACE, "HostPressure", NULL);
}

void manager_bus_emit_reserve_changed(Manager *m) {
        if (m->bus)
                (void) sd_bus_emit_properties_changed(m->bus, BUS_PATH, BUS_MANAGER_IFACE, "HostMemoryReserve", NULL);
}

void manager_bus_emit_defaults_changed(Manager *m, char **props) {
        if (m->bus && props[0])
                (void) sd_bus_emit_properties_changed_strv(m->bus, BUS_PATH, BUS_MANAGER_IFACE, props);
}
