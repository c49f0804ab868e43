/* SQLite spool backend: spool.db in WAL mode, one writer thread with group commit, lanes with
 * bounded windows, crash accounting, checks. */
#include "spool_sqlite.h"
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "crash.h"
#include "keysched.h"
#include "lane.h"
#include "log.h"
#include "runslots.h"
#include "clock.h"

/*
 * Tables (schema version 3):
 *   events(seq, source, event_id, type, order_key, content_type, received_ms,
 *          body, done_ms, headers)
 *                               UNIQUE(source, event_id) is the durable dedup;
 *                               done_ms is no longer written (version 1 did);
 *                               headers: the request's, masked (status page)
 *   deliveries(id, seq, instance, state, attempt, next_ms, last_error,
 *              updated_ms, crashes, okey, parked, replay, tries)
 *                               one per unfinished (event, plugin instance):
 *                               a delivered one is deleted, so an event with
 *                               no row left is finished. A lane reads its
 *                               backlog from disk past a cursor id. parked is
 *                               1 for the head of a key that waits on disk for
 *                               a later retry, 2 for a delivery waiting behind
 *                               such a head; okey, the event's order key, is
 *                               set on parked rows only; replay is the
 *                               back-fill that made the row (NULL: none);
 *                               tries counts the calls kept in attempts
 *   attempts(seq, instance, slot, attempt, started_ms, took_ms, outcome,
 *            status, answer, message)
 *                               what each deliver() call came to, for the
 *                               status page: slot (tries - 1) % SPOOL_ATTEMPTS_KEPT
 *                               of the (event, instance), so the latest calls
 *                               are kept; pruned with the event
 *   instance_state(instance, paused, changed_ms)
 *                               `hookd pause`: read at start and whenever
 *                               another connection committed (data_version)
 *   backfills(id, instance, what, created_ms, total, queued, finished_ms)
 *   backfill_events(backfill, seq)
 *                               `hookd replay`: the CLI picks the events (its
 *                               filters need the router's patterns); the
 *                               writer turns them into new deliveries of the
 *                               instance, a batch at a time, in seq order, and
 *                               forgets the rows it turned
 * What runs at a given moment is not in the database but in data_dir/running
 * (runslots.h): one memory store per delivery instead of a committed write.
 * A delivery's state is pending, dead, or replay (a dead letter that `hookd
 * dlq replay` asked for again; the writer turns it into a new pending
 * delivery); state 1 (done) is only found in files of version 1. Events
 * older than spool.retention with no delivery row left are pruned; events
 * with dead letters stay until the dead letters are replayed or purged.
 *
 * Each row and index entry written costs a page in the WAL and again in the
 * database file at the next checkpoint, so what is written per event is
 * kept to the event row, its dedup entry, its delivery rows (inserted, then
 * deleted) and their lane index entries.
 *
 * Version 1 had no crashes, okey or parked columns and kept delivered rows;
 * version 2 had no attempts, instance states, back-fills or headers. Opening
 * either upgrades it in one transaction.
 */
#define SCHEMA_VERSION 3
#define ST_PENDING 0
#define ST_DONE 1
#define ST_DEAD 2
#define ST_REPLAY 3

/* Ids remembered on the loop thread to answer a resend without a database
 * round trip; the UNIQUE constraint is the real guard. */
#define RECENT_IDS 4096
#define RECENT_BUCKETS 8192
/* Housekeeping (replay pick-up, pruning, disk check, probes) runs this often;
 * the slower numbers every SLOW_STATS_MS. */
#define HOUSEKEEPING_MS 500
#define SLOW_STATS_MS 5000
#define PRUNE_SCAN 2000 /* events looked at per pruning pass */
/* Queued outcomes that wake the writer by themselves. */
#define OPS_WAKE 256
/* A lane holds at most this many deliveries, and about this many body bytes,
 * in memory; the rest of its backlog waits on disk. */
#define LANE_WINDOW 1024
#define LANE_WINDOW_BYTES (4u << 20)
/* A retry due at least this much later parks its key on disk: the head
 * and what waits behind it leave the window, which stays free for keys
 * that can run. */
#define PARK_AFTER_MS 2000
/* The quick check at start stops after this long (a large file is then
 * checked in full by `hookd spool check`). */
#define QUICK_CHECK_MS 1500
/* Checkpoints: see on_wal_commit and checkpoint_main. */
#define CHECKPOINT_PAGES 1000
#define CHECKPOINT_TAIL_PAGES 64
#define CHECKPOINT_MAX_PASSES 8
#define CHECKPOINT_FORCE_PAGES 16000

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events("
    " seq INTEGER PRIMARY KEY, source TEXT NOT NULL, event_id TEXT NOT NULL,"
    " type TEXT NOT NULL, order_key TEXT, content_type TEXT NOT NULL,"
    " received_ms INTEGER NOT NULL, body BLOB NOT NULL, done_ms INTEGER, headers TEXT,"
    " UNIQUE(source, event_id));"
    "CREATE TABLE IF NOT EXISTS deliveries("
    " id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, instance TEXT NOT NULL,"
    " state INTEGER NOT NULL, attempt INTEGER NOT NULL, next_ms INTEGER NOT NULL,"
    " last_error TEXT, updated_ms INTEGER NOT NULL, crashes INTEGER NOT NULL DEFAULT 0,"
    " okey TEXT, parked INTEGER NOT NULL DEFAULT 0, replay INTEGER,"
    " tries INTEGER NOT NULL DEFAULT 0);"
    /* Keyed by the event first: written in accept order (appends), read and
     * pruned by event. */
    "CREATE TABLE IF NOT EXISTS attempts(seq INTEGER NOT NULL, instance TEXT NOT NULL,"
    " slot INTEGER NOT NULL, attempt INTEGER NOT NULL, started_ms INTEGER NOT NULL,"
    " took_ms INTEGER NOT NULL, outcome TEXT NOT NULL, status INTEGER NOT NULL, answer TEXT,"
    " message TEXT, PRIMARY KEY(seq, instance, slot)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS instance_state(instance TEXT PRIMARY KEY,"
    " paused INTEGER NOT NULL, changed_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS backfills(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " instance TEXT NOT NULL, what TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " total INTEGER NOT NULL, queued INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER);"
    "CREATE TABLE IF NOT EXISTS backfill_events(backfill INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " PRIMARY KEY(backfill, seq)) WITHOUT ROWID;"
    /* A back-fill's progress: only its own rows are in it. */
    "CREATE INDEX IF NOT EXISTS deliveries_replay ON deliveries(replay, state) "
    "WHERE replay IS NOT NULL;"
    /* Unfinished deliveries only, by lane: a done one (nearly all of them)
     * leaves the index instead of moving in it. Queries by state say
     * `state <> 1` so that SQLite may use it. */
    "CREATE INDEX IF NOT EXISTS deliveries_lane ON deliveries(instance, state) WHERE state <> 1;"
    /* Dead letters and replay requests: few rows; queries say `state >= 2`. */
    "CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(state) WHERE state >= 2;"
    "CREATE INDEX IF NOT EXISTS deliveries_seq ON deliveries(seq);"
    /* Parked keys (a head waiting for a later retry, and what waits behind
     * it): only their rows, written only when a key parks or wakes. */
    "CREATE INDEX IF NOT EXISTS deliveries_parked_key ON deliveries(instance, okey) "
    "WHERE parked >= 1;"
    "CREATE INDEX IF NOT EXISTS deliveries_parked_due ON deliveries(instance, next_ms) "
    "WHERE parked = 1;";

/* Version 1 -> 2: crash counts and parking columns; delivered rows and the
 * indexes version 2 does without go. */
static const char migrate_v1_sql[] =
    "DROP INDEX IF EXISTS deliveries_open;"
    "DROP INDEX IF EXISTS deliveries_state;"
    "DROP INDEX IF EXISTS events_done;"
    "ALTER TABLE deliveries ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE deliveries ADD COLUMN okey TEXT;"
    "ALTER TABLE deliveries ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;"
    "DELETE FROM deliveries WHERE state = 1;";

/* Version 2 -> 3: the new columns; the new tables and indexes come from
 * schema_sql. */
static const char migrate_v2_sql[] =
    "ALTER TABLE events ADD COLUMN headers TEXT;"
    "ALTER TABLE deliveries ADD COLUMN replay INTEGER;"
    "ALTER TABLE deliveries ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;";

/* --- structures ---------------------------------------------------------------- */

typedef struct sq_spool sq_spool;

/* One lane: the deliveries of one plugin instance name. */
typedef struct sq_lane {
  /* First: name, lock, owner, settings. */
  lane_base lb;
  keysched *ks;       /* the window in memory */
  uint64_t mem_bytes; /* body bytes of the deliveries in ks */
  size_t running;     /* claimed, not settled */
  int spilled;        /* deliveries past `cursor` may wait on disk */
  int64_t cursor;     /* highest delivery id read into memory */
  int refill_asked;   /* the writer is asked to read more past the cursor */
  size_t to_wake;     /* offered in this batch, workers not woken yet */
  int parking;        /* keys parked in memory whose rows are not committed yet */
  uint64_t parked;    /* parked heads on disk (rows with parked = 1) */
  int paused;         /* instance_state: claims return nothing */
  int64_t paused_ms;  /* since when */
  int state_seen;     /* scratch of load_instance_states (writer thread) */

  atomic_uint_fast64_t pending;  /* unfinished, on disk or not */
  atomic_uint_fast64_t reserved; /* queued for a commit, not committed yet */
  atomic_int_fast64_t oldest_ms; /* accept time of its oldest unfinished delivery */
  struct sq_lane *next;
} sq_lane;

/* One store() on its way through the writer. */
typedef struct store_req {
  event *ev;
  size_t n;
  spool_stored_fn done;
  void *data;
  int status;
  struct store_req *next;
  sq_lane *lanes[];
  /* followed by n int64_t delivery ids (req_ids) */
} store_req;

typedef enum {
  OP_DONE,
  OP_RETRY,
  OP_DEAD,
  OP_RELEASE,
  OP_PARK,
  OP_ATTEMPT, /* a row of attempts: text[] holds outcome, answer, message (NUL-separated) */
  OP_PAUSE    /* instance_state: text[] holds the instance name, attempt 1 for paused */
} op_kind;

/* A pause() waiting for its commit. */
typedef struct state_wait {
  int done;
  int rc;
} state_wait;

/* One write waiting for the next transaction. */
typedef struct op {
  op_kind kind;
  int64_t delivery_id;
  uint32_t attempt;
  uint32_t crashes;
  int64_t next_ms;
  int park;                    /* OP_RETRY: the key parks on disk (this is its head) */
  uint32_t tries;              /* the delivery's calls kept in attempts */
  int64_t seq;                 /* OP_ATTEMPT: the event */
  int64_t started_ms, took_ms; /* OP_ATTEMPT */
  int32_t status;              /* OP_ATTEMPT */
  state_wait *wait;            /* OP_PAUSE */
  sq_lane *lane;
  const char *okey; /* the event's order key (in text[]), or NULL */
  struct op *next;
  char text[]; /* the error (may be empty), then the order key */
} op;

typedef struct recent {
  uint64_t hash;
  char *key;
  int32_t next; /* next slot + 1 in the same bucket, 0 at the end */
} recent;

struct sq_spool {
  spool base;
  /* Settings copied at open: a reload does not change them (restart). */
  char *data_dir;
  char *path;
  uint64_t max_total, min_free_bytes;
  int64_t retention_ms;
  spool_lane_config lane_defaults;
  int sync;
  uv_loop_t *loop;
  int64_t prune_from; /* the writer's pruning sweep: next seq to look past */

  sqlite3 *db; /* the writer's connection; the loop thread uses it only before the writer starts */
  sqlite3_stmt *ins_event, *ins_delivery, *upd_delivery, *upd_next, *del_delivery, *begin, *commit,
      *lane_rows, *event_by_seq, *key_parked, *set_parked, *due_parked, *key_rows, *row_by_id,
      *count_parked, *crashed_row, *ins_attempt, *set_state;
  int64_t data_version;    /* PRAGMA data_version at the last look: another connection committed */
  pthread_cond_t state_cv; /* wakes a pause() waiting for its commit */
  runslots *running;       /* what each worker runs now (runslots.h) */
  int readonly;            /* opened read-only: the writer reopens it until it can write */
  atomic_int deliver_ok;   /* crash accounting done on a writable spool: claims may run */

  pthread_t writer;
  int writer_started;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* wakes the writer */
  store_req *in_head, *in_tail;
  op *ops_head, *ops_tail;
  size_t n_ops;
  store_req *out_head, *out_tail; /* committed (or failed), back to the loop */
  int stopping;
  int closed;            /* the writer is gone: nothing more is written */
  char fail_reason[256]; /* why commits fail (under mu) */
  uv_async_t async;

  pthread_mutex_t lanes_mu;
  sq_lane *lanes;
  atomic_int refills; /* lanes asked for a refill */

  recent recent[RECENT_IDS];
  int32_t buckets[RECENT_BUCKETS];
  size_t recent_pos;

  atomic_uint_fast64_t pending_total, dead, db_bytes, commits, commit_errors, crashes, checkpoints;
  atomic_int_fast64_t oldest_pending_ms;
  atomic_int_fast64_t beat_ms; /* mono ms of the writer's last turn */
  atomic_int disk_low;
  atomic_int failing;

  /* Checkpoints copy the WAL into the database file on a thread and a
   * connection of their own, so commits never wait for them. */
  sqlite3 *ckpt_db;
  pthread_t ckpt;
  int ckpt_started;
  pthread_mutex_t ckpt_mu;
  pthread_cond_t ckpt_cv;
  int ckpt_due, ckpt_stop;
  atomic_int wal_pages;
  int wal_asked;
  atomic_int ckpt_tail;
};

static int64_t *req_ids(store_req *r) {
  return (int64_t *)(r->lanes + r->n);
}

static sq_spool *sq(spool *sp) {
  return (sq_spool *)sp;
}

/* --- small helpers ---------------------------------------------------------- */

/* Appends the requests first..last (linked by next) to the queue *head,
 * *tail. Caller holds sp->mu. */
static void reqs_append(store_req **head, store_req **tail, store_req *first, store_req *last) {
  *(*tail ? &(*tail)->next : head) = first;
  *tail = last;
}

