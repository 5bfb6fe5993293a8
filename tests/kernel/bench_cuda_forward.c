/* The CUDA forward pass against the hardware's limits (the figures of issue 5), on dummy
 * weights made on the GPU (no checkpoint needed):
 *   - the two ceilings, measured here: device-to-device copy bandwidth (bytes read + written)
 *     and a large bf16/f16 cuBLAS GEMM;
 *   - batch-1 decode tok/s (one full step each: embeddings .. logits on the host), against the
 *     roofline = measured bandwidth / (weight bytes + KV bytes read per step);
 *   - batch-64 decode tok/s at context 512, same roofline;
 *   - time to first token of a 2048-token prompt (one prefill step + logits), with its MFU
 *     against the measured GEMM rate and against the nominal 800 TFLOP/s (H100 bf16 dense).
 * Usage: bench_cuda_forward [--config llama3-8b|PATH/config.json] [--dtype bf16|f16]
 *                           [--decode-steps N] [--batch B] [--ctx C] [--prompt P]
 * Prints a table (markdown) on stdout; progress on stderr. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/backend.h"
#include "worker/forward.h"
#include "worker/kv_pool.h"
#include "worker/weights.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define CK(x)                                                                                \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));                         \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

/* Device-to-device copy of 1 GiB, bytes read + written per second (median of 10). */
static double measure_bw(void) {
    size_t n = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    double t[10];
    for (int i = -2; i < 10; i++) {
        cudaEventRecord(e0, 0);
        CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0));
        cudaEventRecord(e1, 0);
        CK(cudaEventSynchronize(e1));
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i >= 0) t[i] = ms / 1e3;
    }
    cudaFree(a), cudaFree(b);
    return 2.0 * (double)n / median(t, 10);
}

/* A large GEMM through the backend's matmul (cuBLAS): FLOP/s, median of 10. */
static double measure_gemm(tsr_backend *be) {
    int64_t M = 8192, N = 8192, K = 8192;
    void *x = be->ops->alloc(be, (size_t)(M * K) * 2), *w = be->ops->alloc(be, (size_t)(N * K) * 2),
         *o = be->ops->alloc(be, (size_t)(M * N) * 2);
    be->ops->fill_hash(be, x, M, K, 1, 0, K, 1.0f, 0.0f); /* random, never zeros */
    be->ops->fill_hash(be, w, N, K, 2, 0, K, 0.01f, 0.0f);
    double t[10];
    for (int i = -2; i < 10; i++) {
        be->ops->synchronize(be);
        double t0 = tsr_now();
        be->ops->matmul(be, o, x, w, M, N, K);
        be->ops->synchronize(be);
        if (i >= 0) t[i] = tsr_now() - t0;
    }
    be->ops->dfree(be, x), be->ops->dfree(be, w), be->ops->dfree(be, o);
    return 2.0 * (double)M * N * K / median(t, 10);
}

static void llama3_8b(tsr_model_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_name, sizeof c->model_name, "llama3-8b-shaped (dummy)");
    c->arch = TSR_ARCH_LLAMA;
    c->vocab_size = 128256;
    c->d_model = 4096;
    c->n_layer = 32;
    c->n_head = 32;
    c->n_kv_head = 8;
    c->head_dim = 128;
    c->d_ff = 14336;
    c->norm_eps = 1e-5f;
    c->rope_theta = 500000.0f;
    c->max_position_embeddings = 8192;
    c->rope_type = TSR_ROPE_LLAMA3;
    c->rope_factor = 8.0f;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_pos = 8192;
    c->bos_id = 128000;
    c->eos_id = 128001;
}

