/* Dispatcher: per-instance worker threads that claim from spool lanes, run deliver(), and settle:
 * retries, backoff, dead letters, crashes, hangs. */
#include "dispatch.h"
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crash.h"
#include "http_client.h"
#include "log.h"
#include "pace.h"
#include "runslots.h"
#include "scrub.h"
#include "clock.h"

/* One worker thread. Threads are detached: a worker frees its record when
 * it exits, and the queue counts the live ones. */
typedef struct worker {
  struct iqueue *q;
  delivery *d;     /* in deliver() now, or NULL */
  int64_t started; /* mono ms when the call began */
  int written_off; /* the call passed timeout_ms: its delivery was settled
                      without it and its result is ignored */
  int probe;       /* the call is the circuit breaker's probe */
  int64_t wall;    /* Unix ms when the call began (attempt records) */
  struct worker *next;
} worker;

typedef struct iqueue {
  dispatch *dp;
  plugin_instance *inst;
  const char *name;                /* the instance's, for logs and pacing */
  metrics_instance *m;             /* its counters */
  const config_delivery *delivery; /* its delivery settings */
  spool_lane *lane;
  pace *pace;       /* the instance name's rate, hold and breaker */
  pace_state state; /* as dispatch_observe last saw it (its caller's thread) */
  pthread_mutex_t mu;
  pthread_cond_t cv;      /* wakes workers: work, stop */
  pthread_cond_t exit_cv; /* a worker exited */
  int woken;              /* a wake came since the last claim */
  int stopping;
  int attached;         /* the queue owns its lane (dispatch_attach) */
  int lost;             /* a newer generation took the lane over */
  int unhealthy;        /* stuck workers reached the cap: no claims */
  worker *workers;      /* every thread that has not exited */
  size_t live;          /* threads that have not exited */
  size_t active;        /* of which not written off */
  size_t stuck;         /* written off and still inside deliver() */
  uint64_t written_off; /* since start */
} iqueue;

struct dispatch {
  plugin_host *host;
  spool *sp;
  iqueue *qs;
  size_t n_qs;
};

/* deliver() calls running now and not written off. Caller holds q->mu. */
static size_t running_calls(const iqueue *q) {
  size_t n = 0;
  for (const worker *w = q->workers; w; w = w->next) n += w->d != NULL;
  return n;
}

/* --- outcomes ------------------------------------------------------------- */

