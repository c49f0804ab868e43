/* The status page: overview, event detail and search rendered into the embedded template, with SVG
 * charts. */
#include "page.h"
#include "hookd/helpers.h"
#include "config.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "pace.h"
#include "plugin_proc.h"
#include "scrub.h"
#include "clock.h"

/* cmake/embed.cmake: core/service/page/status.{html,css,js}. */
extern const char page_status_html[], page_status_css[], page_status_js[];
extern const size_t page_status_html_len, page_status_css_len, page_status_js_len;

#define BODY_SHOWN (256u << 10) /* body bytes the detail view prints */

/* --- output ------------------------------------------------------------------- */

#define PUT(b, ...) ((b)->rc |= metrics_append(&(b)->buf, &(b)->len, &(b)->cap, __VA_ARGS__))

/* Instance i of the host the admin listener reports on. */
static plugin_instance *inst_at(const admin *a, size_t i) {
  return plugin_host_instance(a->host, i);
}

static void put_raw(page_buf *b, const char *s, size_t n) {
  if (b->rc) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *nb = realloc(b->buf, cap);
    if (nb == NULL) {
      b->rc = -1;
      return;
    }
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  b->buf[b->len] = '\0';
}

/* n bytes of s as HTML text or attribute value: markup characters escaped,
 * control characters (but tab and, with keep_lines, newline) as U+FFFD. */
static void put_html_n(page_buf *b, const char *s, size_t n, int keep_lines) {
  size_t start = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    const char *rep = ch == '&'    ? "&amp;"
                      : ch == '<'  ? "&lt;"
                      : ch == '>'  ? "&gt;"
                      : ch == '"'  ? "&quot;"
                      : ch == '\'' ? "&#39;"
                      : (ch < 0x20 && ch != '\t' && !(keep_lines && ch == '\n')) || ch == 0x7f
                          ? "\xef\xbf\xbd"
                          : NULL;
    if (rep == NULL) continue;
    put_raw(b, s + start, i - start);
    put_raw(b, rep, strlen(rep));
    start = i + 1;
  }
  put_raw(b, s + start, n - start);
}

static void put_html(page_buf *b, const char *s) {
  if (s) put_html_n(b, s, strlen(s), 0);
}

/* s percent-encoded as a URL query value. */
static void put_url(page_buf *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
        *p == '-' || *p == '_' || *p == '.' || *p == '~') {
      put_raw(b, (const char *)p, 1);
    } else {
      char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
      put_raw(b, e, 3);
    }
  }
}

/* <a href="/event?source=S&amp;id=I">text</a> */
static void put_event_link(page_buf *b, const char *source, const char *id, const char *text) {
  PUT(b, "<a href=\"/event?source=");
  put_url(b, source);
  PUT(b, "&amp;id=");
  put_url(b, id);
  PUT(b, "\">");
  put_html(b, text);
  PUT(b, "</a>");
}

/* An event's source, id (a link to its detail) and type, as the cells of
 * a row between the source's <td> and the type's </td>. */
static void put_event_cells(page_buf *b, const char *source, const char *id, const char *type) {
  put_html(b, source);
  PUT(b, "</td><td><code>");
  put_event_link(b, source, id, id);
  PUT(b, "</code></td><td>");
  put_html(b, type);
}

void page_iso_time(int64_t ms, char *out, size_t len) {
  char t[32] = "-";
  if (ms > 0) hookd_iso8601_format(ms, t); /* the SDK's one ISO 8601 format */
  snprintf(out, len, "%s", t);
}

const char *page_scrubbed(const char *text, char *buf, size_t len) {
  snprintf(buf, len, "%s", text ? text : "");
  scrub_text(buf, len);
  return buf;
}

const char *page_csp_header(void) {
  static char csp[700];
  if (csp[0] == '\0') {
    unsigned char d[32];
    unsigned int dl = sizeof d;
    EVP_Digest(page_status_js, page_status_js_len, d, &dl, EVP_sha256(), NULL);
    unsigned char b64[64];
    EVP_EncodeBlock(b64, d, sizeof d);
    /* form-action 'self': the search form is a GET to /search. */
    snprintf(csp, sizeof csp,
             "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
             "script-src 'sha256-%s'; connect-src 'self'; img-src 'none'; base-uri 'none'; "
             "form-action 'self'; frame-ancestors 'none'\r\n",
             b64);
  }
  return csp;
}

/* --- the template ---------------------------------------------------------------- */

