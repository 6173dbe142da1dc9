/* virtio-balloon over QMP: find the device, read and set the balloon size, read guest stats.
 * Builds and reads JSON only; the socket belongs to qmp.c. */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "balloon.h"
#include "log.h"

/* QOM containers where -device puts devices with and without id=. */
static const char *const peripheral_containers[] = {
        "/machine/peripheral",
        "/machine/peripheral-anon",
};

/* The QOM types (as qom-list spells them, "child<TYPE>") that carry the balloon. For PCI the
 * proxy forwards guest-stats and guest-stats-polling-interval to its virtio-backend child, so
 * the proxy path works for both (checked on QEMU 7.2). */
static const char *const balloon_types[] = {
        "child<virtio-balloon-pci>",
        "child<virtio-balloon-pci-transitional>",
        "child<virtio-balloon-pci-non-transitional>",
        "child<virtio-balloon-device>",
        "child<virtio-balloon-ccw>",
};

typedef enum BalloonOpType {
        BALLOON_OP_LIST,
        BALLOON_OP_MEMORY_SIZE,
        BALLOON_OP_QUERY,
        BALLOON_OP_FREE_PAGE_REPORTING,
        BALLOON_OP_STATS_INTERVAL,
        BALLOON_OP_SET_TARGET,
        BALLOON_OP_POLL_STATS,
        BALLOON_OP_SET_STATS_INTERVAL,  /* after attach: only logged */
} BalloonOpType;

typedef void (*balloon_set_cb_t)(Balloon *b, int error, const char *desc, void *userdata);

/* One command in flight. It outlives its Balloon if the reply is late: balloon_free() only
 * unlinks it (op->balloon = NULL), and the reply callback then just frees it. */
typedef struct BalloonOp BalloonOp;
struct BalloonOp {
        BalloonOp *prev, *next;
        Balloon *balloon;
        BalloonOpType type;
        unsigned attach_generation;     /* attach sequence it belongs to */
        size_t container_index;         /* BALLOON_OP_LIST */
        uint64_t target_bytes;          /* BALLOON_OP_SET_TARGET */
        balloon_set_cb_t cb;
        void *userdata;
};

struct Balloon {
        QmpClient *qmp;
        BalloonCallbacks cb;
        void *userdata;

        unsigned attach_generation;     /* bumped by attach and detach: older replies are stale */
        unsigned stats_interval_sec;
        bool ready;
        char *device_path;
        uint64_t ram_bytes;
        uint64_t actual_bytes;
        int free_page_reporting;        /* 1, 0, -EOPNOTSUPP, -ENODATA: see balloon.h */
        int64_t stats_last_update;      /* QEMU's last-update (wall-clock seconds) last reported */
        bool stats_in_flight;           /* one qom-get guest-stats at a time is plenty */
        bool stats_failing;             /* warned about a failing poll; quiet until one works */
        bool actual_clamp_warned;       /* warned about an actual above RAM (once: a guest may keep lying) */

        BalloonOp *ops;

        /* another backend (balloon_new_backend()): every public function goes there instead */
        const BalloonBackendOps *backend;
        void *backend_impl;
};

static void op_unlink(BalloonOp *op) {
        Balloon *b = op->balloon;

        if (!b)
                return;
        if (op->prev)
                op->prev->next = op->next;
        else
                b->ops = op->next;
        if (op->next)
                op->next->prev = op->prev;
        op->prev = op->next = NULL;
        op->balloon = NULL;
}

static void on_reply(QmpClient *c, int error, json_object *reply, const char *desc, void *userdata);

/* Sends command, takes ownership of args. Returns 0 or negative errno. */
static int balloon_execute(Balloon *b, const char *command, json_object *args, BalloonOpType type,
                           BalloonOp **ret_op) {
        BalloonOp *op;
        int r;

        op = calloc(1, sizeof(*op));
        if (!op) {
                json_object_put(args);
                return -ENOMEM;
        }
        op->balloon = b;
        op->type = type;
        op->attach_generation = b->attach_generation;

        r = qmp_client_execute(b->qmp, command, args, on_reply, op);
        if (r < 0) {
                free(op);
                return r;
        }
        op->next = b->ops;
        if (b->ops)
                b->ops->prev = op;
        b->ops = op;
        if (ret_op)
                *ret_op = op;
        return 0;
}

