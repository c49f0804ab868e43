/* The lane bookkeeping both spool backends share (lane.h). */
#include "lane.h"

#include <stdlib.h>
#include <string.h>

int lane_base_init(lane_base *b, spool *sp, const char *name, const spool_lane_config *cfg) {
  b->name = strdup(name);
  if (b->name == NULL) return -1;
  b->iface.sp = sp;
  pthread_mutex_init(&b->mu, NULL);
  b->cfg = *cfg;
  return 0;
}

void lane_base_destroy(lane_base *b) {
  pthread_mutex_destroy(&b->mu);
  free(b->name);
}

void lane_base_config(spool_lane *l, const spool_lane_config *c) {
  lane_base *b = (lane_base *)l;
  pthread_mutex_lock(&b->mu);
  b->cfg = *c;
  pthread_mutex_unlock(&b->mu);
}

void lane_base_detach(spool_lane *l, const void *owner) {
  lane_base *b = (lane_base *)l;
  pthread_mutex_lock(&b->mu);
  if (b->owner == owner) {
    b->owner = NULL;
    b->wake = NULL;
    b->wake_data = NULL;
  }
  pthread_mutex_unlock(&b->mu);
}

void lane_base_own(lane_base *b, const void *owner, spool_wake_fn wake, void *data, int wake_both) {
  spool_wake_fn old_wake = b->wake;
  void *old_data = b->wake_data;
  b->owner = owner;
  b->wake = wake;
  b->wake_data = data;
  if (!wake_both) return;
  if (old_wake) old_wake(old_data, SIZE_MAX);
  if (wake) wake(data, SIZE_MAX);
}

void lane_base_wake_all(lane_base *b) {
  pthread_mutex_lock(&b->mu);
  lane_base_wake(b, SIZE_MAX);
  pthread_mutex_unlock(&b->mu);
}
