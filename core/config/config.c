/* The config file: load the .jsonc, substitute ${...}, check every key against DESIGN §4, fill
 * typed settings and defaults. */
#include "config.h"
#include "hookd/helpers.h"
#include "pattern.h"

#include "metrics.h"
#include "scrub.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include "pq_lazy.h"
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The largest integer a JSON number (a double in cJSON) holds exactly. */
#define MAX_EXACT_INT 9007199254740991ull
/* Delivery threads per instance: more is a typo, not a plan. */
#define MAX_CONCURRENCY 1024
#define MAX_THREADS 16384

/* State of one load: where errors go and the key path of the value being
 * checked, which every message names. */
typedef struct ctx {
  config *cfg;
  const jsonc_doc *doc;
  char *err;
  size_t errlen;
  hookd_buf kp; /* the key path of what is being checked */
  /* Set when an allocation failed; checked once at the end, so the many
   * small helpers need no error path of their own for it. */
  int oom;
} ctx;

/* ---- key path ---- */

static void kp_append(ctx *c, const char *s, size_t n) {
  hookd_buf_add(&c->kp, s, n);
  if (c->kp.oom) c->oom = 1;
}

/* Descends into member `key`; returns the mark that kp_pop goes back to. */
static size_t kp_key(ctx *c, const char *key) {
  size_t mark = c->kp.len;
  if (c->kp.len) kp_append(c, ".", 1);
  kp_append(c, key, strlen(key));
  return mark;
}

static size_t kp_index(ctx *c, size_t i) {
  size_t mark = c->kp.len;
  char num[32];
  snprintf(num, sizeof num, "[%zu]", i);
  kp_append(c, num, strlen(num));
  return mark;
}

static void kp_pop(ctx *c, size_t mark) {
  if (mark <= c->kp.len) {
    c->kp.len = mark;
    if (c->kp.p) c->kp.p[mark] = '\0';
  }
}

static const char *kp(const ctx *c) {
  return c->kp.p ? c->kp.p : "";
}

/* ---- errors ---- */

static int fail(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports an error at the current key path. Returns -1. */
static int fail(ctx *c, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return jsonc_error(c->doc, kp(c), c->err, c->errlen, "%s", msg);
}

static char *dup_str(ctx *c, const char *s) {
  char *d = strdup(s);
  if (!d) c->oom = 1;
  return d;
}

static void *alloc_array(ctx *c, size_t n, size_t size) {
  if (n == 0) return NULL;
  void *p = calloc(n, size);
  if (!p) c->oom = 1;
  return p;
}

/* ---- unknown keys ---- */

static int in_list(const char *s, const char *const *list) {
  for (size_t i = 0; list[i]; i++)
    if (strcmp(s, list[i]) == 0) return 1;
  return 0;
}

/* Reports `key` (already on the key path) as unknown, with the closest known
 * key when a typo is likely (a cut-off name, or two edits away), or else the
 * list of known keys. */
static int unknown_key(ctx *c, const char *key, const char *const *known) {
  const char *near = jsonc_suggest(key, known);
  if (near) return fail(c, "unknown key (did you mean '%s'?)", near);
  char list[512] = "";
  size_t used = 0;
  for (size_t i = 0; known[i] && used < sizeof list; i++)
    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", known[i]);
  return fail(c, "unknown key (known keys: %s)", list);
}

static int check_keys(ctx *c, const cJSON *obj, const char *const *known) {
  for (const cJSON *it = obj->child; it; it = it->next) {
    if (in_list(it->string, known)) continue;
    kp_key(c, it->string);
    return unknown_key(c, it->string, known);
  }
  return 0;
}

/* ---- typed members ----
 * Each reads member `key` of the object at the current key path. They return
 * 1 when the key is present and valid, 0 when it is absent, -1 on error. */

static const cJSON *member(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static int missing(ctx *c, const char *key) {
  return fail(c, "missing required key '%s'", key);
}

static int get_str(ctx *c, const cJSON *obj, const char *key, int allow_empty, const char **out) {
  const cJSON *it = member(obj, key);
  if (!it) return 0;
  if (!cJSON_IsString(it) || (!allow_empty && !*it->valuestring)) {
    kp_key(c, key);
    return fail(c, cJSON_IsString(it) ? "expected a non-empty string" : "expected a string");
  }
  *out = it->valuestring;
  return 1;
}

/* A required member that is a non-empty string. Returns 0, or -1 (reported). */
static int get_required_str(ctx *c, const cJSON *obj, const char *key, const char **out) {
  int rc = get_str(c, obj, key, 0, out);
  if (rc < 0) return -1;
  return rc == 0 ? missing(c, key) : 0;
}

static int bad_uint(ctx *c, uint64_t min, uint64_t max, int too_big) {
  if (too_big && min <= 1) return fail(c, "must be at most %llu", (unsigned long long)max);
  if (min <= 1)
    return fail(c, min ? "expected a positive integer" : "expected a non-negative integer");
  return fail(c, "expected an integer from %llu to %llu", (unsigned long long)min,
              (unsigned long long)max);
}

/* Checks the number at the current key path. */
static int check_uint(ctx *c, const cJSON *it, uint64_t min, uint64_t max, uint64_t *out) {
  if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0)) return bad_uint(c, min, max, 0);
  double d = it->valuedouble;
  if (d > (double)max) return bad_uint(c, min, max, 1);
  uint64_t u = (uint64_t)d;
  if ((double)u != d || u < min) return bad_uint(c, min, max, 0);
  *out = u;
  return 1;
}

static int get_uint(ctx *c, const cJSON *obj, const char *key, uint64_t min, uint64_t max,
                    uint64_t *out) {
  const cJSON *it = member(obj, key);
  if (!it) return 0;
  size_t mark = kp_key(c, key);
  if (check_uint(c, it, min, max, out) < 0) return -1;
  kp_pop(c, mark);
  return 1;
}

static int get_u32(ctx *c, const cJSON *obj, const char *key, uint64_t min, uint32_t *out) {
  uint64_t v = 0;
  int rc = get_uint(c, obj, key, min, UINT32_MAX, &v);
  if (rc == 1) *out = (uint32_t)v;
  return rc;
}

/* An object-valued member; NULL in *out when absent. */
static int get_object(ctx *c, const cJSON *obj, const char *key, cJSON **out) {
  cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
  *out = NULL;
  if (!it) return 0;
  if (!cJSON_IsObject(it)) {
    kp_key(c, key);
    return fail(c, "expected an object");
  }
  *out = it;
  return 1;
}

/* A string member from a fixed set of names (NULL-terminated `choices`);
 * the index of the one given goes to *out. */
static int get_choice(ctx *c, const cJSON *obj, const char *key, const char *const *choices,
                      int *out) {
  const char *s = NULL;
  int rc = get_str(c, obj, key, 1, &s);
  if (rc <= 0) return rc;
  for (int i = 0; choices[i]; i++) {
    if (strcmp(s, choices[i]) == 0) {
      *out = i;
      return 1;
    }
  }
  kp_key(c, key);
  char list[256] = "";
  size_t used = 0;
  for (size_t i = 0; choices[i] && used < sizeof list; i++)
    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", choices[i]);
  return fail(c, "expected one of %s", list);
}

/* ---- value checks ---- */

/* Source and plugin instance names appear in logs, metrics and URLs of the
 * admin API, so they keep to a safe set. */
static int valid_name(const char *s, int allow_dot) {
  if (!*s) return 0;
  for (; *s; s++) {
    char ch = *s;
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '_' || ch == '-' || (allow_dot && ch == '.');
    if (!ok) return 0;
  }
  return 1;
}

/* "data.meetingInfo.calendarPath": non-empty segments split by dots. */
static int valid_dotted_path(const char *s) {
  if (!*s || *s == '.') return 0;
  for (; *s; s++)
    if (*s == '.' && (s[1] == '.' || s[1] == '\0')) return 0;
  return 1;
}

/* An HTTP header name is a token (RFC 9110 §5.1). */
static int valid_header_name(const char *s) {
  if (!*s) return 0;
  for (; *s; s++) {
    char ch = *s;
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          strchr("!#$%&'*+-.^_`|~", ch)))
      return 0;
  }
  return 1;
}

static char *resolve_path(ctx *c, const char *p) {
  if (p[0] == '/') return dup_str(c, p);
  char *out = NULL;
  if (asprintf(&out, "%s/%s", c->cfg->dir, p) < 0) {
    c->oom = 1;
    return NULL;
  }
  return out;
}

/* The names of the entries parsed so far, for get_entry_name. */
static const char *source_name_at(const config *cfg, size_t i) {
  return cfg->sources[i].name;
}

static const char *plugin_name_at(const config *cfg, size_t i) {
  return cfg->plugins[i].name;
}

/* "name" of entry idx of `list` (a source or a plugin instance, `what`):
 * required, letters, digits, '_', '.' and '-', and unlike the names of the
 * entries before it. Returns 0, or -1 (reported). */
