/* Listeners: bind the webhook and admin addresses, serve them, swap generations, drain at shutdown.
 */
#include "listeners.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "http_server.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "tls.h"

typedef struct listener {
  uv_tcp_t tcp;
  http_server *hs;
  listeners *s;
  char *addr;   /* as configured, for logs and metrics */
  tls_ctx *tls; /* what new connections use (referenced); NULL: plain HTTP */
} listener;

struct listeners {
  uv_loop_t *loop;
  ingest *in; /* the webhook request path; holds the current generation */
  http_server web;
  http_server admin;
  admin adm;
  size_t open_conns;
  listener *ls;
  size_t n_ls;
  size_t open_listeners;
  int draining;
  int web_empty, admin_empty;
  void (*done)(void *);
  void *done_data;
};

static void on_connection(uv_stream_t *st, int status) {
  listener *l = st->data;
  if (status < 0) {
    log_write(HLOG_WARN, NULL, "accept failed: %s", uv_strerror(status));
    return;
  }
  http_server_accept(l->hs, st, l->tls);
}

static int bind_one(listeners *s, listener *l, const char *addr, const config_tls *tls,
                    http_server *hs, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  if (config_parse_addr(addr, &ss) != 0) {
    snprintf(err, errlen, "bad listen address '%s'", addr);
    return -1;
  }
  l->s = s;
  l->hs = hs;
  l->addr = strdup(addr);
  if (tls && tls->ctx) {
    l->tls = tls->ctx;
    tls_ctx_ref(l->tls);
    metrics_tls_certificate(addr, tls_ctx_not_after(l->tls));
  }
  uv_tcp_init(s->loop, &l->tcp);
  l->tcp.data = l;
  s->open_listeners++;
  /* IPv6 addresses bind v6-only, so "[::]:8080" and "0.0.0.0:8080" can be
   * listed together. */
  unsigned flags = ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
  int rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, flags);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
  if (rc != 0) {
    snprintf(err, errlen, "cannot listen on %s: %s", addr, uv_strerror(rc));
    return -1;
  }
  struct sockaddr_storage bound;
  int bl = sizeof bound;
  char ip[64] = "?";
  int port = 0;
  if (uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &bl) == 0) {
    if (bound.ss_family == AF_INET6) {
      uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    } else {
      uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof ip);
      port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    }
  }
  log_write(HLOG_INFO, NULL, "listening on %s%s%s:%d (%s%s%s)",
            bound.ss_family == AF_INET6 ? "[" : "", ip, bound.ss_family == AF_INET6 ? "]" : "",
            port, hs == &s->web ? "webhooks" : "admin", l->tls ? ", TLS: " : "",
            l->tls ? tls_ctx_subject(l->tls) : "");
  return 0;
}

static void maybe_done(listeners *s) {
  if (s->draining && s->open_listeners == 0 && s->web_empty && s->admin_empty && s->done) {
    void (*done)(void *) = s->done;
    s->done = NULL;
    done(s->done_data);
  }
}

static void on_web_empty(void *data) {
  listeners *s = data;
  s->web_empty = 1;
  maybe_done(s);
}

static void on_admin_empty(void *data) {
  listeners *s = data;
  s->admin_empty = 1;
  maybe_done(s);
}

static void on_listener_closed(uv_handle_t *h) {
  listener *l = h->data;
  l->s->open_listeners--;
  maybe_done(l->s);
}

int listeners_reload_tls(listeners *s, const config *cfg) {
  int changed = 0;
  /* Listeners bound at start are the first n_listen of s->ls, in order;
   * listen itself cannot change without a restart. */
  for (size_t i = 0; i < s->n_ls && i < cfg->n_listen; i++) {
    listener *l = &s->ls[i];
    if (l->hs != &s->web || strcmp(l->addr, cfg->listen[i]) != 0) continue;
    tls_ctx *next = cfg->listen_tls[i].ctx;
    if ((l->tls == NULL) != (next == NULL)) {
      log_write(HLOG_WARN, NULL, "reload: TLS on or off for %s takes a restart; it stays %s",
                l->addr, l->tls ? "on" : "off");
      continue;
    }
    if (next == NULL || next == l->tls) continue;
    /* Tickets issued under the old certificate still resume. */
    tls_ctx_keep_tickets(next, l->tls);
    tls_ctx_ref(next);
    tls_ctx_unref(l->tls); /* connections that use it keep it alive */
    l->tls = next;
    metrics_tls_certificate(l->addr, tls_ctx_not_after(next));
    metrics_tls_reload(1);
    log_write(HLOG_INFO, NULL, "reload: %s serves the certificate %s from %s", l->addr,
              tls_ctx_subject(next), cfg->listen_tls[i].cert);
    changed++;
  }
  return changed;
}

