/* Ingest: the webhook request path (allow_ips, verify, decode, dedupe, route, spool, answer). */
#include "ingest.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <llhttp.h>

#include <cjson/cJSON.h>

#include "access.h"
#include "clock.h"
#include "config.h"
#include "envelope.h"
#include "event.h"
#include "log.h"
#include "metrics.h"
#include "verify.h"

struct ingest {
  generation *gen; /* current: config, router, plugin instances, dispatcher */
  spool *sp;
  int draining;
  size_t *match;      /* router_match output, one slot per plugin instance */
  spool_lane **lanes; /* the lanes of the matched instances */
  size_t match_cap;
};

/* --- the webhook path ---------------------------------------------------- */

/* allow_ips at accept, before any byte is read. Returns 0 to serve the
 * connection, -1 to close it. A peer is served when some source could take
 * a request from it: a source without allow_ips, a source whose allow_ips
 * holds the peer, or any source when the peer is a trusted proxy (the
 * client is then known only from the headers). */
static int allowed_at_accept(const config *cfg, const struct sockaddr *peer) {
  access_addr a;
  if (cfg->n_sources == 0) return 0;
  for (size_t i = 0; i < cfg->n_sources; i++) {
    if (cfg->sources[i].allow_ips.n == 0) return 0; /* some source takes anyone */
  }
  if (access_addr_from_sockaddr(peer, &a) != 0) return -1;
  if (access_list_match(&cfg->trusted_proxies, &a)) return 0;
  for (size_t i = 0; i < cfg->n_sources; i++) {
    if (access_list_match(&cfg->sources[i].allow_ips, &a)) return 0;
  }
  if (log_enabled(HLOG_DEBUG)) {
    char text[INET6_ADDRSTRLEN];
    access_addr_format(&a, text, sizeof text);
    log_ctx ctx = {.peer = text};
    log_write(HLOG_DEBUG, &ctx,
              "connection closed at accept: no source's allow_ips holds the peer");
  }
  return -1;
}

/* allow_ips once the request's source is known (headers complete).
 * Returns 0 when the source takes requests from the client (see
 * access_client), or 403 (the answer); a refusal is logged with the client
 * address. peer NULL means unknown and is refused by a source with
 * allow_ips. */
static int allowed_request(const config *cfg, const config_source *src, const struct sockaddr *peer,
                           const http_request *req) {
  const char *vals[16];
  size_t lens[16], n = 0;
  access_addr p, client;
  char text[INET6_ADDRSTRLEN];
  log_ctx ctx = {.source = src->name};

  if (src->allow_ips.n == 0) return 0;
  if (!peer || access_addr_from_sockaddr(peer, &p) != 0) {
    log_write(HLOG_INFO, &ctx, "rejected: peer address unknown (403)");
    return 403;
  }
  for (size_t i = 0; i < req->n_headers; i++) {
    if (strcasecmp(req->headers[i].name, "X-Forwarded-For") != 0) continue;
    if (n == sizeof vals / sizeof vals[0]) {
      n = SIZE_MAX; /* too many headers: refused below */
      break;
    }
    vals[n] = req->headers[i].value;
    lens[n] = req->headers[i].value_len;
    n++;
  }
  access_addr_format(&p, text, sizeof text);
  ctx.peer = text;
  if (n == SIZE_MAX || access_client(&cfg->trusted_proxies, &p, vals, lens, n, &client) != 0) {
    log_write(HLOG_INFO, &ctx, "rejected: malformed X-Forwarded-For from a trusted proxy (403)");
    return 403;
  }
  if (access_list_match(&src->allow_ips, &client)) return 0;
  char ctext[INET6_ADDRSTRLEN];
  access_addr_format(&client, ctext, sizeof ctext);
  log_write(HLOG_INFO, &ctx, "rejected: client %s is not in allow_ips (403)", ctext);
  return 403;
}

