/* What a machine keeps in /run for the next instance of the daemon (machine-state.h says what and why). */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "machine-state.h"
#include "machine.h"


KeptState kept_state_get(const PolicyVMState *st) {
        return (KeptState) {
                .hold_off_until_usec = st->hold_off_until_usec,
                .manual_until_usec = st->manual_until_usec,
                .recovery_delay_usec = st->recovery_delay_usec,
                .last_event_usec = st->last_event_usec,
                .last_recovery_usec = st->last_recovery_usec,
                .last_grow_usec = st->last_grow_usec,
                .last_grow_target_bytes = st->last_grow_target_bytes,
                .guest_pressure_usec = st->guest_pressure_usec,
                .used_peak_bytes = st->used_peak_bytes,
                .used_peak_usec = st->used_peak_usec,
        };
}

void kept_state_merge(PolicyVMState *st, const KeptState *k) {
        st->hold_off_until_usec = MAX(st->hold_off_until_usec, k->hold_off_until_usec);
        st->manual_until_usec = MAX(st->manual_until_usec, k->manual_until_usec);
        st->recovery_delay_usec = MAX(st->recovery_delay_usec, k->recovery_delay_usec);
        st->last_event_usec = MAX(st->last_event_usec, k->last_event_usec);
        st->last_recovery_usec = MAX(st->last_recovery_usec, k->last_recovery_usec);
        if (k->last_grow_usec > st->last_grow_usec) {
                st->last_grow_usec = k->last_grow_usec;
                st->last_grow_target_bytes = k->last_grow_target_bytes;
        }
        st->guest_pressure_usec = MAX(st->guest_pressure_usec, k->guest_pressure_usec);
        /* a higher peak with its own age, as the policy keeps it */
        if (k->used_peak_usec != 0 && (st->used_peak_usec == 0 || k->used_peak_bytes > st->used_peak_bytes)) {
                st->used_peak_bytes = k->used_peak_bytes;
                st->used_peak_usec = k->used_peak_usec;
        }
}

bool kept_state_equal(const KeptState *a, const KeptState *b) {
        return a->hold_off_until_usec == b->hold_off_until_usec && a->manual_until_usec == b->manual_until_usec &&
                a->recovery_delay_usec == b->recovery_delay_usec && a->last_event_usec == b->last_event_usec &&
                a->last_recovery_usec == b->last_recovery_usec && a->last_grow_usec == b->last_grow_usec &&
                a->last_grow_target_bytes == b->last_grow_target_bytes &&
                a->guest_pressure_usec == b->guest_pressure_usec && a->used_peak_bytes == b->used_peak_bytes &&
                a->used_peak_usec == b->used_peak_usec;
}

/* A kept time that moved on by less than this share of the window it counts in is not worth a
 * write: under pressure every event moves every VM's last event, and a file per VM per event is
 * most of the daemon's CPU at 1,000 VMs on a disk-backed /run. A crash then costs at most this
 * share of the cool-down (or of the working-set window), on top of the last flush. */
#define KEPT_TIME_SLACK_DIVISOR 8

static bool time_moved(usec_t saved, usec_t now, usec_t window) {
        if (saved == now)
                return false;
        if (saved == 0 || now == 0 || now < saved)
                return true;
        return now - saved >= MAX(window / KEPT_TIME_SLACK_DIVISOR, 1);
}

/* The working-set peak rising by less than this share of RAM is not worth a write either: a guest
 * at its peak shows a use a few pages off at every sample. */
#define KEPT_PEAK_SLACK_DIVISOR 64

bool kept_state_worth_writing(const KeptState *saved, const KeptState *now, const PolicyKnobs *k, uint64_t ram_bytes) {
        usec_t delay = k->recovery_delay_usec;
        bool peak_rose_little = saved->used_peak_usec != 0 && now->used_peak_bytes > saved->used_peak_bytes &&
                now->used_peak_bytes - saved->used_peak_bytes < ram_bytes / KEPT_PEAK_SLACK_DIVISOR;

        return saved->hold_off_until_usec != now->hold_off_until_usec ||
                saved->manual_until_usec != now->manual_until_usec ||
                saved->recovery_delay_usec != now->recovery_delay_usec ||
                saved->last_grow_usec != now->last_grow_usec ||
                saved->last_grow_target_bytes != now->last_grow_target_bytes ||
                (saved->used_peak_bytes != now->used_peak_bytes && !peak_rose_little) ||
                time_moved(saved->last_event_usec, now->last_event_usec, delay) ||
                time_moved(saved->last_recovery_usec, now->last_recovery_usec, delay) ||
                time_moved(saved->guest_pressure_usec, now->guest_pressure_usec, delay) ||
                time_moved(saved->used_peak_usec, now->used_peak_usec, k->working_set_window_usec);
}

