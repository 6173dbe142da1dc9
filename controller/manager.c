/* The Manager: machines from discovery, host pressure, and the one place that runs the policy. */
#include <inttypes.h>
#include <signal.h>
#include <search.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "async-close.h"
#include "bus-names.h"
#include "log.h"
#include "machine.h"
#include "manager.h"


/* How long shutdown waits for the guests' balloon commands to be acknowledged. */
#define EXIT_DEFLATE_TIMEOUT_USEC (5 * USEC_PER_SEC)

/* The longest the daemon waits for its first enumeration before taking its bus name. */
#define STARTUP_SYNC_MAX_USEC (5 * USEC_PER_SEC)

void manager_notify_status(Manager *m) {
        size_t managed = 0;
        char status[256];

        if (m->exiting)
                return;
        for (size_t i = 0; i < m->n_machines; i++)
                managed += m->machines[i]->state == MACHINE_MANAGED;
        snprintf(status, sizeof status, "STATUS=%zu machines (%zu managed), host pressure %s, %" PRIu64 " balloon moves",
                 m->n_machines, managed, pressure_level_to_string(m->host_level), m->n_moves);
        /* every policy run ends here: a datagram to PID 1 only when there is news */
        if (m->last_status && streq(m->last_status, status))
                return;
        free(m->last_status);
        m->last_status = strdup(status);   /* NULL: sent again next time, harmless */
        sd_notify(false, status);
}

static void noop_free(void *p) {
}

static int machine_compare_name(const void *a, const void *b) {
        return strcmp(((const Machine *) a)->name, ((const Machine *) b)->name);
}

/* Every property read and change on the bus resolves an object path to its machine: a tree,
 * not a scan (a scan was 14 % of the daemon's CPU under pressure at 1,000 VMs). */
Machine *manager_find_machine(Manager *m, const char *name) {
        Machine key = { .name = (char *) name };
        Machine **found = tfind(&key, &m->machines_by_name, machine_compare_name);

        return found ? *found : NULL;
}

static void remove_machine_at(Manager *m, size_t i) {
        Machine *machine = m->machines[i];

        log_info("Machine %s is gone.", machine->name);
        manager_bus_emit_machine_removed(m, machine);
        tdelete(machine, &m->machines_by_name, machine_compare_name);
        m->machines[i] = m->machines[--m->n_machines];
        if (i < m->emit_next)
                m->emit_again = true;   /* the last machine moved behind a PropertiesChanged sweep */
        machine_forget_runtime_state(machine);   /* the VM is gone, not the daemon */
        machine_free(machine);
}

void manager_refresh_footprints(Manager *m);
void manager_read_budget(Manager *m, HostBudget *b);

/* --- host pressure ---------------------------------------------------------------------------- */

static void schedule_host_rearm(Manager *m);

static void on_host_pressure(PsiWatch *w, PressureLevel event, PressureLevel level, int error, void *userdata) {
        Manager *m = userdata;

        if (error < 0) {
                log_warning("Host pressure source %s went away; watching it again when it comes back.",
                            m->host_pressure_path);
                m->host_psi = psi_watch_free(m->host_psi);
                level = PRESSURE_NONE;
                schedule_host_rearm(m);
        }
        if (event != PRESSURE_NONE) {
                m->n_host_events++;
                /* No footprint refresh here: the event's reaction is the hot path (at 1,000 VMs
                 * reading every /proc/PID/status first cost ~20 ms before the first balloon),
                 * and the ones read with the last guest stats, at most a stats interval old,
                 * size the takes as well. */
                log_debug("Host: %s pressure event (%s).", pressure_level_to_string(event), m->host_pressure_path);
        }
        PressureLevel old_level = m->host_level;
        m->host_level = level;
        /* The commands first: the level's log line and PropertiesChanged after the run (in
         * the log, still before the moves it caused: one batch). */
        log_batch_begin();
        if (level != old_level)
                log_info("Host memory pressure: %s → %s.", pressure_level_to_string(old_level),
                         pressure_level_to_string(level));
        manager_run_policy(m, event, NULL, PRESSURE_NONE);
        log_batch_end();
        if (level != old_level)
                manager_bus_emit_host_changed(m);
}

/* HostPressureSource= and HostMemorySource= may name a slice, scope or service: its
 * ControlGroup is asked from systemd1 asynchronously, and the source is watched once known. */
