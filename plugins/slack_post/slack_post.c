/* slack_post plugin: one Slack message per event (incoming webhook or chat.postMessage). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, timegm */
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hookd/plugin.h"

#define SLACK_DEFAULT_API_URL "https://slack.com/api"
#define SLACK_DEFAULT_TIMEOUT_MS 10000
#define SLACK_MAX_FORM_ANSWERS 20
/* Slack's own limits: header text 150 characters, a section field 2000, a
 * section text 3000. Values are cut (in bytes, on a UTF-8 boundary) below. */
#define SLACK_HEADER_MAX 140
#define SLACK_FIELD_VALUE_MAX 600
#define SLACK_SECTION_MAX 2800

/* One entry of `texts`: an event type pattern and its template. */
typedef struct text_rule {
  const char *pattern; /* host-owned config key */
  hookd_template *tpl;
} text_rule;

/* Per instance; read-only after init, so deliver() may run on many threads. */
typedef struct slack {
  const hookd_host_api *host;
  hookd_instance *self;
  char *post_url;          /* the webhook, or {api_url}/chat.postMessage */
  char *auth_header;       /* "Authorization: Bearer ..." (Web API), or NULL */
  hookd_template *channel; /* Web API only */
  hookd_template *text;    /* may be NULL: the default message */
  text_rule *rules;
  size_t n_rules;
  const char *ca_file;
  uint32_t timeout_ms;
} slack;

/* --- a small string builder ---------------------------------------------- */

typedef struct sb {
  char *p;
  size_t len, cap;
  int oom;
} sb;

static void sb_add(sb *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_puts(sb *b, const char *s) {
  sb_add(b, s, strlen(s));
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n <= max) return n;
  while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
  return max;
}

/* Appends one byte escaped for the inside of a JSON string; with mrkdwn
 * also &, < and > escaped the way Slack asks, so a value can never become a
 * link or an @channel mention. */
static void sb_char(sb *b, char ch, int mrkdwn) {
  const char *rep = NULL;
  char esc[8];
  switch (ch) {
    case '&':
      rep = mrkdwn ? "&amp;" : NULL;
      break;
    case '<':
      rep = mrkdwn ? "&lt;" : NULL;
      break;
    case '>':
      rep = mrkdwn ? "&gt;" : NULL;
      break;
    case '"':
      rep = "\\\"";
      break;
    case '\\':
      rep = "\\\\";
      break;
    case '\n':
      rep = "\\n";
      break;
    case '\t':
      rep = "\\t";
      break;
    case '\r':
      rep = "\\r";
      break;
    default:
      if ((unsigned char)ch < 0x20 || ch == 0x7f) {
        snprintf(esc, sizeof esc, "\\u%04x", (unsigned)(unsigned char)ch);
        rep = esc;
      }
  }
  if (rep)
    sb_puts(b, rep);
  else
    sb_add(b, &ch, 1);
}

/* Appends s, at most max bytes ("…" marks a cut), escaped by sb_char(). */
static void sb_text(sb *b, const char *s, size_t max, int mrkdwn) {
  if (!s) return;
  size_t n = utf8_cut(s, max);
  for (size_t i = 0; i < n; i++) sb_char(b, s[i], mrkdwn);
  if (s[n]) sb_puts(b, "…");
}

#define NOLIMIT ((size_t)-1)

/* --- times ----------------------------------------------------------------- */

/* Reads an ISO 8601 timestamp ("2026-12-01T14:00:00Z", fractions and
 * offsets allowed) as Unix seconds. */
static int parse_iso8601(const char *s, time_t *out) {
  int y, mo, d, h, mi, sec = 0, n = 0;
  if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d%n", &y, &mo, &d, &h, &mi, &n) != 5) return -1;
  const char *p = s + n;
  if (*p == ':') {
    int m = 0;
    if (sscanf(p, ":%2d%n", &sec, &m) != 1) return -1;
    p += m;
  }
  if (*p == '.')
    for (p++; *p >= '0' && *p <= '9'; p++) {
    }
  long off = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om = 0;
    if (sscanf(p + 1, "%2d:%2d", &oh, &om) < 1) return -1;
    off = (*p == '-' ? -1 : 1) * (oh * 3600L + om * 60L);
    p += strlen(p);
  }
  if (*p) return -1;
  struct tm tm = {.tm_year = y - 1900,
                  .tm_mon = mo - 1,
                  .tm_mday = d,
                  .tm_hour = h,
                  .tm_min = mi,
                  .tm_sec = sec};
  *out = timegm(&tm) - off;
  return 0;
}

