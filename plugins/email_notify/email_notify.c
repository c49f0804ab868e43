/* email_notify plugin: one MIME email per event over SMTP (libcurl), optionally with an invite. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* timegm */
#endif

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "hookd/plugin.h"

#define EMAIL_DEFAULT_TIMEOUT_MS 30000
#define EMAIL_MAX_TIMEOUT_MS 3600000
#define EMAIL_CONNECT_TIMEOUT_MS 10000
#define EMAIL_HEADER_WIDTH 78 /* RFC 5322 2.1.1: SHOULD NOT exceed 78 characters */
#define EMAIL_ICS_WIDTH 75    /* RFC 5545 3.1: lines fold at 75 octets */
/* Bytes of subject per RFC 2047 encoded-word: 39 bytes are 52 base64
 * characters, so "=?UTF-8?B?...?=" stays within 64 and a folded line within
 * the 76 that RFC 2047 allows even after "Subject: ". */
#define EMAIL_EW_BYTES 39
/* SEQUENCE is a signed 32-bit integer (RFC 5545 3.3.8); counting seconds
 * from 2020-01-01T00:00:00Z instead of 1970 keeps it in range until 2088. */
#define EMAIL_SEQUENCE_EPOCH 1577836800

/* What kind of meeting event, chosen from the event type's last segment. */
typedef enum email_kind {
  EMAIL_SCHEDULED = 0,
  EMAIL_RESCHEDULED = 1,
  EMAIL_CANCELED = 2,
  EMAIL_OTHER = 3,
  EMAIL_KINDS = 4
} email_kind;

/* Per instance; read-only after init, so deliver() may run on many threads. */
typedef struct email_state {
  const hookd_host_api *host;
  hookd_instance *self;
  const char *smtp_url; /* host-owned config strings from here ... */
  const char *username;
  const char *password;
  const char *from;
  const char *from_domain; /* points into `from`, after its '@' */
  const char *ca_file;     /* ... to here */
  long use_ssl;            /* CURLUSESSL_* for smtp:// */
  int64_t timeout_ms;
  int attach_ics;
  hookd_template **to;
  size_t n_to;
  hookd_template **cc;
  size_t n_cc;
  /* Configured subject/body, or NULL to use the default for the kind. */
  hookd_template *subject;
  hookd_template *body;
  hookd_template *def_subject[EMAIL_KINDS];
  hookd_template *def_body[EMAIL_KINDS];
  int curl_ready;
} email_state;

/* A growable byte buffer; `oom` makes every later append a no-op so callers
 * check once at the end. */
typedef struct email_buf {
  char *p;
  size_t len;
  size_t cap;
  int oom;
} email_buf;

/* The recipients of one delivery. */
typedef struct email_rcpts {
  char **to;
  size_t n_to;
  char **cc;
  size_t n_cc;
} email_rcpts;

static const char *const email_default_subject[EMAIL_KINDS] = {
    "Meeting booked: {{data.meetingInfo.meetingName}} with "
    "{{data.meetingInfo.primaryInviteeName}}",
    "Meeting moved: {{data.meetingInfo.meetingName}} with {{data.meetingInfo.primaryInviteeName}}",
    "Meeting canceled: {{data.meetingInfo.meetingName}} with "
    "{{data.meetingInfo.primaryInviteeName}}",
    "hookd: {{eventType}}",
};

#define EMAIL_MEETING_LINES                                                                   \
  "Meeting:  {{data.meetingInfo.meetingName}}\n"                                              \
  "Start:    {{data.meetingStart}}\n"                                                         \
  "End:      {{data.meetingEnd}}\n"                                                           \
  "Invitee:  {{data.meetingInfo.primaryInviteeName}} <{{data.meetingInfo.primaryInvitee}}>\n" \
  "Others:   {{data.meetingInfo.optionalInvitees|default:none}}\n"                            \
  "Owner:    {{data.meetingOwner.firstName}} {{data.meetingOwner.lastName}} "                 \
  "<{{data.meetingOwner.username}}>\n"                                                        \
  "Location: {{data.meetingInfo.location}}\n"                                                 \
  "\n"                                                                                        \
  "Event {{eventType}} {{eventId}}\n"

static const char *const email_default_body[EMAIL_KINDS] = {
    "A meeting was booked.\n\n" EMAIL_MEETING_LINES,
    "A meeting was moved; the new time is below.\n\n" EMAIL_MEETING_LINES,
    "A meeting was canceled.\n\n" EMAIL_MEETING_LINES,
    "hookd received event {{eventType}} {{eventId}}.\n\n{{data|json}}\n",
};

/* --- buffer -------------------------------------------------------------- */

static void buf_put(email_buf *b, const void *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void buf_puts(email_buf *b, const char *s) {
  buf_put(b, s, strlen(s));
}

static void buf_printf(email_buf *b, const char *fmt, ...) HOOKD_PRINTF(2, 3);
static void buf_printf(email_buf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    b->oom = 1; /* only used for short, bounded lines */
    return;
  }
  buf_put(b, tmp, (size_t)n);
}

/* --- small text helpers -------------------------------------------------- */

static const char email_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of s; with line_width > 0, CRLF after every line_width characters
 * (76 for a MIME body, RFC 2045 6.8). */
