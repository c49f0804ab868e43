/* jscan: a strict, allocation-free JSON checker that picks out the values at a few dotted paths.
 *
 * The request path needs three fields of a 2 KB body (type, id, order key)
 * and a yes/no on whether the body is JSON; building a cJSON tree for that
 * and freeing it again was a fifth of the loop thread's time. jscan is
 * deliberately stricter than cJSON: whatever it refuses, the caller hands to
 * cJSON, so the verdict on odd input (raw control characters in strings, a
 * byte-order mark, lone surrogates, deep nesting) is cJSON's, as before. */
#include "jscan.h"

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

typedef struct scan {
  const jscan_path *paths;
  size_t np;
  jscan_value *out;
  /* For path t: the depth of the deepest open container whose path is the
   * first (depth - 1) segments of t. The root (depth 1) always is. */
  uint32_t match_depth[JSCAN_MAX_PATHS];
  /* closed[t] bit k: the container at depth k + 1 already had its member
   * named by segment k (later duplicates of the key are not looked at). */
  uint32_t closed[JSCAN_MAX_PATHS];
} scan;

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static long hex4(const char *p) {
  long v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(p[i]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

/* 1 for the bytes a string holds as they are: not '"', not '\\', not a
 * control character. */
#define PLAIN1(c) ((c) >= 0x20 && (c) != '"' && (c) != '\\')
#define PLAIN4(c) PLAIN1(c), PLAIN1((c) + 1), PLAIN1((c) + 2), PLAIN1((c) + 3)
#define PLAIN16(c) PLAIN4(c), PLAIN4((c) + 4), PLAIN4((c) + 8), PLAIN4((c) + 12)
#define PLAIN64(c) PLAIN16(c), PLAIN16((c) + 16), PLAIN16((c) + 32), PLAIN16((c) + 48)
static const unsigned char plain[256] = {PLAIN64(0), PLAIN64(64), PLAIN64(128), PLAIN64(192)};

/* p is just past the opening quote. Returns the position past the closing
 * quote, or NULL. Surrogates must pair up, as cJSON requires. */
static const char *scan_string(const char *p, const char *end, int *escaped) {
  const unsigned char *u = (const unsigned char *)p;
  *escaped = 0;
  for (;;) {
    /* Most of a body is plain string bytes: sixteen at a time where SSE2
     * is (every x86-64), else four. */
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
                  ctl = _mm_set1_epi8(0x1f);
    while (end - (const char *)u >= 16) {
      __m128i v = _mm_loadu_si128((const __m128i *)(const void *)u);
      /* max(v, 0x1f) == 0x1f exactly for the bytes 0x00..0x1f (unsigned). */
      __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                  _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl));
      int mask = _mm_movemask_epi8(stop);
      if (mask != 0) {
        u += __builtin_ctz((unsigned)mask);
        break;
      }
      u += 16;
    }
#endif
    while (end - (const char *)u >= 4 && plain[u[0]] && plain[u[1]] && plain[u[2]] && plain[u[3]]) {
      u += 4;
    }
    while ((const char *)u < end && plain[*u]) u++;
    p = (const char *)u;
    if (p >= end) return NULL;
    unsigned char ch = (unsigned char)*p;
    if (ch == '"') return p + 1;
    if (ch < 0x20) return NULL;
    *escaped = 1;
    if (end - p < 2) return NULL;
    switch (p[1]) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        p += 2;
        break;
      case 'u': {
        if (end - p < 6) return NULL;
        long cp = hex4(p + 2);
        if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return NULL;
        p += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return NULL;
          long lo = hex4(p + 2);
          if (lo < 0xDC00 || lo > 0xDFFF) return NULL;
          p += 6;
        }
        break;
      }
      default:
        return NULL;
    }
    u = (const unsigned char *)p;
  }
}

static const char *scan_number(const char *p, const char *end) {
  if (p < end && *p == '-') p++;
  if (p >= end) return NULL;
  if (*p == '0') {
    p++;
  } else if (*p >= '1' && *p <= '9') {
    while (p < end && is_digit(*p)) p++;
  } else {
    return NULL;
  }
  if (p < end && *p == '.') {
    p++;
    if (p >= end || !is_digit(*p)) return NULL;
    while (p < end && is_digit(*p)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || !is_digit(*p)) return NULL;
    while (p < end && is_digit(*p)) p++;
  }
  return p;
}

