/* libcurl loaded with dlopen at first use: a daemon that sends no HTTP never maps it. */
#ifndef HOOKD_CURL_LAZY_H
#define HOOKD_CURL_LAZY_H

#include <curl/curl.h>

/* The library asked for by name: the ABI of the libcurl4 package whose
 * headers we build against (libcurl4-openssl-dev). */
#define CURL_LAZY_SONAME "libcurl.so.4"

/* The libcurl functions hookd uses. Each pointer has the type of the
 * prototype in curl.h (__typeof__ names the function without referencing
 * it), so a mismatch is a compile error rather than a wrong call. */
typedef struct curl_fns {
  __typeof__(curl_global_init) *global_init;
  __typeof__(curl_global_cleanup) *global_cleanup;
  __typeof__(curl_version_info) *version_info;
  __typeof__(curl_easy_init) *easy_init;
  __typeof__(curl_easy_setopt) *easy_setopt;
  __typeof__(curl_easy_perform) *easy_perform;
  __typeof__(curl_easy_getinfo) *easy_getinfo;
  __typeof__(curl_easy_reset) *easy_reset;
  __typeof__(curl_easy_cleanup) *easy_cleanup;
  __typeof__(curl_easy_strerror) *easy_strerror;
  __typeof__(curl_slist_append) *slist_append;
  __typeof__(curl_slist_free_all) *slist_free_all;
  __typeof__(curl_getdate) *getdate;
} curl_fns;

/* The function table, loading libcurl and running curl_global_init() on the
 * first call (once per process, whichever thread comes first; the others
 * wait). NULL when libcurl cannot be loaded or initialised: that is logged
 * once, curl_lazy_error() says why, and every later call returns NULL
 * again without retrying. Any thread. */
const curl_fns *curl_lazy(void);

/* Why curl_lazy() returned NULL ("" when it did not). Any thread, after
 * curl_lazy(). */
const char *curl_lazy_error(void);

/* curl_global_cleanup() when libcurl was loaded, else nothing (it is not
 * loaded just to be cleaned up). Once, on the main thread, after every thread
 * that used it has stopped; no HTTP afterwards. The library stays mapped:
 * a plugin may share it, and unmapping at exit gains nothing. */
void curl_lazy_cleanup(void);

#endif
