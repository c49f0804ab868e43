/* Unit tests for plugin_host.c: loading real test plugins, every refusal message, config getters as
 * a plugin sees them, and the event view with event_get/render. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "envelope.h"
#include "event.h"
#include "log.h"
#include "plugin_host.h"
#include "plugin_instance.h" /* looks inside instances */
#include "../plugins/test_options.h"

/* Every file a test writes lives here; the group teardown removes it. */
static char tmpdir[] = "/tmp/hookd-test-plugin-host-XXXXXX";
static char cfg_path[PATH_MAX];
static int n_files;

/* ---- helpers ---- */

/* Removes a directory tree of plain files and directories. */
static void rm_tree(const char *path) {
  DIR *d = opendir(path);
  if (d == NULL) {
    unlink(path);
    return;
  }
  struct dirent *e;
  char sub[PATH_MAX];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
    struct stat st;
    if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
      rm_tree(sub);
    } else {
      unlink(sub);
    }
  }
  closedir(d);
  rmdir(path);
}

/* Fixtures are written with ' for " so they stay readable in C. */
static char *q(const char *s) {
  char *out = strdup(s);
  assert_non_null(out);
  for (char *p = out; *p; p++)
    if (*p == '\'') *p = '"';
  return out;
}

/* A fresh file name in tmpdir (not created). */
static void temp_name(char *out, size_t n, const char *stem) {
  snprintf(out, n, "%s/%s-%d", tmpdir, stem, ++n_files);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* The whole file, or NULL when it does not exist. Caller frees. */
static char *read_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  assert_non_null(buf);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 2) {
      cap *= 2;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
  }
  buf[len] = '\0';
  fclose(f);
  return buf;
}

/* The config around a list of plugin entries. The plugin list starts on line
 * PLUGINS_LINE of the file, which marker positions rely on. */
#define SRC "{'name': 's', 'path': '/h', 'verify': {'scheme': 'none'}}"
#define CFG_HEAD                   \
  "{\n"                            \
  "  'plugin_dirs': ['" PLUGIN_DIR \
  "'],\n"                          \
  "  'sources': [" SRC             \
  "],\n"                           \
  "  'plugins': [\n"

/* Writes the config (with ' for ") to a fresh file; out: its path. The
 * plugins text may contain %s, filled by `arg` (an out file path). */
static const char *write_config(const char *plugins, const char *arg) {
  char body[8192];
  snprintf(body, sizeof body, plugins, arg ? arg : "", arg ? arg : "");
  char *text_q = q(body);
  size_t len = strlen(CFG_HEAD) + strlen(text_q) + 16;
  char *text = malloc(len);
  assert_non_null(text);
  char *head = q(CFG_HEAD);
  snprintf(text, len, "%s%s\n  ]\n}\n", head, text_q);
  temp_name(cfg_path, sizeof cfg_path, "hookd.jsonc");
  write_file(cfg_path, text);
  free(head);
  free(text);
  free(text_q);
  return cfg_path;
}

static void load_config(config *cfg, const char *plugins, const char *arg) {
  char err[1024] = "";
  const char *path = write_config(plugins, arg);
  if (config_load(cfg, path, err, sizeof err) != 0) fail_msg("config_load failed: %s", err);
}

/* Loads a config whose plugins must be refused; returns the message. */
static void load_refused(const char *plugins, const char *arg, char *err, size_t errlen) {
  config cfg;
  load_config(&cfg, plugins, arg);
  plugin_host h;
  err[0] = '\0';
  assert_int_equal(plugin_host_load(&h, &cfg, err, errlen), -1);
  /* A refused load leaves nothing behind. */
  assert_null(h.mods);
  assert_null(h.insts);
  assert_int_equal(h.n_insts, 0);
  assert_int_equal(h.n_mods, 0);
  config_free(&cfg);
}

/* "LINE:COL" of the first character after the marker comment in the config
 * written by write_config (counted independently of jsonc.c). */
#define MARK "/*@*/"
static void marker_pos(char *out, size_t n) {
  char *text = read_file(cfg_path);
  assert_non_null(text);
  const char *m = strstr(text, MARK);
  assert_non_null(m);
  size_t off = (size_t)(m - text) + strlen(MARK);
  int line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < off; i++) {
    if (text[i] == '\n') {
      line++;
      line_start = i + 1;
    }
  }
  snprintf(out, n, "%d:%zu", line, off - line_start + 1);
  free(text);
}

static int group_setup(void **state) {
  (void)state;
  log_setup(HLOG_ERROR, HLOG_FORMAT_TEXT);
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  rm_tree(tmpdir);
  return 0;
}

/* ---- loading ---- */

