/* Configuration files in systemd's INI dialect, parsed with inih. */
#include <dirent.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "log.h"


void config_init(Config *c) {
        *c = (Config) {
                .host_pressure_source = strdup("/proc/pressure/memory"),
                .machines_directory = strdup(MACHINES_DIR_DEFAULT),
                .runtime_machines_directory = strdup(RUNTIME_MACHINES_DIR_DEFAULT),
                .runtime_config_directory = strdup(RUNTIME_CONFIG_DIR_DEFAULT),
                .host_memory_source = strdup("/proc/meminfo"),
                /* 10 % of the host kept free: what a guest growing at full speed (or the host's
                 * own burst) can take in one guest-stats interval before the next take lands;
                 * Proxmox keeps 20 % (an 80 % target) and MoM 20 % free, both by polling. */
                .host_memory_reserve_permille = 100,
                .stats_interval_sec = 2,
                .deflate_on_exit = true,
                .libvirt_uri = strdup("qemu:///system"),
        };
        policy_knobs_init_default(&c->defaults);
}

int host_memory_reserve_parse(const char *s, uint64_t *ret_bytes, uint32_t *ret_permille) {
        size_t n = strlen(s);

        if (n > 0 && s[n - 1] == '%') {
                char *end;
                errno = 0;
                double pct = strtod(s, &end);
                if (errno != 0 || end != s + n - 1 || end == s || !(pct >= 0) ||
                    pct * 10 > HOST_MEMORY_RESERVE_PERMILLE_MAX)
                        return -ERANGE;
                *ret_bytes = 0;
                *ret_permille = (uint32_t) lround(pct * 10);
                return 0;
        }
        int r = parse_size(s, ret_bytes);
        if (r < 0)
                return r;
        *ret_permille = 0;
        return 0;
}

int host_memory_reserve_format(uint64_t bytes, uint32_t permille, char **ret) {
        if (bytes > 0 || permille == 0)
                return asprintf(ret, "%" PRIu64, bytes) < 0 ? -ENOMEM : 0;
        if (permille % 10 == 0)
                return asprintf(ret, "%u%%", permille / 10) < 0 ? -ENOMEM : 0;
        return asprintf(ret, "%u.%u%%", permille / 10, permille % 10) < 0 ? -ENOMEM : 0;
}

uint64_t host_memory_reserve_resolve(uint64_t bytes, uint32_t permille, uint64_t capacity_bytes) {
        if (bytes > 0 || permille == 0)
                return bytes;
        return capacity_bytes / 1000 * permille + capacity_bytes % 1000 * permille / 1000;
}

void config_done(Config *c) {
        free(c->host_memory_source);
        free(c->libvirt_uri);
        free(c->host_pressure_source);
        free(c->machines_directory);
        free(c->runtime_machines_directory);
        free(c->runtime_config_directory);
        *c = (Config) {};
}

static int set_string(char **p, const char *v) {
        char *s = strdup(v);
        if (!s)
                return -ENOMEM;
        free(*p);
        *p = s;
        return 0;
}

/* --- main configuration ------------------------------------------------------------- */

typedef struct ParseState {
        const char *path;
        FILE *file;
        int lineno;               /* Debian's inih passes no line number: we count in the reader */
        Config *config;           /* main config, or NULL for a machine drop-in */
        MachineConfig *machine;   /* machine drop-in, or NULL */
        PolicyKnobs *knobs;       /* [Defaults] or [Machine] knobs */
        unsigned n_errors;
} ParseState;

