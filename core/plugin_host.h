/* Plugin host: dlopen modules from plugin_dirs, check their ABI, run init/destroy, and serve the host function table. */
#ifndef HOOKD_PLUGIN_HOST_H
#define HOOKD_PLUGIN_HOST_H

#include <stddef.h>
#include "config.h"
#include "event.h"
#include "hookd/plugin.h"
#include "metrics.h"
#include "plugin_options.h"

typedef struct plugin_module {
  char *name;  /* module name as in the config */
  char *path;  /* the .so that was loaded */
  void *dl;    /* dlopen handle */
  const hookd_plugin *desc;
} plugin_module;

/* One configured plugin instance (the ABI's opaque hookd_instance). Owned by
 * the plugin_host; `cfg` points into the config, which must outlive it. */
struct hookd_instance {
  size_t index;             /* position in config.plugins and plugin_host.insts */
  const char *name;
  plugin_module *mod;
  const config_plugin *cfg;
  void *state;              /* what init() returned */
  int initialized;
  metrics_instance m;
  /* Used only during init(): config access and its first error. */
  const jsonc_doc *doc;
  const char *config_dir;   /* base of relative paths (config_path) */
  char cfg_error[512];
  /* Declared options (ABI 1.1): the state struct the host filled. */
  void *opt_state;
  /* What the host allocated for the instance (options, getter results);
   * released after destroy(). */
  plugin_owned owned;
};
typedef struct hookd_instance plugin_instance;

typedef struct plugin_host {
  plugin_module *mods;
  size_t n_mods;
  plugin_instance *insts;
  size_t n_insts;
} plugin_host;

/* Loads every module named by cfg->plugins and initialises every instance,
 * in config order. On the first failure destroys what was initialised and
 * returns -1 with one line in err naming the instance, the module and why
 * (not found, dlopen error, missing entry symbol, ABI mismatch, init failed
 * with the plugin's or the config getter's message). Main thread. */
int plugin_host_load(plugin_host *h, const config *cfg, char *err, size_t errlen);

/* Calls destroy() on every initialised instance and closes the modules.
 * skip[i] != 0 keeps instance i (and its module) alive, for an instance
 * whose deliver() is still running at shutdown. skip may be NULL. */
void plugin_host_unload(plugin_host *h, const unsigned char *skip);

/* Loads one module from cfg's plugin_dirs into m (m->name set by the
 * caller) and checks its descriptor: ABI major, size, callbacks and its
 * option table. Returns 0, or -1 with the reason in err. */
int plugin_host_load_module(plugin_module *m, const config *cfg, char *err, size_t errlen);

/* The module's declared options (ABI 1.1), or NULL for a plugin that reads
 * its config with the getters. */
const hookd_option *plugin_host_options(const hookd_plugin *desc);

/* Initialises one instance from its "config" object: the declared options
 * are checked and filled (plugin_options_fill), then the plugin's init()
 * runs. inst->mod, ->name and ->cfg are set by the caller; doc gives
 * positions for messages (may be NULL) and config_dir the base of relative
 * paths. The one entry point for an instance's set-up, whichever process
 * runs it. On failure returns -1 with "plugin instance 'N' (module M): ..."
 * in err and leaves nothing allocated. Main thread. */
int plugin_host_instance_init(plugin_instance *inst, const cJSON *conf, const jsonc_doc *doc,
                              const char *config_dir, char *err, size_t errlen);

/* Calls destroy() and releases what the host allocated for the instance. */
void plugin_host_instance_destroy(plugin_instance *inst);

const hookd_host_api *plugin_host_api(void);

/* Results of plugin_host_deliver beyond hookd_result. */
#define PLUGIN_CRASHED 100     /* the instance's process died during the call: a crash */
#define PLUGIN_TIMED_OUT 101   /* past timeout_ms, the call was stopped: a failed attempt */
#define PLUGIN_UNAVAILABLE 102 /* the instance cannot take calls now: not an attempt;
                                  out->retry_after_ms says when to ask again */

/* Runs one deliver() of inst and returns its hookd_result (or one of the
 * PLUGIN_* codes above). Worker thread. */
int plugin_host_deliver(plugin_instance *inst, const hookd_event *view, hookd_outcome *out);

/* Fills the read-only event view a plugin sees for a delivery. */
void plugin_host_event_view(hookd_event *view, const delivery *d, const plugin_instance *inst);

#endif