static int get_entry_name(ctx *c, const cJSON *obj, size_t idx,
                          const char *(*name_at)(const config *, size_t), const char *what,
                          const char *list, const char **out) {
  const char *name;
  if (get_required_str(c, obj, "name", &name) != 0) return -1;
  if (!valid_name(name, 1)) {
    kp_key(c, "name");
    return fail(c, "invalid name '%s' (use letters, digits, '_', '.' and '-')", name);
  }
  for (size_t i = 0; i < idx; i++) {
    const char *other = name_at(c->cfg, i);
    if (other && strcmp(other, name) == 0) {
      kp_key(c, "name");
      return fail(c, "duplicate %s name '%s' (also %s[%zu])", what, name, list, i);
    }
  }
  *out = name;
  return 0;
}

/* ---- sections ---- */

static int check_addr(ctx *c, const char *s) {
  struct sockaddr_storage ss;
  if (config_parse_addr(s, &ss) != 0)
    return fail(c, "invalid address '%s' (expected IPV4:PORT, [IPV6]:PORT or :PORT)", s);
  return 0;
}

/* Warns when a file holding a secret or a private key can be read by users
 * other than its owner (group or others): hookd still starts, since the
 * administrator may mean it, but says so once per load. */
static void warn_if_readable(const char *path, const char *what) {
  struct stat st;
  if (stat(path, &st) != 0 || !(st.st_mode & (S_IRGRP | S_IROTH))) return;
  log_write(HLOG_WARN, NULL,
            "%s '%s' is readable by %s (mode %03o): make it readable by hookd's user only "
            "(chmod 600)",
            what, path, (st.st_mode & S_IROTH) ? "every user" : "its group",
            (unsigned)(st.st_mode & 0777));
}

/* "tls": { "cert", "key", "client_ca"? } of a listen entry at the current
 * key path: the files are read and the context built now, so a reload with a
 * broken certificate fails as a whole and the one in use stays. */
static int parse_tls(ctx *c, const cJSON *obj, config_tls *t) {
  static const char *const keys[] = {"cert", "key", "client_ca", NULL};
  static const char *const names[] = {"cert", "key", "client_ca"};
  char **dst[] = {&t->cert, &t->key, &t->client_ca};
  size_t mark = kp_key(c, "tls");
  if (!cJSON_IsObject(obj)) return fail(c, "expected an object with \"cert\" and \"key\"");
  if (check_keys(c, obj, keys) != 0) return -1;
  for (size_t i = 0; i < 3; i++) {
    const char *v = NULL;
    int rc = get_str(c, obj, names[i], 0, &v);
    if (rc < 0) return -1;
    if (rc == 0 && i < 2) return missing(c, names[i]);
    if (rc == 1) *dst[i] = resolve_path(c, v);
  }
  if (c->oom) return 0;
  warn_if_readable(t->key, "TLS private key");
  const char *field = "cert";
  char why[512];
  t->ctx = tls_ctx_new(t->cert, t->key, t->client_ca, &field, why, sizeof why);
  if (t->ctx == NULL) {
    metrics_tls_reload(0); /* on a reload the certificate in use stays */
    kp_key(c, field);
    return fail(c, "%s", why);
  }
  if (tls_ctx_not_after(t->ctx) < (int64_t)time(NULL)) {
    log_write(HLOG_WARN, NULL, "%s: the certificate in '%s' (%s) has expired", kp(c), t->cert,
              tls_ctx_subject(t->ctx));
  }
  kp_pop(c, mark);
  return 0;
}

/* One listen entry at the current key path: "HOST:PORT", or an object
 * {"address": "HOST:PORT", "tls": {...}}. */
static int parse_listen_entry(ctx *c, const cJSON *a, size_t i) {
  static const char *const keys[] = {"address", "tls", NULL};
  config *cfg = c->cfg;
  const char *addr = NULL;
  if (cJSON_IsString(a)) {
    addr = a->valuestring;
    if (check_addr(c, addr) != 0) return -1;
  } else if (cJSON_IsObject(a)) {
    if (check_keys(c, a, keys) != 0) return -1;
    if (get_required_str(c, a, "address", &addr) != 0) return -1;
    size_t mark = kp_key(c, "address");
    if (check_addr(c, addr) != 0) return -1;
    kp_pop(c, mark);
    const cJSON *tls = member(a, "tls");
    if (tls && parse_tls(c, tls, &cfg->listen_tls[i]) != 0) return -1;
  } else {
    return fail(c, "expected an address string or an object with \"address\" and \"tls\"");
  }
  cfg->listen[i] = dup_str(c, addr);
  return 0;
}

/* Loopback: 127.0.0.0/8, ::1 (and IPv4-mapped loopback). */
static int addr_is_loopback(const char *s) {
  struct sockaddr_storage ss;
  access_addr a;
  if (config_parse_addr(s, &ss) != 0 || access_addr_from_sockaddr((struct sockaddr *)&ss, &a) != 0)
    return 0;
  static const uint8_t v6_loopback[16] = {[15] = 1};
  if (a.family == 4) return a.bytes[0] == 127;
  return memcmp(a.bytes, v6_loopback, 16) == 0;
}

static int parse_listen(ctx *c, const cJSON *root) {
  config *cfg = c->cfg;
  const cJSON *it = member(root, "listen");
  size_t mark = kp_key(c, "listen");
  size_t n = !it || !cJSON_IsArray(it) ? 1 : (size_t)cJSON_GetArraySize(it);
  if (it && !cJSON_IsString(it) && !cJSON_IsArray(it) && !cJSON_IsObject(it))
    return fail(c, "expected an address, an object with \"address\", or an array of them");
  if (n == 0) return fail(c, "expected at least one address");
  cfg->listen = alloc_array(c, n, sizeof *cfg->listen);
  cfg->listen_tls = alloc_array(c, n, sizeof *cfg->listen_tls);
  if (!cfg->listen || !cfg->listen_tls) return 0;
  cfg->n_listen = n;
  if (!it) {
    cfg->listen[0] = dup_str(c, "127.0.0.1:8080");
  } else if (!cJSON_IsArray(it)) {
    if (parse_listen_entry(c, it, 0) != 0) return -1;
  } else {
    size_t i = 0;
    for (const cJSON *a = it->child; a; a = a->next, i++) {
      size_t m = kp_index(c, i);
      if (parse_listen_entry(c, a, i) != 0) return -1;
      kp_pop(c, m);
    }
  }
  kp_pop(c, mark);

  /* A bearer token for the admin listener; a secret, so ${NAME} or ${file:PATH}. */
  const char *token = NULL;
  int rc = get_str(c, root, "admin_token", 0, &token);
  if (rc < 0) return -1;
  if (rc == 1) cfg->admin_token = dup_str(c, token);
  const char *admin = NULL;
  rc = get_str(c, root, "admin_listen", 0, &admin);
  if (rc < 0) return -1;
  if (rc == 1) {
    mark = kp_key(c, "admin_listen");
    if (check_addr(c, admin) != 0) return -1;
    /* Anyone who reaches the admin listener can reload and replay: off the
     * loopback interface it must ask for a token. */
    if (!addr_is_loopback(admin) && token == NULL)
      return fail(c,
                  "'%s' is reachable from other hosts: set \"admin_token\" (e.g. "
                  "\"${file:admin-token}\") or listen on 127.0.0.1 or [::1]",
                  admin);
    kp_pop(c, mark);
    cfg->admin_listen = dup_str(c, admin);
  }
  return 0;
}

static int parse_dirs(ctx *c, const cJSON *root) {
  config *cfg = c->cfg;
  const char *data_dir = "var";
  if (get_str(c, root, "data_dir", 0, &data_dir) < 0) return -1;
  cfg->data_dir = resolve_path(c, data_dir);

  const cJSON *it = member(root, "plugin_dirs");
  if (!it) return 0;
  size_t mark = kp_key(c, "plugin_dirs");
  if (!cJSON_IsArray(it)) return fail(c, "expected an array of strings");
  size_t n = (size_t)cJSON_GetArraySize(it);
  cfg->plugin_dirs = alloc_array(c, n, sizeof *cfg->plugin_dirs);
  if (!cfg->plugin_dirs) return 0;
  cfg->n_plugin_dirs = n;
  size_t i = 0;
  for (const cJSON *d = it->child; d; d = d->next, i++) {
    size_t m = kp_index(c, i);
    if (!cJSON_IsString(d) || !*d->valuestring)
      return fail(c, cJSON_IsString(d) ? "expected a non-empty string" : "expected a string");
    cfg->plugin_dirs[i] = resolve_path(c, d->valuestring);
    kp_pop(c, m);
  }
  kp_pop(c, mark);
  return 0;
}

static int parse_log(ctx *c, const cJSON *root) {
  static const char *const keys[] = {"level", "format", NULL};
  static const char *const formats[] = {"text", "json", NULL};
  c->cfg->log_level = HLOG_INFO;
  c->cfg->log_format = HLOG_FORMAT_TEXT;
  cJSON *log = NULL;
  int rc = get_object(c, root, "log", &log);
  if (rc <= 0) return rc;
  size_t mark = kp_key(c, "log");
  if (check_keys(c, log, keys) != 0) return -1;
  const char *level = NULL;
  rc = get_str(c, log, "level", 1, &level);
  if (rc < 0) return -1;
  if (rc == 1 && log_level_parse(level, &c->cfg->log_level) != 0) {
    kp_key(c, "level");
    return fail(c, "expected one of error, warn, info, debug");
  }
  int format = 0;
  if (get_choice(c, log, "format", formats, &format) < 0) return -1;
  c->cfg->log_format = format == 1 ? HLOG_FORMAT_JSON : HLOG_FORMAT_TEXT;
  kp_pop(c, mark);
  return 0;
}

