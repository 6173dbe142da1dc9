/* VM discovery: systemd-machined (class "vm") for the machines, systemd1 for their scope's
 * cgroup, and the QEMU command line for the QMP socket. */
#pragma once

#include <sys/types.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <systemd/sd-id128.h>

#include "util.h"

typedef struct DiscoveredMachine {
        const char *name;
        const char *unit;             /* machine-NAME.scope */
        const char *control_group;    /* "/machine.slice/machine-NAME.scope", as systemd1 reports it */
        pid_t leader;
        const char *service;          /* who registered it: "libvirt-qemu", "nspawn", ... ("" if unset) */
        sd_id128_t id;                /* machined's Id: for libvirt, the domain UUID (null if unset) */
} DiscoveredMachine;

typedef struct DiscoveryCallbacks {
        /* A VM appeared, or was re-enumerated after machined restarted. */
        void (*on_machine_new)(const DiscoveredMachine *dm, void *userdata);
        void (*on_machine_removed)(const char *name, void *userdata);
        /* A full enumeration finished: names[] are all VMs machined knows (n of them); the
         * caller forgets machines not in it (they went away while machined was down). */
        void (*on_machines_synced)(char **names, size_t n, void *userdata);
        /* The first enumeration after discovery_start() is complete: every VM machined listed
         * was looked up (or could not be), or machined is not there. Called once. */
        void (*on_initial_sync)(void *userdata);
} DiscoveryCallbacks;

typedef struct Discovery Discovery;

int discovery_new(Discovery **ret, sd_bus *bus, sd_event *e, const DiscoveryCallbacks *cb, void *userdata);
Discovery *discovery_free(Discovery *d);
/* Subscribe to machined's signals and enumerate. */
int discovery_start(Discovery *d);
bool discovery_machined_running(const Discovery *d);

/* systemd1's ControlGroup of a slice, scope or service, asked asynchronously (GetUnit, then
 * the unit's ControlGroup). The handler runs once, with 0 and the cgroup, or a negative errno
 * and systemd's message; it may free the query. Freeing it earlier cancels it. */
typedef struct UnitCgroupQuery UnitCgroupQuery;
typedef void (*UnitCgroupHandler)(UnitCgroupQuery *q, int error, const char *cgroup, const char *message,
                                  void *userdata);
int unit_cgroup_query(sd_bus *bus, const char *unit, UnitCgroupHandler handler, void *userdata,
                      UnitCgroupQuery **ret);
UnitCgroupQuery *unit_cgroup_query_free(UnitCgroupQuery *q);

/* The cgroup2 mount point from /proc/self/mountinfo: /sys/fs/cgroup on unified hosts,
 * /sys/fs/cgroup/unified on hybrid ones. */
int cgroup2_mount_point(char **ret);

/* Pure: find a QMP unix socket in a NUL-separated argv (as /proc/PID/cmdline holds it).
 * Knows `-qmp unix:PATH[,...]` (and -qmp-pretty) and `-chardev socket,id=X,path=PATH,server=on`
 * with `-mon chardev=X,mode=control`; skips fd-passed and client-mode sockets. A relative
 * path is resolved against cwd (left relative if cwd is NULL). Prefers a monitor whose id or
 * path mentions "autoballoon" (a VM can give us a monitor of our own). -ENOENT if none. */
int qmp_socket_from_cmdline(const char *cmdline, size_t len, const char *cwd, char **ret);
/* Reads /proc/PID/cmdline and /proc/PID/cwd and calls the above. The cwd link is readable only
 * with ptrace access to PID (CAP_SYS_PTRACE, which the unit does not grant, or a leader of our
 * uid with no capabilities we lack): without it a relative path stays relative. */
int qmp_socket_from_pid(pid_t pid, char **ret);

