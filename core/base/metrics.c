/* Process-wide counters, labelled series by name, histograms, the recent-events ring, and their
 * Prometheus text exposition. */
#include "metrics.h"
#include "clock.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "hookd/plugin.h"
#include "scrub.h"

metrics g_metrics;

static const int statuses[METRICS_N_STATUSES] = {
#define X(s) s,
    METRICS_STATUSES(X)
#undef X
};

/* --- histograms ------------------------------------------------------------ */

#define HIST_MAX_BUCKETS 16

typedef struct histogram {
  const double *bounds; /* upper bounds in seconds, ascending; +Inf implied */
  size_t n;
  atomic_uint_fast64_t buckets[HIST_MAX_BUCKETS]; /* not cumulative; [n] is +Inf */
  atomic_uint_fast64_t count;
  atomic_uint_fast64_t sum_us;
} histogram;

static const double ingest_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                       0.1,    0.25,  0.5,    1,     2.5,  5,     10};
static const double latency_bounds[] = {0.005, 0.01, 0.05, 0.1, 0.5,  1,    5,
                                        10,    30,   60,   300, 1800, 3600, 21600};
static const double duration_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1,     2.5,  5,     10,   30,  60};

static void hist_observe(histogram *h, double seconds) {
  if (seconds < 0) seconds = 0;
  size_t i = 0;
  while (i < h->n && seconds > h->bounds[i]) i++;
  METRICS_INC(h->buckets[i]);
  METRICS_INC(h->count);
  atomic_fetch_add_explicit(&h->sum_us, (uint_fast64_t)(seconds * 1e6 + 0.5), memory_order_relaxed);
}

/* --- series by name -------------------------------------------------------- */

typedef struct source_series {
  char name[64];
  atomic_uint_fast64_t requests[METRICS_N_STATUSES];
  atomic_uint_fast64_t other_types; /* events whose type found no free series */
  histogram ingest;
} source_series;

typedef struct type_series {
  size_t source; /* index into sources */
  char type[128];
  atomic_uint_fast64_t events;
} type_series;

/* Counts per minute over the last hour: slot minute % 60, cleared when a
 * new minute first lands in it. Under g_mu. */
typedef struct minutes {
  int64_t minute[METRICS_MINUTES];
  uint32_t v[METRICS_MINUTES][4];
} minutes;

static void minutes_add(minutes *m, int64_t now_ms, int k) {
  int64_t mi = now_ms / 60000;
  size_t slot = (size_t)(mi % METRICS_MINUTES);
  if (m->minute[slot] != mi) {
    m->minute[slot] = mi;
    memset(m->v[slot], 0, sizeof m->v[slot]);
  }
  m->v[slot][k]++;
}

/* out[j] for the minute first + j, the last one the current minute. */
static void minutes_read(const minutes *m, int64_t now_ms, int k, uint32_t *out, int64_t *first) {
  int64_t cur = now_ms / 60000;
  *first = cur - (METRICS_MINUTES - 1);
  for (size_t j = 0; j < METRICS_MINUTES; j++) {
    int64_t mi = *first + (int64_t)j;
    size_t slot = (size_t)(mi % METRICS_MINUTES);
    out[j] = m->minute[slot] == mi ? m->v[slot][k] : 0;
  }
}

/* Accept times (Unix seconds) of an instance's pending deliveries, as a
 * sorted array of (second, count): the first is the oldest. */
typedef struct pending_sec {
  int64_t sec;
  uint64_t count;
} pending_sec;

typedef struct metrics_inst_series {
  char name[64];
  atomic_uint_fast64_t attempts[3]; /* by hookd_result: ok, retry, fail */
  atomic_uint_fast64_t delivered, dead;
  atomic_int_fast64_t retrying;
  histogram latency;            /* accepted -> delivered */
  histogram duration;           /* one deliver() call */
  atomic_uint_fast64_t held[2]; /* held back after the call: [0] circuit open, [1] rate limited */
  atomic_uint_fast64_t child_restarts, child_crashes; /* process isolation */
  /* Under g_mu: */
  pending_sec *pending;
  size_t n_pending, cap_pending;
  int last_result;
  int64_t last_ms;
  char last_message[256];
  minutes hist; /* delivered, retried, dead, held */
} metrics_inst_series;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static source_series g_sources[METRICS_MAX_SOURCES + 1]; /* [MAX]: "other" */
static size_t g_n_sources;
static type_series g_types[METRICS_MAX_TYPES];
static size_t g_n_types;
static metrics_inst_series *g_insts[METRICS_MAX_INSTANCES + 1]; /* [MAX]: "other" */
static size_t g_n_insts;
/* The last cap entries of one kind, head the newest: the recent events and
 * the rejected requests. Guarded by g_mu. */
typedef struct ring {
  void *slots;
  size_t size, cap;
  size_t head, len;
} ring;
static metrics_recent g_recent_slots[METRICS_RECENT];
static ring g_recent = {g_recent_slots, sizeof g_recent_slots[0], METRICS_RECENT, 0, 0};
static metrics_rejected g_rejected_slots[METRICS_REJECTED];
static ring g_rejected = {g_rejected_slots, sizeof g_rejected_slots[0], METRICS_REJECTED, 0, 0};

