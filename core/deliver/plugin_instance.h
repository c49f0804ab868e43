/* A plugin instance's fields: private to the plugin host and its process isolation. */
#ifndef HOOKD_PLUGIN_INSTANCE_H
#define HOOKD_PLUGIN_INSTANCE_H

/* Included by plugin_host.c, plugin_proc.c and plugin_child.c (and the unit
 * tests that look inside); every other file goes through plugin_host.h's
 * accessors, so the fields can change without touching them. */

#include "jsonc.h"
#include "metrics.h"
#include "plugin_host.h"
#include "plugin_options.h"

/* One configured plugin instance (the ABI's opaque hookd_instance). Owned by
 * the plugin_host; `cfg` points into the config, which must outlive it. */
struct hookd_instance {
  size_t index; /* position in config.plugins and plugin_host.insts */
  const char *name;
  plugin_module *mod;
  const struct config_plugin *cfg;
  void *state; /* what init() returned */
  int initialized;
  struct plugin_proc *proc; /* "isolation": "process": the supervised child that runs
                               this instance (plugin_proc.h); NULL in thread mode */
  metrics_instance m;
  /* Used only during init(): config access and its first error. */
  const jsonc_doc *doc;
  const char *config_dir; /* base of relative paths (config_path) */
  char cfg_error[512];
  char cfg_error_key[256]; /* the key path cfg_error is about; without a doc (in a
                              plugin child) cfg_error has no position and hookd adds it */
  /* Declared options (ABI 1.1): the state struct the host filled. */
  void *opt_state;
  /* What the host allocated for the instance (options, getter results);
   * released after destroy(). */
  plugin_owned owned;
};

#endif
