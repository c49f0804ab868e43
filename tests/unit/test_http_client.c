/* Unit tests for http_client.c against a tiny real HTTP server on 127.0.0.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"

/* --- the test server -------------------------------------------------------
 * One thread, one connection at a time. Each request gets the canned answer
 * set by the test; in hang mode it gets none (the client must time out). An
 * answer without "Connection: close" keeps the connection for the next
 * request, so handle reuse can be observed. */

typedef struct server {
  int fd;
  int port;
  pthread_t thread;
  atomic_int stop;
  pthread_mutex_t mu;
  char *answer; /* owned copy */
  size_t answer_len;
  int hang;
  int accepts;
  int requests;
  char last[16384]; /* the last request, head and body */
  size_t last_len;
} server;

static server srv;

static void server_set(const char *answer, size_t len, int hang) {
  pthread_mutex_lock(&srv.mu);
  free(srv.answer);
  srv.answer = malloc(len + 1);
  memcpy(srv.answer, answer, len);
  srv.answer[len] = '\0';
  srv.answer_len = len;
  srv.hang = hang;
  srv.requests = 0;
  srv.accepts = 0;
  srv.last_len = 0;
  srv.last[0] = '\0';
  pthread_mutex_unlock(&srv.mu);
}

static void answer(const char *text) {
  server_set(text, strlen(text), 0);
}

/* Waits up to ms for fd to be readable; 1 readable, 0 timeout or stop. */
static int wait_readable(int fd, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  while (ms > 0 && !atomic_load(&srv.stop)) {
    int step = ms < 50 ? ms : 50;
    int r = poll(&p, 1, step);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return 0;
    ms -= step;
  }
  return 0;
}

/* Reads one request (head and Content-Length body) into buf; returns its
 * length, or -1 on EOF, error or timeout. */
static ssize_t read_request(int c, char *buf, size_t cap) {
  size_t len = 0;
  char *end = NULL;
  while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
    if (len == cap || !wait_readable(c, 3000)) return -1;
    ssize_t n = recv(c, buf + len, cap - len, 0);
    if (n <= 0) return -1;
    len += (size_t)n;
  }
  size_t head = (size_t)(end - buf) + 4, clen = 0;
  for (char *p = buf; p < buf + head; p++) {
    if ((p == buf || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0)
      clen = strtoul(p + 15, NULL, 10);
  }
  while (len < head + clen && len < cap) {
    if (!wait_readable(c, 3000)) return -1;
    ssize_t n = recv(c, buf + len, cap - len, 0);
    if (n <= 0) return -1;
    len += (size_t)n;
  }
  return (ssize_t)len;
}

static void serve_connection(int c) {
  static char req[sizeof srv.last];
  for (;;) {
    ssize_t n = read_request(c, req, sizeof req - 1);
    if (n < 0) return;
    pthread_mutex_lock(&srv.mu);
    srv.requests++;
    memcpy(srv.last, req, (size_t)n);
    srv.last[n] = '\0';
    srv.last_len = (size_t)n;
    int hang = srv.hang;
    size_t alen = srv.answer_len;
    char *a = malloc(alen + 1);
    memcpy(a, srv.answer, alen + 1);
    pthread_mutex_unlock(&srv.mu);

    if (hang) {
      /* Say nothing until the client gives up and closes. */
      char sink[256];
      while (wait_readable(c, 3000) && recv(c, sink, sizeof sink, 0) > 0) {
      }
      free(a);
      return;
    }
    for (size_t off = 0; off < alen;) {
      ssize_t w = send(c, a + off, alen - off, MSG_NOSIGNAL);
      if (w <= 0) break;
      off += (size_t)w;
    }
    int close_it = strcasestr(a, "Connection: close") != NULL;
    free(a);
    if (close_it) return;
  }
}

static void *server_main(void *arg) {
  (void)arg;
  while (!atomic_load(&srv.stop)) {
    if (!wait_readable(srv.fd, 100)) continue;
    int c = accept(srv.fd, NULL, NULL);
    if (c < 0) continue;
    pthread_mutex_lock(&srv.mu);
    srv.accepts++;
    pthread_mutex_unlock(&srv.mu);
    serve_connection(c);
    close(c);
  }
  return NULL;
}

/* A port on 127.0.0.1 nobody listens on. */
static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bind(fd, (struct sockaddr *)&a, sizeof a);
  socklen_t al = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &al);
  close(fd);
  return ntohs(a.sin_port);
}

