/* Balloon commands on top of QMP: find the balloon device, query/set the target, follow
 * BALLOON_CHANGE, poll guest-stats. Never touches a socket itself. */
#pragma once

#include "policy.h"
#include "qmp.h"

typedef struct Balloon Balloon;

/* The largest base-memory believed from QEMU: 16 PiB, above any machine. More is a broken or
 * compromised QEMU, refused at attach; below it, sums over thousands of VMs cannot overflow. */
#define BALLOON_RAM_MAX_BYTES (UINT64_MAX / 1024)

typedef struct BalloonCallbacks {
        /* The device was found and query-balloon answered: the balloon is usable.
         * ram_bytes is the guest's configured RAM (query-memory-size-summary base-memory). */
        void (*on_ready)(Balloon *b, uint64_t actual_bytes, uint64_t ram_bytes, void *userdata);
        /* BALLOON_CHANGE event or a query-balloon answer. actual_bytes (here and in on_ready) is
         * clamped to the RAM, and the byte-valued stats of on_stats too: they are the guest's. */
        void (*on_actual)(Balloon *b, uint64_t actual_bytes, void *userdata);
        /* Fresh guest statistics (qom-get guest-stats with a newer last-update). */
        void (*on_stats)(Balloon *b, const GuestStats *stats, void *userdata);
        /* Attaching failed: the VM has no balloon device (-ENODEV), or an attach command
         * failed or timed out; desc says what, with the socket path. The balloon is not
         * ready afterwards. A failed stats poll is only logged (the balloon stays usable);
         * connection loss is not reported here either: the QMP client's on_state says it. */
        void (*on_error)(Balloon *b, int error, const char *desc, void *userdata);
        /* What attach learnt of the device's free-page-reporting property, once per attach and
         * before on_ready: 1 on, 0 off, -EOPNOTSUPP when QEMU has no such property (before 5.1),
         * another negative errno when reading it failed. Only informs: the balloon works the
         * same either way, and attach goes on after it (so it must not free or detach the
         * balloon). May be NULL. */
        void (*on_free_page_reporting)(Balloon *b, int enabled, void *userdata);
} BalloonCallbacks;

int balloon_new(Balloon **ret, QmpClient *qmp, const BalloonCallbacks *cb, void *userdata);
Balloon *balloon_free(Balloon *b);
static inline void balloon_freep(Balloon **b) { if (*b) balloon_free(*b); }

/* Call when the QMP client reaches QMP_READY: finds the device (qom-list under
 * /machine/peripheral and /machine/peripheral-anon), reads RAM size and actual, reads
 * free-page-reporting, enables guest-stats polling at stats_interval_sec (0 = leave off).
 * Calls on_free_page_reporting, then on_ready; or on_error. */
int balloon_attach(Balloon *b, unsigned stats_interval_sec);
/* Call when QMP leaves READY: forget the device path and in-flight state. */
void balloon_detach(Balloon *b);
/* Feed every QMP event: BALLOON_CHANGE updates actual; DEVICE_DELETED of our device detaches
 * and reports on_error(-ENODEV); others are ignored. */
void balloon_handle_event(Balloon *b, const char *event, json_object *data);

/* The lines balloon_is_ready() reads next (the QMP client's), asked for ahead of time. */
void balloon_prefetch(const Balloon *b);
bool balloon_is_ready(const Balloon *b);
/* `balloon` to target_bytes. cb (may be NULL) gets the QMP result, also -ECONNRESET when the
 * connection drops first; it is not called after balloon_free(). Returns -ENOTCONN when not
 * ready, -ERANGE for 0 or more than the VM's RAM (QEMU would clamp silently). */
int balloon_set_target(Balloon *b, uint64_t target_bytes,
                       void (*cb)(Balloon *b, int error, const char *desc, void *userdata),
                       void *userdata);
/* qom-get guest-stats now; result through on_stats, and only when QEMU's last-update moved
 * (polling faster than the guest's interval reports nothing). One poll in flight at a time. */
