/* The spool interface: where accepted events wait, durably, between "answered 200" and "delivered".
 */
#ifndef HOOKD_SPOOL_H
#define HOOKD_SPOOL_H

/*
 * Every backend implements the table of operations below (DESIGN §1): store
 * a batch, claim due deliveries, mark an attempt started, settle one
 * (complete, retry, dead-letter), and what goes around them (recovery,
 * replay of dead letters, pruning, numbers). spool_sqlite.c is the embedded
 * default; a shared backend for several nodes implements the same table.
 *
 * Lanes. Deliveries wait per plugin instance *name*, in a lane that belongs
 * to the spool and outlives reloads: whichever generation's workers run an
 * instance, they claim from the same lane, so order per key holds across
 * any number of reloads. A lane hands out a delivery only when it is due and
 * no other delivery of its order key is running or waiting before it: per
 * key, one at a time, in accept order. A lane keeps a bounded window of
 * deliveries in memory and leaves the rest of its backlog on disk; a backlog
 * costs disk, not memory, and a restart reads back only the windows.
 *
 * Attempts. Before deliver() runs, the worker calls started(), which
 * records that this thread runs that attempt now, in a way that survives a
 * death of hookd (the SQLite backend: a slot in a memory-mapped file, see
 * runslots.h); started(NULL) when the call returned. A delivery that was
 * started and had not returned when hookd died was running then: recovery
 * counts a crash for it (for the one that faulted, when the crash journal
 * names it: crash.h) and at the instance's max_crashes makes it a dead
 * letter instead of running it again.
 *
 * Pause (DESIGN §4, `hookd pause|resume`, added with schema 3). Whether an
 * instance is paused is stored with the deliveries, so it survives restarts
 * and every hookd on the store sees it: a paused lane's claim() returns NULL
 * (*next_ms INT64_MAX) and its deliveries wait, in order, until resume wakes
 * the owner. The backend notices a change made by another process (the CLI,
 * another node) within a second. Pausing keeps admitting events into the
 * lane's max_pending.
 *
 * Holds shared by the nodes (DESIGN §10; optional, NULL in the SQLite
 * backend, where one process has the only pace). When an instance's circuit
 * opens or closes, or its destination says "too many requests", the worker
 * tells the store (instance_hold), which tells every node; each node's
 * lane_holds says what the store last said, and the pace applies it. An
 * open circuit's probe is taken through the store (take_probe), so that one
 * node probes per cooldown, not each of them.
 *
 * Attempts (schema 3). record_attempt keeps what one deliver() call came to
 * (time, duration, outcome, the destination's status and the first bytes of
 * its answer) with the event, for the status page; pruned with the event.
 *
 * Threads: spool_open, recover, stop, free, lane, lane_config, admit, seen
 * and store on the loop thread (recover before the server starts). claim,
 * started, record_attempt, settle and take_probe on delivery workers; pause
 * on any thread but the loop (it waits for a commit); lane_attach/lane_detach,
 * stats, lane_holds and instance_hold on any thread. Callbacks (spool_stored_fn) run on the loop
 * thread; spool_wake_fn on any thread, with no spool lock held.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

struct config;
#include "event.h"

typedef struct spool spool;
typedef struct spool_lane spool_lane;

/* Per-instance settings, from the generation that runs the instance now
 * (lane_config again after a reload). */
typedef struct spool_lane_config {
  uint64_t max_pending; /* unfinished deliveries past which admit() refuses
                           events routed to this lane */
  uint32_t max_crashes; /* crashes while running that make a delivery dead */
} spool_lane_config;

/* About n deliveries of a lane may be claimed now (stored, read back from
 * disk, or replayed): wake one worker for 1, all for more. A worker that
 * settles a delivery is not woken: it claims again by itself. Any thread;
 * the lane's lock may be held, so the callback must not call into the
 * spool. */
typedef void (*spool_wake_fn)(void *data, size_t n);

/* The result of store(), given to spool_stored_fn on the loop thread. */
#define SPOOL_STORED 0    /* durable: answer the success status */
#define SPOOL_DUPLICATE 1 /* (source, id) was accepted before: success, nothing stored */
#define SPOOL_EIO (-5)    /* the commit failed: answer 503 */
typedef void (*spool_stored_fn)(void *data, int status);

