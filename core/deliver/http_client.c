/* Outbound HTTP for plugins: per-thread libcurl handles, answers mapped to outcomes. */
#include "http_client.h"
#include "scrub.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "curl_lazy.h"

/*
 * Policy, beyond the mapping in http_client.h:
 *   - Redirects are not followed. A 301/302 would turn a POST into a GET, and
 *     any redirect sends the event somewhere the config does not name; a 3xx
 *     is a FAIL whose message names the Location, so the operator fixes the
 *     URL.
 *   - Only http:// and https://. A malformed URL or another scheme is a FAIL:
 *     waiting does not repair it. Every other curl error is a RETRY.
 *   - A header line holding CR or LF is refused (FAIL) before anything is
 *     sent. Without a Content-Type from the plugin none is sent (libcurl's
 *     form-urlencoded default would be a lie), and Expect: 100-continue is
 *     off.
 *   - Retry-After (seconds or HTTP-date) is honoured up to one day.
 *   - Proxies come from the environment (http_proxy, https_proxy, no_proxy),
 *     as libcurl does by default.
 *   - libcurl is loaded at the first request (curl_lazy.h), not at start-up.
 *     When it cannot be loaded the request is a FAIL naming the reason: the
 *     process does not try again, so waiting would not repair it.
 */

#ifndef HOOKD_VERSION
#define HOOKD_VERSION "0"
#endif

/* Bounds of what is kept of an answer. A bigger body is still read to the
 * end (so the connection stays reusable) but the rest is dropped. */
#define BODY_MAX (64 * 1024)
#define HEADERS_MAX (16 * 1024)
/* How much of the answer body goes into outcome->message. */
#define SNIPPET_MAX 200

#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_TIMEOUT_MS 30000

/* One easy handle per thread: curl_easy_reset() between requests clears the
 * options but keeps the connection cache, DNS cache and TLS sessions, so a
 * worker that posts to the same host again reuses its connection. */
static _Thread_local CURL *tl_curl;

typedef struct buf {
  char *data;
  size_t len;
  size_t cap; /* bytes allocated; data always has room for a NUL */
  size_t max; /* bytes kept at most */
} buf;

typedef struct capture {
  buf body;
  buf headers;
  char retry_after[64]; /* value of the last Retry-After header, trimmed */
} capture;

static int buf_append(buf *b, const char *p, size_t n) {
  if (b->len >= b->max) return 0;
  if (n > b->max - b->len) n = b->max - b->len;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    if (cap > b->max + 1) cap = b->max + 1;
    char *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

/* Makes sure data is a NUL-terminated string, even when nothing came. */
static int buf_finish(buf *b) {
  if (b->data) return 0;
  b->data = malloc(1);
  if (!b->data) return -1;
  b->data[0] = '\0';
  b->cap = 1;
  return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *userdata) {
  capture *c = userdata;
  /* Out of memory drops the rest of the capture but never fails the
   * transfer: the status is what decides the outcome. */
  (void)buf_append(&c->body, p, size * n);
  return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *userdata) {
  capture *c = userdata;
  size_t len = size * n;
  /* A new status line starts a new header block: interim answers (100
   * Continue) must not leak into the final one. */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    c->headers.len = 0;
    if (c->headers.data) c->headers.data[0] = '\0';
    c->retry_after[0] = '\0';
  }
  static const char name[] = "retry-after:";
  if (len > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
    const char *v = p + sizeof name - 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && isspace((unsigned char)end[-1])) end--;
    size_t vl = (size_t)(end - v);
    if (vl >= sizeof c->retry_after) vl = sizeof c->retry_after - 1;
    memcpy(c->retry_after, v, vl);
    c->retry_after[vl] = '\0';
  }
  (void)buf_append(&c->headers, p, len);
  return len;
}

int http_client_global_init(void) {
  return curl_lazy() ? 0 : -1;
}

