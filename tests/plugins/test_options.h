/* The state struct of the test_options plugin, shared with the unit test that reads it back. */
#ifndef TEST_OPTIONS_H
#define TEST_OPTIONS_H

#include <hookd/plugin.h>

typedef struct topts {
  const char *str;
  int64_t num;
  int flag;
  int color; /* index into red, green, blue */
  hookd_string_list list;
  hookd_template *tpl;
  const char *path;
  int64_t wait_ms;
  const char *url;
  const char *secret;
  hookd_template_list tpls;
  hookd_template_map map;
  int init_calls; /* set by init(): it ran after the host filled the rest */
  int64_t seen_num;
} topts;

#endif