static void test_load_good(void **state) {
  (void)state;
  char out[PATH_MAX];
  temp_name(out, sizeof out, "out");
  config cfg;
  load_config(
      &cfg,
      "    {'name': 'p', 'module': 'test_plugin', 'config': {'out': '%s', 'sleep_ms': 0}},\n"
      "    {'name': 'n', 'module': 'noop'},\n"
      "    {'name': 'p2', 'module': 'test_plugin'}",
      out);
  plugin_host h;
  char err[1024] = "";
  if (plugin_host_load(&h, &cfg, err, sizeof err) != 0) fail_msg("load failed: %s", err);

  /* Two instances of one module share the module. */
  assert_int_equal(h.n_insts, 3);
  assert_int_equal(h.n_mods, 2);
  for (size_t i = 0; i < h.n_insts; i++) {
    assert_int_equal(h.insts[i].index, i);
    assert_ptr_equal(h.insts[i].cfg, &cfg.plugins[i]);
    assert_int_equal(h.insts[i].initialized, 1);
  }
  assert_string_equal(h.insts[0].name, "p");
  assert_string_equal(h.insts[1].name, "n");
  assert_string_equal(h.insts[2].name, "p2");
  assert_ptr_equal(h.insts[0].mod, h.insts[2].mod);
  assert_ptr_not_equal(h.insts[0].mod, h.insts[1].mod);
  assert_non_null(h.insts[0].state); /* test_plugin allocates its state */
  assert_null(h.insts[1].state);     /* noop has none */
  const plugin_module *m = h.insts[0].mod;
  assert_string_equal(m->name, "test_plugin");
  assert_string_equal(m->path, PLUGIN_DIR "/test_plugin.so");
  assert_non_null(m->dl);
  assert_string_equal(m->desc->name, "test_plugin");
  assert_int_equal(m->desc->abi, HOOKD_PLUGIN_ABI);
  assert_string_equal(h.insts[1].mod->desc->name, "noop");

  /* init opened the out file (created, still empty); destroy writes to it. */
  char *text = read_file(out);
  assert_non_null(text);
  assert_string_equal(text, "");
  free(text);

  plugin_host_unload(&h, NULL);
  text = read_file(out);
  assert_non_null(text);
  assert_string_equal(text, "DESTROY\n");
  free(text);
  assert_null(h.insts);
  assert_null(h.mods);
  assert_int_equal(h.n_insts, 0);
  config_free(&cfg);
}

/* unload's skip keeps an instance alive: no destroy for it. */
static void test_unload_skip(void **state) {
  (void)state;
  char out0[PATH_MAX], out1[PATH_MAX];
  temp_name(out0, sizeof out0, "out");
  temp_name(out1, sizeof out1, "out");
  char plugins[2 * PATH_MAX + 256];
  snprintf(plugins, sizeof plugins,
           "    {'name': 'a', 'module': 'test_plugin', 'config': {'out': '%s'}},\n"
           "    {'name': 'b', 'module': 'test_plugin', 'config': {'out': '%s'}}",
           out0, out1);
  config cfg;
  load_config(&cfg, plugins, NULL);
  plugin_host h;
  char err[1024] = "";
  if (plugin_host_load(&h, &cfg, err, sizeof err) != 0) fail_msg("load failed: %s", err);
  void *kept_state = h.insts[1].state;
  assert_non_null(kept_state);
  const unsigned char skip[2] = {0, 1};
  plugin_host_unload(&h, skip);
  char *t0 = read_file(out0), *t1 = read_file(out1);
  assert_string_equal(t0, "DESTROY\n");
  assert_string_equal(t1, "");
  free(t0);
  free(t1);
  /* The module stayed open, so the kept state can still be destroyed; do it
   * through a fresh load of the same module (dlopen returns the same
   * mapping) to leave nothing leaked. */
  plugin_host h2;
  if (plugin_host_load(&h2, &cfg, err, sizeof err) != 0) fail_msg("reload failed: %s", err);
  h2.insts[1].mod->desc->destroy(kept_state);
  plugin_host_unload(&h2, NULL);
  /* h2's own instance b was destroyed by the unload, after the kept one. */
  t1 = read_file(out1);
  assert_string_equal(t1, "DESTROY\nDESTROY\n");
  free(t1);
  config_free(&cfg);
}

static void test_wrong_abi(void **state) {
  (void)state;
  char err[1024];
  load_refused("    {'name': 'w', 'module': 'test_wrong_abi'}", NULL, err, sizeof err);
  char want[512];
  snprintf(want, sizeof want,
           "plugins[0]: plugin instance 'w': %s/test_wrong_abi.so was built for plugin ABI 2.0, "
           "this hookd has ABI %u.%u",
           PLUGIN_DIR, HOOKD_PLUGIN_ABI_MAJOR, HOOKD_PLUGIN_ABI_MINOR);
  assert_string_equal(err, want);
}

static void test_no_entry_symbol(void **state) {
  (void)state;
  char err[1024];
  load_refused("    {'name': 'x', 'module': 'test_no_entry'}", NULL, err, sizeof err);
  assert_string_equal(err, "plugins[0]: plugin instance 'x': " PLUGIN_DIR
                           "/test_no_entry.so has no 'hookd_plugin_entry' symbol: not a hookd "
                           "plugin (or not exported)");
}