/* A damaged file, as opposed to one that merely could not be used now. */
static int is_damage(int rc) {
  rc &= 0xff;
  return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

/* sqlite3_errmsg, with the errno of the system call behind it when there is
 * one ("disk I/O error (No space left on device)"). */
static void db_error(sqlite3 *db, char *out, size_t len) {
  int e = db ? sqlite3_system_errno(db) : 0;
  const char *msg = db ? sqlite3_errmsg(db) : "out of memory";
  if (e != 0 && strstr(msg, strerror(e)) == NULL) {
    snprintf(out, len, "%s (%s)", msg, strerror(e));
  } else {
    snprintf(out, len, "%s", msg);
  }
}

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen) {
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK) {
    if (msg) {
      snprintf(err, errlen, "%s", msg);
    } else {
      db_error(db, err, errlen);
    }
    sqlite3_free(msg);
  }
  return rc;
}

/* Steps a statement that returns no rows and resets it. */
static int step_done(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Loops over the rows of st after its prepare set *rc: steps while the
 * last code was OK or ROW (so the body may set *rc to stop with an error)
 * and leaves the final code in *rc, SQLITE_DONE at the end. */
static int next_row(sqlite3_stmt *st, int *rc) {
  if (*rc != SQLITE_OK && *rc != SQLITE_ROW) return 0;
  *rc = sqlite3_step(st);
  return *rc == SQLITE_ROW;
}

/* One integer from a query; returns the SQLite code (SQLITE_OK with *out 0
 * for no row). */
static int query_int(sqlite3 *db, const char *sql, int64_t *out) {
  sqlite3_stmt *st;
  *out = 0;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *out = sqlite3_column_int64(st, 0);
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc;
}

/* Busy handler of both connections: they wait for each other only for a
 * commit or the tail of a checkpoint, a millisecond or so, so poll every
 * 100 us. Gives up after 5 s. */
static int short_waits(void *arg, int n) {
  (void)arg;
  if (n >= 50000) return 0;
  struct timespec ts = {0, 100 * 1000};
  nanosleep(&ts, NULL);
  return 1;
}

static void set_failing(sq_spool *sp, const char *why) {
  pthread_mutex_lock(&sp->mu);
  /* Cut to the buffer on purpose: the log line below keeps the whole text. */
  snprintf(sp->fail_reason, sizeof sp->fail_reason, "%.255s", why);
  pthread_mutex_unlock(&sp->mu);
  if (!atomic_exchange(&sp->failing, 1)) {
    log_write(HLOG_ERROR, NULL, "spool: %s: new events get 503 until a commit succeeds", why);
  }
}

static void clear_failing(sq_spool *sp) {
  if (atomic_exchange(&sp->failing, 0)) {
    log_write(HLOG_INFO, NULL, "spool: commits succeed again; accepting events");
  }
}

/* --- recent ids (loop thread) --------------------------------------------------- */

static uint64_t hash_key(const char *a, const char *b) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)a; *p; p++) h = (h ^ *p) * 1099511628211ull;
  h = (h ^ 0x1f) * 1099511628211ull;
  for (const unsigned char *p = (const unsigned char *)b; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return h;
}

static size_t bucket_of(uint64_t h) {
  return (size_t)(h & (RECENT_BUCKETS - 1));
}

static void remember(sq_spool *sp, const char *source, const char *id) {
  int32_t slot = (int32_t)sp->recent_pos;
  recent *r = &sp->recent[slot];
  sp->recent_pos = (sp->recent_pos + 1) % RECENT_IDS;
  if (r->key) { /* forget the oldest: unlink it from its chain */
    int32_t *pp = &sp->buckets[bucket_of(r->hash)];
    while (*pp != slot + 1) pp = &sp->recent[*pp - 1].next;
    *pp = r->next;
    free(r->key);
  }
  slot++; /* chains hold slot + 1, so 0 ends them */
  size_t ls = strlen(source), li = strlen(id);
  r->key = malloc(ls + li + 2);
  if (r->key == NULL) return;
  memcpy(r->key, source, ls);
  r->key[ls] = '\x1f';
  memcpy(r->key + ls + 1, id, li + 1);
  r->hash = hash_key(source, id);
  r->next = sp->buckets[bucket_of(r->hash)];
  sp->buckets[bucket_of(r->hash)] = slot;
}

static int sq_seen(spool *base, const char *source, const char *id) {
  sq_spool *sp = sq(base);
  uint64_t h = hash_key(source, id);
  size_t ls = strlen(source);
  for (int32_t i = sp->buckets[bucket_of(h)]; i != 0; i = sp->recent[i - 1].next) {
    const recent *r = &sp->recent[i - 1];
    if (r->hash == h && strncmp(r->key, source, ls) == 0 && r->key[ls] == '\x1f' &&
        strcmp(r->key + ls + 1, id) == 0) {
      return 1;
    }
  }
  return 0;
}

/* --- lanes -------------------------------------------------------------------- */

static sq_lane *lane_find(sq_spool *sp, const char *name) {
  for (sq_lane *l = sp->lanes; l; l = l->next) {
    if (strcmp(l->lb.name, name) == 0) return l;
  }
  return NULL;
}

/* The lane of name, created when absent (spilled: it reads its backlog from
 * disk on its first claim). Caller holds lanes_mu. */
static sq_lane *lane_get_locked(sq_spool *sp, const char *name) {
  sq_lane *l = lane_find(sp, name);
  if (l) return l;
  l = calloc(1, sizeof *l);
  if (l == NULL) return NULL;
  l->ks = keysched_new();
  if (l->ks == NULL || lane_base_init(&l->lb, &sp->base, name, &sp->lane_defaults) != 0) {
    keysched_free(l->ks);
    free(l);
    return NULL;
  }
  l->spilled = 1;
  l->next = sp->lanes;
  sp->lanes = l;
  return l;
}

static spool_lane *sq_lane_get(spool *base, const char *instance) {
  sq_spool *sp = sq(base);
  pthread_mutex_lock(&sp->lanes_mu);
  sq_lane *l = lane_get_locked(sp, instance);
  pthread_mutex_unlock(&sp->lanes_mu);
  return l ? &l->lb.iface : NULL;
}

static void sq_lane_attach(spool_lane *base, const void *owner, spool_wake_fn wake, void *data) {
  sq_lane *l = (sq_lane *)base;
  pthread_mutex_lock(&l->lb.mu);
  /* The previous owner learns at its next claim that it is done here; it
   * is woken so that it does not sleep until its next due time. */
  lane_base_own(&l->lb, owner, wake, data, 1);
  pthread_mutex_unlock(&l->lb.mu);
}

static void sq_lane_stats(spool_lane *base, spool_lane_stats *out) {
  sq_lane *l = (sq_lane *)base;
  pthread_mutex_lock(&l->lb.mu);
  out->in_memory = keysched_count(l->ks);
  out->running = l->running;
  uint64_t max = l->lb.cfg.max_pending;
  out->paused = l->paused;
  out->paused_ms = l->paused_ms;
  pthread_mutex_unlock(&l->lb.mu);
  out->pending = atomic_load(&l->pending);
  out->saturated = max && out->pending + atomic_load(&l->reserved) >= max;
  out->oldest_ms = out->pending ? atomic_load(&l->oldest_ms) : 0;
}

/* Room for one more delivery in memory. Caller holds l->lb.mu. */
static int lane_fits(const sq_lane *l) {
  size_t n = keysched_count(l->ks);
  return n < LANE_WINDOW && (n == 0 || l->mem_bytes < LANE_WINDOW_BYTES);
}

/* Asks the writer to read more of the lane's backlog when it has room for
 * a good part of a window. Caller holds l->lb.mu; returns 1 when the writer
 * must be poked (after unlocking). */
static int lane_want_refill(sq_lane *l) {
  if ((!l->spilled && !l->parked) || l->refill_asked || l->lb.owner == NULL) return 0;
  if (keysched_count(l->ks) > LANE_WINDOW / 2 || l->mem_bytes > LANE_WINDOW_BYTES / 2) return 0;
  l->refill_asked = 1;
  return 1;
}

static void poke_writer(sq_spool *sp) {
  atomic_fetch_add(&sp->refills, 1);
  pthread_mutex_lock(&sp->mu);
  pthread_cond_signal(&sp->cv);
  pthread_mutex_unlock(&sp->mu);
}

/* Sets a lane's pause; a resume wakes every worker of its owner. */
static void lane_set_paused(sq_lane *l, int paused, int64_t since) {
  pthread_mutex_lock(&l->lb.mu);
  int was = l->paused;
  l->paused = paused;
  if (paused && !was) l->paused_ms = since;
  if (!paused) l->paused_ms = 0;
  if (was && !paused) lane_base_wake(&l->lb, SIZE_MAX);
  pthread_mutex_unlock(&l->lb.mu);
}

/* A fresh delivery after its commit (writer thread): into the window when
 * the lane is not behind on disk and has room; otherwise it stays on disk
 * and the lane reads it back later. Returns 1 when taken. */
static int lane_offer(sq_lane *l, delivery *d) {
  pthread_mutex_lock(&l->lb.mu);
  /* Delivered rows are deleted, so when the newest ones are gone SQLite
   * gives a new row an id the cursor already passed (max + 1). Every row
   * there is then older than it: the cursor can step back to just before. */
  if ((int64_t)d->spool_id <= l->cursor) l->cursor = (int64_t)d->spool_id - 1;
  /* While keys of the lane are parked on disk, a new delivery may belong
   * behind one: the writer's refill looks before anything runs. */
  if (l->parked || l->parking) l->spilled = 1;
  int taken = !l->spilled && lane_fits(l) && keysched_push(l->ks, d) == 0;
  if (taken) {
    l->mem_bytes += d->ev->body_len;
    l->cursor = (int64_t)d->spool_id;
    l->to_wake++; /* woken once per batch (wake_offered) */
  } else {
    l->spilled = 1;
  }
  pthread_mutex_unlock(&l->lb.mu);
  return taken;
}

/* --- opening ------------------------------------------------------------------ */

static const char *const sync_pragma[] = {
    "PRAGMA synchronous = FULL", "PRAGMA synchronous = NORMAL", "PRAGMA synchronous = OFF"};

static int prepare(sq_spool *sp, char *err, size_t errlen) {
  struct {
    sqlite3_stmt **st;
    const char *sql;
  } stmts[] = {
      {&sp->ins_event,
       "INSERT OR IGNORE INTO events(source, event_id, type, order_key, content_type, "
       "received_ms, body, done_ms, headers) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"},
      {&sp->ins_delivery,
       "INSERT INTO deliveries(seq, instance, state, attempt, next_ms, updated_ms) "
       "VALUES(?1, ?2, 0, 0, ?3, ?3)"},
      {&sp->upd_delivery,
       "UPDATE deliveries SET state = ?2, attempt = ?3, crashes = ?4, next_ms = ?5, "
       "last_error = ?6, updated_ms = ?7, parked = ?8, okey = ?9, tries = coalesce(?10, tries) "
       "WHERE id = ?1"},
      {&sp->crashed_row,
       "SELECT d.id, ?2, d.instance, d.crashes, d.attempt, e.source, e.event_id, e.type "
       "FROM deliveries d JOIN events e ON e.seq = d.seq WHERE d.id = ?1 AND d.state = 0"},
      {&sp->upd_next, "UPDATE deliveries SET next_ms = ?2, tries = ?3 WHERE id = ?1"},
      {&sp->del_delivery, "DELETE FROM deliveries WHERE id = ?1"},
      {&sp->begin, "BEGIN IMMEDIATE"},
      {&sp->commit, "COMMIT"},
      /* Columns of the row queries: id, seq, okey, parked, attempt, crashes,
       * next_ms, tries (row_delivery). */
      {&sp->lane_rows,
       "SELECT id, seq, okey, parked, attempt, crashes, next_ms, tries FROM deliveries "
       "WHERE instance = ?1 AND state = 0 AND state <> 1 AND id > ?2 ORDER BY id LIMIT ?3"},
      {&sp->key_rows,
       "SELECT id, seq, okey, parked, attempt, crashes, next_ms, tries FROM deliveries "
       "WHERE instance = ?1 AND okey = ?2 AND parked >= 1 AND id <= ?3 ORDER BY id LIMIT ?4"},
      {&sp->row_by_id,
       "SELECT id, seq, okey, parked, attempt, crashes, next_ms, tries FROM deliveries "
       "WHERE id = ?1"},
      {&sp->event_by_seq,
       "SELECT source, event_id, type, order_key, content_type, received_ms, body FROM events "
       "WHERE seq = ?1"},
      {&sp->key_parked,
       "SELECT 1 FROM deliveries WHERE instance = ?1 AND okey = ?2 AND parked >= 1 LIMIT 1"},
      /* A NULL key keeps the row's own. */
      {&sp->set_parked,
       "UPDATE deliveries SET parked = ?2, okey = coalesce(?3, okey) WHERE id = ?1"},
      {&sp->due_parked,
       "SELECT id, okey FROM deliveries WHERE instance = ?1 AND parked = 1 AND next_ms <= ?2 "
       "AND id <= ?3 ORDER BY next_ms LIMIT ?4"},
      {&sp->count_parked, "SELECT count(*) FROM deliveries WHERE instance = ?1 AND parked = 1"},
      {&sp->ins_attempt,
       "INSERT OR REPLACE INTO attempts(seq, instance, slot, attempt, started_ms, took_ms, "
       "outcome, status, answer, message) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"},
      {&sp->set_state,
       "INSERT OR REPLACE INTO instance_state(instance, paused, changed_ms) VALUES(?1, ?2, ?3)"},
  };
  for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
    if (sqlite3_prepare_v3(sp->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT, stmts[i].st,
                           NULL) != SQLITE_OK) {
      db_error(sp->db, err, errlen);
      return -1;
    }
  }
  return 0;
}

static void finalize_all(sq_spool *sp) {
  sqlite3_stmt **all[] = {&sp->ins_event,   &sp->ins_delivery, &sp->upd_delivery, &sp->crashed_row,
                          &sp->upd_next,    &sp->del_delivery, &sp->begin,        &sp->commit,
                          &sp->lane_rows,   &sp->event_by_seq, &sp->key_parked,   &sp->set_parked,
                          &sp->due_parked,  &sp->key_rows,     &sp->row_by_id,    &sp->count_parked,
                          &sp->ins_attempt, &sp->set_state};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    sqlite3_finalize(*all[i]);
    *all[i] = NULL;
  }
}

/* The progress handler of a bounded check: stops it at the deadline. */
static int past_deadline(void *arg) {
  return clock_mono_ms() > *(const int64_t *)arg;
}

/* PRAGMA quick_check, stopped after QUICK_CHECK_MS. Returns 0 healthy (or
 * not finished in time: says so), SPOOL_EDAMAGED with what it found. */