/* "Tue 1 Dec 2026" (no locale: the daemon's locale is not the reader's). */
static void format_day(char *out, size_t n, const struct tm *tm) {
  static const char *wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char *mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  snprintf(out, n, "%s %d %s %d", wd[tm->tm_wday], tm->tm_mday, mo[tm->tm_mon], tm->tm_year + 1900);
}

/* "Tue 1 Dec 2026, 14:00–14:30 UTC", or across days "…, 23:30 – Wed 2 Dec
 * 2026, 00:30 UTC"; the raw texts when they do not parse. */
static void format_span(char *out, size_t n, const char *start, const char *end) {
  time_t ts, te;
  struct tm a, b;
  char da[32], db[32];
  if (!start) {
    snprintf(out, n, "%s", "");
    return;
  }
  if (parse_iso8601(start, &ts) != 0) {
    snprintf(out, n, "%s%s%s", start, end ? " – " : "", end ? end : "");
    return;
  }
  gmtime_r(&ts, &a);
  format_day(da, sizeof da, &a);
  if (!end || parse_iso8601(end, &te) != 0 || te < ts) {
    snprintf(out, n, "%s, %02d:%02d UTC", da, a.tm_hour, a.tm_min);
    return;
  }
  gmtime_r(&te, &b);
  format_day(db, sizeof db, &b);
  if (strcmp(da, db) == 0)
    snprintf(out, n, "%s, %02d:%02d–%02d:%02d UTC", da, a.tm_hour, a.tm_min, b.tm_hour, b.tm_min);
  else
    snprintf(out, n, "%s, %02d:%02d – %s, %02d:%02d UTC", da, a.tm_hour, a.tm_min, db, b.tm_hour,
             b.tm_min);
}

/* --- the default messages -------------------------------------------------- */

/* Event fields fetched for one message, freed together. */
#define MAX_FIELDS 64
typedef struct fields {
  const slack *st;
  const hookd_event *ev;
  char *v[MAX_FIELDS];
  size_t n;
} fields;

/* The value at path, or NULL when absent or empty. Owned by f. */
static const char *get(fields *f, const char *path) {
  if (f->n == MAX_FIELDS) return NULL;
  char *v = f->st->host->event_get(f->ev, path);
  if (v && !*v) {
    f->st->host->free(v);
    v = NULL;
  }
  if (v) f->v[f->n++] = v;
  return v;
}

static void fields_free(fields *f) {
  for (size_t i = 0; i < f->n; i++) f->st->host->free(f->v[i]);
  f->n = 0;
}

static int is_url(const char *s) {
  return s && (strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0);
}

/* A mrkdwn link <url|label>; the URL cannot close the link early. */
static void sb_link(sb *b, const char *url, const char *label) {
  sb_puts(b, "<");
  size_t n = utf8_cut(url, SLACK_FIELD_VALUE_MAX);
  for (size_t i = 0; i < n; i++) {
    switch (url[i]) {
      case '|':
        sb_puts(b, "%7C");
        break;
      case '>':
        sb_puts(b, "%3E");
        break;
      case '<':
        sb_puts(b, "%3C");
        break;
      case ' ':
        sb_puts(b, "%20");
        break;
      default:
        sb_char(b, url[i], 1);
    }
  }
  sb_puts(b, "|");
  sb_text(b, label, SLACK_FIELD_VALUE_MAX, 1);
  sb_puts(b, ">");
}

/* Starts one mrkdwn field of a section: {"type":"mrkdwn","text":"*Title*\n */
static void field_open(sb *b, int *first, const char *title) {
  sb_puts(b, *first ? "" : ",");
  *first = 0;
  sb_puts(b, "{\"type\":\"mrkdwn\",\"text\":\"*");
  sb_puts(b, title);
  sb_puts(b, "*\\n");
}

static const char *meeting_kind(const char *type) {
  const char *last = strrchr(type, '.');
  last = last ? last + 1 : type;
  if (strcmp(last, "scheduled") == 0) return "booked";
  if (strcmp(last, "rescheduled") == 0) return "moved";
  if (strcmp(last, "canceled") == 0) return "canceled";
  return last;
}

