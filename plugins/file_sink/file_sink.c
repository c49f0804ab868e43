/* file_sink: appends one JSON line per delivery to a file. The reference plugin for plugin authors.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hookd/helpers.h>
#include <hookd/plugin.h>

/* The state struct the host fills from the option table below. */
typedef struct sink {
  const char *path; /* resolved against the config file's directory */
  int fsync_each;
  int fd; /* opened by init() */
} sink;

static const hookd_option sink_options[] = {
    {"path", HOOKD_OPT_PATH, HOOKD_OPT_REQUIRED | HOOKD_OPT_NONEMPTY, offsetof(sink, path), NULL, 0,
     0, NULL, HOOKD_ESC_NONE,
     "the file to append events to (relative paths start at the config file's directory)"},
    {"fsync", HOOKD_OPT_BOOL, 0, offsetof(sink, fsync_each), "false", 0, 0, NULL, HOOKD_ESC_NONE,
     "fdatasync after every line: slower, but a line survives a power cut"},
    HOOKD_OPTIONS_END};

/* Creates the missing directories above path, so "var/events.jsonl" works
 * on a fresh install. */
static int make_parents(char *path) {
  for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
    *p = '\0';
    int rc = mkdir(path, 0750);
    *p = '/';
    if (rc != 0 && errno != EEXIST) return -1;
  }
  return 0;
}

/* Main thread. The host has checked and filled the options; what is left
 * is opening the file, so `hookd check` reports a path that cannot work. */
static int sink_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                     void **state, char *err, size_t errlen) {
  (void)host, (void)self, (void)cfg;
  sink *s = *state;
  char *copy = strdup(s->path);
  if (copy == NULL || make_parents(copy) != 0) {
    snprintf(err, errlen, "cannot create the directory of %s: %s", s->path, strerror(errno));
    free(copy);
    return -1;
  }
  free(copy);
  s->fd = open(s->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (s->fd < 0) {
    snprintf(err, errlen, "cannot open %s: %s", s->path, strerror(errno));
    return -1;
  }
  return 0;
}

/* Copies a JSON document without the whitespace between tokens, so a
 * pretty-printed body stays on one line. The host has already checked that
 * the body is JSON. */
static void put_compact(hookd_buf *b, const char *src, size_t len) {
  if (hookd_buf_reserve(b, len) != 0) return;
  char *dst = b->p + b->len;
  int in_string = 0, escaped = 0;
  for (size_t i = 0; i < len; i++) {
    char ch = src[i];
    if (in_string) {
      if (escaped) {
        escaped = 0;
      } else if (ch == '\\') {
        escaped = 1;
      } else if (ch == '"') {
        in_string = 0;
      }
    } else if (ch == '"') {
      in_string = 1;
    } else if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') {
      continue;
    }
    *dst++ = ch;
  }
  b->len = (size_t)(dst - b->p);
  b->p[b->len] = '\0';
}

static hookd_result sink_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  sink *s = state;
  hookd_buf line = {0};
  char received[32];
  /* One allocation for the whole line: escaping grows a string at most
   * sixfold, and the body only shrinks. */
  hookd_buf_reserve(
      &line, 128 + 6 * (strlen(ev->id) + strlen(ev->type) + strlen(ev->source)) + ev->body_len);
  hookd_iso8601_format(ev->received_ms, received);
  hookd_buf_puts(&line, "{\"event_id\":\"");
  hookd_buf_json(&line, ev->id, strlen(ev->id));
  hookd_buf_puts(&line, "\",\"type\":\"");
  hookd_buf_json(&line, ev->type, strlen(ev->type));
  hookd_buf_puts(&line, "\",\"source\":\"");
  hookd_buf_json(&line, ev->source, strlen(ev->source));
  hookd_buf_printf(&line, "\",\"attempt\":%" PRIu32 ",\"received\":\"%s\",\"event\":", ev->attempt,
                   received);
  put_compact(&line, ev->body, ev->body_len);
  hookd_buf_puts(&line, "}\n");
  if (line.oom) {
    hookd_buf_free(&line);
    snprintf(out->message, sizeof out->message, "out of memory");
    return HOOKD_RETRY;
  }
  /* One write per line: O_APPEND keeps lines from concurrent workers whole. */
  ssize_t n = write(s->fd, line.p, line.len);
  int saved = errno;
  size_t len = line.len;
  hookd_buf_free(&line);
  if (n < 0 || (size_t)n != len) {
    snprintf(out->message, sizeof out->message, "write failed: %s",
             n < 0 ? strerror(saved) : "short write");
    return HOOKD_RETRY;
  }
  if (s->fsync_each && fdatasync(s->fd) != 0) {
    snprintf(out->message, sizeof out->message, "fdatasync failed: %s", strerror(errno));
    return HOOKD_RETRY;
  }
  return HOOKD_OK;
}

/* The host frees the state struct itself after this. */
static void sink_destroy(void *state) {
  sink *s = state;
  close(s->fd);
}

/* The descriptor and hookd_plugin_entry(): a host older than ABI 1.1 (which
 * would not fill the options) is refused, and the host names both versions. */
HOOKD_PLUGIN_DEFINE("file_sink", "1.1.0", "appends one JSON line per delivery to a file", sink_init,
                    sink_deliver, sink_destroy, sink_options, sink)
