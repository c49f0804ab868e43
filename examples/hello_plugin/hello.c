/* hello: the smallest useful hookd plugin — logs a greeting rendered from each event. */
#include <stdio.h>
#include <stdlib.h>

#include <hookd/plugin.h>

typedef struct hello {
  const hookd_host_api *host;
  hookd_instance *self;
  hookd_template *greeting;
} hello;

/* Main thread: read and check the config, keep what deliver() needs. */
static int hello_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                      void **state, char *err, size_t errlen) {
  static const char *const keys[] = {"greeting", NULL};
  (void)err, (void)errlen; /* config errors are recorded by the getters */
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK) return -1;
  hello *h = calloc(1, sizeof *h);
  if (h == NULL) return -1;
  h->host = host;
  h->self = self;
  if (host->config_template(cfg, "greeting", "Hello, {{data.meetingInfo.primaryInviteeName|default:world}}!",
                            &h->greeting) < 0) {
    free(h);
    return -1;
  }
  *state = h;
  return 0;
}

/* Worker thread: may block; returns OK, RETRY or FAIL. */
static hookd_result hello_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  hello *h = state;
  char *text = h->host->render(h->greeting, ev, HOOKD_ESC_NONE, NULL);
  if (text == NULL) {
    snprintf(out->message, sizeof out->message, "out of memory");
    return HOOKD_RETRY;
  }
  h->host->log(h->self, ev, HOOKD_LOG_INFO, "%s (%s, attempt %u)", text, ev->type, ev->attempt);
  h->host->free(text);
  return HOOKD_OK;
}

static void hello_destroy(void *state) {
  hello *h = state;
  h->host->template_free(h->greeting);
  free(h);
}

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "hello",
    .version = "1.0.0",
    .description = "logs a greeting for every event",
    .init = hello_init,
    .deliver = hello_deliver,
    .destroy = hello_destroy,
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return &descriptor;
}
