/* Envelope decoding: parse a body with cJSON, pick type, id and order key, look up dotted paths. */
#include "envelope.h"

#include "jscan.h"

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
  if (f.type_path == NULL || f.id_path == NULL) {
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

  const cJSON *type = envelope_path(out->root, f.type_path);
  if (type == NULL || cJSON_IsNull(type)) return fail(out, reason, f.no_type);
  if (!cJSON_IsString(type) || type->valuestring == NULL) return fail(out, reason, f.bad_type);
  if (type->valuestring[0] == '\0') return fail(out, reason, f.no_type);

  const cJSON *id = envelope_path(out->root, f.id_path);
  if (id == NULL || cJSON_IsNull(id)) return fail(out, reason, f.no_id);
  if (cJSON_IsString(id) && id->valuestring != NULL) {
    if (id->valuestring[0] == '\0') return fail(out, reason, f.no_id);
    out->id = copy_text(id->valuestring, strlen(id->valuestring));
  } else if (cJSON_IsNumber(id) && is_exact_integer(id->valuedouble)) {
    char num[NUMBER_TEXT_MAX];
    size_t n = number_text(id->valuedouble, num);
    out->id = copy_text(num, n);
  } else {
    return fail(out, reason, f.bad_id);
  }
  if (out->id == NULL) return fail(out, reason, "out of memory");

  out->type = copy_text(type->valuestring, strlen(type->valuestring));
  if (out->type == NULL) return fail(out, reason, "out of memory");

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

int envelope_decode_fields(const envelope_spec *spec, const char *body, size_t len,
                           envelope *out, const char **reason) {
  fields f;
  jscan_path paths[3];
  jscan_value v[3];
  memset(out, 0, sizeof *out);
  if (spec == NULL || body == NULL || len == 0 || len > INT32_MAX) goto tree;
  spec_fields(spec, &f);
  if (f.type_path == NULL || f.id_path == NULL) goto tree;
  size_t np = f.order_path != NULL ? 3 : 2;
  if (jscan_path_init(&paths[0], f.type_path) != 0 || jscan_path_init(&paths[1], f.id_path) != 0 ||
      (np == 3 && jscan_path_init(&paths[2], f.order_path) != 0)) {
    goto tree;
  }
  /* Not strict JSON, or not something jscan answers for: cJSON decides. */
  if (jscan(body, len, paths, np, v) != 0) goto tree;

  /* The same checks, in the same order, as envelope_decode. */
  if (v[0].kind == JSCAN_MISSING || v[0].kind == JSCAN_NULL) return fail(out, reason, f.no_type);
  if (v[0].kind != JSCAN_STRING) return fail(out, reason, f.bad_type);
  if (v[0].len == 0) return fail(out, reason, f.no_type);
  if (v[1].kind == JSCAN_MISSING || v[1].kind == JSCAN_NULL) return fail(out, reason, f.no_id);
  if (v[1].kind == JSCAN_STRING) {
    if (v[1].len == 0) return fail(out, reason, f.no_id);
  } else if (v[1].kind != JSCAN_NUMBER || !is_exact_integer(number_value(&v[1]))) {
    return fail(out, reason, f.bad_id);
  }
  if (!scalar_text(&v[1], &out->id) || !scalar_text(&v[0], &out->type)) goto tree_clear;
  if (out->id == NULL || out->type == NULL) return fail(out, reason, "out of memory");
  /* An escaped "\u0000..." decodes to the empty string in cJSON: the tree
   * path gave that answer (tree_clear above); here the text is never empty. */
  if (np == 3 && v[2].kind != JSCAN_MISSING && v[2].kind != JSCAN_NULL) {
    if (!scalar_text(&v[2], &out->order_key)) goto tree_clear;
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
  memset(spec, 0, sizeof *spec);
}
