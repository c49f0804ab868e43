/* email_notify: header text per RFC 2047 — plain ASCII folded at spaces, or UTF-8 "B"
 * encoded-words. */
#include "email_rfc2047.h"

#include <string.h>

#include "email_mime.h"

int email_rfc2047_needed(const char *s) {
  size_t run = 0;
  if (strstr(s, "=?")) return 1;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p < 0x20 || *p >= 0x7f) return 1;
    run = *p == ' ' ? 0 : run + 1;
    if (run > EMAIL_HEADER_WIDTH - 10) return 1;
  }
  return 0;
}

/* Plain text folded before a space when the line would pass 78 columns; a
 * segment is a run of spaces and the word after it, so folding before it
 * keeps its leading space as the folding white space. */
static void put_plain(hookd_buf *b, const char *s, size_t col) {
  size_t n = strlen(s), start = col, i = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && s[j] == ' ') j++;
    while (j < n && s[j] != ' ') j++;
    size_t seg = j - i;
    if (i == 0 && s[0] != ' ') {
      hookd_buf_puts(b, " ");
      col++;
    } else if (col + seg > EMAIL_HEADER_WIDTH && col > start) {
      hookd_buf_puts(b, "\r\n");
      col = 0;
    }
    hookd_buf_add(b, s + i, seg);
    col += seg;
    i = j;
  }
}

/* Encoded-words of at most EMAIL_EW_BYTES bytes each, cut on character
 * boundaries; malformed input with no boundary in reach is cut where it is. */
static void put_encoded(hookd_buf *b, const char *s) {
  const unsigned char *u = (const unsigned char *)s;
  size_t n = strlen(s), i = 0;
  while (i < n) {
    size_t take = n - i < EMAIL_EW_BYTES ? n - i : EMAIL_EW_BYTES;
    size_t t = take;
    while (t > 0 && i + t < n && (u[i + t] & 0xC0) == 0x80) t--;
    if (t > 0) take = t;
    hookd_buf_puts(b, i == 0 ? " =?UTF-8?B?" : "\r\n =?UTF-8?B?");
    hookd_buf_base64(b, u + i, take, 0);
    hookd_buf_puts(b, "?=");
    i += take;
  }
}

void email_rfc2047_header(hookd_buf *b, const char *name, const char *text) {
  hookd_buf_puts(b, name);
  hookd_buf_puts(b, ":");
  if (email_rfc2047_needed(text))
    put_encoded(b, text);
  else
    put_plain(b, text, strlen(name) + 1);
  hookd_buf_puts(b, "\r\n");
}
