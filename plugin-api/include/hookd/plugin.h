/* hookd plugin ABI v1: the only header a hookd plugin includes. */
#ifndef HOOKD_PLUGIN_H
#define HOOKD_PLUGIN_H

/*
 * A hookd plugin is a shared object that exports exactly one symbol,
 * hookd_plugin_entry(). hookd loads it with dlopen(RTLD_NOW | RTLD_LOCAL),
 * calls the entry with the host's ABI number and checks the descriptor it
 * returns. Everything else a plugin needs from hookd (configuration, logging,
 * templates, event fields, an HTTP client) comes through the function table
 * `hookd_host_api` handed to init(); hookd exports no symbols of its own.
 *
 * Threading contract
 *   - init() and destroy() run on hookd's main thread, never concurrently with
 *     deliver() for the same instance.
 *   - deliver() runs on a delivery worker thread owned by hookd. For one
 *     instance, at most `concurrency` calls run at once, and never two calls
 *     for events with the same order key (for Cirrus Insight: the meeting id).
 *     Events with one order key reach deliver() in the order hookd accepted
 *     them; a retried event holds back the later events of its key.
 *   - Every host function may be called from any thread unless it says so.
 *   - hookd never reaps child processes it did not start (it does not ignore
 *     SIGCHLD nor call waitpid(-1)), so a plugin may run and wait for its own.
 *   - SIGPIPE is ignored in the whole process: a write to a closed pipe or
 *     socket fails with EPIPE instead of killing hookd.
 *
 * Memory contract
 *   - Whoever allocates frees. Strings the host returns from render() and
 *     event_get() are released with host->free(); objects the host creates
 *     (templates, HTTP responses) have their own free function.
 *   - Everything in `hookd_event` is borrowed for the duration of deliver().
 *   - Strings returned by the config getters belong to the host and stay valid
 *     until destroy() has returned.
 *
 * Versioning
 *   - HOOKD_PLUGIN_ABI_MAJOR changes when a change breaks existing plugins;
 *     the host refuses a plugin with another major. Minor versions only add:
 *     structs carry their size as the first field and grow at the end; the
 *     host reads a newer field only when struct_size says it is present.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HOOKD_PLUGIN_ABI_MAJOR 1
#define HOOKD_PLUGIN_ABI_MINOR 0
/* The ABI number a plugin puts in its descriptor: major in the high 16 bits. */
#define HOOKD_PLUGIN_ABI ((uint32_t)((HOOKD_PLUGIN_ABI_MAJOR << 16) | HOOKD_PLUGIN_ABI_MINOR))
#define HOOKD_ABI_MAJOR_OF(abi) ((uint32_t)(abi) >> 16)

#if defined(__GNUC__)
#define HOOKD_EXPORT __attribute__((visibility("default")))
#define HOOKD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define HOOKD_EXPORT
#define HOOKD_PRINTF(f, a)
#endif

/* What deliver() reports. */
typedef enum hookd_result {
  HOOKD_OK = 0,    /* done; the delivery is finished */
  HOOKD_RETRY = 1, /* temporary failure; hookd retries with backoff */
  HOOKD_FAIL = 2   /* permanent failure; the delivery becomes a dead letter */
} hookd_result;

/* Log levels for host->log(). */
typedef enum hookd_log_level {
  HOOKD_LOG_ERROR = 0,
  HOOKD_LOG_WARN = 1,
  HOOKD_LOG_INFO = 2,
  HOOKD_LOG_DEBUG = 3
} hookd_log_level;

/* The escaping a rendered template gets, chosen by the plugin for where the
 * text goes. The host applies it to every inserted value, not to the literal
 * text of the template. */
typedef enum hookd_escape {
  HOOKD_ESC_NONE = 0,   /* values inserted as they are */
  HOOKD_ESC_JSON = 1,   /* values escaped for the inside of a JSON string;
                           a value whose last filter is |json is a whole JSON
                           value and goes in as it is: {"a": {{x|json}}} */
  HOOKD_ESC_HEADER = 2, /* CR, LF and other control characters become spaces
                           (mail and HTTP headers: no header injection);
                           applied to the literal text too */
  HOOKD_ESC_URL = 3     /* values percent-encoded as a URL component (RFC 3986
                           unreserved characters pass) */
} hookd_escape;

/* Return codes of host functions that can fail. */
#define HOOKD_E_OK 0
#define HOOKD_E_MISSING 1   /* config key absent: the default was used */
#define HOOKD_E_TYPE (-1)   /* config value has the wrong type or range */
#define HOOKD_E_INVALID (-2) /* bad argument, bad template, unknown key */
#define HOOKD_E_NOMEM (-3)

/* Opaque host objects. */
typedef struct hookd_instance hookd_instance; /* one configured plugin instance */
typedef struct hookd_config hookd_config;     /* a JSON object of plugin config */
typedef struct hookd_template hookd_template; /* a compiled template */