int main(int argc, char **argv) {
    const char *config = "llama3-8b", *dtype_s = "bf16";
    int64_t decode_steps = 128, batch = 64, ctx = 512, prompt = 2048;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--config")) config = argv[i + 1];
        else if (!strcmp(argv[i], "--dtype")) dtype_s = argv[i + 1];
        else if (!strcmp(argv[i], "--decode-steps")) decode_steps = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--ctx")) ctx = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) prompt = atoll(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    tsr_dtype dt = !strcmp(dtype_s, "f16") || !strcmp(dtype_s, "fp16") ? TSR_F16 : TSR_BF16;
    tsr_model_config cfg;
    if (!strcmp(config, "llama3-8b")) llama3_8b(&cfg);
    else if (tsr_model_config_load(config, &cfg) != TSR_OK) {
        fprintf(stderr, "bench: %s\n", tsr_last_error());
        return 1;
    }
    tsr_backend *be = tsr_backend_cuda_init(0, dt);
    if (!be) {
        fprintf(stderr, "bench: %s\n", tsr_last_error());
        return 1;
    }
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    double bw = measure_bw(), gemm = measure_gemm(be);
    fprintf(stderr, "bench: %s, copy bandwidth %.0f GB/s, %s GEMM %.0f TFLOP/s\n", prop.name, bw / 1e9, dtype_s, gemm / 1e12);

    double t0 = tsr_now();
    tsr_model *m = NULL;
    if (tsr_model_init_dummy(&cfg, be, NULL, 1234, &m) != TSR_OK) {
        fprintf(stderr, "bench: %s\n", tsr_last_error());
        return 1;
    }
    be->ops->synchronize(be);
    fprintf(stderr, "bench: dummy weights %.2f GB made on the GPU in %.1f s\n", (double)m->weight_bytes / 1e9, tsr_now() - t0);
    const int64_t bl = 64;
    int64_t per_seq = (ctx + decode_steps + bl) / bl + 1, pre_blocks = (prompt + bl) / bl + 1;
    int64_t n_blocks = batch * per_seq + pre_blocks + per_seq + 8;
    tsr_kv_pool kv;
    tsr_forward_state *fs = NULL;
    if (tsr_kv_pool_init_for_model(&kv, m, bl, n_blocks) != TSR_OK || tsr_forward_state_init(m, NULL, &fs) != TSR_OK) {
        fprintf(stderr, "bench: %s\n", tsr_last_error());
        return 1;
    }
    const int64_t V = cfg.vocab_size;
    const double kv_tok_bytes = (double)tsr_kv_block_bytes(m, bl) / (double)bl; /* all layers, K+V */
    const double wbytes = (double)m->weight_bytes;
    /* the embedding table is read one row per token, not whole: leave it out of the traffic */
    const double embd_bytes = (double)(V * cfg.d_model) * (double)tsr_dtype_size(dt);
    const double step_weight_bytes = m->w.lm_head_aliases_embd ? wbytes : wbytes - embd_bytes;
    float *logits = malloc(sizeof(float) * (size_t)(batch * V));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(prompt + ctx + decode_steps + 8));
    uint64_t x = 88172645463325252ull;
    for (int64_t i = 0; i < prompt + ctx + decode_steps + 8; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(100 + x % (uint64_t)(V - 200));
    }

    /* ---- batch-1 decode after a 128-token prompt ---- */
    tsr_kv_seq s1 = {0};
    if (tsr_forward_seq(fs, &kv, &s1, ids, 128, false, 0, logits) != TSR_OK) {
        fprintf(stderr, "bench: %s\n", tsr_last_error());
        return 1;
    }
    double *dt1 = malloc(sizeof(double) * (size_t)decode_steps);
    for (int64_t i = 0; i < decode_steps; i++) {
        double a = tsr_now();
        tsr_forward_seq(fs, &kv, &s1, ids + 128 + i, 1, false, 0, logits);
        dt1[i] = tsr_now() - a;
    }
    double mean_ctx1 = 128 + decode_steps / 2.0;
    double step1 = median(dt1, (int)decode_steps);
    double roof1 = bw / (step_weight_bytes + kv_tok_bytes * mean_ctx1);
    tsr_kv_seq_release(&kv, &s1);
    fprintf(stderr, "bench: batch-1 decode %.1f tok/s\n", 1.0 / step1);

    /* ---- TTFT of a prompt (one prefill step) ---- */
    double tt[3];
    for (int r = -1; r < 3; r++) {
        tsr_kv_seq s = {0};
        be->ops->synchronize(be);
        double a = tsr_now();
        if (tsr_forward_seq(fs, &kv, &s, ids, prompt, false, prompt, logits) != TSR_OK) {
            fprintf(stderr, "bench: %s\n", tsr_last_error());
            return 1;
        }
        if (r >= 0) tt[r] = tsr_now() - a;
        tsr_kv_seq_release(&kv, &s);
    }
    double ttft = median(tt, 3);
    double qkv_dim = (double)(cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim;
    double lin_per_tok = 2.0 * cfg.n_layer *
                         ((double)cfg.d_model * qkv_dim + (double)cfg.n_head * cfg.head_dim * cfg.d_model +
                          3.0 * cfg.d_model * cfg.d_ff);
    double flops = lin_per_tok * prompt + 2.0 * cfg.d_model * V /* one row of logits */ +
                   2.0 * cfg.n_layer * cfg.n_head * cfg.head_dim * (double)prompt * prompt; /* causal QK^T + PV */
    fprintf(stderr, "bench: TTFT(%lld) %.1f ms\n", (long long)prompt, ttft * 1e3);

    /* ---- batch-B decode at context ctx ---- */
    tsr_kv_seq *seqs = calloc((size_t)batch, sizeof *seqs);
    double pf0 = tsr_now();
    for (int64_t s = 0; s < batch; s++)
        if (tsr_forward_seq(fs, &kv, &seqs[s], ids + (s % 7), ctx, false, ctx, NULL) != TSR_OK) {
            fprintf(stderr, "bench: %s\n", tsr_last_error());
            return 1;
        }
    be->ops->synchronize(be);
    double pf_tps = (double)(batch * ctx) / (tsr_now() - pf0);
    tsr_seq_step *qs = calloc((size_t)batch, sizeof *qs);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)batch);
    double *dtb = malloc(sizeof(double) * (size_t)decode_steps);
    int64_t nb_steps = decode_steps < 64 ? decode_steps : 64;
    for (int64_t i = 0; i < nb_steps; i++) {
        for (int64_t s = 0; s < batch; s++) {
            if (tsr_kv_seq_reserve(&kv, &seqs[s], seqs[s].n_tokens + 1) != TSR_OK) {
                fprintf(stderr, "bench: %s\n", tsr_last_error());
                return 1;
            }
            tok[s] = ids[(i + s) % 1000];
            qs[s] = (tsr_seq_step){&tok[s], 1, seqs[s].n_tokens, seqs[s].blocks, seqs[s].n_blocks};
        }
        tsr_step step = {qs, batch, false};
        double a = tsr_now();
        if (tsr_forward(fs, &kv, &step, logits) != TSR_OK) {
            fprintf(stderr, "bench: %s\n", tsr_last_error());
            return 1;
        }
        dtb[i] = tsr_now() - a;
        for (int64_t s = 0; s < batch; s++) seqs[s].n_tokens++;
    }
    double stepb = median(dtb, (int)nb_steps);
    double roofb = bw / (step_weight_bytes + kv_tok_bytes * batch * (ctx + nb_steps / 2.0));

    printf("\n## bench_cuda_forward: %s, %s, %s\n\n", cfg.model_name, dtype_s, prop.name);
    printf("measured ceilings: copy bandwidth %.0f GB/s (read + write), %s cuBLAS GEMM 8192^3 %.0f TFLOP/s\n\n",
           bw / 1e9, dtype_s, gemm / 1e12);
    printf("| figure | measured | roofline / peak | ratio |\n|---|---|---|---|\n");
    printf("| batch-1 decode (ctx ~%.0f) | %.1f tok/s (%.2f ms/step) | %.1f tok/s | %.0f%% |\n", mean_ctx1, 1.0 / step1,
           step1 * 1e3, roof1, 100.0 * (1.0 / step1) / roof1);
    printf("| batch-%lld decode (ctx %lld) | %.0f tok/s (%.2f ms/step) | %.0f tok/s | %.0f%% |\n", (long long)batch,
           (long long)ctx, batch / stepb, stepb * 1e3, batch * roofb, 100.0 * (1.0 / stepb) / roofb);
    printf("| TTFT %lld-token prompt | %.1f ms (%.0f tok/s) | MFU vs measured GEMM %.0f TFLOP/s | %.0f%% |\n",
           (long long)prompt, ttft * 1e3, prompt / ttft, gemm / 1e12, 100.0 * flops / ttft / gemm);
    printf("| TTFT %lld-token prompt | %.1f ms | MFU vs nominal 800 TFLOP/s | %.0f%% |\n", (long long)prompt, ttft * 1e3,
           100.0 * flops / ttft / 800e12);
    printf("| prefill %lld x %lld tokens (chunks of %lld) | %.0f tok/s | | |\n", (long long)batch, (long long)ctx,
           (long long)ctx, pf_tps);
    printf("\nweights %.2f GB (%.2f GB read per step), KV %.0f KB/token; step = embeddings .. f32 logits on the host\n",
           wbytes / 1e9, step_weight_bytes / 1e9, kv_tok_bytes / 1e3);
    for (int64_t s = 0; s < batch; s++) tsr_kv_seq_release(&kv, &seqs[s]);
    free(seqs), free(qs), free(tok), free(dtb), free(dt1), free(logits), free(ids);
    tsr_forward_state_free(fs);
    tsr_kv_pool_free(&kv);
    tsr_model_free(m);
    tsr_backend_free(be);
    return 0;
}
