/* Unit tests for jsonc.c and config.c: comment blanking, exact positions, ${...}, schema rules and
 * defaults. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "jsonc.h"

/* Every fixture file lives here; the group teardown removes it. */
static char tmpdir[] = "/tmp/hookd-test-config-XXXXXX";
static char last_path[PATH_MAX];

static void write_all(int fd, const char *text) {
  size_t len = strlen(text);
  while (len > 0) {
    ssize_t n = write(fd, text, len);
    assert_true(n > 0);
    text += n;
    len -= (size_t)n;
  }
}

/* Writes text into a new temp file in tmpdir; returns its path (static). */
static const char *write_temp(const char *text) {
  snprintf(last_path, sizeof last_path, "%s/cfg-XXXXXX", tmpdir);
  int fd = mkstemp(last_path);
  assert_true(fd >= 0);
  write_all(fd, text);
  close(fd);
  return last_path;
}

/* Writes a file with a fixed name in tmpdir (for ${file:NAME}). */
static void write_named(const char *name, const char *text) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* Fixtures are written with ' for " so they stay readable in C. */
static char *q(const char *s) {
  char *out = strdup(s);
  assert_non_null(out);
  for (char *p = out; *p; p++)
    if (*p == '\'') *p = '"';
  return out;
}

static void load_ok(const char *fixture, config *cfg) {
  char *text = q(fixture);
  char err[1024] = "";
  int rc = config_load(cfg, write_temp(text), err, sizeof err);
  free(text);
  if (rc != 0) fail_msg("config_load failed: %s", err);
}

/* Loads a fixture that must fail and returns the message with the file name
 * and its colon cut off. */
static void load_fail(const char *fixture, int convert, char *tail, size_t taillen) {
  char *text = convert ? q(fixture) : strdup(fixture);
  assert_non_null(text);
  config cfg;
  char err[1024] = "";
  const char *path = write_temp(text);
  free(text);
  assert_int_equal(config_load(&cfg, path, err, sizeof err), -1);
  size_t plen = strlen(path);
  if (strncmp(err, path, plen) != 0 || err[plen] != ':')
    fail_msg("message does not start with the file name: %s", err);
  snprintf(tail, taillen, "%s", err + plen + 1);
  /* A failed load leaves nothing to free, and freeing again is harmless. */
  config_free(&cfg);
}

/* Checks an error whose position the test names by hand: "LINE:COL: ...". */
static void expect_err_at(const char *fixture, const char *expected) {
  char tail[1024];
  load_fail(fixture, 0, tail, sizeof tail);
  assert_string_equal(tail, expected);
}

/* Checks an error at the value marked by a comment in the fixture: the
 * position of the first character after the comment, counted here
 * independently of jsonc.c (fixtures are ASCII). */
#define MARK "/*@*/"
static void marker_want(const char *fixture, const char *expected, char *want, size_t wantlen) {
  const char *m = strstr(fixture, MARK);
  if (!m) fail_msg("fixture has no marker: %s", fixture);
  size_t off = (size_t)(m - fixture) + strlen(MARK);
  int line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < off; i++) {
    if (fixture[i] == '\n') {
      line++;
      line_start = i + 1;
    }
  }
  snprintf(want, wantlen, "%d:%zu: %s", line, off - line_start + 1, expected);
}

static void expect_err(const char *fixture, const char *expected) {
  char want[1200];
  marker_want(fixture, expected, want, sizeof want);
  char tail[1024];
  load_fail(fixture, 1, tail, sizeof tail);
  assert_string_equal(tail, want);
}

static int group_setup(void **state) {
  (void)state;
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  DIR *d = opendir(tmpdir);
  if (!d) return -1;
  struct dirent *e;
  char path[PATH_MAX];
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
    unlink(path);
  }
  closedir(d);
  return rmdir(tmpdir);
}

/* ---- jsonc ---- */

static void test_jsonc_blanks_comments(void **state) {
  (void)state;
  const char *text =
      "{ // c1\n"
      "  \"url\": \"http://x/*y*/\", /* b1\n"
      "  b2 */ \"n\": 1,\n"
      "  \"s\": \"a//b\\\"//\"\n"
      "}\n";
  const char *blanked =
      "{      \n"
      "  \"url\": \"http://x/*y*/\",      \n"
      "        \"n\": 1,\n"
      "  \"s\": \"a//b\\\"//\"\n"
      "}\n";
  jsonc_doc doc;
  char err[256];
  assert_int_equal(jsonc_parse(&doc, "t.jsonc", text, strlen(text), err, sizeof err), 0);
  assert_int_equal(doc.len, strlen(text));
  assert_string_equal(doc.text, blanked);
  assert_string_equal(cJSON_GetObjectItem(doc.root, "url")->valuestring, "http://x/*y*/");
  assert_int_equal(cJSON_GetObjectItem(doc.root, "n")->valueint, 1);
  assert_string_equal(cJSON_GetObjectItem(doc.root, "s")->valuestring, "a//b\"//");
  int line, col;
  assert_int_equal(jsonc_locate(&doc, "n", &line, &col), 0);
  assert_int_equal(line, 3);
  assert_int_equal(col, 14);
  assert_int_equal(jsonc_locate(&doc, "s", &line, &col), 0);
  assert_int_equal(line, 4);
  assert_int_equal(col, 8);
  jsonc_free(&doc);
  jsonc_free(&doc);
}

