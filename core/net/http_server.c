/* HTTP/1.1 connections: llhttp callbacks, limits checked before buffering, timeouts, pipelining and
 * answers. */
#include "http_server.h"

#include <llhttp.h>
#include <malloc.h>
#include <zlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "metrics.h"
#include "tls.h"

#define MAX_HEADERS 100
/* Stop reading from a client that does not read its answers past this much
 * queued output. */
#define WRITE_QUEUE_HIGH (256 * 1024)
/* After an answer that closes the connection, unread input is drained this
 * long so the client sees the answer rather than a reset. */
#define LINGER_MS 2000
#define LINGER_BYTES (1024 * 1024)
/* An idle connection gives its buffers back after this long. */
#define TRIM_MS 1000
/* A kept body buffer larger than this is released after its request. */
#define BODY_KEEP_BYTES (64 * 1024)
/* A gzip body may inflate at most this many times its size (once past
 * RATIO_FREE_BYTES): more is a decompression bomb, refused with 413 even
 * under max_body_bytes, since every such request would cost the CPU. */
#define MAX_INFLATE_RATIO 100
#define RATIO_FREE_BYTES (64 * 1024)

typedef enum {
  ST_FRESH,    /* connected, no request byte yet */
  ST_IDLE,     /* between keep-alive requests */
  ST_HEADERS,  /* reading a request line and headers */
  ST_BODY,     /* reading a body */
  ST_HANDLING, /* request complete, waiting for the handler's answer */
  ST_LINGER,   /* answered with close: draining input until EOF */
  ST_CLOSED
} conn_state;

typedef struct hdr_span {
  uint32_t name_off, value_off, value_len;
} hdr_span;

struct http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shutdown_req;
  llhttp_t parser;
  http_server *srv;
  struct http_conn *prev, *next;
  conn_state state;
  int open_handles;
  int reading;
  int in_callback; /* inside llhttp_execute */
  int answered;    /* the current request has its answer */
  int paused;      /* parser paused until the answer */
  int keep_alive;
  int fatal_status;  /* a limit broken inside a callback: answer and close */
  int reject_status; /* decided at headers: discard the body, then answer */
  int req_open;      /* on_headers accepted the request; on_release is owed */
  int gzip;          /* Content-Encoding: gzip: the body is inflated when complete */
  int in_field, in_value;
  /* Where the current feed() buffer and the last header value piece end,
   * to tell a folded value from one split across reads. */
  const char *feed_start, *feed_end, *val_end;
  int val_at_end;
  /* Request line and headers, NUL-separated, offsets in hdr. */
  char *arena;
  size_t arena_len, arena_cap, header_bytes;
  uint32_t url_off;
  /* Grown on demand (16, 32, ... MAX_HEADERS) so an idle connection that
   * never sent a request holds none. */
  hdr_span *hdr;
  http_header *headers;
  size_t n_hdr, hdr_cap;
  char *body;
  size_t body_len, body_cap;
  /* Input received after a request whose answer is pending. */
  char *pending;
  size_t pending_len;
  size_t linger_bytes;   /* input discarded while lingering */
  uint64_t idle_left_ms; /* idle time left after the buffers were dropped */
  /* TLS listeners: the context until the first byte (the SSL state is made
   * only for a client that speaks), then the connection's TLS state. */
  tls_ctx *tls_pending;
  tls_conn *tls;
  uint64_t accepted_ms; /* uv_now at accept: the first request's header deadline */
  unsigned long served; /* requests answered */
  http_request req;
  char peer[64];
};

typedef struct write_req {
  uv_write_t req;
  http_conn *c;
  char data[];
} write_req;

static llhttp_settings_t settings;
static int settings_ready;

static void conn_close(http_conn *c);
static void conn_write(http_conn *c, const char *data, size_t len);
static void release_req(http_conn *c);
static void conn_update_reading(http_conn *c);
static void feed(http_conn *c, const char *data, size_t len);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

const char *http_server_status_text(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return status >= 200 && status < 300 ? "OK" : "Error";
  }
}

/* A connection idle for TRIM_MS keeps no buffers: it then costs its
 * handles and this struct only. Busy connections keep them, so a stream of
 * requests allocates nothing. Never inside llhttp callbacks. */
static unsigned long trims; /* idle_trim calls, for http_server_release_memory */

static void idle_trim(http_conn *c) {
  trims++;
  free(c->body);
  c->body = NULL;
  c->body_cap = 0;
  free(c->arena);
  c->arena = NULL;
  c->arena_cap = c->arena_len = 0;
  free(c->hdr);
  free(c->headers);
  c->hdr = NULL;
  c->headers = NULL;
  c->hdr_cap = c->n_hdr = 0;
  memset(&c->req, 0, sizeof c->req);
  if (c->tls) tls_conn_trim(c->tls);
}

/* --- timers and state ------------------------------------------------------ */

