/* Quantized KV cache (kernels/kv_quant.h, kernels/cpu/cpu_kvq.c): the policy check and its
 * messages, one row's quantize/dequantize bounds, the Hadamard rotation, and the CPU backend's
 * int8 / int4 paged attention against its f32 twin on the same random K/V (several block
 * lengths, GQA and MHA, mixed prefill + decode, contexts up to 3000 tokens, a sliding window,
 * static parameters); and the pool's bytes per block for each policy. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/kv_quant.h"
#include "tests/test_util.h"
#include "worker/kv_pool.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

static void test_policy_check(void) {
    int64_t bits = -1;
    CHECK(tsr_kvq_policy_check(0, "cpu", &bits) == TSR_OK && bits == 0);
    CHECK(tsr_kvq_policy_check(8, "cpu", &bits) == TSR_OK && bits == 8);
    CHECK(tsr_kvq_policy_check(4, "cpu", &bits) == TSR_OK && bits == 4);
    CHECK(tsr_kvq_policy_check(0, "cuda", &bits) == TSR_OK && bits == 0);
    int64_t bad[] = {1, 2, 3, 16, -1};
    for (int i = 0; i < 5; i++) {
        CHECK(tsr_kvq_policy_check(bad[i], "cpu", NULL) == TSR_ERR_INVALID_ARG);
        CHECK(strstr(tsr_last_error(), "quant_policy") != NULL);
    }
    /* no quantized KV kernels on the GPU yet: refused by name, never a silent 16-bit cache */
    CHECK(tsr_kvq_policy_check(8, "cuda", NULL) == TSR_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(tsr_last_error(), "quant_policy 8") && strstr(tsr_last_error(), "cuda backend"), "%s",
              tsr_last_error());
    CHECK(tsr_kvq_policy_check(4, "cuda", NULL) == TSR_ERR_UNSUPPORTED);
    CHECK(strstr(tsr_last_error(), "quant_policy 4") && strstr(tsr_last_error(), "cuda"));
}

static void test_rows(void) {
    const int64_t hd = 128;
    float x[128], y[128];
    uint8_t codes[128];
    uint16_t s, z;
    for (int bits = 4; bits <= 8; bits += 4)
        for (int rep = 0; rep < 200; rep++) {
            float mn = INFINITY, mx = -INFINITY;
            for (int64_t i = 0; i < hd; i++) {
                x[i] = 3.0f * frand() + (i == rep % hd ? 20.0f * frand() : 0.0f);   /* one outlier channel */
                mn = fminf(mn, x[i]);
                mx = fmaxf(mx, x[i]);
            }
            tsr_kvq_quantize_row(x, hd, bits, NULL, codes, &s, &z);
            tsr_kvq_dequantize_row(codes, hd, bits, s, z, y);
            double step = (mx - mn) / ((1 << bits) - 1), err = 0, e2 = 0;
            for (int64_t i = 0; i < hd; i++) {
                err = fmax(err, fabs(y[i] - x[i]));
                e2 += (y[i] - x[i]) * (y[i] - x[i]);
            }
            if (bits == 8) CHECK_MSG(err <= 0.5 * step + 2e-3 * (fabs(mn) + fabs(mx)), "int8 err %g step %g", err, step);
            else CHECK_MSG(sqrt(e2 / hd) <= 0.45 * step, "int4 rms %g step %g", sqrt(e2 / hd), step);
        }
    /* static parameters: codes are clamped into range, in-range values within half a step */
    float sz[2] = {0.02f, -1.0f};
    for (int64_t i = 0; i < hd; i++) x[i] = -1.0f + 5.1f * (float)i / (float)hd;   /* -1 .. 4.1, range 5.1 */
    tsr_kvq_quantize_row(x, hd, 8, sz, codes, &s, &z);
    tsr_kvq_dequantize_row(codes, hd, 8, s, z, y);
    for (int64_t i = 0; i < hd; i++)
        if (x[i] <= -1.0f + 255 * 0.02f) CHECK_NEAR(y[i], x[i], 0.0101);
        else CHECK_NEAR(y[i], -1.0f + 255 * 0.02f, 1e-3);
    /* LMDeploy's signed form: zp - 128 scale is the unsigned zero */
    CHECK_NEAR(tsr_kvq_static_zero(0.5f, 1.0f, 8), 1.0f - 64.0f, 1e-6);
    CHECK_NEAR(tsr_kvq_static_zero(0.5f, 1.0f, 4), 1.0f - 4.0f, 1e-6);
}