static void buf_base64(email_buf *b, const unsigned char *s, size_t n, size_t line_width) {
  size_t col = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)s[i] << 16;
    if (i + 1 < n) v |= (unsigned)s[i + 1] << 8;
    if (i + 2 < n) v |= s[i + 2];
    char q[4] = {email_b64[(v >> 18) & 63], email_b64[(v >> 12) & 63],
                 i + 1 < n ? email_b64[(v >> 6) & 63] : '=', i + 2 < n ? email_b64[v & 63] : '='};
    buf_put(b, q, 4);
    col += 4;
    if (line_width && col >= line_width) {
      buf_puts(b, "\r\n");
      col = 0;
    }
  }
  if (line_width && col) buf_puts(b, "\r\n");
}

/* Trims ASCII blanks at both ends, in place; returns the new start. */
static char *email_trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
  return s;
}

/* A plain addr-spec (local@domain) without comments, quotes or display
 * name: every character checked, so nothing that could end a header or an
 * SMTP command (CR, LF, spaces, '<', '>') can pass. */
static int email_addr_ok(const char *a) {
  static const char atext[] = "!#$%&'*+-/=?^_`{|}~";
  const char *at = strchr(a, '@');
  if (!at || at == a || strchr(at + 1, '@')) return 0;
  size_t local = (size_t)(at - a), total = strlen(a);
  if (local > 64 || total > 254 || total == local + 1) return 0;
  for (const char *p = a; p < at; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '.') {
      if (p == a || p + 1 == at || p[1] == '.') return 0;
    } else if (!(isascii(c) && isalnum(c)) && !strchr(atext, c)) {
      return 0;
    }
  }
  /* Domain: dot-separated labels of letters, digits and inner hyphens. */
  size_t label = 0;
  for (const char *p = at + 1;; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '.' || c == '\0') {
      if (label == 0 || label > 63 || p[-1] == '-') return 0;
      if (c == '\0') return 1;
      label = 0;
    } else if (isascii(c) && (isalnum(c) || c == '-')) {
      if (label == 0 && c == '-') return 0;
      label++;
    } else {
      return 0;
    }
  }
}

/* Parses an ISO 8601 date-time (2026-12-01T14:00:00Z, fractions and
 * +hh:mm / +hhmm offsets accepted; no zone means UTC) into Unix seconds. */
static int email_parse_time(const char *s, time_t *out) {
  if (!s) return -1;
  int y, mo, d, h, mi, sec, used = 0;
  if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &used) != 6)
    return -1;
  const char *p = s + used;
  if (*p == '.' || *p == ',') {
    p++;
    while (isdigit((unsigned char)*p)) p++;
  }
  long offset = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p == '-' ? -1 : 1, oh, om = 0, n = 0;
    if (sscanf(p + 1, "%2d%n", &oh, &n) != 1 || n != 2) return -1;
    p += 3;
    if (*p == ':') p++;
    if (isdigit((unsigned char)*p)) {
      if (sscanf(p, "%2d%n", &om, &n) != 1 || n != 2) return -1;
      p += 2;
    }
    offset = sign * (oh * 3600L + om * 60L);
  }
  if (*p != '\0') return -1;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return -1;
  struct tm tm = {0};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  time_t t = timegm(&tm);
  if (t == (time_t)-1) return -1;
  *out = t - offset;
  return 0;
}

/* RFC 5545 UTC form: 20261201T140000Z. */
static void email_ics_time(time_t t, char out[32]) {
  struct tm tm;
  gmtime_r(&t, &tm);
  if (strftime(out, 32, "%Y%m%dT%H%M%SZ", &tm) == 0) out[0] = '\0';
}

/* RFC 5322 3.3 date, in English whatever the process locale: "Tue, 01 Dec
 * 2026 14:00:00 +0000". */
static void email_rfc5322_date(time_t t, char *out, size_t outlen) {
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  struct tm tm;
  gmtime_r(&t, &tm);
  snprintf(out, outlen, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
           months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* A 128-bit digest of (instance, event id) as 32 hex digits. Two FNV-1a
 * lanes with a final avalanche: not cryptographic, only stable and well
 * spread, which is all a Message-ID needs. */
static void email_digest(const char *a, const char *b, char out[33]) {
  uint64_t h1 = 0xcbf29ce484222325ULL, h2 = 0x84222325cbf29ce4ULL;
  const char *parts[2] = {a ? a : "", b ? b : ""};
  for (int i = 0; i < 2; i++) {
    for (const unsigned char *p = (const unsigned char *)parts[i];; p++) {
      h1 = (h1 ^ *p) * 0x100000001b3ULL;
      h2 = (h2 ^ *p) * 0x100000001b3ULL;
      h2 ^= h2 >> 29;
      if (!*p) break; /* the NUL is hashed too, so ("ab","c") != ("a","bc") */
    }
  }
  uint64_t lanes[2] = {h1, h2 ^ h1};
  for (int i = 0; i < 2; i++) {
    uint64_t z = lanes[i] + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    lanes[i] = z ^ (z >> 31);
  }
  snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, lanes[0], lanes[1]);
}

static int email_is_utf8_cont(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

/* --- message headers ----------------------------------------------------- */

/* "Name: a@x, b@y" folded after a comma when the line would pass 78. */
static void email_put_addr_header(email_buf *b, const char *name, char **addrs, size_t n) {
  if (n == 0) return;
  buf_puts(b, name);
  buf_puts(b, ":");
  size_t col = strlen(name) + 1;
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(addrs[i]);
    if (i > 0) {
      buf_puts(b, ",");
      col++;
      if (col + 1 + len > EMAIL_HEADER_WIDTH) {
        buf_puts(b, "\r\n");
        col = 0;
      }
    }
    buf_puts(b, " ");
    buf_puts(b, addrs[i]);
    col += 1 + len;
  }
  buf_puts(b, "\r\n");
}

/* Whether the subject must be RFC 2047 encoded: any byte outside printable
 * ASCII, text that a reader would take for an encoded-word, or a word too
 * long to fold. */
static int email_needs_encoding(const char *s) {
  size_t run = 0;
  if (strstr(s, "=?")) return 1;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p < 0x20 || *p >= 0x7f) return 1;
    run = *p == ' ' ? 0 : run + 1;
    if (run > EMAIL_HEADER_WIDTH - 10) return 1;
  }
  return 0;
}