static void test_init_fails(void **state) {
  (void)state;
  char err[1024];
  load_refused("    {'name': 'f', 'module': 'test_plugin', 'config': {'init_fail': true}}", NULL,
               err, sizeof err);
  assert_string_equal(err,
                      "plugin instance 'f' (module test_plugin): init failed: told to fail "
                      "(init_fail is true)");
}

/* A later instance failing destroys the ones already initialised, newest
 * first, and reports the failing one. */
static void test_init_fails_destroys_earlier(void **state) {
  (void)state;
  char out[PATH_MAX], err[1024];
  temp_name(out, sizeof out, "out");
  load_refused(
      "    {'name': 'ok', 'module': 'test_plugin', 'config': {'out': '%s'}},\n"
      "    {'name': 'bad', 'module': 'test_plugin', 'config': {'init_fail': true}}",
      out, err, sizeof err);
  assert_string_equal(err,
                      "plugin instance 'bad' (module test_plugin): init failed: told to fail "
                      "(init_fail is true)");
  char *text = read_file(out);
  assert_non_null(text);
  assert_string_equal(text, "DESTROY\n");
  free(text);
}

static void test_module_not_found(void **state) {
  (void)state;
  char err[1024];
  load_refused(
      "    {'name': 'm', 'module': 'test_plugin'},\n"
      "    {'name': 'z', 'module': 'no_such_module'}",
      NULL, err, sizeof err);
  assert_string_equal(err,
                      "plugins[1]: plugin instance 'z': module 'no_such_module' not found: no "
                      "no_such_module.so in plugin_dirs (1 searched)");
}

/* plugin_dirs are searched in order: an empty first directory is skipped. */
static void test_plugin_dirs_order(void **state) {
  (void)state;
  char empty[PATH_MAX], path[PATH_MAX], text[2 * PATH_MAX + 512], err[1024] = "";
  temp_name(empty, sizeof empty, "emptydir");
  assert_int_equal(mkdir(empty, 0755), 0);
  temp_name(path, sizeof path, "dirs.jsonc");
  snprintf(text, sizeof text,
           "{\"plugin_dirs\": [\"%s\", \"%s\"], \"sources\": [{\"name\": \"s\", \"path\": "
           "\"/h\", \"verify\": {\"scheme\": \"none\"}}], \"plugins\": [{\"name\": \"n\", "
           "\"module\": \"noop\"}]}\n",
           empty, PLUGIN_DIR);
  write_file(path, text);
  config cfg;
  if (config_load(&cfg, path, err, sizeof err) != 0) fail_msg("config_load: %s", err);
  plugin_host h;
  if (plugin_host_load(&h, &cfg, err, sizeof err) != 0) fail_msg("load failed: %s", err);
  assert_string_equal(h.mods[0].path, PLUGIN_DIR "/noop.so");
  plugin_host_unload(&h, NULL);
  config_free(&cfg);

  /* Not found in either: the message counts both. */
  temp_name(path, sizeof path, "dirs.jsonc");
  snprintf(text, sizeof text,
           "{\"plugin_dirs\": [\"%s\", \"%s\"], \"sources\": [{\"name\": \"s\", \"path\": "
           "\"/h\", \"verify\": {\"scheme\": \"none\"}}], \"plugins\": [{\"name\": \"n\", "
           "\"module\": \"nope\"}]}\n",
           empty, PLUGIN_DIR);
  write_file(path, text);
  if (config_load(&cfg, path, err, sizeof err) != 0) fail_msg("config_load: %s", err);
  assert_int_equal(plugin_host_load(&h, &cfg, err, sizeof err), -1);
  assert_string_equal(err,
                      "plugins[0]: plugin instance 'n': module 'nope' not found: no nope.so in "
                      "plugin_dirs (2 searched)");
  config_free(&cfg);
}

/* ---- config getters, as test_plugin uses them ---- */

/* Expects the refusal "PREFIX FILE:LINE:COL: KEYPATH_AND_MESSAGE" with the
 * position of the marker in the written config. */
static void expect_positioned(const char *err, const char *prefix, const char *tail) {
  char pos[32], want[PATH_MAX + 2048];
  marker_pos(pos, sizeof pos);
  snprintf(want, sizeof want, "%s%s:%s: %s", prefix, cfg_path, pos, tail);
  assert_string_equal(err, want);
}

static void test_unknown_key(void **state) {
  (void)state;
  char err[1024];
  load_refused(
      "    {'name': 'p', 'module': 'test_plugin',\n"
      "     'config': {'sleep_ms': 1, 'bogus': " MARK "true}}",
      NULL, err, sizeof err);
  expect_positioned(err, "plugin instance 'p' (module test_plugin): init failed: ",
                    "plugins[0].config.bogus: unknown key 'bogus'");
}