static int quick_check(sq_spool *sp, char *why, size_t len) {
  int64_t deadline = clock_mono_ms() + QUICK_CHECK_MS;
  sqlite3_progress_handler(sp->db, 10000, past_deadline, &deadline);
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(sp->db, "PRAGMA quick_check(5)", -1, &st, NULL);
  char first[256] = "";
  int rows = 0;
  while (next_row(st, &rc)) {
    const char *t = (const char *)sqlite3_column_text(st, 0);
    if (rows++ == 0) snprintf(first, sizeof first, "%s", t ? t : "");
  }
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  sqlite3_finalize(st);
  sqlite3_progress_handler(sp->db, 0, NULL, NULL);
  if (rc == SQLITE_INTERRUPT) {
    log_write(HLOG_WARN, NULL,
              "spool: the quick check of %s stopped after %d ms (a large file); run `hookd spool "
              "check` to check it all",
              sp->path, QUICK_CHECK_MS);
    return 0;
  }
  if (rc != SQLITE_OK) {
    db_error(sp->db, why, len);
    return is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  }
  if (strcmp(first, "ok") != 0) {
    snprintf(why, len, "the quick check found damage: %s", first);
    return SPOOL_EDAMAGED;
  }
  return 0;
}

/* Creates the tables, or upgrades version 1, or refuses another version.
 * A read-only file must already be current. */
static int setup_schema(sq_spool *sp, char *why, size_t len) {
  int64_t has_meta = 0, version = 0;
  int rc =
      query_int(sp->db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                &has_meta);
  if (rc == SQLITE_OK && has_meta) {
    rc = query_int(sp->db, "SELECT value FROM meta WHERE key = 'schema_version'", &version);
  }
  if (rc != SQLITE_OK) {
    db_error(sp->db, why, len);
    return is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  }
  if (version > SCHEMA_VERSION || (has_meta && version < 1)) {
    snprintf(why, len,
             "it has spool schema version %lld, this hookd reads versions 1 to %d: refusing to "
             "touch it (use the hookd that wrote it, or move the file away)",
             (long long)version, SCHEMA_VERSION);
    return SPOOL_EFAIL;
  }
  if (version == SCHEMA_VERSION) return 0;
  if (sp->readonly) {
    snprintf(why, len, "it needs an upgrade to schema version %d and cannot be written",
             SCHEMA_VERSION);
    return SPOOL_EFAIL;
  }
  char e[512] = "";
  rc = exec_sql(sp->db, "BEGIN IMMEDIATE", e, sizeof e);
  if (rc == SQLITE_OK && has_meta) {
    log_write(HLOG_INFO, NULL, "spool: upgrading %s from schema version %lld to %d", sp->path,
              (long long)version, SCHEMA_VERSION);
  }
  if (rc == SQLITE_OK && version == 1) rc = exec_sql(sp->db, migrate_v1_sql, e, sizeof e);
  if (rc == SQLITE_OK && (version == 1 || version == 2)) {
    rc = exec_sql(sp->db, migrate_v2_sql, e, sizeof e);
  }
  if (rc == SQLITE_OK) rc = exec_sql(sp->db, schema_sql, e, sizeof e);
  if (rc == SQLITE_OK) {
    rc = exec_sql(sp->db, "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', '3')",
                  e, sizeof e);
  }
  if (rc == SQLITE_OK) rc = exec_sql(sp->db, "COMMIT", e, sizeof e);
  if (rc != SQLITE_OK) {
    sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    snprintf(why, len, "cannot create its tables: %s", e);
    return is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  }
  return 0;
}

/* Opens the writer's connection: WAL, sync mode, check, schema, statements.
 * Returns 0, or a SPOOL_E* code with why. */
static int connect_db(sq_spool *sp, int check, char *why, size_t len) {
  int rc = sqlite3_open_v2(sp->path, &sp->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    db_error(sp->db, why, len);
    return is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  }
  sqlite3_extended_result_codes(sp->db, 1);
  sqlite3_busy_handler(sp->db, short_waits, NULL);
  sp->readonly = sqlite3_db_readonly(sp->db, "main") == 1;
  /* journal_mode answers with the mode it got: a read-only directory
   * cannot give WAL, and that must not pass silently. */
  sqlite3_stmt *st = NULL;
  rc = sqlite3_prepare_v2(sp->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (mode && strcmp(mode, "wal") == 0) {
      rc = SQLITE_OK;
    } else if (mode) {
      snprintf(why, len, "cannot switch to WAL mode (got %s)", mode);
      rc = SQLITE_CANTOPEN;
    } else {
      db_error(sp->db, why, len);
      if (rc == SQLITE_DONE) rc = SQLITE_ERROR;
    }
  } else {
    db_error(sp->db, why, len);
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_OK) return is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  if (exec_sql(sp->db, sync_pragma[sp->sync], why, len) != SQLITE_OK) return SPOOL_EFAIL;
  int code = check ? quick_check(sp, why, len) : 0;
  if (code == 0) code = setup_schema(sp, why, len);
  if (code == 0 && prepare(sp, why, len) != 0) code = SPOOL_EFAIL;
  return code;
}

static void disconnect_db(sq_spool *sp) {
  finalize_all(sp);
  if (sp->db) sqlite3_close(sp->db);
  sp->db = NULL;
}

static const spool_ops sqlite_ops;
static void on_async(uv_async_t *h);

spool *spool_sqlite_open(const config *cfg, uv_loop_t *loop, int *code, char *err, size_t errlen) {
  *code = SPOOL_EFAIL;
  if (mkdir(cfg->data_dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create data_dir %s: %s", cfg->data_dir, strerror(errno));
    return NULL;
  }
  sq_spool *sp = calloc(1, sizeof *sp);
  if (sp == NULL || (sp->data_dir = strdup(cfg->data_dir)) == NULL ||
      asprintf(&sp->path, "%s/spool.db", cfg->data_dir) < 0) {
    if (sp) free(sp->data_dir);
    free(sp);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  sp->base.ops = &sqlite_ops;
  sp->max_total = cfg->spool_max_pending;
  sp->min_free_bytes = cfg->spool_min_free_bytes;
  sp->retention_ms = cfg->spool_retention_ms;
  sp->lane_defaults.max_pending = cfg->delivery.max_pending;
  sp->lane_defaults.max_crashes = cfg->delivery.max_crashes;
  sp->sync = cfg->sync;
  sp->loop = loop;
  crash_journal_set(sp->data_dir);
  pthread_mutex_init(&sp->mu, NULL);
  pthread_cond_init(&sp->cv, NULL);
  pthread_cond_init(&sp->state_cv, NULL);
  pthread_mutex_init(&sp->lanes_mu, NULL);
  pthread_mutex_init(&sp->ckpt_mu, NULL);
  pthread_cond_init(&sp->ckpt_cv, NULL);
  char why[512] = "";
  sp->running =
      runslots_open(sp->data_dir, (size_t)cfg->delivery.max_threads * 2 + 64, why, sizeof why);
  if (sp->running == NULL) {
    snprintf(err, errlen, "cannot open the spool: %s", why);
    sp->base.ops->free(&sp->base);
    return NULL;
  }
  *code = connect_db(sp, 1, why, sizeof why);
  if (*code != 0) {
    if (*code == SPOOL_EDAMAGED) {
      snprintf(err, errlen,
               "the spool %s is damaged: %s. hookd will not start on it rather than skip what "
               "it cannot read. Run `hookd spool check -c CONFIG` to see the damage, then "
               "restore the file from a backup, or move it (with its -wal and -shm files) "
               "aside to start with an empty spool",
               sp->path, why);
    } else {
      snprintf(err, errlen, "cannot open the spool %s: %s", sp->path, why);
    }
    sp->base.ops->free(&sp->base);
    return NULL;
  }
  if (sp->readonly) {
    /* hookd runs, answers /healthz, and says why it takes no events; the
     * writer opens the file again until it can write it. */
    struct stat stb;
    char owner[128] = "";
    if (stat(sp->path, &stb) == 0) {
      snprintf(owner, sizeof owner, " (it belongs to uid %u, hookd runs as uid %u)",
               (unsigned)stb.st_uid, (unsigned)geteuid());
    }
    snprintf(why, sizeof why, "%s cannot be written: %s%s", sp->path, strerror(EACCES), owner);
    set_failing(sp, why);
  }
  uv_async_init(loop, &sp->async, on_async);
  sp->async.data = sp;
  uv_unref((uv_handle_t *)&sp->async); /* must not keep the loop alive at shutdown */
  *code = 0;
  return &sp->base;
}

/* --- checkpoints ------------------------------------------------------------------ */

/* SQLite calls this on the writer's connection after each commit, with the
 * WAL's length in pages. It replaces the automatic checkpoint. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages) {
  sq_spool *sp = arg;
  atomic_store(&sp->wal_pages, pages);
  /* The WAL only starts over when a checkpoint has copied all of it, and
   * commits go on while the checkpoint thread copies. So after its pass the
   * writer copies the few pages added meanwhile itself, here, where no
   * commit can add more. PASSIVE never waits: a reader that holds an old
   * snapshot (`hookd dlq`, an sqlite3 shell) delays the restart, not the
   * writer. */
  if (atomic_exchange(&sp->ckpt_tail, 0) || pages >= CHECKPOINT_FORCE_PAGES) {
    int log = 0, copied = 0;
    if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &log, &copied) ==
        SQLITE_OK) {
      atomic_fetch_add(&sp->checkpoints, 1);
    }
    return SQLITE_OK;
  }
  /* Once per CHECKPOINT_PAGES of new WAL: each pass syncs the database
   * file, competing with the commits' own syncs. */
  if (pages < sp->wal_asked) sp->wal_asked = 0; /* the WAL started over */
  if (pages - sp->wal_asked >= CHECKPOINT_PAGES) {
    sp->wal_asked = pages;
    pthread_mutex_lock(&sp->ckpt_mu);
    sp->ckpt_due = 1;
    pthread_cond_signal(&sp->ckpt_cv);
    pthread_mutex_unlock(&sp->ckpt_mu);
  }
  return SQLITE_OK;
}

static void *checkpoint_main(void *arg) {
  sq_spool *sp = arg;
  pthread_mutex_lock(&sp->ckpt_mu);
  for (;;) {
    while (!sp->ckpt_due && !sp->ckpt_stop) pthread_cond_wait(&sp->ckpt_cv, &sp->ckpt_mu);
    if (sp->ckpt_stop) break;
    sp->ckpt_due = 0;
    pthread_mutex_unlock(&sp->ckpt_mu);
    /* Each PASSIVE pass copies what commits added during the one before, so
     * the passes get shorter; the writer copies the last few pages. */
    int rc = SQLITE_OK, before = 0;
    for (int pass = 0; pass < CHECKPOINT_MAX_PASSES; pass++) {
      int log = 0, copied = 0;
      rc = sqlite3_wal_checkpoint_v2(sp->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
      if (rc != SQLITE_OK) break;
      int added = copied - before;
      before = copied;
      /* copied < log: a reader pins older frames; more passes do not help */
      if (copied < log || (pass > 0 && added <= CHECKPOINT_TAIL_PAGES)) break;
    }
    if (rc == SQLITE_OK) {
      atomic_fetch_add(&sp->checkpoints, 1);
      atomic_store(&sp->ckpt_tail, 1);
    } else if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) {
      char e[256];
      db_error(sp->ckpt_db, e, sizeof e);
      log_write(HLOG_WARN, NULL, "spool: checkpoint failed: %s", e);
    }
    pthread_mutex_lock(&sp->ckpt_mu);
  }
  pthread_mutex_unlock(&sp->ckpt_mu);
  return NULL;
}

/* Opens the checkpoint thread's connection and starts it. On failure the
 * writer keeps SQLite's automatic checkpoint: slower answers, nothing lost. */
