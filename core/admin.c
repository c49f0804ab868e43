/* Admin endpoints on admin_listen: /healthz, /readyz and /metrics (Prometheus text). */
#include "admin.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

int admin_on_headers(void *data, http_conn *c, http_request *req) {
  (void)data;
  (void)c;
  if (strcmp(req->path, "/healthz") && strcmp(req->path, "/readyz") &&
      strcmp(req->path, "/metrics")) {
    return 404;
  }
  if (req->method != HTTP_GET && req->method != HTTP_HEAD) return 405;
  return 0;
}

static int render_metrics(admin *s, char **buf, size_t *len, size_t *cap) {
  int rc = metrics_render_global(buf, len, cap);
  static const struct {
    const char *name, *help;
    size_t off;
  } per[] = {
      {"hookd_deliveries_ok_total", "Deliveries a plugin instance completed.",
       offsetof(metrics_instance, ok)},
      {"hookd_deliveries_retried_total", "Delivery attempts that asked for a retry.",
       offsetof(metrics_instance, retry)},
      {"hookd_deliveries_dead_total", "Deliveries that became dead letters.",
       offsetof(metrics_instance, dead)},
      {"hookd_delivery_timeouts_total", "deliver() calls that overran timeout_ms.",
       offsetof(metrics_instance, timeouts)},
  };
  for (size_t k = 0; k < sizeof per / sizeof per[0]; k++) {
    rc |= metrics_append(buf, len, cap, "# HELP %s %s\n# TYPE %s counter\n", per[k].name,
                         per[k].help, per[k].name);
    for (size_t i = 0; i < s->host->n_insts; i++) {
      atomic_uint_fast64_t *v = (atomic_uint_fast64_t *)((char *)&s->host->insts[i].m + per[k].off);
      rc |= metrics_append(buf, len, cap, "%s{instance=\"%s\"} %llu\n", per[k].name,
                           s->host->insts[i].name, (unsigned long long)METRICS_GET(*v));
    }
  }
  rc |= metrics_append(buf, len, cap,
                       "# HELP hookd_deliveries_queued Deliveries waiting or running.\n"
                       "# TYPE hookd_deliveries_queued gauge\n");
  for (size_t i = 0; i < s->host->n_insts; i++) {
    rc |= metrics_append(buf, len, cap, "hookd_deliveries_queued{instance=\"%s\"} %llu\n",
                         s->host->insts[i].name,
                         (unsigned long long)METRICS_GET(s->host->insts[i].m.queued));
  }
  rc |= metrics_append(buf, len, cap,
                       "# HELP hookd_build_info hookd version.\n# TYPE hookd_build_info gauge\n"
                       "hookd_build_info{version=\"%s\"} 1\n",
                       HOOKD_VERSION);
  return rc;
}

void admin_on_request(void *data, http_conn *c, http_request *req) {
  admin *s = data;
  if (strcmp(req->path, "/healthz") == 0) {
    http_respond_text(c, 200, "ok");
  } else if (strcmp(req->path, "/readyz") == 0) {
    if (s->draining) {
      http_respond_text(c, 503, "shutting down");
    } else {
      http_respond_text(c, 200, "ready");
    }
  } else {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (render_metrics(s, &buf, &len, &cap) != 0) {
      http_respond(c, 500, NULL, NULL, 0);
    } else {
      http_respond(c, 200, "X-Content-Type-Options: nosniff\r\n", buf, len);
    }
    free(buf);
  }
}

