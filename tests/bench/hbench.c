/* hbench: the benchmark's HTTP load client. Signs every request body with
 * HMAC (like a webhook sender), can give every request its own event id, runs
 * closed-loop (as fast as the server answers) or at a constant rate with
 * latency measured from the intended send time (wrk2 style, no coordinated
 * omission), and can hold many idle keep-alive connections.
 *
 *   hbench load -p PORT -P PATH -b BODY [-k KEY] [-H HEADER] [-c CONNS] [-d SECS] [-n COUNT]
 *               [-u] [-r RATE]
 *   hbench idle -p PORT -P PATH -b BODY [-k KEY] [-H HEADER] -c CONNS [-d SECS]
 *
 * -u: every occurrence of __UID__ in BODY is replaced by a fresh UUID-shaped
 *     id per request (all requests are built and signed before the clock
 *     starts); without -u the one body is sent again and again.
 * -n: at most COUNT requests (load) — with -u also the number of bodies built.
 * -r: send RATE requests per second (open loop) instead of as fast as possible.
 * idle: opens CONNS connections, sends one request on each, prints "ready N",
 *     then holds them open for SECS or until SIGTERM.
 * Output is one line of key=value pairs. Only 127.0.0.1 is ever contacted. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  char *data;
  size_t len;
} rec;

typedef struct conn {
  int fd;
  int connected;
  int busy;         /* a request is in flight */
  const rec *req;   /* what is being sent */
  size_t sent;
  uint64_t t_start; /* intended (rate mode) or actual send time */
  char in[8192];
  size_t in_len;
  int want_out;
} conn;

static int g_port = 8080;
static const char *g_path = "/webhooks/cirrus";
static rec *g_recs;
static size_t g_nrecs;
static volatile sig_atomic_t g_stop;
static int g_ep;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *m) {
  perror(m);
  exit(1);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) die(path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) die("read");
  b[n] = 0;
  fclose(f);
  *len = (size_t)n;
  return b;
}

static void build_one(rec *r, const char *body, size_t blen, const char *key, const char *hdr) {
  char sig[EVP_MAX_MD_SIZE * 2 + 1] = "";
  char sighdr[256] = "";
  if (key && *key) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned ml = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)body, blen, mac, &ml);
    for (unsigned i = 0; i < ml; i++) sprintf(sig + 2 * i, "%02x", mac[i]);
    snprintf(sighdr, sizeof sighdr, "%s: %s\r\n", hdr, sig);
  }
  char head[1024];
  int hl = snprintf(head, sizeof head,
                    "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                    "%sContent-Length: %zu\r\n\r\n",
                    g_path, g_port, sighdr, blen);
  r->len = (size_t)hl + blen;
  r->data = malloc(r->len);
  if (!r->data) die("malloc");
  memcpy(r->data, head, (size_t)hl);
  memcpy(r->data + hl, body, blen);
}

/* Builds n requests from the template, each with its own ids where __UID__ stands. */
static void build_all(const char *tmpl, size_t tlen, const char *key, const char *hdr, int unique,
                      size_t n) {
  if (!unique || strstr(tmpl, "__UID__") == NULL) n = 1;
  g_recs = calloc(n, sizeof *g_recs);
  g_nrecs = n;
  char *body = malloc(tlen * 6 + 64);
  uint64_t nonce = now_ns() ^ ((uint64_t)getpid() << 32);
  for (size_t i = 0; i < n; i++) {
    const char *p = tmpl, *m;
    char *o = body;
    int k = 0;
    while ((m = strstr(p, "__UID__")) != NULL) {
      memcpy(o, p, (size_t)(m - p));
      o += m - p;
      /* 36 characters, UUID-shaped, distinct per request, field and run. */
      o += sprintf(o, "%08x-%04x-4%03x-8%03x-%012llx", (unsigned)(nonce >> 32),
                   (unsigned)(nonce & 0xffff), (unsigned)(k & 0xfff),
                   (unsigned)((nonce >> 16) & 0xfff), (unsigned long long)i);
      k++;
      p = m + 7;
    }
    size_t rest = tlen - (size_t)(p - tmpl);
    memcpy(o, p, rest);
    o += rest;
    build_one(&g_recs[i], body, (size_t)(o - body), key, hdr);
  }
  free(body);
}

static void ep_mod(conn *c, int want_out) {
  if (c->want_out == want_out) return;
  c->want_out = want_out;
  struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
  epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_open(conn *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) die("connect");
  c->connected = 0;
  c->busy = 0;
  c->in_len = 0;
  c->want_out = 1;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_reopen(conn *c) {
  epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  conn_open(c);
}

/* Writes what is left of the request; 0 when all is written, 1 when waiting, -1 on error. */
static int conn_flush(conn *c) {
  while (c->sent < c->req->len) {
    ssize_t w = send(c->fd, c->req->data + c->sent, c->req->len - c->sent, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN) {
        ep_mod(c, 1);
        return 1;
      }
      return -1;
    }
    c->sent += (size_t)w;
  }
  ep_mod(c, 0);
  return 0;
}

