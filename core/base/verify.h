/* Signature verification on the raw request bytes: hmac (optionally timestamped),
 * standard-webhooks, token, basic, none. */
#ifndef HOOKD_VERIFY_H
#define HOOKD_VERIFY_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  VERIFY_NONE = 0,
  VERIFY_HMAC,              /* HMAC of the body (or of signed_payload) in a header */
  VERIFY_STANDARD_WEBHOOKS, /* webhook-id / webhook-timestamp / webhook-signature */
  VERIFY_TOKEN,             /* shared secret sent as it is in a header */
  VERIFY_BASIC              /* Authorization: Basic, one user name, passwords as secrets */
} verify_scheme;

typedef enum { VERIFY_SHA1 = 0, VERIFY_SHA256, VERIFY_SHA512 } verify_algorithm;
typedef enum { VERIFY_HEX = 0, VERIFY_BASE64 } verify_encoding;

/* A secret as raw key bytes (for standard-webhooks, the base64 after
 * "whsec_" already decoded). */
typedef struct verify_secret {
  unsigned char *key;
  size_t len;
} verify_secret;

/* One piece of an hmac signed_payload template such as "v0:{timestamp}:{body}". */
typedef enum { VERIFY_PART_TEXT = 0, VERIFY_PART_TIMESTAMP, VERIFY_PART_BODY } verify_part_kind;
typedef struct verify_part {
  verify_part_kind kind;
  char *text; /* VERIFY_PART_TEXT: the literal (owned), else NULL */
  size_t len;
} verify_part;

/* One source's verification settings. Built by config.c, read-only after. */
typedef struct verify_config {
  verify_scheme scheme;
  verify_algorithm algorithm; /* hmac */
  verify_encoding encoding;   /* hmac */
  char *header;               /* hmac: signature header; token: token header */
  char *prefix;               /* hmac: text before the signature, e.g. "sha256=" ("" none) */
  verify_secret *secrets;     /* tried in order (key rotation) */
  size_t n_secrets;
  uint32_t tolerance_s; /* standard-webhooks, timestamped hmac: allowed clock skew, default 300 */
  /* hmac with a timestamp (all NULL/0: the MAC covers the body alone). The
   * timestamp is read from timestamp_header (Zoom, Slack), or, with
   * timestamp_key, from a "t=...,v1=..." list in `header` whose signature
   * entries are named signature_key (Calendly, Stripe). */
  char *timestamp_header;
  char *timestamp_key;
  char *signature_key;
  verify_part *payload; /* signed_payload, compiled; NULL means "{body}" */
  size_t n_payload;
  char *username; /* basic */
} verify_config;

/* Access to the request, so verify needs no HTTP types. header() returns the
 * value of the named header (case-insensitive) or NULL, with its length in
 * *len. */
typedef struct verify_input {
  const char *(*header)(void *ctx, const char *name, size_t *len);
  void *ctx;
  const char *body;
  size_t body_len;
  int64_t now_s; /* current Unix time, for timestamp tolerance */
} verify_input;

/* Parses a scheme/algorithm/encoding name. Return 0, or -1 when unknown. */
int verify_scheme_parse(const char *s, verify_scheme *out);
int verify_algorithm_parse(const char *s, verify_algorithm *out);
int verify_encoding_parse(const char *s, verify_encoding *out);

/* Decodes one configured secret string into key bytes per scheme (the
 * "whsec_" base64 form for standard-webhooks; the bytes as they are
 * otherwise). Returns 0 or -1 with a reason in err. */
int verify_secret_set(verify_scheme scheme, const char *text, verify_secret *out, char *err,
                      size_t errlen);

/* Compiles an hmac signed_payload template into cfg->payload: literal text
 * with the placeholders {timestamp} and {body} ({body} exactly once). Any
 * other "{name}" is an error (a typo would silently sign something else).
 * Returns 0 or -1 with a reason in err. */
int verify_payload_parse(verify_config *cfg, const char *tmpl, char *err, size_t errlen);

/* Checks that the settings of an hmac or basic config fit together (a
 * timestamp header needs {timestamp} in signed_payload and the reverse;
 * signature_key comes with timestamp_key; basic needs a user name without
 * ':'). Returns 0 or -1 with a reason in err. */
int verify_config_check(const verify_config *cfg, char *err, size_t errlen);

/* Checks the request. Returns 0 when one secret matches, -1 otherwise (missing
 * header, bad encoding, wrong signature, timestamp out of tolerance). Every
 * comparison is constant-time (CRYPTO_memcmp). Thread-safe. */
int verify_request(const verify_config *cfg, const verify_input *in);

/* Lowercase hex of HMAC-SHA256(secret, data) into out (65 bytes with the
 * NUL), for answers that prove the secret (Zoom's url_validation). Returns 0
 * or -1. Thread-safe. */
int verify_hmac_sha256_hex(const verify_secret *secret, const char *data, size_t len, char out[65]);

/* Frees what verify_config holds (not the struct itself). */
void verify_config_clear(verify_config *cfg);

#endif
