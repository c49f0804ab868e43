/* Process-wide counters, histograms and the recent-events ring (atomics and one lock, any thread),
 * and their Prometheus text form. */
#ifndef HOOKD_METRICS_H
#define HOOKD_METRICS_H

/*
 * Two kinds of numbers live here:
 *
 * - plain atomics in g_metrics and in each plugin instance's
 *   metrics_instance (cheap enough for every request and delivery);
 * - labelled series kept by name (per source, per event type, per plugin
 *   instance): created on first use, never freed, so a counter keeps
 *   counting across a config reload that keeps the name. Their number is
 *   bounded: past METRICS_MAX_SOURCES / METRICS_MAX_INSTANCES /
 *   METRICS_MAX_TYPES the label becomes "other", so a sender inventing
 *   event types cannot grow /metrics without limit.
 *
 * Every function is thread-safe. Rendering takes the lock that guards the
 * series tables; the hot paths take it only to find a series (once per
 * instance: the pointer is cached in metrics_instance) or to update the
 * recent-events ring and the pending-age table.
 */

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* HTTP statuses hookd answers, for hookd_http_requests_total{status}. */
#define METRICS_STATUSES(X) \
  X(200) X(400) X(401) X(403) X(404) X(405) X(408) X(413) X(415) X(417) X(431) X(500) X(503)
#define METRICS_N_STATUSES 13

#define METRICS_MAX_SOURCES 64
#define METRICS_MAX_INSTANCES 256
#define METRICS_MAX_TYPES 64     /* distinct (source, event type) label pairs */
#define METRICS_RECENT 50        /* events the status page shows */
#define METRICS_RECENT_TARGETS 8 /* plugin instances shown per recent event */

typedef struct metrics {
  atomic_uint_fast64_t requests[METRICS_N_STATUSES];       /* every answer, both listeners */
  atomic_uint_fast64_t admin_requests[METRICS_N_STATUSES]; /* answers of the admin listener */
  atomic_uint_fast64_t events_accepted;
  atomic_uint_fast64_t events_duplicate;
  atomic_uint_fast64_t events_unrouted;
  atomic_uint_fast64_t connections_open;
  atomic_uint_fast64_t connections_total;
  atomic_uint_fast64_t connections_refused;
  int64_t start_ms; /* set by metrics_init */
} metrics;

struct metrics_inst_series;

/* Per plugin instance; embedded in the instance (zeroed memory is ready). */
typedef struct metrics_instance {
  atomic_uint_fast64_t ok;
  atomic_uint_fast64_t retry;
  atomic_uint_fast64_t fail;
  atomic_uint_fast64_t dead;
  atomic_uint_fast64_t timeouts;              /* deliver() calls that overran timeout_ms */
  atomic_uint_fast64_t queued;                /* deliveries waiting or in flight */
  struct metrics_inst_series *_Atomic series; /* the by-name series, found on first use */
} metrics_instance;

extern metrics g_metrics;

/* Records the start time (hookd_start_time_seconds); runs by itself before main(). */
void metrics_init(void);

/* Counts an answer (http_server.c, every listener). Other 2xx count as 200. */
void metrics_count_status(int status);
/* Counts an answer of the admin listener (also counted by metrics_count_status;
 * the webhook figures are the difference). */
void metrics_count_admin(int status);
/* Counts a webhook answer of a known source (NULL or "": no source matched),
 * with the time from the complete request to the answer (seconds < 0: not
 * measured). */
void metrics_count_source(const char *source, int status, double seconds);

/* Attribution of the next answer on this thread to a webhook source, for the
 * server: begin when a request of `source` is complete (returns the time,
 * uv_hrtime), resume before answering one later (with that time), end when
 * the handler returns without answering. The next metrics_count_status() on
 * the thread counts the answer for the source, observes the ingest latency
 * and clears the tag. */
uint64_t metrics_source_begin(const char *source);
void metrics_source_resume(const char *source, uint64_t t0);
void metrics_source_end(void);

/* An event was accepted and stored (n_targets deliveries): counts it by
 * (source, type) and puts it at the front of the recent-events ring. */
void metrics_event_accepted(const char *source, const char *id, const char *type,
                            int64_t received_ms, size_t n_targets);

/* --- ingest edge (TLS, handshakes, content codings) --------------------------
 * tls.c counts handshakes (full or resumed) and the failures of those that
 * began, by reason; listeners.c records each TLS listener's certificate expiry
 * and certificate reloads; the request path counts endpoint handshakes
 * (challenges) answered by kind and result. */
/* clang-format does not settle on one layout for this list. */
/* clang-format off */
#define METRICS_TLS_REASONS(X) \
  X(protocol_version) X(no_shared_cipher) X(alpn) X(client_certificate) \
  X(certificate_rejected) X(plain_http) X(malformed) X(timeout) X(closed) X(other)
/* clang-format on */
void metrics_tls_handshake(int resumed);
void metrics_tls_failure(const char *reason);
/* The certificate now served on listener `listen` expires at not_after
 * (Unix seconds); ok is 0 when a reload could not load a new one. */
void metrics_tls_certificate(const char *listen, int64_t not_after);
void metrics_tls_reload(int ok);
/* An endpoint handshake (kind "zoom" or "slack") answered: ok 1, or 0 when
 * its signature was refused. */
void metrics_challenge(const char *source, const char *kind, int ok);