static void conn_send(conn *c, const rec *r, uint64_t t_start) {
  c->req = r;
  c->sent = 0;
  c->busy = 1;
  c->t_start = t_start;
  c->in_len = 0;
  if (c->connected && conn_flush(c) < 0) c->busy = -1;
}

/* Parses a complete response from c->in: returns its status, 0 when more
 * bytes are needed; *close_after set for "Connection: close". */
static int parse_response(conn *c, int *close_after) {
  c->in[c->in_len < sizeof c->in ? c->in_len : sizeof c->in - 1] = 0;
  char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
  if (!end) return 0;
  size_t hl = (size_t)(end - c->in) + 4;
  size_t cl = 0;
  for (char *p = c->in; p < end;) {
    char *nl = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!nl) nl = end;
    if (strncasecmp(p, "content-length:", 15) == 0) cl = strtoul(p + 15, NULL, 10);
    if (strncasecmp(p, "connection:", 11) == 0 && strcasestr(p, "close") && strcasestr(p, "close") < nl)
      *close_after = 1;
    p = nl + 2;
  }
  if (c->in_len < hl + cl) return 0;
  int st = atoi(c->in + 9);
  return st ? st : 1;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static void on_sig(int s) {
  (void)s;
  g_stop = 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: hbench load|idle -p PORT -P PATH -b BODY [-k KEY] [-H HEADER] "
                    "[-c CONNS] [-d SECS] [-n COUNT] [-u] [-r RATE]\n");
    return 2;
  }
  const char *mode = argv[1];
  const char *body_path = NULL, *key = getenv("HBENCH_KEY"), *hdr = "X-Signature";
  int conns = 32, unique = 0;
  double secs = 5, rate = 0;
  size_t count = 1000000;
  int o;
  optind = 2;
  while ((o = getopt(argc, argv, "p:P:b:k:H:c:d:n:ur:")) != -1) {
    switch (o) {
      case 'p': g_port = atoi(optarg); break;
      case 'P': g_path = optarg; break;
      case 'b': body_path = optarg; break;
      case 'k': key = optarg; break;
      case 'H': hdr = optarg; break;
      case 'c': conns = atoi(optarg); break;
      case 'd': secs = atof(optarg); break;
      case 'n': count = strtoul(optarg, NULL, 10); break;
      case 'u': unique = 1; break;
      case 'r': rate = atof(optarg); break;
      default: return 2;
    }
  }
  if (!body_path) {
    fprintf(stderr, "hbench: -b BODY is required\n");
    return 2;
  }
  size_t tlen;
  char *tmpl = read_file(body_path, &tlen);
  int idle = strcmp(mode, "idle") == 0;
  build_all(tmpl, tlen, key, hdr, unique && !idle, count);
  signal(SIGTERM, on_sig);
  signal(SIGINT, on_sig);
  signal(SIGPIPE, SIG_IGN);

  g_ep = epoll_create1(EPOLL_CLOEXEC);
  conn *cs = calloc((size_t)conns, sizeof *cs);
  struct epoll_event evs[512];
  uint32_t *lat = malloc(sizeof *lat * (count + 1));
  size_t nlat = 0, sent = 0, done = 0, non2xx = 0, errors = 0, reconnects = 0;

  if (idle) {
    /* Open in waves so the listen backlog never overflows. */
    int opened = 0, ready = 0, answered = 0;
    uint64_t deadline = now_ns() + (uint64_t)(secs * 1e9);
    while (!g_stop && now_ns() < deadline) {
      while (opened < conns && opened - answered < 200) {
        conn_open(&cs[opened]);
        cs[opened].req = &g_recs[0];
        cs[opened].busy = 1;
        opened++;
      }
      if (ready == 0 && answered == conns) {
        printf("ready %d\n", answered);
        fflush(stdout);
        ready = 1;
      }
      int n = epoll_wait(g_ep, evs, 512, 100);
      for (int i = 0; i < n; i++) {
        conn *c = evs[i].data.ptr;
        if (!c->connected && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
          int err = 0;
          socklen_t el = sizeof err;
          getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
          if (err) {
            errors++;
            conn_reopen(c);
            continue;
          }
          c->connected = 1;
          c->sent = 0;
          if (conn_flush(c) < 0) errors++;
          continue;
        }
        if (evs[i].events & EPOLLOUT) conn_flush(c);
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
          ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len, 0);
          if (r <= 0) {
            if (ready) errors++; /* the server closed an idle connection */
            epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
            continue;
          }
          c->in_len += (size_t)r;
          int ca = 0;
          int st = parse_response(c, &ca);
          if (st && c->busy == 1) {
            c->busy = 0;
            answered++;
            if (st < 200 || st > 299) non2xx++;
          }
        }
      }
    }
    printf("mode=idle conns=%d answered=%d non2xx=%zu closed_or_errors=%zu\n", conns, answered,
           non2xx, errors);
    return 0;
  }

  /* load: connect everything first, then start the clock. */
  for (int i = 0; i < conns; i++) conn_open(&cs[i]);
  int connected = 0;
  while (connected < conns) {
    int n = epoll_wait(g_ep, evs, 512, 1000);
    if (n <= 0) die("connect timeout");
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (c->connected) continue;
      int err = 0;
      socklen_t el = sizeof err;
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
      if (err) {
        errno = err;
        die("connect");
      }
      c->connected = 1;
      ep_mod(c, 0);
      connected++;
    }
  }
  conn **free_c = malloc(sizeof *free_c * (size_t)conns);
  int nfree = 0;
  for (int i = 0; i < conns; i++) free_c[nfree++] = &cs[i];

  uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(secs * 1e9);
  uint64_t interval = rate > 0 ? (uint64_t)(1e9 / rate) : 0;
  size_t scheduled = 0; /* rate mode: requests whose intended time has come */
  size_t backlog_head = 0;
  size_t wrapped = 0;
  uint64_t last_done = t0;
  for (;;) {
    uint64_t now = now_ns();
    int sending = now < deadline && !g_stop;
    if (rate > 0) {
      while (sending && scheduled < count && t0 + scheduled * interval <= now) scheduled++;
      while (backlog_head < scheduled && nfree > 0) {
        conn *c = free_c[--nfree];
        conn_send(c, &g_recs[sent % g_nrecs], t0 + backlog_head * interval);
        backlog_head++;
        sent++;
      }
    } else {
      while (sending && sent < count && nfree > 0) {
        conn *c = free_c[--nfree];
        conn_send(c, &g_recs[sent % g_nrecs], now);
        sent++;
      }
    }
    if (sent > g_nrecs && g_nrecs > 1) wrapped = sent - g_nrecs;
    if (done + (size_t)0 == sent && (!sending || sent >= count) && (rate == 0 || backlog_head == scheduled)) break;
    /* A stuck server must not hold the run forever: 10 s past the end. */
    if (now > deadline + 10000000000ull) {
      errors += sent - done;
      break;
    }
    long long wait_ns = 1000000; /* 1 ms */
    if (rate > 0 && sending && scheduled < count) {
      uint64_t next = t0 + scheduled * interval;
      wait_ns = next > now ? (long long)(next - now) : 0;
      if (backlog_head < scheduled) wait_ns = 1000000; /* waiting for a free connection */
    }
    struct timespec to = {wait_ns / 1000000000, wait_ns % 1000000000};
    int n = epoll_pwait2(g_ep, evs, 512, &to, NULL);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (!c->connected) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
          errors++;
          conn_reopen(c);
          continue;
        }
        c->connected = 1;
        if (c->busy) {
          if (conn_flush(c) < 0) errors++;
        } else {
          ep_mod(c, 0);
          free_c[nfree++] = c;
        }
        continue;
      }
      if (evs[i].events & EPOLLOUT) {
        if (c->busy && conn_flush(c) < 0) {
          errors++;
          done++;
          conn_reopen(c);
          continue;
        }
      }
      if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (c->in_len >= sizeof c->in - 1) c->in_len = 0; /* an odd large answer */
        ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len, 0);
        if (r <= 0) {
          if (r < 0 && errno == EAGAIN) continue;
          if (c->busy) {
            errors++;
            done++;
          }
          reconnects++;
          conn_reopen(c);
          continue;
        }
        c->in_len += (size_t)r;
        int ca = 0;
        int st = parse_response(c, &ca);
        if (st && c->busy) {
          uint64_t t = now_ns();
          last_done = t;
          uint64_t us = (t - c->t_start) / 1000;
          if (nlat <= count) lat[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
          if (st < 200 || st > 299) non2xx++;
          done++;
          c->busy = 0;
          c->in_len = 0;
          if (ca) {
            reconnects++;
            conn_reopen(c);
          } else {
            free_c[nfree++] = c;
          }
        }
      }
    }
  }
  double el = (double)(last_done - t0) / 1e9;
  qsort(lat, nlat, sizeof *lat, cmp_u32);
#define PCT(p) (nlat ? lat[(size_t)((double)(nlat - 1) * (p))] : 0)
  printf("mode=%s conns=%d rate=%.0f requests=%zu secs=%.3f rps=%.0f non2xx=%zu errors=%zu "
         "reconnects=%zu distinct_bodies=%zu wrapped=%zu p50_us=%u p99_us=%u p999_us=%u max_us=%u\n",
         rate > 0 ? "rate" : "load", conns, rate, done, el, el > 0 ? (double)done / el : 0, non2xx,
         errors, reconnects, g_nrecs, wrapped, PCT(0.50), PCT(0.99), PCT(0.999),
         nlat ? lat[nlat - 1] : 0);
  return 0;
}
