/* The real QmpClient and Balloon on a real sd-event loop against the fake QMP device
 * (tests/fake-qmp): connect, negotiate, move the balloon, stats, and the failures QEMU
 * gives us in practice: killed mid-command, not there yet, garbage, hung, busy monitor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "balloon.h"
#include "qmp.h"

static const char *fake_path;
static char tmpdir[] = "/tmp/test-qmp-client.XXXXXX";

typedef struct Fake {
        pid_t pid;
        char sock[108];         /* sun_path */
        char control[108];
        char record[256];
} Fake;

/* Everything the callbacks saw, for the assertions. */
typedef struct Seen {
        QmpState state;
        int state_error;
        char state_desc[512];
        unsigned n_ready, n_waiting_retry;
        unsigned n_events;
        bool attached;
        bool balloon_ready;
        uint64_t ready_actual, ready_ram;
        uint64_t actual;
        unsigned n_actual;
        bool have_stats;
        GuestStats stats;
        int balloon_error;
        char balloon_desc[512];
        unsigned n_fpr;                 /* on_free_page_reporting calls */
        int fpr;
        bool fpr_before_ready;
        bool reply_done;
        int reply_error;
        char reply_desc[512];
        bool free_on_event;
        QmpState free_on_state;         /* free the client when entering this state (0: never) */
        QmpClient **client_slot;
        Balloon *balloon;
} Seen;

static void fake_start(Fake *f, const char *name, const char *const *extra) {
        const char *argv[32];
        size_t n = 0;
        char qmp[300];

        snprintf(f->sock, sizeof f->sock, "%s/%s.qmp", tmpdir, name);
        snprintf(f->control, sizeof f->control, "%s/%s.ctl", tmpdir, name);
        snprintf(f->record, sizeof f->record, "%s/%s.rec", tmpdir, name);
        snprintf(qmp, sizeof qmp, "unix:%s,server=on,wait=off", f->sock);

        argv[n++] = fake_path;
        argv[n++] = "-qmp";
        argv[n++] = qmp;
        argv[n++] = "-m";
        argv[n++] = "512M";
        argv[n++] = "-name";
        argv[n++] = name;
        argv[n++] = "--record";
        argv[n++] = f->record;
        argv[n++] = "--fake-control";
        argv[n++] = f->control;
        for (; extra && *extra; extra++)
                argv[n++] = *extra;
        argv[n] = NULL;

        (void) unlink(f->control);
        f->pid = fork();
        assert_true(f->pid >= 0);
        if (f->pid == 0) {
                execv(fake_path, (char **) argv);
                _exit(127);
        }
        /* The fake listens before it creates the control socket: both there = ready. */
        for (int i = 0; i < 500; i++) {
                if (access(f->control, F_OK) == 0 && access(f->sock, F_OK) == 0)
                        return;
                usleep(10000);
        }
        fail_msg("fake QMP device did not come up at %s", f->sock);
}

static void fake_kill(Fake *f, int sig) {
        if (f->pid <= 0)
                return;
        kill(f->pid, sig);
        (void) waitpid(f->pid, NULL, 0);
        f->pid = 0;
}

static void fake_control(Fake *f, const char *line) {
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
        } addr = { .un.sun_family = AF_UNIX };
        char buf[1024];
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        snprintf(addr.un.sun_path, sizeof addr.un.sun_path, "%s", f->control);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, &addr.sa, sizeof addr.un), 0);
        assert_true(write(fd, line, strlen(line)) == (ssize_t) strlen(line));
        assert_true(write(fd, "\n", 1) == 1);
        ssize_t k = read(fd, buf, sizeof buf - 1);
        assert_true(k > 0);
        buf[k] = 0;
        close(fd);
        if (!strstr(buf, "ok\n"))
                fail_msg("control '%s' answered '%s'", line, buf);
}

static bool record_has(Fake *f, const char *needle) {
        _cleanup_free_ char *text = NULL;
        return read_full_file(f->record, &text, NULL) >= 0 && strstr(text, needle);
}

/* Runs the loop until *flag or the timeout; returns whether flag became true. */
static bool run_until(sd_event *e, const bool *flag, usec_t timeout) {
        usec_t end = now_usec() + timeout;

        while (!*flag && now_usec() < end)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        return *flag;
}

static void run_for(sd_event *e, usec_t t) {
        usec_t end = now_usec() + t;
        while (now_usec() < end)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
}

static void on_state(QmpClient *c, QmpState state, int error, const char *desc, void *userdata) {
        Seen *s = userdata;

        s->state = state;
        if (s->free_on_state != 0 && state == s->free_on_state && s->client_slot) {
                *s->client_slot = qmp_client_free(*s->client_slot);
                return;
        }
        if (state == QMP_READY)
                s->n_ready++;
        if (state == QMP_WAITING_RETRY) {
                s->n_waiting_retry++;
                s->state_error = error;
                snprintf(s->state_desc, sizeof s->state_desc, "%s", desc ?: "");
                if (s->balloon)
                        balloon_detach(s->balloon);
        }
}

