/* The order keys a test plugin is delivering right now, so that it can report an overlap (two
 * deliveries of one key at once), which per-key ordering forbids. Shared by test_plugin.c and
 * test_fault.c; each .so gets its own copy of these static functions. */
#ifndef HOOKD_TEST_RUNNING_KEYS_H
#define HOOKD_TEST_RUNNING_KEYS_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RUNNING_KEYS_MAX 64

typedef struct running_keys {
  pthread_mutex_t mu;
  char *key[RUNNING_KEYS_MAX]; /* order keys in deliver() now */
} running_keys;

static void running_keys_init(running_keys *r) {
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
}

/* Records key as running; 1 when it was running already (an overlap). */
static int running_keys_enter(running_keys *r, const char *key) {
  int overlap = 0, placed = 0;
  pthread_mutex_lock(&r->mu);
  for (int i = 0; i < RUNNING_KEYS_MAX; i++) {
    if (r->key[i] && strcmp(r->key[i], key) == 0) overlap = 1;
  }
  for (int i = 0; i < RUNNING_KEYS_MAX && !placed; i++) {
    if (r->key[i] == NULL) {
      r->key[i] = strdup(key);
      placed = 1;
    }
  }
  pthread_mutex_unlock(&r->mu);
  return overlap;
}

static void running_keys_leave(running_keys *r, const char *key) {
  pthread_mutex_lock(&r->mu);
  for (int i = 0; i < RUNNING_KEYS_MAX; i++) {
    if (r->key[i] && strcmp(r->key[i], key) == 0) {
      free(r->key[i]);
      r->key[i] = NULL;
      break;
    }
  }
  pthread_mutex_unlock(&r->mu);
}

static void running_keys_clear(running_keys *r) {
  for (int i = 0; i < RUNNING_KEYS_MAX; i++) free(r->key[i]);
  pthread_mutex_destroy(&r->mu);
}

#endif
