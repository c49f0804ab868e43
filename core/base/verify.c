/* Signature verification on the raw request bytes: hmac (optionally timestamped),
 * standard-webhooks, token, basic, none. */
#include "verify.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "hookd/helpers.h"

/* SHA-512 is the largest digest we offer. */
#define MAX_DIGEST 64
/* A signature header that decodes to more than this cannot be a digest we
 * accept, so it is refused without touching the heap. */
#define MAX_DECODED 128
#define SHA256_LEN 32
#define WHSEC_PREFIX "whsec_"
/* Signatures taken from one "t=...,v1=...,v1=..." header: a sender rotating
 * keys sends two or three; more is refused rather than hashed. */
#define MAX_CANDIDATES 8
/* Pieces of a compiled signed_payload ("v0:" {timestamp} ":" {body} is 4). */
#define MAX_PAYLOAD_PARTS 16
/* Decoded Basic credentials longer than this are refused unread. */
#define MAX_BASIC_CREDENTIALS 1024

typedef struct span {
  const char *p;
  size_t n;
} span;

static const char *const digest_names[] = {"SHA1", "SHA256", "SHA512"};
static const size_t digest_lens[] = {20, 32, 64};

/* ---- per-thread OpenSSL objects --------------------------------------- */

/* Fetching an algorithm and building a context costs more than hashing a
 * small body, so each thread keeps one keyed-MAC context per digest and one
 * digest context, created on first use and freed when the thread exits.
 * verify_request never re-enters itself, so one context per kind is enough. */
typedef struct ossl_cache {
  EVP_MAC_CTX *mac[3];
  EVP_MD_CTX *md;
} ossl_cache;

static pthread_once_t ossl_once = PTHREAD_ONCE_INIT;
static EVP_MAC *hmac_impl;
static EVP_MD *sha256_impl;
static pthread_key_t cache_key;
static int cache_key_ok;
static _Thread_local ossl_cache *tls_cache;

static void cache_free(void *p) {
  ossl_cache *c = p;
  for (size_t i = 0; i < 3; i++) EVP_MAC_CTX_free(c->mac[i]);
  EVP_MD_CTX_free(c->md);
  free(c);
}

static void ossl_setup(void) {
  hmac_impl = EVP_MAC_fetch(NULL, "HMAC", NULL);
  sha256_impl = EVP_MD_fetch(NULL, "SHA256", NULL);
  /* The key's destructor is what frees a worker thread's contexts. */
  cache_key_ok = pthread_key_create(&cache_key, cache_free) == 0;
}

static ossl_cache *cache_get(void) {
  ossl_cache *c = tls_cache;
  if (c) return c;
  pthread_once(&ossl_once, ossl_setup);
  if (!hmac_impl || !sha256_impl || !cache_key_ok) return NULL;
  c = calloc(1, sizeof *c);
  if (!c) return NULL;
  if (pthread_setspecific(cache_key, c) != 0) {
    free(c);
    return NULL;
  }
  tls_cache = c;
  return c;
}

static EVP_MAC_CTX *mac_ctx(verify_algorithm alg) {
  ossl_cache *c = cache_get();
  if (!c) return NULL;
  if (!c->mac[alg]) {
    EVP_MAC_CTX *x = EVP_MAC_CTX_new(hmac_impl);
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest_names[alg], 0),
        OSSL_PARAM_construct_end()};
    /* The digest is bound once here; later inits only pass the key, which
     * avoids a provider lookup per request. */
    if (!x || !EVP_MAC_CTX_set_params(x, params)) {
      EVP_MAC_CTX_free(x);
      return NULL;
    }
    c->mac[alg] = x;
  }
  return c->mac[alg];
}

/* HMAC of the concatenation of parts, fed piece by piece so that no joined
 * copy of the body is ever made. */
