/* Unit tests for pace.c: the token bucket's spacing, a destination's hold, the circuit breaker's
 * open / probe / close cycle and the instance states, on a clock the test sets. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "config.h"
#include "event.h"
#include "log.h"
#include "pace.h"

/* What the fake lane hands out: a delivery when `have` is set. */
static delivery fake;
static int have = 1;
static int claims; /* times the lane was asked */

static delivery *claim_fake(void *arg, int64_t *next_ms) {
  (void)arg;
  claims++;
  *next_ms = INT64_MAX;
  return have ? &fake : NULL;
}

static config_delivery settings(uint32_t rate, uint32_t period, uint32_t failures,
                                uint64_t cooldown) {
  config_delivery c;
  memset(&c, 0, sizeof c);
  c.rate_count = rate;
  c.rate_period_ms = period;
  c.breaker_failures = failures;
  c.breaker_cooldown_ms = cooldown;
  return c;
}

/* Claims at now; returns 1 when a delivery came, with *next the time to
 * look again when not. */
static int try_claim(pace *p, int64_t now, int64_t *next, int *probe) {
  int64_t n = 0;
  delivery *d = pace_claim(p, now, claim_fake, NULL, &n, probe);
  if (next) *next = n;
  return d != NULL;
}

static void test_one_pace_per_name(void **state) {
  (void)state;
  pace *a = pace_get("same-name"), *b = pace_get("same-name"), *c = pace_get("other-name");
  assert_non_null(a);
  assert_ptr_equal(a, b);
  assert_ptr_not_equal(a, c);
}

static void test_rate_spaces_starts_evenly(void **state) {
  (void)state;
  pace *p = pace_get("rate");
  config_delivery c = settings(2, 1000, 0, 1000); /* 2/s: one every 500 ms */
  pace_configure(p, &c);
  int64_t next;
  int probe;
  assert_true(try_claim(p, 10000, &next, &probe));
  assert_false(probe);
  claims = 0;
  assert_false(try_claim(p, 10100, &next, &probe));
  assert_int_equal(next, 10500);
  assert_int_equal(claims, 0); /* held: the lane was not even asked */
  assert_true(try_claim(p, 10500, &next, &probe));
  /* Nothing to claim: no token is used up. */
  have = 0;
  assert_false(try_claim(p, 11000, &next, &probe));
  assert_int_equal(next, INT64_MAX);
  have = 1;
  assert_true(try_claim(p, 11000, &next, &probe));
  assert_false(try_claim(p, 11499, &next, &probe));
  assert_int_equal(next, 11500);
  /* Idle for a while: no burst, one start and the spacing again. */
  assert_true(try_claim(p, 60000, &next, &probe));
  assert_false(try_claim(p, 60001, &next, &probe));
  /* "3/h": 20 minutes apart. */
  c = settings(3, 3600000, 0, 1000);
  pace_configure(p, &c);
  assert_true(try_claim(p, 100000000, &next, &probe));
  assert_false(try_claim(p, 100000001, &next, &probe));
  assert_int_equal(next, 100000000 + 1200000);
}

static void test_too_many_requests_holds_everything(void **state) {
  (void)state;
  pace *p = pace_get("hold");
  config_delivery c = settings(0, 1000, 5, 1000);
  pace_configure(p, &c);
  int64_t next;
  int probe;
  assert_true(try_claim(p, 5000, &next, &probe));
  int rc = pace_report(p, 0, PACE_RATE_LIMITED, 6000, "HTTP 429", 5000);
  assert_true(rc & PACE_ABSORB);
  assert_false(try_claim(p, 5001, &next, &probe));
  assert_int_equal(next, 6000);
  assert_true(try_claim(p, 6000, &next, &probe));
  /* A later, shorter hold does not cut a longer one short. */
  pace_report(p, 0, PACE_RATE_LIMITED, 9000, "HTTP 429", 6000);
  pace_report(p, 0, PACE_RATE_LIMITED, 7000, "HTTP 429", 6000);
  assert_false(try_claim(p, 8000, &next, &probe));
  assert_int_equal(next, 9000);
  pace_info info;
  pace_get_info(p, &info);
  assert_int_equal(info.holds, 3);
  assert_int_equal(info.absorbed, 3);
  assert_int_equal(info.failures, 0); /* no breaker failure */
}

