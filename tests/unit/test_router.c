/* Unit tests for core/ingest/router.c: patterns, source and `when` filters, instance order and
 * dedup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "router.h"
#include "pattern.h"
#include "config.h"

#ifndef PAYLOAD_DIR
#error "build with -DPAYLOAD_DIR=\"path/to/examples/payloads\""
#endif

/* A config built by hand with only what the router reads. Routes are added
 * with route(); `when` values are parsed from JSON text and kept in docs. */
#define MAX_ROUTES 8
#define MAX_ITEMS 8

typedef struct fixture {
  config cfg;
  config_route routes[MAX_ROUTES];
  char *events[MAX_ROUTES][MAX_ITEMS];
  size_t to[MAX_ROUTES][MAX_ITEMS];
  config_when when[MAX_ROUTES][MAX_ITEMS];
  cJSON *values[MAX_ROUTES * MAX_ITEMS];
  size_t n_values;
} fixture;

static fixture *fixture_new(size_t n_plugins) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->cfg.routes = f->routes;
  f->cfg.n_plugins = n_plugins;
  return f;
}

static void fixture_free(fixture *f) {
  for (size_t i = 0; i < f->n_values; i++) cJSON_Delete(f->values[i]);
  free(f);
}

/* events: NULL-terminated; to: terminated by SIZE_MAX. */
static config_route *route(fixture *f, const char *source, const char *const *events,
                           const size_t *to) {
  size_t i = f->cfg.n_routes++;
  assert_true(i < MAX_ROUTES);
  config_route *rt = &f->routes[i];
  rt->source = (char *)source;
  rt->events = f->events[i];
  for (; events[rt->n_events] != NULL; rt->n_events++) {
    f->events[i][rt->n_events] = (char *)events[rt->n_events];
  }
  rt->to = f->to[i];
  for (; to[rt->n_to] != SIZE_MAX; rt->n_to++) f->to[i][rt->n_to] = to[rt->n_to];
  rt->when = f->when[i];
  return rt;
}

static void when(fixture *f, config_route *rt, const char *path, const char *json_value) {
  size_t ri = (size_t)(rt - f->routes);
  cJSON *v = cJSON_Parse(json_value);
  assert_non_null(v);
  f->values[f->n_values++] = v;
  f->when[ri][rt->n_when].path = (char *)path;
  f->when[ri][rt->n_when].value = v;
  rt->n_when++;
}

#define EV(...) ((const char *const[]){__VA_ARGS__, NULL})
#define TO(...) ((const size_t[]){__VA_ARGS__, SIZE_MAX})
#define NONE ((const size_t[]){SIZE_MAX})

static router *build(fixture *f) {
  char err[256] = "";
  router *r = router_new(&f->cfg, err, sizeof err);
  if (r == NULL) fail_msg("router_new failed: %s", err);
  return r;
}

/* Matches and compares the full result with want (terminated by SIZE_MAX). */
static void expect_match(const router *r, const char *source, const char *type, const cJSON *root,
                         const size_t *want) {
  size_t out[64];
  size_t n_want = 0;
  while (want[n_want] != SIZE_MAX) n_want++;
  for (size_t i = 0; i < 64; i++) out[i] = 0xdead;
  size_t n = router_match(r, source, type, root, out, 64);
  if (n != n_want) fail_msg("%s: %zu instances, expected %zu", type, n, n_want);
  for (size_t i = 0; i < n; i++) assert_int_equal(out[i], want[i]);
  assert_int_equal(out[n], 0xdead);
}

static cJSON *load_payload(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", PAYLOAD_DIR, name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char text[65536];
  size_t n = fread(text, 1, sizeof text, f);
  fclose(f);
  cJSON *root = cJSON_ParseWithLength(text, n);
  assert_non_null(root);
  return root;
}

