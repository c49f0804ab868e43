/* Admin endpoints on admin_listen: health, readiness, Prometheus metrics, the status page and
 * dead-letter replay. */
#include "admin.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <llhttp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dlq.h"
#include "log.h"
#include "metrics.h"
#include "plugin_proc.h"
#include "scrub.h"

/* What a request asked for; req->route points at one of these. */
typedef enum {
  R_HEALTH,
  R_READY,
  R_METRICS,
  R_PAGE,
  R_JSON,
  R_REPLAY,
  R_UNAUTHORIZED, /* answered 401 with WWW-Authenticate in on_request */
  R_RELOAD,
  R_COUNT
} route_kind;
static const route_kind routes[R_COUNT] = {R_HEALTH, R_READY,  R_METRICS,      R_PAGE,
                                           R_JSON,   R_REPLAY, R_UNAUTHORIZED, R_RELOAD};

#define DEAD_SHOWN 100 /* dead letters the page lists */

static void reply(http_conn *c, int status, const char *headers, const char *body, size_t len) {
  metrics_count_admin(status);
  http_respond(c, status, headers, body, len);
}

static void reply_text(http_conn *c, int status, const char *text) {
  metrics_count_admin(status);
  http_respond_text(c, status, text);
}

/* --- access ---------------------------------------------------------------- */

static void sha256(const void *p, size_t n, unsigned char out[32]) {
  unsigned int len = 32;
  EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

/* Constant time in the token and the guess: both are hashed first. */
static int token_matches(const char *token, const char *guess, size_t guess_len) {
  unsigned char a[32], b[32];
  sha256(token, strlen(token), a);
  sha256(guess, guess_len, b);
  return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

/* "Bearer TOKEN", or "Basic base64(ANY:TOKEN)". */
static int authorized(const admin *a, const http_request *req) {
  const char *token = a->cfg->admin_token;
  if (token == NULL || token[0] == '\0') return 1;
  size_t len = 0;
  const char *v = http_request_header(req, "Authorization", &len);
  if (v == NULL) return 0;
  if (len > 7 && strncasecmp(v, "Bearer ", 7) == 0) return token_matches(token, v + 7, len - 7);
  if (len > 6 && strncasecmp(v, "Basic ", 6) == 0 && len - 6 < 1024) {
    unsigned char dec[800];
    int n = EVP_DecodeBlock(dec, (const unsigned char *)v + 6, (int)(len - 6));
    if (n < 0) return 0;
    for (size_t i = len; i > 6 && v[i - 1] == '='; i--) n--; /* padding decodes to NULs */
    const unsigned char *colon = memchr(dec, ':', (size_t)n);
    if (colon == NULL) return 0;
    size_t off = (size_t)(colon - dec) + 1;
    return token_matches(token, (const char *)dec + off, (size_t)n - off);
  }
  return 0;
}

/* Without a token, the Host must name the admin listener as only this
 * machine can: "localhost", a loopback literal (127.0.0.0/8, [::1]) or the
 * admin address itself, with any port. A DNS name, even one an attacker
 * points at 127.0.0.1 (DNS rebinding), is refused; so is a request without
 * exactly one Host. */
static int host_allowed(const admin *a, const http_request *req) {
  const char *v = NULL;
  size_t len = 0, n = 0;
  for (size_t i = 0; i < req->n_headers; i++) {
    if (strcasecmp(req->headers[i].name, "Host") != 0) continue;
    v = req->headers[i].value;
    len = req->headers[i].value_len;
    n++;
  }
  if (n != 1 || len == 0 || len >= 128) return 0;
  char h[128];
  memcpy(h, v, len);
  h[len] = '\0';
  char *host = h, *end;
  if (h[0] == '[') {
    host = h + 1;
    end = strchr(host, ']');
    if (end == NULL || (end[1] != '\0' && end[1] != ':')) return 0;
  } else {
    end = strchr(h, ':');
    if (end == NULL) end = h + len;
  }
  *end = '\0';
  if (strcasecmp(host, "localhost") == 0) return 1;
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) return 1;
  if (inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6)) return 1;
  /* The admin address as configured ("192.0.2.7:9090", "[2001:db8::1]:9090"). */
  const char *adm = a->cfg->admin_listen;
  if (adm == NULL) return 0;
  size_t al = adm[0] == '[' ? (size_t)(strchr(adm, ']') - adm - 1) : (size_t)(strrchr(adm, ':') - adm);
  const char *ah = adm[0] == '[' ? adm + 1 : adm;
  return strlen(host) == al && strncasecmp(host, ah, al) == 0;
}