int64_t config_parse_duration(const char *s) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || errno != 0 || v > (1ull << 40)) return -1;
  uint64_t unit;
  if (strcmp(end, "ms") == 0) {
    unit = 1;
  } else if (strcmp(end, "s") == 0) {
    unit = 1000;
  } else if (strcmp(end, "m") == 0) {
    unit = 60000;
  } else if (strcmp(end, "h") == 0) {
    unit = 3600000;
  } else if (strcmp(end, "d") == 0) {
    unit = 86400000;
  } else {
    return -1;
  }
  return (int64_t)(v * unit);
}

/* Where the password sits in a libpq URL ("postgresql://user:PASSWORD@...")
 * or key=value string ("... password=PASSWORD ..."): *off and *n, or 0. */
static int find_password(const char *url, size_t *off, size_t *n) {
  const char *scheme = strstr(url, "://");
  if (scheme && (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0)) {
    const char *auth = scheme + 3;
    size_t end = strcspn(auth, "/?#");
    const char *at = memrchr(auth, '@', end);
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon == NULL) return 0;
    *off = (size_t)(colon + 1 - url);
    *n = (size_t)(at - colon - 1);
    return *n > 0;
  }
  for (const char *p = strstr(url, "password"); p; p = strstr(p + 1, "password")) {
    if (p != url && p[-1] != ' ' && p[-1] != '\t') continue;
    const char *v = p + 8;
    v += strspn(v, " \t");
    if (*v != '=') continue;
    v++;
    v += strspn(v, " \t");
    size_t len;
    if (*v == '\'') { /* quoted: up to the closing quote, backslash escapes */
      const char *q = v + 1;
      while (*q && *q != '\'') q += (q[0] == '\\' && q[1]) ? 2 : 1;
      len = (size_t)(q - v) + (*q == '\'');
    } else {
      len = strcspn(v, " \t");
    }
    *off = (size_t)(v - url);
    *n = len;
    return len > 0;
  }
  return 0;
}

void config_mask_url(const char *url, char *out, size_t len) {
  size_t off, n;
  if (len == 0) return;
  if (!find_password(url, &off, &n)) {
    snprintf(out, len, "%s", url);
    return;
  }
  snprintf(out, len, "%.*s***%s", (int)off, url, url + off + n);
}

/* A libpq connection string must parse; libpq's complaint may quote the
 * string, so it is shown with the password masked. */
static int check_pg_url(ctx *c, const char *url) {
  const char *no_libpq = pq_lazy_error();
  if (no_libpq) return fail(c, "the PostgreSQL spool needs libpq (Debian: libpq5): %s", no_libpq);
  char *msg = NULL;
  PQconninfoOption *opts = PQconninfoParse(url, &msg);
  if (opts) {
    PQconninfoFree(opts);
    return 0;
  }
  char why[512] = "out of memory";
  if (msg) {
    size_t l = strlen(msg);
    while (l && (msg[l - 1] == '\n' || msg[l - 1] == ' ')) msg[--l] = '\0';
    size_t off, n;
    const char *pw = find_password(url, &off, &n) ? url + off : NULL;
    char *hit = pw && n >= 3 ? memmem(msg, l, pw, n) : NULL;
    if (hit) {
      snprintf(why, sizeof why, "%.*s***%s", (int)(hit - msg), msg, hit + n);
    } else {
      snprintf(why, sizeof why, "%s", msg);
    }
    PQfreemem(msg);
  }
  return fail(c,
              "not a PostgreSQL connection URL (postgresql://USER:PASSWORD@HOST:PORT/DB) or "
              "key=value string: %s",
              why);
}

/* "backend", "url", "lease_ms": the PostgreSQL spool's keys. */
static int parse_spool_backend(ctx *c, const cJSON *spool) {
  static const char *const backends[] = {"sqlite", "postgres", NULL};
  config *cfg = c->cfg;
  int backend = 0;
  if (get_choice(c, spool, "backend", backends, &backend) < 0) return -1;
  cfg->spool_backend = backend ? SPOOL_BACKEND_POSTGRES : SPOOL_BACKEND_SQLITE;
  const char *url = NULL;
  int has_url = get_str(c, spool, "url", 0, &url);
  if (has_url < 0) return -1;
  if (get_uint(c, spool, "lease_ms", 1000, 86400000, &cfg->spool_lease_ms) < 0) return -1;
  if (!backend) {
    static const char *const pg_only[] = {"url", "lease_ms", NULL};
    for (size_t i = 0; pg_only[i]; i++) {
      if (member(spool, pg_only[i])) {
        kp_key(c, pg_only[i]);
        return fail(c, "applies only to \"backend\": \"postgres\"");
      }
    }
    return 0;
  }
  /* What PostgreSQL does instead: its synchronous_commit, its own disk. */
  if (member(spool, "sync")) {
    kp_key(c, "sync");
    return fail(c,
                "applies only to the sqlite backend: PostgreSQL's durability is its own "
                "synchronous_commit setting");
  }
  if (member(spool, "min_free_bytes")) {
    kp_key(c, "min_free_bytes");
    return fail(c, "applies only to the sqlite backend (PostgreSQL watches its own disk)");
  }
  if (!has_url)
    return fail(c,
                "\"backend\": \"postgres\" needs \"url\" (a secret: write "
                "\"${HOOKD_PG_URL}\" or \"${file:PATH}\")");
  size_t mark = kp_key(c, "url");
  if (check_pg_url(c, url) != 0) return -1;
  kp_pop(c, mark);
  cfg->spool_url = dup_str(c, url);
  return 0;
}

static int parse_spool(ctx *c, const cJSON *root) {
  static const char *const keys[] = {"sync",    "max_pending", "retention", "min_free_bytes",
                                     "backend", "url",         "lease_ms",  NULL};
  static const char *const syncs[] = {"full", "normal", "off", NULL};
  static const spool_sync sync_values[] = {SPOOL_SYNC_FULL, SPOOL_SYNC_NORMAL, SPOOL_SYNC_OFF};
  config *cfg = c->cfg;
  cfg->sync = SPOOL_SYNC_FULL;
  cfg->spool_max_pending = 0; /* no spool-wide cap: each instance has delivery.max_pending */
  cfg->spool_min_free_bytes = 64ull << 20;
  cfg->spool_retention_ms = 7ll * 86400000;
  cfg->spool_backend = SPOOL_BACKEND_SQLITE;
  cfg->spool_lease_ms = 30000;
  cJSON *spool = NULL;
  int rc = get_object(c, root, "spool", &spool);
  if (rc <= 0) return rc;
  size_t mark = kp_key(c, "spool");
  if (check_keys(c, spool, keys) != 0) return -1;
  if (parse_spool_backend(c, spool) != 0) return -1;
  int sync = 0;
  if (get_choice(c, spool, "sync", syncs, &sync) < 0) return -1;
  cfg->sync = sync_values[sync];
  const char *retention = NULL;
  if (get_uint(c, spool, "max_pending", 0, MAX_EXACT_INT, &cfg->spool_max_pending) < 0 ||
      get_uint(c, spool, "min_free_bytes", 0, MAX_EXACT_INT, &cfg->spool_min_free_bytes) < 0 ||
      get_str(c, spool, "retention", 0, &retention) < 0)
    return -1;
  if (retention != NULL) {
    int64_t ms = config_parse_duration(retention);
    if (ms <= 0) {
      kp_key(c, "retention");
      return fail(c, "expected a duration such as \"7d\", \"12h\", \"30m\" or \"90s\"");
    }
    cfg->spool_retention_ms = ms;
  }
  kp_pop(c, mark);
  return 0;
}

static int parse_limits(ctx *c, const cJSON *root) {
  static const char *const keys[] = {"max_body_bytes",
                                     "max_header_bytes",
                                     "header_timeout_ms",
                                     "body_timeout_ms",
                                     "idle_timeout_ms",
                                     "max_connections",
                                     NULL};
  config_limits *l = &c->cfg->limits;
  l->max_body_bytes = 1048576;
  l->max_header_bytes = 16384;
  l->header_timeout_ms = 10000;
  l->body_timeout_ms = 30000;
  l->idle_timeout_ms = 60000;
  l->max_connections = 10000;
  cJSON *limits = NULL;
  int rc = get_object(c, root, "limits", &limits);
  if (rc <= 0) return rc;
  size_t mark = kp_key(c, "limits");
  if (check_keys(c, limits, keys) != 0 ||
      get_uint(c, limits, "max_body_bytes", 1, MAX_EXACT_INT, &l->max_body_bytes) < 0 ||
      get_u32(c, limits, "max_header_bytes", 1, &l->max_header_bytes) < 0 ||
      get_u32(c, limits, "header_timeout_ms", 1, &l->header_timeout_ms) < 0 ||
      get_u32(c, limits, "body_timeout_ms", 1, &l->body_timeout_ms) < 0 ||
      get_u32(c, limits, "idle_timeout_ms", 1, &l->idle_timeout_ms) < 0 ||
      get_u32(c, limits, "max_connections", 1, &l->max_connections) < 0)
    return -1;
  kp_pop(c, mark);
  return 0;
}

