/* crm_update plugin: keeps CRM records in step with events (Salesforce upsert, or a REST call). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, strcasecmp */
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hookd/plugin.h"

#define CRM_DEFAULT_TIMEOUT_MS 10000
#define CRM_DEFAULT_API_VERSION "v59.0"

typedef enum { PROVIDER_SALESFORCE, PROVIDER_REST } provider;

/* A named template: a record field, or an HTTP header. */
typedef struct named {
  const char *name; /* host-owned */
  hookd_template *tpl;
} named;

typedef struct named_list {
  named *v;
  size_t n;
} named_list;

/* Per instance; read-only after init, so deliver() may run on many threads. */
typedef struct crm {
  const hookd_host_api *host;
  hookd_instance *self;
  provider provider;
  const char *ca_file;
  uint32_t timeout_ms;
  /* salesforce */
  char *record_url;            /* .../sobjects/{object}/{external_id_field}/ */
  char *auth_header;           /* "Authorization: Bearer ..." */
  hookd_template *external_id; /* rendered URL-escaped after record_url */
  named_list fields;           /* the record's fields */
  named_list cancel_fields;    /* laid over fields for a canceled meeting */
  int cancel_delete;           /* on_cancel: "delete" */
  /* rest */
  const char *method;
  hookd_template *url;
  named_list headers;
  hookd_template *body;
  hookd_escape body_escape;
  int has_content_type;
} crm;

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

/* --- a small string builder ---------------------------------------------- */

typedef struct sb {
  char *p;
  size_t len, cap;
  int oom;
} sb;

static void sb_add(sb *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 512;
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

/* Appends s as a quoted JSON string. */
static void sb_json(sb *b, const char *s) {
  sb_puts(b, "\"");
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      sb_add(b, esc, 2);
    } else if (c == '\n') {
      sb_puts(b, "\\n");
    } else if (c < 0x20 || c == 0x7f) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      sb_puts(b, esc);
    } else {
      sb_add(b, s, 1);
    }
  }
  sb_puts(b, "\"");
}

/* --- config ---------------------------------------------------------------- */

static void named_list_free(const hookd_host_api *host, named_list *l) {
  for (size_t i = 0; i < l->n; i++) host->template_free(l->v[i].tpl);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* Reads an object of name -> template (`fields`, `cancel_fields`, `headers`).
 * Returns 1 when present, 0 when absent, negative on error. */
static int read_named(crm *st, const hookd_config *cfg, const char *key, named_list *out) {
  const hookd_host_api *host = st->host;
  const hookd_config *obj;
  int rc = host->config_object(cfg, key, &obj);
  if (rc < 0) return rc;
  if (!obj) return 0;
  size_t n = host->config_count(obj);
  out->v = calloc(n ? n : 1, sizeof *out->v);
  if (!out->v) return HOOKD_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    named *f = &out->v[out->n];
    f->name = host->config_key_at(obj, i);
    if ((rc = host->config_template(obj, f->name, NULL, &f->tpl)) < 0) return rc;
    out->n++;
  }
  return 1;
}

static int compile_defaults(crm *st, const char *const (*defs)[2], named_list *out) {
  size_t n = 0;
  while (defs[n][0]) n++;
  out->v = calloc(n, sizeof *out->v);
  if (!out->v) return HOOKD_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    char err[128];
    out->v[i].name = defs[i][0];
    out->v[i].tpl = st->host->template_compile(defs[i][1], err, sizeof err);
    if (!out->v[i].tpl) return HOOKD_E_NOMEM;
    out->n++;
  }
  return 0;
}

/* Names that go into a URL path or a header name unescaped. */
static int is_identifier(const char *s, const char *extra) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          *s == '_' || strchr(extra, *s)))
      return 0;
  return 1;
}

static int http_url(const char *s) {
  return strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0;
}