static int group_setup(void **state) {
  (void)state;
  /* The test talks to 127.0.0.1 directly, whatever proxy the shell has. */
  unsetenv("http_proxy");
  unsetenv("HTTP_PROXY");
  unsetenv("https_proxy");
  unsetenv("HTTPS_PROXY");
  unsetenv("all_proxy");
  unsetenv("ALL_PROXY");
  if (http_client_global_init() != 0) return -1;
  pthread_mutex_init(&srv.mu, NULL);
  srv.fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(srv.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(srv.fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(srv.fd, 16) != 0) return -1;
  socklen_t al = sizeof a;
  getsockname(srv.fd, (struct sockaddr *)&a, &al);
  srv.port = ntohs(a.sin_port);
  answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  return pthread_create(&srv.thread, NULL, server_main, NULL) == 0 ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  atomic_store(&srv.stop, 1);
  pthread_join(srv.thread, NULL);
  close(srv.fd);
  free(srv.answer);
  http_client_thread_cleanup();
  http_client_global_cleanup();
  return 0;
}

/* --- helpers ------------------------------------------------------------- */

static char url[64];

static hookd_http_request request(const char *method, const char *body) {
  snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", srv.port);
  hookd_http_request r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  r.method = method;
  r.url = url;
  r.body = body;
  r.body_len = body ? strlen(body) : 0;
  r.timeout_ms = 5000;
  return r;
}

typedef struct result {
  hookd_result rc;
  hookd_http_response resp;
  hookd_outcome out;
} result;

static result perform(const hookd_http_request *req) {
  result r;
  memset(&r, 0, sizeof r);
  r.resp.struct_size = sizeof r.resp;
  r.out.struct_size = sizeof r.out;
  r.rc = http_client_perform(req, &r.resp, &r.out);
  return r;
}

static result perform_post(void) {
  hookd_http_request req = request(NULL, "{\"a\":1}");
  return perform(&req);
}

static int counter(const int *field) {
  pthread_mutex_lock(&srv.mu);
  int v = *field;
  pthread_mutex_unlock(&srv.mu);
  return v;
}

static const char *last_request(void) {
  return srv.last;
}

/* --- mapping ------------------------------------------------------------- */

static void test_200_ok(void **state) {
  (void)state;
  answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: yes\r\nConnection: close\r\n\r\nhello");
  const char *hdrs[] = {"Content-Type: application/json", "X-Custom: 42"};
  hookd_http_request req = request(NULL, "{\"a\":1}");
  req.headers = hdrs;
  req.n_headers = 2;
  result r = perform(&req);
  assert_int_equal(r.rc, HOOKD_OK);
  assert_int_equal(r.resp.status, 200);
  assert_string_equal(r.resp.body, "hello");
  assert_int_equal(r.resp.body_len, 5);
  assert_non_null(strstr(r.resp.headers, "X-Test: yes"));
  assert_int_equal(r.resp.headers_len, strlen(r.resp.headers));
  assert_string_equal(r.out.message, "");
  assert_int_equal(r.out.retry_after_ms, 0);
  /* What went over the wire. */
  const char *q = last_request();
  assert_int_equal(strncmp(q, "POST /hook HTTP/1.1\r\n", 21), 0);
  assert_non_null(strstr(q, "\r\nContent-Type: application/json\r\n"));
  assert_non_null(strstr(q, "\r\nX-Custom: 42\r\n"));
  assert_non_null(strstr(q, "\r\nContent-Length: 7\r\n"));
  assert_non_null(strstr(q, "\r\nUser-Agent: hookd/"));
  assert_null(strcasestr(q, "Expect:"));
  assert_string_equal(strstr(q, "\r\n\r\n") + 4, "{\"a\":1}");
  http_client_response_free(&r.resp);
  assert_null(r.resp.body);
}

static void test_204_ok(void **state) {
  (void)state;
  answer("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_OK);
  assert_int_equal(r.resp.status, 204);
  assert_non_null(r.resp.body);
  assert_string_equal(r.resp.body, "");
  assert_int_equal(r.resp.body_len, 0);
  http_client_response_free(&r.resp);
}

static void test_unlabelled_body_gets_no_form_type(void **state) {
  (void)state;
  answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_OK);
  assert_null(strcasestr(last_request(), "Content-Type"));
  http_client_response_free(&r.resp);
}

static void test_404_fail_with_snippet(void **state) {
  (void)state;
  answer(
      "HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
      "no such hook\n\x01here  ");
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_FAIL);
  assert_int_equal(r.resp.status, 404);
  /* Control characters become spaces, trailing blanks go. */
  assert_string_equal(r.out.message, "HTTP 404: no such hook  here");
  assert_int_equal(r.out.retry_after_ms, 0);
  http_client_response_free(&r.resp);
}