void http_client_global_cleanup(void) {
  curl_lazy_cleanup();
}

const char *http_client_libcurl_version(void) {
  const curl_fns *cu = curl_lazy();
  return cu ? cu->version_info(CURLVERSION_NOW)->version : NULL;
}

void http_client_thread_cleanup(void) {
  /* A thread that never sent a request has no handle, and libcurl may never
   * have been loaded: only a thread with a handle asks for the table. */
  if (tl_curl) {
    curl_lazy()->easy_cleanup(tl_curl);
    tl_curl = NULL;
  }
}

/* The calling thread's handle, created on first use. Every request resets
 * it when done, so it starts with default options. */
static CURL *thread_handle(const curl_fns *cu) {
  if (!tl_curl) tl_curl = cu->easy_init();
  return tl_curl;
}

int64_t http_client_retry_after_ms(const char *value, time_t now) {
  if (!value) return -1;
  while (*value == ' ' || *value == '\t') value++;
  size_t n = strlen(value);
  while (n > 0 && isspace((unsigned char)value[n - 1])) n--;
  if (n == 0) return -1;

  if (isdigit((unsigned char)value[0])) {
    /* delta-seconds (RFC 9110 10.2.3): digits only. A huge value is capped at
     * a day rather than rejected: the sender clearly asks for a long wait. */
    int64_t s = 0;
    for (size_t i = 0; i < n; i++) {
      if (!isdigit((unsigned char)value[i])) return -1;
      if (s < 86400) s = s * 10 + (value[i] - '0');
    }
    if (s > 86400) s = 86400;
    return s * 1000;
  }

  /* An HTTP-date: curl_getdate() reads IMF-fixdate and the two obsolete
   * forms. It also takes looser text, so insist on a weekday-like start.
   * Without libcurl the date counts as unparsable; answers only come through
   * libcurl anyway. */
  if (!isalpha((unsigned char)value[0])) return -1;
  char tmp[64];
  if (n >= sizeof tmp) return -1;
  const curl_fns *cu = curl_lazy();
  if (!cu) return -1;
  memcpy(tmp, value, n);
  tmp[n] = '\0';
  time_t t = cu->getdate(tmp, NULL);
  if (t == (time_t)-1) return -1;
  if (t <= now) return 0;
  int64_t d = (int64_t)(t - now);
  if (d > 86400) d = 86400;
  return d * 1000;
}

/* Copies the first bytes of an answer body into dst for a message: control
 * characters become spaces, a UTF-8 sequence is never cut in half. */
static void snippet(char *dst, size_t dstlen, const char *body, size_t len) {
  if (dstlen == 0) return;
  size_t max = dstlen - 1;
  if (len > max) {
    len = max;
    while (len > 0 && ((unsigned char)body[len] & 0xC0) == 0x80) len--;
  }
  size_t i;
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)body[i];
    dst[i] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
  }
  while (i > 0 && dst[i - 1] == ' ') i--;
  dst[i] = '\0';
  /* A destination that echoes the request (its Authorization header, a
   * token) must not put it in our logs, metrics or pages. */
  scrub_text(dst, dstlen);
}

static int has_header(const hookd_http_request *req, const char *name) {
  size_t nl = strlen(name);
  for (size_t i = 0; i < req->n_headers; i++) {
    const char *h = req->headers[i];
    if (h && strncasecmp(h, name, nl) == 0 && h[nl] == ':') return 1;
  }
  return 0;
}

/* Appends a header line; returns 1 when out of memory (the list is kept). */
static int add_header(const curl_fns *cu, struct curl_slist **list, const char *line) {
  struct curl_slist *l = cu->slist_append(*list, line);
  if (!l) return 1;
  *list = l;
  return 0;
}

static hookd_result fail(hookd_outcome *o, const char *msg) {
  snprintf(o->message, sizeof o->message, "%s", msg);
  return HOOKD_FAIL;
}

