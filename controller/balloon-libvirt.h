/* The balloon of a libvirt domain through libvirt's C API: libvirt holds the domain's only QMP
 * monitor, so its VMs are driven the way libvirt itself is asked to, with no change to their XML. */
#pragma once

#include <systemd/sd-event.h>
#include <systemd/sd-id128.h>

#include "balloon.h"

/* What machined reports as Service for the domains libvirt's QEMU driver registers; their
 * machine Id is the domain UUID. */
#define LIBVIRT_MACHINE_SERVICE "libvirt-qemu"
#define LIBVIRT_URI_DEFAULT "qemu:///system"

typedef struct LibvirtConnection LibvirtConnection;

/* One connection to uri for all libvirt machines, opened at once and reopened with back-off
 * whenever libvirtd goes away. The first open loads libvirt (dlopen_libvirt()); a library that
 * cannot be loaded is reported and retried as an unreachable libvirtd is, its reason naming
 * the package to install. Wires libvirt's event API to e (process-wide in libvirt: one
 * sd_event per process). -EOPNOTSUPP when built without libvirt. */
int libvirt_connection_new(LibvirtConnection **ret, sd_event *e, const char *uri);
LibvirtConnection *libvirt_connection_free(LibvirtConnection *c);

/* A Balloon for the domain with this UUID. It attaches by itself (now, after a reconnect, when
 * the domain starts) and reports through cb: on_ready; on_error with -ENODEV for a domain
 * without a usable balloon or not on this connection (unmanaged), -EAGAIN while libvirt is
 * still starting it, -ENOTCONN while libvirtd is unreachable (the desc says when it retries). */
int balloon_new_libvirt(Balloon **ret, LibvirtConnection *c, sd_id128_t uuid, const char *machine_name,
                        unsigned stats_interval_sec, const BalloonCallbacks *cb, void *userdata);

/* Pure, for unit tests: an attribute (model, freePageReporting) of the first <memballoon> under
 * <devices> in a domain XML as libvirt formats it. -ENOENT without a <memballoon>, -ENODATA
 * when it has no such attribute, -EBADMSG for an XML without <devices> or cut short. */
int libvirt_xml_memballoon_attribute(const char *xml, const char *name, char **ret);

/* Pure, for unit tests: virDomainMemoryStats() tags (KiB, counts, seconds) as the QMP layer's
 * GuestStats; *ret_actual_bytes is UINT64_MAX and *ret_last_update 0 when not reported. */
typedef struct LibvirtMemoryStat {
        int tag;
        unsigned long long val;
} LibvirtMemoryStat;
void libvirt_parse_memory_stats(const LibvirtMemoryStat *stats, size_t n, GuestStats *ret,
                                uint64_t *ret_actual_bytes, int64_t *ret_last_update);