static void test_fail_snippet_is_bounded(void **state) {
  (void)state;
  char big[2048];
  int n = snprintf(big, sizeof big,
                   "HTTP/1.1 400 Bad Request\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n");
  memset(big + n, 'x', 1000);
  server_set(big, (size_t)n + 1000, 0);
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_FAIL);
  assert_int_equal(r.resp.body_len, 1000);
  assert_true(strncmp(r.out.message, "HTTP 400: xxxx", 14) == 0);
  size_t len = strlen(r.out.message);
  assert_true(len >= 150 && len <= strlen("HTTP 400: ") + 200);
  http_client_response_free(&r.resp);
}

static void test_429_retry_after_seconds(void **state) {
  (void)state;
  answer(
      "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 4\r\n"
      "Connection: close\r\n\r\nslow");
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_RETRY);
  assert_int_equal(r.resp.status, 429);
  assert_int_equal(r.out.retry_after_ms, 7000);
  assert_string_equal(r.out.message, "HTTP 429: slow");
  http_client_response_free(&r.resp);
}

static void test_503_retry_after_http_date(void **state) {
  (void)state;
  char date[64], text[256];
  time_t when = time(NULL) + 120;
  struct tm tm;
  gmtime_r(&when, &tm);
  static const char *wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char *mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  snprintf(date, sizeof date, "%s, %02d %s %04d %02d:%02d:%02d GMT", wd[tm.tm_wday], tm.tm_mday,
           mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  snprintf(text, sizeof text,
           "HTTP/1.1 503 Service Unavailable\r\nretry-after: %s\r\nContent-Length: 0\r\n"
           "Connection: close\r\n\r\n",
           date);
  answer(text);
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_RETRY);
  assert_int_equal(r.resp.status, 503);
  assert_in_range(r.out.retry_after_ms, 110000, 120000);
  http_client_response_free(&r.resp);
}

static void test_500_retry_without_retry_after(void **state) {
  (void)state;
  answer(
      "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops");
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_RETRY);
  assert_int_equal(r.out.retry_after_ms, 0);
  assert_string_equal(r.out.message, "HTTP 500: oops");
  http_client_response_free(&r.resp);
}

static void test_status_table(void **state) {
  (void)state;
  static const struct {
    int status;
    hookd_result want;
  } cases[] = {{201, HOOKD_OK},    {299, HOOKD_OK},    {400, HOOKD_FAIL},  {401, HOOKD_FAIL},
               {403, HOOKD_FAIL},  {408, HOOKD_RETRY}, {410, HOOKD_FAIL},  {422, HOOKD_FAIL},
               {425, HOOKD_RETRY}, {429, HOOKD_RETRY}, {502, HOOKD_RETRY}, {599, HOOKD_RETRY}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[128];
    snprintf(text, sizeof text, "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
             cases[i].status);
    answer(text);
    result r = perform_post();
    if (r.rc != cases[i].want) fail_msg("status %d: got %d", cases[i].status, r.rc);
    assert_int_equal(r.resp.status, cases[i].status);
    http_client_response_free(&r.resp);
  }
}

static void test_redirect_not_followed(void **state) {
  (void)state;
  answer(
      "HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:1/elsewhere\r\n"
      "Content-Length: 0\r\nConnection: close\r\n\r\n");
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_FAIL);
  assert_int_equal(r.resp.status, 301);
  assert_int_equal(counter(&srv.requests), 1);
  assert_non_null(strstr(r.out.message, "HTTP 301"));
  assert_non_null(strstr(r.out.message, "http://127.0.0.1:1/elsewhere"));
  http_client_response_free(&r.resp);
}

/* --- network errors ------------------------------------------------------ */

static void test_connection_refused_retry(void **state) {
  (void)state;
  char u[64];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/", closed_port());
  hookd_http_request req = request(NULL, "x");
  req.url = u;
  result r = perform(&req);
  assert_int_equal(r.rc, HOOKD_RETRY);
  assert_int_equal(r.resp.status, 0);
  assert_non_null(r.resp.body);
  assert_non_null(strcasestr(r.out.message, "connect"));
  http_client_response_free(&r.resp);
}

