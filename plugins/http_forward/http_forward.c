/* http_forward plugin: relays the raw event body to a URL, signed per Standard Webhooks. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* vasprintf */
#endif

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "hookd/helpers.h"
#include "hookd/plugin.h"

#define FWD_MAX_KEY 256
/* The Standard Webhooks spec asks for 24 to 64 bytes of key. */
#define FWD_MIN_KEY_WARN 24

/* Per instance: the options the host fills, then what init() derives.
 * Read-only after init, so deliver() may run on many threads. */
typedef struct forward {
  const char *url;
  const char *secret;
  hookd_template_map headers;
  const char *ca_file;
  unsigned char key[FWD_MAX_KEY]; /* the decoded secret */
  size_t key_len;                 /* 0: send unsigned */
  EVP_MAC *hmac;
} forward;

static const hookd_option fwd_options[] = {
    {"url", HOOKD_OPT_URL, HOOKD_OPT_REQUIRED, offsetof(forward, url), NULL, 0, 0, NULL,
     HOOKD_ESC_NONE, "where to POST the event body"},
    {"secret", HOOKD_OPT_SECRET, 0, offsetof(forward, secret), NULL, 0, 0, NULL, HOOKD_ESC_NONE,
     "Standard Webhooks signing key, \"whsec_\" and base64; absent: unsigned"},
    {"headers", HOOKD_OPT_TEMPLATE_MAP, 0, offsetof(forward, headers), NULL, 0, 0, NULL,
     HOOKD_ESC_HEADER, "extra request headers: name -> template"},
    {"ca_file", HOOKD_OPT_PATH, 0, offsetof(forward, ca_file), NULL, 0, 0, NULL, HOOKD_ESC_NONE,
     "CA bundle to verify the server with (default: the system's)"},
    HOOKD_OPTIONS_END};

/* base64(HMAC-SHA256(key, "<id>.<ts>.<body>")) into out. Returns 0 or -1. */
static int sign(const forward *st, const char *id, const char *ts, const char *body,
                size_t body_len, char *out, size_t outlen) {
  char digest_name[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
                         OSSL_PARAM_construct_end()};
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t mac_len = 0;
  int ok = 0;
  EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(st->hmac);
  if (ctx && EVP_MAC_init(ctx, st->key, st->key_len, params) &&
      EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) &&
      EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
      EVP_MAC_update(ctx, (const unsigned char *)ts, strlen(ts)) &&
      EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
      EVP_MAC_update(ctx, (const unsigned char *)body, body_len) &&
      EVP_MAC_final(ctx, mac, &mac_len, sizeof mac)) {
    hookd_buf b = {0};
    hookd_buf_base64(&b, mac, mac_len, 0);
    ok = !b.oom && b.len < outlen;
    if (ok) memcpy(out, b.p, b.len + 1);
    hookd_buf_free(&b);
  }
  EVP_MAC_CTX_free(ctx);
  OPENSSL_cleanse(mac, sizeof mac);
  return ok ? 0 : -1;
}