static void start_checkpoints(sq_spool *sp) {
  char why[256] = "";
  if (sqlite3_open_v2(sp->path, &sp->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
      SQLITE_OK) {
    db_error(sp->ckpt_db, why, sizeof why);
  } else {
    sqlite3_busy_handler(sp->ckpt_db, short_waits, NULL);
    exec_sql(sp->ckpt_db, sync_pragma[sp->sync], why, sizeof why);
  }
  if (!why[0] && pthread_create(&sp->ckpt, NULL, checkpoint_main, sp) != 0) {
    snprintf(why, sizeof why, "cannot start a thread");
  }
  if (why[0]) {
    log_write(HLOG_WARN, NULL, "spool: checkpoints stay on the writer thread: %s", why);
    sqlite3_close(sp->ckpt_db);
    sp->ckpt_db = NULL;
    return;
  }
  sp->ckpt_started = 1;
  sqlite3_wal_hook(sp->db, on_wal_commit, sp);
}

static void stop_checkpoints(sq_spool *sp) {
  if (!sp->ckpt_started) return;
  pthread_mutex_lock(&sp->ckpt_mu);
  sp->ckpt_stop = 1;
  pthread_cond_signal(&sp->ckpt_cv);
  pthread_mutex_unlock(&sp->ckpt_mu);
  pthread_join(sp->ckpt, NULL);
  sp->ckpt_started = 0;
  sqlite3_close(sp->ckpt_db);
  sp->ckpt_db = NULL;
}

/* --- recovery ------------------------------------------------------------------- */

/* The max_crashes of an instance name: its lane's when configured. */
static uint32_t max_crashes_of(sq_spool *sp, const char *instance) {
  uint32_t max = sp->lane_defaults.max_crashes;
  pthread_mutex_lock(&sp->lanes_mu);
  sq_lane *l = lane_find(sp, instance);
  if (l) {
    pthread_mutex_lock(&l->lb.mu);
    max = l->lb.cfg.max_crashes;
    pthread_mutex_unlock(&l->lb.mu);
  }
  pthread_mutex_unlock(&sp->lanes_mu);
  return max;
}

/* A delivery that ran beside the one that faulted (the crash journal names
 * that one): it runs again, its attempt not counted, no crash. */
static int account_bystander(sq_spool *sp, sqlite3_stmt *row) {
  log_ctx ctx = {.source = (const char *)sqlite3_column_text(row, 5),
                 .instance = (const char *)sqlite3_column_text(row, 2),
                 .event_id = (const char *)sqlite3_column_text(row, 6)};
  log_write(HLOG_INFO, &ctx,
            "delivery of %s was running when another delivery crashed hookd; it runs again "
            "(no crash counted)",
            (const char *)sqlite3_column_text(row, 7));
  (void)sp;
  return SQLITE_OK;
}

/* One delivery that was running when hookd stopped: a crash counted, and a
 * dead letter at max_crashes. */
static int account_one(sq_spool *sp, sqlite3_stmt *row, int64_t now) {
  int64_t id = sqlite3_column_int64(row, 0);
  uint32_t started = (uint32_t)sqlite3_column_int(row, 1);
  const char *instance = (const char *)sqlite3_column_text(row, 2);
  uint32_t crashes = (uint32_t)sqlite3_column_int(row, 3) + 1;
  uint32_t attempt = (uint32_t)sqlite3_column_int(row, 4);
  log_ctx ctx = {.source = (const char *)sqlite3_column_text(row, 5),
                 .instance = instance,
                 .event_id = (const char *)sqlite3_column_text(row, 6)};
  const char *type = (const char *)sqlite3_column_text(row, 7);
  if (started > attempt) attempt = started;
  uint32_t max = max_crashes_of(sp, instance ? instance : "");
  int dead = crashes >= max;
  char why[256];
  if (dead) {
    snprintf(why, sizeof why,
             "hookd stopped %u time(s) while this delivery was running in plugin instance '%s' "
             "(delivery.max_crashes is %u): not run again",
             crashes, instance, max);
    log_write(HLOG_ERROR, &ctx, "delivery of %s is a dead letter: %s", type, why);
  } else {
    snprintf(why, sizeof why, "hookd stopped while attempt %u was running (crash %u of %u)",
             started, crashes, max);
    log_write(HLOG_WARN, &ctx,
              "delivery of %s was running when hookd stopped (crash %u of %u); "
              "it runs again",
              type, crashes, max);
  }
  sqlite3_stmt *st = sp->upd_delivery;
  sqlite3_bind_int64(st, 1, id);
  sqlite3_bind_int(st, 2, dead ? ST_DEAD : ST_PENDING);
  sqlite3_bind_int(st, 3, (int)attempt);
  sqlite3_bind_int(st, 4, (int)crashes);
  sqlite3_bind_int64(st, 5, now);
  sqlite3_bind_text(st, 6, why, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 7, now);
  sqlite3_bind_int(st, 8, 0);
  int rc = step_done(st);
  if (rc == SQLITE_OK) {
    atomic_fetch_add(&sp->crashes, 1);
    if (dead) atomic_fetch_add(&sp->dead, 1);
  }
  return rc;
}

/* Every attempt started and never ended (runslots): hookd died while it
 * ran. */
static int account_crashes(sq_spool *sp, char *why, size_t len) {
  runslot_entry left[1024];
  size_t n = runslots_left(sp->running, left, sizeof left / sizeof left[0]);
  if (n == 0) return 0;
  int64_t now = clock_now_ms();
  /* A fault names the delivery that caused it; without a journal (kill -9,
   * OOM, power loss, exit()) every running delivery is a suspect. */
  uint64_t *faulted = NULL;
  size_t n_faulted = 0;
  int journal = crash_journal_read(sp->data_dir, &faulted, &n_faulted);
  int rc = step_done(sp->begin);
  sqlite3_stmt *st = sp->crashed_row;
  for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
    sqlite3_bind_int64(st, 1, (int64_t)left[i].spool_id);
    sqlite3_bind_int64(st, 2, left[i].attempt);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      int suspect = journal != 1;
      for (size_t k = 0; k < n_faulted && !suspect; k++) suspect = faulted[k] == left[i].spool_id;
      rc = suspect ? account_one(sp, st, now) : account_bystander(sp, st);
    } else if (rc == SQLITE_DONE) {
      rc = SQLITE_OK; /* settled before the death (its outcome was committed) */
    }
    sqlite3_reset(st);
  }
  free(faulted);
  if (rc == SQLITE_OK) rc = step_done(sp->commit);
  if (rc != SQLITE_OK) {
    db_error(sp->db, why, len);
    sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    return is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  }
  runslots_clear(sp->running);
  if (journal == 1) crash_journal_clear(sp->data_dir);
  return 0;
}

/* Replay requests become new pending deliveries (new ids, so lanes read
 * them past their cursors). With add_pending set, the lanes of the replayed
 * deliveries count them as pending. Returns how many, or -1. Writer thread,
 * or the loop thread before the writer starts. */
static int64_t take_replays(sq_spool *sp, int add_pending) {
  int64_t n = 0;
  int rc = query_int(sp->db, "SELECT count(*) FROM deliveries WHERE state = 3 AND state >= 2", &n);
  if (rc != SQLITE_OK || n == 0) return rc == SQLITE_OK ? 0 : -1;
  int64_t max_id = 0;
  if (query_int(sp->db, "SELECT coalesce(max(id), 0) FROM deliveries", &max_id) != SQLITE_OK) {
    return -1;
  }
  char sql[512];
  int64_t now = clock_now_ms();
  snprintf(sql, sizeof sql,
           "INSERT INTO deliveries(seq, instance, state, attempt, next_ms, updated_ms, tries) "
           "SELECT seq, instance, 0, 0, %lld, %lld, tries FROM deliveries "
           "WHERE state = 3 AND state >= 2 ORDER BY id;"
           "DELETE FROM deliveries WHERE state = 3 AND state >= 2;",
           (long long)now, (long long)now);
  char err[256] = "";
  sqlite3_stmt *st = NULL;
  rc = exec_sql(sp->db, "BEGIN IMMEDIATE", err, sizeof err);
  if (rc == SQLITE_OK) {
    rc = sqlite3_prepare_v2(sp->db,
                            "SELECT instance, count(*) FROM deliveries WHERE state = 3 AND "
                            "state >= 2 GROUP BY instance",
                            -1, &st, NULL);
  }
  /* The counts are read inside the transaction that converts them. */
  typedef struct per_lane {
    sq_lane *l;
    uint64_t n;
  } per_lane;
  per_lane *counts = NULL;
  size_t nc = 0, cap = 0;
  while (next_row(st, &rc)) {
    if (!add_pending) continue;
    if (nc == cap) {
      cap = cap ? cap * 2 : 16;
      per_lane *nl = realloc(counts, cap * sizeof *nl);
      if (nl == NULL) {
        rc = SQLITE_NOMEM;
        break;
      }
      counts = nl;
    }
    pthread_mutex_lock(&sp->lanes_mu);
    sq_lane *l = lane_get_locked(sp, (const char *)sqlite3_column_text(st, 0));
    pthread_mutex_unlock(&sp->lanes_mu);
    if (l == NULL) {
      rc = SQLITE_NOMEM;
      break;
    }
    counts[nc++] = (per_lane){l, (uint64_t)sqlite3_column_int64(st, 1)};
  }
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  sqlite3_finalize(st);
  if (rc == SQLITE_OK) rc = exec_sql(sp->db, sql, err, sizeof err);
  if (rc == SQLITE_OK) rc = exec_sql(sp->db, "COMMIT", err, sizeof err);
  if (rc != SQLITE_OK) {
    if (!err[0]) db_error(sp->db, err, sizeof err);
    sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    log_write(HLOG_ERROR, NULL, "spool: replaying dead letters failed: %s", err);
    free(counts);
    return -1;
  }
  for (size_t i = 0; i < nc; i++) {
    atomic_fetch_add(&counts[i].l->pending, counts[i].n);
    atomic_fetch_add(&sp->pending_total, counts[i].n);
  }
  free(counts);
  /* The new rows have ids past max_id; a cursor beyond it (its rows were
   * delivered and deleted) steps back so that the lane reads them. */
  pthread_mutex_lock(&sp->lanes_mu);
  for (sq_lane *l = sp->lanes; l; l = l->next) {
    pthread_mutex_lock(&l->lb.mu);
    if (l->cursor > max_id) l->cursor = max_id;
    pthread_mutex_unlock(&l->lb.mu);
  }
  pthread_mutex_unlock(&sp->lanes_mu);
  return n;
}

/* Each lane's pause from instance_state (lanes of paused instances are
 * created). Returns the SQLite code. */
static int load_instance_states(sq_spool *sp) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(sp->db, "SELECT instance, paused, changed_ms FROM instance_state", -1,
                              &st, NULL);
  pthread_mutex_lock(&sp->lanes_mu);
  sq_lane *lanes = sp->lanes;
  pthread_mutex_unlock(&sp->lanes_mu);
  for (sq_lane *l = lanes; l; l = l->next) l->state_seen = 0;
  while (next_row(st, &rc)) {
    pthread_mutex_lock(&sp->lanes_mu);
    sq_lane *l = lane_get_locked(sp, (const char *)sqlite3_column_text(st, 0));
    pthread_mutex_unlock(&sp->lanes_mu);
    if (l == NULL) continue;
    l->state_seen = 1;
    lane_set_paused(l, sqlite3_column_int(st, 1) != 0, sqlite3_column_int64(st, 2));
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return rc;
  pthread_mutex_lock(&sp->lanes_mu);
  lanes = sp->lanes;
  pthread_mutex_unlock(&sp->lanes_mu);
  for (sq_lane *l = lanes; l; l = l->next) {
    if (!l->state_seen) lane_set_paused(l, 0, 0);
  }
  return SQLITE_OK;
}

/* New rows the writer made outside a store (replays, back-fills): every
 * lane looks past its cursor again, and a cursor beyond max_id (its rows
 * were delivered and deleted) steps back so that the lane reads them. */
static void lanes_spilled(sq_spool *sp, int64_t max_id) {
  pthread_mutex_lock(&sp->lanes_mu);
  sq_lane *lanes = sp->lanes;
  pthread_mutex_unlock(&sp->lanes_mu);
  for (sq_lane *l = lanes; l; l = l->next) {
    pthread_mutex_lock(&l->lb.mu);
    if (l->cursor > max_id) l->cursor = max_id;
    l->spilled = 1;
    if (l->lb.owner) l->refill_asked = 1;
    pthread_mutex_unlock(&l->lb.mu);
  }
  atomic_fetch_add(&sp->refills, 1);
}

/* Back-fills (`hookd replay`) make new deliveries a batch at a time: at
 * most this many per transaction, and this many batches per housekeeping
 * turn, so that stores wait a few milliseconds at most. */
#define BACKFILL_BATCH 500
#define BACKFILL_BATCHES 8

/* The oldest unfinished back-fill: 0 with its id and instance (malloc'd),
 * 0 with *id 0 when there is none, -1 on error. */
static int oldest_backfill(sq_spool *sp, int64_t *id, char **instance) {
  sqlite3_stmt *st = NULL;
  *id = 0;
  *instance = NULL;
  int rc = sqlite3_prepare_v2(
      sp->db, "SELECT id, instance FROM backfills WHERE finished_ms IS NULL ORDER BY id LIMIT 1",
      -1, &st, NULL);
  if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    *id = sqlite3_column_int64(st, 0);
    *instance = strdup((const char *)sqlite3_column_text(st, 1));
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_OK || (*id != 0 && *instance == NULL)) {
    free(*instance);
    *instance = NULL;
    return -1;
  }
  return 0;
}

/* In one transaction: the back-fill's next BACKFILL_BATCH events become
 * pending deliveries of instance (*made of them), what is *left of it is
 * counted, and it is marked finished when nothing is. Returns an SQLite
 * code (err says why when it is not SQLITE_OK); the caller rolls back. */
static int backfill_queue_rows(sq_spool *sp, int64_t id, const char *instance, int64_t now,
                               int64_t *max_id, int64_t *made, int64_t *left, char *err,
                               size_t errlen) {
  sqlite3_stmt *st = NULL;
  char sql[1024];
  int64_t n = 0;
  snprintf(sql, sizeof sql,
           "CREATE TEMP TABLE IF NOT EXISTS backfill_now(seq INTEGER PRIMARY KEY);"
           "DELETE FROM backfill_now;"
           "INSERT INTO backfill_now SELECT seq FROM backfill_events WHERE backfill = %lld "
           "ORDER BY seq LIMIT %d;",
           (long long)id, BACKFILL_BATCH);
  int rc = exec_sql(sp->db, "BEGIN IMMEDIATE", err, errlen);
  if (rc == SQLITE_OK)
    rc = query_int(sp->db, "SELECT coalesce(max(id), 0) FROM deliveries", max_id);
  if (rc == SQLITE_OK) rc = exec_sql(sp->db, sql, err, errlen);
  if (rc == SQLITE_OK) {
    rc = sqlite3_prepare_v2(
        sp->db,
        "INSERT INTO deliveries(seq, instance, state, attempt, next_ms, updated_ms, replay, tries)"
        " SELECT e.seq, ?1, 0, 0, ?2, ?2, ?3, (SELECT count(*) FROM attempts a WHERE a.seq = e.seq"
        " AND a.instance = ?1) FROM backfill_now b JOIN events e ON e.seq = b.seq ORDER BY e.seq",
        -1, &st, NULL);
  }
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, instance, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, id);
    rc = step_done(st);
    n = sqlite3_changes(sp->db);
    *made = n;
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_OK) {
    snprintf(sql, sizeof sql,
             "DELETE FROM backfill_events WHERE backfill = %lld AND seq IN "
             "(SELECT seq FROM backfill_now);"
             "UPDATE backfills SET queued = queued + %lld WHERE id = %lld;",
             (long long)id, (long long)n, (long long)id);
    rc = exec_sql(sp->db, sql, err, errlen);
  }
  if (rc == SQLITE_OK) {
    snprintf(sql, sizeof sql, "SELECT count(*) FROM backfill_events WHERE backfill = %lld",
             (long long)id);
    rc = query_int(sp->db, sql, left);
  }
  if (rc == SQLITE_OK && *left == 0) {
    snprintf(sql, sizeof sql, "UPDATE backfills SET finished_ms = %lld WHERE id = %lld",
             (long long)now, (long long)id);
    rc = exec_sql(sp->db, sql, err, errlen);
  }
  if (rc == SQLITE_OK) rc = exec_sql(sp->db, "COMMIT", err, errlen);
  return rc;
}

static int64_t backfill_batch(sq_spool *sp, int64_t *max_id) {
  int64_t id, n = 0, left = 0, now = clock_now_ms();
  char *instance;
  if (oldest_backfill(sp, &id, &instance) != 0) return -1;
  if (id == 0) return 0;
  char err[256] = "";
  int rc = backfill_queue_rows(sp, id, instance, now, max_id, &n, &left, err, sizeof err);
  if (rc != SQLITE_OK) {
    if (!err[0]) db_error(sp->db, err, sizeof err);
    sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    log_write(HLOG_ERROR, &(log_ctx){.instance = instance}, "spool: back-fill %lld failed: %s",
              (long long)id, err);
    free(instance);
    return -1;
  }
  if (n > 0) {
    pthread_mutex_lock(&sp->lanes_mu);
    sq_lane *l = lane_get_locked(sp, instance);
    pthread_mutex_unlock(&sp->lanes_mu);
    if (l) atomic_fetch_add(&l->pending, (uint64_t)n);
    atomic_fetch_add(&sp->pending_total, (uint64_t)n);
  }
  if (left == 0) {
    log_write(HLOG_INFO, &(log_ctx){.instance = instance},
              "spool: back-fill %lld queued all its deliveries", (long long)id);
  }
  free(instance);
  /* A back-fill whose events were all pruned made nothing but is finished:
   * the next one may follow in the same turn. */
  return n > 0 || left == 0 ? (n > 0 ? n : 1) : 0;
}

