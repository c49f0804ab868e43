/* Process isolation, the child's side: read INIT, load and init the module, serve deliver() per
 * channel, stop on EXIT. */
#include "plugin_child.h"
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "event.h"
#include "http_client.h"
#include "log.h"
#include "plugin_host.h"
#include "plugin_instance.h"
#include "plugin_wire.h"

#define CTL_FD 3
#define FIRST_CHAN_FD 4
#define MAX_CHANNELS 1024 /* config.c's concurrency limit */
#define LOG_ID_MAX 512    /* event id and source as a log frame carries them */

static pthread_mutex_t g_ctl_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int tl_chan = -1; /* the data channel of the call this thread runs */
static const hookd_host_api *g_api;    /* hookd's own table: its log() ends in on_log */
static plugin_host g_host;             /* one module, one instance */
static config_plugin g_cp;

/* What INIT carries, copied out of the frame. */
typedef struct init_msg {
  uint32_t uid, gid, switch_ids, level, concurrency, timeout_ms;
  char *name, *module, *path, *keypath, *dir;
  cJSON *config;
} init_msg;

static int send_frame(int fd, wire_out *w) {
  if (plugin_wire_end(w) != 0) return -1;
  return plugin_wire_write_all(fd, w->p, w->len);
}

static void put_short(wire_out *w, const char *s) {
  if (s == NULL) {
    plugin_wire_str(w, NULL);
    return;
  }
  size_t n = strlen(s);
  plugin_wire_bytes(w, s, n > LOG_ID_MAX ? LOG_ID_MAX : n);
}

/* Every log record in the child — host->log() from the plugin, and the
 * host's own (an option's deprecation, libcurl missing) — goes to hookd,
 * which writes it with the instance, in its format: from a call on that
 * call's channel, from anywhere else on the control socket. */
static void on_log(log_level level, const log_ctx *ctx, const char *msg) {
  wire_out w = {0};
  plugin_wire_begin(&w, WIRE_LOG);
  plugin_wire_u32(&w, (uint32_t)level);
  put_short(&w, ctx ? ctx->event_id : NULL);
  put_short(&w, ctx ? ctx->source : NULL);
  plugin_wire_str(&w, msg);
  if (tl_chan >= 0) {
    send_frame(tl_chan, &w);
  } else {
    pthread_mutex_lock(&g_ctl_mu);
    send_frame(CTL_FD, &w);
    pthread_mutex_unlock(&g_ctl_mu);
  }
  plugin_wire_out_free(&w);
}

/* Reads one whole frame from a blocking fd: 1, or 0 at end of file / on an
 * error / for a frame too big. */
static int read_frame(int fd, wire_buf *b, uint32_t *type, wire_rd *rd) {
  for (;;) {
    int k = plugin_wire_next(b, WIRE_MAX_TO_CHILD, type, rd);
    if (k != 0) return k > 0;
    if (plugin_wire_fill(b, fd) <= 0) return 0;
  }
}

static void report(uint32_t status, int from_options, uint32_t timeout_ms, const char *key,
                   const char *cfg_msg, const char *perr, const hookd_plugin *d) {
  wire_out w = {0};
  plugin_wire_begin(&w, WIRE_INIT_DONE);
  plugin_wire_u32(&w, status);
  plugin_wire_u32(&w, (uint32_t)from_options);
  plugin_wire_u32(&w, timeout_ms);
  plugin_wire_str(&w, key);
  plugin_wire_str(&w, cfg_msg);
  plugin_wire_str(&w, perr);
  plugin_wire_str(&w, d && d->name ? d->name : "");
  plugin_wire_str(&w, d && d->version ? d->version : "");
  pthread_mutex_lock(&g_ctl_mu);
  send_frame(CTL_FD, &w);
  pthread_mutex_unlock(&g_ctl_mu);
  plugin_wire_out_free(&w);
}

static char *dup_str(const char *s) {
  return strdup(s ? s : "");
}

static int take_init(wire_rd *rd, init_msg *m) {
  m->uid = plugin_wire_get_u32(rd);
  m->gid = plugin_wire_get_u32(rd);
  m->switch_ids = plugin_wire_get_u32(rd);
  m->level = plugin_wire_get_u32(rd);
  m->concurrency = plugin_wire_get_u32(rd);
  m->timeout_ms = plugin_wire_get_u32(rd);
  m->name = dup_str(plugin_wire_get_str(rd, NULL));
  m->module = dup_str(plugin_wire_get_str(rd, NULL));
  m->path = dup_str(plugin_wire_get_str(rd, NULL));
  m->keypath = dup_str(plugin_wire_get_str(rd, NULL));
  m->dir = dup_str(plugin_wire_get_str(rd, NULL));
  const char *json = plugin_wire_get_str(rd, NULL);
  m->config = json ? cJSON_Parse(json) : NULL;
  if (rd->bad || m->concurrency == 0 || m->concurrency > MAX_CHANNELS || !m->name || !m->module ||
      !m->path || !m->keypath || !m->dir || !cJSON_IsObject(m->config))
    return -1;
  return 0;
}