/* Copies s with control characters replaced, for a header value. */
static void header_safe(char *dst, size_t n, const char *s) {
  size_t i = 0;
  for (; s && s[i] && i + 1 < n; i++)
    dst[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '_' : s[i];
  dst[i] = '\0';
}

/* Appends one formatted header line; n grows only on success. */
static int add_line(char **lines, size_t *n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vasprintf(&lines[*n], fmt, ap);
  va_end(ap);
  if (r < 0) return -1;
  (*n)++;
  return 0;
}

static hookd_result fwd_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  const forward *st = state;
  const hookd_host_api *host = ev->host;
  char id[256], ctype[256], ts[32], sig[128];
  header_safe(id, sizeof id, ev->id);
  header_safe(ctype, sizeof ctype,
              ev->content_type && *ev->content_type ? ev->content_type : "application/json");
  /* A fresh timestamp per attempt: the receiver's tolerance window counts
   * from the send, and webhook-id stays the same for its deduplication. */
  snprintf(ts, sizeof ts, "%" PRId64, (int64_t)time(NULL));

  size_t n = 0, cap = st->headers.n + 4;
  char **lines = calloc(cap, sizeof *lines);
  hookd_result rc = HOOKD_RETRY;
  if (!lines) goto nomem;
  if (add_line(lines, &n, "Content-Type: %s", ctype) < 0 ||
      add_line(lines, &n, "webhook-id: %s", id) < 0 ||
      add_line(lines, &n, "webhook-timestamp: %s", ts) < 0)
    goto nomem;
  if (st->key_len) {
    if (sign(st, id, ts, ev->body, ev->body_len, sig, sizeof sig) != 0) {
      snprintf(out->message, sizeof out->message, "HMAC-SHA256 failed");
      goto done;
    }
    if (add_line(lines, &n, "webhook-signature: v1,%s", sig) < 0) goto nomem;
  }
  for (size_t i = 0; i < st->headers.n; i++) {
    char *v = host->render(st->headers.values[i], ev, HOOKD_ESC_HEADER, NULL);
    if (!v) goto nomem;
    int r = add_line(lines, &n, "%s: %s", st->headers.keys[i], v);
    host->free(v);
    if (r < 0) goto nomem;
  }

  hookd_http_request req = {.struct_size = sizeof req,
                            .method = "POST",
                            .url = st->url,
                            .headers = (const char *const *)lines,
                            .n_headers = n,
                            .body = ev->body,
                            .body_len = ev->body_len,
                            .timeout_ms = ev->timeout_ms,
                            .ca_file = st->ca_file};
  rc = host->http(ev->self, &req, NULL, out);
  goto done;
nomem:
  snprintf(out->message, sizeof out->message, "out of memory");
  rc = HOOKD_RETRY;
done:
  for (size_t i = 0; lines && i < n; i++) free(lines[i]);
  free(lines);
  return rc;
}

static void fwd_destroy(void *state) {
  forward *st = state;
  EVP_MAC_free(st->hmac);
  OPENSSL_cleanse(st->key, sizeof st->key);
}

/* Header names must be tokens, and the ones this plugin sets itself may not
 * be overridden. */
static int check_headers(const hookd_host_api *host, const hookd_config *cfg,
                         const hookd_template_map *h) {
  static const char *const reserved[] = {
      "Content-Type",      "Content-Length",    "Host", "webhook-id",
      "webhook-timestamp", "webhook-signature", NULL};
  const hookd_config *obj;
  if (h->n == 0 || host->config_object(cfg, "headers", &obj) != HOOKD_E_OK) return 0;
  for (size_t i = 0; i < h->n; i++) {
    if (!hookd_header_name_ok(h->keys[i]))
      return host->config_error(obj, h->keys[i], "'%s' is not a header name", h->keys[i]);
    for (const char *const *r = reserved; *r; r++)
      if (strcasecmp(*r, h->keys[i]) == 0)
        return host->config_error(obj, h->keys[i], "%s is set by http_forward itself", *r);
  }
  return 0;
}

/* Main thread: the host has filled the options; decode the secret. */
static int fwd_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                    void **state, char *err, size_t errlen) {
  forward *st = *state;
  if (check_headers(host, cfg, &st->headers) != 0) return -1;
  if (!st->secret) return 0;
  long len = hookd_whsec_decode(st->secret, st->key, sizeof st->key);
  if (len <= 0)
    return host->config_error(cfg, "secret", "expected \"whsec_\" and base64 of 1 to %d bytes",
                              FWD_MAX_KEY);
  st->key_len = (size_t)len;
  if (st->key_len < FWD_MIN_KEY_WARN)
    host->log(self, NULL, HOOKD_LOG_WARN,
              "secret has %zu bytes; Standard Webhooks asks for 24 to 64", st->key_len);
  if (!(st->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL))) {
    snprintf(err, errlen, "OpenSSL has no HMAC");
    return -1;
  }
  return 0;
}

/* The descriptor and hookd_plugin_entry(): a host older than ABI 1.1 (which
 * would not fill the options) is refused, and the host names both versions. */
HOOKD_PLUGIN_DEFINE("http_forward", "1.1.0",
                    "relays events to a URL, signed with Standard Webhooks headers", fwd_init,
                    fwd_deliver, fwd_destroy, fwd_options, forward)
