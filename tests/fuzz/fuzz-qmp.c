/* Fuzz target: the QMP framing parser and everything that reads what it hands out
 * (classification, error fields, guest-stats). The stream is QEMU's, so it is untrusted. */
#include <stddef.h>
#include <stdint.h>

#include "balloon.h"
#include "fuzz.h"
#include "qmp.h"

static void on_message(json_object *msg, void *userdata) {
        unsigned *n = userdata;
        json_object *v;
        GuestStats stats;

        (*n)++;
        switch (qmp_message_classify(msg)) {
        case QMP_MESSAGE_ERROR:
                json_object_object_get_ex(msg, "error", &v);
                (void) strlen(qmp_error_class(v));
                (void) strlen(qmp_error_desc(v));
                break;
        case QMP_MESSAGE_RETURN:
                /* Any reply could be the answer to qom-get guest-stats. */
                json_object_object_get_ex(msg, "return", &v);
                if (balloon_parse_guest_stats(v, &stats) >= 0 && stats.valid)
                        (void) (stats.available_bytes + stats.free_bytes);
                break;
        default:
                break;
        }
        (void) balloon_parse_guest_stats(msg, &stats);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        QmpParser *p;
        unsigned n = 0;

        if (size < 1)
                return 0;
        /* The driver byte: bits 0-5 the read size the rest is cut into (the client sees
         * arbitrary splits), bit 6 a small message limit (so that -EMSGSIZE is reached too),
         * bit 7 the whole stream in one read. The payload starts after it. */
        const uint8_t mode = data[0];
        const size_t chunk = mode & 0x80 ? SIZE_MAX : (size_t) (mode & 0x3f) + 1;
        p = qmp_parser_new(mode & 0x40 ? 512 : QMP_MESSAGE_MAX_BYTES);
        if (!p)
                return 0;
        data++, size--;

        for (size_t off = 0; off < size;) {
                size_t len = MIN(chunk, size - off);
                int r = qmp_parser_feed(p, (const char *) data + off, len, on_message, &n);
                off += len;
                if (r < 0) {
                        /* The client drops the connection and starts over. */
                        (void) qmp_parser_error(p);
                        qmp_parser_reset(p);
                }
        }
        qmp_parser_free(p);
        return 0;
}