int admin_on_headers(void *data, http_conn *c, http_request *req) {
  admin *a = data;
  (void)c;
  route_kind k;
  const char *p = req->path;
  int post = 0;
  if (strcmp(p, "/healthz") == 0) {
    k = R_HEALTH;
  } else if (strcmp(p, "/readyz") == 0) {
    k = R_READY;
  } else if (strcmp(p, "/metrics") == 0) {
    k = R_METRICS;
  } else if (strcmp(p, "/") == 0) {
    k = R_PAGE;
  } else if (strcmp(p, "/status.json") == 0) {
    k = R_JSON;
  } else if (strncmp(p, "/dead-letters/", 14) == 0 && strlen(p) > 21 &&
             strcmp(p + strlen(p) - 7, "/replay") == 0) {
    k = R_REPLAY;
    post = 1;
  } else if (strcmp(p, "/reload") == 0) {
    k = R_RELOAD;
    post = 1;
  } else {
    metrics_count_admin(404);
    return 404;
  }
  int ok_method =
      post ? req->method == HTTP_POST : (req->method == HTTP_GET || req->method == HTTP_HEAD);
  if (!ok_method) {
    metrics_count_admin(405);
    return 405;
  }
  int no_token = a->cfg->admin_token == NULL || a->cfg->admin_token[0] == '\0';
  if (no_token && !host_allowed(a, req)) {
    req->reason = "Host must be localhost, a loopback address or the admin address "
                  "(or set admin_token)";
    metrics_count_admin(403);
    return 403;
  }
  if (k != R_HEALTH && k != R_READY && !authorized(a, req)) {
    k = R_UNAUTHORIZED;
  } else if (post) {
    /* A form on another site cannot set this header, and a script there
     * cannot send it without a CORS preflight that is never granted. */
    size_t len = 0;
    const char *x = http_request_header(req, "X-Hookd-Admin", &len);
    if (x == NULL) {
      metrics_count_admin(403);
      return 403;
    }
  }
  req->route = &routes[k];
  return 0;
}

/* --- readiness --------------------------------------------------------------- */

const char *admin_not_ready(admin *a, char *buf, size_t len) {
  if (a->draining) return "shutting down";
  if (a->sp == NULL) return "spool not open";
  if (!a->listening) return "listeners not bound";
  for (size_t i = 0; i < a->host->n_insts; i++) {
    if (!a->host->insts[i].initialized) {
      snprintf(buf, len, "plugin instance '%s' is not initialised", a->host->insts[i].name);
      return buf;
    }
  }
  char why[256];
  const char *busy = spool_admit(a->sp, NULL, 0, why, sizeof why);
  if (busy) {
    snprintf(buf, len, "spool refuses new events: %s", busy);
    return buf;
  }
  return NULL;
}

void admin_ready_notes(admin *a, char *buf, size_t len) {
  size_t used = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < a->host->n_insts && a->lanes; i++) {
    spool_lane_stats st;
    spool_lane_get_stats(a->lanes[i], &st);
    dispatch_instance_stats ds = {0};
    if (a->dp) dispatch_instance_get(a->dp, i, &ds);
    int w = 0;
    if (st.saturated) {
      w = snprintf(buf + used, len - used,
                   "plugin instance '%s' is saturated: %llu unfinished deliveries (max_pending); "
                   "events routed to it get 503\n",
                   a->host->insts[i].name, (unsigned long long)st.pending);
    } else if (ds.unhealthy) {
      w = snprintf(buf + used, len - used,
                   "plugin instance '%s' is unhealthy: %u deliver() calls stuck past timeout_ms\n",
                   a->host->insts[i].name, ds.stuck);
    }
    if (w > 0 && (size_t)w < len - used) used += (size_t)w;
  }
}

/* --- metrics ----------------------------------------------------------------- */

/* An instance's queue depth and oldest unfinished delivery come from its
 * spool lane (the backlog may be on disk, not in any queue of ours). */
static void instance_view(admin *a, size_t i, metrics_instance_view *v) {
  plugin_instance *inst = &a->host->insts[i];
  metrics_instance_get(&inst->m, inst->name, v);
  if (a->lanes == NULL) return;
  spool_lane_stats st;
  spool_lane_get_stats(a->lanes[i], &st);
  atomic_store(&inst->m.queued, st.pending);
  v->oldest_pending_ms = st.oldest_ms;
}

