/* The SQLite spool seen from outside its writer — dead letters (list, show, replay, purge), pause
 * and resume, back-fills, event search and detail — for the CLI and the admin page. */
#ifndef HOOKD_DLQ_H
#define HOOKD_DLQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct dlq dlq;

/* One dead delivery. Strings are owned by the entry (dlq_entry_clear). */
typedef struct dlq_entry {
  int64_t id; /* delivery id: what replay/purge take */
  char *source;
  char *event_id;
  char *type;
  char *instance; /* plugin instance name */
  char *error;    /* the last error */
  uint32_t attempts;
  int64_t received_ms; /* when the event was accepted */
  int64_t failed_ms;   /* when the delivery died */
} dlq_entry;

/* Opens data_dir/spool.db with its own connection (WAL: works whether hookd
 * runs or not). Returns 0, or -1 with err set (no spool yet, wrong schema). */
int dlq_open(const char *data_dir, dlq **out, char *err, size_t errlen);
/* The same against a PostgreSQL spool (spool.url), from any node. */
int dlq_open_pg(const char *url, dlq **out, char *err, size_t errlen);
void dlq_close(dlq *q);

/* What the functions below return besides 0 (found, done) or a count. */
#define DLQ_EFAIL (-1)     /* the store failed: dlq_error says why */
#define DLQ_ENOTFOUND (-2) /* no dead letter, back-fill or event with that id */

/* The dead letters, newest first, at most limit (0: all). *out is an array
 * of *n entries to free with dlq_entries_free. */
int dlq_list(dlq *q, size_t limit, dlq_entry **out, size_t *n);
void dlq_entries_free(dlq_entry *e, size_t n);
/* One dead letter and its event body (malloc'd, *body_len bytes). Returns 0,
 * DLQ_ENOTFOUND when there is no dead letter with that id, DLQ_EFAIL on error. */
int dlq_show(dlq *q, int64_t id, dlq_entry *out, char **body, size_t *body_len);
void dlq_entry_clear(dlq_entry *e);
/* Marks one (id > 0) or every (id == 0) dead letter for another try: attempt
 * count reset, due now. A running hookd picks it up within a second; a
 * stopped one on its next start. Returns how many, or -1 on error. */
int64_t dlq_replay(dlq *q, int64_t id);
/* Deletes one dead letter (and its event when nothing else refers to it).
 * Returns 0, DLQ_ENOTFOUND when there is no such dead letter, DLQ_EFAIL on error. */
int dlq_purge(dlq *q, int64_t id);
const char *dlq_error(dlq *q);

/* --- pause and resume (instance_state) ---------------------------------------
 * Written here, read by a running hookd within a second (and at every start).
 * Return 0, or -1 (dlq_error). */
int dlq_set_paused(dlq *q, const char *instance, int paused);
/* *paused 0 or 1 and since when (Unix ms, 0 when never paused). */
int dlq_get_paused(dlq *q, const char *instance, int *paused, int64_t *since_ms);

/* --- back-fill (`hookd replay`) -------------------------------------------------
 * The stored events received since since_ms (within retention), of a type
 * matching type_pattern (router rules; NULL: any) and from source (NULL:
 * any), in accept order. */
typedef struct dlq_filter {
  int64_t since_ms;
  const char *type_pattern;
  const char *source;
} dlq_filter;
/* How many events the filter selects (--dry-run); -1 on error. */
int64_t dlq_backfill_count(dlq *q, const dlq_filter *f);
/* Asks for every selected event to be delivered again to instance: a
 * running hookd turns them into new deliveries within a second, a stopped
 * one when it starts. what describes the filter for the page. Returns the
 * back-fill's id (> 0) with *total, or -1 on error. */
int64_t dlq_backfill_start(dlq *q, const char *instance, const dlq_filter *f, const char *what,
                           int64_t *total);
typedef struct dlq_backfill_progress {
  int64_t total;     /* events selected */
  int64_t queued;    /* made into deliveries by hookd so far */
  int64_t delivered; /* of which delivered */
  int64_t dead;      /* of which dead letters */
  int finished;      /* every selected event was queued */
} dlq_backfill_progress;
/* Returns 0, DLQ_ENOTFOUND when there is no back-fill with that id, DLQ_EFAIL
 * on error. */
int dlq_backfill_progress_get(dlq *q, int64_t id, dlq_backfill_progress *out);

/* --- events (the status page's search and detail) ------------------------------ */
typedef struct dlq_event_row {
  int64_t seq;
  char *source, *event_id, *type, *order_key; /* order_key may be "" */
  int64_t received_ms;
  int done;
} dlq_event_row;
/* Events whose id (in one of the n sources) or order key is text, newest
 * first, at most limit. *out: an array of *n_out to free with
 * dlq_event_rows_free. */
int dlq_find_events(dlq *q, const char *text, const char *const *sources, size_t n_sources,
                    size_t limit, dlq_event_row **out, size_t *n_out);
void dlq_event_rows_free(dlq_event_row *rows, size_t n);

typedef struct dlq_attempt {
  int64_t started_ms, took_ms;
  uint32_t attempt;
  char *outcome, *answer, *message; /* answer/message may be "" */
  int32_t status;
} dlq_attempt;
typedef struct dlq_delivery {
  int64_t id;
  char *instance;
  char *state; /* "pending", "delivered", "dead", "replay asked" */
  uint32_t attempts, crashes;
  int64_t next_ms, updated_ms;
  char *last_error;   /* "" when none */
  int64_t backfill;   /* the back-fill that made it, 0: none */
  dlq_attempt *calls; /* by time */
  size_t n_calls;
} dlq_delivery;
typedef struct dlq_event_detail {
  dlq_event_row ev;
  char *content_type, *headers; /* headers: "" when not kept */
  char *body;
  size_t body_len;
  dlq_delivery *deliveries; /* by id */
  size_t n_deliveries;
} dlq_event_detail;
/* One event with its deliveries and their recorded calls. Returns 0,
 * DLQ_ENOTFOUND when there is no such event, DLQ_EFAIL on error. Free with
 * dlq_event_detail_free. */
int dlq_event_detail_get(dlq *q, const char *source, const char *event_id, dlq_event_detail *out);
void dlq_event_detail_free(dlq_event_detail *d);
/* A new delivery entry at the end of d's (zeroed), for the backends that
 * fill a detail; NULL when out of memory. */
dlq_delivery *dlq_event_detail_add(dlq_event_detail *d);

#endif