static void test_timeout_retry(void **state) {
  (void)state;
  server_set("", 0, 1);
  hookd_http_request req = request(NULL, "x");
  req.timeout_ms = 300;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  result r = perform(&req);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  assert_int_equal(r.rc, HOOKD_RETRY);
  assert_int_equal(r.resp.status, 0);
  assert_non_null(strcasestr(r.out.message, "timed out"));
  assert_in_range(ms, 250, 2000);
  http_client_response_free(&r.resp);
}

static void test_malformed_url_fails(void **state) {
  (void)state;
  hookd_http_request req = request(NULL, "x");
  req.url = "ftp://127.0.0.1/x";
  result r = perform(&req);
  assert_int_equal(r.rc, HOOKD_FAIL);
  assert_string_not_equal(r.out.message, "");
  http_client_response_free(&r.resp);
}

static void test_header_injection_refused(void **state) {
  (void)state;
  answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  const char *hdrs[] = {"X-A: ok\r\nX-Injected: yes"};
  hookd_http_request req = request(NULL, "x");
  req.headers = hdrs;
  req.n_headers = 1;
  result r = perform(&req);
  assert_int_equal(r.rc, HOOKD_FAIL);
  assert_int_equal(counter(&srv.requests), 0);
  http_client_response_free(&r.resp);
}

/* --- bounds -------------------------------------------------------------- */

static void test_body_truncated_at_64k(void **state) {
  (void)state;
  size_t blen = 100000;
  char head[128];
  int hn = snprintf(head, sizeof head,
                    "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", blen);
  char *text = malloc((size_t)hn + blen);
  memcpy(text, head, (size_t)hn);
  for (size_t i = 0; i < blen; i++) text[hn + i] = (char)('a' + i % 26);
  server_set(text, (size_t)hn + blen, 0);
  free(text);
  result r = perform_post();
  /* The whole answer was read (status OK), only 64 KiB kept. */
  assert_int_equal(r.rc, HOOKD_OK);
  assert_int_equal(r.resp.body_len, 65536);
  assert_int_equal(r.resp.body[65536], '\0');
  assert_int_equal(r.resp.body[0], 'a');
  assert_int_equal(r.resp.body[65535], (char)('a' + 65535 % 26));
  http_client_response_free(&r.resp);
}

static void test_headers_bounded(void **state) {
  (void)state;
  size_t cap = 64 * 1024;
  char *text = malloc(cap);
  size_t n = (size_t)snprintf(text, cap, "HTTP/1.1 200 OK\r\n");
  char filler[1001];
  memset(filler, 'h', 1000);
  filler[1000] = '\0';
  for (int i = 0; i < 30; i++) n += (size_t)snprintf(text + n, cap - n, "X-%d: %s\r\n", i, filler);
  n += (size_t)snprintf(text + n, cap - n, "Content-Length: 2\r\nConnection: close\r\n\r\nok");
  server_set(text, n, 0);
  free(text);
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_OK);
  assert_string_equal(r.resp.body, "ok");
  assert_true(r.resp.headers_len <= 16384);
  assert_true(r.resp.headers_len >= 16000);
  assert_int_equal(strlen(r.resp.headers), r.resp.headers_len);
  http_client_response_free(&r.resp);
}

/* --- methods and reuse --------------------------------------------------- */