static int knob_line(ParseState *s, const char *name, const char *value, int lineno) {
        const KnobInfo *k = policy_knob_find(name);
        _cleanup_free_ char *error = NULL;

        if (!k)
                return 0;   /* not a knob: caller reports */
        if (knob_parse(k, value, s->knobs, &error) < 0) {
                log_warning("%s:%d: %s Ignoring.", s->path, lineno, error ? error : "Invalid value.");
                s->n_errors++;
                return 1;
        }
        if (s->machine)
                s->machine->knobs_set |= UINT64_C(1) << (k - policy_knobs);
        return 1;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
        ParseState *s = user;
        int lineno = s->lineno;
        int r;

        if (s->config && streq(section, "Manager")) {
                Config *c = s->config;
                if (streq(name, "HostPressureSource"))
                        r = set_string(&c->host_pressure_source, value);
                else if (streq(name, "LibvirtURI"))
                        r = isempty(value) ? -EINVAL : set_string(&c->libvirt_uri, value);
                else if (streq(name, "HostMemorySource"))
                        r = set_string(&c->host_memory_source, value);
                else if (streq(name, "HostMemoryReserve"))
                        r = host_memory_reserve_parse(value, &c->host_memory_reserve_bytes,
                                                      &c->host_memory_reserve_permille);
                else if (streq(name, "MachinesDirectory"))
                        r = value[0] == '/' ? set_string(&c->machines_directory, value) : -EINVAL;
                else if (streq(name, "RuntimeMachinesDirectory"))
                        r = value[0] == '/' ? set_string(&c->runtime_machines_directory, value) : -EINVAL;
                else if (streq(name, "RuntimeConfigDirectory"))
                        r = value[0] == '/' ? set_string(&c->runtime_config_directory, value) : -EINVAL;
                else if (streq(name, "StatsIntervalSec")) {
                        usec_t u;
                        r = parse_duration(value, &u);
                        if (r >= 0 && (u < USEC_PER_SEC || u > 3600 * USEC_PER_SEC))
                                r = -ERANGE;
                        if (r >= 0)
                                c->stats_interval_sec = (unsigned) (u / USEC_PER_SEC);
                } else if (streq(name, "DeflateOnExit")) {
                        r = parse_boolean(value);
                        if (r >= 0)
                                c->deflate_on_exit = r;
                } else {
                        log_warning("%s:%d: Unknown key %s= in [Manager], ignoring.", s->path, lineno, name);
                        s->n_errors++;
                        return 1;
                }
                if (r == -ENOMEM)
                        return 0;
                if (r < 0) {
                        log_warning("%s:%d: Invalid value \"%s\" for %s=, ignoring.", s->path, lineno, value, name);
                        s->n_errors++;
                }
                return 1;
        }

        if (s->config && streq(section, "Pressure")) {
                static const char *const names[_PRESSURE_LEVEL_MAX] = {
                        [PRESSURE_LOW] = "Low", [PRESSURE_MEDIUM] = "Medium", [PRESSURE_CRITICAL] = "Critical",
                };
                for (PressureLevel l = PRESSURE_LOW; l < _PRESSURE_LEVEL_MAX; l++)
                        if (streq(name, names[l])) {
                                /* the same as [Defaults] LowPressure= etc.: the host's triggers and
                                 * every scope's unless a machine sets its own */
                                if (psi_trigger_parse(value, &s->config->defaults.trigger[l]) < 0) {
                                        log_warning("%s:%d: Invalid PSI trigger \"%s\" for %s=: expected "
                                                    "\"some|full STALL WINDOW\" with 500ms <= WINDOW <= 10s, "
                                                    "0 < STALL <= WINDOW. Ignoring.",
                                                    s->path, lineno, value, name);
                                        s->n_errors++;
                                }
                                return 1;
                        }
                log_warning("%s:%d: Unknown key %s= in [Pressure], ignoring.", s->path, lineno, name);
                s->n_errors++;
                return 1;
        }

        if ((s->config && streq(section, "Defaults")) || (s->machine && streq(section, "Machine"))) {
                if (s->machine && streq(name, "QMPSocket")) {
                        if (value[0] != '/') {
                                log_warning("%s:%d: QMPSocket= must be an absolute path, ignoring.", s->path, lineno);
                                s->n_errors++;
                                return 1;
                        }
                        return set_string(&s->machine->qmp_socket, value) < 0 ? 0 : 1;
                }
                if (s->machine && streq(name, "Backend")) {
                        MachineBackend b = machine_backend_from_string(value);
                        if ((int) b < 0) {
                                log_warning("%s:%d: Invalid value \"%s\" for Backend=: expected auto, qmp or libvirt. Ignoring.",
                                            s->path, lineno, value);
                                s->n_errors++;
                        } else
                                s->machine->backend = b;
                        return 1;
                }
                if (knob_line(s, name, value, lineno) == 0) {
                        log_warning("%s:%d: Unknown key %s= in [%s], ignoring.", s->path, lineno, name, section);
                        s->n_errors++;
                }
                return 1;
        }

        log_warning("%s:%d: Unknown section [%s] or key %s=, ignoring.", s->path, lineno, section, name);
        s->n_errors++;
        return 1;
}

static char *reader(char *str, int num, void *userdata) {
        ParseState *s = userdata;
        char *l = fgets(str, num, s->file);

        if (l)
                s->lineno++;
        return l;
}

static int parse_file(ParseState *s, const char *path) {
        int r;

        s->file = fopen(path, "re");
        if (!s->file)
                return errno == ENOENT ? 0 : log_error_errno(errno, "Failed to open %s: %m", path);
        s->path = path;
        s->lineno = 0;
        r = ini_parse_stream(reader, s, handler, s);
        fclose(s->file);
        s->file = NULL;
        if (r < 0)
                return log_error_errno(EIO, "Failed to read %s.", path);
        if (r > 0) {
                /* inih stops at nothing: r is the first line it could not parse at all. */
                log_warning("%s:%d: Syntax error, line ignored.", path, r);
                s->n_errors++;
        }
        return 0;
}

