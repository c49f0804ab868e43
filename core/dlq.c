/* Dead letters in the spool database: list, show, replay, purge, on a connection of their own. */
#include "dlq.h"

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
  char error[256];
};

/* "state >= 2" beside every test on state lets SQLite use the partial index
 * deliveries_dead (dead letters and replay requests; see spool_sqlite.c). */
static const char select_cols[] =
    "SELECT d.id, e.source, e.event_id, e.type, d.instance, coalesce(d.last_error, ''), "
    "d.attempt, e.received_ms, d.updated_ms, e.body FROM deliveries d JOIN events e "
    "ON e.seq = d.seq WHERE d.state = 2 AND d.state >= 2";

static int64_t now_ms_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
  if (version != 2) {
    snprintf(err, errlen,
             "%s is not a hookd spool of schema version 2 (found %d; a version 1 spool is "
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
  if (q->pg) return spool_pg_admin_error(q->pg);
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
  int result = 1;
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
  sqlite3_bind_int64(s, 2, now_ms_());
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
  int rc = sqlite3_prepare_v2(q->db, "SELECT seq FROM deliveries WHERE id = ?1 AND state = 2",
                              -1, &s, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(s, 1, id);
    if (sqlite3_step(s) == SQLITE_ROW) seq = sqlite3_column_int64(s, 0);
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_OK) goto fail;
  if (seq < 0) {
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return 0;
  }
  char sql[512];
  /* The event is done once nothing of it waits or is dead; pruning removes
   * it after retention like any finished event. */
  snprintf(sql, sizeof sql,
           "DELETE FROM deliveries WHERE id = %lld;"
           "DELETE FROM events WHERE seq = %lld AND NOT EXISTS "
           "(SELECT 1 FROM deliveries WHERE seq = %lld);"
           "COMMIT;",
           (long long)id, (long long)seq, (long long)seq);
  if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK) goto fail;
  return 1;
fail:
  fail(q);
  sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}