int config_parse_rate(const char *s, uint32_t *count, uint32_t *period_ms) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (end == s || errno != 0 || v < 1 || v > 1000000 || *s == '-' || *s == '+' || *s == ' ')
    return -1;
  uint32_t period;
  if (strcmp(end, "/s") == 0) {
    period = 1000;
  } else if (strcmp(end, "/m") == 0) {
    period = 60000;
  } else if (strcmp(end, "/h") == 0) {
    period = 3600000;
  } else {
    return -1;
  }
  *count = (uint32_t)v;
  *period_ms = period;
  return 0;
}

/* "rate": null or "N/s" | "N/m" | "N/h". */
static int parse_rate(ctx *c, const cJSON *obj, config_delivery *out) {
  const cJSON *it = member(obj, "rate");
  if (!it) return 0;
  size_t mark = kp_key(c, "rate");
  if (cJSON_IsNull(it)) {
    out->rate_count = 0;
  } else if (!cJSON_IsString(it) ||
             config_parse_rate(it->valuestring, &out->rate_count, &out->rate_period_ms) != 0) {
    return fail(c,
                "expected null or a rate such as \"1/s\", \"100/m\" or \"500/h\" "
                "(1 to 1000000 deliveries per second, minute or hour)");
  }
  kp_pop(c, mark);
  return 0;
}

/* "breaker": {"failures": N (0: no breaker), "cooldown_ms": MS}; either key
 * may be left to the defaults. */
static int parse_breaker(ctx *c, const cJSON *obj, config_delivery *out) {
  static const char *const keys[] = {"failures", "cooldown_ms", NULL};
  cJSON *br = NULL;
  int rc = get_object(c, obj, "breaker", &br);
  if (rc <= 0) return rc;
  size_t mark = kp_key(c, "breaker");
  if (check_keys(c, br, keys) != 0 || get_u32(c, br, "failures", 0, &out->breaker_failures) < 0 ||
      get_uint(c, br, "cooldown_ms", 1, MAX_EXACT_INT, &out->breaker_cooldown_ms) < 0)
    return -1;
  kp_pop(c, mark);
  return 0;
}

/* Reads a "delivery" object (at the current key path) over `base`. Used for
 * the global defaults and for a plugin entry's overrides. */
static int parse_delivery_obj(ctx *c, const cJSON *obj, const config_delivery *base,
                              config_delivery *out, int global) {
  static const char *const keys[] = {"concurrency",
                                     "max_attempts",
                                     "backoff_initial_ms",
                                     "backoff_max_ms",
                                     "timeout_ms",
                                     "max_crashes",
                                     "max_pending",
                                     "rate",
                                     "breaker",
                                     NULL};
  /* max_threads bounds the whole process: only in the top-level object. */
  static const char *const global_keys[] = {
      "concurrency", "max_attempts", "backoff_initial_ms", "backoff_max_ms", "timeout_ms",
      "max_crashes", "max_pending",  "max_threads",        "rate",           "breaker",
      NULL};
  *out = *base;
  if (check_keys(c, obj, global ? global_keys : keys) != 0 || parse_rate(c, obj, out) != 0 ||
      parse_breaker(c, obj, out) != 0 ||
      get_u32(c, obj, "max_attempts", 1, &out->max_attempts) < 0 ||
      get_uint(c, obj, "backoff_initial_ms", 1, MAX_EXACT_INT, &out->backoff_initial_ms) < 0 ||
      get_uint(c, obj, "backoff_max_ms", 1, MAX_EXACT_INT, &out->backoff_max_ms) < 0 ||
      get_uint(c, obj, "timeout_ms", 1, MAX_EXACT_INT, &out->timeout_ms) < 0 ||
      get_u32(c, obj, "max_crashes", 1, &out->max_crashes) < 0 ||
      get_uint(c, obj, "max_pending", 1, MAX_EXACT_INT, &out->max_pending) < 0)
    return -1;
  if (global) {
    uint64_t threads = 0;
    int rc = get_uint(c, obj, "max_threads", 1, MAX_THREADS, &threads);
    if (rc < 0) return -1;
    if (rc == 1) out->max_threads = (uint32_t)threads;
  }
  uint64_t conc = 0;
  int rc = get_uint(c, obj, "concurrency", 1, MAX_CONCURRENCY, &conc);
  if (rc < 0) return -1;
  if (rc == 1) out->concurrency = (uint32_t)conc;
  if (out->backoff_initial_ms > out->backoff_max_ms) {
    /* Name the key this object set; the other may come from the defaults. */
    if (member(obj, "backoff_initial_ms")) {
      kp_key(c, "backoff_initial_ms");
      return fail(c, "must not be greater than backoff_max_ms (%llu)",
                  (unsigned long long)out->backoff_max_ms);
    }
    kp_key(c, "backoff_max_ms");
    return fail(c, "must not be less than backoff_initial_ms (%llu)",
                (unsigned long long)out->backoff_initial_ms);
  }
  return 0;
}

static int parse_delivery(ctx *c, const cJSON *root) {
  static const config_delivery defaults = {.concurrency = 4,
                                           .max_attempts = 12,
                                           .backoff_initial_ms = 1000,
                                           .backoff_max_ms = 3600000,
                                           .timeout_ms = 30000,
                                           .max_crashes = 3,
                                           .max_pending = 100000,
                                           .max_threads = 256,
                                           .rate_period_ms = 1000,
                                           .breaker_failures = 20,
                                           .breaker_cooldown_ms = 30000};
  c->cfg->delivery = defaults;
  cJSON *obj = NULL;
  int rc = get_object(c, root, "delivery", &obj);
  if (rc <= 0) return rc;
  size_t mark = kp_key(c, "delivery");
  if (parse_delivery_obj(c, obj, &defaults, &c->cfg->delivery, 1) != 0) return -1;
  kp_pop(c, mark);
  return 0;
}

/* Reads the "secrets" array of a verify object into v. */
static int parse_secrets(ctx *c, const cJSON *obj, verify_config *v) {
  const cJSON *arr = member(obj, "secrets");
  if (!arr) return missing(c, "secrets");
  size_t mark = kp_key(c, "secrets");
  if (!cJSON_IsArray(arr)) return fail(c, "expected an array of strings");
  size_t n = (size_t)cJSON_GetArraySize(arr);
  if (n == 0) return fail(c, "expected at least one secret");
  v->secrets = alloc_array(c, n, sizeof *v->secrets);
  if (!v->secrets) return 0;
  size_t i = 0;
  for (const cJSON *s = arr->child; s; s = s->next, i++) {
    size_t m = kp_index(c, i);
    if (!cJSON_IsString(s)) return fail(c, "expected a string");
    /* An empty secret signs nothing: most likely an empty variable. */
    if (!*s->valuestring) return fail(c, "expected a non-empty string");
    char why[256] = "invalid secret";
    if (verify_secret_set(v->scheme, s->valuestring, &v->secrets[i], why, sizeof why) != 0)
      return fail(c, "%s", why);
    v->n_secrets = i + 1;
    kp_pop(c, m);
  }
  kp_pop(c, mark);
  return 0;
}

/* hmac with a timestamp: signed_payload, timestamp_header or
 * timestamp_key + signature_key (verify.h). */
static int parse_verify_timestamp(ctx *c, const cJSON *obj, verify_config *v) {
  static const char *const names[] = {"timestamp_header", "timestamp_key", "signature_key"};
  char **dst[] = {&v->timestamp_header, &v->timestamp_key, &v->signature_key};
  char why[256];
  for (size_t i = 0; i < 3; i++) {
    const char *s = NULL;
    int rc = get_str(c, obj, names[i], 0, &s);
    if (rc < 0) return -1;
    if (rc == 0) continue;
    if (i == 0 ? !valid_header_name(s) : (strchr(s, ',') || strchr(s, '=') || strchr(s, ' '))) {
      kp_key(c, names[i]);
      return fail(
          c, i == 0 ? "invalid header name '%s'" : "'%s' cannot be a key of a key=value list", s);
    }
    *dst[i] = dup_str(c, s);
  }
  const char *tmpl = NULL;
  int rc = get_str(c, obj, "signed_payload", 0, &tmpl);
  if (rc < 0) return -1;
  if (rc == 1 && verify_payload_parse(v, tmpl, why, sizeof why) != 0) {
    kp_key(c, "signed_payload");
    return fail(c, "%s", why);
  }
  if (verify_config_check(v, why, sizeof why) != 0) {
    if (rc == 1) kp_key(c, "signed_payload");
    return fail(c, "%s", why);
  }
  return 0;
}

/* The source's "verify" object, or a preset's defaults with the user's
 * keys over them (see parse_preset_verify). */
static int parse_verify_obj(ctx *c, const cJSON *obj, verify_config *v);

static int parse_verify(ctx *c, const cJSON *src, verify_config *v) {
  const cJSON *obj = member(src, "verify");
  if (!obj)
    return fail(c,
                "missing required key 'verify' (write \"verify\": {\"scheme\": \"none\"} to "
                "accept unsigned requests)");
  return parse_verify_obj(c, obj, v);
}

/* Refuses keys the scheme does not use ("not used by scheme") and unknown
 * ones (with "did you mean"). */
