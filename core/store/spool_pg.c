/* PostgreSQL spool backend: group commits in pipeline mode, leased claims with SKIP LOCKED,
 * LISTEN/NOTIFY wake-ups. */
#include "spool_pg.h"
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include "pq_lazy.h"
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crash.h"
#include "lane.h"
#include "log.h"
#include "runslots.h"
#include "utf8.h"
#include "clock.h"

/*
 * Tables (schema version 3), all named hookd_* so that the database may be
 * shared with other applications:
 *   hookd_meta(key, value)          schema_version
 *   hookd_events(seq, source, event_id, ..., body, done_ms, headers)
 *                                   UNIQUE (source, event_id) is the dedup;
 *                                   headers: the request's, masked (status page)
 *   hookd_deliveries(id, seq, instance, order_key, state, attempt, crashes,
 *                    started, head, next_ms, lease_owner, lease_until,
 *                    last_error, updated_ms, tries, replay, call_*)
 *                                   one per (event, plugin instance); tries
 *                                   counts the calls kept in hookd_attempts,
 *                                   replay is the back-fill that made it
 *   hookd_nodes(id, name, started_ms, seen_ms)   the nodes that run now
 *   hookd_instances(instance, paused, circuit_open_until, updated_ms,
 *                   hold_until)
 *                                   per-instance state shared by the nodes:
 *                                   `hookd pause` (updated_ms: since when);
 *                                   the circuit breaker (circuit_open_until,
 *                                   the server's clock in ms: 0 closed,
 *                                   else open and no probe before then)
 *                                   and a destination's "too many requests"
 *                                   (hold_until, schema 3)
 *   hookd_attempts(seq, instance, slot, attempt, started_ms, took_ms, outcome,
 *                  status, answer, message)
 *                                   what each deliver() call came to, slot
 *                                   (tries - 1) % SPOOL_ATTEMPTS_KEPT of the
 *                                   (event, instance); pruned with the event.
 *                                   A delivery done at its first call keeps
 *                                   that call in its own row instead
 *                                   (hookd_deliveries.call_*)
 *   hookd_backfills(id, instance, what, created_ms, total, queued, finished_ms)
 *   hookd_backfill_events(backfill, seq)
 *                                   `hookd replay`: the CLI picks the events,
 *                                   any node's writer turns them into
 *                                   deliveries a batch at a time (one node at
 *                                   a time), in seq order, under the keys'
 *                                   locks, and forgets the rows it turned
 * A delivery's state is 0 pending, 1 done or 2 dead. A pending delivery is
 * held by a node while lease_until (the server's clock, ms) is in the
 * future; lease_until 0 means released. `started` says attempt + 1 began
 * and was not settled: found on an expired lease, it is a crash.
 *
 * Heads. Of the pending deliveries of one (instance, order key), exactly one
 * is the head: the earliest, or the one running. Only heads are claimed, so
 * a claim reads a few rows however long a key's backlog is. The head moves
 * to the next delivery in accept order when it is done or dead. Every
 * transaction that adds a delivery to a key or moves its head first takes
 * the key's advisory lock (all its keys, in one order, before anything
 * else), so that two nodes never both think they hold a key's head.
 */
#define SCHEMA_VERSION 3
#define ST_PENDING 0
#define ST_DONE 1
#define ST_DEAD 2

/* Deliveries a lane holds claimed (waiting in memory and running). */
#define WINDOW 32
/* Statements in one pipeline at most (the rest go in the next batch). */
#define BATCH_MAX 512
/* How long a request waits for its commit, a reconnect included, before it
 * is answered 503 (DESIGN §10: never longer than a second). */
#define STORE_WAIT_MS 1000
#define HOUSEKEEPING_MS 500
#define STATS_MS 1000
#define PRUNE_MS 10000
#define PRUNE_BATCH 500
#define REPAIR_MS 60000
#define SWEEP_BATCH 1000
/* Reconnect backoff: doubles from the first to the last. */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 2000
#define NOTIFY_CHANNEL "hookd_spool"
/* The payload of a NOTIFY after a change of hookd_instances (pause). */
#define NOTIFY_STATES "instances"
/* The claimer reloads hookd_instances at least this often. */
#define STATES_MS 1000
/* At most one NOTIFY per this many ms from one node (send_batch). */
#define NOTIFY_MIN_MS 10
/* Deliveries remembered as taken over by another node, until released. */
#define LOST_MAX 64

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS hookd_meta(key text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS hookd_events("
    " seq bigserial PRIMARY KEY, source text NOT NULL, event_id text NOT NULL,"
    " type text NOT NULL, order_key text, content_type text NOT NULL,"
    " received_ms bigint NOT NULL, body bytea NOT NULL, done_ms bigint,"
    " UNIQUE (source, event_id));"
    /* fillfactor leaves room on each page so that lease renewals and start
     * marks (columns in no index) are HOT updates. */
    "CREATE TABLE IF NOT EXISTS hookd_deliveries("
    " id bigserial PRIMARY KEY, seq bigint NOT NULL, instance text NOT NULL, order_key text,"
    " state smallint NOT NULL DEFAULT 0, attempt integer NOT NULL DEFAULT 0,"
    " crashes integer NOT NULL DEFAULT 0, started boolean NOT NULL DEFAULT false,"
    " head boolean NOT NULL DEFAULT true,"
    " next_ms bigint NOT NULL, lease_owner text, lease_until bigint NOT NULL DEFAULT 0,"
    " last_error text, updated_ms bigint NOT NULL) WITH (fillfactor = 80);"
    /* Unfinished deliveries by lane: counts. */
    "CREATE INDEX IF NOT EXISTS hookd_deliveries_open ON hookd_deliveries(instance, seq)"
    " WHERE state <> 1;"
    /* What a claim reads: the heads of a lane, due first. */
    "CREATE INDEX IF NOT EXISTS hookd_deliveries_ready ON hookd_deliveries(instance, next_ms, seq)"
    " WHERE state = 0 AND head;"
    /* A key's pending deliveries in accept order: who is next. */
    "CREATE INDEX IF NOT EXISTS hookd_deliveries_key ON hookd_deliveries(instance, order_key, seq)"
    " WHERE state = 0 AND order_key IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS hookd_deliveries_owner ON hookd_deliveries(lease_owner)"
    " WHERE state = 0;"
    "CREATE INDEX IF NOT EXISTS hookd_deliveries_seq ON hookd_deliveries(seq);"
    "CREATE INDEX IF NOT EXISTS hookd_deliveries_dead ON hookd_deliveries(updated_ms)"
    " WHERE state = 2;"
    "CREATE INDEX IF NOT EXISTS hookd_events_done ON hookd_events(done_ms)"
    " WHERE done_ms IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS hookd_events_open ON hookd_events(seq) WHERE done_ms IS NULL;"
    "CREATE TABLE IF NOT EXISTS hookd_nodes(id text PRIMARY KEY, name text NOT NULL,"
    " started_ms bigint NOT NULL, seen_ms bigint NOT NULL);"
    "CREATE TABLE IF NOT EXISTS hookd_instances(instance text PRIMARY KEY,"
    " paused boolean NOT NULL DEFAULT false, circuit_open_until bigint NOT NULL DEFAULT 0,"
    " updated_ms bigint NOT NULL);";

/* Version 2 (pause, attempt history, back-fills, event search and detail):
 * run on a new database after schema_sql, and as the migration of a
 * version 1 one (ADD COLUMN with a constant default rewrites nothing). */
static const char schema_v2_sql[] =
    "ALTER TABLE hookd_events ADD COLUMN IF NOT EXISTS headers text;"
    "ALTER TABLE hookd_events SET (toast_tuple_target = 8160);"
    "ALTER TABLE hookd_deliveries ADD COLUMN IF NOT EXISTS tries integer NOT NULL DEFAULT 0;"
    "ALTER TABLE hookd_deliveries ADD COLUMN IF NOT EXISTS replay bigint;"
    /* The one call of a delivery done at its first call (almost all of
     * them) is kept in its row, which its outcome rewrites anyway: a row of
     * hookd_attempts each would cost PostgreSQL a fifth more CPU per event. */
    "ALTER TABLE hookd_deliveries ADD COLUMN IF NOT EXISTS call_attempt integer,"
    " ADD COLUMN IF NOT EXISTS call_started_ms bigint, ADD COLUMN IF NOT EXISTS call_took_ms "
    "bigint,"
    " ADD COLUMN IF NOT EXISTS call_outcome text, ADD COLUMN IF NOT EXISTS call_status integer,"
    " ADD COLUMN IF NOT EXISTS call_answer text, ADD COLUMN IF NOT EXISTS call_message text;"
    "CREATE TABLE IF NOT EXISTS hookd_attempts(seq bigint NOT NULL, instance text NOT NULL,"
    " slot integer NOT NULL, attempt integer NOT NULL, started_ms bigint NOT NULL,"
    " took_ms bigint NOT NULL, outcome text NOT NULL, status integer NOT NULL DEFAULT 0,"
    " answer text, message text, PRIMARY KEY (seq, instance, slot));"
    "CREATE TABLE IF NOT EXISTS hookd_backfills(id bigserial PRIMARY KEY, instance text NOT NULL,"
    " what text NOT NULL, created_ms bigint NOT NULL, total bigint NOT NULL DEFAULT 0,"
    " queued bigint NOT NULL DEFAULT 0, finished_ms bigint);"
    "CREATE TABLE IF NOT EXISTS hookd_backfill_events(backfill bigint NOT NULL,"
    " seq bigint NOT NULL, PRIMARY KEY (backfill, seq));"
    /* A back-fill's progress; rows of no back-fill are not in it. */
    "CREATE INDEX IF NOT EXISTS hookd_deliveries_replay ON hookd_deliveries(replay, state)"
    " WHERE replay IS NOT NULL;"
    /* Search by order key (a meeting id) on the status page. */
    "CREATE INDEX IF NOT EXISTS hookd_events_okey ON hookd_events(order_key)"
    " WHERE order_key IS NOT NULL;";

/* Version 3 (the circuit and "too many requests" holds shared by the
 * nodes): after schema_v2_sql on a new database, and the migration of a
 * version 2 one. */
static const char schema_v3_sql[] =
    "ALTER TABLE hookd_instances ADD COLUMN IF NOT EXISTS hold_until bigint NOT NULL DEFAULT 0;";

/* The first half of the two-int advisory lock of an order key ("hk"); the
 * second is hashtext(key). */
#define KEY_LOCK_CLASS "26731"

/* The server's clock in Unix ms: leases compare against one clock, however
 * far apart the nodes' clocks are. */
#define SQL_NOW "(extract(epoch FROM clock_timestamp()) * 1000)::int8"

/* Prepared on the writer's connection (after every reconnect). */
static const struct {
  const char *name, *sql;
  int n;
  Oid types[16];
} writer_stmts[] = {
    /* A new delivery heads its key when the key has no other pending one: a
     * probe with LIMIT 1 (NOT EXISTS may be planned as a hash of the key's
     * whole backlog, once per store). */
    {"store",
     "WITH e AS (INSERT INTO hookd_events(source, event_id, type, order_key, content_type,"
     " received_ms, body, done_ms, headers) VALUES ($1, $2, $3, $4, $5, $6, $7,"
     " CASE WHEN cardinality($8::text[]) = 0 THEN $6 END, $9)"
     " ON CONFLICT (source, event_id) DO NOTHING RETURNING seq),"
     " d AS (INSERT INTO hookd_deliveries(seq, instance, order_key, next_ms, updated_ms, head)"
     " SELECT e.seq, i.name, $4, $6, $6, $4 IS NULL OR (SELECT 1 FROM hookd_deliveries p"
     " WHERE p.instance = i.name AND p.order_key = $4 AND p.state = 0 LIMIT 1) IS NULL"
     " FROM e, unnest($8::text[]) WITH ORDINALITY AS i(name, n) ORDER BY i.n)"
     " SELECT seq FROM e",
     9,
     {25, 25, 25, 25, 25, 20, 17, 1009, 25}},
    {"start",
     "UPDATE hookd_deliveries SET started = true WHERE id = ANY($1::int8[]) AND lease_owner = $2"
     " AND state = 0 RETURNING id",
     2,
     {1016, 25}},
    /* A delivery that is done or dead hands its key's head on to the next
     * pending one (the snapshot still shows it pending: hence id <> $1). */
    {"settle",
     "WITH s AS (UPDATE hookd_deliveries SET state = $2, attempt = $3, crashes = $4,"
     " next_ms = $5, last_error = $6, started = false, lease_until = 0, updated_ms = $7,"
     " tries = $9, call_attempt = $10, call_started_ms = $11, call_took_ms = $12,"
     " call_outcome = $13, call_status = $14, call_answer = nullif($15, ''),"
     " call_message = nullif($16, '') WHERE id = $1 AND lease_owner = $8"
     " RETURNING instance, order_key, state),"
     " n AS (UPDATE hookd_deliveries SET head = true WHERE id = (SELECT x.id FROM"
     " hookd_deliveries x, s WHERE s.state <> 0 AND s.order_key IS NOT NULL AND"
     " x.instance = s.instance AND x.order_key = s.order_key AND x.state = 0 AND x.id <> $1"
     " ORDER BY x.seq LIMIT 1))"
     " SELECT count(*) FROM s",
     16,
     {20, 21, 23, 23, 20, 25, 20, 25, 23, 23, 20, 20, 25, 23, 25, 25}},
    {"unstart",
     "UPDATE hookd_deliveries SET started = false, attempt = $2, next_ms = $3, tries = $5"
     " WHERE id = $1 AND lease_owner = $4",
     5,
     {20, 23, 20, 25, 23}},
    /* A batch's attempt rows in one statement; of two for one slot (never
     * in practice) the later wins. */
    {"attempts",
     "INSERT INTO hookd_attempts AS a(seq, instance, slot, attempt, started_ms, took_ms, outcome,"
     " status, answer, message) SELECT DISTINCT ON (seq, instance, slot) seq, instance, slot,"
     " attempt, started_ms, took_ms, outcome, status, nullif(answer, ''), nullif(message, '')"
     " FROM unnest($1::int8[], $2::text[], $3::int4[], $4::int4[], $5::int8[], $6::int8[],"
     " $7::text[], $8::int4[], $9::text[], $10::text[]) WITH ORDINALITY AS x(seq, instance, slot,"
     " attempt, started_ms, took_ms, outcome, status, answer, message, n)"
     " ORDER BY seq, instance, slot, n DESC ON CONFLICT (seq, instance, slot) DO UPDATE SET"
     " attempt = excluded.attempt, started_ms = excluded.started_ms, took_ms = excluded.took_ms,"
     " outcome = excluded.outcome, status = excluded.status, answer = excluded.answer,"
     " message = excluded.message",
     10,
     {1016, 1009, 1007, 1007, 1016, 1016, 1009, 1007, 1009, 1009}},
    {"evdone",
     "UPDATE hookd_events e SET done_ms = $2 WHERE e.seq = ANY($1::int8[]) AND e.done_ms IS NULL"
     " AND NOT EXISTS (SELECT 1 FROM hookd_deliveries d WHERE d.seq = e.seq AND d.state <> 1)",
     2,
     {1016, 20}},
    {"notify", "SELECT pg_notify('" NOTIFY_CHANNEL "', '')", 0, {0}},
    /* The keys' advisory locks, in one order for every transaction. */
    {"lock",
     "SELECT count(pg_advisory_xact_lock(" KEY_LOCK_CLASS ", h)) FROM (SELECT DISTINCT"
     " hashtext(k) AS h FROM unnest($1::text[]) AS k ORDER BY 1) AS s",
     1,
     {1009}},
};

/* Prepared on the claimer's connection: the due heads of a lane that hold
 * no live lease, unless the instance is paused (`hookd pause`: its row in
 * hookd_instances, the cluster-wide truth; the lanes' own flag, which each
 * node reloads on a NOTIFY and every second, only spares the query). SKIP
 * LOCKED leaves rows another node is claiming right now to that node. */
static const char claim_sql[] =
    "WITH t AS (SELECT " SQL_NOW
    " AS now),"
    " c AS (SELECT d.id, d.started AS was_started FROM hookd_deliveries d, t"
    "  WHERE d.instance = $1 AND d.state = 0 AND d.head AND d.next_ms <= t.now"
    "  AND d.lease_until <= t.now AND NOT EXISTS (SELECT 1 FROM hookd_instances i"
    "  WHERE i.instance = $1 AND i.paused)"
    "  ORDER BY d.next_ms, d.seq LIMIT $2 FOR UPDATE OF d SKIP LOCKED)"
    " UPDATE hookd_deliveries u SET lease_owner = $3, lease_until = t.now + $4,"
    "  crashes = u.crashes + u.started::int, started = false"
    " FROM c, t, hookd_events e WHERE u.id = c.id AND e.seq = u.seq"
    " RETURNING u.id, u.seq, u.attempt, u.crashes, u.next_ms, e.source, e.event_id, e.type,"
    "  e.order_key, e.content_type, e.received_ms, e.body, c.was_started, u.tries";

/* --- objects ------------------------------------------------------------------------ */

typedef struct pg_spool pg_spool;

typedef struct pg_lane pg_lane;

struct pg_lane {
  lane_base lb; /* first: the interface's part, name, lock, owner, settings */
  pg_spool *sp;
  struct pg_lane *next; /* in sp->lanes; lanes live as long as the spool */
  /* Claimed and leased by this node: waiting (window) or handed out (out).
   * At most one per order key, so their order among themselves is free. */
  delivery *window[WINDOW];
  size_t n_window;
  size_t n_out;                  /* handed out to workers, not settled */
  atomic_uint_fast64_t pending;  /* unfinished deliveries, all nodes (housekeeping + stores) */
  atomic_int_fast64_t retry_due; /* earliest retry settled here, for the claimer's timer */
  atomic_int_fast64_t oldest_ms; /* accept time of the oldest unfinished delivery, 0: none */
  atomic_int paused;             /* `hookd pause` (hookd_instances): claims return nothing */
  atomic_int_fast64_t paused_ms; /* since when (Unix ms) */
  int state_seen;                /* scratch of load_states (claimer thread) */
  /* hookd_instances' circuit_open_until and hold_until as load_states last
   * read them: the server's values (to see a change; load_states only) and
   * the same times on this node's clock (lane_holds). */
  int64_t circuit_raw, hold_raw;
  atomic_int_fast64_t circuit_until, hold_until;
};

/* One store() on its way through the writer. */
typedef struct store_req {
  event *ev;
  char *lanes_lit; /* the lane names as a text[] literal */
  pg_lane **lanes;
  size_t n;
  spool_stored_fn done;
  void *data;
  int status;
  int64_t deadline; /* mono ms: answered 503 by the loop after this */
  atomic_int answered;
  int taken;                  /* in a batch the writer sends now */
  struct store_req *next;     /* writer queue / results */
  struct store_req *all_next; /* the loop's list of unanswered requests */
} store_req;

/* OP_ATTEMPT: a row of hookd_attempts (record_attempt); error[] holds the
 * outcome, and answer, message and instance follow it in the allocation. */
typedef enum { OP_START, OP_SETTLE, OP_UNSTART, OP_ATTEMPT } op_kind;

typedef struct op {
  op_kind kind;
  int64_t id, seq;
  int state;
  uint32_t attempt, crashes;
  uint32_t tries; /* the delivery's calls kept in hookd_attempts */
  int64_t next_ms;
  int notify;      /* the outcome may let another delivery run: NOTIFY the nodes */
  const char *key; /* the event's order key (in error[]'s allocation), or NULL */
  /* OP_ATTEMPT only. */
  int64_t started_ms, took_ms;
  int32_t status;
  const char *answer, *message, *instance;
  struct op *call; /* OP_SETTLE: its delivery's one call, kept in its row */
  struct op *next;
  char error[]; /* may be empty */
} op;

/* A write of hookd_instances for instance_hold or take_probe, run by the
 * claimer in the order they came. */
#define HOLD_PROBE 100 /* take_probe; the others are spool_hold values */
typedef struct hold_req {
  int kind;
  int64_t ms;    /* how long from the server's now */
  int done;      /* HOLD_PROBE: answered (won, until) */
  int abandoned; /* HOLD_PROBE: its worker stopped waiting: the claimer frees it */
  int won;
  int64_t until;
  struct hold_req *next;
  char instance[];
} hold_req;
/* How long take_probe waits for the claimer before it probes as if alone. */
#define PROBE_WAIT_MS 2000

struct pg_spool {
  spool base;
  uv_loop_t *loop;
  char *url;
  char node_id[96];
  char node_name[512];
  int64_t lease_ms;
  int64_t retention_ms;
  uint64_t max_total; /* spool.max_pending: all instances together, 0: no cap */
  int lock_fd;        /* flock on data_dir/node.lock: one hookd per node name */
  runslots *running;  /* data_dir/running: what each worker runs now */

  pthread_mutex_t lanes_mu;
  pg_lane *lanes;

  /* The writer. */
  PGconn *wconn;
  pthread_t writer;
  int writer_started;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* work for the writer */
  store_req *in_head, *in_tail;
  op *ops_head, *ops_tail;
  size_t n_ops;
  int urgent; /* an outcome frees a key or a worker waits: commit now */
  store_req *out_head, *out_tail;
  int stopping, closed;
  uv_async_t async;
  uv_timer_t deadlines;
  store_req *unanswered; /* loop thread only */

  /* The claimer. */
  PGconn *cconn;
  pthread_t claimer;
  int claimer_started;
  int kick_fd; /* eventfd: a lane has room, or stop */
  atomic_int kicked;
  atomic_int states_changed; /* a NOTIFY said hookd_instances changed */
  /* pause() against load_states(): states_gen is odd while a pause() is
   * on its way, and moves when it ends; a load that saw it move (or odd)
   * applies nothing, since it may have read the state before the change. */
  pthread_mutex_t states_mu;
  unsigned states_gen;
  /* instance_hold and take_probe, queued for the claimer (its connection
   * reads hookd_instances too). holds_closed: the claimer is gone. */
  pthread_mutex_t holds_mu;
  pthread_cond_t holds_cv; /* a probe request was answered */
  hold_req *holds_head, *holds_tail;
  int holds_closed;

  /* State and numbers, any thread. */
  atomic_int down; /* the writer has no connection */
  atomic_int_fast64_t down_since;
  pthread_mutex_t why_mu;
  char down_why[256];
  atomic_uint_fast64_t pending, dead, db_bytes, commits, commit_errors, crashes;
  atomic_int_fast64_t oldest_pending_ms;
  atomic_int_fast64_t writer_beat; /* mono ms of the writer's last round */
  int64_t sweep_after;             /* writer only: the done-mark sweep's cursor */
  int64_t lost[LOST_MAX];          /* deliveries whose lease another node took (under mu) */
  op *held;                        /* first calls waiting for their outcome (under mu) */
  size_t n_lost;
  int closes_left; /* handles still closing in free() */
  /* Writer only: wake-ups of the other nodes, coalesced (send_batch). */
  int64_t notify_next;
  int notify_owed, woke;
};

/* Counts one finished delivery off a cluster-wide count. The count comes
 * from the database every second and this node adds only what it stored
 * but takes off what it finished of any node's: it must not wrap below 0. */
static void count_down(atomic_uint_fast64_t *v) {
  uint_fast64_t cur = atomic_load(v);
  while (cur > 0 && !atomic_compare_exchange_weak(v, &cur, cur - 1)) {
  }
}

/* libpq's messages span lines ("FATAL: ...\nserver closed the connection
 * ..."): one line, for logs and 503 reasons. */
static void one_line(char *s) {
  char *w = s;
  for (const char *r = s; *r; r++) {
    char ch = *r == '\n' || *r == '\t' || *r == '\r' ? ' ' : *r;
    if (ch == ' ' && (w == s || w[-1] == ' ')) continue;
    *w++ = ch;
  }
  while (w > s && w[-1] == ' ') w--;
  *w = 0;
}

static void set_down(pg_spool *sp, const char *why) {
  pthread_mutex_lock(&sp->why_mu);
  snprintf(sp->down_why, sizeof sp->down_why, "%s", why);
  one_line(sp->down_why);
  char copy[256];
  snprintf(copy, sizeof copy, "%s", sp->down_why);
  pthread_mutex_unlock(&sp->why_mu);
  if (!atomic_exchange(&sp->down, 1)) {
    atomic_store(&sp->down_since, clock_mono_ms());
    log_write(HLOG_ERROR, NULL, "spool: PostgreSQL connection lost: %s", copy);
  }
}

static void set_up(pg_spool *sp) {
  if (atomic_exchange(&sp->down, 0)) {
    log_write(HLOG_INFO, NULL, "spool: PostgreSQL connection is back");
  }
}

/* --- connections -------------------------------------------------------------------- */

/* Server notices ("relation already exists, skipping") go to the debug
 * log, not to stderr. */
static void on_notice(void *arg, const char *message) {
  (void)arg;
  log_write(HLOG_DEBUG, NULL, "spool: PostgreSQL says: %.*s", (int)strcspn(message, "\n"), message);
}

/* Opens a connection. The defaults before the URL bound how long a dead
 * server or network can hold a thread; the URL may override them. */
static PGconn *pg_connect(const char *url, const char *role, char *err, size_t errlen) {
  char app[64];
  snprintf(app, sizeof app, "hookd %s", role);
  const char *keys[] = {"connect_timeout",     "keepalives",       "keepalives_idle",
                        "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                        "application_name",    "dbname",           NULL};
  const char *vals[] = {"3", "1", "5", "2", "3", "10000", app, url, NULL};
  const char *no_libpq = pq_lazy_error(); /* every libpq call starts here */
  if (no_libpq) {
    snprintf(err, errlen, "%s", no_libpq);
    return NULL;
  }
  PGconn *c = PQconnectdbParams(keys, vals, 1);
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  PQsetNoticeProcessor(c, on_notice, NULL);
  if (PQstatus(c) != CONNECTION_OK) {
    snprintf(err, errlen, "%s", PQerrorMessage(c));
    one_line(err);
    PQfinish(c);
    return NULL;
  }
  /* The statements are prepared once and run thousands of times with
   * parameters that never change their best plan: planning each run (the
   * default for the first runs) took more server time than the inserts. */
  PGresult *r = PQexec(c, "SET plan_cache_mode = force_generic_plan");
  PQclear(r);
  return c;
}

/* Runs sql (no parameters); 0 or -1 with err. */
static int exec_ok(PGconn *c, const char *sql, char *err, size_t errlen) {
  PGresult *r = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(r);
  int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
  if (rc) snprintf(err, errlen, "%s", PQerrorMessage(c));
  PQclear(r);
  return rc;
}

static int prepare_all(PGconn *c, int writer, char *err, size_t errlen) {
  if (!writer) {
    Oid t[4] = {25, 20, 25, 20};
    PGresult *r = PQprepare(c, "claim", claim_sql, 4, t);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) snprintf(err, errlen, "%s", PQerrorMessage(c));
    PQclear(r);
    return ok ? 0 : -1;
  }
  for (size_t i = 0; i < sizeof writer_stmts / sizeof writer_stmts[0]; i++) {
    PGresult *r = PQprepare(c, writer_stmts[i].name, writer_stmts[i].sql, writer_stmts[i].n,
                            writer_stmts[i].types);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) snprintf(err, errlen, "%s", PQerrorMessage(c));
    PQclear(r);
    if (!ok) return -1;
  }
  return 0;
}

/* --- schema -------------------------------------------------------------------------- */

/* One step up to schema version `to`: runs sql and records the version
 * (inside ensure_schema's transaction). 0 or SPOOL_EFAIL. Nodes of version
 * 2 that still run on a version 3 schema keep working: they neither read
 * nor write the new column, and hold their instances per node. */
static int migrate(PGconn *c, int to, const char *sql, char *err, size_t errlen) {
  char why[512] = "", set[96];
  snprintf(set, sizeof set, "UPDATE hookd_meta SET value = '%d' WHERE key = 'schema_version'", to);
  if (exec_ok(c, sql, why, sizeof why) != 0 || exec_ok(c, set, why, sizeof why) != 0) {
    snprintf(err, errlen, "cannot upgrade the spool from schema version %d to %d: %s", to - 1, to,
             why);
    return SPOOL_EFAIL;
  }
  log_write(HLOG_INFO, NULL, "spool: PostgreSQL spool upgraded from schema version %d to %d",
            to - 1, to);
  return 0;
}

/* Creates the schema in a new database, or checks the version of an
 * existing one. Nodes starting at once serialise on an advisory lock. A
 * version newer than this hookd's is refused before anything is touched.
 * Returns 0, SPOOL_EDAMAGED (not a spool, or a newer one) or SPOOL_EFAIL. */
static int ensure_schema(PGconn *c, char *err, size_t errlen) {
  char why[512] = "";
  if (exec_ok(c, "BEGIN; SELECT pg_advisory_xact_lock(hashtext('hookd spool schema'))", why,
              sizeof why) != 0) {
    snprintf(err, errlen, "cannot lock the schema: %s", why);
    return SPOOL_EFAIL;
  }
  int rc = 0;
  PGresult *r = PQexec(c, "SELECT to_regclass('hookd_meta') IS NOT NULL");
  int exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
               strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    snprintf(err, errlen, "%s", PQerrorMessage(c));
    rc = SPOOL_EFAIL;
  }
  PQclear(r);
  if (rc == 0 && exists) {
    r = PQexec(c, "SELECT value FROM hookd_meta WHERE key = 'schema_version'");
    long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      char *end;
      v = strtol(PQgetvalue(r, 0, 0), &end, 10);
      if (*end) v = -1;
    }
    PQclear(r);
    if (v > SCHEMA_VERSION) {
      snprintf(err, errlen,
               "the PostgreSQL spool has schema version %ld and this hookd knows versions up to "
               "%d: refusing to touch it (upgrade hookd on this node to the version the other "
               "nodes run)",
               v, SCHEMA_VERSION);
      rc = SPOOL_EDAMAGED;
    } else if (v < 1) {
      snprintf(err, errlen,
               "the database has a hookd_meta table without a valid schema_version: not a "
               "hookd spool, or a damaged one");
      rc = SPOOL_EDAMAGED;
    }
    /* Older versions migrate here, one step at a time, inside this
     * transaction (nodes of the older version that still run keep working:
     * a step only adds). */
    if (rc == 0 && v < 2) rc = migrate(c, 2, schema_v2_sql, err, errlen);
    if (rc == 0 && v < 3) rc = migrate(c, 3, schema_v3_sql, err, errlen);
  }
  if (rc == 0 && !exists && exec_ok(c, schema_sql, why, sizeof why) != 0) {
    snprintf(err, errlen, "cannot create the spool tables: %s", why);
    rc = SPOOL_EFAIL;
  }
  if (rc == 0 && !exists && exec_ok(c, schema_v2_sql, why, sizeof why) != 0) {
    snprintf(err, errlen, "cannot create the spool tables: %s", why);
    rc = SPOOL_EFAIL;
  }
  if (rc == 0 && !exists && exec_ok(c, schema_v3_sql, why, sizeof why) != 0) {
    snprintf(err, errlen, "cannot create the spool tables: %s", why);
    rc = SPOOL_EFAIL;
  }
  if (rc == 0 && !exists &&
      exec_ok(c, "INSERT INTO hookd_meta(key, value) VALUES ('schema_version', '3')", why,
              sizeof why) != 0) {
    snprintf(err, errlen, "%s", why);
    rc = SPOOL_EFAIL;
  }
  if (rc == 0 && exec_ok(c, "COMMIT", why, sizeof why) != 0) {
    snprintf(err, errlen, "%s", why);
    rc = SPOOL_EFAIL;
  }
  if (rc != 0) exec_ok(c, "ROLLBACK", why, sizeof why);
  return rc;
}

