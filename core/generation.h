/* A generation: one loaded config with its plugin instances, router and dispatcher; reload swaps them. */
#ifndef HOOKD_GENERATION_H
#define HOOKD_GENERATION_H

/*
 * hookd runs one current generation. A reload (SIGHUP, POST /reload) loads
 * and checks a new one completely — config, every plugin's init, the router,
 * the dispatcher's workers — and only then makes it current. The old one
 * retires: requests in flight finish with it, deliveries already queued
 * finish on the instances they were routed to, and once nothing refers to it
 * and its queues are empty its instances are destroyed and their modules
 * closed. Everything here runs on the loop thread (the main thread).
 */

#include <stddef.h>
#include "config.h"
#include "dispatch.h"
#include "plugin_host.h"
#include "router.h"
#include "spool.h"

typedef struct generation {
  config cfg;
  plugin_host host;
  router *rt;
  dispatch *dp;       /* NULL until generation_start */
  const char **names; /* instance names by index, for spool_store */
  unsigned refs;      /* current + requests in flight */
  int retired;
  struct generation *next; /* in the list of retired generations */
} generation;

/* Loads file: config, plugins (init), router. setup_log: apply the config's
 * log settings before the plugins start (at start; a reload applies them
 * once the swap is done). Returns NULL with one line in err. The new
 * generation holds one reference. */
generation *generation_load(const char *file, int setup_log, char *err, size_t errlen);
/* Starts the dispatcher's workers. Returns 0, or -1 with err. */
int generation_start(generation *g, spool *sp, char *err, size_t errlen);

void generation_ref(generation *g);
/* Drops a reference; never frees (see generation_reapable). */
void generation_unref(generation *g);

/* A retired generation nothing refers to and whose queues are empty. */
int generation_reapable(const generation *g);

/* Stops the workers (waiting at most timeout_ms), destroys the instances and
 * frees everything, unless a deliver() outlives the wait: then returns -1
 * and frees nothing. Returns 0 when freed. *left (may be NULL) gets the
 * number of deliveries left undelivered (they stay in the spool). */
int generation_free(generation *g, uint32_t timeout_ms, size_t *left);

/* Names of settings a reload cannot change (they need a restart), written
 * comma-separated to out; empty when none differ. */
void generation_fixed_changes(const config *old, const config *new_cfg, char *out, size_t len);

#endif
