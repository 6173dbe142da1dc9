/* VM discovery through systemd-machined and systemd1, QMP socket from the QEMU command line. */
#include <limits.h>
#include <stdio.h>

#include "discovery.h"
#include "log.h"

#define MACHINED "org.freedesktop.machine1"
#define MACHINED_PATH "/org/freedesktop/machine1"
#define MACHINED_MANAGER "org.freedesktop.machine1.Manager"
#define MACHINED_MACHINE "org.freedesktop.machine1.Machine"
#define SYSTEMD "org.freedesktop.systemd1"

/* machined announces a machine as soon as it asked systemd for the scope; the scope's
 * cgroup exists a moment later. Retry the lookup for up to 2 s. */
#define LOOKUP_RETRY_USEC (50 * USEC_PER_MSEC)
#define LOOKUP_RETRIES 40
/* Lookups (three calls each) in flight at once: enough to hide the round trips at 1,000 VMs,
 * few enough to stay far below dbus-daemon's limit of pending replies per connection. */
#define LOOKUPS_IN_FLIGHT_MAX 32
/* Back-off when machined or systemd does not answer (a call timed out) or memory ran out. The
 * call that timed out already waited sd-bus's 25 s, so the first retry comes soon. */
#define LOOKUP_BACKOFF_MIN_USEC (1 * USEC_PER_SEC)
#define LOOKUP_BACKOFF_MAX_USEC (30 * USEC_PER_SEC)

typedef struct Lookup Lookup;

struct Discovery {
        sd_bus *bus;
        sd_event *event;
        DiscoveryCallbacks cb;
        void *userdata;
        sd_bus_slot *match_new, *match_removed, *match_owner;
        bool machined_running;
        char *machined_owner;       /* machined's unique name: the only sender whose signals count */
        Lookup *lookups;            /* machines being looked up (running, queued or waiting to retry) */
        Lookup *queue_head, *queue_tail;  /* waiting for a free slot, oldest first */
        unsigned n_in_flight;       /* lookups with a call in flight, <= LOOKUPS_IN_FLIGHT_MAX */
        sd_bus_slot *owner_slot;    /* GetNameOwner(machined) in flight */
        sd_bus_slot *enumerate_slot; /* ListMachines in flight */
        sd_event_source *enumerate_timer;  /* ListMachines again after a failure */
        unsigned enumerate_failures;
        unsigned n_enumerations;    /* machine lists read, for $AUTOBALLOON_TEST_ENUMERATION_ENOMEM */
        bool initial_listed;        /* the first ListMachines was answered (or failed for good) */
        bool initial_synced;        /* ... and its lookups are done: on_initial_sync was called */
};

struct Lookup {
        Discovery *d;
        char *name;
        char *path;                 /* machined's object path */
        char *unit;                 /* from machined, once read */
        char *service;              /* ... who registered it ("" if unset) */
        sd_id128_t id;              /* ... its Id (null if unset) */
        pid_t leader;
        unsigned attempts;          /* scope not ready yet */
        unsigned failures;          /* transient failures, for the back-off */
        bool running;               /* holds one of the LOOKUPS_IN_FLIGHT_MAX slots */
        bool queued;
        sd_bus_slot *slot;          /* the call in flight */
        sd_event_source *timer;     /* retry */
        Lookup *next;               /* in Discovery.lookups */
        Lookup *queue_next;         /* in the wait queue */
};

int cgroup2_mount_point(char **ret) {
        return mount_point_of("cgroup2", NULL, ret);
}

/* QEMU option values escape a literal comma as ",,". */
static char *qemu_opt_value(const char *s) {
        char *out = malloc(strlen(s) + 1), *o = out;

        if (!out)
                return NULL;
        for (; *s; s++) {
                if (*s == ',') {
                        if (s[1] != ',')
                                break;
                        s++;
                }
                *o++ = *s;
        }
        *o = 0;
        return out;
}

