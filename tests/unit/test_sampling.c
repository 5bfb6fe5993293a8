/* Sampling: the RNG against Random123's published known answers, each stage on crafted logits
 * where the right answer is worked out by hand, the fast truncation against a brute-force
 * full sort on a real-sized vocabulary, and empirical distributions against the exact ones. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "tests/test_util.h"
#include "worker/sampling.h"

static void test_philox(void) {
    /* Random123 kat_vectors for philox4x32_10. */
    uint32_t r[4];
    tsr_philox4x32(0, 0, 0, r);
    CHECK(r[0] == 0x6627e8d5u && r[1] == 0xe169c58du && r[2] == 0xbc57ac4cu && r[3] == 0x9b00dbd8u);
    tsr_philox4x32(UINT64_MAX, UINT64_MAX, UINT64_MAX, r);
    CHECK(r[0] == 0x408f276du && r[1] == 0x41c83b0eu && r[2] == 0xa20bc7c6u && r[3] == 0x6d5451fdu);
    tsr_philox4x32(0x299f31d0a4093822ull, 0x85a308d3243f6a88ull, 0x0370734413198a2eull, r);
    CHECK(r[0] == 0xd16cfe09u && r[1] == 0x94fdccebu && r[2] == 0x5001e420u && r[3] == 0x24126ea1u);

    double sum = 0, lo = 1, hi = 0;
    for (int i = 0; i < 100000; i++) {
        double u = tsr_sampling_uniform(42, (uint64_t)i);
        CHECK(u >= 0.0 && u < 1.0);
        sum += u;
        if (u < lo) lo = u;
        if (u > hi) hi = u;
    }
    CHECK_NEAR(sum / 100000, 0.5, 0.005);
    CHECK(lo < 0.001 && hi > 0.999);
    CHECK(tsr_sampling_uniform(1, 5) == tsr_sampling_uniform(1, 5));
    CHECK(tsr_sampling_uniform(1, 5) != tsr_sampling_uniform(2, 5));
}

static void test_validate(void) {
    tsr_sampling_params p;
    tsr_sampling_params_default(&p);
    CHECK(tsr_sampling_params_validate(&p) == TSR_OK);
    p.top_p = 1.5f;
    CHECK(tsr_sampling_params_validate(&p) == TSR_ERR_INVALID_ARG);
    CHECK(strstr(tsr_last_error(), "top_p") != NULL);
    tsr_sampling_params_default(&p);
    p.temperature = -1;
    CHECK(tsr_sampling_params_validate(&p) == TSR_ERR_INVALID_ARG);
    tsr_sampling_params_default(&p);
    p.min_p = 2;
    CHECK(tsr_sampling_params_validate(&p) == TSR_ERR_INVALID_ARG);
    tsr_sampling_params_default(&p);
    p.repetition_penalty = 0;
    CHECK(tsr_sampling_params_validate(&p) == TSR_ERR_INVALID_ARG);
    tsr_sampling_params_default(&p);
    p.presence_penalty = 3;
    CHECK(tsr_sampling_params_validate(&p) == TSR_ERR_INVALID_ARG);
    tsr_sampling_params_default(&p);
    p.logprobs = 21;
    CHECK(tsr_sampling_params_validate(&p) == TSR_ERR_INVALID_ARG);
}

