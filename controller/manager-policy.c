/* The policy's runs for the Manager: the snapshot handed to policy_decide() (one PolicyVM per
 * machine, the host's pressure and budget), the rest of a host event decided on blind steps and
 * budget events waiting for missing guest stats, the policy's timer and deferred runs, and
 * guest-stats polling. The decisions themselves
 * are policy.c's; the state they act on is manager.c's and machine.c's. */
#include <inttypes.h>
#include <stdio.h>

#include "log.h"
#include "machine-state.h"
#include "machine.h"
#include "manager.h"

/* After the budget's source woke us (a v1 threshold, v2 memory.events), keep watching this long
 * whatever the first read said. */
#define BUDGET_EVENT_WATCH_USEC (10 * USEC_PER_SEC)

static int on_policy_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        manager_run_policy(userdata, PRESSURE_NONE, NULL, PRESSURE_NONE);
        return 0;
}

static void arm_policy_timer(Manager *m, usec_t when) {
        if (when == USEC_INFINITY) {
                sd_event_source_set_enabled(m->policy_timer, SD_EVENT_OFF);
                return;
        }
        if (!m->policy_timer) {
                if (sd_event_add_time(m->event, &m->policy_timer, CLOCK_MONOTONIC, when, 0, on_policy_timer, m) < 0) {
                        log_error("Failed to arm the policy timer; recovery waits for the next event.");
                        return;
                }
                sd_event_source_set_description(m->policy_timer, "policy");
        } else
                sd_event_source_set_time(m->policy_timer, when);
        sd_event_source_set_enabled(m->policy_timer, SD_EVENT_ONESHOT);
}

/* A host event that finds guests without fresh stats is decided at once on blind steps, and its
 * rest when their stats are in (policy.c, host_event_share()); a budget event, sized by the
 * guests' stats alone, waits for them. QEMU keeps the statistics the guest last pushed (every
 * StatsIntervalSec), so asking for them costs one QMP round trip, not a wait for the guest: the
 * rest and a budget event wait for those replies, at most STATS_WAIT_MAX_USEC. A VM that was
 * asked within STATS_RETRY_USEC and still has none (no stats queue, an old driver) is not asked
 * again. */
#define STATS_WAIT_MAX_USEC POLICY_REST_WAIT_USEC
#define STATS_RETRY_USEC (10 * USEC_PER_SEC)

static bool machine_stats_fresh(const Machine *machine, usec_t now) {
        return guest_stats_fresh(&machine->stats, &machine->config.knobs, now);
}

static bool machine_stats_awaited(const Machine *machine, usec_t now) {
        return machine_controllable(machine) && !machine_stats_fresh(machine, now) &&
                machine->stats_requested_usec > 0 && now < machine->stats_requested_usec + STATS_WAIT_MAX_USEC;
}

/* Asks a VM without fresh stats for them, unless it was asked lately; true if its answer is
 * awaited. */
static bool machine_request_stats(Machine *machine, usec_t now) {
        if (machine->stats_requested_usec > 0 && now < machine->stats_requested_usec + STATS_RETRY_USEC)
                return machine_stats_awaited(machine, now);
        if (balloon_poll_stats(machine->balloon) < 0)
                return false;
        machine->stats_requested_usec = now;
        return true;
}

/* Asks every VM without fresh stats for them; returns true if any answer is awaited. */
bool manager_request_missing_stats(Manager *m, usec_t now) {
        bool waiting = false;

        for (size_t i = 0; i < m->n_machines; i++) {
                Machine *machine = m->machines[i];
                if (machine_controllable(machine) && !machine_stats_fresh(machine, now))
                        waiting = machine_request_stats(machine, now) || waiting;
        }
        return waiting;
}

/* The same on the snapshot of the run (the event's path: the stats are in the array); returns
 * how many answers are awaited. */
static size_t snapshot_missing_stats(Manager *m, const PolicyVM *vms, usec_t now) {
        size_t waiting = 0;

        for (size_t i = 0; i < m->n_machines; i++)
                if (vms[i].controllable && !guest_stats_fresh(&vms[i].stats, vms[i].knobs, now))
                        waiting += machine_request_stats(m->machines[i], now);
        return waiting;
}