static int mac_compute(verify_algorithm alg, const verify_secret *s, const span *parts,
                       size_t n_parts, unsigned char out[MAX_DIGEST]) {
  /* EVP_MAC_init with a NULL key reuses the previous key of this context,
   * which may belong to another source: an unset secret must never match. */
  if (!s->key || s->len == 0) return -1;
  EVP_MAC_CTX *ctx = mac_ctx(alg);
  size_t outlen = 0;
  if (!ctx || !EVP_MAC_init(ctx, s->key, s->len, NULL)) return -1;
  for (size_t i = 0; i < n_parts; i++) {
    if (parts[i].n > 0 && !EVP_MAC_update(ctx, (const unsigned char *)parts[i].p, parts[i].n))
      return -1;
  }
  if (!EVP_MAC_final(ctx, out, &outlen, MAX_DIGEST) || outlen != digest_lens[alg]) return -1;
  return 0;
}

/* SHA-256 of the concatenation of parts. */
static int sha256_parts(const span *parts, size_t n_parts, unsigned char out[SHA256_LEN]) {
  ossl_cache *c = cache_get();
  unsigned int outlen = 0;
  if (!c) return -1;
  if (!c->md && !(c->md = EVP_MD_CTX_new())) return -1;
  if (!EVP_DigestInit_ex(c->md, sha256_impl, NULL)) return -1;
  for (size_t i = 0; i < n_parts; i++) {
    if (parts[i].n > 0 && !EVP_DigestUpdate(c->md, parts[i].p, parts[i].n)) return -1;
  }
  if (!EVP_DigestFinal_ex(c->md, out, &outlen) || outlen != SHA256_LEN) return -1;
  return 0;
}

static int sha256_compute(const void *p, size_t n, unsigned char out[SHA256_LEN]) {
  span one = {p, n};
  return sha256_parts(&one, 1, out);
}

/* ---- decoding ----------------------------------------------------------- */

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20; /* senders differ in case; fold A-F onto a-f */
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static int hex_decode(span in, unsigned char *out, size_t cap, size_t *outlen) {
  if (in.n % 2 != 0 || in.n / 2 > cap) return -1;
  for (size_t i = 0; i < in.n; i += 2) {
    int hi = hex_value((unsigned char)in.p[i]);
    int lo = hex_value((unsigned char)in.p[i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i / 2] = (unsigned char)(hi << 4 | lo);
  }
  *outlen = in.n / 2;
  return 0;
}

/* Standard alphabet (the SDK's, helpers.h). Padding is optional because
 * some senders drop it, but when present it must complete the last quantum;
 * hookd_base64_decode insists on it, so this decoder stays. */
static int base64_decode(span in, unsigned char *out, size_t cap, size_t *outlen) {
  size_t n = in.n, pad = 0, o = 0;
  uint32_t acc = 0;
  int bits = 0;
  while (n > 0 && in.p[n - 1] == '=' && pad < 2) {
    n--;
    pad++;
  }
  if (n % 4 == 1 || (pad > 0 && (n + pad) % 4 != 0)) return -1;
  if (n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap) return -1;
  for (size_t i = 0; i < n; i++) {
    int v = hookd_base64_value((unsigned char)in.p[i]);
    if (v < 0) return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
    }
  }
  *outlen = o;
  return 0;
}

/* ---- request helpers -------------------------------------------------- */

/* Optional whitespace around a header value is not part of it (RFC 9110). */
static span trim(const char *p, size_t n) {
  while (n > 0 && (*p == ' ' || *p == '\t')) {
    p++;
    n--;
  }
  while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
  return (span){p, n};
}

static int get_header(const verify_input *in, const char *name, span *out) {
  size_t len = 0;
  const char *v;
  if (!name) return -1;
  v = in->header(in->ctx, name, &len);
  if (!v) return -1;
  *out = trim(v, len);
  return 0;
}

/* ---- schemes ---------------------------------------------------------- */

/* Decimal seconds only: a sign, fraction or exponent is not a timestamp. */
static int parse_timestamp(span s, int64_t *out) {
  int64_t v = 0;
  /* 18 digits cannot overflow int64 and cover any plausible time. */
  if (s.n == 0 || s.n > 18) return -1;
  for (size_t i = 0; i < s.n; i++) {
    if (s.p[i] < '0' || s.p[i] > '9') return -1;
    v = v * 10 + (s.p[i] - '0');
  }
  *out = v;
  return 0;
}

static int within_tolerance(int64_t ts, int64_t now, uint32_t tol) {
  /* Unsigned difference of the larger minus the smaller is exact and
   * cannot overflow, whatever the two values are. */
  uint64_t d = ts > now ? (uint64_t)ts - (uint64_t)now : (uint64_t)now - (uint64_t)ts;
  return d <= tol;
}