static void on_timer(uv_timer_t *t) {
  http_conn *c = t->data;
  switch (c->state) {
    case ST_HEADERS:
    case ST_BODY: {
      /* A slow client: answer 408 and close, whatever it sends next. */
      const char *why = c->state == ST_BODY ? "body too slow" : "headers too slow";
      c->keep_alive = 0;
      c->reject_status = 0;
      c->answered = 0;
      c->state = ST_HANDLING;
      http_conn_respond_text(c, 408, why);
      break;
    }
    case ST_HANDLING:
      break;
    case ST_IDLE:
      if (c->idle_left_ms > 0) {
        idle_trim(c);
        uv_timer_start(&c->timer, on_timer, c->idle_left_ms, 0);
        c->idle_left_ms = 0;
        break;
      }
      conn_close(c);
      break;
    default:
      if (c->state == ST_FRESH && c->tls) tls_conn_abandon(c->tls, "timeout");
      conn_close(c);
      break;
  }
}

static void set_state(http_conn *c, conn_state st) {
  const config_limits *l = c->srv->limits;
  c->state = st;
  uint64_t ms = 0;
  switch (st) {
    case ST_FRESH:
    case ST_HEADERS:
      ms = l->header_timeout_ms;
      /* Over TLS the handshake counts against the first request's header
       * time: the deadline runs from the accept, not from the first
       * decrypted byte. */
      if (st == ST_HEADERS && c->tls && c->served == 0) {
        uint64_t spent = uv_now(c->srv->loop) - c->accepted_ms;
        ms = spent < ms ? ms - spent : 1;
      }
      break;
    case ST_IDLE:
      /* First a short wait to drop the buffers, then the rest of the idle
       * timeout. */
      ms = l->idle_timeout_ms;
      c->idle_left_ms = ms > TRIM_MS ? ms - TRIM_MS : 0;
      if (ms > TRIM_MS) ms = TRIM_MS;
      break;
    case ST_BODY:
      ms = l->body_timeout_ms;
      break;
    case ST_LINGER:
      ms = LINGER_MS;
      break;
    default:
      break;
  }
  if (ms) {
    uv_timer_start(&c->timer, on_timer, ms, 0);
  } else {
    uv_timer_stop(&c->timer);
  }
}

/* --- llhttp callbacks ----------------------------------------------------- */

static int arena_put(http_conn *c, const char *at, size_t n) {
  if (c->arena_len + n + 1 > c->arena_cap) {
    size_t cap = c->arena_cap ? c->arena_cap : 1024;
    while (cap < c->arena_len + n + 1) cap *= 2;
    char *a = realloc(c->arena, cap);
    if (a == NULL) return -1;
    c->arena = a;
    c->arena_cap = cap;
  }
  memcpy(c->arena + c->arena_len, at, n);
  c->arena_len += n;
  return 0;
}

/* Counts request-line and header bytes against max_header_bytes, so a flood
 * of headers is refused before it is held. */
static int header_bytes(http_conn *c, size_t n) {
  c->header_bytes += n;
  if (c->header_bytes > c->srv->limits->max_header_bytes) {
    c->fatal_status = 431;
    return -1;
  }
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  http_conn *c = p->data;
  c->arena_len = 0;
  c->header_bytes = 0;
  c->n_hdr = 0;
  c->in_field = c->in_value = 0;
  c->body_len = 0;
  c->reject_status = 0;
  c->answered = 0;
  c->url_off = 0;
  memset(&c->req, 0, sizeof c->req);
  set_state(c, ST_HEADERS);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = p->data;
  if (header_bytes(c, n) != 0) return -1;
  return arena_put(c, at, n);
}

static int on_url_complete(llhttp_t *p) {
  http_conn *c = p->data;
  return arena_put(c, "", 1);
}

/* Starts a new header entry; -1 past MAX_HEADERS (431) or out of memory. */
static int new_header(http_conn *c) {
  if (c->n_hdr == MAX_HEADERS) {
    c->fatal_status = 431;
    return -1;
  }
  if (c->n_hdr == c->hdr_cap) {
    size_t cap = c->hdr_cap ? c->hdr_cap * 2 : 16;
    if (cap > MAX_HEADERS) cap = MAX_HEADERS;
    hdr_span *h = realloc(c->hdr, cap * sizeof *h);
    if (h) c->hdr = h;
    http_header *hh = h ? realloc(c->headers, cap * sizeof *hh) : NULL;
    if (hh == NULL) {
      c->fatal_status = 503;
      return -1;
    }
    c->headers = hh;
    c->hdr_cap = cap;
  }
  c->hdr[c->n_hdr++].name_off = (uint32_t)c->arena_len;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = p->data;
  if (header_bytes(c, n) != 0) return -1;
  if (!c->in_field) {
    if (new_header(c) != 0) return -1;
    c->in_field = 1;
  }
  return arena_put(c, at, n);
}