/* Per-instance figures that come from the spool lanes and the dispatcher. */
static int render_lane_metrics(admin *a, char **buf, size_t *len, size_t *cap) {
  int rc = metrics_append(
      buf, len, cap,
      "# HELP hookd_instance_pending_deliveries Unfinished deliveries of a plugin instance, on "
      "disk or in memory.\n# TYPE hookd_instance_pending_deliveries gauge\n");
  size_t n = a->lanes ? a->host->n_insts : 0;
  spool_lane_stats *st = calloc(n ? n : 1, sizeof *st);
  dispatch_instance_stats *ds = calloc(n ? n : 1, sizeof *ds);
  if (st == NULL || ds == NULL) rc = -1;
  for (size_t i = 0; i < n && rc == 0; i++) {
    spool_lane_get_stats(a->lanes[i], &st[i]);
    if (a->dp) dispatch_instance_get(a->dp, i, &ds[i]);
  }
  static const struct {
    const char *name, *type, *help;
  } series[] = {
      {"hookd_instance_pending_deliveries", NULL, NULL},
      {"hookd_instance_in_memory_deliveries", "gauge",
       "Deliveries of a plugin instance held in memory (the rest wait on disk)."},
      {"hookd_instance_saturated", "gauge",
       "1 when a plugin instance is at its max_pending: events routed to it get 503."},
      {"hookd_delivery_written_off_total", "counter",
       "deliver() calls written off after timeout_ms (thread isolation)."},
      {"hookd_delivery_stuck_calls", "gauge",
       "Written-off deliver() calls still running."},
  };
  for (size_t k = 0; k < sizeof series / sizeof series[0] && rc == 0; k++) {
    if (series[k].help) {
      rc |= metrics_append(buf, len, cap, "# HELP %s %s\n# TYPE %s %s\n", series[k].name,
                           series[k].help, series[k].name, series[k].type);
    }
    for (size_t i = 0; i < n; i++) {
      uint64_t v = k == 0   ? st[i].pending
                   : k == 1 ? st[i].in_memory
                   : k == 2 ? (uint64_t)st[i].saturated
                   : k == 3 ? ds[i].written_off
                            : ds[i].stuck;
      rc |= metrics_append(buf, len, cap, "%s{instance=\"", series[k].name);
      rc |= metrics_append_label(buf, len, cap, a->host->insts[i].name);
      rc |= metrics_append(buf, len, cap, "\"} %" PRIu64 "\n", v);
    }
  }
  free(st);
  free(ds);
  return rc;
}

/* Process-isolated instances: their child's restarts and crashes (kept by
 * instance name across reloads) and whether one is up. */
static int render_processes(admin *a, char **buf, size_t *len, size_t *cap) {
  static const struct {
    const char *name, *type, *help;
  } rows[] = {
      {"hookd_plugin_process_up", "gauge",
       "1 while the child process of a process-isolated plugin instance is ready."},
      {"hookd_plugin_restarts_total", "counter",
       "Child processes of a process-isolated plugin instance started after its first one."},
      {"hookd_plugin_crashes_total", "counter",
       "Child processes of a process-isolated plugin instance that died without hookd asking."},
  };
  int rc = 0;
  for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
    rc |= metrics_append(buf, len, cap, "# HELP %s %s\n# TYPE %s %s\n", rows[r].name, rows[r].help,
                         rows[r].name, rows[r].type);
    for (size_t i = 0; i < a->host->n_insts; i++) {
      plugin_instance *inst = &a->host->insts[i];
      if (inst->proc == NULL) continue;
      plugin_proc_status ps;
      plugin_proc_get_status(inst->proc, &ps);
      uint64_t v = r == 0   ? (ps.pid && strcmp(ps.state, "ready") == 0)
                   : r == 1 ? ps.restarts
                            : ps.crashes;
      rc |= metrics_append(buf, len, cap, "%s{instance=\"", rows[r].name);
      rc |= metrics_append_label(buf, len, cap, inst->name);
      rc |= metrics_append(buf, len, cap, "\"} %" PRIu64 "\n", v);
    }
  }
  return rc;
}

