/* Admin endpoints on admin_listen: health, readiness, Prometheus metrics, the status page's views,
 * dead-letter replay, pause, resume and back-fill. */
#include "admin.h"
#include "pattern.h"

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

#include "config.h"
#include "dlq.h"
#include "log.h"
#include "metrics.h"
#include "pace.h"
#include "page.h"
#include "plugin_proc.h"
#include "scrub.h"
#include "clock.h"

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
  R_EVENT,    /* GET /event?source=S&id=I */
  R_SEARCH,   /* GET /search?q=TEXT */
  R_PAUSE,    /* POST /instances/NAME/pause */
  R_RESUME,   /* POST /instances/NAME/resume */
  R_BACKFILL, /* POST /instances/NAME/replay, body since=DURATION[&type=P][&source=S] */
  R_COUNT
} route_kind;
static const route_kind routes[R_COUNT] = {R_HEALTH, R_READY,        R_METRICS, R_PAGE,  R_JSON,
                                           R_REPLAY, R_UNAUTHORIZED, R_RELOAD,  R_EVENT, R_SEARCH,
                                           R_PAUSE,  R_RESUME,       R_BACKFILL};

#define DEAD_SHOWN 100 /* dead letters the page lists */

/* Instance i of the host the admin listener reports on, and its name. */
static plugin_instance *inst_at(const admin *a, size_t i) {
  return plugin_host_instance(a->host, i);
}

static const char *inst_name(const admin *a, size_t i) {
  return plugin_host_instance_name(inst_at(a, i));
}

static void reply(http_conn *c, int status, const char *headers, const char *body, size_t len) {
  metrics_count_admin(status);
  http_conn_respond(c, status, headers, body, len);
}

static void reply_text(http_conn *c, int status, const char *text) {
  metrics_count_admin(status);
  http_conn_respond_text(c, status, text);
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
  size_t al =
      adm[0] == '[' ? (size_t)(strchr(adm, ']') - adm - 1) : (size_t)(strrchr(adm, ':') - adm);
  const char *ah = adm[0] == '[' ? adm + 1 : adm;
  return strlen(host) == al && strncasecmp(host, ah, al) == 0;
}

/* POST /instances/NAME/ACTION: the route of ACTION, or R_COUNT. */
static route_kind instance_action(const char *p) {
  if (strncmp(p, "/instances/", 11) != 0) return R_COUNT;
  const char *slash = strrchr(p, '/');
  if (slash == p + 10 || slash[1] == '\0') return R_COUNT;
  if (strcmp(slash, "/pause") == 0) return R_PAUSE;
  if (strcmp(slash, "/resume") == 0) return R_RESUME;
  if (strcmp(slash, "/replay") == 0) return R_BACKFILL;
  return R_COUNT;
}

int admin_on_headers(void *data, http_conn *c, http_request *req) {
  admin *a = data;
  (void)c;
  route_kind k;
  const char *p = req->path;
  int post = 0;
  if (strcmp(p, "/event") == 0) {
    k = R_EVENT;
  } else if (strcmp(p, "/search") == 0) {
    k = R_SEARCH;
  } else if ((k = instance_action(p)) != R_COUNT) {
    post = 1;
  } else if (strcmp(p, "/healthz") == 0) {
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
    req->reason =
        "Host must be localhost, a loopback address or the admin address "
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
    if (!plugin_host_instance_ready(inst_at(a, i))) {
      snprintf(buf, len, "plugin instance '%s' is not initialised", inst_name(a, i));
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
                   inst_name(a, i), (unsigned long long)st.pending);
    } else if (ds.unhealthy) {
      w = snprintf(buf + used, len - used,
                   "plugin instance '%s' is unhealthy: %u deliver() calls stuck past timeout_ms\n",
                   inst_name(a, i), ds.stuck);
    }
    if (w > 0 && (size_t)w < len - used) used += (size_t)w;
  }
}

/* --- metrics ----------------------------------------------------------------- */

/* An instance's queue depth and oldest unfinished delivery come from its
 * spool lane (the backlog may be on disk, not in any queue of ours). */
