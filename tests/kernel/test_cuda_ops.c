/* Every CUDA op against its CPU twin (kernels/cpu, the oracle), ggml test-backend-ops style:
 * fresh random inputs each run (the seed is printed; TSR_SEED=... repeats one), several shapes
 * per op (odd sizes, long contexts, several KV block sizes, MHA/GQA/MQA), the GPU output
 * poisoned with NaN before the op runs, and the error measured as normalized MSE
 *   nmse = sum (gpu - cpu)^2 / sum cpu^2
 * under a per-op bound (NaN never passes).  Inputs are rounded to the GPU's storage type before
 * the CPU sees them, so the error is the kernel's arithmetic alone.  Both bf16 and f16, then a
 * whole forward pass (a small dummy model: prefill, then decode steps that the GPU records and
 * replays as CUDA graphs) against the CPU.  One line per case; exit status 1 on any failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/knobs.h"
#include "common/log.h"
#include "common/tensor.h"
#include "coordinator/block_manager.h"
#include "kernels/backend.h"
#include "kernels/devices.h"
#include "worker/forward.h"
#include "worker/kv_pool.h"
#include "worker/weights.h"

static int g_fail = 0, g_cases = 0;
static uint64_t g_rng;

static uint64_t rnd_u64(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static float rnd_unif(void) { return (float)((rnd_u64() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }
static int64_t rnd_int(int64_t n) { return (int64_t)(rnd_u64() % (uint64_t)n); }

/* ---------------- host <-> device helpers ---------------- */

static tsr_backend *g_cpu, *g_gpu;

static float round_to(tsr_dtype t, float x) {
    if (t == TSR_BF16) return tsr_bf16_to_f32(tsr_f32_to_bf16(x));
    if (t == TSR_F16) return tsr_f16_to_f32(tsr_f32_to_f16(x));
    return x;
}

/* Random values in [-amp, amp) rounded to the GPU type, so both sides start equal. */
static float *rand_vec(int64_t n, float amp) {
    float *v = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = round_to(g_gpu->dtype, amp * rnd_unif());
    return v;
}

static void *gpu_put(const float *h, int64_t n) {
    size_t es = tsr_dtype_size(g_gpu->dtype);
    void *d = g_gpu->ops->alloc(g_gpu, es * (size_t)(n > 0 ? n : 1));
    uint16_t *tmp = malloc(es * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        if (g_gpu->dtype == TSR_BF16) tmp[i] = tsr_f32_to_bf16(h[i]);
        else if (g_gpu->dtype == TSR_F16) tmp[i] = tsr_f32_to_f16(h[i]);
    }
    if (g_gpu->dtype == TSR_F32) g_gpu->ops->upload(g_gpu, d, h, sizeof(float) * (size_t)n);
    else g_gpu->ops->upload(g_gpu, d, tmp, es * (size_t)n);
    free(tmp);
    return d;
}

/* A GPU buffer of n elements full of NaN (the poison). */
static void *gpu_nan(int64_t n) {
    float *h = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) h[i] = NAN;
    void *d = gpu_put(h, n);
    free(h);
    return d;
}

static float *gpu_get(const void *d, int64_t n) {
    float *h = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    g_gpu->ops->download_f32(g_gpu, h, d, n);
    return h;
}

static float *cpu_put(const float *h, int64_t n) {
    float *d = g_cpu->ops->alloc(g_cpu, sizeof(float) * (size_t)(n > 0 ? n : 1));
    memcpy(d, h, sizeof(float) * (size_t)n);
    return d;
}

static int32_t *gpu_ints(const int32_t *h, int64_t n) {
    int32_t *d = g_gpu->ops->alloc(g_gpu, sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    g_gpu->ops->upload(g_gpu, d, h, sizeof(int32_t) * (size_t)n);
    return d;
}

static double nmse(const float *got, const float *ref, int64_t n, int64_t *bad) {
    double num = 0, den = 0;
    *bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            (*bad)++;
            continue;
        }
        double e = (double)got[i] - ref[i];
        num += e * e;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

/* Prints the case line and counts it. */
static void report(const char *op, const char *shape, const float *got, const float *ref, int64_t n, double bound) {
    int64_t bad;
    double e = nmse(got, ref, n, &bad);
    bool ok = bad == 0 && e <= bound;
    g_cases++;
    if (!ok) g_fail++;
    printf("%-5s %-12s %-44s nmse %.3e (bound %.0e)%s  %s\n", tsr_dtype_name(g_gpu->dtype), op, shape, e, bound,
           bad ? " NON-FINITE" : "", ok ? "PASS" : "FAIL");
    fflush(stdout);
}

/* Per-op bounds, scaled by the storage type's rounding (bf16 has 8 bits of mantissa, f16 11). */
static double bound(double bf16_bound) { return g_gpu->dtype == TSR_BF16 ? bf16_bound : bf16_bound / 16.0; }

/* ---------------- elementwise, norms, GEMM ---------------- */

static void test_get_rows(int64_t V, int64_t d, int64_t n) {
    float *tab = rand_vec(V * d, 1.0f);
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) rows[i] = (int32_t)rnd_int(V);
    rows[n / 2] = -1; /* another rank's token in a vocab-parallel embedding: a row of zeros */
    float *c_tab = cpu_put(tab, V * d), *c_out = cpu_put(tab, n * d);
    g_cpu->ops->get_rows(g_cpu, c_out, c_tab, rows, n, d);
    void *g_tab = gpu_put(tab, V * d), *g_out = gpu_nan(n * d);
    int32_t *g_rows = gpu_ints(rows, n);
    g_gpu->ops->get_rows(g_gpu, g_out, g_tab, g_rows, n, d);
    float *got = gpu_get(g_out, n * d);
    char sh[64];
    snprintf(sh, sizeof sh, "V=%lld d=%lld n=%lld", (long long)V, (long long)d, (long long)n);
    report("get_rows", sh, got, c_out, n * d, 0.0);
    free(tab), free(rows), free(got);
    g_cpu->ops->dfree(g_cpu, c_tab), g_cpu->ops->dfree(g_cpu, c_out);
    g_gpu->ops->dfree(g_gpu, g_tab), g_gpu->ops->dfree(g_gpu, g_out), g_gpu->ops->dfree(g_gpu, g_rows);
}

