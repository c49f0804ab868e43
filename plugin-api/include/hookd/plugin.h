/* hookd plugin ABI 1.2: the header a hookd plugin includes (hookd/helpers.h is its optional companion). */
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
 *   - init() and destroy() run on one of hookd's control threads (at start
 *     the main thread; a reload loads the new instances on a thread of its
 *     own, so that a slow init never blocks hookd), never concurrently with
 *     deliver() for the same instance. init() of a new instance may run
 *     while deliver() of the instance it replaces still runs.
 *   - deliver() runs on a delivery worker thread owned by hookd. For one
 *     instance, at most `concurrency` calls run at once, and never two calls
 *     for events with the same order key (for Cirrus Insight: the meeting id).
 *     Events with one order key reach deliver() in the order hookd accepted
 *     them; a retried event holds back the later events of its key.
 *   - deliver() must finish within the event's timeout_ms. A call that runs
 *     longer is a failed attempt: hookd writes the call off, retries the
 *     delivery later and ignores the call's result whenever it returns. It
 *     cannot stop the thread, so such a call breaks the contract above: it
 *     may overlap the next attempt of the same event or of its order key.
 *     A plugin that can hang should run with "isolation": "process", where
 *     hookd kills the call's process instead.
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
 *     the host refuses a plugin with another major, logging both numbers.
 *     Minor versions only add, at the end of a struct, never reordering.
 *   - Every struct that crosses the boundary carries its size, so either side
 *     can tell which fields the other was built with. hookd_plugin starts
 *     with `abi` and then `struct_size` (the ABI number comes first so the
 *     host can refuse a foreign major before trusting anything else); every
 *     other struct starts with `struct_size`. The host reads a descriptor
 *     field only when the plugin's struct_size covers it, and a plugin reads
 *     a host table field only when HOOKD_HOST_HAS(host, field) says so.
 *   - hookd_plugin_entry() receives the host's ABI number: a plugin that
 *     needs a newer minor than the host has returns NULL (see
 *     HOOKD_ABI_COMPATIBLE), and the host says so instead of crashing.
 *
 * ABI history
 *   1.0  descriptor, host table, event view, HTTP helper.
 *   1.1  declared options (hookd_plugin.options, .state_size): the host
 *        checks and fills them before init(), and `hookd plugins MODULE`
 *        prints them; init() may be NULL for a plugin with options.
 *        Host table: smtp() (a mail submission over libcurl), json_get().
        Event view: host and self, so deliver() needs no copies of them.
 *   1.2  Outcome: flags (HOOKD_OUTCOME_RATE_LIMITED: the destination said
 *        "too many requests"), the destination's status and the first bytes
 *        of its answer, for the status page; host->http() fills them.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HOOKD_PLUGIN_ABI_MAJOR 1
#define HOOKD_PLUGIN_ABI_MINOR 2
/* The ABI number a plugin puts in its descriptor: major in the high 16 bits. */
#define HOOKD_PLUGIN_ABI ((uint32_t)((HOOKD_PLUGIN_ABI_MAJOR << 16) | HOOKD_PLUGIN_ABI_MINOR))
#define HOOKD_ABI_MAJOR_OF(abi) ((uint32_t)(abi) >> 16)
#define HOOKD_ABI_MINOR_OF(abi) ((uint32_t)(abi)&0xffffu)
/* True when a host with ABI number host_abi can run a plugin built against
 * this header: the same major, and at least this minor. */
#define HOOKD_ABI_COMPATIBLE(host_abi)                            \
  (HOOKD_ABI_MAJOR_OF(host_abi) == HOOKD_PLUGIN_ABI_MAJOR &&      \
   HOOKD_ABI_MINOR_OF(host_abi) >= HOOKD_PLUGIN_ABI_MINOR)

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
  /* ABI 1.1 (read them when struct_size covers them: HOOKD_EVENT_HAS). */
  const struct hookd_host_api *host; /* the host table, as init() got it */
  hookd_instance *self;              /* the instance, for host->log() */
} hookd_event;

