/* The SQLite spool from outside its writer, on a connection of its own: dead letters, pause,
 * back-fills, event search and detail. */
#include "dlq.h"
#include "clock.h"
#include "pattern.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "spool_pg.h"

struct dlq {
  sqlite3 *db;
  spool_pg_admin *pg; /* the PostgreSQL spool instead (spool_pg.c does the work) */
  int own_error;      /* error[] says why, not the PostgreSQL side */
  char error[256];
};

/* "state >= 2" beside every test on state lets SQLite use the partial index
 * deliveries_dead (dead letters and replay requests; see spool_sqlite.c). */
static const char select_cols[] =
    "SELECT d.id, e.source, e.event_id, e.type, d.instance, coalesce(d.last_error, ''), "
    "d.attempt, e.received_ms, d.updated_ms, e.body FROM deliveries d JOIN events e "
    "ON e.seq = d.seq WHERE d.state = 2 AND d.state >= 2";

static int fail(dlq *q) {
  snprintf(q->error, sizeof q->error, "%s", sqlite3_errmsg(q->db));
  return -1;
}

int dlq_open(const char *data_dir, dlq **out, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/spool.db", data_dir);
  struct stat st;
  *out = NULL;
  if (stat(path, &st) != 0) {
    snprintf(err, errlen, "no spool at %s (hookd has not run with this data_dir yet)", path);
    return -1;
  }
  dlq *q = calloc(1, sizeof *q);
  if (q == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "cannot open %s: %s", path, q->db ? sqlite3_errmsg(q->db) : "no memory");
    dlq_close(q);
    return -1;
  }
  sqlite3_busy_timeout(q->db, 5000);
  sqlite3_stmt *s;
  int version = -1;
  if (sqlite3_prepare_v2(q->db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &s,
                         NULL) == SQLITE_OK) {
    if (sqlite3_step(s) == SQLITE_ROW) version = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
  }
  if (version != 3) {
    snprintf(err, errlen,
             "%s is not a hookd spool of schema version 3 (found %d; an older spool is "
             "upgraded when hookd starts on it)",
             path, version);
    dlq_close(q);
    return -1;
  }
  *out = q;
  return 0;
}

int dlq_open_pg(const char *url, dlq **out, char *err, size_t errlen) {
  *out = NULL;
  dlq *q = calloc(1, sizeof *q);
  if (q == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (spool_pg_admin_open(url, &q->pg, err, errlen) != 0) {
    free(q);
    return -1;
  }
  *out = q;
  return 0;
}

void dlq_close(dlq *q) {
  if (q == NULL) return;
  spool_pg_admin_close(q->pg);
  sqlite3_close(q->db);
  free(q);
}

const char *dlq_error(dlq *q) {
  if (q->pg && !q->own_error) return spool_pg_admin_error(q->pg);
  return q->error;
}

static char *col_dup(sqlite3_stmt *s, int i) {
  const unsigned char *t = sqlite3_column_text(s, i);
  return strdup(t ? (const char *)t : "");
}

static int read_entry(sqlite3_stmt *s, dlq_entry *e) {
  memset(e, 0, sizeof *e);
  e->id = sqlite3_column_int64(s, 0);
  e->source = col_dup(s, 1);
  e->event_id = col_dup(s, 2);
  e->type = col_dup(s, 3);
  e->instance = col_dup(s, 4);
  e->error = col_dup(s, 5);
  e->attempts = (uint32_t)sqlite3_column_int(s, 6);
  e->received_ms = sqlite3_column_int64(s, 7);
  e->failed_ms = sqlite3_column_int64(s, 8);
  if (!e->source || !e->event_id || !e->type || !e->instance || !e->error) {
    dlq_entry_clear(e);
    return -1;
  }
  return 0;
}

void dlq_entry_clear(dlq_entry *e) {
  free(e->source);
  free(e->event_id);
  free(e->type);
  free(e->instance);
  free(e->error);
  memset(e, 0, sizeof *e);
}

void dlq_entries_free(dlq_entry *e, size_t n) {
  for (size_t i = 0; i < n; i++) dlq_entry_clear(&e[i]);
  free(e);
}

int dlq_list(dlq *q, size_t limit, dlq_entry **out, size_t *n) {
  if (q->pg) return spool_pg_dlq_list(q->pg, limit, out, n);
  char sql[512];
  snprintf(sql, sizeof sql, "%s ORDER BY d.updated_ms DESC, d.id DESC LIMIT %lld", select_cols,
           limit ? (long long)limit : -1LL);
  sqlite3_stmt *s;
  *out = NULL;
  *n = 0;
  if (sqlite3_prepare_v2(q->db, sql, -1, &s, NULL) != SQLITE_OK) return fail(q);
  size_t cap = 0;
  int rc = 0;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    if (*n == cap) {
      cap = cap ? cap * 2 : 16;
      dlq_entry *ne = realloc(*out, cap * sizeof *ne);
      if (ne == NULL) break;
      *out = ne;
    }
    if (read_entry(s, &(*out)[*n]) != 0) break;
    (*n)++;
  }
  int ok = rc == SQLITE_DONE;
  if (!ok) fail(q);
  sqlite3_finalize(s);
  if (!ok) {
    dlq_entries_free(*out, *n);
    *out = NULL;
    *n = 0;
    return -1;
  }
  return 0;
}