static int check_unit_name(const char *setting, const char *unit) {
        const char *dot = strrchr(unit, '.');

        if (!dot || (!streq(dot, ".slice") && !streq(dot, ".scope") && !streq(dot, ".service")))
                return log_error_errno(EINVAL, "%s=%s is neither a path nor a unit name.", setting, unit);
        return 0;
}

static void log_unit_cgroup_error(const char *setting, const char *unit, int error, const char *message) {
        if (error == -ENOENT || error == -ENXIO)
                log_error_errno(error, "%s=%s has no cgroup: %s", setting, unit, strempty(message));
        else
                log_error_errno(error, "%s=%s: systemd does not know this unit: %s", setting, unit, strempty(message));
}

static void watch_host(Manager *m);
static void schedule_host_rearm(Manager *m);

static void host_pressure_unit_resolved(Manager *m, int error, const char *cgroup, const char *message);
static void maybe_ready(Manager *m);

static void on_host_pressure_unit(UnitCgroupQuery *q, int error, const char *cgroup, const char *message,
                                  void *userdata) {
        Manager *m = userdata;

        m->host_pressure_query = unit_cgroup_query_free(q);
        host_pressure_unit_resolved(m, error, cgroup, message);
        maybe_ready(m);
}

static void host_pressure_unit_resolved(Manager *m, int error, const char *cgroup, const char *message) {
        char *path;

        if (error < 0 && m->host_psi_retry_usec > 0) {
                /* watched before, went away: the unit is not back yet */
                log_debug("HostPressureSource=%s: %s; trying again.", m->config.host_pressure_source, strempty(message));
                schedule_host_rearm(m);
                return;
        }
        if (error < 0) {
                log_unit_cgroup_error("HostPressureSource", m->config.host_pressure_source, error, message);
                log_error("Cannot watch host pressure (%s). Only per-VM scope pressure will act.",
                          m->config.host_pressure_source);
                return;
        }
        if (asprintf(&path, "%s%s/memory.pressure", m->cgroup2_mount ?: "", cgroup) < 0) {
                log_oom();
                return;
        }
        free(m->host_pressure_path);
        m->host_pressure_path = path;
        watch_host(m);
}

/* HostPressureSource=: a pressure file, a cgroup2 directory (relative to the mount or
 * absolute), or a unit name whose ControlGroup systemd1 knows (machine.slice). */
static int resolve_host_pressure(Manager *m, char **ret) {
        const char *src = m->config.host_pressure_source;
        int r;

        if (src[0] == '/') {
                size_t l = strlen(src);
                if (l >= 9 && (streq(src + l - 9, "/pressure") || strstr(src, "/pressure/") ||
                               (l >= 16 && streq(src + l - 16, "/memory.pressure"))))
                        return (*ret = strdup(src)) ? 0 : -ENOMEM;
                if (m->cgroup2_mount && strncmp(src, m->cgroup2_mount, strlen(m->cgroup2_mount)) == 0)
                        return asprintf(ret, "%s/memory.pressure", src) < 0 ? -ENOMEM : 0;
                return asprintf(ret, "%s%s/memory.pressure", m->cgroup2_mount ?: "", src) < 0 ? -ENOMEM : 0;
        }
        /* a unit: watched once systemd1 has said where its cgroup is */
        r = check_unit_name("HostPressureSource", src);
        if (r >= 0)
                r = unit_cgroup_query(m->bus, src, on_host_pressure_unit, m, &m->host_pressure_query);
        if (r < 0)
                return r;
        *ret = NULL;
        return 0;
}

/* --- the host's memory budget ------------------------------------------------------------------ */

/* What the host holds for one VM (its QEMU's VmRSS and VmSwap), and whether that is in the
 * budget's source at all: a VM whose QEMU lives outside HostMemorySource='s cgroup neither
 * fills it nor can make room in it (a v1 memcg test host, or a slice holding some VMs only). */
void manager_read_footprint(Manager *m, Machine *machine) {
        if (machine->leader <= 0 ||
            process_footprint(machine->leader, &machine->host_rss_bytes, &machine->host_swap_bytes) < 0) {
                machine->host_rss_bytes = machine->host_swap_bytes = UINT64_MAX;
                return;
        }
        machine->outside_budget = m->host_memory && host_memory_holds_pid(m->host_memory, machine->leader) == 0;
}