/* True when the event view has `field` (a host of an older minor lacks the
 * fields added after it). */
#define HOOKD_EVENT_HAS(ev, field) \
  ((ev)->struct_size >= offsetof(hookd_event, field) + sizeof((ev)->field))

/* Filled by deliver() to explain its result. The host zeroes it before the
 * call and sets struct_size to its own size: write a field added in a later
 * minor version only when HOOKD_OUTCOME_HAS(out, field). */
#define HOOKD_MESSAGE_MAX 512
#define HOOKD_ANSWER_MAX 256
typedef struct hookd_outcome {
  size_t struct_size;      /* sizeof(hookd_outcome) of the host */
  uint32_t retry_after_ms; /* with HOOKD_RETRY: the earliest next try (0: hookd's backoff) */
  char message[HOOKD_MESSAGE_MAX]; /* why it failed; logged and kept with dead letters */
  void *reserved[4];
  /* ABI 1.2. host->http() fills all three from the answer it got. */
  uint32_t flags;                 /* HOOKD_OUTCOME_* bits */
  int32_t status;                 /* the destination's answer: an HTTP status, an SMTP
                                     reply code; 0 when none came (network error) */
  char answer[HOOKD_ANSWER_MAX];  /* the first bytes of that answer, control characters as
                                     spaces: shown with the attempt on the status page */
} hookd_outcome;

/* With HOOKD_RETRY: the destination refused for "too many requests" (an HTTP
 * 429, Slack's "ratelimited"). hookd then holds every delivery of the
 * instance until retry_after_ms (1 s when 0) has passed, and the attempt is
 * not counted: neither against max_attempts nor as a circuit-breaker
 * failure. host->http() sets it for a 429; a plugin that speaks its own
 * protocol sets it when its destination says so. */
#define HOOKD_OUTCOME_RATE_LIMITED 0x1u

/* True when the outcome has `field` (a host of an older minor lacks it). */
#define HOOKD_OUTCOME_HAS(out, field) \
  ((out)->struct_size >= offsetof(hookd_outcome, field) + sizeof((out)->field))

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

/* A mail submission for host->smtp(). Zero it, set struct_size, fill what
 * is needed. Addresses are bare (local@domain, no display name). */
typedef struct hookd_smtp_request {
  size_t struct_size;
  const char *url;               /* smtp://host:port or smtps://host:port */
  int tls;                       /* smtp://: 0 plain, 1 STARTTLS when offered, 2 STARTTLS
                                    required (smtps:// is always TLS) */
  const char *username;          /* AUTH when not NULL */
  const char *password;
  const char *ca_file;           /* CA bundle for TLS verification; NULL: system's */
  const char *from;              /* MAIL FROM */
  const char *const *rcpt;       /* RCPT TO, n_rcpt of them */
  size_t n_rcpt;
  const char *message;           /* the whole RFC 5322 message, CRLF line ends */
  size_t message_len;
  uint32_t timeout_ms;           /* whole submission; 0: 30 s */
  void *reserved[6];
} hookd_smtp_request;

/* --- declared options (ABI 1.1) ---------------------------------------------
 * A plugin may describe its config keys in a table instead of reading them
 * with the getters. The host then rejects unknown keys (with a "did you
 * mean"), checks each value's type and range with the same messages as the
 * rest of the config file (FILE:LINE:COL: plugins[2].config.KEY: ...),
 * applies defaults, and writes each value into a state struct of
 * `state_size` bytes that it allocates zeroed, at the row's `offset`
 * (offsetof). Only then does it call init(), which keeps the rules that tie
 * several options together. Values the host fills (strings, lists,
 * templates) belong to the host and stay valid until destroy() has
 * returned; the host also frees the state struct after destroy(). */