bool kept_state_is_empty(const KeptState *k) {
        return kept_state_equal(k, &(KeptState) {});
}

/* The keys, in the file's order. Deadlines are CLOCK_REALTIME stamps of their end, past times
 * CLOCK_REALTIME stamps of when, the rest plain numbers. */
typedef enum KeptKind { KEPT_DEADLINE, KEPT_PAST, KEPT_USEC, KEPT_BYTES } KeptKind;

static const struct {
        const char *key;
        KeptKind kind;
        size_t offset;
} kept_fields[] = {
        { "hold-off-until", KEPT_DEADLINE, offsetof(KeptState, hold_off_until_usec) },
        { "manual-hold-until", KEPT_DEADLINE, offsetof(KeptState, manual_until_usec) },
        { "recovery-delay-usec", KEPT_USEC, offsetof(KeptState, recovery_delay_usec) },
        { "last-event", KEPT_PAST, offsetof(KeptState, last_event_usec) },
        { "last-recovery", KEPT_PAST, offsetof(KeptState, last_recovery_usec) },
        { "last-grow", KEPT_PAST, offsetof(KeptState, last_grow_usec) },
        { "last-grow-target-bytes", KEPT_BYTES, offsetof(KeptState, last_grow_target_bytes) },
        { "guest-pressure", KEPT_PAST, offsetof(KeptState, guest_pressure_usec) },
        { "working-set-peak-bytes", KEPT_BYTES, offsetof(KeptState, used_peak_bytes) },
        { "working-set-peak", KEPT_PAST, offsetof(KeptState, used_peak_usec) },
};

static uint64_t *field(KeptState *k, size_t i) {
        return (uint64_t *) ((char *) k + kept_fields[i].offset);
}

int kept_state_format(const KeptState *k, const KeptOwner *owner, usec_t now_mono, usec_t now_real, char **ret) {
        char buf[KEPT_STATE_SIZE_MAX], id[SD_ID128_STRING_MAX];
        size_t n = 0;

#define APPEND(...) do {                                                                   \
                int _w = snprintf(buf + n, sizeof buf - n, __VA_ARGS__);                     \
                if (_w < 0 || (size_t) _w >= sizeof buf - n)                                 \
                        return -ENOBUFS;                                                     \
                n += (size_t) _w;                                                            \
        } while (0)

        APPEND("# autoballoond: kept for its next instance (autoballoond(8), RESTARTS); times in CLOCK_REALTIME usec\n");
        APPEND("leader=%d\n", (int) owner->leader);
        if (!sd_id128_is_null(owner->machine_id))
                APPEND("machine-id=%s\n", sd_id128_to_string(owner->machine_id, id));
        if (!sd_id128_is_null(owner->boot_id))
                APPEND("boot-id=%s\n", sd_id128_to_string(owner->boot_id, id));
        for (size_t i = 0; i < ELEMENTSOF(kept_fields); i++) {
                uint64_t v = *field((KeptState *) k, i), out;

                switch (kept_fields[i].kind) {
                case KEPT_DEADLINE:
                        if (v <= now_mono)
                                continue;   /* over */
                        out = now_real + (v - now_mono);
                        break;
                case KEPT_PAST:
                        if (v == 0)
                                continue;
                        out = now_real - MIN(now_mono > v ? now_mono - v : 0, now_real);
                        break;
                default:
                        if (v == 0)
                                continue;
                        out = v;
                }
                APPEND("%s=%" PRIu64 "\n", kept_fields[i].key, out);
        }
#undef APPEND
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