static void on_event(QmpClient *c, const char *event, json_object *data, void *userdata) {
        Seen *s = userdata;

        s->n_events++;
        if (s->balloon)
                balloon_handle_event(s->balloon, event, data);
        if (s->free_on_event && s->client_slot) {
                /* The owner drops the client from inside its own callback. */
                *s->client_slot = qmp_client_free(*s->client_slot);
                s->balloon = NULL;
        }
}

static const QmpCallbacks qmp_cb = { .on_event = on_event, .on_state = on_state };

static void on_ready(Balloon *b, uint64_t actual, uint64_t ram, void *userdata) {
        Seen *s = userdata;
        s->balloon_ready = true;
        s->ready_actual = actual;
        s->ready_ram = ram;
}

static void on_actual(Balloon *b, uint64_t actual, void *userdata) {
        Seen *s = userdata;
        s->actual = actual;
        s->n_actual++;
}

static void on_stats(Balloon *b, const GuestStats *stats, void *userdata) {
        Seen *s = userdata;
        s->have_stats = true;
        s->stats = *stats;
}

static void on_free_page_reporting(Balloon *b, int enabled, void *userdata) {
        Seen *s = userdata;
        s->n_fpr++;
        s->fpr = enabled;
        s->fpr_before_ready = !s->balloon_ready;
}

static void on_balloon_error(Balloon *b, int error, const char *desc, void *userdata) {
        Seen *s = userdata;
        s->balloon_error = error;
        snprintf(s->balloon_desc, sizeof s->balloon_desc, "%s", desc);
}

static const BalloonCallbacks balloon_cb = {
        .on_ready = on_ready, .on_actual = on_actual, .on_stats = on_stats, .on_error = on_balloon_error,
        .on_free_page_reporting = on_free_page_reporting,
};

static void on_reply(QmpClient *c, int error, json_object *reply, const char *desc, void *userdata) {
        Seen *s = userdata;
        s->reply_done = true;
        s->reply_error = error;
        snprintf(s->reply_desc, sizeof s->reply_desc, "%s", desc ?: "");
}

typedef struct Reply {
        bool done;
        int error;
        char text[256];
} Reply;

static void on_reply_text(QmpClient *c, int error, json_object *reply, const char *desc, void *userdata) {
        Reply *r = userdata;
        r->done = true;
        r->error = error;
        snprintf(r->text, sizeof r->text, "%s", error == 0 ? json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN) :
                 qmp_error_class(reply));
}

/* Runs e until the client is ready (the greeting and qmp_capabilities done). */
static bool run_until_ready(sd_event *e, const Seen *s, usec_t timeout) {
        usec_t end = now_usec() + timeout;

        while (s->state != QMP_READY && now_usec() < end)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        return s->state == QMP_READY;
}

