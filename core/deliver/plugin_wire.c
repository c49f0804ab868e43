/* Frames between hookd and a plugin's child process: building, splitting and reading them. */
#include "plugin_wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WIRE_NULL_STR 0xffffffffu

static void reserve(wire_out *w, size_t more) {
  if (w->oom || w->cap - w->len >= more) return;
  size_t ncap = w->cap ? w->cap : 256;
  while (ncap - w->len < more) {
    if (ncap > SIZE_MAX / 2) {
      w->oom = 1;
      return;
    }
    ncap *= 2;
  }
  char *np = realloc(w->p, ncap);
  if (np == NULL) {
    w->oom = 1;
    return;
  }
  w->p = np;
  w->cap = ncap;
}

static void put(wire_out *w, const void *src, size_t n) {
  reserve(w, n);
  if (w->oom) return;
  memcpy(w->p + w->len, src, n);
  w->len += n;
}

void plugin_wire_begin(wire_out *w, wire_type type) {
  w->len = 0;
  w->oom = 0;
  uint32_t hdr[2] = {0, (uint32_t)type};
  put(w, hdr, sizeof hdr);
}

void plugin_wire_u32(wire_out *w, uint32_t v) {
  put(w, &v, sizeof v);
}

void plugin_wire_u64(wire_out *w, uint64_t v) {
  put(w, &v, sizeof v);
}

void plugin_wire_bytes(wire_out *w, const char *s, size_t n) {
  if (n >= WIRE_NULL_STR) {
    w->oom = 1; /* cannot be framed; never happens below WIRE_MAX_TO_CHILD */
    return;
  }
  uint32_t len = (uint32_t)n;
  put(w, &len, sizeof len);
  if (n) put(w, s, n);
  put(w, "", 1);
}

void plugin_wire_str(wire_out *w, const char *s) {
  if (s == NULL) {
    plugin_wire_u32(w, WIRE_NULL_STR);
    return;
  }
  plugin_wire_bytes(w, s, strlen(s));
}

int plugin_wire_end(wire_out *w) {
  if (w->oom || w->len < WIRE_HEADER || w->len - WIRE_HEADER > UINT32_MAX) return -1;
  uint32_t plen = (uint32_t)(w->len - WIRE_HEADER);
  memcpy(w->p, &plen, sizeof plen);
  return 0;
}

void plugin_wire_out_trim(wire_out *w, size_t keep) {
  if (w->cap > keep) plugin_wire_out_free(w);
}

void plugin_wire_out_free(wire_out *w) {
  free(w->p);
  memset(w, 0, sizeof *w);
}

static const char *take(wire_rd *r, size_t n) {
  if (r->bad || r->len - r->off < n) {
    r->bad = 1;
    return NULL;
  }
  const char *at = r->p + r->off;
  r->off += n;
  return at;
}

uint32_t plugin_wire_get_u32(wire_rd *r) {
  uint32_t v = 0;
  const char *at = take(r, sizeof v);
  if (at) memcpy(&v, at, sizeof v);
  return v;
}

uint64_t plugin_wire_get_u64(wire_rd *r) {
  uint64_t v = 0;
  const char *at = take(r, sizeof v);
  if (at) memcpy(&v, at, sizeof v);
  return v;
}

const char *plugin_wire_get_str(wire_rd *r, size_t *len) {
  uint32_t n = plugin_wire_get_u32(r);
  if (len) *len = 0;
  if (r->bad || n == WIRE_NULL_STR) return NULL;
  const char *s = take(r, (size_t)n + 1);
  if (s == NULL || s[n] != '\0') {
    r->bad = 1;
    return NULL;
  }
  if (len) *len = n;
  return s;
}

/* Makes room for at least `need` more bytes after len, moving the unread
 * part to the front first. */
static int room(wire_buf *b, size_t need) {
  if (b->start == b->len) {
    b->start = b->len = 0;
  } else if (b->start > 0 && b->cap - b->len < need) {
    memmove(b->p, b->p + b->start, b->len - b->start);
    b->len -= b->start;
    b->start = 0;
  }
  if (b->cap - b->len >= need) return 0;
  size_t ncap = b->cap ? b->cap : 4096;
  while (ncap - b->len < need) ncap *= 2;
  char *np = realloc(b->p, ncap);
  if (np == NULL) return -1;
  b->p = np;
  b->cap = ncap;
  return 0;
}

long plugin_wire_fill(wire_buf *b, int fd) {
  if (room(b, 4096) != 0) {
    errno = ENOMEM;
    return -1;
  }
  for (;;) {
    ssize_t n = read(fd, b->p + b->len, b->cap - b->len);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) b->len += (size_t)n;
    return (long)n;
  }
}

int plugin_wire_next(wire_buf *b, size_t max, uint32_t *type, wire_rd *payload) {
  size_t have = b->len - b->start;
  if (have < WIRE_HEADER) return 0;
  uint32_t hdr[2];
  memcpy(hdr, b->p + b->start, sizeof hdr);
  if (hdr[0] > max) return -1;
  if (have < WIRE_HEADER + (size_t)hdr[0]) {
    /* Room for the whole frame, so the next fills complete it. */
    return room(b, WIRE_HEADER + (size_t)hdr[0] - have) == 0 ? 0 : -1;
  }
  *type = hdr[1];
  payload->p = b->p + b->start + WIRE_HEADER;
  payload->len = hdr[0];
  payload->off = 0;
  payload->bad = 0;
  b->start += WIRE_HEADER + (size_t)hdr[0];
  return 1;
}

void plugin_wire_buf_trim(wire_buf *b, size_t keep) {
  if (b->cap > keep && b->start == b->len) plugin_wire_buf_free(b);
}

void plugin_wire_buf_free(wire_buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

int plugin_wire_write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}
