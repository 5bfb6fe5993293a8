/* The CPU backend: f32 reference implementation of every op in kernels/backend.h (RoPE in
 * cpu_rope.c, the paged KV writer and attention in cpu_attention.c).  These are
 * the oracles of the CUDA kernels to come, so each is the plain formula from backend.h,
 * threaded over an obvious independent axis (tokens, output rows, (token, head) pairs) on
 * one pool.  OpenBLAS is pinned to one thread and called per slice from the pool, so only one
 * set of threads ever competes for the cores. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/knobs.h"
#include "common/log.h"
#include "common/ggml_quants.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/qmatmul.h"

/* Up to this many tokens a matmul is a set of dot products per weight row (see tsr__mm_cols). */
#define TSR__GEMV_MAX_TOK 4

/* ---------------- memory ---------------- */

static void *tsr__cpu_alloc(tsr_backend *be, size_t nbytes) {
    (void)be;
    void *p = NULL;
    /* 64-byte alignment: whole cache lines and full AVX-512 vectors. */
    if (posix_memalign(&p, 64, nbytes ? (nbytes + 63) / 64 * 64 : 64) != 0) return NULL;
    return p;
}
static void tsr__cpu_dfree(tsr_backend *be, void *p) { (void)be; free(p); }
static void tsr__cpu_upload(tsr_backend *be, void *dst, const void *src, size_t n) {
    (void)be;
    if (n) memcpy(dst, src, n);
}
static void tsr__cpu_download(tsr_backend *be, void *dst, const void *src, size_t n) {
    (void)be;
    if (n) memcpy(dst, src, n);
}
static void tsr__cpu_memset0(tsr_backend *be, void *dst, size_t n) {
    (void)be;
    if (n) memset(dst, 0, n);
}
static void tsr__cpu_sync(tsr_backend *be) { (void)be; }

/* ---------------- get_rows ---------------- */

static void tsr__cpu_get_rows(tsr_backend *be, void *out, const void *table, const int32_t *rows,
                              int64_t n, int64_t d) {
    (void)be;
    for (int64_t i = 0; i < n; i++) {
        if (rows[i] < 0) memset((float *)out + i * d, 0, sizeof(float) * (size_t)d);
        else memcpy((float *)out + i * d, (const float *)table + (int64_t)rows[i] * d, sizeof(float) * (size_t)d);
    }
}

/* ---------------- rmsnorm ---------------- */

typedef struct {
    float *residual;
    const float *x;
    float *out;
    const float *w;
    int64_t d;
    float eps;
} tsr__norm_job;

static void tsr__norm_rows(void *ctx, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const tsr__norm_job *j = ctx;
    for (int64_t t = i0; t < i1; t++) {
        const float *xr = j->x + t * j->d;
        float *orow = j->out + t * j->d;
        const float *src = xr;
        if (j->residual) {
            float *r = j->residual + t * j->d;
            for (int64_t i = 0; i < j->d; i++) r[i] += xr[i];
            src = r;
        }
        double ss = 0;
        for (int64_t i = 0; i < j->d; i++) ss += (double)src[i] * src[i];
        float inv = (float)(1.0 / sqrt(ss / (double)j->d + (double)j->eps));
        for (int64_t i = 0; i < j->d; i++) orow[i] = j->w[i] * (src[i] * inv);
    }
}

static void tsr__cpu_rmsnorm(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok,
                             int64_t d, float eps) {
    tsr__norm_job j = {NULL, x, out, w, d, eps};
    if (n_tok * d < TSR__SERIAL_WORK) tsr__norm_rows(&j, 0, n_tok, 0);
    else tsr_cpu_pool_run(tsr__ctx(be)->pool, n_tok, 0, tsr__norm_rows, &j);
}

static void tsr__cpu_add_rmsnorm(tsr_backend *be, void *residual, const void *x, void *out,
                                 const void *w, int64_t n_tok, int64_t d, float eps) {
    tsr__norm_job j = {residual, x, out, w, d, eps};
    if (n_tok * d < TSR__SERIAL_WORK) tsr__norm_rows(&j, 0, n_tok, 0);
    else tsr_cpu_pool_run(tsr__ctx(be)->pool, n_tok, 0, tsr__norm_rows, &j);
}

