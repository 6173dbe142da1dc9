/* QMP framing: the parser must find the same messages however the stream is cut, and refuse
 * what QEMU never sends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "qmp.h"

/* What QEMU 7.2 sent in a real session (greeting, reply, event, error), CRLF as on the wire. */
static const char session[] =
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
        "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}\r\n"
        "{\"return\": {}, \"id\": 1}\r\n"
        "{\"timestamp\": {\"seconds\": 1795696822, \"microseconds\": 134713}, \"event\": \"BALLOON_CHANGE\", "
        "\"data\": {\"actual\": 268435456}}\r\n"
        "{\"id\": 2, \"error\": {\"class\": \"DeviceNotActive\", \"desc\": \"No balloon device has been activated\"}}\r\n"
        "{\"return\": {\"stats\": {\"stat-free-memory\": 18446744073709551615}, \"last-update\": 0}, \"id\": 3}\r\n";

typedef struct Collected {
        char *messages[16];
        size_t n;
} Collected;

static void collect(json_object *msg, void *userdata) {
        Collected *c = userdata;

        assert_true(c->n < ELEMENTSOF(c->messages));
        c->messages[c->n++] = strdup(json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
}

static void collected_done(Collected *c) {
        for (size_t i = 0; i < c->n; i++)
                free(c->messages[i]);
        c->n = 0;
}

static void test_split_at_every_boundary(void **state) {
        Collected whole = {}, split = {};
        QmpParser *p = qmp_parser_new(QMP_MESSAGE_MAX_BYTES);
        size_t len = strlen(session);

        assert_int_equal(qmp_parser_feed(p, session, len, collect, &whole), 0);
        assert_int_equal(whole.n, 5);

        /* Two cuts at every pair of positions would be quadratic in a 600-byte session times
         * the parse; one cut at every byte plus byte-by-byte covers the tokener's resume paths. */
        for (size_t cut = 0; cut <= len; cut++) {
                qmp_parser_reset(p);
                assert_int_equal(qmp_parser_feed(p, session, cut, collect, &split), 0);
                assert_int_equal(qmp_parser_feed(p, session + cut, len - cut, collect, &split), 0);
                assert_int_equal(split.n, whole.n);
                for (size_t i = 0; i < whole.n; i++)
                        assert_string_equal(split.messages[i], whole.messages[i]);
                collected_done(&split);
        }

        qmp_parser_reset(p);
        for (size_t i = 0; i < len; i++)
                assert_int_equal(qmp_parser_feed(p, session + i, 1, collect, &split), 0);
        assert_int_equal(split.n, whole.n);
        for (size_t i = 0; i < whole.n; i++)
                assert_string_equal(split.messages[i], whole.messages[i]);

        collected_done(&split);
        collected_done(&whole);
        qmp_parser_free(p);
}

static void test_big_unsigned_survives(void **state) {
        QmpParser *p = qmp_parser_new(0);
        Collected c = {};
        const char *m = "{\"v\": 18446744073709551615}\n";

        assert_int_equal(qmp_parser_feed(p, m, strlen(m), collect, &c), 0);
        assert_int_equal(c.n, 1);
        assert_string_equal(c.messages[0], "{\"v\":18446744073709551615}");
        collected_done(&c);
        qmp_parser_free(p);
}

static void test_max_size(void **state) {
        Collected c = {};
        char buf[256];

        /* Exactly at the limit passes, one byte over fails, whether it arrives whole or in
         * pieces, and the parser works again after a reset. */
        int n = snprintf(buf, sizeof buf, "{\"k\": \"%0*d\"}", 40, 0);
        QmpParser *p = qmp_parser_new((size_t) n);
        assert_int_equal(qmp_parser_feed(p, buf, (size_t) n, collect, &c), 0);
        assert_int_equal(c.n, 1);
        qmp_parser_free(p);

        p = qmp_parser_new((size_t) n - 1);
        assert_int_equal(qmp_parser_feed(p, buf, (size_t) n, collect, &c), -EMSGSIZE);
        qmp_parser_reset(p);
        int r = 0;
        for (int i = 0; i < n && r == 0; i++)
                r = qmp_parser_feed(p, buf + i, 1, collect, &c);
        assert_int_equal(r, -EMSGSIZE);
        assert_string_equal(qmp_parser_error(p), "message too large");
        qmp_parser_reset(p);
        assert_int_equal(qmp_parser_feed(p, "{}\r\n", 4, collect, &c), 0);
        assert_int_equal(c.n, 2);

        /* Blanks between messages do not count against the next one. */
        char padded[512];
        memset(padded, '\n', 200);
        memcpy(padded + 200, "{}", 2);
        assert_int_equal(qmp_parser_feed(p, padded, 202, collect, &c), 0);
        assert_int_equal(c.n, 3);
        collected_done(&c);
        qmp_parser_free(p);

        /* An endless string is cut off at the limit, not buffered. */
        p = qmp_parser_new(1024);
        char chunk[4096];
        memset(chunk, 'a', sizeof chunk);
        assert_int_equal(qmp_parser_feed(p, "{\"k\": \"", 7, collect, &c), 0);
        assert_int_equal(qmp_parser_feed(p, chunk, sizeof chunk, collect, &c), -EMSGSIZE);
        qmp_parser_free(p);
}

static void test_garbage(void **state) {
        static const char *const bad[] = {
                "[1, 2]\n",                       /* not an object */
                "42\n",
                "\"QMP\"\n",
                "null\n",
                "{\"a\": 1,}\n",                  /* trailing comma: json-c lenient only */
                "{\"a\" 1}\n",
                "{\"a\": tru}\n",
                "{\"a\": 1}}\n",                  /* stray closing brace after a good message */
                "{\"a\": \"\xff\xfe\"}\n",        /* invalid UTF-8 */
                "\x01{}\n",
        };
        Collected c = {};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                QmpParser *p = qmp_parser_new(0);
                int r = qmp_parser_feed(p, bad[i], strlen(bad[i]), collect, &c);
                if (r != -EBADMSG)
                        fail_msg("input %zu (%s) gave %d, not -EBADMSG", i, bad[i], r);
                assert_string_not_equal(qmp_parser_error(p), "no error");
                qmp_parser_free(p);
        }
        /* "{\"a\": 1}}" delivers the good message before failing. */
        assert_int_equal(c.n, 1);
        collected_done(&c);
}

