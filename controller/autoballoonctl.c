/* autoballoonctl: the command line face of org.autoballoon1 (list, status, show, set-property,
 * resize, top, reload), as oomctl and machinectl are for their daemons. */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <libsmartcols/libsmartcols.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "bus-names.h"
#include "knob.h"
#include "knob-bus.h"
#include "log.h"

/* systemctl's exit codes */
#define EXIT_USAGE 2
#define EXIT_NO_SUCH_MACHINE 4

/* as systemctl: a person at a terminal may authenticate to polkit through this agent */
#define POLKIT_AGENT_PATH "/usr/bin/pkttyagent"

/* top: changes closer together than this are drawn once */
#define TOP_REDRAW_DELAY_USEC (100 * USEC_PER_MSEC)

typedef enum JsonMode {
        JSON_OFF,
        JSON_PRETTY,
        JSON_SHORT,
} JsonMode;

static JsonMode arg_json = JSON_OFF;
static bool arg_no_pager = false;
static bool arg_legend = true;
static bool arg_runtime = false;
static bool arg_value = false;
static bool arg_ask_password = true;
static char **arg_properties = NULL;   /* -p, NULL-terminated */
static size_t arg_n_properties = 0;

static pid_t pager_pid = 0;
static pid_t agent_pid = 0;

/* --- small helpers --------------------------------------------------------------------- */

static void strv_free(char **l) {
        for (char **p = l; p && *p; p++)
                free(*p);
        free(l);
}

static int strv_push(char ***l, size_t *n, const char *s) {
        char **t = realloc(*l, (*n + 2) * sizeof *t);

        if (!t)
                return -ENOMEM;
        *l = t;
        t[*n] = strdup(s);
        if (!t[*n])
                return -ENOMEM;
        t[++*n] = NULL;
        return 0;
}

static bool property_wanted(const char *name) {
        if (!arg_properties)
                return true;
        for (char **p = arg_properties; *p; p++)
                if (streq(*p, name))
                        return true;
        return false;
}

/* Error of a failed call → exit code: 4 for an unknown machine, 1 otherwise. */
static int bus_error_exit(const sd_bus_error *e, int r, const char *what) {
        log_error("Failed to %s: %s", what, e && e->message ? e->message : strerror(r < 0 ? -r : r));
        return sd_bus_error_has_name(e, BUS_ERROR_NO_SUCH_MACHINE) ? EXIT_NO_SUCH_MACHINE : EXIT_FAILURE;
}

/* --- pager ------------------------------------------------------------------------------ */

static void pager_open(void) {
        const char *pager;
        int fds[2];

        if (arg_no_pager || !isatty(STDOUT_FILENO))
                return;
        pager = getenv("AUTOBALLOON_PAGER") ?: getenv("PAGER");
        if (pager && (!*pager || streq(pager, "cat")))
                return;
        if (pipe2(fds, O_CLOEXEC) < 0)
                return;
        fflush(stdout);
        pager_pid = fork();
        if (pager_pid < 0) {
                pager_pid = 0;
                close(fds[0]);
                close(fds[1]);
                return;
        }
        if (pager_pid == 0) {
                dup2(fds[0], STDIN_FILENO);
                /* as systemd: quit if one screen, raw colours, no wrapping, keep the screen */
                setenv("LESS", getenv("LESS") ?: "FRSXMK", 1);
                if (pager)
                        execlp("/bin/sh", "sh", "-c", pager, (char *) NULL);
                execlp("less", "less", (char *) NULL);
                execlp("more", "more", (char *) NULL);
                /* no pager at all: copy through */
                execlp("cat", "cat", (char *) NULL);
                _exit(EXIT_FAILURE);
        }
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
}

static void pager_close(void) {
        if (pager_pid <= 0)
                return;
        fflush(stdout);
        fclose(stdout);
        (void) waitpid(pager_pid, NULL, 0);
        pager_pid = 0;
}

/* --- polkit agent ---------------------------------------------------------------------------- */

/* For the verbs that change something, when not root and at a terminal: start pkttyagent,
 * wait until it has registered (it closes the notify fd), and let the daemon ask polkit to
 * authenticate us interactively. Failing to start it just means no prompt. */
