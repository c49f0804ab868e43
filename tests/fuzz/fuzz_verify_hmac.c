/* libFuzzer target: the hmac signature header parsers (plain with prefix, Zoom/Slack
 * "v0=" with a timestamp header, Calendly/Stripe "t=...,v1=..."), checked against
 * OpenSSL's one-shot HMAC(). */
#include <stdio.h>
#include <stdlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fuzz_common.h"
#include "verify.h"

#define NOW 1700000000
#define KEY "fuzz-signing-key"

static verify_config plain, zoom, calendly;

static void base(verify_config *c, const char *header, const char *prefix) {
  char err[160];
  c->scheme = VERIFY_HMAC;
  c->algorithm = VERIFY_SHA256;
  c->encoding = VERIFY_HEX;
  c->header = strdup(header);
  c->prefix = strdup(prefix);
  c->tolerance_s = 300;
  c->secrets = calloc(2, sizeof *c->secrets);
  c->n_secrets = 2;
  if (verify_secret_set(VERIFY_HMAC, "another-key", &c->secrets[0], err, sizeof err) != 0 ||
      verify_secret_set(VERIFY_HMAC, KEY, &c->secrets[1], err, sizeof err) != 0)
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char err[160];
  base(&plain, "X-Hub-Signature-256", "sha256=");
  base(&zoom, "x-zm-signature", "v0=");
  zoom.timestamp_header = strdup("x-zm-request-timestamp");
  if (verify_payload_parse(&zoom, "v0:{timestamp}:{body}", err, sizeof err) != 0) abort();
  base(&calendly, "Calendly-Webhook-Signature", "");
  calendly.timestamp_key = strdup("t");
  calendly.signature_key = strdup("v1");
  if (verify_payload_parse(&calendly, "{timestamp}.{body}", err, sizeof err) != 0) abort();
  if (verify_config_check(&zoom, err, sizeof err) || verify_config_check(&calendly, err, sizeof err))
    abort();
  return 0;
}

/* hex(HMAC-SHA256(KEY, the n pieces joined)) */
static void expect(const char *const *p, const size_t *len, size_t n, char out[65]) {
  unsigned char mac[32];
  unsigned int mlen = 0;
  size_t total = 0, o = 0;
  for (size_t i = 0; i < n; i++) total += len[i];
  unsigned char *joined = malloc(total + 1);
  if (!joined) abort();
  for (size_t i = 0; i < n; i++) {
    memcpy(joined + o, p[i], len[i]);
    o += len[i];
  }
  if (!HMAC(EVP_sha256(), KEY, (int)strlen(KEY), joined, total, mac, &mlen) || mlen != 32) abort();
  free(joined);
  fuzz_hex(mac, 32, out);
}

/* "key=value" with a plain key other than t and v1: an item the Calendly
 * parser must skip. */
static int skippable_item(const char *s) {
  const char *eq = strchr(s, '=');
  if (!eq || eq == s || strlen(s) > 200) return 0;
  for (const char *p = s; p < eq; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))) return 0;
  for (const char *p = eq + 1; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))) return 0;
  size_t kn = (size_t)(eq - s);
  return !(kn == 1 && s[0] == 't') && !(kn == 2 && s[0] == 'v' && s[1] == '1');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_req r;
  char want[65], hbuf[1200], ts[32];
  fuzz_req_split(&r, data, size, 2);
  verify_input in = {fuzz_header, &r, r.body, r.body_len, NOW};

  /* Raw: the fuzzer's header values under each scheme's names. A pass
   * means the header held the right digest (forging is not expected). */
  r.names[0] = "X-Hub-Signature-256";
  r.names[1] = NULL;
  if (verify_request(&plain, &in) == 0) {
    const char *p[] = {r.body};
    size_t l[] = {r.body_len};
    expect(p, l, 1, want);
    if (!strcasestr(r.values[0], want)) abort();
  }
  r.names[0] = "x-zm-signature";
  r.names[1] = "x-zm-request-timestamp";
  (void)verify_request(&zoom, &in);
  r.names[0] = "Calendly-Webhook-Signature";
  r.names[1] = NULL;
  (void)verify_request(&calendly, &in);

  /* Well signed: must pass, whatever the body and the skipped items. */
  snprintf(ts, sizeof ts, "%d", NOW - 200 + (int)(r.body_len % 400));
  {
    const char *p[] = {ts, ".", r.body};
    size_t l[] = {strlen(ts), 1, r.body_len};
    expect(p, l, 3, want);
  }
  fuzz_req ok = r;
  ok.names[0] = "Calendly-Webhook-Signature";
  ok.names[1] = NULL;
  int extra = skippable_item(r.values[0]);
  snprintf(hbuf, sizeof hbuf, "t=%s,%s%sv1=%s", ts, extra ? r.values[0] : "", extra ? "," : "",
           want);
  snprintf(ok.values[0], sizeof ok.values[0], "%s", hbuf);
  ok.present[0] = 1;
  verify_input okin = {fuzz_header, &ok, r.body, r.body_len, NOW};
  if (verify_request(&calendly, &okin) != 0) abort();
  /* The same request replayed later is refused. */
  okin.now_s = NOW + 1000;
  if (verify_request(&calendly, &okin) == 0) abort();

  {
    const char *p[] = {"v0:", ts, ":", r.body};
    size_t l[] = {3, strlen(ts), 1, r.body_len};
    expect(p, l, 4, want);
  }
  ok.names[0] = "x-zm-signature";
  ok.names[1] = "x-zm-request-timestamp";
  snprintf(ok.values[0], sizeof ok.values[0], "v0=%s", want);
  snprintf(ok.values[1], sizeof ok.values[1], "%s", ts);
  ok.present[1] = 1;
  okin.now_s = NOW;
  if (verify_request(&zoom, &okin) != 0) abort();
  /* Another timestamp than the signed one is refused. */
  snprintf(ok.values[1], sizeof ok.values[1], "%d", NOW + 250);
  if (verify_request(&zoom, &okin) == 0) abort();
  return 0;
}
