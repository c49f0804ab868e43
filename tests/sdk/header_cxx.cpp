// plugin.h and helpers.h compiled as C++ (a plugin written in C++ includes them as they are).
#include <syslog.h>

#include <string>

#include <hookd/helpers.h>
#include <hookd/plugin.h>

struct st {
  const char *name;
  int64_t n;
};

static const hookd_option opts[] = {HOOKD_OPTION("name", STRING, st, name, "x", "a name"),
                                    HOOKD_OPTION("n", INT, st, n, "1", "a number"),
                                    HOOKD_OPTIONS_END};

static hookd_result deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  (void)state, (void)ev, (void)out;
  return HOOKD_OK;
}

HOOKD_PLUGIN_DEFINE("sdk_header", "1.0.0", "compiles", NULL, deliver, NULL, opts, st)

int main() {
  hookd_buf b = {};
  hookd_buf_base64(&b, "hi", 2, 0);
  int ok = b.len == 4 && std::string(b.p) == "aGk=";
  hookd_buf_free(&b);
  int64_t ms = 0;
  return !(ok && hookd_plugin_entry(HOOKD_PLUGIN_ABI)->state_size == sizeof(st) &&
           opts[0].type == HOOKD_OPT_STRING &&
           hookd_iso8601_parse("2026-12-01T14:00:00+01:00", &ms) == 0 && ms == 1796130000000LL &&
           hookd_meeting_kind_of("scheduling.smartscheduler.canceled", NULL) ==
               HOOKD_MEETING_CANCELED);
}