static json_object *make_args(const char *path, const char *property) {
        json_object *args = json_object_new_object();

        if (!args)
                return NULL;
        if (json_object_object_add(args, "path", json_object_new_string(path)) < 0 ||
            (property && json_object_object_add(args, "property", json_object_new_string(property)) < 0)) {
                json_object_put(args);
                return NULL;
        }
        return args;
}

static json_object *make_interval_args(const char *path, unsigned interval_sec) {
        json_object *args = make_args(path, "guest-stats-polling-interval");

        if (args && json_object_object_add(args, "value", json_object_new_int64(interval_sec)) < 0) {
                json_object_put(args);
                return NULL;
        }
        return args;
}

/* Ends the attach sequence and tells the owner; returns error for tail calls. */
static int fail(Balloon *b, int error, const char *fmt, ...) _printf_(3, 4);
static int fail(Balloon *b, int error, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        _cleanup_free_ char *desc = vasprintf_or_null(fmt, ap);
        va_end(ap);

        /* A failed attach step ends the sequence (a later attach starts over); a failed stats
         * poll on a ready balloon leaves it usable. */
        if (!b->ready)
                b->attach_generation++;
        if (b->cb.on_error)
                b->cb.on_error(b, error, desc ?: "balloon error", b->userdata);
        return error;
}

static int list_container(Balloon *b, size_t index) {
        BalloonOp *op;
        int r;

        json_object *args = make_args(peripheral_containers[index], NULL);
        if (!args)
                return -ENOMEM;
        r = balloon_execute(b, "qom-list", args, BALLOON_OP_LIST, &op);
        if (r < 0)
                return r;
        op->container_index = index;
        return 0;
}

/* Looks for a balloon among one container's children; returns its QOM path, NULL if none. */
static char *find_balloon_child(json_object *list, const char *container) {
        if (!json_object_is_type(list, json_type_array))
                return NULL;

        size_t n = json_object_array_length(list);
        for (size_t i = 0; i < n; i++) {
                json_object *child = json_object_array_get_idx(list, i), *name, *type;

                if (!json_object_object_get_ex(child, "name", &name) ||
                    !json_object_object_get_ex(child, "type", &type) ||
                    !json_object_is_type(name, json_type_string) ||
                    !json_object_is_type(type, json_type_string))
                        continue;
                for (size_t j = 0; j < ELEMENTSOF(balloon_types); j++)
                        if (streq(json_object_get_string(type), balloon_types[j])) {
                                char *path;
                                if (asprintf(&path, "%s/%s", container, json_object_get_string(name)) < 0)
                                        return NULL;
                                return path;
                        }
        }
        return NULL;
}

static bool get_uint64_member(json_object *o, const char *key, uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return false;
        if (json_object_get_int64(v) < 0)
                return false;
        *ret = json_object_get_uint64(v);
        return true;
}

/* QEMU computes actual from a number the guest writes (its balloon's page count), unbounded:
 * the guest's word, never more than its RAM. Once the RAM is known (ram_bytes > 0). */
static uint64_t clamp_actual(Balloon *b, uint64_t actual) {
        if (b->ram_bytes == 0 || actual <= b->ram_bytes)
                return actual;
        if (!b->actual_clamp_warned) {
                b->actual_clamp_warned = true;
                log_warning("The guest on %s reports a balloon size of %" PRIu64 " bytes, above its RAM of %" PRIu64
                            " bytes; taken as its RAM (said once).",
                            b->backend ? b->backend->describe(b->backend_impl) : qmp_client_path(b->qmp),
                            actual, b->ram_bytes);
        }
        return b->ram_bytes;
}