/* Sets the method and the body. POSTFIELDS does not copy: req->body stays
 * valid for the whole call. */
static void set_method(const curl_fns *cu, CURL *h, const hookd_http_request *req) {
  const char *m = req->method ? req->method : "POST";
  const char *body = req->body ? req->body : "";
  int has_body = req->body != NULL;
  if (strcmp(m, "GET") == 0 && !has_body) {
    cu->easy_setopt(h, CURLOPT_HTTPGET, 1L);
    return;
  }
  if (strcmp(m, "HEAD") == 0) {
    cu->easy_setopt(h, CURLOPT_NOBODY, 1L);
    return;
  }
  /* DELETE (and GET) without a body send no Content-Length; every other
   * method sends its body, an empty one as Content-Length: 0. */
  if (has_body || (strcmp(m, "DELETE") != 0 && strcmp(m, "GET") != 0)) {
    cu->easy_setopt(h, CURLOPT_POSTFIELDS, body);
    cu->easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
  }
  if (strcmp(m, "POST") != 0) cu->easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);
}

/* The answer as the status page shows it with the attempt (ABI 1.2 fields,
 * when the plugin's outcome has them). */
static void note_answer(hookd_outcome *o, long status, const capture *c) {
  if (!HOOKD_OUTCOME_HAS(o, answer)) return;
  o->status = (int32_t)status;
  snippet(o->answer, sizeof o->answer, c->body.data, c->body.len);
  if (status == 429) o->flags |= HOOKD_OUTCOME_RATE_LIMITED;
}

static hookd_result map_answer(const curl_fns *cu, CURL *h, long status, const capture *c,
                               hookd_outcome *o) {
  note_answer(o, status, c);
  if (status >= 200 && status <= 299) return HOOKD_OK;

  char snip[SNIPPET_MAX + 1];
  snippet(snip, sizeof snip, c->body.data, c->body.len);
  if (status >= 300 && status <= 399) {
    /* Redirects are not followed: a POST that silently becomes a GET (301,
     * 302) or goes elsewhere is worse than a dead letter that names the new
     * place, so the operator fixes the URL. */
    char *loc = NULL;
    cu->easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc);
    snprintf(o->message, sizeof o->message, "HTTP %ld: redirect to %s not followed", status,
             loc ? loc : "(no Location)");
    return HOOKD_FAIL;
  }
  snprintf(o->message, sizeof o->message, "HTTP %ld: %s", status, snip);
  if (status == 408 || status == 425 || status == 429 || (status >= 500 && status <= 599)) {
    int64_t ms = http_client_retry_after_ms(c->retry_after, time(NULL));
    if (ms > 0) o->retry_after_ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
    return HOOKD_RETRY;
  }
  return HOOKD_FAIL;
}

/* Some curl errors cannot go away by waiting: the request itself is wrong. */
static int curl_error_is_permanent(CURLcode rc) {
  return rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL;
}

