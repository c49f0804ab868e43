/* Fatal signals: name the plugin instance and event a dying hookd was delivering. */
#ifndef HOOKD_CRASH_H
#define HOOKD_CRASH_H

#include <stddef.h>
#include <stdint.h>

/*
 * A plugin that crashes inside deliver() takes hookd with it (in thread
 * isolation). Before the process dies, the handler installed here writes one
 * line per delivery running on the crashing thread to stderr (the log), with
 * the instance and event id, using only async-signal-safe calls; then the
 * signal's default action runs (core dump, exit status). On the next start
 * the spool finds the attempt started and never settled and counts a crash.
 */

/* Installs the handler for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT.
 * Main thread, once. */
void crash_install(void);

/* A worker thread's alternate signal stack, so a stack overflow in a plugin
 * is reported too. Call at the start and at the end of the thread. */
void crash_thread_start(void);
void crash_thread_end(void);

/* The calling thread runs deliver() for (instance, event_id) now / no more.
 * The strings are copied (truncated to a fixed size); spool_id is the
 * delivery's id in the spool, written to the crash journal. */
void crash_enter(const char *instance, const char *event_id, uint64_t spool_id);
void crash_leave(void);

/* The crash journal, data_dir/crashed: the handler appends the spool id of
 * the delivery that faulted, so that recovery counts a crash for it alone
 * and not for the deliveries that merely ran beside it. A death without a
 * journal (kill -9, the OOM killer, power loss, a plugin calling exit)
 * leaves recovery to count every delivery that was running. */
void crash_journal_set(const char *data_dir);
/* Reads the journal of data_dir: returns 0 when there is none, 1 with the
 * ids (malloc'd, *n of them; may be 0) when there is one, -1 on error. */
int crash_journal_read(const char *data_dir, uint64_t **ids, size_t *n);
/* Removes it, once recovery committed what it said. */
void crash_journal_clear(const char *data_dir);

#endif