int listeners_set_generation(listeners *s, generation *g) {
  if (ingest_set_generation(s->in, g) != 0) return -1;
  listeners_reload_tls(s, &g->cfg);
  /* New requests and new connections see the new limits. */
  s->web.limits = &g->cfg.limits;
  s->admin.limits = &g->cfg.limits;
  s->adm.cfg = &g->cfg;
  s->adm.host = &g->host;
  s->adm.dp = g->dp;
  s->adm.lanes = g->lanes;
  return 0;
}

void listeners_set_reload(listeners *s,
                          void (*reload)(void *data, admin_reload_done done, void *arg),
                          void *data) {
  s->adm.reload = reload;
  s->adm.reload_data = data;
}

listeners *listeners_new(uv_loop_t *loop, generation *g, spool *sp, char *err, size_t errlen) {
  const config *cfg = &g->cfg;
  listeners *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->loop = loop;
  s->ls = calloc(cfg->n_listen + 1, sizeof *s->ls);
  s->in = s->ls ? ingest_new(g, sp) : NULL;
  if (s->in == NULL) {
    snprintf(err, errlen, "out of memory");
    listeners_free(s);
    return NULL;
  }
  s->web = (http_server){.loop = loop,
                         .limits = &cfg->limits,
                         .handler = ingest_handler(s->in),
                         .open_conns = &s->open_conns,
                         .on_empty = on_web_empty,
                         .on_empty_data = s};
  s->admin = s->web;
  s->adm =
      (admin){.cfg = cfg, .host = &g->host, .dp = g->dp, .lanes = g->lanes, .sp = sp, .loop = loop};
  s->admin.handler = (http_handler){.on_headers = admin_on_headers,
                                    .on_request = admin_on_request,
                                    .data = &s->adm,
                                    .allow = "GET, HEAD"};
  s->admin.on_empty = on_admin_empty;
  int rc = 0;
  for (size_t i = 0; i < cfg->n_listen && rc == 0; i++) {
    rc = bind_one(s, &s->ls[s->n_ls++], cfg->listen[i], &cfg->listen_tls[i], &s->web, err, errlen);
  }
  if (rc == 0 && cfg->admin_listen) {
    rc = bind_one(s, &s->ls[s->n_ls++], cfg->admin_listen, NULL, &s->admin, err, errlen);
  }
  if (rc != 0) {
    /* Close what was opened; the loop runs nothing else yet, so running it
     * here only finishes these closes. */
    for (size_t i = 0; i < s->n_ls; i++) uv_close((uv_handle_t *)&s->ls[i].tcp, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    listeners_free(s);
    return NULL;
  }
  s->adm.listening = 1;
  return s;
}

void listeners_drain(listeners *s, void (*done)(void *data), void *data) {
  if (s->draining) return;
  s->draining = 1;
  ingest_drain(s->in);
  s->adm.draining = 1;
  s->done = done;
  s->done_data = data;
  for (size_t i = 0; i < s->n_ls; i++) {
    uv_close((uv_handle_t *)&s->ls[i].tcp, on_listener_closed);
  }
  http_server_drain(&s->web);
  http_server_drain(&s->admin);
}

void listeners_abort(listeners *s) {
  http_server_abort(&s->web);
  http_server_abort(&s->admin);
}

void listeners_free(listeners *s) {
  if (s == NULL) return;
  ingest_free(s->in);
  for (size_t i = 0; s->ls && i < s->n_ls; i++) {
    free(s->ls[i].addr);
    tls_ctx_unref(s->ls[i].tls);
  }
  free(s->ls);
  free(s);
}
