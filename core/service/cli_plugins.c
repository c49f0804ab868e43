/* The plugin author's commands: `hookd plugins [MODULE]` lists modules and prints option tables;
 * `hookd try` runs one delivery. */
#include "cli_plugins.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "envelope.h"
#include "event.h"
#include "http_client.h"
#include "log.h"
#include "plugin_host.h"
#include "plugin_options.h"
#include "clock.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

static int load_config(config *cfg, const char *file) {
  char err[1024];
  if (config_load(cfg, file, err, sizeof err) == 0) return 0;
  fprintf(stderr, "hookd: %s\n", err);
  return -1;
}

static void close_module(plugin_module *m) {
  if (m->dl) dlclose(m->dl);
  free(m->name);
  free(m->path);
  memset(m, 0, sizeof *m);
}

/* --- hookd plugins ----------------------------------------------------------- */

/* Module names (file names without ".so") in plugin_dirs, each once, in
 * search order; NULL-terminated, caller frees. */
static char **module_names(const config *cfg, size_t *n_out) {
  size_t n = 0, cap = 16;
  char **names = calloc(cap + 1, sizeof *names);
  for (size_t d = 0; names && d < cfg->n_plugin_dirs; d++) {
    DIR *dir = opendir(cfg->plugin_dirs[d]);
    struct dirent *e;
    while (dir && (e = readdir(dir)) != NULL) {
      size_t len = strlen(e->d_name);
      if (len < 4 || e->d_name[0] == '.' || strcmp(e->d_name + len - 3, ".so") != 0) continue;
      size_t i = 0;
      while (i < n && (strlen(names[i]) != len - 3 || strncmp(names[i], e->d_name, len - 3))) i++;
      if (i < n) continue;
      if (n == cap) {
        char **grown = realloc(names, (2 * cap + 1) * sizeof *names);
        if (grown == NULL) break;
        names = grown;
        cap *= 2;
      }
      names[n] = strndup(e->d_name, len - 3);
      if (names[n]) names[++n] = NULL;
    }
    if (dir) closedir(dir);
  }
  *n_out = n;
  return names;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_modules(const config *cfg) {
  size_t n = 0;
  char **names = module_names(cfg, &n);
  if (names == NULL) return EXIT_RUNTIME;
  qsort(names, n, sizeof *names, by_name);
  printf("%-16s %-9s %-5s %s\n", "MODULE", "VERSION", "ABI", "DESCRIPTION");
  for (size_t i = 0; i < n; i++) {
    plugin_module m = {.name = names[i]};
    char err[512];
    if (plugin_host_load_module(&m, cfg, err, sizeof err) != 0) {
      printf("%-16s %-9s %-5s cannot load: %s\n", names[i], "-", "-", err);
    } else {
      const hookd_plugin *d = m.desc;
      printf("%-16s %-9s %u.%-3u %s%s\n", names[i], d->version ? d->version : "?",
             HOOKD_ABI_MAJOR_OF(d->abi), HOOKD_ABI_MINOR_OF(d->abi),
             d->description ? d->description : "",
             plugin_host_options(d) ? "" : " (options not declared)");
    }
    m.name = NULL; /* names[i], freed below */
    close_module(&m);
    free(names[i]);
  }
  if (n == 0) printf("(no modules in plugin_dirs)\n");
  free(names);
  return 0;
}

static int describe_module(const config *cfg, const char *name) {
  plugin_module m = {.name = strdup(name)};
  char err[512];
  if (m.name == NULL || plugin_host_load_module(&m, cfg, err, sizeof err) != 0) {
    fprintf(stderr, "hookd: %s\n", m.name ? err : "out of memory");
    close_module(&m);
    return EXIT_RUNTIME;
  }
  const hookd_plugin *d = m.desc;
  const hookd_option *opts = plugin_host_options(d);
  printf("%s %s (plugin ABI %u.%u) from %s\n", name, d->version ? d->version : "?",
         HOOKD_ABI_MAJOR_OF(d->abi), HOOKD_ABI_MINOR_OF(d->abi), m.path);
  if (d->description) printf("%s\n", d->description);
  printf("\noptions (the instance's \"config\" object):\n");
  if (opts)
    plugin_options_print(stdout, opts);
  else
    printf("  not declared: this plugin reads its config itself (see its README)\n");
  printf(
      "\nevery instance also takes \"delivery\" settings (concurrency, timeout_ms, rate, ...)\n"
      "next to \"config\"; deliver() gets timeout_ms in the event.\n");
  close_module(&m);
  return 0;
}

int cli_plugins(const char *file, int argc, char **argv) {
  if (argc > 1) {
    fprintf(stderr, "hookd: plugins takes at most one module name\n");
    return EXIT_USAGE;
  }
  config cfg;
  if (load_config(&cfg, file) != 0) return EXIT_USAGE;
  log_setup(HLOG_WARN, cfg.log_format);
  int rc = argc == 1 ? describe_module(&cfg, argv[0]) : list_modules(&cfg);
  config_free(&cfg);
  return rc;
}

/* --- hookd try ----------------------------------------------------------------- */

typedef struct try_args {
  const char *instance;
  const char *event_file;
  const char *source;
  long attempt;
} try_args;

static int parse_try_args(int argc, char **argv, try_args *a) {
  a->attempt = 1;
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    int has_value = i + 1 < argc;
    if (strcmp(arg, "--instance") == 0 && has_value) {
      a->instance = argv[++i];
    } else if (strcmp(arg, "--source") == 0 && has_value) {
      a->source = argv[++i];
    } else if (strcmp(arg, "--attempt") == 0 && has_value) {
      char *end;
      a->attempt = strtol(argv[++i], &end, 10);
      if (*end != '\0' || a->attempt < 1 || a->attempt > 1000000) {
        fprintf(stderr, "hookd: --attempt takes a number from 1, not '%s'\n", argv[i]);
        return -1;
      }
    } else if (arg[0] != '-' && a->event_file == NULL) {
      a->event_file = arg;
    } else {
      fprintf(stderr, "hookd: try: unexpected argument '%s'\n", arg);
      return -1;
    }
  }
  if (a->instance == NULL || a->event_file == NULL) {
    fprintf(stderr,
            "usage: hookd try -c FILE --instance NAME EVENT.json [--attempt N] "
            "[--source NAME]\n");
    return -1;
  }
  return 0;
}