static void test_pattern_match(void **state) {
  (void)state;
  assert_true(pattern_match("a.b.c", "a.b.c"));
  assert_false(pattern_match("a.b.c", "a.b.cd"));
  assert_false(pattern_match("a.b.c", "a.b"));
  assert_false(pattern_match("a.b", "a.b.c"));
  assert_true(pattern_match("a.*.c", "a.b.c"));
  assert_false(pattern_match("a.*.c", "a.b.x.c"));
  assert_false(pattern_match("a.*", "a"));
  assert_false(pattern_match("a.*", "a.b.c"));
  assert_false(pattern_match("a.*", "a."));
  assert_true(pattern_match("*", "a"));
  assert_false(pattern_match("*", "a.b"));
  assert_true(pattern_match("a.**", "a.b"));
  assert_true(pattern_match("a.**", "a.b.c.d"));
  assert_false(pattern_match("a.**", "a"));
  assert_false(pattern_match("a.**", "a."));
  assert_false(pattern_match("a.**", "a.b..c"));
  assert_false(pattern_match("a.**", "ab.c"));
  assert_true(pattern_match("**", "x"));
  assert_true(pattern_match("**", "x.y.z"));
  assert_true(pattern_match("*.*.**", "x.y.z"));
  assert_false(pattern_match("*.*.**", "x.y"));
  /* Invalid patterns never match. */
  assert_false(pattern_match("a.**.c", "a.b.c"));
  assert_false(pattern_match("a..b", "a..b"));
  assert_false(pattern_match("", ""));
  assert_false(pattern_match("a*", "a*"));
  assert_false(pattern_match(NULL, "a"));
  assert_false(pattern_match("a", NULL));
}

static void test_exact_and_wildcards(void **state) {
  (void)state;
  fixture *f = fixture_new(4);
  route(f, NULL, EV("scheduling.smartscheduler.scheduled"), TO(0));
  route(f, NULL, EV("scheduling.smartscheduler.*"), TO(1));
  route(f, NULL, EV("scheduling.**"), TO(2));
  route(f, NULL, EV("organization.setting.changed", "developer.webhook.test"), TO(3));
  router *r = build(f);

  expect_match(r, "cirrus", "scheduling.smartscheduler.scheduled", NULL, TO(0, 1, 2));
  expect_match(r, "cirrus", "scheduling.smartscheduler.canceled", NULL, TO(1, 2));
  expect_match(r, "cirrus", "scheduling.smartscheduler.canceled.v2", NULL, TO(2));
  expect_match(r, "cirrus", "scheduling.other", NULL, TO(2));
  expect_match(r, "cirrus", "scheduling", NULL, NONE);
  expect_match(r, "cirrus", "organization.setting.changed", NULL, TO(3));
  expect_match(r, "cirrus", "developer.webhook.test", NULL, TO(3));
  expect_match(r, "cirrus", "organization.setting", NULL, NONE);
  expect_match(r, "cirrus", "Scheduling.smartscheduler.scheduled", NULL, NONE);
  expect_match(r, "cirrus", "", NULL, NONE);
  router_free(r);
  fixture_free(f);
}

static void test_segment_count_mismatch(void **state) {
  (void)state;
  fixture *f = fixture_new(2);
  route(f, NULL, EV("a.*.c"), TO(0));
  route(f, NULL, EV("*"), TO(1));
  router *r = build(f);
  expect_match(r, NULL, "a.b.c", NULL, TO(0));
  expect_match(r, NULL, "a.b", NULL, NONE);
  expect_match(r, NULL, "a.b.c.d", NULL, NONE);
  expect_match(r, NULL, "solo", NULL, TO(1));
  router_free(r);
  fixture_free(f);
}

static void test_source_filter(void **state) {
  (void)state;
  fixture *f = fixture_new(3);
  route(f, "cirrus", EV("x.y"), TO(0));
  route(f, "github", EV("x.*"), TO(1));
  route(f, NULL, EV("x.y"), TO(2));
  router *r = build(f);
  expect_match(r, "cirrus", "x.y", NULL, TO(0, 2));
  expect_match(r, "github", "x.y", NULL, TO(1, 2));
  expect_match(r, "other", "x.y", NULL, TO(2));
  expect_match(r, NULL, "x.y", NULL, TO(2));
  router_free(r);
  fixture_free(f);
}

