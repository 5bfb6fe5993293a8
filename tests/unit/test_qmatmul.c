/* Typed weights (common/wtype.h) and the CPU matmul on them (kernels/cpu/qmatmul.h).
 * Every weight type on random blocks (random bytes with sane f16 scales), several shapes, each
 * implementation forced in turn: against the reference twin (rows dequantized by
 * tsr_ggml_dequantize, dot products in double) under a normalized-MSE bound per type, as
 * ggml's test-backend-ops does, and the SIMD paths against the portable one under a much
 * tighter bound (the integer sums are the same; only the f32 summation order differs).  Plus
 * the descriptor's shape rules: row bytes, and TP cuts that would split a block.  The int4 group
 * layout (INT4G) the same way, its dequantization against the layout's statement element by
 * element, and its row and column slices as views. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/tensor.h"
#include "common/wtype.h"
#include "kernels/cpu/qmatmul.h"
#include "kernels/cpu/threadpool.h"
#include "tests/test_util.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd32(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd32() & 0xffffff) / (float)0x1000000; }
static void put_f16(uint8_t *p, float v) {
    const uint16_t h = tsr_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* Random weights of type t, [rows][cols]: random bytes, then each block's scale fields set to
 * sane values (random f16 bit patterns would be NaNs and huge numbers). */
static uint8_t *rand_weights(tsr_wtype t, int64_t rows, int64_t cols, size_t *row_bytes) {
    TSR_ASSERT(tsr_wtype_row_bytes(t, cols, row_bytes) == TSR_OK);
    const size_t n = *row_bytes * (size_t)rows;
    uint8_t *w = malloc(n + 1);
    for (size_t i = 0; i < n; i++) w[i] = (uint8_t)rnd32();
    const size_t bb = tsr_wtype_block_bytes(t);
    const int64_t nblocks = (int64_t)(n / bb);
    for (int64_t i = 0; i < nblocks; i++) {
        uint8_t *b = w + (size_t)i * bb;
        const float d = frand(0.002f, 0.02f), m = frand(-0.05f, 0.05f), dmin = frand(0.0f, 0.02f);
        switch (t) {
        case TSR_WTYPE_F32: { const float v = frand(-1, 1); memcpy(b, &v, 4); break; }
        case TSR_WTYPE_F16: put_f16(b, frand(-1, 1)); break;
        case TSR_WTYPE_BF16: { const uint16_t h = tsr_f32_to_bf16(frand(-1, 1)); memcpy(b, &h, 2); break; }
        case TSR_WTYPE_Q4_0: case TSR_WTYPE_Q5_0: case TSR_WTYPE_Q8_0: put_f16(b, d); break;
        case TSR_WTYPE_Q4_1: case TSR_WTYPE_Q5_1: put_f16(b, d), put_f16(b + 2, m); break;
        case TSR_WTYPE_Q2_K: put_f16(b + 80, d), put_f16(b + 82, dmin); break;
        case TSR_WTYPE_Q3_K: put_f16(b + 108, d); break;
        case TSR_WTYPE_Q4_K: case TSR_WTYPE_Q5_K: put_f16(b, d), put_f16(b + 2, dmin); break;
        case TSR_WTYPE_Q6_K: put_f16(b + 208, d); break;
        case TSR_WTYPE_Q8_K: memcpy(b, &d, 4); break;
        default: TSR_ASSERT(0);
        }
    }
    return w;
}

