/* Plugin host: module loading with ABI checks, instance init/destroy, and the host function table.
 */
#include "plugin_host.h"
#include "pattern.h"
#include "config.h"
#include "plugin_instance.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envelope.h"
#include "http_client.h"
#include "log.h"
#include "plugin_proc.h"
#include "privs.h"
#include "smtp_client.h"
#include "template.h"

/* A view of one JSON object of a plugin's config, with its key path for
 * messages. Handed to the plugin as the opaque hookd_config. */
struct hookd_config {
  plugin_instance *inst;
  cJSON *node;
  char *keypath; /* "plugins[2].config" */
};

/* Host allocations handed to the plugin's init (lists, resolved paths,
 * sub-objects) live in inst->owned with the declared options' and go after
 * destroy(). */
static int keep(plugin_instance *inst, void *p) {
  return plugin_options_keep(&inst->owned, p);
}

/* --- config getters ------------------------------------------------------ */

static void key_path(char *out, size_t n, const hookd_config *cfg, const char *key) {
  if (key == NULL || *key == '\0') {
    snprintf(out, n, "%s", cfg->keypath);
  } else {
    snprintf(out, n, "%s.%s", cfg->keypath, key);
  }
}

static int record(const hookd_config *cfg, const char *key, const char *fmt, va_list ap) {
  plugin_instance *inst = cfg->inst;
  if (inst->cfg_error[0] != '\0') return HOOKD_E_INVALID; /* keep the first */
  char msg[384];
  vsnprintf(msg, sizeof msg, fmt, ap);
  key_path(inst->cfg_error_key, sizeof inst->cfg_error_key, cfg, key);
  if (inst->doc == NULL) {
    /* In a plugin child: hookd, which has the file, adds the position. */
    snprintf(inst->cfg_error, sizeof inst->cfg_error, "%s", msg);
  } else {
    jsonc_error(inst->doc, inst->cfg_error_key, inst->cfg_error, sizeof inst->cfg_error, "%s", msg);
  }
  return HOOKD_E_INVALID;
}

static int record_f(const hookd_config *cfg, const char *key, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  record(cfg, key, fmt, ap);
  va_end(ap);
  return HOOKD_E_TYPE;
}

static int host_config_error(const hookd_config *cfg, const char *key, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = record(cfg, key, fmt, ap);
  va_end(ap);
  return rc;
}

static cJSON *item(const hookd_config *cfg, const char *key) {
  if (cfg == NULL || cfg->node == NULL) return NULL;
  cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg->node, key);
  return v;
}

static int host_config_string(const hookd_config *cfg, const char *key, const char *def,
                              const char **out) {
  cJSON *v = item(cfg, key);
  if (v == NULL) {
    *out = def;
    return HOOKD_E_MISSING;
  }
  if (!cJSON_IsString(v)) {
    *out = def;
    return record_f(cfg, key, "expected a string");
  }
  *out = v->valuestring;
  return HOOKD_E_OK;
}

static int host_config_int(const hookd_config *cfg, const char *key, int64_t def, int64_t *out) {
  cJSON *v = item(cfg, key);
  *out = def;
  if (v == NULL) return HOOKD_E_MISSING;
  /* Range first: casting a double outside int64 is undefined. */
  if (!cJSON_IsNumber(v) ||
      !(v->valuedouble >= -9007199254740992.0 && v->valuedouble <= 9007199254740992.0) ||
      v->valuedouble != (double)(int64_t)v->valuedouble) {
    return record_f(cfg, key, "expected an integer");
  }
  *out = (int64_t)v->valuedouble;
  return HOOKD_E_OK;
}

static int host_config_bool(const hookd_config *cfg, const char *key, int def, int *out) {
  cJSON *v = item(cfg, key);
  *out = def;
  if (v == NULL) return HOOKD_E_MISSING;
  if (!cJSON_IsBool(v)) return record_f(cfg, key, "expected true or false");
  *out = cJSON_IsTrue(v);
  return HOOKD_E_OK;
}

