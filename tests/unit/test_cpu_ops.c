/* The CPU backend's ops against naive formulas written out here in double precision, on
 * random data with odd sizes; paged attention against dense causal attention with several
 * block sizes, shuffled block tables, MHA / GQA / MQA and mixed prefill + decode batches. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "tests/test_util.h"

static uint64_t rng_state = 0x1234567;
static float frand(void) { /* uniform [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}
static float *rand_vec(int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = frand();
    return p;
}
static double max_abs_diff(const float *a, const double *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

static void test_matmul(tsr_backend *be) {
    const int64_t toks[] = {1, 2, 3, 17, 64};
    const int64_t ns[] = {1, 5, 16, 33, 130, 577};
    const int64_t ks[] = {1, 7, 64, 129};
    for (size_t a = 0; a < 5; a++)
        for (size_t bi = 0; bi < 6; bi++)
            for (size_t ci = 0; ci < 4; ci++) {
                int64_t T = toks[a], N = ns[bi], K = ks[ci];
                float *x = rand_vec(T * K), *w = rand_vec(N * K), *out = rand_vec(T * N);
                double *ref = malloc(sizeof(double) * (size_t)(T * N));
                for (int64_t t = 0; t < T; t++)
                    for (int64_t n = 0; n < N; n++) {
                        double s = 0;
                        for (int64_t k = 0; k < K; k++) s += (double)x[t * K + k] * w[n * K + k];
                        ref[t * N + n] = s;
                    }
                be->ops->matmul(be, out, x, w, T, N, K);
                double err = max_abs_diff(out, ref, T * N);
                CHECK_MSG(err < 1e-4 * sqrt((double)K) + 1e-5, "matmul T=%lld N=%lld K=%lld err %g", (long long)T,
                          (long long)N, (long long)K, err);
                free(x), free(w), free(out), free(ref);
            }
}

static void test_norms(tsr_backend *be) {
    const int64_t toks[] = {1, 3, 50};
    const int64_t ds[] = {1, 7, 64, 577};
    for (size_t a = 0; a < 3; a++)
        for (size_t bi = 0; bi < 4; bi++) {
            int64_t T = toks[a], D = ds[bi];
            float eps = 1e-5f;
            float *x = rand_vec(T * D), *w = rand_vec(D), *res = rand_vec(T * D), *out = rand_vec(T * D);
            float *res0 = malloc(sizeof(float) * (size_t)(T * D));
            memcpy(res0, res, sizeof(float) * (size_t)(T * D));
            double *ref = malloc(sizeof(double) * (size_t)(T * D)), *rref = malloc(sizeof(double) * (size_t)(T * D));
            /* plain */
            for (int64_t t = 0; t < T; t++) {
                double ss = 0;
                for (int64_t i = 0; i < D; i++) ss += (double)x[t * D + i] * x[t * D + i];
                double inv = 1.0 / sqrt(ss / (double)D + eps);
                for (int64_t i = 0; i < D; i++) ref[t * D + i] = x[t * D + i] * inv * w[i];
            }
            be->ops->rmsnorm(be, out, x, w, T, D, eps);
            CHECK_MSG(max_abs_diff(out, ref, T * D) < 1e-5, "rmsnorm T=%lld D=%lld", (long long)T, (long long)D);
            /* fused with the residual add */
            for (int64_t t = 0; t < T; t++) {
                double ss = 0;
                for (int64_t i = 0; i < D; i++) {
                    rref[t * D + i] = (double)res0[t * D + i] + x[t * D + i];
                    ss += rref[t * D + i] * rref[t * D + i];
                }
                double inv = 1.0 / sqrt(ss / (double)D + eps);
                for (int64_t i = 0; i < D; i++) ref[t * D + i] = rref[t * D + i] * inv * w[i];
            }
            be->ops->add_rmsnorm(be, res, x, out, w, T, D, eps);
            CHECK_MSG(max_abs_diff(res, rref, T * D) < 1e-6, "add_rmsnorm residual T=%lld D=%lld", (long long)T,
                      (long long)D);
            CHECK_MSG(max_abs_diff(out, ref, T * D) < 1e-5, "add_rmsnorm out T=%lld D=%lld", (long long)T,
                      (long long)D);
            free(x), free(w), free(res), free(res0), free(out), free(ref), free(rref);
        }
}

