/* Envelope decoding: parse a body with cJSON, pick type, id and order key, look up dotted paths. */
#include "envelope.h"

#include "jscan.h"
#include "utf8.h"

#include <openssl/evp.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Doubles represent every integer up to 2^53 exactly; beyond that two
 * different ids in the body could decode to the same number, and a
 * duplicate check on the id would then drop a real event. */
#define EXACT_INT_LIMIT 9007199254740992.0

/* Enough for "-9007199254740992" and for any "%.17g" output. */
#define NUMBER_TEXT_MAX 32

static char *copy_text(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p == NULL) return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

static int is_exact_integer(double v) {
  /* The range check comes first: converting an out-of-range double to an
   * integer is undefined. NaN fails both comparisons. */
  return v >= -EXACT_INT_LIMIT && v <= EXACT_INT_LIMIT && v == (double)(long long)v;
}

/* Integers print without a fraction or exponent (ids and counters must read
 * as they were sent); other numbers print with the fewest digits that read
 * back as the same double. */
static size_t number_text(double v, char *buf) {
  int n;
  if (is_exact_integer(v)) {
    n = snprintf(buf, NUMBER_TEXT_MAX, "%lld", (long long)v);
  } else {
    n = snprintf(buf, NUMBER_TEXT_MAX, "%.15g", v);
    if (strtod(buf, NULL) != v) n = snprintf(buf, NUMBER_TEXT_MAX, "%.17g", v);
  }
  return n > 0 ? (size_t)n : 0;
}

/* Finds the child of an object whose key is exactly key[0..len).
 * cJSON_GetObjectItemCaseSensitive would need a NUL-terminated copy of the
 * segment, which is an allocation or a bounded stack copy per segment. */
static const cJSON *object_child(const cJSON *obj, const char *key, size_t len) {
  for (const cJSON *c = obj->child; c != NULL; c = c->next) {
    if (c->string != NULL && strncmp(c->string, key, len) == 0 && c->string[len] == '\0') return c;
  }
  return NULL;
}

static const cJSON *array_child(const cJSON *arr, const char *seg, size_t len) {
  size_t index = 0;
  if (len == 0 || len > 9) return NULL; /* more elements than that never fit in a body */
  for (size_t i = 0; i < len; i++) {
    if (seg[i] < '0' || seg[i] > '9') return NULL;
    index = index * 10 + (size_t)(seg[i] - '0');
  }
  const cJSON *c = arr->child;
  while (c != NULL && index > 0) {
    c = c->next;
    index--;
  }
  return c;
}

const cJSON *envelope_path(const cJSON *root, const char *path) {
  const cJSON *node = root;
  const char *p = path;
  if (node == NULL || path == NULL) return NULL;
  if (*p == '\0') return node;
  for (;;) {
    const char *dot = strchr(p, '.');
    size_t len = dot != NULL ? (size_t)(dot - p) : strlen(p);
    if (len == 0) return NULL;
    if (cJSON_IsObject(node)) {
      /* An object key that happens to be all digits ("0") is found too. */
      node = object_child(node, p, len);
    } else if (cJSON_IsArray(node)) {
      node = array_child(node, p, len);
    } else {
      return NULL;
    }
    if (node == NULL) return NULL;
    if (dot == NULL) return node;
    p = dot + 1;
  }
}

char *envelope_text(const cJSON *node) {
  char num[NUMBER_TEXT_MAX];
  if (node == NULL) return NULL;
  if (cJSON_IsString(node)) {
    return node->valuestring != NULL ? copy_text(node->valuestring, strlen(node->valuestring))
                                     : NULL;
  }
  if (cJSON_IsNumber(node)) {
    size_t n = number_text(node->valuedouble, num);
    return copy_text(num, n);
  }
  if (cJSON_IsTrue(node)) return copy_text("true", 4);
  if (cJSON_IsFalse(node)) return copy_text("false", 5);
  if (cJSON_IsObject(node) || cJSON_IsArray(node)) return cJSON_PrintUnformatted(node);
  return NULL; /* JSON null, or a node kind a parsed body never holds */
}