static int on_header_field_complete(llhttp_t *p) {
  http_conn *c = p->data;
  if (!c->in_field) { /* an empty name: llhttp rejects these, but be safe */
    if (new_header(c) != 0) return -1;
  }
  c->in_field = 0;
  return arena_put(c, "", 1);
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = p->data;
  if (header_bytes(c, n) != 0) return -1;
  /* llhttp accepts an obsolete folded line (CRLF and a blank inside a
   * value) and hands the value over in two pieces with the fold skipped.
   * Two pieces that are neither adjacent in one buffer nor split exactly at
   * a buffer's end have a fold between them. RFC 9112 5.2 lets a server
   * refuse it, and a value read one way here and another by a proxy in
   * front is how requests get smuggled. */
  if (c->in_value && at != c->val_end && !(at == c->feed_start && c->val_at_end)) {
    c->fatal_status = 400;
    c->req.reason = "malformed HTTP: obsolete line folding in a header";
    return -1;
  }
  c->val_end = at + n;
  c->val_at_end = at + n == c->feed_end;
  if (!c->in_value) {
    c->hdr[c->n_hdr - 1].value_off = (uint32_t)c->arena_len;
    c->in_value = 1;
  }
  return arena_put(c, at, n);
}

static int on_header_value_complete(llhttp_t *p) {
  http_conn *c = p->data;
  hdr_span *h = &c->hdr[c->n_hdr - 1];
  if (!c->in_value) h->value_off = (uint32_t)c->arena_len;
  h->value_len = (uint32_t)(c->arena_len - h->value_off);
  c->in_value = 0;
  return arena_put(c, "", 1);
}

/* An absolute-form target ("http://host/webhooks/x?q", RFC 9112 3.2.2) is
 * reduced to its path; others are returned as they are. */
static char *absolute_form_path(char *url) {
  size_t skip = strncasecmp(url, "http://", 7) == 0    ? 7
                : strncasecmp(url, "https://", 8) == 0 ? 8
                                                       : 0;
  if (skip == 0) return url;
  char *slash = strchr(url + skip, '/');
  if (slash) return slash;
  /* "http://host" or "http://host?q": the path is "/". */
  char *q = strchr(url + skip, '?');
  char *end = q ? q : url + strlen(url);
  end[-1] = '/';
  return end - 1;
}

/* Content-Encoding: 0 none or identity, 1 gzip, -1 anything else (415). */
static int content_coding(http_conn *c) {
  int n = 0, gzip = 0;
  for (size_t i = 0; i < c->req.n_headers; i++) {
    if (strcasecmp(c->req.headers[i].name, "Content-Encoding") != 0) continue;
    const char *v = c->req.headers[i].value;
    size_t len = c->req.headers[i].value_len;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
    while (len > 0 && (*v == ' ' || *v == '\t')) v++, len--;
    if (len == 8 && strncasecmp(v, "identity", 8) == 0) continue;
    if ((len == 4 && strncasecmp(v, "gzip", 4) == 0) ||
        (len == 6 && strncasecmp(v, "x-gzip", 6) == 0)) {
      gzip = 1;
      n++;
      continue;
    }
    return -1; /* another coding, or a list of them */
  }
  return n > 1 ? -1 : gzip;
}

/* Expect (RFC 9110 10.1.1): 1 for "100-continue" on an HTTP/1.1 request
 * that has a body to send, 0 when there is nothing to answer (no header,
 * HTTP/1.0, no body), -1 for any other expectation (417). */
static int expectation(http_conn *c, const llhttp_t *p) {
  size_t len = 0;
  const char *v = http_request_header(&c->req, "Expect", &len);
  if (v == NULL) return 0;
  while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
  while (len > 0 && (*v == ' ' || *v == '\t')) v++, len--;
  if (len != 12 || strncasecmp(v, "100-continue", 12) != 0) return -1;
  if (p->http_major != 1 || p->http_minor == 0) return 0;
  int body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
  return body ? 1 : 0;
}

