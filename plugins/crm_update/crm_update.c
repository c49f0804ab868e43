/* crm_update plugin: keeps CRM records in step with events (Salesforce upsert, or a REST call). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, strcasecmp */
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hookd/helpers.h"
#include "hookd/plugin.h"

typedef enum { PROVIDER_SALESFORCE, PROVIDER_REST } provider;
typedef enum { CANCEL_UPDATE, CANCEL_DELETE } on_cancel;
typedef enum { BODY_JSON, BODY_URL, BODY_NONE } body_escape;

/* Up to this many default fields per list. */
#define CRM_MAX_DEFAULTS 8

/* Per instance: the options the host fills, then what init() derives.
 * Read-only after init, so deliver() may run on many threads. */
typedef struct crm {
  int provider;
  const char *ca_file;
  /* salesforce */
  const char *instance_url;
  const char *token;
  const char *api_version;
  const char *object;
  const char *external_id_field;
  hookd_template *external_id;      /* rendered URL-escaped after record_url */
  hookd_template_map fields;        /* the record's fields */
  hookd_template_map cancel_fields; /* laid over fields for a canceled meeting */
  int on_cancel;
  /* rest */
  int method;
  hookd_template *url;
  hookd_template_map headers;
  hookd_template *body;
  int body_escape;
  /* derived by init() */
  const hookd_host_api *host;
  char *record_url;  /* .../sobjects/{object}/{external_id_field}/ */
  char *auth_header; /* "Authorization: Bearer ..." */
  int has_content_type;
  const char *def_keys[2][CRM_MAX_DEFAULTS]; /* Event defaults when fields are not given */
  hookd_template *def_vals[2][CRM_MAX_DEFAULTS];
} crm;

static const char *const providers[] = {"salesforce", "rest", NULL};
static const char *const cancels[] = {"update", "delete", NULL};
static const char *const methods[] = {"POST", "PUT", "PATCH", "DELETE", "GET", NULL};
static const char *const escapes[] = {"json", "url", "none", NULL};
static const hookd_escape escape_of[] = {HOOKD_ESC_JSON, HOOKD_ESC_URL, HOOKD_ESC_NONE};