static int span_is(span s, const char *lit) {
  size_t n = strlen(lit);
  return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* Decodes one signature (after the configured prefix) into out. Returns 0
 * when it decodes to exactly the digest's length: a short signature must
 * not pass as a prefix match. */
static int decode_signature(const verify_config *cfg, span sig, unsigned char out[MAX_DECODED]) {
  size_t len = 0, plen = cfg->prefix ? strlen(cfg->prefix) : 0;
  if (plen > 0) {
    if (sig.n < plen || memcmp(sig.p, cfg->prefix, plen) != 0) return -1;
    sig.p += plen;
    sig.n -= plen;
  }
  if (cfg->encoding == VERIFY_HEX) {
    if (hex_decode(sig, out, MAX_DECODED, &len) != 0) return -1;
  } else if (cfg->encoding == VERIFY_BASE64) {
    if (base64_decode(sig, out, MAX_DECODED, &len) != 0) return -1;
  } else {
    return -1;
  }
  return len == digest_lens[cfg->algorithm] ? 0 : -1;
}

/* Splits a "t=1492774577,v1=5257a8...,v1=..." header (Calendly, Stripe):
 * comma-separated key=value items. The timestamp item must appear at most
 * once (two would leave it open which one is signed); every signature item
 * is a candidate; other keys (a sender's v0 test signature) are skipped.
 * Returns 0 or -1 when malformed. */
static int parse_kv_header(const verify_config *cfg, span h, span *ts, int *have_ts, span *sigs,
                           size_t *n_sigs) {
  size_t pos = 0;
  *have_ts = 0;
  *n_sigs = 0;
  while (pos <= h.n) {
    size_t start = pos;
    while (pos < h.n && h.p[pos] != ',') pos++;
    span item = trim(h.p + start, pos - start);
    pos++; /* past the comma (or the end) */
    if (item.n == 0) continue;
    const char *eq = memchr(item.p, '=', item.n);
    if (!eq) return -1;
    span key = trim(item.p, (size_t)(eq - item.p));
    span val = trim(eq + 1, item.n - (size_t)(eq - item.p) - 1);
    if (cfg->timestamp_key && span_is(key, cfg->timestamp_key)) {
      if (*have_ts) return -1;
      *ts = val;
      *have_ts = 1;
    } else if (cfg->signature_key && span_is(key, cfg->signature_key)) {
      if (*n_sigs == MAX_CANDIDATES) return -1;
      sigs[(*n_sigs)++] = val;
    }
  }
  return *n_sigs > 0 ? 0 : -1;
}

static int verify_hmac(const verify_config *cfg, const verify_input *in) {
  span hdr, ts = {NULL, 0}, sigs[MAX_CANDIDATES];
  span parts[MAX_PAYLOAD_PARTS];
  unsigned char want[MAX_CANDIDATES][MAX_DECODED], got[MAX_DIGEST];
  size_t n_sigs = 0, n_want = 0, n_parts = 0;
  int have_ts = 0, needs_ts = 0, rc = -1;

  if ((unsigned)cfg->algorithm > VERIFY_SHA512) return -1;
  if (get_header(in, cfg->header, &hdr) != 0) return -1;
  if (cfg->timestamp_key || cfg->signature_key) {
    if (parse_kv_header(cfg, hdr, &ts, &have_ts, sigs, &n_sigs) != 0) return -1;
  } else {
    sigs[0] = hdr;
    n_sigs = 1;
  }
  if (cfg->timestamp_header) {
    if (get_header(in, cfg->timestamp_header, &ts) != 0) return -1;
    have_ts = 1;
  }

  /* The bytes the MAC covers: the body, or the signed_payload pieces. */
  if (cfg->n_payload == 0) {
    parts[n_parts++] = (span){in->body, in->body_len};
  } else {
    if (cfg->n_payload > MAX_PAYLOAD_PARTS) return -1;
    for (size_t i = 0; i < cfg->n_payload; i++) {
      const verify_part *p = &cfg->payload[i];
      if (p->kind == VERIFY_PART_TIMESTAMP) {
        needs_ts = 1;
        parts[n_parts++] = ts;
      } else if (p->kind == VERIFY_PART_BODY) {
        parts[n_parts++] = (span){in->body, in->body_len};
      } else {
        parts[n_parts++] = (span){p->text, p->len};
      }
    }
  }
  if (needs_ts || have_ts) {
    int64_t t;
    /* A signed timestamp out of tolerance is a replay: refused before any
     * MAC is computed. */
    if (!have_ts || parse_timestamp(ts, &t) != 0 ||
        !within_tolerance(t, in->now_s, cfg->tolerance_s))
      return -1;
  }
  for (size_t i = 0; i < n_sigs; i++) {
    if (decode_signature(cfg, sigs[i], want[n_want]) == 0) n_want++;
  }
  if (n_want == 0) return -1;

  size_t dlen = digest_lens[cfg->algorithm];
  for (size_t i = 0; i < cfg->n_secrets && rc != 0; i++) {
    if (mac_compute(cfg->algorithm, &cfg->secrets[i], parts, n_parts, got) != 0) continue;
    for (size_t j = 0; j < n_want; j++) {
      if (CRYPTO_memcmp(got, want[j], dlen) == 0) rc = 0;
    }
  }
  OPENSSL_cleanse(got, sizeof got);
  return rc;
}

/* Does one "v1,<base64>" entry of webhook-signature carry this digest? */
static int stdwh_entry_matches(span e, const unsigned char mac[SHA256_LEN]) {
  unsigned char want[MAX_DECODED];
  size_t want_len = 0;
  /* Other versions (v1a is an asymmetric signature) are skipped, not errors,
   * so a sender can publish several kinds side by side. */
  if (e.n < 3 || memcmp(e.p, "v1,", 3) != 0) return 0;
  e.p += 3;
  e.n -= 3;
  if (base64_decode(e, want, sizeof want, &want_len) != 0 || want_len != SHA256_LEN) return 0;
  return CRYPTO_memcmp(want, mac, SHA256_LEN) == 0;
}

static int verify_standard_webhooks(const verify_config *cfg, const verify_input *in) {
  span id, ts, sigs;
  int64_t t;
  unsigned char mac[MAX_DIGEST];
  int rc = -1;

  /* Svix sends the same scheme under its own names; the standard's names
   * win when a signature is there under them. */
  const char *pre = get_header(in, "webhook-signature", &sigs) == 0 ? "webhook" : "svix";
  char n_id[16], n_ts[24], n_sig[24];
  snprintf(n_id, sizeof n_id, "%s-id", pre);
  snprintf(n_ts, sizeof n_ts, "%s-timestamp", pre);
  snprintf(n_sig, sizeof n_sig, "%s-signature", pre);
  if (get_header(in, n_id, &id) != 0 || get_header(in, n_ts, &ts) != 0 ||
      get_header(in, n_sig, &sigs) != 0)
    return -1;
  if (id.n == 0 || parse_timestamp(ts, &t) != 0) return -1;
  /* The timestamp is signed too, so checking it first is safe and spares
   * the HMAC for replays. */
  if (!within_tolerance(t, in->now_s, cfg->tolerance_s)) return -1;

  span parts[5] = {id, {".", 1}, ts, {".", 1}, {in->body, in->body_len}};
  for (size_t i = 0; i < cfg->n_secrets && rc != 0; i++) {
    if (mac_compute(VERIFY_SHA256, &cfg->secrets[i], parts, 5, mac) != 0) continue;
    size_t pos = 0;
    while (pos < sigs.n && rc != 0) {
      while (pos < sigs.n && (sigs.p[pos] == ' ' || sigs.p[pos] == '\t')) pos++;
      size_t start = pos;
      while (pos < sigs.n && sigs.p[pos] != ' ' && sigs.p[pos] != '\t') pos++;
      if (pos > start && stdwh_entry_matches((span){sigs.p + start, pos - start}, mac)) rc = 0;
    }
  }
  OPENSSL_cleanse(mac, sizeof mac);
  return rc;
}

static int verify_token(const verify_config *cfg, const verify_input *in) {
  span tok;
  unsigned char got[SHA256_LEN], want[SHA256_LEN];
  int match = 0;

  if (get_header(in, cfg->header, &tok) != 0 || tok.n == 0) return -1;
  /* Comparing fixed-size digests instead of the strings keeps the token's
   * length out of the timing. */
  if (sha256_compute(tok.p, tok.n, got) != 0) return -1;
  /* Every secret is tried, with no early exit, so the timing does not tell
   * which one (the old or the new) was presented. */
  for (size_t i = 0; i < cfg->n_secrets; i++) {
    const verify_secret *s = &cfg->secrets[i];
    if (!s->key || s->len == 0 || sha256_compute(s->key, s->len, want) != 0) continue;
    match |= CRYPTO_memcmp(got, want, SHA256_LEN) == 0;
  }
  OPENSSL_cleanse(want, sizeof want);
  return match ? 0 : -1;
}

/* Authorization: Basic base64(user:password) (RFC 7617). Compared as
 * SHA-256 digests, like token, so lengths stay out of the timing, and every
 * password is tried. */
static int verify_basic(const verify_config *cfg, const verify_input *in) {
  span h, cred;
  unsigned char buf[MAX_BASIC_CREDENTIALS], got[SHA256_LEN], want[SHA256_LEN];
  size_t len = 0;
  int match = 0;

  if (!cfg->username || get_header(in, "Authorization", &h) != 0) return -1;
  if (h.n < 6 || strncasecmp(h.p, "Basic", 5) != 0 || (h.p[5] != ' ' && h.p[5] != '\t')) return -1;
  cred = trim(h.p + 6, h.n - 6);
  if (cred.n == 0 || base64_decode(cred, buf, sizeof buf, &len) != 0) return -1;
  if (sha256_compute(buf, len, got) != 0) {
    OPENSSL_cleanse(buf, sizeof buf);
    return -1;
  }
  OPENSSL_cleanse(buf, sizeof buf);
  span user = {cfg->username, strlen(cfg->username)};
  for (size_t i = 0; i < cfg->n_secrets; i++) {
    const verify_secret *s = &cfg->secrets[i];
    if (!s->key || s->len == 0) continue;
    span parts[3] = {user, {":", 1}, {(const char *)s->key, s->len}};
    if (sha256_parts(parts, 3, want) != 0) continue;
    match |= CRYPTO_memcmp(got, want, SHA256_LEN) == 0;
  }
  OPENSSL_cleanse(want, sizeof want);
  return match ? 0 : -1;
}

/* ---- public ----------------------------------------------------------- */

int verify_scheme_parse(const char *s, verify_scheme *out) {
  static const struct {
    const char *name;
    verify_scheme v;
  } names[] = {{"hmac", VERIFY_HMAC},
               {"standard-webhooks", VERIFY_STANDARD_WEBHOOKS},
               {"token", VERIFY_TOKEN},
               {"basic", VERIFY_BASIC},
               {"none", VERIFY_NONE}};
  if (!s || !out) return -1;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (strcmp(s, names[i].name) == 0) {
      *out = names[i].v;
      return 0;
    }
  }
  return -1;
}

