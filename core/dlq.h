/* Dead letters in the spool database: list, show, replay, purge — for the CLI and the admin page. */
#ifndef HOOKD_DLQ_H
#define HOOKD_DLQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct dlq dlq;

/* One dead delivery. Strings are owned by the entry (dlq_entry_clear). */
typedef struct dlq_entry {
  int64_t id;          /* delivery id: what replay/purge take */
  char *source;
  char *event_id;
  char *type;
  char *instance;      /* plugin instance name */
  char *error;         /* the last error */
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

/* The dead letters, newest first, at most limit (0: all). *out is an array
 * of *n entries to free with dlq_entries_free. */
int dlq_list(dlq *q, size_t limit, dlq_entry **out, size_t *n);
void dlq_entries_free(dlq_entry *e, size_t n);
/* One dead letter and its event body (malloc'd, *body_len bytes). Returns 0,
 * 1 when there is no dead letter with that id, -1 on error. */
int dlq_show(dlq *q, int64_t id, dlq_entry *out, char **body, size_t *body_len);
void dlq_entry_clear(dlq_entry *e);
/* Marks one (id > 0) or every (id == 0) dead letter for another try: attempt
 * count reset, due now. A running hookd picks it up within a second; a
 * stopped one on its next start. Returns how many, or -1 on error. */
int64_t dlq_replay(dlq *q, int64_t id);
/* Deletes one dead letter (and its event when nothing else refers to it).
 * Returns 1, 0 when not found, -1 on error. */
int dlq_purge(dlq *q, int64_t id);
const char *dlq_error(dlq *q);

#endif
