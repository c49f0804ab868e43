/* Router: compiles route patterns once and finds, per event, the plugin instances it goes to. */
#include "router.h"
#include "config.h"
#include "pattern.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* router_match keeps a bitmap of instances already emitted on its stack.
 * 1024 instances cost 128 bytes; past that it falls back to searching. */
#define SEEN_BITS 1024

/* One distinct exact pattern and the routes (ascending, no repeats) that
 * list it, as a range of router.exact_routes. */
typedef struct exact_slot {
  const char *key; /* NULL: empty slot */
  uint64_t hash;
  size_t first;
  size_t count;
} exact_slot;

/* A wildcard pattern of a route, in config order. */
typedef struct wild {
  size_t route;
  const char *pattern;
} wild;

struct router {
  const config *cfg;
  exact_slot *slots;
  size_t mask; /* slot count - 1; a power of two */
  size_t *exact_routes;
  wild *wilds;
  size_t n_wilds;
  int needs_tree; /* some route has `when` tests */
};

/* FNV-1a: short keys, no adversary (the keys come from the config), and
 * cheap enough for every request. */
static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s != '\0'; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ULL;
  }
  return h;
}

/* ---- building ----------------------------------------------------------- */

typedef struct exact_pair {
  const char *key;
  size_t route;
} exact_pair;

static int cmp_pair(const void *a, const void *b) {
  const exact_pair *x = a;
  const exact_pair *y = b;
  int c = strcmp(x->key, y->key);
  if (c != 0) return c;
  return (x->route > y->route) - (x->route < y->route);
}

static void route_name(const config_route *rt, size_t i, char *name, size_t n) {
  if (rt->keypath != NULL) {
    snprintf(name, n, "%s", rt->keypath);
  } else {
    snprintf(name, n, "routes[%zu]", i);
  }
}

static int when_value_ok(const cJSON *v) {
  return cJSON_IsString(v) || cJSON_IsNumber(v) || cJSON_IsBool(v) || cJSON_IsNull(v);
}

/* Validates every route and counts exact and wildcard patterns. */
static int check_routes(const config *cfg, size_t *n_exact, size_t *n_wild, char *err,
                        size_t errlen) {
  char name[128];
  *n_exact = 0;
  *n_wild = 0;
  for (size_t i = 0; i < cfg->n_routes; i++) {
    const config_route *rt = &cfg->routes[i];
    route_name(rt, i, name, sizeof name);
    if (rt->n_events == 0) {
      snprintf(err, errlen, "%s.events: no event patterns", name);
      return -1;
    }
    for (size_t j = 0; j < rt->n_events; j++) {
      int wildcard;
      const char *why = pattern_check(rt->events[j], &wildcard);
      if (why != NULL) {
        snprintf(err, errlen, "%s.events[%zu]: %s", name, j, why);
        return -1;
      }
      if (wildcard) {
        (*n_wild)++;
      } else {
        (*n_exact)++;
      }
    }
    for (size_t k = 0; k < rt->n_to; k++) {
      if (rt->to[k] >= cfg->n_plugins) {
        snprintf(err, errlen, "%s.to[%zu]: no such plugin instance", name, k);
        return -1;
      }
    }
    for (size_t k = 0; k < rt->n_when; k++) {
      const config_when *w = &rt->when[k];
      if (w->path == NULL || w->value == NULL || !when_value_ok(w->value)) {
        snprintf(err, errlen, "%s.when.%s: expected a string, number, boolean or null", name,
                 w->path != NULL ? w->path : "");
        return -1;
      }
    }
  }
  return 0;
}

