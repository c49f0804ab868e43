/* SQLite spool: durable events and deliveries, one writer thread with group commit, recovery, replay and pruning. */
#include "spool.h"

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

#include "log.h"

/*
 * Tables (schema version 1):
 *   events(seq, source, event_id, type, order_key, content_type, received_ms,
 *          body, done_ms)       UNIQUE(source, event_id) is the durable dedup
 *   deliveries(id, seq, instance, state, attempt, next_ms, last_error,
 *              updated_ms)     one per (event, plugin instance)
 * A delivery's state is pending, done, dead, or replay (a dead letter that
 * `hookd dlq replay` sent back; the running daemon picks it up). An event is
 * done when all its deliveries are; done events are pruned after
 * spool.retention. Events with dead letters stay until the dead letters are
 * replayed or purged.
 */
#define SCHEMA_VERSION 1
#define ST_PENDING 0
#define ST_DONE 1
#define ST_DEAD 2
#define ST_REPLAY 3

/* Ids remembered on the loop thread to answer a resend without a database
 * round trip; the UNIQUE constraint is the real guard. */
#define RECENT_IDS 4096
#define RECENT_BUCKETS 8192
/* Housekeeping (replay pick-up, pruning, disk check) runs this often. */
#define HOUSEKEEPING_MS 500
#define PRUNE_BATCH 500
/* Queued outcomes that wake the writer by themselves. */
#define OPS_WAKE 256
/* WAL pages that start a checkpoint on the checkpoint thread, and the WAL
 * length past which the writer checkpoints after every commit itself (the
 * checkpoint thread could not keep up). */
#define CHECKPOINT_PAGES 1000
/* The checkpoint thread makes passes until one copies no more than this
 * (what commits added during the previous pass), and leaves the rest to
 * the writer, whose commits wait for it. */
#define CHECKPOINT_TAIL_PAGES 64
#define CHECKPOINT_MAX_PASSES 8
#define CHECKPOINT_FORCE_PAGES 16000

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events("
    " seq INTEGER PRIMARY KEY, source TEXT NOT NULL, event_id TEXT NOT NULL,"
    " type TEXT NOT NULL, order_key TEXT, content_type TEXT NOT NULL,"
    " received_ms INTEGER NOT NULL, body BLOB NOT NULL, done_ms INTEGER,"
    " UNIQUE(source, event_id));"
    "CREATE TABLE IF NOT EXISTS deliveries("
    " id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, instance TEXT NOT NULL,"
    " state INTEGER NOT NULL, attempt INTEGER NOT NULL, next_ms INTEGER NOT NULL,"
    " last_error TEXT, updated_ms INTEGER NOT NULL);"
    /* Unfinished deliveries only: a done one (nearly all of them) leaves the
     * index instead of moving to another part of it, one page write less per
     * commit. Queries by state say `state <> 1` so that SQLite may use it.
     * (Spools made before this had deliveries_state over every row.) */
    "DROP INDEX IF EXISTS deliveries_state;"
    "CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries(state, seq) WHERE state <> 1;"
    "CREATE INDEX IF NOT EXISTS deliveries_seq ON deliveries(seq);"
    "CREATE INDEX IF NOT EXISTS events_done ON events(done_ms) WHERE done_ms IS NOT NULL;";

/* One spool_store() call on its way through the writer. */
typedef struct store_req {
  event *ev;
  size_t n;
  const char *const *names; /* instance names by index, owned by the caller until stored() */
  spool_stored_fn stored;
  void *data;
  int status;
  struct store_req *next;
  size_t instances[];
  /* followed by n int64_t delivery ids (see req_ids) */
} store_req;

typedef enum { OP_DONE, OP_RETRY, OP_DEAD } op_kind;

/* What a finished delivery means for its event's done mark. */
typedef enum {
  EV_ASK,  /* the database says whether every delivery of the event is done */
  EV_DONE, /* the last one of a fresh event, and none went dead */
  EV_OPEN  /* others of the same fresh event are still running */
} ev_mark;

/* One delivery outcome waiting to be written. */
typedef struct op {
  op_kind kind;
  ev_mark mark;
  int64_t delivery_id;
  int64_t seq;
  uint32_t attempt;
  int64_t next_ms;
  struct op *next;
  char error[]; /* may be empty */
} op;

typedef struct recent {
  uint64_t hash;
  char *key;
  int32_t next; /* next slot + 1 in the same bucket, 0 at the end */
} recent;

struct spool {
  /* Settings copied at open: a reload does not change them (they need a
   * restart), and the writer reads them without locks. */
  char *data_dir;
  uint64_t max_pending, min_free_bytes;
  int64_t retention_ms;
  uv_loop_t *loop;
  spool_sink_fn sink;
  void *sink_data;
  char *path;
  sqlite3 *db; /* the writer's connection; the loop thread uses it only before the writer starts */
  sqlite3_stmt *ins_event, *ins_delivery, *upd_delivery, *event_done, *event_done_now, *begin,
      *commit;

  pthread_t writer;
  int writer_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  store_req *in_head, *in_tail;     /* stores queued by the loop */
  op *ops_head, *ops_tail;          /* outcomes queued by workers */
  size_t n_ops;
  store_req *out_head, *out_tail;   /* stores committed (or failed), back to the loop */
  delivery *replayed;               /* replayed deliveries, back to the loop */
  int stopping;
  int closed; /* spool_stop ran: outcomes are dropped */
  uv_async_t async;

  recent recent[RECENT_IDS];
  int32_t buckets[RECENT_BUCKETS]; /* slot + 1 of the newest entry, 0 when empty */
  size_t recent_pos;

  atomic_uint_fast64_t pending, dead, db_bytes, commits, commit_errors;
  atomic_int_fast64_t oldest_pending_ms;
  atomic_int disk_low;
  atomic_int failing; /* the last commit failed */

  /* Checkpoints copy the WAL into the database file (and fsync it). Run
   * inside a commit, as SQLite's automatic checkpoint does, they held every
   * waiting request for that long; here they run on a thread and a
   * connection of their own, and commits go on meanwhile. */
  int sync;
  sqlite3 *ckpt_db;
  pthread_t ckpt;
  int ckpt_started;
  pthread_mutex_t ckpt_mu;
  pthread_cond_t ckpt_cv;
  int ckpt_due, ckpt_stop;
  atomic_int wal_pages;
  int wal_asked; /* WAL length when a checkpoint was last asked for (writer only) */
  atomic_int ckpt_tail; /* the checkpoint thread made a pass: the writer copies the rest */
  atomic_uint_fast64_t checkpoints;
};

static int64_t *req_ids(store_req *r) {
  return (int64_t *)(r->instances + r->n);
}

/* --- small helpers ---------------------------------------------------------- */

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    snprintf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
  }
  return 0;
}

