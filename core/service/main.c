/* hookd: command line (run, check, version, help), start-up order and graceful shutdown. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <llhttp.h>
#include <pthread.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "cli_controls.h"
#include "cli_plugins.h"
#include "config.h"
#include "crash.h"
#include "dispatch.h"
#include "generation.h"
#include "dlq.h"
#include "http_server.h"
#include "http_client.h"
#include "log.h"
#include "plugin_child.h"
#include "plugin_host.h"
#include "plugin_proc.h"
#include "privs.h"
#include "router.h"
#include "listeners.h"
#include "spool.h"
#include "spool_pg.h"
#include "spool_sqlite.h"
#include "clock.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_DAMAGED 3

static const char usage[] =
    "usage: hookd COMMAND [-c FILE]\n"
    "\n"
    "hookd receives webhooks over HTTP, checks their signatures and routes each\n"
    "event to plugins (shared objects) named in its config file.\n"
    "\n"
    "commands:\n"
    "  run -c FILE     run the service (also: hookd -c FILE)\n"
    "  check -c FILE   validate the config, load every plugin, init and destroy it;\n"
    "                  exit 0 when all is well, 2 otherwise\n"
    "  dlq list -c FILE            dead letters, newest first\n"
    "  dlq show ID -c FILE         one dead letter with its event\n"
    "  dlq replay ID|--all -c FILE deliver again (a running hookd picks it up within a second)\n"
    "  dlq purge ID -c FILE        forget a dead letter\n"
    "  spool check -c FILE         check the whole spool file (hookd may be running);\n"
    "                              exit 0 healthy, 3 damaged\n"
    "  pause INSTANCE -c FILE      hold an instance's deliveries in the spool (events are\n"
    "                              still accepted); survives restarts\n"
    "  resume INSTANCE -c FILE     deliver what waited, in order, at the instance's rate\n"
    "  replay --since DURATION [--type PATTERN] [--source NAME] --to INSTANCE [--dry-run]\n"
    "         -c FILE              deliver stored events (received within DURATION, e.g.\n"
    "                              7d) again to one instance, in accept order; --dry-run\n"
    "                              prints \"N events\"; on a terminal, shows progress\n"
    "                              (a running hookd applies pause, resume and replay within\n"
    "                              a second; a stopped one when it starts)\n"
    "  plugins [MODULE] -c FILE    modules in plugin_dirs (version, ABI, description);\n"
    "                              with MODULE, its options: types, defaults, descriptions\n"
    "  try -c FILE --instance NAME EVENT.json [--attempt N] [--source NAME]\n"
    "                              one deliver() of the event through the instance, no\n"
    "                              service; exit 0 OK, 75 RETRY, 1 FAIL\n"
    "  version         versions of hookd, the plugin ABI and the libraries\n"
    "  help            this text (also: -h, --help)\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure, 2 bad config or usage, 3 damaged spool\n"
    "(hookd will not start on it; see `hookd spool check`); try: 75 RETRY.\n"
    "signals: SIGTERM and SIGINT stop gracefully (in-flight requests are answered,\n"
    "running deliveries finish within shutdown_timeout_ms); SIGHUP reloads the config.\n";

/* A reload on its thread: config, ${file:} contents and plugin init run
 * there, so a slow one never blocks the loop; the swap runs on the loop. */
typedef struct reload_job {
  struct hookd_daemon *dm;
  generation *g; /* the result; NULL on failure (err) */
  char err[1024];
  int abandoned; /* took longer than reload_timeout_ms: its result is dropped */
  struct reload_job *next;
} reload_job;

/* A POST /reload waiting for the outcome of the reload that serves it. */
typedef struct reload_waiter {
  admin_reload_done done;
  void *arg;
  struct reload_waiter *next;
} reload_waiter;

/* Everything `run` owns, torn down in reverse order. */
typedef struct hookd_daemon {
  const char *file;
  generation *gen;     /* current */
  generation *retired; /* reloaded away, finishing their deliveries */
  spool *sp;
  listeners *srv;
  uv_loop_t loop;
  uv_timer_t watchdog;
  uv_timer_t deadline;
  uv_timer_t sd_timer; /* systemd watchdog pets */
  uint64_t sd_watchdog_usec;
  uv_signal_t sig_term, sig_int, sig_hup;
  int stopping;
  int aborted;          /* past shutdown_timeout_ms: slow connections were closed */
  int hard_stop;        /* the loop was stopped with handles still open */
  int64_t stop_started; /* mono ms of the first SIGTERM/SIGINT */
  /* Reloads: one at a time; asking during one queues one more. */
  pthread_mutex_t reload_mu;
  uv_async_t reload_async;
  uv_timer_t reload_timer;
  reload_job *reload_running; /* loop thread */
  reload_job *reload_done;    /* finished jobs, under reload_mu */
  int reload_closed;          /* the async handle is closing (under reload_mu) */
  int reload_again;
  size_t reload_threads; /* threads not finished, under reload_mu */
  reload_waiter *waiting, *waiting_next;
} hookd_daemon;