static bool stats_awaited(Manager *m, usec_t now) {
        for (size_t i = 0; i < m->n_machines; i++)
                if (machine_stats_awaited(m->machines[i], now))
                        return true;
        return false;
}

static int on_deferred_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (m->deferred_budget) {
                m->deferred_budget = false;
                log_debug("Guest statistics did not all arrive within %llu ms; deciding without them.",
                          (unsigned long long) (STATS_WAIT_MAX_USEC / USEC_PER_MSEC));
                manager_run_policy(m, PRESSURE_NONE, NULL, PRESSURE_NONE);
        }
        return 0;
}

void manager_defer_budget(Manager *m, usec_t now) {
        m->deferred_budget = true;
        if (!m->deferred_timer) {
                if (sd_event_add_time(m->event, &m->deferred_timer, CLOCK_MONOTONIC, now + STATS_WAIT_MAX_USEC, 0,
                                      on_deferred_timer, m) < 0) {
                        m->deferred_budget = false;
                        manager_run_policy(m, PRESSURE_NONE, NULL, PRESSURE_NONE);
                        return;
                }
                sd_event_source_set_description(m->deferred_timer, "stats-wait");
                return;
        }
        int enabled = SD_EVENT_OFF;
        sd_event_source_get_enabled(m->deferred_timer, &enabled);
        if (enabled == SD_EVENT_OFF) {
                sd_event_source_set_time(m->deferred_timer, now + STATS_WAIT_MAX_USEC);
                sd_event_source_set_enabled(m->deferred_timer, SD_EVENT_ONESHOT);
        }
}



/* The snapshot array, grown to n machines and kept: runs come at every batch of replies. */
static PolicyVM *policy_vms(Manager *m, size_t n) {
        if (n > m->policy_vms_allocated) {
                size_t k = MAX(n, 2 * m->policy_vms_allocated);
                PolicyVM *p = reallocarray(m->policy_vms, k, sizeof *p);
                if (!p)
                        return NULL;
                m->policy_vms = p;
                m->policy_vms_allocated = k;
        }
        return m->policy_vms ?: (m->policy_vms = calloc(1, sizeof(PolicyVM)));
}

