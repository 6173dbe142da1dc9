/* Shared by manager-bus.c and machine-bus.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "auth.h"
#include "knob.h"

/* MinimumMemory= below MaximumMemory=, both within ram_bytes (0: not known): only when mask
 * touches a bound. InvalidArgs naming the property otherwise. */
int bus_check_bounds(const PolicyKnobs *k, uint64_t mask, uint64_t ram_bytes, sd_bus_error *error);
/* "Weight=200 Enabled=no", for the log; NULL on ENOMEM. */
char *bus_format_assignments(const PolicyKnobs *knobs, uint64_t mask);
/* Writes the drop-in (runtime or persistent) before anything is applied. */
int bus_save_knobs(const char *path, const char *runtime_path, const char *section, const PolicyKnobs *knobs,
                   uint64_t mask, bool runtime, sd_bus_error *error);
/* One knob's new value from a Properties.Set, into a copy of current. */
int bus_read_knob_write(sd_bus *bus, AuthRegistry *auth, const char *property, sd_bus_message *value,
                        const PolicyKnobs *current, PolicyKnobs *ret, const KnobInfo **ret_k, sd_bus_error *error);
/* START + fixed + one writable property per knob + END; kept for the process' life. */
sd_bus_vtable *bus_build_vtable(const sd_bus_vtable *fixed, size_t n_fixed, sd_bus_property_get_t getter,
                                sd_bus_property_set_t setter);
/* Getters for a char* (NULL: "") and a PressureLevel at the property's offset. */
int bus_property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error);
int bus_property_get_level(sd_bus *bus, const char *path, const char *interface, const char *property,
                           sd_bus_message *reply, void *userdata, sd_bus_error *error);