int dlq_show(dlq *q, int64_t id, dlq_entry *out, char **body, size_t *body_len) {
  if (q->pg) return spool_pg_dlq_show(q->pg, id, out, body, body_len);
  char sql[512];
  snprintf(sql, sizeof sql, "%s AND d.id = ?1", select_cols);
  sqlite3_stmt *s;
  *body = NULL;
  *body_len = 0;
  if (sqlite3_prepare_v2(q->db, sql, -1, &s, NULL) != SQLITE_OK) return fail(q);
  sqlite3_bind_int64(s, 1, id);
  int rc = sqlite3_step(s);
  int result = DLQ_ENOTFOUND;
  if (rc == SQLITE_ROW) {
    result = read_entry(s, out);
    int len = sqlite3_column_bytes(s, 9);
    *body = malloc((size_t)len + 1);
    if (result == 0 && *body) {
      memcpy(*body, sqlite3_column_blob(s, 9), (size_t)len);
      (*body)[len] = '\0';
      *body_len = (size_t)len;
    } else {
      result = -1;
    }
  } else if (rc != SQLITE_DONE) {
    result = fail(q);
  }
  sqlite3_finalize(s);
  return result;
}

int64_t dlq_replay(dlq *q, int64_t id) {
  if (q->pg) return spool_pg_dlq_replay(q->pg, id);
  /* State 3 ("replay") is turned into a new pending delivery by a running
   * hookd within a second, or by the next start. */
  const char *sql = id > 0 ? "UPDATE deliveries SET state = 3, updated_ms = ?2 "
                             "WHERE state = 2 AND state >= 2 AND id = ?1"
                           : "UPDATE deliveries SET state = 3, updated_ms = ?2 "
                             "WHERE state = 2 AND state >= 2";
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(q->db, sql, -1, &s, NULL) != SQLITE_OK) return fail(q);
  if (id > 0) sqlite3_bind_int64(s, 1, id);
  sqlite3_bind_int64(s, 2, clock_now_ms());
  int rc = sqlite3_step(s);
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE) return fail(q);
  return sqlite3_changes(q->db);
}