/* int4 K groups: a loud channel in the first group costs the other groups nothing */
static void test_groups(void) {
    const int64_t hd = 64, G = TSR_KVQ_K_GROUP, ng = hd / G;
    float x[64], y[64];
    uint8_t codes[32];
    uint16_t pr[2 * 64];
    CHECK(G == 16);
    CHECK(tsr_kvq_n_groups(4, 64, 0) == 4 && tsr_kvq_n_groups(4, 64, 1) == 1 && tsr_kvq_n_groups(8, 64, 0) == 1);
    CHECK(tsr_kvq_n_groups(4, 16, 0) == 1 && tsr_kvq_n_groups(4, 40, 0) == 1 && tsr_kvq_n_groups(4, 128, 0) == 8);
    CHECK(tsr_kvq_slot_bytes(4, 16, 64, 0, 0) == 16 * 48 && tsr_kvq_slot_bytes(4, 16, 64, 0, 1) == 16 * 36);
    CHECK(tsr_kvq_slot_bytes(8, 16, 64, 0, 0) == 16 * 68 && tsr_kvq_slot_bytes(8, 16, 64, 0, 1) == 16 * 68);
    for (int64_t i = 0; i < hd; i++) x[i] = frand() + (i == 5 ? 40.0f : 0.0f);
    tsr_kvq_quantize_row_g(x, hd, 4, ng, NULL, codes, pr);
    for (int64_t g = 0; g < ng; g++) tsr_kvq_dequantize_row(codes + g * G / 2, G, 4, pr[2 * g], pr[2 * g + 1], y + g * G);
    double e1 = 0;
    for (int64_t i = G; i < hd; i++) e1 += (y[i] - x[i]) * (y[i] - x[i]);
    CHECK_MSG(sqrt(e1 / (double)(hd - G)) < 0.1, "other groups' rms %g (one pair per row: about 0.8)",
              sqrt(e1 / (double)(hd - G)));
    CHECK_NEAR(y[5], x[5], 2.0);
}

static void test_hadamard(void) {
    float x[64], y[64];
    double n0 = 0, n1 = 0;
    for (int i = 0; i < 64; i++) {
        x[i] = y[i] = frand();
        n0 += x[i] * x[i];
    }
    tsr_kvq_hadamard(y, 64);
    for (int i = 0; i < 64; i++) n1 += y[i] * y[i];
    CHECK_NEAR(n0, n1, 1e-4 * n0);   /* orthonormal */
    tsr_kvq_hadamard(y, 64);
    double e = 0;
    for (int i = 0; i < 64; i++) e = fmax(e, fabs(y[i] - x[i]));
    CHECK(e < 1e-5);   /* its own inverse */
}

typedef struct {
    int64_t n_past, n_new;
} seq_shape;

/* Writes the same K/V into an f32 cache and a quantized one (the cached prefix as an earlier
 * step, then this step's tokens), runs attention on both and returns the worst relative error
 * of an output row, ||o_q - o|| / ||o||. */