/* --- parameters ------------------------------------------------------------------------ */

/* Appends s to a text[] literal as one quoted element, leaving room for the
 * closing brace and NUL. 0, or -1 when out of memory. */
static int lit_append(char **buf, size_t *len, size_t *cap, const char *s) {
  size_t need = *len + 2 * strlen(s) + 6;
  if (need > *cap) {
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    char *nb = realloc(*buf, nc);
    if (nb == NULL) return -1;
    *buf = nb;
    *cap = nc;
  }
  char *p = *buf + *len;
  if (*len > 1) *p++ = ',';
  *p++ = '"';
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') *p++ = '\\';
    *p++ = *s;
  }
  *p++ = '"';
  *len = (size_t)(p - *buf);
  return 0;
}

/* "{"a","b"}" for the lanes' names; NULL when out of memory. */
static char *lanes_literal(spool_lane *const *lanes, size_t n) {
  char *buf = NULL;
  size_t len = 1, cap = 0;
  for (size_t i = 0; i < n; i++) {
    if (lit_append(&buf, &len, &cap, ((pg_lane *)lanes[i])->lb.name) != 0) {
      free(buf);
      return NULL;
    }
  }
  if (buf == NULL) buf = malloc(3);
  if (buf == NULL) return NULL;
  buf[0] = '{';
  buf[len] = '}';
  buf[len + 1] = 0;
  return buf;
}

/* "{1,2,3}" for an int8[] parameter. */
static char *ids_literal(const int64_t *ids, size_t n) {
  char *s = malloc(n * 21 + 3);
  if (s == NULL) return NULL;
  size_t len = 0;
  s[len++] = '{';
  for (size_t i = 0; i < n; i++)
    len += (size_t)sprintf(s + len, i ? ",%lld" : "%lld", (long long)ids[i]);
  s[len++] = '}';
  s[len] = 0;
  return s;
}

/* --- lanes ----------------------------------------------------------------------------- */

static spool_lane *pg_lane_get(spool *base, const char *instance) {
  pg_spool *sp = (pg_spool *)base;
  /* Until lane_config. */
  static const spool_lane_config unset = {.max_pending = UINT64_MAX, .max_crashes = 3};
  pthread_mutex_lock(&sp->lanes_mu);
  pg_lane *l = sp->lanes;
  while (l && strcmp(l->lb.name, instance) != 0) l = l->next;
  if (l == NULL && (l = calloc(1, sizeof *l)) != NULL) {
    if (lane_base_init(&l->lb, base, instance, &unset) != 0) {
      free(l);
      l = NULL;
    } else {
      l->sp = sp;
      atomic_store(&l->retry_due, INT64_MAX);
      l->next = sp->lanes;
      sp->lanes = l;
    }
  }
  pthread_mutex_unlock(&sp->lanes_mu);
  return l ? &l->lb.iface : NULL;
}

static void kick(pg_spool *sp) {
  if (atomic_exchange(&sp->kicked, 1)) return;
  uint64_t one = 1;
  if (write(sp->kick_fd, &one, sizeof one) < 0) { /* the counter is full: already kicked */
  }
}

static void pg_lane_attach(spool_lane *lane, const void *owner, spool_wake_fn wake, void *data) {
  pg_lane *l = (pg_lane *)lane;
  pthread_mutex_lock(&l->lb.mu);
  lane_base_own(&l->lb, owner, wake, data, 0);
  size_t has = l->n_window;
  pthread_mutex_unlock(&l->lb.mu);
  if (wake && has) wake(data, has);
  kick(l->sp); /* its backlog is claimed now */
}

static void pg_lane_stats(spool_lane *lane, spool_lane_stats *out) {
  pg_lane *l = (pg_lane *)lane;
  pthread_mutex_lock(&l->lb.mu);
  out->in_memory = l->n_window;
  out->running = l->n_out;
  pthread_mutex_unlock(&l->lb.mu);
  out->pending = atomic_load(&l->pending);
  out->oldest_ms = atomic_load(&l->oldest_ms);
  out->saturated = l->lb.cfg.max_pending && out->pending >= l->lb.cfg.max_pending;
  out->paused = atomic_load(&l->paused);
  out->paused_ms = out->paused ? atomic_load(&l->paused_ms) : 0;
}

/* Sets a lane's pause as stored in hookd_instances; a resume wakes every
 * worker of its owner (what waits in the window runs, in order) and the
 * claimer (what waits in the database is claimed). */
static void lane_set_paused(pg_lane *l, int paused, int64_t since) {
  atomic_store(&l->paused_ms, since);
  if (atomic_exchange(&l->paused, paused) == paused || paused) return;
  lane_base_wake_all(&l->lb);
  kick(l->sp);
}

/* Sets a lane's circuit and hold as stored in hookd_instances (raw: the
 * server's clock; server_now and local_now: the two clocks at the read).
 * A change wakes every worker of the owner: the pace applies it. */
static void lane_set_holds(pg_lane *l, int64_t circuit_raw, int64_t hold_raw, int64_t server_now,
                           int64_t local_now) {
  if (circuit_raw == l->circuit_raw && hold_raw == l->hold_raw) return;
  l->circuit_raw = circuit_raw;
  l->hold_raw = hold_raw;
  /* Moved to this node's clock, so that nodes whose clocks differ hold
   * for the same time. */
  atomic_store(&l->circuit_until, circuit_raw > 0 ? local_now + (circuit_raw - server_now) : 0);
  atomic_store(&l->hold_until, hold_raw > 0 ? local_now + (hold_raw - server_now) : 0);
  lane_base_wake_all(&l->lb);
}

static void pg_lane_holds(spool_lane *lane, int64_t *circuit_until, int64_t *hold_until) {
  pg_lane *l = (pg_lane *)lane;
  *circuit_until = atomic_load(&l->circuit_until);
  *hold_until = atomic_load(&l->hold_until);
}

/* A due delivery from the window; the window only ever holds heads of
 * their keys, leased to this node. */
static delivery *pg_claim(spool_lane *lane, const void *owner, int64_t now_ms, int64_t *next_ms) {
  pg_lane *l = (pg_lane *)lane;
  delivery *d = NULL;
  int64_t next = INT64_MAX;
  pthread_mutex_lock(&l->lb.mu);
  if (l->lb.owner != owner) {
    pthread_mutex_unlock(&l->lb.mu);
    *next_ms = -1;
    return NULL;
  }
  if (atomic_load(&l->paused)) {
    /* Paused: what it claimed waits in the window, leased, in order, and
     * nothing more is claimed until a resume wakes the owner. */
    pthread_mutex_unlock(&l->lb.mu);
    *next_ms = INT64_MAX;
    return NULL;
  }
  size_t best = WINDOW;
  for (size_t i = 0; i < l->n_window; i++) {
    delivery *w = l->window[i];
    if (w->due_ms <= now_ms && (best == WINDOW || w->ev->seq < l->window[best]->ev->seq)) best = i;
    if (w->due_ms > now_ms && w->due_ms < next) next = w->due_ms;
  }
  if (best < WINDOW) {
    d = l->window[best];
    l->window[best] = l->window[--l->n_window];
    l->n_out++;
  }
  int room = l->n_window + l->n_out < WINDOW / 2;
  pthread_mutex_unlock(&l->lb.mu);
  if (room) kick(l->sp);
  *next_ms = d ? 0 : next;
  return d;
}

/* The lane d was claimed from, which no longer counts it as handed out. */
static pg_lane *lane_forget(const delivery *d) {
  pg_lane *l = d->lane;
  if (l == NULL) return NULL;
  pthread_mutex_lock(&l->lb.mu);
  l->n_out--;
  pthread_mutex_unlock(&l->lb.mu);
  return l;
}

/* --- the writer's queue ---------------------------------------------------------------- */

/* Texts go through utf8_clean before a store: PostgreSQL refuses a text
 * parameter that is not valid UTF-8 (the database's encoding is UTF8), and
 * one such string would fail the whole batch it rides in. */

static op *op_new(op_kind kind, const delivery *d, int state, const char *error) {
  size_t el = error ? strlen(error) : 0;
  const char *key = d->ev->order_key;
  size_t kl = key ? strlen(key) + 1 : 0;
  op *o = calloc(1, sizeof *o + el + 1 + kl);
  if (o == NULL) return NULL;
  if (key) o->key = memcpy(o->error + el + 1, key, kl);
  o->kind = kind;
  o->id = (int64_t)d->spool_id;
  o->seq = (int64_t)d->ev->seq;
  o->state = state;
  o->attempt = d->attempt;
  o->crashes = d->crashes;
  o->tries = d->tries;
  o->next_ms = d->due_ms;
  memcpy(o->error, error ? error : "", el + 1);
  utf8_clean(o->error);
  return o;
}

/* Queues o for the next commit; urgent ones wake the writer at once. */
static int push_op(pg_spool *sp, op *o, int urgent) {
  pthread_mutex_lock(&sp->mu);
  if (sp->closed) {
    pthread_mutex_unlock(&sp->mu);
    free(o->call);
    free(o);
    return -1;
  }
  if (sp->ops_tail) {
    sp->ops_tail->next = o;
  } else {
    sp->ops_head = o;
  }
  sp->ops_tail = o;
  sp->n_ops++;
  if (urgent) {
    sp->urgent = 1;
    pthread_cond_signal(&sp->cv);
  }
  pthread_mutex_unlock(&sp->mu);
  return 0;
}

