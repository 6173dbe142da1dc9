/* Fuzz target: the D-Bus side of the policy knobs, which reads what any client sends:
 * knob_bus_read() (Set of one property) and knob_bus_read_assignments() (the a(sv) of
 * SetMachineProperties and SetDefaultProperties).
 *
 * Input: one driver byte (the shared drivers' one; not used here), then what a client sends,
 * written as busctl takes it on its command line:
 *     Weight u 200                                   Set of the property Weight, the variant
 *                                                    holding the u 200
 *     a(sv) 2 Weight u 200 LowPressure s "some 100ms 1s"   the body of SetMachineProperties
 * (a count before array elements, a signature before a variant's value, "..." for a string
 * with spaces). The body is appended with the public sd-bus API and sealed, so whatever the
 * input says (wrong types, nesting, unknown names, extreme numbers) the decoders read a
 * well-formed message, as they do behind sd-bus's own checks. A Set reads the variant as
 * sd-bus hands it to a property setter, then writes the value back with knob_bus_append()
 * and reads it again. Checks: a refused value changes nothing and names
 * the property; an accepted one is in range and changes only what it names. */
#include <stdio.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>

#include "config.h"
#include "fuzz.h"
#include "knob-bus.h"

#define MAX_DEPTH 16

typedef struct Input {
        const char *p, *end;
} Input;

/* The next token: up to white space, or between double quotes. NULL at the end. */
static char *next_token(Input *in) {
        while (in->p < in->end && (*in->p == ' ' || *in->p == '\n' || *in->p == '\t'))
                in->p++;
        if (in->p >= in->end)
                return NULL;
        const char *start = in->p;
        if (*in->p == '"') {
                start = ++in->p;
                while (in->p < in->end && *in->p != '"')
                        in->p++;
                char *t = strndup(start, in->p - start);
                if (in->p < in->end)
                        in->p++;
                return t;
        }
        while (in->p < in->end && *in->p != ' ' && *in->p != '\n' && *in->p != '\t')
                in->p++;
        return strndup(start, in->p - start);
}

/* The end of the single complete type at sig, or NULL. */
static const char *type_end(const char *sig) {
        int depth = 0;

        while (*sig == 'a')
                sig++;
        do {
                switch (*sig) {
                case 0:
                        return NULL;
                case '(':
                case '{':
                        depth++;
                        break;
                case ')':
                case '}':
                        if (--depth < 0)
                                return NULL;
                        break;
                case 'a':
                        break;   /* an array inside a container: its element follows */
                }
                sig++;
        } while (depth > 0);
        return sig;
}

static int append_value(sd_bus_message *m, const char *type, size_t type_len, Input *in, unsigned depth);

static int append_basic(sd_bus_message *m, char type, Input *in) {
        _cleanup_free_ char *t = next_token(in);
        char *end = NULL;
        union {
                uint8_t y;
                int b;
                int16_t n;
                uint16_t q;
                int32_t i;
                uint32_t u;
                int64_t x;
                uint64_t t;
                double d;
        } v;

        if (!t)
                return -ENODATA;
        errno = 0;
        switch (type) {
        case 's':
        case 'o':
        case 'g':
                return sd_bus_message_append_basic(m, type, t);
        case 'b':
                v.b = streq(t, "true") || streq(t, "yes") || streq(t, "1") ? 1 : 0;
                break;
        case 'd':
                v.d = strtod(t, &end);
                break;
        case 'y':
                v.y = (uint8_t) strtoull(t, &end, 0);
                break;
        case 'n':
                v.n = (int16_t) strtoll(t, &end, 0);
                break;
        case 'q':
                v.q = (uint16_t) strtoull(t, &end, 0);
                break;
        case 'i':
                v.i = (int32_t) strtoll(t, &end, 0);
                break;
        case 'u':
                v.u = (uint32_t) strtoull(t, &end, 0);
                break;
        case 'x':
                v.x = strtoll(t, &end, 0);
                break;
        case 't':
                v.t = strtoull(t, &end, 0);
                break;
        default:
                return -EINVAL;   /* 'h': no fds in a fuzz input */
        }
        if (end && *end)
                return -EINVAL;
        return sd_bus_message_append_basic(m, type, &v);
}

/* Appends one value of the complete type type[0..type_len). */
static int append_value(sd_bus_message *m, const char *type, size_t type_len, Input *in, unsigned depth) {
        _cleanup_free_ char *contents = NULL;
        int r;

        if (depth > MAX_DEPTH || type_len == 0)
                return -EINVAL;
        switch (type[0]) {
        case 'a': {
                _cleanup_free_ char *count = next_token(in);
                char *end;
                if (!count)
                        return -ENODATA;
                unsigned long n = strtoul(count, &end, 10);
                if (*end || n > 64)
                        return -EINVAL;
                contents = strndup(type + 1, type_len - 1);
                if (!contents)
                        return -ENOMEM;
                r = sd_bus_message_open_container(m, 'a', contents);
                if (r < 0)
                        return r;
                for (unsigned long i = 0; i < n; i++) {
                        r = append_value(m, contents, type_len - 1, in, depth + 1);
                        if (r < 0)
                                return r;
                }
                return sd_bus_message_close_container(m);
        }
        case 'v': {
                contents = next_token(in);
                if (!contents)
                        return -ENODATA;
                const char *e = type_end(contents);
                if (!e || *e)
                        return -EINVAL;   /* a variant holds one complete type */
                r = sd_bus_message_open_container(m, 'v', contents);
                if (r < 0)
                        return r;
                r = append_value(m, contents, strlen(contents), in, depth + 1);
                if (r < 0)
                        return r;
                return sd_bus_message_close_container(m);
        }
        case '(':
        case '{': {
                if (type_len < 2)
                        return -EINVAL;
                contents = strndup(type + 1, type_len - 2);
                if (!contents)
                        return -ENOMEM;
                r = sd_bus_message_open_container(m, type[0] == '(' ? 'r' : 'e', contents);
                if (r < 0)
                        return r;
                for (const char *p = contents; *p;) {
                        const char *e = type_end(p);
                        if (!e)
                                return -EINVAL;
                        r = append_value(m, p, e - p, in, depth + 1);
                        if (r < 0)
                                return r;
                        p = e;
                }
                return sd_bus_message_close_container(m);
        }
        default:
                return type_len == 1 ? append_basic(m, type[0], in) : -EINVAL;
        }
}

