/* Accepted events and their deliveries: the objects that move from the server to the spool to the dispatcher. */
#ifndef HOOKD_EVENT_H
#define HOOKD_EVENT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

/* One accepted event. Immutable after event_new() except for the reference
 * count and the atomics below, so worker threads read it without locks. Freed when the last
 * delivery that references it is done. */
typedef struct event {
  atomic_uint refs;
  uint64_t seq;         /* accept order, assigned by the spool */
  int64_t received_ms;  /* Unix ms */
  const char *source;   /* all strings point into the same allocation */
  const char *id;
  const char *type;
  const char *order_key; /* NULL when none */
  const char *content_type;
  const char *body;     /* NUL-terminated */
  size_t body_len;
  /* The parsed envelope, made on first use by event_root() so that a queued
   * event costs only its bytes. Owned. */
  _Atomic(cJSON *) root;
  /* Set by the spool for an event it stored in this run and handed all its
   * deliveries out: `open` counts those not finished, `had_dead` says one
   * went dead, so the worker finishing the last one knows the event is done
   * without asking the database. Recovered and replayed events leave
   * `fresh` 0. */
  atomic_int fresh;
  atomic_uint open;
  atomic_int had_dead;
} event;

/* Copies the strings and the body into one allocation and takes ownership of
 * root (may be NULL: parsed when first needed). Returns NULL when out of
 * memory (root is then not freed). The new event holds one reference. */
event *event_new(const char *source, const char *id, const char *type, const char *order_key,
                 const char *content_type, const char *body, size_t body_len, cJSON *root,
                 int64_t received_ms);
void event_ref(event *ev);
/* The parsed body, parsing it on first use; NULL when it is not JSON or
 * memory ran out. Any thread: concurrent first calls agree on one tree. */
const cJSON *event_root(event *ev);
void event_unref(event *ev);

/* One event on its way to one plugin instance. Owned by whoever holds it:
 * the spool until submitted, then the dispatcher until completed. */
typedef struct delivery {
  event *ev;            /* holds a reference */
  uint32_t instance;    /* index into the plugin instances */
  uint32_t attempt;     /* attempts made so far (0 before the first) */
  int64_t due_ms;       /* not before (Unix ms) */
  uint64_t spool_id;    /* the spool's handle for this delivery */
  char *instance_name;  /* set only between the spool reading it back and the sink; owned */
  struct delivery *next; /* intrusive queue link */
} delivery;

delivery *delivery_new(event *ev, uint32_t instance);
void delivery_free(delivery *d);

int64_t now_ms(void); /* Unix ms, CLOCK_REALTIME */
int64_t mono_ms(void); /* CLOCK_MONOTONIC ms */

#endif