/* Two records of a running attempt, neither waited for. The run slot
 * (runslots.h: a store into a shared mapping) tells this node's next start
 * exactly what was running when it died. The start mark in PostgreSQL,
 * which rides in the next commit, tells the other nodes when they take an
 * expired lease over; an attempt shorter than a commit may lack it, and
 * then a death during it counts no crash on another node. */
static int pg_started(spool *base, delivery *d) {
  pg_spool *sp = (pg_spool *)base;
  runslots_set(sp->running, d ? d->spool_id : 0, d ? d->attempt + 1 : 0);
  if (d == NULL) return 0;
  op *o = op_new(OP_START, d, ST_PENDING, NULL);
  if (o) push_op(sp, o, 0);
  return 0;
}

/* 1 when started() found d's lease taken by another node (and forgets it). */
static int forget_lost(pg_spool *sp, const delivery *d) {
  int found = 0;
  pthread_mutex_lock(&sp->mu);
  size_t n = sp->n_lost < LOST_MAX ? sp->n_lost : LOST_MAX;
  for (size_t i = 0; i < n && !found; i++) {
    if (sp->lost[i] == (int64_t)d->spool_id) {
      sp->lost[i] = 0;
      found = 1;
    }
  }
  pthread_mutex_unlock(&sp->mu);
  return found;
}

static op *take_held(pg_spool *sp, const delivery *d);

static void pg_settle(spool *base, delivery *d, spool_outcome how, const char *error) {
  pg_spool *sp = (pg_spool *)base;
  pg_lane *l = lane_forget(d);
  op *call = take_held(sp, d);
  if (call && how != SPOOL_DONE) {
    push_op(sp, call, 0); /* a row of hookd_attempts, as later calls */
    call = NULL;
  }
  if (how == SPOOL_RELEASE && forget_lost(sp, d)) {
    /* Its lease went to another node: not this node's to keep. */
    delivery_free(d);
    return;
  }
  if (how == SPOOL_RELEASE && l) {
    /* Still leased to this node: back in the window, due at d->due_ms;
     * the start mark (if it was written) is undone. */
    op *o = op_new(OP_UNSTART, d, ST_PENDING, NULL);
    if (o) push_op(sp, o, 0);
    pthread_mutex_lock(&l->lb.mu);
    int kept = l->n_window < WINDOW;
    if (kept) l->window[l->n_window++] = d;
    spool_wake_fn wake = l->lb.wake;
    void *data = l->lb.wake_data;
    pthread_mutex_unlock(&l->lb.mu);
    if (kept) {
      if (wake) wake(data, 1);
      return;
    }
  }
  static const int states[] = {ST_DONE, ST_PENDING, ST_DEAD, ST_PENDING};
  op *o = op_new(OP_SETTLE, d, states[how], error);
  if (o == NULL) {
    log_write(HLOG_ERROR, &(log_ctx){.event_id = d->ev->id},
              "out of memory recording a delivery outcome; it runs again after its lease expires");
  } else {
    o->call = call;
    call = NULL;
    o->notify = how != SPOOL_RETRY;
    if (how == SPOOL_DONE || how == SPOOL_DEAD) {
      count_down(&sp->pending);
      if (l) count_down(&l->pending);
    }
    if (how == SPOOL_DEAD) atomic_fetch_add(&sp->dead, 1);
    if (l && how == SPOOL_RETRY) {
      int64_t cur = atomic_load(&l->retry_due);
      while (d->due_ms < cur && !atomic_compare_exchange_weak(&l->retry_due, &cur, d->due_ms)) {
      }
    }
    /* Outcomes that end a delivery free its key for the next one, on any
     * node: they are committed at once, not with a later batch. */
    push_op(sp, o, how != SPOOL_RETRY);
  }
  if (l && how == SPOOL_RETRY) kick(sp);
  free(call); /* not kept: out of memory for its outcome */
  delivery_free(d);
}

/* Keeps one call's result (a row of hookd_attempts), riding in the next
 * commit like an outcome; slot (tries - 1) % SPOOL_ATTEMPTS_KEPT, so an
 * (event, instance) keeps its latest calls. tries goes to the delivery's
 * row with its outcome (settle, release). A first call is held for its
 * outcome instead: when that is "done", the call goes into the delivery's
 * own row (no row of hookd_attempts at all for most deliveries). */
static void pg_record_attempt(spool *base, delivery *d, const spool_attempt *a) {
  pg_spool *sp = (pg_spool *)base;
  const pg_lane *l = d->lane;
  const char *answer = a->answer ? a->answer : "", *message = a->message ? a->message : "";
  const char *inst = l ? l->lb.name : "";
  size_t lo = strlen(a->outcome), la = strlen(answer), lm = strlen(message), li = strlen(inst);
  op *o = calloc(1, sizeof *o + lo + la + lm + li + 4);
  if (o == NULL) return; /* the page misses a row; nothing else does */
  d->tries++;
  o->kind = OP_ATTEMPT;
  o->id = (int64_t)d->spool_id;
  o->seq = (int64_t)d->ev->seq;
  o->tries = d->tries;
  o->attempt = a->attempt;
  o->started_ms = a->started_ms;
  o->took_ms = a->took_ms;
  o->status = a->status;
  char *p = o->error;
  memcpy(p, a->outcome, lo + 1);
  o->answer = memcpy(p + lo + 1, answer, la + 1);
  o->message = memcpy(p + lo + la + 2, message, lm + 1);
  o->instance = memcpy(p + lo + la + lm + 3, inst, li + 1);
  utf8_clean(o->error);
  utf8_clean((char *)o->answer);
  utf8_clean((char *)o->message);
  if (o->tries != 1) {
    push_op(sp, o, 0);
    return;
  }
  /* A first call waits for its outcome (settle() follows at once): when
   * that is "done" it goes into the delivery's row with the outcome. */
  pthread_mutex_lock(&sp->mu);
  o->next = sp->held;
  sp->held = o;
  pthread_mutex_unlock(&sp->mu);
}

/* The first call recorded for d and held for its outcome, or NULL. */
static op *take_held(pg_spool *sp, const delivery *d) {
  op *found = NULL;
  pthread_mutex_lock(&sp->mu);
  for (op **pp = &sp->held; *pp; pp = &(*pp)->next) {
    if ((*pp)->id == (int64_t)d->spool_id) {
      found = *pp;
      *pp = found->next;
      found->next = NULL;
      break;
    }
  }
  pthread_mutex_unlock(&sp->mu);
  return found;
}

/* --- the writer: one pipeline, one transaction per batch ------------------------------- */

typedef enum { BATCH_OK = 0, BATCH_SQL = -1, BATCH_LOST = -2 } batch_rc;

typedef enum {
  S_LOCK,
  S_STORE,
  S_START,
  S_SETTLE,
  S_UNSTART,
  S_EVDONE,
  S_NOTIFY,
  S_ATTEMPTS
} sent_kind;

typedef struct sent {
  sent_kind kind;
  void *p;
} sent;

/* One batch on its way: what was sent, in order, and what came back. */
typedef struct batch {
  store_req *stores;
  op *ops;
  sent list[BATCH_MAX + 9];
  size_t n;
  char sqlstate[6];
  char why[256];
} batch;

static int send_store(pg_spool *sp, store_req *r) {
  char received[24];
  const event *ev = r->ev;
  snprintf(received, sizeof received, "%lld", (long long)ev->received_ms);
  /* The masked headers as text: a header value that is not UTF-8 (HTTP
   * allows other bytes) is shown with '?' rather than failing the store. */
  char *headers = ev->headers && !utf8_valid(ev->headers) ? strdup(ev->headers) : NULL;
  if (headers) utf8_clean(headers);
  const char *v[9] = {ev->source,    ev->id,           ev->type,
                      ev->order_key, ev->content_type, received,
                      ev->body,      r->lanes_lit,     headers ? headers : ev->headers};
  int len[9] = {0, 0, 0, 0, 0, 0, (int)ev->body_len, 0, 0};
  int fmt[9] = {0, 0, 0, 0, 0, 0, 1, 0, 0};
  int ok = PQsendQueryPrepared(sp->wconn, "store", 9, v, len, fmt, 0);
  free(headers);
  return ok;
}

static int send_settle(pg_spool *sp, const op *o, const char *now) {
  char id[24], state[8], attempt[16], crashes[16], next[24], tries[16];
  snprintf(id, sizeof id, "%lld", (long long)o->id);
  snprintf(state, sizeof state, "%d", o->state);
  snprintf(attempt, sizeof attempt, "%u", o->attempt);
  snprintf(crashes, sizeof crashes, "%u", o->crashes);
  snprintf(next, sizeof next, "%lld", (long long)o->next_ms);
  snprintf(tries, sizeof tries, "%u", o->tries);
  if (o->kind == OP_UNSTART) {
    const char *v[5] = {id, attempt, next, sp->node_id, tries};
    return PQsendQueryPrepared(sp->wconn, "unstart", 5, v, NULL, NULL, 0);
  }
  char c_attempt[16], c_started[24], c_took[24], c_status[16];
  const op *c = o->call;
  if (c) {
    snprintf(c_attempt, sizeof c_attempt, "%u", c->attempt);
    snprintf(c_started, sizeof c_started, "%lld", (long long)c->started_ms);
    snprintf(c_took, sizeof c_took, "%lld", (long long)c->took_ms);
    snprintf(c_status, sizeof c_status, "%d", (int)c->status);
  }
  const char *v[16] = {id,
                       state,
                       attempt,
                       crashes,
                       next,
                       o->error[0] ? o->error : NULL,
                       now,
                       sp->node_id,
                       tries,
                       c ? c_attempt : NULL,
                       c ? c_started : NULL,
                       c ? c_took : NULL,
                       c ? c->error : NULL,
                       c ? c_status : NULL,
                       c ? c->answer : NULL,
                       c ? c->message : NULL};
  return PQsendQueryPrepared(sp->wconn, "settle", 16, v, NULL, NULL, 0);
}

/* A growing array literal for one parameter of "attempts". */
typedef struct arr {
  char *buf;
  size_t len, cap;
  int oom;
} arr;

static void arr_text(arr *a, const char *s) {
  if (a->len == 0) a->len = 1; /* room for the brace */
  a->oom |= lit_append(&a->buf, &a->len, &a->cap, s);
}

static void arr_num(arr *a, long long v) {
  char num[24];
  snprintf(num, sizeof num, "%lld", v);
  arr_text(a, num); /* "12" is a valid element of a number array */
}

/* "{...}", or NULL when out of memory. */
static const char *arr_end(arr *a) {
  if (a->oom || a->buf == NULL) return NULL;
  a->buf[0] = '{';
  a->buf[a->len] = '}';
  a->buf[a->len + 1] = 0;
  return a->buf;
}

/* The batch's attempt rows as one statement. 1 when sent, 0 when there are
 * none, -1 when the connection broke or memory ran out. */
static int send_attempts(pg_spool *sp, batch *b) {
  arr col[10];
  memset(col, 0, sizeof col);
  int n = 0;
  for (op *o = b->ops; o; o = o->next) {
    if (o->kind != OP_ATTEMPT) continue;
    arr_num(&col[0], o->seq);
    arr_text(&col[1], o->instance);
    arr_num(&col[2], (long long)((o->tries - 1) % SPOOL_ATTEMPTS_KEPT));
    arr_num(&col[3], o->attempt);
    arr_num(&col[4], o->started_ms);
    arr_num(&col[5], o->took_ms);
    arr_text(&col[6], o->error);
    arr_num(&col[7], o->status);
    arr_text(&col[8], o->answer);
    arr_text(&col[9], o->message);
    n++;
  }
  int rc = 0;
  if (n > 0) {
    const char *v[10];
    rc = 1;
    for (int i = 0; i < 10; i++) {
      if ((v[i] = arr_end(&col[i])) == NULL) rc = -1;
    }
    if (rc == 1 && !PQsendQueryPrepared(sp->wconn, "attempts", 10, v, NULL, NULL, 0)) rc = -1;
    if (rc == 1) b->list[b->n++] = (sent){S_ATTEMPTS, NULL};
  }
  for (int i = 0; i < 10; i++) free(col[i].buf);
  return rc;
}

/* Whether o moves its key's head (a done or dead delivery with a key). */
static int moves_head(const op *o) {
  return o->kind == OP_SETTLE && o->state != ST_PENDING && o->key;
}

/* The batch's first statement: the advisory locks of every key it adds a
 * delivery to or moves the head of. Returns 1 when sent, 0 when none are
 * needed, -1 when the connection broke. */
static int send_locks(pg_spool *sp, batch *b) {
  char *buf = NULL;
  size_t len = 1, cap = 0, n = 0;
  int oom = 0;
  for (store_req *r = b->stores; r; r = r->next) {
    if (r->n == 0 || r->ev->order_key == NULL) continue;
    oom |= lit_append(&buf, &len, &cap, r->ev->order_key);
    n++;
  }
  for (op *o = b->ops; o; o = o->next) {
    if (!moves_head(o)) continue;
    oom |= lit_append(&buf, &len, &cap, o->key);
    n++;
  }
  if (n == 0 || oom) {
    free(buf);
    return n == 0 ? 0 : -1;
  }
  buf[0] = '{';
  buf[len] = '}';
  buf[len + 1] = 0;
  const char *v[1] = {buf};
  int ok = PQsendQueryPrepared(sp->wconn, "lock", 1, v, NULL, NULL, 0);
  free(buf);
  if (!ok) return -1;
  b->list[b->n++] = (sent){S_LOCK, NULL};
  return 1;
}

/* Sends the whole batch and a sync. 0, or -1 when the connection broke
 * (nothing commits without the sync). */
static int send_batch(pg_spool *sp, batch *b, int64_t now_ms_) {
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)now_ms_);
  b->n = 0;
  int notify = 0;
  size_t n_start = 0, n_done = 0;
  for (op *o = b->ops; o; o = o->next) {
    n_start += o->kind == OP_START;
    n_done += o->kind == OP_SETTLE && o->state == ST_DONE;
  }
  int64_t *starts = malloc((n_start + 1) * sizeof *starts);
  int64_t *dones = malloc((n_done + 1) * sizeof *dones);
  int ok = starts && dones && PQenterPipelineMode(sp->wconn) == 1 && send_locks(sp, b) >= 0;
  n_start = n_done = 0;
  for (store_req *r = b->stores; ok && r; r = r->next) {
    ok = send_store(sp, r);
    b->list[b->n++] = (sent){S_STORE, r};
    notify |= r->n > 0;
  }
  /* Start marks before outcomes: an attempt that started and ended within
   * one batch must end up not started. */
  for (op *o = b->ops; o; o = o->next) {
    if (o->kind == OP_START) starts[n_start++] = o->id;
  }
  if (ok && n_start) {
    char *lit = ids_literal(starts, n_start);
    const char *v[2] = {lit, sp->node_id};
    ok = lit && PQsendQueryPrepared(sp->wconn, "start", 2, v, NULL, NULL, 0);
    free(lit);
    b->list[b->n++] = (sent){S_START, NULL};
  }
  for (op *o = b->ops; ok && o; o = o->next) {
    if (o->kind == OP_START || o->kind == OP_ATTEMPT) continue;
    ok = send_settle(sp, o, now);
    b->list[b->n++] = (sent){o->kind == OP_UNSTART ? S_UNSTART : S_SETTLE, o};
    if (o->kind == OP_SETTLE && o->state == ST_DONE) dones[n_done++] = o->seq;
    notify |= o->kind == OP_SETTLE && o->notify;
  }
  if (ok) ok = send_attempts(sp, b) >= 0;
  if (ok && n_done) {
    char *lit = ids_literal(dones, n_done);
    const char *v[2] = {lit, now};
    ok = lit && PQsendQueryPrepared(sp->wconn, "evdone", 2, v, NULL, NULL, 0);
    free(lit);
    b->list[b->n++] = (sent){S_EVDONE, NULL};
  }
  /* NOTIFY takes a lock that every notifying commit in the database waits
   * for, held through the commit's flush: in every batch it would make the
   * nodes' commits take turns. This node's claimer is woken directly; the
   * others at most every NOTIFY_MIN_MS. */
  sp->woke |= notify;
  if (ok && notify && clock_mono_ms() >= sp->notify_next) {
    ok = PQsendQueryPrepared(sp->wconn, "notify", 0, NULL, NULL, NULL, 0);
    b->list[b->n++] = (sent){S_NOTIFY, NULL};
    sp->notify_next = clock_mono_ms() + NOTIFY_MIN_MS;
    sp->notify_owed = 0;
  } else if (notify) {
    sp->notify_owed = 1;
  }
  free(starts);
  free(dones);
  return ok && PQpipelineSync(sp->wconn) == 1 ? 0 : -1;
}

/* Start marks that matched no row: the lease had gone to another node,
 * which may run the same attempt (at-least-once). Remembered so that a
 * release drops the delivery instead of keeping it in the window. */
static void note_lost(pg_spool *sp, op *ops, const PGresult *r) {
  pthread_mutex_lock(&sp->mu);
  for (op *o = ops; o; o = o->next) {
    if (o->kind != OP_START) continue;
    int found = 0;
    for (int i = 0; i < PQntuples(r) && !found; i++) {
      found = strtoll(PQgetvalue(r, i, 0), NULL, 10) == o->id;
    }
    if (!found) {
      log_write(HLOG_WARN, NULL,
                "spool: delivery %lld started here after its lease went to another node (it "
                "may be delivered twice)",
                (long long)o->id);
      sp->lost[sp->n_lost++ % LOST_MAX] = o->id;
    }
  }
  pthread_mutex_unlock(&sp->mu);
}

/* One result of the batch: 0, or -1 when it failed (the rest is aborted). */
static int take_result(pg_spool *sp, batch *b, const sent *s, PGresult *r) {
  ExecStatusType st = PQresultStatus(r);
  if (st == PGRES_PIPELINE_ABORTED) return -1;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(b->sqlstate, sizeof b->sqlstate, "%s", code ? code : "");
    snprintf(b->why, sizeof b->why, "%s", PQresultErrorMessage(r));
    one_line(b->why);
    if (s->kind == S_STORE) {
      const store_req *q = s->p;
      log_write(HLOG_ERROR, &(log_ctx){.event_id = q->ev->id},
                "spool: storing the event failed: %s", b->why);
    }
    return -1;
  }
  if (s->kind == S_STORE) {
    store_req *q = s->p;
    q->status = PQntuples(r) == 1 ? SPOOL_STORED : SPOOL_DUPLICATE;
    if (q->status == SPOOL_STORED) q->ev->seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
  } else if (s->kind == S_SETTLE && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "0") == 0) {
    const op *o = s->p;
    log_write(HLOG_WARN, NULL,
              "spool: the outcome of delivery %lld was not recorded: its lease expired and "
              "another node took it over (it may be delivered twice)",
              (long long)o->id);
  }
  (void)sp;
  return 0;
}

/* Reads the batch's results and its sync. BATCH_OK once the sync came back
 * (the transaction committed), BATCH_SQL when a statement failed (rolled
 * back), BATCH_LOST when the connection broke before the sync answered:
 * the commit may or may not have happened. */
static batch_rc read_batch(pg_spool *sp, batch *b) {
  PGconn *c = sp->wconn;
  int failed = 0;
  PGresult *start_res = NULL;
  for (size_t i = 0; i < b->n; i++) {
    PGresult *r = PQgetResult(c);
    if (r == NULL || PQstatus(c) == CONNECTION_BAD) {
      if (!b->why[0]) snprintf(b->why, sizeof b->why, "%s", PQerrorMessage(c));
      PQclear(r);
      PQclear(start_res);
      return BATCH_LOST;
    }
    if (take_result(sp, b, &b->list[i], r) != 0) failed = 1;
    if (b->list[i].kind == S_START && !failed) {
      start_res = r;
    } else {
      PQclear(r);
    }
    while ((r = PQgetResult(c)) != NULL) PQclear(r); /* the NULL that ends each query */
  }
  PGresult *r = PQgetResult(c);
  int synced = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
  PQclear(r);
  if (!synced || PQexitPipelineMode(c) != 1) {
    if (!b->why[0]) snprintf(b->why, sizeof b->why, "%s", PQerrorMessage(c));
    PQclear(start_res);
    return BATCH_LOST;
  }
  if (!failed && start_res) note_lost(sp, b->ops, start_res);
  PQclear(start_res);
  return failed ? BATCH_SQL : BATCH_OK;
}

