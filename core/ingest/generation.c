/* Generations: load a config with its plugins, router and dispatcher as one unit; retire and free
 * old ones. */
#include "generation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

generation *generation_load(const char *file, int setup_log, char *err, size_t errlen) {
  generation *g = calloc(1, sizeof *g);
  if (g == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (config_load(&g->cfg, file, err, errlen) != 0) {
    free(g);
    return NULL;
  }
  /* At start, what plugins log in init already uses the configured format. */
  if (setup_log) log_setup(g->cfg.log_level, g->cfg.log_format);
  if (plugin_host_load(&g->host, &g->cfg, err, errlen) != 0) {
    config_free(&g->cfg);
    free(g);
    return NULL;
  }
  g->rt = router_new(&g->cfg, err, errlen);
  g->lanes = calloc(g->cfg.n_plugins + 1, sizeof *g->lanes);
  if (g->rt == NULL || g->lanes == NULL) {
    if (g->lanes == NULL) snprintf(err, errlen, "out of memory");
    router_free(g->rt);
    free(g->lanes);
    plugin_host_unload(&g->host, NULL);
    config_free(&g->cfg);
    free(g);
    return NULL;
  }
  g->refs = 1;
  return g;
}

int generation_start(generation *g, spool *sp, char *err, size_t errlen) {
  for (size_t i = 0; i < g->cfg.n_plugins; i++) {
    g->lanes[i] = spool_lane_get(sp, g->cfg.plugins[i].name);
    if (g->lanes[i] == NULL) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
  }
  g->dp = dispatch_new(&g->host, sp, g->lanes, err, errlen);
  return g->dp ? 0 : -1;
}

void generation_activate(generation *g) {
  dispatch_attach(g->dp);
}

void generation_ref(generation *g) {
  g->refs++;
}

void generation_unref(generation *g) {
  g->refs--;
}

int generation_reapable(const generation *g) {
  return g->retired && g->refs == 0 && (g->dp == NULL || dispatch_idle(g->dp));
}

int generation_free(generation *g, uint32_t timeout_ms) {
  unsigned char *hung = calloc(g->host.n_insts + 1, 1);
  /* Calls in process-isolated instances end by the deadline (their child
   * is killed), so the dispatcher's wait below does not time out on them. */
  plugin_host_stopping(&g->host, timeout_ms);
  if (g->dp) dispatch_stop(g->dp, timeout_ms, hung);
  if (g->dp && dispatch_busy(g->dp)) {
    free(hung);
    return -1; /* a worker may still touch the instances: keep everything */
  }
  dispatch_free(g->dp);
  plugin_host_unload(&g->host, hung);
  free(hung);
  router_free(g->rt);
  free(g->lanes);
  config_free(&g->cfg);
  free(g);
  return 0;
}

static int str_eq(const char *a, const char *b) {
  if (a == NULL || b == NULL) return a == b;
  return strcmp(a, b) == 0;
}

void generation_fixed_changes(const config *o, const config *n, char *out, size_t len) {
  out[0] = '\0';
  size_t used = 0;
#define CHANGED(name)                                                         \
  do {                                                                        \
    int w = snprintf(out + used, len - used, "%s%s", used ? ", " : "", name); \
    if (w > 0 && (size_t)w < len - used) used += (size_t)w;                   \
  } while (0)
  int listen_same = o->n_listen == n->n_listen;
  for (size_t i = 0; listen_same && i < o->n_listen; i++) {
    listen_same = strcmp(o->listen[i], n->listen[i]) == 0;
  }
  if (!listen_same) CHANGED("listen");
  if (!str_eq(o->admin_listen, n->admin_listen)) CHANGED("admin_listen");
  if (!str_eq(o->data_dir, n->data_dir)) CHANGED("data_dir");
  if (o->sync != n->sync || o->spool_max_pending != n->spool_max_pending ||
      o->spool_min_free_bytes != n->spool_min_free_bytes ||
      o->spool_retention_ms != n->spool_retention_ms || o->spool_backend != n->spool_backend ||
      !str_eq(o->spool_url, n->spool_url) || o->spool_lease_ms != n->spool_lease_ms) {
    CHANGED("spool");
  }
  if (!str_eq(o->user, n->user) || !str_eq(o->group, n->group)) CHANGED("user/group");
#undef CHANGED
}
