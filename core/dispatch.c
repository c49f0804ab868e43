/* Dispatcher: per-instance key queues, a due-time heap, worker threads, retry/backoff and dead letters. */
#include "dispatch.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#include "log.h"

/* The deliveries of one order key in one instance, oldest first. Unkeyed
 * deliveries get a keyq of their own. */
typedef struct keyq {
  char *key; /* NULL: unkeyed */
  uint64_t hash;
  delivery *head, *tail;
  int busy;        /* its head is in deliver() now */
  size_t heap_pos; /* NOT_IN_HEAP unless waiting to run */
  struct keyq *hnext;
} keyq;

#define NOT_IN_HEAP ((size_t)-1)

typedef struct slot {
  delivery *d; /* running now, or NULL */
  int64_t started;
  int reported;
} slot;

typedef struct iqueue {
  dispatch *dp;
  plugin_instance *inst;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  keyq **buckets;
  size_t n_buckets, n_keys;
  keyq **heap; /* keyqs whose head may run, by (due, seq) */
  size_t heap_len, heap_cap;
  size_t queued; /* deliveries held, running ones included */
  int stopping;
  size_t live; /* workers that have not exited yet */
  pthread_t *threads;
  size_t n_threads;
  slot *slots;
  /* Loop thread only: deliveries waiting for dispatch_flush. */
  delivery *inbox_head, *inbox_tail;
  int dirty;
} iqueue;

struct dispatch {
  plugin_host *host;
  spool *sp;
  iqueue *qs;
  size_t n_qs;
};

typedef struct worker_arg {
  iqueue *q;
  size_t idx;
} worker_arg;

/* --- heap ---------------------------------------------------------------- */

static int before(const keyq *a, const keyq *b) {
  if (a->head->due_ms != b->head->due_ms) return a->head->due_ms < b->head->due_ms;
  return a->head->ev->seq < b->head->ev->seq;
}

static void heap_set(iqueue *q, size_t i, keyq *k) {
  q->heap[i] = k;
  k->heap_pos = i;
}

static void heap_up(iqueue *q, size_t i) {
  keyq *k = q->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!before(k, q->heap[p])) break;
    heap_set(q, i, q->heap[p]);
    i = p;
  }
  heap_set(q, i, k);
}

static void heap_down(iqueue *q, size_t i) {
  keyq *k = q->heap[i];
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    keyq *best = k;
    if (l < q->heap_len && before(q->heap[l], best)) m = l, best = q->heap[l];
    if (r < q->heap_len && before(q->heap[r], best)) m = r, best = q->heap[r];
    if (m == i) break;
    heap_set(q, i, best);
    i = m;
  }
  heap_set(q, i, k);
}

static int heap_push(iqueue *q, keyq *k) {
  if (q->heap_len == q->heap_cap) {
    size_t ncap = q->heap_cap ? q->heap_cap * 2 : 64;
    keyq **nh = realloc(q->heap, ncap * sizeof *nh);
    if (nh == NULL) return -1;
    q->heap = nh;
    q->heap_cap = ncap;
  }
  heap_set(q, q->heap_len++, k);
  heap_up(q, q->heap_len - 1);
  return 0;
}

static keyq *heap_pop(iqueue *q) {
  keyq *top = q->heap[0];
  top->heap_pos = NOT_IN_HEAP;
  if (--q->heap_len > 0) {
    heap_set(q, 0, q->heap[q->heap_len]);
    heap_down(q, 0);
  }
  return top;
}

/* --- key table ----------------------------------------------------------- */

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static int grow_buckets(iqueue *q) {
  size_t n = q->n_buckets ? q->n_buckets * 2 : 256;
  keyq **nb = calloc(n, sizeof *nb);
  if (nb == NULL) return -1;
  for (size_t i = 0; i < q->n_buckets; i++) {
    keyq *k = q->buckets[i];
    while (k) {
      keyq *next = k->hnext;
      k->hnext = nb[k->hash & (n - 1)];
      nb[k->hash & (n - 1)] = k;
      k = next;
    }
  }
  free(q->buckets);
  q->buckets = nb;
  q->n_buckets = n;
  return 0;
}

/* The keyq of an order key, created when absent; NULL when out of memory. */
static keyq *key_get(iqueue *q, const char *key) {
  if (key == NULL) {
    keyq *k = calloc(1, sizeof *k);
    if (k) k->heap_pos = NOT_IN_HEAP;
    return k;
  }
  uint64_t h = hash_str(key);
  if (q->n_buckets) {
    for (keyq *k = q->buckets[h & (q->n_buckets - 1)]; k; k = k->hnext) {
      if (k->hash == h && strcmp(k->key, key) == 0) return k;
    }
  }
  if (q->n_keys >= q->n_buckets && grow_buckets(q) != 0) return NULL;
  keyq *k = calloc(1, sizeof *k);
  if (k == NULL || (k->key = strdup(key)) == NULL) {
    free(k);
    return NULL;
  }
  k->hash = h;
  k->heap_pos = NOT_IN_HEAP;
  k->hnext = q->buckets[h & (q->n_buckets - 1)];
  q->buckets[h & (q->n_buckets - 1)] = k;
  q->n_keys++;
  return k;
}