static int build_exact(router *r, exact_pair *pairs, size_t n) {
  size_t distinct = 0;
  size_t cap = 16;
  qsort(pairs, n, sizeof *pairs, cmp_pair);
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || strcmp(pairs[i].key, pairs[i - 1].key) != 0) distinct++;
  }
  /* At most half full, so probe chains stay short. */
  while (cap < distinct * 2) cap *= 2;
  r->slots = calloc(cap, sizeof *r->slots);
  r->exact_routes = malloc((n != 0 ? n : 1) * sizeof *r->exact_routes);
  if (r->slots == NULL || r->exact_routes == NULL) return -1;
  r->mask = cap - 1;

  size_t out = 0;
  exact_slot *slot = NULL;
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || strcmp(pairs[i].key, pairs[i - 1].key) != 0) {
      uint64_t h = hash_str(pairs[i].key);
      size_t at = (size_t)h & r->mask;
      while (r->slots[at].key != NULL) at = (at + 1) & r->mask;
      slot = &r->slots[at];
      slot->key = pairs[i].key;
      slot->hash = h;
      slot->first = out;
    } else if (pairs[i].route == pairs[i - 1].route) {
      continue; /* one route listing the same type twice */
    }
    r->exact_routes[out++] = pairs[i].route;
    slot->count++;
  }
  return 0;
}

router *router_new(const config *cfg, char *err, size_t errlen) {
  char dummy[1];
  size_t n_exact, n_wild;
  if (err == NULL || errlen == 0) {
    err = dummy;
    errlen = sizeof dummy;
  }
  err[0] = '\0';
  if (cfg == NULL) {
    snprintf(err, errlen, "no config");
    return NULL;
  }
  if (check_routes(cfg, &n_exact, &n_wild, err, errlen) != 0) return NULL;

  router *r = calloc(1, sizeof *r);
  exact_pair *pairs = malloc((n_exact != 0 ? n_exact : 1) * sizeof *pairs);
  if (r == NULL || pairs == NULL) goto oom;
  r->cfg = cfg;
  r->wilds = malloc((n_wild != 0 ? n_wild : 1) * sizeof *r->wilds);
  if (r->wilds == NULL) goto oom;

  size_t ne = 0;
  for (size_t i = 0; i < cfg->n_routes; i++) {
    const config_route *rt = &cfg->routes[i];
    if (rt->n_when > 0) r->needs_tree = 1;
    for (size_t j = 0; j < rt->n_events; j++) {
      int wildcard;
      pattern_check(rt->events[j], &wildcard);
      if (wildcard) {
        r->wilds[r->n_wilds].route = i;
        r->wilds[r->n_wilds].pattern = rt->events[j];
        r->n_wilds++;
      } else {
        pairs[ne].key = rt->events[j];
        pairs[ne].route = i;
        ne++;
      }
    }
  }
  if (build_exact(r, pairs, ne) != 0) goto oom;
  free(pairs);
  return r;

oom:
  snprintf(err, errlen, "out of memory");
  free(pairs);
  router_free(r);
  return NULL;
}

void router_free(router *r) {
  if (r == NULL) return;
  free(r->slots);
  free(r->exact_routes);
  free(r->wilds);
  free(r);
}

/* ---- matching ----------------------------------------------------------- */

static const exact_slot *exact_find(const router *r, const char *type) {
  uint64_t h = hash_str(type);
  for (size_t at = (size_t)h & r->mask;; at = (at + 1) & r->mask) {
    const exact_slot *s = &r->slots[at];
    if (s->key == NULL) return NULL;
    if (s->hash == h && strcmp(s->key, type) == 0) return s;
  }
}

/* Type equality on purpose: "42" does not equal 42, and null matches only a
 * JSON null, not a missing field. */
static int when_holds(const config_when *w, const cJSON *root) {
  const cJSON *node = envelope_path(root, w->path);
  const cJSON *want = w->value;
  if (node == NULL) return 0;
  if (cJSON_IsString(want)) {
    return cJSON_IsString(node) && node->valuestring != NULL && want->valuestring != NULL &&
           strcmp(node->valuestring, want->valuestring) == 0;
  }
  if (cJSON_IsNumber(want)) return cJSON_IsNumber(node) && node->valuedouble == want->valuedouble;
  if (cJSON_IsTrue(want)) return cJSON_IsTrue(node);
  if (cJSON_IsFalse(want)) return cJSON_IsFalse(node);
  if (cJSON_IsNull(want)) return cJSON_IsNull(node);
  return 0;
}

