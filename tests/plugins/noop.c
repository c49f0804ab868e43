/* Test-only plugin that accepts every delivery and does nothing: the benchmark's far side. */
#include <hookd/plugin.h>

static int noop_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                     void **state, char *err, size_t errlen) {
  (void)self, (void)err, (void)errlen;
  static const char *const keys[] = {NULL};
  *state = NULL;
  return host->config_allow_keys(cfg, keys) == HOOKD_E_OK ? 0 : -1;
}

static hookd_result noop_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  (void)state, (void)ev, (void)out;
  return HOOKD_OK;
}

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "noop",
    .version = "0.0.1",
    .description = "accepts everything, does nothing",
    .init = noop_init,
    .deliver = noop_deliver,
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return &descriptor;
}
