/* Ingest: the webhook and admin listeners and the request path (verify, decode, dedupe, route, spool). */
#ifndef HOOKD_INGEST_H
#define HOOKD_INGEST_H

#include <stddef.h>
#include <uv.h>
#include "admin.h"
#include "generation.h"
#include "spool.h"

typedef struct ingest ingest;

/* Binds every address of cfg->listen (and admin_listen) and starts
 * accepting. The server holds a reference on g; sp must outlive it. Returns NULL with
 * err set when an address cannot be bound; call it before the loop has other
 * handles (it runs the loop to close what it opened). */
ingest *ingest_new(uv_loop_t *loop, generation *g, spool *sp, char *err, size_t errlen);

/* Makes g the current generation (the server holds a reference; requests in
 * flight keep theirs). Listen addresses stay as bound. Returns 0 or -1. */
int ingest_set_generation(ingest *s, generation *g);

/* Loop thread, at the swap of a reload: every TLS listener serves the
 * context cfg built for it (config_load read the files beforehand, on any
 * thread), keeping its session ticket keys; open connections keep theirs.
 * A listener whose TLS was turned on or off keeps its state (that takes a
 * restart) and says so. ingest_set_generation calls it. Returns how many
 * listeners changed certificate. */
int ingest_reload_tls(ingest *s, const config *cfg);

/* What POST /reload on the admin listener calls (admin.h). */
void ingest_set_reload(ingest *s, void (*reload)(void *data, admin_reload_done done, void *arg),
                       void *data);

/* Stops accepting, answers requests in progress, closes connections, then
 * calls done(data) once. */
void ingest_drain(ingest *s, void (*done)(void *data), void *data);

/* After ingest_drain: closes the connections still open, except those
 * waiting for the spool's answer; the drain's done() follows once they end. */
void ingest_abort(ingest *s);

/* Frees the server after its handles closed (after the loop ran out). */
void ingest_free(ingest *s);

#endif