static int render_metrics(admin *a, char **buf, size_t *len, size_t *cap) {
  size_t n = a->host->n_insts;
  metrics_instance **ms = calloc(n ? n : 1, sizeof *ms);
  const char **names = calloc(n ? n : 1, sizeof *names);
  int rc = ms && names ? 0 : -1;
  for (size_t i = 0; i < n && rc == 0; i++) {
    metrics_instance_view v;
    instance_view(a, i, &v);
    ms[i] = &a->host->insts[i].m;
    names[i] = a->host->insts[i].name;
  }
  if (rc == 0) rc = metrics_render(buf, len, cap, ms, names, n);
  free(ms);
  free(names);
  rc |= metrics_append(buf, len, cap,
                       "# HELP hookd_plugin_instance_up 1 when the plugin instance is "
                       "initialised.\n# TYPE hookd_plugin_instance_up gauge\n");
  for (size_t i = 0; i < n; i++) {
    rc |= metrics_append(buf, len, cap, "hookd_plugin_instance_up{instance=\"");
    rc |= metrics_append_label(buf, len, cap, a->host->insts[i].name);
    rc |= metrics_append(buf, len, cap, "\",module=\"");
    rc |= metrics_append_label(buf, len, cap, a->host->insts[i].cfg->module);
    dispatch_instance_stats ds = {0};
    if (a->dp) dispatch_instance_get(a->dp, i, &ds);
    rc |= metrics_append(buf, len, cap, "\"} %d\n",
                         a->host->insts[i].initialized && !ds.unhealthy ? 1 : 0);
  }
  rc |= render_lane_metrics(a, buf, len, cap);
  rc |= render_processes(a, buf, len, cap);
  char why[256];
  rc |= metrics_append(buf, len, cap,
                       "# HELP hookd_ready 1 when /readyz answers 200.\n# TYPE hookd_ready gauge\n"
                       "hookd_ready %d\n",
                       admin_not_ready(a, why, sizeof why) ? 0 : 1);
  spool_stats st;
  memset(&st, 0, sizeof st);
  if (a->sp) spool_get_stats(a->sp, &st);
  int64_t now = (int64_t)time(NULL) * 1000;
  double oldest = st.oldest_pending_ms ? (double)(now - st.oldest_pending_ms) / 1e3 : 0;
  rc |= metrics_append(
      buf, len, cap,
      "# HELP hookd_spool_pending_deliveries Deliveries in the spool not finished.\n"
      "# TYPE hookd_spool_pending_deliveries gauge\nhookd_spool_pending_deliveries %" PRIu64
      "\n"
      "# HELP hookd_dead_letters Dead letters in the spool.\n"
      "# TYPE hookd_dead_letters gauge\nhookd_dead_letters %" PRIu64
      "\n"
      "# HELP hookd_spool_size_bytes Size of the spool database and its WAL.\n"
      "# TYPE hookd_spool_size_bytes gauge\nhookd_spool_size_bytes %" PRIu64
      "\n"
      "# HELP hookd_spool_commits_total Spool transactions committed.\n"
      "# TYPE hookd_spool_commits_total counter\nhookd_spool_commits_total %" PRIu64
      "\n"
      "# HELP hookd_spool_commit_errors_total Spool transactions that failed.\n"
      "# TYPE hookd_spool_commit_errors_total counter\n"
      "hookd_spool_commit_errors_total %" PRIu64
      "\n"
      "# HELP hookd_spool_checkpoints_total WAL checkpoints completed (copies of the WAL into "
      "the database file).\n"
      "# TYPE hookd_spool_checkpoints_total counter\nhookd_spool_checkpoints_total %" PRIu64
      "\n"
      "# HELP hookd_spool_wal_pages Pages in the spool's WAL after the last commit.\n"
      "# TYPE hookd_spool_wal_pages gauge\nhookd_spool_wal_pages %d\n"
      "# HELP hookd_spool_oldest_pending_age_seconds Age of the oldest unfinished delivery in "
      "the spool (0 when none).\n"
      "# TYPE hookd_spool_oldest_pending_age_seconds gauge\n"
      "hookd_spool_oldest_pending_age_seconds %.3f\n"
      "# HELP hookd_spool_crashes_total Deliveries found running when hookd started (hookd "
      "had died while they ran).\n"
      "# TYPE hookd_spool_crashes_total counter\nhookd_spool_crashes_total %" PRIu64
      "\n"
      "# HELP hookd_spool_in_memory_deliveries Deliveries held in memory (the rest of the "
      "backlog waits on disk).\n"
      "# TYPE hookd_spool_in_memory_deliveries gauge\nhookd_spool_in_memory_deliveries %" PRIu64
      "\n",
      st.pending, st.dead, st.db_bytes, st.commits, st.commit_errors, st.checkpoints, st.wal_pages,
      oldest > 0 ? oldest : 0, st.crashes, st.in_memory);
  return rc;
}

/* --- dead letters on the threadpool ------------------------------------------ */

typedef struct admin_job {
  uv_work_t work;
  admin *a;
  http_conn *c;
  route_kind kind;
  int head; /* HEAD: no body */
  char *data_dir;
  char *pg_url; /* spool.url of a PostgreSQL spool, else NULL */
  int64_t id;   /* R_REPLAY */
  /* results */
  int rc;
  char err[256];
  dlq_entry *dead;
  size_t n_dead;
  int64_t replayed;
} admin_job;

static void job_work(uv_work_t *w) {
  admin_job *j = w->data;
  dlq *q = NULL;
  if ((j->pg_url ? dlq_open_pg(j->pg_url, &q, j->err, sizeof j->err)
                 : dlq_open(j->data_dir, &q, j->err, sizeof j->err)) != 0) {
    j->rc = -1;
    return;
  }
  if (j->kind == R_REPLAY) {
    j->replayed = dlq_replay(q, j->id);
    if (j->replayed < 0) snprintf(j->err, sizeof j->err, "%s", dlq_error(q));
    j->rc = j->replayed < 0 ? -1 : 0;
  } else {
    j->rc = dlq_list(q, DEAD_SHOWN, &j->dead, &j->n_dead);
    if (j->rc != 0) snprintf(j->err, sizeof j->err, "%s", dlq_error(q));
  }
  dlq_close(q);
}

/* --- the status page and its JSON -------------------------------------------- */

typedef struct sbuf {
  char *buf;
  size_t len, cap;
  int rc;
} sbuf;

#define PUT(b, ...) ((b)->rc |= metrics_append(&(b)->buf, &(b)->len, &(b)->cap, __VA_ARGS__))