void manager_run_policy(Manager *m, PressureLevel host_event, Machine *scope_machine, PressureLevel scope_event) {
        PolicyVM *vms;
        usec_t now = now_usec(), when;

        if (m->exiting)
                return;
        /* The stats a deferred budget event waited for are in: decide it now. */
        if (m->deferred_budget && !stats_awaited(m, now)) {
                m->deferred_budget = false;
                sd_event_source_set_enabled(m->deferred_timer, SD_EVENT_OFF);
        } else if (m->deferred_budget && host_event == PRESSURE_NONE && scope_event == PRESSURE_NONE)
                return;   /* still waiting: a budget take without them would be blind */
        if (m->in_policy) {
                /* A move that completes synchronously lands here; decide again afterwards. */
                m->policy_again = true;
                return;
        }
        if (host_event != PRESSURE_NONE || scope_event != PRESSURE_NONE)
                m->last_pressure_usec = now;
        /* Another trigger of the same stall while the stats an event decided on blind steps asked
         * for are still awaited: it joins that event (the rest is decided at the higher level),
         * as it would have joined it with the stats at hand, instead of stepping blind again. */
        if (host_event != PRESSURE_NONE && m->host_rest_level != PRESSURE_NONE &&
            now < m->host_rest_usec + STATS_WAIT_MAX_USEC && stats_awaited(m, now)) {
                log_debug("Host %s pressure event joins the %s event whose guest statistics are awaited.",
                          pressure_level_to_string(host_event), pressure_level_to_string(m->host_rest_level));
                m->host_rest_level = MAX(m->host_rest_level, host_event);
                host_event = PRESSURE_NONE;
                if (scope_event == PRESSURE_NONE)
                        return;
        }
        /* This run sees every update a scheduled one was for. */
        sd_event_source_set_enabled(m->policy_defer, SD_EVENT_OFF);

        vms = policy_vms(m, m->n_machines);
        if (!vms) {
                log_oom();
                return;
        }
        for (size_t i = 0; i < m->n_machines; i++) {
                Machine *machine = m->machines[i];
                /* A PSI event comes 2 s after the last look: the machines are out of the caches
                 * and the TLB (1,000 machines in ~1,000 pages took 0.3-0.8 ms here, against 13 us
                 * warm): ask for the next ones ahead. */
                for (unsigned stage = 0; stage < 3; stage++)
                        if (i + 24 - 8 * stage < m->n_machines)
                                machine_prefetch(m->machines[i + 24 - 8 * stage], stage);
                /* the array is as cold, and each entry is written whole (512 bytes) */
                if (i + 8 < m->n_machines)
                        for (size_t o = 0; o < sizeof *vms; o += 64)
                                __builtin_prefetch((const char *) (vms + i + 8) + o, 1);
                /* A VM's footprint is read with the guest stats and on events; a new one once at
                 * its first decision, so that the budget knows what it holds from the start. */
                if (m->host_memory && machine->host_rss_bytes == UINT64_MAX)
                        manager_read_footprint(m, machine);
                vms[i] = machine_policy_vm(machine);
                vms[i].scope_event = machine == scope_machine ? scope_event : PRESSURE_NONE;
        }
        PolicyHost host = {
                .event = host_event,
                .level = m->host_level,
                .last_pressure_usec = m->last_pressure_usec,
                .burst = m->host_burst,
                .rest_level = m->host_rest_level,
                .rest_usec = m->host_rest_usec,
                .stats_pending = m->host_rest_level != PRESSURE_NONE && host_event == PRESSURE_NONE &&
                                 stats_awaited(m, now),
        };
        manager_read_budget(m, &host.budget);
        when = policy_decide(&host, vms, m->n_machines, now);
        m->host_burst = host.burst;
        bool blind = host_event != PRESSURE_NONE && host.rest_level != PRESSURE_NONE,
             rest = host_event == PRESSURE_NONE && m->host_rest_level != PRESSURE_NONE && host.rest_level == PRESSURE_NONE;
        PressureLevel rest_level = m->host_rest_level;
        usec_t rest_since = m->host_rest_usec;
        m->host_rest_level = host.rest_level;
        m->host_rest_usec = host.rest_usec;
        m->budget = host.budget;
        m->budget_balance = host_budget_balance(&host.budget, vms, m->n_machines);
        if (host.budget.valid)
                log_debug("Budget: used %" PRIu64 " MiB + reserve %" PRIu64 " MiB + the VMs' swap - capacity %" PRIu64
                          " MiB = %+" PRId64 " MiB%s.", (uint64_t) (host.budget.used_bytes / MIB),
                          (uint64_t) (host.budget.reserve_bytes / MIB), (uint64_t) (host.budget.capacity_bytes / MIB),
                          m->budget_balance / (int64_t) MIB,
                          host.budget.swap_capable ? "" : " (no swap: every guest's room to grow counts too)");
        /* Within two reserves of the budget (or over): guest stats and footprints kept fresh. */
        m->budget_watch = host.budget.valid &&
                m->budget_balance > -(int64_t) MIN(2 * host.budget.reserve_bytes, (uint64_t) INT64_MAX / 2);
        /* A wake-up from the source means its use is on the move: the value read at that moment
         * is where it crossed, not where it stops. Keep looking for a while (measured: a guest's
         * touch crossed the threshold, the first read was just short of the watch, and the next
         * look came 8 s later with the host in swap). */
        if (host.budget.valid && m->budget_event_usec != 0 && now < m->budget_event_usec + BUDGET_EVENT_WATCH_USEC) {
                m->budget_watch = true;
                when = MIN(when, now + host.budget.interval_usec);
        }
        if (host.budget.valid)
                m->last_pressure_usec = MAX(m->last_pressure_usec, host.last_pressure_usec);

        m->in_policy = true;
        /* the commands first, their log lines after the batch */
        log_batch_begin();
        for (size_t i = 0; i < m->n_machines; i++) {
                Machine *machine = m->machines[i];
                machine->policy_state = vms[i].state;
                if (vms[i].controllable && vms[i].new_target_bytes != machine->target_bytes)
                        (void) machine_move(machine, vms[i].new_target_bytes, vms[i].reason,
                                            vms[i].reason_level);
        }
        if (rest && now <= rest_since + POLICY_REST_MAX_USEC)
                log_info("Host %s pressure event: its rest decided on the guest statistics in %llu ms after it.",
                         pressure_level_to_string(rest_level),
                         (unsigned long long) ((now - rest_since) / USEC_PER_MSEC));
        else if (rest)
                log_info("Host %s pressure event: its rest dropped, too late; the next event decides.",
                         pressure_level_to_string(rest_level));
        /* A host event asks the guests without fresh stats for them, after the balloon commands:
         * for the rest of an event decided on blind steps, and for the next event. */
        if (host_event != PRESSURE_NONE) {
                size_t asked = snapshot_missing_stats(m, vms, now);
                if (blind)
                        log_info("Host %s pressure event: %zu guest(s) without fresh statistics, so every guest "
                                 "gave at most a blind low step; the rest of the event when their statistics are in.",
                                 pressure_level_to_string(host_event), asked);
                if (blind && asked == 0)
                        manager_schedule_policy(m);   /* none to wait for (none answer): the rest now */
        }
        log_batch_end();
        m->in_policy = false;
        manager_schedule_state_flush(m);   /* the writes come later, off this path */

        arm_policy_timer(m, when);
        manager_update_stats_polling(m);
        manager_notify_status(m);

        if (m->policy_again) {
                m->policy_again = false;
                manager_run_policy(m, PRESSURE_NONE, NULL, PRESSURE_NONE);
        }
}

