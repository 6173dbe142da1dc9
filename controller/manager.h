/* The Manager owns all state: machines, host pressure, bus, config. */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "auth.h"
#include "config.h"
#include "discovery.h"
#include "hostmem.h"
#include "machine.h"
#include "psi.h"

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        AuthRegistry *auth;                 /* polkit queries in flight for method calls */
        char *config_path;
        Config config;
        char *cgroup2_mount;                /* where ControlGroup paths are rooted */
        Discovery *discovery;
        LibvirtConnection *libvirt;         /* opened with the first libvirt machine, NULL before */

        Machine **machines;
        size_t n_machines;
        void *machines_by_name;             /* tsearch(3) index: the bus looks machines up by name */

        PsiWatch *host_psi;
        sd_event_source *host_psi_retry;    /* re-arms host_psi after its source went away or failed to open */
        usec_t host_psi_retry_usec;         /* the current back-off */
        char *host_pressure_path;           /* the resolved pressure file */
        UnitCgroupQuery *host_pressure_query;  /* HostPressureSource= a unit: its cgroup asked from systemd */
        UnitCgroupQuery *host_memory_query;    /* HostMemorySource= a unit: the same */
        PressureLevel host_level;
        usec_t last_pressure_usec;          /* last host or scope event, for the policy's cool-down */

        HostMemory *host_memory;            /* HostMemorySource=, NULL: PSI alone */
        HostBudget budget;                  /* as read for the last policy run */
        HostBurst host_burst;               /* the policy's memory of the host's last bursts */
        PressureLevel host_rest_level;      /* the policy's host event decided on blind steps, its rest
                                             * due (PolicyHost.rest_level) ... */
        usec_t host_rest_usec;              /* ... and when it came */
        int64_t budget_balance;             /* bytes over (> 0) or room left (< 0) at that run */
        bool budget_watch;                  /* within one reserve of the budget: keep stats fresh */
        bool budget_read_failed;            /* logged once until it reads again */
        usec_t budget_event_usec;           /* last wake-up from the budget's source */

        sd_event_source *policy_timer;      /* armed only when the policy asks for a wake-up */
        bool deferred_budget;               /* a budget event (threshold, memory.events) waiting for
                                             * missing guest stats (no blind budget take) ... */
        sd_event_source *deferred_timer;    /* ... but not longer than STATS_WAIT_MAX_USEC */
        sd_event_source *policy_defer;      /* one policy run after a burst of guest updates */
        sd_event_source *emit_defer;        /* one PropertiesChanged per machine after a batch */
        size_t emit_next;                   /* ... sent in slices: the sweep's next machine */
        bool emit_again;                    /* ... a machine changed while the sweep was under way */
        sd_event_source *state_flush;       /* writes the machines' kept state (machine-state.c) */
        sd_event_source *startup_timer;     /* takes the bus name if the first enumeration lags */
        sd_bus_slot *name_slot;             /* RequestName in flight */
        bool discovery_synced;              /* the first enumeration is done */
        bool name_requested;
        sd_event_source *stats_timer;       /* guest-stats polling, only while something moves */
        sd_event_source *stats_round;       /* ... a round of it, one slice of machines per dispatch */
        size_t stats_round_next;            /* the next machine of the round */
        bool in_policy;                     /* re-entrancy guard: a move can complete synchronously */
        PolicyVM *policy_vms;               /* the policy's snapshot, kept between runs: at 1,000 VMs a
                                             * fresh calloc was half a megabyte of page faults per run */
        size_t policy_vms_allocated;
        char *last_status;                  /* the STATUS= last sent to the service manager */
        bool policy_again;

        /* shutdown: deflate every guest to its maximum, then exit */
        bool exiting;
        unsigned exit_pending;
        sd_event_source *exit_timer;

        /* counters for benchmarks and status */
        uint64_t n_moves;
        uint64_t n_host_events;
} Manager;

int manager_new(Manager **ret, const char *config_path);
Manager *manager_free(Manager *m);
static inline void manager_freep(Manager **m) { if (*m) manager_free(*m); }
int manager_start(Manager *m);
/* SIGTERM: return guests to their maximum (DeflateOnExit=), then leave the loop. */
void manager_begin_exit(Manager *m);

Machine *manager_find_machine(Manager *m, const char *name);
/* HostMemoryReserve= resolved against a capacity. */
uint64_t manager_host_reserve(Manager *m, uint64_t capacity_bytes);
/* The budget as it is now (footprints read again), for the bus; -ENODATA without a source. */
int manager_budget_now(Manager *m, HostBudget *b, int64_t *ret_balance);
/* HostMemoryReserve= at runtime: PropertiesChanged, and the policy runs with it. */
void manager_set_host_reserve(Manager *m, uint64_t bytes, uint32_t permille);
/* Re-run the policy now. host_event / scope_event: the trigger that fired (or NONE). */
void manager_run_policy(Manager *m, PressureLevel host_event, Machine *scope_machine, PressureLevel scope_event);
/* Re-run the policy once the updates already queued are read: for guest stats, BALLOON_CHANGE
 * and balloon-ready, which come from all VMs at once. */
void manager_schedule_policy(Manager *m);
/* Send the machines' collected PropertiesChanged once the sources already pending (QMP
 * replies, the policy's batch of moves) have run. */
void manager_schedule_emit(Manager *m);
/* Arm or disarm guest-stats polling after a state change. */
void manager_update_stats_polling(Manager *m);
void manager_exit_progress(Manager *m);
/* New defaults (SetDefaultProperties(), set-property on the Manager): PropertiesChanged, and
 * every machine takes them for the knobs no drop-in of its own sets. */
void manager_apply_defaults(Manager *m, const PolicyKnobs *defaults);
/* Reload() and SIGHUP: the main config, its drop-ins and every machine's drop-ins again. */
int manager_reload(Manager *m);

/* manager-bus.c */
int manager_bus_setup(Manager *m);
/* machine-bus.c: the Machine objects on the bus, looked up among m's machines (called by
 * manager_bus_setup()). */
int machine_bus_setup(Manager *m);
void manager_bus_emit_machine_added(Manager *m, Machine *machine);
void manager_bus_emit_machine_removed(Manager *m, Machine *machine);
void manager_bus_emit_host_changed(Manager *m);
void manager_bus_emit_reserve_changed(Manager *m);
void manager_bus_emit_defaults_changed(Manager *m, char **props);

/* After a policy run: a write of every machine whose kept state changed (machine-state.c),
 * within a second, from a low-priority source. Here only a scan for a change (none: no timer). */
void manager_schedule_state_flush(Manager *m);
/* Every pending write at once (a clean exit). */
void manager_flush_state(Manager *m);

/* Between manager.c and manager-policy.c only. */
void manager_defer_budget(Manager *m, usec_t now);
bool manager_request_missing_stats(Manager *m, usec_t now);
void manager_read_footprint(Manager *m, Machine *machine);
void manager_refresh_footprints(Manager *m);
void manager_read_budget(Manager *m, HostBudget *b);
void manager_notify_status(Manager *m);