/* One delivery of one event to one plugin instance, as deliver() sees it.
 * Read-only and borrowed: valid only during the deliver() call. */
typedef struct hookd_event {
  size_t struct_size;       /* sizeof(hookd_event) of the host */
  const char *id;           /* event id, unique per source (e.g. eventId) */
  const char *type;         /* event type (e.g. scheduling.smartscheduler.scheduled) */
  const char *source;       /* name of the source that accepted it */
  const char *order_key;    /* order key, or NULL when the event has none */
  const char *instance;     /* name of the plugin instance being delivered to */
  uint32_t attempt;         /* 1 for the first try, 2 for the first retry, ... */
  int64_t received_ms;      /* when hookd accepted the event, Unix ms */
  const char *body;         /* the raw request body, exactly as signed */
  size_t body_len;          /* its length in bytes (body is also NUL-terminated) */
  const char *content_type; /* the request's Content-Type, or "" */
  uint32_t timeout_ms;      /* the instance's delivery timeout_ms: finish within it */
  const void *host_private; /* for the host's own use; do not touch */
  void *reserved[8];
} hookd_event;

/* Filled by deliver() to explain its result. The host zeroes it before the
 * call. */
#define HOOKD_MESSAGE_MAX 512
typedef struct hookd_outcome {
  size_t struct_size;      /* sizeof(hookd_outcome) of the host */
  uint32_t retry_after_ms; /* with HOOKD_RETRY: the earliest next try (0: hookd's backoff) */
  char message[HOOKD_MESSAGE_MAX]; /* why it failed; logged and kept with dead letters */
  void *reserved[4];
} hookd_outcome;

/* An outbound HTTP request for host->http(). Zero it, set struct_size, fill
 * what is needed. */
typedef struct hookd_http_request {
  size_t struct_size;
  const char *method;              /* "POST" when NULL */
  const char *url;                 /* http:// or https:// */
  const char *const *headers;      /* "Name: value" lines, or NULL */
  size_t n_headers;
  const char *body;                /* may be NULL */
  size_t body_len;
  uint32_t connect_timeout_ms;     /* 0: 10 s */
  uint32_t timeout_ms;             /* whole request; 0: 30 s */
  const char *ca_file;             /* CA bundle for TLS verification; NULL: system's */
  void *reserved[6];
} hookd_http_request;

/* What host->http() captured. The plugin zeroes it and sets struct_size;
 * the host fills only the fields that struct_size covers. Free with
 * host->http_response_free(). */
typedef struct hookd_http_response {
  size_t struct_size;
  long status;          /* HTTP status, or 0 when no answer came (network error) */
  char *body;           /* first bytes of the answer body, NUL-terminated (bounded, 64 KiB) */
  size_t body_len;
  char *headers;        /* the answer's header block, NUL-terminated (bounded) */
  size_t headers_len;
  void *reserved[6];
} hookd_http_response;

/* The function table hookd gives a plugin. Append-only: check struct_size
 * before using a field added in a later minor version. */
