/* libcurl loaded with dlopen at first use: a daemon that sends no HTTP never maps it. */
#include "curl_lazy.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "dynlib.h"
#include "log.h"

/*
 * Why not link it: libcurl drags in its TLS, SSH, LDAP, Kerberos, RTMP and
 * HTTP/2 libraries (gnutls, p11-kit, krb5, nettle, libssh2, ...), about
 * 4 MiB of resident mappings, and curl_global_init() sets up libssl on top.
 * Only plugins that call host->http need any of it, and many configurations
 * (a file sink, exec) have none.
 *
 * Loading happens under pthread_once because the first caller is usually a
 * delivery worker, and several may ask at the same moment. Since libcurl
 * 7.84 curl_global_init() is itself thread-safe, so running it while other
 * threads (and plugins that init libcurl themselves) are live is fine; its
 * calls are counted, so a plugin's curl_global_cleanup() does not undo ours.
 */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static curl_fns fns;
/* &fns once everything is resolved and initialised, else NULL. Atomic so that
 * curl_lazy_cleanup() can look without going through pthread_once (which
 * would load the library just to unload it). */
static _Atomic(const curl_fns *) loaded;
static int cleaned;
static char load_error[384];

static const dynlib_sym syms[] = {
    {"curl_global_init", offsetof(curl_fns, global_init)},
    {"curl_global_cleanup", offsetof(curl_fns, global_cleanup)},
    {"curl_version_info", offsetof(curl_fns, version_info)},
    {"curl_easy_init", offsetof(curl_fns, easy_init)},
    {"curl_easy_setopt", offsetof(curl_fns, easy_setopt)},
    {"curl_easy_perform", offsetof(curl_fns, easy_perform)},
    {"curl_easy_getinfo", offsetof(curl_fns, easy_getinfo)},
    {"curl_easy_reset", offsetof(curl_fns, easy_reset)},
    {"curl_easy_cleanup", offsetof(curl_fns, easy_cleanup)},
    {"curl_easy_strerror", offsetof(curl_fns, easy_strerror)},
    {"curl_slist_append", offsetof(curl_fns, slist_append)},
    {"curl_slist_free_all", offsetof(curl_fns, slist_free_all)},
    {"curl_getdate", offsetof(curl_fns, getdate)},
};
/* Every member of curl_fns is filled from syms. */
_Static_assert(sizeof syms / sizeof syms[0] == sizeof(curl_fns) / sizeof(void (*)(void)),
               "curl_fns and syms disagree");

static void load(void) {
  /* A plugin linked to libcurl gets the same copy. */
  if (dynlib_load(CURL_LAZY_SONAME, syms, sizeof syms / sizeof syms[0], &fns, load_error,
                  sizeof load_error) != 0) {
    log_error("outbound HTTP unavailable: %s", load_error);
    return;
  }
  CURLcode rc = fns.global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    /* Not unmapped: a half-done global init may have registered handlers. */
    snprintf(load_error, sizeof load_error, "curl_global_init failed: %s", fns.easy_strerror(rc));
    log_error("outbound HTTP unavailable: %s", load_error);
    return;
  }
  log_debug("loaded %s (libcurl %s)", CURL_LAZY_SONAME, fns.version_info(CURLVERSION_NOW)->version);
  atomic_store(&loaded, &fns);
}

const curl_fns *curl_lazy(void) {
  pthread_once(&once, load);
  return atomic_load(&loaded);
}

const char *curl_lazy_error(void) {
  pthread_once(&once, load);
  return load_error;
}

void curl_lazy_cleanup(void) {
  const curl_fns *f = atomic_load(&loaded);
  if (f && !cleaned) {
    cleaned = 1;
    f->global_cleanup();
  }
}
