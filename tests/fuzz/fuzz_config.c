/* libFuzzer target: the config loader (jsonc comments, ${...} substitution, every key's
 * checks). Input: the config file's bytes. */
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char dir[] = "/tmp/hookd-fuzz-config-XXXXXX";
static char path[128];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  if (!mkdtemp(dir)) abort();
  snprintf(path, sizeof path, "%s/hookd.jsonc", dir);
  /* What ${...} may name: an environment variable and a file beside the
   * config. */
  setenv("CIRRUS_SIGNING_KEY", "fuzz-secret", 1);
  char sec[160];
  snprintf(sec, sizeof sec, "%s/secret.txt", dir);
  FILE *f = fopen(sec, "w");
  if (!f) abort();
  fputs("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", f);
  fclose(f);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* ${file:...} reads files: keep it to the directory of the config, and
   * away from devices and FIFOs that would block. */
  if (memmem(data, size, "..", 2) || memmem(data, size, "file:/", 6) ||
      memmem(data, size, "file: /", 7))
    return 0;
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) abort();
  if (size && write(fd, data, size) != (ssize_t)size) abort();
  close(fd);
  config cfg;
  char err[1024] = "";
  if (config_load(&cfg, path, err, sizeof err) == 0) {
    config_free(&cfg);
  } else if (!err[0]) {
    abort(); /* a refusal always says why */
  }
  /* Not checked: that the error is one line. It quotes keys and values as
   * written, and a key may hold a newline (found by this target; `hookd
   * run` logs it escaped, `hookd check` prints it as it is). */
  return 0;
}
