/* Unit tests for core/deliver/template.c: values, filters, escapings, missing values, compile
 * errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "envelope.h"
#include "template.h"

#ifndef PAYLOAD_DIR
#error "build with -DPAYLOAD_DIR=\"path/to/examples/payloads\""
#endif

static cJSON *load_payload(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", PAYLOAD_DIR, name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char text[65536];
  size_t n = fread(text, 1, sizeof text, f);
  fclose(f);
  assert_true(n > 0 && n < sizeof text);
  cJSON *root = cJSON_ParseWithLength(text, n);
  assert_non_null(root);
  return root;
}

/* Compiles, renders and compares; the length must agree with the text. */
static void expect_render(const char *text, const cJSON *root, hookd_escape esc, const char *want) {
  char err[256];
  hookd_template *t = template_compile(text, err, sizeof err);
  if (t == NULL) fail_msg("compile of '%s' failed: %s", text, err);
  size_t len = 12345;
  char *out = template_render(t, root, esc, &len);
  assert_non_null(out);
  assert_string_equal(out, want);
  assert_int_equal(len, strlen(want));
  free(out);
  template_free(t);
}

static void expect_error(const char *text, const char *want) {
  char err[256] = "untouched";
  hookd_template *t = template_compile(text, err, sizeof err);
  if (t != NULL) {
    template_free(t);
    fail_msg("'%s' compiled, expected error '%s'", text, want);
  }
  assert_string_equal(err, want);
}

static cJSON *tricky(void) {
  cJSON *root = cJSON_Parse(
      "{\"q\":\"say \\\"hi\\\" \\\\ now\","
      "\"crlf\":\"Subject\\r\\nBcc: evil@example.com\","
      "\"ctl\":\"a\\u0001b\\u001fc\\u007fd\\te\","
      "\"uni\":\"Ren\\u00e9e \\u00fcber \\u2603 \\ud83d\\ude00\","
      "\"amp\":\"a b&c=d/e?f#g%h+i~j-k_l.m\","
      "\"empty\":\"\",\"nul\":null,\"n\":42,\"pi\":3.5,\"t\":true,\"f\":false,"
      "\"obj\":{\"k\":\"v\",\"a\":[1,2]},\"arr\":[\"x\",\"y\"],\"mixed\":\"MiXeD Case\"}");
  assert_non_null(root);
  return root;
}

static void test_literal_only(void **state) {
  (void)state;
  hookd_template *t = template_compile("plain text }} here", NULL, 0);
  assert_non_null(t);
  assert_true(template_is_literal(t));
  char *out = template_render(t, NULL, HOOKD_ESC_NONE, NULL);
  assert_string_equal(out, "plain text }} here");
  free(out);
  template_free(t);

  t = template_compile("", NULL, 0);
  assert_non_null(t);
  assert_true(template_is_literal(t));
  size_t len = 99;
  out = template_render(t, NULL, HOOKD_ESC_JSON, &len);
  assert_string_equal(out, "");
  assert_int_equal(len, 0);
  free(out);
  template_free(t);

  t = template_compile("a {{b}}", NULL, 0);
  assert_false(template_is_literal(t));
  template_free(t);
  template_free(NULL);
}

static void test_payload_values(void **state) {
  (void)state;
  cJSON *root = load_payload("scheduling.smartscheduler.scheduled.json");
  expect_render(
      "New meeting: {{data.meetingInfo.meetingName}} with {{ data.meetingInfo.primaryInviteeName "
      "}}",
      root, HOOKD_ESC_NONE, "New meeting: Intro call: Prospect Inc with Pat Prospect");
  expect_render("{{eventType}}", root, HOOKD_ESC_NONE, "scheduling.smartscheduler.scheduled");
  expect_render(
      "{{data.meetingInfo.formValues.0.answerText}}/{{data.meetingInfo.formValues.1.answerText}}",
      root, HOOKD_ESC_NONE, "Prospect Inc/50-200");
  expect_render("attempt {{deliveryAttempt}} canceled={{data.isCanceled}}", root, HOOKD_ESC_NONE,
                "attempt 1 canceled=false");
  expect_render("[{{data.meetingInfo.existingEmailMeetingId}}]", root, HOOKD_ESC_NONE, "[]");
  expect_render("{{data.meetingOwner}}", root, HOOKD_ESC_NONE,
                "{\"userId\":\"e1d2c3b4-a596-4877-8695-a4b3c2d1e0f9\",\"username\":\"rep.one@"
                "example.com\",\"lastName\":\"One\",\"firstName\":\"Rep\"}");
  cJSON_Delete(root);
}