/* Entry k, counting back from the newest (k < len). */
static void *ring_at(const ring *r, size_t k) {
  return (char *)r->slots + (r->head + r->cap - k) % r->cap * r->size;
}

/* Makes room for a new newest entry (the oldest goes when full) and returns it. */
static void *ring_push(ring *r) {
  if (r->len > 0) r->head = (r->head + 1) % r->cap;
  if (r->len < r->cap) r->len++;
  return ring_at(r, 0);
}

/* Copies up to max entries, newest first, into out. Returns how many. */
static size_t ring_copy(const ring *r, void *out, size_t max) {
  size_t n = r->len < max ? r->len : max;
  for (size_t k = 0; k < n; k++) memcpy((char *)out + k * r->size, ring_at(r, k), r->size);
  return n;
}
static minutes g_hist; /* accepted, rejected, delivered */

static void copy_str(char *dst, size_t size, const char *src) {
  snprintf(dst, size, "%s", src ? src : "");
}

static void hist_init(histogram *h, const double *bounds, size_t n) {
  h->bounds = bounds;
  h->n = n;
}

/* The series of a source; caller holds g_mu. */
static source_series *source_get(const char *name) {
  for (size_t i = 0; i < g_n_sources; i++) {
    if (strcmp(g_sources[i].name, name) == 0) return &g_sources[i];
  }
  source_series *s = g_n_sources < METRICS_MAX_SOURCES ? &g_sources[g_n_sources++]
                                                       : &g_sources[METRICS_MAX_SOURCES];
  if (s->ingest.bounds == NULL) {
    copy_str(s->name, sizeof s->name, s == &g_sources[METRICS_MAX_SOURCES] ? "other" : name);
    hist_init(&s->ingest, ingest_bounds, sizeof ingest_bounds / sizeof ingest_bounds[0]);
  }
  return s;
}

static metrics_inst_series *inst_find(const char *name) {
  for (size_t i = 0; i < g_n_insts; i++) {
    if (strcmp(g_insts[i]->name, name) == 0) return g_insts[i];
  }
  size_t slot = g_n_insts < METRICS_MAX_INSTANCES ? g_n_insts : METRICS_MAX_INSTANCES;
  if (g_insts[slot] != NULL) return g_insts[slot];
  metrics_inst_series *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  copy_str(s->name, sizeof s->name, slot == METRICS_MAX_INSTANCES ? "other" : name);
  hist_init(&s->latency, latency_bounds, sizeof latency_bounds / sizeof latency_bounds[0]);
  hist_init(&s->duration, duration_bounds, sizeof duration_bounds / sizeof duration_bounds[0]);
  s->last_result = -1;
  g_insts[slot] = s;
  if (slot < METRICS_MAX_INSTANCES) g_n_insts++;
  return s;
}

/* The by-name series of an instance, cached in m. NULL when out of memory. */
static metrics_inst_series *inst_series(metrics_instance *m, const char *name) {
  metrics_inst_series *s = atomic_load_explicit(&m->series, memory_order_acquire);
  if (s) return s;
  pthread_mutex_lock(&g_mu);
  s = inst_find(name);
  pthread_mutex_unlock(&g_mu);
  if (s) atomic_store_explicit(&m->series, s, memory_order_release);
  return s;
}

/* --- counting -------------------------------------------------------------- */

/* Runs before main(): the start time needs no call from the daemon. */
__attribute__((constructor)) void metrics_init(void) {
  g_metrics.start_ms = clock_now_ms();
}

static int status_index(int status) {
  if (status >= 200 && status < 300) status = 200;
  for (size_t i = 0; i < METRICS_N_STATUSES; i++) {
    if (statuses[i] == status) return (int)i;
  }
  return -1;
}

/* The webhook source whose request is being answered on this thread (see
 * metrics_source_begin), and when that request was complete. */
static _Thread_local const char *tag_source;
static _Thread_local uint64_t tag_t0;

uint64_t metrics_source_begin(const char *source) {
  tag_source = source;
  tag_t0 = uv_hrtime();
  return tag_t0;
}

void metrics_source_resume(const char *source, uint64_t t0) {
  tag_source = source;
  tag_t0 = t0;
}

void metrics_source_end(void) {
  tag_source = NULL;
}

void metrics_count_status(int status) {
  int i = status_index(status);
  if (i >= 0) METRICS_INC(g_metrics.requests[i]);
  if (tag_source != NULL) {
    const char *src = tag_source;
    tag_source = NULL;
    metrics_count_source(src, status, (double)(uv_hrtime() - tag_t0) / 1e9);
  }
}

void metrics_count_admin(int status) {
  int i = status_index(status);
  if (i >= 0) METRICS_INC(g_metrics.admin_requests[i]);
}

void metrics_count_source(const char *source, int status, double seconds) {
  if (source == NULL || source[0] == '\0') return; /* the remainder row counts it */
  int i = status_index(status);
  pthread_mutex_lock(&g_mu);
  source_series *s = source_get(source);
  pthread_mutex_unlock(&g_mu);
  if (i >= 0) METRICS_INC(s->requests[i]);
  if (seconds >= 0) hist_observe(&s->ingest, seconds);
}