/* The user hookd runs as (when hookd started this process as root), no
 * way back to more privileges for anything it runs, no core dumps: a crash
 * loop must not fill the disk. */
static int confine(const init_msg *m, char *err, size_t errlen) {
  if (m->switch_ids) {
    gid_t g = (gid_t)m->gid;
    if (setgroups(1, &g) != 0 || setresgid(g, g, g) != 0 ||
        setresuid((uid_t)m->uid, (uid_t)m->uid, (uid_t)m->uid) != 0) {
      snprintf(err, errlen, "cannot switch to uid %u gid %u: %s", m->uid, m->gid, strerror(errno));
      return -1;
    }
  }
  /* Where the kernel has it (3.5 and later); nothing to do without. */
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  struct rlimit none = {0, 0};
  setrlimit(RLIMIT_CORE, &none);
  char comm[16];
  snprintf(comm, sizeof comm, "hookd:%s", m->name);
  prctl(PR_SET_NAME, comm, 0, 0, 0);
  return 0;
}

static void *on_channel(void *arg) {
  int fd = (int)(intptr_t)arg;
  tl_chan = fd;
  wire_buf in = {0};
  wire_out w = {0};
  plugin_instance *inst = &g_host.insts[0];
  const hookd_plugin *d = inst->mod->desc;
  for (;;) {
    uint32_t type;
    wire_rd rd;
    if (!read_frame(fd, &in, &type, &rd) || type != WIRE_DELIVER) break;
    uint32_t attempt = plugin_wire_get_u32(&rd);
    uint32_t timeout_ms = plugin_wire_get_u32(&rd);
    int64_t received_ms = (int64_t)plugin_wire_get_u64(&rd);
    const char *id = plugin_wire_get_str(&rd, NULL);
    const char *etype = plugin_wire_get_str(&rd, NULL);
    const char *source = plugin_wire_get_str(&rd, NULL);
    const char *key = plugin_wire_get_str(&rd, NULL);
    const char *ctype = plugin_wire_get_str(&rd, NULL);
    size_t body_len;
    const char *body = plugin_wire_get_str(&rd, &body_len);
    if (rd.bad || !id || !etype || !source || !body) break;
    event *ev = event_new(source, id, etype, key, ctype, body, body_len, NULL, received_ms);
    hookd_outcome out;
    memset(&out, 0, sizeof out);
    out.struct_size = sizeof out;
    hookd_result r = HOOKD_RETRY;
    if (ev == NULL) {
      snprintf(out.message, sizeof out.message, "out of memory in the plugin process");
    } else {
      hookd_event view;
      memset(&view, 0, sizeof view);
      view.struct_size = sizeof view;
      view.id = ev->id;
      view.type = ev->type;
      view.source = ev->source;
      view.order_key = ev->order_key;
      view.instance = inst->name;
      view.attempt = attempt;
      view.received_ms = received_ms;
      view.body = ev->body;
      view.body_len = ev->body_len;
      view.content_type = ev->content_type;
      view.timeout_ms = timeout_ms;
      view.host_private = ev;
      view.host = g_api;
      view.self = inst;
      r = d->deliver(inst->state, &view, &out);
    }
    out.message[HOOKD_MESSAGE_MAX - 1] = '\0';
    out.answer[HOOKD_ANSWER_MAX - 1] = '\0';
    plugin_wire_begin(&w, WIRE_RESULT);
    plugin_wire_u32(&w, (uint32_t)r);
    plugin_wire_u32(&w, out.retry_after_ms);
    plugin_wire_str(&w, out.message);
    /* ABI 1.2: "too many requests", and the destination's answer. */
    plugin_wire_u32(&w, out.flags);
    plugin_wire_u32(&w, (uint32_t)out.status);
    plugin_wire_str(&w, out.answer);
    int sent = send_frame(fd, &w);
    event_unref(ev);
    plugin_wire_out_trim(&w, 64 * 1024);
    plugin_wire_buf_trim(&in, 1024 * 1024);
    if (sent != 0) break;
  }
  plugin_wire_buf_free(&in);
  plugin_wire_out_free(&w);
  http_client_thread_cleanup();
  return NULL;
}

static void on_term(int sig) {
  (void)sig; /* hookd stops this process, with EXIT (see plugin_child.h) */
}

static void free_init(init_msg *m) {
  free(m->name);
  free(m->module);
  free(m->path);
  free(m->keypath);
  free(m->dir);
  cJSON_Delete(m->config);
}

/* Loads the module and runs init; reports to hookd. Returns 0 when the
 * instance is up. */