static void test_jsonc_syntax_errors(void **state) {
  (void)state;
  static const struct {
    const char *text;
    const char *want;
  } cases[] = {
      {"{\n  \"a\": 1,\n}\n", "t.jsonc:2:9: trailing comma before '}'"},
      {"[1,]", "t.jsonc:1:3: trailing comma before ']'"},
      {"{\n  \"a\": 1\n  \"b\": 2\n}", "t.jsonc:3:3: expected ',' or '}', found a string"},
      {"[1 2]", "t.jsonc:1:4: expected ',' or ']', found '2'"},
      {"{\"a\": tru}", "t.jsonc:1:7: a: expected a value, found 'tru'"},
      {"{\n  /* open\n", "t.jsonc:2:3: unterminated comment"},
      {"{\"a\": \"abc\n}", "t.jsonc:1:7: a: unterminated string"},
      {"", "t.jsonc:1:1: expected a value, found end of file"},
      {"  // only a comment\n", "t.jsonc:2:1: expected a value, found end of file"},
      {"{} x", "t.jsonc:1:4: expected end of file, found 'x'"},
      {"{a: 1}", "t.jsonc:1:2: expected a key in double quotes, found 'a'"},
      {"{\"a\" 1}", "t.jsonc:1:6: a: expected ':' after the key, found '1'"},
      {"[1, 01]", "t.jsonc:1:5: [1]: invalid number (leading zero)"},
      {"[1.]", "t.jsonc:1:2: [0]: invalid number"},
      {"{\"a\": \"\\q\"}", "t.jsonc:1:8: a: invalid escape '\\q'"},
      {"{\"a\": \"\\ud800\"}", "t.jsonc:1:8: a: invalid \\u escape (unpaired surrogate)"},
      {"{\"a\": \"x\\u0000\"}", "t.jsonc:1:9: a: \\u0000 is not allowed in strings"},
      {"{\"a\": \"x\ty\"}",
       "t.jsonc:1:9: a: control character in string (write it as an escape, e.g. \\t)"},
      {"{\"a\": 'x'}", "t.jsonc:1:7: a: strings need double quotes"},
      /* Columns count characters: the two bytes of "é" are one column. */
      {"{\"é\": tru}", "t.jsonc:1:7: é: expected a value, found 'tru'"},
      /* A UTF-8 byte order mark is not a column. */
      {"\xEF\xBB\xBF{,}", "t.jsonc:1:2: expected a key in double quotes, found ','"},
      {"{\"a\": {\"b\": [true, nul]}}", "t.jsonc:1:20: a.b[1]: expected a value, found 'nul'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    jsonc_doc doc;
    char err[256] = "";
    assert_int_equal(
        jsonc_parse(&doc, "t.jsonc", cases[i].text, strlen(cases[i].text), err, sizeof err), -1);
    assert_string_equal(err, cases[i].want);
    assert_null(doc.root);
    assert_null(doc.text);
  }

  /* A NUL byte would end the text early for cJSON. */
  jsonc_doc doc;
  char err[256] = "";
  assert_int_equal(jsonc_parse(&doc, "t.jsonc", "{\0}", 3, err, sizeof err), -1);
  assert_string_equal(err, "t.jsonc:1:2: NUL byte in file");

  /* Nesting is bounded (cJSON's own limit is 1000). */
  char deep[601], big[4096];
  memset(deep, '[', 600);
  deep[600] = '\0';
  assert_int_equal(jsonc_parse(&doc, "t.jsonc", deep, 600, big, sizeof big), -1);
  assert_non_null(strstr(big, "t.jsonc:1:514: [0][0]"));
  assert_non_null(strstr(big, "[0]: nested deeper than 512 levels"));
}

static void test_jsonc_duplicate_key(void **state) {
  (void)state;
  const char *text =
      "{\n"
      "  \"log\": {\"level\": \"info\",\n"
      "           \"level\": \"debug\"},\n"
      "  \"a\": [{\"x\": 1}, {\"x\": 2, \"y\": 3, \"x\": 4}]\n"
      "}\n";
  jsonc_doc doc;
  char err[256] = "";
  assert_int_equal(jsonc_parse(&doc, "t.jsonc", text, strlen(text), err, sizeof err), -1);
  assert_string_equal(err, "t.jsonc:3:12: log.level: duplicate key (first on line 2)");

  const char *text2 = "{\"a\": [{\"x\": 1}, {\"x\": 2, \"y\": 3, \"x\": 4}]}";
  assert_int_equal(jsonc_parse(&doc, "t.jsonc", text2, strlen(text2), err, sizeof err), -1);
  assert_string_equal(err, "t.jsonc:1:35: a[1].x: duplicate key (first on line 1)");

  /* Keys are compared decoded: "\u0061" is "a". */
  const char *text3 = "{\"a\": 1, \"\\u0061\": 2}";
  assert_int_equal(jsonc_parse(&doc, "t.jsonc", text3, strlen(text3), err, sizeof err), -1);
  assert_string_equal(err, "t.jsonc:1:10: a: duplicate key (first on line 1)");
}

static void test_jsonc_locate(void **state) {
  (void)state;
  const char *text =
      "{\n"
      "  \"a\": {\"b\": [10, {\"c\": true}]},\n"
      "  \"x.y\": {\"z\": null},\n"
      "  \"when\": {\"data.meeting.id\": 5}\n"
      "}\n";
  static const struct {
    const char *path;
    int rc, line, col;
  } cases[] = {
      {"", 0, 1, 1},
      {"a", 0, 2, 8},
      {"a.b", 0, 2, 14},
      {"a.b[0]", 0, 2, 15},
      {"a.b[1].c", 0, 2, 25},
      {"a.b[2]", -1, 2, 14},
      {"a.missing", -1, 2, 8},
      {"a[0]", -1, 2, 8},
      {"x.y.z", 0, 3, 16},
      {"when.data.meeting.id", 0, 4, 31},
      {"when.data.meeting", -1, 4, 11},
      {"nope.a.b", -1, 1, 1},
  };
  jsonc_doc doc;
  char err[256];
  assert_int_equal(jsonc_parse(&doc, "t.jsonc", text, strlen(text), err, sizeof err), 0);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int line = 0, col = 0;
    int rc = jsonc_locate(&doc, cases[i].path, &line, &col);
    if (rc != cases[i].rc || line != cases[i].line || col != cases[i].col)
      fail_msg("%s: got rc %d at %d:%d, want rc %d at %d:%d", cases[i].path, rc, line, col,
               cases[i].rc, cases[i].line, cases[i].col);
  }
  assert_int_equal(jsonc_error(&doc, "a.b[1].c", err, sizeof err, "bad %s", "thing"), -1);
  assert_string_equal(err, "t.jsonc:2:25: a.b[1].c: bad thing");
  assert_int_equal(jsonc_error(&doc, "", err, sizeof err, "top"), -1);
  assert_string_equal(err, "t.jsonc:1:1: top");
  jsonc_free(&doc);
}

/* ---- substitution ---- */

static cJSON *get_path(cJSON *root, const char *a, int index) {
  cJSON *n = cJSON_GetObjectItem(root, a);
  return index >= 0 ? cJSON_GetArrayItem(n, index) : n;
}

static void test_subst_env(void **state) {
  (void)state;
  setenv("HOOKD_T_A", "alpha", 1);
  setenv("HOOKD_T_EMPTY", "", 1);
  setenv("HOOKD_T_NEST", "${HOOKD_T_A}", 1);
  const char *text =
      "{\"a\": \"x-${HOOKD_T_A}-y\", \"b\": [\"${HOOKD_T_A}${HOOKD_T_A}\", 7],\n"
      " \"c\": \"$${HOOKD_T_A} and $5 and $$ and $\", \"d\": \"${HOOKD_T_EMPTY}\",\n"
      " \"e\": \"${HOOKD_T_NEST}\", \"${HOOKD_T_A}\": \"k\"}";
  jsonc_doc doc;
  char err[256] = "";
  assert_int_equal(jsonc_parse(&doc, "t.jsonc", text, strlen(text), err, sizeof err), 0);
  assert_int_equal(jsonc_substitute(&doc, doc.root, "", NULL, err, sizeof err), 0);
  assert_string_equal(get_path(doc.root, "a", -1)->valuestring, "x-alpha-y");
  assert_string_equal(get_path(doc.root, "b", 0)->valuestring, "alphaalpha");
  assert_int_equal(get_path(doc.root, "b", 1)->valueint, 7);
  assert_string_equal(get_path(doc.root, "c", -1)->valuestring, "${HOOKD_T_A} and $5 and $$ and $");
  assert_string_equal(get_path(doc.root, "d", -1)->valuestring, "");
  /* Substituted text is not expanded again. */
  assert_string_equal(get_path(doc.root, "e", -1)->valuestring, "${HOOKD_T_A}");
  /* Keys are left as written. */
  assert_string_equal(get_path(doc.root, "${HOOKD_T_A}", -1)->valuestring, "k");
  jsonc_free(&doc);
}

static void test_subst_file(void **state) {
  (void)state;
  write_named("secret.txt", "s3cret\n");
  write_named("two.txt", "line1\nline2\n\n");
  write_named("crlf.txt", "abc\r\n");
  write_named("empty.txt", "");
  char text[1024];
  snprintf(text, sizeof text,
           "{\"a\": \"${file:secret.txt}\", \"b\": \"${file:%s/two.txt}\",\n"
           " \"c\": \"k=${file:crlf.txt};\", \"d\": \"[${file:empty.txt}]\"}",
           tmpdir);
  jsonc_doc doc;
  char err[256] = "";
  assert_int_equal(jsonc_parse(&doc, "t.jsonc", text, strlen(text), err, sizeof err), 0);
  assert_int_equal(jsonc_substitute(&doc, doc.root, "", tmpdir, err, sizeof err), 0);
  assert_string_equal(get_path(doc.root, "a", -1)->valuestring, "s3cret");
  /* Only one trailing newline goes. */
  assert_string_equal(get_path(doc.root, "b", -1)->valuestring, "line1\nline2\n");
  assert_string_equal(get_path(doc.root, "c", -1)->valuestring, "k=abc;");
  assert_string_equal(get_path(doc.root, "d", -1)->valuestring, "[]");
  jsonc_free(&doc);
}

