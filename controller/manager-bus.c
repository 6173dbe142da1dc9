/* org.autoballoon1.Manager: the Manager object at /org/autoballoon1, its vtable and handlers,
 * and the property-write filter for both interfaces (the Machine objects are machine-bus.c's;
 * the state is in manager.c and machine.c, persistence in config.c).
 * The documented API is dbus/org.autoballoon1.*.xml; a test compares it with what this
 * file registers. */
#include <inttypes.h>
#include <stdio.h>

#include "auth.h"
#include "bus-common.h"
#include "bus-names.h"
#include "config.h"
#include "knob-bus.h"
#include "log.h"
#include "machine.h"
#include "manager.h"

/* --- knobs: applying the defaults ----------------------------------------------------------- */

static int manager_set_default_knobs(sd_bus_message *message, Manager *m, const PolicyKnobs *knobs, uint64_t mask,
                                     bool runtime, sd_bus_error *error) {
        _cleanup_free_ char *path = NULL, *runtime_path = NULL, *what = NULL;
        int r;

        r = bus_check_bounds(knobs, mask, 0, error);
        if (r < 0 || mask == 0)
                return r;
        r = config_defaults_dropin_path(&m->config, m->config_path, false, &path);
        if (r >= 0)
                r = config_defaults_dropin_path(&m->config, m->config_path, true, &runtime_path);
        if (r < 0)
                return r;
        r = bus_save_knobs(path, runtime_path, "Defaults", knobs, mask, runtime, error);
        if (r < 0)
                return r;

        what = bus_format_assignments(knobs, mask);
        log_info("Defaults: %s set by %s%s.", strempty(what), strempty(sd_bus_message_get_sender(message)),
                 runtime ? " (runtime)" : "");
        manager_apply_defaults(m, knobs);
        return 0;
}

/* --- knob properties, generated from policy_knobs[] -------------------------------------- */

static int property_get_default_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const KnobInfo *k = policy_knob_find(property);

        return k ? knob_bus_append(reply, k, &m->config.defaults) : -ENOENT;
}

static int property_set_default_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *value, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const KnobInfo *k;
        PolicyKnobs knobs;
        int r;

        r = bus_read_knob_write(bus, m->auth, property, value, &m->config.defaults, &knobs, &k, error);
        if (r < 0)
                return r;
        return manager_set_default_knobs(sd_bus_get_current_message(bus), m, &knobs, knob_bit(k), true, error);
}

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
        r = machine_bus_set_knobs(message, machine, &knobs, mask, runtime, error);
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
        SD_BUS_PROPERTY("HostPressureSource", "s", bus_property_get_string, offsetof(Manager, host_pressure_path), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HostPressure", "s", bus_property_get_level, offsetof(Manager, host_level), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
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
        static sd_bus_vtable *manager_vtable = NULL;
        int r;

        if (!manager_vtable)
                manager_vtable = bus_build_vtable(manager_vtable_fixed, ELEMENTSOF(manager_vtable_fixed),
                                                  property_get_default_knob, property_set_default_knob);
        if (!manager_vtable)
                return -ENOMEM;

        r = sd_bus_add_filter(m->bus, NULL, on_property_write, m);
        if (r < 0)
                return log_error_errno(r, "Failed to install the property write filter: %m");
        r = sd_bus_add_object_vtable(m->bus, NULL, BUS_PATH, BUS_MANAGER_IFACE, manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the Manager object: %m");
        r = machine_bus_setup(m);
        if (r < 0)
                return r;
        return sd_bus_add_object_manager(m->bus, NULL, BUS_PATH);
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
