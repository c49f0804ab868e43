/* Unit tests for the SDK helpers (hookd/helpers.h) that core and every plugin share. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hookd/helpers.h"

static void test_buf(void **state) {
  (void)state;
  hookd_buf b = {0};
  for (int i = 0; i < 1000; i++) hookd_buf_printf(&b, "%03d,", i);
  assert_int_equal(b.len, 4000);
  assert_memory_equal(b.p + 3996, "999,", 4);
  assert_int_equal(b.p[b.len], '\0');
  hookd_buf_free(&b);
  assert_null(b.p);
  /* Out of memory: every later append is a no-op, checked once. */
  b.oom = 1;
  hookd_buf_puts(&b, "x");
  assert_null(b.p);
}

static void test_json_escape(void **state) {
  (void)state;
  hookd_buf b = {0};
  const char in[] = "a\"b\\c\nd\re\tf\x01g\x7fh\xc3\xa9\xff";
  hookd_buf_json(&b, in, sizeof in - 1);
  assert_string_equal(b.p, "a\\\"b\\\\c\\nd\\re\\tf\\u0001g\x7fh\xc3\xa9\\ufffd");
  hookd_buf_free(&b);
}

static void test_base64(void **state) {
  (void)state;
  unsigned char raw[256], back[256];
  for (int i = 0; i < 256; i++) raw[i] = (unsigned char)(i * 7 + 3);
  for (size_t n = 0; n < 40; n++) {
    hookd_buf b = {0};
    hookd_buf_base64(&b, raw, n, 0);
    assert_int_equal(b.len, (n + 2) / 3 * 4);
    long got = hookd_base64_decode(b.p ? b.p : "", b.len, back, sizeof back);
    assert_int_equal(got, (long)n);
    assert_memory_equal(back, raw, n);
    hookd_buf_free(&b);
  }
  hookd_buf b = {0};
  hookd_buf_base64(&b, raw, 100, 76);
  assert_memory_equal(b.p + 76, "\r\n", 2);
  assert_memory_equal(b.p + b.len - 2, "\r\n", 2);
  hookd_buf_free(&b);
  const char *bad[] = {"abc", "ab=c", "a===", "ab!d", "=abc", "ab==ab=="};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(hookd_base64_decode(bad[i], strlen(bad[i]), back, sizeof back), -1);
  assert_int_equal(hookd_base64_decode("aGVsbG8=", 8, back, 4), -1); /* does not fit */
  assert_int_equal(hookd_whsec_decode("whsec_aGVsbG8=", back, sizeof back), 5);
  assert_int_equal(hookd_whsec_decode("whsec_", back, sizeof back), -1);
}

static void test_iso8601(void **state) {
  (void)state;
  struct {
    const char *s;
    int64_t ms;
  } good[] = {
      {"2026-12-01T14:00:00Z", 1796133600000LL},     {"2026-12-01T14:00Z", 1796133600000LL},
      {"2026-12-01 14:00:00.250z", 1796133600250LL}, {"2026-12-01T15:00:00+01:00", 1796133600000LL},
      {"2026-12-01T09:30:00-0430", 1796133600000LL}, {"2026-12-01T14:00:00", 1796133600000LL},
      {"2024-02-29T00:00:00Z", 1709164800000LL},     {"1969-12-31T23:59:59Z", -1000LL}};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    int64_t ms = 0;
    if (hookd_iso8601_parse(good[i].s, &ms) != 0) fail_msg("refused %s", good[i].s);
    assert_int_equal(ms, good[i].ms);
  }
  const char *bad[] = {"2026-13-01T00:00:00Z",
                       "2026-02-30T00:00:00Z",
                       "2025-02-29T00:00:00Z",
                       "2026-12-01",
                       "2026-12-01T24:00:00Z",
                       "2026-12-01T14:00:00Zx",
                       "2026-12-01T14:00:00.",
                       "2026-12-01T14:00:00+25:00",
                       "",
                       NULL};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t ms;
    if (hookd_iso8601_parse(bad[i], &ms) == 0) fail_msg("accepted %s", bad[i] ? bad[i] : "NULL");
  }
  /* Format and parse agree, and agree with gmtime_r, across eras. */
  for (int64_t ms = -86400000LL * 800; ms < 86400000LL * 40000; ms += 86400000LL * 37 + 12345) {
    char out[32];
    hookd_iso8601_format(ms, out);
    int64_t back;
    assert_int_equal(hookd_iso8601_parse(out, &back), 0);
    assert_int_equal(back, ms);
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    hookd_utc u = hookd_utc_of(ms);
    assert_int_equal(u.year, tm.tm_year + 1900);
    assert_int_equal(u.month, tm.tm_mon + 1);
    assert_int_equal(u.day, tm.tm_mday);
    assert_int_equal(u.weekday, tm.tm_wday);
    assert_int_equal(u.second, tm.tm_sec);
  }
}

static void test_checks(void **state) {
  (void)state;
  assert_true(hookd_header_name_ok("X-Meeting_Id"));
  assert_false(hookd_header_name_ok("X Meeting"));
  assert_false(hookd_header_name_ok(""));
  assert_true(hookd_header_value_ok("Bearer abc\tdef"));
  assert_false(hookd_header_value_ok("a\r\nInjected: 1"));
  assert_true(hookd_url_ok("https://example.com/x?y=1"));
  assert_true(hookd_url_ok("HTTP://127.0.0.1:9"));
  assert_false(hookd_url_ok("ftp://example.com"));
  assert_false(hookd_url_ok("https://"));
  assert_false(hookd_url_ok("https:///path"));
  assert_false(hookd_url_ok("https://a b"));
  assert_false(hookd_url_ok("example.com"));
}

/* The one rule for canceled meetings. */
static void test_meeting_kind(void **state) {
  (void)state;
  assert_int_equal(hookd_meeting_kind_of("scheduling.smartscheduler.scheduled", "false"),
                   HOOKD_MEETING_SCHEDULED);
  assert_int_equal(hookd_meeting_kind_of("scheduling.smartscheduler.rescheduled", NULL),
                   HOOKD_MEETING_RESCHEDULED);
  assert_int_equal(hookd_meeting_kind_of("scheduling.smartscheduler.canceled", NULL),
                   HOOKD_MEETING_CANCELED);
  assert_int_equal(hookd_meeting_kind_of("scheduling.smartscheduler.cancelled", NULL),
                   HOOKD_MEETING_CANCELED);
  assert_int_equal(hookd_meeting_kind_of("scheduling.smartscheduler.rescheduled", "true"),
                   HOOKD_MEETING_CANCELED);
  assert_int_equal(hookd_meeting_kind_of("scheduling.smartscheduler.noshow", NULL),
                   HOOKD_MEETING_OTHER);
  assert_int_equal(hookd_meeting_kind_of("developer.webhook.test", "true"), HOOKD_MEETING_NONE);
  assert_int_equal(hookd_meeting_kind_of(NULL, NULL), HOOKD_MEETING_NONE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buf),    cmocka_unit_test(test_json_escape),
      cmocka_unit_test(test_base64), cmocka_unit_test(test_iso8601),
      cmocka_unit_test(test_checks), cmocka_unit_test(test_meeting_kind),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
