/* Unit tests for dispatch.c with the SQLite spool and the real test plugin: ordering per key,
 * concurrency, retries and backoff, dead letters, hangs written off, shutdown. No daemon, no
 * sockets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "dispatch.h"
#include "envelope.h"
#include "event.h"
#include "log.h"
#include "plugin_host.h"
#include "plugin_instance.h" /* looks inside instances */
#include "spool.h"
#include "clock.h"

/* Generous: sanitizer builds on a loaded machine are slow. Every wait polls
 * for an observable result and gives up at the deadline. */
#define WAIT_MS 20000

/* Clocks are read in whole milliseconds (due times too), so a lower bound
 * on an elapsed time may come out this much short. */
#define SLACK_MS 2

static char tmpdir[] = "/tmp/hookd-test-dispatch-XXXXXX";
static int n_files;
static cJSON *base_payload; /* scheduling.smartscheduler.scheduled.json */

/* ---- small helpers ---- */

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return NULL;
  size_t cap = 4096, len = 0, n;
  char *buf = malloc(cap);
  assert_non_null(buf);
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 2) {
      cap *= 2;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
  }
  buf[len] = '\0';
  fclose(f);
  return buf;
}

/* Lines test_plugin wrote for deliver() calls (not OVERLAP or DESTROY). */
static size_t count_deliveries(const char *text) {
  size_t n = 0;
  for (const char *p = text; *p;) {
    const char *nl = strchr(p, '\n');
    if (nl == NULL) break; /* a line still being written */
    if (strncmp(p, "OVERLAP", 7) != 0 && strncmp(p, "DESTROY", 7) != 0) n++;
    p = nl + 1;
  }
  return n;
}

/* Waits until path holds at least n delivery lines; returns its text. */
static char *wait_deliveries(const char *path, size_t n) {
  int64_t end = clock_mono_ms() + WAIT_MS;
  for (;;) {
    char *text = read_file(path);
    if (text && count_deliveries(text) >= n) return text;
    if (clock_mono_ms() > end) {
      fail_msg("timed out waiting for %zu deliveries in %s; have:\n%s", n, path,
               text ? text : "(no file)");
    }
    free(text);
    sleep_ms(2);
  }
}

/* One line of test_plugin's out file. */
typedef struct rec {
  char id[64], type[96], key[64], result[16];
  unsigned attempt;
} rec;

/* Parses the delivery lines of text; fails on OVERLAP (two calls for one key
 * at once) or a malformed line. Returns the count; *out is malloc'd. */
static size_t parse_recs(const char *text, rec **out) {
  size_t cap = 16, n = 0;
  rec *r = malloc(cap * sizeof *r);
  assert_non_null(r);
  for (const char *p = text; *p;) {
    const char *nl = strchr(p, '\n');
    assert_non_null(nl);
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)(nl - p), p);
    p = nl + 1;
    if (strncmp(line, "OVERLAP", 7) == 0) fail_msg("two deliveries of one key at once: %s", line);
    if (strcmp(line, "DESTROY") == 0) continue;
    if (n == cap) {
      cap *= 2;
      r = realloc(r, cap * sizeof *r);
      assert_non_null(r);
    }
    if (sscanf(line, "%63s %95s %u %63s %15s", r[n].id, r[n].type, &r[n].attempt, r[n].key,
               r[n].result) != 5)
      fail_msg("malformed line: %s", line);
    n++;
  }
  *out = r;
  return n;
}

/* ---- the harness: config -> plugin host -> spool -> dispatcher ---- */

typedef struct harness {
  uv_loop_t loop;  /* only for the spool's answers; run by store() */
  uv_idle_t alive; /* the spool's async handle is unref'd: this keeps the loop polling */
  config cfg;
  plugin_host host;
  spool *sp;
  spool_lane *lanes[4];
  dispatch *dp;
  char out[4][PATH_MAX]; /* out file of instance i */
  int stored_calls;
  int stored_bad;
} harness;

static void on_idle(uv_idle_t *h) {
  (void)h;
}

static void on_stored(void *data, int status) {
  harness *h = data;
  h->stored_calls++;
  if (status != 0) h->stored_bad++;
}

/* Starts everything for `n` test_plugin instances. conf[i] is the inside of
 * instance i's "config" object and del[i] of its "delivery" object (with '
 * for "); the out key is added here. */