/* Up to BACKFILL_BATCHES batches; the lanes then read the new rows. */
static void take_backfills(sq_spool *sp) {
  int64_t max_id = INT64_MAX, first = INT64_MAX;
  int made = 0;
  for (int i = 0; i < BACKFILL_BATCHES; i++) {
    int64_t n = backfill_batch(sp, &max_id);
    if (n <= 0) break;
    if (max_id < first) first = max_id;
    made = 1;
  }
  if (made) lanes_spilled(sp, first);
}

/* Sets every lane's count of unfinished deliveries (creating lanes for
 * instances that have some), and the spool's totals. */
static int count_lanes(sq_spool *sp, char *why, size_t len) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(sp->db,
                              "SELECT instance, count(*) FROM deliveries WHERE state = 0 AND "
                              "state <> 1 GROUP BY instance",
                              -1, &st, NULL);
  uint64_t total = 0;
  pthread_mutex_lock(&sp->lanes_mu);
  for (sq_lane *l = sp->lanes; l; l = l->next) atomic_store(&l->pending, 0);
  while (next_row(st, &rc)) {
    sq_lane *l = lane_get_locked(sp, (const char *)sqlite3_column_text(st, 0));
    uint64_t n = (uint64_t)sqlite3_column_int64(st, 1);
    if (l) atomic_store(&l->pending, n);
    total += n;
  }
  pthread_mutex_unlock(&sp->lanes_mu);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    db_error(sp->db, why, len);
    return is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  }
  atomic_store(&sp->pending_total, total);
  rc = sqlite3_prepare_v2(sp->db,
                          "SELECT instance, count(*) FROM deliveries WHERE parked = 1 "
                          "GROUP BY instance",
                          -1, &st, NULL);
  pthread_mutex_lock(&sp->lanes_mu);
  while (next_row(st, &rc)) {
    sq_lane *l = lane_get_locked(sp, (const char *)sqlite3_column_text(st, 0));
    if (l) l->parked = (uint64_t)sqlite3_column_int64(st, 1);
  }
  pthread_mutex_unlock(&sp->lanes_mu);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    db_error(sp->db, why, len);
    return is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  }
  int64_t dead = 0;
  rc = query_int(sp->db, "SELECT count(*) FROM deliveries WHERE state = 2 AND state >= 2", &dead);
  if (rc != SQLITE_OK) {
    db_error(sp->db, why, len);
    return is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  }
  atomic_store(&sp->dead, (uint64_t)dead);
  return 0;
}

static void *writer_main(void *arg);
static void slow_stats(sq_spool *sp);
static void disk_stats(sq_spool *sp);

/* What has to be written before anything is delivered: crash accounting
 * and replays left from a stopped hookd. Writable spool only. */
static int prepare_delivery(sq_spool *sp, char *why, size_t len) {
  int rc = account_crashes(sp, why, len);
  if (rc != 0) return rc;
  /* Lanes start reading from the first id again: what waited behind a
   * parked head is found again by its key as the reading passes it (a row
   * left marked ahead of the reading would never be read). */
  if (exec_sql(sp->db, "UPDATE deliveries SET parked = 0 WHERE parked = 2 AND parked >= 1", why,
               len) != SQLITE_OK) {
    return SPOOL_EFAIL;
  }
  if (take_replays(sp, 0) < 0) {
    db_error(sp->db, why, len);
    return SPOOL_EFAIL;
  }
  return 0;
}

static int sq_recover(spool *base, char *err, size_t errlen) {
  sq_spool *sp = sq(base);
  char why[512] = "";
  int rc = sp->readonly ? 0 : prepare_delivery(sp, why, sizeof why);
  if (rc == 0) rc = count_lanes(sp, why, sizeof why);
  if (rc == 0 && load_instance_states(sp) != SQLITE_OK) {
    db_error(sp->db, why, sizeof why);
    rc = SPOOL_EFAIL;
  }
  if (rc == 0) query_int(sp->db, "PRAGMA data_version", &sp->data_version);
  if (rc != 0) {
    if (rc == SPOOL_EDAMAGED) {
      snprintf(err, errlen,
               "the spool %s is damaged: %s. Run `hookd spool check -c CONFIG`, then restore "
               "it or move it aside",
               sp->path, why);
    } else {
      snprintf(err, errlen, "cannot read the spool %s back: %s", sp->path, why);
    }
    return rc;
  }
  uint64_t pending = atomic_load(&sp->pending_total);
  if (pending > 0) {
    log_write(HLOG_INFO, NULL,
              "spool: resuming %llu unfinished deliveries (read from disk as they run)",
              (unsigned long long)pending);
  }
  slow_stats(sp);
  disk_stats(sp);
  if (!sp->readonly) {
    start_checkpoints(sp);
    atomic_store(&sp->deliver_ok, 1);
  }
  atomic_store(&sp->beat_ms, clock_mono_ms());
  if (pthread_create(&sp->writer, NULL, writer_main, sp) != 0) {
    snprintf(err, errlen, "cannot start the spool writer thread");
    return SPOOL_EFAIL;
  }
  sp->writer_started = 1;
  return 0;
}

/* --- the writer: one transaction per batch ---------------------------------------- */

