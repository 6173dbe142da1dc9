/* The balloon of a libvirt domain through libvirt's C API (virDomainSetMemoryFlags, memory stats,
 * BALLOON_CHANGE and lifecycle events), and libvirt's event loop wired into sd-event. */
#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <time.h>

#include "balloon-libvirt.h"
#include "libvirt-dl.h"
#include "log.h"

/* libvirtd restarting (a package upgrade, virtqemud's idle exit) is back within a second or
 * two; a libvirtd that stays down is asked again at most every 30 s. */
#define RECONNECT_MIN_USEC (500 * USEC_PER_MSEC)
#define RECONNECT_MAX_USEC (30 * USEC_PER_SEC)
/* A domain libvirt is still starting answers "domain is not running"; the STARTED event says
 * when it is, this only covers a lost event. */
#define ATTACH_RETRY_MIN_USEC (500 * USEC_PER_MSEC)
#define ATTACH_RETRY_MAX_USEC (10 * USEC_PER_SEC)
/* libvirt's keepalive: a libvirtd that stops answering (stopped, not exited) is declared dead
 * after about KEEPALIVE_INTERVAL_SEC * (KEEPALIVE_COUNT + 1) s and the connection closed; a
 * call waiting on it fails then instead of holding the loop for good. It is the one timer the
 * libvirt backend keeps while idle (libvirtd exiting is seen at once, as the socket closing):
 * one wakeup per interval, only while libvirt machines exist. */
#define KEEPALIVE_INTERVAL_SEC 10
#define KEEPALIVE_COUNT 3

/* --- libvirt's event loop on sd-event -------------------------------------------------------
 *
 * libvirt delivers domain events, keepalive and connection close only through an event loop.
 * It offers two: its own (virEventRunDefaultImpl(), a poll() loop of its own that would need a
 * thread and a hand-off of every callback to the daemon's thread), or any loop that implements
 * virEventRegisterImpl()'s six functions. sd-event maps onto those one to one (an fd watch is
 * an io source, a timeout a time source), so libvirt's sockets and timers are sources of the
 * daemon's own loop: callbacks run in the daemon's thread between its other events, no locking,
 * and no wakeup beyond libvirt's own (its keepalive, below).
 *
 * API calls (virDomainSetMemoryFlags, virDomainMemoryStats) are still synchronous RPCs: the
 * loop waits for libvirtd's answer, normally one QMP round trip of libvirtd's to the guest's
 * QEMU. They are made from a deferred source, never from inside a policy run or a libvirt
 * callback, and never while libvirt is starting the domain (see domain_attach()). Two cases
 * hold the loop longer: a libvirtd that stops answering (until the keepalive gives up), and a
 * domain whose job another client holds (a migration, a snapshot): libvirtd waits up to its
 * job timeout (30 s) before it answers. Moving these calls to a thread would need every
 * libvirt callback handed back to the loop; not done while moves are seconds apart.
 *
 * The registration is process-wide in libvirt, hence the one loop below. */

typedef struct VirWatch VirWatch;
struct VirWatch {
        VirWatch *next;
        int id;
        bool is_timeout;
        int fd;
        int interval_ms;                /* timeouts: -1 off, 0 every iteration, else a period */
        sd_event_source *source;
        virEventHandleCallback handle_cb;
        virEventTimeoutCallback timeout_cb;
        void *opaque;
        virFreeCallback ff;
        sd_event_source *free_source;   /* ff runs from here: libvirt may hold a lock in remove */
};

static sd_event *vir_loop;
static VirWatch *vir_watches;
static int vir_next_id = 1;

static VirWatch *vir_watch_find(int id, bool is_timeout) {
        for (VirWatch *w = vir_watches; w; w = w->next)
                if (w->id == id && w->is_timeout == is_timeout && !w->free_source)
                        return w;
        return NULL;
}

static void vir_watch_unlink(VirWatch *w) {
        for (VirWatch **p = &vir_watches; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        return;
                }
}

static uint32_t vir_to_epoll(int events) {
        return (events & VIR_EVENT_HANDLE_READABLE ? EPOLLIN : 0) |
               (events & VIR_EVENT_HANDLE_WRITABLE ? EPOLLOUT : 0);
}

static int vir_from_epoll(uint32_t revents) {
        return (revents & EPOLLIN ? VIR_EVENT_HANDLE_READABLE : 0) |
               (revents & EPOLLOUT ? VIR_EVENT_HANDLE_WRITABLE : 0) |
               (revents & EPOLLERR ? VIR_EVENT_HANDLE_ERROR : 0) |
               (revents & EPOLLHUP ? VIR_EVENT_HANDLE_HANGUP : 0);
}

static int vir_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        VirWatch *w = userdata;

        w->handle_cb(w->id, fd, vir_from_epoll(revents), w->opaque);
        return 0;
}

