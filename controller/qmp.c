/* QMP transport: one non-blocking unix-socket client per VM on sd-event. Knows framing, ids,
 * events and reconnects; knows nothing about what the commands mean. */
#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "log.h"
#include "qmp.h"

/* First reconnect delay; doubled on every failed attempt up to backoff_max_usec. Short enough
 * that a VM restarted by libvirt is picked up at once, long enough not to spin on a dead path. */
#define QMP_BACKOFF_INITIAL_USEC (100 * USEC_PER_MSEC)
#define QMP_BACKOFF_MAX_DEFAULT_USEC (30 * USEC_PER_SEC)
/* QEMU answers our commands in microseconds unless its main loop is stuck (a hung storage
 * backend, a migration); 10 s says "stuck" without tripping over a loaded host. */
#define QMP_COMMAND_TIMEOUT_DEFAULT_USEC (10 * USEC_PER_SEC)
#define QMP_READ_CHUNK_BYTES (64 * 1024)
/* Reads per wakeup before yielding to the other VMs' sockets: a peer that floods us must
 * not starve the loop. */
#define QMP_READS_PER_DISPATCH 16

/* --- framing --------------------------------------------------------------------------- */

struct QmpParser {
        json_tokener *tokener;
        size_t max_message_bytes;
        size_t message_bytes;   /* bytes of the current, incomplete message so far */
        bool in_message;        /* between the first non-blank byte and the closing brace */
        const char *error;      /* why the last feed failed, for the log */
};

QmpParser *qmp_parser_new(size_t max_message_bytes) {
        QmpParser *p;

        p = calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        p->tokener = json_tokener_new();
        if (!p->tokener)
                return mfree(p);
        /* QEMU emits strict JSON; what strict mode refuses (trailing commas, bad UTF-8...)
         * means the peer is not QEMU or the stream is corrupt. Trailing characters are the
         * next message, not an error. */
        json_tokener_set_flags(p->tokener, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
                                                   JSON_TOKENER_VALIDATE_UTF8);
        p->max_message_bytes = max_message_bytes > 0 ? max_message_bytes : QMP_MESSAGE_MAX_BYTES;
        return p;
}

QmpParser *qmp_parser_free(QmpParser *p) {
        if (!p)
                return NULL;
        json_tokener_free(p->tokener);
        return mfree(p);
}

void qmp_parser_reset(QmpParser *p) {
        json_tokener_reset(p->tokener);
        p->message_bytes = 0;
        p->in_message = false;
        p->error = NULL;
}

const char *qmp_parser_error(const QmpParser *p) {
        return p->error ?: "no error";
}

static int parser_fail(QmpParser *p, int error, const char *why) {
        p->error = why;
        return error;
}

