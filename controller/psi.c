/* PSI triggers (Documentation/accounting/psi.rst): one fd per trigger, POLLPRI when the
 * stall threshold is crossed within the window, at most once per window. */
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <sys/epoll.h>

#include "log.h"
#include "async-close.h"
#include "psi.h"

/* The kernel refuses windows under 500 ms and over 10 s; unprivileged writers (no
 * CAP_SYS_RESOURCE) must use a multiple of 2 s. */
#define PSI_WINDOW_MIN_USEC (500 * USEC_PER_MSEC)
#define PSI_WINDOW_MAX_USEC (10 * USEC_PER_SEC)
#define PSI_UNPRIV_WINDOW_GRANULARITY_USEC (2 * USEC_PER_SEC)

/* A level stays current for this many of its windows after its trigger last fired: a trigger
 * fires at most once per window while the stall lasts, so one missed window is not relief. */
#define PSI_LEVEL_HOLD_WINDOWS 2

struct PsiWatch {
        sd_event *event;
        char *path;
        psi_cb_t cb;
        void *userdata;
        PsiTriggerSpec specs[_PRESSURE_LEVEL_MAX];
        int fds[_PRESSURE_LEVEL_MAX];
        sd_event_source *io[_PRESSURE_LEVEL_MAX];
        usec_t last_fire_usec[_PRESSURE_LEVEL_MAX];
        unsigned pending_mask;            /* levels fired in this loop iteration */
        int pending_error;
        sd_event_source *dispatch;        /* coalesces the fds of one iteration into one call */
        sd_event_source *decay;           /* armed only while a level is current */
        PressureLevel level;
};

int psi_trigger_parse(const char *s, PsiTriggerSpec *ret) {
        char kind[8], stall[32], window[32];
        PsiTriggerSpec spec = {};
        char extra;

        if (sscanf(s, "%7s %31s %31s %c", kind, stall, window, &extra) != 3)
                return -EINVAL;
        if (streq(kind, "full"))
                spec.full = true;
        else if (!streq(kind, "some"))
                return -EINVAL;

        /* A bare number is µs, as in the kernel's own syntax; with a unit, parse_duration. */
        char *units[] = { stall, window };
        usec_t *out[] = { &spec.stall_usec, &spec.window_usec };
        for (size_t i = 0; i < 2; i++) {
                char *end;
                errno = 0;
                unsigned long long v = strtoull(units[i], &end, 10);
                if (errno == 0 && end != units[i] && *end == 0)
                        *out[i] = v;
                else if (parse_duration(units[i], out[i]) < 0)
                        return -EINVAL;
        }
        if (spec.window_usec < PSI_WINDOW_MIN_USEC || spec.window_usec > PSI_WINDOW_MAX_USEC)
                return -ERANGE;
        if (spec.stall_usec == 0 || spec.stall_usec > spec.window_usec)
                return -ERANGE;
        *ret = spec;
        return 0;
}

void psi_trigger_format(const PsiTriggerSpec *spec, char *buf, size_t len) {
        snprintf(buf, len, "%s %" PRIu64 " %" PRIu64, spec->full ? "full" : "some",
                 spec->stall_usec, spec->window_usec);
}

bool psi_trigger_round_unprivileged(PsiTriggerSpec *spec) {
        usec_t g = PSI_UNPRIV_WINDOW_GRANULARITY_USEC;
        usec_t w = (spec->window_usec + g - 1) / g * g;

        if (w == spec->window_usec)
                return false;
        if (w > PSI_WINDOW_MAX_USEC)
                w = PSI_WINDOW_MAX_USEC / g * g;
        spec->stall_usec = MIN(w, (usec_t) ((double) spec->stall_usec * (double) w /
                                            (double) spec->window_usec));
        spec->window_usec = w;
        return true;
}

static int open_trigger(const char *path, const PsiTriggerSpec *spec) {
        _cleanup_close_ int fd = -1;
        char buf[64];

        fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        psi_trigger_format(spec, buf, sizeof buf);
        /* The NUL goes too: /proc/pressure files overwrite the last byte written. */
        if (write(fd, buf, strlen(buf) + 1) < 0)
                return -errno;
        return TAKE_FD(fd);
}

