/* PostgreSQL spool backend: one spool shared by several hookd nodes (DESIGN §10). */
#ifndef HOOKD_SPOOL_PG_H
#define HOOKD_SPOOL_PG_H

/*
 * The same table of operations as the embedded backend (spool.h), over a
 * PostgreSQL database that several nodes share: any node accepts, any node
 * delivers, and a node that dies leaves nothing stranded.
 *
 * Threads and connections. The loop thread never waits for PostgreSQL:
 * it queues stores and gets their outcome through a uv_async. Two threads
 * of the backend own one blocking libpq connection each: the writer (group
 * commits in pipeline mode: stores, attempt-started marks, outcomes, lease
 * renewals, housekeeping) and the claimer (LISTEN for wake-ups, claims due
 * deliveries into the lanes' windows). A thread per connection, rather than
 * libpq's non-blocking calls on uv_poll, keeps the loop free of reconnect,
 * pipeline and result-parsing logic, and lets a commit's fsync on the server
 * overlap the loop's work exactly as the SQLite writer thread does.
 *
 * Claims. A node claims, with FOR UPDATE SKIP LOCKED, the due deliveries of
 * a lane that head their (instance, order key) among the unfinished ones and
 * whose key has no live lease elsewhere, and leases them for spool.lease_ms
 * (renewed while held). Per key, cluster-wide: one delivery in flight, in
 * accept order. A lease that expires (its node died) is taken over by the
 * next claim on any node; if that attempt had been started, it counts as a
 * crash.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

struct config;
#include "dlq.h"
#include "spool.h"

/* Connects, creates or migrates the schema (refusing a newer one) and
 * registers this node. Loop thread; the threads start in recover(). */
spool *spool_pg_open(const struct config *cfg, uv_loop_t *loop, int *code, char *err,
                     size_t errlen);

/* `hookd spool check` against PostgreSQL (hookd may be running on any
 * node): schema version, counts, nodes, and the tables' consistency, written
 * to out. Returns 0 healthy, SPOOL_EDAMAGED damaged, SPOOL_EFAIL when it
 * could not look (err says why). */
int spool_pg_check(const struct config *cfg, FILE *out, char *err, size_t errlen);

/* A connection for `hookd dlq|pause|resume|replay` and the admin page
 * (dead letters, back-fills, search, event detail), from any node, whether
 * hookd runs or not. The functions mirror dlq.h's. */
typedef struct spool_pg_admin spool_pg_admin;
int spool_pg_admin_open(const char *url, spool_pg_admin **out, char *err, size_t errlen);
void spool_pg_admin_close(spool_pg_admin *a);
const char *spool_pg_admin_error(spool_pg_admin *a);
int spool_pg_dlq_list(spool_pg_admin *a, size_t limit, dlq_entry **out, size_t *n);
/* The dlq.h functions of the same names against PostgreSQL, with their
 * return codes. */
int spool_pg_dlq_show(spool_pg_admin *a, int64_t id, dlq_entry *out, char **body, size_t *body_len);
/* Makes one (id > 0) or every dead letter pending again, attempt and crash
 * counts reset, due now, and wakes every node: one of them delivers it at
 * once. Returns how many, or -1. */
int64_t spool_pg_dlq_replay(spool_pg_admin *a, int64_t id);
int spool_pg_dlq_purge(spool_pg_admin *a, int64_t id);

/* `hookd pause|resume`: stored in hookd_instances and NOTIFYd, so every
 * node applies it within milliseconds (within a second at worst). *since_ms
 * (may be NULL): since when it is paused, 0 when resumed. 0 or -1. */
int spool_pg_set_paused(spool_pg_admin *a, const char *instance, int paused, int64_t *since_ms);
int spool_pg_get_paused(spool_pg_admin *a, const char *instance, int *paused, int64_t *since_ms);

/* Back-fills (`hookd replay`). The event types received since since_ms
 * (from source; NULL: any) with their counts, so that the caller matches
 * --type patterns once per type: */
typedef struct spool_pg_type_count {
  char *type;
  int64_t count;
} spool_pg_type_count;
int spool_pg_event_types(spool_pg_admin *a, int64_t since_ms, const char *source,
                         spool_pg_type_count **out, size_t *n);
void spool_pg_type_counts_free(spool_pg_type_count *t, size_t n);
/* Selects the events since since_ms, from source, of one of types (NULL:
 * any type) for instance; any running node's writer turns them into
 * deliveries within a second, a stopped cluster's first node when it
 * starts. Returns the back-fill's id with *total, or -1. */
int64_t spool_pg_backfill_start(spool_pg_admin *a, const char *instance, int64_t since_ms,
                                const char *source, const char *const *types, size_t n_types,
                                const char *what, int64_t *total);
/* 0, DLQ_ENOTFOUND when there is no such back-fill, DLQ_EFAIL. */
int spool_pg_backfill_progress(spool_pg_admin *a, int64_t id, dlq_backfill_progress *out);

/* The status page's search and event detail (dlq.h's contracts). */
int spool_pg_find_events(spool_pg_admin *a, const char *text, const char *const *sources,
                         size_t n_sources, size_t limit, dlq_event_row **out, size_t *n_out);
int spool_pg_event_detail(spool_pg_admin *a, const char *source, const char *event_id,
                          dlq_event_detail *out);

#endif