/* What became of an attempt, for settle(). */
typedef enum spool_outcome {
  SPOOL_DONE,   /* delivered: finished */
  SPOOL_RETRY,  /* a failed attempt: due again at d->due_ms; d->attempt and
                   d->crashes are stored as they are */
  SPOOL_DEAD,   /* a dead letter, with the error */
  SPOOL_RELEASE /* not attempted after all (the instance could not take it
                   now): back in its lane, due at d->due_ms, the start mark
                   undone; d->attempt must be what it was before started() */
} spool_outcome;

/* What instance_hold stores. */
typedef enum spool_hold {
  SPOOL_HOLD_CIRCUIT, /* the circuit opened (or re-opened): next probe in ms */
  SPOOL_HOLD_RATE,    /* the destination said "too many requests": held for ms */
  SPOOL_HOLD_CLOSE    /* the circuit closed (ms unused) */
} spool_hold;

/* Numbers for metrics and the status page (any thread). */
typedef struct spool_stats {
  uint64_t pending;          /* deliveries not finished, all lanes */
  uint64_t dead;             /* dead letters */
  uint64_t db_bytes;         /* size on disk (database and its log) */
  uint64_t commits;          /* transactions committed */
  uint64_t commit_errors;    /* transactions that failed */
  uint64_t checkpoints;      /* WAL checkpoints (SQLite) */
  int wal_pages;             /* WAL length after the last commit (SQLite) */
  int64_t oldest_pending_ms; /* accept time of the oldest unfinished delivery, 0 if none */
  uint64_t in_memory;        /* deliveries held in lane windows now */
  uint64_t crashes;          /* crashes counted at recovery */
  int64_t writer_beat_ms;    /* mono ms when the writer last went round its loop
                                (0: the backend has no such thread) */
} spool_stats;

typedef struct spool_lane_stats {
  uint64_t pending;   /* unfinished deliveries of the lane, on disk or not */
  uint64_t in_memory; /* of which held in memory */
  uint64_t running;   /* claimed and not settled */
  int saturated;      /* pending reached max_pending */
  int64_t oldest_ms;  /* accept time of the oldest unfinished delivery (0: none) */
  int paused;         /* `hookd pause`: claims return nothing */
  int64_t paused_ms;  /* since when (Unix ms), with paused */
} spool_lane_stats;

/* One deliver() call, for record_attempt. Strings are copied. */
typedef struct spool_attempt {
  int64_t started_ms; /* Unix ms */
  int64_t took_ms;
  uint32_t attempt;    /* the attempt it was (1 for the first) */
  const char *outcome; /* "delivered", "retry", "dead", "rate limited", "circuit open",
                          "timed out", "crashed", "not attempted" */
  int32_t status;      /* the destination's status (HTTP, SMTP); 0: none */
  const char *answer;  /* the first bytes of its answer, scrubbed; may be NULL */
  const char *message; /* the error, scrubbed; may be NULL */
} spool_attempt;
/* Attempt rows kept per delivery: past it the oldest make room. */
#define SPOOL_ATTEMPTS_KEPT 16