/* A sealed method call with the body the input describes after its first token (which is
 * the body's signature, or "v" after a property name); NULL if it describes none. */
static sd_bus_message *build_message(sd_bus *bus, const char *sig, Input *in) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

        if (sd_bus_message_new_method_call(bus, &m, "org.autoballoon1", "/org/autoballoon1",
                                           "org.autoballoon1.Manager", "SetDefaultProperties") < 0)
                return NULL;
        for (const char *p = sig; *p;) {
                const char *e = type_end(p);
                if (!e || append_value(m, p, e - p, in, 0) < 0)
                        return NULL;
                p = e;
        }
        if (sd_bus_message_seal(m, 1, 0) < 0 || sd_bus_message_rewind(m, true) < 0)
                return NULL;
        return TAKE_PTR(m);
}

static bool in_range(const KnobInfo *k, const PolicyKnobs *knobs) {
        const void *p = knob_cptr(k, knobs);

        switch (knob_bus_type(k)) {
        case 't':
                return *(const uint64_t *) p >= k->min && *(const uint64_t *) p <= k->max;
        case 'u':
                return *(const uint32_t *) p >= k->min && *(const uint32_t *) p <= k->max;
        default:
                return true;
        }
}

/* Set of one property, as sd-bus calls the setter: inside the variant, entered with the
 * property's own signature (sd-bus refuses any other before the setter runs). */
static void fuzz_set(sd_bus *bus, sd_bus_message *m, const KnobInfo *k) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *back = NULL;
        PolicyKnobs before, after, again;

        if (sd_bus_message_enter_container(m, 'v', knob_bus_signature(k)) <= 0)
                return;
        policy_knobs_init_default(&before);
        after = before;
        int r = knob_bus_read(m, k, &after, &error);
        for (size_t i = 0; i < policy_knobs_count; i++)
                if (&policy_knobs[i] != k && !knob_equal(&policy_knobs[i], &before, &after))
                        abort();   /* another knob changed */
        if (r < 0) {
                if (!knob_equal(k, &before, &after))
                        abort();   /* a refused value was stored */
                if (sd_bus_error_is_set(&error) && !strstr(error.message, k->name))
                        abort();   /* InvalidArgs that does not name the property */
                return;
        }
        if (!in_range(k, &after))
                abort();

        /* what Get would answer reads back the same */
        if (sd_bus_message_new_method_call(bus, &back, "org.autoballoon1", "/org/autoballoon1",
                                           "org.freedesktop.DBus.Properties", "Set") < 0 ||
            knob_bus_append(back, k, &after) < 0 || sd_bus_message_seal(back, 2, 0) < 0 ||
            sd_bus_message_rewind(back, true) < 0)
                return;
        again = before;
        if (knob_bus_read(back, k, &again, &error) < 0 || !knob_equal(k, &after, &again))
                abort();
}

static void fuzz_assignments(sd_bus_message *m) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        PolicyKnobs before, after;
        uint64_t mask = 0;

        policy_knobs_init_default(&before);
        after = before;
        int r = knob_bus_read_assignments(m, &after, &mask, &error);
        if (r < 0) {
                /* InvalidArgs names what it refuses: the property, or its type */
                if (sd_bus_error_is_set(&error) &&
                    !(strstr(error.message, "property") || strstr(error.message, " for ")))
                        abort();
                return;
        }
        for (size_t i = 0; i < policy_knobs_count; i++) {
                const KnobInfo *k = &policy_knobs[i];
                if (!(mask & knob_bit(k)) && !knob_equal(k, &before, &after))
                        abort();   /* changed without being named */
                if ((mask & knob_bit(k)) && !in_range(k, &after))
                        abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static sd_bus *bus;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;

        if (!bus) {
                /* Messages need a bus that has been started; a socketpair nobody reads will do. */
                int fds[2];
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) < 0 ||
                    sd_bus_new(&bus) < 0 || sd_bus_set_fd(bus, fds[0], fds[0]) < 0 || sd_bus_start(bus) < 0)
                        abort();
        }
        if (size < 1)
                return 0;
        Input in = { (const char *) data + 1, (const char *) data + size };
        _cleanup_free_ char *first = next_token(&in);
        if (!first)
                return 0;
        const KnobInfo *k = policy_knob_find(first);
        m = build_message(bus, k ? "v" : first, &in);
        if (!m)
                return 0;
        if (k)
                fuzz_set(bus, m, k);
        else
                fuzz_assignments(m);
        return 0;
}