static int host_config_string_list(const hookd_config *cfg, const char *key,
                                   const char *const **items, size_t *n) {
  static const char *const empty[] = {NULL};
  cJSON *v = item(cfg, key);
  *items = empty;
  *n = 0;
  if (v == NULL) return HOOKD_E_MISSING;
  if (!cJSON_IsArray(v)) return record_f(cfg, key, "expected a list of strings");
  size_t count = (size_t)cJSON_GetArraySize(v), i = 0;
  const char **arr = calloc(count + 1, sizeof *arr);
  if (keep(cfg->inst, arr) != 0) return HOOKD_E_NOMEM;
  cJSON *e;
  cJSON_ArrayForEach(e, v) {
    if (!cJSON_IsString(e)) {
      char k[128];
      snprintf(k, sizeof k, "%s[%zu]", key, i);
      return record_f(cfg, k, "expected a string");
    }
    arr[i++] = e->valuestring;
  }
  *items = arr;
  *n = count;
  return HOOKD_E_OK;
}

static int host_config_object(const hookd_config *cfg, const char *key, const hookd_config **out) {
  cJSON *v = item(cfg, key);
  *out = NULL;
  if (v == NULL) return HOOKD_E_MISSING;
  if (!cJSON_IsObject(v)) return record_f(cfg, key, "expected an object");
  char kp[256];
  key_path(kp, sizeof kp, cfg, key);
  size_t kl = strlen(kp) + 1;
  hookd_config *sub = malloc(sizeof *sub + kl);
  if (keep(cfg->inst, sub) != 0) return HOOKD_E_NOMEM;
  sub->inst = cfg->inst;
  sub->node = v;
  sub->keypath = (char *)(sub + 1);
  memcpy(sub->keypath, kp, kl);
  *out = sub;
  return HOOKD_E_OK;
}

static size_t host_config_count(const hookd_config *cfg) {
  return cfg && cfg->node ? (size_t)cJSON_GetArraySize(cfg->node) : 0;
}

static const char *host_config_key_at(const hookd_config *cfg, size_t i) {
  if (cfg == NULL || cfg->node == NULL) return NULL;
  cJSON *v = cJSON_GetArrayItem(cfg->node, (int)i);
  return v ? v->string : NULL;
}

static int host_config_allow_keys(const hookd_config *cfg, const char *const *allowed) {
  cJSON *v;
  cJSON_ArrayForEach(v, cfg->node) {
    int ok = 0;
    for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, v->string) == 0;
    if (!ok) {
      const char *near = jsonc_suggest(v->string, allowed);
      if (near)
        host_config_error(cfg, v->string, "unknown key '%s' (did you mean '%s'?)", v->string, near);
      else
        host_config_error(cfg, v->string, "unknown key '%s'", v->string);
      return HOOKD_E_INVALID;
    }
  }
  return HOOKD_E_OK;
}

static int host_config_path(const hookd_config *cfg, const char *key, const char *def,
                            const char **out) {
  const char *p;
  int rc = host_config_string(cfg, key, def, &p);
  *out = p;
  if (rc < 0 || p == NULL || p[0] == '/') return rc;
  const char *dir = cfg->inst->config_dir;
  size_t n = strlen(dir) + strlen(p) + 2;
  char *abs = malloc(n);
  if (keep(cfg->inst, abs) != 0) return HOOKD_E_NOMEM;
  snprintf(abs, n, "%s/%s", dir, p);
  *out = abs;
  return rc;
}

static int host_config_template(const hookd_config *cfg, const char *key, const char *def,
                                hookd_template **out) {
  const char *text;
  *out = NULL;
  int rc = host_config_string(cfg, key, def, &text);
  if (rc < 0) return rc;
  if (text == NULL) return HOOKD_E_MISSING;
  char err[256];
  *out = template_compile(text, err, sizeof err);
  if (*out == NULL) return host_config_error(cfg, key, "bad template: %s", err);
  return rc;
}

/* --- runtime functions --------------------------------------------------- */

static void host_log(const hookd_instance *self, const hookd_event *ev, hookd_log_level level,
                     const char *fmt, ...) {
  log_ctx ctx = {0};
  ctx.instance = self ? self->name : NULL;
  if (ev) {
    ctx.event_id = ev->id;
    ctx.source = ev->source;
  }
  if (level > HOOKD_LOG_DEBUG) level = HOOKD_LOG_DEBUG;
  va_list ap;
  va_start(ap, fmt);
  log_vwrite((log_level)level, &ctx, fmt, ap);
  va_end(ap);
}

