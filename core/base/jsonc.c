/* JSON with comments: blank comments, check syntax with exact positions, locate key paths,
 * substitute ${...}. */
#include "jsonc.h"
#include "hookd/helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A config file is small; the cap only stops a wrong path (a device, a log
 * file) from being read into memory whole. */
#define JSONC_MAX_FILE (16u << 20)
/* ${file:PATH} holds a secret or a short text, never a big file. */
#define JSONC_MAX_SUBST_FILE (1u << 20)
/* Below cJSON's own limit (1000), so that every document the scanner accepts
 * cJSON parses too, and the scanner's recursion stays shallow. */
#define JSONC_MAX_DEPTH 512

static const char utf8_bom[] = "\xEF\xBB\xBF";

/* ---- growable byte buffer ---- */

/* The SDK's growable buffer (helpers.h), with adds that say they failed. */
typedef hookd_buf sbuf;

static int sbuf_add(sbuf *b, const char *data, size_t n) {
  hookd_buf_add(b, data, n);
  return b->oom ? -1 : 0;
}

static void sbuf_cut(sbuf *b, size_t len) {
  b->len = len;
  if (b->p) b->p[len] = '\0';
}

/* ---- files ---- */

/* Reads a whole file (at most max bytes) into a NUL-terminated buffer.
 * Returns 0, or an errno value (EFBIG when larger than max). */
static int read_file(const char *path, size_t max, char **out, size_t *outlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    return EISDIR;
  }
  sbuf b = {0};
  char chunk[8192];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || b.len + (size_t)n > max || sbuf_add(&b, chunk, (size_t)n) != 0) {
      int e = n < 0 ? errno : b.len + (size_t)n > max ? EFBIG : ENOMEM;
      free(b.p);
      close(fd);
      return e;
    }
    if (n == 0) break;
  }
  close(fd);
  if (!b.p && sbuf_add(&b, "", 0) != 0) return ENOMEM;
  *out = b.p;
  *outlen = b.len;
  return 0;
}

/* ---- positions ---- */

/* Line and column (1-based) of a byte offset. Columns count characters, not
 * bytes, so they match what an editor shows for UTF-8 text. */
static void offset_to_linecol(const char *s, size_t len, size_t off, int *line, int *col) {
  int l = 1, c = 1;
  size_t i = 0;
  if (len >= 3 && memcmp(s, utf8_bom, 3) == 0) i = off < 3 ? off : 3;
  if (off > len) off = len;
  for (; i < off; i++) {
    if (s[i] == '\n') {
      l++;
      c = 1;
    } else if (((unsigned char)s[i] & 0xC0) != 0x80) {
      c++;
    }
  }
  *line = l;
  *col = c;
}

/* ---- comments ---- */

/* Replaces // and block comments with spaces, newlines kept, so that every
 * other byte keeps its offset and the positions cJSON and the scanner see are
 * the file's. Strings are skipped so "http://x" stays whole; a string is
 * taken to end at a line end so that an unterminated one cannot swallow the
 * comments below it (the scanner reports it). Returns 0, or -1 with the
 * offset of an unterminated block comment in *bad. */
static int blank_comments(char *s, size_t len, size_t *bad) {
  size_t i = 0;
  while (i < len) {
    if (s[i] == '"') {
      i++;
      while (i < len && s[i] != '"' && s[i] != '\n') {
        if (s[i] == '\\' && i + 1 < len && s[i + 1] != '\n') i++;
        i++;
      }
      i++;
    } else if (s[i] == '/' && i + 1 < len && s[i + 1] == '/') {
      while (i < len && s[i] != '\n') s[i++] = ' ';
    } else if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
      size_t start = i;
      s[i] = s[i + 1] = ' ';
      i += 2;
      while (i + 1 < len && !(s[i] == '*' && s[i + 1] == '/')) {
        if (s[i] != '\n') s[i] = ' ';
        i++;
      }
      if (i + 1 >= len) {
        *bad = start;
        return -1;
      }
      s[i] = s[i + 1] = ' ';
      i += 2;
    } else {
      i++;
    }
  }
  return 0;
}