static int vir_add_handle(int fd, int events, virEventHandleCallback cb, void *opaque, virFreeCallback ff) {
        VirWatch *w = calloc(1, sizeof *w);

        if (!w)
                return -1;
        *w = (VirWatch) { .id = vir_next_id++, .fd = fd, .handle_cb = cb, .opaque = opaque, .ff = ff };
        if (sd_event_add_io(vir_loop, &w->source, fd, vir_to_epoll(events), vir_on_io, w) < 0) {
                free(w);
                return -1;
        }
        (void) sd_event_source_set_description(w->source, "libvirt-io");
        /* No events asked for: epoll would still report HUP and ERR. */
        if (events == 0)
                (void) sd_event_source_set_enabled(w->source, SD_EVENT_OFF);
        w->next = vir_watches;
        vir_watches = w;
        return w->id;
}

static void vir_update_handle(int id, int events) {
        VirWatch *w = vir_watch_find(id, false);

        if (!w)
                return;
        if (events == 0) {
                (void) sd_event_source_set_enabled(w->source, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_io_events(w->source, vir_to_epoll(events));
        (void) sd_event_source_set_enabled(w->source, SD_EVENT_ON);
}

static int vir_on_free(sd_event_source *s, void *userdata) {
        VirWatch *w = userdata;

        if (w->ff)
                w->ff(w->opaque);
        vir_watch_unlink(w);
        sd_event_source_disable_unref(w->free_source);
        free(w);
        return 0;
}

static int vir_remove(int id, bool is_timeout) {
        VirWatch *w = vir_watch_find(id, is_timeout);

        if (!w)
                return -1;
        w->source = sd_event_source_disable_unref(w->source);
        /* libvirt's contract: ff must not run from inside the remove call. */
        if (sd_event_add_defer(vir_loop, &w->free_source, vir_on_free, w) < 0) {
                /* cannot defer: leak the opaque rather than deadlock libvirt */
                vir_watch_unlink(w);
                free(w);
        }
        return 0;
}

static int vir_remove_handle(int id) {
        return vir_remove(id, false);
}

static void vir_arm_timeout(VirWatch *w) {
        if (w->interval_ms < 0) {
                (void) sd_event_source_set_enabled(w->source, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time_relative(w->source, (usec_t) w->interval_ms * USEC_PER_MSEC);
        (void) sd_event_source_set_enabled(w->source, SD_EVENT_ONESHOT);
}

static int vir_on_time(sd_event_source *s, uint64_t usec, void *userdata) {
        VirWatch *w = userdata;
        int id = w->id;

        /* A period: armed again first, so that the callback can change or remove it. */
        vir_arm_timeout(w);
        w->timeout_cb(id, w->opaque);
        return 0;
}

static int vir_add_timeout(int interval_ms, virEventTimeoutCallback cb, void *opaque, virFreeCallback ff) {
        VirWatch *w = calloc(1, sizeof *w);

        if (!w)
                return -1;
        *w = (VirWatch) { .id = vir_next_id++, .is_timeout = true, .fd = -1, .interval_ms = interval_ms,
                          .timeout_cb = cb, .opaque = opaque, .ff = ff };
        if (sd_event_add_time_relative(vir_loop, &w->source, CLOCK_MONOTONIC, 0, 0, vir_on_time, w) < 0) {
                free(w);
                return -1;
        }
        (void) sd_event_source_set_description(w->source, "libvirt-timeout");
        vir_arm_timeout(w);
        w->next = vir_watches;
        vir_watches = w;
        return w->id;
}

static void vir_update_timeout(int id, int interval_ms) {
        VirWatch *w = vir_watch_find(id, true);

        if (!w)
                return;
        w->interval_ms = interval_ms;
        vir_arm_timeout(w);
}

static int vir_remove_timeout(int id) {
        return vir_remove(id, true);
}

/* At exit the loop no longer runs: call the free functions still waiting for it. */
static void vir_flush_frees(void) {
        for (VirWatch *w = vir_watches, *next; w; w = next) {
                next = w->next;
                if (w->free_source)
                        (void) vir_on_free(w->free_source, w);
        }
}

static void vir_on_error(void *userdata, virErrorPtr error) {
        /* Every failure is reported where it happens, with what was being done. */
}

/* libvirt is loaded here, as the first connection opens (the first libvirt machine), not at
 * start-up: a daemon with QMP machines only never maps it. Until it loads, no sym_ function is
 * called: every path to one goes through an open connection or an attached domain. */
static int vir_setup(sd_event *e) {
        int r;

        if (vir_loop)
                return vir_loop == e ? 0 : -EBUSY;
        r = dlopen_libvirt();
        if (r < 0)
                return r;
        if (sym_virInitialize() < 0)
                return -EIO;
        sym_virSetErrorFunc(NULL, vir_on_error);
        vir_loop = sd_event_ref(e);
        sym_virEventRegisterImpl(vir_add_handle, vir_update_handle, vir_remove_handle,
                                 vir_add_timeout, vir_update_timeout, vir_remove_timeout);
        return 0;
}

static const char *vir_error(void) {
        return sym_virGetLastErrorMessage();
}

/* --- connection ----------------------------------------------------------------------------- */

typedef struct LibvirtDomain LibvirtDomain;

struct LibvirtConnection {
        sd_event *event;
        char *uri;
        virConnectPtr conn;               /* NULL while libvirtd is unreachable */
        int lifecycle_cb_id, balloon_cb_id; /* -1: not registered */
        bool close_registered;
        sd_event_source *reconnect_timer;
        usec_t reconnect_usec;            /* the current back-off */
        sd_event_source *drop_defer;      /* closes a dead connection from a clean stack */
        char *down_reason;                /* why conn is NULL, for StateReason */
        LibvirtDomain *domains;
};

struct LibvirtDomain {
        LibvirtDomain *prev, *next;
        LibvirtConnection *c;
        Balloon *balloon;
        sd_id128_t uuid;
        char uuid_string[SD_ID128_UUID_STRING_MAX];
        char *machine_name;
        char *description;                /* "libvirt domain NAME on URI", for logs */
        virDomainPtr dom;                 /* set while attached */
        bool ready;
        uint64_t ram_bytes;
        unsigned stats_interval_sec;
        int64_t stats_last_update;        /* LAST_UPDATE (wall-clock seconds) last reported */
        bool stats_failing;

        /* Work done from a deferred source: never inside the caller's stack. */
        sd_event_source *work;
        bool want_attach, want_stats;
        bool want_target;
        uint64_t target_bytes;
        void (*target_cb)(Balloon *b, int error, const char *desc, void *userdata);
        void *target_userdata;
        sd_event_source *retry_timer;     /* attach again while libvirt starts the domain */
        usec_t retry_usec;
};

static void connection_down(LibvirtConnection *c, const char *why);
static void domain_schedule(LibvirtDomain *d);

static LibvirtDomain *connection_find(LibvirtConnection *c, virDomainPtr dom) {
        unsigned char uuid[VIR_UUID_BUFLEN];

        if (sym_virDomainGetUUID(dom, uuid) < 0)
                return NULL;
        for (LibvirtDomain *d = c->domains; d; d = d->next)
                if (memcmp(d->uuid.bytes, uuid, sizeof uuid) == 0)
                        return d;
        return NULL;
}

/* After a failed call: was it the connection? Then the close callback or the keepalive will
 * say so too, but act at once. */
static bool connection_check(LibvirtConnection *c) {
        if (c->conn && sym_virConnectIsAlive(c->conn) == 1)
                return true;
        if (c->conn)
                connection_down(c, "connection to libvirtd lost");
        return false;
}

static void domain_detach(LibvirtDomain *d) {
        d->ready = false;
        d->stats_last_update = 0;
        if (d->dom) {
                sym_virDomainFree(d->dom);
                d->dom = NULL;
        }
}

/* Returns 0, for tail calls from attach. */
static int domain_fail(LibvirtDomain *d, int error, const char *fmt, ...) _printf_(3, 4);
static int domain_fail(LibvirtDomain *d, int error, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        _cleanup_free_ char *desc = vasprintf_or_null(fmt, ap);
        va_end(ap);
        domain_detach(d);
        balloon_backend_error(d->balloon, error, desc ?: "libvirt error");
        return 0;
}

static int on_balloon_change(virConnectPtr conn, virDomainPtr dom, unsigned long long actual_kib, void *opaque) {
        LibvirtDomain *d = connection_find(opaque, dom);

        if (d && d->ready)
                balloon_backend_actual(d->balloon, (uint64_t) actual_kib * KIB);
        return 0;
}

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque) {
        LibvirtDomain *d = connection_find(opaque, dom);

        if (!d)
                return 0;
        switch (event) {
        case VIR_DOMAIN_EVENT_STARTED:
        case VIR_DOMAIN_EVENT_RESUMED:
                if (!d->ready) {
                        d->want_attach = true;
                        domain_schedule(d);
                }
                break;
        case VIR_DOMAIN_EVENT_STOPPED:
        case VIR_DOMAIN_EVENT_CRASHED:
                /* machined drops the machine as the scope goes; until then it is not ours to move */
                (void) domain_fail(d, -ESHUTDOWN, "%s %s.", d->description,
                                   event == VIR_DOMAIN_EVENT_CRASHED ? "crashed" : "stopped");
                break;
        default:
                break;
        }
        return 0;
}

static void on_close(virConnectPtr conn, int reason, void *opaque) {
        LibvirtConnection *c = opaque;

        /* Inside libvirt's dispatch: close the connection from the next loop iteration. */
        (void) sd_event_source_set_enabled(c->drop_defer, SD_EVENT_ONESHOT);
}

static int on_drop_defer(sd_event_source *s, void *userdata) {
        LibvirtConnection *c = userdata;

        if (c->conn)
                connection_down(c, "connection to libvirtd closed");
        return 0;
}

static void connection_close(LibvirtConnection *c) {
        if (!c->conn)
                return;
        for (LibvirtDomain *d = c->domains; d; d = d->next)
                domain_detach(d);
        /* On a dead connection these fail locally; they still drop libvirt's references. */
        if (c->lifecycle_cb_id >= 0)
                (void) sym_virConnectDomainEventDeregisterAny(c->conn, c->lifecycle_cb_id);
        if (c->balloon_cb_id >= 0)
                (void) sym_virConnectDomainEventDeregisterAny(c->conn, c->balloon_cb_id);
        if (c->close_registered)
                (void) sym_virConnectUnregisterCloseCallback(c->conn, on_close);
        c->lifecycle_cb_id = c->balloon_cb_id = -1;
        c->close_registered = false;
        (void) sym_virConnectClose(c->conn);
        c->conn = NULL;
}

static void connection_schedule_reconnect(LibvirtConnection *c) {
        c->reconnect_usec = c->reconnect_usec ? MIN(c->reconnect_usec * 2, RECONNECT_MAX_USEC) : RECONNECT_MIN_USEC;
        (void) sd_event_source_set_time_relative(c->reconnect_timer, c->reconnect_usec);
        (void) sd_event_source_set_enabled(c->reconnect_timer, SD_EVENT_ONESHOT);
}

static void connection_report_down(LibvirtConnection *c) {
        for (LibvirtDomain *d = c->domains; d; d = d->next)
                (void) domain_fail(d, -ENOTCONN, "%s", c->down_reason);
}

static void connection_down(LibvirtConnection *c, const char *why) {
        bool was_up = c->conn;

        connection_close(c);
        connection_schedule_reconnect(c);
        free(c->down_reason);
        if (asprintf(&c->down_reason, "libvirt %s: %s; reconnecting in %.1f s.", c->uri, why,
                     (double) c->reconnect_usec / USEC_PER_SEC) < 0)
                c->down_reason = NULL;
        if (was_up)
                log_warning("%s", c->down_reason ?: "libvirt connection lost.");
        else
                log_debug("%s", c->down_reason ?: "libvirt connection failed.");
        connection_report_down(c);
}

static int connection_open(LibvirtConnection *c) {
        virConnectPtr conn;
        int r;

        assert(!c->conn);

        /* Loading the library is retried with the connection: a libvirt installed while the
         * daemon runs is used at the next try. */
        r = vir_setup(c->event);
        if (r < 0) {
                connection_down(c, r == -ELIBACC ? LIBVIRT_SONAME " cannot be loaded; " LIBVIRT_PACKAGE_HINT :
                                   r == -ELIBBAD ? LIBVIRT_SONAME " is older than autoballoond needs" :
                                   "cannot initialize libvirt");
                return -ENOTCONN;
        }
        conn = sym_virConnectOpen(c->uri);
        if (!conn) {
                _cleanup_free_ char *why = NULL;
                if (asprintf(&why, "cannot connect (%s)", vir_error()) < 0)
                        why = NULL;
                connection_down(c, why ?: "cannot connect");
                return -ENOTCONN;
        }
        c->conn = conn;
        if (sym_virConnectSetKeepAlive(conn, KEEPALIVE_INTERVAL_SEC, KEEPALIVE_COUNT) < 0)
                log_debug("libvirt %s: no keepalive (%s); relying on the socket closing.", c->uri, vir_error());
        c->close_registered = sym_virConnectRegisterCloseCallback(conn, on_close, c, NULL) >= 0;
        c->lifecycle_cb_id = sym_virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                                  VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), c, NULL);
        c->balloon_cb_id = sym_virConnectDomainEventRegisterAny(conn, NULL, VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE,
                                                                VIR_DOMAIN_EVENT_CALLBACK(on_balloon_change), c, NULL);
        if (c->lifecycle_cb_id < 0 || c->balloon_cb_id < 0) {
                _cleanup_free_ char *why = NULL;
                if (asprintf(&why, "cannot subscribe to domain events (%s)", vir_error()) < 0)
                        why = NULL;
                connection_down(c, why ?: "cannot subscribe to domain events");
                return -ENOTCONN;
        }
        if (c->reconnect_usec > 0)
                log_info("libvirt %s: connected again.", c->uri);
        else
                log_info("libvirt %s: connected.", c->uri);
        c->reconnect_usec = 0;
        c->down_reason = mfree(c->down_reason);
        for (LibvirtDomain *d = c->domains; d; d = d->next) {
                d->want_attach = true;
                domain_schedule(d);
        }
        return 0;
}

static int on_reconnect_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        LibvirtConnection *c = userdata;

        if (!c->conn)
                (void) connection_open(c);
        return 0;
}