static void test_wrong_type_int(void **state) {
  (void)state;
  char err[1024];
  load_refused(
      "    {'name': 'n', 'module': 'noop'},\n"
      "    {'name': 'p', 'module': 'test_plugin',\n"
      "     'config': {'sleep_ms': " MARK "'x'}}",
      NULL, err, sizeof err);
  expect_positioned(err, "plugin instance 'p' (module test_plugin): init failed: ",
                    "plugins[1].config.sleep_ms: expected an integer");
  /* A fraction is not an integer either. */
  load_refused("    {'name': 'p', 'module': 'test_plugin', 'config': {'retry_times': " MARK "1.5}}",
               NULL, err, sizeof err);
  expect_positioned(err, "plugin instance 'p' (module test_plugin): init failed: ",
                    "plugins[0].config.retry_times: expected an integer");
}

static void test_wrong_type_string(void **state) {
  (void)state;
  char err[1024];
  load_refused("    {'name': 'p', 'module': 'test_plugin', 'config': {'result': " MARK "5}}", NULL,
               err, sizeof err);
  expect_positioned(err, "plugin instance 'p' (module test_plugin): init failed: ",
                    "plugins[0].config.result: expected a string");
}

/* test_plugin ignores config_bool's return and init succeeds: the host
 * refuses anyway (and destroys the instance it just made). */
static void test_ignored_getter_error(void **state) {
  (void)state;
  char out[PATH_MAX], err[1024];
  temp_name(out, sizeof out, "out");
  load_refused(
      "    {'name': 'p', 'module': 'test_plugin',\n"
      "     'config': {'out': '%s', 'init_fail': " MARK "'yes'}}",
      out, err, sizeof err);
  expect_positioned(err, "plugin instance 'p' (module test_plugin): ",
                    "plugins[0].config.init_fail: expected true or false");
  char *text = read_file(out);
  assert_non_null(text);
  assert_string_equal(text, "DESTROY\n");
  free(text);
}

static void test_bad_template(void **state) {
  (void)state;
  char err[1024];
  load_refused("    {'name': 'p', 'module': 'test_plugin', 'config': {'render': " MARK
               "'a {{data.id'}}",
               NULL, err, sizeof err);
  const char *prefix = "plugin instance 'p' (module test_plugin): init failed: ";
  char pos[32], want[PATH_MAX + 1024];
  marker_pos(pos, sizeof pos);
  snprintf(want, sizeof want, "%s%s:%s: plugins[0].config.render: bad template: ", prefix, cfg_path,
           pos);
  if (strncmp(err, want, strlen(want)) != 0) fail_msg("got: %s\nwant prefix: %s", err, want);
}

/* config_path resolves a relative path against the config file's directory,
 * not the working directory. */
static void test_config_path_relative(void **state) {
  (void)state;
  char dir[PATH_MAX], sub[PATH_MAX + 8], cfgfile[PATH_MAX + 16], want[PATH_MAX + 32];
  char err[1024] = "", cwd[PATH_MAX];
  temp_name(dir, sizeof dir, "cfgdir");
  assert_int_equal(mkdir(dir, 0755), 0);
  snprintf(sub, sizeof sub, "%s/sub", dir);
  assert_int_equal(mkdir(sub, 0755), 0);
  snprintf(cfgfile, sizeof cfgfile, "%s/hookd.jsonc", dir);
  snprintf(want, sizeof want, "%s/sub/out.txt", dir);
  char *text = q("{'plugin_dirs': ['" PLUGIN_DIR "'], 'sources': [" SRC
                 "],\n"
                 " 'plugins': [{'name': 'p', 'module': 'test_plugin',\n"
                 "              'config': {'out': 'sub/out.txt'}}]}\n");
  write_file(cfgfile, text);
  free(text);

  /* Load the config by a relative path from tmpdir, then move away before
   * init runs. */
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(tmpdir), 0);
  char rel[PATH_MAX];
  snprintf(rel, sizeof rel, "%s/hookd.jsonc", strrchr(dir, '/') + 1);
  config cfg;
  int rc = config_load(&cfg, rel, err, sizeof err);
  assert_int_equal(chdir(sub), 0); /* a relative "sub/out.txt" from here is wrong */
  if (rc != 0) {
    assert_int_equal(chdir(cwd), 0);
    fail_msg("config_load: %s", err);
  }
  plugin_host h;
  rc = plugin_host_load(&h, &cfg, err, sizeof err);
  assert_int_equal(chdir(cwd), 0);
  if (rc != 0) fail_msg("load failed: %s", err);
  struct stat st;
  assert_int_equal(stat(want, &st), 0);
  char wrong[PATH_MAX + 32];
  snprintf(wrong, sizeof wrong, "%s/sub/out.txt", sub);
  assert_int_not_equal(stat(wrong, &st), 0);
  plugin_host_unload(&h, NULL);
  char *got = read_file(want);
  assert_string_equal(got, "DESTROY\n");
  free(got);
  config_free(&cfg);
}

/* ---- the event view and the runtime host functions ---- */

/* Parses a payload file, optionally changing data.meetingInfo.meetingName,
 * and makes an event of it. */
