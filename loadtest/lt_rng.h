/*
 * lt_rng: a small deterministic random generator for the load test (xoshiro256** seeded by
 * splitmix64). Deterministic so that one --seed reproduces the same prompts and the same
 * Poisson arrival schedule. Not for anything security related.
 *
 * Thread contract: an lt_rng is plain state; one owner at a time.
 */
#ifndef LT_RNG_H
#define LT_RNG_H

#include <stdint.h>

#include "cm_rng.h"

/* The project's shared generator (common/cm_rng.h) under the load test's name. */
typedef cm_rng lt_rng;

/* lt_rng_seed initialises rng from seed (any value, 0 included). */
void lt_rng_seed(lt_rng *rng, uint64_t seed);
/* lt_rng_next returns 64 random bits. */
uint64_t lt_rng_next(lt_rng *rng);
/* lt_rng_uniform returns a double in [0, 1). */
double lt_rng_uniform(lt_rng *rng);
/* lt_rng_range returns an integer in [lo, hi] (inclusive); lo when hi <= lo. */
uint32_t lt_rng_range(lt_rng *rng, uint32_t lo, uint32_t hi);
/*
 * lt_rng_exponential returns an exponentially distributed value with the given rate (events per
 * unit), i.e. mean 1/rate: the gap between two Poisson arrivals. rate must be > 0.
 */
double lt_rng_exponential(lt_rng *rng, double rate);

#endif /* LT_RNG_H */