static void polkit_agent_open(sd_bus *bus) {
        char notify_fd[16];
        int fds[2];

        if (!arg_ask_password || geteuid() == 0 || !isatty(STDIN_FILENO) || access(POLKIT_AGENT_PATH, X_OK) < 0)
                return;
        if (pipe2(fds, O_CLOEXEC) < 0)
                return;
        agent_pid = fork();
        if (agent_pid < 0) {
                agent_pid = 0;
                close(fds[0]);
                close(fds[1]);
                return;
        }
        if (agent_pid == 0) {
                /* the write end must survive exec: dup it without O_CLOEXEC */
                int fd = dup(fds[1]);
                if (fd < 0)
                        _exit(EXIT_FAILURE);
                snprintf(notify_fd, sizeof notify_fd, "%d", fd);
                execl(POLKIT_AGENT_PATH, POLKIT_AGENT_PATH, "--notify-fd", notify_fd, "--fallback", (char *) NULL);
                _exit(EXIT_FAILURE);
        }
        close(fds[1]);
        (void) poll(&(struct pollfd) { .fd = fds[0], .events = POLLHUP }, 1, -1);
        close(fds[0]);
        (void) sd_bus_set_allow_interactive_authorization(bus, true);
}

static void polkit_agent_close(void) {
        if (agent_pid <= 0)
                return;
        (void) kill(agent_pid, SIGTERM);
        (void) waitpid(agent_pid, NULL, 0);
        agent_pid = 0;
}

/* --- reading the daemon's objects --------------------------------------------------------- */

typedef struct MachineInfo {
        char *path;
        char *name;
        char *state;
        char *state_reason;
        char *scope_pressure;
        char *backend;
        uint64_t ram_bytes, actual_bytes, target_bytes, min_bytes, max_bytes, available_bytes;
        int free_page_reporting;     /* sd-bus reads 'b' into an int */
} MachineInfo;

typedef struct HostInfo {
        char *pressure;
        double some_avg10, full_avg10;
} HostInfo;

static void machine_info_done(MachineInfo *i) {
        free(i->path);
        free(i->name);
        free(i->state);
        free(i->state_reason);
        free(i->scope_pressure);
        free(i->backend);
}

static void machine_infos_free(MachineInfo *l, size_t n) {
        for (size_t i = 0; i < n; i++)
                machine_info_done(l + i);
        free(l);
}

