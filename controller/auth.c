/* Authorization of writes: uid 0 passes, anyone else needs polkit's org.autoballoon1.manage,
 * asked over D-Bus (CheckAuthorization with a system-bus-name subject). No polkit on the bus
 * means no: only root may change anything then. */
#include <stdio.h>

#include "auth.h"
#include "log.h"
#include "util.h"

#define POLKIT_NAME "org.freedesktop.PolicyKit1"
#define POLKIT_PATH "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_IFACE "org.freedesktop.PolicyKit1.Authority"
/* CheckAuthorizationFlags: AllowUserInteraction */
#define POLKIT_ALLOW_USER_INTERACTION 1U
/* polkitd answers a non-interactive query in milliseconds; the caller waits for it, the loop
 * never does (every check is asynchronous), so give a stalled polkitd as long as a caller's
 * own call would wait (sd-bus's and dbus-python's default is 25 s) minus a margin to refuse. */
#define POLKIT_TIMEOUT_USEC (20 * USEC_PER_SEC)
/* ... while an interactive one waits for a human typing a password */
#define POLKIT_INTERACTIVE_TIMEOUT_USEC (5 * 60 * USEC_PER_SEC)

typedef struct AuthQuery {
        sd_bus_message *request;  /* the call being authorised; dispatched again on the answer */
        sd_bus_slot *slot;        /* the call in flight (the bus's GetConnectionUnixUser, then polkit's
                                   * CheckAuthorization), NULL once answered */
        const char *action;
        int result;               /* 1 allowed, 0 denied, -EBADR needs interaction, <0 polkit failed */
        int uid_error;            /* < 0: the bus could not say who is calling */
        bool no_polkit;           /* polkit could not even be asked */
        char *detail;             /* why polkit failed, for the error message */
        struct AuthQuery *next;
} AuthQuery;

struct AuthRegistry {
        AuthQuery *queries;
        sd_bus_message *granted;  /* a property write a filter let through, for its setter */
};

static AuthQuery *auth_query_free(AuthQuery *q) {
        if (!q)
                return NULL;
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->request);
        free(q->detail);
        free(q);
        return NULL;
}

AuthRegistry *auth_registry_free(AuthRegistry *reg) {
        if (!reg)
                return NULL;
        while (reg->queries) {
                AuthQuery *q = reg->queries;
                reg->queries = q->next;
                auth_query_free(q);
        }
        sd_bus_message_unref(reg->granted);
        free(reg);
        return NULL;
}

static int polkit_message(sd_bus_message *m, const char *action, bool interactive, sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        const char *sender = sd_bus_message_get_sender(m);
        int r;

        if (!sender)
                return -EBADMSG;
        r = sd_bus_message_new_method_call(sd_bus_message_get_bus(m), &call, POLKIT_NAME, POLKIT_PATH,
                                           POLKIT_IFACE, "CheckAuthorization");
        if (r < 0)
                return r;
        r = sd_bus_message_append(call, "(sa{sv})sa{ss}us", "system-bus-name", 1, "name", "s", sender, action,
                                  0, interactive ? POLKIT_ALLOW_USER_INTERACTION : 0, "");
        if (r < 0)
                return r;
        *ret = TAKE_PTR(call);
        return 0;
}

/* 1 authorised, 0 not, -EBADR a challenge (interaction needed), other <0: no usable answer. */
static int polkit_parse_reply(sd_bus_message *reply, char **ret_detail) {
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        int authorized, challenge, r;

        if (e) {
                if (ret_detail)
                        *ret_detail = strdup(e->message ?: e->name);
                return sd_bus_error_get_errno(e) ? -sd_bus_error_get_errno(e) : -EIO;
        }
        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0)
                return r;
        if (authorized)
                return 1;
        return challenge ? -EBADR : 0;
}

/* interactive: polkit was allowed to ask the user */
static int deny(sd_bus_message *m, const char *action, bool interactive, int result, const char *detail,
                sd_bus_error *error) {
        /* "Set" alone would not say what was refused */
        const char *member = streq_ptr(sd_bus_message_get_member(m), "Set") ? "Setting a property" :
                sd_bus_message_get_member(m);

        if (result == -EBADR)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                         interactive ?
                                         "%s needs authentication for %s, and no polkit agent asked for it." :
                                         "%s needs interactive authorization for %s.", member, action);
        if (result < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                         "Access denied: %s needs root or the polkit action %s, and polkit "
                                         "could not be asked (%s).", member, action, detail ?: strerror(-result));
        return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                 "Access denied: %s needs root or the polkit action %s.", member, action);
}