/* Digits only, no sign, no blanks, no overflow. */
static int parse_u64(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!*s)
                return -EINVAL;
        for (; *s; s++) {
                if (*s < '0' || *s > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t) (*s - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        *ret = v;
        return 0;
}

static void note(int *n, const char **why, const char *what) {
        if (!*why)
                *why = what;
        (*n)++;
}

int kept_state_parse(const char *text, const KeptOwner *owner, const PolicyKnobs *knobs, uint64_t ram_bytes,
                     usec_t now_mono, usec_t now_real, KeptState *ret, const char **ret_why) {
        KeptState k = {};
        bool have_leader = false, other_owner = false;
        const char *why = NULL;
        int n = 0;
        usec_t delay_max = MAX(knobs->recovery_delay_max_usec, knobs->recovery_delay_usec);

        *ret = (KeptState) {};
        if (ret_why)
                *ret_why = NULL;
        if (strlen(text) > KEPT_STATE_SIZE_MAX) {
                if (ret_why)
                        *ret_why = "larger than any state file";
                return -EFBIG;
        }
        for (const char *line = text; *line;) {
                size_t len = strcspn(line, "\n");
                char buf[128], *eq;
                uint64_t v;

                if (len >= sizeof buf) {
                        note(&n, &why, "a line too long");
                        goto next;
                }
                memcpy(buf, line, len);
                buf[len] = 0;
                if (buf[0] == '#' || buf[0] == 0)
                        goto next;
                eq = strchr(buf, '=');
                if (!eq) {
                        note(&n, &why, "a line without '='");
                        goto next;
                }
                *eq++ = 0;
                if (streq(buf, "leader")) {
                        if (parse_u64(eq, &v) < 0 || v == 0 || v > INT32_MAX)
                                other_owner = true;
                        else
                                other_owner = other_owner || (pid_t) v != owner->leader;
                        have_leader = true;
                        goto next;
                }
                if (streq(buf, "machine-id") || streq(buf, "boot-id")) {
                        sd_id128_t id, want = buf[0] == 'm' ? owner->machine_id : owner->boot_id;
                        if (sd_id128_from_string(eq, &id) < 0)
                                other_owner = true;
                        else if (!sd_id128_is_null(want) && !sd_id128_equal(id, want))
                                other_owner = true;
                        goto next;
                }
                size_t i;
                for (i = 0; i < ELEMENTSOF(kept_fields); i++)
                        if (streq(buf, kept_fields[i].key))
                                break;
                if (i == ELEMENTSOF(kept_fields)) {
                        note(&n, &why, "an unknown key");   /* a newer daemon's: left alone */
                        goto next;
                }
                if (parse_u64(eq, &v) < 0) {
                        note(&n, &why, "a value that is not a number");
                        goto next;
                }
                switch (kept_fields[i].kind) {
                case KEPT_DEADLINE: {
                        usec_t bound = kept_fields[i].offset == offsetof(KeptState, hold_off_until_usec) ? knobs->hold_off_usec : MAX(MANUAL_HOLD_USEC, delay_max);
                        if (v <= now_real) {
                                v = 0;   /* over while the daemon was away */
                                break;
                        }
                        if (v - now_real > bound) {
                                note(&n, &why, "a deadline beyond its knob");
                                v = now_real + bound;
                        }
                        v = now_mono + (v - now_real);
                        break;
                }
                case KEPT_PAST: {
                        usec_t age = 0;
                        if (v > now_real)
                                note(&n, &why, "a time in the future");   /* taken as now */
                        else
                                age = now_real - v;
                        /* older than the monotonic clock (the real one was set forward): as long
                         * ago as can be said, which every window has passed */
                        v = age < now_mono ? now_mono - age : 1;
                        break;
                }
                case KEPT_USEC:
                        if (v != 0 && (v < knobs->recovery_delay_usec || v > delay_max)) {
                                note(&n, &why, "a back-off outside RecoveryDelaySec=..RecoveryDelayMaxSec=");
                                v = CLAMP(v, knobs->recovery_delay_usec, delay_max);
                        }
                        break;
                case KEPT_BYTES:
                        if (v > ram_bytes) {
                                note(&n, &why, "a size above the VM's RAM");
                                v = ram_bytes;
                        }
                        break;
                }
                *field(&k, i) = v;
        next:
                line += len;
                if (*line)
                        line++;
        }
        if (!have_leader || other_owner) {
                if (ret_why)
                        *ret_why = have_leader ? "another VM's or another boot's" : "no owner";
                return -ESTALE;
        }
        /* Halves of a pair do not stand alone. */
        if ((k.used_peak_bytes == 0) != (k.used_peak_usec == 0))
                k.used_peak_bytes = k.used_peak_usec = 0;
        if (k.last_grow_usec == 0)
                k.last_grow_target_bytes = 0;
        *ret = k;
        if (ret_why)
                *ret_why = why;
        return n;
}

/* --- files ------------------------------------------------------------------------------------ */

static usec_t realtime_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

static int state_path(Machine *machine, const char *suffix, char **ret) {
        const char *dir = machine->context.config->runtime_machines_directory;

        if (!dir || strchr(machine->name, '/') || machine->name[0] == '.')
                return -EINVAL;
        return asprintf(ret, "%s/%s%s", dir, machine->name, suffix) < 0 ? -ENOMEM : 0;
}

static KeptOwner machine_owner(Machine *machine) {
        KeptOwner o = { .leader = machine->leader, .machine_id = machine->id };

        (void) sd_id128_get_boot(&o.boot_id);
        return o;
}

/* A plain file of ours, at most KEPT_STATE_SIZE_MAX: never a FIFO or a symlink left there. */
static int read_state_file(const char *path, char **ret) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        ssize_t k;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if (st.st_size > KEPT_STATE_SIZE_MAX)
                return -EFBIG;
        buf = malloc(KEPT_STATE_SIZE_MAX + 2);
        if (!buf)
                return -ENOMEM;
        do
                k = read(fd, buf, KEPT_STATE_SIZE_MAX + 1);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return -errno;
        if (k > KEPT_STATE_SIZE_MAX)
                return -EFBIG;
        buf[k] = 0;
        if (strlen(buf) != (size_t) k)
                return -EBADMSG;   /* a NUL inside */
        *ret = TAKE_PTR(buf);
        return 0;
}

