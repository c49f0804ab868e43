/* Router: compiled event patterns (exact, *, **), optional source and `when` tests. */
#ifndef HOOKD_ROUTER_H
#define HOOKD_ROUTER_H

#include <stddef.h>
#include <cjson/cJSON.h>
struct config;

typedef struct router router;

/* Compiles cfg->routes (cfg must outlive the router: `when` values point into
 * it). Returns NULL with err set on a bad pattern ("routes[1].events[0]: ..."). */
router *router_new(const struct config *cfg, char *err, size_t errlen);
void router_free(router *r);

/* Finds the plugin instances (indices into cfg->plugins) an event goes to.
 * Each instance appears once, in the order of first mention in the config.
 * Writes at most max indices to out and returns how many matched in all.
 * Exact patterns are found by hash lookup; wildcard patterns are tried in
 * order. root may be NULL (then routes with `when` do not match). */
size_t router_match(const router *r, const char *source, const char *type, const cJSON *root,
                    size_t *out, size_t max);

/* 1 when some route has `when` tests, which read the parsed body: then
 * router_match needs the root. */
int router_needs_tree(const router *r);

#endif
