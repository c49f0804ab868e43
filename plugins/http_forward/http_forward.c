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

#include "hookd/plugin.h"

#define FWD_DEFAULT_TIMEOUT_MS 10000
#define FWD_MAX_KEY 256
/* The Standard Webhooks spec asks for 24 to 64 bytes of key. */
#define FWD_MIN_KEY_WARN 24

typedef struct header {
  const char *name; /* host-owned */
  hookd_template *tpl;
} header;

/* Per instance; read-only after init, so deliver() may run on many threads. */
typedef struct forward {
  const hookd_host_api *host;
  hookd_instance *self;
  const char *url;
  unsigned char key[FWD_MAX_KEY]; /* the decoded secret */
  size_t key_len;                 /* 0: send unsigned */
  EVP_MAC *hmac;
  header *headers;
  size_t n_headers;
  const char *ca_file;
  uint32_t timeout_ms;
} forward;

/* Decodes "whsec_<base64>" (the prefix is optional) into key. Returns the
 * key length, or -1 when the text is not base64 or the key is too long. */
static int decode_secret(const char *secret, unsigned char *key, size_t cap) {
  if (strncmp(secret, "whsec_", 6) == 0) secret += 6;
  size_t n = strlen(secret);
  if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap) return -1;
  int len = EVP_DecodeBlock(key, (const unsigned char *)secret, (int)n);
  if (len < 0) return -1;
  /* EVP_DecodeBlock counts the padding as zero bytes. */
  if (secret[n - 1] == '=') len--;
  if (secret[n - 2] == '=') len--;
  return len;
}

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
      EVP_MAC_final(ctx, mac, &mac_len, sizeof mac) && outlen > (mac_len + 2) / 3 * 4) {
    EVP_EncodeBlock((unsigned char *)out, mac, (int)mac_len);
    ok = 1;
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
  const hookd_host_api *host = st->host;
  char id[256], ctype[256], ts[32], sig[128];
  header_safe(id, sizeof id, ev->id);
  header_safe(ctype, sizeof ctype,
              ev->content_type && *ev->content_type ? ev->content_type : "application/json");
  /* A fresh timestamp per attempt: the receiver's tolerance window counts
   * from the send, and webhook-id stays the same for its deduplication. */
  snprintf(ts, sizeof ts, "%" PRId64, (int64_t)time(NULL));

  size_t n = 0, cap = st->n_headers + 4;
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
  for (size_t i = 0; i < st->n_headers; i++) {
    char *v = host->render(st->headers[i].tpl, ev, HOOKD_ESC_HEADER, NULL);
    if (!v) goto nomem;
    int r = add_line(lines, &n, "%s: %s", st->headers[i].name, v);
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
                            .timeout_ms = st->timeout_ms,
                            .ca_file = st->ca_file};
  rc = host->http(st->self, &req, NULL, out);
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
  if (!st) return;
  for (size_t i = 0; i < st->n_headers; i++) st->host->template_free(st->headers[i].tpl);
  free(st->headers);
  EVP_MAC_free(st->hmac);
  OPENSSL_cleanse(st->key, sizeof st->key);
  free(st);
}

/* Header names: RFC 9110 token characters. */
static int is_token(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          strchr("-!#$%&'*+.^_`|~", *s)))
      return 0;
  return 1;
}

static int read_headers(forward *st, const hookd_config *cfg) {
  static const char *const reserved[] = {
      "Content-Type",      "Content-Length",    "Host", "webhook-id",
      "webhook-timestamp", "webhook-signature", NULL};
  const hookd_host_api *host = st->host;
  const hookd_config *obj;
  int rc = host->config_object(cfg, "headers", &obj);
  if (rc < 0 || !obj) return rc < 0 ? rc : 0;
  size_t n = host->config_count(obj);
  st->headers = calloc(n ? n : 1, sizeof *st->headers);
  if (!st->headers) return HOOKD_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    header *h = &st->headers[st->n_headers];
    h->name = host->config_key_at(obj, i);
    if (!is_token(h->name))
      return host->config_error(obj, h->name, "'%s' is not a header name", h->name);
    for (const char *const *r = reserved; *r; r++)
      if (strcasecmp(*r, h->name) == 0)
        return host->config_error(obj, h->name, "%s is set by http_forward itself", *r);
    if ((rc = host->config_template(obj, h->name, NULL, &h->tpl)) < 0) return rc;
    st->n_headers++;
  }
  return 0;
}

static int fwd_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                    void **state, char *err, size_t errlen) {
  static const char *const keys[] = {"url", "secret", "headers", "timeout_ms", "ca_file", NULL};
  if (host->struct_size < sizeof *host) {
    snprintf(err, errlen, "host API too old (struct_size %zu)", host->struct_size);
    return -1;
  }
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK) return -1;
  forward *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  st->host = host;
  st->self = self;
  const char *secret;
  int64_t timeout;
  int rc = -1;
  if (host->config_string(cfg, "url", NULL, &st->url) < 0 ||
      host->config_string(cfg, "secret", NULL, &secret) < 0 ||
      host->config_string(cfg, "ca_file", NULL, &st->ca_file) < 0 ||
      host->config_int(cfg, "timeout_ms", FWD_DEFAULT_TIMEOUT_MS, &timeout) < 0 ||
      (rc = read_headers(st, cfg)) < 0)
    goto fail;
  rc = -1;
  if (!st->url) {
    host->config_error(cfg, "url", "required");
    goto fail;
  }
  if (strncmp(st->url, "https://", 8) != 0 && strncmp(st->url, "http://", 7) != 0) {
    host->config_error(cfg, "url", "expected an http:// or https:// URL");
    goto fail;
  }
  if (timeout < 1 || timeout > 600000) {
    host->config_error(cfg, "timeout_ms", "expected 1 to 600000");
    goto fail;
  }
  st->timeout_ms = (uint32_t)timeout;
  if (secret) {
    int len = decode_secret(secret, st->key, sizeof st->key);
    if (len <= 0) {
      host->config_error(cfg, "secret", "expected \"whsec_\" and base64 of 1 to %d bytes",
                         FWD_MAX_KEY);
      goto fail;
    }
    st->key_len = (size_t)len;
    if (st->key_len < FWD_MIN_KEY_WARN)
      host->log(self, NULL, HOOKD_LOG_WARN,
                "secret has %zu bytes; Standard Webhooks asks for 24 to 64", st->key_len);
    if (!(st->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL))) {
      snprintf(err, errlen, "OpenSSL has no HMAC");
      goto fail;
    }
  }
  *state = st;
  return 0;
fail:
  if (rc == HOOKD_E_NOMEM) snprintf(err, errlen, "out of memory");
  fwd_destroy(st);
  return -1;
}

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "http_forward",
    .version = "1.0.0",
    .description = "relays events to a URL, signed with Standard Webhooks headers",
    .init = fwd_init,
    .deliver = fwd_deliver,
    .destroy = fwd_destroy,
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return &descriptor;
}
