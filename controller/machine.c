/* One VM: QMP connection, balloon, scope PSI, and the bookkeeping the policy needs. */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <systemd/sd-journal.h>
#include <time.h>

#include "log.h"
#include "bus-names.h"
#include "machine.h"

/* journalctl MESSAGE_ID=... finds every balloon move. */
#define MESSAGE_ID_BALLOON_MOVE "7d4b1f0c2a8e4c5bb1e3a9d6f20c8e41"

static const char *const machine_state_table[_MACHINE_STATE_MAX] = {
        [MACHINE_CONNECTING] = "connecting",
        [MACHINE_MANAGED] = "managed",
        [MACHINE_UNMANAGED] = "unmanaged",
        [MACHINE_FAILED] = "failed",
};

DEFINE_STRING_TABLE_TO_STRING(machine_state, MachineState, _MACHINE_STATE_MAX)

/* The properties whose changes are announced together, once per loop iteration: a batch of
 * moves (one PSI event, 1,000 VMs) changes TargetMemory and LastMove of every VM, then
 * BALLOON_CHANGE their ActualMemory; one PropertiesChanged per machine and batch, sent after the
 * batch's QMP commands, keeps the signals off the path from the event to the last command. */
static const char *const coalesced_props[] = {
        "State", "StateReason", "TargetMemory", "LastMove", "ActualMemory", "MemorySize",
        "GuestAvailableMemory", "FreePageReporting", "ScopePressure",
};

static void machine_emit(Machine *machine, const char *prop, ...) {
        va_list ap;

        va_start(ap, prop);
        for (const char *p = prop; p; p = va_arg(ap, const char *)) {
                size_t i;
                for (i = 0; i < ELEMENTSOF(coalesced_props); i++)
                        if (streq(p, coalesced_props[i]))
                                break;
                assert(i < ELEMENTSOF(coalesced_props));
                machine->pending_props |= 1u << i;
        }
        va_end(ap);
        machine->ops->changed(machine->owner, machine);
}

bool machine_flush_changes(Machine *machine) {
        char *props[ELEMENTSOF(coalesced_props) + 1];
        size_t n = 0;

        if (!machine->pending_props)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(coalesced_props); i++)
                if (machine->pending_props & (1u << i))
                        props[n++] = (char *) coalesced_props[i];
        props[n] = NULL;
        machine->pending_props = 0;
        /* the bus may be gone during shutdown */
        (void) machine_bus_emit_changed(machine, props);
        return true;
}

static void machine_set_state(Machine *machine, MachineState state, const char *reason) {
        if (machine->state == state && streq_ptr(machine->state_reason, reason))
                return;
        if (state != machine->state)
                log_full(state == MACHINE_FAILED ? LOG_WARNING : LOG_INFO, "Machine %s: %s → %s%s%s",
                         machine->name, machine_state_to_string(machine->state),
                         machine_state_to_string(state), reason ? ": " : "", reason ?: "");
        machine->state = state;
        free(machine->state_reason);
        machine->state_reason = reason ? strdup(reason) : NULL;
        machine_emit(machine, "State", "StateReason", NULL);
        machine->ops->stats_polling(machine->owner);
}

bool machine_controllable(const Machine *machine) {
        return machine->state == MACHINE_MANAGED && machine->knobs->enabled &&
                machine->balloon && balloon_is_ready(machine->balloon) && machine->ram_bytes > 0;
}

/* Most machines run on the daemon's defaults: the policy then reads one copy of them, hot in
 * the cache, instead of 1,000 copies that are cold when a PSI event comes. The test is on the
 * bytes, so anything else (a drop-in, a runtime setting) keeps the machine's own. The owner
 * changes its defaults and then applies the knobs of every machine (machine_apply_knobs()),
 * which decides again. */
static void machine_share_default_knobs(Machine *machine) {
        const Config *c = machine->context.config;

        machine->knobs = c && memcmp(&machine->config.knobs, &c->defaults, sizeof c->defaults) == 0
                ? &c->defaults : &machine->config.knobs;
}

PolicyVM machine_policy_vm(const Machine *machine) {
        return (PolicyVM) {
                .knobs = machine->knobs,
                .ram_bytes = machine->ram_bytes,
                .actual_bytes = machine->actual_bytes,
                .target_bytes = machine->target_bytes,
                .scope_level = machine->scope_level,
                .stats = machine->stats,
                .controllable = machine_controllable(machine),
                .host_rss_bytes = machine->host_rss_bytes,
                .host_swap_bytes = machine->host_swap_bytes,
                .free_page_reporting = machine->free_page_reporting,
                .outside_budget = machine->outside_budget,
                .state = machine->policy_state,
        };
}