static void host_free(void *p) {
  free(p);
}

static const cJSON *view_root(const hookd_event *ev) {
  /* The view is read-only for the plugin; the event itself may still
   * parse its body lazily. */
  event *e = ev ? (event *)ev->host_private : NULL;
  return e ? event_root(e) : NULL;
}

static char *host_render(const hookd_template *t, const hookd_event *ev, hookd_escape esc,
                         size_t *len) {
  return template_render(t, view_root(ev), esc, len);
}

static char *host_event_get(const hookd_event *ev, const char *path) {
  return envelope_text(envelope_path(view_root(ev), path));
}

static hookd_result host_http(const hookd_instance *self, const hookd_http_request *req,
                              hookd_http_response *resp, hookd_outcome *out) {
  (void)self;
  return http_client_perform(req, resp, out);
}

static int host_pattern_match(const char *pattern, const char *type) {
  if (pattern_problem(pattern) != NULL) return HOOKD_E_INVALID;
  return pattern_match(pattern, type);
}

static hookd_result host_smtp(const hookd_instance *self, const hookd_smtp_request *req,
                              hookd_outcome *out) {
  (void)self;
  return smtp_client_send(req, out);
}

static char *host_json_get(const char *json, size_t len, const char *path) {
  cJSON *root = json ? cJSON_ParseWithLength(json, len) : NULL;
  char *v = root ? envelope_text(envelope_path(root, path)) : NULL;
  cJSON_Delete(root);
  return v;
}

static const hookd_host_api host_api = {
    .struct_size = sizeof(hookd_host_api),
    .abi = HOOKD_PLUGIN_ABI,
    .log = host_log,
    .free = host_free,
    .config_string = host_config_string,
    .config_int = host_config_int,
    .config_bool = host_config_bool,
    .config_string_list = host_config_string_list,
    .config_object = host_config_object,
    .config_count = host_config_count,
    .config_key_at = host_config_key_at,
    .config_allow_keys = host_config_allow_keys,
    .config_error = host_config_error,
    .config_template = host_config_template,
    .template_compile = template_compile,
    .template_free = template_free,
    .render = host_render,
    .event_get = host_event_get,
    .http = host_http,
    .http_response_free = http_client_response_free,
    .config_path = host_config_path,
    .pattern_match = host_pattern_match,
    .smtp = host_smtp,
    .json_get = host_json_get,
};

const hookd_host_api *plugin_host_api(void) {
  return &host_api;
}

void plugin_host_event_view(hookd_event *view, const delivery *d, const plugin_instance *inst) {
  memset(view, 0, sizeof *view);
  view->struct_size = sizeof *view;
  view->id = d->ev->id;
  view->type = d->ev->type;
  view->source = d->ev->source;
  view->order_key = d->ev->order_key;
  view->instance = inst->name;
  view->attempt = d->attempt;
  view->received_ms = d->ev->received_ms;
  view->body = d->ev->body;
  view->body_len = d->ev->body_len;
  view->content_type = d->ev->content_type;
  view->timeout_ms = (uint32_t)inst->cfg->delivery.timeout_ms;
  if (inst->owned.timeout_ms && inst->owned.timeout_ms < view->timeout_ms)
    view->timeout_ms = inst->owned.timeout_ms;
  view->host_private = d->ev;
  view->host = &host_api;
  view->self = (hookd_instance *)inst;
}

/* --- loading --------------------------------------------------------------- */

/* Finds <module>.so in the plugin directories, in order. Loading runs the
 * file's code as hookd, so every directory searched up to the one that has
 * it must be safe (a directory others can write could get a module planted
 * that shadows the real one), and so must the file and, behind a symlink,
 * the directory it really lives in (privs_check_code_path). */