/* Busy handler of both connections: they wait for each other only for a
 * commit or the tail of a checkpoint, a millisecond or so, so poll every
 * 100 us (SQLite's own handler sleeps 1, 2, 5, 10... ms, far past the
 * moment the lock is free). Gives up after 5 s. */
static int short_waits(void *arg, int n) {
  (void)arg;
  if (n >= 50000) return 0;
  struct timespec ts = {0, 100 * 1000};
  nanosleep(&ts, NULL);
  return 1;
}

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

static void remember(spool *sp, const char *source, const char *id) {
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

int spool_seen(spool *sp, const char *source, const char *id) {
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

/* --- opening ------------------------------------------------------------------ */

static int check_schema(spool *sp, char *err, size_t errlen) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(sp->db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &st,
                         NULL) != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", sp->path, sqlite3_errmsg(sp->db));
    return -1;
  }
  int rc = 0;
  if (sqlite3_step(st) == SQLITE_ROW) {
    int v = sqlite3_column_int(st, 0);
    if (v != SCHEMA_VERSION) {
      snprintf(err, errlen,
               "%s has spool schema version %d, this hookd reads version %d: refusing to "
               "touch it (use the hookd that wrote it, or move the file away)",
               sp->path, v, SCHEMA_VERSION);
      rc = -1;
    }
  } else {
    rc = exec_sql(sp->db, "INSERT INTO meta(key, value) VALUES('schema_version', '1')", err,
                  errlen);
  }
  sqlite3_finalize(st);
  return rc;
}

static int prepare(spool *sp, char *err, size_t errlen) {
  struct {
    sqlite3_stmt **st;
    const char *sql;
  } stmts[] = {
      {&sp->ins_event,
       "INSERT OR IGNORE INTO events(source, event_id, type, order_key, content_type, "
       "received_ms, body, done_ms) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"},
      {&sp->ins_delivery,
       "INSERT INTO deliveries(seq, instance, state, attempt, next_ms, updated_ms) "
       "VALUES(?1, ?2, 0, 0, ?3, ?3)"},
      {&sp->upd_delivery,
       "UPDATE deliveries SET state = ?2, attempt = ?3, next_ms = ?4, last_error = ?5, "
       "updated_ms = ?6 WHERE id = ?1"},
      {&sp->event_done,
       "UPDATE events SET done_ms = ?2 WHERE seq = ?1 AND NOT EXISTS "
       "(SELECT 1 FROM deliveries WHERE seq = ?1 AND state <> 1)"},
      /* The worker knew it finished the event's last delivery. */
      {&sp->event_done_now, "UPDATE events SET done_ms = ?2 WHERE seq = ?1"},
      {&sp->begin, "BEGIN IMMEDIATE"},
      {&sp->commit, "COMMIT"},
  };
  for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
    if (sqlite3_prepare_v3(sp->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT, stmts[i].st,
                           NULL) != SQLITE_OK) {
      snprintf(err, errlen, "%s: %s", sp->path, sqlite3_errmsg(sp->db));
      return -1;
    }
  }
  return 0;
}

