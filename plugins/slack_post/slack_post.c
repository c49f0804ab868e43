/* slack_post plugin: one Slack message per event (incoming webhook or chat.postMessage). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hookd/helpers.h"
#include "hookd/plugin.h"

#define SLACK_MAX_FORM_ANSWERS 20
/* Slack's own limits: header text 150 characters, a section field 2000, a
 * section text 3000. Values are cut (in bytes, on a UTF-8 boundary) below. */
#define SLACK_HEADER_MAX 140
#define SLACK_FIELD_VALUE_MAX 600
#define SLACK_SECTION_MAX 2800

/* Per instance: the options the host fills, then what init() derives.
 * Read-only after init, so deliver() may run on many threads. */
typedef struct slack {
  const char *webhook_url;
  const char *token;
  hookd_template *channel; /* Web API only */
  const char *api_url;
  hookd_template *text;     /* may be NULL: the default message */
  hookd_template_map texts; /* event type pattern -> template */
  const char *ca_file;
  char *post_url;    /* the webhook, or {api_url}/chat.postMessage */
  char *auth_header; /* "Authorization: Bearer ..." (Web API), or NULL */
} slack;

static const hookd_option slack_options[] = {
    {"webhook_url", HOOKD_OPT_URL, 0, offsetof(slack, webhook_url), NULL, 0, 0, NULL,
     HOOKD_ESC_NONE, "an incoming webhook URL (or give token and channel)"},
    {"token", HOOKD_OPT_SECRET, HOOKD_OPT_NONEMPTY, offsetof(slack, token), NULL, 0, 0, NULL,
     HOOKD_ESC_NONE, "a bot token for chat.postMessage (with channel)"},
    {"channel", HOOKD_OPT_TEMPLATE, 0, offsetof(slack, channel), NULL, 0, 0, NULL, HOOKD_ESC_NONE,
     "the channel to post to, with token"},
    {"api_url", HOOKD_OPT_URL, 0, offsetof(slack, api_url), "https://slack.com/api", 0, 0, NULL,
     HOOKD_ESC_NONE, "the Web API base URL, with token"},
    {"text", HOOKD_OPT_TEMPLATE, 0, offsetof(slack, text), NULL, 0, 0, NULL, HOOKD_ESC_JSON,
     "the message text; default: a Block Kit card for meetings, one line otherwise"},
    {"texts", HOOKD_OPT_TEMPLATE_MAP, 0, offsetof(slack, texts), NULL, 0, 0, NULL, HOOKD_ESC_JSON,
     "event type pattern -> message text; the first match wins over text"},
    {"ca_file", HOOKD_OPT_PATH, 0, offsetof(slack, ca_file), NULL, 0, 0, NULL, HOOKD_ESC_NONE,
     "CA bundle to verify Slack with (default: the system's)"},
    HOOKD_OPTIONS_END};

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n <= max) return n;
  while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
  return max;
}

/* Appends s, at most max bytes ("…" marks a cut), escaped for a JSON
 * string; with mrkdwn also &, < and > escaped the way Slack asks, so a
 * value can never become a link or an @channel mention. */
static void sb_text(hookd_buf *b, const char *s, size_t max, int mrkdwn) {
  if (!s) return;
  size_t n = utf8_cut(s, max), run = 0;
  for (size_t i = 0; i < n && mrkdwn; i++) {
    const char *rep = s[i] == '&' ? "&amp;" : s[i] == '<' ? "&lt;" : s[i] == '>' ? "&gt;" : NULL;
    if (!rep) continue;
    hookd_buf_json(b, s + run, i - run);
    hookd_buf_puts(b, rep);
    run = i + 1;
  }
  hookd_buf_json(b, s + run, n - run);
  if (s[n]) hookd_buf_puts(b, "…");
}

#define NOLIMIT ((size_t)-1)

/* --- times ----------------------------------------------------------------- */

/* "Tue 1 Dec 2026" (no locale: the daemon's locale is not the reader's). */
static void format_day(char *out, size_t n, const hookd_utc *tm) {
  static const char *wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char *mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  snprintf(out, n, "%s %d %s %d", wd[tm->weekday], tm->day, mo[tm->month - 1], tm->year);
}

