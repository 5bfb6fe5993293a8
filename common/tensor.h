/* Shared tensor vocabulary: element types and a plain host tensor descriptor.  Device
 * tensors and backend buffers are described by the op table in kernels/. */
#ifndef TSR_TENSOR_H
#define TSR_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum tsr_dtype {
    TSR_F32 = 0,
    TSR_F16,
    TSR_BF16,
    TSR_I8,
    TSR_U8,
    TSR_I16,
    TSR_I32,
    TSR_I64,
    TSR_F64,
    TSR_BOOL,
    TSR_DTYPE_COUNT
} tsr_dtype;

#define TSR_MAX_DIMS 8

size_t tsr_dtype_size(tsr_dtype t);
const char *tsr_dtype_name(tsr_dtype t);      /* safetensors spelling: "F32", "BF16", ... */
int tsr_dtype_from_name(const char *name);    /* -1 when unknown */

/* A view of host memory: shape in elements, row-major, innermost dim last. */
typedef struct tsr_tensor {
    tsr_dtype dtype;
    int n_dims;
    int64_t shape[TSR_MAX_DIMS];
    void *data;
} tsr_tensor;

int64_t tsr_tensor_numel(const tsr_tensor *t);

static inline float tsr_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalize */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t tsr_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* round to nearest even */
    return (uint16_t)h;
}

static inline float tsr_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t tsr_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* Convert n elements of F32/F16/BF16 (and the integer types) to f32. Returns 0, or -1 for a
 * type that has no float meaning. */
int tsr_convert_to_f32(tsr_dtype src_type, const void *src, float *dst, int64_t n);

#endif
