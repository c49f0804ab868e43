/* hookd SDK helpers: one growable buffer, JSON escaping, base64, ISO 8601, header and URL checks,
 * the meeting-kind rule. */
#ifndef HOOKD_HELPERS_H
#define HOOKD_HELPERS_H

/*
 * Header-only: every function is `static inline`, so a plugin that includes
 * this file links nothing and exports nothing more than before, and hookd's
 * core uses the very same code. Each function is pure (no globals, no
 * locale, no allocation other than the buffer's own), so any thread may call
 * any of them. C99 and C++.
 *
 * Ownership: a hookd_buf owns its bytes (malloc/realloc); release them with
 * hookd_buf_free(), or take b.p and free() it yourself.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- growable buffer -------------------------------------------------------
 * Appends never fail loudly: on out of memory `oom` is set and every later
 * append is a no-op, so a builder checks once at the end. p is always
 * NUL-terminated once anything was appended (NULL before). */
typedef struct hookd_buf {
  char *p;
  size_t len;
  size_t cap;
  int oom;
} hookd_buf;

static inline int hookd_buf_reserve(hookd_buf *b, size_t more) {
  if (b->oom) return -1;
  if (more > (size_t)-1 / 2 - b->len) {
    b->oom = 1;
    return -1;
  }
  if (b->len + more + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more + 1) cap *= 2;
  char *p = (char *)realloc(b->p, cap);
  if (p == NULL) {
    b->oom = 1;
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

static inline void hookd_buf_add(hookd_buf *b, const void *s, size_t n) {
  if (hookd_buf_reserve(b, n) != 0) return;
  if (n) memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static inline void hookd_buf_puts(hookd_buf *b, const char *s) {
  hookd_buf_add(b, s, strlen(s));
}

static inline void hookd_buf_vprintf(hookd_buf *b, const char *fmt, va_list ap) {
  va_list again;
  va_copy(again, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  if (n < 0 || hookd_buf_reserve(b, (size_t)n) != 0) {
    if (n < 0) b->oom = 1;
    va_end(again);
    return;
  }
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, again);
  va_end(again);
  b->len += (size_t)n;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline void
hookd_buf_printf(hookd_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  hookd_buf_vprintf(b, fmt, ap);
  va_end(ap);
}

static inline void hookd_buf_free(hookd_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  b->oom = 0;
}

static inline void hookd_buf_putc(hookd_buf *b, char c) {
  hookd_buf_add(b, &c, 1);
}

/* --- JSON string escaping --------------------------------------------------
 * Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when the
 * bytes there are not valid UTF-8 (overlong forms and surrogates included). */
static inline size_t hookd_utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  uint32_t min, cp;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2, min = 0x80, cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3, min = 0x800, cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

/* Appends s[0..n) escaped for the inside of a JSON string (RFC 8259 7):
 * quote, backslash and every control character. Valid UTF-8 passes as it
 * is; invalid bytes become \ufffd, since a receiver that validates would
 * otherwise reject the whole document. */
static inline void hookd_buf_json(hookd_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t run = i;
    /* Copy plain runs in one go; most text needs no escaping. */
    while (run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' && u[run] != '\\') run++;
    hookd_buf_add(b, s + i, run - i);
    if ((i = run) >= n) break;
    unsigned char c = u[i];
    if (c >= 0x80) {
      size_t len = hookd_utf8_seq(u + i, n - i);
      hookd_buf_add(b, len ? s + i : "\\ufffd", len ? len : 6);
      i += len ? len : 1;
      continue;
    }
    char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
    const char *rep = c == '"'    ? "\\\""
                      : c == '\\' ? "\\\\"
                      : c == '\b' ? "\\b"
                      : c == '\f' ? "\\f"
                      : c == '\n' ? "\\n"
                      : c == '\r' ? "\\r"
                      : c == '\t' ? "\\t"
                                  : NULL;
    hookd_buf_add(b, rep ? rep : esc, rep ? 2 : 6);
    i++;
  }
}

/* --- base64 (RFC 4648 section 4, with padding) ---------------------------- */

/* Appends base64 of s[0..n); with line_width > 0 a CRLF follows every
 * line_width characters and the last line (76 for a MIME body, RFC 2045). */
static inline void hookd_buf_base64(hookd_buf *b, const void *data, size_t n, size_t line_width) {
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *s = (const unsigned char *)data;
  size_t col = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned long v = (unsigned long)s[i] << 16;
    if (i + 1 < n) v |= (unsigned long)s[i + 1] << 8;
    if (i + 2 < n) v |= s[i + 2];
    char q[4] = {abc[(v >> 18) & 63], abc[(v >> 12) & 63], i + 1 < n ? abc[(v >> 6) & 63] : '=',
                 i + 2 < n ? abc[v & 63] : '='};
    hookd_buf_add(b, q, 4);
    col += 4;
    if (line_width && col >= line_width) {
      hookd_buf_add(b, "\r\n", 2);
      col = 0;
    }
  }
  if (line_width && col) hookd_buf_add(b, "\r\n", 2);
}

static inline int hookd_base64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Decodes padded base64 (no white space) into out. Returns the number of
 * bytes, or -1 when the text is not base64 or does not fit in cap bytes. */
static inline long hookd_base64_decode(const char *s, size_t n, unsigned char *out, size_t cap) {
  if (n % 4 != 0) return -1;
  size_t len = 0;
  for (size_t i = 0; i < n; i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      unsigned char c = (unsigned char)s[i + k];
      if (c == '=' && i + 4 == n && k >= 2 && (k == 3 || s[i + 3] == '=')) {
        v[k] = 0;
        pad++;
      } else if ((v[k] = hookd_base64_value(c)) < 0 || pad) {
        return -1;
      }
    }
    unsigned long w = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) |
                      ((unsigned long)v[2] << 6) | (unsigned long)v[3];
    if (len + 3 - (size_t)pad > cap) return -1;
    out[len++] = (unsigned char)(w >> 16);
    if (pad < 2) out[len++] = (unsigned char)(w >> 8);
    if (pad < 1) out[len++] = (unsigned char)w;
  }
  return (long)len;
}

/* Decodes a Standard Webhooks secret: "whsec_" (optional) and base64.
 * Returns the key length (at least 1), or -1. */
static inline long hookd_whsec_decode(const char *secret, unsigned char *key, size_t cap) {
  if (strncmp(secret, "whsec_", 6) == 0) secret += 6;
  long n = hookd_base64_decode(secret, strlen(secret), key, cap);
  return n > 0 ? n : -1;
}

/* --- ISO 8601 / RFC 3339 date-times ----------------------------------------
 * The one rule hookd and its plugins read times by: YYYY-MM-DD, then 'T',
 * 't' or a space, HH:MM, optional :SS, an optional fraction ('.' or ','
 * and digits; kept to the millisecond), then 'Z', 'z', +HH:MM, +HHMM, +HH
 * or nothing (nothing means UTC: Cirrus Insight sends UTC). Fields are
 * range-checked (a leap second :60 reads as :59). Nothing may follow. */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static inline int64_t hookd_days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static inline int hookd_digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    char c = (*p)[i];
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  *p += n;
  *out = v;
  return 0;
}