/* A Block Kit message for a Smart Scheduler meeting event. */
static void meeting_message(const slack *st, const hookd_event *ev, sb *b) {
  fields f = {.st = st, .ev = ev};
  const char *kind = meeting_kind(ev->type);
  const char *name = get(&f, "data.meetingInfo.meetingName");
  const char *invitee = get(&f, "data.meetingInfo.primaryInviteeName");
  const char *email = get(&f, "data.meetingInfo.primaryInvitee");
  const char *others = get(&f, "data.meetingInfo.optionalInvitees");
  const char *first = get(&f, "data.meetingOwner.firstName");
  const char *last = get(&f, "data.meetingOwner.lastName");
  const char *owner_user = get(&f, "data.meetingOwner.username");
  const char *location = get(&f, "data.meetingInfo.location");
  char when[128], title[64];
  format_span(when, sizeof when, get(&f, "data.meetingStart"), get(&f, "data.meetingEnd"));
  snprintf(title, sizeof title, "Meeting %s: ", kind);
  if (!name) name = "(no name)";

  /* The top-level text is the notification and screen reader fallback. */
  sb_puts(b, "{\"text\":\"");
  sb_text(b, title, NOLIMIT, 1);
  sb_text(b, name, SLACK_HEADER_MAX, 1);
  if (invitee || email) {
    sb_puts(b, " with ");
    sb_text(b, invitee ? invitee : email, SLACK_FIELD_VALUE_MAX, 1);
  }
  if (*when) {
    sb_puts(b, ", ");
    sb_text(b, when, NOLIMIT, 1);
  }
  sb_puts(b, "\",\"blocks\":[{\"type\":\"header\",\"text\":{\"type\":\"plain_text\",\"text\":\"");
  sb_text(b, title, NOLIMIT, 0);
  sb_text(b, name, SLACK_HEADER_MAX - strlen(title), 0);
  sb_puts(b, "\"}},{\"type\":\"section\",\"fields\":[");

  int firstf = 1;
  if (*when) {
    field_open(b, &firstf, "When");
    sb_text(b, when, NOLIMIT, 1);
    sb_puts(b, "\"}");
  }
  if (invitee || email || others) {
    field_open(b, &firstf, "Invitee");
    if (invitee) sb_text(b, invitee, SLACK_FIELD_VALUE_MAX, 1);
    if (invitee && email) sb_puts(b, "\\n");
    if (email) {
      char mailto[320];
      snprintf(mailto, sizeof mailto, "mailto:%s", email);
      sb_link(b, mailto, email);
    }
    if (others) {
      sb_puts(b, "\\nAlso invited: ");
      sb_text(b, others, SLACK_FIELD_VALUE_MAX, 1);
    }
    sb_puts(b, "\"}");
  }
  if (first || last || owner_user) {
    field_open(b, &firstf, "Owner");
    if (first) sb_text(b, first, SLACK_FIELD_VALUE_MAX, 1);
    if (first && last) sb_puts(b, " ");
    if (last) sb_text(b, last, SLACK_FIELD_VALUE_MAX, 1);
    if ((first || last) && owner_user) sb_puts(b, "\\n");
    if (owner_user) sb_text(b, owner_user, SLACK_FIELD_VALUE_MAX, 1);
    sb_puts(b, "\"}");
  }
  if (location) {
    field_open(b, &firstf, "Location");
    if (is_url(location))
      sb_link(b, location, location);
    else
      sb_text(b, location, SLACK_FIELD_VALUE_MAX, 1);
    sb_puts(b, "\"}");
  }
  if (firstf) {
    /* A section needs at least one field. */
    field_open(b, &firstf, "Meeting");
    sb_text(b, name, SLACK_FIELD_VALUE_MAX, 1);
    sb_puts(b, "\"}");
  }
  sb_puts(b, "]}");

  /* Form answers: one section, "*question:* answer" per line. */
  size_t start = 0;
  for (int i = 0; i < SLACK_MAX_FORM_ANSWERS; i++) {
    char qp[64], ap[64];
    snprintf(qp, sizeof qp, "data.meetingInfo.formValues.%d.question", i);
    snprintf(ap, sizeof ap, "data.meetingInfo.formValues.%d.answerText", i);
    fields g = {.st = st, .ev = ev};
    const char *q = get(&g, qp), *a = get(&g, ap);
    if (!q && !a) {
      fields_free(&g);
      break;
    }
    if (start == 0) {
      sb_puts(b, ",{\"type\":\"section\",\"text\":{\"type\":\"mrkdwn\",\"text\":\"*Form answers*");
      start = b->len;
    }
    if (b->len - start < SLACK_SECTION_MAX) {
      sb_puts(b, "\\n*");
      sb_text(b, q ? q : "(question)", 200, 1);
      sb_puts(b, ":* ");
      sb_text(b, a ? a : "", 500, 1);
    }
    fields_free(&g);
  }
  if (start) sb_puts(b, "\"}}");

  sb_puts(b, ",{\"type\":\"context\",\"elements\":[{\"type\":\"mrkdwn\",\"text\":\"");
  sb_text(b, kind, NOLIMIT, 1);
  sb_puts(b, " · ");
  sb_text(b, ev->type, 200, 1);
  sb_puts(b, "\"}]}]");
  fields_free(&f);
}

