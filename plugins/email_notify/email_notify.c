/* email_notify plugin: one MIME email per event over SMTP (through the host), optionally with an
 * invitation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "email_ics.h"
#include "email_mime.h"
#include "hookd/helpers.h"
#include "hookd/plugin.h"

/* What kind of meeting event (hookd_meeting_kind_of), as an index into the
 * default texts. */
typedef enum email_kind {
  EMAIL_SCHEDULED = 0,
  EMAIL_RESCHEDULED = 1,
  EMAIL_CANCELED = 2,
  EMAIL_OTHER = 3,
  EMAIL_KINDS = 4
} email_kind;

enum { TLS_REQUIRED, TLS_OPTIONAL, TLS_NONE };

/* Per instance: the options the host fills, then what init() derives.
 * Read-only after init, so deliver() may run on many threads. */
typedef struct email_state {
  const char *smtp_url;
  int tls;
  const char *username;
  const char *password;
  const char *from;
  hookd_template_list to;
  hookd_template_list cc;
  hookd_template *subject; /* NULL: the default for the kind */
  hookd_template *body;
  const char *ca_file;
  int attach_ics;
  const hookd_host_api *host;
  int smtp_tls; /* hookd_smtp_request.tls */
  hookd_template *def_subject[EMAIL_KINDS];
  hookd_template *def_body[EMAIL_KINDS];
} email_state;

static const char *const tls_modes[] = {"required", "optional", "none", NULL};
static const char *const smtp_schemes[] = {"smtp", "smtps", NULL};