void machine_prefetch(const Machine *machine, unsigned stage) {
        if (stage == 0)
                /* from the line the struct starts in (malloc aligns to 16, not 64) */
                for (uintptr_t p = (uintptr_t) machine & ~(uintptr_t) 63; p < (uintptr_t) machine + offsetof(Machine, context);
                     p += 64)
                        __builtin_prefetch((const void *) p);
        else if (stage == 1)
                __builtin_prefetch(machine->balloon);
        else
                balloon_prefetch(machine->balloon);
}

uint64_t machine_maximum(const Machine *machine) {
        return machine->ram_bytes ? policy_maximum(&machine->config.knobs, machine->ram_bytes) : 0;
}

uint64_t machine_minimum(const Machine *machine) {
        return machine->ram_bytes ? policy_minimum(&machine->config.knobs, machine->ram_bytes) : 0;
}

static void log_move(Machine *machine, uint64_t before, uint64_t after, PolicyReason reason, PressureLevel level) {
        char b[FORMAT_SIZE_MAX], a[FORMAT_SIZE_MAX];
        const char *why = policy_reason_to_string(reason), *lvl = pressure_level_to_string(level);

        format_size(b, sizeof b, before);
        format_size(a, sizeof a, after);
        /* "(manual)" or "(host-pressure, critical pressure)": no level where none acted */
        char why_text[96];
        if (level == PRESSURE_NONE)
                snprintf(why_text, sizeof why_text, "%s", why);
        else
                snprintf(why_text, sizeof why_text, "%s, %s pressure", why, lvl);

        if (log_to_journal()) {
                char f[9][512];
                struct iovec iov[9];
                size_t n = 0;
#define FIELD(...) (snprintf(f[n], sizeof f[n], __VA_ARGS__), \
                    iov[n] = (struct iovec) { .iov_base = f[n], .iov_len = strnlen(f[n], sizeof f[n] - 1) }, n++)
                FIELD("MESSAGE=Machine %s: balloon target %s → %s (%s)", machine->name, b, a, why_text);
                FIELD("MESSAGE_ID=" MESSAGE_ID_BALLOON_MOVE);
                FIELD("PRIORITY=%i", LOG_INFO);
                FIELD("AUTOBALLOON_MACHINE=%s", machine->name);
                FIELD("AUTOBALLOON_REASON=%s", why);
                FIELD("AUTOBALLOON_LEVEL=%s", lvl);
                FIELD("AUTOBALLOON_BEFORE_BYTES=%" PRIu64, before);
                FIELD("AUTOBALLOON_AFTER_BYTES=%" PRIu64, after);
                FIELD("AUTOBALLOON_ACTUAL_BYTES=%" PRIu64, machine->actual_bytes);
#undef FIELD
                log_struct_iovec(iov, n);
        }
        else
                log_info("Machine %s: balloon target %s → %s (%s) "
                         "[machine=%s reason=%s level=%s before=%" PRIu64 " after=%" PRIu64 "]",
                         machine->name, b, a, why_text, machine->name, why, lvl, before, after);
}

static void on_move_done(Balloon *b, int error, const char *desc, void *userdata) {
        Machine *machine = userdata;

        if (error < 0)
                log_warning_errno(error, "Machine %s: balloon command failed: %s", machine->name, desc ?: "%m");
        if (machine->exit_move) {
                machine->exit_move = false;
                machine->ops->exit_progress(machine->owner);
        }
}

