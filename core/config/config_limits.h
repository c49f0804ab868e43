/* Connection limits ("limits" in the config): what the HTTP server needs of the config. */
#ifndef HOOKD_CONFIG_LIMITS_H
#define HOOKD_CONFIG_LIMITS_H

#include <stdint.h>

/* Filled by config_load; the defaults are in the comments. */
typedef struct config_limits {
  uint64_t max_body_bytes;    /* 1048576 */
  uint32_t max_header_bytes;  /* 16384 */
  uint32_t header_timeout_ms; /* 10000 */
  uint32_t body_timeout_ms;   /* 30000 */
  uint32_t idle_timeout_ms;   /* 60000 */
  uint32_t max_connections;   /* 10000 */
} config_limits;

#endif
