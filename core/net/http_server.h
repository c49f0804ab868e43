/* HTTP/1.1 connections: llhttp parsing, limits before buffering, timeouts, pipelining, answers. */
#ifndef HOOKD_HTTP_SERVER_H
#define HOOKD_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "config_limits.h"
#include "tls.h"

typedef struct http_conn http_conn;

typedef struct http_header {
  const char *name; /* NUL-terminated, as sent */
  const char *value;
  size_t value_len;
} http_header;

/* One parsed request. Everything is borrowed from the connection and valid
 * until the answer is sent. */
typedef struct http_request {
  int method;        /* llhttp_method_t */
  const char *path;  /* without the query string, NUL-terminated */
  const char *query; /* what followed '?' (NUL-terminated, not decoded), or NULL */
  http_header *headers;
  size_t n_headers;
  const char *body; /* NUL-terminated (the NUL is not counted) */
  size_t body_len;
  const void *route;  /* set by on_headers for on_request */
  void *ctx;          /* the handler's own, set by on_headers, handed to on_release */
  const char *reason; /* on_headers may set a static one-line text for its refusal */
} http_request;

/* What a listener does with requests. Both run on the loop thread. */
typedef struct http_handler {
  /* Called when the headers are complete, before any body byte is buffered.
   * Returns 0 to read the body and call on_request, or an HTTP status to
   * answer instead; the body is then read and discarded (not buffered), or,
   * when the client sent "Expect: 100-continue" and waits, not read at all:
   * the answer goes at once and the connection closes. A request that is
   * taken and expects 100-continue gets its "100 Continue" right after. */
  int (*on_headers)(void *data, http_conn *c, http_request *req);
  /* Called with the complete request. It must answer exactly once with
   * http_conn_respond(), now or later (the connection reads no further request
   * until then). */
  void (*on_request)(void *data, http_conn *c, http_request *req);
  void *data;
  /* Optional: called for a new connection before any byte is read. Returns
   * 0 to serve it, non-zero to close it at once without an answer. */
  int (*on_accept)(void *data, http_conn *c);
  /* The Allow header of a 405 answer ("POST" when NULL). */
  const char *allow;
  /* Optional: called once for every request whose on_headers returned 0,
   * after on_request returned or when the request was abandoned (the
   * connection closed first), so what on_headers took can be given back. */
  void (*on_release)(void *data, http_request *req);
  /* Optional: called for every answer of 400 or more, just before it is
   * sent, with the request as far as it was read (path NULL when the request
   * line was not complete) and the answer's body (may be NULL), so that the
   * handler can keep a list of refusals. Must not answer. */
  void (*on_refused)(void *data, http_conn *c, const http_request *req, int status,
                     const char *body, size_t body_len);
} http_handler;

/* Shared state of the connections of one listener. */
typedef struct http_server {
  uv_loop_t *loop;
  const config_limits *limits;
  http_handler handler;
  size_t *open_conns;      /* counter shared by all listeners, checked against max_connections */
  int draining;            /* shutting down: answer the request in progress, then close */
  struct http_conn *conns; /* list of open connections */
  void (*on_empty)(void *data); /* called when the last connection closed while draining */
  void *on_empty_data;
} http_server;

/* Accepts a pending connection on the listening stream; tls is the
 * listener's current TLS context (the connection references it), NULL for
 * plain HTTP. */
void http_server_accept(http_server *srv, uv_stream_t *listener, tls_ctx *tls);

/* Serves a connected stream socket it takes over (closed with the
 * connection), like an accepted one: for in-process drivers such as the
 * fuzz harness, which hands in one end of a socketpair. Returns 0 or a
 * negative libuv error (fd then left open). */
int http_server_open_fd(http_server *srv, uv_os_sock_t fd, tls_ctx *tls);

/* Answers the request in progress. extra_headers: "Name: value\r\n" lines or
 * NULL; body may be NULL. After the answer the connection reads the next
 * request (keep-alive) or closes. */
void http_conn_respond(http_conn *c, int status, const char *extra_headers, const char *body,
                       size_t body_len);
/* Shorthand: a text/plain one-line answer. */
void http_conn_respond_text(http_conn *c, int status, const char *text);

/* The value of a request header (case-insensitive name), or NULL. */
const char *http_request_header(const http_request *req, const char *name, size_t *len);

/* The peer address as text ("1.2.3.4:5678"), for logs. */
const char *http_conn_peer(http_conn *c);

/* The peer address. Returns 0, or -1 when unknown (not an IP socket). */
int http_conn_peer_addr(http_conn *c, struct sockaddr_storage *out);

/* Starts draining: idle connections close now, busy ones after their answer. */
void http_server_drain(http_server *srv);
/* Returns the memory that idle connections gave back to the system (when
 * any did since the last call). Loop thread; the daemon calls it once a
 * second. */
void http_server_release_memory(void);

/* Closes every connection except those whose request waits for an answer
 * from the spool (shutdown past its deadline: slow clients are cut off). */
void http_server_abort(http_server *srv);

const char *http_server_status_text(int status);

#endif