static void test_balloon_roundtrip(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(qmp_client_freep) QmpClient *c = NULL;
        _cleanup_(balloon_freep) Balloon *b = NULL;
        Seen s = {};
        Fake f;

        fake_start(&f, "vm1", (const char *[]) { "--fake-stats=available=300M,free=100M,caches=150M,oom-kills=2",
                                                 "--fake-balloon-step-ms=20", NULL });
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(qmp_client_new(&c, e, f.sock, &qmp_cb, &s), 0);
        assert_int_equal(balloon_new(&b, c, &balloon_cb, &s), 0);
        s.balloon = b;
        assert_int_equal(qmp_client_start(c), 0);

        assert_true(run_until_ready(e, &s, 5 * USEC_PER_SEC));
        assert_true(record_has(&f, "\"execute\":\"qmp_capabilities\""));

        assert_int_equal(balloon_attach(b, 1), 0);
        assert_true(run_until(e, &s.balloon_ready, 5 * USEC_PER_SEC));
        assert_int_equal(s.balloon_error, 0);
        assert_int_equal(s.ready_actual, 512 * MIB);
        assert_int_equal(s.ready_ram, 512 * MIB);
        assert_string_equal(balloon_device_path(b), "/machine/peripheral/balloon0");
        assert_true(record_has(&f, "\"property\":\"guest-stats-polling-interval\",\"value\":1"));

        assert_int_equal(balloon_set_target(b, 0, NULL, NULL), -ERANGE);
        assert_int_equal(balloon_set_target(b, 513 * MIB, NULL, NULL), -ERANGE);
        assert_int_equal(balloon_set_target(b, 256 * MIB, NULL, NULL), 0);
        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.actual != 256 * MIB && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(s.actual, 256 * MIB);
        /* The guest acknowledges in steps, one BALLOON_CHANGE each, as QEMU reports them. */
        assert_true(s.n_actual >= 2);
        assert_int_equal(balloon_actual(b), 256 * MIB);
        assert_true(record_has(&f, "\"execute\":\"balloon\",\"arguments\":{\"value\":268435456}"));

        assert_int_equal(balloon_poll_stats(b), 0);
        assert_true(run_until(e, &s.have_stats, 5 * USEC_PER_SEC));
        assert_true(s.stats.valid);
        assert_int_equal(s.stats.available_bytes, 300 * MIB);
        assert_int_equal(s.stats.free_bytes, 100 * MIB);
        assert_int_equal(s.stats.caches_bytes, 150 * MIB);
        assert_int_equal(s.stats.oom_kills, 2);
        assert_true(s.stats.alloc_stalls == UINT64_MAX);    /* QEMU 7.2 does not know it */
        assert_true(s.stats.updated_usec > 0 && s.stats.updated_usec <= now_usec());

        /* Same last-update: nothing new to report. */
        s.have_stats = false;
        assert_int_equal(balloon_poll_stats(b), 0);
        run_for(e, 100 * USEC_PER_MSEC);
        assert_false(s.have_stats);

        /* Polling off while idle, and back on. */
        assert_int_equal(balloon_set_stats_interval(b, 1), 0);    /* unchanged: nothing sent */
        assert_int_equal(balloon_set_stats_interval(b, 0), 0);
        assert_int_equal(balloon_set_stats_interval(b, 5), 0);
        s.reply_done = false;
        assert_int_equal(qmp_client_execute(c, "query-status", NULL, on_reply, &s), 0);
        assert_true(run_until(e, &s.reply_done, 5 * USEC_PER_SEC));
        assert_true(record_has(&f, "\"property\":\"guest-stats-polling-interval\",\"value\":0"));
        assert_true(record_has(&f, "\"property\":\"guest-stats-polling-interval\",\"value\":5"));

        /* The guest deflates by itself (deflate-on-oom): BALLOON_CHANGE up. */
        fake_control(&f, "actual 400M");
        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.actual != 400 * MIB && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(s.actual, 400 * MIB);

        /* Several commands in flight: each reply reaches its own caller. */
        Reply r[3] = {};
        assert_int_equal(qmp_client_execute(c, "query-status", NULL, on_reply_text, &r[0]), 0);
        assert_int_equal(qmp_client_execute(c, "query-balloon", NULL, on_reply_text, &r[1]), 0);
        assert_int_equal(qmp_client_execute(c, "nope", NULL, on_reply_text, &r[2]), 0);
        assert_true(run_until(e, &r[2].done, 5 * USEC_PER_SEC));
        assert_true(r[0].done && r[1].done);
        assert_string_equal(r[0].text, "{\"status\":\"running\",\"singlestep\":false,\"running\":true}");
        assert_string_equal(r[1].text, "{\"actual\":419430400}");
        assert_int_equal(r[2].error, -EIO);
        assert_string_equal(r[2].text, "CommandNotFound");

        /* A command far larger than the socket buffer goes out in pieces (the output queue
         * and EPOLLOUT), and the reply still comes back. */
        size_t big = 4 * MIB;
        char *blob = malloc(big + 1);
        assert_non_null(blob);
        memset(blob, 'x', big);
        blob[big] = 0;
        json_object *args = json_object_new_object();
        json_object_object_add(args, "blob", json_object_new_string(blob));
        free(blob);
        Reply rb = {};
        assert_int_equal(qmp_client_execute(c, "no-such-big-command", args, on_reply_text, &rb), 0);
        assert_true(run_until(e, &rb.done, 10 * USEC_PER_SEC));
        assert_int_equal(rb.error, -EIO);
        assert_string_equal(rb.text, "CommandNotFound");

        /* A QMP error reaches the caller with its class. */
        s.reply_done = false;
        assert_int_equal(qmp_client_execute(c, "no-such-command", NULL, on_reply, &s), 0);
        assert_true(run_until(e, &s.reply_done, 5 * USEC_PER_SEC));
        assert_int_equal(s.reply_error, -EIO);
        assert_non_null(strstr(s.reply_desc, "CommandNotFound"));

        /* Hot-unplug of another device is nobody's business; of ours, it ends the balloon. */
        fake_control(&f, "event DEVICE_DELETED {\"device\": \"net0\", \"path\": \"/machine/peripheral/net0\"}");
        fake_control(&f, "event DEVICE_DELETED {\"device\": \"balloon0\", \"path\": \"/machine/peripheral/balloon0\"}");
        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.balloon_error == 0 && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(s.balloon_error, -ENODEV);
        assert_string_equal(s.balloon_desc, "virtio-balloon device /machine/peripheral/balloon0 was unplugged");
        assert_false(balloon_is_ready(b));
        assert_null(balloon_device_path(b));

        assert_int_equal(s.n_waiting_retry, 0);
        fake_kill(&f, SIGTERM);
}