typedef struct page_vars {
  const char *title, *view, *query;
  const page_buf *main;
  admin *a;
} page_vars;

static void put_var(page_buf *b, const char *name, size_t n, const page_vars *v) {
  char why[256], t[40];
#define IS(s) (n == sizeof(s) - 1 && memcmp(name, s, n) == 0)
  if (IS("title")) {
    put_html(b, v->title);
  } else if (IS("css")) {
    put_raw(b, page_status_css, page_status_css_len);
  } else if (IS("script")) {
    put_raw(b, page_status_js, page_status_js_len);
  } else if (IS("version")) {
    put_html(b, HOOKD_VERSION);
  } else if (IS("ready_class") || IS("readiness")) {
    const char *not_ready = admin_not_ready(v->a, why, sizeof why);
    if (IS("ready_class")) {
      PUT(b, "%s", not_ready ? "not-ready" : "ok");
    } else if (not_ready) {
      PUT(b, "Not ready: ");
      put_html(b, not_ready);
    } else {
      PUT(b, "Ready");
    }
  } else if (IS("started")) {
    page_iso_time(g_metrics.start_ms, t, sizeof t);
    put_html(b, t);
  } else if (IS("query")) {
    put_html(b, v->query ? v->query : "");
  } else if (IS("view")) {
    put_html(b, v->view);
  } else if (IS("main")) {
    if (v->main->buf) put_raw(b, v->main->buf, v->main->len);
  }
#undef IS
}

/* The template with every {{name}} filled. */
static void fill(page_buf *b, const page_vars *v) {
  const char *p = page_status_html, *end = p + page_status_html_len;
  while (p < end) {
    const char *open = strstr(p, "{{");
    const char *close = open ? strstr(open + 2, "}}") : NULL;
    if (open == NULL || close == NULL) {
      put_raw(b, p, (size_t)(end - p));
      break;
    }
    put_raw(b, p, (size_t)(open - p));
    put_var(b, open + 2, (size_t)(close - open - 2), v);
    p = close + 2;
  }
  if (v->main->rc) b->rc = -1;
}

/* --- charts (SVG drawn here) --------------------------------------------------------- */

#define CW 560 /* chart width, height and plot margins */
#define CH 170
#define CL 44
#define CR 8
#define CT 10
#define CB 22

/* A round number at or above v, for the y axis. */
static uint32_t nice_max(uint32_t v) {
  uint32_t steps[] = {1, 2, 5};
  for (uint32_t scale = 1;; scale *= 10) {
    for (size_t i = 0; i < 3; i++) {
      if (steps[i] * scale >= v) return steps[i] * scale;
    }
    if (scale > 100000000u) return v;
  }
}

static void chart_axes(page_buf *b, uint32_t max, int h) {
  int ph = h - CT - CB;
  for (int k = 0; k <= 2; k++) {
    int y = CT + ph - ph * k / 2;
    PUT(b,
        "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>"
        "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%g</text>",
        CL, y, CW - CR, y, CL - 4, y + 4, (double)max * k / 2);
  }
  PUT(b,
      "<text x=\"%d\" y=\"%d\">-60 min</text><text x=\"%d\" y=\"%d\" text-anchor=\"middle\">"
      "-30 min</text><text x=\"%d\" y=\"%d\" text-anchor=\"end\">now</text>",
      CL, h - 6, CL + (CW - CL - CR) / 2, h - 6, CW - CR, h - 6);
}

static double minute_x(size_t j) {
  return CL + (double)j * (CW - CL - CR) / (METRICS_MINUTES - 1);
}