static void test_elementwise(tsr_backend *be) {
    int64_t T = 37, F = 301;
    float *gu = rand_vec(T * 2 * F), *out = rand_vec(T * F);
    for (int64_t i = 0; i < T * 2 * F; i++) gu[i] *= 8; /* reach the tails of the sigmoid */
    double *ref = malloc(sizeof(double) * (size_t)(T * F));
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < F; i++) {
            double g = gu[t * 2 * F + i], u = gu[t * 2 * F + F + i];
            ref[t * F + i] = g / (1.0 + exp(-g)) * u;
        }
    be->ops->silu_mul(be, out, gu, T, F);
    CHECK(max_abs_diff(out, ref, T * F) < 1e-4);

    /* add_bias on the first n columns of rows of stride ld */
    int64_t N = 13, LD = 20;
    float *x = rand_vec(T * LD), *bias = rand_vec(N);
    double *xr = malloc(sizeof(double) * (size_t)(T * LD));
    for (int64_t i = 0; i < T * LD; i++) xr[i] = x[i] + ((i % LD) < N ? bias[i % LD] : 0);
    be->ops->add_bias(be, x, bias, T, N, LD);
    CHECK(max_abs_diff(x, xr, T * LD) < 1e-6);

    /* get_rows */
    int64_t V = 11, D = 9;
    float *table = rand_vec(V * D), *rows = rand_vec(5 * D);
    int32_t ids[5] = {3, 0, 10, 3, 7};
    be->ops->get_rows(be, rows, table, ids, 5, D);
    int ok = 1;
    for (int i = 0; i < 5; i++) ok &= !memcmp(rows + i * D, table + ids[i] * D, sizeof(float) * (size_t)D);
    CHECK(ok);
    free(gu), free(out), free(ref), free(x), free(bias), free(xr), free(table), free(rows);
}

/* ---- rope ---- */

static void ref_inv_freq(const tsr_rope_params *p, int64_t seq_len, double *inv) {
    int64_t dim = p->rot_dim;
    double theta = p->theta;
    if (p->type == TSR_ROPE_DYNAMIC && seq_len > p->max_pos)
        theta *= pow(p->factor * (double)seq_len / (double)p->max_pos - (p->factor - 1), (double)dim / (double)(dim - 2));
    for (int64_t i = 0; i < dim / 2; i++) {
        inv[i] = 1.0 / pow(theta, (double)(2 * i) / (double)dim);
        if (p->type == TSR_ROPE_LINEAR) inv[i] /= p->factor;
        if (p->type == TSR_ROPE_LLAMA3) {
            double wl = 2 * M_PI / inv[i], lo = (double)p->original_max_pos / p->low_freq_factor,
                   hi = (double)p->original_max_pos / p->high_freq_factor;
            if (wl > lo) inv[i] /= p->factor;
            else if (wl >= hi) {
                double sm = ((double)p->original_max_pos / wl - p->low_freq_factor) / (p->high_freq_factor - p->low_freq_factor);
                inv[i] = (1 - sm) * inv[i] / p->factor + sm * inv[i];
            }
        }
    }
}

static void test_rope_case(tsr_backend *be, tsr_rope_params p, const char *what) {
    /* two sequences: 5 new tokens after 3 cached, and 1 decode token at a large position */
    int64_t nq = 4, nkv = 2, hd = 16, ld = (nq + 2 * nkv) * hd + 3;
    int32_t q_start[3] = {0, 5, 6}, ctx_len[2] = {8, 3001}, pos[6] = {3, 4, 5, 6, 7, 3000};
    tsr_attn_batch b = {2, 6, 3001, 1, q_start, ctx_len, pos, NULL, 0};
    float *x = rand_vec(6 * ld), *x0 = malloc(sizeof(float) * 6 * (size_t)ld);
    memcpy(x0, x, sizeof(float) * 6 * (size_t)ld);
    be->ops->rope(be, x, x + nq * hd, ld, nq, nkv, hd, &b, &p);
    double *ref = malloc(sizeof(double) * 6 * (size_t)ld);
    double inv[64];
    for (int t = 0; t < 6; t++) {
        int s = t < 5 ? 0 : 1;
        ref_inv_freq(&p, ctx_len[s], inv);
        for (int64_t i = 0; i < ld; i++) ref[t * ld + i] = x0[t * ld + i];
        for (int64_t h = 0; h < nq + nkv; h++) {
            const float *src = x0 + t * ld + h * hd;
            double *dst = ref + t * ld + h * hd;
            for (int64_t i = 0; i < hd / 2; i++) {
                double a = pos[t] * inv[i], c = cos(a), sn = sin(a);
                dst[i] = src[i] * c - src[i + hd / 2] * sn;
                dst[i + hd / 2] = src[i + hd / 2] * c + src[i] * sn;
            }
        }
        if (p.use_logn_attn && pos[t] + 1 > p.max_pos)
            for (int64_t i = 0; i < nq * hd; i++) ref[t * ld + i] *= log(pos[t] + 1.0) / log((double)p.max_pos);
    }
    /* f32 angles at position 3000 carry ~1e-4 absolute error, as in HF */
    double err = max_abs_diff(x, ref, 6 * ld);
    CHECK_MSG(err < 2e-3, "rope %s: err %g", what, err);
    free(x), free(x0), free(ref);
}