void admin_instance_view(admin *a, size_t i, metrics_instance_view *v) {
  plugin_instance *inst = inst_at(a, i);
  metrics_instance_get(plugin_host_instance_metrics(inst), plugin_host_instance_name(inst), v);
  if (a->lanes == NULL) return;
  spool_lane_stats st;
  spool_lane_get_stats(a->lanes[i], &st);
  atomic_store(&plugin_host_instance_metrics(inst)->queued, st.pending);
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
      {"hookd_delivery_stuck_calls", "gauge", "Written-off deliver() calls still running."},
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
      rc |= metrics_append_label(buf, len, cap, inst_name(a, i));
      rc |= metrics_append(buf, len, cap, "\"} %" PRIu64 "\n", v);
    }
  }
  free(st);
  free(ds);
  return rc;
}

/* hookd_instance_state and hookd_delivery_held_total. */
static int render_states(admin *a, char **buf, size_t *len, size_t *cap) {
  size_t n = a->host->n_insts;
  const char **names = calloc(n ? n : 1, sizeof *names);
  int *states = calloc(n ? n : 1, sizeof *states);
  metrics_instance **ms = calloc(n ? n : 1, sizeof *ms);
  int rc = names && states && ms ? 0 : -1;
  if (a->dp) dispatch_observe(a->dp);
  for (size_t i = 0; i < n && rc == 0; i++) {
    names[i] = inst_name(a, i);
    ms[i] = plugin_host_instance_metrics(inst_at(a, i));
    pace_info pi;
    memset(&pi, 0, sizeof pi);
    pace *p = pace_get(names[i]);
    if (p) pace_get_info(p, &pi);
    states[i] = (int)pi.state;
  }
  const char *state_names[PACE_N_STATES];
  for (int k = 0; k < PACE_N_STATES; k++) state_names[k] = pace_state_name((pace_state)k);
  if (rc == 0)
    rc = metrics_render_states(buf, len, cap, names, states, state_names, PACE_N_STATES, ms, n);
  free(names);
  free(states);
  free(ms);
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
      plugin_instance *inst = inst_at(a, i);
      if (plugin_host_instance_proc(inst) == NULL) continue;
      plugin_proc_status ps;
      plugin_proc_get_status(plugin_host_instance_proc(inst), &ps);
      uint64_t v = r == 0   ? (ps.pid && strcmp(ps.state, "ready") == 0)
                   : r == 1 ? ps.restarts
                            : ps.crashes;
      rc |= metrics_append(buf, len, cap, "%s{instance=\"", rows[r].name);
      rc |= metrics_append_label(buf, len, cap, plugin_host_instance_name(inst));
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
    admin_instance_view(a, i, &v);
    ms[i] = plugin_host_instance_metrics(inst_at(a, i));
    names[i] = inst_name(a, i);
  }
  if (rc == 0) rc = metrics_render(buf, len, cap, ms, names, n);
  free(ms);
  free(names);
  rc |= metrics_append(buf, len, cap,
                       "# HELP hookd_plugin_instance_up 1 when the plugin instance is "
                       "initialised.\n# TYPE hookd_plugin_instance_up gauge\n");
  for (size_t i = 0; i < n; i++) {
    rc |= metrics_append(buf, len, cap, "hookd_plugin_instance_up{instance=\"");
    rc |= metrics_append_label(buf, len, cap, inst_name(a, i));
    rc |= metrics_append(buf, len, cap, "\",module=\"");
    rc |= metrics_append_label(buf, len, cap, plugin_host_instance_module(inst_at(a, i)));
    dispatch_instance_stats ds = {0};
    if (a->dp) dispatch_instance_get(a->dp, i, &ds);
    rc |= metrics_append(buf, len, cap, "\"} %d\n",
                         plugin_host_instance_ready(inst_at(a, i)) && !ds.unhealthy ? 1 : 0);
  }
  rc |= render_lane_metrics(a, buf, len, cap);
  rc |= render_states(a, buf, len, cap);
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

/* --- work on the threadpool ------------------------------------------------- */

