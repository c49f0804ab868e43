/* libFuzzer target: allow_ips / trusted_proxies networks and X-Forwarded-For parsing. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "access.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_req r;
  fuzz_req_split(&r, data, size, 3);
  access_net net;
  char err[128], text[64];

  /* A network that parses contains its own address, and its address
   * prints and parses back to itself. */
  if (access_net_parse(r.values[0], &net, err, sizeof err) == 0) {
    access_list one = {&net, 1};
    if (!access_list_match(&one, &net.addr)) abort();
    access_addr_format(&net.addr, text, sizeof text);
    access_addr back;
    if (access_addr_parse(text, strlen(text), &back) != 0) abort();
    if (back.family != net.addr.family || memcmp(back.bytes, net.addr.bytes, 16) != 0) abort();
  } else if (err[0] == '\0') {
    abort();
  }
  access_addr a;
  if (access_addr_parse(r.values[1], strlen(r.values[1]), &a) == 0) {
    access_addr_format(&a, text, sizeof text);
    access_addr back;
    if (access_addr_parse(text, strlen(text), &back) != 0 || back.family != a.family ||
        memcmp(back.bytes, a.bytes, 16) != 0)
      abort();
  }

  /* X-Forwarded-For from a trusted proxy: the client is the peer or one
   * of the listed addresses, never anything else. */
  access_net trusted[2];
  if (access_net_parse("127.0.0.0/8", &trusted[0], err, sizeof err) ||
      access_net_parse("fd00::/8", &trusted[1], err, sizeof err))
    abort();
  access_list tl = {trusted, 2};
  access_addr peer = {.family = 4, .bytes = {127, 0, 0, 1}}, client;
  const char *xff[2] = {r.values[1], r.values[2]};
  size_t lens[2] = {strlen(r.values[1]), strlen(r.values[2])};
  if (access_client(&tl, &peer, xff, lens, 2, &client) == 0) {
    if (!(client.family == peer.family && memcmp(client.bytes, peer.bytes, 16) == 0)) {
      access_addr_format(&client, text, sizeof text);
      /* The client's text form (or an equivalent spelling) came from a header. */
      if (client.family != 4 && client.family != 6) abort();
    }
  }
  /* An untrusted peer is its own client, whatever the headers say. */
  access_addr stranger = {.family = 4, .bytes = {192, 0, 2, 1}};
  if (access_client(&tl, &stranger, xff, lens, 2, &client) != 0 ||
      memcmp(&client, &stranger, sizeof client) != 0)
    abort();
  return 0;
}
