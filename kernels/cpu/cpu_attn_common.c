/* What the CPU backend's two attention paths share (cpu_attention.c for f32 caches, cpu_kvq.c
 * for int8/int4 ones): the per-thread score scratch and the dispatch of (token, head) items on
 * the pool.  Its own file so that neither path calls the other's. */
#include <stdlib.h>

#include "common/log.h"
#include "kernels/cpu/cpu_internal.h"

void tsr__cpu_attn_scratch(tsr__cpu_ctx *c, int64_t max_ctx) {
    if (max_ctx <= c->scratch_per_thread) return;
    int64_t per = (max_ctx + 255) / 256 * 256;
    float *s = realloc(c->scratch, sizeof(float) * (size_t)(per * tsr_cpu_pool_size(c->pool)));
    TSR_ASSERT(s);
    c->scratch = s;
    c->scratch_per_thread = per;
}

void tsr__cpu_attn_run(tsr__cpu_ctx *c, const tsr_attn_batch *b, int64_t n_head, int64_t head_dim, tsr_cpu_task_fn fn,
                       void *job) {
    int nt = tsr_cpu_pool_size(c->pool);
    int64_t items = b->n_tok * n_head;
    /* Causal rows differ in length, so hand out small ranges dynamically. */
    int64_t grain = items / (nt * 8) > 0 ? items / (nt * 8) : 1;
    if (items * b->max_ctx * head_dim < TSR__SERIAL_WORK) fn(job, 0, items, 0);
    else tsr_cpu_pool_run(c->pool, items, grain, fn, job);
}

