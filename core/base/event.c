/* Accepted events (one allocation each, reference counted) and deliveries. */
#include "event.h"

#include <stdlib.h>
#include <string.h>

event *event_new(const char *source, const char *id, const char *type, const char *order_key,
                 const char *content_type, const char *body, size_t body_len, cJSON *root,
                 int64_t received_ms) {
  size_t ls = strlen(source) + 1, li = strlen(id) + 1, lt = strlen(type) + 1;
  size_t lk = order_key ? strlen(order_key) + 1 : 0;
  size_t lc = content_type ? strlen(content_type) + 1 : 1;
  event *ev = malloc(sizeof *ev + ls + li + lt + lk + lc + body_len + 1);
  if (ev == NULL) return NULL;
  char *p = (char *)(ev + 1);
#define COPY(field, s, n) \
  do {                    \
    memcpy(p, s, n);      \
    ev->field = p;        \
    p += n;               \
  } while (0)
  COPY(source, source, ls);
  COPY(id, id, li);
  COPY(type, type, lt);
  if (order_key) {
    COPY(order_key, order_key, lk);
  } else {
    ev->order_key = NULL;
  }
  if (content_type) {
    COPY(content_type, content_type, lc);
  } else {
    *p = '\0';
    ev->content_type = p++;
  }
#undef COPY
  memcpy(p, body, body_len);
  p[body_len] = '\0';
  ev->body = p;
  ev->body_len = body_len;
  atomic_init(&ev->root, root);
  ev->received_ms = received_ms;
  ev->seq = 0;
  atomic_init(&ev->refs, 1);
  ev->headers = NULL;
  return ev;
}

int event_set_headers(event *ev, const char *text, size_t len) {
  char *h = malloc(len + 1);
  if (h == NULL) return -1;
  memcpy(h, text, len);
  h[len] = '\0';
  free(ev->headers);
  ev->headers = h;
  return 0;
}

void event_ref(event *ev) {
  atomic_fetch_add_explicit(&ev->refs, 1, memory_order_relaxed);
}

void event_unref(event *ev) {
  if (ev == NULL) return;
  if (atomic_fetch_sub_explicit(&ev->refs, 1, memory_order_acq_rel) == 1) {
    cJSON_Delete(atomic_load(&ev->root));
    free(ev->headers);
    free(ev);
  }
}

const cJSON *event_root(event *ev) {
  cJSON *root = atomic_load_explicit(&ev->root, memory_order_acquire);
  if (root != NULL) return root;
  cJSON *mine = cJSON_ParseWithLength(ev->body, ev->body_len);
  if (mine == NULL) return NULL;
  cJSON *expected = NULL;
  if (atomic_compare_exchange_strong(&ev->root, &expected, mine)) return mine;
  cJSON_Delete(mine); /* another thread parsed it first */
  return expected;
}

delivery *delivery_new(event *ev, void *lane) {
  delivery *d = calloc(1, sizeof *d);
  if (d == NULL) return NULL;
  event_ref(ev);
  d->ev = ev;
  d->lane = lane;
  return d;
}

void delivery_free(delivery *d) {
  if (d == NULL) return;
  event_unref(d->ev);
  free(d);
}