static int filter_conf(const struct dirent *d) {
        size_t l = strlen(d->d_name);
        return d->d_name[0] != '.' && l > 5 && streq(d->d_name + l - 5, ".conf");
}

static int parse_dir(ParseState *s, const char *dir) {
        struct dirent **list = NULL;
        int n, r = 0;

        n = scandir(dir, &list, filter_conf, alphasort);
        for (int i = 0; i < n; i++) {
                _cleanup_free_ char *p = NULL;
                if (r >= 0)
                        r = asprintf(&p, "%s/%s", dir, list[i]->d_name) < 0 ? -ENOMEM : parse_file(s, p);
                free(list[i]);
        }
        free(list);
        return r;
}

int config_load(Config *c, const char *path) {
        ParseState s = { .config = c, .knobs = &c->defaults };
        _cleanup_free_ char *dir = NULL;
        int r;

        r = parse_file(&s, path);
        if (r < 0)
                return r;

        if (asprintf(&dir, "%s.d", path) < 0)
                return -ENOMEM;
        r = parse_dir(&s, dir);
        /* The runtime directory can only be named by the files above; it comes last, so that
         * a runtime SetDefaultProperties() wins until the next boot. */
        if (r >= 0 && c->runtime_config_directory && !streq(c->runtime_config_directory, dir))
                r = parse_dir(&s, c->runtime_config_directory);
        c->n_errors += s.n_errors;
        return r < 0 ? r : 0;
}

static const char *const machine_backend_table[_MACHINE_BACKEND_MAX] = {
        [MACHINE_BACKEND_AUTO] = "auto",
        [MACHINE_BACKEND_QMP] = "qmp",
        [MACHINE_BACKEND_LIBVIRT] = "libvirt",
};

DEFINE_STRING_TABLE_TO_STRING(machine_backend, MachineBackend, _MACHINE_BACKEND_MAX)
DEFINE_STRING_TABLE_FROM_STRING(machine_backend, MachineBackend, _MACHINE_BACKEND_MAX, (MachineBackend) -EINVAL)

void machine_config_done(MachineConfig *mc) {
        free(mc->qmp_socket);
        *mc = (MachineConfig) {};
}

int machine_config_load(const Config *c, const char *name, MachineConfig *ret) {
        MachineConfig mc = { .knobs = c->defaults };
        ParseState s = { .machine = &mc, .knobs = &mc.knobs };
        const char *dirs[] = { c->machines_directory, c->runtime_machines_directory };
        int r;

        /* A name with a slash cannot be a file name; machined never hands one out anyway. */
        if (strchr(name, '/') || name[0] == '.')
                return -EINVAL;

        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                _cleanup_free_ char *p = NULL;
                if (!dirs[i])
                        continue;
                if (asprintf(&p, "%s/%s.conf", dirs[i], name) < 0) {
                        machine_config_done(&mc);
                        return -ENOMEM;
                }
                r = parse_file(&s, p);
                if (r < 0) {
                        machine_config_done(&mc);
                        return r;
                }
        }
        *ret = mc;
        return 0;
}

/* --- persistence ------------------------------------------------------------------------ */

int config_machine_dropin_path(const Config *c, const char *name, bool runtime, char **ret) {
        const char *dir = runtime ? c->runtime_machines_directory : c->machines_directory;

        if (!dir || strchr(name, '/') || name[0] == '.' || name[0] == '\0')
                return -EINVAL;
        return asprintf(ret, "%s/%s.conf", dir, name) < 0 ? -ENOMEM : 0;
}

int config_defaults_dropin_path(const Config *c, const char *config_path, bool runtime, char **ret) {
        int r;

        if (runtime)
                r = c->runtime_config_directory ?
                        asprintf(ret, "%s/" SET_PROPERTY_DROPIN, c->runtime_config_directory) : -1;
        else
                r = asprintf(ret, "%s.d/" SET_PROPERTY_DROPIN, config_path);
        return r < 0 ? -ENOMEM : 0;
}