/*
 * Whatever opens the spool file (dead letters, event detail and search,
 * back-fills) or waits for a commit (pause, resume) runs on libuv's
 * threadpool; the answer is rendered back on the loop thread.
 */
typedef struct admin_job {
  uv_work_t work;
  admin *a;
  http_conn *c;
  route_kind kind;
  int head; /* HEAD: no body */
  char *data_dir;
  char *pg_url; /* spool.url of a PostgreSQL spool, else NULL */
  int64_t id;   /* R_REPLAY */
  /* R_EVENT (source, id), R_SEARCH (q), R_PAUSE/R_RESUME/R_BACKFILL (instance) */
  char source[256], event_id[256], q[256], instance[256];
  dlq_filter filter; /* R_BACKFILL */
  char since[32], type[256], what[640];
  const char **sources; /* R_SEARCH: the configured sources' names */
  size_t n_sources;
  /* results */
  int rc;
  char err[256];
  dlq_entry *dead;
  size_t n_dead;
  int64_t replayed, total;
  dlq_event_detail detail;
  dlq_event_row *rows;
  size_t n_rows;
} admin_job;

static void job_pause(admin_job *j) {
  int paused = j->kind == R_PAUSE;
  j->rc = spool_pause(j->a->sp, j->instance, paused, j->err, sizeof j->err);
}

static void job_spool(admin_job *j, dlq *q) {
  switch (j->kind) {
    case R_REPLAY:
      j->replayed = dlq_replay(q, j->id);
      j->rc = j->replayed < 0 ? -1 : 0;
      break;
    case R_EVENT:
      j->rc = dlq_event_detail_get(q, j->source, j->event_id, &j->detail);
      break;
    case R_SEARCH:
      j->rc = dlq_find_events(q, j->q, j->sources, j->n_sources, PAGE_SEARCH_SHOWN, &j->rows,
                              &j->n_rows);
      break;
    case R_BACKFILL:
      j->replayed = dlq_backfill_start(q, j->instance, &j->filter, j->what, &j->total);
      j->rc = j->replayed < 0 ? -1 : 0;
      break;
    default:
      j->rc = dlq_list(q, DEAD_SHOWN, &j->dead, &j->n_dead);
      break;
  }
  if (j->rc < 0 && j->rc != DLQ_ENOTFOUND) snprintf(j->err, sizeof j->err, "%s", dlq_error(q));
}

static void job_work(uv_work_t *w) {
  admin_job *j = w->data;
  if (j->kind == R_PAUSE || j->kind == R_RESUME) {
    job_pause(j);
    return;
  }
  dlq *q = NULL;
  if ((j->pg_url ? dlq_open_pg(j->pg_url, &q, j->err, sizeof j->err)
                 : dlq_open(j->data_dir, &q, j->err, sizeof j->err)) != 0) {
    j->rc = -1;
    return;
  }
  job_spool(j, q);
  dlq_close(q);
}

/* --- the JSON view -------------------------------------------------------------- */

typedef page_buf sbuf;
#define PUT(b, ...) ((b)->rc |= metrics_append(&(b)->buf, &(b)->len, &(b)->cap, __VA_ARGS__))

const char *admin_health(const plugin_instance *inst, const metrics_instance_view *v) {
  if (!plugin_host_instance_ready(inst)) return "not initialised";
  if (plugin_host_instance_proc(inst)) {
    /* A child that is not up holds the instance's deliveries back. */
    plugin_proc_status ps;
    plugin_proc_get_status(plugin_host_instance_proc(inst), &ps);
    if (strcmp(ps.state, "init failed") == 0) return "process init failed";
    if (strcmp(ps.state, "ready") != 0) return "process restarting";
  }
  if (v->last_result < 0) return "idle";
  if (v->last_result == HOOKD_OK) return v->retrying ? "retrying" : "ok";
  return "failing";
}

const char *admin_health_class(const char *h) {
  if (strcmp(h, "not initialised") == 0 || strcmp(h, "process init failed") == 0) return "failing";
  if (strcmp(h, "process restarting") == 0) return "retrying";
  return h;
}