static void put_html(sbuf *b, const char *s) {
  for (const char *p = s ? s : ""; *p; p++) {
    switch (*p) {
      case '&':
        PUT(b, "&amp;");
        break;
      case '<':
        PUT(b, "&lt;");
        break;
      case '>':
        PUT(b, "&gt;");
        break;
      case '"':
        PUT(b, "&quot;");
        break;
      case '\'':
        PUT(b, "&#39;");
        break;
      default:
        if ((unsigned char)*p < 0x20 && *p != '\t') {
          PUT(b, "\xef\xbf\xbd"); /* U+FFFD */
        } else {
          PUT(b, "%c", *p);
        }
    }
  }
}

/* A dead letter's error as stored (a destination's answer) without the
 * credentials it may echo. */
static const char *scrubbed(const char *text, char *buf, size_t len) {
  snprintf(buf, len, "%s", text ? text : "");
  scrub_text(buf, len);
  return buf;
}

static void iso_time(int64_t ms, char *out, size_t len) {
  if (ms <= 0) {
    snprintf(out, len, "-");
    return;
  }
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static const char *health_of(const plugin_instance *inst, const metrics_instance_view *v) {
  if (!inst->initialized) return "not initialised";
  if (inst->proc) {
    /* A child that is not up holds the instance's deliveries back. */
    plugin_proc_status ps;
    plugin_proc_get_status(inst->proc, &ps);
    if (strcmp(ps.state, "init failed") == 0) return "process init failed";
    if (strcmp(ps.state, "ready") != 0) return "process restarting";
  }
  if (v->last_result < 0) return "idle";
  if (v->last_result == HOOKD_OK) return v->retrying ? "retrying" : "ok";
  return "failing";
}

static const char *health_class(const char *h) {
  if (strcmp(h, "not initialised") == 0 || strcmp(h, "process init failed") == 0) return "failing";
  if (strcmp(h, "process restarting") == 0) return "retrying";
  return h;
}

/* The isolation cell: "thread", or the child's pid, state and history. */
static void put_isolation(sbuf *b, const plugin_instance *inst) {
  if (inst->proc == NULL) {
    PUT(b, "<td class=\"isolation\">thread</td>");
    return;
  }
  plugin_proc_status ps;
  plugin_proc_get_status(inst->proc, &ps);
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

static const char page_script[] =
    "document.addEventListener('click',function(e){"
    "var b=e.target.closest('button.replay');if(!b)return;b.disabled=true;"
    "var m=document.getElementById('message');"
    "fetch('/dead-letters/'+b.dataset.id+'/replay',{method:'POST',"
    "headers:{'X-Hookd-Admin':'1'},credentials:'same-origin'})"
    ".then(function(r){return r.text().then(function(t){"
    "if(r.ok){m.textContent='Replayed dead letter '+b.dataset.id+'.';"
    "b.closest('tr').classList.add('replayed');b.textContent='Replayed';}"
    "else{m.textContent='Replay of '+b.dataset.id+' failed: '+r.status+' '+t;"
    "b.disabled=false;}});})"
    ".catch(function(err){m.textContent='Replay failed: '+err;b.disabled=false;});});";

/* The Content-Security-Policy allows exactly page_script, by its hash. */
static const char *page_csp(void) {
  static char csp[600];
  if (csp[0] == '\0') {
    unsigned char d[32];
    sha256(page_script, strlen(page_script), d);
    unsigned char b64[64];
    EVP_EncodeBlock(b64, d, sizeof d);
    snprintf(csp, sizeof csp,
             "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
             "script-src 'sha256-%s'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'\r\n",
             b64);
  }
  return csp;
}

static void render_page(admin_job *j, sbuf *b) {
  admin *a = j->a;
  char why[256], t[96], eb[1100];
  const char *not_ready = admin_not_ready(a, why, sizeof why);
  spool_stats st;
  memset(&st, 0, sizeof st);
  if (a->sp) spool_get_stats(a->sp, &st);
  PUT(b,
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width\"><title>hookd status</title><style>"
      "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}"
      "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}"
      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;"
      "text-align:left;vertical-align:top}th{background:#f3f3f3}"
      ".ok,.delivered{color:#176117}.failing,.dead,.not-ready{color:#a31515}"
      ".retrying,.queued{color:#8a5a00}code{font-size:.95em}tr.replayed{opacity:.5}"
      "#message{font-weight:bold}</style></head><body>\n");
  PUT(b, "<h1>hookd %s</h1>\n<p id=\"readiness\" class=\"%s\">", HOOKD_VERSION,
      not_ready ? "not-ready" : "ok");
  if (not_ready) {
    PUT(b, "Not ready: ");
    put_html(b, not_ready);
  } else {
    PUT(b, "Ready");
  }
  iso_time(g_metrics.start_ms, t, sizeof t);
  PUT(b,
      " &middot; started %s &middot; <a href=\"/\">refresh</a> &middot; "
      "<a href=\"/metrics\">metrics</a></p>\n<p id=\"message\" role=\"status\"></p>\n",
      t);

  PUT(b, "<h2>Counters</h2>\n<table id=\"counters\"><tbody>\n");
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
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    PUT(b, "<tr data-key=\"%s\"><th>%s</th><td>%" PRIu64 "</td></tr>\n", rows[i].key, rows[i].label,
        rows[i].v);
  }
  PUT(b, "</tbody></table>\n");

  PUT(b,
      "<h2>Plugin instances</h2>\n<table id=\"instances\"><thead><tr><th>instance</th>"
      "<th>module</th><th>isolation</th><th>health</th><th>queued</th><th>retrying</th>"
      "<th>delivered</th><th>dead</th><th>oldest pending</th><th>last error</th>"
      "</tr></thead><tbody>\n");
  int64_t now = (int64_t)time(NULL) * 1000;
  for (size_t i = 0; i < a->host->n_insts; i++) {
    plugin_instance *inst = &a->host->insts[i];
    metrics_instance_view v;
    instance_view(a, i, &v);
    const char *h = health_of(inst, &v);
    PUT(b, "<tr data-instance=\"");
    put_html(b, inst->name);
    PUT(b, "\"><td>");
    put_html(b, inst->name);
    PUT(b, "</td><td>");
    put_html(b, inst->cfg->module);
    PUT(b, "</td>");
    put_isolation(b, inst);
    PUT(b,
        "<td class=\"health %s\">%s</td><td>%llu</td><td>%" PRIu64 "</td><td>%" PRIu64
        "</td><td>%" PRIu64 "</td><td>",
        health_class(h), h, (unsigned long long)METRICS_GET(inst->m.queued), v.retrying,
        v.delivered, v.dead);
    if (v.oldest_pending_ms) {
      PUT(b, "%llds", (long long)((now - v.oldest_pending_ms) / 1000));
    } else {
      PUT(b, "-");
    }
    PUT(b, "</td><td>");
    put_html(b, v.last_message);
    PUT(b, "</td></tr>\n");
  }
  PUT(b, "</tbody></table>\n");

  static metrics_recent recent[METRICS_RECENT]; /* loop thread only */
  size_t nr = metrics_recent_get(recent, METRICS_RECENT);
  PUT(b,
      "<h2>Last events</h2>\n<table id=\"events\"><thead><tr><th>received</th>"
      "<th>source</th><th>event id</th><th>type</th><th>outcome per plugin</th></tr>"
      "</thead><tbody>\n");
  for (size_t i = 0; i < nr; i++) {
    metrics_recent *r = &recent[i];
    iso_time(r->received_ms, t, sizeof t);
    PUT(b, "<tr data-event-id=\"");
    put_html(b, r->id);
    PUT(b, "\"><td>%s</td><td>", t);
    put_html(b, r->source);
    PUT(b, "</td><td><code>");
    put_html(b, r->id);
    PUT(b, "</code></td><td>");
    put_html(b, r->type);
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

  PUT(b, "<h2>Dead letters</h2>\n");
  if (j->rc != 0) {
    PUT(b, "<p id=\"dead-letters-error\">Dead letters unavailable: ");
    put_html(b, j->err);
    PUT(b, "</p>\n");
  }
  PUT(b,
      "<table id=\"dead-letters\"><thead><tr><th>id</th><th>failed</th><th>source</th>"
      "<th>event id</th><th>type</th><th>instance</th><th>attempts</th><th>error</th>"
      "<th></th></tr></thead><tbody>\n");
  for (size_t i = 0; i < j->n_dead; i++) {
    dlq_entry *e = &j->dead[i];
    iso_time(e->failed_ms, t, sizeof t);
    PUT(b, "<tr data-dead-id=\"%" PRId64 "\"><td>%" PRId64 "</td><td>%s</td><td>", e->id, e->id, t);
    put_html(b, e->source);
    PUT(b, "</td><td><code>");
    put_html(b, e->event_id);
    PUT(b, "</code></td><td>");
    put_html(b, e->type);
    PUT(b, "</td><td>");
    put_html(b, e->instance);
    PUT(b, "</td><td>%u</td><td>", e->attempts);
    put_html(b, scrubbed(e->error, eb, sizeof eb));
    PUT(b,
        "</td><td><button type=\"button\" class=\"replay\" data-id=\"%" PRId64
        "\">Replay</button></td></tr>\n",
        e->id);
  }
  if (j->n_dead == 0) PUT(b, "<tr><td colspan=\"9\">none</td></tr>\n");
  PUT(b, "</tbody></table>\n<script>%s</script>\n</body></html>\n", page_script);
}

static void render_json(admin_job *j, sbuf *b) {
  admin *a = j->a;
  char why[256], t[96], eb[1100];
  cJSON *root = cJSON_CreateObject();
  const char *not_ready = admin_not_ready(a, why, sizeof why);
  cJSON_AddStringToObject(root, "version", HOOKD_VERSION);
  cJSON_AddBoolToObject(root, "ready", not_ready == NULL);
  if (not_ready) cJSON_AddStringToObject(root, "not_ready", not_ready);
  spool_stats st;
  memset(&st, 0, sizeof st);
  if (a->sp) spool_get_stats(a->sp, &st);
  cJSON *cn = cJSON_AddObjectToObject(root, "counters");
  cJSON_AddNumberToObject(cn, "accepted", (double)METRICS_GET(g_metrics.events_accepted));
  cJSON_AddNumberToObject(cn, "duplicate", (double)METRICS_GET(g_metrics.events_duplicate));
  cJSON_AddNumberToObject(cn, "unrouted", (double)METRICS_GET(g_metrics.events_unrouted));
  cJSON_AddNumberToObject(cn, "pending", (double)st.pending);
  cJSON_AddNumberToObject(cn, "dead", (double)st.dead);
  cJSON_AddNumberToObject(cn, "spool_bytes", (double)st.db_bytes);
  cJSON_AddNumberToObject(cn, "connections", (double)METRICS_GET(g_metrics.connections_open));
  cJSON *insts = cJSON_AddArrayToObject(root, "instances");
  for (size_t i = 0; i < a->host->n_insts; i++) {
    plugin_instance *inst = &a->host->insts[i];
    metrics_instance_view v;
    instance_view(a, i, &v);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", inst->name);
    cJSON_AddStringToObject(o, "module", inst->cfg->module);
    cJSON_AddStringToObject(o, "health", health_of(inst, &v));
    cJSON_AddStringToObject(o, "isolation", inst->proc ? "process" : "thread");
    if (inst->proc) {
      plugin_proc_status ps;
      plugin_proc_get_status(inst->proc, &ps);
      cJSON *po = cJSON_AddObjectToObject(o, "process");
      cJSON_AddNumberToObject(po, "pid", ps.pid);
      cJSON_AddStringToObject(po, "state", ps.state);
      cJSON_AddNumberToObject(po, "restarts", (double)ps.restarts);
      cJSON_AddNumberToObject(po, "crashes", (double)ps.crashes);
      cJSON_AddNumberToObject(po, "restart_in_ms", (double)ps.restart_in_ms);
      cJSON_AddStringToObject(po, "last_exit", ps.last_exit);
      cJSON_AddStringToObject(po, "error", ps.error);
    }
    cJSON_AddNumberToObject(o, "queued", (double)METRICS_GET(inst->m.queued));
    cJSON_AddNumberToObject(o, "retrying", (double)v.retrying);
    cJSON_AddNumberToObject(o, "delivered", (double)v.delivered);
    cJSON_AddNumberToObject(o, "dead", (double)v.dead);
    cJSON_AddStringToObject(o, "last_error", v.last_message);
    cJSON_AddItemToArray(insts, o);
  }
  static metrics_recent recent[METRICS_RECENT]; /* loop thread only */
  size_t nr = metrics_recent_get(recent, METRICS_RECENT);
  cJSON *evs = cJSON_AddArrayToObject(root, "events");
  for (size_t i = 0; i < nr; i++) {
    cJSON *o = cJSON_CreateObject();
    iso_time(recent[i].received_ms, t, sizeof t);
    cJSON_AddStringToObject(o, "id", recent[i].id);
    cJSON_AddStringToObject(o, "source", recent[i].source);
    cJSON_AddStringToObject(o, "type", recent[i].type);
    cJSON_AddStringToObject(o, "received", t);
    cJSON *outs = cJSON_AddObjectToObject(o, "outcomes");
    for (size_t k = 0; k < recent[i].n_targets; k++) {
      cJSON_AddStringToObject(outs, recent[i].targets[k].instance, recent[i].targets[k].outcome);
    }
    cJSON_AddItemToArray(evs, o);
  }
  cJSON *dead = cJSON_AddArrayToObject(root, "dead_letters");
  if (j->rc != 0) cJSON_AddStringToObject(root, "dead_letters_error", j->err);
  for (size_t i = 0; i < j->n_dead; i++) {
    dlq_entry *e = &j->dead[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)e->id);
    cJSON_AddStringToObject(o, "source", e->source ? e->source : "");
    cJSON_AddStringToObject(o, "event_id", e->event_id ? e->event_id : "");
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "");
    cJSON_AddStringToObject(o, "instance", e->instance ? e->instance : "");
    cJSON_AddStringToObject(o, "error", scrubbed(e->error, eb, sizeof eb));
    cJSON_AddNumberToObject(o, "attempts", e->attempts);
    iso_time(e->failed_ms, t, sizeof t);
    cJSON_AddStringToObject(o, "failed", t);
    cJSON_AddItemToArray(dead, o);
  }
  char *s = cJSON_PrintUnformatted(root);
  if (s) {
    PUT(b, "%s\n", s);
  } else {
    b->rc = -1;
  }
  free(s);
  cJSON_Delete(root);
}

