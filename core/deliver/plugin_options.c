/* Declared plugin options (ABI 1.1): table checks, filling a state struct from config, help text.
 */
#include "plugin_options.h"

#include <inttypes.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "log.h"
#include "template.h"

/* Largest integer a JSON number holds exactly. */
#define EXACT_INT 9007199254740992.0

typedef struct fill_ctx {
  const plugin_options_src *src;
  plugin_owned *owned;
  char *err;
  size_t errlen;
} fill_ctx;

/* --- ownership ------------------------------------------------------------ */

int plugin_options_keep(plugin_owned *o, void *p) {
  if (p == NULL) return -1;
  if (o->n_mem == o->cap_mem) {
    size_t cap = o->cap_mem ? o->cap_mem * 2 : 8;
    void **m = realloc(o->mem, cap * sizeof *m);
    if (m == NULL) {
      free(p);
      return -1;
    }
    o->mem = m;
    o->cap_mem = cap;
  }
  o->mem[o->n_mem++] = p;
  return 0;
}

static int own_tpl(plugin_owned *o, hookd_template *t) {
  if (o->n_tpls == o->cap_tpls) {
    size_t cap = o->cap_tpls ? o->cap_tpls * 2 : 8;
    hookd_template **m = realloc(o->tpls, cap * sizeof *m);
    if (m == NULL) {
      template_free(t);
      return -1;
    }
    o->tpls = m;
    o->cap_tpls = cap;
  }
  o->tpls[o->n_tpls++] = t;
  return 0;
}

void plugin_options_release(plugin_owned *o) {
  for (size_t i = 0; i < o->n_mem; i++) free(o->mem[i]);
  for (size_t i = 0; i < o->n_tpls; i++) template_free(o->tpls[i]);
  free(o->mem);
  free(o->tpls);
  cJSON_Delete(o->defaults);
  memset(o, 0, sizeof *o);
}

/* --- messages ------------------------------------------------------------- */