static void json_instances(admin *a, cJSON *root) {
  if (a->dp) dispatch_observe(a->dp);
  cJSON *insts = cJSON_AddArrayToObject(root, "instances");
  for (size_t i = 0; i < a->host->n_insts; i++) {
    plugin_instance *inst = inst_at(a, i);
    metrics_instance_view v;
    admin_instance_view(a, i, &v);
    pace_info pi;
    memset(&pi, 0, sizeof pi);
    pace *p = pace_get(plugin_host_instance_name(inst));
    if (p) pace_get_info(p, &pi);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", plugin_host_instance_name(inst));
    cJSON_AddStringToObject(o, "module", plugin_host_instance_module(inst));
    cJSON_AddStringToObject(o, "health", admin_health(inst, &v));
    cJSON_AddStringToObject(o, "state", pace_state_name(pi.state));
    cJSON_AddStringToObject(o, "isolation", plugin_host_instance_proc(inst) ? "process" : "thread");
    if (plugin_host_instance_proc(inst)) {
      plugin_proc_status ps;
      plugin_proc_get_status(plugin_host_instance_proc(inst), &ps);
      cJSON *po = cJSON_AddObjectToObject(o, "process");
      cJSON_AddNumberToObject(po, "pid", ps.pid);
      cJSON_AddStringToObject(po, "state", ps.state);
      cJSON_AddNumberToObject(po, "restarts", (double)ps.restarts);
      cJSON_AddNumberToObject(po, "crashes", (double)ps.crashes);
      cJSON_AddNumberToObject(po, "restart_in_ms", (double)ps.restart_in_ms);
      cJSON_AddStringToObject(po, "last_exit", ps.last_exit);
      cJSON_AddStringToObject(po, "error", ps.error);
    }
    cJSON_AddNumberToObject(o, "queued",
                            (double)METRICS_GET(plugin_host_instance_metrics(inst)->queued));
    cJSON_AddNumberToObject(o, "retrying", (double)v.retrying);
    cJSON_AddNumberToObject(o, "delivered", (double)v.delivered);
    cJSON_AddNumberToObject(o, "dead", (double)v.dead);
    cJSON_AddStringToObject(o, "last_error", v.last_message);
    cJSON_AddNumberToObject(o, "circuit_opens", (double)pi.opens);
    cJSON_AddNumberToObject(o, "rate_limited", (double)pi.holds);
    /* Held now by a destination's "too many requests" (this node's or,
     * with a shared spool, another node's): for how long still. */
    int64_t held = pi.hold_until - clock_now_ms();
    cJSON_AddNumberToObject(o, "hold_ms", held > 0 ? (double)held : 0);
    cJSON_AddItemToArray(insts, o);
  }
}

static void json_events(cJSON *root) {
  char t[96];
  static metrics_recent recent[METRICS_RECENT]; /* loop thread only */
  size_t nr = metrics_recent_get(recent, METRICS_RECENT);
  cJSON *evs = cJSON_AddArrayToObject(root, "events");
  for (size_t i = 0; i < nr; i++) {
    cJSON *o = cJSON_CreateObject();
    page_iso_time(recent[i].received_ms, t, sizeof t);
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
  static metrics_rejected rej[METRICS_REJECTED]; /* loop thread only */
  size_t n = metrics_rejected_get(rej, METRICS_REJECTED);
  cJSON *rs = cJSON_AddArrayToObject(root, "rejected");
  for (size_t i = 0; i < n; i++) {
    cJSON *o = cJSON_CreateObject();
    page_iso_time(rej[i].at_ms, t, sizeof t);
    cJSON_AddStringToObject(o, "time", t);
    cJSON_AddStringToObject(o, "peer", rej[i].peer);
    cJSON_AddStringToObject(o, "path", rej[i].path);
    cJSON_AddNumberToObject(o, "status", rej[i].status);
    cJSON_AddStringToObject(o, "reason", rej[i].reason);
    cJSON_AddItemToArray(rs, o);
  }
}

static void json_dead(admin_job *j, cJSON *root) {
  char t[96], eb[1100];
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
    cJSON_AddStringToObject(o, "error", page_scrubbed(e->error, eb, sizeof eb));
    cJSON_AddNumberToObject(o, "attempts", e->attempts);
    page_iso_time(e->failed_ms, t, sizeof t);
    cJSON_AddStringToObject(o, "failed", t);
    cJSON_AddItemToArray(dead, o);
  }
}

