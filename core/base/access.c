/* Access by address: CIDR lists, address parsing, and the client behind trusted proxies
 * (X-Forwarded-For). */
#include "access.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* X-Forwarded-For entries looked at, at most: a chain of proxies is short,
 * and a request listing thousands of addresses must not cost more. */
#define MAX_XFF_ENTRIES 64

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void addr_set(access_addr *a, int family, const void *bytes) {
  memset(a, 0, sizeof *a);
  if (family == 6 && memcmp(bytes, v4_mapped, sizeof v4_mapped) == 0) {
    /* An IPv4 peer on a dual-stack socket: compare it as IPv4. */
    a->family = 4;
    memcpy(a->bytes, (const uint8_t *)bytes + 12, 4);
    return;
  }
  a->family = (uint8_t)family;
  memcpy(a->bytes, bytes, family == 4 ? 4 : 16);
}

/* Parses a plain address (no brackets, no port) of n bytes. */
static int parse_plain(const char *s, size_t n, access_addr *out) {
  char buf[INET6_ADDRSTRLEN + 1];
  uint8_t bytes[16];
  if (n == 0 || n >= sizeof buf) return -1;
  memcpy(buf, s, n);
  buf[n] = '\0';
  if (inet_pton(AF_INET, buf, bytes) == 1) {
    addr_set(out, 4, bytes);
    return 0;
  }
  if (inet_pton(AF_INET6, buf, bytes) == 1) {
    addr_set(out, 6, bytes);
    return 0;
  }
  return -1;
}

static int all_digits(const char *s, size_t n) {
  if (n == 0 || n > 5) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return 0;
  return 1;
}

int access_addr_parse(const char *s, size_t len, access_addr *out) {
  if (!s || !out) return -1;
  while (len > 0 && (*s == ' ' || *s == '\t')) {
    s++;
    len--;
  }
  while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
  if (len == 0) return -1;
  if (s[0] == '[') {
    const char *close = memchr(s, ']', len);
    if (!close) return -1;
    size_t rest = len - (size_t)(close - s) - 1;
    if (rest > 0 && !(close[1] == ':' && all_digits(close + 2, rest - 1))) return -1;
    if (parse_plain(s + 1, (size_t)(close - s - 1), out) != 0) return -1;
    return out->family == 6 || memchr(s, ':', (size_t)(close - s)) ? 0 : -1;
  }
  const char *colon = memchr(s, ':', len);
  if (colon && !memchr(colon + 1, ':', len - (size_t)(colon - s) - 1)) {
    /* One colon: IPv4 with a port. */
    if (!all_digits(colon + 1, len - (size_t)(colon - s) - 1)) return -1;
    if (parse_plain(s, (size_t)(colon - s), out) != 0 || out->family != 4) return -1;
    return 0;
  }
  return parse_plain(s, len, out);
}

static int net_fail(char *err, size_t errlen, const char *why) {
  if (err && errlen) snprintf(err, errlen, "%s", why);
  return -1;
}

