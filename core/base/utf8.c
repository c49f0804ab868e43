/* UTF-8 validity: what an event's id, type and order key must be, and the cleaning of texts
 * others wrote before a store that requires it. */
#include "utf8.h"

#include <string.h>

int utf8_valid(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    int n = *p < 0x80                           ? 0
            : (*p & 0xe0) == 0xc0 && *p >= 0xc2 ? 1
            : (*p & 0xf0) == 0xe0               ? 2
            : (*p & 0xf8) == 0xf0 && *p <= 0xf4 ? 3
                                                : -1;
    if (n < 0) return 0;
    for (int i = 1; i <= n; i++) {
      if ((p[i] & 0xc0) != 0x80) return 0;
    }
    /* Overlong three-byte forms, surrogates, and past U+10FFFF. */
    if (n == 2 && ((*p == 0xe0 && p[1] < 0xa0) || (*p == 0xed && p[1] >= 0xa0))) return 0;
    if (n == 3 && ((*p == 0xf0 && p[1] < 0x90) || (*p == 0xf4 && p[1] >= 0x90))) return 0;
    p += n + 1;
  }
  return 1;
}

void utf8_clean(char *s) {
  if (utf8_valid(s)) return;
  for (unsigned char *p = (unsigned char *)s; *p;) {
    char one[5] = {0};
    size_t n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : 4;
    for (size_t i = 0; i < n && p[i]; i++) one[i] = (char)p[i];
    if (*p < 0x80) {
      p++;
    } else if (strlen(one) == n && utf8_valid(one)) {
      p += n;
    } else {
      *p++ = '?';
    }
  }
}