/* Finds "key=value" among the comma-separated options after the first one; returns a copy. */
static char *qemu_opt_get(const char *opts, const char *key) {
        size_t kl = strlen(key);

        for (const char *p = opts; p && *p;) {
                if (strncmp(p, key, kl) == 0 && p[kl] == '=')
                        return qemu_opt_value(p + kl + 1);
                /* to the next unescaped comma */
                for (; *p; p++)
                        if (*p == ',') {
                                if (p[1] == ',') {
                                        p++;
                                        continue;
                                }
                                p++;
                                break;
                        }
        }
        return NULL;
}

static bool qemu_opt_flag(const char *opts, const char *key) {
        _cleanup_free_ char *v = qemu_opt_get(opts, key);
        size_t kl = strlen(key);

        if (v)
                return streq(v, "on") || streq(v, "yes") || streq(v, "true");
        /* bare "server" is the old spelling of server=on */
        for (const char *p = opts; (p = strstr(p, key)); p += kl)
                if ((p == opts || p[-1] == ',') && (p[kl] == ',' || p[kl] == 0))
                        return true;
        return false;
}

typedef struct Candidate {
        char *path;
        bool preferred;
} Candidate;

static int resolve_path(const char *path, const char *cwd, char **ret) {
        if (path[0] == '/' || !cwd)
                *ret = strdup(path);
        else if (asprintf(ret, "%s/%s", cwd, path) < 0)
                *ret = NULL;
        return *ret ? 0 : -ENOMEM;
}

int qmp_socket_from_cmdline(const char *cmdline, size_t len, const char *cwd, char **ret) {
        const char *argv[4096];
        size_t argc = 0;
        Candidate best = {};
        int r = 0;

        for (size_t i = 0; i < len && argc < ELEMENTSOF(argv); i += strlen(cmdline + i) + 1)
                argv[argc++] = cmdline + i;
        /* /proc/PID/cmdline may lack the final NUL if the process rewrote it */
        if (len > 0 && cmdline[len - 1] != 0)
                return -EINVAL;

        for (size_t i = 0; i + 1 < argc; i++) {
                const char *opt = argv[i], *val = argv[i + 1];
                _cleanup_free_ char *path = NULL, *id = NULL;
                bool preferred = false;

                if (opt[0] == '-' && opt[1] == '-')
                        opt++;   /* QEMU accepts --opt as -opt */

                if (streq(opt, "-qmp") || streq(opt, "-qmp-pretty")) {
                        if (strncmp(val, "unix:", 5) != 0)
                                continue;   /* tcp:, stdio, ...: not for us */
                        const char *comma = val + 5;
                        _cleanup_free_ char *raw = qemu_opt_value(val + 5);
                        if (!raw)
                                return -ENOMEM;
                        /* options follow the path: need server mode (the default for -qmp unix:) */
                        for (; *comma; comma++)
                                if (*comma == ',' && comma[1] != ',')
                                        break;
                                else if (*comma == ',')
                                        comma++;
                        if (*comma == ',') {
                                _cleanup_free_ char *server = qemu_opt_get(comma + 1, "server");
                                if (server && (streq(server, "off") || streq(server, "no")))
                                        continue;
                        }
                        path = TAKE_PTR(raw);
                } else if (streq(opt, "-mon")) {
                        _cleanup_free_ char *chardev = qemu_opt_get(val, "chardev");
                        _cleanup_free_ char *mode = qemu_opt_get(val, "mode");
                        if (!chardev && strncmp(val, "chardev=", 8) == 0)
                                chardev = qemu_opt_value(val + 8);
                        if (!chardev || !mode || !streq(mode, "control"))
                                continue;
                        /* find the -chardev socket with that id */
                        for (size_t j = 0; j + 1 < argc; j++) {
                                const char *o = argv[j], *v = argv[j + 1];
                                if (o[0] == '-' && o[1] == '-')
                                        o++;
                                if (!streq(o, "-chardev") || strncmp(v, "socket,", 7) != 0)
                                        continue;
                                _cleanup_free_ char *cid = qemu_opt_get(v + 7, "id");
                                if (!cid || !streq(cid, chardev))
                                        continue;
                                _cleanup_free_ char *fd = qemu_opt_get(v + 7, "fd");
                                if (fd)
                                        break;   /* fd passed by the manager (libvirt): not reachable */
                                if (!qemu_opt_flag(v + 7, "server"))
                                        break;   /* QEMU connects out: nothing to connect to */
                                path = qemu_opt_get(v + 7, "path");
                                id = TAKE_PTR(cid);
                                break;
                        }
                        if (!path)
                                continue;
                } else
                        continue;

                preferred = strstr(path, "autoballoon") || (id && strstr(id, "autoballoon"));
                if (!best.path || (preferred && !best.preferred)) {
                        free(best.path);
                        r = resolve_path(path, cwd, &best.path);
                        if (r < 0)
                                return r;
                        best.preferred = preferred;
                }
        }
        if (!best.path)
                return -ENOENT;
        *ret = best.path;
        return 0;
}