int libvirt_connection_new(LibvirtConnection **ret, sd_event *e, const char *uri) {
        LibvirtConnection *c;

        if (vir_loop && vir_loop != e)
                return -EBUSY;   /* libvirt's event implementation is process-wide */
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);
        c->lifecycle_cb_id = c->balloon_cb_id = -1;
        c->uri = strdup(uri ?: LIBVIRT_URI_DEFAULT);
        if (!c->uri ||
            sd_event_add_time_relative(e, &c->reconnect_timer, CLOCK_MONOTONIC, 0, 0, on_reconnect_timer, c) < 0 ||
            sd_event_add_defer(e, &c->drop_defer, on_drop_defer, c) < 0) {
                libvirt_connection_free(c);
                return -ENOMEM;
        }
        (void) sd_event_source_set_enabled(c->reconnect_timer, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(c->drop_defer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(c->reconnect_timer, "libvirt-reconnect");
        (void) connection_open(c);   /* a failure is retried: libvirtd, or libvirt itself, may come after us */
        *ret = c;
        return 0;
}

LibvirtConnection *libvirt_connection_free(LibvirtConnection *c) {
        if (!c)
                return NULL;
        assert(!c->domains);   /* every Balloon of this connection is freed before it */
        connection_close(c);
        sd_event_source_disable_unref(c->reconnect_timer);
        sd_event_source_disable_unref(c->drop_defer);
        vir_flush_frees();
        sd_event_unref(c->event);
        free(c->uri);
        free(c->down_reason);
        free(c);
        return NULL;
}

/* --- one domain ------------------------------------------------------------------------------ */

int libvirt_xml_memballoon_attribute(const char *xml, const char *name, char **ret) {
        const char *devices, *p, *end, *m;
        size_t n = strlen(name);

        assert(xml);
        assert(ret);

        devices = strstr(xml, "<devices>");
        if (!devices)
                return -EBADMSG;
        /* "<memballoon" followed by a space, '/' or '>': not <memballoonfoo> */
        for (p = devices; (p = strstr(p, "<memballoon")); p++)
                if (strchr(" \t\n/>", p[strlen("<memballoon")]))
                        break;
        if (!p)
                return -ENOENT;
        end = strchr(p, '>');
        if (!end)
                return -EBADMSG;
        for (m = p; (m = strstr(m, name)) && m < end; m++)
                if (strchr(" \t\n", m[-1]) && m[n] == '=' && (m[n + 1] == '\'' || m[n + 1] == '"')) {
                        const char *v = m + n + 2, *q = strchr(v, m[n + 1]);
                        if (!q || q > end)
                                return -EBADMSG;
                        *ret = strndup(v, q - v);
                        return *ret ? 0 : -ENOMEM;
                }
        return -ENODATA;
}

void libvirt_parse_memory_stats(const LibvirtMemoryStat *stats, size_t n, GuestStats *ret,
                                uint64_t *ret_actual_bytes, int64_t *ret_last_update) {
        unsigned n_reported = 0;

        /* Everything "not reported", as the QMP layer leaves what QEMU did not get. */
        *ret = (GuestStats) {};
        ret->total_bytes = ret->free_bytes = ret->available_bytes = ret->caches_bytes = UINT64_MAX;
        ret->major_faults = ret->minor_faults = ret->swap_in_bytes = ret->swap_out_bytes = UINT64_MAX;
        ret->oom_kills = ret->alloc_stalls = UINT64_MAX;
        ret->direct_scan = ret->direct_reclaim = ret->async_scan = ret->async_reclaim = UINT64_MAX;
        *ret_actual_bytes = UINT64_MAX;
        *ret_last_update = 0;

        for (size_t i = 0; i < n; i++) {
                uint64_t v = stats[i].val, *dst = NULL;
                bool kib = true;

                /* libvirt's names are not QEMU's: AVAILABLE is the guest's MemTotal, USABLE its
                 * MemAvailable; sizes are in KiB, faults are counts. */
                switch (stats[i].tag) {
                case VIR_DOMAIN_MEMORY_STAT_AVAILABLE:   dst = &ret->total_bytes; break;
                case VIR_DOMAIN_MEMORY_STAT_UNUSED:      dst = &ret->free_bytes; break;
                case VIR_DOMAIN_MEMORY_STAT_USABLE:      dst = &ret->available_bytes; break;
                case VIR_DOMAIN_MEMORY_STAT_DISK_CACHES: dst = &ret->caches_bytes; break;
                case VIR_DOMAIN_MEMORY_STAT_SWAP_IN:     dst = &ret->swap_in_bytes; break;
                case VIR_DOMAIN_MEMORY_STAT_SWAP_OUT:    dst = &ret->swap_out_bytes; break;
                case VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT: dst = &ret->major_faults; kib = false; break;
                case VIR_DOMAIN_MEMORY_STAT_MINOR_FAULT: dst = &ret->minor_faults; kib = false; break;
                case VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON:
                        *ret_actual_bytes = v <= UINT64_MAX / KIB ? v * KIB : UINT64_MAX;
                        continue;
                case VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE:
                        *ret_last_update = v <= INT64_MAX ? (int64_t) v : 0;
                        continue;
                default:
                        continue;   /* RSS (the host's view), hugetlb, and what a newer libvirt adds */
                }
                *dst = !kib ? v : v <= UINT64_MAX / KIB ? v * KIB : UINT64_MAX;
                n_reported++;
        }
        /* As with QMP: no report from the guest yet is no data, not a guest with zero memory. */
        ret->valid = n_reported > 0 && *ret_last_update > 0;
}

static void domain_schedule(LibvirtDomain *d) {
        (void) sd_event_source_set_enabled(d->work, SD_EVENT_ONESHOT);
}

static int domain_retry_attach(LibvirtDomain *d, const char *why) {
        d->retry_usec = d->retry_usec ? MIN(d->retry_usec * 2, ATTACH_RETRY_MAX_USEC) : ATTACH_RETRY_MIN_USEC;
        (void) sd_event_source_set_time_relative(d->retry_timer, d->retry_usec);
        (void) sd_event_source_set_enabled(d->retry_timer, SD_EVENT_ONESHOT);
        return domain_fail(d, -EAGAIN, "%s", why);
}

static int domain_attach(LibvirtDomain *d) {
        LibvirtConnection *c = d->c;
        _cleanup_free_ char *xml = NULL, *model = NULL, *fpr = NULL;
        virDomainMemoryStatStruct vs[VIR_DOMAIN_MEMORY_STAT_NR];
        LibvirtMemoryStat st[VIR_DOMAIN_MEMORY_STAT_NR];
        unsigned long max_kib;
        GuestStats stats;
        uint64_t actual_bytes;
        int64_t last_update;
        int n, r, state, reason;

        domain_detach(d);
        if (!c->conn) {
                balloon_backend_error(d->balloon, -ENOTCONN, c->down_reason ?: "libvirt is not connected.");
                return 0;
        }

        d->dom = sym_virDomainLookupByUUID(c->conn, d->uuid.bytes);
        if (!d->dom) {
                if (sym_virGetLastErrorCode() == VIR_ERR_NO_DOMAIN)
                        return domain_fail(d, -ENODEV, "No libvirt domain with UUID %s on %s (the machine's Id).",
                                           d->uuid_string, c->uri);
                if (!connection_check(c))
                        return 0;
                return domain_fail(d, -EIO, "Failed to look up libvirt domain %s on %s: %s",
                                   d->uuid_string, c->uri, vir_error());
        }
        free(d->description);
        if (asprintf(&d->description, "libvirt domain %s on %s", strempty(sym_virDomainGetName(d->dom)), c->uri) < 0)
                d->description = NULL;

        /* <memballoon model='none'/> or none at all: nothing to drive, and libvirt would refuse
         * the live size change only once we tried. */
        xml = sym_virDomainGetXMLDesc(d->dom, 0);
        if (!xml) {
                if (!connection_check(c))
                        return 0;
                return domain_fail(d, -EIO, "Failed to read the XML of %s: %s", d->description, vir_error());
        }
        r = libvirt_xml_memballoon_attribute(xml, "model", &model);
        if (r == -ENOMEM)
                return domain_fail(d, r, "Out of memory.");
        if (r < 0 || strncmp(model, "virtio", strlen("virtio")) != 0)
                return domain_fail(d, -ENODEV, "%s has %s: no virtio balloon to drive.", d->description,
                                   r == -ENOENT ? "no <memballoon>" :
                                   r < 0 ? "a <memballoon> without a model" :
                                   streq(model, "none") ? "<memballoon model='none'/>" : "a non-virtio <memballoon>");
        /* libvirt writes freePageReporting only when set (libvirt 6.9 or later) */
        r = libvirt_xml_memballoon_attribute(xml, "freePageReporting", &fpr);
        if (r == -ENOMEM)
                return domain_fail(d, r, "Out of memory.");
        balloon_backend_free_page_reporting(d->balloon, r >= 0 && streq(fpr, "on"));

        /* While libvirt starts the domain (paused, starting up) it holds the domain's job, and
         * the calls below would wait for it with the loop: come back on the STARTED event.
         * virDomainGetState() needs no job. */
        if (sym_virDomainGetState(d->dom, &state, &reason, 0) < 0) {
                if (!connection_check(c))
                        return 0;
                return domain_fail(d, -EIO, "Failed to read the state of %s: %s", d->description, vir_error());
        }
        if ((state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED && state != VIR_DOMAIN_BLOCKED) ||
            (state == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_STARTING_UP))
                return domain_retry_attach(d, "Waiting for libvirt to start the domain.");

        /* The balloon's ceiling is the boot RAM (<memory>, as QEMU's base-memory); above it
         * libvirt refuses a live change. */
        max_kib = sym_virDomainGetMaxMemory(d->dom);
        if (max_kib == 0) {
                if (!connection_check(c))
                        return 0;
                return domain_retry_attach(d, "Waiting for libvirt to start the domain.");
        }
        if ((uint64_t) max_kib > BALLOON_RAM_MAX_BYTES / KIB)
                return domain_fail(d, -EBADMSG, "libvirt reports an implausible memory size of %lu KiB for %s.",
                                   max_kib, d->description);

        if (d->stats_interval_sec > 0 &&
            sym_virDomainSetMemoryStatsPeriod(d->dom, (int) d->stats_interval_sec, VIR_DOMAIN_AFFECT_LIVE) < 0) {
                if (!connection_check(c))
                        return 0;
                log_warning("Machine %s: failed to enable guest statistics of %s, continuing without: %s",
                            d->machine_name, d->description, vir_error());
        }

        n = sym_virDomainMemoryStats(d->dom, vs, VIR_DOMAIN_MEMORY_STAT_NR, 0);
        if (n < 0) {
                if (!connection_check(c))
                        return 0;
                if (sym_virGetLastErrorCode() == VIR_ERR_OPERATION_INVALID)   /* "domain is not running" */
                        return domain_retry_attach(d, "Waiting for libvirt to start the domain.");
                return domain_fail(d, -EIO, "Failed to read the balloon of %s: %s", d->description, vir_error());
        }
        for (int i = 0; i < n; i++)
                st[i] = (LibvirtMemoryStat) { vs[i].tag, vs[i].val };
        libvirt_parse_memory_stats(st, (size_t) n, &stats, &actual_bytes, &last_update);
        if (actual_bytes == UINT64_MAX)
                return domain_fail(d, -EIO, "libvirt reports no balloon size for %s.", d->description);

        d->ram_bytes = (uint64_t) max_kib * KIB;
        d->retry_usec = 0;
        (void) sd_event_source_set_enabled(d->retry_timer, SD_EVENT_OFF);
        d->ready = true;
        balloon_backend_ready(d->balloon, actual_bytes, d->ram_bytes);
        return 0;
}

static void domain_set_target(LibvirtDomain *d) {
        void (*cb)(Balloon *b, int error, const char *desc, void *userdata) = d->target_cb;
        void *userdata = d->target_userdata;
        uint64_t target = d->target_bytes;
        _cleanup_free_ char *desc = NULL;
        int error = 0;

        d->want_target = false;
        d->target_cb = NULL;
        if (!d->ready)
                error = -ENOTCONN;
        else if (sym_virDomainSetMemoryFlags(d->dom, (unsigned long) (target / KIB), VIR_DOMAIN_AFFECT_LIVE) < 0)
                error = -EIO;
        if (error < 0 && asprintf(&desc, "Failed to set the balloon of %s to %" PRIu64 " bytes: %s",
                                  strempty(d->description), target,
                                  error == -ENOTCONN ? "not connected" : vir_error()) < 0)
                desc = NULL;
        if (error == -EIO)
                (void) connection_check(d->c);
        if (cb)
                cb(d->balloon, error, desc, userdata);
}

static void domain_poll_stats(LibvirtDomain *d) {
        virDomainMemoryStatStruct vs[VIR_DOMAIN_MEMORY_STAT_NR];
        LibvirtMemoryStat st[VIR_DOMAIN_MEMORY_STAT_NR];
        GuestStats stats;
        uint64_t actual_bytes;
        int64_t last_update;
        int n;

        d->want_stats = false;
        if (!d->ready)
                return;
        n = sym_virDomainMemoryStats(d->dom, vs, VIR_DOMAIN_MEMORY_STAT_NR, 0);
        if (n < 0) {
                log_full(d->stats_failing ? LOG_DEBUG : LOG_WARNING,
                         "Failed to read guest statistics of %s: %s", d->description, vir_error());
                d->stats_failing = true;
                (void) connection_check(d->c);
                return;
        }
        d->stats_failing = false;
        for (int i = 0; i < n; i++)
                st[i] = (LibvirtMemoryStat) { vs[i].tag, vs[i].val };
        libvirt_parse_memory_stats(st, (size_t) n, &stats, &actual_bytes, &last_update);
        /* new when the stamp changed: QEMU's wall clock may go back, and a stamp in the future
         * must not hide every later sample */
        if (!stats.valid || last_update == d->stats_last_update)
                return;   /* nothing new since the last poll */
        d->stats_last_update = last_update;

        /* LAST_UPDATE is QEMU's wall clock at reception, as QMP's last-update. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        usec_t age = (usec_t) MAX((int64_t) ts.tv_sec - last_update, (int64_t) 0) * USEC_PER_SEC;
        usec_t now = now_usec();
        stats.updated_usec = now > age ? now - age : 0;
        balloon_backend_stats(d->balloon, &stats);
}

static int on_work(sd_event_source *s, void *userdata) {
        LibvirtDomain *d = userdata;

        if (d->want_attach) {
                d->want_attach = false;
                (void) domain_attach(d);
        }
        if (d->want_target)
                domain_set_target(d);
        if (d->want_stats)
                domain_poll_stats(d);
        return 0;
}

static int on_retry_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        LibvirtDomain *d = userdata;

        if (!d->ready) {
                d->want_attach = true;
                domain_schedule(d);
        }
        return 0;
}

static bool lv_is_ready(void *impl) {
        LibvirtDomain *d = impl;
        return d->ready && d->c->conn;
}

static int lv_set_target(void *impl, uint64_t target_bytes,
                         void (*cb)(Balloon *b, int error, const char *desc, void *userdata), void *userdata) {
        LibvirtDomain *d = impl;

        if (!lv_is_ready(d))
                return -ENOTCONN;
        /* libvirt takes KiB and refuses more than <memory>; 0 would be refused too. */
        if (target_bytes < KIB || target_bytes > d->ram_bytes || target_bytes / KIB > ULONG_MAX)
                return -ERANGE;
        /* A newer target replaces one not yet sent: the older caller hears it went through, as
         * the newer move carries it on. */
        if (d->want_target && d->target_cb)
                d->target_cb(d->balloon, 0, NULL, d->target_userdata);
        d->want_target = true;
        d->target_bytes = target_bytes;
        d->target_cb = cb;
        d->target_userdata = userdata;
        domain_schedule(d);
        return 0;
}

static int lv_poll_stats(void *impl) {
        LibvirtDomain *d = impl;

        if (!lv_is_ready(d))
                return -ENOTCONN;
        d->want_stats = true;
        domain_schedule(d);
        return 0;
}

static int lv_set_stats_interval(void *impl, unsigned interval_sec) {
        LibvirtDomain *d = impl;

        if (!lv_is_ready(d))
                return -ENOTCONN;
        if (interval_sec == d->stats_interval_sec)
                return 0;
        if (sym_virDomainSetMemoryStatsPeriod(d->dom, (int) interval_sec, VIR_DOMAIN_AFFECT_LIVE) < 0) {
                log_warning("Failed to set the guest statistics period of %s: %s", d->description, vir_error());
                (void) connection_check(d->c);
                return -EIO;
        }
        d->stats_interval_sec = interval_sec;
        return 0;
}

static uint64_t lv_ram(void *impl) {
        LibvirtDomain *d = impl;
        return d->ready ? d->ram_bytes : UINT64_MAX;
}

static const char *lv_describe(void *impl) {
        LibvirtDomain *d = impl;
        return d->description;
}

static void lv_free(void *impl) {
        LibvirtDomain *d = impl;

        if (!d)
                return;
        domain_detach(d);
        if (d->prev)
                d->prev->next = d->next;
        else if (d->c->domains == d)
                d->c->domains = d->next;
        if (d->next)
                d->next->prev = d->prev;
        sd_event_source_disable_unref(d->work);
        sd_event_source_disable_unref(d->retry_timer);
        free(d->machine_name);
        free(d->description);
        free(d);
}

static const BalloonBackendOps libvirt_ops = {
        .name = "libvirt",
        .is_ready = lv_is_ready,
        .set_target = lv_set_target,
        .poll_stats = lv_poll_stats,
        .set_stats_interval = lv_set_stats_interval,
        .ram = lv_ram,
        .describe = lv_describe,
        .free = lv_free,
};

int balloon_new_libvirt(Balloon **ret, LibvirtConnection *c, sd_id128_t uuid, const char *machine_name,
                        unsigned stats_interval_sec, const BalloonCallbacks *cb, void *userdata) {
        LibvirtDomain *d;
        int r;

        assert(ret);
        assert(c);

        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->c = c;
        d->uuid = uuid;
        sd_id128_to_uuid_string(uuid, d->uuid_string);
        d->stats_interval_sec = stats_interval_sec;
        d->machine_name = strdup(machine_name);
        if (asprintf(&d->description, "libvirt domain %s on %s", d->uuid_string, c->uri) < 0)
                d->description = NULL;
        if (!d->machine_name || !d->description ||
            sd_event_add_defer(c->event, &d->work, on_work, d) < 0 ||
            sd_event_add_time_relative(c->event, &d->retry_timer, CLOCK_MONOTONIC, 0, 0, on_retry_timer, d) < 0) {
                r = -ENOMEM;
                goto fail;
        }
        (void) sd_event_source_set_enabled(d->retry_timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(d->work, "libvirt-domain");
        r = balloon_new_backend(ret, &libvirt_ops, d, cb, userdata);
        if (r < 0)
                goto fail;
        d->balloon = *ret;
        d->next = c->domains;
        if (c->domains)
                c->domains->prev = d;
        c->domains = d;
        /* First attach from the loop: the caller finishes setting the machine up before
         * hearing anything. */
        d->want_attach = true;
        domain_schedule(d);
        return 0;
fail:
        lv_free(d);
        return r;
}
