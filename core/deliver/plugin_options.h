/* Declared plugin options (ABI 1.1): check a table, fill a state struct from an instance's config,
 * print the table as help. */
#ifndef HOOKD_PLUGIN_OPTIONS_H
#define HOOKD_PLUGIN_OPTIONS_H

#include <stddef.h>
#include <stdio.h>
#include <cjson/cJSON.h>
#include "hookd/plugin.h"
#include "jsonc.h"

/* What the host allocated while filling one instance's options: lists,
 * resolved paths, compiled templates and parsed defaults. Owned by the
 * instance, released after the plugin's destroy(). */
typedef struct plugin_owned {
  void **mem; /* free() */
  size_t n_mem, cap_mem;
  hookd_template **tpls; /* template_free() */
  size_t n_tpls, cap_tpls;
  cJSON *defaults;     /* cJSON_Delete(): values parsed from `def` texts */
  uint32_t timeout_ms; /* a deprecated plugin-config "timeout_ms", 0 when none */
} plugin_owned;

/* Where the values come from and how errors name them. */
typedef struct plugin_options_src {
  const cJSON *config;    /* the instance's "config" object */
  const jsonc_doc *doc;   /* for FILE:LINE:COL; may be NULL */
  const char *keypath;    /* "plugins[2].config" */
  const char *config_dir; /* base of relative paths */
  const char *instance;   /* for warnings */
} plugin_options_src;

/* Checks a module's table once, at load: known types, ENUM rows with
 * choices, unique names, each field inside state_size and aligned for its
 * type. Returns 0, or -1 with the reason in err (a plugin bug). */
int plugin_options_check_table(const hookd_option *table, size_t state_size, char *err,
                               size_t errlen);

/* Rejects unknown keys (with "did you mean"), checks and converts every
 * option, applies defaults and writes the values into state. A plugin
 * config "timeout_ms" that the table does not declare (the bundled plugins
 * had one each before ABI 1.1) is checked (1 to 3600000), kept in
 * owned->timeout_ms and logged as deprecated: the host passes the shorter
 * of it and delivery.timeout_ms to deliver() in hookd_event.timeout_ms, so
 * existing configs keep their behaviour. Returns 0, or -1 with one line in err:
 * "FILE:LINE:COL: plugins[2].config.KEY: message". What was allocated is in
 * *owned either way (release it). Main thread (or the isolation child). */
int plugin_options_fill(const hookd_option *table, const plugin_options_src *src, void *state,
                        plugin_owned *owned, char *err, size_t errlen);

/* Adds p (malloc'd) to what owned frees. Returns 0, or -1 (p freed) when
 * out of memory or p is NULL. */
int plugin_options_keep(plugin_owned *owned, void *p);

void plugin_options_release(plugin_owned *owned);

/* Prints the table as help: one entry per option with its type, range or
 * choices, default or "required", escaping, and description. */
void plugin_options_print(FILE *out, const hookd_option *table);

/* The type's name as `hookd plugins` prints it ("string", "int", ...). */
const char *plugin_options_type_name(hookd_option_type type);

#endif