/* The field names a source's format reads, and the reasons that name them. */
typedef struct fields {
  const char *type_path;
  const char *id_path;
  const char *order_path;
  const char *no_type;
  const char *bad_type;
  const char *no_id;
  const char *bad_id;
} fields;

static const fields cirrus_fields = {
    "eventType",
    "eventId",
    "data.id",
    "missing or empty event type (eventType)",
    "event type (eventType) is not a string",
    "missing or empty event id (eventId)",
    "event id (eventId) is not a string or an exact integer",
};

static void spec_fields(const envelope_spec *spec, fields *f) {
  if (spec->format == ENVELOPE_CIRRUS_INSIGHT) {
    *f = cirrus_fields;
    return;
  }
  /* Generic field names come from the config and the reasons must be static,
   * so they stay general; the source's config says which fields they are. */
  f->type_path = spec->type_field;
  f->id_path = spec->id_field;
  f->order_path = spec->order_key;
  f->no_type = "missing or empty event type";
  f->bad_type = "event type is not a string";
  f->no_id = "missing or empty event id";
  f->bad_id = "event id is not a string or an exact integer";
}

static int only_whitespace(const char *p, const char *end) {
  for (; p < end; p++) {
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return 0;
  }
  return 1;
}

static int fail(envelope *out, const char **reason, const char *why) {
  envelope_clear(out);
  if (reason != NULL) *reason = why;
  return -1;
}

int envelope_decode(const envelope_spec *spec, const char *body, size_t len, envelope *out,
                    const char **reason) {
  const char *end = NULL;
  fields f;
  memset(out, 0, sizeof *out);
  if (spec == NULL) return fail(out, reason, "source has no envelope format");
  spec_fields(spec, &f);
  if ((f.type_path == NULL && spec->type_header == NULL) ||
      (f.id_path == NULL && spec->id_header == NULL && !spec->id_body_hash)) {
    return fail(out, reason, "source has no type or id field");
  }
  if (body == NULL || len == 0) return fail(out, reason, "body is not JSON");

  out->root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
  /* cJSON stops after the first value; a body with more after it is not one
   * JSON document, and routing on its first half would hide the rest. */
  if (out->root == NULL || end == NULL || !only_whitespace(end, body + len)) {
    return fail(out, reason, "body is not JSON");
  }
  if (!cJSON_IsObject(out->root)) return fail(out, reason, "body is not a JSON object");

  /* A type or id that comes from a header (f.*_path NULL) is the caller's. */
  const cJSON *type = f.type_path ? envelope_path(out->root, f.type_path) : NULL;
  if (f.type_path && (type == NULL || cJSON_IsNull(type))) return fail(out, reason, f.no_type);
  if (f.type_path && (!cJSON_IsString(type) || type->valuestring == NULL))
    return fail(out, reason, f.bad_type);
  if (f.type_path && type->valuestring[0] == '\0') return fail(out, reason, f.no_type);

  const cJSON *id = f.id_path ? envelope_path(out->root, f.id_path) : NULL;
  if (f.id_path && (id == NULL || cJSON_IsNull(id))) return fail(out, reason, f.no_id);
  if (!f.id_path) {
    /* filled in by envelope_decode_request */
  } else if (cJSON_IsString(id) && id->valuestring != NULL) {
    if (id->valuestring[0] == '\0') return fail(out, reason, f.no_id);
    out->id = copy_text(id->valuestring, strlen(id->valuestring));
  } else if (cJSON_IsNumber(id) && is_exact_integer(id->valuedouble)) {
    char num[NUMBER_TEXT_MAX];
    size_t n = number_text(id->valuedouble, num);
    out->id = copy_text(num, n);
  } else {
    return fail(out, reason, f.bad_id);
  }
  if (f.id_path && out->id == NULL) return fail(out, reason, "out of memory");

  if (f.type_path) {
    out->type = copy_text(type->valuestring, strlen(type->valuestring));
    if (out->type == NULL) return fail(out, reason, "out of memory");
  }

  /* A missing, null or empty order key means "no ordering", not an error:
   * Cirrus Insight's test event has no data.id. */
  if (f.order_path != NULL) {
    const cJSON *key = envelope_path(out->root, f.order_path);
    if (key != NULL && !cJSON_IsNull(key)) {
      out->order_key = envelope_text(key);
      if (out->order_key == NULL) return fail(out, reason, "out of memory");
      if (out->order_key[0] == '\0') {
        free(out->order_key);
        out->order_key = NULL;
      }
    }
  }
  return 0;
}

