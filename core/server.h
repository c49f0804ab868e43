/* Server: the webhook and admin listeners and what they do with a request (verify, decode, dedupe, route, spool). */
#ifndef HOOKD_SERVER_H
#define HOOKD_SERVER_H

#include <stddef.h>
#include <uv.h>
#include "admin.h"
#include "generation.h"
#include "spool.h"

typedef struct server server;

/* Binds every address of cfg->listen (and admin_listen) and starts
 * accepting. The server holds a reference on g; sp must outlive it. Returns NULL with
 * err set when an address cannot be bound; call it before the loop has other
 * handles (it runs the loop to close what it opened). */
server *server_new(uv_loop_t *loop, generation *g, spool *sp, char *err, size_t errlen);

/* Makes g the current generation (the server holds a reference; requests in
 * flight keep theirs). Listen addresses stay as bound. Returns 0 or -1. */
int server_set_generation(server *s, generation *g);

/* Loop thread, at the swap of a reload: every TLS listener serves the
 * context cfg built for it (config_load read the files beforehand, on any
 * thread), keeping its session ticket keys; open connections keep theirs.
 * A listener whose TLS was turned on or off keeps its state (that takes a
 * restart) and says so. server_set_generation calls it. Returns how many
 * listeners changed certificate. */
int server_reload_tls(server *s, const config *cfg);

/* What POST /reload on the admin listener calls (admin.h). */
void server_set_reload(server *s, void (*reload)(void *data, admin_reload_done done, void *arg),
                       void *data);

/* Stops accepting, answers requests in progress, closes connections, then
 * calls done(data) once. */
void server_drain(server *s, void (*done)(void *data), void *data);

/* After server_drain: closes the connections still open, except those
 * waiting for the spool's answer; the drain's done() follows once they end. */
void server_abort(server *s);

/* Frees the server after its handles closed (after the loop ran out). */
void server_free(server *s);

#endif