static void job_done(uv_work_t *w, int status) {
  admin_job *j = w->data;
  (void)status;
  if (j->kind == R_REPLAY) {
    char msg[320];
    if (j->rc != 0) {
      log_write(LOG_ERROR, NULL, "admin: replay of dead letter %" PRId64 " failed: %s", j->id,
                j->err);
      snprintf(msg, sizeof msg, "replay failed: %s", j->err);
      reply_text(j->c, 500, msg);
    } else if (j->replayed == 0) {
      reply_text(j->c, 404, "no such dead letter");
    } else {
      log_write(LOG_INFO, NULL, "admin: dead letter %" PRId64 " replayed", j->id);
      snprintf(msg, sizeof msg, "{\"replayed\":%" PRId64 "}\n", j->replayed);
      reply(j->c, 200, "Content-Type: application/json\r\n", msg, strlen(msg));
    }
  } else {
    sbuf b = {0};
    if (j->kind == R_PAGE) {
      render_page(j, &b);
    } else {
      render_json(j, &b);
    }
    if (b.rc != 0) {
      reply(j->c, 500, NULL, NULL, 0);
    } else {
      char headers[700];
      snprintf(headers, sizeof headers,
               "Content-Type: %s\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
               "%s",
               j->kind == R_PAGE ? "text/html; charset=utf-8" : "application/json",
               j->kind == R_PAGE ? page_csp() : "");
      reply(j->c, 200, headers, j->head ? NULL : b.buf, j->head ? 0 : b.len);
    }
    free(b.buf);
  }
  dlq_entries_free(j->dead, j->n_dead);
  free(j->data_dir);
  free(j->pg_url);
  free(j);
}

