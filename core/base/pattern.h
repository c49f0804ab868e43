/* Event type patterns ("a.b.c", "a.*.c", "a.**"): checking and matching, for routes and filters. */
#ifndef HOOKD_PATTERN_H
#define HOOKD_PATTERN_H

/* A pattern is dot-separated segments: a literal, "*" (exactly one
 * segment) or "**" (one or more, last only). Routes, `hookd replay
 * --type`, the status page's back-fill and plugins' own maps use them. */

/* NULL when pattern is well formed, else a short static reason ("empty
 * segment", "'**' must be the last segment", ...). */
const char *pattern_problem(const char *pattern);

/* pattern_problem, and sets *wildcard when the pattern has a "*" or "**"
 * segment (the router indexes the others by their text). */
const char *pattern_check(const char *pattern, int *wildcard);

/* Matches one pattern against a type, checking the pattern first. Returns
 * 1 or 0 (also for a malformed pattern or a NULL). */
int pattern_match(const char *pattern, const char *type);

/* The same for a pattern already known to be well formed: the router's
 * per-request path. */
int pattern_match_valid(const char *pattern, const char *type);

#endif