static void test_norms(int64_t n, int64_t d) {
    float *x = rand_vec(n * d, 2.0f), *r = rand_vec(n * d, 2.0f), *w = rand_vec(d, 1.0f);
    for (int64_t i = 0; i < d; i++) w[i] = round_to(g_gpu->dtype, 1.0f + 0.5f * w[i]);
    char sh[64];
    snprintf(sh, sizeof sh, "n=%lld d=%lld", (long long)n, (long long)d);
    /* rmsnorm */
    float *cx = cpu_put(x, n * d), *cw = cpu_put(w, d), *co = cpu_put(x, n * d);
    g_cpu->ops->rmsnorm(g_cpu, co, cx, cw, n, d, 1e-5f);
    void *gx = gpu_put(x, n * d), *gw = gpu_put(w, d), *go = gpu_nan(n * d);
    g_gpu->ops->rmsnorm(g_gpu, go, gx, gw, n, d, 1e-5f);
    float *got = gpu_get(go, n * d);
    report("rmsnorm", sh, got, co, n * d, bound(2e-5));
    free(got);
    /* add + rmsnorm: both the residual and the normed output */
    float *cr = cpu_put(r, n * d);
    g_cpu->ops->add_rmsnorm(g_cpu, cr, cx, co, cw, n, d, 1e-5f);
    void *gr = gpu_put(r, n * d);
    g_gpu->ops->memset0(g_gpu, go, 0);
    void *go2 = gpu_nan(n * d);
    g_gpu->ops->add_rmsnorm(g_gpu, gr, gx, go2, gw, n, d, 1e-5f);
    got = gpu_get(go2, n * d);
    report("add_rmsnorm", sh, got, co, n * d, bound(4e-5));
    free(got);
    got = gpu_get(gr, n * d);
    report("add_rms.res", sh, got, cr, n * d, bound(2e-5));
    free(got);
    free(x), free(r), free(w);
    g_cpu->ops->dfree(g_cpu, cx), g_cpu->ops->dfree(g_cpu, cw), g_cpu->ops->dfree(g_cpu, co), g_cpu->ops->dfree(g_cpu, cr);
    void *gs[] = {gx, gw, go, gr, go2};
    for (int i = 0; i < 5; i++) g_gpu->ops->dfree(g_gpu, gs[i]);
}

static void test_matmul(int64_t n_tok, int64_t n, int64_t k) {
    float *x = rand_vec(n_tok * k, 1.0f), *w = rand_vec(n * k, 1.0f / sqrtf((float)k));
    float *cx = cpu_put(x, n_tok * k), *cw = cpu_put(w, n * k), *co = g_cpu->ops->alloc(g_cpu, sizeof(float) * (size_t)(n_tok * n));
    g_cpu->ops->matmul(g_cpu, co, cx, cw, n_tok, n, k);
    void *gx = gpu_put(x, n_tok * k), *gw = gpu_put(w, n * k), *go = gpu_nan(n_tok * n);
    g_gpu->ops->matmul(g_gpu, go, gx, gw, n_tok, n, k);
    float *got = gpu_get(go, n_tok * n);
    char sh[64];
    snprintf(sh, sizeof sh, "n_tok=%lld n=%lld k=%lld", (long long)n_tok, (long long)n, (long long)k);
    report("matmul", sh, got, co, n_tok * n, bound(2e-5));
    free(x), free(w), free(got);
    g_cpu->ops->dfree(g_cpu, cx), g_cpu->ops->dfree(g_cpu, cw), g_cpu->ops->dfree(g_cpu, co);
    g_gpu->ops->dfree(g_gpu, gx), g_gpu->ops->dfree(g_gpu, gw), g_gpu->ops->dfree(g_gpu, go);
}

/* The decode GEMV (n_tok <= 8) against cuBLAS on the Llama-3-8B shapes: weight bytes read per
 * second (the figure that bounds batch-1 decode), median of 20 runs, L2 flushed by the size of
 * the weights (all but the smallest exceed the 50 MB L2).  Information, not a pass/fail. */