static int on_headers_complete(llhttp_t *p) {
  http_conn *c = p->data;
  if (c->arena == NULL && arena_put(c, "", 1) != 0) return -1;
  /* The arena no longer moves: hand out pointers into it. */
  for (size_t i = 0; i < c->n_hdr; i++) {
    c->headers[i].name = c->arena + c->hdr[i].name_off;
    c->headers[i].value = c->arena + c->hdr[i].value_off;
    c->headers[i].value_len = c->hdr[i].value_len;
  }
  char *path = absolute_form_path(c->arena + c->url_off);
  char *q = strchr(path, '?');
  if (q) {
    *q = '\0';
    c->req.query = q + 1;
  }
  c->req.method = llhttp_get_method(p);
  c->req.path = path;
  c->req.headers = c->headers;
  c->req.n_headers = c->n_hdr;

  uint64_t max = c->srv->limits->max_body_bytes;
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > max) {
    c->fatal_status = 413;
    return -1;
  }
  int expect = expectation(c, p);
  if (expect < 0) {
    c->req.reason = "only \"Expect: 100-continue\" is supported";
    c->fatal_status = 417;
    return -1;
  }
  int coding = content_coding(c);
  int st = c->srv->handler.on_headers(c->srv->handler.data, c, &c->req);
  if (st == 0) c->req_open = 1;
  if (st == 0 && coding < 0) {
    release_req(c);
    c->req.reason = "unsupported Content-Encoding (hookd takes gzip or none)";
    st = 415;
  }
  c->gzip = coding == 1;
  if (st != 0 && expect) {
    /* The client waits for a 100 before it sends the body: the final
     * answer goes now, and the connection closes after it. */
    c->fatal_status = st;
    return -1;
  }
  if (st == 0 && expect) conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
  if (st != 0) {
    c->reject_status = st;
  } else if ((p->flags & F_CONTENT_LENGTH) && p->content_length + 1 > c->body_cap) {
    char *b = realloc(c->body, p->content_length + 1);
    if (b == NULL) {
      c->fatal_status = 503;
      return -1;
    }
    c->body = b;
    c->body_cap = p->content_length + 1;
  }
  set_state(c, ST_BODY);
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
  http_conn *c = p->data;
  uint64_t max = c->srv->limits->max_body_bytes;
  if (c->body_len + n > max) { /* chunked bodies grow here */
    c->fatal_status = 413;
    return -1;
  }
  if (c->reject_status) {
    c->body_len += n; /* counted, not kept */
    return 0;
  }
  if (c->body_len + n + 1 > c->body_cap) {
    size_t cap = c->body_cap ? c->body_cap : 4096;
    while (cap < c->body_len + n + 1) cap *= 2;
    if (cap > max + 1) cap = max + 1;
    char *b = realloc(c->body, cap);
    if (b == NULL) {
      c->fatal_status = 503;
      return -1;
    }
    c->body = b;
    c->body_cap = cap;
  }
  memcpy(c->body + c->body_len, at, n);
  c->body_len += n;
  return 0;
}

/* A chunk announces its size first: one that would take the body past the
 * limit is refused now, not after the client has sent max_body_bytes. */
static int on_chunk_header(llhttp_t *p) {
  http_conn *c = p->data;
  uint64_t max = c->srv->limits->max_body_bytes;
  if (p->content_length > max || c->body_len + p->content_length > max) {
    c->fatal_status = 413;
    return -1;
  }
  return 0;
}

/* Replaces a gzip body by its inflated bytes, max_body_bytes applying to
 * those. Returns 0, or the status to answer with req.reason set: 413 past
 * the limit or the ratio, 400 for a body that is not gzip. */
static int inflate_body(http_conn *c) {
  uint64_t max = c->srv->limits->max_body_bytes;
  uint64_t ratio_cap = (uint64_t)c->body_len * MAX_INFLATE_RATIO;
  if (ratio_cap < RATIO_FREE_BYTES) ratio_cap = RATIO_FREE_BYTES;
  int status = 0;
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, 15 + 16) != Z_OK) { /* 16: gzip framing only */
    c->req.reason = "out of memory";
    return 503;
  }
  size_t cap = c->body_len * 4 + 1024, len = 0;
  char *out = NULL;
  int rc = Z_OK;
  z.next_in = (unsigned char *)c->body;
  z.avail_in = (uInt)c->body_len;
  while (rc == Z_OK) {
    if (len + 1 >= cap || out == NULL) {
      if (out) cap *= 2;
      if (cap > max + 2) cap = max + 2; /* one byte past the limit shows it is over */
      char *b = realloc(out, cap);
      if (b == NULL) {
        status = 503;
        c->req.reason = "out of memory";
        break;
      }
      out = b;
    }
    z.next_out = (unsigned char *)out + len;
    z.avail_out = (uInt)(cap - 1 - len);
    rc = inflate(&z, Z_NO_FLUSH);
    len = cap - 1 - z.avail_out;
    if (len > max || len > ratio_cap) {
      status = 413;
      c->req.reason = len > max ? "inflated body larger than max_body_bytes"
                                : "gzip body inflates more than 100 times: refused";
      break;
    }
    if (rc == Z_BUF_ERROR && z.avail_out != 0) break; /* input ended early */
    if (rc == Z_BUF_ERROR) rc = Z_OK;
  }
  /* A complete stream, and nothing after it (no second member). */
  if (status == 0 && (rc != Z_STREAM_END || z.avail_in != 0)) {
    status = 400;
    c->req.reason = "body is not valid gzip";
  }
  inflateEnd(&z);
  if (status) {
    free(out);
    return status;
  }
  free(c->body);
  c->body = out;
  c->body_cap = cap;
  c->body_len = len;
  return 0;
}

/* Answers a request refused at its headers (status from on_headers, or
 * 417), with Allow on a 405 and the handler's one-line reason. */
