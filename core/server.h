/* Server: the webhook and admin listeners and what they do with a request (verify, decode, dedupe, route, spool). */
#ifndef HOOKD_SERVER_H
#define HOOKD_SERVER_H

#include <stddef.h>
#include <uv.h>
#include "config.h"
#include "dispatch.h"
#include "plugin_host.h"
#include "router.h"
#include "spool.h"

typedef struct server server;

/* Binds every address of cfg->listen (and admin_listen) and starts
 * accepting. Everything passed in must outlive the server. Returns NULL with
 * err set when an address cannot be bound; call it before the loop has other
 * handles (it runs the loop to close what it opened). */
server *server_new(uv_loop_t *loop, const config *cfg, router *rt, spool *sp, plugin_host *host,
                   char *err, size_t errlen);

/* Stops accepting, answers requests in progress, closes connections, then
 * calls done(data) once. */
void server_drain(server *s, void (*done)(void *data), void *data);

/* Frees the server after its handles closed (after the loop ran out). */
void server_free(server *s);

#endif
