/* libFuzzer target: ciphertext from a client into the TLS server side (tls.c), in chunks of the
 * input's choosing. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tls.h"

static tls_ctx *ctx;

/* A P-256 key and a self-signed certificate for it, written as PEM files
 * into dir (what tls_ctx_new loads). */
static int make_cert(const char *dir, char *cert, char *key, size_t len) {
  snprintf(cert, len, "%s/cert.pem", dir);
  snprintf(key, len, "%s/key.pem", dir);
  EVP_PKEY *pk = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  if (pk == NULL || x == NULL) return -1;
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
  X509_set_pubkey(x, pk);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                             0);
  X509_set_issuer_name(x, name);
  if (X509_sign(x, pk, EVP_sha256()) == 0) return -1;
  FILE *fc = fopen(cert, "w"), *fk = fopen(key, "w");
  int ok =
      fc && fk && PEM_write_X509(fc, x) && PEM_write_PrivateKey(fk, pk, NULL, NULL, 0, NULL, NULL);
  if (fc) fclose(fc);
  if (fk) fclose(fk);
  X509_free(x);
  EVP_PKEY_free(pk);
  return ok ? 0 : -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  log_setup(HLOG_ERROR, HLOG_FORMAT_TEXT);
  char dir[] = "/tmp/hookd-fuzz-tls-XXXXXX", cert[256], key[256], err[256];
  const char *field = NULL;
  if (mkdtemp(dir) == NULL || make_cert(dir, cert, key, sizeof cert) != 0) abort();
  ctx = tls_ctx_new(cert, key, NULL, &field, err, sizeof err);
  if (ctx == NULL) {
    fprintf(stderr, "tls_ctx_new: %s\n", err);
    abort();
  }
  unlink(cert);
  unlink(key);
  rmdir(dir);
  return 0;
}

/* Reads plaintext and drains what the server wants to send, as the
 * connection's owner does after every put. Returns 0 while it goes on. */
static int pump(tls_conn *t) {
  char buf[16384];
  long n;
  while ((n = tls_conn_read(t, buf, sizeof buf)) > 0) {
    /* An established connection answers what it got, like a request. */
    if (tls_conn_write(t, buf, (size_t)(n > 64 ? 64 : n)) != 0) break;
  }
  while (tls_conn_take(t, buf, sizeof buf) > 0) {
  }
  if (n == TLS_FAILED) {
    (void)tls_conn_failure(t);
    return -1;
  }
  return n == TLS_CLOSED ? -1 : 0;
}

/* The input's first byte picks the chunk size (1..256) the rest arrives in,
 * as TCP would cut it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t chunk = (size_t)data[0] + 1;
  data++, size--;
  tls_conn *t = tls_conn_new(ctx);
  if (t == NULL) return 0;
  int live = 1;
  for (size_t off = 0; off < size && live; off += chunk) {
    size_t n = size - off < chunk ? size - off : chunk;
    if (tls_conn_put(t, (const char *)data + off, n) != 0) break;
    live = pump(t) == 0;
  }
  if (live && tls_conn_established(t)) {
    tls_conn_close_notify(t);
    pump(t);
  } else if (!tls_conn_established(t)) {
    tls_conn_abandon(t, "closed");
  }
  tls_conn_free(t);
  return 0;
}
