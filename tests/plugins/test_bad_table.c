/* Test-only plugin whose option table does not fit its state struct: the host must refuse it at
 * load. */
#include <hookd/plugin.h>

typedef struct small {
  int flag;
} small;

static const hookd_option opts[] = {
    {"name", HOOKD_OPT_STRING, 0, 64, NULL, 0, 0, NULL, HOOKD_ESC_NONE, "past the end"},
    HOOKD_OPTIONS_END};

static hookd_result bt_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  (void)state, (void)ev, (void)out;
  return HOOKD_OK;
}

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "test_bad_table",
    .version = "0.1.0",
    .deliver = bt_deliver,
    .options = opts,
    .state_size = sizeof(small),
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  return HOOKD_ABI_COMPATIBLE(host_abi) ? &descriptor : NULL;
}