int qmp_socket_from_pid(pid_t pid, char **ret) {
        _cleanup_free_ char *cmdline = NULL;
        char p[64], cwd[PATH_MAX];
        size_t len;
        ssize_t n;
        int r;

        r = read_proc_file(pid, "cmdline", &cmdline, &len);
        if (r < 0)
                return r;
        if (len == 0)
                return -ESRCH;   /* zombie or kernel thread */
        snprintf(p, sizeof p, "/proc/%d/cwd", (int) pid);
        n = readlink(p, cwd, sizeof cwd - 1);
        if (n >= 0)
                cwd[n] = 0;
        return qmp_socket_from_cmdline(cmdline, len, n >= 0 ? cwd : NULL, ret);
}

/* --- machined / systemd1 client ------------------------------------------------------- */

/* Every call below is asynchronous: a stopped or slow machined or systemd must never stall
 * the loop (PSI events, QMP, the bus API). A lookup is a chain of three calls (machined's
 * Machine.GetAll, systemd1's GetUnit, the unit's ControlGroup); at most
 * LOOKUPS_IN_FLIGHT_MAX chains run at once, the others wait their turn in order, so that an
 * enumeration of 1,000 VMs neither floods the bus's per-connection limits nor serialises. */
static const char *scope_interface(const char *unit) {
        const char *dot = strrchr(unit, '.');
        if (dot && streq(dot, ".service"))
                return "org.freedesktop.systemd1.Service";
        if (dot && streq(dot, ".slice"))
                return "org.freedesktop.systemd1.Slice";
        return "org.freedesktop.systemd1.Scope";
}

static int set_string(char **p, const char *s) {
        char *c = strdup(s);

        if (!c)
                return -ENOMEM;
        free(*p);
        *p = c;
        return 0;
}

static Lookup *lookup_free(Lookup *l) {
        sd_event_source_disable_unref(l->timer);
        sd_bus_slot_unref(l->slot);
        free(l->name);
        free(l->path);
        free(l->unit);
        free(l->service);
        free(l);
        return NULL;
}

static void lookup_dequeue(Discovery *d, Lookup *l) {
        Lookup *prev = NULL;

        if (!l->queued)
                return;
        for (Lookup *q = d->queue_head; q; prev = q, q = q->queue_next)
                if (q == l) {
                        if (prev)
                                prev->queue_next = l->queue_next;
                        else
                                d->queue_head = l->queue_next;
                        if (d->queue_tail == l)
                                d->queue_tail = prev;
                        break;
                }
        l->queued = false;
        l->queue_next = NULL;
}

static void lookup_unlink(Discovery *d, Lookup *l) {
        for (Lookup **p = &d->lookups; *p; p = &(*p)->next)
                if (*p == l) {
                        *p = l->next;
                        break;
                }
        lookup_dequeue(d, l);
}

static void lookup_release(Discovery *d, Lookup *l) {
        if (!l->running)
                return;
        l->running = false;
        l->slot = sd_bus_slot_unref(l->slot);
        d->n_in_flight--;
}

static void discovery_pump(Discovery *d);

static void maybe_initial_sync(Discovery *d) {
        if (d->initial_synced || !d->initial_listed || d->lookups)
                return;
        d->initial_synced = true;
        if (d->cb.on_initial_sync)
                d->cb.on_initial_sync(d->userdata);
}

static void lookup_done(Discovery *d, Lookup *l) {
        lookup_release(d, l);
        lookup_unlink(d, l);
        lookup_free(l);
        discovery_pump(d);
        maybe_initial_sync(d);
}