static uint64_t rand64(void) {
  static _Thread_local uint64_t s;
  if (s == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&s ^ 0x9e3779b97f4a7c15ull;
  }
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

/* Exponential backoff with "equal jitter": half the step is fixed, half
 * random, so retries spread out but never come sooner than half the step. */
static int64_t backoff_ms(const config_delivery *c, uint32_t attempt) {
  uint64_t step = c->backoff_initial_ms;
  for (uint32_t i = 1; i < attempt && step < c->backoff_max_ms; i++) step *= 2;
  if (step > c->backoff_max_ms) step = c->backoff_max_ms;
  uint64_t half = step / 2;
  return (int64_t)(step - half + (half ? rand64() % (half + 1) : 0));
}

/* What one attempt came to, for settle(). */
typedef struct attempt_result {
  int r;                   /* hookd_result or PLUGIN_* */
  const char *msg;         /* why it failed */
  uint32_t retry_after_ms; /* the plugin's wish, 0 for hookd's backoff */
  int64_t took_ms;
  int64_t started_ms; /* Unix ms when the call began */
  int probe;          /* the circuit breaker's probe */
  int called;         /* a deliver() call made it (the pace hears of it) */
  uint32_t flags;     /* HOOKD_OUTCOME_* */
  int32_t status;     /* the destination's status (0: none) */
  const char *answer; /* the first bytes of its answer ("" when none) */
} attempt_result;

/* Keeps what the call came to with the event (the status page's detail). */
static void record(iqueue *q, delivery *d, const attempt_result *a, const char *outcome) {
  char answer[HOOKD_ANSWER_MAX], msg[HOOKD_MESSAGE_MAX + 160];
  snprintf(answer, sizeof answer, "%s", a->answer ? a->answer : "");
  snprintf(msg, sizeof msg, "%s", a->r == HOOKD_OK || !a->msg ? "" : a->msg);
  scrub_text(answer, sizeof answer);
  scrub_text(msg, sizeof msg);
  spool_attempt at = {.started_ms = a->started_ms ? a->started_ms : clock_now_ms() - a->took_ms,
                      .took_ms = a->took_ms,
                      .attempt = d->attempt,
                      .outcome = outcome,
                      .status = a->status,
                      .answer = answer,
                      .message = msg};
  spool_record_attempt(q->dp->sp, d, &at);
}

/* What an attempt means for the instance's pace (rate hold, breaker). */
static pace_result pace_kind(const attempt_result *a) {
  switch (a->r) {
    case HOOKD_OK:
      return PACE_SUCCESS;
    case HOOKD_RETRY:
      return a->flags & HOOKD_OUTCOME_RATE_LIMITED ? PACE_RATE_LIMITED : PACE_FAILURE;
    case PLUGIN_CRASHED:
    case PLUGIN_TIMED_OUT:
      return PACE_FAILURE;
    case PLUGIN_UNAVAILABLE:
      return PACE_NO_ATTEMPT;
    default:
      return PACE_ANSWERED;
  }
}

/* Wakes every worker of q (the circuit closed, its probe ended). */
static void wake_all(iqueue *q) {
  pthread_mutex_lock(&q->mu);
  q->woken = 1;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

/* Tells the other nodes on the spool (when it is shared) what the pace
 * just decided: the circuit opened or closed, a destination's hold. */
static void tell_nodes(iqueue *q, int rc, int64_t hold_ms, int64_t now) {
  spool *sp = q->dp->sp;
  if (rc & PACE_OPENED) {
    pace_info pi;
    pace_get_info(q->pace, &pi);
    if (pi.open) spool_instance_hold(sp, q->name, SPOOL_HOLD_CIRCUIT, pi.open_until - now);
  }
  if (rc & PACE_CLOSED) spool_instance_hold(sp, q->name, SPOOL_HOLD_CLOSE, 0);
  if (hold_ms > 0) spool_instance_hold(sp, q->name, SPOOL_HOLD_RATE, hold_ms);
}

/* Applies what the spool says the other nodes stored (their circuit, their
 * destination's hold) to the pace; nothing with a one-node spool. */
static void apply_remote(iqueue *q, int64_t now) {
  int64_t circuit, hold;
  if (!spool_lane_holds(q->lane, &circuit, &hold)) return;
  if (pace_hold_remote(q->pace, circuit, hold, now) & PACE_WAKE) wake_all(q);
}

/* Reports the attempt to the pace; when the instance is held ("too many
 * requests") or its circuit is open, puts d back without using up an
 * attempt and returns 1. */
static int absorbed(iqueue *q, delivery *d, const attempt_result *a) {
  if (!a->called) return 0;
  int64_t now = clock_now_ms();
  pace_result k = pace_kind(a);
  /* As long as the destination asked (the HTTP helper caps Retry-After at
   * a day), else a second. */
  int64_t hold = now + (a->retry_after_ms ? (int64_t)a->retry_after_ms : 1000);
  int rc = pace_report(q->pace, a->probe, k, k == PACE_RATE_LIMITED ? hold : 0, a->msg, now);
  if (rc & PACE_WAKE) wake_all(q);
  tell_nodes(q, rc, k == PACE_RATE_LIMITED ? hold - now : 0, now);
  if (!(rc & PACE_ABSORB)) return 0;
  log_ctx ctx = {.source = d->ev->source, .instance = q->name, .event_id = d->ev->id};
  if (k == PACE_RATE_LIMITED) {
    log_write(HLOG_WARN, &ctx,
              "the destination says too many requests (%s): the instance holds its deliveries "
              "for %lld ms; no attempt used",
              a->msg, (long long)(hold - now));
  } else {
    log_write(HLOG_INFO, &ctx,
              "attempt %u of %s failed while the circuit is open (%s): no "
              "attempt used, it waits",
              d->attempt, d->ev->type, a->msg);
  }
  record(q, d, a, k == PACE_RATE_LIMITED ? "rate limited" : "circuit open");
  metrics_delivery_held(q->m, q->name, k == PACE_RATE_LIMITED);
  d->attempt--;
  d->due_ms = now;
  spool_settle(q->dp->sp, d, SPOOL_RELEASE, NULL);
  return 1;
}

static void dead(iqueue *q, delivery *d, const char *why) {
  log_ctx ctx = {.source = d->ev->source, .instance = q->name, .event_id = d->ev->id};
  log_write(HLOG_ERROR, &ctx, "delivery of %s failed for good after %u attempt(s): %s", d->ev->type,
            d->attempt, why);
  METRICS_INC(q->m->dead);
  spool_settle(q->dp->sp, d, SPOOL_DEAD, why);
}

/* A failed attempt: due again after the backoff, or a dead letter when it
 * was the last one allowed. Returns 1 when it is finished (dead). */
static int failed_attempt(iqueue *q, delivery *d, const attempt_result *a) {
  const config_delivery *c = q->delivery;
  METRICS_INC(q->m->retry);
  if (d->attempt >= c->max_attempts) {
    char why[HOOKD_MESSAGE_MAX + 64];
    snprintf(why, sizeof why, "gave up after %u attempts: %s", d->attempt, a->msg);
    dead(q, d, why);
    return 1;
  }
  int64_t wait = a->retry_after_ms ? (int64_t)a->retry_after_ms : backoff_ms(c, d->attempt);
  if ((uint64_t)wait > c->backoff_max_ms) wait = (int64_t)c->backoff_max_ms;
  d->due_ms = clock_now_ms() + wait;
  log_ctx ctx = {.source = d->ev->source, .instance = q->name, .event_id = d->ev->id};
  log_write(HLOG_WARN, &ctx, "delivery attempt %u of %s failed, retry in %lld ms: %s", d->attempt,
            d->ev->type, (long long)wait, a->msg);
  spool_settle(q->dp->sp, d, SPOOL_RETRY, a->msg);
  return 0;
}

/* The outcome an attempt row shows: what settle() below will make of it. */
static const char *outcome_name(const config_delivery *c, const delivery *d,
                                const attempt_result *a) {
  switch (a->r) {
    case HOOKD_OK:
      return "delivered";
    case PLUGIN_CRASHED:
      return d->crashes + 1 >= c->max_crashes || d->attempt >= c->max_attempts ? "dead" : "crashed";
    case PLUGIN_TIMED_OUT:
      return d->attempt >= c->max_attempts ? "dead" : "timed out";
    case HOOKD_RETRY:
      return d->attempt >= c->max_attempts ? "dead" : "retry";
    default:
      return "dead";
  }
}

/* Applies what an attempt came to and hands d back to the spool. */
static void settle(iqueue *q, delivery *d, const attempt_result *a) {
  const config_delivery *c = q->delivery;
  if (absorbed(q, d, a)) return;
  /* The row goes first: spool_settle() takes d. */
  if (a->r != PLUGIN_UNAVAILABLE) record(q, d, a, outcome_name(c, d, a));
  log_ctx ctx = {.source = d->ev->source, .instance = q->name, .event_id = d->ev->id};
  /* What the metrics count it as: an attempt that was not made is not one. */
  int as = a->r == HOOKD_OK ? HOOKD_OK : HOOKD_RETRY;
  int finished = 1;
  char why[HOOKD_MESSAGE_MAX + 160];
  const char *source = d->ev->source, *id = d->ev->id;
  int64_t received = d->ev->received_ms;
  uint32_t attempt = d->attempt;
  event_ref(d->ev); /* the strings above outlive the settle */
  event *ev = d->ev;
  switch (a->r) {
    case HOOKD_OK:
      METRICS_INC(q->m->ok);
      log_write(HLOG_DEBUG, &ctx, "delivered %s (attempt %u)", d->ev->type, d->attempt);
      spool_settle(q->dp->sp, d, SPOOL_DONE, NULL);
      break;
    case HOOKD_FAIL:
      as = HOOKD_FAIL;
      METRICS_INC(q->m->fail);
      dead(q, d, a->msg);
      break;
    case PLUGIN_UNAVAILABLE:
      /* Not an attempt: back in the lane without using one up. */
      d->attempt--;
      d->due_ms = clock_now_ms() + (a->retry_after_ms ? a->retry_after_ms : 1000);
      spool_settle(q->dp->sp, d, SPOOL_RELEASE, NULL);
      event_unref(ev);
      return;
    case PLUGIN_CRASHED:
      d->crashes++;
      if (d->crashes >= c->max_crashes) {
        snprintf(why, sizeof why,
                 "the plugin's process died %u time(s) while running this delivery "
                 "(delivery.max_crashes is %u): %s",
                 d->crashes, c->max_crashes, a->msg);
        as = HOOKD_FAIL;
        dead(q, d, why);
        break;
      }
      finished = failed_attempt(q, d, a);
      break;
    case HOOKD_RETRY:
    case PLUGIN_TIMED_OUT:
      finished = failed_attempt(q, d, a);
      break;
    default:
      /* A plugin returning garbage is a bug in the plugin: permanent. */
      snprintf(why, sizeof why, "plugin returned an invalid result (%d)", a->r);
      as = HOOKD_FAIL;
      METRICS_INC(q->m->fail);
      dead(q, d, why);
      break;
  }
  metrics_delivery_settled(q->m, q->name, source, id, received, attempt, as, finished, a->took_ms,
                           a->msg);
  event_unref(ev);
}

/* --- workers --------------------------------------------------------------- */

static void *worker_main(void *arg);

/* Starts one more worker. Caller holds q->mu. */
static int spawn_worker(iqueue *q) {
  worker *w = calloc(1, sizeof *w);
  if (w == NULL) return ENOMEM;
  w->q = q;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t th;
  int rc = pthread_create(&th, &attr, worker_main, w);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    free(w);
    return rc;
  }
  w->next = q->workers;
  q->workers = w;
  q->live++;
  q->active++;
  return 0;
}

static void on_lane_wake(void *data, size_t n) {
  iqueue *q = data;
  pthread_mutex_lock(&q->mu);
  q->woken = 1;
  if (n > 1) {
    pthread_cond_broadcast(&q->cv);
  } else {
    pthread_cond_signal(&q->cv);
  }
  pthread_mutex_unlock(&q->mu);
}

static void wait_until(iqueue *q, int64_t due_ms) {
  struct timespec ts = {.tv_sec = due_ms / 1000, .tv_nsec = (due_ms % 1000) * 1000000};
  pthread_cond_timedwait(&q->cv, &q->mu, &ts);
}

/* A claimed delivery that is not run after all: a probe it was is over. */
static void not_run(iqueue *q, worker *w) {
  if (w->probe && (pace_report(q->pace, 1, PACE_NO_ATTEMPT, 0, NULL, clock_now_ms()) & PACE_WAKE)) {
    wake_all(q);
  }
  w->probe = 0;
}

/* Runs one claimed delivery: the start made durable, the call, the outcome.
 * Called and returns without q->mu. */
static void run(iqueue *q, worker *w, delivery *d) {
  const config_delivery *c = q->delivery;
  if (d->attempt >= c->max_attempts) {
    /* Out of attempts before this one (the last was cut short by a crash). */
    not_run(q, w);
    attempt_result a = {.r = HOOKD_FAIL, .msg = "no attempts left (delivery.max_attempts)"};
    settle(q, d, &a);
    return;
  }
  if (!d->metered) {
    d->metered = 1;
    metrics_delivery_queued(q->m, q->name, d->ev->source, d->ev->id, d->ev->type,
                            d->ev->received_ms, d->attempt);
  }
  if (spool_started(q->dp->sp, d) != 0) {
    /* The start could not be recorded: run nothing that a crash could not
     * account for; try again in a second. */
    not_run(q, w);
    d->due_ms = clock_now_ms() + 1000;
    spool_settle(q->dp->sp, d, SPOOL_RELEASE, NULL);
    return;
  }
  d->attempt++;
  event *ev = d->ev;
  event_ref(ev); /* the plugin reads it even if the call is written off */
  hookd_event view;
  plugin_host_event_view(&view, d, q->inst);
  hookd_outcome out;
  memset(&out, 0, sizeof out);
  out.struct_size = sizeof out;
  pthread_mutex_lock(&q->mu);
  w->d = d;
  w->started = clock_mono_ms();
  w->wall = clock_now_ms();
  pthread_mutex_unlock(&q->mu);

  crash_enter(q->name, ev->id, d->spool_id);
  int r = plugin_host_deliver(q->inst, &view, &out);
  crash_leave();
  spool_started(q->dp->sp, NULL);

  pthread_mutex_lock(&q->mu);
  int off = w->written_off;
  int64_t took = clock_mono_ms() - w->started;
  w->d = NULL;
  pthread_mutex_unlock(&q->mu);
  if (off) {
    log_write(HLOG_WARN, &(log_ctx){.source = ev->source, .instance = q->name, .event_id = ev->id},
              "a written-off deliver() returned after %lld ms; its result is ignored",
              (long long)took);
  } else {
    out.message[HOOKD_MESSAGE_MAX - 1] = '\0';
    out.answer[HOOKD_ANSWER_MAX - 1] = '\0';
    attempt_result a = {.r = r,
                        .msg = out.message[0] ? out.message : "no message",
                        .retry_after_ms = out.retry_after_ms,
                        .took_ms = took,
                        .started_ms = w->wall,
                        .probe = w->probe,
                        .called = 1,
                        .flags = out.flags,
                        .status = out.status,
                        .answer = out.answer};
    settle(q, d, &a);
  }
  event_unref(ev);
}

/* A written-off worker leaves: when the instance stopped for too many stuck
 * threads and this one was among them, it may take deliveries again. Caller
 * holds q->mu. */
static void stuck_returned(iqueue *q) {
  q->stuck--;
  uint32_t cap = q->delivery->concurrency;
  if (!q->unhealthy || q->stuck >= cap || q->stopping || q->lost) return;
  q->unhealthy = 0;
  log_write(HLOG_INFO, &(log_ctx){.instance = q->name},
            "a stuck deliver() returned; the instance takes deliveries again");
  while (q->active < cap && spawn_worker(q) == 0) {
  }
}

/* What pace_claim calls when the instance may start a delivery now. */
typedef struct claim_arg {
  iqueue *q;
  int64_t now;
} claim_arg;

static delivery *claim_from_lane(void *arg, int64_t *next_ms) {
  claim_arg *ca = arg;
  return spool_claim(ca->q->lane, ca->q, ca->now, next_ms);
}

/* The probe pace_claim handed out (d, claimed) is due on every node that
 * shares the spool: one of them runs it. 1 when it is this worker's to run
 * (as the probe, or as any delivery when another node closed the circuit
 * meanwhile); 0 when another node took it: d went back to the lane. */
static int probe_is_ours(iqueue *q, worker *w, delivery *d) {
  int64_t until = 0;
  if (spool_take_probe(q->dp->sp, q->name, (int64_t)q->delivery->breaker_cooldown_ms, &until)) {
    return 1;
  }
  int rc = pace_probe_lost(q->pace, until, clock_now_ms());
  w->probe = 0;
  if (until == 0) {
    if (rc & PACE_WAKE) wake_all(q);
    return 1;
  }
  log_write(HLOG_DEBUG, &(log_ctx){.instance = q->name},
            "another node probes the open circuit; the next probe is in %lld ms",
            (long long)(until - clock_now_ms()));
  d->due_ms = clock_now_ms();
  spool_settle(q->dp->sp, d, SPOOL_RELEASE, NULL);
  return 0;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  iqueue *q = w->q;
  crash_thread_start();
  pthread_mutex_lock(&q->mu);
  for (;;) {
    if (q->stopping || q->lost || w->written_off) break;
    if (q->unhealthy || !q->attached) {
      pthread_cond_wait(&q->cv, &q->mu);
      continue;
    }
    q->woken = 0;
    pthread_mutex_unlock(&q->mu);
    int64_t next = 0;
    /* The pace says first whether the instance may start one now (rate,
     * a destination's hold, an open circuit): held, nothing is claimed. */
    claim_arg ca = {q, clock_now_ms()};
    apply_remote(q, ca.now);
    delivery *d = pace_claim(q->pace, ca.now, claim_from_lane, &ca, &next, &w->probe);
    /* Another node's probe: the pace now waits for its outcome. */
    int given_up = d && w->probe && !probe_is_ours(q, w, d);
    if (d && !given_up) run(q, w, d);
    pthread_mutex_lock(&q->mu);
    if (d) continue;
    if (next < 0) {
      q->lost = 1; /* every worker of this queue leaves */
      pthread_cond_broadcast(&q->cv);
      break;
    }
    if (q->woken || q->stopping) continue;
    if (next == INT64_MAX) {
      pthread_cond_wait(&q->cv, &q->mu);
    } else {
      wait_until(q, next);
    }
  }
  pthread_mutex_unlock(&q->mu);
  http_client_thread_cleanup();
  /* Now, while the spool surely exists: once live is 0 it may be freed,
   * and the slot's own destructor would run after that. */
  runslots_thread_done();
  crash_thread_end();
  pthread_mutex_lock(&q->mu);
  for (worker **pp = &q->workers; *pp; pp = &(*pp)->next) {
    if (*pp == w) {
      *pp = w->next;
      break;
    }
  }
  if (w->written_off) {
    stuck_returned(q);
  } else {
    q->active--;
  }
  free(w);
  q->live--; /* last touch of q: once it is 0 the queue may be freed */
  pthread_cond_broadcast(&q->exit_cv);
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

/* --- hangs ------------------------------------------------------------------ */

/* Writes off w's call (past timeout_ms): settles its delivery as a failed
 * attempt and puts a new worker in its place, up to the cap. Caller holds
 * q->mu; returns the delivery to settle after unlocking. */
static delivery *write_off(iqueue *q, worker *w, int64_t took) {
  delivery *d = w->d;
  w->d = NULL;
  w->written_off = 1;
  q->active--;
  q->stuck++;
  q->written_off++;
  METRICS_INC(q->m->timeouts);
  uint32_t cap = q->delivery->concurrency;
  log_ctx ctx = {.source = d->ev->source, .instance = q->name, .event_id = d->ev->id};
  log_write(HLOG_ERROR, &ctx,
            "deliver() still running after %lld ms (timeout_ms %llu): attempt %u counts as "
            "failed and the call is written off (%zu stuck in this instance)",
            (long long)took, (unsigned long long)q->delivery->timeout_ms, d->attempt, q->stuck);
  if (q->stuck > cap) {
    if (!q->unhealthy) {
      log_write(HLOG_ERROR, &ctx,
                "%zu deliver() calls of this instance are stuck (more than its concurrency): it "
                "takes no deliveries until they return; consider \"isolation\": \"process\"",
                q->stuck);
    }
    q->unhealthy = 1;
  } else if (spawn_worker(q) != 0) {
    log_write(HLOG_ERROR, &ctx, "cannot start a worker to replace the stuck one");
  }
  return d;
}

void dispatch_check_timeouts(dispatch *dp) {
  int64_t now = clock_mono_ms();
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    int64_t limit = (int64_t)q->delivery->timeout_ms;
    /* A process-isolated instance ends its own calls at timeout_ms (its
     * child is killed): write one off only if that did not happen. */
    if (plugin_host_instance_proc(q->inst)) limit += 2000;
    for (;;) {
      delivery *d = NULL;
      int64_t took = 0, wall = 0;
      int probe = 0;
      pthread_mutex_lock(&q->mu);
      for (worker *w = q->workers; w && d == NULL; w = w->next) {
        if (w->d && !w->written_off && (took = now - w->started) > limit) {
          wall = w->wall;
          probe = w->probe;
          w->probe = 0; /* its result, if it ever comes, is ignored */
          d = write_off(q, w, took);
        }
      }
      pthread_mutex_unlock(&q->mu);
      if (d == NULL) break;
      char msg[160];
      snprintf(msg, sizeof msg, "deliver() did not return within timeout_ms (%lld ms)",
               (long long)limit);
      attempt_result a = {.r = PLUGIN_TIMED_OUT,
                          .msg = msg,
                          .took_ms = took,
                          .started_ms = wall,
                          .probe = probe,
                          .called = 1};
      settle(q, d, &a);
      /* The key moves on: a worker that sleeps takes its next delivery. */
      on_lane_wake(q, 1);
    }
  }
}

const char *dispatch_unhealthy(dispatch *dp, char *buf, size_t len) {
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    pthread_mutex_lock(&q->mu);
    int bad = q->unhealthy;
    size_t stuck = q->stuck;
    pthread_mutex_unlock(&q->mu);
    if (bad) {
      snprintf(buf, len,
               "plugin instance '%s' has %zu deliver() calls stuck past timeout_ms and takes no "
               "deliveries",
               q->name, stuck);
      return buf;
    }
  }
  return NULL;
}

