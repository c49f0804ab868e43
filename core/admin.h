/* Admin endpoints on admin_listen: /healthz, /readyz and /metrics. */
#ifndef HOOKD_ADMIN_H
#define HOOKD_ADMIN_H

#include "config.h"
#include "http.h"
#include "plugin_host.h"
#include "spool.h"

/* What the admin endpoints read. Owned by the server; everything it points
 * to outlives it. */
typedef struct admin {
  const config *cfg;
  plugin_host *host;
  spool *sp;
  int draining; /* set when shutdown starts: /readyz answers 503 */
} admin;

/* http_handler callbacks; data is the admin. Loop thread. */
int admin_on_headers(void *data, http_conn *c, http_request *req);
void admin_on_request(void *data, http_conn *c, http_request *req);

#endif