/* What the host holds for each VM (its QEMU's RSS and swap), for the budget and the shares.
 * Read with the guest stats and on budget source events, never on an idle host; a PSI event
 * uses those (at most a stats interval old) and reads only the ones not known yet. */
void manager_refresh_footprints(Manager *m) {
        for (size_t i = 0; i < m->n_machines; i++)
                manager_read_footprint(m, m->machines[i]);
}

static void on_host_memory(HostMemory *h, void *userdata) {
        Manager *m = userdata;

        log_debug("Host memory source %s: use crossed the watch threshold.", host_memory_path(h));
        m->budget_event_usec = now_usec();
        manager_refresh_footprints(m);
        /* A budget take is sized by the guests' stats alone: wait one QMP round trip for the
         * missing ones, not longer. */
        if (m->deferred_budget || manager_request_missing_stats(m, now_usec())) {
                manager_defer_budget(m, now_usec());
                return;
        }
        manager_schedule_policy(m);
}

/* HostMemorySource=: /proc/meminfo, a memory cgroup directory (v2, or v1 on a hybrid host), or a
 * unit whose cgroup holds the VMs (machine.slice): v2 if the unified tree has a memory
 * controller there, else the same path in the v1 memory hierarchy. */
static int host_memory_dir_of_cgroup(Manager *m, const char *cg, char **ret) {
        _cleanup_free_ char *v1 = NULL, *p = NULL;
        int r;

        if (asprintf(&p, "%s%s/memory.current", m->cgroup2_mount ?: "", cg) < 0)
                return -ENOMEM;
        if (access(p, F_OK) >= 0)
                return asprintf(ret, "%s%s", m->cgroup2_mount ?: "", cg) < 0 ? -ENOMEM : 0;
        r = memcg1_mount_point(&v1);
        if (r < 0)
                return log_error_errno(r, "HostMemorySource=%s: no memory controller for %s, neither in cgroup2 nor in v1.",
                                       m->config.host_memory_source, cg);
        return asprintf(ret, "%s%s", v1, cg) < 0 ? -ENOMEM : 0;
}

static void open_host_memory(Manager *m, const char *path, int r) {
        if (r >= 0)
                r = host_memory_new(&m->host_memory, m->event, path, on_host_memory, m);
        if (r < 0) {
                log_error_errno(r, "Cannot read the host's memory budget from HostMemorySource=%s: %m. "
                                "Balloon moves follow PSI alone.", m->config.host_memory_source);
                return;
        }
        _cleanup_free_ char *reserve = NULL;
        (void) host_memory_reserve_format(m->config.host_memory_reserve_bytes, m->config.host_memory_reserve_permille,
                                          &reserve);
        log_info("Host memory budget from %s (%s), reserve %s.", host_memory_path(m->host_memory),
                 host_memory_kind_to_string(host_memory_kind(m->host_memory)), strempty(reserve));
}

static void on_host_memory_unit(UnitCgroupQuery *q, int error, const char *cgroup, const char *message,
                                void *userdata) {
        Manager *m = userdata;
        _cleanup_free_ char *path = NULL;

        m->host_memory_query = unit_cgroup_query_free(q);
        if (error < 0)
                log_unit_cgroup_error("HostMemorySource", m->config.host_memory_source, error, message);
        else
                error = host_memory_dir_of_cgroup(m, cgroup, &path);
        open_host_memory(m, path, error);
        maybe_ready(m);
}

static void watch_host_memory(Manager *m) {
        const char *src = m->config.host_memory_source;
        int r;

        if (isempty(src)) {
                log_info("HostMemorySource= is empty: no host memory budget, balloon moves follow PSI alone.");
                return;
        }
        if (src[0] == '/') {
                open_host_memory(m, src, 0);
                return;
        }
        r = check_unit_name("HostMemorySource", src);
        if (r >= 0)
                r = unit_cgroup_query(m->bus, src, on_host_memory_unit, m, &m->host_memory_query);
        if (r < 0)
                open_host_memory(m, NULL, r);
}