/* --- systemd ---------------------------------------------------------------- */

/* READY=1 once listeners are bound and recovery is done, STOPPING=1 at the
 * start of a shutdown, WATCHDOG=1 while both the loop and the spool writer
 * make progress. Without NOTIFY_SOCKET these do nothing. */
static void on_sd_timer(uv_timer_t *t) {
  hookd_daemon *dm = t->data;
  spool_stats st;
  spool_get_stats(dm->sp, &st);
  int64_t age = st.writer_beat_ms ? clock_mono_ms() - st.writer_beat_ms : 0;
  int64_t limit = (int64_t)(dm->sd_watchdog_usec / 1000) / 2 + 500;
  if (age <= limit) {
    sd_notify(0, "WATCHDOG=1");
  } else {
    log_write(HLOG_ERROR, NULL,
              "the spool writer has made no progress for %lld ms: not petting the systemd "
              "watchdog",
              (long long)age);
  }
}

static void start_sd_watchdog(hookd_daemon *dm) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
  dm->sd_watchdog_usec = usec;
  uv_timer_init(&dm->loop, &dm->sd_timer);
  dm->sd_timer.data = dm;
  uint64_t every = usec / 1000 / 2;
  uv_timer_start(&dm->sd_timer, on_sd_timer, 0, every ? every : 1);
  uv_unref((uv_handle_t *)&dm->sd_timer);
}

/* --- generations ------------------------------------------------------------- */

/* Frees retired generations that have nothing left to do. */
static void reap(hookd_daemon *dm) {
  for (generation **pp = &dm->retired; *pp;) {
    generation *g = *pp;
    if (!generation_reapable(g)) {
      pp = &g->next;
      continue;
    }
    *pp = g->next;
    if (generation_free(g, 1000) == 0) {
      log_write(HLOG_INFO, NULL,
                "reload: the previous config's plugin instances are drained and closed");
    }
  }
}

static void on_watchdog(uv_timer_t *t) {
  hookd_daemon *dm = t->data;
  dispatch_check_timeouts(dm->gen->dp);
  for (generation *g = dm->retired; g; g = g->next) dispatch_check_timeouts(g->dp);
  dispatch_observe(dm->gen->dp); /* one log line per instance state change */
  reap(dm);
  http_server_release_memory();
}

/* Makes g (loaded and checked) current. Returns 0, or -1 with err and g
 * freed. */
static int swap_in(hookd_daemon *dm, generation *g, char *err, size_t errlen) {
  if (generation_start(g, dm->sp, err, errlen) != 0 || listeners_set_generation(dm->srv, g) != 0) {
    if (!err[0]) snprintf(err, errlen, "out of memory");
    g->retired = 1;
    generation_unref(g);
    generation_free(g, 1000);
    return -1;
  }
  /* Nothing can fail from here: the lanes move to the new instances. */
  generation_activate(g);
  char fixed[256];
  generation_fixed_changes(&dm->gen->cfg, &g->cfg, fixed, sizeof fixed);
  if (fixed[0]) {
    log_write(HLOG_WARN, NULL, "reload: %s changed; that takes a restart (the old values stay)",
              fixed);
  }
  generation *old = dm->gen;
  old->retired = 1;
  old->next = dm->retired;
  dm->retired = old;
  generation_unref(old); /* the daemon's reference; the server moved to g */
  dm->gen = g;           /* and keeps the reference generation_load gave */
  log_setup(g->cfg.log_level, g->cfg.log_format);
  log_write(HLOG_INFO, NULL, "reloaded %s: %zu source(s), %zu plugin instance(s), %zu route(s)",
            dm->file, g->cfg.n_sources, g->cfg.n_plugins, g->cfg.n_routes);
  reap(dm);
  return 0;
}

static void answer_waiters(reload_waiter *w, int status, const char *why) {
  while (w) {
    reload_waiter *next = w->next;
    w->done(w->arg, status, why);
    free(w);
    w = next;
  }
}

