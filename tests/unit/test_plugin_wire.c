/* Unit tests for plugin_wire.c: frames built, split across reads, read back, and refused when
 * malformed. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "plugin_wire.h"

static void build_deliver(wire_out *w, const char *body, size_t body_len) {
  plugin_wire_begin(w, WIRE_DELIVER);
  plugin_wire_u32(w, 3);
  plugin_wire_u32(w, 30000);
  plugin_wire_u64(w, 1767225600123ull);
  plugin_wire_str(w, "evt-1");
  plugin_wire_str(w, "scheduling.smartscheduler.scheduled");
  plugin_wire_str(w, "cirrus");
  plugin_wire_str(w, NULL);
  plugin_wire_str(w, "");
  plugin_wire_bytes(w, body, body_len);
  assert_int_equal(plugin_wire_end(w), 0);
}

static void check_deliver(wire_rd *rd, const char *body, size_t body_len) {
  assert_int_equal(plugin_wire_get_u32(rd), 3);
  assert_int_equal(plugin_wire_get_u32(rd), 30000);
  assert_true(plugin_wire_get_u64(rd) == 1767225600123ull);
  assert_string_equal(plugin_wire_get_str(rd, NULL), "evt-1");
  assert_string_equal(plugin_wire_get_str(rd, NULL), "scheduling.smartscheduler.scheduled");
  assert_string_equal(plugin_wire_get_str(rd, NULL), "cirrus");
  assert_null(plugin_wire_get_str(rd, NULL)); /* NULL travels as NULL */
  size_t n = 99;
  assert_string_equal(plugin_wire_get_str(rd, &n), "");
  assert_int_equal(n, 0);
  const char *b = plugin_wire_get_str(rd, &n);
  assert_int_equal(n, body_len);
  assert_memory_equal(b, body, body_len);
  assert_int_equal(b[n], '\0');
  assert_false(rd->bad);
  assert_int_equal(rd->off, rd->len);
}

/* A frame written in pieces of every size arrives whole, with bytes that
 * hold NULs intact. */
static void test_frames_split_across_reads(void **state) {
  (void)state;
  char body[3000];
  for (size_t i = 0; i < sizeof body; i++) body[i] = (char)(i % 251);
  wire_out w = {0};
  build_deliver(&w, body, sizeof body);
  for (size_t chunk = 1; chunk <= w.len; chunk = chunk * 3 + 1) {
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    wire_buf b = {0};
    uint32_t type = 0;
    wire_rd rd;
    int got = 0;
    for (size_t off = 0; off < w.len; off += chunk) {
      size_t n = w.len - off < chunk ? w.len - off : chunk;
      assert_int_equal(write(sv[1], w.p + off, n), (ssize_t)n);
      while (plugin_wire_fill(&b, sv[0]) > 0) {
      }
      int k = plugin_wire_next(&b, WIRE_MAX_TO_CHILD, &type, &rd);
      assert_true(k >= 0);
      if (k == 1) {
        assert_int_equal(off + n, w.len); /* not before the last byte */
        got = 1;
      }
    }
    assert_true(got);
    assert_int_equal(type, WIRE_DELIVER);
    check_deliver(&rd, body, sizeof body);
    assert_int_equal(plugin_wire_next(&b, WIRE_MAX_TO_CHILD, &type, &rd), 0);
    plugin_wire_buf_free(&b);
    close(sv[0]);
    close(sv[1]);
  }
  plugin_wire_out_free(&w);
}

/* Several frames in one read come out one by one. */
static void test_back_to_back_frames(void **state) {
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  wire_out w = {0};
  for (uint32_t i = 0; i < 5; i++) {
    plugin_wire_begin(&w, WIRE_LOG);
    plugin_wire_u32(&w, i);
    plugin_wire_str(&w, "e");
    plugin_wire_str(&w, NULL);
    plugin_wire_str(&w, "message");
    assert_int_equal(plugin_wire_end(&w), 0);
    assert_int_equal(plugin_wire_write_all(sv[1], w.p, w.len), 0);
  }
  close(sv[1]);
  wire_buf b = {0};
  uint32_t type, seen = 0;
  wire_rd rd;
  for (;;) {
    int k;
    while ((k = plugin_wire_next(&b, WIRE_MAX_FROM_CHILD, &type, &rd)) == 1) {
      assert_int_equal(type, WIRE_LOG);
      assert_int_equal(plugin_wire_get_u32(&rd), seen++);
    }
    assert_int_equal(k, 0);
    if (plugin_wire_fill(&b, sv[0]) <= 0) break;
  }
  assert_int_equal(seen, 5);
  plugin_wire_buf_free(&b);
  plugin_wire_out_free(&w);
  close(sv[0]);
}

/* A header announcing more than the limit is refused before anything is
 * buffered for it; a payload read past its end is marked bad. */
static void test_malformed_frames(void **state) {
  (void)state;
  wire_buf b = {0};
  uint32_t hdr[2] = {WIRE_MAX_FROM_CHILD + 1, WIRE_RESULT};
  b.p = malloc(64);
  b.cap = 64;
  memcpy(b.p, hdr, sizeof hdr);
  b.len = sizeof hdr;
  uint32_t type;
  wire_rd rd;
  assert_int_equal(plugin_wire_next(&b, WIRE_MAX_FROM_CHILD, &type, &rd), -1);
  plugin_wire_buf_free(&b);

  /* A RESULT cut short: the string length points past the end. */
  char payload[12];
  uint32_t fields[3] = {0, 0, 1000};
  memcpy(payload, fields, sizeof fields);
  wire_rd r = {payload, sizeof payload, 0, 0};
  assert_int_equal(plugin_wire_get_u32(&r), 0);
  assert_int_equal(plugin_wire_get_u32(&r), 0);
  assert_null(plugin_wire_get_str(&r, NULL));
  assert_true(r.bad);
  assert_int_equal(plugin_wire_get_u32(&r), 0); /* stays bad */

  /* A string without its NUL. */
  char nonul[8];
  uint32_t len = 3;
  memcpy(nonul, &len, 4);
  memcpy(nonul + 4, "abcd", 4);
  wire_rd r2 = {nonul, sizeof nonul, 0, 0};
  assert_null(plugin_wire_get_str(&r2, NULL));
  assert_true(r2.bad);
}

/* Big buffers are given back after use; small ones are kept. */
static void test_trim(void **state) {
  (void)state;
  wire_out w = {0};
  char *big = calloc(1, 200000);
  build_deliver(&w, big, 200000);
  plugin_wire_out_trim(&w, 64 * 1024);
  assert_null(w.p);
  build_deliver(&w, "x", 1);
  plugin_wire_out_trim(&w, 64 * 1024);
  assert_non_null(w.p);
  plugin_wire_out_free(&w);
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_frames_split_across_reads),
      cmocka_unit_test(test_back_to_back_frames),
      cmocka_unit_test(test_malformed_frames),
      cmocka_unit_test(test_trim),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