static void test_breaker_opens_probes_and_closes(void **state) {
  (void)state;
  pace *p = pace_get("breaker");
  config_delivery c = settings(0, 1000, 3, 300);
  pace_configure(p, &c);
  int64_t next;
  int probe;
  /* Two failures are ordinary failed attempts; a success resets the count. */
  assert_int_equal(pace_report(p, 0, PACE_FAILURE, 0, "HTTP 503", 1000), 0);
  assert_int_equal(pace_report(p, 0, PACE_FAILURE, 0, "HTTP 503", 1000), 0);
  assert_int_equal(pace_report(p, 0, PACE_SUCCESS, 0, NULL, 1000), 0);
  assert_int_equal(pace_report(p, 0, PACE_FAILURE, 0, "HTTP 503", 1000), 0);
  assert_int_equal(pace_report(p, 0, PACE_FAILURE, 0, "HTTP 503", 1000), 0);
  /* The third in a row opens the circuit: that attempt is not used up. */
  assert_int_equal(pace_report(p, 0, PACE_FAILURE, 0, "HTTP 503", 1000), PACE_ABSORB | PACE_OPENED);
  assert_int_equal(pace_observe(p, 0, 0, 1000), PACE_OPEN);
  /* A call that was running when it opened uses no attempt either. */
  assert_int_equal(pace_report(p, 0, PACE_FAILURE, 0, "HTTP 503", 1010), PACE_ABSORB);
  assert_false(try_claim(p, 1100, &next, &probe));
  assert_int_equal(next, 1300);
  /* The cooldown passed: one probe, and nobody else meanwhile. */
  assert_true(try_claim(p, 1300, &next, &probe));
  assert_true(probe);
  assert_false(try_claim(p, 1301, &next, &probe));
  assert_int_equal(next, INT64_MAX);
  /* A failed probe uses no attempt and waits another cooldown. */
  assert_int_equal(pace_report(p, 1, PACE_FAILURE, 0, "HTTP 503", 1350),
                   PACE_ABSORB | PACE_WAKE | PACE_OPENED);
  assert_false(try_claim(p, 1400, &next, &probe));
  assert_int_equal(next, 1650);
  assert_true(try_claim(p, 1650, &next, &probe));
  assert_true(probe);
  /* The probe gets through: closed, everyone may go. */
  assert_int_equal(pace_report(p, 1, PACE_SUCCESS, 0, NULL, 1700), PACE_WAKE | PACE_CLOSED);
  assert_true(try_claim(p, 1700, &next, &probe));
  assert_false(probe);
  assert_true(try_claim(p, 1700, &next, &probe));
  assert_int_equal(pace_observe(p, 0, 0, 1700), PACE_OK);
  pace_info info;
  pace_get_info(p, &info);
  assert_int_equal(info.opens, 1);
  assert_false(info.open);
}

static void test_probe_not_run_and_permanent_answers(void **state) {
  (void)state;
  pace *p = pace_get("probe-not-run");
  config_delivery c = settings(0, 1000, 1, 100);
  pace_configure(p, &c);
  int64_t next;
  int probe;
  assert_int_equal(pace_report(p, 0, PACE_FAILURE, 0, "down", 0), PACE_ABSORB | PACE_OPENED);
  assert_true(try_claim(p, 100, &next, &probe));
  assert_true(probe);
  /* The probe was not attempted after all (the plugin's process restarts):
   * the next claim may probe. */
  assert_int_equal(pace_report(p, 1, PACE_NO_ATTEMPT, 0, NULL, 110), PACE_WAKE);
  assert_true(try_claim(p, 110, &next, &probe));
  assert_true(probe);
  /* A permanent failure is an answer: the destination is up. */
  assert_int_equal(pace_report(p, 1, PACE_ANSWERED, 0, NULL, 120), PACE_WAKE | PACE_CLOSED);
  assert_true(try_claim(p, 120, &next, &probe));
  assert_false(probe);
  /* No breaker: failures never open anything. */
  c = settings(0, 1000, 0, 100);
  pace_configure(p, &c);
  for (int i = 0; i < 50; i++) assert_int_equal(pace_report(p, 0, PACE_FAILURE, 0, "x", 200), 0);
  assert_true(try_claim(p, 200, &next, &probe));
}

/* What other nodes stored (a shared spool): their circuit opens this one,
 * their probe holds this one's back, their close closes it, their hold
 * holds it. */