static int on_lookup_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* Try again after delay_usec, giving the in-flight slot to the next lookup meanwhile. */
static void lookup_retry(Discovery *d, Lookup *l, usec_t delay_usec) {
        int r;

        lookup_release(d, l);
        if (l->timer)
                r = sd_event_source_set_time_relative(l->timer, delay_usec);
        else
                r = sd_event_add_time_relative(d->event, &l->timer, CLOCK_MONOTONIC, delay_usec, 0,
                                               on_lookup_timer, l);
        if (r >= 0)
                r = sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
        if (r < 0) {
                log_error_errno(r, "Machine %s: cannot schedule its lookup again: %m", l->name);
                lookup_done(d, l);
                return;
        }
        discovery_pump(d);
}

/* Transient failures (machined or systemd stopped or overloaded, no memory): back off and try
 * again, for as long as the machine exists. Anything else is final for this machine. */
static bool error_is_transient(const sd_bus_error *e, int r) {
        int err = e && sd_bus_error_is_set(e) ? sd_bus_error_get_errno(e) : -r;

        return err == ETIMEDOUT || err == ENOMEM || err == ENOBUFS || err == EAGAIN;
}

static void lookup_failed(Discovery *d, Lookup *l, const sd_bus_error *e, int r, const char *what) {
        if (error_is_transient(e, r)) {
                usec_t delay = LOOKUP_BACKOFF_MIN_USEC << MIN(l->failures, 16U);

                delay = MIN(delay, LOOKUP_BACKOFF_MAX_USEC);
                l->failures++;
                log_warning("Machine %s: %s failed (%s); trying again in %llu ms.", l->name, what,
                            e && e->message ? e->message : strerror(-r),
                            (unsigned long long) (delay / USEC_PER_MSEC));
                lookup_retry(d, l, delay);
                return;
        }
        log_warning("Machine %s: %s failed: %s; not managing it.", l->name, what,
                    e && e->message ? e->message : strerror(-r));
        lookup_done(d, l);
}

/* The scope exists but is not started yet (machined announces a machine as soon as it asked
 * systemd for the scope): retry soon, for a while. */
static void lookup_not_ready(Discovery *d, Lookup *l) {
        if (++l->attempts < LOOKUP_RETRIES) {
                lookup_retry(d, l, LOOKUP_RETRY_USEC);
                return;
        }
        log_warning("Machine %s: its scope never got a cgroup; not managing it.", l->name);
        lookup_done(d, l);
}

static int on_control_group(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Lookup *l = userdata;
        Discovery *d = l->d;
        const char *cgroup;
        int r;

        l->slot = sd_bus_slot_unref(l->slot);
        if (sd_bus_message_is_method_error(reply, NULL)) {
                lookup_failed(d, l, sd_bus_message_get_error(reply), -EIO, "reading its unit's ControlGroup");
                return 0;
        }
        r = sd_bus_message_read(reply, "v", "s", &cgroup);
        if (r < 0) {
                lookup_failed(d, l, NULL, r, "reading its unit's ControlGroup");
                return 0;
        }
        if (!cgroup[0]) {
                lookup_not_ready(d, l);
                return 0;
        }
        d->cb.on_machine_new(&(DiscoveredMachine) {
                .name = l->name, .unit = l->unit, .control_group = cgroup, .leader = l->leader,
                .service = l->service ?: "", .id = l->id,
        }, d->userdata);
        lookup_done(d, l);
        return 0;
}

static int on_get_unit(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Lookup *l = userdata;
        Discovery *d = l->d;
        const char *unit_path;
        int r;

        l->slot = sd_bus_slot_unref(l->slot);
        if (sd_bus_message_is_method_error(reply, "org.freedesktop.systemd1.NoSuchUnit")) {
                lookup_not_ready(d, l);
                return 0;
        }
        if (sd_bus_message_is_method_error(reply, NULL)) {
                lookup_failed(d, l, sd_bus_message_get_error(reply), -EIO, "looking up its unit");
                return 0;
        }
        r = sd_bus_message_read(reply, "o", &unit_path);
        if (r >= 0)
                r = sd_bus_call_method_async(d->bus, &l->slot, SYSTEMD, unit_path, "org.freedesktop.DBus.Properties",
                                             "Get", on_control_group, l, "ss", scope_interface(l->unit),
                                             "ControlGroup");
        if (r < 0)
                lookup_failed(d, l, NULL, r, "asking systemd for its unit's ControlGroup");
        return 0;
}