static void render_json(admin_job *j, sbuf *b) {
  admin *a = j->a;
  char why[256];
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
  json_instances(a, root);
  json_events(root);
  json_dead(j, root);
  char *s = cJSON_PrintUnformatted(root);
  if (s) {
    PUT(b, "%s\n", s);
  } else {
    b->rc = -1;
  }
  free(s);
  cJSON_Delete(root);
}

/* --- answers ------------------------------------------------------------------------ */

static void answer_replay(admin_job *j) {
  char msg[320];
  if (j->rc != 0) {
    log_write(HLOG_ERROR, NULL, "admin: replay of dead letter %" PRId64 " failed: %s", j->id,
              j->err);
    snprintf(msg, sizeof msg, "replay failed: %s", j->err);
    reply_text(j->c, 500, msg);
  } else if (j->replayed == 0) {
    reply_text(j->c, 404, "no such dead letter");
  } else {
    log_write(HLOG_INFO, NULL, "admin: dead letter %" PRId64 " replayed", j->id);
    snprintf(msg, sizeof msg, "{\"replayed\":%" PRId64 "}\n", j->replayed);
    reply(j->c, 200, "Content-Type: application/json\r\n", msg, strlen(msg));
  }
}

static void answer_control(admin_job *j) {
  char msg[700];
  log_ctx ctx = {.instance = j->instance};
  const char *what = j->kind == R_PAUSE ? "pause" : j->kind == R_RESUME ? "resume" : "replay";
  if (j->rc != 0) {
    log_write(HLOG_ERROR, &ctx, "admin: %s failed: %s", what, j->err);
    snprintf(msg, sizeof msg, "%s failed: %s", what, j->err);
    reply_text(j->c, 500, msg);
    return;
  }
  if (j->kind == R_BACKFILL) {
    log_write(HLOG_INFO, &ctx, "admin: back-fill %" PRId64 " asked: %" PRId64 " events (%s)",
              j->replayed, j->total, j->what);
    snprintf(msg, sizeof msg, "{\"backfill\":%" PRId64 ",\"events\":%" PRId64 "}\n", j->replayed,
             j->total);
  } else {
    log_write(HLOG_INFO, &ctx, "admin: %s", j->kind == R_PAUSE ? "paused" : "resumed");
    snprintf(msg, sizeof msg, "{\"paused\":%s}\n", j->kind == R_PAUSE ? "true" : "false");
  }
  reply(j->c, 200, "Content-Type: application/json\r\n", msg, strlen(msg));
}

static void answer_view(admin_job *j) {
  sbuf b = {0};
  int status = 200;
  switch (j->kind) {
    case R_PAGE:
      page_overview(&b, j->a, j->dead, j->n_dead, j->rc != 0 ? j->err : NULL);
      break;
    case R_EVENT:
      page_event(&b, j->a, j->source, j->event_id, j->rc, &j->detail, j->err);
      status = j->rc == 0 ? 200 : j->rc == DLQ_ENOTFOUND ? 404 : 500;
      break;
    case R_SEARCH:
      page_search(&b, j->a, j->q, j->rc, j->rows, j->n_rows, j->err);
      status = j->rc == 0 ? 200 : 500;
      break;
    default:
      render_json(j, &b);
      break;
  }
  if (b.rc != 0) {
    reply(j->c, 500, NULL, NULL, 0);
  } else {
    char headers[900];
    int json = j->kind == R_JSON;
    snprintf(headers, sizeof headers,
             "Content-Type: %s\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
             "%s",
             json ? "application/json" : "text/html; charset=utf-8", json ? "" : page_csp_header());
    reply(j->c, status, headers, j->head ? NULL : b.buf, j->head ? 0 : b.len);
  }
  free(b.buf);
}