static int write_store(sq_spool *sp, store_req *r, int64_t now) {
  event *ev = r->ev;
  sqlite3_stmt *st = sp->ins_event;
  sqlite3_bind_text(st, 1, ev->source, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, ev->id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, ev->type, -1, SQLITE_STATIC);
  if (ev->order_key) {
    sqlite3_bind_text(st, 4, ev->order_key, -1, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, 4);
  }
  sqlite3_bind_text(st, 5, ev->content_type, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 6, ev->received_ms);
  sqlite3_bind_blob(st, 7, ev->body, (int)ev->body_len, SQLITE_STATIC);
  sqlite3_bind_null(st, 8); /* done_ms: unused since schema version 2 */
  if (ev->headers) {
    sqlite3_bind_text(st, 9, ev->headers, -1, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, 9);
  }
  int rc = step_done(st);
  if (rc != SQLITE_OK) return rc;
  if (sqlite3_changes(sp->db) == 0) {
    r->status = SPOOL_DUPLICATE;
    return SQLITE_OK;
  }
  int64_t seq = sqlite3_last_insert_rowid(sp->db);
  ev->seq = (uint64_t)seq;
  int64_t *ids = req_ids(r);
  for (size_t i = 0; i < r->n; i++) {
    st = sp->ins_delivery;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_text(st, 2, r->lanes[i]->lb.name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    rc = step_done(st);
    if (rc != SQLITE_OK) return rc;
    ids[i] = sqlite3_last_insert_rowid(sp->db);
  }
  r->status = SPOOL_STORED;
  return SQLITE_OK;
}

/* The order key of a parked row (what key lookups of parked rows read). */
static void bind_okey(sqlite3_stmt *st, int i, const op *o) {
  if (o->okey) {
    sqlite3_bind_text(st, i, o->okey, -1, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, i);
  }
}

static int write_outcome(sq_spool *sp, const op *o, int64_t now) {
  static const int states[] = {[OP_RETRY] = ST_PENDING, [OP_DEAD] = ST_DEAD};
  sqlite3_stmt *st;
  if (o->kind == OP_DONE) {
    /* Delivered: the row goes (an event with none left is finished). */
    st = sp->del_delivery;
    sqlite3_bind_int64(st, 1, o->delivery_id);
    return step_done(st);
  }
  st = sp->upd_delivery;
  sqlite3_bind_int64(st, 1, o->delivery_id);
  sqlite3_bind_int(st, 2, states[o->kind]);
  sqlite3_bind_int(st, 3, (int)o->attempt);
  sqlite3_bind_int(st, 4, (int)o->crashes);
  sqlite3_bind_int64(st, 5, o->next_ms);
  if (o->text[0]) {
    sqlite3_bind_text(st, 6, o->text, -1, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, 6);
  }
  sqlite3_bind_int64(st, 7, now);
  sqlite3_bind_int(st, 8, o->park ? 1 : 0);
  if (o->park) {
    bind_okey(st, 9, o);
  } else {
    sqlite3_bind_null(st, 9);
  }
  sqlite3_bind_int(st, 10, (int)o->tries);
  return step_done(st);
}

/* A row of attempts: slot (tries - 1) % SPOOL_ATTEMPTS_KEPT replaces the
 * oldest once an (event, instance) has that many. */
static int write_attempt(sq_spool *sp, const op *o) {
  const char *outcome = o->text;
  const char *answer = outcome + strlen(outcome) + 1;
  const char *message = answer + strlen(answer) + 1;
  sqlite3_stmt *st = sp->ins_attempt;
  sqlite3_bind_int64(st, 1, o->seq);
  sqlite3_bind_text(st, 2, o->lane->lb.name, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 3, (int)((o->tries - 1) % SPOOL_ATTEMPTS_KEPT));
  sqlite3_bind_int(st, 4, (int)o->attempt);
  sqlite3_bind_int64(st, 5, o->started_ms);
  sqlite3_bind_int64(st, 6, o->took_ms);
  sqlite3_bind_text(st, 7, outcome, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 8, o->status);
  if (*answer) {
    sqlite3_bind_text(st, 9, answer, -1, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, 9);
  }
  if (*message) {
    sqlite3_bind_text(st, 10, message, -1, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, 10);
  }
  return step_done(st);
}

static int write_op(sq_spool *sp, const op *o, int64_t now) {
  sqlite3_stmt *st;
  switch (o->kind) {
    case OP_PARK:
      st = sp->set_parked;
      sqlite3_bind_int64(st, 1, o->delivery_id);
      sqlite3_bind_int(st, 2, 2);
      bind_okey(st, 3, o);
      return step_done(st);
    case OP_RELEASE:
      st = sp->upd_next;
      sqlite3_bind_int64(st, 1, o->delivery_id);
      sqlite3_bind_int64(st, 2, o->next_ms);
      sqlite3_bind_int(st, 3, (int)o->tries);
      return step_done(st);
    case OP_ATTEMPT:
      return write_attempt(sp, o);
    case OP_PAUSE:
      st = sp->set_state;
      sqlite3_bind_text(st, 1, o->text, -1, SQLITE_STATIC);
      sqlite3_bind_int(st, 2, o->attempt ? 1 : 0);
      sqlite3_bind_int64(st, 3, now);
      return step_done(st);
    default:
      return write_outcome(sp, o, now);
  }
}

/* Writes one batch in one transaction. Returns SQLITE_OK, or the failing
 * code after rolling back. */
static int write_batch(sq_spool *sp, store_req *stores, op *ops) {
  int64_t now = clock_now_ms();
  int rc = step_done(sp->begin);
  for (store_req *r = stores; r && rc == SQLITE_OK; r = r->next) rc = write_store(sp, r, now);
  for (op *o = ops; o && rc == SQLITE_OK; o = o->next) rc = write_op(sp, o, now);
  if (rc == SQLITE_OK) rc = step_done(sp->commit);
  if (rc == SQLITE_OK) {
    atomic_fetch_add(&sp->commits, 1);
    clear_failing(sp);
    return SQLITE_OK;
  }
  char e[300], why[400];
  db_error(sp->db, e, sizeof e);
  sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
  atomic_fetch_add(&sp->commit_errors, 1);
  if (is_damage(rc)) {
    snprintf(why, sizeof why, "the spool %s is damaged (%s); run `hookd spool check`", sp->path, e);
  } else {
    snprintf(why, sizeof why, "commit failed: %s", e);
  }
  log_write(HLOG_ERROR, NULL, "spool: %s", why);
  set_failing(sp, why);
  return rc;
}

/* After a commit: the fresh deliveries go to their lanes. */
static void hand_out(sq_spool *sp, store_req *r) {
  event *ev = r->ev;
  int64_t *ids = req_ids(r);
  for (size_t i = 0; i < r->n; i++) {
    sq_lane *l = r->lanes[i];
    atomic_fetch_add(&l->pending, 1);
    atomic_fetch_add(&sp->pending_total, 1);
    atomic_fetch_sub(&l->reserved, 1);
    delivery *d = delivery_new(ev, l);
    if (d == NULL) {
      pthread_mutex_lock(&l->lb.mu);
      l->spilled = 1; /* on disk: read back later */
      pthread_mutex_unlock(&l->lb.mu);
      continue;
    }
    d->spool_id = (uint64_t)ids[i];
    d->due_ms = ev->received_ms;
    if (!lane_offer(l, d)) delivery_free(d);
  }
}

/* Wakes each lane that took deliveries of a committed batch, once. */
static void wake_offered(store_req *stores) {
  for (store_req *r = stores; r; r = r->next) {
    for (size_t i = 0; i < r->n; i++) {
      sq_lane *l = r->lanes[i];
      pthread_mutex_lock(&l->lb.mu);
      if (l->to_wake) lane_base_wake(&l->lb, l->to_wake);
      l->to_wake = 0;
      pthread_mutex_unlock(&l->lb.mu);
    }
  }
}

/* Keys parked in memory are on disk now: their lanes may read again. */
static void parked_committed(sq_spool *sp, op *ops) {
  int poke = 0;
  for (op *o = ops; o; o = o->next) {
    if (o->kind != OP_RETRY || !o->park) continue;
    sq_lane *l = o->lane;
    pthread_mutex_lock(&l->lb.mu);
    l->parking--;
    l->parked++;
    if (l->parking == 0 && l->refill_asked) poke = 1;
    pthread_mutex_unlock(&l->lb.mu);
  }
  if (poke) atomic_fetch_add(&sp->refills, 1);
}

/* Pauses of a batch: applied to their lanes once committed; their pause()
 * calls are told either way. */
static void answer_pauses(sq_spool *sp, op *ops, int rc) {
  int any = 0;
  for (op *o = ops; o; o = o->next) {
    if (o->kind != OP_PAUSE) continue;
    if (rc == SQLITE_OK) lane_set_paused(o->lane, o->attempt != 0, clock_now_ms());
    any = 1;
  }
  if (!any) return;
  pthread_mutex_lock(&sp->mu);
  for (op *o = ops; o; o = o->next) {
    if (o->kind != OP_PAUSE || o->wait == NULL) continue;
    o->wait->rc = rc == SQLITE_OK ? 0 : SPOOL_EFAIL;
    o->wait->done = 1;
    o->wait = NULL;
  }
  pthread_cond_broadcast(&sp->state_cv);
  pthread_mutex_unlock(&sp->mu);
}

static void finish_batch(sq_spool *sp, store_req *stores, op *ops, int rc, int stopping) {
  for (store_req *r = stores; r; r = r->next) {
    if (rc != SQLITE_OK) {
      r->status = SPOOL_EIO;
      for (size_t i = 0; i < r->n; i++) atomic_fetch_sub(&r->lanes[i]->reserved, 1);
    } else if (r->status == SPOOL_STORED) {
      hand_out(sp, r);
    } else {
      for (size_t i = 0; i < r->n; i++) atomic_fetch_sub(&r->lanes[i]->reserved, 1);
    }
  }
  if (rc == SQLITE_OK) wake_offered(stores);
  if (rc == SQLITE_OK) parked_committed(sp, ops);
  answer_pauses(sp, ops, rc);
  /* Outcomes of a failed batch are kept for a later one (losing one would
   * only mean a redelivery, but keeping it is cheap); a pause is not: its
   * caller was told. */
  op *keep = NULL, **kt = &keep;
  while (ops) {
    op *next = ops->next;
    if (rc != SQLITE_OK && !stopping && ops->kind != OP_PAUSE) {
      *kt = ops;
      kt = &ops->next;
      ops->next = NULL;
    } else {
      free(ops);
    }
    ops = next;
  }
  pthread_mutex_lock(&sp->mu);
  if (stores) {
    store_req *last = stores;
    while (last->next) last = last->next;
    reqs_append(&sp->out_head, &sp->out_tail, stores, last);
  }
  if (keep) {
    *kt = sp->ops_head;
    sp->ops_head = keep;
    if (sp->ops_tail == NULL) {
      sp->ops_tail = keep;
      while (sp->ops_tail->next) sp->ops_tail = sp->ops_tail->next;
    }
  }
  pthread_mutex_unlock(&sp->mu);
  if (stores) uv_async_send(&sp->async);
}

/* --- the writer: reading lanes' backlogs --------------------------------------------- */

/* The event of a delivery row (event_by_seq), NULL when it is gone or
 * memory ran out. */
static event *load_event(sq_spool *sp, int64_t seq) {
  sqlite3_stmt *st = sp->event_by_seq;
  sqlite3_bind_int64(st, 1, seq);
  event *ev = NULL;
  if (sqlite3_step(st) == SQLITE_ROW) {
    ev = event_new(
        (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
        (const char *)sqlite3_column_text(st, 2), (const char *)sqlite3_column_text(st, 3),
        (const char *)sqlite3_column_text(st, 4), sqlite3_column_blob(st, 6),
        (size_t)sqlite3_column_bytes(st, 6), NULL, sqlite3_column_int64(st, 5));
    if (ev) ev->seq = (uint64_t)seq;
  }
  sqlite3_reset(st);
  return ev;
}

/* One delivery row (id, seq, okey, parked, attempt, crashes, next_ms) with
 * its event, as a delivery of l. */
static delivery *row_delivery(sq_spool *sp, sqlite3_stmt *st, sq_lane *l) {
  event *ev = load_event(sp, sqlite3_column_int64(st, 1));
  if (ev == NULL) return NULL;
  delivery *d = delivery_new(ev, l);
  event_unref(ev);
  if (d == NULL) return NULL;
  d->spool_id = (uint64_t)sqlite3_column_int64(st, 0);
  d->attempt = (uint32_t)sqlite3_column_int(st, 4);
  d->crashes = (uint32_t)sqlite3_column_int(st, 5);
  d->due_ms = sqlite3_column_int64(st, 6);
  d->tries = (uint32_t)sqlite3_column_int(st, 7);
  return d;
}

/* Is a key of l parked on disk (a row of it has parked >= 1)? */
static int key_is_parked(sq_spool *sp, sq_lane *l, const char *okey) {
  sqlite3_stmt *st = sp->key_parked;
  sqlite3_bind_text(st, 1, l->lb.name, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, okey, -1, SQLITE_TRANSIENT);
  int parked = sqlite3_step(st) == SQLITE_ROW;
  sqlite3_reset(st);
  return parked;
}

/* Rows to mark parked (or not), collected while reading, with the order
 * key of those that park behind a head (NULL: keep the row's). */
typedef struct marks {
  int64_t *ids;
  int *values;
  char **keys;
  size_t n, cap;
} marks;

static void mark_add(marks *m, int64_t id, int value, const char *okey) {
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 32;
    int64_t *ni = realloc(m->ids, cap * sizeof *ni);
    if (ni) m->ids = ni;
    int *nv = realloc(m->values, cap * sizeof *nv);
    if (nv) m->values = nv;
    char **nk = realloc(m->keys, cap * sizeof *nk);
    if (nk) m->keys = nk;
    if (ni == NULL || nv == NULL || nk == NULL) return; /* the refill marks it next time */
    m->cap = cap;
  }
  m->ids[m->n] = id;
  m->values[m->n] = value;
  m->keys[m->n++] = okey ? strdup(okey) : NULL;
}

/* Writes the marks in one transaction and frees them. */
static void mark_parked(sq_spool *sp, marks *m) {
  int rc = m->n ? step_done(sp->begin) : SQLITE_OK;
  for (size_t i = 0; i < m->n && rc == SQLITE_OK; i++) {
    sqlite3_bind_int64(sp->set_parked, 1, m->ids[i]);
    sqlite3_bind_int(sp->set_parked, 2, m->values[i]);
    if (m->keys[i]) {
      sqlite3_bind_text(sp->set_parked, 3, m->keys[i], -1, SQLITE_STATIC);
    } else {
      sqlite3_bind_null(sp->set_parked, 3);
    }
    rc = step_done(sp->set_parked);
  }
  if (m->n && rc == SQLITE_OK) rc = step_done(sp->commit);
  if (rc != SQLITE_OK) {
    char e[256];
    db_error(sp->db, e, sizeof e);
    sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    log_write(HLOG_WARN, NULL, "spool: marking parked deliveries failed: %s", e);
  }
  for (size_t i = 0; i < m->n; i++) free(m->keys[i]);
  free(m->ids);
  free(m->values);
  free(m->keys);
  memset(m, 0, sizeof *m);
}

/* Puts a list of read deliveries in l's window and wakes its workers. */
static void lane_take(sq_lane *l, delivery *head) {
  pthread_mutex_lock(&l->lb.mu);
  size_t n = 0;
  while (head) {
    delivery *d = head;
    head = d->next;
    if (keysched_push(l->ks, d) != 0) {
      /* Out of memory: it stays pending on disk and runs after a restart. */
      delivery_free(d);
      continue;
    }
    l->mem_bytes += d->ev->body_len;
    n++;
  }
  if (n) lane_base_wake(&l->lb, n);
  pthread_mutex_unlock(&l->lb.mu);
}

/* Parked keys whose head is due again come back into l's window, with
 * what waits behind them, in id order (so keysched restores their order).
 * A key with more rows than the window has room for leaves the rest parked,
 * the first of them its new head, due now. */
static void unpark(sq_spool *sp, sq_lane *l, int64_t now) {
  pthread_mutex_lock(&l->lb.mu);
  size_t have = keysched_count(l->ks);
  size_t room = have < LANE_WINDOW ? LANE_WINDOW - have : 0;
  int go = l->parked && !l->parking && room > 0 && l->lb.owner != NULL;
  int64_t cursor = l->cursor;
  pthread_mutex_unlock(&l->lb.mu);
  if (!go) return;
  sqlite3_stmt *due = sp->due_parked;
  sqlite3_bind_text(due, 1, l->lb.name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(due, 2, now);
  sqlite3_bind_int64(due, 3, cursor);
  sqlite3_bind_int64(due, 4, 64);
  /* The heads first (the statement is reset before the rows are read). */
  int64_t heads[64];
  char *keys[64];
  size_t nh = 0;
  while (nh < 64 && sqlite3_step(due) == SQLITE_ROW) {
    heads[nh] = sqlite3_column_int64(due, 0);
    const char *k = (const char *)sqlite3_column_text(due, 1);
    keys[nh++] = k ? strdup(k) : NULL;
  }
  sqlite3_reset(due);
  delivery *list = NULL, **tail = &list;
  marks m = {0};
  for (size_t h = 0; h < nh; h++) {
    /* A key with two due heads (a continuation) is read once. */
    int seen = 0;
    for (size_t j = 0; j < h && keys[h] && !seen; j++) seen = keys[j] && !strcmp(keys[j], keys[h]);
    if (seen) continue;
    sqlite3_stmt *st = keys[h] ? sp->key_rows : sp->row_by_id;
    if (keys[h]) {
      sqlite3_bind_text(st, 1, l->lb.name, -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 2, keys[h], -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 3, cursor);
      sqlite3_bind_int64(st, 4, (int64_t)room + 1);
    } else {
      sqlite3_bind_int64(st, 1, heads[h]);
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
      int64_t id = sqlite3_column_int64(st, 0);
      if (room == 0) {
        mark_add(&m, id, 1, NULL); /* the rest of the key waits behind a new head */
        break;
      }
      delivery *d = row_delivery(sp, st, l);
      if (d == NULL) break;
      *tail = d;
      tail = &d->next;
      mark_add(&m, id, 0, NULL);
      room--;
    }
    sqlite3_reset(st);
  }
  /* Freed only now: the loop compares each key with the ones before it. */
  for (size_t h = 0; h < nh; h++) free(keys[h]);
  mark_parked(sp, &m);
  int64_t parked = 0;
  sqlite3_bind_text(sp->count_parked, 1, l->lb.name, -1, SQLITE_STATIC);
  if (sqlite3_step(sp->count_parked) == SQLITE_ROW)
    parked = sqlite3_column_int64(sp->count_parked, 0);
  sqlite3_reset(sp->count_parked);
  lane_take(l, list);
  pthread_mutex_lock(&l->lb.mu);
  l->parked = (uint64_t)parked;
  pthread_mutex_unlock(&l->lb.mu);
}

/* Reads the next part of a lane's backlog into its window, in id order
 * (accept order). Only the writer moves a lane's cursor, and it commits
 * nothing meanwhile, so every delivery past the cursor is either read here
 * or offered after its commit. Rows of parked keys are passed over (and
 * marked as waiting behind their head). */
static void refill(sq_spool *sp, sq_lane *l) {
  pthread_mutex_lock(&l->lb.mu);
  l->refill_asked = 0;
  size_t have = keysched_count(l->ks);
  size_t room = have < LANE_WINDOW ? LANE_WINDOW - have : 0;
  uint64_t bytes = l->mem_bytes;
  int64_t cursor = l->cursor;
  int parked = l->parked > 0;
  int go = l->spilled && room > 0 && l->lb.owner != NULL && !l->parking;
  if (l->parking) l->refill_asked = 1; /* after the parked rows are committed */
  pthread_mutex_unlock(&l->lb.mu);
  if (!go) return;
  sqlite3_stmt *st = sp->lane_rows;
  sqlite3_bind_text(st, 1, l->lb.name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, cursor);
  sqlite3_bind_int64(st, 3, (int64_t)room);
  delivery *head = NULL, **tail = &head;
  marks m = {0};
  size_t scanned = 0;
  int rc, full = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    scanned++;
    int64_t id = sqlite3_column_int64(st, 0);
    if (sqlite3_column_int(st, 3) != 0) {
      cursor = id; /* parked: its key brings it back */
      continue;
    }
    delivery *d = row_delivery(sp, st, l);
    if (d == NULL) {
      full = 1; /* out of memory, or its event is gone: stop here, try again later */
      break;
    }
    cursor = id;
    const char *okey = d->ev->order_key;
    if (parked && okey && key_is_parked(sp, l, okey)) {
      mark_add(&m, id, 2, okey); /* behind its key's parked head */
      delivery_free(d);
      continue;
    }
    *tail = d;
    tail = &d->next;
    bytes += d->ev->body_len;
    if (bytes >= LANE_WINDOW_BYTES) {
      full = 1;
      break;
    }
  }
  int ok = rc == SQLITE_DONE || rc == SQLITE_ROW;
  if (!ok) {
    char e[256];
    db_error(sp->db, e, sizeof e);
    log_write(HLOG_ERROR, &(log_ctx){.instance = l->lb.name},
              "spool: reading the backlog failed: %s", e);
    if (is_damage(rc)) set_failing(sp, "the spool is damaged; run `hookd spool check`");
  }
  sqlite3_reset(st);
  mark_parked(sp, &m);
  lane_take(l, head);
  pthread_mutex_lock(&l->lb.mu);
  l->cursor = cursor;
  /* Fewer rows than asked and no stop: the lane has read all of it. */
  if (ok && !full && scanned < room) l->spilled = 0;
  pthread_mutex_unlock(&l->lb.mu);
}

static void run_refills(sq_spool *sp) {
  if (atomic_exchange(&sp->refills, 0) == 0) return;
  pthread_mutex_lock(&sp->lanes_mu);
  sq_lane *lanes = sp->lanes; /* lanes are only ever prepended and never freed while running */
  pthread_mutex_unlock(&sp->lanes_mu);
  int64_t now = clock_now_ms();
  for (sq_lane *l = lanes; l; l = l->next) {
    pthread_mutex_lock(&l->lb.mu);
    int asked = l->refill_asked;
    pthread_mutex_unlock(&l->lb.mu);
    if (!asked) continue;
    unpark(sp, l, now);
    refill(sp, l);
  }
}

/* --- the writer: housekeeping ------------------------------------------------------ */

static void disk_stats(sq_spool *sp) {
  uint64_t bytes = 0;
  struct stat stb;
  char wal[4200];
  if (stat(sp->path, &stb) == 0) bytes += (uint64_t)stb.st_size;
  snprintf(wal, sizeof wal, "%s-wal", sp->path);
  if (stat(wal, &stb) == 0) bytes += (uint64_t)stb.st_size;
  atomic_store(&sp->db_bytes, bytes);
  struct statvfs vfs;
  if (statvfs(sp->data_dir, &vfs) == 0) {
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    int low = avail < sp->min_free_bytes;
    if (low != atomic_load(&sp->disk_low)) {
      log_write(low ? HLOG_WARN : HLOG_INFO, NULL,
                low ? "spool: free space in %s is below spool.min_free_bytes: new events get 503"
                    : "spool: free space in %s is back above spool.min_free_bytes",
                sp->data_dir);
    }
    atomic_store(&sp->disk_low, low);
  }
}

/* The dead-letter count (the CLI may purge) and each lane's oldest
 * unfinished delivery. */
static void slow_stats(sq_spool *sp) {
  int64_t dead = 0;
  if (query_int(sp->db, "SELECT count(*) FROM deliveries WHERE state = 2 AND state >= 2", &dead) ==
      SQLITE_OK) {
    atomic_store(&sp->dead, (uint64_t)dead);
  }
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(sp->db,
                         "SELECT e.received_ms FROM deliveries d JOIN events e ON e.seq = d.seq "
                         "WHERE d.instance = ?1 AND d.state = 0 AND d.state <> 1 ORDER BY d.id "
                         "LIMIT 1",
                         -1, &st, NULL) != SQLITE_OK) {
    return;
  }
  int64_t oldest = 0;
  pthread_mutex_lock(&sp->lanes_mu);
  sq_lane *lanes = sp->lanes;
  pthread_mutex_unlock(&sp->lanes_mu);
  for (sq_lane *l = lanes; l; l = l->next) {
    int64_t ms = 0;
    if (atomic_load(&l->pending) > 0) {
      sqlite3_bind_text(st, 1, l->lb.name, -1, SQLITE_STATIC);
      if (sqlite3_step(st) == SQLITE_ROW) ms = sqlite3_column_int64(st, 0);
      sqlite3_reset(st);
    }
    atomic_store(&l->oldest_ms, ms);
    if (ms && (oldest == 0 || ms < oldest)) oldest = ms;
  }
  sqlite3_finalize(st);
  atomic_store(&sp->oldest_pending_ms, oldest);
}