/* Subject: plain ASCII folded at spaces, or a sequence of UTF-8 B
 * encoded-words, each holding whole characters (RFC 2047 5), one per line. */
static void email_put_subject(email_buf *b, const char *s) {
  buf_puts(b, "Subject:");
  size_t n = strlen(s);
  if (!email_needs_encoding(s)) {
    size_t col = 8, i = 0;
    while (i < n) {
      /* A segment is a run of spaces and the word after it; folding before
       * it keeps its leading space as the folding white space. */
      size_t j = i;
      while (j < n && s[j] == ' ') j++;
      while (j < n && s[j] != ' ') j++;
      size_t seg = j - i;
      if (i == 0 && s[0] != ' ') {
        buf_puts(b, " ");
        col++;
      } else if (col + seg > EMAIL_HEADER_WIDTH && col > 8) {
        buf_puts(b, "\r\n");
        col = 0;
      }
      buf_put(b, s + i, seg);
      col += seg;
      i = j;
    }
    buf_puts(b, "\r\n");
    return;
  }
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t take = n - i < EMAIL_EW_BYTES ? n - i : EMAIL_EW_BYTES;
    /* Back off to a character boundary; malformed input with no boundary in
     * reach is cut where it is. */
    size_t t = take;
    while (t > 0 && i + t < n && email_is_utf8_cont(u[i + t])) t--;
    if (t > 0) take = t;
    buf_puts(b, i == 0 ? " =?UTF-8?B?" : "\r\n =?UTF-8?B?");
    buf_base64(b, u + i, take, 0);
    buf_puts(b, "?=");
    i += take;
  }
  buf_puts(b, "\r\n");
}

/* Text as canonical MIME text: every line break CRLF (RFC 2045 6.8 requires
 * it before base64 encoding a text type). */
static void email_canonical_text(email_buf *out, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '\r') {
      buf_puts(out, "\r\n");
      if (i + 1 < n && s[i + 1] == '\n') i++;
    } else if (s[i] == '\n') {
      buf_puts(out, "\r\n");
    } else {
      buf_put(out, s + i, 1);
    }
  }
}

/* --- iCalendar ----------------------------------------------------------- */

/* Appends one content line folded at 75 octets (RFC 5545 3.1), never inside
 * a UTF-8 character; continuation lines start with a space. */
static void ics_line(email_buf *b, const char *line) {
  const unsigned char *u = (const unsigned char *)line;
  size_t n = strlen(line), i = 0, width = EMAIL_ICS_WIDTH;
  while (n - i > width) {
    size_t take = width;
    while (take > 1 && email_is_utf8_cont(u[i + take])) take--;
    buf_put(b, line + i, take);
    buf_puts(b, "\r\n ");
    i += take;
    width = EMAIL_ICS_WIDTH - 1; /* the leading space counts */
  }
  buf_put(b, line + i, n - i);
  buf_puts(b, "\r\n");
}

/* TEXT value escaping (RFC 5545 3.3.11); other control characters dropped. */
static void ics_text(email_buf *b, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
    if (*p == '\\' || *p == ';' || *p == ',') {
      char e[2] = {'\\', (char)*p};
      buf_put(b, e, 2);
    } else if (*p == '\n') {
      buf_puts(b, "\\n");
    } else if (*p >= 0x20 && *p != 0x7f) {
      buf_put(b, p, 1);
    } else if (*p == '\t') {
      buf_put(b, p, 1);
    }
  }
}

/* A quoted parameter value: DQUOTE and control characters cannot appear in
 * one (RFC 5545 3.1), so they are dropped. */
static void ics_param(email_buf *b, const char *s) {
  buf_puts(b, "\"");
  for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
    if (*p >= 0x20 && *p != 0x7f && *p != '"') buf_put(b, p, 1);
  buf_puts(b, "\"");
}

/* Builds a line in `tmp`, then folds it into `out`. */
static void ics_flush(email_buf *out, email_buf *tmp) {
  if (tmp->oom) {
    out->oom = 1;
  } else if (tmp->len) {
    ics_line(out, tmp->p);
  }
  tmp->len = 0;
  if (tmp->p) tmp->p[0] = '\0';
}

/* "ATTENDEE;CN=...;ROLE=...:mailto:addr" or ORGANIZER; skipped when the
 * address is not a valid one. */
