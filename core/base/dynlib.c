/* Libraries loaded with dlopen at first use: what only some configurations need is never
 * mapped by the others. */
#include "dynlib.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

int dynlib_load(const char *soname, const dynlib_sym *syms, size_t n, void *fns, char *err,
                size_t errlen) {
  dlerror();
  void *dl = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (dl == NULL) {
    const char *e = dlerror();
    snprintf(err, errlen, "cannot load %s: %s", soname, e ? e : "unknown dlopen error");
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    dlerror();
    void *p = dlsym(dl, syms[i].name);
    if (p == NULL) {
      const char *e = dlerror();
      snprintf(err, errlen, "%s has no %s: %s", soname, syms[i].name, e ? e : "symbol is NULL");
      dlclose(dl);
      return -1;
    }
    /* POSIX guarantees a data pointer from dlsym converts to a function
     * pointer; memcpy says so without a cast ISO C does not allow. */
    memcpy((char *)fns + syms[i].offset, &p, sizeof p);
  }
  return 0;
}
