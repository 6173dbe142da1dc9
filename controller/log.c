/* Logging to stderr; journald picks up the "<N>" level prefix when stderr is its stream. */
#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>
#include <stdio.h>
#include <strings.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include "log.h"

static int max_level = LOG_INFO;
static bool journal_stream = false;

static const char *const level_names[] = {
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
};

int log_parse_level(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (strcasecmp(s, level_names[i]) == 0)
                        return (int) i;
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == 0)
                return s[0] - '0';
        return -EINVAL;
}

void log_setup(void) {
        const char *e = getenv("JOURNAL_STREAM");
        struct stat st;
        unsigned long long dev, ino;

        if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) >= 0)
                journal_stream = (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;

        e = getenv("AUTOBALLOON_LOG_LEVEL");
        if (e && log_parse_level(e) >= 0)
                max_level = log_parse_level(e);
}

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

bool log_to_journal(void) {
        return journal_stream;
}

/* A batch (log_batch_begin/end): lines to stderr and journal entries are collected and written
 * when the batch ends, so that a policy run's 1,000 moves go out on their sockets before the
 * 1,000 lines that record them (a write(2) each cost a third of a move). */
#define BATCH_FLUSH_BYTES (64 * 1024)

static struct {
        unsigned depth;
        char *text;                 /* stderr lines */
        size_t size, allocated;
        char **entries;             /* journal entries: "FIELD=value\0" ... "\0" */
        size_t n_entries, allocated_entries;
} batch;

static void write_all(const char *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(STDERR_FILENO, p, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return;   /* nowhere to say it */
                p += k;
                n -= (size_t) k;
        }
}

static void batch_flush(void) {
        write_all(batch.text, batch.size);
        batch.size = 0;
        for (size_t i = 0; i < batch.n_entries; i++) {
                struct iovec iov[LOG_STRUCT_FIELDS_MAX];
                size_t n = 0;
                for (char *f = batch.entries[i]; *f && n < LOG_STRUCT_FIELDS_MAX; f += strlen(f) + 1)
                        iov[n++] = (struct iovec) { .iov_base = f, .iov_len = strlen(f) };
                (void) sd_journal_sendv(iov, (int) n);
                free(batch.entries[i]);
        }
        batch.n_entries = 0;
}

void log_batch_begin(void) {
        batch.depth++;
}

void log_batch_end(void) {
        assert(batch.depth > 0);
        if (--batch.depth == 0)
                batch_flush();
}

/* Appends a line to the batch; false: not batching, or no memory (the caller writes it now). */
static bool batch_add_text(const char *line, size_t n) {
        if (batch.depth == 0)
                return false;
        if (batch.size + n > batch.allocated) {
                size_t k = MAX(batch.size + n, MAX((size_t) 4096, 2 * batch.allocated));
                char *t = realloc(batch.text, k);
                if (!t)
                        return false;
                batch.text = t;
                batch.allocated = k;
        }
        memcpy(batch.text + batch.size, line, n);
        batch.size += n;
        if (batch.size >= BATCH_FLUSH_BYTES) {
                write_all(batch.text, batch.size);
                batch.size = 0;
        }
        return true;
}

static bool batch_add_entry(const struct iovec *iov, size_t n) {
        size_t len = 1;
        char *e, *p;

        if (batch.depth == 0 || n > LOG_STRUCT_FIELDS_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                len += iov[i].iov_len + 1;
        if (batch.n_entries >= batch.allocated_entries) {
                size_t k = MAX((size_t) 64, 2 * batch.allocated_entries);
                char **t = reallocarray(batch.entries, k, sizeof *t);
                if (!t)
                        return false;
                batch.entries = t;
                batch.allocated_entries = k;
        }
        e = p = malloc(len);
        if (!e)
                return false;
        for (size_t i = 0; i < n; i++) {
                memcpy(p, iov[i].iov_base, iov[i].iov_len);
                p += iov[i].iov_len;
                *p++ = 0;
        }
        *p = 0;
        batch.entries[batch.n_entries++] = e;
        return true;
}

void log_struct_iovec(const struct iovec *iov, size_t n) {
        if (!batch_add_entry(iov, n))
                (void) sd_journal_sendv(iov, (int) n);
}

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *format, ...) {
        int e = error < 0 ? -error : error;
        char buf[2048];
        va_list ap;

        if (level > max_level)
                return -e;

        errno = e;
        va_start(ap, format);
        vsnprintf(buf, sizeof buf, format, ap);
        va_end(ap);

        char out[2300];
        int n;
        if (journal_stream)
                n = snprintf(out, sizeof out, "<%d>%s\n", level, buf);
        else if (max_level >= LOG_DEBUG)
                n = snprintf(out, sizeof out, "%s:%d %s: %s\n", file, line, func, buf);
        else
                n = snprintf(out, sizeof out, "%s\n", buf);
        n = MIN(n, (int) sizeof out - 1);
        if (n > 0 && !batch_add_text(out, (size_t) n))
                write_all(out, (size_t) n);
        return -e;
}