/* The source the event is read as: the one named, else the first source a
 * route names for the instance, else the first source. */
static const config_source *pick_source(const config *cfg, size_t inst, const char *name) {
  for (size_t i = 0; name && i < cfg->n_sources; i++)
    if (strcmp(cfg->sources[i].name, name) == 0) return &cfg->sources[i];
  if (name) return NULL;
  for (size_t r = 0; r < cfg->n_routes; r++) {
    const config_route *rt = &cfg->routes[r];
    for (size_t t = 0; t < rt->n_to && rt->source; t++)
      if (rt->to[t] == inst) return pick_source(cfg, inst, rt->source);
  }
  return cfg->n_sources ? &cfg->sources[0] : NULL;
}

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 65536, n = 0, got;
  char *buf = malloc(cap + 1);
  while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    char *grown = n == cap ? realloc(buf, (cap *= 2) + 1) : buf;
    if (grown == NULL) free(buf);
    buf = grown;
  }
  int bad = ferror(f);
  fclose(f);
  if (buf == NULL || bad) return free(buf), NULL;
  buf[n] = '\0';
  *len = n;
  return buf;
}

/* Reads and decodes the event file as the source would; NULL after a
 * message on stderr. */
static event *load_event(const try_args *a, const config_source *src) {
  size_t len = 0;
  char *body = read_all(a->event_file, &len);
  if (body == NULL) {
    fprintf(stderr, "hookd: cannot read %s: %s\n", a->event_file, strerror(errno));
    return NULL;
  }
  envelope env;
  const char *why = NULL;
  event *ev = NULL;
  if (envelope_decode(&src->envelope, body, len, &env, &why) != 0) {
    fprintf(stderr, "hookd: %s: %s (read as source '%s')\n", a->event_file, why, src->name);
  } else {
    ev = event_new(src->name, env.id, env.type, env.order_key, "application/json", body, len,
                   env.root, clock_now_ms());
    if (ev) env.root = NULL; /* the event owns it now */
    envelope_clear(&env);
  }
  free(body);
  return ev;
}