static batch_rc run_batch(pg_spool *sp, batch *b) {
  b->sqlstate[0] = b->why[0] = 0;
  for (store_req *r = b->stores; r; r = r->next) r->status = SPOOL_EIO;
  if (send_batch(sp, b, clock_now_ms()) != 0) {
    snprintf(b->why, sizeof b->why, "%s", PQerrorMessage(sp->wconn));
    return BATCH_LOST;
  }
  batch_rc rc = read_batch(sp, b);
  /* A store's own result (its seq) comes before the sync: with the
   * connection lost in between, whether it committed is not known, and an
   * event is answered 200 only once its commit is (a retry of the sender
   * finds it a duplicate if it did). */
  if (rc == BATCH_LOST) {
    for (store_req *r = b->stores; r; r = r->next) r->status = SPOOL_EIO;
  }
  return rc;
}

static void drop_connection(pg_spool *sp, const char *why) {
  set_down(sp, why && why[0] ? why : "connection closed");
  PQfinish(sp->wconn);
  sp->wconn = NULL;
}

/* Commits stores and ops. A deadlock between nodes (two batches that
 * insert the same ids in opposite orders) is retried; a batch that fails
 * on its data is split so that one bad event gets its 503 alone. */
static batch_rc commit(pg_spool *sp, store_req *stores, op *ops) {
  batch *b = calloc(1, sizeof *b);
  if (b == NULL) return BATCH_SQL;
  b->stores = stores;
  b->ops = ops;
  batch_rc rc = BATCH_SQL;
  for (int tries = 0; tries < 3; tries++) {
    rc = run_batch(sp, b);
    if (rc != BATCH_SQL || (strcmp(b->sqlstate, "40P01") != 0 && strcmp(b->sqlstate, "40001")))
      break;
  }
  if (rc == BATCH_SQL && stores && (stores->next || ops)) {
    /* Each on its own: the ops, then one store at a time. */
    store_req *next;
    rc = ops ? commit(sp, NULL, ops) : BATCH_OK;
    for (store_req *r = stores; r && rc != BATCH_LOST; r = next) {
      next = r->next;
      r->next = NULL;
      if (commit(sp, r, NULL) == BATCH_LOST) rc = BATCH_LOST;
      r->next = next;
    }
  } else if (rc == BATCH_SQL) {
    log_write(HLOG_ERROR, NULL, "spool: commit failed: %s", b->why);
  }
  if (rc == BATCH_LOST && sp->wconn) drop_connection(sp, b->why);
  if (rc == BATCH_OK) atomic_fetch_add(&sp->commits, 1);
  if (rc != BATCH_OK) atomic_fetch_add(&sp->commit_errors, 1);
  free(b);
  return rc;
}

/* --- the writer's thread ------------------------------------------------------------------ */

static int64_t query_i64(PGconn *c, const char *sql, int n, const char *const *v, int64_t dflt) {
  PGresult *r = PQexecParams(c, sql, n, NULL, v, NULL, NULL, 0);
  int64_t x = dflt;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
    x = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  }
  PQclear(r);
  return x;
}

/* Connects the writer and prepares its statements; 0 or -1. */
static int writer_connect(pg_spool *sp) {
  char why[512];
  PGconn *c = pg_connect(sp->url, "writer", why, sizeof why);
  if (c != NULL && prepare_all(c, 1, why, sizeof why) != 0) {
    PQfinish(c);
    c = NULL;
  }
  if (c == NULL) {
    set_down(sp, why);
    return -1;
  }
  sp->wconn = c;
  set_up(sp);
  return 0;
}

/* Cluster-wide numbers: per-lane unfinished deliveries and the accept time
 * of the oldest, dead letters, the tables' size. */
static void refresh_stats(pg_spool *sp, int sizes) {
  PGresult *r = PQexec(sp->wconn,
                       "SELECT instance, state, count(*), (SELECT received_ms FROM hookd_events e "
                       "WHERE e.seq = min(d.seq)) FROM hookd_deliveries d WHERE state <> 1 GROUP "
                       "BY instance, state");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    PQclear(r);
    return;
  }
  uint64_t pending = 0, dead = 0;
  int64_t oldest = INT64_MAX;
  for (int i = 0; i < PQntuples(r); i++) {
    uint64_t n = strtoull(PQgetvalue(r, i, 2), NULL, 10);
    int64_t first = strtoll(PQgetvalue(r, i, 3), NULL, 10);
    if (strcmp(PQgetvalue(r, i, 1), "0") == 0) {
      pending += n;
      if (first && first < oldest) oldest = first;
    } else {
      dead += n;
    }
  }
  pthread_mutex_lock(&sp->lanes_mu);
  for (pg_lane *l = sp->lanes; l; l = l->next) {
    uint64_t n = 0;
    int64_t first = 0;
    for (int i = 0; i < PQntuples(r); i++) {
      if (strcmp(PQgetvalue(r, i, 1), "0") == 0 && strcmp(PQgetvalue(r, i, 0), l->lb.name) == 0) {
        n = strtoull(PQgetvalue(r, i, 2), NULL, 10);
        first = strtoll(PQgetvalue(r, i, 3), NULL, 10);
      }
    }
    atomic_store(&l->pending, n);
    atomic_store(&l->oldest_ms, first);
  }
  pthread_mutex_unlock(&sp->lanes_mu);
  PQclear(r);
  atomic_store(&sp->pending, pending);
  atomic_store(&sp->dead, dead);
  atomic_store(&sp->oldest_pending_ms, oldest == INT64_MAX ? 0 : oldest);
  if (sizes) {
    int64_t bytes = query_i64(sp->wconn,
                              "SELECT pg_total_relation_size('hookd_events') + "
                              "pg_total_relation_size('hookd_deliveries')",
                              0, NULL, 0);
    atomic_store(&sp->db_bytes, (uint64_t)bytes);
  }
}

/* Marks done the events whose deliveries two nodes finished at once (each
 * saw the other's still pending), a slice at a time, and deletes finished
 * events past retention. Any node may run it; SKIP LOCKED keeps two from
 * waiting on each other. */
static void prune(pg_spool *sp) {
  char after[24], now[24], before[24];
  snprintf(after, sizeof after, "%lld", (long long)sp->sweep_after);
  snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
  snprintf(before, sizeof before, "%lld", (long long)(clock_now_ms() - sp->retention_ms));
  const char *v[2] = {after, now};
  sp->sweep_after = query_i64(
      sp->wconn,
      "WITH s AS (SELECT seq FROM hookd_events WHERE done_ms IS NULL AND seq > $1 ORDER BY seq "
      "LIMIT 1000), u AS (UPDATE hookd_events e SET done_ms = $2 FROM s WHERE e.seq = s.seq AND "
      "NOT EXISTS (SELECT 1 FROM hookd_deliveries d WHERE d.seq = e.seq AND d.state <> 1) "
      "RETURNING e.seq) SELECT (SELECT max(seq) FROM s) + 0 * (SELECT count(*) FROM u)",
      2, v, 0);
  const char *p[1] = {before};
  for (int i = 0; i < 10; i++) {
    int64_t n = query_i64(
        sp->wconn,
        "WITH p AS (SELECT seq FROM hookd_events WHERE done_ms IS NOT NULL AND done_ms < $1 "
        "ORDER BY done_ms LIMIT 500 FOR UPDATE SKIP LOCKED), "
        "dd AS (DELETE FROM hookd_deliveries WHERE seq IN (SELECT seq FROM p)), "
        "da AS (DELETE FROM hookd_attempts WHERE seq IN (SELECT seq FROM p)), "
        "de AS (DELETE FROM hookd_events WHERE seq IN (SELECT seq FROM p) RETURNING 1) "
        "SELECT count(*) FROM de",
        1, p, 0);
    if (n < PRUNE_BATCH) break;
  }
  /* Back-fills are kept for their progress as long as their events. */
  PQclear(PQexecParams(sp->wconn, "DELETE FROM hookd_backfills WHERE finished_ms < $1::int8", 1,
                       NULL, p, NULL, NULL, 0));
}

/* Renews this node's leases and its row in hookd_nodes. */
/* Pruning runs every 10 s, or twice per retention when that is shorter. */
static int64_t prune_every(const pg_spool *sp) {
  int64_t half = sp->retention_ms / 2;
  return half < 500 ? 500 : half < PRUNE_MS ? half : PRUNE_MS;
}

/* The keys whose pending deliveries have no head: none, unless a row was
 * changed by hand or a bug slipped in; nothing of such a key would ever be
 * claimed again. */
#define NO_HEAD_SQL                                                                          \
  "SELECT DISTINCT d.instance, d.order_key FROM hookd_deliveries d WHERE d.state = 0 AND"    \
  " d.order_key IS NOT NULL AND NOT d.head AND NOT EXISTS (SELECT 1 FROM hookd_deliveries h" \
  " WHERE h.instance = d.instance AND h.order_key = d.order_key AND h.state = 0 AND h.head)"

/* Gives such keys their head back (the earliest pending delivery), under
 * the keys' locks, rechecked there. Once a minute, on any node. */
static void repair_heads(pg_spool *sp) {
  PGresult *r = PQexec(sp->wconn, "SELECT order_key FROM (" NO_HEAD_SQL ") k LIMIT 100");
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) == 0) {
    PQclear(r);
    return;
  }
  char *buf = NULL;
  size_t len = 1, cap = 0;
  int oom = 0;
  for (int i = 0; i < PQntuples(r); i++) oom |= lit_append(&buf, &len, &cap, PQgetvalue(r, i, 0));
  PQclear(r);
  if (oom) {
    free(buf);
    return;
  }
  buf[0] = '{';
  buf[len] = '}';
  buf[len + 1] = 0;
  const char *v[1] = {buf};
  char why[256] = "";
  PGresult *u = NULL;
  if (exec_ok(sp->wconn, "BEGIN", why, sizeof why) == 0) {
    PQclear(PQexecPrepared(sp->wconn, "lock", 1, v, NULL, NULL, 0));
    u = PQexecParams(sp->wconn,
                     "UPDATE hookd_deliveries d SET head = true FROM (SELECT DISTINCT ON"
                     " (instance, order_key) id FROM hookd_deliveries x WHERE state = 0 AND"
                     " order_key = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM hookd_deliveries"
                     " h WHERE h.instance = x.instance AND h.order_key = x.order_key AND"
                     " h.state = 0 AND h.head) ORDER BY instance, order_key, seq) f WHERE"
                     " d.id = f.id",
                     1, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(u) == PGRES_COMMAND_OK &&
        exec_ok(sp->wconn, "COMMIT", why, sizeof why) == 0) {
      if (strcmp(PQcmdTuples(u), "0") != 0) {
        log_write(HLOG_WARN, NULL,
                  "spool: %s order key(s) had pending deliveries and none was their head; the "
                  "earliest of each is now",
                  PQcmdTuples(u));
      }
    } else {
      exec_ok(sp->wconn, "ROLLBACK", why, sizeof why);
    }
  }
  PQclear(u);
  free(buf);
}

/* Back-fills (`hookd replay`) become deliveries a batch at a time: at most
 * this many per transaction, and this many batches (or BACKFILL_TURN_MS)
 * per housekeeping turn, so that the writer's stores wait little. */
#define BACKFILL_BATCH "500"
#define BACKFILL_BATCHES 8
#define BACKFILL_TURN_MS 200
/* The advisory lock that lets one node at a time work on back-fills
 * (batches of one back-fill must go in seq order). */
#define BACKFILL_LOCK "26732, 0"

/* Runs one statement of the back-fill's transaction: its result (tuples or
 * done), or NULL after logging why and rolling back. */
static PGresult *bf_step(pg_spool *sp, const char *sql, int n, const char *const *v,
                         const char *instance, int64_t id) {
  PGresult *r = PQexecParams(sp->wconn, sql, n, NULL, v, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return r;
  char why[256];
  snprintf(why, sizeof why, "%s", PQresultErrorMessage(r));
  one_line(why);
  PQclear(r);
  log_write(HLOG_ERROR, &(log_ctx){.instance = instance}, "spool: back-fill %lld failed: %s",
            (long long)id, why);
  PQclear(PQexec(sp->wconn, "ROLLBACK"));
  return NULL;
}

/* The keys' advisory locks of a back-fill's next batch ($1: its id). */
static const char backfill_lock_sql[] =
    "SELECT count(pg_advisory_xact_lock(" KEY_LOCK_CLASS
    ", h)) FROM (SELECT DISTINCT"
    " hashtext(e.order_key) AS h FROM (SELECT seq FROM hookd_backfill_events WHERE backfill ="
    " $1::int8 ORDER BY seq LIMIT " BACKFILL_BATCH
    ") b JOIN hookd_events e ON e.seq = b.seq"
    " WHERE e.order_key IS NOT NULL ORDER BY 1) s";

/* The batch ($1 the back-fill, $2 its instance, $3 now): its events leave
 * hookd_backfill_events, are open again, and get a delivery each; a new
 * delivery heads its key when it is the key's first in the batch and the
 * key has no pending delivery of the instance; tries carries on from an
 * earlier delivery of the (event, instance). Returns how many it made and
 * whether the back-fill is finished, and wakes the nodes. */
static const char backfill_sql[] =
    "WITH b AS (DELETE FROM hookd_backfill_events WHERE backfill = $1::int8 AND"
    " seq IN (SELECT seq FROM hookd_backfill_events WHERE backfill = $1::int8"
    " ORDER BY seq LIMIT " BACKFILL_BATCH
    ") RETURNING seq),"
    " ev AS (UPDATE hookd_events e SET done_ms = NULL FROM b WHERE e.seq = b.seq"
    " RETURNING e.seq, e.order_key),"
    " ins AS (INSERT INTO hookd_deliveries(seq, instance, order_key, next_ms,"
    " updated_ms, head, replay, tries) SELECT ev.seq, $2, ev.order_key,"
    " $3::int8, $3::int8, ev.order_key IS NULL OR (row_number() OVER (PARTITION"
    " BY ev.order_key ORDER BY ev.seq) = 1 AND NOT EXISTS (SELECT 1 FROM"
    " hookd_deliveries p WHERE p.instance = $2 AND p.order_key = ev.order_key"
    " AND p.state = 0)), $1::int8, (SELECT coalesce(max(p.tries), 0) FROM"
    " hookd_deliveries p WHERE p.seq = ev.seq AND p.instance = $2) FROM ev"
    " ORDER BY ev.seq RETURNING 1),"
    " u AS (UPDATE hookd_backfills SET queued = queued + (SELECT count(*) FROM"
    " ins), finished_ms = CASE WHEN (SELECT count(*) FROM hookd_backfill_events"
    " x WHERE x.backfill = $1::int8) = (SELECT count(*) FROM b) THEN $3::int8"
    " END WHERE id = $1::int8 RETURNING finished_ms IS NOT NULL AS finished)"
    " SELECT (SELECT count(*) FROM ins), (SELECT finished FROM u),"
    " pg_notify('" NOTIFY_CHANNEL "', '')";

/* One batch of the oldest unfinished back-fill: its next events (in seq
 * order) become pending deliveries of its instance, under their keys'
 * locks, each key's first one its head when the key has no pending
 * delivery of that instance (as store does); the events are open again
 * (not pruned while a delivery waits). Returns how many deliveries it
 * made, 0 when there is nothing to do here (none, or another node works
 * on it), -1 on error. */
static int64_t backfill_batch(pg_spool *sp) {
  /* Nothing to do (nearly always): one round trip, no transaction. */
  if (query_i64(sp->wconn, "SELECT count(*) FROM hookd_backfills WHERE finished_ms IS NULL", 0,
                NULL, 0) <= 0) {
    return 0;
  }
  PGresult *r = PQexec(sp->wconn,
                       "BEGIN; SELECT b.id, b.instance FROM hookd_backfills b WHERE"
                       " b.finished_ms IS NULL AND pg_try_advisory_xact_lock(" BACKFILL_LOCK
                       ") ORDER BY b.id LIMIT 1");
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) == 0) {
    PQclear(r);
    PQclear(PQexec(sp->wconn, "ROLLBACK"));
    return 0;
  }
  int64_t id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  char ids[24], now[24], *instance = strdup(PQgetvalue(r, 0, 1));
  PQclear(r);
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
  const char *v[3] = {ids, instance, now};
  if (instance == NULL) {
    PQclear(PQexec(sp->wconn, "ROLLBACK"));
    return -1;
  }
  PGresult *locks = bf_step(sp, backfill_lock_sql, 1, v, instance, id);
  r = locks ? bf_step(sp, backfill_sql, 3, v, instance, id) : NULL;
  PQclear(locks);
  int64_t made = -1;
  if (r && PQntuples(r) == 1) {
    made = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    int finished = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    PGresult *c = bf_step(sp, "COMMIT", 0, NULL, instance, id);
    if (c == NULL) made = -1;
    PQclear(c);
    if (made >= 0 && finished) {
      log_write(HLOG_INFO, &(log_ctx){.instance = instance},
                "spool: back-fill %lld queued all its deliveries", (long long)id);
    }
    /* A back-fill whose events were all pruned made nothing but is
     * finished: the next one may follow in the same turn. */
    if (made == 0 && finished) made = 1;
  } else if (r) {
    PQclear(PQexec(sp->wconn, "ROLLBACK"));
  }
  PQclear(r);
  free(instance);
  return made;
}

/* Up to BACKFILL_BATCHES batches, on any node; this node's claimer is
 * woken for what it made (the others by the NOTIFY). */
static void take_backfills(pg_spool *sp) {
  int64_t until = clock_mono_ms() + BACKFILL_TURN_MS;
  int made = 0;
  for (int i = 0; i < BACKFILL_BATCHES && clock_mono_ms() < until; i++) {
    int64_t n = backfill_batch(sp);
    if (n <= 0) break;
    made = 1;
  }
  if (made) kick(sp);
}

typedef struct hk_clock {
  int64_t stats, prune, repair, backfill;
} hk_clock;

static void housekeeping(pg_spool *sp, hk_clock *t) {
  int64_t now = clock_mono_ms();
  if (now >= t->stats) {
    int sizes = now >= t->prune;
    t->stats = now + STATS_MS;
    refresh_stats(sp, sizes);
  }
  if (now >= t->prune) {
    t->prune = now + prune_every(sp);
    prune(sp);
  }
  if (now >= t->repair) {
    t->repair = now + REPAIR_MS;
    repair_heads(sp);
  }
  if (now >= t->backfill) {
    t->backfill = now + HOUSEKEEPING_MS;
    take_backfills(sp);
  }
  if (sp->wconn && PQstatus(sp->wconn) == CONNECTION_BAD)
    drop_connection(sp, PQerrorMessage(sp->wconn));
}

/* Appends the requests first..last (linked by next) to the queue *head,
 * *tail. Caller holds sp->mu. */
static void reqs_append(store_req **head, store_req **tail, store_req *first, store_req *last) {
  *(*tail ? &(*tail)->next : head) = first;
  *tail = last;
}

/* Hands finished stores back to the loop thread. */
static void post_stores(pg_spool *sp, store_req *list) {
  if (list == NULL) return;
  store_req *last = list;
  while (last->next) last = last->next;
  pthread_mutex_lock(&sp->mu);
  reqs_append(&sp->out_head, &sp->out_tail, list, last);
  pthread_mutex_unlock(&sp->mu);
  uv_async_send(&sp->async);
}

/* The ops of a batch that did not commit, to be kept: outcomes. Start
 * marks are dropped: by the time the connection is back the attempt may
 * well have ended, and a late mark would count a crash that never was. */
static op *drop_starts(op *ops) {
  op *keep = NULL, **tail = &keep;
  while (ops) {
    op *o = ops;
    ops = o->next;
    o->next = NULL;
    if (o->kind == OP_START) {
      free(o);
    } else {
      *tail = o;
      tail = &o->next;
    }
  }
  return keep;
}

static void requeue_ops(pg_spool *sp, op *ops) {
  if (ops == NULL) return;
  op *last = ops;
  size_t n = 1;
  while (last->next) {
    last = last->next;
    n++;
  }
  pthread_mutex_lock(&sp->mu);
  last->next = sp->ops_head;
  sp->ops_head = ops;
  if (sp->ops_tail == NULL) sp->ops_tail = last;
  sp->n_ops += n;
  pthread_mutex_unlock(&sp->mu);
}

