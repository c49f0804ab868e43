/* Key scheduler: per-order-key FIFOs of deliveries and a heap of the keys whose head may run, by
 * due time. */
#include "keysched.h"

#include <stdlib.h>
#include <string.h>

/* The deliveries of one order key, oldest first. */
typedef struct keyq {
  char *key; /* NULL: unkeyed (a FIFO of its own) */
  uint64_t hash;
  delivery *head, *tail;
  int busy;        /* its head was taken and is not settled */
  size_t heap_pos; /* NOT_IN_HEAP unless runnable */
  struct keyq *hnext;
} keyq;

#define NOT_IN_HEAP ((size_t)-1)

struct keysched {
  keyq **buckets;
  size_t n_buckets, n_keys;
  keyq **heap; /* keys whose head may run, by (due, seq) */
  size_t heap_len, heap_cap;
  size_t count;
  keyq **busy; /* taken heads' keys, found again by delivery */
  delivery **busy_d;
  size_t n_busy, cap_busy;
};

/* --- heap ---------------------------------------------------------------- */

static int before(const keyq *a, const keyq *b) {
  if (a->head->due_ms != b->head->due_ms) return a->head->due_ms < b->head->due_ms;
  return a->head->ev->seq < b->head->ev->seq;
}

static void heap_set(keysched *ks, size_t i, keyq *k) {
  ks->heap[i] = k;
  k->heap_pos = i;
}

static void heap_up(keysched *ks, size_t i) {
  keyq *k = ks->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!before(k, ks->heap[p])) break;
    heap_set(ks, i, ks->heap[p]);
    i = p;
  }
  heap_set(ks, i, k);
}

static void heap_down(keysched *ks, size_t i) {
  keyq *k = ks->heap[i];
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    keyq *best = k;
    if (l < ks->heap_len && before(ks->heap[l], best)) m = l, best = ks->heap[l];
    if (r < ks->heap_len && before(ks->heap[r], best)) m = r, best = ks->heap[r];
    if (m == i) break;
    heap_set(ks, i, best);
    i = m;
  }
  heap_set(ks, i, k);
}

static int heap_push(keysched *ks, keyq *k) {
  if (ks->heap_len == ks->heap_cap) {
    size_t ncap = ks->heap_cap ? ks->heap_cap * 2 : 64;
    keyq **nh = realloc(ks->heap, ncap * sizeof *nh);
    if (nh == NULL) return -1;
    ks->heap = nh;
    ks->heap_cap = ncap;
  }
  heap_set(ks, ks->heap_len++, k);
  heap_up(ks, ks->heap_len - 1);
  return 0;
}

static keyq *heap_pop(keysched *ks) {
  keyq *top = ks->heap[0];
  top->heap_pos = NOT_IN_HEAP;
  if (--ks->heap_len > 0) {
    heap_set(ks, 0, ks->heap[ks->heap_len]);
    heap_down(ks, 0);
  }
  return top;
}

/* --- key table ----------------------------------------------------------- */

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static int grow_buckets(keysched *ks) {
  size_t n = ks->n_buckets ? ks->n_buckets * 2 : 64;
  keyq **nb = calloc(n, sizeof *nb);
  if (nb == NULL) return -1;
  for (size_t i = 0; i < ks->n_buckets; i++) {
    keyq *k = ks->buckets[i];
    while (k) {
      keyq *next = k->hnext;
      k->hnext = nb[k->hash & (n - 1)];
      nb[k->hash & (n - 1)] = k;
      k = next;
    }
  }
  free(ks->buckets);
  ks->buckets = nb;
  ks->n_buckets = n;
  return 0;
}

/* The keyq of an order key, created when absent; NULL when out of memory. */
static keyq *key_get(keysched *ks, const char *key) {
  if (key == NULL) {
    keyq *k = calloc(1, sizeof *k);
    if (k) k->heap_pos = NOT_IN_HEAP;
    return k;
  }
  uint64_t h = hash_str(key);
  if (ks->n_buckets) {
    for (keyq *k = ks->buckets[h & (ks->n_buckets - 1)]; k; k = k->hnext) {
      if (k->hash == h && strcmp(k->key, key) == 0) return k;
    }
  }
  if (ks->n_keys >= ks->n_buckets && grow_buckets(ks) != 0) return NULL;
  keyq *k = calloc(1, sizeof *k);
  if (k == NULL || (k->key = strdup(key)) == NULL) {
    free(k);
    return NULL;
  }
  k->hash = h;
  k->heap_pos = NOT_IN_HEAP;
  k->hnext = ks->buckets[h & (ks->n_buckets - 1)];
  ks->buckets[h & (ks->n_buckets - 1)] = k;
  ks->n_keys++;
  return k;
}

static void key_drop(keysched *ks, keyq *k) {
  if (k->key) {
    keyq **pp = &ks->buckets[k->hash & (ks->n_buckets - 1)];
    while (*pp != k) pp = &(*pp)->hnext;
    *pp = k->hnext;
    ks->n_keys--;
    free(k->key);
  }
  free(k);
}