static void answer_refusal(http_conn *c, int st, const char *reason) {
  char allow[96] = "";
  if (st == 405) {
    snprintf(allow, sizeof allow, "Allow: %s\r\n",
             c->srv->handler.allow ? c->srv->handler.allow : "POST");
  }
  if (reason) {
    char body[256];
    int n = snprintf(body, sizeof body, "%s\n", reason);
    if (n < 0 || (size_t)n >= sizeof body) n = 0;
    http_conn_respond(c, st, st == 405 ? allow : NULL, body, (size_t)n);
  } else {
    http_conn_respond(c, st, st == 405 ? allow : NULL, NULL, 0);
  }
}

static int on_message_complete(llhttp_t *p) {
  http_conn *c = p->data;
  c->keep_alive = llhttp_should_keep_alive(p) && !c->srv->draining;
  c->state = ST_HANDLING;
  uv_timer_stop(&c->timer);
  int st;
  if (c->reject_status) {
    answer_refusal(c, c->reject_status, c->req.reason);
  } else if (c->gzip && (st = inflate_body(c)) != 0) {
    release_req(c);
    http_conn_respond_text(c, st, c->req.reason);
  } else {
    if (c->body) c->body[c->body_len] = '\0';
    c->req.body = c->body ? c->body : "";
    c->req.body_len = c->body_len;
    c->srv->handler.on_request(c->srv->handler.data, c, &c->req);
    release_req(c);
  }
  if (c->state == ST_CLOSED || c->state == ST_LINGER) return HPE_PAUSED;
  /* No answer yet (it will come from the spool): stop parsing here so a
   * pipelined request waits its turn. */
  if (!c->answered) {
    c->paused = 1;
    return HPE_PAUSED;
  }
  return 0;
}

/* --- writing --------------------------------------------------------------- */

static void on_write(uv_write_t *w, int status) {
  write_req *wr = (write_req *)w;
  http_conn *c = wr->c;
  free(wr);
  if (status < 0) {
    conn_close(c);
    return;
  }
  conn_update_reading(c);
}

/* Writes bytes to the socket as they are (ciphertext on a TLS connection). */
static void sock_write(http_conn *c, const char *data, size_t len) {
  if (c->state == ST_CLOSED) return;
  if (c->tcp.write_queue_size == 0) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len) return;
    if (n > 0) {
      data += n;
      len -= (size_t)n;
    } else if (n != UV_EAGAIN) {
      conn_close(c);
      return;
    }
  }
  write_req *wr = malloc(sizeof *wr + len);
  if (wr == NULL) {
    conn_close(c);
    return;
  }
  wr->c = c;
  memcpy(wr->data, data, len);
  uv_buf_t b = uv_buf_init(wr->data, (unsigned)len);
  if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
    free(wr);
    conn_close(c);
    return;
  }
  /* A client that sends requests but does not read the answers: stop
   * reading it until its queued answers drain (on_write resumes). */
  if (c->tcp.write_queue_size >= WRITE_QUEUE_HIGH) conn_update_reading(c);
}

/* Sends what the TLS layer has queued (records, alerts, tickets). */
static void tls_flush(http_conn *c) {
  char buf[17 * 1024];
  size_t n;
  while (c->state != ST_CLOSED && (n = tls_conn_take(c->tls, buf, sizeof buf)) > 0)
    sock_write(c, buf, n);
}

static void conn_write(http_conn *c, const char *data, size_t len) {
  if (c->state == ST_CLOSED) return;
  if (c->tls == NULL) {
    sock_write(c, data, len);
    return;
  }
  if (tls_conn_write(c->tls, data, len) != 0) {
    conn_close(c);
    return;
  }
  tls_flush(c);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status;
}

/* --- connection lifecycle --------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h) {
  http_conn *c = h->data;
  if (--c->open_handles > 0) return;
  http_server *srv = c->srv;
  free(c->arena);
  free(c->hdr);
  free(c->headers);
  free(c->body);
  free(c->pending);
  tls_conn_free(c->tls);
  tls_ctx_unref(c->tls_pending);
  free(c);
  (*srv->open_conns)--;
  METRICS_DEC(g_metrics.connections_open);
  if (srv->draining && srv->conns == NULL && srv->on_empty) srv->on_empty(srv->on_empty_data);
}

/* Gives the handler back what its on_headers took for this request. */
static void release_req(http_conn *c) {
  if (!c->req_open) return;
  c->req_open = 0;
  if (c->srv->handler.on_release) c->srv->handler.on_release(c->srv->handler.data, &c->req);
}

static void conn_close(http_conn *c) {
  if (c->state == ST_CLOSED) return;
  release_req(c);
  c->state = ST_CLOSED;
  if (c->prev) {
    c->prev->next = c->next;
  } else {
    c->srv->conns = c->next;
  }
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  /* One read buffer for the loop: input is parsed at once, and what must
   * outlive the read (a pipelined request behind a pending answer) is
   * copied out. */
  static char buf[64 * 1024];
  (void)h;
  (void)suggested;
  *b = uv_buf_init(buf, sizeof buf);
}