int verify_algorithm_parse(const char *s, verify_algorithm *out) {
  static const char *const names[] = {"sha1", "sha256", "sha512"};
  if (!s || !out) return -1;
  for (size_t i = 0; i < 3; i++) {
    if (strcmp(s, names[i]) == 0) {
      *out = (verify_algorithm)i; /* names[] follows the enum order */
      return 0;
    }
  }
  return -1;
}

int verify_encoding_parse(const char *s, verify_encoding *out) {
  if (!s || !out) return -1;
  if (strcmp(s, "hex") == 0) {
    *out = VERIFY_HEX;
  } else if (strcmp(s, "base64") == 0) {
    *out = VERIFY_BASE64;
  } else {
    return -1;
  }
  return 0;
}

/* The reason never quotes the secret: config errors end up in logs. */
static int secret_fail(char *err, size_t errlen, const char *why) {
  if (err && errlen > 0) snprintf(err, errlen, "%s", why);
  return -1;
}

int verify_secret_set(verify_scheme scheme, const char *text, verify_secret *out, char *err,
                      size_t errlen) {
  size_t n;
  unsigned char *key;

  if (!out) return secret_fail(err, errlen, "no place to store the secret");
  out->key = NULL;
  out->len = 0;
  if (!text) return secret_fail(err, errlen, "secret is missing");
  n = strlen(text);
  if (n == 0) return secret_fail(err, errlen, "secret is empty");

  if (scheme == VERIFY_STANDARD_WEBHOOKS) {
    span b64 = {text, n};
    size_t len = 0;
    if (strncmp(text, WHSEC_PREFIX, strlen(WHSEC_PREFIX)) == 0) {
      b64.p += strlen(WHSEC_PREFIX);
      b64.n -= strlen(WHSEC_PREFIX);
    }
    key = malloc(b64.n / 4 * 3 + 3);
    if (!key) return secret_fail(err, errlen, "out of memory");
    if (base64_decode(b64, key, b64.n / 4 * 3 + 3, &len) != 0 || len == 0) {
      OPENSSL_cleanse(key, b64.n / 4 * 3 + 3);
      free(key);
      return secret_fail(err, errlen, "standard-webhooks secret must be whsec_ followed by base64");
    }
    out->key = key;
    out->len = len;
    return 0;
  }

  key = malloc(n);
  if (!key) return secret_fail(err, errlen, "out of memory");
  memcpy(key, text, n);
  out->key = key;
  out->len = n;
  return 0;
}

