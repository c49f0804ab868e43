/* Fatal signals: name the plugin instance and event a dying hookd was delivering. */
#include "crash.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NAME_MAX_LEN 128
#define ALT_STACK_BYTES (64 * 1024)

/* What the thread runs now; read by the handler on the same thread. */
typedef struct running {
  int active;
  uint64_t spool_id;
  char instance[NAME_MAX_LEN];
  char event_id[NAME_MAX_LEN];
} running;

static _Thread_local running current;
static _Thread_local void *alt_stack;
static char journal[4200]; /* set once before any worker starts */

static void journal_path(const char *data_dir, char *out, size_t len) {
  snprintf(out, len, "%s/crashed", data_dir);
}

void crash_journal_set(const char *data_dir) {
  journal_path(data_dir, journal, sizeof journal);
}

int crash_journal_read(const char *data_dir, uint64_t **ids, size_t *n) {
  char path[4200];
  journal_path(data_dir, path, sizeof path);
  *ids = NULL;
  *n = 0;
  FILE *f = fopen(path, "re");
  if (f == NULL) return errno == ENOENT ? 0 : -1;
  size_t cap = 0;
  unsigned long long id;
  while (fscanf(f, "%llu", &id) == 1) {
    if (*n == cap) {
      cap = cap ? cap * 2 : 8;
      uint64_t *nid = realloc(*ids, cap * sizeof *nid);
      if (nid == NULL) break;
      *ids = nid;
    }
    (*ids)[(*n)++] = id;
  }
  fclose(f);
  return 1;
}

void crash_journal_clear(const char *data_dir) {
  char path[4200];
  journal_path(data_dir, path, sizeof path);
  unlink(path);
}

void crash_enter(const char *instance, const char *event_id, uint64_t spool_id) {
  current.spool_id = spool_id;
  strncpy(current.instance, instance ? instance : "", NAME_MAX_LEN - 1);
  strncpy(current.event_id, event_id ? event_id : "", NAME_MAX_LEN - 1);
  current.instance[NAME_MAX_LEN - 1] = current.event_id[NAME_MAX_LEN - 1] = '\0';
  __atomic_store_n(&current.active, 1, __ATOMIC_RELEASE);
}

void crash_leave(void) {
  __atomic_store_n(&current.active, 0, __ATOMIC_RELEASE);
}

/* --- the handler: async-signal-safe from here ------------------------------ */

typedef struct line {
  char buf[512];
  size_t len;
} line;

static void put(line *l, const char *s) {
  while (*s && l->len < sizeof l->buf - 1) l->buf[l->len++] = *s++;
}

/* Digits of v, at least `width` of them. */
static void put_num(line *l, unsigned long v, int width) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v && n < (int)sizeof tmp);
  while (n < width && n < (int)sizeof tmp) tmp[n++] = '0';
  while (n > 0 && l->len < sizeof l->buf - 1) l->buf[l->len++] = tmp[--n];
}

/* The time as the log's text format writes it (UTC), by hand: gmtime is
 * not async-signal-safe. */
static void put_time(line *l) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  long days = (long)(ts.tv_sec / 86400), secs = (long)(ts.tv_sec % 86400);
  /* days since 1970-01-01 to a civil date (Howard Hinnant's algorithm) */
  long z = days + 719468, era = z / 146097, doe = z - era * 146097;
  long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  long doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
  long d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
  long y = yoe + era * 400 + (m <= 2);
  put_num(l, (unsigned long)y, 4);
  put(l, "-");
  put_num(l, (unsigned long)m, 2);
  put(l, "-");
  put_num(l, (unsigned long)d, 2);
  put(l, "T");
  put_num(l, (unsigned long)(secs / 3600), 2);
  put(l, ":");
  put_num(l, (unsigned long)(secs / 60 % 60), 2);
  put(l, ":");
  put_num(l, (unsigned long)(secs % 60), 2);
  put(l, ".");
  put_num(l, (unsigned long)(ts.tv_nsec / 1000000), 3);
  put(l, "Z ");
}

static const char *signal_name(int sig) {
  switch (sig) {
    case SIGSEGV:
      return "SIGSEGV";
    case SIGBUS:
      return "SIGBUS";
    case SIGILL:
      return "SIGILL";
    case SIGFPE:
      return "SIGFPE";
    case SIGABRT:
      return "SIGABRT";
    default:
      return "a fatal signal";
  }
}

static void on_fatal(int sig) {
  line l = {.len = 0};
  put_time(&l);
  put(&l, "error fatal signal ");
  put(&l, signal_name(sig));
  if (__atomic_load_n(&current.active, __ATOMIC_ACQUIRE)) {
    put(&l,
        " in deliver(): hookd stops; the delivery counts a crash on the next start "
        "(delivery.max_crashes) instance=");
    put(&l, current.instance);
    put(&l, " event_id=");
    put(&l, current.event_id);
  } else {
    put(&l, ": hookd stops");
  }
  put(&l, "\n");
  ssize_t w = write(STDERR_FILENO, l.buf, l.len);
  (void)w;
  if (__atomic_load_n(&current.active, __ATOMIC_ACQUIRE) && journal[0]) {
    int fd = open(journal, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
      line id = {.len = 0};
      put_num(&id, (unsigned long)current.spool_id, 1);
      put(&id, "\n");
      w = write(fd, id.buf, id.len);
      close(fd);
    }
  }
  /* The default action: the process dies of this signal (and dumps core
   * where that is enabled). */
  signal(sig, SIG_DFL);
  raise(sig);
}

void crash_install(void) {
  static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fatal;
  sigemptyset(&sa.sa_mask);
  /* SA_RESETHAND: a second fault inside the handler ends the process. */
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND | SA_NODEFER;
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
}

void crash_thread_start(void) {
  alt_stack = malloc(ALT_STACK_BYTES);
  if (alt_stack == NULL) return;
  stack_t ss = {.ss_sp = alt_stack, .ss_size = ALT_STACK_BYTES, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) != 0) {
    free(alt_stack);
    alt_stack = NULL;
  }
}

void crash_thread_end(void) {
  if (alt_stack == NULL) return;
  stack_t ss = {.ss_flags = SS_DISABLE};
  sigaltstack(&ss, NULL);
  free(alt_stack);
  alt_stack = NULL;
}
