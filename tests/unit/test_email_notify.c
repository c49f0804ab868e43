/* Unit tests for email_notify's parts: MIME assembly, RFC 2047 headers and the libical invitation
 * (read back by python3-icalendar). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "email_ics.h"
#include "email_mime.h"
#include "email_rfc2047.h"

/* Every line of text ends in CRLF, and no bare CR or LF is anywhere. */
static void assert_crlf(const char *text) {
  size_t n = strlen(text);
  assert_true(n >= 2);
  assert_memory_equal(text + n - 2, "\r\n", 2);
  for (size_t i = 0; i < n; i++) {
    if (text[i] == '\n') assert_true(i > 0 && text[i - 1] == '\r');
    if (text[i] == '\r') assert_true(i + 1 < n && text[i + 1] == '\n');
  }
}

/* The longest line in octets, CRLF not counted. */
static size_t longest_line(const char *text) {
  size_t best = 0;
  for (const char *p = text; *p;) {
    const char *e = strstr(p, "\r\n");
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len > best) best = len;
    p += len + (e ? 2 : 0);
  }
  return best;
}

/* Joins folded lines back into one, as a reader unfolds: RFC 5322 drops the
 * CRLF and keeps the space; RFC 5545 drops both. */
static char *unfold_as(const char *text, int keep_space) {
  char *out = malloc(strlen(text) + 1), *o = out;
  assert_non_null(out);
  for (const char *p = text; *p; p++) {
    if (p[0] == '\r' && p[1] == '\n' && p[2] == ' ') {
      p += keep_space ? 1 : 2;
      continue;
    }
    *o++ = *p;
  }
  *o = '\0';
  return out;
}

#define unfold_mail(t) unfold_as(t, 1)
#define unfold_ics(t) unfold_as(t, 0)

/* ---- RFC 2047 ---- */

static void test_subject_plain_folds_at_spaces(void **state) {
  (void)state;
  hookd_buf b = {0};
  const char *s =
      "Meeting booked: Quarterly planning review with the whole regional sales team "
      "and partners";
  email_rfc2047_header(&b, "Subject", s);
  assert_crlf(b.p);
  assert_true(longest_line(b.p) <= EMAIL_HEADER_WIDTH);
  assert_non_null(strstr(b.p, "\r\n "));
  char *u = unfold_mail(b.p);
  char want[256];
  snprintf(want, sizeof want, "Subject: %s\r\n", s);
  assert_string_equal(u, want);
  free(u);
  hookd_buf_free(&b);
}

static void test_subject_encoded_words(void **state) {
  (void)state;
  hookd_buf b = {0};
  /* 20 two-byte characters: more than one encoded-word of 39 bytes, and no
   * word may split a character. */
  const char *s = "Jürgen Müller ääääääääääääääääääää über";
  assert_true(email_rfc2047_needed(s));
  email_rfc2047_header(&b, "Subject", s);
  assert_crlf(b.p);
  assert_true(longest_line(b.p) <= 76);
  /* Decode every word and join them: the original, whole characters each. */
  char joined[256] = "";
  for (const char *p = strstr(b.p, "=?UTF-8?B?"); p; p = strstr(p, "=?UTF-8?B?")) {
    p += 10;
    const char *end = strstr(p, "?=");
    assert_non_null(end);
    unsigned char raw[64];
    long n = hookd_base64_decode(p, (size_t)(end - p), raw, sizeof raw);
    assert_true(n > 0 && n <= EMAIL_EW_BYTES);
    assert_true((raw[0] & 0xC0) != 0x80); /* starts on a character */
    strncat(joined, (const char *)raw, (size_t)n);
    p = end;
  }
  assert_string_equal(joined, s);
  hookd_buf_free(&b);
}

