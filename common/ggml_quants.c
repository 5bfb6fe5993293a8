/* ggml block formats: names, block sizes and dequantization to f32.  GGUF files (llama.cpp's
 * format) store weights in these blocks; Tessera dequantizes them at load time (the CPU
 * backend computes in f32), so these loops are the whole cost of loading a quantized model and
 * are written as tight per-block loops with no per-element branches.  The layouts follow the
 * GGUF/ggml specification; tests/formats checks every type against python gguf's numpy
 * dequantizers on random blocks. */
#include "common/ggml_quants.h"

#include <stdint.h>
#include <string.h>

#include "common/tensor.h"

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h> /* hardware f16 -> f32 and vector dequantization where the build targets them */
#endif

#define TSR_QK 32    /* elements per block of the legacy formats */
#define TSR_QK_K 256 /* elements per super-block of the k-quants */

typedef struct {
    tsr_ggml_type type;
    const char *name;
    int64_t block;
    size_t size;
} tsr__ggml_type_info;

static const tsr__ggml_type_info tsr__types[] = {
    {TSR_GGML_F32, "F32", 1, 4},
    {TSR_GGML_F16, "F16", 1, 2},
    {TSR_GGML_Q4_0, "Q4_0", TSR_QK, 2 + 16},
    {TSR_GGML_Q4_1, "Q4_1", TSR_QK, 2 + 2 + 16},
    {TSR_GGML_Q5_0, "Q5_0", TSR_QK, 2 + 4 + 16},
    {TSR_GGML_Q5_1, "Q5_1", TSR_QK, 2 + 2 + 4 + 16},
    {TSR_GGML_Q8_0, "Q8_0", TSR_QK, 2 + 32},
    {TSR_GGML_Q8_1, "Q8_1", TSR_QK, 2 + 2 + 32}, /* d and s as f16 (current ggml); never stored in files */
    {TSR_GGML_Q2_K, "Q2_K", TSR_QK_K, 2 + 2 + TSR_QK_K / 16 + TSR_QK_K / 4},
    {TSR_GGML_Q3_K, "Q3_K", TSR_QK_K, 2 + TSR_QK_K / 4 + TSR_QK_K / 8 + 12},
    {TSR_GGML_Q4_K, "Q4_K", TSR_QK_K, 2 + 2 + 12 + TSR_QK_K / 2},
    {TSR_GGML_Q5_K, "Q5_K", TSR_QK_K, 2 + 2 + 12 + TSR_QK_K / 8 + TSR_QK_K / 2},
    {TSR_GGML_Q6_K, "Q6_K", TSR_QK_K, TSR_QK_K / 2 + TSR_QK_K / 4 + TSR_QK_K / 16 + 2},
    {TSR_GGML_Q8_K, "Q8_K", TSR_QK_K, 4 + TSR_QK_K + TSR_QK_K / 8},
    {TSR_GGML_I8, "I8", 1, 1},
    {TSR_GGML_I16, "I16", 1, 2},
    {TSR_GGML_I32, "I32", 1, 4},
    {TSR_GGML_I64, "I64", 1, 8},
    {TSR_GGML_F64, "F64", 1, 8},
    {TSR_GGML_BF16, "BF16", 1, 2},
};

static const tsr__ggml_type_info *tsr__type_info(tsr_ggml_type t) {
    for (size_t i = 0; i < sizeof tsr__types / sizeof tsr__types[0]; i++)
        if (tsr__types[i].type == t) return &tsr__types[i];
    return NULL;
}

/* ggml's types that Tessera does not read, by number (the GGUF spec's numbering, 4-5 and 31-33,
 * 36-38 retired), so that refusing one names it. */
static const struct {
    uint32_t type;
    const char *name;
} tsr__unread_types[] = {
    {4, "Q4_2"},       {5, "Q4_3"},       {16, "IQ2_XXS"},    {17, "IQ2_XS"},     {18, "IQ3_XXS"},
    {19, "IQ1_S"},     {20, "IQ4_NL"},    {21, "IQ3_S"},      {22, "IQ2_S"},      {23, "IQ4_XS"},
    {29, "IQ1_M"},     {31, "Q4_0_4_4"},  {32, "Q4_0_4_8"},   {33, "Q4_0_8_8"},   {34, "TQ1_0"},
    {35, "TQ2_0"},     {36, "IQ4_NL_4_4"}, {37, "IQ4_NL_4_8"}, {38, "IQ4_NL_8_8"}, {39, "MXFP4"},
    {40, "NVFP4"},     {41, "Q1_0"},
};

const char *tsr_ggml_type_name(tsr_ggml_type t) {
    const tsr__ggml_type_info *ti = tsr__type_info(t);
    if (ti) return ti->name;
    for (size_t i = 0; i < sizeof tsr__unread_types / sizeof tsr__unread_types[0]; i++)
        if (tsr__unread_types[i].type == (uint32_t)t) return tsr__unread_types[i].name;
    return "unknown";
}

int64_t tsr_ggml_block_size(tsr_ggml_type t) {
    const tsr__ggml_type_info *ti = tsr__type_info(t);
    return ti ? ti->block : 0;
}

