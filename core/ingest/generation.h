/* A generation: one loaded config with its plugin instances, router and dispatcher; reload swaps
 * them. */
#ifndef HOOKD_GENERATION_H
#define HOOKD_GENERATION_H

/*
 * hookd runs one current generation. A reload (SIGHUP, POST /reload) loads
 * and checks a new one completely — config, every plugin's init, the router,
 * the dispatcher's workers — and only then makes it current. The old one
 * retires: requests in flight finish with it; its instances' spool lanes go
 * to the new generation's instances of the same names (so per-key order
 * holds), and the lanes of instances the new config dropped drain on the
 * old instances. Once nothing refers to it and it runs nothing, its
 * instances are destroyed and their modules closed.
 *
 * generation_load may run on any thread (a reload runs it on a thread of
 * its own, so a slow ${file:} or plugin init never blocks the loop); the
 * rest runs on the loop thread.
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
  spool_lane **lanes; /* the spool lane of each instance, by index (generation_start) */
  unsigned refs;      /* current + requests in flight */
  int retired;
  struct generation *next; /* in the list of retired generations */
} generation;

/* Loads file: config, plugins (init), router. setup_log: apply the config's
 * log settings before the plugins start (at start; a reload applies them
 * once the swap is done). Returns NULL with one line in err. The new
 * generation holds one reference. */
generation *generation_load(const char *file, int setup_log, char *err, size_t errlen);
/* Finds the instances' spool lanes and starts the dispatcher's workers,
 * which wait for generation_activate. Returns 0, or -1 with err. */
int generation_start(generation *g, spool *sp, char *err, size_t errlen);
/* The workers take their lanes over (from a previous generation). */
void generation_activate(generation *g);

void generation_ref(generation *g);
/* Drops a reference; never frees (see generation_reapable). */
void generation_unref(generation *g);

/* A retired generation nothing refers to and whose queues are empty. */
int generation_reapable(const generation *g);

/* Stops the workers (waiting at most timeout_ms), destroys the instances and
 * frees everything, unless a deliver() outlives the wait: then returns -1
 * and frees nothing. Returns 0 when freed. */
int generation_free(generation *g, uint32_t timeout_ms);

/* Names of settings a reload cannot change (they need a restart), written
 * comma-separated to out; empty when none differ. */
void generation_fixed_changes(const config *old, const config *new_cfg, char *out, size_t len);

#endif
