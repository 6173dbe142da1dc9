/* Logging: stderr, with syslog-level prefixes when stderr is the journal (systemd sets JOURNAL_STREAM). */
#pragma once

#include <errno.h>
#include <syslog.h>

#include "util.h"

void log_setup(void);                 /* reads JOURNAL_STREAM, $AUTOBALLOON_LOG_LEVEL */
void log_set_max_level(int level);
int log_get_max_level(void);
int log_parse_level(const char *s);   /* "debug", "info", ... or a number; -EINVAL */
bool log_to_journal(void);            /* stderr is connected to journald */

/* Between begin and end (nested: the outermost end), what is logged is written at the end, in
 * order: for a batch of moves whose commands should leave before their records. */
void log_batch_begin(void);
void log_batch_end(void);
/* A structured journal entry (FIELD=value iovecs, at most LOG_STRUCT_FIELDS_MAX), batched too. */
#define LOG_STRUCT_FIELDS_MAX 16
struct iovec;
void log_struct_iovec(const struct iovec *iov, size_t n);

/* Logs and returns -abs(error) (or 0 when error is 0); errno is set to abs(error) for %m. */
int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *format, ...) _printf_(6, 7);

#define log_full_errno(level, error, ...) \
        log_internal((level), (error), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_full(level, ...) (void) log_full_errno((level), 0, __VA_ARGS__)

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(error, ...) log_full_errno(LOG_DEBUG, (error), __VA_ARGS__)
#define log_info_errno(error, ...) log_full_errno(LOG_INFO, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_error_errno(error, ...) log_full_errno(LOG_ERR, (error), __VA_ARGS__)
#define log_oom() log_error_errno(ENOMEM, "Out of memory.")
