/* fake-qmp: a FAKE QEMU for tests and benchmarks. It runs no guest; it speaks QMP like QEMU
 * 7.2 for the commands autoballoon uses and simulates one virtio-balloon device per VM, with
 * a QEMU-like command line so that discovery from /proc/PID/cmdline finds its sockets.
 * See --help and docs/qmp.md. */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "util.h"

#define FAKE_VERSION_PACKAGE "fake-qmp (not QEMU) " PROJECT_VERSION
#define MAX_CONTROL_LINE 4096

typedef struct Vm Vm;
typedef struct Monitor Monitor;
typedef struct Conn Conn;

/* One listening socket: a -qmp or a -chardev/-mon pair. QEMU serves one client per monitor
 * at a time and leaves the next in the backlog; so do we. */
struct Monitor {
        Vm *vm;
        char *path;
        char *chardev_id;       /* -chardev id=, to pair with -mon */
        bool control;           /* mode=control (QMP); otherwise HMP, which we only greet */
        int fd;
        sd_event_source *source;
        Conn *conn;
        Monitor *next;
};

struct Conn {
        Monitor *monitor;
        int fd;
        sd_event_source *source;
        json_tokener *tok;
        bool negotiated;
        unsigned n_commands;    /* on this connection, for --fake-garbage-after */
        char *out;
        size_t out_size, out_allocated;
};

/* Synthetic guest stats: a fixed value, "not reported", or derived from actual. */
typedef enum StatKind { STAT_DERIVED, STAT_FIXED, STAT_UNREPORTED } StatKind;

static const char *const stat_names[] = {
        "total", "free", "available", "caches", "major-faults", "minor-faults", "swap-in",
        "swap-out", "oom-kills", "alloc-stalls", "direct-scans", "direct-reclaims", "async-scans",
        "async-reclaims", "htlb-pgalloc", "htlb-pgfail",
};
/* QEMU's keys for the above, in the same order. The 6.12 counters (oom-kills onwards, except
 * htlb) are only sent when a value is set, as QEMU 7.2 does not know them. */
static const char *const stat_keys[] = {
        "stat-total-memory", "stat-free-memory", "stat-available-memory", "stat-disk-caches",
        "stat-major-faults", "stat-minor-faults", "stat-swap-in", "stat-swap-out", "stat-oom-kills",
        "stat-alloc-stalls", "stat-direct-scans", "stat-direct-reclaims", "stat-async-scans",
        "stat-async-reclaims", "stat-htlb-pgalloc", "stat-htlb-pgfail",
};
#define N_STATS ELEMENTSOF(stat_names)
#define FIRST_NEW_STAT 8        /* stat-oom-kills */
#define LAST_NEW_STAT 13        /* stat-async-reclaims */

struct Vm {
        char *name;
        uint64_t ram_bytes;
        uint64_t actual_bytes;
        uint64_t target_bytes;
        bool has_balloon;
        char *balloon_path;             /* /machine/peripheral/balloon0 */
        char *balloon_type;             /* virtio-balloon-pci */
        int free_page_reporting;        /* the property: 1 on, 0 off (QEMU's default), -1 none (QEMU < 5.1) */
        int64_t polling_interval_sec;
        int64_t polling_enabled_at;     /* wall-clock seconds of the first report */
        int64_t frozen_last_update;     /* last report before polling was turned off */
        StatKind stat_kind[N_STATS];
        uint64_t stat_value[N_STATS];
        uint64_t used_bytes;            /* for derived stats: what the guest's workload holds */
        bool lying;                     /* "lie-actual": report lie_actual_bytes as actual, whatever */
        uint64_t lie_actual_bytes;
        sd_event_source *move_timer;
        sd_event_source *change_throttle;   /* BALLOON_CHANGE rate limit period running */
        bool change_pending;                /* a change came during the period */
        Monitor *monitors;
        bool quitting;
        unsigned n_commands_total;
        Vm *next;
};

static struct {
        sd_event *event;
        Vm *vms;
        unsigned n_vms_alive;
        FILE *record;
        int control_fd;
        char *control_path;
        sd_event_source *control_source;
        unsigned garbage_after;         /* 0 = never */
        bool garbage_once;
        bool garbage_done;
        uint64_t speed_bytes_per_sec;   /* 0 = the guest never moves the balloon */
        usec_t step_usec;
        usec_t throttle_usec;           /* QEMU rate-limits BALLOON_CHANGE to one per second */
        bool hung;                      /* "hang": stop reading QMP, like a stuck main loop */
        unsigned hang_after;            /* --fake-hang-after: 0 = never */
        bool hang_done;
        char *pidfile;
} arg = {
        .control_fd = -1,
        .speed_bytes_per_sec = 800 * MIB,   /* 256 MiB in ~0.3 s, as measured on TCG */
        .step_usec = 100 * USEC_PER_MSEC,
        .throttle_usec = 1000 * USEC_PER_MSEC,
};