int machine_move(Machine *machine, uint64_t target_bytes, PolicyReason reason, PressureLevel level) {
        uint64_t before = machine->target_bytes;
        struct timespec ts;
        int r;

        if (!machine->balloon || !balloon_is_ready(machine->balloon))
                return -ENOTCONN;
        r = balloon_set_target(machine->balloon, target_bytes, on_move_done, machine);
        if (r < 0)
                return log_warning_errno(r, "Machine %s: failed to send balloon command: %m", machine->name);

        log_move(machine, before, target_bytes, reason, level);
        clock_gettime(CLOCK_REALTIME, &ts);
        machine->last_move.realtime_usec = (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
        machine->last_move.reason = reason;
        machine->last_move.level = level;
        machine->last_move.before_bytes = before;
        machine->last_move.after_bytes = target_bytes;
        machine->target_bytes = target_bytes;
        machine->ops->moved(machine->owner, machine);
        machine_emit(machine, "TargetMemory", "LastMove", NULL);
        return 0;
}

void machine_forget_runtime_state(Machine *machine) {
        machine_state_forget(machine);
}

int machine_resize(Machine *machine, uint64_t target_bytes) {
        int r;

        r = machine_move(machine, target_bytes, POLICY_REASON_MANUAL, PRESSURE_NONE);
        if (r < 0)
                return r;
        /* As if the policy had made this move after an event: no recovery step before the
         * cool-down, so the operator's size holds for RecoveryDelaySec at least. */
        machine->policy_state.last_move_usec = machine->policy_state.last_event_usec = now_usec();
        /* ... and a size below the guest's reserve is the operator's choice, not a guest in need
         * to be relieved at once */
        PolicyVM vm = machine_policy_vm(machine);
        machine->policy_state.manual_until_usec = now_usec() + MAX(MANUAL_HOLD_USEC, policy_vm_recovery_delay(&vm));
        /* ... whatever need the guest showed before the resize: the operator has decided */
        machine->policy_state.guest_pressure_usec = 0;
        /* ... and the rest of a host event decided on blind steps is not taken from this size */
        machine->policy_state.rest_usec = 0;
        machine->policy_state.blind_taken_bytes = 0;
        machine_state_save(machine);
        machine->ops->run_policy(machine->owner, NULL, PRESSURE_NONE);
        return 0;
}

static int machine_watch_scope(Machine *machine);
static void rearm_scope_soon(Machine *machine);

void machine_apply_knobs(Machine *machine, const PolicyKnobs *knobs, uint64_t knobs_set) {
        char *changed[64 + 3];
        size_t n = 0;
        bool bounds = false, triggers = false, was_enabled = machine->config.knobs.enabled;

        for (size_t i = 0; i < policy_knobs_count && n < 64; i++) {
                const KnobInfo *k = &policy_knobs[i];
                if (knob_equal(k, knobs, &machine->config.knobs))
                        continue;
                changed[n++] = (char *) k->name;
                triggers = triggers || k->type == KNOB_TRIGGER;
                bounds = bounds || streq(k->name, "MinimumMemory") || streq(k->name, "MaximumMemory") ||
                         streq(k->name, "MinimumMemoryPercent");
        }
        machine->config.knobs = *knobs;
        machine->config.knobs_set = knobs_set;
        machine_share_default_knobs(machine);
        if (n == 0)
                return;
        if (bounds) {
                changed[n++] = (char *) "EffectiveMinimumMemory";
                changed[n++] = (char *) "EffectiveMaximumMemory";
        }
        changed[n] = NULL;
        (void) machine_bus_emit_changed(machine, changed);
        if (triggers && (machine->qmp || machine->psi))   /* started: re-arm with the new thresholds */
                rearm_scope_soon(machine);

        if (knobs->enabled != was_enabled && machine->balloon && balloon_is_ready(machine->balloon)) {
                if (!knobs->enabled && machine->state == MACHINE_MANAGED)
                        machine_set_state(machine, MACHINE_UNMANAGED, "Enabled=no");
                else if (knobs->enabled && machine->state == MACHINE_UNMANAGED)
                        machine_set_state(machine, MACHINE_MANAGED, NULL);
        }
}

/* --- balloon callbacks ------------------------------------------------------------------ */

static void on_balloon_ready(Balloon *b, uint64_t actual_bytes, uint64_t ram_bytes, void *userdata) {
        Machine *machine = userdata;
        char a[FORMAT_SIZE_MAX], r[FORMAT_SIZE_MAX];

        machine->attach_retry_usec = 0;
        sd_event_source_set_enabled(machine->attach_timer, SD_EVENT_OFF);
        machine->ram_bytes = ram_bytes;
        machine->actual_bytes = actual_bytes;
        /* Resume from what the guest has now; recovery grows it back if it is below the
         * maximum (a previous instance may have exited without deflating). */
        machine->target_bytes = actual_bytes;
        if (!machine->attached_once) {
                machine->attached_once = true;
                machine_state_restore(machine);
        }
        if (machine->qmp)
                log_info("Machine %s: balloon %s ready at %s of %s RAM, QMP %s (from %s).", machine->name,
                         balloon_device_path(b), format_size(a, sizeof a, actual_bytes),
                         format_size(r, sizeof r, ram_bytes), machine->qmp_socket, machine->qmp_socket_source);
        else
                log_info("Machine %s: balloon of %s ready at %s of %s RAM.", machine->name, balloon_device_path(b),
                         format_size(a, sizeof a, actual_bytes), format_size(r, sizeof r, ram_bytes));
        machine_set_state(machine, machine->config.knobs.enabled ? MACHINE_MANAGED : MACHINE_UNMANAGED,
                          machine->config.knobs.enabled ? NULL : "Enabled=no");
        machine_emit(machine, "ActualMemory", "TargetMemory", "MemorySize", NULL);
        machine->ops->schedule_policy(machine->owner);
}

static void on_balloon_actual(Balloon *b, uint64_t actual_bytes, void *userdata) {
        Machine *machine = userdata;

        if (actual_bytes == machine->actual_bytes)
                return;
        machine->actual_bytes = actual_bytes;
        machine_emit(machine, "ActualMemory", NULL);
        machine->ops->schedule_policy(machine->owner);
}

static void on_balloon_stats(Balloon *b, const GuestStats *stats, void *userdata) {
        Machine *machine = userdata;

        machine->stats = *stats;
        machine_emit(machine, "GuestAvailableMemory", NULL);
        machine->ops->schedule_policy(machine->owner);
}

static void on_balloon_free_page_reporting(Balloon *b, int enabled, void *userdata) {
        Machine *machine = userdata;

        /* Without it, what the guest frees stays allocated on the host until the balloon
         * takes it; say once per machine how to turn it on, then stay quiet across
         * reconnects. A failed read (enabled < 0, not -EOPNOTSUPP) was logged by balloon.c. */
        if (!machine->free_page_reporting_hinted && (enabled == 0 || enabled == -EOPNOTSUPP)) {
                machine->free_page_reporting_hinted = true;
                log_notice("Machine %s: %s, so memory the guest frees stays allocated on the host until the "
                           "balloon takes it back. Turn it on with -device virtio-balloon-pci,free-page-reporting=on, "
                           "or in libvirt with <memballoon model='virtio' freePageReporting='on'/>%s.",
                           machine->name, enabled == 0 ? "free-page-reporting is off on its balloon" :
                           "its QEMU has no free-page-reporting", enabled == 0 ? "" : " (QEMU 5.1 or later)");
        }
        if ((enabled >= 0 || enabled == -EOPNOTSUPP) && (enabled > 0) != machine->free_page_reporting) {
                machine->free_page_reporting = enabled > 0;
                machine_emit(machine, "FreePageReporting", NULL);
        }
}

/* A guest still booting has a balloon device but no driver behind it yet; QEMU sends no
 * event when the driver binds, so ask again, backing off to this. */
#define ATTACH_RETRY_MIN_USEC (500 * USEC_PER_MSEC)
#define ATTACH_RETRY_MAX_USEC (10 * USEC_PER_SEC)

static void schedule_attach_retry(Machine *machine);

static int on_attach_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Machine *machine = userdata;

        if (qmp_client_state(machine->qmp) == QMP_READY &&
            balloon_attach(machine->balloon, machine->context.config->stats_interval_sec) < 0) {
                machine_set_state(machine, MACHINE_FAILED, "Failed to query the balloon device; trying again.");
                schedule_attach_retry(machine);
        }
        return 0;
}