/* Source and `when` tests of a route whose patterns already matched. */
static int route_accepts(const config_route *rt, const char *source, const cJSON *root) {
  if (rt->source != NULL && (source == NULL || strcmp(rt->source, source) != 0)) return 0;
  if (rt->n_when > 0 && root == NULL) return 0;
  for (size_t k = 0; k < rt->n_when; k++) {
    if (!when_holds(&rt->when[k], root)) return 0;
  }
  return 1;
}

/* Whether route i matches the event at all; only the slow dedup path needs
 * this per route, the main loop works from the index. */
static int route_matches(const config_route *rt, const char *source, const char *type,
                         const cJSON *root) {
  int hit = 0;
  for (size_t j = 0; j < rt->n_events && !hit; j++) hit = pattern_match_valid(rt->events[j], type);
  return hit && route_accepts(rt, source, root);
}

typedef struct emitter {
  const config *cfg;
  const char *source;
  const char *type;
  const cJSON *root;
  size_t *out;
  size_t max;
  size_t count;
  uint64_t seen[SEEN_BITS / 64];
} emitter;

/* Whether instance p was already emitted before position k of route ri's
 * "to" list, for p beyond the bitmap. It searches out[] when out holds
 * everything emitted, and otherwise re-walks the earlier routes, which is
 * slow but needs no memory (more than 1024 instances and a short out[]). */
static int seen_slow(const emitter *e, size_t p, size_t ri, size_t k) {
  if (e->count <= e->max) {
    for (size_t i = 0; i < e->count; i++) {
      if (e->out[i] == p) return 1;
    }
    return 0;
  }
  const config_route *rt = &e->cfg->routes[ri];
  for (size_t i = 0; i < k; i++) {
    if (rt->to[i] == p) return 1;
  }
  for (size_t q = 0; q < ri; q++) {
    const config_route *earlier = &e->cfg->routes[q];
    int listed = 0;
    for (size_t i = 0; i < earlier->n_to && !listed; i++) listed = earlier->to[i] == p;
    if (listed && route_matches(earlier, e->source, e->type, e->root)) return 1;
  }
  return 0;
}

static void emit_route(emitter *e, size_t ri) {
  const config_route *rt = &e->cfg->routes[ri];
  for (size_t k = 0; k < rt->n_to; k++) {
    size_t p = rt->to[k];
    if (p < SEEN_BITS) {
      uint64_t bit = (uint64_t)1 << (p % 64);
      if (e->seen[p / 64] & bit) continue;
      e->seen[p / 64] |= bit;
    } else if (seen_slow(e, p, ri, k)) {
      continue;
    }
    if (e->count < e->max) e->out[e->count] = p;
    e->count++;
  }
}

int router_needs_tree(const router *r) {
  return r->needs_tree;
}

size_t router_match(const router *r, const char *source, const char *type, const cJSON *root,
                    size_t *out, size_t max) {
  if (r == NULL || type == NULL) return 0;
  emitter e;
  memset(&e, 0, sizeof e);
  e.cfg = r->cfg;
  e.source = source;
  e.type = type;
  e.root = root;
  e.out = out;
  e.max = out != NULL ? max : 0;

  const exact_slot *slot = exact_find(r, type);
  const size_t *ex = slot != NULL ? &r->exact_routes[slot->first] : NULL;
  size_t n_ex = slot != NULL ? slot->count : 0;
  size_t xi = 0;
  size_t wi = 0;

  /* Both lists are in route order, so merging them visits matching routes
   * in config order, each once, with no sort and no allocation. */
  while (xi < n_ex || wi < r->n_wilds) {
    size_t ri = SIZE_MAX;
    if (xi < n_ex) ri = ex[xi];
    if (wi < r->n_wilds && r->wilds[wi].route < ri) ri = r->wilds[wi].route;

    int hit = 0;
    if (xi < n_ex && ex[xi] == ri) {
      hit = 1;
      xi++;
    }
    for (; wi < r->n_wilds && r->wilds[wi].route == ri; wi++) {
      if (!hit) hit = pattern_match_valid(r->wilds[wi].pattern, type);
    }
    if (hit && route_accepts(&r->cfg->routes[ri], source, root)) emit_route(&e, ri);
  }
  return e.count;
}