#define ROW(name, type, flags, field, def, choices, esc, desc) \
  { name, HOOKD_OPT_##type, flags, offsetof(email_state, field), def, 0, 0, choices, esc, desc }
static const hookd_option email_options[] = {
    ROW("smtp_url", URL, HOOKD_OPT_REQUIRED, smtp_url, NULL, smtp_schemes, HOOKD_ESC_NONE,
        "the mail server, e.g. smtp://mail.example.com:587 (smtps:// for implicit TLS)"),
    ROW("tls", ENUM, 0, tls, "required", tls_modes, HOOKD_ESC_NONE,
        "STARTTLS on smtp://: required, optional (when offered) or none"),
    ROW("username", STRING, 0, username, NULL, NULL, HOOKD_ESC_NONE, "SMTP AUTH user"),
    ROW("password", SECRET, 0, password, NULL, NULL, HOOKD_ESC_NONE, "SMTP AUTH password"),
    ROW("from", STRING, HOOKD_OPT_REQUIRED, from, NULL, NULL, HOOKD_ESC_NONE,
        "the sender's address, e.g. hookd@example.com"),
    ROW("to", TEMPLATE_LIST, HOOKD_OPT_REQUIRED | HOOKD_OPT_NONEMPTY, to, NULL, NULL,
        HOOKD_ESC_HEADER, "recipients; an entry may render to several, ',' or ';' separated"),
    ROW("cc", TEMPLATE_LIST, 0, cc, NULL, NULL, HOOKD_ESC_HEADER, "copy recipients, like to"),
    ROW("subject", TEMPLATE, 0, subject, NULL, NULL, HOOKD_ESC_HEADER,
        "the subject; default: one per meeting kind (booked, moved, canceled, other)"),
    ROW("body", TEMPLATE, 0, body, NULL, NULL, HOOKD_ESC_NONE,
        "the plain text body; default: the meeting's details, or the event's data"),
    ROW("ca_file", PATH, 0, ca_file, NULL, NULL, HOOKD_ESC_NONE,
        "CA bundle to verify the server with (default: the system's)"),
    ROW("attach_ics", BOOL, 0, attach_ics, "false", NULL, HOOKD_ESC_NONE,
        "attach an iCalendar invitation (REQUEST, or CANCEL for a canceled meeting)"),
    HOOKD_OPTIONS_END};

/* The recipients of one delivery. */
typedef struct email_rcpts {
  char **to;
  size_t n_to;
  char **cc;
  size_t n_cc;
} email_rcpts;

static const char *const email_default_subject[EMAIL_KINDS] = {
    "Meeting booked: {{data.meetingInfo.meetingName}} with "
    "{{data.meetingInfo.primaryInviteeName}}",
    "Meeting moved: {{data.meetingInfo.meetingName}} with {{data.meetingInfo.primaryInviteeName}}",
    "Meeting canceled: {{data.meetingInfo.meetingName}} with "
    "{{data.meetingInfo.primaryInviteeName}}",
    "hookd: {{eventType}}",
};

#define EMAIL_MEETING_LINES                                                                   \
  "Meeting:  {{data.meetingInfo.meetingName}}\n"                                              \
  "Start:    {{data.meetingStart}}\n"                                                         \
  "End:      {{data.meetingEnd}}\n"                                                           \
  "Invitee:  {{data.meetingInfo.primaryInviteeName}} <{{data.meetingInfo.primaryInvitee}}>\n" \
  "Others:   {{data.meetingInfo.optionalInvitees|default:none}}\n"                            \
  "Owner:    {{data.meetingOwner.firstName}} {{data.meetingOwner.lastName}} "                 \
  "<{{data.meetingOwner.username}}>\n"                                                        \
  "Location: {{data.meetingInfo.location}}\n"                                                 \
  "\n"                                                                                        \
  "Event {{eventType}} {{eventId}}\n"

static const char *const email_default_body[EMAIL_KINDS] = {
    "A meeting was booked.\n\n" EMAIL_MEETING_LINES,
    "A meeting was moved; the new time is below.\n\n" EMAIL_MEETING_LINES,
    "A meeting was canceled.\n\n" EMAIL_MEETING_LINES,
    "hookd received event {{eventType}} {{eventId}}.\n\n{{data|json}}\n",
};

/* --- recipients ---------------------------------------------------------- */

static void email_rcpts_free(email_rcpts *r) {
  for (size_t i = 0; i < r->n_to; i++) free(r->to[i]);
  for (size_t i = 0; i < r->n_cc; i++) free(r->cc[i]);
  free(r->to);
  free(r->cc);
  memset(r, 0, sizeof *r);
}

static int email_rcpts_has(const email_rcpts *r, const char *a) {
  for (size_t i = 0; i < r->n_to; i++)
    if (strcasecmp(r->to[i], a) == 0) return 1;
  for (size_t i = 0; i < r->n_cc; i++)
    if (strcasecmp(r->cc[i], a) == 0) return 1;
  return 0;
}

/* Splits one rendered entry on ',' and ';' (so a template may yield a list,
 * such as optionalInvitees), validates each address and adds the new ones.
 * Returns 0, -1 (bad address: message in outcome) or -2 (out of memory). */
static int email_add_rendered(email_rcpts *r, char ***list, size_t *n, char *text, const char *key,
                              size_t index, hookd_outcome *outcome) {
  char *save = NULL;
  for (char *a = strtok_r(text, ",;", &save); a; a = strtok_r(NULL, ",;", &save)) {
    a = email_trim(a);
    if (!*a) continue; /* an empty value means "no one here", not an error */
    if (!email_addr_ok(a)) {
      snprintf(outcome->message, sizeof outcome->message,
               "%s[%zu]: \"%.200s\" is not an email address", key, index, a);
      return -1;
    }
    if (email_rcpts_has(r, a)) continue;
    char **grown = realloc(*list, (*n + 1) * sizeof **list);
    if (!grown) return -2;
    *list = grown;
    if (!(grown[*n] = strdup(a))) return -2;
    (*n)++;
  }
  return 0;
}

/* Renders to and cc. Returns HOOKD_OK or the outcome of a failure. */
static hookd_result email_render_rcpts(const email_state *st, const hookd_event *ev, email_rcpts *r,
                                       hookd_outcome *outcome) {
  for (int pass = 0; pass < 2; pass++) {
    hookd_template *const *tpl = pass ? st->cc.items : st->to.items;
    size_t nt = pass ? st->cc.n : st->to.n;
    for (size_t i = 0; i < nt; i++) {
      char *text = ev->host->render(tpl[i], ev, HOOKD_ESC_HEADER, NULL);
      if (!text) {
        snprintf(outcome->message, sizeof outcome->message, "out of memory");
        return HOOKD_RETRY;
      }
      int rc = pass ? email_add_rendered(r, &r->cc, &r->n_cc, text, "cc", i, outcome)
                    : email_add_rendered(r, &r->to, &r->n_to, text, "to", i, outcome);
      ev->host->free(text);
      if (rc == -2) {
        snprintf(outcome->message, sizeof outcome->message, "out of memory");
        return HOOKD_RETRY;
      }
      if (rc == -1) return HOOKD_FAIL; /* the event's data will not change on retry */
    }
  }
  if (r->n_to + r->n_cc == 0) {
    snprintf(outcome->message, sizeof outcome->message,
             "no recipients: every to and cc address rendered empty");
    return HOOKD_FAIL;
  }
  return HOOKD_OK;
}

/* --- the message --------------------------------------------------------- */

static email_kind email_kind_of(const hookd_event *ev) {
  char *flag = ev->host->event_get(ev, "data.isCanceled");
  hookd_meeting_kind k = hookd_meeting_kind_of(ev->type, flag);
  ev->host->free(flag);
  return k == HOOKD_MEETING_SCHEDULED     ? EMAIL_SCHEDULED
         : k == HOOKD_MEETING_RESCHEDULED ? EMAIL_RESCHEDULED
         : k == HOOKD_MEETING_CANCELED    ? EMAIL_CANCELED
                                          : EMAIL_OTHER;
}

/* The event fields the invitation needs, fetched through the host. */
#define ICS_FIELDS 11
static const char *const ics_paths[ICS_FIELDS] = {"data.id",
                                                  "data.meetingStart",
                                                  "data.meetingEnd",
                                                  "eventTimestamp",
                                                  "data.meetingInfo.meetingName",
                                                  "data.meetingInfo.location",
                                                  "data.meetingOwner.username",
                                                  "data.meetingInfo.primaryInvitee",
                                                  "data.meetingInfo.primaryInviteeName",
                                                  "data.meetingInfo.optionalInvitees",
                                                  "data.meetingOwner.firstName"};

/* Builds the invitation: NULL in *ics when the event carries no meeting (id,
 * start and end). Returns -1 when out of memory. */
static int email_invite(const hookd_event *ev, email_kind kind, char **ics) {
  const hookd_host_api *host = ev->host;
  char *f[ICS_FIELDS + 1];
  for (int i = 0; i < ICS_FIELDS; i++) f[i] = host->event_get(ev, ics_paths[i]);
  f[ICS_FIELDS] = host->event_get(ev, "data.meetingOwner.lastName");
  email_meeting m = {.id = f[0],
                     .canceled = kind == EMAIL_CANCELED,
                     .summary = f[4],
                     .location = f[5],
                     .owner = f[6],
                     .invitee = f[7],
                     .invitee_name = f[8],
                     .optional = f[9]};
  char owner[256];
  snprintf(owner, sizeof owner, "%s%s%s", f[10] ? f[10] : "", f[10] && f[11] ? " " : "",
           f[11] ? f[11] : "");
  m.owner_name = owner;
  if (hookd_iso8601_parse(f[3], &m.stamp_ms) != 0) m.stamp_ms = ev->received_ms;
  int rc = 0;
  *ics = NULL;
  if (f[0] && *f[0] && hookd_iso8601_parse(f[1], &m.start_ms) == 0 &&
      hookd_iso8601_parse(f[2], &m.end_ms) == 0 && !(*ics = email_ics_build(&m)))
    rc = -1;
  for (int i = 0; i <= ICS_FIELDS; i++) host->free(f[i]);
  return rc;
}

/* Builds the whole RFC 5322 message. Returns HOOKD_OK or a failure result. */
static hookd_result email_build(const email_state *st, const hookd_event *ev, const email_rcpts *r,
                                hookd_buf *msg, hookd_outcome *outcome) {
  const hookd_host_api *host = ev->host;
  email_kind kind = email_kind_of(ev);
  const hookd_template *subject_t = st->subject ? st->subject : st->def_subject[kind];
  const hookd_template *body_t = st->body ? st->body : st->def_body[kind];
  email_message m = {.from = st->from,
                     .to = r->to,
                     .n_to = r->n_to,
                     .cc = r->cc,
                     .n_cc = r->n_cc,
                     .date_ms = (int64_t)time(NULL) * 1000};
  char *ics = NULL, digest[33];
  char *subject = host->render(subject_t, ev, HOOKD_ESC_HEADER, NULL);
  char *body = host->render(body_t, ev, HOOKD_ESC_NONE, &m.body_len);
  int rc = subject && body ? 0 : -1;
  if (rc == 0 && st->attach_ics && (rc = email_invite(ev, kind, &ics)) == 0 && !ics)
    host->log(ev->self, ev, HOOKD_LOG_DEBUG,
              "no meeting id, start and end in the event: calendar part left out");
  /* Stable across retries of one event: if a retry follows a send whose
   * answer was lost, mail systems can see the duplicate for what it is. */
  email_mime_digest(ev->instance, ev->id, digest);
  m.digest = digest;
  m.subject = subject ? email_trim(subject) : "";
  m.body = body;
  m.ics = ics;
  m.ics_len = ics ? strlen(ics) : 0;
  m.ics_method = kind == EMAIL_CANCELED ? "CANCEL" : "REQUEST";
  if (rc == 0) rc = email_mime_build(&m, msg);
  if (rc != 0)
    snprintf(outcome->message, sizeof outcome->message, "out of memory building the message");
  host->free(subject);
  host->free(body);
  free(ics);
  return rc == 0 ? HOOKD_OK : HOOKD_RETRY;
}

static hookd_result email_send(const email_state *st, const hookd_event *ev, const email_rcpts *r,
                               const hookd_buf *msg, hookd_outcome *outcome) {
  size_t n = r->n_to + r->n_cc;
  const char **rcpt = calloc(n, sizeof *rcpt);
  if (!rcpt) {
    snprintf(outcome->message, sizeof outcome->message, "out of memory");
    return HOOKD_RETRY;
  }
  for (size_t i = 0; i < n; i++) rcpt[i] = i < r->n_to ? r->to[i] : r->cc[i - r->n_to];
  hookd_smtp_request req = {.struct_size = sizeof req,
                            .url = st->smtp_url,
                            .tls = st->smtp_tls,
                            .username = st->username,
                            .password = st->password,
                            .ca_file = st->ca_file,
                            .from = st->from,
                            .rcpt = rcpt,
                            .n_rcpt = n,
                            .message = msg->p,
                            .message_len = msg->len,
                            .timeout_ms = ev->timeout_ms};
  hookd_result res = ev->host->smtp(ev->self, &req, outcome);
  free(rcpt);
  if (res == HOOKD_OK)
    ev->host->log(ev->self, ev, HOOKD_LOG_INFO, "sent to %zu recipient(s): %s", n,
                  outcome->message);
  return res;
}

static hookd_result email_deliver(void *state, const hookd_event *ev, hookd_outcome *outcome) {
  const email_state *st = state;
  email_rcpts r = {0};
  hookd_buf msg = {0};
  hookd_result res = email_render_rcpts(st, ev, &r, outcome);
  if (res == HOOKD_OK) res = email_build(st, ev, &r, &msg, outcome);
  if (res == HOOKD_OK) res = email_send(st, ev, &r, &msg, outcome);
  if (res != HOOKD_OK)
    ev->host->log(ev->self, ev, res == HOOKD_RETRY ? HOOKD_LOG_WARN : HOOKD_LOG_ERROR, "%s: %s",
                  res == HOOKD_RETRY ? "will retry" : "not delivered", outcome->message);
  email_rcpts_free(&r);
  hookd_buf_free(&msg);
  return res;
}

/* --- init / destroy ------------------------------------------------------ */

static void email_destroy(void *state) {
  email_state *st = state;
  for (int k = 0; k < EMAIL_KINDS; k++) {
    if (st->def_subject[k]) st->host->template_free(st->def_subject[k]);
    if (st->def_body[k]) st->host->template_free(st->def_body[k]);
  }
}

/* Literal entries of to/cc (no "{{") are checked now, so that `hookd check`
 * reports a typo. */
static int email_check_list(const hookd_host_api *host, const hookd_config *cfg, const char *key) {
  const char *const *items = NULL;
  size_t n = 0;
  if (host->config_string_list(cfg, key, &items, &n) != HOOKD_E_OK) return 0;
  for (size_t i = 0; i < n; i++) {
    if (strstr(items[i], "{{")) continue;
    char *copy = strdup(items[i]), *save = NULL;
    int bad = copy == NULL, any = 0;
    for (char *a = copy ? strtok_r(copy, ",;", &save) : NULL; a && !bad;
         a = strtok_r(NULL, ",;", &save)) {
      a = email_trim(a);
      any |= *a != '\0';
      bad = *a && !email_addr_ok(a);
    }
    free(copy);
    if (bad || !any)
      return host->config_error(cfg, key, "entry %zu: \"%s\" is not an email address", i, items[i]);
  }
  return 0;
}

/* Rules between options. */
static int email_check(const hookd_host_api *host, const hookd_config *cfg, email_state *st) {
  int implicit_tls = strncasecmp(st->smtp_url, "smtps://", 8) == 0;
  const char *tls_given = NULL;
  host->config_string(cfg, "tls", NULL, &tls_given);
  if (implicit_tls && tls_given && st->tls != TLS_REQUIRED)
    return host->config_error(cfg, "tls", "smtps:// always uses TLS; use smtp:// for \"%s\"",
                              tls_modes[st->tls]);
  st->smtp_tls = implicit_tls || st->tls == TLS_REQUIRED ? 2 : st->tls == TLS_OPTIONAL ? 1 : 0;
  if (st->ca_file && access(st->ca_file, R_OK) != 0)
    return host->config_error(cfg, "ca_file", "%s: %s", st->ca_file, strerror(errno));
  if (st->password && !st->username) return host->config_error(cfg, "password", "needs a username");
  if (!email_addr_ok(st->from))
    return host->config_error(cfg, "from", "\"%s\" is not an email address", st->from);
  if (!HOOKD_HOST_HAS(host, smtp)) return host->config_error(cfg, NULL, "this hookd has no SMTP");
  return email_check_list(host, cfg, "to") || email_check_list(host, cfg, "cc") ? -1 : 0;
}

static int email_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                      void **state, char *err, size_t errlen) {
  email_state *st = *state;
  st->host = host;
  if (email_check(host, cfg, st) != 0) return -1;
  for (int k = 0; k < EMAIL_KINDS; k++) {
    char terr[128] = "";
    if ((!st->subject && !(st->def_subject[k] = host->template_compile(email_default_subject[k],
                                                                       terr, sizeof terr))) ||
        (!st->body &&
         !(st->def_body[k] = host->template_compile(email_default_body[k], terr, sizeof terr)))) {
      snprintf(err, errlen, "built-in template failed to compile: %s", terr);
      email_destroy(st);
      return -1;
    }
  }
  if (st->password && st->smtp_tls != 2)
    host->log(self, NULL, HOOKD_LOG_WARN,
              "tls is \"%s\": the SMTP password may cross the network in clear text",
              tls_modes[st->tls]);
  return 0;
}

/* The descriptor and hookd_plugin_entry(): a host older than ABI 1.1 (which
 * would not fill the options) is refused, and the host names both versions. */
HOOKD_PLUGIN_DEFINE("email_notify", "1.1.0",
                    "sends an email per event over SMTP, optionally with a calendar invite",
                    email_init, email_deliver, email_destroy, email_options, email_state)