/* Plain text for any other event. */
static void plain_message(const hookd_event *ev, sb *b) {
  sb_puts(b, "{\"text\":\"hookd: ");
  sb_text(b, ev->type, 200, 1);
  sb_puts(b, " event ");
  sb_text(b, ev->id, 200, 1);
  sb_puts(b, " from source ");
  sb_text(b, ev->source, 200, 1);
  sb_puts(b, "\"");
}

static const hookd_template *pick_template(const slack *st, const char *type) {
  for (size_t i = 0; i < st->n_rules; i++)
    if (st->host->pattern_match(st->rules[i].pattern, type) == 1) return st->rules[i].tpl;
  return st->text;
}

/* --- Slack Web API answers -------------------------------------------------- */

/* A minimal reader for the top level of a JSON object: enough for Slack's
 * {"ok": false, "error": "..."} without a JSON library (a plugin cannot
 * link cJSON). Never reads past the NUL. */
static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  return p;
}

static const char *skip_string(const char *p) {
  for (p++; *p && *p != '"'; p++)
    if (*p == '\\' && p[1]) p++;
  return *p ? p + 1 : p;
}

static const char *skip_value(const char *p) {
  if (*p == '"') return skip_string(p);
  if (*p == '{' || *p == '[') {
    for (int depth = 0; *p;) {
      if (*p == '"') {
        p = skip_string(p);
        continue;
      }
      if (*p == '{' || *p == '[') depth++;
      if ((*p == '}' || *p == ']') && --depth == 0) return p + 1;
      p++;
    }
    return p;
  }
  while (*p && *p != ',' && *p != '}' && *p != ']') p++;
  return p;
}

/* Finds a top-level key and copies its value: a string without its quotes
 * (escapes left as they are), anything else as raw text. Returns 1 when
 * found. */
static int json_top(const char *body, const char *key, char *out, size_t n) {
  const char *p = skip_ws(body);
  if (*p != '{') return 0;
  p++;
  size_t kl = strlen(key);
  for (;;) {
    p = skip_ws(p);
    if (*p != '"') return 0;
    const char *k = p + 1, *ke = skip_string(p);
    p = skip_ws(ke);
    if (*p != ':') return 0;
    p = skip_ws(p + 1);
    const char *v = p, *ve = skip_value(p);
    if ((size_t)(ke - 1 - k) == kl && memcmp(k, key, kl) == 0) {
      if (*v == '"') {
        v++;
        if (ve > v && ve[-1] == '"') ve--;
      }
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\n' || ve[-1] == '\r' || ve[-1] == '\t')) ve--;
      size_t len = (size_t)(ve - v);
      if (len >= n) len = n - 1;
      memcpy(out, v, len);
      out[len] = '\0';
      return 1;
    }
    p = skip_ws(ve);
    if (*p != ',') return 0;
    p++;
  }
}

