/* Logging: one line per record on stderr, text or JSON, control characters escaped. */
#include "log.h"

#include "scrub.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static log_level g_level = HLOG_INFO;
static log_format g_format = HLOG_FORMAT_TEXT;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_setup(log_level level, log_format format) {
  g_level = level;
  g_format = format;
}

int log_level_parse(const char *s, log_level *out) {
  for (int i = 0; i <= HLOG_DEBUG; i++) {
    if (strcmp(s, level_names[i]) == 0) {
      *out = (log_level)i;
      return 0;
    }
  }
  return -1;
}

int log_enabled(log_level level) {
  return level <= g_level;
}

/* A bounded line buffer: a record never exceeds it, long messages are cut. */
typedef struct line {
  char buf[4096];
  size_t len;
} line;

static void put(line *l, const char *s, size_t n) {
  size_t room = sizeof l->buf - 1 - l->len;
  if (n > room) n = room;
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

static void puts_raw(line *l, const char *s) {
  put(l, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *p) {
  unsigned c = p[0];
  size_t n;
  unsigned cp;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3, cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0; /* also stops at the NUL */
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) return 0;
  if (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) return 0;
  return n;
}

/* Escapes control characters (and, for JSON, quotes and backslashes) so no
 * field can forge a second log line or break the JSON; bytes that are not
 * UTF-8 become \xNN (text) or U+FFFD (JSON, which must be UTF-8). In text,
 * quote_spaces also escapes '"' so a quoted value stays one field. */
static void put_escaped(line *l, const char *s, int json, int quote) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char tmp[8];
    if (*p == '\n') {
      put(l, "\\n", 2);
    } else if (*p == '\r') {
      put(l, "\\r", 2);
    } else if (*p == '\t') {
      put(l, "\\t", 2);
    } else if (*p < 0x20 || *p == 0x7f) {
      int n = snprintf(tmp, sizeof tmp, json ? "\\u%04x" : "\\x%02x", *p);
      put(l, tmp, (size_t)n);
    } else if ((json || quote) && (*p == '"' || *p == '\\')) {
      tmp[0] = '\\';
      tmp[1] = (char)*p;
      put(l, tmp, 2);
    } else if (*p >= 0x80) {
      size_t n = utf8_len(p);
      if (n == 0) {
        int k = snprintf(tmp, sizeof tmp, json ? "\\ufffd" : "\\x%02x", *p);
        put(l, tmp, (size_t)k);
      } else {
        put(l, (const char *)p, n);
        p += n - 1;
      }
    } else {
      put(l, (const char *)p, 1);
    }
  }
}

static void put_field(line *l, const char *key, const char *val, int json) {
  if (val == NULL) return;
  if (json) {
    put(l, ",\"", 2);
    puts_raw(l, key);
    put(l, "\":\"", 3);
    put_escaped(l, val, 1, 0);
    put(l, "\"", 1);
  } else {
    /* logfmt: a value with a space, a quote or an '=' is quoted. */
    int quote = val[0] == '\0' || strpbrk(val, " \"=\\") != NULL;
    put(l, " ", 1);
    puts_raw(l, key);
    put(l, quote ? "=\"" : "=", quote ? 2 : 1);
    put_escaped(l, val, 0, quote);
    if (quote) put(l, "\"", 1);
  }
}

static log_sink_fn g_sink;

void log_set_sink(log_sink_fn sink) {
  g_sink = sink;
}

void log_vwrite(log_level level, const log_ctx *ctx, const char *fmt, va_list ap) {
  if (!log_enabled(level)) return;
  char msg[2048];
  vsnprintf(msg, sizeof msg, fmt, ap);
  /* Messages carry what destinations answered: no credential gets through. */
  scrub_text(msg, sizeof msg);
  if (g_sink) {
    g_sink(level, ctx, msg);
    return;
  }

  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[96];
  snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (long)(ts.tv_nsec / 1000000) % 1000);

  line l;
  l.len = 0;
  int json = g_format == HLOG_FORMAT_JSON;
  if (json) {
    puts_raw(&l, "{\"time\":\"");
    puts_raw(&l, when);
    puts_raw(&l, "\",\"level\":\"");
    puts_raw(&l, level_names[level]);
    puts_raw(&l, "\",\"message\":\"");
    put_escaped(&l, msg, 1, 0);
    put(&l, "\"", 1);
  } else {
    puts_raw(&l, when);
    put(&l, " ", 1);
    puts_raw(&l, level_names[level]);
    put(&l, " ", 1);
    put_escaped(&l, msg, 0, 0);
  }
  if (ctx != NULL) {
    put_field(&l, "source", ctx->source, json);
    put_field(&l, "instance", ctx->instance, json);
    put_field(&l, "event_id", ctx->event_id, json);
    put_field(&l, "peer", ctx->peer, json);
  }
  if (json) put(&l, "}", 1);
  l.buf[l.len++] = '\n';
  /* One write per record keeps lines from different threads whole. */
  ssize_t r = write(STDERR_FILENO, l.buf, l.len);
  (void)r;
}

void log_write(log_level level, const log_ctx *ctx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_vwrite(level, ctx, fmt, ap);
  va_end(ap);
}
