/* Privileges: drop root to the configured user/group after binding, and the ownership/mode checks
 * for files hookd loads code from. */
#ifndef HOOKD_PRIVS_H
#define HOOKD_PRIVS_H

#include <stddef.h>
struct config;

/* Resolves cfg->user / cfg->group to ids without switching, so that
 * `hookd check` reports an unknown name. Returns 0 (also when no user is
 * configured) or -1 with a reason in err. */
int privs_check(const struct config *cfg, char *err, size_t errlen);

/* The uid and gid privs_drop switches to (for a plugin's child process,
 * which switches itself when hookd starts it as root). Returns 1 with them
 * set, 0 when no user is configured, -1 with a reason in err. */
int privs_resolve(const struct config *cfg, unsigned *uid, unsigned *gid, char *err, size_t errlen);

/* Switches to cfg->user and cfg->group (default: the user's primary group),
 * supplementary groups reduced to that group, for good: afterwards root can
 * not be regained, which is checked. Call it on the main thread after the
 * listeners are bound and before the loop runs; glibc applies the change to
 * every thread already started. When hookd already runs as that user it
 * does nothing. A data_dir owned by root (created at start) is handed to
 * the new user with the files in it; then data_dir, when it exists, must be
 * writable by the new user. Returns 0, or -1 with a reason in err (hookd must then
 * stop: it would otherwise keep running as root). No user configured:
 * returns 0 and changes nothing. */
int privs_drop(const struct config *cfg, char *err, size_t errlen);

/* Logs a warning when running as root without "user" in the config. */
void privs_warn_if_root(const struct config *cfg);

/* Is it safe to load code from `path` (a plugin .so, or a plugin
 * directory when is_dir)? Refused: not a regular file (directory), owned by
 * another user than root or the one hookd runs as, or writable by group or
 * others. Returns 0, or -1 with a reason naming the path and a fix in err. */
int privs_check_code_path(const char *path, int is_dir, char *err, size_t errlen);

#endif