static double time_matmul(void *o, const void *x, const void *w, int64_t n_tok, int64_t n, int64_t k) {
    double t[20];
    for (int i = -3; i < 20; i++) {
        g_gpu->ops->synchronize(g_gpu);
        double a = tsr_now();
        for (int r = 0; r < 10; r++) g_gpu->ops->matmul(g_gpu, o, x, w, n_tok, n, k);
        g_gpu->ops->synchronize(g_gpu);
        if (i >= 0) t[i] = (tsr_now() - a) / 10;
    }
    for (int i = 1; i < 20; i++) /* insertion sort: median */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double s = t[j];
            t[j] = t[j - 1], t[j - 1] = s;
        }
    return 0.5 * (t[9] + t[10]);
}

static void bench_gemv(int64_t n_tok, int64_t n, int64_t k, const char *what) {
    size_t es = tsr_dtype_size(g_gpu->dtype);
    void *x = g_gpu->ops->alloc(g_gpu, es * (size_t)(n_tok * k)), *w = g_gpu->ops->alloc(g_gpu, es * (size_t)(n * k)),
         *o = g_gpu->ops->alloc(g_gpu, es * (size_t)(n_tok * n));
    if (!x || !w || !o) {
        printf("bench gemv %s: out of device memory, skipped\n", what);
    } else {
        g_gpu->ops->fill_hash(g_gpu, x, n_tok, k, 11, 0, k, 1.0f, 0.0f);
        g_gpu->ops->fill_hash(g_gpu, w, n, k, 12, 0, k, 0.02f, 0.0f);
        tsr_cuda_knobs *kn = tsr_backend_cuda_knobs(g_gpu), saved = *kn;
        kn->gemv_max_tok = 8; /* the kernel itself, whatever the default cut-off */
        double tg = time_matmul(o, x, w, n_tok, n, k);
        *kn = saved;
        kn->no_gemv = true;
        double tc = time_matmul(o, x, w, n_tok, n, k);
        *kn = saved;
        double bytes = (double)es * (double)(n * k + n_tok * k + n_tok * n);
        printf("bench gemv %-8s %s n_tok=%lld n=%-6lld k=%-5lld: gemv %7.1f us %6.0f GB/s | cuBLAS %7.1f us %6.0f GB/s\n",
               what, tsr_dtype_name(g_gpu->dtype), (long long)n_tok, (long long)n, (long long)k, tg * 1e6,
               bytes / tg / 1e9, tc * 1e6, bytes / tc / 1e9);
    }
    g_gpu->ops->dfree(g_gpu, x), g_gpu->ops->dfree(g_gpu, w), g_gpu->ops->dfree(g_gpu, o);
}

/* The fused gate_up projection + SiLU-and-multiply (matmul_silu) against the CPU's matmul then
 * silu_mul: the GEMV epilogue at decode sizes, the GEMM + silu_mul above. */
static void test_matmul_silu(int64_t n_tok, int64_t n_ff, int64_t k) {
    if (!g_gpu->ops->matmul_silu) return;
    int64_t n = 2 * n_ff;
    float *x = rand_vec(n_tok * k, 1.0f), *w = rand_vec(n * k, 2.0f / sqrtf((float)k));
    float *cx = cpu_put(x, n_tok * k), *cw = cpu_put(w, n * k);
    float *cgu = g_cpu->ops->alloc(g_cpu, sizeof(float) * (size_t)(n_tok * n)),
          *co = g_cpu->ops->alloc(g_cpu, sizeof(float) * (size_t)(n_tok * n_ff));
    g_cpu->ops->matmul(g_cpu, cgu, cx, cw, n_tok, n, k);
    g_cpu->ops->silu_mul(g_cpu, co, cgu, n_tok, n_ff);
    void *gx = gpu_put(x, n_tok * k), *gw = gpu_put(w, n * k), *ggu = gpu_nan(n_tok * n), *go = gpu_nan(n_tok * n_ff);
    g_gpu->ops->matmul_silu(g_gpu, go, ggu, gx, gw, n_tok, n_ff, k);
    float *got = gpu_get(go, n_tok * n_ff);
    char sh[80];
    snprintf(sh, sizeof sh, "n_tok=%lld n_ff=%lld k=%lld", (long long)n_tok, (long long)n_ff, (long long)k);
    report("matmul_silu", sh, got, co, n_tok * n_ff, bound(1e-4));
    free(x), free(w), free(got);
    g_cpu->ops->dfree(g_cpu, cx), g_cpu->ops->dfree(g_cpu, cw), g_cpu->ops->dfree(g_cpu, cgu), g_cpu->ops->dfree(g_cpu, co);
    g_gpu->ops->dfree(g_gpu, gx), g_gpu->ops->dfree(g_gpu, gw), g_gpu->ops->dfree(g_gpu, ggu), g_gpu->ops->dfree(g_gpu, go);
}