static int on_machine_properties(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Lookup *l = userdata;
        Discovery *d = l->d;
        _cleanup_free_ char *class = NULL, *unit = NULL, *service = NULL;
        const char *key;
        int r;

        l->slot = sd_bus_slot_unref(l->slot);
        if (sd_bus_message_is_method_error(reply, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(reply);
                if (error_is_transient(e, -EIO))
                        lookup_failed(d, l, e, -EIO, "reading it from systemd-machined");
                else {
                        /* UnknownObject, NoSuchMachine: it went away before we asked */
                        log_debug("Machine %s vanished before lookup: %s", l->name, e->message);
                        lookup_done(d, l);
                }
                return 0;
        }

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        break;
                if (streq(key, "Class") || streq(key, "Unit") || streq(key, "Service")) {
                        const char *s;
                        r = sd_bus_message_read(reply, "v", "s", &s);
                        if (r >= 0 && set_string(streq(key, "Class") ? &class : streq(key, "Unit") ? &unit : &service,
                                                 s) < 0)
                                r = -ENOMEM;
                } else if (streq(key, "Id")) {
                        const void *id_bytes;
                        size_t id_size = 0;
                        r = sd_bus_message_enter_container(reply, 'v', "ay");
                        if (r >= 0)
                                r = sd_bus_message_read_array(reply, 'y', &id_bytes, &id_size);
                        /* machined sends 16 bytes, or none when the registrant gave no Id */
                        if (r >= 0 && id_size == sizeof l->id.bytes)
                                memcpy(l->id.bytes, id_bytes, sizeof l->id.bytes);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                } else if (streq(key, "Leader")) {
                        uint32_t leader;
                        r = sd_bus_message_read(reply, "v", "u", &leader);
                        l->leader = (pid_t) leader;
                } else
                        r = sd_bus_message_skip(reply, "v");
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r < 0 || !class || !unit) {
                lookup_failed(d, l, NULL, r < 0 ? r : -EBADMSG, "reading it from systemd-machined");
                return 0;
        }
        if (!streq(class, "vm")) {
                lookup_done(d, l);   /* containers have no balloon */
                return 0;
        }
        free(l->unit);
        l->unit = TAKE_PTR(unit);
        free(l->service);
        l->service = TAKE_PTR(service);
        r = sd_bus_call_method_async(d->bus, &l->slot, SYSTEMD, "/org/freedesktop/systemd1",
                                     "org.freedesktop.systemd1.Manager", "GetUnit", on_get_unit, l, "s", l->unit);
        if (r < 0)
                lookup_failed(d, l, NULL, r, "asking systemd for its unit");
        return 0;
}

/* Starts the chain if a slot is free, else queues it. */
static void lookup_run(Discovery *d, Lookup *l) {
        int r;

        if (l->running || l->queued)
                return;
        if (d->n_in_flight >= LOOKUPS_IN_FLIGHT_MAX) {
                l->queued = true;
                if (d->queue_tail)
                        d->queue_tail->queue_next = l;
                else
                        d->queue_head = l;
                d->queue_tail = l;
                return;
        }
        l->running = true;
        d->n_in_flight++;
        r = sd_bus_call_method_async(d->bus, &l->slot, MACHINED, l->path, "org.freedesktop.DBus.Properties",
                                     "GetAll", on_machine_properties, l, "s", MACHINED_MACHINE);
        if (r < 0)
                lookup_failed(d, l, NULL, r, "asking systemd-machined for it");
}

static void discovery_pump(Discovery *d) {
        while (d->queue_head && d->n_in_flight < LOOKUPS_IN_FLIGHT_MAX) {
                Lookup *l = d->queue_head;
                lookup_dequeue(d, l);
                lookup_run(d, l);
        }
}

static int on_lookup_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Lookup *l = userdata;

        lookup_run(l->d, l);
        return 0;
}