/* allow_ips: a peer no source would take is closed before it sends a byte. */
static int web_on_accept(void *data, http_conn *c) {
  struct sockaddr_storage peer;
  if (http_conn_peer_addr(c, &peer) != 0) return 0; /* unknown: judged per request */
  return allowed_at_accept(&((ingest *)data)->gen->cfg, (const struct sockaddr *)&peer);
}

static int web_on_headers(void *data, http_conn *c, http_request *req) {
  ingest *in = data;
  const config *cfg = &in->gen->cfg;
  const config_source *src = NULL;
  for (size_t i = 0; i < cfg->n_sources && src == NULL; i++) {
    if (strcmp(cfg->sources[i].path, req->path) == 0) src = &cfg->sources[i];
  }
  if (src == NULL) return 404;
  if (req->method != HTTP_POST) return 405;
  struct sockaddr_storage peer;
  int peer_ok = http_conn_peer_addr(c, &peer) == 0;
  int denied = allowed_request(cfg, src, peer_ok ? (const struct sockaddr *)&peer : NULL, req);
  if (denied) return denied;
  /* src lives in the current generation: hold it until the request is
   * done, even if a reload retires it while the body arrives. */
  req->route = src;
  req->ctx = in->gen;
  generation_ref(in->gen);
  return 0;
}

static void web_on_release(void *data, http_request *req) {
  (void)data;
  generation_unref(req->ctx);
}

/* Why a webhook request was refused, for the status page's list: what the
 * request path said (req->reason), else the answer's one-line body, else
 * what the status means here. */
static void web_on_refused(void *data, http_conn *c, const http_request *req, int status,
                           const char *body, size_t body_len) {
  (void)data;
  char reason[160];
  if (req->reason) {
    snprintf(reason, sizeof reason, "%s", req->reason);
  } else if (body && body_len > 0) {
    size_t n = strcspn(body, "\r\n");
    snprintf(reason, sizeof reason, "%.*s", (int)(n < body_len ? n : body_len), body);
  } else {
    const char *why = status == 404   ? "no source has this path"
                      : status == 405 ? "method is not POST"
                      : status == 403 ? "client address not allowed (allow_ips)"
                      : status == 408 ? "headers or body too slow"
                                      : http_server_status_text(status);
    snprintf(reason, sizeof reason, "%s", why);
  }
  metrics_rejected_add(http_conn_peer(c), req->path ? req->path : "-", status, reason);
}

/* The request's headers as the status page shows them with the event:
 * "Name: value" lines, the values of credentials and signatures masked (a
 * signature is no secret, but with the body it lets anyone replay the
 * request elsewhere), at most MAX_HEADER_TEXT bytes. */
#define MAX_HEADER_TEXT 4096
static int header_is_secret(const config_source *src, const char *name) {
  static const char *const words[] = {"authorization", "cookie", "signature", "token",    "secret",
                                      "api-key",       "apikey", "hmac",      "password", NULL};
  if (src->verify.header && strcasecmp(name, src->verify.header) == 0) return 1;
  for (const char *const *w = words; *w; w++) {
    if (strcasestr(name, *w)) return 1;
  }
  return 0;
}

static void keep_headers(event *ev, const config_source *src, const http_request *req) {
  char text[MAX_HEADER_TEXT];
  size_t len = 0;
  for (size_t i = 0; i < req->n_headers && len < sizeof text; i++) {
    const http_header *h = &req->headers[i];
    int n = header_is_secret(src, h->name)
                ? snprintf(text + len, sizeof text - len, "%s: [masked, %zu bytes]\n", h->name,
                           h->value_len)
                : snprintf(text + len, sizeof text - len, "%s: %.*s\n", h->name, (int)h->value_len,
                           h->value);
    if (n < 0 || (size_t)n >= sizeof text - len) break; /* the rest does not fit: left out */
    len += (size_t)n;
  }
  /* Without them the page says so; nothing else needs them. */
  event_set_headers(ev, text, len);
}

/* A header the signature check (or the envelope) reads. One sent twice is
 * treated as absent, so the request fails verification: which copy a
 * signature covers must never be a guess (two X-Signature headers, one of
 * them the attacker's). */