static void die(const char *fmt, ...) _printf_(1, 2) __attribute__((noreturn));
static void die(const char *fmt, ...) {
        va_list ap;

        fputs("fake-qmp: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(EXIT_FAILURE);
}

static double now_realtime(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* --- output ---------------------------------------------------------------------------- */

static void conn_free(Conn *c);

static void conn_flush(Conn *c) {
        size_t done = 0;

        while (done < c->out_size) {
                ssize_t k = send(c->fd, c->out + done, c->out_size - done, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        /* Peer gone: drop everything, the read side sees EOF. */
                        done = c->out_size;
                        break;
                }
                done += (size_t) k;
        }
        memmove(c->out, c->out + done, c->out_size - done);
        c->out_size -= done;
        if (c->source)
                (void) sd_event_source_set_io_events(c->source, EPOLLIN | EPOLLET | (c->out_size > 0 ? EPOLLOUT : 0));
}

static void conn_append(Conn *c, const char *s, size_t len) {
        if (c->out_allocated - c->out_size < len) {
                size_t n = MAX(c->out_size + len, c->out_allocated * 2);
                char *p = realloc(c->out, n);
                if (!p)
                        die("out of memory");
                c->out = p;
                c->out_allocated = n;
        }
        memcpy(c->out + c->out_size, s, len);
        c->out_size += len;
}

static void conn_write(Conn *c, const char *s, size_t len) {
        conn_append(c, s, len);
        conn_flush(c);
}

static void conn_send(Conn *c, json_object *msg) {
        size_t len;
        const char *s = json_object_to_json_string_length(msg, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

        /* one send(2) a message, as QEMU's monitor: at 1,000 VMs served by this one process, the
         * fake's own syscalls were the longest part of a benchmark's "last VM" figure */
        conn_append(c, s, len);
        conn_write(c, "\r\n", 2);   /* QEMU ends every message with CRLF */
}

static json_object *timestamp_now(void) {
        struct timespec ts;
        json_object *t = json_object_new_object();

        clock_gettime(CLOCK_REALTIME, &ts);
        json_object_object_add(t, "seconds", json_object_new_int64(ts.tv_sec));
        json_object_object_add(t, "microseconds", json_object_new_int64(ts.tv_nsec / 1000));
        return t;
}

/* Events go to every negotiated QMP connection of the VM, as in QEMU. Takes data. */
static void vm_emit(Vm *vm, const char *name, json_object *data) {
        json_object *ev = json_object_new_object();

        json_object_object_add(ev, "timestamp", timestamp_now());
        json_object_object_add(ev, "event", json_object_new_string(name));
        if (data)
                json_object_object_add(ev, "data", data);
        for (Monitor *m = vm->monitors; m; m = m->next)
                if (m->conn && m->conn->negotiated)
                        conn_send(m->conn, ev);
        json_object_put(ev);
}

static int send_return(Conn *c, json_object *ret, json_object *id) {
        json_object *msg = json_object_new_object();

        json_object_object_add(msg, "return", ret ?: json_object_new_object());
        if (id)
                json_object_object_add(msg, "id", json_object_get(id));
        conn_send(c, msg);
        json_object_put(msg);
        return 0;
}

static int send_error(Conn *c, json_object *id, const char *class, const char *fmt, ...) _printf_(4, 5);
static int send_error(Conn *c, json_object *id, const char *class, const char *fmt, ...) {
        json_object *msg = json_object_new_object(), *err = json_object_new_object();
        char desc[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(desc, sizeof desc, fmt, ap);
        va_end(ap);
        if (id)
                json_object_object_add(msg, "id", json_object_get(id));
        json_object_object_add(err, "class", json_object_new_string(class));
        json_object_object_add(err, "desc", json_object_new_string(desc));
        json_object_object_add(msg, "error", err);
        conn_send(c, msg);
        json_object_put(msg);
        return 0;
}

static int send_garbage(Conn *c) {
        static const char garbage[] = "{\"return\": {\"actual\": 5368709120,, fake-garbage\r\n";
        conn_write(c, garbage, sizeof garbage - 1);
        return 0;
}

static void record(Vm *vm, json_object *msg) {
        if (!arg.record)
                return;
        /* One JSON object per line: the command as received, plus when and for which VM. */
        json_object *line = json_object_new_object();
        json_object_object_add(line, "time", json_object_new_double(now_realtime()));
        json_object_object_add(line, "vm", json_object_new_string(vm->name));
        if (json_object_is_type(msg, json_type_object)) {
                json_object_object_foreach(msg, k, v)
                        json_object_object_add(line, k, json_object_get(v));
        } else
                json_object_object_add(line, "invalid", json_object_get(msg));
        fprintf(arg.record, "%s\n", json_object_to_json_string_ext(line, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        fflush(arg.record);
        json_object_put(line);
}

/* --- the simulated balloon ------------------------------------------------------------- */

static uint64_t stat_value(Vm *vm, size_t i) {
        uint64_t avail = vm->actual_bytes > vm->used_bytes ? vm->actual_bytes - vm->used_bytes : 0;

        if (vm->stat_kind[i] == STAT_FIXED)
                return vm->stat_value[i];
        if (vm->stat_kind[i] == STAT_UNREPORTED)
                return UINT64_MAX;
        /* Derived: a guest whose workload holds used_bytes; the balloon eats the rest, so
         * inflating lowers available/free/caches the way a real guest shows it. */
        switch (i) {
        case 0: return vm->actual_bytes;
        case 1: return avail / 2;
        case 2: return avail;
        case 3: return avail / 2;
        default:
                return i >= FIRST_NEW_STAT && i <= LAST_NEW_STAT ? UINT64_MAX : 0;
        }
}

static int64_t stats_last_update(Vm *vm) {
        if (vm->polling_interval_sec == 0)
                return vm->frozen_last_update;
        /* The guest reports every interval since polling was enabled. */
        int64_t now = (int64_t) now_realtime();
        return vm->polling_enabled_at +
               (now - vm->polling_enabled_at) / vm->polling_interval_sec * vm->polling_interval_sec;
}

static json_object *guest_stats(Vm *vm) {
        json_object *ret = json_object_new_object(), *stats = json_object_new_object();
        int64_t last_update = stats_last_update(vm);

        for (size_t i = 0; i < N_STATS; i++) {
                uint64_t v = last_update > 0 ? stat_value(vm, i) : UINT64_MAX;
                if (i >= FIRST_NEW_STAT && i <= LAST_NEW_STAT && vm->stat_kind[i] != STAT_FIXED)
                        continue;
                json_object_object_add(stats, stat_keys[i], json_object_new_uint64(v));
        }
        json_object_object_add(ret, "stats", stats);
        json_object_object_add(ret, "last-update", json_object_new_int64(last_update));
        return ret;
}

/* What the guest tells QEMU its balloon holds: the truth, or a hostile guest's number. */
static uint64_t reported_actual(Vm *vm) {
        return vm->lying ? vm->lie_actual_bytes : vm->actual_bytes;
}

static void emit_balloon_change(Vm *vm) {
        json_object *data = json_object_new_object();
        json_object_object_add(data, "actual", json_object_new_uint64(reported_actual(vm)));
        vm_emit(vm, "BALLOON_CHANGE", data);
}

static int on_change_throttle(sd_event_source *s, uint64_t usec, void *userdata) {
        Vm *vm = userdata;

        /* End of a period: deliver the latest value if one was held back, and start another
         * period; otherwise the next change goes out at once. */
        if (!vm->change_pending)
                return sd_event_source_set_enabled(s, SD_EVENT_OFF);
        vm->change_pending = false;
        emit_balloon_change(vm);
        (void) sd_event_source_set_time_relative(s, arg.throttle_usec);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static void vm_set_actual(Vm *vm, uint64_t actual) {
        if (actual == vm->actual_bytes)
                return;
        vm->actual_bytes = actual;
        if (arg.throttle_usec == 0) {
                emit_balloon_change(vm);
                return;
        }

        /* QEMU's monitor throttle (monitor_qapi_event_conf): the first event goes out at
         * once, later ones within the period collapse into one carrying the latest value. */
        if (vm->change_throttle && sd_event_source_get_enabled(vm->change_throttle, NULL) > 0) {
                vm->change_pending = true;
                return;
        }
        emit_balloon_change(vm);
        if (!vm->change_throttle) {
                if (sd_event_add_time_relative(arg.event, &vm->change_throttle, CLOCK_MONOTONIC,
                                               arg.throttle_usec, 1, on_change_throttle, vm) < 0)
                        die("failed to add a timer");
        } else {
                (void) sd_event_source_set_time_relative(vm->change_throttle, arg.throttle_usec);
                (void) sd_event_source_set_enabled(vm->change_throttle, SD_EVENT_ONESHOT);
        }
}

static int on_move(sd_event_source *s, uint64_t usec, void *userdata) {
        Vm *vm = userdata;
        /* Pages move in 4 KiB units, and actual is what the guest acknowledged so far. */
        uint64_t step = MAX(arg.speed_bytes_per_sec * arg.step_usec / USEC_PER_SEC / 4096 * 4096, (uint64_t) 4096);
        uint64_t a = vm->actual_bytes, t = vm->target_bytes;

        if (a > t)
                vm_set_actual(vm, a - t > step ? a - step : t);
        else if (a < t)
                vm_set_actual(vm, t - a > step ? a + step : t);

        if (vm->actual_bytes != vm->target_bytes) {
                (void) sd_event_source_set_time_relative(s, arg.step_usec);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        } else
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

static void vm_set_target(Vm *vm, uint64_t target) {
        vm->target_bytes = target;
        if (arg.speed_bytes_per_sec == 0 || vm->actual_bytes == target)
                return;   /* no guest driver: the balloon never moves, as in QEMU without a guest */
        if (arg.speed_bytes_per_sec == UINT64_MAX) {
                vm_set_actual(vm, target);
                return;
        }
        if (!vm->move_timer) {
                if (sd_event_add_time_relative(arg.event, &vm->move_timer, CLOCK_MONOTONIC, arg.step_usec, 1,
                                               on_move, vm) < 0)
                        die("failed to add a timer");
        } else if (sd_event_source_get_enabled(vm->move_timer, NULL) == 0) {
                (void) sd_event_source_set_time_relative(vm->move_timer, arg.step_usec);
                (void) sd_event_source_set_enabled(vm->move_timer, SD_EVENT_ONESHOT);
        }
}

/* --- QMP commands ---------------------------------------------------------------------- */

static void vm_quit(Vm *vm, const char *reason);

static bool path_is_balloon(Vm *vm, const char *path) {
        if (!vm->has_balloon || !path)
                return false;
        size_t n = strlen(vm->balloon_path);
        return strncmp(path, vm->balloon_path, n) == 0 && (path[n] == 0 || streq(path + n, "/virtio-backend"));
}

static json_object *qom_entry(const char *name, const char *type) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "name", json_object_new_string(name));
        json_object_object_add(e, "type", json_object_new_string(type));
        return e;
}

static const char *get_string_arg(json_object *args, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(args, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static int cmd_qom_list(Conn *c, Vm *vm, json_object *args, json_object *id) {
        const char *path = get_string_arg(args, "path");
        json_object *list;

        if (!path)
                return send_error(c, id, "GenericError", "Parameter 'path' is missing");

        list = json_object_new_array();
        json_object_array_add(list, qom_entry("type", "string"));
        if (streq(path, "/machine/peripheral") || streq(path, "/machine/peripheral-anon")) {
                if (vm->has_balloon) {
                        size_t n = strlen(path);
                        if (strncmp(vm->balloon_path, path, n) == 0 && vm->balloon_path[n] == '/' &&
                            !strchr(vm->balloon_path + n + 1, '/')) {
                                char type[128];
                                snprintf(type, sizeof type, "child<%s>", vm->balloon_type);
                                json_object_array_add(list, qom_entry(vm->balloon_path + n + 1, type));
                        }
                }
        } else if (path_is_balloon(vm, path)) {
                json_object_array_add(list, qom_entry("guest-stats-polling-interval", "int"));
                json_object_array_add(list, qom_entry("guest-stats", "guest statistics"));
                json_object_array_add(list, qom_entry("deflate-on-oom", "bool"));
                if (vm->free_page_reporting >= 0)
                        json_object_array_add(list, qom_entry("free-page-reporting", "bool"));
                if (!strstr(path, "/virtio-backend") && strstr(vm->balloon_type, "-pci"))
                        json_object_array_add(list, qom_entry("virtio-backend", "child<virtio-balloon-device>"));
        } else if (!streq(path, "/machine") && !streq(path, "/")) {
                json_object_put(list);
                return send_error(c, id, "DeviceNotFound", "Device '%s' not found", path);
        }
        send_return(c, list, id);
        return 0;
}

static int cmd_qom_get_set(Conn *c, Vm *vm, bool set, json_object *args, json_object *id) {
        const char *path = get_string_arg(args, "path"), *prop = get_string_arg(args, "property");
        json_object *value;

        if (!path)
                return send_error(c, id, "GenericError", "Parameter 'path' is missing");
        if (!prop)
                return send_error(c, id, "GenericError", "Parameter 'property' is missing");
        if (!path_is_balloon(vm, path))
                return send_error(c, id, "DeviceNotFound", "Device '%s' not found", path);

        if (streq(prop, "guest-stats-polling-interval")) {
                if (!set)
                        return send_return(c, json_object_new_int64(vm->polling_interval_sec), id);
                if (!json_object_object_get_ex(args, "value", &value))
                        return send_error(c, id, "GenericError", "Parameter 'value' is missing");
                if (!json_object_is_type(value, json_type_int))
                        return send_error(c, id, "GenericError", "Invalid parameter type for 'value', expected: integer");
                int64_t v = json_object_get_int64(value);
                if (v < 0)
                        return send_error(c, id, "GenericError", "timer value must be greater than zero");
                if (v > UINT32_MAX)
                        return send_error(c, id, "GenericError", "timer value is too big");
                /* Off keeps the last report (and its last-update), as QEMU does; back on, the
                 * guest reports at once. */
                if (v == 0 && vm->polling_interval_sec > 0)
                        vm->frozen_last_update = stats_last_update(vm);
                if (v > 0 && vm->polling_interval_sec == 0)
                        vm->polling_enabled_at = (int64_t) now_realtime();
                vm->polling_interval_sec = v;
                return send_return(c, NULL, id);
        }
        if (streq(prop, "guest-stats")) {
                if (set)
                        return send_error(c, id, "GenericError", "Property '%s.guest-stats' is not writable",
                                          vm->balloon_type);
                return send_return(c, guest_stats(vm), id);
        }
        if (streq(prop, "free-page-reporting") && vm->free_page_reporting >= 0) {
                /* a qdev property: fixed once the device is realized */
                if (set)
                        return send_error(c, id, "GenericError", "Attempt to set property '%s' on anonymous device "
                                          "(type 'virtio-balloon-device') after it was realized", prop);
                return send_return(c, json_object_new_boolean(vm->free_page_reporting), id);
        }
        /* also what a QEMU before 5.1 answers for free-page-reporting */
        send_error(c, id, "GenericError", "Property '%s.%s' not found", vm->balloon_type, prop);
        return 0;
}

static int cmd_balloon(Conn *c, Vm *vm, json_object *args, json_object *id) {
        json_object *value;

        if (!json_object_object_get_ex(args, "value", &value))
                return send_error(c, id, "GenericError", "Parameter 'value' is missing");
        if (!json_object_is_type(value, json_type_int))
                return send_error(c, id, "GenericError", "Invalid parameter type for 'value', expected: integer");
        if (!vm->has_balloon)
                return send_error(c, id, "DeviceNotActive", "No balloon device has been activated");
        int64_t v = json_object_get_int64(value);
        if (v <= 0)
                return send_error(c, id, "GenericError", "Parameter 'target' expects a size");
        /* QEMU clamps to the RAM size without telling, and counts the balloon in 4 KiB
         * pages: actual lands on RAM minus whole pages. */
        uint64_t target = MIN((uint64_t) v, vm->ram_bytes);
        vm_set_target(vm, vm->ram_bytes - (vm->ram_bytes - target) / 4096 * 4096);
        send_return(c, NULL, id);
        return 0;
}

static int handle_command(Conn *c, json_object *msg) {
        Vm *vm = c->monitor->vm;
        json_object *id = NULL, *args = NULL, *ex;

        record(vm, msg);
        c->n_commands++;
        vm->n_commands_total++;

        if (!json_object_is_type(msg, json_type_object))
                return send_error(c, NULL, "GenericError", "QMP input must be a JSON object");
        json_object_object_get_ex(msg, "id", &id);
        if (!json_object_object_get_ex(msg, "execute", &ex)) {
                json_object_object_foreach(msg, k, v) {
                        (void) v;
                        if (!streq(k, "id") && !streq(k, "arguments"))
                                return send_error(c, id, "GenericError", "QMP input member '%s' is unexpected", k);
                }
                return send_error(c, id, "GenericError", "QMP input lacks member 'execute'");
        }
        if (!json_object_is_type(ex, json_type_string))
                return send_error(c, id, "GenericError", "QMP input member 'execute' must be a string");
        if (json_object_object_get_ex(msg, "arguments", &args) && !json_object_is_type(args, json_type_object))
                return send_error(c, id, "GenericError", "QMP input member 'arguments' must be an object");

        const char *cmd = json_object_get_string(ex);

        if (!c->negotiated) {
                if (!streq(cmd, "qmp_capabilities"))
                        return send_error(c, id, "CommandNotFound",
                                          "Expecting capabilities negotiation with 'qmp_capabilities'");
                c->negotiated = true;
                return send_return(c, NULL, id);
        }

        if (arg.hang_after > 0 && c->n_commands > arg.hang_after && !arg.hang_done) {
                /* a main loop stuck in the middle of the attach: this command is never answered */
                arg.hang_done = arg.hung = true;
                (void) sd_event_source_set_enabled(c->source, SD_EVENT_OFF);
                return 0;
        }

        if (arg.garbage_after > 0 && c->n_commands > arg.garbage_after && !(arg.garbage_once && arg.garbage_done)) {
                arg.garbage_done = true;
                return send_garbage(c);
        }

        if (streq(cmd, "qmp_capabilities"))
                send_error(c, id, "CommandNotFound", "Capabilities negotiation is already complete, command ignored");
        else if (streq(cmd, "query-balloon")) {
                if (!vm->has_balloon)
                        return send_error(c, id, "DeviceNotActive", "No balloon device has been activated");
                json_object *r = json_object_new_object();
                json_object_object_add(r, "actual", json_object_new_uint64(reported_actual(vm)));
                send_return(c, r, id);
        } else if (streq(cmd, "balloon"))
                cmd_balloon(c, vm, args, id);
        else if (streq(cmd, "qom-list"))
                cmd_qom_list(c, vm, args, id);
        else if (streq(cmd, "qom-get"))
                cmd_qom_get_set(c, vm, false, args, id);
        else if (streq(cmd, "qom-set"))
                cmd_qom_get_set(c, vm, true, args, id);
        else if (streq(cmd, "query-memory-size-summary")) {
                json_object *r = json_object_new_object();
                json_object_object_add(r, "base-memory", json_object_new_uint64(vm->ram_bytes));
                json_object_object_add(r, "plugged-memory", json_object_new_int64(0));
                send_return(c, r, id);
        } else if (streq(cmd, "query-status")) {
                json_object *r = json_object_new_object();
                json_object_object_add(r, "status", json_object_new_string("running"));
                json_object_object_add(r, "singlestep", json_object_new_boolean(false));
                json_object_object_add(r, "running", json_object_new_boolean(true));
                send_return(c, r, id);
        } else if (streq(cmd, "query-name")) {
                json_object *r = json_object_new_object();
                json_object_object_add(r, "name", json_object_new_string(vm->name));
                send_return(c, r, id);
        } else if (streq(cmd, "quit")) {
                /* QEMU 7.2 emits SHUTDOWN before the reply, then closes. */
                json_object *data = json_object_new_object();
                json_object_object_add(data, "guest", json_object_new_boolean(false));
                json_object_object_add(data, "reason", json_object_new_string("host-qmp-quit"));
                vm_emit(vm, "SHUTDOWN", data);
                send_return(c, NULL, id);
                vm_quit(vm, NULL);
        } else
                send_error(c, id, "CommandNotFound", "The command %s has not been found", cmd);
        return 0;
}

/* --- connections ----------------------------------------------------------------------- */

static int on_listen(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static void conn_free(Conn *c) {
        if (!c)
                return;
        Monitor *m = c->monitor;
        sd_event_source_disable_unref(c->source);
        if (c->fd >= 0)
                close(c->fd);
        if (c->tok)
                json_tokener_free(c->tok);
        free(c->out);
        free(c);
        if (m) {
                m->conn = NULL;
                /* Next client in the backlog gets its turn. */
                if (m->source)
                        (void) sd_event_source_set_enabled(m->source, SD_EVENT_ON);
        }
}

/* Feeds one chunk of a client's input to its tokener and runs the commands. Returns false
 * if the connection is gone (quit closes it from inside a command). */
static bool conn_feed(Conn *c, const char *buf, size_t k) {
        Vm *vm = c->monitor->vm;
        size_t off = 0;

        while (off < k) {
                /* QEMU skips blanks between commands. */
                if (isspace((unsigned char) buf[off]) && json_tokener_get_parse_end(c->tok) == 0 &&
                    json_tokener_get_error(c->tok) != json_tokener_continue) {
                        off++;
                        continue;
                }
                json_object *msg = json_tokener_parse_ex(c->tok, buf + off, (int) (k - off));
                enum json_tokener_error jerr = json_tokener_get_error(c->tok);
                if (jerr == json_tokener_continue)
                        return true;   /* the tokener keeps the partial command */
                if (jerr != json_tokener_success) {
                        /* QEMU answers a parse error and resynchronizes. */
                        send_error(c, NULL, "GenericError", "JSON parse error, %s", json_tokener_error_desc(jerr));
                        json_tokener_reset(c->tok);
                        return true;
                }
                off += json_tokener_get_parse_end(c->tok);
                json_tokener_reset(c->tok);
                handle_command(c, msg);
                json_object_put(msg);
                if (vm->quitting)
                        return false;   /* c was freed by quit */
        }
        return true;
}

static int on_conn(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;
        char buf[16384];

        if (revents & EPOLLOUT)
                conn_flush(c);
        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                return 0;

        /* Edge-triggered (see monitor_watch): read until the socket is empty. */
        for (;;) {
                ssize_t k = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN)
                        return 0;
                if (k <= 0) {
                        conn_free(c);
                        return 0;
                }
                if (!c->monitor->control)
                        continue;   /* HMP: we only greet */
                if (!conn_feed(c, buf, (size_t) k))
                        return 0;
        }
}

static void monitor_greet(Conn *c) {
        if (!c->monitor->control) {
                static const char hmp[] = "QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ";
                conn_write(c, hmp, sizeof hmp - 1);
                return;
        }
        json_object *greeting = json_tokener_parse(
                "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
                "\"package\": \"" FAKE_VERSION_PACKAGE "\"}, \"capabilities\": [\"oob\"]}}");
        conn_send(c, greeting);
        json_object_put(greeting);
}

static int on_listen(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Monitor *m = userdata;
        Conn *c;

        if (m->conn)
                return sd_event_source_set_enabled(s, SD_EVENT_OFF);
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
                return 0;
        c = calloc(1, sizeof(*c));
        if (!c)
                die("out of memory");
        c->monitor = m;
        c->fd = cfd;
        c->tok = json_tokener_new();
        if (sd_event_add_io(arg.event, &c->source, cfd, EPOLLIN | EPOLLET, on_conn, c) < 0)
                die("sd_event_add_io failed");
        if (arg.hung)
                (void) sd_event_source_set_enabled(c->source, SD_EVENT_OFF);
        m->conn = c;
        /* One client at a time per monitor, like QEMU. */
        (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        monitor_greet(c);
        return 0;
}

static void monitor_listen(Monitor *m) {
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
        } addr = { .un.sun_family = AF_UNIX };

        if (strlen(m->path) >= sizeof(addr.un.sun_path))
                die("socket path too long: %s", m->path);
        strcpy(addr.un.sun_path, m->path);
        m->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (m->fd < 0)
                die("socket: %m");
        (void) unlink(m->path);   /* QEMU replaces a stale socket too */
        if (bind(m->fd, &addr.sa, sizeof(addr.un)) < 0)
                die("bind %s: %m", m->path);
        if (listen(m->fd, 16) < 0)
                die("listen %s: %m", m->path);
}

/* Connections are edge-triggered: sd-event polls epoll on every iteration, and with hundreds
 * of VMs talking at once level-triggered sockets waiting their turn make each iteration
 * O(VMs). Listeners serve one client and are then disabled, so level is fine there. */
static void monitor_watch(Monitor *m) {
        if (sd_event_add_io(arg.event, &m->source, m->fd, EPOLLIN, on_listen, m) < 0)
                die("sd_event_add_io failed");
}

static void monitor_close(Monitor *m) {
        conn_free(m->conn);
        m->source = sd_event_source_disable_unref(m->source);
        if (m->fd >= 0) {
                close(m->fd);
                m->fd = -1;
                (void) unlink(m->path);
        }
}

static void vm_quit(Vm *vm, const char *reason) {
        if (vm->quitting)
                return;
        vm->quitting = true;
        if (reason) {
                json_object *data = json_object_new_object();
                json_object_object_add(data, "guest", json_object_new_boolean(false));
                json_object_object_add(data, "reason", json_object_new_string(reason));
                vm_emit(vm, "SHUTDOWN", data);
        }
        for (Monitor *m = vm->monitors; m; m = m->next) {
                /* Deliver what is queued (the quit reply), then hang up. */
                if (m->conn) {
                        int fl = fcntl(m->conn->fd, F_GETFL);
                        (void) fcntl(m->conn->fd, F_SETFL, fl & ~O_NONBLOCK);
                        while (m->conn->out_size > 0) {
                                size_t before = m->conn->out_size;
                                conn_flush(m->conn);
                                if (m->conn->out_size == before)
                                        break;
                        }
                }
                monitor_close(m);
        }
        vm->move_timer = sd_event_source_disable_unref(vm->move_timer);
        vm->change_throttle = sd_event_source_disable_unref(vm->change_throttle);
        if (--arg.n_vms_alive == 0)
                (void) sd_event_exit(arg.event, 0);
}

/* --- control socket -------------------------------------------------------------------- */

static int parse_stats(Vm *vm, const char *spec);
static int parse_memory_arg(const char *s, uint64_t *ret);

static void control_vm_status(FILE *out, Vm *vm) {
        unsigned connected = 0;
        for (Monitor *m = vm->monitors; m; m = m->next)
                connected += m->conn != NULL;
        fprintf(out, "{\"vm\": \"%s\", \"ram\": %" PRIu64 ", \"actual\": %" PRIu64 ", \"target\": %" PRIu64
                ", \"polling-interval\": %" PRIi64 ", \"connections\": %u, \"commands\": %u}\n",
                vm->name, vm->ram_bytes, vm->actual_bytes, vm->target_bytes, vm->polling_interval_sec,
                connected, vm->n_commands_total);
}

/* One control line: "[@VM] VERB [ARGS]". Without @VM it applies to every VM. */
static void control_line(FILE *out, char *line) {
        char *vm_name = NULL, *verb, *rest;
        bool found = false;

        line[strcspn(line, "\r\n")] = 0;
        while (isspace((unsigned char) *line))
                line++;
        if (*line == '@') {
                vm_name = line + 1;
                line += strcspn(line, " \t");
                if (*line)
                        *line++ = 0;
                while (isspace((unsigned char) *line))
                        line++;
        }
        verb = line;
        rest = line + strcspn(line, " \t");
        if (*rest)
                *rest++ = 0;
        while (isspace((unsigned char) *rest))
                rest++;
        if (!*verb) {
                fprintf(out, "error: empty command\n");
                return;
        }

        if (streq(verb, "hang") || streq(verb, "unhang")) {
                arg.hung = streq(verb, "hang");
                for (Vm *vm = arg.vms; vm; vm = vm->next)
                        for (Monitor *m = vm->monitors; m; m = m->next)
                                if (m->conn)
                                        (void) sd_event_source_set_enabled(m->conn->source,
                                                                           arg.hung ? SD_EVENT_OFF : SD_EVENT_ON);
                fprintf(out, "ok\n");
                return;
        }

        for (Vm *vm = arg.vms; vm; vm = vm->next) {
                if (vm_name && !streq(vm_name, vm->name))
                        continue;
                found = true;
                if (vm->quitting && !streq(verb, "status"))
                        continue;
                if (streq(verb, "status"))
                        control_vm_status(out, vm);
                else if (streq(verb, "stats")) {
                        if (parse_stats(vm, rest) < 0) {
                                fprintf(out, "error: bad stats spec '%s'\n", rest);
                                return;
                        }
                } else if (streq(verb, "actual")) {
                        uint64_t v;
                        if (parse_size(rest, &v) < 0 || v == 0 || v > vm->ram_bytes) {
                                fprintf(out, "error: bad size '%s'\n", rest);
                                return;
                        }
                        /* The guest moved the balloon itself (deflate-on-oom): it stays there. */
                        vm->target_bytes = v;
                        vm_set_actual(vm, v);
                } else if (streq(verb, "lie-actual")) {
                        /* A hostile guest: any 64-bit number as its balloon size, above the RAM
                         * too (QEMU computes actual from the guest's page count, unchecked); the
                         * balloon itself keeps moving underneath. "off" tells the truth again. */
                        uint64_t v = 0;
                        char *end = NULL;
                        bool off = streq(rest, "off"), plain = *rest && strspn(rest, "0123456789") == strlen(rest);
                        int r = 0;
                        if (plain) {   /* exact, up to 2^64-1 (parse_size goes through a double) */
                                errno = 0;
                                v = strtoull(rest, &end, 10);
                                r = errno ? -errno : 0;
                        } else if (!off)
                                r = parse_size(rest, &v);
                        if (r < 0) {
                                fprintf(out, "error: bad size '%s'\n", rest);
                                return;
                        }
                        vm->lying = !off;
                        vm->lie_actual_bytes = v;
                        emit_balloon_change(vm);
                } else if (streq(verb, "garbage")) {
                        for (Monitor *m = vm->monitors; m; m = m->next)
                                if (m->conn && m->control)
                                        send_garbage(m->conn);
                } else if (streq(verb, "hangup")) {
                        for (Monitor *m = vm->monitors; m; m = m->next)
                                conn_free(m->conn);
                } else if (streq(verb, "event")) {
                        char *name = rest, *data = rest + strcspn(rest, " \t");
                        if (*data)
                                *data++ = 0;
                        json_object *d = *data ? json_tokener_parse(data) : NULL;
                        if (!*name || (*data && !json_object_is_type(d, json_type_object))) {
                                json_object_put(d);
                                fprintf(out, "error: usage: event NAME [JSON-OBJECT]\n");
                                return;
                        }
                        vm_emit(vm, name, d);
                } else if (streq(verb, "quit"))
                        vm_quit(vm, "host-signal");
                else {
                        fprintf(out, "error: unknown command '%s' (status, stats, actual, lie-actual, garbage, "
                                "hangup, hang, unhang, event, quit)\n", verb);
                        return;
                }
        }
        if (!found)
                fprintf(out, "error: no VM '%s'\n", vm_name);
        else
                fprintf(out, "ok\n");
}

static int on_control_conn(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        /* Commands are short and come from tests: read a line blocking-free, answer, done. */
        char buf[MAX_CONTROL_LINE];
        ssize_t k = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);

        if (k < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (k <= 0) {
                sd_event_source_disable_unref(s);
                return 0;
        }
        buf[k] = 0;

        char *reply = NULL;
        size_t reply_size = 0;
        FILE *out = open_memstream(&reply, &reply_size);
        if (!out)
                die("out of memory");
        for (char *line = buf, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                if (*line)
                        control_line(out, line);
        }
        fclose(out);
        (void) send(fd, reply, reply_size, MSG_NOSIGNAL);
        free(reply);
        return 0;
}

static int on_control(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        sd_event_source *cs;

        if (cfd < 0)
                return 0;
        if (sd_event_add_io(arg.event, &cs, cfd, EPOLLIN, on_control_conn, NULL) < 0) {
                close(cfd);
                return 0;
        }
        (void) sd_event_source_set_io_fd_own(cs, true);
        (void) sd_event_source_set_floating(cs, true);
        sd_event_source_unref(cs);
        return 0;
}

/* --- command line ---------------------------------------------------------------------- */

static int parse_memory_arg(const char *s, uint64_t *ret) {
        /* QEMU's -m: a plain number is MiB; K/M/G/T suffixes; "size=" form, other keys ignored. */
        char buf[64];
        const char *p = s;

        for (const char *part = s; part && *part;) {
                const char *comma = strchr(part, ',');
                size_t n = comma ? (size_t) (comma - part) : strlen(part);
                if (n > 5 && strncmp(part, "size=", 5) == 0) {
                        p = part + 5;
                        n -= 5;
                        snprintf(buf, sizeof buf, "%.*s", (int) n, p);
                        p = buf;
                        break;
                }
                if (part == s && !memchr(part, '=', n)) {
                        snprintf(buf, sizeof buf, "%.*s", (int) n, part);
                        p = buf;
                        break;
                }
                part = comma ? comma + 1 : NULL;
                p = NULL;
        }
        if (!p || !*p)
                return -EINVAL;
        bool plain = true;
        for (const char *q = p; *q; q++)
                if (!isdigit((unsigned char) *q))
                        plain = false;
        if (plain) {
                uint64_t mib = strtoull(p, NULL, 10);
                if (mib == 0 || mib > UINT64_MAX / MIB)
                        return -ERANGE;
                *ret = mib * MIB;
                return 0;
        }
        return parse_size(p, ret);
}

/* QEMU's spellings of a bool property: 1, 0, or -1 for anything else. */
static int parse_on_off(const char *s) {
        if (streq(s, "on") || streq(s, "true") || streq(s, "yes"))
                return 1;
        if (streq(s, "off") || streq(s, "false") || streq(s, "no"))
                return 0;
        return -1;
}

/* "key=value,key=value": value of key into buf, or NULL. A leading bare word counts as key "". */
static const char *opt_get(const char *opts, const char *key, char *buf, size_t size) {
        for (const char *part = opts; part && *part;) {
                const char *comma = strchr(part, ',');
                size_t n = comma ? (size_t) (comma - part) : strlen(part);
                const char *eq = memchr(part, '=', n);
                if (eq && (size_t) (eq - part) == strlen(key) && strncmp(part, key, strlen(key)) == 0) {
                        snprintf(buf, size, "%.*s", (int) (n - (size_t) (eq - part) - 1), eq + 1);
                        return buf;
                }
                if (!eq && part == opts && !*key) {
                        snprintf(buf, size, "%.*s", (int) n, part);
                        return buf;
                }
                part = comma ? comma + 1 : NULL;
        }
        return NULL;
}

static int parse_stats(Vm *vm, const char *spec) {
        char *copy = strdup(spec), *save = NULL;

        if (!copy)
                return -ENOMEM;
        for (char *item = strtok_r(copy, ", \t", &save); item; item = strtok_r(NULL, ", \t", &save)) {
                char *eq = strchr(item, '=');
                if (!eq) {
                        free(copy);
                        return -EINVAL;
                }
                *eq = 0;
                const char *key = item, *val = eq + 1;
                uint64_t v = 0;
                StatKind kind = STAT_FIXED;

                if (streq(val, "none") || streq(val, "-1"))
                        kind = STAT_UNREPORTED;
                else if (streq(val, "auto"))
                        kind = STAT_DERIVED;
                else if (parse_size(val, &v) < 0) {
                        free(copy);
                        return -EINVAL;
                }
                if (streq(key, "used")) {
                        vm->used_bytes = v;
                        continue;
                }
                size_t i;
                for (i = 0; i < N_STATS; i++)
                        if (streq(key, stat_names[i]))
                                break;
                if (i == N_STATS) {
                        free(copy);
                        return -EINVAL;
                }
                vm->stat_kind[i] = kind;
                vm->stat_value[i] = v;
        }
        free(copy);
        return 0;
}

static void help(void) {
        printf("fake-qmp [QEMU-LIKE OPTIONS] [--fake-* OPTIONS]\n\n"
               "A FAKE QEMU for autoballoon's tests and benchmarks: no guest runs. It speaks QMP like\n"
               "QEMU 7.2 (greeting, qmp_capabilities, ids, errors) for query-balloon, balloon,\n"
               "qom-list, qom-get/qom-set (guest-stats, guest-stats-polling-interval,\n"
               "free-page-reporting), query-memory-size-summary, query-status, query-name and quit,\n"
               "and simulates a virtio-balloon whose actual size follows the target in steps, with\n"
               "BALLOON_CHANGE.\n\n"
               "QEMU-like options (so /proc/PID/cmdline discovery works on it):\n"
               "  -qmp unix:PATH[,server=on,wait=off]        a QMP monitor socket\n"
               "  -chardev socket,id=ID,path=PATH[,...]      a socket chardev, used by -mon\n"
               "  -mon chardev=ID,mode=control|readline      a monitor on it (readline = HMP, only greets)\n"
               "  -m SIZE | -m size=SIZE[,...]               guest RAM (plain number = MiB), default 128M\n"
               "  -name NAME | -name guest=NAME[,...]        VM name (record log, control)\n"
               "  -device virtio-balloon-pci[,id=ID][,free-page-reporting=on|off]\n"
               "                                             the balloon; id= puts it in /machine/peripheral,\n"
               "                                             else /machine/peripheral-anon/device[0]\n"
               "                                             (default without -device: balloon0, -pci)\n"
               "  -pidfile FILE, -daemonize                  as QEMU (written once the sockets listen)\n"
               "  any other -option [value]                  ignored\n\n"
               "Fake-only options:\n"
               "  --fake-record=FILE (or --record FILE)      append every command received as a JSON line:\n"
               "                                             the command's keys plus \"time\" and \"vm\"\n"
               "  --fake-no-balloon                          no balloon device (DeviceNotActive)\n"
               "  --fake-free-page-reporting=on|off|absent   the balloon's free-page-reporting property\n"
               "                                             (default off; absent: no such property, as\n"
               "                                             QEMU before 5.1)\n"
               "  --fake-stats=KEY=VAL,...                   synthetic guest stats: total, free, available,\n"
               "                                             caches, major-faults, minor-faults, swap-in,\n"
               "                                             swap-out, oom-kills, alloc-stalls, direct-scans,\n"
               "                                             direct-reclaims, async-scans, async-reclaims;\n"
               "                                             VAL is a size, 'none' (not reported) or 'auto';\n"
               "                                             used=SIZE sets the workload that 'auto' values\n"
               "                                             derive from (default 40%% of RAM)\n"
               "  --fake-balloon-speed=SIZE|instant          bytes per second the guest moves (default 800M;\n"
               "                                             0 = never moves, like QEMU without a guest)\n"
               "  --fake-balloon-step-ms=N                   period of the guest's steps (default 100)\n"
               "  --fake-event-throttle-ms=N                 BALLOON_CHANGE rate limit as QEMU's (default\n"
               "                                             1000: first at once, then the latest value\n"
               "                                             once per period; 0 = one event per step)\n"
               "  --fake-garbage-after=N                     send malformed JSON instead of the reply to the\n"
               "                                             Nth command after qmp_capabilities, on every\n"
               "                                             connection (with --fake-garbage-once: only once)\n"
               "  --fake-hang-after=N                        stop reading QMP (as 'hang') at the Nth command\n"
               "                                             after qmp_capabilities, leaving it unanswered;\n"
               "                                             once ('unhang' resumes)\n"
               "  --fake-control=PATH                        control socket, one command per line:\n"
               "                                             [@VM] status | stats KEY=VAL,... | actual SIZE |\n"
               "                                             lie-actual SIZE|off |\n"
               "                                             garbage | hangup | event NAME [JSON] | quit;\n"
               "                                             hang | unhang (stop/resume reading QMP);\n"
               "                                             answers 'ok' or 'error: ...' per line\n"
               "  --fake-many=N --fake-dir=DIR               N VMs in one process on one event loop:\n"
               "                                             DIR/vm-0001.qmp ..., names vm-0001 ...,\n"
               "                                             control at DIR/control.sock by default\n\n"
               "SIGTERM/SIGINT: SHUTDOWN event (host-signal), sockets removed, exit 0.\n"
               "quit (QMP): SHUTDOWN, reply, close; the process exits when all its VMs quit.\n");
}

typedef struct ChardevSpec {
        char id[128];
        char path[108];
} ChardevSpec;

static Vm *vm_new(const char *name, uint64_t ram) {
        Vm *vm = calloc(1, sizeof(*vm));
        if (!vm || !(vm->name = strdup(name)))
                die("out of memory");
        vm->ram_bytes = vm->actual_bytes = vm->target_bytes = ram;
        vm->used_bytes = ram / 10 * 4;
        vm->has_balloon = true;
        vm->balloon_path = strdup("/machine/peripheral/balloon0");
        vm->balloon_type = strdup("virtio-balloon-pci");
        return vm;
}

static Monitor *monitor_add(Vm *vm, const char *path, bool control) {
        Monitor *m = calloc(1, sizeof(*m)), **p;
        if (!m || !(m->path = strdup(path)))
                die("out of memory");
        m->vm = vm;
        m->fd = -1;
        m->control = control;
        for (p = &vm->monitors; *p; p = &(*p)->next)
                ;
        *p = m;
        return m;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        for (Vm *vm = arg.vms; vm; vm = vm->next)
                vm_quit(vm, "host-signal");
        return sd_event_exit(arg.event, 0);
}

int main(int argc, char *argv[]) {
        ChardevSpec chardevs[16];
        size_t n_chardevs = 0;
        struct { char path[108]; bool control; } qmps[16];
        size_t n_qmps = 0;
        char name[256] = "fake-vm", *stats_spec = NULL, *many_dir = NULL, *record_path = NULL;
        uint64_t ram = 128 * MIB;
        unsigned many = 0;
        bool no_balloon = false, daemonize = false;
        char balloon_path[512] = "", balloon_type[256] = "";
        int free_page_reporting = 0;
        unsigned anon_devices = 0;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                char buf[256];

#define FAKE_OPT(opt) (strncmp(a, opt "=", strlen(opt) + 1) == 0 ? (v = a + strlen(opt) + 1, true) : \
                       streq(a, opt) && v ? (i++, true) : false)

                if (streq(a, "--help") || streq(a, "-h")) {
                        help();
                        return 0;
                } else if (streq(a, "-qmp") && v) {
                        i++;
                        if (strncmp(v, "unix:", 5) != 0)
                                die("only -qmp unix:PATH is supported by the fake, not '%s'", v);
                        if (n_qmps >= ELEMENTSOF(qmps))
                                die("too many monitors");
                        snprintf(qmps[n_qmps].path, sizeof qmps[0].path, "%.*s", (int) strcspn(v + 5, ","), v + 5);
                        qmps[n_qmps++].control = true;
                } else if (streq(a, "-chardev") && v) {
                        i++;
                        if (strncmp(v, "socket,", 7) != 0)
                                continue;   /* not a socket: not a monitor we can serve */
                        if (n_chardevs >= ELEMENTSOF(chardevs))
                                die("too many chardevs");
                        if (!opt_get(v, "id", chardevs[n_chardevs].id, sizeof chardevs[0].id) ||
                            !opt_get(v, "path", chardevs[n_chardevs].path, sizeof chardevs[0].path))
                                continue;
                        n_chardevs++;
                } else if (streq(a, "-mon") && v) {
                        char id[128], mode[32];
                        i++;
                        if (!opt_get(v, "chardev", id, sizeof id))
                                die("-mon without chardev=: %s", v);
                        bool control = opt_get(v, "mode", mode, sizeof mode) && streq(mode, "control");
                        size_t j;
                        for (j = 0; j < n_chardevs; j++)
                                if (streq(chardevs[j].id, id))
                                        break;
                        if (j == n_chardevs)
                                die("-mon: no socket chardev '%s' (give -chardev first)", id);
                        if (n_qmps >= ELEMENTSOF(qmps))
                                die("too many monitors");
                        snprintf(qmps[n_qmps].path, sizeof qmps[0].path, "%s", chardevs[j].path);
                        qmps[n_qmps++].control = control;
                } else if (streq(a, "-m") && v) {
                        i++;
                        if (parse_memory_arg(v, &ram) < 0)
                                die("bad -m '%s'", v);
                } else if (streq(a, "-name") && v) {
                        i++;
                        if (!opt_get(v, "guest", name, sizeof name))
                                opt_get(v, "", name, sizeof name);
                } else if (streq(a, "-device") && v) {
                        i++;
                        if (!opt_get(v, "", buf, sizeof buf) || strncmp(buf, "virtio-balloon", 14) != 0)
                                continue;
                        snprintf(balloon_type, sizeof balloon_type, "%s", streq(buf, "virtio-balloon") ?
                                 "virtio-balloon-pci" : buf);
                        char id[128], fpr[16];
                        if (opt_get(v, "free-page-reporting", fpr, sizeof fpr)) {
                                free_page_reporting = parse_on_off(fpr);
                                if (free_page_reporting < 0)
                                        die("bad free-page-reporting '%s' (on or off)", fpr);
                        }
                        if (opt_get(v, "id", id, sizeof id))
                                snprintf(balloon_path, sizeof balloon_path, "/machine/peripheral/%s", id);
                        else
                                snprintf(balloon_path, sizeof balloon_path, "/machine/peripheral-anon/device[%u]",
                                         anon_devices);
                } else if (streq(a, "-pidfile") && v) {
                        i++;
                        arg.pidfile = (char *) v;
                } else if (streq(a, "-daemonize"))
                        daemonize = true;
                else if (FAKE_OPT("--fake-record") || FAKE_OPT("--record"))
                        record_path = (char *) v;
                else if (streq(a, "--fake-no-balloon"))
                        no_balloon = true;
                else if (FAKE_OPT("--fake-free-page-reporting")) {
                        free_page_reporting = streq(v, "absent") ? -1 : parse_on_off(v);
                        if (free_page_reporting < 0 && !streq(v, "absent"))
                                die("bad --fake-free-page-reporting '%s' (on, off or absent)", v);
                }
                else if (FAKE_OPT("--fake-stats"))
                        stats_spec = (char *) v;
                else if (FAKE_OPT("--fake-balloon-speed")) {
                        if (streq(v, "instant"))
                                arg.speed_bytes_per_sec = UINT64_MAX;
                        else if (parse_size(v, &arg.speed_bytes_per_sec) < 0)
                                die("bad --fake-balloon-speed '%s'", v);
                } else if (FAKE_OPT("--fake-balloon-step-ms")) {
                        long ms = strtol(v, NULL, 10);
                        if (ms <= 0)
                                die("bad --fake-balloon-step-ms '%s'", v);
                        arg.step_usec = (usec_t) ms * USEC_PER_MSEC;
                } else if (FAKE_OPT("--fake-event-throttle-ms")) {
                        char *end;
                        long ms = strtol(v, &end, 10);
                        if (ms < 0 || *end)
                                die("bad --fake-event-throttle-ms '%s'", v);
                        arg.throttle_usec = (usec_t) ms * USEC_PER_MSEC;
                } else if (FAKE_OPT("--fake-hang-after"))
                        arg.hang_after = (unsigned) strtoul(v, NULL, 10);
                else if (FAKE_OPT("--fake-garbage-after"))
                        arg.garbage_after = (unsigned) strtoul(v, NULL, 10);
                else if (streq(a, "--fake-garbage-once"))
                        arg.garbage_once = true;
                else if (FAKE_OPT("--fake-control"))
                        arg.control_path = (char *) v;
                else if (FAKE_OPT("--fake-many"))
                        many = (unsigned) strtoul(v, NULL, 10);
                else if (FAKE_OPT("--fake-dir"))
                        many_dir = (char *) v;
                else if (strncmp(a, "--fake-", 7) == 0)
                        die("unknown fake option '%s' (see --help)", a);
                else if (a[0] == '-' && v && v[0] != '-')
                        i++;   /* some QEMU option with a value: ignored */
                else if (a[0] != '-')
                        die("unexpected argument '%s'", a);
#undef FAKE_OPT
                if (streq(a, "-device") && v && !opt_get(v, "id", buf, sizeof buf))
                        anon_devices++;   /* QEMU numbers id-less devices device[0], [1]... */
        }

        if (many > 0 && !many_dir)
                die("--fake-many needs --fake-dir");
        if (many > 0) {
                /* Two fds per VM (listener, client) plus the loop: past the 1024 soft limit at
                 * 500 VMs. The hard limit is what we may use. */
                struct rlimit rl;
                if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                        rl.rlim_cur = rl.rlim_max;
                        (void) setrlimit(RLIMIT_NOFILE, &rl);
                }
        }
        if (many == 0 && n_qmps == 0)
                die("no QMP monitor: give -qmp unix:PATH,server=on,wait=off or -chardev/-mon (see --help)");

        if (record_path && !(arg.record = fopen(record_path, "ae")))
                die("cannot open %s: %m", record_path);

        Vm **tail = &arg.vms;
        for (unsigned k = 0; k < MAX(many, 1u); k++) {
                char vm_name[300];
                if (many > 0)
                        snprintf(vm_name, sizeof vm_name, "vm-%04u", k + 1);
                else
                        snprintf(vm_name, sizeof vm_name, "%s", name);
                Vm *vm = vm_new(vm_name, ram);
                vm->has_balloon = !no_balloon;
                vm->free_page_reporting = free_page_reporting;
                if (*balloon_path) {
                        free(vm->balloon_path);
                        free(vm->balloon_type);
                        vm->balloon_path = strdup(balloon_path);
                        vm->balloon_type = strdup(balloon_type);
                }
                if (stats_spec && parse_stats(vm, stats_spec) < 0)
                        die("bad --fake-stats '%s'", stats_spec);
                if (many > 0) {
                        char p[4096];
                        snprintf(p, sizeof p, "%s/%s.qmp", many_dir, vm_name);
                        monitor_add(vm, p, true);
                } else
                        for (size_t j = 0; j < n_qmps; j++)
                                monitor_add(vm, qmps[j].path, qmps[j].control);
                for (Monitor *m = vm->monitors; m; m = m->next)
                        monitor_listen(m);
                *tail = vm;
                tail = &vm->next;
                arg.n_vms_alive++;
        }

        if (!arg.control_path && many_dir) {
                static char p[4096];
                snprintf(p, sizeof p, "%s/control.sock", many_dir);
                arg.control_path = p;
        }
        if (arg.control_path) {
                union {
                        struct sockaddr sa;
                        struct sockaddr_un un;
                } addr = { .un.sun_family = AF_UNIX };
                if (strlen(arg.control_path) >= sizeof(addr.un.sun_path))
                        die("control path too long");
                strcpy(addr.un.sun_path, arg.control_path);
                arg.control_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                (void) unlink(arg.control_path);
                if (arg.control_fd < 0 || bind(arg.control_fd, &addr.sa, sizeof(addr.un)) < 0 ||
                    listen(arg.control_fd, 16) < 0)
                        die("control socket %s: %m", arg.control_path);
        }

        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        if (daemonize) {
                /* Like QEMU: the parent returns once the sockets listen (clients queue in the
                 * backlog until the child's loop runs), having written the child's PID. The
                 * event loop is created after the fork: sd-event objects do not survive one. */
                pid_t pid = fork();
                if (pid < 0)
                        die("fork: %m");
                if (pid > 0) {
                        if (arg.pidfile) {
                                FILE *f = fopen(arg.pidfile, "we");
                                if (!f)
                                        die("cannot write %s: %m", arg.pidfile);
                                fprintf(f, "%d\n", (int) pid);
                                fclose(f);
                        }
                        _exit(0);
                }
                setsid();
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null >= 0) {
                        dup2(null, STDIN_FILENO);
                        dup2(null, STDOUT_FILENO);
                        close(null);
                }
        }

        if (sd_event_default(&arg.event) < 0)
                die("sd_event_default failed");
        for (Vm *vm = arg.vms; vm; vm = vm->next)
                for (Monitor *m = vm->monitors; m; m = m->next)
                        monitor_watch(m);
        if (arg.control_fd >= 0 &&
            sd_event_add_io(arg.event, &arg.control_source, arg.control_fd, EPOLLIN, on_control, NULL) < 0)
                die("sd_event_add_io failed");

        if (sd_event_add_signal(arg.event, NULL, SIGTERM, on_signal, NULL) < 0 ||
            sd_event_add_signal(arg.event, NULL, SIGINT, on_signal, NULL) < 0)
                die("sd_event_add_signal failed");

        if (arg.pidfile && !daemonize) {
                FILE *f = fopen(arg.pidfile, "we");
                if (!f)
                        die("cannot write %s: %m", arg.pidfile);
                fprintf(f, "%d\n", (int) getpid());
                fclose(f);
        }
        fprintf(stderr, "fake-qmp: %u VM(s) listening%s%s\n", arg.n_vms_alive,
                arg.control_path ? ", control " : "", arg.control_path ?: "");

        int r = sd_event_loop(arg.event);

        for (Vm *vm = arg.vms; vm; vm = vm->next)
                for (Monitor *m = vm->monitors; m; m = m->next)
                        monitor_close(m);
        if (arg.control_path && arg.control_fd >= 0)
                (void) unlink(arg.control_path);
        if (arg.pidfile)
                (void) unlink(arg.pidfile);
        if (arg.record)
                fclose(arg.record);
        return r < 0 ? EXIT_FAILURE : 0;
}
