/* `hookd pause`, `hookd resume` and `hookd replay`: delivery controls written into the spool file
 * for a running (or the next) hookd. */
#include "cli_controls.h"
#include "pattern.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "dlq.h"
#include "event.h"
#include "clock.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
/* A running hookd picks a back-fill up within a second; give it this long
 * before saying it does not seem to run. */
#define PICKUP_WAIT_MS 3000

/* Loads the config and finds the instance; exit code on failure. */
static int load(const char *file, const char *instance, config *cfg) {
  char err[1024];
  if (config_load(cfg, file, err, sizeof err) != 0) {
    fprintf(stderr, "hookd: %s\n", err);
    return EXIT_USAGE;
  }
  for (size_t i = 0; i < cfg->n_plugins; i++) {
    if (strcmp(cfg->plugins[i].name, instance) == 0) return 0;
  }
  char names[512] = "";
  size_t used = 0;
  for (size_t i = 0; i < cfg->n_plugins && used < sizeof names; i++) {
    used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                             cfg->plugins[i].name);
  }
  fprintf(stderr, "hookd: %s names no plugin instance '%s' (it has: %s)\n", file, instance,
          cfg->n_plugins ? names : "none");
  config_free(cfg);
  return EXIT_USAGE;
}

static int open_spool(const config *cfg, dlq **q) {
  char err[1024];
  if ((cfg->spool_url ? dlq_open_pg(cfg->spool_url, q, err, sizeof err)
                      : dlq_open(cfg->data_dir, q, err, sizeof err)) != 0) {
    fprintf(stderr, "hookd: %s\n", err);
    return EXIT_RUNTIME;
  }
  return 0;
}

int cli_pause(const char *file, int paused, int argc, char **argv) {
  const char *cmd = paused ? "pause" : "resume";
  if (argc != 1 || argv[0][0] == '-') {
    fprintf(stderr, "hookd: usage: hookd %s INSTANCE -c FILE\n", cmd);
    return EXIT_USAGE;
  }
  config cfg;
  int rc = load(file, argv[0], &cfg);
  if (rc != 0) return rc;
  dlq *q = NULL;
  rc = open_spool(&cfg, &q);
  if (rc == 0 && dlq_set_paused(q, argv[0], paused) != 0) {
    fprintf(stderr, "hookd: cannot %s '%s': %s\n", cmd, argv[0], dlq_error(q));
    rc = EXIT_RUNTIME;
  }
  if (rc == 0 && paused) {
    printf(
        "%s paused: its deliveries wait in the spool (events are still accepted, up to its "
        "max_pending); a running hookd starts no new ones within a second\n",
        argv[0]);
  } else if (rc == 0) {
    printf("%s resumed: what waited is delivered in order, at its rate\n", argv[0]);
  }
  dlq_close(q);
  config_free(&cfg);
  return rc;
}

/* --- hookd replay ----------------------------------------------------------------- */

typedef struct replay_args {
  const char *since, *type, *source, *to;
  int dry_run;
} replay_args;

static int parse_replay(int argc, char **argv, replay_args *a) {
  memset(a, 0, sizeof *a);
  for (int i = 0; i < argc; i++) {
    const char **slot = strcmp(argv[i], "--since") == 0    ? &a->since
                        : strcmp(argv[i], "--type") == 0   ? &a->type
                        : strcmp(argv[i], "--source") == 0 ? &a->source
                        : strcmp(argv[i], "--to") == 0     ? &a->to
                                                           : NULL;
    if (strcmp(argv[i], "--dry-run") == 0) {
      a->dry_run = 1;
    } else if (slot && i + 1 < argc) {
      *slot = argv[++i];
    } else {
      fprintf(stderr, "hookd: replay: %s '%s'\n",
              slot ? "a value is missing after" : "unknown argument", argv[i]);
      return -1;
    }
  }
  if (!a->since || !a->to) {
    fprintf(stderr, "hookd: replay needs --since DURATION and --to INSTANCE\n");
    return -1;
  }
  const char *bad = a->type ? pattern_problem(a->type) : NULL;
  if (bad) {
    fprintf(stderr, "hookd: replay: --type '%s': %s\n", a->type, bad);
    return -1;
  }
  if (config_parse_duration(a->since) <= 0) {
    fprintf(stderr, "hookd: replay: --since '%s': expected a duration such as 7d, 12h, 30m\n",
            a->since);
    return -1;
  }
  return 0;
}