static void schedule_attach_retry(Machine *machine) {
        machine->attach_retry_usec = machine->attach_retry_usec ?
                MIN(machine->attach_retry_usec * 2, ATTACH_RETRY_MAX_USEC) : ATTACH_RETRY_MIN_USEC;
        if (!machine->attach_timer) {
                if (sd_event_add_time_relative(machine->context.event, &machine->attach_timer, CLOCK_MONOTONIC,
                                               machine->attach_retry_usec, 0, on_attach_timer, machine) < 0)
                        return;
                sd_event_source_set_description(machine->attach_timer, "balloon-attach-retry");
        } else
                sd_event_source_set_time_relative(machine->attach_timer, machine->attach_retry_usec);
        sd_event_source_set_enabled(machine->attach_timer, SD_EVENT_ONESHOT);
}

static void on_balloon_error(Balloon *b, int error, const char *desc, void *userdata) {
        Machine *machine = userdata;

        if (error == -EAGAIN && !machine->qmp) {   /* another backend retries by itself */
                machine_set_state(machine, MACHINE_CONNECTING, desc);
                return;
        }
        if (error == -EAGAIN) {
                machine_set_state(machine, MACHINE_CONNECTING, "Waiting for the guest's virtio-balloon driver.");
                schedule_attach_retry(machine);
                return;
        }
        if (error == -ENODEV) {
                machine_set_state(machine, MACHINE_UNMANAGED, desc);
                return;
        }
        /* A step that timed out (QEMU's main loop busy: migration, a long monitor command) or
         * failed otherwise over a live connection: nothing reconnects, so ask again later
         * rather than staying failed for good. */
        _cleanup_free_ char *why = NULL;
        if (asprintf(&why, "%s; trying again, backing off to %llu s.", desc,
                     (unsigned long long) (ATTACH_RETRY_MAX_USEC / USEC_PER_SEC)) < 0)
                why = NULL;
        machine_set_state(machine, MACHINE_FAILED, why ?: desc);
        schedule_attach_retry(machine);
}