/* ---------------- matmul ---------------- */

typedef struct {
    float *out;
    const float *x, *w;
    int64_t n_tok, n, k;
} tsr__mm_job;

/* Each thread owns a slice of output columns == a slice of weight rows, so the weight is read
 * once in total (what decode is bound by) and no reduction between threads is needed. */
static void tsr__mm_cols(void *ctx, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const tsr__mm_job *j = ctx;
    /* Work in whole 16-row blocks so slices do not split a cache line of `out` for decode. */
    int64_t n0 = i0 * 16, n1 = i1 * 16 < j->n ? i1 * 16 : j->n;
    if (n1 <= n0) return;
    const float *w = j->w + n0 * j->k;
    if (j->n_tok <= TSR__GEMV_MAX_TOK) {
        /* Decode: bound by reading w once.  This loop streams each weight row past the few
         * token vectors (hot in L1) and measured ~1.7x the bandwidth of OpenBLAS 0.3.21's
         * sgemv on this Zen 4 (22 vs 13 GB/s per core, LM-head-sized matrix). */
        for (int64_t r = n0; r < n1; r++, w += j->k)
            for (int64_t t = 0; t < j->n_tok; t++) j->out[t * j->n + r] = tsr__dot(w, j->x + t * j->k, j->k);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)j->n_tok, (blasint)(n1 - n0),
                    (blasint)j->k, 1.0f, j->x, (blasint)j->k, w, (blasint)j->k, 0.0f, j->out + n0,
                    (blasint)j->n);
    }
}

static void tsr__cpu_matmul(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok,
                            int64_t n, int64_t k) {
    TSR_ASSERT(n_tok >= 0 && n > 0 && k > 0);
    if (n_tok == 0) return;
    tsr__mm_job j = {out, x, w, n_tok, n, k};
    int64_t blocks = (n + 15) / 16;
    /* A few ranges per thread, taken dynamically, so a thread the OS has parked does not stall
     * the op; fewer for prefill, where each range re-packs x inside sgemm. */
    int nt = tsr_cpu_pool_size(tsr__ctx(be)->pool);
    int64_t per = n_tok <= TSR__GEMV_MAX_TOK ? 4 : 2, grain = (blocks + nt * per - 1) / (nt * per);
    if (n_tok * n * k < TSR__SERIAL_WORK) tsr__mm_cols(&j, 0, blocks, 0);
    else tsr_cpu_pool_run(tsr__ctx(be)->pool, blocks, grain, tsr__mm_cols, &j);
}

/* ---------------- typed weights (kernels/cpu/qmatmul.h) ---------------- */

static bool tsr__cpu_wtype_native(tsr_backend *be, tsr_wtype t) {
    (void)be;
    return tsr_qmatmul_supports(t) != 0;
}

/* Batches of this many tokens or more (TESSERA_QMM_GEMM_TOK) multiply a dequantized f32 tile of
 * weight rows with OpenBLAS instead of taking 8-bit integer dot products: prefill then runs at
 * sgemm's rate (the integer kernels re-unpack every block for each group of 4 tokens, about 4x
 * slower at 512 tokens), and with f32 activations, as llama.cpp's BLAS path does. */
/* Rows of W per tile: 256 (a 64-row tile measured 7% slower at 512 tokens: each sgemm call packs x
 * again), fewer for wide rows so a thread's tile stays within 4 MiB. */
static int64_t tsr__qmm_tile_rows(int64_t cols) {
    int64_t r = ((int64_t)1 << 20) / (cols > 0 ? cols : 1);
    return r > 256 ? 256 : r < 16 ? 16 : r;
}