static const char *const sync_pragma[] = {"PRAGMA synchronous = FULL",
                                          "PRAGMA synchronous = NORMAL",
                                          "PRAGMA synchronous = OFF"};

static void on_async(uv_async_t *h);
static void *writer_main(void *arg);

static void count_stats(spool *sp);

spool *spool_open(const config *cfg, uv_loop_t *loop, spool_sink_fn sink, void *sink_data,
                  char *err, size_t errlen) {
  if (mkdir(cfg->data_dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create data_dir %s: %s", cfg->data_dir, strerror(errno));
    return NULL;
  }
  spool *sp = calloc(1, sizeof *sp);
  if (sp == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  sp->data_dir = strdup(cfg->data_dir);
  sp->max_pending = cfg->spool_max_pending;
  sp->min_free_bytes = cfg->spool_min_free_bytes;
  sp->retention_ms = cfg->spool_retention_ms;
  sp->loop = loop;
  sp->sink = sink;
  sp->sink_data = sink_data;
  if (asprintf(&sp->path, "%s/spool.db", cfg->data_dir) < 0) {
    free(sp);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&sp->mu, NULL);
  pthread_cond_init(&sp->cv, NULL);
  pthread_mutex_init(&sp->ckpt_mu, NULL);
  pthread_cond_init(&sp->ckpt_cv, NULL);
  sp->sync = cfg->sync;
  char why[512] = "";
  if (sqlite3_open_v2(sp->path, &sp->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK) {
    snprintf(why, sizeof why, "%s", sp->db ? sqlite3_errmsg(sp->db) : "out of memory");
  } else {
    sqlite3_busy_handler(sp->db, short_waits, NULL);
    sqlite3_stmt *st = NULL;
    /* journal_mode answers with the mode it got: a read-only directory
     * cannot give WAL, and that must not pass silently. */
    if (sqlite3_prepare_v2(sp->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW ||
        strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
      snprintf(why, sizeof why, "cannot switch to WAL mode: %s", sqlite3_errmsg(sp->db));
    }
    sqlite3_finalize(st);
    if (!why[0]) exec_sql(sp->db, sync_pragma[cfg->sync], why, sizeof why);
    if (!why[0]) exec_sql(sp->db, schema_sql, why, sizeof why);
    if (!why[0] && check_schema(sp, why, sizeof why) != 0) {
      snprintf(err, errlen, "%s", why);
      spool_close(sp);
      return NULL;
    }
    if (!why[0]) prepare(sp, why, sizeof why);
  }
  if (why[0]) {
    snprintf(err, errlen, "cannot open the spool %s: %s", sp->path, why);
    spool_close(sp);
    return NULL;
  }
  count_stats(sp);
  uv_async_init(loop, &sp->async, on_async);
  sp->async.data = sp;
  /* The async handle must not keep the loop alive at shutdown. */
  uv_unref((uv_handle_t *)&sp->async);
  return sp;
}

/* --- checkpoints ------------------------------------------------------------------ */

/* SQLite calls this on the writer's connection after each commit, with the
 * WAL's length in pages. It replaces the automatic checkpoint. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages) {
  spool *sp = arg;
  atomic_store(&sp->wal_pages, pages);
  /* The WAL only starts over when a checkpoint has copied all of it, and
   * commits go on while the checkpoint thread copies. So after its pass the
   * writer copies the few pages added meanwhile itself, here, where no
   * commit can add more; the next commit then starts the WAL over. The same
   * when the WAL got long anyway. PASSIVE never waits: a reader that holds
   * an old snapshot (`hookd dlq`, an sqlite3 shell) delays the restart, not
   * the writer. */
  if (atomic_exchange(&sp->ckpt_tail, 0) || pages >= CHECKPOINT_FORCE_PAGES) {
    int log = 0, copied = 0;
    if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &log, &copied) ==
        SQLITE_OK) {
      atomic_fetch_add(&sp->checkpoints, 1);
    }
    return SQLITE_OK;
  }
  /* Once per CHECKPOINT_PAGES of new WAL, not after every commit: each pass
   * syncs the database file, competing with the commits' own syncs. */
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
  spool *sp = arg;
  pthread_mutex_lock(&sp->ckpt_mu);
  for (;;) {
    while (!sp->ckpt_due && !sp->ckpt_stop) pthread_cond_wait(&sp->ckpt_cv, &sp->ckpt_mu);
    if (sp->ckpt_stop) break;
    sp->ckpt_due = 0;
    pthread_mutex_unlock(&sp->ckpt_mu);
    /* PASSIVE copies without waiting for (or blocking) the writer. Each
     * pass copies what commits added during the one before, so the passes
     * get shorter; the writer copies the last few pages after its next
     * commit. */
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
    } else if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) {
      log_write(LOG_WARN, NULL, "spool: checkpoint failed: %s", sqlite3_errmsg(sp->ckpt_db));
    }
    pthread_mutex_lock(&sp->ckpt_mu);
  }
  pthread_mutex_unlock(&sp->ckpt_mu);
  return NULL;
}

