/* exec plugin: runs a command per event, body on stdin; the exit status decides the outcome. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, posix_spawn_file_actions_addchdir_np / addclosefrom_np */
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hookd/plugin.h"

extern char **environ;

#define EXEC_CAPTURE_MAX 4096   /* bytes kept of stdout and of stderr each */
#define EXEC_KILL_GRACE_MS 2000 /* between SIGTERM and SIGKILL */
/* After the command exits, output may still sit in the pipes, or a
 * background child may hold them open forever; read for this long at most. */
#define EXEC_DRAIN_MS 250
/* Without a pidfd, how often the loop looks for the child's exit. */
#define EXEC_TICK_MS 20
#define EXEC_EX_TEMPFAIL 75 /* sysexits.h: "try again later" */

/* The variables hookd sets itself; `env` may not redefine them. */
static const char *const exec_reserved_env[] = {"HOOKD_EVENT_ID", "HOOKD_EVENT_TYPE",
                                                "HOOKD_SOURCE", "HOOKD_ATTEMPT", NULL};

/* Per instance: the options the host fills, then what init() derives.
 * Read-only after init, so deliver() may run on many threads. */
typedef struct exec_state {
  hookd_string_list command;
  hookd_template_map env; /* NAME -> value, rendered per event with no escaping */
  const char *cwd;        /* NULL: hookd's working directory */
  const hookd_host_api *host;
  hookd_instance *self;
  char **argv;     /* NULL-terminated; the strings belong to the host */
  char **base_env; /* owned copies of the environment at init, minus names we set */
  size_t n_base_env;
} exec_state;

static const hookd_option exec_options[] = {
    {"command", HOOKD_OPT_STRING_LIST, HOOKD_OPT_REQUIRED | HOOKD_OPT_NONEMPTY,
     offsetof(exec_state, command), NULL, 0, 0, NULL, HOOKD_ESC_NONE,
     "the program and its arguments, e.g. [\"/usr/local/bin/x\", \"-v\"]; no shell"},
    {"env", HOOKD_OPT_TEMPLATE_MAP, 0, offsetof(exec_state, env), NULL, 0, 0, NULL, HOOKD_ESC_NONE,
     "extra environment variables: NAME -> template"},
    {"cwd", HOOKD_OPT_PATH, HOOKD_OPT_NONEMPTY, offsetof(exec_state, cwd), NULL, 0, 0, NULL,
     HOOKD_ESC_NONE, "the working directory (default: hookd's)"},
    HOOKD_OPTIONS_END};

/* One output stream being captured. */
typedef struct exec_capture {
  int fd; /* -1 once at EOF */
  size_t len;
  int truncated;
  char buf[EXEC_CAPTURE_MAX + 1];
} exec_capture;

/* Everything one run of the command touches. */
typedef struct exec_run {
  pid_t pid;
  int pidfd; /* -1 when the kernel has no pidfd_open */
  int in_fd; /* our end of the child's stdin, -1 once closed */
  const char *body;
  size_t body_len;
  size_t body_off;
  int saw_epipe;
  exec_capture out;
  exec_capture err;
} exec_run;

static int64_t exec_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void exec_close(int *fd) {
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

static int exec_valid_env_name(const char *s) {
  if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
  for (s++; *s; s++) {
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
          *s == '_'))
      return 0;
  }
  return 1;
}

/* True when the environment entry "NAME=value" is for `name`. */
static int exec_env_is(const char *entry, const char *name) {
  size_t n = strlen(name);
  return strncmp(entry, name, n) == 0 && entry[n] == '=';
}

static void exec_destroy(void *state) {
  exec_state *st = state;
  for (size_t i = 0; i < st->n_base_env; i++) free(st->base_env[i]);
  free(st->base_env);
  free(st->argv);
}

/* `env` names: valid, and not one of the four hookd sets. */
static int exec_check_env(const hookd_host_api *host, const hookd_config *cfg,
                          const hookd_template_map *env) {
  const hookd_config *obj = NULL;
  if (env->n == 0 || host->config_object(cfg, "env", &obj) != HOOKD_E_OK) return 0;
  for (size_t i = 0; i < env->n; i++) {
    const char *name = env->keys[i];
    if (!exec_valid_env_name(name))
      return host->config_error(obj, name, "not a valid environment variable name");
    for (const char *const *r = exec_reserved_env; *r; r++) {
      if (strcmp(*r, name) == 0)
        return host->config_error(obj, name, "%s is set by hookd and cannot be overridden", name);
    }
  }
  return 0;
}