static void start(harness *h, size_t n, const char *const *conf, const char *const *del) {
  memset(h, 0, sizeof *h);
  char plugins[8192] = "", one[2048 + PATH_MAX];
  for (size_t i = 0; i < n; i++) {
    snprintf(h->out[i], sizeof h->out[i], "%s/out-%d", tmpdir, ++n_files);
    snprintf(one, sizeof one,
             "%s{'name': 'p%zu', 'module': 'test_plugin', 'config': {'out': '%s'%s%s}, "
             "'delivery': {%s}}\n",
             i ? "," : "", i, h->out[i], conf[i][0] ? ", " : "", conf[i], del[i]);
    strncat(plugins, one, sizeof plugins - strlen(plugins) - 1);
  }
  char text[16384];
  snprintf(text, sizeof text,
           "{'plugin_dirs': ['%s'], 'data_dir': '%s/var-%d',\n"
           " 'sources': [{'name': 's', 'path': '/h', 'verify': {'scheme': 'none'}}],\n"
           " 'plugins': [\n%s]}\n",
           PLUGIN_DIR, tmpdir, n_files + 1, plugins);
  for (char *p = text; *p; p++)
    if (*p == '\'') *p = '"';
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/hookd-%d.jsonc", tmpdir, ++n_files);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);

  char err[1024] = "";
  if (config_load(&h->cfg, path, err, sizeof err) != 0) fail_msg("config_load: %s", err);
  if (plugin_host_load(&h->host, &h->cfg, err, sizeof err) != 0)
    fail_msg("plugin_host_load: %s", err);
  uv_loop_init(&h->loop);
  uv_idle_init(&h->loop, &h->alive);
  uv_idle_start(&h->alive, on_idle);
  int code = 0;
  h->sp = spool_open(&h->cfg, &h->loop, &code, err, sizeof err);
  if (h->sp == NULL) fail_msg("spool_open: %s", err);
  for (size_t i = 0; i < n; i++) h->lanes[i] = spool_lane_get(h->sp, h->cfg.plugins[i].name);
  h->dp = dispatch_new(&h->host, h->sp, h->lanes, err, sizeof err);
  if (h->dp == NULL) fail_msg("dispatch_new: %s", err);
  if (spool_recover(h->sp, err, sizeof err) != 0) fail_msg("spool_recover: %s", err);
  dispatch_attach(h->dp);
}

/* One instance, shorthand. */
static void start1(harness *h, const char *conf, const char *del) {
  const char *c[1] = {conf}, *d[1] = {del};
  start(h, 1, c, d);
}

/* The spool's count of unfinished deliveries. */
static size_t spool_pending(spool *sp) {
  spool_stats st;
  spool_get_stats(sp, &st);
  return (size_t)st.pending;
}

/* Frees the spool and the loop of a stopped harness. */
static void close_spool(harness *h) {
  spool_free(h->sp);
  uv_close((uv_handle_t *)&h->alive, NULL);
  uv_run(&h->loop, UV_RUN_DEFAULT); /* the spool's async handle closes */
  uv_loop_close(&h->loop);
  config_free(&h->cfg);
}

/* Stops cleanly (nothing may hang) and frees everything; returns how many
 * deliveries were left unfinished in the spool. */
static size_t stop(harness *h) {
  unsigned char hung[4] = {0};
  dispatch_stop(h->dp, WAIT_MS, hung);
  for (size_t i = 0; i < h->host.n_insts; i++) assert_int_equal(hung[i], 0);
  size_t left = spool_pending(h->sp);
  dispatch_free(h->dp);
  plugin_host_unload(&h->host, NULL);
  close_spool(h);
  return left;
}

/* Stores one event (a copy of the base payload with eventId = id and
 * data.id = key, or no data.id when key is NULL) for the given instances.
 * The caller flushes. */