static Lookup *find_lookup(Discovery *d, const char *name) {
        for (Lookup *l = d->lookups; l; l = l->next)
                if (streq(l->name, name))
                        return l;
        return NULL;
}

static void cancel_lookup(Discovery *d, const char *name) {
        Lookup *l = find_lookup(d, name);

        if (l)
                lookup_done(d, l);
}

static int lookup(Discovery *d, const char *name, const char *path) {
        Lookup *l;

        /* A second MachineNew (or an enumeration) for a machine being looked up starts over:
         * it may be a new VM under the same name. */
        cancel_lookup(d, name);
        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->d = d;
        l->name = strdup(name);
        l->path = strdup(path);
        if (!l->name || !l->path) {
                lookup_free(l);
                return -ENOMEM;
        }
        l->next = d->lookups;
        d->lookups = l;
        lookup_run(d, l);
        return 0;
}

/* A signal "from" a well-known name is acted on only if it comes from that name's current
 * owner. sd-bus cannot check a well-known sender on a dbus-daemon bus itself (it does not know
 * who owns the name), and the system bus lets anyone send a unicast signal to anyone: an
 * unprivileged user could otherwise make the daemon drop a VM with a forged MachineRemoved, or
 * swap one VM's identity for another's with a forged MachineNew. */
static bool from_machined(Discovery *d, sd_bus_message *m) {
        const char *sender = sd_bus_message_get_sender(m);

        if (d->machined_owner && streq_ptr(sender, d->machined_owner))
                return true;
        log_warning("Ignoring %s from %s: not systemd-machined (%s).", strempty(sd_bus_message_get_member(m)),
                    strempty(sender), d->machined_owner ?: "not on the bus");
        return false;
}

static int on_machine_new(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Discovery *d = userdata;
        const char *name, *path;

        if (!from_machined(d, m) || sd_bus_message_read(m, "so", &name, &path) < 0)
                return 0;
        (void) lookup(d, name, path);
        return 0;
}

static int on_machine_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Discovery *d = userdata;
        const char *name, *path;

        if (!from_machined(d, m) || sd_bus_message_read(m, "so", &name, &path) < 0)
                return 0;
        cancel_lookup(d, name);
        d->cb.on_machine_removed(name, d->userdata);
        return 0;
}

static int on_machined_owner(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Discovery *d = userdata;
        const char *unique;

        d->owner_slot = sd_bus_slot_unref(d->owner_slot);
        if (sd_bus_message_is_method_error(reply, NULL) || sd_bus_message_read(reply, "s", &unique) < 0)
                return 0;   /* not on the bus: NameOwnerChanged will say when it is */
        if (set_string(&d->machined_owner, unique) < 0)
                log_oom();
        return 0;
}

static void schedule_enumerate(Discovery *d);

static int on_list_machines(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Discovery *d = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        char **names = NULL;
        size_t n = 0;
        const char *name, *class, *service, *path;
        int r;

        d->enumerate_slot = sd_bus_slot_unref(d->enumerate_slot);
        if (e) {
                if (error_is_transient(e, -EIO)) {
                        log_warning("systemd-machined did not list its machines (%s); asking again.", e->message);
                        schedule_enumerate(d);
                } else {
                        d->machined_running = false;
                        log_warning("systemd-machined is not reachable (%s); waiting for it to appear.", e->message);
                        d->initial_listed = true;
                        maybe_initial_sync(d);
                }
                return 0;
        }
        d->machined_running = true;
        d->enumerate_failures = 0;

        /* For the tests only: the Nth list fails after its first VM, as an allocation would. */
        const char *inject = secure_getenv("AUTOBALLOON_TEST_ENUMERATION_ENOMEM");
        bool fail_after_one = inject && strtoul(inject, NULL, 10) == ++d->n_enumerations;

        r = sd_bus_message_enter_container(reply, 'a', "(ssso)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(ssso)", &name, &class, &service, &path)) > 0) {
                if (!streq(class, "vm"))
                        continue;
                if (fail_after_one && n == 1) {
                        r = -ENOMEM;
                        break;
                }
                char **nn = realloc(names, (n + 1) * sizeof *names);
                if (!nn) {
                        r = -ENOMEM;
                        break;
                }
                names = nn;
                names[n] = strdup(name);
                if (!names[n]) {
                        r = -ENOMEM;
                        break;
                }
                n++;
                r = lookup(d, name, path);
        }
        /* Only a complete list may make the manager forget machines: a failure half-way
         * (no memory) must not read as "these VMs are gone". */
        if (r >= 0) {
                d->cb.on_machines_synced(names, n, d->userdata);
                d->initial_listed = true;
        } else {
                log_warning_errno(r, "Failed to read systemd-machined's machine list, keeping every known machine and asking again: %m");
                schedule_enumerate(d);
        }
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        maybe_initial_sync(d);
        return 0;
}