static void test_values_of_each_kind(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("{{n}} {{pi}} {{t}} {{f}} {{arr}} {{obj}}", root, HOOKD_ESC_NONE,
                "42 3.5 true false [\"x\",\"y\"] {\"k\":\"v\",\"a\":[1,2]}");
  expect_render("{{arr.1}}{{obj.a.0}}", root, HOOKD_ESC_NONE, "y1");
  cJSON_Delete(root);
}

static void test_missing_values(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("<{{nope}}|{{nul}}|{{empty}}|{{arr.5}}|{{q.x}}>", root, HOOKD_ESC_NONE, "<||||>");
  expect_render("<{{a.b}}>", NULL, HOOKD_ESC_NONE, "<>");
  expect_render("<{{a|default:none}}>", NULL, HOOKD_ESC_NONE, "<none>");
  cJSON_Delete(root);
}

static void test_filter_default(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("{{nope|default:N/A}}", root, HOOKD_ESC_NONE, "N/A");
  expect_render("{{nul|default:was null}}", root, HOOKD_ESC_NONE, "was null");
  expect_render("{{empty|default:was empty}}", root, HOOKD_ESC_NONE, "was empty");
  expect_render("{{n|default:0}}", root, HOOKD_ESC_NONE, "42");
  expect_render("{{f|default:x}}", root, HOOKD_ESC_NONE, "false");
  expect_render("{{ nope | default: spaced text }}", root, HOOKD_ESC_NONE, "spaced text");
  expect_render("{{nope|default:a:b}}", root, HOOKD_ESC_NONE, "a:b");
  expect_render("{{nope|default:}}", root, HOOKD_ESC_NONE, "");
  /* The default is an inserted value: it is escaped like one. */
  expect_render("{{nope|default:a \"b\"}}", root, HOOKD_ESC_JSON, "a \\\"b\\\"");
  cJSON_Delete(root);
}

static void test_filter_upper_lower(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("{{mixed|upper}} {{mixed|lower}}", root, HOOKD_ESC_NONE, "MIXED CASE mixed case");
  /* ASCII only: multi-byte characters pass untouched. */
  expect_render("{{uni|upper}}", root, HOOKD_ESC_NONE,
                "REN\xc3\xa9"
                "E \xc3\xbc"
                "BER \xe2\x98\x83 \xf0\x9f\x98\x80");
  expect_render("{{t|upper}}", root, HOOKD_ESC_NONE, "TRUE");
  expect_render("<{{nope|upper}}>", root, HOOKD_ESC_NONE, "<>");
  cJSON_Delete(root);
}

static void test_filter_json(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("{{q|json}}", root, HOOKD_ESC_NONE, "\"say \\\"hi\\\" \\\\ now\"");
  expect_render("{{n|json}} {{t|json}} {{arr|json}}", root, HOOKD_ESC_NONE,
                "42 true [\"x\",\"y\"]");
  expect_render("{\"x\": {{nope|json}}, \"y\": {{nul|json}}}", root, HOOKD_ESC_NONE,
                "{\"x\": null, \"y\": null}");
  expect_render("{{crlf|json}}", root, HOOKD_ESC_NONE, "\"Subject\\r\\nBcc: evil@example.com\"");
  expect_render("{{ctl|json}}", root, HOOKD_ESC_NONE,
                "\"a\\u0001b\\u001fc\x7f"
                "d\\te\"");
  /* With JSON escaping a value ending in the json filter is already a JSON
   * value: it goes in as it is, so a JSON body template stays valid. */
  expect_render("{\"q\": {{q|json}}, \"n\": \"{{q}}\"}", root, HOOKD_ESC_JSON,
                "{\"q\": \"say \\\"hi\\\" \\\\ now\", \"n\": \"say \\\"hi\\\" \\\\ now\"}");
  cJSON_Delete(root);
}

static void test_filter_chains(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("{{nope|default:fallback|upper}}", root, HOOKD_ESC_NONE, "FALLBACK");
  expect_render("{{mixed|upper|json}}", root, HOOKD_ESC_NONE, "\"MIXED CASE\"");
  expect_render("{{mixed|json|upper}}", root, HOOKD_ESC_NONE, "\"MIXED CASE\"");
  expect_render("{{mixed|upper|lower}}", root, HOOKD_ESC_NONE, "mixed case");
  expect_render("{{empty|default:x|json|upper}}", root, HOOKD_ESC_NONE, "\"X\"");
  expect_render("{{nope|json|default:unused}}", root, HOOKD_ESC_NONE, "null");
  expect_render("{{n|json|json}}", root, HOOKD_ESC_NONE, "\"42\"");
  expect_render("{{obj|upper}}", root, HOOKD_ESC_NONE, "{\"K\":\"V\",\"A\":[1,2]}");
  cJSON_Delete(root);
}

