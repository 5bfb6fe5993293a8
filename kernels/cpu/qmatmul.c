/* Typed-weight matmul on the CPU: activation quantization, the portable C kernels, the reference
 * twin and the run-time choice of implementation (qmatmul.h says what each computes).  The
 * portable kernels are the readable statement of the integer math that qmatmul_simd.inc
 * vectorizes: every weight format is reduced to unsigned quants u, a per-block (or per-16)
 * integer scale and an offset or min, so that
 *   sum_i w_i x_i = dx * (d * (sum_g sc_g sum_{i in g} u_i q_i - off * sum_g sc_g bsum_g)
 *                         - dmin * sum_g m_g bsum_g)
 * with q the 8-bit activations and bsum their per-group sums. */
#include "kernels/cpu/qmatmul.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/tensor.h"
#include "kernels/cpu/qmatmul_impl.h"

#define TSR__QK 32
#define TSR__QK_K 256

static inline float tsr__h(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return tsr_f16_to_f32(v);
}

/* ---- activations ---- */

static tsr__act_kind tsr__act_kind_of(tsr_wtype t) {
    switch (t) {
    case TSR_WTYPE_Q4_0: case TSR_WTYPE_Q4_1: case TSR_WTYPE_Q5_0: case TSR_WTYPE_Q5_1:
    case TSR_WTYPE_Q8_0: case TSR_WTYPE_INT4G: return TSR__ACT_Q8A32;
    case TSR_WTYPE_Q2_K: case TSR_WTYPE_Q3_K: case TSR_WTYPE_Q4_K: case TSR_WTYPE_Q5_K:
    case TSR_WTYPE_Q6_K: case TSR_WTYPE_Q8_K: return TSR__ACT_Q8A256;
    default: return TSR__ACT_F32;
    }
}

/* Symmetric round-to-nearest with the block's absolute maximum at +-127. */
static float tsr__quant_block(const float *x, int n, int8_t *q) {
    float amax = 0;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    const float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
    for (int i = 0; i < n; i++) q[i] = (int8_t)lrintf(x[i] * id);
    return d;
}

static void tsr__quant_q8a32(const float *x, int64_t cols, tsr__q8a32 *out) {
    for (int64_t b = 0; b < cols / TSR__QK; b++, x += TSR__QK) {
        out[b].d = tsr__quant_block(x, TSR__QK, out[b].qs);
        int32_t s = 0;
        for (int i = 0; i < TSR__QK; i++) s += out[b].qs[i];
        out[b].isum = s;
    }
}

static void tsr__quant_q8a256(const float *x, int64_t cols, tsr__q8a256 *out) {
    for (int64_t b = 0; b < cols / TSR__QK_K; b++, x += TSR__QK_K) {
        out[b].d = tsr__quant_block(x, TSR__QK_K, out[b].qs);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += out[b].qs[16 * g + i];
            out[b].bsums[g] = (int16_t)s;
        }
    }
}

/* ---- portable kernels: legacy formats ---- */

static float tsr__dot_q4_0(const uint8_t *w, const void *xv, int64_t nb) {
    const tsr__q8a32 *x = xv;
    float acc = 0;
    for (int64_t i = 0; i < nb; i++, w += 18) {
        const uint8_t *qs = w + 2;
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += ((qs[j] & 15) - 8) * x[i].qs[j] + ((qs[j] >> 4) - 8) * x[i].qs[j + 16];
        acc += tsr__h(w) * x[i].d * (float)s;
    }
    return acc;
}

static float tsr__dot_q4_1(const uint8_t *w, const void *xv, int64_t nb) {
    const tsr__q8a32 *x = xv;
    float acc = 0;
    for (int64_t i = 0; i < nb; i++, w += 20) {
        const uint8_t *qs = w + 4;
        int s = 0;
        for (int j = 0; j < 16; j++) s += (qs[j] & 15) * x[i].qs[j] + (qs[j] >> 4) * x[i].qs[j + 16];
        acc += tsr__h(w) * x[i].d * (float)s + tsr__h(w + 2) * x[i].d * (float)x[i].isum;
    }
    return acc;
}

/* Q5: the fifth bit of element j is bit j of the 32-bit qh. */
static int tsr__dot5(const uint8_t *qs, uint32_t qh, const int8_t *xq) {
    int s = 0;
    for (int j = 0; j < 16; j++) {
        const int u0 = (qs[j] & 15) | (int)((qh >> j) & 1) << 4, u1 = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        s += u0 * xq[j] + u1 * xq[j + 16];
    }
    return s;
}

