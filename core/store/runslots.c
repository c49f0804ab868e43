/* Running slots: what each delivery worker is running now, in a small file mapped into memory that
 * outlives a crash of hookd. */
#include "runslots.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

typedef struct slot {
  _Atomic uint64_t spool_id; /* 0: free or idle */
  _Atomic uint32_t attempt;
  uint32_t reserved;
} slot;

struct runslots {
  slot *map;
  size_t n;
  atomic_uchar *taken; /* by a live thread of this process */
  atomic_int warned;
  slot *left; /* a file taken over: what it held (take_over) */
  size_t n_left;
};

/* A thread's slot, given back by the key's destructor when it exits. */
typedef struct mine {
  runslots *rs;
  size_t idx;
} mine;

static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void give_back(void *p) {
  mine *m = p;
  atomic_store_explicit(&m->rs->map[m->idx].spool_id, 0, memory_order_release);
  atomic_store(&m->rs->taken[m->idx], 0);
  free(m);
}

static void make_key(void) {
  pthread_key_create(&key, give_back);
}

/* The slots of a file hookd may read but not write (left by a run as
 * another user): copied out, so recovery still sees them, and the file is
 * made again as ours. Returns the new descriptor, or -1. */
static int take_over(const char *path, slot **left, size_t *n_left) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0) {
    *left = malloc((size_t)st.st_size);
    if (*left && read(fd, *left, (size_t)st.st_size) == st.st_size) {
      *n_left = (size_t)st.st_size / sizeof(slot);
    }
  }
  if (fd >= 0) close(fd);
  if (unlink(path) != 0) return -1;
  return open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
}

runslots *runslots_open(const char *data_dir, size_t n, char *err, size_t errlen) {
  char path[4200];
  snprintf(path, sizeof path, "%s/running", data_dir);
  slot *left = NULL;
  size_t n_left = 0;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EACCES || errno == EPERM)) fd = take_over(path, &left, &n_left);
  if (fd < 0) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    free(left);
    return NULL;
  }
  size_t bytes = n * sizeof(slot);
  struct stat st;
  /* A file from a run with more slots keeps its size: its tail is read too. */
  if (fstat(fd, &st) == 0 && (size_t)st.st_size > bytes) {
    n = (size_t)st.st_size / sizeof(slot);
    bytes = n * sizeof(slot);
  }
  runslots *rs = calloc(1, sizeof *rs);
  if (rs == NULL || ftruncate(fd, (off_t)bytes) != 0 ||
      (rs->map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED ||
      (rs->taken = calloc(n, sizeof *rs->taken)) == NULL) {
    snprintf(err, errlen, "cannot map %s: %s", path, rs ? strerror(errno) : "out of memory");
    if (rs && rs->map && rs->map != MAP_FAILED) munmap(rs->map, bytes);
    free(rs);
    free(left);
    close(fd);
    return NULL;
  }
  close(fd);
  rs->n = n;
  rs->left = left;
  rs->n_left = n_left;
  pthread_once(&key_once, make_key);
  return rs;
}

void runslots_close(runslots *rs) {
  if (rs == NULL) return;
  munmap(rs->map, rs->n * sizeof(slot));
  free(rs->taken);
  free(rs->left);
  free(rs);
}

size_t runslots_left(const runslots *rs, runslot_entry *out, size_t max) {
  size_t k = 0;
  for (size_t i = 0; i < rs->n_left && k < max; i++) {
    uint64_t id = atomic_load(&rs->left[i].spool_id);
    if (id == 0) continue;
    out[k].spool_id = id;
    out[k++].attempt = atomic_load(&rs->left[i].attempt);
  }
  for (size_t i = 0; i < rs->n && k < max; i++) {
    uint64_t id = atomic_load(&rs->map[i].spool_id);
    if (id == 0) continue;
    out[k].spool_id = id;
    out[k++].attempt = atomic_load(&rs->map[i].attempt);
  }
  return k;
}

void runslots_clear(runslots *rs) {
  for (size_t i = 0; i < rs->n; i++) atomic_store(&rs->map[i].spool_id, 0);
  free(rs->left);
  rs->left = NULL;
  rs->n_left = 0;
}

void runslots_thread_done(void) {
  pthread_once(&key_once, make_key);
  mine *m = pthread_getspecific(key);
  if (m == NULL) return;
  pthread_setspecific(key, NULL);
  give_back(m);
}

/* The calling thread's slot, taken on first use; NULL when all are taken. */
static slot *my_slot(runslots *rs) {
  mine *m = pthread_getspecific(key);
  if (m && m->rs == rs) return &rs->map[m->idx];
  for (size_t i = 0; i < rs->n; i++) {
    unsigned char free_ = 0;
    if (!atomic_compare_exchange_strong(&rs->taken[i], &free_, 1)) continue;
    if (m == NULL && (m = malloc(sizeof *m)) == NULL) {
      atomic_store(&rs->taken[i], 0);
      return NULL;
    }
    m->rs = rs;
    m->idx = i;
    pthread_setspecific(key, m);
    return &rs->map[i];
  }
  if (!atomic_exchange(&rs->warned, 1)) {
    log_write(HLOG_WARN, NULL,
              "spool: all %zu running slots are taken; some deliveries run unmarked (a crash "
              "during them is not counted)",
              rs->n);
  }
  return NULL;
}

void runslots_set(runslots *rs, uint64_t spool_id, uint32_t attempt) {
  slot *s = my_slot(rs);
  if (s == NULL) return;
  if (spool_id) atomic_store_explicit(&s->attempt, attempt, memory_order_relaxed);
  atomic_store_explicit(&s->spool_id, spool_id, memory_order_release);
}