static int attach_step(Balloon *b, BalloonOp *op, int error, json_object *reply, const char *desc) {
        const char *qmp_path = qmp_client_path(b->qmp);
        int r;

        switch (op->type) {
        case BALLOON_OP_LIST: {
                const char *container = peripheral_containers[op->container_index];

                /* A container that does not exist (no device of that kind was ever added) is
                 * an empty one, not an error. */
                if (error < 0 && !(error == -EIO && streq(qmp_error_class(reply), "DeviceNotFound")))
                        return fail(b, error, "Failed to list %s on %s: %s", container, qmp_path, desc);

                char *path = error < 0 ? NULL : find_balloon_child(reply, container);
                if (!path) {
                        if (op->container_index + 1 < ELEMENTSOF(peripheral_containers)) {
                                r = list_container(b, op->container_index + 1);
                                if (r < 0)
                                        return fail(b, r, "Failed to send qom-list to %s: %s", qmp_path, strerror(-r));
                                return 0;
                        }
                        return fail(b, -ENODEV, "VM has no virtio-balloon device");
                }
                free(b->device_path);
                b->device_path = path;

                r = balloon_execute(b, "query-memory-size-summary", NULL, BALLOON_OP_MEMORY_SIZE, NULL);
                if (r < 0)
                        return fail(b, r, "Failed to send query-memory-size-summary to %s: %s", qmp_path, strerror(-r));
                return 0;
        }

        case BALLOON_OP_MEMORY_SIZE:
                if (error < 0)
                        return fail(b, error, "Failed to read the RAM size of %s: %s", qmp_path, desc);
                if (!get_uint64_member(reply, "base-memory", &b->ram_bytes) || b->ram_bytes == 0)
                        return fail(b, -EBADMSG, "query-memory-size-summary on %s returned no base-memory", qmp_path);
                if (b->ram_bytes > BALLOON_RAM_MAX_BYTES) {
                        uint64_t ram = b->ram_bytes;
                        b->ram_bytes = 0;
                        return fail(b, -EBADMSG, "query-memory-size-summary on %s returned an implausible base-memory of %"
                                    PRIu64 " bytes (more than %" PRIu64 ")", qmp_path, ram, (uint64_t) BALLOON_RAM_MAX_BYTES);
                }

                r = balloon_execute(b, "query-balloon", NULL, BALLOON_OP_QUERY, NULL);
                if (r < 0)
                        return fail(b, r, "Failed to send query-balloon to %s: %s", qmp_path, strerror(-r));
                return 0;

        case BALLOON_OP_QUERY: {
                /* QEMU activates the balloon when the device is realized, not when the guest
                 * driver binds (7.2 answers query-balloon with no guest running at all). A
                 * device in QOM but not active is mid hot-(un)plug, or a second balloon QEMU
                 * refused: -EAGAIN, the owner attaches again later. A guest without a driver
                 * shows differently: balloon succeeds and actual never moves. */
                if (error == -EIO && streq(qmp_error_class(reply), "DeviceNotActive"))
                        return fail(b, -EAGAIN, "virtio-balloon device %s is not active yet: %s",
                                    b->device_path, desc);
                if (error < 0)
                        return fail(b, error, "Failed to query the balloon of %s: %s", qmp_path, desc);
                if (!get_uint64_member(reply, "actual", &b->actual_bytes))
                        return fail(b, -EBADMSG, "query-balloon on %s returned no actual size", qmp_path);
                b->actual_bytes = clamp_actual(b, b->actual_bytes);

                /* QEMU's virtio proxies (PCI, CCW) alias every property of their
                 * virtio-backend child, so the proxy path answers for free-page-reporting as
                 * it does for guest-stats (QEMU 7.2: the same value on both paths). */
                json_object *args = make_args(b->device_path, "free-page-reporting");
                if (!args)
                        return fail(b, -ENOMEM, "Out of memory");
                r = balloon_execute(b, "qom-get", args, BALLOON_OP_FREE_PAGE_REPORTING, NULL);
                if (r < 0)
                        return fail(b, r, "Failed to send qom-get to %s: %s", qmp_path, strerror(-r));
                return 0;
        }

        case BALLOON_OP_FREE_PAGE_REPORTING: {
                /* Only informs the owner: whatever the answer, the balloon works the same. A
                 * QMP error is a QEMU without the property (before 5.1: "Property
                 * 'virtio-balloon-pci.free-page-reporting' not found"). */
                int fpr = error == -EIO ? -EOPNOTSUPP : error < 0 ? error : balloon_parse_free_page_reporting(reply);

                if (fpr < 0 && fpr != -EOPNOTSUPP)
                        log_warning_errno(fpr, "Failed to read free-page-reporting of %s on %s, continuing without: %s",
                                          b->device_path, qmp_path, error < 0 ? desc : "not a boolean");
                else
                        log_debug("free-page-reporting of %s on %s: %s", b->device_path, qmp_path,
                                  fpr > 0 ? "on" : fpr == 0 ? "off" : desc);
                b->free_page_reporting = fpr >= 0 || fpr == -EOPNOTSUPP ? fpr : -ENODATA;
                if (b->cb.on_free_page_reporting)
                        b->cb.on_free_page_reporting(b, fpr, b->userdata);

                if (b->stats_interval_sec > 0) {
                        json_object *args = make_interval_args(b->device_path, b->stats_interval_sec);
                        if (!args)
                                return fail(b, -ENOMEM, "Out of memory");
                        r = balloon_execute(b, "qom-set", args, BALLOON_OP_STATS_INTERVAL, NULL);
                        if (r < 0)
                                return fail(b, r, "Failed to send qom-set to %s: %s", qmp_path, strerror(-r));
                        return 0;
                }
                break;
        }

        case BALLOON_OP_STATS_INTERVAL:
                /* Stats make the policy smarter but are not needed to move the balloon: a
                 * device without a stats queue still balloons. */
                if (error < 0)
                        log_warning("Failed to enable guest statistics on %s (%s), continuing without: %s",
                                    b->device_path, qmp_path, desc);
                break;

        default:
                assert(false);
        }

        b->ready = true;
        if (b->cb.on_ready)
                b->cb.on_ready(b, b->actual_bytes, b->ram_bytes, b->userdata);
        return 0;
}

