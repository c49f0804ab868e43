/* Pacing of one plugin instance's deliveries: token bucket, "too many requests" hold, circuit
 * breaker. */
#include "pace.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct pace {
  char *name;
  pthread_mutex_t mu;
  /* settings */
  uint32_t rate_count, rate_period_ms;
  uint64_t interval_us; /* between starts; 0: no rate */
  uint32_t need;        /* consecutive failures that open the circuit; 0: no breaker */
  uint64_t cooldown_ms;
  /* the token bucket: the earliest next start, in Unix microseconds */
  int64_t next_start_us;
  /* a destination's "too many requests" */
  int64_t hold_until;
  /* the breaker */
  uint32_t failures;
  int open, probing;
  int64_t open_until;
  char last_error[200];
  /* What the other nodes stored, as pace_hold_remote last heard it. */
  int64_t remote_circuit, remote_hold;
  int64_t closed_at; /* when the circuit last closed (Unix ms) */
  pace_state state;  /* as last observed (pace_observe) */
  uint64_t opens, holds, absorbed;
  struct pace *next;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pace *reg_head;

pace *pace_get(const char *instance) {
  pthread_mutex_lock(&reg_mu);
  pace *p = reg_head;
  while (p && strcmp(p->name, instance) != 0) p = p->next;
  if (p == NULL && (p = calloc(1, sizeof *p)) != NULL) {
    if ((p->name = strdup(instance)) == NULL) {
      free(p);
      p = NULL;
    } else {
      pthread_mutex_init(&p->mu, NULL);
      p->rate_period_ms = 1000;
      p->next = reg_head;
      reg_head = p;
    }
  }
  pthread_mutex_unlock(&reg_mu);
  return p;
}

void pace_configure(pace *p, const config_delivery *c) {
  pthread_mutex_lock(&p->mu);
  p->rate_count = c->rate_count;
  p->rate_period_ms = c->rate_period_ms;
  p->interval_us = c->rate_count ? (uint64_t)c->rate_period_ms * 1000 / c->rate_count : 0;
  p->need = c->breaker_failures;
  p->cooldown_ms = c->breaker_cooldown_ms;
  if (p->need == 0 && p->open) {
    /* The breaker was turned off by a reload: what it held may go. */
    p->open = p->probing = 0;
    p->failures = 0;
  }
  pthread_mutex_unlock(&p->mu);
}

/* When the next start may be, or 0 for now. Caller holds mu. */
static int64_t held_until(const pace *p, int64_t now) {
  int64_t until = 0;
  if (p->hold_until > now) until = p->hold_until;
  if (p->open) {
    if (p->probing) return INT64_MAX;
    if (p->open_until > now && p->open_until > until) until = p->open_until;
  }
  if (p->interval_us && p->next_start_us > now * 1000) {
    /* Rounded up: waking a millisecond early would only find it held. */
    int64_t ms = (p->next_start_us + 999) / 1000;
    if (ms > until) until = ms;
  }
  return until;
}

delivery *pace_claim(pace *p, int64_t now, delivery *(*claim)(void *arg, int64_t *next_ms),
                     void *arg, int64_t *next_ms, int *probe) {
  *probe = 0;
  /* The lock is held across the claim so that two workers never both take
   * the one token (or the one probe). A claim is a few memory operations. */
  pthread_mutex_lock(&p->mu);
  int64_t until = held_until(p, now);
  if (until > now) {
    pthread_mutex_unlock(&p->mu);
    *next_ms = until;
    return NULL;
  }
  delivery *d = claim(arg, next_ms);
  if (d) {
    if (p->interval_us) {
      int64_t base = p->next_start_us > now * 1000 ? p->next_start_us : now * 1000;
      p->next_start_us = base + (int64_t)p->interval_us;
    }
    if (p->open) {
      p->probing = 1;
      *probe = 1;
    }
  }
  pthread_mutex_unlock(&p->mu);
  return d;
}

/* Closes the circuit. Caller holds mu. */
static int close_circuit(pace *p, int64_t now) {
  int was = p->open;
  p->open = p->probing = 0;
  p->failures = 0;
  if (was) p->closed_at = now;
  return was ? PACE_WAKE | PACE_CLOSED : 0;
}

static int report_failure(pace *p, int probe, const char *message, int64_t now) {
  if (message) snprintf(p->last_error, sizeof p->last_error, "%s", message);
  if (p->need == 0) return 0;
  if (p->open) {
    /* A failed probe uses no attempt, and neither does a call that was
     * running when the circuit opened. */
    if (probe) {
      p->probing = 0;
      p->open_until = now + (int64_t)p->cooldown_ms;
      log_write(HLOG_WARN, &(log_ctx){.instance = p->name},
                "circuit still open: the probe failed (%s); next probe in %llu ms", p->last_error,
                (unsigned long long)p->cooldown_ms);
      return PACE_ABSORB | PACE_WAKE | PACE_OPENED;
    }
    return PACE_ABSORB;
  }
  if (++p->failures < p->need) return 0;
  p->open = 1;
  p->probing = 0;
  p->opens++;
  p->open_until = now + (int64_t)p->cooldown_ms;
  log_write(HLOG_WARN, &(log_ctx){.instance = p->name},
            "circuit open after %u consecutive failed attempts (last: %s): deliveries wait "
            "without using attempts; one probe every %llu ms",
            p->failures, p->last_error, (unsigned long long)p->cooldown_ms);
  return PACE_ABSORB | PACE_OPENED;
}

