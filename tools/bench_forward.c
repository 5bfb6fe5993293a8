/* The CUDA forward pass against the hardware's limits (the figures of issue 5), on dummy
 * weights made on the GPU (no checkpoint needed):
 *   - the two ceilings, measured here: device-to-device copy bandwidth (bytes read + written)
 *     and a large bf16/f16 cuBLAS GEMM;
 *   - batch-1 decode tok/s (one full step each: embeddings .. a greedy id sampled on the device,
 *     tsr_forward_sample; beside it the same step with f32 logits downloaded and sampled on the
 *     host, the old path), against the roofline = measured bandwidth / (weight bytes + KV bytes read per step);
 *   - batch-B decode tok/s at context C, same roofline;
 *   - time to first token of a P-token prompt (one prefill step + logits), with its MFU
 *     against the measured GEMM rate and against the nominal 800 TFLOP/s (H100 bf16 dense);
 *   - how many batch-1 steps replayed a CUDA graph, and with TESSERA_PROFILE=1 the per-op GPU
 *     time of eager batch-1 steps (kernels/cuda/profile.h).
 * Under mpirun -np N every rank holds its TP shard of the same dummy model (the dummy values
 * are hashes of the unsplit tensors) and runs the same steps; the all-reduces go through NCCL.
 * The roofline of a rank is its own shard's bytes over its own GPU's bandwidth. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/bench_forward.h"
#include "tools/cli.h"

void tsr_bench_forward_opts_default(tsr_bench_forward_opts *o) {
    memset(o, 0, sizeof *o);
    o->config = "llama3-8b";
    o->dtype = "bf16";
    o->decode_steps = 128;
    o->batch = 64;
    o->ctx = 512;
    o->prompt = 2048;
}

#ifndef TSR_HAVE_CUDA

int tsr_bench_forward(const tsr_bench_forward_opts *o, int *argc, char ***argv) {
    (void)o, (void)argc, (void)argv;
    tsr_cli_err("tessera bench generate: the dummy-model benchmark needs the CUDA backend (this build has none)\n");
    return 1;
}

#else

#include <cuda_runtime.h>

#include "common/knobs.h"
#include "common/log.h"
#include "coordinator/block_manager.h"
#include "kernels/backend.h"
#include "kernels/cuda/profile.h"
#include "worker/comm.h"
#include "worker/forward.h"
#include "worker/group.h"
#include "worker/kv_pool.h"
#include "worker/weights.h"

static int tsr__bf_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double tsr__bf_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, tsr__bf_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define TSR__BF_CK(x)                                                                        \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));                         \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

/* Device-to-device copy of 1 GiB, bytes read + written per second (median of 10). */
static double tsr__bf_bandwidth(void) {
    size_t n = (size_t)1 << 30;
    void *a, *b;
    TSR__BF_CK(cudaMalloc(&a, n));
    TSR__BF_CK(cudaMalloc(&b, n));
    TSR__BF_CK(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    double t[10];
    for (int i = -2; i < 10; i++) {
        cudaEventRecord(e0, 0);
        TSR__BF_CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0));
        cudaEventRecord(e1, 0);
        TSR__BF_CK(cudaEventSynchronize(e1));
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (i >= 0) t[i] = ms / 1e3;
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(a), cudaFree(b);
    return 2.0 * (double)n / tsr__bf_median(t, 10);
}

/* A large GEMM through the backend's matmul (cuBLAS): FLOP/s, median of 10. */
static double tsr__bf_gemm(tsr_backend *be) {
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
    return 2.0 * (double)M * N * K / tsr__bf_median(t, 10);
}