static int handle_stats(Balloon *b, int error, json_object *reply, const char *desc) {
        GuestStats stats;
        json_object *v = NULL;
        int r;

        /* Stats only sharpen the policy; a failed poll leaves the balloon usable, so it is
         * logged here (once per failing streak) rather than reported as on_error. */
        b->stats_in_flight = false;
        if (error >= 0) {
                r = balloon_parse_guest_stats(reply, &stats);
                if (r < 0) {
                        error = r;
                        desc = "malformed guest-stats value";
                }
        }
        if (error < 0) {
                log_full_errno(b->stats_failing ? LOG_DEBUG : LOG_WARNING, error,
                               "Failed to read guest statistics of %s on %s: %s", b->device_path,
                               qmp_client_path(b->qmp), desc);
                b->stats_failing = true;
                return error;
        }
        b->stats_failing = false;

        int64_t last_update = 0;
        if (json_object_object_get_ex(reply, "last-update", &v))
                last_update = json_object_get_int64(v);
        /* A new sample is one whose stamp changed: QEMU's wall clock may have gone back since
         * the last one, and a stamp in the future must not hide every later sample. */
        if (!stats.valid || last_update == b->stats_last_update)
                return 0;   /* nothing new since the last poll */
        b->stats_last_update = last_update;
        guest_stats_clamp(&stats, b->ram_bytes);

        /* last-update is QEMU's wall clock at reception; turn it into our monotonic clock so
         * the policy can judge age without reading two clocks. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        usec_t age = (usec_t) MAX((int64_t) ts.tv_sec - last_update, (int64_t) 0) * USEC_PER_SEC;
        usec_t now = now_usec();
        stats.updated_usec = now > age ? now - age : 0;
        if (b->cb.on_stats)
                b->cb.on_stats(b, &stats, b->userdata);
        return 0;
}

static void on_reply(QmpClient *c, int error, json_object *reply, const char *desc, void *userdata) {
        BalloonOp *op = userdata;
        Balloon *b = op->balloon;

        op_unlink(op);

        if (op->type == BALLOON_OP_SET_TARGET) {
                /* The caller asked; the caller hears back, unless it freed us meanwhile. */
                if (b && error == 0 && op->cb)
                        op->cb(b, 0, NULL, op->userdata);
                else if (b && op->cb) {
                        _cleanup_free_ char *d = NULL;
                        if (asprintf(&d, "Failed to set the balloon of %s to %" PRIu64 " bytes: %s",
                                     qmp_client_path(c), op->target_bytes, desc) < 0)
                                d = NULL;
                        op->cb(b, error, d ?: desc, op->userdata);
                }
                free(op);
                return;
        }

        if (!b || op->attach_generation != b->attach_generation) {
                free(op);
                return;
        }
        /* Connection loss is reported by the QMP layer (on_state); the owner detaches then. */
        if (error == -ECONNRESET || error == -ECANCELED) {
                free(op);
                return;
        }

        if (op->type == BALLOON_OP_POLL_STATS)
                (void) handle_stats(b, error, reply, desc);
        else if (op->type == BALLOON_OP_SET_STATS_INTERVAL) {
                if (error < 0)
                        log_warning("Failed to set the guest statistics interval of %s on %s: %s",
                                    b->device_path, qmp_client_path(c), desc);
        } else
                (void) attach_step(b, op, error, reply, desc);
        free(op);
}