hookd_result http_client_perform(const hookd_http_request *req, hookd_http_response *resp,
                                 hookd_outcome *outcome) {
  hookd_outcome scratch;
  if (!outcome) {
    memset(&scratch, 0, sizeof scratch);
    outcome = &scratch;
  }
  if (resp) {
    resp->status = 0;
    resp->body = resp->headers = NULL;
    resp->body_len = resp->headers_len = 0;
  }
  if (!req || req->struct_size < offsetof(hookd_http_request, reserved) || !req->url)
    return fail(outcome, "invalid HTTP request (no url or struct_size not set)");
  if (req->n_headers && !req->headers) return fail(outcome, "invalid HTTP request headers");
  for (size_t i = 0; i < req->n_headers; i++) {
    /* No header injection: a rendered value with CR or LF never reaches the
     * wire as an extra header line. */
    if (!req->headers[i] || strpbrk(req->headers[i], "\r\n"))
      return fail(outcome, "invalid HTTP request header (empty, or contains CR or LF)");
  }

  const curl_fns *cu = curl_lazy();
  if (!cu) {
    snprintf(outcome->message, sizeof outcome->message, "outbound HTTP unavailable: %s",
             curl_lazy_error());
    return HOOKD_FAIL;
  }
  CURL *h = thread_handle(cu);
  if (!h) {
    snprintf(outcome->message, sizeof outcome->message, "curl_easy_init failed");
    return HOOKD_RETRY;
  }

  capture c = {.body = {.max = BODY_MAX}, .headers = {.max = HEADERS_MAX}};
  char errbuf[CURL_ERROR_SIZE] = "";
  struct curl_slist *hdrs = NULL;
  hookd_result result;
  int oom = 0;

  for (size_t i = 0; i < req->n_headers; i++) oom |= add_header(cu, &hdrs, req->headers[i]);
  /* libcurl would add "Content-Type: application/x-www-form-urlencoded" to a
   * body the plugin did not label, and "Expect: 100-continue" (an extra round
   * trip) to a big one; "Name:" with no value removes a header. */
  if (!has_header(req, "Content-Type")) oom |= add_header(cu, &hdrs, "Content-Type:");
  if (!has_header(req, "Expect")) oom |= add_header(cu, &hdrs, "Expect:");
  if (oom) {
    cu->slist_free_all(hdrs);
    snprintf(outcome->message, sizeof outcome->message, "out of memory");
    return HOOKD_RETRY;
  }

  cu->easy_setopt(h, CURLOPT_URL, req->url);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
  cu->easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
  cu->easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  cu->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  cu->easy_setopt(
      h, CURLOPT_CONNECTTIMEOUT_MS,
      (long)(req->connect_timeout_ms ? req->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS));
  cu->easy_setopt(h, CURLOPT_TIMEOUT_MS,
                  (long)(req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS));
  cu->easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  cu->easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  if (req->ca_file && *req->ca_file) cu->easy_setopt(h, CURLOPT_CAINFO, req->ca_file);
  cu->easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  cu->easy_setopt(h, CURLOPT_USERAGENT, "hookd/" HOOKD_VERSION);
  cu->easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  cu->easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  cu->easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  cu->easy_setopt(h, CURLOPT_WRITEDATA, &c);
  cu->easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  cu->easy_setopt(h, CURLOPT_HEADERDATA, &c);
  cu->easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  set_method(cu, h, req);
  /* Proxies: libcurl reads http_proxy / https_proxy / no_proxy from the
   * environment by default, and curl_easy_reset() keeps it that way. */

  CURLcode rc = cu->easy_perform(h);
  long status = 0;
  if (rc == CURLE_OK) cu->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);

  if (rc != CURLE_OK) {
    snprintf(outcome->message, sizeof outcome->message, "%s",
             errbuf[0] ? errbuf : cu->easy_strerror(rc));
    result = curl_error_is_permanent(rc) ? HOOKD_FAIL : HOOKD_RETRY;
    /* A transfer that broke after the status line is still a network error:
     * report no status, and keep what was captured for the curious. */
  } else {
    result = map_answer(cu, h, status, &c, outcome);
  }

  cu->slist_free_all(hdrs);
  /* Drop the handle's pointers to this call's buffers and header list now,
   * not at the next reset. */
  cu->easy_reset(h);

  if (resp && buf_finish(&c.body) == 0 && buf_finish(&c.headers) == 0) {
    resp->status = status;
    resp->body = c.body.data;
    resp->body_len = c.body.len;
    resp->headers = c.headers.data;
    resp->headers_len = c.headers.len;
  } else {
    free(c.body.data);
    free(c.headers.data);
  }
  return result;
}

void http_client_response_free(hookd_http_response *resp) {
  if (!resp) return;
  free(resp->body);
  free(resp->headers);
  resp->body = resp->headers = NULL;
  resp->body_len = resp->headers_len = 0;
}
