/* Configuration: autoballoond.conf + autoballoond.conf.d/NAME.conf, per-machine drop-ins. */
#pragma once

#include "knob.h"
#include "policy.h"
#include "psi.h"

#define CONFIG_FILE_DEFAULT SYSCONFDIR "/autoballoon/autoballoond.conf"
#define MACHINES_DIR_DEFAULT SYSCONFDIR "/autoballoon/machines.d"
#define RUNTIME_MACHINES_DIR_DEFAULT RUNSTATEDIR "/autoballoon/machines.d"
#define RUNTIME_CONFIG_DIR_DEFAULT RUNSTATEDIR "/autoballoon/autoballoond.conf.d"
/* The drop-in SetDefaultProperties() writes into autoballoond.conf.d/ (or the runtime dir):
 * "50-" so that an administrator's 60-*.conf still has the last word, as with systemd's
 * set-property drop-ins. */
#define SET_PROPERTY_DROPIN "50-set-property.conf"

typedef struct Config {
        char *host_pressure_source;        /* file path, cgroup2 directory, or a unit (machine.slice) */
        char *machines_directory;          /* persistent per-machine drop-ins */
        char *runtime_machines_directory;  /* runtime ones, consulted after the persistent ones */
        char *runtime_config_directory;    /* runtime drop-ins for the main config, read after PATH.d/ */
        char *host_memory_source;          /* HostMemorySource=: /proc/meminfo, a memory cgroup, a unit */
        uint64_t host_memory_reserve_bytes;     /* HostMemoryReserve= as a size ... */
        uint32_t host_memory_reserve_permille;  /* ... or a share of the capacity (bytes == 0) */
        unsigned stats_interval_sec;       /* guest-stats polling while anything is in motion */
        bool deflate_on_exit;
        char *libvirt_uri;                 /* LibvirtURI=: where libvirt's machines are driven */
        PolicyKnobs defaults;
        unsigned n_errors;                 /* bad lines seen (each logged with file:line) */
} Config;

/* HostMemoryReserve=: "512M" or "10%" (up to 50 %). */
#define HOST_MEMORY_RESERVE_PERMILLE_MAX 500
int host_memory_reserve_parse(const char *s, uint64_t *ret_bytes, uint32_t *ret_permille);
int host_memory_reserve_format(uint64_t bytes, uint32_t permille, char **ret);
uint64_t host_memory_reserve_resolve(uint64_t bytes, uint32_t permille, uint64_t capacity_bytes);

void config_init(Config *c);
void config_done(Config *c);
/* Loads path (missing is fine), then path.d/NAME.conf in lexical order, then
 * RuntimeConfigDirectory/NAME.conf. Bad lines are logged
 * with file and line and skipped; the rest still loads. Returns 0 or negative errno for
 * errors that stop loading (unreadable file). */
int config_load(Config *c, const char *path);

/* Backend=: how a machine's balloon is reached. */
typedef enum MachineBackend {
        MACHINE_BACKEND_AUTO,      /* QMP if a socket of our own is known, else libvirt for its machines */
        MACHINE_BACKEND_QMP,
        MACHINE_BACKEND_LIBVIRT,
        _MACHINE_BACKEND_MAX,
} MachineBackend;

const char *machine_backend_to_string(MachineBackend b);
MachineBackend machine_backend_from_string(const char *s);   /* -EINVAL if unknown */

typedef struct MachineConfig {
        char *qmp_socket;          /* QMPSocket=, NULL: discover from the leader's cmdline */
        MachineBackend backend;    /* Backend= */
        PolicyKnobs knobs;         /* defaults with the drop-in's overrides applied */
        uint64_t knobs_set;        /* bit i: policy_knobs[i] was set by a drop-in */
} MachineConfig;

void machine_config_done(MachineConfig *mc);
/* Defaults, then <machines_directory>/NAME.conf, then <runtime_machines_directory>/NAME.conf. */
int machine_config_load(const Config *c, const char *name, MachineConfig *ret);


/* --- persistence: SetMachineProperties() / SetDefaultProperties() ------------------------ */

/* The first line of every drop-in set-property creates, so that an operator reading /etc or
 * /run can tell them from files written by hand. */
#define SET_PROPERTY_HEADER "# Written by autoballoond for set-property"


/* <MachinesDirectory>/NAME.conf, or <RuntimeMachinesDirectory>/NAME.conf when runtime. */
int config_machine_dropin_path(const Config *c, const char *name, bool runtime, char **ret);
/* <config_path>.d/50-set-property.conf, or <RuntimeConfigDirectory>/50-set-property.conf. */
int config_defaults_dropin_path(const Config *c, const char *config_path, bool runtime, char **ret);

/* Pure: text (NULL: a new file) with every key of keys[] removed from [section], and then
 * KEY=values[i] appended to [section] for each non-NULL values[i]. Comments, other keys and
 * other sections are kept as they are. */
int config_dropin_rewrite(const char *text, const char *section, char *const *keys, char *const *values,
                          char **ret);
/* Applies config_dropin_rewrite() to the file at path, atomically: temp file in the same
 * directory, fsync, rename, fsync of the directory (created if missing). Removing keys from
 * a missing file creates nothing. */
/* Writes text to path so that a crash leaves the old file or the new one: a temp file in the
 * same directory (created if missing), fsync, rename, fsync of the directory. */
int config_write_file_atomic(const char *path, const char *text);
/* Creates the directories above path (0755), as far as they are missing. */
int mkdir_parents(const char *path);
int config_dropin_update(const char *path, const char *section, char *const *keys, char *const *values);
/* The knobs whose bit is set in mask (bit i: policy_knobs[i]), written as a config file
 * would say them; knobs NULL removes those keys instead. */
int config_dropin_save_knobs(const char *path, const char *section, const PolicyKnobs *knobs, uint64_t mask);
