/* Unit tests for core/base/verify.c against published vectors and openssl-dgst expectations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "verify.h"

/* GitHub's published X-Hub-Signature-256 example. */
#define GH_SECRET "It's a Secret to Everybody"
#define GH_BODY "Hello, World!"
#define GH_SIG256 "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
/* The same digest as base64 (xxd -r -p | base64 of the published hex). */
#define GH_SIG256_B64 "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc="
/* printf '%s' 'Hello, World!' | openssl dgst -sha1 -hmac "It's a Secret to Everybody" */
#define GH_SIG1_HEX "01dc10d0c83e72ed246219cdd91669667fe2ca59"
/* ... | openssl dgst -sha512 -hmac "It's a Secret to Everybody" -binary | base64 -w0 */
#define GH_SIG512_B64                                                                       \
  "Ee01WmF+mBNOhCASp5RMz1nBAlbLGCNXvX46QgE/8Hw3b4wUz1zBkj2iC1HWQlay+4678QCqZ6YTJvYf6oERvA=" \
  "="

/* The Standard Webhooks specification's example. */
#define SW_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SW_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SW_TS "1614265330"
#define SW_NOW INT64_C(1614265330)
#define SW_BODY "{\"test\": 2432232314}"
#define SW_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

/* ---- a fake request -------------------------------------------------- */

typedef struct fake_req {
  const char *names[4];
  const char *values[4];
  size_t n;
} fake_req;

static const char *fake_header(void *ctx, const char *name, size_t *len) {
  fake_req *r = ctx;
  for (size_t i = 0; i < r->n; i++) {
    if (strcasecmp(r->names[i], name) == 0) {
      *len = strlen(r->values[i]);
      return r->values[i];
    }
  }
  return NULL;
}

static void req_add(fake_req *r, const char *name, const char *value) {
  assert_true(r->n < 4);
  r->names[r->n] = name;
  r->values[r->n] = value;
  r->n++;
}

static verify_input make_input(fake_req *r, const char *body, int64_t now) {
  verify_input in = {fake_header, r, body, strlen(body), now};
  return in;
}

/* Builds a config the way config.c does: heap strings and secrets run
 * through verify_secret_set, so verify_config_clear frees all of it. */
static verify_config make_cfg(verify_scheme scheme, verify_algorithm alg, verify_encoding enc,
                              const char *header, const char *prefix, const char *const *secrets,
                              size_t n_secrets) {
  verify_config cfg = {0};
  char err[128];
  cfg.scheme = scheme;
  cfg.algorithm = alg;
  cfg.encoding = enc;
  cfg.header = header ? strdup(header) : NULL;
  cfg.prefix = prefix ? strdup(prefix) : NULL;
  cfg.tolerance_s = 300;
  cfg.secrets = calloc(n_secrets ? n_secrets : 1, sizeof *cfg.secrets);
  assert_non_null(cfg.secrets);
  for (size_t i = 0; i < n_secrets; i++) {
    assert_int_equal(verify_secret_set(scheme, secrets[i], &cfg.secrets[i], err, sizeof err), 0);
  }
  cfg.n_secrets = n_secrets;
  return cfg;
}

/* One-header hmac request: verify returns what the check gives. */
static int check_hmac(verify_algorithm alg, verify_encoding enc, const char *prefix,
                      const char *sig, const char *body) {
  static const char *const secrets[] = {GH_SECRET};
  verify_config cfg = make_cfg(VERIFY_HMAC, alg, enc, "X-Hub-Signature-256", prefix, secrets, 1);
  fake_req r = {0};
  if (sig) req_add(&r, "x-hub-signature-256", sig);
  verify_input in = make_input(&r, body, 0);
  int rc = verify_request(&cfg, &in);
  verify_config_clear(&cfg);
  return rc;
}

/* ---- hmac ------------------------------------------------------------ */

static void test_github_vector(void **state) {
  (void)state;
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", GH_SIG256, GH_BODY), 0);
}

static void test_github_tampered_body(void **state) {
  (void)state;
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", GH_SIG256, "Hello, World?"),
                   -1);
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", GH_SIG256, ""), -1);
}

static void test_hmac_uppercase_hex(void **state) {
  (void)state;
  assert_int_equal(
      check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=",
                 "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
                 GH_BODY),
      0);
}

static void test_hmac_surrounding_whitespace(void **state) {
  (void)state;
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", " " GH_SIG256 "\t", GH_BODY),
                   0);
}

static void test_hmac_sha1_hex(void **state) {
  (void)state;
  assert_int_equal(check_hmac(VERIFY_SHA1, VERIFY_HEX, "sha1=", "sha1=" GH_SIG1_HEX, GH_BODY), 0);
  assert_int_equal(check_hmac(VERIFY_SHA1, VERIFY_HEX, "", GH_SIG1_HEX, GH_BODY), 0);
  assert_int_equal(check_hmac(VERIFY_SHA1, VERIFY_HEX, "", GH_SIG1_HEX, "Hello, World"), -1);
}

static void test_hmac_sha512_base64(void **state) {
  (void)state;
  assert_int_equal(check_hmac(VERIFY_SHA512, VERIFY_BASE64, "", GH_SIG512_B64, GH_BODY), 0);
  /* The same signature with its padding dropped. */
  char unpadded[] = GH_SIG512_B64;
  unpadded[strlen(unpadded) - 2] = '\0';
  assert_int_equal(check_hmac(VERIFY_SHA512, VERIFY_BASE64, "", unpadded, GH_BODY), 0);
  assert_int_equal(check_hmac(VERIFY_SHA512, VERIFY_BASE64, "", GH_SIG512_B64, "x"), -1);
}

