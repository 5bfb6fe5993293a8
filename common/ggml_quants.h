/* ggml's tensor types (the GGUF spec's numbering) and their block formats: names, block sizes
 * and dequantization to f32 (common/ggml_quants.c).  Its own header so that the GGUF reader
 * (common/gguf.h) and the weight-type vocabulary (common/wtype.h) both build on it, not on
 * each other. */
#ifndef TSR_GGML_QUANTS_H
#define TSR_GGML_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* ggml tensor types (numbering as in the GGUF spec). */
typedef enum tsr_ggml_type {
    TSR_GGML_F32 = 0, TSR_GGML_F16 = 1, TSR_GGML_Q4_0 = 2, TSR_GGML_Q4_1 = 3,
    TSR_GGML_Q5_0 = 6, TSR_GGML_Q5_1 = 7, TSR_GGML_Q8_0 = 8, TSR_GGML_Q8_1 = 9,
    TSR_GGML_Q2_K = 10, TSR_GGML_Q3_K = 11, TSR_GGML_Q4_K = 12, TSR_GGML_Q5_K = 13,
    TSR_GGML_Q6_K = 14, TSR_GGML_Q8_K = 15, TSR_GGML_I8 = 24, TSR_GGML_I16 = 25,
    TSR_GGML_I32 = 26, TSR_GGML_I64 = 27, TSR_GGML_F64 = 28, TSR_GGML_BF16 = 30,
} tsr_ggml_type;

/* Every ggml type's name, those Tessera does not read too (IQ4_NL, TQ2_0, ...); "unknown" past them. */
const char *tsr_ggml_type_name(tsr_ggml_type t);
/* Elements per block and bytes per block; 0 for an unknown type. */
int64_t tsr_ggml_block_size(tsr_ggml_type t);
size_t tsr_ggml_type_size(tsr_ggml_type t);
/* Dequantize n elements (a multiple of the block size) of type t to f32. */
tsr_status tsr_ggml_dequantize(tsr_ggml_type t, const void *src, float *dst, int64_t n);

#endif