/* ---- scanner ---- */

/* A strict JSON scanner over the blanked text. It has two uses: checking a
 * document before cJSON builds it (cJSON reports where it gave up, often the
 * end of the file for a trailing comma, and does not see duplicate keys), and
 * walking to a key path to find its position. */
typedef struct scanner {
  const char *s;
  size_t len;
  size_t pos;
  /* First error: its offset, message and the key path it concerns. */
  int failed;
  size_t err_pos;
  char msg[200];
  /* When set, objects are checked for duplicate keys and `path` follows the
   * key path of the value being scanned (for the duplicate-key message). */
  int check_dups;
  sbuf path;
  char *err_path;
  int oom;
} scanner;

static int sc_fail(scanner *sc, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int sc_fail(scanner *sc, size_t pos, const char *fmt, ...) {
  if (sc->failed) return -1;
  sc->failed = 1;
  sc->err_pos = pos;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sc->msg, sizeof sc->msg, fmt, ap);
  va_end(ap);
  if (sc->check_dups && sc->path.p) sc->err_path = strdup(sc->path.p);
  return -1;
}

static int sc_peek(const scanner *sc) {
  return sc->pos < sc->len ? (unsigned char)sc->s[sc->pos] : -1;
}

static void sc_ws(scanner *sc) {
  while (sc->pos < sc->len) {
    char ch = sc->s[sc->pos];
    if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') break;
    sc->pos++;
  }
}

static int is_alnum(int ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '_';
}

/* Describes what stands at the scanner's position, for "expected X, found Y". */
static void sc_found(const scanner *sc, char *out, size_t outlen) {
  int ch = sc_peek(sc);
  if (ch < 0) {
    snprintf(out, outlen, "end of file");
  } else if (ch == '"') {
    snprintf(out, outlen, "a string");
  } else if (is_alnum(ch)) {
    size_t n = 0;
    while (sc->pos + n < sc->len && n < 24 && is_alnum((unsigned char)sc->s[sc->pos + n])) n++;
    snprintf(out, outlen, "'%.*s'", (int)n, sc->s + sc->pos);
  } else if (ch >= 0x20 && ch < 0x7F) {
    snprintf(out, outlen, "'%c'", ch);
  } else {
    snprintf(out, outlen, "byte 0x%02x", (unsigned)ch);
  }
}