/* Run the call again: the handler finds the answer. */
static void query_answered(AuthQuery *q) {
        int r;

        q->slot = sd_bus_slot_unref(q->slot);
        r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(q->request), q->request);
        if (r < 0)
                log_error_errno(r, "Failed to dispatch %s again after its authorization: %m",
                                sd_bus_message_get_member(q->request));
}

static int on_polkit_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        AuthQuery *q = userdata;

        q->result = polkit_parse_reply(reply, &q->detail);
        if (q->result < 0 && q->result != -EBADR)
                log_debug("polkit could not decide for %s from %s: %s", sd_bus_message_get_member(q->request),
                          sd_bus_message_get_sender(q->request), q->detail ?: strerror(-q->result));
        query_answered(q);
        return 0;
}

/* The bus says who is calling (the peer cannot lie about it): root passes, anyone else is
 * asked of polkit. Both answers come asynchronously. */
static int on_uid_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        AuthQuery *q = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        bool interactive = sd_bus_message_get_allow_interactive_authorization(q->request) > 0;
        uint32_t uid;
        int r;

        q->slot = sd_bus_slot_unref(q->slot);
        r = e ? -(sd_bus_error_get_errno(e) ?: EIO) : sd_bus_message_read(reply, "u", &uid);
        if (r < 0) {
                q->uid_error = r;
                query_answered(q);
                return 0;
        }
        if (uid == 0) {
                q->result = 1;
                query_answered(q);
                return 0;
        }
        r = polkit_message(q->request, q->action, interactive, &call);
        if (r >= 0)
                /* interactive authentication may take as long as a human does */
                r = sd_bus_call_async(sd_bus_message_get_bus(q->request), &q->slot, call, on_polkit_reply, q,
                                      interactive ? POLKIT_INTERACTIVE_TIMEOUT_USEC : POLKIT_TIMEOUT_USEC);
        if (r < 0) {
                /* no polkit to ask at all: a plain refusal */
                q->result = r;
                q->no_polkit = true;
                query_answered(q);
        }
        return 0;
}

int auth_check_async(AuthRegistry **reg, sd_bus_message *m, const char *action, sd_bus_error *error) {
        const char *sender = sd_bus_message_get_sender(m);
        AuthQuery *q, **qq;
        int r;

        if (!*reg) {
                *reg = calloc(1, sizeof **reg);
                if (!*reg)
                        return -ENOMEM;
        }
        for (qq = &(*reg)->queries; *qq; qq = &(*qq)->next) {
                q = *qq;
                if (q->request != m)
                        continue;
                if (q->slot)
                        return 0;  /* still waiting */
                *qq = q->next;
                if (q->uid_error < 0)
                        r = sd_bus_error_set_errnof(error, q->uid_error, "Cannot tell who is calling: %m");
                else if (q->result > 0)
                        r = 1;
                else
                        r = deny(m, action, !q->no_polkit && sd_bus_message_get_allow_interactive_authorization(m) > 0,
                                 q->result, q->detail, error);
                auth_query_free(q);
                return r;
        }

        if (!sender)
                return sd_bus_error_set_errnof(error, EBADMSG, "Cannot tell who is calling: no sender");
        q = calloc(1, sizeof *q);
        if (!q)
                return -ENOMEM;
        q->action = action;
        r = sd_bus_call_method_async(sd_bus_message_get_bus(m), &q->slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetConnectionUnixUser", on_uid_reply, q, "s", sender);
        if (r < 0) {
                free(q);
                return sd_bus_error_set_errnof(error, r, "Cannot tell who is calling: %m");
        }
        q->request = sd_bus_message_ref(m);
        q->next = (*reg)->queries;
        (*reg)->queries = q;
        return 0;
}

int auth_check_write(AuthRegistry **reg, sd_bus_message *m, const char *action, sd_bus_error *error) {
        int r;

        r = auth_check_async(reg, m, action, error);
        if (r <= 0)
                return r;
        /* a reference, so that no later message can have this address while it is kept */
        sd_bus_message_unref((*reg)->granted);
        (*reg)->granted = sd_bus_message_ref(m);
        return 1;
}

int auth_check_granted(AuthRegistry *reg, sd_bus_message *m, const char *action, sd_bus_error *error) {
        if (reg && m && reg->granted == m) {
                reg->granted = sd_bus_message_unref(reg->granted);
                return 1;
        }
        /* The write filter did not pass this message: refuse, whoever it is. */
        return deny(m, action, false, 0, NULL, error);
}
