/* Scrubbing: credentials out of text that others wrote (destination answers, plugin messages)
 * before it reaches logs, metrics or the status page. */
#include "scrub.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MIN_SECRET 6
#define MAX_SECRETS 512
/* Credentials after "Bearer " and the like are at least this long; shorter
 * words ("Basic realm") are prose. */
#define MIN_CREDENTIAL 8

static pthread_rwlock_t g_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct {
  char *v;
  size_t len;
} g_secrets[MAX_SECRETS];
static size_t g_n;

void scrub_add_secret(const char *value, size_t len) {
  if (value == NULL || len < MIN_SECRET) return;
  pthread_rwlock_wrlock(&g_lock);
  int known = 0;
  for (size_t i = 0; i < g_n && !known; i++)
    known = g_secrets[i].len == len && memcmp(g_secrets[i].v, value, len) == 0;
  char *copy = known || g_n == MAX_SECRETS ? NULL : malloc(len);
  if (copy) {
    memcpy(copy, value, len);
    g_secrets[g_n].v = copy;
    g_secrets[g_n].len = len;
    g_n++;
  }
  pthread_rwlock_unlock(&g_lock);
}

/* Replaces s[start, end) by the mask; *len and the NUL follow, cut to cap. */
static void replace(char *s, size_t *len, size_t cap, size_t start, size_t end) {
  size_t m = sizeof SCRUB_MASK - 1;
  size_t tail = *len - end;
  if (start + m >= cap) {
    memcpy(s + start, SCRUB_MASK, cap - 1 - start);
    *len = cap - 1;
  } else {
    if (start + m + tail >= cap) tail = cap - 1 - start - m;
    memmove(s + start + m, s + end, tail);
    memcpy(s + start, SCRUB_MASK, m);
    *len = start + m + tail;
  }
  s[*len] = '\0';
}

static int cred_char(unsigned char c) {
  return isalnum(c) || strchr("-._~+/=:%", c) != NULL;
}

/* "Bearer xyz...", "Basic xyz...", "Token xyz...": the credential goes. */
static void scrub_schemes(char *s, size_t *len, size_t cap) {
  static const char *const schemes[] = {"bearer ", "basic ", "token ", NULL};
  for (size_t k = 0; schemes[k]; k++) {
    size_t sl = strlen(schemes[k]);
    for (size_t i = 0; i + sl <= *len; i++) {
      if (strncasecmp(s + i, schemes[k], sl) != 0) continue;
      size_t a = i + sl;
      while (a < *len && s[a] == ' ') a++;
      size_t b = a;
      while (b < *len && cred_char((unsigned char)s[b])) b++;
      if (b - a >= MIN_CREDENTIAL &&
          !(b - a == sizeof SCRUB_MASK - 1 && memcmp(s + a, SCRUB_MASK, b - a) == 0)) {
        replace(s, len, cap, a, b);
      }
      i = a;
    }
  }
}

/* "Authorization: v", "authorization=v" and "\"authorization\": \"v\"". */
static void scrub_fields(char *s, size_t *len, size_t cap) {
  static const char *const names[] = {"authorization", "x-api-key", "cookie", NULL};
  for (size_t k = 0; names[k]; k++) {
    size_t nl = strlen(names[k]);
    for (size_t i = 0; i + nl <= *len; i++) {
      if (strncasecmp(s + i, names[k], nl) != 0) continue;
      size_t a = i + nl;
      if (a < *len && s[a] == '"') a++;
      while (a < *len && s[a] == ' ') a++;
      if (a >= *len || (s[a] != ':' && s[a] != '=')) continue;
      a++;
      while (a < *len && s[a] == ' ') a++;
      size_t b = a;
      if (a < *len && s[a] == '"') {
        b = ++a;
        while (b < *len && s[b] != '"') b += s[b] == '\\' && b + 1 < *len ? 2 : 1;
      } else {
        /* One word, or a scheme word and its credential. */
        while (b < *len && s[b] != ' ' && s[b] != ',' && s[b] != ';' && s[b] != '\r' &&
               s[b] != '\n')
          b++;
        size_t c = b;
        while (c < *len && s[c] == ' ') c++;
        int scheme_word = b > a && b - a <= 10 && c < *len;
        for (size_t j = a; j < b && scheme_word; j++) scheme_word = isalpha((unsigned char)s[j]);
        if (scheme_word) {
          b = c;
          while (b < *len && cred_char((unsigned char)s[b])) b++;
        }
      }
      if (b > a && !(b - a == sizeof SCRUB_MASK - 1 && memcmp(s + a, SCRUB_MASK, b - a) == 0))
        replace(s, len, cap, a, b);
      i = a;
    }
  }
}

size_t scrub_text(char *s, size_t cap) {
  if (s == NULL || cap == 0) return 0;
  size_t len = strnlen(s, cap - 1);
  s[len] = '\0';
  pthread_rwlock_rdlock(&g_lock);
  for (size_t k = 0; k < g_n; k++) {
    size_t from = 0;
    char *hit;
    while (from < len &&
           (hit = memmem(s + from, len - from, g_secrets[k].v, g_secrets[k].len)) != NULL) {
      size_t at = (size_t)(hit - s);
      replace(s, &len, cap, at, at + g_secrets[k].len);
      from = at + sizeof SCRUB_MASK - 1;
    }
  }
  pthread_rwlock_unlock(&g_lock);
  scrub_fields(s, &len, cap);
  scrub_schemes(s, &len, cap);
  return len;
}