/* Opens the checkpoint thread's connection and starts it. On failure the
 * writer keeps SQLite's automatic checkpoint: slower answers, nothing lost. */
static void start_checkpoints(spool *sp) {
  char why[256] = "";
  if (sqlite3_open_v2(sp->path, &sp->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
      SQLITE_OK) {
    snprintf(why, sizeof why, "%s", sp->ckpt_db ? sqlite3_errmsg(sp->ckpt_db) : "out of memory");
  } else {
    sqlite3_busy_handler(sp->ckpt_db, short_waits, NULL);
    exec_sql(sp->ckpt_db, sync_pragma[sp->sync], why, sizeof why);
  }
  if (!why[0] && pthread_create(&sp->ckpt, NULL, checkpoint_main, sp) != 0) {
    snprintf(why, sizeof why, "cannot start a thread");
  }
  if (why[0]) {
    log_write(LOG_WARN, NULL, "spool: checkpoints stay on the writer thread: %s", why);
    sqlite3_close(sp->ckpt_db);
    sp->ckpt_db = NULL;
    return;
  }
  sp->ckpt_started = 1;
  sqlite3_wal_hook(sp->db, on_wal_commit, sp);
}

static void stop_checkpoints(spool *sp) {
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

/* --- recovery and replay --------------------------------------------------------- */

/* Loads the deliveries in `state` (pending or replay) with their events, in
 * accept order, as a list. Events shared by several deliveries are loaded
 * once. Writer thread, or the loop thread before the writer starts. */
static delivery *load_deliveries(spool *sp, int state, int64_t *count) {
  sqlite3_stmt *st;
  const char *sql =
      "SELECT d.id, d.instance, d.attempt, d.next_ms, e.seq, e.source, e.event_id, e.type, "
      "e.order_key, e.content_type, e.received_ms, e.body FROM deliveries d JOIN events e "
      "ON e.seq = d.seq WHERE d.state = ?1 AND d.state <> 1 ORDER BY e.seq, d.id";
  *count = 0;
  if (sqlite3_prepare_v2(sp->db, sql, -1, &st, NULL) != SQLITE_OK) {
    log_write(LOG_ERROR, NULL, "spool: %s", sqlite3_errmsg(sp->db));
    *count = -1;
    return NULL;
  }
  sqlite3_bind_int(st, 1, state);
  delivery *head = NULL, **tail = &head;
  event *ev = NULL;
  int64_t ev_seq = -1;
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *inst = (const char *)sqlite3_column_text(st, 1);
    int64_t seq = sqlite3_column_int64(st, 4);
    if (seq != ev_seq) {
      if (ev) event_unref(ev);
      const char *key = (const char *)sqlite3_column_text(st, 8);
      ev = event_new((const char *)sqlite3_column_text(st, 5),
                     (const char *)sqlite3_column_text(st, 6),
                     (const char *)sqlite3_column_text(st, 7), key,
                     (const char *)sqlite3_column_text(st, 9), sqlite3_column_blob(st, 11),
                     (size_t)sqlite3_column_bytes(st, 11), NULL, sqlite3_column_int64(st, 10));
      if (ev == NULL) break;
      ev->seq = (uint64_t)seq;
      ev_seq = seq;
    }
    delivery *d = delivery_new(ev, UINT32_MAX);
    if (d == NULL || (d->instance_name = strdup(inst)) == NULL) {
      delivery_free(d);
      break;
    }
    d->spool_id = (uint64_t)sqlite3_column_int64(st, 0);
    d->attempt = (uint32_t)sqlite3_column_int(st, 2);
    d->due_ms = sqlite3_column_int64(st, 3);
    *tail = d;
    tail = &d->next;
    (*count)++;
  }
  if (ev) event_unref(ev);
  sqlite3_finalize(st);
  return head;
}

/* Gives recovered or replayed deliveries to the sink, which maps their
 * instance names to the running config. Returns how many it took; the rest
 * stay pending in the database (their instance is not configured now). */
static uint64_t hand_over(spool *sp, delivery *list) {
  uint64_t taken = 0;
  while (list) {
    delivery *next = list->next;
    list->next = NULL;
    char *name = list->instance_name;
    list->instance_name = NULL;
    if (sp->sink(sp->sink_data, list, name) == 0) {
      taken++;
    } else {
      log_write(LOG_WARN, &(log_ctx){.instance = name, .event_id = list->ev->id},
                "a delivery waits for plugin instance '%s', which the config does not have; it "
                "stays in the spool",
                name);
      delivery_free(list);
    }
    free(name);
    list = next;
  }
  return taken;
}

int64_t spool_recover(spool *sp) {
  char err[256];
  /* Replays asked for while hookd was stopped are pending like the rest. */
  if (exec_sql(sp->db, "UPDATE deliveries SET state = 0 WHERE state = 3 AND state <> 1", err,
               sizeof err) != 0) {
    log_write(LOG_ERROR, NULL, "spool: %s", err);
  }
  int64_t n;
  delivery *list = load_deliveries(sp, ST_PENDING, &n);
  if (n < 0) return -1;
  n = (int64_t)hand_over(sp, list);
  atomic_store(&sp->pending, (uint64_t)n);
  if (n > 0) log_write(LOG_INFO, NULL, "spool: resuming %lld unfinished deliveries", (long long)n);
  start_checkpoints(sp);
  if (pthread_create(&sp->writer, NULL, writer_main, sp) != 0) {
    log_write(LOG_ERROR, NULL, "spool: cannot start the writer thread");
    return -1;
  }
  sp->writer_started = 1;
  return n;
}

/* --- the writer ------------------------------------------------------------------ */

static int write_store(spool *sp, store_req *r, int64_t now) {
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
  if (r->n == 0) {
    sqlite3_bind_int64(st, 8, now); /* unrouted: done at once, kept for dedup */
  } else {
    sqlite3_bind_null(st, 8);
  }
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return -1;
  if (sqlite3_changes(sp->db) == 0) {
    r->status = SPOOL_DUPLICATE;
    return 0;
  }
  int64_t seq = sqlite3_last_insert_rowid(sp->db);
  ev->seq = (uint64_t)seq;
  int64_t *ids = req_ids(r);
  for (size_t i = 0; i < r->n; i++) {
    st = sp->ins_delivery;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_text(st, 2, r->names[r->instances[i]], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return -1;
    ids[i] = sqlite3_last_insert_rowid(sp->db);
  }
  r->status = SPOOL_STORED;
  return 0;
}

static int write_op(spool *sp, const op *o, int64_t now) {
  static const int states[] = {ST_DONE, ST_PENDING, ST_DEAD};
  sqlite3_stmt *st = sp->upd_delivery;
  sqlite3_bind_int64(st, 1, o->delivery_id);
  sqlite3_bind_int(st, 2, states[o->kind]);
  sqlite3_bind_int(st, 3, (int)o->attempt);
  sqlite3_bind_int64(st, 4, o->next_ms);
  if (o->error[0]) {
    sqlite3_bind_text(st, 5, o->error, -1, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, 5);
  }
  sqlite3_bind_int64(st, 6, now);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return -1;
  if (o->kind == OP_DONE && o->mark != EV_OPEN) {
    st = o->mark == EV_DONE ? sp->event_done_now : sp->event_done;
    sqlite3_bind_int64(st, 1, o->seq);
    sqlite3_bind_int64(st, 2, now);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return -1;
  }
  return 0;
}

/* Writes one batch in one transaction. Returns 0, or -1 after rolling back. */
static int write_batch(spool *sp, store_req *stores, op *ops) {
  int64_t now = now_ms();
  int rc = sqlite3_step(sp->begin);
  sqlite3_reset(sp->begin);
  if (rc != SQLITE_DONE) goto fail;
  for (store_req *r = stores; r; r = r->next) {
    if (write_store(sp, r, now) != 0) goto fail;
  }
  for (op *o = ops; o; o = o->next) {
    if (write_op(sp, o, now) != 0) goto fail;
  }
  rc = sqlite3_step(sp->commit);
  sqlite3_reset(sp->commit);
  if (rc != SQLITE_DONE) goto fail;
  atomic_fetch_add(&sp->commits, 1);
  atomic_store(&sp->failing, 0);
  return 0;
fail:
  log_write(LOG_ERROR, NULL, "spool: commit failed: %s", sqlite3_errmsg(sp->db));
  sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
  atomic_fetch_add(&sp->commit_errors, 1);
  atomic_store(&sp->failing, 1);
  return -1;
}

static int64_t query_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  int64_t v = 0;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return 0;
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static void count_stats(spool *sp) {
  atomic_store(&sp->dead, (uint64_t)query_int(sp->db, "SELECT count(*) FROM deliveries WHERE "
                                                      "state = 2 AND state <> 1"));
  atomic_store(&sp->oldest_pending_ms,
               query_int(sp->db,
                         /* accept order is seq order: the index finds the oldest at once */
                         "SELECT coalesce((SELECT received_ms FROM events WHERE seq = "
                         "(SELECT min(seq) FROM deliveries WHERE state = 0 AND state <> 1)), 0)"));
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
      log_write(low ? LOG_WARN : LOG_INFO, NULL,
                low ? "spool: free space in %s is below spool.min_free_bytes: new events get 503"
                    : "spool: free space in %s is back above spool.min_free_bytes",
                sp->data_dir);
    }
    atomic_store(&sp->disk_low, low);
  }
}

