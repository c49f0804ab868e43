/* Admin endpoints on admin_listen: /healthz, /readyz, /metrics, the status page and dead-letter
 * replay. */
#ifndef HOOKD_ADMIN_H
#define HOOKD_ADMIN_H

/*
 * GET  /healthz                        200 "ok" while the process answers
 * GET  /readyz                         200 "ready", or 503 with the reason
 * GET  /metrics                        Prometheus text exposition
 * GET  /                               the status page (HTML, no external assets)
 * GET  /status.json                    what the page shows, as JSON
 * GET  /event?source=S&id=I            one event: headers, body, deliveries, attempts
 * GET  /search?q=TEXT                  events whose id or order key is TEXT
 * POST /dead-letters/ID/replay         dlq_replay(ID); needs "X-Hookd-Admin: 1"
 * POST /reload                         reload the config (as SIGHUP); same header
 * POST /instances/NAME/pause           pause an instance (as `hookd pause`); same header
 * POST /instances/NAME/resume          resume it; same header
 * POST /instances/NAME/replay          back-fill it (as `hookd replay`), form body
 *                                      since=DURATION[&type=PATTERN][&source=NAME]
 *
 * With admin_token set, every endpoint but /healthz and /readyz needs
 * "Authorization: Bearer TOKEN" (or Basic with TOKEN as the password, so a
 * browser can ask for it). Without a token (only allowed on a loopback
 * admin_listen), every request is refused (403) unless its Host is
 * localhost, a loopback literal or the admin address (DNS rebinding). The dead-letter work runs
 * on libuv's threadpool (it opens the spool database); everything else on
 * the loop thread.
 */

#include <uv.h>
struct config;
#include "dispatch.h"
#include "http_server.h"
#include "plugin_host.h"
#include "spool.h"

/* Ends a POST /reload: status 200 (reloaded) or 400/503 with why. */
typedef void (*admin_reload_done)(void *arg, int status, const char *why);

/* What the admin endpoints read. Owned by the server; everything it points
 * to outlives it. */
typedef struct admin {
  const struct config *cfg;
  plugin_host *host;
  dispatch *dp;       /* the current generation's */
  spool_lane **lanes; /* its instances' spool lanes, by index */
  spool *sp;
  uv_loop_t *loop; /* for the threadpool work */
  int listening;   /* set once every listener is bound */
  int draining;    /* set when shutdown starts: /readyz answers 503 */
  /* POST /reload: starts a reload (or joins the one running) and calls
   * done(arg, ...) on the loop thread when it ended. */
  void (*reload)(void *data, admin_reload_done done, void *arg);
  void *reload_data;
} admin;

/* http_handler callbacks; data is the admin. Loop thread. */
int admin_on_headers(void *data, http_conn *c, http_request *req);
void admin_on_request(void *data, http_conn *c, http_request *req);

/* Why hookd is not ready (it cannot take events), or NULL when it is.
 * Loop thread. */
const char *admin_not_ready(admin *a, char *buf, size_t len);
/* Instance i's figures for the page: metrics, with the queue depth and the
 * oldest unfinished delivery from its spool lane. Loop thread. */
void admin_instance_view(admin *a, size_t i, metrics_instance_view *v);
/* "ok", "retrying", "failing", "idle", "not initialised", "process init failed" or
 * "process restarting". */
const char *admin_health(const plugin_instance *inst, const metrics_instance_view *v);
/* The CSS class the page gives a health (ok, retrying, failing, idle). */
const char *admin_health_class(const char *h);

/* What a ready hookd still reports: instances at their max_pending (events
 * routed to them get 503) or with stuck deliver() calls. Writes "" when
 * none. Loop thread. */
void admin_ready_notes(admin *a, char *buf, size_t len);

#endif