static const BalloonCallbacks balloon_callbacks = {
        .on_ready = on_balloon_ready,
        .on_actual = on_balloon_actual,
        .on_stats = on_balloon_stats,
        .on_error = on_balloon_error,
        .on_free_page_reporting = on_balloon_free_page_reporting,
};

/* --- QMP callbacks ---------------------------------------------------------------------- */

static void on_qmp_event(QmpClient *c, const char *event, json_object *data, void *userdata) {
        Machine *machine = userdata;

        if (streq(event, "SHUTDOWN"))
                log_info("Machine %s: guest is shutting down.", machine->name);
        balloon_handle_event(machine->balloon, event, data);
}

static void on_qmp_state(QmpClient *c, QmpState state, int error, const char *desc, void *userdata) {
        Machine *machine = userdata;

        switch (state) {
        case QMP_READY: {
                int r = balloon_attach(machine->balloon, machine->context.config->stats_interval_sec);
                if (r < 0)
                        machine_set_state(machine, MACHINE_FAILED, "Failed to query the balloon device.");
                break;
        }
        case QMP_CONNECTING:
                if (machine->state != MACHINE_FAILED)
                        machine_set_state(machine, MACHINE_CONNECTING, NULL);
                break;
        case QMP_WAITING_RETRY:
        case QMP_DISCONNECTED:
                balloon_detach(machine->balloon);
                if (error < 0 || machine->state == MACHINE_MANAGED)
                        machine_set_state(machine, MACHINE_FAILED,
                                          desc ? desc : "QMP connection lost; reconnecting.");
                break;
        case QMP_CLOSED:
                balloon_detach(machine->balloon);
                break;
        }
}

/* The path on the leader's command line is the guest side's word: a compromised QEMU can
 * rewrite its own argv to name another VM's monitor (or plant a symlink there), and we
 * connect as root. So the monitor must be served by this machine's leader, or by a process in
 * its scope (a QEMU helper holding the socket). A QMPSocket= drop-in is root's own word and is
 * not checked: it may name a proxy outside the scope. */
static int on_qmp_verify_peer(QmpClient *c, const struct ucred *peer, char **ret_reason, void *userdata) {
        Machine *machine = userdata;
        _cleanup_free_ char *cgroup = NULL, *comm = NULL;
        const char *why;
        char p[64];
        int r;

        if (!streq_ptr(machine->qmp_socket_source, "cmdline"))
                return 0;
        if (peer->pid > 0 && peer->pid == machine->leader)
                return 0;

        if (peer->pid <= 0)
                why = "outside this PID namespace";
        else {
                r = pid_cgroup_path(peer->pid, NULL, &cgroup);
                if (r >= 0 && cgroup_path_is_under(cgroup, machine->control_group))
                        return 0;
                why = r < 0 ? "of unknown cgroup" : "in another cgroup";
                snprintf(p, sizeof p, "/proc/%d/comm", (int) peer->pid);
                if (read_full_file(p, &comm, NULL) >= 0)
                        comm[strcspn(comm, "\n")] = 0;
        }
        if (asprintf(ret_reason, "Refused the QMP socket %s from the command line of PID %d: it is served by "
                     "PID %d%s%s%s, %s%s%s, not by the leader nor a process in %s; another VM's monitor? "
                     "Retrying.", machine->qmp_socket, (int) machine->leader, (int) peer->pid,
                     comm ? " (" : "", strempty(comm), comm ? ")" : "", why, cgroup ? " " : "",
                     strempty(cgroup), machine->control_group) < 0)
                *ret_reason = NULL;
        return -EPERM;
}