/* Maps a Web API answer ({"ok": true} or {"ok": false, "error": "..."}). */
static hookd_result api_answer(const char *body, hookd_outcome *out) {
  static const char *const transient[] = {"ratelimited", "rate_limited",        "internal_error",
                                          "fatal_error", "service_unavailable", "request_timeout",
                                          NULL};
  static const char *const auth[] = {"not_authed",    "invalid_auth",           "account_inactive",
                                     "token_revoked", "token_expired",          "no_permission",
                                     "missing_scope", "not_allowed_token_type", NULL};
  static const char *const channel[] = {"channel_not_found", "not_in_channel", "is_archived", NULL};
  char ok[16], error[128];
  if (!json_top(body, "ok", ok, sizeof ok)) {
    snprintf(out->message, sizeof out->message, "unexpected Slack API answer: %.200s", body);
    for (char *c = out->message; *c; c++)
      if ((unsigned char)*c < 0x20) *c = ' ';
    return HOOKD_FAIL;
  }
  if (strcmp(ok, "true") == 0) return HOOKD_OK;
  if (!json_top(body, "error", error, sizeof error)) snprintf(error, sizeof error, "unknown");
  for (char *c = error; *c; c++)
    if ((unsigned char)*c < 0x20) *c = ' ';
  for (const char *const *t = transient; *t; t++) {
    if (strcmp(error, *t) == 0) {
      snprintf(out->message, sizeof out->message, "Slack API error: %s", error);
      return HOOKD_RETRY;
    }
  }
  const char *hint = "";
  for (const char *const *t = auth; *t; t++)
    if (strcmp(error, *t) == 0) hint = " (the token is missing, invalid, revoked or lacks a scope)";
  for (const char *const *t = channel; *t; t++)
    if (strcmp(error, *t) == 0) hint = " (check the channel and that the app is a member)";
  snprintf(out->message, sizeof out->message, "Slack API error: %s%s", error, hint);
  return HOOKD_FAIL;
}

/* --- the plugin ------------------------------------------------------------ */

static hookd_result slack_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  const slack *st = state;
  const hookd_host_api *host = st->host;
  sb b = {0};

  const hookd_template *t = pick_template(st, ev->type);
  if (t) {
    /* The whole rendered text is the value of a JSON string: render it raw
     * and escape all of it, literal text included. */
    char *text = host->render(t, ev, HOOKD_ESC_NONE, NULL);
    if (!text) {
      snprintf(out->message, sizeof out->message, "out of memory");
      return HOOKD_RETRY;
    }
    sb_puts(&b, "{\"text\":\"");
    sb_text(&b, text, NOLIMIT, 0);
    sb_puts(&b, "\"");
    host->free(text);
  } else if (st->host->pattern_match("scheduling.smartscheduler.*", ev->type) == 1) {
    meeting_message(st, ev, &b);
  } else {
    plain_message(ev, &b);
  }
  if (st->channel) {
    char *ch = host->render(st->channel, ev, HOOKD_ESC_NONE, NULL);
    if (!ch) b.oom = 1;
    if (ch && !*ch) {
      host->free(ch);
      free(b.p);
      snprintf(out->message, sizeof out->message, "channel renders empty");
      return HOOKD_FAIL;
    }
    sb_puts(&b, ",\"channel\":\"");
    sb_text(&b, ch, NOLIMIT, 0);
    sb_puts(&b, "\"");
    host->free(ch);
  }
  sb_puts(&b, "}");
  if (b.oom) {
    free(b.p);
    snprintf(out->message, sizeof out->message, "out of memory");
    return HOOKD_RETRY;
  }

  const char *headers[2] = {"Content-Type: application/json; charset=utf-8", st->auth_header};
  hookd_http_request req = {.struct_size = sizeof req,
                            .method = "POST",
                            .url = st->post_url,
                            .headers = headers,
                            .n_headers = st->auth_header ? 2 : 1,
                            .body = b.p,
                            .body_len = b.len,
                            .timeout_ms = st->timeout_ms,
                            .ca_file = st->ca_file};
  hookd_http_response resp = {.struct_size = sizeof resp};
  hookd_result rc = host->http(st->self, &req, &resp, out);
  /* The Web API answers 200 even for errors: look inside. A webhook answers
   * "ok" or an error status, which http() has mapped already. */
  if (rc == HOOKD_OK && st->auth_header) rc = api_answer(resp.body ? resp.body : "", out);
  if (rc != HOOKD_OK)
    host->log(st->self, ev, HOOKD_LOG_DEBUG, "slack answered %ld: %.300s", resp.status,
              resp.body ? resp.body : "");
  host->http_response_free(&resp);
  free(b.p);
  return rc;
}

static void slack_destroy(void *state) {
  slack *st = state;
  if (!st) return;
  for (size_t i = 0; i < st->n_rules; i++) st->host->template_free(st->rules[i].tpl);
  free(st->rules);
  st->host->template_free(st->text);
  st->host->template_free(st->channel);
  free(st->post_url);
  free(st->auth_header);
  free(st);
}

static int http_url(const char *s) {
  return strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0;
}