static const char *verify_header(void *ctx, const char *name, size_t *len) {
  const http_request *req = ctx;
  const char *found = NULL;
  for (size_t i = 0; i < req->n_headers; i++) {
    if (strcasecmp(req->headers[i].name, name) != 0) continue;
    if (found) return NULL;
    found = req->headers[i].value;
    *len = req->headers[i].value_len;
  }
  return found;
}

/* A request waiting for its event to be durable. */
typedef struct store_ctx {
  http_conn *c;
  generation *gen; /* referenced: src and the instance names live in it */
  const config_source *src;
  event *ev;
  size_t n;
  uint64_t t0; /* request complete (uv_hrtime): ingest latency */
} store_ctx;

static void answer_stored(void *data, int status) {
  store_ctx *sc = data;
  const config_source *src = sc->src;
  log_ctx ctx = {.source = src->name, .event_id = sc->ev->id};
  metrics_source_resume(src->name, sc->t0);
  if (status == SPOOL_STORED) {
    metrics_event_accepted(src->name, sc->ev->id, sc->ev->type, sc->ev->received_ms, sc->n);
    if (sc->n == 0) {
      log_write(HLOG_INFO, &ctx, "accepted %s: no route matches", sc->ev->type);
    } else {
      log_write(HLOG_INFO, &ctx, "accepted %s for %zu plugin instance(s)", sc->ev->type, sc->n);
    }
    http_conn_respond(sc->c, src->success_status, NULL, NULL, 0);
  } else if (status == SPOOL_DUPLICATE) {
    METRICS_INC(g_metrics.events_duplicate);
    log_write(HLOG_INFO, &ctx, "duplicate of an accepted event (%s): not stored again",
              sc->ev->type);
    http_conn_respond(sc->c, src->success_status, NULL, NULL, 0);
  } else {
    log_write(HLOG_ERROR, &ctx, "rejected: the spool could not store the event (503)");
    http_conn_respond(sc->c, 503, "Retry-After: 5\r\n", "could not store the event, try again\n",
                      37);
  }
  event_unref(sc->ev);
  generation_unref(sc->gen);
  free(sc);
}

/* --- endpoint handshakes ----------------------------------------------------- */

static const char *const challenge_kinds[] = {"none", "zoom", "slack"};

/* Could the body be the source's endpoint handshake? A cheap look first,
 * so ordinary events are never parsed twice. */
static int maybe_handshake(const config_source *src, const char *body, size_t len) {
  if (src->challenge == CHALLENGE_ZOOM)
    return memmem(body, len, "endpoint.url_validation", 23) != NULL;
  if (src->challenge == CHALLENGE_SLACK) return memmem(body, len, "url_verification", 16) != NULL;
  return 0;
}

/* The answer to a handshake (malloc'd JSON), or NULL when the body is not
 * one after all. Zoom: {"plainToken", "encryptedToken": hex HMAC-SHA256 of
 * the secret over plainToken}; Slack: {"challenge"}. */
static char *handshake_answer(const config_source *src, const char *body, size_t len) {
  cJSON *root = cJSON_ParseWithLength(body, len);
  cJSON *ans = NULL;
  if (src->challenge == CHALLENGE_ZOOM) {
    const cJSON *ev = envelope_path(root, "event");
    const cJSON *tok = envelope_path(root, "payload.plainToken");
    char hex[65];
    if (cJSON_IsString(ev) && strcmp(ev->valuestring, "endpoint.url_validation") == 0 &&
        cJSON_IsString(tok) && tok->valuestring[0] && src->verify.n_secrets > 0 &&
        verify_hmac_sha256_hex(&src->verify.secrets[0], tok->valuestring, strlen(tok->valuestring),
                               hex) == 0) {
      ans = cJSON_CreateObject();
      cJSON_AddStringToObject(ans, "plainToken", tok->valuestring);
      cJSON_AddStringToObject(ans, "encryptedToken", hex);
    }
  } else if (src->challenge == CHALLENGE_SLACK) {
    const cJSON *type = envelope_path(root, "type");
    const cJSON *ch = envelope_path(root, "challenge");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "url_verification") == 0 &&
        cJSON_IsString(ch)) {
      ans = cJSON_CreateObject();
      cJSON_AddStringToObject(ans, "challenge", ch->valuestring);
    }
  }
  char *out = ans ? cJSON_PrintUnformatted(ans) : NULL;
  cJSON_Delete(ans);
  cJSON_Delete(root);
  return out;
}