/* Accepted, rejected and delivered per minute, as three lines. */
static void chart_traffic(page_buf *b, int64_t now) {
  metrics_history h;
  metrics_history_get(&h, now);
  const uint32_t *series[3] = {h.accepted, h.rejected, h.delivered};
  static const char *const names[3] = {"accepted", "rejected", "delivered"};
  static const char *const colors[3] = {"#2f6db3", "#c0392b", "#2e8b3d"};
  uint32_t max = 1, sum[3] = {0, 0, 0};
  for (size_t s = 0; s < 3; s++) {
    for (size_t j = 0; j < METRICS_MINUTES; j++) {
      sum[s] += series[s][j];
      if (series[s][j] > max) max = series[s][j];
    }
  }
  max = nice_max(max);
  PUT(b,
      "<figure><figcaption>Events per minute, last hour</figcaption>"
      "<svg id=\"chart-traffic\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
      "aria-label=\"accepted %u, rejected %u, delivered %u in the last hour\" "
      "data-accepted=\"%u\" data-rejected=\"%u\" data-delivered=\"%u\">",
      CW, CH, CW, CH, sum[0], sum[1], sum[2], sum[0], sum[1], sum[2]);
  chart_axes(b, max, CH);
  int ph = CH - CT - CB;
  for (size_t s = 0; s < 3; s++) {
    PUT(b, "<polyline class=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"",
        names[s], colors[s]);
    for (size_t j = 0; j < METRICS_MINUTES; j++) {
      PUT(b, "%s%.1f,%.1f", j ? " " : "", minute_x(j), CT + ph - (double)series[s][j] * ph / max);
    }
    PUT(b, "\"/>");
  }
  /* One hover target a minute says the numbers. */
  for (size_t j = 0; j < METRICS_MINUTES; j++) {
    time_t t = (time_t)((h.first_minute + (int64_t)j) * 60);
    struct tm tm;
    gmtime_r(&t, &tm);
    PUT(b,
        "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"transparent\"><title>"
        "%02d:%02d UTC: %u accepted, %u rejected, %u delivered</title></rect>",
        minute_x(j) - 5, CT, 10.0, ph, tm.tm_hour, tm.tm_min, h.accepted[j], h.rejected[j],
        h.delivered[j]);
  }
  PUT(b, "</svg><div class=\"legend\">");
  for (size_t s = 0; s < 3; s++) {
    PUT(b, "<span><i style=\"background:%s\"></i>%s (%u)</span>", colors[s], names[s], sum[s]);
  }
  PUT(b, "</div></figure>\n");
}

/* One instance's attempts by outcome per minute, as stacked bars. */
static void chart_outcomes(page_buf *b, plugin_instance *inst, int64_t now) {
  metrics_instance_history h;
  metrics_instance_history_get(plugin_host_instance_metrics(inst), plugin_host_instance_name(inst),
                               &h, now);
  const uint32_t *series[4] = {h.delivered, h.retried, h.dead, h.held};
  static const char *const names[4] = {"delivered", "retried", "dead", "held"};
  static const char *const colors[4] = {"#2e8b3d", "#d4a017", "#c0392b", "#7b7bc4"};
  uint32_t max = 1, sum[4] = {0, 0, 0, 0};
  for (size_t j = 0; j < METRICS_MINUTES; j++) {
    uint32_t col = 0;
    for (size_t s = 0; s < 4; s++) {
      col += series[s][j];
      sum[s] += series[s][j];
    }
    if (col > max) max = col;
  }
  max = nice_max(max);
  int height = 120, ph = height - CT - CB;
  PUT(b, "<figure><figcaption>");
  put_html(b, plugin_host_instance_name(inst));
  PUT(b,
      ": deliveries by outcome per minute</figcaption><svg class=\"chart-outcomes\" "
      "data-instance=\"");
  put_html(b, plugin_host_instance_name(inst));
  PUT(b,
      "\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" data-delivered=\"%u\" "
      "data-retried=\"%u\" data-dead=\"%u\" data-held=\"%u\" aria-label=\"delivered %u, retried "
      "%u, dead %u, held %u in the last hour\">",
      CW, height, CW, height, sum[0], sum[1], sum[2], sum[3], sum[0], sum[1], sum[2], sum[3]);
  chart_axes(b, max, height);
  double bw = (double)(CW - CL - CR) / METRICS_MINUTES - 1;
  for (size_t j = 0; j < METRICS_MINUTES; j++) {
    double y = CT + ph;
    for (size_t s = 0; s < 4; s++) {
      if (series[s][j] == 0) continue;
      double hgt = (double)series[s][j] * ph / max;
      y -= hgt;
      PUT(b,
          "<rect class=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
          "<title>%u %s</title></rect>",
          names[s], minute_x(j) - bw / 2, y, bw, hgt, colors[s], series[s][j], names[s]);
    }
  }
  PUT(b, "</svg><div class=\"legend\">");
  for (size_t s = 0; s < 4; s++) {
    PUT(b, "<span><i style=\"background:%s\"></i>%s (%u)</span>", colors[s], names[s], sum[s]);
  }
  PUT(b, "</div></figure>\n");
}