static bool is_json_blank(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int qmp_parser_feed(QmpParser *p, const char *data, size_t len,
                    void (*cb)(json_object *msg, void *userdata), void *userdata) {
        while (len > 0) {
                if (!p->in_message) {
                        /* QEMU ends every message with CRLF; blanks between messages are not part
                         * of any message's size. */
                        if (is_json_blank(*data)) {
                                data++, len--;
                                continue;
                        }
                        /* Every QMP message is an object. Refuse anything else at its first byte:
                         * a bare number would otherwise sit in the tokener waiting for a
                         * delimiter. */
                        if (*data != '{')
                                return parser_fail(p, -EBADMSG, "top-level value is not an object");
                        p->in_message = true;
                }

                /* Never hand the tokener more than one byte past the limit, so an endless
                 * message costs at most max_message_bytes of memory. */
                size_t room = p->max_message_bytes - p->message_bytes + 1;
                size_t n = MIN(MIN(len, room), (size_t) INT32_MAX);

                _cleanup_(json_object_putp) json_object *obj = json_tokener_parse_ex(p->tokener, data, (int) n);
                enum json_tokener_error jerr = json_tokener_get_error(p->tokener);
                size_t used = json_tokener_get_parse_end(p->tokener);

                if (jerr == json_tokener_continue) {
                        p->message_bytes += n;
                        if (p->message_bytes > p->max_message_bytes)
                                return parser_fail(p, -EMSGSIZE, "message too large");
                        data += n, len -= n;
                        continue;
                }
                if (jerr != json_tokener_success)
                        return parser_fail(p, -EBADMSG, json_tokener_error_desc(jerr));
                /* We started it with '{', but json-c must agree that what it built is one. */
                if (!obj || !json_object_is_type(obj, json_type_object))
                        return parser_fail(p, -EBADMSG, "top-level value is not an object");
                assert(used > 0 && used <= n);
                if (p->message_bytes + used > p->max_message_bytes)
                        return parser_fail(p, -EMSGSIZE, "message too large");

                data += used, len -= used;
                qmp_parser_reset(p);
                cb(obj, userdata);
        }
        return 0;
}

QmpMessageType qmp_message_classify(json_object *msg) {
        json_object *v;

        if (!json_object_is_type(msg, json_type_object))
                return _QMP_MESSAGE_INVALID;
        if (json_object_object_get_ex(msg, "QMP", &v))
                return json_object_is_type(v, json_type_object) ? QMP_MESSAGE_GREETING : _QMP_MESSAGE_INVALID;
        if (json_object_object_get_ex(msg, "event", &v))
                return json_object_is_type(v, json_type_string) ? QMP_MESSAGE_EVENT : _QMP_MESSAGE_INVALID;
        if (json_object_object_get_ex(msg, "return", NULL))
                return QMP_MESSAGE_RETURN;
        if (json_object_object_get_ex(msg, "error", &v))
                return json_object_is_type(v, json_type_object) ? QMP_MESSAGE_ERROR : _QMP_MESSAGE_INVALID;
        return _QMP_MESSAGE_INVALID;
}

const char *qmp_error_class(json_object *error) {
        json_object *v;

        if (json_object_object_get_ex(error, "class", &v) && json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        return "GenericError";
}

const char *qmp_error_desc(json_object *error) {
        json_object *v;

        if (json_object_object_get_ex(error, "desc", &v) && json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        return "(no description)";
}

/* --- client ---------------------------------------------------------------------------- */

typedef struct QmpPending QmpPending;
struct QmpPending {
        QmpPending *next;
        uint64_t id;
        char *command;          /* for error messages: "balloon: DeviceNotActive: ..." */
        usec_t deadline_usec;
        qmp_reply_cb_t cb;
        void *userdata;
};

struct QmpClient {
        unsigned n_ref;
        sd_event *event;
        char *path;
        QmpCallbacks cb;
        void *userdata;

        QmpState state;
        bool greeted;                   /* greeting seen, qmp_capabilities in flight */
        bool peer_checked;              /* verify_peer passed on this connection */
        int fd;
        uint64_t connection;            /* bumped per connect: stale work checks it */
        bool backlogged;                /* input left unread: watch level-triggered until drained */
        sd_event_source *io_source;
        sd_event_source *retry_source;  /* reconnect backoff */
        sd_event_source *timeout_source;/* oldest pending command, or the greeting */
        usec_t connect_deadline_usec;   /* greeting + capabilities must arrive by then */

        QmpParser *parser;
        json_object **inbox;            /* messages parsed from one read, dispatched after */
        size_t n_inbox, allocated_inbox;
        bool inbox_oom;

        char *out;                      /* serialized commands not yet written */
        size_t out_offset, out_size, out_allocated;

        /* Commands in flight, oldest first: all share one timeout, so the head expires first. */
        QmpPending *pending_head, *pending_tail;
        uint64_t next_id;

        usec_t backoff_usec;
        usec_t backoff_max_usec;
        usec_t command_timeout_usec;
};

static const char *const qmp_state_table[] = {
        [QMP_DISCONNECTED] = "disconnected",
        [QMP_CONNECTING] = "connecting",
        [QMP_READY] = "ready",
        [QMP_WAITING_RETRY] = "waiting-retry",
        [QMP_CLOSED] = "closed",
};

const char *qmp_state_to_string(QmpState s) {
        if ((unsigned) s >= ELEMENTSOF(qmp_state_table))
                return NULL;
        return qmp_state_table[s];
}

static void pending_free(QmpPending *p) {
        if (!p)
                return;
        free(p->command);
        free(p);
}

static QmpClient *qmp_client_ref(QmpClient *c) {
        c->n_ref++;
        return c;
}

static void qmp_client_release(QmpClient *c) {
        assert(!c->pending_head);
        sd_event_source_disable_unref(c->io_source);
        sd_event_source_disable_unref(c->retry_source);
        sd_event_source_disable_unref(c->timeout_source);
        closep(&c->fd);
        qmp_parser_free(c->parser);
        for (size_t i = 0; i < c->n_inbox; i++)
                json_object_put(c->inbox[i]);
        free(c->inbox);
        free(c->out);
        free(c->path);
        sd_event_unref(c->event);
        free(c);
}

static QmpClient *qmp_client_unref(QmpClient *c) {
        if (!c)
                return NULL;
        assert(c->n_ref > 0);
        if (--c->n_ref == 0)
                qmp_client_release(c);
        return NULL;
}

static void qmp_client_unrefp(QmpClient **c) {
        qmp_client_unref(*c);
}

static void set_state(QmpClient *c, QmpState state, int error, const char *desc) {
        if (c->state == state && error == 0)
                return;
        c->state = state;
        log_debug("QMP %s: %s%s%s", c->path, qmp_state_to_string(state), desc ? ": " : "", strempty(desc));
        if (c->cb.on_state)
                c->cb.on_state(c, state, error, desc, c->userdata);
}

/* Fails every command in flight. The list is detached first: a callback may free the client
 * or issue new commands, neither of which may see half-failed entries. */
static void fail_pending(QmpClient *c, int error, const char *reason) {
        QmpPending *p = TAKE_PTR(c->pending_head);

        c->pending_tail = NULL;
        while (p) {
                QmpPending *next = p->next;
                if (p->cb) {
                        _cleanup_free_ char *desc = NULL;
                        if (asprintf(&desc, "%s: %s", p->command, reason) < 0)
                                desc = NULL;
                        p->cb(c, error, NULL, desc ?: reason, p->userdata);
                }
                pending_free(p);
                p = next;
        }
}

static int arm_timeout(QmpClient *c);
static int try_connect(QmpClient *c);

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        _unused_ _cleanup_(qmp_client_unrefp) QmpClient *c = qmp_client_ref(userdata);

        (void) try_connect(c);
        return 0;
}

/* Drops the connection and schedules the next attempt. error/desc say why, for on_state. */
static void disconnect(QmpClient *c, int error, const char *desc) {
        int r;

        c->io_source = sd_event_source_disable_unref(c->io_source);
        closep(&c->fd);
        c->fd = -1;
        qmp_parser_reset(c->parser);
        for (size_t i = 0; i < c->n_inbox; i++)
                json_object_put(c->inbox[i]);
        c->n_inbox = 0;
        c->out_offset = c->out_size = 0;
        c->greeted = false;

        if (c->state == QMP_CLOSED)
                return;

        usec_t delay = c->backoff_usec;
        c->backoff_usec = MIN(c->backoff_usec * 2, c->backoff_max_usec);

        if (!c->retry_source) {
                /* Explicit accuracy: sd-event's default of 250 ms would swamp a 100 ms backoff. */
                r = sd_event_add_time_relative(c->event, &c->retry_source, CLOCK_MONOTONIC, delay,
                                               delay / 10, on_retry, c);
                if (r < 0)
                        log_error_errno(r, "QMP %s: failed to arm reconnect timer: %m", c->path);
        } else {
                r = sd_event_source_set_time_relative(c->retry_source, delay);
                if (r >= 0)
                        r = sd_event_source_set_time_accuracy(c->retry_source, delay / 10);
                if (r >= 0)
                        r = sd_event_source_set_enabled(c->retry_source, SD_EVENT_ONESHOT);
                if (r < 0)
                        log_error_errno(r, "QMP %s: failed to arm reconnect timer: %m", c->path);
        }

        /* Leave READY before failing commands, so that a callback retrying at once gets
         * -ENOTCONN instead of queueing into a dead socket. */
        _unused_ _cleanup_(qmp_client_unrefp) QmpClient *ref = qmp_client_ref(c);
        c->state = QMP_WAITING_RETRY;
        fail_pending(c, -ECONNRESET, desc);
        if (c->state != QMP_WAITING_RETRY)
                return;        /* a callback closed or restarted us */
        (void) arm_timeout(c);
        log_debug("QMP %s: %s: %s", c->path, qmp_state_to_string(c->state), desc);
        if (c->cb.on_state)
                c->cb.on_state(c, QMP_WAITING_RETRY, error, desc, c->userdata);
}

static void disconnectf(QmpClient *c, int error, const char *fmt, ...) _printf_(3, 4);
static void disconnectf(QmpClient *c, int error, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        _cleanup_free_ char *desc = vasprintf_or_null(fmt, ap);
        va_end(ap);
        disconnect(c, error, desc ?: "connection dropped");
}

/* Edge-triggered: sd-event polls epoll on every iteration, so with hundreds of VMs answering
 * at once, level-triggered sockets that wait their turn would be reported again and again
 * (quadratic; measured: 1000 VMs attach in 1.4 s level-triggered). Every wakeup therefore
 * drains the socket; when it cannot (QMP_READS_PER_DISPATCH), the source goes level-triggered
 * until the next wakeup catches up. */
static int update_io_events(QmpClient *c) {
        if (!c->io_source)
                return 0;
        return sd_event_source_set_io_events(c->io_source,
                                             EPOLLIN | (c->backlogged ? 0 : EPOLLET) |
                                             (c->out_offset < c->out_size ? EPOLLOUT : 0));
}

/* Writes what the socket takes. Errors are left for the next EPOLLOUT/EPOLLERR wakeup to
 * report, so that callers of qmp_client_execute() never see their callbacks re-entered. */
static int flush_output(QmpClient *c) {
        while (c->out_offset < c->out_size) {
                ssize_t k = send(c->fd, c->out + c->out_offset, c->out_size - c->out_offset,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                c->out_offset += (size_t) k;
        }
        if (c->out_offset == c->out_size)
                c->out_offset = c->out_size = 0;
        return 0;
}

static int queue_output(QmpClient *c, const char *s, size_t len) {
        if (c->out_offset > 0 && c->out_offset == c->out_size)
                c->out_offset = c->out_size = 0;
        if (c->out_allocated - c->out_size < len) {
                /* Compact before growing: what was written is gone. */
                if (c->out_offset > 0) {
                        memmove(c->out, c->out + c->out_offset, c->out_size - c->out_offset);
                        c->out_size -= c->out_offset;
                        c->out_offset = 0;
                }
                if (c->out_allocated - c->out_size < len) {
                        size_t want = MAX(c->out_size + len, c->out_allocated * 2);
                        char *n = realloc(c->out, MAX(want, (size_t) 4096));
                        if (!n)
                                return -ENOMEM;
                        c->out = n;
                        c->out_allocated = MAX(want, (size_t) 4096);
                }
        }
        memcpy(c->out + c->out_size, s, len);
        c->out_size += len;
        return 0;
}

static int send_command(QmpClient *c, const char *command, json_object *arguments,
                        qmp_reply_cb_t cb, void *userdata, uint64_t *ret_id) {
        _cleanup_(json_object_putp) json_object *msg = NULL;
        _cleanup_(json_object_putp) json_object *args = arguments;
        QmpPending *p;
        int r;

        msg = json_object_new_object();
        if (!msg)
                return -ENOMEM;
        if (json_object_object_add(msg, "execute", json_object_new_string(command)) < 0)
                return -ENOMEM;
        if (args && json_object_object_add(msg, "arguments", TAKE_PTR(args)) < 0)
                return -ENOMEM;
        uint64_t id = c->next_id++;
        if (json_object_object_add(msg, "id", json_object_new_uint64(id)) < 0)
                return -ENOMEM;

        size_t len;
        const char *s = json_object_to_json_string_length(msg, JSON_C_TO_STRING_PLAIN, &len);
        if (!s)
                return -ENOMEM;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->id = id;
        p->cb = cb;
        p->userdata = userdata;
        p->deadline_usec = now_usec() + c->command_timeout_usec;
        p->command = strdup(command);
        if (!p->command) {
                pending_free(p);
                return -ENOMEM;
        }

        size_t before = c->out_size;
        r = queue_output(c, s, len);
        if (r >= 0)
                r = queue_output(c, "\n", 1);
        if (r < 0) {
                c->out_size = MAX(before, c->out_offset);
                pending_free(p);
                return r;
        }

        if (c->pending_tail)
                c->pending_tail->next = p;
        else
                c->pending_head = p;
        c->pending_tail = p;

        (void) flush_output(c);
        (void) update_io_events(c);
        (void) arm_timeout(c);
        if (ret_id)
                *ret_id = id;
        return 0;
}

static void on_capabilities(QmpClient *c, int error, json_object *reply, const char *desc, void *userdata) {
        if (error == -ECONNRESET || error == -ECANCELED)
                return;
        if (error < 0) {
                disconnectf(c, error, "QMP capabilities negotiation with %s failed: %s", c->path, desc);
                return;
        }
        c->backoff_usec = QMP_BACKOFF_INITIAL_USEC;
        set_state(c, QMP_READY, 0, NULL);
        if (c->state == QMP_READY)
                (void) arm_timeout(c);   /* the greeting deadline no longer applies */
}

static void handle_reply(QmpClient *c, json_object *msg, QmpMessageType type) {
        json_object *idv, *v;
        int64_t id;

        if (!json_object_object_get_ex(msg, "id", &idv) || !json_object_is_type(idv, json_type_int) ||
            (id = json_object_get_int64(idv)) < 0) {
                disconnectf(c, -EBADMSG, "unexpected reply without our id from %s", c->path);
                return;
        }

        QmpPending *p = c->pending_head, *prev = NULL;
        for (; p && p->id != (uint64_t) id; prev = p, p = p->next)
                ;
        if (!p) {
                /* A reply to a command that already timed out: harmless, and proof that QEMU is
                 * alive again. Anything we never sent is a protocol error. */
                if ((uint64_t) id < c->next_id) {
                        log_debug("QMP %s: late reply to command %" PRIi64 " dropped", c->path, id);
                        return;
                }
                disconnectf(c, -EBADMSG, "reply with unknown id %" PRIi64 " from %s", id, c->path);
                return;
        }

        if (prev)
                prev->next = p->next;
        else
                c->pending_head = p->next;
        if (c->pending_tail == p)
                c->pending_tail = prev;
        (void) arm_timeout(c);

        if (p->cb) {
                if (type == QMP_MESSAGE_RETURN) {
                        json_object_object_get_ex(msg, "return", &v);
                        p->cb(c, 0, v, NULL, p->userdata);
                } else {
                        _cleanup_free_ char *desc = NULL;
                        json_object_object_get_ex(msg, "error", &v);
                        if (asprintf(&desc, "%s: %s: %s", p->command, qmp_error_class(v), qmp_error_desc(v)) < 0)
                                desc = NULL;
                        p->cb(c, -EIO, v, desc ?: "QMP error", p->userdata);
                }
        }
        pending_free(p);
}

static void handle_message(QmpClient *c, json_object *msg) {
        QmpMessageType type = qmp_message_classify(msg);
        json_object *v;
        int r;

        if (type < 0) {
                disconnectf(c, -EBADMSG, "unexpected message from %s: %.200s", c->path,
                            json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
                return;
        }

        if (!c->greeted) {
                if (type != QMP_MESSAGE_GREETING) {
                        disconnectf(c, -EPROTO, "expected QMP greeting from %s, got: %.200s", c->path,
                                    json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
                        return;
                }
                c->greeted = true;
                r = send_command(c, "qmp_capabilities", NULL, on_capabilities, NULL, NULL);
                if (r < 0)
                        disconnectf(c, r, "failed to send qmp_capabilities to %s: %s", c->path, strerror(-r));
                return;
        }

        switch (type) {
        case QMP_MESSAGE_GREETING:
                disconnectf(c, -EPROTO, "second QMP greeting from %s", c->path);
                return;
        case QMP_MESSAGE_EVENT:
                /* QEMU holds events back until capabilities are negotiated; if one slips through
                 * earlier nobody is listening yet. */
                if (c->state != QMP_READY)
                        return;
                json_object_object_get_ex(msg, "event", &v);
                const char *name = json_object_get_string(v);
                json_object *data = NULL;
                json_object_object_get_ex(msg, "data", &data);
                if (c->cb.on_event)
                        c->cb.on_event(c, name, data, c->userdata);
                return;
        case QMP_MESSAGE_RETURN:
        case QMP_MESSAGE_ERROR:
                handle_reply(c, msg, type);
                return;
        default:
                assert(false);
        }
}

static void collect_message(json_object *msg, void *userdata) {
        QmpClient *c = userdata;

        if (c->n_inbox == c->allocated_inbox) {
                size_t n = MAX(c->allocated_inbox * 2, (size_t) 8);
                json_object **a = reallocarray(c->inbox, n, sizeof(*a));
                if (!a) {
                        c->inbox_oom = true;
                        return;
                }
                c->inbox = a;
                c->allocated_inbox = n;
        }
        c->inbox[c->n_inbox++] = json_object_get(msg);
}

/* Reads and dispatches one chunk. Returns > 0 if there may be more to read, 0 when the
 * socket is drained, < 0 when the connection was dropped (or replaced by a callback). */
static int read_chunk(QmpClient *c) {
        char buf[QMP_READ_CHUNK_BYTES];
        ssize_t k;
        int r;

        k = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (k < 0) {
                if (errno == EINTR)
                        return 1;
                if (errno == EAGAIN)
                        return 0;
                disconnectf(c, -errno, "read from %s failed: %m", c->path);
                return -ECONNRESET;
        }
        if (k == 0) {
                disconnectf(c, -ECONNRESET, "QMP connection to %s closed by peer", c->path);
                return -ECONNRESET;
        }

        /* Parse the whole chunk first and dispatch afterwards: a callback may drop the
         * connection (and reset the parser) or free the client. */
        r = qmp_parser_feed(c->parser, buf, (size_t) k, collect_message, c);
        if (c->inbox_oom) {
                c->inbox_oom = false;
                r = -ENOMEM;
        }

        uint64_t connection = c->connection;
        for (size_t i = 0; i < c->n_inbox; i++) {
                json_object *msg = TAKE_PTR(c->inbox[i]);
                if (c->fd >= 0 && c->connection == connection)
                        handle_message(c, msg);
                json_object_put(msg);
        }
        c->n_inbox = 0;

        if (c->fd < 0 || c->connection != connection)
                return -ECONNRESET;
        if (r == -EBADMSG)
                disconnectf(c, r, "malformed JSON from %s: %s", c->path, qmp_parser_error(c->parser));
        else if (r == -EMSGSIZE)
                disconnectf(c, r, "message from %s exceeds %zu bytes", c->path, c->parser->max_message_bytes);
        else if (r < 0)
                disconnectf(c, r, "failed to parse QMP stream from %s: %s", c->path, strerror(-r));
        return r < 0 ? -ECONNRESET : 1;
}

static void handle_input(QmpClient *c) {
        uint64_t connection = c->connection;

        for (unsigned i = 0; i < QMP_READS_PER_DISPATCH; i++) {
                int r = read_chunk(c);
                if (r < 0 || c->fd < 0 || c->connection != connection)
                        return;
                if (r == 0) {
                        c->backlogged = false;
                        return;
                }
        }
        c->backlogged = true;
}

/* The peer is whoever called listen() on the socket the path led to, after symlinks and
 * bind mounts: the owner decides whether it is the QEMU it meant. Nothing has been sent yet. */
static int check_peer(QmpClient *c) {
        struct ucred peer = {};
        socklen_t len = sizeof peer;
        int r;

        if (c->peer_checked || !c->cb.verify_peer) {
                c->peer_checked = true;
                return 0;
        }
        if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0) {
                r = -errno;
                disconnectf(c, r, "cannot read the credentials of the QMP peer at %s: %s", c->path, strerror(-r));
                return r;
        }
        _cleanup_free_ char *why = NULL;
        r = c->cb.verify_peer(c, &peer, &why, c->userdata);
        if (r < 0) {
                disconnectf(c, r, "%s", why ?: "QMP peer refused");
                return r;
        }
        c->peer_checked = true;
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        _cleanup_(qmp_client_unrefp) QmpClient *c = qmp_client_ref(userdata);
        int r;

        if (c->state == QMP_CONNECTING && !c->greeted && (revents & EPOLLOUT) && c->out_size == 0) {
                /* Non-blocking connect finished (only for EINPROGRESS). */
                int error = 0;
                socklen_t len = sizeof(error);
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0) {
                        disconnectf(c, -error, "connect to %s failed: %s", c->path, strerror(error));
                        return 0;
                }
                if (check_peer(c) < 0)
                        return 0;
        }
        /* Not a word is read from (or sent to) a peer that was not checked. */
        if (!c->peer_checked && check_peer(c) < 0)
                return 0;

        uint64_t connection = c->connection;
        if (revents & EPOLLIN) {
                handle_input(c);
                if (c->fd < 0 || c->connection != connection)
                        return 0;
        }

        if (revents & EPOLLOUT) {
                r = flush_output(c);
                if (r < 0) {
                        disconnectf(c, r, "write to %s failed: %s", c->path, strerror(-r));
                        return 0;
                }
        }

        /* On HUP keep reading until EOF: QEMU's last reply (to quit) precedes the hangup. */
        if ((revents & (EPOLLHUP | EPOLLERR)) && !(revents & EPOLLIN)) {
                disconnectf(c, -ECONNRESET, "QMP connection to %s hung up", c->path);
                return 0;
        }

        (void) update_io_events(c);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        _cleanup_(qmp_client_unrefp) QmpClient *c = qmp_client_ref(userdata);
        usec_t now = now_usec();

        if (c->state == QMP_CONNECTING && c->fd >= 0 && now >= c->connect_deadline_usec) {
                /* A QEMU monitor serves one client at a time: a connection that is accepted but
                 * never greeted usually means another client holds this monitor. */
                disconnectf(c, -ETIMEDOUT, "no QMP greeting from %s within %" PRIu64 " ms (monitor busy with another client?)",
                            c->path, c->command_timeout_usec / USEC_PER_MSEC);
                return 0;
        }

        while (c->pending_head && c->pending_head->deadline_usec <= now && c->state != QMP_CLOSED) {
                QmpPending *p = c->pending_head;
                c->pending_head = p->next;
                if (!c->pending_head)
                        c->pending_tail = NULL;
                if (p->cb) {
                        _cleanup_free_ char *desc = NULL;
                        if (asprintf(&desc, "%s: no reply from %s within %" PRIu64 " ms", p->command, c->path,
                                     c->command_timeout_usec / USEC_PER_MSEC) < 0)
                                desc = NULL;
                        p->cb(c, -ETIMEDOUT, NULL, desc ?: "QMP command timed out", p->userdata);
                }
                pending_free(p);
        }
        (void) arm_timeout(c);
        return 0;
}

static int arm_timeout(QmpClient *c) {
        usec_t deadline = USEC_INFINITY;
        int r;

        if (c->state == QMP_CONNECTING && c->fd >= 0)
                deadline = c->connect_deadline_usec;
        if (c->pending_head)
                deadline = MIN(deadline, c->pending_head->deadline_usec);

        if (deadline == USEC_INFINITY) {
                if (c->timeout_source)
                        return sd_event_source_set_enabled(c->timeout_source, SD_EVENT_OFF);
                return 0;
        }
        if (!c->timeout_source) {
                r = sd_event_add_time(c->event, &c->timeout_source, CLOCK_MONOTONIC, deadline,
                                      c->command_timeout_usec / 100, on_timeout, c);
                if (r < 0)
                        return log_error_errno(r, "QMP %s: failed to arm command timeout: %m", c->path);
                return 0;
        }
        r = sd_event_source_set_time(c->timeout_source, deadline);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->timeout_source, SD_EVENT_ONESHOT);
        return r;
}

static int try_connect(QmpClient *c) {
        _cleanup_close_ int fd = -1;
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
        } addr = { .un.sun_family = AF_UNIX };
        bool in_progress = false;
        int r;

        assert(c->fd < 0);
        strncpy(addr.un.sun_path, c->path, sizeof(addr.un.sun_path) - 1);

        /* The owner may close us from on_state(); its callers hold a reference. */
        set_state(c, QMP_CONNECTING, 0, NULL);
        if (c->state != QMP_CONNECTING)
                return -ECANCELED;

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                disconnectf(c, -errno, "failed to create socket for %s: %m", c->path);
                return -errno;
        }
        if (connect(fd, &addr.sa, sizeof(addr.un)) < 0) {
                if (errno != EINPROGRESS) {
                        /* ENOENT (VM not up yet), ECONNREFUSED (QEMU gone, stale socket), EAGAIN
                         * (backlog full): all mean "try again later". */
                        r = -errno;
                        disconnectf(c, r, "connect to %s failed: %m", c->path);
                        return r;
                }
                in_progress = true;
        }

        c->backlogged = false;
        r = sd_event_add_io(c->event, &c->io_source, fd, EPOLLIN | EPOLLET | (in_progress ? EPOLLOUT : 0), on_io, c);
        if (r < 0) {
                disconnectf(c, r, "failed to watch %s: %s", c->path, strerror(-r));
                return r;
        }
        c->fd = TAKE_FD(fd);
        c->connection++;
        c->greeted = false;
        c->peer_checked = false;
        c->connect_deadline_usec = now_usec() + c->command_timeout_usec;
        (void) arm_timeout(c);
        /* A unix socket connects at once (EAGAIN, not EINPROGRESS, when the backlog is full):
         * check the peer now, before its greeting is even read. */
        if (!in_progress)
                return check_peer(c);
        return 0;
}