int manager_budget_now(Manager *m, HostBudget *b, int64_t *ret_balance) {
        _cleanup_free_ PolicyVM *vms = calloc(m->n_machines ?: 1, sizeof *vms);

        if (!vms)
                return -ENOMEM;
        manager_refresh_footprints(m);
        manager_read_budget(m, b);
        if (b->valid)
                b->reserve_bytes = host_burst_reserve(&m->host_burst, b, now_usec());
        for (size_t i = 0; i < m->n_machines; i++)
                vms[i] = machine_policy_vm(m->machines[i]);
        *ret_balance = host_budget_balance(b, vms, m->n_machines);
        return b->valid ? 0 : -ENODATA;
}

void manager_set_host_reserve(Manager *m, uint64_t bytes, uint32_t permille) {
        m->config.host_memory_reserve_bytes = bytes;
        m->config.host_memory_reserve_permille = permille;
        manager_bus_emit_reserve_changed(m);
        manager_run_policy(m, PRESSURE_NONE, NULL, PRESSURE_NONE);
}

uint64_t manager_host_reserve(Manager *m, uint64_t capacity_bytes) {
        return host_memory_reserve_resolve(m->config.host_memory_reserve_bytes, m->config.host_memory_reserve_permille,
                                           capacity_bytes);
}

/* Reads the budget into b (b->valid false without a source or when it cannot be read). */
void manager_read_budget(Manager *m, HostBudget *b) {
        *b = (HostBudget) {};
        if (!m->host_memory)
                return;
        int r = host_memory_read(m->host_memory, b);
        if (r < 0) {
                if (!m->budget_read_failed)
                        log_warning_errno(r, "Failed to read the host's memory budget from %s: %m. Following PSI alone until it reads again.",
                                          host_memory_path(m->host_memory));
                m->budget_read_failed = true;
                b->valid = false;
                return;
        }
        m->budget_read_failed = false;
        b->reserve_bytes = manager_host_reserve(m, b->capacity_bytes);
        b->interval_usec = m->config.stats_interval_sec * USEC_PER_SEC;
        /* v1: be woken when the raw use comes within three reserves of the capacity: the
         * budget watches from two (its cache not counted, so a little later), takes idle memory
         * from one, and takes what is over past its line. With the wake-up and the watch at the
         * same place, a use that crossed it and stopped just short of the watch was seen once
         * and then not again while it grew on (measured: 8 s without a look, then swap). */
        uint64_t margin = 3 * b->reserve_bytes;
        (void) host_memory_set_threshold(m->host_memory, b->capacity_bytes > margin ? b->capacity_bytes - margin : 0);
}

/* --- what machines report -------------------------------------------------------------------- */

static void machine_run_policy(void *owner, Machine *machine, PressureLevel scope_event) {
        manager_run_policy(owner, PRESSURE_NONE, machine, scope_event);
}

static void machine_schedule_policy(void *owner) {
        manager_schedule_policy(owner);
}

static void machine_changed(void *owner, Machine *machine) {
        manager_schedule_emit(owner);
}

static void machine_stats_polling(void *owner) {
        manager_update_stats_polling(owner);
}

static void machine_moved(void *owner, Machine *machine) {
        Manager *m = owner;
        m->n_moves++;
}

static void machine_exit_progress(void *owner) {
        manager_exit_progress(owner);
}

static int machine_libvirt_connection(void *owner, LibvirtConnection **ret) {
#if HAVE_LIBVIRT
        Manager *m = owner;
        int r;

        if (!m->libvirt) {
                r = libvirt_connection_new(&m->libvirt, m->event, m->config.libvirt_uri);
                if (r < 0)
                        return r;
        }
        *ret = m->libvirt;
        return 0;
#else
        return -EOPNOTSUPP;
#endif
}

static const MachineOwnerOps machine_owner_ops = {
        .run_policy = machine_run_policy,
        .schedule_policy = machine_schedule_policy,
        .changed = machine_changed,
        .stats_polling = machine_stats_polling,
        .moved = machine_moved,
        .exit_progress = machine_exit_progress,
        .libvirt_connection = machine_libvirt_connection,
};

/* --- discovery callbacks -------------------------------------------------------------------- */

