/* JSON with comments: load a .jsonc file, keep positions, name file:line:column and key path in
 * errors. */
#ifndef HOOKD_JSONC_H
#define HOOKD_JSONC_H

#include <stddef.h>
#include <cjson/cJSON.h>

/* A parsed document. Comments are blanked (replaced by spaces, newlines
 * kept), never removed, so offsets in `text` are offsets in the file. */
typedef struct jsonc_doc {
  char *name; /* file name as given, for messages */
  char *text; /* file contents with comments blanked, NUL-terminated */
  size_t len;
  cJSON *root; /* owned */
} jsonc_doc;

/* Reads and parses `path`. On failure returns -1 and writes
 * "FILE:LINE:COL: message" to err. */
int jsonc_load(jsonc_doc *doc, const char *path, char *err, size_t errlen);
/* Same for text in memory (name is used in messages). */
int jsonc_parse(jsonc_doc *doc, const char *name, const char *text, size_t len, char *err,
                size_t errlen);
void jsonc_free(jsonc_doc *doc);

/* Finds the position (1-based line and column) of the value at `keypath`
 * ("plugins[2].config.smtp_url", "" for the root) by walking the text. When
 * the exact value is not found, reports the position of the deepest parent
 * found. Returns 0 when the exact value was found, -1 otherwise. */
int jsonc_locate(const jsonc_doc *doc, const char *keypath, int *line, int *col);

/* Formats "FILE:LINE:COL: KEYPATH: message" into err (KEYPATH and ": " are
 * left out when keypath is empty). Returns -1 so callers can
 * `return jsonc_error(...)`. */
int jsonc_error(const jsonc_doc *doc, const char *keypath, char *err, size_t errlen,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The known key (NULL-terminated list) that an unknown `key` most likely
 * meant: one it is a cut-off start of (4 characters or more), or else the
 * nearest within two edits; NULL when none is close. For "did you mean". */
const char *jsonc_suggest(const char *key, const char *const *known);

/* Replaces ${NAME} (environment) and ${file:PATH} (file contents, one
 * trailing newline dropped; PATH relative to base_dir unless absolute) in
 * every string value under `node` (object keys untouched); `$${` stands for a
 * literal `${`. A missing variable or unreadable file is an error naming it,
 * at the string's position. Returns 0 or -1. */
int jsonc_substitute(const jsonc_doc *doc, cJSON *node, const char *keypath, const char *base_dir,
                     char *err, size_t errlen);

#endif