static int read_string_variant(sd_bus_message *m, char **ret) {
        const char *s;
        int r = sd_bus_message_read(m, "v", "s", &s);
        if (r < 0)
                return r;
        free(*ret);
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

/* One a{sv} of org.autoballoon1.Machine into i; other properties are skipped. */
static int read_machine_properties(sd_bus_message *m, MachineInfo *i) {
        static const struct {
                const char *name;
                size_t offset;
        } sizes[] = {
                { "MemorySize", offsetof(MachineInfo, ram_bytes) },
                { "ActualMemory", offsetof(MachineInfo, actual_bytes) },
                { "TargetMemory", offsetof(MachineInfo, target_bytes) },
                { "EffectiveMinimumMemory", offsetof(MachineInfo, min_bytes) },
                { "EffectiveMaximumMemory", offsetof(MachineInfo, max_bytes) },
                { "GuestAvailableMemory", offsetof(MachineInfo, available_bytes) },
        };
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *name;
                bool done = false;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                for (size_t k = 0; k < ELEMENTSOF(sizes) && !done; k++)
                        if (streq(name, sizes[k].name)) {
                                r = sd_bus_message_read(m, "v", "t", (uint8_t *) i + sizes[k].offset);
                                done = true;
                        }
                if (!done) {
                        if (streq(name, "Name"))
                                r = read_string_variant(m, &i->name);
                        else if (streq(name, "State"))
                                r = read_string_variant(m, &i->state);
                        else if (streq(name, "StateReason"))
                                r = read_string_variant(m, &i->state_reason);
                        else if (streq(name, "ScopePressure"))
                                r = read_string_variant(m, &i->scope_pressure);
                        else if (streq(name, "Backend"))
                                r = read_string_variant(m, &i->backend);
                        else if (streq(name, "FreePageReporting"))
                                r = sd_bus_message_read(m, "v", "b", &i->free_page_reporting);
                        else
                                r = sd_bus_message_skip(m, "v");
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int compare_machines(const void *a, const void *b) {
        const MachineInfo *x = a, *y = b;
        return strcmp(x->name ?: "", y->name ?: "");
}

/* Every machine in one round trip (GetManagedObjects), sorted by name. */
static int fetch_machines(sd_bus *bus, MachineInfo **ret, size_t *ret_n, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        MachineInfo *l = NULL;
        size_t n = 0;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, BUS_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                               error, &reply, NULL);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        if (r < 0)
                goto fail;
        while ((r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                const char *path;

                r = sd_bus_message_read(reply, "o", &path);
                if (r < 0)
                        goto fail;
                r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
                if (r < 0)
                        goto fail;
                while ((r = sd_bus_message_enter_container(reply, 'e', "sa{sv}")) > 0) {
                        const char *iface;

                        r = sd_bus_message_read(reply, "s", &iface);
                        if (r < 0)
                                goto fail;
                        if (streq(iface, BUS_MACHINE_IFACE)) {
                                MachineInfo *t = realloc(l, (n + 1) * sizeof *t);
                                if (!t) {
                                        r = -ENOMEM;
                                        goto fail;
                                }
                                l = t;
                                l[n] = (MachineInfo) { .path = strdup(path) };
                                r = read_machine_properties(reply, &l[n++]);
                        } else
                                r = sd_bus_message_skip(reply, "a{sv}");
                        if (r < 0)
                                goto fail;
                        r = sd_bus_message_exit_container(reply);
                        if (r < 0)
                                goto fail;
                }
                if (r < 0)
                        goto fail;
                r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        goto fail;
        }
        if (r < 0)
                goto fail;
        if (n > 0)
                qsort(l, n, sizeof *l, compare_machines);
        *ret = l;
        *ret_n = n;
        return 0;
fail:
        machine_infos_free(l, n);
        return r;
}

static int fetch_host(sd_bus *bus, HostInfo *ret, sd_bus_error *error) {
        int r;

        r = sd_bus_get_property_string(bus, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE, "HostPressure", error,
                                       &ret->pressure);
        if (r >= 0)
                r = sd_bus_get_property_trivial(bus, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE, "HostPressureSomeAvg10",
                                                error, 'd', &ret->some_avg10);
        if (r >= 0)
                r = sd_bus_get_property_trivial(bus, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE, "HostPressureFullAvg10",
                                                error, 'd', &ret->full_avg10);
        return r;
}

/* GetMachine(name): the object path, or exit code 4 when the daemon does not know it. */
static int machine_path(sd_bus *bus, const char *name, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE, "GetMachine", &error, &reply, "s", name);
        if (r < 0)
                return -bus_error_exit(&error, r, "look up the machine");
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0 || !(*ret = strdup(path)))
                return -EXIT_FAILURE;
        return 0;
}

/* --- tables -------------------------------------------------------------------------------- */

static struct libscols_table *table_new(const char *json_name) {
        struct libscols_table *t = scols_new_table();

        if (!t)
                return NULL;
        if (arg_json != JSON_OFF) {
                scols_table_enable_json(t, 1);
                scols_table_set_name(t, json_name);
        } else if (!arg_legend)
                scols_table_enable_noheadings(t, 1);
        return t;
}

/* Column name is the header; JSON keys are the same in lower case (libsmartcols does that). */
static int table_add_columns(struct libscols_table *t, const char *const *names, const bool *numeric, size_t n) {
        for (size_t i = 0; i < n; i++) {
                struct libscols_column *c = scols_table_new_column(t, names[i], 0, numeric[i] ? SCOLS_FL_RIGHT : 0);
                if (!c)
                        return -ENOMEM;
                if (numeric[i])
                        scols_column_set_json_type(c, SCOLS_JSON_NUMBER);
        }
        return 0;
}

/* yes/no for a person, true/false in JSON (the column's JSON type is boolean). */
static int table_set_bool_column(struct libscols_table *t, size_t col) {
        struct libscols_column *c = scols_table_get_column(t, col);

        return c ? scols_column_set_json_type(c, SCOLS_JSON_BOOLEAN) : -EINVAL;
}

/* A size as a human reads it ("512M"), or the byte count in JSON. */
static void set_size(struct libscols_line *l, size_t col, uint64_t bytes, bool known) {
        char buf[32];

        if (arg_json != JSON_OFF) {
                if (known)
                        snprintf(buf, sizeof buf, "%" PRIu64, bytes);
                else
                        strcpy(buf, "null");
        } else if (!known)
                strcpy(buf, "-");
        else
                format_size(buf, sizeof buf, bytes);
        scols_line_set_data(l, col, buf);
}

static int print_status_table(MachineInfo *l, size_t n, char **names) {
        static const char *const cols[] = { "MACHINE", "STATE", "ACTUAL", "TARGET", "MIN", "MAX", "PRESSURE", "FPR",
                                            "BACKEND" };
        static const bool numeric[] = { false, false, true, true, true, true, false, false, false };
        struct libscols_table *t = table_new("machines");
        size_t shown = 0;
        int r;

        if (!t || table_add_columns(t, cols, numeric, ELEMENTSOF(cols)) < 0 || table_set_bool_column(t, 7) < 0)
                return log_oom();
        for (size_t i = 0; i < n; i++) {
                bool wanted = !names || !names[0], known = l[i].ram_bytes > 0;
                for (char **p = names; p && *p && !wanted; p++)
                        wanted = streq(*p, l[i].name);
                if (!wanted)
                        continue;
                struct libscols_line *line = scols_table_new_line(t, NULL);
                if (!line) {
                        scols_unref_table(t);
                        return log_oom();
                }
                scols_line_set_data(line, 0, l[i].name);
                scols_line_set_data(line, 1, l[i].state);
                set_size(line, 2, l[i].actual_bytes, known);
                set_size(line, 3, l[i].target_bytes, known);
                set_size(line, 4, l[i].min_bytes, known);
                set_size(line, 5, l[i].max_bytes, known);
                scols_line_set_data(line, 6, l[i].scope_pressure);
                scols_line_set_data(line, 7, l[i].free_page_reporting ? "yes" : "no");
                /* "-": no backend (unmanaged before one was chosen) */
                scols_line_set_data(line, 8, isempty(l[i].backend) ? "-" : l[i].backend);
                shown++;
        }
        r = scols_print_table(t);
        scols_unref_table(t);
        if (r < 0)
                return log_error_errno(r, "Failed to print the table: %m");
        if (arg_json == JSON_OFF && arg_legend)
                printf("\n%zu machine%s listed.\n", shown, shown == 1 ? "" : "s");
        return 0;
}

/* --- verbs --------------------------------------------------------------------------------- */

static int verb_list(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        static const char *const cols[] = { "MACHINE", "STATE", "OBJECT" };
        static const bool numeric[] = { false, false, false };
        struct libscols_table *t;
        const char *name, *state, *path;
        size_t n = 0;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE, "ListMachines", &error, &reply, NULL);
        if (r < 0)
                return bus_error_exit(&error, r, "list machines");
        t = table_new("machines");
        if (!t || table_add_columns(t, cols, numeric, ELEMENTSOF(cols)) < 0)
                return log_oom(), EXIT_FAILURE;
        r = sd_bus_message_enter_container(reply, 'a', "(sso)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(sso)", &name, &state, &path)) > 0) {
                struct libscols_line *line = scols_table_new_line(t, NULL);
                if (!line)
                        break;
                scols_line_set_data(line, 0, name);
                scols_line_set_data(line, 1, state);
                scols_line_set_data(line, 2, path);
                n++;
        }
        if (r < 0) {
                scols_unref_table(t);
                log_error_errno(r, "Failed to parse the reply: %m");
                return EXIT_FAILURE;
        }
        /* sorted by name, as machinectl does */
        scols_column_set_cmpfunc(scols_table_get_column(t, 0), scols_cmpstr_cells, NULL);
        scols_sort_table(t, scols_table_get_column(t, 0));
        pager_open();
        r = scols_print_table(t);
        scols_unref_table(t);
        if (arg_json == JSON_OFF && arg_legend)
                printf("\n%zu machine%s listed.\n", n, n == 1 ? "" : "s");
        return r < 0 ? EXIT_FAILURE : 0;
}