static void test_rope(tsr_backend *be) {
    tsr_rope_params p = {.type = TSR_ROPE_DEFAULT, .theta = 10000, .factor = 1, .max_pos = 2048, .rot_dim = 16};
    test_rope_case(be, p, "default");
    p.type = TSR_ROPE_LINEAR, p.factor = 4;
    test_rope_case(be, p, "linear");
    p.type = TSR_ROPE_LLAMA3, p.factor = 8, p.low_freq_factor = 1, p.high_freq_factor = 4, p.original_max_pos = 64;
    test_rope_case(be, p, "llama3");
    p.type = TSR_ROPE_DYNAMIC, p.factor = 2, p.max_pos = 1024;
    test_rope_case(be, p, "dynamic");
    p.use_logn_attn = true;
    test_rope_case(be, p, "dynamic+logn");
    /* dynamic must differ from default past max_pos (else the test above proves nothing) */
    int32_t q_start[2] = {0, 1}, ctx_len[1] = {3001}, pos[1] = {3000};
    tsr_attn_batch b = {1, 1, 3001, 1, q_start, ctx_len, pos, NULL, 0};
    float x1[48], x2[48];
    for (int i = 0; i < 48; i++) x1[i] = x2[i] = frand();
    tsr_rope_params pd = {.type = TSR_ROPE_DEFAULT, .theta = 10000, .factor = 2, .max_pos = 1024, .rot_dim = 16};
    be->ops->rope(be, x1, x1 + 16, 48, 1, 1, 16, &b, &pd);
    pd.type = TSR_ROPE_DYNAMIC;
    be->ops->rope(be, x2, x2 + 16, 48, 1, 1, 16, &b, &pd);
    CHECK(memcmp(x1, x2, sizeof x1) != 0);

    /* interleaved (GGUF row order, llama.cpp's permutation: GGUF dim 2t + s is HF dim
     * s * hd/2 + t) on the permuted vector is the HF-order rotation, permuted alike */
    enum { HD = 16, LD = 2 * HD };
    int32_t q_start2[2] = {0, 1}, ctx_len2[1] = {41}, pos2[1] = {40};
    tsr_attn_batch b2 = {1, 1, 41, 1, q_start2, ctx_len2, pos2, NULL, 0};
    float hf[LD], gg[LD];
    for (int i = 0; i < LD; i++) hf[i] = frand();
    for (int v = 0; v < 2; v++)
        for (int t = 0; t < HD / 2; t++)
            for (int s2 = 0; s2 < 2; s2++) gg[v * HD + 2 * t + s2] = hf[v * HD + s2 * HD / 2 + t];
    tsr_rope_params pi = {.type = TSR_ROPE_LLAMA3, .theta = 10000, .factor = 8, .low_freq_factor = 1,
                          .high_freq_factor = 4, .original_max_pos = 8, .max_pos = 2048, .rot_dim = HD};
    be->ops->rope(be, hf, hf + HD, LD, 1, 1, HD, &b2, &pi);
    pi.interleaved = true;
    be->ops->rope(be, gg, gg + HD, LD, 1, 1, HD, &b2, &pi);
    double worst = 0;
    for (int v = 0; v < 2; v++)
        for (int t = 0; t < HD / 2; t++)
            for (int s2 = 0; s2 < 2; s2++) {
                double d = fabs((double)gg[v * HD + 2 * t + s2] - hf[v * HD + s2 * HD / 2 + t]);
                if (d > worst) worst = d;
            }
    CHECK_MSG(worst < 1e-6, "interleaved rope differs from the permuted HF-order rope by %g", worst);
}

