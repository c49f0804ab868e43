/* Outbound HTTP for plugins: libcurl easy handles reused per worker thread, answers mapped to
 * outcomes. */
#ifndef HOOKD_HTTP_CLIENT_H
#define HOOKD_HTTP_CLIENT_H

#include <stdint.h>
#include <time.h>
#include "hookd/plugin.h"

/* libcurl is loaded (dlopen) and initialised at the first request, not at
 * start-up: most of the daemon's idle memory would otherwise be libcurl and
 * the TLS, SSH, LDAP and Kerberos libraries it pulls in, for configs whose
 * plugins never send HTTP. */

/* Loads libcurl now rather than at the first request; optional. Any thread,
 * any number of times. Returns 0, or -1 when it cannot be loaded (logged). */
int http_client_global_init(void);
/* Once per process, after every worker has stopped; does nothing when
 * libcurl was never loaded. */
void http_client_global_cleanup(void);

/* The libcurl version, loading it if needed; NULL when it cannot be loaded. */
const char *http_client_libcurl_version(void);

/* Frees the calling thread's cached curl handle; worker threads call it
 * before they exit. */
void http_client_thread_cleanup(void);

/* Performs req (see hookd_host_api.http in plugin.h for the contract) and
 * maps the answer: 2xx OK; 408, 425, 429, 5xx and network errors RETRY with
 * Retry-After honoured; other statuses FAIL with the status and the first
 * bytes of the answer in outcome->message. resp may be NULL. */
hookd_result http_client_perform(const hookd_http_request *req, hookd_http_response *resp,
                                 hookd_outcome *outcome);
void http_client_response_free(hookd_http_response *resp);

/* Parses a Retry-After value (delta seconds or an HTTP-date) relative to now.
 * Returns milliseconds (0 for a date in the past), or -1 when unparsable. */
int64_t http_client_retry_after_ms(const char *value, time_t now);

#endif