static void test_deep_nesting_refused(void **state) {
        QmpParser *p = qmp_parser_new(0);
        Collected c = {};
        char buf[512];
        size_t n = 0;

        buf[n++] = '{';
        for (int i = 0; i < 60; i++)
                n += (size_t) snprintf(buf + n, sizeof buf - n, "\"a\":{");
        assert_int_equal(qmp_parser_feed(p, buf, n, collect, &c), -EBADMSG);
        assert_int_equal(c.n, 0);
        qmp_parser_free(p);
}

static json_object *parse(const char *s) {
        json_object *o = json_tokener_parse(s);
        assert_non_null(o);
        return o;
}

static void test_classify(void **state) {
        static const struct {
                const char *json;
                QmpMessageType type;
        } cases[] = {
                { "{\"QMP\": {\"version\": {}, \"capabilities\": []}}", QMP_MESSAGE_GREETING },
                { "{\"return\": {}, \"id\": 1}", QMP_MESSAGE_RETURN },
                { "{\"return\": 2}", QMP_MESSAGE_RETURN },
                { "{\"return\": [], \"id\": \"x\"}", QMP_MESSAGE_RETURN },
                { "{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}", QMP_MESSAGE_ERROR },
                { "{\"event\": \"SHUTDOWN\", \"data\": {}, \"timestamp\": {}}", QMP_MESSAGE_EVENT },
                { "{\"event\": \"STOP\"}", QMP_MESSAGE_EVENT },
                { "{\"event\": 3}", _QMP_MESSAGE_INVALID },
                { "{\"QMP\": 1}", _QMP_MESSAGE_INVALID },
                { "{\"error\": \"x\"}", _QMP_MESSAGE_INVALID },
                { "{\"foo\": 1}", _QMP_MESSAGE_INVALID },
                { "{}", _QMP_MESSAGE_INVALID },
                { "[]", _QMP_MESSAGE_INVALID },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_object *o = parse(cases[i].json);
                if (qmp_message_classify(o) != cases[i].type)
                        fail_msg("%s classified as %d", cases[i].json, qmp_message_classify(o));
                json_object_put(o);
        }

        json_object *e = parse("{\"class\": \"DeviceNotActive\", \"desc\": \"No balloon\"}");
        assert_string_equal(qmp_error_class(e), "DeviceNotActive");
        assert_string_equal(qmp_error_desc(e), "No balloon");
        json_object_put(e);
        e = parse("{\"class\": 1}");
        assert_string_equal(qmp_error_class(e), "GenericError");
        assert_string_equal(qmp_error_desc(e), "(no description)");
        json_object_put(e);
}

static void test_state_names(void **state) {
        assert_string_equal(qmp_state_to_string(QMP_READY), "ready");
        assert_string_equal(qmp_state_to_string(QMP_WAITING_RETRY), "waiting-retry");
        assert_null(qmp_state_to_string((QmpState) 99));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_split_at_every_boundary),
                cmocka_unit_test(test_big_unsigned_survives),
                cmocka_unit_test(test_max_size),
                cmocka_unit_test(test_garbage),
                cmocka_unit_test(test_deep_nesting_refused),
                cmocka_unit_test(test_classify),
                cmocka_unit_test(test_state_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