static void enumerate(Discovery *d) {
        int r;

        d->owner_slot = sd_bus_slot_unref(d->owner_slot);
        d->enumerate_slot = sd_bus_slot_unref(d->enumerate_slot);
        r = sd_bus_call_method_async(d->bus, &d->owner_slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetNameOwner", on_machined_owner, d, "s", MACHINED);
        if (r >= 0)
                r = sd_bus_call_method_async(d->bus, &d->enumerate_slot, MACHINED, MACHINED_PATH, MACHINED_MANAGER,
                                             "ListMachines", on_list_machines, d, NULL);
        if (r < 0) {
                log_warning_errno(r, "Failed to ask systemd-machined for its machines, trying again: %m");
                schedule_enumerate(d);
        }
}

static int on_enumerate_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        enumerate(userdata);
        return 0;
}

static void schedule_enumerate(Discovery *d) {
        usec_t delay = MIN(LOOKUP_BACKOFF_MIN_USEC << MIN(d->enumerate_failures, 16U), LOOKUP_BACKOFF_MAX_USEC);
        int r;

        d->enumerate_failures++;
        if (d->enumerate_timer)
                r = sd_event_source_set_time_relative(d->enumerate_timer, delay);
        else
                r = sd_event_add_time_relative(d->event, &d->enumerate_timer, CLOCK_MONOTONIC, delay, 0,
                                               on_enumerate_timer, d);
        if (r >= 0)
                r = sd_event_source_set_enabled(d->enumerate_timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_error_errno(r, "Cannot schedule another enumeration of machines: %m");
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Discovery *d = userdata;
        const char *name, *old_owner, *new_owner;

        /* Only the bus itself speaks for org.freedesktop.DBus: a unicast NameOwnerChanged from a
         * client would otherwise announce a fake machined. */
        if (!streq_ptr(sd_bus_message_get_sender(m), "org.freedesktop.DBus")) {
                log_warning("Ignoring NameOwnerChanged from %s: not the bus.", strempty(sd_bus_message_get_sender(m)));
                return 0;
        }
        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !streq(name, MACHINED))
                return 0;
        free(d->machined_owner);
        d->machined_owner = new_owner[0] ? strdup(new_owner) : NULL;
        if (new_owner[0]) {
                log_info("systemd-machined (re)appeared on the bus; re-enumerating machines.");
                d->enumerate_failures = 0;
                enumerate(d);
        } else {
                d->machined_running = false;
                log_warning("systemd-machined left the bus; keeping the known machines until it returns.");
        }
        return 0;
}

int discovery_new(Discovery **ret, sd_bus *bus, sd_event *e, const DiscoveryCallbacks *cb, void *userdata) {
        Discovery *d = calloc(1, sizeof *d);

        if (!d)
                return -ENOMEM;
        d->bus = sd_bus_ref(bus);
        d->event = sd_event_ref(e);
        d->cb = *cb;
        d->userdata = userdata;
        *ret = d;
        return 0;
}

Discovery *discovery_free(Discovery *d) {
        if (!d)
                return NULL;
        while (d->lookups) {
                Lookup *l = d->lookups;
                d->lookups = l->next;
                lookup_free(l);
        }
        sd_bus_slot_unref(d->owner_slot);
        sd_bus_slot_unref(d->enumerate_slot);
        sd_event_source_disable_unref(d->enumerate_timer);
        sd_bus_slot_unref(d->match_new);
        sd_bus_slot_unref(d->match_removed);
        sd_bus_slot_unref(d->match_owner);
        free(d->machined_owner);
        sd_bus_unref(d->bus);
        sd_event_unref(d->event);
        free(d);
        return NULL;
}