int dlq_purge(dlq *q, int64_t id) {
  if (q->pg) return spool_pg_dlq_purge(q->pg, id);
  if (sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return fail(q);
  sqlite3_stmt *s = NULL;
  int64_t seq = -1;
  int rc = sqlite3_prepare_v2(q->db, "SELECT seq FROM deliveries WHERE id = ?1 AND state = 2", -1,
                              &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(s, 1, id);
    if (sqlite3_step(s) == SQLITE_ROW) seq = sqlite3_column_int64(s, 0);
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_OK) goto fail;
  if (seq < 0) {
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return DLQ_ENOTFOUND;
  }
  char sql[512];
  /* The event is done once nothing of it waits or is dead; pruning removes
   * it after retention like any finished event. */
  snprintf(sql, sizeof sql,
           "DELETE FROM deliveries WHERE id = %lld;"
           "DELETE FROM events WHERE seq = %lld AND NOT EXISTS "
           "(SELECT 1 FROM deliveries WHERE seq = %lld);"
           "DELETE FROM attempts WHERE seq = %lld AND NOT EXISTS "
           "(SELECT 1 FROM events WHERE seq = %lld);"
           "COMMIT;",
           (long long)id, (long long)seq, (long long)seq, (long long)seq, (long long)seq);
  if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK) goto fail;
  return 0;
fail:
  fail(q);
  sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
  return DLQ_EFAIL;
}

/* --- pause and resume ------------------------------------------------------------- */

int dlq_set_paused(dlq *q, const char *instance, int paused) {
  if (q->pg) return spool_pg_set_paused(q->pg, instance, paused, NULL);
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(
          q->db,
          "INSERT INTO instance_state(instance, paused, changed_ms) VALUES(?1, ?2, ?3) "
          "ON CONFLICT(instance) DO UPDATE SET paused = ?2, changed_ms = ?3 "
          "WHERE paused <> ?2",
          -1, &s, NULL) != SQLITE_OK) {
    return fail(q);
  }
  sqlite3_bind_text(s, 1, instance, -1, SQLITE_STATIC);
  sqlite3_bind_int(s, 2, paused ? 1 : 0);
  sqlite3_bind_int64(s, 3, clock_now_ms());
  int rc = sqlite3_step(s);
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? 0 : fail(q);
}

int dlq_get_paused(dlq *q, const char *instance, int *paused, int64_t *since_ms) {
  sqlite3_stmt *s;
  *paused = 0;
  *since_ms = 0;
  if (q->pg) return spool_pg_get_paused(q->pg, instance, paused, since_ms);
  if (sqlite3_prepare_v2(q->db, "SELECT paused, changed_ms FROM instance_state WHERE instance = ?1",
                         -1, &s, NULL) != SQLITE_OK) {
    return fail(q);
  }
  sqlite3_bind_text(s, 1, instance, -1, SQLITE_STATIC);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    *paused = sqlite3_column_int(s, 0);
    *since_ms = sqlite3_column_int64(s, 1);
  }
  sqlite3_finalize(s);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : fail(q);
}

/* --- back-fill ---------------------------------------------------------------------- */

/* Calls each(seq, arg) for every event f selects, in seq order. Returns the
 * count, or -1 (each() returning non-zero stops with -1). */
static int64_t select_events(dlq *q, const dlq_filter *f, int (*each)(int64_t seq, void *arg),
                             void *arg) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(q->db,
                         "SELECT seq, type FROM events WHERE received_ms >= ?1 AND "
                         "(?2 IS NULL OR source = ?2) ORDER BY seq",
                         -1, &s, NULL) != SQLITE_OK) {
    return fail(q);
  }
  sqlite3_bind_int64(s, 1, f->since_ms);
  if (f->source) {
    sqlite3_bind_text(s, 2, f->source, -1, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(s, 2);
  }
  int64_t n = 0;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *type = (const char *)sqlite3_column_text(s, 1);
    if (f->type_pattern && pattern_match(f->type_pattern, type ? type : "") != 1) continue;
    if (each && each(sqlite3_column_int64(s, 0), arg) != 0) {
      rc = SQLITE_ERROR;
      break;
    }
    n++;
  }
  if (rc != SQLITE_DONE) n = fail(q);
  sqlite3_finalize(s);
  return n;
}