/* The fake a test runs, for its teardown: a failed check must not leave it running (it holds
 * the test's output open, and meson would wait for it until the timeout). */
static Fake *current_fake;

static int kill_current_fake(void **state) {
        if (current_fake)
                fake_kill(current_fake, SIGTERM);
        current_fake = NULL;
        return 0;
}

/* free-page-reporting: read on the device path during attach, reported once before on_ready;
 * a QEMU without the property (error reply) is "unsupported", and the balloon still works. */
static void test_free_page_reporting(void **state) {
        static const struct {
                const char *name;
                const char *arg;
                const char *device_path;
                int want;
        } cases[] = {
                { "fpr-on", "--fake-free-page-reporting=on", "/machine/peripheral/balloon0", 1 },
                { "fpr-off", "--fake-free-page-reporting=off", "/machine/peripheral/balloon0", 0 },
                { "fpr-default", NULL, "/machine/peripheral/balloon0", 0 },     /* QEMU's default */
                { "fpr-old", "--fake-free-page-reporting=absent", "/machine/peripheral/balloon0", -EOPNOTSUPP },
                /* as QEMU's own command line spells it */
                { "fpr-device", "-device=virtio-balloon-pci,id=b1,free-page-reporting=on", "/machine/peripheral/b1", 1 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(sd_event_unrefp) sd_event *e = NULL;
                _cleanup_(qmp_client_freep) QmpClient *c = NULL;
                _cleanup_(balloon_freep) Balloon *b = NULL;
                const char *extra[3] = {};
                char want[300];
                Seen s = {};
                Fake f;

                if (cases[i].arg && strncmp(cases[i].arg, "-device=", 8) == 0) {
                        extra[0] = "-device";
                        extra[1] = cases[i].arg + 8;
                } else
                        extra[0] = cases[i].arg;
                fake_start(&f, cases[i].name, extra);
                current_fake = &f;
                assert_int_equal(sd_event_new(&e), 0);
                assert_int_equal(qmp_client_new(&c, e, f.sock, &qmp_cb, &s), 0);
                assert_int_equal(balloon_new(&b, c, &balloon_cb, &s), 0);
                s.balloon = b;
                assert_int_equal(balloon_free_page_reporting(b), -ENODATA);
                assert_int_equal(qmp_client_start(c), 0);
                for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.state != QMP_READY && now_usec() < end;)
                        assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
                assert_int_equal(s.state, QMP_READY);

                assert_int_equal(balloon_attach(b, 2), 0);
                if (!run_until(e, &s.balloon_ready, 5 * USEC_PER_SEC))
                        fail_msg("%s: balloon not ready: %s", cases[i].name, s.balloon_desc);
                assert_int_equal(s.balloon_error, 0);
                assert_string_equal(balloon_device_path(b), cases[i].device_path);
                if (s.n_fpr != 1 || s.fpr != cases[i].want)
                        fail_msg("%s: %u reports, last %d, expected one of %d", cases[i].name, s.n_fpr, s.fpr,
                                 cases[i].want);
                assert_true(s.fpr_before_ready);
                assert_int_equal(balloon_free_page_reporting(b), cases[i].want);
                snprintf(want, sizeof want, "\"execute\":\"qom-get\",\"arguments\":{\"path\":\"%s\","
                         "\"property\":\"free-page-reporting\"}", cases[i].device_path);
                if (!record_has(&f, want))
                        fail_msg("%s: no %s in the fake's record", cases[i].name, want);
                /* the rest of attach went on: stats enabled, and the balloon moves */
                assert_true(record_has(&f, "\"property\":\"guest-stats-polling-interval\",\"value\":2"));
                assert_int_equal(balloon_set_target(b, 256 * MIB, NULL, NULL), 0);
                for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.actual != 256 * MIB && now_usec() < end;)
                        assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
                assert_int_equal(s.actual, 256 * MIB);

                /* forgotten with the device; the next attach reads it again */
                balloon_detach(b);
                assert_int_equal(balloon_free_page_reporting(b), -ENODATA);
                s.balloon_ready = false;
                assert_int_equal(balloon_attach(b, 2), 0);
                assert_true(run_until(e, &s.balloon_ready, 5 * USEC_PER_SEC));
                assert_int_equal(s.n_fpr, 2);
                assert_int_equal(balloon_free_page_reporting(b), cases[i].want);
                fake_kill(&f, SIGTERM);
                current_fake = NULL;
        }
}

