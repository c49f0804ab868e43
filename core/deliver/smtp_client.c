/* Outbound mail for plugins: one SMTP submission per call through the lazily loaded libcurl. */
#include "smtp_client.h"

#include <stdio.h>
#include <string.h>

#include "curl_lazy.h"

#define DEFAULT_TIMEOUT_MS 30000
#define CONNECT_TIMEOUT_MS 10000

typedef struct upload {
  const char *p;
  size_t len;
  size_t off;
} upload;

static size_t on_read(char *dst, size_t size, size_t nmemb, void *ud) {
  upload *u = ud;
  size_t room = size * nmemb, left = u->len - u->off;
  size_t n = left < room ? left : room;
  memcpy(dst, u->p + u->off, n);
  u->off += n;
  return n;
}

/* libcurl hands each SMTP reply line to the header callback; the last one
 * explains a refusal better than curl's own error text. */
static size_t on_reply(char *line, size_t size, size_t nmemb, void *ud) {
  char *last = ud; /* 256 bytes */
  size_t n = size * nmemb, k = n;
  while (k > 0 && (line[k - 1] == '\r' || line[k - 1] == '\n')) k--;
  if (k > 255) k = 255;
  memcpy(last, line, k);
  last[k] = '\0';
  for (char *c = last; *c; c++)
    if ((unsigned char)*c < 0x20) *c = ' ';
  return n;
}

/* "<addr>" lines for MAIL FROM / RCPT TO; NULL when out of memory. */
static struct curl_slist *rcpt_list(const curl_fns *cu, const hookd_smtp_request *req) {
  struct curl_slist *list = NULL;
  for (size_t i = 0; i < req->n_rcpt; i++) {
    char angle[320];
    snprintf(angle, sizeof angle, "<%s>", req->rcpt[i]);
    struct curl_slist *grown = cu->slist_append(list, angle);
    if (grown == NULL) {
      cu->slist_free_all(list);
      return NULL;
    }
    list = grown;
  }
  return list;
}

static void set_options(const curl_fns *cu, CURL *c, const hookd_smtp_request *req,
                        const char *mail_from, struct curl_slist *rcpt, upload *up, char *reply,
                        char *errbuf) {
  static const long use_ssl[] = {CURLUSESSL_NONE, CURLUSESSL_TRY, CURLUSESSL_ALL};
  long timeout = req->timeout_ms ? (long)req->timeout_ms : DEFAULT_TIMEOUT_MS;
  cu->easy_setopt(c, CURLOPT_URL, req->url);
  cu->easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
  /* Worker threads: signals (for DNS timeouts) must not be used. */
  cu->easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  cu->easy_setopt(c, CURLOPT_USE_SSL, use_ssl[req->tls < 0 ? 0 : req->tls > 2 ? 2 : req->tls]);
  if (req->username) cu->easy_setopt(c, CURLOPT_USERNAME, req->username);
  if (req->password) cu->easy_setopt(c, CURLOPT_PASSWORD, req->password);
  if (req->ca_file) cu->easy_setopt(c, CURLOPT_CAINFO, req->ca_file);
  cu->easy_setopt(c, CURLOPT_MAIL_FROM, mail_from);
  cu->easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
  cu->easy_setopt(c, CURLOPT_READFUNCTION, on_read);
  cu->easy_setopt(c, CURLOPT_READDATA, up);
  cu->easy_setopt(c, CURLOPT_UPLOAD, 1L);
  cu->easy_setopt(c, CURLOPT_HEADERFUNCTION, on_reply);
  cu->easy_setopt(c, CURLOPT_HEADERDATA, reply);
  cu->easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  cu->easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
  cu->easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                  timeout < CONNECT_TIMEOUT_MS ? timeout : (long)CONNECT_TIMEOUT_MS);
}

/* Maps a finished submission to a result and a message. */
static hookd_result map_result(const curl_fns *cu, CURLcode rc, long code, const char *reply,
                               const char *errbuf, hookd_outcome *out) {
  const char *why = errbuf[0] ? errbuf : cu->easy_strerror(rc);
  hookd_result res;
  if (rc == CURLE_OK) {
    snprintf(out->message, sizeof out->message, "%s", reply);
    return HOOKD_OK;
  }
  if (code >= 400 && code <= 499) {
    res = HOOKD_RETRY; /* the server says: try again later */
  } else if (code >= 500 && code <= 599) {
    res = HOOKD_FAIL;
  } else if (rc == CURLE_USE_SSL_FAILED) {
    why = "the server does not offer STARTTLS and TLS is required";
    res = HOOKD_FAIL;
  } else if (rc == CURLE_LOGIN_DENIED || rc == CURLE_URL_MALFORMAT ||
             rc == CURLE_UNSUPPORTED_PROTOCOL) {
    res = HOOKD_FAIL;
  } else {
    res = HOOKD_RETRY; /* connection refused, reset, timeout, TLS trouble: may pass */
  }
  if (code >= 400 && reply[0])
    snprintf(out->message, sizeof out->message, "SMTP %s", reply);
  else
    snprintf(out->message, sizeof out->message, "SMTP: %s", why);
  return res;
}

hookd_result smtp_client_send(const hookd_smtp_request *req, hookd_outcome *out) {
  const curl_fns *cu = curl_lazy();
  if (cu == NULL) {
    snprintf(out->message, sizeof out->message, "libcurl is not available: %s", curl_lazy_error());
    return HOOKD_FAIL;
  }
  if (req == NULL || req->url == NULL || req->from == NULL || req->n_rcpt == 0) {
    snprintf(out->message, sizeof out->message, "smtp: url, from and a recipient are required");
    return HOOKD_FAIL;
  }
  char errbuf[CURL_ERROR_SIZE] = "", reply[256] = "", mail_from[320];
  snprintf(mail_from, sizeof mail_from, "<%s>", req->from);
  upload up = {req->message ? req->message : "", req->message ? req->message_len : 0, 0};
  struct curl_slist *rcpt = rcpt_list(cu, req);
  CURL *c = rcpt ? cu->easy_init() : NULL;
  if (c == NULL) {
    cu->slist_free_all(rcpt);
    snprintf(out->message, sizeof out->message, "out of memory");
    return HOOKD_RETRY;
  }
  set_options(cu, c, req, mail_from, rcpt, &up, reply, errbuf);
  CURLcode rc = cu->easy_perform(c);
  long code = 0;
  cu->easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  cu->slist_free_all(rcpt);
  cu->easy_cleanup(c);
  return map_result(cu, rc, code, reply, errbuf, out);
}
