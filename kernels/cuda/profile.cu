// Per-op timing of the CUDA backend (profile.h), for the benchmark: while on, be->ops is a copy
// of the backend's table whose ops are wrapped in cudaEvent pairs and whose graph entries are
// NULL, so the forward pass runs eagerly and every op is timed on the GPU; times are summed per
// op kind (matmuls per shape).  The wrappers call through the saved table, so this file holds
// no second copy of the ops.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/profile.h"

#define TSR_PROF_PAIRS 2048
#define TSR_PROF_KINDS 48

struct tsr_cuda_prof {
    cudaEvent_t ev[2 * TSR_PROF_PAIRS];
    int kind[TSR_PROF_PAIRS];
    int n;  // pairs recorded since the last flush
    char name[TSR_PROF_KINDS][64];
    double us[TSR_PROF_KINDS];
    long calls[TSR_PROF_KINDS];
    int n_kinds;
    const tsr_backend_ops *saved;
};

static void tsr__prof_flush(tsr_cuda_prof *p) {
    if (!p->n) return;
    CUDA_CHECK(cudaEventSynchronize(p->ev[2 * p->n - 1]));
    for (int i = 0; i < p->n; i++) {
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, p->ev[2 * i], p->ev[2 * i + 1]));
        p->us[p->kind[i]] += 1e3 * (double)ms;
        p->calls[p->kind[i]]++;
    }
    p->n = 0;
}

void tsr__cuda_prof_free(tsr_cuda_ctx *c) {
    if (!c->prof) return;
    for (int i = 0; i < 2 * TSR_PROF_PAIRS; i++) cudaEventDestroy(c->prof->ev[i]);
    free(c->prof);
    c->prof = NULL;
}

// Starts a pair for kind `name`; returns its index for tsr__prof_end.
static int tsr__prof_begin(tsr_backend *be, const char *name) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    tsr_cuda_prof *p = c->prof;
    if (p->n == TSR_PROF_PAIRS) tsr__prof_flush(p);
    int k = 0;
    while (k < p->n_kinds && strcmp(p->name[k], name)) k++;
    if (k == p->n_kinds) {
        if (k == TSR_PROF_KINDS) k--;  // (never with the forward pass's few kinds) lump into the last
        else snprintf(p->name[p->n_kinds++], sizeof p->name[0], "%s", name);
    }
    int i = p->n++;
    p->kind[i] = k;
    CUDA_CHECK(cudaEventRecord(p->ev[2 * i], c->stream));
    return i;
}

static void tsr__prof_end(tsr_backend *be, int i) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    CUDA_CHECK(cudaEventRecord(c->prof->ev[2 * i + 1], c->stream));
}

// The table the timed ops call through (the backend's own, saved by profile_start).
static const tsr_backend_ops *tsr__prof_plain(tsr_backend *be) { return tsr__cuda(be)->prof->saved; }

#define TSR__PF(name, call)                    \
    do {                                       \
        int pf_i_ = tsr__prof_begin(be, name); \
        call;                                  \
        tsr__prof_end(be, pf_i_);              \
    } while (0)

static void tsr__pf_upload(tsr_backend *be, void *dst, const void *src, size_t n) {
    TSR__PF("upload (step ints, sync)", tsr__prof_plain(be)->upload(be, dst, src, n));
}
static void tsr__pf_get_rows(tsr_backend *be, void *out, const void *table, const int32_t *rows, int64_t n, int64_t d) {
    TSR__PF("get_rows", tsr__prof_plain(be)->get_rows(be, out, table, rows, n, d));
}
static void tsr__pf_rmsnorm(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok, int64_t d,
                            float eps) {
    TSR__PF("rmsnorm", tsr__prof_plain(be)->rmsnorm(be, out, x, w, n_tok, d, eps));
}
static void tsr__pf_add_rmsnorm(tsr_backend *be, void *residual, const void *x, void *out, const void *w,
                                int64_t n_tok, int64_t d, float eps) {
    TSR__PF("add_rmsnorm", tsr__prof_plain(be)->add_rmsnorm(be, residual, x, out, w, n_tok, d, eps));
}
static void tsr__pf_matmul(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok, int64_t n,
                           int64_t k) {
    char name[64];
    snprintf(name, sizeof name, "matmul n=%lld k=%lld", (long long)n, (long long)k);
    TSR__PF(name, tsr__prof_plain(be)->matmul(be, out, x, w, n_tok, n, k));
}
static void tsr__pf_add_bias(tsr_backend *be, void *x, const void *b, int64_t n_tok, int64_t n, int64_t ld) {
    TSR__PF("add_bias", tsr__prof_plain(be)->add_bias(be, x, b, n_tok, n, ld));
}
static void tsr__pf_rope(tsr_backend *be, void *q, void *k, int64_t ld, int64_t n_head, int64_t n_kv_head,
                         int64_t head_dim, const tsr_attn_batch *b, const tsr_rope_params *p) {
    TSR__PF("rope", tsr__prof_plain(be)->rope(be, q, k, ld, n_head, n_kv_head, head_dim, b, p));
}
static void tsr__pf_silu_mul(tsr_backend *be, void *out, const void *gu, int64_t n_tok, int64_t n_ff) {
    TSR__PF("silu_mul", tsr__prof_plain(be)->silu_mul(be, out, gu, n_tok, n_ff));
}
static void tsr__pf_kv_write(tsr_backend *be, void *kc, void *vc, const tsr_kv_layout *kv, const void *k,
                             const void *v, int64_t ld, const tsr_attn_batch *b) {
    TSR__PF("kv_write", tsr__prof_plain(be)->kv_write(be, kc, vc, kv, k, v, ld, b));
}
static void tsr__pf_attention(tsr_backend *be, void *out, const void *q, int64_t ld_q, const void *kc, const void *vc,
                              const tsr_kv_layout *kv, int64_t n_head, const tsr_attn_batch *b, float scale) {
    TSR__PF("attention", tsr__prof_plain(be)->attention(be, out, q, ld_q, kc, vc, kv, n_head, b, scale));
}
static void tsr__pf_download_f32(tsr_backend *be, float *dst, const void *src, int64_t n) {
    TSR__PF("download_f32 (logits, sync)", tsr__prof_plain(be)->download_f32(be, dst, src, n));
}
static void tsr__pf_rope_kv_write(tsr_backend *be, void *q, void *k, const void *v, int64_t ld, int64_t n_head,
                                  const tsr_attn_batch *b, const tsr_rope_params *p, void *kc, void *vc,
                                  const tsr_kv_layout *kv) {
    TSR__PF("rope_kv_write", tsr__prof_plain(be)->rope_kv_write(be, q, k, v, ld, n_head, b, p, kc, vc, kv));
}
static void tsr__pf_matmul_silu(tsr_backend *be, void *out, void *gu, const void *x, const void *w, int64_t n_tok,
                                int64_t n_ff, int64_t k) {
    char name[64];
    snprintf(name, sizeof name, "matmul_silu n=%lld k=%lld", (long long)(2 * n_ff), (long long)k);
    TSR__PF(name, tsr__prof_plain(be)->matmul_silu(be, out, gu, x, w, n_tok, n_ff, k));
}