static float tsr__dot_q5_0(const uint8_t *w, const void *xv, int64_t nb) {
    const tsr__q8a32 *x = xv;
    float acc = 0;
    for (int64_t i = 0; i < nb; i++, w += 22) {
        uint32_t qh;
        memcpy(&qh, w + 2, 4);
        const int s = tsr__dot5(w + 6, qh, x[i].qs) - 16 * x[i].isum;
        acc += tsr__h(w) * x[i].d * (float)s;
    }
    return acc;
}

static float tsr__dot_q5_1(const uint8_t *w, const void *xv, int64_t nb) {
    const tsr__q8a32 *x = xv;
    float acc = 0;
    for (int64_t i = 0; i < nb; i++, w += 24) {
        uint32_t qh;
        memcpy(&qh, w + 4, 4);
        const int s = tsr__dot5(w + 8, qh, x[i].qs);
        acc += tsr__h(w) * x[i].d * (float)s + tsr__h(w + 2) * x[i].d * (float)x[i].isum;
    }
    return acc;
}

static float tsr__dot_q8_0(const uint8_t *w, const void *xv, int64_t nb) {
    const tsr__q8a32 *x = xv;
    float acc = 0;
    for (int64_t i = 0; i < nb; i++, w += 34) {
        const int8_t *q = (const int8_t *)(w + 2);
        int s = 0;
        for (int j = 0; j < TSR__QK; j++) s += q[j] * x[i].qs[j];
        acc += tsr__h(w) * x[i].d * (float)s;
    }
    return acc;
}

/* ---- portable kernels: k-quants, unpacked to the common form of the opening comment ---- */

typedef struct {
    uint8_t u[TSR__QK_K];
    int16_t sc[16], mn[16]; /* per 16 elements */
    float d, dmin;
    int off;
} tsr__kunp;

static void tsr__unp_q2_k(const uint8_t *b, tsr__kunp *k) {
    const uint8_t *q = b + 16;
    for (int g = 0; g < 16; g++) k->sc[g] = b[g] & 15, k->mn[g] = b[g] >> 4;
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) k->u[128 * h + 32 * j + l] = (q[32 * h + l] >> (2 * j)) & 3;
    k->d = tsr__h(b + 80), k->dmin = tsr__h(b + 82), k->off = 0;
}

static void tsr__unp_q3_k(const uint8_t *b, tsr__kunp *k) {
    const uint8_t *hm = b, *qs = b + 32, *s = b + 96;
    for (int g = 0; g < 16; g++) {
        const int lo = g < 8 ? (s[g] & 15) : (s[g - 8] >> 4), hi = (s[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
        k->sc[g] = (int16_t)((lo | hi << 4) - 32), k->mn[g] = 0;
    }
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                k->u[128 * c + 32 * j + l] = (uint8_t)(((qs[32 * c + l] >> (2 * j)) & 3) | ((hm[l] >> (4 * c + j)) & 1) << 2);
    k->d = tsr__h(b + 108), k->dmin = 0, k->off = 4;
}

/* The 6-bit scale/min pairs of Q4_K and Q5_K (8 of each in 12 bytes), per 16 elements. */
static void tsr__unp_scmin_k4(const uint8_t *s, tsr__kunp *k) {
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) {
            sc = s[j] & 63, m = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4, m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
        }
        k->sc[2 * j] = k->sc[2 * j + 1] = (int16_t)sc, k->mn[2 * j] = k->mn[2 * j + 1] = (int16_t)m;
    }
}

static void tsr__unp_q4_k(const uint8_t *b, tsr__kunp *k) {
    const uint8_t *q = b + 16;
    tsr__unp_scmin_k4(b + 4, k);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) k->u[64 * c + l] = q[32 * c + l] & 15, k->u[64 * c + 32 + l] = q[32 * c + l] >> 4;
    k->d = tsr__h(b), k->dmin = tsr__h(b + 2), k->off = 0;
}