static int init_salesforce(crm *st, const hookd_config *cfg) {
  static const char *const keys[] = {"provider",  "instance_url",      "token",       "api_version",
                                     "object",    "external_id_field", "external_id", "fields",
                                     "on_cancel", "cancel_fields",     "timeout_ms",  "ca_file",
                                     NULL};
  const hookd_host_api *host = st->host;
  const char *instance, *token, *version, *object, *ext_field, *on_cancel;
  int rc;
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK ||
      host->config_string(cfg, "instance_url", NULL, &instance) < 0 ||
      host->config_string(cfg, "token", NULL, &token) < 0 ||
      host->config_string(cfg, "api_version", CRM_DEFAULT_API_VERSION, &version) < 0 ||
      host->config_string(cfg, "object", "Event", &object) < 0 ||
      host->config_string(cfg, "external_id_field", NULL, &ext_field) < 0 ||
      host->config_string(cfg, "on_cancel", "update", &on_cancel) < 0 ||
      host->config_template(cfg, "external_id", "{{data.id}}", &st->external_id) < 0)
    return -1;

  if (!instance) return host->config_error(cfg, "instance_url", "required");
  if (!http_url(instance))
    return host->config_error(cfg, "instance_url", "expected an https:// URL");
  if (!token || !*token) return host->config_error(cfg, "token", "required");
  if (strpbrk(token, "\r\n")) return host->config_error(cfg, "token", "contains a line break");
  if (!ext_field) return host->config_error(cfg, "external_id_field", "required");
  if (!is_identifier(ext_field, ""))
    return host->config_error(cfg, "external_id_field", "expected an API field name");
  if (!is_identifier(object, ""))
    return host->config_error(cfg, "object", "expected an API object name");
  if (!is_identifier(version[0] == 'v' ? version + 1 : version, ".") || !strchr(version, '.'))
    return host->config_error(cfg, "api_version", "expected a version such as \"v59.0\"");
  if (strcmp(on_cancel, "update") == 0) {
    st->cancel_delete = 0;
  } else if (strcmp(on_cancel, "delete") == 0) {
    st->cancel_delete = 1;
  } else {
    return host->config_error(cfg, "on_cancel", "expected \"update\" or \"delete\"");
  }

  int is_event = strcmp(object, "Event") == 0;
  if ((rc = read_named(st, cfg, "fields", &st->fields)) < 0) return rc;
  if (rc == 0) {
    if (!is_event)
      return host->config_error(cfg, "fields", "required for object %s (defaults exist for Event)",
                                object);
    if (compile_defaults(st, default_event_fields, &st->fields) < 0) return HOOKD_E_NOMEM;
  }
  if ((rc = read_named(st, cfg, "cancel_fields", &st->cancel_fields)) < 0) return rc;
  if (rc == 1 && st->cancel_delete)
    return host->config_error(cfg, "cancel_fields", "not used with on_cancel \"delete\"");
  if (rc == 0 && is_event && !st->cancel_delete &&
      compile_defaults(st, default_event_cancel_fields, &st->cancel_fields) < 0)
    return HOOKD_E_NOMEM;
  for (size_t i = 0; i < st->fields.n; i++)
    if (!is_identifier(st->fields.v[i].name, ""))
      return host->config_error(cfg, "fields", "'%s' is not an API field name",
                                st->fields.v[i].name);
  for (size_t i = 0; i < st->cancel_fields.n; i++)
    if (!is_identifier(st->cancel_fields.v[i].name, ""))
      return host->config_error(cfg, "cancel_fields", "'%s' is not an API field name",
                                st->cancel_fields.v[i].name);

  size_t n = strlen(instance);
  while (n > 0 && instance[n - 1] == '/') n--;
  if (asprintf(&st->record_url, "%.*s/services/data/%s%s/sobjects/%s/%s/", (int)n, instance,
               version[0] == 'v' ? "" : "v", version, object, ext_field) < 0) {
    st->record_url = NULL;
    return HOOKD_E_NOMEM;
  }
  if (asprintf(&st->auth_header, "Authorization: Bearer %s", token) < 0) {
    st->auth_header = NULL;
    return HOOKD_E_NOMEM;
  }
  return 0;
}