int verify_request(const verify_config *cfg, const verify_input *in) {
  if (!cfg) return -1;
  if (cfg->scheme == VERIFY_NONE) return 0;
  if (!in || !in->header || (!in->body && in->body_len > 0)) return -1;
  switch (cfg->scheme) {
    case VERIFY_HMAC:
      return verify_hmac(cfg, in);
    case VERIFY_STANDARD_WEBHOOKS:
      return verify_standard_webhooks(cfg, in);
    case VERIFY_TOKEN:
      return verify_token(cfg, in);
    case VERIFY_BASIC:
      return verify_basic(cfg, in);
    default:
      return -1;
  }
}

int verify_hmac_sha256_hex(const verify_secret *secret, const char *data, size_t len,
                           char out[65]) {
  static const char digits[] = "0123456789abcdef";
  unsigned char mac[MAX_DIGEST];
  span one = {data, len};
  if (!secret || mac_compute(VERIFY_SHA256, secret, &one, 1, mac) != 0) return -1;
  for (size_t i = 0; i < SHA256_LEN; i++) {
    out[2 * i] = digits[mac[i] >> 4];
    out[2 * i + 1] = digits[mac[i] & 15];
  }
  out[64] = '\0';
  OPENSSL_cleanse(mac, sizeof mac);
  return 0;
}