static void test_penalties(void) {
    tsr_sampler *s;
    CHECK(tsr_sampler_init(5, &s) == TSR_OK);
    tsr_sampling_params p;
    tsr_sampling_params_default(&p);
    p.repetition_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    int32_t prompt[] = {0, 1, 0};
    int32_t out[] = {2, 3, 2};
    tsr_sample_history h = {prompt, 3, out, 3};
    float l[5] = {2.0f, -2.0f, 1.0f, 0.5f, 3.0f};
    tsr_sampling_apply_penalties(s, l, &p, &h);
    CHECK_NEAR(l[0], 1.0, 1e-6);               /* seen in prompt (twice, once penalised) */
    CHECK_NEAR(l[1], -4.0, 1e-6);              /* negative: multiplied */
    CHECK_NEAR(l[2], 0.5 - 0.5 - 2 * 0.25, 1e-6); /* rep, presence, frequency x2 */
    CHECK_NEAR(l[3], 0.25 - 0.5 - 0.25, 1e-6);
    CHECK_NEAR(l[4], 3.0, 1e-6);               /* never seen */
    /* The count scratch is clean again: a second call gives the same result. */
    float l2[5] = {2.0f, -2.0f, 1.0f, 0.5f, 3.0f};
    tsr_sampling_apply_penalties(s, l2, &p, &h);
    CHECK(memcmp(l, l2, sizeof l) == 0);
    /* Presence and frequency look at generated tokens only. */
    tsr_sampling_params_default(&p);
    p.presence_penalty = 1.0f;
    float l3[5] = {2.0f, -2.0f, 1.0f, 0.5f, 3.0f};
    tsr_sampling_apply_penalties(s, l3, &p, &h);
    CHECK_NEAR(l3[0], 2.0, 1e-6);
    CHECK_NEAR(l3[2], 0.0, 1e-6);
    /* Greedy with a repetition penalty moves the argmax off a repeated token. */
    tsr_sampling_params_default(&p);
    p.temperature = 0;
    float l4[5] = {3.0f, 0, 0, 0, 2.0f};
    int32_t pr2[] = {0};
    tsr_sample_history h2 = {pr2, 1, NULL, 0};
    CHECK(tsr_sample(s, l4, &p, &h2, NULL) == 0);
    p.repetition_penalty = 2.0f;
    float l5[5] = {3.0f, 0, 0, 0, 2.0f};
    CHECK(tsr_sample(s, l5, &p, &h2, NULL) == 4);
    tsr_sampler_free(s);
}

/* logits = log(probs) for probs [0.4 0.3 0.2 0.1] followed by tokens of zero probability. */
static void set_logits(float *l, int V) {
    const double probs[4] = {0.4, 0.3, 0.2, 0.1};
    for (int i = 0; i < V; i++) l[i] = i < 4 ? (float)log(probs[i]) : -INFINITY;
}

static int kept_set(tsr_sampler *s, int V, float top_p, int top_k, float min_p) {
    float l[8], probs[8];
    uint8_t keep[8];
    set_logits(l, V);
    tsr_sampling_params p;
    tsr_sampling_params_default(&p);
    p.top_p = top_p;
    p.top_k = top_k;
    p.min_p = min_p;
    int64_t n = tsr_sampling_truncate(s, l, &p, keep, probs);
    int mask = 0;
    for (int v = 0; v < V; v++)
        if (keep[v]) mask |= 1 << v;
    CHECK(n == __builtin_popcount(mask));
    CHECK_NEAR(probs[0], 0.4, 1e-6);
    return mask;
}

static void test_truncation_crafted(void) {
    const int V = 8;
    tsr_sampler *s;
    CHECK(tsr_sampler_init(V, &s) == TSR_OK);
    CHECK(kept_set(s, V, 1.0f, 0, 0) == 0x0f);   /* zero-probability tokens never kept */
    CHECK(kept_set(s, V, 1.0f, 2, 0) == 0x03);
    CHECK(kept_set(s, V, 1.0f, 1, 0) == 0x01);
    CHECK(kept_set(s, V, 0.5f, 0, 0) == 0x03);   /* 0.4 < 0.5, 0.7 >= 0.5 */
    CHECK(kept_set(s, V, 0.75f, 0, 0) == 0x07);
    CHECK(kept_set(s, V, 0.3f, 0, 0) == 0x01);
    CHECK(kept_set(s, V, 0.5f, 2, 0) == 0x01);   /* top-p on top-k renormalised: 0.4/0.7 >= 0.5 */
    CHECK(kept_set(s, V, 0.85f, 3, 0) == 0x07);  /* 0.7/0.9 < 0.85 */
    CHECK(kept_set(s, V, 1.0f, 0, 0.55f) == 0x03);  /* >= 0.22 */
    CHECK(kept_set(s, V, 1.0f, 0, 0.45f) == 0x07);  /* >= 0.18 */
    CHECK(kept_set(s, V, 1.0f, 0, 1.0f) == 0x01);
    CHECK(kept_set(s, V, 0.75f, 0, 0.55f) == 0x03); /* min-p after top-p */
    CHECK(kept_set(s, V, 0.95f, 2, 0.45f) == 0x03); /* all three */
    CHECK(kept_set(s, V, 0.75f, 3, 0.2f) == 0x03);  /* 0.7/0.9 >= 0.75 */
    CHECK(kept_set(s, V, 0.8f, 3, 0.2f) == 0x07);   /* 0.7/0.9 < 0.8; min-p cuts at 0.08 */
    tsr_sampler_free(s);
}