/* A number jscan found, as cJSON reads it (strtod of the text). */
static double number_value(const jscan_value *v) {
  char num[NUMBER_TEXT_MAX * 2 + 8];
  memcpy(num, v->start, v->len); /* jscan keeps numbers to 60 characters */
  num[v->len] = '\0';
  return strtod(num, NULL);
}

/* A found value as text the way the tree path would print it: strings
 * unescaped, numbers through number_text. Returns 1 with *text set (NULL
 * when out of memory), 0 when the value must go the tree path (a string
 * with \u0000, an object or array). */
static int scalar_text(const jscan_value *v, char **text) {
  *text = NULL;
  if (v->kind == JSCAN_STRING) {
    char *s = malloc(v->len + 1);
    if (s == NULL) return 1;
    if (jscan_unescape(v, s) < 0) {
      free(s);
      return 0;
    }
    *text = s;
    return 1;
  }
  if (v->kind == JSCAN_NUMBER) {
    char num[NUMBER_TEXT_MAX];
    size_t n = number_text(number_value(v), num);
    *text = copy_text(num, n);
    return 1;
  }
  if (v->kind == JSCAN_TRUE) *text = copy_text("true", 4);
  if (v->kind == JSCAN_FALSE) *text = copy_text("false", 5);
  return v->kind == JSCAN_TRUE || v->kind == JSCAN_FALSE;
}

int envelope_decode_fields(const envelope_spec *spec, const char *body, size_t len, envelope *out,
                           const char **reason) {
  fields f;
  jscan_path paths[3];
  jscan_value v[3];
  const char *want[3];
  size_t np = 0;
  int ti = -1, ii = -1, oi = -1; /* indices into paths, -1: not read from the body */
  memset(out, 0, sizeof *out);
  if (spec == NULL || body == NULL || len == 0 || len > INT32_MAX) goto tree;
  spec_fields(spec, &f);
  if ((f.type_path == NULL && spec->type_header == NULL) ||
      (f.id_path == NULL && spec->id_header == NULL && !spec->id_body_hash))
    goto tree;
  if (f.type_path) want[ti = (int)np++] = f.type_path;
  if (f.id_path) want[ii = (int)np++] = f.id_path;
  if (f.order_path) want[oi = (int)np++] = f.order_path;
  for (size_t i = 0; i < np; i++)
    if (jscan_path_init(&paths[i], want[i]) != 0) goto tree;
  /* Not strict JSON, or not something jscan answers for: cJSON decides. */
  if (jscan(body, len, np ? paths : NULL, np, v) != 0) goto tree;

  /* The same checks, in the same order, as envelope_decode. */
  if (ti >= 0) {
    if (v[ti].kind == JSCAN_MISSING || v[ti].kind == JSCAN_NULL)
      return fail(out, reason, f.no_type);
    if (v[ti].kind != JSCAN_STRING) return fail(out, reason, f.bad_type);
    if (v[ti].len == 0) return fail(out, reason, f.no_type);
  }
  if (ii >= 0) {
    if (v[ii].kind == JSCAN_MISSING || v[ii].kind == JSCAN_NULL) return fail(out, reason, f.no_id);
    if (v[ii].kind == JSCAN_STRING) {
      if (v[ii].len == 0) return fail(out, reason, f.no_id);
    } else if (v[ii].kind != JSCAN_NUMBER || !is_exact_integer(number_value(&v[ii]))) {
      return fail(out, reason, f.bad_id);
    }
    if (!scalar_text(&v[ii], &out->id)) goto tree_clear;
    if (out->id == NULL) return fail(out, reason, "out of memory");
  }
  if (ti >= 0) {
    if (!scalar_text(&v[ti], &out->type)) goto tree_clear;
    if (out->type == NULL) return fail(out, reason, "out of memory");
  }
  /* An escaped "\u0000..." decodes to the empty string in cJSON: the tree
   * path gave that answer (tree_clear above); here the text is never empty. */
  if (oi >= 0 && v[oi].kind != JSCAN_MISSING && v[oi].kind != JSCAN_NULL) {
    if (!scalar_text(&v[oi], &out->order_key)) goto tree_clear;
    if (out->order_key == NULL) return fail(out, reason, "out of memory");
    if (out->order_key[0] == '\0') {
      free(out->order_key);
      out->order_key = NULL;
    }
  }
  return 0;

tree_clear:
  envelope_clear(out);
tree:
  if (envelope_decode(spec, body, len, out, reason) != 0) return -1;
  return 0;
}