static void *reload_main(void *arg) {
  reload_job *j = arg;
  hookd_daemon *dm = j->dm;
  j->g = generation_load(dm->file, 0, j->err, sizeof j->err);
  pthread_mutex_lock(&dm->reload_mu);
  j->next = dm->reload_done;
  dm->reload_done = j;
  dm->reload_threads--;
  if (!dm->reload_closed) uv_async_send(&dm->reload_async);
  pthread_mutex_unlock(&dm->reload_mu);
  return NULL;
}

static void start_reload(hookd_daemon *dm) {
  reload_job *j = calloc(1, sizeof *j);
  pthread_t th;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (j) j->dm = dm;
  pthread_mutex_lock(&dm->reload_mu);
  int rc = j ? pthread_create(&th, &attr, reload_main, j) : ENOMEM;
  if (rc == 0) dm->reload_threads++;
  pthread_mutex_unlock(&dm->reload_mu);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    free(j);
    log_write(HLOG_ERROR, NULL, "reload failed, config unchanged: cannot start a thread: %s",
              strerror(rc));
    answer_waiters(dm->waiting, 503, "cannot start a reload now");
    dm->waiting = NULL;
    return;
  }
  dm->reload_running = j;
}

static void on_reload_timeout(uv_timer_t *t);

/* Starts a reload, or queues one behind the one running. Loop thread. */
static void request_reload(hookd_daemon *dm, admin_reload_done done, void *arg) {
  if (done) {
    reload_waiter *w = calloc(1, sizeof *w);
    if (w == NULL) {
      done(arg, 503, "out of memory");
      return;
    }
    w->done = done;
    w->arg = arg;
    reload_waiter **list = dm->reload_running ? &dm->waiting_next : &dm->waiting;
    w->next = *list;
    *list = w;
  }
  if (dm->stopping) {
    answer_waiters(dm->waiting, 503, "shutting down");
    answer_waiters(dm->waiting_next, 503, "shutting down");
    dm->waiting = dm->waiting_next = NULL;
    return;
  }
  if (dm->reload_running) {
    dm->reload_again = 1;
    return;
  }
  start_reload(dm);
  if (dm->reload_running) {
    uv_timer_start(&dm->reload_timer, on_reload_timeout, dm->gen->cfg.reload_timeout_ms, 0);
  }
}

/* The running reload's waiters are answered; the next queued one starts. */
static void reload_finished(hookd_daemon *dm, int status, const char *why) {
  uv_timer_stop(&dm->reload_timer);
  dm->reload_running = NULL;
  answer_waiters(dm->waiting, status, why);
  dm->waiting = dm->waiting_next;
  dm->waiting_next = NULL;
  if (dm->reload_again || dm->waiting) {
    dm->reload_again = 0;
    request_reload(dm, NULL, NULL);
  }
}

static void on_reload_timeout(uv_timer_t *t) {
  hookd_daemon *dm = t->data;
  reload_job *j = dm->reload_running;
  if (j == NULL) return;
  char why[256];
  snprintf(why, sizeof why,
           "abandoned after reload_timeout_ms (%u ms): reading the config, a ${file:} or a "
           "plugin's init did not finish",
           dm->gen->cfg.reload_timeout_ms);
  log_write(HLOG_ERROR, NULL, "reload %s; config unchanged", why);
  j->abandoned = 1; /* its thread may still finish; then its result is dropped */
  reload_finished(dm, 503, why);
}

static void on_reload_async(uv_async_t *h) {
  hookd_daemon *dm = h->data;
  pthread_mutex_lock(&dm->reload_mu);
  reload_job *done = dm->reload_done;
  dm->reload_done = NULL;
  pthread_mutex_unlock(&dm->reload_mu);
  while (done) {
    reload_job *j = done;
    done = j->next;
    if (j->abandoned || dm->stopping) {
      if (j->g) {
        j->g->retired = 1;
        generation_unref(j->g);
        generation_free(j->g, 1000);
      }
      if (j == dm->reload_running) reload_finished(dm, 503, "shutting down");
      free(j);
      continue;
    }
    char err[1024] = "";
    if (j->g == NULL) {
      log_write(HLOG_ERROR, NULL, "reload failed, config unchanged: %s", j->err);
      reload_finished(dm, 400, j->err);
    } else if (swap_in(dm, j->g, err, sizeof err) != 0) {
      log_write(HLOG_ERROR, NULL, "reload failed, config unchanged: %s", err);
      reload_finished(dm, 400, err);
    } else {
      reload_finished(dm, 200, "reloaded");
    }
    free(j);
  }
}

static void admin_reload(void *data, admin_reload_done done, void *arg) {
  request_reload(data, done, arg);
}