/* "Tue 1 Dec 2026, 14:00–14:30 UTC", or across days "…, 23:30 – Wed 2 Dec
 * 2026, 00:30 UTC"; the raw texts when they do not parse. */
static void format_span(char *out, size_t n, const char *start, const char *end) {
  int64_t ts, te;
  hookd_utc a, b;
  char da[32], db[32];
  if (!start) {
    snprintf(out, n, "%s", "");
    return;
  }
  if (hookd_iso8601_parse(start, &ts) != 0) {
    snprintf(out, n, "%s%s%s", start, end ? " – " : "", end ? end : "");
    return;
  }
  a = hookd_utc_of(ts);
  format_day(da, sizeof da, &a);
  if (!end || hookd_iso8601_parse(end, &te) != 0 || te < ts) {
    snprintf(out, n, "%s, %02d:%02d UTC", da, a.hour, a.minute);
    return;
  }
  b = hookd_utc_of(te);
  format_day(db, sizeof db, &b);
  if (strcmp(da, db) == 0)
    snprintf(out, n, "%s, %02d:%02d–%02d:%02d UTC", da, a.hour, a.minute, b.hour, b.minute);
  else
    snprintf(out, n, "%s, %02d:%02d – %s, %02d:%02d UTC", da, a.hour, a.minute, db, b.hour,
             b.minute);
}

/* --- the default messages -------------------------------------------------- */

/* Event fields fetched for one message, freed together. */
#define MAX_FIELDS 64
typedef struct fields {
  const hookd_event *ev;
  char *v[MAX_FIELDS];
  size_t n;
} fields;

/* The value at path, or NULL when absent or empty. Owned by f. */
static const char *get(fields *f, const char *path) {
  if (f->n == MAX_FIELDS) return NULL;
  char *v = f->ev->host->event_get(f->ev, path);
  if (v && !*v) {
    f->ev->host->free(v);
    v = NULL;
  }
  if (v) f->v[f->n++] = v;
  return v;
}

static void fields_free(fields *f) {
  for (size_t i = 0; i < f->n; i++) f->ev->host->free(f->v[i]);
  f->n = 0;
}

/* A mrkdwn link <url|label>; the URL cannot close the link early. */
static void sb_link(hookd_buf *b, const char *url, const char *label) {
  hookd_buf_puts(b, "<");
  size_t n = utf8_cut(url, SLACK_FIELD_VALUE_MAX);
  for (size_t i = 0; i < n; i++) {
    char pct[4];
    if (strchr("|<> ", url[i])) {
      snprintf(pct, sizeof pct, "%%%02X", (unsigned)(unsigned char)url[i]);
      hookd_buf_puts(b, pct);
    } else {
      hookd_buf_json(b, url[i] == '&' ? "&amp;" : url + i, url[i] == '&' ? 5 : 1);
    }
  }
  hookd_buf_puts(b, "|");
  sb_text(b, label, SLACK_FIELD_VALUE_MAX, 1);
  hookd_buf_puts(b, ">");
}

/* Starts one mrkdwn field of a section: {"type":"mrkdwn","text":"*Title*\n */
static void field_open(hookd_buf *b, int *first, const char *title) {
  hookd_buf_puts(b, *first ? "" : ",");
  *first = 0;
  hookd_buf_puts(b, "{\"type\":\"mrkdwn\",\"text\":\"*");
  hookd_buf_puts(b, title);
  hookd_buf_puts(b, "*\\n");
}

/* Words for the one meeting-kind rule of hookd/helpers.h. */
static const char *meeting_word(const hookd_event *ev) {
  char *flag = ev->host->event_get(ev, "data.isCanceled");
  hookd_meeting_kind k = hookd_meeting_kind_of(ev->type, flag);
  ev->host->free(flag);
  if (k == HOOKD_MEETING_CANCELED) return "canceled";
  if (k == HOOKD_MEETING_RESCHEDULED) return "moved";
  if (k == HOOKD_MEETING_SCHEDULED) return "booked";
  return strrchr(ev->type, '.') + 1;
}