static void store(harness *h, const char *id, const char *key, const size_t *insts, size_t n) {
  cJSON *doc = cJSON_Duplicate(base_payload, 1);
  assert_non_null(doc);
  cJSON_ReplaceItemInObject(doc, "eventId", cJSON_CreateString(id));
  cJSON *data = cJSON_GetObjectItem(doc, "data");
  if (key) {
    cJSON_ReplaceItemInObject(data, "id", cJSON_CreateString(key));
  } else {
    cJSON_DeleteItemFromObject(data, "id");
  }
  char *body = cJSON_PrintUnformatted(doc);
  cJSON_Delete(doc);
  assert_non_null(body);
  envelope env;
  const char *reason = NULL;
  if (envelope_decode(&h->cfg.sources[0].envelope, body, strlen(body), &env, &reason) != 0)
    fail_msg("envelope_decode: %s", reason);
  if (key) {
    assert_string_equal(env.order_key, key);
  } else {
    assert_null(env.order_key);
  }
  event *ev = event_new("s", env.id, env.type, env.order_key, "application/json", body,
                        strlen(body), env.root, clock_now_ms());
  assert_non_null(ev);
  env.root = NULL; /* the event owns it */
  envelope_clear(&env);
  free(body);
  int calls = h->stored_calls;
  spool_lane *lanes[4];
  for (size_t i = 0; i < n && i < 4; i++) lanes[i] = h->lanes[insts[i]];
  assert_int_equal(spool_store(h->sp, ev, lanes, n, on_stored, h), 0);
  /* The answer comes from the spool's writer thread through the loop. */
  int64_t end = clock_mono_ms() + WAIT_MS;
  while (h->stored_calls == calls) {
    if (clock_mono_ms() > end) fail_msg("the spool did not answer within %d ms", WAIT_MS);
    uv_run(&h->loop, UV_RUN_NOWAIT);
    sleep_ms(1);
  }
  assert_int_equal(h->stored_calls, calls + 1);
  assert_int_equal(h->stored_bad, 0);
  event_unref(ev);
}

static void store0(harness *h, const char *id, const char *key) {
  static const size_t inst0[] = {0};
  store(h, id, key, inst0, 1);
}

static void wait_pending(harness *h, size_t n) {
  int64_t end = clock_mono_ms() + WAIT_MS;
  while (spool_pending(h->sp) != n) {
    if (clock_mono_ms() > end)
      fail_msg("spool_pending stayed %zu, expected %zu", spool_pending(h->sp), n);
    sleep_ms(2);
  }
}

/* Waits until instance i has `want` deliver() calls running (not written
 * off): how a test knows a call is in progress. */
static void wait_running(harness *h, size_t i, uint32_t want) {
  int64_t end = clock_mono_ms() + WAIT_MS;
  for (;;) {
    dispatch_instance_stats st;
    dispatch_instance_get(h->dp, i, &st);
    if (st.running >= want) break;
    if (clock_mono_ms() > end) fail_msg("no deliver() seen running");
    sleep_ms(1);
  }
}

/* Calls dispatch_check_timeouts (as the daemon does every second) until
 * instance i has written off `want` calls. */
static void wait_written_off(harness *h, size_t i, uint64_t want) {
  int64_t end = clock_mono_ms() + WAIT_MS;
  for (;;) {
    dispatch_check_timeouts(h->dp);
    dispatch_instance_stats st;
    dispatch_instance_get(h->dp, i, &st);
    if (st.written_off >= want) break;
    if (clock_mono_ms() > end) fail_msg("no deliver() written off");
    sleep_ms(1);
  }
}

static const char *TYPE = "scheduling.smartscheduler.scheduled";

static void expect_rec(const rec *r, const char *id, unsigned attempt, const char *key,
                       const char *result) {
  assert_string_equal(r->id, id);
  assert_string_equal(r->type, TYPE);
  assert_int_equal(r->attempt, attempt);
  assert_string_equal(r->key, key);
  assert_string_equal(r->result, result);
}

