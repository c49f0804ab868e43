/* Test-only shared object without the hookd_plugin_entry symbol: the host must refuse it. */
#include <hookd/plugin.h>

HOOKD_EXPORT int not_a_hookd_plugin(void);
int not_a_hookd_plugin(void) {
  return 1;
}