static double attn_case(tsr_backend *be, int64_t bits, int64_t nq, int64_t nkv, int64_t hd, int64_t bl,
                        const seq_shape *seqs, int n_seq, int64_t window, int use_static) {
    int64_t n_tok = 0, max_ctx = 0, max_blocks = 0, total = 0;
    for (int s = 0; s < n_seq; s++) {
        int64_t ctx = seqs[s].n_past + seqs[s].n_new, nb = (ctx + bl - 1) / bl;
        n_tok += seqs[s].n_new;
        max_ctx = ctx > max_ctx ? ctx : max_ctx;
        max_blocks = nb > max_blocks ? nb : max_blocks;
        total += nb;
    }
    int32_t *bt = calloc((size_t)(n_seq * max_blocks), sizeof(int32_t)), used = 0;
    int32_t *q_start = malloc(sizeof(int32_t) * (size_t)(n_seq + 1)), *ctx_len = malloc(sizeof(int32_t) * (size_t)n_seq);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_tok);
    int64_t t = 0;
    for (int s = 0; s < n_seq; s++) {
        int64_t ctx = seqs[s].n_past + seqs[s].n_new, nb = (ctx + bl - 1) / bl;
        for (int64_t j = 0; j < nb; j++) bt[s * max_blocks + j] = (int32_t)(total - 1 - used++);   /* reversed ids */
        q_start[s] = (int32_t)t;
        ctx_len[s] = (int32_t)ctx;
        for (int64_t i = 0; i < seqs[s].n_new; i++) pos[t++] = (int32_t)(seqs[s].n_past + i);
    }
    q_start[n_seq] = (int32_t)n_tok;
    tsr_kv_layout lf = {bl, nkv, hd, 0, NULL, NULL}, lq = {bl, nkv, hd, bits, NULL, NULL};
    /* keys with a per-channel offset and a few loud channels, as real K has */
    float *chan = malloc(sizeof(float) * (size_t)(nkv * hd));
    for (int64_t i = 0; i < nkv * hd; i++) chan[i] = (i % 17 == 3 ? 6.0f : 1.0f) * frand();
    float *qp = malloc(sizeof(float) * 4 * (size_t)nkv);
    size_t fbytes = (size_t)total * (size_t)nkv * tsr_kvq_slot_bytes(0, bl, hd, sizeof(float), 0);
    size_t qbytes = (size_t)total * (size_t)nkv * tsr_kvq_slot_bytes(bits, bl, hd, 0, 0);   /* K's >= V's */
    float *kf = malloc(fbytes), *vf = malloc(fbytes);
    uint8_t *kq = malloc(qbytes), *vq = malloc(qbytes);
    int64_t ld = (nq + 2 * nkv) * hd;
    float **rows = malloc(sizeof(float *) * (size_t)n_seq);
    for (int s = 0; s < n_seq; s++) {
        int64_t ctx = seqs[s].n_past + seqs[s].n_new;
        rows[s] = malloc(sizeof(float) * (size_t)(ctx * ld));
        for (int64_t p = 0; p < ctx; p++)
            for (int64_t i = 0; i < ld; i++) {
                int64_t c = i - nq * hd;   /* >= 0: a K or V column */
                rows[s][p * ld + i] = frand() + (c >= 0 && c < nkv * hd ? chan[c] : 0.0f);
            }
    }
    if (use_static) {   /* LMDeploy's asymmetric parameters from each head's range over the data */
        for (int64_t g = 0; g < nkv; g++)
            for (int part = 0; part < 2; part++) {
                float mn = INFINITY, mx = -INFINITY;
                for (int s = 0; s < n_seq; s++)
                    for (int64_t p = 0; p < seqs[s].n_past + seqs[s].n_new; p++)
                        for (int64_t i = 0; i < hd; i++) {
                            float v = rows[s][p * ld + (nq + part * nkv + g) * hd + i];
                            mn = fminf(mn, v);
                            mx = fmaxf(mx, v);
                        }
                float sc = (mx - mn) / (float)((1 << bits) - 1);
                qp[4 * g + 2 * part] = sc;
                qp[4 * g + 2 * part + 1] = tsr_kvq_static_zero(sc, 0.5f * (mn + mx), bits);
            }
        lq.static_qp = qp;
    }
    for (int s = 0; s < n_seq; s++)
        if (seqs[s].n_past > 0) {
            int32_t qs[2] = {0, (int32_t)seqs[s].n_past}, cl[1] = {(int32_t)seqs[s].n_past};
            int32_t *pp = malloc(sizeof(int32_t) * (size_t)seqs[s].n_past);
            for (int64_t i = 0; i < seqs[s].n_past; i++) pp[i] = (int32_t)i;
            tsr_attn_batch pb = {1, seqs[s].n_past, seqs[s].n_past, max_blocks, qs, cl, pp, bt + s * max_blocks, window};
            be->ops->kv_write(be, kf, vf, &lf, rows[s] + nq * hd, rows[s] + (nq + nkv) * hd, ld, &pb);
            be->ops->kv_write(be, kq, vq, &lq, rows[s] + nq * hd, rows[s] + (nq + nkv) * hd, ld, &pb);
            free(pp);
        }
    float *step = malloc(sizeof(float) * (size_t)(n_tok * ld));
    t = 0;
    for (int s = 0; s < n_seq; s++)
        for (int64_t i = 0; i < seqs[s].n_new; i++, t++)
            memcpy(step + t * ld, rows[s] + (seqs[s].n_past + i) * ld, sizeof(float) * (size_t)ld);
    tsr_attn_batch b = {n_seq, n_tok, max_ctx, max_blocks, q_start, ctx_len, pos, bt, window};
    be->ops->kv_write(be, kf, vf, &lf, step + nq * hd, step + (nq + nkv) * hd, ld, &b);
    be->ops->kv_write(be, kq, vq, &lq, step + nq * hd, step + (nq + nkv) * hd, ld, &b);
    float *of = malloc(sizeof(float) * (size_t)(n_tok * nq * hd)), *oq = malloc(sizeof(float) * (size_t)(n_tok * nq * hd));
    float scale = 1.0f / sqrtf((float)hd);
    be->ops->attention(be, of, step, ld, kf, vf, &lf, nq, &b, scale);
    be->ops->attention(be, oq, step, ld, kq, vq, &lq, nq, &b, scale);
    double worst = 0;
    for (int64_t r = 0; r < n_tok * nq; r++) {
        double d = 0, n = 0;
        for (int64_t i = 0; i < hd; i++) {
            double a = of[r * hd + i], c = oq[r * hd + i];
            d += (a - c) * (a - c);
            n += a * a;
        }
        double rel = sqrt(d / (n > 1e-30 ? n : 1e-30));
        if (!(rel <= worst)) worst = rel;   /* NaN propagates */
    }
    for (int s = 0; s < n_seq; s++) free(rows[s]);
    free(rows);
    free(step);
    free(of);
    free(oq);
    free(kf);
    free(vf);
    free(kq);
    free(vq);
    free(chan);
    free(qp);
    free(bt);
    free(q_start);
    free(ctx_len);
    free(pos);
    return worst;
}