static int check_fail(char *err, size_t errlen, const char *why) {
  if (err && errlen > 0) snprintf(err, errlen, "%s", why);
  return -1;
}

static int is_name_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '_' || ch == '-';
}

static void payload_free(verify_config *cfg) {
  for (size_t i = 0; i < cfg->n_payload; i++) free(cfg->payload[i].text);
  free(cfg->payload);
  cfg->payload = NULL;
  cfg->n_payload = 0;
}

int verify_payload_parse(verify_config *cfg, const char *tmpl, char *err, size_t errlen) {
  verify_part parts[MAX_PAYLOAD_PARTS];
  size_t n = 0, n_body = 0;
  const char *p = tmpl, *lit = tmpl;

  if (!cfg || !tmpl) return check_fail(err, errlen, "signed_payload is missing");
  for (;;) {
    /* A "{name}" is a placeholder; any other '{' is literal text. */
    const char *open = strchr(p, '{');
    const char *close = NULL;
    if (open) {
      const char *q = open + 1;
      while (is_name_char(*q)) q++;
      if (*q == '}' && q > open + 1) close = q;
    }
    if (open && !close) {
      p = open + 1;
      continue;
    }
    const char *lit_end = open ? open : p + strlen(p);
    if (lit_end > lit) {
      if (n == MAX_PAYLOAD_PARTS) goto too_many;
      size_t len = (size_t)(lit_end - lit);
      char *t = malloc(len + 1);
      if (!t) goto oom;
      memcpy(t, lit, len);
      t[len] = '\0';
      parts[n++] = (verify_part){VERIFY_PART_TEXT, t, len};
    }
    if (!open) break;
    size_t nl = (size_t)(close - open - 1);
    verify_part_kind kind;
    if (nl == 9 && memcmp(open + 1, "timestamp", 9) == 0) {
      kind = VERIFY_PART_TIMESTAMP;
    } else if (nl == 4 && memcmp(open + 1, "body", 4) == 0) {
      kind = VERIFY_PART_BODY;
      n_body++;
    } else {
      char msg[160];
      snprintf(msg, sizeof msg, "unknown placeholder '{%.*s}' (use {timestamp} and {body})",
               (int)(nl > 40 ? 40 : nl), open + 1);
      for (size_t i = 0; i < n; i++) free(parts[i].text);
      return check_fail(err, errlen, msg);
    }
    if (n == MAX_PAYLOAD_PARTS) goto too_many;
    parts[n++] = (verify_part){kind, NULL, 0};
    p = lit = close + 1;
  }
  if (n_body != 1) {
    for (size_t i = 0; i < n; i++) free(parts[i].text);
    return check_fail(err, errlen, "signed_payload must contain {body} exactly once");
  }
  verify_part *out = malloc(n * sizeof *out);
  if (!out) goto oom;
  memcpy(out, parts, n * sizeof *out);
  payload_free(cfg);
  cfg->payload = out;
  cfg->n_payload = n;
  return 0;

too_many:
  for (size_t i = 0; i < n; i++) free(parts[i].text);
  return check_fail(err, errlen, "signed_payload has too many pieces");
oom:
  for (size_t i = 0; i < n; i++) free(parts[i].text);
  return check_fail(err, errlen, "out of memory");
}

