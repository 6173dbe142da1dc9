/* Small helpers shared by the daemon, the CLI and the tests. */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include "util.h"

usec_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

int read_full_file(const char *path, char **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, allocated = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;

        for (;;) {
                if (allocated - size < 4096) {
                        if (allocated >= 16 * MIB)
                                return -EFBIG;
                        allocated = allocated ? allocated * 2 : 4096;
                        char *n = realloc(buf, allocated + 1);
                        if (!n)
                                return -ENOMEM;
                        buf = n;
                }
                ssize_t k = read(fd, buf + size, allocated - size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                size += (size_t) k;
        }
        if (!buf && !(buf = malloc(1)))
                return -ENOMEM;
        buf[size] = 0;
        if (ret_size)
                *ret_size = size;
        *ret = TAKE_PTR(buf);
        return 0;
}

int read_proc_file(pid_t pid, const char *name, char **ret, size_t *ret_size) {
        char p[64];

        snprintf(p, sizeof p, "/proc/%d/%s", (int) pid, name);
        return read_full_file(p, ret, ret_size);
}

int parse_size(const char *s, uint64_t *ret) {
        static const struct { char suffix; uint64_t factor; } table[] = {
                { 'K', KIB }, { 'M', MIB }, { 'G', GIB }, { 'T', GIB * 1024 },
        };
        char *end;
        uint64_t factor = 1;

        if (!s || !isdigit((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        double v = strtod(s, &end);  /* "1.5G" */
        if (errno != 0 || end == s || v < 0)
                return -EINVAL;
        if (*end) {
                bool found = false;
                for (size_t i = 0; i < ELEMENTSOF(table); i++)
                        if (toupper((unsigned char) *end) == table[i].suffix) {
                                factor = table[i].factor;
                                found = true;
                        }
                if (found)
                        end++;
                if (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0)
                        end += strlen(end);
                if (*end)
                        return -EINVAL;
        } else if (strchr(s, '.'))
                return -EINVAL;  /* fractional bytes */
        if (v * (double) factor >= 18446744073709551615.0)
                return -ERANGE;
        *ret = (uint64_t) (v * (double) factor);
        return 0;
}

int parse_duration(const char *s, usec_t *ret) {
        static const struct { const char *suffix; usec_t factor; } table[] = {
                { "us", 1 }, { "ms", USEC_PER_MSEC }, { "s", USEC_PER_SEC }, { "sec", USEC_PER_SEC },
                { "min", 60 * USEC_PER_SEC }, { "m", 60 * USEC_PER_SEC }, { "h", 3600 * USEC_PER_SEC },
                { "", USEC_PER_SEC },
        };
        char *end;

        if (!s || !isdigit((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        double v = strtod(s, &end);
        if (errno != 0 || v < 0)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strcmp(end, table[i].suffix) == 0) {
                        double r = v * (double) table[i].factor;
                        if (r >= 1e18)
                                return -ERANGE;
                        *ret = (usec_t) r;
                        return 0;
                }
        return -EINVAL;
}

int parse_boolean(const char *s) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "f", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

char *format_size(char *buf, size_t len, uint64_t bytes) {
        static const char suffixes[] = "KMGT";
        double v = (double) bytes;
        int i = -1;

        while (v >= 1024 && i < 3) {
                v /= 1024;
                i++;
        }
        if (i < 0)
                snprintf(buf, len, "%" PRIu64 "B", bytes);
        else if (v == (double) (uint64_t) v)
                snprintf(buf, len, "%" PRIu64 "%c", (uint64_t) v, suffixes[i]);
        else
                snprintf(buf, len, "%.1f%c", v, suffixes[i]);
        return buf;
}

char *vasprintf_or_null(const char *fmt, va_list ap) {
        char *s;

        return vasprintf(&s, fmt, ap) < 0 ? NULL : s;
}

/* What the kernel appends to a cgroup2 path whose cgroup is gone (proc_cgroup_show()). */
#define CGROUP_DELETED_SUFFIX " (deleted)"

int cgroup_path_from_proc(const char *text, const char *controller, char **ret) {
        const char *next;

        for (const char *l = text; l && *l; l = next) {
                const char *eol = strchrnul(l, '\n');
                const char *c1 = memchr(l, ':', (size_t) (eol - l));
                const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t) (eol - c1 - 1)) : NULL;
                bool match = false;

                next = *eol ? eol + 1 : NULL;
                if (!c2)
                        continue;
                if (!controller)   /* "0::PATH" */
                        match = c1 - l == 1 && l[0] == '0' && c2 == c1 + 1;
                else               /* "N:ctrl,ctrl,...:PATH" */
                        for (const char *p = c1 + 1; p < c2 && !match;) {
                                const char *q = memchr(p, ',', (size_t) (c2 - p));
                                if (!q)
                                        q = c2;
                                match = (size_t) (q - p) == strlen(controller) &&
                                        strncmp(p, controller, (size_t) (q - p)) == 0;
                                p = q + 1;
                        }
                if (!match)
                        continue;

                const char *path = c2 + 1;
                size_t n = (size_t) (eol - path), sn = strlen(CGROUP_DELETED_SUFFIX);
                if (n > sn && memcmp(eol - sn, CGROUP_DELETED_SUFFIX, sn) == 0)
                        return -EIDRM;
                if (n == 0 || path[0] != '/')
                        return -EBADMSG;
                char *s = strndup(path, n);
                if (!s)
                        return -ENOMEM;
                *ret = s;
                return 0;
        }
        return -ENOENT;
}

int pid_cgroup_path(pid_t pid, const char *controller, char **ret) {
        _cleanup_free_ char *text = NULL;
        int r;

        r = read_proc_file(pid, "cgroup", &text, NULL);
        if (r < 0)
                return r;
        return cgroup_path_from_proc(text, controller, ret);
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

int mount_point_of(const char *fstype, const char *super_option, char **ret) {
        _cleanup_free_ char *buf = NULL;
        int r;

        r = read_full_file("/proc/self/mountinfo", &buf, NULL);
        if (r < 0)
                return r;
        for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                /* id parent maj:min root mountpoint options [optional...] - fstype source super */
                char mountpoint[PATH_MAX], type[64], super[512] = "";
                char *sep = strstr(line, " - ");
                if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", mountpoint) != 1 ||
                    sscanf(sep + 3, "%63s %*s %511s", type, super) < 1 || !streq(type, fstype))
                        continue;
                bool found = !super_option;
                for (char *s2 = NULL, *opt = strtok_r(super, ",", &s2); !found && opt; opt = strtok_r(NULL, ",", &s2))
                        found = streq(opt, super_option);
                if (found) {
                        *ret = strdup(mountpoint);
                        return *ret ? 0 : -ENOMEM;
                }
        }
        return -ENOENT;
}