/* The ring entry of (source, id), or NULL. Caller holds g_mu. */
static metrics_recent *recent_find(const char *source, const char *id) {
  for (size_t k = 0; k < g_recent.len; k++) {
    metrics_recent *r = ring_at(&g_recent, k);
    if (strncmp(r->id, id, sizeof r->id - 1) == 0 &&
        strncmp(r->source, source, sizeof r->source - 1) == 0) {
      return r;
    }
  }
  return NULL;
}

static metrics_recent *recent_add(const char *source, const char *id, const char *type,
                                  int64_t received_ms) {
  metrics_recent *r = recent_find(source, id);
  if (r) return r;
  r = ring_push(&g_recent);
  memset(r, 0, sizeof *r);
  copy_str(r->source, sizeof r->source, source);
  copy_str(r->id, sizeof r->id, id);
  copy_str(r->type, sizeof r->type, type);
  r->received_ms = received_ms;
  return r;
}

static metrics_recent_target *recent_target(metrics_recent *r, const char *instance, int add) {
  for (size_t i = 0; i < r->n_targets; i++) {
    if (strncmp(r->targets[i].instance, instance, sizeof r->targets[i].instance - 1) == 0) {
      return &r->targets[i];
    }
  }
  if (!add) return NULL;
  if (r->n_targets == METRICS_RECENT_TARGETS) {
    r->more_targets++;
    return NULL;
  }
  metrics_recent_target *t = &r->targets[r->n_targets++];
  copy_str(t->instance, sizeof t->instance, instance);
  return t;
}

void metrics_event_accepted(const char *source, const char *id, const char *type,
                            int64_t received_ms, size_t n_targets) {
  METRICS_INC(g_metrics.events_accepted);
  if (n_targets == 0) METRICS_INC(g_metrics.events_unrouted);
  pthread_mutex_lock(&g_mu);
  source_series *s = source_get(source);
  type_series *t = NULL;
  size_t si = (size_t)(s - g_sources);
  for (size_t i = 0; i < g_n_types && t == NULL; i++) {
    if (g_types[i].source == si && strcmp(g_types[i].type, type) == 0) t = &g_types[i];
  }
  if (t == NULL && g_n_types < METRICS_MAX_TYPES && strlen(type) < sizeof t->type) {
    t = &g_types[g_n_types++];
    t->source = si;
    copy_str(t->type, sizeof t->type, type);
  }
  recent_add(source, id, type, received_ms);
  minutes_add(&g_hist, clock_now_ms(), 0);
  pthread_mutex_unlock(&g_mu);
  if (t) {
    METRICS_INC(t->events);
  } else {
    METRICS_INC(s->other_types);
  }
}

/* --- deliveries ------------------------------------------------------------ */

/* The first of s->pending[lo..] whose second is not before sec. Caller
 * holds g_mu. */