/* Answers a verified handshake; 1 when it was one (answered), 0 if not. */
static int answer_handshake(http_conn *c, const config_source *src, const http_request *req) {
  char *ans = handshake_answer(src, req->body, req->body_len);
  if (ans == NULL) return 0;
  const char *kind = challenge_kinds[src->challenge];
  log_ctx ctx = {.source = src->name, .peer = http_conn_peer(c)};
  metrics_challenge(src->name, kind, 1);
  log_write(HLOG_INFO, &ctx, "answered the %s endpoint handshake (not stored)", kind);
  http_conn_respond(c, 200, "Content-Type: application/json\r\n", ans, strlen(ans));
  free(ans);
  return 1;
}

/* Checks the request's signature. On a mismatch answers 401 (a handshake
 * that fails it is counted as refused) and returns -1. */
static int verify_or_refuse(http_conn *c, http_request *req, const config_source *src,
                            int handshake) {
  verify_input in = {verify_header, req, req->body, req->body_len, clock_now_ms() / 1000};
  if (verify_request(&src->verify, &in) == 0) return 0;
  log_ctx ctx = {.source = src->name, .peer = http_conn_peer(c)};
  if (handshake) {
    char *ans = handshake_answer(src, req->body, req->body_len);
    if (ans) metrics_challenge(src->name, challenge_kinds[src->challenge], 0);
    free(ans);
  }
  log_write(HLOG_INFO, &ctx, "rejected: signature missing or wrong (401)");
  req->reason = "signature missing or wrong"; /* the page says it; the sender is not told */
  http_conn_respond_text(c, 401, "unauthorized");
  return -1;
}

/* Makes the decoded request an event (env is cleared) and hands it to the
 * spool for the n instances in in->lanes: answer_stored answers once it is
 * durable, or it is answered 503 here. */
static void store_event(ingest *in, http_conn *c, http_request *req, const config_source *src,
                        envelope *env, size_t n, uint64_t t0, const log_ctx *ctx) {
  generation *g = req->ctx;
  size_t clen = 0;
  const char *ctype = http_request_header(req, "Content-Type", &clen);
  char ctbuf[128];
  snprintf(ctbuf, sizeof ctbuf, "%.*s", (int)(ctype ? clen : 0), ctype ? ctype : "");
  /* The parse tree is dropped: a queued event costs only its bytes, and a
   * plugin that needs fields parses it once, on a worker. */
  event *ev = event_new(src->name, env->id, env->type, env->order_key, ctbuf, req->body,
                        req->body_len, NULL, clock_now_ms());
  envelope_clear(env);
  if (ev) keep_headers(ev, src, req);
  store_ctx *sc = ev ? malloc(sizeof *sc) : NULL;
  if (sc == NULL) {
    log_write(HLOG_ERROR, ctx, "rejected: out of memory (503)");
    event_unref(ev);
    http_conn_respond(c, 503, "Retry-After: 1\r\n", NULL, 0);
    return;
  }
  *sc = (store_ctx){.c = c, .gen = g, .src = src, .ev = ev, .n = n, .t0 = t0};
  generation_ref(g);
  if (spool_store(in->sp, ev, in->lanes, n, answer_stored, sc) != 0) {
    log_write(HLOG_ERROR, ctx, "rejected: the spool refused the event (503)");
    event_unref(ev);
    generation_unref(g);
    free(sc);
    http_conn_respond(c, 503, "Retry-After: 5\r\n", NULL, 0);
  }
}