/* PostgreSQL: the types received in f's window that f's pattern matches
 * (*types NULL: no pattern, any type), and how many events they have. The
 * patterns are the router's, so they are matched here, once per type. */
static int64_t pg_select_types(dlq *q, const dlq_filter *f, const char ***types, size_t *n,
                               spool_pg_type_count **all, size_t *n_all) {
  *types = NULL;
  *n = 0;
  if (spool_pg_event_types(q->pg, f->since_ms, f->source, all, n_all) != 0) return -1;
  if (f->type_pattern && (*types = calloc(*n_all + 1, sizeof **types)) == NULL) {
    snprintf(q->error, sizeof q->error, "out of memory");
    q->own_error = 1;
    return -1;
  }
  int64_t count = 0;
  for (size_t i = 0; i < *n_all; i++) {
    if (f->type_pattern && pattern_match(f->type_pattern, (*all)[i].type) != 1) continue;
    if (*types) (*types)[(*n)++] = (*all)[i].type;
    count += (*all)[i].count;
  }
  return count;
}

int64_t dlq_backfill_count(dlq *q, const dlq_filter *f) {
  if (q->pg) {
    const char **types;
    spool_pg_type_count *all = NULL;
    size_t n, n_all = 0;
    int64_t count = pg_select_types(q, f, &types, &n, &all, &n_all);
    free(types);
    spool_pg_type_counts_free(all, n_all);
    return count;
  }
  return select_events(q, f, NULL, NULL);
}

typedef struct mark_ctx {
  sqlite3_stmt *ins;
  int64_t id;
} mark_ctx;

static int mark_event(int64_t seq, void *arg) {
  mark_ctx *m = arg;
  sqlite3_bind_int64(m->ins, 1, m->id);
  sqlite3_bind_int64(m->ins, 2, seq);
  int rc = sqlite3_step(m->ins);
  sqlite3_reset(m->ins);
  return rc == SQLITE_DONE ? 0 : -1;
}