#define ROW(name, type, flags, field, def, choices, esc, desc) \
  { name, HOOKD_OPT_##type, flags, offsetof(crm, field), def, 0, 0, choices, esc, desc }
static const hookd_option crm_options[] = {
    ROW("provider", ENUM, HOOKD_OPT_REQUIRED, provider, NULL, providers, HOOKD_ESC_NONE,
        "salesforce (upsert by external id) or rest (any HTTP API)"),
    ROW("ca_file", PATH, 0, ca_file, NULL, NULL, HOOKD_ESC_NONE,
        "CA bundle to verify the server with (default: the system's)"),
    ROW("instance_url", URL, 0, instance_url, NULL, NULL, HOOKD_ESC_NONE,
        "salesforce: the org's URL, e.g. https://example.my.salesforce.com"),
    ROW("token", SECRET, HOOKD_OPT_NONEMPTY, token, NULL, NULL, HOOKD_ESC_NONE,
        "salesforce: the OAuth access token"),
    ROW("api_version", STRING, 0, api_version, "v59.0", NULL, HOOKD_ESC_NONE,
        "salesforce: the REST API version"),
    ROW("object", STRING, 0, object, "Event", NULL, HOOKD_ESC_NONE, "salesforce: the sObject"),
    ROW("external_id_field", STRING, 0, external_id_field, NULL, NULL, HOOKD_ESC_NONE,
        "salesforce: the external id field to upsert by"),
    ROW("external_id", TEMPLATE, 0, external_id, "{{data.id}}", NULL, HOOKD_ESC_URL,
        "salesforce: the external id value"),
    ROW("fields", TEMPLATE_MAP, 0, fields, NULL, NULL, HOOKD_ESC_NONE,
        "salesforce: field -> template (default for Event: subject, times, location, text)"),
    ROW("on_cancel", ENUM, 0, on_cancel, "update", cancels, HOOKD_ESC_NONE,
        "salesforce: what a canceled meeting does to its record"),
    ROW("cancel_fields", TEMPLATE_MAP, 0, cancel_fields, NULL, NULL, HOOKD_ESC_NONE,
        "salesforce: fields laid over `fields` for a canceled meeting"),
    ROW("method", ENUM, 0, method, "POST", methods, HOOKD_ESC_NONE, "rest: the HTTP method"),
    ROW("url", TEMPLATE, 0, url, NULL, NULL, HOOKD_ESC_URL, "rest: the request URL"),
    ROW("headers", TEMPLATE_MAP, 0, headers, NULL, NULL, HOOKD_ESC_HEADER,
        "rest: request headers, name -> template"),
    ROW("body", TEMPLATE, 0, body, NULL, NULL, HOOKD_ESC_JSON,
        "rest: the request body (escaped by body_escape)"),
    ROW("body_escape", ENUM, 0, body_escape, "json", escapes, HOOKD_ESC_NONE,
        "rest: the escaping of values in body"),
    HOOKD_OPTIONS_END};

/* Salesforce Event fields when `fields` is not given. */
static const char *const default_event_fields[][2] = {
    {"Subject", "{{data.meetingInfo.meetingName}}"},
    {"StartDateTime", "{{data.meetingStart}}"},
    {"EndDateTime", "{{data.meetingEnd}}"},
    {"Location", "{{data.meetingInfo.location}}"},
    {"Description",
     "Meeting with {{data.meetingInfo.primaryInviteeName}} <{{data.meetingInfo.primaryInvitee}}>"
     " booked through {{data.meetingInfo.calendarUrl}}.\n"
     "Owner: {{data.meetingOwner.firstName}} {{data.meetingOwner.lastName}}"
     " <{{data.meetingOwner.username}}>"},
    {NULL, NULL}};

static const char *const default_event_cancel_fields[][2] = {
    {"Subject", "Canceled: {{data.meetingInfo.meetingName}}"}, {"ShowAs", "Free"}, {NULL, NULL}};

/* Names that go into a URL path or a header name unescaped. */
static int is_identifier(const char *s, const char *extra) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          *s == '_' || strchr(extra, *s)))
      return 0;
  return 1;
}

/* Keys that belong to the other provider are mistakes, not ignored. */
static int check_provider_keys(const hookd_host_api *host, const hookd_config *cfg, int prov) {
  static const char *const only[2][12] = {
      {"instance_url", "token", "api_version", "object", "external_id_field", "external_id",
       "fields", "on_cancel", "cancel_fields", NULL},
      {"method", "url", "headers", "body", "body_escape", NULL}};
  for (size_t i = 0; i < host->config_count(cfg); i++) {
    const char *k = host->config_key_at(cfg, i);
    for (const char *const *o = only[!prov]; *o; o++)
      if (strcmp(*o, k) == 0)
        return host->config_error(cfg, k, "not used with provider \"%s\"", providers[prov]);
  }
  return 0;
}

static int check_names(const hookd_host_api *host, const hookd_config *cfg, const char *key,
                       const hookd_template_map *m, const char *extra, const char *what) {
  for (size_t i = 0; i < m->n; i++)
    if (!is_identifier(m->keys[i], extra))
      return host->config_error(cfg, key, "'%s' is not %s", m->keys[i], what);
  return 0;
}

/* Compiles a default field list into the state's own arrays. */
static int use_defaults(const hookd_host_api *host, crm *st, int which,
                        const char *const (*defs)[2], hookd_template_map *out) {
  size_t n = 0;
  for (; defs[n][0] && n < CRM_MAX_DEFAULTS; n++) {
    char err[128];
    st->def_keys[which][n] = defs[n][0];
    if (!(st->def_vals[which][n] = host->template_compile(defs[n][1], err, sizeof err))) return -1;
  }
  out->keys = st->def_keys[which];
  out->values = st->def_vals[which];
  out->n = n;
  return 0;
}

