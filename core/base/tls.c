/* TLS for the webhook listeners: OpenSSL contexts (certificates, reload) and connections
 * driven through memory BIOs. */
#include "tls.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "metrics.h"

/* TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3 has nothing else). */
#define TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"
/* How long a resumable session stays valid. */
#define SESSION_TIMEOUT_S 3600
/* Ticket keys: 16 bytes name, 32 HMAC, 32 AES (SSL_CTX_get_tlsext_ticket_keys). */
#define TICKET_KEYS_LEN 80

struct tls_ctx {
  SSL_CTX *ssl;
  atomic_uint refs;
  int64_t not_after;
  char subject[256];
};

struct tls_conn {
  SSL *ssl;
  int began;       /* some ciphertext arrived */
  int established; /* handshake complete and counted */
  int counted;     /* a failure was counted */
  const char *failure;
};

/* --- contexts ------------------------------------------------------------ */

/* The last OpenSSL error as text; clears the queue. */
static void ossl_reason(char *buf, size_t len) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  snprintf(buf, len, "%s", r ? r : "unknown OpenSSL error");
  ERR_clear_error();
}

static int ctx_fail(const char **field, const char *which, char *err, size_t errlen,
                    const char *what, const char *path) {
  char why[160];
  ossl_reason(why, sizeof why);
  *field = which;
  snprintf(err, errlen, "%s '%s': %s", what, path, why);
  return -1;
}

/* Opens path to say why it cannot be read (errno text) before OpenSSL's less
 * helpful message would. */
static int readable(const char **field, const char *which, const char *path, char *err,
                    size_t errlen) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    *field = which;
    snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
    return -1;
  }
  fclose(f);
  return 0;
}

/* ALPN: http/1.1 when the client offers it; a client that offers only
 * other protocols (h2 alone) gets no_application_protocol rather than an
 * HTTP/1.1 answer it did not ask for. No ALPN at all is fine. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg) {
  static const unsigned char ours[] = "\x08http/1.1";
  (void)ssl;
  (void)arg;
  unsigned char *sel = NULL;
  if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static void describe(tls_ctx *c) {
  X509 *x = SSL_CTX_get0_certificate(c->ssl);
  struct tm tm;
  if (x == NULL) return;
  X509_NAME_oneline(X509_get_subject_name(x), c->subject, sizeof c->subject);
  memset(&tm, 0, sizeof tm);
  if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1) c->not_after = (int64_t)timegm(&tm);
}

static int load_client_ca(SSL_CTX *ssl, const char *client_ca, const char **field, char *err,
                          size_t errlen) {
  if (readable(field, "client_ca", client_ca, err, errlen) != 0) return -1;
  STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client_ca);
  if (names == NULL || SSL_CTX_load_verify_locations(ssl, client_ca, NULL) != 1) {
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    return ctx_fail(field, "client_ca", err, errlen, "cannot load CA certificates from", client_ca);
  }
  SSL_CTX_set_client_CA_list(ssl, names);
  SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  return 0;
}

tls_ctx *tls_ctx_new(const char *cert, const char *key, const char *client_ca, const char **field,
                     char *err, size_t errlen) {
  static const char *unused;
  if (field == NULL) field = &unused;
  *field = "cert";
  ERR_clear_error();
  if (readable(field, "cert", cert, err, errlen) != 0 ||
      readable(field, "key", key, err, errlen) != 0)
    return NULL;
  tls_ctx *c = calloc(1, sizeof *c);
  SSL_CTX *ssl = c ? SSL_CTX_new(TLS_server_method()) : NULL;
  if (ssl == NULL) {
    free(c);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  c->ssl = ssl;
  atomic_init(&c->refs, 1);
  SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ssl, TLS1_3_VERSION);
  /* No renegotiation (a CPU sink for clients), the server's suite order. */
  SSL_CTX_set_options(
      ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  /* Idle connections give their record buffers back. */
  SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_cipher_list(ssl, TLS12_CIPHERS);
  SSL_CTX_set_alpn_select_cb(ssl, on_alpn, NULL);
  /* Resumption: tickets (stateless) and, for TLS 1.2 clients that ask by
   * session id, the server cache. A fixed id context lets sessions resume
   * with client certificates too. */
  SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_SERVER);
  SSL_CTX_set_session_id_context(ssl, (const unsigned char *)"hookd", 5);
  SSL_CTX_set_timeout(ssl, SESSION_TIMEOUT_S);
  if (SSL_CTX_use_certificate_chain_file(ssl, cert) != 1) {
    ctx_fail(field, "cert", err, errlen, "cannot load a PEM certificate chain from", cert);
  } else if (SSL_CTX_use_PrivateKey_file(ssl, key, SSL_FILETYPE_PEM) != 1) {
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
      ctx_fail(field, "key", err, errlen, "the key does not match the certificate in", cert);
    } else {
      ctx_fail(field, "key", err, errlen, "cannot load a PEM private key from", key);
    }
  } else if (SSL_CTX_check_private_key(ssl) != 1) {
    ctx_fail(field, "key", err, errlen, "the key does not match the certificate in", cert);
  } else if (client_ca == NULL || load_client_ca(ssl, client_ca, field, err, errlen) == 0) {
    describe(c);
    return c;
  }
  SSL_CTX_free(ssl);
  free(c);
  return NULL;
}

void tls_ctx_ref(tls_ctx *c) {
  atomic_fetch_add(&c->refs, 1);
}

void tls_ctx_unref(tls_ctx *c) {
  if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1) return;
  SSL_CTX_free(c->ssl); /* open connections hold their own SSL_CTX reference */
  free(c);
}

