/* Unit tests for lane.c: the owner, its wake, detach and settings of both spools' lanes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "lane.h"

/* What a wake callback was last called with. */
typedef struct woken {
  int calls;
  size_t n;
} woken;

/* A lane of a spool, and two owners (queues) with their wakes. */
typedef struct fixture {
  spool sp;
  lane_base b;
  int q1, q2;
  woken w1, w2;
} fixture;

static void on_wake(void *data, size_t n) {
  woken *w = data;
  w->calls++;
  w->n = n;
}

static int setup(void **state) {
  static const spool_lane_config cfg = {.max_pending = 10, .max_crashes = 3};
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL || lane_base_init(&f->b, &f->sp, "crm", &cfg) != 0) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  lane_base_destroy(&f->b);
  free(f);
  return 0;
}

static void test_init(void **state) {
  fixture *f = *state;
  assert_string_equal(f->b.name, "crm");
  assert_ptr_equal(f->b.iface.sp, &f->sp);
  assert_int_equal(f->b.cfg.max_pending, 10);
  assert_null(f->b.owner);
}

/* The SQLite way: the old owner and the new one are woken with SIZE_MAX. */
static void test_own_wakes_both(void **state) {
  fixture *f = *state;
  lane_base_own(&f->b, &f->q1, on_wake, &f->w1, 1);
  assert_int_equal(f->w1.calls, 1);
  lane_base_own(&f->b, &f->q2, on_wake, &f->w2, 1);
  assert_ptr_equal(f->b.owner, &f->q2);
  assert_int_equal(f->w1.calls, 2);
  assert_int_equal(f->w1.n, SIZE_MAX);
  assert_int_equal(f->w2.calls, 1);
  assert_int_equal(f->w2.n, SIZE_MAX);
}

/* The PostgreSQL way: the owner changes and nobody is woken; wake_all
 * wakes the owner of now. */
static void test_own_quietly(void **state) {
  fixture *f = *state;
  lane_base_own(&f->b, &f->q1, on_wake, &f->w1, 0);
  lane_base_own(&f->b, &f->q2, on_wake, &f->w2, 0);
  assert_ptr_equal(f->b.wake_data, &f->w2);
  assert_int_equal(f->w1.calls + f->w2.calls, 0);
  lane_base_wake_all(&f->b);
  assert_int_equal(f->w1.calls, 0);
  assert_int_equal(f->w2.calls, 1);
  assert_int_equal(f->w2.n, SIZE_MAX);
}

/* Only the owner detaches itself; then waking does nothing. */
static void test_detach(void **state) {
  fixture *f = *state;
  lane_base_own(&f->b, &f->q1, on_wake, &f->w1, 0);
  lane_base_detach(&f->b.iface, &f->q2);
  assert_ptr_equal(f->b.owner, &f->q1);
  lane_base_detach(&f->b.iface, &f->q1);
  assert_null(f->b.owner);
  assert_null(f->b.wake);
  assert_null(f->b.wake_data);
  lane_base_wake_all(&f->b);
  assert_int_equal(f->w1.calls, 0);
}

static void test_config(void **state) {
  fixture *f = *state;
  spool_lane_config c = {.max_pending = 7, .max_crashes = 1};
  lane_base_config(&f->b.iface, &c);
  assert_int_equal(f->b.cfg.max_pending, 7);
  assert_int_equal(f->b.cfg.max_crashes, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_init, setup, teardown),
      cmocka_unit_test_setup_teardown(test_own_wakes_both, setup, teardown),
      cmocka_unit_test_setup_teardown(test_own_quietly, setup, teardown),
      cmocka_unit_test_setup_teardown(test_detach, setup, teardown),
      cmocka_unit_test_setup_teardown(test_config, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