/* The meeting's values for one message (borrowed from a `fields`). */
typedef struct meeting {
  const char *kind, *name, *invitee, *email, *others, *first, *last, *owner_user, *location;
  char when[128], title[64];
} meeting;

static void person_fields(hookd_buf *b, int *firstf, const meeting *m) {
  if (m->invitee || m->email || m->others) {
    field_open(b, firstf, "Invitee");
    if (m->invitee) sb_text(b, m->invitee, SLACK_FIELD_VALUE_MAX, 1);
    if (m->invitee && m->email) hookd_buf_puts(b, "\\n");
    if (m->email) {
      char mailto[320];
      snprintf(mailto, sizeof mailto, "mailto:%s", m->email);
      sb_link(b, mailto, m->email);
    }
    if (m->others) {
      hookd_buf_puts(b, "\\nAlso invited: ");
      sb_text(b, m->others, SLACK_FIELD_VALUE_MAX, 1);
    }
    hookd_buf_puts(b, "\"}");
  }
  if (m->first || m->last || m->owner_user) {
    field_open(b, firstf, "Owner");
    if (m->first) sb_text(b, m->first, SLACK_FIELD_VALUE_MAX, 1);
    if (m->first && m->last) hookd_buf_puts(b, " ");
    if (m->last) sb_text(b, m->last, SLACK_FIELD_VALUE_MAX, 1);
    if ((m->first || m->last) && m->owner_user) hookd_buf_puts(b, "\\n");
    if (m->owner_user) sb_text(b, m->owner_user, SLACK_FIELD_VALUE_MAX, 1);
    hookd_buf_puts(b, "\"}");
  }
}

/* The section of fields: when, who, where. */
static void meeting_fields(hookd_buf *b, const meeting *m) {
  int firstf = 1;
  hookd_buf_puts(b, ",{\"type\":\"section\",\"fields\":[");
  if (*m->when) {
    field_open(b, &firstf, "When");
    sb_text(b, m->when, NOLIMIT, 1);
    hookd_buf_puts(b, "\"}");
  }
  person_fields(b, &firstf, m);
  if (m->location) {
    field_open(b, &firstf, "Location");
    if (hookd_url_ok(m->location))
      sb_link(b, m->location, m->location);
    else
      sb_text(b, m->location, SLACK_FIELD_VALUE_MAX, 1);
    hookd_buf_puts(b, "\"}");
  }
  if (firstf) {
    /* A section needs at least one field. */
    field_open(b, &firstf, "Meeting");
    sb_text(b, m->name, SLACK_FIELD_VALUE_MAX, 1);
    hookd_buf_puts(b, "\"}");
  }
  hookd_buf_puts(b, "]}");
}

/* Form answers: one section, "*question:* answer" per line. */
static void form_answers(const hookd_event *ev, hookd_buf *b) {
  size_t start = 0;
  for (int i = 0; i < SLACK_MAX_FORM_ANSWERS; i++) {
    char qp[64], ap[64];
    snprintf(qp, sizeof qp, "data.meetingInfo.formValues.%d.question", i);
    snprintf(ap, sizeof ap, "data.meetingInfo.formValues.%d.answerText", i);
    fields g = {.ev = ev};
    const char *q = get(&g, qp), *a = get(&g, ap);
    if (!q && !a) {
      fields_free(&g);
      break;
    }
    if (start == 0) {
      hookd_buf_puts(
          b, ",{\"type\":\"section\",\"text\":{\"type\":\"mrkdwn\",\"text\":\"*Form answers*");
      start = b->len;
    }
    if (b->len - start < SLACK_SECTION_MAX) {
      hookd_buf_puts(b, "\\n*");
      sb_text(b, q ? q : "(question)", 200, 1);
      hookd_buf_puts(b, ":* ");
      sb_text(b, a ? a : "", 500, 1);
    }
    fields_free(&g);
  }
  if (start) hookd_buf_puts(b, "\"}}");
}