static size_t pending_find(const metrics_inst_series *s, size_t lo, int64_t sec) {
  size_t hi = s->n_pending;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (s->pending[mid].sec < sec) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/* Caller holds g_mu. */
static void pending_add(metrics_inst_series *s, int64_t received_ms) {
  int64_t sec = received_ms / 1000;
  size_t lo = 0;
  /* Accept times mostly grow: look at the end first. */
  if (s->n_pending > 0 && s->pending[s->n_pending - 1].sec <= sec) {
    lo = s->n_pending - 1;
  }
  lo = pending_find(s, lo, sec);
  if (lo < s->n_pending && s->pending[lo].sec == sec) {
    s->pending[lo].count++;
    return;
  }
  if (s->n_pending == s->cap_pending) {
    size_t ncap = s->cap_pending ? s->cap_pending * 2 : 16;
    pending_sec *np = realloc(s->pending, ncap * sizeof *np);
    if (np == NULL) return; /* the age is then a little young; nothing breaks */
    s->pending = np;
    s->cap_pending = ncap;
  }
  memmove(&s->pending[lo + 1], &s->pending[lo], (s->n_pending - lo) * sizeof *s->pending);
  s->pending[lo] = (pending_sec){sec, 1};
  s->n_pending++;
}

static void pending_remove(metrics_inst_series *s, int64_t received_ms) {
  int64_t sec = received_ms / 1000;
  size_t lo = pending_find(s, 0, sec);
  if (lo == s->n_pending || s->pending[lo].sec != sec) return;
  if (--s->pending[lo].count == 0) {
    memmove(&s->pending[lo], &s->pending[lo + 1], (s->n_pending - lo - 1) * sizeof *s->pending);
    s->n_pending--;
  }
}

void metrics_delivery_queued(metrics_instance *m, const char *instance, const char *source,
                             const char *event_id, const char *type, int64_t received_ms,
                             uint32_t attempt) {
  metrics_inst_series *s = inst_series(m, instance);
  if (s == NULL) return;
  /* A recovered delivery that was tried before is already retrying. */
  if (attempt > 0) atomic_fetch_add_explicit(&s->retrying, 1, memory_order_relaxed);
  pthread_mutex_lock(&g_mu);
  pending_add(s, received_ms);
  metrics_recent *r = recent_add(source, event_id, type, received_ms);
  metrics_recent_target *t = recent_target(r, instance, 1);
  if (t) {
    copy_str(t->outcome, sizeof t->outcome, attempt ? "retrying" : "queued");
    t->attempt = attempt;
  }
  pthread_mutex_unlock(&g_mu);
}

void metrics_delivery_settled(metrics_instance *m, const char *instance, const char *source,
                              const char *event_id, int64_t received_ms, uint32_t attempt,
                              int result, int finished, int64_t took_ms, const char *message) {
  metrics_inst_series *s = inst_series(m, instance);
  if (s == NULL) return;
  if (result >= HOOKD_OK && result <= HOOKD_FAIL) METRICS_INC(s->attempts[result]);
  hist_observe(&s->duration, (double)took_ms / 1e3);
  int64_t now = clock_now_ms();
  const char *outcome;
  if (!finished) {
    outcome = "retrying";
    /* The first retry of a delivery puts it in the retry queue; it leaves
     * when it finishes (attempt >= 2 then). */
    if (attempt == 1) atomic_fetch_add_explicit(&s->retrying, 1, memory_order_relaxed);
  } else {
    if (attempt >= 2) atomic_fetch_sub_explicit(&s->retrying, 1, memory_order_relaxed);
    if (result == HOOKD_OK) {
      outcome = "delivered";
      METRICS_INC(s->delivered);
      hist_observe(&s->latency, (double)(now - received_ms) / 1e3);
    } else {
      outcome = "dead";
      METRICS_INC(s->dead);
    }
  }
  pthread_mutex_lock(&g_mu);
  if (finished) pending_remove(s, received_ms);
  minutes_add(&s->hist, now, !finished ? 1 : result == HOOKD_OK ? 0 : 2);
  if (finished && result == HOOKD_OK) minutes_add(&g_hist, now, 2);
  s->last_result = result;
  s->last_ms = now;
  copy_str(s->last_message, sizeof s->last_message,
           result == HOOKD_OK ? "" : (message && message[0] ? message : "no message"));
  scrub_text(s->last_message, sizeof s->last_message);
  metrics_recent *r = recent_find(source, event_id);
  metrics_recent_target *t = r ? recent_target(r, instance, 0) : NULL;
  if (t) {
    copy_str(t->outcome, sizeof t->outcome, outcome);
    t->attempt = attempt;
  }
  pthread_mutex_unlock(&g_mu);
}

void metrics_instance_get(metrics_instance *m, const char *instance, metrics_instance_view *out) {
  memset(out, 0, sizeof *out);
  out->last_result = -1;
  metrics_inst_series *s = inst_series(m, instance);
  if (s == NULL) return;
  out->attempts =
      METRICS_GET(s->attempts[0]) + METRICS_GET(s->attempts[1]) + METRICS_GET(s->attempts[2]);
  out->delivered = METRICS_GET(s->delivered);
  out->dead = METRICS_GET(s->dead);
  int64_t r = atomic_load_explicit(&s->retrying, memory_order_relaxed);
  out->retrying = r > 0 ? (uint64_t)r : 0;
  pthread_mutex_lock(&g_mu);
  out->oldest_pending_ms = s->n_pending ? s->pending[0].sec * 1000 : 0;
  out->last_result = s->last_result;
  out->last_ms = s->last_ms;
  copy_str(out->last_message, sizeof out->last_message, s->last_message);
  pthread_mutex_unlock(&g_mu);
}

void metrics_delivery_held(metrics_instance *m, const char *instance, int rate_limited) {
  metrics_inst_series *s = inst_series(m, instance);
  if (s == NULL) return;
  METRICS_INC(s->held[rate_limited ? 1 : 0]);
  pthread_mutex_lock(&g_mu);
  minutes_add(&s->hist, clock_now_ms(), 3);
  pthread_mutex_unlock(&g_mu);
}

void metrics_rejected_add(const char *peer, const char *path, int status, const char *reason) {
  pthread_mutex_lock(&g_mu);
  metrics_rejected *r = ring_push(&g_rejected);
  int64_t now = clock_now_ms();
  r->at_ms = now;
  copy_str(r->peer, sizeof r->peer, peer);
  copy_str(r->path, sizeof r->path, path);
  r->status = status;
  copy_str(r->reason, sizeof r->reason, reason);
  scrub_text(r->reason, sizeof r->reason);
  minutes_add(&g_hist, now, 1);
  pthread_mutex_unlock(&g_mu);
}

size_t metrics_rejected_get(metrics_rejected *out, size_t max) {
  pthread_mutex_lock(&g_mu);
  size_t n = ring_copy(&g_rejected, out, max);
  pthread_mutex_unlock(&g_mu);
  return n;
}

void metrics_history_get(metrics_history *out, int64_t now_ms) {
  pthread_mutex_lock(&g_mu);
  minutes_read(&g_hist, now_ms, 0, out->accepted, &out->first_minute);
  minutes_read(&g_hist, now_ms, 1, out->rejected, &out->first_minute);
  minutes_read(&g_hist, now_ms, 2, out->delivered, &out->first_minute);
  pthread_mutex_unlock(&g_mu);
}

void metrics_instance_history_get(metrics_instance *m, const char *instance,
                                  metrics_instance_history *out, int64_t now_ms) {
  memset(out, 0, sizeof *out);
  out->first_minute = now_ms / 60000 - (METRICS_MINUTES - 1);
  metrics_inst_series *s = inst_series(m, instance);
  if (s == NULL) return;
  pthread_mutex_lock(&g_mu);
  minutes_read(&s->hist, now_ms, 0, out->delivered, &out->first_minute);
  minutes_read(&s->hist, now_ms, 1, out->retried, &out->first_minute);
  minutes_read(&s->hist, now_ms, 2, out->dead, &out->first_minute);
  minutes_read(&s->hist, now_ms, 3, out->held, &out->first_minute);
  pthread_mutex_unlock(&g_mu);
}

void metrics_child_restarted(metrics_instance *m, const char *instance) {
  metrics_inst_series *s = inst_series(m, instance);
  if (s) METRICS_INC(s->child_restarts);
}

void metrics_child_crashed(metrics_instance *m, const char *instance) {
  metrics_inst_series *s = inst_series(m, instance);
  if (s) METRICS_INC(s->child_crashes);
}

void metrics_child_counts(metrics_instance *m, const char *instance, uint64_t *restarts,
                          uint64_t *crashes) {
  metrics_inst_series *s = inst_series(m, instance);
  *restarts = s ? METRICS_GET(s->child_restarts) : 0;
  *crashes = s ? METRICS_GET(s->child_crashes) : 0;
}

size_t metrics_recent_get(metrics_recent *out, size_t max) {
  pthread_mutex_lock(&g_mu);
  size_t n = ring_copy(&g_recent, out, max);
  pthread_mutex_unlock(&g_mu);
  return n;
}

/* --- exposition ------------------------------------------------------------ */

int metrics_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = *cap - *len;
    int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? room : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if (*buf && (size_t)n < room) {
      *len += (size_t)n;
      return 0;
    }
    size_t ncap = (*cap ? *cap * 2 : 4096);
    while (ncap < *len + (size_t)n + 1) ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (nb == NULL) return -1;
    *buf = nb;
    *cap = ncap;
  }
}