static char *find_module(const config *cfg, const char *module, char *err, size_t errlen) {
  /* config.c allows no path pieces in module names; refuse them here too. */
  if (*module == '\0' || *module == '.' || strchr(module, '/') != NULL) {
    snprintf(err, errlen, "invalid module name '%s' (a file name in plugin_dirs, no path)", module);
    return NULL;
  }
  for (size_t i = 0; i < cfg->n_plugin_dirs; i++) {
    struct stat st;
    if (stat(cfg->plugin_dirs[i], &st) != 0) continue;
    if (privs_check_code_path(cfg->plugin_dirs[i], 1, err, errlen) != 0) return NULL;
    size_t n = strlen(cfg->plugin_dirs[i]) + strlen(module) + 5;
    char *path = malloc(n);
    if (path == NULL) break;
    snprintf(path, n, "%s/%s.so", cfg->plugin_dirs[i], module);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
      char *real = realpath(path, NULL);
      char *slash = real ? strrchr(real, '/') : NULL;
      if (slash) *slash = '\0';
      if (privs_check_code_path(path, 0, err, errlen) != 0 ||
          (slash && slash != real && privs_check_code_path(real, 1, err, errlen) != 0)) {
        free(real);
        free(path);
        return NULL;
      }
      free(real);
      return path;
    }
    free(path);
  }
  snprintf(err, errlen, "module '%s' not found: no %s.so in plugin_dirs (%zu searched)", module,
           module, cfg->n_plugin_dirs);
  return NULL;
}

/* Loads a module and checks its descriptor. Refusals are messages, never
 * crashes: nothing of the descriptor is read beyond what struct_size says
 * the plugin has. */
const hookd_option *plugin_host_options(const hookd_plugin *d) {
  size_t need = offsetof(hookd_plugin, state_size) + sizeof d->state_size;
  return d != NULL && d->struct_size >= need ? d->options : NULL;
}

int plugin_host_load_module(plugin_module *m, const config *cfg, char *err, size_t errlen) {
  m->path = find_module(cfg, m->name, err, errlen);
  if (m->path == NULL) return -1;
  return plugin_host_open_module(m, err, errlen);
}

int plugin_host_open_module(plugin_module *m, char *err, size_t errlen) {
  dlerror();
  m->dl = dlopen(m->path, RTLD_NOW | RTLD_LOCAL);
  if (m->dl == NULL) {
    const char *e = dlerror();
    snprintf(err, errlen, "cannot load %s: %s", m->path, e ? e : "unknown dlopen error");
    return -1;
  }
  typedef const hookd_plugin *(*entry_fn)(uint32_t);
  entry_fn entry;
  *(void **)&entry = dlsym(m->dl, HOOKD_PLUGIN_ENTRY_SYMBOL);
  if (entry == NULL) {
    snprintf(err, errlen, "%s has no '%s' symbol: not a hookd plugin (or not exported)", m->path,
             HOOKD_PLUGIN_ENTRY_SYMBOL);
    return -1;
  }
  const hookd_plugin *d = entry(HOOKD_PLUGIN_ABI);
  if (d == NULL) {
    snprintf(err, errlen, "%s refused host ABI %u.%u (its entry returned NULL)", m->path,
             HOOKD_PLUGIN_ABI_MAJOR, HOOKD_PLUGIN_ABI_MINOR);
    return -1;
  }
  if (HOOKD_ABI_MAJOR_OF(d->abi) != HOOKD_PLUGIN_ABI_MAJOR) {
    snprintf(err, errlen, "%s was built for plugin ABI %u.%u, this hookd has ABI %u.%u", m->path,
             HOOKD_ABI_MAJOR_OF(d->abi), d->abi & 0xffffu, HOOKD_PLUGIN_ABI_MAJOR,
             HOOKD_PLUGIN_ABI_MINOR);
    return -1;
  }
  size_t need = offsetof(hookd_plugin, destroy) + sizeof d->destroy;
  if (d->struct_size < need) {
    snprintf(err, errlen, "%s has a descriptor of %u bytes, ABI %u needs at least %zu", m->path,
             d->struct_size, HOOKD_PLUGIN_ABI_MAJOR, need);
    return -1;
  }
  const hookd_option *opts = plugin_host_options(d);
  if ((d->init == NULL && opts == NULL) || d->deliver == NULL) {
    snprintf(err, errlen, "%s has no %s callback", m->path, d->deliver ? "init" : "deliver");
    return -1;
  }
  char why[256];
  if (opts && plugin_options_check_table(opts, d->state_size, why, sizeof why) != 0) {
    snprintf(err, errlen, "%s: bad option table: %s", m->path, why);
    return -1;
  }
  m->desc = d;
  return 0;
}