int64_t dlq_backfill_start(dlq *q, const char *instance, const dlq_filter *f, const char *what,
                           int64_t *total) {
  *total = 0;
  if (q->pg) {
    const char **types;
    spool_pg_type_count *all = NULL;
    size_t n, n_all = 0;
    int64_t id = pg_select_types(q, f, &types, &n, &all, &n_all);
    if (id >= 0) {
      q->own_error = 0;
      id = spool_pg_backfill_start(q->pg, instance, f->since_ms, f->source, types, n, what, total);
    }
    free(types);
    spool_pg_type_counts_free(all, n_all);
    return id;
  }
  if (sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return fail(q);
  sqlite3_stmt *s = NULL;
  mark_ctx m = {NULL, 0};
  int rc = sqlite3_prepare_v2(q->db,
                              "INSERT INTO backfills(instance, what, created_ms, total) "
                              "VALUES(?1, ?2, ?3, 0)",
                              -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(s, 1, instance, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, what, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, clock_now_ms());
    rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    m.id = sqlite3_last_insert_rowid(q->db);
  }
  sqlite3_finalize(s);
  if (rc == SQLITE_OK) {
    rc = sqlite3_prepare_v2(q->db, "INSERT INTO backfill_events(backfill, seq) VALUES(?1, ?2)", -1,
                            &m.ins, NULL);
  }
  int64_t n = rc == SQLITE_OK ? select_events(q, f, mark_event, &m) : -1;
  sqlite3_finalize(m.ins);
  char sql[160];
  /* Nothing selected: finished at once, so that hookd has nothing to do. */
  snprintf(sql, sizeof sql, "UPDATE backfills SET total = %lld%s WHERE id = %lld", (long long)n,
           n == 0 ? ", finished_ms = created_ms" : "", (long long)m.id);
  if (n < 0 || sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    if (n >= 0) fail(q);
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
  }
  *total = n;
  return m.id;
}

int dlq_backfill_progress_get(dlq *q, int64_t id, dlq_backfill_progress *out) {
  memset(out, 0, sizeof *out);
  if (q->pg) return spool_pg_backfill_progress(q->pg, id, out);
  sqlite3_stmt *s;
  /* A delivered row is deleted: what the back-fill queued and is neither
   * waiting nor dead was delivered. */
  if (sqlite3_prepare_v2(q->db,
                         "SELECT total, queued, finished_ms IS NOT NULL, "
                         "(SELECT count(*) FROM deliveries WHERE replay = ?1 AND state = 0), "
                         "(SELECT count(*) FROM deliveries WHERE replay = ?1 AND state = 2) "
                         "FROM backfills WHERE id = ?1",
                         -1, &s, NULL) != SQLITE_OK) {
    return fail(q);
  }
  sqlite3_bind_int64(s, 1, id);
  int rc = sqlite3_step(s), result = DLQ_ENOTFOUND;
  if (rc == SQLITE_ROW) {
    out->total = sqlite3_column_int64(s, 0);
    out->queued = sqlite3_column_int64(s, 1);
    out->finished = sqlite3_column_int(s, 2);
    out->dead = sqlite3_column_int64(s, 4);
    out->delivered = out->queued - sqlite3_column_int64(s, 3) - out->dead;
    if (out->delivered < 0) out->delivered = 0;
    result = 0;
  } else if (rc != SQLITE_DONE) {
    result = fail(q);
  }
  sqlite3_finalize(s);
  return result;
}

/* --- events ---------------------------------------------------------------------------- */

static int read_event_row(sqlite3_stmt *s, dlq_event_row *r) {
  memset(r, 0, sizeof *r);
  r->seq = sqlite3_column_int64(s, 0);
  r->source = col_dup(s, 1);
  r->event_id = col_dup(s, 2);
  r->type = col_dup(s, 3);
  r->order_key = col_dup(s, 4);
  r->received_ms = sqlite3_column_int64(s, 5);
  r->done = sqlite3_column_int(s, 6);
  return r->source && r->event_id && r->type && r->order_key ? 0 : -1;
}

static void event_row_clear(dlq_event_row *r) {
  free(r->source);
  free(r->event_id);
  free(r->type);
  free(r->order_key);
}

void dlq_event_rows_free(dlq_event_row *rows, size_t n) {
  for (size_t i = 0; i < n; i++) event_row_clear(&rows[i]);
  free(rows);
}

/* An event is finished when no delivery row of it is left (delivered rows
 * are deleted; pending and dead ones stay). */
#define EVENT_COLS                                                                        \
  "SELECT seq, source, event_id, type, coalesce(order_key, ''), received_ms, NOT EXISTS " \
  "(SELECT 1 FROM deliveries d WHERE d.seq = events.seq)"

/* Appends the rows of s (bound) to *out, skipping seqs already there. */
static int collect_rows(dlq *q, sqlite3_stmt *s, size_t limit, dlq_event_row **out, size_t *n) {
  int rc = SQLITE_DONE;
  while (*n < limit && (rc = sqlite3_step(s)) == SQLITE_ROW) {
    int64_t seq = sqlite3_column_int64(s, 0);
    int seen = 0;
    for (size_t i = 0; i < *n && !seen; i++) seen = (*out)[i].seq == seq;
    if (seen) continue;
    dlq_event_row *grown = realloc(*out, (*n + 1) * sizeof **out);
    if (grown == NULL) return -1;
    *out = grown;
    if (read_event_row(s, &(*out)[*n]) != 0) {
      event_row_clear(&(*out)[*n]);
      return -1;
    }
    (*n)++;
  }
  return *n >= limit || rc == SQLITE_DONE ? 0 : fail(q);
}

#define SEARCH_RECENT "100000"

int dlq_find_events(dlq *q, const char *text, const char *const *sources, size_t n_sources,
                    size_t limit, dlq_event_row **out, size_t *n_out) {
  *out = NULL;
  *n_out = 0;
  if (q->pg) return spool_pg_find_events(q->pg, text, sources, n_sources, limit, out, n_out);
  /* By id, one source at a time (the UNIQUE(source, event_id) index), then
   * by order key among the newest SEARCH_RECENT events. An index on the
   * order key would cost a page written at a random place for every event
   * stored; a search on the page can afford a bounded scan. */
  sqlite3_stmt *s = NULL;
  int rc = sqlite3_prepare_v2(q->db, EVENT_COLS " FROM events WHERE source = ?1 AND event_id = ?2",
                              -1, &s, NULL);
  for (size_t i = 0; i < n_sources && rc == SQLITE_OK; i++) {
    sqlite3_bind_text(s, 1, sources[i], -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, text, -1, SQLITE_STATIC);
    if (collect_rows(q, s, limit, out, n_out) != 0) rc = SQLITE_ERROR;
    sqlite3_reset(s);
  }
  sqlite3_finalize(s);
  s = NULL;
  if (rc == SQLITE_OK) {
    rc = sqlite3_prepare_v2(
        q->db,
        EVENT_COLS " FROM events WHERE seq > (SELECT coalesce(max(seq), 0) - " SEARCH_RECENT
                   " FROM events) AND order_key = ?1 ORDER BY seq DESC",
        -1, &s, NULL);
  }
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(s, 1, text, -1, SQLITE_STATIC);
    if (collect_rows(q, s, limit, out, n_out) != 0) rc = SQLITE_ERROR;
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_OK) {
    if (!q->error[0]) fail(q);
    dlq_event_rows_free(*out, *n_out);
    *out = NULL;
    *n_out = 0;
    return -1;
  }
  return 0;
}