static PressureLevel current_level(PsiWatch *w, usec_t now) {
        for (PressureLevel l = PRESSURE_CRITICAL; l > PRESSURE_NONE; l--)
                if (w->last_fire_usec[l] > 0 &&
                    now < w->last_fire_usec[l] + PSI_LEVEL_HOLD_WINDOWS * w->specs[l].window_usec)
                        return l;
        return PRESSURE_NONE;
}

static int on_decay(sd_event_source *s, uint64_t usec, void *userdata);

static void rearm_decay(PsiWatch *w, usec_t now) {
        if (w->level == PRESSURE_NONE) {
                sd_event_source_set_enabled(w->decay, SD_EVENT_OFF);
                return;
        }
        /* The next moment the current level can end. */
        usec_t when = w->last_fire_usec[w->level] + PSI_LEVEL_HOLD_WINDOWS * w->specs[w->level].window_usec;
        if (!w->decay) {
                if (sd_event_add_time(w->event, &w->decay, CLOCK_MONOTONIC, when, 0, on_decay, w) < 0)
                        return;  /* without a decay timer the level sticks until the next event */
                sd_event_source_set_description(w->decay, "psi-decay");
        } else
                sd_event_source_set_time(w->decay, when);
        sd_event_source_set_enabled(w->decay, SD_EVENT_ONESHOT);
        (void) now;
}

static int on_decay(sd_event_source *s, uint64_t usec, void *userdata) {
        PsiWatch *w = userdata;
        usec_t now = now_usec();
        PressureLevel old = w->level;

        w->level = current_level(w, now);
        rearm_decay(w, now);
        if (w->level != old)
                w->cb(w, PRESSURE_NONE, w->level, 0, w->userdata);
        return 0;
}

static int on_dispatch(sd_event_source *s, void *userdata) {
        PsiWatch *w = userdata;
        PressureLevel event = PRESSURE_NONE;
        usec_t now = now_usec();
        int error = w->pending_error;

        for (PressureLevel l = PRESSURE_LOW; l < _PRESSURE_LEVEL_MAX; l++)
                if (w->pending_mask & (1u << l))
                        event = l;
        w->pending_mask = 0;
        w->pending_error = 0;
        sd_event_source_set_enabled(w->dispatch, SD_EVENT_OFF);

        w->level = current_level(w, now);
        rearm_decay(w, now);
        w->cb(w, event, w->level, error, w->userdata);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        PsiWatch *w = userdata;
        PressureLevel l;

        for (l = PRESSURE_LOW; l < _PRESSURE_LEVEL_MAX; l++)
                if (w->fds[l] == fd)
                        break;
        if (l == _PRESSURE_LEVEL_MAX)
                return 0;

        if (revents & (EPOLLERR | EPOLLHUP)) {
                /* The cgroup went away; the fd will never fire again. */
                for (PressureLevel i = PRESSURE_LOW; i < _PRESSURE_LEVEL_MAX; i++)
                        sd_event_source_set_enabled(w->io[i], SD_EVENT_OFF);
                w->pending_error = -ENODEV;
        } else if (revents & EPOLLPRI) {
                w->last_fire_usec[l] = now_usec();
                w->pending_mask |= 1u << l;
        }
        sd_event_source_set_enabled(w->dispatch, SD_EVENT_ONESHOT);
        return 0;
}