static int fail(fill_ctx *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(fill_ctx *c, const char *key, const char *fmt, ...) {
  char msg[384], kp[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (key)
    snprintf(kp, sizeof kp, "%s.%s", c->src->keypath, key);
  else
    snprintf(kp, sizeof kp, "%s", c->src->keypath);
  if (c->src->doc)
    jsonc_error(c->src->doc, kp, c->err, c->errlen, "%s", msg);
  else
    snprintf(c->err, c->errlen, "%s: %s", kp, msg);
  return -1;
}

static int oom(fill_ctx *c) {
  snprintf(c->err, c->errlen, "%s: out of memory", c->src->keypath);
  return -1;
}

/* --- the table ------------------------------------------------------------ */

/* Size and alignment of the field each type writes. */
static int field_shape(hookd_option_type t, size_t *size, size_t *align) {
  switch (t) {
    case HOOKD_OPT_STRING:
    case HOOKD_OPT_PATH:
    case HOOKD_OPT_URL:
    case HOOKD_OPT_SECRET:
      *size = sizeof(const char *), *align = alignof(const char *);
      return 0;
    case HOOKD_OPT_TEMPLATE:
      *size = sizeof(hookd_template *), *align = alignof(hookd_template *);
      return 0;
    case HOOKD_OPT_INT:
    case HOOKD_OPT_DURATION:
      *size = sizeof(int64_t), *align = alignof(int64_t);
      return 0;
    case HOOKD_OPT_BOOL:
    case HOOKD_OPT_ENUM:
      *size = sizeof(int), *align = alignof(int);
      return 0;
    case HOOKD_OPT_STRING_LIST:
      *size = sizeof(hookd_string_list), *align = alignof(hookd_string_list);
      return 0;
    case HOOKD_OPT_TEMPLATE_LIST:
      *size = sizeof(hookd_template_list), *align = alignof(hookd_template_list);
      return 0;
    case HOOKD_OPT_TEMPLATE_MAP:
      *size = sizeof(hookd_template_map), *align = alignof(hookd_template_map);
      return 0;
  }
  return -1;
}

const char *plugin_options_type_name(hookd_option_type type) {
  static const char *const names[] = {
      "?",    "string",   "int", "bool",   "enum",          "string list", "template",
      "path", "duration", "url", "secret", "template list", "template map"};
  return (unsigned)type < sizeof names / sizeof names[0] ? names[type] : "?";
}

int plugin_options_check_table(const hookd_option *table, size_t state_size, char *err,
                               size_t errlen) {
  for (size_t i = 0; table[i].name; i++) {
    const hookd_option *o = &table[i];
    size_t size, align;
    if (field_shape(o->type, &size, &align) != 0) {
      snprintf(err, errlen, "option '%s' has unknown type %d", o->name, (int)o->type);
      return -1;
    }
    if (o->offset > state_size || size > state_size - o->offset || o->offset % align != 0) {
      snprintf(err, errlen, "option '%s': offset %zu does not fit a %s in state_size %zu", o->name,
               o->offset, plugin_options_type_name(o->type), state_size);
      return -1;
    }
    if (o->type == HOOKD_OPT_ENUM && (o->choices == NULL || o->choices[0] == NULL)) {
      snprintf(err, errlen, "option '%s' is an enum without choices", o->name);
      return -1;
    }
    for (size_t j = 0; j < i; j++) {
      if (strcmp(table[j].name, o->name) == 0) {
        snprintf(err, errlen, "option '%s' is declared twice", o->name);
        return -1;
      }
    }
  }
  return 0;
}

/* --- one value -------------------------------------------------------------- */

static int fill_int(fill_ctx *c, const hookd_option *o, const cJSON *v, int64_t *out) {
  int64_t min = o->min, max = o->max;
  if (min == 0 && max == 0) max = INT64_MAX;
  double d = 0;
  if (o->type == HOOKD_OPT_DURATION && cJSON_IsString(v)) {
    int64_t ms = config_parse_duration(v->valuestring);
    if (ms < 0)
      return fail(c, o->name, "expected a duration such as \"500ms\", \"30s\", \"5m\", \"1h\"");
    d = (double)ms;
  } else if (cJSON_IsNumber(v) && v->valuedouble >= -EXACT_INT && v->valuedouble <= EXACT_INT &&
             v->valuedouble == (double)(int64_t)v->valuedouble) {
    d = v->valuedouble;
  } else {
    return fail(c, o->name,
                o->type == HOOKD_OPT_DURATION
                    ? "expected milliseconds or a duration such as \"30s\""
                    : "expected an integer");
  }
  if (d < (double)min || d > (double)max) {
    if (max == INT64_MAX) return fail(c, o->name, "must be at least %" PRId64, min);
    return fail(c, o->name, "expected %s from %" PRId64 " to %" PRId64,
                o->type == HOOKD_OPT_DURATION ? "milliseconds" : "an integer", min, max);
  }
  *out = (int64_t)d;
  return 0;
}

static int fill_enum(fill_ctx *c, const hookd_option *o, const char *s, int *out) {
  for (int i = 0; o->choices[i]; i++) {
    if (strcmp(s, o->choices[i]) == 0) {
      *out = i;
      return 0;
    }
  }
  char list[256] = "";
  size_t used = 0;
  for (size_t i = 0; o->choices[i] && used < sizeof list; i++)
    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", o->choices[i]);
  const char *near = jsonc_suggest(s, o->choices);
  if (near) return fail(c, o->name, "expected one of %s (did you mean '%s'?)", list, near);
  return fail(c, o->name, "expected one of %s", list);
}

/* "scheme://host...": the scheme one of `schemes` (case-insensitive), a
 * non-empty host, no white space or control characters. */
static int url_ok(const char *s, const char *const *schemes) {
  static const char *const web[] = {"http", "https", NULL};
  const char *colon = strstr(s, "://");
  if (colon == NULL) return 0;
  size_t n = (size_t)(colon - s);
  int known = 0;
  for (const char *const *k = schemes ? schemes : web; *k && !known; k++)
    known = strlen(*k) == n && strncasecmp(s, *k, n) == 0;
  const char *host = colon + 3;
  if (!known || *host == '\0' || strchr("/:?#", *host)) return 0;
  for (const char *p = host; *p; p++)
    if ((unsigned char)*p <= 0x20 || *p == 0x7f) return 0;
  return 1;
}

static int fill_url(fill_ctx *c, const hookd_option *o, const char *s) {
  static const char *const web[] = {"http", "https", NULL};
  if (url_ok(s, o->choices)) return 0;
  const char *const *k = o->choices ? o->choices : web;
  char list[128] = "";
  size_t used = 0;
  for (size_t i = 0; k[i] && used < sizeof list; i++)
    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s://", i ? " or " : "", k[i]);
  return fail(c, o->name, "expected a %s URL with a host", list);
}

static int fill_path(fill_ctx *c, const char *s, const char **out) {
  if (s[0] == '/' || c->src->config_dir == NULL) {
    *out = s;
    return 0;
  }
  size_t n = strlen(c->src->config_dir) + strlen(s) + 2;
  char *abs = malloc(n);
  if (plugin_options_keep(c->owned, abs) != 0) return oom(c);
  snprintf(abs, n, "%s/%s", c->src->config_dir, s);
  *out = abs;
  return 0;
}

static int compile(fill_ctx *c, const hookd_option *o, const char *key, const char *text,
                   hookd_template **out) {
  char terr[256];
  hookd_template *t = template_compile(text, terr, sizeof terr);
  if (t == NULL) return fail(c, key, "bad template: %s", terr);
  if (own_tpl(c->owned, t) != 0) return oom(c);
  (void)o;
  *out = t;
  return 0;
}

/* Lists: every element a string (templates compiled). */
static int fill_list(fill_ctx *c, const hookd_option *o, const cJSON *v, void *field) {
  if (!cJSON_IsArray(v))
    return fail(c, o->name,
                o->type == HOOKD_OPT_STRING_LIST ? "expected a list of strings"
                                                 : "expected a list of templates");
  size_t n = (size_t)cJSON_GetArraySize(v), i = 0;
  if (n == 0 && (o->flags & HOOKD_OPT_NONEMPTY)) return fail(c, o->name, "must not be empty");
  void **items = calloc(n + 1, sizeof *items);
  if (plugin_options_keep(c->owned, items) != 0) return oom(c);
  for (const cJSON *e = v->child; e; e = e->next, i++) {
    char k[160];
    snprintf(k, sizeof k, "%s[%zu]", o->name, i);
    if (!cJSON_IsString(e)) return fail(c, k, "expected a string");
    if (o->type == HOOKD_OPT_STRING_LIST) {
      items[i] = e->valuestring;
    } else if (compile(c, o, k, e->valuestring, (hookd_template **)&items[i]) != 0) {
      return -1;
    }
  }
  if (o->type == HOOKD_OPT_STRING_LIST) {
    hookd_string_list l = {(const char *const *)items, n};
    memcpy(field, &l, sizeof l);
  } else {
    hookd_template_list l = {(hookd_template *const *)items, n};
    memcpy(field, &l, sizeof l);
  }
  return 0;
}

static int fill_map(fill_ctx *c, const hookd_option *o, const cJSON *v, void *field) {
  if (!cJSON_IsObject(v)) return fail(c, o->name, "expected an object of name: template");
  size_t n = (size_t)cJSON_GetArraySize(v), i = 0;
  const char **keys = calloc(n + 1, sizeof *keys);
  if (plugin_options_keep(c->owned, keys) != 0) return oom(c);
  hookd_template **vals = calloc(n + 1, sizeof *vals);
  if (plugin_options_keep(c->owned, vals) != 0) return oom(c);
  for (const cJSON *e = v->child; e; e = e->next, i++) {
    char k[192];
    snprintf(k, sizeof k, "%s.%s", o->name, e->string);
    if (!cJSON_IsString(e)) return fail(c, k, "expected a string (a template)");
    keys[i] = e->string;
    if (compile(c, o, k, e->valuestring, &vals[i]) != 0) return -1;
  }
  hookd_template_map m = {keys, vals, n};
  memcpy(field, &m, sizeof m);
  return 0;
}

/* Finds the source text of a value, to tell "${NAME}" from inline text. */
static const char *value_text(const jsonc_doc *doc, const char *keypath) {
  int line, col;
  if (doc == NULL || jsonc_locate(doc, keypath, &line, &col) != 0) return NULL;
  const char *p = doc->text;
  for (int l = 1; l < line && p; l++) {
    p = strchr(p, '\n');
    if (p) p++;
  }
  return p ? p + col - 1 : NULL;
}

static void warn_inline_secret(fill_ctx *c, const hookd_option *o) {
  char kp[256];
  snprintf(kp, sizeof kp, "%s.%s", c->src->keypath, o->name);
  const char *t = value_text(c->src->doc, kp);
  if (t == NULL || *t != '"') return;
  const char *end = strchr(t + 1, '"');
  const char *ref = strstr(t + 1, "${");
  if (ref != NULL && (end == NULL || ref < end)) return;
  log_ctx ctx = {.instance = c->src->instance};
  log_write(HLOG_WARN, &ctx, "%s: the secret is written inline; put it in ${NAME} or ${file:PATH}",
            kp);
}

/* A string-valued type: the checks before the pointer is stored. */
static int fill_string(fill_ctx *c, const hookd_option *o, const cJSON *v, int is_default,
                       void *field) {
  if (!cJSON_IsString(v)) return fail(c, o->name, "expected a string");
  const char *s = v->valuestring;
  if ((o->flags & HOOKD_OPT_NONEMPTY) && *s == '\0')
    return fail(c, o->name, "expected a non-empty string");
  switch (o->type) {
    case HOOKD_OPT_ENUM:
      return fill_enum(c, o, s, (int *)field);
    case HOOKD_OPT_PATH:
      return fill_path(c, s, (const char **)field);
    case HOOKD_OPT_TEMPLATE:
      return compile(c, o, o->name, s, (hookd_template **)field);
    case HOOKD_OPT_URL:
      if (fill_url(c, o, s) != 0) return -1;
      break;
    case HOOKD_OPT_SECRET:
      if (!is_default) warn_inline_secret(c, o);
      break;
    default:
      break;
  }
  *(const char **)field = s;
  return 0;
}

static int fill_value(fill_ctx *c, const hookd_option *o, const cJSON *v, int is_default,
                      void *field) {
  switch (o->type) {
    case HOOKD_OPT_INT:
    case HOOKD_OPT_DURATION:
      return fill_int(c, o, v, (int64_t *)field);
    case HOOKD_OPT_BOOL:
      if (!cJSON_IsBool(v)) return fail(c, o->name, "expected true or false");
      *(int *)field = cJSON_IsTrue(v);
      return 0;
    case HOOKD_OPT_STRING_LIST:
    case HOOKD_OPT_TEMPLATE_LIST:
      return fill_list(c, o, v, field);
    case HOOKD_OPT_TEMPLATE_MAP:
      return fill_map(c, o, v, field);
    default:
      return fill_string(c, o, v, is_default, field);
  }
}

/* The default text as the JSON value the config would hold. */
static cJSON *parse_default(fill_ctx *c, const hookd_option *o) {
  cJSON *v = NULL;
  switch (o->type) {
    case HOOKD_OPT_INT:
      v = cJSON_CreateNumber(strtod(o->def, NULL));
      break;
    case HOOKD_OPT_BOOL:
      v = cJSON_CreateBool(strcmp(o->def, "true") == 0);
      break;
    case HOOKD_OPT_STRING_LIST:
    case HOOKD_OPT_TEMPLATE_LIST:
      v = cJSON_CreateStringArray(&o->def, 1);
      break;
    default:
      v = cJSON_CreateString(o->def);
  }
  if (v == NULL) return NULL;
  if (c->owned->defaults == NULL && (c->owned->defaults = cJSON_CreateArray()) == NULL) {
    cJSON_Delete(v);
    return NULL;
  }
  cJSON_AddItemToArray(c->owned->defaults, v);
  return v;
}

/* --- the whole object ------------------------------------------------------- */

/* The per-plugin "timeout_ms" of ABI 1.0 plugins: still honoured (as an
 * upper bound of hookd_event.timeout_ms), with a deprecation warning. */
static int legacy_timeout(fill_ctx *c, const cJSON *v) {
  static const hookd_option row = {"timeout_ms", HOOKD_OPT_INT,  0,   0, NULL, 1, 3600000,
                                   NULL,         HOOKD_ESC_NONE, NULL};
  int64_t ms;
  if (fill_int(c, &row, v, &ms) != 0) return -1;
  c->owned->timeout_ms = (uint32_t)ms;
  log_ctx ctx = {.instance = c->src->instance};
  log_write(HLOG_WARN, &ctx,
            "%s.timeout_ms is deprecated: set the instance's \"delivery\": {\"timeout_ms\": %u} "
            "instead (the plugin gets the shorter of the two)",
            c->src->keypath, (unsigned)ms);
  return 0;
}

static int check_keys(fill_ctx *c, const hookd_option *table) {
  size_t n = 0;
  while (table[n].name) n++;
  const char **names = calloc(n + 1, sizeof *names);
  if (names == NULL) return oom(c);
  for (size_t i = 0; i < n; i++) names[i] = table[i].name;
  int rc = 0;
  for (const cJSON *e = c->src->config ? c->src->config->child : NULL; e && rc == 0; e = e->next) {
    size_t i = 0;
    while (i < n && strcmp(names[i], e->string) != 0) i++;
    if (i < n) continue;
    if (strcmp(e->string, "timeout_ms") == 0) {
      rc = legacy_timeout(c, e);
      continue;
    }
    const char *near = jsonc_suggest(e->string, names);
    if (near) {
      rc = fail(c, e->string, "unknown key (did you mean '%s'?)", near);
    } else {
      char list[512] = "";
      size_t used = 0;
      for (size_t k = 0; k < n && used < sizeof list; k++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k ? ", " : "", names[k]);
      rc = fail(c, e->string, n ? "unknown key (known keys: %s)" : "unknown key%s",
                n ? list : " (this plugin takes no options)");
    }
  }
  free(names);
  return rc;
}

int plugin_options_fill(const hookd_option *table, const plugin_options_src *src, void *state,
                        plugin_owned *owned, char *err, size_t errlen) {
  fill_ctx c = {src, owned, err, errlen};
  if (check_keys(&c, table) != 0) return -1;
  for (const hookd_option *o = table; o->name; o++) {
    const cJSON *v = src->config ? cJSON_GetObjectItemCaseSensitive(src->config, o->name) : NULL;
    int is_default = 0;
    if (v == NULL || cJSON_IsNull(v)) {
      if (o->flags & HOOKD_OPT_REQUIRED)
        return fail(&c, NULL, "missing required key '%s'", o->name);
      if (o->def == NULL) continue;
      if ((v = parse_default(&c, o)) == NULL) return oom(&c);
      is_default = 1;
    }
    if (fill_value(&c, o, v, is_default, (char *)state + o->offset) != 0) {
      if (is_default) {
        char why[512];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errlen, "the plugin's default for '%s' is wrong: %s", o->name, why);
      }
      return -1;
    }
  }
  return 0;
}

/* --- help ------------------------------------------------------------------ */

static void print_kind(FILE *out, const hookd_option *o) {
  static const char *const esc[] = {"", ", rendered as is", ", rendered JSON-escaped",
                                    ", rendered header-safe", ", rendered URL-encoded"};
  fprintf(out, "%s", plugin_options_type_name(o->type));
  if (o->type == HOOKD_OPT_ENUM || o->type == HOOKD_OPT_URL) {
    static const char *const web[] = {"http", "https", NULL};
    const char *const *k = o->choices ? o->choices : web;
    fputs(o->type == HOOKD_OPT_ENUM ? ": " : " (", out);
    for (size_t i = 0; k[i]; i++)
      fprintf(out, "%s%s", i ? (o->type == HOOKD_OPT_ENUM ? "|" : ", ") : "", k[i]);
    if (o->type == HOOKD_OPT_URL) fputs(")", out);
  }
  if ((o->type == HOOKD_OPT_INT || o->type == HOOKD_OPT_DURATION) && (o->min || o->max))
    fprintf(out, " %" PRId64 "..%" PRId64 "%s", o->min, o->max,
            o->type == HOOKD_OPT_DURATION ? " ms" : "");
  if ((o->type == HOOKD_OPT_TEMPLATE || o->type == HOOKD_OPT_TEMPLATE_LIST ||
       o->type == HOOKD_OPT_TEMPLATE_MAP) &&
      (unsigned)o->escape < 4)
    fputs(esc[o->escape + 1], out);
}

void plugin_options_print(FILE *out, const hookd_option *table) {
  if (table == NULL || table[0].name == NULL) {
    fprintf(out, "  (no declared options)\n");
    return;
  }
  for (const hookd_option *o = table; o->name; o++) {
    fprintf(out, "  %s  (", o->name);
    print_kind(out, o);
    if (o->flags & HOOKD_OPT_REQUIRED)
      fputs("; required", out);
    else if (o->def && o->type == HOOKD_OPT_SECRET)
      fputs("; has a default", out);
    else if (o->def && strchr(o->def, '\n'))
      fprintf(out, "; default %.*s...", (int)strcspn(o->def, "\n"), o->def);
    else if (o->def)
      fprintf(out, "; default %s", o->def);
    fprintf(out, ")\n      %s\n", o->description ? o->description : "");
  }
}