/* --- shutdown ---------------------------------------------------------------- */

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  close_handle(h);
}

static void close_reload_async(hookd_daemon *dm) {
  pthread_mutex_lock(&dm->reload_mu);
  dm->reload_closed = 1;
  pthread_mutex_unlock(&dm->reload_mu);
  if (dm->reload_async.loop) close_handle((uv_handle_t *)&dm->reload_async);
}

static void on_drained(void *data) {
  hookd_daemon *dm = data;
  close_handle((uv_handle_t *)&dm->watchdog);
  close_handle((uv_handle_t *)&dm->deadline);
  close_handle((uv_handle_t *)&dm->reload_timer);
  close_reload_async(dm);
  /* The signal handlers stay installed (a second SIGTERM during the
   * delivery drain must not kill hookd) but no longer keep the loop up. */
  uv_unref((uv_handle_t *)&dm->sig_term);
  uv_unref((uv_handle_t *)&dm->sig_int);
  uv_unref((uv_handle_t *)&dm->sig_hup);
}

static void on_deadline(uv_timer_t *t) {
  hookd_daemon *dm = t->data;
  if (!dm->aborted) {
    /* Slow clients are cut off; requests waiting for the spool get their
     * answer first (the drain then completes by itself). */
    log_write(HLOG_WARN, NULL, "requests still open after shutdown_timeout_ms; closing them");
    dm->aborted = 1;
    listeners_abort(dm->srv);
    uv_timer_start(&dm->deadline, on_deadline, 5000, 0);
    return;
  }
  /* The spool did not answer for 5 s more: stop the loop. The server's
   * memory is then left alone (a late answer may still refer to it). */
  log_write(HLOG_ERROR, NULL, "the spool did not answer pending requests; stopping anyway");
  dm->hard_stop = 1;
  uv_stop(&dm->loop);
}

static void on_signal(uv_signal_t *h, int signum) {
  hookd_daemon *dm = h->data;
  if (signum == SIGHUP) {
    if (dm->stopping) return;
    log_write(HLOG_INFO, NULL, "SIGHUP: reloading %s", dm->file);
    request_reload(dm, NULL, NULL);
    return;
  }
  if (dm->stopping) return; /* already stopping: repeats change nothing */
  dm->stopping = 1;
  dm->stop_started = clock_mono_ms();
  sd_notify(0, "STOPPING=1");
  log_write(HLOG_INFO, NULL, "%s: stopping (no new connections, answering requests in progress)",
            signum == SIGTERM ? "SIGTERM" : "SIGINT");
  if (dm->reload_running) reload_finished(dm, 503, "shutting down");
  uv_timer_start(&dm->deadline, on_deadline, dm->gen->cfg.shutdown_timeout_ms, 0);
  listeners_drain(dm->srv, on_drained, dm);
}

static int load_config(config *cfg, const char *file) {
  char err[1024];
  if (config_load(cfg, file, err, sizeof err) != 0) {
    fprintf(stderr, "hookd: %s\n", err);
    return -1;
  }
  return 0;
}

static int cmd_check(const char *file) {
  config cfg;
  if (load_config(&cfg, file) != 0) return EXIT_USAGE;
  log_setup(HLOG_WARN, cfg.log_format);
  char err[1024];
  if (privs_check(&cfg, err, sizeof err) != 0) {
    fprintf(stderr, "hookd: %s\n", err);
    config_free(&cfg);
    return EXIT_USAGE;
  }
  plugin_host host;
  int rc = 0;
  if (plugin_proc_prepare(err, sizeof err) != 0) log_write(HLOG_WARN, NULL, "%s", err);
  if (plugin_host_load(&host, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "hookd: %s\n", err);
    plugin_proc_wait_all(cfg.shutdown_timeout_ms);
    config_free(&cfg);
    return EXIT_USAGE;
  }
  plugin_host_advise(&host, stdout);
  router *rt = router_new(&cfg, err, sizeof err);
  if (rt == NULL) {
    fprintf(stderr, "hookd: %s\n", err);
    rc = EXIT_USAGE;
  } else {
    printf("%s: OK (%zu source(s), %zu plugin instance(s), %zu route(s))\n", file, cfg.n_sources,
           cfg.n_plugins, cfg.n_routes);
    if (cfg.spool_backend == SPOOL_BACKEND_POSTGRES) {
      /* The URL is a secret: shown with its password masked. The database
       * is not contacted here; `hookd spool check` does. */
      char masked[1024];
      config_mask_url(cfg.spool_url, masked, sizeof masked);
      printf("spool: PostgreSQL at %s, lease %llu ms (not contacted; see hookd spool check)\n",
             masked, (unsigned long long)cfg.spool_lease_ms);
    }
  }
  router_free(rt);
  plugin_host_unload(&host, NULL);
  /* Process-isolated instances: their children run destroy and exit. */
  plugin_proc_wait_all(cfg.shutdown_timeout_ms);
  config_free(&cfg);
  return rc;
}