static void ics_person(email_buf *out, email_buf *tmp, const char *prop, const char *name,
                       const char *addr, const char *role) {
  if (!addr || !email_addr_ok(addr)) return;
  buf_puts(tmp, prop);
  if (name && *name) {
    buf_puts(tmp, ";CN=");
    ics_param(tmp, name);
  }
  if (role) {
    buf_puts(tmp, ";ROLE=");
    buf_puts(tmp, role);
    buf_puts(tmp, ";PARTSTAT=NEEDS-ACTION;RSVP=TRUE");
  }
  buf_puts(tmp, ":mailto:");
  buf_puts(tmp, addr);
  ics_flush(out, tmp);
}

/* Fields of the meeting the calendar part needs, fetched through the host. */
typedef struct ics_fields {
  char *id, *start, *end, *stamp, *canceled, *summary, *location;
  char *owner, *owner_first, *owner_last, *invitee, *invitee_name, *optional;
} ics_fields;

static void ics_fields_free(const hookd_host_api *host, ics_fields *f) {
  char **all[] = {&f->id,      &f->start,        &f->end,     &f->stamp,       &f->canceled,
                  &f->summary, &f->location,     &f->owner,   &f->owner_first, &f->owner_last,
                  &f->invitee, &f->invitee_name, &f->optional};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (*all[i]) host->free(*all[i]);
    *all[i] = NULL;
  }
}

/* Builds the VCALENDAR text into `out`. Returns 1 when built, 0 when the
 * event carries no meeting (id, start and end), -1 when out of memory. The
 * method is CANCEL for a canceled meeting, REQUEST otherwise. */
static int ics_build(const email_state *st, const hookd_event *ev, email_kind kind, email_buf *out,
                     const char **method) {
  const hookd_host_api *host = st->host;
  ics_fields f = {0};
  email_buf tmp = {0};
  int rc = 0;
  f.id = host->event_get(ev, "data.id");
  f.start = host->event_get(ev, "data.meetingStart");
  f.end = host->event_get(ev, "data.meetingEnd");
  time_t t_start, t_end, t_stamp;
  if (!f.id || !*f.id || email_parse_time(f.start, &t_start) != 0 ||
      email_parse_time(f.end, &t_end) != 0)
    goto done;
  f.stamp = host->event_get(ev, "eventTimestamp");
  f.canceled = host->event_get(ev, "data.isCanceled");
  f.summary = host->event_get(ev, "data.meetingInfo.meetingName");
  f.location = host->event_get(ev, "data.meetingInfo.location");
  f.owner = host->event_get(ev, "data.meetingOwner.username");
  f.owner_first = host->event_get(ev, "data.meetingOwner.firstName");
  f.owner_last = host->event_get(ev, "data.meetingOwner.lastName");
  f.invitee = host->event_get(ev, "data.meetingInfo.primaryInvitee");
  f.invitee_name = host->event_get(ev, "data.meetingInfo.primaryInviteeName");
  f.optional = host->event_get(ev, "data.meetingInfo.optionalInvitees");

  /* The event's own timestamp orders the versions of one meeting: a later
   * reschedule or a cancel always carries a larger SEQUENCE and DTSTAMP, and
   * a redelivery of the same event produces the same calendar object. */
  if (email_parse_time(f.stamp, &t_stamp) != 0) t_stamp = (time_t)(ev->received_ms / 1000);
  int64_t seq = (int64_t)t_stamp - EMAIL_SEQUENCE_EPOCH;
  if (seq < 0) seq = 0;
  if (seq > INT32_MAX) seq = INT32_MAX;
  int cancel = kind == EMAIL_CANCELED || (f.canceled && strcmp(f.canceled, "true") == 0);
  *method = cancel ? "CANCEL" : "REQUEST";

  char ts[32];
  ics_line(out, "BEGIN:VCALENDAR");
  ics_line(out, "PRODID:-//hookd//email_notify 1.0//EN");
  ics_line(out, "VERSION:2.0");
  ics_line(out, "CALSCALE:GREGORIAN");
  buf_printf(&tmp, "METHOD:%s", *method);
  ics_flush(out, &tmp);
  ics_line(out, "BEGIN:VEVENT");
  buf_puts(&tmp, "UID:");
  ics_text(&tmp, f.id);
  buf_puts(&tmp, "@hookd");
  ics_flush(out, &tmp);
  buf_printf(&tmp, "SEQUENCE:%" PRId64, seq);
  ics_flush(out, &tmp);
  email_ics_time(t_stamp, ts);
  buf_printf(&tmp, "DTSTAMP:%s", ts);
  ics_flush(out, &tmp);
  email_ics_time(t_start, ts);
  buf_printf(&tmp, "DTSTART:%s", ts);
  ics_flush(out, &tmp);
  email_ics_time(t_end, ts);
  buf_printf(&tmp, "DTEND:%s", ts);
  ics_flush(out, &tmp);
  if (f.summary && *f.summary) {
    buf_puts(&tmp, "SUMMARY:");
    ics_text(&tmp, f.summary);
    ics_flush(out, &tmp);
  }
  if (f.location && *f.location) {
    buf_puts(&tmp, "LOCATION:");
    ics_text(&tmp, f.location);
    ics_flush(out, &tmp);
  }
  char owner_name[256];
  snprintf(owner_name, sizeof owner_name, "%s%s%s", f.owner_first ? f.owner_first : "",
           f.owner_first && f.owner_last ? " " : "", f.owner_last ? f.owner_last : "");
  ics_person(out, &tmp, "ORGANIZER", owner_name, f.owner, NULL);
  ics_person(out, &tmp, "ATTENDEE", f.invitee_name, f.invitee, "REQ-PARTICIPANT");
  /* optionalInvitees is one string, comma or semicolon separated. */
  for (char *save = NULL, *a = f.optional ? strtok_r(f.optional, ",;", &save) : NULL; a;
       a = strtok_r(NULL, ",;", &save))
    ics_person(out, &tmp, "ATTENDEE", NULL, email_trim(a), "OPT-PARTICIPANT");
  ics_line(out, cancel ? "STATUS:CANCELLED" : "STATUS:CONFIRMED");
  ics_line(out, "END:VEVENT");
  ics_line(out, "END:VCALENDAR");
  rc = out->oom || tmp.oom ? -1 : 1;

done:
  free(tmp.p);
  ics_fields_free(host, &f);
  return rc;
}