static void test_elementwise(int64_t n_tok, int64_t n) {
    char sh[64];
    snprintf(sh, sizeof sh, "n_tok=%lld n=%lld", (long long)n_tok, (long long)n);
    /* add_bias on the first n columns of rows of ld = n + 3 */
    int64_t ld = n + 3;
    float *x = rand_vec(n_tok * ld, 2.0f), *b = rand_vec(n, 1.0f);
    float *cx = cpu_put(x, n_tok * ld), *cb = cpu_put(b, n);
    g_cpu->ops->add_bias(g_cpu, cx, cb, n_tok, n, ld);
    void *gx = gpu_put(x, n_tok * ld), *gb = gpu_put(b, n);
    g_gpu->ops->add_bias(g_gpu, gx, gb, n_tok, n, ld);
    float *got = gpu_get(gx, n_tok * ld);
    report("add_bias", sh, got, cx, n_tok * ld, bound(2e-5));
    free(got);
    /* silu_mul: gate | up */
    float *gu = rand_vec(n_tok * 2 * n, 4.0f);
    float *cgu = cpu_put(gu, n_tok * 2 * n), *co = g_cpu->ops->alloc(g_cpu, sizeof(float) * (size_t)(n_tok * n));
    g_cpu->ops->silu_mul(g_cpu, co, cgu, n_tok, n);
    void *ggu = gpu_put(gu, n_tok * 2 * n), *go = gpu_nan(n_tok * n);
    g_gpu->ops->silu_mul(g_gpu, go, ggu, n_tok, n);
    got = gpu_get(go, n_tok * n);
    report("silu_mul", sh, got, co, n_tok * n, bound(4e-5));
    free(got);
    free(x), free(b), free(gu);
    void *cs[] = {cx, cb, cgu, co};
    for (int i = 0; i < 4; i++) g_cpu->ops->dfree(g_cpu, cs[i]);
    void *gs[] = {gx, gb, ggu, go};
    for (int i = 0; i < 4; i++) g_gpu->ops->dfree(g_gpu, gs[i]);
}

/* ---------------- batches, RoPE, KV, attention ---------------- */

typedef struct {
    int64_t n_seq, n_tok, max_ctx, max_blocks, n_blocks_total;
    int32_t *q_start, *ctx_len, *positions, *bt;  /* host */
    tsr_attn_batch cpu, gpu;
    int32_t *g_arrays[4];
} batch;