static event *payload_event(const char *file, const char *meeting_name) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", PAYLOAD_DIR, file);
  char *raw = read_file(path);
  assert_non_null(raw);
  cJSON *doc = cJSON_Parse(raw);
  free(raw);
  assert_non_null(doc);
  if (meeting_name) {
    cJSON *info = cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "data"), "meetingInfo");
    assert_non_null(info);
    cJSON_ReplaceItemInObject(info, "meetingName", cJSON_CreateString(meeting_name));
  }
  char *body = cJSON_PrintUnformatted(doc);
  cJSON_Delete(doc);
  assert_non_null(body);
  envelope_spec spec = {.format = ENVELOPE_CIRRUS_INSIGHT};
  envelope env;
  const char *reason = NULL;
  if (envelope_decode(&spec, body, strlen(body), &env, &reason) != 0)
    fail_msg("envelope_decode: %s", reason);
  event *ev = event_new("cirrus", env.id, env.type, env.order_key, "application/json", body,
                        strlen(body), env.root, 1700000000123);
  assert_non_null(ev);
  env.root = NULL;
  envelope_clear(&env);
  free(body);
  return ev;
}

/* An instance as the event view needs it, without loading a module. */
static void fake_instance(plugin_instance *inst, config_plugin *cp) {
  memset(cp, 0, sizeof *cp);
  cp->name = "audit";
  cp->delivery.timeout_ms = 1234;
  memset(inst, 0, sizeof *inst);
  inst->name = cp->name;
  inst->cfg = cp;
}

static void test_host_api_table(void **state) {
  (void)state;
  const hookd_host_api *api = plugin_host_api();
  assert_non_null(api);
  assert_int_equal(api->struct_size, sizeof(hookd_host_api));
  assert_int_equal(api->abi, HOOKD_PLUGIN_ABI);
  /* Every function of ABI 1.0 is there. */
  assert_non_null(api->log);
  assert_non_null(api->free);
  assert_non_null(api->config_string);
  assert_non_null(api->config_int);
  assert_non_null(api->config_bool);
  assert_non_null(api->config_string_list);
  assert_non_null(api->config_object);
  assert_non_null(api->config_count);
  assert_non_null(api->config_key_at);
  assert_non_null(api->config_allow_keys);
  assert_non_null(api->config_error);
  assert_non_null(api->config_template);
  assert_non_null(api->template_compile);
  assert_non_null(api->template_free);
  assert_non_null(api->render);
  assert_non_null(api->event_get);
  assert_non_null(api->http);
  assert_non_null(api->http_response_free);
  assert_non_null(api->config_path);
}

static void test_event_view(void **state) {
  (void)state;
  event *ev = payload_event("scheduling.smartscheduler.scheduled.json", NULL);
  delivery *d = delivery_new(ev, 0);
  assert_non_null(d);
  d->attempt = 3;
  plugin_instance inst;
  config_plugin cp;
  fake_instance(&inst, &cp);
  hookd_event view;
  memset(&view, 0xa5, sizeof view); /* everything not set must be zeroed */
  plugin_host_event_view(&view, d, &inst);
  assert_int_equal(view.struct_size, sizeof(hookd_event));
  assert_string_equal(view.id, "5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912");
  assert_string_equal(view.type, "scheduling.smartscheduler.scheduled");
  assert_string_equal(view.source, "cirrus");
  assert_string_equal(view.order_key, "c0ffee00-1234-4abc-9def-0123456789ab");
  assert_string_equal(view.instance, "audit");
  assert_int_equal(view.attempt, 3);
  assert_int_equal(view.received_ms, 1700000000123);
  assert_ptr_equal(view.body, ev->body);
  assert_int_equal(view.body_len, ev->body_len);
  assert_string_equal(view.content_type, "application/json");
  assert_int_equal(view.timeout_ms, 1234);
  assert_ptr_equal(view.host_private, ev);
  for (size_t i = 0; i < sizeof view.reserved / sizeof view.reserved[0]; i++)
    assert_null(view.reserved[i]);
  event_unref(ev);
  delivery_free(d);
}

static void expect_get(const hookd_event *view, const char *path, const char *want) {
  const hookd_host_api *api = plugin_host_api();
  char *got = api->event_get(view, path);
  if (want == NULL) {
    if (got != NULL) fail_msg("%s: expected NULL, got '%s'", path, got);
    return;
  }
  if (got == NULL) fail_msg("%s: expected '%s', got NULL", path, want);
  if (strcmp(got, want) != 0) fail_msg("%s: expected '%s', got '%s'", path, want, got);
  api->free(got);
}