static void test_subst_errors(void **state) {
  (void)state;
  unsetenv("HOOKD_T_MISSING");
  static const struct {
    const char *text;
    const char *want;
  } cases[] = {
      {"{\n  \"p\": {\"k\": [\"ok\", \"${HOOKD_T_MISSING}\"]}\n}",
       "t.jsonc:2:21: p.k[1]: environment variable 'HOOKD_T_MISSING' is not set"},
      {"{\"a\": \"${X\"}", "t.jsonc:1:7: a: unterminated '${' (write '$${' for a literal '${')"},
      {"{\"a\": \"${ X }\"}",
       "t.jsonc:1:7: a: invalid '${ X }' (expected ${NAME} or ${file:PATH})"},
      {"{\"a\": \"${}\"}", "t.jsonc:1:7: a: invalid '${}' (expected ${NAME} or ${file:PATH})"},
      {"{\"a\": [\"${file:nope.txt}\"]}",
       "t.jsonc:1:8: a[0]: cannot read file 'nope.txt' (in '${file:...}'): No such file or "
       "directory"},
      {"{\"a\": \"${file:}\"}", "t.jsonc:1:7: a: empty path in '${file:}'"},
      {"{\"a\": \"${file:.}\"}",
       "t.jsonc:1:7: a: cannot read file '.' (in '${file:...}'): Is a directory"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    jsonc_doc doc;
    char err[256] = "";
    assert_int_equal(
        jsonc_parse(&doc, "t.jsonc", cases[i].text, strlen(cases[i].text), err, sizeof err), 0);
    assert_int_equal(jsonc_substitute(&doc, doc.root, "", tmpdir, err, sizeof err), -1);
    assert_string_equal(err, cases[i].want);
    jsonc_free(&doc);
  }
}

/* ---- config: positions named by hand ---- */

static void test_config_positions(void **state) {
  (void)state;
  /* A wrong type at a nested key, below a comment. */
  expect_err_at(
      "{\n"
      "  // comment\n"
      "  \"sources\": [\n"
      "    { \"name\": \"s\", \"path\": \"/h\", \"verify\": { \"scheme\": \"none\" },\n"
      "      \"success_status\": \"200\" }\n"
      "  ]\n"
      "}\n",
      "5:25: sources[0].success_status: expected an integer from 200 to 299");
  /* An unknown key after a block comment that spans lines. */
  expect_err_at(
      "{\n"
      "  /* a block\n"
      "     comment */ \"sources\": [{\"name\": \"s\", \"path\": \"/h\", \"verify\": {\"scheme\": "
      "\"none\"}}],\n"
      "  \"delivery\": {\n"
      "    \"timeout\": 5\n"
      "  }\n"
      "}\n",
      "5:16: delivery.timeout: unknown key (did you mean 'timeout_ms'?)");
  /* A duplicate key. */
  expect_err_at(
      "{\n"
      "  \"sources\": [{\"name\": \"s\", \"path\": \"/h\", \"verify\": {\"scheme\": \"none\"}}],\n"
      "  \"log\": {\"level\": \"info\",\n"
      "          \"level\": \"debug\"}\n"
      "}\n",
      "4:11: log.level: duplicate key (first on line 3)");
  /* A syntax error. */
  expect_err_at(
      "{\n"
      "  \"listen\": \":80\",\n"
      "}\n",
      "2:18: trailing comma before '}'");
  /* A missing ${ENV} and a missing ${file:...}. */
  unsetenv("HOOKD_TEST_UNSET");
  expect_err_at(
      "{\n"
      "  \"sources\": [{\"name\": \"s\", \"path\": \"/h\",\n"
      "    \"verify\": {\"scheme\": \"token\", \"header\": \"X-Token\",\n"
      "               \"secrets\": [\"${HOOKD_TEST_UNSET}\"]}}]\n"
      "}\n",
      "4:28: sources[0].verify.secrets[0]: environment variable 'HOOKD_TEST_UNSET' is not set");
  expect_err_at(
      "{\n"
      "  \"sources\": [{\"name\": \"s\", \"path\": \"/h\",\n"
      "    \"verify\": {\"scheme\": \"token\", \"header\": \"X-Token\",\n"
      "               \"secrets\": [\"${file:no-such-secret}\"]}}]\n"
      "}\n",
      "4:28: sources[0].verify.secrets[0]: cannot read file 'no-such-secret' (in "
      "'${file:...}'): No such file or directory");
}

static void test_config_unreadable(void **state) {
  (void)state;
  config cfg;
  char err[512], path[PATH_MAX + 32], want[PATH_MAX + 128];
  snprintf(path, sizeof path, "%s/does-not-exist.jsonc", tmpdir);
  assert_int_equal(config_load(&cfg, path, err, sizeof err), -1);
  snprintf(want, sizeof want, "%s: cannot read: No such file or directory", path);
  assert_string_equal(err, want);
  config_free(&cfg);
}

/* ---- config: what a good file gives ---- */

#define SRC "{'name': 's', 'path': '/h', 'verify': {'scheme': 'none'}}"
#define SOURCES "'sources': [" SRC "]"

static void test_config_defaults(void **state) {
  (void)state;
  config cfg;
  load_ok("{" SOURCES "}", &cfg);
  assert_string_equal(cfg.file, last_path);
  assert_string_equal(cfg.dir, tmpdir);
  assert_int_equal(cfg.n_listen, 1);
  assert_string_equal(cfg.listen[0], "127.0.0.1:8080");
  assert_null(cfg.admin_listen);
  char want[PATH_MAX];
  snprintf(want, sizeof want, "%s/var", tmpdir);
  assert_string_equal(cfg.data_dir, want);
  assert_int_equal(cfg.n_plugin_dirs, 0);
  assert_int_equal(cfg.log_level, HLOG_INFO);
  assert_int_equal(cfg.log_format, HLOG_FORMAT_TEXT);
  assert_int_equal(cfg.shutdown_timeout_ms, 30000);
  assert_int_equal(cfg.sync, SPOOL_SYNC_FULL);
  assert_int_equal(cfg.limits.max_body_bytes, 1048576);
  assert_int_equal(cfg.limits.max_header_bytes, 16384);
  assert_int_equal(cfg.limits.header_timeout_ms, 10000);
  assert_int_equal(cfg.limits.body_timeout_ms, 30000);
  assert_int_equal(cfg.limits.idle_timeout_ms, 60000);
  assert_int_equal(cfg.limits.max_connections, 10000);
  assert_int_equal(cfg.delivery.concurrency, 4);
  assert_int_equal(cfg.delivery.max_attempts, 12);
  assert_int_equal(cfg.delivery.backoff_initial_ms, 1000);
  assert_int_equal(cfg.delivery.backoff_max_ms, 3600000);
  assert_int_equal(cfg.delivery.timeout_ms, 30000);
  assert_int_equal(cfg.n_sources, 1);
  config_source *s = &cfg.sources[0];
  assert_string_equal(s->name, "s");
  assert_string_equal(s->path, "/h");
  assert_string_equal(s->keypath, "sources[0]");
  assert_int_equal(s->envelope.format, ENVELOPE_CIRRUS_INSIGHT);
  assert_null(s->envelope.type_field);
  assert_null(s->envelope.id_field);
  assert_null(s->envelope.order_key);
  assert_int_equal(s->success_status, 200);
  assert_int_equal(s->verify.scheme, VERIFY_NONE);
  assert_int_equal(s->verify.n_secrets, 0);
  assert_int_equal(cfg.n_plugins, 0);
  assert_int_equal(cfg.n_routes, 0);
  config_free(&cfg);
  config_free(&cfg);
}

static void test_config_full(void **state) {
  (void)state;
  setenv("HOOKD_TEST_KEY", "env-key", 1);
  setenv("HOOKD_TEST_SLACK", "https://hooks.example/x", 1);
  write_named("hmac.key", "file-key\n");
  config cfg;
  load_ok(
      "{\n"
      "  // every section, with comments\n"
      "  'listen': ['127.0.0.1:0', '[::1]:8081', ':8082'],\n"
      "  'admin_listen': '127.0.0.1:9090', /* optional */\n"
      "  'data_dir': '/srv/hookd',\n"
      "  'plugin_dirs': ['../build/plugins', '/usr/lib/hookd'],\n"
      "  'log': {'level': 'debug', 'format': 'json'},\n"
      "  'shutdown_timeout_ms': 0,\n"
      "  'spool': {'sync': 'normal', 'max_pending': 1000, 'retention': '7d', "
      "'min_free_bytes': 0},\n"
      "  'limits': {'max_body_bytes': 2048, 'max_header_bytes': 4096, 'header_timeout_ms': 1,\n"
      "             'body_timeout_ms': 2, 'idle_timeout_ms': 3, 'max_connections': 4},\n"
      "  'sources': [\n"
      "    {'name': 'cirrus', 'path': '/webhooks/cirrus', 'format': 'cirrus-insight',\n"
      "     'success_status': 202,\n"
      "     'verify': {'scheme': 'hmac', 'algorithm': 'sha512', 'header': 'X-Signature',\n"
      "                'encoding': 'base64', 'prefix': 'sha256=',\n"
      "                'secrets': ['${HOOKD_TEST_KEY}', '${file:hmac.key}']}},\n"
      "    {'name': 'gen.1', 'path': '/webhooks/generic', 'format': 'generic',\n"
      "     'type_field': 'meta.type', 'id_field': 'meta.id', 'order_key': 'data.account',\n"
      "     'verify': {'scheme': 'standard-webhooks', 'secrets': ['whsec_c2VjcmV0'], "
      "'tolerance_s': 60}},\n"
      "    {'name': 'tok', 'path': '/t', 'format': 'generic', 'type_field': 'type',\n"
      "     'id_field': 'id', 'verify': {'scheme': 'token', 'header': 'X-Token', "
      "'secrets': ['t1']}},\n"
      "    {'name': 'plain', 'path': '/p', 'verify': {'scheme': 'hmac', 'header': 'X-Sig',\n"
      "     'secrets': ['k']}}\n"
      "  ],\n"
      "  'plugins': [\n"
      "    {'name': 'team-slack', 'module': 'slack_post',\n"
      "     'config': {'webhook_url': '${HOOKD_TEST_SLACK}', 'anything': [1, {'goes': true}]}},\n"
      "    {'name': 'audit', 'module': 'file_sink'},\n"
      "    {'name': 'crm', 'module': 'crm_update', 'config': {},\n"
      "     'delivery': {'max_attempts': 3, 'timeout_ms': 5000}}\n"
      "  ],\n"
      "  'routes': [\n"
      "    {'source': 'cirrus', 'events': ['scheduling.smartscheduler.*'], 'to': ['team-slack', "
      "'crm']},\n"
      "    {'events': ['scheduling.smartscheduler.canceled', '**'], 'to': ['audit'],\n"
      "     'when': {'data.meetingInfo.calendarPath': 'intro-call'}},\n"
      "    {'events': ['a.*.c'], 'to': ['crm', 'audit'],\n"
      "     'when': {'data.n': 5, 'data.b': false, 'data.z': null}}\n"
      "  ],\n"
      "  'delivery': {'concurrency': 8, 'max_attempts': 5, 'backoff_initial_ms': 10,\n"
      "               'backoff_max_ms': 20, 'timeout_ms': 1000}\n"
      "}\n",
      &cfg);

  assert_int_equal(cfg.n_listen, 3);
  assert_string_equal(cfg.listen[0], "127.0.0.1:0");
  assert_string_equal(cfg.listen[1], "[::1]:8081");
  assert_string_equal(cfg.listen[2], ":8082");
  assert_string_equal(cfg.admin_listen, "127.0.0.1:9090");
  assert_string_equal(cfg.data_dir, "/srv/hookd");
  assert_int_equal(cfg.n_plugin_dirs, 2);
  char want[PATH_MAX];
  snprintf(want, sizeof want, "%s/../build/plugins", tmpdir);
  assert_string_equal(cfg.plugin_dirs[0], want);
  assert_string_equal(cfg.plugin_dirs[1], "/usr/lib/hookd");
  assert_int_equal(cfg.log_level, HLOG_DEBUG);
  assert_int_equal(cfg.log_format, HLOG_FORMAT_JSON);
  assert_int_equal(cfg.shutdown_timeout_ms, 0);
  assert_int_equal(cfg.sync, SPOOL_SYNC_NORMAL);
  assert_int_equal(cfg.limits.max_body_bytes, 2048);
  assert_int_equal(cfg.limits.max_header_bytes, 4096);
  assert_int_equal(cfg.limits.header_timeout_ms, 1);
  assert_int_equal(cfg.limits.body_timeout_ms, 2);
  assert_int_equal(cfg.limits.idle_timeout_ms, 3);
  assert_int_equal(cfg.limits.max_connections, 4);

  assert_int_equal(cfg.n_sources, 4);
  config_source *s = &cfg.sources[0];
  assert_string_equal(s->name, "cirrus");
  assert_string_equal(s->path, "/webhooks/cirrus");
  assert_int_equal(s->success_status, 202);
  assert_int_equal(s->envelope.format, ENVELOPE_CIRRUS_INSIGHT);
  assert_int_equal(s->verify.scheme, VERIFY_HMAC);
  assert_int_equal(s->verify.algorithm, VERIFY_SHA512);
  assert_int_equal(s->verify.encoding, VERIFY_BASE64);
  assert_string_equal(s->verify.header, "X-Signature");
  assert_string_equal(s->verify.prefix, "sha256=");
  assert_int_equal(s->verify.n_secrets, 2);
  assert_int_equal(s->verify.secrets[0].len, 7);
  assert_memory_equal(s->verify.secrets[0].key, "env-key", 7);
  assert_int_equal(s->verify.secrets[1].len, 8);
  assert_memory_equal(s->verify.secrets[1].key, "file-key", 8);

  s = &cfg.sources[1];
  assert_string_equal(s->keypath, "sources[1]");
  assert_int_equal(s->envelope.format, ENVELOPE_GENERIC);
  assert_string_equal(s->envelope.type_field, "meta.type");
  assert_string_equal(s->envelope.id_field, "meta.id");
  assert_string_equal(s->envelope.order_key, "data.account");
  assert_int_equal(s->success_status, 200);
  assert_int_equal(s->verify.scheme, VERIFY_STANDARD_WEBHOOKS);
  assert_int_equal(s->verify.tolerance_s, 60);
  assert_null(s->verify.header);
  assert_int_equal(s->verify.n_secrets, 1);

  s = &cfg.sources[2];
  assert_int_equal(s->verify.scheme, VERIFY_TOKEN);
  assert_string_equal(s->verify.header, "X-Token");
  assert_null(s->envelope.order_key);

  /* hmac defaults. */
  s = &cfg.sources[3];
  assert_int_equal(s->verify.algorithm, VERIFY_SHA256);
  assert_int_equal(s->verify.encoding, VERIFY_HEX);
  assert_string_equal(s->verify.prefix, "");

  assert_int_equal(cfg.n_plugins, 3);
  config_plugin *p = &cfg.plugins[0];
  assert_string_equal(p->name, "team-slack");
  assert_string_equal(p->module, "slack_post");
  assert_string_equal(p->keypath, "plugins[0]");
  /* The plugin's config is checked by the plugin: any key passes here, and
   * ${...} is already substituted. */
  assert_string_equal(cJSON_GetObjectItem(p->config, "webhook_url")->valuestring,
                      "https://hooks.example/x");
  assert_non_null(cJSON_GetObjectItem(p->config, "anything"));
  /* An absent config is an empty object that lives in the document. */
  p = &cfg.plugins[1];
  assert_true(cJSON_IsObject(p->config));
  assert_null(p->config->child);
  cJSON *entry = cJSON_GetArrayItem(cJSON_GetObjectItem(cfg.doc.root, "plugins"), 1);
  assert_ptr_equal(cJSON_GetObjectItem(entry, "config"), p->config);

  /* Delivery: global settings, and an entry's overrides merged over them. */
  assert_int_equal(cfg.delivery.concurrency, 8);
  assert_int_equal(cfg.delivery.max_attempts, 5);
  assert_int_equal(cfg.delivery.backoff_initial_ms, 10);
  assert_int_equal(cfg.delivery.backoff_max_ms, 20);
  assert_int_equal(cfg.delivery.timeout_ms, 1000);
  assert_memory_equal(&cfg.plugins[0].delivery, &cfg.delivery, sizeof cfg.delivery);
  config_delivery *d = &cfg.plugins[2].delivery;
  assert_int_equal(d->concurrency, 8);
  assert_int_equal(d->max_attempts, 3);
  assert_int_equal(d->backoff_initial_ms, 10);
  assert_int_equal(d->backoff_max_ms, 20);
  assert_int_equal(d->timeout_ms, 5000);

  assert_int_equal(cfg.n_routes, 3);
  config_route *r = &cfg.routes[0];
  assert_string_equal(r->keypath, "routes[0]");
  assert_string_equal(r->source, "cirrus");
  assert_int_equal(r->n_events, 1);
  assert_string_equal(r->events[0], "scheduling.smartscheduler.*");
  assert_int_equal(r->n_to, 2);
  assert_int_equal(r->to[0], 0);
  assert_int_equal(r->to[1], 2);
  assert_int_equal(r->n_when, 0);
  r = &cfg.routes[1];
  assert_null(r->source);
  assert_int_equal(r->n_events, 2);
  assert_string_equal(r->events[1], "**");
  assert_int_equal(r->n_to, 1);
  assert_int_equal(r->to[0], 1);
  assert_int_equal(r->n_when, 1);
  assert_string_equal(r->when[0].path, "data.meetingInfo.calendarPath");
  assert_string_equal(r->when[0].value->valuestring, "intro-call");
  r = &cfg.routes[2];
  assert_int_equal(r->to[0], 2);
  assert_int_equal(r->to[1], 1);
  assert_int_equal(r->n_when, 3);
  assert_int_equal(r->when[0].value->valueint, 5);
  assert_true(cJSON_IsFalse(r->when[1].value));
  assert_true(cJSON_IsNull(r->when[2].value));
  config_free(&cfg);
}

/* Loopback admin listeners need no token; others take one. */
static void test_config_admin_listen_rules(void **state) {
  (void)state;
  static const char *const ok[] = {"127.0.0.1:9090", "127.5.6.7:1", "[::1]:9090"};
  for (size_t i = 0; i < 3; i++) {
    config cfg;
    char text[256];
    snprintf(text, sizeof text, "{'admin_listen': '%s', " SOURCES "}", ok[i]);
    load_ok(text, &cfg);
    assert_string_equal(cfg.admin_listen, ok[i]);
    assert_null(cfg.listen_tls[0].cert);
    config_free(&cfg);
  }
  config cfg;
  load_ok("{'admin_listen': '0.0.0.0:9090', 'admin_token': 't', " SOURCES "}", &cfg);
  assert_string_equal(cfg.admin_token, "t");
  config_free(&cfg);
}

static void test_config_listen_string(void **state) {
  (void)state;
  config cfg;
  load_ok("{'listen': '[::]:80', 'data_dir': 'state', 'plugin_dirs': []," SOURCES "}", &cfg);
  assert_int_equal(cfg.n_listen, 1);
  assert_string_equal(cfg.listen[0], "[::]:80");
  char want[PATH_MAX];
  snprintf(want, sizeof want, "%s/state", tmpdir);
  assert_string_equal(cfg.data_dir, want);
  assert_int_equal(cfg.n_plugin_dirs, 0);
  config_free(&cfg);
}

static void test_config_parse_addr(void **state) {
  (void)state;
  struct sockaddr_storage ss;
  struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
  char buf[INET6_ADDRSTRLEN];

  assert_int_equal(config_parse_addr("1.2.3.4:80", &ss), 0);
  assert_int_equal(v4->sin_family, AF_INET);
  assert_int_equal(ntohs(v4->sin_port), 80);
  assert_string_equal(inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf), "1.2.3.4");

  assert_int_equal(config_parse_addr(":8080", &ss), 0);
  assert_int_equal(v4->sin_family, AF_INET);
  assert_int_equal(ntohs(v4->sin_port), 8080);
  assert_string_equal(inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf), "0.0.0.0");

  assert_int_equal(config_parse_addr("[::1]:65535", &ss), 0);
  assert_int_equal(v6->sin6_family, AF_INET6);
  assert_int_equal(ntohs(v6->sin6_port), 65535);
  assert_string_equal(inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf), "::1");

  assert_int_equal(config_parse_addr("127.0.0.1:0", &ss), 0);
  assert_int_equal(ntohs(v4->sin_port), 0);

  static const char *const bad[] = {
      "1.2.3.4",     "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:8a",   "localhost:80",
      "::1:80",      "[::1]80",  "[]:80",         "[1.2.3.4]:80", "1.2.3:80",
      "1.2.3.4:+80", "",         "[::1]:123456",  "1.2.3.4:-1",   ":",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (config_parse_addr(bad[i], &ss) != -1) fail_msg("accepted '%s'", bad[i]);
  assert_int_equal(config_parse_addr(NULL, &ss), -1);
}

