/* Test-only plugin with configurable behaviour: records deliveries, retries, fails, sleeps, returns garbage. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include <hookd/plugin.h>

#include "running_keys.h"

/*
 * config keys:
 *   out            file to append one line per deliver() call:
 *                  "<id> <type> <attempt> <order_key|-> <result>\n"
 *   result         "ok" (default) | "retry" | "fail" | "garbage"
 *   retry_times    with result ok: answer RETRY this many times per event first
 *   retry_after_ms with RETRY: ask for this delay
 *   sleep_ms       sleep this long in every deliver()
 *   init_fail      true: init fails with a message
 *   render         a template rendered (JSON escaping) into the line instead of the type
 *   sleep_attempts with sleep_ms: sleep only in attempts up to this one (0: every attempt)
 *   retry_pct      answer RETRY to this percentage of calls, at random
 *   poison         event ids on which poison_action happens (a line
 *                  "POISON <id> <attempt>" is written first)
 *   poison_action  "segv" (default) | "abort" | "hang" (sleeps hang_ms, default forever)
 *   hang_ms        see poison_action
 *   poison_attempts poison only in attempts up to this one (0: every attempt)
 *   mark_init      true: write "INIT <pid>" when the instance starts (a
 *                  process life begins)
 *   trace_start    true: also write "START <id> <order_key|->\n" when deliver() begins, so
 *                  that several processes appending to one file show any overlap per key
 * A delivery that starts while another with the same order key runs writes
 * an "OVERLAP" line: the ordering tests look for it.
 */

typedef struct tp {
  const hookd_host_api *host;
  hookd_instance *self;
  FILE *out;
  const char *result;
  int64_t retry_times, retry_after_ms, sleep_ms, sleep_attempts, retry_pct, hang_ms,
      poison_attempts;
  const char *const *poison;
  size_t n_poison;
  const char *poison_action;
  int trace_start;
  hookd_template *render;
  running_keys running; /* order keys in deliver() now: overlaps are reported */
} tp;

static int tp_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                   void **state, char *err, size_t errlen) {
  static const char *const keys[] = {"out",      "result",        "retry_times",
                                     "retry_after_ms", "sleep_ms", "init_fail",
                                     "render",   "sleep_attempts", "retry_pct",
                                     "poison",   "poison_action", "hang_ms",
                                     "poison_attempts", "mark_init", "trace_start", NULL};
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK) return -1;
  int init_fail = 0;
  host->config_bool(cfg, "init_fail", 0, &init_fail);
  if (init_fail) {
    snprintf(err, errlen, "told to fail (init_fail is true)");
    return -1;
  }
  tp *t = calloc(1, sizeof *t);
  if (t == NULL) return -1;
  t->host = host;
  t->self = self;
  const char *out = NULL;
  if (host->config_path(cfg, "out", NULL, &out) < 0 ||
      host->config_string(cfg, "result", "ok", &t->result) < 0 ||
      host->config_int(cfg, "retry_times", 0, &t->retry_times) < 0 ||
      host->config_int(cfg, "retry_after_ms", 0, &t->retry_after_ms) < 0 ||
      host->config_int(cfg, "sleep_ms", 0, &t->sleep_ms) < 0 ||
      host->config_template(cfg, "render", NULL, &t->render) < 0 ||
      host->config_int(cfg, "sleep_attempts", 0, &t->sleep_attempts) < 0 ||
      host->config_int(cfg, "retry_pct", 0, &t->retry_pct) < 0 ||
      host->config_int(cfg, "hang_ms", -1, &t->hang_ms) < 0 ||
      host->config_string(cfg, "poison_action", "segv", &t->poison_action) < 0 ||
      host->config_string_list(cfg, "poison", &t->poison, &t->n_poison) < 0 ||
      host->config_int(cfg, "poison_attempts", 0, &t->poison_attempts) < 0 ||
      host->config_bool(cfg, "trace_start", 0, &t->trace_start) < 0) {
    free(t);
    return -1;
  }
  if (out && (t->out = fopen(out, "a")) == NULL) {
    snprintf(err, errlen, "cannot open %s", out);
    free(t);
    return -1;
  }
  if (t->out) setvbuf(t->out, NULL, _IOLBF, 0);
  int mark_init = 0;
  host->config_bool(cfg, "mark_init", 0, &mark_init);
  if (mark_init && t->out) fprintf(t->out, "INIT %ld\n", (long)getpid());
  running_keys_init(&t->running);
  *state = t;
  return 0;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* The poison: crash or hang on a chosen event, after saying so. */