int balloon_poll_stats(Balloon *b);
/* Change QEMU's guest-stats polling interval after attach; 0 turns it off, so that neither
 * QEMU's timer nor the guest's driver wakes up for stats while nobody needs them (QEMU asks
 * the guest at once when it is turned back on). No-op if unchanged; -ENOTCONN if not ready.
 * A failure is logged. */
int balloon_set_stats_interval(Balloon *b, unsigned interval_sec);
/* Device QOM path found by attach, e.g. "/machine/peripheral/balloon0"; NULL before. */
const char *balloon_device_path(const Balloon *b);

/* Last known actual size and configured RAM; UINT64_MAX until ready. */
uint64_t balloon_actual(const Balloon *b);
uint64_t balloon_ram(const Balloon *b);
/* The device's free-page-reporting as the last attach found it: 1 on, 0 off, -EOPNOTSUPP
 * when QEMU has no such property, -ENODATA when not known (not attached, or reading failed). */
int balloon_free_page_reporting(const Balloon *b);

/* --- other backends --------------------------------------------------------------------- */

/* The same Balloon, reached some other way than the QMP layer above (libvirt's API). The
 * machine and the manager only see the public functions of this header; a backend implements
 * these and reports through the owner's BalloonCallbacks with balloon_backend_*() below.
 * balloon_attach(), balloon_detach() and balloon_handle_event() are QMP's and do nothing for
 * a backend, which attaches by itself and reports on_ready / on_error when it can. */
typedef struct BalloonBackendOps {
        const char *name;                       /* the Machine's Backend property: "libvirt" */
        bool (*is_ready)(void *impl);
        /* Same contract as balloon_set_target(), cb never called before it returns. */
        int (*set_target)(void *impl, uint64_t target_bytes,
                          void (*cb)(Balloon *b, int error, const char *desc, void *userdata),
                          void *userdata);
        int (*poll_stats)(void *impl);
        int (*set_stats_interval)(void *impl, unsigned interval_sec);
        uint64_t (*ram)(void *impl);            /* UINT64_MAX until ready */
        const char *(*describe)(void *impl);    /* for logs, like balloon_device_path() */
        void (*free)(void *impl);
} BalloonBackendOps;

/* Takes ownership of impl (ops->free on balloon_free()). */
int balloon_new_backend(Balloon **ret, const BalloonBackendOps *ops, void *impl,
                        const BalloonCallbacks *cb, void *userdata);
/* "qmp", or the backend's name. */
const char *balloon_backend_name(const Balloon *b);
/* For backends: tell the owner, as the QMP layer does. actual and the byte-valued stats are
 * clamped to the RAM here; ram_bytes must be within 1..BALLOON_RAM_MAX_BYTES. */
void balloon_backend_ready(Balloon *b, uint64_t actual_bytes, uint64_t ram_bytes);
void balloon_backend_actual(Balloon *b, uint64_t actual_bytes);
void balloon_backend_stats(Balloon *b, const GuestStats *stats);
void balloon_backend_error(Balloon *b, int error, const char *desc);
/* As on_free_page_reporting: before balloon_backend_ready(), once per attach. */
void balloon_backend_free_page_reporting(Balloon *b, bool enabled);

/* Pure, for unit tests: parse a qom-get guest-stats return value. Each stat that is missing,
 * -1 or 2^64-1 (QEMU's "not reported") becomes UINT64_MAX. valid is true when QEMU has
 * received a report (last-update > 0) with at least one stat. updated_usec is left 0 (the
 * caller maps last-update to its clock). -EBADMSG for a malformed value. */
int balloon_parse_guest_stats(json_object *ret, GuestStats *stats);
/* Pure, for unit tests: the return value of qom-get free-page-reporting. 1 or 0; -EBADMSG
 * for anything but a JSON boolean. */
int balloon_parse_free_page_reporting(json_object *ret);