/* ---- config: one failing case per rule ---- */

static void test_rules_top(void **state) {
  (void)state;
  expect_err(MARK "[1]", "expected an object at the top level");
  expect_err(MARK "{'listen': ':80'}", "missing required key 'sources'");
  expect_err("{'lisen': " MARK "':80', " SOURCES "}",
             "lisen: unknown key (did you mean 'listen'?)");
  expect_err("{'zzz': " MARK "1, " SOURCES "}",
             "zzz: unknown key (known keys: listen, admin_listen, data_dir, plugin_dirs, log, "
             "shutdown_timeout_ms, spool, limits, sources, plugins, routes, delivery, user, group, "
             "trusted_proxies, admin_token, reload_timeout_ms)");
  expect_err("{'listen': " MARK "80, " SOURCES "}",
             "listen: expected an address, an object with \"address\", or an array of them");
  expect_err("{'listen': [':80', " MARK "{'tls': {}}], " SOURCES "}",
             "listen[1]: missing required key 'address'");
  expect_err("{'listen': {'address': ':80', 'tls': " MARK "{'cert': 'c.pem'}}, " SOURCES "}",
             "listen.tls: missing required key 'key'");
  expect_err("{'listen': {'address': ':80', 'tls': {'cert': " MARK
             "'/nonexistent/c.pem', "
             "'key': 'k.pem'}}, " SOURCES "}",
             "listen.tls.cert: cannot read '/nonexistent/c.pem': No such file or directory");
  expect_err("{'listen': {'address': ':80', 'tsl': " MARK "{}}, " SOURCES "}",
             "listen.tsl: unknown key (did you mean 'tls'?)");
  /* A non-loopback admin listener needs a token. */
  expect_err("{'admin_listen': " MARK "'0.0.0.0:9090', " SOURCES "}",
             "admin_listen: '0.0.0.0:9090' is reachable from other hosts: set \"admin_token\" "
             "(e.g. \"${file:admin-token}\") or listen on 127.0.0.1 or [::1]");
  expect_err("{'admin_listen': " MARK "'[::]:9090', " SOURCES "}",
             "admin_listen: '[::]:9090' is reachable from other hosts: set \"admin_token\" "
             "(e.g. \"${file:admin-token}\") or listen on 127.0.0.1 or [::1]");
  expect_err("{'listen': " MARK "'localhost:80', " SOURCES "}",
             "listen: invalid address 'localhost:80' (expected IPV4:PORT, [IPV6]:PORT or :PORT)");
  expect_err("{'listen': [':80', " MARK "'1.2.3.4:99999'], " SOURCES "}",
             "listen[1]: invalid address '1.2.3.4:99999' (expected IPV4:PORT, [IPV6]:PORT or "
             ":PORT)");
  expect_err("{'listen': " MARK "[], " SOURCES "}", "listen: expected at least one address");
  expect_err("{'listen': [" MARK "1], " SOURCES "}",
             "listen[0]: expected an address string or an object with \"address\" and \"tls\"");
  expect_err("{'admin_listen': " MARK "'127.0.0.1', " SOURCES "}",
             "admin_listen: invalid address '127.0.0.1' (expected IPV4:PORT, [IPV6]:PORT or "
             ":PORT)");
  expect_err("{'admin_listen': " MARK "9090, " SOURCES "}", "admin_listen: expected a string");
  expect_err("{'data_dir': " MARK "5, " SOURCES "}", "data_dir: expected a string");
  expect_err("{'data_dir': " MARK "'', " SOURCES "}", "data_dir: expected a non-empty string");
  expect_err("{'plugin_dirs': " MARK "'x', " SOURCES "}",
             "plugin_dirs: expected an array of strings");
  expect_err("{'plugin_dirs': ['a', " MARK "''], " SOURCES "}",
             "plugin_dirs[1]: expected a non-empty string");
  expect_err("{'log': " MARK "'debug', " SOURCES "}", "log: expected an object");
  expect_err("{'log': {'level': " MARK "'verbose'}, " SOURCES "}",
             "log.level: expected one of error, warn, info, debug");
  expect_err("{'log': {'format': " MARK "'xml'}, " SOURCES "}",
             "log.format: expected one of text, json");
  expect_err("{'log': {'lvl': " MARK "'info'}, " SOURCES "}",
             "log.lvl: unknown key (did you mean 'level'?)");
  expect_err("{'shutdown_timeout_ms': " MARK "-1, " SOURCES "}",
             "shutdown_timeout_ms: expected a non-negative integer");
  expect_err("{'spool': " MARK "'full', " SOURCES "}", "spool: expected an object");
  expect_err("{'spool': {'sync': " MARK "'always'}, " SOURCES "}",
             "spool.sync: expected one of full, normal, off");
  expect_err("{'spool': {'max_pending': " MARK "-1}, " SOURCES "}",
             "spool.max_pending: expected a non-negative integer");
  expect_err("{'reload_timeout_ms': " MARK "0, " SOURCES "}",
             "reload_timeout_ms: expected a positive integer");
  expect_err("{'spool': {'retention': " MARK "7}, " SOURCES "}",
             "spool.retention: expected a string");
  expect_err("{'spool': {'min_free_bytes': " MARK "-5}, " SOURCES "}",
             "spool.min_free_bytes: expected a non-negative integer");
  expect_err("{'spool': {'synk': " MARK "'full'}, " SOURCES "}",
             "spool.synk: unknown key (did you mean 'sync'?)");
}