static void tsr__unp_q5_k(const uint8_t *b, tsr__kunp *k) {
    const uint8_t *qh = b + 16, *ql = b + 48;
    tsr__unp_scmin_k4(b + 4, k);
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++) {
            const int nib = (j & 1) ? ql[32 * (j / 2) + l] >> 4 : ql[32 * (j / 2) + l] & 15;
            k->u[32 * j + l] = (uint8_t)(nib | ((qh[l] >> j) & 1) << 4);
        }
    k->d = tsr__h(b), k->dmin = tsr__h(b + 2), k->off = 0;
}

static void tsr__unp_q6_k(const uint8_t *b, tsr__kunp *k) {
    for (int g = 0; g < 16; g++) k->sc[g] = (int8_t)b[192 + g], k->mn[g] = 0;
    for (int n = 0; n < 2; n++) {
        const uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
        uint8_t *u = k->u + 128 * n;
        for (int l = 0; l < 32; l++) {
            u[l] = (uint8_t)((ql[l] & 15) | (qh[l] & 3) << 4);
            u[l + 32] = (uint8_t)((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4);
            u[l + 64] = (uint8_t)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
            u[l + 96] = (uint8_t)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
        }
    }
    k->d = tsr__h(b + 208), k->dmin = 0, k->off = 32;
}

static float tsr__dot_kq(const uint8_t *w, const void *xv, int64_t nb, size_t bytes,
                         void (*unp)(const uint8_t *, tsr__kunp *)) {
    const tsr__q8a256 *x = xv;
    tsr__kunp k;
    float acc = 0;
    for (int64_t i = 0; i < nb; i++, w += bytes) {
        unp(w, &k);
        int64_t sumi = 0, bs = 0, ms = 0;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += k.u[16 * g + l] * x[i].qs[16 * g + l];
            sumi += (int64_t)k.sc[g] * s;
            bs += (int64_t)k.sc[g] * x[i].bsums[g];
            ms += (int64_t)k.mn[g] * x[i].bsums[g];
        }
        acc += x[i].d * (k.d * (float)(sumi - k.off * bs) - k.dmin * (float)ms);
    }
    return acc;
}

#define TSR__KDOT(name, bytes)                                                                   \
    static float tsr__dot_##name(const uint8_t *w, const void *x, int64_t nb) {                  \
        return tsr__dot_kq(w, x, nb, bytes, tsr__unp_##name);                                    \
    }
TSR__KDOT(q2_k, 84)
TSR__KDOT(q3_k, 110)
TSR__KDOT(q4_k, 144)
TSR__KDOT(q5_k, 176)
TSR__KDOT(q6_k, 210)

static float tsr__dot_q8_k(const uint8_t *w, const void *xv, int64_t nb) {
    const tsr__q8a256 *x = xv;
    float acc = 0;
    for (int64_t i = 0; i < nb; i++, w += 292) {
        float d;
        memcpy(&d, w, 4);
        const int8_t *q = (const int8_t *)(w + 4);
        int s = 0;
        for (int j = 0; j < TSR__QK_K; j++) s += q[j] * x[i].qs[j];
        acc += d * x[i].d * (float)s;
    }
    return acc;
}

/* ---- portable kernel: INT4G (qmatmul_impl.h states the sum) ---- */

static void tsr__dot_i4g(const uint8_t *q, const uint8_t *sc, const uint8_t *zp, int64_t cols, int64_t group,
                         const void *xv, size_t xs, const float *xg, int n, float *y, int64_t ldy) {
    const int64_t ng = cols / group, bpg = group / TSR__QK;
    for (int j = 0; j < n; j++) {
        const tsr__q8a32 *x = (const tsr__q8a32 *)(const void *)((const uint8_t *)xv + (size_t)j * xs);
        float acc = 0;
        for (int64_t g = 0; g < ng; g++) {
            float sg = 0;
            for (int64_t b = g * bpg; b < (g + 1) * bpg; b++) {
                const uint8_t *qb = q + 16 * b;
                int s = 0;
                for (int i = 0; i < 16; i++) s += (qb[i] & 15) * x[b].qs[i] + (qb[i] >> 4) * x[b].qs[i + 16];
                sg += x[b].d * (float)s;
            }
            acc += tsr__h(sc + 2 * g) * (sg - (zp ? (float)zp[g] : 8.0f) * xg[(int64_t)j * ng + g]);
        }
        y[j * ldy] = acc;
    }
}