static void test_escape_json(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("{\"text\":\"{{q}}\"}", root, HOOKD_ESC_JSON,
                "{\"text\":\"say \\\"hi\\\" \\\\ now\"}");
  expect_render("{{crlf}}", root, HOOKD_ESC_JSON, "Subject\\r\\nBcc: evil@example.com");
  expect_render("{{ctl}}", root, HOOKD_ESC_JSON,
                "a\\u0001b\\u001fc\x7f"
                "d\\te");
  expect_render("{{uni}}", root, HOOKD_ESC_JSON,
                "Ren\xc3\xa9"
                "e \xc3\xbc"
                "ber \xe2\x98\x83 \xf0\x9f\x98\x80");
  expect_render("{{obj}}", root, HOOKD_ESC_JSON, "{\\\"k\\\":\\\"v\\\",\\\"a\\\":[1,2]}");
  /* Literal text is the template author's: not escaped. */
  expect_render("\"a\"\n{{n}}", root, HOOKD_ESC_JSON, "\"a\"\n42");
  cJSON_Delete(root);
}

static void test_escape_json_invalid_utf8(void **state) {
  (void)state;
  /* cJSON keeps invalid UTF-8 from the body as it is; JSON output must not. */
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "bad",
                          "a\xff"
                          "b\xc3"
                          "c\xed\xa0\x80"
                          "d\xc0\xaf"
                          "e");
  expect_render("{{bad}}", root, HOOKD_ESC_JSON,
                "a\\ufffdb\\ufffdc\\ufffd\\ufffd\\ufffdd\\ufffd\\ufffde");
  expect_render("{{bad}}", root, HOOKD_ESC_NONE,
                "a\xff"
                "b\xc3"
                "c\xed\xa0\x80"
                "d\xc0\xaf"
                "e");
  cJSON_Delete(root);
}

static void test_escape_header(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("Subject: {{crlf}}", root, HOOKD_ESC_HEADER,
                "Subject: Subject  Bcc: evil@example.com");
  expect_render("{{ctl}}", root, HOOKD_ESC_HEADER, "a b c d e");
  /* Literal text is cleaned too: a template cannot smuggle a header either. */
  expect_render("A\r\nB: {{q}}\x7f", root, HOOKD_ESC_HEADER, "A  B: say \"hi\" \\ now ");
  expect_render("{{uni}}", root, HOOKD_ESC_HEADER,
                "Ren\xc3\xa9"
                "e \xc3\xbc"
                "ber \xe2\x98\x83 \xf0\x9f\x98\x80");
  expect_render("{{nope|default:a\tb}}", root, HOOKD_ESC_HEADER, "a b");
  cJSON_Delete(root);
}

static void test_escape_url(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("https://x.example/s?q={{amp}}&n={{n}}", root, HOOKD_ESC_URL,
                "https://x.example/s?q=a%20b%26c%3Dd%2Fe%3Ff%23g%25h%2Bi~j-k_l.m&n=42");
  expect_render("{{uni}}", root, HOOKD_ESC_URL,
                "Ren%C3%A9e%20%C3%BCber%20%E2%98%83%20%F0%9F%98%80");
  expect_render("{{crlf}}", root, HOOKD_ESC_URL, "Subject%0D%0ABcc%3A%20evil%40example.com");
  expect_render("{{q|json}}", root, HOOKD_ESC_URL, "%22say%20%5C%22hi%5C%22%20%5C%5C%20now%22");
  cJSON_Delete(root);
}

static void test_escape_none(void **state) {
  (void)state;
  cJSON *root = tricky();
  expect_render("{{crlf}}", root, HOOKD_ESC_NONE, "Subject\r\nBcc: evil@example.com");
  expect_render("{{amp}}", root, HOOKD_ESC_NONE, "a b&c=d/e?f#g%h+i~j-k_l.m");
  cJSON_Delete(root);
}

static void test_escaped_braces(void **state) {
  (void)state;
  cJSON *root = tricky();
  hookd_template *t = template_compile("use \\{{name}} for {{n}}", NULL, 0);
  assert_non_null(t);
  char *out = template_render(t, root, HOOKD_ESC_NONE, NULL);
  assert_string_equal(out, "use {{name}} for 42");
  free(out);
  template_free(t);

  t = template_compile("\\{{only literal}}", NULL, 0);
  assert_non_null(t);
  assert_true(template_is_literal(t));
  template_free(t);

  /* A lone backslash elsewhere is ordinary text. */
  expect_render("a\\b \\{ {{n}}", root, HOOKD_ESC_NONE, "a\\b \\{ 42");
  expect_render("{{n}}}", root, HOOKD_ESC_NONE, "42}");
  cJSON_Delete(root);
}