static void test_event_get(void **state) {
  (void)state;
  event *ev = payload_event("scheduling.smartscheduler.scheduled.json", NULL);
  delivery *d = delivery_new(ev, 0);
  event_unref(ev); /* the delivery holds it now */
  plugin_instance inst;
  config_plugin cp;
  fake_instance(&inst, &cp);
  hookd_event view;
  plugin_host_event_view(&view, d, &inst);

  expect_get(&view, "data.meetingInfo.meetingName", "Intro call: Prospect Inc");
  expect_get(&view, "data.meetingInfo.formValues.1.answerText", "50-200");
  expect_get(&view, "deliveryAttempt", "1");
  expect_get(&view, "data.isCanceled", "false");
  expect_get(&view, "eventType", "scheduling.smartscheduler.scheduled");
  expect_get(&view, "data.meetingOwner",
             "{\"userId\":\"e1d2c3b4-a596-4877-8695-a4b3c2d1e0f9\",\"username\":\"rep.one@"
             "example.com\",\"lastName\":\"One\",\"firstName\":\"Rep\"}");
  expect_get(&view, "data.meetingInfo.existingEmailMeetingId", NULL); /* JSON null */
  expect_get(&view, "data.meetingInfo.nope", NULL);
  expect_get(&view, "data.meetingInfo.formValues.7.answerText", NULL);

  /* A view without the host's event behind it has no values, and no crash. */
  hookd_event bare = view;
  bare.host_private = NULL;
  expect_get(&bare, "eventType", NULL);
  delivery_free(d);
}

static void test_render(void **state) {
  (void)state;
  const hookd_host_api *api = plugin_host_api();
  event *ev = payload_event("scheduling.smartscheduler.scheduled.json", "Say \"hi\"\nnow & then");
  delivery *d = delivery_new(ev, 0);
  event_unref(ev);
  plugin_instance inst;
  config_plugin cp;
  fake_instance(&inst, &cp);
  hookd_event view;
  plugin_host_event_view(&view, d, &inst);

  char err[256] = "";
  hookd_template *t = api->template_compile(
      "{\"name\": \"{{data.meetingInfo.meetingName}}\", \"who\": "
      "\"{{data.meetingOwner.firstName|upper}}\", \"x\": "
      "\"{{data.nope|default:none}}\"}",
      err, sizeof err);
  if (t == NULL) fail_msg("template_compile: %s", err);
  size_t len = 0;
  char *s = api->render(t, &view, HOOKD_ESC_JSON, &len);
  assert_non_null(s);
  const char *want =
      "{\"name\": \"Say \\\"hi\\\"\\nnow & then\", \"who\": \"REP\", \"x\": "
      "\"none\"}";
  assert_string_equal(s, want);
  assert_int_equal(len, strlen(want));
  /* What the JSON escaping produced parses back to the original value. */
  cJSON *back = cJSON_Parse(s);
  assert_non_null(back);
  assert_string_equal(cJSON_GetObjectItem(back, "name")->valuestring, "Say \"hi\"\nnow & then");
  cJSON_Delete(back);
  api->free(s);
  api->template_free(t);

  /* The same value for a mail header: no line break gets through. */
  t = api->template_compile("Subject: {{data.meetingInfo.meetingName}}", err, sizeof err);
  assert_non_null(t);
  s = api->render(t, &view, HOOKD_ESC_HEADER, NULL);
  assert_non_null(s);
  assert_null(strchr(s, '\n'));
  assert_null(strchr(s, '\r'));
  assert_string_equal(s, "Subject: Say \"hi\" now & then");
  api->free(s);
  /* And as a URL component. */
  t = (api->template_free(t),
       api->template_compile("q={{data.meetingInfo.meetingName}}", err, sizeof err));
  assert_non_null(t);
  s = api->render(t, &view, HOOKD_ESC_URL, &len);
  assert_non_null(s);
  assert_string_equal(s, "q=Say%20%22hi%22%0Anow%20%26%20then");
  assert_int_equal(len, strlen(s));
  api->free(s);
  api->template_free(t);

  /* A syntax error is an error message, not a template. */
  err[0] = '\0';
  assert_null(api->template_compile("{{data.id", err, sizeof err));
  assert_true(err[0] != '\0');
  delivery_free(d);
}

/* An optional argument runs only the tests whose names match it (cmocka
 * pattern: * and ?). */
/* ---- declared options (ABI 1.1) ---- */

/* Loads one test_options instance; returns its filled state. */
static const topts *load_options(plugin_host *h, config *cfg, const char *conf) {
  char plugins[2048], err[1024] = "";
  snprintf(plugins, sizeof plugins, "    {'name': 'o', 'module': 'test_options', 'config': %s}",
           conf);
  load_config(cfg, plugins, NULL);
  if (plugin_host_load(h, cfg, err, sizeof err) != 0) fail_msg("load failed: %s", err);
  return h->insts[0].state;
}

static void test_options_filled(void **state) {
  (void)state;
  plugin_host h;
  config cfg;
  const topts *t = load_options(
      &h, &cfg,
      "{'str': 'hi', 'num': 42, 'flag': false, 'color': 'blue', 'list': ['a', 'b'],"
      " 'tpl': 'x{{eventType}}', 'path': '/abs/p', 'wait': '1500ms', 'url': 'ws://h',"
      " 'secret': 's3', 'tpls': ['{{eventId}}', 'b'], 'map': {'X-A': 'a', 'X-B': '{{eventId}}'}}");
  assert_string_equal(t->str, "hi");
  assert_int_equal(t->num, 42);
  assert_int_equal(t->flag, 0);
  assert_int_equal(t->color, 2);
  assert_int_equal(t->list.n, 2);
  assert_string_equal(t->list.items[1], "b");
  assert_null(t->list.items[2]);
  assert_non_null(t->tpl);
  assert_string_equal(t->path, "/abs/p");
  assert_int_equal(t->wait_ms, 1500);
  assert_string_equal(t->url, "ws://h");
  assert_string_equal(t->secret, "s3");
  assert_int_equal(t->tpls.n, 2);
  assert_int_equal(t->map.n, 2);
  assert_string_equal(t->map.keys[1], "X-B");
  assert_non_null(t->map.values[1]);
  /* init ran once, after the host filled the struct. */
  assert_int_equal(t->init_calls, 1);
  assert_int_equal(t->seen_num, 42);
  plugin_host_unload(&h, NULL);
  config_free(&cfg);
}

