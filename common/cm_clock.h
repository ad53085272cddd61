/*
 * cm_clock: monotonic and wall clocks. Monotonic time is for durations and deadlines inside
 * one process; wall time (unix ms) is for timestamps that cross processes (deadlines on the
 * wire, `created` fields).
 */
#ifndef CM_CLOCK_H
#define CM_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds since an arbitrary start (CLOCK_MONOTONIC). */
int64_t cm_clock_mono_ms(void);
/* Monotonic nanoseconds. */
int64_t cm_clock_mono_ns(void);
/* Wall clock, unix epoch milliseconds (CLOCK_REALTIME). */
int64_t cm_clock_unix_ms(void);
/* Sleep for ms milliseconds (restarts on EINTR). */
void cm_clock_sleep_ms(int64_t ms);

#endif /* CM_CLOCK_H */
