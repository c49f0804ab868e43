/* Signature verification on the raw request bytes: hmac, standard-webhooks, token, none. */
#ifndef HOOKD_VERIFY_H
#define HOOKD_VERIFY_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  VERIFY_NONE = 0,
  VERIFY_HMAC,              /* HMAC of the body (or of signed_payload) in a header */
  VERIFY_STANDARD_WEBHOOKS, /* webhook-id / webhook-timestamp / webhook-signature */
  VERIFY_TOKEN              /* shared secret sent as it is in a header */
} verify_scheme;

typedef enum { VERIFY_SHA1 = 0, VERIFY_SHA256, VERIFY_SHA512 } verify_algorithm;
typedef enum { VERIFY_HEX = 0, VERIFY_BASE64 } verify_encoding;

/* A secret as raw key bytes (for standard-webhooks, the base64 after
 * "whsec_" already decoded). */
typedef struct verify_secret {
  unsigned char *key;
  size_t len;
} verify_secret;

/* One source's verification settings. Built by config.c, read-only after. */
typedef struct verify_config {
  verify_scheme scheme;
  verify_algorithm algorithm; /* hmac */
  verify_encoding encoding;   /* hmac */
  char *header;               /* hmac: signature header; token: token header */
  char *prefix;               /* hmac: text before the signature, e.g. "sha256=" ("" none) */
  verify_secret *secrets;     /* tried in order (key rotation) */
  size_t n_secrets;
  uint32_t tolerance_s;       /* standard-webhooks: allowed clock skew, default 300 */
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

/* Checks the request. Returns 0 when one secret matches, -1 otherwise (missing
 * header, bad encoding, wrong signature, timestamp out of tolerance). Every
 * comparison is constant-time (CRYPTO_memcmp). Thread-safe. */
int verify_request(const verify_config *cfg, const verify_input *in);

/* Frees what verify_config holds (not the struct itself). */
void verify_config_clear(verify_config *cfg);

#endif
