/* Unit tests for core/base/envelope.c: payloads, generic specs, every reason, paths and value text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "envelope.h"

#ifndef PAYLOAD_DIR
#error "build with -DPAYLOAD_DIR=\"path/to/examples/payloads\""
#endif

/* Reads a payload into a buffer of exactly its size, with no NUL after it,
 * so that AddressSanitizer catches a decoder that reads past len. */
static char *read_payload(const char *name, size_t *len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", PAYLOAD_DIR, name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  assert_true(n > 0);
  rewind(f);
  char *buf = malloc((size_t)n);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static const envelope_spec cirrus = {
    .format = ENVELOPE_CIRRUS_INSIGHT, .type_field = NULL, .id_field = NULL, .order_key = NULL};

/* Decodes text from an exact-size heap copy (no NUL terminator). */
static int decode_text(const envelope_spec *spec, const char *text, envelope *env,
                       const char **reason) {
  size_t len = strlen(text);
  char *copy = malloc(len != 0 ? len : 1);
  assert_non_null(copy);
  memcpy(copy, text, len);
  int rc = envelope_decode(spec, copy, len, env, reason);
  /* The one-pass decoder must give exactly the same answer. */
  envelope fast;
  const char *fast_reason = NULL;
  int fast_rc = envelope_decode_fields(spec, copy, len, &fast, &fast_reason);
  free(copy);
  assert_int_equal(fast_rc, rc);
  if (rc != 0) {
    assert_string_equal(fast_reason, *reason);
  } else {
    assert_string_equal(fast.type, env->type);
    assert_string_equal(fast.id, env->id);
    if (env->order_key == NULL) {
      assert_null(fast.order_key);
    } else {
      assert_non_null(fast.order_key);
      assert_string_equal(fast.order_key, env->order_key);
    }
  }
  envelope_clear(&fast);
  return rc;
}

/* Both decoders on text; returns the tree decoder's result in env. */
static void same_answer(const envelope_spec *spec, const char *text) {
  envelope env;
  const char *reason = NULL;
  if (decode_text(spec, text, &env, &reason) == 0) envelope_clear(&env);
}

static void check_payload(const char *file, const char *type, const char *id,
                          const char *order_key) {
  size_t len;
  char *body = read_payload(file, &len);
  envelope env;
  const char *reason = NULL;
  assert_int_equal(envelope_decode(&cirrus, body, len, &env, &reason), 0);
  envelope fast;
  assert_int_equal(envelope_decode_fields(&cirrus, body, len, &fast, &reason), 0);
  free(body);             /* the envelope must not keep pointers into the body */
  assert_null(fast.root); /* found in one pass, no tree */
  assert_string_equal(fast.type, type);
  assert_string_equal(fast.id, id);
  if (order_key == NULL) {
    assert_null(fast.order_key);
  } else {
    assert_string_equal(fast.order_key, order_key);
  }
  envelope_clear(&fast);
  assert_non_null(env.root);
  assert_string_equal(env.type, type);
  assert_string_equal(env.id, id);
  if (order_key == NULL) {
    assert_null(env.order_key);
  } else {
    assert_non_null(env.order_key);
    assert_string_equal(env.order_key, order_key);
  }
  envelope_clear(&env);
  assert_null(env.root);
  assert_null(env.type);
}

static void test_payload_test_event(void **state) {
  (void)state;
  check_payload("developer.webhook.test.json", "developer.webhook.test",
                "9d1c0f6e-2b7a-4c3d-8e9f-0a1b2c3d4e5f", NULL);
}

static void test_payload_scheduled(void **state) {
  (void)state;
  check_payload("scheduling.smartscheduler.scheduled.json", "scheduling.smartscheduler.scheduled",
                "5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912", "c0ffee00-1234-4abc-9def-0123456789ab");
}

static void test_payload_rescheduled(void **state) {
  (void)state;
  check_payload("scheduling.smartscheduler.rescheduled.json",
                "scheduling.smartscheduler.rescheduled", "5a6b7c8d-2222-4e2f-a3b4-c5d6e7f80912",
                "c0ffee00-1234-4abc-9def-0123456789ab");
}

static void test_payload_canceled(void **state) {
  (void)state;
  check_payload("scheduling.smartscheduler.canceled.json", "scheduling.smartscheduler.canceled",
                "5a6b7c8d-3333-4e2f-a3b4-c5d6e7f80912", "c0ffee00-1234-4abc-9def-0123456789ab");
}

static void test_payload_setting_changed(void **state) {
  (void)state;
  /* data has no id: no order key. */
  check_payload("organization.setting.changed.json", "organization.setting.changed",
                "77aa0000-4444-4e2f-a3b4-c5d6e7f80912", NULL);
}

static void test_cirrus_unknown_type_accepted(void **state) {
  (void)state;
  envelope env;
  const char *reason = NULL;
  assert_int_equal(
      decode_text(&cirrus, "{\"data\":{\"id\":7},\"eventType\":\"x.y\",\"eventId\":\"e1\"}", &env,
                  &reason),
      0);
  assert_string_equal(env.type, "x.y");
  assert_string_equal(env.order_key, "7"); /* numeric order key printed as an integer */
  envelope_clear(&env);
}

static void test_cirrus_null_order_key(void **state) {
  (void)state;
  envelope env;
  const char *reason = NULL;
  assert_int_equal(
      decode_text(&cirrus, "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":{\"id\":null}}", &env,
                  &reason),
      0);
  assert_null(env.order_key);
  envelope_clear(&env);
  assert_int_equal(
      decode_text(&cirrus, "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":{\"id\":\"\"}}", &env,
                  &reason),
      0);
  assert_null(env.order_key);
  envelope_clear(&env);
  assert_int_equal(
      decode_text(&cirrus, "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":[1]}", &env, &reason),
      0);
  assert_null(env.order_key);
  envelope_clear(&env);
}

static void test_generic_nested(void **state) {
  (void)state;
  envelope_spec spec = {.format = ENVELOPE_GENERIC,
                        .type_field = "meta.kind",
                        .id_field = "meta.ids.0",
                        .order_key = "payload.account.id"};
  envelope env;
  const char *reason = NULL;
  const char *body =
      "{\"meta\":{\"kind\":\"invoice.paid\",\"ids\":[\"inv_1\",\"inv_2\"]},"
      "\"payload\":{\"account\":{\"id\":\"acct_9\"}}}";
  assert_int_equal(decode_text(&spec, body, &env, &reason), 0);
  assert_string_equal(env.type, "invoice.paid");
  assert_string_equal(env.id, "inv_1");
  assert_string_equal(env.order_key, "acct_9");
  envelope_clear(&env);
}

static void test_generic_number_id(void **state) {
  (void)state;
  envelope_spec spec = {
      .format = ENVELOPE_GENERIC, .type_field = "type", .id_field = "id", .order_key = NULL};
  envelope env;
  const char *reason = NULL;
  assert_int_equal(decode_text(&spec, "{\"type\":\"a\",\"id\":12345678901234}", &env, &reason), 0);
  assert_string_equal(env.id, "12345678901234");
  assert_null(env.order_key); /* spec without order key */
  envelope_clear(&env);

  assert_int_equal(decode_text(&spec, "{\"type\":\"a\",\"id\":-42}", &env, &reason), 0);
  assert_string_equal(env.id, "-42");
  envelope_clear(&env);

  assert_int_equal(decode_text(&spec, "{\"type\":\"a\",\"id\":0}", &env, &reason), 0);
  assert_string_equal(env.id, "0");
  envelope_clear(&env);

  assert_int_equal(decode_text(&spec, "{\"type\":\"a\",\"id\":9007199254740992}", &env, &reason),
                   0);
  assert_string_equal(env.id, "9007199254740992");
  envelope_clear(&env);

  assert_int_equal(decode_text(&spec, "{\"type\":\"a\",\"id\":1e3}", &env, &reason), 0);
  assert_string_equal(env.id, "1000");
  envelope_clear(&env);
}

static void test_generic_bad_number_ids(void **state) {
  (void)state;
  envelope_spec spec = {
      .format = ENVELOPE_GENERIC, .type_field = "type", .id_field = "id", .order_key = NULL};
  envelope env;
  const char *reason = NULL;
  /* A fraction is not an id, and past 2^53 distinct ids would collide. */
  assert_int_equal(decode_text(&spec, "{\"type\":\"a\",\"id\":1.5}", &env, &reason), -1);
  assert_string_equal(reason, "event id is not a string or an exact integer");
  assert_null(env.root);
  assert_int_equal(decode_text(&spec, "{\"type\":\"a\",\"id\":18014398509481985}", &env, &reason),
                   -1);
  assert_string_equal(reason, "event id is not a string or an exact integer");
  assert_int_equal(decode_text(&spec, "{\"type\":\"a\",\"id\":true}", &env, &reason), -1);
  assert_string_equal(reason, "event id is not a string or an exact integer");
}

static void test_generic_top_level_digits_key(void **state) {
  (void)state;
  envelope_spec spec = {
      .format = ENVELOPE_GENERIC, .type_field = "0", .id_field = "1", .order_key = "2"};
  envelope env;
  const char *reason = NULL;
  assert_int_equal(decode_text(&spec, "{\"0\":\"t\",\"1\":\"i\",\"2\":3.25}", &env, &reason), 0);
  assert_string_equal(env.type, "t");
  assert_string_equal(env.id, "i");
  assert_string_equal(env.order_key, "3.25");
  envelope_clear(&env);
}

static void expect_reason(const envelope_spec *spec, const char *body, const char *want) {
  envelope env;
  const char *reason = NULL;
  memset(&env, 0xab, sizeof env); /* decode must leave a cleared envelope on failure */
  assert_int_equal(decode_text(spec, body, &env, &reason), -1);
  assert_non_null(reason);
  assert_string_equal(reason, want);
  assert_null(env.root);
  assert_null(env.type);
  assert_null(env.id);
  assert_null(env.order_key);
  envelope_clear(&env); /* harmless on a failed decode */
}

static void test_reasons_cirrus(void **state) {
  (void)state;
  expect_reason(&cirrus, "", "body is not JSON");
  expect_reason(&cirrus, "not json", "body is not JSON");
  expect_reason(&cirrus, "{\"eventType\":\"t\",", "body is not JSON");
  expect_reason(&cirrus, "{\"eventType\":\"t\",\"eventId\":\"e\"} {}", "body is not JSON");
  expect_reason(&cirrus, "[1,2]", "body is not a JSON object");
  expect_reason(&cirrus, "\"str\"", "body is not a JSON object");
  expect_reason(&cirrus, "42", "body is not a JSON object");
  expect_reason(&cirrus, "{\"eventId\":\"e\"}", "missing or empty event type (eventType)");
  expect_reason(&cirrus, "{\"eventType\":\"\",\"eventId\":\"e\"}",
                "missing or empty event type (eventType)");
  expect_reason(&cirrus, "{\"eventType\":null,\"eventId\":\"e\"}",
                "missing or empty event type (eventType)");
  expect_reason(&cirrus, "{\"eventType\":5,\"eventId\":\"e\"}",
                "event type (eventType) is not a string");
  expect_reason(&cirrus, "{\"eventType\":\"t\"}", "missing or empty event id (eventId)");
  expect_reason(&cirrus, "{\"eventType\":\"t\",\"eventId\":\"\"}",
                "missing or empty event id (eventId)");
  expect_reason(&cirrus, "{\"eventType\":\"t\",\"eventId\":{}}",
                "event id (eventId) is not a string or an exact integer");
  /* Keys are case-sensitive. */
  expect_reason(&cirrus, "{\"EventType\":\"t\",\"eventId\":\"e\"}",
                "missing or empty event type (eventType)");
}

static void test_reasons_generic(void **state) {
  (void)state;
  envelope_spec spec = {
      .format = ENVELOPE_GENERIC, .type_field = "a.type", .id_field = "a.id", .order_key = NULL};
  expect_reason(&spec, "{\"a\":{\"id\":\"x\"}}", "missing or empty event type");
  expect_reason(&spec, "{\"a\":{\"type\":[],\"id\":\"x\"}}", "event type is not a string");
  expect_reason(&spec, "{\"a\":{\"type\":\"t\"}}", "missing or empty event id");
  expect_reason(&spec, "{\"a\":\"flat\"}", "missing or empty event type");
}

static void test_trailing_whitespace_ok(void **state) {
  (void)state;
  envelope env;
  const char *reason = NULL;
  assert_int_equal(
      decode_text(&cirrus, "  {\"eventType\":\"t\",\"eventId\":\"e\"}\r\n\t ", &env, &reason), 0);
  assert_string_equal(env.id, "e");
  envelope_clear(&env);
}

static void test_embedded_nul_rejected(void **state) {
  (void)state;
  static const char body[] = "{\"eventType\":\"t\",\"eventId\":\"e\"}\0{}";
  envelope env;
  const char *reason = NULL;
  assert_int_equal(envelope_decode(&cirrus, body, sizeof body - 1, &env, &reason), -1);
  assert_string_equal(reason, "body is not JSON");
}

/* ---- envelope_path ---- */

static cJSON *load_canceled(void) {
  size_t len;
  char *body = read_payload("scheduling.smartscheduler.canceled.json", &len);
  cJSON *root = cJSON_ParseWithLength(body, len);
  free(body);
  assert_non_null(root);
  return root;
}

/* Inputs at the edges of what the one-pass decoder handles itself: each
 * must get the tree decoder's answer (decode_text compares the two). */
static void test_fields_match_tree(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "{\"eventType\":\"a\\u00e9\\ud83d\\ude00\\n\\\"\",\"eventId\":\"x\\/y\"}",
      "{\"eventType\":\"t\",\"eventId\":\"\\u0000abc\"}",
      "{\"eventType\":\"\\u0000\",\"eventId\":\"e\"}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"x\":\"\\ud800\"}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"x\":\"\\udc00\\ud800\"}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"x\":\"\\ud800\\u0041\"}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"x\":\"raw\ttab\"}",
      "\xef\xbb\xbf{\"eventType\":\"t\",\"eventId\":\"e\"}",
      "\x01{\"eventType\":\"t\",\"eventId\":\"e\"}\x02",
      "{\"eventType\":\"t\",\"eventId\":\"first\",\"eventId\":\"second\"}",
      "{\"data\":{\"x\":1},\"data\":{\"id\":\"k\"},\"eventType\":\"t\",\"eventId\":\"e\"}",
      "{\"data\":{\"id\":\"k1\",\"id\":\"k2\"},\"eventType\":\"t\",\"eventId\":\"e\"}",
      "{\"data\":{\"i\\u0064\":\"esc\"},\"eventType\":\"t\",\"eventId\":\"e\"}",
      "{\"event\\u0054ype\":\"t\",\"eventId\":\"e\"}",
      "{\"other\\u0054\":1,\"eventType\":\"t\",\"eventId\":\"e\"}",
      "{\"eventType\":\"t\",\"eventId\":12345678901234567890}",
      "{\"eventType\":\"t\",\"eventId\":-0}",
      "{\"eventType\":\"t\",\"eventId\":1e3}",
      "{\"eventType\":\"t\",\"eventId\":1.5}",
      "{\"eventType\":\"t\",\"eventId\":01}",
      "{\"eventType\":\"t\",\"eventId\":+1}",
      "{\"eventType\":\"t\",\"eventId\":1.}",
      "{\"eventType\":\"t\",\"eventId\":1e999}",
      "{\"eventType\":\"t\",\"eventId\":true}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":{\"id\":true}}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":{\"id\":false}}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":{\"id\":{\"a\":[1,2]}}}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":{\"id\":[]}}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":{\"id\":0.1}}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":{\"id\":\"\"}}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":[{\"id\":1}]}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"data\":\"id\"}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",}",
      "{\"eventType\":\"t\",\"eventId\":\"e\"",
      "{\"eventType\":\"t\" \"eventId\":\"e\"}",
      "{\"eventType\":tru,\"eventId\":\"e\"}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"x\":[1,,2]}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"x\":\"bad \\x escape\"}",
      "{\"eventType\":\"t\",\"eventId\":\"e\",\"x\":\"\\u12\"}",
      "{\"eventType\":\"t\",\"eventId\":\"e\"}   \r\n",
      "{\"eventType\":\"t\",\"eventId\":\"e\"}\f",
  };
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) same_answer(&cirrus, bodies[i]);

  envelope_spec arr = {.format = ENVELOPE_GENERIC,
                       .type_field = "meta.0.type",
                       .id_field = "meta.1",
                       .order_key = "items.10.k"};
  same_answer(&arr,
              "{\"meta\":[{\"type\":\"t\"},7],\"items\":[0,1,2,3,4,5,6,7,8,9,{\"k\":\"ten\"}]}");
  same_answer(&arr, "{\"meta\":{\"0\":{\"type\":\"t\"},\"1\":\"obj\"}}");
  same_answer(&arr, "{\"meta\":[[],\"x\"],\"items\":[]}");
  envelope_spec lead = {
      .format = ENVELOPE_GENERIC, .type_field = "t", .id_field = "00", .order_key = NULL};
  same_answer(&lead, "{\"t\":\"x\",\"00\":\"by key\"}");
  envelope_spec deep = {.format = ENVELOPE_GENERIC,
                        .type_field = "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q",
                        .id_field = "id",
                        .order_key = NULL};
  same_answer(&deep, "{\"id\":\"x\"}");

  /* Nesting past what the one-pass decoder follows, and past cJSON's limit. */
  for (size_t depth = 200; depth <= 1100; depth += 300) {
    char *body = malloc(depth * 2 + 64);
    assert_non_null(body);
    size_t n = (size_t)sprintf(body, "{\"eventType\":\"t\",\"eventId\":\"e\",\"x\":");
    for (size_t k = 0; k < depth; k++) body[n++] = '[';
    for (size_t k = 0; k < depth; k++) body[n++] = ']';
    body[n++] = '}';
    body[n] = '\0';
    same_answer(&cirrus, body);
    free(body);
  }
}

/* Every special byte at every offset of strings up to 40 bytes long: the
 * one-pass decoder reads 16 bytes at a time and must see each of them. */
static void test_fields_string_offsets(void **state) {
  (void)state;
  static const char *const specials[] = {"\\\"",     "\\\\", "\\u00e9", "\t", "\x01",
                                         "\xc3\xa9", "\xff", "\"",      "\\q"};
  char id[64], body[256];
  for (size_t len = 0; len <= 40; len++) {
    for (size_t at = 0; at <= len; at++) {
      for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++) {
        memset(id, 'a', len);
        size_t sl = strlen(specials[k]);
        memcpy(id + at, specials[k], sl);
        id[len + sl] = '\0';
        memset(id + at + sl, 'b', len - at);
        snprintf(body, sizeof body, "{\"eventType\":\"t\",\"pad\":\"%s\",\"eventId\":\"%s\"}", id,
                 id);
        same_answer(&cirrus, body);
      }
    }
  }
}

/* The payloads decode without a tree (that is the point of the one-pass
 * decoder) and to the same fields. */
static void test_fields_no_tree(void **state) {
  (void)state;
  static const char *const files[] = {"developer.webhook.test.json",
                                      "scheduling.smartscheduler.scheduled.json"};
  for (size_t i = 0; i < 2; i++) {
    size_t len;
    char *body = read_payload(files[i], &len);
    envelope env;
    const char *reason = NULL;
    assert_int_equal(envelope_decode_fields(&cirrus, body, len, &env, &reason), 0);
    assert_null(env.root);
    assert_non_null(env.type);
    assert_non_null(env.id);
    envelope_clear(&env);
    free(body);
  }
}

static void test_path_lookup(void **state) {
  (void)state;
  cJSON *root = load_canceled();
  const cJSON *n = envelope_path(root, "data.meetingInfo.meetingName");
  assert_true(cJSON_IsString(n));
  assert_string_equal(n->valuestring, "Intro call: Prospect Inc");

  n = envelope_path(root, "data.meetingInfo.formValues.0.answerText");
  assert_string_equal(n->valuestring, "Prospect Inc");
  n = envelope_path(root, "data.meetingInfo.formValues.1.question");
  assert_string_equal(n->valuestring, "Team size");
  n = envelope_path(root, "data.meetingInfo.surveyQuestions.0.isRequired");
  assert_true(cJSON_IsFalse(n));
  n = envelope_path(root, "deliveryAttempt");
  assert_true(cJSON_IsNumber(n));

  assert_ptr_equal(envelope_path(root, ""), root);
  assert_null(envelope_path(root, "data.meetingInfo.formValues.2"));
  assert_null(envelope_path(root, "data.meetingInfo.formValues.x"));
  assert_null(envelope_path(root, "data.meetingInfo.formValues.-1"));
  assert_null(envelope_path(root, "data.nope.meetingName"));
  assert_null(envelope_path(root, "data.meetingInfo.meetingName.more"));
  assert_null(envelope_path(root, "data..id"));
  assert_null(envelope_path(root, "data."));
  assert_null(envelope_path(root, ".data"));
  assert_null(envelope_path(root, "Data.id")); /* case-sensitive */
  assert_null(envelope_path(root, "dat"));     /* no prefix matches */
  assert_null(envelope_path(NULL, "data"));
  assert_null(envelope_path(root, NULL));
  cJSON_Delete(root);
}

static void test_path_digit_keys(void **state) {
  (void)state;
  cJSON *root =
      cJSON_Parse("{\"m\":{\"0\":\"zero\",\"10\":\"ten\"},\"a\":[[1,2],[3,{\"k\":\"v\"}]]}");
  assert_non_null(root);
  assert_string_equal(envelope_path(root, "m.0")->valuestring, "zero");
  assert_string_equal(envelope_path(root, "m.10")->valuestring, "ten");
  assert_null(envelope_path(root, "m.1"));
  assert_int_equal(envelope_path(root, "a.1.0")->valueint, 3);
  assert_string_equal(envelope_path(root, "a.1.1.k")->valuestring, "v");
  assert_null(envelope_path(root, "a.99999999999999999999"));
  cJSON_Delete(root);
}

/* ---- envelope_text ---- */

static void expect_text(const cJSON *node, const char *want) {
  char *s = envelope_text(node);
  if (want == NULL) {
    assert_null(s);
    return;
  }
  assert_non_null(s);
  assert_string_equal(s, want);
  free(s);
}

static void test_text(void **state) {
  (void)state;
  cJSON *root = cJSON_Parse(
      "{\"s\":\"a \\\"q\\\"\",\"i\":42,\"neg\":-7,\"f\":0.1,\"e\":1e300,\"t\":true,\"fa\":false,"
      "\"n\":null,\"o\":{\"a\":[1,\"x\"]},\"arr\":[],\"big\":12345678901234}");
  assert_non_null(root);
  expect_text(envelope_path(root, "s"), "a \"q\"");
  expect_text(envelope_path(root, "i"), "42");
  expect_text(envelope_path(root, "neg"), "-7");
  expect_text(envelope_path(root, "f"), "0.1");
  expect_text(envelope_path(root, "e"), "1e+300");
  expect_text(envelope_path(root, "t"), "true");
  expect_text(envelope_path(root, "fa"), "false");
  expect_text(envelope_path(root, "n"), NULL);
  expect_text(envelope_path(root, "o"), "{\"a\":[1,\"x\"]}");
  expect_text(envelope_path(root, "arr"), "[]");
  expect_text(envelope_path(root, "big"), "12345678901234");
  expect_text(NULL, NULL);
  cJSON_Delete(root);
}

static void test_spec_clear(void **state) {
  (void)state;
  envelope_spec spec = {.format = ENVELOPE_GENERIC,
                        .type_field = strdup("t"),
                        .id_field = strdup("i"),
                        .order_key = strdup("k")};
  envelope_spec_clear(&spec);
  assert_null(spec.type_field);
  assert_null(spec.id_field);
  assert_null(spec.order_key);
  envelope_spec_clear(&spec);
}

static const char *hdr_of(void *ctx, const char *name, size_t *len) {
  const char *const *kv = ctx;
  for (size_t i = 0; kv[i]; i += 2) {
    if (strcasecmp(kv[i], name) == 0) {
      *len = strlen(kv[i + 1]);
      return kv[i + 1];
    }
  }
  return NULL;
}

/* Type and id from headers (GitHub, Shopify), the id from an alternative
 * header (svix-id), or a body hash (Zoom); both decoders. */
static void test_request_headers(void **state) {
  (void)state;
  static const char body[] = "{\"repository\": {\"id\": 7}}";
  envelope_spec gh = {.format = ENVELOPE_GENERIC,
                      .order_key = "repository.id",
                      .type_header = "X-GitHub-Event",
                      .id_header = "X-GitHub-Delivery"};
  const char *kv[] = {"x-github-event", " push ", "X-GitHub-Delivery", "d-1", NULL};
  for (int tree = 0; tree < 2; tree++) {
    envelope env;
    const char *why = NULL;
    assert_int_equal(envelope_decode_request(&gh, body, strlen(body), hdr_of, kv, tree, &env, &why),
                     0);
    assert_string_equal(env.type, "push");
    assert_string_equal(env.id, "d-1");
    assert_string_equal(env.order_key, "7");
    envelope_clear(&env);
    const char *none[] = {"X-GitHub-Delivery", "d-1", NULL};
    assert_int_equal(
        envelope_decode_request(&gh, body, strlen(body), hdr_of, none, tree, &env, &why), -1);
    assert_string_equal(why, "missing or empty event type header");
    assert_int_equal(envelope_decode_request(&gh, "[1]", 3, hdr_of, kv, tree, &env, &why), -1);
    assert_string_equal(why, "body is not a JSON object");
  }
  envelope_spec sw = {.format = ENVELOPE_GENERIC,
                      .type_field = "t",
                      .id_header = "webhook-id",
                      .id_header_alt = "svix-id"};
  const char *svix[] = {"svix-id", "msg_1", NULL};
  envelope env;
  const char *why = NULL;
  assert_int_equal(envelope_decode_request(&sw, "{\"t\":\"a.b\"}", 11, hdr_of, svix, 0, &env, &why),
                   0);
  assert_string_equal(env.id, "msg_1");
  envelope_clear(&env);
  envelope_spec zoom = {.format = ENVELOPE_GENERIC, .type_field = "event", .id_body_hash = 1};
  const char *zb = "{\"event\":\"x\"}";
  assert_int_equal(envelope_decode_request(&zoom, zb, strlen(zb), hdr_of, svix, 0, &env, &why), 0);
  /* printf '%s' '{"event":"x"}' | sha256sum */
  assert_string_equal(env.id,
                      "sha256:ebc2c4ea03938ee05e18c1a712d9fa02de923d6f2db34b68fe1f8dcf651e479d");
  envelope_clear(&env);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_headers),
      cmocka_unit_test(test_payload_test_event),
      cmocka_unit_test(test_payload_scheduled),
      cmocka_unit_test(test_payload_rescheduled),
      cmocka_unit_test(test_payload_canceled),
      cmocka_unit_test(test_payload_setting_changed),
      cmocka_unit_test(test_cirrus_unknown_type_accepted),
      cmocka_unit_test(test_cirrus_null_order_key),
      cmocka_unit_test(test_generic_nested),
      cmocka_unit_test(test_generic_number_id),
      cmocka_unit_test(test_generic_bad_number_ids),
      cmocka_unit_test(test_generic_top_level_digits_key),
      cmocka_unit_test(test_reasons_cirrus),
      cmocka_unit_test(test_reasons_generic),
      cmocka_unit_test(test_trailing_whitespace_ok),
      cmocka_unit_test(test_embedded_nul_rejected),
      cmocka_unit_test(test_fields_match_tree),
      cmocka_unit_test(test_fields_string_offsets),
      cmocka_unit_test(test_fields_no_tree),
      cmocka_unit_test(test_path_lookup),
      cmocka_unit_test(test_path_digit_keys),
      cmocka_unit_test(test_text),
      cmocka_unit_test(test_spec_clear),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