/* Copies the process environment now, on the main thread: reading environ
 * later from a worker would race with any setenv() elsewhere in the process.
 * Entries we set per event are left out so the child never sees two. */
static int exec_snapshot_env(exec_state *st) {
  size_t n = 0;
  for (char **e = environ; e && *e; e++) n++;
  st->base_env = calloc(n + 1, sizeof *st->base_env);
  if (!st->base_env) return -1;
  for (char **e = environ; e && *e; e++) {
    int skip = 0;
    for (const char *const *r = exec_reserved_env; *r && !skip; r++) skip = exec_env_is(*e, *r);
    for (size_t i = 0; i < st->env.n && !skip; i++) skip = exec_env_is(*e, st->env.keys[i]);
    if (skip) continue;
    char *copy = strdup(*e);
    if (!copy) return -1;
    st->base_env[st->n_base_env++] = copy;
  }
  return 0;
}

static int exec_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                     void **state, char *err, size_t errlen) {
  exec_state *st = *state;
  st->host = host;
  st->self = self;
  const char *prog = st->command.items[0];
  if (prog[0] == '\0') return host->config_error(cfg, "command", "must name a program");
  /* An absolute path can be checked now, so `hookd check` catches a typo;
   * a bare name is looked up in PATH and a relative one against cwd at run
   * time. */
  if (prog[0] == '/' && access(prog, X_OK) != 0)
    return host->config_error(cfg, "command", "%s: %s", prog, strerror(errno));
  struct stat sb;
  if (st->cwd && stat(st->cwd, &sb) != 0)
    return host->config_error(cfg, "cwd", "%s: %s", st->cwd, strerror(errno));
  if (st->cwd && !S_ISDIR(sb.st_mode))
    return host->config_error(cfg, "cwd", "%s is not a directory", st->cwd);
  if (exec_check_env(host, cfg, &st->env) != 0) return -1;
  /* posix_spawn takes char *const[] but never writes to the strings. */
  st->argv = calloc(st->command.n + 1, sizeof *st->argv);
  if (st->argv)
    for (size_t i = 0; i < st->command.n; i++) st->argv[i] = (char *)st->command.items[i];
  if (!st->argv || exec_snapshot_env(st) != 0) {
    snprintf(err, errlen, "out of memory");
    exec_destroy(st);
    return -1;
  }
  return 0;
}

/* Builds the child's environment into *envp: the snapshot, hookd's four
 * variables, then the configured ones; entries from index n_base_env on are
 * owned by the array (exec_free_env). Returns HOOKD_OK, HOOKD_RETRY (out of
 * memory) or HOOKD_FAIL (a value this event can never be passed in). */
static hookd_result exec_build_env(const exec_state *st, const hookd_event *ev, char ***envp_out,
                                   hookd_outcome *out) {
  size_t total = st->n_base_env + 4 + st->env.n + 1;
  hookd_result res = HOOKD_RETRY;
  char **envp = calloc(total, sizeof *envp);
  if (!envp) goto nomem;
  memcpy(envp, st->base_env, st->n_base_env * sizeof *envp);
  size_t k = st->n_base_env;
  const char *fmt[3] = {"HOOKD_EVENT_ID=%s", "HOOKD_EVENT_TYPE=%s", "HOOKD_SOURCE=%s"};
  const char *val[3] = {ev->id, ev->type, ev->source};
  for (int i = 0; i < 3; i++) {
    if (asprintf(&envp[k], fmt[i], val[i] ? val[i] : "") < 0) goto nomem;
    k++;
  }
  if (asprintf(&envp[k], "HOOKD_ATTEMPT=%" PRIu32, ev->attempt) < 0) goto nomem;
  k++;
  for (size_t i = 0; i < st->env.n; i++) {
    size_t len = 0;
    char *v = st->host->render(st->env.values[i], ev, HOOKD_ESC_NONE, &len);
    if (!v) goto nomem;
    /* An environment string ends at its first NUL: a value holding one
     * would reach the command cut short, silently. */
    if (strlen(v) != len) {
      st->host->free(v);
      snprintf(out->message, sizeof out->message, "env %s: rendered value contains a NUL byte",
               st->env.keys[i]);
      res = HOOKD_FAIL;
      goto fail;
    }
    int r = asprintf(&envp[k], "%s=%s", st->env.keys[i], v);
    st->host->free(v);
    if (r < 0) goto nomem;
    k++;
  }
  *envp_out = envp;
  return HOOKD_OK;

nomem:
  if (envp) envp[k] = NULL; /* asprintf leaves its pointer undefined on failure */
  snprintf(out->message, sizeof out->message, "out of memory building the environment");
fail:
  if (envp) {
    for (size_t i = st->n_base_env; i < total; i++) free(envp[i]);
    free(envp);
  }
  return res;
}

