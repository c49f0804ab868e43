/* The spool: where accepted events wait, durably, between "answered 200" and "delivered". */
#ifndef HOOKD_SPOOL_H
#define HOOKD_SPOOL_H

/*
 * The interface every backend implements (DESIGN §1): store a batch, claim
 * due deliveries, complete / retry / dead-letter one, replay, prune. This is
 * the embedded SQLite backend: data_dir/spool.db in WAL mode, written by one
 * thread of its own that commits everything queued in one transaction (group
 * commit: requests that arrive together share one fsync).
 *
 * Threads: spool_open, spool_recover, spool_close, spool_admit, spool_seen
 * and spool_store on the loop thread; spool_complete / spool_retry /
 * spool_dead on delivery workers (they queue and return at once).
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "config.h"
#include "event.h"

typedef struct spool spool;

/* Receives each delivery recovered on start or replayed, with the name of
 * its plugin instance; sets d->instance and takes it (returns 0), or
 * returns -1 when no such instance is configured now (the delivery stays
 * pending in the database). Loop thread. */
typedef int (*spool_sink_fn)(void *data, delivery *d, const char *instance);

/* The result of a spool_store(), on the loop thread. */
#define SPOOL_STORED 0    /* durable: answer the success status */
#define SPOOL_DUPLICATE 1 /* (source, id) was accepted before: success, nothing stored */
#define SPOOL_EIO (-5)    /* the commit failed: answer 503 */
/* With SPOOL_STORED, ds holds the new deliveries (one per instance index
 * given to spool_store, in that order); each now belongs to the callee. The
 * array itself is only valid during the call. */
typedef void (*spool_stored_fn)(void *data, int status, delivery **ds, size_t n);

/* Opens (creating when needed) data_dir/spool.db and starts the writer
 * thread. Refuses a database of another schema version with a clear
 * message. */
spool *spool_open(const config *cfg, uv_loop_t *loop, spool_sink_fn sink, void *sink_data,
                  char *err, size_t errlen);

/* Hands every unfinished delivery to the sink, in accept order, with its
 * attempt count and next time. Once, before the server starts. Returns how
 * many, or -1. */
int64_t spool_recover(spool *sp);

/* Stops the writer after it committed everything queued and closes the
 * database; outcomes reported later are dropped (their deliveries run again
 * on the next start). The memory stays, for a worker that outlived the
 * shutdown timeout. Loop thread, after the dispatcher stopped. */
void spool_stop(spool *sp);
/* spool_stop, then frees everything. */
void spool_close(spool *sp);

/* 0 when a new event may be accepted, else a short reason for the 503
 * (too many pending deliveries, disk space below the floor, spool failed). */
const char *spool_admit(spool *sp);

/* 1 when (source, id) is known to be accepted already (fast path, no I/O);
 * 0 means "not known here" — the store still deduplicates durably. */
int spool_seen(spool *sp, const char *source, const char *id);

/* Queues ev (the spool takes a reference) with one delivery per instance
 * index (n may be 0); names[k] is the name of instance index k, stored with
 * the delivery so that a restart or a reload maps it back by name (names
 * must stay valid until stored() runs; instances is copied). stored(data, status) runs on the loop thread once the
 * transaction holding it committed, or failed. Returns 0, or a negative code
 * when it was refused at once (stored is then not called). */
int spool_store(spool *sp, event *ev, const size_t *instances, const char *const *names, size_t n,
                spool_stored_fn stored, void *data);

/* Delivery outcomes, from workers. The caller keeps ownership of d. */
void spool_complete(spool *sp, const delivery *d);
void spool_retry(spool *sp, const delivery *d, const char *error);
void spool_dead(spool *sp, const delivery *d, const char *error);

/* Numbers for metrics and the status page (any thread). */
typedef struct spool_stats {
  uint64_t pending;      /* deliveries not finished */
  uint64_t dead;         /* dead letters in the database */
  uint64_t db_bytes;     /* size of spool.db and its WAL */
  uint64_t commits;      /* transactions committed */
  uint64_t commit_errors;
  uint64_t checkpoints;   /* WAL checkpoints completed */
  int wal_pages;          /* WAL length after the last commit */
  int64_t oldest_pending_ms; /* accept time of the oldest unfinished delivery, 0 if none */
} spool_stats;
void spool_get_stats(spool *sp, spool_stats *out);

#endif
