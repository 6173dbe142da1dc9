/* PSI triggers: one watched pressure file (the host's or a VM scope's), three levels. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <systemd/sd-event.h>

#include "policy.h"

/* "some 100ms 1s", "full 150000 2000000" (plain numbers are µs, as the kernel takes them). */
int psi_trigger_parse(const char *s, PsiTriggerSpec *ret);
/* The kernel's format: "some 100000 1000000". */
void psi_trigger_format(const PsiTriggerSpec *spec, char *buf, size_t len);
/* Without CAP_SYS_RESOURCE the kernel accepts only windows that are a multiple of 2 s.
 * Round the window up to that and scale the stall by the same factor, so the trigger keeps
 * its stall share. Returns true if it changed anything. */
bool psi_trigger_round_unprivileged(PsiTriggerSpec *spec);

typedef struct PsiWatch PsiWatch;

/* event: the highest level whose trigger fired in this loop iteration, or PRESSURE_NONE when
 * called because the level decayed; level: the current level (highest level that fired
 * within its window). error: the file went away (POLLERR, e.g. the cgroup was removed). */
typedef void (*psi_cb_t)(PsiWatch *w, PressureLevel event, PressureLevel level, int error,
                         void *userdata);

/* path: a pressure file (/proc/pressure/memory, <cgroup>/memory.pressure).
 * specs: [PRESSURE_LOW..PRESSURE_CRITICAL]; specs[PRESSURE_NONE] is ignored. */
int psi_watch_new(PsiWatch **ret, sd_event *e, const char *path,
                  const PsiTriggerSpec specs[_PRESSURE_LEVEL_MAX], psi_cb_t cb, void *userdata);
PsiWatch *psi_watch_free(PsiWatch *w);
/* A watch that failed to open (or whose file went away) for one of these reasons may work
 * later: the cgroup comes back (a slice stopped and started, a scope recreated), fds or memory
 * are freed. Its owner tries again, backing off from PSI_REARM_MIN_USEC to PSI_REARM_MAX_USEC;
 * other errors (no PSI in the kernel, a trigger the kernel refuses) are final. */
#define PSI_REARM_MIN_USEC (1 * USEC_PER_SEC)
#define PSI_REARM_MAX_USEC (30 * USEC_PER_SEC)
static inline bool psi_error_is_transient(int r) {
        return r == -ENOENT || r == -ENODEV || r == -EMFILE || r == -ENFILE || r == -ENOMEM || r == -EAGAIN;
}
static inline void psi_watch_freep(PsiWatch **w) { if (*w) psi_watch_free(*w); }
PressureLevel psi_watch_level(const PsiWatch *w);
const char *psi_watch_path(const PsiWatch *w);
/* The spec actually armed for a level (after rounding). */
const PsiTriggerSpec *psi_watch_spec(const PsiWatch *w, PressureLevel l);

/* Reads avg10/avg60 of "some" and "full" from a pressure file. */
typedef struct PsiAverages {
        double some_avg10, some_avg60, full_avg10, full_avg60;
        uint64_t some_total_usec, full_total_usec;
} PsiAverages;
int psi_read_averages(const char *path, PsiAverages *ret);
