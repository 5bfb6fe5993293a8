/* Group-quantized int4 HF checkpoints (issue 13), for the safetensors source (weights_hf.c):
 * reads config.json's `quantization_config`, refuses by name what Tessera does not run, finds a
 * linear layer's quantized tensors, dequantizes any of its rows straight from the documented
 * packing (the read() path: CUDA, --load-format dequantized, convert), and converts a whole
 * layer into common/wtype.h's INT4G layout (the raw() path the CPU computes with).
 *   AutoAWQ GEMM:  qweight int32 [in, out/8] (nibble p of a word holds output 8j + [0,2,4,6,1,3,5,7][p]),
 *                  qzeros int32 [in/g, out/8] (same order), scales f16 [in/g, out]; W = s (q - z).
 *   GPTQ:          qweight int32 [in/8, out] (nibble k: input 8i + k), qzeros int32 [groups, out/8]
 *                  (nibble k: output 8j + k; checkpoint_format "gptq" stores z - 1, "gptq_v2" z),
 *                  scales f16 [groups, out], g_idx int32 [in] (the group of each input channel).
 *   compressed-tensors pack-quantized: weight_packed int32 [out, in/8] (nibble k: input 8j + k,
 *                  stored q + 8), weight_scale [out, groups], weight_zero_point int32 [out/8, groups]
 *                  (asymmetric only; nibble k: output 8j + k, stored zp + 8), weight_g_idx optional.
 * A layer whose g_idx is not the plain i / g (GPTQ desc_act, actorder) has no contiguous groups:
 * it cannot be INT4G, and runs as a dequantized copy (logged once). */
#ifndef TSR_WEIGHTS_HF_QUANT_H
#define TSR_WEIGHTS_HF_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/safetensors.h"
#include "common/status.h"
#include "common/wtype.h"

typedef enum { TSR__HFQ_NONE = 0, TSR__HFQ_AWQ, TSR__HFQ_GPTQ, TSR__HFQ_CT } tsr__hfq_method;

typedef struct {
    tsr__hfq_method method;
    int64_t group;   /* group size along `in`; -1: one group per row (per channel) */
    bool sym;        /* compressed-tensors: no zero-point tensor (z = 8) */
    int zero_add;    /* GPTQ checkpoint_format "gptq": stored zero points are z - 1 */
    char what[80];   /* for logs: "AutoAWQ GEMM, 4-bit, group 128" */
} tsr__hfq;

/* The quantization of the checkpoint whose config.json is at path: NONE without a
 * quantization_config; UNSUPPORTED naming the method, version, format or bits it refuses. */
tsr_status tsr__hfq_parse(const char *config_json, tsr__hfq *q);

/* One quantized linear layer's tensors. */
typedef struct {
    const tsr_st_tensor *qw, *qz, *sc, *gidx;
    int64_t rows, cols, group, n_groups;  /* HF [out, in]; group resolved (per channel: cols) */
    bool plain_groups;                    /* no g_idx, or g_idx[i] == i / group everywhere */
} tsr__hfq_lin;

/* Finds the tensors of the layer whose dense weight would be `weight_name` ("...q_proj.weight");
 * *found is false (OK) when the checkpoint has the dense weight instead or nothing; FORMAT when a
 * tensor has the wrong dtype or shape. */
tsr_status tsr__hfq_find(const tsr__hfq *q, const tsr_safetensors *st, const char *weight_name, tsr__hfq_lin *l,
                         bool *found);

/* dst[j] = W[r][c0 + j] for j < n, in f32, straight from the checkpoint's packing. */
void tsr__hfq_read_row(const tsr__hfq *q, const tsr__hfq_lin *l, int64_t r, int64_t c0, int64_t n, float *dst);

/* The layer as INT4G in one malloc'd buffer (*buf, the caller frees it after the last use of
 * *out).  UNSUPPORTED when its groups are not contiguous or not whole runs of 32. */
tsr_status tsr__hfq_to_int4g(const tsr__hfq *q, const tsr__hfq_lin *l, tsr_wtensor *out, void **buf);

#endif