static int check_verify_keys(ctx *c, const cJSON *obj, const verify_config *v, const char *scheme) {
  static const char *const all_keys[] = {"scheme",
                                         "algorithm",
                                         "header",
                                         "encoding",
                                         "prefix",
                                         "secrets",
                                         "tolerance_s",
                                         "signed_payload",
                                         "timestamp_header",
                                         "timestamp_key",
                                         "signature_key",
                                         "username",
                                         NULL};
  static const char *const hmac_keys[] = {"scheme",        "algorithm",      "header",
                                          "encoding",      "prefix",         "secrets",
                                          "tolerance_s",   "signed_payload", "timestamp_header",
                                          "timestamp_key", "signature_key",  NULL};
  static const char *const token_keys[] = {"scheme", "header", "secrets", NULL};
  static const char *const basic_keys[] = {"scheme", "username", "secrets", NULL};
  static const char *const sw_keys[] = {"scheme", "secrets", "tolerance_s", NULL};
  static const char *const none_keys[] = {"scheme", NULL};

  const char *const *keys = v->scheme == VERIFY_HMAC                ? hmac_keys
                            : v->scheme == VERIFY_TOKEN             ? token_keys
                            : v->scheme == VERIFY_STANDARD_WEBHOOKS ? sw_keys
                            : v->scheme == VERIFY_BASIC             ? basic_keys
                                                                    : none_keys;
  for (const cJSON *it = obj->child; it; it = it->next) {
    if (in_list(it->string, keys)) continue;
    kp_key(c, it->string);
    if (in_list(it->string, all_keys)) return fail(c, "not used by scheme '%s'", scheme);
    return unknown_key(c, it->string, keys);
  }
  return 0;
}

/* hmac's "algorithm", "encoding" and "prefix". */
static int parse_verify_hmac(ctx *c, const cJSON *obj, verify_config *v) {
  const char *s = "sha256";
  if (get_str(c, obj, "algorithm", 1, &s) < 0) return -1;
  if (verify_algorithm_parse(s, &v->algorithm) != 0) {
    kp_key(c, "algorithm");
    return fail(c, "expected one of sha1, sha256, sha512");
  }
  s = "hex";
  if (get_str(c, obj, "encoding", 1, &s) < 0) return -1;
  if (verify_encoding_parse(s, &v->encoding) != 0) {
    kp_key(c, "encoding");
    return fail(c, "expected one of hex, base64");
  }
  s = "";
  if (get_str(c, obj, "prefix", 1, &s) < 0) return -1;
  v->prefix = dup_str(c, s);
  return 0;
}

static int parse_verify_obj(ctx *c, const cJSON *obj, verify_config *v) {
  size_t mark = kp_key(c, "verify");
  if (!cJSON_IsObject(obj)) return fail(c, "expected an object");

  const char *scheme = NULL;
  int rc = get_str(c, obj, "scheme", 1, &scheme);
  if (rc < 0) return -1;
  if (rc == 0)
    return fail(c, "missing required key 'scheme' (hmac, standard-webhooks, token, basic or none)");
  if (verify_scheme_parse(scheme, &v->scheme) != 0) {
    kp_key(c, "scheme");
    return fail(c, "expected one of hmac, standard-webhooks, token, basic, none");
  }
  v->tolerance_s = 300;
  if (check_verify_keys(c, obj, v, scheme) != 0) return -1;

  if (v->scheme == VERIFY_HMAC && parse_verify_hmac(c, obj, v) != 0) return -1;
  if (v->scheme == VERIFY_HMAC || v->scheme == VERIFY_TOKEN) {
    const char *h = NULL;
    if (get_required_str(c, obj, "header", &h) != 0) return -1;
    if (!valid_header_name(h)) {
      kp_key(c, "header");
      return fail(c, "invalid header name '%s'", h);
    }
    v->header = dup_str(c, h);
  }
  if ((v->scheme == VERIFY_STANDARD_WEBHOOKS || v->scheme == VERIFY_HMAC) &&
      get_u32(c, obj, "tolerance_s", 1, &v->tolerance_s) < 0)
    return -1;
  if (v->scheme == VERIFY_HMAC && parse_verify_timestamp(c, obj, v) != 0) return -1;
  if (v->scheme == VERIFY_BASIC) {
    const char *u = NULL;
    if (get_required_str(c, obj, "username", &u) != 0) return -1;
    v->username = dup_str(c, u);
    char why[256];
    if (v->username && verify_config_check(v, why, sizeof why) != 0) {
      kp_key(c, "username");
      return fail(c, "%s", why);
    }
  }
  if (v->scheme != VERIFY_NONE && parse_secrets(c, obj, v) != 0) return -1;
  kp_pop(c, mark);
  return 0;
}

/* A list of CIDR networks ("allow_ips", "trusted_proxies"); absent leaves
 * it empty. */
static int parse_net_list(ctx *c, const cJSON *obj, const char *key, access_list *out) {
  const cJSON *arr = member(obj, key);
  if (!arr) return 0;
  size_t mark = kp_key(c, key);
  if (!cJSON_IsArray(arr)) return fail(c, "expected an array of addresses or CIDR networks");
  size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
  if (n == 0) return fail(c, "expected at least one network (leave the key out to allow any)");
  out->nets = alloc_array(c, n, sizeof *out->nets);
  if (!out->nets) return 0;
  for (const cJSON *it = arr->child; it; it = it->next, i++) {
    size_t m = kp_index(c, i);
    char why[128];
    if (!cJSON_IsString(it)) return fail(c, "expected a string");
    if (access_net_parse(it->valuestring, &out->nets[i], why, sizeof why) != 0)
      return fail(c, "%s: '%s'", why, it->valuestring);
    out->n = i + 1;
    kp_pop(c, m);
  }
  kp_pop(c, mark);
  return 0;
}

/* "user", "group" and "trusted_proxies" at the top level. */
static int parse_security(ctx *c, const cJSON *root) {
  static const char *const names[] = {"user", "group"};
  char **dst[] = {&c->cfg->user, &c->cfg->group};
  for (size_t i = 0; i < 2; i++) {
    const char *s = NULL;
    int rc = get_str(c, root, names[i], 0, &s);
    if (rc < 0) return -1;
    if (rc == 1) *dst[i] = dup_str(c, s);
  }
  if (c->cfg->group && !c->cfg->user) {
    kp_key(c, "group");
    return fail(c, "\"group\" needs \"user\" (hookd drops to both after binding)");
  }
  return parse_net_list(c, root, "trusted_proxies", &c->cfg->trusted_proxies);
}

/* Senders hookd knows by name: where type, id and order key come from, the
 * endpoint handshake they send, and their signature scheme (verify keys a
 * user may still override). Presets follow "format" in parse_source's
 * list from index 2 on. */
typedef struct preset {
  const char *type_field, *id_field, *order_key, *type_header, *id_header, *id_header_alt;
  int id_body_hash;
  config_challenge challenge;
  const char *verify; /* JSON: the defaults of "verify" */
} preset;

static const preset presets[] = {
    /* github: X-GitHub-Event, X-GitHub-Delivery, X-Hub-Signature-256: sha256=<hex> */
    {NULL, NULL, NULL, "X-GitHub-Event", "X-GitHub-Delivery", NULL, 0, CHALLENGE_NONE,
     "{\"scheme\":\"hmac\",\"algorithm\":\"sha256\",\"encoding\":\"hex\","
     "\"header\":\"X-Hub-Signature-256\",\"prefix\":\"sha256=\"}"},
    /* stripe: Stripe-Signature: t=<ts>,v1=<hex of "<ts>.<body>"> */
    {"type", "id", "data.object.id", NULL, NULL, NULL, 0, CHALLENGE_NONE,
     "{\"scheme\":\"hmac\",\"algorithm\":\"sha256\",\"encoding\":\"hex\","
     "\"header\":\"Stripe-Signature\",\"timestamp_key\":\"t\",\"signature_key\":\"v1\","
     "\"signed_payload\":\"{timestamp}.{body}\"}"},
    /* slack (Events API): X-Slack-Signature: v0=<hex of "v0:<ts>:<body>"> */
    {"event.type", "event_id", "event.channel", NULL, NULL, NULL, 0, CHALLENGE_SLACK,
     "{\"scheme\":\"hmac\",\"algorithm\":\"sha256\",\"encoding\":\"hex\","
     "\"header\":\"X-Slack-Signature\",\"prefix\":\"v0=\","
     "\"timestamp_header\":\"X-Slack-Request-Timestamp\",\"signed_payload\":\"v0:{timestamp}:{body}"
     "\"}"},
    /* zoom: x-zm-signature: v0=<hex of "v0:<ts>:<body>">; no event id is sent */
    {"event", NULL, "payload.object.id", NULL, NULL, NULL, 1, CHALLENGE_ZOOM,
     "{\"scheme\":\"hmac\",\"algorithm\":\"sha256\",\"encoding\":\"hex\","
     "\"header\":\"x-zm-signature\",\"prefix\":\"v0=\","
     "\"timestamp_header\":\"x-zm-request-timestamp\",\"signed_payload\":\"v0:{timestamp}:{body}"
     "\"}"},
    /* shopify: X-Shopify-Topic, X-Shopify-Webhook-Id, X-Shopify-Hmac-Sha256: <base64> */
    {NULL, NULL, "id", "X-Shopify-Topic", "X-Shopify-Webhook-Id", NULL, 0, CHALLENGE_NONE,
     "{\"scheme\":\"hmac\",\"algorithm\":\"sha256\",\"encoding\":\"base64\","
     "\"header\":\"X-Shopify-Hmac-Sha256\"}"},
    /* standard-webhooks (and Svix): webhook-id or svix-id */
    {"type", NULL, NULL, NULL, "webhook-id", "svix-id", 0, CHALLENGE_NONE,
     "{\"scheme\":\"standard-webhooks\"}"},
};