/* Sequences with the given (n_past, n_new); blocks handed out as a random permutation. */
static void batch_make(batch *B, int n_seq, const int64_t *n_past, const int64_t *n_new, int64_t block_len) {
    memset(B, 0, sizeof *B);
    B->n_seq = n_seq;
    B->q_start = malloc(sizeof(int32_t) * (size_t)(n_seq + 1));
    B->ctx_len = malloc(sizeof(int32_t) * (size_t)n_seq);
    int64_t total_blocks = 0;
    for (int s = 0; s < n_seq; s++) {
        int64_t ctx = n_past[s] + n_new[s], nb = (ctx + block_len - 1) / block_len;
        B->q_start[s] = (int32_t)B->n_tok;
        B->ctx_len[s] = (int32_t)ctx;
        B->n_tok += n_new[s];
        if (ctx > B->max_ctx) B->max_ctx = ctx;
        if (nb > B->max_blocks) B->max_blocks = nb;
        total_blocks += nb;
    }
    B->q_start[n_seq] = (int32_t)B->n_tok;
    B->n_blocks_total = total_blocks + 3; /* a few never used */
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)B->n_blocks_total);
    for (int64_t i = 0; i < B->n_blocks_total; i++) perm[i] = (int32_t)i;
    for (int64_t i = B->n_blocks_total - 1; i > 0; i--) {
        int64_t j = rnd_int(i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    B->positions = malloc(sizeof(int32_t) * (size_t)B->n_tok);
    B->bt = calloc((size_t)(n_seq * B->max_blocks), sizeof(int32_t));
    int64_t used = 0;
    for (int s = 0; s < n_seq; s++) {
        for (int64_t i = 0; i < n_new[s]; i++) B->positions[B->q_start[s] + i] = (int32_t)(n_past[s] + i);
        int64_t nb = (B->ctx_len[s] + block_len - 1) / block_len;
        for (int64_t b = 0; b < nb; b++) B->bt[s * B->max_blocks + b] = perm[used++];
    }
    free(perm);
    tsr_attn_batch base = {n_seq, B->n_tok, B->max_ctx, B->max_blocks, NULL, NULL, NULL, NULL, 0};
    B->cpu = base;
    B->cpu.q_start = B->q_start, B->cpu.ctx_len = B->ctx_len, B->cpu.positions = B->positions, B->cpu.block_tables = B->bt;
    B->gpu = base;
    B->g_arrays[0] = gpu_ints(B->q_start, n_seq + 1);
    B->g_arrays[1] = gpu_ints(B->ctx_len, n_seq);
    B->g_arrays[2] = gpu_ints(B->positions, B->n_tok);
    B->g_arrays[3] = gpu_ints(B->bt, n_seq * B->max_blocks);
    B->gpu.q_start = B->g_arrays[0], B->gpu.ctx_len = B->g_arrays[1], B->gpu.positions = B->g_arrays[2];
    B->gpu.block_tables = B->g_arrays[3];
}

static void batch_free(batch *B) {
    free(B->q_start), free(B->ctx_len), free(B->positions), free(B->bt);
    for (int i = 0; i < 4; i++) g_gpu->ops->dfree(g_gpu, B->g_arrays[i]);
}

static void test_rope(const char *name, tsr_rope_type type, bool logn, int64_t n_head, int64_t n_kv, int64_t hd) {
    int64_t past[3] = {0, 70, 5}, new_[3] = {9, 1, 40};
    batch B;
    batch_make(&B, 3, past, new_, 16);
    int64_t ld = (n_head + 2 * n_kv) * hd, n = B.n_tok * ld;
    tsr_rope_params p = {.type = type, .theta = 10000.0f, .factor = 4.0f, .low_freq_factor = 1.0f, .high_freq_factor = 4.0f,
                         .original_max_pos = 16, .max_pos = 32, .rot_dim = hd, .use_logn_attn = logn};
    if (type == TSR_ROPE_LLAMA3) p.theta = 500000.0f;
    float *x = rand_vec(n, 2.0f);
    float *cx = cpu_put(x, n);
    g_cpu->ops->rope(g_cpu, cx, cx + n_head * hd, ld, n_head, n_kv, hd, &B.cpu, &p);
    void *gx = gpu_put(x, n);
    size_t es = tsr_dtype_size(g_gpu->dtype);
    g_gpu->ops->rope(g_gpu, gx, (char *)gx + (size_t)(n_head * hd) * es, ld, n_head, n_kv, hd, &B.gpu, &p);
    float *got = gpu_get(gx, n);
    char sh[80];
    snprintf(sh, sizeof sh, "%s h=%lld kv=%lld hd=%lld tok=%lld", name, (long long)n_head, (long long)n_kv, (long long)hd,
             (long long)B.n_tok);
    report("rope", sh, got, cx, n, bound(1e-4));
    free(x), free(got);
    g_cpu->ops->dfree(g_cpu, cx), g_gpu->ops->dfree(g_gpu, gx);
    batch_free(&B);
}

/* The fused rope + kv_write (rope_kv_write) against the CPU's rope then kv_write: the rotated
 * q and k in the activation, and both caches (their other slots random). */
static void test_rope_kv_write(const char *name, tsr_rope_type type, bool logn, int64_t n_head, int64_t n_kv,
                               int64_t hd, int64_t block_len) {
    if (!g_gpu->ops->rope_kv_write) return;
    int64_t past[3] = {0, 70, 5}, new_[3] = {9, 1, 40};
    batch B;
    batch_make(&B, 3, past, new_, block_len);
    tsr_kv_layout kv = {block_len, n_kv, hd, 0, NULL, NULL};
    int64_t cache_n = B.n_blocks_total * n_kv * block_len * hd;
    int64_t ld = (n_head + 2 * n_kv) * hd, n = B.n_tok * ld;
    tsr_rope_params p = {.type = type, .theta = 10000.0f, .factor = 4.0f, .low_freq_factor = 1.0f, .high_freq_factor = 4.0f,
                         .original_max_pos = 16, .max_pos = 32, .rot_dim = hd, .use_logn_attn = logn};
    if (type == TSR_ROPE_LLAMA3) p.theta = 500000.0f;
    float *x = rand_vec(n, 2.0f), *kc = rand_vec(cache_n, 1.0f), *vc = rand_vec(cache_n, 1.0f);
    float *cx = cpu_put(x, n), *c_kc = cpu_put(kc, cache_n), *c_vc = cpu_put(vc, cache_n);
    g_cpu->ops->rope(g_cpu, cx, cx + n_head * hd, ld, n_head, n_kv, hd, &B.cpu, &p);
    g_cpu->ops->kv_write(g_cpu, c_kc, c_vc, &kv, cx + n_head * hd, cx + (n_head + n_kv) * hd, ld, &B.cpu);
    void *gx = gpu_put(x, n), *g_kc = gpu_put(kc, cache_n), *g_vc = gpu_put(vc, cache_n);
    size_t es = tsr_dtype_size(g_gpu->dtype);
    g_gpu->ops->rope_kv_write(g_gpu, gx, (char *)gx + (size_t)(n_head * hd) * es,
                              (char *)gx + (size_t)((n_head + n_kv) * hd) * es, ld, n_head, &B.gpu, &p, g_kc, g_vc, &kv);
    char sh[96];
    snprintf(sh, sizeof sh, "%s h=%lld kv=%lld hd=%lld bl=%lld tok=%lld", name, (long long)n_head, (long long)n_kv,
             (long long)hd, (long long)block_len, (long long)B.n_tok);
    float *got = gpu_get(gx, n);
    report("rope_kv_write.qkv", sh, got, cx, n, bound(1e-4));
    free(got);
    got = gpu_get(g_kc, cache_n);
    report("rope_kv_write.k", sh, got, c_kc, cache_n, bound(1e-4));
    free(got);
    got = gpu_get(g_vc, cache_n);
    report("rope_kv_write.v", sh, got, c_vc, cache_n, 0.0);
    free(got);
    free(x), free(kc), free(vc);
    g_cpu->ops->dfree(g_cpu, cx), g_cpu->ops->dfree(g_cpu, c_kc), g_cpu->ops->dfree(g_cpu, c_vc);
    g_gpu->ops->dfree(g_gpu, gx), g_gpu->ops->dfree(g_gpu, g_kc), g_gpu->ops->dfree(g_gpu, g_vc);
    batch_free(&B);
}

/* kv_write then attention over a cache whose other slots hold random (older) keys/values. */
static void test_attention(const char *name, int n_seq, const int64_t *past, const int64_t *new_, int64_t n_head,
                           int64_t n_kv, int64_t hd, int64_t block_len) {
    batch B;
    batch_make(&B, n_seq, past, new_, block_len);
    tsr_kv_layout kv = {block_len, n_kv, hd, 0, NULL, NULL};
    int64_t cache_n = B.n_blocks_total * n_kv * block_len * hd;
    int64_t ld = (n_head + 2 * n_kv) * hd, n_q = B.n_tok * ld, n_out = B.n_tok * n_head * hd;
    float *kc = rand_vec(cache_n, 1.0f), *vc = rand_vec(cache_n, 1.0f), *qkv = rand_vec(n_q, 1.5f);
    float *c_kc = cpu_put(kc, cache_n), *c_vc = cpu_put(vc, cache_n), *c_qkv = cpu_put(qkv, n_q);
    float *c_out = g_cpu->ops->alloc(g_cpu, sizeof(float) * (size_t)n_out);
    void *g_kc = gpu_put(kc, cache_n), *g_vc = gpu_put(vc, cache_n), *g_qkv = gpu_put(qkv, n_q), *g_out = gpu_nan(n_out);
    size_t es = tsr_dtype_size(g_gpu->dtype);
    float scale = 1.0f / sqrtf((float)hd);
    g_cpu->ops->kv_write(g_cpu, c_kc, c_vc, &kv, c_qkv + n_head * hd, c_qkv + (n_head + n_kv) * hd, ld, &B.cpu);
    g_gpu->ops->kv_write(g_gpu, g_kc, g_vc, &kv, (char *)g_qkv + (size_t)(n_head * hd) * es,
                         (char *)g_qkv + (size_t)((n_head + n_kv) * hd) * es, ld, &B.gpu);
    g_cpu->ops->attention(g_cpu, c_out, c_qkv, ld, c_kc, c_vc, &kv, n_head, &B.cpu, scale);
    g_gpu->ops->attention(g_gpu, g_out, g_qkv, ld, g_kc, g_vc, &kv, n_head, &B.gpu, scale);
    char sh[96];
    snprintf(sh, sizeof sh, "%s h=%lld/%lld hd=%lld bl=%lld tok=%lld ctx<=%lld", name, (long long)n_head, (long long)n_kv,
             (long long)hd, (long long)block_len, (long long)B.n_tok, (long long)B.max_ctx);
    float *got = gpu_get(g_kc, cache_n);
    report("kv_write.k", sh, got, c_kc, cache_n, 0.0);
    free(got);
    got = gpu_get(g_vc, cache_n);
    report("kv_write.v", sh, got, c_vc, cache_n, 0.0);
    free(got);
    got = gpu_get(g_out, n_out);
    report("attention", sh, got, c_out, n_out, bound(2e-4));
    free(got);
    free(kc), free(vc), free(qkv);
    g_cpu->ops->dfree(g_cpu, c_kc), g_cpu->ops->dfree(g_cpu, c_vc), g_cpu->ops->dfree(g_cpu, c_qkv), g_cpu->ops->dfree(g_cpu, c_out);
    g_gpu->ops->dfree(g_gpu, g_kc), g_gpu->ops->dfree(g_gpu, g_vc), g_gpu->ops->dfree(g_gpu, g_qkv), g_gpu->ops->dfree(g_gpu, g_out);
    batch_free(&B);
}

static void test_fill_hash(void) {
    int64_t R = 37, C = 301, r0 = 5, c0 = 11, nr = 20, nc = 250;
    uint64_t key = rnd_u64();
    void *d = gpu_nan(nr * nc);
    g_gpu->ops->fill_hash(g_gpu, d, nr, nc, key, r0 * C + c0, C, 0.25f, 1.0f);
    float *got = gpu_get(d, nr * nc), *ref = malloc(sizeof(float) * (size_t)(nr * nc));
    for (int64_t i = 0; i < nr; i++)
        for (int64_t j = 0; j < nc; j++)
            ref[i * nc + j] = round_to(g_gpu->dtype, 1.0f + 0.25f * tsr_hash_uniform(key, (uint64_t)((r0 + i) * C + c0 + j)));
    (void)R;
    /* not bitwise: either side may fuse offset + scale * u into one FMA */
    report("fill_hash", "20x250 of 37x301", got, ref, nr * nc, 1e-8);
    free(got), free(ref);
    g_gpu->ops->dfree(g_gpu, d);
}

/* ---------------- a whole forward pass, with graphs ---------------- */

static void test_forward(const char *name, int64_t n_head, int64_t n_kv, int64_t hd, tsr_rope_type rope) {
    tsr_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model_name, sizeof cfg.model_name, "test");
    cfg.arch = TSR_ARCH_LLAMA;
    cfg.vocab_size = 1000;
    cfg.d_model = n_head * hd;
    cfg.n_layer = 3;
    cfg.n_head = n_head;
    cfg.n_kv_head = n_kv;
    cfg.head_dim = hd;
    cfg.d_ff = 3 * cfg.d_model - 5;
    cfg.norm_eps = 1e-5f;
    cfg.rope_theta = 10000.0f;
    cfg.max_position_embeddings = 64;
    cfg.rope_type = rope;
    cfg.rope_factor = 2.0f;
    cfg.bos_id = 1, cfg.eos_id = 2;
    uint64_t seed = rnd_u64();
    tsr_model *mc = NULL, *mg = NULL;
    tsr_forward_state *fc = NULL, *fg = NULL;
    tsr_kv_pool kc, kg;
    tsr_block_manager *bc = NULL, *bg = NULL;   /* each pool's block ids */
    if (tsr_model_init_dummy(&cfg, g_cpu, NULL, seed, &mc) != TSR_OK || tsr_model_init_dummy(&cfg, g_gpu, NULL, seed, &mg) != TSR_OK ||
        tsr_kv_pool_init_for_model(&kc, mc, 16, 64) != TSR_OK || tsr_kv_pool_init_for_model(&kg, mg, 16, 64) != TSR_OK ||
        tsr_forward_state_init(mc, NULL, &fc) != TSR_OK || tsr_forward_state_init(mg, NULL, &fg) != TSR_OK ||
        tsr_bm_init(64, 16, &bc) != TSR_OK || tsr_bm_init(64, 16, &bg) != TSR_OK) {
        printf("forward %s: setup failed: %s  FAIL\n", name, tsr_last_error());
        g_fail++, g_cases++;
        return;
    }
    int64_t V = cfg.vocab_size, n_prompt = 90, n_dec = 12;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n_prompt + n_dec));
    for (int64_t i = 0; i < n_prompt + n_dec; i++) ids[i] = (int32_t)(3 + rnd_int(V - 3));
    float *lc = malloc(sizeof(float) * (size_t)(n_prompt * V)), *lg = malloc(sizeof(float) * (size_t)(n_prompt * V));
    tsr_kv_seq sc = {0}, sg = {0};
    if (tsr_bm_seq_reserve(bc, &sc, n_prompt + n_dec) != TSR_OK || tsr_bm_seq_reserve(bg, &sg, n_prompt + n_dec) != TSR_OK)
        printf("KV reserve failed: %s\n", tsr_last_error());
    tsr_status s1 = tsr_forward_seq(fc, &kc, &sc, ids, n_prompt, true, 64, lc);
    tsr_status s2 = tsr_forward_seq(fg, &kg, &sg, ids, n_prompt, true, 64, lg);
    char sh[96];
    snprintf(sh, sizeof sh, "%s prefill %lld (chunks of 64)", name, (long long)n_prompt);
    if (s1 != TSR_OK || s2 != TSR_OK) printf("forward failed: %s\n", tsr_last_error());
    report("forward", sh, lg, lc, n_prompt * V, bound(2e-3));
    /* decode steps: the first runs eagerly, the second records a graph, the rest replay it */
    int agree = 0;
    double worst = 0;
    for (int64_t i = 0; i < n_dec; i++) {
        tsr_forward_seq(fc, &kc, &sc, ids + n_prompt + i, 1, false, 0, lc);
        tsr_forward_seq(fg, &kg, &sg, ids + n_prompt + i, 1, false, 0, lg);
        int64_t bad, ac = 0, ag = 0;
        double e = nmse(lg, lc, V, &bad);
        if (bad) e = INFINITY;
        if (e > worst) worst = e;
        for (int64_t j = 1; j < V; j++) {
            if (lc[j] > lc[ac]) ac = j;
            if (lg[j] > lg[ag]) ag = j;
        }
        agree += ac == ag;
    }
    snprintf(sh, sizeof sh, "%s decode x%lld (graphs), argmax %d/%lld", name, (long long)n_dec, agree, (long long)n_dec);
    bool ok = worst <= bound(2e-3);
    g_cases++;
    if (!ok) g_fail++;
    printf("%-5s %-12s %-44s nmse %.3e (bound %.0e)  %s\n", tsr_dtype_name(g_gpu->dtype), "forward", sh, worst,
           bound(2e-3), ok ? "PASS" : "FAIL");
    free(ids), free(lc), free(lg);
    tsr_bm_seq_release(bc, &sc);
    tsr_bm_seq_release(bg, &sg);
    tsr_bm_free(bc), tsr_bm_free(bg);
    tsr_forward_state_free(fc), tsr_forward_state_free(fg);
    tsr_kv_pool_free(&kc), tsr_kv_pool_free(&kg);
    tsr_model_free(mc), tsr_model_free(mg);
}