static void test_methods(void **state) {
  (void)state;
  answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  hookd_http_request req = request("PATCH", "{\"Subject\":\"x\"}");
  result r = perform(&req);
  assert_int_equal(r.rc, HOOKD_OK);
  assert_int_equal(strncmp(last_request(), "PATCH /hook HTTP/1.1\r\n", 22), 0);
  assert_string_equal(strstr(last_request(), "\r\n\r\n") + 4, "{\"Subject\":\"x\"}");
  http_client_response_free(&r.resp);

  answer("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
  req = request("DELETE", NULL);
  r = perform(&req);
  assert_int_equal(r.rc, HOOKD_OK);
  assert_int_equal(strncmp(last_request(), "DELETE /hook HTTP/1.1\r\n", 23), 0);
  assert_null(strcasestr(last_request(), "Content-Length"));
  http_client_response_free(&r.resp);

  answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
  req = request("GET", NULL);
  r = perform(&req);
  assert_int_equal(r.rc, HOOKD_OK);
  assert_int_equal(strncmp(last_request(), "GET /hook HTTP/1.1\r\n", 20), 0);
  assert_string_equal(r.resp.body, "hi");
  http_client_response_free(&r.resp);

  answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  req = request("PUT", NULL);
  r = perform(&req);
  assert_int_equal(r.rc, HOOKD_OK);
  assert_int_equal(strncmp(last_request(), "PUT /hook HTTP/1.1\r\n", 20), 0);
  assert_non_null(strstr(last_request(), "\r\nContent-Length: 0\r\n"));
  http_client_response_free(&r.resp);
}

static void test_connection_reused(void **state) {
  (void)state;
  answer("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
  for (int i = 0; i < 3; i++) {
    result r = perform_post();
    assert_int_equal(r.rc, HOOKD_OK);
    http_client_response_free(&r.resp);
  }
  assert_int_equal(counter(&srv.requests), 3);
  assert_int_equal(counter(&srv.accepts), 1);
  /* Close it, so the next test starts afresh. */
  answer("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  result r = perform_post();
  assert_int_equal(r.rc, HOOKD_OK);
  http_client_response_free(&r.resp);
}

static void test_null_response_and_outcome(void **state) {
  (void)state;
  answer("HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
  hookd_http_request req = request(NULL, "x");
  hookd_outcome out;
  memset(&out, 0, sizeof out);
  assert_int_equal(http_client_perform(&req, NULL, &out), HOOKD_FAIL);
  assert_string_equal(out.message, "HTTP 404: x");
  assert_int_equal(http_client_perform(&req, NULL, NULL), HOOKD_FAIL);
}

static void test_bad_request_struct(void **state) {
  (void)state;
  hookd_http_request req = request(NULL, "x");
  req.struct_size = 0;
  result r = perform(&req);
  assert_int_equal(r.rc, HOOKD_FAIL);
  assert_null(r.resp.body);
  req = request(NULL, "x");
  req.url = NULL;
  r = perform(&req);
  assert_int_equal(r.rc, HOOKD_FAIL);
}

/* --- Retry-After parsing ------------------------------------------------- */

static void test_retry_after_parse(void **state) {
  (void)state;
  /* Wed, 21 Oct 2015 07:28:00 GMT */
  const time_t t = 1445412480;
  assert_int_equal(http_client_retry_after_ms("7", t), 7000);
  assert_int_equal(http_client_retry_after_ms("  120 \t", t), 120000);
  assert_int_equal(http_client_retry_after_ms("0", t), 0);
  assert_int_equal(http_client_retry_after_ms("99999999999999999999999", t), 86400000);
  assert_int_equal(http_client_retry_after_ms("Wed, 21 Oct 2015 07:28:10 GMT", t), 10000);
  assert_int_equal(http_client_retry_after_ms("Wednesday, 21-Oct-15 07:29:00 GMT", t), 60000);
  assert_int_equal(http_client_retry_after_ms("Wed Oct 21 07:28:05 2015", t), 5000);
  assert_int_equal(http_client_retry_after_ms("Wed, 21 Oct 2015 07:00:00 GMT", t), 0);
  assert_int_equal(http_client_retry_after_ms(NULL, t), -1);
  assert_int_equal(http_client_retry_after_ms("", t), -1);
  assert_int_equal(http_client_retry_after_ms("   ", t), -1);
  assert_int_equal(http_client_retry_after_ms("-5", t), -1);
  assert_int_equal(http_client_retry_after_ms("7s", t), -1);
  assert_int_equal(http_client_retry_after_ms("1.5", t), -1);
  assert_int_equal(http_client_retry_after_ms("soon", t), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_200_ok),
      cmocka_unit_test(test_204_ok),
      cmocka_unit_test(test_unlabelled_body_gets_no_form_type),
      cmocka_unit_test(test_404_fail_with_snippet),
      cmocka_unit_test(test_fail_snippet_is_bounded),
      cmocka_unit_test(test_429_retry_after_seconds),
      cmocka_unit_test(test_503_retry_after_http_date),
      cmocka_unit_test(test_500_retry_without_retry_after),
      cmocka_unit_test(test_status_table),
      cmocka_unit_test(test_redirect_not_followed),
      cmocka_unit_test(test_connection_refused_retry),
      cmocka_unit_test(test_timeout_retry),
      cmocka_unit_test(test_malformed_url_fails),
      cmocka_unit_test(test_header_injection_refused),
      cmocka_unit_test(test_body_truncated_at_64k),
      cmocka_unit_test(test_headers_bounded),
      cmocka_unit_test(test_methods),
      cmocka_unit_test(test_connection_reused),
      cmocka_unit_test(test_null_response_and_outcome),
      cmocka_unit_test(test_bad_request_struct),
      cmocka_unit_test(test_retry_after_parse),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
