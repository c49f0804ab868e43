/* Access by address: CIDR lists, address parsing, and the client behind trusted proxies
 * (X-Forwarded-For). */
#ifndef HOOKD_ACCESS_H
#define HOOKD_ACCESS_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/* An address, IPv4 or IPv6. An IPv4-mapped IPv6 address (::ffff:a.b.c.d,
 * what a dual-stack socket reports for an IPv4 peer) is stored as IPv4, so
 * "10.0.0.0/8" matches it. */
typedef struct access_addr {
  uint8_t family; /* 4 or 6 */
  uint8_t bytes[16];
} access_addr;

/* One network: an address and a prefix length (0-32 or 0-128). */
typedef struct access_net {
  access_addr addr;
  uint8_t bits;
} access_net;

typedef struct access_list {
  access_net *nets;
  size_t n;
} access_list;

/* Parses "10.0.0.0/8", "2001:db8::/32", or a lone address ("192.0.2.7" is
 * /32, "::1" is /128). Host bits beyond the prefix are an error, so
 * "10.1.2.3/8" (a likely typo) is refused. Returns 0, or -1 with a reason
 * in err. */
int access_net_parse(const char *s, access_net *out, char *err, size_t errlen);

/* Parses one address as it appears in X-Forwarded-For: "192.0.2.7",
 * "2001:db8::1", "[2001:db8::1]", "192.0.2.7:1234" or "[2001:db8::1]:1234"
 * (the port is ignored). Surrounding blanks are skipped. Returns 0 or -1. */
int access_addr_parse(const char *s, size_t len, access_addr *out);

/* The address of a socket address (AF_INET or AF_INET6). Returns 0 or -1. */
int access_addr_from_sockaddr(const struct sockaddr *sa, access_addr *out);

/* Does any network of the list contain addr? */
int access_list_match(const access_list *l, const access_addr *addr);

/* The client address of a request that came in from `peer`. When peer is
 * not in `trusted`, it is the client, whatever X-Forwarded-For says. When it
 * is, the X-Forwarded-For values (xff[0..n_xff), in the order the headers
 * came, each a comma-separated list) are read from the right: the first
 * address not in `trusted` is the client; a forwarded list with nothing but
 * trusted proxies gives its leftmost address; no header gives the peer.
 * Returns 0, or -1 when an entry that would be used is not an address (the
 * request must then be refused: its origin is unknown). */
int access_client(const access_list *trusted, const access_addr *peer, const char *const *xff,
                  const size_t *xff_len, size_t n_xff, access_addr *out);

/* Formats an address for logs. */
void access_addr_format(const access_addr *a, char *out, size_t outlen);

void access_list_clear(access_list *l);

#endif