/* Reads one of type/id: "<what>_field" (a dotted path) or "<what>_header"
 * (a header name), at most one of them; absent leaves *field and *header as
 * they are (a preset's). */
static int parse_field_source(ctx *c, const cJSON *obj, const char *what, char **field,
                              char **header) {
  char fkey[16], hkey[16];
  snprintf(fkey, sizeof fkey, "%s_field", what);
  snprintf(hkey, sizeof hkey, "%s_header", what);
  const char *f = NULL, *h = NULL;
  int rf = get_str(c, obj, fkey, 0, &f), rh = get_str(c, obj, hkey, 0, &h);
  if (rf < 0 || rh < 0) return -1;
  if (rf == 1 && rh == 1) {
    kp_key(c, hkey);
    return fail(c, "give either %s or %s, not both", fkey, hkey);
  }
  if (rf == 1) {
    if (!valid_dotted_path(f)) {
      kp_key(c, fkey);
      return fail(c, "expected a dotted path like 'data.id'");
    }
    free(*field);
    free(*header);
    *field = dup_str(c, f);
    *header = NULL;
  } else if (rh == 1) {
    if (!valid_header_name(h)) {
      kp_key(c, hkey);
      return fail(c, "invalid header name '%s'", h);
    }
    free(*field);
    free(*header);
    *header = dup_str(c, h);
    *field = NULL;
  }
  return 0;
}

static char *dup_or_null(ctx *c, const char *s) {
  return s ? dup_str(c, s) : NULL;
}

/* Where a source's type, id and order key come from: fixed for
 * cirrus-insight, a preset's defaults (which the keys override), or the
 * keys alone for generic. */
static int parse_fields(ctx *c, const cJSON *obj, config_source *src, const preset *p, int cirrus) {
  static const char *const field_keys[] = {"type_field",  "id_field",  "order_key",
                                           "type_header", "id_header", NULL};
  envelope_spec *e = &src->envelope;
  e->format = cirrus ? ENVELOPE_CIRRUS_INSIGHT : ENVELOPE_GENERIC;
  if (cirrus) {
    for (size_t i = 0; field_keys[i]; i++) {
      if (member(obj, field_keys[i])) {
        kp_key(c, field_keys[i]);
        return fail(c, "not used with \"format\": \"cirrus-insight\" (its fields are fixed)");
      }
    }
    return 0;
  }
  if (p) {
    e->type_field = dup_or_null(c, p->type_field);
    e->id_field = dup_or_null(c, p->id_field);
    e->order_key = dup_or_null(c, p->order_key);
    e->type_header = dup_or_null(c, p->type_header);
    e->id_header = dup_or_null(c, p->id_header);
    e->id_header_alt = dup_or_null(c, p->id_header_alt);
    e->id_body_hash = p->id_body_hash;
  }
  if (parse_field_source(c, obj, "type", &e->type_field, &e->type_header) != 0) return -1;
  char *id_field = e->id_field, *id_header = e->id_header;
  if (parse_field_source(c, obj, "id", &e->id_field, &e->id_header) != 0) return -1;
  if (e->id_field != id_field || e->id_header != id_header) {
    e->id_body_hash = 0; /* the user named the id */
    free(e->id_header_alt);
    e->id_header_alt = NULL;
  }
  if (!e->type_field && !e->type_header)
    return fail(c,
                "missing required key 'type_field' or 'type_header' (format 'generic' needs "
                "one)");
  if (!e->id_field && !e->id_header && !e->id_body_hash)
    return fail(c, "missing required key 'id_field' or 'id_header' (format 'generic' needs one)");
  const char *ok = NULL;
  int rc = get_str(c, obj, "order_key", 0, &ok);
  if (rc < 0) return -1;
  if (rc == 1) {
    if (!valid_dotted_path(ok)) {
      kp_key(c, "order_key");
      return fail(c, "expected a dotted path like 'data.id'");
    }
    free(e->order_key);
    e->order_key = dup_str(c, ok);
  }
  return 0;
}

/* A preset source's verify: the preset's defaults with the user's keys
 * over them; a user "scheme" other than the preset's replaces them all.
 * The secrets are always the user's. */