static void test_when_on_payloads(void **state) {
  (void)state;
  fixture *f = fixture_new(5);
  config_route *rt = route(f, NULL, EV("scheduling.smartscheduler.canceled"), TO(0));
  when(f, rt, "data.meetingInfo.calendarPath", "\"intro-call\"");
  rt = route(f, NULL, EV("scheduling.smartscheduler.*"), TO(1));
  when(f, rt, "data.isCanceled", "false");
  rt = route(f, NULL, EV("scheduling.**"), TO(2));
  when(f, rt, "deliveryAttempt", "1");
  when(f, rt, "data.meetingInfo.formValues.1.answerText", "\"50-200\"");
  rt = route(f, NULL, EV("scheduling.**"), TO(3));
  when(f, rt, "data.meetingInfo.existingEmailMeetingId", "null");
  rt = route(f, NULL, EV("**"), TO(4));
  when(f, rt, "data.isCanceled", "true");
  router *r = build(f);

  cJSON *canceled = load_payload("scheduling.smartscheduler.canceled.json");
  cJSON *scheduled = load_payload("scheduling.smartscheduler.scheduled.json");
  cJSON *test_event = load_payload("developer.webhook.test.json");
  expect_match(r, "cirrus", "scheduling.smartscheduler.canceled", canceled, TO(0, 2, 4));
  /* existingEmailMeetingId is JSON null only in the scheduled payload. */
  expect_match(r, "cirrus", "scheduling.smartscheduler.scheduled", scheduled, TO(1, 2, 3));
  /* null does not match a missing field, and every route has a `when`. */
  expect_match(r, "cirrus", "developer.webhook.test", test_event, NONE);
  /* Without an envelope, routes with `when` never match. */
  expect_match(r, "cirrus", "scheduling.smartscheduler.canceled", NULL, NONE);
  cJSON_Delete(canceled);
  cJSON_Delete(scheduled);
  cJSON_Delete(test_event);
  router_free(r);
  fixture_free(f);
}

static void test_when_types_are_strict(void **state) {
  (void)state;
  fixture *f = fixture_new(5);
  config_route *rt = route(f, NULL, EV("t"), TO(0));
  when(f, rt, "n", "42");
  rt = route(f, NULL, EV("t"), TO(1));
  when(f, rt, "n", "\"42\"");
  rt = route(f, NULL, EV("t"), TO(2));
  when(f, rt, "s", "\"42\"");
  rt = route(f, NULL, EV("t"), TO(3));
  when(f, rt, "b", "true");
  rt = route(f, NULL, EV("t"), TO(4));
  when(f, rt, "z", "null"); /* a JSON null, not a missing field */
  router *r = build(f);

  cJSON *root = cJSON_Parse("{\"n\":42.0,\"s\":\"42\",\"b\":true,\"z\":null}");
  expect_match(r, NULL, "t", root, TO(0, 2, 3, 4));
  cJSON_Delete(root);
  root = cJSON_Parse("{\"n\":\"42\",\"s\":42,\"b\":1}");
  expect_match(r, NULL, "t", root, TO(1));
  cJSON_Delete(root);
  root = cJSON_Parse("{\"n\":43,\"s\":\"420\",\"b\":false}");
  expect_match(r, NULL, "t", root, NONE);
  cJSON_Delete(root);
  router_free(r);
  fixture_free(f);
}

static void test_dedup_and_order(void **state) {
  (void)state;
  fixture *f = fixture_new(6);
  /* Route 0 is wildcard and route 1 exact: routes still count in config
   * order, whichever way they were found. */
  route(f, NULL, EV("a.*"), TO(4, 2));
  route(f, NULL, EV("a.b"), TO(2, 0, 5, 0));
  route(f, NULL, EV("a.b", "a.*", "a.b"), TO(1, 4));
  route(f, NULL, EV("zzz"), TO(3));
  route(f, NULL, EV("a.b"), TO(3, 5));
  router *r = build(f);
  expect_match(r, NULL, "a.b", NULL, TO(4, 2, 0, 5, 1, 3));
  expect_match(r, NULL, "a.c", NULL, TO(4, 2, 1));

  /* A short out[] still gets the first ones, and the count of all. */
  size_t out[2];
  assert_int_equal(router_match(r, NULL, "a.b", NULL, out, 2), 6);
  assert_int_equal(out[0], 4);
  assert_int_equal(out[1], 2);
  assert_int_equal(router_match(r, NULL, "a.b", NULL, NULL, 0), 6);
  router_free(r);
  fixture_free(f);
}

static void test_many_instances(void **state) {
  (void)state;
  /* Instance indices past the stack bitmap use the slow dedup path, both
   * with a big enough out[] and with a short one. */
  fixture *f = fixture_new(5000);
  route(f, NULL, EV("e.*"), TO(4000, 7, 4000, 2000));
  route(f, NULL, EV("e.x"), TO(2000, 4999, 7));
  route(f, NULL, EV("nope"), TO(4500));
  route(f, NULL, EV("**"), TO(4500, 4000, 4999, 1));
  router *r = build(f);
  expect_match(r, NULL, "e.x", NULL, TO(4000, 7, 2000, 4999, 4500, 1));
  size_t out[1];
  assert_int_equal(router_match(r, NULL, "e.x", NULL, out, 1), 6);
  assert_int_equal(out[0], 4000);
  assert_int_equal(router_match(r, NULL, "e.x", NULL, NULL, 0), 6);
  assert_int_equal(router_match(r, NULL, "other", NULL, NULL, 0), 4);
  router_free(r);
  fixture_free(f);
}