static void test_not_there_yet(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(qmp_client_freep) QmpClient *c = NULL;
        Seen s = {};
        Fake f;
        char path[300];

        snprintf(path, sizeof path, "%s/late.qmp", tmpdir);
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(qmp_client_new(&c, e, path, &qmp_cb, &s), 0);
        qmp_client_set_backoff_max(c, 200 * USEC_PER_MSEC);
        assert_int_equal(qmp_client_start(c), 0);
        assert_int_equal(s.state, QMP_WAITING_RETRY);
        assert_int_equal(s.state_error, -ENOENT);
        assert_non_null(strstr(s.state_desc, path));
        assert_int_equal(qmp_client_execute(c, "query-status", NULL, NULL, NULL), -ENOTCONN);

        run_for(e, 500 * USEC_PER_MSEC);
        /* 100 ms, then 200 ms capped: a few attempts, not a spin. */
        assert_true(s.n_waiting_retry >= 2 && s.n_waiting_retry <= 6);

        fake_start(&f, "late", NULL);
        usec_t t = now_usec();
        assert_true(run_until_ready(e, &s, 5 * USEC_PER_SEC));
        assert_true(now_usec() - t < 1 * USEC_PER_SEC);
        fake_kill(&f, SIGTERM);
}

/* verify_peer: called with the fake's PID before anything is sent; a refusal drops the
 * connection with the owner's reason, nothing reaches the peer, and the client retries at
 * back-off until the owner accepts. */
typedef struct PeerCheck {
        Seen seen;
        unsigned n_calls;
        pid_t last_pid;
        bool accept;
} PeerCheck;

static int verify_peer(QmpClient *c, const struct ucred *peer, char **ret_reason, void *userdata) {
        PeerCheck *p = userdata;

        p->n_calls++;
        p->last_pid = peer->pid;
        if (p->accept)
                return 0;
        assert_true(asprintf(ret_reason, "peer PID %d refused by the test", (int) peer->pid) > 0);
        return -EPERM;
}

static void test_verify_peer(void **state) {
        static const QmpCallbacks cb = { .on_event = on_event, .on_state = on_state, .verify_peer = verify_peer };
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(qmp_client_freep) QmpClient *c = NULL;
        PeerCheck p = {};
        char want[64];
        Fake f;

        fake_start(&f, "peer", NULL);
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(qmp_client_new(&c, e, f.sock, &cb, &p), 0);
        qmp_client_set_backoff_max(c, 200 * USEC_PER_MSEC);
        assert_int_equal(qmp_client_start(c), 0);
        /* refused at connect, before the greeting is even read */
        assert_int_equal(p.n_calls, 1);
        assert_int_equal(p.last_pid, f.pid);
        assert_int_equal(p.seen.state, QMP_WAITING_RETRY);
        assert_int_equal(p.seen.state_error, -EPERM);
        snprintf(want, sizeof want, "peer PID %d refused by the test", (int) f.pid);
        assert_string_equal(p.seen.state_desc, want);

        run_for(e, 600 * USEC_PER_MSEC);
        assert_true(p.n_calls >= 3);       /* 100, 200, 200 ms ... */
        assert_true(p.n_calls <= 8);       /* ... not a spin */
        assert_int_equal(p.seen.n_ready, 0);
        assert_false(record_has(&f, "qmp_capabilities"));

        p.accept = true;
        for (usec_t end = now_usec() + 2 * USEC_PER_SEC; p.seen.state != QMP_READY && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(p.seen.state, QMP_READY);
        assert_true(record_has(&f, "qmp_capabilities"));
        fake_kill(&f, SIGTERM);
}

static void test_killed_mid_command(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(qmp_client_freep) QmpClient *c = NULL;
        _cleanup_(balloon_freep) Balloon *b = NULL;
        Seen s = {};
        Fake f;

        fake_start(&f, "killed", NULL);
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(qmp_client_new(&c, e, f.sock, &qmp_cb, &s), 0);
        assert_int_equal(balloon_new(&b, c, &balloon_cb, &s), 0);
        s.balloon = b;
        qmp_client_set_backoff_max(c, 200 * USEC_PER_MSEC);
        assert_int_equal(qmp_client_start(c), 0);
        assert_int_equal(balloon_attach(b, 0), -ENOTCONN);
        assert_true(run_until_ready(e, &s, 5 * USEC_PER_SEC));
        assert_int_equal(balloon_attach(b, 0), 0);
        assert_true(run_until(e, &s.balloon_ready, 5 * USEC_PER_SEC));

        /* QEMU stops answering (stuck), then is SIGKILLed with our command in flight. */
        fake_control(&f, "hang");
        assert_int_equal(qmp_client_execute(c, "query-balloon", NULL, on_reply, &s), 0);
        run_for(e, 50 * USEC_PER_MSEC);
        assert_false(s.reply_done);
        fake_kill(&f, SIGKILL);
        assert_true(run_until(e, &s.reply_done, 5 * USEC_PER_SEC));
        assert_int_equal(s.reply_error, -ECONNRESET);
        assert_int_equal(s.state, QMP_WAITING_RETRY);
        assert_false(balloon_is_ready(b));
        assert_int_equal(balloon_set_target(b, 256 * MIB, NULL, NULL), -ENOTCONN);

        /* The VM comes back at the same path (stale socket file replaced). */
        unsigned n_ready = s.n_ready;
        fake_start(&f, "killed", NULL);
        bool again = false;
        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; !again && now_usec() < end;) {
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
                again = s.n_ready > n_ready;
        }
        assert_true(again);
        s.balloon_ready = false;
        assert_int_equal(balloon_attach(b, 0), 0);
        assert_true(run_until(e, &s.balloon_ready, 5 * USEC_PER_SEC));
        assert_int_equal(balloon_set_target(b, 256 * MIB, NULL, NULL), 0);

        /* quit: SHUTDOWN event, reply, hang-up; the client goes back to retrying. */
        s.reply_done = false;
        unsigned n_retry = s.n_waiting_retry;
        assert_int_equal(qmp_client_execute(c, "quit", NULL, on_reply, &s), 0);
        assert_true(run_until(e, &s.reply_done, 5 * USEC_PER_SEC));
        assert_int_equal(s.reply_error, 0);
        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.n_waiting_retry == n_retry && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(s.state, QMP_WAITING_RETRY);
        assert_int_equal(s.state_error, -ECONNRESET);
        (void) waitpid(f.pid, NULL, 0);
        f.pid = 0;
        assert_int_equal(access(f.sock, F_OK), -1);    /* the fake removed its socket */
}

