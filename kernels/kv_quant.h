/* Quantized KV cache (quant_policy 8 / 4, DESIGN.md "Types"): the byte layout of one
 * (block, KV head) slot that every backend's KV writer and attention share, and the CPU
 * reference of quantizing and dequantizing one row (kernels/cpu/cpu_kvq.c).
 *
 * A slot of a quantized layer part ([n_blocks][n_kv_head] slots, kernels/backend.h) is
 *   codes  [block_len][head_dim * bits / 8]   uint8; int4: two per byte, dim 2i in the low nibble
 *   params [block_len][n_groups][2]           f16 (scale, zero) of each token's row (int4 K: of
 *                                             each group of 32 channels, tsr_kvq_n_groups)
 * and a value is code * scale + zero, codes unsigned (0..255, 0..15).  Online quantization
 * (no calibration) takes each row's own min and max: zero = min, scale = (max - min) / (2^bits - 1),
 * both rounded to f16 before the codes are made, so the stored pair is exactly the one used.
 * Static parameters (`lite kv_qparams`, LMDeploy's zp = (min+max)/2 with signed codes) are
 * stored in this unsigned form too: zero = zp - 2^(bits-1) * scale. */
#ifndef TSR_KV_QUANT_H
#define TSR_KV_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* The largest head_dim the CPU quantized attention unpacks on its stack. */
#define TSR_KVQ_MAX_HEAD_DIM 1024

/* Bytes of one token's codes of one head. */
static inline size_t tsr_kvq_row_bytes(int64_t bits, int64_t head_dim) {
    return (size_t)(head_dim * bits / 8);
}

/* int4 K is quantized in groups of TSR_KVQ_K_GROUP channels of a head (after the rotation below),
 * each group with its own (scale, zero): a group's range is its own, not the whole row's.  V,
 * whose error is averaged over the attended tokens, keeps one pair per row.  Measured on the
 * default model's workspace (GPL-3, --ctx 512, README): int4 ppl +7.2% with one pair per K row,
 * +5.6% with groups of 32 (+4 bytes per token and head), +4.7% with groups of 16 (+12 bytes);
 * groups without the rotation: +9.6%. */
#define TSR_KVQ_K_GROUP 16
/* (scale, zero) pairs per token of one head: of K (v == 0) or V (v == 1). */
static inline int64_t tsr_kvq_n_groups(int64_t bits, int64_t head_dim, int v) {
    return bits == 4 && !v && head_dim > TSR_KVQ_K_GROUP && head_dim % TSR_KVQ_K_GROUP == 0 ? head_dim / TSR_KVQ_K_GROUP : 1;
}

/* Bytes of one (block, head) slot of K (v == 0) or V (v == 1): elem_size-byte elements for
 * policy 0, codes + params else (params [block_len][n_groups][2] f16 after the codes). */
static inline size_t tsr_kvq_slot_bytes(int64_t bits, int64_t block_len, int64_t head_dim, size_t elem_size, int v) {
    if (!bits) return (size_t)(block_len * head_dim) * elem_size;
    return (size_t)block_len *
           (tsr_kvq_row_bytes(bits, head_dim) + 2 * sizeof(uint16_t) * (size_t)tsr_kvq_n_groups(bits, head_dim, v));
}

/* Online int4 rotates each K and V row by the orthonormal Walsh-Hadamard transform H (head_dim a
 * power of two) before quantizing: a few outlier channels, which would take most of a 16-level
 * range, are spread over the whole row.  Attention is unchanged in value because H is
 * orthonormal and its own inverse: q . k = (H q) . (H k), and sum w (H v) = H (sum w v), so the
 * query is rotated once and the output rotated back once.  Not with static parameters (their
 * ranges are of unrotated channels) nor int8 (no gain worth it). */
static inline int tsr_kvq_rotated(int64_t bits, int64_t head_dim, const void *static_qp) {
    return bits == 4 && !static_qp && head_dim >= 2 && (head_dim & (head_dim - 1)) == 0;
}
/* x [n] = H x, n a power of two (orthonormal: scaled by 1/sqrt(n)). */
void tsr_kvq_hadamard(float *x, int64_t n);

/* quant_policy as a user gives it: 0, 8 or 4 (an error naming quant_policy else); on a backend
 * without quantized KV kernels (every one but "cpu" today) a non-zero policy is an error
 * naming the backend, never a silent 16-bit cache (backend_name NULL: the value only).  Returns
 * the bits (0, 8, 4) in *bits (may be NULL). */
tsr_status tsr_kvq_policy_check(int64_t policy, const char *backend_name, int64_t *bits);

/* Quantizes x [head_dim] into codes (tsr_kvq_row_bytes) and *scale, *zero (f16 bits): with
 * the row's own range when sz is NULL, else with sz[0] scale, sz[1] zero (static). */
void tsr_kvq_quantize_row(const float *x, int64_t head_dim, int64_t bits, const float *sz, uint8_t *codes,
                          uint16_t *scale, uint16_t *zero);
/* The same in n_groups equal groups of x, params [n_groups][2] (scale, zero) f16 bits; sz as above
 * (static: the same pair for every group). */
void tsr_kvq_quantize_row_g(const float *x, int64_t head_dim, int64_t bits, int64_t n_groups, const float *sz,
                            uint8_t *codes, uint16_t *params);
/* out [head_dim] = codes * scale + zero. */
void tsr_kvq_dequantize_row(const uint8_t *codes, int64_t head_dim, int64_t bits, uint16_t scale, uint16_t zero,
                            float *out);

/* LMDeploy's static (scale, zp) of signed codes -> this layout's unsigned (scale, zero). */
static inline float tsr_kvq_static_zero(float scale, float zp, int64_t bits) {
    return zp - (float)(1 << (bits - 1)) * scale;
}

#endif