static void on_machine_new(const DiscoveredMachine *dm, void *userdata) {
        Manager *m = userdata;
        Machine *machine, **mm;
        int r;

        machine = manager_find_machine(m, dm->name);
        if (machine) {
                if (machine->leader == dm->leader)
                        return;   /* re-enumerated after a machined restart: nothing changed */
                /* Same name, new VM (the old one went away while machined was down). */
                for (size_t i = 0; i < m->n_machines; i++)
                        if (m->machines[i] == machine)
                                remove_machine_at(m, i);
        }

        /* m->bus, m->auth and the rest are set before discovery starts and outlive every machine */
        const MachineContext context = {
                .event = m->event,
                .bus = m->bus,
                .auth = &m->auth,
                .config = &m->config,
                .cgroup2_mount = m->cgroup2_mount,
        };
        r = machine_new(&machine, &context, &machine_owner_ops, m, dm);
        if (r < 0) {
                log_error_errno(r, "Failed to set up machine %s: %m", dm->name);
                return;
        }
        mm = realloc(m->machines, (m->n_machines + 1) * sizeof *mm);
        if (!mm) {
                machine_free(machine);
                log_oom();
                return;
        }
        m->machines = mm;
        if (!tsearch(machine, &m->machines_by_name, machine_compare_name)) {
                machine_free(machine);
                log_oom();
                return;
        }
        m->machines[m->n_machines++] = machine;
        log_info("Machine %s appeared: unit %s, cgroup %s, leader PID %d.",
                 machine->name, machine->unit, machine->control_group, (int) machine->leader);
        r = machine_start(machine);
        if (r < 0)
                log_error_errno(r, "Failed to start managing machine %s: %m", machine->name);
        manager_bus_emit_machine_added(m, machine);
        manager_notify_status(m);
}

static void on_machine_removed(const char *name, void *userdata) {
        Manager *m = userdata;

        for (size_t i = 0; i < m->n_machines; i++)
                if (streq(m->machines[i]->name, name)) {
                        remove_machine_at(m, i);
                        break;
                }
        manager_notify_status(m);
        manager_run_policy(m, PRESSURE_NONE, NULL, PRESSURE_NONE);
}

static void on_machines_synced(char **names, size_t n, void *userdata) {
        Manager *m = userdata;

        for (size_t i = m->n_machines; i-- > 0;) {
                bool found = false;
                for (size_t j = 0; j < n && !found; j++)
                        found = streq(names[j], m->machines[i]->name);
                if (!found)
                        remove_machine_at(m, i);
        }
}

static void on_initial_sync(void *userdata);
static void maybe_ready(Manager *m);

static const DiscoveryCallbacks discovery_callbacks = {
        .on_machine_new = on_machine_new,
        .on_machine_removed = on_machine_removed,
        .on_machines_synced = on_machines_synced,
        .on_initial_sync = on_initial_sync,
};

/* --- configuration ---------------------------------------------------------------------------- */

/* The host's triggers are the default ones; armed again whenever they change. */
static void watch_host(Manager *m) {
        int r;

        m->host_psi = psi_watch_free(m->host_psi);
        if (!m->host_pressure_path)
                return;
        r = psi_watch_new(&m->host_psi, m->event, m->host_pressure_path, m->config.defaults.trigger,
                          on_host_pressure, m);
        if (r < 0 && psi_error_is_transient(r)) {
                /* logged once per outage, not at every retry */
                if (m->host_psi_retry_usec == 0)
                        log_warning_errno(r, "Cannot watch host pressure (%s) yet: %m. Trying again, backing off to %llu s.",
                                          m->host_pressure_path, (unsigned long long) (PSI_REARM_MAX_USEC / USEC_PER_SEC));
                schedule_host_rearm(m);
        } else if (r < 0)
                log_error_errno(r, "Cannot watch host pressure (%s): %m. Only per-VM scope pressure will act.",
                                m->host_pressure_path);
        else {
                log_info("Watching host memory pressure at %s.", m->host_pressure_path);
                m->host_psi_retry_usec = 0;
                if (m->host_psi_retry)
                        (void) sd_event_source_set_enabled(m->host_psi_retry, SD_EVENT_OFF);
        }
}

static int on_host_rearm(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        const char *src = m->config.host_pressure_source;

        /* A unit's cgroup is asked again: a restarted unit may have moved. */
        if (src[0] != '/' && !m->host_pressure_query &&
            unit_cgroup_query(m->bus, src, on_host_pressure_unit, m, &m->host_pressure_query) >= 0)
                return 0;
        watch_host(m);
        return 0;
}

