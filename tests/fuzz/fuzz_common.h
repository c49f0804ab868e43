/* Helpers shared by the libFuzzer targets: split an input into header values and a body. */
#ifndef HOOKD_FUZZ_COMMON_H
#define HOOKD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#define FUZZ_MAX_FIELDS 4

/* An input "A\nB\nC\nbody...": up to n_fields newline-terminated header
 * values, then the body (the rest, any bytes). Values are NUL-terminated
 * copies with CR and NUL dropped (llhttp lets neither into a value). */
typedef struct fuzz_req {
  const char *names[FUZZ_MAX_FIELDS];
  char values[FUZZ_MAX_FIELDS][1024];
  int present[FUZZ_MAX_FIELDS];
  size_t n;
  const char *body;
  size_t body_len;
} fuzz_req;

static inline void fuzz_req_split(fuzz_req *r, const uint8_t *data, size_t size, size_t n_fields) {
  size_t pos = 0;
  r->n = n_fields;
  for (size_t f = 0; f < n_fields; f++) {
    size_t o = 0;
    r->present[f] = pos < size;
    while (pos < size && data[pos] != '\n') {
      if (data[pos] != '\r' && data[pos] != '\0' && o < sizeof r->values[f] - 1)
        r->values[f][o++] = (char)data[pos];
      pos++;
    }
    r->values[f][o] = '\0';
    if (pos < size) pos++;
  }
  r->body = (const char *)data + pos;
  r->body_len = size - pos;
}

static inline const char *fuzz_header(void *ctx, const char *name, size_t *len) {
  fuzz_req *r = ctx;
  for (size_t i = 0; i < r->n; i++) {
    if (r->present[i] && r->names[i] && strcasecmp(r->names[i], name) == 0) {
      *len = strlen(r->values[i]);
      return r->values[i];
    }
  }
  return NULL;
}

static inline void fuzz_hex(const unsigned char *d, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[d[i] >> 4];
    out[2 * i + 1] = digits[d[i] & 15];
  }
  out[2 * n] = '\0';
}

#endif
