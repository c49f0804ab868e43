/* Dispatcher: each plugin instance's worker threads, which claim deliveries from the spool, run
 * them and settle them (retry, backoff, dead letters, crashes, hangs). */
#ifndef HOOKD_DISPATCH_H
#define HOOKD_DISPATCH_H

/*
 * A generation's dispatcher has one queue per plugin instance, with
 * `concurrency` worker threads that belong to hookd (not libuv's
 * threadpool). Workers claim due deliveries from the instance's spool lane
 * (which keeps per-key order), record the attempt as started, call the
 * plugin and settle the outcome. The lane outlives the generation: after a
 * reload the new generation's queue takes the lane over, and the old one's
 * workers finish what they run and exit.
 *
 * Hangs. A deliver() call past timeout_ms is written off by
 * dispatch_check_timeouts: its attempt counts as failed (retried with
 * backoff, a dead letter at max_attempts), its order key moves on, and a
 * new worker takes the stuck thread's place. hookd cannot stop a thread, so
 * the stuck one keeps running until the call returns, and its result is
 * then ignored. At most `concurrency` written-off threads per instance: past
 * that the instance stops taking deliveries and reports itself unhealthy.
 */

#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "plugin_host.h"
#include "spool.h"

typedef struct dispatch dispatch;

/* Creates one queue per instance of host for lanes[i] (the spool lane of
 * instance i) and starts its workers, which wait for dispatch_attach. */
dispatch *dispatch_new(plugin_host *host, spool *sp, spool_lane *const *lanes, char *err,
                       size_t errlen);

/* Makes dp's queues the owners of their lanes: their workers start
 * claiming, and a previous generation's queues of the same names stop. The
 * last step of a start or a reload, when nothing can fail any more. */
void dispatch_attach(dispatch *dp);

/* Writes off deliver() calls running past their timeout_ms. Any thread but
 * a worker; the daemon calls it every second. */
void dispatch_check_timeouts(dispatch *dp);

/* Looks at each instance's state (ok, open, paused, saturated: pace.h) and
 * logs one line for each that changed. The daemon calls it every second, and
 * the admin endpoints before they show the states. Any thread. */
void dispatch_observe(dispatch *dp);

/* Why an instance of dp takes no deliveries now (its written-off threads
 * reached the cap), or NULL. */
const char *dispatch_unhealthy(dispatch *dp, char *buf, size_t len);

typedef struct dispatch_instance_stats {
  uint64_t written_off; /* deliver() calls written off since start */
  uint32_t stuck;       /* of which still running */
  uint32_t running;     /* deliver() calls running now, not written off */
  int unhealthy;
} dispatch_instance_stats;
void dispatch_instance_get(dispatch *dp, size_t i, dispatch_instance_stats *out);

/* Stops the workers: running deliver() calls finish, nothing new starts.
 * Waits at most timeout_ms in all. hung[i] (n_insts bytes, may be NULL) is set
 * for an instance whose worker did not return in time; its state must not be
 * destroyed. */
void dispatch_stop(dispatch *dp, uint32_t timeout_ms, unsigned char *hung);
/* 1 when no worker of dp runs a delivery and no lane it still owns has one
 * waiting. Loop thread. */
int dispatch_idle(dispatch *dp);
/* 1 while a worker thread (a stuck one included) has not exited. */
int dispatch_busy(dispatch *dp);
/* Frees the dispatcher; does nothing while dispatch_busy() (a late worker
 * would touch freed memory). */
void dispatch_free(dispatch *dp);

#endif