static void schedule_host_rearm(Manager *m) {
        int r;

        m->host_psi_retry_usec = m->host_psi_retry_usec ? MIN(m->host_psi_retry_usec * 2, PSI_REARM_MAX_USEC) :
                PSI_REARM_MIN_USEC;
        if (m->host_psi_retry)
                r = sd_event_source_set_time_relative(m->host_psi_retry, m->host_psi_retry_usec);
        else
                r = sd_event_add_time_relative(m->event, &m->host_psi_retry, CLOCK_MONOTONIC, m->host_psi_retry_usec,
                                               0, on_host_rearm, m);
        if (r >= 0)
                r = sd_event_source_set_enabled(m->host_psi_retry, SD_EVENT_ONESHOT);
        if (r < 0)
                log_error_errno(r, "Cannot schedule watching host pressure again: %m");
}

static void manager_set_defaults(Manager *m, const PolicyKnobs *defaults) {
        char *changed[64 + 1];
        size_t n = 0;
        bool triggers = false;

        for (size_t i = 0; i < policy_knobs_count && n < 64; i++)
                if (!knob_equal(&policy_knobs[i], defaults, &m->config.defaults)) {
                        changed[n++] = (char *) policy_knobs[i].name;
                        triggers = triggers || policy_knobs[i].type == KNOB_TRIGGER;
                }
        changed[n] = NULL;
        m->config.defaults = *defaults;
        if (n > 0)
                manager_bus_emit_defaults_changed(m, changed);
        if (triggers && m->bus)
                watch_host(m);
}

void manager_apply_defaults(Manager *m, const PolicyKnobs *defaults) {
        manager_set_defaults(m, defaults);
        for (size_t i = 0; i < m->n_machines; i++) {
                Machine *machine = m->machines[i];
                PolicyKnobs k = machine->config.knobs;

                for (size_t j = 0; j < policy_knobs_count; j++) {
                        const KnobInfo *info = &policy_knobs[j];
                        if (!(machine->config.knobs_set & (UINT64_C(1) << j)))
                                memcpy(knob_ptr(info, &k), knob_cptr(info, defaults), knob_size(info));
                }
                machine_apply_knobs(machine, &k, machine->config.knobs_set);
        }
        manager_run_policy(m, PRESSURE_NONE, NULL, PRESSURE_NONE);
}

static void swap_str(char **a, char **b) {
        char *t = *a;
        *a = *b;
        *b = t;
}

int manager_reload(Manager *m) {
        Config c;
        int r;

        config_init(&c);
        r = config_load(&c, m->config_path);
        if (r < 0) {
                config_done(&c);
                return log_error_errno(r, "Failed to reload %s, keeping the configuration in use: %m",
                                       m->config_path);
        }

        /* The source is resolved once (it may be a unit); thresholds are knobs, re-armed below. */
        if (!streq(c.host_pressure_source, m->config.host_pressure_source))
                log_notice("HostPressureSource= changes take effect when autoballoond restarts.");

        swap_str(&m->config.machines_directory, &c.machines_directory);
        swap_str(&m->config.runtime_machines_directory, &c.runtime_machines_directory);
        swap_str(&m->config.runtime_config_directory, &c.runtime_config_directory);
        m->config.stats_interval_sec = c.stats_interval_sec;
        m->config.deflate_on_exit = c.deflate_on_exit;
        if (!streq(c.host_memory_source, m->config.host_memory_source))
                log_notice("HostMemorySource= changes take effect when autoballoond restarts.");
        if (c.host_memory_reserve_bytes != m->config.host_memory_reserve_bytes ||
            c.host_memory_reserve_permille != m->config.host_memory_reserve_permille) {
                m->config.host_memory_reserve_bytes = c.host_memory_reserve_bytes;
                m->config.host_memory_reserve_permille = c.host_memory_reserve_permille;
                manager_bus_emit_reserve_changed(m);
        }
        m->config.n_errors = c.n_errors;
        manager_set_defaults(m, &c.defaults);

        for (size_t i = 0; i < m->n_machines; i++) {
                Machine *machine = m->machines[i];
                MachineConfig mc;

                r = machine_config_load(&m->config, machine->name, &mc);
                if (r < 0) {
                        log_warning_errno(r, "Machine %s: failed to reload its drop-ins, keeping its settings: %m",
                                          machine->name);
                        /* its own settings, not the new defaults it may have shared until now */
                        PolicyKnobs own = machine->config.knobs;
                        machine_apply_knobs(machine, &own, machine->config.knobs_set);
                        continue;
                }
                if (machine->balloon && !streq_ptr(mc.qmp_socket, machine->config.qmp_socket))
                        log_notice("Machine %s: the new QMPSocket= takes effect when the machine is registered again.",
                                   machine->name);
                swap_str(&mc.qmp_socket, &machine->config.qmp_socket);
                machine_apply_knobs(machine, &mc.knobs, mc.knobs_set);
                machine_config_done(&mc);
                /* Never connected (no socket found, or one it cannot use): StateReason told the
                 * operator to fix a drop-in and reload, so try again now. */
                if (!machine->balloon)
                        (void) machine_start(machine);
        }
        log_info("Reloaded %s%s.", m->config_path, c.n_errors ? " with errors: see above" : "");
        config_done(&c);
        manager_run_policy(m, PRESSURE_NONE, NULL, PRESSURE_NONE);
        return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        sd_notify(false, "RELOADING=1");
        (void) manager_reload(m);
        sd_notify(false, "READY=1");
        manager_notify_status(m);
        return 0;
}