typedef struct {
    float *out;
    int64_t ldo;
    const float *x;
    const tsr_wtensor *w;
    int64_t n_tok;
    float *tiles;            /* [n_threads][tile_rows][cols] */
    int64_t tile_rows;
    tsr_status err;
} tsr__qgemm_job;

static void tsr__qgemm_tiles(void *ctx, int64_t i0, int64_t i1, int tid) {
    tsr__qgemm_job *j = ctx;
    const tsr_wtensor *w = j->w;
    const int64_t k = w->cols;
    const int64_t tr = j->tile_rows;
    float *tile = j->tiles + (size_t)tid * (size_t)tr * (size_t)k;
    for (int64_t b = i0; b < i1; b++) {
        int64_t r0 = b * tr, nr = w->rows - r0 < tr ? w->rows - r0 : tr;
        const float *wt = tile;
        blasint ldw = (blasint)k;
        if (w->type == TSR_WTYPE_F32) {   /* a view of f32 rows: no copy */
            wt = (const float *)((const char *)w->data + (size_t)r0 * w->row_stride);
            ldw = (blasint)(w->row_stride / sizeof(float));
        } else {
            tsr_status st = tsr_wtensor_dequantize_rows(w, r0, nr, tile);
            if (st != TSR_OK) j->err = st;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)j->n_tok, (blasint)nr, (blasint)k, 1.0f, j->x,
                    (blasint)k, wt, ldw, 0.0f, j->out + r0, (blasint)j->ldo);
    }
}

/* Grows matmul_w's scratch to `need` bytes; false (the error kept for take_error) when out of memory. */
static bool tsr__qwork(tsr__cpu_ctx *c, size_t need) {
    if (need <= c->qwork_cap) return true;
    free(c->qwork);
    c->qwork = NULL, c->qwork_cap = 0;
    if (posix_memalign(&c->qwork, 64, need) != 0) {
        c->qwork = NULL;
        if (c->err == TSR_OK) c->err = tsr_errorf(TSR_ERR_OOM, "out of memory for a %zu-byte matmul scratch", need);
        return false;
    }
    c->qwork_cap = need;
    return true;
}

static void tsr__cpu_matmul_w(tsr_backend *be, void *out, int64_t ldo, const void *x, const tsr_wtensor *w,
                              int64_t n_tok) {
    tsr__cpu_ctx *c = tsr__ctx(be);
    if (n_tok == 0) return;
    const int64_t gemm_tok = tsr_knobs_get()->qmm_gemm_tok;
    if ((gemm_tok > 0 && n_tok >= gemm_tok) || w->type == TSR_WTYPE_F32) {
        const int nt = tsr_cpu_pool_size(c->pool);
        const int64_t tr = tsr__qmm_tile_rows(w->cols);
        size_t need = (size_t)nt * (size_t)tr * (size_t)w->cols * sizeof(float);
        if (w->type == TSR_WTYPE_F32) need = 0;
        if (!tsr__qwork(c, need)) return;
        tsr__qgemm_job j = {out, ldo, x, w, n_tok, c->qwork, tr, TSR_OK};
        int64_t blocks = (w->rows + tr - 1) / tr;
        tsr_cpu_pool_run(c->pool, blocks, 1, tsr__qgemm_tiles, &j);
        if (j.err != TSR_OK && c->err == TSR_OK) c->err = j.err;
        return;
    }
    size_t need = tsr_qmatmul_work_size(w->type, n_tok, w->cols);
    if (!tsr__qwork(c, need)) return;
    tsr_status st = tsr_qmatmul(c->pool, w, x, n_tok, out, ldo, c->qwork, TSR_QMM_AUTO);
    if (st != TSR_OK && c->err == TSR_OK) c->err = st;   /* shapes are the loader's: not expected */
}

static void tsr__cpu_get_rows_w(tsr_backend *be, void *out, const tsr_wtensor *table, const int32_t *rows,
                                int64_t n) {
    tsr__cpu_ctx *c = tsr__ctx(be);
    int64_t d = table->cols;
    for (int64_t i = 0; i < n; i++) {
        float *o = (float *)out + i * d;
        if (rows[i] < 0) {
            memset(o, 0, sizeof(float) * (size_t)d);
            continue;
        }
        TSR_ASSERT(rows[i] < table->rows);
        tsr_status st = tsr_wtensor_dequantize_rows(table, rows[i], 1, o);
        if (st != TSR_OK && c->err == TSR_OK) c->err = st;
    }
}

