/* Configuration: autoballoond.conf + autoballoond.conf.d/NAME.conf, per-machine drop-ins. */
#pragma once

#include "policy.h"
#include "psi.h"

#define CONFIG_FILE_DEFAULT SYSCONFDIR "/autoballoon/autoballoond.conf"
#define MACHINES_DIR_DEFAULT SYSCONFDIR "/autoballoon/machines.d"
#define RUNTIME_MACHINES_DIR_DEFAULT RUNSTATEDIR "/autoballoon/machines.d"

typedef struct Config {
        char *host_pressure_source;        /* file path, cgroup2 directory, or a unit (machine.slice) */
        char *machines_directory;          /* persistent per-machine drop-ins */
        char *runtime_machines_directory;  /* runtime ones, consulted after the persistent ones */
        unsigned stats_interval_sec;       /* guest-stats polling while anything is in motion */
        bool deflate_on_exit;
        PsiTriggerSpec pressure[_PRESSURE_LEVEL_MAX];
        PolicyKnobs defaults;
        unsigned n_errors;                 /* bad lines seen (each logged with file:line) */
} Config;

void config_init(Config *c);
void config_done(Config *c);
/* Loads path (missing is fine) and then path.d/NAME.conf in lexical order. Bad lines are logged
 * with file and line and skipped; the rest still loads. Returns 0 or negative errno for
 * errors that stop loading (unreadable file). */
int config_load(Config *c, const char *path);

typedef struct MachineConfig {
        char *qmp_socket;          /* QMPSocket=, NULL: discover from the leader's cmdline */
        PolicyKnobs knobs;         /* defaults with the drop-in's overrides applied */
        uint64_t knobs_set;        /* bit i: policy_knobs[i] was set by a drop-in */
} MachineConfig;

void machine_config_done(MachineConfig *mc);
/* Defaults, then <machines_directory>/NAME.conf, then <runtime_machines_directory>/NAME.conf. */
int machine_config_load(const Config *c, const char *name, MachineConfig *ret);

/* Parse one knob value as written in a file ("512M", "30s", "yes", "12.5%"). On failure
 * returns -EINVAL/-ERANGE and sets *error to a message naming the knob and its range. */
int knob_parse(const KnobInfo *k, const char *value, PolicyKnobs *knobs, char **error);
/* Format a knob value as a config file would write it. */
int knob_format(const KnobInfo *k, const PolicyKnobs *knobs, char **ret);
/* Human-readable allowed range of a knob, for errors and docs. */
int knob_describe_range(const KnobInfo *k, char **ret);

static inline void *knob_ptr(const KnobInfo *k, PolicyKnobs *knobs) {
        return (uint8_t *) knobs + k->offset;
}
static inline const void *knob_cptr(const KnobInfo *k, const PolicyKnobs *knobs) {
        return (const uint8_t *) knobs + k->offset;
}