int qmp_client_new(QmpClient **ret, sd_event *e, const char *socket_path,
                   const QmpCallbacks *cb, void *userdata) {
        QmpClient *c;

        assert(ret);
        assert(e);
        assert(socket_path);

        if (strlen(socket_path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                return -ENAMETOOLONG;
        if (socket_path[0] != '/')
                return -EINVAL;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->n_ref = 1;
        c->fd = -1;
        c->event = sd_event_ref(e);
        c->state = QMP_DISCONNECTED;
        c->next_id = 1;
        c->backoff_usec = QMP_BACKOFF_INITIAL_USEC;
        c->backoff_max_usec = QMP_BACKOFF_MAX_DEFAULT_USEC;
        c->command_timeout_usec = QMP_COMMAND_TIMEOUT_DEFAULT_USEC;
        if (cb)
                c->cb = *cb;
        c->userdata = userdata;
        c->path = strdup(socket_path);
        c->parser = qmp_parser_new(QMP_MESSAGE_MAX_BYTES);
        if (!c->path || !c->parser) {
                qmp_client_unref(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

QmpClient *qmp_client_free(QmpClient *c) {
        if (!c)
                return NULL;
        /* The owner is letting go: no state callbacks into it any more, even while a dispatch
         * that holds a reference unwinds. Pending replies still learn of -ECANCELED, so that
         * their userdata can be released. */
        c->cb = (QmpCallbacks) {};
        qmp_client_close(c);
        return qmp_client_unref(c);
}

int qmp_client_start(QmpClient *c) {
        assert(c);

        if (c->state == QMP_CLOSED)
                return -ESHUTDOWN;
        if (c->state != QMP_DISCONNECTED && c->state != QMP_WAITING_RETRY)
                return 0;   /* already connecting or connected */
        if (c->retry_source)
                (void) sd_event_source_set_enabled(c->retry_source, SD_EVENT_OFF);
        c->backoff_usec = QMP_BACKOFF_INITIAL_USEC;
        _unused_ _cleanup_(qmp_client_unrefp) QmpClient *ref = qmp_client_ref(c);
        (void) try_connect(c);
        /* A failed first attempt is not an error of start(): the retry is armed. */
        return 0;
}

void qmp_client_set_backoff_max(QmpClient *c, usec_t max) {
        assert(c);
        c->backoff_max_usec = MAX(max, QMP_BACKOFF_INITIAL_USEC);
        c->backoff_usec = MIN(c->backoff_usec, c->backoff_max_usec);
}

void qmp_client_set_command_timeout(QmpClient *c, usec_t timeout) {
        assert(c);
        c->command_timeout_usec = timeout > 0 ? timeout : QMP_COMMAND_TIMEOUT_DEFAULT_USEC;
}

void qmp_client_close(QmpClient *c) {
        if (!c || c->state == QMP_CLOSED)
                return;

        _unused_ _cleanup_(qmp_client_unrefp) QmpClient *ref = qmp_client_ref(c);
        c->state = QMP_CLOSED;
        c->io_source = sd_event_source_disable_unref(c->io_source);
        c->retry_source = sd_event_source_disable_unref(c->retry_source);
        c->timeout_source = sd_event_source_disable_unref(c->timeout_source);
        closep(&c->fd);
        c->fd = -1;
        c->out_offset = c->out_size = 0;
        fail_pending(c, -ECANCELED, "QMP client closed");
        if (c->cb.on_state)
                c->cb.on_state(c, QMP_CLOSED, 0, NULL, c->userdata);
}

QmpState qmp_client_state(const QmpClient *c) {
        return c ? c->state : QMP_DISCONNECTED;
}

const char *qmp_client_path(const QmpClient *c) {
        return c ? c->path : NULL;
}

int qmp_client_execute(QmpClient *c, const char *command, json_object *arguments,
                       qmp_reply_cb_t cb, void *userdata) {
        return qmp_client_execute_full(c, command, arguments, cb, userdata, NULL);
}

int qmp_client_execute_full(QmpClient *c, const char *command, json_object *arguments,
                            qmp_reply_cb_t cb, void *userdata, uint64_t *ret_id) {
        assert(c);
        assert(command);

        if (c->state != QMP_READY) {
                json_object_put(arguments);
                return -ENOTCONN;
        }
        return send_command(c, command, arguments, cb, userdata, ret_id);
}

bool qmp_client_cancel(QmpClient *c, uint64_t id) {
        for (QmpPending *p = c ? c->pending_head : NULL; p; p = p->next)
                if (p->id == id) {
                        /* Keep the entry so the reply is still matched (and not taken for a
                         * protocol error); only forget whom to tell. */
                        p->cb = NULL;
                        p->userdata = NULL;
                        return true;
                }
        return false;
}
