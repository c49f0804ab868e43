/* Process isolation, hookd's side: spawn a plugin instance's child, run init and deliver() calls in
 * it, supervise, restart, stop. */
#include "plugin_proc.h"
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "event.h"
#include "log.h"
#include "metrics.h"
#include "plugin_child.h"
#include "plugin_instance.h"
#include "plugin_wire.h"
#include "privs.h"
#include "clock.h"

#define CTL_FD 3
#define FIRST_CHAN_FD 4
#define RESTART_BASE_MS 100
#define RESTART_CAP_MS 30000
#define OUTPUT_LINE_MAX 1024
#define OUTPUT_LINES_PER_SEC 100 /* plugin output logged per second; the rest is counted */
#define BUF_KEEP (64 * 1024)     /* channel buffers above this are freed after a call */
/* A call is killed this long after its timeout_ms: a plugin that keeps its
 * own deadline (exec stops its command, http() its request) gets to clean
 * up and answer first. The thread-mode write-off is as coarse (1 s ticks). */
#define KILL_GRACE_MS 1000

typedef enum { PS_STARTING, PS_READY, PS_RESTARTING, PS_INIT_FAILED } proc_state;
static const char *const state_names[] = {"starting", "ready", "restarting", "init failed"};

/* Why hookd killed a child (none: it died by itself, a crash). */
typedef enum { KILL_NONE = 0, KILL_TIMEOUT, KILL_STOP, KILL_PROTOCOL, KILL_INIT } kill_reason;

/* One child process. Referenced by its plugin_proc while current and by
 * every call running in it; freed (pidfd and channels closed) with the last
 * reference, so no fd number is reused under a thread still polling it. */
typedef struct child {
  pid_t pid;
  int pidfd;    /* -1 where the kernel (or valgrind) has no pidfd_open */
  int deathfd;  /* polled for its end: the pidfd, or an eventfd (below) */
  int reaped;   /* waited for: its pid may belong to another process now */
  int ctl, out; /* control socket and stdout/stderr pipe: the supervisor's */
  int ctl_eof, out_eof;
  size_t n_chans;
  int *chans;     /* data channels, one per unit of concurrency */
  wire_buf *in;   /* per channel: bytes received */
  wire_out *wout; /* per channel: the frame being sent */
  size_t *free_slots, n_free;
  unsigned refs;
  int dying; /* dead or being killed: nothing new is sent to it */
  kill_reason killed;
  int exit_sent;
  char how[128];         /* how it ended, once reaped (under the lock) */
  uint32_t timed_out_ms; /* with KILL_TIMEOUT: the limit the call ran past */
  int64_t started_ms;    /* mono */
  wire_buf ctl_in;
} child;

struct plugin_proc {
  /* Fixed at start; copies, because the supervisor outlives the instance. */
  char *name, *module, *path, *keypath, *config_dir, *config_json;
  uint32_t concurrency, timeout_ms, stop_grace_ms, backoff_base_ms, backoff_max_ms;
  /* The plugin config's deprecated "timeout_ms" (plugin_options.h), as the
   * child reports it: a call's limit is the shorter one. 0: none. */
  _Atomic uint32_t plugin_timeout_ms;
  int has_user;
  unsigned uid, gid;
  int log_level;

  pthread_mutex_t mu;
  pthread_cond_t cv; /* a channel came free */
  proc_state state;
  child *cur;            /* NULL while none runs */
  uint32_t streak;       /* deaths and failed starts since the last finished call */
  int64_t next_start_ms; /* mono: when the next start is due */
  int64_t stop_by_ms;    /* mono: running calls must be done by then (0: no limit) */
  int64_t kill_at_ms;    /* mono: after release, SIGKILL a child still alive */
  int released;
  char last_exit[160];
  char error[512];
  int wake;                /* eventfd: wakes the supervisor */
  metrics_instance mcache; /* only for finding its by-name series */

  /* Supervisor thread (and the main thread before it starts). */
  char line[OUTPUT_LINE_MAX];
  size_t line_len;
  int64_t out_window_ms;
  unsigned out_lines;
  unsigned long out_dropped;

  struct plugin_proc *next; /* registry of supervisors */
};

/* --- process-wide state ---------------------------------------------------- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static plugin_proc *g_live; /* supervisors not finished */
static size_t g_n_live;
static int g_exe_fd = -1; /* the hookd binary, O_PATH */
static char g_exe_path[PATH_MAX];
static char **g_env; /* what a child's environment may hold */
static int g_prepared;

/* Environment variables a child keeps: nothing a secret is usually kept in
 * (a ${NAME} in the config reaches the plugin through its config instead),
 * but what libc, libcurl, TLS and sanitizers read. */
static const char *const kept_env[] = {"PATH",
                                       "HOME",
                                       "LANG",
                                       "LANGUAGE",
                                       "LC_ALL",
                                       "LC_CTYPE",
                                       "LC_MESSAGES",
                                       "LC_NUMERIC",
                                       "LC_TIME",
                                       "TZ",
                                       "TMPDIR",
                                       "LD_LIBRARY_PATH",
                                       "SSL_CERT_FILE",
                                       "SSL_CERT_DIR",
                                       "CURL_CA_BUNDLE",
                                       "http_proxy",
                                       "https_proxy",
                                       "no_proxy",
                                       "all_proxy",
                                       "HTTP_PROXY",
                                       "HTTPS_PROXY",
                                       "NO_PROXY",
                                       "ALL_PROXY",
                                       "ASAN_OPTIONS",
                                       "UBSAN_OPTIONS",
                                       "LSAN_OPTIONS",
                                       NULL};

int plugin_proc_prepare(char *err, size_t errlen) {
  pthread_mutex_lock(&g_mu);
  int rc = 0;
  if (!g_prepared) {
    /* readlink rather than opening /proc/self/exe: under valgrind only the
     * former names hookd rather than the tool. */
    ssize_t n = readlink("/proc/self/exe", g_exe_path, sizeof g_exe_path - 1);
    if (n > 0) {
      g_exe_path[n] = '\0';
      g_exe_fd = open(g_exe_path, O_PATH | O_CLOEXEC);
    }
    size_t k = 0;
    g_env = calloc(sizeof kept_env / sizeof kept_env[0], sizeof *g_env);
    for (const char *const *e = kept_env; g_env && *e; e++) {
      const char *v = getenv(*e);
      if (v == NULL) continue;
      size_t len = strlen(*e) + strlen(v) + 2;
      if ((g_env[k] = malloc(len)) != NULL) snprintf(g_env[k++], len, "%s=%s", *e, v);
    }
    if (n <= 0 || g_exe_fd < 0 || g_env == NULL) {
      snprintf(err, errlen, "cannot find hookd's own binary to start plugin processes: %s",
               strerror(errno ? errno : ENOENT));
      rc = -1;
    } else {
      g_prepared = 1;
    }
  }
  pthread_mutex_unlock(&g_mu);
  return rc;
}