static int verb_status(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        MachineInfo *l = NULL;
        HostInfo host = {};
        size_t n = 0;
        int r;

        /* every named machine must exist: exit 4 otherwise, before printing anything */
        for (char **p = args; p && *p; p++) {
                _cleanup_free_ char *path = NULL;
                r = machine_path(bus, *p, &path);
                if (r < 0)
                        return -r;
        }
        r = fetch_machines(bus, &l, &n, &error);
        if (r < 0)
                return bus_error_exit(&error, r, "get the machines");
        pager_open();
        r = print_status_table(l, n, args);
        if (r >= 0 && arg_json == JSON_OFF && arg_legend && fetch_host(bus, &host, &error) >= 0)
                printf("Host pressure: %s (some avg10 %.2f%%, full avg10 %.2f%%).\n", host.pressure,
                       host.some_avg10, host.full_avg10);
        free(host.pressure);
        machine_infos_free(l, n);
        return r < 0 ? EXIT_FAILURE : 0;
}

/* One property value as show prints it: booleans yes/no, numbers in decimal (bytes, µs,
 * permille as on the bus), LastMove as "USEC REASON LEVEL BEFORE AFTER". */
static int format_value(sd_bus_message *m, const char *contents, char **ret, json_object **ret_json) {
        int r = 0;

        switch (contents[0]) {
        case 'b': {
                int b;
                r = sd_bus_message_read_basic(m, 'b', &b);
                if (r >= 0) {
                        *ret = strdup(b ? "yes" : "no");
                        *ret_json = json_object_new_boolean(b);
                }
                break;
        }
        case 's':
        case 'o': {
                const char *s;
                r = sd_bus_message_read_basic(m, contents[0], &s);
                if (r >= 0) {
                        *ret = strdup(s);
                        *ret_json = json_object_new_string(s);
                }
                break;
        }
        case 'u': {
                uint32_t u;
                r = sd_bus_message_read_basic(m, 'u', &u);
                if (r >= 0 && asprintf(ret, "%" PRIu32, u) >= 0)
                        *ret_json = json_object_new_int64(u);
                break;
        }
        case 't': {
                uint64_t t;
                r = sd_bus_message_read_basic(m, 't', &t);
                if (r < 0)
                        break;
                if (t == UINT64_MAX) {
                        /* the bus's "not known" (GuestAvailableMemory before any statistics) */
                        *ret = strdup("");
                        *ret_json = NULL;
                } else if (asprintf(ret, "%" PRIu64, t) >= 0)
                        *ret_json = json_object_new_uint64(t);
                break;
        }
        case 'd': {
                double d;
                r = sd_bus_message_read_basic(m, 'd', &d);
                if (r >= 0 && asprintf(ret, "%.2f", d) >= 0)
                        *ret_json = json_object_new_double(d);
                break;
        }
        default:
                if (streq(contents, "(tsstt)")) {
                        uint64_t usec, before, after;
                        const char *reason, *level;
                        r = sd_bus_message_read(m, "(tsstt)", &usec, &reason, &level, &before, &after);
                        if (r < 0)
                                break;
                        if (usec == 0) {
                                *ret = strdup("");
                                *ret_json = NULL;   /* null: never moved */
                                break;
                        }
                        if (asprintf(ret, "%" PRIu64 " %s %s %" PRIu64 " %" PRIu64, usec, reason, level, before, after) < 0)
                                break;
                        *ret_json = json_object_new_object();
                        json_object_object_add(*ret_json, "realtime_usec", json_object_new_uint64(usec));
                        json_object_object_add(*ret_json, "reason", json_object_new_string(reason));
                        json_object_object_add(*ret_json, "level", json_object_new_string(level));
                        json_object_object_add(*ret_json, "before_bytes", json_object_new_uint64(before));
                        json_object_object_add(*ret_json, "after_bytes", json_object_new_uint64(after));
                } else if (streq(contents, "a(sstt)")) {
                        /* PressureTriggers: "low some 100000 1000000, medium ..." */
                        const char *level, *kind;
                        uint64_t stall, window;
                        char *buf = NULL;
                        size_t len = 0;
                        FILE *f = open_memstream(&buf, &len);
                        if (!f)
                                return -ENOMEM;
                        *ret_json = json_object_new_array();
                        r = sd_bus_message_enter_container(m, 'a', "(sstt)");
                        while (r >= 0 && (r = sd_bus_message_read(m, "(sstt)", &level, &kind, &stall, &window)) > 0) {
                                json_object *o = json_object_new_object();
                                fprintf(f, "%s%s %s %" PRIu64 " %" PRIu64, ftell(f) > 0 ? ", " : "", level, kind,
                                        stall, window);
                                json_object_object_add(o, "level", json_object_new_string(level));
                                json_object_object_add(o, "type", json_object_new_string(kind));
                                json_object_object_add(o, "stall_usec", json_object_new_uint64(stall));
                                json_object_object_add(o, "window_usec", json_object_new_uint64(window));
                                json_object_array_add(*ret_json, o);
                        }
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        fclose(f);
                        *ret = buf;
                        if (r < 0) {
                                json_object_put(*ret_json);
                                *ret_json = NULL;
                        }
                } else {
                        r = sd_bus_message_skip(m, contents);
                        *ret = strdup("[unprintable]");
                        *ret_json = NULL;
                }
        }
        if (r < 0)
                return r;
        return *ret ? 0 : -ENOMEM;
}