static int group_setup(void **state) {
  (void)state;
  log_setup(HLOG_ERROR, HLOG_FORMAT_TEXT);
  char *raw = read_file(PAYLOAD_DIR "/scheduling.smartscheduler.scheduled.json");
  if (raw == NULL) return -1;
  base_payload = cJSON_Parse(raw);
  free(raw);
  return base_payload && mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static int group_teardown(void **state) {
  (void)state;
  cJSON_Delete(base_payload);
  /* Spool directories included: depth first. */
  return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- ordering and concurrency ---- */

#define KEYS 10
#define PER_KEY 10
#define UNKEYED 10

/* 10 keys x 10 events, interleaved, over 4 workers: every key's events reach
 * deliver() in accept order, never two of one key at once (test_plugin
 * writes OVERLAP), each exactly once. Unkeyed events are delivered too. */
static void test_order_per_key(void **state) {
  (void)state;
  harness h;
  start1(&h, "'sleep_ms': 2", "'concurrency': 4");
  char id[64], key[64];
  for (int e = 0; e < PER_KEY; e++) {
    for (int k = 0; k < KEYS; k++) {
      snprintf(id, sizeof id, "k%d-e%d", k, e);
      snprintf(key, sizeof key, "key-%d", k);
      store0(&h, id, key);
    }
    snprintf(id, sizeof id, "nokey-%d", e);
    store0(&h, id, NULL);
    /* Flush in a few batches so deliveries arrive while workers run. */
  }
  size_t total = KEYS * PER_KEY + UNKEYED;
  char *text = wait_deliveries(h.out[0], total);
  wait_pending(&h, 0);

  rec *r;
  size_t n = parse_recs(text, &r);
  assert_int_equal(n, total);
  int next[KEYS] = {0}, unkeyed_seen[UNKEYED] = {0};
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(r[i].type, TYPE);
    assert_int_equal(r[i].attempt, 1);
    assert_string_equal(r[i].result, "ok");
    int k, e;
    if (sscanf(r[i].id, "k%d-e%d", &k, &e) == 2) {
      snprintf(key, sizeof key, "key-%d", k);
      assert_string_equal(r[i].key, key);
      if (e != next[k]) fail_msg("key %d: event %d delivered when %d was next", k, e, next[k]);
      next[k]++;
    } else {
      assert_int_equal(sscanf(r[i].id, "nokey-%d", &e), 1);
      assert_string_equal(r[i].key, "-");
      assert_int_equal(unkeyed_seen[e], 0);
      unkeyed_seen[e] = 1;
    }
  }
  for (int k = 0; k < KEYS; k++) assert_int_equal(next[k], PER_KEY);
  for (int e = 0; e < UNKEYED; e++) assert_int_equal(unkeyed_seen[e], 1);
  free(r);
  free(text);
  const plugin_instance *inst = &h.host.insts[0];
  assert_int_equal(METRICS_GET(inst->m.ok), total);
  assert_int_equal(METRICS_GET(inst->m.retry), 0);
  assert_int_equal(METRICS_GET(inst->m.dead), 0);
  assert_int_equal(METRICS_GET(inst->m.queued), 0);
  assert_int_equal(stop(&h), 0);
}

/* Different keys run on different workers at once; one key's events never
 * do. Timing lower bounds only: 4 x 300 ms in parallel must beat the 1200
 * ms they would take one after another, and 3 x 100 ms of one key cannot
 * take less than 300 ms. */
static void test_keys_run_in_parallel(void **state) {
  (void)state;
  harness h;
  start1(&h, "'sleep_ms': 300", "'concurrency': 4");
  int64_t t0 = clock_mono_ms();
  store0(&h, "a", "ka");
  store0(&h, "b", "kb");
  store0(&h, "c", "kc");
  store0(&h, "d", "kd");
  free(wait_deliveries(h.out[0], 4));
  int64_t took = clock_mono_ms() - t0;
  if (took >= 1200) fail_msg("4 keys on 4 workers took %lld ms: not in parallel", (long long)took);
  wait_pending(&h, 0);
  assert_int_equal(stop(&h), 0);

  start1(&h, "'sleep_ms': 100", "'concurrency': 4");
  t0 = clock_mono_ms();
  store0(&h, "a1", "k");
  store0(&h, "a2", "k");
  store0(&h, "a3", "k");
  char *text = wait_deliveries(h.out[0], 3);
  took = clock_mono_ms() - t0;
  if (took < 300 - SLACK_MS) fail_msg("3 x 100 ms of one key took %lld ms", (long long)took);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 3);
  expect_rec(&r[0], "a1", 1, "k", "ok");
  expect_rec(&r[1], "a2", 1, "k", "ok");
  expect_rec(&r[2], "a3", 1, "k", "ok");
  free(r);
  free(text);
  wait_pending(&h, 0);
  assert_int_equal(stop(&h), 0);
}