/* Deletes finished events past retention, a small batch at a time so the
 * writer is never held up for long. */
static void prune(spool *sp) {
  int64_t before = now_ms() - sp->retention_ms;
  char sql[512];
  /* Most of the time there is nothing to prune: ask the index first rather
   * than commit (and fsync) an empty transaction twice a second. */
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM (SELECT 1 FROM events WHERE done_ms IS NOT NULL AND "
           "done_ms < %lld LIMIT 1)",
           (long long)before);
  if (query_int(sp->db, sql) == 0) return;
  snprintf(sql, sizeof sql,
           "BEGIN IMMEDIATE;"
           "CREATE TEMP TABLE IF NOT EXISTS prune_seq(seq INTEGER PRIMARY KEY);"
           "DELETE FROM prune_seq;"
           "INSERT INTO prune_seq SELECT seq FROM events WHERE done_ms IS NOT NULL AND "
           "done_ms < %lld LIMIT %d;"
           "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM prune_seq);"
           "DELETE FROM events WHERE seq IN (SELECT seq FROM prune_seq);"
           "COMMIT;",
           (long long)before, PRUNE_BATCH);
  char err[256];
  if (exec_sql(sp->db, sql, err, sizeof err) != 0) {
    sqlite3_exec(sp->db, "ROLLBACK", NULL, NULL, NULL);
    log_write(LOG_WARN, NULL, "spool: pruning failed: %s", err);
  }
}

