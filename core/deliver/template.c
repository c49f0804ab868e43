/* Templates: compile "{{path|filter}}" once, render it against an envelope with an escaping. */
#include "template.h"

#include "hookd/helpers.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

/* Choices the header leaves open, fixed here:
 *   - "\{{" is a literal "{{" (the backslash is dropped); any other
 *     backslash is ordinary text.
 *   - Whitespace around the path, filter names and the default text is
 *     trimmed. The default text runs to the next "|" or "}}", so it cannot
 *     hold either.
 *   - "json" of a missing or null value is null, so a template that builds
 *     JSON stays valid JSON.
 *   - The escaping applies after all filters, except that with
 *     HOOKD_ESC_JSON a value whose last filter is "json" goes in as it is:
 *     it is already a complete JSON value, meant to stand outside quotes
 *     ({"note": {{x|json}}}), and escaping it again would break the JSON.
 *   - Compile errors give columns in characters, counted from the start of
 *     the template across line breaks. */

typedef enum { PART_LITERAL = 0, PART_VALUE } part_kind;
typedef enum { FILTER_DEFAULT = 0, FILTER_UPPER, FILTER_LOWER, FILTER_JSON } filter_kind;

/* Text lives in one pool and is addressed by offset, so the pool can grow
 * while compiling without leaving pointers behind. */
typedef struct filter {
  filter_kind kind;
  size_t arg; /* FILTER_DEFAULT: offset of its text in the pool */
  size_t arg_len;
} filter;

typedef struct part {
  part_kind kind;
  size_t text; /* literal: offset of the text; value: offset of the NUL-terminated path */
  size_t text_len;
  size_t first_filter;
  size_t n_filters;
} part;

struct hookd_template {
  char *pool;
  part *parts;
  size_t n_parts;
  filter *filters;
  size_t n_values;
};

/* The growable buffer is the SDK's (hookd/helpers.h): plugins and core
 * share one. */
typedef hookd_buf buf;

/* ---- escaping --------------------------------------------------------- */

/* RFC 3986 recommends upper case for percent-encoding. */
static const char hex_upper[] = "0123456789ABCDEF";

/* Header values: a CR or LF would start a new header (or the body), so
 * every C0 control and DEL becomes a space. */
static void put_header(buf *b, const char *s, size_t n) {
  if (hookd_buf_reserve(b, n) != 0) return;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    b->p[b->len++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
  }
}

static int url_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

static void put_url(buf *b, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (url_unreserved(c)) {
      hookd_buf_putc(b, (char)c);
    } else {
      char esc[3] = {'%', hex_upper[c >> 4], hex_upper[c & 15]};
      hookd_buf_add(b, esc, 3);
    }
  }
}

static void put_escaped(buf *b, const char *s, size_t n, hookd_escape esc) {
  switch (esc) {
    case HOOKD_ESC_JSON:
      hookd_buf_json(b, s, n);
      break;
    case HOOKD_ESC_HEADER:
      put_header(b, s, n);
      break;
    case HOOKD_ESC_URL:
      put_url(b, s, n);
      break;
    case HOOKD_ESC_NONE:
    default:
      hookd_buf_add(b, s, n);
      break;
  }
}

/* ---- compiling -------------------------------------------------------- */

typedef struct compiler {
  const char *text;
  buf pool;
  part *parts;
  size_t n_parts, cap_parts;
  filter *filters;
  size_t n_filters, cap_filters;
  int literal_open; /* the last part is a literal still being extended */
  char *err;
  size_t errlen;
} compiler;

static int is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static void trim(const char **s, const char **e) {
  while (*s < *e && is_space(**s)) (*s)++;
  while (*e > *s && is_space((*e)[-1])) (*e)--;
}

/* Columns count characters, not bytes, so a template with "é" before the
 * mistake points where an editor shows it. */
static size_t column_of(const compiler *c, const char *at) {
  size_t col = 1;
  for (const char *p = c->text; p < at; p++) {
    if (((unsigned char)*p & 0xc0) != 0x80) col++;
  }
  return col;
}