static void section_outcome_charts(page_buf *b, admin *a) {
  int64_t now = clock_now_ms();
  PUT(b, "<div class=\"charts\" id=\"outcome-charts\">\n");
  for (size_t i = 0; i < a->host->n_insts; i++) chart_outcomes(b, inst_at(a, i), now);
  PUT(b, "</div>\n");
}

/* --- the overview's sections ------------------------------------------------------------ */

static void section_counters(page_buf *b, admin *a) {
  spool_stats st;
  memset(&st, 0, sizeof st);
  if (a->sp) spool_get_stats(a->sp, &st);
  struct {
    const char *key, *label;
    uint64_t v;
  } rows[] = {
      {"accepted", "events accepted", METRICS_GET(g_metrics.events_accepted)},
      {"duplicate", "duplicates answered", METRICS_GET(g_metrics.events_duplicate)},
      {"unrouted", "accepted, no route", METRICS_GET(g_metrics.events_unrouted)},
      {"pending", "deliveries pending", st.pending},
      {"dead", "dead letters", st.dead},
      {"spool_bytes", "spool size (bytes)", st.db_bytes},
      {"connections", "open connections", METRICS_GET(g_metrics.connections_open)},
  };
  PUT(b, "<div><h2>Counters</h2>\n<table id=\"counters\"><tbody>\n");
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    PUT(b, "<tr data-key=\"%s\"><th>%s</th><td class=\"num\">%" PRIu64 "</td></tr>\n", rows[i].key,
        rows[i].label, rows[i].v);
  }
  PUT(b, "</tbody></table></div>\n");
}

/* "ok", "open (next probe in 12 s)", "paused since ...", "saturated". */
static void put_state(page_buf *b, const pace_info *pi, const spool_lane_stats *ls, int64_t now) {
  const char *name = pace_state_name(pi->state);
  PUT(b, "<td><span class=\"state state-%s\">%s</span>", name, name);
  if (pi->state == PACE_OPEN) {
    int64_t wait = pi->open_until - now;
    PUT(b, "<br><span class=\"note\">%s</span>",
        pi->probing ? "probe running"
        : wait > 0  ? "next probe soon"
                    : "probe due");
    if (!pi->probing && wait > 0)
      PUT(b, "<span class=\"note\"> (%lld s)</span>", (long long)((wait + 999) / 1000));
  } else if (pi->state == PACE_PAUSED && ls->paused_ms) {
    char t[40];
    page_iso_time(ls->paused_ms, t, sizeof t);
    PUT(b, "<br><span class=\"note\">since %s</span>", t);
  }
  if (pi->hold_until > now) {
    PUT(b, "<br><span class=\"note rate-limited\">held %lld ms (too many requests)</span>",
        (long long)(pi->hold_until - now));
  }
  PUT(b, "</td>");
}

static void put_rate(page_buf *b, const pace_info *pi) {
  if (pi->rate_count == 0) {
    PUT(b, "<td class=\"rate\">-</td>");
    return;
  }
  PUT(b, "<td class=\"rate\">%u/%s</td>", pi->rate_count,
      pi->rate_period_ms == 1000    ? "s"
      : pi->rate_period_ms == 60000 ? "m"
                                    : "h");
}

static void put_controls(page_buf *b, const char *name, int paused) {
  PUT(b, "<td class=\"controls\"><button type=\"button\" data-action=\"%s\" data-instance=\"",
      paused ? "resume" : "pause");
  put_html(b, name);
  PUT(b,
      "\">%s</button> <input class=\"since\" value=\"1h\" aria-label=\"replay events of the last\">"
      " <button type=\"button\" data-action=\"backfill\" data-instance=\"",
      paused ? "Resume" : "Pause");
  put_html(b, name);
  PUT(b,
      "\" title=\"deliver the events stored in that time again to this instance\">Replay"
      "</button></td>");
}

/* The isolation cell: "thread", or the child's pid, state and history. */
static void put_isolation(page_buf *b, const plugin_instance *inst) {
  if (plugin_host_instance_proc(inst) == NULL) {
    PUT(b, "<td class=\"isolation\">thread</td>");
    return;
  }
  plugin_proc_status ps;
  plugin_proc_get_status(plugin_host_instance_proc(inst), &ps);
  PUT(b, "<td class=\"isolation\" data-pid=\"%d\" data-state=\"%s\">process &middot; ", ps.pid,
      ps.state);
  if (ps.pid) PUT(b, "pid %d &middot; ", ps.pid);
  PUT(b, "%s", ps.state);
  if (ps.restart_in_ms) PUT(b, " (next start in %lld ms)", (long long)ps.restart_in_ms);
  PUT(b, " &middot; %" PRIu64 " restart(s), %" PRIu64 " crash(es)", ps.restarts, ps.crashes);
  if (ps.last_exit[0]) {
    PUT(b, "<br>last: ");
    put_html(b, ps.last_exit);
  }
  if (ps.error[0]) {
    PUT(b, "<br>");
    put_html(b, ps.error);
  }
  PUT(b, "</td>");
}