static void free_ops(op *ops) {
  while (ops) {
    op *next = ops->next;
    free(ops->call);
    free(ops);
    ops = next;
  }
}

/* Takes up to BATCH_MAX stores and ops off the queues (sp->mu held). Stores
 * already answered (past their deadline) are handed straight back. */
static void take_work(pg_spool *sp, store_req **stores, op **ops, store_req **expired) {
  store_req **st = stores;
  size_t n = 0;
  while (sp->in_head && n < BATCH_MAX / 2) {
    store_req *r = sp->in_head;
    sp->in_head = r->next;
    r->next = NULL;
    if (atomic_load(&r->answered)) {
      r->next = *expired;
      *expired = r;
      continue;
    }
    *st = r;
    st = &r->next;
    n++;
  }
  if (sp->in_head == NULL) sp->in_tail = NULL;
  op **ot = ops;
  while (sp->ops_head && n < BATCH_MAX) {
    op *o = sp->ops_head;
    sp->ops_head = o->next;
    o->next = NULL;
    *ot = o;
    ot = &o->next;
    n++;
    sp->n_ops--;
  }
  if (sp->ops_head == NULL) sp->ops_tail = NULL;
  sp->urgent = sp->in_head != NULL || sp->ops_head != NULL;
}

/* Waits for work, a housekeeping tick or a reconnect attempt (sp->mu held). */
static void writer_wait(pg_spool *sp, int64_t until) {
  if (sp->in_head || sp->urgent || sp->stopping) return;
  int64_t ms = until - clock_mono_ms();
  if (ms <= 0) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(&sp->cv, &sp->mu, &ts);
}

/* While PostgreSQL is unreachable: start marks fail at once, stores wait
 * for a reconnect until the loop answers them 503. */
static void writer_down(pg_spool *sp) {
  pthread_mutex_lock(&sp->mu);
  op *ops = sp->ops_head;
  sp->ops_head = sp->ops_tail = NULL;
  sp->n_ops = 0;
  store_req *expired = NULL, **pp = &sp->in_head;
  sp->in_tail = NULL;
  while (*pp) {
    store_req *r = *pp;
    if (atomic_load(&r->answered) || sp->stopping) {
      *pp = r->next;
      r->next = expired;
      expired = r;
    } else {
      sp->in_tail = r;
      pp = &r->next;
    }
  }
  pthread_mutex_unlock(&sp->mu);
  ops = drop_starts(ops);
  if (sp->stopping) {
    free_ops(ops); /* their deliveries run again once their leases expire */
  } else {
    requeue_ops(sp, ops);
  }
  post_stores(sp, expired);
}

/* Gives this node's unstarted claims back at a clean stop, so that other
 * nodes take them at once instead of after the lease; and leaves the list
 * of nodes. */
static void leave(pg_spool *sp) {
  const char *v[1] = {sp->node_id};
  PGresult *r = PQexecParams(sp->wconn,
                             "WITH u AS (UPDATE hookd_deliveries SET lease_until = 0 WHERE "
                             "lease_owner = $1 AND state = 0 AND lease_until > 0 AND NOT started "
                             "RETURNING 1), n AS (DELETE FROM hookd_nodes WHERE id = $1) "
                             "SELECT pg_notify('" NOTIFY_CHANNEL
                             "', '') FROM (SELECT count(*) "
                             "FROM u) x",
                             1, NULL, v, NULL, NULL, 0);
  PQclear(r);
}

static void *writer_main(void *arg) {
  pg_spool *sp = arg;
  /* Repairs at start, then each minute. */
  hk_clock hk = {0, clock_mono_ms() + prune_every(sp), 0, 0};
  int64_t backoff = BACKOFF_FIRST_MS, next_connect = 0;
  for (;;) {
    atomic_store(&sp->writer_beat, clock_mono_ms());
    pthread_mutex_lock(&sp->mu);
    int64_t until = clock_mono_ms() + HOUSEKEEPING_MS;
    if (sp->notify_owed && sp->notify_next < until) until = sp->notify_next;
    if (sp->wconn == NULL) until = next_connect;
    writer_wait(sp, until);
    int stopping = sp->stopping;
    int waiting = sp->in_head != NULL;
    pthread_mutex_unlock(&sp->mu);
    if (sp->wconn == NULL) {
      /* A request waiting for its answer is worth a try every 100 ms. */
      if (clock_mono_ms() >= next_connect ||
          (waiting && clock_mono_ms() >= next_connect - backoff + BACKOFF_FIRST_MS)) {
        if (writer_connect(sp) == 0) {
          backoff = BACKOFF_FIRST_MS;
        } else {
          next_connect = clock_mono_ms() + backoff;
          backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        }
      }
      if (sp->wconn == NULL) {
        writer_down(sp);
        if (stopping) break;
        if (waiting && next_connect > clock_mono_ms() + BACKOFF_FIRST_MS)
          next_connect = clock_mono_ms() + BACKOFF_FIRST_MS;
        continue;
      }
    }
    store_req *stores = NULL, *expired = NULL;
    op *ops = NULL;
    pthread_mutex_lock(&sp->mu);
    take_work(sp, &stores, &ops, &expired);
    pthread_mutex_unlock(&sp->mu);
    post_stores(sp, expired);
    if (stores || ops) {
      sp->woke = 0;
      batch_rc rc = commit(sp, stores, ops);
      if (sp->woke && rc != BATCH_LOST) kick(sp); /* this node claims at once */
      if (rc == BATCH_LOST && !stopping) {
        requeue_ops(sp, drop_starts(ops));
      } else {
        free_ops(ops);
      }
      post_stores(sp, stores);
      if (sp->wconn) housekeeping(sp, &hk); /* under load too, when due */
      continue;                             /* more may have come meanwhile */
    }
    if (stopping) {
      leave(sp);
      break;
    }
    if (sp->notify_owed && clock_mono_ms() >= sp->notify_next) {
      sp->notify_owed = 0;
      sp->notify_next = clock_mono_ms() + NOTIFY_MIN_MS;
      PQclear(PQexecPrepared(sp->wconn, "notify", 0, NULL, NULL, NULL, 0));
    }
    housekeeping(sp, &hk);
  }
  return NULL;
}

/* --- the loop side ------------------------------------------------------------------------- */

static void finish_store(pg_spool *sp, store_req *r, int status) {
  (void)sp;
  if (atomic_exchange(&r->answered, 1)) return;
  if (status == SPOOL_STORED) {
    for (size_t i = 0; i < r->n; i++) atomic_fetch_add(&r->lanes[i]->pending, 1);
    atomic_fetch_add(&sp->pending, r->n);
  }
  r->done(r->data, status);
}

/* Unlinks r from the loop's list of unanswered requests. */
static void unlist(pg_spool *sp, store_req *r) {
  for (store_req **pp = &sp->unanswered; *pp; pp = &(*pp)->all_next) {
    if (*pp == r) {
      *pp = r->all_next;
      return;
    }
  }
}

static void free_store(store_req *r) {
  event_unref(r->ev);
  free(r->lanes_lit);
  free(r->lanes);
  free(r);
}

static void on_async(uv_async_t *h) {
  pg_spool *sp = h->data;
  pthread_mutex_lock(&sp->mu);
  store_req *done = sp->out_head;
  sp->out_head = sp->out_tail = NULL;
  pthread_mutex_unlock(&sp->mu);
  while (done) {
    store_req *r = done;
    done = r->next;
    unlist(sp, r);
    finish_store(sp, r, r->status);
    free_store(r);
  }
}

/* Requests that waited STORE_WAIT_MS get their 503 now; the writer hands
 * them back (and drops them unsent) later. */
static void on_deadlines(uv_timer_t *t) {
  pg_spool *sp = t->data;
  int64_t now = clock_mono_ms();
  for (store_req *r = sp->unanswered; r; r = r->all_next) {
    if (now >= r->deadline && !atomic_load(&r->answered)) {
      log_write(HLOG_WARN, &(log_ctx){.event_id = r->ev->id},
                "spool: no commit within %d ms (PostgreSQL slow or unreachable): 503",
                STORE_WAIT_MS);
      finish_store(sp, r, SPOOL_EIO);
    }
  }
}

static int pg_store(spool *base, event *ev, spool_lane *const *lanes, size_t n,
                    spool_stored_fn done, void *data) {
  pg_spool *sp = (pg_spool *)base;
  store_req *r = calloc(1, sizeof *r);
  if (r == NULL) return SPOOL_EFAIL;
  r->lanes_lit = lanes_literal(lanes, n);
  r->lanes = n ? malloc(n * sizeof *lanes) : NULL;
  if (r->lanes_lit == NULL || (n && r->lanes == NULL)) {
    free(r->lanes_lit);
    free(r->lanes);
    free(r);
    return SPOOL_EFAIL;
  }
  if (n) memcpy(r->lanes, lanes, n * sizeof *lanes);
  event_ref(ev);
  r->ev = ev;
  r->n = n;
  r->done = done;
  r->data = data;
  r->status = SPOOL_EIO;
  r->deadline = clock_mono_ms() + STORE_WAIT_MS;
  r->all_next = sp->unanswered;
  sp->unanswered = r;
  pthread_mutex_lock(&sp->mu);
  reqs_append(&sp->in_head, &sp->in_tail, r, r);
  pthread_cond_signal(&sp->cv);
  pthread_mutex_unlock(&sp->mu);
  return 0;
}

static const char *pg_admit(spool *base, spool_lane *const *lanes, size_t n, char *why,
                            size_t len) {
  pg_spool *sp = (pg_spool *)base;
  /* The first second of an outage, requests wait for a reconnect; after
   * that they get their 503 at once. */
  if (atomic_load(&sp->down) && clock_mono_ms() - atomic_load(&sp->down_since) >= STORE_WAIT_MS) {
    pthread_mutex_lock(&sp->why_mu);
    snprintf(why, len, "PostgreSQL unreachable: %s", sp->down_why);
    pthread_mutex_unlock(&sp->why_mu);
    return why;
  }
  uint64_t total = atomic_load(&sp->pending);
  if (sp->max_total && total >= sp->max_total) {
    snprintf(why, len, "%llu unfinished deliveries in the spool (spool.max_pending %llu)",
             (unsigned long long)total, (unsigned long long)sp->max_total);
    return why;
  }
  for (size_t i = 0; i < n; i++) {
    pg_lane *l = (pg_lane *)lanes[i];
    uint64_t p = atomic_load(&l->pending);
    if (l->lb.cfg.max_pending && p >= l->lb.cfg.max_pending) {
      snprintf(why, len, "plugin instance '%s' has %llu unfinished deliveries (max_pending %llu)",
               l->lb.name, (unsigned long long)p, (unsigned long long)l->lb.cfg.max_pending);
      return why;
    }
  }
  return NULL;
}

static int pg_seen(spool *base, const char *source, const char *id) {
  /* No cache of recent ids: a resend is rare, and the UNIQUE constraint
   * answers it in the same round trip as a store. */
  (void)base;
  (void)source;
  (void)id;
  return 0;
}

static void pg_stats(spool *base, spool_stats *out) {
  pg_spool *sp = (pg_spool *)base;
  memset(out, 0, sizeof *out);
  out->pending = atomic_load(&sp->pending);
  out->dead = atomic_load(&sp->dead);
  out->db_bytes = atomic_load(&sp->db_bytes);
  out->commits = atomic_load(&sp->commits);
  out->commit_errors = atomic_load(&sp->commit_errors);
  out->oldest_pending_ms = atomic_load(&sp->oldest_pending_ms);
  out->crashes = atomic_load(&sp->crashes);
  out->writer_beat_ms = atomic_load(&sp->writer_beat);
  pthread_mutex_lock(&sp->lanes_mu);
  for (pg_lane *l = sp->lanes; l; l = l->next) {
    pthread_mutex_lock(&l->lb.mu);
    out->in_memory += l->n_window;
    pthread_mutex_unlock(&l->lb.mu);
  }
  pthread_mutex_unlock(&sp->lanes_mu);
}

/* --- the claimer ------------------------------------------------------------------------------ */

static int64_t be64(const char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return (int64_t)be64toh(v);
}

static int32_t be32(const char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return (int32_t)be32toh(v);
}

/* Renews this node's leases and its row in hookd_nodes, every third of a
 * lease. On the claimer's connection, not the writer's: a writer busy with
 * a long run of commits must not let the leases of running deliveries
 * lapse. Rows the writer has locked (a start mark or an outcome on its way)
 * are left for the next round rather than waited for: waiting would make
 * a deadlock with the writer's batch. -1 when the connection broke. */
static int renew(pg_spool *sp) {
  char lease[24], now[24];
  snprintf(lease, sizeof lease, "%lld", (long long)sp->lease_ms);
  snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
  const char *v[3] = {sp->node_id, lease, now};
  PGresult *r =
      PQexecParams(sp->cconn,
                   "WITH r AS (UPDATE hookd_deliveries SET lease_until = " SQL_NOW
                   " + $2::int8 WHERE id IN (SELECT id FROM hookd_deliveries WHERE"
                   " lease_owner = $1 AND state = 0 AND lease_until > 0 FOR UPDATE SKIP"
                   " LOCKED) RETURNING 1) UPDATE hookd_nodes SET seen_ms = $3 WHERE id = $1 AND"
                   " (SELECT count(*) FROM r) >= 0",
                   3, NULL, v, NULL, NULL, 0);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok && PQstatus(sp->cconn) != CONNECTION_BAD) {
    log_write(HLOG_ERROR, NULL, "spool: renewing leases failed: %s", PQresultErrorMessage(r));
  }
  PQclear(r);
  return ok || PQstatus(sp->cconn) != CONNECTION_BAD ? 0 : -1;
}

/* Takes out of the windows the claimed deliveries that are no longer this
 * node's (their lease lapsed during an outage and another node took them,
 * or they finished there), so that they do not run here a second time.
 * Right after renew(), which kept every lease still ours. -1 when the
 * connection broke. */
static int drop_lost(pg_spool *sp) {
  int64_t ids[256];
  size_t n = 0;
  pthread_mutex_lock(&sp->lanes_mu);
  pg_lane *lanes = sp->lanes;
  pthread_mutex_unlock(&sp->lanes_mu);
  for (pg_lane *l = lanes; l; l = l->next) {
    pthread_mutex_lock(&l->lb.mu);
    for (size_t i = 0; i < l->n_window && n < 256; i++) ids[n++] = (int64_t)l->window[i]->spool_id;
    pthread_mutex_unlock(&l->lb.mu);
  }
  if (n == 0) return 0;
  char *lit = ids_literal(ids, n);
  if (lit == NULL) return 0;
  const char *v[2] = {lit, sp->node_id};
  PGresult *r = PQexecParams(sp->cconn,
                             "SELECT id FROM hookd_deliveries WHERE id = ANY($1::int8[]) AND"
                             " (state <> 0 OR lease_owner IS DISTINCT FROM $2)",
                             2, NULL, v, NULL, NULL, 0);
  free(lit);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    PQclear(r);
    return PQstatus(sp->cconn) == CONNECTION_BAD ? -1 : 0;
  }
  for (int i = 0; i < PQntuples(r); i++) {
    uint64_t id = strtoull(PQgetvalue(r, i, 0), NULL, 10);
    for (pg_lane *l = lanes; l; l = l->next) {
      delivery *gone = NULL;
      pthread_mutex_lock(&l->lb.mu);
      for (size_t k = 0; k < l->n_window && !gone; k++) {
        if (l->window[k]->spool_id != id) continue;
        gone = l->window[k];
        l->window[k] = l->window[--l->n_window];
      }
      pthread_mutex_unlock(&l->lb.mu);
      if (gone) {
        log_write(HLOG_WARN, &(log_ctx){.instance = l->lb.name, .event_id = gone->ev->id},
                  "spool: delivery %llu went to another node while PostgreSQL could not renew "
                  "this node's lease; not running it here",
                  (unsigned long long)id);
        delivery_free(gone);
      }
    }
  }
  PQclear(r);
  return 0;
}

static int claimer_connect(pg_spool *sp) {
  char why[512];
  PGconn *c = pg_connect(sp->url, "claimer", why, sizeof why);
  if (c && (prepare_all(c, 0, why, sizeof why) != 0 ||
            exec_ok(c, "LISTEN " NOTIFY_CHANNEL, why, sizeof why) != 0)) {
    PQfinish(c);
    c = NULL;
  }
  if (c == NULL) {
    log_write(HLOG_DEBUG, NULL, "spool: claimer cannot connect: %s", why);
    return -1;
  }
  sp->cconn = c;
  return 0;
}

/* A claimed row (binary results, columns of claim_sql) as a delivery. */
static delivery *row_delivery(const PGresult *r, int i, pg_lane *l) {
  const char *key = PQgetisnull(r, i, 8) ? NULL : PQgetvalue(r, i, 8);
  event *ev = event_new(PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7), key,
                        PQgetvalue(r, i, 9), PQgetvalue(r, i, 11), (size_t)PQgetlength(r, i, 11),
                        NULL, be64(PQgetvalue(r, i, 10)));
  if (ev == NULL) return NULL;
  ev->seq = (uint64_t)be64(PQgetvalue(r, i, 1));
  delivery *d = delivery_new(ev, l);
  event_unref(ev);
  if (d == NULL) return NULL;
  d->spool_id = (uint64_t)be64(PQgetvalue(r, i, 0));
  d->attempt = (uint32_t)be32(PQgetvalue(r, i, 2));
  d->crashes = (uint32_t)be32(PQgetvalue(r, i, 3));
  d->due_ms = be64(PQgetvalue(r, i, 4));
  d->tries = (uint32_t)be32(PQgetvalue(r, i, 13));
  return d;
}

/* A claimed delivery whose attempt was running when its node died: a
 * crash. At the instance's max_crashes it becomes a dead letter instead of
 * running again. Returns 1 when it was dead-lettered (and taken). */
static int crashed(pg_spool *sp, pg_lane *l, delivery *d, uint32_t max_crashes) {
  atomic_fetch_add(&sp->crashes, 1);
  log_ctx ctx = {.instance = l->lb.name, .event_id = d->ev->id};
  if (d->crashes < max_crashes) {
    log_write(HLOG_WARN, &ctx,
              "delivery %llu was running when its node stopped (crash %u of %u): running it again",
              (unsigned long long)d->spool_id, d->crashes, max_crashes);
    return 0;
  }
  char why[160];
  snprintf(why, sizeof why, "running when hookd died %u times (delivery.max_crashes)", d->crashes);
  log_write(HLOG_ERROR, &ctx, "delivery %llu is a dead letter: %s", (unsigned long long)d->spool_id,
            why);
  op *o = op_new(OP_SETTLE, d, ST_DEAD, why);
  if (o) {
    o->notify = 1;
    count_down(&sp->pending);
    count_down(&l->pending);
    atomic_fetch_add(&sp->dead, 1);
    push_op(sp, o, 1);
  }
  delivery_free(d);
  return 1;
}

/* Every lane's pause from hookd_instances (lanes of paused instances are
 * created, so that the instance's lane starts paused). At open (on the
 * writer's connection, before anything is claimed), at the claimer's
 * (re)connect, on a NOTIFY that says "instances", and every second: a
 * change made on any node or by the CLI applies here within milliseconds,
 * or a second when a NOTIFY was missed during a reconnect. -1 when the
 * connection broke. */