static void test_rules_limits(void **state) {
  (void)state;
  expect_err("{'limits': " MARK "[], " SOURCES "}", "limits: expected an object");
  expect_err("{'limits': {'max_body_bytes': " MARK "0}, " SOURCES "}",
             "limits.max_body_bytes: expected a positive integer");
  expect_err("{'limits': {'max_connections': " MARK "1.5}, " SOURCES "}",
             "limits.max_connections: expected a positive integer");
  expect_err("{'limits': {'header_timeout_ms': " MARK "'10s'}, " SOURCES "}",
             "limits.header_timeout_ms: expected a positive integer");
  expect_err("{'limits': {'body_timeout_ms': " MARK "true}, " SOURCES "}",
             "limits.body_timeout_ms: expected a positive integer");
  expect_err("{'limits': {'idle_timeout_ms': " MARK "-1}, " SOURCES "}",
             "limits.idle_timeout_ms: expected a positive integer");
  expect_err("{'limits': {'max_header_bytes': " MARK "5000000000}, " SOURCES "}",
             "limits.max_header_bytes: must be at most 4294967295");
  expect_err("{'limits': {'max_body': " MARK "1}, " SOURCES "}",
             "limits.max_body: unknown key (did you mean 'max_body_bytes'?)");
  expect_err("{'limits': {'zzz': " MARK "1}, " SOURCES "}",
             "limits.zzz: unknown key (known keys: max_body_bytes, max_header_bytes, "
             "header_timeout_ms, body_timeout_ms, idle_timeout_ms, max_connections)");
}

