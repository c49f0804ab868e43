/* plugin.h and helpers.h beside <syslog.h>, built -std=c99 -pedantic -Werror: no clash with LOG_*
 * and no GNU extension needed. */
#include <syslog.h>

#include <hookd/helpers.h>
#include <hookd/plugin.h>

typedef struct st {
  const char *name;
  int64_t n;
} st;

static const hookd_option opts[] = {HOOKD_OPTION("name", STRING, st, name, "x", "a name"),
                                    HOOKD_OPTION("n", INT, st, n, "1", "a number"),
                                    HOOKD_OPTIONS_END};

static hookd_result deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  (void)state, (void)ev, (void)out;
  return HOOKD_OK;
}

HOOKD_PLUGIN_DEFINE("sdk_header", "1.0.0", "compiles", NULL, deliver, NULL, opts, st)

int main(void) {
  hookd_host_api host;
  hookd_buf b = {0};
  int64_t ms = 0;
  host.struct_size = sizeof host;
  hookd_buf_json(&b, "a\"b", 3);
  hookd_buf_free(&b);
  syslog(LOG_DEBUG, "%d %d", LOG_INFO, HOOKD_LOG_INFO);
  return !(hookd_plugin_entry(HOOKD_PLUGIN_ABI) != NULL && HOOKD_HOST_HAS(&host, smtp) &&
           opts[1].offset == offsetof(st, n) &&
           hookd_iso8601_parse("2026-12-01T14:00:00Z", &ms) == 0 &&
           HOOKD_ABI_COMPATIBLE(HOOKD_PLUGIN_ABI));
}