static const char *scan_literal(const char *p, const char *end, const char *word, size_t n) {
  if ((size_t)(end - p) < n || memcmp(p, word, n) != 0) return NULL;
  return p + n;
}

/* The member about to be read (object key [key, key + klen), or array
 * index `index` when key is NULL) of the container at `depth`: sets the bit
 * of each path whose value it is in *hits, and of each path it leads
 * towards in *descend. */
static void member(scan *s, uint32_t depth, const char *key, size_t klen, int64_t index,
                   uint32_t *hits, uint32_t *descend) {
  *hits = *descend = 0;
  for (size_t t = 0; t < s->np; t++) {
    const jscan_path *pa = &s->paths[t];
    if (s->match_depth[t] != depth || depth > pa->n) continue;
    size_t k = depth - 1;
    if (s->closed[t] & (1u << k)) continue;
    int same = key != NULL ? pa->seglen[k] == klen && memcmp(pa->seg[k], key, klen) == 0
                           : pa->index[k] == index;
    if (!same) continue;
    s->closed[t] |= 1u << k;
    if (depth == pa->n) {
      *hits |= 1u << t;
    } else {
      *descend |= 1u << t;
    }
  }
}

static void record(scan *s, uint32_t hits, jscan_kind kind, const char *start, size_t len,
                   int escaped) {
  for (size_t t = 0; hits != 0; t++, hits >>= 1) {
    if (hits & 1) s->out[t] = (jscan_value){kind, escaped, start, len};
  }
}

int jscan_path_init(jscan_path *pa, const char *dotted) {
  const char *p = dotted;
  pa->n = 0;
  if (p == NULL || *p == '\0') return -1;
  for (;;) {
    const char *dot = strchr(p, '.');
    size_t len = dot != NULL ? (size_t)(dot - p) : strlen(p);
    if (len == 0 || pa->n == JSCAN_MAX_SEGS || len > UINT32_MAX) return -1;
    pa->seg[pa->n] = p;
    pa->seglen[pa->n] = (uint32_t)len;
    /* As envelope_path reads an array: 1 to 9 digits, leading zeros allowed. */
    int64_t index = len <= 9 ? 0 : -1;
    for (size_t i = 0; i < len && index >= 0; i++) {
      index = is_digit(p[i]) ? index * 10 + (p[i] - '0') : -1;
    }
    pa->index[pa->n] = index;
    pa->n++;
    if (dot == NULL) return 0;
    p = dot + 1;
  }
}