int pace_report(pace *p, int probe, pace_result r, int64_t hold_until, const char *message,
                int64_t now) {
  int rc = 0;
  pthread_mutex_lock(&p->mu);
  switch (r) {
    case PACE_SUCCESS:
    case PACE_ANSWERED:
      /* The destination answered: whatever it said, it is up. */
      p->failures = 0;
      if (p->open && (probe || r == PACE_SUCCESS)) {
        log_write(HLOG_INFO, &(log_ctx){.instance = p->name}, "circuit closed: %s",
                  probe ? "the probe got through" : "a delivery got through");
        rc = close_circuit(p, now);
      }
      break;
    case PACE_FAILURE:
      rc = report_failure(p, probe, message, now);
      break;
    case PACE_RATE_LIMITED:
      if (hold_until > p->hold_until) p->hold_until = hold_until;
      p->holds++;
      p->failures = 0;
      if (probe) rc = close_circuit(p, now);
      rc |= PACE_ABSORB;
      break;
    case PACE_NO_ATTEMPT:
      if (probe && p->probing) {
        p->probing = 0;
        rc = PACE_WAKE;
      }
      break;
  }
  if (rc & PACE_ABSORB) p->absorbed++;
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int pace_hold_remote(pace *p, int64_t circuit_until, int64_t hold_until, int64_t now) {
  int rc = 0;
  pthread_mutex_lock(&p->mu);
  if (hold_until != p->remote_hold) {
    p->remote_hold = hold_until;
    if (hold_until > now && hold_until > p->hold_until) {
      /* Held already: most likely this node's own hold coming back from
       * the spool (a few ms later on the server's clock); no news. */
      if (p->hold_until <= now) {
        log_write(HLOG_WARN, &(log_ctx){.instance = p->name},
                  "held for %lld ms: the destination said too many requests to another node",
                  (long long)(hold_until - now));
      }
      p->hold_until = hold_until;
    }
  }
  int64_t was = p->remote_circuit;
  if (circuit_until != was) {
    p->remote_circuit = circuit_until;
    if (p->need == 0) {
      /* No breaker here (a reload turned it off): nothing to hold. */
    } else if (circuit_until > 0 && !p->open &&
               circuit_until <= p->closed_at + (int64_t)p->cooldown_ms) {
      /* Stored before the circuit closed here (a probe taken, the one
       * that then got through): the spool has not seen the close yet. A
       * node that opens it after the close stores a later time. */
    } else if (circuit_until > 0 && !p->open) {
      /* Opened on another node: the destination is down for every node,
       * so this one stops too instead of counting its own failures. */
      p->open = 1;
      p->probing = 0;
      p->open_until = circuit_until;
      snprintf(p->last_error, sizeof p->last_error, "opened on another node");
      log_write(HLOG_WARN, &(log_ctx){.instance = p->name},
                "circuit open on another node: deliveries wait without using attempts; next "
                "probe in %lld ms",
                (long long)(circuit_until > now ? circuit_until - now : 0));
    } else if (circuit_until > 0) {
      /* Another node took the probe, or its probe failed: none before. */
      if (!p->probing && circuit_until > p->open_until) p->open_until = circuit_until;
    } else if (was > 0 && p->open) {
      log_write(HLOG_INFO, &(log_ctx){.instance = p->name},
                "circuit closed: a delivery got through on another node");
      rc = close_circuit(p, now) & PACE_WAKE;
    }
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int pace_probe_lost(pace *p, int64_t until, int64_t now) {
  int rc = 0;
  pthread_mutex_lock(&p->mu);
  if (p->open && until == 0) {
    log_write(HLOG_INFO, &(log_ctx){.instance = p->name},
              "circuit closed: a delivery got through on another node");
    rc = close_circuit(p, now) & PACE_WAKE;
  } else if (p->open) {
    p->probing = 0;
    if (until > p->open_until) p->open_until = until;
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

static const char *const state_names[PACE_N_STATES] = {"ok", "open", "paused", "saturated"};

const char *pace_state_name(pace_state s) {
  return (unsigned)s < PACE_N_STATES ? state_names[s] : "ok";
}

pace_state pace_observe(pace *p, int paused, int saturated, int64_t now) {
  (void)now;
  pthread_mutex_lock(&p->mu);
  pace_state s = paused ? PACE_PAUSED : p->open ? PACE_OPEN : saturated ? PACE_SATURATED : PACE_OK;
  pace_state was = p->state;
  p->state = s;
  char why[300] = "";
  if (s == PACE_OPEN) {
    snprintf(why, sizeof why, " (circuit open; last error: %s)", p->last_error);
  } else if (s == PACE_PAUSED) {
    snprintf(why, sizeof why, " (hookd pause; `hookd resume` drains it in order)");
  } else if (s == PACE_SATURATED) {
    snprintf(why, sizeof why, " (at its max_pending: events routed to it get 503)");
  }
  pthread_mutex_unlock(&p->mu);
  if (s != was) {
    log_write(s == PACE_OK ? HLOG_INFO : HLOG_WARN, &(log_ctx){.instance = p->name},
              "instance state %s -> %s%s", state_names[was], state_names[s], why);
  }
  return s;
}

void pace_get_info(pace *p, pace_info *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&p->mu);
  out->state = p->state;
  out->open = p->open;
  out->probing = p->probing;
  out->failures = p->failures;
  out->open_until = p->open ? p->open_until : 0;
  out->hold_until = p->hold_until;
  out->rate_count = p->rate_count;
  out->rate_period_ms = p->rate_period_ms;
  out->breaker_failures = p->need;
  out->breaker_cooldown_ms = p->cooldown_ms;
  out->opens = p->opens;
  out->holds = p->holds;
  out->absorbed = p->absorbed;
  pthread_mutex_unlock(&p->mu);
}