/* --- recipients ---------------------------------------------------------- */

static void email_rcpts_free(email_rcpts *r) {
  for (size_t i = 0; i < r->n_to; i++) free(r->to[i]);
  for (size_t i = 0; i < r->n_cc; i++) free(r->cc[i]);
  free(r->to);
  free(r->cc);
  memset(r, 0, sizeof *r);
}

static int email_rcpts_has(const email_rcpts *r, const char *a) {
  for (size_t i = 0; i < r->n_to; i++)
    if (strcasecmp(r->to[i], a) == 0) return 1;
  for (size_t i = 0; i < r->n_cc; i++)
    if (strcasecmp(r->cc[i], a) == 0) return 1;
  return 0;
}

/* Splits one rendered entry on ',' and ';' (so a template may yield a list,
 * such as optionalInvitees), validates each address and adds the new ones.
 * Returns 0, -1 (bad address: message in outcome) or -2 (out of memory). */
static int email_add_rendered(email_rcpts *r, char ***list, size_t *n, char *text, const char *key,
                              size_t index, hookd_outcome *outcome) {
  char *save = NULL;
  for (char *a = strtok_r(text, ",;", &save); a; a = strtok_r(NULL, ",;", &save)) {
    a = email_trim(a);
    if (!*a) continue; /* an empty value means "no one here", not an error */
    if (!email_addr_ok(a)) {
      snprintf(outcome->message, sizeof outcome->message,
               "%s[%zu]: \"%.200s\" is not an email address", key, index, a);
      return -1;
    }
    if (email_rcpts_has(r, a)) continue;
    char **grown = realloc(*list, (*n + 1) * sizeof **list);
    if (!grown) return -2;
    *list = grown;
    if (!(grown[*n] = strdup(a))) return -2;
    (*n)++;
  }
  return 0;
}

/* Renders to and cc. Returns HOOKD_OK or the outcome of a failure. */
static hookd_result email_render_rcpts(const email_state *st, const hookd_event *ev, email_rcpts *r,
                                       hookd_outcome *outcome) {
  for (int pass = 0; pass < 2; pass++) {
    hookd_template **tpl = pass ? st->cc : st->to;
    size_t nt = pass ? st->n_cc : st->n_to;
    for (size_t i = 0; i < nt; i++) {
      char *text = st->host->render(tpl[i], ev, HOOKD_ESC_HEADER, NULL);
      if (!text) {
        snprintf(outcome->message, sizeof outcome->message, "out of memory");
        return HOOKD_RETRY;
      }
      int rc = pass ? email_add_rendered(r, &r->cc, &r->n_cc, text, "cc", i, outcome)
                    : email_add_rendered(r, &r->to, &r->n_to, text, "to", i, outcome);
      st->host->free(text);
      if (rc == -2) {
        snprintf(outcome->message, sizeof outcome->message, "out of memory");
        return HOOKD_RETRY;
      }
      if (rc == -1) return HOOKD_FAIL; /* the event's data will not change on retry */
    }
  }
  if (r->n_to + r->n_cc == 0) {
    snprintf(outcome->message, sizeof outcome->message,
             "no recipients: every to and cc address rendered empty");
    return HOOKD_FAIL;
  }
  return HOOKD_OK;
}

/* --- the message --------------------------------------------------------- */

static email_kind email_kind_of(const char *type) {
  const char *dot = type ? strrchr(type, '.') : NULL;
  const char *last = dot ? dot + 1 : (type ? type : "");
  if (strcmp(last, "scheduled") == 0) return EMAIL_SCHEDULED;
  if (strcmp(last, "rescheduled") == 0) return EMAIL_RESCHEDULED;
  if (strcmp(last, "canceled") == 0 || strcmp(last, "cancelled") == 0) return EMAIL_CANCELED;
  return EMAIL_OTHER;
}