static void test_options_defaults(void **state) {
  (void)state;
  plugin_host h;
  config cfg;
  const topts *t = load_options(&h, &cfg, "{'str': 'x', 'wait': 250}");
  assert_int_equal(t->num, 7);
  assert_int_equal(t->flag, 1);
  assert_int_equal(t->color, 1);
  assert_int_equal(t->list.n, 0);
  assert_non_null(t->tpl);
  /* A relative default path starts at the config file's directory. */
  char want[PATH_MAX];
  snprintf(want, sizeof want, "%s/rel/file", tmpdir);
  assert_string_equal(t->path, want);
  assert_int_equal(t->wait_ms, 250);
  assert_null(t->url);
  assert_null(t->secret);
  assert_int_equal(t->map.n, 0);
  plugin_host_unload(&h, NULL);
  config_free(&cfg);
}

static void option_refused(const char *conf, const char *tail) {
  char plugins[2048], err[1024];
  snprintf(plugins, sizeof plugins, "    {'name': 'o', 'module': 'test_options', 'config': %s}",
           conf);
  load_refused(plugins, NULL, err, sizeof err);
  expect_positioned(err, "plugin instance 'o' (module test_options): ", tail);
}

static void test_options_refused(void **state) {
  (void)state;
  option_refused("{'str': 'x', 'nmu': " MARK "3}",
                 "plugins[0].config.nmu: unknown key (did you mean 'num'?)");
  option_refused("{'str': 'x', 'zzz': " MARK "3}",
                 "plugins[0].config.zzz: unknown key (known keys: str, num, flag, color, list, "
                 "tpl, path, wait, url, secret, tpls, map)");
  option_refused("{'str': 'x', 'num': " MARK "101}",
                 "plugins[0].config.num: expected an integer from 1 to 100");
  option_refused("{'str': 'x', 'num': " MARK "1.5}", "plugins[0].config.num: expected an integer");
  option_refused("{'str': 'x', 'flag': " MARK "'yes'}",
                 "plugins[0].config.flag: expected true or false");
  option_refused("{'str': 'x', 'color': " MARK "'bleu'}",
                 "plugins[0].config.color: expected one of red, green, blue (did you mean "
                 "'blue'?)");
  option_refused("{'str': 'x', 'list': " MARK "'a'}",
                 "plugins[0].config.list: expected a list of strings");
  option_refused("{'str': 'x', 'list': ['a', " MARK "2]}",
                 "plugins[0].config.list[1]: expected a string");
  option_refused("{'str': 'x', 'tpl': " MARK "'{{oops'}",
                 "plugins[0].config.tpl: bad template: column 1: unclosed '{{'");
  option_refused("{'str': 'x', 'wait': " MARK "'2 weeks'}",
                 "plugins[0].config.wait: expected a duration such as \"500ms\", \"30s\", "
                 "\"5m\", \"1h\"");
  option_refused("{'str': 'x', 'wait': " MARK "'1h'}",
                 "plugins[0].config.wait: expected milliseconds from 10 to 60000");
  option_refused("{'str': 'x', 'url': " MARK "'http://h'}",
                 "plugins[0].config.url: expected a https:// or ws:// URL with a host");
  option_refused("{'str': " MARK "''}", "plugins[0].config.str: expected a non-empty string");
  option_refused("{'str': 'x', 'map': {'A': " MARK "1}}",
                 "plugins[0].config.map.A: expected a string (a template)");
  /* The plugin's own cross-option rule, after the host's checks. */
  option_refused("{'str': 'x', 'secret': " MARK "'s'}", "plugins[0].config.secret: needs url");
}

static void test_options_required(void **state) {
  (void)state;
  char err[1024];
  load_refused("    {'name': 'o', 'module': 'test_options', 'config': " MARK "{'num': 3}}", NULL,
               err, sizeof err);
  expect_positioned(err, "plugin instance 'o' (module test_options): ",
                    "plugins[0].config: missing required key 'str'");
}

