/* The policy's knobs as settings: one table (name, type, field in PolicyKnobs, range, one line
 * of documentation) behind the config files, the D-Bus properties, autoballoonctl and the man
 * pages (docs/knob-doc.c), and their text form ("512M", "30s", "12.5%", "some 100ms 1s"). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

typedef enum KnobType {
        KNOB_BOOL,
        KNOB_SIZE,       /* uint64_t bytes; "512M" in config, t on D-Bus */
        KNOB_UINT32,     /* u */
        KNOB_PERMILLE,   /* uint32_t; "12.5%" or "125‰"... config accepts a percent, D-Bus u permille */
        KNOB_PERCENT,    /* uint32_t 0..100 */
        KNOB_USEC,       /* usec_t; "30s" in config, t (µs) on D-Bus */
        KNOB_PRESET,     /* PolicyPreset; "default"/"seed", s on D-Bus */
        KNOB_TRIGGER,    /* PsiTriggerSpec; "some 100ms 1s" in config and on D-Bus (s) */
} KnobType;

typedef struct KnobInfo {
        const char *name;        /* config key and D-Bus property name, e.g. "MinimumMemory" */
        KnobType type;
        size_t offset;           /* into PolicyKnobs */
        uint64_t min, max;       /* allowed range (in the stored unit) */
        const char *doc;         /* one line for --help, man page and errors */
} KnobInfo;

extern const KnobInfo policy_knobs[];
extern const size_t policy_knobs_count;
const KnobInfo *policy_knob_find(const char *name);

/* Bit i of a knob mask stands for policy_knobs[i]. */
static inline uint64_t knob_bit(const KnobInfo *k) {
        return UINT64_C(1) << (k - policy_knobs);
}

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

/* The size of a knob's field in PolicyKnobs, and whether two knob sets agree on it. */
size_t knob_size(const KnobInfo *k);
bool knob_equal(const KnobInfo *k, const PolicyKnobs *a, const PolicyKnobs *b);