static void test_many_exact_types(void **state) {
  (void)state;
  /* Enough distinct exact patterns to fill many hash slots. */
  static char names[200][16];
  fixture *f = fixture_new(200);
  f->cfg.routes = calloc(200, sizeof *f->cfg.routes);
  char **events = calloc(200, sizeof *events);
  size_t *to = calloc(200, sizeof *to);
  assert_non_null(f->cfg.routes);
  assert_non_null(events);
  assert_non_null(to);
  for (size_t i = 0; i < 200; i++) {
    snprintf(names[i], sizeof names[i], "type.%zu", i);
    events[i] = names[i];
    to[i] = 199 - i;
    f->cfg.routes[i].events = &events[i];
    f->cfg.routes[i].n_events = 1;
    f->cfg.routes[i].to = &to[i];
    f->cfg.routes[i].n_to = 1;
  }
  f->cfg.n_routes = 200;
  router *r = build(f);
  for (size_t i = 0; i < 200; i++) {
    size_t out[2];
    assert_int_equal(router_match(r, NULL, names[i], NULL, out, 2), 1);
    assert_int_equal(out[0], 199 - i);
  }
  assert_int_equal(router_match(r, NULL, "type.200", NULL, NULL, 0), 0);
  router_free(r);
  free(f->cfg.routes);
  free(events);
  free(to);
  fixture_free(f);
}

static void expect_bad(fixture *f, const char *want) {
  char err[256] = "";
  router *r = router_new(&f->cfg, err, sizeof err);
  if (r != NULL) {
    router_free(r);
    fail_msg("router_new accepted a bad config, expected '%s'", want);
  }
  assert_string_equal(err, want);
}

static void test_invalid_patterns(void **state) {
  (void)state;
  static const struct {
    const char *pattern;
    const char *err;
  } cases[] = {
      {"a.**.c", "routes[1].events[1]: '**' must be the last segment"},
      {"**.a", "routes[1].events[1]: '**' must be the last segment"},
      {"a..b", "routes[1].events[1]: empty segment"},
      {".a", "routes[1].events[1]: empty segment"},
      {"a.", "routes[1].events[1]: empty segment"},
      {"", "routes[1].events[1]: empty pattern"},
      {"a.b*", "routes[1].events[1]: '*' must be a whole segment"},
      {"a.***", "routes[1].events[1]: '*' must be a whole segment"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fixture *f = fixture_new(1);
    route(f, NULL, EV("ok.*"), TO(0));
    route(f, NULL, EV("fine", cases[i].pattern), TO(0));
    expect_bad(f, cases[i].err);
    fixture_free(f);
  }
}

static void test_invalid_routes(void **state) {
  (void)state;
  fixture *f = fixture_new(1);
  config_route *rt = route(f, NULL, EV("a"), TO(0));
  rt->keypath = "routes[0]";
  route(f, NULL, EV("b"), TO(0, 1));
  expect_bad(f, "routes[1].to[1]: no such plugin instance");
  fixture_free(f);

  f = fixture_new(1);
  rt = route(f, NULL, EV("a"), TO(0));
  rt->keypath = "routes[0]";
  rt->n_events = 0;
  expect_bad(f, "routes[0].events: no event patterns");
  fixture_free(f);

  f = fixture_new(1);
  rt = route(f, NULL, EV("a"), TO(0));
  when(f, rt, "data.x", "{\"k\":1}");
  expect_bad(f, "routes[0].when.data.x: expected a string, number, boolean or null");
  fixture_free(f);
}

static void test_empty_config(void **state) {
  (void)state;
  fixture *f = fixture_new(0);
  router *r = build(f);
  expect_match(r, "s", "anything", NULL, NONE);
  router_free(r);
  router_free(NULL);
  fixture_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pattern_match),          cmocka_unit_test(test_exact_and_wildcards),
      cmocka_unit_test(test_segment_count_mismatch), cmocka_unit_test(test_source_filter),
      cmocka_unit_test(test_when_on_payloads),       cmocka_unit_test(test_when_types_are_strict),
      cmocka_unit_test(test_dedup_and_order),        cmocka_unit_test(test_many_instances),
      cmocka_unit_test(test_many_exact_types),       cmocka_unit_test(test_invalid_patterns),
      cmocka_unit_test(test_invalid_routes),         cmocka_unit_test(test_empty_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