int psi_watch_new(PsiWatch **ret, sd_event *e, const char *path,
                  const PsiTriggerSpec specs[_PRESSURE_LEVEL_MAX], psi_cb_t cb, void *userdata) {
        static bool warned_rounding = false;
        PsiWatch *w;
        int r;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        for (PressureLevel l = 0; l < _PRESSURE_LEVEL_MAX; l++)
                w->fds[l] = -1;
        w->event = sd_event_ref(e);
        w->cb = cb;
        w->userdata = userdata;
        w->path = strdup(path);
        if (!w->path) {
                r = -ENOMEM;
                goto fail;
        }

        for (PressureLevel l = PRESSURE_LOW; l < _PRESSURE_LEVEL_MAX; l++) {
                w->specs[l] = specs[l];
                r = open_trigger(path, &w->specs[l]);
                if (r == -EINVAL && psi_trigger_round_unprivileged(&w->specs[l])) {
                        char want[64], got[64];
                        psi_trigger_format(&specs[l], want, sizeof want);
                        psi_trigger_format(&w->specs[l], got, sizeof got);
                        log_full(warned_rounding ? LOG_DEBUG : LOG_WARNING,
                                 "Kernel refused PSI trigger \"%s\" on %s (no CAP_SYS_RESOURCE?); "
                                 "using \"%s\": unprivileged windows must be a multiple of 2 s.",
                                 want, path, got);
                        warned_rounding = true;
                        r = open_trigger(path, &w->specs[l]);
                }
                if (r < 0) {
                        char want[64];
                        psi_trigger_format(&w->specs[l], want, sizeof want);
                        log_debug_errno(r, "Failed to arm PSI trigger \"%s\" on %s: %m", want, path);
                        goto fail;
                }
                w->fds[l] = r;
                r = sd_event_add_io(e, &w->io[l], w->fds[l], EPOLLPRI, on_io, w);
                if (r < 0)
                        goto fail;
                sd_event_source_set_priority(w->io[l], SD_EVENT_PRIORITY_IMPORTANT);
                sd_event_source_set_description(w->io[l], "psi-trigger");
        }

        r = sd_event_add_defer(e, &w->dispatch, on_dispatch, w);
        if (r < 0)
                goto fail;
        /* Pressure goes first: the trigger fds before any pending QMP or bus traffic (at
         * 1,000 VMs a round of guest-stats replies delayed events by ~200 ms), and the
         * dispatch right after every trigger fd of this iteration. */
        sd_event_source_set_priority(w->dispatch, SD_EVENT_PRIORITY_IMPORTANT + 1);
        sd_event_source_set_enabled(w->dispatch, SD_EVENT_OFF);

        *ret = w;
        return 0;
fail:
        psi_watch_free(w);
        return r;
}

PsiWatch *psi_watch_free(PsiWatch *w) {
        if (!w)
                return NULL;
        for (PressureLevel l = 0; l < _PRESSURE_LEVEL_MAX; l++) {
                sd_event_source_disable_unref(w->io[l]);   /* out of the epoll set first */
                if (w->fds[l] >= 0)
                        async_close(w->fds[l]);
        }
        sd_event_source_disable_unref(w->dispatch);
        sd_event_source_disable_unref(w->decay);
        sd_event_unref(w->event);
        free(w->path);
        free(w);
        return NULL;
}

PressureLevel psi_watch_level(const PsiWatch *w) {
        return w->level;
}

const char *psi_watch_path(const PsiWatch *w) {
        return w->path;
}

const PsiTriggerSpec *psi_watch_spec(const PsiWatch *w, PressureLevel l) {
        return &w->specs[l];
}

int psi_read_averages(const char *path, PsiAverages *ret) {
        _cleanup_free_ char *buf = NULL;
        PsiAverages a = {};
        int r;

        r = read_full_file(path, &buf, NULL);
        if (r < 0)
                return r;
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
                double avg10, avg60, avg300;
                unsigned long long total;
                char kind[8];

                if (sscanf(line, "%7s avg10=%lf avg60=%lf avg300=%lf total=%llu",
                           kind, &avg10, &avg60, &avg300, &total) != 5)
                        return -EBADMSG;
                if (streq(kind, "some")) {
                        a.some_avg10 = avg10;
                        a.some_avg60 = avg60;
                        a.some_total_usec = total;
                } else if (streq(kind, "full")) {
                        a.full_avg10 = avg10;
                        a.full_avg60 = avg60;
                        a.full_total_usec = total;
                }
        }
        *ret = a;
        return 0;
}