static const QmpCallbacks qmp_callbacks = {
        .on_event = on_qmp_event,
        .on_state = on_qmp_state,
        .verify_peer = on_qmp_verify_peer,
};

static void schedule_scope_rearm(Machine *machine);

static void on_scope_pressure(PsiWatch *w, PressureLevel event, PressureLevel level, int error, void *userdata) {
        Machine *machine = userdata;

        if (error < 0) {
                log_debug("Machine %s: scope pressure file went away; watching it again when it comes back.",
                          machine->name);
                machine->psi = psi_watch_free(machine->psi);
                machine->scope_level = PRESSURE_NONE;
                schedule_scope_rearm(machine);
                return;
        }
        if (event != PRESSURE_NONE)
                log_debug("Machine %s: %s pressure in its scope.", machine->name, pressure_level_to_string(event));
        if (machine->scope_level != level) {
                machine->scope_level = level;
                machine_emit(machine, "ScopePressure", NULL);
        }
        machine->ops->run_policy(machine->owner, machine, event);
}

/* --- lifecycle ---------------------------------------------------------------------------- */

int machine_new(Machine **ret, const MachineContext *context, const MachineOwnerOps *ops, void *owner,
                const DiscoveredMachine *dm) {
        Machine *machine;
        int r;

        machine = calloc(1, sizeof *machine);
        if (!machine)
                return -ENOMEM;
        machine->context = *context;
        machine->knobs = &machine->config.knobs;
        machine->ops = ops;
        machine->owner = owner;
        machine->leader = dm->leader;
        machine->state = MACHINE_CONNECTING;
        guest_stats_init(&machine->stats);
        machine->host_rss_bytes = machine->host_swap_bytes = UINT64_MAX;
        machine->name = strdup(dm->name);
        machine->unit = strdup(dm->unit);
        machine->control_group = strdup(dm->control_group);
        machine->service = strdup(strempty(dm->service));
        machine->id = dm->id;
        if (!machine->name || !machine->unit || !machine->control_group || !machine->service) {
                r = -ENOMEM;
                goto fail;
        }
        r = sd_bus_path_encode(BUS_MACHINE_PREFIX, dm->name, &machine->object_path);
        if (r < 0)
                goto fail;

        r = machine_config_load(context->config, dm->name, &machine->config);
        if (r < 0) {
                log_warning_errno(r, "Machine %s: failed to load its drop-ins, using defaults: %m", dm->name);
                machine->config = (MachineConfig) { .knobs = context->config->defaults };
        }
        machine_share_default_knobs(machine);
        *ret = machine;
        return 0;
fail:
        machine_free(machine);
        return r;
}

/* Scope pressure: that VM first. Missing PSI is not fatal: host pressure still works. Called
 * again when the machine's trigger knobs change: the kernel cannot re-arm a trigger fd. */
static int machine_watch_scope(Machine *machine) {
        const MachineContext *ctx = &machine->context;
        _cleanup_free_ char *p = NULL;
        int r;

        machine->psi = psi_watch_free(machine->psi);
        machine->scope_level = PRESSURE_NONE;
        if (!ctx->cgroup2_mount)
                return 0;
        if (asprintf(&p, "%s%s/memory.pressure", ctx->cgroup2_mount, machine->control_group) < 0)
                return -ENOMEM;
        r = psi_watch_new(&machine->psi, ctx->event, p, machine->config.knobs.trigger, on_scope_pressure, machine);
        if (r < 0 && psi_error_is_transient(r)) {
                /* EMFILE, or the scope not (yet, again) there: logged once per outage */
                if (machine->psi_retry_usec == 0)
                        log_warning_errno(r, "Machine %s: cannot watch %s yet: %m. Trying again, backing off to %llu s.",
                                          machine->name, p, (unsigned long long) (PSI_REARM_MAX_USEC / USEC_PER_SEC));
                schedule_scope_rearm(machine);
        } else if (r < 0)
                log_warning_errno(r, "Machine %s: cannot watch %s, scope pressure ignored: %m", machine->name, p);
        else {
                machine->psi_retry_usec = 0;
                if (machine->psi_retry)
                        (void) sd_event_source_set_enabled(machine->psi_retry, SD_EVENT_OFF);
        }
        return 0;
}