/* Builds the whole RFC 5322 message. Returns HOOKD_OK or a failure result. */
static hookd_result email_build(const email_state *st, const hookd_event *ev, const email_rcpts *r,
                                email_buf *msg, hookd_outcome *outcome) {
  const hookd_host_api *host = st->host;
  email_kind kind = email_kind_of(ev->type);
  const hookd_template *subject_t = st->subject ? st->subject : st->def_subject[kind];
  const hookd_template *body_t = st->body ? st->body : st->def_body[kind];
  hookd_result res = HOOKD_RETRY;
  email_buf ics = {0}, text = {0};
  const char *method = NULL;
  size_t body_len = 0;
  char *subject = host->render(subject_t, ev, HOOKD_ESC_HEADER, NULL);
  char *body = host->render(body_t, ev, HOOKD_ESC_NONE, &body_len);
  if (!subject || !body) goto nomem;

  int have_ics = 0;
  if (st->attach_ics) {
    have_ics = ics_build(st, ev, kind, &ics, &method);
    if (have_ics < 0) goto nomem;
    if (have_ics == 0)
      host->log(st->self, ev, HOOKD_LOG_DEBUG,
                "no meeting id, start and end in the event: calendar part left out");
  }

  char date[64], digest[33];
  email_rfc5322_date(time(NULL), date, sizeof date);
  /* Stable across retries of one event: if a retry follows a send whose
   * answer was lost, mail systems can see the duplicate for what it is. */
  email_digest(ev->instance, ev->id, digest);

  buf_printf(msg, "Date: %s\r\n", date);
  buf_printf(msg, "Message-ID: <%s.hookd@%s>\r\n", digest, st->from_domain);
  buf_printf(msg, "From: %s\r\n", st->from);
  email_put_addr_header(msg, "To", r->to, r->n_to);
  email_put_addr_header(msg, "Cc", r->cc, r->n_cc);
  email_put_subject(msg, email_trim(subject));
  buf_puts(msg, "MIME-Version: 1.0\r\n");

  email_canonical_text(&text, body, body_len);
  if (text.oom) goto nomem;
  if (!have_ics) {
    buf_puts(msg, "Content-Type: text/plain; charset=UTF-8\r\n");
    buf_puts(msg, "Content-Transfer-Encoding: base64\r\n\r\n");
    buf_base64(msg, (const unsigned char *)(text.p ? text.p : ""), text.len, 76);
  } else {
    /* base64 never produces "=_", so the boundary cannot occur in a part. */
    buf_printf(msg, "Content-Type: multipart/mixed;\r\n boundary=\"=_hookd_%s\"\r\n\r\n", digest);
    buf_puts(msg, "This is a MIME message.\r\n");
    buf_printf(msg, "--=_hookd_%s\r\n", digest);
    buf_puts(msg, "Content-Type: text/plain; charset=UTF-8\r\n");
    buf_puts(msg, "Content-Transfer-Encoding: base64\r\n\r\n");
    buf_base64(msg, (const unsigned char *)(text.p ? text.p : ""), text.len, 76);
    buf_printf(msg, "--=_hookd_%s\r\n", digest);
    buf_printf(msg,
               "Content-Type: text/calendar; charset=UTF-8; method=%s; name=\"invite.ics\"\r\n",
               method);
    buf_puts(msg, "Content-Transfer-Encoding: base64\r\n\r\n");
    buf_base64(msg, (const unsigned char *)ics.p, ics.len, 76);
    buf_printf(msg, "--=_hookd_%s--\r\n", digest);
  }
  if (msg->oom) goto nomem;
  res = HOOKD_OK;
  goto done;

nomem:
  snprintf(outcome->message, sizeof outcome->message, "out of memory building the message");
done:
  if (subject) host->free(subject);
  if (body) host->free(body);
  free(ics.p);
  free(text.p);
  return res;
}

/* --- SMTP ---------------------------------------------------------------- */

typedef struct email_upload {
  const char *p;
  size_t len;
  size_t off;
} email_upload;

static size_t email_on_read(char *dst, size_t size, size_t nmemb, void *ud) {
  email_upload *u = ud;
  size_t room = size * nmemb, left = u->len - u->off;
  size_t n = left < room ? left : room;
  memcpy(dst, u->p + u->off, n);
  u->off += n;
  return n;
}

/* libcurl hands each SMTP reply line to the header callback; the last one
 * explains a refusal better than curl's own error text. */
static size_t email_on_reply(char *line, size_t size, size_t nmemb, void *ud) {
  char *last = ud; /* 256 bytes */
  size_t n = size * nmemb, k = n;
  while (k > 0 && (line[k - 1] == '\r' || line[k - 1] == '\n')) k--;
  if (k > 255) k = 255;
  memcpy(last, line, k);
  last[k] = '\0';
  return n;
}

