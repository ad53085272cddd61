#include "lt_rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

void lt_rng_seed(lt_rng *rng, uint64_t seed) {
    /* splitmix64 spreads any seed (0 included) over the whole state, which must not be zero. */
    for (int i = 0; i < 4; i++) {
        rng->s[i] = splitmix64(&seed);
    }
}

uint64_t lt_rng_next(lt_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double lt_rng_uniform(lt_rng *rng) {
    /* The top 53 bits fill a double's mantissa exactly. */
    return (double)(lt_rng_next(rng) >> 11) * 0x1.0p-53;
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
