/* Process isolation, hookd's side: start a plugin instance's child process, call deliver() in it,
 * supervise and restart it. */
#ifndef HOOKD_PLUGIN_PROC_H
#define HOOKD_PLUGIN_PROC_H

/*
 * An instance with "isolation": "process" runs in a child process of its
 * own: hookd re-executed (the binary it was started from, held open since
 * start) with the hidden command `plugin-child` (plugin_child.h). The child
 * gets the instance's config as hookd resolved it — ${...} substituted by
 * the generation that owns the instance, passed over a socket, never on the
 * command line or in the environment — loads the module, runs init once and
 * then deliver() on `concurrency` threads of its own, one data channel each
 * (plugin_wire.h).
 *
 * A supervisor thread per instance watches the child (a pidfd: hookd never
 * calls waitpid(-1), so plugins may reap their own children), logs what it
 * writes to stdout and stderr, reaps it when it dies, kills what is left of
 * its process group and starts a new one after a backoff: 100 ms (or
 * backoff_initial_ms when smaller) doubling per consecutive failure up to
 * the instance's backoff_max_ms, at most 30 s. A finished call resets it.
 *
 * Ownership: the instance holds its plugin_proc until plugin_proc_release;
 * from then on the supervisor owns it, stops the child (EXIT, then SIGKILL
 * to its process group after shutdown_timeout_ms) and frees it, so a reload
 * never waits on a child on the loop thread.
 */

#include <stddef.h>
#include <stdint.h>
struct config;
#include "hookd/plugin.h"
#include "plugin_host.h"

typedef struct plugin_proc plugin_proc;

/* Opens the running hookd binary (to start children from it even after it
 * was replaced on disk or privileges were dropped) and takes the parts of
 * the environment a child may see. Main thread, early: `run` and `check`
 * call it before loading the config. Returns 0 or -1 with err; without it
 * plugin_proc_start tries the same on first use. */
int plugin_proc_prepare(char *err, size_t errlen);

/* Starts inst's child and runs its init (waiting at most the instance's
 * timeout_ms), then its supervisor. On success sets inst->proc and returns
 * 0. On failure returns -1 with one line in err worded as a thread-mode
 * init failure, positions of config errors included (a crash, a hang or an
 * exit during init say so). Main thread (load, reload, check). */
int plugin_proc_start(plugin_instance *inst, const struct config *cfg, char *err, size_t errlen);

/* One delivery in the child: returns a hookd_result, or PLUGIN_CRASHED
 * (the child died during the call), PLUGIN_TIMED_OUT (the call ran past
 * timeout_ms and the child was killed) or PLUGIN_UNAVAILABLE (no child
 * ready; out->retry_after_ms says when to ask again). Worker threads. */
int plugin_proc_deliver(plugin_proc *p, const hookd_event *view, hookd_outcome *out);

/* Shutdown: calls still running after timeout_ms (a little less, so the
 * dispatcher's own wait sees them return) get their child killed and return
 * PLUGIN_UNAVAILABLE. */
void plugin_proc_stopping(plugin_proc *p, uint32_t timeout_ms);

/* Gives p to its supervisor, which stops the child (it runs destroy) and
 * frees p. No call may be running or start on p any more. */
void plugin_proc_release(plugin_proc *p);

/* End of the process: releases every plugin_proc still registered and waits
 * until every child is reaped, SIGKILLing the process groups of those still
 * alive at timeout_ms. Returns how many supervisors did not finish (0 in
 * all but a child stuck in the kernel). */
size_t plugin_proc_wait_all(uint32_t timeout_ms);

/* What the status page shows of an isolated instance. */
typedef struct plugin_proc_status {
  int pid;               /* 0 while no child runs */
  const char *state;     /* starting | ready | restarting | init failed | stopping */
  uint64_t restarts;     /* children started after the first, by instance name */
  uint64_t crashes;      /* children that died without hookd asking */
  int64_t restart_in_ms; /* with restarting / init failed: until the next try */
  char last_exit[160];   /* how the last child ended, "" when none has */
  char error[512];       /* why the last restart failed, "" when it did not */
} plugin_proc_status;
void plugin_proc_get_status(plugin_proc *p, plugin_proc_status *out);

#endif