static hookd_result email_send(const email_state *st, const hookd_event *ev, const email_rcpts *r,
                               const email_buf *msg, hookd_outcome *outcome) {
  char errbuf[CURL_ERROR_SIZE] = "", reply[256] = "", mail_from[300];
  struct curl_slist *rcpt = NULL;
  email_upload up = {msg->p, msg->len, 0};
  CURL *c = curl_easy_init();
  if (!c) {
    snprintf(outcome->message, sizeof outcome->message, "curl_easy_init failed");
    return HOOKD_RETRY;
  }
  for (int pass = 0; pass < 2; pass++) {
    char **list = pass ? r->cc : r->to;
    size_t n = pass ? r->n_cc : r->n_to;
    for (size_t i = 0; i < n; i++) {
      char angle[300];
      snprintf(angle, sizeof angle, "<%s>", list[i]);
      struct curl_slist *grown = curl_slist_append(rcpt, angle);
      if (!grown) {
        curl_slist_free_all(rcpt);
        curl_easy_cleanup(c);
        snprintf(outcome->message, sizeof outcome->message, "out of memory");
        return HOOKD_RETRY;
      }
      rcpt = grown;
    }
  }
  snprintf(mail_from, sizeof mail_from, "<%s>", st->from);

  curl_easy_setopt(c, CURLOPT_URL, st->smtp_url);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
  /* Worker threads: signals (for DNS timeouts) must not be used. */
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_USE_SSL, st->use_ssl);
  if (st->username) curl_easy_setopt(c, CURLOPT_USERNAME, st->username);
  if (st->password) curl_easy_setopt(c, CURLOPT_PASSWORD, st->password);
  if (st->ca_file) curl_easy_setopt(c, CURLOPT_CAINFO, st->ca_file);
  curl_easy_setopt(c, CURLOPT_MAIL_FROM, mail_from);
  curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
  curl_easy_setopt(c, CURLOPT_READFUNCTION, email_on_read);
  curl_easy_setopt(c, CURLOPT_READDATA, &up);
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, email_on_reply);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, reply);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)st->timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)(st->timeout_ms < EMAIL_CONNECT_TIMEOUT_MS ? st->timeout_ms
                                                                    : EMAIL_CONNECT_TIMEOUT_MS));

  CURLcode rc = curl_easy_perform(c);
  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  curl_slist_free_all(rcpt);
  curl_easy_cleanup(c);

  if (rc == CURLE_OK) {
    st->host->log(st->self, ev, HOOKD_LOG_INFO, "sent to %zu recipient(s): %s", r->n_to + r->n_cc,
                  reply);
    return HOOKD_OK;
  }
  const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  hookd_result res;
  if (code >= 400 && code <= 499) {
    res = HOOKD_RETRY; /* the server says: try again later */
  } else if (code >= 500 && code <= 599) {
    res = HOOKD_FAIL;
  } else if (rc == CURLE_USE_SSL_FAILED) {
    why = "the server does not offer STARTTLS and tls is \"required\"";
    res = HOOKD_FAIL;
  } else if (rc == CURLE_LOGIN_DENIED || rc == CURLE_URL_MALFORMAT ||
             rc == CURLE_UNSUPPORTED_PROTOCOL) {
    res = HOOKD_FAIL;
  } else {
    res = HOOKD_RETRY; /* connection refused, reset, timeout, TLS trouble: may pass */
  }
  if (code >= 400 && reply[0])
    snprintf(outcome->message, sizeof outcome->message, "SMTP %s", reply);
  else
    snprintf(outcome->message, sizeof outcome->message, "SMTP: %s", why);
  return res;
}

static hookd_result email_deliver(void *state, const hookd_event *ev, hookd_outcome *outcome) {
  email_state *st = state;
  email_rcpts r = {0};
  email_buf msg = {0};
  hookd_result res = email_render_rcpts(st, ev, &r, outcome);
  if (res == HOOKD_OK) res = email_build(st, ev, &r, &msg, outcome);
  if (res == HOOKD_OK) res = email_send(st, ev, &r, &msg, outcome);
  if (res != HOOKD_OK)
    st->host->log(st->self, ev, res == HOOKD_RETRY ? HOOKD_LOG_WARN : HOOKD_LOG_ERROR, "%s: %s",
                  res == HOOKD_RETRY ? "will retry" : "not delivered", outcome->message);
  email_rcpts_free(&r);
  free(msg.p);
  return res;
}

/* --- init / destroy ------------------------------------------------------ */

static void email_free_list(const hookd_host_api *host, hookd_template **l, size_t n) {
  for (size_t i = 0; i < n; i++) host->template_free(l[i]);
  free(l);
}

static void email_destroy(void *state) {
  email_state *st = state;
  if (!st) return;
  const hookd_host_api *host = st->host;
  email_free_list(host, st->to, st->n_to);
  email_free_list(host, st->cc, st->n_cc);
  if (st->subject) host->template_free(st->subject);
  if (st->body) host->template_free(st->body);
  for (int k = 0; k < EMAIL_KINDS; k++) {
    if (st->def_subject[k]) host->template_free(st->def_subject[k]);
    if (st->def_body[k]) host->template_free(st->def_body[k]);
  }
  if (st->curl_ready) curl_global_cleanup();
  free(st);
}

/* Compiles a list of address templates; literal entries (no "{{") are
 * checked now so that `hookd check` reports a typo. */
static int email_init_list(email_state *st, const hookd_config *cfg, const char *key, int required,
                           hookd_template ***out, size_t *n_out) {
  const hookd_host_api *host = st->host;
  const char *const *items = NULL;
  size_t n = 0;
  int rc = host->config_string_list(cfg, key, &items, &n);
  if (rc < 0) return -1;
  if (rc == HOOKD_E_MISSING || n == 0) {
    if (!required) return 0;
    return host->config_error(cfg, key, "required: a list of at least one address template");
  }
  *out = calloc(n, sizeof **out);
  if (!*out) return -1;
  for (size_t i = 0; i < n; i++) {
    char err[256] = "";
    if (!strstr(items[i], "{{")) {
      char *copy = strdup(items[i]);
      if (!copy) return -1;
      int bad = 0, any = 0;
      char *save = NULL;
      for (char *a = strtok_r(copy, ",;", &save); a && !bad; a = strtok_r(NULL, ",;", &save)) {
        a = email_trim(a);
        if (!*a) continue;
        any = 1;
        bad = !email_addr_ok(a);
      }
      free(copy);
      if (bad || !any)
        return host->config_error(cfg, key, "entry %zu: \"%s\" is not an email address", i,
                                  items[i]);
    }
    (*out)[i] = host->template_compile(items[i], err, sizeof err);
    if (!(*out)[i]) return host->config_error(cfg, key, "entry %zu: %s", i, err);
    (*n_out)++;
  }
  return 0;
}

