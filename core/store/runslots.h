/* Running slots: what each delivery worker is running now, in a small file mapped into memory that
 * outlives a crash of hookd. */
#ifndef HOOKD_RUNSLOTS_H
#define HOOKD_RUNSLOTS_H

/*
 * data_dir/running holds one 16-byte slot per worker thread: the spool id of
 * the delivery it runs and the attempt number, written before deliver() is
 * called and cleared when it returns. The file is mapped shared, so a store
 * into it is in the kernel's page cache at once: when hookd dies (a plugin's
 * segfault, kill -9, the OOM killer) the next start finds exactly what was
 * running, at the cost of one memory store per delivery instead of a
 * committed (and fsynced) write. What a power loss takes with it is only a
 * crash count that is not made: the delivery runs again all the same.
 */

#include <stddef.h>
#include <stdint.h>

typedef struct runslots runslots;

typedef struct runslot_entry {
  uint64_t spool_id;
  uint32_t attempt;
} runslot_entry;

/* Opens (creating) data_dir/running with room for n slots. What a previous
 * process left in it stays until runslots_clear. Returns NULL with err. */
runslots *runslots_open(const char *data_dir, size_t n, char *err, size_t errlen);
void runslots_close(runslots *rs);

/* The slots a previous process left set: at most max of them into out;
 * returns how many. */
size_t runslots_left(const runslots *rs, runslot_entry *out, size_t max);
/* Forgets them (after recovery counted them). */
void runslots_clear(runslots *rs);

/* The calling thread runs attempt `attempt` of delivery spool_id now
 * (spool_id 0: nothing). A thread gets a slot at its first call and gives
 * it back when it exits. Any thread; never blocks. */
void runslots_set(runslots *rs, uint64_t spool_id, uint32_t attempt);
/* The calling thread gives its slot back now, not when it exits: a worker
 * calls it before it tells the dispatcher it is gone, since the key's
 * destructor runs after that, when the spool (and its slots) may be freed
 * already. Any thread. */
void runslots_thread_done(void);

#endif