/* Parses s into Unix milliseconds. Returns 0, or -1 when s breaks the rule. */
static inline int hookd_iso8601_parse(const char *s, int64_t *ms) {
  static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int y, mo, d, h, mi, sec = 0, frac = 0, off = 0;
  if (s == NULL || hookd_digits(&s, 4, &y) || *s++ != '-' || hookd_digits(&s, 2, &mo) ||
      *s++ != '-' || hookd_digits(&s, 2, &d) || (*s != 'T' && *s != 't' && *s != ' '))
    return -1;
  s++;
  if (hookd_digits(&s, 2, &h) || *s++ != ':' || hookd_digits(&s, 2, &mi)) return -1;
  if (*s == ':' && (s++, hookd_digits(&s, 2, &sec))) return -1;
  if (*s == '.' || *s == ',') {
    int scale = 100, any = 0;
    for (s++; *s >= '0' && *s <= '9'; s++, any = 1, scale /= 10) frac += (*s - '0') * scale;
    if (!any) return -1;
  }
  if (*s == 'Z' || *s == 'z') {
    s++;
  } else if (*s == '+' || *s == '-') {
    int sign = *s++ == '-' ? -1 : 1, oh, om = 0;
    if (hookd_digits(&s, 2, &oh) || oh > 23) return -1;
    if (*s == ':') s++;
    if (*s >= '0' && *s <= '9' && (hookd_digits(&s, 2, &om) || om > 59)) return -1;
    off = sign * (oh * 60 + om);
  }
  if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
      sec > 60)
    return -1;
  if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) return -1;
  if (sec == 60) sec = 59;
  int64_t days = hookd_days_from_civil(y, (unsigned)mo, (unsigned)d);
  *ms = ((days * 24 + h) * 60 + mi - off) * 60000 + (int64_t)sec * 1000 + frac;
  return 0;
}

/* Broken-down UTC time of Unix milliseconds (no gmtime_r: C99, any thread). */
typedef struct hookd_utc {
  int year, month, day, hour, minute, second, millis, weekday; /* weekday 0 = Sunday */
} hookd_utc;

