/* email_notify: RFC 5322/MIME message assembly — address checks, address headers, canonical text,
 * the multipart layout. */
#ifndef EMAIL_MIME_H
#define EMAIL_MIME_H

#include <stddef.h>
#include <stdint.h>
#include "hookd/helpers.h"

#define EMAIL_HEADER_WIDTH 78 /* RFC 5322 2.1.1: lines SHOULD NOT exceed 78 characters */

/* A plain addr-spec (local@domain) without comments, quotes or display
 * name: every character checked, so nothing that could end a header or an
 * SMTP command (CR, LF, spaces, '<', '>') can pass. Returns 1 or 0. */
int email_addr_ok(const char *a);

/* Trims blanks at both ends, in place; returns the new start. */
char *email_trim(char *s);

/* "Name: a@x, b@y" and CRLF, folded after a comma before column 78. Nothing
 * when n is 0. */
void email_mime_addr_header(hookd_buf *b, const char *name, char *const *addrs, size_t n);

/* s as canonical MIME text: every line break (LF, CR or CRLF) becomes CRLF
 * (RFC 2045 6.8 asks for it before a text part is base64-encoded). */
void email_mime_canonical_text(hookd_buf *out, const char *s, size_t n);

/* RFC 5322 3.3 date of Unix ms, in English whatever the locale:
 * "Tue, 01 Dec 2026 14:00:00 +0000". */
void email_mime_date(int64_t ms, char *out, size_t outlen);

/* A 128-bit digest of (a, b) as 32 hex digits and a NUL: stable and well
 * spread, not cryptographic (a Message-ID and a MIME boundary). */
void email_mime_digest(const char *a, const char *b, char out[33]);

/* One message. Strings are borrowed; to/cc are bare addresses. */
typedef struct email_message {
  const char *from; /* bare address; its domain names the Message-ID */
  char *const *to;
  size_t n_to;
  char *const *cc;
  size_t n_cc;
  const char *subject; /* UTF-8, one line (RFC 2047-encoded when needed) */
  const char *body;    /* UTF-8 text, any line ends */
  size_t body_len;
  const char *ics; /* a text/calendar part, or NULL */
  size_t ics_len;
  const char *ics_method; /* REQUEST or CANCEL, with ics */
  const char *digest;     /* email_mime_digest() of the delivery: Message-ID, boundary */
  int64_t date_ms;        /* the Date header */
} email_message;

/* Appends the whole message: headers, then one text/plain part, or with
 * ics a multipart/mixed of the text and the invitation; every part base64
 * with 76-character lines; CRLF throughout. Returns 0, or -1 out of memory. */
int email_mime_build(const email_message *m, hookd_buf *out);

#endif