static int compile_error(compiler *c, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int compile_error(compiler *c, const char *at, const char *fmt, ...) {
  if (c->err != NULL && c->errlen > 0) {
    int n = snprintf(c->err, c->errlen, "column %zu: ", column_of(c, at));
    if (n >= 0 && (size_t)n < c->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  return -1;
}

static int oom_error(compiler *c) {
  if (c->err != NULL && c->errlen > 0) snprintf(c->err, c->errlen, "out of memory");
  return -1;
}

static part *new_part(compiler *c) {
  if (c->n_parts == c->cap_parts) {
    size_t cap = c->cap_parts != 0 ? c->cap_parts * 2 : 8;
    part *p = realloc(c->parts, cap * sizeof *p);
    if (p == NULL) return NULL;
    c->parts = p;
    c->cap_parts = cap;
  }
  part *p = &c->parts[c->n_parts++];
  memset(p, 0, sizeof *p);
  return p;
}

static filter *new_filter(compiler *c) {
  if (c->n_filters == c->cap_filters) {
    size_t cap = c->cap_filters != 0 ? c->cap_filters * 2 : 8;
    filter *f = realloc(c->filters, cap * sizeof *f);
    if (f == NULL) return NULL;
    c->filters = f;
    c->cap_filters = cap;
  }
  filter *f = &c->filters[c->n_filters++];
  memset(f, 0, sizeof *f);
  return f;
}

static int add_literal(compiler *c, const char *s, size_t n) {
  if (n == 0) return 0;
  if (!c->literal_open) {
    part *p = new_part(c);
    if (p == NULL) return oom_error(c);
    p->kind = PART_LITERAL;
    p->text = c->pool.len;
    c->literal_open = 1;
  }
  hookd_buf_add(&c->pool, s, n);
  if (c->pool.oom) return oom_error(c);
  c->parts[c->n_parts - 1].text_len += n;
  return 0;
}

static int check_path(compiler *c, const char *s, const char *e) {
  const char *seg = s;
  for (const char *p = s; p <= e; p++) {
    if (p == e || *p == '.') {
      if (p == seg) {
        return compile_error(c, p, "empty segment in path '%.*s'", (int)(e - s), s);
      }
      seg = p + 1;
    }
  }
  return 0;
}

static int compile_filter(compiler *c, const char *s, const char *e) {
  const char *at = s;
  trim(&s, &e);
  if (s == e) return compile_error(c, at, "empty filter");
  const char *colon = memchr(s, ':', (size_t)(e - s));
  const char *name_end = colon != NULL ? colon : e;
  while (name_end > s && is_space(name_end[-1])) name_end--;
  size_t name_len = (size_t)(name_end - s);

  filter_kind kind;
  if (name_len == 7 && memcmp(s, "default", 7) == 0) {
    kind = FILTER_DEFAULT;
  } else if (name_len == 5 && memcmp(s, "upper", 5) == 0) {
    kind = FILTER_UPPER;
  } else if (name_len == 5 && memcmp(s, "lower", 5) == 0) {
    kind = FILTER_LOWER;
  } else if (name_len == 4 && memcmp(s, "json", 4) == 0) {
    kind = FILTER_JSON;
  } else {
    return compile_error(c, s, "unknown filter '%.*s'", (int)name_len, s);
  }
  if (kind == FILTER_DEFAULT && colon == NULL) {
    return compile_error(c, s, "filter 'default' needs a text (default:TEXT)");
  }
  if (kind != FILTER_DEFAULT && colon != NULL) {
    return compile_error(c, colon, "filter '%.*s' takes no argument", (int)name_len, s);
  }

  filter *f = new_filter(c);
  if (f == NULL) return oom_error(c);
  f->kind = kind;
  if (kind == FILTER_DEFAULT) {
    /* The text is trimmed like everything else between the braces, so
     * "{{ x | default: none }}" gives "none". */
    const char *ts = colon + 1;
    const char *te = e;
    trim(&ts, &te);
    f->arg = c->pool.len;
    f->arg_len = (size_t)(te - ts);
    hookd_buf_add(&c->pool, ts, f->arg_len);
    if (c->pool.oom) return oom_error(c);
  }
  return 0;
}

/* Compiles the reference between "{{" (at open) and "}}" (at close). */
static int compile_value(compiler *c, const char *open, const char *close) {
  const char *s = open + 2;
  const char *bar = memchr(s, '|', (size_t)(close - s));
  const char *pe = bar != NULL ? bar : close;
  const char *ps = s;
  trim(&ps, &pe);
  if (ps == pe) return compile_error(c, open + 2, "empty path");
  if (check_path(c, ps, pe) != 0) return -1;

  part *p = new_part(c);
  if (p == NULL) return oom_error(c);
  c->literal_open = 0;
  p->kind = PART_VALUE;
  p->text = c->pool.len;
  p->text_len = (size_t)(pe - ps);
  p->first_filter = c->n_filters;
  hookd_buf_add(&c->pool, ps, p->text_len);
  hookd_buf_putc(&c->pool, '\0');
  if (c->pool.oom) return oom_error(c);

  while (bar != NULL) {
    const char *fs = bar + 1;
    bar = memchr(fs, '|', (size_t)(close - fs));
    if (compile_filter(c, fs, bar != NULL ? bar : close) != 0) return -1;
    c->parts[c->n_parts - 1].n_filters++;
  }
  return 0;
}

static int has_open_brace_pair(const char *s, const char *e) {
  for (; s + 1 < e; s++) {
    if (s[0] == '{' && s[1] == '{') return 1;
  }
  return 0;
}

static int compile_text(compiler *c) {
  const char *p = c->text;
  for (;;) {
    const char *open = strstr(p, "{{");
    if (open == NULL) return add_literal(c, p, strlen(p));
    if (open > p && open[-1] == '\\') {
      /* "\{{" is a literal "{{"; the backslash is dropped. */
      if (add_literal(c, p, (size_t)(open - 1 - p)) != 0) return -1;
      if (add_literal(c, "{{", 2) != 0) return -1;
      p = open + 2;
      continue;
    }
    if (add_literal(c, p, (size_t)(open - p)) != 0) return -1;
    const char *close = strstr(open + 2, "}}");
    /* A "{{" before the "}}" means this reference was never closed; the
     * error belongs to the first one, not to whatever follows. */
    if (close == NULL || has_open_brace_pair(open + 2, close)) {
      return compile_error(c, open, "unclosed '{{'");
    }
    if (compile_value(c, open, close) != 0) return -1;
    p = close + 2;
  }
}

hookd_template *template_compile(const char *text, char *err, size_t errlen) {
  compiler c;
  memset(&c, 0, sizeof c);
  c.text = text != NULL ? text : "";
  c.err = err;
  c.errlen = errlen;
  if (err != NULL && errlen > 0) err[0] = '\0';

  hookd_template *t = NULL;
  if (compile_text(&c) != 0) goto fail;
  t = calloc(1, sizeof *t);
  if (t == NULL) {
    oom_error(&c);
    goto fail;
  }
  /* An empty pool still gets a buffer so that pool offsets are always valid. */
  if (hookd_buf_reserve(&c.pool, 1) != 0) {
    oom_error(&c);
    goto fail;
  }
  t->pool = c.pool.p;
  t->parts = c.parts;
  t->n_parts = c.n_parts;
  t->filters = c.filters;
  for (size_t i = 0; i < c.n_parts; i++) {
    if (c.parts[i].kind == PART_VALUE) t->n_values++;
  }
  return t;

fail:
  free(t);
  free(c.pool.p);
  free(c.parts);
  free(c.filters);
  return NULL;
}

void template_free(hookd_template *t) {
  if (t == NULL) return;
  free(t->pool);
  free(t->parts);
  free(t->filters);
  free(t);
}

int template_is_literal(const hookd_template *t) {
  return t != NULL && t->n_values == 0;
}

/* ---- rendering -------------------------------------------------------- */

/* A value on its way through the filters: still a JSON node, or text that
 * is borrowed (from the envelope or the template) or held in a scratch
 * buffer. */
typedef struct value {
  int missing;
  const cJSON *node; /* set while no filter has turned it into text */
  const char *s;
  size_t n;
} value;

/* Two scratch buffers: a filter reads the text from one and writes the
 * other, since its input may itself live in scratch. */
typedef struct scratch {
  buf b[2];
  int cur; /* which buffer the value's text is in, if any */
} scratch;

static buf *scratch_next(scratch *sc, const value *v) {
  int next = (v->s == sc->b[sc->cur].p) ? !sc->cur : sc->cur;
  sc->cur = next;
  sc->b[next].len = 0;
  return &sc->b[next];
}

static void scratch_set(value *v, buf *b) {
  v->node = NULL;
  v->s = b->p != NULL ? b->p : "";
  v->n = b->len;
}

/* Turns a node into text: strings and booleans are borrowed, numbers and
 * containers formatted into scratch. JSON null counts as missing. */
static void to_text(value *v, scratch *sc) {
  const cJSON *node = v->node;
  v->node = NULL;
  if (v->missing || node == NULL) return;
  if (cJSON_IsString(node) && node->valuestring != NULL) {
    v->s = node->valuestring;
    v->n = strlen(node->valuestring);
  } else if (cJSON_IsTrue(node)) {
    v->s = "true", v->n = 4;
  } else if (cJSON_IsFalse(node)) {
    v->s = "false", v->n = 5;
  } else {
    char *text = envelope_text(node);
    if (text == NULL) {
      v->missing = 1;
      if (cJSON_IsNumber(node) || cJSON_IsObject(node) || cJSON_IsArray(node)) sc->b[0].oom = 1;
      return;
    }
    buf *b = scratch_next(sc, v);
    hookd_buf_add(b, text, strlen(text));
    free(text);
    scratch_set(v, b);
  }
}

static void apply_filter(const hookd_template *t, const filter *f, value *v, scratch *sc) {
  switch (f->kind) {
    case FILTER_DEFAULT:
      to_text(v, sc);
      if (v->missing || v->n == 0) {
        v->missing = 0;
        v->s = t->pool + f->arg;
        v->n = f->arg_len;
      }
      break;
    case FILTER_UPPER:
    case FILTER_LOWER: {
      to_text(v, sc);
      if (v->missing) break;
      buf *b = scratch_next(sc, v);
      if (hookd_buf_reserve(b, v->n) != 0) break;
      /* ASCII only, by design: no locale, and multi-byte UTF-8 stays intact. */
      for (size_t i = 0; i < v->n; i++) {
        char ch = v->s[i];
        if (f->kind == FILTER_UPPER && ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
        if (f->kind == FILTER_LOWER && ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
        b->p[i] = ch;
      }
      b->len = v->n;
      scratch_set(v, b);
      break;
    }
    case FILTER_JSON: {
      /* A missing value is JSON null, so "{\"x\": {{x|json}}}" stays valid. */
      if (v->missing) {
        v->missing = 0;
        v->node = NULL;
        v->s = "null", v->n = 4;
        break;
      }
      if (v->node != NULL && !cJSON_IsString(v->node)) {
        to_text(v, sc); /* numbers, booleans, objects, arrays: their text is their JSON */
        break;
      }
      to_text(v, sc);
      buf *b = scratch_next(sc, v);
      hookd_buf_putc(b, '"');
      hookd_buf_json(b, v->s, v->n);
      hookd_buf_putc(b, '"');
      scratch_set(v, b);
      break;
    }
  }
}

char *template_render(const hookd_template *t, const cJSON *root, hookd_escape esc, size_t *len) {
  buf out = {0};
  scratch sc;
  memset(&sc, 0, sizeof sc);
  if (len != NULL) *len = 0;
  if (t == NULL) return NULL;

  for (size_t i = 0; i < t->n_parts; i++) {
    const part *p = &t->parts[i];
    if (p->kind == PART_LITERAL) {
      if (esc == HOOKD_ESC_HEADER) {
        put_header(&out, t->pool + p->text, p->text_len);
      } else {
        hookd_buf_add(&out, t->pool + p->text, p->text_len);
      }
      continue;
    }
    value v = {0};
    v.node = envelope_path(root, t->pool + p->text);
    v.missing = v.node == NULL || cJSON_IsNull(v.node);
    if (v.missing) v.node = NULL;
    for (size_t k = 0; k < p->n_filters; k++) {
      apply_filter(t, &t->filters[p->first_filter + k], &v, &sc);
    }
    to_text(&v, &sc);
    int raw_json = esc == HOOKD_ESC_JSON && p->n_filters > 0 &&
                   t->filters[p->first_filter + p->n_filters - 1].kind == FILTER_JSON;
    if (v.missing) continue;
    if (raw_json) {
      hookd_buf_add(&out, v.s, v.n);
    } else {
      put_escaped(&out, v.s, v.n, esc);
    }
  }

  int oom = out.oom || sc.b[0].oom || sc.b[1].oom;
  free(sc.b[0].p);
  free(sc.b[1].p);
  if (!oom) hookd_buf_putc(&out, '\0');
  if (oom || out.oom) {
    free(out.p);
    return NULL;
  }
  if (len != NULL) *len = out.len - 1;
  return out.p;
}