static void test_hmac_sha256_base64(void **state) {
  (void)state;
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_BASE64, NULL, GH_SIG256_B64, GH_BODY), 0);
  assert_int_equal(
      check_hmac(VERIFY_SHA256, VERIFY_BASE64, "sha256=", "sha256=" GH_SIG256_B64, GH_BODY), 0);
}

static void test_hmac_bad_base64(void **state) {
  (void)state;
  /* URL-safe alphabet, a stray character, and broken padding. */
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_BASE64, "",
                              "dXEH6g6yUJ_CESIczphLijdXC211hsIsRvQ3nIsEPhc=", GH_BODY),
                   -1);
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_BASE64, "",
                              "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPh!=", GH_BODY),
                   -1);
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_BASE64, "",
                              "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc==", GH_BODY),
                   -1);
}

static void test_hmac_key_rotation(void **state) {
  (void)state;
  static const char *const old_new[] = {"the old secret", GH_SECRET};
  static const char *const new_old[] = {GH_SECRET, "the old secret"};
  static const char *const wrong[] = {"the old secret", "another"};
  fake_req r = {0};
  req_add(&r, "X-Hub-Signature-256", GH_SIG256);
  verify_input in = make_input(&r, GH_BODY, 0);

  verify_config cfg = make_cfg(VERIFY_HMAC, VERIFY_SHA256, VERIFY_HEX, "X-Hub-Signature-256",
                               "sha256=", old_new, 2);
  assert_int_equal(verify_request(&cfg, &in), 0);
  verify_config_clear(&cfg);

  cfg = make_cfg(VERIFY_HMAC, VERIFY_SHA256, VERIFY_HEX, "X-Hub-Signature-256", "sha256=", new_old,
                 2);
  assert_int_equal(verify_request(&cfg, &in), 0);
  verify_config_clear(&cfg);

  cfg =
      make_cfg(VERIFY_HMAC, VERIFY_SHA256, VERIFY_HEX, "X-Hub-Signature-256", "sha256=", wrong, 2);
  assert_int_equal(verify_request(&cfg, &in), -1);
  verify_config_clear(&cfg);
}

static void test_hmac_missing_header(void **state) {
  (void)state;
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", NULL, GH_BODY), -1);
}

static void test_hmac_wrong_prefix(void **state) {
  (void)state;
  static const char *const hex = GH_SIG256 + 7;
  /* Configured prefix absent, or a different one: refused. */
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", hex, GH_BODY), -1);
  char other[128] = "sha1=";
  strcat(other, hex);
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", other, GH_BODY), -1);
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "SHA256=", GH_SIG256, GH_BODY), -1);
  /* No prefix configured but one is sent: the prefix is not hex. */
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "", GH_SIG256, GH_BODY), -1);
  /* The prefix alone. */
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", "sha256=", GH_BODY), -1);
}

static void test_hmac_bad_hex(void **state) {
  (void)state;
  assert_int_equal(
      check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=",
                 "sha256=g57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
                 GH_BODY),
      -1);
  /* Odd length. */
  assert_int_equal(
      check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=",
                 "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1", GH_BODY),
      -1);
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", "sha256= 757107ea", GH_BODY),
                   -1);
}

static void test_hmac_wrong_length(void **state) {
  (void)state;
  /* A correct but truncated digest must not pass as a prefix match. */
  assert_int_equal(
      check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=",
                 "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e", GH_BODY),
      -1);
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "", "", GH_BODY), -1);
  /* A sha256 signature where sha1 is configured, and the reverse. */
  assert_int_equal(check_hmac(VERIFY_SHA1, VERIFY_HEX, "sha256=", GH_SIG256, GH_BODY), -1);
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "", GH_SIG1_HEX, GH_BODY), -1);
  /* Too long for the decode buffer: refused, not overflowed. */
  char big[600];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "", big, GH_BODY), -1);
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_BASE64, "", big, GH_BODY), -1);
  /* The right digest followed by extra bytes. */
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", GH_SIG256 "00", GH_BODY), -1);
}

static void test_hmac_no_secrets(void **state) {
  (void)state;
  verify_config cfg =
      make_cfg(VERIFY_HMAC, VERIFY_SHA256, VERIFY_HEX, "X-Hub-Signature-256", "sha256=", NULL, 0);
  fake_req r = {0};
  req_add(&r, "X-Hub-Signature-256", GH_SIG256);
  verify_input in = make_input(&r, GH_BODY, 0);
  assert_int_equal(verify_request(&cfg, &in), -1);
  verify_config_clear(&cfg);
}

/* A per-thread MAC context remembers its last key; an unset secret must not
 * silently reuse the key of the request verified before it. */
static void test_hmac_unset_secret_does_not_reuse_key(void **state) {
  (void)state;
  assert_int_equal(check_hmac(VERIFY_SHA256, VERIFY_HEX, "sha256=", GH_SIG256, GH_BODY), 0);
  verify_secret unset = {NULL, 0};
  verify_config cfg = {.scheme = VERIFY_HMAC,
                       .algorithm = VERIFY_SHA256,
                       .encoding = VERIFY_HEX,
                       .header = "X-Hub-Signature-256",
                       .prefix = "sha256=",
                       .secrets = &unset,
                       .n_secrets = 1};
  fake_req r = {0};
  req_add(&r, "X-Hub-Signature-256", GH_SIG256);
  verify_input in = make_input(&r, GH_BODY, 0);
  assert_int_equal(verify_request(&cfg, &in), -1);
}