typedef struct hookd_host_api {
  size_t struct_size;
  uint32_t abi; /* HOOKD_PLUGIN_ABI of the host */

  /* Writes one log line tagged with the instance name and, when event is not
   * NULL, the event id. Any thread. Control characters in the message are
   * escaped by the host. */
  void (*log)(const hookd_instance *self, const hookd_event *event, hookd_log_level level,
              const char *fmt, ...) HOOKD_PRINTF(4, 5);

  /* Releases memory the host allocated for the plugin (render(), event_get()). */
  void (*free)(void *p);

  /* --- config getters: main thread, during init() only ---------------------
   * `cfg` is the instance's "config" object, or an object reached through
   * config_object(). Each getter returns HOOKD_E_OK (found), HOOKD_E_MISSING
   * (absent: *out is set to the default) or HOOKD_E_TYPE (wrong type: the host
   * has recorded an error naming file:line:column and the key path; init()
   * should return non-zero, and may leave err empty to use that message). */
  int (*config_string)(const hookd_config *cfg, const char *key, const char *def,
                       const char **out);
  int (*config_int)(const hookd_config *cfg, const char *key, int64_t def, int64_t *out);
  int (*config_bool)(const hookd_config *cfg, const char *key, int def, int *out);
  /* A list of strings; *items is a host-owned NULL-terminated array. */
  int (*config_string_list)(const hookd_config *cfg, const char *key,
                            const char *const **items, size_t *n);
  /* A nested object; *out is NULL when absent. */
  int (*config_object)(const hookd_config *cfg, const char *key, const hookd_config **out);
  /* Number of keys of an object, and the name of key i (for maps such as
   * "headers"); NULL when i is out of range. */
  size_t (*config_count)(const hookd_config *cfg);
  const char *(*config_key_at)(const hookd_config *cfg, size_t i);
  /* Rejects keys not in `allowed` (NULL-terminated): returns HOOKD_E_OK, or
   * HOOKD_E_INVALID after recording "unknown key" with its position. */
  int (*config_allow_keys)(const hookd_config *cfg, const char *const *allowed);
  /* Records an error about `key` of `cfg` with its position, for values that
   * have the right type but a bad meaning. Returns HOOKD_E_INVALID. */
  int (*config_error)(const hookd_config *cfg, const char *key, const char *fmt, ...)
      HOOKD_PRINTF(3, 4);
  /* Compiles the template string at `key` (or `def` when absent; *out is NULL
   * when both are absent). Syntax errors are recorded with their position. */
  int (*config_template)(const hookd_config *cfg, const char *key, const char *def,
                         hookd_template **out);

  /* --- templates (DESIGN §5) ---------------------------------------------
   * template_compile: any thread; returns NULL and writes err on a syntax
   * error. template_free: frees a template from either compile function. */
  hookd_template *(*template_compile)(const char *text, char *err, size_t errlen);
  void (*template_free)(hookd_template *t);
  /* Renders t against the event's envelope with the given escaping. Returns a
   * NUL-terminated string to release with host->free() (its length in *len
   * when len is not NULL), or NULL when out of memory. Any thread. */
  char *(*render)(const hookd_template *t, const hookd_event *event, hookd_escape esc,
                  size_t *len);

  /* The value at a dotted path of the event's envelope ("data.meetingInfo.
   * formValues.0.answerText"): strings as they are, numbers and booleans as
   * text, objects and arrays as JSON. NULL when absent or null. Release with
   * host->free(). Any thread. */
  char *(*event_get)(const hookd_event *event, const char *path);

  /* --- outbound HTTP (libcurl, one reused handle per worker thread) ---------
   * Performs req and maps the answer to a result: 2xx OK; 408, 425, 429, 5xx
   * and network errors RETRY (Retry-After, seconds or HTTP-date, goes to
   * outcome->retry_after_ms); other answers FAIL with the status and the first
   * bytes of the body in outcome->message. When resp is not NULL it receives
   * the answer (free it with http_response_free) so the plugin can look
   * closer (e.g. Slack's {"ok": false}). deliver() threads only. */
  hookd_result (*http)(const hookd_instance *self, const hookd_http_request *req,
                       hookd_http_response *resp, hookd_outcome *outcome);
  void (*http_response_free)(hookd_http_response *resp);

  /* Like config_string, for a file path: a relative path is resolved
   * against the directory of hookd's config file (so "var/out.jsonl" means
   * the same wherever hookd was started). *out stays valid until destroy().
   * Main thread, during init() only. */
  int (*config_path)(const hookd_config *cfg, const char *key, const char *def,
                     const char **out);

  /* Matches an event type against a pattern with the router's rules (exact,
   * "*" one dot-separated segment, "**" the rest). Returns 1 or 0, or
   * HOOKD_E_INVALID for a malformed pattern. Any thread. */
  int (*pattern_match)(const char *pattern, const char *type);
} hookd_host_api;

/* The descriptor a plugin returns from hookd_plugin_entry(). Static const data
 * in the plugin; the host never writes or frees it. */
typedef struct hookd_plugin {
  uint32_t abi;         /* HOOKD_PLUGIN_ABI the plugin was built against */
  uint32_t struct_size; /* sizeof(hookd_plugin) of the plugin */
  const char *name;     /* module name, e.g. "file_sink" */
  const char *version;  /* the plugin's own version, e.g. "1.0.0" */
  const char *description;

  /* Creates one instance. host: the function table (valid until the process
   * exits); self: the instance handle for host->log() (valid until destroy()
   * returns); config: the instance's "config" object (never NULL, may be
   * empty). On success stores the instance state in *state and returns 0. On
   * failure returns non-zero, writes a one-line reason to err (errlen bytes,
   * may be left empty when a config getter already recorded the error) and
   * must have freed what it allocated. Main thread. */
  int (*init)(const hookd_host_api *host, hookd_instance *self, const hookd_config *config,
              void **state, char *err, size_t errlen);

  /* Delivers one event. May block (network I/O) but should respect its own
   * timeouts: hookd logs and counts a call that overruns the instance's
   * timeout_ms, and cannot stop it. Returns HOOKD_OK, HOOKD_RETRY (optionally
   * with outcome->retry_after_ms) or HOOKD_FAIL, explaining failures in
   * outcome->message. Worker thread; see the threading contract above. */
  hookd_result (*deliver)(void *state, const hookd_event *event, hookd_outcome *outcome);

  /* Frees the instance state. Called once, after the last deliver() to the
   * instance has returned. Main thread. May be NULL. */
  void (*destroy)(void *state);

  void *reserved[8];
} hookd_plugin;

/* The one symbol a plugin exports. host_abi is the host's HOOKD_PLUGIN_ABI; a
 * plugin may return NULL when it cannot work with that host. */
#define HOOKD_PLUGIN_ENTRY_SYMBOL "hookd_plugin_entry"
HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi);

#ifdef __cplusplus
}
#endif
#endif /* HOOKD_PLUGIN_H */