/* --- small helpers --------------------------------------------------------- */

static int64_t after(int64_t deadline) {
  int64_t left = deadline - clock_mono_ms();
  return left < 0 ? 0 : left;
}

static int poll_ms(int64_t deadline) {
  if (deadline <= 0) return -1;
  int64_t left = after(deadline);
  return left > INT_MAX ? INT_MAX : (int)left;
}

static void wake(plugin_proc *p) {
  uint64_t one = 1;
  ssize_t r = write(p->wake, &one, sizeof one);
  (void)r;
}

static uint32_t restart_delay(const plugin_proc *p) {
  if (p->streak <= 1) return p->streak ? p->backoff_base_ms : 0;
  uint64_t d = p->backoff_base_ms;
  for (uint32_t i = 1; i < p->streak && d < p->backoff_max_ms; i++) d *= 2;
  return (uint32_t)(d > p->backoff_max_ms ? p->backoff_max_ms : d);
}

/* "exited with status 1", "was killed by signal 11 (SIGSEGV)". */
static void describe_exit(const siginfo_t *si, char *out, size_t len) {
  if (si->si_code == CLD_EXITED) {
    snprintf(out, len, "exited with status %d", si->si_status);
  } else if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED) {
    const char *name = sigabbrev_np(si->si_status);
    snprintf(out, len, "was killed by signal %d (SIG%s)", si->si_status, name ? name : "?");
  } else {
    snprintf(out, len, "ended (code %d)", si->si_code);
  }
}

/* How c ended, without reaping it (WNOWAIT): any thread may ask. Empty
 * while it still runs. */
/* Waiting for a child to end. With a pidfd (Linux 5.3) its end is an event
 * to poll and a handle no other process can take over. Without one (an
 * older kernel; valgrind, which lacks the system call) deathfd is an
 * eventfd that child_exited() sets once waitid finds the child gone, waits
 * are cut into slices of 100 ms to look, and the pid is signalled only
 * while it is known not to be reaped. */
