/* Test-only plugin with one declared option of every type (ABI 1.1): the host fills topts, init
 * checks one cross-option rule. */
#include <stdio.h>
#include <string.h>

#include "test_options.h"

static const char *const colors[] = {"red", "green", "blue", NULL};
static const char *const schemes[] = {"https", "ws", NULL};

#define ROW(name, type, flags, field, def, min, max, choices, esc, desc) \
  { name, HOOKD_OPT_##type, flags, offsetof(topts, field), def, min, max, choices, esc, desc }
static const hookd_option opts[] = {
    ROW("str", STRING, HOOKD_OPT_REQUIRED | HOOKD_OPT_NONEMPTY, str, NULL, 0, 0, NULL,
        HOOKD_ESC_NONE, "a required string"),
    ROW("num", INT, 0, num, "7", 1, 100, NULL, HOOKD_ESC_NONE, "an int from 1 to 100"),
    ROW("flag", BOOL, 0, flag, "true", 0, 0, NULL, HOOKD_ESC_NONE, "a bool"),
    ROW("color", ENUM, 0, color, "green", 0, 0, colors, HOOKD_ESC_NONE, "an enum"),
    ROW("list", STRING_LIST, 0, list, NULL, 0, 0, NULL, HOOKD_ESC_NONE, "a list"),
    ROW("tpl", TEMPLATE, 0, tpl, "id={{eventId}}", 0, 0, NULL, HOOKD_ESC_JSON, "a template"),
    ROW("path", PATH, 0, path, "rel/file", 0, 0, NULL, HOOKD_ESC_NONE, "a path"),
    ROW("wait", DURATION, 0, wait_ms, "2s", 10, 60000, NULL, HOOKD_ESC_NONE, "a duration"),
    ROW("url", URL, 0, url, NULL, 0, 0, schemes, HOOKD_ESC_NONE, "an https or ws URL"),
    ROW("secret", SECRET, 0, secret, NULL, 0, 0, NULL, HOOKD_ESC_NONE, "a secret"),
    ROW("tpls", TEMPLATE_LIST, 0, tpls, NULL, 0, 0, NULL, HOOKD_ESC_HEADER, "templates"),
    ROW("map", TEMPLATE_MAP, 0, map, NULL, 0, 0, NULL, HOOKD_ESC_HEADER, "name -> template"),
    HOOKD_OPTIONS_END};

/* The one cross-option rule: a secret needs a URL. */
static int to_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                   void **state, char *err, size_t errlen) {
  (void)self, (void)err, (void)errlen;
  topts *t = *state;
  t->init_calls++;
  t->seen_num = t->num;
  if (t->secret && !t->url) return host->config_error(cfg, "secret", "needs url");
  return 0;
}

static hookd_result to_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  const topts *t = state;
  char *text = ev->host->render(t->tpl, ev, HOOKD_ESC_JSON, NULL);
  snprintf(out->message, sizeof out->message, "%s timeout=%u", text ? text : "?",
           (unsigned)ev->timeout_ms);
  ev->host->log(ev->self, ev, HOOKD_LOG_INFO, "test_options delivered %s", ev->id);
  ev->host->free(text);
  return strcmp(ev->type, "retry.me") == 0 ? HOOKD_RETRY : HOOKD_OK;
}

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "test_options",
    .version = "0.1.0",
    .description = "test-only plugin with one option of every type",
    .init = to_init,
    .deliver = to_deliver,
    .options = opts,
    .state_size = sizeof(topts),
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  return HOOKD_ABI_COMPATIBLE(host_abi) ? &descriptor : NULL;
}