static void start_job(admin *a, http_conn *c, http_request *req, route_kind kind) {
  admin_job *j = calloc(1, sizeof *j);
  if (j) j->data_dir = strdup(a->cfg->data_dir ? a->cfg->data_dir : ".");
  if (j && a->cfg->spool_url) j->pg_url = strdup(a->cfg->spool_url);
  if (j == NULL || j->data_dir == NULL || (a->cfg->spool_url && j->pg_url == NULL)) {
    if (j) free(j->data_dir);
    free(j);
    reply(c, 503, "Retry-After: 1\r\n", NULL, 0);
    return;
  }
  j->a = a;
  j->c = c;
  j->kind = kind;
  j->head = req->method == HTTP_HEAD;
  j->work.data = j;
  if (kind == R_REPLAY) {
    char *end = NULL;
    j->id = strtoll(req->path + 14, &end, 10);
    if (end == NULL || strcmp(end, "/replay") != 0 || j->id <= 0) {
      free(j->data_dir);
      free(j->pg_url);
      free(j);
      reply_text(c, 404, "no such dead letter");
      return;
    }
  }
  int rc = uv_queue_work(a->loop, &j->work, job_work, job_done);
  if (rc != 0) {
    free(j->data_dir);
    free(j->pg_url);
    free(j);
    reply(c, 503, "Retry-After: 1\r\n", NULL, 0);
  }
}