static int on_policy_defer(sd_event_source *s, void *userdata) {
        manager_run_policy(userdata, PRESSURE_NONE, NULL, PRESSURE_NONE);
        return 0;
}

/* Guest stats, BALLOON_CHANGE and balloon-ready arrive from N VMs at once (a stats round, the
 * moves of one event, start-up), and every policy run looks at all N VMs: one run per update
 * was quadratic (docs/benchmarks.md: at 1,000 VMs 3x the CPU per stall, and the next PSI event
 * waited behind it). One run after the updates of this wakeup decides the same. */
void manager_schedule_policy(Manager *m) {
        if (!m->policy_defer) {
                if (sd_event_add_defer(m->event, &m->policy_defer, on_policy_defer, m) < 0) {
                        manager_run_policy(m, PRESSURE_NONE, NULL, PRESSURE_NONE);
                        return;
                }
                sd_event_source_set_description(m->policy_defer, "policy-coalesce");
                /* after every QMP and bus source already pending (they run at NORMAL) and after
                 * a round of guest stats (NORMAL + 1): one run for the round, not one a slice */
                sd_event_source_set_priority(m->policy_defer, SD_EVENT_PRIORITY_NORMAL + 2);
        }
        sd_event_source_set_enabled(m->policy_defer, SD_EVENT_ONESHOT);
}

/* A round of guest stats changes every machine's GuestAvailableMemory: at 1,000 VMs the
 * signals in one dispatch held the loop for ~10 ms, and a PSI event that came meanwhile
 * waited. A sweep sends at most EMIT_SLICE per dispatch and goes on where it stopped; a
 * machine that changed behind the sweep is picked up by another sweep. s == NULL: all now. */
#define EMIT_SLICE 64