int main(void) {
    const char *why = NULL;
    if (tsr_cuda_device_count(&why) <= 0) {
        printf("test_cuda_ops: no CUDA device (%s): nothing run  FAIL\n", why ? why : "?");
        return 1;
    }
    const char *seed_env = getenv("TSR_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)time(NULL) * 2654435761u;
    printf("test_cuda_ops: seed %llu (TSR_SEED=%llu repeats this run)\n", (unsigned long long)seed, (unsigned long long)seed);
    g_cpu = tsr_backend_cpu_init(0);
    const tsr_dtype types[2] = {TSR_BF16, TSR_F16};
    for (int ti = 0; ti < 2; ti++) {
        g_rng = seed * 2 + 1 + (uint64_t)ti;
        g_gpu = tsr_backend_cuda_init(0, types[ti]);
        if (!g_gpu) {
            printf("cannot start the CUDA backend: %s  FAIL\n", tsr_last_error());
            return 1;
        }
        test_fill_hash();
        test_get_rows(100, 64, 7);
        test_get_rows(1000, 4096, 33);
        test_get_rows(37, 13, 5);
        test_norms(1, 4096);
        test_norms(7, 333);
        test_norms(64, 64);
        test_norms(3, 16384); /* vector kernel, 2 vectors per thread */
        test_norms(2, 24);
        test_matmul(1, 4096, 4096);
        test_matmul(1, 1027, 333);
        test_matmul(7, 333, 129);
        test_matmul(64, 512, 256);
        test_matmul(300, 257, 96);
        /* the decode GEMV (n_tok <= 8 here: its default cut-off is 2): vector and scalar paths,
         * several x chunks, odd n */
        tsr_cuda_knobs *kn = tsr_backend_cuda_knobs(g_gpu), saved = *kn;
        kn->gemv_max_tok = 8;
        test_matmul(2, 4096, 1024);
        test_matmul(3, 77, 8);
        test_matmul(5, 1001, 14336);
        test_matmul(8, 4099, 4096);
        test_matmul(8, 9, 333);
        test_matmul(4, 31, 1);
        test_matmul(6, 515, 20000);
        test_matmul(9, 130, 264);
        test_matmul_silu(5, 100, 512);
        test_matmul_silu(8, 33, 77);
        *kn = saved;
        test_matmul_silu(1, 1000, 4096);
        test_matmul_silu(1, 14336 / 8, 4096);
        test_matmul_silu(2, 77, 333);
        test_matmul_silu(2, 513, 20000);
        test_matmul_silu(3, 64, 256);
        test_matmul_silu(33, 100, 96);
        test_elementwise(1, 4096);
        test_elementwise(13, 1001);
        test_rope("default", TSR_ROPE_DEFAULT, false, 8, 2, 64);
        test_rope("default", TSR_ROPE_DEFAULT, false, 4, 4, 16);
        test_rope("linear", TSR_ROPE_LINEAR, false, 8, 2, 64);
        test_rope("llama3", TSR_ROPE_LLAMA3, false, 8, 2, 128);
        test_rope("dynamic", TSR_ROPE_DYNAMIC, false, 8, 2, 64);
        test_rope("logn", TSR_ROPE_DEFAULT, true, 8, 1, 32);
        test_rope_kv_write("default", TSR_ROPE_DEFAULT, false, 8, 2, 64, 16);
        test_rope_kv_write("llama3", TSR_ROPE_LLAMA3, false, 32, 8, 128, 64);
        test_rope_kv_write("dynamic", TSR_ROPE_DYNAMIC, false, 4, 1, 32, 8);
        test_rope_kv_write("logn", TSR_ROPE_DEFAULT, true, 6, 3, 16, 32);
        {   /* decode: one sequence, short and long (flash-decoding splits) */
            int64_t p1[1] = {0}, n1[1] = {1};
            test_attention("decode", 1, p1, n1, 32, 8, 128, 64);
            int64_t p2[1] = {4999}, n2[1] = {1};
            test_attention("decode", 1, p2, n2, 32, 8, 128, 64);
            test_attention("decode-mqa", 1, p2, n2, 16, 1, 64, 16);
            int64_t p3[1] = {1234}, n3[1] = {1};
            test_attention("decode-mha", 1, p3, n3, 6, 6, 80, 32);
            test_attention("decode-hd8", 1, p3, n3, 8, 2, 8, 128);
            int64_t p4[5] = {0, 17, 300, 64, 2047}, n4[5] = {1, 1, 1, 1, 1};
            test_attention("decode-batch", 5, p4, n4, 32, 8, 128, 16);
            test_attention("decode-batch", 5, p4, n4, 8, 2, 64, 64);
        }
        {   /* prefill: fresh, after a cached prefix, and mixed with decodes */
            int64_t p1[1] = {0}, n1[1] = {200};
            test_attention("prefill", 1, p1, n1, 32, 8, 128, 64);
            test_attention("prefill", 1, p1, n1, 8, 2, 64, 16);
            test_attention("prefill-hd16", 1, p1, n1, 4, 2, 16, 16);
            int64_t p2[1] = {300}, n2[1] = {77};
            test_attention("prefix", 1, p2, n2, 32, 8, 128, 128);
            test_attention("prefix-mqa", 1, p2, n2, 8, 1, 64, 64);
            test_attention("prefix-hd96", 1, p2, n2, 4, 2, 96, 64);
            int64_t p3[3] = {0, 50, 1000}, n3[3] = {33, 1, 129};
            test_attention("mixed", 3, p3, n3, 32, 8, 128, 64);
            test_attention("mixed", 3, p3, n3, 12, 4, 64, 32);
            int64_t p4[1] = {0}, n4[1] = {2048};
            test_attention("prefill-long", 1, p4, n4, 32, 8, 128, 64);
        }
        test_forward("gqa-hd64", 8, 2, 64, TSR_ROPE_DEFAULT);
        test_forward("mqa-hd32", 4, 1, 32, TSR_ROPE_DYNAMIC);
        test_forward("mha-hd128", 4, 4, 128, TSR_ROPE_LINEAR);
        if (!getenv("TSR_NO_BENCH")) {
            static const struct { int64_t n, k; const char *what; } shp[] = {
                {6144, 4096, "qkv"}, {4096, 4096, "o"}, {28672, 4096, "gate_up"}, {4096, 14336, "down"},
                {128256, 4096, "lm_head"}};
            static const int64_t nts[] = {1, 2, 4, 8};
            for (int ni = 0; ni < 4; ni++)
                for (int si = 0; si < 5; si++) bench_gemv(nts[ni], shp[si].n, shp[si].k, shp[si].what);
        }
        tsr_backend_free(g_gpu);
    }
    tsr_backend_free(g_cpu);
    printf("test_cuda_ops: %d of %d cases failed\n", g_fail, g_cases);
    return g_fail ? 1 : 0;
}
