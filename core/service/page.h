/* The status page: its views (overview, event detail, search) rendered into the embedded HTML
 * template (core/service/page/). */
#ifndef HOOKD_PAGE_H
#define HOOKD_PAGE_H

/*
 * The page is one binary's worth: core/service/page/status.html, status.css and
 * status.js are compiled in (cmake/embed.cmake), the template's {{name}}
 * places are filled here, and every value that comes from a sender, a
 * destination or the config is escaped on the way in. The only script is
 * status.js, allowed by its hash in the Content-Security-Policy; charts are
 * SVG drawn here. Loop thread (it reads the admin's live figures).
 */

#include <stddef.h>
#include <stdint.h>

#include "admin.h"
#include "dlq.h"

/* A growing output buffer; rc turns -1 when memory ran out. */
typedef struct page_buf {
  char *buf;
  size_t len, cap;
  int rc;
} page_buf;

/* "Content-Security-Policy: ...\r\n" for the page's answers. */
const char *page_csp_header(void);

/* GET /: readiness, counters, charts of the last hour, instances with their
 * state and controls, the last events, rejected requests and dead letters
 * (dead_error: why they could not be read, or NULL). */
void page_overview(page_buf *b, admin *a, const dlq_entry *dead, size_t n_dead,
                   const char *dead_error);
/* GET /event?source=S&id=I: rc 0 (d filled), 1 (no such event) or -1 (err). */
void page_event(page_buf *b, admin *a, const char *source, const char *id, int rc,
                const dlq_event_detail *d, const char *err);
/* GET /search?q=TEXT: rc 0 (rows, at most PAGE_SEARCH_SHOWN), -1 (err). */
#define PAGE_SEARCH_SHOWN 100
void page_search(page_buf *b, admin *a, const char *q, int rc, const dlq_event_row *rows, size_t n,
                 const char *err);

/* Shared with the JSON view. */
void page_iso_time(int64_t ms, char *out, size_t len);
/* text without the credentials it may echo, copied into buf. */
const char *page_scrubbed(const char *text, char *buf, size_t len);

#endif
