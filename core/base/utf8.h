/* UTF-8 validity: what an event's id, type and order key must be, and the cleaning of texts
 * others wrote before a store that requires it. */
#ifndef HOOKD_UTF8_H
#define HOOKD_UTF8_H

/* 1 when the NUL-terminated s is valid UTF-8 (no overlong forms, no
 * surrogates, nothing past U+10FFFF). */
int utf8_valid(const char *s);

/* Makes s valid UTF-8 in place: each byte of a bad sequence becomes '?'
 * (texts others wrote: a destination's answer cut at a byte limit, a
 * plugin's message, a header value). */
void utf8_clean(char *s);

#endif