typedef struct spool_ops {
  const char *name; /* "sqlite" */

  /* Reads back what the last run left: counts crashes of deliveries that
   * were running, dead-letters those at max_crashes, fills the lanes'
   * windows, starts the backend's threads. Lanes of the configured
   * instances exist (lane()) before it runs. Returns 0, or a negative code
   * with err: SPOOL_EDAMAGED for a damaged store (hookd exits 3). */
  int (*recover)(spool *sp, char *err, size_t errlen);
  /* Commits what is queued and stops the backend's threads; outcomes
   * reported later are dropped (they run again on the next start). */
  void (*stop)(spool *sp);
  /* stop, then frees everything. */
  void (*free)(spool *sp);

  /* The lane of an instance name, created on first use; lives as long as
   * the spool. A new lane reads its backlog from disk on its first claim. */
  spool_lane *(*lane)(spool *sp, const char *instance);
  void (*lane_config)(spool_lane *l, const spool_lane_config *c);
  /* owner (a generation's queue of that instance) claims from l from now on
   * and is woken through wake; a previous owner's claims return NULL with
   * *next_ms = -1 (it should stop). detach: owner no longer claims. */
  void (*lane_attach)(spool_lane *l, const void *owner, spool_wake_fn wake, void *data);
  void (*lane_detach)(spool_lane *l, const void *owner);
  void (*lane_stats)(spool_lane *l, spool_lane_stats *out);

  /* NULL when an event routed to lanes[0..n) may be accepted now; else a
   * short reason for the 503, written into why: the store failing, disk
   * space below the floor, or a lane at its max_pending (named). */
  const char *(*admit)(spool *sp, spool_lane *const *lanes, size_t n, char *why, size_t len);
  /* 1 when (source, id) is known to be accepted already (no I/O); 0 means
   * "not known here": the store still deduplicates durably. */
  int (*seen)(spool *sp, const char *source, const char *id);
  /* Queues ev (the spool takes a reference) with one delivery per lane
   * (n may be 0: stored for dedup only). done(data, status) runs on the loop
   * thread once it committed or failed. Returns 0, or a negative code when
   * refused at once (done is then not called). */
  int (*store)(spool *sp, event *ev, spool_lane *const *lanes, size_t n, spool_stored_fn done,
               void *data);

  /* A due delivery of l that no other delivery of its key holds back, or
   * NULL: then *next_ms is the time of the next one due (INT64_MAX: none
   * known; -1: owner is not l's owner any more). The caller owns it until
   * settle(). */
  delivery *(*claim)(spool_lane *l, const void *owner, int64_t now_ms, int64_t *next_ms);
  /* The calling thread starts attempt d->attempt + 1 of d now; d NULL:
   * the call returned. Returns 0, or a negative code when the start could
   * not be recorded (the caller then releases d and does not run it). Must
   * not wait for I/O: it is on every delivery's path. */
  int (*started)(spool *sp, delivery *d);
  /* Records what became of d and takes it (frees it when finished). */
  void (*settle)(spool *sp, delivery *d, spool_outcome how, const char *error);

  void (*stats)(spool *sp, spool_stats *out);

  /* --- schema 3 --- */
  /* Keeps a (a call of d; d->tries counts them) with d's event, bounded to
   * SPOOL_ATTEMPTS_KEPT rows per delivery. Rides in the next commit, like an
   * outcome. Call it before settle(). */
  void (*record_attempt)(spool *sp, delivery *d, const spool_attempt *a);
  /* Pauses (paused 1) or resumes (0) the lane of an instance name, durably:
   * returns 0 once that is stored and applied, or a negative code with err.
   * Blocks for about one commit. */
  int (*pause)(spool *sp, const char *instance, int paused, char *err, size_t errlen);

  /* --- holds shared by the nodes (optional: NULL for a one-process store) --- */
  /* Stores for every node that the instance is held for ms from now (a
   * later time already stored stays), or that its circuit closed. Queued:
   * returns at once, never waits for I/O. Any thread. */
  void (*instance_hold)(spool *sp, const char *instance, spool_hold kind, int64_t ms);
  /* The instance's open circuit is due for a probe and this node would run
   * it: 1 when it may (it took the probe for cooldown_ms, or the store
   * cannot be asked: then it probes as if alone); 0 when it may not:
   * another node took it and *until_ms (Unix ms, this node's clock) is the
   * earliest next probe, or *until_ms is 0: the store knows of no open
   * circuit (another node's delivery closed it). Blocks for about one round
   * trip: delivery workers only. */
  int (*take_probe)(spool *sp, const char *instance, int64_t cooldown_ms, int64_t *until_ms);
  /* What the store last said of l's instance: its circuit open until
   * *circuit_until (Unix ms, this node's clock; 0: closed; in the past:
   * open, a probe due) and its destination's hold until *hold_until (0:
   * none). No I/O; any thread. The lane's owner is woken when it changes. */
  void (*lane_holds)(spool_lane *l, int64_t *circuit_until, int64_t *hold_until);
} spool_ops;

/* Every backend's object starts with this, and every backend's lane with
 * struct spool_lane. */
