/* Test-only plugin that misbehaves on purpose: segfaults, aborts, exits, hangs, leaks, prints,
 * forks; records what it delivered. */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <hookd/plugin.h>

#include "running_keys.h"

/*
 * config keys (all optional):
 *   out             file: one line per deliver() that returns,
 *                   "<id> <type> <attempt> <order_key|-> <rendered|->\n"
 *   segv, abort, exit, hang
 *                   lists of event ids ("*": every event) whose deliver()
 *                   dereferences NULL, calls abort(), calls exit(1), or
 *                   sleeps forever
 *   fault_attempts  faults apply to attempts up to this one only (0: all)
 *   grandchild      event ids whose deliver() forks a process that sleeps
 *                   300 s (its pid appended to grandchild_file) before the
 *                   faults above apply (within fault_attempts too)
 *   grandchild_file file the grandchildren's pids go to
 *   init_hang, init_segv, init_exit
 *                   true: init sleeps forever / segfaults / exits 3
 *   fail_init_if    a file: init fails while it exists
 *   leak_bytes      bytes allocated, touched and never freed per deliver()
 *   noise           true: a line to stdout and to stderr per deliver()
 *   log             true: host->log() at info per deliver()
 *   render          a template rendered (JSON escaping) into the out line
 *   report          file written by init: pid, uid, gid, no_new_privs, the
 *                   open descriptors and the environment
 *   sleep_ms        sleep this long in every deliver()
 */

typedef struct idlist {
  const char *const *ids;
  size_t n;
} idlist;

typedef struct tf {
  const hookd_host_api *host;
  hookd_instance *self;
  FILE *out;
  idlist segv, abrt, exit1, hang, grandchild;
  const char *grandchild_file;
  int64_t fault_attempts, leak_bytes, sleep_ms;
  int noise, log;
  hookd_template *render;
  running_keys running; /* order keys in deliver() now: overlaps are reported */
} tf;

static int listed(const idlist *l, const hookd_event *ev) {
  for (size_t i = 0; i < l->n; i++) {
    if (strcmp(l->ids[i], "*") == 0 || strcmp(l->ids[i], ev->id) == 0) return 1;
  }
  return 0;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* pid, ids, no_new_privs, open descriptors and the environment. */
static int write_report(const char *path) {
  FILE *f = fopen(path, "w");
  if (f == NULL) return -1;
  fprintf(f, "pid %d\nppid %d\nuid %u\ngid %u\n", (int)getpid(), (int)getppid(), (unsigned)getuid(),
          (unsigned)getgid());
  FILE *st = fopen("/proc/self/status", "r");
  char line[512];
  while (st && fgets(line, sizeof line, st)) {
    if (strncmp(line, "NoNewPrivs:", 11) == 0) fprintf(f, "nnp %d\n", atoi(line + 11));
  }
  if (st) fclose(st);
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d)) continue;
    char link[300] = "", target[512];
    snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
    ssize_t n = readlink(link, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    fprintf(f, "fd %s %s\n", e->d_name, target);
  }
  if (d) closedir(d);
  extern char **environ;
  for (char **v = environ; v && *v; v++) fprintf(f, "env %s\n", *v);
  fclose(f);
  return 0;
}

static int get_list(const hookd_host_api *host, const hookd_config *cfg, const char *key,
                    idlist *l) {
  return host->config_string_list(cfg, key, &l->ids, &l->n) < 0 ? -1 : 0;
}

static int init_faults(const hookd_host_api *host, const hookd_config *cfg) {
  int hang = 0, segv = 0, ex = 0;
  if (host->config_bool(cfg, "init_hang", 0, &hang) < 0 ||
      host->config_bool(cfg, "init_segv", 0, &segv) < 0 ||
      host->config_bool(cfg, "init_exit", 0, &ex) < 0)
    return -1;
  if (hang) {
    for (;;) sleep_ms(1000);
  }
  if (segv) {
    volatile int *nowhere = NULL;
    *nowhere = 1;
  }
  if (ex) exit(3);
  return 0;
}

