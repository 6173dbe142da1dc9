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

typedef struct Lookup Lookup;

struct Discovery {
        sd_bus *bus;
        sd_event *event;
        DiscoveryCallbacks cb;
        void *userdata;
        sd_bus_slot *match_new, *match_removed, *match_owner;
        bool machined_running;
        char *machined_owner;       /* machined's unique name: the only sender whose signals count */
        Lookup *lookups;            /* machines whose scope is not ready yet */
};

struct Lookup {
        Discovery *d;
        char *name;
        char *path;
        unsigned attempts;
        sd_event_source *timer;
        Lookup *next;
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

        snprintf(p, sizeof p, "/proc/%d/cmdline", (int) pid);
        r = read_full_file(p, &cmdline, &len);
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

int cgroup_path_from_proc(const char *contents, char **ret) {
        for (const char *line = contents; line && *line;) {
                const char *end = strchrnul(line, '\n');
                if (strncmp(line, "0::", 3) == 0) {
                        const char *path = line + 3;
                        size_t n = (size_t) (end - path);
                        if (n == 0 || path[0] != '/')
                                return -EBADMSG;
                        char *s = strndup(path, n);
                        if (!s)
                                return -ENOMEM;
                        *ret = s;
                        return 0;
                }
                line = *end ? end + 1 : NULL;
        }
        return -ENOENT;
}

int pid_cgroup_path(pid_t pid, char **ret) {
        _cleanup_free_ char *contents = NULL;
        char p[64];
        int r;

        snprintf(p, sizeof p, "/proc/%d/cgroup", (int) pid);
        r = read_full_file(p, &contents, NULL);
        if (r < 0)
                return r;
        return cgroup_path_from_proc(contents, ret);
}

bool cgroup_path_is_under(const char *path, const char *control_group) {
        size_t n = strlen(control_group);

        /* "/" holds everything; otherwise a prefix must end at a path component. */
        while (n > 0 && control_group[n - 1] == '/')
                n--;
        if (n == 0)
                return path[0] == '/';
        return strncmp(path, control_group, n) == 0 && (path[n] == 0 || path[n] == '/');
}

/* --- machined / systemd1 client ------------------------------------------------------- */

static const char *scope_interface(const char *unit) {
        const char *dot = strrchr(unit, '.');
        if (dot && streq(dot, ".service"))
                return "org.freedesktop.systemd1.Service";
        if (dot && streq(dot, ".slice"))
                return "org.freedesktop.systemd1.Slice";
        return "org.freedesktop.systemd1.Scope";
}

/* Returns 0 done (ready or not a VM), -EAGAIN to retry later, other negative errno: give up. */
static int lookup_once(Discovery *d, const char *name, const char *path) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *id_reply = NULL;
        _cleanup_free_ char *class = NULL, *unit = NULL, *cgroup = NULL, *service = NULL;
        const char *unit_path;
        sd_id128_t id = SD_ID128_NULL;
        uint32_t leader = 0;
        int r;

        r = sd_bus_get_property_string(d->bus, MACHINED, path, MACHINED_MACHINE, "Class", &error, &class);
        if (r < 0)
                return log_debug_errno(r, "Machine %s vanished before lookup: %s", name, error.message);
        if (!streq(class, "vm"))
                return 0;   /* containers have no balloon */
        r = sd_bus_get_property_string(d->bus, MACHINED, path, MACHINED_MACHINE, "Unit", &error, &unit);
        if (r >= 0)
                r = sd_bus_get_property_trivial(d->bus, MACHINED, path, MACHINED_MACHINE, "Leader", &error, 'u', &leader);
        if (r >= 0)
                r = sd_bus_get_property_string(d->bus, MACHINED, path, MACHINED_MACHINE, "Service", &error, &service);
        if (r >= 0)
                r = sd_bus_get_property(d->bus, MACHINED, path, MACHINED_MACHINE, "Id", &error, &id_reply, "ay");
        if (r >= 0) {
                const void *id_bytes;
                size_t id_size = 0;
                r = sd_bus_message_read_array(id_reply, 'y', &id_bytes, &id_size);
                /* machined sends 16 bytes, or none when the registrant gave no Id */
                if (r >= 0 && id_size == sizeof id.bytes)
                        memcpy(id.bytes, id_bytes, sizeof id.bytes);
        }
        if (r < 0)
                return log_debug_errno(r, "Failed to read machine %s: %s", name, error.message);