static void test_compile_errors(void **state) {
  (void)state;
  expect_error("Hello {{name", "column 7: unclosed '{{'");
  expect_error("Hello {{name, and {{other}}", "column 7: unclosed '{{'");
  expect_error("{{}}", "column 3: empty path");
  expect_error("ab{{   }}", "column 5: empty path");
  expect_error("{{ |upper}}", "column 3: empty path");
  expect_error("{{x|shout}}", "column 5: unknown filter 'shout'");
  expect_error("{{x | upper | Shout:loud }}", "column 15: unknown filter 'Shout'");
  expect_error("{{x|}}", "column 5: empty filter");
  expect_error("{{x|default}}", "column 5: filter 'default' needs a text (default:TEXT)");
  expect_error("{{x|upper:1}}", "column 10: filter 'upper' takes no argument");
  expect_error("{{a..b}}", "column 5: empty segment in path 'a..b'");
  expect_error("{{.a}}", "column 3: empty segment in path '.a'");
  expect_error("{{a.}}", "column 5: empty segment in path 'a.'");
  /* Columns count characters, not bytes. */
  expect_error("R\xc3\xa9union {{x|bad}}", "column 13: unknown filter 'bad'");
}

static void test_compile_error_small_buffer(void **state) {
  (void)state;
  char err[8];
  assert_null(template_compile("{{x|verylongfiltername}}", err, sizeof err));
  assert_string_equal(err, "column ");
  assert_null(template_compile("{{", NULL, 0));
}

static void test_render_is_repeatable(void **state) {
  (void)state;
  cJSON *a = load_payload("scheduling.smartscheduler.canceled.json");
  cJSON *b = load_payload("developer.webhook.test.json");
  hookd_template *t = template_compile("{{eventType|upper}}:{{data.id|default:-}}", NULL, 0);
  assert_non_null(t);
  for (int i = 0; i < 3; i++) {
    char *x = template_render(t, a, HOOKD_ESC_NONE, NULL);
    char *y = template_render(t, b, HOOKD_ESC_NONE, NULL);
    assert_string_equal(x,
                        "SCHEDULING.SMARTSCHEDULER.CANCELED:c0ffee00-1234-4abc-9def-0123456789ab");
    assert_string_equal(y, "DEVELOPER.WEBHOOK.TEST:-");
    free(x);
    free(y);
  }
  template_free(t);
  cJSON_Delete(a);
  cJSON_Delete(b);
}

static void test_long_output(void **state) {
  (void)state;
  /* Output far past the first buffer size, through every growth step. */
  char text[8192];
  size_t n = 0;
  for (int i = 0; i < 500; i++) n += (size_t)snprintf(text + n, sizeof text - n, "{{q}}|");
  cJSON *root = tricky();
  hookd_template *t = template_compile(text, NULL, 0);
  assert_non_null(t);
  size_t len;
  char *out = template_render(t, root, HOOKD_ESC_JSON, &len);
  assert_non_null(out);
  const char *one = "say \\\"hi\\\" \\\\ now|";
  assert_int_equal(len, 500 * strlen(one));
  for (size_t i = 0; i < 500; i++) assert_memory_equal(out + i * strlen(one), one, strlen(one));
  free(out);
  template_free(t);
  cJSON_Delete(root);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_literal_only),
      cmocka_unit_test(test_payload_values),
      cmocka_unit_test(test_values_of_each_kind),
      cmocka_unit_test(test_missing_values),
      cmocka_unit_test(test_filter_default),
      cmocka_unit_test(test_filter_upper_lower),
      cmocka_unit_test(test_filter_json),
      cmocka_unit_test(test_filter_chains),
      cmocka_unit_test(test_escape_json),
      cmocka_unit_test(test_escape_json_invalid_utf8),
      cmocka_unit_test(test_escape_header),
      cmocka_unit_test(test_escape_url),
      cmocka_unit_test(test_escape_none),
      cmocka_unit_test(test_escaped_braces),
      cmocka_unit_test(test_compile_errors),
      cmocka_unit_test(test_compile_error_small_buffer),
      cmocka_unit_test(test_render_is_repeatable),
      cmocka_unit_test(test_long_output),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
