/* Policy knobs on D-Bus: their types, reading and writing them in messages, their ranges in
 * the bus's units. The daemon and autoballoonctl share it, so both sides agree. */
#pragma once

#include <systemd/sd-bus.h>

#include "knob.h"
#include "policy.h"

/* b for booleans, t for sizes (bytes) and durations (µs), s for the preset, u otherwise
 * (integers, percent, permille). */
char knob_bus_type(const KnobInfo *k);
/* The same as a one-character signature string. */
const char *knob_bus_signature(const KnobInfo *k);

/* Appends the knob's value as its basic type. */
int knob_bus_append(sd_bus_message *m, const KnobInfo *k, const PolicyKnobs *knobs);
/* Reads the knob's basic type (the message positioned at it), checks the range, stores it.
 * A bad value leaves knobs untouched and sets InvalidArgs naming the knob and its range. */
int knob_bus_read(sd_bus_message *m, const KnobInfo *k, PolicyKnobs *knobs, sd_bus_error *error);
/* An a(sv) of knob assignments (SetMachineProperties, SetDefaultProperties) onto knobs; bit i
 * of *ret_mask set for policy_knobs[i]. An unknown name, a wrong type or a bad value is
 * InvalidArgs naming the property. Stops at the first bad one, knobs then half-written:
 * callers pass a copy. */
int knob_bus_read_assignments(sd_bus_message *m, PolicyKnobs *knobs, uint64_t *ret_mask, sd_bus_error *error);
/* The allowed range in D-Bus units: "an integer (u) from 1 to 10000". */
int knob_bus_describe_range(const KnobInfo *k, char **ret);