static int verb_show(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL;
        const char *iface = BUS_MANAGER_IFACE;
        json_object *obj = NULL;
        int r;

        if (args && args[0]) {
                r = machine_path(bus, args[0], &path);
                if (r < 0)
                        return -r;
                iface = BUS_MACHINE_IFACE;
        }
        r = sd_bus_call_method(bus, BUS_NAME, path ?: BUS_PATH, "org.freedesktop.DBus.Properties", "GetAll",
                               &error, &reply, "s", iface);
        if (r < 0)
                return bus_error_exit(&error, r, "get properties");
        if (arg_json != JSON_OFF)
                obj = json_object_new_object();
        else
                pager_open();

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                _cleanup_free_ char *value = NULL;
                json_object *jv = NULL;
                const char *name, *contents;

                r = sd_bus_message_read(reply, "s", &name);
                if (r >= 0)
                        r = sd_bus_message_peek_type(reply, NULL, &contents);
                if (r >= 0)
                        r = sd_bus_message_enter_container(reply, 'v', contents);
                if (r >= 0)
                        r = format_value(reply, contents, &value, &jv);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r < 0) {
                        json_object_put(jv);
                        break;
                }
                if (obj && property_wanted(name))
                        json_object_object_add(obj, name, TAKE_PTR(jv));
                else if (!obj && property_wanted(name))
                        printf("%s%s%s\n", arg_value ? "" : name, arg_value ? "" : "=", value);
                json_object_put(jv);
        }
        if (r < 0) {
                json_object_put(obj);
                log_error_errno(r, "Failed to parse the properties: %m");
                return EXIT_FAILURE;
        }
        if (obj) {
                printf("%s\n", json_object_to_json_string_ext(obj, arg_json == JSON_PRETTY ?
                                                              JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED :
                                                              JSON_C_TO_STRING_PLAIN));
                json_object_put(obj);
        }
        return 0;
}

