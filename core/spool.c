/* In-memory spool backend: deduplication window, sequence numbers and dead letters, nothing durable. */
#include "spool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Ids remembered for deduplication. A sender retries within hours, so the
 * window is a count of recent events, oldest forgotten first. */
#define DEDUP_WINDOW 65536

typedef struct seen_entry {
  char *key; /* "source\x1fid" */
  uint64_t hash;
  struct seen_entry *next;
} seen_entry;

struct spool {
  spool_sink_fn sink;
  void *sink_data;
  uint64_t next_seq;
  /* Dedup: hash buckets plus a ring in insertion order for eviction. */
  seen_entry *buckets[DEDUP_WINDOW * 2];
  seen_entry ring[DEDUP_WINDOW];
  size_t ring_pos;
  size_t ring_used;
  atomic_size_t pending;
  pthread_mutex_t dead_mu;
  size_t n_dead;
};

static uint64_t hash2(const char *a, const char *b) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)a; *p; p++) h = (h ^ *p) * 1099511628211ull;
  h = (h ^ 0x1f) * 1099511628211ull;
  for (const unsigned char *p = (const unsigned char *)b; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return h;
}

static int key_eq(const char *key, const char *source, const char *id) {
  size_t ls = strlen(source);
  return strncmp(key, source, ls) == 0 && key[ls] == '\x1f' && strcmp(key + ls + 1, id) == 0;
}

spool *spool_open(const config *cfg, spool_sink_fn sink, void *sink_data, char *err,
                  size_t errlen) {
  (void)cfg;
  (void)err;
  (void)errlen;
  spool *sp = calloc(1, sizeof *sp);
  if (sp == NULL) return NULL;
  sp->sink = sink;
  sp->sink_data = sink_data;
  sp->next_seq = 1;
  atomic_init(&sp->pending, 0);
  pthread_mutex_init(&sp->dead_mu, NULL);
  return sp;
}

void spool_close(spool *sp) {
  if (sp == NULL) return;
  for (size_t i = 0; i < DEDUP_WINDOW; i++) free(sp->ring[i].key);
  pthread_mutex_destroy(&sp->dead_mu);
  free(sp);
}

int spool_seen(spool *sp, const char *source, const char *id) {
  uint64_t h = hash2(source, id);
  for (seen_entry *e = sp->buckets[h % (DEDUP_WINDOW * 2)]; e; e = e->next) {
    if (e->hash == h && key_eq(e->key, source, id)) return 1;
  }
  return 0;
}

static void unlink_entry(spool *sp, seen_entry *old) {
  seen_entry **pp = &sp->buckets[old->hash % (DEDUP_WINDOW * 2)];
  while (*pp && *pp != old) pp = &(*pp)->next;
  if (*pp) *pp = old->next;
  free(old->key);
  old->key = NULL;
}

static int remember(spool *sp, const char *source, const char *id) {
  size_t ls = strlen(source), li = strlen(id);
  char *key = malloc(ls + li + 2);
  if (key == NULL) return -1;
  memcpy(key, source, ls);
  key[ls] = '\x1f';
  memcpy(key + ls + 1, id, li + 1);
  seen_entry *e = &sp->ring[sp->ring_pos];
  if (e->key) unlink_entry(sp, e);
  sp->ring_pos = (sp->ring_pos + 1) % DEDUP_WINDOW;
  e->key = key;
  e->hash = hash2(source, id);
  size_t b = e->hash % (DEDUP_WINDOW * 2);
  e->next = sp->buckets[b];
  sp->buckets[b] = e;
  return 0;
}

int spool_store(spool *sp, event *ev, const size_t *instances, size_t n, spool_stored_fn stored,
                void *data) {
  /* All deliveries are made before anything is handed on, so a failure
   * leaves nothing half-stored. */
  delivery *stack[16];
  delivery **ds = n <= 16 ? stack : malloc(n * sizeof *ds);
  if (ds == NULL) return -1;
  for (size_t i = 0; i < n; i++) {
    ds[i] = delivery_new(ev, (uint32_t)instances[i]);
    if (ds[i] == NULL) {
      while (i-- > 0) delivery_free(ds[i]);
      if (ds != stack) free(ds);
      return -1;
    }
  }
  if (remember(sp, ev->source, ev->id) != 0) {
    for (size_t i = 0; i < n; i++) delivery_free(ds[i]);
    if (ds != stack) free(ds);
    return -1;
  }
  ev->seq = sp->next_seq++;
  int64_t now = now_ms();
  atomic_fetch_add(&sp->pending, n);
  for (size_t i = 0; i < n; i++) {
    ds[i]->due_ms = now;
    ds[i]->spool_id = ev->seq;
    sp->sink(sp->sink_data, ds[i]);
  }
  if (ds != stack) free(ds);
  stored(data, 0);
  return 0;
}

void spool_complete(spool *sp, const delivery *d) {
  (void)d;
  atomic_fetch_sub(&sp->pending, 1);
}

void spool_retry(spool *sp, const delivery *d, const char *error) {
  (void)sp;
  (void)d;
  (void)error;
}

void spool_dead(spool *sp, const delivery *d, const char *error) {
  (void)d;
  (void)error;
  atomic_fetch_sub(&sp->pending, 1);
  pthread_mutex_lock(&sp->dead_mu);
  sp->n_dead++;
  pthread_mutex_unlock(&sp->dead_mu);
}

size_t spool_pending(spool *sp) {
  return atomic_load(&sp->pending);
}
