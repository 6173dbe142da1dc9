/* HostMemorySource=: read the host's memory budget from /proc/meminfo or a memory cgroup. */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "hostmem.h"
#include "log.h"

/* v1 reports "no limit" as PAGE_COUNTER_MAX in bytes, a little under INT64_MAX (the exact
 * value depends on the page size): anything this high is no limit. */
#define MEMCG1_UNLIMITED_BYTES (UINT64_C(1) << 60)

struct HostMemory {
        HostMemoryKind kind;
        char *path;
        sd_event *event;
        host_memory_handler_t handler;
        void *userdata;
        int events_fd;                  /* v2: memory.events, kernfs notifies POLLPRI */
        sd_event_source *events_source;
        int threshold_fd;               /* v1: eventfd registered in cgroup.event_control */
        sd_event_source *threshold_source;
        uint64_t threshold_bytes;
        char *cgroup;                   /* the source's path in its hierarchy ("/machine.slice"),
                                         * NULL for /proc/meminfo or when it cannot be told */
};

static const char *const host_memory_kind_table[_HOST_MEMORY_KIND_MAX] = {
        [HOST_MEMORY_MEMINFO] = "meminfo",
        [HOST_MEMORY_CGROUP2] = "cgroup2",
        [HOST_MEMORY_CGROUP1] = "cgroup1",
};

DEFINE_STRING_TABLE_TO_STRING(host_memory_kind, HostMemoryKind, _HOST_MEMORY_KIND_MAX)

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;

        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *s == '-')
                return -EINVAL;
        *ret = v;
        return 0;
}

int meminfo_parse_swap_total(const char *text, uint64_t *ret) {
        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
                unsigned long long kib;
                if (sscanf(l, "SwapTotal: %llu kB", &kib) == 1 && kib <= UINT64_MAX / 1024) {
                        *ret = kib * 1024;
                        return 0;
                }
        }
        return -ENOENT;
}

int meminfo_parse(const char *text, uint64_t *ret_total, uint64_t *ret_available, uint64_t *ret_swap_used) {
        uint64_t total = UINT64_MAX, available = UINT64_MAX, swap_total = 0, swap_free = 0;

        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
                char key[32];
                unsigned long long kib;
                if (sscanf(l, "%31[^:]: %llu kB", key, &kib) != 2 || kib > UINT64_MAX / 1024)
                        continue;
                if (streq(key, "MemTotal"))
                        total = kib * 1024;
                else if (streq(key, "MemAvailable"))
                        available = kib * 1024;
                else if (streq(key, "SwapTotal"))
                        swap_total = kib * 1024;
                else if (streq(key, "SwapFree"))
                        swap_free = kib * 1024;
        }
        if (total == UINT64_MAX || available == UINT64_MAX)
                return -EBADMSG;   /* not meminfo, or a kernel before 3.14 */
        *ret_total = total;
        *ret_available = MIN(available, total);
        *ret_swap_used = swap_total > swap_free ? swap_total - swap_free : 0;
        return 0;
}

int memory_stat_get(const char *text, const char *key, uint64_t *ret) {
        size_t n = strlen(key);

        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, key, n) == 0 && l[n] == ' ')
                        return parse_u64(l + n + 1, ret);
        return -ENOENT;
}

int memory_limit_parse(const char *text, uint64_t *ret) {
        uint64_t v;

        if (strncmp(text, "max", 3) == 0 && (text[3] == '\0' || text[3] == '\n')) {
                *ret = UINT64_MAX;
                return 0;
        }
        if (parse_u64(text, &v) < 0)
                return -EINVAL;
        *ret = v >= MEMCG1_UNLIMITED_BYTES ? UINT64_MAX : v;
        return 0;
}

int process_status_parse(const char *text, uint64_t *ret_rss, uint64_t *ret_swap) {
        uint64_t rss = UINT64_MAX, swap = 0;

        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
                unsigned long long kib;
                if (sscanf(l, "VmRSS: %llu kB", &kib) == 1 && kib <= UINT64_MAX / 1024)
                        rss = kib * 1024;
                else if (sscanf(l, "VmSwap: %llu kB", &kib) == 1 && kib <= UINT64_MAX / 1024)
                        swap = kib * 1024;
        }
        if (rss == UINT64_MAX)
                return -ENODATA;   /* a zombie, or a kernel thread */
        *ret_rss = rss;
        *ret_swap = swap;
        return 0;
}