static int init_salesforce(const hookd_host_api *host, const hookd_config *cfg, crm *st) {
  if (!st->instance_url) return host->config_error(cfg, "instance_url", "required");
  if (!st->token) return host->config_error(cfg, "token", "required");
  if (!hookd_header_value_ok(st->token))
    return host->config_error(cfg, "token", "contains a line break or control character");
  if (!st->external_id_field) return host->config_error(cfg, "external_id_field", "required");
  if (!is_identifier(st->external_id_field, ""))
    return host->config_error(cfg, "external_id_field", "expected an API field name");
  if (!is_identifier(st->object, ""))
    return host->config_error(cfg, "object", "expected an API object name");
  const char *version = st->api_version;
  if (!is_identifier(version[0] == 'v' ? version + 1 : version, ".") || !strchr(version, '.'))
    return host->config_error(cfg, "api_version", "expected a version such as \"v59.0\"");
  int is_event = strcmp(st->object, "Event") == 0;
  if (st->fields.n == 0 && !is_event)
    return host->config_error(cfg, "fields", "required for object %s (defaults exist for Event)",
                              st->object);
  if (st->cancel_fields.n && st->on_cancel == CANCEL_DELETE)
    return host->config_error(cfg, "cancel_fields", "not used with on_cancel \"delete\"");
  if (check_names(host, cfg, "fields", &st->fields, "", "an API field name") != 0 ||
      check_names(host, cfg, "cancel_fields", &st->cancel_fields, "", "an API field name") != 0)
    return -1;
  if ((st->fields.n == 0 && use_defaults(host, st, 0, default_event_fields, &st->fields) != 0) ||
      (st->cancel_fields.n == 0 && is_event && st->on_cancel == CANCEL_UPDATE &&
       use_defaults(host, st, 1, default_event_cancel_fields, &st->cancel_fields) != 0))
    return HOOKD_E_NOMEM;
  size_t n = strlen(st->instance_url);
  while (n > 0 && st->instance_url[n - 1] == '/') n--;
  if (asprintf(&st->record_url, "%.*s/services/data/%s%s/sobjects/%s/%s/", (int)n, st->instance_url,
               version[0] == 'v' ? "" : "v", version, st->object, st->external_id_field) < 0)
    st->record_url = NULL;
  if (asprintf(&st->auth_header, "Authorization: Bearer %s", st->token) < 0) st->auth_header = NULL;
  return st->record_url && st->auth_header ? 0 : HOOKD_E_NOMEM;
}

static int init_rest(const hookd_host_api *host, const hookd_config *cfg, crm *st) {
  if (!st->url) return host->config_error(cfg, "url", "required");
  if (check_names(host, cfg, "headers", &st->headers, "-!#$%&'*+.^`|~", "a header name") != 0)
    return -1;
  for (size_t i = 0; i < st->headers.n; i++)
    if (strcasecmp(st->headers.keys[i], "Content-Type") == 0) st->has_content_type = 1;
  return 0;
}

static void crm_destroy(void *state) {
  crm *st = state;
  for (int w = 0; w < 2; w++)
    for (size_t i = 0; i < CRM_MAX_DEFAULTS && st->def_vals[w][i]; i++)
      st->host->template_free(st->def_vals[w][i]);
  free(st->record_url);
  free(st->auth_header);
}

static int crm_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                    void **state, char *err, size_t errlen) {
  (void)self;
  crm *st = *state;
  st->host = host;
  int rc = check_provider_keys(host, cfg, st->provider);
  if (rc == 0)
    rc = st->provider == PROVIDER_SALESFORCE ? init_salesforce(host, cfg, st)
                                             : init_rest(host, cfg, st);
  if (rc == HOOKD_E_NOMEM) snprintf(err, errlen, "out of memory");
  if (rc != 0) crm_destroy(st);
  return rc != 0 ? -1 : 0;
}