static int child_waitid(const child *c, siginfo_t *si, int flags) {
  memset(si, 0, sizeof *si);
  int rc;
  do {
    rc = c->pidfd >= 0 ? waitid(P_PIDFD, (id_t)c->pidfd, si, flags)
                       : waitid(P_PID, (id_t)c->pid, si, flags);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

static int child_exited(const child *c) {
  struct pollfd pd = {c->deathfd, POLLIN, 0};
  if (poll(&pd, 1, 0) > 0) return 1;
  if (c->pidfd >= 0) return 0;
  siginfo_t si;
  if (child_waitid(c, &si, WEXITED | WNOWAIT | WNOHANG) != 0 || si.si_pid == 0) return 0;
  uint64_t one = 1;
  ssize_t w = write(c->deathfd, &one, sizeof one);
  (void)w;
  return 1;
}

/* poll() over fds that include c->deathfd, until deadline (mono ms; 0:
 * none). Returns like poll(), 0 only at the deadline. */
static int child_poll(const child *c, struct pollfd *pf, nfds_t n, int64_t deadline) {
  for (;;) {
    int ms = poll_ms(deadline);
    if (c->pidfd < 0) {
      child_exited(c);
      if (ms < 0 || ms > 100) ms = 100;
    }
    int r = poll(pf, n, ms);
    if (r != 0 || c->pidfd >= 0 || (deadline > 0 && clock_mono_ms() >= deadline)) return r;
  }
}

/* SIGKILL to c alone. Caller holds p->mu once c is shared (reaped is set
 * under it). */
static void child_sigkill(child *c) {
  if (c->pidfd >= 0) {
    pidfd_send_signal(c->pidfd, SIGKILL, NULL, 0);
  } else if (!c->reaped) {
    kill(c->pid, SIGKILL);
  }
}

/* How c ended, without reaping it (WNOWAIT): any thread may ask. Empty
 * while it still runs. */
static void peek_exit(const child *c, char *out, size_t len) {
  siginfo_t si;
  out[0] = '\0';
  if (!c->reaped && child_waitid(c, &si, WEXITED | WNOWAIT | WNOHANG) == 0 && si.si_pid != 0)
    describe_exit(&si, out, len);
}

/* --- children ---------------------------------------------------------------- */

static child *child_new(size_t n) {
  child *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->n_chans = n;
  c->chans = malloc(n * sizeof *c->chans);
  c->in = calloc(n, sizeof *c->in);
  c->wout = calloc(n, sizeof *c->wout);
  c->free_slots = malloc(n * sizeof *c->free_slots);
  c->pidfd = c->deathfd = c->ctl = c->out = -1;
  c->refs = 1;
  if (c->chans == NULL || c->in == NULL || c->wout == NULL || c->free_slots == NULL) {
    free(c->chans);
    free(c->in);
    free(c->wout);
    free(c->free_slots);
    free(c);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    c->chans[i] = -1;
    c->free_slots[i] = n - 1 - i;
  }
  c->n_free = n;
  return c;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Drops a reference; the last one closes everything. Caller holds p->mu
 * when the child is shared. */
static void child_unref(child *c) {
  if (--c->refs > 0) return;
  if (c->deathfd != c->pidfd) close_fd(&c->deathfd);
  close_fd(&c->pidfd);
  close_fd(&c->ctl);
  close_fd(&c->out);
  for (size_t i = 0; i < c->n_chans; i++) {
    close_fd(&c->chans[i]);
    plugin_wire_buf_free(&c->in[i]);
    plugin_wire_out_free(&c->wout[i]);
  }
  plugin_wire_buf_free(&c->ctl_in);
  free(c->chans);
  free(c->in);
  free(c->wout);
  free(c->free_slots);
  free(c);
}

/* Moves fd to a number >= min (close-on-exec), so that the child's dup2s
 * onto 0..min-1 never overwrite a descriptor not yet moved. */
static int move_up(int fd, int min) {
  if (fd < 0 || fd >= min) return fd;
  int n = fcntl(fd, F_DUPFD_CLOEXEC, min);
  close(fd);
  return n;
}

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* The child's descriptors: 0 /dev/null, 1 and 2 the output pipe, 3 the
 * control socket, 4.. the data channels. Everything else hookd has open is
 * either close-on-exec or closed by the child before it loads the module. */
static int spawn_actions(posix_spawn_file_actions_t *fa, int devnull, int out_w, int ctl,
                         const int *chans, size_t n) {
  int rc = posix_spawn_file_actions_adddup2(fa, devnull, 0);
  if (!rc) rc = posix_spawn_file_actions_adddup2(fa, out_w, 1);
  if (!rc) rc = posix_spawn_file_actions_adddup2(fa, out_w, 2);
  if (!rc) rc = posix_spawn_file_actions_adddup2(fa, ctl, CTL_FD);
  for (size_t i = 0; i < n && !rc; i++) {
    rc = posix_spawn_file_actions_adddup2(fa, chans[i], FIRST_CHAN_FD + (int)i);
  }
  return rc;
}

/* posix_spawn rather than fork: hookd has threads (and their locks) by now;
 * glibc's posix_spawn runs nothing of ours between clone and exec, resets
 * signal handlers and copies no address space. The binary is hookd itself,
 * from the descriptor opened at start. */
static int spawn_exec(plugin_proc *p, pid_t *pid, int exe_fd, int devnull, int out_w, int ctl,
                      const int *chans) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int rc = posix_spawn_file_actions_init(&fa);
  if (rc) return rc;
  rc = posix_spawnattr_init(&at);
  if (rc) {
    posix_spawn_file_actions_destroy(&fa);
    return rc;
  }
  rc = spawn_actions(&fa, devnull, out_w, ctl, chans, p->concurrency);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  /* Its own process group: hookd kills the child with whatever it started. */
  if (!rc)
    rc = posix_spawnattr_setflags(
        &at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (!rc) rc = posix_spawnattr_setpgroup(&at, 0);
  if (!rc) rc = posix_spawnattr_setsigmask(&at, &none);
  if (!rc) rc = posix_spawnattr_setsigdefault(&at, &all);
  char exe[64];
  snprintf(exe, sizeof exe, "/proc/self/fd/%d", exe_fd);
  char *argv[] = {(char *)"hookd", (char *)PLUGIN_CHILD_COMMAND, p->name, NULL};
  if (!rc) rc = posix_spawn(pid, exe, &fa, &at, argv, g_env);
  posix_spawnattr_destroy(&at);
  posix_spawn_file_actions_destroy(&fa);
  return rc;
}

/* Starts a child process (not yet initialised). Returns 0 with *out, or -1
 * with err. */
static int spawn(plugin_proc *p, child **out, char *err, size_t errlen) {
  size_t n = p->concurrency;
  child *c = child_new(n);
  int *theirs = calloc(n, sizeof *theirs);
  int ctl[2] = {-1, -1}, outp[2] = {-1, -1}, devnull = -1, exe = -1, rc = -1;
  const int hi = FIRST_CHAN_FD + (int)n;
  const char *what = "out of memory";
  if (c == NULL || theirs == NULL) goto done;
  for (size_t i = 0; i < n; i++) theirs[i] = -1;
  what = "socketpair";
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0) goto done;
  c->ctl = ctl[0];
  if ((ctl[1] = move_up(ctl[1], hi)) < 0) goto done;
  for (size_t i = 0; i < n; i++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) goto done;
    c->chans[i] = sv[0];
    if ((theirs[i] = move_up(sv[1], hi)) < 0) goto done;
  }
  what = "pipe";
  if (pipe2(outp, O_CLOEXEC) != 0) goto done;
  c->out = outp[0];
  if ((outp[1] = move_up(outp[1], hi)) < 0) goto done;
  what = "/dev/null";
  if ((devnull = move_up(open("/dev/null", O_RDWR | O_CLOEXEC), hi)) < 0) goto done;
  /* The binary too, so that no dup2 of the child's lands on it before the
   * exec that names it. */
  what = "hookd's binary";
  if ((exe = fcntl(g_exe_fd, F_DUPFD_CLOEXEC, hi)) < 0) goto done;
  int e = spawn_exec(p, &c->pid, exe, devnull, outp[1], ctl[1], theirs);
  if (e != 0) {
    errno = e;
    what = "posix_spawn";
    goto done;
  }
  c->pidfd = pidfd_open(c->pid, 0);
  c->deathfd = c->pidfd >= 0 ? c->pidfd : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (c->deathfd < 0) {
    what = "eventfd";
    goto done;
  }
  what = "fcntl";
  if (set_nonblock(c->ctl) || set_nonblock(c->out)) goto done;
  for (size_t i = 0; i < n; i++) {
    if (set_nonblock(c->chans[i])) goto done;
  }
  c->started_ms = clock_mono_ms();
  rc = 0;
done:
  if (rc != 0) {
    snprintf(err, errlen, "cannot start its process: %s: %s", what, strerror(errno));
    if (c && c->pid > 0) {
      /* Not shared yet, not reaped: its pid is still its own. */
      kill(c->pid, SIGKILL);
      siginfo_t si;
      child_waitid(c, &si, WEXITED);
    }
    if (c) child_unref(c);
    c = NULL;
  }
  close_fd(&ctl[1]);
  close_fd(&outp[1]);
  close_fd(&devnull);
  close_fd(&exe);
  for (size_t i = 0; theirs && i < n; i++) close_fd(&theirs[i]);
  free(theirs);
  *out = c;
  return rc;
}

/* What went wrong talking to a child: it died or its socket broke, the
 * deadline passed, or memory ran out. */
enum { IO_DEAD = -1, IO_TIMEOUT = -2, IO_NOMEM = -3 };

/* Writes all of buf to a non-blocking socket of c. Returns 0, IO_DEAD when
 * the child died or the socket broke, IO_TIMEOUT at the deadline. */
static int send_all(const child *c, int fd, const char *buf, size_t n, int64_t deadline) {
  while (n > 0) {
    ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
    if (w > 0) {
      buf += w;
      n -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN) return IO_DEAD;
    struct pollfd pf[2] = {{fd, POLLOUT, 0}, {c->deathfd, POLLIN, 0}};
    int r = child_poll(c, pf, 2, deadline);
    if (r == 0) return IO_TIMEOUT;
    if (r > 0 && pf[1].revents) return IO_DEAD;
  }
  return 0;
}

/* Kills c (through its pidfd, which cannot hit another process, or while
 * its pid is known to be its own);
 * the supervisor then kills its process group and reaps it. The first
 * reason is kept. */
static void kill_child(plugin_proc *p, child *c, kill_reason why) {
  pthread_mutex_lock(&p->mu);
  if (c->killed == KILL_NONE) c->killed = why;
  c->dying = 1;
  if (p->cur == c) p->state = PS_RESTARTING;
  child_sigkill(c);
  pthread_mutex_unlock(&p->mu);
}

/* --- what the child says ------------------------------------------------------ */

static void log_frame(const plugin_proc *p, const hookd_event *v, wire_rd *rd) {
  uint32_t level = plugin_wire_get_u32(rd);
  const char *eid = plugin_wire_get_str(rd, NULL);
  const char *src = plugin_wire_get_str(rd, NULL);
  const char *msg = plugin_wire_get_str(rd, NULL);
  if (rd->bad || msg == NULL) return;
  log_ctx ctx = {.instance = p->name, .event_id = v ? v->id : eid, .source = v ? v->source : src};
  log_write(level > HLOG_DEBUG ? HLOG_DEBUG : (log_level)level, &ctx, "%s", msg);
}

static void output_line(plugin_proc *p) {
  log_ctx ctx = {.instance = p->name};
  int64_t now = clock_mono_ms();
  p->line[p->line_len] = '\0';
  p->line_len = 0;
  if (now - p->out_window_ms >= 1000) {
    if (p->out_dropped) {
      log_write(HLOG_WARN, &ctx, "%lu more lines of plugin output were not logged (over %d/s)",
                p->out_dropped, OUTPUT_LINES_PER_SEC);
    }
    p->out_window_ms = now;
    p->out_lines = 0;
    p->out_dropped = 0;
  }
  if (p->out_lines++ < OUTPUT_LINES_PER_SEC) {
    log_write(HLOG_INFO, &ctx, "plugin output: %s", p->line);
  } else {
    p->out_dropped++;
  }
}

/* Logs what the child wrote to stdout and stderr, line by line (escaped
 * like every log record, so it cannot forge lines), at most
 * OUTPUT_LINES_PER_SEC a second. */
static void drain_output(plugin_proc *p, child *c) {
  char buf[4096];
  for (int round = 0; round < 16 && c->out >= 0 && !c->out_eof; round++) {
    ssize_t n = read(c->out, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0 || errno != EAGAIN) c->out_eof = 1;
      break;
    }
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] == '\n') {
        output_line(p);
      } else {
        p->line[p->line_len++] = buf[i];
        if (p->line_len == sizeof p->line - 1) output_line(p);
      }
    }
  }
  if (c->out_eof && p->line_len) output_line(p);
}