int process_footprint(pid_t pid, uint64_t *ret_rss, uint64_t *ret_swap) {
        _cleanup_free_ char *text = NULL;
        int r;

        r = read_proc_file(pid, "status", &text, NULL);
        if (r < 0)
                return r;
        return process_status_parse(text, ret_rss, ret_swap);
}

static int read_at(const HostMemory *h, const char *file, char **ret) {
        _cleanup_free_ char *p = NULL;

        if (asprintf(&p, "%s/%s", h->path, file) < 0)
                return -ENOMEM;
        return read_full_file(p, ret, NULL);
}

static int read_u64_at(const HostMemory *h, const char *file, uint64_t *ret) {
        _cleanup_free_ char *text = NULL;
        int r = read_at(h, file, &text);

        return r < 0 ? r : memory_limit_parse(text, ret);
}

static int host_mem_total(uint64_t *ret_total, uint64_t *ret_swap_total) {
        _cleanup_free_ char *text = NULL;
        uint64_t available, swap;
        int r = read_full_file("/proc/meminfo", &text, NULL);

        if (r < 0)
                return r;
        if (meminfo_parse_swap_total(text, ret_swap_total) < 0)
                *ret_swap_total = 0;
        return meminfo_parse(text, ret_total, &available, &swap);
}

int memcg1_mount_point(char **ret) {
        return mount_point_of("cgroup", "memory", ret);
}

int host_memory_read(HostMemory *h, HostBudget *b) {
        _cleanup_free_ char *text = NULL;
        uint64_t limit = UINT64_MAX, high = UINT64_MAX, current, inactive_file = 0, swap = 0, total;
        int r;

        b->valid = false;
        if (h->kind == HOST_MEMORY_MEMINFO) {
                uint64_t available;
                r = read_full_file(h->path, &text, NULL);
                if (r < 0)
                        return r;
                r = meminfo_parse(text, &total, &available, &swap);
                if (r < 0)
                        return r;
                uint64_t swap_total = 0;
                (void) meminfo_parse_swap_total(text, &swap_total);
                b->capacity_bytes = total;
                b->used_bytes = total - available;
                b->swap_bytes = swap;
                b->swap_capable = swap_total > 0;
                b->valid = true;
                return 0;
        }

        bool v2 = h->kind == HOST_MEMORY_CGROUP2;
        r = read_u64_at(h, v2 ? "memory.max" : "memory.limit_in_bytes", &limit);
        if (r < 0)
                return r;
        if (v2)
                (void) read_u64_at(h, "memory.high", &high);   /* absent on the root */
        r = read_u64_at(h, v2 ? "memory.current" : "memory.usage_in_bytes", &current);
        if (r < 0)
                return r;
        if (current == UINT64_MAX)
                return -EBADMSG;
        r = read_at(h, "memory.stat", &text);
        if (r < 0)
                return r;
        /* What a cgroup holds that its own reclaim drops first, without a stall, is not use: the
         * kubelet's "working set" (usage - inactive_file) is the same measure. v1 has the
         * hierarchical total_* keys; v2's keys are hierarchical already. */
        if (memory_stat_get(text, v2 ? "inactive_file" : "total_inactive_file", &inactive_file) < 0)
                (void) memory_stat_get(text, "inactive_file", &inactive_file);
        if (v2) {
                if (read_u64_at(h, "memory.swap.current", &swap) < 0 || swap == UINT64_MAX)
                        swap = 0;   /* no swap controller */
        } else if (memory_stat_get(text, "total_swap", &swap) < 0 && memory_stat_get(text, "swap", &swap) < 0)
                swap = 0;           /* no swap accounting (swapaccount=0) */

        limit = MIN(limit, high);
        uint64_t swap_total, swap_max = UINT64_MAX;
        r = host_mem_total(&total, &swap_total);
        if (r < 0)
                return r;
        /* May this cgroup swap at all: the host has swap, and no swap limit of 0 (v2
         * memory.swap.max, v1 memory.memsw.limit_in_bytes equal to the memory limit). */
        if (v2)
                (void) read_u64_at(h, "memory.swap.max", &swap_max);
        else if (read_u64_at(h, "memory.memsw.limit_in_bytes", &swap_max) >= 0 && swap_max != UINT64_MAX)
                swap_max = swap_max > limit ? swap_max - limit : 0;
        b->swap_capable = swap_total > 0 && swap_max > 0;
        b->capacity_bytes = MIN(limit, total);
        b->used_bytes = current > inactive_file ? current - inactive_file : 0;
        b->swap_bytes = swap;
        b->valid = true;
        return 0;
}