/* Each instance has its own queue: a slow instance does not hold back a
 * fast one, and one event routed to both reaches both. */
static void test_instances_independent(void **state) {
  (void)state;
  harness h;
  const char *conf[2] = {"'sleep_ms': 1500", ""};
  const char *del[2] = {"'concurrency': 1", "'concurrency': 1"};
  start(&h, 2, conf, del);
  static const size_t both[] = {0, 1};
  store(&h, "e1", "k", both, 2);
  /* Deliveries reach their lanes as soon as they are committed, so the
   * fast one may be done already. */
  assert_true(spool_pending(h.sp) >= 1);
  char *fast = wait_deliveries(h.out[1], 1);
  char *slow = read_file(h.out[0]);
  assert_non_null(slow);
  assert_int_equal(count_deliveries(slow), 0); /* still sleeping */
  free(slow);
  rec *r;
  assert_int_equal(parse_recs(fast, &r), 1);
  expect_rec(&r[0], "e1", 1, "k", "ok");
  free(r);
  free(fast);
  slow = wait_deliveries(h.out[0], 1);
  assert_int_equal(parse_recs(slow, &r), 1);
  expect_rec(&r[0], "e1", 1, "k", "ok");
  free(r);
  free(slow);
  wait_pending(&h, 0);
  assert_int_equal(stop(&h), 0);
}

/* ---- retries, backoff and dead letters ---- */

/* RETRY twice, then OK: attempts 1, 2, 3 with hookd's backoff in between
 * (equal jitter: at least half of 20 ms, then half of 40 ms). */
static void test_retry_then_ok(void **state) {
  (void)state;
  harness h;
  start1(&h, "'retry_times': 2",
         "'concurrency': 2, 'backoff_initial_ms': 20, 'backoff_max_ms': 1000");
  int64_t t0 = clock_mono_ms();
  store0(&h, "r1", "k1");
  char *text = wait_deliveries(h.out[0], 3);
  int64_t took = clock_mono_ms() - t0;
  wait_pending(&h, 0);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 3);
  expect_rec(&r[0], "r1", 1, "k1", "retry");
  expect_rec(&r[1], "r1", 2, "k1", "retry");
  expect_rec(&r[2], "r1", 3, "k1", "ok");
  free(r);
  free(text);
  if (took < 10 + 20 - SLACK_MS)
    fail_msg("two retries came after %lld ms: backoff not applied", (long long)took);
  const plugin_instance *inst = &h.host.insts[0];
  assert_int_equal(METRICS_GET(inst->m.retry), 2);
  assert_int_equal(METRICS_GET(inst->m.ok), 1);
  assert_int_equal(METRICS_GET(inst->m.dead), 0);
  assert_int_equal(stop(&h), 0);
}

/* The plugin's retry_after_ms is used instead of the backoff, but never
 * beyond backoff_max_ms. */
static void test_retry_after(void **state) {
  (void)state;
  harness h;
  start1(&h, "'retry_times': 1, 'retry_after_ms': 300",
         "'backoff_initial_ms': 1, 'backoff_max_ms': 10000");
  int64_t t0 = clock_mono_ms();
  store0(&h, "ra", "k");
  free(wait_deliveries(h.out[0], 2));
  int64_t took = clock_mono_ms() - t0;
  if (took < 300 - SLACK_MS) fail_msg("retry_after_ms 300 ignored: %lld ms", (long long)took);
  wait_pending(&h, 0);
  assert_int_equal(stop(&h), 0);

  /* Asking for 60 s with backoff_max_ms 100: the retry comes after ~100 ms. */
  start1(&h, "'retry_times': 1, 'retry_after_ms': 60000",
         "'backoff_initial_ms': 1, 'backoff_max_ms': 100");
  t0 = clock_mono_ms();
  store0(&h, "rb", "k");
  char *text = wait_deliveries(h.out[0], 2);
  took = clock_mono_ms() - t0;
  if (took < 100 - SLACK_MS)
    fail_msg("retry came after %lld ms, before backoff_max_ms", (long long)took);
  if (took > 10000) fail_msg("retry_after_ms not capped: %lld ms", (long long)took);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 2);
  expect_rec(&r[0], "rb", 1, "k", "retry");
  expect_rec(&r[1], "rb", 2, "k", "ok");
  free(r);
  free(text);
  wait_pending(&h, 0);
  assert_int_equal(stop(&h), 0);
}

