/* libFuzzer target: the standard-webhooks headers (webhook-id, webhook-timestamp, the
 * "v1,<base64> ..." signature list), checked against OpenSSL's one-shot HMAC(). */
#include <stdio.h>
#include <stdlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fuzz_common.h"
#include "verify.h"

#define NOW 1614265330
/* The spec's example secret and its decoded key. */
#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

static verify_config cfg;
static unsigned char key[64];
static size_t key_len;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char err[160];
  cfg.scheme = VERIFY_STANDARD_WEBHOOKS;
  cfg.tolerance_s = 300;
  cfg.secrets = calloc(1, sizeof *cfg.secrets);
  cfg.n_secrets = 1;
  if (verify_secret_set(VERIFY_STANDARD_WEBHOOKS, SECRET, &cfg.secrets[0], err, sizeof err) != 0)
    abort();
  key_len = cfg.secrets[0].len;
  memcpy(key, cfg.secrets[0].key, key_len);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_req r;
  fuzz_req_split(&r, data, size, 3);
  r.names[0] = "webhook-id";
  r.names[1] = "webhook-timestamp";
  r.names[2] = "webhook-signature";
  verify_input in = {fuzz_header, &r, r.body, r.body_len, NOW};
  (void)verify_request(&cfg, &in);

  /* A well-signed request with the fuzzer's signature list in front of the
   * right entry: must pass; a minute past the tolerance it must not. */
  char id[80], ts[32], b64[64];
  unsigned char mac[32];
  unsigned int mlen = 0;
  snprintf(id, sizeof id, "msg_%zu", r.body_len);
  snprintf(ts, sizeof ts, "%d", NOW + (int)(r.body_len % 300));
  size_t idl = strlen(id), tsl = strlen(ts), total = idl + 1 + tsl + 1 + r.body_len;
  unsigned char *msg = malloc(total + 1);
  if (!msg) abort();
  memcpy(msg, id, idl);
  msg[idl] = '.';
  memcpy(msg + idl + 1, ts, tsl);
  msg[idl + 1 + tsl] = '.';
  if (r.body_len) memcpy(msg + idl + tsl + 2, r.body, r.body_len);
  if (!HMAC(EVP_sha256(), key, (int)key_len, msg, total, mac, &mlen) || mlen != 32) abort();
  free(msg);
  EVP_EncodeBlock((unsigned char *)b64, mac, 32);
  fuzz_req ok = r;
  snprintf(ok.values[0], sizeof ok.values[0], "%s", id);
  snprintf(ok.values[1], sizeof ok.values[1], "%s", ts);
  char list[1200];
  snprintf(list, sizeof list, "%.900s v1,%s", r.values[2], b64);
  snprintf(ok.values[2], sizeof ok.values[2], "%s", list);
  ok.present[0] = ok.present[1] = ok.present[2] = 1;
  verify_input okin = {fuzz_header, &ok, r.body, r.body_len, NOW};
  if (verify_request(&cfg, &okin) != 0) abort();
  okin.now_s = NOW + 600;
  if (verify_request(&cfg, &okin) == 0) abort();
  return 0;
}