/* Checks and fills the declared options into a state struct of the
 * module's state_size. */
static int fill_options(plugin_instance *inst, const hookd_option *opts, const cJSON *conf,
                        const char *keypath, char *why, size_t whylen) {
  const hookd_plugin *d = inst->mod->desc;
  inst->opt_state = calloc(1, d->state_size ? d->state_size : 1);
  if (inst->opt_state == NULL) {
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  plugin_options_src src = {conf, inst->doc, keypath, inst->config_dir, inst->name};
  if (plugin_options_fill(opts, &src, inst->opt_state, &inst->owned, why, whylen) != 0) return -1;
  inst->state = inst->opt_state;
  return 0;
}

static void release(plugin_instance *inst) {
  plugin_options_release(&inst->owned);
  free(inst->opt_state);
  inst->opt_state = NULL;
  inst->state = NULL;
}

int plugin_host_instance_setup(plugin_instance *inst, const hookd_host_api *api, const cJSON *conf,
                               const jsonc_doc *doc, const char *config_dir, char *perr,
                               size_t perrlen, int *from_options) {
  const plugin_module *m = inst->mod;
  char kp[96];
  snprintf(kp, sizeof kp, "%s.config", inst->cfg ? inst->cfg->keypath : "config");
  hookd_config root = {inst, (cJSON *)conf, kp};
  perr[0] = '\0';
  *from_options = 0;
  inst->doc = doc;
  inst->config_dir = config_dir;
  inst->cfg_error[0] = inst->cfg_error_key[0] = '\0';
  inst->state = NULL;
  const hookd_option *opts = plugin_host_options(m->desc);
  int rc = 0;
  if (opts != NULL) {
    rc = fill_options(inst, opts, conf, kp, inst->cfg_error, sizeof inst->cfg_error);
    char *sep = rc != 0 && doc == NULL ? strstr(inst->cfg_error, ": ") : NULL;
    if (sep) {
      /* "KEYPATH: message" without a doc: split, so hookd can position it. */
      *sep = '\0';
      snprintf(inst->cfg_error_key, sizeof inst->cfg_error_key, "%.255s", inst->cfg_error);
      memmove(inst->cfg_error, sep + 2, strlen(sep + 2) + 1);
    }
  }
  if (rc == 0 && m->desc->init != NULL)
    rc = m->desc->init(api ? api : &host_api, inst, &root, &inst->state, perr, perrlen);
  if (rc != 0) {
    *from_options = opts && !perr[0] && inst->cfg_error[0];
    release(inst);
    return PLUGIN_SETUP_EFAIL;
  }
  if (inst->cfg_error[0] != '\0') {
    /* A getter recorded an error the plugin ignored: refuse anyway, a config
     * mistake must not pass. */
    if (m->desc->destroy) m->desc->destroy(inst->state);
    release(inst);
    return PLUGIN_SETUP_EIGNORED;
  }
  inst->initialized = 1;
  return 0;
}

void plugin_host_init_message(char *err, size_t errlen, const plugin_instance *inst, int rc,
                              const char *cfg_error, const char *perr, int from_options) {
  if (rc == PLUGIN_SETUP_EIGNORED) {
    snprintf(err, errlen, "plugin instance '%s' (module %s): %s", inst->name, inst->mod->name,
             cfg_error);
    return;
  }
  /* The positioned message (an option or a getter) is the most useful; the
   * plugin's own reason comes next. */
  const char *why = cfg_error[0] ? cfg_error : perr[0] ? perr : "no reason given";
  snprintf(err, errlen, "plugin instance '%s' (module %s): %s%s", inst->name, inst->mod->name,
           from_options ? "" : "init failed: ", why);
}

int plugin_host_instance_init(plugin_instance *inst, const cJSON *conf, const jsonc_doc *doc,
                              const char *config_dir, char *err, size_t errlen) {
  char perr[512];
  int from_options;
  int rc = plugin_host_instance_setup(inst, NULL, conf, doc, config_dir, perr, sizeof perr,
                                      &from_options);
  if (rc != 0) plugin_host_init_message(err, errlen, inst, rc, inst->cfg_error, perr, from_options);
  return rc == 0 ? 0 : -1;
}

void plugin_host_instance_destroy(plugin_instance *inst) {
  if (inst->initialized && inst->mod->desc->destroy) inst->mod->desc->destroy(inst->state);
  inst->initialized = 0;
  release(inst);
}

int plugin_host_load(plugin_host *h, const config *cfg, char *err, size_t errlen) {
  memset(h, 0, sizeof *h);
  h->mods = calloc(cfg->n_plugins ? cfg->n_plugins : 1, sizeof *h->mods);
  h->insts = calloc(cfg->n_plugins ? cfg->n_plugins : 1, sizeof *h->insts);
  if (h->mods == NULL || h->insts == NULL) {
    snprintf(err, errlen, "out of memory");
    plugin_host_unload(h, NULL);
    return -1;
  }
  for (size_t i = 0; i < cfg->n_plugins; i++) {
    const config_plugin *cp = &cfg->plugins[i];
    plugin_module *m = NULL;
    for (size_t j = 0; j < h->n_mods && m == NULL; j++) {
      if (strcmp(h->mods[j].name, cp->module) == 0) m = &h->mods[j];
    }
    char why[512];
    if (m == NULL) {
      m = &h->mods[h->n_mods++];
      m->name = strdup(cp->module);
      if (m->name == NULL) snprintf(why, sizeof why, "out of memory");
      if (m->name == NULL || (m->path = find_module(cfg, m->name, why, sizeof why)) == NULL) {
        snprintf(err, errlen, "%s: plugin instance '%s': %s", cp->keypath, cp->name, why);
        plugin_host_unload(h, NULL);
        return -1;
      }
    }
    /* A module only process-isolated instances use is never mapped into
     * hookd: its constructors are plugin code too. */
    if (cp->isolation == CONFIG_ISOLATION_THREAD && m->dl == NULL) {
      if (plugin_host_open_module(m, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: plugin instance '%s': %s", cp->keypath, cp->name, why);
        plugin_host_unload(h, NULL);
        return -1;
      }
      log_write(HLOG_DEBUG, NULL, "loaded plugin module %s %s from %s", m->desc->name,
                m->desc->version ? m->desc->version : "?", m->path);
    }
    plugin_instance *inst = &h->insts[h->n_insts++];
    inst->index = i;
    inst->name = cp->name;
    inst->mod = m;
    inst->cfg = cp;
    int rc = cp->isolation == CONFIG_ISOLATION_PROCESS
                 ? plugin_proc_start(inst, cfg, err, errlen)
                 : plugin_host_instance_init(inst, cp->config, &cfg->doc, cfg->dir, err, errlen);
    if (rc != 0) {
      plugin_host_unload(h, NULL);
      return -1;
    }
    if (inst->proc) inst->initialized = 1;
  }
  return 0;
}

void plugin_host_unload(plugin_host *h, const unsigned char *skip) {
  unsigned char *keep_mod = calloc(h->n_mods ? h->n_mods : 1, 1);
  for (size_t i = h->n_insts; i-- > 0;) {
    plugin_instance *inst = &h->insts[i];
    if (inst->proc) {
      /* The child runs destroy and exits on its own time; its supervisor
       * reaps it (plugin_proc_release). */
      plugin_proc_release(inst->proc);
      inst->proc = NULL;
      inst->initialized = 0;
      continue;
    }
    if (skip && skip[i]) {
      if (keep_mod) keep_mod[inst->mod - h->mods] = 1;
      continue;
    }
    plugin_host_instance_destroy(inst);
  }
  for (size_t i = 0; i < h->n_mods; i++) {
    plugin_module *m = &h->mods[i];
    if (m->dl && !(keep_mod && keep_mod[i])) dlclose(m->dl);
    free(m->name);
    free(m->path);
  }
  free(keep_mod);
  free(h->mods);
  free(h->insts);
  memset(h, 0, sizeof *h);
}

int plugin_host_deliver(plugin_instance *inst, const hookd_event *view, hookd_outcome *out) {
  if (inst->proc) {
    int rc = plugin_proc_deliver(inst->proc, view, out);
    /* Counted here: the child was killed at timeout_ms, so the dispatcher
     * never had a call to write off. */
    if (rc == PLUGIN_TIMED_OUT) METRICS_INC(inst->m.timeouts);
    return rc;
  }
  int r = (int)inst->mod->desc->deliver(inst->state, view, out);
  if (r >= PLUGIN_CRASHED && r <= PLUGIN_UNAVAILABLE) {
    /* A plugin's stray number must not read as one of hookd's own codes. */
    snprintf(out->message, sizeof out->message, "plugin returned an invalid result (%d)", r);
    return HOOKD_FAIL;
  }
  return r;
}

void plugin_host_stopping(plugin_host *h, uint32_t timeout_ms) {
  for (size_t i = 0; i < h->n_insts; i++) {
    if (h->insts[i].proc) plugin_proc_stopping(h->insts[i].proc, timeout_ms);
  }
}

/* 1 when dir (a module's directory) is where hookd's own plugins live: next
 * to the binary in a build tree (build/plugins), or the install layout's
 * PREFIX/lib/hookd/plugins beside PREFIX/bin/hookd. */
static int bundled_dir(const char *dir) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return 0;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash == NULL) return 0;
  *slash = '\0';
  char *real = realpath(dir, NULL);
  if (real == NULL) return 0;
  const char *install = HOOKD_PLUGIN_INSTALL_DIR;
  char cand[3][4200];
  snprintf(cand[0], sizeof cand[0], "%s/plugins", exe);
  snprintf(cand[1], sizeof cand[1], "%s/../%s", exe, install);
  snprintf(cand[2], sizeof cand[2], "%s", install);
  int found = 0;
  for (int i = 0; i < 3 && !found; i++) {
    if (i == 2 && install[0] != '/') break;
    char *c = realpath(cand[i], NULL);
    found = c != NULL && strcmp(c, real) == 0;
    free(c);
  }
  free(real);
  return found;
}