static void test_attention(tsr_backend *be) {
    const seq_shape mixed[] = {{0, 37}, {70, 1}, {5, 9}, {129, 1}};
    const seq_shape long_ctx[] = {{2999, 1}, {1500, 3}};
    const int64_t bls[] = {16, 64, 7};
    for (int bi = 0; bi < 3; bi++)
        for (int bits = 4; bits <= 8; bits += 4) {
            /* worst output row: int8 about 1% of its norm, int4 about 15% (measured 0.015, 0.19) */
            double bound = bits == 8 ? 0.03 : 0.3;
            double e = attn_case(be, bits, 6, 2, 64, bls[bi], mixed, 4, 0, 0);   /* GQA 3:1 */
            CHECK_MSG(e <= bound, "int%d bl %lld GQA mixed: rel err %g", bits, (long long)bls[bi], e);
            e = attn_case(be, bits, 4, 4, 32, bls[bi], mixed, 4, 0, 0);   /* MHA */
            CHECK_MSG(e <= bound, "int%d bl %lld MHA: rel err %g", bits, (long long)bls[bi], e);
        }
    for (int bits = 4; bits <= 8; bits += 4) {
        double bound = bits == 8 ? 0.03 : 0.3;
        double e = attn_case(be, bits, 9, 3, 64, 64, long_ctx, 2, 0, 0);
        CHECK_MSG(e <= bound, "int%d long context: rel err %g", bits, e);
        e = attn_case(be, bits, 6, 2, 64, 16, long_ctx, 2, 100, 0);   /* sliding window 100 */
        CHECK_MSG(e <= bound, "int%d window 100: rel err %g", bits, e);
        e = attn_case(be, bits, 6, 2, 64, 16, mixed, 4, 0, 1);   /* static parameters */
        CHECK_MSG(e <= (bits == 8 ? 0.03 : 0.4), "int%d static: rel err %g", bits, e);
    }
    /* the window is honoured, not ignored: a window of 1 is attention to the token itself, so the
     * output is that token's V (up to int8) */
    {
        double e1 = attn_case(be, 8, 2, 1, 32, 16, mixed, 4, 1, 0);
        CHECK_MSG(e1 <= 0.02, "window 1: rel err %g", e1);
    }
}