typedef struct init_report {
  uint32_t status, from_options, timeout_ms;
  char key[256], cfg_msg[512], perr[512], name[64], version[64];
} init_report;

static void copy_str(char *dst, size_t n, const char *src) {
  snprintf(dst, n, "%s", src ? src : "");
}

/* Reads control frames that arrived: logs LOG frames, fills rep from an
 * INIT_DONE (returns 1). Returns 0 when nothing more is there, -1 on a
 * protocol error. */
static int read_ctl(plugin_proc *p, child *c, init_report *rep) {
  for (int round = 0; round < 64; round++) {
    uint32_t type;
    wire_rd rd;
    int k;
    while ((k = plugin_wire_next(&c->ctl_in, WIRE_MAX_FROM_CHILD, &type, &rd)) == 1) {
      if (type == WIRE_LOG) {
        log_frame(p, NULL, &rd);
      } else if (type == WIRE_INIT_DONE && rep != NULL) {
        rep->status = plugin_wire_get_u32(&rd);
        rep->from_options = plugin_wire_get_u32(&rd);
        rep->timeout_ms = plugin_wire_get_u32(&rd);
        copy_str(rep->key, sizeof rep->key, plugin_wire_get_str(&rd, NULL));
        copy_str(rep->cfg_msg, sizeof rep->cfg_msg, plugin_wire_get_str(&rd, NULL));
        copy_str(rep->perr, sizeof rep->perr, plugin_wire_get_str(&rd, NULL));
        copy_str(rep->name, sizeof rep->name, plugin_wire_get_str(&rd, NULL));
        copy_str(rep->version, sizeof rep->version, plugin_wire_get_str(&rd, NULL));
        return rd.bad ? -1 : 1;
      } else {
        return -1;
      }
    }
    if (k < 0) return -1;
    if (c->ctl_eof) return 0;
    long n = plugin_wire_fill(&c->ctl_in, c->ctl);
    if (n == 0 || (n < 0 && errno != EAGAIN)) c->ctl_eof = 1;
    if (n <= 0) return 0;
  }
  return 0;
}

/* Sends INIT and waits (at most timeout_ms) for INIT_DONE, logging what the
 * child writes meanwhile. Returns 0 with rep, or -1 with err when the child
 * died, hung (it is then killed), broke the protocol or was released
 * (watch_wake: from the supervisor). *crashed says it died by itself. */
static int handshake(plugin_proc *p, child *c, int watch_wake, init_report *rep, int *crashed,
                     char *err, size_t errlen) {
  wire_out w = {0};
  plugin_wire_begin(&w, WIRE_INIT);
  plugin_wire_u32(&w, p->uid);
  plugin_wire_u32(&w, p->gid);
  plugin_wire_u32(&w, p->has_user && geteuid() == 0 && p->uid != 0);
  plugin_wire_u32(&w, (uint32_t)p->log_level);
  plugin_wire_u32(&w, p->concurrency);
  plugin_wire_u32(&w, p->timeout_ms);
  plugin_wire_str(&w, p->name);
  plugin_wire_str(&w, p->module);
  plugin_wire_str(&w, p->path);
  plugin_wire_str(&w, p->keypath);
  plugin_wire_str(&w, p->config_dir);
  plugin_wire_str(&w, p->config_json);
  int64_t deadline = clock_mono_ms() + p->timeout_ms;
  int rc = plugin_wire_end(&w) == 0 ? send_all(c, c->ctl, w.p, w.len, deadline) : IO_NOMEM;
  plugin_wire_out_free(&w);
  *crashed = 0;
  while (rc == 0 || rc == IO_DEAD) {
    /* Output and control frames first: the last words of a child that
     * died, and an INIT_DONE sent just before, are still in the pipes. */
    drain_output(p, c);
    int k = read_ctl(p, c, rep);
    if (k == 1) return 0;
    if (k < 0) {
      kill_child(p, c, KILL_PROTOCOL);
      snprintf(err, errlen, "its process sent a malformed frame during init and was killed");
      return -1;
    }
    struct pollfd pf[4] = {{c->ctl_eof ? -1 : c->ctl, POLLIN, 0},
                           {c->out_eof ? -1 : c->out, POLLIN, 0},
                           {c->deathfd, POLLIN, 0},
                           {p->wake, POLLIN, 0}};
    if (rc == IO_DEAD) break; /* it died (or the socket broke) and said nothing more */
    int r = child_poll(c, pf, watch_wake ? 4 : 3, deadline);
    if (r == 0) {
      rc = IO_TIMEOUT;
      break;
    }
    if (r > 0 && pf[2].revents) rc = IO_DEAD; /* one more round for what it left */
    if (r > 0 && watch_wake && pf[3].revents) {
      uint64_t v;
      ssize_t rr = read(p->wake, &v, sizeof v);
      (void)rr;
      pthread_mutex_lock(&p->mu);
      int released = p->released;
      pthread_mutex_unlock(&p->mu);
      if (released) {
        kill_child(p, c, KILL_STOP);
        snprintf(err, errlen, "stopped during init");
        return -1;
      }
    }
  }
  if (rc == IO_NOMEM) {
    kill_child(p, c, KILL_INIT);
    snprintf(err, errlen, "out of memory");
  } else if (rc == IO_TIMEOUT) {
    kill_child(p, c, KILL_INIT);
    snprintf(err, errlen, "init did not finish within timeout_ms (%u ms); its process was killed",
             p->timeout_ms);
  } else {
    char how[128];
    peek_exit(c, how, sizeof how);
    if (how[0] == '\0') {
      kill_child(p, c, KILL_PROTOCOL);
      snprintf(how, sizeof how, "closed its control socket");
    } else {
      *crashed = 1;
    }
    snprintf(err, errlen, "its process %s during init", how);
  }
  return -1;
}