static const char *const delivery_states[] = {"pending", "delivered", "dead", "replay asked"};

dlq_delivery *dlq_event_detail_add(dlq_event_detail *d) {
  dlq_delivery *grown = realloc(d->deliveries, (d->n_deliveries + 1) * sizeof *grown);
  if (grown == NULL) return NULL;
  d->deliveries = grown;
  dlq_delivery *dv = &d->deliveries[d->n_deliveries++];
  memset(dv, 0, sizeof *dv);
  return dv;
}

/* The instance's entry: its delivery row's, or, when none is left (a
 * delivered row is deleted), a new one that says "delivered". */
static dlq_delivery *delivery_of(dlq_event_detail *d, const char *inst) {
  for (size_t i = d->n_deliveries; i-- > 0;) {
    if (strcmp(d->deliveries[i].instance, inst) == 0) return &d->deliveries[i];
  }
  dlq_delivery *dv = dlq_event_detail_add(d);
  if (dv == NULL) return NULL;
  dv->instance = strdup(inst);
  dv->state = strdup("delivered");
  dv->last_error = strdup("");
  if (!dv->instance || !dv->state || !dv->last_error) return NULL;
  return dv;
}

/* The kept calls of seq, by instance and time. */
static int read_calls(dlq *q, int64_t seq, dlq_event_detail *d) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(q->db,
                         "SELECT instance, attempt, started_ms, took_ms, outcome, status, "
                         "coalesce(answer, ''), coalesce(message, '') FROM attempts "
                         "WHERE seq = ?1 ORDER BY instance, started_ms, slot",
                         -1, &s, NULL) != SQLITE_OK) {
    return fail(q);
  }
  sqlite3_bind_int64(s, 1, seq);
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const char *inst = (const char *)sqlite3_column_text(s, 0);
    dlq_delivery *dv = delivery_of(d, inst ? inst : "");
    dlq_attempt *grown = dv ? realloc(dv->calls, (dv->n_calls + 1) * sizeof *grown) : NULL;
    if (grown == NULL) break;
    dv->calls = grown;
    dlq_attempt *a = &dv->calls[dv->n_calls++];
    a->attempt = (uint32_t)sqlite3_column_int(s, 1);
    a->started_ms = sqlite3_column_int64(s, 2);
    a->took_ms = sqlite3_column_int64(s, 3);
    a->outcome = col_dup(s, 4);
    a->status = sqlite3_column_int(s, 5);
    a->answer = col_dup(s, 6);
    a->message = col_dup(s, 7);
    if (dv->id == 0 && a->attempt > dv->attempts) dv->attempts = a->attempt;
  }
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? 0 : fail(q);
}