static void tsr__bf_llama3_8b(tsr_model_config *c) {
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

#define TSR__BF_FAIL(r0)                                                       \
    do {                                                                       \
        if (r0) fprintf(stderr, "bench: %s\n", tsr_last_error());             \
        return 1;                                                              \
    } while (0)

int tsr_bench_forward(const tsr_bench_forward_opts *o, int *argc, char ***argv) {
    const int64_t decode_steps = o->decode_steps > 0 ? o->decode_steps : 128;
    const int64_t batch = o->batch, ctx = o->ctx > 0 ? o->ctx : 512, prompt = o->prompt;
    const char *dtype_s = o->dtype ? o->dtype : "bf16";
    tsr_dtype dt = !strcmp(dtype_s, "f16") || !strcmp(dtype_s, "fp16") ? TSR_F16 : TSR_BF16;
    tsr_model_config cfg;
    if (!o->config || !strcmp(o->config, "llama3-8b")) tsr__bf_llama3_8b(&cfg);
    else if (tsr_model_config_load(o->config, &cfg) != TSR_OK) TSR__BF_FAIL(1);

    tsr_group grp;
    if (tsr_group_init(argc, argv, &grp) != TSR_OK) TSR__BF_FAIL(1);
    const bool r0 = grp.rank == 0;
    if (o->tp > 0 && o->tp != grp.size) {
        if (r0) fprintf(stderr, "bench: --tp %lld but the group has %d ranks (run under mpirun -np %lld)\n",
                        (long long)o->tp, grp.size, (long long)o->tp);
        tsr_group_finalize(&grp);
        return 1;
    }
    int n_gpu = 0;
    if (cudaGetDeviceCount(&n_gpu) != cudaSuccess || n_gpu < 1) {
        if (r0) fprintf(stderr, "bench: no CUDA device\n");
        tsr_group_finalize(&grp);
        return 1;
    }
    int dev = grp.local_rank % n_gpu;
    TSR__BF_CK(cudaSetDevice(dev));
    tsr_backend *be = tsr_backend_cuda_init(dev, dt);
    if (!be) TSR__BF_FAIL(r0);
    struct cudaDeviceProp prop;
    TSR__BF_CK(cudaGetDeviceProperties(&prop, dev));
    double bw = tsr__bf_bandwidth(), gemm = tsr__bf_gemm(be);
    if (r0)
        fprintf(stderr, "bench: %s, copy bandwidth %.0f GB/s, %s GEMM %.0f TFLOP/s, TP %d\n", prop.name, bw / 1e9,
                dtype_s, gemm / 1e12, grp.size);

    double t0 = tsr_now();
    tsr_model *m = NULL;
    tsr_load_opts lo = {grp.rank, grp.size, false, false};
    tsr_status st = tsr_model_init_dummy(&cfg, be, &lo, 1234, &m);
    if (tsr_group_agree(&grp, st) != TSR_OK) TSR__BF_FAIL(r0);
    be->ops->synchronize(be);
    if (r0)
        fprintf(stderr, "bench: dummy weights %.2f GB per rank made on the GPU in %.1f s\n",
                (double)m->weight_bytes / 1e9, tsr_now() - t0);
    const int64_t bl = 64;
    int64_t per_seq = (ctx + decode_steps + bl) / bl + 1, pre_blocks = (prompt + bl) / bl + 1;
    int64_t n_blocks = (batch > 0 ? batch : 1) * per_seq + pre_blocks + (128 + decode_steps + bl) / bl + 8;
    tsr_kv_pool kv;
    tsr_block_manager *bm = NULL;   /* the pool's block ids */
    tsr_forward_state *fs = NULL;
    tsr_comm *comm = grp.size > 1 ? tsr_comm_nccl_init(tsr_backend_cuda_stream(be)) : tsr_comm_single_init();
    st = comm ? TSR_OK : tsr_errorf(TSR_ERR_COMM, "cannot create the communicator");
    if (st == TSR_OK) st = tsr_kv_pool_init_for_model(&kv, m, bl, n_blocks);
    if (st == TSR_OK) st = tsr_bm_init(n_blocks, bl, &bm);
    if (st == TSR_OK) st = tsr_forward_state_init(m, comm, &fs);
    if (tsr_group_agree(&grp, st) != TSR_OK) TSR__BF_FAIL(r0);

    const int64_t V = cfg.vocab_size;
    const double kv_tok_bytes = (double)tsr_kv_block_bytes(m, bl, 0) / (double)bl; /* this rank, all layers, K+V */
    const double wbytes = (double)m->weight_bytes;
    /* the embedding table is read one row per token, not whole: leave it out of the traffic */
    const double embd_bytes = (double)(V * cfg.d_model) * (double)tsr_dtype_size(dt) / grp.size;
    const double step_weight_bytes = m->w.lm_head_aliases_embd ? wbytes : wbytes - embd_bytes;
    int64_t n_logit_rows = batch > 1 ? batch : 1;
    float *logits = malloc(sizeof(float) * (size_t)(n_logit_rows * V));
    int64_t n_ids = prompt + ctx + decode_steps + 1200;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_ids);
    uint64_t x = 88172645463325252ull;
    for (int64_t i = 0; i < n_ids; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(100 + x % (uint64_t)(V - 200));
    }

    /* ---- batch-1 decode after a 128-token prompt ---- */
    tsr_kv_seq s1 = {0};
    if (tsr_bm_seq_reserve(bm, &s1, 128) != TSR_OK || tsr_forward_seq(fs, &kv, &s1, ids, 128, false, 0, logits) != TSR_OK)
        TSR__BF_FAIL(r0);
    double *dt1 = malloc(sizeof(double) * (size_t)decode_steps);
    long gc0[3], gc1[3];
    tsr_cuda_graph_counts(be, gc0);
    /* each step samples greedily on the device (tsr_forward_sample: only the id comes back) */
    tsr_sampling_params greedy;
    tsr_sampling_params_default(&greedy);
    greedy.temperature = 0.0f;
    tsr_seq_sample smp = {&greedy, {ids, 128, NULL, 0}};
    int32_t next_id;
    for (int64_t i = 0; i < decode_steps; i++) {
        if (tsr_bm_seq_reserve(bm, &s1, s1.n_tokens + 1) != TSR_OK) TSR__BF_FAIL(r0);
        double a = tsr_now();
        tsr_forward_seq_sample(fs, &kv, &s1, ids + 128 + i, 1, 0, &smp, 0, &next_id, NULL);
        dt1[i] = tsr_now() - a;
    }
    tsr_cuda_graph_counts(be, gc1);
    double mean_ctx1 = 128 + decode_steps / 2.0;
    double step1 = tsr__bf_median(dt1, (int)decode_steps);
    /* the same steps with the f32 logits downloaded and sampled on the host (the old path) */
    const int n_host = 32;
    double dth[32];
    const bool host_sampling = fs->host_sampling;
    fs->host_sampling = true;
    for (int i = 0; i < n_host; i++) {
        if (tsr_bm_seq_reserve(bm, &s1, s1.n_tokens + 1) != TSR_OK) TSR__BF_FAIL(r0);
        double a = tsr_now();
        tsr_forward_seq_sample(fs, &kv, &s1, ids + 128 + decode_steps + i, 1, 0, &smp, 0, &next_id, NULL);
        dth[i] = tsr_now() - a;
    }
    fs->host_sampling = host_sampling;
    double step1_host = tsr__bf_median(dth, n_host);
    /* TESSERA_PROFILE=1: a few more batch-1 steps, eager, each op timed by cudaEvent pairs (the
     * table says where a step's time goes beyond the weight stream) */
    FILE *prof = NULL;
    if (tsr_knobs_get()->profile && (prof = tmpfile()) != NULL) {
        const int np = 16;
        if (tsr_bm_seq_reserve(bm, &s1, s1.n_tokens + np) != TSR_OK) TSR__BF_FAIL(r0);
        tsr_cuda_profile_start(be);
        be->ops->synchronize(be);
        double a = tsr_now();
        for (int i = 0; i < np; i++)
            tsr_forward_seq(fs, &kv, &s1, ids + 128 + decode_steps + n_host + i, 1, false, 0, logits);
        double wall = tsr_now() - a;
        tsr_cuda_profile_stop(be, prof, np, wall);
        rewind(prof);
    }
    double roof1 = bw / (step_weight_bytes + kv_tok_bytes * mean_ctx1);
    tsr_bm_seq_release(bm, &s1);
    if (r0) fprintf(stderr, "bench: batch-1 decode %.1f tok/s\n", 1.0 / step1);

    /* ---- TTFT of a prompt (one prefill step) ---- */
    double ttft = 0, flops = 0;
    if (prompt > 0) {
        double tt[3];
        for (int r = -1; r < 3; r++) {
            tsr_kv_seq s = {0};
            be->ops->synchronize(be);
            double a = tsr_now();
            if (tsr_bm_seq_reserve(bm, &s, prompt) != TSR_OK ||
                tsr_forward_seq(fs, &kv, &s, ids, prompt, false, prompt, logits) != TSR_OK)
                TSR__BF_FAIL(r0);
            if (r >= 0) tt[r] = tsr_now() - a;
            tsr_bm_seq_release(bm, &s);
        }
        ttft = tsr__bf_median(tt, 3);
        double qkv_dim = (double)(cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim;
        double lin_per_tok = 2.0 * cfg.n_layer *
                             ((double)cfg.d_model * qkv_dim + (double)cfg.n_head * cfg.head_dim * cfg.d_model +
                              3.0 * cfg.d_model * cfg.d_ff);
        flops = (lin_per_tok * prompt + 2.0 * cfg.d_model * V /* one row of logits */ +
                 2.0 * cfg.n_layer * cfg.n_head * cfg.head_dim * (double)prompt * prompt) / /* causal QK^T + PV */
                grp.size;
        if (r0) fprintf(stderr, "bench: TTFT(%lld) %.1f ms\n", (long long)prompt, ttft * 1e3);
    }

    /* ---- batch-B decode at context ctx ---- */
    double stepb = 0, roofb = 0, pf_tps = 0;
    int64_t nb_steps = decode_steps < 64 ? decode_steps : 64;
    if (batch > 0) {
        tsr_kv_seq *seqs = calloc((size_t)batch, sizeof *seqs);
        double pf0 = tsr_now();
        for (int64_t s = 0; s < batch; s++)
            if (tsr_bm_seq_reserve(bm, &seqs[s], ctx) != TSR_OK ||
                tsr_forward_seq(fs, &kv, &seqs[s], ids + (s % 7), ctx, false, ctx, NULL) != TSR_OK)
                TSR__BF_FAIL(r0);
        be->ops->synchronize(be);
        pf_tps = (double)(batch * ctx) / (tsr_now() - pf0);
        tsr_seq_step *qs = calloc((size_t)batch, sizeof *qs);
        int32_t *tok = malloc(sizeof(int32_t) * (size_t)batch);
        double *dtb = malloc(sizeof(double) * (size_t)nb_steps);
        for (int64_t i = 0; i < nb_steps; i++) {
            for (int64_t s = 0; s < batch; s++) {
                if (tsr_bm_seq_reserve(bm, &seqs[s], seqs[s].n_tokens + 1) != TSR_OK) TSR__BF_FAIL(r0);
                tok[s] = ids[(i + s) % 1000];
                qs[s] = (tsr_seq_step){&tok[s], 1, seqs[s].n_tokens, seqs[s].blocks, seqs[s].n_blocks};
            }
            tsr_step step = {qs, batch, false};
            double a = tsr_now();
            if (tsr_forward(fs, &kv, &step, logits) != TSR_OK) TSR__BF_FAIL(r0);
            dtb[i] = tsr_now() - a;
            for (int64_t s = 0; s < batch; s++) seqs[s].n_tokens++;
        }
        stepb = tsr__bf_median(dtb, (int)nb_steps);
        roofb = bw / (step_weight_bytes + kv_tok_bytes * batch * (ctx + nb_steps / 2.0));
        for (int64_t s = 0; s < batch; s++) tsr_bm_seq_release(bm, &seqs[s]);
        free(seqs), free(qs), free(tok), free(dtb);
    }

    if (r0) {
        printf("\n## bench_cuda_forward: %s, %s, %s, TP %d\n\n", cfg.model_name, dtype_s, prop.name, grp.size);
        printf("measured ceilings (per GPU): copy bandwidth %.0f GB/s (read + write), %s cuBLAS GEMM 8192^3 %.0f "
               "TFLOP/s\n\n",
               bw / 1e9, dtype_s, gemm / 1e12);
        printf("| figure | measured | roofline / peak | ratio |\n|---|---|---|---|\n");
        printf("| batch-1 decode (ctx ~%.0f) | %.1f tok/s (%.2f ms/step) | %.1f tok/s | %.0f%% |\n", mean_ctx1,
               1.0 / step1, step1 * 1e3, roof1, 100.0 * (1.0 / step1) / roof1);
        printf("| batch-1 decode, f32 logits to the host + host sampling | %.2f ms/step | device sampling saves "
               "%.3f ms/step | |\n",
               step1_host * 1e3, (step1_host - step1) * 1e3);
        if (batch > 0)
            printf("| batch-%lld decode (ctx %lld) | %.0f tok/s (%.2f ms/step) | %.0f tok/s | %.0f%% |\n",
                   (long long)batch, (long long)ctx, batch / stepb, stepb * 1e3, batch * roofb,
                   100.0 * (1.0 / stepb) / roofb);
        if (prompt > 0) {
            printf("| TTFT %lld-token prompt | %.1f ms (%.0f tok/s) | MFU vs measured GEMM %.0f TFLOP/s | %.0f%% |\n",
                   (long long)prompt, ttft * 1e3, prompt / ttft, gemm / 1e12, 100.0 * flops / ttft / gemm);
            printf("| TTFT %lld-token prompt | %.1f ms | MFU vs nominal 800 TFLOP/s | %.0f%% |\n", (long long)prompt,
                   ttft * 1e3, 100.0 * flops / ttft / 800e12);
        }
        if (batch > 0)
            printf("| prefill %lld x %lld tokens (chunks of %lld) | %.0f tok/s | | |\n", (long long)batch,
                   (long long)ctx, (long long)ctx, pf_tps);
        printf("\nweights %.2f GB per GPU (%.2f GB read per step), KV %.0f KB/token per GPU; batch-1 step = embeddings .. "
               "greedy id sampled on the device; batch-B / TTFT steps: .. f32 logits on the host\n",
               wbytes / 1e9, step_weight_bytes / 1e9, kv_tok_bytes / 1e3);
        printf("graphs in the batch-1 decode loop (%lld steps): %ld eager (new shape key), %ld recorded, %ld replayed\n",
               (long long)decode_steps, gc1[0] - gc0[0], gc1[1] - gc0[1], gc1[2] - gc0[2]);
        if (prof) {
            printf("\nper-op time of a batch-1 decode step (TESSERA_PROFILE, eager, 16 steps, ctx ~%lld):\n\n",
                   (long long)(128 + decode_steps));
            char line[512];
            while (fgets(line, sizeof line, prof)) fputs(line, stdout);
        }
        printf("bench-forward: tp=%d batch1_tok_s=%.2f\n", grp.size, 1.0 / step1);
        /* what `tessera bench sweep` reads: decode of the batch (batch 1 when --batch 0), TTFT prefill */
        printf("bench-forward: sweep decode_tok_s=%.2f prefill_tok_s=%.2f\n",
               batch > 0 && stepb > 0 ? batch / stepb : 1.0 / step1, prompt > 0 && ttft > 0 ? prompt / ttft : pf_tps);
        fflush(stdout);
    }
    if (prof) fclose(prof);
    free(dt1), free(logits), free(ids);
    tsr_forward_state_free(fs);
    tsr_comm_free(comm);
    tsr_bm_free(bm);
    tsr_kv_pool_free(&kv);
    tsr_model_free(m);
    tsr_backend_free(be);
    tsr_group_finalize(&grp);
    return 0;
}

#endif
