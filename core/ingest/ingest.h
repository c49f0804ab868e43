/* Ingest: the webhook request path (allow_ips, verify, decode, dedupe, route, spool, answer). */
#ifndef HOOKD_INGEST_H
#define HOOKD_INGEST_H

#include "generation.h"
#include "http_server.h"
#include "spool.h"

/* What the webhook listeners share: the current generation (its sources,
 * router and instances' lanes) and the spool. Loop thread only. */
typedef struct ingest ingest;

/* The request path for g's sources into sp. Holds a reference on g; sp
 * must outlive it. Returns NULL when out of memory. */
ingest *ingest_new(generation *g, spool *sp);

/* Makes g current: requests whose headers arrive from now on use its
 * sources, router and instances (requests in flight keep theirs). Returns
 * 0, or -1 when out of memory (nothing changed). */
int ingest_set_generation(ingest *in, generation *g);

/* The handler a webhook listener serves with (its data is in). */
http_handler ingest_handler(ingest *in);

/* Shutdown began: a request that completes from now on is answered 503. */
void ingest_drain(ingest *in);

/* Drops the generation reference. After the listeners' connections closed. */
void ingest_free(ingest *in);

#endif
