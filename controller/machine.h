/* One VM: its identity (machined, systemd1), its QMP connection, balloon, scope pressure. */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "auth.h"
#include "balloon-libvirt.h"
#include "balloon.h"
#include "config.h"
#include "discovery.h"
#include "machine-state.h"
#include "policy.h"
#include "psi.h"
#include "qmp.h"

typedef struct Machine Machine;

/* What a machine reads of the world around it, given by its owner at creation and valid for the
 * machine's whole life. The machine never reaches past these into its owner. */
typedef struct MachineContext {
        sd_event *event;
        sd_bus *bus;                  /* machine-bus.c: PropertiesChanged (NULL: none sent) */
        AuthRegistry *const *auth;    /* machine-bus.c: polkit's answers for knob writes (the owner's
                                       * registry, created with its first query) */
        const Config *config;         /* the daemon's: StatsIntervalSec=, the drop-in directories, LibvirtURI= */
        const char *cgroup2_mount;    /* where ControlGroup paths are rooted; NULL: no scope pressure */
} MachineContext;

/* How a machine tells its owner what happened, as an sd-event source calls back: the owner
 * decides what that means for all its machines (a policy run, one batch of signals, polling).
 * Every call gets the owner pointer given to machine_new(). */
typedef struct MachineOwnerOps {
        /* Decide now: a scope pressure event (scope_event, machine), a manual resize or new
         * knobs (PRESSURE_NONE, NULL). */
        void (*run_policy)(void *owner, Machine *machine, PressureLevel scope_event);
        /* Decide once the updates already queued are read: guest stats, BALLOON_CHANGE and
         * balloon-ready come from all VMs at once. */
        void (*schedule_policy)(void *owner);
        /* machine_flush_changes() is wanted once the sources already pending have run. */
        void (*changed)(void *owner, Machine *machine);
        /* State changed: guest-stats polling may be needed, or no longer. */
        void (*stats_polling)(void *owner);
        /* A balloon command went out (for the counters). */
        void (*moved)(void *owner, Machine *machine);
        /* A DeflateOnExit move is done (acknowledged or failed). */
        void (*exit_progress)(void *owner);
        /* The libvirt connection the owner's libvirt machines share, opened on the first call;
         * a negative errno when it cannot be set up. */
        int (*libvirt_connection)(void *owner, LibvirtConnection **ret);
} MachineOwnerOps;

typedef enum MachineState {
        MACHINE_CONNECTING,   /* QMP connecting or balloon being set up */
        MACHINE_MANAGED,      /* the daemon drives the balloon */
        MACHINE_UNMANAGED,    /* seen, but not driven: no QMP socket, no balloon, Enabled=no */
        MACHINE_FAILED,       /* QMP broke (peer died, garbage); reconnecting */
        _MACHINE_STATE_MAX,
} MachineState;

const char *machine_state_to_string(MachineState s);

struct Machine {
        /* What the policy's snapshot reads of every machine at every event (machine_policy_vm()),
         * together at the start: a walk over 1,000 cold machines then touches the few lines of
         * this block (machine_prefetch()), not the whole struct. */
        MachineState state;
        PressureLevel scope_level;
        bool outside_budget;          /* its leader is not in HostMemorySource='s cgroup */
        bool free_page_reporting;     /* the balloon has free-page-reporting on (false until known) */
        const PolicyKnobs *knobs;     /* the owner's defaults when config.knobs are the same bytes
                                       * (one copy, hot in the cache), else &config.knobs */
        Balloon *balloon;
        uint64_t ram_bytes;           /* configured RAM; 0 until the balloon is ready */
        uint64_t actual_bytes;        /* as the guest reports it */
        uint64_t target_bytes;        /* what we last asked for (or actual, until we move it) */
        uint64_t host_rss_bytes;      /* what the host holds for it: its leader's VmRSS ... */
        uint64_t host_swap_bytes;     /* ... and VmSwap (UINT64_MAX: not read) */
        GuestStats stats;
        PolicyVMState policy_state;

