/* Process-wide counters and their Prometheus text exposition. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

metrics g_metrics;

static const int statuses[] = {
#define X(s) s,
    METRICS_STATUSES(X)
#undef X
};

void metrics_count_status(int status) {
  if (status >= 200 && status < 300) status = 200;
  for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
    if (statuses[i] == status) {
      METRICS_INC(g_metrics.requests[i]);
      return;
    }
  }
}

int metrics_append(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = *cap - *len;
    int n = vsnprintf(*buf ? *buf + *len : NULL, *buf ? room : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if (*buf && (size_t)n < room) {
      *len += (size_t)n;
      return 0;
    }
    size_t ncap = (*cap ? *cap * 2 : 4096);
    while (ncap < *len + (size_t)n + 1) ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (nb == NULL) return -1;
    *buf = nb;
    *cap = ncap;
  }
}

int metrics_render_global(char **buf, size_t *len, size_t *cap) {
  int rc = 0;
  rc |= metrics_append(buf, len, cap,
                       "# HELP hookd_http_requests_total Webhook requests answered, by status.\n"
                       "# TYPE hookd_http_requests_total counter\n");
  for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
    rc |= metrics_append(buf, len, cap, "hookd_http_requests_total{status=\"%d\"} %llu\n",
                         statuses[i], (unsigned long long)METRICS_GET(g_metrics.requests[i]));
  }
#define COUNTER(name, help, field)                                                      \
  rc |= metrics_append(buf, len, cap, "# HELP " name " " help "\n# TYPE " name " counter\n" name \
                       " %llu\n", (unsigned long long)METRICS_GET(g_metrics.field))
  COUNTER("hookd_events_accepted_total", "Events accepted and stored.", events_accepted);
  COUNTER("hookd_events_duplicate_total", "Events answered as duplicates of an accepted one.",
          events_duplicate);
  COUNTER("hookd_events_unrouted_total", "Accepted events that no route matched.",
          events_unrouted);
  COUNTER("hookd_connections_total", "Connections accepted.", connections_total);
  COUNTER("hookd_connections_refused_total", "Connections refused over max_connections.",
          connections_refused);
#undef COUNTER
  rc |= metrics_append(buf, len, cap,
                       "# HELP hookd_connections_open Open webhook connections.\n"
                       "# TYPE hookd_connections_open gauge\nhookd_connections_open %llu\n",
                       (unsigned long long)METRICS_GET(g_metrics.connections_open));
  return rc ? -1 : 0;
}