/* A Block Kit message for a Smart Scheduler meeting event. */
static void meeting_message(const hookd_event *ev, hookd_buf *b) {
  fields f = {.ev = ev};
  meeting m = {.kind = meeting_word(ev),
               .name = get(&f, "data.meetingInfo.meetingName"),
               .invitee = get(&f, "data.meetingInfo.primaryInviteeName"),
               .email = get(&f, "data.meetingInfo.primaryInvitee"),
               .others = get(&f, "data.meetingInfo.optionalInvitees"),
               .first = get(&f, "data.meetingOwner.firstName"),
               .last = get(&f, "data.meetingOwner.lastName"),
               .owner_user = get(&f, "data.meetingOwner.username"),
               .location = get(&f, "data.meetingInfo.location")};
  format_span(m.when, sizeof m.when, get(&f, "data.meetingStart"), get(&f, "data.meetingEnd"));
  snprintf(m.title, sizeof m.title, "Meeting %s: ", m.kind);
  if (!m.name) m.name = "(no name)";

  /* The top-level text is the notification and screen reader fallback. */
  hookd_buf_puts(b, "{\"text\":\"");
  sb_text(b, m.title, NOLIMIT, 1);
  sb_text(b, m.name, SLACK_HEADER_MAX, 1);
  if (m.invitee || m.email) {
    hookd_buf_puts(b, " with ");
    sb_text(b, m.invitee ? m.invitee : m.email, SLACK_FIELD_VALUE_MAX, 1);
  }
  if (*m.when) {
    hookd_buf_puts(b, ", ");
    sb_text(b, m.when, NOLIMIT, 1);
  }
  hookd_buf_puts(
      b, "\",\"blocks\":[{\"type\":\"header\",\"text\":{\"type\":\"plain_text\",\"text\":\"");
  sb_text(b, m.title, NOLIMIT, 0);
  sb_text(b, m.name, SLACK_HEADER_MAX - strlen(m.title), 0);
  hookd_buf_puts(b, "\"}}");
  meeting_fields(b, &m);
  form_answers(ev, b);
  hookd_buf_puts(b, ",{\"type\":\"context\",\"elements\":[{\"type\":\"mrkdwn\",\"text\":\"");
  sb_text(b, m.kind, NOLIMIT, 1);
  hookd_buf_puts(b, " · ");
  sb_text(b, ev->type, 200, 1);
  hookd_buf_puts(b, "\"}]}]");
  fields_free(&f);
}

/* Plain text for any other event. */
static void plain_message(const hookd_event *ev, hookd_buf *b) {
  hookd_buf_puts(b, "{\"text\":\"hookd: ");
  sb_text(b, ev->type, 200, 1);
  hookd_buf_puts(b, " event ");
  sb_text(b, ev->id, 200, 1);
  hookd_buf_puts(b, " from source ");
  sb_text(b, ev->source, 200, 1);
  hookd_buf_puts(b, "\"");
}

static const hookd_template *pick_template(const slack *st, const hookd_event *ev) {
  for (size_t i = 0; i < st->texts.n; i++)
    if (ev->host->pattern_match(st->texts.keys[i], ev->type) == 1) return st->texts.values[i];
  return st->text;
}

/* --- Slack Web API answers -------------------------------------------------- */

