/* The quantized KV cache's policy check and its per-row reference quantizer (kernels/kv_quant.h);
 * the CPU backend's writer and attention (kernels/cpu/cpu_kvq.c) are built on these rows. */
#include "kernels/kv_quant.h"

#include <math.h>
#include <string.h>

#include "common/tensor.h"

tsr_status tsr_kvq_policy_check(int64_t policy, const char *backend_name, int64_t *bits) {
    if (policy != 0 && policy != 8 && policy != 4)
        return tsr_errorf(TSR_ERR_INVALID_ARG,
                          "quant_policy %lld: must be 0 (KV of the compute type), 8 (int8 KV) or 4 (int4 KV)",
                          (long long)policy);
    if (policy && backend_name && strcmp(backend_name, "cpu"))
        return tsr_errorf(TSR_ERR_UNSUPPORTED,
                          "quant_policy %lld (int%lld KV) is not supported on the %s backend: it has no quantized "
                          "KV kernels yet; use quant_policy 0 there (or --backend cpu)",
                          (long long)policy, (long long)policy, backend_name);
    if (bits) *bits = policy;
    return TSR_OK;
}

/* f16 keeps |x| <= 65504; a cache value past that is clamped rather than made infinite. */
static uint16_t tsr__kvq_f16(float x) {
    if (x > 65504.f) x = 65504.f;
    if (x < -65504.f) x = -65504.f;
    return tsr_f32_to_f16(x);
}

void tsr_kvq_quantize_row(const float *x, int64_t hd, int64_t bits, const float *sz, uint8_t *codes,
                          uint16_t *scale, uint16_t *zero) {
    const int qmax = (1 << bits) - 1;
    float s, z;
    if (sz) {
        s = sz[0];
        z = sz[1];
    } else {
        float mn = x[0], mx = x[0];
        for (int64_t i = 1; i < hd; i++) {
            mn = x[i] < mn ? x[i] : mn;
            mx = x[i] > mx ? x[i] : mx;
        }
        s = (mx - mn) / (float)qmax;
        z = mn;
        if (bits == 4) {
            /* 16 levels: a slightly narrower range often costs a few clipped values less than it
             * saves on every other one; keep the range of least squared error */
            float best = INFINITY, mid = 0.5f * (mn + mx), half = 0.5f * (mx - mn);
            for (int r = 0; r < 5; r++) {
                float f = 1.0f - 0.075f * (float)r, ss = 2 * f * half / (float)qmax, zz = mid - f * half;
                float inv = ss > 0 ? 1.f / ss : 0.f, err = 0;
                for (int64_t i = 0; i < hd; i++) {
                    float c = (x[i] - zz) * inv;
                    c = c <= 0 ? 0 : c >= (float)qmax ? (float)qmax : rintf(c);
                    float d = c * ss + zz - x[i];
                    err += d * d;
                }
                if (err < best) {
                    best = err;
                    s = ss;
                    z = zz;
                }
            }
        }
    }
    /* the codes are made with the pair as stored, so dequantizing sees no second rounding */
    *scale = tsr__kvq_f16(s);
    *zero = tsr__kvq_f16(z);
    s = tsr_f16_to_f32(*scale);
    z = tsr_f16_to_f32(*zero);
    const float inv = s > 0 ? 1.f / s : 0.f;
    if (bits == 4) memset(codes, 0, tsr_kvq_row_bytes(bits, hd));
    for (int64_t i = 0; i < hd; i++) {
        float f = (x[i] - z) * inv;
        int q = f <= 0 ? 0 : f >= (float)qmax ? qmax : (int)lrintf(f);
        if (bits == 8) codes[i] = (uint8_t)q;
        else codes[i / 2] |= (uint8_t)(q << (4 * (i & 1)));
    }
}

void tsr_kvq_quantize_row_g(const float *x, int64_t hd, int64_t bits, int64_t ng, const float *sz, uint8_t *codes,
                            uint16_t *params) {
    const int64_t gl = hd / ng;
    TSR_ASSERT(ng >= 1 && hd % ng == 0 && gl % 2 == 0);
    for (int64_t g = 0; g < ng; g++)
        tsr_kvq_quantize_row(x + g * gl, gl, bits, sz, codes + tsr_kvq_row_bytes(bits, g * gl), &params[2 * g],
                             &params[2 * g + 1]);
}

void tsr_kvq_dequantize_row(const uint8_t *codes, int64_t hd, int64_t bits, uint16_t scale, uint16_t zero,
                            float *out) {
    const float s = tsr_f16_to_f32(scale), z = tsr_f16_to_f32(zero);
    for (int64_t i = 0; i < hd; i++) {
        int q = bits == 8 ? codes[i] : (codes[i / 2] >> (4 * (i & 1))) & 15;
        out[i] = (float)q * s + z;
    }
}

void tsr_kvq_hadamard(float *x, int64_t n) {
    for (int64_t h = 1; h < n; h *= 2)
        for (int64_t i = 0; i < n; i += 2 * h)
            for (int64_t j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    const float s = 1.0f / sqrtf((float)n);
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}