static int load_states(pg_spool *sp, PGconn *c) {
  pthread_mutex_lock(&sp->states_mu);
  unsigned gen = sp->states_gen;
  pthread_mutex_unlock(&sp->states_mu);
  PGresult *r =
      PQexec(c, "SELECT instance, paused, updated_ms, circuit_open_until, hold_until, " SQL_NOW
                " FROM hookd_instances");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    PQclear(r);
    return PQstatus(c) == CONNECTION_BAD ? -1 : 0;
  }
  pthread_mutex_lock(&sp->states_mu);
  if (gen != sp->states_gen || (gen & 1)) {
    pthread_mutex_unlock(&sp->states_mu);
    PQclear(r);
    atomic_store(&sp->states_changed, 1); /* again, after the change */
    return 0;
  }
  pthread_mutex_lock(&sp->lanes_mu);
  for (pg_lane *l = sp->lanes; l; l = l->next) l->state_seen = 0;
  pthread_mutex_unlock(&sp->lanes_mu);
  int64_t local_now = clock_now_ms();
  for (int i = 0; i < PQntuples(r); i++) {
    int paused = strcmp(PQgetvalue(r, i, 1), "t") == 0;
    int64_t circuit = strtoll(PQgetvalue(r, i, 3), NULL, 10);
    int64_t hold = strtoll(PQgetvalue(r, i, 4), NULL, 10);
    int64_t server_now = strtoll(PQgetvalue(r, i, 5), NULL, 10);
    if (hold <= server_now) hold = 0; /* over: as if none */
    pg_lane *l =
        paused || circuit || hold ? (pg_lane *)pg_lane_get(&sp->base, PQgetvalue(r, i, 0)) : NULL;
    if (l == NULL) continue; /* nothing held: as if it had no row */
    l->state_seen = 1;
    lane_set_paused(l, paused, paused ? strtoll(PQgetvalue(r, i, 2), NULL, 10) : 0);
    lane_set_holds(l, circuit, hold, server_now, local_now);
  }
  PQclear(r);
  pthread_mutex_lock(&sp->lanes_mu);
  pg_lane *lanes = sp->lanes;
  pthread_mutex_unlock(&sp->lanes_mu);
  for (pg_lane *l = lanes; l; l = l->next) {
    if (!l->state_seen) {
      lane_set_paused(l, 0, 0);
      lane_set_holds(l, 0, 0, 0, 0);
    }
  }
  pthread_mutex_unlock(&sp->states_mu);
  return 0;
}

/* `hookd pause|resume` from the admin endpoint of this node: stored on a
 * connection of its own (it blocks the calling thread for a connect and a
 * commit, never the loop or the writer), NOTIFYd to every node, and
 * applied to this node's lane before it returns. */
static int pg_pause(spool *base, const char *instance, int paused, char *err, size_t errlen) {
  pg_spool *sp = (pg_spool *)base;
  pg_lane *l = (pg_lane *)pg_lane_get(base, instance);
  spool_pg_admin *a = NULL;
  if (l == NULL) {
    snprintf(err, errlen, "out of memory");
    return SPOOL_EFAIL;
  }
  if (spool_pg_admin_open(sp->url, &a, err, errlen) != 0) return SPOOL_EFAIL;
  pthread_mutex_lock(&sp->states_mu);
  sp->states_gen++;
  pthread_mutex_unlock(&sp->states_mu);
  int64_t since = 0;
  int rc = spool_pg_set_paused(a, instance, paused, &since);
  if (rc != 0) snprintf(err, errlen, "the spool could not store it: %s", spool_pg_admin_error(a));
  pthread_mutex_lock(&sp->states_mu);
  if (rc == 0) lane_set_paused(l, paused, since);
  sp->states_gen++;
  pthread_mutex_unlock(&sp->states_mu);
  spool_pg_admin_close(a);
  return rc == 0 ? 0 : SPOOL_EFAIL;
}

/* --- holds shared by the nodes: instance_hold, take_probe ------------------------------ */

/* Times are the server's ("now + ms"), so that the nodes' clocks need not
 * agree; a time already stored that is later stays. Each change is NOTIFYd
 * in its own commit, as a pause: every node reloads hookd_instances. */
static const char hold_sql[] =
    "WITH t AS (SELECT " SQL_NOW
    " AS now),"
    " u AS (INSERT INTO hookd_instances AS i(instance, circuit_open_until, hold_until, updated_ms)"
    "  SELECT $1, CASE WHEN $2 = 'circuit' THEN t.now + $3::int8 ELSE 0 END,"
    "  CASE WHEN $2 = 'circuit' THEN 0 ELSE t.now + $3::int8 END, t.now FROM t"
    "  ON CONFLICT (instance) DO UPDATE SET"
    "  circuit_open_until = GREATEST(i.circuit_open_until, excluded.circuit_open_until),"
    "  hold_until = GREATEST(i.hold_until, excluded.hold_until) RETURNING 1)"
    " SELECT count(pg_notify('" NOTIFY_CHANNEL "', '" NOTIFY_STATES "')) FROM u";
static const char close_sql[] =
    "WITH u AS (UPDATE hookd_instances SET circuit_open_until = 0 WHERE instance = $1"
    " AND circuit_open_until <> 0 RETURNING 1)"
    " SELECT count(pg_notify('" NOTIFY_CHANNEL "', '" NOTIFY_STATES "')) FROM u";
/* The probe of an open circuit whose time has come: the first node to
 * move the time on by a cooldown runs it, the others see the new time
 * (a concurrent UPDATE re-reads the row after the winner commits and no
 * longer matches). Answers won, the time stored and the server's now. */
static const char probe_sql[] =
    "WITH t AS (SELECT " SQL_NOW
    " AS now),"
    " u AS (UPDATE hookd_instances i SET circuit_open_until = t.now + $2::int8 FROM t"
    "  WHERE i.instance = $1 AND i.circuit_open_until > 0 AND i.circuit_open_until <= t.now"
    "  RETURNING i.circuit_open_until)"
    " SELECT (SELECT count(*) FROM u), coalesce((SELECT circuit_open_until FROM u),"
    "  (SELECT circuit_open_until FROM hookd_instances WHERE instance = $1), 0), t.now,"
    "  (SELECT count(pg_notify('" NOTIFY_CHANNEL "', '" NOTIFY_STATES "')) FROM u) FROM t";

/* Runs one request on the claimer's connection. -1 when the connection
 * broke (the request is not done); 0 otherwise (a refused statement is
 * logged and dropped: holds are an optimisation of the per-node pace). */
static int run_hold(pg_spool *sp, hold_req *h) {
  char ms[24];
  snprintf(ms, sizeof ms, "%lld", (long long)(h->ms > 0 ? h->ms : 0));
  const char *v[3] = {h->instance, NULL, NULL};
  PGresult *r;
  if (h->kind == HOLD_PROBE) {
    v[1] = ms;
    r = PQexecParams(sp->cconn, probe_sql, 2, NULL, v, NULL, NULL, 0);
  } else if (h->kind == SPOOL_HOLD_CLOSE) {
    r = PQexecParams(sp->cconn, close_sql, 1, NULL, v, NULL, NULL, 0);
  } else {
    v[1] = h->kind == SPOOL_HOLD_CIRCUIT ? "circuit" : "rate";
    v[2] = ms;
    r = PQexecParams(sp->cconn, hold_sql, 3, NULL, v, NULL, NULL, 0);
  }
  h->won = 1; /* unless the store says otherwise: probe as if alone */
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    int bad = PQstatus(sp->cconn) == CONNECTION_BAD;
    if (!bad) {
      log_write(HLOG_ERROR, &(log_ctx){.instance = h->instance},
                "spool: cannot store the instance's circuit or hold for the other nodes: %s",
                PQresultErrorMessage(r));
    }
    PQclear(r);
    return bad ? -1 : 0;
  }
  if (h->kind == HOLD_PROBE) {
    int64_t until = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    int64_t server_now = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    /* Not won and 0: the store knows of no open circuit (another node's
     * delivery closed it). Not won and due: another node took it a moment
     * ago (this statement's snapshot is older): a cooldown from now, give
     * or take that moment. */
    h->won = strcmp(PQgetvalue(r, 0, 0), "0") != 0;
    int64_t wait = until > server_now ? until - server_now : h->ms;
    h->until = until == 0 ? 0 : clock_now_ms() + wait;
  }
  PQclear(r);
  return 0;
}

/* Gives a probe request its answer (or frees it). Caller holds holds_mu. */
static void answer_hold(pg_spool *sp, hold_req *h) {
  if (h->kind == HOLD_PROBE && !h->abandoned) {
    h->done = 1;
    pthread_cond_broadcast(&sp->holds_cv);
  } else {
    free(h);
  }
}

/* Runs the queued requests, in order. -1 when the connection broke: the
 * one that was running is first again for the next connection. */
static int run_holds(pg_spool *sp) {
  for (;;) {
    pthread_mutex_lock(&sp->holds_mu);
    hold_req *h = sp->holds_head;
    if (h) {
      sp->holds_head = h->next;
      if (sp->holds_head == NULL) sp->holds_tail = NULL;
    }
    if (h && h->abandoned) {
      free(h);
      pthread_mutex_unlock(&sp->holds_mu);
      continue;
    }
    pthread_mutex_unlock(&sp->holds_mu);
    if (h == NULL) return 0;
    int rc = run_hold(sp, h);
    pthread_mutex_lock(&sp->holds_mu);
    if (rc != 0 && h->kind != HOLD_PROBE) {
      h->next = sp->holds_head;
      sp->holds_head = h;
      if (sp->holds_tail == NULL) sp->holds_tail = h;
    } else {
      answer_hold(sp, h); /* a probe that broke the connection: probed as if alone */
    }
    pthread_mutex_unlock(&sp->holds_mu);
    if (rc != 0) return -1;
  }
}

/* No connection (or stopping): a worker waiting for a probe probes as if
 * alone rather than wait for a reconnect; stores wait for the next
 * connection, unless closed (the claimer is gone: they are dropped). */
static void answer_probes_alone(pg_spool *sp, int closed) {
  pthread_mutex_lock(&sp->holds_mu);
  if (closed) sp->holds_closed = 1;
  hold_req **pp = &sp->holds_head, *last = NULL;
  while (*pp) {
    hold_req *h = *pp;
    if (h->kind == HOLD_PROBE || closed) {
      *pp = h->next;
      h->won = 1;
      answer_hold(sp, h);
    } else {
      last = h;
      pp = &h->next;
    }
  }
  sp->holds_tail = last;
  pthread_mutex_unlock(&sp->holds_mu);
}

/* Queues h for the claimer; 0, or -1 when the claimer is gone (h freed). */
static int push_hold(pg_spool *sp, hold_req *h) {
  pthread_mutex_lock(&sp->holds_mu);
  if (sp->holds_closed) {
    pthread_mutex_unlock(&sp->holds_mu);
    free(h);
    return -1;
  }
  if (sp->holds_tail) {
    sp->holds_tail->next = h;
  } else {
    sp->holds_head = h;
  }
  sp->holds_tail = h;
  pthread_mutex_unlock(&sp->holds_mu);
  kick(sp);
  return 0;
}

static hold_req *hold_new(const char *instance, int kind, int64_t ms) {
  size_t len = strlen(instance);
  hold_req *h = calloc(1, sizeof *h + len + 1);
  if (h == NULL) {
    log_write(HLOG_ERROR, &(log_ctx){.instance = instance},
              "out of memory: the other nodes do not hear of this instance's circuit or hold");
    return NULL;
  }
  h->kind = kind;
  h->ms = ms;
  memcpy(h->instance, instance, len + 1);
  return h;
}

static void pg_instance_hold(spool *base, const char *instance, spool_hold kind, int64_t ms) {
  hold_req *h = hold_new(instance, (int)kind, ms);
  if (h) push_hold((pg_spool *)base, h);
}

static int pg_take_probe(spool *base, const char *instance, int64_t cooldown_ms,
                         int64_t *until_ms) {
  pg_spool *sp = (pg_spool *)base;
  hold_req *h = hold_new(instance, HOLD_PROBE, cooldown_ms);
  if (h == NULL || push_hold(sp, h) != 0) return 1;
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += PROBE_WAIT_MS / 1000;
  pthread_mutex_lock(&sp->holds_mu);
  while (!h->done) {
    if (pthread_cond_timedwait(&sp->holds_cv, &sp->holds_mu, &deadline) == ETIMEDOUT) break;
  }
  int won = 1;
  if (h->done) {
    won = h->won;
    *until_ms = h->until;
    free(h);
  } else {
    h->abandoned = 1; /* the claimer frees it */
    log_write(HLOG_WARN, &(log_ctx){.instance = instance},
              "spool: no answer from PostgreSQL within %d ms on who probes the open circuit; "
              "this node probes",
              PROBE_WAIT_MS);
  }
  pthread_mutex_unlock(&sp->holds_mu);
  return won;
}

/* Claims what the lane has room for. -1 when the connection broke. */
static int claim_lane(pg_spool *sp, pg_lane *l) {
  if (atomic_load(&l->paused)) return 0; /* the claim's own filter would find nothing */
  pthread_mutex_lock(&l->lb.mu);
  int room = l->lb.owner ? WINDOW - (int)(l->n_window + l->n_out) : 0;
  uint32_t max_crashes = l->lb.cfg.max_crashes;
  pthread_mutex_unlock(&l->lb.mu);
  if (room <= 0) return 0;
  char limit[16], lease[24];
  snprintf(limit, sizeof limit, "%d", room);
  snprintf(lease, sizeof lease, "%lld", (long long)sp->lease_ms);
  const char *v[4] = {l->lb.name, limit, sp->node_id, lease};
  PGresult *r = PQexecPrepared(sp->cconn, "claim", 4, v, NULL, NULL, 1);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    if (PQstatus(sp->cconn) != CONNECTION_BAD) {
      log_write(HLOG_ERROR, &(log_ctx){.instance = l->lb.name}, "spool: claiming failed: %s",
                PQresultErrorMessage(r));
    }
    PQclear(r);
    return PQstatus(sp->cconn) == CONNECTION_BAD ? -1 : 0;
  }
  int got = 0;
  for (int i = 0; i < PQntuples(r); i++) {
    delivery *d = row_delivery(r, i, l);
    if (d == NULL) {
      log_write(HLOG_ERROR, &(log_ctx){.instance = l->lb.name},
                "out of memory taking a claimed delivery; it runs after its lease expires");
      continue;
    }
    if (*PQgetvalue(r, i, 12) && crashed(sp, l, d, max_crashes)) continue;
    pthread_mutex_lock(&l->lb.mu);
    l->window[l->n_window++] = d; /* room was counted under the lock; only this thread adds */
    pthread_mutex_unlock(&l->lb.mu);
    got++;
  }
  PQclear(r);
  if (got) {
    pthread_mutex_lock(&l->lb.mu);
    spool_wake_fn wake = l->lb.wake;
    void *data = l->lb.wake_data;
    pthread_mutex_unlock(&l->lb.mu);
    /* A count above one wakes every worker. */
    if (wake) wake(data, (size_t)got);
  }
  return 0;
}

static int claim_all(pg_spool *sp) {
  pthread_mutex_lock(&sp->lanes_mu);
  pg_lane *l = sp->lanes;
  pthread_mutex_unlock(&sp->lanes_mu);
  for (; l; l = l->next) {
    if (claim_lane(sp, l) != 0) return -1;
  }
  return 0;
}

/* How long the claimer may sleep: until the next tick (retries that came
 * due, leases that expired on a dead node) or a retry settled here. */
static int claim_timeout(pg_spool *sp, int64_t tick) {
  int64_t now = clock_now_ms(), first = now + tick;
  pthread_mutex_lock(&sp->lanes_mu);
  for (pg_lane *l = sp->lanes; l; l = l->next) {
    int64_t due = atomic_load(&l->retry_due);
    if (due <= now) {
      atomic_store(&l->retry_due, INT64_MAX);
      due = now;
    }
    if (due < first) first = due;
  }
  pthread_mutex_unlock(&sp->lanes_mu);
  return (int)(first - now);
}

static void *claimer_main(void *arg) {
  pg_spool *sp = arg;
  int64_t tick = sp->lease_ms / 4 < 1000 ? sp->lease_ms / 4 : 1000;
  int64_t backoff = BACKOFF_FIRST_MS, next_renew = 0, next_states = 0;
  for (;;) {
    int timeout = (int)backoff;
    if (sp->cconn == NULL && claimer_connect(sp) == 0) {
      backoff = BACKOFF_FIRST_MS;
      next_renew = 0; /* after an outage, at once: leases may have lapsed */
      next_states = 0;
    }
    if (sp->cconn && run_holds(sp) != 0) {
      PQfinish(sp->cconn);
      sp->cconn = NULL;
    }
    if (sp->cconn == NULL) answer_probes_alone(sp, 0);
    if (sp->cconn && (clock_mono_ms() >= next_states || atomic_exchange(&sp->states_changed, 0))) {
      next_states = clock_mono_ms() + STATES_MS;
      if (load_states(sp, sp->cconn) != 0) {
        PQfinish(sp->cconn);
        sp->cconn = NULL;
        continue;
      }
    }
    if (sp->cconn && clock_mono_ms() >= next_renew) {
      next_renew = clock_mono_ms() + sp->lease_ms / 3;
      if (renew(sp) != 0 || drop_lost(sp) != 0) {
        PQfinish(sp->cconn);
        sp->cconn = NULL;
        continue;
      }
    }
    if (sp->cconn) {
      if (claim_all(sp) != 0) {
        PQfinish(sp->cconn);
        sp->cconn = NULL;
        continue;
      }
      timeout = claim_timeout(sp, tick);
    } else {
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    if (sp->cconn) {
      /* A NOTIFY that came in while a statement ran is in libpq's buffer,
       * not on the socket: poll would not see it. */
      PGnotify *n;
      while ((n = PQnotifies(sp->cconn)) != NULL) {
        if (strcmp(n->extra, NOTIFY_STATES) == 0) {
          atomic_store(&sp->states_changed, 1);
          timeout = 0;
        }
        PQfreemem(n);
      }
    }
    struct pollfd fds[2] = {{sp->kick_fd, POLLIN, 0},
                            {sp->cconn ? PQsocket(sp->cconn) : -1, POLLIN, 0}};
    poll(fds, 2, timeout > 0 ? timeout : 0);
    if (fds[0].revents & POLLIN) {
      uint64_t n;
      if (read(sp->kick_fd, &n, sizeof n) < 0) { /* nothing to read after all */
      }
    }
    atomic_store(&sp->kicked, 0);
    pthread_mutex_lock(&sp->mu);
    int stopping = sp->stopping;
    pthread_mutex_unlock(&sp->mu);
    if (stopping) {
      if (sp->cconn) run_holds(sp); /* the last ones (a circuit that closed) */
      answer_probes_alone(sp, 1);
      break;
    }
    if (sp->cconn && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))) {
      /* Wake-ups carry nothing: any one means "claim again". */
      PQconsumeInput(sp->cconn);
      PGnotify *n;
      while ((n = PQnotifies(sp->cconn)) != NULL) {
        if (strcmp(n->extra, NOTIFY_STATES) == 0) atomic_store(&sp->states_changed, 1);
        PQfreemem(n);
      }
      if (PQstatus(sp->cconn) == CONNECTION_BAD) {
        PQfinish(sp->cconn);
        sp->cconn = NULL;
      }
    }
  }
  return NULL;
}

/* --- opening, recovery, stopping -------------------------------------------------------------- */

/* One hookd per data_dir: the lock says that an earlier process of this
 * node name is gone, so its leases may be taken back at once. */
static int lock_node(pg_spool *sp, const config *cfg, char *err, size_t errlen) {
  if (mkdir(cfg->data_dir, 0750) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create data_dir %s: %s", cfg->data_dir, strerror(errno));
    return -1;
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/node.lock", cfg->data_dir);
  sp->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (sp->lock_fd < 0) {
    snprintf(err, errlen, "cannot open %.300s: %s", path, strerror(errno));
    return -1;
  }
  if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(err, errlen, "another hookd runs with data_dir %.300s (%.300s is locked)",
             cfg->data_dir, path);
    return -1;
  }
  char host[256] = "localhost", real[4096];
  gethostname(host, sizeof host - 1);
  if (realpath(cfg->data_dir, real) == NULL) snprintf(real, sizeof real, "%s", cfg->data_dir);
  snprintf(sp->node_name, sizeof sp->node_name, "%.200s:%.300s", host, real);
  unsigned rnd = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, &rnd, sizeof rnd) != sizeof rnd) rnd = (unsigned)clock_now_ms();
  if (fd >= 0) close(fd);
  snprintf(sp->node_id, sizeof sp->node_id, "%.60s-%d-%08x", host, (int)getpid(), rnd);
  return 0;
}

/* What the earlier run of this node was running when it died: its run
 * slots say exactly (and the crash journal, when a fault killed it, which
 * one of them did it). Those deliveries get the start mark, so that the
 * next claim counts their crash; every other delivery it held loses the
 * mark, which may have been written just before the attempt ended. */
