/* The frames hookd and a plugin's child process exchange: a header, fixed-width fields and
 * length-prefixed strings. */
#ifndef HOOKD_PLUGIN_WIRE_H
#define HOOKD_PLUGIN_WIRE_H

/*
 * Both ends are the same hookd binary (the child is hookd re-executed), so
 * integers travel in host byte order and the protocol needs no version. A
 * frame is an 8-byte header — payload length (u32) and type (u32) — and the
 * payload: u32 and u64 fields, and strings as a u32 length (0xffffffff for
 * NULL) followed by the bytes and a NUL, so a received string is used in
 * place.
 *
 * Channels (all SOCK_STREAM socketpairs, one frame after another):
 *   control (child fd 3): INIT →, ← INIT_DONE, EXIT →, ← LOG outside calls
 *   data channel i (child fd 4 + i, one per unit of concurrency):
 *     DELIVER →, ← LOG*, ← RESULT; one call at a time per channel.
 *
 * INIT       u32 uid, u32 gid, u32 switch_ids, u32 log_level, u32 concurrency,
 *            u32 timeout_ms; str instance, module, module path, key path
 *            ("plugins[2]"), config dir, config (JSON, ${...} resolved)
 * INIT_DONE  u32 status (WIRE_INIT_*), u32 1 when the config message needs
 *            no "init failed" prefix, u32 the plugin config's deprecated
 *            timeout_ms (0: none); str key path of an option's or getter's
 *            error, its message, the plugin's or the loader's message; str
 *            plugin name, version
 * DELIVER    u32 attempt, u32 timeout_ms, u64 received_ms; str id, type,
 *            source, order_key (may be NULL), content_type, body
 * RESULT     u32 hookd_result, u32 retry_after_ms; str message; u32 outcome
 *            flags, u32 the destination's status; str its answer (ABI 1.2)
 * LOG        u32 level; str event id, source (may be NULL); str message
 * EXIT       (empty): finish, run destroy, exit
 */

#include <stddef.h>
#include <stdint.h>

#define WIRE_HEADER 8
/* What hookd accepts from a child in one frame: a log line, an outcome or
 * an init report are far smaller. Anything bigger is a protocol error. */
#define WIRE_MAX_FROM_CHILD (64u * 1024u)
/* What a child accepts from hookd (an event body; max_body_bytes is far
 * below). */
#define WIRE_MAX_TO_CHILD (1u << 30)

typedef enum wire_type {
  WIRE_INIT = 1,
  WIRE_INIT_DONE = 2,
  WIRE_DELIVER = 3,
  WIRE_RESULT = 4,
  WIRE_LOG = 5,
  WIRE_EXIT = 6
} wire_type;

/* INIT_DONE status. */
#define WIRE_INIT_OK 0
#define WIRE_INIT_FAILED 1  /* init returned non-zero */
#define WIRE_INIT_IGNORED 2 /* init succeeded over a config error a getter recorded */
#define WIRE_INIT_LOAD 3    /* the module did not load (dlopen, entry, ABI) */
#define WIRE_INIT_SETUP 4   /* the child could not set itself up (user switch, memory) */

/* A frame being built. Zero it, then begin, add fields, end. */
typedef struct wire_out {
  char *p;
  size_t len, cap;
  int oom;
} wire_out;

void plugin_wire_begin(wire_out *w, wire_type type);
void plugin_wire_u32(wire_out *w, uint32_t v);
void plugin_wire_u64(wire_out *w, uint64_t v);
void plugin_wire_str(wire_out *w, const char *s); /* s may be NULL */
void plugin_wire_bytes(wire_out *w, const char *s, size_t n);
/* Writes the header. Returns 0, or -1 when memory ran out on the way. */
int plugin_wire_end(wire_out *w);
/* Frees the buffer when it grew past keep bytes (a big event body), so an
 * idle channel holds little. */
void plugin_wire_out_trim(wire_out *w, size_t keep);
void plugin_wire_out_free(wire_out *w);

/* A received payload being read. A read past the end, or a string without
 * its NUL, sets bad and returns 0 / NULL from then on. */
typedef struct wire_rd {
  const char *p;
  size_t len, off;
  int bad;
} wire_rd;

uint32_t plugin_wire_get_u32(wire_rd *r);
uint64_t plugin_wire_get_u64(wire_rd *r);
/* The string in place (NUL-terminated), its length in *len when len is not
 * NULL; NULL for a NULL string or when bad. */
const char *plugin_wire_get_str(wire_rd *r, size_t *len);

/* Bytes received on one channel, split into frames. Zero it to start. */
typedef struct wire_buf {
  char *p;
  size_t len, cap, start; /* start: where the next frame begins */
} wire_buf;

/* One read(2) into the buffer. Returns the bytes read, 0 at end of file,
 * -1 with errno (EAGAIN on a non-blocking fd with nothing to read). */
long plugin_wire_fill(wire_buf *b, int fd);
/* Takes the next complete frame: returns 1 with its type and payload (valid
 * until the next fill or next), 0 when more bytes are needed, -1 when the header
 * announces more than max bytes or memory ran out (a protocol error). */
int plugin_wire_next(wire_buf *b, size_t max, uint32_t *type, wire_rd *payload);
void plugin_wire_buf_trim(wire_buf *b, size_t keep);
void plugin_wire_buf_free(wire_buf *b);

/* Writes all n bytes to a blocking fd (EINTR retried). Returns 0 or -1. */
int plugin_wire_write_all(int fd, const char *p, size_t n);

#endif