/* Reaps c (its owner only): kills what is left of its process group first —
 * a grandchild that outlived it, holding copies of its sockets — while the
 * group id is still reserved by the unreaped child, then waits, logs its
 * last output and closes the supervisor's descriptors. The pidfd and the
 * channels stay open until the last call lets go. */
static void reap(plugin_proc *p, child *c, char *how, size_t len) {
  kill(-c->pid, SIGKILL);
  siginfo_t si;
  int rc;
  /* Look first (WNOWAIT), publish how it ended, then reap: a call asking
   * how its child died finds the answer either way. */
  rc = child_waitid(c, &si, WEXITED | WNOWAIT);
  if (rc == 0) {
    describe_exit(&si, how, len);
  } else {
    snprintf(how, len, "ended (waitid: %s)", strerror(errno));
  }
  pthread_mutex_lock(&p->mu);
  copy_str(c->how, sizeof c->how, how);
  child_waitid(c, &si, WEXITED); /* at once: it has ended */
  c->reaped = 1;
  pthread_mutex_unlock(&p->mu);
  drain_output(p, c);
  if (p->line_len) output_line(p);
  pthread_mutex_lock(&p->mu);
  close_fd(&c->ctl);
  close_fd(&c->out);
  pthread_mutex_unlock(&p->mu);
}

/* --- supervision ---------------------------------------------------------------- */

static void registry_add(plugin_proc *p) {
  pthread_mutex_lock(&g_mu);
  p->next = g_live;
  g_live = p;
  g_n_live++;
  pthread_mutex_unlock(&g_mu);
}

static void registry_remove(plugin_proc *p) {
  pthread_mutex_lock(&g_mu);
  for (plugin_proc **pp = &g_live; *pp; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      g_n_live--;
      break;
    }
  }
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
}

static void proc_free(plugin_proc *p) {
  free(p->name);
  free(p->module);
  free(p->path);
  free(p->keypath);
  free(p->config_dir);
  free(p->config_json);
  if (p->wake >= 0) close(p->wake);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}

/* The child died (its pidfd is readable): reap it and, unless the instance
 * is going away or hookd is stopping, schedule the next start. */
static void on_died(plugin_proc *p, child *c) {
  pthread_mutex_lock(&p->mu);
  c->dying = 1;
  kill_reason why = c->killed;
  uint32_t limit = c->timed_out_ms;
  pthread_mutex_unlock(&p->mu);
  char how[128];
  reap(p, c, how, sizeof how);
  pthread_mutex_lock(&p->mu);
  int released = p->released, stopping = p->stop_by_ms != 0 || p->released;
  snprintf(p->last_exit, sizeof p->last_exit, "pid %d %s", (int)c->pid, how);
  uint32_t delay = 0;
  if (!stopping) {
    p->streak++;
    delay = restart_delay(p);
    p->next_start_ms = clock_mono_ms() + delay;
    p->state = PS_RESTARTING;
  }
  p->cur = NULL;
  pid_t pid = c->pid;
  child_unref(c);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);

  log_ctx ctx = {.instance = p->name};
  if (released || (stopping && why == KILL_STOP)) {
    log_write(strncmp(how, "exited with status 0", 20) == 0 ? HLOG_INFO : HLOG_WARN, &ctx,
              "plugin process (pid %d) stopped: %s", (int)pid, how);
  } else if (why == KILL_TIMEOUT) {
    log_write(HLOG_WARN, &ctx,
              "plugin process (pid %d) killed: a deliver() call ran past timeout_ms (%u ms); "
              "restarting it in %u ms",
              (int)pid, limit, delay);
  } else if (why == KILL_PROTOCOL) {
    log_write(HLOG_ERROR, &ctx,
              "plugin process (pid %d) broke the protocol with hookd and was killed; "
              "restarting it in %u ms",
              (int)pid, delay);
  } else {
    metrics_child_crashed(&p->mcache, p->name);
    if (stopping) {
      log_write(HLOG_ERROR, &ctx, "plugin process (pid %d) %s; not restarted: hookd is stopping",
                (int)pid, how);
    } else {
      log_write(HLOG_ERROR, &ctx, "plugin process (pid %d) %s; restarting it in %u ms", (int)pid,
                how, delay);
    }
  }
}

/* Starts a new child after a death or a failed start (supervisor thread). */
static void restart(plugin_proc *p) {
  pthread_mutex_lock(&p->mu);
  p->state = PS_STARTING;
  pthread_mutex_unlock(&p->mu);
  child *c = NULL;
  init_report rep;
  memset(&rep, 0, sizeof rep);
  char why[1024] = "";
  int crashed = 0;
  int rc = spawn(p, &c, why, sizeof why);
  if (rc == 0) rc = handshake(p, c, 1, &rep, &crashed, why, sizeof why);
  if (rc == 0 && rep.status != WIRE_INIT_OK) {
    rc = -1;
    if (rep.cfg_msg[0]) {
      snprintf(why, sizeof why, "init failed: %s: %s", rep.key, rep.cfg_msg);
    } else {
      snprintf(why, sizeof why, "init failed: %s", rep.perr[0] ? rep.perr : "no reason given");
    }
  }
  metrics_child_restarted(&p->mcache, p->name);
  log_ctx ctx = {.instance = p->name};
  if (rc == 0) {
    atomic_store(&p->plugin_timeout_ms, rep.timeout_ms);
    pthread_mutex_lock(&p->mu);
    p->cur = c;
    p->state = PS_READY;
    p->error[0] = '\0';
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    log_write(HLOG_INFO, &ctx, "plugin process restarted (pid %d)", (int)c->pid);
    return;
  }
  if (c) {
    char how[128];
    reap(p, c, how, sizeof how);
    child_unref(c);
  }
  if (crashed) metrics_child_crashed(&p->mcache, p->name);
  pthread_mutex_lock(&p->mu);
  p->streak++;
  uint32_t delay = restart_delay(p);
  p->next_start_ms = clock_mono_ms() + delay;
  p->state = PS_INIT_FAILED;
  copy_str(p->error, sizeof p->error, why);
  int released = p->released;
  pthread_mutex_unlock(&p->mu);
  if (!released) {
    log_write(HLOG_ERROR, &ctx, "restarting the plugin process failed: %s; next try in %u ms", why,
              delay);
  }
}

