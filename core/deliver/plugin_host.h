/* Plugin host: dlopen modules from plugin_dirs, check their ABI, run init/destroy, and serve the
 * host function table. */
#ifndef HOOKD_PLUGIN_HOST_H
#define HOOKD_PLUGIN_HOST_H

#include <stddef.h>
#include <stdio.h>
struct config;
struct config_plugin;
#include "config_delivery.h"
#include "event.h"
#include "hookd/plugin.h"
#include "metrics.h"
#include "jsonc.h"

typedef struct plugin_module {
  char *name; /* module name as in the config */
  char *path; /* the .so found in plugin_dirs */
  void *dl;   /* dlopen handle; NULL while only process-isolated instances use it
                 (hookd then never maps the module: its child does) */
  const hookd_plugin *desc;
} plugin_module;

struct plugin_proc;

/* One configured plugin instance (the ABI's opaque hookd_instance). Owned by
 * the plugin_host. Its fields are private to the plugin host and its
 * process isolation (plugin_instance.h); other files use the accessors
 * below. */
typedef struct hookd_instance plugin_instance;

typedef struct plugin_host {
  plugin_module *mods;
  size_t n_mods;
  plugin_instance *insts; /* n_insts, in config order: plugin_host_instance(h, i) */
  size_t n_insts;
} plugin_host;

/* Instance i (< h->n_insts) of h, in config order. */
plugin_instance *plugin_host_instance(const plugin_host *h, size_t i);
/* The instance's name, as in the config ("name"). */
const char *plugin_host_instance_name(const plugin_instance *inst);
/* The module it runs ("module"). */
const char *plugin_host_instance_module(const plugin_instance *inst);
/* Its delivery settings (the global ones with its overrides). */
const config_delivery *plugin_host_instance_delivery(const plugin_instance *inst);
/* Its counters, updated by the dispatcher from worker threads (atomics). */
metrics_instance *plugin_host_instance_metrics(plugin_instance *inst);
/* The supervised child that runs it ("isolation": "process"), or NULL in
 * thread mode. */
struct plugin_proc *plugin_host_instance_proc(const plugin_instance *inst);
/* 1 when its init() succeeded (or its child reported so), else 0. */
int plugin_host_instance_ready(const plugin_instance *inst);

/* A lone instance outside any plugin_host, for `hookd try`: named and
 * configured by cp (borrowed, like m), position index. Set it up with
 * plugin_host_instance_init; free it with plugin_host_instance_free after
 * plugin_host_instance_destroy. Returns NULL when out of memory. */
plugin_instance *plugin_host_instance_new(plugin_module *m, const struct config_plugin *cp,
                                          size_t index);
void plugin_host_instance_free(plugin_instance *inst);

/* Loads every module named by cfg->plugins and initialises every instance,
 * in config order. On the first failure destroys what was initialised and
 * returns -1 with one line in err naming the instance, the module and why
 * (not found, dlopen error, missing entry symbol, ABI mismatch, init failed
 * with the plugin's or the config getter's message). Main thread. */
int plugin_host_load(plugin_host *h, const struct config *cfg, char *err, size_t errlen);

/* Calls destroy() on every initialised instance and closes the modules.
 * skip[i] != 0 keeps instance i (and its module) alive, for an instance
 * whose deliver() is still running at shutdown. skip may be NULL. */
void plugin_host_unload(plugin_host *h, const unsigned char *skip);

/* Loads one module from cfg's plugin_dirs into m (m->name set by the
 * caller) and checks its descriptor: ABI major, size, callbacks and its
 * option table. Returns 0, or -1 with the reason in err. */
int plugin_host_load_module(plugin_module *m, const struct config *cfg, char *err, size_t errlen);

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

/* What plugin_host_deliver returns besides a hookd_result:
 * PLUGIN_CRASHED      the instance's child died during the call: counts as a crash;
 * PLUGIN_TIMED_OUT    past timeout_ms, the child was killed: a failed attempt;
 * PLUGIN_UNAVAILABLE  no child can run it now (restarting, backing off, init failed): not an
 *                     attempt; out->retry_after_ms says when to ask again. */
#define PLUGIN_CRASHED 100
#define PLUGIN_TIMED_OUT 101
#define PLUGIN_UNAVAILABLE 102

/* Runs one delivery on inst: in thread mode the module's deliver() on the
 * calling thread, in process mode a call into the instance's child
 * (plugin_proc_deliver). Returns a hookd_result or one of the PLUGIN_
 * codes above, with out->message saying why for every failure. Delivery
 * worker threads; at most `concurrency` calls at once per instance. */
int plugin_host_deliver(plugin_instance *inst, const hookd_event *view, hookd_outcome *out);

/* The second half of plugin_host_load_module: opens m->path (dlopen
 * RTLD_NOW | RTLD_LOCAL) and checks the descriptor. Returns 0, or -1 with
 * the reason in err. For thread-mode instances and inside a plugin's child
 * process (hookd itself never maps a module only isolated instances use). */
int plugin_host_open_module(plugin_module *m, char *err, size_t errlen);

#define PLUGIN_SETUP_EFAIL (-1)
#define PLUGIN_SETUP_EIGNORED (-2)

/* The two halves of plugin_host_instance_init, for a plugin child that
 * reports the parts to hookd. setup runs the options check and init() with
 * the host table api (NULL: plugin_host_api()) and returns 0,
 * PLUGIN_SETUP_EFAIL, or PLUGIN_SETUP_EIGNORED (init succeeded over a
 * config error a getter recorded: destroyed again, a config mistake must
 * not pass). On failure inst->cfg_error holds
 * the option's or the getter's message — positioned when doc is given,
 * else bare with its key path in inst->cfg_error_key — perr the plugin's
 * own reason, and *from_options says the message needs no "init failed"
 * prefix. init_message words it all as one line. */
int plugin_host_instance_setup(plugin_instance *inst, const hookd_host_api *api, const cJSON *conf,
                               const jsonc_doc *doc, const char *config_dir, char *perr,
                               size_t perrlen, int *from_options);
void plugin_host_init_message(char *err, size_t errlen, const plugin_instance *inst, int rc,
                              const char *cfg_error, const char *perr, int from_options);

/* Shutdown: deliveries running in process-isolated instances must end
 * within timeout_ms; past it their children are killed and the calls
 * return PLUGIN_UNAVAILABLE (the deliveries stay pending for the next
 * start). Called before the dispatcher stops. */
void plugin_host_stopping(plugin_host *h, uint32_t timeout_ms);

/* For `hookd check`: one line per thread-mode instance whose module lives
 * outside hookd's bundled plugin directory, recommending process isolation.
 * Returns how many lines were written. */
size_t plugin_host_advise(const plugin_host *h, FILE *out);

/* Fills the read-only event view a plugin sees for a delivery. */
void plugin_host_event_view(hookd_event *view, const delivery *d, const plugin_instance *inst);

#endif