/* --- busy heads ------------------------------------------------------------ */

static int busy_add(keysched *ks, keyq *k, delivery *d) {
  if (ks->n_busy == ks->cap_busy) {
    size_t ncap = ks->cap_busy ? ks->cap_busy * 2 : 16;
    keyq **nk = realloc(ks->busy, ncap * sizeof *nk);
    if (nk == NULL) return -1;
    ks->busy = nk;
    delivery **nd = realloc(ks->busy_d, ncap * sizeof *nd);
    if (nd == NULL) return -1;
    ks->busy_d = nd;
    ks->cap_busy = ncap;
  }
  ks->busy[ks->n_busy] = k;
  ks->busy_d[ks->n_busy++] = d;
  return 0;
}

/* Removes d from the busy list and returns its key. */
static keyq *busy_take(keysched *ks, const delivery *d) {
  for (size_t i = 0; i < ks->n_busy; i++) {
    if (ks->busy_d[i] == d) {
      keyq *k = ks->busy[i];
      ks->n_busy--;
      ks->busy[i] = ks->busy[ks->n_busy];
      ks->busy_d[i] = ks->busy_d[ks->n_busy];
      return k;
    }
  }
  return NULL;
}

/* --- public ---------------------------------------------------------------- */

keysched *keysched_new(void) {
  return calloc(1, sizeof(keysched));
}

static void free_key(keyq *k) {
  for (delivery *d = k->head; d;) {
    delivery *next = d->next;
    delivery_free(d);
    d = next;
  }
  free(k->key);
  free(k);
}

void keysched_free(keysched *ks) {
  if (ks == NULL) return;
  /* Unkeyed FIFOs are reachable only through the heap or the busy list. */
  for (size_t i = 0; i < ks->heap_len; i++) {
    if (ks->heap[i]->key == NULL) free_key(ks->heap[i]);
  }
  for (size_t i = 0; i < ks->n_busy; i++) {
    if (ks->busy[i]->key == NULL) free_key(ks->busy[i]);
  }
  for (size_t b = 0; b < ks->n_buckets; b++) {
    for (keyq *k = ks->buckets[b]; k;) {
      keyq *next = k->hnext;
      free_key(k);
      k = next;
    }
  }
  free(ks->buckets);
  free(ks->heap);
  free(ks->busy);
  free(ks->busy_d);
  free(ks);
}

int keysched_push(keysched *ks, delivery *d) {
  keyq *k = key_get(ks, d->ev->order_key);
  if (k == NULL) return -1;
  d->next = NULL;
  if (k->head == NULL && !k->busy) {
    /* An idle key becomes runnable. The heap only grows here, so a key
     * taken from it always finds its place again (done, again). */
    k->head = k->tail = d;
    if (heap_push(ks, k) != 0) {
      k->head = k->tail = NULL;
      if (k->key == NULL) {
        free(k);
      } else {
        key_drop(ks, k);
      }
      return -1;
    }
  } else if (k->tail) {
    k->tail->next = d;
    k->tail = d;
  } else {
    k->head = k->tail = d; /* busy with its head settled away: cannot happen */
  }
  ks->count++;
  return 0;
}

delivery *keysched_take(keysched *ks, int64_t now_ms, int64_t *next_ms) {
  *next_ms = INT64_MAX;
  if (ks->heap_len == 0) return NULL;
  keyq *k = ks->heap[0];
  if (k->head->due_ms > now_ms) {
    *next_ms = k->head->due_ms;
    return NULL;
  }
  if (busy_add(ks, k, k->head) != 0) {
    *next_ms = now_ms + 100; /* out of memory: try again soon */
    return NULL;
  }
  heap_pop(ks);
  k->busy = 1;
  return k->head;
}

void keysched_done(keysched *ks, delivery *d) {
  keyq *k = busy_take(ks, d);
  if (k == NULL) return;
  k->busy = 0;
  k->head = d->next;
  if (k->head == NULL) k->tail = NULL;
  d->next = NULL;
  ks->count--;
  if (k->head) {
    if (heap_push(ks, k) != 0) {
      /* Out of memory: the key is stranded until the next settle of this
       * lane frees memory; keep it busy-free so nothing runs out of order. */
      return;
    }
  } else {
    key_drop(ks, k);
  }
}

void keysched_again(keysched *ks, delivery *d) {
  keyq *k = busy_take(ks, d);
  if (k == NULL) return;
  k->busy = 0;
  heap_push(ks, k);
}

delivery *keysched_evict(keysched *ks, delivery *d) {
  keyq *k = busy_take(ks, d);
  if (k == NULL) return NULL;
  for (delivery *x = k->head; x; x = x->next) ks->count--;
  delivery *rest = d->next; /* d is the head */
  d->next = NULL;
  k->head = k->tail = NULL;
  k->busy = 0;
  key_drop(ks, k);
  return rest;
}

size_t keysched_count(const keysched *ks) {
  return ks->count;
}