static void test_garbage(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(qmp_client_freep) QmpClient *c = NULL;
        _cleanup_(balloon_freep) Balloon *b = NULL;
        Seen s = {};
        Fake f;

        /* Garbage instead of the reply to the 2nd command (query-memory-size-summary), once. */
        fake_start(&f, "garbage", (const char *[]) { "--fake-garbage-after=2", "--fake-garbage-once", NULL });
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(qmp_client_new(&c, e, f.sock, &qmp_cb, &s), 0);
        assert_int_equal(balloon_new(&b, c, &balloon_cb, &s), 0);
        s.balloon = b;
        qmp_client_set_backoff_max(c, 200 * USEC_PER_MSEC);
        assert_int_equal(qmp_client_start(c), 0);
        assert_true(run_until_ready(e, &s, 5 * USEC_PER_SEC));
        assert_int_equal(balloon_attach(b, 0), 0);

        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.n_waiting_retry == 0 && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(s.state_error, -EBADMSG);
        char want[300];
        snprintf(want, sizeof want, "malformed JSON from %s: ", f.sock);
        if (!strstr(s.state_desc, want))
                fail_msg("state desc '%s' lacks '%s'", s.state_desc, want);
        assert_false(s.balloon_ready);
        assert_int_equal(s.balloon_error, 0);   /* connection loss is not a balloon error */

        /* Reconnects; this time the attach completes. */
        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.state != QMP_READY && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(balloon_attach(b, 0), 0);
        assert_true(run_until(e, &s.balloon_ready, 5 * USEC_PER_SEC));

        /* Garbage pushed at any time drops the connection too. */
        unsigned n = s.n_waiting_retry;
        fake_control(&f, "garbage");
        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.n_waiting_retry == n && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(s.state_error, -EBADMSG);
        fake_kill(&f, SIGTERM);
}