/* FAIL is final: one attempt, a dead letter, nothing pending. */
static void test_fail_is_final(void **state) {
  (void)state;
  harness h;
  start1(&h, "'result': 'fail'", "'backoff_initial_ms': 1, 'backoff_max_ms': 5");
  store0(&h, "f1", "k");
  store0(&h, "f2", NULL);
  wait_pending(&h, 0);
  /* Nothing is left that could run again: the file is final. */
  assert_int_equal(stop(&h), 0);
  char *text = read_file(h.out[0]);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 2);
  const rec *a = strcmp(r[0].id, "f1") == 0 ? &r[0] : &r[1];
  const rec *b = a == &r[0] ? &r[1] : &r[0];
  expect_rec(a, "f1", 1, "k", "fail");
  expect_rec(b, "f2", 1, "-", "fail");
  free(r);
  free(text);
}

/* A plugin returning something that is not a hookd_result is a permanent
 * failure, not a retry. */
static void test_garbage_result_is_final(void **state) {
  (void)state;
  harness h;
  start1(&h, "'result': 'garbage'", "'backoff_initial_ms': 1, 'backoff_max_ms': 5");
  store0(&h, "g1", "k");
  wait_pending(&h, 0);
  assert_int_equal(METRICS_GET(h.host.insts[0].m.dead), 1);
  assert_int_equal(METRICS_GET(h.host.insts[0].m.ok), 0);
  assert_int_equal(stop(&h), 0);
  char *text = read_file(h.out[0]);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 1);
  expect_rec(&r[0], "g1", 1, "k", "garbage");
  free(r);
  free(text);
}

/* Always RETRY with max_attempts 3: attempts 1, 2, 3, then a dead letter;
 * the next event of the key then runs. */
static void test_max_attempts(void **state) {
  (void)state;
  harness h;
  start1(&h, "'result': 'retry'",
         "'max_attempts': 3, 'backoff_initial_ms': 5, 'backoff_max_ms': 20");
  store0(&h, "m1", "k");
  store0(&h, "m2", "k");
  wait_pending(&h, 0);
  assert_int_equal(stop(&h), 0);
  char *text = read_file(h.out[0]);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 6);
  for (unsigned i = 0; i < 3; i++) expect_rec(&r[i], "m1", i + 1, "k", "retry");
  for (unsigned i = 0; i < 3; i++) expect_rec(&r[3 + i], "m2", i + 1, "k", "retry");
  free(r);
  free(text);
  /* stop() unloaded the instance, so the counters are gone; the file is the
   * evidence. */
}

/* A retrying head holds back the later events of its key, while other keys
 * go on, even on a single worker: A1 fails once and waits 400 ms; A2 must
 * not start before A1 succeeded, and B1 (stored while A1 waits) runs at
 * once. */
static void test_retry_holds_back_its_key(void **state) {
  (void)state;
  harness h;
  start1(&h, "'retry_times': 1, 'retry_after_ms': 400",
         "'concurrency': 1, 'backoff_max_ms': 10000");
  store0(&h, "A1", "ka");
  store0(&h, "A2", "ka");
  free(wait_deliveries(h.out[0], 1)); /* A1's first attempt: retry */
  store0(&h, "B1", "kb");
  char *text = wait_deliveries(h.out[0], 6);
  wait_pending(&h, 0);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 6);
  /* Positions of each (id, attempt). */
  int pos[3][2];
  const char *ids[3] = {"A1", "A2", "B1"};
  memset(pos, -1, sizeof pos);
  for (int i = 0; i < 6; i++) {
    for (int j = 0; j < 3; j++) {
      if (strcmp(r[i].id, ids[j]) == 0) {
        assert_true(r[i].attempt == 1 || r[i].attempt == 2);
        assert_int_equal(pos[j][r[i].attempt - 1], -1);
        pos[j][r[i].attempt - 1] = i;
        assert_string_equal(r[i].result, r[i].attempt == 1 ? "retry" : "ok");
      }
    }
  }
  for (int j = 0; j < 3; j++) assert_true(pos[j][0] >= 0 && pos[j][1] >= 0);
  assert_int_equal(pos[0][0], 0); /* A1 first */
  /* A2 only after A1 succeeded. */
  if (pos[1][0] < pos[0][1]) fail_msg("A2 ran before A1 was done:\n%s", text);
  /* B1 did not wait for A1's retry. */
  if (pos[2][0] > pos[0][1]) fail_msg("B1 waited behind A1's retry:\n%s", text);
  free(r);
  free(text);
  assert_int_equal(stop(&h), 0);
}