/* xg of tsr__qmm_i4_fn for one activation row. */
static void tsr__i4g_xsums(const tsr__q8a32 *x, int64_t cols, int64_t group, float *xg) {
    const int64_t bpg = group / TSR__QK;
    for (int64_t g = 0; g < cols / group; g++) {
        float s = 0;
        for (int64_t b = g * bpg; b < (g + 1) * bpg; b++) s += x[b].d * (float)x[b].isum;
        xg[g] = s;
    }
}

/* ---- portable kernels: float weights (f32 activations) ---- */

static float tsr__dot_f32(const uint8_t *w, const void *xv, int64_t n) {
    const float *x = xv;
    float acc = 0;
    for (int64_t i = 0; i < n; i++) {
        float v;
        memcpy(&v, w + 4 * i, 4);
        acc += v * x[i];
    }
    return acc;
}

static float tsr__dot_f16(const uint8_t *w, const void *xv, int64_t n) {
    const float *x = xv;
    float acc = 0;
    for (int64_t i = 0; i < n; i++) acc += tsr__h(w + 2 * i) * x[i];
    return acc;
}

static float tsr__dot_bf16(const uint8_t *w, const void *xv, int64_t n) {
    const float *x = xv;
    float acc = 0;
    for (int64_t i = 0; i < n; i++) {
        uint16_t v;
        memcpy(&v, w + 2 * i, 2);
        acc += tsr_bf16_to_f32(v) * x[i];
    }
    return acc;
}

static tsr__qmm_dot_fn tsr__qmm_dot_portable(tsr_wtype t) {
    switch (t) {
    case TSR_WTYPE_F32: return tsr__dot_f32;
    case TSR_WTYPE_F16: return tsr__dot_f16;
    case TSR_WTYPE_BF16: return tsr__dot_bf16;
    case TSR_WTYPE_Q4_0: return tsr__dot_q4_0;
    case TSR_WTYPE_Q4_1: return tsr__dot_q4_1;
    case TSR_WTYPE_Q5_0: return tsr__dot_q5_0;
    case TSR_WTYPE_Q5_1: return tsr__dot_q5_1;
    case TSR_WTYPE_Q8_0: return tsr__dot_q8_0;
    case TSR_WTYPE_Q2_K: return tsr__dot_q2_k;
    case TSR_WTYPE_Q3_K: return tsr__dot_q3_k;
    case TSR_WTYPE_Q4_K: return tsr__dot_q4_k;
    case TSR_WTYPE_Q5_K: return tsr__dot_q5_k;
    case TSR_WTYPE_Q6_K: return tsr__dot_q6_k;
    case TSR_WTYPE_Q8_K: return tsr__dot_q8_k;
    default: return NULL;
    }
}

/* ---- implementation choice ---- */

const char *tsr_qmm_impl_name(tsr_qmm_impl impl) {
    switch (impl) {
    case TSR_QMM_AUTO: return "auto";
    case TSR_QMM_PORTABLE: return "portable";
    case TSR_QMM_AVX2: return "avx2";
    case TSR_QMM_AVX512VNNI: return "avx512vnni";
    }
    return "unknown";
}

int tsr_qmm_impl_available(tsr_qmm_impl impl) {
    switch (impl) {
    case TSR_QMM_AUTO:
    case TSR_QMM_PORTABLE: return 1;
#if defined(__x86_64__)
    case TSR_QMM_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case TSR_QMM_AVX512VNNI:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    default: return 0;
    }
}

tsr_qmm_impl tsr_qmm_impl_best(void) {
    if (tsr_qmm_impl_available(TSR_QMM_AVX512VNNI)) return TSR_QMM_AVX512VNNI;
    if (tsr_qmm_impl_available(TSR_QMM_AVX2)) return TSR_QMM_AVX2;
    return TSR_QMM_PORTABLE;
}

int tsr_qmatmul_supports(tsr_wtype t) { return t == TSR_WTYPE_INT4G || tsr__qmm_dot_portable(t) != NULL; }

static size_t tsr__act_row_bytes(tsr_wtype t, int64_t cols) {
    switch (tsr__act_kind_of(t)) {
    case TSR__ACT_Q8A32: return (size_t)(cols / TSR__QK) * sizeof(tsr__q8a32);
    case TSR__ACT_Q8A256: return (size_t)(cols / TSR__QK_K) * sizeof(tsr__q8a256);
    default: return 0; /* the float types read x as it is */
    }
}

