/* dtype table and conversions (see tensor.h). */
#include "common/tensor.h"

#include <string.h>

static const struct { const char *name; size_t size; } tsr__dtypes[TSR_DTYPE_COUNT] = {
    [TSR_F32] = {"F32", 4}, [TSR_F16] = {"F16", 2}, [TSR_BF16] = {"BF16", 2},
    [TSR_I8] = {"I8", 1},   [TSR_U8] = {"U8", 1},   [TSR_I16] = {"I16", 2},
    [TSR_I32] = {"I32", 4}, [TSR_I64] = {"I64", 8}, [TSR_F64] = {"F64", 8},
    [TSR_BOOL] = {"BOOL", 1},
};

size_t tsr_dtype_size(tsr_dtype t) { return (unsigned)t < TSR_DTYPE_COUNT ? tsr__dtypes[t].size : 0; }
const char *tsr_dtype_name(tsr_dtype t) { return (unsigned)t < TSR_DTYPE_COUNT ? tsr__dtypes[t].name : "?"; }

int tsr_dtype_from_name(const char *name) {
    for (int i = 0; i < TSR_DTYPE_COUNT; i++)
        if (!strcmp(name, tsr__dtypes[i].name)) return i;
    return -1;
}

int64_t tsr_tensor_numel(const tsr_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->shape[i];
    return n;
}

int tsr_convert_to_f32(tsr_dtype src_type, const void *src, float *dst, int64_t n) {
    switch (src_type) {
    case TSR_F32: memcpy(dst, src, (size_t)n * 4); return 0;
    case TSR_F16: { const uint16_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = tsr_f16_to_f32(s[i]); return 0; }
    case TSR_BF16: { const uint16_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = tsr_bf16_to_f32(s[i]); return 0; }
    case TSR_F64: { const double *s = src; for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i]; return 0; }
    case TSR_I8: { const int8_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = s[i]; return 0; }
    case TSR_U8: { const uint8_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = s[i]; return 0; }
    case TSR_I16: { const int16_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = s[i]; return 0; }
    case TSR_I32: { const int32_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i]; return 0; }
    default: return -1;
    }
}