static double nmse(const float *y, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        const double e = (double)y[i] - ref[i];
        num += e * e, den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

static const tsr_wtype all_types[] = {
    TSR_WTYPE_F32,  TSR_WTYPE_F16,  TSR_WTYPE_BF16, TSR_WTYPE_Q4_0, TSR_WTYPE_Q4_1,
    TSR_WTYPE_Q5_0, TSR_WTYPE_Q5_1, TSR_WTYPE_Q8_0, TSR_WTYPE_Q2_K, TSR_WTYPE_Q3_K,
    TSR_WTYPE_Q4_K, TSR_WTYPE_Q5_K, TSR_WTYPE_Q6_K, TSR_WTYPE_Q8_K,
};

static int is_float(tsr_wtype t) { return t == TSR_WTYPE_F32 || t == TSR_WTYPE_F16 || t == TSR_WTYPE_BF16; }

/* Error of 8-bit activations: about (amax / 127)^2 / 12 over E[x^2] = 1/3, i.e. ~1.5e-5 for
 * uniform x; the bound leaves 10x.  Float weights keep f32 activations: only rounding. */
static double ref_bound(tsr_wtype t) { return is_float(t) ? 1e-10 : 2e-4; }

typedef struct {
    int64_t rows, cols, n_tok;
} shape;

static void test_type(tsr_wtype t, tsr_cpu_pool *pool) {
    static const shape quant_shapes[] = {{37, 256, 1}, {16, 4096, 3}, {65, 1024, 17}, {8, 512, 2}};
    static const shape float_shapes[] = {{37, 256, 1}, {16, 4096, 3}, {65, 1024, 17}, {9, 131, 3}, {5, 7, 1}};
    const shape *shapes = is_float(t) ? float_shapes : quant_shapes;
    const size_t n_shapes = is_float(t) ? 5 : 4;
    const tsr_qmm_impl impls[] = {TSR_QMM_PORTABLE, TSR_QMM_AVX2, TSR_QMM_AVX512VNNI, TSR_QMM_AUTO};
    double worst = 0;
    for (size_t s = 0; s < n_shapes; s++) {
        const shape sh = shapes[s];
        size_t rb = 0;
        uint8_t *wd = rand_weights(t, sh.rows, sh.cols, &rb);
        tsr_wtensor w;
        CHECK(tsr_wtensor_init(&w, t, sh.rows, sh.cols, 0, wd) == TSR_OK);
        float *x = malloc(sizeof(float) * (size_t)(sh.n_tok * sh.cols));
        for (int64_t i = 0; i < sh.n_tok * sh.cols; i++) x[i] = frand(-1, 1);
        const int64_t ldy = sh.rows + 3; /* the gap past rows must stay untouched */
        const size_t ny = (size_t)(sh.n_tok * ldy);
        float *ref = malloc(sizeof(float) * ny), *port = malloc(sizeof(float) * ny), *y = malloc(sizeof(float) * ny);
        for (size_t i = 0; i < ny; i++) ref[i] = port[i] = -7.0f;
        CHECK(tsr_qmatmul_ref(&w, x, sh.n_tok, ref, ldy) == TSR_OK);
        for (size_t k = 0; k < sizeof impls / sizeof impls[0]; k++) {
            if (!tsr_qmm_impl_available(impls[k])) {
                /* AVX2 is the floor of every machine CI runs on; VNNI is optional. */
#if defined(__x86_64__)
                CHECK_MSG(impls[k] != TSR_QMM_AVX2, "this x86-64 CPU has no AVX2");
#endif
                if (s == 0 && t == TSR_WTYPE_F32) printf("  (%s: not on this CPU)\n", tsr_qmm_impl_name(impls[k]));
                continue;
            }
            for (size_t i = 0; i < ny; i++) y[i] = -7.0f;
            const tsr_status st = tsr_qmatmul(k == 3 ? pool : NULL, &w, x, sh.n_tok, y, ldy, NULL, impls[k]);
            CHECK_MSG(st == TSR_OK, "%s %s: %s", tsr_wtype_name(t), tsr_qmm_impl_name(impls[k]), tsr_last_error());
            double err = 0, err_port = 0;
            int gap_ok = 1;
            for (int64_t tok = 0; tok < sh.n_tok; tok++) {
                err += nmse(y + tok * ldy, ref + tok * ldy, sh.rows) / (double)sh.n_tok;
                if (k > 0) err_port += nmse(y + tok * ldy, port + tok * ldy, sh.rows) / (double)sh.n_tok;
                for (int64_t r = sh.rows; r < ldy; r++) gap_ok &= y[tok * ldy + r] == -7.0f;
            }
            CHECK_MSG(err < ref_bound(t), "%s %s [%lld x %lld] n_tok %lld: nMSE %.3g vs the reference", tsr_wtype_name(t),
                      tsr_qmm_impl_name(impls[k]), (long long)sh.rows, (long long)sh.cols, (long long)sh.n_tok, err);
            CHECK_MSG(err_port < 1e-9, "%s %s [%lld x %lld] n_tok %lld: nMSE %.3g vs the portable path", tsr_wtype_name(t),
                      tsr_qmm_impl_name(impls[k]), (long long)sh.rows, (long long)sh.cols, (long long)sh.n_tok, err_port);
            CHECK_MSG(gap_ok, "%s %s wrote past rows", tsr_wtype_name(t), tsr_qmm_impl_name(impls[k]));
            if (k == 0) memcpy(port, y, sizeof(float) * ny);
            if (err > worst) worst = err;
        }
        free(wd), free(x), free(ref), free(port), free(y);
    }
    printf("  %-5s worst nMSE vs reference %.3g (bound %.0e)\n", tsr_wtype_name(t), worst, ref_bound(t));
}

/* A column slice (row_stride wider than the row) computes the same as a packed copy of it. */
static void test_column_slice(void) {
    const int64_t rows = 24, cols = 1024;
    size_t rb = 0;
    uint8_t *wd = rand_weights(TSR_WTYPE_Q4_K, rows, cols, &rb);
    tsr_wtensor w, part;
    CHECK(tsr_wtensor_init(&w, TSR_WTYPE_Q4_K, rows, cols, 0, wd) == TSR_OK);
    CHECK(tsr_wtensor_slice(&w, "blk.0.ffn_down.weight", TSR_SPLIT_COLS, 512, 512, &part) == TSR_OK);
    CHECK(part.cols == 512 && part.row_stride == rb && part.data == wd + 2 * 144);
    float x[3 * 512], y[3 * 24], ref[3 * 24];
    for (int i = 0; i < 3 * 512; i++) x[i] = frand(-1, 1);
    CHECK(tsr_qmatmul(NULL, &part, x, 3, y, rows, NULL, TSR_QMM_AUTO) == TSR_OK);
    CHECK(tsr_qmatmul_ref(&part, x, 3, ref, rows) == TSR_OK);
    CHECK(nmse(y, ref, 3 * rows) < 2e-4);
    /* rows 8..15 of the slice are rows 8..15 of the parent's right half */
    tsr_wtensor sub;
    CHECK(tsr_wtensor_slice(&part, "x", TSR_SPLIT_ROWS, 8, 8, &sub) == TSR_OK);
    float ys[3 * 8];
    CHECK(tsr_qmatmul(NULL, &sub, x, 3, ys, 8, NULL, TSR_QMM_PORTABLE) == TSR_OK);
    float yp[3 * 24];
    CHECK(tsr_qmatmul(NULL, &part, x, 3, yp, rows, NULL, TSR_QMM_PORTABLE) == TSR_OK);
    int same = 1;
    for (int t = 0; t < 3; t++)
        for (int r = 0; r < 8; r++) same &= ys[t * 8 + r] == yp[t * rows + 8 + r];
    CHECK(same);
    free(wd);
}

static void test_descriptor(void) {
    size_t rb = 0;
    CHECK(tsr_wtype_row_bytes(TSR_WTYPE_Q4_K, 512, &rb) == TSR_OK && rb == 288);
    CHECK(tsr_wtype_row_bytes(TSR_WTYPE_Q4_0, 576, &rb) == TSR_OK && rb == 18 * 18);
    CHECK(tsr_wtype_row_bytes(TSR_WTYPE_BF16, 7, &rb) == TSR_OK && rb == 14);
    CHECK(tsr_wtype_row_bytes(TSR_WTYPE_Q6_K, 576, &rb) == TSR_ERR_INVALID_ARG);
    CHECK(strstr(tsr_last_error(), "Q6_K") && strstr(tsr_last_error(), "256"));
    CHECK(strcmp(tsr_wtype_name(TSR_WTYPE_Q5_K), "Q5_K") == 0 && strcmp(tsr_wtype_name(TSR_WTYPE_INT4G), "INT4G") == 0);
    tsr_wtype t;
    CHECK(tsr_wtype_from_ggml(TSR_GGML_Q3_K, &t) == TSR_OK && t == TSR_WTYPE_Q3_K);
    CHECK(tsr_wtype_from_ggml(TSR_GGML_I8, &t) == TSR_ERR_UNSUPPORTED);

    /* SmolLM2's down projection [576, 1536] as Q4_K: `in` = 1536 = 6 blocks of 256. */
    tsr_wtensor w;
    CHECK(tsr_wtensor_init(&w, TSR_WTYPE_Q4_K, 576, 1536, 0, NULL) == TSR_OK);
    CHECK(tsr_wtensor_check_split(&w, "blk.3.ffn_down.weight", TSR_SPLIT_COLS, 2) == TSR_OK);
    CHECK(tsr_wtensor_check_split(&w, "blk.3.ffn_down.weight", TSR_SPLIT_COLS, 3) == TSR_OK);
    CHECK(tsr_wtensor_check_split(&w, "blk.3.ffn_down.weight", TSR_SPLIT_COLS, 4) == TSR_ERR_INVALID_ARG);
    const char *msg = tsr_last_error();
    CHECK_MSG(strstr(msg, "blk.3.ffn_down.weight") && strstr(msg, "1, 2, 3, 6") && strstr(msg, "256"), "%s", msg);
    CHECK(tsr_wtensor_check_split(&w, "blk.3.ffn_down.weight", TSR_SPLIT_ROWS, 4) == TSR_OK); /* rows never cut blocks */
    CHECK(tsr_wtensor_check_split(&w, "blk.3.ffn_down.weight", TSR_SPLIT_ROWS, 5) == TSR_ERR_INVALID_ARG);
    CHECK_MSG(strstr(tsr_last_error(), "equal parts") && strstr(tsr_last_error(), "4, 6"), "%s", tsr_last_error());
    CHECK(tsr_wtensor_check_cut(&w, "blk.3.ffn_down.weight", TSR_SPLIT_COLS, 768) == TSR_OK);
    CHECK(tsr_wtensor_check_cut(&w, "blk.3.ffn_down.weight", TSR_SPLIT_COLS, 700) == TSR_ERR_INVALID_ARG);
    CHECK_MSG(strstr(tsr_last_error(), "512 and 768"), "%s", tsr_last_error());
    tsr_wtensor part;
    CHECK(tsr_wtensor_slice(&w, "blk.3.ffn_down.weight", TSR_SPLIT_COLS, 100, 256, &part) == TSR_ERR_INVALID_ARG);
    CHECK(tsr_wtensor_check_split(&w, "w", TSR_SPLIT_COLS, 0) == TSR_ERR_INVALID_ARG);

    /* INT4G: rows are independent (any row split), a column split keeps whole groups. */
    CHECK(tsr_wtensor_init(&w, TSR_WTYPE_INT4G, 4096, 4096, 128, NULL) == TSR_OK && w.block == 128);
    CHECK(w.row_stride == 2048 && w.scale_stride == 64 && w.zero_stride == 32);
    CHECK(tsr_wtensor_check_split(&w, "q_proj", TSR_SPLIT_ROWS, 8) == TSR_OK);
    CHECK(tsr_wtensor_check_split(&w, "o_proj", TSR_SPLIT_COLS, 32) == TSR_OK);
    CHECK(tsr_wtensor_check_split(&w, "o_proj", TSR_SPLIT_COLS, 64) == TSR_ERR_INVALID_ARG);
    msg = tsr_last_error();
    CHECK_MSG(strstr(msg, "o_proj") && strstr(msg, "128") && strstr(msg, "32") && strstr(msg, "INT4G"), "%s", msg);
    CHECK(tsr_wtensor_init(&w, TSR_WTYPE_INT4G, 64, 4096, 100, NULL) == TSR_ERR_INVALID_ARG);
    CHECK(tsr_wtensor_init(&w, TSR_WTYPE_INT4G, 64, 4096, 16, NULL) == TSR_ERR_INVALID_ARG); /* not whole runs of 32 */
    CHECK(tsr_wtensor_init(&w, TSR_WTYPE_INT4G, 64, 4096, 128, NULL) == TSR_OK);
    float x[4096], y[64];
    memset(x, 0, sizeof x);
    CHECK(tsr_qmatmul_supports(TSR_WTYPE_INT4G));
    CHECK(tsr_qmatmul(NULL, &w, x, 1, y, 64, NULL, TSR_QMM_AUTO) == TSR_ERR_INVALID_ARG); /* no scales */
    CHECK(strstr(tsr_last_error(), "scales missing") != NULL);
}

/* ---- INT4G (common/wtype.h's group layout) ---- */

typedef struct {
    uint8_t *q, *sc, *zp;
    tsr_wtensor w;
} i4g;

/* Random quants, f16 scales in [0.002, 0.02], zero points 0..15 (or none: symmetric). */
static void i4g_rand(i4g *m, int64_t rows, int64_t cols, int64_t group, int with_zeros) {
    CHECK(tsr_wtensor_init(&m->w, TSR_WTYPE_INT4G, rows, cols, group, NULL) == TSR_OK);
    const size_t nq = (size_t)(rows * cols / 2), ng = (size_t)(rows * (cols / group));
    m->q = malloc(nq), m->sc = malloc(2 * ng), m->zp = with_zeros ? malloc(ng) : NULL;
    for (size_t i = 0; i < nq; i++) m->q[i] = (uint8_t)rnd32();
    for (size_t i = 0; i < ng; i++) put_f16(m->sc + 2 * i, frand(0.002f, 0.02f));
    for (size_t i = 0; m->zp && i < ng; i++) m->zp[i] = (uint8_t)(rnd32() % 16);
    m->w.data = m->q, m->w.scales = m->sc, m->w.zeros = m->zp;
}

static void i4g_free(i4g *m) { free(m->q), free(m->sc), free(m->zp); }

/* W[r][c] straight from the layout's statement (wtype.h), element by element. */
static float i4g_elem(const tsr_wtensor *w, int64_t r, int64_t c) {
    const uint8_t *q = (const uint8_t *)w->data + (size_t)r * w->row_stride + (size_t)(c / 32) * 16 + (size_t)(c % 16);
    const int u = (c % 32) < 16 ? (*q & 15) : (*q >> 4);
    uint16_t h;
    memcpy(&h, (const uint8_t *)w->scales + (size_t)r * w->scale_stride + 2 * (size_t)(c / w->block), 2);
    const int z = w->zeros ? ((const uint8_t *)w->zeros)[(size_t)r * w->zero_stride + (size_t)(c / w->block)] : 8;
    return tsr_f16_to_f32(h) * (float)(u - z);
}

static void test_int4g_dequantize_and_slices(void) {
    i4g m;
    i4g_rand(&m, 12, 256, 64, 1);
    float *full = malloc(sizeof(float) * 12 * 256), *part = malloc(sizeof(float) * 12 * 256);
    CHECK(tsr_wtensor_dequantize_rows(&m.w, 0, 12, full) == TSR_OK);
    int exact = 1;
    for (int64_t r = 0; r < 12; r++)
        for (int64_t c = 0; c < 256; c++) exact &= full[r * 256 + c] == i4g_elem(&m.w, r, c);
    CHECK_MSG(exact, "INT4G dequantization departs from the layout's statement");
    CHECK(tsr_wtensor_bytes(&m.w) == 12 * (128 + 4 * 3));
    /* rows 4..9 and then columns 128..255 (the last two groups): views of the same numbers */
    tsr_wtensor rows, cols;
    CHECK(tsr_wtensor_slice(&m.w, "mlp.down_proj", TSR_SPLIT_ROWS, 4, 6, &rows) == TSR_OK);
    CHECK(tsr_wtensor_slice(&rows, "mlp.down_proj", TSR_SPLIT_COLS, 128, 128, &cols) == TSR_OK);
    CHECK(cols.rows == 6 && cols.cols == 128 && cols.row_stride == 128 && cols.scale_stride == 8);
    CHECK(tsr_wtensor_dequantize_rows(&cols, 0, 6, part) == TSR_OK);
    exact = 1;
    for (int64_t r = 0; r < 6; r++)
        for (int64_t c = 0; c < 128; c++) exact &= part[r * 128 + c] == full[(r + 4) * 256 + 128 + c];
    CHECK_MSG(exact, "an INT4G slice is not a view of the same weights");
    CHECK(tsr_wtensor_slice(&m.w, "mlp.down_proj", TSR_SPLIT_COLS, 32, 64, &cols) == TSR_ERR_INVALID_ARG);
    CHECK_MSG(strstr(tsr_last_error(), "mlp.down_proj") && strstr(tsr_last_error(), "0 and 64"), "%s", tsr_last_error());
    CHECK(tsr_wtensor_dequantize_rows(&m.w, 10, 3, part) == TSR_ERR_INVALID_ARG);
    free(full), free(part);
    i4g_free(&m);
}

/* Every implementation against the reference twin (8-bit activations: the bound of the other
 * 4-bit types) and the SIMD ones against the portable kernel; symmetric and asymmetric, groups
 * of 32 to a whole row, and a column slice with wider strides. */
static void test_int4g_matmul(tsr_cpu_pool *pool) {
    static const struct { int64_t rows, cols, group, n_tok; int zeros; } cases[] = {
        {37, 256, 32, 1, 1}, {16, 4096, 128, 3, 1}, {65, 1024, 64, 17, 0}, {8, 512, 512, 2, 1}, {33, 2048, 128, 5, 0},
    };
    const tsr_qmm_impl impls[] = {TSR_QMM_PORTABLE, TSR_QMM_AVX2, TSR_QMM_AVX512VNNI, TSR_QMM_AUTO};
    double worst = 0;
    for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++) {
        i4g m;
        i4g_rand(&m, cases[s].rows, cases[s].cols, cases[s].group, cases[s].zeros);
        tsr_wtensor w = m.w;
        if (s == 4) CHECK(tsr_wtensor_slice(&m.w, "o_proj", TSR_SPLIT_COLS, 1024, 1024, &w) == TSR_OK);
        const int64_t nt = cases[s].n_tok, ldy = w.rows + 2;
        float *x = malloc(sizeof(float) * (size_t)(nt * w.cols));
        for (int64_t i = 0; i < nt * w.cols; i++) x[i] = frand(-1, 1);
        const size_t ny = (size_t)(nt * ldy);
        float *ref = malloc(sizeof(float) * ny), *port = malloc(sizeof(float) * ny), *y = malloc(sizeof(float) * ny);
        CHECK(tsr_qmatmul_ref(&w, x, nt, ref, ldy) == TSR_OK);
        for (size_t k = 0; k < sizeof impls / sizeof impls[0]; k++) {
            if (!tsr_qmm_impl_available(impls[k])) continue;
            for (size_t i = 0; i < ny; i++) y[i] = -7.0f;
            void *work = malloc(tsr_qmatmul_work_size(w.type, nt, w.cols) + 1);
            const tsr_status st = tsr_qmatmul(k == 3 ? pool : NULL, &w, x, nt, y, ldy, k == 1 ? work : NULL, impls[k]);
            free(work);
            CHECK_MSG(st == TSR_OK, "INT4G %s: %s", tsr_qmm_impl_name(impls[k]), tsr_last_error());
            double err = 0, err_port = 0;
            int gap_ok = 1;
            for (int64_t t = 0; t < nt; t++) {
                err += nmse(y + t * ldy, ref + t * ldy, w.rows) / (double)nt;
                if (k > 0) err_port += nmse(y + t * ldy, port + t * ldy, w.rows) / (double)nt;
                for (int64_t r = w.rows; r < ldy; r++) gap_ok &= y[t * ldy + r] == -7.0f;
            }
            CHECK_MSG(err < 2e-4, "INT4G %s [%lld x %lld] g %lld n_tok %lld: nMSE %.3g vs the reference",
                      tsr_qmm_impl_name(impls[k]), (long long)w.rows, (long long)w.cols, (long long)w.block,
                      (long long)nt, err);
            CHECK_MSG(err_port < 1e-9, "INT4G %s: nMSE %.3g vs the portable path", tsr_qmm_impl_name(impls[k]), err_port);
            CHECK_MSG(gap_ok, "INT4G %s wrote past rows", tsr_qmm_impl_name(impls[k]));
            if (k == 0) memcpy(port, y, sizeof(float) * ny);
            if (err > worst) worst = err;
        }
        free(x), free(ref), free(port), free(y);
        i4g_free(&m);
    }
    printf("  INT4G worst nMSE vs reference %.3g (bound 2e-4)\n", worst);
}

int main(void) {
    printf("qmatmul: best implementation on this CPU: %s\n", tsr_qmm_impl_name(tsr_qmm_impl_best()));
    test_descriptor();
    test_column_slice();
    tsr_cpu_pool *pool = tsr_cpu_pool_init(2);
    for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++) test_type(all_types[i], pool);
    test_int4g_dequantize_and_slices();
    test_int4g_matmul(pool);
    tsr_cpu_pool_free(pool);
    return tsr_test_finish();
}