/* Picks up dead letters that `hookd dlq replay` sent back. */
static void pick_up_replays(spool *sp) {
  if (query_int(sp->db, "SELECT count(*) FROM deliveries WHERE state = 3 AND state <> 1") == 0) {
    return;
  }
  int64_t n;
  delivery *list = load_deliveries(sp, ST_REPLAY, &n);
  if (n <= 0) return;
  char err[256];
  if (exec_sql(sp->db, "UPDATE deliveries SET state = 0 WHERE state = 3 AND state <> 1", err,
               sizeof err) != 0) {
    log_write(LOG_ERROR, NULL, "spool: replay: %s", err);
    while (list) {
      delivery *next = list->next;
      delivery_free(list);
      list = next;
    }
    return;
  }
  log_write(LOG_INFO, NULL, "spool: %lld replayed dead letter(s) queued again", (long long)n);
  atomic_fetch_sub(&sp->dead, (uint64_t)n);
  pthread_mutex_lock(&sp->mu);
  delivery **tail = &sp->replayed;
  while (*tail) tail = &(*tail)->next;
  *tail = list;
  pthread_mutex_unlock(&sp->mu);
  uv_async_send(&sp->async);
}

static void *writer_main(void *arg) {
  spool *sp = arg;
  int64_t next_housekeeping = 0;
  pthread_mutex_lock(&sp->mu);
  for (;;) {
    if (sp->in_head == NULL && sp->ops_head == NULL) {
      if (sp->stopping) break;
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += HOUSEKEEPING_MS * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&sp->cv, &sp->mu, &ts);
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
      int rc = write_batch(sp, stores, ops);
      if (rc != 0) {
        for (store_req *r = stores; r; r = r->next) r->status = SPOOL_EIO;
      }
      pthread_mutex_lock(&sp->mu);
      if (stores) {
        store_req *last = stores;
        while (last->next) last = last->next;
        if (sp->out_tail) {
          sp->out_tail->next = stores;
        } else {
          sp->out_head = stores;
        }
        sp->out_tail = last;
      }
      if (rc != 0 && ops && !stopping) {
        /* Outcomes are kept and written with a later batch: losing one
         * would only mean a redelivery, but keeping it is cheap. */
        op *last = ops;
        while (last->next) last = last->next;
        last->next = sp->ops_head;
        sp->ops_head = ops;
        if (sp->ops_tail == NULL) sp->ops_tail = last;
        ops = NULL;
      }
      pthread_mutex_unlock(&sp->mu);
      if (stores) uv_async_send(&sp->async);
      while (ops) {
        op *next = ops->next;
        free(ops);
        ops = next;
      }
      if (rc != 0 && !stopping) {
        struct timespec pause = {0, 100 * 1000000L};
        nanosleep(&pause, NULL); /* a failing disk is not retried in a hot loop */
      }
    }
    int64_t now = now_ms();
    if (now >= next_housekeeping && !stopping) {
      next_housekeeping = now + HOUSEKEEPING_MS;
      pick_up_replays(sp);
      prune(sp);
      count_stats(sp);
    }
    pthread_mutex_lock(&sp->mu);
  }
  pthread_mutex_unlock(&sp->mu);
  return NULL;
}