static void on_reload_done(void *arg, int status, const char *why) {
  reply_text(arg, status, status == 200 ? "reloaded" : why);
}

void admin_on_request(void *data, http_conn *c, http_request *req) {
  admin *a = data;
  route_kind k = *(const route_kind *)req->route;
  char why[256];
  switch (k) {
    case R_HEALTH:
      reply_text(c, 200, "ok");
      break;
    case R_READY: {
      const char *not_ready = admin_not_ready(a, why, sizeof why);
      if (not_ready) {
        reply_text(c, 503, not_ready);
      } else {
        char notes[2048], body[2100];
        admin_ready_notes(a, notes, sizeof notes);
        int n = snprintf(body, sizeof body, "ready\n%s", notes);
        reply(c, 200, "Content-Type: text/plain; charset=utf-8\r\n", body,
              n > 0 && (size_t)n < sizeof body ? (size_t)n : strlen(body));
      }
      break;
    }
    case R_METRICS: {
      char *buf = NULL;
      size_t len = 0, cap = 0;
      if (render_metrics(a, &buf, &len, &cap) != 0) {
        reply(c, 500, NULL, NULL, 0);
      } else {
        reply(c, 200, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
              req->method == HTTP_HEAD ? NULL : buf, req->method == HTTP_HEAD ? 0 : len);
      }
      free(buf);
      break;
    }
    case R_RELOAD:
      /* Like SIGHUP: loaded and checked off the loop thread, then swapped;
       * the answer waits for the outcome. */
      if (a->reload == NULL) {
        reply_text(c, 503, "reload is not available");
      } else {
        a->reload(a->reload_data, on_reload_done, c);
      }
      break;
    case R_UNAUTHORIZED:
      metrics_count_admin(401);
      http_respond(c, 401, "WWW-Authenticate: Basic realm=\"hookd admin\", charset=\"UTF-8\"\r\n",
                   "unauthorized\n", 13);
      break;
    default:
      start_job(a, c, req, k);
  }
}
