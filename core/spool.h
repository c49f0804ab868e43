/* The spool: where accepted events wait between "answered 200" and "delivered". */
#ifndef HOOKD_SPOOL_H
#define HOOKD_SPOOL_H

/*
 * The interface every backend implements (DESIGN §1): store a batch, claim
 * due deliveries, complete / retry / dead-letter one, replay, prune. This
 * build has the in-memory backend: events are deduplicated and handed to the
 * dispatcher at once, and nothing survives a restart. The durable SQLite
 * backend (issue "Durable delivery") implements the same functions; the
 * server and the dispatcher do not change.
 *
 * Threads: spool_open/close, spool_seen and spool_store on the loop thread;
 * spool_complete / spool_retry / spool_dead on delivery workers.
 */

#include <stddef.h>
#include "config.h"
#include "event.h"

typedef struct spool spool;

/* Receives each delivery once it is durable (or recovered on start). It then
 * belongs to the sink. Called on the loop thread. */
typedef void (*spool_sink_fn)(void *data, delivery *d);
/* Tells the server that the event of a spool_store() call is durable
 * (status 0) or could not be stored (negative: answer 503). Loop thread. */
typedef void (*spool_stored_fn)(void *data, int status);

spool *spool_open(const config *cfg, spool_sink_fn sink, void *sink_data, char *err,
                  size_t errlen);
void spool_close(spool *sp);

/* 1 when (source, id) was accepted before (a retry by the sender), else 0. */
int spool_seen(spool *sp, const char *source, const char *id);

/* Stores ev (the spool takes a reference) with one delivery per instance
 * index; n may be 0 (an unrouted event is still recorded for deduplication).
 * Calls stored(data, status) once, possibly before returning. Returns 0, or
 * a negative code when the request was refused before anything was stored
 * (then stored is not called). */
int spool_store(spool *sp, event *ev, const size_t *instances, size_t n, spool_stored_fn stored,
                void *data);

/* Delivery outcomes. The spool records them; the caller keeps ownership of d. */
void spool_complete(spool *sp, const delivery *d);
void spool_retry(spool *sp, const delivery *d, const char *error);
void spool_dead(spool *sp, const delivery *d, const char *error);

/* Deliveries accepted and not finished (queued, in flight or waiting to retry). */
size_t spool_pending(spool *sp);

#endif