static int on_source_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HostMemory *h = userdata;

        if (fd == h->threshold_fd) {
                uint64_t n;
                (void) !read(fd, &n, sizeof n);   /* the count; reading resets the eventfd */
        } else {
                char buf[512];
                /* kernfs: the next POLLPRI needs a read from the start */
                (void) lseek(fd, 0, SEEK_SET);
                (void) !read(fd, buf, sizeof buf);
        }
        if (h->handler)
                h->handler(h, h->userdata);
        return 0;
}

static int watch_fd(HostMemory *h, int fd, uint32_t events, sd_event_source **ret, const char *what) {
        int r = sd_event_add_io(h->event, ret, fd, events, on_source_event, h);

        if (r < 0)
                return r;
        (void) sd_event_source_set_description(*ret, what);
        return 0;
}

int host_memory_set_threshold(HostMemory *h, uint64_t bytes) {
        _cleanup_close_ int efd = -1, cfd = -1, ctl = -1;
        _cleanup_free_ char *p = NULL, *q = NULL;
        char line[64];
        int r;

        if (h->kind != HOST_MEMORY_CGROUP1 || !h->event || bytes == h->threshold_bytes)
                return 0;
        /* Closing the old eventfd unregisters its threshold. */
        h->threshold_source = sd_event_source_disable_unref(h->threshold_source);
        if (h->threshold_fd >= 0)
                close(h->threshold_fd);
        h->threshold_fd = -1;
        h->threshold_bytes = 0;

        efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (efd < 0)
                return -errno;
        if (asprintf(&p, "%s/memory.usage_in_bytes", h->path) < 0 ||
            asprintf(&q, "%s/cgroup.event_control", h->path) < 0)
                return -ENOMEM;
        cfd = open(p, O_RDONLY | O_CLOEXEC);
        ctl = open(q, O_WRONLY | O_CLOEXEC);
        if (cfd < 0 || ctl < 0)
                return -errno;
        snprintf(line, sizeof line, "%d %d %" PRIu64, efd, cfd, bytes);
        if (write(ctl, line, strlen(line)) < 0)
                return -errno;
        r = watch_fd(h, efd, EPOLLIN, &h->threshold_source, "host-memory-threshold");
        if (r < 0)
                return r;
        h->threshold_fd = TAKE_FD(efd);
        h->threshold_bytes = bytes;
        return 0;
}

int host_memory_new(HostMemory **ret, sd_event *e, const char *path, host_memory_handler_t handler, void *userdata) {
        _cleanup_(host_memory_freep) HostMemory *h = NULL;
        _cleanup_free_ char *probe = NULL;
        struct stat st;
        HostBudget b;
        int r;

        if (stat(path, &st) < 0)
                return -errno;
        h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        *h = (HostMemory) { .events_fd = -1, .threshold_fd = -1, .handler = handler, .userdata = userdata };
        h->path = strdup(path);
        if (!h->path)
                return -ENOMEM;
        if (!S_ISDIR(st.st_mode))
                h->kind = HOST_MEMORY_MEMINFO;
        else {
                if (asprintf(&probe, "%s/memory.current", path) < 0)
                        return -ENOMEM;
                if (access(probe, F_OK) >= 0)
                        h->kind = HOST_MEMORY_CGROUP2;
                else {
                        free(probe);
                        if (asprintf(&probe, "%s/memory.usage_in_bytes", path) < 0)
                                return -ENOMEM;
                        if (access(probe, F_OK) < 0)
                                return -EMEDIUMTYPE;   /* a directory, but no memory controller there */
                        h->kind = HOST_MEMORY_CGROUP1;
                }
        }
        r = host_memory_read(h, &b);
        if (r < 0)
                return r;
        if (h->kind != HOST_MEMORY_MEMINFO) {
                _cleanup_free_ char *mountinfo = NULL, *real = realpath(path, NULL);
                /* Which VMs the source holds is told from /proc/PID/cgroup; without the path in
                 * the hierarchy every VM counts, as with /proc/meminfo. */
                if (real && read_full_file("/proc/self/mountinfo", &mountinfo, NULL) >= 0)
                        (void) mountinfo_cgroup_path(mountinfo, real, h->kind == HOST_MEMORY_CGROUP1, &h->cgroup);
        }

        if (e) {
                h->event = sd_event_ref(e);
                if (h->kind == HOST_MEMORY_CGROUP2) {
                        free(probe);
                        if (asprintf(&probe, "%s/memory.events", path) < 0)
                                return -ENOMEM;
                        h->events_fd = open(probe, O_RDONLY | O_CLOEXEC);
                        /* the root cgroup has no memory.events: then PSI alone wakes us */
                        if (h->events_fd >= 0) {
                                r = watch_fd(h, h->events_fd, EPOLLPRI, &h->events_source, "host-memory-events");
                                if (r < 0)
                                        return r;
                        }
                }
        }
        *ret = TAKE_PTR(h);
        return 0;
}