static void conn_update_reading(http_conn *c) {
  if (c->state == ST_CLOSED) return;
  int want = !c->paused && c->tcp.write_queue_size < WRITE_QUEUE_HIGH;
  if (want == c->reading) return;
  c->reading = want;
  if (want) {
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
  } else {
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
}

/* Keeps input that arrived behind a paused request. */
static void stash(http_conn *c, const char *data, size_t len) {
  if (len == 0) return;
  char *p = realloc(c->pending, c->pending_len + len);
  if (p == NULL) {
    conn_close(c);
    return;
  }
  memcpy(p + c->pending_len, data, len);
  c->pending = p;
  c->pending_len += len;
}

static void feed(http_conn *c, const char *data, size_t len) {
  c->feed_start = data;
  c->feed_end = data + len;
  c->in_callback = 1;
  llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
  c->in_callback = 0;
  if (err == HPE_OK || c->state == ST_CLOSED) return;
  if (err == HPE_PAUSED && c->state != ST_LINGER) {
    const char *pos = llhttp_get_error_pos(&c->parser);
    size_t used = pos ? (size_t)(pos - data) : len;
    stash(c, data + used, len - used);
    conn_update_reading(c);
    return;
  }
  if (c->state == ST_LINGER) return; /* answered with close: ignore the rest */
  /* A broken limit or malformed HTTP: answer and close. */
  int st = c->fatal_status ? c->fatal_status : 400;
  c->keep_alive = 0;
  c->state = ST_HANDLING;
  c->answered = 0;
  if (st == 400 && c->req.reason) {
    http_conn_respond_text(c, 400, c->req.reason);
  } else if (st == 400) {
    char msg[160];
    snprintf(msg, sizeof msg, "malformed HTTP: %s", llhttp_get_error_reason(&c->parser));
    http_conn_respond_text(c, 400, msg);
  } else if (st == 413) {
    http_conn_respond_text(c, 413, "body larger than max_body_bytes");
  } else if (st == 431) {
    http_conn_respond_text(c, 431, "headers larger than max_header_bytes");
  } else if (st == 503) {
    http_conn_respond(c, st, "Retry-After: 1\r\n", NULL, 0);
  } else {
    answer_refusal(c, st, c->req.reason); /* refused before an expected body */
  }
}

/* End of input: EOF, a read error or a TLS close_notify. A request waiting
 * for its answer keeps the connection object alive until then (the answer
 * is dropped); the spool's callback still refers to it. */
static void on_eof(http_conn *c) {
  if (c->state == ST_HANDLING && !c->answered) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    c->keep_alive = 0;
    c->paused = 1;
    return;
  }
  if (c->state == ST_FRESH && c->tls) tls_conn_abandon(c->tls, "closed");
  conn_close(c);
}

/* After a closing answer, or a TLS failure: half-close once the output is
 * written, then drain input for a while so the peer reads what was sent
 * instead of a reset. */
static void conn_finish(http_conn *c) {
  c->keep_alive = 0;
  c->paused = 0;
  set_state(c, ST_LINGER);
  uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown);
  conn_update_reading(c);
}

/* Plaintext from the peer (decrypted, on a TLS connection). */
static void take_plain(http_conn *c, const char *data, size_t len) {
  if (c->state == ST_LINGER || c->state == ST_CLOSED) return;
  if (c->paused) {
    stash(c, data, len); /* behind a request that waits for its answer */
    return;
  }
  feed(c, data, len);
}

/* A fatal TLS error: the alert goes out, the connection ends. It never
 * becomes a request, so nothing of it reaches a handler or a plugin. */
static void tls_failed(http_conn *c) {
  const char *why = tls_conn_failure(c->tls);
  if (log_enabled(HLOG_DEBUG)) {
    log_ctx ctx = {.peer = http_conn_peer(c)};
    log_write(HLOG_DEBUG, &ctx, "TLS %s failed: %s",
              tls_conn_established(c->tls) ? "connection" : "handshake", why);
  }
  tls_flush(c);
  if (c->state == ST_CLOSED) return;
  if (c->state == ST_HANDLING && !c->answered) {
    on_eof(c);
    return;
  }
  if (strcmp(why, "plain_http") == 0) {
    /* A client that sent plain HTTP to the TLS port reads why. */
    static const char ans[] =
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Length: 37\r\nConnection: close\r\n\r\nthis port speaks HTTPS: use https://\n";
    sock_write(c, ans, sizeof ans - 1);
    if (c->state == ST_CLOSED) return;
  }
  conn_finish(c);
}

/* Ciphertext from the socket: decrypt all of it now (plaintext that arrives
 * behind a pending answer is stashed like on a plain connection), so
 * nothing waits inside the TLS buffers for a read that may never come. */
