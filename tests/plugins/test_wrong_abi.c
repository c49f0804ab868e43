/* Test-only plugin built for a future ABI major: the host must refuse it. */
#include <hookd/plugin.h>

static int wa_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                   void **state, char *err, size_t errlen) {
  (void)host, (void)self, (void)cfg, (void)state, (void)err, (void)errlen;
  return 0;
}

static hookd_result wa_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  (void)state, (void)ev, (void)out;
  return HOOKD_OK;
}

static const hookd_plugin descriptor = {
    .abi = (uint32_t)((HOOKD_PLUGIN_ABI_MAJOR + 1) << 16),
    .struct_size = sizeof(hookd_plugin),
    .name = "test_wrong_abi",
    .version = "0.0.1",
    .init = wa_init,
    .deliver = wa_deliver,
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return &descriptor;
}