static void poison(tp *t, const hookd_event *ev) {
  if (t->poison_attempts > 0 && (int64_t)ev->attempt > t->poison_attempts) return;
  for (size_t i = 0; i < t->n_poison; i++) {
    if (strcmp(t->poison[i], ev->id) != 0) continue;
    if (t->out) {
      fprintf(t->out, "POISON %s %u\n", ev->id, ev->attempt);
      fflush(t->out);
    }
    if (strcmp(t->poison_action, "abort") == 0) abort();
    if (strcmp(t->poison_action, "hang") == 0) {
      if (t->hang_ms >= 0) {
        sleep_ms(t->hang_ms);
        return;
      }
      for (;;) sleep_ms(3600000);
    }
    /* A real fault, on a page mapped without access (a store through NULL
     * would be caught by UBSan before it faults). */
    void *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *(volatile int *)page = 1;
  }
}

static hookd_result tp_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  tp *t = state;
  const char *key = ev->order_key ? ev->order_key : "-";
  if (t->trace_start && t->out) fprintf(t->out, "START %s %s\n", ev->id, key);
  if (ev->order_key && running_keys_enter(&t->running, ev->order_key) && t->out)
    fprintf(t->out, "OVERLAP %s\n", key);
  poison(t, ev);
  if (t->sleep_ms > 0 && (t->sleep_attempts == 0 || (int64_t)ev->attempt <= t->sleep_attempts)) {
    sleep_ms(t->sleep_ms);
  }
  hookd_result r = HOOKD_OK;
  const char *name = "ok";
  if (strcmp(t->result, "retry") == 0 ||
      (strcmp(t->result, "ok") == 0 && (int64_t)ev->attempt <= t->retry_times) ||
      (t->retry_pct > 0 && rand() % 100 < t->retry_pct)) {
    r = HOOKD_RETRY;
    name = "retry";
    out->retry_after_ms = (uint32_t)t->retry_after_ms;
    snprintf(out->message, sizeof out->message, "test plugin says retry");
  } else if (strcmp(t->result, "fail") == 0) {
    r = HOOKD_FAIL;
    name = "fail";
    snprintf(out->message, sizeof out->message, "test plugin says fail");
  } else if (strcmp(t->result, "garbage") == 0) {
    r = (hookd_result)42;
    name = "garbage";
  }
  if (t->out) {
    char *text = t->render ? t->host->render(t->render, ev, HOOKD_ESC_JSON, NULL) : NULL;
    fprintf(t->out, "%s %s %u %s %s\n", ev->id, text ? text : ev->type, ev->attempt, key, name);
    t->host->free(text);
  }
  t->host->log(t->self, ev, HOOKD_LOG_DEBUG, "test plugin: %s", name);
  if (ev->order_key) running_keys_leave(&t->running, ev->order_key);
  return r;
}

static void tp_destroy(void *state) {
  tp *t = state;
  if (t->out) {
    fprintf(t->out, "DESTROY\n");
    fclose(t->out);
  }
  t->host->template_free(t->render);
  running_keys_clear(&t->running);
  free(t);
}

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "test_plugin",
    .version = "0.0.1",
    .description = "test-only plugin with configurable behaviour",
    .init = tp_init,
    .deliver = tp_deliver,
    .destroy = tp_destroy,
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return &descriptor;
}