int metrics_append_label(char **buf, size_t *len, size_t *cap, const char *s) {
  int rc = 0;
  for (const char *p = s; *p && rc == 0; p++) {
    if (*p == '\\') {
      rc = metrics_append(buf, len, cap, "\\\\");
    } else if (*p == '"') {
      rc = metrics_append(buf, len, cap, "\\\"");
    } else if (*p == '\n') {
      rc = metrics_append(buf, len, cap, "\\n");
    } else {
      rc = metrics_append(buf, len, cap, "%c", *p);
    }
  }
  return rc;
}

typedef struct out {
  char **buf;
  size_t *len, *cap;
  int rc;
} out;

#define EMIT(o, ...) ((o)->rc |= metrics_append((o)->buf, (o)->len, (o)->cap, __VA_ARGS__))

static void head(out *o, const char *name, const char *type, const char *help) {
  EMIT(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{label="value"[,label2="value2"]} */
static void series(out *o, const char *name, const char *l1, const char *v1, const char *l2,
                   const char *v2) {
  EMIT(o, "%s{%s=\"", name, l1);
  o->rc |= metrics_append_label(o->buf, o->len, o->cap, v1);
  if (l2) {
    EMIT(o, "\",%s=\"", l2);
    o->rc |= metrics_append_label(o->buf, o->len, o->cap, v2);
  }
  EMIT(o, "\"}");
}

static void hist_render(out *o, const char *name, const char *label, const char *value,
                        histogram *h) {
  uint64_t cum = 0;
  for (size_t i = 0; i <= h->n; i++) {
    cum += METRICS_GET(h->buckets[i]);
    EMIT(o, "%s_bucket{%s=\"", name, label);
    o->rc |= metrics_append_label(o->buf, o->len, o->cap, value);
    if (i < h->n) {
      EMIT(o, "\",le=\"%g\"} %llu\n", h->bounds[i], (unsigned long long)cum);
    } else {
      EMIT(o, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
  }
  /* count is read after the buckets and never below their sum: a scrape
   * racing an observation stays consistent enough for rate(). */
  uint64_t count = METRICS_GET(h->count);
  if (count < cum) count = cum;
  char sname[128];
  snprintf(sname, sizeof sname, "%s_sum", name);
  series(o, sname, label, value, NULL, NULL);
  EMIT(o, " %.6f\n", (double)METRICS_GET(h->sum_us) / 1e6);
  snprintf(sname, sizeof sname, "%s_count", name);
  series(o, sname, label, value, NULL, NULL);
  EMIT(o, " %llu\n", (unsigned long long)count);
}

static void render_requests(out *o) {
  head(o, "hookd_http_requests_total", "counter",
       "Webhook requests answered, by source and status (source \"\": answered before a source "
       "matched, or by the HTTP layer).");
  uint64_t named[METRICS_N_STATUSES] = {0};
  for (size_t s = 0; s <= METRICS_MAX_SOURCES; s++) {
    source_series *src = &g_sources[s];
    if (s >= g_n_sources && (s != METRICS_MAX_SOURCES || src->ingest.bounds == NULL)) continue;
    for (size_t i = 0; i < METRICS_N_STATUSES; i++) {
      uint64_t v = METRICS_GET(src->requests[i]);
      named[i] += v;
      if (v == 0) continue;
      char st[8];
      snprintf(st, sizeof st, "%d", statuses[i]);
      series(o, "hookd_http_requests_total", "source", src->name, "status", st);
      EMIT(o, " %llu\n", (unsigned long long)v);
    }
  }
  for (size_t i = 0; i < METRICS_N_STATUSES; i++) {
    uint64_t all = METRICS_GET(g_metrics.requests[i]);
    uint64_t adm = METRICS_GET(g_metrics.admin_requests[i]);
    uint64_t rest = all > adm + named[i] ? all - adm - named[i] : 0;
    if (rest == 0) continue;
    char st[8];
    snprintf(st, sizeof st, "%d", statuses[i]);
    series(o, "hookd_http_requests_total", "source", "", "status", st);
    EMIT(o, " %llu\n", (unsigned long long)rest);
  }
  head(o, "hookd_admin_requests_total", "counter", "Admin listener requests answered, by status.");
  for (size_t i = 0; i < METRICS_N_STATUSES; i++) {
    uint64_t v = METRICS_GET(g_metrics.admin_requests[i]);
    if (v == 0) continue;
    char st[8];
    snprintf(st, sizeof st, "%d", statuses[i]);
    series(o, "hookd_admin_requests_total", "status", st, NULL, NULL);
    EMIT(o, " %llu\n", (unsigned long long)v);
  }
  head(o, "hookd_ingest_latency_seconds", "histogram",
       "Time from a complete webhook request to its answer (durable store included), by "
       "source.");
  for (size_t s = 0; s < g_n_sources; s++) {
    hist_render(o, "hookd_ingest_latency_seconds", "source", g_sources[s].name,
                &g_sources[s].ingest);
  }
}

static void render_events(out *o) {
  head(o, "hookd_events_total", "counter",
       "Events accepted and stored, by source and type (type \"other\" past the first "
       "64 types).");
  for (size_t i = 0; i < g_n_types; i++) {
    series(o, "hookd_events_total", "source", g_sources[g_types[i].source].name, "type",
           g_types[i].type);
    EMIT(o, " %llu\n", (unsigned long long)METRICS_GET(g_types[i].events));
  }
  for (size_t s = 0; s < g_n_sources; s++) {
    uint64_t v = METRICS_GET(g_sources[s].other_types);
    if (v == 0) continue;
    series(o, "hookd_events_total", "source", g_sources[s].name, "type", "other");
    EMIT(o, " %llu\n", (unsigned long long)v);
  }
#define COUNTER(name, help, field) \
  head(o, name, "counter", help);  \
  EMIT(o, name " %llu\n", (unsigned long long)METRICS_GET(g_metrics.field))
  COUNTER("hookd_events_accepted_total", "Events accepted and stored.", events_accepted);
  COUNTER("hookd_events_duplicate_total", "Events answered as duplicates of an accepted one.",
          events_duplicate);
  COUNTER("hookd_events_unrouted_total", "Accepted events that no route matched.", events_unrouted);
  COUNTER("hookd_connections_total", "Connections accepted.", connections_total);
  COUNTER("hookd_connections_refused_total", "Connections refused over max_connections.",
          connections_refused);
#undef COUNTER
  head(o, "hookd_connections_open", "gauge", "Open connections (webhook and admin).");
  EMIT(o, "hookd_connections_open %llu\n",
       (unsigned long long)METRICS_GET(g_metrics.connections_open));
}

/* ss[i]: the series of ms[i] (may be NULL when memory ran out). Caller holds g_mu. */
static void render_instances(out *o, metrics_instance *const *ms, metrics_inst_series **ss,
                             const char *const *names, size_t n) {
  static const char *const results[3] = {"ok", "retry", "fail"};

  head(o, "hookd_delivery_attempts_total", "counter",
       "deliver() calls, by plugin instance and result (ok, retry, fail).");
  for (size_t i = 0; i < n; i++) {
    for (int r = 0; r < 3 && ss[i]; r++) {
      series(o, "hookd_delivery_attempts_total", "instance", names[i], "result", results[r]);
      EMIT(o, " %llu\n", (unsigned long long)METRICS_GET(ss[i]->attempts[r]));
    }
  }
  head(o, "hookd_deliveries_total", "counter",
       "Finished deliveries, by plugin instance and outcome (delivered, dead).");
  for (size_t i = 0; i < n; i++) {
    if (ss[i] == NULL) continue;
    series(o, "hookd_deliveries_total", "instance", names[i], "outcome", "delivered");
    EMIT(o, " %llu\n", (unsigned long long)METRICS_GET(ss[i]->delivered));
    series(o, "hookd_deliveries_total", "instance", names[i], "outcome", "dead");
    EMIT(o, " %llu\n", (unsigned long long)METRICS_GET(ss[i]->dead));
  }
  head(o, "hookd_delivery_timeouts_total", "counter",
       "deliver() calls that overran timeout_ms, by plugin instance.");
  for (size_t i = 0; i < n; i++) {
    series(o, "hookd_delivery_timeouts_total", "instance", names[i], NULL, NULL);
    EMIT(o, " %llu\n", (unsigned long long)METRICS_GET(ms[i]->timeouts));
  }
  head(o, "hookd_deliveries_queued", "gauge", "Deliveries waiting or running, by plugin instance.");
  for (size_t i = 0; i < n; i++) {
    series(o, "hookd_deliveries_queued", "instance", names[i], NULL, NULL);
    EMIT(o, " %llu\n", (unsigned long long)METRICS_GET(ms[i]->queued));
  }
  head(o, "hookd_retry_queue_length", "gauge",
       "Deliveries that failed at least once and wait for (or run) another attempt, by plugin "
       "instance.");
  for (size_t i = 0; i < n; i++) {
    if (ss[i] == NULL) continue;
    int64_t v = atomic_load_explicit(&ss[i]->retrying, memory_order_relaxed);
    series(o, "hookd_retry_queue_length", "instance", names[i], NULL, NULL);
    EMIT(o, " %lld\n", (long long)(v > 0 ? v : 0));
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  head(o, "hookd_oldest_pending_delivery_age_seconds", "gauge",
       "Age of the oldest unfinished delivery, by plugin instance (0 when none).");
  for (size_t i = 0; i < n; i++) {
    if (ss[i] == NULL) continue;
    int64_t age = ss[i]->n_pending ? (int64_t)ts.tv_sec - ss[i]->pending[0].sec : 0;
    series(o, "hookd_oldest_pending_delivery_age_seconds", "instance", names[i], NULL, NULL);
    EMIT(o, " %lld\n", (long long)(age > 0 ? age : 0));
  }
  head(o, "hookd_delivery_latency_seconds", "histogram",
       "Time from accepting an event to its successful delivery, by plugin instance.");
  for (size_t i = 0; i < n; i++) {
    if (ss[i])
      hist_render(o, "hookd_delivery_latency_seconds", "instance", names[i], &ss[i]->latency);
  }
  head(o, "hookd_deliver_duration_seconds", "histogram",
       "Duration of one deliver() call, by plugin instance.");
  for (size_t i = 0; i < n; i++) {
    if (ss[i])
      hist_render(o, "hookd_deliver_duration_seconds", "instance", names[i], &ss[i]->duration);
  }
}

/* --- ingest edge: TLS and endpoint handshakes --------------------------------- */

static const char *const tls_reasons[] = {
#define X(r) #r,
    METRICS_TLS_REASONS(X)
#undef X
};
#define N_TLS_REASONS (sizeof tls_reasons / sizeof tls_reasons[0])
#define MAX_TLS_LISTENERS 16

static atomic_uint_fast64_t tls_full, tls_resumed, tls_fail[N_TLS_REASONS];
static atomic_uint_fast64_t tls_reload_ok, tls_reload_failed;
static struct {
  char listen[64];
  int64_t not_after;
} tls_certs[MAX_TLS_LISTENERS]; /* under g_mu */
static size_t n_tls_certs;
/* (source, kind, ok) -> count; kept small: one row per challenge source. */
static struct {
  char source[64];
  char kind[8];
  atomic_uint_fast64_t ok, refused;
} challenges[METRICS_MAX_SOURCES];
static size_t n_challenges; /* under g_mu */

void metrics_tls_handshake(int resumed) {
  METRICS_INC(*(resumed ? &tls_resumed : &tls_full));
}

void metrics_tls_failure(const char *reason) {
  size_t i = 0;
  while (i + 1 < N_TLS_REASONS && strcmp(tls_reasons[i], reason) != 0) i++;
  METRICS_INC(tls_fail[i]); /* unknown reasons land on the last: "other" */
}

void metrics_tls_certificate(const char *listen, int64_t not_after) {
  pthread_mutex_lock(&g_mu);
  size_t i = 0;
  while (i < n_tls_certs && strcmp(tls_certs[i].listen, listen) != 0) i++;
  if (i == n_tls_certs && n_tls_certs < MAX_TLS_LISTENERS)
    copy_str(tls_certs[n_tls_certs++].listen, 64, listen);
  if (i < n_tls_certs) tls_certs[i].not_after = not_after;
  pthread_mutex_unlock(&g_mu);
}

void metrics_tls_reload(int ok) {
  METRICS_INC(*(ok ? &tls_reload_ok : &tls_reload_failed));
}

void metrics_challenge(const char *source, const char *kind, int ok) {
  pthread_mutex_lock(&g_mu);
  size_t i = 0;
  while (i < n_challenges &&
         (strcmp(challenges[i].source, source) || strcmp(challenges[i].kind, kind)))
    i++;
  if (i == n_challenges && n_challenges < METRICS_MAX_SOURCES) {
    copy_str(challenges[i].source, sizeof challenges[i].source, source);
    copy_str(challenges[i].kind, sizeof challenges[i].kind, kind);
    n_challenges++;
  }
  pthread_mutex_unlock(&g_mu);
  if (i < METRICS_MAX_SOURCES) METRICS_INC(*(ok ? &challenges[i].ok : &challenges[i].refused));
}

/* Caller holds g_mu. */
static void render_edge(out *o) {
  head(o, "hookd_tls_handshakes_total", "counter",
       "TLS handshakes completed, by whether the session was resumed.");
  EMIT(o, "hookd_tls_handshakes_total{resumed=\"false\"} %llu\n",
       (unsigned long long)METRICS_GET(tls_full));
  EMIT(o, "hookd_tls_handshakes_total{resumed=\"true\"} %llu\n",
       (unsigned long long)METRICS_GET(tls_resumed));
  head(o, "hookd_tls_handshake_failures_total", "counter",
       "TLS handshakes that began and failed, by reason.");
  for (size_t i = 0; i < N_TLS_REASONS; i++) {
    EMIT(o, "hookd_tls_handshake_failures_total{reason=\"%s\"} %llu\n", tls_reasons[i],
         (unsigned long long)METRICS_GET(tls_fail[i]));
  }
  head(o, "hookd_tls_certificate_reloads_total", "counter",
       "Certificate loads on reload (SIGHUP, POST /reload), by result; a failed one keeps the "
       "certificate in use.");
  EMIT(o, "hookd_tls_certificate_reloads_total{result=\"ok\"} %llu\n",
       (unsigned long long)METRICS_GET(tls_reload_ok));
  EMIT(o, "hookd_tls_certificate_reloads_total{result=\"failed\"} %llu\n",
       (unsigned long long)METRICS_GET(tls_reload_failed));
  head(o, "hookd_tls_certificate_expiry_seconds", "gauge",
       "When the certificate served on a TLS listener expires, in Unix seconds.");
  for (size_t i = 0; i < n_tls_certs; i++) {
    series(o, "hookd_tls_certificate_expiry_seconds", "listen", tls_certs[i].listen, NULL, NULL);
    EMIT(o, " %lld\n", (long long)tls_certs[i].not_after);
  }
  head(o, "hookd_endpoint_handshakes_total", "counter",
       "Endpoint handshakes (Zoom url_validation, Slack url_verification) answered, by source, "
       "kind and result (refused: bad signature).");
  for (size_t i = 0; i < n_challenges; i++) {
    EMIT(o, "hookd_endpoint_handshakes_total{source=\"");
    o->rc |= metrics_append_label(o->buf, o->len, o->cap, challenges[i].source);
    EMIT(o, "\",kind=\"%s\",result=\"ok\"} %llu\n", challenges[i].kind,
         (unsigned long long)METRICS_GET(challenges[i].ok));
    EMIT(o, "hookd_endpoint_handshakes_total{source=\"");
    o->rc |= metrics_append_label(o->buf, o->len, o->cap, challenges[i].source);
    EMIT(o, "\",kind=\"%s\",result=\"refused\"} %llu\n", challenges[i].kind,
         (unsigned long long)METRICS_GET(challenges[i].refused));
  }
}

int metrics_render_states(char **buf, size_t *len, size_t *cap, const char *const *names,
                          const int *states, const char *const *state_names, size_t n_states,
                          metrics_instance *const *ms, size_t n) {
  out o = {buf, len, cap, 0};
  head(&o, "hookd_instance_state", "gauge",
       "1 for the current state of a plugin instance (ok, open: circuit breaker open, paused, "
       "saturated: at max_pending), 0 for the others.");
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < n_states; k++) {
      series(&o, "hookd_instance_state", "instance", names[i], "state", state_names[k]);
      EMIT(&o, " %d\n", states[i] == (int)k ? 1 : 0);
    }
  }
  head(&o, "hookd_delivery_held_total", "counter",
       "deliver() calls whose delivery waits again without using an attempt, by plugin instance "
       "and reason (rate_limited: the destination said too many requests; circuit_open).");
  for (size_t i = 0; i < n; i++) {
    metrics_inst_series *s = inst_series(ms[i], names[i]);
    if (s == NULL) continue;
    series(&o, "hookd_delivery_held_total", "instance", names[i], "reason", "rate_limited");
    EMIT(&o, " %llu\n", (unsigned long long)METRICS_GET(s->held[1]));
    series(&o, "hookd_delivery_held_total", "instance", names[i], "reason", "circuit_open");
    EMIT(&o, " %llu\n", (unsigned long long)METRICS_GET(s->held[0]));
  }
  return o.rc ? -1 : 0;
}

int metrics_render(char **buf, size_t *len, size_t *cap, metrics_instance *const *ms,
                   const char *const *names, size_t n) {
  out o = {buf, len, cap, 0};
  metrics_inst_series **ss = calloc(n ? n : 1, sizeof *ss);
  if (ss == NULL) return -1;
  for (size_t i = 0; i < n; i++) ss[i] = inst_series(ms[i], names[i]);
  pthread_mutex_lock(&g_mu);
  render_requests(&o);
  render_events(&o);
  render_instances(&o, ms, ss, names, n);
  render_edge(&o);
  pthread_mutex_unlock(&g_mu);
  free(ss);
  head(&o, "hookd_build_info", "gauge", "hookd version and plugin ABI; always 1.");
  EMIT(&o, "hookd_build_info{version=\"%s\",plugin_abi=\"%u.%u\"} 1\n", HOOKD_VERSION,
       HOOKD_PLUGIN_ABI_MAJOR, HOOKD_PLUGIN_ABI_MINOR);
  head(&o, "hookd_start_time_seconds", "gauge", "When hookd started, in Unix seconds.");
  EMIT(&o, "hookd_start_time_seconds %.3f\n", (double)g_metrics.start_ms / 1e3);
  return o.rc ? -1 : 0;
}
