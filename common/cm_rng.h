/*
 * cm_rng: the project's one small deterministic random generator: xoshiro256** with its
 * state spread from a 64-bit seed by splitmix64 (any seed, 0 included, gives a valid state).
 * The same seed always gives the same sequence on every machine, which is what seeded
 * sampling (worker) and reproducible load patterns (loadtest) rely on.
 *
 * Thread contract: a cm_rng is plain state with one owner at a time; no locking, no
 * allocation.
 */
#ifndef CM_RNG_H
#define CM_RNG_H

#include <stdint.h>

typedef struct cm_rng {
    uint64_t s[4];
} cm_rng;

/* cm_rng_seed initialises r from seed. */
void cm_rng_seed(cm_rng *r, uint64_t seed);
/* cm_rng_next returns 64 random bits and advances r. */
uint64_t cm_rng_next(cm_rng *r);
/* cm_rng_uniform returns a double in [0, 1) from the top 53 bits of cm_rng_next. */
double cm_rng_uniform(cm_rng *r);

#endif /* CM_RNG_H */
