/* Logging: one line per record, text or JSON, tagged with source, plugin instance and event id. */
#ifndef HOOKD_LOG_H
#define HOOKD_LOG_H

#include <stdarg.h>

/* The levels carry a prefix of their own: <syslog.h> defines LOG_ERR,
 * LOG_INFO and LOG_DEBUG as macros, and core must be able to include it
 * (tests/unit/headers_syslog.c compiles every core header beside it). */
typedef enum { HLOG_ERROR = 0, HLOG_WARN = 1, HLOG_INFO = 2, HLOG_DEBUG = 3 } log_level;
typedef enum { HLOG_FORMAT_TEXT = 0, HLOG_FORMAT_JSON = 1 } log_format;

/* Context fields of a record; any may be NULL. */
typedef struct log_ctx {
  const char *source;
  const char *instance;
  const char *event_id;
  const char *peer;
} log_ctx;

void log_setup(log_level level, log_format format);
int log_level_parse(const char *s, log_level *out);
int log_enabled(log_level level);
/* Writes a record to stderr. Thread-safe; one write(2) per record. Control
 * characters in the message and in the context fields are escaped. */
void log_write(log_level level, const log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vwrite(log_level level, const log_ctx *ctx, const char *fmt, va_list ap);

/* In a plugin's child process (plugin_child.c) records do not go to stderr
 * but to sink, with the formatted (and scrubbed) message, for hookd to
 * write into its own log. Set once, before any other thread runs. */
typedef void (*log_sink_fn)(log_level level, const log_ctx *ctx, const char *msg);
void log_set_sink(log_sink_fn sink);

#define log_error(...) log_write(HLOG_ERROR, NULL, __VA_ARGS__)
#define log_warn(...) log_write(HLOG_WARN, NULL, __VA_ARGS__)
#define log_info(...) log_write(HLOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_write(HLOG_DEBUG, NULL, __VA_ARGS__)

#endif