static int parse_preset_verify(ctx *c, const cJSON *src, const preset *p, verify_config *v) {
  const cJSON *user = member(src, "verify");
  if (!user)
    return fail(c,
                "missing required key 'verify' (this preset needs your signing secret: "
                "\"verify\": {\"secrets\": [\"${SIGNING_SECRET}\"]})");
  if (!cJSON_IsObject(user)) {
    kp_key(c, "verify");
    return fail(c, "expected an object");
  }
  cJSON *merged = cJSON_Parse(p->verify);
  if (!merged) {
    c->oom = 1;
    return 0;
  }
  const cJSON *scheme = member(user, "scheme");
  const cJSON *def = member(merged, "scheme");
  if (scheme && cJSON_IsString(scheme) && strcmp(scheme->valuestring, def->valuestring) != 0) {
    cJSON_Delete(merged);
    return parse_verify_obj(c, user, v);
  }
  for (const cJSON *it = user->child; it; it = it->next) {
    cJSON *copy = cJSON_Duplicate(it, 1);
    if (!copy) {
      c->oom = 1;
      break;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(merged, it->string);
    cJSON_AddItemToObject(merged, it->string, copy);
  }
  int rc = parse_verify_obj(c, merged, v);
  cJSON_Delete(merged);
  return rc;
}

static int parse_source(ctx *c, const cJSON *obj, size_t idx) {
  static const char *const keys[] = {
      "name",      "path",      "format", "type_field",     "id_field",  "order_key", "type_header",
      "id_header", "challenge", "verify", "success_status", "allow_ips", NULL};
  static const char *const formats[] = {
      "cirrus-insight", "generic",           "github", "stripe", "slack", "zoom",
      "shopify",        "standard-webhooks", NULL};
  static const char *const challenges[] = {"none", "zoom", "slack", NULL};
  config *cfg = c->cfg;
  config_source *src = &cfg->sources[idx];
  if (!cJSON_IsObject(obj)) return fail(c, "expected an object");
  src->keypath = dup_str(c, kp(c));
  if (check_keys(c, obj, keys) != 0) return -1;

  const char *name = NULL;
  if (get_entry_name(c, obj, idx, source_name_at, "source", "sources", &name) != 0) return -1;
  src->name = dup_str(c, name);

  const char *path = NULL;
  if (get_required_str(c, obj, "path", &path) != 0) return -1;
  if (path[0] != '/') {
    kp_key(c, "path");
    return fail(c, "expected a path starting with '/'");
  }
  /* The path is matched exactly against the request target, which never
   * holds these. */
  for (const char *p = path; *p; p++) {
    if (*p == '?' || *p == '#' || (unsigned char)*p <= ' ' || *p == 0x7F) {
      kp_key(c, "path");
      return fail(c, "must not contain '?', '#', spaces or control characters");
    }
  }
  for (size_t i = 0; i < idx; i++) {
    if (cfg->sources[i].path && strcmp(cfg->sources[i].path, path) == 0) {
      kp_key(c, "path");
      return fail(c, "path '%s' is already used by sources[%zu]", path, i);
    }
  }
  src->path = dup_str(c, path);

  int format = 0;
  if (get_choice(c, obj, "format", formats, &format) < 0) return -1;
  src->format = formats[format];
  if (parse_fields(c, obj, src, format >= 2 ? &presets[format - 2] : NULL, format == 0) != 0)
    return -1;
  int challenge = format >= 2 ? (int)presets[format - 2].challenge : 0;
  if (get_choice(c, obj, "challenge", challenges, &challenge) < 0) return -1;
  src->challenge = (config_challenge)challenge;

  uint64_t status = 200;
  if (get_uint(c, obj, "success_status", 200, 299, &status) < 0) return -1;
  src->success_status = (int)status;

  if (parse_net_list(c, obj, "allow_ips", &src->allow_ips) != 0) return -1;
  if (format >= 2) return parse_preset_verify(c, obj, &presets[format - 2], &src->verify);
  return parse_verify(c, obj, &src->verify);
}

static int parse_sources(ctx *c, const cJSON *root) {
  const cJSON *arr = member(root, "sources");
  if (!arr) return missing(c, "sources");
  size_t mark = kp_key(c, "sources");
  if (!cJSON_IsArray(arr)) return fail(c, "expected an array");
  size_t n = (size_t)cJSON_GetArraySize(arr);
  if (n == 0) return fail(c, "expected at least one source");
  c->cfg->sources = alloc_array(c, n, sizeof *c->cfg->sources);
  if (!c->cfg->sources) return 0;
  c->cfg->n_sources = n;
  size_t i = 0;
  for (const cJSON *it = arr->child; it; it = it->next, i++) {
    size_t m = kp_index(c, i);
    if (parse_source(c, it, i) != 0) return -1;
    kp_pop(c, m);
  }
  kp_pop(c, mark);
  return 0;
}

static int parse_plugin(ctx *c, cJSON *obj, size_t idx) {
  static const char *const keys[] = {"name", "module", "config", "delivery", "isolation", NULL};
  config *cfg = c->cfg;
  config_plugin *pl = &cfg->plugins[idx];
  if (!cJSON_IsObject(obj)) return fail(c, "expected an object");
  pl->keypath = dup_str(c, kp(c));
  pl->delivery = cfg->delivery;
  if (check_keys(c, obj, keys) != 0) return -1;

  const char *name = NULL;
  int rc;
  if (get_entry_name(c, obj, idx, plugin_name_at, "plugin instance", "plugins", &name) != 0)
    return -1;
  pl->name = dup_str(c, name);

  const char *module = NULL;
  if (get_required_str(c, obj, "module", &module) != 0) return -1;
  /* The module becomes a file name searched in plugin_dirs: no path
   * pieces, so a config cannot point the loader elsewhere. */
  if (!valid_name(module, 0)) {
    kp_key(c, "module");
    return fail(c, "invalid module name '%s' (use letters, digits, '_' and '-'; no path)", module);
  }
  pl->module = dup_str(c, module);

  const char *iso = NULL;
  rc = get_str(c, obj, "isolation", 0, &iso);
  if (rc < 0) return -1;
  if (rc == 1 && strcmp(iso, "process") == 0) {
    pl->isolation = CONFIG_ISOLATION_PROCESS;
  } else if (rc == 1 && strcmp(iso, "thread") != 0) {
    kp_key(c, "isolation");
    return fail(c, "expected \"thread\" or \"process\", not '%s'", iso);
  }

  cJSON *pconf = NULL;
  if (get_object(c, obj, "config", &pconf) < 0) return -1;
  if (!pconf) {
    /* Attached to the document so that it lives and dies with doc.root
     * like every other plugin config. */
    pconf = cJSON_CreateObject();
    if (!pconf || !cJSON_AddItemToObject(obj, "config", pconf)) {
      cJSON_Delete(pconf);
      c->oom = 1;
      pconf = NULL;
    }
  }
  pl->config = pconf;

  cJSON *del = NULL;
  if (get_object(c, obj, "delivery", &del) < 0) return -1;
  if (del) {
    size_t mark = kp_key(c, "delivery");
    if (parse_delivery_obj(c, del, &cfg->delivery, &pl->delivery, 0) != 0) return -1;
    kp_pop(c, mark);
  }
  return 0;
}

static int parse_plugins(ctx *c, const cJSON *root) {
  const cJSON *arr = member(root, "plugins");
  if (!arr) return 0;
  size_t mark = kp_key(c, "plugins");
  if (!cJSON_IsArray(arr)) return fail(c, "expected an array");
  size_t n = (size_t)cJSON_GetArraySize(arr);
  c->cfg->plugins = alloc_array(c, n, sizeof *c->cfg->plugins);
  if (!c->cfg->plugins) return 0;
  c->cfg->n_plugins = n;
  size_t i = 0;
  for (cJSON *it = arr->child; it; it = it->next, i++) {
    size_t m = kp_index(c, i);
    if (parse_plugin(c, it, i) != 0) return -1;
    kp_pop(c, m);
  }
  kp_pop(c, mark);
  return 0;
}

static int parse_route_events(ctx *c, const cJSON *obj, config_route *r) {
  const cJSON *arr = member(obj, "events");
  if (!arr) return missing(c, "events");
  size_t mark = kp_key(c, "events");
  if (!cJSON_IsArray(arr)) return fail(c, "expected an array of strings");
  size_t n = (size_t)cJSON_GetArraySize(arr);
  if (n == 0) return fail(c, "expected at least one event pattern");
  r->events = alloc_array(c, n, sizeof *r->events);
  if (!r->events) return 0;
  r->n_events = n;
  size_t i = 0;
  for (const cJSON *e = arr->child; e; e = e->next, i++) {
    size_t m = kp_index(c, i);
    if (!cJSON_IsString(e)) return fail(c, "expected a string");
    if (!*e->valuestring) return fail(c, "expected a non-empty string");
    const char *why = pattern_problem(e->valuestring);
    if (why) return fail(c, "invalid event pattern '%s': %s", e->valuestring, why);
    r->events[i] = dup_str(c, e->valuestring);
    kp_pop(c, m);
  }
  kp_pop(c, mark);
  return 0;
}

static int parse_route_to(ctx *c, const cJSON *obj, config_route *r) {
  const config *cfg = c->cfg;
  const cJSON *arr = member(obj, "to");
  if (!arr) return missing(c, "to");
  size_t mark = kp_key(c, "to");
  if (!cJSON_IsArray(arr)) return fail(c, "expected an array of strings");
  size_t n = (size_t)cJSON_GetArraySize(arr);
  if (n == 0) return fail(c, "expected at least one plugin instance");
  r->to = alloc_array(c, n, sizeof *r->to);
  if (!r->to) return 0;
  size_t i = 0;
  for (const cJSON *t = arr->child; t; t = t->next, i++) {
    size_t m = kp_index(c, i);
    if (!cJSON_IsString(t)) return fail(c, "expected a string");
    size_t p = 0;
    while (p < cfg->n_plugins &&
           !(cfg->plugins[p].name && strcmp(cfg->plugins[p].name, t->valuestring) == 0))
      p++;
    if (p == cfg->n_plugins) return fail(c, "no plugin instance named '%s'", t->valuestring);
    for (size_t j = 0; j < i; j++)
      if (r->to[j] == p) return fail(c, "plugin instance '%s' is listed twice", t->valuestring);
    r->to[i] = p;
    r->n_to = i + 1;
    kp_pop(c, m);
  }
  kp_pop(c, mark);
  return 0;
}

static int parse_route_when(ctx *c, const cJSON *obj, config_route *r) {
  cJSON *when = NULL;
  int rc = get_object(c, obj, "when", &when);
  if (rc <= 0) return rc;
  size_t mark = kp_key(c, "when");
  size_t n = (size_t)cJSON_GetArraySize(when);
  r->when = alloc_array(c, n, sizeof *r->when);
  if (!r->when) return 0;
  r->n_when = n;
  size_t i = 0;
  for (cJSON *w = when->child; w; w = w->next, i++) {
    size_t m = kp_key(c, w->string);
    if (!valid_dotted_path(w->string))
      return fail(c, "invalid path (expected a dotted path like 'data.meetingInfo.calendarPath')");
    if (!cJSON_IsString(w) && !cJSON_IsNumber(w) && !cJSON_IsBool(w) && !cJSON_IsNull(w))
      return fail(c, "expected a string, number, boolean or null");
    r->when[i].path = dup_str(c, w->string);
    r->when[i].value = w;
    kp_pop(c, m);
  }
  kp_pop(c, mark);
  return 0;
}

static int parse_route(ctx *c, const cJSON *obj, config_route *r) {
  static const char *const keys[] = {"source", "events", "to", "when", NULL};
  const config *cfg = c->cfg;
  if (!cJSON_IsObject(obj)) return fail(c, "expected an object");
  r->keypath = dup_str(c, kp(c));
  if (check_keys(c, obj, keys) != 0) return -1;
  const char *source = NULL;
  int rc = get_str(c, obj, "source", 0, &source);
  if (rc < 0) return -1;
  if (rc == 1) {
    size_t s = 0;
    while (s < cfg->n_sources &&
           !(cfg->sources[s].name && strcmp(cfg->sources[s].name, source) == 0))
      s++;
    if (s == cfg->n_sources) {
      kp_key(c, "source");
      return fail(c, "no source named '%s'", source);
    }
    r->source = dup_str(c, source);
  }
  if (parse_route_events(c, obj, r) != 0 || parse_route_to(c, obj, r) != 0 ||
      parse_route_when(c, obj, r) != 0)
    return -1;
  return 0;
}

static int parse_routes(ctx *c, const cJSON *root) {
  const cJSON *arr = member(root, "routes");
  if (!arr) return 0;
  size_t mark = kp_key(c, "routes");
  if (!cJSON_IsArray(arr)) return fail(c, "expected an array");
  size_t n = (size_t)cJSON_GetArraySize(arr);
  c->cfg->routes = alloc_array(c, n, sizeof *c->cfg->routes);
  if (!c->cfg->routes) return 0;
  c->cfg->n_routes = n;
  size_t i = 0;
  for (const cJSON *it = arr->child; it; it = it->next, i++) {
    size_t m = kp_index(c, i);
    if (parse_route(c, it, &c->cfg->routes[i]) != 0) return -1;
    kp_pop(c, m);
  }
  kp_pop(c, mark);
  return 0;
}

/* The directory of the config file as an absolute path, so that relative
 * paths in the file keep their meaning whatever the working directory is
 * later. */
static char *config_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (!slash)
    dir = strdup(".");
  else if (slash == path)
    dir = strdup("/");
  else
    dir = strndup(path, (size_t)(slash - path));
  if (!dir || dir[0] == '/') return dir;
  char *cwd = getcwd(NULL, 0);
  if (!cwd) return dir;
  const char *rel = dir;
  while (rel[0] == '.' && rel[1] == '/') rel += 2;
  char *abs = NULL;
  int n = strcmp(rel, ".") == 0 ? asprintf(&abs, "%s", cwd) : asprintf(&abs, "%s/%s", cwd, rel);
  free(cwd);
  if (n < 0) return dir;
  free(dir);
  return abs;
}