/* --- delivery -------------------------------------------------------------- */

static hookd_result oom(hookd_outcome *out) {
  snprintf(out->message, sizeof out->message, "out of memory");
  return HOOKD_RETRY;
}

/* The meeting-kind rule of hookd/helpers.h. */
static int is_canceled(const hookd_event *ev) {
  char *v = ev->host->event_get(ev, "data.isCanceled");
  int yes = hookd_meeting_kind_of(ev->type, v) == HOOKD_MEETING_CANCELED;
  ev->host->free(v);
  return yes;
}

/* Appends "name": value to a JSON object; an empty value is null (the field
 * is cleared rather than set to an invalid ""). */
static int add_field(const hookd_event *ev, hookd_buf *b, const char *name,
                     const hookd_template *tpl) {
  char *v = ev->host->render(tpl, ev, HOOKD_ESC_NONE, NULL);
  if (!v) return -1;
  hookd_buf_puts(b, b->len > 1 ? ",\"" : "\"");
  hookd_buf_json(b, name, strlen(name));
  hookd_buf_puts(b, "\":");
  if (*v) {
    hookd_buf_puts(b, "\"");
    hookd_buf_json(b, v, strlen(v));
    hookd_buf_puts(b, "\"");
  } else {
    hookd_buf_puts(b, "null");
  }
  ev->host->free(v);
  return 0;
}

/* The record as JSON: fields, with cancel_fields laid over them when the
 * meeting is canceled (so a record first created by the cancel is whole). */
static int record_json(const crm *st, const hookd_event *ev, int canceled, hookd_buf *b) {
  const hookd_template_map *f = &st->fields, *over = canceled ? &st->cancel_fields : NULL;
  hookd_buf_puts(b, "{");
  for (size_t i = 0; i < f->n; i++) {
    const hookd_template *t = f->values[i];
    for (size_t j = 0; over && j < over->n; j++)
      if (strcmp(over->keys[j], f->keys[i]) == 0) t = over->values[j];
    if (add_field(ev, b, f->keys[i], t) != 0) return -1;
  }
  for (size_t j = 0; over && j < over->n; j++) {
    size_t i = 0;
    while (i < f->n && strcmp(f->keys[i], over->keys[j]) != 0) i++;
    if (i == f->n && add_field(ev, b, over->keys[j], over->values[j]) != 0) return -1;
  }
  hookd_buf_puts(b, "}");
  return b->oom ? -1 : 0;
}

static hookd_result deliver_salesforce(const crm *st, const hookd_event *ev, hookd_outcome *out) {
  const hookd_host_api *host = ev->host;
  char *id = host->render(st->external_id, ev, HOOKD_ESC_URL, NULL);
  if (!id) return oom(out);
  if (!*id) {
    host->free(id);
    snprintf(out->message, sizeof out->message, "the external id renders empty");
    return HOOKD_FAIL;
  }
  char *url = NULL;
  if (asprintf(&url, "%s%s", st->record_url, id) < 0) url = NULL;
  host->free(id);
  if (!url) return oom(out);

  int canceled = is_canceled(ev);
  int del = canceled && st->on_cancel == CANCEL_DELETE;
  hookd_buf b = {0};
  if (!del && record_json(st, ev, canceled, &b) != 0) {
    free(b.p);
    free(url);
    return oom(out);
  }
  const char *headers[] = {st->auth_header, "Accept: application/json",
                           "Content-Type: application/json; charset=UTF-8"};
  hookd_http_request req = {.struct_size = sizeof req,
                            .method = del ? "DELETE" : "PATCH",
                            .url = url,
                            .headers = headers,
                            .n_headers = del ? 2 : 3,
                            .body = b.p,
                            .body_len = b.len,
                            .timeout_ms = ev->timeout_ms,
                            .ca_file = st->ca_file};
  hookd_http_response resp = {.struct_size = sizeof resp};
  hookd_result rc = host->http(ev->self, &req, &resp, out);
  const char *body = resp.body ? resp.body : "";
  if (del && resp.status == 404) {
    /* Already gone (or never synced): the goal of a delete is reached. */
    out->message[0] = '\0';
    rc = HOOKD_OK;
  } else if (resp.status == 401) {
    char detail[HOOKD_MESSAGE_MAX];
    snprintf(detail, sizeof detail, "%s", out->message);
    snprintf(out->message, sizeof out->message,
             "Salesforce rejected the access token (invalid or expired): %.400s", detail);
  } else if (resp.status == 403 && strstr(body, "REQUEST_LIMIT_EXCEEDED")) {
    /* The org's API request limit: it resets, so wait rather than give up. */
    rc = HOOKD_RETRY;
  }
  host->log(ev->self, ev, rc == HOOKD_OK ? HOOKD_LOG_DEBUG : HOOKD_LOG_INFO, "%s %s: %ld",
            req.method, url, resp.status);
  host->http_response_free(&resp);
  free(b.p);
  free(url);
  return rc;
}