int jscan(const char *text, size_t len, const jscan_path *paths, size_t npaths, jscan_value *out) {
  if (npaths > JSCAN_MAX_PATHS) return -1;
  scan s = {.paths = paths, .np = npaths, .out = out};
  for (size_t t = 0; t < npaths; t++) {
    out[t] = (jscan_value){JSCAN_MISSING, 0, NULL, 0};
    s.match_depth[t] = 1;
    if (paths[t].n == 0) return -1;
  }
  /* The open containers: 1 = object, 0 = array; for arrays the next index. */
  unsigned char is_obj[JSCAN_MAX_DEPTH];
  int64_t next_index[JSCAN_MAX_DEPTH];
  uint32_t depth = 0;
  const char *p = skip_ws(text, text + len), *end = text + len;
  if (p >= end || *p != '{') return -1;
  uint32_t hits = 0, descend = 0;

value:
  p = skip_ws(p, end);
  if (p >= end) return -1;
  switch (*p) {
    case '{':
    case '[': {
      if (depth == JSCAN_MAX_DEPTH) return -1;
      int obj = *p == '{';
      record(&s, hits, obj ? JSCAN_OBJECT : JSCAN_ARRAY, p, 0, 0);
      is_obj[depth] = (unsigned char)obj;
      next_index[depth] = 0;
      depth++;
      for (size_t t = 0; descend != 0; t++, descend >>= 1) {
        if (descend & 1) {
          s.match_depth[t] = depth;
          s.closed[t] &= ~(1u << (depth - 1));
        }
      }
      p = skip_ws(p + 1, end);
      if (p >= end) return -1;
      if (*p == (obj ? '}' : ']')) {
        p++;
        goto closed;
      }
      if (obj) goto key;
      member(&s, depth, NULL, 0, next_index[depth - 1]++, &hits, &descend);
      goto value;
    }
    case '"': {
      int esc;
      const char *q = scan_string(p + 1, end, &esc);
      if (q == NULL) return -1;
      record(&s, hits, JSCAN_STRING, p + 1, (size_t)(q - 1 - (p + 1)), esc);
      p = q;
      break;
    }
    case 't':
    case 'f':
    case 'n': {
      static const struct {
        const char *word;
        size_t n;
        jscan_kind kind;
      } lit[] = {{"true", 4, JSCAN_TRUE}, {"false", 5, JSCAN_FALSE}, {"null", 4, JSCAN_NULL}};
      size_t i = *p == 't' ? 0 : *p == 'f' ? 1 : 2;
      const char *q = scan_literal(p, end, lit[i].word, lit[i].n);
      if (q == NULL) return -1;
      record(&s, hits, lit[i].kind, p, lit[i].n, 0);
      p = q;
      break;
    }
    default: {
      const char *q = scan_number(p, end);
      /* cJSON reads at most 63 characters of a number. */
      if (q == NULL || q - p > 60) return -1;
      record(&s, hits, JSCAN_NUMBER, p, (size_t)(q - p), 0);
      p = q;
      break;
    }
  }

after:
  if (depth == 0) return skip_ws(p, end) == end ? 0 : -1;
  p = skip_ws(p, end);
  if (p >= end) return -1;
  if (is_obj[depth - 1]) {
    if (*p == '}') {
      p++;
      goto closed;
    }
    if (*p != ',') return -1;
    p = skip_ws(p + 1, end);
    goto key;
  }
  if (*p == ']') {
    p++;
    goto closed;
  }
  if (*p != ',') return -1;
  p++;
  member(&s, depth, NULL, 0, next_index[depth - 1]++, &hits, &descend);
  goto value;

key:
  if (p >= end || *p != '"') return -1;
  {
    int esc;
    const char *q = scan_string(p + 1, end, &esc);
    if (q == NULL) return -1;
    if (esc) {
      /* A key written with escapes could spell a searched segment; only a
       * full parse can say. Elsewhere it does not matter. */
      for (size_t t = 0; t < s.np; t++) {
        if (s.match_depth[t] == depth) return -1;
      }
      hits = descend = 0;
    } else {
      member(&s, depth, p + 1, (size_t)(q - 1 - (p + 1)), -1, &hits, &descend);
    }
    p = skip_ws(q, end);
    if (p >= end || *p != ':') return -1;
    p++;
    goto value;
  }

closed:
  depth--;
  for (size_t t = 0; t < s.np; t++) {
    if (s.match_depth[t] > depth && depth > 0) s.match_depth[t] = depth;
  }
  goto after;
}

static size_t put_utf8(char *o, long cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

long jscan_unescape(const jscan_value *v, char *buf) {
  const char *p = v->start, *end = v->start + v->len;
  char *o = buf;
  if (!v->escaped) {
    memcpy(buf, p, v->len);
    buf[v->len] = '\0';
    return (long)v->len;
  }
  /* jscan checked the escapes already. */
  while (p < end) {
    if (*p != '\\') {
      *o++ = *p++;
      continue;
    }
    char e = p[1];
    p += 2;
    switch (e) {
      case 'b':
        *o++ = '\b';
        break;
      case 'f':
        *o++ = '\f';
        break;
      case 'n':
        *o++ = '\n';
        break;
      case 'r':
        *o++ = '\r';
        break;
      case 't':
        *o++ = '\t';
        break;
      case 'u': {
        long cp = hex4(p);
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(p + 2) - 0xDC00);
          p += 6;
        }
        if (cp == 0) return -1;
        o += put_utf8(o, cp);
        break;
      }
      default:
        *o++ = e;
        break; /* " \ / */
    }
  }
  *o = '\0';
  return (long)(o - buf);
}