/* --- lifecycle ------------------------------------------------------------------------------- */

int manager_new(Manager **ret, const char *config_path) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        config_init(&m->config);
        m->config_path = strdup(config_path);
        if (!m->config_path)
                return -ENOMEM;
        r = config_load(&m->config, config_path);
        if (r < 0)
                return r;
        /* Runtime settings (the drop-ins under /run) are kept: they end at reboot, as
         * systemctl set-property --runtime does, not when the daemon restarts or crashes. */

        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        r = cgroup2_mount_point(&m->cgroup2_mount);
        if (r < 0)
                log_warning_errno(r, "No cgroup2 mount found; per-VM scope pressure is disabled: %m");

        *ret = TAKE_PTR(m);
        return 0;
}

static int on_name_acquired(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Manager *m = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        m->name_slot = sd_bus_slot_unref(m->name_slot);
        if (e) {
                log_error("Failed to acquire bus name org.autoballoon1: %s "
                          "(is dbus/org.autoballoon1.conf installed in the bus's policy directory?)", e->message);
                sd_event_exit(m->event, -(sd_bus_error_get_errno(e) ?: EACCES));
                return 0;
        }
        sd_notify(false, "READY=1");
        manager_notify_status(m);
        return 0;
}

static void acquire_name(Manager *m) {
        int r;

        if (m->name_requested)
                return;
        m->name_requested = true;
        m->startup_timer = sd_event_source_disable_unref(m->startup_timer);
        r = sd_bus_request_name_async(m->bus, &m->name_slot, BUS_NAME, 0, on_name_acquired, m);
        if (r < 0) {
                log_error_errno(r, "Failed to request bus name org.autoballoon1: %m");
                sd_event_exit(m->event, r);
        }
}

/* Ready when the first enumeration and the units of the host sources are resolved. */
static void maybe_ready(Manager *m) {
        if (m->discovery_synced && !m->host_pressure_query && !m->host_memory_query)
                acquire_name(m);
}

static void on_initial_sync(void *userdata) {
        Manager *m = userdata;

        m->discovery_synced = true;
        maybe_ready(m);
}

static int on_startup_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        log_warning("Machines not all looked up after %llu s (systemd-machined or systemd slow?); "
                    "taking the bus name anyway, the rest follow.",
                    (unsigned long long) (STARTUP_SYNC_MAX_USEC / USEC_PER_SEC));
        acquire_name(userdata);
        return 0;
}

int manager_start(Manager *m) {
        int r;

        r = sd_bus_open_system(&m->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");
        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;

        /* SIGHUP is blocked by main() with the others, before any thread exists. */
        r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m);
        if (r < 0)
                return log_error_errno(r, "Failed to install the SIGHUP handler: %m");
        r = manager_bus_setup(m);
        if (r < 0)
                return r;

        r = resolve_host_pressure(m, &m->host_pressure_path);
        if (r >= 0)
                watch_host(m);
        else
                log_error_errno(r, "Cannot watch host pressure (%s): %m. Only per-VM scope pressure will act.",
                                m->config.host_pressure_source);

        watch_host_memory(m);

        r = discovery_new(&m->discovery, m->bus, m->event, &discovery_callbacks, m);
        if (r < 0)
                return r;
        r = discovery_start(m->discovery);
        if (r < 0)
                return r;

        /* The name (and READY=1) once the machines machined knows are looked up, so that a
         * client never sees a half-populated daemon; but not later than STARTUP_SYNC_MAX_USEC,
         * so that a stalled machined or systemd cannot keep the API away. */
        r = sd_event_add_time_relative(m->event, &m->startup_timer, CLOCK_MONOTONIC, STARTUP_SYNC_MAX_USEC, 0,
                                       on_startup_timeout, m);
        if (r < 0)
                return log_error_errno(r, "Failed to arm the start-up timer: %m");
        return 0;
}