static void test_rules_delivery(void **state) {
  (void)state;
  expect_err("{'delivery': " MARK "[], " SOURCES "}", "delivery: expected an object");
  expect_err("{'delivery': {'max_attempts': " MARK "0}, " SOURCES "}",
             "delivery.max_attempts: expected a positive integer");
  expect_err("{'delivery': {'backoff_initial_ms': " MARK "5000, 'backoff_max_ms': 1000}, " SOURCES
             "}",
             "delivery.backoff_initial_ms: must not be greater than backoff_max_ms (1000)");
  expect_err("{'delivery': {'backoff_max_ms': " MARK "500}, " SOURCES "}",
             "delivery.backoff_max_ms: must not be less than backoff_initial_ms (1000)");
  expect_err("{'delivery': {'concurrency': " MARK "5000}, " SOURCES "}",
             "delivery.concurrency: must be at most 1024");
  expect_err("{'delivery': {'concurrency': " MARK "0}, " SOURCES "}",
             "delivery.concurrency: expected a positive integer");
  expect_err("{'delivery': {'timeout_ms': " MARK "1e20}, " SOURCES "}",
             "delivery.timeout_ms: must be at most 9007199254740991");
  expect_err("{'delivery': {'backoff_initial_ms': " MARK "0.5}, " SOURCES "}",
             "delivery.backoff_initial_ms: expected a positive integer");
  expect_err("{'delivery': {'retries': " MARK "3}, " SOURCES "}",
             "delivery.retries: unknown key (known keys: concurrency, max_attempts, "
             "backoff_initial_ms, backoff_max_ms, timeout_ms, max_crashes, max_pending, "
             "max_threads, rate, breaker)");
  expect_err("{'delivery': {'max_crashes': " MARK "0}, " SOURCES "}",
             "delivery.max_crashes: expected a positive integer");
  expect_err("{'delivery': {'max_pending': " MARK "0}, " SOURCES "}",
             "delivery.max_pending: expected a positive integer");
  expect_err("{'delivery': {'max_threads': " MARK "100000}, " SOURCES "}",
             "delivery.max_threads: must be at most 16384");
  /* 3 instances x 4 threads do not fit in 10 */
  expect_err("{'delivery': {'max_threads': " MARK "10}, " SOURCES
             ", 'plugins': ["
             "{'name': 'a', 'module': 'm'}, {'name': 'b', 'module': 'm'}, "
             "{'name': 'c', 'module': 'm'}]}",
             "delivery.max_threads: the plugin instances need 12 worker threads (the sum of "
             "their concurrency), more than delivery.max_threads (10): lower concurrency or "
             "raise max_threads");
}

/* delivery.rate and delivery.breaker: defaults, overrides per instance, and
 * what is refused. */
static void test_delivery_rate_and_breaker(void **state) {
  (void)state;
  config cfg;
  load_ok("{'delivery': {'rate': '100/m', 'breaker': {'failures': 5}}, " SOURCES
          ", 'plugins': [{'name': 'a', 'module': 'm'},"
          " {'name': 'b', 'module': 'm', 'delivery': {'rate': '1/s',"
          "  'breaker': {'cooldown_ms': 500}}},"
          " {'name': 'c', 'module': 'm', 'delivery': {'rate': null, 'breaker': {'failures': 0}}}]}",
          &cfg);
  assert_int_equal(cfg.delivery.rate_count, 100);
  assert_int_equal(cfg.delivery.rate_period_ms, 60000);
  assert_int_equal(cfg.delivery.breaker_failures, 5);
  assert_int_equal(cfg.delivery.breaker_cooldown_ms, 30000);
  const config_delivery *b = &cfg.plugins[1].delivery, *c = &cfg.plugins[2].delivery;
  assert_memory_equal(&cfg.plugins[0].delivery, &cfg.delivery, sizeof cfg.delivery);
  assert_int_equal(b->rate_count, 1);
  assert_int_equal(b->rate_period_ms, 1000);
  assert_int_equal(b->breaker_failures, 5);
  assert_int_equal(b->breaker_cooldown_ms, 500);
  assert_int_equal(c->rate_count, 0);
  assert_int_equal(c->breaker_failures, 0);
  config_free(&cfg);
  load_ok("{" SOURCES "}", &cfg);
  assert_int_equal(cfg.delivery.rate_count, 0);
  assert_int_equal(cfg.delivery.breaker_failures, 20);
  assert_int_equal(cfg.delivery.breaker_cooldown_ms, 30000);
  config_free(&cfg);
  uint32_t n = 0, per = 0;
  assert_int_equal(config_parse_rate("3/h", &n, &per), 0);
  assert_int_equal(n, 3);
  assert_int_equal(per, 3600000);
  assert_int_equal(config_parse_rate("1000000/s", &n, &per), 0);
  assert_int_equal(config_parse_rate("1000001/s", &n, &per), -1);
  assert_int_equal(config_parse_rate("1/d", &n, &per), -1);
  assert_int_equal(config_parse_rate("-1/s", &n, &per), -1);
  assert_int_equal(config_parse_rate("1 /s", &n, &per), -1);
  static const char rate_msg[] =
      "delivery.rate: expected null or a rate such as \"1/s\", \"100/m\" or \"500/h\" (1 to "
      "1000000 deliveries per second, minute or hour)";
  expect_err("{'delivery': {'rate': " MARK "'0/s'}, " SOURCES "}", rate_msg);
  expect_err("{'delivery': {'rate': " MARK "'1/x'}, " SOURCES "}", rate_msg);
  expect_err("{'delivery': {'rate': " MARK "1}, " SOURCES "}", rate_msg);
  expect_err("{'delivery': {'breaker': " MARK "20}, " SOURCES "}",
             "delivery.breaker: expected an object");
  expect_err("{'delivery': {'breaker': {'failure': " MARK "3}}, " SOURCES "}",
             "delivery.breaker.failure: unknown key (did you mean 'failures'?)");
  expect_err("{'delivery': {'breaker': {'cooldown_ms': " MARK "0}}, " SOURCES "}",
             "delivery.breaker.cooldown_ms: expected a positive integer");
  expect_err("{'delivery': {'breaker': {'failures': " MARK "-2}}, " SOURCES "}",
             "delivery.breaker.failures: expected a non-negative integer");
}