static int account_previous_run(pg_spool *sp, const char *data_dir, char *err, size_t errlen) {
  runslot_entry left[1024];
  size_t n = runslots_left(sp->running, left, sizeof left / sizeof left[0]);
  uint64_t *faulted = NULL;
  size_t n_faulted = 0;
  int journal = crash_journal_read(data_dir, &faulted, &n_faulted);
  int64_t *suspects = malloc((n + 1) * sizeof *suspects);
  size_t k = 0;
  for (size_t i = 0; suspects && i < n; i++) {
    int suspect = journal != 1;
    for (size_t j = 0; j < n_faulted && !suspect; j++) suspect = faulted[j] == left[i].spool_id;
    if (suspect) suspects[k++] = (int64_t)left[i].spool_id;
  }
  free(faulted);
  char *ids = suspects ? ids_literal(suspects, k) : NULL;
  free(suspects);
  if (ids == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  const char *v[3] = {sp->node_id, sp->node_name, ids};
  PGresult *r = PQexecParams(sp->wconn,
                             "UPDATE hookd_deliveries SET started = (id = ANY($3::int8[])) WHERE"
                             " state = 0 AND lease_until > 1 AND lease_owner IN (SELECT id FROM"
                             " hookd_nodes WHERE name = $2 AND id <> $1)",
                             3, NULL, v, NULL, NULL, 0);
  free(ids);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) {
    snprintf(err, errlen, "cannot account for the previous run's crash: %s",
             PQerrorMessage(sp->wconn));
  }
  PQclear(r);
  if (ok) {
    runslots_clear(sp->running);
    if (journal == 1) crash_journal_clear(data_dir);
  }
  return ok ? 0 : -1;
}

/* Joins the nodes; leases of an earlier process of this node are expired
 * at once (that process is gone: the lock says so), which counts a crash
 * for what it was running, as a restart of the SQLite backend does. */
static int register_node(pg_spool *sp, char *err, size_t errlen) {
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
  const char *v[3] = {sp->node_id, sp->node_name, now};
  PGresult *r = PQexecParams(
      sp->wconn,
      "WITH gone AS (DELETE FROM hookd_nodes WHERE (name = $2 AND id <> $1) OR seen_ms < $3::int8 "
      "- 86400000 RETURNING id, name), x AS (UPDATE hookd_deliveries SET lease_until = 1 WHERE "
      "state = 0 AND lease_until > 1 AND lease_owner IN (SELECT id FROM gone WHERE name = $2) "
      "RETURNING 1) INSERT INTO hookd_nodes(id, name, started_ms, seen_ms) SELECT $1, $2, $3, $3 "
      "FROM (SELECT count(*) FROM x) c RETURNING (SELECT count(*) FROM x)",
      3, NULL, v, NULL, NULL, 0);
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) {
    snprintf(err, errlen, "cannot register this node: %s", PQerrorMessage(sp->wconn));
  } else if (strcmp(PQgetvalue(r, 0, 0), "0") != 0) {
    log_write(HLOG_INFO, NULL, "spool: took back %s delivery lease(s) of this node's previous run",
              PQgetvalue(r, 0, 0));
  }
  PQclear(r);
  return ok ? 0 : -1;
}

static const spool_ops pg_ops;

static void pg_free(spool *base);

spool *spool_pg_open(const config *cfg, uv_loop_t *loop, int *code, char *err, size_t errlen) {
  *code = SPOOL_EFAIL;
  pg_spool *sp = calloc(1, sizeof *sp);
  if (sp == NULL || (sp->url = strdup(cfg->spool_url)) == NULL) {
    free(sp);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  sp->base.ops = &pg_ops;
  sp->loop = loop;
  sp->lease_ms = (int64_t)cfg->spool_lease_ms;
  sp->retention_ms = cfg->spool_retention_ms;
  sp->max_total = cfg->spool_max_pending;
  sp->lock_fd = -1;
  sp->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  pthread_mutex_init(&sp->lanes_mu, NULL);
  pthread_mutex_init(&sp->mu, NULL);
  pthread_cond_init(&sp->cv, NULL);
  pthread_mutex_init(&sp->why_mu, NULL);
  pthread_mutex_init(&sp->states_mu, NULL);
  pthread_mutex_init(&sp->holds_mu, NULL);
  pthread_cond_init(&sp->holds_cv, NULL);
  char why[768] = "", masked[512];
  config_mask_url(cfg->spool_url, masked, sizeof masked);
  int rc = SPOOL_EFAIL;
  if (sp->kick_fd < 0) {
    snprintf(why, sizeof why, "eventfd: %s", strerror(errno));
  } else if (lock_node(sp, cfg, why, sizeof why) == 0 &&
             (sp->running = runslots_open(cfg->data_dir, (size_t)cfg->delivery.max_threads * 2 + 64,
                                          why, sizeof why)) != NULL) {
    sp->wconn = pg_connect(sp->url, "writer", why, sizeof why);
    if (sp->wconn == NULL) {
      char tmp[768];
      snprintf(tmp, sizeof tmp, "cannot connect to PostgreSQL at %.300s: %.400s", masked, why);
      snprintf(why, sizeof why, "%s", tmp);
    } else if ((rc = ensure_schema(sp->wconn, why, sizeof why)) == 0 &&
               prepare_all(sp->wconn, 1, why, sizeof why) == 0 &&
               account_previous_run(sp, cfg->data_dir, why, sizeof why) == 0 &&
               register_node(sp, why, sizeof why) == 0 && load_states(sp, sp->wconn) == 0) {
      crash_journal_set(cfg->data_dir);
      why[0] = 0;
    } else if (rc == 0) {
      rc = SPOOL_EFAIL;
      if (!why[0]) snprintf(why, sizeof why, "%s", PQerrorMessage(sp->wconn));
    }
  }
  if (why[0]) {
    snprintf(err, errlen, "spool (postgres): %s", why);
    *code = rc ? rc : SPOOL_EFAIL;
    pg_free(&sp->base);
    return NULL;
  }
  refresh_stats(sp, 1);
  uv_async_init(loop, &sp->async, on_async);
  sp->async.data = sp;
  uv_unref((uv_handle_t *)&sp->async);
  uv_timer_init(loop, &sp->deadlines);
  sp->deadlines.data = sp;
  uv_timer_start(&sp->deadlines, on_deadlines, 100, 100);
  uv_unref((uv_handle_t *)&sp->deadlines);
  log_write(HLOG_INFO, NULL, "spool: PostgreSQL at %s, node %s, lease %lld ms", masked, sp->node_id,
            (long long)sp->lease_ms);
  *code = 0;
  return &sp->base;
}

/* Starts the writer and the claimer. Crashed deliveries are counted when
 * they are claimed again (here or on another node), not here: a node
 * cannot know which of the others are alive. */
static int pg_recover(spool *base, char *err, size_t errlen) {
  pg_spool *sp = (pg_spool *)base;
  if (pthread_create(&sp->writer, NULL, writer_main, sp) != 0) {
    snprintf(err, errlen, "spool: cannot start the writer thread");
    return SPOOL_EFAIL;
  }
  sp->writer_started = 1;
  if (pthread_create(&sp->claimer, NULL, claimer_main, sp) != 0) {
    snprintf(err, errlen, "spool: cannot start the claimer thread");
    return SPOOL_EFAIL;
  }
  sp->claimer_started = 1;
  return 0;
}

static void pg_stop(spool *base) {
  pg_spool *sp = (pg_spool *)base;
  pthread_mutex_lock(&sp->mu);
  sp->stopping = 1;
  pthread_cond_signal(&sp->cv);
  pthread_mutex_unlock(&sp->mu);
  /* The claimer first, so that nothing is claimed after the writer gave
   * this node's claims back. */
  if (sp->claimer_started) {
    uint64_t one = 1;
    if (write(sp->kick_fd, &one, sizeof one) < 0) { /* already signalled */
    }
    pthread_join(sp->claimer, NULL);
    sp->claimer_started = 0;
  }
  if (sp->writer_started) {
    pthread_join(sp->writer, NULL);
    sp->writer_started = 0;
  }
  pthread_mutex_lock(&sp->mu);
  sp->closed = 1;
  pthread_mutex_unlock(&sp->mu);
  if (sp->cconn) PQfinish(sp->cconn);
  if (sp->wconn) PQfinish(sp->wconn);
  sp->cconn = sp->wconn = NULL;
}

static void on_handle_closed(uv_handle_t *h) {
  pg_spool *sp = h->data;
  if (--sp->closes_left == 0) free(sp);
}

static void pg_free(spool *base) {
  pg_spool *sp = (pg_spool *)base;
  pg_stop(base);
  for (store_req *r = sp->out_head; r;) {
    store_req *next = r->next;
    free_store(r);
    r = next;
  }
  free_ops(sp->ops_head);
  free_ops(sp->held);
  for (pg_lane *l = sp->lanes, *next; l; l = next) {
    next = l->next;
    for (size_t i = 0; i < l->n_window; i++) delivery_free(l->window[i]);
    lane_base_destroy(&l->lb);
    free(l);
  }
  runslots_close(sp->running);
  if (sp->kick_fd >= 0) close(sp->kick_fd);
  if (sp->lock_fd >= 0) close(sp->lock_fd);
  free(sp->url);
  pthread_mutex_destroy(&sp->lanes_mu);
  pthread_mutex_destroy(&sp->mu);
  pthread_cond_destroy(&sp->cv);
  pthread_mutex_destroy(&sp->why_mu);
  answer_probes_alone(sp, 1); /* frees what a claimer that never ran left */
  pthread_mutex_destroy(&sp->states_mu);
  pthread_mutex_destroy(&sp->holds_mu);
  pthread_cond_destroy(&sp->holds_cv);
  if (sp->async.loop != NULL) {
    sp->closes_left = 2;
    uv_close((uv_handle_t *)&sp->async, on_handle_closed);
    uv_close((uv_handle_t *)&sp->deadlines, on_handle_closed);
  } else {
    free(sp);
  }
}

static const spool_ops pg_ops = {
    .name = "postgres",
    .recover = pg_recover,
    .stop = pg_stop,
    .free = pg_free,
    .lane = pg_lane_get,
    .lane_config = lane_base_config,
    .lane_attach = pg_lane_attach,
    .lane_detach = lane_base_detach,
    .lane_stats = pg_lane_stats,
    .admit = pg_admit,
    .seen = pg_seen,
    .store = pg_store,
    .claim = pg_claim,
    .started = pg_started,
    .settle = pg_settle,
    .stats = pg_stats,
    .record_attempt = pg_record_attempt,
    .pause = pg_pause,
    .instance_hold = pg_instance_hold,
    .take_probe = pg_take_probe,
    .lane_holds = pg_lane_holds,
};

/* --- dead letters and checks, on a connection of their own ------------------------------------ */

struct spool_pg_admin {
  PGconn *c;
  char error[512];
};

/* Opens a connection and checks the schema version without changing
 * anything (a CLI must not create tables in a database it was pointed at
 * by mistake). */
int spool_pg_admin_open(const char *url, spool_pg_admin **out, char *err, size_t errlen) {
  *out = NULL;
  char why[512];
  PGconn *c = pg_connect(url, "cli", why, sizeof why);
  if (c == NULL) {
    char masked[512];
    config_mask_url(url, masked, sizeof masked);
    snprintf(err, errlen, "cannot connect to PostgreSQL at %.300s: %.400s", masked, why);
    return -1;
  }
  PGresult *r = PQexec(c,
                       "SELECT CASE WHEN to_regclass('hookd_meta') IS NULL THEN '0' ELSE "
                       "(SELECT value FROM hookd_meta WHERE key = 'schema_version') END");
  const char *v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)
                      ? PQgetvalue(r, 0, 0)
                      : "?";
  int ok = strtol(v, NULL, 10) == SCHEMA_VERSION;
  if (!ok && strcmp(v, "0") == 0) {
    snprintf(err, errlen, "no hookd spool in this database (hookd has not run with it yet)");
  } else if (!ok) {
    snprintf(err, errlen,
             "the database holds a hookd spool of schema version %s; this hookd reads "
             "version %d%s",
             v, SCHEMA_VERSION,
             strtol(v, NULL, 10) < SCHEMA_VERSION
                 ? " (an older spool is upgraded when a hookd of this version starts on it)"
                 : "");
  }
  PQclear(r);
  spool_pg_admin *a = ok ? calloc(1, sizeof *a) : NULL;
  if (a == NULL) {
    if (ok) snprintf(err, errlen, "out of memory");
    PQfinish(c);
    return -1;
  }
  a->c = c;
  *out = a;
  return 0;
}

void spool_pg_admin_close(spool_pg_admin *a) {
  if (a == NULL) return;
  PQfinish(a->c);
  free(a);
}

const char *spool_pg_admin_error(spool_pg_admin *a) {
  return a->error;
}

static int admin_fail(spool_pg_admin *a, const PGresult *r) {
  const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(a->c);
  snprintf(a->error, sizeof a->error, "%.*s", (int)strcspn(m, "\n"), m);
  return -1;
}

static const char dlq_cols[] =
    "SELECT d.id, e.source, e.event_id, e.type, d.instance, coalesce(d.last_error, ''), d.attempt,"
    " e.received_ms, d.updated_ms, e.body FROM hookd_deliveries d JOIN hookd_events e"
    " ON e.seq = d.seq WHERE d.state = 2";

static int read_dlq_row(const PGresult *r, int i, dlq_entry *e) {
  memset(e, 0, sizeof *e);
  e->id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
  e->source = strdup(PQgetvalue(r, i, 1));
  e->event_id = strdup(PQgetvalue(r, i, 2));
  e->type = strdup(PQgetvalue(r, i, 3));
  e->instance = strdup(PQgetvalue(r, i, 4));
  e->error = strdup(PQgetvalue(r, i, 5));
  e->attempts = (uint32_t)strtoul(PQgetvalue(r, i, 6), NULL, 10);
  e->received_ms = strtoll(PQgetvalue(r, i, 7), NULL, 10);
  e->failed_ms = strtoll(PQgetvalue(r, i, 8), NULL, 10);
  if (!e->source || !e->event_id || !e->type || !e->instance || !e->error) {
    dlq_entry_clear(e);
    return -1;
  }
  return 0;
}

int spool_pg_dlq_list(spool_pg_admin *a, size_t limit, dlq_entry **out, size_t *n) {
  char sql[512], lim[24];
  snprintf(sql, sizeof sql, "%s ORDER BY d.updated_ms DESC, d.id DESC LIMIT $1", dlq_cols);
  snprintf(lim, sizeof lim, "%lld", limit ? (long long)limit : INT64_MAX);
  const char *v[1] = {lim};
  *out = NULL;
  *n = 0;
  PGresult *r = PQexecParams(a->c, sql, 1, NULL, v, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    admin_fail(a, r);
    PQclear(r);
    return -1;
  }
  int rows = PQntuples(r);
  *out = rows ? calloc((size_t)rows, sizeof **out) : NULL;
  for (int i = 0; i < rows && *out; i++) {
    if (read_dlq_row(r, i, &(*out)[*n]) == 0) (*n)++;
  }
  PQclear(r);
  return 0;
}

int spool_pg_dlq_show(spool_pg_admin *a, int64_t id, dlq_entry *out, char **body,
                      size_t *body_len) {
  char sql[512], ids[24];
  snprintf(sql, sizeof sql, "%s AND d.id = $1", dlq_cols);
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  const char *v[1] = {ids};
  *body = NULL;
  *body_len = 0;
  /* Binary results: the body comes back as its bytes. */
  PGresult *r = PQexecParams(a->c, sql, 1, NULL, v, NULL, NULL, 0);
  int rc = DLQ_ENOTFOUND;
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    rc = admin_fail(a, r);
  } else if (PQntuples(r) == 1) {
    size_t len = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, 0, 9), &len);
    rc = read_dlq_row(r, 0, out);
    *body = raw ? malloc(len + 1) : NULL;
    if (rc == 0 && *body) {
      memcpy(*body, raw, len);
      (*body)[len] = 0;
      *body_len = len;
    } else {
      if (rc == 0) dlq_entry_clear(out);
      free(*body);
      *body = NULL;
      rc = -1;
    }
    PQfreemem(raw);
  }
  PQclear(r);
  return rc;
}

/* Runs one statement of the replay transaction; the first row's first
 * value as a number, or -1 (the transaction is then rolled back). */
static int64_t replay_step(spool_pg_admin *a, const char *sql, const char *const *v) {
  PGresult *r = PQexecParams(a->c, sql, v ? 2 : 0, NULL, v, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  int64_t n = 0;
  if (st == PGRES_TUPLES_OK && PQntuples(r) > 0) {
    n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    admin_fail(a, r);
    n = -1;
  }
  PQclear(r);
  if (n < 0) PQclear(PQexec(a->c, "ROLLBACK"));
  return n;
}

int64_t spool_pg_dlq_replay(spool_pg_admin *a, int64_t id) {
  char ids[24], now[24];
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
  const char *v[2] = {ids, now};
  /* Under the keys' locks: pending again without the head, then each key
   * that has no head gets its earliest pending delivery as the head (a
   * replayed letter waits for a head that is running now). */
  if (replay_step(a, "BEGIN", NULL) < 0 ||
      replay_step(a,
                  "SELECT count(pg_advisory_xact_lock(" KEY_LOCK_CLASS ", h)) FROM (SELECT DISTINCT"
                  " hashtext(order_key) AS h FROM hookd_deliveries WHERE state = 2 AND order_key IS"
                  " NOT NULL AND ($1 = 0 OR id = $1) AND $2::int8 > 0 ORDER BY 1) AS s",
                  v) < 0) {
    return -1;
  }
  int64_t n = replay_step(
      a,
      "WITH u AS (UPDATE hookd_deliveries SET state = 0, head = order_key IS NULL, attempt = 0,"
      " crashes = 0, started = false, next_ms = $2, lease_until = 0, updated_ms = $2 WHERE"
      " state = 2 AND ($1 = 0 OR id = $1) RETURNING 1) SELECT count(*) FROM u",
      v);
  if (n < 0) return -1;
  if (replay_step(
          a,
          "UPDATE hookd_deliveries d SET head = true FROM (SELECT DISTINCT ON (instance,"
          " order_key) id FROM hookd_deliveries x WHERE state = 0 AND order_key IS NOT"
          " NULL AND updated_ms = $2 AND NOT head AND $1::int8 >= 0 AND NOT EXISTS (SELECT 1 FROM"
          " hookd_deliveries h WHERE h.instance = x.instance AND h.order_key = x.order_key"
          " AND h.state = 0 AND h.head) ORDER BY instance, order_key, seq) f WHERE"
          " d.id = f.id",
          v) < 0 ||
      replay_step(a, "SELECT pg_notify('" NOTIFY_CHANNEL "', '')", NULL) < 0 ||
      replay_step(a, "COMMIT", NULL) < 0) {
    return -1;
  }
  return n;
}

int spool_pg_dlq_purge(spool_pg_admin *a, int64_t id) {
  char ids[24], now[24];
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
  const char *v[2] = {ids, now};
  /* The event goes too when nothing else refers to it; otherwise it is
   * done once nothing of it waits or is dead, and pruning takes it later. */
  PGresult *r = PQexecParams(
      a->c,
      "WITH d AS (DELETE FROM hookd_deliveries WHERE id = $1 AND state = 2 RETURNING seq),"
      " e AS (DELETE FROM hookd_events WHERE seq IN (SELECT seq FROM d) AND NOT EXISTS"
      " (SELECT 1 FROM hookd_deliveries x WHERE x.seq = hookd_events.seq AND x.id <> $1)"
      " RETURNING seq),"
      " a AS (DELETE FROM hookd_attempts WHERE seq IN (SELECT seq FROM e)),"
      " m AS (UPDATE hookd_events SET done_ms = $2 WHERE seq IN (SELECT seq FROM d) AND seq NOT IN"
      " (SELECT seq FROM e) AND NOT EXISTS (SELECT 1 FROM hookd_deliveries x WHERE"
      " x.seq = hookd_events.seq AND x.id <> $1 AND x.state <> 1))"
      " SELECT count(*) FROM d",
      2, NULL, v, NULL, NULL, 0);
  int rc = -1;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
    rc = strcmp(PQgetvalue(r, 0, 0), "0") != 0 ? 0 : DLQ_ENOTFOUND;
  } else {
    admin_fail(a, r);
  }
  PQclear(r);
  return rc;
}

/* --- pause, back-fills, event search and detail: the CLI and the admin page ------------ */

/* Runs sql with text parameters; the result, or NULL (a->error says why)
 * when it did not return rows or complete. */