extern "C" void tsr_cuda_profile_start(tsr_backend *be) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    TSR_ASSERT(!c->capturing);
    if (!c->prof) {
        c->prof = (tsr_cuda_prof *)calloc(1, sizeof *c->prof);
        TSR_ASSERT(c->prof);
        for (int i = 0; i < 2 * TSR_PROF_PAIRS; i++) CUDA_CHECK(cudaEventCreate(&c->prof->ev[i]));
        c->prof->saved = be->ops;
    }
    tsr_cuda_prof *p = c->prof;
    p->n = p->n_kinds = 0;
    memset(p->us, 0, sizeof p->us);
    memset(p->calls, 0, sizeof p->calls);
    // the plain table with its ops timed; entries it lacks stay NULL and the graph entries are
    // NULL: eager while timing (events inside a recording time nothing)
    const tsr_backend_ops *plain = p->saved;
    static tsr_backend_ops ops;
    ops = *plain;
    ops.upload = tsr__pf_upload;
    ops.get_rows = tsr__pf_get_rows;
    ops.rmsnorm = tsr__pf_rmsnorm;
    ops.add_rmsnorm = tsr__pf_add_rmsnorm;
    ops.matmul = tsr__pf_matmul;
    ops.add_bias = tsr__pf_add_bias;
    ops.rope = tsr__pf_rope;
    ops.silu_mul = tsr__pf_silu_mul;
    ops.kv_write = tsr__pf_kv_write;
    ops.attention = tsr__pf_attention;
    ops.download_f32 = tsr__pf_download_f32;
    ops.graph_begin = NULL;
    ops.graph_end = NULL;
    ops.graph_replay = NULL;
    if (plain->rope_kv_write) ops.rope_kv_write = tsr__pf_rope_kv_write;
    if (plain->matmul_silu) ops.matmul_silu = tsr__pf_matmul_silu;
    be->ops = &ops;
}

extern "C" void tsr_cuda_profile_stop(tsr_backend *be, FILE *f, int n_steps, double wall_s) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    tsr_cuda_prof *p = c->prof;
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    tsr__prof_flush(p);
    be->ops = p->saved;
    if (n_steps < 1) n_steps = 1;
    int order[TSR_PROF_KINDS];
    double total = 0.0;
    for (int i = 0; i < p->n_kinds; i++) {
        order[i] = i;
        total += p->us[i];
    }
    for (int i = 1; i < p->n_kinds; i++)  // by time, largest first
        for (int j = i; j > 0 && p->us[order[j]] > p->us[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    double step_us = 1e6 * wall_s / n_steps;
    fprintf(f, "| op (eager step, cudaEvent pairs) | calls/step | us/step | %% of step |\n|---|---|---|---|\n");
    for (int i = 0; i < p->n_kinds; i++) {
        int k = order[i];
        fprintf(f, "| %s | %.1f | %.1f | %.1f%% |\n", p->name[k], (double)p->calls[k] / n_steps, p->us[k] / n_steps,
                100.0 * p->us[k] / n_steps / step_us);
    }
    fprintf(f, "| sum of ops (GPU) | | %.1f | %.1f%% |\n", total / n_steps, 100.0 * total / n_steps / step_us);
    fprintf(f, "| gaps between ops + host (step - sum) | | %.1f | %.1f%% |\n", step_us - total / n_steps,
            100.0 * (step_us - total / n_steps) / step_us);
    fprintf(f, "| step (host wall, eager) | | %.1f | 100%% |\n", step_us);
}

extern "C" void tsr_cuda_graph_counts(tsr_backend *be, long counts[3]) {
    tsr_cuda_ctx *c = tsr__cuda(be);
    counts[0] = c->n_graph_eager;
    counts[1] = c->n_graph_recorded;
    counts[2] = c->n_graph_replayed;
}