/* What the supervisor must do now, decided under the lock. */
typedef struct plan {
  child *c;
  int done, start, send_exit, kill_now;
  int64_t due; /* mono ms to wake up at; 0: only on events */
} plan;

static plan decide(plugin_proc *p) {
  plan pl = {0};
  pthread_mutex_lock(&p->mu);
  int64_t now = clock_mono_ms();
  child *c = pl.c = p->cur;
  if (p->released && c == NULL) {
    pl.done = 1;
  } else if (c == NULL) {
    if (p->stop_by_ms == 0 && now >= p->next_start_ms) pl.start = 1;
    pl.due = p->stop_by_ms ? 0 : p->next_start_ms;
  } else {
    if (p->released && !c->exit_sent) {
      c->exit_sent = pl.send_exit = 1;
      if (p->kill_at_ms == 0) p->kill_at_ms = now + p->stop_grace_ms;
    }
    /* A dying child is waited for on its pidfd alone. */
    if (p->released && !c->dying) pl.due = p->kill_at_ms;
    if (!c->dying && p->released && now >= p->kill_at_ms) pl.kill_now = 1;
    /* Shutdown: a call still running at stop_by ends with its child. */
    if (p->stop_by_ms > 0 && now >= p->stop_by_ms) {
      if (!c->dying && c->refs > 1) pl.kill_now = 1;
      p->stop_by_ms = -1; /* done; stays non-zero: no restarts while stopping */
    } else if (p->stop_by_ms > 0 && !c->dying && (pl.due == 0 || p->stop_by_ms < pl.due)) {
      pl.due = p->stop_by_ms;
    }
  }
  pthread_mutex_unlock(&p->mu);
  return pl;
}

static void *on_supervise(void *arg) {
  plugin_proc *p = arg;
  for (;;) {
    plan pl = decide(p);
    if (pl.done) break;
    if (pl.start) {
      restart(p);
      continue;
    }
    child *c = pl.c;
    if (pl.send_exit) {
      wire_out w = {0};
      plugin_wire_begin(&w, WIRE_EXIT);
      if (plugin_wire_end(&w) == 0) send_all(c, c->ctl, w.p, w.len, clock_mono_ms() + 1000);
      plugin_wire_out_free(&w);
    }
    if (pl.kill_now) kill_child(p, c, KILL_STOP);
    struct pollfd pf[4] = {{p->wake, POLLIN, 0},
                           {c ? c->deathfd : -1, POLLIN, 0},
                           {c && !c->ctl_eof ? c->ctl : -1, POLLIN, 0},
                           {c && !c->out_eof ? c->out : -1, POLLIN, 0}};
    int r = c ? child_poll(c, pf, 4, pl.due) : poll(pf, 4, pl.due ? poll_ms(pl.due) : -1);
    if (r <= 0) continue;
    if (pf[0].revents) {
      uint64_t v;
      ssize_t rr = read(p->wake, &v, sizeof v);
      (void)rr;
    }
    if (c == NULL) continue;
    if (pf[3].revents) drain_output(p, c);
    if (pf[2].revents && read_ctl(p, c, NULL) < 0) kill_child(p, c, KILL_PROTOCOL);
    if (pf[1].revents) on_died(p, c);
  }
  registry_remove(p);
  proc_free(p);
  return NULL;
}

/* --- public ---------------------------------------------------------------------- */

static char *dup_or(const char *s, int *oom) {
  char *d = strdup(s ? s : "");
  if (d == NULL) *oom = 1;
  return d;
}

static plugin_proc *proc_new(const plugin_instance *inst, const config *cfg, char *err,
                             size_t errlen) {
  plugin_proc *p = calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  const config_plugin *cp = inst->cfg;
  const config_delivery *d = &cp->delivery;
  int oom = 0;
  p->wake = -1;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->name = dup_or(inst->name, &oom);
  p->module = dup_or(inst->mod->name, &oom);
  p->path = dup_or(inst->mod->path, &oom);
  p->keypath = dup_or(cp->keypath, &oom);
  p->config_dir = dup_or(cfg->dir, &oom);
  p->config_json = cJSON_PrintUnformatted(cp->config);
  p->concurrency = d->concurrency;
  p->timeout_ms = d->timeout_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)d->timeout_ms;
  p->stop_grace_ms = cfg->shutdown_timeout_ms;
  p->backoff_base_ms =
      d->backoff_initial_ms < RESTART_BASE_MS ? (uint32_t)d->backoff_initial_ms : RESTART_BASE_MS;
  if (p->backoff_base_ms == 0) p->backoff_base_ms = 1;
  uint64_t cap = d->backoff_max_ms < RESTART_CAP_MS ? d->backoff_max_ms : RESTART_CAP_MS;
  p->backoff_max_ms = cap < p->backoff_base_ms ? p->backoff_base_ms : (uint32_t)cap;
  p->log_level = (int)cfg->log_level;
  p->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int u = privs_resolve(cfg, &p->uid, &p->gid, err, errlen);
  p->has_user = u == 1;
  if (oom || p->config_json == NULL || p->wake < 0 || u < 0) {
    if (u >= 0) snprintf(err, errlen, "%s", p->wake < 0 ? strerror(errno) : "out of memory");
    proc_free(p);
    return NULL;
  }
  return p;
}

/* The message of a start whose init failed, worded as in thread mode: a
 * getter's message gets its position in the file here, where the file is. */
static void start_failure(char *err, size_t errlen, const plugin_instance *inst, const config *cfg,
                          const init_report *rep) {
  if (rep->status == WIRE_INIT_LOAD || rep->status == WIRE_INIT_SETUP) {
    snprintf(err, errlen, "%s: plugin instance '%s': %s", inst->cfg->keypath, inst->name,
             rep->perr);
    return;
  }
  char positioned[768] = "";
  if (rep->cfg_msg[0]) {
    jsonc_error(&cfg->doc, rep->key, positioned, sizeof positioned, "%s", rep->cfg_msg);
  }
  plugin_host_init_message(
      err, errlen, inst,
      rep->status == WIRE_INIT_IGNORED ? PLUGIN_SETUP_EIGNORED : PLUGIN_SETUP_EFAIL, positioned,
      rep->perr, (int)rep->from_options);
}

