/* Scrubbing: credentials out of text that others wrote (destination answers, plugin messages)
 * before it reaches logs, metrics or the status page. */
#ifndef HOOKD_SCRUB_H
#define HOOKD_SCRUB_H

/*
 * A destination that echoes a request back in its error body puts the
 * Authorization header hookd sent, or a token from a URL, into the outcome
 * message, and from there into the log, /status.json and the page. scrub_text
 * replaces, in place:
 *
 * - the value after "Authorization", "Proxy-Authorization", "X-Api-Key",
 *   "Cookie" and "Set-Cookie" (as a header line or a JSON key),
 * - the credentials after "Bearer ", "Basic " and "Token ",
 * - every occurrence of a registered secret (signing secrets, the admin
 *   token, plugin options whose names say they hold one),
 *
 * with "[redacted]". Thread-safe; registration is rare (config loads) and
 * only adds, so a secret of an old config stays scrubbed after a reload.
 */

#include <stddef.h>

#define SCRUB_MASK "[redacted]"

/* Registers a secret (copied). Values shorter than 6 bytes are not
 * registered: they would blank ordinary words. At most 512 are kept. */
void scrub_add_secret(const char *value, size_t len);

/* Scrubs the NUL-terminated text s (buffer of cap bytes) in place; the
 * result is NUL-terminated and cut to fit. Returns its length. */
size_t scrub_text(char *s, size_t cap);

#endif
