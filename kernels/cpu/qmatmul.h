/* CPU matmul on typed weights (issue 12): y[n_tok][rows] = x[n_tok][cols] * W^T for W a
 * tsr_wtensor of any GGUF block type or f32/f16/bf16.  Block types quantize the activations on
 * the fly to 8 bits (blocks of 32 with one f32 scale for the legacy formats, blocks of 256
 * with 16-element sums for the k-quants) and take integer dot products; the float types read
 * their rows as they are and accumulate in f32.  Three implementations of the same math,
 * picked at run time: portable C, AVX2 (+FMA, F16C) and AVX-512 VNNI (256-bit vpdpbusd).
 * INT4G (the int4 group layout of AWQ/GPTQ/compressed-tensors checkpoints, common/wtype.h)
 * takes Q4_0's 8-bit activation blocks of 32 and folds each group's zero point in through
 * per-group activation sums.  tsr_qmatmul_ref is the oracle the tests compare them with:
 * dequantize each row with tsr_wtensor_dequantize_rows and dot in double precision.  Not yet wired into the op table (see
 * kernels/cpu/README.md for the plan). */
#ifndef TSR_CPU_QMATMUL_H
#define TSR_CPU_QMATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/wtype.h"
#include "kernels/cpu/threadpool.h"

typedef enum tsr_qmm_impl {
    TSR_QMM_AUTO = 0,   /* the fastest this CPU runs */
    TSR_QMM_PORTABLE,   /* plain C (the compiler may still vectorize it) */
    TSR_QMM_AVX2,
    TSR_QMM_AVX512VNNI,
} tsr_qmm_impl;

const char *tsr_qmm_impl_name(tsr_qmm_impl impl);
/* Whether this CPU (and this build) runs impl; AUTO and PORTABLE always do. */
int tsr_qmm_impl_available(tsr_qmm_impl impl);
/* What AUTO resolves to on this CPU. */
tsr_qmm_impl tsr_qmm_impl_best(void);

/* Whether tsr_qmatmul computes with this type (every GGUF type, the float types and INT4G). */
int tsr_qmatmul_supports(tsr_wtype t);

/* Bytes of scratch tsr_qmatmul needs for n_tok rows of activations (the quantized copy). */
size_t tsr_qmatmul_work_size(tsr_wtype t, int64_t n_tok, int64_t cols);

/* y[t * ldy + r] = sum_c x[t * cols + c] * W[r][c] for t < n_tok, r < w->rows.
 * pool may be NULL (the caller's thread only); work may be NULL (allocated and freed here) or
 * at least tsr_qmatmul_work_size bytes.  Fails with UNSUPPORTED for a type it does not compute
 * or an impl this CPU lacks, INVALID_ARG for a bad shape (ldy < rows, cols off the blocks). */
tsr_status tsr_qmatmul(tsr_cpu_pool *pool, const tsr_wtensor *w, const float *x, int64_t n_tok, float *y,
                       int64_t ldy, void *work, tsr_qmm_impl impl);

/* The reference twin: each weight row dequantized to f32, dot products in double. */
tsr_status tsr_qmatmul_ref(const tsr_wtensor *w, const float *x, int64_t n_tok, float *y, int64_t ldy);

#endif