static void fmt_left(char *out, size_t len, double seconds) {
  if (seconds < 0) {
    snprintf(out, len, "?");
  } else if (seconds < 90) {
    snprintf(out, len, "%.0f s", seconds);
  } else if (seconds < 5400) {
    snprintf(out, len, "%.0f min", seconds / 60);
  } else {
    snprintf(out, len, "%.1f h", seconds / 3600);
  }
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* Shows a back-fill's progress on the terminal until it is all delivered
 * (or dead), or until it is clear that no hookd picks it up. */
static int watch(dlq *q, int64_t id, const char *instance) {
  int64_t t0 = clock_mono_ms(), last_done = 0, last_t = t0;
  double rate = 0;
  dlq_backfill_progress p;
  for (;;) {
    if (dlq_backfill_progress_get(q, id, &p) != 0) {
      fprintf(stderr, "\nhookd: %s\n", dlq_error(q));
      return EXIT_RUNTIME;
    }
    int64_t now = clock_mono_ms(), done = p.delivered + p.dead;
    if (now - last_t >= 1000) {
      double r = (double)(done - last_done) * 1000.0 / (double)(now - last_t);
      rate = rate == 0 ? r : 0.7 * rate + 0.3 * r; /* smoothed: the line stays readable */
      last_done = done;
      last_t = now;
    }
    char left[32];
    fmt_left(left, sizeof left, rate > 0 ? (double)(p.total - done) / rate : -1);
    printf("\r  queued %lld/%lld · delivered %lld · dead %lld · %.1f/s · about %s left   ",
           (long long)p.queued, (long long)p.total, (long long)p.delivered, (long long)p.dead, rate,
           done >= p.total ? "0 s" : left);
    fflush(stdout);
    if (p.finished && done >= p.total) break;
    if (p.queued == 0 && p.total > 0 && now - t0 > PICKUP_WAIT_MS) {
      printf(
          "\nno hookd has picked it up yet: hookd is not running on this spool (it queues "
          "them when it starts)\n");
      return 0;
    }
    sleep_ms(250);
  }
  printf("\nback-fill %lld done: %lld delivered to %s, %lld dead letters\n", (long long)id,
         (long long)p.delivered, instance, (long long)p.dead);
  return 0;
}

int cli_replay(const char *file, int argc, char **argv) {
  replay_args a;
  if (parse_replay(argc, argv, &a) != 0) return EXIT_USAGE;
  config cfg;
  int rc = load(file, a.to, &cfg);
  if (rc != 0) return rc;
  dlq *q = NULL;
  rc = open_spool(&cfg, &q);
  dlq_filter f = {.since_ms = clock_now_ms() - config_parse_duration(a.since),
                  .type_pattern = a.type,
                  .source = a.source};
  char what[512];
  snprintf(what, sizeof what, "since %s%s%s%s%s", a.since, a.type ? ", type " : "",
           a.type ? a.type : "", a.source ? ", source " : "", a.source ? a.source : "");
  if (rc == 0 && a.dry_run) {
    int64_t n = dlq_backfill_count(q, &f);
    if (n < 0) {
      fprintf(stderr, "hookd: %s\n", dlq_error(q));
      rc = EXIT_RUNTIME;
    } else {
      printf("%lld event%s\n", (long long)n, n == 1 ? "" : "s");
    }
  } else if (rc == 0) {
    int64_t total = 0, id = dlq_backfill_start(q, a.to, &f, what, &total);
    if (id < 0) {
      fprintf(stderr, "hookd: %s\n", dlq_error(q));
      rc = EXIT_RUNTIME;
    } else {
      printf("back-fill %lld: %lld event%s (%s) to be delivered again to %s\n", (long long)id,
             (long long)total, total == 1 ? "" : "s", what, a.to);
      if (total > 0 && isatty(STDOUT_FILENO)) {
        printf("(Ctrl-C stops watching, not the replay)\n");
        rc = watch(q, id, a.to);
      }
    }
  }
  dlq_close(q);
  config_free(&cfg);
  return rc;
}
