/* The lane bookkeeping both spool backends share: name, lock, owner and its wake, settings. */
#ifndef HOOKD_LANE_H
#define HOOKD_LANE_H

#include <pthread.h>

#include "spool.h"

/* The first member of every backend's lane (and spool_lane the first of
 * it), so that a spool_lane * is a lane_base * is the backend's lane *. */
typedef struct lane_base {
  spool_lane iface; /* first: the interface's part */
  char *name;       /* the plugin instance name */
  pthread_mutex_t mu;
  const void *owner; /* the queue that claims from the lane now (lane_attach) */
  spool_wake_fn wake;
  void *wake_data;
  spool_lane_config cfg;
} lane_base;

/* Fills a zeroed b: a copy of name, its lock, cfg. Returns 0, or -1 when
 * out of memory (nothing to undo). */
int lane_base_init(lane_base *b, spool *sp, const char *name, const spool_lane_config *cfg);
/* Frees what lane_base_init made. */
void lane_base_destroy(lane_base *b);

/* The lane_config and lane_detach operations of both backends. */
void lane_base_config(spool_lane *l, const spool_lane_config *c);
void lane_base_detach(spool_lane *l, const void *owner);

/* Makes owner the lane's owner, woken through wake(data) from now on; a
 * previous owner's claims then return NULL with *next_ms = -1. With
 * wake_both, wakes the previous owner (so that it does not sleep until its
 * next due time) and the new one, each with SIZE_MAX. Caller holds b->mu. */
void lane_base_own(lane_base *b, const void *owner, spool_wake_fn wake, void *data, int wake_both);

/* Wakes n workers of the owner, if any. Caller holds b->mu. */
static inline void lane_base_wake(lane_base *b, size_t n) {
  if (b->wake) b->wake(b->wake_data, n);
}
/* Takes b->mu and wakes every worker of the owner. */
void lane_base_wake_all(lane_base *b);

#endif