/* ---- paged attention against dense ---- */

typedef struct {
    int64_t n_past, n_new;
} seq_shape;

static void test_attention_case(tsr_backend *be, int64_t nq, int64_t nkv, int64_t hd, int64_t bl,
                                const seq_shape *seqs, int n_seq) {
    int64_t n_tok = 0, max_ctx = 0, max_blocks = 0, total_blocks = 0;
    for (int s = 0; s < n_seq; s++) {
        int64_t ctx = seqs[s].n_past + seqs[s].n_new, nb = (ctx + bl - 1) / bl;
        n_tok += seqs[s].n_new;
        if (ctx > max_ctx) max_ctx = ctx;
        if (nb > max_blocks) max_blocks = nb;
        total_blocks += nb;
    }
    int64_t pool_blocks = total_blocks + 3; /* a few never used */
    /* shuffled block ids: sequences get scattered, non-monotonic blocks */
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)pool_blocks);
    for (int64_t i = 0; i < pool_blocks; i++) perm[i] = (int32_t)i;
    for (int64_t i = pool_blocks - 1; i > 0; i--) {
        int64_t j = (int64_t)((frand() + 1) * 0.5 * (double)(i + 1));
        if (j > i) j = i;
        int32_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    int32_t *bt = calloc((size_t)(n_seq * max_blocks), sizeof(int32_t));
    int32_t *q_start = malloc(sizeof(int32_t) * (size_t)(n_seq + 1)), *ctx_len = malloc(sizeof(int32_t) * (size_t)n_seq);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_tok);
    int64_t used = 0, t = 0;
    for (int s = 0; s < n_seq; s++) {
        int64_t ctx = seqs[s].n_past + seqs[s].n_new, nb = (ctx + bl - 1) / bl;
        for (int64_t j = 0; j < nb; j++) bt[s * max_blocks + j] = perm[used++];
        q_start[s] = (int32_t)t;
        ctx_len[s] = (int32_t)ctx;
        for (int64_t i = 0; i < seqs[s].n_new; i++) pos[t++] = (int32_t)(seqs[s].n_past + i);
    }
    q_start[n_seq] = (int32_t)n_tok;

    /* dense K/V per sequence: [ctx][nkv][hd]; the cached prefix goes in through kv_write as
     * an earlier "step", then the new tokens as this step */
    tsr_kv_layout lay = {bl, nkv, hd, 0, NULL, NULL};
    size_t cache_n = (size_t)(pool_blocks * nkv * bl * hd);
    float *kc = be->ops->alloc(be, sizeof(float) * cache_n), *vc = be->ops->alloc(be, sizeof(float) * cache_n);
    for (size_t i = 0; i < cache_n; i++) kc[i] = vc[i] = NAN; /* poison: unwritten slots must not be read */
    float **K = malloc(sizeof(float *) * (size_t)n_seq), **V = malloc(sizeof(float *) * (size_t)n_seq);
    for (int s = 0; s < n_seq; s++) {
        int64_t ctx = seqs[s].n_past + seqs[s].n_new;
        K[s] = rand_vec(ctx * nkv * hd);
        V[s] = rand_vec(ctx * nkv * hd);
        if (seqs[s].n_past > 0) {
            int32_t qs[2] = {0, (int32_t)seqs[s].n_past}, cl[1] = {(int32_t)seqs[s].n_past};
            int32_t *pp = malloc(sizeof(int32_t) * (size_t)seqs[s].n_past);
            for (int64_t i = 0; i < seqs[s].n_past; i++) pp[i] = (int32_t)i;
            tsr_attn_batch pb = {1, seqs[s].n_past, seqs[s].n_past, max_blocks, qs, cl, pp, bt + s * max_blocks, 0};
            be->ops->kv_write(be, kc, vc, &lay, K[s], V[s], nkv * hd, &pb);
            free(pp);
        }
    }
    /* this step's new K/V inside a fused qkv-like activation (stride ld) */
    int64_t ld = (nq + 2 * nkv) * hd;
    float *qkv = rand_vec(n_tok * ld);
    t = 0;
    for (int s = 0; s < n_seq; s++)
        for (int64_t i = 0; i < seqs[s].n_new; i++, t++) {
            int64_t p = seqs[s].n_past + i;
            memcpy(qkv + t * ld + nq * hd, K[s] + p * nkv * hd, sizeof(float) * (size_t)(nkv * hd));
            memcpy(qkv + t * ld + (nq + nkv) * hd, V[s] + p * nkv * hd, sizeof(float) * (size_t)(nkv * hd));
        }
    tsr_attn_batch b = {n_seq, n_tok, max_ctx, max_blocks, q_start, ctx_len, pos, bt, 0};
    be->ops->kv_write(be, kc, vc, &lay, qkv + nq * hd, qkv + (nq + nkv) * hd, ld, &b);
    float *out = rand_vec(n_tok * nq * hd);
    float scale = 1.0f / sqrtf((float)hd);
    be->ops->attention(be, out, qkv, ld, kc, vc, &lay, nq, &b, scale);

    double *ref = calloc((size_t)(n_tok * nq * hd), sizeof(double));
    double *sc = malloc(sizeof(double) * (size_t)max_ctx);
    t = 0;
    for (int s = 0; s < n_seq; s++)
        for (int64_t i = 0; i < seqs[s].n_new; i++, t++) {
            int64_t p = seqs[s].n_past + i;
            for (int64_t h = 0; h < nq; h++) {
                int64_t g = h / (nq / nkv);
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j <= p; j++) {
                    double d = 0;
                    for (int64_t e = 0; e < hd; e++) d += (double)qkv[t * ld + h * hd + e] * K[s][(j * nkv + g) * hd + e];
                    sc[j] = d * scale;
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int64_t j = 0; j <= p; j++) sum += (sc[j] = exp(sc[j] - mx));
                for (int64_t j = 0; j <= p; j++)
                    for (int64_t e = 0; e < hd; e++) ref[(t * nq + h) * hd + e] += sc[j] / sum * V[s][(j * nkv + g) * hd + e];
            }
        }
    double err = max_abs_diff(out, ref, n_tok * nq * hd);
    CHECK_MSG(err < 1e-5, "attention nq=%lld nkv=%lld hd=%lld bl=%lld n_seq=%d: err %g", (long long)nq, (long long)nkv,
              (long long)hd, (long long)bl, n_seq, err);

    for (int s = 0; s < n_seq; s++) free(K[s]), free(V[s]);
    free(K), free(V), free(qkv), free(out), free(ref), free(sc), free(perm), free(bt), free(q_start), free(ctx_len),
        free(pos);
    be->ops->dfree(be, kc);
    be->ops->dfree(be, vc);
}

