/* libFuzzer target: the HTTP front end (core/net/http_server.c with llhttp), bytes in, answers out,
 * through the real connection code on one end of a socketpair. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <llhttp.h>

#include "envelope.h"
#include "http_server.h"
#include "log.h"
#include "verify.h"

#define SECRET "test-secret"
/* Answers a harness keeps: enough for any input the fuzzer makes (max_len
 * is small), bounded so that a runaway server shows up as a failure. */
#define MAX_OUT (1 << 20)
#define MAX_DEFERRED 64

static uv_loop_t loop;
static config_limits limits = {.max_body_bytes = 4096,
                               .max_header_bytes = 2048,
                               .header_timeout_ms = 10000,
                               .body_timeout_ms = 10000,
                               .idle_timeout_ms = 10000,
                               .max_connections = 16};
static size_t open_conns;
static http_server srv;
static verify_config vcfg;
static envelope_spec spec = {.format = ENVELOPE_CIRRUS_INSIGHT};
static uv_idle_t later;
static http_conn *deferred[MAX_DEFERRED];
static size_t n_deferred;

static const char *hdr(void *ctx, const char *name, size_t *len) {
  return http_request_header(ctx, name, len);
}

static int on_headers(void *data, http_conn *c, http_request *req) {
  (void)data;
  (void)c;
  if (strcmp(req->path, "/deny") == 0) return 403;
  if (strcmp(req->path, "/webhooks/cirrus") != 0) return 404;
  if (req->method != HTTP_POST) return 405;
  return 0;
}

static void on_later(uv_idle_t *h) {
  for (size_t i = 0; i < n_deferred; i++) http_conn_respond(deferred[i], 200, NULL, NULL, 0);
  n_deferred = 0;
  uv_idle_stop(h);
}

/* The server's request path without the spool: verify, decode, answer;
 * some answers come on a later loop turn, as the spool's do. */
static void on_request(void *data, http_conn *c, http_request *req) {
  (void)data;
  verify_input in = {hdr, req, req->body, req->body_len, 1700000000};
  if (verify_request(&vcfg, &in) != 0) {
    http_conn_respond_text(c, 401, "unauthorized");
    return;
  }
  envelope env;
  const char *reason = NULL;
  if (envelope_decode(&spec, req->body, req->body_len, &env, &reason) != 0) {
    http_conn_respond_text(c, 400, reason);
    return;
  }
  envelope_clear(&env);
  if ((req->body_len & 1) && n_deferred < MAX_DEFERRED) {
    deferred[n_deferred++] = c;
    uv_idle_start(&later, on_later);
    return;
  }
  http_conn_respond(c, 200, NULL, NULL, 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  signal(SIGPIPE, SIG_IGN);
  log_setup(HLOG_ERROR, HLOG_FORMAT_TEXT);
  uv_loop_init(&loop);
  uv_idle_init(&loop, &later);
  srv = (http_server){.loop = &loop,
                      .limits = &limits,
                      .handler = {.on_headers = on_headers, .on_request = on_request},
                      .open_conns = &open_conns};
  char err[128];
  vcfg.scheme = VERIFY_HMAC;
  vcfg.algorithm = VERIFY_SHA256;
  vcfg.encoding = VERIFY_HEX;
  vcfg.header = strdup("X-Signature");
  vcfg.prefix = strdup("");
  vcfg.tolerance_s = 300;
  vcfg.secrets = calloc(1, sizeof *vcfg.secrets);
  vcfg.n_secrets = 1;
  if (verify_secret_set(VERIFY_HMAC, SECRET, &vcfg.secrets[0], err, sizeof err) != 0) abort();
  return 0;
}

static int allowed_status(int st) {
  static const int ok[] = {200, 400, 401, 403, 404, 405, 408, 413, 415, 417, 431, 503};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    if (st == ok[i]) return 1;
  return 0;
}

/* Every byte the server wrote must be a sequence of well-formed answers,
 * with nothing after one that says Connection: close. */
static void check_answers(const char *out, size_t n) {
  size_t pos = 0;
  while (pos < n) {
    const char *p = out + pos;
    size_t left = n - pos;
    if (left < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0) abort();
    /* An interim answer to Expect: 100-continue has no headers and no body. */
    if (left >= 25 && memcmp(p, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0) {
      pos += 25;
      continue;
    }
    int st = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (!allowed_status(st)) abort();
    const char *end = memmem(p, left, "\r\n\r\n", 4);
    if (!end) abort();
    size_t head = (size_t)(end - p) + 4;
    const char *cl = memmem(p, head, "\r\nContent-Length: ", 18);
    if (!cl) abort();
    size_t body = strtoul(cl + 18, NULL, 10);
    if (head + body > left) abort();
    int closes = memmem(p, head, "\r\nConnection: close\r\n", 21) != NULL;
    pos += head + body;
    if (closes && pos != n) abort();
  }
}

static size_t drain(int fd, char *out, size_t n, int *eof) {
  for (;;) {
    if (n == MAX_OUT) abort();
    ssize_t r = read(fd, out + n, MAX_OUT - n);
    if (r > 0) {
      n += (size_t)r;
      continue;
    }
    if (r == 0) *eof = 1;
    return n;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char out[MAX_OUT];
  int sv[2];
  if (size < 1) return 0;
  /* The first byte picks the write size, so requests split at every place. */
  size_t chunk = (size_t)data[0] * 7 + 1;
  data++;
  size--;
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) abort();
  fcntl(sv[1], F_SETFL, O_NONBLOCK);
  if (http_server_open_fd(&srv, sv[0], NULL) != 0) abort();

  size_t off = 0, n = 0;
  int eof = 0, shut = 0;
  for (int spins = 0; !eof; spins++) {
    if (off < size) {
      size_t want = size - off < chunk ? size - off : chunk;
      ssize_t w = write(sv[1], data + off, want);
      if (w > 0)
        off += (size_t)w;
      else if (w < 0 && errno != EAGAIN)
        off = size; /* the server closed */
    } else if (!shut) {
      shutdown(sv[1], SHUT_WR);
      shut = 1;
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    n = drain(sv[1], out, n, &eof);
    /* After EOF the server must close within a few turns of its loop. */
    if (spins > 100000) abort();
  }
  if (!shut) shutdown(sv[1], SHUT_WR); /* answered with close before all was sent */
  /* Let the connection finish closing (its handles' close callbacks). */
  for (int i = 0; i < 1000 && open_conns > 0; i++) uv_run(&loop, UV_RUN_NOWAIT);
  if (open_conns != 0) abort();
  close(sv[1]);
  check_answers(out, n);
  return 0;
}