static void instance_row(page_buf *b, admin *a, size_t i, int64_t now) {
  plugin_instance *inst = inst_at(a, i);
  metrics_instance_view v;
  admin_instance_view(a, i, &v);
  spool_lane_stats ls;
  memset(&ls, 0, sizeof ls);
  if (a->lanes) spool_lane_get_stats(a->lanes[i], &ls);
  pace_info pi;
  memset(&pi, 0, sizeof pi);
  pace *p = pace_get(plugin_host_instance_name(inst));
  if (p) pace_get_info(p, &pi);
  const char *h = admin_health(inst, &v);
  PUT(b, "<tr data-instance=\"");
  put_html(b, plugin_host_instance_name(inst));
  PUT(b, "\"><td>");
  put_html(b, plugin_host_instance_name(inst));
  PUT(b, "</td><td>");
  put_html(b, plugin_host_instance_module(inst));
  PUT(b, "</td>");
  put_isolation(b, inst);
  put_state(b, &pi, &ls, now);
  PUT(b,
      "<td class=\"health %s\">%s</td><td class=\"num queue\">%" PRIu64
      "</td><td class=\"num\">%" PRIu64 "</td><td class=\"num\">%" PRIu64
      "</td><td class=\"num\">%" PRIu64 "</td><td>",
      admin_health_class(h), h, ls.pending, v.retrying, v.delivered, v.dead);
  if (v.oldest_pending_ms) {
    PUT(b, "%llds", (long long)((now - v.oldest_pending_ms) / 1000));
  } else {
    PUT(b, "-");
  }
  PUT(b, "</td>");
  put_rate(b, &pi);
  put_controls(b, plugin_host_instance_name(inst), ls.paused);
  PUT(b, "<td>");
  put_html(b, v.last_message);
  PUT(b, "</td></tr>\n");
}

static void section_instances(page_buf *b, admin *a) {
  if (a->dp) dispatch_observe(a->dp);
  PUT(b,
      "<h2>Plugin instances</h2>\n<table id=\"instances\"><thead><tr><th>instance</th>"
      "<th>module</th><th>isolation</th><th>state</th><th>health</th><th>queued</th><th>retrying</"
      "th>"
      "<th>delivered</th><th>dead</th><th>oldest pending</th><th>rate</th><th>controls</th>"
      "<th>last error</th></tr></thead><tbody>\n");
  int64_t now = clock_now_ms();
  for (size_t i = 0; i < a->host->n_insts; i++) instance_row(b, a, i, now);
  PUT(b, "</tbody></table>\n");
}

static void section_events(page_buf *b) {
  static metrics_recent recent[METRICS_RECENT]; /* loop thread only */
  size_t nr = metrics_recent_get(recent, METRICS_RECENT);
  char t[40];
  PUT(b,
      "<h2>Last events</h2>\n<table id=\"events\"><thead><tr><th>received</th>"
      "<th>source</th><th>event id</th><th>type</th><th>outcome per plugin</th></tr>"
      "</thead><tbody>\n");
  for (size_t i = 0; i < nr; i++) {
    metrics_recent *r = &recent[i];
    page_iso_time(r->received_ms, t, sizeof t);
    PUT(b, "<tr data-event-id=\"");
    put_html(b, r->id);
    PUT(b, "\"><td>%s</td><td>", t);
    put_event_cells(b, r->source, r->id, r->type);
    PUT(b, "</td><td>");
    if (r->n_targets == 0) PUT(b, "<span class=\"outcome\">no route</span>");
    for (size_t k = 0; k < r->n_targets; k++) {
      metrics_recent_target *tg = &r->targets[k];
      PUT(b, "%s<span class=\"outcome %s\" data-instance=\"", k ? "<br>" : "", tg->outcome);
      put_html(b, tg->instance);
      PUT(b, "\">");
      put_html(b, tg->instance);
      PUT(b, ": %s", tg->outcome);
      if (tg->attempt > 1) PUT(b, " (attempt %u)", tg->attempt);
      PUT(b, "</span>");
    }
    if (r->more_targets) PUT(b, "<br>and %zu more", r->more_targets);
    PUT(b, "</td></tr>\n");
  }
  PUT(b, "</tbody></table>\n");
}