/* Written as a dot file and renamed: a crash mid-write leaves the old file. No fsync: /run does
 * not outlive a power cut, and a rename is atomic against a crash of the daemon. */
static int write_state_file(const char *path, const char *text) {
        _cleanup_free_ char *tmp = NULL;
        const char *slash = strrchr(path, '/');
        _cleanup_close_ int fd = -1;
        size_t len = strlen(text);

        if (!slash || asprintf(&tmp, "%.*s/.%s.XXXXXX", (int) (slash - path), path, slash + 1) < 0)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
                int r = mkdir_parents(path);
                if (r < 0)
                        return r;
                fd = mkostemp(tmp, O_CLOEXEC);
        }
        if (fd < 0)
                return -errno;
        for (size_t done = 0; done < len;) {
                ssize_t n = write(fd, text + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        goto fail;
                done += (size_t) n;
        }
        if (fchmod(fd, 0644) < 0 || rename(tmp, path) < 0)
                goto fail;
        return 0;
fail:;
        int r = -errno;
        (void) unlink(tmp);
        return r;
}

static void unlink_state(Machine *machine, const char *suffix) {
        _cleanup_free_ char *path = NULL;

        if (state_path(machine, suffix, &path) >= 0 && unlink(path) < 0 && errno != ENOENT)
                log_debug_errno(errno, "Machine %s: failed to remove %s: %m", machine->name, path);
}

static int machine_state_write(Machine *machine, const KeptState *k) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        KeptOwner owner = machine_owner(machine);
        int r;

        if (kept_state_is_empty(k)) {
                unlink_state(machine, ".state");
                return 0;
        }
        r = state_path(machine, ".state", &path);
        if (r >= 0)
                r = kept_state_format(k, &owner, now_usec(), realtime_usec(), &text);
        if (r >= 0)
                r = write_state_file(path, text);
        return r;
}

void machine_state_save(Machine *machine) {
        KeptState k = kept_state_get(&machine->policy_state);
        int r;

        r = machine_state_write(machine, &k);
        if (r < 0) {
                log_warning_errno(r, "Machine %s: failed to save what a restart of the daemon must keep: %m",
                                  machine->name);
                return;
        }
        machine->kept_saved = k;
}

/* Versions before the one state file kept only the manual hold, in NAME.hold: one CLOCK_REALTIME
 * deadline. Read once after an upgrade, then gone. */
static void restore_legacy_hold(Machine *machine, KeptState *k, usec_t now_mono, usec_t now_real) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        const PolicyKnobs *knobs = &machine->config.knobs;
        usec_t bound = MAX(MANUAL_HOLD_USEC, MAX(knobs->recovery_delay_max_usec, knobs->recovery_delay_usec));
        uint64_t until;

        if (state_path(machine, ".hold", &path) < 0 || read_state_file(path, &text) < 0)
                return;
        text[strcspn(text, "\n")] = 0;
        if (parse_u64(text, &until) >= 0 && until > now_real)
                k->manual_until_usec = MAX(k->manual_until_usec, now_mono + MIN(until - now_real, bound));
        (void) unlink(path);
}

