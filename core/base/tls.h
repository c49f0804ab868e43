/* TLS for the webhook listeners: OpenSSL contexts (certificates, reload) and connections
 * driven through memory BIOs. */
#ifndef HOOKD_TLS_H
#define HOOKD_TLS_H

/*
 * A tls_ctx is one loaded certificate chain and key (and optional client CA)
 * as an OpenSSL server context: TLS 1.2 and 1.3 only, ALPN http/1.1, session
 * resumption by tickets and a session cache. It is built from files by
 * tls_ctx_new on any thread (config_load does it, so a reload reads the files
 * again), then handed to the loop thread, which swaps it in for new
 * connections; connections already open keep the context they started with.
 *
 * A tls_conn is the TLS state of one connection. hookd reads and writes the
 * socket itself (libuv); the connection only turns ciphertext into plaintext
 * and back through two memory BIOs, so no OpenSSL call ever touches a socket
 * or blocks. Loop thread only.
 */

#include <stddef.h>
#include <stdint.h>

typedef struct tls_ctx tls_ctx;
typedef struct tls_conn tls_conn;

/* tls_conn_read results besides a byte count. */
#define TLS_AGAIN 0   /* nothing more until more ciphertext arrives */
#define TLS_CLOSED -1 /* the peer sent close_notify */
#define TLS_FAILED -2 /* a fatal TLS error; tls_conn_failure says which */

/* Builds a server context from PEM files: cert (the certificate, then its
 * chain), key (its private key) and, when client_ca is not NULL, the CAs
 * whose client certificates are required (mutual TLS). Any thread. Returns
 * NULL with one line in err, and in *field which input it is about ("cert",
 * "key" or "client_ca"). The context starts with one reference. */
tls_ctx *tls_ctx_new(const char *cert, const char *key, const char *client_ca, const char **field,
                     char *err, size_t errlen);
/* References are atomic: a context may be built on one thread and dropped
 * on another. The last unref frees it (connections keep what they use). */
void tls_ctx_ref(tls_ctx *c);
void tls_ctx_unref(tls_ctx *c);
/* Gives `to` the session ticket keys of `from`, so tickets issued before a
 * certificate reload still resume after it. Call before `to` serves. */
void tls_ctx_keep_tickets(tls_ctx *to, const tls_ctx *from);
/* The certificate's subject ("CN=example.com") and end of validity (Unix
 * seconds), for logs and the expiry metric. */
const char *tls_ctx_subject(const tls_ctx *c);
int64_t tls_ctx_not_after(const tls_ctx *c);

/* A connection on ctx (which it references), in the server role. NULL when
 * out of memory. */
tls_conn *tls_conn_new(tls_ctx *ctx);
void tls_conn_free(tls_conn *t);

/* Takes ciphertext read from the socket. Returns 0 or -1 (out of memory). */
int tls_conn_put(tls_conn *t, const char *data, size_t len);
/* Decrypts into buf: the number of plaintext bytes, or TLS_AGAIN, TLS_CLOSED,
 * TLS_FAILED. Drives the handshake too; call tls_conn_take afterwards, as it
 * may have produced records to send (handshake messages, alerts, tickets). */
long tls_conn_read(tls_conn *t, char *buf, size_t cap);
/* Encrypts plaintext for the peer. Returns 0, or -1 when the connection
 * cannot send (handshake not done, failed, or out of memory). */
int tls_conn_write(tls_conn *t, const char *data, size_t len);
/* Queues a close_notify alert. */
void tls_conn_close_notify(tls_conn *t);
/* Moves up to cap bytes of ciphertext waiting to be sent into buf; returns
 * how many (0: none). */
size_t tls_conn_take(tls_conn *t, char *buf, size_t cap);

/* 1 once the handshake is complete. */
int tls_conn_established(const tls_conn *t);
/* After TLS_FAILED: the reason as a metric label (protocol_version,
 * no_shared_cipher, alpn, client_certificate, certificate_rejected,
 * plain_http, malformed, other). */
const char *tls_conn_failure(const tls_conn *t);
/* Counts a handshake that never finished because the connection timed out
 * or closed (reason "timeout" or "closed"); nothing when it finished or never
 * began. */
void tls_conn_abandon(tls_conn *t, const char *reason);
/* An idle connection gives back its buffers (the SSL state stays). */
void tls_conn_trim(tls_conn *t);

#endif