static void web_on_request(void *data, http_conn *c, http_request *req) {
  ingest *in = data;
  const config_source *src = req->route;
  log_ctx ctx = {.source = src->name};
  uint64_t t0 = metrics_source_begin(src->name);

  int handshake = maybe_handshake(src, req->body, req->body_len);
  if (verify_or_refuse(c, req, src, handshake) != 0) return;
  /* A sender's endpoint handshake is answered and counted, never stored. */
  if (handshake && answer_handshake(c, src, req)) {
    metrics_source_end();
    return;
  }
  envelope env;
  const char *reason = NULL;
  generation *g = req->ctx; /* the generation that matched the path */
  /* The tree is built only when a `when` route reads it; otherwise one pass
   * over the body finds type, id and order key. */
  int rc = envelope_decode_request(&src->envelope, req->body, req->body_len, verify_header, req,
                                   router_needs_tree(g->rt), &env, &reason);
  if (rc != 0) {
    ctx.peer = http_conn_peer(c);
    log_write(HLOG_INFO, &ctx, "rejected: %s (400)", reason);
    http_conn_respond_text(c, 400, reason);
    return;
  }
  ctx.event_id = env.id;
  if (in->draining) {
    log_write(HLOG_INFO, &ctx, "rejected: shutting down (503)");
    envelope_clear(&env);
    http_conn_respond(c, 503, "Retry-After: 5\r\n", "shutting down\n", 14);
    return;
  }
  if (spool_seen(in->sp, src->name, env.id)) {
    METRICS_INC(g_metrics.events_duplicate);
    log_write(HLOG_INFO, &ctx, "duplicate of an accepted event (%s): not stored again", env.type);
    envelope_clear(&env);
    http_conn_respond(c, src->success_status, NULL, NULL, 0);
    return;
  }
  size_t n = router_match(g->rt, src->name, env.type, env.root, in->match, g->cfg.n_plugins);
  for (size_t i = 0; i < n; i++) in->lanes[i] = g->lanes[in->match[i]];
  /* Only the instances this event goes to count: one whose destination is
   * down fills its own budget, and events for the others keep flowing. */
  char why[256];
  const char *busy = spool_admit(in->sp, in->lanes, n, why, sizeof why);
  if (busy != NULL) {
    log_write(HLOG_WARN, &ctx, "rejected: %s (503)", busy);
    envelope_clear(&env);
    req->reason = busy; /* valid until the answer is sent */
    http_conn_respond(c, 503, "Retry-After: 10\r\n", "busy, try again later\n", 22);
    return;
  }
  store_event(in, c, req, src, &env, n, t0, &ctx);
  metrics_source_end();
}

/* --- the request path's life ------------------------------------------------- */

int ingest_set_generation(ingest *in, generation *g) {
  size_t need = g->cfg.n_plugins ? g->cfg.n_plugins : 1;
  if (need > in->match_cap) {
    size_t *m = realloc(in->match, need * sizeof *m);
    if (m == NULL) return -1;
    in->match = m;
    spool_lane **l = realloc(in->lanes, need * sizeof *l);
    if (l == NULL) return -1;
    in->lanes = l;
    in->match_cap = need;
  }
  generation_ref(g);
  if (in->gen) generation_unref(in->gen);
  in->gen = g;
  return 0;
}

ingest *ingest_new(generation *g, spool *sp) {
  ingest *in = calloc(1, sizeof *in);
  if (in == NULL) return NULL;
  in->sp = sp;
  if (ingest_set_generation(in, g) != 0) {
    ingest_free(in);
    return NULL;
  }
  return in;
}

http_handler ingest_handler(ingest *in) {
  return (http_handler){.on_headers = web_on_headers,
                        .on_request = web_on_request,
                        .data = in,
                        .on_accept = web_on_accept,
                        .on_release = web_on_release,
                        .on_refused = web_on_refused};
}

void ingest_drain(ingest *in) {
  in->draining = 1;
}

void ingest_free(ingest *in) {
  if (in == NULL) return;
  if (in->gen) generation_unref(in->gen);
  free(in->match);
  free(in->lanes);
  free(in);
}