size_t plugin_host_advise(const plugin_host *h, FILE *out) {
  size_t n = 0;
  for (size_t i = 0; i < h->n_insts; i++) {
    const plugin_instance *inst = &h->insts[i];
    if (inst->cfg->isolation == CONFIG_ISOLATION_PROCESS) continue;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", inst->mod->path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    if (bundled_dir(slash ? dir : ".")) continue;
    fprintf(out,
            "note: %s: plugin instance '%s' loads %s from outside hookd's bundled plugin "
            "directory; consider \"isolation\": \"process\" so that a crash or a hang in it "
            "cannot take hookd down\n",
            inst->cfg->keypath, inst->name, inst->mod->path);
    n++;
  }
  return n;
}

/* --- accessors ----------------------------------------------------------- */

plugin_instance *plugin_host_instance(const plugin_host *h, size_t i) {
  return &h->insts[i];
}

const char *plugin_host_instance_name(const plugin_instance *inst) {
  return inst->name;
}

const char *plugin_host_instance_module(const plugin_instance *inst) {
  return inst->cfg->module;
}

const config_delivery *plugin_host_instance_delivery(const plugin_instance *inst) {
  return &inst->cfg->delivery;
}

metrics_instance *plugin_host_instance_metrics(plugin_instance *inst) {
  return &inst->m;
}

struct plugin_proc *plugin_host_instance_proc(const plugin_instance *inst) {
  return inst->proc;
}

int plugin_host_instance_ready(const plugin_instance *inst) {
  return inst->initialized;
}

plugin_instance *plugin_host_instance_new(plugin_module *m, const struct config_plugin *cp,
                                          size_t index) {
  plugin_instance *inst = calloc(1, sizeof *inst);
  if (inst == NULL) return NULL;
  inst->index = index;
  inst->name = cp->name;
  inst->mod = m;
  inst->cfg = cp;
  return inst;
}

void plugin_host_instance_free(plugin_instance *inst) {
  free(inst);
}