void dispatch_observe(dispatch *dp) {
  int64_t now = clock_now_ms();
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    if (q->pace == NULL) continue;
    spool_lane_stats st;
    spool_lane_get_stats(q->lane, &st);
    apply_remote(q, now);
    pace_state was = q->state;
    q->state = pace_observe(q->pace, st.paused, st.saturated, now);
    /* A resume wakes one worker through the lane; the rest follow here, so
     * the drain runs at the instance's full concurrency. */
    if (was == PACE_PAUSED && q->state != PACE_PAUSED) wake_all(q);
  }
}

void dispatch_instance_get(dispatch *dp, size_t i, dispatch_instance_stats *out) {
  memset(out, 0, sizeof *out);
  if (i >= dp->n_qs) return;
  iqueue *q = &dp->qs[i];
  pthread_mutex_lock(&q->mu);
  out->written_off = q->written_off;
  out->stuck = (uint32_t)q->stuck;
  out->unhealthy = q->unhealthy;
  out->running = (uint32_t)running_calls(q);
  pthread_mutex_unlock(&q->mu);
}

/* --- public -------------------------------------------------------------------- */

dispatch *dispatch_new(plugin_host *host, spool *sp, spool_lane *const *lanes, char *err,
                       size_t errlen) {
  dispatch *dp = calloc(1, sizeof *dp);
  if (dp == NULL || (dp->qs = calloc(host->n_insts ? host->n_insts : 1, sizeof *dp->qs)) == NULL) {
    free(dp);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  dp->host = host;
  dp->sp = sp;
  dp->n_qs = host->n_insts;
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    q->dp = dp;
    q->inst = plugin_host_instance(host, i);
    q->name = plugin_host_instance_name(q->inst);
    q->m = plugin_host_instance_metrics(q->inst);
    q->delivery = plugin_host_instance_delivery(q->inst);
    q->lane = lanes[i];
    q->pace = pace_get(q->name);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    pthread_cond_init(&q->exit_cv, NULL);
  }
  for (size_t i = 0; i < dp->n_qs; i++) {
    if (dp->qs[i].pace == NULL) {
      snprintf(err, errlen, "out of memory");
      dispatch_stop(dp, 1000, NULL);
      dispatch_free(dp);
      return NULL;
    }
  }
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    const config_delivery *c = q->delivery;
    spool_lane_config lc = {.max_pending = c->max_pending, .max_crashes = c->max_crashes};
    spool_lane_config_set(q->lane, &lc);
    pthread_mutex_lock(&q->mu);
    int rc = 0;
    for (uint32_t k = 0; k < c->concurrency && rc == 0; k++) rc = spawn_worker(q);
    pthread_mutex_unlock(&q->mu);
    if (rc != 0) {
      snprintf(err, errlen, "cannot start the workers of '%s': %s", q->name, strerror(rc));
      dispatch_stop(dp, 1000, NULL);
      dispatch_free(dp);
      return NULL;
    }
  }
  return dp;
}

