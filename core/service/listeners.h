/* Listeners: bind the webhook and admin addresses, serve them, swap generations, drain at shutdown.
 */
#ifndef HOOKD_LISTENERS_H
#define HOOKD_LISTENERS_H

#include <stddef.h>
#include <uv.h>
#include "admin.h"
#include "generation.h"
#include "spool.h"

typedef struct listeners listeners;

/* Binds every address of cfg->listen (and admin_listen) and starts
 * accepting: webhooks go to the request path (ingest.h), the admin
 * listener to admin.h. Holds a reference on g; sp must outlive it. Returns
 * NULL with err set when an address cannot be bound; call it before the
 * loop has other handles (it runs the loop to close what it opened). */
listeners *listeners_new(uv_loop_t *loop, generation *g, spool *sp, char *err, size_t errlen);

/* Makes g the current generation (requests in flight keep theirs). Listen
 * addresses stay as bound. Returns 0 or -1. */
int listeners_set_generation(listeners *s, generation *g);

/* Loop thread, at the swap of a reload: every TLS listener serves the
 * context cfg built for it (config_load read the files beforehand, on any
 * thread), keeping its session ticket keys; open connections keep theirs.
 * A listener whose TLS was turned on or off keeps its state (that takes a
 * restart) and says so. listeners_set_generation calls it. Returns how many
 * listeners changed certificate. */
int listeners_reload_tls(listeners *s, const struct config *cfg);

/* What POST /reload on the admin listener calls (admin.h). */
void listeners_set_reload(listeners *s,
                          void (*reload)(void *data, admin_reload_done done, void *arg),
                          void *data);

/* Stops accepting, answers requests in progress, closes connections, then
 * calls done(data) once. */
void listeners_drain(listeners *s, void (*done)(void *data), void *data);

/* After listeners_drain: closes the connections still open, except those
 * waiting for the spool's answer; the drain's done() follows once they end. */
void listeners_abort(listeners *s);

/* Frees the listeners after their handles closed (after the loop ran out). */
void listeners_free(listeners *s);

#endif
