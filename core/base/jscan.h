/* jscan: one pass over a JSON text that checks it and finds a few values by dotted path, without
 * building a tree. */
#ifndef HOOKD_JSCAN_H
#define HOOKD_JSCAN_H

#include <stddef.h>
#include <stdint.h>

/* Paths deeper than this, documents nested deeper than JSCAN_MAX_DEPTH, and
 * object keys written with escapes on a searched path are "not handled":
 * the caller falls back to a full parse. */
#define JSCAN_MAX_PATHS 4
#define JSCAN_MAX_SEGS 16
#define JSCAN_MAX_DEPTH 256

typedef enum {
  JSCAN_MISSING = 0,
  JSCAN_STRING,
  JSCAN_NUMBER,
  JSCAN_TRUE,
  JSCAN_FALSE,
  JSCAN_NULL,
  JSCAN_OBJECT,
  JSCAN_ARRAY
} jscan_kind;

/* A value found at a path. For a string, [start, start + len) is the text
 * between the quotes as written (escaped when `escaped`); for a number, the
 * number as written; for other kinds only `kind` is set. */
typedef struct jscan_value {
  jscan_kind kind;
  int escaped;
  const char *start;
  size_t len;
} jscan_value;

/* A dotted path split into segments ("data.id" -> "data", "id"). Segments
 * point into the string given to jscan_path_init, which must outlive it. */
typedef struct jscan_path {
  size_t n;
  const char *seg[JSCAN_MAX_SEGS];
  uint32_t seglen[JSCAN_MAX_SEGS];
  int64_t index[JSCAN_MAX_SEGS]; /* the segment as an array index, or -1 */
} jscan_path;

/* Returns 0, or -1 for a path jscan does not handle (empty, an empty
 * segment, too many segments). */
int jscan_path_init(jscan_path *p, const char *dotted);

/* Checks that text[0..len) is exactly one JSON value (RFC 8259, with
 * whitespace around it) whose top level is an object, and fills out[i] with
 * the value at paths[i]: the first member with that key wins, as in a cJSON
 * lookup. Returns 0, or -1 when the text is not strict JSON or is outside what
 * jscan handles (see above): then nothing is known and the caller parses
 * the text in full, which decides. Every text jscan accepts, cJSON accepts
 * with the same values at those paths. */
int jscan(const char *text, size_t len, const jscan_path *paths, size_t npaths, jscan_value *out);

/* Decodes a string value's escapes into buf (at least v->len + 1 bytes:
 * decoding never grows the text) and NUL-terminates it. Returns the length,
 * or -1 when the string holds \u0000 (cJSON would cut it there; the caller
 * falls back). */
long jscan_unescape(const jscan_value *v, char *buf);

#endif
