/* Test-only plugin laid out as ABI 1.0 built it: a descriptor that ends at reserved[], getters
 * only. */
#include <stdio.h>
#include <stdlib.h>

#include <hookd/plugin.h>

/* The 1.0 descriptor: what an old plugin binary holds. Whatever memory
 * follows it must never be read as an option table. */
typedef struct desc10 {
  uint32_t abi;
  uint32_t struct_size;
  const char *name, *version, *description;
  int (*init)(const hookd_host_api *, hookd_instance *, const hookd_config *, void **, char *,
              size_t);
  hookd_result (*deliver)(void *, const hookd_event *, hookd_outcome *);
  void (*destroy)(void *);
  void *reserved[8];
} desc10;

typedef struct old {
  const hookd_host_api *host;
  int64_t n;
} old;

static int old_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                    void **state, char *err, size_t errlen) {
  static const char *const keys[] = {"n", NULL};
  (void)self, (void)err, (void)errlen;
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK) return -1;
  old *o = calloc(1, sizeof *o);
  if (o == NULL || host->config_int(cfg, "n", 5, &o->n) < 0) {
    free(o);
    return -1;
  }
  o->host = host;
  *state = o;
  return 0;
}

static hookd_result old_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  const old *o = state;
  snprintf(out->message, sizeof out->message, "n=%lld", (long long)o->n);
  (void)ev;
  return HOOKD_OK;
}

static void old_destroy(void *state) {
  free(state);
}

/* Garbage right after the descriptor, where 1.1's `options` would be. */
static const struct {
  desc10 d;
  const void *trap[2];
} image = {{(1u << 16) | 0u,
            sizeof(desc10),
            "test_abi10",
            "1.0.0",
            "an ABI 1.0 plugin",
            old_init,
            old_deliver,
            old_destroy,
            {0}},
           {(const void *)"not an option table", (const void *)(size_t)12345}};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return (const hookd_plugin *)(const void *)&image.d;
}