size_t tsr_ggml_type_size(tsr_ggml_type t) {
    const tsr__ggml_type_info *ti = tsr__type_info(t);
    return ti ? ti->size : 0;
}

/* Blocks are byte-packed (no alignment), so every multi-byte field is read with memcpy. */
static inline float tsr__half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return tsr_f16_to_f32(h);
#endif
}

static void tsr__deq_q4_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 18, y += TSR_QK) {
        const float d = tsr__half(b);
        const uint8_t *qs = b + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((int)(qs[j] & 0x0f) - 8) * d;
            y[j + 16] = (float)((int)(qs[j] >> 4) - 8) * d;
        }
    }
}

/* The block's bytes are copied to a local array first: a uint8_t pointer may alias the float
 * output, and with it the compiler keeps every load in order and does not vectorize (the copy
 * made Q4_1 4x faster, Q8_0 3x, on AVX-512). */
static void tsr__deq_q4_1(const uint8_t *b, float *y, int64_t nb) {
#if defined(__AVX2__) && defined(__FMA__)
    /* the prefill path dequantizes every weight each step: 16 bytes -> 32 floats in registers */
    const __m128i mask = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < nb; i++, b += 20, y += TSR_QK) {
        const __m256 d = _mm256_set1_ps(tsr__half(b)), m = _mm256_set1_ps(tsr__half(b + 2));
        const __m128i q = _mm_loadu_si128((const __m128i *)(b + 4));
        const __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        _mm256_storeu_ps(y, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), d, m));
        _mm256_storeu_ps(y + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), d, m));
        _mm256_storeu_ps(y + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), d, m));
        _mm256_storeu_ps(y + 24, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), d, m));
    }
    return;
#endif
    for (int64_t i = 0; i < nb; i++, b += 20, y += TSR_QK) {
        const float d = tsr__half(b), m = tsr__half(b + 2);
        uint8_t qs[16];
        memcpy(qs, b + 4, 16);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(qs[j] & 0x0f) * d + m;
            y[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

static void tsr__deq_q5_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 22, y += TSR_QK) {
        const float d = tsr__half(b);
        uint32_t qh;
        memcpy(&qh, b + 2, 4);
        const uint8_t *qs = b + 6;
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (float)(((qs[j] & 0x0f) | h0) - 16) * d;
            y[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
        }
    }
}

static void tsr__deq_q5_1(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 24, y += TSR_QK) {
        const float d = tsr__half(b), m = tsr__half(b + 2);
        uint32_t qh;
        memcpy(&qh, b + 4, 4);
        const uint8_t *qs = b + 8;
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (float)((qs[j] & 0x0f) | h0) * d + m;
            y[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
        }
    }
}

static void tsr__deq_q8_0(const uint8_t *b, float *y, int64_t nb) {
#if defined(__AVX2__)
    for (int64_t i = 0; i < nb; i++, b += 34, y += TSR_QK) {
        const __m256 d = _mm256_set1_ps(tsr__half(b));
        for (int k = 0; k < 4; k++) {
            const __m128i q = _mm_loadl_epi64((const __m128i *)(b + 2 + 8 * k));
            _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
        }
    }
    return;
#endif
    for (int64_t i = 0; i < nb; i++, b += 34, y += TSR_QK) {
        const float d = tsr__half(b);
        int8_t qs[TSR_QK];
        memcpy(qs, b + 2, TSR_QK);
        for (int j = 0; j < TSR_QK; j++) y[j] = (float)qs[j] * d;
    }
}

/* Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2 bits), d, dmin. */
static void tsr__deq_q2_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 84) {
        const uint8_t *sc = b, *q = b + 16;
        const float d = tsr__half(b + 80), dmin = tsr__half(b + 82);
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int k = 0; k < 2; k++, is++) {
                    const float dl = d * (float)(sc[is] & 0x0f), ml = dmin * (float)(sc[is] >> 4);
                    const uint8_t *qq = q + 16 * k;
                    for (int l = 0; l < 16; l++) *y++ = dl * (float)((qq[l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* Q3_K: hmask[32], qs[64], 12 bytes of 6-bit scales, d.  Element e of a 128 half c, group s
 * (0..3) and lane l takes 2 low bits from qs[32c + l] >> 2s and its high bit, inverted, from
 * bit (4c + s) of hmask[l]. */
static void tsr__deq_q3_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 110) {
        const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
        const float d = tsr__half(b + 108);
        float dl[16];
        for (int k = 0; k < 16; k++) {
            const int lo = k < 8 ? (sc[k] & 0x0f) : (sc[k - 8] >> 4);
            const int hi = (sc[8 + (k & 3)] >> (2 * (k >> 2))) & 3;
            dl[k] = d * (float)((lo | (hi << 4)) - 32);
        }
        for (int c = 0; c < 2; c++) {
            for (int s = 0; s < 4; s++) {
                const int bit = 4 * c + s;
                const uint8_t *q = qs + 32 * c;
                for (int l = 0; l < 32; l++) {
                    const int v = (int)((q[l] >> (2 * s)) & 3) - (((hm[l] >> bit) & 1) ? 0 : 4);
                    y[l] = dl[(c * 128 + s * 32 + l) >> 4] * (float)v;
                }
                y += 32;
            }
        }
    }
}

/* The 6-bit scale/min pairs of Q4_K and Q5_K, 8 of each packed in 12 bytes. */
static inline void tsr__scale_min_k4(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void tsr__deq_q4_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 144) {
        const float d = tsr__half(b), dmin = tsr__half(b + 2);
        const uint8_t *scales = b + 4, *q = b + 16;
        for (int c = 0; c < 4; c++, q += 32) {
            int sc, m;
            tsr__scale_min_k4(2 * c, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            tsr__scale_min_k4(2 * c + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) y[l] = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++) y[l + 32] = d2 * (float)(q[l] >> 4) - m2;
            y += 64;
        }
    }
}

static void tsr__deq_q5_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 176) {
        const float d = tsr__half(b), dmin = tsr__half(b + 2);
        const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
        for (int c = 0; c < 4; c++, ql += 32) {
            int sc, m;
            tsr__scale_min_k4(2 * c, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            tsr__scale_min_k4(2 * c + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            const int b1 = 2 * c, b2 = 2 * c + 1;
            for (int l = 0; l < 32; l++)
                y[l] = d1 * (float)((ql[l] & 0x0f) | (((qh[l] >> b1) & 1) << 4)) - m1;
            for (int l = 0; l < 32; l++)
                y[l + 32] = d2 * (float)((ql[l] >> 4) | (((qh[l] >> b2) & 1) << 4)) - m2;
            y += 64;
        }
    }
}

/* Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], d. */
static void tsr__deq_q6_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = tsr__half(b + 208);
        for (int n = 0; n < 2; n++, ql += 64, qh += 32, sc += 8, y += 128) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int)((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = (int)((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

static void tsr__deq_q8_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 292, y += TSR_QK_K) {
        float d;
        memcpy(&d, b, 4);
        const int8_t *qs = (const int8_t *)(b + 4);
        for (int j = 0; j < TSR_QK_K; j++) y[j] = d * (float)qs[j];
    }
}

tsr_status tsr_ggml_dequantize(tsr_ggml_type t, const void *src, float *dst, int64_t n) {
    const int64_t bs = tsr_ggml_block_size(t);
    if (bs == 0) return tsr_errorf(TSR_ERR_UNSUPPORTED, "ggml type %d is unknown", (int)t);
    if (n < 0 || n % bs != 0)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "dequantize %s: %lld elements is not a multiple of the block size %lld",
                          tsr_ggml_type_name(t), (long long)n, (long long)bs);
    const uint8_t *b = src;
    const int64_t nb = n / bs;
    switch (t) {
    case TSR_GGML_F32: memcpy(dst, src, (size_t)n * 4); break;
    case TSR_GGML_F16: {
        int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(b + 2 * i))));
#endif
        for (; i < n; i++) dst[i] = tsr__half(b + 2 * i);
        break;
    }
    case TSR_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, b + 2 * i, 2);
            dst[i] = tsr_bf16_to_f32(h);
        }
        break;
    case TSR_GGML_F64:
        for (int64_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, b + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    case TSR_GGML_I8:
        for (int64_t i = 0; i < n; i++) dst[i] = (float)(int8_t)b[i];
        break;
    case TSR_GGML_I16:
        for (int64_t i = 0; i < n; i++) {
            int16_t v;
            memcpy(&v, b + 2 * i, 2);
            dst[i] = (float)v;
        }
        break;
    case TSR_GGML_I32:
        for (int64_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, b + 4 * i, 4);
            dst[i] = (float)v;
        }
        break;
    case TSR_GGML_I64:
        for (int64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, b + 8 * i, 8);
            dst[i] = (float)v;
        }
        break;
    case TSR_GGML_Q4_0: tsr__deq_q4_0(b, dst, nb); break;
    case TSR_GGML_Q4_1: tsr__deq_q4_1(b, dst, nb); break;
    case TSR_GGML_Q5_0: tsr__deq_q5_0(b, dst, nb); break;
    case TSR_GGML_Q5_1: tsr__deq_q5_1(b, dst, nb); break;
    case TSR_GGML_Q8_0: tsr__deq_q8_0(b, dst, nb); break;
    case TSR_GGML_Q2_K: tsr__deq_q2_k(b, dst, nb); break;
    case TSR_GGML_Q3_K: tsr__deq_q3_k(b, dst, nb); break;
    case TSR_GGML_Q4_K: tsr__deq_q4_k(b, dst, nb); break;
    case TSR_GGML_Q5_K: tsr__deq_q5_k(b, dst, nb); break;
    case TSR_GGML_Q6_K: tsr__deq_q6_k(b, dst, nb); break;
    case TSR_GGML_Q8_K: tsr__deq_q8_k(b, dst, nb); break;
    default:
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "dequantizing %s is not supported", tsr_ggml_type_name(t));
    }
    return TSR_OK;
}