        MachineContext context;
        const MachineOwnerOps *ops;
        void *owner;
        char *name;
        char *unit;
        char *control_group;          /* as systemd1 reports it (relative to the cgroup2 mount) */
        char *object_path;
        pid_t leader;
        char *qmp_socket;
        const char *qmp_socket_source; /* "drop-in" or "cmdline" */
        char *service;                /* machined's Service: "libvirt-qemu" for libvirt's domains */
        sd_id128_t id;                /* machined's Id: the domain UUID for libvirt */
        const char *backend;          /* "qmp", "libvirt", or NULL: none (unmanaged) */

        char *state_reason;

        MachineConfig config;         /* effective knobs and QMPSocket= */

        QmpClient *qmp;
        PsiWatch *psi;
        sd_event_source *psi_retry;   /* re-arms psi after its scope went away or failed to open (EMFILE) */
        usec_t psi_retry_usec;        /* the current back-off */
        sd_event_source *attach_timer; /* retries attach while the guest driver is not bound */
        usec_t attach_retry_usec;
        bool exit_move;               /* a DeflateOnExit move is in flight */
        unsigned pending_props;       /* PropertiesChanged to send at the end of this batch (machine.c) */
        bool attached_once;           /* the balloon was ready once since this instance started */

        bool free_page_reporting_hinted; /* the hint that it is off was logged (once per machine) */
        usec_t stats_requested_usec;  /* last qom-get guest-stats asked before a decision */
        KeptState kept_saved;         /* what its file in /run says (machine-state.c) */

        struct {
                usec_t realtime_usec;  /* 0: never moved */
                PolicyReason reason;
                PressureLevel level;
                uint64_t before_bytes, after_bytes;
        } last_move;
};

int machine_new(Machine **ret, const MachineContext *context, const MachineOwnerOps *ops, void *owner,
                const DiscoveredMachine *dm);
Machine *machine_free(Machine *machine);
/* Connect QMP, arm the scope's PSI triggers. */
int machine_start(Machine *machine);
/* Ask the balloon for target_bytes and log why. exit_cb: count completion for shutdown. */
int machine_move(Machine *machine, uint64_t target_bytes, PolicyReason reason, PressureLevel level);
bool machine_controllable(const Machine *machine);
/* The machine as the policy sees it: every PolicyVM input and its kept state (the caller sets
 * scope_event for the call). The one place a Machine becomes a PolicyVM. */
PolicyVM machine_policy_vm(const Machine *machine);
/* A walk over every machine (the policy's snapshot) finds them cold: the lines of the Machine
 * (stage 0), then its balloon (1), then its QMP client (2) asked for a few machines ahead,
 * each stage once the one before is in, so that the misses overlap instead of chaining. */
void machine_prefetch(const Machine *machine, unsigned stage);
uint64_t machine_maximum(const Machine *machine);
uint64_t machine_minimum(const Machine *machine);

/* New knobs (set-property, a reload, new defaults): PropertiesChanged for those that changed,
 * Enabled= moves the machine between managed and unmanaged. The caller runs the policy
 * afterwards, once for all the machines it changed.
 * knobs_set: bit i, policy_knobs[i] comes from a drop-in or set-property, not the defaults. */
void machine_apply_knobs(Machine *machine, const PolicyKnobs *knobs, uint64_t knobs_set);
/* ResizeMachine(): move the balloon to target_bytes by hand. The policy carries on from there
 * as after a move of its own, recovery waiting RecoveryDelaySec. -ENOTCONN: no balloon. */
int machine_resize(Machine *machine, uint64_t target_bytes);
/* Sends the PropertiesChanged that machine_emit() collected since the last flush; false:
 * there was none. */
bool machine_flush_changes(Machine *machine);
/* The VM went away: drop what was kept in /run for a restart of the daemon (machine-state.h). */
void machine_forget_runtime_state(Machine *machine);

/* machine-bus.c: PropertiesChanged for the NULL-terminated property names. */
int machine_bus_emit_changed(Machine *machine, char **props);
/* machine-bus.c: a knob write to one machine (a property Set, or the Manager's
 * SetMachineProperties): checked, saved as a drop-in, then applied. */
int machine_bus_set_knobs(sd_bus_message *message, Machine *machine, const PolicyKnobs *knobs, uint64_t mask,
                          bool runtime, sd_bus_error *error);