static inline hookd_utc hookd_utc_of(int64_t ms) {
  hookd_utc t;
  int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
  int64_t rem = ms - days * 86400000;
  t.millis = (int)(rem % 1000);
  t.second = (int)(rem / 1000 % 60);
  t.minute = (int)(rem / 60000 % 60);
  t.hour = (int)(rem / 3600000);
  t.weekday = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
  int64_t z = days + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  t.day = (int)(doy - (153 * mp + 2) / 5 + 1);
  t.month = (int)(mp < 10 ? mp + 3 : mp - 9);
  t.year = (int)(yoe + era * 400 + (t.month <= 2));
  return t;
}

/* Formats Unix milliseconds as "2026-12-01T14:00:00.000Z" (25 bytes with
 * the NUL; out must hold 32). */
static inline void hookd_iso8601_format(int64_t ms, char out[32]) {
  hookd_utc t = hookd_utc_of(ms);
  /* The modulos only tell the compiler the widths (the values are in range). */
  snprintf(out, 32, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", (unsigned)t.year % 10000u,
           (unsigned)t.month % 100u, (unsigned)t.day % 100u, (unsigned)t.hour % 100u,
           (unsigned)t.minute % 100u, (unsigned)t.second % 100u, (unsigned)t.millis % 1000u);
}

/* --- header and URL checks ------------------------------------------------ */

/* An HTTP header name: an RFC 9110 token (letters, digits, !#$%&'*+-.^_`|~). */
static inline int hookd_header_name_ok(const char *s) {
  if (s == NULL || *s == '\0') return 0;
  for (; *s; s++) {
    char c = *s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL)))
      return 0;
  }
  return 1;
}

/* A header value (HTTP or mail): no control character but horizontal tab,
 * so nothing can end the header early (no CR or LF: no injection). */
static inline int hookd_header_value_ok(const char *s) {
  if (s == NULL) return 0;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c < 0x20 && c != '\t') || c == 0x7f) return 0;
  }
  return 1;
}

/* An absolute http:// or https:// URL (scheme case-insensitive) with a
 * non-empty host and no white space or control characters. */
static inline int hookd_url_ok(const char *s) {
  if (s == NULL) return 0;
  size_t skip = 0;
  if ((s[0] | 0x20) == 'h' && (s[1] | 0x20) == 't' && (s[2] | 0x20) == 't' &&
      (s[3] | 0x20) == 'p') {
    if (strncmp(s + 4, "://", 3) == 0)
      skip = 7;
    else if ((s[4] | 0x20) == 's' && strncmp(s + 5, "://", 3) == 0)
      skip = 8;
  }
  if (skip == 0 || s[skip] == '\0' || s[skip] == '/' || s[skip] == ':' || s[skip] == '?' ||
      s[skip] == '#')
    return 0;
  for (s += skip; *s; s++)
    if ((unsigned char)*s <= 0x20 || *s == 0x7f) return 0;
  return 1;
}

/* --- Cirrus Insight meetings -----------------------------------------------
 * The one rule for what a Smart Scheduler event means for its meeting:
 *   - Only types under "scheduling.smartscheduler." are meeting events.
 *   - The meeting is CANCELED when the type's last segment is "canceled"
 *     (Cirrus Insight's spelling; "cancelled" is read the same), or when
 *     the meeting object says so (data.isCanceled is true) whatever the
 *     type: a canceled meeting stays canceled.
 *   - Otherwise "rescheduled" is RESCHEDULED, "scheduled" SCHEDULED, and
 *     any other meeting type OTHER (accepted, but no calendar change).
 * is_canceled is the text of data.isCanceled as host->event_get() returns
 * it ("true", "false") or NULL when absent. */
typedef enum hookd_meeting_kind {
  HOOKD_MEETING_NONE = 0, /* not a meeting event */
  HOOKD_MEETING_SCHEDULED = 1,
  HOOKD_MEETING_RESCHEDULED = 2,
  HOOKD_MEETING_CANCELED = 3,
  HOOKD_MEETING_OTHER = 4
} hookd_meeting_kind;

static inline hookd_meeting_kind hookd_meeting_kind_of(const char *type, const char *is_canceled) {
  static const char prefix[] = "scheduling.smartscheduler.";
  if (type == NULL || strncmp(type, prefix, sizeof prefix - 1) != 0) return HOOKD_MEETING_NONE;
  const char *last = strrchr(type, '.') + 1;
  if (strcmp(last, "canceled") == 0 || strcmp(last, "cancelled") == 0 ||
      (is_canceled != NULL && strcmp(is_canceled, "true") == 0))
    return HOOKD_MEETING_CANCELED;
  if (strcmp(last, "rescheduled") == 0) return HOOKD_MEETING_RESCHEDULED;
  if (strcmp(last, "scheduled") == 0) return HOOKD_MEETING_SCHEDULED;
  return HOOKD_MEETING_OTHER;
}

#ifdef __cplusplus
}
#endif
#endif /* HOOKD_HELPERS_H */
