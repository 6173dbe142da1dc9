/* What a machine keeps in /run for the next instance of the daemon: the part of the policy's
 * memory of a VM that a crash-restart must not lose. */
#pragma once

#include <sys/types.h>
#include <systemd/sd-id128.h>

#include "policy.h"

typedef struct Machine Machine;

/* How long an operator's size below the guest's reserve is left alone at least (ResizeMachine). */
#define MANUAL_HOLD_USEC (60 * USEC_PER_SEC)

/* The rule: keep what only the past can tell, rebuild what the next look at the VM tells.
 *
 * Kept, because a restarted daemon cannot see it again and losing it acts against the guest or
 * the host at once: the self-deflate hold-off (the guest gave itself memory back; the new instance
 * sees no deflate, only a size), the recovery back-off and the times it counts from (the last
 * event concerning the VM, the last recovery step: lost, recovery comes early and the squeeze-
 * and-give-back cycle starts over), the last grow and its target (a deflate of ours still landing
 * would look like the guest deflating itself), when the guest last showed pressure of its own, the
 * working-set peak and when it was seen (lost, a guest between two bursts is squeezed below its
 * peak), and the operator's manual hold.
 *
 * Rebuilt: everything the next guest-stats sample, footprint read or event gives again, and that
 * errs on the safe side meanwhile: the events-in-a-row count (the first event after a restart is a
 * first event: a smaller step), the sample-to-sample trend bookkeeping (the first sample is a new
 * baseline: at most one sample's trend is missed), the footprint, QEMU's overhead estimate and the
 * room promised by recovery (with swap a promise ends within a few recovery intervals anyway;
 * without, the budget counts every guest's room to grow), the one-take-per-sample marks, and the
 * last move (it only tells a move in flight, and the new instance resumes from the size the VM
 * reports).
 *
 * All fields are CLOCK_MONOTONIC times (0 = never) or bytes, as in PolicyVMState. */
typedef struct KeptState {
        usec_t hold_off_until_usec;
        usec_t manual_until_usec;
        usec_t recovery_delay_usec;       /* 0 = RecoveryDelaySec= */
        usec_t last_event_usec;
        usec_t last_recovery_usec;
        usec_t last_grow_usec;
        uint64_t last_grow_target_bytes;
        usec_t guest_pressure_usec;
        uint64_t used_peak_bytes;
        usec_t used_peak_usec;
} KeptState;

/* Whose state a file is: a VM recreated under the same name while the daemon was down must not
 * inherit its predecessor's hold-off or peak. Null ids are not compared. */
typedef struct KeptOwner {
        pid_t leader;
        sd_id128_t machine_id;            /* machined's Id */
        sd_id128_t boot_id;
} KeptOwner;

KeptState kept_state_get(const PolicyVMState *st);
/* Into the policy's state, the later time or deadline and the longer back-off winning: events the
 * new instance saw before the first attach are not undone. */
void kept_state_merge(PolicyVMState *st, const KeptState *k);
bool kept_state_equal(const KeptState *a, const KeptState *b);
bool kept_state_is_empty(const KeptState *k);
/* Whether now differs from what was saved by enough to write: any deadline, the back-off, a grow;
 * a past time only once it moved on by an eighth of its window (RecoveryDelaySec=,
 * WorkingSetWindowSec=), the working-set peak once it rose by 1/64 of RAM. */
bool kept_state_worth_writing(const KeptState *saved, const KeptState *now, const PolicyKnobs *knobs, uint64_t ram_bytes);

/* The file's text: times as CLOCK_REALTIME stamps (the monotonic clock stops in a suspend the
 * restart may include; both are passed in, so that this is pure). */
int kept_state_format(const KeptState *k, const KeptOwner *owner, usec_t now_mono, usec_t now_real, char **ret);

/* Longest file read; anything longer is not one of ours. */
#define KEPT_STATE_SIZE_MAX 4096

/* The file's text back, every value checked and clamped: deadlines to at most the knob's length
 * from now (HoldOffSec=, the manual hold's longest), the back-off into
 * [RecoveryDelaySec=, RecoveryDelayMaxSec=], sizes to the VM's RAM, a time in the future to now.
 * A bad line or value is dropped alone; an unreadable owner, another owner or boot: -ESTALE, and
 * ret is empty. Returns the number of values dropped or clamped. ret_why: the first reason, or
 * NULL (static text). */
int kept_state_parse(const char *text, const KeptOwner *owner, const PolicyKnobs *knobs, uint64_t ram_bytes,
                     usec_t now_mono, usec_t now_real, KeptState *ret, const char **ret_why);

/* --- the daemon's side: one file per machine, <RuntimeMachinesDirectory>/<name>.state --------- */

/* On the first attach after a start, before the first policy run. */
void machine_state_restore(Machine *machine);
/* Now (ResizeMachine(): an operator's word is kept before the method returns). */
void machine_state_save(Machine *machine);
/* The VM went away: its file with it. */
void machine_state_forget(Machine *machine);
/* Whether its kept state changed enough to be worth a write (a few compares), and the write
 * itself: 1 written, 0 nothing new, < 0 failed (logged). The owner decides when: after a policy
 * run, a second later, a slice at a time, from a low-priority source (manager-policy.c). */
bool machine_state_changed(Machine *machine);
int machine_state_flush(Machine *machine);