/* Installs the loop's timers, signals and the reload machinery. */
static void start_handles(hookd_daemon *dm) {
  uv_timer_init(&dm->loop, &dm->watchdog);
  dm->watchdog.data = dm;
  uv_timer_start(&dm->watchdog, on_watchdog, 1000, 1000);
  uv_unref((uv_handle_t *)&dm->watchdog);
  uv_timer_init(&dm->loop, &dm->deadline);
  dm->deadline.data = dm;
  uv_timer_init(&dm->loop, &dm->reload_timer);
  dm->reload_timer.data = dm;
  uv_unref((uv_handle_t *)&dm->reload_timer);
  uv_async_init(&dm->loop, &dm->reload_async, on_reload_async);
  dm->reload_async.data = dm;
  uv_unref((uv_handle_t *)&dm->reload_async);
  uv_signal_init(&dm->loop, &dm->sig_term);
  uv_signal_init(&dm->loop, &dm->sig_int);
  uv_signal_init(&dm->loop, &dm->sig_hup);
  dm->sig_term.data = dm->sig_int.data = dm->sig_hup.data = dm;
  uv_signal_start(&dm->sig_term, on_signal, SIGTERM);
  uv_signal_start(&dm->sig_int, on_signal, SIGINT);
  uv_signal_start(&dm->sig_hup, on_signal, SIGHUP);
}

/* Opens the spool, starts the first generation's workers and reads back
 * what the last run left. Returns 0 or an exit code. */
static int open_spool(hookd_daemon *dm) {
  char err[2048];
  int code = 0;
  generation *g = dm->gen;
  dm->sp = spool_open(&g->cfg, &dm->loop, &code, err, sizeof err);
  if (dm->sp == NULL) {
    log_write(HLOG_ERROR, NULL, "%s", err);
    return code == SPOOL_EDAMAGED ? EXIT_DAMAGED : EXIT_RUNTIME;
  }
  /* The lanes exist (with their max_crashes) before recovery counts the
   * crashes of what was running. */
  if (generation_start(g, dm->sp, err, sizeof err) != 0) {
    log_write(HLOG_ERROR, NULL, "cannot start the dispatcher: %s", err);
    return EXIT_RUNTIME;
  }
  code = spool_recover(dm->sp, err, sizeof err);
  if (code != 0) {
    log_write(HLOG_ERROR, NULL, "%s", err);
    return code == SPOOL_EDAMAGED ? EXIT_DAMAGED : EXIT_RUNTIME;
  }
  return 0;
}

/* After the loop: running deliveries end (within what is left of
 * shutdown_timeout_ms) in every generation, then the spool commits and
 * closes. */
static int shut_down(hookd_daemon *dm, int rc) {
  if (dm->hard_stop) {
    /* Connections are still open and refer to the server: leave it. */
    if (dm->srv) generation_unref(dm->gen);
  } else if (dm->srv) {
    listeners_free(dm->srv); /* drops the listeners' generation reference */
  }
  dm->srv = NULL;
  int64_t spent = dm->stopping ? clock_mono_ms() - dm->stop_started : 0;
  int64_t budget = (int64_t)dm->gen->cfg.shutdown_timeout_ms - spent;
  if (budget < 0) budget = 0;
  int busy = 0;
  dm->gen->retired = 1;
  dm->gen->next = dm->retired;
  dm->retired = NULL;
  for (generation *r = dm->gen, *next; r; r = next) {
    next = r->next;
    int64_t t0 = clock_mono_ms();
    if (generation_free(r, (uint32_t)budget) != 0) busy = 1;
    budget -= clock_mono_ms() - t0;
    if (budget < 0) budget = 0;
  }
  if (dm->sp) {
    spool_stats st;
    spool_get_stats(dm->sp, &st);
    if (st.pending) {
      log_write(HLOG_INFO, NULL, "%llu deliveries left in the spool; they resume on the next start",
                (unsigned long long)st.pending);
    }
  }
  /* Plugin children: asked to exit when their instances were unloaded;
   * what is left after the budget gets SIGKILL, and every one is reaped. */
  if (plugin_proc_wait_all((uint32_t)budget) != 0) {
    log_write(HLOG_WARN, NULL, "a plugin process could not be reaped");
  }
  pthread_mutex_lock(&dm->reload_mu);
  int reloading = dm->reload_threads > 0;
  pthread_mutex_unlock(&dm->reload_mu);
  if (busy || reloading) {
    /* A deliver() call outlived shutdown_timeout_ms, or a reload thread is
     * stuck: hookd cannot stop them; commit what is known and exit without
     * freeing what they may still touch. A delivery cut short runs again on
     * the next start. */
    if (dm->sp) spool_stop(dm->sp);
    log_write(HLOG_WARN, NULL, "stopped with %s still running",
              busy ? "a deliver() call" : "a reload");
    return rc;
  }
  /* The writer commits the outcomes the workers reported, then closes. */
  spool_free(dm->sp);
  /* Close every handle (including those on_deadline left open) and free. */
  uv_walk(&dm->loop, close_walk, NULL);
  uv_run(&dm->loop, UV_RUN_DEFAULT);
  uv_loop_close(&dm->loop);
  pthread_mutex_destroy(&dm->reload_mu);
  free(dm);
  if (rc == 0) log_write(HLOG_INFO, NULL, "stopped");
  return rc;
}