int discovery_start(Discovery *d) {
        int r;

        r = sd_bus_match_signal(d->bus, &d->match_new, MACHINED, MACHINED_PATH, MACHINED_MANAGER,
                                "MachineNew", on_machine_new, d);
        if (r >= 0)
                r = sd_bus_match_signal(d->bus, &d->match_removed, MACHINED, MACHINED_PATH, MACHINED_MANAGER,
                                        "MachineRemoved", on_machine_removed, d);
        if (r >= 0)
                r = sd_bus_add_match(d->bus, &d->match_owner,
                                     "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',"
                                     "arg0='" MACHINED "'", on_owner_changed, d);
        if (r < 0)
                return log_error_errno(r, "Failed to subscribe to systemd-machined's signals: %m");

        enumerate(d);
        return 0;
}

bool discovery_machined_running(const Discovery *d) {
        return d->machined_running;
}

/* --- a unit's ControlGroup, for HostPressureSource= and HostMemorySource= ------------------ */

struct UnitCgroupQuery {
        sd_bus *bus;
        char *unit;
        sd_bus_slot *slot;
        UnitCgroupHandler handler;
        void *userdata;
};

UnitCgroupQuery *unit_cgroup_query_free(UnitCgroupQuery *q) {
        if (!q)
                return NULL;
        sd_bus_slot_unref(q->slot);
        sd_bus_unref(q->bus);
        free(q->unit);
        free(q);
        return NULL;
}

/* The handler may free the query: nothing touches it afterwards. */
static void unit_cgroup_done(UnitCgroupQuery *q, int r, const char *cgroup, const char *message) {
        q->slot = sd_bus_slot_unref(q->slot);
        q->handler(q, r, cgroup, message, q->userdata);
}

static int on_unit_cgroup(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        UnitCgroupQuery *q = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        const char *cgroup;
        int r;

        if (e) {
                unit_cgroup_done(q, -(sd_bus_error_get_errno(e) ?: EIO), NULL, e->message);
                return 0;
        }
        r = sd_bus_message_read(reply, "v", "s", &cgroup);
        if (r < 0)
                unit_cgroup_done(q, r, NULL, "bad reply from systemd");
        else if (!cgroup[0])
                unit_cgroup_done(q, -ENOENT, NULL, "unit not active");
        else
                unit_cgroup_done(q, 0, cgroup, NULL);
        return 0;
}

static int on_unit_path(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        UnitCgroupQuery *q = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        const char *path;
        int r;

        q->slot = sd_bus_slot_unref(q->slot);
        if (e) {
                unit_cgroup_done(q, -(sd_bus_error_get_errno(e) ?: EIO), NULL, e->message);
                return 0;
        }
        r = sd_bus_message_read(reply, "o", &path);
        if (r >= 0)
                r = sd_bus_call_method_async(q->bus, &q->slot, SYSTEMD, path, "org.freedesktop.DBus.Properties", "Get",
                                             on_unit_cgroup, q, "ss", scope_interface(q->unit), "ControlGroup");
        if (r < 0)
                unit_cgroup_done(q, r, NULL, "cannot ask systemd");
        return 0;
}

int unit_cgroup_query(sd_bus *bus, const char *unit, UnitCgroupHandler handler, void *userdata,
                      UnitCgroupQuery **ret) {
        UnitCgroupQuery *q = calloc(1, sizeof *q);
        int r;

        if (!q)
                return -ENOMEM;
        q->bus = sd_bus_ref(bus);
        q->handler = handler;
        q->userdata = userdata;
        q->unit = strdup(unit);
        if (!q->unit) {
                unit_cgroup_query_free(q);
                return -ENOMEM;
        }
        r = sd_bus_call_method_async(bus, &q->slot, SYSTEMD, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                     "GetUnit", on_unit_path, q, "s", unit);
        if (r < 0) {
                unit_cgroup_query_free(q);
                return r;
        }
        *ret = q;
        return 0;
}