static void job_free(admin_job *j) {
  dlq_entries_free(j->dead, j->n_dead);
  dlq_event_detail_free(&j->detail);
  dlq_event_rows_free(j->rows, j->n_rows);
  free(j->sources);
  free(j->data_dir);
  free(j->pg_url);
  free(j);
}

static void job_done(uv_work_t *w, int status) {
  admin_job *j = w->data;
  (void)status;
  if (j->kind == R_REPLAY) {
    answer_replay(j);
  } else if (j->kind == R_PAUSE || j->kind == R_RESUME || j->kind == R_BACKFILL) {
    answer_control(j);
  } else {
    answer_view(j);
  }
  job_free(j);
}

/* --- request parameters -------------------------------------------------------------- */

static int hexval(char ch) {
  return ch >= '0' && ch <= '9'   ? ch - '0'
         : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
         : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                  : -1;
}

/* Percent-decodes n bytes of in ('+' as a space in a form) into out.
 * Returns 0, or -1 when it does not fit or holds a NUL or a bad escape. */
static int url_decode(const char *in, size_t n, int form, char *out, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = in[i];
    if (ch == '%') {
      if (i + 2 >= n) return -1;
      int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
      if (hi < 0 || lo < 0) return -1;
      ch = (char)(hi * 16 + lo);
      i += 2;
    } else if (ch == '+' && form) {
      ch = ' ';
    }
    if (ch == '\0' || o + 1 >= len) return -1;
    out[o++] = ch;
  }
  out[o] = '\0';
  return 0;
}

/* The value of name in a query string or form body (decoded into out).
 * Returns 1 when present, 0 when absent, -1 when malformed. */
static int param(const char *qs, size_t qlen, const char *name, char *out, size_t len) {
  size_t nl = strlen(name);
  const char *p = qs, *end = qs + qlen;
  while (qs && p < end) {
    const char *amp = memchr(p, '&', (size_t)(end - p));
    const char *stop = amp ? amp : end;
    if ((size_t)(stop - p) > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
      return url_decode(p + nl + 1, (size_t)(stop - p - nl - 1), 1, out, len) == 0 ? 1 : -1;
    }
    p = stop + 1;
  }
  return 0;
}

/* since=DURATION[&type=PATTERN][&source=NAME] in the form body. */
static int backfill_params(admin_job *j, const http_request *req, const char **msg) {
  char source[256] = "";
  int rs = param(req->body, req->body_len, "since", j->since, sizeof j->since);
  int rt = param(req->body, req->body_len, "type", j->type, sizeof j->type);
  int rsrc = param(req->body, req->body_len, "source", source, sizeof source);
  int64_t since = rs == 1 ? config_parse_duration(j->since) : -1;
  *msg = "needs since=DURATION (e.g. 1h, 7d) and optionally type=PATTERN, source=NAME";
  if (since <= 0 || rt < 0 || rsrc < 0) return 400;
  if (rt == 1 && pattern_problem(j->type)) {
    *msg = "type: not a valid event type pattern";
    return 400;
  }
  snprintf(j->source, sizeof j->source, "%s", source);
  j->filter = (dlq_filter){.since_ms = clock_now_ms() - since,
                           .type_pattern = rt == 1 ? j->type : NULL,
                           .source = rsrc == 1 && source[0] ? j->source : NULL};
  snprintf(j->what, sizeof j->what, "since %s%s%s%s%s (status page)", j->since,
           rt == 1 ? ", type " : "", rt == 1 ? j->type : "", rsrc == 1 ? ", source " : "",
           rsrc == 1 ? source : "");
  return 0;
}

/* The configured instance NAME of /instances/NAME/ACTION, decoded into out. */
static int instance_of(admin *a, const char *path, char *out, size_t len) {
  const char *start = path + 11, *slash = strrchr(path, '/');
  if (url_decode(start, (size_t)(slash - start), 0, out, len) != 0) return -1;
  for (size_t i = 0; i < a->host->n_insts; i++) {
    if (strcmp(inst_name(a, i), out) == 0) return 0;
  }
  return -1;
}

