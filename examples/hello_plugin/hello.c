/* hello: the smallest useful hookd plugin — logs a greeting rendered from each event. */
#include <hookd/plugin.h>
#include <stdio.h>

/* The host fills this from the table below; no init() is needed. */
typedef struct hello {
  hookd_template *greeting;
  int64_t repeat;
  int shout;
} hello;

static const hookd_option hello_options[] = {
    {"greeting", HOOKD_OPT_TEMPLATE, 0, offsetof(hello, greeting),
     "Hello, {{data.meetingInfo.primaryInviteeName|default:world}}!", 0, 0, NULL, HOOKD_ESC_NONE,
     "the text to log for each event"},
    {"repeat", HOOKD_OPT_INT, 0, offsetof(hello, repeat), "1", 1, 5, NULL, HOOKD_ESC_NONE,
     "how many times to log it"},
    HOOKD_OPTION("shout", BOOL, hello, shout, "false", "log at warning level instead of info"),
    HOOKD_OPTIONS_END};

/* Worker thread: may block; returns OK, RETRY or FAIL. ev->host is the host table. */
static hookd_result hello_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  const hello *h = state;
  hookd_log_level level = h->shout ? HOOKD_LOG_WARN : HOOKD_LOG_INFO;
  char *text = ev->host->render(h->greeting, ev, HOOKD_ESC_NONE, NULL);
  if (text == NULL) return snprintf(out->message, sizeof out->message, "no memory"), HOOKD_RETRY;
  for (int64_t i = 0; i < h->repeat; i++) ev->host->log(ev->self, ev, level, "%s", text);
  ev->host->free(text);
  return HOOKD_OK;
}

/* The descriptor and hookd_plugin_entry(): a host older than ABI 1.1 (which
 * would not fill the options) is refused, and the host names both versions. */
HOOKD_PLUGIN_DEFINE("hello", "1.1.0", "logs a greeting for every event", NULL, hello_deliver, NULL,
                    hello_options, hello)