/* KEY=VALUE arguments in the config file's syntax ("512M", "12.5%", "30s", "no") into a(sv).
 * Anything wrong here is a usage error: nothing was sent. */
static int append_assignments(sd_bus_message *m, char **assignments) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "(sv)");
        if (r < 0)
                return log_oom(), EXIT_FAILURE;
        for (char **a = assignments; *a; a++) {
                _cleanup_free_ char *key = NULL, *error = NULL;
                const char *eq = strchr(*a, '=');
                const KnobInfo *k;
                PolicyKnobs knobs;

                if (!eq) {
                        log_error("Not an assignment: \"%s\" (expected KEY=VALUE).", *a);
                        return EXIT_USAGE;
                }
                key = strndup(*a, (size_t) (eq - *a));
                if (!key)
                        return log_oom(), EXIT_FAILURE;
                k = policy_knob_find(key);
                if (!k) {
                        log_error("Unknown property \"%s\". See autoballoond.conf(5) for the knobs.", key);
                        return EXIT_USAGE;
                }
                policy_knobs_init_default(&knobs);
                r = knob_parse(k, eq + 1, &knobs, &error);
                if (r < 0) {
                        log_error("%s", error ?: "Invalid value.");
                        return EXIT_USAGE;
                }
                r = sd_bus_message_open_container(m, 'r', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", k->name);
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', knob_bus_signature(k));
                if (r >= 0)
                        r = knob_bus_append(m, k, &knobs);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r < 0)
                        return log_oom(), EXIT_FAILURE;
        }
        r = sd_bus_message_close_container(m);
        return r < 0 ? (log_oom(), EXIT_FAILURE) : 0;
}

static int set_properties(sd_bus *bus, const char *name, char **assignments) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE,
                                           name ? "SetMachineProperties" : "SetDefaultProperties");
        if (r >= 0 && name)
                r = sd_bus_message_append(m, "s", name);
        if (r >= 0)
                r = sd_bus_message_append(m, "b", arg_runtime);
        if (r < 0)
                return log_oom(), EXIT_FAILURE;
        r = append_assignments(m, assignments);
        if (r != 0)
                return r;
        r = sd_bus_call(bus, m, 0, &error, NULL);
        if (r < 0)
                return bus_error_exit(&error, r, name ? "set machine properties" : "set default properties");
        return 0;
}

static int verb_set_property(sd_bus *bus, char **args) {
        return set_properties(bus, args[0], args + 1);
}

static int verb_set_default(sd_bus *bus, char **args) {
        return set_properties(bus, NULL, args);
}

static int verb_resize(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        uint64_t bytes;
        int r;

        if (parse_size(args[1], &bytes) < 0) {
                log_error("Invalid size \"%s\": expected bytes or a size such as 512M or 2G.", args[1]);
                return EXIT_USAGE;
        }
        r = sd_bus_call_method(bus, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE, "ResizeMachine", &error, NULL, "st",
                               args[0], bytes);
        if (r < 0)
                return bus_error_exit(&error, r, "resize the machine");
        return 0;
}

static int verb_reload(sd_bus *bus, char **args) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(bus, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE, "Reload", &error, NULL, NULL);
        if (r < 0)
                return bus_error_exit(&error, r, "reload autoballoond");
        return 0;
}

/* --- top: redrawn on PropertiesChanged and MachineAdded/Removed, never on a timer alone ------ */

typedef struct Top {
        sd_bus *bus;
        sd_event *event;
        sd_event_source *redraw;   /* armed by a change, coalesces a burst of them */
        bool tty;
        int exit_code;
} Top;