static int cmd_run(const char *file) {
  hookd_daemon *dm = calloc(1, sizeof *dm);
  char err[1024];
  if (dm == NULL) return EXIT_RUNTIME;
  crash_install();
  dm->file = file;
  pthread_mutex_init(&dm->reload_mu, NULL);
  /* Before anything drops privileges: the binary plugin children start from. */
  if (plugin_proc_prepare(err, sizeof err) != 0) log_write(HLOG_WARN, NULL, "%s", err);
  dm->gen = generation_load(file, 1, err, sizeof err);
  if (dm->gen == NULL) {
    fprintf(stderr, "hookd: %s\n", err);
    pthread_mutex_destroy(&dm->reload_mu);
    free(dm);
    return EXIT_USAGE;
  }
  generation *g = dm->gen;
  uv_loop_init(&dm->loop);
  int rc = open_spool(dm);
  if (rc == 0) {
    /* listeners_new runs the loop to close what it opened when it fails: it
     * comes before any other handle. */
    dm->srv = listeners_new(&dm->loop, g, dm->sp, err, sizeof err);
    if (dm->srv == NULL) {
      log_write(HLOG_ERROR, NULL, "%s", err);
      rc = EXIT_RUNTIME;
    }
  }
  if (rc == 0) start_handles(dm);
  if (rc == 0) {
    listeners_set_reload(dm->srv, admin_reload, dm);
    /* Listeners are bound, files are open: root is no longer needed, and
     * no plugin has run yet. */
    privs_warn_if_root(&g->cfg);
    if (privs_drop(&g->cfg, err, sizeof err) != 0) {
      log_write(HLOG_ERROR, NULL, "%s", err);
      dm->stopping = 1;
      listeners_drain(dm->srv, on_drained, dm);
      uv_run(&dm->loop, UV_RUN_DEFAULT); /* the listeners' closes finish */
      rc = EXIT_RUNTIME;
    }
  }
  if (rc != 0) {
    close_reload_async(dm);
    return shut_down(dm, rc);
  }
  /* Unfinished deliveries were read back before the first new event can
   * be accepted: the workers take their lanes now. */
  generation_activate(g);
  start_sd_watchdog(dm);
  sd_notify(0, "READY=1");
  log_write(HLOG_INFO, NULL,
            "hookd %s running: %zu source(s), %zu plugin instance(s), %zu route(s)", HOOKD_VERSION,
            g->cfg.n_sources, g->cfg.n_plugins, g->cfg.n_routes);
  uv_run(&dm->loop, UV_RUN_DEFAULT);
  close_reload_async(dm);
  return shut_down(dm, 0);
}

/* hookd spool check -c FILE */
static int cmd_spool(const char *file, int argc, char **argv) {
  if (argc < 1 || strcmp(argv[0], "check") != 0) {
    fprintf(stderr, "hookd: spool needs a command: check\n");
    return EXIT_USAGE;
  }
  config cfg;
  if (load_config(&cfg, file) != 0) return EXIT_USAGE;
  int rc;
  if (cfg.spool_backend == SPOOL_BACKEND_POSTGRES) {
    char err[1024];
    rc = spool_pg_check(&cfg, stdout, err, sizeof err);
    if (rc == SPOOL_EFAIL) fprintf(stderr, "hookd: %s\n", err);
  } else {
    rc = spool_sqlite_check(cfg.data_dir, stdout, isatty(STDERR_FILENO) ? stderr : NULL);
  }
  config_free(&cfg);
  return rc == 0 ? 0 : rc == SPOOL_EDAMAGED ? EXIT_DAMAGED : EXIT_RUNTIME;
}

