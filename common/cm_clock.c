#include "cm_clock.h"

#include <errno.h>
#include <time.h>

static int64_t read_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t cm_clock_mono_ns(void) {
    return read_ns(CLOCK_MONOTONIC);
}

int64_t cm_clock_mono_ms(void) {
    return read_ns(CLOCK_MONOTONIC) / 1000000LL;
}

int64_t cm_clock_unix_ms(void) {
    return read_ns(CLOCK_REALTIME) / 1000000LL;
}

void cm_clock_sleep_ms(int64_t ms) {
    struct timespec req = {ms / 1000, (long)(ms % 1000) * 1000000L};
    struct timespec rem;
    /* nanosleep reports the remainder on EINTR so a signal does not cut the sleep short. */
    while (nanosleep(&req, &rem) != 0 && errno == EINTR) {
        req = rem;
    }
}