/* ---- hangs and shutdown ---- */

/* A deliver() past timeout_ms is written off once: its attempt counts as
 * failed, a replacement worker runs the retry (concurrency 1: nothing else
 * could), and the late result of the stuck call is ignored. */
static void test_timeout_writes_off(void **state) {
  (void)state;
  harness h;
  start1(&h, "'sleep_ms': 600, 'sleep_attempts': 1",
         "'timeout_ms': 50, 'concurrency': 1, 'backoff_initial_ms': 1, 'backoff_max_ms': 2");
  int64_t t0 = clock_mono_ms();
  /* Unkeyed: attempt 2 overlaps the stuck attempt 1 by design (plugin.h),
   * which test_plugin would report as an OVERLAP of a key. */
  store0(&h, "t1", NULL);
  wait_running(&h, 0, 1);
  wait_written_off(&h, 0, 1);
  if (clock_mono_ms() - t0 <= 50) fail_msg("written off before timeout_ms");
  /* attempt 2 runs and finishes while attempt 1 still sleeps */
  char *text = wait_deliveries(h.out[0], 1);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 1);
  expect_rec(&r[0], "t1", 2, "-", "ok");
  free(r);
  free(text);
  wait_pending(&h, 0);
  for (int i = 0; i < 20; i++) {
    dispatch_check_timeouts(h.dp);
    sleep_ms(5);
  }
  dispatch_instance_stats st;
  dispatch_instance_get(h.dp, 0, &st);
  assert_int_equal(st.written_off, 1);
  assert_int_equal(st.stuck, 1);
  assert_int_equal(METRICS_GET(h.host.insts[0].m.timeouts), 1);
  /* the stuck call returns: its line appears, its result is not counted */
  free(wait_deliveries(h.out[0], 2));
  int64_t end = clock_mono_ms() + WAIT_MS;
  do {
    dispatch_instance_get(h.dp, 0, &st);
    if (clock_mono_ms() > end) fail_msg("the stuck worker never left");
    sleep_ms(2);
  } while (st.stuck != 0);
  assert_int_equal(METRICS_GET(h.host.insts[0].m.ok), 1);
  assert_int_equal(stop(&h), 0);

  /* A fast delivery is never written off. */
  start1(&h, "", "'timeout_ms': 10000");
  store0(&h, "t3", "k");
  free(wait_deliveries(h.out[0], 1));
  wait_pending(&h, 0);
  dispatch_check_timeouts(h.dp);
  assert_int_equal(METRICS_GET(h.host.insts[0].m.timeouts), 0);
  assert_int_equal(stop(&h), 0);
}

/* More stuck calls than the instance's concurrency: it stops taking
 * deliveries and says so; when one returns it goes on. */
static void test_stuck_cap_makes_the_instance_unhealthy(void **state) {
  (void)state;
  harness h;
  start1(&h, "'sleep_ms': 700, 'sleep_attempts': 1",
         "'timeout_ms': 30, 'concurrency': 1, 'backoff_initial_ms': 1, 'backoff_max_ms': 2");
  char why[256];
  store0(&h, "a1", "a");
  wait_written_off(&h, 0, 1); /* stuck 1 = the cap: a replacement runs */
  assert_null(dispatch_unhealthy(h.dp, why, sizeof why));
  store0(&h, "b1", "b"); /* attempt 1 of b sleeps too: past the cap */
  wait_written_off(&h, 0, 2);
  int64_t end = clock_mono_ms() + WAIT_MS;
  while (dispatch_unhealthy(h.dp, why, sizeof why) == NULL) {
    if (clock_mono_ms() > end) fail_msg("the instance never said it is unhealthy");
    dispatch_check_timeouts(h.dp);
    sleep_ms(2);
  }
  assert_non_null(strstr(why, "stuck past timeout_ms"));
  /* the stuck calls return; the instance recovers and delivers both */
  wait_pending(&h, 0);
  assert_null(dispatch_unhealthy(h.dp, why, sizeof why));
  end = clock_mono_ms() + WAIT_MS;
  dispatch_instance_stats st;
  do {
    dispatch_instance_get(h.dp, 0, &st);
    if (clock_mono_ms() > end) fail_msg("stuck workers never left");
    sleep_ms(2);
  } while (st.stuck != 0);
  assert_int_equal(stop(&h), 0);
}