/* Runs deliver() once and prints what came of it. */
static int run_once(plugin_instance *inst, event *ev, long attempt) {
  delivery *d = delivery_new(ev, NULL); /* no spool lane: nothing is stored */
  if (d == NULL) return EXIT_RUNTIME;
  d->attempt = (uint32_t)attempt;
  hookd_event view;
  plugin_host_event_view(&view, d, inst);
  hookd_outcome out;
  memset(&out, 0, sizeof out);
  out.struct_size = sizeof out;
  /* Through the host, as the dispatcher calls it: the same path whether
   * the instance runs in this process or in a child of its own. */
  int r = plugin_host_deliver(inst, &view, &out);
  http_client_thread_cleanup();
  out.message[sizeof out.message - 1] = '\0';
  if (r == PLUGIN_UNAVAILABLE) r = HOOKD_RETRY;
  const char *name = r == HOOKD_OK ? "OK" : r == HOOKD_RETRY ? "RETRY" : "FAIL";
  printf("outcome: %s\n", name);
  if (r == PLUGIN_CRASHED || r == PLUGIN_TIMED_OUT)
    printf("note: the plugin %s\n", r == PLUGIN_CRASHED ? "crashed" : "ran past timeout_ms");
  else if (r != HOOKD_OK && r != HOOKD_RETRY && r != HOOKD_FAIL)
    printf("note: deliver() returned %d, which hookd counts as FAIL\n", r);
  printf("message: %s\n", out.message[0] ? out.message : "(none)");
  if (r == HOOKD_RETRY)
    printf("retry-after: %s%u ms\n", out.retry_after_ms ? "" : "hookd's backoff; ",
           (unsigned)out.retry_after_ms);
  delivery_free(d);
  return r == HOOKD_OK ? 0 : r == HOOKD_RETRY ? CLI_EXIT_TEMPFAIL : EXIT_RUNTIME;
}

static int try_instance(const config *cfg, const try_args *a) {
  size_t i = 0;
  while (i < cfg->n_plugins && strcmp(cfg->plugins[i].name, a->instance) != 0) i++;
  if (i == cfg->n_plugins) {
    fprintf(stderr, "hookd: no plugin instance '%s' in %s\n", a->instance, cfg->file);
    return EXIT_USAGE;
  }
  const config_source *src = pick_source(cfg, i, a->source);
  if (src == NULL) {
    fprintf(stderr, "hookd: no source '%s' in %s\n", a->source ? a->source : "", cfg->file);
    return EXIT_USAGE;
  }
  event *ev = load_event(a, src);
  if (ev == NULL) return EXIT_USAGE;
  const config_plugin *cp = &cfg->plugins[i];
  plugin_module m = {.name = strdup(cp->module)};
  plugin_instance *inst = plugin_host_instance_new(&m, cp, i);
  char err[1024];
  int rc = EXIT_USAGE;
  if (m.name == NULL || inst == NULL) {
    fprintf(stderr, "hookd: %s: out of memory\n", cp->keypath);
  } else if (plugin_host_load_module(&m, cfg, err, sizeof err) != 0 ||
             plugin_host_instance_init(inst, cp->config, &cfg->doc, cfg->dir, err, sizeof err) !=
                 0) {
    fprintf(stderr, "hookd: %s: %s\n", cp->keypath, err);
  } else {
    rc = run_once(inst, ev, a->attempt);
    plugin_host_instance_destroy(inst);
  }
  plugin_host_instance_free(inst);
  close_module(&m);
  event_unref(ev);
  return rc;
}

int cli_try(const char *file, int argc, char **argv) {
  try_args a = {0};
  if (parse_try_args(argc, argv, &a) != 0) return EXIT_USAGE;
  config cfg;
  if (load_config(&cfg, file) != 0) return EXIT_USAGE;
  /* Every line the instance logs is part of the answer. */
  log_setup(HLOG_DEBUG, cfg.log_format);
  int rc = try_instance(&cfg, &a);
  config_free(&cfg);
  http_client_global_cleanup();
  return rc;
}