static int sc_expected(scanner *sc, const char *what) {
  char found[40];
  sc_found(sc, found, sizeof found);
  return sc_fail(sc, sc->pos, "expected %s, found %s", what, found);
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char ch = p[i];
    v <<= 4;
    if (ch >= '0' && ch <= '9')
      v |= (unsigned)(ch - '0');
    else if (ch >= 'a' && ch <= 'f')
      v |= (unsigned)(ch - 'a' + 10);
    else if (ch >= 'A' && ch <= 'F')
      v |= (unsigned)(ch - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

static int put_utf8(sbuf *b, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  return sbuf_add(b, u, n);
}

/* Scans a string at the position (a '"'). With out, decodes it into a
 * malloc'd UTF-8 string (the caller frees it). */
static int sc_string(scanner *sc, char **out) {
  size_t start = sc->pos;
  sbuf b = {0};
  int rc = -1;
  sc->pos++;
  for (;;) {
    int ch = sc_peek(sc);
    if (ch < 0 || ch == '\n' || ch == '\r') {
      sc_fail(sc, start, "unterminated string");
      goto done;
    }
    if (ch == '"') {
      sc->pos++;
      break;
    }
    if (ch < 0x20) {
      sc_fail(sc, sc->pos, "control character in string (write it as an escape, e.g. \\t)");
      goto done;
    }
    const char *run = sc->s + sc->pos;
    size_t runlen = 1;
    char esc_char[1];
    if (ch == '\\') {
      size_t at = sc->pos;
      int e = sc->pos + 1 < sc->len ? (unsigned char)sc->s[sc->pos + 1] : -1;
      char c1 = 0;
      switch (e) {
        case '"':
        case '\\':
        case '/':
          c1 = (char)e;
          break;
        case 'b':
          c1 = '\b';
          break;
        case 'f':
          c1 = '\f';
          break;
        case 'n':
          c1 = '\n';
          break;
        case 'r':
          c1 = '\r';
          break;
        case 't':
          c1 = '\t';
          break;
        default:
          break;
      }
      if (c1) {
        esc_char[0] = c1;
        run = esc_char;
        sc->pos += 2;
      } else if (e == 'u') {
        unsigned cp, lo;
        if (sc->pos + 6 > sc->len || hex4(sc->s + sc->pos + 2, &cp) != 0) {
          sc_fail(sc, at, "invalid \\u escape (expected 4 hex digits)");
          goto done;
        }
        sc->pos += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
          sc_fail(sc, at, "invalid \\u escape (unpaired surrogate)");
          goto done;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (sc->pos + 6 > sc->len || sc->s[sc->pos] != '\\' || sc->s[sc->pos + 1] != 'u' ||
              hex4(sc->s + sc->pos + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) {
            sc_fail(sc, at, "invalid \\u escape (unpaired surrogate)");
            goto done;
          }
          sc->pos += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        /* Strings become C strings: a NUL would cut a secret short
         * without a word. */
        if (cp == 0) {
          sc_fail(sc, at, "\\u0000 is not allowed in strings");
          goto done;
        }
        if (out && put_utf8(&b, cp) != 0) {
          sc->oom = 1;
          sc_fail(sc, at, "out of memory");
          goto done;
        }
        continue;
      } else if (e < 0 || e == '\n' || e == '\r') {
        sc_fail(sc, start, "unterminated string");
        goto done;
      } else {
        sc_fail(sc, at, "invalid escape '\\%c'", e >= 0x20 && e < 0x7F ? e : '?');
        goto done;
      }
    } else {
      sc->pos++;
    }
    if (out && sbuf_add(&b, run, runlen) != 0) {
      sc->oom = 1;
      sc_fail(sc, start, "out of memory");
      goto done;
    }
  }
  if (out) {
    if (!b.p && sbuf_add(&b, "", 0) != 0) {
      sc->oom = 1;
      sc_fail(sc, start, "out of memory");
      goto done;
    }
    *out = b.p;
    b.p = NULL;
  }
  rc = 0;
done:
  free(b.p);
  return rc;
}

static int is_digit(int ch) {
  return ch >= '0' && ch <= '9';
}

/* Strict JSON numbers: no leading zeros, digits on both sides of '.'. */
static int sc_number(scanner *sc) {
  size_t start = sc->pos;
  if (sc_peek(sc) == '-') sc->pos++;
  if (!is_digit(sc_peek(sc))) return sc_fail(sc, start, "invalid number");
  if (sc_peek(sc) == '0') {
    sc->pos++;
    if (is_digit(sc_peek(sc))) return sc_fail(sc, start, "invalid number (leading zero)");
  } else {
    while (is_digit(sc_peek(sc))) sc->pos++;
  }
  if (sc_peek(sc) == '.') {
    sc->pos++;
    if (!is_digit(sc_peek(sc))) return sc_fail(sc, start, "invalid number");
    while (is_digit(sc_peek(sc))) sc->pos++;
  }
  if (sc_peek(sc) == 'e' || sc_peek(sc) == 'E') {
    sc->pos++;
    if (sc_peek(sc) == '+' || sc_peek(sc) == '-') sc->pos++;
    if (!is_digit(sc_peek(sc))) return sc_fail(sc, start, "invalid number");
    while (is_digit(sc_peek(sc))) sc->pos++;
  }
  return 0;
}

static int sc_word(scanner *sc, const char *word) {
  size_t n = strlen(word);
  if (sc->len - sc->pos >= n && memcmp(sc->s + sc->pos, word, n) == 0 &&
      !(sc->pos + n < sc->len && is_alnum((unsigned char)sc->s[sc->pos + n]))) {
    sc->pos += n;
    return 1;
  }
  return 0;
}

static int sc_value(scanner *sc, int depth);

static int path_push(scanner *sc, const char *seg, size_t seglen, int index, size_t *mark) {
  *mark = sc->path.len;
  if (!sc->check_dups) return 0;
  char num[32];
  int rc;
  if (index >= 0) {
    snprintf(num, sizeof num, "[%d]", index);
    rc = sbuf_add(&sc->path, num, strlen(num));
  } else {
    rc = (sc->path.len ? sbuf_add(&sc->path, ".", 1) : 0) || sbuf_add(&sc->path, seg, seglen);
  }
  if (rc != 0) sc->oom = 1;
  return rc;
}

static int sc_object(scanner *sc, int depth) {
  char **keys = NULL;
  size_t *key_pos = NULL;
  size_t n_keys = 0, cap = 0;
  int rc = -1;
  sc->pos++;
  sc_ws(sc);
  if (sc_peek(sc) == '}') {
    sc->pos++;
    return 0;
  }
  for (;;) {
    sc_ws(sc);
    if (sc_peek(sc) != '"') {
      sc_expected(sc, "a key in double quotes");
      goto done;
    }
    size_t kpos = sc->pos;
    char *key = NULL;
    if (sc_string(sc, sc->check_dups ? &key : NULL) != 0) goto done;
    size_t mark = 0;
    if (sc->check_dups) {
      if (n_keys == cap) {
        size_t ncap = cap ? cap * 2 : 8;
        char **nk = realloc(keys, ncap * sizeof *nk);
        if (nk) keys = nk;
        size_t *np = nk ? realloc(key_pos, ncap * sizeof *np) : NULL;
        if (np) key_pos = np;
        if (!nk || !np) {
          free(key);
          sc->oom = 1;
          sc_fail(sc, kpos, "out of memory");
          goto done;
        }
        cap = ncap;
      }
      keys[n_keys] = key;
      key_pos[n_keys++] = kpos;
      if (path_push(sc, key, strlen(key), -1, &mark) != 0) {
        sc_fail(sc, kpos, "out of memory");
        goto done;
      }
      for (size_t i = 0; i + 1 < n_keys; i++) {
        if (strcmp(keys[i], key) == 0) {
          int line, col;
          offset_to_linecol(sc->s, sc->len, key_pos[i], &line, &col);
          sc_fail(sc, kpos, "duplicate key (first on line %d)", line);
          goto done;
        }
      }
    }
    sc_ws(sc);
    if (sc_peek(sc) != ':') {
      sc_expected(sc, "':' after the key");
      goto done;
    }
    sc->pos++;
    sc_ws(sc);
    if (sc_value(sc, depth + 1) != 0) goto done;
    sbuf_cut(&sc->path, mark);
    sc_ws(sc);
    if (sc_peek(sc) == ',') {
      size_t comma = sc->pos;
      sc->pos++;
      sc_ws(sc);
      if (sc_peek(sc) == '}') {
        sc_fail(sc, comma, "trailing comma before '}'");
        goto done;
      }
      continue;
    }
    if (sc_peek(sc) == '}') {
      sc->pos++;
      break;
    }
    sc_expected(sc, "',' or '}'");
    goto done;
  }
  rc = 0;
done:
  for (size_t i = 0; i < n_keys; i++) free(keys[i]);
  free(keys);
  free(key_pos);
  return rc;
}

static int sc_array(scanner *sc, int depth) {
  sc->pos++;
  sc_ws(sc);
  if (sc_peek(sc) == ']') {
    sc->pos++;
    return 0;
  }
  for (int i = 0;; i++) {
    size_t mark;
    sc_ws(sc);
    if (path_push(sc, NULL, 0, i, &mark) != 0) return sc_fail(sc, sc->pos, "out of memory");
    if (sc_value(sc, depth + 1) != 0) return -1;
    sbuf_cut(&sc->path, mark);
    sc_ws(sc);
    if (sc_peek(sc) == ',') {
      size_t comma = sc->pos;
      sc->pos++;
      sc_ws(sc);
      if (sc_peek(sc) == ']') return sc_fail(sc, comma, "trailing comma before ']'");
      continue;
    }
    if (sc_peek(sc) == ']') {
      sc->pos++;
      return 0;
    }
    return sc_expected(sc, "',' or ']'");
  }
}

static int sc_value(scanner *sc, int depth) {
  if (depth > JSONC_MAX_DEPTH)
    return sc_fail(sc, sc->pos, "nested deeper than %d levels", JSONC_MAX_DEPTH);
  int ch = sc_peek(sc);
  if (ch == '{') return sc_object(sc, depth);
  if (ch == '[') return sc_array(sc, depth);
  if (ch == '"') return sc_string(sc, NULL);
  if (ch == '-' || is_digit(ch)) return sc_number(sc);
  if (sc_word(sc, "true") || sc_word(sc, "false") || sc_word(sc, "null")) return 0;
  if (ch == '\'') return sc_fail(sc, sc->pos, "strings need double quotes");
  return sc_expected(sc, "a value");
}

/* The offset where the document's value starts: after a UTF-8 BOM (which
 * cJSON skips too) and whitespace. */
static void sc_start(scanner *sc, const char *s, size_t len) {
  memset(sc, 0, sizeof *sc);
  sc->s = s;
  sc->len = len;
  if (len >= 3 && memcmp(s, utf8_bom, 3) == 0) sc->pos = 3;
  sc_ws(sc);
}

/* ---- loading ---- */

static void doc_reset(jsonc_doc *doc) {
  free(doc->name);
  free(doc->text);
  cJSON_Delete(doc->root);
  memset(doc, 0, sizeof *doc);
}

static int doc_fail(jsonc_doc *doc, size_t off, const char *keypath, const char *msg, char *err,
                    size_t errlen) {
  int line, col;
  offset_to_linecol(doc->text, doc->len, off, &line, &col);
  if (err && errlen) {
    if (keypath && *keypath)
      snprintf(err, errlen, "%s:%d:%d: %s: %s", doc->name, line, col, keypath, msg);
    else
      snprintf(err, errlen, "%s:%d:%d: %s", doc->name, line, col, msg);
  }
  doc_reset(doc);
  return -1;
}

int jsonc_parse(jsonc_doc *doc, const char *name, const char *text, size_t len, char *err,
                size_t errlen) {
  memset(doc, 0, sizeof *doc);
  doc->name = strdup(name ? name : "");
  doc->text = malloc(len + 1);
  if (!doc->name || !doc->text) {
    if (err && errlen) snprintf(err, errlen, "%s: out of memory", name ? name : "");
    doc_reset(doc);
    return -1;
  }
  memcpy(doc->text, text, len);
  doc->text[len] = '\0';
  doc->len = len;

  /* cJSON reads C strings: a NUL would end the document early. */
  const char *nul = memchr(doc->text, '\0', len);
  if (nul) return doc_fail(doc, (size_t)(nul - doc->text), NULL, "NUL byte in file", err, errlen);

  size_t bad;
  if (blank_comments(doc->text, len, &bad) != 0)
    return doc_fail(doc, bad, NULL, "unterminated comment", err, errlen);

  scanner sc;
  sc_start(&sc, doc->text, len);
  sc.check_dups = 1;
  if (sc_value(&sc, 0) == 0) {
    sc_ws(&sc);
    if (sc.pos < sc.len) sc_expected(&sc, "end of file");
  }
  if (sc.failed) {
    int rc = doc_fail(doc, sc.err_pos, sc.err_path, sc.msg, err, errlen);
    free(sc.err_path);
    free(sc.path.p);
    return rc;
  }
  free(sc.path.p);

  /* The scanner accepted the text, so cJSON fails only when out of memory;
   * its error position is still the best we can name then. The length
   * includes the NUL: with require_null_terminated, cJSON looks for it. */
  const char *end = NULL;
  doc->root = cJSON_ParseWithLengthOpts(doc->text, len + 1, &end, 1);
  if (!doc->root) {
    size_t off = end && end >= doc->text && end <= doc->text + len ? (size_t)(end - doc->text) : 0;
    return doc_fail(doc, off, NULL, "invalid JSON", err, errlen);
  }
  return 0;
}

int jsonc_load(jsonc_doc *doc, const char *path, char *err, size_t errlen) {
  char *text = NULL;
  size_t len = 0;
  memset(doc, 0, sizeof *doc);
  int e = read_file(path, JSONC_MAX_FILE, &text, &len);
  if (e != 0) {
    if (err && errlen) {
      if (e == EFBIG)
        snprintf(err, errlen, "%s: larger than %u bytes", path, JSONC_MAX_FILE);
      else
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
    }
    return -1;
  }
  int rc = jsonc_parse(doc, path, text, len, err, errlen);
  free(text);
  return rc;
}

void jsonc_free(jsonc_doc *doc) {
  if (doc) doc_reset(doc);
}

/* ---- locating key paths ---- */

/* With the scanner at an object, moves it to the value of member `key`
 * (keylen bytes). Returns 0, or -1 when there is no such member. */
static int nav_member(scanner *sc, const char *key, size_t keylen) {
  if (sc_peek(sc) != '{') return -1;
  sc->pos++;
  sc_ws(sc);
  while (sc_peek(sc) == '"') {
    char *name = NULL;
    if (sc_string(sc, &name) != 0) return -1;
    int match = strlen(name) == keylen && memcmp(name, key, keylen) == 0;
    free(name);
    sc_ws(sc);
    if (sc_peek(sc) != ':') return -1;
    sc->pos++;
    sc_ws(sc);
    if (match) return 0;
    if (sc_value(sc, 0) != 0) return -1;
    sc_ws(sc);
    if (sc_peek(sc) != ',') return -1;
    sc->pos++;
    sc_ws(sc);
  }
  return -1;
}

static int nav_index(scanner *sc, unsigned long index) {
  if (sc_peek(sc) != '[') return -1;
  sc->pos++;
  sc_ws(sc);
  if (sc_peek(sc) == ']') return -1;
  for (unsigned long i = 0; i < index; i++) {
    if (sc_value(sc, 0) != 0) return -1;
    sc_ws(sc);
    if (sc_peek(sc) != ',') return -1;
    sc->pos++;
    sc_ws(sc);
  }
  return 0;
}

int jsonc_locate(const jsonc_doc *doc, const char *keypath, int *line, int *col) {
  *line = 1;
  *col = 1;
  if (!doc || !doc->text) return -1;
  scanner sc;
  sc_start(&sc, doc->text, doc->len);
  size_t best = sc.pos;
  const char *kp = keypath ? keypath : "";
  int found = 1;
  while (*kp) {
    size_t here = sc.pos;
    if (*kp == '[') {
      char *end;
      errno = 0;
      unsigned long index = strtoul(kp + 1, &end, 10);
      if (end == kp + 1 || *end != ']' || errno != 0 || nav_index(&sc, index) != 0) {
        found = 0;
        break;
      }
      kp = end + 1;
    } else {
      if (*kp == '.') kp++;
      /* A key may itself hold dots (the paths of a route's "when"), so when
       * the next segment alone is not a member, try it joined with the
       * segments after it. */
      size_t seglen = strcspn(kp, ".[");
      int ok = 0;
      for (;;) {
        sc.pos = here;
        if (nav_member(&sc, kp, seglen) == 0) {
          ok = 1;
          break;
        }
        if (kp[seglen] != '.') break;
        seglen += 1 + strcspn(kp + seglen + 1, ".[");
      }
      if (!ok) {
        found = 0;
        break;
      }
      kp += seglen;
    }
    best = sc.pos;
  }
  offset_to_linecol(doc->text, doc->len, best, line, col);
  return found ? 0 : -1;
}

int jsonc_error(const jsonc_doc *doc, const char *keypath, char *err, size_t errlen,
                const char *fmt, ...) {
  if (!err || !errlen) return -1;
  int line = 1, col = 1;
  jsonc_locate(doc, keypath, &line, &col);
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *name = doc && doc->name ? doc->name : "";
  if (keypath && *keypath)
    snprintf(err, errlen, "%s:%d:%d: %s: %s", name, line, col, keypath, msg);
  else
    snprintf(err, errlen, "%s:%d:%d: %s", name, line, col, msg);
  return -1;
}

/* ---- substitution ---- */

/* Environment variable names as POSIX shells write them; anything else in
 * ${...} is more likely a typo than a name. */
static int valid_env_name(const char *s, size_t n) {
  if (n == 0 || is_digit((unsigned char)s[0])) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_alnum((unsigned char)s[i])) return 0;
  return 1;
}

/* Appends the contents of ${file:PATH}. Returns 0 or -1 with msg set. */
static int subst_file(sbuf *out, const char *path, size_t pathlen, const char *base_dir, char *msg,
                      size_t msglen) {
  if (pathlen == 0) {
    snprintf(msg, msglen, "empty path in '${file:}'");
    return -1;
  }
  char *full = NULL;
  int n = path[0] == '/' || !base_dir || !*base_dir
              ? asprintf(&full, "%.*s", (int)pathlen, path)
              : asprintf(&full, "%s/%.*s", base_dir, (int)pathlen, path);
  if (n < 0) {
    snprintf(msg, msglen, "out of memory");
    return -1;
  }
  char *data = NULL;
  size_t len = 0;
  int e = read_file(full, JSONC_MAX_SUBST_FILE, &data, &len);
  free(full);
  if (e != 0) {
    if (e == EFBIG)
      snprintf(msg, msglen, "file '%.*s' (in '${file:...}') is larger than %u bytes", (int)pathlen,
               path, JSONC_MAX_SUBST_FILE);
    else
      snprintf(msg, msglen, "cannot read file '%.*s' (in '${file:...}'): %s", (int)pathlen, path,
               strerror(e));
    return -1;
  }
  if (memchr(data, '\0', len)) {
    free(data);
    snprintf(msg, msglen, "file '%.*s' (in '${file:...}') contains a NUL byte", (int)pathlen, path);
    return -1;
  }
  /* Editors end a file with a newline; a secret never does. */
  if (len > 0 && data[len - 1] == '\n') len--;
  if (len > 0 && data[len - 1] == '\r') len--;
  int rc = sbuf_add(out, data, len);
  free(data);
  if (rc != 0) snprintf(msg, msglen, "out of memory");
  return rc;
}

/* Expands one string value in place. Expanded text is not scanned again, so
 * an environment value holding "${file:...}" stays as it is. */
static int subst_string(const jsonc_doc *doc, cJSON *node, const char *keypath,
                        const char *base_dir, char *err, size_t errlen) {
  const char *in = node->valuestring;
  if (!in || !strchr(in, '$')) return 0;
  sbuf out = {0};
  char msg[512];
  const char *p = in;
  while (*p) {
    if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
      if (sbuf_add(&out, "${", 2) != 0) goto oom;
      p += 3;
    } else if (p[0] == '$' && p[1] == '{') {
      const char *name = p + 2;
      const char *close = strchr(name, '}');
      if (!close) {
        snprintf(msg, sizeof msg, "unterminated '${' (write '$${' for a literal '${')");
        goto fail;
      }
      size_t n = (size_t)(close - name);
      if (n >= 5 && memcmp(name, "file:", 5) == 0) {
        if (subst_file(&out, name + 5, n - 5, base_dir, msg, sizeof msg) != 0) goto fail;
      } else if (!valid_env_name(name, n)) {
        snprintf(msg, sizeof msg, "invalid '${%.*s}' (expected ${NAME} or ${file:PATH})", (int)n,
                 name);
        goto fail;
      } else {
        char var[256];
        if (n >= sizeof var) {
          snprintf(msg, sizeof msg, "environment variable name too long");
          goto fail;
        }
        memcpy(var, name, n);
        var[n] = '\0';
        const char *val = getenv(var);
        if (!val) {
          snprintf(msg, sizeof msg, "environment variable '%s' is not set", var);
          goto fail;
        }
        if (sbuf_add(&out, val, strlen(val)) != 0) goto oom;
      }
      p = close + 1;
    } else {
      if (sbuf_add(&out, p, 1) != 0) goto oom;
      p++;
    }
  }
  if (!out.p && sbuf_add(&out, "", 0) != 0) goto oom;
  if (!cJSON_SetValuestring(node, out.p)) goto oom;
  free(out.p);
  return 0;
oom:
  snprintf(msg, sizeof msg, "out of memory");
fail:
  free(out.p);
  return jsonc_error(doc, keypath, err, errlen, "%s", msg);
}

static int subst_walk(const jsonc_doc *doc, cJSON *node, sbuf *path, const char *base_dir,
                      char *err, size_t errlen) {
  if (cJSON_IsString(node))
    return subst_string(doc, node, path->p ? path->p : "", base_dir, err, errlen);
  if (!cJSON_IsObject(node) && !cJSON_IsArray(node)) return 0;
  int index = 0;
  for (cJSON *child = node->child; child; child = child->next, index++) {
    size_t mark = path->len;
    int rc;
    if (cJSON_IsArray(node)) {
      char num[32];
      snprintf(num, sizeof num, "[%d]", index);
      rc = sbuf_add(path, num, strlen(num));
    } else {
      const char *key = child->string ? child->string : "";
      rc = (path->len ? sbuf_add(path, ".", 1) : 0) || sbuf_add(path, key, strlen(key));
    }
    if (rc != 0) return jsonc_error(doc, path->p ? path->p : "", err, errlen, "out of memory");
    if (subst_walk(doc, child, path, base_dir, err, errlen) != 0) return -1;
    sbuf_cut(path, mark);
  }
  return 0;
}

int jsonc_substitute(const jsonc_doc *doc, cJSON *node, const char *keypath, const char *base_dir,
                     char *err, size_t errlen) {
  if (!node) return 0;
  sbuf path = {0};
  if (sbuf_add(&path, keypath ? keypath : "", keypath ? strlen(keypath) : 0) != 0)
    return jsonc_error(doc, keypath, err, errlen, "out of memory");
  int rc = subst_walk(doc, node, &path, base_dir, err, errlen);
  free(path.p);
  return rc;
}

/* Edit distance of two short strings (longer than 63 bytes: "far"). */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return 64;
  size_t row[64];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

const char *jsonc_suggest(const char *key, const char *const *known) {
  size_t klen = strlen(key), best = 3;
  const char *near = NULL;
  for (size_t i = 0; known[i] && klen >= 4; i++)
    if (strncmp(key, known[i], klen) == 0) return known[i];
  for (size_t i = 0; known[i]; i++) {
    size_t d = edit_distance(key, known[i]);
    if (d < best) {
      best = d;
      near = known[i];
    }
  }
  return near;
}
