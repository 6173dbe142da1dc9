/* QMP transport: a non-blocking unix-socket client on sd-event. Greeting, qmp_capabilities,
 * id-matched replies, event dispatch, framing limits, reconnect with backoff.
 * It knows nothing about balloons (see balloon.h). */
#pragma once

#include <json-c/json.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "util.h"

/* The largest QMP message we accept; QEMU's replies for our commands are a few KiB. */
#define QMP_MESSAGE_MAX_BYTES (1024 * 1024)

static inline void json_object_putp(json_object **o) {
        if (*o)
                json_object_put(*o);
}

/* --- framing: pure, for unit tests and fuzzing --------------------------------------- */

typedef struct QmpParser QmpParser;

QmpParser *qmp_parser_new(size_t max_message_bytes);
QmpParser *qmp_parser_free(QmpParser *p);
/* Feed bytes; each complete top-level JSON object is handed to cb (which does not own it,
 * json_object_get() to keep it). Returns 0, or -EBADMSG for malformed JSON or a top-level
 * value that is not an object, -EMSGSIZE for a message over the limit. After an error the
 * parser must be reset (the connection is dropped). */
int qmp_parser_feed(QmpParser *p, const char *data, size_t len,
                    void (*cb)(json_object *msg, void *userdata), void *userdata);
void qmp_parser_reset(QmpParser *p);
/* Why the last qmp_parser_feed() failed ("unexpected character", "message too large"...). */
const char *qmp_parser_error(const QmpParser *p);

/* What a parsed message is. Replies carry "return" or "error"; an "id" is checked by the client. */
typedef enum QmpMessageType {
        QMP_MESSAGE_GREETING,   /* {"QMP": {"version": ..., "capabilities": [...]}} */
        QMP_MESSAGE_RETURN,     /* {"return": ..., "id": ...} */
        QMP_MESSAGE_ERROR,      /* {"error": {"class": ..., "desc": ...}, "id": ...} */
        QMP_MESSAGE_EVENT,      /* {"event": "NAME", "data": {...}, "timestamp": {...}} */
        _QMP_MESSAGE_INVALID = -EBADMSG,
} QmpMessageType;

QmpMessageType qmp_message_classify(json_object *msg);
/* Fields of a QMP error object, with fallbacks for a malformed one; never NULL. */
const char *qmp_error_class(json_object *error);
const char *qmp_error_desc(json_object *error);

/* --- client --------------------------------------------------------------------------- */

typedef struct QmpClient QmpClient;

typedef enum QmpState {
        QMP_DISCONNECTED,
        QMP_CONNECTING,     /* socket connecting, or waiting for greeting / capabilities reply */
        QMP_READY,          /* command mode */
        QMP_WAITING_RETRY,  /* disconnected, reconnect timer armed */
        QMP_CLOSED,         /* qmp_client_close(): no more reconnects */
} QmpState;

const char *qmp_state_to_string(QmpState s);

/* error: 0 and reply = the "return" value on success. On failure error is
 * -EIO for a QMP {"error": ...} (desc is "command: Class: desc"; reply is the error object,
 * so qmp_error_class(reply) tells DeviceNotActive from GenericError), -ECONNRESET when the
 * connection went away before the reply, -ETIMEDOUT when no reply came within the command
 * timeout (the connection is kept; a late reply is dropped), -ECANCELED when the client was
 * closed or freed; reply is NULL for all but -EIO. reply and desc are valid during the call
 * only. */
typedef void (*qmp_reply_cb_t)(QmpClient *c, int error, json_object *reply, const char *desc,
                               void *userdata);
typedef void (*qmp_event_cb_t)(QmpClient *c, const char *event, json_object *data, void *userdata);
/* Called on every state change; error says why we left READY/CONNECTING (negative errno,
 * with a human message in desc, e.g. "malformed JSON from /run/x.qmp: ..."). Pending
 * commands have already failed with -ECONNRESET when WAITING_RETRY is reported. Not called
 * from qmp_client_free(). It is safe to free the client from any callback. */
typedef void (*qmp_state_cb_t)(QmpClient *c, QmpState state, int error, const char *desc,
                               void *userdata);

/* Called once per connection, as soon as it is up and before anything is sent on it, with
 * the peer's SO_PEERCRED (pid as this process's PID namespace sees it, 0 if it cannot). Return
 * 0 to use the connection; a negative errno to drop it, with *ret_reason (malloc'd) saying
 * why: it becomes the desc of the WAITING_RETRY state, and the client tries again at its
 * usual back-off (the socket may belong to the right peer later). Must not free the client. */
typedef int (*qmp_verify_peer_cb_t)(QmpClient *c, const struct ucred *peer, char **ret_reason, void *userdata);

typedef struct QmpCallbacks {
        qmp_event_cb_t on_event;
        qmp_state_cb_t on_state;
        qmp_verify_peer_cb_t verify_peer;   /* NULL: any peer is used */
} QmpCallbacks;

int qmp_client_new(QmpClient **ret, sd_event *e, const char *socket_path,
                   const QmpCallbacks *cb, void *userdata);
QmpClient *qmp_client_free(QmpClient *c);   /* pending replies get -ECANCELED */
static inline void qmp_client_freep(QmpClient **c) { if (*c) qmp_client_free(*c); }

/* Connect now (and on failure retry with backoff: 100 ms doubling to backoff_max). */
int qmp_client_start(QmpClient *c);
void qmp_client_set_backoff_max(QmpClient *c, usec_t max);
void qmp_client_set_command_timeout(QmpClient *c, usec_t timeout);   /* default 10 s */
/* Stop reconnecting; pending commands are cancelled; state becomes CLOSED. */
void qmp_client_close(QmpClient *c);
QmpState qmp_client_state(const QmpClient *c);
const char *qmp_client_path(const QmpClient *c);

/* Send {"execute": command, "arguments": arguments, "id": N}. Takes ownership of arguments
 * (may be NULL). Only in QMP_READY; otherwise -ENOTCONN and cb is not called.
 * cb may be NULL (fire and forget). */
int qmp_client_execute(QmpClient *c, const char *command, json_object *arguments,
                       qmp_reply_cb_t cb, void *userdata);
/* The same, returning the command's id for qmp_client_cancel(). */
int qmp_client_execute_full(QmpClient *c, const char *command, json_object *arguments,
                            qmp_reply_cb_t cb, void *userdata, uint64_t *ret_id);
/* Forget the callback of a command in flight (its owner is going away); the reply is still
 * consumed when it arrives. Returns false if no such command is pending. */
bool qmp_client_cancel(QmpClient *c, uint64_t id);
