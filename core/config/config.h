/* The config file: load the .jsonc, substitute ${...}, check every key, build typed settings. */
#ifndef HOOKD_CONFIG_H
#define HOOKD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "access.h"
#include "config_delivery.h"
#include "config_limits.h"
#include "envelope.h"
#include "jsonc.h"
#include "log.h"
#include "verify.h"

typedef enum { SPOOL_SYNC_FULL = 0, SPOOL_SYNC_NORMAL, SPOOL_SYNC_OFF } spool_sync;
/* Where the spool lives: data_dir/spool.db, or a PostgreSQL database shared
 * by several nodes (DESIGN §10). */
typedef enum { SPOOL_BACKEND_SQLITE = 0, SPOOL_BACKEND_POSTGRES } spool_backend;

struct tls_ctx;

/* TLS settings of one listen entry ("tls": {...}); all NULL for plain HTTP. */
typedef struct config_tls {
  char *cert;          /* PEM certificate and chain, resolved against the config's dir */
  char *key;           /* PEM private key */
  char *client_ca;     /* PEM CAs for client certificates; NULL: none asked for */
  struct tls_ctx *ctx; /* built from the files by config_load (owned) */
} config_tls;

/* Endpoint handshakes a source answers (DESIGN §4 "challenge"). */
typedef enum { CHALLENGE_NONE = 0, CHALLENGE_ZOOM, CHALLENGE_SLACK } config_challenge;

typedef struct config_source {
  char *name;
  char *path; /* request path, exact match, e.g. "/webhooks/cirrus" */
  envelope_spec envelope;
  int success_status; /* 200 */
  verify_config verify;
  access_list allow_ips; /* empty: any client */
  char *keypath;         /* "sources[0]", for messages */
  const char *format;    /* "cirrus-insight", "generic", or a preset's name (static) */
  config_challenge challenge;
} config_source;

/* Where a plugin instance runs (DESIGN §1, §4): inside hookd on its worker
 * threads, or in a child process of its own that hookd supervises. */
typedef enum { CONFIG_ISOLATION_THREAD = 0, CONFIG_ISOLATION_PROCESS } config_isolation;

typedef struct config_plugin {
  char *name;                 /* instance name, unique */
  char *module;               /* file name without ".so" */
  cJSON *config;              /* the "config" object (an empty object when absent);
                                 points into doc.root */
  char *keypath;              /* "plugins[2]" */
  config_delivery delivery;   /* the global "delivery" with this entry's overrides */
  config_isolation isolation; /* "isolation": "thread" (default) | "process" */
} config_plugin;

typedef struct config_when {
  char *path;   /* dotted path into the envelope */
  cJSON *value; /* expected value (any JSON scalar); points into doc.root */
} config_when;

typedef struct config_route {
  char *source;  /* NULL: any source */
  char **events; /* patterns */
  size_t n_events;
  size_t *to; /* indices into config.plugins */
  size_t n_to;
  config_when *when;
  size_t n_when;
  char *keypath; /* "routes[1]" */
} config_route;

typedef struct config {
  jsonc_doc doc;          /* kept: plugin config getters read from it */
  char *file;             /* path as given */
  char *dir;              /* directory of the config file: base of relative paths */
  char **listen;          /* "HOST:PORT" or "[V6]:PORT"; "listen" may be a string or a list */
  config_tls *listen_tls; /* n_listen entries: an entry may be {"address", "tls"} */
  size_t n_listen;
  char *admin_listen; /* NULL when absent */
  char *admin_token;  /* NULL when absent: the admin endpoints need no token */
  char *data_dir;     /* resolved against dir */
  char **plugin_dirs; /* resolved against dir */
  size_t n_plugin_dirs;
  config_limits limits;
  spool_sync sync;               /* "spool": {"sync": ...} */
  uint64_t spool_max_pending;    /* 0 (none): a cap on all instances' pending deliveries */
  uint64_t spool_min_free_bytes; /* 64 MiB: disk floor of data_dir */
  int64_t spool_retention_ms;    /* 7 days: finished events are pruned after */
  spool_backend spool_backend;   /* "backend": "sqlite" (default) | "postgres" */
  char *spool_url;               /* postgres: libpq URL or key=value string; a secret:
                                    never logged (config_mask_url for messages) */
  uint64_t spool_lease_ms;       /* postgres: 30000, how long a claim holds a delivery */
  config_source *sources;
  size_t n_sources;
  config_plugin *plugins;
  size_t n_plugins;
  config_route *routes;
  size_t n_routes;
  config_delivery delivery;
  log_level log_level; /* "log": {"level": "info", "format": "text"} */
  log_format log_format;
  uint32_t shutdown_timeout_ms; /* 30000 */
  uint32_t reload_timeout_ms;   /* 30000: a reload that takes longer is abandoned */
  access_list trusted_proxies;  /* peers whose X-Forwarded-For is believed */
  char *user;                   /* run as this user after binding (NULL: stay) */
  char *group;                  /* and this group (NULL: the user's primary group) */
} config;

/* Loads and checks the file. On failure returns -1 and writes one line to err:
 * "FILE:LINE:COL: KEYPATH: message". Plugins are not loaded here. */
int config_load(config *cfg, const char *path, char *err, size_t errlen);
void config_free(config *cfg);

/* "N/s", "N/m" or "N/h" (N from 1 to 1000000) into *count and *period_ms.
 * Returns 0, or -1 when malformed. */
int config_parse_rate(const char *s, uint32_t *count, uint32_t *period_ms);

/* Writes url into out (len bytes) with its password replaced by "***"
 * (URL userinfo or key=value "password"), for messages and `hookd check`. */
void config_mask_url(const char *url, char *out, size_t len);

/* "7d", "12h", "30m", "90s" or "500ms" as milliseconds; -1 when malformed. */
int64_t config_parse_duration(const char *s);

/* Parses "HOST:PORT" / "[V6]:PORT" / ":PORT" into a socket address. */
struct sockaddr_storage;
int config_parse_addr(const char *s, struct sockaddr_storage *out);

#endif