        r = sd_bus_call_method(d->bus, SYSTEMD, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                               "GetUnit", &error, &reply, "s", unit);
        if (r < 0)
                return sd_bus_error_has_name(&error, "org.freedesktop.systemd1.NoSuchUnit") ? -EAGAIN :
                        log_warning_errno(r, "Failed to look up unit %s of machine %s: %s", unit, name, error.message);
        r = sd_bus_message_read(reply, "o", &unit_path);
        if (r < 0)
                return r;
        r = sd_bus_get_property_string(d->bus, SYSTEMD, unit_path, scope_interface(unit), "ControlGroup", &error, &cgroup);
        if (r < 0)
                return log_warning_errno(r, "Failed to read ControlGroup of %s: %s", unit, error.message);
        if (!cgroup[0])
                return -EAGAIN;   /* scope not started yet */

        d->cb.on_machine_new(&(DiscoveredMachine) {
                .name = name, .unit = unit, .control_group = cgroup, .leader = (pid_t) leader,
                .service = service, .id = id,
        }, d->userdata);
        return 0;
}

static Lookup *lookup_free(Lookup *l) {
        sd_event_source_disable_unref(l->timer);
        free(l->name);
        free(l->path);
        free(l);
        return NULL;
}

static void lookup_unlink(Discovery *d, Lookup *l) {
        for (Lookup **p = &d->lookups; *p; p = &(*p)->next)
                if (*p == l) {
                        *p = l->next;
                        break;
                }
}

static int on_lookup_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Lookup *l = userdata;
        Discovery *d = l->d;
        int r;

        r = lookup_once(d, l->name, l->path);
        if (r == -EAGAIN && ++l->attempts < LOOKUP_RETRIES) {
                sd_event_source_set_time_relative(s, LOOKUP_RETRY_USEC);
                sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                return 0;
        }
        if (r == -EAGAIN)
                log_warning("Machine %s: its scope never got a cgroup; not managing it.", l->name);
        lookup_unlink(d, l);
        lookup_free(l);
        return 0;
}

static void cancel_lookup(Discovery *d, const char *name) {
        for (Lookup *l = d->lookups; l; l = l->next)
                if (streq(l->name, name)) {
                        lookup_unlink(d, l);
                        lookup_free(l);
                        return;
                }
}

static int lookup(Discovery *d, const char *name, const char *path) {
        Lookup *l;
        int r;

        r = lookup_once(d, name, path);
        if (r != -EAGAIN)
                return r;

        cancel_lookup(d, name);
        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->d = d;
        l->name = strdup(name);
        l->path = strdup(path);
        if (!l->name || !l->path ||
            sd_event_add_time_relative(d->event, &l->timer, CLOCK_MONOTONIC, LOOKUP_RETRY_USEC, 0,
                                       on_lookup_timer, l) < 0) {
                lookup_free(l);
                return -ENOMEM;
        }
        l->next = d->lookups;
        d->lookups = l;
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

static void update_machined_owner(Discovery *d) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const char *unique = NULL;

        d->machined_owner = mfree(d->machined_owner);
        if (sd_bus_get_name_creds(d->bus, MACHINED, SD_BUS_CREDS_UNIQUE_NAME, &creds) >= 0 &&
            sd_bus_creds_get_unique_name(creds, &unique) >= 0 && unique)
                d->machined_owner = strdup(unique);
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

static int enumerate(Discovery *d) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        char **names = NULL;
        size_t n = 0;
        const char *name, *class, *service, *path;
        int r;

        update_machined_owner(d);
        r = sd_bus_call_method(d->bus, MACHINED, MACHINED_PATH, MACHINED_MANAGER, "ListMachines",
                               &error, &reply, NULL);
        if (r < 0) {
                d->machined_running = false;
                return log_warning_errno(r, "systemd-machined is not reachable (%s); waiting for it to appear.",
                                         error.message);
        }
        d->machined_running = true;

        r = sd_bus_message_enter_container(reply, 'a', "(ssso)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(reply, "(ssso)", &name, &class, &service, &path)) > 0) {
                if (!streq(class, "vm"))
                        continue;
                char **nn = realloc(names, (n + 1) * sizeof *names);
                if (!nn)
                        break;
                names = nn;
                names[n] = strdup(name);
                if (!names[n])
                        break;
                n++;
                (void) lookup(d, name, path);
        }
        if (r >= 0)
                d->cb.on_machines_synced(names, n, d->userdata);
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return r < 0 ? r : 0;
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
                (void) enumerate(d);
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

        (void) enumerate(d);
        return 0;
}

bool discovery_machined_running(const Discovery *d) {
        return d->machined_running;
}
