/*
 * cm_id: request ids, e.g. "req-8f3a1c9d0b7e4a21-2a".
 *
 * An id is <prefix>-<16 hex>-<counter in hex>. The 16 hex digits are a 64-bit mix of a random
 * seed (from getrandom at init) and the counter, so ids look random, never repeat within a
 * generator (the mix is a bijection of the counter) and are unlikely to collide across
 * processes; the counter suffix keeps ids of one process sortable by issue order in logs.
 *
 * Thread contract: cm_id_next may be called from any number of threads at once (one atomic
 * increment, no lock). cm_id_gen_init must finish before other threads use the generator.
 */
#ifndef CM_ID_H
#define CM_ID_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

#define CM_ID_PREFIX_MAX 16 /* prefix bytes, without the NUL */
/* Largest id cm_id_next writes, with its NUL: prefix, '-', 16 hex, '-', up to 16 hex. */
#define CM_ID_MAX (CM_ID_PREFIX_MAX + 1 + 16 + 1 + 16 + 1)
/* Longest id cm_id_valid accepts (ids that come from clients, e.g. X-Request-Id). */
#define CM_ID_EXTERNAL_MAX 64

typedef struct cm_id_gen {
    char prefix[CM_ID_PREFIX_MAX + 1];
    uint64_t seed;
    _Atomic uint64_t counter;
} cm_id_gen;

/*
 * cm_id_gen_init seeds g. prefix: 1..CM_ID_PREFIX_MAX bytes of [a-z0-9_] (e.g. "req",
 * "chatcmpl"); CM_ERR_INVALID otherwise. CM_ERR_IO if no randomness is available.
 */
cm_err cm_id_gen_init(cm_id_gen *g, const char *prefix);

/* cm_id_next writes the next id into out (NUL-terminated). CM_ERR_LIMIT if outlen is smaller
 * than the id (CM_ID_MAX always suffices); out is then "" when outlen > 0. */
cm_err cm_id_next(cm_id_gen *g, char *out, size_t outlen);

/* cm_id_random_hex fills out with 2*nbytes random hex digits and a NUL (outlen must be at
 * least 2*nbytes+1, else CM_ERR_LIMIT). CM_ERR_IO if no randomness is available. */
cm_err cm_id_random_hex(size_t nbytes, char *out, size_t outlen);

/* cm_id_valid returns 1 when s is an acceptable id from outside: 1..CM_ID_EXTERNAL_MAX bytes
 * of [A-Za-z0-9._:-]; 0 otherwise (so it is safe to log and echo unquoted). */
int cm_id_valid(const char *s);

#endif /* CM_ID_H */