static int top_draw(Top *top) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        MachineInfo *l = NULL;
        HostInfo host = {};
        char when[64];
        time_t now = time(NULL);
        size_t n = 0;
        int r;

        r = fetch_machines(top->bus, &l, &n, &error);
        if (r >= 0)
                r = fetch_host(top->bus, &host, &error);
        if (r < 0) {
                machine_infos_free(l, n);
                free(host.pressure);
                top->exit_code = bus_error_exit(&error, r, "read autoballoond's state");
                return sd_event_exit(top->event, 0);
        }
        strftime(when, sizeof when, "%H:%M:%S", localtime(&now));
        /* home + clear on a terminal; one frame after the other otherwise */
        printf("%s%s  autoballoon: host pressure %s (some avg10 %.2f%%, full avg10 %.2f%%)\n\n",
               top->tty ? "\033[H\033[2J" : "", when, host.pressure, host.some_avg10, host.full_avg10);
        (void) print_status_table(l, n, NULL);
        if (!top->tty)
                printf("\n");
        fflush(stdout);
        machine_infos_free(l, n);
        free(host.pressure);
        return 0;
}

static int on_top_redraw(sd_event_source *s, uint64_t usec, void *userdata) {
        return top_draw(userdata);
}

static int on_top_change(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Top *top = userdata;
        int enabled = SD_EVENT_OFF;

        (void) sd_event_source_get_enabled(top->redraw, &enabled);
        if (enabled == SD_EVENT_OFF) {
                (void) sd_event_source_set_time_relative(top->redraw, TOP_REDRAW_DELAY_USEC);
                (void) sd_event_source_set_enabled(top->redraw, SD_EVENT_ONESHOT);
        }
        return 0;
}

static int on_top_owner(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Top *top = userdata;
        const char *name, *old, *new;

        /* gone: nothing to show any more (a restart under systemd brings a new owner) */
        if (sd_bus_message_read(m, "sss", &name, &old, &new) >= 0 && !*new) {
                log_error("autoballoond left the bus.");
                top->exit_code = EXIT_FAILURE;
                return sd_event_exit(top->event, 0);
        }
        return on_top_change(m, userdata, error);
}

static int on_top_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Top *top = userdata;
        return sd_event_exit(top->event, 0);
}

static int verb_top(sd_bus *bus, char **args) {
        Top top = { .bus = bus, .tty = isatty(STDOUT_FILENO) };
        int r;

        r = sd_event_default(&top.event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate an event loop: %m"), EXIT_FAILURE;
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(top.event, NULL, SIGINT, on_top_signal, &top);
        (void) sd_event_add_signal(top.event, NULL, SIGTERM, on_top_signal, &top);

        r = sd_bus_attach_event(bus, top.event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, NULL, "org.freedesktop.DBus.Properties",
                                        "PropertiesChanged", on_top_change, &top);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE, "MachineAdded",
                                        on_top_change, &top);
        if (r >= 0)
                r = sd_bus_match_signal(bus, NULL, BUS_NAME, BUS_PATH, BUS_MANAGER_IFACE, "MachineRemoved",
                                        on_top_change, &top);
        if (r >= 0)
                r = sd_bus_add_match(bus, NULL, "type='signal',sender='org.freedesktop.DBus',"
                                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='" BUS_NAME "'",
                                     on_top_owner, &top);
        if (r >= 0)
                r = sd_event_add_time_relative(top.event, &top.redraw, CLOCK_MONOTONIC, 0, 0, on_top_redraw, &top);
        if (r < 0) {
                log_error_errno(r, "Failed to watch autoballoond: %m");
                sd_event_unref(top.event);
                return EXIT_FAILURE;
        }
        /* the first frame at once (the timer fires immediately), then only on changes */
        r = sd_event_loop(top.event);
        sd_event_source_unref(top.redraw);
        sd_bus_detach_event(bus);
        sd_event_unref(top.event);
        return r < 0 ? EXIT_FAILURE : top.exit_code;
}

/* --- arguments ------------------------------------------------------------------------------- */