int balloon_new(Balloon **ret, QmpClient *qmp, const BalloonCallbacks *cb, void *userdata) {
        Balloon *b;

        assert(ret);
        assert(qmp);

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->qmp = qmp;
        b->free_page_reporting = -ENODATA;
        if (cb)
                b->cb = *cb;
        b->userdata = userdata;
        *ret = b;
        return 0;
}

static void orphan_ops(Balloon *b, bool keep_set_target) {
        BalloonOp *op = b->ops;

        while (op) {
                BalloonOp *next = op->next;
                if (!keep_set_target || op->type != BALLOON_OP_SET_TARGET)
                        op_unlink(op);
                op = next;
        }
}

Balloon *balloon_free(Balloon *b) {
        if (!b)
                return NULL;
        if (b->backend)
                b->backend->free(b->backend_impl);
        orphan_ops(b, false);
        free(b->device_path);
        return mfree(b);
}

int balloon_attach(Balloon *b, unsigned stats_interval_sec) {
        int r;

        assert(b);

        if (b->backend)
                return 0;
        balloon_detach(b);
        b->stats_interval_sec = stats_interval_sec;
        r = list_container(b, 0);
        if (r < 0)
                return log_debug_errno(r, "Failed to send qom-list to %s: %m", qmp_client_path(b->qmp));
        return 0;
}

void balloon_detach(Balloon *b) {
        assert(b);

        if (b->backend)
                return;

        /* Attach and stats replies still in flight are for a device we no longer trust; a
         * set-target caller still wants its answer. */
        b->attach_generation++;
        orphan_ops(b, true);
        b->ready = false;
        b->stats_in_flight = false;
        b->stats_last_update = 0;
        b->free_page_reporting = -ENODATA;
        b->device_path = mfree(b->device_path);
}

void balloon_handle_event(Balloon *b, const char *event, json_object *data) {
        uint64_t actual;

        assert(b);

        if (b->backend)
                return;
        if (streq_ptr(event, "DEVICE_DELETED")) {
                /* Hot-unplugged (device_del): every later command would fail with
                 * DeviceNotActive; say so once instead. */
                json_object *v;
                if (b->device_path && json_object_object_get_ex(data, "path", &v) &&
                    streq_ptr(json_object_get_string(v), b->device_path)) {
                        _cleanup_free_ char *path = strdup(b->device_path);
                        balloon_detach(b);
                        (void) fail(b, -ENODEV, "virtio-balloon device %s was unplugged", strempty(path));
                }
                return;
        }
        if (!streq_ptr(event, "BALLOON_CHANGE"))
                return;
        if (!get_uint64_member(data, "actual", &actual)) {
                log_debug("BALLOON_CHANGE without actual from %s, ignored", qmp_client_path(b->qmp));
                return;
        }
        actual = clamp_actual(b, actual);
        b->actual_bytes = actual;
        /* Before ready, the query-balloon answer reports actual as part of on_ready. */
        if (b->ready && b->cb.on_actual)
                b->cb.on_actual(b, actual, b->userdata);
}

void balloon_prefetch(const Balloon *b) {
        if (b && !b->backend)
                __builtin_prefetch(b->qmp);
}

bool balloon_is_ready(const Balloon *b) {
        if (b && b->backend)
                return b->backend->is_ready(b->backend_impl);
        return b && b->ready && qmp_client_state(b->qmp) == QMP_READY;
}