/* --- the loop side -------------------------------------------------------------- */

static void on_async(uv_async_t *h) {
  spool *sp = h->data;
  pthread_mutex_lock(&sp->mu);
  store_req *done = sp->out_head;
  delivery *replayed = sp->replayed;
  sp->out_head = sp->out_tail = NULL;
  sp->replayed = NULL;
  pthread_mutex_unlock(&sp->mu);
  atomic_fetch_add(&sp->pending, hand_over(sp, replayed));
  int64_t now = now_ms();
  while (done) {
    store_req *r = done;
    done = r->next;
    delivery *stack[16];
    delivery **ds = stack;
    size_t nd = 0;
    if (r->status == SPOOL_STORED && r->n > 0) {
      if (r->n > 16) ds = malloc(r->n * sizeof *ds);
      int64_t *ids = req_ids(r);
      for (size_t i = 0; ds && i < r->n; i++) {
        delivery *d = delivery_new(r->ev, (uint32_t)r->instances[i]);
        if (d == NULL) {
          /* Stored but not queued: it is delivered after the next start. */
          log_write(LOG_ERROR, &(log_ctx){.event_id = r->ev->id},
                    "out of memory queueing a stored delivery; it resumes on restart");
          continue;
        }
        d->spool_id = (uint64_t)ids[i];
        d->due_ms = now;
        ds[nd++] = d;
      }
      atomic_fetch_add(&sp->pending, nd);
      /* Before the deliveries reach a worker. */
      atomic_store(&r->ev->open, (unsigned)nd);
      atomic_store(&r->ev->fresh, nd == r->n);
    }
    if (r->status != SPOOL_EIO) remember(sp, r->ev->source, r->ev->id);
    r->stored(r->data, r->status, ds, nd);
    if (ds != stack) free(ds);
    event_unref(r->ev);
    free(r);
  }
}

const char *spool_admit(spool *sp) {
  if (atomic_load(&sp->pending) >= sp->max_pending) {
    return "too many pending deliveries (spool.max_pending)";
  }
  if (atomic_load(&sp->disk_low)) return "free disk space below spool.min_free_bytes";
  return NULL;
}

int spool_store(spool *sp, event *ev, const size_t *instances, const char *const *names, size_t n,
                spool_stored_fn stored, void *data) {
  store_req *r = malloc(sizeof *r + n * (sizeof(size_t) + sizeof(int64_t)));
  if (r == NULL) return -1;
  event_ref(ev);
  r->ev = ev;
  r->n = n;
  r->names = names;
  r->stored = stored;
  r->data = data;
  r->status = SPOOL_EIO;
  r->next = NULL;
  if (n) memcpy(r->instances, instances, n * sizeof *instances);
  pthread_mutex_lock(&sp->mu);
  if (sp->in_tail) {
    sp->in_tail->next = r;
  } else {
    sp->in_head = r;
  }
  sp->in_tail = r;
  pthread_cond_signal(&sp->cv);
  pthread_mutex_unlock(&sp->mu);
  return 0;
}

