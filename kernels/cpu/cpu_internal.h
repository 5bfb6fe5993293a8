/* What the CPU backend's files share (kernels/cpu/cpu_backend.c owns the op table; cpu_rope.c
 * and cpu_attention.c hold the RoPE and attention ops): the backend context, the threading
 * threshold and the small inline helpers. */
#ifndef TSR_CPU_INTERNAL_H
#define TSR_CPU_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/threadpool.h"

typedef struct tsr__cpu_ctx {
    tsr_cpu_pool *pool;
    float *scratch;          /* [n_threads][scratch_per_thread] for attention scores */
    int64_t scratch_per_thread;
    void *qwork;             /* grow-only scratch of matmul_w (the pool runs one op at a time) */
    size_t qwork_cap;
    tsr_status err;          /* take_error */
} tsr__cpu_ctx;

static inline tsr__cpu_ctx *tsr__ctx(tsr_backend *be) { return be->ctx; }

/* Below this many multiply-adds an op runs on the calling thread: waking the pool would cost
 * more than the work. */
#define TSR__SERIAL_WORK 16384

/* ---------------- helpers ---------------- */

/* Dot product with 16 independent partial sums, which the compiler vectorizes without
 * -ffast-math (a single running sum would be a serial dependency it must keep), folded in
 * halves so the final reduction is vector adds too, not 16 dependent scalar ones (that fold
 * alone made attention over head_dim 64 about twice as fast). */
static inline float tsr__dot(const float *a, const float *b, int64_t n) {
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j] * b[i + j];
    for (int j = 0; j < 8; j++) acc[j] += acc[j + 8];
    for (int j = 0; j < 4; j++) acc[j] += acc[j + 4];
    float s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* The sequence a flat token row belongs to (q_start is sorted). */
static inline int64_t tsr__seq_of(const tsr_attn_batch *b, int64_t t) {
    int64_t lo = 0, hi = b->n_seq - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (b->q_start[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

void tsr__cpu_rope(tsr_backend *be, void *q, void *k, int64_t ld, int64_t n_head, int64_t n_kv_head,
                  int64_t head_dim, const tsr_attn_batch *b, const tsr_rope_params *p);
void tsr__cpu_kv_write(tsr_backend *be, void *k_cache, void *v_cache, const tsr_kv_layout *kv, const void *k,
                       const void *v, int64_t ld, const tsr_attn_batch *b);
void tsr__cpu_attention(tsr_backend *be, void *out, const void *q, int64_t ld_q, const void *k_cache,
                        const void *v_cache, const tsr_kv_layout *kv, int64_t n_head, const tsr_attn_batch *b,
                        float scale);
/* quant_policy 8 / 4 (kernels/kv_quant.h), in cpu_kvq.c; the two above call them */
void tsr__cpu_kv_write_q(tsr_backend *be, void *k_cache, void *v_cache, const tsr_kv_layout *kv, const void *k,
                         const void *v, int64_t ld, const tsr_attn_batch *b);
void tsr__cpu_attention_q(tsr_backend *be, void *out, const void *q, int64_t ld_q, const void *k_cache,
                          const void *v_cache, const tsr_kv_layout *kv, int64_t n_head, const tsr_attn_batch *b,
                          float scale);

/* Attention's shared plumbing (cpu_attention.c, used by cpu_kvq.c too): grow the per-thread
 * score scratch to max_ctx, and run fn over the (token, head) items of a batch on the pool (on the
 * caller's thread when the work is small). */
void tsr__cpu_attn_scratch(tsr__cpu_ctx *c, int64_t max_ctx);
void tsr__cpu_attn_run(tsr__cpu_ctx *c, const tsr_attn_batch *b, int64_t n_head, int64_t head_dim, tsr_cpu_task_fn fn,
                       void *job);

#endif