/* Reads `texts`: event type pattern -> template. */
static int read_texts(slack *st, const hookd_config *cfg) {
  const hookd_host_api *host = st->host;
  const hookd_config *texts;
  int rc = host->config_object(cfg, "texts", &texts);
  if (rc < 0 || !texts) return rc < 0 ? rc : 0;
  size_t n = host->config_count(texts);
  st->rules = calloc(n ? n : 1, sizeof *st->rules);
  if (!st->rules) return HOOKD_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    const char *pattern = host->config_key_at(texts, i);
    if (host->pattern_match(pattern, "") == HOOKD_E_INVALID)
      return host->config_error(texts, pattern, "bad event type pattern '%s'", pattern);
    text_rule *r = &st->rules[st->n_rules];
    r->pattern = pattern;
    if ((rc = host->config_template(texts, pattern, NULL, &r->tpl)) < 0) return rc;
    st->n_rules++;
  }
  return 0;
}

static int slack_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                      void **state, char *err, size_t errlen) {
  static const char *const keys[] = {"webhook_url", "token",   "channel",    "api_url", "text",
                                     "texts",       "ca_file", "timeout_ms", NULL};
  if (host->struct_size < sizeof *host) {
    snprintf(err, errlen, "host API too old (struct_size %zu)", host->struct_size);
    return -1;
  }
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK) return -1;
  slack *st = calloc(1, sizeof *st);
  if (!st) return snprintf(err, errlen, "out of memory"), -1;
  st->host = host;
  st->self = self;

  const char *webhook, *token, *api_url;
  int64_t timeout;
  int rc = 0;
  if (host->config_string(cfg, "webhook_url", NULL, &webhook) < 0 ||
      host->config_string(cfg, "token", NULL, &token) < 0 ||
      host->config_string(cfg, "api_url", SLACK_DEFAULT_API_URL, &api_url) < 0 ||
      host->config_string(cfg, "ca_file", NULL, &st->ca_file) < 0 ||
      host->config_int(cfg, "timeout_ms", SLACK_DEFAULT_TIMEOUT_MS, &timeout) < 0 ||
      host->config_template(cfg, "text", NULL, &st->text) < 0 ||
      host->config_template(cfg, "channel", NULL, &st->channel) < 0 || read_texts(st, cfg) < 0)
    goto fail;

  if (webhook && token) {
    rc = host->config_error(cfg, "token", "give either webhook_url or token, not both");
  } else if (!webhook && !token) {
    rc = host->config_error(cfg, NULL, "webhook_url or token (with channel) is required");
  } else if (webhook && !http_url(webhook)) {
    rc = host->config_error(cfg, "webhook_url", "expected an http:// or https:// URL");
  } else if (webhook && st->channel) {
    rc = host->config_error(cfg, "channel",
                            "an incoming webhook posts to its own channel; channel needs token");
  } else if (token && !st->channel) {
    rc = host->config_error(cfg, "channel", "required with token");
  } else if (token && !*token) {
    rc = host->config_error(cfg, "token", "is empty");
  } else if (token && !http_url(api_url)) {
    rc = host->config_error(cfg, "api_url", "expected an http:// or https:// URL");
  } else if (timeout < 1 || timeout > 600000) {
    rc = host->config_error(cfg, "timeout_ms", "expected 1 to 600000");
  }
  if (rc < 0) goto fail;
  st->timeout_ms = (uint32_t)timeout;

  if (webhook) {
    st->post_url = strdup(webhook);
  } else {
    size_t n = strlen(api_url);
    while (n > 0 && api_url[n - 1] == '/') n--;
    if (asprintf(&st->post_url, "%.*s/chat.postMessage", (int)n, api_url) < 0) st->post_url = NULL;
    if (strpbrk(token, "\r\n")) {
      host->config_error(cfg, "token", "contains a line break");
      goto fail;
    }
    if (asprintf(&st->auth_header, "Authorization: Bearer %s", token) < 0) st->auth_header = NULL;
    if (!st->auth_header) goto nomem;
  }
  if (!st->post_url) goto nomem;
  *state = st;
  return 0;

nomem:
  snprintf(err, errlen, "out of memory");
fail:
  slack_destroy(st);
  return -1;
}

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "slack_post",
    .version = "1.0.0",
    .description = "posts events to Slack (incoming webhook or chat.postMessage)",
    .init = slack_init,
    .deliver = slack_deliver,
    .destroy = slack_destroy,
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return &descriptor;
}