static int load(init_msg *m) {
  char err[512] = "";
  g_host.mods = calloc(1, sizeof *g_host.mods);
  g_host.insts = calloc(1, sizeof *g_host.insts);
  if (g_host.mods == NULL || g_host.insts == NULL) {
    report(WIRE_INIT_SETUP, 0, 0, NULL, NULL, "out of memory", NULL);
    return -1;
  }
  g_host.n_mods = g_host.n_insts = 1;
  plugin_module *mod = &g_host.mods[0];
  mod->name = dup_str(m->module);
  mod->path = dup_str(m->path);
  g_cp.name = m->name;
  g_cp.module = m->module;
  g_cp.keypath = m->keypath;
  g_cp.config = m->config;
  g_cp.isolation = CONFIG_ISOLATION_PROCESS;
  g_cp.delivery.concurrency = m->concurrency;
  g_cp.delivery.timeout_ms = m->timeout_ms;
  plugin_instance *inst = &g_host.insts[0];
  inst->name = m->name;
  inst->mod = mod;
  inst->cfg = &g_cp;
  if (mod->name == NULL || mod->path == NULL) {
    report(WIRE_INIT_SETUP, 0, 0, NULL, NULL, "out of memory", NULL);
    return -1;
  }
  if (plugin_host_open_module(mod, err, sizeof err) != 0) {
    report(WIRE_INIT_LOAD, 0, 0, NULL, NULL, err, NULL);
    return -1;
  }
  int from_options = 0;
  int rc = plugin_host_instance_setup(inst, g_api, m->config, NULL, m->dir, err, sizeof err,
                                      &from_options);
  uint32_t status = rc == 0                       ? WIRE_INIT_OK
                    : rc == PLUGIN_SETUP_EIGNORED ? WIRE_INIT_IGNORED
                                                  : WIRE_INIT_FAILED;
  report(status, from_options, inst->owned.timeout_ms, inst->cfg_error_key, inst->cfg_error, err,
         mod->desc);
  return rc == 0 ? 0 : -1;
}

/* Runs the channels until hookd says EXIT; returns 0 then. hookd going
 * away ends the process at once. */
static int serve(const init_msg *m, wire_buf *ctl_in) {
  pthread_t threads[MAX_CHANNELS];
  size_t n = 0;
  /* What the plugin runs (exec) must not inherit hookd's channels. */
  for (uint32_t i = 0; i <= m->concurrency; i++) fcntl(CTL_FD + (int)i, F_SETFD, FD_CLOEXEC);
  for (uint32_t i = 0; i < m->concurrency; i++) {
    intptr_t fd = FIRST_CHAN_FD + (intptr_t)i;
    if (pthread_create(&threads[n], NULL, on_channel, (void *)fd) == 0) n++;
  }
  for (;;) {
    uint32_t type;
    wire_rd rd;
    if (!read_frame(CTL_FD, ctl_in, &type, &rd)) _exit(0); /* hookd is gone */
    if (type == WIRE_EXIT) break;
  }
  /* Wakes the channel threads waiting for a call; one inside deliver()
   * finishes it first (hookd kills this process if that takes too long). */
  for (uint32_t i = 0; i < m->concurrency; i++) shutdown(FIRST_CHAN_FD + (int)i, SHUT_RDWR);
  for (size_t i = 0; i < n; i++) pthread_join(threads[i], NULL);
  return 0;
}

int plugin_child_main(int argc, char **argv) {
  (void)argv;
  struct stat st;
  if (argc < 3 || fstat(CTL_FD, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    fprintf(stderr,
            "hookd: '%s' is how hookd starts a plugin instance in a process of its own; it is "
            "not a command to run by hand\n",
            PLUGIN_CHILD_COMMAND);
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  wire_buf ctl_in = {0};
  uint32_t type;
  wire_rd rd;
  init_msg m;
  memset(&m, 0, sizeof m);
  if (!read_frame(CTL_FD, &ctl_in, &type, &rd) || type != WIRE_INIT || take_init(&rd, &m) != 0) {
    report(WIRE_INIT_SETUP, 0, 0, NULL, NULL, "malformed INIT from hookd", NULL);
    free_init(&m);
    plugin_wire_buf_free(&ctl_in);
    return 3;
  }
  /* No descriptor beyond those hookd passed on purpose: whatever of
   * hookd's was not close-on-exec (a plugin's file, say) goes before any
   * plugin code runs. */
  close_range(FIRST_CHAN_FD + m.concurrency, ~0U, 0);
  log_setup(m.level <= HLOG_DEBUG ? (log_level)m.level : HLOG_DEBUG, HLOG_FORMAT_TEXT);
  log_set_sink(on_log);
  g_api = plugin_host_api();
  char err[512];
  int rc = 0;
  if (confine(&m, err, sizeof err) != 0) {
    report(WIRE_INIT_SETUP, 0, 0, NULL, NULL, err, NULL);
    rc = 3;
  } else if (load(&m) == 0) {
    serve(&m, &ctl_in);
  }
  /* Closed by the process's end, not here: a module may have registered
   * destructors or thread-local cleanups, and leak reports stay readable. */
  if (g_host.mods) g_host.mods[0].dl = NULL;
  if (g_host.insts) plugin_host_unload(&g_host, NULL);
  free_init(&m);
  plugin_wire_buf_free(&ctl_in);
  http_client_global_cleanup();
  return rc;
}