/* A header's value with the blanks around it dropped, as a copy; NULL when
 * absent or empty. *oom is set when the copy failed. */
static char *header_text(envelope_header_fn header, void *hctx, const char *name, int *oom) {
  size_t n = 0;
  const char *v = name ? header(hctx, name, &n) : NULL;
  if (v == NULL) return NULL;
  while (n > 0 && (*v == ' ' || *v == '\t')) v++, n--;
  while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  if (n == 0) return NULL;
  char *s = copy_text(v, n);
  if (s == NULL) *oom = 1;
  return s;
}

static char *body_hash_id(const char *body, size_t len) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int dl = 0;
  if (EVP_Digest(body, len, d, &dl, EVP_sha256(), NULL) != 1) return NULL;
  char *id = malloc(7 + 2 * dl + 1);
  if (id == NULL) return NULL;
  memcpy(id, "sha256:", 7);
  for (unsigned i = 0; i < dl; i++) snprintf(id + 7 + 2 * i, 3, "%02x", d[i]);
  return id;
}

int envelope_decode_request(const envelope_spec *spec, const char *body, size_t len,
                            envelope_header_fn header, void *hctx, int tree, envelope *out,
                            const char **reason) {
  int rc = tree ? envelope_decode(spec, body, len, out, reason)
                : envelope_decode_fields(spec, body, len, out, reason);
  if (rc != 0) return rc;
  int oom = 0;
  if (spec->type_header) {
    out->type = header_text(header, hctx, spec->type_header, &oom);
    if (out->type == NULL)
      return fail(out, reason, oom ? "out of memory" : "missing or empty event type header");
  }
  if (spec->id_header) {
    out->id = header_text(header, hctx, spec->id_header, &oom);
    if (out->id == NULL && !oom) out->id = header_text(header, hctx, spec->id_header_alt, &oom);
    if (out->id == NULL)
      return fail(out, reason, oom ? "out of memory" : "missing or empty event id header");
  } else if (spec->id_body_hash) {
    out->id = body_hash_id(body, len);
    if (out->id == NULL) return fail(out, reason, "out of memory");
  }
  /* JSON between systems is UTF-8 (RFC 8259 section 8.1), and neither
   * parser checks it. These three are keys and labels in the spool, the
   * log and the page; PostgreSQL refuses such text outright, so without
   * this a sender would get 503 on every retry, for ever. */
  if (!utf8_valid(out->id)) return fail(out, reason, "event id is not valid UTF-8");
  if (!utf8_valid(out->type)) return fail(out, reason, "event type is not valid UTF-8");
  if (out->order_key && !utf8_valid(out->order_key))
    return fail(out, reason, "order key is not valid UTF-8");
  return 0;
}

void envelope_clear(envelope *env) {
  if (env == NULL) return;
  cJSON_Delete(env->root);
  free(env->type);
  free(env->id);
  free(env->order_key);
  memset(env, 0, sizeof *env);
}

void envelope_spec_clear(envelope_spec *spec) {
  if (spec == NULL) return;
  free(spec->type_field);
  free(spec->id_field);
  free(spec->order_key);
  free(spec->type_header);
  free(spec->id_header);
  free(spec->id_header_alt);
  memset(spec, 0, sizeof *spec);
}