typedef enum hookd_option_type {
  HOOKD_OPT_STRING = 1,        /* const char *: a string */
  HOOKD_OPT_INT = 2,           /* int64_t: an integer in [min, max] */
  HOOKD_OPT_BOOL = 3,          /* int: true (1) or false (0) */
  HOOKD_OPT_ENUM = 4,          /* int: the index in `choices` of the name given */
  HOOKD_OPT_STRING_LIST = 5,   /* hookd_string_list: a list of strings */
  HOOKD_OPT_TEMPLATE = 6,      /* hookd_template *: compiled; render it with `escape` */
  HOOKD_OPT_PATH = 7,          /* const char *: relative to the config file's directory */
  HOOKD_OPT_DURATION = 8,      /* int64_t milliseconds: 1500, "500ms", "30s", "5m", "1h",
                                  "1d"; in [min, max] */
  HOOKD_OPT_URL = 9,           /* const char *: an absolute URL whose scheme is one of
                                  `choices` (NULL: http and https) */
  HOOKD_OPT_SECRET = 10,       /* const char *: a string that is never printed; the host
                                  warns when it is written inline instead of ${...} */
  HOOKD_OPT_TEMPLATE_LIST = 11, /* hookd_template_list: a list of templates */
  HOOKD_OPT_TEMPLATE_MAP = 12  /* hookd_template_map: an object of name -> template */
} hookd_option_type;

typedef struct hookd_string_list {
  const char *const *items; /* n strings, then NULL */
  size_t n;
} hookd_string_list;

typedef struct hookd_template_list {
  hookd_template *const *items;
  size_t n;
} hookd_template_list;

typedef struct hookd_template_map {
  const char *const *keys; /* in config order */
  hookd_template *const *values;
  size_t n;
} hookd_template_map;

/* Flags of an option row. */
#define HOOKD_OPT_REQUIRED 0x1u /* absent is an error ("missing required key") */
#define HOOKD_OPT_NONEMPTY 0x2u /* strings, paths, secrets, lists: empty is an error */

/* One row of the table; the table ends with a row whose name is NULL
 * (HOOKD_OPTIONS_END). */
typedef struct hookd_option {
  const char *name;           /* the config key */
  hookd_option_type type;
  uint32_t flags;             /* HOOKD_OPT_REQUIRED | HOOKD_OPT_NONEMPTY */
  size_t offset;              /* offsetof(state struct, field) */
  const char *def;            /* default, written as in the config ("10", "true", "30s", an
                                 enum name, a template, one list item); NULL: none (the
                                 field stays zero: NULL, 0, an empty list) */
  int64_t min, max;           /* INT, DURATION: the inclusive range (min = max = 0: any
                                 value >= 0) */
  const char *const *choices; /* ENUM: the names, NULL-terminated; URL: the schemes */
  hookd_escape escape;        /* TEMPLATE, TEMPLATE_LIST, TEMPLATE_MAP: how deliver()
                                 renders it (shown by `hookd plugins`; with
                                 HOOKD_ESC_HEADER the literal text is checked too) */
  const char *description;    /* one line for `hookd plugins MODULE` */
} hookd_option;

/* A row with the usual fields, in C and C++: the key is `name`, the field
 * `field` of struct type `st`. Set min/max, choices or flags with a
 * designated initializer (C) or by writing the row out. */
#define HOOKD_OPTION(name, type, st, field, def, description)                               \
  { name, HOOKD_OPT_##type, 0, offsetof(st, field), def, 0, 0, NULL, HOOKD_ESC_NONE, \
    description }