/* Reads what a job of kind needs from the request. Returns 0, or the status
 * to answer with (and why in msg). */
static int job_params(admin *a, admin_job *j, const http_request *req, const char **msg) {
  const char *qs = req->query;
  size_t ql = qs ? strlen(qs) : 0;
  switch (j->kind) {
    case R_REPLAY: {
      char *end = NULL;
      j->id = strtoll(req->path + 14, &end, 10);
      *msg = "no such dead letter";
      return end == NULL || strcmp(end, "/replay") != 0 || j->id <= 0 ? 404 : 0;
    }
    case R_EVENT:
      *msg = "needs ?source=SOURCE&id=EVENT_ID";
      return param(qs, ql, "source", j->source, sizeof j->source) == 1 &&
                     param(qs, ql, "id", j->event_id, sizeof j->event_id) == 1
                 ? 0
                 : 400;
    case R_SEARCH:
      *msg = "needs ?q=EVENT_ID_OR_ORDER_KEY";
      if (param(qs, ql, "q", j->q, sizeof j->q) != 1 || j->q[0] == '\0') return 400;
      j->sources = calloc(a->cfg->n_sources ? a->cfg->n_sources : 1, sizeof *j->sources);
      if (j->sources == NULL) return 503;
      for (size_t i = 0; i < a->cfg->n_sources; i++) j->sources[i] = a->cfg->sources[i].name;
      j->n_sources = a->cfg->n_sources;
      return 0;
    case R_PAUSE:
    case R_RESUME:
    case R_BACKFILL:
      *msg = "no such plugin instance";
      if (instance_of(a, req->path, j->instance, sizeof j->instance) != 0) return 404;
      return j->kind == R_BACKFILL ? backfill_params(j, req, msg) : 0;
    default:
      return 0;
  }
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
  const char *msg = NULL;
  int st = job_params(a, j, req, &msg);
  if (st != 0) {
    job_free(j);
    reply_text(c, st, msg ? msg : http_server_status_text(st));
    return;
  }
  int rc = uv_queue_work(a->loop, &j->work, job_work, job_done);
  if (rc != 0) {
    job_free(j);
    reply(c, 503, "Retry-After: 1\r\n", NULL, 0);
  }
}

static void on_reload_done(void *arg, int status, const char *why) {
  reply_text(arg, status, status == 200 ? "reloaded" : why);
}

static void answer_metrics(admin *a, http_conn *c, const http_request *req) {
  char *buf = NULL;
  size_t len = 0, cap = 0;
  if (render_metrics(a, &buf, &len, &cap) != 0) {
    reply(c, 500, NULL, NULL, 0);
  } else {
    reply(c, 200, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
          req->method == HTTP_HEAD ? NULL : buf, req->method == HTTP_HEAD ? 0 : len);
  }
  free(buf);
}

static void answer_ready(admin *a, http_conn *c) {
  char why[256];
  const char *not_ready = admin_not_ready(a, why, sizeof why);
  if (not_ready) {
    reply_text(c, 503, not_ready);
    return;
  }
  char notes[2048], body[2100];
  admin_ready_notes(a, notes, sizeof notes);
  int n = snprintf(body, sizeof body, "ready\n%s", notes);
  reply(c, 200, "Content-Type: text/plain; charset=utf-8\r\n", body,
        n > 0 && (size_t)n < sizeof body ? (size_t)n : strlen(body));
}

void admin_on_request(void *data, http_conn *c, http_request *req) {
  admin *a = data;
  route_kind k = *(const route_kind *)req->route;
  switch (k) {
    case R_HEALTH:
      reply_text(c, 200, "ok");
      break;
    case R_READY:
      answer_ready(a, c);
      break;
    case R_METRICS:
      answer_metrics(a, c, req);
      break;
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
      http_conn_respond(c, 401,
                        "WWW-Authenticate: Basic realm=\"hookd admin\", charset=\"UTF-8\"\r\n",
                        "unauthorized\n", 13);
      break;
    default:
      start_job(a, c, req, k);
  }
}