/* Files named by ${file:PATH} hold secrets (DESIGN §4): each one readable
 * by group or others is warned about. The paths are read from the text as
 * written (the tree holds the substituted values); "$${" is a literal. */
static void warn_secret_files(const config *cfg) {
  const char *t = cfg->doc.text;
  for (const char *p = t ? strstr(t, "${file:") : NULL; p; p = strstr(p + 1, "${file:")) {
    if (p > t && p[-1] == '$') continue;
    const char *start = p + 7, *end = strchr(start, '}');
    if (end == NULL || end == start || end - start > 4000) continue;
    char *rel = strndup(start, (size_t)(end - start)), *full = NULL;
    if (rel && (rel[0] == '/' ? asprintf(&full, "%s", rel)
                              : asprintf(&full, "%s/%s", cfg->dir, rel)) >= 0) {
      warn_if_readable(full, "secret file");
      free(full);
    }
    free(rel);
  }
}

static int secret_key_name(const char *k) {
  static const char *const words[] = {"token",   "secret",      "password",   "passwd",  "apikey",
                                      "api_key", "webhook_url", "credential", "private", NULL};
  for (size_t i = 0; k && words[i]; i++)
    if (strcasestr(k, words[i])) return 1;
  return 0;
}

/* String values under keys that name a secret, anywhere below node. */
static void scrub_register_tree(const cJSON *node, int secret) {
  for (const cJSON *it = node ? node->child : NULL; it; it = it->next) {
    int s = secret || secret_key_name(it->string);
    if (cJSON_IsString(it) && s) scrub_add_secret(it->valuestring, strlen(it->valuestring));
    if (cJSON_IsObject(it) || cJSON_IsArray(it)) scrub_register_tree(it, s);
  }
}

/* What scrub.h keeps out of logs, metrics and pages: signing secrets, the
 * admin token, and plugin options whose names say they hold a secret. */
static void scrub_register(const config *cfg) {
  for (size_t i = 0; i < cfg->n_sources; i++) {
    const verify_config *v = &cfg->sources[i].verify;
    for (size_t k = 0; k < v->n_secrets; k++)
      scrub_add_secret((const char *)v->secrets[k].key, v->secrets[k].len);
  }
  if (cfg->admin_token) scrub_add_secret(cfg->admin_token, strlen(cfg->admin_token));
  scrub_register_tree(member(cfg->doc.root, "sources"), 0);
  for (size_t i = 0; i < cfg->n_plugins; i++) scrub_register_tree(cfg->plugins[i].config, 0);
}

/* Worker threads: one per unit of concurrency of each instance, and the
 * sum must fit under delivery.max_threads. */
static int check_threads(ctx *c, const cJSON *root) {
  uint64_t sum = 0;
  for (size_t i = 0; i < c->cfg->n_plugins; i++) sum += c->cfg->plugins[i].delivery.concurrency;
  if (sum <= c->cfg->delivery.max_threads) return 0;
  const cJSON *del = member(root, "delivery");
  size_t mark = kp_key(c, "delivery");
  if (del && member(del, "max_threads")) kp_key(c, "max_threads");
  int rc = fail(c,
                "the plugin instances need %llu worker threads (the sum of their concurrency), "
                "more than delivery.max_threads (%u): lower concurrency or raise max_threads",
                (unsigned long long)sum, c->cfg->delivery.max_threads);
  kp_pop(c, mark);
  return rc;
}

int config_load(config *cfg, const char *path, char *err, size_t errlen) {
  static const char *const top_keys[] = {"listen",
                                         "admin_listen",
                                         "data_dir",
                                         "plugin_dirs",
                                         "log",
                                         "shutdown_timeout_ms",
                                         "spool",
                                         "limits",
                                         "sources",
                                         "plugins",
                                         "routes",
                                         "delivery",
                                         "user",
                                         "group",
                                         "trusted_proxies",
                                         "admin_token",
                                         "reload_timeout_ms",
                                         NULL};
  memset(cfg, 0, sizeof *cfg);
  ctx c = {.cfg = cfg, .doc = &cfg->doc, .err = err, .errlen = errlen};
  cfg->file = strdup(path);
  cfg->dir = config_dir(path);
  if (!cfg->file || !cfg->dir) {
    if (err && errlen) snprintf(err, errlen, "%s: out of memory", path);
    goto fail;
  }
  if (jsonc_load(&cfg->doc, path, err, errlen) != 0) goto fail;
  cJSON *root = cfg->doc.root;
  if (!cJSON_IsObject(root)) {
    fail(&c, "expected an object at the top level");
    goto fail;
  }
  if (jsonc_substitute(&cfg->doc, root, "", cfg->dir, err, errlen) != 0) goto fail;

  uint64_t shutdown = 30000, reload = 30000;
  if (check_keys(&c, root, top_keys) != 0 || parse_listen(&c, root) != 0 ||
      parse_dirs(&c, root) != 0 || parse_log(&c, root) != 0 ||
      get_uint(&c, root, "shutdown_timeout_ms", 0, UINT32_MAX, &shutdown) < 0 ||
      get_uint(&c, root, "reload_timeout_ms", 1, UINT32_MAX, &reload) < 0 ||
      parse_spool(&c, root) != 0 || parse_limits(&c, root) != 0 || parse_delivery(&c, root) != 0 ||
      parse_security(&c, root) != 0 || parse_sources(&c, root) != 0 ||
      parse_plugins(&c, root) != 0 || parse_routes(&c, root) != 0 || check_threads(&c, root) != 0)
    goto fail;
  cfg->shutdown_timeout_ms = (uint32_t)shutdown;
  cfg->reload_timeout_ms = (uint32_t)reload;
  if (c.oom) {
    if (err && errlen) snprintf(err, errlen, "%s: out of memory", path);
    goto fail;
  }
  warn_secret_files(cfg);
  scrub_register(cfg);
  hookd_buf_free(&c.kp);
  return 0;
fail:
  hookd_buf_free(&c.kp);
  config_free(cfg);
  return -1;
}

void config_free(config *cfg) {
  if (!cfg) return;
  for (size_t i = 0; i < cfg->n_listen; i++) {
    free(cfg->listen[i]);
    if (cfg->listen_tls) {
      free(cfg->listen_tls[i].cert);
      free(cfg->listen_tls[i].key);
      free(cfg->listen_tls[i].client_ca);
      tls_ctx_unref(cfg->listen_tls[i].ctx);
    }
  }
  free(cfg->listen);
  free(cfg->listen_tls);
  free(cfg->admin_listen);
  free(cfg->admin_token);
  free(cfg->data_dir);
  free(cfg->spool_url);
  for (size_t i = 0; i < cfg->n_plugin_dirs; i++) free(cfg->plugin_dirs[i]);
  free(cfg->plugin_dirs);
  for (size_t i = 0; i < cfg->n_sources; i++) {
    config_source *s = &cfg->sources[i];
    free(s->name);
    free(s->path);
    free(s->keypath);
    envelope_spec_clear(&s->envelope);
    verify_config_clear(&s->verify);
    access_list_clear(&s->allow_ips);
  }
  free(cfg->sources);
  access_list_clear(&cfg->trusted_proxies);
  free(cfg->user);
  free(cfg->group);
  for (size_t i = 0; i < cfg->n_plugins; i++) {
    free(cfg->plugins[i].name);
    free(cfg->plugins[i].module);
    free(cfg->plugins[i].keypath);
  }
  free(cfg->plugins);
  for (size_t i = 0; i < cfg->n_routes; i++) {
    config_route *r = &cfg->routes[i];
    free(r->source);
    for (size_t j = 0; j < r->n_events; j++) free(r->events[j]);
    free(r->events);
    free(r->to);
    for (size_t j = 0; j < r->n_when; j++) free(r->when[j].path);
    free(r->when);
    free(r->keypath);
  }
  free(cfg->routes);
  jsonc_free(&cfg->doc);
  free(cfg->file);
  free(cfg->dir);
  memset(cfg, 0, sizeof *cfg);
}

int config_parse_addr(const char *s, struct sockaddr_storage *out) {
  char host[INET6_ADDRSTRLEN];
  const char *port;
  int v6;
  if (!s || !out) return -1;
  memset(out, 0, sizeof *out);
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (!close || close[1] != ':') return -1;
    size_t n = (size_t)(close - s - 1);
    if (n == 0 || n >= sizeof host) return -1;
    memcpy(host, s + 1, n);
    host[n] = '\0';
    port = close + 2;
    v6 = 1;
  } else {
    const char *colon = strrchr(s, ':');
    if (!colon) return -1;
    size_t n = (size_t)(colon - s);
    if (n >= sizeof host) return -1;
    memcpy(host, s, n);
    host[n] = '\0';
    /* An IPv6 address needs brackets, else its last group reads as a port. */
    if (strchr(host, ':')) return -1;
    if (n == 0) strcpy(host, "0.0.0.0");
    port = colon + 1;
    v6 = 0;
  }
  /* Port 0 asks the kernel for a free port: tests use it. */
  size_t digits = strspn(port, "0123456789");
  if (digits == 0 || digits > 5 || port[digits] != '\0') return -1;
  unsigned long p = strtoul(port, NULL, 10);
  if (p > 65535) return -1;
  if (v6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return -1;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)p);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)out;
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return -1;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)p);
  }
  return 0;
}