/* INT4G adds its per-group activation sums (at most one float per block of 32) after the rows. */
size_t tsr_qmatmul_work_size(tsr_wtype t, int64_t n_tok, int64_t cols) {
    const size_t xg = t == TSR_WTYPE_INT4G ? sizeof(float) * (size_t)(cols / TSR__QK) : 0;
    return (size_t)(n_tok > 0 ? n_tok : 0) * (tsr__act_row_bytes(t, cols) + xg);
}

/* ---- the threaded driver ---- */

typedef struct {
    const tsr_wtensor *w;
    const uint8_t *xa; /* activations in the type's layout */
    size_t x_stride;   /* bytes per token of xa */
    int64_t n_tok, nb;
    float *y;
    int64_t ldy;
    tsr__qmm_dot_fn dot;   /* portable: one token at a time */
    tsr__qmm_dotn_fn dotn; /* SIMD: up to TSR__QMM_NT tokens per pass over a weight row */
    tsr__qmm_i4_fn i4;     /* INT4G (portable or SIMD), with its per-group sums xg */
    const float *xg;
} tsr__qmm_job;

static void tsr__qmm_rows(void *ctx, int64_t r0, int64_t r1, int tid) {
    (void)tid;
    const tsr__qmm_job *j = ctx;
    const tsr_wtensor *w = j->w;
    const uint8_t *wd = w->data;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = wd + (size_t)r * w->row_stride;
        if (j->i4) {
            const uint8_t *sc = (const uint8_t *)w->scales + (size_t)r * w->scale_stride;
            const uint8_t *zp = w->zeros ? (const uint8_t *)w->zeros + (size_t)r * w->zero_stride : NULL;
            const int64_t ng = w->cols / w->block;
            for (int64_t t = 0; t < j->n_tok; t += TSR__QMM_NT) {
                const int n = (int)(j->n_tok - t < TSR__QMM_NT ? j->n_tok - t : TSR__QMM_NT);
                j->i4(row, sc, zp, w->cols, w->block, j->xa + (size_t)t * j->x_stride, j->x_stride, j->xg + t * ng, n,
                      j->y + t * j->ldy + r, j->ldy);
            }
        } else if (j->dotn) {
            for (int64_t t = 0; t < j->n_tok; t += TSR__QMM_NT) {
                const int n = (int)(j->n_tok - t < TSR__QMM_NT ? j->n_tok - t : TSR__QMM_NT);
                j->dotn(row, j->xa + (size_t)t * j->x_stride, j->x_stride, n, j->nb, j->y + t * j->ldy + r, j->ldy);
            }
        } else {
            for (int64_t t = 0; t < j->n_tok; t++) j->y[t * j->ldy + r] = j->dot(row, j->xa + (size_t)t * j->x_stride, j->nb);
        }
    }
}

static tsr_status tsr__qmm_check(const tsr_wtensor *w, int64_t n_tok, int64_t ldy) {
    if (!tsr_qmatmul_supports(w->type))
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "matmul on %s weights is not implemented on the CPU", tsr_wtype_name(w->type));
    size_t rb = 0;
    TSR_TRY(tsr_wtype_row_bytes(w->type, w->cols, &rb));
    if (w->rows < 0 || n_tok < 0 || ldy < w->rows || w->row_stride < rb)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "%s matmul: bad shape (rows %lld, n_tok %lld, ldy %lld, row stride %zu < %zu)",
                          tsr_wtype_name(w->type), (long long)w->rows, (long long)n_tok, (long long)ldy, w->row_stride, rb);
    if (w->type == TSR_WTYPE_INT4G &&
        (w->block <= 0 || w->block % TSR__QK != 0 || w->cols % w->block != 0 || !w->scales ||
         w->scale_stride < 2 * (size_t)(w->cols / w->block) || (w->zeros && w->zero_stride < (size_t)(w->cols / w->block))))
        return tsr_errorf(TSR_ERR_INVALID_ARG, "INT4G matmul: bad groups (group %lld of %lld columns, scales %s, strides %zu/%zu)",
                          (long long)w->block, (long long)w->cols, w->scales ? "set" : "missing", w->scale_stride,
                          w->zero_stride);
    return TSR_OK;
}

