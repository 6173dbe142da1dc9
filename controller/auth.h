/* Who may change things: uid 0, or whoever polkit grants org.autoballoon1.manage. */
#pragma once

#include <systemd/sd-bus.h>

#define AUTH_ACTION_MANAGE "org.autoballoon1.manage"

/* Authorization queries in flight, keyed by the call they authorise. */
typedef struct AuthRegistry AuthRegistry;

AuthRegistry *auth_registry_free(AuthRegistry *reg);

/* For method handlers. Returns 1 when the sender may do it; 0 when the question was sent (the
 * bus is asked who is calling, then polkit unless it is root; both asynchronously): the
 * handler returns 1 without replying, and the bus dispatches the same message again once the
 * answer is in (as systemd's bus_verify_polkit_async() does); negative errno with
 * error set (AccessDenied, InteractiveAuthorizationRequired) when refused. Call it before
 * reading the message's arguments, or rewind them. */
int auth_check_async(AuthRegistry **reg, sd_bus_message *m, const char *action, sd_bus_error *error);

/* For property writes, which sd-bus answers as soon as the setter returns: a bus filter calls
 * this for each Properties.Set of a writable property before sd-bus dispatches it, and returns
 * 1 (consumed) when it returns 0, so that the polkit query is as asynchronous as a method's.
 * On 1 the message is remembered as granted for auth_check_granted(). */
int auth_check_write(AuthRegistry **reg, sd_bus_message *m, const char *action, sd_bus_error *error);
/* In the setter: 1 if the filter granted this very message (once), else AccessDenied. */
int auth_check_granted(AuthRegistry *reg, sd_bus_message *m, const char *action, sd_bus_error *error);