static void key_drop(iqueue *q, keyq *k) {
  if (k->key) {
    keyq **pp = &q->buckets[k->hash & (q->n_buckets - 1)];
    while (*pp != k) pp = &(*pp)->hnext;
    *pp = k->hnext;
    q->n_keys--;
    free(k->key);
  }
  free(k);
}

/* Appends d to its key; makes the key runnable when it was idle. Caller
 * holds q->mu. */
static int enqueue(iqueue *q, delivery *d) {
  keyq *k = key_get(q, d->ev->order_key);
  if (k == NULL) return -1;
  d->next = NULL;
  if (k->tail) {
    k->tail->next = d;
  } else {
    k->head = d;
  }
  k->tail = d;
  q->queued++;
  METRICS_INC(q->inst->m.queued);
  metrics_delivery_queued(&q->inst->m, q->inst->name, d->ev->source, d->ev->id, d->ev->type,
                          d->ev->received_ms, d->attempt);
  if (k->head == d && !k->busy) heap_push(q, k);
  return 0;
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

static void dead(iqueue *q, delivery *d, const char *why) {
  log_ctx ctx = {.source = d->ev->source, .instance = q->inst->name, .event_id = d->ev->id};
  log_write(LOG_ERROR, &ctx, "delivery of %s failed for good after %u attempt(s): %s",
            d->ev->type, d->attempt, why);
  METRICS_INC(q->inst->m.dead);
  spool_dead(q->dp->sp, d, why);
}

/* Applies a deliver() result. Caller holds q->mu. Returns the delivery to
 * free (after unlocking), or NULL when it stays queued for a retry. */
static delivery *settle(iqueue *q, keyq *k, delivery *d, hookd_result r, hookd_outcome *out) {
  const config_delivery *c = &q->inst->cfg->delivery;
  log_ctx ctx = {.source = d->ev->source, .instance = q->inst->name, .event_id = d->ev->id};
  out->message[HOOKD_MESSAGE_MAX - 1] = '\0';
  const char *msg = out->message[0] ? out->message : "no message";
  if (r == HOOKD_RETRY && d->attempt >= c->max_attempts) {
    char why[HOOKD_MESSAGE_MAX + 64];
    snprintf(why, sizeof why, "gave up after %u attempts: %s", d->attempt, msg);
    METRICS_INC(q->inst->m.retry);
    dead(q, d, why);
    r = HOOKD_FAIL;
  } else if (r == HOOKD_RETRY) {
    int64_t wait = out->retry_after_ms ? (int64_t)out->retry_after_ms : backoff_ms(c, d->attempt);
    if ((uint64_t)wait > c->backoff_max_ms) wait = (int64_t)c->backoff_max_ms;
    d->due_ms = now_ms() + wait;
    METRICS_INC(q->inst->m.retry);
    log_write(LOG_WARN, &ctx, "delivery attempt %u of %s failed, retry in %lld ms: %s",
              d->attempt, d->ev->type, (long long)wait, msg);
    spool_retry(q->dp->sp, d, msg);
    return NULL; /* stays at the head of its key */
  } else if (r == HOOKD_FAIL) {
    dead(q, d, msg);
  } else {
    METRICS_INC(q->inst->m.ok);
    log_write(LOG_DEBUG, &ctx, "delivered %s (attempt %u)", d->ev->type, d->attempt);
    spool_complete(q->dp->sp, d);
  }
  k->head = d->next;
  if (k->head == NULL) k->tail = NULL;
  q->queued--;
  METRICS_DEC(q->inst->m.queued);
  return d;
}

/* --- workers --------------------------------------------------------------- */

static void wait_until(iqueue *q, int64_t due_ms) {
  struct timespec ts = {.tv_sec = due_ms / 1000, .tv_nsec = (due_ms % 1000) * 1000000};
  pthread_cond_timedwait(&q->cv, &q->mu, &ts);
}

static void *worker_main(void *arg) {
  worker_arg *wa = arg;
  iqueue *q = wa->q;
  slot *s = &q->slots[wa->idx];
  free(wa);
  pthread_mutex_lock(&q->mu);
  while (!q->stopping) {
    if (q->heap_len == 0) {
      pthread_cond_wait(&q->cv, &q->mu);
      continue;
    }
    keyq *k = q->heap[0];
    if (k->head->due_ms > now_ms()) {
      wait_until(q, k->head->due_ms);
      continue;
    }
    heap_pop(q);
    k->busy = 1;
    delivery *d = k->head;
    d->attempt++;
    s->d = d;
    s->started = mono_ms();
    s->reported = 0;
    pthread_mutex_unlock(&q->mu);

    hookd_event view;
    plugin_host_event_view(&view, d, q->inst);
    hookd_outcome out;
    memset(&out, 0, sizeof out);
    out.struct_size = sizeof out;
    int rc = plugin_host_deliver(q->inst, &view, &out);
    if (rc == PLUGIN_UNAVAILABLE) {
      /* Interim (until the new dispatcher): not an attempt; the delivery
       * stays at the head of its key and is asked again later. */
      pthread_mutex_lock(&q->mu);
      d->attempt--;
      d->due_ms = now_ms() + (out.retry_after_ms ? out.retry_after_ms : 100);
      s->d = NULL;
      k->busy = 0;
      heap_push(q, k);
      continue;
    }
    hookd_result r = (hookd_result)rc;
    int killed_for_time = rc == PLUGIN_TIMED_OUT;
    if (rc == PLUGIN_CRASHED || rc == PLUGIN_TIMED_OUT) {
      /* Interim: a failed attempt, retried with backoff (the new
       * dispatcher counts crashes against max_crashes). */
      r = HOOKD_RETRY;
      out.retry_after_ms = 0;
    } else if (r != HOOKD_OK && r != HOOKD_RETRY && r != HOOKD_FAIL) {
      /* A plugin returning garbage is a bug in the plugin: permanent. */
      snprintf(out.message, sizeof out.message, "plugin returned an invalid result (%d)", rc);
      r = HOOKD_FAIL;
    }
    int64_t took = mono_ms() - s->started;

    pthread_mutex_lock(&q->mu);
    if ((took > (int64_t)q->inst->cfg->delivery.timeout_ms || killed_for_time) && !s->reported) {
      log_ctx ctx = {.source = d->ev->source, .instance = q->inst->name, .event_id = d->ev->id};
      log_write(LOG_WARN, &ctx, "deliver() took %lld ms, over timeout_ms %llu", (long long)took,
                (unsigned long long)q->inst->cfg->delivery.timeout_ms);
      METRICS_INC(q->inst->m.timeouts);
    }
    s->d = NULL;
    delivery *done = settle(q, k, d, r, &out);
    metrics_delivery_settled(&q->inst->m, q->inst->name, d->ev->source, d->ev->id,
                             d->ev->received_ms, d->attempt, r, done != NULL, took, out.message);
    k->busy = 0;
    if (k->head) {
      heap_push(q, k);
      pthread_cond_signal(&q->cv);
    } else {
      key_drop(q, k);
    }
    if (done) {
      pthread_mutex_unlock(&q->mu);
      delivery_free(done);
      pthread_mutex_lock(&q->mu);
    }
  }
  http_client_thread_cleanup();
  q->live--; /* last touch of q: a hung worker that ends late may let it be freed */
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

/* --- public -------------------------------------------------------------------- */

static int start_queue(dispatch *dp, iqueue *q, plugin_instance *inst, char *err, size_t errlen) {
  q->dp = dp;
  q->inst = inst;
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  q->n_threads = inst->cfg->delivery.concurrency;
  q->threads = calloc(q->n_threads, sizeof *q->threads);
  q->slots = calloc(q->n_threads, sizeof *q->slots);
  if (q->threads == NULL || q->slots == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < q->n_threads; i++) {
    worker_arg *wa = malloc(sizeof *wa);
    int rc = wa ? 0 : ENOMEM;
    if (wa) {
      wa->q = q;
      wa->idx = i;
      pthread_mutex_lock(&q->mu);
      q->live++;
      pthread_mutex_unlock(&q->mu);
      rc = pthread_create(&q->threads[i], NULL, worker_main, wa);
      if (rc != 0) {
        free(wa);
        pthread_mutex_lock(&q->mu);
        q->live--;
        pthread_mutex_unlock(&q->mu);
      }
    }
    if (rc != 0) {
      snprintf(err, errlen, "cannot start worker %zu for '%s': %s", i, inst->name, strerror(rc));
      q->n_threads = i;
      return -1;
    }
  }
  return 0;
}

dispatch *dispatch_new(plugin_host *host, spool *sp, char *err, size_t errlen) {
  dispatch *dp = calloc(1, sizeof *dp);
  if (dp == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  dp->host = host;
  dp->sp = sp;
  dp->n_qs = host->n_insts;
  dp->qs = calloc(dp->n_qs ? dp->n_qs : 1, sizeof *dp->qs);
  if (dp->qs == NULL) {
    snprintf(err, errlen, "out of memory");
    free(dp);
    return NULL;
  }
  for (size_t i = 0; i < dp->n_qs; i++) {
    if (start_queue(dp, &dp->qs[i], &host->insts[i], err, errlen) != 0) {
      dp->n_qs = i + 1;
      dispatch_stop(dp, 1000, NULL);
      dispatch_free(dp);
      return NULL;
    }
  }
  return dp;
}

void dispatch_submit(dispatch *dp, delivery *d) {
  iqueue *q = &dp->qs[d->instance];
  d->next = NULL;
  if (q->inbox_tail) {
    q->inbox_tail->next = d;
  } else {
    q->inbox_head = d;
  }
  q->inbox_tail = d;
  q->dirty = 1;
}

void dispatch_flush(dispatch *dp) {
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    if (!q->dirty) continue;
    delivery *d = q->inbox_head;
    q->inbox_head = q->inbox_tail = NULL;
    q->dirty = 0;
    size_t n = 0;
    pthread_mutex_lock(&q->mu);
    while (d) {
      delivery *next = d->next;
      if (enqueue(q, d) != 0) {
        /* Out of memory: the delivery stays pending in the spool and runs
         * after the next start. */
        log_ctx ctx = {.source = d->ev->source, .instance = q->inst->name, .event_id = d->ev->id};
        log_write(LOG_ERROR, &ctx, "out of memory queueing a delivery; it resumes on restart");
        delivery_free(d);
      } else {
        n++;
      }
      d = next;
    }
    if (n == 1) {
      pthread_cond_signal(&q->cv);
    } else if (n > 1) {
      pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
  }
}

void dispatch_check_timeouts(dispatch *dp) {
  int64_t now = mono_ms();
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    pthread_mutex_lock(&q->mu);
    for (size_t j = 0; j < q->n_threads; j++) {
      slot *s = &q->slots[j];
      int64_t took = now - s->started;
      if (s->d && !s->reported && took > (int64_t)q->inst->cfg->delivery.timeout_ms) {
        s->reported = 1;
        METRICS_INC(q->inst->m.timeouts);
        log_ctx ctx = {.source = s->d->ev->source, .instance = q->inst->name,
                       .event_id = s->d->ev->id};
        log_write(LOG_WARN, &ctx,
                  "deliver() still running after %lld ms (timeout_ms %llu); its order key "
                  "waits until it returns",
                  (long long)took, (unsigned long long)q->inst->cfg->delivery.timeout_ms);
      }
    }
    pthread_mutex_unlock(&q->mu);
  }
}

size_t dispatch_stop(dispatch *dp, uint32_t timeout_ms, unsigned char *hung) {
  dispatch_flush(dp);
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
  size_t left = 0;
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    for (size_t j = 0; j < q->n_threads; j++) {
      /* A worker outside deliver() exits at once (stopping is set): wait
       * for it whatever the budget; only a running deliver() can hang. */
      pthread_mutex_lock(&q->mu);
      int running = q->slots[j].d != NULL;
      pthread_mutex_unlock(&q->mu);
      if (!running) {
        pthread_join(q->threads[j], NULL);
        continue;
      }
      if (pthread_timedjoin_np(q->threads[j], NULL, &deadline) != 0) {
        log_write(LOG_ERROR, &(log_ctx){.instance = q->inst->name},
                  "a deliver() call did not return within the shutdown timeout; leaving it");
        pthread_detach(q->threads[j]);
        if (hung) hung[i] = 1;
      }
    }
    q->n_threads = 0;
    pthread_mutex_lock(&q->mu);
    left += q->queued;
    pthread_mutex_unlock(&q->mu);
  }
  return left;
}

int dispatch_idle(dispatch *dp) {
  for (size_t i = 0; i < dp->n_qs; i++) {
    iqueue *q = &dp->qs[i];
    if (q->inbox_head) return 0;
    pthread_mutex_lock(&q->mu);
    size_t queued = q->queued;
    pthread_mutex_unlock(&q->mu);
    if (queued) return 0;
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
    /* Unkeyed keyqs are reachable only through the heap (while stopping
     * nothing runs, so every one of them is in it). */
    while (q->heap_len) {
      keyq *k = heap_pop(q);
      if (k->key != NULL) continue; /* freed with the table below */
      for (delivery *d = k->head; d;) {
        delivery *dn = d->next;
        delivery_free(d);
        d = dn;
      }
      free(k);
    }
    for (size_t b = 0; b < q->n_buckets; b++) {
      keyq *k = q->buckets[b];
      while (k) {
        keyq *next = k->hnext;
        for (delivery *d = k->head; d;) {
          delivery *dn = d->next;
          delivery_free(d);
          d = dn;
        }
        free(k->key);
        free(k);
        k = next;
      }
    }
    free(q->buckets);
    free(q->heap);
    free(q->threads);
    free(q->slots);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
  }
  free(dp->qs);
  free(dp);
}