int access_net_parse(const char *s, access_net *out, char *err, size_t errlen) {
  if (!s || !out) return net_fail(err, errlen, "missing network");
  const char *slash = strchr(s, '/');
  size_t alen = slash ? (size_t)(slash - s) : strlen(s);
  uint8_t bytes[16];
  char buf[INET6_ADDRSTRLEN + 1];
  int family;
  if (alen == 0 || alen >= sizeof buf)
    return net_fail(err, errlen,
                    "expected an address or CIDR network like 10.0.0.0/8 or 2001:db8::/32");
  memcpy(buf, s, alen);
  buf[alen] = '\0';
  if (inet_pton(AF_INET, buf, bytes) == 1) {
    family = 4;
  } else if (inet_pton(AF_INET6, buf, bytes) == 1) {
    family = 6;
  } else {
    return net_fail(err, errlen,
                    "expected an address or CIDR network like 10.0.0.0/8 or 2001:db8::/32");
  }
  unsigned max = family == 4 ? 32 : 128, bits = max;
  if (slash) {
    const char *p = slash + 1;
    size_t n = strlen(p);
    if (n == 0 || n > 3 || strspn(p, "0123456789") != n)
      return net_fail(err, errlen, "expected a prefix length after '/'");
    bits = (unsigned)strtoul(p, NULL, 10);
    if (bits > max)
      return net_fail(
          err, errlen,
          family == 4 ? "IPv4 prefix length is at most 32" : "IPv6 prefix length is at most 128");
  }
  /* Host bits set beyond the prefix: "10.1.2.3/8" is most likely a typo
   * for a narrower network, so it is refused rather than widened. */
  for (unsigned i = bits; i < max; i++) {
    if (bytes[i / 8] & (0x80u >> (i % 8)))
      return net_fail(err, errlen, "address has bits set beyond the prefix length");
  }
  memset(out, 0, sizeof *out);
  out->addr.family = (uint8_t)family;
  memcpy(out->addr.bytes, bytes, family == 4 ? 4 : 16);
  out->bits = (uint8_t)bits;
  /* "::ffff:10.0.0.0/104" is written for IPv4 peers: match it as IPv4. */
  if (family == 6 && bits >= 96 && memcmp(bytes, v4_mapped, sizeof v4_mapped) == 0) {
    out->addr.family = 4;
    memmove(out->addr.bytes, bytes + 12, 4);
    memset(out->addr.bytes + 4, 0, 12);
    out->bits = (uint8_t)(bits - 96);
  }
  return 0;
}

int access_addr_from_sockaddr(const struct sockaddr *sa, access_addr *out) {
  if (!sa || !out) return -1;
  if (sa->sa_family == AF_INET) {
    addr_set(out, 4, &((const struct sockaddr_in *)sa)->sin_addr);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    addr_set(out, 6, &((const struct sockaddr_in6 *)sa)->sin6_addr);
    return 0;
  }
  return -1;
}

static int net_contains(const access_net *net, const access_addr *a) {
  if (net->addr.family != a->family) return 0;
  unsigned full = net->bits / 8, rest = net->bits % 8;
  if (memcmp(net->addr.bytes, a->bytes, full) != 0) return 0;
  if (rest == 0) return 1;
  uint8_t mask = (uint8_t)(0xffu << (8 - rest));
  return (net->addr.bytes[full] & mask) == (a->bytes[full] & mask);
}

int access_list_match(const access_list *l, const access_addr *addr) {
  if (!l || !addr) return 0;
  for (size_t i = 0; i < l->n; i++)
    if (net_contains(&l->nets[i], addr)) return 1;
  return 0;
}

int access_client(const access_list *trusted, const access_addr *peer, const char *const *xff,
                  const size_t *xff_len, size_t n_xff, access_addr *out) {
  *out = *peer;
  if (!access_list_match(trusted, peer)) return 0;
  /* Walk the entries right to left across the headers, last header first:
   * the rightmost entry was added by the proxy nearest to us. */
  size_t seen = 0;
  for (size_t h = n_xff; h-- > 0;) {
    const char *v = xff[h];
    size_t end = xff_len[h];
    for (;;) {
      size_t start = end;
      while (start > 0 && v[start - 1] != ',') start--;
      size_t n = end - start;
      const char *e = v + start;
      while (n > 0 && (*e == ' ' || *e == '\t')) {
        e++;
        n--;
      }
      while (n > 0 && (e[n - 1] == ' ' || e[n - 1] == '\t')) n--;
      if (n > 0) {
        if (++seen > MAX_XFF_ENTRIES) return -1;
        access_addr a;
        if (access_addr_parse(e, n, &a) != 0) return -1;
        *out = a;
        if (!access_list_match(trusted, &a)) return 0;
      }
      if (start == 0) break;
      end = start - 1;
    }
  }
  return 0;
}

void access_addr_format(const access_addr *a, char *out, size_t outlen) {
  if (!outlen) return;
  if (!a || !inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->bytes, out, (socklen_t)outlen))
    snprintf(out, outlen, "?");
}

void access_list_clear(access_list *l) {
  if (!l) return;
  free(l->nets);
  l->nets = NULL;
  l->n = 0;
}