/* A plugin config timeout_ms of ABI 1.0 days still bounds the event's. */
static void test_options_legacy_timeout(void **state) {
  (void)state;
  plugin_host h;
  config cfg;
  load_options(&h, &cfg, "{'str': 'x', 'timeout_ms': 700}");
  assert_int_equal(h.insts[0].owned.timeout_ms, 700);
  event *ev = payload_event("scheduling.smartscheduler.scheduled.json", NULL);
  delivery *d = delivery_new(ev, 0);
  hookd_event view;
  plugin_host_event_view(&view, d, &h.insts[0]);
  assert_int_equal(view.timeout_ms, 700);
  assert_ptr_equal(view.host, plugin_host_api());
  assert_ptr_equal(view.self, &h.insts[0]);
  hookd_outcome out = {.struct_size = sizeof out};
  assert_int_equal(h.insts[0].mod->desc->deliver(h.insts[0].state, &view, &out), HOOKD_OK);
  assert_string_equal(out.message, "id=5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912 timeout=700");
  event_unref(ev);
  delivery_free(d);
  plugin_host_unload(&h, NULL);
  config_free(&cfg);
  char err[1024];
  load_refused(
      "    {'name': 'o', 'module': 'test_options', 'config': {'str': 'x', 'timeout_ms': " MARK
      "0}}",
      NULL, err, sizeof err);
  expect_positioned(err, "plugin instance 'o' (module test_options): ",
                    "plugins[0].config.timeout_ms: expected an integer from 1 to 3600000");
}

/* An ABI 1.0 binary: its descriptor ends at reserved[]; what follows is not
 * read, and its getters work as before. */
static void test_abi10_plugin(void **state) {
  (void)state;
  config cfg;
  load_config(&cfg, "    {'name': 'old', 'module': 'test_abi10', 'config': {'n': 9}}", NULL);
  plugin_host h;
  char err[1024] = "";
  if (plugin_host_load(&h, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
  assert_null(plugin_host_options(h.mods[0].desc));
  hookd_outcome out = {.struct_size = sizeof out};
  hookd_event view = {.struct_size = sizeof view};
  assert_int_equal(h.mods[0].desc->deliver(h.insts[0].state, &view, &out), HOOKD_OK);
  assert_string_equal(out.message, "n=9");
  plugin_host_unload(&h, NULL);
  config_free(&cfg);
  load_refused("    {'name': 'old', 'module': 'test_abi10', 'config': {'m': " MARK "9}}", NULL, err,
               sizeof err);
  expect_positioned(err, "plugin instance 'old' (module test_abi10): init failed: ",
                    "plugins[0].config.m: unknown key 'm' (did you mean 'n'?)");
}

static void test_bad_option_table(void **state) {
  (void)state;
  char err[1024];
  load_refused("    {'name': 'b', 'module': 'test_bad_table'}", NULL, err, sizeof err);
  assert_string_equal(err, "plugins[0]: plugin instance 'b': " PLUGIN_DIR
                           "/test_bad_table.so: bad option table: option 'name': offset 64 does "
                           "not fit a string in state_size 4");
}

static void test_options_help(void **state) {
  (void)state;
  plugin_host h;
  config cfg;
  load_options(&h, &cfg, "{'str': 'x'}");
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  plugin_options_print(f, plugin_host_options(h.mods[0].desc));
  fclose(f);
  assert_non_null(strstr(text, "  str  (string; required)\n      a required string\n"));
  assert_non_null(strstr(text, "  num  (int 1..100; default 7)\n"));
  assert_non_null(strstr(text, "  color  (enum: red|green|blue; default green)\n"));
  assert_non_null(strstr(text, "  wait  (duration 10..60000 ms; default 2s)\n"));
  assert_non_null(strstr(text, "  url  (url (https, ws))\n"));
  assert_non_null(
      strstr(text, "  tpl  (template, rendered JSON-escaped; default id={{eventId}})\n"));
  free(text);
  plugin_host_unload(&h, NULL);
  config_free(&cfg);
}

int main(int argc, char **argv) {
  if (argc > 1) cmocka_set_test_filter(argv[1]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options_filled),
      cmocka_unit_test(test_options_defaults),
      cmocka_unit_test(test_options_refused),
      cmocka_unit_test(test_options_required),
      cmocka_unit_test(test_options_legacy_timeout),
      cmocka_unit_test(test_abi10_plugin),
      cmocka_unit_test(test_bad_option_table),
      cmocka_unit_test(test_options_help),
      cmocka_unit_test(test_load_good),
      cmocka_unit_test(test_unload_skip),
      cmocka_unit_test(test_wrong_abi),
      cmocka_unit_test(test_no_entry_symbol),
      cmocka_unit_test(test_init_fails),
      cmocka_unit_test(test_init_fails_destroys_earlier),
      cmocka_unit_test(test_module_not_found),
      cmocka_unit_test(test_plugin_dirs_order),
      cmocka_unit_test(test_unknown_key),
      cmocka_unit_test(test_wrong_type_int),
      cmocka_unit_test(test_wrong_type_string),
      cmocka_unit_test(test_ignored_getter_error),
      cmocka_unit_test(test_bad_template),
      cmocka_unit_test(test_config_path_relative),
      cmocka_unit_test(test_host_api_table),
      cmocka_unit_test(test_event_view),
      cmocka_unit_test(test_event_get),
      cmocka_unit_test(test_render),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