static void section_rejected(page_buf *b) {
  static metrics_rejected rej[METRICS_REJECTED]; /* loop thread only */
  size_t n = metrics_rejected_get(rej, METRICS_REJECTED);
  char t[40];
  PUT(b,
      "<h2>Rejected requests</h2>\n<table id=\"rejected\"><thead><tr><th>time</th><th>peer</th>"
      "<th>path</th><th>status</th><th>reason</th></tr></thead><tbody>\n");
  for (size_t i = 0; i < n; i++) {
    page_iso_time(rej[i].at_ms, t, sizeof t);
    PUT(b, "<tr data-status=\"%d\"><td>%s</td><td>", rej[i].status, t);
    put_html(b, rej[i].peer);
    PUT(b, "</td><td><code>");
    put_html(b, rej[i].path);
    PUT(b, "</code></td><td class=\"num\">%d</td><td class=\"reason\">", rej[i].status);
    put_html(b, rej[i].reason);
    PUT(b, "</td></tr>\n");
  }
  if (n == 0) PUT(b, "<tr><td colspan=\"5\">none</td></tr>\n");
  PUT(b, "</tbody></table>\n");
}

static void section_dead(page_buf *b, const dlq_entry *dead, size_t n_dead, const char *err) {
  char t[40], eb[1100];
  PUT(b, "<h2>Dead letters</h2>\n");
  if (err) {
    PUT(b, "<p id=\"dead-letters-error\">Dead letters unavailable: ");
    put_html(b, err);
    PUT(b, "</p>\n");
  }
  PUT(b,
      "<table id=\"dead-letters\"><thead><tr><th>id</th><th>failed</th><th>source</th>"
      "<th>event id</th><th>type</th><th>instance</th><th>attempts</th><th>error</th>"
      "<th></th></tr></thead><tbody>\n");
  for (size_t i = 0; i < n_dead; i++) {
    const dlq_entry *e = &dead[i];
    page_iso_time(e->failed_ms, t, sizeof t);
    PUT(b, "<tr data-dead-id=\"%" PRId64 "\"><td>%" PRId64 "</td><td>%s</td><td>", e->id, e->id, t);
    put_event_cells(b, e->source, e->event_id, e->type);
    PUT(b, "</td><td>");
    put_html(b, e->instance);
    PUT(b, "</td><td class=\"num\">%u</td><td>", e->attempts);
    put_html(b, page_scrubbed(e->error, eb, sizeof eb));
    PUT(b,
        "</td><td><button type=\"button\" class=\"replay\" data-action=\"replay-dead\" "
        "data-id=\"%" PRId64 "\">Replay</button></td></tr>\n",
        e->id);
  }
  if (n_dead == 0) PUT(b, "<tr><td colspan=\"9\">none</td></tr>\n");
  PUT(b, "</tbody></table>\n");
}

static void finish(page_buf *b, admin *a, const char *title, const char *view, const char *query,
                   const page_buf *main) {
  page_vars v = {.title = title, .view = view, .query = query, .main = main, .a = a};
  fill(b, &v);
}

void page_overview(page_buf *b, admin *a, const dlq_entry *dead, size_t n_dead,
                   const char *dead_error) {
  page_buf m = {0};
  PUT(&m, "<div class=\"charts\" id=\"charts\">\n");
  section_counters(&m, a);
  PUT(&m, "<div><h2>Traffic</h2>\n");
  chart_traffic(&m, clock_now_ms());
  PUT(&m, "</div></div>\n");
  section_instances(&m, a);
  section_outcome_charts(&m, a);
  section_events(&m);
  section_rejected(&m);
  section_dead(&m, dead, n_dead, dead_error);
  finish(b, a, "hookd status", "overview", NULL, &m);
  free(m.buf);
}

/* --- event detail ----------------------------------------------------------------------- */