static void exec_free_env(const exec_state *st, char **envp) {
  for (size_t i = st->n_base_env; envp[i]; i++) free(envp[i]);
  free(envp);
}

/* Moves fd above 0..2 so that the dup2 onto a standard descriptor in the
 * child always produces a fresh descriptor without close-on-exec. */
static int exec_fd_above_stdio(int *fd) {
  if (*fd > 2) return 0;
  int n = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
  if (n < 0) return -1;
  close(*fd);
  *fd = n;
  return 0;
}

/* A close-on-exec pipe with both ends above stdio; our end non-blocking. */
static int exec_pipe(int p[2], int our_end) {
  if (pipe2(p, O_CLOEXEC) != 0) return -1;
  if (exec_fd_above_stdio(&p[0]) != 0 || exec_fd_above_stdio(&p[1]) != 0 ||
      fcntl(p[our_end], F_SETFL, O_NONBLOCK) != 0) {
    exec_close(&p[0]);
    exec_close(&p[1]);
    return -1;
  }
  return 0;
}

static void exec_read_into(exec_capture *c) {
  char chunk[4096];
  for (;;) {
    ssize_t r = read(c->fd, chunk, sizeof chunk);
    if (r > 0) {
      size_t room = EXEC_CAPTURE_MAX - c->len;
      size_t take = (size_t)r < room ? (size_t)r : room;
      memcpy(c->buf + c->len, chunk, take);
      c->len += take;
      if ((size_t)r > take) c->truncated = 1; /* keep reading: a full pipe would stall the child */
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    exec_close(&c->fd); /* EOF or a read error: either way this stream is done */
    return;
  }
}

static void exec_write_stdin(exec_run *run) {
  while (run->body_off < run->body_len) {
    ssize_t w = write(run->in_fd, run->body + run->body_off, run->body_len - run->body_off);
    if (w > 0) {
      run->body_off += (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    /* EPIPE: the command does not read its input, which is its right. */
    if (w < 0 && errno == EPIPE) run->saw_epipe = 1;
    break;
  }
  exec_close(&run->in_fd); /* all written, or the reader is gone: EOF for the child */
}

/* True once the child has exited. WNOWAIT leaves it a zombie, so its pid and
 * process group id cannot be reused while we may still signal the group. */
static int exec_child_exited(const exec_run *run) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  if (waitid(P_PID, (id_t)run->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0)
    return errno != EINTR; /* ECHILD: someone else reaped it; nothing left to wait for */
  return si.si_pid == run->pid;
}

/* Feeds stdin and reads both outputs until the child exits (watch_exit) or
 * both outputs reach EOF (!watch_exit), or until `deadline`. Returns 1 when
 * the condition was met, 0 at the deadline, -1 when poll() fails. */
static int exec_pump(exec_run *run, int64_t deadline, int watch_exit) {
  for (;;) {
    if (watch_exit && exec_child_exited(run)) return 1;
    if (!watch_exit && run->out.fd < 0 && run->err.fd < 0) return 1;
    int64_t now = exec_now_ms();
    if (now >= deadline) return 0;

    struct pollfd p[4];
    int n = 0, i_in = -1, i_out = -1, i_err = -1;
    if (run->in_fd >= 0) {
      i_in = n;
      p[n++] = (struct pollfd){.fd = run->in_fd, .events = POLLOUT};
    }
    if (run->out.fd >= 0) {
      i_out = n;
      p[n++] = (struct pollfd){.fd = run->out.fd, .events = POLLIN};
    }
    if (run->err.fd >= 0) {
      i_err = n;
      p[n++] = (struct pollfd){.fd = run->err.fd, .events = POLLIN};
    }
    int64_t wait = deadline - now;
    if (watch_exit) {
      if (run->pidfd >= 0)
        p[n++] = (struct pollfd){.fd = run->pidfd, .events = POLLIN};
      else if (wait > EXEC_TICK_MS)
        wait = EXEC_TICK_MS;
    }
    int r = poll(p, (nfds_t)n, (int)wait);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (i_in >= 0 && p[i_in].revents) exec_write_stdin(run);
    if (i_out >= 0 && p[i_out].revents) exec_read_into(&run->out);
    if (i_err >= 0 && p[i_err].revents) exec_read_into(&run->err);
  }
}

static const char *exec_signal_name(int sig) {
  switch (sig) {
    case SIGHUP:
      return "SIGHUP";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGILL:
      return "SIGILL";
    case SIGABRT:
      return "SIGABRT";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGKILL:
      return "SIGKILL";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGPIPE:
      return "SIGPIPE";
    case SIGALRM:
      return "SIGALRM";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "signal";
  }
}

/* Logs one captured stream; the host escapes control characters, but a NUL
 * would end the line early, so those become '?'. */
static void exec_log_capture(const exec_state *st, const hookd_event *ev, hookd_log_level level,
                             const char *what, exec_capture *c) {
  size_t len = c->len;
  while (len > 0 && (c->buf[len - 1] == '\n' || c->buf[len - 1] == '\r')) len--;
  if (len == 0) return;
  for (size_t i = 0; i < len; i++)
    if (c->buf[i] == '\0') c->buf[i] = '?';
  c->buf[len] = '\0';
  st->host->log(st->self, ev, level, "%s: %s%s", what, c->buf, c->truncated ? " [truncated]" : "");
}

/* The first line of stderr, for a dead letter's message. */
static void exec_first_line(const exec_capture *c, char *dst, size_t dstlen) {
  size_t i = 0;
  while (i < c->len && i + 1 < dstlen && c->buf[i] != '\n' && c->buf[i] != '\0') {
    dst[i] = c->buf[i];
    i++;
  }
  dst[i] = '\0';
}

/* Starts the command in a process group of its own with stdin/stdout/stderr
 * on our pipes. posix_spawn (vfork-style in glibc) keeps the child from
 * running any of our code between fork and exec, which is what makes this
 * safe in a multi-threaded process. Returns 0 or an errno value. */
static int exec_spawn(const exec_state *st, char **envp, int in_p[2], int out_p[2], int err_p[2],
                      pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int rc = posix_spawn_file_actions_init(&fa);
  if (rc) return rc;
  rc = posix_spawnattr_init(&at);
  if (rc) {
    posix_spawn_file_actions_destroy(&fa);
    return rc;
  }
  if (!rc) rc = posix_spawn_file_actions_adddup2(&fa, in_p[0], 0);
  if (!rc) rc = posix_spawn_file_actions_adddup2(&fa, out_p[1], 1);
  if (!rc) rc = posix_spawn_file_actions_adddup2(&fa, err_p[1], 2);
  /* Other descriptors of hookd (sockets, the spool) should be close-on-exec
   * already; closing everything above stderr makes sure no leak reaches the
   * command, whatever another library opened without the flag. */
  if (!rc) rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  if (!rc && st->cwd) rc = posix_spawn_file_actions_addchdir_np(&fa, st->cwd);

  /* A fresh group lets the timeout kill the command's children too. The
   * signal mask and dispositions hookd's threads use (blocked or ignored
   * SIGPIPE, SIGTERM handled by the daemon) must not leak into the command. */
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  static const int reset[] = {SIGPIPE, SIGINT,  SIGTERM, SIGHUP,  SIGQUIT, SIGCHLD, SIGUSR1,
                              SIGUSR2, SIGALRM, SIGXFSZ, SIGTSTP, SIGTTIN, SIGTTOU};
  for (size_t i = 0; i < sizeof reset / sizeof reset[0]; i++) sigaddset(&defaults, reset[i]);
  if (!rc)
    rc = posix_spawnattr_setflags(
        &at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (!rc) rc = posix_spawnattr_setpgroup(&at, 0);
  if (!rc) rc = posix_spawnattr_setsigmask(&at, &empty);
  if (!rc) rc = posix_spawnattr_setsigdefault(&at, &defaults);

  if (!rc) {
    if (strchr(st->argv[0], '/'))
      rc = posix_spawn(pid, st->argv[0], &fa, &at, st->argv, envp);
    else
      rc = posix_spawnp(pid, st->argv[0], &fa, &at, st->argv, envp);
  }
  posix_spawnattr_destroy(&at);
  posix_spawn_file_actions_destroy(&fa);
  return rc;
}

/* How one run ended. */
typedef struct exec_end {
  int timed_out, poll_failed;
  int reaped; /* waitpid()'s answer: < 0 when the status is lost */
  int status, wait_errno;
} exec_end;

/* Makes the three pipes and spawns the command; on success the run holds
 * our ends. Returns 0, or an errno value (pipe or spawn failure) with the
 * message in outcome. */
static int exec_start(const exec_state *st, char **envp, const hookd_event *ev, exec_run *run,
                      hookd_outcome *outcome) {
  int in_p[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1}, rc = 0;
  if (exec_pipe(in_p, 1) != 0 || exec_pipe(out_p, 0) != 0 || exec_pipe(err_p, 0) != 0) {
    rc = errno ? errno : EMFILE;
    snprintf(outcome->message, sizeof outcome->message, "pipe: %s", strerror(rc));
  } else if ((rc = exec_spawn(st, envp, in_p, out_p, err_p, &run->pid)) != 0) {
    snprintf(outcome->message, sizeof outcome->message, "cannot run %s: %s", st->argv[0],
             strerror(rc));
  } else {
    run->in_fd = in_p[1], in_p[1] = -1;
    run->out.fd = out_p[0], out_p[0] = -1;
    run->err.fd = err_p[0], err_p[0] = -1;
    run->body = ev->body ? ev->body : "";
    run->body_len = ev->body ? ev->body_len : 0;
    /* A pidfd wakes poll() when the child exits (the kernel makes it
     * close-on-exec); without one, exec_pump looks every EXEC_TICK_MS. */
    run->pidfd = (int)syscall(SYS_pidfd_open, run->pid, 0);
    if (run->body_len == 0) exec_close(&run->in_fd);
  }
  for (int i = 0; i < 2; i++) {
    exec_close(&in_p[i]);
    exec_close(&out_p[i]);
    exec_close(&err_p[i]);
  }
  return rc;
}

/* Feeds and reads the child until it exits or the deadline passes (then
 * its whole group is killed: a shell script's children would otherwise live
 * on and keep our pipes open), reaps it and drains what is left. */
static void exec_wait(exec_run *run, int64_t deadline, exec_end *e) {
  int r = exec_pump(run, deadline, 1);
  if (r <= 0) {
    e->poll_failed = r < 0;
    e->timed_out = r == 0;
    kill(-run->pid, SIGTERM);
    exec_pump(run, exec_now_ms() + EXEC_KILL_GRACE_MS, 1);
    kill(-run->pid, SIGKILL);
  }
  exec_close(&run->in_fd);
  while ((e->reaped = waitpid(run->pid, &e->status, 0)) < 0 && errno == EINTR) {
  }
  if (e->reaped < 0) e->wait_errno = errno;
  exec_pump(run, exec_now_ms() + EXEC_DRAIN_MS, 0);
}

/* The result of a finished run, explained in outcome. */
static hookd_result exec_verdict(const exec_end *e, const exec_run *run, uint32_t timeout_ms,
                                 hookd_outcome *outcome) {
  char first[160];
  exec_first_line(&run->err, first, sizeof first);
  const char *sep = first[0] ? ": " : "";
  size_t n = sizeof outcome->message;
  int st = e->status;
  if (e->poll_failed)
    return snprintf(outcome->message, n, "poll failed; command killed"), HOOKD_RETRY;
  if (e->timed_out)
    return snprintf(outcome->message, n, "timed out after %" PRIu32 " ms; process group killed",
                    timeout_ms),
           HOOKD_RETRY;
  /* SIGCHLD ignored or the child reaped elsewhere: its status is lost. */
  if (e->reaped < 0)
    return snprintf(outcome->message, n, "exit status unknown: %s", strerror(e->wait_errno)),
           HOOKD_FAIL;
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return HOOKD_OK;
  if (WIFEXITED(st) && WEXITSTATUS(st) == EXEC_EX_TEMPFAIL)
    return snprintf(outcome->message, n, "exit status 75 (temporary failure)%s%s", sep, first),
           HOOKD_RETRY;
  if (WIFEXITED(st))
    snprintf(outcome->message, n, "exit status %d%s%s", WEXITSTATUS(st), sep, first);
  else
    snprintf(outcome->message, n, "killed by %s (%d)%s%s", exec_signal_name(WTERMSIG(st)),
             WTERMSIG(st), sep, first);
  return HOOKD_FAIL;
}

static void exec_report(const exec_state *st, const hookd_event *ev, exec_run *run,
                        hookd_result result, const hookd_outcome *outcome, int64_t took) {
  const hookd_host_api *host = st->host;
  if (result == HOOKD_OK)
    host->log(st->self, ev, HOOKD_LOG_INFO, "%s exited 0 after %" PRId64 " ms", st->argv[0], took);
  else
    host->log(st->self, ev, result == HOOKD_RETRY ? HOOKD_LOG_WARN : HOOKD_LOG_ERROR,
              "%s: %s (ran %" PRId64 " ms)", st->argv[0], outcome->message, took);
  exec_log_capture(st, ev, HOOKD_LOG_INFO, "stdout", &run->out);
  exec_log_capture(st, ev, result == HOOKD_OK ? HOOKD_LOG_INFO : HOOKD_LOG_WARN, "stderr",
                   &run->err);
}

static hookd_result exec_deliver(void *state, const hookd_event *ev, hookd_outcome *outcome) {
  exec_state *st = state;
  char **envp = NULL;
  hookd_result result = exec_build_env(st, ev, &envp, outcome);
  if (result != HOOKD_OK) {
    st->host->log(st->self, ev, HOOKD_LOG_ERROR, "%s", outcome->message);
    return result;
  }
  exec_run *run = calloc(1, sizeof *run);
  if (!run) {
    exec_free_env(st, envp);
    snprintf(outcome->message, sizeof outcome->message, "out of memory");
    return HOOKD_RETRY;
  }
  run->pidfd = run->in_fd = run->out.fd = run->err.fd = -1;
  /* Writing to a pipe whose reader is gone raises SIGPIPE in this thread;
   * hookd may not ignore it, so block it here and discard it below. */
  sigset_t pipe_set, old_mask;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  int64_t started = exec_now_ms();
  int rc = exec_start(st, envp, ev, run, outcome);
  if (rc != 0) {
    /* A missing or non-executable program will not appear by retrying;
     * running out of processes, files or memory may pass. */
    result = (rc == ENOENT || rc == EACCES || rc == ENOEXEC || rc == ENOTDIR || rc == ELOOP ||
              rc == ENAMETOOLONG)
                 ? HOOKD_FAIL
                 : HOOKD_RETRY;
    st->host->log(st->self, ev, HOOKD_LOG_ERROR, "%s", outcome->message);
  } else {
    exec_end end = {0};
    exec_wait(run, started + (int64_t)ev->timeout_ms, &end);
    result = exec_verdict(&end, run, ev->timeout_ms, outcome);
    exec_report(st, ev, run, result, outcome, exec_now_ms() - started);
  }
  if (run->saw_epipe) {
    struct timespec zero = {0, 0};
    sigtimedwait(&pipe_set, NULL, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
  exec_close(&run->in_fd);
  exec_close(&run->out.fd);
  exec_close(&run->err.fd);
  exec_close(&run->pidfd);
  free(run);
  exec_free_env(st, envp);
  return result;
}

/* The descriptor and hookd_plugin_entry(): a host older than ABI 1.1 (which
 * would not fill the options) is refused, and the host names both versions. */
HOOKD_PLUGIN_DEFINE("exec", "1.1.0",
                    "runs a command with the event on stdin; exit 0 ok, 75 retry, else fail",
                    exec_init, exec_deliver, exec_destroy, exec_options, exec_state)