static int email_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                      void **state, char *err, size_t errlen) {
  static const char *const keys[] = {"smtp_url", "tls",        "username", "password", "from",
                                     "to",       "cc",         "subject",  "body",     "timeout_ms",
                                     "ca_file",  "attach_ics", NULL};
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK) return -1;
  email_state *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  st->host = host;
  st->self = self;

  int rc = host->config_string(cfg, "smtp_url", NULL, &st->smtp_url);
  if (rc < 0) goto fail;
  if (!st->smtp_url) {
    host->config_error(cfg, "smtp_url", "required, e.g. \"smtp://mail.example.com:587\"");
    goto fail;
  }
  int implicit_tls = strncasecmp(st->smtp_url, "smtps://", 8) == 0;
  if (!implicit_tls && strncasecmp(st->smtp_url, "smtp://", 7) != 0) {
    host->config_error(cfg, "smtp_url", "must start with smtp:// or smtps://");
    goto fail;
  }

  const char *tls = NULL;
  rc = host->config_string(cfg, "tls", "required", &tls);
  if (rc < 0) goto fail;
  if (strcmp(tls, "required") == 0) {
    st->use_ssl = CURLUSESSL_ALL;
  } else if (strcmp(tls, "optional") == 0) {
    st->use_ssl = CURLUSESSL_TRY;
  } else if (strcmp(tls, "none") == 0) {
    st->use_ssl = CURLUSESSL_NONE;
  } else {
    host->config_error(cfg, "tls", "expected \"required\", \"optional\" or \"none\"");
    goto fail;
  }
  if (implicit_tls && rc == HOOKD_E_OK && st->use_ssl != CURLUSESSL_ALL) {
    host->config_error(cfg, "tls", "smtps:// always uses TLS; use smtp:// for \"%s\"", tls);
    goto fail;
  }
  if (implicit_tls) st->use_ssl = CURLUSESSL_ALL;

  if (host->config_string(cfg, "username", NULL, &st->username) < 0 ||
      host->config_string(cfg, "password", NULL, &st->password) < 0 ||
      host->config_string(cfg, "ca_file", NULL, &st->ca_file) < 0)
    goto fail;
  if (st->ca_file && access(st->ca_file, R_OK) != 0) {
    host->config_error(cfg, "ca_file", "%s: %s", st->ca_file, strerror(errno));
    goto fail;
  }
  if (st->password && !st->username) {
    host->config_error(cfg, "password", "needs a username");
    goto fail;
  }

  rc = host->config_string(cfg, "from", NULL, &st->from);
  if (rc < 0) goto fail;
  if (!st->from) {
    host->config_error(cfg, "from", "required: the sender's address, e.g. \"hookd@example.com\"");
    goto fail;
  }
  if (!email_addr_ok(st->from)) {
    host->config_error(cfg, "from", "\"%s\" is not an email address", st->from);
    goto fail;
  }
  st->from_domain = strchr(st->from, '@') + 1;

  if (email_init_list(st, cfg, "to", 1, &st->to, &st->n_to) != 0 ||
      email_init_list(st, cfg, "cc", 0, &st->cc, &st->n_cc) != 0)
    goto fail;
  if (host->config_template(cfg, "subject", NULL, &st->subject) < 0 ||
      host->config_template(cfg, "body", NULL, &st->body) < 0)
    goto fail;
  for (int k = 0; k < EMAIL_KINDS; k++) {
    char terr[128] = "";
    if (!st->subject &&
        !(st->def_subject[k] = host->template_compile(email_default_subject[k], terr, sizeof terr)))
      goto internal;
    if (!st->body &&
        !(st->def_body[k] = host->template_compile(email_default_body[k], terr, sizeof terr)))
      goto internal;
  }

  rc = host->config_int(cfg, "timeout_ms", EMAIL_DEFAULT_TIMEOUT_MS, &st->timeout_ms);
  if (rc < 0) goto fail;
  if (st->timeout_ms < 1 || st->timeout_ms > EMAIL_MAX_TIMEOUT_MS) {
    host->config_error(cfg, "timeout_ms", "must be between 1 and %d", EMAIL_MAX_TIMEOUT_MS);
    goto fail;
  }
  if (host->config_bool(cfg, "attach_ics", 0, &st->attach_ics) < 0) goto fail;

  /* Reference-counted in libcurl; done here because init runs on the main
   * thread, before any delivery. */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(err, errlen, "curl_global_init failed");
    goto fail;
  }
  st->curl_ready = 1;
  if (st->password && st->use_ssl != CURLUSESSL_ALL)
    host->log(self, NULL, HOOKD_LOG_WARN,
              "tls is \"%s\": the SMTP password may cross the network in clear text", tls);
  *state = st;
  return 0;

internal:
  snprintf(err, errlen, "built-in template failed to compile");
fail:
  email_destroy(st);
  return -1;
}

static const hookd_plugin email_plugin = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "email_notify",
    .version = "1.0.0",
    .description = "sends an email per event over SMTP, optionally with a calendar invite",
    .init = email_init,
    .deliver = email_deliver,
    .destroy = email_destroy,
};

/* Always answers with the descriptor: the host compares ABI majors and logs
 * both numbers when they differ, which it could not do after a NULL. */
HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return &email_plugin;
}