/* Maps a Web API answer ({"ok": true} or {"ok": false, "error": "..."}). */
static hookd_result api_answer(const hookd_host_api *host, const char *body, hookd_outcome *out) {
  static const char *const transient[] = {"ratelimited", "rate_limited",        "internal_error",
                                          "fatal_error", "service_unavailable", "request_timeout",
                                          NULL};
  static const char *const auth[] = {"not_authed",    "invalid_auth",           "account_inactive",
                                     "token_revoked", "token_expired",          "no_permission",
                                     "missing_scope", "not_allowed_token_type", NULL};
  static const char *const channel[] = {"channel_not_found", "not_in_channel", "is_archived", NULL};
  char error[128];
  char *ok = host->json_get(body, strlen(body), "ok");
  char *e = ok ? host->json_get(body, strlen(body), "error") : NULL;
  int fine = ok && strcmp(ok, "true") == 0;
  snprintf(error, sizeof error, "%s", e ? e : "unknown");
  host->free(e);
  if (!ok) {
    snprintf(out->message, sizeof out->message, "unexpected Slack API answer: %.200s", body);
    for (char *c = out->message; *c; c++)
      if ((unsigned char)*c < 0x20) *c = ' ';
    return HOOKD_FAIL;
  }
  host->free(ok);
  if (fine) return HOOKD_OK;
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
  const hookd_host_api *host = ev->host;
  hookd_buf b = {0};

  const hookd_template *t = pick_template(st, ev);
  if (t) {
    /* The whole rendered text is the value of a JSON string: render it raw
     * and escape all of it, literal text included. */
    char *text = host->render(t, ev, HOOKD_ESC_NONE, NULL);
    if (!text) {
      snprintf(out->message, sizeof out->message, "out of memory");
      return HOOKD_RETRY;
    }
    hookd_buf_puts(&b, "{\"text\":\"");
    sb_text(&b, text, NOLIMIT, 0);
    hookd_buf_puts(&b, "\"");
    host->free(text);
  } else if (hookd_meeting_kind_of(ev->type, NULL) != HOOKD_MEETING_NONE) {
    meeting_message(ev, &b);
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
    hookd_buf_puts(&b, ",\"channel\":\"");
    sb_text(&b, ch, NOLIMIT, 0);
    hookd_buf_puts(&b, "\"");
    host->free(ch);
  }
  hookd_buf_puts(&b, "}");
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
                            .timeout_ms = ev->timeout_ms,
                            .ca_file = st->ca_file};
  hookd_http_response resp = {.struct_size = sizeof resp};
  hookd_result rc = host->http(ev->self, &req, &resp, out);
  /* The Web API answers 200 even for errors: look inside. A webhook answers
   * "ok" or an error status, which http() has mapped already. */
  if (rc == HOOKD_OK && st->auth_header) rc = api_answer(host, resp.body ? resp.body : "", out);
  if (rc != HOOKD_OK)
    host->log(ev->self, ev, HOOKD_LOG_DEBUG, "slack answered %ld: %.300s", resp.status,
              resp.body ? resp.body : "");
  host->http_response_free(&resp);
  free(b.p);
  return rc;
}

static void slack_destroy(void *state) {
  slack *st = state;
  free(st->post_url);
  free(st->auth_header);
}

/* Rules between options, and the URL and header derived from them. */
static int check_choice(const hookd_host_api *host, const hookd_config *cfg, const slack *st) {
  if (st->webhook_url && st->token)
    return host->config_error(cfg, "token", "give either webhook_url or token, not both");
  if (!st->webhook_url && !st->token)
    return host->config_error(cfg, NULL, "webhook_url or token (with channel) is required");
  if (st->webhook_url && st->channel)
    return host->config_error(cfg, "channel",
                              "an incoming webhook posts to its own channel; channel needs token");
  if (st->token && !st->channel) return host->config_error(cfg, "channel", "required with token");
  if (st->token && !hookd_header_value_ok(st->token))
    return host->config_error(cfg, "token", "contains a line break or control character");
  for (size_t i = 0; i < st->texts.n; i++)
    if (host->pattern_match(st->texts.keys[i], "") == HOOKD_E_INVALID)
      return host->config_error(cfg, "texts", "bad event type pattern '%s'", st->texts.keys[i]);
  return 0;
}

static int slack_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                      void **state, char *err, size_t errlen) {
  (void)self;
  slack *st = *state;
  if (check_choice(host, cfg, st) != 0) return -1;
  if (st->webhook_url) {
    st->post_url = strdup(st->webhook_url);
  } else {
    size_t n = strlen(st->api_url);
    while (n > 0 && st->api_url[n - 1] == '/') n--;
    if (asprintf(&st->post_url, "%.*s/chat.postMessage", (int)n, st->api_url) < 0)
      st->post_url = NULL;
    if (asprintf(&st->auth_header, "Authorization: Bearer %s", st->token) < 0)
      st->auth_header = NULL;
    if (!st->auth_header) st->post_url = (free(st->post_url), NULL);
  }
  if (!st->post_url) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

/* The descriptor and hookd_plugin_entry(): a host older than ABI 1.1 (which
 * would not fill the options) is refused, and the host names both versions. */
HOOKD_PLUGIN_DEFINE("slack_post", "1.1.0",
                    "posts events to Slack (incoming webhook or chat.postMessage)", slack_init,
                    slack_deliver, slack_destroy, slack_options, slack)