static void test_attention(tsr_backend *be) {
    /* prefill from scratch, prefill after a cached prefix (chunked prefill), decode, and all of
     * them in one varlen batch */
    const seq_shape mixed[] = {{0, 13}, {20, 7}, {70, 1}, {5, 1}, {0, 1}, {64, 64}};
    const int64_t bls[] = {1, 3, 16, 64};
    for (size_t i = 0; i < 4; i++) {
        test_attention_case(be, 4, 4, 16, bls[i], mixed, 6);  /* MHA */
        test_attention_case(be, 6, 2, 8, bls[i], mixed, 6);   /* GQA */
        test_attention_case(be, 5, 1, 12, bls[i], mixed, 6);  /* MQA, odd sizes */
        test_attention_case(be, 9, 3, 64, bls[i], mixed + 1, 2);
    }
    const seq_shape one_long[] = {{300, 45}};
    test_attention_case(be, 4, 2, 32, 64, one_long, 1);
}

int main(void) {
    int threads[] = {1, 2, 3};
    for (int i = 0; i < 3; i++) {
        tsr_backend *be = tsr_backend_cpu_init(threads[i]);
        CHECK(be != NULL);
        if (!be) break;
        test_matmul(be);
        test_norms(be);
        test_elementwise(be);
        test_rope(be);
        test_attention(be);
        tsr_backend_free(be);
    }
    return tsr_test_finish();
}