/* Deletes events older than spool.retention that have no delivery row
 * left (a delivered one is deleted; pending and dead ones keep their
 * event), oldest first, a window at a time so the writer is never held up
 * for long. A sweep goes through the old part of the table and starts over
 * once it reaches events young enough to keep, so events that could not go
 * yet are looked at again. */
static void prune(sq_spool *sp) {
  int64_t before = clock_now_ms() - sp->retention_ms;
  int64_t oldest = 0;
  /* Most of the time nothing is old enough: the oldest event says so, and
   * no empty transaction is committed (and fsynced) twice a second. */
  if (query_int(sp->db, "SELECT received_ms FROM events ORDER BY seq LIMIT 1", &oldest) !=
          SQLITE_OK ||
      oldest == 0 || oldest >= before) {
    sp->prune_from = 0;
    return;
  }
  char sql[1024];
  snprintf(sql, sizeof sql,
           "BEGIN IMMEDIATE;"
           "CREATE TEMP TABLE IF NOT EXISTS prune_seq(seq INTEGER PRIMARY KEY);"
           "DELETE FROM prune_seq;"
           "INSERT INTO prune_seq SELECT seq FROM (SELECT seq, received_ms FROM events "
           "WHERE seq > %lld ORDER BY seq LIMIT %d) e WHERE e.received_ms < %lld AND NOT EXISTS "
           "(SELECT 1 FROM deliveries d WHERE d.seq = e.seq);"
           "DELETE FROM events WHERE seq IN (SELECT seq FROM prune_seq);"
           "DELETE FROM attempts WHERE seq IN (SELECT seq FROM prune_seq);"
           "DELETE FROM backfills WHERE finished_ms < %lld;"
           "COMMIT;",
           (long long)sp->prune_from, PRUNE_SCAN, (long long)before, (long long)before);
  char err[256];
  if (exec_sql(sp->db, sql, err, sizeof err) != SQLITE_OK) {
    sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    log_write(HLOG_WARN, NULL, "spool: pruning failed: %s", err);
    return;
  }
  /* Where the next pass looks: past this window while all of it was old. */
  char next[512];
  snprintf(next, sizeof next,
           "SELECT max(seq), max(received_ms) >= %lld FROM (SELECT seq, received_ms FROM events "
           "WHERE seq > %lld ORDER BY seq LIMIT %d)",
           (long long)before, (long long)sp->prune_from, PRUNE_SCAN);
  sqlite3_stmt *st = NULL;
  int wrap = 1;
  if (sqlite3_prepare_v2(sp->db, next, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
    wrap = sqlite3_column_int(st, 1);
    if (!wrap) sp->prune_from = sqlite3_column_int64(st, 0);
  }
  sqlite3_finalize(st);
  if (wrap) sp->prune_from = 0;
}

/* Dead letters that `hookd dlq replay` asked for again: new pending
 * deliveries, which their lanes read past their cursors. */
static void pick_up_replays(sq_spool *sp) {
  int64_t n = take_replays(sp, 1);
  if (n <= 0) return;
  log_write(HLOG_INFO, NULL, "spool: %lld replayed dead letter(s) queued again", (long long)n);
  atomic_fetch_sub(&sp->dead, (uint64_t)n);
  lanes_spilled(sp, INT64_MAX); /* take_replays moved the cursors back already */
}

/* Another connection committed (`hookd pause|resume|replay`, `hookd dlq`):
 * pauses apply within a housekeeping turn. */
static void notice_others(sq_spool *sp) {
  int64_t v = 0;
  if (query_int(sp->db, "PRAGMA data_version", &v) != SQLITE_OK || v == sp->data_version) return;
  sp->data_version = v;
  if (load_instance_states(sp) != SQLITE_OK) {
    char e[256];
    db_error(sp->db, e, sizeof e);
    log_write(HLOG_WARN, NULL, "spool: reading the instance states failed: %s", e);
  }
}

/* A spool that failed (or was read-only): a small write tells whether it
 * works again. */
static void probe(sq_spool *sp) {
  char e[300];
  if (sp->readonly) {
    disconnect_db(sp);
    char why[512];
    if (connect_db(sp, 0, why, sizeof why) != 0 || sp->readonly) {
      if (sp->db == NULL || !sp->readonly) log_write(HLOG_WARN, NULL, "spool: %s", why);
      return;
    }
    if (prepare_delivery(sp, why, sizeof why) != 0) {
      set_failing(sp, why);
      return;
    }
    log_write(HLOG_INFO, NULL, "spool: %s can be written now", sp->path);
    start_checkpoints(sp);
    atomic_store(&sp->deliver_ok, 1);
    clear_failing(sp);
    pick_up_replays(sp);
    return;
  }
  int rc = exec_sql(sp->db,
                    "BEGIN IMMEDIATE; UPDATE meta SET value = value WHERE key = 'schema_version';"
                    "COMMIT;",
                    e, sizeof e);
  if (rc == SQLITE_OK) {
    clear_failing(sp);
  } else {
    sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
  }
}

/* Lanes with parked keys look for due heads every housekeeping turn. */
static void ask_parked_lanes(sq_spool *sp) {
  pthread_mutex_lock(&sp->lanes_mu);
  sq_lane *lanes = sp->lanes;
  pthread_mutex_unlock(&sp->lanes_mu);
  int any = 0;
  for (sq_lane *l = lanes; l; l = l->next) {
    pthread_mutex_lock(&l->lb.mu);
    if (l->parked && l->lb.owner && !l->parking) {
      l->refill_asked = 1;
      any = 1;
    }
    pthread_mutex_unlock(&l->lb.mu);
  }
  if (any) atomic_fetch_add(&sp->refills, 1);
}

static void housekeeping(sq_spool *sp, int64_t *next_slow) {
  if (atomic_load(&sp->failing)) probe(sp);
  if (!sp->readonly) ask_parked_lanes(sp);
  if (!sp->readonly) {
    notice_others(sp);
    pick_up_replays(sp);
    take_backfills(sp);
    prune(sp);
  }
  disk_stats(sp);
  int64_t now = clock_mono_ms();
  if (now >= *next_slow) {
    *next_slow = now + SLOW_STATS_MS;
    slow_stats(sp);
  }
}

static void *writer_main(void *arg) {
  sq_spool *sp = arg;
  int64_t next_housekeeping = 0, next_slow = clock_mono_ms() + SLOW_STATS_MS;
  pthread_mutex_lock(&sp->mu);
  for (;;) {
    atomic_store(&sp->beat_ms, clock_mono_ms());
    if (sp->in_head == NULL && sp->ops_head == NULL && atomic_load(&sp->refills) == 0) {
      if (sp->stopping) break;
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += HOUSEKEEPING_MS * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&sp->cv, &sp->mu, &ts);
      atomic_store(&sp->beat_ms, clock_mono_ms());
    }
    /* Everything queued now goes into one transaction: requests that
     * arrived while the last commit was syncing share this one. */
    store_req *stores = sp->in_head;
    op *ops = sp->ops_head;
    sp->in_head = sp->in_tail = NULL;
    sp->ops_head = sp->ops_tail = NULL;
    sp->n_ops = 0;
    int stopping = sp->stopping;
    pthread_mutex_unlock(&sp->mu);

    if (stores || ops) {
      int rc = sp->readonly ? SQLITE_READONLY : write_batch(sp, stores, ops);
      finish_batch(sp, stores, ops, rc, stopping);
      if (rc != SQLITE_OK && !stopping) {
        struct timespec pause = {0, 100 * 1000000L};
        nanosleep(&pause, NULL); /* a failing disk is not retried in a hot loop */
      }
    }
    if (!sp->readonly) run_refills(sp);
    int64_t now = clock_mono_ms();
    if (now >= next_housekeeping && !stopping) {
      next_housekeeping = now + HOUSEKEEPING_MS;
      housekeeping(sp, &next_slow);
    }
    pthread_mutex_lock(&sp->mu);
  }
  sp->closed = 1;
  pthread_mutex_unlock(&sp->mu);
  return NULL;
}

/* --- the loop side -------------------------------------------------------------- */

static void on_async(uv_async_t *h) {
  sq_spool *sp = h->data;
  pthread_mutex_lock(&sp->mu);
  store_req *done = sp->out_head;
  sp->out_head = sp->out_tail = NULL;
  pthread_mutex_unlock(&sp->mu);
  while (done) {
    store_req *r = done;
    done = r->next;
    if (r->status != SPOOL_EIO) remember(sp, r->ev->source, r->ev->id);
    r->done(r->data, r->status);
    event_unref(r->ev);
    free(r);
  }
}

static const char *sq_admit(spool *base, spool_lane *const *lanes, size_t n, char *why,
                            size_t len) {
  sq_spool *sp = sq(base);
  if (atomic_load(&sp->failing)) {
    pthread_mutex_lock(&sp->mu);
    snprintf(why, len, "%s", sp->fail_reason);
    pthread_mutex_unlock(&sp->mu);
    return why;
  }
  if (atomic_load(&sp->disk_low)) return "free disk space below spool.min_free_bytes";
  if (sp->max_total && atomic_load(&sp->pending_total) >= sp->max_total) {
    return "too many pending deliveries (spool.max_pending)";
  }
  for (size_t i = 0; i < n; i++) {
    sq_lane *l = (sq_lane *)lanes[i];
    uint64_t have = atomic_load(&l->pending) + atomic_load(&l->reserved);
    uint64_t max = l->lb.cfg.max_pending; /* a torn read only shifts the limit by a reload */
    if (max && have >= max) {
      snprintf(why, len, "plugin instance '%s' has %llu unfinished deliveries (its max_pending)",
               l->lb.name, (unsigned long long)have);
      return why;
    }
  }
  return NULL;
}

static int sq_store(spool *base, event *ev, spool_lane *const *lanes, size_t n,
                    spool_stored_fn done, void *data) {
  sq_spool *sp = sq(base);
  store_req *r = malloc(sizeof *r + n * (sizeof(sq_lane *) + sizeof(int64_t)));
  if (r == NULL) return SPOOL_EFAIL;
  event_ref(ev);
  r->ev = ev;
  r->n = n;
  r->done = done;
  r->data = data;
  r->status = SPOOL_EIO;
  r->next = NULL;
  for (size_t i = 0; i < n; i++) {
    r->lanes[i] = (sq_lane *)lanes[i];
    atomic_fetch_add(&r->lanes[i]->reserved, 1);
  }
  pthread_mutex_lock(&sp->mu);
  if (sp->closed || sp->stopping) {
    pthread_mutex_unlock(&sp->mu);
    for (size_t i = 0; i < n; i++) atomic_fetch_sub(&r->lanes[i]->reserved, 1);
    event_unref(ev);
    free(r);
    return SPOOL_EFAIL;
  }
  reqs_append(&sp->in_head, &sp->in_tail, r, r);
  pthread_cond_signal(&sp->cv);
  pthread_mutex_unlock(&sp->mu);
  return 0;
}

/* --- the workers' side -------------------------------------------------------------- */

static delivery *sq_claim(spool_lane *base, const void *owner, int64_t now, int64_t *next_ms) {
  sq_lane *l = (sq_lane *)base;
  sq_spool *sp = sq(l->lb.iface.sp);
  pthread_mutex_lock(&l->lb.mu);
  if (l->lb.owner != owner) {
    pthread_mutex_unlock(&l->lb.mu);
    *next_ms = -1;
    return NULL;
  }
  if (!atomic_load(&sp->deliver_ok)) {
    /* Read-only spool: crashes are not accounted yet, nothing may run. */
    pthread_mutex_unlock(&l->lb.mu);
    *next_ms = now + 1000;
    return NULL;
  }
  if (l->paused) {
    /* Paused: its deliveries wait, in order, until a resume wakes the owner. */
    pthread_mutex_unlock(&l->lb.mu);
    *next_ms = INT64_MAX;
    return NULL;
  }
  delivery *d = keysched_take(l->ks, now, next_ms);
  if (d) l->running++;
  int poke = lane_want_refill(l);
  pthread_mutex_unlock(&l->lb.mu);
  if (poke) poke_writer(sp);
  return d;
}

static op *op_new(op_kind kind, const delivery *d, const char *error) {
  size_t el = error ? strlen(error) : 0;
  const char *key = d->ev->order_key;
  size_t kl = key ? strlen(key) + 1 : 0;
  op *o = malloc(sizeof *o + el + 1 + kl);
  if (o == NULL) return NULL;
  o->kind = kind;
  o->delivery_id = (int64_t)d->spool_id;
  o->attempt = d->attempt;
  o->crashes = d->crashes;
  o->next_ms = d->due_ms;
  o->park = 0;
  o->tries = d->tries;
  o->seq = (int64_t)d->ev->seq;
  o->started_ms = o->took_ms = 0;
  o->status = 0;
  o->wait = NULL;
  o->lane = d->lane;
  o->next = NULL;
  memcpy(o->text, error ? error : "", el + 1);
  o->okey = key ? memcpy(o->text + el + 1, key, kl) : NULL;
  return o;
}