static void help(void) {
        printf("%s [OPTIONS...] COMMAND ...\n\n"
               "Control autoballoond, which drives the virtio-balloon of VMs from memory pressure.\n\n"
               "Commands:\n"
               "  list                        List machines\n"
               "  status [NAME...]            Show sizes and pressure of all or the named machines\n"
               "  show [NAME]                 Show the properties of a machine, or of the manager\n"
               "  set-property NAME KEY=VALUE...\n"
               "                              Set policy knobs of a machine (persistent unless --runtime)\n"
               "  set-default KEY=VALUE...    Set the defaults machines inherit\n"
               "  resize NAME SIZE            Move a machine's balloon by hand (e.g. 768M, 2G)\n"
               "  top                         Live view, redrawn whenever something changes\n"
               "  reload                      Reload the configuration and every drop-in\n\n"
               "Options:\n"
               "  -h --help                   Show this help\n"
               "     --version                Show the version\n"
               "     --no-pager               Do not pipe output into a pager\n"
               "     --no-legend              Do not show headers and footers\n"
               "     --json[=pretty|short]    Print list, status and show as JSON\n"
               "  -p --property=NAME          show: only this property (may be repeated, or NAME,NAME)\n"
               "     --value                  show: print values only, without NAME=\n"
               "     --runtime                set-property, set-default: until autoballoond restarts\n"
               "     --no-ask-password        Do not ask for a password when polkit wants one\n\n"
               "Values take the configuration file's syntax: sizes 512M or 2G (base 1024), shares\n"
               "12.5%%, durations 30s, booleans yes/no. See autoballoonctl(1) and autoballoond.conf(5).\n",
               program_invocation_short_name);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_NO_PAGER, ARG_NO_LEGEND, ARG_JSON, ARG_VALUE, ARG_RUNTIME,
               ARG_NO_ASK_PASSWORD };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "no-pager", no_argument, NULL, ARG_NO_PAGER },
                { "no-legend", no_argument, NULL, ARG_NO_LEGEND },
                { "json", optional_argument, NULL, ARG_JSON },
                { "property", required_argument, NULL, 'p' },
                { "value", no_argument, NULL, ARG_VALUE },
                { "runtime", no_argument, NULL, ARG_RUNTIME },
                { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
                {}
        };
        int c;

        /* options may follow the verb, as with systemctl */
        while ((c = getopt_long(argc, argv, "hp:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("autoballoonctl %s\n", PROJECT_VERSION);
                        return 0;
                case ARG_NO_PAGER:
                        arg_no_pager = true;
                        break;
                case ARG_NO_LEGEND:
                        arg_legend = false;
                        break;
                case ARG_JSON:
                        if (!optarg || streq(optarg, "pretty"))
                                arg_json = JSON_PRETTY;
                        else if (streq(optarg, "short"))
                                arg_json = JSON_SHORT;
                        else if (streq(optarg, "off"))
                                arg_json = JSON_OFF;
                        else {
                                log_error("Invalid --json= mode \"%s\": expected pretty, short or off.", optarg);
                                return -EINVAL;
                        }
                        break;
                case 'p': {
                        _cleanup_free_ char *copy = strdup(optarg);
                        char *save = NULL;
                        if (!copy)
                                return -ENOMEM;
                        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
                                if (strv_push(&arg_properties, &arg_n_properties, t) < 0)
                                        return -ENOMEM;
                        break;
                }
                case ARG_VALUE:
                        arg_value = true;
                        break;
                case ARG_RUNTIME:
                        arg_runtime = true;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;
                default:
                        return -EINVAL;
                }
        return 1;
}

typedef struct Verb {
        const char *name;
        int min_args, max_args;    /* after the verb; -1: any number */
        bool changes;              /* needs authorization: start a polkit agent */
        int (*run)(sd_bus *bus, char **args);
} Verb;

static const Verb verbs[] = {
        { "list", 0, 0, false, verb_list },
        { "status", 0, -1, false, verb_status },
        { "show", 0, 1, false, verb_show },
        { "set-property", 2, -1, true, verb_set_property },
        { "set-default", 1, -1, true, verb_set_default },
        { "resize", 2, 2, true, verb_resize },
        { "top", 0, 0, false, verb_top },
        { "reload", 0, 0, true, verb_reload },
};

int main(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        const Verb *verb = NULL;
        const char *name;
        int n_args, r;

        log_setup();
        r = parse_argv(argc, argv);
        if (r <= 0) {
                strv_free(arg_properties);
                return r < 0 ? EXIT_USAGE : 0;
        }

        name = optind < argc ? argv[optind] : "status";   /* like machinectl: no verb lists */
        for (size_t i = 0; i < ELEMENTSOF(verbs) && !verb; i++)
                if (streq(verbs[i].name, name))
                        verb = &verbs[i];
        n_args = optind < argc ? argc - optind - 1 : 0;
        if (!verb) {
                log_error("Unknown command \"%s\". See %s --help.", name, program_invocation_short_name);
                r = EXIT_USAGE;
                goto finish;
        }
        if (n_args < verb->min_args || (verb->max_args >= 0 && n_args > verb->max_args)) {
                log_error("%s for \"%s\". See %s --help.", n_args < verb->min_args ? "Too few arguments" :
                          "Too many arguments", verb->name, program_invocation_short_name);
                r = EXIT_USAGE;
                goto finish;
        }

        /* DBUS_SYSTEM_BUS_ADDRESS is honoured by sd-bus */
        r = sd_bus_open_system(&bus);
        if (r < 0) {
                log_error_errno(r, "Failed to connect to the system bus: %m");
                r = EXIT_FAILURE;
                goto finish;
        }
        if (verb->changes)
                polkit_agent_open(bus);
        r = verb->run(bus, optind < argc ? argv + optind + 1 : argv + argc);
finish:
        polkit_agent_close();
        pager_close();
        strv_free(arg_properties);
        return r;
}
