/* The host's memory budget source (HostMemorySource=): /proc/meminfo, or a cgroup v2 or v1
 * memory directory; what it holds against what it can hold, and a wake-up when that changes. */
#pragma once

#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "policy.h"

typedef enum HostMemoryKind {
        HOST_MEMORY_MEMINFO,     /* /proc/meminfo: MemTotal, MemAvailable, swap */
        HOST_MEMORY_CGROUP2,     /* memory.max/high, memory.current, memory.stat, memory.swap.current */
        HOST_MEMORY_CGROUP1,     /* memory.limit_in_bytes, memory.usage_in_bytes, memory.stat */
        _HOST_MEMORY_KIND_MAX,
} HostMemoryKind;

const char *host_memory_kind_to_string(HostMemoryKind k);

typedef struct HostMemory HostMemory;
typedef void (*host_memory_handler_t)(HostMemory *h, void *userdata);

/* path: "/proc/meminfo" (or another file in its format) or a cgroup directory, v2 or v1. The
 * handler runs when the source says its use changed (v1: a usage threshold crossed, see
 * host_memory_set_threshold(); v2: memory.events changed); /proc/meminfo has no such event. */
int host_memory_new(HostMemory **ret, sd_event *e, const char *path, host_memory_handler_t handler, void *userdata);
HostMemory *host_memory_free(HostMemory *h);
static inline void host_memory_freep(HostMemory **h) { host_memory_free(*h); }
HostMemoryKind host_memory_kind(const HostMemory *h);
const char *host_memory_path(const HostMemory *h);

/* Fills b->valid, capacity_bytes, used_bytes (RAM held, reclaimable file cache not counted),
 * swap_bytes and swap_capable from the source; leaves the other fields. A cgroup without a limit has the host's
 * MemTotal as capacity. */
int host_memory_read(HostMemory *h, HostBudget *b);

/* v1: wake the handler when memory.usage_in_bytes crosses bytes (either way); re-armed on each
 * call with a new value. A no-op for the other kinds. */
int host_memory_set_threshold(HostMemory *h, uint64_t bytes);

/* Pure parsers, for the tests. */
int meminfo_parse(const char *text, uint64_t *ret_total, uint64_t *ret_available, uint64_t *ret_swap_used);
int meminfo_parse_swap_total(const char *text, uint64_t *ret);
/* "KEY VALUE" lines (memory.stat): -ENOENT when key is missing. */
int memory_stat_get(const char *text, const char *key, uint64_t *ret);
/* A memory.max/memory.high/limit_in_bytes value: "max" and v1's "unlimited" (near INT64_MAX)
 * are UINT64_MAX. */
int memory_limit_parse(const char *text, uint64_t *ret);

/* Whether the source holds the process's memory: 1 for /proc/meminfo, else whether it is in the
 * source's cgroup or below (its memory cgroup on v1); < 0 when that cannot be read. */
int host_memory_holds_pid(const HostMemory *h, pid_t pid);
/* Pure parser behind it: dir's path in its cgroup hierarchy from mountinfo text (the process's
 * own is cgroup_path_from_proc(), util.h). */
int mountinfo_cgroup_path(const char *mountinfo, const char *dir, bool v1, char **ret);

/* What the host holds for a process: VmRSS and VmSwap from /proc/PID/status. */
int process_footprint(pid_t pid, uint64_t *ret_rss, uint64_t *ret_swap);
int process_status_parse(const char *text, uint64_t *ret_rss, uint64_t *ret_swap);

/* The mount point of the v1 memory controller, or -ENOENT on a pure cgroup2 host. */
int memcg1_mount_point(char **ret);