tsr_status tsr_qmatmul(tsr_cpu_pool *pool, const tsr_wtensor *w, const float *x, int64_t n_tok, float *y,
                       int64_t ldy, void *work, tsr_qmm_impl impl) {
    TSR_TRY(tsr__qmm_check(w, n_tok, ldy));
    if (!tsr_qmm_impl_available(impl))
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "matmul implementation %s does not run on this CPU", tsr_qmm_impl_name(impl));
    if (impl == TSR_QMM_AUTO) impl = tsr_qmm_impl_best();
    tsr__qmm_dotn_fn dotn = NULL;
    if (impl == TSR_QMM_AVX512VNNI) dotn = tsr__qmm_dot_vnni(w->type);
    if (impl == TSR_QMM_AVX2 || (impl == TSR_QMM_AVX512VNNI && !dotn)) dotn = tsr__qmm_dot_avx2(w->type);
    tsr__qmm_i4_fn i4 = NULL;
    if (w->type == TSR_WTYPE_INT4G) {
        i4 = impl == TSR_QMM_AVX512VNNI ? tsr__qmm_i4_vnni() : impl == TSR_QMM_AVX2 ? tsr__qmm_i4_avx2() : NULL;
        if (!i4 && impl == TSR_QMM_AVX512VNNI) i4 = tsr__qmm_i4_avx2();
        if (!i4) i4 = tsr__dot_i4g;
        dotn = NULL;
    }
    if (n_tok == 0 || w->rows == 0) return TSR_OK;

    const tsr__act_kind kind = tsr__act_kind_of(w->type);
    tsr__qmm_job j = {.w = w, .n_tok = n_tok, .y = y, .ldy = ldy, .dot = tsr__qmm_dot_portable(w->type), .dotn = dotn,
                      .i4 = i4};
    void *owned = NULL;
    if (kind == TSR__ACT_F32) {
        j.xa = (const uint8_t *)x, j.x_stride = (size_t)w->cols * sizeof(float), j.nb = w->cols;
    } else {
        j.x_stride = tsr__act_row_bytes(w->type, w->cols);
        if (!work) {
            owned = work = malloc(tsr_qmatmul_work_size(w->type, n_tok, w->cols) + 1);
            if (!owned) return tsr_errorf(TSR_ERR_OOM, "matmul: no memory for %lld quantized activation rows", (long long)n_tok);
        }
        for (int64_t t = 0; t < n_tok; t++) {
            void *row = (uint8_t *)work + (size_t)t * j.x_stride;
            if (kind == TSR__ACT_Q8A32) tsr__quant_q8a32(x + t * w->cols, w->cols, row);
            else tsr__quant_q8a256(x + t * w->cols, w->cols, row);
        }
        j.xa = work, j.nb = w->cols / w->block;
        if (i4) {
            float *xg = (float *)(void *)((uint8_t *)work + j.x_stride * (size_t)n_tok);
            for (int64_t t = 0; t < n_tok; t++)
                tsr__i4g_xsums((const tsr__q8a32 *)(const void *)(j.xa + (size_t)t * j.x_stride), w->cols, w->block,
                               xg + t * (w->cols / w->block));
            j.xg = xg;
        }
    }
    /* Ranges of a few rows so a descheduled thread on a shared machine holds little work. */
    const int nth = pool ? tsr_cpu_pool_size(pool) : 1;
    int64_t grain = w->rows / (4 * (int64_t)nth);
    if (grain < 4) grain = 4;
    if (pool && nth > 1) tsr_cpu_pool_run(pool, w->rows, grain, tsr__qmm_rows, &j);
    else tsr__qmm_rows(&j, 0, w->rows, 0);
    free(owned);
    return TSR_OK;
}

tsr_status tsr_qmatmul_ref(const tsr_wtensor *w, const float *x, int64_t n_tok, float *y, int64_t ldy) {
    TSR_TRY(tsr__qmm_check(w, n_tok, ldy));
    float *row = malloc(sizeof(float) * (size_t)(w->cols > 0 ? w->cols : 1));
    if (!row) return tsr_errorf(TSR_ERR_OOM, "matmul reference: no memory for a row of %lld", (long long)w->cols);
    for (int64_t r = 0; r < w->rows; r++) {
        tsr_status st = tsr_wtensor_dequantize_rows(w, r, 1, row);
        if (st != TSR_OK) {
            free(row);
            return st;
        }
        for (int64_t t = 0; t < n_tok; t++) {
            double s = 0;
            for (int64_t c = 0; c < w->cols; c++) s += (double)row[c] * (double)x[t * w->cols + c];
            y[t * ldy + r] = (float)s;
        }
    }
    free(row);
    return TSR_OK;
}