struct spool {
  const spool_ops *ops;
};
struct spool_lane {
  spool *sp;
};

#define SPOOL_EDAMAGED (-3) /* the store is damaged or not a spool: exit code 3 */
#define SPOOL_EFAIL (-1)    /* anything else */

/* Opens the backend that cfg->spool names (creating a new store when
 * needed). Refuses a store of another schema version, and a damaged one
 * with SPOOL_EDAMAGED in *code. Loop thread. */
spool *spool_open(const struct config *cfg, uv_loop_t *loop, int *code, char *err, size_t errlen);

static inline int spool_recover(spool *sp, char *err, size_t errlen) {
  return sp->ops->recover(sp, err, errlen);
}
static inline void spool_stop(spool *sp) {
  sp->ops->stop(sp);
}
static inline void spool_free(spool *sp) {
  if (sp) sp->ops->free(sp);
}
static inline spool_lane *spool_lane_get(spool *sp, const char *instance) {
  return sp->ops->lane(sp, instance);
}
static inline const char *spool_admit(spool *sp, spool_lane *const *lanes, size_t n, char *why,
                                      size_t len) {
  return sp->ops->admit(sp, lanes, n, why, len);
}
static inline int spool_seen(spool *sp, const char *source, const char *id) {
  return sp->ops->seen(sp, source, id);
}
static inline int spool_store(spool *sp, event *ev, spool_lane *const *lanes, size_t n,
                              spool_stored_fn done, void *data) {
  return sp->ops->store(sp, ev, lanes, n, done, data);
}
static inline void spool_get_stats(spool *sp, spool_stats *out) {
  sp->ops->stats(sp, out);
}
static inline void spool_lane_config_set(spool_lane *l, const spool_lane_config *c) {
  l->sp->ops->lane_config(l, c);
}
static inline void spool_lane_attach(spool_lane *l, const void *owner, spool_wake_fn wake,
                                     void *data) {
  l->sp->ops->lane_attach(l, owner, wake, data);
}
static inline void spool_lane_detach(spool_lane *l, const void *owner) {
  l->sp->ops->lane_detach(l, owner);
}
static inline void spool_lane_get_stats(spool_lane *l, spool_lane_stats *out) {
  memset(out, 0, sizeof *out); /* a backend fills what it knows */
  l->sp->ops->lane_stats(l, out);
}
static inline delivery *spool_claim(spool_lane *l, const void *owner, int64_t now_ms,
                                    int64_t *next_ms) {
  return l->sp->ops->claim(l, owner, now_ms, next_ms);
}
static inline int spool_started(spool *sp, delivery *d) {
  return sp->ops->started(sp, d);
}
static inline void spool_settle(spool *sp, delivery *d, spool_outcome how, const char *error) {
  sp->ops->settle(sp, d, how, error);
}
static inline void spool_record_attempt(spool *sp, delivery *d, const spool_attempt *a) {
  if (sp->ops->record_attempt) sp->ops->record_attempt(sp, d, a);
}
static inline int spool_pause(spool *sp, const char *instance, int paused, char *err,
                              size_t errlen) {
  if (sp->ops->pause == NULL) {
    snprintf(err, errlen, "pause and resume are not available with the %s spool yet",
             sp->ops->name);
    return SPOOL_EFAIL;
  }
  return sp->ops->pause(sp, instance, paused, err, errlen);
}
static inline void spool_instance_hold(spool *sp, const char *instance, spool_hold kind,
                                       int64_t ms) {
  if (sp->ops->instance_hold) sp->ops->instance_hold(sp, instance, kind, ms);
}
static inline int spool_take_probe(spool *sp, const char *instance, int64_t cooldown_ms,
                                   int64_t *until_ms) {
  return sp->ops->take_probe ? sp->ops->take_probe(sp, instance, cooldown_ms, until_ms) : 1;
}
/* 0 when the backend shares no holds (nothing to apply). */
static inline int spool_lane_holds(spool_lane *l, int64_t *circuit_until, int64_t *hold_until) {
  if (l->sp->ops->lane_holds == NULL) return 0;
  l->sp->ops->lane_holds(l, circuit_until, hold_until);
  return 1;
}

#endif