/* Reference: full sort, then apply each stage exactly as sampling.h says. */
typedef struct { float p; int id; } ref_cand;
static int ref_cmp(const void *a, const void *b) {
    const ref_cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

static void test_truncation_vs_reference(void) {
    const int V = 49152;
    tsr_sampler *s;
    CHECK(tsr_sampler_init(V, &s) == TSR_OK);
    float *l = malloc(V * sizeof *l), *probs = malloc(V * sizeof *probs);
    uint8_t *keep = malloc(V);
    ref_cand *rc = malloc(V * sizeof *rc);
    srand(7);
    const float tps[] = {1.0f, 0.9f, 0.5f, 0.99f};
    const int tks[] = {0, 1, 40, 1000};
    const float mps[] = {0.0f, 0.05f, 0.3f};
    int trial = 0;
    for (int scale_i = 0; scale_i < 3; scale_i++) {
        /* A flat, a moderate and a peaked distribution. */
        float scale = scale_i == 0 ? 0.05f : scale_i == 1 ? 2.0f : 8.0f;
        for (int v = 0; v < V; v++) {
            double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
            l[v] = scale * (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
        }
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++)
                for (int c = 0; c < 3; c++) {
                    tsr_sampling_params p;
                    tsr_sampling_params_default(&p);
                    p.top_p = tps[a];
                    p.top_k = tks[b];
                    p.min_p = mps[c];
                    int64_t n = tsr_sampling_truncate(s, l, &p, keep, probs);
                    /* reference */
                    for (int v = 0; v < V; v++) rc[v] = (ref_cand){probs[v], v};
                    qsort(rc, V, sizeof *rc, ref_cmp);
                    int K = p.top_k > 0 && p.top_k < V ? p.top_k : V;
                    double zk = 0;
                    for (int i = 0; i < K; i++) zk += rc[i].p;
                    int L = K;
                    if (p.top_p < 1) {
                        double cum = 0;
                        for (int i = 0; i < K; i++) {
                            cum += rc[i].p;
                            if (cum >= p.top_p * zk) { L = i + 1; break; }
                        }
                    }
                    for (int i = 0; i < L; i++)
                        if (rc[i].p < p.min_p * rc[0].p) { L = i; break; }
                    if (L < 1) L = 1;
                    int64_t agree = 0;
                    for (int i = 0; i < L; i++) agree += keep[rc[i].id];
                    /* Near a cut-off float rounding of the two sums may differ by one token. */
                    CHECK_MSG(llabs(n - L) <= 1 && agree >= (n < L ? n : L),
                              "trial %d scale %g top_p %g top_k %d min_p %g: kept %lld, reference %d (agree %lld)",
                              trial, scale, p.top_p, p.top_k, p.min_p, (long long)n, L, (long long)agree);
                    trial++;
                }
    }
    free(l), free(probs), free(keep), free(rc);
    tsr_sampler_free(s);
}

/* Empirical frequencies over many seeds against the exact distribution. */
static void check_distribution(tsr_sampler *s, const tsr_sampling_params *base, const double *expect) {
    enum { V = 8, N = 40000 };
    int counts[V] = {0};
    for (int i = 0; i < N; i++) {
        float l[V];
        set_logits(l, V);
        tsr_sampling_params p = *base;
        p.seed = (uint64_t)i * 7919u + 13u;
        tsr_sample_history h = {NULL, 0, NULL, 0};
        int32_t t = tsr_sample(s, l, &p, &h, NULL);
        CHECK(t >= 0 && t < V);
        counts[t]++;
    }
    for (int v = 0; v < V; v++) {
        double f = (double)counts[v] / N;
        CHECK_MSG(fabs(f - expect[v]) < 0.012, "token %d: frequency %.4f expected %.4f", v, f, expect[v]);
        if (expect[v] == 0) CHECK(counts[v] == 0);
    }
}

static void test_distributions(void) {
    tsr_sampler *s;
    CHECK(tsr_sampler_init(8, &s) == TSR_OK);
    tsr_sampling_params p;
    tsr_sampling_params_default(&p);
    double e1[8] = {0.4, 0.3, 0.2, 0.1};
    check_distribution(s, &p, e1);
    p.temperature = 0.5f;   /* p^2 renormalised */
    double e2[8] = {0.16 / 0.30, 0.09 / 0.30, 0.04 / 0.30, 0.01 / 0.30};
    check_distribution(s, &p, e2);
    p.temperature = 2.0f;   /* sqrt(p) renormalised */
    double zs = sqrt(0.4) + sqrt(0.3) + sqrt(0.2) + sqrt(0.1);
    double e3[8] = {sqrt(0.4) / zs, sqrt(0.3) / zs, sqrt(0.2) / zs, sqrt(0.1) / zs};
    check_distribution(s, &p, e3);
    tsr_sampling_params_default(&p);
    p.top_k = 2;
    double e4[8] = {0.4 / 0.7, 0.3 / 0.7};
    check_distribution(s, &p, e4);
    tsr_sampling_params_default(&p);
    p.top_p = 0.75f;
    double e5[8] = {0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9};
    check_distribution(s, &p, e5);
    tsr_sampling_params_default(&p);
    p.min_p = 0.55f;
    check_distribution(s, &p, e4);
    tsr_sampler_free(s);
}

static void test_seed_and_logprobs(void) {
    enum { V = 16 };
    tsr_sampler *s;
    CHECK(tsr_sampler_init(V, &s) == TSR_OK);
    float base[V];
    for (int v = 0; v < V; v++) base[v] = 0.3f * (float)((v * 7) % 11) - 1.0f;

    /* Same seed, same sequence; the RNG counter is the number of generated tokens. */
    int32_t seq[3][64];
    const uint64_t seeds[3] = {1234, 1234, 99};
    for (int r = 0; r < 3; r++) {
        tsr_sampling_params p;
        tsr_sampling_params_default(&p);
        p.seed = seeds[r];
        p.temperature = 1.5f;
        for (int i = 0; i < 64; i++) {
            float l[V];
            memcpy(l, base, sizeof l);
            tsr_sample_history h = {NULL, 0, seq[r], i};
            seq[r][i] = tsr_sample(s, l, &p, &h, NULL);
        }
    }
    CHECK(memcmp(seq[0], seq[1], sizeof seq[0]) == 0);
    CHECK(memcmp(seq[0], seq[2], sizeof seq[0]) != 0);

    /* Raw logprobs: log-softmax of the logits as given, whatever the processing. */
    tsr_sampling_params p;
    tsr_sampling_params_default(&p);
    p.temperature = 0.7f;
    p.repetition_penalty = 1.3f;
    p.top_k = 3;
    p.logprobs = V < TSR_SAMPLING_MAX_LOGPROBS ? V : TSR_SAMPLING_MAX_LOGPROBS;
    int32_t prompt[] = {3, 4};
    tsr_sample_history h = {prompt, 2, NULL, 0};
    float l[V];
    memcpy(l, base, sizeof l);
    tsr_sample_result res;
    int32_t t = tsr_sample(s, l, &p, &h, &res);
    CHECK(res.token == t);
    double z = 0;
    for (int v = 0; v < V; v++) z += exp(base[v]);
    CHECK_NEAR(res.logprob, base[t] - log(z), 1e-5);
    CHECK(res.n_top == V);
    double sum = 0;
    for (int i = 0; i < res.n_top; i++) {
        sum += exp(res.top[i].logprob);
        if (i) CHECK(res.top[i].logprob <= res.top[i - 1].logprob);
        CHECK_NEAR(res.top[i].logprob, base[res.top[i].id] - log(z), 1e-5);
    }
    CHECK_NEAR(sum, 1.0, 1e-5);

    /* Processed logprobs: after the penalty and temperature; still a distribution. */
    p.logprobs_mode = TSR_LOGPROBS_PROCESSED;
    memcpy(l, base, sizeof l);
    t = tsr_sample(s, l, &p, &h, &res);
    sum = 0;
    for (int i = 0; i < res.n_top; i++) sum += exp(res.top[i].logprob);
    CHECK_NEAR(sum, 1.0, 1e-5);
    float pl[V];
    memcpy(pl, base, sizeof pl);
    for (int i = 0; i < 2; i++) {
        float x = pl[prompt[i]];
        pl[prompt[i]] = x > 0 ? x / 1.3f : x * 1.3f;
    }
    double zp = 0;
    for (int v = 0; v < V; v++) zp += exp(pl[v] / 0.7);
    CHECK_NEAR(res.logprob, pl[t] / 0.7 - log(zp), 1e-4);

    /* logprobs = 0: the chosen token only. */
    p.logprobs = 0;
    p.logprobs_mode = TSR_LOGPROBS_RAW;
    memcpy(l, base, sizeof l);
    t = tsr_sample(s, l, &p, &h, &res);
    CHECK(res.n_top == 0);
    CHECK_NEAR(res.logprob, base[t] - log(z), 1e-5);
    tsr_sampler_free(s);
}

/* Not a pass/fail figure (the sanitizer build is slow): printed for the record. */
static void bench_large_vocab(void) {
    const int V = 128256;
    tsr_sampler *s;
    CHECK(tsr_sampler_init(V, &s) == TSR_OK);
    float *base = malloc(V * sizeof *base), *l = malloc(V * sizeof *l);
    srand(3);
    for (int v = 0; v < V; v++) base[v] = 3.0f * ((float)rand() / (float)RAND_MAX - 0.5f) * 4.0f;
    base[17] = 30;
    tsr_sampling_params p;
    tsr_sampling_params_default(&p);
    p.top_p = 0.95f;
    p.top_k = 50;
    p.repetition_penalty = 1.1f;
    int32_t out[64] = {0};
    const int N = 50;
    double t0 = tsr_now();
    for (int i = 0; i < N; i++) {
        memcpy(l, base, V * sizeof *l);
        tsr_sample_history h = {out, 64, out, i};
        int32_t t = tsr_sample(s, l, &p, &h, NULL);
        CHECK(t >= 0 && t < V);
    }
    double t1 = tsr_now();
    p.top_k = 0;
    p.top_p = 0.9f;
    for (int i = 0; i < N; i++) {
        memcpy(l, base, V * sizeof *l);
        tsr_sample_history h = {out, 64, out, i};
        tsr_sample(s, l, &p, &h, NULL);
    }
    double t2 = tsr_now();
    fprintf(stderr, "sampling vocab %d: top-k 50 + top-p %.3f ms/token, top-p 0.9 alone %.3f ms/token\n", V,
            (t1 - t0) * 1e3 / N, (t2 - t1) * 1e3 / N);
    free(base), free(l);
    tsr_sampler_free(s);
}

int main(void) {
    test_philox();
    test_validate();
    test_penalties();
    test_truncation_crafted();
    test_truncation_vs_reference();
    test_distributions();
    test_seed_and_logprobs();
    bench_large_vocab();
    return tsr_test_finish();
}
