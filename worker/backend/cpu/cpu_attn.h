/*
 * cpu_attn: the CPU backend's attention kernels over one block of its paged KV cache, for the
 * query heads of one GQA group at once (the block's keys and values are loaded once for all
 * of them).
 *
 * Block layouts, per layer, block and KV head (bt = block_tokens, hd = head_dim), f16 or f32:
 *   K: (hd, bt), transposed: element d of key j at d * bt + j. Consecutive keys are one
 *      vector, so a score is a chain of multiply-adds with no horizontal sum.
 *   V: (bt, hd): value j at j * hd.
 * Vector kernels (AVX2, AVX-512) serve f16 blocks whose bt (scores) or hd (values) is a
 * multiple of the vector width; everything else takes the portable loops. A head's arithmetic
 * does not depend on how many heads are computed with it, nor on the batch.
 */
#ifndef WK_CPU_ATTN_H
#define WK_CPU_ATTN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* s[h * s_stride + j] = scale * dot(q + h * hd, key j) for h < nh, j < n (n <= bt): the
 * scores of nh query heads (q: (nh, hd)) against the first n keys of a K block. Writes
 * nothing past key n. */
void wk_cpu_attn_scores(bool f16, const float *q, int nh, int hd, const void *k, int bt, int n,
                        float scale, float *s, size_t s_stride);

/* out[h * hd + d] += sum over j < n of p[h * p_stride + j] * value j [d], for h < nh: the
 * first n values of a V block weighted by each head's probabilities (out: (nh, hd)). Terms
 * are added in order of j. */
void wk_cpu_attn_values(bool f16, const float *p, size_t p_stride, int nh, int hd, const void *v,
                        int n, float *out);

#endif /* WK_CPU_ATTN_H */