static void test_rules_sources(void **state) {
  (void)state;
  expect_err("{'sources': " MARK "{}}", "sources: expected an array");
  expect_err("{'sources': " MARK "[]}", "sources: expected at least one source");
  expect_err("{'sources': [" MARK "'s']}", "sources[0]: expected an object");
  expect_err("{'sources': [" MARK "{'path': '/h', 'verify': {'scheme': 'none'}}]}",
             "sources[0]: missing required key 'name'");
  expect_err("{'sources': [{'name': " MARK "5, 'path': '/h', 'verify': {'scheme': 'none'}}]}",
             "sources[0].name: expected a string");
  expect_err("{'sources': [{'name': " MARK "'a b', 'path': '/h', 'verify': {'scheme': 'none'}}]}",
             "sources[0].name: invalid name 'a b' (use letters, digits, '_', '.' and '-')");
  expect_err("{'sources': [" SRC ", {'name': " MARK
             "'s', 'path': '/g', 'verify': {'scheme': 'none'}}]}",
             "sources[1].name: duplicate source name 's' (also sources[0])");
  expect_err("{'sources': [" MARK "{'name': 's', 'verify': {'scheme': 'none'}}]}",
             "sources[0]: missing required key 'path'");
  expect_err("{'sources': [{'name': 's', 'path': " MARK "'h', 'verify': {'scheme': 'none'}}]}",
             "sources[0].path: expected a path starting with '/'");
  expect_err("{'sources': [{'name': 's', 'path': " MARK "'/h?x', 'verify': {'scheme': 'none'}}]}",
             "sources[0].path: must not contain '?', '#', spaces or control characters");
  expect_err("{'sources': [" SRC ", {'name': 't', 'path': " MARK
             "'/h', 'verify': {'scheme': 'none'}}]}",
             "sources[1].path: path '/h' is already used by sources[0]");
  expect_err("{'sources': [{'name': 's', 'path': '/h', 'format': " MARK
             "'xml', 'verify': {'scheme': 'none'}}]}",
             "sources[0].format: expected one of cirrus-insight, generic, github, stripe, slack, "
             "zoom, shopify, standard-webhooks");
  expect_err("{'sources': [" MARK
             "{'name': 's', 'path': '/h', 'format': 'generic', 'id_field': 'id', "
             "'verify': {'scheme': 'none'}}]}",
             "sources[0]: missing required key 'type_field' or 'type_header' (format 'generic' "
             "needs one)");
  expect_err(
      "{'sources': [" MARK
      "{'name': 's', 'path': '/h', 'format': 'generic', 'type_field': 'type', "
      "'verify': {'scheme': 'none'}}]}",
      "sources[0]: missing required key 'id_field' or 'id_header' (format 'generic' needs one)");
  expect_err("{'sources': [{'name': 's', 'path': '/h', 'format': 'generic', 'type_field': " MARK
             "'a..b', 'id_field': 'id', 'verify': {'scheme': 'none'}}]}",
             "sources[0].type_field: expected a dotted path like 'data.id'");
  expect_err(
      "{'sources': [{'name': 's', 'path': '/h', 'format': 'generic', 'type_field': 't', "
      "'id_field': 'id', 'order_key': " MARK "'', 'verify': {'scheme': 'none'}}]}",
      "sources[0].order_key: expected a non-empty string");
  expect_err(
      "{'sources': [{'name': 's', 'path': '/h', 'order_key': " MARK
      "'data.id', 'verify': {'scheme': 'none'}}]}",
      "sources[0].order_key: not used with \"format\": \"cirrus-insight\" (its fields are fixed)");
  expect_err("{'sources': [{'name': 's', 'path': '/h', 'success_status': " MARK
             "404, 'verify': {'scheme': 'none'}}]}",
             "sources[0].success_status: expected an integer from 200 to 299");
  expect_err("{'sources': [" MARK "{'name': 's', 'path': '/h'}]}",
             "sources[0]: missing required key 'verify' (write \"verify\": {\"scheme\": "
             "\"none\"} to accept unsigned requests)");
  expect_err("{'sources': [{'name': 's', 'pth': " MARK "'/h', 'verify': {'scheme': 'none'}}]}",
             "sources[0].pth: unknown key (did you mean 'path'?)");
}

/* A source with the given verify object, for the verify rules. */
#define VSRC(v) "{'sources': [{'name': 's', 'path': '/h', 'verify': " v "}]}"

static void test_rules_verify(void **state) {
  (void)state;
  expect_err(VSRC(MARK "'none'"), "sources[0].verify: expected an object");
  expect_err(VSRC(MARK "{}"),
             "sources[0].verify: missing required key 'scheme' (hmac, standard-webhooks, token, "
             "basic or none)");
  expect_err(
      VSRC("{'scheme': " MARK "'rsa'}"),
      "sources[0].verify.scheme: expected one of hmac, standard-webhooks, token, basic, none");
  expect_err(VSRC(MARK "{'scheme': 'hmac', 'secrets': ['k']}"),
             "sources[0].verify: missing required key 'header'");
  expect_err(VSRC("{'scheme': 'hmac', 'header': " MARK "'X Sig', 'secrets': ['k']}"),
             "sources[0].verify.header: invalid header name 'X Sig'");
  expect_err(
      VSRC("{'scheme': 'hmac', 'header': 'X', 'algorithm': " MARK "'md5', 'secrets': ['k']}"),
      "sources[0].verify.algorithm: expected one of sha1, sha256, sha512");
  expect_err(VSRC("{'scheme': 'hmac', 'header': 'X', 'encoding': " MARK "'base32', "
                  "'secrets': ['k']}"),
             "sources[0].verify.encoding: expected one of hex, base64");
  expect_err(VSRC("{'scheme': 'hmac', 'header': 'X', 'prefix': " MARK "5, 'secrets': ['k']}"),
             "sources[0].verify.prefix: expected a string");
  expect_err(VSRC(MARK "{'scheme': 'hmac', 'header': 'X'}"),
             "sources[0].verify: missing required key 'secrets'");
  expect_err(VSRC("{'scheme': 'hmac', 'header': 'X', 'secrets': " MARK "[]}"),
             "sources[0].verify.secrets: expected at least one secret");
  expect_err(VSRC("{'scheme': 'hmac', 'header': 'X', 'secrets': " MARK "'k'}"),
             "sources[0].verify.secrets: expected an array of strings");
  expect_err(VSRC("{'scheme': 'token', 'header': 'X', 'secrets': ['a', " MARK "'']}"),
             "sources[0].verify.secrets[1]: expected a non-empty string");
  expect_err(VSRC("{'scheme': 'token', 'header': 'X', 'secrets': [" MARK "5]}"),
             "sources[0].verify.secrets[0]: expected a string");
  expect_err(VSRC(MARK "{'scheme': 'token', 'secrets': ['k']}"),
             "sources[0].verify: missing required key 'header'");
  expect_err(VSRC("{'scheme': 'token', 'header': 'X', 'algorithm': " MARK "'sha1', "
                  "'secrets': ['k']}"),
             "sources[0].verify.algorithm: not used by scheme 'token'");
  expect_err(VSRC("{'scheme': 'none', 'secrets': " MARK "['k']}"),
             "sources[0].verify.secrets: not used by scheme 'none'");
  expect_err(VSRC("{'scheme': 'standard-webhooks', 'header': " MARK "'X', "
                  "'secrets': ['whsec_a']}"),
             "sources[0].verify.header: not used by scheme 'standard-webhooks'");
  expect_err(VSRC("{'scheme': 'standard-webhooks', 'tolerance_s': " MARK "0, "
                  "'secrets': ['whsec_a']}"),
             "sources[0].verify.tolerance_s: expected a positive integer");
  expect_err(VSRC("{'scheme': 'hmac', 'header': 'X', 'secret': " MARK "'k'}"),
             "sources[0].verify.secret: unknown key (did you mean 'secrets'?)");
  expect_err(VSRC("{'scheme': 'hmac', 'header': 'X', 'zzz': " MARK "1, 'secrets': ['k']}"),
             "sources[0].verify.zzz: unknown key (known keys: scheme, algorithm, header, "
             "encoding, prefix, secrets, tolerance_s, signed_payload, timestamp_header, "
             "timestamp_key, signature_key)");

  /* A secret that verify_secret_set refuses: the reason is verify.c's. */
  const char *fixture = VSRC("{'scheme': 'standard-webhooks', 'secrets': [" MARK "'not base64!']}");
  char tail[1024], want[256];
  marker_want(fixture, "sources[0].verify.secrets[0]: ", want, sizeof want);
  load_fail(fixture, 1, tail, sizeof tail);
  if (strncmp(tail, want, strlen(want)) != 0 || strlen(tail) == strlen(want))
    fail_msg("got '%s', want it to start with '%s'", tail, want);
}

#define PLUGINS(list) "{" SOURCES ", 'plugins': [" list "]}"
#define PL(n) "{'name': '" n "', 'module': 'file_sink'}"