int balloon_set_target(Balloon *b, uint64_t target_bytes, balloon_set_cb_t cb, void *userdata) {
        BalloonOp *op;
        int r;

        assert(b);

        if (b->backend)
                return b->backend->set_target(b->backend_impl, target_bytes, cb, userdata);
        if (!balloon_is_ready(b))
                return -ENOTCONN;
        /* QEMU refuses 0 and silently clamps anything above the RAM size; say so here. */
        if (target_bytes == 0 || target_bytes > b->ram_bytes || target_bytes > INT64_MAX)
                return -ERANGE;

        json_object *args = json_object_new_object();
        if (!args)
                return -ENOMEM;
        if (json_object_object_add(args, "value", json_object_new_int64((int64_t) target_bytes)) < 0) {
                json_object_put(args);
                return -ENOMEM;
        }
        r = balloon_execute(b, "balloon", args, BALLOON_OP_SET_TARGET, &op);
        if (r < 0)
                return r;
        op->target_bytes = target_bytes;
        op->cb = cb;
        op->userdata = userdata;
        return 0;
}

int balloon_poll_stats(Balloon *b) {
        int r;

        assert(b);

        if (b->backend)
                return b->backend->poll_stats(b->backend_impl);
        if (!balloon_is_ready(b))
                return -ENOTCONN;
        if (b->stats_in_flight)
                return 0;

        json_object *args = make_args(b->device_path, "guest-stats");
        if (!args)
                return -ENOMEM;
        r = balloon_execute(b, "qom-get", args, BALLOON_OP_POLL_STATS, NULL);
        if (r < 0)
                return r;
        b->stats_in_flight = true;
        return 0;
}

int balloon_set_stats_interval(Balloon *b, unsigned interval_sec) {
        int r;

        assert(b);

        if (b->backend)
                return b->backend->set_stats_interval(b->backend_impl, interval_sec);
        if (!balloon_is_ready(b))
                return -ENOTCONN;
        if (interval_sec == b->stats_interval_sec)
                return 0;

        json_object *args = make_interval_args(b->device_path, interval_sec);
        if (!args)
                return -ENOMEM;
        r = balloon_execute(b, "qom-set", args, BALLOON_OP_SET_STATS_INTERVAL, NULL);
        if (r < 0)
                return r;
        b->stats_interval_sec = interval_sec;
        return 0;
}

const char *balloon_device_path(const Balloon *b) {
        if (b && b->backend)
                return b->backend->describe(b->backend_impl);
        return b ? b->device_path : NULL;
}

uint64_t balloon_actual(const Balloon *b) {
        if (b && b->backend)
                return balloon_is_ready(b) ? b->actual_bytes : UINT64_MAX;
        return b && b->ready ? b->actual_bytes : UINT64_MAX;
}

uint64_t balloon_ram(const Balloon *b) {
        if (b && b->backend)
                return b->backend->ram(b->backend_impl);
        return b && b->ready ? b->ram_bytes : UINT64_MAX;
}

int balloon_free_page_reporting(const Balloon *b) {
        return b ? b->free_page_reporting : -ENODATA;
}

int balloon_new_backend(Balloon **ret, const BalloonBackendOps *ops, void *impl,
                        const BalloonCallbacks *cb, void *userdata) {
        Balloon *b;

        assert(ret);
        assert(ops);

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->backend = ops;
        b->backend_impl = impl;
        b->free_page_reporting = -ENODATA;
        if (cb)
                b->cb = *cb;
        b->userdata = userdata;
        *ret = b;
        return 0;
}

const char *balloon_backend_name(const Balloon *b) {
        return b && b->backend ? b->backend->name : "qmp";
}

/* The guest's numbers are clamped here for every backend, as the QMP replies above. */
void balloon_backend_ready(Balloon *b, uint64_t actual_bytes, uint64_t ram_bytes) {
        assert(ram_bytes > 0 && ram_bytes <= BALLOON_RAM_MAX_BYTES);
        b->ram_bytes = ram_bytes;
        b->actual_bytes = clamp_actual(b, actual_bytes);
        if (b->cb.on_ready)
                b->cb.on_ready(b, b->actual_bytes, ram_bytes, b->userdata);
}

