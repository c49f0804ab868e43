/* Pacing of one plugin instance's deliveries: the rate limit, the destination's "too many requests"
 * hold and the circuit breaker. */
#ifndef HOOKD_PACE_H
#define HOOKD_PACE_H

/*
 * Three things decide when an instance may start its next delivery, before
 * any delivery is claimed (so nothing is started only to be put back):
 *
 * - the rate (delivery.rate): a token bucket with a burst of 1, so starts
 *   are evenly spaced, one every period/N;
 * - a hold: a destination that answered "too many requests" (HTTP 429,
 *   Slack's "ratelimited") stops every start until its Retry-After;
 * - the circuit breaker (delivery.breaker): after `failures` consecutive
 *   failed attempts the circuit opens; deliveries wait, and one probe runs
 *   every cooldown_ms. A probe that succeeds closes it.
 *
 * A pace belongs to an instance *name* and lives as long as the process, like
 * the spool's lanes: a reload keeps the spacing, the hold and the circuit.
 *
 * Several nodes (a shared spool, DESIGN §10): pace_report says when the
 * circuit opened, re-opened or closed, so that the caller stores it for the
 * other nodes; what the spool says the other nodes stored comes back through
 * pace_hold_remote, and the probe of an open circuit may go to another node
 * (pace_probe_lost). Without a shared spool none of it is called.
 * Every function is thread-safe; the clock is Unix ms (clock_now_ms()).
 */

#include <stddef.h>
#include <stdint.h>

#include "config_delivery.h"
#include "event.h"

typedef struct pace pace;

/* The pace of an instance name, created on first use; NULL when out of
 * memory. Never freed. */
pace *pace_get(const char *instance);
/* Takes the instance's rate and breaker settings (a start or a reload). */
void pace_configure(pace *p, const config_delivery *c);

/* Claims through the pace: when nothing holds the instance back at now,
 * calls claim(arg, &next) and, when that returns a delivery, counts its start
 * (a token; the probe when the circuit is open: *probe is then 1). When
 * something holds it back, returns NULL without calling claim, with *next_ms
 * the time to look again (INT64_MAX: wait to be woken; a probe is running).
 * Otherwise *next_ms is what claim set. */
delivery *pace_claim(pace *p, int64_t now, delivery *(*claim)(void *arg, int64_t *next_ms),
                     void *arg, int64_t *next_ms, int *probe);

/* What an attempt came to, for the breaker. */
typedef enum pace_result {
  PACE_SUCCESS,      /* delivered */
  PACE_FAILURE,      /* a transient failure: RETRY, timeout, crash */
  PACE_ANSWERED,     /* a permanent failure: the destination is up and said no */
  PACE_RATE_LIMITED, /* "too many requests": hold until hold_until */
  PACE_NO_ATTEMPT    /* not attempted after all (the plugin's process restarting) */
} pace_result;

/* Bits of pace_report's answer. PACE_ABSORB: the circuit is open (or the
 * instance held), so the delivery waits without using up an attempt.
 * PACE_WAKE: the circuit closed or its probe ended: wake every worker. */
#define PACE_ABSORB 1
#define PACE_WAKE 2
/* PACE_OPENED: the circuit opened, or a failed probe re-opened it (until
 * pace_info.open_until). PACE_CLOSED: an open circuit closed. For the
 * caller to tell the other nodes (spool_instance_hold). */
#define PACE_OPENED 4
#define PACE_CLOSED 8

/* Reports an attempt (probe: it was the circuit's probe); message is its
 * error, for the log line when the circuit opens. */
int pace_report(pace *p, int probe, pace_result r, int64_t hold_until, const char *message,
                int64_t now);

/* What the other nodes stored for the instance (Unix ms, this process's
 * clock): circuit_until > 0 says its circuit is open until then (in the
 * past: open, a probe due), 0 that it is closed; hold_until a destination's
 * "too many requests" hold (0: none). Called whenever the spool may have
 * read something new; only a change of circuit_until since the last call
 * counts: a new open time opens the circuit here too or moves its next
 * probe later, a change to 0 closes it here (returns PACE_WAKE: wake every
 * worker). A hold only ever lengthens the local one. */
int pace_hold_remote(pace *p, int64_t circuit_until, int64_t hold_until, int64_t now);

/* The probe that pace_claim handed out went to another node, which probes
 * until `until` (Unix ms): it is not run here (the caller puts the delivery
 * back), and the next probe is not before then. until 0: the spool says the
 * circuit closed meanwhile (another node's delivery got through): it closes
 * here too (returns PACE_WAKE) and the delivery runs as any other. */
int pace_probe_lost(pace *p, int64_t until, int64_t now);

/* An instance's state, as hookd_instance_state{state} and the page name it. */
typedef enum pace_state { PACE_OK, PACE_OPEN, PACE_PAUSED, PACE_SATURATED } pace_state;
#define PACE_N_STATES 4
const char *pace_state_name(pace_state s);

/* The state from the circuit and what the spool says (paused, saturated):
 * paused first, then open, then saturated. Logs one line when it changed
 * since the last call (instance named). */
pace_state pace_observe(pace *p, int paused, int saturated, int64_t now);

/* Numbers for the page and /metrics. */
typedef struct pace_info {
  pace_state state;                    /* as last observed */
  int open;                            /* the circuit is open */
  int probing;                         /* its probe is running */
  uint32_t failures;                   /* consecutive failed attempts now */
  int64_t open_until;                  /* with open: when the next probe may start */
  int64_t hold_until;                  /* a destination's hold ends (0: none) */
  uint32_t rate_count, rate_period_ms; /* the rate (count 0: none) */
  uint32_t breaker_failures;
  uint64_t breaker_cooldown_ms;
  uint64_t opens;    /* times the circuit opened */
  uint64_t holds;    /* "too many requests" answers */
  uint64_t absorbed; /* attempts that used up nothing (held, circuit open) */
} pace_info;
void pace_get_info(pace *p, pace_info *out);

#endif
