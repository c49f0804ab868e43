/* Templates: {{path}}, {{path|default:TEXT}}, {{path|upper}}, {{path|json}}, rendered with an
 * escaping. */
#ifndef HOOKD_TEMPLATE_H
#define HOOKD_TEMPLATE_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "hookd/plugin.h"

/* struct hookd_template is defined in template.c: the compiled form (literal
 * pieces and value references with their filters), immutable after compile,
 * so one template may be rendered from many threads at once. */

/* Compiles text. Returns NULL and writes "column N: reason" into err on a
 * syntax error (unclosed {{, empty path, unknown filter). */
hookd_template *template_compile(const char *text, char *err, size_t errlen);
void template_free(hookd_template *t);

/* Renders against the envelope root (may be NULL: every value is missing).
 * A missing value renders empty (or the default filter's text). Filters
 * apply left to right: "upper" upper-cases ASCII, "json" inserts the value as
 * JSON (strings quoted), "lower" lower-cases, "default:TEXT" replaces a
 * missing or empty value. Escaping applies to inserted values; with
 * HOOKD_ESC_HEADER also to the literal text. Returns a malloc'd string, its
 * length in *len when len is not NULL; NULL only when out of memory. */
char *template_render(const hookd_template *t, const cJSON *root, hookd_escape esc, size_t *len);

/* True when the template has no {{ }} references (plain text). */
int template_is_literal(const hookd_template *t);

#endif
