/* Clocks: wall-clock and monotonic time in milliseconds, for timestamps and deadlines. */
#ifndef HOOKD_CLOCK_H
#define HOOKD_CLOCK_H

#include <stdint.h>

/* Unix time in ms (CLOCK_REALTIME): what is stored and shown. */
int64_t clock_now_ms(void);
/* CLOCK_MONOTONIC in ms: for timeouts and intervals, which a change of the
 * wall clock must not stretch or shorten. */
int64_t clock_mono_ms(void);

#endif
