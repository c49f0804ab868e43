/* email_notify: RFC 5322/MIME message assembly — address checks, address headers, canonical text,
 * the multipart layout. */
#include "email_mime.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "email_rfc2047.h"

int email_addr_ok(const char *a) {
  static const char atext[] = "!#$%&'*+-/=?^_`{|}~";
  const char *at = strchr(a, '@');
  if (!at || at == a || strchr(at + 1, '@')) return 0;
  size_t local = (size_t)(at - a), total = strlen(a);
  if (local > 64 || total > 254 || total == local + 1) return 0;
  for (const char *p = a; p < at; p++) {
    unsigned char c = (unsigned char)*p;
    int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (c == '.') {
      if (p == a || p + 1 == at || p[1] == '.') return 0;
    } else if (!alnum && (c == 0 || !strchr(atext, c))) {
      return 0;
    }
  }
  /* Domain: dot-separated labels of letters, digits and inner hyphens. */
  size_t label = 0;
  for (const char *p = at + 1;; p++) {
    unsigned char c = (unsigned char)*p;
    int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (c == '.' || c == '\0') {
      if (label == 0 || label > 63 || p[-1] == '-') return 0;
      if (c == '\0') return 1;
      label = 0;
    } else if (alnum || c == '-') {
      if (label == 0 && c == '-') return 0;
      label++;
    } else {
      return 0;
    }
  }
}

char *email_trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
  return s;
}

void email_mime_addr_header(hookd_buf *b, const char *name, char *const *addrs, size_t n) {
  if (n == 0) return;
  hookd_buf_puts(b, name);
  hookd_buf_puts(b, ":");
  size_t col = strlen(name) + 1;
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(addrs[i]);
    if (i > 0) {
      hookd_buf_puts(b, ",");
      col++;
      if (col + 1 + len > EMAIL_HEADER_WIDTH) {
        hookd_buf_puts(b, "\r\n");
        col = 0;
      }
    }
    hookd_buf_puts(b, " ");
    hookd_buf_puts(b, addrs[i]);
    col += 1 + len;
  }
  hookd_buf_puts(b, "\r\n");
}

void email_mime_canonical_text(hookd_buf *out, const char *s, size_t n) {
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '\r' && s[i] != '\n') continue;
    hookd_buf_add(out, s + run, i - run);
    hookd_buf_add(out, "\r\n", 2);
    if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') i++;
    run = i + 1;
  }
  hookd_buf_add(out, s + run, n - run);
}

void email_mime_date(int64_t ms, char *out, size_t outlen) {
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  hookd_utc t = hookd_utc_of(ms);
  snprintf(out, outlen, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[t.weekday], t.day,
           months[t.month - 1], t.year, t.hour, t.minute, t.second);
}

void email_mime_digest(const char *a, const char *b, char out[33]) {
  /* Two FNV-1a lanes with a final avalanche. */
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

/* Content-Type and Content-Transfer-Encoding of a base64 part, a blank
 * line, and the data in 76-character lines. */
static void put_part(hookd_buf *b, const char *type, const void *data, size_t n) {
  hookd_buf_printf(b, "Content-Type: %s\r\nContent-Transfer-Encoding: base64\r\n\r\n", type);
  hookd_buf_base64(b, data, n, 76);
}

int email_mime_build(const email_message *m, hookd_buf *out) {
  char date[64];
  const char *at = strchr(m->from, '@');
  hookd_buf text = {0};
  email_mime_date(m->date_ms, date, sizeof date);
  hookd_buf_printf(out, "Date: %s\r\n", date);
  hookd_buf_printf(out, "Message-ID: <%s.hookd@%s>\r\n", m->digest, at ? at + 1 : "hookd");
  hookd_buf_printf(out, "From: %s\r\n", m->from);
  email_mime_addr_header(out, "To", m->to, m->n_to);
  email_mime_addr_header(out, "Cc", m->cc, m->n_cc);
  email_rfc2047_header(out, "Subject", m->subject);
  hookd_buf_puts(out, "MIME-Version: 1.0\r\n");
  email_mime_canonical_text(&text, m->body ? m->body : "", m->body ? m->body_len : 0);
  if (m->ics == NULL) {
    put_part(out, "text/plain; charset=UTF-8", text.p ? text.p : "", text.len);
  } else {
    /* base64 never produces "=_", so the boundary cannot occur in a part. */
    hookd_buf_printf(out, "Content-Type: multipart/mixed;\r\n boundary=\"=_hookd_%s\"\r\n\r\n",
                     m->digest);
    hookd_buf_puts(out, "This is a MIME message.\r\n");
    hookd_buf_printf(out, "--=_hookd_%s\r\n", m->digest);
    put_part(out, "text/plain; charset=UTF-8", text.p ? text.p : "", text.len);
    hookd_buf_printf(out, "--=_hookd_%s\r\n", m->digest);
    char type[128];
    snprintf(type, sizeof type, "text/calendar; charset=UTF-8; method=%s; name=\"invite.ics\"",
             m->ics_method);
    put_part(out, type, m->ics, m->ics_len);
    hookd_buf_printf(out, "--=_hookd_%s--\r\n", m->digest);
  }
  int oom = text.oom || out->oom;
  hookd_buf_free(&text);
  return oom ? -1 : 0;
}