static void test_cleared_config_refuses(void **state) {
  (void)state;
  static const char *const secrets[] = {GH_SECRET};
  verify_config cfg = make_cfg(VERIFY_HMAC, VERIFY_SHA256, VERIFY_HEX, "X-Hub-Signature-256",
                               "sha256=", secrets, 1);
  fake_req r = {0};
  req_add(&r, "X-Hub-Signature-256", GH_SIG256);
  verify_input in = make_input(&r, GH_BODY, 0);
  verify_config_clear(&cfg);
  assert_int_equal(cfg.scheme, VERIFY_HMAC);
  assert_int_equal(verify_request(&cfg, &in), -1);
  verify_config_clear(&cfg); /* twice is harmless */
}

/* ---- standard webhooks ---------------------------------------------- */

static int check_sw(const char *id, const char *ts, const char *sig, const char *body,
                    int64_t now) {
  static const char *const secrets[] = {SW_SECRET};
  verify_config cfg =
      make_cfg(VERIFY_STANDARD_WEBHOOKS, VERIFY_SHA256, VERIFY_BASE64, NULL, NULL, secrets, 1);
  fake_req r = {0};
  if (id) req_add(&r, "Webhook-Id", id);
  if (ts) req_add(&r, "Webhook-Timestamp", ts);
  if (sig) req_add(&r, "Webhook-Signature", sig);
  verify_input in = make_input(&r, body, now);
  int rc = verify_request(&cfg, &in);
  verify_config_clear(&cfg);
  return rc;
}

static void test_sw_vector_fixed_clock(void **state) {
  (void)state;
  assert_int_equal(check_sw(SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW), 0);
}

static void test_sw_vector_real_clock(void **state) {
  (void)state;
  assert_int_equal(check_sw(SW_ID, SW_TS, SW_SIG, SW_BODY, (int64_t)time(NULL)), -1);
}

static void test_sw_tolerance(void **state) {
  (void)state;
  assert_int_equal(check_sw(SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW + 300), 0);
  assert_int_equal(check_sw(SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW - 300), 0);
  assert_int_equal(check_sw(SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW + 301), -1);
  assert_int_equal(check_sw(SW_ID, SW_TS, SW_SIG, SW_BODY, SW_NOW - 301), -1);
  assert_int_equal(check_sw(SW_ID, SW_TS, SW_SIG, SW_BODY, INT64_MIN), -1);
  assert_int_equal(check_sw(SW_ID, SW_TS, SW_SIG, SW_BODY, INT64_MAX), -1);
}