static bool strv_contains(char *const *l, const char *s) {
        for (; l && *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

/* "[Name]" → Name, as inih reads it; NULL for anything else. */
static char *section_name(const char *line, size_t len) {
        size_t i = strspn(line, " \t");
        const char *end;

        if (i >= len || line[i] != '[')
                return NULL;
        end = memchr(line + i, ']', len - i);
        return end ? strndup(line + i + 1, (size_t) (end - line - i - 1)) : NULL;
}

/* The key of a "Key=Value" (or inih's "Key: Value") line, trimmed, into buf; false for a
 * comment, a blank or a continuation line. */
static bool line_key(const char *line, size_t len, char *buf, size_t buflen) {
        size_t i = 0, k;

        if (len == 0 || line[0] == ' ' || line[0] == '\t' || line[0] == ';' || line[0] == '#')
                return false;
        while (i < len && line[i] != '=' && line[i] != ':')
                i++;
        if (i == len)
                return false;
        k = i;
        while (k > 0 && (line[k - 1] == ' ' || line[k - 1] == '\t'))
                k--;
        if (k == 0 || k >= buflen)
                return false;
        memcpy(buf, line, k);
        buf[k] = '\0';
        return true;
}

int config_dropin_rewrite(const char *text, const char *section, char *const *keys, char *const *values,
                          char **ret) {
        _cleanup_free_ char *out = NULL;
        size_t out_len = 0;
        FILE *f;
        bool in_section = false, dropping = false, any_set = false;

        f = open_memstream(&out, &out_len);
        if (!f)
                return -ENOMEM;

        if (!text)
                fputs(SET_PROPERTY_HEADER " (SetMachineProperties(), SetDefaultProperties()).\n"
                      "# It keeps comments and other keys when it updates this file.\n", f);
        for (const char *p = text; p && *p;) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t) (nl - p) : strlen(p);
                _cleanup_free_ char *name = section_name(p, len);
                char key[256];

                if (name) {
                        in_section = streq(name, section);
                        dropping = false;
                } else if (dropping && len > 0 && (p[0] == ' ' || p[0] == '\t'))
                        goto next;   /* continuation of a dropped value */
                else {
                        dropping = in_section && line_key(p, len, key, sizeof key) && strv_contains(keys, key);
                        if (dropping)
                                goto next;
                }
                fwrite(p, 1, len, f);
                fputc('\n', f);
        next:
                p += len + (nl ? 1 : 0);
        }

        for (size_t i = 0; keys && keys[i]; i++)
                any_set = any_set || values[i];
        if (any_set) {
                if (!in_section)
                        fprintf(f, "%s[%s]\n", text && *text ? "\n" : "", section);
                for (size_t i = 0; keys[i]; i++)
                        if (values[i])
                                fprintf(f, "%s=%s\n", keys[i], values[i]);
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(out);
        return 0;
}

int mkdir_parents(const char *path) {
        _cleanup_free_ char *dir = strdup(path);

        if (!dir)
                return -ENOMEM;
        for (char *p = strchr(dir + 1, '/'); p; p = strchr(p + 1, '/')) {
                *p = '\0';
                if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        return 0;
}

int config_write_file_atomic(const char *path, const char *text) {
        _cleanup_free_ char *tmp = NULL, *dir = NULL;
        _cleanup_close_ int fd = -1, dfd = -1;
        const char *slash = strrchr(path, '/');
        size_t len = strlen(text);
        int r;

        if (!slash)
                return -EINVAL;
        dir = strndup(path, (size_t) (slash - path));
        /* a dot file: never read as a drop-in, even if we die before the rename */
        if (!dir || asprintf(&tmp, "%s/.%s.XXXXXX", dir, slash + 1) < 0)
                return -ENOMEM;
        r = mkdir_parents(path);
        if (r < 0)
                return r;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, 0644) < 0)
                goto fail;
        for (size_t done = 0; done < len;) {
                ssize_t n = write(fd, text + done, len - done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        goto fail;
                }
                done += (size_t) n;
        }
        if (fsync(fd) < 0 || rename(tmp, path) < 0)
                goto fail;
        /* the rename itself must survive a crash too */
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void) fsync(dfd);
        return 0;
fail:
        r = -errno;
        (void) unlink(tmp);
        return r;
}

int config_dropin_update(const char *path, const char *section, char *const *keys, char *const *values) {
        _cleanup_free_ char *old = NULL, *text = NULL;
        bool any_set = false;
        int r;

        r = read_full_file(path, &old, NULL);
        if (r < 0 && r != -ENOENT)
                return r;
        for (size_t i = 0; keys[i]; i++)
                any_set = any_set || values[i];
        if (!old && !any_set)
                return 0;
        r = config_dropin_rewrite(old, section, keys, values, &text);
        if (r < 0)
                return r;
        if (old && streq(old, text))
                return 0;
        return config_write_file_atomic(path, text);
}

int config_dropin_save_knobs(const char *path, const char *section, const PolicyKnobs *knobs, uint64_t mask) {
        char *keys[64 + 1] = {}, *values[64 + 1] = {};
        size_t n = 0;
        int r = 0;

        for (size_t i = 0; i < policy_knobs_count && r >= 0; i++) {
                if (!(mask & (UINT64_C(1) << i)))
                        continue;
                keys[n] = (char *) policy_knobs[i].name;
                if (knobs)
                        r = knob_format(&policy_knobs[i], knobs, &values[n]);
                n++;
        }
        if (r >= 0)
                r = config_dropin_update(path, section, keys, values);
        for (size_t i = 0; i < n; i++)
                free(values[i]);
        return r;
}
