/* Libraries loaded with dlopen at first use: what only some configurations need is never
 * mapped by the others. */
#ifndef HOOKD_DYNLIB_H
#define HOOKD_DYNLIB_H

#include <stddef.h>

/* One function to resolve: its name and where its pointer goes in the
 * caller's table of function pointers. */
typedef struct dynlib_sym {
  const char *name;
  size_t offset;
} dynlib_sym;

/* dlopens soname (RTLD_NOW | RTLD_LOCAL: its symbols stay out of the
 * namespace plugins resolve against) and stores each of syms[0..n) in the
 * table fns at its offset. 0, or -1 with why in err ("cannot load X: ...",
 * "X has no f: ...") and nothing left mapped. The caller serialises calls
 * (pthread_once). */
int dynlib_load(const char *soname, const dynlib_sym *syms, size_t n, void *fns, char *err,
                size_t errlen);

#endif
