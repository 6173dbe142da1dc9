/* Small helpers shared by the daemon, the CLI and the tests: cleanup attributes, time units. */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef uint64_t usec_t;
#define USEC_INFINITY ((usec_t) UINT64_MAX)
#define USEC_PER_MSEC ((usec_t) 1000ULL)
#define USEC_PER_SEC ((usec_t) 1000000ULL)

#define KIB ((uint64_t) 1024ULL)
#define MIB (KIB * 1024ULL)
#define GIB (MIB * 1024ULL)

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define CLAMP(x, lo, hi) ((x) < (lo) ? (lo) : (x) > (hi) ? (hi) : (x))

/* An enum's names: after `static const char *const NAME_table[MAX] = { [X] = "x", ... };`,
 * these define NAME_to_string() (NULL when out of range) and NAME_from_string() (invalid when
 * unknown), as systemd's string-table.h does. */
#define DEFINE_STRING_TABLE_TO_STRING(name, type, max)                                   \
        const char *name##_to_string(type i) {                                            \
                return (int) i >= 0 && (int) i < (max) ? name##_table[i] : NULL;          \
        }
#define DEFINE_STRING_TABLE_FROM_STRING(name, type, max, invalid)                        \
        type name##_from_string(const char *s) {                                          \
                for (int i = 0; s && i < (max); i++)                                      \
                        if (name##_table[i] && strcmp(s, name##_table[i]) == 0)           \
                                return (type) i;                                          \
                return (invalid);                                                         \
        }

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

/* Hand a pointer out of a cleanup scope. */
#define TAKE_PTR(p) ({ __typeof__(p) _t = (p); (p) = NULL; _t; })
#define TAKE_FD(fd) ({ int _t = (fd); (fd) = -1; _t; })

static inline bool streq_ptr(const char *a, const char *b) {
        return a && b ? strcmp(a, b) == 0 : a == b;
}
#define streq(a, b) (strcmp((a), (b)) == 0)

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline bool isempty(const char *s) {
        return !s || !s[0];
}

static inline const char *strempty(const char *s) {
        return s ?: "";
}

usec_t now_usec(void);  /* CLOCK_MONOTONIC */

/* Reads a whole (small) file, NUL-terminated. Returns 0 or negative errno. */
int read_full_file(const char *path, char **ret, size_t *ret_size);
/* The same for /proc/PID/name. */
int read_proc_file(pid_t pid, const char *name, char **ret, size_t *ret_size);
/* The first mount point of fstype in /proc/self/mountinfo whose super options include
 * super_option (NULL: any); -ENOENT if none. */
int mount_point_of(const char *fstype, const char *super_option, char **ret);

/* vasprintf(3) as a value: the formatted string, or NULL when out of memory. For messages that
 * have a fallback text (desc ?: "..."), where an allocation failure must not lose the error. */
char *vasprintf_or_null(const char *fmt, va_list ap) _printf_(1, 0);

/* Pure: a process's path in one cgroup hierarchy, from the text of /proc/PID/cgroup: the cgroup2
 * line ("0::PATH") when controller is NULL, else the v1 line whose controller list names it
 * ("4:cpu,memory:PATH"; a hybrid host has both kinds). -ENOENT: no such line (a v1-only host, a
 * controller not mounted); -EBADMSG: the path is not absolute; -EIDRM: the kernel marks the
 * cgroup " (deleted)" (cgroup2 only: the process is exiting and its cgroup was removed). */
int cgroup_path_from_proc(const char *text, const char *controller, char **ret);
/* Reads /proc/PID/cgroup and calls the above. */
int pid_cgroup_path(pid_t pid, const char *controller, char **ret);
/* Pure: whether cgroup path is control_group itself or below it ("/a/b" is under "/a",
 * "/ab" is not; everything is under "/"). */
bool cgroup_path_is_under(const char *path, const char *control_group);

/* "512M", "2G", "1048576" (bytes), base 1024; K/M/G/T suffixes, optional "iB"/"B". */
int parse_size(const char *s, uint64_t *ret);
/* "30s", "500ms", "2min", "1h", plain number = seconds. */
int parse_duration(const char *s, usec_t *ret);
int parse_boolean(const char *s);   /* 1, 0 or -EINVAL */

/* Human-readable size into buf ("1.5G"); returns buf. */
char *format_size(char *buf, size_t len, uint64_t bytes);
#define FORMAT_SIZE_MAX 16