static int init_rest(crm *st, const hookd_config *cfg) {
  static const char *const keys[] = {"provider",    "method",     "url",     "headers", "body",
                                     "body_escape", "timeout_ms", "ca_file", NULL};
  static const char *const methods[] = {"POST", "PUT", "PATCH", "DELETE", "GET", NULL};
  const hookd_host_api *host = st->host;
  const char *esc;
  int rc;
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK ||
      host->config_string(cfg, "method", "POST", &st->method) < 0 ||
      host->config_string(cfg, "body_escape", "json", &esc) < 0 ||
      host->config_template(cfg, "url", NULL, &st->url) < 0 ||
      host->config_template(cfg, "body", NULL, &st->body) < 0 ||
      (rc = read_named(st, cfg, "headers", &st->headers)) < 0)
    return -1;
  const char *const *m = methods;
  while (*m && strcmp(*m, st->method) != 0) m++;
  if (!*m) return host->config_error(cfg, "method", "expected POST, PUT, PATCH, DELETE or GET");
  if (!st->url) return host->config_error(cfg, "url", "required");
  if (strcmp(esc, "json") == 0)
    st->body_escape = HOOKD_ESC_JSON;
  else if (strcmp(esc, "url") == 0)
    st->body_escape = HOOKD_ESC_URL;
  else if (strcmp(esc, "none") == 0)
    st->body_escape = HOOKD_ESC_NONE;
  else
    return host->config_error(cfg, "body_escape", "expected \"json\", \"url\" or \"none\"");
  for (size_t i = 0; i < st->headers.n; i++) {
    const char *name = st->headers.v[i].name;
    if (!is_identifier(name, "-!#$%&'*+.^`|~"))
      return host->config_error(cfg, "headers", "'%s' is not a header name", name);
    if (strcasecmp(name, "Content-Type") == 0) st->has_content_type = 1;
  }
  return 0;
}

static void crm_destroy(void *state) {
  crm *st = state;
  if (!st) return;
  const hookd_host_api *host = st->host;
  named_list_free(host, &st->fields);
  named_list_free(host, &st->cancel_fields);
  named_list_free(host, &st->headers);
  host->template_free(st->external_id);
  host->template_free(st->url);
  host->template_free(st->body);
  free(st->record_url);
  free(st->auth_header);
  free(st);
}

static int crm_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                    void **state, char *err, size_t errlen) {
  if (host->struct_size < sizeof *host) {
    snprintf(err, errlen, "host API too old (struct_size %zu)", host->struct_size);
    return -1;
  }
  crm *st = calloc(1, sizeof *st);
  if (!st) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  st->host = host;
  st->self = self;
  const char *prov;
  int64_t timeout;
  int rc = -1;
  if (host->config_string(cfg, "provider", NULL, &prov) < 0 ||
      host->config_string(cfg, "ca_file", NULL, &st->ca_file) < 0 ||
      host->config_int(cfg, "timeout_ms", CRM_DEFAULT_TIMEOUT_MS, &timeout) < 0)
    goto out;
  if (!prov) {
    rc = host->config_error(cfg, "provider", "required: \"salesforce\" or \"rest\"");
  } else if (strcmp(prov, "salesforce") == 0) {
    st->provider = PROVIDER_SALESFORCE;
    rc = init_salesforce(st, cfg);
  } else if (strcmp(prov, "rest") == 0) {
    st->provider = PROVIDER_REST;
    rc = init_rest(st, cfg);
  } else {
    rc = host->config_error(cfg, "provider", "expected \"salesforce\" or \"rest\"");
  }
  if (rc == 0 && (timeout < 1 || timeout > 600000))
    rc = host->config_error(cfg, "timeout_ms", "expected 1 to 600000");
  st->timeout_ms = (uint32_t)timeout;
out:
  if (rc == HOOKD_E_NOMEM) snprintf(err, errlen, "out of memory");
  if (rc != 0) {
    crm_destroy(st);
    return -1;
  }
  *state = st;
  return 0;
}

/* --- delivery -------------------------------------------------------------- */

static hookd_result oom(hookd_outcome *out) {
  snprintf(out->message, sizeof out->message, "out of memory");
  return HOOKD_RETRY;
}

static int is_canceled(const crm *st, const hookd_event *ev) {
  const char *last = strrchr(ev->type, '.');
  if (strcmp(last ? last + 1 : ev->type, "canceled") == 0) return 1;
  char *v = st->host->event_get(ev, "data.isCanceled");
  int yes = v && strcmp(v, "true") == 0;
  st->host->free(v);
  return yes;
}

/* Appends "name": value to a JSON object; an empty value is null (the field
 * is cleared rather than set to an invalid ""). */