static void print_entry(const dlq_entry *e) {
  char when[32];
  time_t t = (time_t)(e->failed_ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  printf("%-6lld %s  %-20s %-40s %s  attempts=%u  %s\n", (long long)e->id, when, e->instance,
         e->event_id, e->type, e->attempts, e->error);
}

/* hookd dlq list|show ID|replay ID|replay --all|purge ID -c FILE */
/* `hookd dlq SUB [ID | --all]`: checks the arguments. Returns 0 with *id
 * (0 for list and replay --all) and *all, or EXIT_USAGE. */
static int parse_dlq_args(int argc, char **argv, int64_t *id, int *all) {
  if (argc < 1) {
    fprintf(stderr, "hookd: dlq needs list, show ID, replay ID, replay --all or purge ID\n");
    return EXIT_USAGE;
  }
  const char *sub = argv[0];
  *id = 0;
  *all = 0;
  if (strcmp(sub, "list") == 0) return 0;
  if (argc < 2) {
    fprintf(stderr, "hookd: dlq %s needs an id\n", sub);
    return EXIT_USAGE;
  }
  char *end;
  *all = strcmp(sub, "replay") == 0 && strcmp(argv[1], "--all") == 0;
  *id = *all ? 0 : strtoll(argv[1], &end, 10);
  if (!*all && (*end != '\0' || *id <= 0)) {
    fprintf(stderr, "hookd: '%s' is not a dead letter id\n", argv[1]);
    return EXIT_USAGE;
  }
  if (strcmp(sub, "show") && strcmp(sub, "replay") && strcmp(sub, "purge")) {
    fprintf(stderr, "hookd: unknown dlq command '%s'\n", sub);
    return EXIT_USAGE;
  }
  return 0;
}

static int list_dead_letters(dlq *q) {
  dlq_entry *e;
  size_t n;
  if (dlq_list(q, 0, &e, &n) != 0) return EXIT_RUNTIME;
  for (size_t i = 0; i < n; i++) print_entry(&e[i]);
  if (n == 0) printf("no dead letters\n");
  dlq_entries_free(e, n);
  return 0;
}

static int show_dead_letter(dlq *q, int64_t id) {
  dlq_entry e;
  char *body;
  size_t len;
  int r = dlq_show(q, id, &e, &body, &len);
  if (r == DLQ_ENOTFOUND) fprintf(stderr, "hookd: no dead letter %lld\n", (long long)id);
  if (r != 0) return EXIT_RUNTIME;
  print_entry(&e);
  printf("source: %s\n%.*s\n", e.source, (int)len, body);
  dlq_entry_clear(&e);
  free(body);
  return 0;
}

static int replay_dead_letters(dlq *q, int64_t id, int all) {
  int64_t n = dlq_replay(q, id);
  if (n < 0) return EXIT_RUNTIME;
  if (n == 0 && !all) {
    fprintf(stderr, "hookd: no dead letter %lld\n", (long long)id);
    return EXIT_RUNTIME;
  }
  printf("%lld dead letter(s) queued for delivery again\n", (long long)n);
  return 0;
}

static int purge_dead_letter(dlq *q, int64_t id) {
  int r = dlq_purge(q, id);
  if (r == DLQ_ENOTFOUND) fprintf(stderr, "hookd: no dead letter %lld\n", (long long)id);
  if (r != 0) return EXIT_RUNTIME;
  printf("dead letter %lld purged\n", (long long)id);
  return 0;
}

static int cmd_dlq(const char *file, int argc, char **argv) {
  int64_t id;
  int all;
  if (parse_dlq_args(argc, argv, &id, &all) != 0) return EXIT_USAGE;
  const char *sub = argv[0];
  config cfg;
  if (load_config(&cfg, file) != 0) return EXIT_USAGE;
  char err[1024];
  dlq *q;
  if ((cfg.spool_url ? dlq_open_pg(cfg.spool_url, &q, err, sizeof err)
                     : dlq_open(cfg.data_dir, &q, err, sizeof err)) != 0) {
    fprintf(stderr, "hookd: %s\n", err);
    config_free(&cfg);
    return EXIT_RUNTIME;
  }
  int rc = strcmp(sub, "list") == 0     ? list_dead_letters(q)
           : strcmp(sub, "show") == 0   ? show_dead_letter(q, id)
           : strcmp(sub, "replay") == 0 ? replay_dead_letters(q, id, all)
                                        : purge_dead_letter(q, id);
  if (rc == EXIT_RUNTIME && dlq_error(q)[0]) fprintf(stderr, "hookd: %s\n", dlq_error(q));
  dlq_close(q);
  config_free(&cfg);
  return rc;
}

static int cmd_version(void) {
  printf("hookd %s\n", HOOKD_VERSION);
  printf("plugin ABI %u.%u\n", HOOKD_PLUGIN_ABI_MAJOR, HOOKD_PLUGIN_ABI_MINOR);
  printf("libuv %s\n", uv_version_string());
  printf("llhttp %d.%d.%d\n", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
  printf("cJSON %s\n", cJSON_Version());
  printf("SQLite %s\n", sqlite3_libversion());
  printf("OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION));
  /* libcurl is loaded on demand (http_client.h); say so when it cannot be. */
  const char *curl = http_client_libcurl_version();
  printf("libcurl %s\n", curl ? curl : "not available");
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  /* A file size limit makes writes fail (EFBIG), which the spool reports;
   * the default action would kill hookd instead. */
  signal(SIGXFSZ, SIG_IGN);
  /* hookd re-executed as a process-isolated plugin instance's host. */
  if (argc >= 2 && strcmp(argv[1], PLUGIN_CHILD_COMMAND) == 0) return plugin_child_main(argc, argv);
  const char *cmd = NULL, *file = NULL;
  char **rest = calloc((size_t)argc + 1, sizeof *rest); /* arguments after the command */
  int n_rest = 0;
  if (rest == NULL) return EXIT_RUNTIME;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "help") == 0) {
      fputs(usage, stdout);
      free(rest);
      return 0;
    } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
      if (++i == argc) {
        fprintf(stderr, "hookd: %s needs a file name\n%s", a, usage);
        free(rest);
        return EXIT_USAGE;
      }
      file = argv[i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      file = a + 9;
    } else if (cmd == NULL && a[0] != '-') {
      cmd = a;
    } else if (cmd != NULL && (strcmp(cmd, "dlq") == 0 || strcmp(cmd, "spool") == 0 ||
                               strcmp(cmd, "plugins") == 0 || strcmp(cmd, "try") == 0 ||
                               strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0 ||
                               strcmp(cmd, "replay") == 0)) {
      rest[n_rest++] = argv[i];
    } else {
      fprintf(stderr, "hookd: unexpected argument '%s'\n%s", a, usage);
      free(rest);
      return EXIT_USAGE;
    }
  }
  int rc = EXIT_USAGE;
  if (cmd == NULL) cmd = file ? "run" : NULL;
  if (cmd == NULL) {
    fputs(usage, stderr);
  } else if (strcmp(cmd, "version") == 0) {
    rc = cmd_version();
  } else if (strcmp(cmd, "run") != 0 && strcmp(cmd, "check") != 0 && strcmp(cmd, "dlq") != 0 &&
             strcmp(cmd, "spool") != 0 && strcmp(cmd, "plugins") != 0 && strcmp(cmd, "try") != 0 &&
             strcmp(cmd, "pause") != 0 && strcmp(cmd, "resume") != 0 &&
             strcmp(cmd, "replay") != 0) {
    fprintf(stderr, "hookd: unknown command '%s'\n%s", cmd, usage);
  } else if (file == NULL) {
    fprintf(stderr, "hookd: %s needs -c FILE\n", cmd);
  } else if (strcmp(cmd, "dlq") == 0) {
    rc = cmd_dlq(file, n_rest, rest);
  } else if (strcmp(cmd, "spool") == 0) {
    rc = cmd_spool(file, n_rest, rest);
  } else if (strcmp(cmd, "plugins") == 0) {
    rc = cli_plugins(file, n_rest, rest);
  } else if (strcmp(cmd, "try") == 0) {
    rc = cli_try(file, n_rest, rest);
  } else if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0) {
    rc = cli_pause(file, cmd[0] == 'p', n_rest, rest);
  } else if (strcmp(cmd, "replay") == 0) {
    rc = cli_replay(file, n_rest, rest);
  } else {
    /* No curl_global_init here: libcurl is loaded at the first outbound
     * request (http_client.h), so a config without HTTP plugins never maps
     * it. The cleanup is a no-op unless something did load it. */
    rc = strcmp(cmd, "check") == 0 ? cmd_check(file) : cmd_run(file);
    http_client_global_cleanup();
  }
  free(rest);
  return rc;
}