void balloon_backend_actual(Balloon *b, uint64_t actual_bytes) {
        b->actual_bytes = clamp_actual(b, actual_bytes);
        if (b->cb.on_actual)
                b->cb.on_actual(b, b->actual_bytes, b->userdata);
}

void balloon_backend_stats(Balloon *b, const GuestStats *stats) {
        GuestStats s = *stats;

        guest_stats_clamp(&s, b->ram_bytes);
        if (b->cb.on_stats)
                b->cb.on_stats(b, &s, b->userdata);
}

void balloon_backend_free_page_reporting(Balloon *b, bool enabled) {
        b->free_page_reporting = enabled;
        if (b->cb.on_free_page_reporting)
                b->cb.on_free_page_reporting(b, enabled, b->userdata);
}

void balloon_backend_error(Balloon *b, int error, const char *desc) {
        if (b->cb.on_error)
                b->cb.on_error(b, error, desc, b->userdata);
}

int balloon_parse_free_page_reporting(json_object *ret) {
        /* json-c would read "true" or 1 as true too; QEMU sends a bool, anything else is not
         * the property we asked for. */
        if (!json_object_is_type(ret, json_type_boolean))
                return -EBADMSG;
        return json_object_get_boolean(ret) ? 1 : 0;
}

/* QEMU reports a stat the guest did not send as (uint64_t) -1; older builds and hand-written
 * peers use -1. Both, and a missing key, mean "not reported". */
static int parse_stat(json_object *stats, const char *key, uint64_t *ret) {
        json_object *v;

        *ret = UINT64_MAX;
        if (!json_object_object_get_ex(stats, key, &v))
                return 0;
        if (!json_object_is_type(v, json_type_int))
                return -EBADMSG;
        if (json_object_get_int64(v) < 0)
                return 0;
        *ret = json_object_get_uint64(v);
        return 1;
}

int balloon_parse_guest_stats(json_object *ret, GuestStats *stats) {
        static const struct {
                const char *key;
                size_t offset;
        } fields[] = {
                { "stat-total-memory",     offsetof(GuestStats, total_bytes) },
                { "stat-free-memory",      offsetof(GuestStats, free_bytes) },
                { "stat-available-memory", offsetof(GuestStats, available_bytes) },
                { "stat-disk-caches",      offsetof(GuestStats, caches_bytes) },
                { "stat-major-faults",     offsetof(GuestStats, major_faults) },
                { "stat-minor-faults",     offsetof(GuestStats, minor_faults) },
                { "stat-swap-in",          offsetof(GuestStats, swap_in_bytes) },
                { "stat-swap-out",         offsetof(GuestStats, swap_out_bytes) },
                /* Linux 6.12 / QEMU 9.2 */
                { "stat-oom-kills",        offsetof(GuestStats, oom_kills) },
                { "stat-alloc-stalls",     offsetof(GuestStats, alloc_stalls) },
                { "stat-direct-scans",     offsetof(GuestStats, direct_scan) },
                { "stat-direct-reclaims",  offsetof(GuestStats, direct_reclaim) },
                { "stat-async-scans",      offsetof(GuestStats, async_scan) },
                { "stat-async-reclaims",   offsetof(GuestStats, async_reclaim) },
        };
        json_object *s, *v = NULL;
        unsigned n_reported = 0;
        int r;

        assert(stats);

        *stats = (GuestStats) {};

        if (!json_object_is_type(ret, json_type_object) ||
            !json_object_object_get_ex(ret, "stats", &s) || !json_object_is_type(s, json_type_object))
                return -EBADMSG;
        if (json_object_object_get_ex(ret, "last-update", &v) && !json_object_is_type(v, json_type_int))
                return -EBADMSG;

        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                r = parse_stat(s, fields[i].key, (uint64_t *) ((uint8_t *) stats + fields[i].offset));
                if (r < 0)
                        return r;
                n_reported += r;
        }

        /* QEMU fills the table with "not reported" until the guest driver's first report
         * (last-update 0): that is no data, not a guest with zero memory. */
        stats->valid = n_reported > 0 && v && json_object_get_int64(v) > 0;
        return 0;
}