static int add_field(const crm *st, const hookd_event *ev, sb *b, const named *f) {
  char *v = st->host->render(f->tpl, ev, HOOKD_ESC_NONE, NULL);
  if (!v) return -1;
  sb_puts(b, b->len > 1 ? "," : "");
  sb_json(b, f->name);
  sb_puts(b, ":");
  if (*v)
    sb_json(b, v);
  else
    sb_puts(b, "null");
  st->host->free(v);
  return 0;
}

/* The record as JSON: fields, with cancel_fields laid over them when the
 * meeting is canceled (so a record first created by the cancel is whole). */
static int record_json(const crm *st, const hookd_event *ev, int canceled, sb *b) {
  const named_list *over = canceled ? &st->cancel_fields : NULL;
  sb_puts(b, "{");
  for (size_t i = 0; i < st->fields.n; i++) {
    const named *f = &st->fields.v[i];
    for (size_t j = 0; over && j < over->n; j++)
      if (strcmp(over->v[j].name, f->name) == 0) f = &over->v[j];
    if (add_field(st, ev, b, f) != 0) return -1;
  }
  for (size_t j = 0; over && j < over->n; j++) {
    size_t i = 0;
    while (i < st->fields.n && strcmp(st->fields.v[i].name, over->v[j].name) != 0) i++;
    if (i == st->fields.n && add_field(st, ev, b, &over->v[j]) != 0) return -1;
  }
  sb_puts(b, "}");
  return b->oom ? -1 : 0;
}

static hookd_result deliver_salesforce(const crm *st, const hookd_event *ev, hookd_outcome *out) {
  const hookd_host_api *host = st->host;
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

  int canceled = is_canceled(st, ev);
  int del = canceled && st->cancel_delete;
  sb b = {0};
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
                            .timeout_ms = st->timeout_ms,
                            .ca_file = st->ca_file};
  hookd_http_response resp = {.struct_size = sizeof resp};
  hookd_result rc = host->http(st->self, &req, &resp, out);
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
  host->log(st->self, ev, rc == HOOKD_OK ? HOOKD_LOG_DEBUG : HOOKD_LOG_INFO, "%s %s: %ld",
            req.method, url, resp.status);
  host->http_response_free(&resp);
  free(b.p);
  free(url);
  return rc;
}

static hookd_result deliver_rest(const crm *st, const hookd_event *ev, hookd_outcome *out) {
  const hookd_host_api *host = st->host;
  hookd_result rc = HOOKD_RETRY;
  size_t nh = st->headers.n;
  char **lines = calloc(nh + 1, sizeof *lines);
  char *url = host->render(st->url, ev, HOOKD_ESC_URL, NULL);
  char *body = NULL;
  size_t body_len = 0;
  if (!lines || !url) goto nomem;
  if (st->body && !(body = host->render(st->body, ev, st->body_escape, &body_len))) goto nomem;
  for (size_t i = 0; i < nh; i++) {
    char *v = host->render(st->headers.v[i].tpl, ev, HOOKD_ESC_HEADER, NULL);
    if (!v) goto nomem;
    int n = asprintf(&lines[i], "%s: %s", st->headers.v[i].name, v);
    host->free(v);
    if (n < 0) {
      lines[i] = NULL;
      goto nomem;
    }
  }
  if (body && !st->has_content_type) lines[nh++] = "Content-Type: application/json";
  if (!http_url(url)) {
    snprintf(out->message, sizeof out->message, "url renders to '%.200s', not an http(s) URL", url);
    rc = HOOKD_FAIL;
    goto done;
  }

  hookd_http_request req = {.struct_size = sizeof req,
                            .method = st->method,
                            .url = url,
                            .headers = (const char *const *)lines,
                            .n_headers = nh,
                            .body = body,
                            .body_len = body_len,
                            .timeout_ms = st->timeout_ms,
                            .ca_file = st->ca_file};
  hookd_http_response resp = {.struct_size = sizeof resp};
  rc = host->http(st->self, &req, &resp, out);
  if (strcmp(st->method, "DELETE") == 0 && resp.status == 404) {
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

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "crm_update",
    .version = "1.0.0",
    .description = "keeps CRM records in step (Salesforce upsert, or any REST API)",
    .init = crm_init,
    .deliver = crm_deliver,
    .destroy = crm_destroy,
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return &descriptor;
}
