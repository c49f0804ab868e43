/* Plugin host: dlopen modules from plugin_dirs, check their ABI, run init/destroy, and serve the host function table. */
#ifndef HOOKD_PLUGIN_HOST_H
#define HOOKD_PLUGIN_HOST_H

#include <stddef.h>
#include <stdio.h>
#include "config.h"
#include "event.h"
#include "hookd/plugin.h"
#include "metrics.h"

typedef struct plugin_module {
  char *name;  /* module name as in the config */
  char *path;  /* the .so found in plugin_dirs */
  void *dl;    /* dlopen handle; NULL while only process-isolated instances use it
                  (hookd then never maps the module: its child does) */
  const hookd_plugin *desc;
} plugin_module;

struct plugin_proc;

/* One configured plugin instance (the ABI's opaque hookd_instance). Owned by
 * the plugin_host; `cfg` points into the config, which must outlive it. */
struct hookd_instance {
  size_t index;             /* position in config.plugins and plugin_host.insts */
  const char *name;
  plugin_module *mod;
  const config_plugin *cfg;
  void *state;              /* what init() returned */
  int initialized;
  struct plugin_proc *proc; /* "isolation": "process": the supervised child that runs
                               this instance (plugin_proc.h); NULL in thread mode */
  metrics_instance m;
  /* Used only during init(): config access and its first error. */
  const jsonc_doc *doc;
  const char *config_dir;   /* base of relative paths (config_path) */
  char cfg_error[512];
  char cfg_error_key[256];  /* the key path cfg_error is about; without a doc (in a
                               plugin child) cfg_error has no position and hookd adds it */
  void **allocs;            /* host allocations handed to the plugin's init */
  size_t n_allocs, cap_allocs;
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

/* Opens m->path (dlopen RTLD_NOW | RTLD_LOCAL) and checks the entry symbol,
 * the ABI and the descriptor. Returns 0, or -1 with the reason in err. Used
 * for thread-mode instances and inside a plugin's child process. */
int plugin_host_open_module(plugin_module *m, char *err, size_t errlen);

/* Runs the module's init for inst (inst->mod->desc, inst->cfg set) with
 * the host table api (NULL: plugin_host_api()). doc gives config errors
 * their file:line:column; without one (in a plugin child) inst->cfg_error
 * holds the bare message and cfg_error_key its key path. Returns 0; -1
 * when init failed (why: inst->cfg_error, else perr); -2 when init
 * succeeded although a getter recorded an error (the instance is destroyed
 * again: a config mistake must not pass). The thread that loads the
 * generation (main, or a reload's), or a plugin child's main thread. */
int plugin_host_init(plugin_instance *inst, const hookd_host_api *api, const jsonc_doc *doc,
                     const char *config_dir, char *perr, size_t perrlen);
/* The one-line message for a failed plugin_host_init (rc -1 or -2), from the
 * (positioned) getter message cfg_error or else the plugin's perr. */
void plugin_host_init_message(char *err, size_t errlen, const plugin_instance *inst, int rc,
                              const char *cfg_error, const char *perr);

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