/* The body as indented JSON when it is JSON, else as it came. */
static void put_body(page_buf *b, const char *body, size_t len) {
  size_t shown = len > BODY_SHOWN ? BODY_SHOWN : len;
  cJSON *root = len <= BODY_SHOWN ? cJSON_ParseWithLength(body, len) : NULL;
  char *pretty = root ? cJSON_Print(root) : NULL;
  PUT(b, "<pre id=\"body\" class=\"%s\">", pretty ? "json" : "raw");
  if (pretty) {
    /* cJSON indents with tabs and puts a tab after each colon: two spaces
     * a level and one after the colon read better. (Strings hold no raw
     * tab: cJSON escapes them.) */
    size_t n = 0, plen = strlen(pretty);
    char *tidy = malloc(plen * 2 + 1);
    int line_start = 1;
    for (size_t i = 0; tidy && i < plen; i++) {
      char ch = pretty[i];
      if (ch == '\t' && line_start) {
        tidy[n++] = ' ';
        tidy[n++] = ' ';
        continue;
      }
      tidy[n++] = ch == '\t' ? ' ' : ch;
      line_start = ch == '\n';
    }
    put_html_n(b, tidy ? tidy : pretty, tidy ? n : plen, 1);
    free(tidy);
  } else {
    put_html_n(b, body, shown, 1);
  }
  PUT(b, "</pre>\n");
  if (shown < len) PUT(b, "<p class=\"note\">first %zu of %zu bytes</p>\n", shown, len);
  free(pretty);
  cJSON_Delete(root);
}

static void attempt_rows(page_buf *b, const dlq_delivery *dv) {
  char t[40], eb[HOOKD_MESSAGE_MAX + 200];
  PUT(b,
      "<table class=\"attempts\"><thead><tr><th>attempt</th><th>started</th><th>took</th>"
      "<th>outcome</th><th>status</th><th>answer</th><th>error</th></tr></thead><tbody>\n");
  for (size_t k = 0; k < dv->n_calls; k++) {
    const dlq_attempt *c = &dv->calls[k];
    page_iso_time(c->started_ms, t, sizeof t);
    PUT(b, "<tr class=\"attempt\" data-outcome=\"");
    put_html(b, c->outcome);
    PUT(b,
        "\"><td class=\"num\">%u</td><td>%s</td><td class=\"num\">%lld ms</td><td "
        "class=\"outcome\">",
        c->attempt, t, (long long)c->took_ms);
    put_html(b, c->outcome);
    if (c->status) {
      PUT(b, "</td><td class=\"num status\">%d</td><td class=\"answer\">", (int)c->status);
    } else {
      PUT(b, "</td><td class=\"num status\">-</td><td class=\"answer\">");
    }
    put_html(b, page_scrubbed(c->answer, eb, sizeof eb));
    PUT(b, "</td><td class=\"error\">");
    put_html(b, page_scrubbed(c->message, eb, sizeof eb));
    PUT(b, "</td></tr>\n");
  }
  if (dv->n_calls == 0) PUT(b, "<tr><td colspan=\"7\">no call yet</td></tr>\n");
  PUT(b, "</tbody></table>\n");
}

static void delivery_section(page_buf *b, const dlq_delivery *dv) {
  char t[40], eb[1100];
  PUT(b, "<section class=\"delivery\" data-instance=\"");
  put_html(b, dv->instance);
  PUT(b, "\" data-state=\"");
  put_html(b, dv->state);
  PUT(b, "\"><h3>");
  put_html(b, dv->instance);
  PUT(b, ": <span class=\"%s\">", strcmp(dv->state, "pending") == 0 ? "queued" : dv->state);
  put_html(b, dv->state);
  PUT(b, "</span></h3>\n<p>%u attempt(s)", dv->attempts);
  if (dv->crashes) PUT(b, ", %u crash(es)", dv->crashes);
  if (strcmp(dv->state, "pending") == 0 && dv->next_ms) {
    page_iso_time(dv->next_ms, t, sizeof t);
    PUT(b, ", due %s", t);
  }
  if (dv->backfill) PUT(b, ", from back-fill %" PRId64, dv->backfill);
  if (dv->last_error[0]) {
    PUT(b, "; last error: <span class=\"error\">");
    put_html(b, page_scrubbed(dv->last_error, eb, sizeof eb));
    PUT(b, "</span>");
  }
  PUT(b, "</p>\n");
  attempt_rows(b, dv);
  PUT(b, "</section>\n");
}