static tsr_status tsr__cpu_take_error(tsr_backend *be) {
    tsr__cpu_ctx *c = tsr__ctx(be);
    tsr_status st = c->err;
    c->err = TSR_OK;
    return st;
}

/* ---------------- elementwise ---------------- */

static void tsr__cpu_add_bias(tsr_backend *be, void *x, const void *b, int64_t n_tok, int64_t n,
                              int64_t ld) {
    (void)be;
    float *xf = x;
    const float *bf = b;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t i = 0; i < n; i++) xf[t * ld + i] += bf[i];
}

typedef struct {
    float *out;
    const float *gu;
    int64_t n_ff;
} tsr__silu_job;

static void tsr__silu_rows(void *ctx, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const tsr__silu_job *j = ctx;
    for (int64_t t = i0; t < i1; t++) {
        const float *g = j->gu + t * 2 * j->n_ff, *u = g + j->n_ff;
        float *o = j->out + t * j->n_ff;
        for (int64_t i = 0; i < j->n_ff; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

static void tsr__cpu_silu_mul(tsr_backend *be, void *out, const void *gate_up, int64_t n_tok,
                              int64_t n_ff) {
    tsr__silu_job j = {out, gate_up, n_ff};
    if (n_tok * n_ff < TSR__SERIAL_WORK) tsr__silu_rows(&j, 0, n_tok, 0);
    else tsr_cpu_pool_run(tsr__ctx(be)->pool, n_tok, 0, tsr__silu_rows, &j);
}

/* ---------------- the table ---------------- */

static void tsr__cpu_free(tsr_backend *be) {
    tsr__cpu_ctx *c = tsr__ctx(be);
    tsr_cpu_pool_free(c->pool);
    free(c->scratch);
    free(c->qwork);
    free(c);
    free(be);
}

static const tsr_backend_ops tsr__cpu_ops = {
    .name = "cpu",
    .free = tsr__cpu_free,
    .alloc = tsr__cpu_alloc,
    .dfree = tsr__cpu_dfree,
    .upload = tsr__cpu_upload,
    .download = tsr__cpu_download,
    .memset0 = tsr__cpu_memset0,
    .synchronize = tsr__cpu_sync,
    .get_rows = tsr__cpu_get_rows,
    .rmsnorm = tsr__cpu_rmsnorm,
    .add_rmsnorm = tsr__cpu_add_rmsnorm,
    .matmul = tsr__cpu_matmul,
    .add_bias = tsr__cpu_add_bias,
    .rope = tsr__cpu_rope,
    .silu_mul = tsr__cpu_silu_mul,
    .kv_write = tsr__cpu_kv_write,
    .attention = tsr__cpu_attention,
    .take_error = tsr__cpu_take_error,
    .host_memory = true,
    .wtype_native = tsr__cpu_wtype_native,
    .matmul_w = tsr__cpu_matmul_w,
    .get_rows_w = tsr__cpu_get_rows_w,
};

tsr_backend *tsr_backend_cpu_init(int n_threads) {
    if (n_threads <= 0) n_threads = tsr_knobs_get()->threads;   /* TESSERA_THREADS, 0 when unset */
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    /* Our pool splits the GEMMs; a second pool of OpenBLAS threads would only fight it. */
    openblas_set_num_threads(1);
    tsr_backend *be = calloc(1, sizeof *be);
    tsr__cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return NULL;
    }
    c->pool = tsr_cpu_pool_init(n_threads);
    if (!c->pool) {
        free(be);
        free(c);
        return NULL;
    }
    be->ops = &tsr__cpu_ops;
    be->dtype = TSR_F32;
    be->ctx = c;
    return be;
}