int verify_config_check(const verify_config *cfg, char *err, size_t errlen) {
  if (!cfg) return check_fail(err, errlen, "no verify settings");
  if (cfg->scheme == VERIFY_HMAC) {
    int uses_ts = 0;
    for (size_t i = 0; i < cfg->n_payload; i++)
      uses_ts |= cfg->payload[i].kind == VERIFY_PART_TIMESTAMP;
    int has_ts = cfg->timestamp_header != NULL || cfg->timestamp_key != NULL;
    if (cfg->timestamp_header && cfg->timestamp_key)
      return check_fail(err, errlen, "give either timestamp_header or timestamp_key, not both");
    if (cfg->timestamp_key && !cfg->signature_key)
      return check_fail(err, errlen, "timestamp_key needs signature_key (e.g. \"t\" and \"v1\")");
    if (uses_ts && !has_ts)
      return check_fail(err, errlen,
                        "signed_payload uses {timestamp}: set timestamp_header or timestamp_key");
    if (has_ts && !uses_ts)
      return check_fail(err, errlen,
                        "the timestamp must be signed: put {timestamp} in signed_payload "
                        "(e.g. \"{timestamp}.{body}\")");
  } else if (cfg->scheme == VERIFY_BASIC) {
    if (!cfg->username || !*cfg->username) return check_fail(err, errlen, "basic needs a username");
    for (const char *q = cfg->username; *q; q++) {
      if (*q == ':' || (unsigned char)*q < 0x20 || *q == 0x7f)
        return check_fail(err, errlen, "username must not contain ':' or control characters");
    }
  }
  return 0;
}

void verify_config_clear(verify_config *cfg) {
  if (!cfg) return;
  free(cfg->header);
  free(cfg->prefix);
  free(cfg->timestamp_header);
  free(cfg->timestamp_key);
  free(cfg->signature_key);
  free(cfg->username);
  payload_free(cfg);
  for (size_t i = 0; i < cfg->n_secrets; i++) {
    /* Key bytes are wiped so a freed block does not keep them around. */
    if (cfg->secrets[i].key) OPENSSL_cleanse(cfg->secrets[i].key, cfg->secrets[i].len);
    free(cfg->secrets[i].key);
  }
  free(cfg->secrets);
  /* The scheme is kept: a cleared hmac/token config has no secrets and so
   * refuses everything, where zeroing it would turn it into "none". */
  cfg->header = NULL;
  cfg->prefix = NULL;
  cfg->timestamp_header = NULL;
  cfg->timestamp_key = NULL;
  cfg->signature_key = NULL;
  cfg->username = NULL;
  cfg->secrets = NULL;
  cfg->n_secrets = 0;
}
