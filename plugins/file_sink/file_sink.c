/* file_sink: appends one JSON line per delivery to a file. The reference plugin for plugin authors. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hookd/plugin.h>

typedef struct sink {
  const hookd_host_api *host;
  hookd_instance *self;
  int fd;
  int fsync_each;
} sink;

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

static int sink_init(const hookd_host_api *host, hookd_instance *self, const hookd_config *cfg,
                     void **state, char *err, size_t errlen) {
  static const char *const keys[] = {"path", "fsync", NULL};
  const char *path;
  int fsync_each;
  if (host->config_allow_keys(cfg, keys) != HOOKD_E_OK) return -1;
  if (host->config_path(cfg, "path", NULL, &path) < 0) return -1;
  if (host->config_bool(cfg, "fsync", 0, &fsync_each) < 0) return -1;
  if (path == NULL) {
    host->config_error(cfg, "path", "missing: the file to append events to");
    return -1;
  }
  char *copy = strdup(path);
  if (copy == NULL || make_parents(copy) != 0) {
    snprintf(err, errlen, "cannot create the directory of %s: %s", path, strerror(errno));
    free(copy);
    return -1;
  }
  free(copy);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return -1;
  }
  sink *s = malloc(sizeof *s);
  if (s == NULL) {
    close(fd);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->host = host;
  s->self = self;
  s->fd = fd;
  s->fsync_each = fsync_each;
  *state = s;
  return 0;
}

/* Appends src to dst as a JSON string body (quotes, backslashes and control
 * characters escaped). dst must have room for 6 bytes per input byte. */
static char *put_escaped(char *dst, const char *src) {
  for (; *src; src++) {
    unsigned char ch = (unsigned char)*src;
    if (ch == '"' || ch == '\\') {
      *dst++ = '\\';
      *dst++ = (char)ch;
    } else if (ch < 0x20) {
      dst += sprintf(dst, "\\u%04x", ch);
    } else {
      *dst++ = (char)ch;
    }
  }
  return dst;
}

/* Copies a JSON document without the whitespace between tokens, so a
 * pretty-printed body stays on one line. The host has already checked that
 * the body is JSON. */
static char *put_compact(char *dst, const char *src, size_t len) {
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
  return dst;
}

static hookd_result sink_deliver(void *state, const hookd_event *ev, hookd_outcome *out) {
  sink *s = state;
  size_t cap = 256 + 6 * (strlen(ev->id) + strlen(ev->type) + strlen(ev->source)) + ev->body_len;
  char *line = malloc(cap);
  if (line == NULL) {
    snprintf(out->message, sizeof out->message, "out of memory");
    return HOOKD_RETRY;
  }
  time_t secs = (time_t)(ev->received_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char *p = line;
  p += sprintf(p, "{\"event_id\":\"");
  p = put_escaped(p, ev->id);
  p += sprintf(p, "\",\"type\":\"");
  p = put_escaped(p, ev->type);
  p += sprintf(p, "\",\"source\":\"");
  p = put_escaped(p, ev->source);
  p += sprintf(p, "\",\"attempt\":%" PRIu32 ",\"received\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"event\":",
               ev->attempt, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
               tm.tm_sec, (int)(ev->received_ms % 1000));
  p = put_compact(p, ev->body, ev->body_len);
  *p++ = '}';
  *p++ = '\n';
  /* One write per line: O_APPEND keeps lines from concurrent workers whole. */
  size_t len = (size_t)(p - line);
  ssize_t n = write(s->fd, line, len);
  int saved = errno;
  free(line);
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

static void sink_destroy(void *state) {
  sink *s = state;
  close(s->fd);
  free(s);
}

static const hookd_plugin descriptor = {
    .abi = HOOKD_PLUGIN_ABI,
    .struct_size = sizeof(hookd_plugin),
    .name = "file_sink",
    .version = "1.0.0",
    .description = "appends one JSON line per delivery to a file",
    .init = sink_init,
    .deliver = sink_deliver,
    .destroy = sink_destroy,
};

HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {
  (void)host_abi; /* the host checks the major version */
  return &descriptor;
}
