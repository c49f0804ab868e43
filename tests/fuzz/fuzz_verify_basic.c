/* libFuzzer target: the Authorization: Basic parser and the token header. */
#include <stdio.h>
#include <stdlib.h>
#include <openssl/evp.h>

#include "fuzz_common.h"
#include "verify.h"

static verify_config basic, token;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char err[160];
  basic.scheme = VERIFY_BASIC;
  basic.username = strdup("cirrus");
  basic.secrets = calloc(2, sizeof *basic.secrets);
  basic.n_secrets = 2;
  token.scheme = VERIFY_TOKEN;
  token.header = strdup("X-Webhook-Token");
  token.secrets = calloc(1, sizeof *token.secrets);
  token.n_secrets = 1;
  if (verify_secret_set(VERIFY_BASIC, "old-password", &basic.secrets[0], err, sizeof err) ||
      verify_secret_set(VERIFY_BASIC, "p@ss:word", &basic.secrets[1], err, sizeof err) ||
      verify_secret_set(VERIFY_TOKEN, "s3cr3t-t0ken", &token.secrets[0], err, sizeof err) ||
      verify_config_check(&basic, err, sizeof err))
    abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_req r;
  fuzz_req_split(&r, data, size, 2);
  r.names[0] = "Authorization";
  r.names[1] = "X-Webhook-Token";
  verify_input in = {fuzz_header, &r, r.body, r.body_len, 0};
  if (verify_request(&basic, &in) == 0) {
    /* Only the right credentials pass: decode what was sent and compare. */
    const char *v = r.values[0];
    while (*v == ' ' || *v == '\t') v++;
    if (strncasecmp(v, "basic", 5) != 0) abort();
    unsigned char dec[1024];
    const char *b = v + 6;
    while (*b == ' ' || *b == '\t') b++;
    size_t bl = strlen(b);
    while (bl > 0 && (b[bl - 1] == ' ' || b[bl - 1] == '\t')) bl--;
    char padded[1100];
    if (bl >= 1000) abort();
    memcpy(padded, b, bl);
    while (bl % 4) padded[bl++] = '=';
    padded[bl] = '\0';
    int n = EVP_DecodeBlock(dec, (const unsigned char *)padded, (int)bl);
    if (n < 0) abort();
    while (n > 0 && bl > 0 && padded[bl - 1] == '=') {
      n--;
      bl--;
    }
    if (!((n == 16 && memcmp(dec, "cirrus:p@ss:word", 16) == 0) ||
          (n == 19 && memcmp(dec, "cirrus:old-password", 19) == 0)))
      abort();
  }
  if (verify_request(&token, &in) == 0) {
    const char *v = r.values[1];
    while (*v == ' ' || *v == '\t') v++;
    if (strncmp(v, "s3cr3t-t0ken", 12) != 0) abort();
  }
  /* The right credentials, with the fuzzer's body, pass. */
  fuzz_req ok = r;
  snprintf(ok.values[0], sizeof ok.values[0], "Basic Y2lycnVzOnBAc3M6d29yZA==");
  ok.present[0] = 1;
  verify_input okin = {fuzz_header, &ok, r.body, r.body_len, 0};
  if (verify_request(&basic, &okin) != 0) abort();
  return 0;
}