/* A libvirt domain: its only QMP monitor is libvirt's (passed by fd), so go through libvirt. */
static int machine_start_libvirt(Machine *machine) {
#if HAVE_LIBVIRT
        const Config *c = machine->context.config;
        LibvirtConnection *conn;
        int r;

        if (sd_id128_is_null(machine->id)) {
                machine_set_state(machine, MACHINE_UNMANAGED, "Backend=libvirt, but machined has no Id (domain UUID) "
                                  "for this machine.");
                return 0;
        }
        r = machine->ops->libvirt_connection(machine->owner, &conn);
        if (r < 0) {
                log_error_errno(r, "Failed to set up libvirt %s: %m", c->libvirt_uri);
                machine_set_state(machine, MACHINE_FAILED, "Failed to set up the libvirt connection.");
                return 0;
        }
        r = machine_watch_scope(machine);
        if (r < 0)
                return r;
        r = balloon_new_libvirt(&machine->balloon, conn, machine->id, machine->name,
                                c->stats_interval_sec, &balloon_callbacks, machine);
        if (r < 0)
                return r;
        machine->backend = balloon_backend_name(machine->balloon);
        return 0;
#else
        machine_set_state(machine, MACHINE_UNMANAGED, "A libvirt domain, and autoballoond was built without "
                          "libvirt support (-Dlibvirt=disabled); give it a QMP socket of its own (QMPSocket=).");
        return 0;
#endif
}

static int on_scope_rearm(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) machine_watch_scope(userdata);
        return 0;
}

static int arm_scope_rearm(Machine *machine, usec_t delay) {
        int r;

        if (machine->psi_retry)
                r = sd_event_source_set_time_relative(machine->psi_retry, delay);
        else {
                r = sd_event_add_time_relative(machine->context.event, &machine->psi_retry, CLOCK_MONOTONIC,
                                               delay, 0, on_scope_rearm, machine);
                /* below the bus and QMP: re-arming every VM's triggers (a trigger knob set on the
                 * Manager, 3,000 triggers at 1,000 VMs) goes one machine per dispatch, and a
                 * D-Bus call or a reply that comes meanwhile is served in between */
                if (r >= 0)
                        (void) sd_event_source_set_priority(machine->psi_retry, SD_EVENT_PRIORITY_NORMAL + 4);
        }
        if (r >= 0)
                r = sd_event_source_set_enabled(machine->psi_retry, SD_EVENT_ONESHOT);
        return r;
}

static void schedule_scope_rearm(Machine *machine) {
        machine->psi_retry_usec = machine->psi_retry_usec ? MIN(machine->psi_retry_usec * 2, PSI_REARM_MAX_USEC) :
                PSI_REARM_MIN_USEC;
        int r = arm_scope_rearm(machine, machine->psi_retry_usec);
        if (r < 0)
                log_warning_errno(r, "Machine %s: cannot schedule watching its scope again: %m", machine->name);
}

/* New thresholds: the old triggers stay armed until the new ones are (one dispatch later). */
static void rearm_scope_soon(Machine *machine) {
        int r = arm_scope_rearm(machine, 0);

        if (r < 0) {
                log_debug_errno(r, "Machine %s: cannot defer re-arming its scope triggers, doing it now: %m", machine->name);
                (void) machine_watch_scope(machine);
        }
}

/* Say in StateReason why the machine cannot be managed and what to do about it. */
static void machine_start_failed(Machine *machine, int error) {
        const Config *c = machine->context.config;
        _cleanup_free_ char *why = NULL;
        int r;

        if (error == -ENAMETOOLONG)
                r = asprintf(&why, "QMP socket path %s is %zu bytes, longer than a unix socket address holds (%zu); "
                             "set QMPSocket= in %s/%s.conf to a shorter path, such as a symlink to the socket, and reload.",
                             machine->qmp_socket, strlen(machine->qmp_socket),
                             sizeof(((struct sockaddr_un *) NULL)->sun_path) - 1, c->machines_directory, machine->name);
        else if (error == -EINVAL)
                r = asprintf(&why, "QMP socket path %s is not absolute; set QMPSocket= in %s/%s.conf to its absolute path and reload.",
                             machine->qmp_socket, c->machines_directory, machine->name);
        else
                r = asprintf(&why, "Cannot set up QMP on %s: %s; reload (autoballoonctl reload) to try again.",
                             machine->qmp_socket, strerror(-error));
        machine_set_state(machine, error == -ENOMEM ? MACHINE_FAILED : MACHINE_UNMANAGED,
                          r < 0 ? "Cannot set up QMP." : why);
}