int plugin_proc_start(plugin_instance *inst, const config *cfg, char *err, size_t errlen) {
  char why[600] = "";
  if (plugin_proc_prepare(why, sizeof why) != 0) {
    plugin_host_init_message(err, errlen, inst, PLUGIN_SETUP_EFAIL, "", why, 0);
    return -1;
  }
  plugin_proc *p = proc_new(inst, cfg, why, sizeof why);
  if (p == NULL) {
    plugin_host_init_message(err, errlen, inst, PLUGIN_SETUP_EFAIL, "",
                             why[0] ? why : "out of memory", 0);
    return -1;
  }
  child *c = NULL;
  init_report rep;
  memset(&rep, 0, sizeof rep);
  int crashed = 0;
  int rc = spawn(p, &c, why, sizeof why);
  if (rc == 0) rc = handshake(p, c, 0, &rep, &crashed, why, sizeof why);
  if (rc != 0) {
    plugin_host_init_message(err, errlen, inst, PLUGIN_SETUP_EFAIL, "", why, 0);
  } else if (rep.status != WIRE_INIT_OK) {
    start_failure(err, errlen, inst, cfg, &rep);
    rc = -1;
  }
  if (rc == 0) {
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    p->cur = c;
    p->state = PS_READY;
    atomic_store(&p->plugin_timeout_ms, rep.timeout_ms);
    registry_add(p);
    pthread_t t;
    int e = pthread_create(&t, &at, on_supervise, p);
    pthread_attr_destroy(&at);
    if (e == 0) {
      inst->proc = p;
      log_write(HLOG_INFO, &(log_ctx){.instance = p->name},
                "plugin process started (pid %d, module %s %s, isolation process)", (int)c->pid,
                rep.name, rep.version);
      return 0;
    }
    registry_remove(p);
    p->cur = NULL;
    plugin_host_init_message(err, errlen, inst, PLUGIN_SETUP_EFAIL, "", strerror(e), 0);
  }
  if (c) {
    char how[128];
    if (!c->dying) kill_child(p, c, KILL_INIT);
    reap(p, c, how, sizeof how);
    child_unref(c);
  }
  proc_free(p);
  return -1;
}

static int unavailable(plugin_proc *p, hookd_outcome *out) {
  int64_t wait = 100;
  if (p->stop_by_ms) {
    snprintf(out->message, sizeof out->message, "hookd is stopping");
  } else if (p->state == PS_INIT_FAILED) {
    wait = p->next_start_ms - clock_mono_ms() + 50;
    snprintf(out->message, sizeof out->message,
             "the plugin process is not running: its last start failed: %.400s", p->error);
  } else if (p->state == PS_RESTARTING && p->cur == NULL) {
    wait = p->next_start_ms - clock_mono_ms() + 50;
    snprintf(out->message, sizeof out->message, "the plugin process is restarting");
  } else {
    snprintf(out->message, sizeof out->message,
             p->state == PS_READY ? "all of the plugin process's channels are busy"
                                  : "the plugin process is restarting");
  }
  if (wait < 50) wait = 50;
  if (wait > RESTART_CAP_MS) wait = RESTART_CAP_MS;
  out->retry_after_ms = (uint32_t)wait;
  return PLUGIN_UNAVAILABLE;
}

/* The call's child died (or closed its channel): a crash, unless hookd
 * killed it — for this call's timeout, another call's, or shutdown. */
static int call_died(plugin_proc *p, child *c, const hookd_event *v, int64_t deadline,
                     hookd_outcome *out) {
  /* A dying process closes its descriptors before its pidfd says it
   * exited: give it a moment before calling it alive. */
  struct pollfd pd = {c->deathfd, POLLIN, 0};
  const char *alive = "";
  if (child_poll(c, &pd, 1, clock_mono_ms() + 1000) <= 0) {
    /* Alive, but its end of the channel is gone: it cannot answer. */
    kill_child(p, c, KILL_PROTOCOL);
    child_poll(c, &pd, 1, clock_mono_ms() + 2000);
    alive = "closed its channel to hookd and ";
  }
  char how[128];
  peek_exit(c, how, sizeof how);
  pthread_mutex_lock(&p->mu);
  if (how[0] == '\0') copy_str(how, sizeof how, c->how[0] ? c->how : "died"); /* reaped */
  kill_reason why = c->killed;
  c->dying = 1;
  pthread_mutex_unlock(&p->mu);
  if (why == KILL_NONE || why == KILL_PROTOCOL) {
    snprintf(out->message, sizeof out->message, "the plugin process (pid %d) %s%s during deliver()",
             (int)c->pid, alive, how);
    return PLUGIN_CRASHED;
  }
  if (why == KILL_TIMEOUT && clock_mono_ms() >= deadline) {
    snprintf(out->message, sizeof out->message,
             "deliver() did not return within timeout_ms (%u ms); the plugin process was killed",
             v->timeout_ms);
    return PLUGIN_TIMED_OUT;
  }
  snprintf(out->message, sizeof out->message, "%s",
           why == KILL_TIMEOUT ? "the plugin process was killed: another delivery ran past "
                                 "timeout_ms; this one runs again"
                               : "hookd is stopping; the delivery runs again on the next start");
  out->retry_after_ms = 100;
  return PLUGIN_UNAVAILABLE;
}

static int call_timed_out(plugin_proc *p, child *c, const hookd_event *v, hookd_outcome *out) {
  log_ctx ctx = {.source = v->source, .instance = p->name, .event_id = v->id};
  log_write(HLOG_WARN, &ctx,
            "deliver() ran past timeout_ms (%u ms) and %d ms more: killing the plugin process "
            "(pid %d)",
            v->timeout_ms, KILL_GRACE_MS, (int)c->pid);
  pthread_mutex_lock(&p->mu);
  if (c->killed == KILL_NONE) c->timed_out_ms = v->timeout_ms;
  pthread_mutex_unlock(&p->mu);
  kill_child(p, c, KILL_TIMEOUT);
  pthread_mutex_lock(&p->mu);
  kill_reason why = c->killed;
  pthread_mutex_unlock(&p->mu);
  if (why == KILL_STOP) return call_died(p, c, v, INT64_MAX, out);
  snprintf(out->message, sizeof out->message,
           "deliver() did not return within timeout_ms (%u ms); the plugin process was killed",
           v->timeout_ms);
  return PLUGIN_TIMED_OUT;
}

static int encode_deliver(wire_out *w, const hookd_event *v) {
  plugin_wire_begin(w, WIRE_DELIVER);
  plugin_wire_u32(w, v->attempt);
  plugin_wire_u32(w, v->timeout_ms);
  plugin_wire_u64(w, (uint64_t)v->received_ms);
  plugin_wire_str(w, v->id);
  plugin_wire_str(w, v->type);
  plugin_wire_str(w, v->source);
  plugin_wire_str(w, v->order_key);
  plugin_wire_str(w, v->content_type);
  plugin_wire_bytes(w, v->body ? v->body : "", v->body ? v->body_len : 0);
  return plugin_wire_end(w);
}

