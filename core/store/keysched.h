/* Key scheduler: per-order-key FIFOs of deliveries and a heap of the keys whose head may run, by
 * due time. */
#ifndef HOOKD_KEYSCHED_H
#define HOOKD_KEYSCHED_H

/*
 * Inside one lane, deliveries with the same order key form a FIFO; only its
 * head may run, and only one at a time, so events of one key never run
 * concurrently nor overtake each other, even while the head waits for a
 * retry. Runnable keys are picked by due time, then accept order (seq).
 * Unkeyed deliveries get a FIFO of their own each.
 *
 * Not thread-safe: the owner (a lane) holds its lock around every call.
 */

#include <stddef.h>
#include <stdint.h>

#include "event.h"

typedef struct keysched keysched;

keysched *keysched_new(void);
/* Frees the scheduler and every delivery it still holds (delivery_free). */
void keysched_free(keysched *ks);

/* Appends d at the end of its key's FIFO (taking it). Returns 0, or -1 when
 * out of memory (d is not taken). */
int keysched_push(keysched *ks, delivery *d);

/* Takes the head of the runnable key due first when it is due at now_ms:
 * the key is then busy until keysched_done or keysched_again. Returns NULL
 * when nothing is due; *next_ms is then the due time of the first runnable
 * key (INT64_MAX when none). */
delivery *keysched_take(keysched *ks, int64_t now_ms, int64_t *next_ms);

/* The head d taken by keysched_take is finished: it leaves its key (the
 * caller keeps d) and the next delivery of the key may run. */
void keysched_done(keysched *ks, delivery *d);
/* The head d taken by keysched_take runs again later, at d->due_ms; the
 * rest of its key waits behind it. */
void keysched_again(keysched *ks, delivery *d);

/* The head d taken by keysched_take leaves with the rest of its key (the
 * key waits on disk now). Returns the rest, in order, linked by ->next, for
 * the caller to take. */
delivery *keysched_evict(keysched *ks, delivery *d);

/* Deliveries held (busy heads included), and keys that have one. */
size_t keysched_count(const keysched *ks);

#endif
