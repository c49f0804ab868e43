/* The spool interface's one non-inline function: open the backend the config names. */
#include "spool.h"
#include "config.h"

#include <stdio.h>

#include "spool_pg.h"
#include "spool_sqlite.h"

spool *spool_open(const config *cfg, uv_loop_t *loop, int *code, char *err, size_t errlen) {
  if (cfg->spool_backend == SPOOL_BACKEND_POSTGRES) {
    return spool_pg_open(cfg, loop, code, err, errlen);
  }
  return spool_sqlite_open(cfg, loop, code, err, errlen);
}