static void event_meta(page_buf *b, const dlq_event_detail *d) {
  char t[40];
  page_iso_time(d->ev.received_ms, t, sizeof t);
  PUT(b, "<dl class=\"meta\" id=\"event-meta\"><dt>source</dt><dd>");
  put_html(b, d->ev.source);
  PUT(b, "</dd><dt>type</dt><dd>");
  put_html(b, d->ev.type);
  PUT(b, "</dd><dt>order key</dt><dd id=\"order-key\">");
  if (d->ev.order_key[0]) {
    PUT(b, "<a href=\"/search?q=");
    put_url(b, d->ev.order_key);
    PUT(b, "\">");
    put_html(b, d->ev.order_key);
    PUT(b, "</a>");
  } else {
    PUT(b, "-");
  }
  PUT(b, "</dd><dt>received</dt><dd>%s</dd><dt>content type</dt><dd>", t);
  put_html(b, d->content_type);
  PUT(b, "</dd><dt>spool seq</dt><dd>%" PRId64 "</dd><dt>state</dt><dd>%s</dd></dl>\n", d->ev.seq,
      d->ev.done ? "finished" : "open");
}

void page_event(page_buf *b, admin *a, const char *source, const char *id, int rc,
                const dlq_event_detail *d, const char *err) {
  page_buf m = {0};
  PUT(&m, "<h2>Event <code id=\"event-id\">");
  put_html(&m, id);
  PUT(&m, "</code></h2>\n");
  if (rc != 0) {
    PUT(&m, "<p id=\"not-found\">");
    if (rc == DLQ_ENOTFOUND) {
      PUT(&m, "No event with this id from source ");
      put_html(&m, source);
      PUT(&m, " is stored (it may have been pruned after spool.retention).");
    } else {
      PUT(&m, "The spool could not be read: ");
      put_html(&m, err);
    }
    PUT(&m, "</p>\n");
  } else {
    event_meta(&m, d);
    PUT(&m, "<h2>Deliveries</h2>\n<div id=\"deliveries\">\n");
    for (size_t i = 0; i < d->n_deliveries; i++) delivery_section(&m, &d->deliveries[i]);
    if (d->n_deliveries == 0) PUT(&m, "<p>No delivery: no route matched it.</p>\n");
    PUT(&m, "</div>\n<h2>Headers</h2>\n<pre id=\"headers\">");
    if (d->headers[0]) {
      put_html_n(&m, d->headers, strlen(d->headers), 1);
    } else {
      PUT(&m, "(not kept: events stored before hookd kept headers, or replayed from disk)");
    }
    PUT(&m, "</pre>\n<h2>Body</h2>\n");
    put_body(&m, d->body, d->body_len);
  }
  char title[200];
  snprintf(title, sizeof title, "hookd event %s", id);
  finish(b, a, title, "event", NULL, &m);
  free(m.buf);
}

/* --- search ---------------------------------------------------------------------------------- */

void page_search(page_buf *b, admin *a, const char *q, int rc, const dlq_event_row *rows, size_t n,
                 const char *err) {
  page_buf m = {0};
  char t[40];
  PUT(&m, "<h2>Events with id or order key <code>");
  put_html(&m, q);
  PUT(&m, "</code></h2>\n");
  if (rc != 0) {
    PUT(&m, "<p>The spool could not be read: ");
    put_html(&m, err);
    PUT(&m, "</p>\n");
  }
  PUT(&m,
      "<table id=\"results\"><thead><tr><th>received</th><th>source</th><th>event id</th>"
      "<th>type</th><th>order key</th><th>state</th></tr></thead><tbody>\n");
  for (size_t i = 0; i < n; i++) {
    const dlq_event_row *r = &rows[i];
    page_iso_time(r->received_ms, t, sizeof t);
    PUT(&m, "<tr data-event-id=\"");
    put_html(&m, r->event_id);
    PUT(&m, "\"><td>%s</td><td>", t);
    put_html(&m, r->source);
    PUT(&m, "</td><td><code>");
    put_event_link(&m, r->source, r->event_id, r->event_id);
    PUT(&m, "</code></td><td>");
    put_html(&m, r->type);
    PUT(&m, "</td><td>");
    put_html(&m, r->order_key);
    PUT(&m, "</td><td>%s</td></tr>\n", r->done ? "finished" : "open");
  }
  if (n == 0 && rc == 0) {
    PUT(&m, "<tr><td colspan=\"6\">no stored event has this id or order key</td></tr>\n");
  }
  PUT(&m, "</tbody></table>\n");
  if (n >= PAGE_SEARCH_SHOWN)
    PUT(&m, "<p class=\"note\">the newest %d shown</p>\n", PAGE_SEARCH_SHOWN);
  finish(b, a, "hookd search", "search", q, &m);
  free(m.buf);
}