static hookd_result deliver_rest(const crm *st, const hookd_event *ev, hookd_outcome *out) {
  const hookd_host_api *host = ev->host;
  hookd_result rc = HOOKD_RETRY;
  size_t nh = st->headers.n;
  char **lines = calloc(nh + 1, sizeof *lines);
  char *url = host->render(st->url, ev, HOOKD_ESC_URL, NULL);
  char *body = NULL;
  size_t body_len = 0;
  if (!lines || !url) goto nomem;
  if (st->body && !(body = host->render(st->body, ev, escape_of[st->body_escape], &body_len)))
    goto nomem;
  for (size_t i = 0; i < nh; i++) {
    char *v = host->render(st->headers.values[i], ev, HOOKD_ESC_HEADER, NULL);
    if (!v) goto nomem;
    int n = asprintf(&lines[i], "%s: %s", st->headers.keys[i], v);
    host->free(v);
    if (n < 0) {
      lines[i] = NULL;
      goto nomem;
    }
  }
  if (body && !st->has_content_type) lines[nh++] = "Content-Type: application/json";
  if (!hookd_url_ok(url)) {
    snprintf(out->message, sizeof out->message, "url renders to '%.200s', not an http(s) URL", url);
    rc = HOOKD_FAIL;
    goto done;
  }

  hookd_http_request req = {.struct_size = sizeof req,
                            .method = methods[st->method],
                            .url = url,
                            .headers = (const char *const *)lines,
                            .n_headers = nh,
                            .body = body,
                            .body_len = body_len,
                            .timeout_ms = ev->timeout_ms,
                            .ca_file = st->ca_file};
  hookd_http_response resp = {.struct_size = sizeof resp};
  rc = host->http(ev->self, &req, &resp, out);
  if (strcmp(methods[st->method], "DELETE") == 0 && resp.status == 404) {
    out->message[0] = '\0';
    rc = HOOKD_OK;
  }
  host->http_response_free(&resp);
  goto done;
nomem:
  oom(out);
done:
  for (size_t i = 0; lines && i < st->headers.n; i++) free(lines[i]);
  free(lines);
  host->free(url);
  host->free(body);
  return rc;
}

static hookd_result crm_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  const crm *st = state;
  return st->provider == PROVIDER_SALESFORCE ? deliver_salesforce(st, ev, out)
                                             : deliver_rest(st, ev, out);
}

/* The descriptor and hookd_plugin_entry(): a host older than ABI 1.1 (which
 * would not fill the options) is refused, and the host names both versions. */
HOOKD_PLUGIN_DEFINE("crm_update", "1.1.0",
                    "keeps CRM records in step (Salesforce upsert, or any REST API)", crm_init,
                    crm_deliver, crm_destroy, crm_options, crm)
