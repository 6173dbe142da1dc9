/* org.autoballoon1: the Manager object and one Machine object per VM. Only vtables and their
 * handlers live here; the state is in manager.c and machine.c. */
#include <stdio.h>

#include "config.h"
#include "log.h"
#include "machine.h"
#include "manager.h"

#define BUS_PATH "/org/autoballoon1"
#define BUS_MANAGER_IFACE "org.autoballoon1.Manager"
#define BUS_MACHINE_PREFIX "/org/autoballoon1/machine"
#define BUS_MACHINE_IFACE "org.autoballoon1.Machine"
#define BUS_ERROR_NO_SUCH_MACHINE "org.autoballoon1.Error.NoSuchMachine"

/* --- knob properties, generated from policy_knobs[] -------------------------------------- */

static char knob_signature(const KnobInfo *k) {
        switch (k->type) {
        case KNOB_BOOL:
                return 'b';
        case KNOB_SIZE:
        case KNOB_USEC:
                return 't';
        case KNOB_PRESET:
                return 's';
        default:
                return 'u';
        }
}

int bus_append_knob(sd_bus_message *reply, const KnobInfo *k, const PolicyKnobs *knobs);
int bus_append_knob(sd_bus_message *reply, const KnobInfo *k, const PolicyKnobs *knobs) {
        const void *p = knob_cptr(k, knobs);

        switch (knob_signature(k)) {
        case 'b': {
                int b = *(const bool *) p;
                return sd_bus_message_append_basic(reply, 'b', &b);
        }
        case 't':
                return sd_bus_message_append_basic(reply, 't', p);
        case 's':
                return sd_bus_message_append(reply, "s", policy_preset_to_string(*(const PolicyPreset *) p));
        default:
                return sd_bus_message_append_basic(reply, 'u', p);
        }
}

static int property_get_machine_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Machine *machine = userdata;
        const KnobInfo *k = policy_knob_find(property);

        return k ? bus_append_knob(reply, k, &machine->config.knobs) : -ENOENT;
}

static int property_get_default_knob(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const KnobInfo *k = policy_knob_find(property);

        return k ? bus_append_knob(reply, k, &m->config.defaults) : -ENOENT;
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

static const sd_bus_vtable machine_vtable_fixed[] = {
        SD_BUS_PROPERTY("Name", "s", property_get_string, offsetof(Machine, name), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Unit", "s", property_get_string, offsetof(Machine, unit), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ControlGroup", "s", property_get_string, offsetof(Machine, control_group), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Leader", "u", NULL, offsetof(Machine, leader), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("QMPSocket", "s", property_get_string, offsetof(Machine, qmp_socket), SD_BUS_VTABLE_PROPERTY_CONST),
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
};

static const sd_bus_vtable manager_vtable_fixed_end[] = { SD_BUS_VTABLE_END };

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PROJECT_VERSION);
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
                return sd_bus_error_setf(error, BUS_ERROR_NO_SUCH_MACHINE, "No machine '%s' known.", name);
        return sd_bus_reply_method_return(message, "o", machine->object_path);
}

static const sd_bus_vtable manager_vtable_fixed[] = {
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HostPressureSource", "s", property_get_string, offsetof(Manager, host_pressure_path), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HostPressure", "s", property_get_level, offsetof(Manager, host_level), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("ListMachines", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sso)", machines),
                                method_list_machines, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetMachine", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", machine),
                                method_get_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("MachineAdded", SD_BUS_ARGS("s", name, "o", machine), 0),
        SD_BUS_SIGNAL_WITH_ARGS("MachineRemoved", SD_BUS_ARGS("s", name, "o", machine), 0),
};

/* START + fixed + one property per knob + END. */
static sd_bus_vtable *build_vtable(const sd_bus_vtable *fixed, size_t n_fixed, sd_bus_property_get_t knob_getter) {
        size_t n = 0;
        sd_bus_vtable *vt = calloc(n_fixed + policy_knobs_count + 2, sizeof *vt);

        if (!vt)
                return NULL;
        vt[n++] = (sd_bus_vtable) SD_BUS_VTABLE_START(0);
        for (size_t i = 0; i < n_fixed; i++)
                vt[n++] = fixed[i];
        for (size_t i = 0; i < policy_knobs_count; i++) {
                static char sigs[64][2];
                sigs[i][0] = knob_signature(&policy_knobs[i]);
                vt[n++] = (sd_bus_vtable) SD_BUS_PROPERTY(policy_knobs[i].name, sigs[i], knob_getter, 0,
                                                          SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE);
        }
        vt[n++] = manager_vtable_fixed_end[0];
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

int manager_bus_setup(Manager *m) {
        static sd_bus_vtable *manager_vtable = NULL, *machine_vtable = NULL;
        int r;

        if (!manager_vtable)
                manager_vtable = build_vtable(manager_vtable_fixed, ELEMENTSOF(manager_vtable_fixed),
                                              property_get_default_knob);
        if (!machine_vtable)
                machine_vtable = build_vtable(machine_vtable_fixed, ELEMENTSOF(machine_vtable_fixed),
                                              property_get_machine_knob);
        if (!manager_vtable || !machine_vtable)
                return -ENOMEM;

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

void manager_bus_emit_machine_added(Manager *m, Machine *machine) {
        if (m->bus)
                (void) sd_bus_emit_signal(m->bus, BUS_PATH, BUS_MANAGER_IFACE, "MachineAdded", "so",
                                          machine->name, machine->object_path);
}

void manager_bus_emit_machine_removed(Manager *m, Machine *machine) {
        if (m->bus)
                (void) sd_bus_emit_signal(m->bus, BUS_PATH, BUS_MANAGER_IFACE, "MachineRemoved", "so",
                                          machine->name, machine->object_path);
}

void manager_bus_emit_host_changed(Manager *m) {
        if (m->bus)
                (void) sd_bus_emit_properties_changed(m->bus, BUS_PATH, BUS_MANAGER_IFACE, "HostPressure", NULL);
}