static int tf_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                   void **state, char *err, size_t errlen) {
  static const char *const keys[] = {"out",        "segv",
                                     "abort",      "exit",
                                     "hang",       "fault_attempts",
                                     "grandchild", "grandchild_file",
                                     "init_hang",  "init_segv",
                                     "init_exit",  "leak_bytes",
                                     "noise",      "log",
                                     "render",     "report",
                                     "sleep_ms",   "fail_init_if",
                                     NULL};
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK) return -1;
  const char *report = NULL;
  if (host->config_path(cfg, "report", NULL, &report) < 0) return -1;
  if (report && write_report(report) != 0) {
    snprintf(err, errlen, "cannot write %s", report);
    return -1;
  }
  if (init_faults(host, cfg) != 0) return -1;
  const char *fail_if = NULL;
  if (host->config_path(cfg, "fail_init_if", NULL, &fail_if) < 0) return -1;
  if (fail_if && access(fail_if, F_OK) == 0) {
    snprintf(err, errlen, "told to fail: %s exists", fail_if);
    return -1;
  }
  tf *t = calloc(1, sizeof *t);
  if (t == NULL) return -1;
  t->host = host;
  t->self = self;
  const char *out = NULL;
  if (host->config_path(cfg, "out", NULL, &out) < 0 || get_list(host, cfg, "segv", &t->segv) ||
      get_list(host, cfg, "abort", &t->abrt) || get_list(host, cfg, "exit", &t->exit1) ||
      get_list(host, cfg, "hang", &t->hang) || get_list(host, cfg, "grandchild", &t->grandchild) ||
      host->config_path(cfg, "grandchild_file", NULL, &t->grandchild_file) < 0 ||
      host->config_int(cfg, "fault_attempts", 0, &t->fault_attempts) < 0 ||
      host->config_int(cfg, "leak_bytes", 0, &t->leak_bytes) < 0 ||
      host->config_int(cfg, "sleep_ms", 0, &t->sleep_ms) < 0 ||
      host->config_bool(cfg, "noise", 0, &t->noise) < 0 ||
      host->config_bool(cfg, "log", 0, &t->log) < 0 ||
      host->config_template(cfg, "render", NULL, &t->render) < 0) {
    free(t);
    return -1;
  }
  if (out && (t->out = fopen(out, "a")) == NULL) {
    snprintf(err, errlen, "cannot open %s", out);
    host->template_free(t->render);
    free(t);
    return -1;
  }
  if (t->out) setvbuf(t->out, NULL, _IOLBF, 0);
  running_keys_init(&t->running);
  *state = t;
  return 0;
}

static void fork_grandchild(tf *t) {
  pid_t pid = fork();
  if (pid == 0) {
    /* Holds every descriptor of its parent, sockets to hookd included. */
    sleep(300);
    _exit(0);
  }
  if (pid > 0 && t->grandchild_file) {
    FILE *f = fopen(t->grandchild_file, "a");
    if (f) {
      fprintf(f, "%d\n", (int)pid);
      fclose(f);
    }
  }
}

static void faults(tf *t, const hookd_event *ev) {
  if (t->fault_attempts > 0 && (int64_t)ev->attempt > t->fault_attempts) return;
  if (listed(&t->grandchild, ev)) fork_grandchild(t);
  if (listed(&t->segv, ev)) {
    volatile int *nowhere = NULL;
    *nowhere = 42;
  }
  if (listed(&t->abrt, ev)) abort();
  if (listed(&t->exit1, ev)) exit(1);
  if (listed(&t->hang, ev)) {
    for (;;) sleep_ms(1000);
  }
}

static hookd_result tf_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  tf *t = state;
  (void)out;
  const char *key = ev->order_key ? ev->order_key : "-";
  if (ev->order_key && running_keys_enter(&t->running, ev->order_key) && t->out)
    fprintf(t->out, "OVERLAP %s\n", key);
  faults(t, ev);
  if (t->sleep_ms > 0) sleep_ms(t->sleep_ms);
  if (t->leak_bytes > 0) {
    char *p = malloc((size_t)t->leak_bytes);
    if (p) memset(p, 0x5a, (size_t)t->leak_bytes); /* resident, not just reserved */
  }
  if (t->noise) {
    printf("stdout line from %s\n", ev->id);
    fflush(stdout);
    fprintf(stderr, "stderr line from %s\n", ev->id);
  }
  if (t->log)
    t->host->log(t->self, ev, HOOKD_LOG_INFO, "test_fault delivering attempt %u", ev->attempt);
  if (t->out) {
    char *text = t->render ? t->host->render(t->render, ev, HOOKD_ESC_JSON, NULL) : NULL;
    fprintf(t->out, "%s %s %u %s %s\n", ev->id, ev->type, ev->attempt, key, text ? text : "-");
    t->host->free(text);
  }
  if (ev->order_key) running_keys_leave(&t->running, ev->order_key);
  return HOOKD_OK;
}

static void tf_destroy(void *state) {
  tf *t = state;
  if (t->out) {
    fprintf(t->out, "DESTROY\n");
    fclose(t->out);
  }
  t->host->template_free(t->render);
  running_keys_clear(&t->running);
  free(t);
}

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "test_fault",
    .version = "0.0.1",
    .description = "test-only plugin that crashes, hangs, leaks and prints on demand",
    .init = tf_init,
    .deliver = tf_deliver,
    .destroy = tf_destroy,
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi;
  return &descriptor;
}