static void log_restored(Machine *machine, const KeptState *k, usec_t now) {
        char text[512], peak[FORMAT_SIZE_MAX];
        size_t n = 0;

#define SAY(...) do {                                                                             \
                int _w = snprintf(text + n, sizeof text - n, "%s", n ? ", " : "");               \
                if (_w > 0 && (size_t) _w < sizeof text - n)                                     \
                        n += (size_t) _w;                                                        \
                _w = snprintf(text + n, sizeof text - n, __VA_ARGS__);                           \
                if (_w > 0 && (size_t) _w < sizeof text - n)                                     \
                        n += (size_t) _w;                                                        \
        } while (0)
        text[0] = 0;
        if (k->hold_off_until_usec > now)
                SAY("self-deflate hold-off for %" PRIu64 " s more", (k->hold_off_until_usec - now) / USEC_PER_SEC);
        if (k->manual_until_usec > now)
                SAY("manual hold for %" PRIu64 " s more", (k->manual_until_usec - now) / USEC_PER_SEC);
        if (k->recovery_delay_usec)
                SAY("recovery cool-down backed off to %" PRIu64 " s", k->recovery_delay_usec / USEC_PER_SEC);
        if (k->last_event_usec)
                SAY("last pressure event %" PRIu64 " s ago", (now - k->last_event_usec) / USEC_PER_SEC);
        if (k->used_peak_usec)
                SAY("working-set peak %s seen %" PRIu64 " s ago", format_size(peak, sizeof peak, k->used_peak_bytes),
                    (now - k->used_peak_usec) / USEC_PER_SEC);
        if (k->guest_pressure_usec)
                SAY("guest pressure %" PRIu64 " s ago", (now - k->guest_pressure_usec) / USEC_PER_SEC);
#undef SAY
        if (n > 0)
                log_info("Machine %s: kept from the previous instance: %s.", machine->name, text);
}

void machine_state_restore(Machine *machine) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        KeptOwner owner = machine_owner(machine);
        usec_t now = now_usec(), now_real = realtime_usec();
        const char *why = NULL;
        KeptState k = {};
        int r;

        r = state_path(machine, ".state", &path);
        if (r >= 0)
                r = read_state_file(path, &text);
        if (r >= 0) {
                r = kept_state_parse(text, &owner, &machine->config.knobs, machine->ram_bytes, now, now_real, &k, &why);
                if (r < 0)
                        log_debug("Machine %s: %s is %s, not used: starting from nothing.", machine->name, path,
                                  why ?: "unreadable");
                else if (r > 0)
                        log_debug("Machine %s: %s: %d value(s) dropped or clamped (first: %s).", machine->name, path,
                                  r, why);
        } else if (r != -ENOENT && path)
                log_debug_errno(r, "Machine %s: cannot read %s, starting from nothing: %m", machine->name, path);
        restore_legacy_hold(machine, &k, now, now_real);

        kept_state_merge(&machine->policy_state, &k);
        /* what the file says: a merge that says more is written after the first decision */
        machine->kept_saved = k;
        log_restored(machine, &k, now);
        if (kept_state_is_empty(&k) && path)
                (void) unlink(path);   /* another VM's, or nothing left in it */
}

void machine_state_forget(Machine *machine) {
        unlink_state(machine, ".state");
        unlink_state(machine, ".hold");
        machine->kept_saved = (KeptState) {};
}

/* Whether this machine has something new to keep. Before its first attach it has nothing of its
 * own yet, and the file is the previous instance's: left alone. */
static bool machine_state_dirty(Machine *machine, KeptState *ret) {
        if (!machine->attached_once)
                return false;
        *ret = kept_state_get(&machine->policy_state);
        KeptState cmp = *ret;
        /* A grow that has landed (the guest is at its target) is not worth a write by itself: its
         * use after a crash is telling our own deflate still landing from the guest deflating
         * itself, and the spacing of recovery steps (RecoveryIntervalSec=). Recovery moves every
         * VM a step per interval: measured at 1,000 VMs, most of the writes. */
        if (machine->actual_bytes >= ret->last_grow_target_bytes) {
                cmp.last_grow_usec = machine->kept_saved.last_grow_usec;
                cmp.last_grow_target_bytes = machine->kept_saved.last_grow_target_bytes;
        }
        return kept_state_worth_writing(&machine->kept_saved, &cmp, &machine->config.knobs, machine->ram_bytes);
}

/* Writes this machine's kept state if it changed: 1 written, 0 nothing new, < 0 a failed write
 * (logged; the next change tries again). */
int machine_state_flush(Machine *machine) {
        KeptState k;
        int r;

        if (!machine_state_dirty(machine, &k))
                return 0;
        r = machine_state_write(machine, &k);
        if (r < 0)
                /* once per change: the next one tries again */
                log_warning_errno(r, "Machine %s: failed to save what a restart of the daemon must keep: %m",
                                  machine->name);
        machine->kept_saved = k;
        return r < 0 ? r : 1;
}

bool machine_state_changed(Machine *machine) {
        KeptState k;

        return machine_state_dirty(machine, &k);
}