static void test_sw_signature_list(void **state) {
  (void)state;
  const char *wrong = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=";
  char list[256];
  snprintf(list, sizeof list, "%s %s", wrong, SW_SIG);
  assert_int_equal(check_sw(SW_ID, SW_TS, list, SW_BODY, SW_NOW), 0);
  snprintf(list, sizeof list, "%s  %s", SW_SIG, wrong);
  assert_int_equal(check_sw(SW_ID, SW_TS, list, SW_BODY, SW_NOW), 0);
  /* Another version's entry is skipped, not fatal. */
  snprintf(list, sizeof list, "v1a,%s %s", "AAAA", SW_SIG);
  assert_int_equal(check_sw(SW_ID, SW_TS, list, SW_BODY, SW_NOW), 0);
  assert_int_equal(check_sw(SW_ID, SW_TS, wrong, SW_BODY, SW_NOW), -1);
  /* The right digest under another version tag does not count. */
  assert_int_equal(
      check_sw(SW_ID, SW_TS, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", SW_BODY, SW_NOW),
      -1);
  /* Unpadded base64 is accepted. */
  assert_int_equal(
      check_sw(SW_ID, SW_TS, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", SW_BODY, SW_NOW), 0);
}

static void test_sw_tampered(void **state) {
  (void)state;
  assert_int_equal(check_sw(SW_ID, SW_TS, SW_SIG, "{\"test\": 2432232315}", SW_NOW), -1);
  assert_int_equal(check_sw("msg_p5jXN8AQM9LWM0D4loKWxJeK", SW_TS, SW_SIG, SW_BODY, SW_NOW), -1);
  /* A timestamp that is still in tolerance but not the signed one. */
  assert_int_equal(check_sw(SW_ID, "1614265331", SW_SIG, SW_BODY, SW_NOW), -1);
}

static void test_sw_missing_or_bad_headers(void **state) {
  (void)state;
  assert_int_equal(check_sw(NULL, SW_TS, SW_SIG, SW_BODY, SW_NOW), -1);
  assert_int_equal(check_sw(SW_ID, NULL, SW_SIG, SW_BODY, SW_NOW), -1);
  assert_int_equal(check_sw(SW_ID, SW_TS, NULL, SW_BODY, SW_NOW), -1);
  assert_int_equal(check_sw("", SW_TS, SW_SIG, SW_BODY, SW_NOW), -1);
  assert_int_equal(check_sw(SW_ID, "", SW_SIG, SW_BODY, SW_NOW), -1);
  assert_int_equal(check_sw(SW_ID, "+1614265330", SW_SIG, SW_BODY, SW_NOW), -1);
  assert_int_equal(check_sw(SW_ID, "1614265330.0", SW_SIG, SW_BODY, SW_NOW), -1);
  assert_int_equal(check_sw(SW_ID, "99999999999999999999", SW_SIG, SW_BODY, SW_NOW), -1);
  assert_int_equal(check_sw(SW_ID, SW_TS, "", SW_BODY, SW_NOW), -1);
  assert_int_equal(check_sw(SW_ID, SW_TS, "v1,", SW_BODY, SW_NOW), -1);
}

static void test_sw_key_rotation(void **state) {
  (void)state;
  static const char *const secrets[] = {"whsec_c2Vjb25kIGtleSwgbm90IHRoZSByaWdodCBvbmU=",
                                        SW_SECRET};
  verify_config cfg =
      make_cfg(VERIFY_STANDARD_WEBHOOKS, VERIFY_SHA256, VERIFY_BASE64, NULL, NULL, secrets, 2);
  fake_req r = {0};
  req_add(&r, "webhook-id", SW_ID);
  req_add(&r, "webhook-timestamp", SW_TS);
  req_add(&r, "webhook-signature", SW_SIG);
  verify_input in = make_input(&r, SW_BODY, SW_NOW);
  assert_int_equal(verify_request(&cfg, &in), 0);
  verify_config_clear(&cfg);
}

/* ---- token and none ------------------------------------------------- */

static int check_token(const char *value) {
  static const char *const secrets[] = {"old-token-123", "s3cr3t-t0ken"};
  verify_config cfg =
      make_cfg(VERIFY_TOKEN, VERIFY_SHA256, VERIFY_HEX, "X-Webhook-Token", NULL, secrets, 2);
  fake_req r = {0};
  if (value) req_add(&r, "x-webhook-token", value);
  verify_input in = make_input(&r, "{}", 0);
  int rc = verify_request(&cfg, &in);
  verify_config_clear(&cfg);
  return rc;
}

static void test_token(void **state) {
  (void)state;
  assert_int_equal(check_token("s3cr3t-t0ken"), 0);
  assert_int_equal(check_token("old-token-123"), 0);
  assert_int_equal(check_token("s3cr3t-t0keN"), -1);
  assert_int_equal(check_token("s3cr3t-t0ke"), -1);
  assert_int_equal(check_token("s3cr3t-t0ken-and-more"), -1);
  assert_int_equal(check_token(""), -1);
  assert_int_equal(check_token(NULL), -1);
}

static void test_none(void **state) {
  (void)state;
  verify_config cfg = {.scheme = VERIFY_NONE};
  fake_req r = {0};
  verify_input in = make_input(&r, "anything", 0);
  assert_int_equal(verify_request(&cfg, &in), 0);
}

/* ---- parsing and secrets -------------------------------------------- */

static void test_parse(void **state) {
  (void)state;
  verify_scheme s;
  verify_algorithm a;
  verify_encoding e;
  assert_int_equal(verify_scheme_parse("hmac", &s), 0);
  assert_int_equal(s, VERIFY_HMAC);
  assert_int_equal(verify_scheme_parse("standard-webhooks", &s), 0);
  assert_int_equal(s, VERIFY_STANDARD_WEBHOOKS);
  assert_int_equal(verify_scheme_parse("token", &s), 0);
  assert_int_equal(s, VERIFY_TOKEN);
  assert_int_equal(verify_scheme_parse("none", &s), 0);
  assert_int_equal(s, VERIFY_NONE);
  assert_int_equal(verify_scheme_parse("HMAC", &s), -1);
  assert_int_equal(verify_scheme_parse("", &s), -1);
  assert_int_equal(verify_scheme_parse(NULL, &s), -1);

  assert_int_equal(verify_algorithm_parse("sha1", &a), 0);
  assert_int_equal(a, VERIFY_SHA1);
  assert_int_equal(verify_algorithm_parse("sha256", &a), 0);
  assert_int_equal(a, VERIFY_SHA256);
  assert_int_equal(verify_algorithm_parse("sha512", &a), 0);
  assert_int_equal(a, VERIFY_SHA512);
  assert_int_equal(verify_algorithm_parse("md5", &a), -1);
  assert_int_equal(verify_algorithm_parse("sha-256", &a), -1);

  assert_int_equal(verify_encoding_parse("hex", &e), 0);
  assert_int_equal(e, VERIFY_HEX);
  assert_int_equal(verify_encoding_parse("base64", &e), 0);
  assert_int_equal(e, VERIFY_BASE64);
  assert_int_equal(verify_encoding_parse("base64url", &e), -1);
}

static void test_secret_set(void **state) {
  (void)state;
  /* base64 -d of the spec's secret, through xxd -p. */
  static const unsigned char sw_key[] = {0x31, 0xf2, 0x90, 0xf6, 0xbf, 0x06, 0x29, 0x8a,
                                         0xab, 0x4f, 0x08, 0xd4, 0x3c, 0x3f, 0x08, 0x2c,
                                         0xf6, 0x48, 0xa3, 0x62, 0xda, 0x2d, 0xa4, 0xb0};
  verify_secret s;
  char err[128];

  assert_int_equal(verify_secret_set(VERIFY_STANDARD_WEBHOOKS, SW_SECRET, &s, err, sizeof err), 0);
  assert_int_equal(s.len, sizeof sw_key);
  assert_memory_equal(s.key, sw_key, sizeof sw_key);
  free(s.key);

  assert_int_equal(verify_secret_set(VERIFY_STANDARD_WEBHOOKS, SW_SECRET + 6, &s, err, sizeof err),
                   0);
  assert_int_equal(s.len, sizeof sw_key);
  assert_memory_equal(s.key, sw_key, sizeof sw_key);
  free(s.key);

  err[0] = '\0';
  assert_int_equal(
      verify_secret_set(VERIFY_STANDARD_WEBHOOKS, "whsec_!!notbase64", &s, err, sizeof err), -1);
  assert_null(s.key);
  assert_true(strlen(err) > 0);
  assert_null(strstr(err, "notbase64")); /* the secret is not echoed */
  assert_int_equal(verify_secret_set(VERIFY_STANDARD_WEBHOOKS, "whsec_", &s, err, sizeof err), -1);
  assert_int_equal(verify_secret_set(VERIFY_STANDARD_WEBHOOKS, "whsec_abcde", &s, err, sizeof err),
                   -1);
  assert_int_equal(verify_secret_set(VERIFY_HMAC, "", &s, err, sizeof err), -1);
  assert_int_equal(verify_secret_set(VERIFY_HMAC, NULL, &s, err, sizeof err), -1);
  assert_int_equal(verify_secret_set(VERIFY_HMAC, "x", &s, NULL, 0), 0);
  free(s.key);

  /* Other schemes keep the text as it is, "whsec_" included. */
  assert_int_equal(verify_secret_set(VERIFY_HMAC, SW_SECRET, &s, err, sizeof err), 0);
  assert_int_equal(s.len, strlen(SW_SECRET));
  assert_memory_equal(s.key, SW_SECRET, strlen(SW_SECRET));
  free(s.key);
}

/* ---- hmac with a timestamp ------------------------------------------ */

/* Slack's published example ("Verifying requests from Slack"): the same
 * v0=<hex> over "v0:{timestamp}:{body}" form that Zoom uses. */
#define SLACK_SECRET "8f742231b10e8888abcd99yyyzzz85a5"
#define SLACK_TS "1531420618"
#define SLACK_NOW INT64_C(1531420618)
#define SLACK_BODY                                                                           \
  "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="     \
  "G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-" \
  "collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%"         \
  "2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121."           \
  "803a0bc887a14d10d2c447fce8b6703c"
#define SLACK_SIG "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

/* Zoom and Calendly forms, computed with Python's hmac module:
 * hmac.new(key, b"v0:1700000000:" + body, sha256).hexdigest() and
 * hmac.new(key, b"1700000000." + body, sha256).hexdigest(). */
#define TS_NOW INT64_C(1700000000)
#define ZOOM_SECRET "zoom-secret-token"
#define ZOOM_BODY "{\"event\":\"meeting.started\"}"
#define ZOOM_SIG "v0=786c4446a640d95353b44534c52c31a8be0a5eadf45b4a1715cb39d62fa6acd1"
#define CAL_SECRET "calendly-signing-key"
#define CAL_OLD_SECRET "old-calendly-key"
#define CAL_BODY "{\"event\":\"invitee.created\"}"
#define CAL_HEX "81a9bfd092b45e5532457d73f595f87d45462d421449a6bae3fa0fa5ec207239"
#define CAL_OLD_HEX "28736c351761427f64a1ae6f2f77853595df58fd9a497a7759b33bc518e7a357"

/* A Zoom/Slack style config: signature in sig_header with prefix "v0=",
 * timestamp in ts_header, signed_payload "v0:{timestamp}:{body}". */
static verify_config zoom_cfg(const char *secret, const char *sig_header, const char *ts_header) {
  const char *const secrets[] = {secret};
  char err[128];
  verify_config cfg =
      make_cfg(VERIFY_HMAC, VERIFY_SHA256, VERIFY_HEX, sig_header, "v0=", secrets, 1);
  cfg.timestamp_header = strdup(ts_header);
  assert_int_equal(verify_payload_parse(&cfg, "v0:{timestamp}:{body}", err, sizeof err), 0);
  assert_int_equal(verify_config_check(&cfg, err, sizeof err), 0);
  return cfg;
}

static int check_zoom(const char *sig, const char *ts, const char *body, int64_t now) {
  verify_config cfg = zoom_cfg(ZOOM_SECRET, "x-zm-signature", "x-zm-request-timestamp");
  fake_req r = {0};
  if (sig) req_add(&r, "X-Zm-Signature", sig);
  if (ts) req_add(&r, "X-Zm-Request-Timestamp", ts);
  verify_input in = make_input(&r, body, now);
  int rc = verify_request(&cfg, &in);
  verify_config_clear(&cfg);
  return rc;
}

static void test_slack_vector(void **state) {
  (void)state;
  verify_config cfg = zoom_cfg(SLACK_SECRET, "X-Slack-Signature", "X-Slack-Request-Timestamp");
  fake_req r = {0};
  req_add(&r, "x-slack-signature", SLACK_SIG);
  req_add(&r, "x-slack-request-timestamp", SLACK_TS);
  verify_input in = make_input(&r, SLACK_BODY, SLACK_NOW);
  assert_int_equal(verify_request(&cfg, &in), 0);
  /* The published request is from 2018: with the real clock it is a replay. */
  in.now_s = (int64_t)time(NULL);
  assert_int_equal(verify_request(&cfg, &in), -1);
  in.now_s = SLACK_NOW;
  in.body_len--; /* one byte short */
  assert_int_equal(verify_request(&cfg, &in), -1);
  verify_config_clear(&cfg);
}

static void test_zoom(void **state) {
  (void)state;
  assert_int_equal(check_zoom(ZOOM_SIG, "1700000000", ZOOM_BODY, TS_NOW), 0);
  assert_int_equal(check_zoom(ZOOM_SIG, "1700000000", ZOOM_BODY, TS_NOW + 300), 0);
  assert_int_equal(check_zoom(ZOOM_SIG, "1700000000", ZOOM_BODY, TS_NOW - 300), 0);
  /* Outside the tolerance the valid signature does not help (replay). */
  assert_int_equal(check_zoom(ZOOM_SIG, "1700000000", ZOOM_BODY, TS_NOW + 301), -1);
  assert_int_equal(check_zoom(ZOOM_SIG, "1700000000", ZOOM_BODY, TS_NOW - 301), -1);
  /* A fresh timestamp that is not the signed one. */
  assert_int_equal(check_zoom(ZOOM_SIG, "1700000001", ZOOM_BODY, TS_NOW), -1);
  assert_int_equal(check_zoom(ZOOM_SIG, NULL, ZOOM_BODY, TS_NOW), -1);
  assert_int_equal(check_zoom(NULL, "1700000000", ZOOM_BODY, TS_NOW), -1);
  assert_int_equal(check_zoom(ZOOM_SIG, "", ZOOM_BODY, TS_NOW), -1);
  assert_int_equal(check_zoom(ZOOM_SIG, "1700000000.5", ZOOM_BODY, TS_NOW), -1);
  assert_int_equal(check_zoom(ZOOM_SIG, "-1700000000", ZOOM_BODY, TS_NOW), -1);
  assert_int_equal(check_zoom(ZOOM_SIG + 3, "1700000000", ZOOM_BODY, TS_NOW), -1); /* no v0= */
  assert_int_equal(check_zoom(ZOOM_SIG, "1700000000", "{\"event\":\"meeting.ended\"}", TS_NOW), -1);
}

static int check_calendly(const char *header, const char *body, int64_t now, int rotate) {
  const char *const secrets[] = {rotate ? CAL_OLD_SECRET : CAL_SECRET, CAL_SECRET};
  char err[128];
  verify_config cfg = make_cfg(VERIFY_HMAC, VERIFY_SHA256, VERIFY_HEX, "Calendly-Webhook-Signature",
                               NULL, secrets, rotate ? 2 : 1);
  cfg.timestamp_key = strdup("t");
  cfg.signature_key = strdup("v1");
  assert_int_equal(verify_payload_parse(&cfg, "{timestamp}.{body}", err, sizeof err), 0);
  assert_int_equal(verify_config_check(&cfg, err, sizeof err), 0);
  fake_req r = {0};
  if (header) req_add(&r, "calendly-webhook-signature", header);
  verify_input in = make_input(&r, body, now);
  int rc = verify_request(&cfg, &in);
  verify_config_clear(&cfg);
  return rc;
}

static void test_calendly(void **state) {
  (void)state;
  assert_int_equal(check_calendly("t=1700000000,v1=" CAL_HEX, CAL_BODY, TS_NOW, 0), 0);
  assert_int_equal(check_calendly(" t=1700000000 , v1=" CAL_HEX " ", CAL_BODY, TS_NOW, 0), 0);
  /* Order of the items does not matter. */
  assert_int_equal(check_calendly("v1=" CAL_HEX ",t=1700000000", CAL_BODY, TS_NOW, 0), 0);
  /* Several v1 entries (a sender rotating keys), unknown keys skipped. */
  assert_int_equal(
      check_calendly("t=1700000000,v1=" CAL_OLD_HEX ",v0=abcd,v1=" CAL_HEX, CAL_BODY, TS_NOW, 0),
      0);
  /* Several secrets on our side. */
  assert_int_equal(check_calendly("t=1700000000,v1=" CAL_HEX, CAL_BODY, TS_NOW, 1), 0);
  assert_int_equal(check_calendly("t=1700000000,v1=" CAL_OLD_HEX, CAL_BODY, TS_NOW, 1), 0);
  assert_int_equal(check_calendly("t=1700000000,v1=" CAL_OLD_HEX, CAL_BODY, TS_NOW, 0), -1);
  /* Replay, tampering, and malformed headers. */
  assert_int_equal(check_calendly("t=1700000000,v1=" CAL_HEX, CAL_BODY, TS_NOW + 301, 0), -1);
  assert_int_equal(check_calendly("t=1700000001,v1=" CAL_HEX, CAL_BODY, TS_NOW, 0), -1);
  assert_int_equal(check_calendly("t=1700000000,v1=" CAL_HEX, "{}", TS_NOW, 0), -1);
  assert_int_equal(check_calendly("v1=" CAL_HEX, CAL_BODY, TS_NOW, 0), -1);
  assert_int_equal(check_calendly("t=1700000000", CAL_BODY, TS_NOW, 0), -1);
  assert_int_equal(check_calendly("t=1700000000,t=1700000000,v1=" CAL_HEX, CAL_BODY, TS_NOW, 0),
                   -1);
  assert_int_equal(check_calendly("t=1700000000,v1" CAL_HEX, CAL_BODY, TS_NOW, 0), -1);
  assert_int_equal(check_calendly("T=1700000000,V1=" CAL_HEX, CAL_BODY, TS_NOW, 0), -1);
  assert_int_equal(check_calendly("", CAL_BODY, TS_NOW, 0), -1);
  assert_int_equal(check_calendly(",,,", CAL_BODY, TS_NOW, 0), -1);
  assert_int_equal(check_calendly(NULL, CAL_BODY, TS_NOW, 0), -1);
  /* More candidates than a sender would ever send: refused, not hashed. */
  char many[2048] = "t=1700000000";
  for (int i = 0; i < 8; i++) strcat(many, ",v1=" CAL_OLD_HEX);
  strcat(many, ",v1=" CAL_HEX);
  assert_int_equal(check_calendly(many, CAL_BODY, TS_NOW, 0), -1);
}

static void test_payload_parse(void **state) {
  (void)state;
  verify_config cfg = {.scheme = VERIFY_HMAC};
  char err[160];
  assert_int_equal(verify_payload_parse(&cfg, "v0:{timestamp}:{body}", err, sizeof err), 0);
  assert_int_equal(cfg.n_payload, 4);
  assert_int_equal(cfg.payload[0].kind, VERIFY_PART_TEXT);
  assert_string_equal(cfg.payload[0].text, "v0:");
  assert_int_equal(cfg.payload[1].kind, VERIFY_PART_TIMESTAMP);
  assert_int_equal(cfg.payload[2].kind, VERIFY_PART_TEXT);
  assert_int_equal(cfg.payload[3].kind, VERIFY_PART_BODY);
  /* Parsing again replaces (no leak under ASan). */
  assert_int_equal(verify_payload_parse(&cfg, "{body}", err, sizeof err), 0);
  assert_int_equal(cfg.n_payload, 1);
  /* Braces that are not a placeholder are text. */
  assert_int_equal(verify_payload_parse(&cfg, "{ {body}}{", err, sizeof err), 0);
  assert_int_equal(cfg.n_payload, 3);
  assert_string_equal(cfg.payload[0].text, "{ ");
  assert_string_equal(cfg.payload[2].text, "}{");
  assert_int_equal(verify_payload_parse(&cfg, "{timestamp}.{bdy}", err, sizeof err), -1);
  assert_non_null(strstr(err, "{bdy}"));
  assert_int_equal(verify_payload_parse(&cfg, "{timestamp}", err, sizeof err), -1);
  assert_int_equal(verify_payload_parse(&cfg, "{body}{body}", err, sizeof err), -1);
  assert_int_equal(verify_payload_parse(&cfg, "", err, sizeof err), -1);
  char big[512] = "";
  for (int i = 0; i < 20; i++) strcat(big, "{timestamp}.");
  strcat(big, "{body}");
  assert_int_equal(verify_payload_parse(&cfg, big, err, sizeof err), -1);
  /* The failed parses kept the last good one. */
  assert_int_equal(cfg.n_payload, 3);
  verify_config_clear(&cfg);
  assert_null(cfg.payload);
}

static void test_config_check(void **state) {
  (void)state;
  verify_config cfg = {.scheme = VERIFY_HMAC};
  char err[200];
  assert_int_equal(verify_config_check(&cfg, err, sizeof err), 0);
  /* A timestamp that is not signed protects nothing. */
  cfg.timestamp_header = strdup("X-Ts");
  assert_int_equal(verify_config_check(&cfg, err, sizeof err), -1);
  assert_non_null(strstr(err, "{timestamp}"));
  assert_int_equal(verify_payload_parse(&cfg, "{timestamp}.{body}", err, sizeof err), 0);
  assert_int_equal(verify_config_check(&cfg, err, sizeof err), 0);
  cfg.timestamp_key = strdup("t");
  assert_int_equal(verify_config_check(&cfg, err, sizeof err), -1); /* both */
  free(cfg.timestamp_header);
  cfg.timestamp_header = NULL;
  assert_int_equal(verify_config_check(&cfg, err, sizeof err), -1); /* no signature_key */
  cfg.signature_key = strdup("v1");
  assert_int_equal(verify_config_check(&cfg, err, sizeof err), 0);
  free(cfg.timestamp_key);
  cfg.timestamp_key = NULL;
  assert_int_equal(verify_config_check(&cfg, err, sizeof err), -1); /* {timestamp} unset */
  verify_config_clear(&cfg);

  verify_config b = {.scheme = VERIFY_BASIC};
  assert_int_equal(verify_config_check(&b, err, sizeof err), -1);
  b.username = strdup("a:b");
  assert_int_equal(verify_config_check(&b, err, sizeof err), -1);
  free(b.username);
  b.username = strdup("cirrus");
  assert_int_equal(verify_config_check(&b, err, sizeof err), 0);
  verify_config_clear(&b);
}

/* ---- basic ---------------------------------------------------------- */

static int check_basic(const char *value) {
  static const char *const secrets[] = {"old-password", "p@ss:word"};
  verify_config cfg = make_cfg(VERIFY_BASIC, VERIFY_SHA256, VERIFY_HEX, NULL, NULL, secrets, 2);
  cfg.username = strdup("cirrus");
  fake_req r = {0};
  if (value) req_add(&r, "authorization", value);
  verify_input in = make_input(&r, "{}", 0);
  int rc = verify_request(&cfg, &in);
  verify_config_clear(&cfg);
  return rc;
}

static void test_basic(void **state) {
  (void)state;
  /* base64 of "cirrus:p@ss:word": the password may hold ':'. */
  assert_int_equal(check_basic("Basic Y2lycnVzOnBAc3M6d29yZA=="), 0);
  assert_int_equal(check_basic("basic  Y2lycnVzOnBAc3M6d29yZA== "), 0);
  assert_int_equal(check_basic("Basic Y2lycnVzOm9sZC1wYXNzd29yZA=="), 0); /* cirrus:old-password */
  assert_int_equal(check_basic("Basic Y2lycnVzOnBAc3M6d29yZQ=="), -1); /* cirrus:p@ss:word wrong */
  assert_int_equal(check_basic("Basic Y2lycnVzOnBAc3M6d29y"), -1);     /* cirrus:p@ss:wor */
  assert_int_equal(check_basic("Basic YWRtaW46cEBzczp3b3Jk"), -1);     /* admin:p@ss:word */
  assert_int_equal(check_basic("Bearer Y2lycnVzOnBAc3M6d29yZA=="), -1);
  assert_int_equal(check_basic("BasicY2lycnVzOnBAc3M6d29yZA=="), -1);
  assert_int_equal(check_basic("Basic"), -1);
  assert_int_equal(check_basic("Basic "), -1);
  assert_int_equal(check_basic("Basic !!!!"), -1);
  assert_int_equal(check_basic(NULL), -1);
  char big[4000] = "Basic ";
  for (int i = 0; i < 900; i++) strcat(big, "QUFB");
  assert_int_equal(check_basic(big), -1);
  verify_scheme s;
  assert_int_equal(verify_scheme_parse("basic", &s), 0);
  assert_int_equal(s, VERIFY_BASIC);
}

/* ---- threads -------------------------------------------------------- */

typedef struct thread_arg {
  const verify_config *hmac;
  const verify_config *sw;
  int failures;
} thread_arg;

static void *thread_main(void *p) {
  thread_arg *a = p;
  fake_req gh = {0}, sw = {0};
  req_add(&gh, "X-Hub-Signature-256", GH_SIG256);
  req_add(&sw, "webhook-id", SW_ID);
  req_add(&sw, "webhook-timestamp", SW_TS);
  req_add(&sw, "webhook-signature", SW_SIG);
  verify_input gin = make_input(&gh, GH_BODY, 0);
  verify_input bad = make_input(&gh, "Hello, World?", 0);
  verify_input sin = make_input(&sw, SW_BODY, SW_NOW);
  for (int i = 0; i < 2000; i++) {
    if (verify_request(a->hmac, &gin) != 0) a->failures++;
    if (verify_request(a->hmac, &bad) != -1) a->failures++;
    if (verify_request(a->sw, &sin) != 0) a->failures++;
  }
  return NULL;
}

/* Each thread has its own OpenSSL contexts; interleaved use with different
 * keys must not mix them up, and their exit must free them (ASan checks). */
static void test_threads(void **state) {
  (void)state;
  static const char *const gs[] = {GH_SECRET};
  static const char *const ss[] = {SW_SECRET};
  verify_config h =
      make_cfg(VERIFY_HMAC, VERIFY_SHA256, VERIFY_HEX, "X-Hub-Signature-256", "sha256=", gs, 1);
  verify_config s =
      make_cfg(VERIFY_STANDARD_WEBHOOKS, VERIFY_SHA256, VERIFY_BASE64, NULL, NULL, ss, 1);
  pthread_t t[4];
  thread_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (thread_arg){&h, &s, 0};
    assert_int_equal(pthread_create(&t[i], NULL, thread_main, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(args[i].failures, 0);
  }
  verify_config_clear(&h);
  verify_config_clear(&s);
}

/* Svix sends the Standard Webhooks scheme under svix-* names. */
static void test_svix_names(void **state) {
  (void)state;
  const char *const secrets[] = {SW_SECRET};
  verify_config cfg = make_cfg(VERIFY_STANDARD_WEBHOOKS, 0, 0, NULL, NULL, secrets, 1);
  cfg.tolerance_s = 300;
  fake_req r = {0};
  req_add(&r, "svix-id", SW_ID);
  req_add(&r, "svix-timestamp", SW_TS);
  req_add(&r, "svix-signature", SW_SIG);
  verify_input in = make_input(&r, SW_BODY, SW_NOW);
  assert_int_equal(verify_request(&cfg, &in), 0);
  /* A webhook-signature present is the one checked: a wrong one fails even
   * next to a right svix-signature. */
  req_add(&r, "webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=");
  in = make_input(&r, SW_BODY, SW_NOW);
  assert_int_equal(verify_request(&cfg, &in), -1);
  verify_config_clear(&cfg);
}

/* Zoom's url_validation answer: hex HMAC-SHA256(secret, plainToken). */
static void test_hmac_hex(void **state) {
  (void)state;
  verify_secret s;
  char err[64], hex[65];
  assert_int_equal(verify_secret_set(VERIFY_HMAC, GH_SECRET, &s, err, sizeof err), 0);
  assert_int_equal(verify_hmac_sha256_hex(&s, GH_BODY, strlen(GH_BODY), hex), 0);
  assert_string_equal(hex, GH_SIG256 + 7);
  free(s.key);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_github_vector),
      cmocka_unit_test(test_github_tampered_body),
      cmocka_unit_test(test_hmac_uppercase_hex),
      cmocka_unit_test(test_hmac_surrounding_whitespace),
      cmocka_unit_test(test_hmac_sha1_hex),
      cmocka_unit_test(test_hmac_sha512_base64),
      cmocka_unit_test(test_hmac_sha256_base64),
      cmocka_unit_test(test_hmac_bad_base64),
      cmocka_unit_test(test_hmac_key_rotation),
      cmocka_unit_test(test_hmac_missing_header),
      cmocka_unit_test(test_hmac_wrong_prefix),
      cmocka_unit_test(test_hmac_bad_hex),
      cmocka_unit_test(test_hmac_wrong_length),
      cmocka_unit_test(test_hmac_no_secrets),
      cmocka_unit_test(test_hmac_unset_secret_does_not_reuse_key),
      cmocka_unit_test(test_cleared_config_refuses),
      cmocka_unit_test(test_sw_vector_fixed_clock),
      cmocka_unit_test(test_sw_vector_real_clock),
      cmocka_unit_test(test_sw_tolerance),
      cmocka_unit_test(test_sw_signature_list),
      cmocka_unit_test(test_sw_tampered),
      cmocka_unit_test(test_sw_missing_or_bad_headers),
      cmocka_unit_test(test_sw_key_rotation),
      cmocka_unit_test(test_token),
      cmocka_unit_test(test_none),
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_secret_set),
      cmocka_unit_test(test_slack_vector),
      cmocka_unit_test(test_zoom),
      cmocka_unit_test(test_calendly),
      cmocka_unit_test(test_payload_parse),
      cmocka_unit_test(test_config_check),
      cmocka_unit_test(test_basic),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_svix_names),
      cmocka_unit_test(test_hmac_hex),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