static int read_deliveries(dlq *q, dlq_event_detail *d) {
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(q->db,
                         "SELECT id, instance, state, attempt, crashes, next_ms, updated_ms, "
                         "coalesce(last_error, ''), coalesce(replay, 0) FROM deliveries "
                         "WHERE seq = ?1 ORDER BY id",
                         -1, &s, NULL) != SQLITE_OK) {
    return fail(q);
  }
  sqlite3_bind_int64(s, 1, d->ev.seq);
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    dlq_delivery *dv = dlq_event_detail_add(d);
    if (dv == NULL) break;
    dv->id = sqlite3_column_int64(s, 0);
    dv->instance = col_dup(s, 1);
    int st = sqlite3_column_int(s, 2);
    dv->state = strdup(delivery_states[st >= 0 && st <= 3 ? st : 0]);
    dv->attempts = (uint32_t)sqlite3_column_int(s, 3);
    dv->crashes = (uint32_t)sqlite3_column_int(s, 4);
    dv->next_ms = sqlite3_column_int64(s, 5);
    dv->updated_ms = sqlite3_column_int64(s, 6);
    dv->last_error = col_dup(s, 7);
    dv->backfill = sqlite3_column_int64(s, 8);
  }
  sqlite3_finalize(s);
  return rc == SQLITE_DONE ? 0 : fail(q);
}

int dlq_event_detail_get(dlq *q, const char *source, const char *event_id, dlq_event_detail *out) {
  memset(out, 0, sizeof *out);
  if (q->pg) return spool_pg_event_detail(q->pg, source, event_id, out);
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(q->db,
                         EVENT_COLS ", content_type, coalesce(headers, ''), body FROM events "
                                    "WHERE source = ?1 AND event_id = ?2",
                         -1, &s, NULL) != SQLITE_OK) {
    return fail(q);
  }
  sqlite3_bind_text(s, 1, source, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, event_id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(s), result = DLQ_ENOTFOUND;
  if (rc == SQLITE_ROW) {
    result = read_event_row(s, &out->ev);
    out->content_type = col_dup(s, 7);
    out->headers = col_dup(s, 8);
    int len = sqlite3_column_bytes(s, 9);
    out->body = malloc((size_t)len + 1);
    if (out->body) {
      memcpy(out->body, sqlite3_column_blob(s, 9), (size_t)len);
      out->body[len] = '\0';
      out->body_len = (size_t)len;
    }
    if (!out->content_type || !out->headers || !out->body) result = -1;
  } else if (rc != SQLITE_DONE) {
    result = fail(q);
  }
  sqlite3_finalize(s);
  if (result == 0) result = read_deliveries(q, out);
  if (result == 0) result = read_calls(q, out->ev.seq, out);
  if (result < 0) {
    dlq_event_detail_free(out);
    return -1;
  }
  return result;
}

void dlq_event_detail_free(dlq_event_detail *d) {
  event_row_clear(&d->ev);
  free(d->content_type);
  free(d->headers);
  free(d->body);
  for (size_t i = 0; i < d->n_deliveries; i++) {
    dlq_delivery *dv = &d->deliveries[i];
    for (size_t k = 0; k < dv->n_calls; k++) {
      free(dv->calls[k].outcome);
      free(dv->calls[k].answer);
      free(dv->calls[k].message);
    }
    free(dv->calls);
    free(dv->instance);
    free(dv->state);
    free(dv->last_error);
  }
  free(d->deliveries);
  memset(d, 0, sizeof *d);
}