static PGresult *admin_exec(spool_pg_admin *a, const char *sql, int n, const char *const *v) {
  PGresult *r = PQexecParams(a->c, sql, n, NULL, v, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return r;
  admin_fail(a, r);
  PQclear(r);
  return NULL;
}

int spool_pg_set_paused(spool_pg_admin *a, const char *instance, int paused, int64_t *since_ms) {
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
  const char *v[3] = {instance, paused ? "t" : "f", now};
  /* One statement, so one transaction: the NOTIFY goes out with the
   * commit, and every node reloads hookd_instances at once. updated_ms
   * moves only with a change: it says since when. */
  PGresult *r = admin_exec(
      a,
      "WITH u AS (INSERT INTO hookd_instances AS i(instance, paused, updated_ms) VALUES ($1,"
      " $2::bool, $3::int8) ON CONFLICT (instance) DO UPDATE SET paused = excluded.paused,"
      " updated_ms = excluded.updated_ms WHERE i.paused <> excluded.paused RETURNING updated_ms)"
      " SELECT coalesce((SELECT updated_ms FROM u), (SELECT updated_ms FROM hookd_instances"
      " WHERE instance = $1)), pg_notify('" NOTIFY_CHANNEL "', '" NOTIFY_STATES "')",
      3, v);
  if (r == NULL) return -1;
  if (since_ms) {
    *since_ms = paused && PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
  }
  PQclear(r);
  return 0;
}

int spool_pg_get_paused(spool_pg_admin *a, const char *instance, int *paused, int64_t *since_ms) {
  const char *v[1] = {instance};
  *paused = 0;
  *since_ms = 0;
  PGresult *r =
      admin_exec(a, "SELECT paused, updated_ms FROM hookd_instances WHERE instance = $1", 1, v);
  if (r == NULL) return -1;
  if (PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
    *paused = 1;
    *since_ms = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
  }
  PQclear(r);
  return 0;
}

/* The filter's parameters: since, source (NULL: any), types (NULL: any). */
typedef struct bf_params {
  char since[24];
  char *types; /* a text[] literal, or NULL */
  const char *v[3];
} bf_params;

static int bf_params_init(bf_params *p, int64_t since_ms, const char *source,
                          const char *const *types, size_t n_types) {
  snprintf(p->since, sizeof p->since, "%lld", (long long)since_ms);
  p->types = NULL;
  if (types) {
    arr t = {0};
    t.len = 1;
    for (size_t i = 0; i < n_types; i++) arr_text(&t, types[i]);
    if (t.buf == NULL && !t.oom) t.buf = malloc(3); /* no type: matches nothing */
    if (t.buf == NULL || arr_end(&t) == NULL) {
      free(t.buf);
      return -1;
    }
    p->types = t.buf;
  }
  p->v[0] = p->since;
  p->v[1] = source;
  p->v[2] = p->types;
  return 0;
}

#define BF_WHERE                                                                           \
  " FROM hookd_events WHERE received_ms >= $1::int8 AND ($2::text IS NULL OR source = $2)" \
  " AND ($3::text[] IS NULL OR type = ANY($3::text[]))"

int spool_pg_event_types(spool_pg_admin *a, int64_t since_ms, const char *source,
                         spool_pg_type_count **out, size_t *n) {
  bf_params p;
  *out = NULL;
  *n = 0;
  if (bf_params_init(&p, since_ms, source, NULL, 0) != 0) return -1;
  PGresult *r =
      admin_exec(a, "SELECT type, count(*)" BF_WHERE " GROUP BY type ORDER BY type", 3, p.v);
  if (r == NULL) return -1;
  int rows = PQntuples(r), rc = 0;
  *out = calloc((size_t)rows + 1, sizeof **out);
  for (int i = 0; *out && i < rows; i++) {
    (*out)[i].count = strtoll(PQgetvalue(r, i, 1), NULL, 10);
    if (((*out)[i].type = strdup(PQgetvalue(r, i, 0))) == NULL) break;
    *n = (size_t)i + 1;
  }
  if (*out == NULL || *n != (size_t)rows) {
    snprintf(a->error, sizeof a->error, "out of memory");
    spool_pg_type_counts_free(*out, *n);
    *out = NULL;
    *n = 0;
    rc = -1;
  }
  PQclear(r);
  return rc;
}

void spool_pg_type_counts_free(spool_pg_type_count *t, size_t n) {
  for (size_t i = 0; t && i < n; i++) free(t[i].type);
  free(t);
}

int64_t spool_pg_backfill_start(spool_pg_admin *a, const char *instance, int64_t since_ms,
                                const char *source, const char *const *types, size_t n_types,
                                const char *what, int64_t *total) {
  bf_params p;
  *total = 0;
  if (bf_params_init(&p, since_ms, source, types, n_types) != 0) {
    snprintf(a->error, sizeof a->error, "out of memory");
    return -1;
  }
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)clock_now_ms());
  const char *v[6] = {p.v[0], p.v[1], p.v[2], instance, what, now};
  /* One statement: the back-fill and its events appear at once, so a
   * node's writer never sees one half made. Nothing selected: finished at
   * once. */
  PGresult *r = admin_exec(
      a,
      "WITH s AS (SELECT seq" BF_WHERE
      "), b AS (INSERT INTO hookd_backfills(instance, what,"
      " created_ms, total, finished_ms) SELECT $4, $5, $6::int8, count(*), CASE WHEN count(*) = 0"
      " THEN $6::int8 END FROM s RETURNING id, total), e AS (INSERT INTO"
      " hookd_backfill_events(backfill, seq) SELECT b.id, s.seq FROM b, s)"
      " SELECT id, total FROM b",
      6, v);
  free(p.types);
  if (r == NULL) return -1;
  int64_t id = -1;
  if (PQntuples(r) == 1) {
    id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    *total = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
  } else {
    snprintf(a->error, sizeof a->error, "the back-fill was not stored");
  }
  PQclear(r);
  return id;
}

int spool_pg_backfill_progress(spool_pg_admin *a, int64_t id, dlq_backfill_progress *out) {
  char ids[24];
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  const char *v[1] = {ids};
  memset(out, 0, sizeof *out);
  /* As on SQLite: what it queued and is neither waiting nor dead was
   * delivered (delivered rows are pruned with their event). */
  PGresult *r = admin_exec(
      a,
      "SELECT total, queued, finished_ms IS NOT NULL, (SELECT count(*) FROM hookd_deliveries"
      " WHERE replay = $1::int8 AND state = 0), (SELECT count(*) FROM hookd_deliveries WHERE"
      " replay = $1::int8 AND state = 2) FROM hookd_backfills WHERE id = $1::int8",
      1, v);
  if (r == NULL) return DLQ_EFAIL;
  int rc = DLQ_ENOTFOUND;
  if (PQntuples(r) == 1) {
    out->total = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    out->queued = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    out->finished = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
    out->dead = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
    out->delivered = out->queued - strtoll(PQgetvalue(r, 0, 3), NULL, 10) - out->dead;
    if (out->delivered < 0) out->delivered = 0;
    rc = 0;
  }
  PQclear(r);
  return rc;
}

/* An event is finished when every delivery of it is done (dead letters
 * keep it open, as on SQLite). */
#define PG_EVENT_COLS                                                                     \
  "SELECT e.seq, e.source, e.event_id, e.type, coalesce(e.order_key, ''), e.received_ms," \
  " NOT EXISTS (SELECT 1 FROM hookd_deliveries d WHERE d.seq = e.seq AND d.state <> 1)"

static int pg_event_row(const PGresult *r, int i, dlq_event_row *row) {
  memset(row, 0, sizeof *row);
  row->seq = strtoll(PQgetvalue(r, i, 0), NULL, 10);
  row->source = strdup(PQgetvalue(r, i, 1));
  row->event_id = strdup(PQgetvalue(r, i, 2));
  row->type = strdup(PQgetvalue(r, i, 3));
  row->order_key = strdup(PQgetvalue(r, i, 4));
  row->received_ms = strtoll(PQgetvalue(r, i, 5), NULL, 10);
  row->done = strcmp(PQgetvalue(r, i, 6), "t") == 0;
  return row->source && row->event_id && row->type && row->order_key ? 0 : -1;
}

/* Appends r's rows to *out (up to limit), skipping seqs already there. */
static int pg_collect(const PGresult *r, size_t limit, dlq_event_row **out, size_t *n) {
  for (int i = 0; i < PQntuples(r) && *n < limit; i++) {
    int64_t seq = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    int seen = 0;
    for (size_t k = 0; k < *n && !seen; k++) seen = (*out)[k].seq == seq;
    if (seen) continue;
    dlq_event_row *grown = realloc(*out, (*n + 1) * sizeof **out);
    if (grown == NULL) return -1;
    *out = grown;
    int bad = pg_event_row(r, i, &(*out)[*n]);
    (*n)++; /* freed with the rest even when half made */
    if (bad) return -1;
  }
  return 0;
}

int spool_pg_find_events(spool_pg_admin *a, const char *text, const char *const *sources,
                         size_t n_sources, size_t limit, dlq_event_row **out, size_t *n_out) {
  a->error[0] = 0;
  *out = NULL;
  *n_out = 0;
  bf_params p;
  char lim[24];
  snprintf(lim, sizeof lim, "%zu", limit);
  /* By id in the configured sources (the UNIQUE (source, event_id) index),
   * then by order key, newest first (hookd_events_okey). */
  if (bf_params_init(&p, 0, NULL, sources, n_sources) != 0) {
    snprintf(a->error, sizeof a->error, "out of memory");
    return -1;
  }
  const char *v1[2] = {p.types, text};
  PGresult *r = admin_exec(
      a, PG_EVENT_COLS " FROM hookd_events e WHERE e.source = ANY($1::text[]) AND e.event_id = $2",
      2, v1);
  free(p.types);
  int rc = r ? pg_collect(r, limit, out, n_out) : -1;
  PQclear(r);
  const char *v2[2] = {text, lim};
  r = rc == 0 ? admin_exec(a,
                           PG_EVENT_COLS
                           " FROM hookd_events e WHERE e.order_key = $1"
                           " ORDER BY e.seq DESC LIMIT $2::int8",
                           2, v2)
              : NULL;
  if (rc == 0) rc = r ? pg_collect(r, limit, out, n_out) : -1;
  PQclear(r);
  if (rc != 0) {
    if (!a->error[0]) snprintf(a->error, sizeof a->error, "out of memory");
    dlq_event_rows_free(*out, *n_out);
    *out = NULL;
    *n_out = 0;
  }
  return rc;
}

/* A delivery entry of the detail (zeroed); NULL when out of memory. */
static const char *const pg_state_names[] = {"pending", "delivered", "dead"};

static int detail_deliveries(spool_pg_admin *a, dlq_event_detail *d) {
  char seq[24];
  snprintf(seq, sizeof seq, "%lld", (long long)d->ev.seq);
  const char *v[1] = {seq};
  PGresult *r = admin_exec(a,
                           "SELECT id, instance, state, attempt, crashes, next_ms, updated_ms,"
                           " coalesce(last_error, ''), coalesce(replay, 0) FROM hookd_deliveries"
                           " WHERE seq = $1::int8 ORDER BY id",
                           1, v);
  if (r == NULL) return -1;
  int rc = 0;
  for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
    dlq_delivery *dv = dlq_event_detail_add(d);
    if (dv == NULL) {
      rc = -1;
      break;
    }
    int st = atoi(PQgetvalue(r, i, 2));
    dv->id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    dv->instance = strdup(PQgetvalue(r, i, 1));
    dv->state = strdup(pg_state_names[st >= 0 && st <= 2 ? st : 0]);
    dv->attempts = (uint32_t)strtoul(PQgetvalue(r, i, 3), NULL, 10);
    dv->crashes = (uint32_t)strtoul(PQgetvalue(r, i, 4), NULL, 10);
    dv->next_ms = strtoll(PQgetvalue(r, i, 5), NULL, 10);
    dv->updated_ms = strtoll(PQgetvalue(r, i, 6), NULL, 10);
    dv->last_error = strdup(PQgetvalue(r, i, 7));
    dv->backfill = strtoll(PQgetvalue(r, i, 8), NULL, 10);
    if (!dv->instance || !dv->state || !dv->last_error) rc = -1;
  }
  PQclear(r);
  return rc;
}

/* The kept calls (rows of hookd_attempts, and the one call of a delivery
 * done at its first, kept in its row), each with the latest delivery of
 * its instance (a back-fill may have made a second one); an instance with
 * calls and no delivery row gets an entry that says "delivered". */
static int detail_calls(spool_pg_admin *a, dlq_event_detail *d) {
  char seq[24];
  snprintf(seq, sizeof seq, "%lld", (long long)d->ev.seq);
  const char *v[1] = {seq};
  PGresult *r = admin_exec(
      a,
      "SELECT instance, attempt, started_ms, took_ms, outcome, status, coalesce(answer, ''),"
      " coalesce(message, '') FROM (SELECT instance, attempt, started_ms, took_ms, outcome,"
      " status, answer, message, slot FROM hookd_attempts WHERE seq = $1::int8 UNION ALL"
      " SELECT instance, call_attempt, call_started_ms, call_took_ms, call_outcome,"
      " coalesce(call_status, 0), call_answer, call_message, -1 FROM hookd_deliveries WHERE"
      " seq = $1::int8 AND call_outcome IS NOT NULL) c ORDER BY instance, started_ms, slot",
      1, v);
  if (r == NULL) return -1;
  int rc = 0;
  for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
    const char *inst = PQgetvalue(r, i, 0);
    dlq_delivery *dv = NULL;
    for (size_t k = d->n_deliveries; k-- > 0 && dv == NULL;) {
      if (strcmp(d->deliveries[k].instance, inst) == 0) dv = &d->deliveries[k];
    }
    if (dv == NULL && (dv = dlq_event_detail_add(d)) != NULL) {
      dv->instance = strdup(inst);
      dv->state = strdup("delivered");
      dv->last_error = strdup("");
    }
    dlq_attempt *grown = dv ? realloc(dv->calls, (dv->n_calls + 1) * sizeof *grown) : NULL;
    if (grown == NULL || !dv->instance || !dv->state || !dv->last_error) {
      rc = -1;
      break;
    }
    dv->calls = grown;
    dlq_attempt *c = &dv->calls[dv->n_calls++];
    memset(c, 0, sizeof *c);
    c->attempt = (uint32_t)strtoul(PQgetvalue(r, i, 1), NULL, 10);
    c->started_ms = strtoll(PQgetvalue(r, i, 2), NULL, 10);
    c->took_ms = strtoll(PQgetvalue(r, i, 3), NULL, 10);
    c->outcome = strdup(PQgetvalue(r, i, 4));
    c->status = (int32_t)strtol(PQgetvalue(r, i, 5), NULL, 10);
    c->answer = strdup(PQgetvalue(r, i, 6));
    c->message = strdup(PQgetvalue(r, i, 7));
    if (!c->outcome || !c->answer || !c->message) rc = -1;
    if (dv->id == 0 && c->attempt > dv->attempts) dv->attempts = c->attempt;
  }
  PQclear(r);
  return rc;
}

int spool_pg_event_detail(spool_pg_admin *a, const char *source, const char *event_id,
                          dlq_event_detail *out) {
  a->error[0] = 0;
  memset(out, 0, sizeof *out);
  const char *v[2] = {source, event_id};
  PGresult *r = admin_exec(a,
                           PG_EVENT_COLS
                           ", e.content_type, coalesce(e.headers, ''), e.body FROM"
                           " hookd_events e WHERE e.source = $1 AND e.event_id = $2",
                           2, v);
  if (r == NULL) return DLQ_EFAIL;
  int rc = DLQ_ENOTFOUND;
  if (PQntuples(r) == 1) {
    size_t len = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, 0, 9), &len);
    rc = pg_event_row(r, 0, &out->ev);
    out->content_type = strdup(PQgetvalue(r, 0, 7));
    out->headers = strdup(PQgetvalue(r, 0, 8));
    out->body = raw ? malloc(len + 1) : NULL;
    if (out->body) {
      memcpy(out->body, raw, len);
      out->body[len] = 0;
      out->body_len = len;
    }
    PQfreemem(raw);
    if (!out->content_type || !out->headers || !out->body) rc = -1;
  }
  PQclear(r);
  if (rc == 0) rc = detail_deliveries(a, out);
  if (rc == 0) rc = detail_calls(a, out);
  if (rc != 0 && rc != DLQ_ENOTFOUND) {
    if (!a->error[0]) snprintf(a->error, sizeof a->error, "out of memory");
    dlq_event_detail_free(out);
    rc = DLQ_EFAIL;
  }
  return rc;
}

/* One number from a check query; -1 on error. */
static int64_t check_count(PGconn *c, const char *sql) {
  return query_i64(c, sql, 0, NULL, -1);
}

int spool_pg_check(const config *cfg, FILE *out, char *err, size_t errlen) {
  spool_pg_admin *a;
  if (spool_pg_admin_open(cfg->spool_url, &a, err, errlen) != 0) {
    /* An older version is not damage: a starting node upgrades it. */
    return strstr(err, "schema version") && !strstr(err, "older spool") ? SPOOL_EDAMAGED
                                                                        : SPOOL_EFAIL;
  }
  PGconn *c = a->c;
  char masked[512];
  config_mask_url(cfg->spool_url, masked, sizeof masked);
  fprintf(out, "spool: PostgreSQL at %s, schema version %d\n", masked, SCHEMA_VERSION);
  struct {
    const char *what, *sql;
    int damage; /* a count above 0 means damage, not just news */
  } checks[] = {
      {"events", "SELECT count(*) FROM hookd_events", 0},
      {"unfinished deliveries", "SELECT count(*) FROM hookd_deliveries WHERE state = 0", 0},
      {"dead letters", "SELECT count(*) FROM hookd_deliveries WHERE state = 2", 0},
      {"leased now",
       "SELECT count(*) FROM hookd_deliveries WHERE state = 0 AND lease_until > " SQL_NOW, 0},
      {"nodes", "SELECT count(*) FROM hookd_nodes", 0},
      {"paused instances", "SELECT count(*) FROM hookd_instances WHERE paused", 0},
      /* Shared by the nodes (schema 3): an open circuit waits for its probe,
       * a hold for the destination's Retry-After. */
      {"instances with an open circuit",
       "SELECT count(*) FROM hookd_instances WHERE circuit_open_until > 0", 0},
      {"instances held by a destination (too many requests)",
       "SELECT count(*) FROM hookd_instances WHERE hold_until > " SQL_NOW, 0},
      {"back-fills not finished", "SELECT count(*) FROM hookd_backfills WHERE finished_ms IS NULL",
       0},
      {"deliveries whose event is missing",
       "SELECT count(*) FROM hookd_deliveries d WHERE NOT EXISTS (SELECT 1 FROM hookd_events e "
       "WHERE e.seq = d.seq)",
       1},
      {"deliveries in an unknown state",
       "SELECT count(*) FROM hookd_deliveries WHERE state NOT IN (0, 1, 2)", 1},
      {"events marked done with deliveries not done",
       "SELECT count(*) FROM hookd_events e WHERE e.done_ms IS NOT NULL AND EXISTS (SELECT 1 FROM "
       "hookd_deliveries d WHERE d.seq = e.seq AND d.state = 0)",
       1},
      /* A running hookd repairs the first kind within a minute (repair_heads). */
      {"order keys whose deliveries wait for no head", "SELECT count(*) FROM (" NO_HEAD_SQL ") k",
       1},
      {"order keys with more than one head",
       "SELECT count(*) FROM (SELECT 1 FROM hookd_deliveries WHERE state = 0 AND head AND "
       "order_key IS NOT NULL GROUP BY instance, order_key HAVING count(*) > 1) k",
       1},
  };
  int rc = 0;
  for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
    int64_t n = check_count(c, checks[i].sql);
    if (n < 0) {
      snprintf(err, errlen, "%s: %s", checks[i].what, PQerrorMessage(c));
      spool_pg_admin_close(a);
      return SPOOL_EFAIL;
    }
    fprintf(out, "%s: %lld%s\n", checks[i].what, (long long)n,
            checks[i].damage && n > 0 ? "  <- damaged" : "");
    if (checks[i].damage && n > 0) rc = SPOOL_EDAMAGED;
  }
  PGresult *r = PQexec(c, "SELECT id, name, (" SQL_NOW
                          " - seen_ms) / 1000 FROM hookd_nodes "
                          "ORDER BY name");
  for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
    fprintf(out, "node %s (%s): seen %ss ago\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
            PQgetvalue(r, i, 2));
  }
  PQclear(r);
  fprintf(out, "%s\n",
          rc == 0 ? "healthy"
                  : "damaged: rows of the spool tables were changed or deleted by "
                    "hand; restore the database from a backup, or delete the rows "
                    "named above to go on without them");
  spool_pg_admin_close(a);
  return rc;
}