static void test_subject_needs_encoding(void **state) {
  (void)state;
  assert_false(email_rfc2047_needed("plain ascii"));
  assert_true(email_rfc2047_needed("looks =?like?= a word"));
  assert_true(email_rfc2047_needed("tab\there"));
  assert_true(email_rfc2047_needed(
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

/* ---- MIME ---- */

static void test_addresses(void **state) {
  (void)state;
  assert_true(email_addr_ok("a.b+c@example.co.uk"));
  const char *bad[] = {"a@b@c",         "@x",    "a@",        "a..b@x", "a@-x.com", "a b@x",
                       "a@x\r\nRCPT:y", "<a@x>", "a@x_y.com", ".a@x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (email_addr_ok(bad[i])) fail_msg("accepted '%s'", bad[i]);
  hookd_buf b = {0};
  char *many[] = {"first.person@example.com", "second.person@example.com",
                  "third.person@example.com", "fourth.person@example.com"};
  email_mime_addr_header(&b, "To", many, 4);
  assert_crlf(b.p);
  assert_true(longest_line(b.p) <= EMAIL_HEADER_WIDTH);
  char *u = unfold_mail(b.p);
  assert_string_equal(u,
                      "To: first.person@example.com, second.person@example.com, "
                      "third.person@example.com, fourth.person@example.com\r\n");
  free(u);
  hookd_buf_free(&b);
}

static void test_canonical_text(void **state) {
  (void)state;
  hookd_buf b = {0};
  email_mime_canonical_text(&b, "a\nb\r\nc\rd\n", 10);
  assert_string_equal(b.p, "a\r\nb\r\nc\r\nd\r\n");
  hookd_buf_free(&b);
}

static email_message message(const char *ics) {
  static char *to[] = {"owner@example.com"}, *cc[] = {"x@example.org"};
  email_message m = {.from = "hookd@example.com",
                     .to = to,
                     .n_to = 1,
                     .cc = cc,
                     .n_cc = 1,
                     .subject = "Hello",
                     .body = "line one\nline two\n",
                     .body_len = 18,
                     .ics = ics,
                     .ics_len = ics ? strlen(ics) : 0,
                     .ics_method = "REQUEST",
                     .digest = "0123456789abcdef0123456789abcdef",
                     .date_ms = 1796133600000LL /* 2026-12-01T14:00:00Z */};
  return m;
}

static void test_mime_single_part(void **state) {
  (void)state;
  hookd_buf b = {0};
  email_message m = message(NULL);
  assert_int_equal(email_mime_build(&m, &b), 0);
  assert_crlf(b.p);
  assert_true(longest_line(b.p) <= EMAIL_HEADER_WIDTH);
  assert_non_null(strstr(b.p, "Date: Tue, 01 Dec 2026 14:00:00 +0000\r\n"));
  assert_non_null(
      strstr(b.p, "Message-ID: <0123456789abcdef0123456789abcdef.hookd@example.com>\r\n"));
  assert_non_null(strstr(b.p, "To: owner@example.com\r\nCc: x@example.org\r\n"));
  assert_non_null(strstr(b.p,
                         "Content-Type: text/plain; charset=UTF-8\r\n"
                         "Content-Transfer-Encoding: base64\r\n\r\n"));
  /* The body is canonical text, base64: "line one\r\nline two\r\n". */
  assert_non_null(strstr(b.p, "\r\n\r\nbGluZSBvbmUNCmxpbmUgdHdvDQo=\r\n"));
  hookd_buf_free(&b);
}

static void test_mime_multipart(void **state) {
  (void)state;
  hookd_buf b = {0};
  email_message m = message("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n");
  assert_int_equal(email_mime_build(&m, &b), 0);
  assert_crlf(b.p);
  const char *boundary = "--=_hookd_0123456789abcdef0123456789abcdef";
  assert_non_null(strstr(b.p, "boundary=\"=_hookd_0123456789abcdef0123456789abcdef\""));
  const char *first = strstr(b.p, boundary);
  assert_non_null(first);
  const char *second = strstr(first + 1, boundary);
  assert_non_null(second);
  assert_non_null(strstr(second, "text/calendar; charset=UTF-8; method=REQUEST"));
  char closing[64];
  snprintf(closing, sizeof closing, "%s--\r\n", boundary);
  assert_string_equal(b.p + b.len - strlen(closing), closing);
  hookd_buf_free(&b);
}

/* ---- iCalendar ---- */

static const email_meeting meeting = {
    .id = "c0ffee00-1234",
    .start_ms = 1796133600000LL, /* 2026-12-01T14:00:00Z */
    .end_ms = 1796135400000LL,
    .stamp_ms = 1796000000000LL,
    .summary =
        "Intro call; pricing, terms \\ next steps — Jürgen Müller und das ganze Team "
        "aus München\nsecond line",
    .location = "Room 4, floor 2",
    .owner = "owner@example.com",
    .owner_name = "Ann Lee",
    .invitee = "buyer@example.org",
    .invitee_name = "Bo Buyer",
    .optional = "a@example.org; not an address, b@example.org"};

static void test_ics_folding_escaping_crlf(void **state) {
  (void)state;
  char *ics = email_ics_build(&meeting);
  assert_non_null(ics);
  assert_crlf(ics);
  assert_true(longest_line(ics) <= 75);
  /* Folding never splits a UTF-8 character: no line starts with a
   * continuation byte after its folding space. */
  for (const char *p = strstr(ics, "\r\n "); p; p = strstr(p + 1, "\r\n "))
    assert_true(((unsigned char)p[3] & 0xC0) != 0x80);
  char *u = unfold_ics(ics);
  assert_non_null(strstr(u,
                         "\r\nSUMMARY:Intro call\\; pricing\\, terms \\\\ next steps — Jürgen "
                         "Müller und das ganze Team aus München\\nsecond line\r\n"));
  assert_non_null(strstr(u, "\r\nLOCATION:Room 4\\, floor 2\r\n"));
  assert_non_null(strstr(u, "\r\nMETHOD:REQUEST\r\n"));
  assert_non_null(strstr(u, "\r\nUID:c0ffee00-1234@hookd\r\n"));
  assert_non_null(strstr(u, "\r\nDTSTART:20261201T140000Z\r\n"));
  assert_non_null(strstr(u, "\r\nSEQUENCE:218163200\r\n"));
  assert_non_null(strstr(u, "\r\nSTATUS:CONFIRMED\r\n"));
  assert_null(strstr(u, "not an address"));
  free(u);
  free(ics);
}

/* A second, independent parser (Debian's python3-icalendar) reads what
 * libical wrote. */
static void test_ics_second_parser(void **state) {
  (void)state;
  if (access("/usr/bin/python3", X_OK) != 0) fail_msg("/usr/bin/python3 is missing");
  email_meeting m = meeting;
  m.canceled = 1;
  char *ics = email_ics_build(&m);
  assert_non_null(ics);
  char path[] = "/tmp/hookd-test-ics-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, ics, strlen(ics)), (ssize_t)strlen(ics));
  close(fd);
  free(ics);
  char cmd[1024];
  snprintf(
      cmd, sizeof cmd,
      "/usr/bin/python3 -c 'import sys, icalendar\n"
      "cal = icalendar.Calendar.from_ical(open(sys.argv[1], \"rb\").read())\n"
      "ev = [c for c in cal.walk(\"VEVENT\")][0]\n"
      "att = sorted(str(a) for a in ev.get(\"ATTENDEE\"))\n"
      "print(cal[\"METHOD\"], ev[\"STATUS\"], ev[\"UID\"], ev.decoded(\"DTSTART\").isoformat(),"
      " ev.decoded(\"DTEND\").isoformat(), str(ev[\"ORGANIZER\"]), "
      "str(ev[\"ORGANIZER\"].params[\"CN\"]),"
      " \"|\".join(att), sep=\"\\n\")\n"
      "print(str(ev[\"SUMMARY\"]))' %s",
      path);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char out[2048] = "";
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = '\0';
  int status = pclose(p);
  unlink(path);
  if (status != 0) fail_msg("python3-icalendar could not read it (status %d): %s", status, out);
  assert_string_equal(out,
                      "CANCEL\nCANCELLED\nc0ffee00-1234@hookd\n2026-12-01T14:00:00+00:00\n"
                      "2026-12-01T14:30:00+00:00\nmailto:owner@example.com\nAnn Lee\n"
                      "mailto:a@example.org|mailto:b@example.org|mailto:buyer@example.org\n"
                      "Intro call; pricing, terms \\ next steps — Jürgen Müller und das ganze "
                      "Team aus München\nsecond line\n");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_subject_plain_folds_at_spaces),
      cmocka_unit_test(test_subject_encoded_words),
      cmocka_unit_test(test_subject_needs_encoding),
      cmocka_unit_test(test_addresses),
      cmocka_unit_test(test_canonical_text),
      cmocka_unit_test(test_mime_single_part),
      cmocka_unit_test(test_mime_multipart),
      cmocka_unit_test(test_ics_folding_escaping_crlf),
      cmocka_unit_test(test_ics_second_parser),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
