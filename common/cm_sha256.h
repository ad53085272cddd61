/*
 * cm_sha256: SHA-256 (FIPS 180-4) and a constant-time comparison, for API key hashing: the
 * gateway stores sha256(key) and compares a presented key's digest with cm_ct_equal, so
 * neither the key nor timing leaks through the comparison.
 *
 * Thread contract: a cm_sha256_ctx is one thread's; the one-shot functions are
 * reentrant.
 */
#ifndef CM_SHA256_H
#define CM_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

#define CM_SHA256_LEN 32
#define CM_SHA256_HEX_LEN 64 /* hex digits, without the NUL */

typedef struct cm_sha256_ctx {
    uint32_t state[8];
    uint64_t total_bytes;
    uint8_t block[64];
    size_t block_used;
} cm_sha256_ctx;

void cm_sha256_init(cm_sha256_ctx *ctx);
void cm_sha256_update(cm_sha256_ctx *ctx, const void *data, size_t n);
/* cm_sha256_final writes the digest; ctx must be re-initialised before reuse. */
void cm_sha256_final(cm_sha256_ctx *ctx, uint8_t out[CM_SHA256_LEN]);

/* One-shot digest of n bytes. */
void cm_sha256(const void *data, size_t n, uint8_t out[CM_SHA256_LEN]);
/* Lower-case hex of a digest, NUL-terminated (out: CM_SHA256_HEX_LEN + 1 bytes). */
void cm_sha256_hex(const uint8_t digest[CM_SHA256_LEN], char out[CM_SHA256_HEX_LEN + 1]);
/* Parses 64 hex digits (either case) into a digest; CM_ERR_INVALID on anything else. */
cm_err cm_sha256_from_hex(const char *hex, uint8_t out[CM_SHA256_LEN]);

/* cm_ct_equal returns 1 when the n bytes at a and b are equal, 0 otherwise; its running time
 * depends only on n, never on where the bytes differ. */
int cm_ct_equal(const void *a, const void *b, size_t n);

#endif /* CM_SHA256_H */