HostMemory *host_memory_free(HostMemory *h) {
        if (!h)
                return NULL;
        sd_event_source_disable_unref(h->events_source);
        sd_event_source_disable_unref(h->threshold_source);
        if (h->events_fd >= 0)
                close(h->events_fd);
        if (h->threshold_fd >= 0)
                close(h->threshold_fd);
        sd_event_unref(h->event);
        free(h->path);
        free(h->cgroup);
        free(h);
        return NULL;
}

HostMemoryKind host_memory_kind(const HostMemory *h) {
        return h->kind;
}

const char *host_memory_path(const HostMemory *h) {
        return h->path;
}

/* mountinfo: "id parent maj:min root mountpoint options [optional...] - fstype source super". The
 * deepest cgroup mount (v1: with the memory controller) holding dir gives dir's path in the
 * hierarchy: the mount's root joined with the rest of dir. */
int mountinfo_cgroup_path(const char *mountinfo, const char *dir, bool v1, char **ret) {
        _cleanup_free_ char *buf = strdup(mountinfo), *best = NULL;
        size_t best_len = 0;
        bool found = false;

        if (!buf)
                return -ENOMEM;
        for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char root[PATH_MAX], mountpoint[PATH_MAX], type[64], super[512] = "";
                char *sep = strstr(line, " - ");
                if (!sep || sscanf(line, "%*s %*s %*s %4095s %4095s", root, mountpoint) != 2 ||
                    sscanf(sep + 3, "%63s %*s %511s", type, super) < 1 || !streq(type, v1 ? "cgroup" : "cgroup2"))
                        continue;
                bool memory = !v1;
                for (char *s2 = NULL, *opt = strtok_r(super, ",", &s2); !memory && opt; opt = strtok_r(NULL, ",", &s2))
                        memory = streq(opt, "memory");
                size_t n = strlen(mountpoint);
                if (streq(mountpoint, "/"))
                        n = 0;
                if (!memory || strncmp(dir, mountpoint, n) != 0 || (dir[n] != '/' && dir[n] != '\0') ||
                    (found && n < best_len))
                        continue;
                free(best);
                best = NULL;
                const char *rest = dir + n;
                if (asprintf(&best, "%s%s", streq(root, "/") && *rest ? "" : root, rest) < 0)
                        return -ENOMEM;
                if (!*best) {
                        free(best);
                        best = strdup("/");
                        if (!best)
                                return -ENOMEM;
                }
                best_len = n;
                found = true;
        }
        if (!found)
                return -ENOENT;
        *ret = TAKE_PTR(best);
        return 0;
}

int host_memory_holds_pid(const HostMemory *h, pid_t pid) {
        _cleanup_free_ char *cgroup = NULL;
        int r;

        if (h->kind == HOST_MEMORY_MEMINFO || !h->cgroup)
                return 1;
        r = pid_cgroup_path(pid, h->kind == HOST_MEMORY_CGROUP1 ? "memory" : NULL, &cgroup);
        if (r == -EIDRM)
                return 0;   /* exiting, its cgroup removed: in no budget's any more */
        if (r < 0)
                return r;
        return cgroup_path_is_under(cgroup, h->cgroup);
}