void dispatch_attach(dispatch *dp) {
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    /* From here on this queue runs the lane; a previous generation's queue
     * of the same name finishes its calls and leaves. */
    pace_configure(q->pace, q->delivery);
    spool_lane_attach(q->lane, q, on_lane_wake, q);
    pthread_mutex_lock(&q->mu);
    q->attached = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
  }
}

void dispatch_stop(dispatch *dp, uint32_t timeout_ms, unsigned char *hung) {
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
  }
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    pthread_mutex_lock(&q->mu);
    /* Workers outside deliver() leave at once, whatever the budget; only
     * a running call can keep one past the deadline. Written-off calls are
     * not waited for: their deliveries were settled already. */
    while (q->live > q->stuck) {
      if (running_calls(q) == 0) {
        pthread_cond_wait(&q->exit_cv, &q->mu);
      } else if (pthread_cond_timedwait(&q->exit_cv, &q->mu, &deadline) == ETIMEDOUT) {
        break;
      }
    }
    if (q->live > q->stuck) {
      log_write(HLOG_ERROR, &(log_ctx){.instance = q->name},
                "%zu deliver() call(s) did not return within the shutdown timeout; leaving them",
                q->live - q->stuck);
    }
    if (q->live > 0 && hung) hung[i] = 1;
    pthread_mutex_unlock(&q->mu);
    spool_lane_detach(q->lane, q);
  }
}

int dispatch_idle(dispatch *dp) {
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    pthread_mutex_lock(&q->mu);
    int running = running_calls(q) > 0;
    int lost = q->lost;
    pthread_mutex_unlock(&q->mu);
    if (running) return 0;
    if (!lost && q->attached) {
      spool_lane_stats st;
      spool_lane_get_stats(q->lane, &st);
      if (st.pending > 0) return 0;
    }
  }
  return 1;
}

int dispatch_busy(dispatch *dp) {
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    pthread_mutex_lock(&q->mu);
    size_t live = q->live;
    pthread_mutex_unlock(&q->mu);
    if (live) return 1;
  }
  return 0;
}

void dispatch_free(dispatch *dp) {
  if (dp == NULL) return;
  /* A worker still inside deliver() after the shutdown timeout will touch
   * its queue when it returns: then nothing may be freed (the process is
   * about to exit anyway). */
  if (dispatch_busy(dp)) return;
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    spool_lane_detach(q->lane, q);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    pthread_cond_destroy(&q->exit_cv);
  }
  free(dp->qs);
  free(dp);
}
