/* Process-wide counters (atomics, any thread) and their Prometheus text form. */
#ifndef HOOKD_METRICS_H
#define HOOKD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* HTTP statuses hookd answers, for hookd_http_requests_total{status}. */
#define METRICS_STATUSES(X) \
  X(200) X(400) X(401) X(404) X(405) X(408) X(413) X(431) X(500) X(503)

typedef struct metrics {
  atomic_uint_fast64_t requests[10]; /* by METRICS_STATUSES index; other 2xx count as 200 */
  atomic_uint_fast64_t events_accepted;
  atomic_uint_fast64_t events_duplicate;
  atomic_uint_fast64_t events_unrouted;
  atomic_uint_fast64_t connections_open;
  atomic_uint_fast64_t connections_total;
  atomic_uint_fast64_t connections_refused;
} metrics;

/* Per plugin instance; embedded in the instance. */
typedef struct metrics_instance {
  atomic_uint_fast64_t ok;
  atomic_uint_fast64_t retry;
  atomic_uint_fast64_t fail;
  atomic_uint_fast64_t dead;
  atomic_uint_fast64_t timeouts; /* deliver() calls that overran timeout_ms */
  atomic_uint_fast64_t queued;   /* deliveries waiting or in flight */
} metrics_instance;

extern metrics g_metrics;

void metrics_count_status(int status);
#define METRICS_INC(field) atomic_fetch_add_explicit(&(field), 1, memory_order_relaxed)
#define METRICS_DEC(field) atomic_fetch_sub_explicit(&(field), 1, memory_order_relaxed)
#define METRICS_GET(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* Appends the Prometheus text exposition of the global counters to a malloc'd
 * buffer (*buf, *len, *cap grow as needed). Returns 0 or -1 (no memory). */
int metrics_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int metrics_render_global(char **buf, size_t *len, size_t *cap);

#endif