static void push_op(spool *sp, op_kind kind, const delivery *d, const char *error) {
  ev_mark mark = EV_ASK;
  event *ev = d->ev;
  if (kind != OP_RETRY && atomic_load(&ev->fresh)) {
    if (kind == OP_DEAD) atomic_store(&ev->had_dead, 1);
    unsigned left = atomic_fetch_sub(&ev->open, 1) - 1;
    /* An event with a dead letter is not done (until a replay, which loads
     * it afresh and asks the database). */
    mark = left == 0 && !atomic_load(&ev->had_dead) ? EV_DONE : EV_OPEN;
  }
  size_t el = error ? strlen(error) : 0;
  op *o = malloc(sizeof *o + el + 1);
  if (o == NULL) {
    log_write(LOG_ERROR, &(log_ctx){.event_id = d->ev->id},
              "out of memory recording a delivery outcome; it may be delivered again");
    return;
  }
  o->kind = kind;
  o->mark = mark;
  o->delivery_id = (int64_t)d->spool_id;
  o->seq = (int64_t)d->ev->seq;
  o->attempt = d->attempt;
  o->next_ms = d->due_ms;
  o->next = NULL;
  memcpy(o->error, error ? error : "", el + 1);
  pthread_mutex_lock(&sp->mu);
  if (sp->closed) {
    /* After spool_stop (a worker that outlived the shutdown timeout): the
     * outcome is lost, so the delivery runs again on the next start. */
    pthread_mutex_unlock(&sp->mu);
    free(o);
    return;
  }
  if (sp->ops_tail) {
    sp->ops_tail->next = o;
  } else {
    sp->ops_head = o;
  }
  sp->ops_tail = o;
  /* Outcomes are not urgent (losing one to a crash means a redelivery):
   * they ride along with the next batch of stores or the housekeeping tick,
   * and wake the writer on their own only when many pile up. */
  if (++sp->n_ops >= OPS_WAKE) pthread_cond_signal(&sp->cv);
  pthread_mutex_unlock(&sp->mu);
}

void spool_complete(spool *sp, const delivery *d) {
  atomic_fetch_sub(&sp->pending, 1);
  push_op(sp, OP_DONE, d, NULL);
}

void spool_retry(spool *sp, const delivery *d, const char *error) {
  push_op(sp, OP_RETRY, d, error);
}

void spool_dead(spool *sp, const delivery *d, const char *error) {
  atomic_fetch_sub(&sp->pending, 1);
  atomic_fetch_add(&sp->dead, 1);
  push_op(sp, OP_DEAD, d, error);
}

void spool_get_stats(spool *sp, spool_stats *out) {
  out->pending = atomic_load(&sp->pending);
  out->dead = atomic_load(&sp->dead);
  out->db_bytes = atomic_load(&sp->db_bytes);
  out->commits = atomic_load(&sp->commits);
  out->commit_errors = atomic_load(&sp->commit_errors);
  out->checkpoints = atomic_load(&sp->checkpoints);
  out->wal_pages = atomic_load(&sp->wal_pages);
  out->oldest_pending_ms = atomic_load(&sp->oldest_pending_ms);
}

static void on_async_closed(uv_handle_t *h) {
  free(h->data);
}

void spool_stop(spool *sp) {
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
  pthread_mutex_unlock(&sp->mu);
  sqlite3_finalize(sp->ins_event);
  sqlite3_finalize(sp->ins_delivery);
  sqlite3_finalize(sp->upd_delivery);
  sqlite3_finalize(sp->event_done);
  sqlite3_finalize(sp->event_done_now);
  sqlite3_finalize(sp->begin);
  sqlite3_finalize(sp->commit);
  sp->event_done_now = sp->begin = sp->commit = NULL;
  sp->ins_event = sp->ins_delivery = sp->upd_delivery = sp->event_done = NULL;
  if (sp->db) sqlite3_close(sp->db);
  sp->db = NULL;
}

void spool_close(spool *sp) {
  if (sp == NULL) return;
  spool_stop(sp);
  /* What the loop never took back: answers nobody waits for any more. */
  for (store_req *r = sp->out_head; r;) {
    store_req *next = r->next;
    event_unref(r->ev);
    free(r);
    r = next;
  }
  for (delivery *d = sp->replayed; d;) {
    delivery *next = d->next;
    delivery_free(d);
    d = next;
  }
  for (size_t i = 0; i < RECENT_IDS; i++) free(sp->recent[i].key);
  free(sp->path);
  free(sp->data_dir);
  pthread_mutex_destroy(&sp->mu);
  pthread_cond_destroy(&sp->cv);
  pthread_mutex_destroy(&sp->ckpt_mu);
  pthread_cond_destroy(&sp->ckpt_cv);
  if (sp->async.loop != NULL) {
    uv_close((uv_handle_t *)&sp->async, on_async_closed);
  } else {
    free(sp);
  }
}