/* Takes the RESULT frame apart. */
static int take_result(wire_rd *rd, hookd_outcome *out) {
  uint32_t r = plugin_wire_get_u32(rd);
  uint32_t after_ms = plugin_wire_get_u32(rd);
  const char *msg = plugin_wire_get_str(rd, NULL);
  uint32_t flags = plugin_wire_get_u32(rd);
  uint32_t status = plugin_wire_get_u32(rd);
  const char *answer = plugin_wire_get_str(rd, NULL);
  if (rd->bad) return -1;
  out->retry_after_ms = after_ms;
  snprintf(out->message, sizeof out->message, "%s", msg ? msg : "");
  if (HOOKD_OUTCOME_HAS(out, answer)) {
    out->flags = flags;
    out->status = (int32_t)status;
    snprintf(out->answer, sizeof out->answer, "%s", answer ? answer : "");
  }
  if (r > HOOKD_FAIL) {
    /* A plugin's stray number must not read as one of the PLUGIN_ codes. */
    snprintf(out->message, sizeof out->message, "plugin returned an invalid result (%u)", r);
    return HOOKD_FAIL;
  }
  return (int)r;
}

/* One call on data channel `slot` of c. */
static int call(plugin_proc *p, child *c, size_t slot, const hookd_event *v, hookd_outcome *out) {
  int fd = c->chans[slot];
  wire_buf *in = &c->in[slot];
  wire_out *w = &c->wout[slot];
  int64_t deadline =
      clock_mono_ms() + (v->timeout_ms ? v->timeout_ms : p->timeout_ms) + KILL_GRACE_MS;
  if (encode_deliver(w, v) != 0) {
    snprintf(out->message, sizeof out->message, "out of memory");
    out->retry_after_ms = 1000;
    return PLUGIN_UNAVAILABLE;
  }
  int rc = send_all(c, fd, w->p, w->len, deadline);
  plugin_wire_out_trim(w, BUF_KEEP);
  if (rc == IO_TIMEOUT) return call_timed_out(p, c, v, out);
  int dead = rc == IO_DEAD;
  for (;;) {
    uint32_t type;
    wire_rd rd;
    int k;
    while ((k = plugin_wire_next(in, WIRE_MAX_FROM_CHILD, &type, &rd)) == 1) {
      if (type == WIRE_LOG) {
        log_frame(p, v, &rd);
        continue;
      }
      int r = type == WIRE_RESULT ? take_result(&rd, out) : -1;
      if (r < 0) break;
      plugin_wire_buf_trim(in, BUF_KEEP);
      return r;
    }
    if (k != 0) {
      kill_child(p, c, KILL_PROTOCOL);
      return call_died(p, c, v, deadline, out);
    }
    if (!dead) {
      struct pollfd pf[2] = {{fd, POLLIN, 0}, {c->deathfd, POLLIN, 0}};
      int r = child_poll(c, pf, 2, deadline);
      if (r == 0) return call_timed_out(p, c, v, out);
      if (r < 0) continue;
      if (pf[1].revents) dead = 1;
      if (!pf[0].revents && !dead) continue;
    }
    /* Read what is there (all of it once the child is dead: a result sent
     * just before a crash still counts). */
    long n = plugin_wire_fill(in, fd);
    if (n > 0) continue;
    if (n < 0 && errno == EAGAIN && !dead) continue;
    return call_died(p, c, v, deadline, out);
  }
}

int plugin_proc_deliver(plugin_proc *p, const hookd_event *v, hookd_outcome *out) {
  pthread_mutex_lock(&p->mu);
  int64_t give_up = clock_mono_ms() + 1000;
  child *c = p->cur;
  /* The dispatcher runs at most `concurrency` calls, one per channel; a
   * channel is only busy for a moment longer while its call returns. */
  while (c && !c->dying && p->state == PS_READY && c->n_free == 0 && clock_mono_ms() < give_up) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    c = p->cur;
  }
  if (c == NULL || c->dying || p->state != PS_READY || c->n_free == 0 || p->stop_by_ms < 0) {
    int rc = unavailable(p, out);
    pthread_mutex_unlock(&p->mu);
    return rc;
  }
  size_t slot = c->free_slots[--c->n_free];
  c->refs++;
  pthread_mutex_unlock(&p->mu);

  hookd_event view = *v;
  uint32_t own = atomic_load(&p->plugin_timeout_ms);
  if (own && own < view.timeout_ms) view.timeout_ms = own;
  int rc = call(p, c, slot, &view, out);

  pthread_mutex_lock(&p->mu);
  if (rc == HOOKD_OK || rc == HOOKD_RETRY || rc == HOOKD_FAIL) {
    c->free_slots[c->n_free++] = slot;
    p->streak = 0; /* it works: the next crash restarts without delay growth */
  }
  child_unref(c);
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void plugin_proc_stopping(plugin_proc *p, uint32_t timeout_ms) {
  /* A little before the dispatcher's own deadline, so that the calls it
   * waits for have returned by then. */
  uint32_t margin = timeout_ms / 10 < 200 ? timeout_ms / 10 : 200;
  pthread_mutex_lock(&p->mu);
  if (p->stop_by_ms == 0) p->stop_by_ms = clock_mono_ms() + timeout_ms - margin;
  if (p->stop_by_ms == 0) p->stop_by_ms = 1;
  pthread_mutex_unlock(&p->mu);
  wake(p);
}

void plugin_proc_release(plugin_proc *p) {
  pthread_mutex_lock(&p->mu);
  p->released = 1;
  pthread_mutex_unlock(&p->mu);
  wake(p);
}

size_t plugin_proc_wait_all(uint32_t timeout_ms) {
  int64_t deadline = clock_mono_ms() + timeout_ms;
  pthread_mutex_lock(&g_mu);
  for (plugin_proc *p = g_live; p; p = p->next) {
    pthread_mutex_lock(&p->mu);
    p->released = 1;
    if (p->kill_at_ms == 0 || p->kill_at_ms > deadline) p->kill_at_ms = deadline;
    pthread_mutex_unlock(&p->mu);
    wake(p);
  }
  /* Past the deadline the children get SIGKILL and die at once, unless the
   * kernel holds one (uninterruptible sleep): give that 5 s, not forever. */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t wait_ms = (int64_t)timeout_ms + 5000;
  ts.tv_sec += wait_ms / 1000;
  ts.tv_nsec += (wait_ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  while (g_n_live > 0 && pthread_cond_timedwait(&g_cv, &g_mu, &ts) != ETIMEDOUT) {
  }
  size_t left = g_n_live;
  pthread_mutex_unlock(&g_mu);
  return left;
}

void plugin_proc_get_status(plugin_proc *p, plugin_proc_status *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&p->mu);
  out->pid = p->cur && !p->cur->dying ? (int)p->cur->pid : 0;
  out->state = p->stop_by_ms || p->released ? "stopping" : state_names[p->state];
  if (p->state == PS_RESTARTING || p->state == PS_INIT_FAILED) {
    out->restart_in_ms = after(p->next_start_ms);
  }
  copy_str(out->last_exit, sizeof out->last_exit, p->last_exit);
  copy_str(out->error, sizeof out->error, p->error);
  pthread_mutex_unlock(&p->mu);
  metrics_child_counts(&p->mcache, p->name, &out->restarts, &out->crashes);
}