/* Queues o (and the ops linked after it) for the next transaction. */
static int push_op(sq_spool *sp, op *o) {
  size_t n = 1;
  op *last = o;
  while (last->next) {
    last = last->next;
    n++;
  }
  pthread_mutex_lock(&sp->mu);
  if (sp->closed) {
    /* After stop (a worker that outlived the shutdown timeout): the outcome
     * is lost, so the delivery runs again on the next start. */
    pthread_mutex_unlock(&sp->mu);
    while (o) {
      op *next = o->next;
      free(o);
      o = next;
    }
    return SPOOL_EFAIL;
  }
  if (sp->ops_tail) {
    sp->ops_tail->next = o;
  } else {
    sp->ops_head = o;
  }
  sp->ops_tail = last;
  sp->n_ops += n;
  /* Outcomes are not urgent (losing one to a crash means a redelivery):
   * they ride along with the next batch of stores, or the
   * housekeeping tick, and wake the writer only when many pile up. */
  if (sp->n_ops >= OPS_WAKE || o->kind == OP_PAUSE) pthread_cond_signal(&sp->cv);
  /* A pause waits for its commit (it is rare and someone waits for it). */
  state_wait *w = o->kind == OP_PAUSE ? o->wait : NULL;
  while (w && !w->done) pthread_cond_wait(&sp->state_cv, &sp->mu);
  pthread_mutex_unlock(&sp->mu);
  return 0;
}

static int sq_started(spool *base, delivery *d) {
  sq_spool *sp = sq(base);
  runslots_set(sp->running, d ? d->spool_id : 0, d ? d->attempt + 1 : 0);
  return 0;
}

static void sq_record_attempt(spool *base, delivery *d, const spool_attempt *a) {
  sq_spool *sp = sq(base);
  const char *answer = a->answer ? a->answer : "", *message = a->message ? a->message : "";
  size_t lo = strlen(a->outcome), la = strlen(answer), lm = strlen(message);
  op *o = malloc(sizeof *o + lo + la + lm + 3);
  if (o == NULL) return; /* the page misses a row; nothing else does */
  d->tries++;
  memset(o, 0, sizeof *o);
  o->kind = OP_ATTEMPT;
  o->delivery_id = (int64_t)d->spool_id;
  o->seq = (int64_t)d->ev->seq;
  o->tries = d->tries;
  o->attempt = a->attempt;
  o->started_ms = a->started_ms;
  o->took_ms = a->took_ms;
  o->status = a->status;
  o->lane = d->lane;
  /* The three strings, NUL-separated, in the op's text. */
  memcpy(o->text, a->outcome, lo + 1);
  memcpy(o->text + lo + 1, answer, la + 1);
  memcpy(o->text + lo + la + 2, message, lm + 1);
  push_op(sp, o);
}

static int sq_pause(spool *base, const char *instance, int paused, char *err, size_t errlen) {
  sq_spool *sp = sq(base);
  pthread_mutex_lock(&sp->lanes_mu);
  sq_lane *l = lane_get_locked(sp, instance);
  pthread_mutex_unlock(&sp->lanes_mu);
  size_t n = strlen(instance);
  op *o = l ? calloc(1, sizeof *o + n + 1) : NULL;
  if (o == NULL) {
    snprintf(err, errlen, "out of memory");
    return SPOOL_EFAIL;
  }
  state_wait w = {0, 0};
  o->kind = OP_PAUSE;
  o->attempt = paused ? 1 : 0;
  o->lane = l;
  o->wait = &w;
  memcpy(o->text, instance, n + 1);
  if (push_op(sp, o) != 0 || w.rc != 0) {
    pthread_mutex_lock(&sp->mu);
    snprintf(err, errlen, "the spool could not store it%s%s", sp->fail_reason[0] ? ": " : "",
             sp->fail_reason);
    pthread_mutex_unlock(&sp->mu);
    return SPOOL_EFAIL;
  }
  return 0;
}

/* A retry due much later: the key leaves the window for the disk (its head
 * parked = 1, what waits behind it parked = 2) and the window stays free
 * for keys that can run. The writer brings it back when the head is due. */
static void park(sq_spool *sp, sq_lane *l, delivery *d, op *o) {
  pthread_mutex_lock(&l->lb.mu);
  l->running--;
  delivery *rest = keysched_evict(l->ks, d);
  l->mem_bytes -= d->ev->body_len;
  for (delivery *x = rest; x; x = x->next) l->mem_bytes -= x->ev->body_len;
  l->parking++;
  int poke = lane_want_refill(l);
  pthread_mutex_unlock(&l->lb.mu);
  o->park = 1;
  op *tail = o;
  while (rest) {
    delivery *x = rest;
    rest = x->next;
    tail->next = op_new(OP_PARK, x, NULL);
    if (tail->next) {
      tail = tail->next;
    } else {
      log_write(HLOG_ERROR, &(log_ctx){.instance = l->lb.name, .event_id = x->ev->id},
                "out of memory parking a delivery; it runs after the next start");
    }
    delivery_free(x);
  }
  push_op(sp, o);
  if (poke) poke_writer(sp);
  delivery_free(d);
}

static void sq_settle(spool *base, delivery *d, spool_outcome how, const char *error) {
  sq_spool *sp = sq(base);
  sq_lane *l = d->lane;
  static const op_kind kinds[] = {[SPOOL_DONE] = OP_DONE,
                                  [SPOOL_RETRY] = OP_RETRY,
                                  [SPOOL_DEAD] = OP_DEAD,
                                  [SPOOL_RELEASE] = OP_RELEASE};
  op *o = op_new(kinds[how], d, error);
  int finished = how == SPOOL_DONE || how == SPOOL_DEAD;
  if (how == SPOOL_RETRY && o && d->due_ms - clock_now_ms() >= PARK_AFTER_MS) {
    park(sp, l, d, o);
    return;
  }
  pthread_mutex_lock(&l->lb.mu);
  l->running--;
  if (finished) {
    keysched_done(l->ks, d);
    l->mem_bytes -= d->ev->body_len;
    atomic_fetch_sub(&l->pending, 1);
    atomic_fetch_sub(&sp->pending_total, 1);
    if (how == SPOOL_DEAD) atomic_fetch_add(&sp->dead, 1);
  } else {
    keysched_again(l->ks, d);
  }
  int poke = lane_want_refill(l);
  pthread_mutex_unlock(&l->lb.mu);
  if (o == NULL) {
    log_write(HLOG_ERROR, &(log_ctx){.instance = l->lb.name, .event_id = d->ev->id},
              "out of memory recording a delivery outcome; it may be delivered again");
  } else {
    push_op(sp, o);
  }
  if (poke) poke_writer(sp);
  if (finished) delivery_free(d);
}

static void sq_stats(spool *base, spool_stats *out) {
  sq_spool *sp = sq(base);
  memset(out, 0, sizeof *out);
  out->pending = atomic_load(&sp->pending_total);
  out->dead = atomic_load(&sp->dead);
  out->db_bytes = atomic_load(&sp->db_bytes);
  out->commits = atomic_load(&sp->commits);
  out->commit_errors = atomic_load(&sp->commit_errors);
  out->checkpoints = atomic_load(&sp->checkpoints);
  out->wal_pages = atomic_load(&sp->wal_pages);
  out->oldest_pending_ms = atomic_load(&sp->oldest_pending_ms);
  out->crashes = atomic_load(&sp->crashes);
  out->writer_beat_ms = atomic_load(&sp->beat_ms);
  pthread_mutex_lock(&sp->lanes_mu);
  for (sq_lane *l = sp->lanes; l; l = l->next) {
    pthread_mutex_lock(&l->lb.mu);
    out->in_memory += keysched_count(l->ks);
    pthread_mutex_unlock(&l->lb.mu);
  }
  pthread_mutex_unlock(&sp->lanes_mu);
}

/* --- stopping ---------------------------------------------------------------------- */

static void sq_stop(spool *base) {
  sq_spool *sp = sq(base);
  if (sp->writer_started) {
    pthread_mutex_lock(&sp->mu);
    sp->stopping = 1;
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
    pthread_join(sp->writer, NULL);
    sp->writer_started = 0;
  }
  stop_checkpoints(sp);
  pthread_mutex_lock(&sp->mu);
  sp->closed = 1;
  /* Pauses queued after the writer's last turn: nothing writes them now. */
  for (op *o = sp->ops_head; o; o = o->next) {
    if (o->kind == OP_PAUSE && o->wait) {
      o->wait->rc = SPOOL_EFAIL;
      o->wait->done = 1;
      o->wait = NULL;
    }
  }
  pthread_cond_broadcast(&sp->state_cv);
  pthread_mutex_unlock(&sp->mu);
  disconnect_db(sp);
}

static void on_async_closed(uv_handle_t *h) {
  free(h->data);
}

static void sq_free(spool *base) {
  sq_spool *sp = sq(base);
  sq_stop(base);
  for (store_req *r = sp->out_head; r;) {
    store_req *next = r->next;
    event_unref(r->ev);
    free(r);
    r = next;
  }
  for (store_req *r = sp->in_head; r;) {
    store_req *next = r->next;
    event_unref(r->ev);
    free(r);
    r = next;
  }
  for (op *o = sp->ops_head; o;) {
    op *next = o->next;
    free(o);
    o = next;
  }
  for (sq_lane *l = sp->lanes; l;) {
    sq_lane *next = l->next;
    keysched_free(l->ks);
    lane_base_destroy(&l->lb);
    free(l);
    l = next;
  }
  for (size_t i = 0; i < RECENT_IDS; i++) free(sp->recent[i].key);
  runslots_close(sp->running);
  free(sp->path);
  free(sp->data_dir);
  pthread_mutex_destroy(&sp->mu);
  pthread_cond_destroy(&sp->cv);
  pthread_cond_destroy(&sp->state_cv);
  pthread_mutex_destroy(&sp->lanes_mu);
  pthread_mutex_destroy(&sp->ckpt_mu);
  pthread_cond_destroy(&sp->ckpt_cv);
  if (sp->async.loop != NULL) {
    uv_close((uv_handle_t *)&sp->async, on_async_closed);
  } else {
    free(sp);
  }
}

static const spool_ops sqlite_ops = {
    .name = "sqlite",
    .recover = sq_recover,
    .stop = sq_stop,
    .free = sq_free,
    .lane = sq_lane_get,
    .lane_config = lane_base_config,
    .lane_attach = sq_lane_attach,
    .lane_detach = lane_base_detach,
    .lane_stats = sq_lane_stats,
    .admit = sq_admit,
    .seen = sq_seen,
    .store = sq_store,
    .claim = sq_claim,
    .started = sq_started,
    .settle = sq_settle,
    .stats = sq_stats,
    .record_attempt = sq_record_attempt,
    .pause = sq_pause,
};

/* --- hookd spool check -------------------------------------------------------------- */

typedef struct check_progress {
  FILE *tty;
  const char *what;
  int64_t t0, last;
} check_progress;

static int on_check_progress(void *arg) {
  check_progress *p = arg;
  int64_t now = clock_mono_ms();
  if (p->tty && now - p->last >= 250) {
    p->last = now;
    fprintf(p->tty, "\r  checking %-12s %5.1f s", p->what, (double)(now - p->t0) / 1000.0);
    fflush(p->tty);
  }
  return 0;
}

/* integrity_check of one table and its indexes; prints the problems. */
static int check_table(sqlite3 *db, const char *table, check_progress *p, FILE *out) {
  char sql[128];
  snprintf(sql, sizeof sql, "PRAGMA integrity_check(%s)", table);
  p->what = table;
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  int damaged = 0;
  while (next_row(st, &rc)) {
    const char *t = (const char *)sqlite3_column_text(st, 0);
    if (t && strcmp(t, "ok") != 0) {
      if (p->tty) fputc('\n', p->tty);
      fprintf(out, "  %s: %s\n", table, t);
      damaged = 1;
    }
  }
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  if (rc != SQLITE_OK) {
    char e[300];
    db_error(db, e, sizeof e);
    if (p->tty) fputc('\n', p->tty);
    fprintf(out, "  %s: %s\n", table, e);
    damaged = is_damage(rc) ? 1 : -1;
  }
  sqlite3_finalize(st);
  return damaged;
}

int spool_sqlite_check(const char *data_dir, FILE *out, FILE *progress) {
  char path[4200];
  snprintf(path, sizeof path, "%s/spool.db", data_dir);
  struct stat stb;
  if (stat(path, &stb) != 0) {
    fprintf(out, "hookd: no spool at %s: %s\n", path, strerror(errno));
    return SPOOL_EFAIL;
  }
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
  if (rc == SQLITE_OK) sqlite3_busy_timeout(db, 5000);
  const char *tables[8] = {NULL};
  size_t nt = 0;
  char *names[8] = {NULL};
  sqlite3_stmt *st = NULL;
  if (rc == SQLITE_OK) {
    rc = sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                            -1, &st, NULL);
  }
  while (nt < 8 && next_row(st, &rc)) {
    names[nt] = strdup((const char *)sqlite3_column_text(st, 0));
    tables[nt] = names[nt];
    if (tables[nt]) nt++;
  }
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) rc = SQLITE_OK;
  sqlite3_finalize(st);
  int result = 0;
  if (rc != SQLITE_OK) {
    char e[300];
    db_error(db, e, sizeof e);
    fprintf(out, "%s: %s\n", path, e);
    result = is_damage(rc) ? SPOOL_EDAMAGED : SPOOL_EFAIL;
  } else {
    fprintf(out, "checking %s (%.1f MiB)\n", path, (double)stb.st_size / 1048576.0);
    check_progress p = {.tty = progress, .t0 = clock_mono_ms()};
    sqlite3_progress_handler(db, 100000, on_check_progress, &p);
    int damaged = 0;
    for (size_t i = 0; i < nt; i++) {
      int r = check_table(db, tables[i], &p, out);
      if (r > 0) damaged = 1;
      if (r < 0 && !damaged) damaged = -1;
    }
    if (progress) fprintf(progress, "\r%40s\r", "");
    if (damaged > 0) {
      fprintf(out,
              "%s is damaged. Stop hookd, then restore the file from a backup, or move it (with "
              "its -wal and -shm files) aside to start with an empty spool; `hookd dlq` and an "
              "sqlite3 shell's .recover can read what is left of it.\n",
              path);
      result = SPOOL_EDAMAGED;
    } else if (damaged < 0) {
      result = SPOOL_EFAIL;
    } else {
      fprintf(out, "%s: ok (%zu tables, %.1f s)\n", path, nt,
              (double)(clock_mono_ms() - p.t0) / 1000.0);
    }
  }
  for (size_t i = 0; i < nt; i++) free(names[i]);
  sqlite3_close(db);
  return result;
}
