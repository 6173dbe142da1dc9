/* org.autoballoon1.Machine: one object per VM under /org/autoballoon1/machine, its properties
 * (the state is in machine.c) and its knob writes. Registered by manager_bus_setup(). */
#include <inttypes.h>
#include <stdio.h>

#include "bus-common.h"
#include "bus-names.h"
#include "config.h"
#include "knob-bus.h"
#include "log.h"
#include "machine.h"
#include "manager.h"

int machine_bus_set_knobs(sd_bus_message *message, Machine *machine, const PolicyKnobs *knobs, uint64_t mask,
                             bool runtime, sd_bus_error *error) {
        const Config *c = machine->context.config;
        _cleanup_free_ char *path = NULL, *runtime_path = NULL, *what = NULL;
        int r;

        r = bus_check_bounds(knobs, mask, machine->ram_bytes, error);
        if (r < 0 || mask == 0)
                return r;
        r = config_machine_dropin_path(c, machine->name, false, &path);
        if (r >= 0)
                r = config_machine_dropin_path(c, machine->name, true, &runtime_path);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "No drop-in path for machine %s: %m", machine->name);
        r = bus_save_knobs(path, runtime_path, "Machine", knobs, mask, runtime, error);
        if (r < 0)
                return r;

        what = bus_format_assignments(knobs, mask);
        log_info("Machine %s: %s set by %s%s.", machine->name, strempty(what),
                 strempty(sd_bus_message_get_sender(message)), runtime ? " (runtime)" : "");
        machine_apply_knobs(machine, knobs, machine->config.knobs_set | mask);
        machine->ops->run_policy(machine->owner, NULL, PRESSURE_NONE);
        return 0;
}

static int property_get_machine_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        const KnobInfo *k = policy_knob_find(property);

        return k ? knob_bus_append(reply, k, &machine->config.knobs) : -ENOENT;
}

static int property_set_machine_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *value, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        const KnobInfo *k;
        PolicyKnobs knobs;
        int r;

        r = bus_read_knob_write(bus, *machine->context.auth, property, value, &machine->config.knobs, &knobs, &k, error);
        if (r < 0)
                return r;
        return machine_bus_set_knobs(sd_bus_get_current_message(bus), machine, &knobs, knob_bit(k), true, error);
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        return sd_bus_message_append(reply, "s", machine_state_to_string(machine->state));
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
        SD_BUS_PROPERTY("Name", "s", bus_property_get_string, offsetof(Machine, name), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Unit", "s", bus_property_get_string, offsetof(Machine, unit), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ControlGroup", "s", bus_property_get_string, offsetof(Machine, control_group), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Leader", "u", NULL, offsetof(Machine, leader), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("QMPSocket", "s", bus_property_get_string, offsetof(Machine, qmp_socket), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Backend", "s", bus_property_get_string, offsetof(Machine, backend), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StateReason", "s", bus_property_get_string, offsetof(Machine, state_reason), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MemorySize", "t", NULL, offsetof(Machine, ram_bytes), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActualMemory", "t", NULL, offsetof(Machine, actual_bytes), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TargetMemory", "t", NULL, offsetof(Machine, target_bytes), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("EffectiveMinimumMemory", "t", property_get_effective, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("EffectiveMaximumMemory", "t", property_get_effective, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        SD_BUS_PROPERTY("GuestAvailableMemory", "t", property_get_available, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ScopePressure", "s", bus_property_get_level, offsetof(Machine, scope_level), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LastMove", "(tsstt)", property_get_last_move, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("HostResidentMemory", "t", property_get_footprint, 0, 0),
        SD_BUS_PROPERTY("HostSwapMemory", "t", property_get_footprint, 0, 0),
        SD_BUS_PROPERTY("FreePageReporting", "b", property_get_bool, offsetof(Machine, free_page_reporting), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
};

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

int machine_bus_setup(Manager *m) {
        /* built once from policy_knobs[], which never changes: kept for the process' life */
        static sd_bus_vtable *machine_vtable = NULL;
        int r;

        if (!machine_vtable)
                machine_vtable = bus_build_vtable(machine_vtable_fixed, ELEMENTSOF(machine_vtable_fixed),
                                                  property_get_machine_knob, property_set_machine_knob);
        if (!machine_vtable)
                return -ENOMEM;
        r = sd_bus_add_fallback_vtable(m->bus, NULL, BUS_MACHINE_PREFIX, BUS_MACHINE_IFACE, machine_vtable,
                                       machine_find, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register Machine objects: %m");
        return sd_bus_add_node_enumerator(m->bus, NULL, BUS_MACHINE_PREFIX, machine_enumerate, m);
}

int machine_bus_emit_changed(Machine *machine, char **props) {
        sd_bus *bus = machine->context.bus;

        if (!bus || !props[0])
                return 0;
        return sd_bus_emit_properties_changed_strv(bus, machine->object_path, BUS_MACHINE_IFACE, props);
}
