/* Dispatcher: per-instance queues, order-key ordering, worker threads, retries with backoff. */
#ifndef HOOKD_DISPATCH_H
#define HOOKD_DISPATCH_H

/*
 * Each plugin instance has its own queue and `concurrency` worker threads
 * that belong to hookd (not libuv's threadpool). Inside a queue, deliveries
 * with the same order key form a FIFO; only its head may run, and only one
 * at a time, so events of one key never run concurrently nor overtake each
 * other, even while the head waits for a retry. Keys are picked by due time,
 * then accept order.
 *
 * A deliver() call that runs past the instance's timeout_ms is logged and
 * counted once (by dispatch_check_timeouts and when it returns). hookd cannot
 * stop a thread safely, so the call keeps its worker and its order key until
 * it returns; other keys go on on the remaining workers. Its result, when it
 * comes, is used as usual.
 */

#include <stddef.h>
#include <stdint.h>
#include "event.h"
#include "plugin_host.h"
#include "spool.h"

typedef struct dispatch dispatch;

/* Creates one queue per instance of host and starts its workers. */
dispatch *dispatch_new(plugin_host *host, spool *sp, char *err, size_t errlen);

/* Queues d for its instance (the dispatcher takes ownership). Loop thread:
 * deliveries are buffered and handed to the workers by dispatch_flush(), so
 * a burst of requests costs one lock and one wake-up per instance. */
void dispatch_submit(dispatch *dp, delivery *d);
void dispatch_flush(dispatch *dp);

/* Logs and counts deliver() calls running past their timeout. Any thread
 * but a worker; the daemon calls it once a second. */
void dispatch_check_timeouts(dispatch *dp);

/* Stops the workers: running deliver() calls finish, nothing new starts.
 * Waits at most timeout_ms in all. hung[i] (n_insts bytes, may be NULL) is set
 * for an instance whose worker did not return in time; its state must not be
 * destroyed. Returns the number of deliveries that were left undelivered. */
size_t dispatch_stop(dispatch *dp, uint32_t timeout_ms, unsigned char *hung);
/* 1 when no delivery is queued, waiting for a retry or running. Loop thread. */
int dispatch_idle(dispatch *dp);
/* 1 while a worker (hung past dispatch_stop's timeout) is still running. */
int dispatch_busy(dispatch *dp);
/* Frees the dispatcher and what it still holds; does nothing while
 * dispatch_busy() (a late worker would touch freed memory). */
void dispatch_free(dispatch *dp);

#endif