static void test_pool_bytes(tsr_backend *be) {
    tsr_kv_pool p0, p8, p4;
    CHECK(tsr_kv_pool_init_q(&p0, be, 3, 2, 64, 64, 10, 0) == TSR_OK);
    CHECK(tsr_kv_pool_init_q(&p8, be, 3, 2, 64, 64, 10, 8) == TSR_OK);
    CHECK(tsr_kv_pool_init_q(&p4, be, 3, 2, 64, 64, 10, 4) == TSR_OK);
    /* f32: 256 B per token-head; int8: 64 + 4; int4: V 32 + 4, K 32 + 4 groups x 4 */
    CHECK(p0.part_bytes == (size_t)10 * 2 * 64 * 256 && p0.v_part_bytes == p0.part_bytes);
    CHECK(p8.part_bytes == (size_t)10 * 2 * 64 * 68 && p8.v_part_bytes == p8.part_bytes);
    CHECK(p4.part_bytes == (size_t)10 * 2 * 64 * 48 && p4.v_part_bytes == (size_t)10 * 2 * 64 * 36);
    CHECK((char *)tsr_kv_pool_slot(&p4, 1, 1, 3, 1) - (char *)p4.data ==
          (ptrdiff_t)(p4.part_bytes * 2 + p4.v_part_bytes + (3 * 2 + 1) * 64 * 36));
    CHECK((char *)tsr_kv_pool_slot(&p4, 2, 0, 0, 0) == (char *)tsr_kv_pool_k(&p4, 2));
    CHECK((char *)tsr_kv_pool_slot(&p8, 1, 1, 3, 1) - (char *)p8.data == (ptrdiff_t)(3 * p8.part_bytes + (3 * 2 + 1) * 64 * 68));
    CHECK(tsr_kv_pool_layout(&p8, 2)->quant_bits == 8 && tsr_kv_pool_layout(&p8, 2)->static_qp == NULL);
    float qp[3 * 2 * 4];
    for (int i = 0; i < 24; i++) qp[i] = i % 2 ? 0.5f : 0.01f;
    CHECK(tsr_kv_pool_set_static(&p8, qp) == TSR_OK);
    CHECK(tsr_kv_pool_layout(&p8, 2)->static_qp != NULL);
    CHECK_NEAR(tsr_kv_pool_layout(&p8, 1)->static_qp[1], 0.5f - 128 * 0.01f, 1e-6);
    CHECK(tsr_kv_pool_set_static(&p0, qp) != TSR_OK);   /* static parameters need a quantized pool */
    qp[0] = -1;
    CHECK(tsr_kv_pool_set_static(&p4, qp) == TSR_ERR_FORMAT);
    tsr_kv_pool pb;
    CHECK(tsr_kv_pool_init_q(&pb, be, 3, 2, 64, 64, 10, 3) == TSR_ERR_INVALID_ARG);
    CHECK(tsr_kv_pool_init_q(&pb, be, 3, 2, 63, 64, 10, 4) == TSR_ERR_UNSUPPORTED);   /* odd head_dim */
    /* int4 K channel offsets (kv_qparams k_channel_zp): per layer, this rank's heads x head_dim */
    float *shift = malloc(sizeof(float) * 3 * 2 * 64);
    for (int i = 0; i < 3 * 2 * 64; i++) shift[i] = (float)i;
    CHECK(tsr_kv_pool_set_k_shift(&p8, shift) == TSR_ERR_INVALID_ARG);   /* int4 only */
    CHECK(tsr_kv_pool_set_k_shift(&p4, shift) == TSR_OK);
    CHECK(tsr_kv_pool_layout(&p4, 2)->k_shift[5] == 2 * 128 + 5 && tsr_kv_pool_layout(&p4, 2)->static_qp == NULL);
    CHECK(tsr_kv_pool_layout(&p4, 2)->quant_bits == 4 && tsr_kv_pool_layout(&p4, 0)->k_shift[0] == 0);
    shift[7] = NAN;
    CHECK(tsr_kv_pool_set_k_shift(&p4, shift) == TSR_ERR_FORMAT);
    free(shift);
    tsr_kv_pool_free(&p0);
    tsr_kv_pool_free(&p8);
    tsr_kv_pool_free(&p4);
}

int main(void) {
    test_policy_check();
    test_rows();
    test_hadamard();
    test_groups();
    int threads[] = {1, 3};
    for (int i = 0; i < 2; i++) {
        tsr_backend *be = tsr_backend_cpu_init(threads[i]);
        CHECK(be != NULL);
        if (!be) break;
        test_attention(be);
        if (i == 0) test_pool_bytes(be);
        be->ops->free(be);
    }
    return tsr_test_finish();
}
