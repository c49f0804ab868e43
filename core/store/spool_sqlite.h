/* The SQLite spool backend (data_dir/spool.db) and the offline check of its file. */
#ifndef HOOKD_SPOOL_SQLITE_H
#define HOOKD_SPOOL_SQLITE_H

#include <stddef.h>
#include <stdio.h>

#include "spool.h"

/* Opens data_dir/spool.db (creating or upgrading it), runs a quick check
 * bounded in time and prepares the writer. *code gets SPOOL_EDAMAGED for a
 * damaged file or one that is not a spool, SPOOL_EFAIL otherwise. */
spool *spool_sqlite_open(const struct config *cfg, uv_loop_t *loop, int *code, char *err,
                         size_t errlen);

/* `hookd spool check`: PRAGMA integrity_check over the whole file, on a
 * connection of its own (hookd may be running). Writes what it finds to out,
 * and progress to progress when not NULL (a terminal). Returns 0 healthy,
 * SPOOL_EDAMAGED damaged, SPOOL_EFAIL when it could not look. */
int spool_sqlite_check(const char *data_dir, FILE *out, FILE *progress);

#endif
