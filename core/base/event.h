/* Accepted events and their deliveries: the objects that move from the server to the spool to the
 * dispatcher. */
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
  uint64_t seq;        /* accept order, assigned by the spool */
  int64_t received_ms; /* Unix ms */
  const char *source;  /* all strings point into the same allocation */
  const char *id;
  const char *type;
  const char *order_key; /* NULL when none */
  const char *content_type;
  const char *body; /* NUL-terminated */
  size_t body_len;
  /* The parsed envelope, made on first use by event_root() so that a queued
   * event costs only its bytes. Owned. */
  _Atomic(cJSON *) root;
  /* The request's headers for the status page ("Name: value" lines,
   * credentials and signatures masked), set by event_set_headers before the
   * event is shared; NULL when not kept (events read back from the spool). */
  char *headers;
} event;

/* Copies the strings and the body into one allocation and takes ownership of
 * root (may be NULL: parsed when first needed). Returns NULL when out of
 * memory (root is then not freed). The new event holds one reference. */
event *event_new(const char *source, const char *id, const char *type, const char *order_key,
                 const char *content_type, const char *body, size_t body_len, cJSON *root,
                 int64_t received_ms);
/* Keeps a copy of len bytes of header text with ev (replacing any). Call it
 * before ev is shared. Returns 0, or -1 when out of memory. */
int event_set_headers(event *ev, const char *text, size_t len);
void event_ref(event *ev);
/* The parsed body, parsing it on first use; NULL when it is not JSON or
 * memory ran out. Any thread: concurrent first calls agree on one tree. */
const cJSON *event_root(event *ev);
void event_unref(event *ev);

/* One event on its way to one plugin instance. Owned by whoever holds it:
 * the spool's lane while it waits, the worker that claimed it until it
 * settles it back to the spool. */
typedef struct delivery {
  event *ev;             /* holds a reference */
  void *lane;            /* the spool lane it belongs to (spool_lane *) */
  uint32_t attempt;      /* attempts made so far (0 before the first) */
  uint32_t crashes;      /* times hookd or the plugin's process died while it ran */
  int64_t due_ms;        /* not before (Unix ms) */
  uint64_t spool_id;     /* the spool's handle for this delivery */
  int metered;           /* the dispatcher counted it in metrics (first claim) */
  uint32_t tries;        /* calls recorded for the status page (the spool's attempt rows) */
  struct delivery *next; /* intrusive queue link */
} delivery;

delivery *delivery_new(event *ev, void *lane);
void delivery_free(delivery *d);

#endif
