/* libFuzzer target: template compile and render with every escaping.
 * Input: template text, a NUL, then the JSON envelope it renders against. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "template.h"

/* "{{path...}}" and nothing else, without the json filter (which inserts
 * JSON as it is, by design). */
static int single_ref(const char *t) {
  size_t n = strlen(t);
  if (n < 4 || strncmp(t, "{{", 2) != 0 || strcmp(t + n - 2, "}}") != 0) return 0;
  const char *in = t + 2;
  return !strstr(in, "{{") && strstr(in, "}}") == t + n - 2 && !strstr(t, "json");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *nul = memchr(data, 0, size);
  size_t tlen = nul ? (size_t)(nul - data) : size;
  char *text = malloc(tlen + 1);
  if (!text) return 0;
  memcpy(text, data, tlen);
  text[tlen] = '\0';
  cJSON *root = nul ? cJSON_ParseWithLength((const char *)nul + 1, size - tlen - 1) : NULL;
  char err[256] = "";
  hookd_template *t = template_compile(text, err, sizeof err);
  if (!t) {
    if (!err[0]) abort();
  } else {
    for (int esc = HOOKD_ESC_NONE; esc <= HOOKD_ESC_URL; esc++) {
      size_t len = 0;
      char *out = template_render(t, root, (hookd_escape)esc, &len);
      if (!out) abort();
      if (esc == HOOKD_ESC_HEADER && (memchr(out, '\r', len) || memchr(out, '\n', len))) abort();
      if (esc == HOOKD_ESC_JSON && single_ref(text)) {
        /* One value, JSON-escaped, is the inside of a valid JSON string. */
        char *q = malloc(len + 3);
        if (!q) abort();
        q[0] = '"';
        memcpy(q + 1, out, len);
        q[len + 1] = '"';
        q[len + 2] = '\0';
        cJSON *s = cJSON_ParseWithLength(q, len + 2);
        if (!s || !cJSON_IsString(s)) abort();
        cJSON_Delete(s);
        free(q);
      }
      free(out);
    }
    template_free(t);
  }
  cJSON_Delete(root);
  free(text);
  return 0;
}