void tls_ctx_keep_tickets(tls_ctx *to, const tls_ctx *from) {
  unsigned char keys[TICKET_KEYS_LEN];
  if (to == NULL || from == NULL || to == from) return;
  if (SSL_CTX_get_tlsext_ticket_keys(from->ssl, keys, sizeof keys) == 1)
    SSL_CTX_set_tlsext_ticket_keys(to->ssl, keys, sizeof keys);
  OPENSSL_cleanse(keys, sizeof keys);
}

const char *tls_ctx_subject(const tls_ctx *c) {
  return c->subject[0] ? c->subject : "?";
}

int64_t tls_ctx_not_after(const tls_ctx *c) {
  return c->not_after;
}

/* --- connections --------------------------------------------------------- */

tls_conn *tls_conn_new(tls_ctx *ctx) {
  tls_conn *t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
  t->ssl = rbio && wbio ? SSL_new(ctx->ssl) : NULL;
  if (t->ssl == NULL) {
    BIO_free(rbio);
    BIO_free(wbio);
    free(t);
    return NULL;
  }
  /* An empty input BIO means "wait for more", not end of stream. */
  BIO_set_mem_eof_return(rbio, -1);
  BIO_set_mem_eof_return(wbio, -1);
  SSL_set_bio(t->ssl, rbio, wbio);
  SSL_set_accept_state(t->ssl);
  return t;
}

void tls_conn_free(tls_conn *t) {
  if (t == NULL) return;
  SSL_free(t->ssl);
  free(t);
}

int tls_conn_put(tls_conn *t, const char *data, size_t len) {
  if (len == 0) return 0;
  t->began = 1;
  if (len > INT32_MAX) return -1;
  return BIO_write(SSL_get_rbio(t->ssl), data, (int)len) == (int)len ? 0 : -1;
}

/* Maps an OpenSSL reason code onto a few labels a dashboard can show. */
static const char *failure_of(unsigned long e) {
  if (ERR_GET_LIB(e) != ERR_LIB_SSL) return "other";
  switch (ERR_GET_REASON(e)) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      return "protocol_version";
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
      return "no_shared_cipher";
    case SSL_R_NO_APPLICATION_PROTOCOL:
      return "alpn";
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_NO_CERTIFICATES_RETURNED:
      return "client_certificate";
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
      return "certificate_rejected";
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
      return "plain_http";
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_BAD_PACKET_LENGTH:
    case SSL_R_LENGTH_MISMATCH:
    case SSL_R_BAD_EXTENSION:
    case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
      return "malformed";
    default:
      return "other";
  }
}

static void note_established(tls_conn *t) {
  if (t->established || !SSL_is_init_finished(t->ssl)) return;
  t->established = 1;
  metrics_tls_handshake(SSL_session_reused(t->ssl));
}

long tls_conn_read(tls_conn *t, char *buf, size_t cap) {
  if (t->failure) return TLS_FAILED;
  ERR_clear_error();
  int n = SSL_read(t->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
  note_established(t);
  if (n > 0) return n;
  int e = SSL_get_error(t->ssl, n);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return TLS_AGAIN;
  if (e == SSL_ERROR_ZERO_RETURN) return TLS_CLOSED;
  t->failure = e == SSL_ERROR_SSL ? failure_of(ERR_peek_last_error()) : "other";
  ERR_clear_error();
  if (!t->established && !t->counted) {
    t->counted = 1;
    metrics_tls_failure(t->failure);
  }
  return TLS_FAILED;
}

int tls_conn_write(tls_conn *t, const char *data, size_t len) {
  if (t->failure || !t->established || len > INT32_MAX) return -1;
  if (len == 0) return 0;
  ERR_clear_error();
  int n = SSL_write(t->ssl, data, (int)len);
  ERR_clear_error();
  return n == (int)len ? 0 : -1;
}

void tls_conn_close_notify(tls_conn *t) {
  if (t->failure || !t->established) return;
  ERR_clear_error();
  (void)SSL_shutdown(t->ssl);
  ERR_clear_error();
}

size_t tls_conn_take(tls_conn *t, char *buf, size_t cap) {
  BIO *w = SSL_get_wbio(t->ssl);
  if (BIO_ctrl_pending(w) == 0) return 0;
  int n = BIO_read(w, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
  return n > 0 ? (size_t)n : 0;
}

int tls_conn_established(const tls_conn *t) {
  return t->established;
}

const char *tls_conn_failure(const tls_conn *t) {
  return t->failure ? t->failure : "other";
}

void tls_conn_abandon(tls_conn *t, const char *reason) {
  if (t == NULL || !t->began || t->established || t->counted) return;
  t->counted = 1;
  metrics_tls_failure(reason);
}

void tls_conn_trim(tls_conn *t) {
  BIO *r = SSL_get_rbio(t->ssl), *w = SSL_get_wbio(t->ssl);
  if (BIO_ctrl_pending(r) != 0 || BIO_ctrl_pending(w) != 0) return;
  /* Fresh, empty BIOs: the old ones keep the capacity of the largest
   * request or answer they carried. SSL_set_bio frees them. */
  BIO *nr = BIO_new(BIO_s_mem()), *nw = BIO_new(BIO_s_mem());
  if (nr == NULL || nw == NULL) {
    BIO_free(nr);
    BIO_free(nw);
    return;
  }
  BIO_set_mem_eof_return(nr, -1);
  BIO_set_mem_eof_return(nw, -1);
  SSL_set_bio(t->ssl, nr, nw);
}