static void test_remote_circuit_and_hold(void **state) {
  (void)state;
  pace *p = pace_get("remote");
  config_delivery c = settings(0, 1000, 5, 300);
  pace_configure(p, &c);
  int64_t next;
  int probe;
  /* Nothing stored: nothing changes. */
  assert_int_equal(pace_hold_remote(p, 0, 0, 1000), 0);
  assert_true(try_claim(p, 1000, &next, &probe));
  assert_false(probe);
  /* Another node opened it until 1300: held here without a failure. */
  assert_int_equal(pace_hold_remote(p, 1300, 0, 1000), 0);
  assert_int_equal(pace_observe(p, 0, 0, 1000), PACE_OPEN);
  assert_false(try_claim(p, 1100, &next, &probe));
  assert_int_equal(next, 1300);
  /* The same value again is no news. */
  assert_int_equal(pace_hold_remote(p, 1300, 0, 1100), 0);
  /* Due: this node's probe goes to another node, which probes until 1600. */
  assert_true(try_claim(p, 1300, &next, &probe));
  assert_true(probe);
  assert_int_equal(pace_probe_lost(p, 1600, 1300), 0);
  assert_false(try_claim(p, 1310, &next, &probe));
  assert_int_equal(next, 1600);
  /* A later time stored (that probe failed) moves the next probe. */
  assert_int_equal(pace_hold_remote(p, 1900, 0, 1400), 0);
  assert_false(try_claim(p, 1700, &next, &probe));
  assert_int_equal(next, 1900);
  /* Due again; the spool says it closed meanwhile: closed here, and the
   * delivery in hand runs as any other. */
  assert_true(try_claim(p, 1900, &next, &probe));
  assert_true(probe);
  assert_int_equal(pace_probe_lost(p, 0, 1900), PACE_WAKE);
  assert_int_equal(pace_observe(p, 0, 0, 1900), PACE_OK);
  /* Open on another node again, then closed there: closed here, every
   * worker woken. */
  assert_int_equal(pace_hold_remote(p, 2300, 0, 1400), 0);
  assert_int_equal(pace_observe(p, 0, 0, 1400), PACE_OPEN);
  assert_int_equal(pace_hold_remote(p, 0, 0, 1500), PACE_WAKE);
  assert_int_equal(pace_observe(p, 0, 0, 1500), PACE_OK);
  assert_true(try_claim(p, 1500, &next, &probe));
  assert_false(probe);
  /* A 0 that is no change does not close a circuit opened here. */
  for (int i = 0; i < 5; i++) pace_report(p, 0, PACE_FAILURE, 0, "down", 1600);
  assert_int_equal(pace_hold_remote(p, 0, 0, 1600), 0);
  assert_int_equal(pace_observe(p, 0, 0, 1600), PACE_OPEN);
  assert_int_equal(pace_report(p, 0, PACE_SUCCESS, 0, NULL, 1610), PACE_WAKE | PACE_CLOSED);
  /* What was stored before that close (another node's probe time, read
   * late) does not open it again; a time stored after it does. */
  assert_int_equal(pace_hold_remote(p, 1900, 0, 1620), 0);
  assert_int_equal(pace_observe(p, 0, 0, 1620), PACE_OK);
  assert_int_equal(pace_hold_remote(p, 1950, 0, 1650), 0);
  assert_int_equal(pace_observe(p, 0, 0, 1650), PACE_OPEN);
  assert_int_equal(pace_hold_remote(p, 0, 0, 1660), PACE_WAKE);
  /* Another node's "too many requests": held until then, no attempt. */
  assert_int_equal(pace_hold_remote(p, 0, 5000, 2000), 0);
  assert_false(try_claim(p, 2000, &next, &probe));
  assert_int_equal(next, 5000);
  pace_info info;
  pace_get_info(p, &info);
  assert_int_equal(info.hold_until, 5000);
  assert_int_equal(info.opens, 1); /* the one opened here */
  /* A stored hold that ended already holds nothing. */
  assert_int_equal(pace_hold_remote(p, 0, 1000, 6000), 0);
  assert_true(try_claim(p, 6000, &next, &probe));
}

static void test_states_in_order_of_precedence(void **state) {
  (void)state;
  pace *p = pace_get("states");
  config_delivery c = settings(0, 1000, 1, 1000);
  pace_configure(p, &c);
  assert_int_equal(pace_observe(p, 0, 0, 0), PACE_OK);
  assert_int_equal(pace_observe(p, 0, 1, 0), PACE_SATURATED);
  pace_report(p, 0, PACE_FAILURE, 0, "down", 0);
  assert_int_equal(pace_observe(p, 0, 1, 0), PACE_OPEN);
  assert_int_equal(pace_observe(p, 1, 1, 0), PACE_PAUSED);
  assert_string_equal(pace_state_name(PACE_PAUSED), "paused");
  assert_string_equal(pace_state_name(PACE_SATURATED), "saturated");
  /* Turning the breaker off by a reload lets what it held go. */
  c = settings(0, 1000, 0, 1000);
  pace_configure(p, &c);
  assert_int_equal(pace_observe(p, 0, 0, 0), PACE_OK);
}

int main(void) {
  log_setup(HLOG_ERROR, HLOG_FORMAT_TEXT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_pace_per_name),
      cmocka_unit_test(test_rate_spaces_starts_evenly),
      cmocka_unit_test(test_too_many_requests_holds_everything),
      cmocka_unit_test(test_breaker_opens_probes_and_closes),
      cmocka_unit_test(test_probe_not_run_and_permanent_answers),
      cmocka_unit_test(test_remote_circuit_and_hold),
      cmocka_unit_test(test_states_in_order_of_precedence),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
