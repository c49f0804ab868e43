/* libFuzzer target: frames a plugin's child sends hookd (plugin_wire.c), split at every boundary
 * the input picks. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_wire.h"

/* Reads a payload the way hookd reads each kind (plugin_proc.c). A string
 * that comes back is NUL-terminated at its length, inside the payload. */
static void take_str(wire_rd *rd) {
  size_t n = 0;
  const char *s = plugin_wire_get_str(rd, &n);
  if (s && (s < rd->p || s + n >= rd->p + rd->len || s[n] != '\0')) abort();
  if (!s && n != 0) abort();
}

static void take(uint32_t type, wire_rd *rd) {
  int strings = type == WIRE_LOG ? 3 : type == WIRE_INIT_DONE ? 5 : 0;
  plugin_wire_get_u32(rd);
  if (type == WIRE_RESULT) {
    /* result, retry_after; message; flags, status; answer */
    plugin_wire_get_u32(rd);
    take_str(rd);
    plugin_wire_get_u32(rd);
    plugin_wire_get_u32(rd);
    take_str(rd);
  }
  for (int i = 0; i < strings; i++) take_str(rd);
  if (rd->off > rd->len) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  /* The first byte picks how the bytes arrive: in reads of that size. */
  size_t chunk = (size_t)data[0] % 64 + 1;
  data++;
  size--;
  int fds[2];
  if (pipe(fds) != 0) return 0;
  wire_buf b = {0};
  size_t off = 0, frames = 0;
  int broken = 0;
  while (off < size && !broken) {
    size_t n = size - off < chunk ? size - off : chunk;
    if (write(fds[1], data + off, n) != (ssize_t)n) break;
    off += n;
    if (plugin_wire_fill(&b, fds[0]) <= 0) break;
    uint32_t type;
    wire_rd rd;
    int k;
    while ((k = plugin_wire_next(&b, WIRE_MAX_FROM_CHILD, &type, &rd)) == 1) {
      if (rd.len > WIRE_MAX_FROM_CHILD) abort();
      take(type, &rd);
      frames++;
    }
    broken = k < 0;
  }
  /* Never more frames than headers fit in the input. */
  if (frames > size / WIRE_HEADER) abort();
  plugin_wire_buf_free(&b);
  close(fds[0]);
  close(fds[1]);
  return 0;
}
