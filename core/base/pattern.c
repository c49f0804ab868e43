/* Event type patterns ("a.b.c", "a.*.c", "a.**"): checking and matching, for routes and filters. */
#include "pattern.h"

#include <string.h>

const char *pattern_problem(const char *pattern) {
  int wildcard;
  return pattern_check(pattern, &wildcard);
}

const char *pattern_check(const char *pattern, int *wildcard) {
  const char *seg = pattern;
  *wildcard = 0;
  if (pattern == NULL || *pattern == '\0') return "empty pattern";
  for (const char *p = pattern;; p++) {
    if (*p != '.' && *p != '\0') continue;
    size_t len = (size_t)(p - seg);
    if (len == 0) return "empty segment";
    if (len == 2 && seg[0] == '*' && seg[1] == '*') {
      if (*p != '\0') return "'**' must be the last segment";
      *wildcard = 1;
    } else if (len == 1 && seg[0] == '*') {
      *wildcard = 1;
    } else if (memchr(seg, '*', len) != NULL) {
      /* "order*" would read as a prefix match, which the router does not
       * do; refuse it rather than never match. */
      return "'*' must be a whole segment";
    }
    if (*p == '\0') return NULL;
    seg = p + 1;
  }
}

/* "*" and "**" never match an empty segment. */
int pattern_match_valid(const char *pat, const char *type) {
  const char *p = pat;
  const char *t = type;
  for (;;) {
    const char *pe = strchr(p, '.');
    size_t plen = pe != NULL ? (size_t)(pe - p) : strlen(p);
    const char *te = strchr(t, '.');
    size_t tlen = te != NULL ? (size_t)(te - t) : strlen(t);

    if (plen == 2 && p[0] == '*' && p[1] == '*') {
      /* One or more remaining segments, none of them empty. */
      const char *seg = t;
      for (const char *q = t;; q++) {
        if (*q != '.' && *q != '\0') continue;
        if (q == seg) return 0;
        if (*q == '\0') return 1;
        seg = q + 1;
      }
    }
    if (plen == 1 && p[0] == '*') {
      if (tlen == 0) return 0;
    } else if (plen != tlen || memcmp(p, t, plen) != 0) {
      return 0;
    }
    if (pe == NULL || te == NULL) return pe == NULL && te == NULL;
    p = pe + 1;
    t = te + 1;
  }
}

int pattern_match(const char *pattern, const char *type) {
  int wildcard;
  if (type == NULL || pattern_check(pattern, &wildcard) != NULL) return 0;
  return pattern_match_valid(pattern, type);
}