int machine_start(Machine *machine) {
        const MachineContext *ctx = &machine->context;
        int r;

        /* A QMP socket of our own wins (named in a drop-in, or on QEMU's command line); else a
         * libvirt domain goes through libvirt; Backend= forces either. */
        if (machine->config.backend == MACHINE_BACKEND_LIBVIRT)
                return machine_start_libvirt(machine);
        machine->qmp_socket = mfree(machine->qmp_socket);   /* started again after a reload */
        if (machine->config.qmp_socket) {
                machine->qmp_socket = strdup(machine->config.qmp_socket);
                machine->qmp_socket_source = "drop-in";
        } else {
                r = qmp_socket_from_pid(machine->leader, &machine->qmp_socket);
                if (r == -ENOENT && machine->config.backend == MACHINE_BACKEND_AUTO &&
                    streq(machine->service, LIBVIRT_MACHINE_SERVICE))
                        return machine_start_libvirt(machine);
                if (r < 0) {
                        _cleanup_free_ char *why = NULL;
                        if (asprintf(&why, "No QMP unix socket found on the command line of PID %d (%s); "
                                     "set QMPSocket= in %s/%s.conf and reload.", (int) machine->leader,
                                     r == -ENOENT ? "none, or only fd-passed monitors" : strerror(-r),
                                     ctx->config->machines_directory, machine->name) < 0)
                                return -ENOMEM;
                        machine_set_state(machine, MACHINE_UNMANAGED, why);
                        return 0;
                }
                machine->qmp_socket_source = "cmdline";
                if (machine->qmp_socket[0] != '/') {
                        /* Relative to QEMU's working directory, which /proc/PID/cwd shows only
                         * to a ptrace-capable reader; the unit does not grant CAP_SYS_PTRACE. */
                        _cleanup_free_ char *why = NULL;
                        if (asprintf(&why, "The QMP socket path \"%s\" on the command line of PID %d is relative "
                                     "and its working directory cannot be read (that needs CAP_SYS_PTRACE); "
                                     "give QEMU an absolute path, or set QMPSocket= in %s/%s.conf.",
                                     machine->qmp_socket, (int) machine->leader,
                                     ctx->config->machines_directory, machine->name) < 0)
                                return -ENOMEM;
                        machine_set_state(machine, MACHINE_UNMANAGED, why);
                        return 0;
                }
        }

        r = machine_watch_scope(machine);
        if (r < 0)
                return r;

        r = qmp_client_new(&machine->qmp, ctx->event, machine->qmp_socket, &qmp_callbacks, machine);
        if (r >= 0)
                r = balloon_new(&machine->balloon, machine->qmp, &balloon_callbacks, machine);
        if (r >= 0) {
                machine->backend = balloon_backend_name(machine->balloon);
                r = qmp_client_start(machine->qmp);
        }
        if (r < 0) {
                /* QMP first: it cancels pending commands, whose callbacks still see a live balloon. */
                machine->qmp = qmp_client_free(machine->qmp);
                machine->balloon = balloon_free(machine->balloon);
                machine_start_failed(machine, r);
        }
        return r;
}

Machine *machine_free(Machine *machine) {
        if (!machine)
                return NULL;
        /* QMP first: it cancels pending commands, whose callbacks still see a live balloon. */
        qmp_client_free(machine->qmp);
        balloon_free(machine->balloon);
        sd_event_source_disable_unref(machine->attach_timer);
        sd_event_source_disable_unref(machine->psi_retry);
        psi_watch_free(machine->psi);
        machine_config_done(&machine->config);
        free(machine->name);
        free(machine->unit);
        free(machine->control_group);
        free(machine->service);
        free(machine->object_path);
        free(machine->qmp_socket);
        free(machine->state_reason);
        free(machine);
        return NULL;
}