/* dispatch_stop lets a running deliver() finish and starts nothing new. */
static void test_stop_waits_for_running(void **state) {
  (void)state;
  harness h;
  start1(&h, "'sleep_ms': 300", "'concurrency': 2");
  store0(&h, "s1", "k");
  store0(&h, "s2", "k");
  store0(&h, "s3", "k");
  wait_running(&h, 0, 1); /* s1 is in deliver() now */
  unsigned char hung[1] = {0};
  dispatch_stop(h.dp, WAIT_MS, hung);
  assert_int_equal(hung[0], 0);
  /* s1 finished before dispatch_stop returned; s2 and s3 never started. */
  char *text = read_file(h.out[0]);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 1);
  expect_rec(&r[0], "s1", 1, "k", "ok");
  free(r);
  free(text);
  assert_int_equal(spool_pending(h.sp), 2);
  dispatch_free(h.dp);
  plugin_host_unload(&h.host, NULL);
  text = read_file(h.out[0]);
  assert_non_null(strstr(text, "s1 "));
  assert_non_null(strstr(text, "\nDESTROY\n"));
  free(text);
  close_spool(&h);
}

/* A deliver() that outlives the shutdown timeout: dispatch_stop returns on
 * time and marks its instance hung, and dispatch_busy says so until the
 * worker finishes on its own; only then is anything freed. */
static void test_stop_detects_hung(void **state) {
  (void)state;
  harness h;
  start1(&h, "'sleep_ms': 2000", "'concurrency': 1");
  store0(&h, "h1", "k");
  wait_running(&h, 0, 1);
  unsigned char hung[1] = {0};
  int64_t t0 = clock_mono_ms();
  dispatch_stop(h.dp, 200, hung);
  int64_t took = clock_mono_ms() - t0;
  assert_int_equal(hung[0], 1);
  assert_int_equal(spool_pending(h.sp), 1); /* the running delivery is not done */
  if (took < 150 || took > 1500) fail_msg("dispatch_stop(200 ms) took %lld ms", (long long)took);
  char *text = read_file(h.out[0]);
  assert_int_equal(count_deliveries(text), 0);
  free(text);

  /* Let it finish: its line appears, then its thread exits. */
  text = wait_deliveries(h.out[0], 1);
  rec *r;
  assert_int_equal(parse_recs(text, &r), 1);
  expect_rec(&r[0], "h1", 1, "k", "ok");
  free(r);
  free(text);
  int64_t end = clock_mono_ms() + WAIT_MS;
  while (dispatch_busy(h.dp)) {
    if (clock_mono_ms() > end) fail_msg("the hung worker never exited");
    sleep_ms(2);
  }
  wait_pending(&h, 0);
  /* Only now is it safe to free what the worker used. */
  dispatch_free(h.dp);
  plugin_host_unload(&h.host, NULL);
  close_spool(&h);
}

/* An optional argument runs only the tests whose names match it (cmocka
 * pattern: * and ?). */
int main(int argc, char **argv) {
  if (argc > 1) cmocka_set_test_filter(argv[1]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_order_per_key),
      cmocka_unit_test(test_keys_run_in_parallel),
      cmocka_unit_test(test_instances_independent),
      cmocka_unit_test(test_retry_then_ok),
      cmocka_unit_test(test_retry_after),
      cmocka_unit_test(test_fail_is_final),
      cmocka_unit_test(test_garbage_result_is_final),
      cmocka_unit_test(test_max_attempts),
      cmocka_unit_test(test_retry_holds_back_its_key),
      cmocka_unit_test(test_timeout_writes_off),
      cmocka_unit_test(test_stuck_cap_makes_the_instance_unhealthy),
      cmocka_unit_test(test_stop_waits_for_running),
      cmocka_unit_test(test_stop_detects_hung),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