static void tls_read(http_conn *c, const char *data, size_t len) {
  static char plain[16 * 1024]; /* one TLS record */
  if (c->tls == NULL) {
    c->tls = tls_conn_new(c->tls_pending);
    tls_ctx_unref(c->tls_pending);
    c->tls_pending = NULL;
    if (c->tls == NULL) {
      conn_close(c);
      return;
    }
  }
  if (tls_conn_put(c->tls, data, len) != 0) {
    on_eof(c);
    return;
  }
  for (;;) {
    long n = tls_conn_read(c->tls, plain, sizeof plain);
    if (n > 0) {
      take_plain(c, plain, (size_t)n);
      if (c->state == ST_CLOSED) return;
      continue;
    }
    tls_flush(c);
    if (c->state == ST_CLOSED || n == TLS_AGAIN) return;
    if (n == TLS_CLOSED) {
      on_eof(c);
    } else {
      tls_failed(c);
    }
    return;
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  http_conn *c = s->data;
  if (n < 0) {
    on_eof(c);
    return;
  }
  if (n == 0) return;
  if (c->state == ST_LINGER) {
    /* Draining after a closing answer, so the client reads it rather than a
     * reset; a client that keeps sending past LINGER_BYTES gets the reset. */
    c->linger_bytes += (size_t)n;
    if (c->linger_bytes > LINGER_BYTES) conn_close(c);
    return;
  }
  if (c->tls || c->tls_pending) {
    tls_read(c, b->base, (size_t)n);
    return;
  }
  feed(c, b->base, (size_t)n);
}

/* A new connection object on srv's list, its handles initialised but not
 * yet attached to a socket. */
static http_conn *conn_new(http_server *srv) {
  http_conn *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  if (!settings_ready) {
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_url_complete = on_url_complete;
    settings.on_header_field = on_header_field;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_chunk_header = on_chunk_header;
    settings.on_message_complete = on_message_complete;
    settings_ready = 1;
  }
  c->srv = srv;
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->open_handles = 2;
  (*srv->open_conns)++;
  METRICS_INC(g_metrics.connections_open);
  METRICS_INC(g_metrics.connections_total);
  c->next = srv->conns;
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  llhttp_init(&c->parser, HTTP_REQUEST, &settings);
  c->parser.data = c;
  return c;
}

/* Starts serving a connection whose socket is attached. */
static void conn_start(http_conn *c) {
  http_server *srv = c->srv;
  uv_tcp_nodelay(&c->tcp, 1);
  c->accepted_ms = uv_now(srv->loop);
  if (*srv->open_conns > srv->limits->max_connections) {
    METRICS_INC(g_metrics.connections_refused);
    if (c->tls_pending) {
      conn_close(c); /* no TLS session to answer in; a handshake is what overload spares */
      return;
    }
    c->keep_alive = 0;
    c->state = ST_HANDLING;
    http_conn_respond(c, 503, "Retry-After: 1\r\n", "too many connections\n", 21);
    return;
  }
  if (srv->handler.on_accept && srv->handler.on_accept(srv->handler.data, c) != 0) {
    conn_close(c);
    return;
  }
  set_state(c, ST_FRESH);
  conn_update_reading(c);
}

void http_server_accept(http_server *srv, uv_stream_t *listener, tls_ctx *tls) {
  http_conn *c = conn_new(srv);
  if (c == NULL) return;
  if (tls) tls_ctx_ref(tls);
  c->tls_pending = tls;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  conn_start(c);
}

int http_server_open_fd(http_server *srv, uv_os_sock_t fd, tls_ctx *tls) {
  http_conn *c = conn_new(srv);
  if (c == NULL) return UV_ENOMEM;
  if (tls) tls_ctx_ref(tls);
  c->tls_pending = tls;
  int rc = uv_tcp_open(&c->tcp, fd);
  if (rc != 0) {
    conn_close(c);
    return rc;
  }
  conn_start(c);
  return 0;
}

/* --- answers ---------------------------------------------------------------- */

/* Formats and writes an answer with headers and a body. */
static void respond_full(http_conn *c, int status, const char *extra_headers, const char *body,
                         size_t body_len) {
  char head[512];
  int hl =
      snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s%s%s\r\n", status,
               http_server_status_text(status), body_len,
               body_len && !(extra_headers && strcasestr(extra_headers, "Content-Type:"))
                   ? "Content-Type: text/plain; charset=utf-8\r\n"
                   : "",
               extra_headers ? extra_headers : "", c->keep_alive ? "" : "Connection: close\r\n");
  if (hl < 0 || (size_t)hl >= sizeof head) hl = 0;
  char stackbuf[4096];
  size_t total = (size_t)hl + body_len;
  char *out = total <= sizeof stackbuf ? stackbuf : malloc(total);
  if (out == NULL) {
    conn_close(c);
    return;
  }
  memcpy(out, head, (size_t)hl);
  if (body_len) memcpy(out + hl, body, body_len);
  conn_write(c, out, total);
  if (out != stackbuf) free(out);
}

