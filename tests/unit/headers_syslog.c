/* Compile test: every core header beside <syslog.h>, whose LOG_* macros core's log levels
 * must not clash with (log.h names its levels HLOG_*). Built and run by ctest. */
#include <syslog.h>

#include "access.h"
#include "admin.h"
#include "cli_controls.h"
#include "cli_plugins.h"
#include "clock.h"
#include "config.h"
#include "config_delivery.h"
#include "config_limits.h"
#include "crash.h"
#include "curl_lazy.h"
#include "dispatch.h"
#include "dlq.h"
#include "envelope.h"
#include "event.h"
#include "generation.h"
#include "http_client.h"
#include "http_server.h"
#include "ingest.h"
#include "jscan.h"
#include "jsonc.h"
#include "keysched.h"
#include "lane.h"
#include "log.h"
#include "metrics.h"
#include "pace.h"
#include "page.h"
#include "plugin_child.h"
#include "plugin_host.h"
#include "plugin_options.h"
#include "plugin_proc.h"
#include "plugin_wire.h"
#include "privs.h"
#include "router.h"
#include "runslots.h"
#include "scrub.h"
#include "smtp_client.h"
#include "spool.h"
#include "spool_pg.h"
#include "spool_sqlite.h"
#include "template.h"
#include "tls.h"
#include "verify.h"

int main(void) {
  /* Both sets of names are usable in one file and mean different things. */
  int syslog_levels[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
  log_level core_levels[] = {HLOG_ERROR, HLOG_WARN, HLOG_INFO, HLOG_DEBUG};
  return syslog_levels[2] == LOG_INFO && core_levels[2] == HLOG_INFO ? 0 : 1;
}