#define METRICS_INC(field) atomic_fetch_add_explicit(&(field), 1, memory_order_relaxed)
#define METRICS_DEC(field) atomic_fetch_sub_explicit(&(field), 1, memory_order_relaxed)
#define METRICS_GET(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* Delivery hooks, from the dispatcher (under the instance's queue lock).
 * queued: a delivery entered the instance's queue (new, recovered or
 * replayed) with `attempt` attempts made before.
 * settled: one deliver() call returned `result` (a hookd_result) after
 * took_ms; finished is 1 when the delivery is done (delivered or dead) and 0
 * when it waits for a retry; message is the plugin's outcome message. */
void metrics_delivery_queued(metrics_instance *m, const char *instance, const char *source,
                             const char *event_id, const char *type, int64_t received_ms,
                             uint32_t attempt);
void metrics_delivery_settled(metrics_instance *m, const char *instance, const char *source,
                              const char *event_id, int64_t received_ms, uint32_t attempt,
                              int result, int finished, int64_t took_ms, const char *message);

/* Process isolation (plugin_proc.c): a child of the instance was started
 * after its first one (a restart), or died without hookd asking (a crash).
 * Kept by instance name like the series above, so they count on across a
 * reload. m may be any metrics_instance used for that name. */
void metrics_child_restarted(metrics_instance *m, const char *instance);
void metrics_child_crashed(metrics_instance *m, const char *instance);
void metrics_child_counts(metrics_instance *m, const char *instance, uint64_t *restarts,
                          uint64_t *crashes);

/* What the status page shows of one instance. */
typedef struct metrics_instance_view {
  uint64_t attempts, delivered, dead, retrying;
  int64_t oldest_pending_ms; /* accept time, 0 when none */
  int last_result;           /* hookd_result of the last deliver(), -1 when none */
  int64_t last_ms;           /* when it returned */
  char last_message[256];
} metrics_instance_view;
void metrics_instance_get(metrics_instance *m, const char *instance, metrics_instance_view *out);

/* One entry of the recent-events ring, for the status page. */
typedef struct metrics_recent_target {
  char instance[64];
  char outcome[16]; /* queued | retrying | delivered | dead */
  uint32_t attempt;
} metrics_recent_target;
typedef struct metrics_recent {
  char source[64];
  char id[128];
  char type[128];
  int64_t received_ms;
  size_t n_targets; /* shown; more_targets were not kept */
  size_t more_targets;
  metrics_recent_target targets[METRICS_RECENT_TARGETS];
} metrics_recent;
/* Copies up to max entries, newest first; returns how many. */
size_t metrics_recent_get(metrics_recent *out, size_t max);

/* A delivery of the instance was held back after its call without using an
 * attempt: rate_limited 1 for a destination's "too many requests", 0 for an
 * open circuit (pace.h). */
void metrics_delivery_held(metrics_instance *m, const char *instance, int rate_limited);

/* --- rejected requests (the status page) ------------------------------------
 * The last METRICS_REJECTED webhook requests answered 4xx or 5xx, with why, so
 * a misconfigured sender shows at once. Strings are cut to fit. */
#define METRICS_REJECTED 50
typedef struct metrics_rejected {
  int64_t at_ms;
  char peer[64];
  char path[128];
  int status;
  char reason[160];
} metrics_rejected;
void metrics_rejected_add(const char *peer, const char *path, int status, const char *reason);
/* Copies up to max entries, newest first; returns how many. */
size_t metrics_rejected_get(metrics_rejected *out, size_t max);

/* --- the last hour, per minute (the status page's charts) --------------------
 * [k] is the minute first_minute + k (Unix ms / 60000); [59] the current one. */
#define METRICS_MINUTES 60
typedef struct metrics_history {
  int64_t first_minute;
  uint32_t accepted[METRICS_MINUTES], rejected[METRICS_MINUTES], delivered[METRICS_MINUTES];
} metrics_history;
void metrics_history_get(metrics_history *out, int64_t now_ms);
/* Per instance: finished deliveries, failed attempts that wait for a retry,
 * dead letters, and calls held back (rate limited, circuit open). */
typedef struct metrics_instance_history {
  int64_t first_minute;
  uint32_t delivered[METRICS_MINUTES], retried[METRICS_MINUTES], dead[METRICS_MINUTES],
      held[METRICS_MINUTES];
} metrics_instance_history;
void metrics_instance_history_get(metrics_instance *m, const char *instance,
                                  metrics_instance_history *out, int64_t now_ms);

/* hookd_instance_state{instance,state} and hookd_delivery_held_total: the n
 * instances' states (pace_state numbers, PACE_N_STATES names) and held
 * counts, appended to a Prometheus text buffer. */
int metrics_render_states(char **buf, size_t *len, size_t *cap, const char *const *names,
                          const int *states, const char *const *state_names, size_t n_states,
                          metrics_instance *const *ms, size_t n);

/* Appends printf output to a malloc'd buffer (*buf, *len, *cap grow as
 * needed). Returns 0 or -1 (no memory). */
int metrics_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends s as a Prometheus label value (backslash, quote, newline escaped). */
int metrics_append_label(char **buf, size_t *len, size_t *cap, const char *s);

/* Appends the exposition of everything kept here: requests by source and
 * status, events by type, connections, the delivery series of the n plugin
 * instances given (ms[i] named names[i]), histograms, build info. Returns 0
 * or -1. */
int metrics_render(char **buf, size_t *len, size_t *cap, metrics_instance *const *ms,
                   const char *const *names, size_t n);

#endif
