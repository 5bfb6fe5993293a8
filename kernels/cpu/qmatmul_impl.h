/* Internal to kernels/cpu/qmatmul*.c: the activation blocks the integer kernels read and the
 * per-implementation tables of row-dot functions.  The activation blocks are Tessera's own
 * (never stored in a file), so their scales are f32 and the integer sums that the offset and
 * min terms of the weight formats need are precomputed once per token. */
#ifndef TSR_CPU_QMATMUL_IMPL_H
#define TSR_CPU_QMATMUL_IMPL_H

#include <stdint.h>

#include "common/wtype.h"

/* Legacy formats (blocks of 32): x[i] ~ d * qs[i]; isum = sum of qs. */
typedef struct tsr__q8a32 {
    float d;
    int32_t isum;
    int8_t qs[32];
} tsr__q8a32;

/* k-quants (super-blocks of 256): x[i] ~ d * qs[i]; bsums[g] = sum of qs[16 g .. 16 g + 15]. */
typedef struct tsr__q8a256 {
    float d;
    int16_t bsums[16];
    int8_t qs[256];
} tsr__q8a256;

/* Activation layout a weight type asks for. */
typedef enum { TSR__ACT_F32, TSR__ACT_Q8A32, TSR__ACT_Q8A256 } tsr__act_kind;

/* Dot of one weight row (nb blocks; for the float types nb = elements) with one row of
 * activations in the layout the type asks for. */
typedef float (*tsr__qmm_dot_fn)(const uint8_t *w, const void *x, int64_t nb);

/* The same for n (1..TSR__QMM_NT) rows of activations at once, x_stride bytes apart, so the
 * SIMD kernels unpack each weight block once for all of them: y[j * ldy] for j < n. */
#define TSR__QMM_NT 4
typedef void (*tsr__qmm_dotn_fn)(const uint8_t *w, const void *x, size_t x_stride, int n, int64_t nb, float *y,
                                 int64_t ldy);

/* INT4G rows (common/wtype.h): each of n (1..TSR__QMM_NT) rows of activations x (tsr__q8a32
 * blocks, x_stride bytes apart) against one weight row of `cols` quants q, f16 group scales sc
 * and byte zero points zp (NULL: 8), groups of `group`; xg[j * n_groups + g] is sum over the
 * blocks b of group g of d_b * isum_b for activation row j (the zero-point term's sums):
 *   y[j * ldy] = sum_g d_g * (sum_{b in g} d_b * sum_i u_i q_i  -  z_g * xg[j][g]). */
typedef void (*tsr__qmm_i4_fn)(const uint8_t *q, const uint8_t *sc, const uint8_t *zp, int64_t cols, int64_t group,
                               const void *x, size_t x_stride, const float *xg, int n, float *y, int64_t ldy);

/* NULL where the implementation has no INT4G kernel. */
tsr__qmm_i4_fn tsr__qmm_i4_avx2(void);
tsr__qmm_i4_fn tsr__qmm_i4_vnni(void);

/* NULL where the implementation has no kernel for t. */
tsr__qmm_dotn_fn tsr__qmm_dot_avx2(tsr_wtype t);
tsr__qmm_dotn_fn tsr__qmm_dot_vnni(tsr_wtype t);

#endif