static void test_rules_plugins(void **state) {
  (void)state;
  expect_err("{" SOURCES ", 'plugins': " MARK "{}}", "plugins: expected an array");
  expect_err(PLUGINS(MARK "'x'"), "plugins[0]: expected an object");
  expect_err(PLUGINS(MARK "{'module': 'file_sink'}"), "plugins[0]: missing required key 'name'");
  expect_err(PLUGINS("{'name': " MARK "'a/b', 'module': 'file_sink'}"),
             "plugins[0].name: invalid name 'a/b' (use letters, digits, '_', '.' and '-')");
  expect_err(PLUGINS(PL("p") ", {'name': " MARK "'p', 'module': 'exec'}"),
             "plugins[1].name: duplicate plugin instance name 'p' (also plugins[0])");
  expect_err(PLUGINS(MARK "{'name': 'p'}"), "plugins[0]: missing required key 'module'");
  expect_err(PLUGINS("{'name': 'p', 'module': " MARK "'../evil'}"),
             "plugins[0].module: invalid module name '../evil' (use letters, digits, '_' and "
             "'-'; no path)");
  expect_err(PLUGINS("{'name': 'p', 'module': " MARK "'file_sink.so'}"),
             "plugins[0].module: invalid module name 'file_sink.so' (use letters, digits, '_' "
             "and '-'; no path)");
  expect_err(PLUGINS("{'name': 'p', 'module': 'm', 'config': " MARK "'x'}"),
             "plugins[0].config: expected an object");
  expect_err(PLUGINS("{'name': 'p', 'module': 'm', 'delivery': " MARK "3}"),
             "plugins[0].delivery: expected an object");
  expect_err(PLUGINS("{'name': 'p', 'module': 'm', 'delivery': {'max_attempts': " MARK "0}}"),
             "plugins[0].delivery.max_attempts: expected a positive integer");
  expect_err(
      PLUGINS("{'name': 'p', 'module': 'm', 'delivery': {'backoff_initial_ms': " MARK "7200000}}"),
      "plugins[0].delivery.backoff_initial_ms: must not be greater than backoff_max_ms "
      "(3600000)");
  expect_err(PLUGINS("{'name': 'p', 'module': 'm', 'delivery': {'tries': " MARK "1}}"),
             "plugins[0].delivery.tries: unknown key (known keys: concurrency, max_attempts, "
             "backoff_initial_ms, backoff_max_ms, timeout_ms, max_crashes, max_pending, rate, "
             "breaker)");
  expect_err(PLUGINS("{'name': 'p', 'module': 'm', 'concurrency': " MARK "2}"),
             "plugins[0].concurrency: unknown key (known keys: name, module, config, delivery, "
             "isolation)");
  expect_err(PLUGINS("{'name': 'p', 'module': 'm', 'isolation': " MARK "'container'}"),
             "plugins[0].isolation: expected \"thread\" or \"process\", not 'container'");
  expect_err(PLUGINS("{'name': 'p', 'module': 'm', 'isolation': " MARK "true}"),
             "plugins[0].isolation: expected a string");

  /* Thread is the default; process only when asked for. */
  config cfg;
  load_ok(PLUGINS("{'name': 'p', 'module': 'm'}, {'name': 'q', 'module': 'm', 'isolation': "
                  "'process'}, {'name': 'r', 'module': 'm', 'isolation': 'thread'}"),
          &cfg);
  assert_int_equal(cfg.plugins[0].isolation, CONFIG_ISOLATION_THREAD);
  assert_int_equal(cfg.plugins[1].isolation, CONFIG_ISOLATION_PROCESS);
  assert_int_equal(cfg.plugins[2].isolation, CONFIG_ISOLATION_THREAD);
  config_free(&cfg);
}

#define ROUTES(list) "{" SOURCES ", 'plugins': [" PL("p") ", " PL("q") "], 'routes': [" list "]}"

static void test_rules_routes(void **state) {
  (void)state;
  expect_err("{" SOURCES ", 'routes': " MARK "{}}", "routes: expected an array");
  expect_err(ROUTES(MARK "5"), "routes[0]: expected an object");
  expect_err(ROUTES("{'source': " MARK "'nope', 'events': ['a'], 'to': ['p']}"),
             "routes[0].source: no source named 'nope'");
  expect_err(ROUTES("{'source': " MARK "7, 'events': ['a'], 'to': ['p']}"),
             "routes[0].source: expected a string");
  expect_err(ROUTES(MARK "{'to': ['p']}"), "routes[0]: missing required key 'events'");
  expect_err(ROUTES("{'events': " MARK "[], 'to': ['p']}"),
             "routes[0].events: expected at least one event pattern");
  expect_err(ROUTES("{'events': " MARK "'a.b', 'to': ['p']}"),
             "routes[0].events: expected an array of strings");
  expect_err(ROUTES("{'events': ['a', " MARK "''], 'to': ['p']}"),
             "routes[0].events[1]: expected a non-empty string");
  expect_err(ROUTES("{'events': [" MARK "1], 'to': ['p']}"),
             "routes[0].events[0]: expected a string");
  expect_err(ROUTES("{'events': [" MARK "'a.**.b'], 'to': ['p']}"),
             "routes[0].events[0]: invalid event pattern 'a.**.b': '**' must be the last segment");
  expect_err(ROUTES("{'events': [" MARK "'a*'], 'to': ['p']}"),
             "routes[0].events[0]: invalid event pattern 'a*': '*' must be a whole segment");
  expect_err(ROUTES("{'events': [" MARK "'a..b'], 'to': ['p']}"),
             "routes[0].events[0]: invalid event pattern 'a..b': empty segment");
  expect_err(ROUTES(MARK "{'events': ['a']}"), "routes[0]: missing required key 'to'");
  expect_err(ROUTES("{'events': ['a'], 'to': " MARK "[]}"),
             "routes[0].to: expected at least one plugin instance");
  expect_err(ROUTES("{'events': ['a'], 'to': " MARK "'p'}"),
             "routes[0].to: expected an array of strings");
  expect_err(ROUTES("{'events': ['a'], 'to': ['p', " MARK "'x']}"),
             "routes[0].to[1]: no plugin instance named 'x'");
  expect_err(ROUTES("{'events': ['a'], 'to': [" MARK "3]}"), "routes[0].to[0]: expected a string");
  expect_err(ROUTES("{'events': ['a'], 'to': ['p', " MARK "'p']}"),
             "routes[0].to[1]: plugin instance 'p' is listed twice");
  expect_err(ROUTES("{'events': ['a'], 'to': ['p'], 'when': " MARK "'x'}"),
             "routes[0].when: expected an object");
  expect_err(ROUTES("{'events': ['a'], 'to': ['p'], 'when': {'data.a': " MARK "{'b': 1}}}"),
             "routes[0].when.data.a: expected a string, number, boolean or null");
  expect_err(ROUTES("{'events': ['a'], 'to': ['p'], 'when': {'data.a': " MARK "[1]}}"),
             "routes[0].when.data.a: expected a string, number, boolean or null");
  expect_err(ROUTES("{'events': ['a'], 'to': ['p'], 'when': {'a..b': " MARK "1}}"),
             "routes[0].when.a..b: invalid path (expected a dotted path like "
             "'data.meetingInfo.calendarPath')");
  expect_err(ROUTES("{'event': " MARK "['a'], 'to': ['p']}"),
             "routes[0].event: unknown key (did you mean 'events'?)");
  /* A later route is checked too, after a good one. */
  expect_err(ROUTES("{'events': ['a'], 'to': ['p']}, {'events': ['b'], 'to': [" MARK "'r']}"),
             "routes[1].to[0]: no plugin instance named 'r'");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jsonc_blanks_comments),
      cmocka_unit_test(test_jsonc_syntax_errors),
      cmocka_unit_test(test_jsonc_duplicate_key),
      cmocka_unit_test(test_jsonc_locate),
      cmocka_unit_test(test_subst_env),
      cmocka_unit_test(test_subst_file),
      cmocka_unit_test(test_subst_errors),
      cmocka_unit_test(test_config_positions),
      cmocka_unit_test(test_config_unreadable),
      cmocka_unit_test(test_config_defaults),
      cmocka_unit_test(test_config_full),
      cmocka_unit_test(test_config_listen_string),
      cmocka_unit_test(test_config_admin_listen_rules),
      cmocka_unit_test(test_config_parse_addr),
      cmocka_unit_test(test_rules_top),
      cmocka_unit_test(test_rules_limits),
      cmocka_unit_test(test_rules_delivery),
      cmocka_unit_test(test_delivery_rate_and_breaker),
      cmocka_unit_test(test_rules_sources),
      cmocka_unit_test(test_rules_verify),
      cmocka_unit_test(test_rules_plugins),
      cmocka_unit_test(test_rules_routes),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
