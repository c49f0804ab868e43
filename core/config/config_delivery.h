/* Delivery settings ("delivery", global and per instance): retries, timeouts, rate, breaker. */
#ifndef HOOKD_CONFIG_DELIVERY_H
#define HOOKD_CONFIG_DELIVERY_H

#include <stdint.h>

/* Filled by config_load: the global "delivery" object, and for each plugin
 * instance the global one with that entry's overrides. The defaults are in
 * the comments. */
typedef struct config_delivery {
  uint32_t concurrency;        /* 4 */
  uint32_t max_attempts;       /* 12 */
  uint64_t backoff_initial_ms; /* 1000 */
  uint64_t backoff_max_ms;     /* 3600000 */
  uint64_t timeout_ms;         /* 30000: a deliver() past it is a failed attempt */
  uint32_t max_crashes;        /* 3: crashes while running that dead-letter a delivery */
  uint64_t max_pending;        /* 100000: unfinished deliveries of one instance */
  uint32_t max_threads;        /* 256: worker threads of all instances (global only) */
  /* "rate": "N/s" | "N/m" | "N/h" (null: no limit): deliveries started,
   * evenly spaced (a token bucket with a burst of 1). */
  uint32_t rate_count;     /* N; 0: no limit */
  uint32_t rate_period_ms; /* 1000, 60000 or 3600000 */
  /* "breaker": {"failures", "cooldown_ms"} */
  uint32_t breaker_failures;    /* 20: consecutive failed attempts that open the circuit; 0: off */
  uint64_t breaker_cooldown_ms; /* 30000: one probe this often while open */
} config_delivery;

#endif
