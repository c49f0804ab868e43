/* Outbound mail for plugins: one SMTP submission over the lazily loaded libcurl, replies mapped to
 * outcomes. */
#ifndef HOOKD_SMTP_CLIENT_H
#define HOOKD_SMTP_CLIENT_H

#include "hookd/plugin.h"

/* Submits req (see hookd_host_api.smtp in plugin.h for the contract): OK
 * with the server's last reply line in outcome->message; RETRY for 4xx
 * replies, network errors and timeouts; FAIL for 5xx replies, a refused
 * login, a malformed URL or required STARTTLS not offered. Any thread. */
hookd_result smtp_client_send(const hookd_smtp_request *req, hookd_outcome *outcome);

#endif
