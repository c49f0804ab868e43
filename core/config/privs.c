/* Privileges: drop root to the configured user/group after binding, and the ownership/mode checks
 * for files hookd loads code from. */
#include "privs.h"
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "log.h"

typedef struct ids {
  uid_t uid;
  gid_t gid;
} ids;

/* A decimal id, for "user": "65534" when no such name exists. */
static int parse_id(const char *s, unsigned long *out) {
  char *end;
  if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 9) return -1;
  errno = 0;
  *out = strtoul(s, &end, 10);
  return errno == 0 && *end == '\0' ? 0 : -1;
}

static int resolve(const config *cfg, ids *out, char *err, size_t errlen) {
  long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
  long gsz = sysconf(_SC_GETGR_R_SIZE_MAX);
  if (sz < 16384) sz = 16384;
  if (gsz > sz) sz = gsz;
  char *buf = malloc((size_t)sz);
  if (!buf) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  struct passwd pw, *pwp = NULL;
  unsigned long num;
  int rc = getpwnam_r(cfg->user, &pw, buf, (size_t)sz, &pwp);
  if (pwp) {
    out->uid = pw.pw_uid;
    out->gid = pw.pw_gid;
  } else if (parse_id(cfg->user, &num) == 0) {
    out->uid = (uid_t)num;
    out->gid = (gid_t)num; /* a bare uid has no primary group: use the same number */
  } else {
    snprintf(err, errlen, "user '%s': %s", cfg->user, rc ? strerror(rc) : "no such user");
    free(buf);
    return -1;
  }
  if (cfg->group) {
    struct group gr, *grp = NULL;
    rc = getgrnam_r(cfg->group, &gr, buf, (size_t)sz, &grp);
    if (grp) {
      out->gid = gr.gr_gid;
    } else if (parse_id(cfg->group, &num) == 0) {
      out->gid = (gid_t)num;
    } else {
      snprintf(err, errlen, "group '%s': %s", cfg->group, rc ? strerror(rc) : "no such group");
      free(buf);
      return -1;
    }
  }
  free(buf);
  return 0;
}

int privs_check(const config *cfg, char *err, size_t errlen) {
  ids id;
  if (!cfg->user) return 0;
  return resolve(cfg, &id, err, errlen);
}

int privs_resolve(const config *cfg, unsigned *uid, unsigned *gid, char *err, size_t errlen) {
  ids id;
  if (!cfg->user) return 0;
  if (resolve(cfg, &id, err, errlen) != 0) return -1;
  *uid = (unsigned)id.uid;
  *gid = (unsigned)id.gid;
  return 1;
}

/* data_dir as root made it (the spool creates it at start): hand it and
 * the files in it (spool.db and its -wal and -shm) to the new user, who
 * must write them from now on. Only a directory owned by root is touched,
 * one level deep, symlinks never followed. */
static int hand_over_data_dir(const config *cfg, const ids *id, char *err, size_t errlen) {
  struct stat st;
  if (!cfg->data_dir || lstat(cfg->data_dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0)
    return 0;
  int dfd = open(cfg->data_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return 0;
  DIR *d = fdopendir(dfd);
  if (!d) {
    close(dfd);
    return 0;
  }
  int rc = 0;
  if (fchown(dfd, id->uid, id->gid) != 0) {
    snprintf(err, errlen, "cannot hand data_dir %s to user '%s': %s", cfg->data_dir, cfg->user,
             strerror(errno));
    rc = -1;
  }
  struct dirent *e;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
        st.st_uid != 0)
      continue;
    if (fchownat(dfd, e->d_name, id->uid, id->gid, AT_SYMLINK_NOFOLLOW) != 0) {
      snprintf(err, errlen, "cannot hand %s/%s to user '%s': %s", cfg->data_dir, e->d_name,
               cfg->user, strerror(errno));
      rc = -1;
    }
  }
  closedir(d);
  return rc;
}

int privs_drop(const config *cfg, char *err, size_t errlen) {
  ids id;
  if (!cfg->user) return 0;
  if (resolve(cfg, &id, err, errlen) != 0) return -1;
  if (getuid() == id.uid && geteuid() == id.uid && getgid() == id.gid && getegid() == id.gid)
    return 0; /* started as that user already (e.g. by systemd's User=) */
  if (geteuid() != 0) {
    snprintf(err, errlen, "cannot switch to user '%s': hookd runs as uid %u, not root", cfg->user,
             (unsigned)geteuid());
    return -1;
  }
  if (hand_over_data_dir(cfg, &id, err, errlen) != 0) return -1;
  /* Groups first: after setuid there is no permission left to change them. */
  if (setgroups(1, &id.gid) != 0) {
    snprintf(err, errlen, "setgroups(%u): %s", (unsigned)id.gid, strerror(errno));
    return -1;
  }
  if (setresgid(id.gid, id.gid, id.gid) != 0) {
    snprintf(err, errlen, "setresgid(%u): %s", (unsigned)id.gid, strerror(errno));
    return -1;
  }
  if (setresuid(id.uid, id.uid, id.uid) != 0) {
    snprintf(err, errlen, "setresuid(%u): %s", (unsigned)id.uid, strerror(errno));
    return -1;
  }
  /* The point of it all: make sure root cannot come back. */
  if (id.uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
    snprintf(err, errlen, "dropped to uid %u but could regain root", (unsigned)id.uid);
    return -1;
  }
  if (cfg->data_dir && access(cfg->data_dir, F_OK) == 0 &&
      access(cfg->data_dir, W_OK | X_OK) != 0) {
    snprintf(err, errlen, "data_dir %s is not writable by user '%s' (uid %u): chown it",
             cfg->data_dir, cfg->user, (unsigned)id.uid);
    return -1;
  }
  log_write(HLOG_INFO, NULL, "running as user %s (uid %u, gid %u)", cfg->user, (unsigned)id.uid,
            (unsigned)id.gid);
  return 0;
}

void privs_warn_if_root(const config *cfg) {
  if (geteuid() == 0 && !cfg->user) {
    log_write(HLOG_WARN, NULL,
              "running as root: set \"user\" (and \"group\") in the config so that hookd drops "
              "root once its ports are bound");
  }
}

int privs_check_code_path(const char *path, int is_dir, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) != 0) {
    snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
    return -1;
  }
  if (is_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "refusing %s: not a %s", path, is_dir ? "directory" : "regular file");
    return -1;
  }
  uid_t me = geteuid();
  if (st.st_uid != 0 && st.st_uid != me) {
    snprintf(err, errlen,
             "refusing %s %s: owned by uid %u, neither root nor the user hookd runs as (uid %u)",
             is_dir ? "plugin directory" : "plugin", path, (unsigned)st.st_uid, (unsigned)me);
    return -1;
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    snprintf(err, errlen,
             "refusing %s %s: writable by %s (mode %04o): anyone who can write it can run code "
             "as hookd; fix with chmod go-w",
             is_dir ? "plugin directory" : "plugin", path,
             (st.st_mode & S_IWOTH) ? "others" : "its group", (unsigned)(st.st_mode & 07777));
    return -1;
  }
  return 0;
}
