/* email_notify: header text per RFC 2047 — plain ASCII folded at spaces, or UTF-8 "B"
 * encoded-words. */
#ifndef EMAIL_RFC2047_H
#define EMAIL_RFC2047_H

#include "hookd/helpers.h"

/* Bytes of text per encoded-word: 39 bytes are 52 base64 characters, so
 * "=?UTF-8?B?...?=" stays within 64 and a folded line within the 76 that
 * RFC 2047 allows even after "Subject: ". */
#define EMAIL_EW_BYTES 39

/* Whether text must be encoded: any byte outside printable ASCII, text a
 * reader would take for an encoded-word ("=?"), or a word too long to fold
 * within 78 columns. */
int email_rfc2047_needed(const char *text);

/* Appends "Name: text" and CRLF: folded at spaces when plain, else a run of
 * encoded-words, each holding whole UTF-8 characters (RFC 2047 5), one per
 * folded line. */
void email_rfc2047_header(hookd_buf *b, const char *name, const char *text);

#endif
