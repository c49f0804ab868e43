/* Unit tests for keysched.c: per-key FIFOs, one running head per key, due times, eviction. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "keysched.h"

/* A delivery of a tiny event with order key `key` (NULL: unkeyed), accept
 * order seq, due at due_ms. */
static delivery *mk(const char *id, const char *key, uint64_t seq, int64_t due_ms) {
  event *ev = event_new("s", id, "t", key, "application/json", "{}", 2, NULL, 0);
  assert_non_null(ev);
  ev->seq = seq;
  delivery *d = delivery_new(ev, NULL);
  event_unref(ev);
  assert_non_null(d);
  d->due_ms = due_ms;
  return d;
}

static const char *take_id(keysched *ks, int64_t now) {
  int64_t next;
  delivery *d = keysched_take(ks, now, &next);
  return d ? d->ev->id : NULL;
}

/* One key: only its head runs, and only after it is done does the next. */
static void test_one_head_per_key(void **state) {
  (void)state;
  keysched *ks = keysched_new();
  delivery *a1 = mk("a1", "A", 1, 0), *a2 = mk("a2", "A", 2, 0), *b1 = mk("b1", "B", 3, 0);
  assert_int_equal(keysched_push(ks, a1), 0);
  assert_int_equal(keysched_push(ks, a2), 0);
  assert_int_equal(keysched_push(ks, b1), 0);
  assert_int_equal(keysched_count(ks), 3);
  assert_string_equal(take_id(ks, 10), "a1");
  assert_string_equal(take_id(ks, 10), "b1"); /* A is busy: B runs beside it */
  assert_null(take_id(ks, 10));              /* a2 waits behind a1 */
  keysched_done(ks, a1);
  delivery_free(a1);
  assert_string_equal(take_id(ks, 10), "a2");
  keysched_done(ks, a2);
  delivery_free(a2);
  keysched_done(ks, b1);
  delivery_free(b1);
  assert_int_equal(keysched_count(ks), 0);
  keysched_free(ks);
}

/* A retried head keeps its key: nothing behind it runs before it, and it
 * runs again at its due time; other keys are picked by due time, then
 * accept order. */
static void test_retry_holds_the_key(void **state) {
  (void)state;
  keysched *ks = keysched_new();
  delivery *a1 = mk("a1", "A", 1, 0), *a2 = mk("a2", "A", 2, 0), *c1 = mk("c1", "C", 4, 50),
           *b1 = mk("b1", "B", 3, 50);
  keysched_push(ks, a1);
  keysched_push(ks, a2);
  keysched_push(ks, c1);
  keysched_push(ks, b1);
  assert_string_equal(take_id(ks, 10), "a1");
  a1->due_ms = 100;
  keysched_again(ks, a1);
  int64_t next;
  assert_null(keysched_take(ks, 10, &next));
  assert_int_equal(next, 50);
  assert_string_equal(take_id(ks, 60), "b1"); /* same due as c1, accepted first */
  assert_string_equal(take_id(ks, 60), "c1");
  assert_null(keysched_take(ks, 60, &next));
  assert_int_equal(next, 100);
  assert_string_equal(take_id(ks, 100), "a1");
  keysched_done(ks, a1);
  delivery_free(a1);
  assert_string_equal(take_id(ks, 100), "a2");
  keysched_free(ks); /* frees a2, b1, c1 */
}

/* Unkeyed deliveries each run on their own. */
static void test_unkeyed_are_independent(void **state) {
  (void)state;
  keysched *ks = keysched_new();
  for (int i = 0; i < 3; i++) {
    char id[8];
    snprintf(id, sizeof id, "u%d", i);
    keysched_push(ks, mk(id, NULL, (uint64_t)i, 0));
  }
  assert_string_equal(take_id(ks, 0), "u0");
  assert_string_equal(take_id(ks, 0), "u1");
  assert_string_equal(take_id(ks, 0), "u2");
  keysched_free(ks);
}

/* Evicting a busy head takes its whole key out and hands back the rest in
 * order; the key may come back later, in order again. */
static void test_evict_key(void **state) {
  (void)state;
  keysched *ks = keysched_new();
  delivery *a1 = mk("a1", "A", 1, 0), *a2 = mk("a2", "A", 2, 0), *a3 = mk("a3", "A", 3, 0),
           *b1 = mk("b1", "B", 4, 0);
  keysched_push(ks, a1);
  keysched_push(ks, a2);
  keysched_push(ks, a3);
  keysched_push(ks, b1);
  assert_string_equal(take_id(ks, 0), "a1");
  delivery *rest = keysched_evict(ks, a1);
  assert_int_equal(keysched_count(ks), 1);
  assert_non_null(rest);
  assert_string_equal(rest->ev->id, "a2");
  assert_string_equal(rest->next->ev->id, "a3");
  assert_null(rest->next->next);
  assert_string_equal(take_id(ks, 0), "b1");
  /* back in id order */
  a1->next = NULL;
  keysched_push(ks, a1);
  while (rest) {
    delivery *n = rest->next;
    keysched_push(ks, rest);
    rest = n;
  }
  assert_string_equal(take_id(ks, 0), "a1");
  assert_null(take_id(ks, 0));
  keysched_free(ks);
}

/* Many keys: the table and the heap grow. */
static void test_many_keys(void **state) {
  (void)state;
  keysched *ks = keysched_new();
  for (int i = 0; i < 5000; i++) {
    char id[16], key[16];
    snprintf(id, sizeof id, "e%d", i);
    snprintf(key, sizeof key, "k%d", i % 1000);
    assert_int_equal(keysched_push(ks, mk(id, key, (uint64_t)i, 0)), 0);
  }
  int taken = 0;
  int64_t next;
  delivery *d;
  while ((d = keysched_take(ks, 0, &next)) != NULL) {
    /* the first of each key: e0..e999 */
    assert_true(strtol(d->ev->id + 1, NULL, 10) < 1000);
    taken++;
  }
  assert_int_equal(taken, 1000);
  keysched_free(ks);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_head_per_key),
      cmocka_unit_test(test_retry_holds_the_key),
      cmocka_unit_test(test_unkeyed_are_independent),
      cmocka_unit_test(test_evict_key),
      cmocka_unit_test(test_many_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