#define HOOKD_OPTIONS_END \
  { NULL, (hookd_option_type)0, 0, 0, NULL, 0, 0, NULL, HOOKD_ESC_NONE, NULL }

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

  /* --- templates (README "Templates") ---------------------------------------------
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
   * closer (e.g. Slack's {"ok": false}). A 429 also sets
   * HOOKD_OUTCOME_RATE_LIMITED, and every answer fills outcome->status and
   * outcome->answer (ABI 1.2, when the outcome is that large: pass the one
   * deliver() got). deliver() threads only. */
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

  /* --- ABI 1.1 -------------------------------------------------------------
   * Submits one message over SMTP (libcurl, loaded at first use) and maps
   * the answer: OK when the server accepted it (its last reply line goes to
   * outcome->message); RETRY on 4xx replies, network errors and timeouts;
   * FAIL on 5xx replies, a refused login, a malformed URL or STARTTLS
   * required but not offered. deliver() threads only. */
  hookd_result (*smtp)(const hookd_instance *self, const hookd_smtp_request *req,
                       hookd_outcome *outcome);

  /* The value at a dotted path of a JSON document (e.g. an HTTP answer
   * body: "error", "errors.0.message"), as event_get() gives it: strings as
   * they are, numbers and booleans as text, objects and arrays as JSON.
   * NULL when the text is not JSON or the path is absent or null. Release
   * with host->free(). Any thread. */
  char *(*json_get)(const char *json, size_t len, const char *path);
} hookd_host_api;

/* True when the host table has `field`: check it before calling a function
 * added in a later minor version than the host may have. */
#define HOOKD_HOST_HAS(host, field) \
  ((host)->struct_size >= offsetof(hookd_host_api, field) + sizeof((host)->field))

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
   * must have freed what it allocated. A control thread (see the threading
   * contract). With declared options (ABI 1.1) *state already points to the filled
   * state struct (host-owned: do not free it) and init() only checks rules
   * between options and sets up what it needs; it may be NULL. */
  int (*init)(const hookd_host_api *host, hookd_instance *self, const hookd_config *config,
              void **state, char *err, size_t errlen);

  /* Delivers one event. May block (network I/O) but must finish within
   * event->timeout_ms: a call that overruns it is written off as a failed
   * attempt (see the threading contract). Returns HOOKD_OK, HOOKD_RETRY (optionally
   * with outcome->retry_after_ms) or HOOKD_FAIL, explaining failures in
   * outcome->message. Worker thread; see the threading contract above. */
  hookd_result (*deliver)(void *state, const hookd_event *event, hookd_outcome *outcome);

  /* Frees the instance state. Called once, after the last deliver() to the
   * instance has returned (a written-off call that never returns keeps its
   * instance alive). A control thread. May be NULL. */
  void (*destroy)(void *state);

  void *reserved[8]; /* zero; growth goes after it (struct_size tells) */

  /* --- ABI 1.1 --- */
  const hookd_option *options; /* the declared options, ending with HOOKD_OPTIONS_END;
                                  NULL: init() reads its config with the getters */
  size_t state_size;           /* with options: bytes of the state struct the host
                                  allocates, fills and hands to init() in *state */
} hookd_plugin;

/* The one symbol a plugin exports. host_abi is the host's HOOKD_PLUGIN_ABI; a
 * plugin may return NULL when it cannot work with that host. */
#define HOOKD_PLUGIN_ENTRY_SYMBOL "hookd_plugin_entry"
HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi);

/* Defines the descriptor and the entry point of a plugin built against this
 * header, in one line at the end of the plugin: its name, version and
 * description, its callbacks (init and destroy may be NULL), its option
 * table and the state struct the table fills (both ABI 1.1). The entry
 * refuses a host older than this header's minor version. */
#define HOOKD_PLUGIN_DEFINE(name, version, description, init, deliver, destroy, options,      \
                            state_type)                                                       \
  static const hookd_plugin hookd_plugin_descriptor_ = {                                      \
      HOOKD_PLUGIN_ABI, sizeof(hookd_plugin), name, version, description, init, deliver,      \
      destroy,          {NULL},               options, sizeof(state_type)};                  \
  HOOKD_EXPORT const hookd_plugin *hookd_plugin_entry(uint32_t host_abi) {                   \
    return HOOKD_ABI_COMPATIBLE(host_abi) ? &hookd_plugin_descriptor_ : NULL;                \
  }

#ifdef __cplusplus
}
#endif
#endif /* HOOKD_PLUGIN_H */