static int on_exit_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        log_warning("%u guest(s) did not confirm deflation within %llu s; exiting anyway.",
                    m->exit_pending, (unsigned long long) (EXIT_DEFLATE_TIMEOUT_USEC / USEC_PER_SEC));
        sd_event_exit(m->event, 0);
        return 0;
}

void manager_exit_progress(Manager *m) {
        if (m->exit_pending > 0 && --m->exit_pending == 0) {
                log_info("Every guest is back at its maximum.");
                sd_event_exit(m->event, 0);
        }
}

void manager_begin_exit(Manager *m) {
        if (m->exiting) {
                sd_event_exit(m->event, 0);   /* second signal: leave now */
                return;
        }
        m->exiting = true;
        sd_notify(false, "STOPPING=1\nSTATUS=Returning guests to their maximum...");
        sd_event_source_set_enabled(m->policy_timer, SD_EVENT_OFF);
        sd_event_source_set_enabled(m->stats_timer, SD_EVENT_OFF);
        sd_event_source_set_enabled(m->stats_round, SD_EVENT_OFF);

        if (m->config.deflate_on_exit)
                for (size_t i = 0; i < m->n_machines; i++) {
                        Machine *machine = m->machines[i];
                        uint64_t max = machine_maximum(machine);
                        if (!machine->balloon || !balloon_is_ready(machine->balloon) ||
                            machine->target_bytes >= max)
                                continue;
                        if (machine_move(machine, max, POLICY_REASON_BOUNDS, PRESSURE_NONE) >= 0) {
                                machine->exit_move = true;
                                m->exit_pending++;
                        }
                }
        if (m->exit_pending == 0) {
                sd_event_exit(m->event, 0);
                return;
        }
        log_info("Deflating %u guest(s) to their maximum before exit.", m->exit_pending);
        if (sd_event_add_time_relative(m->event, &m->exit_timer, CLOCK_MONOTONIC, EXIT_DEFLATE_TIMEOUT_USEC, 0,
                                       on_exit_timeout, m) < 0)
                sd_event_exit(m->event, 0);
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        tdestroy(m->machines_by_name, noop_free);
        /* a clean exit keeps what a crash keeps (autoballoond(8), RESTARTS) */
        manager_flush_state(m);

        for (size_t i = 0; i < m->n_machines; i++)
                machine_free(m->machines[i]);
        free(m->machines);
#if HAVE_LIBVIRT
        libvirt_connection_free(m->libvirt);   /* after its machines' balloons */
#endif
        discovery_free(m->discovery);
        unit_cgroup_query_free(m->host_pressure_query);
        unit_cgroup_query_free(m->host_memory_query);
        psi_watch_free(m->host_psi);
        sd_event_source_disable_unref(m->host_psi_retry);
        host_memory_free(m->host_memory);
        /* Every trigger fd is now queued for the closer: close them all at once. */
        uint64_t n_closed = async_close_finish();
        log_debug("Closed %" PRIu64 " PSI trigger(s) off the event loop.", n_closed);
        sd_event_source_disable_unref(m->policy_timer);
        sd_event_source_disable_unref(m->deferred_timer);
        sd_event_source_disable_unref(m->policy_defer);
        sd_event_source_disable_unref(m->emit_defer);
        sd_event_source_disable_unref(m->state_flush);
        sd_event_source_disable_unref(m->startup_timer);
        sd_bus_slot_unref(m->name_slot);
        sd_event_source_disable_unref(m->stats_timer);
        sd_event_source_disable_unref(m->stats_round);
        free(m->policy_vms);
        free(m->last_status);
        sd_event_source_disable_unref(m->exit_timer);
        auth_registry_free(m->auth);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        config_done(&m->config);
        free(m->config_path);
        free(m->cgroup2_mount);
        free(m->host_pressure_path);
        free(m);
        return NULL;
}