void http_conn_respond(http_conn *c, int status, const char *extra_headers, const char *body,
                       size_t body_len) {
  if (c->answered) return;
  c->answered = 1;
  c->served++;
  metrics_count_status(status);
  if (status >= 400 && c->srv->handler.on_refused) {
    c->srv->handler.on_refused(c->srv->handler.data, c, &c->req, status, body, body_len);
  }
  if (c->state == ST_CLOSED) {
    return; /* the client went away; the object is freed by its close */
  }
  if (c->srv->draining) c->keep_alive = 0;
  if (body_len == 0 && extra_headers == NULL && status >= 200 && status < 600) {
    /* The common answer (an accepted event) is the same bytes every time:
     * format it once. */
    static char cached[2][400][80];
    static unsigned char cached_len[2][400];
    int ka = c->keep_alive ? 1 : 0;
    char *h = cached[ka][status - 200];
    if (cached_len[ka][status - 200] == 0) {
      int n = snprintf(h, sizeof cached[0][0], "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n%s\r\n",
                       status, http_server_status_text(status), ka ? "" : "Connection: close\r\n");
      cached_len[ka][status - 200] = (unsigned char)n;
    }
    conn_write(c, h, cached_len[ka][status - 200]);
  } else {
    respond_full(c, status, extra_headers, body, body_len);
  }
  if (c->state == ST_CLOSED) return;

  if (c->body_cap > BODY_KEEP_BYTES) {
    free(c->body);
    c->body = NULL;
    c->body_cap = 0;
  }
  if (!c->keep_alive) {
    if (c->tls) {
      tls_conn_close_notify(c->tls);
      tls_flush(c);
      if (c->state == ST_CLOSED) return;
    }
    conn_finish(c);
    return;
  }
  set_state(c, ST_IDLE);
  if (c->paused && !c->in_callback) {
    /* The answer came later than the request: go on with what arrived
     * meanwhile. */
    c->paused = 0;
    llhttp_resume(&c->parser);
    char *buf = c->pending;
    size_t len = c->pending_len;
    c->pending = NULL;
    c->pending_len = 0;
    if (buf) {
      feed(c, buf, len);
      free(buf);
    }
    conn_update_reading(c);
  }
}

void http_conn_respond_text(http_conn *c, int status, const char *text) {
  char body[512];
  int n = snprintf(body, sizeof body, "%s\n", text);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof body) n = sizeof body - 1;
  http_conn_respond(c, status, NULL, body, (size_t)n);
}

const char *http_request_header(const http_request *req, const char *name, size_t *len) {
  for (size_t i = 0; i < req->n_headers; i++) {
    if (strcasecmp(req->headers[i].name, name) == 0) {
      if (len) *len = req->headers[i].value_len;
      return req->headers[i].value;
    }
  }
  return NULL;
}

int http_conn_peer_addr(http_conn *c, struct sockaddr_storage *out) {
  int sl = sizeof *out;
  memset(out, 0, sizeof *out);
  if (c->state == ST_CLOSED || uv_tcp_getpeername(&c->tcp, (struct sockaddr *)out, &sl) != 0)
    return -1;
  return out->ss_family == AF_INET || out->ss_family == AF_INET6 ? 0 : -1;
}

const char *http_conn_peer(http_conn *c) {
  if (c->peer[0]) return c->peer;
  struct sockaddr_storage ss;
  if (http_conn_peer_addr(c, &ss) != 0) return "?";
  char ip[48];
  int port = 0;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    uv_ip6_name(a, ip, sizeof ip);
    port = ntohs(a->sin6_port);
    snprintf(c->peer, sizeof c->peer, "[%s]:%d", ip, port);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    uv_ip4_name(a, ip, sizeof ip);
    port = ntohs(a->sin_port);
    snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
  }
  return c->peer;
}

void http_server_release_memory(void) {
  static unsigned long seen;
  if (trims == seen) return;
  seen = trims;
  /* Buffers that idle connections dropped sit as free chunks inside the
   * heap; give those pages back so RSS follows the idle connection count. */
  malloc_trim(0);
}

void http_server_abort(http_server *srv) {
  http_conn *c = srv->conns;
  while (c) {
    http_conn *next = c->next;
    /* A request waiting for the spool keeps its connection until the
     * answer comes (the answer refers to it); every other one closes now. */
    if (!(c->state == ST_HANDLING && !c->answered)) conn_close(c);
    c = next;
  }
}

void http_server_drain(http_server *srv) {
  srv->draining = 1;
  http_conn *c = srv->conns;
  while (c) {
    http_conn *next = c->next;
    if (c->state == ST_FRESH || c->state == ST_IDLE) conn_close(c);
    c = next;
  }
  if (srv->conns == NULL && srv->on_empty) srv->on_empty(srv->on_empty_data);
}
