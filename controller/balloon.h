/* Balloon commands on top of QMP: find the balloon device, query/set the target, follow
 * BALLOON_CHANGE, poll guest-stats. Never touches a socket itself. */
#pragma once

#include "policy.h"
#include "qmp.h"

typedef struct Balloon Balloon;

typedef struct BalloonCallbacks {
        /* The device was found and query-balloon answered: the balloon is usable.
         * ram_bytes is the guest's configured RAM (query-memory-size-summary base-memory). */
        void (*on_ready)(Balloon *b, uint64_t actual_bytes, uint64_t ram_bytes, void *userdata);
        /* BALLOON_CHANGE event or a query-balloon answer. */
        void (*on_actual)(Balloon *b, uint64_t actual_bytes, void *userdata);
        /* Fresh guest statistics (qom-get guest-stats with a newer last-update). */
        void (*on_stats)(Balloon *b, const GuestStats *stats, void *userdata);
        /* The VM has no balloon device, or a balloon command failed; desc says what. */
        void (*on_error)(Balloon *b, int error, const char *desc, void *userdata);
} BalloonCallbacks;

int balloon_new(Balloon **ret, QmpClient *qmp, const BalloonCallbacks *cb, void *userdata);
Balloon *balloon_free(Balloon *b);
static inline void balloon_freep(Balloon **b) { if (*b) balloon_free(*b); }

/* Call when the QMP client reaches QMP_READY: finds the device (qom-list under
 * /machine/peripheral and /machine/peripheral-anon), reads RAM size and actual, enables
 * guest-stats polling at stats_interval_sec (0 = leave off). Calls on_ready or on_error. */
int balloon_attach(Balloon *b, unsigned stats_interval_sec);
/* Call when QMP leaves READY: forget the device path and in-flight state. */
void balloon_detach(Balloon *b);
/* Feed every QMP event (BALLOON_CHANGE is handled, others ignored). */
void balloon_handle_event(Balloon *b, const char *event, json_object *data);

bool balloon_is_ready(const Balloon *b);
/* `balloon` to target_bytes. cb (may be NULL) gets the QMP result. */
int balloon_set_target(Balloon *b, uint64_t target_bytes,
                       void (*cb)(Balloon *b, int error, const char *desc, void *userdata),
                       void *userdata);
/* qom-get guest-stats now; result through on_stats. */
int balloon_poll_stats(Balloon *b);
/* Device QOM path found by attach, e.g. "/machine/peripheral/balloon0"; NULL before. */
const char *balloon_device_path(const Balloon *b);

/* Pure, for unit tests: parse a qom-get guest-stats return value. */
int balloon_parse_guest_stats(json_object *ret, GuestStats *stats);
