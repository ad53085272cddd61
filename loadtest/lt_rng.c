#include "lt_rng.h"

#include <math.h>

void lt_rng_seed(lt_rng *rng, uint64_t seed) {
    cm_rng_seed(rng, seed);
}

uint64_t lt_rng_next(lt_rng *rng) {
    return cm_rng_next(rng);
}

double lt_rng_uniform(lt_rng *rng) {
    return cm_rng_uniform(rng);
}

uint32_t lt_rng_range(lt_rng *rng, uint32_t lo, uint32_t hi) {
    if (hi <= lo) {
        return lo;
    }
    uint64_t span = (uint64_t)hi - lo + 1;
    return lo + (uint32_t)(lt_rng_next(rng) % span);
}

double lt_rng_exponential(lt_rng *rng, double rate) {
    /* 1 - u is in (0, 1], so the log is finite. */
    double u = 1.0 - lt_rng_uniform(rng);
    return -log(u) / rate;
}