static int on_emit_defer(sd_event_source *s, void *userdata) {
        Manager *m = userdata;
        unsigned sent = 0;

        for (; m->emit_next < m->n_machines && (!s || sent < EMIT_SLICE); m->emit_next++)
                sent += machine_flush_changes(m->machines[m->emit_next]);
        if (m->emit_next < m->n_machines || m->emit_again) {
                /* emit_again stands until the sweep wraps: cleared on a slice that goes on, a
                 * machine that changed behind the sweep would wait for the next change anywhere */
                if (m->emit_next >= m->n_machines) {
                        m->emit_next = 0;
                        m->emit_again = false;
                }
                if (s)
                        sd_event_source_set_enabled(s, SD_EVENT_ON);
                else
                        return on_emit_defer(NULL, m);
                return 0;
        }
        m->emit_next = 0;
        if (s)
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

void manager_schedule_emit(Manager *m) {
        if (m->emit_next > 0)
                m->emit_again = true;   /* a sweep is under way and may be past this machine */
        if (!m->emit_defer) {
                if (sd_event_add_defer(m->event, &m->emit_defer, on_emit_defer, m) < 0) {
                        (void) on_emit_defer(NULL, m);   /* cannot wait: send what is collected now */
                        return;
                }
                sd_event_source_set_description(m->emit_defer, "properties-changed-coalesce");
                /* after the policy's batch (NORMAL + 2), before anything idle */
                sd_event_source_set_priority(m->emit_defer, SD_EVENT_PRIORITY_NORMAL + 3);
        }
        int enabled = SD_EVENT_OFF;
        sd_event_source_get_enabled(m->emit_defer, &enabled);
        if (enabled == SD_EVENT_OFF)
                sd_event_source_set_enabled(m->emit_defer, SD_EVENT_ONESHOT);
}

/* --- what each machine keeps for a restart (machine-state.c), written off the event's path -- */

/* A crash loses at most this much of the kept state; under pressure the policy changes it on every
 * event, so a write per change would be a file per VM per event on the event's own path. */
#define STATE_FLUSH_DELAY_USEC (1 * USEC_PER_SEC)
/* Writing per dispatch of the flush, at most (and one file at least): between two slices the loop
 * looks at its fds again, so a PSI event is not kept waiting behind a thousand writes. Measured
 * here: a file takes 10-20 us on tmpfs (/run), 250-750 us on ext4 under load. A PSI event that
 * comes during a slice waits for it: a quarter of the millisecond the event's whole path may take
 * at 1,000 VMs (docs/benchmarks.md), a dozen files on tmpfs. */
#define STATE_FLUSH_SLICE_USEC ((usec_t) 250)

/* Writes dirty machines until slice_usec has passed (USEC_INFINITY: all of them). */
static size_t flush_some(Manager *m, usec_t slice_usec, bool *ret_more) {
        usec_t start = now_usec();
        size_t written = 0;

        *ret_more = false;
        for (size_t i = 0; i < m->n_machines; i++) {
                Machine *machine = m->machines[i];

                if (!machine_state_changed(machine))
                        continue;
                if (written > 0 && slice_usec != USEC_INFINITY && now_usec() - start >= slice_usec) {
                        *ret_more = true;
                        break;
                }
                (void) machine_state_flush(machine);
                written++;
        }
        return written;
}

static int on_state_flush(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        usec_t t = now_usec();
        size_t n;
        bool more;

        n = flush_some(m, STATE_FLUSH_SLICE_USEC, &more);
        if (n > 0)
                log_debug("Saved the kept state of %zu machine(s) in %" PRIu64 " us%s.", n, now_usec() - t,
                          more ? "; more at the next turn of the loop" : "");
        if (more) {
                /* the rest at the next turn of the loop, after whatever came in meanwhile */
                (void) sd_event_source_set_time(s, 0);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
}

void manager_schedule_state_flush(Manager *m) {
        int enabled = SD_EVENT_OFF, r;
        bool dirty = false;

        if (m->state_flush) {
                (void) sd_event_source_get_enabled(m->state_flush, &enabled);
                if (enabled != SD_EVENT_OFF)
                        return;   /* a flush is due already: it takes this change too */
        }
        /* Nothing new to keep, no timer: a decision that changed nothing (a VM attaching, guest
         * statistics on an idle host) must not wake the daemon a second later. The scan is a few
         * compares per VM (about 10 us at 1,000), after the decision's balloon commands. */
        for (size_t i = 0; i < m->n_machines && !dirty; i++)
                dirty = machine_state_changed(m->machines[i]);
        if (!dirty)
                return;
        if (!m->state_flush) {
                r = sd_event_add_time_relative(m->event, &m->state_flush, CLOCK_MONOTONIC, STATE_FLUSH_DELAY_USEC,
                                               STATE_FLUSH_DELAY_USEC / 4, on_state_flush, m);
                if (r < 0) {
                        log_warning_errno(r, "Failed to schedule saving the machines' state: %m");
                        return;
                }
                (void) sd_event_source_set_description(m->state_flush, "state-flush");
                (void) sd_event_source_set_priority(m->state_flush, SD_EVENT_PRIORITY_IDLE);
                return;
        }
        (void) sd_event_source_set_time_relative(m->state_flush, STATE_FLUSH_DELAY_USEC);
        (void) sd_event_source_set_enabled(m->state_flush, SD_EVENT_ONESHOT);
}

void manager_flush_state(Manager *m) {
        bool more;

        (void) flush_some(m, USEC_INFINITY, &more);
        if (m->state_flush)
                (void) sd_event_source_set_enabled(m->state_flush, SD_EVENT_OFF);
}

/* --- guest stats ----------------------------------------------------------------------------- */

/* A round of guest stats (a qom-get each) and footprints (a /proc/PID/status each) is cut into
 * slices, one slice per dispatch below every QMP and bus source: at 1,000 VMs the whole round in
 * one dispatch held the loop for 20-45 ms, and a PSI event that came meanwhile waited for it
 * (docs/benchmarks.md). A slice holds it for well under a millisecond. */
#define STATS_SLICE 16

static int on_stats_round(sd_event_source *s, void *userdata) {
        Manager *m = userdata;
        size_t end = MIN(m->stats_round_next + STATS_SLICE, m->n_machines);

        for (size_t i = m->stats_round_next; i < end; i++) {
                Machine *machine = m->machines[i];
                if (machine_controllable(machine))
                        (void) balloon_poll_stats(machine->balloon);
                manager_read_footprint(m, machine);
        }
        m->stats_round_next = end;
        if (end >= m->n_machines)
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

static int on_stats_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        sd_event_source_set_time_relative(s, m->config.stats_interval_sec * USEC_PER_SEC);
        m->stats_round_next = 0;
        if (!m->stats_round) {
                if (sd_event_add_defer(m->event, &m->stats_round, on_stats_round, m) < 0) {
                        /* cannot slice it: the whole round now */
                        for (size_t i = 0; i < m->n_machines; i++)
                                if (machine_controllable(m->machines[i]))
                                        (void) balloon_poll_stats(m->machines[i]->balloon);
                        manager_refresh_footprints(m);
                        return 0;
                }
                sd_event_source_set_description(m->stats_round, "guest-stats-round");
                /* below the replies of the last slice (NORMAL), above the policy's run (NORMAL
                 * + 2): the round's answers are decided in one run, not one a slice */
                sd_event_source_set_priority(m->stats_round, SD_EVENT_PRIORITY_NORMAL + 1);
        }
        sd_event_source_set_enabled(m->stats_round, SD_EVENT_ON);
        return 0;
}

/* Guest stats matter only while something is under pressure or some guest is below its
 * maximum. Otherwise poll nothing: an idle host sees no wake-ups from us. */
void manager_update_stats_polling(Manager *m) {
        bool needed = m->host_level != PRESSURE_NONE || m->budget_watch;

        for (size_t i = 0; !needed && i < m->n_machines; i++) {
                Machine *machine = m->machines[i];
                if (!machine_controllable(machine))
                        continue;
                needed = machine->scope_level != PRESSURE_NONE ||
                        machine->target_bytes < machine_maximum(machine);
        }
        if (!needed || m->exiting) {
                sd_event_source_set_enabled(m->stats_timer, SD_EVENT_OFF);
                return;
        }
        if (!m->stats_timer) {
                if (sd_event_add_time_relative(m->event, &m->stats_timer, CLOCK_MONOTONIC, 0, 0,
                                               on_stats_timer, m) < 0)
                        return;
                sd_event_source_set_description(m->stats_timer, "guest-stats");
        }
        int enabled = SD_EVENT_OFF;
        sd_event_source_get_enabled(m->stats_timer, &enabled);
        if (enabled == SD_EVENT_OFF) {
                /* poll at once: the first decision under pressure wants fresh numbers */
                sd_event_source_set_time_relative(m->stats_timer, 0);
                sd_event_source_set_enabled(m->stats_timer, SD_EVENT_ON);
        }
}