static void test_timeout_and_busy(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(qmp_client_freep) QmpClient *c = NULL;
        Seen s = {};
        Fake f;

        fake_start(&f, "hung", NULL);
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(qmp_client_new(&c, e, f.sock, &qmp_cb, &s), 0);
        qmp_client_set_command_timeout(c, 200 * USEC_PER_MSEC);
        qmp_client_set_backoff_max(c, 200 * USEC_PER_MSEC);
        assert_int_equal(qmp_client_start(c), 0);
        assert_true(run_until_ready(e, &s, 5 * USEC_PER_SEC));

        /* A stuck QEMU: the command times out, the connection stays. */
        fake_control(&f, "hang");
        assert_int_equal(qmp_client_execute(c, "query-status", NULL, on_reply, &s), 0);
        assert_true(run_until(e, &s.reply_done, 2 * USEC_PER_SEC));
        assert_int_equal(s.reply_error, -ETIMEDOUT);
        assert_int_equal(s.state, QMP_READY);

        /* A command whose owner went away is cancelled: its reply is consumed silently. */
        uint64_t id;
        Reply cancelled = {};
        assert_int_equal(qmp_client_execute_full(c, "query-balloon", NULL, on_reply_text, &cancelled, &id), 0);
        assert_true(qmp_client_cancel(c, id));
        assert_false(qmp_client_cancel(c, id + 1000));

        /* It recovers: late and cancelled replies are dropped quietly, new commands work. */
        fake_control(&f, "unhang");
        s.reply_done = false;
        assert_int_equal(qmp_client_execute(c, "query-status", NULL, on_reply, &s), 0);
        assert_true(run_until(e, &s.reply_done, 2 * USEC_PER_SEC));
        assert_int_equal(s.reply_error, 0);
        assert_int_equal(s.state, QMP_READY);
        assert_int_equal(s.n_waiting_retry, 0);
        assert_false(cancelled.done);

        /* Another client holds the monitor: QEMU accepts but does not greet; we give up
         * after the timeout and retry until the monitor is free. */
        qmp_client_close(c);
        assert_int_equal(s.state, QMP_CLOSED);
        c = qmp_client_free(c);

        union {
                struct sockaddr sa;
                struct sockaddr_un un;
        } addr = { .un.sun_family = AF_UNIX };
        snprintf(addr.un.sun_path, sizeof addr.un.sun_path, "%s", f.sock);
        int holder = -1;
        for (int i = 0; i < 100 && holder < 0; i++) {
                /* The previous connection's close may not be processed yet. */
                holder = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                assert_int_equal(connect(holder, &addr.sa, sizeof addr.un), 0);
                char greeting[512];
                struct timeval tv = { .tv_usec = 100000 };
                setsockopt(holder, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
                if (read(holder, greeting, sizeof greeting) <= 0) {
                        close(holder);
                        holder = -1;
                }
        }
        assert_true(holder >= 0);

        Seen s2 = {};
        assert_int_equal(qmp_client_new(&c, e, f.sock, &qmp_cb, &s2), 0);
        qmp_client_set_command_timeout(c, 200 * USEC_PER_MSEC);
        qmp_client_set_backoff_max(c, 200 * USEC_PER_MSEC);
        assert_int_equal(qmp_client_start(c), 0);
        for (usec_t end = now_usec() + 3 * USEC_PER_SEC; s2.n_waiting_retry == 0 && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(s2.state_error, -ETIMEDOUT);
        assert_non_null(strstr(s2.state_desc, "no QMP greeting"));

        close(holder);
        for (usec_t end = now_usec() + 3 * USEC_PER_SEC; s2.state != QMP_READY && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(s2.state, QMP_READY);
        fake_kill(&f, SIGTERM);
}

static void test_no_balloon_and_free_in_callback(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        QmpClient *c = NULL;
        _cleanup_(balloon_freep) Balloon *b = NULL;
        Seen s = {};
        Fake f;

        fake_start(&f, "noballoon", (const char *[]) { "--fake-no-balloon", NULL });
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(qmp_client_new(&c, e, f.sock, &qmp_cb, &s), 0);
        assert_int_equal(balloon_new(&b, c, &balloon_cb, &s), 0);
        s.balloon = b;
        assert_int_equal(qmp_client_start(c), 0);
        assert_true(run_until_ready(e, &s, 5 * USEC_PER_SEC));
        assert_int_equal(balloon_attach(b, 2), 0);
        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; s.balloon_error == 0 && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(s.balloon_error, -ENODEV);
        assert_string_equal(s.balloon_desc, "VM has no virtio-balloon device");
        assert_false(balloon_is_ready(b));

        /* The owner frees the client from an event callback, with a command in flight and
         * more input queued behind the event: nothing may touch freed memory (ASan). */
        balloon_free(TAKE_PTR(b));
        s.balloon = NULL;
        s.free_on_event = true;
        s.client_slot = &c;
        assert_int_equal(qmp_client_execute(c, "query-status", NULL, on_reply, &s), 0);
        fake_control(&f, "event STOP");
        for (usec_t end = now_usec() + 5 * USEC_PER_SEC; c && now_usec() < end;)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_null(c);
        assert_true(s.reply_done);
        assert_true(s.reply_error == 0 || s.reply_error == -ECANCELED);
        fake_kill(&f, SIGTERM);
}

/* The owner may free the client from on_state() at any transition (ASan checks the rest). */
static void test_free_in_on_state(void **state) {
        static const QmpState states[] = { QMP_CONNECTING, QMP_WAITING_RETRY, QMP_READY };
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Fake f;

        fake_start(&f, "freed", NULL);
        assert_int_equal(sd_event_new(&e), 0);
        for (size_t i = 0; i < ELEMENTSOF(states); i++) {
                char path[300];
                QmpClient *c = NULL;
                Seen s = { .free_on_state = states[i], .client_slot = &c };

                /* WAITING_RETRY needs a path that fails; the others the live fake. */
                snprintf(path, sizeof path, "%s/%s", tmpdir, states[i] == QMP_WAITING_RETRY ? "nothing.qmp" : "freed.qmp");
                assert_int_equal(qmp_client_new(&c, e, path, &qmp_cb, &s), 0);
                assert_int_equal(qmp_client_start(c), 0);
                for (usec_t end = now_usec() + 5 * USEC_PER_SEC; c && now_usec() < end;)
                        assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
                assert_null(c);
        }
        fake_kill(&f, SIGTERM);
}

/* Many VMs in one fake process, as the benchmarks use it: every client attaches and sees its
 * own balloon move. */
static void test_many(void **state) {
        enum { N = 50 };
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        QmpClient *c[N];
        Balloon *b[N];
        Seen s[N];
        char dir[300], n_arg[32], dir_arg[320];
        pid_t pid;

        snprintf(dir, sizeof dir, "%s/many", tmpdir);
        assert_int_equal(mkdir(dir, 0700), 0);
        snprintf(n_arg, sizeof n_arg, "--fake-many=%d", N);
        snprintf(dir_arg, sizeof dir_arg, "--fake-dir=%s", dir);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                execl(fake_path, fake_path, n_arg, dir_arg, "-m", "1G", "--fake-balloon-speed=instant", NULL);
                _exit(127);
        }
        char control[400];
        snprintf(control, sizeof control, "%s/control.sock", dir);
        for (int i = 0; i < 500 && access(control, F_OK) < 0; i++)
                usleep(10000);

        assert_int_equal(sd_event_new(&e), 0);
        for (int i = 0; i < N; i++) {
                char path[400];
                snprintf(path, sizeof path, "%s/vm-%04d.qmp", dir, i + 1);
                s[i] = (Seen) {};
                assert_int_equal(qmp_client_new(&c[i], e, path, &qmp_cb, &s[i]), 0);
                assert_int_equal(balloon_new(&b[i], c[i], &balloon_cb, &s[i]), 0);
                s[i].balloon = b[i];
                assert_int_equal(qmp_client_start(c[i]), 0);
        }
        int n_ready = 0;
        for (usec_t end = now_usec() + 10 * USEC_PER_SEC; n_ready < N && now_usec() < end;) {
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
                n_ready = 0;
                for (int i = 0; i < N; i++) {
                        if (s[i].state == QMP_READY && !s[i].attached) {
                                s[i].attached = true;
                                assert_int_equal(balloon_attach(b[i], 0), 0);
                        }
                        n_ready += s[i].balloon_ready;
                }
        }
        assert_int_equal(n_ready, N);

        /* Each VM to its own size: replies and events must not cross. */
        for (int i = 0; i < N; i++)
                assert_int_equal(balloon_set_target(b[i], 512 * MIB + (uint64_t) i * MIB, NULL, NULL), 0);
        int n_done = 0;
        for (usec_t end = now_usec() + 10 * USEC_PER_SEC; n_done < N && now_usec() < end;) {
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
                n_done = 0;
                for (int i = 0; i < N; i++)
                        n_done += s[i].actual == 512 * MIB + (uint64_t) i * MIB;
        }
        assert_int_equal(n_done, N);

        for (int i = 0; i < N; i++) {
                qmp_client_free(c[i]);
                balloon_free(b[i]);
        }
        kill(pid, SIGTERM);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        char sock[400];
        snprintf(sock, sizeof sock, "%s/vm-0001.qmp", dir);
        assert_int_equal(access(sock, F_OK), -1);   /* sockets removed on SIGTERM */
}

static int setup(void **state) {
        /* meson passes the built fake's path (tests/unit/meson.build). */
        fake_path = getenv("FAKE_QMP");
        if (!fake_path || access(fake_path, X_OK) < 0) {
                fprintf(stderr, "FAKE_QMP must name the built fake-qmp binary\n");
                return -1;
        }
        if (!mkdtemp(tmpdir))
                return -1;
        signal(SIGPIPE, SIG_IGN);
        return 0;
}

static int teardown(void **state) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_balloon_roundtrip),
                cmocka_unit_test_teardown(test_free_page_reporting, kill_current_fake),
                cmocka_unit_test(test_not_there_yet),
                cmocka_unit_test(test_verify_peer),
                cmocka_unit_test(test_killed_mid_command),
                cmocka_unit_test(test_garbage),
                cmocka_unit_test(test_timeout_and_busy),
                cmocka_unit_test(test_no_balloon_and_free_in_callback),
                cmocka_unit_test(test_free_in_on_state),
                cmocka_unit_test(test_many),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
