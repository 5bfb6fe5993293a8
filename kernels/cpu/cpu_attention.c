/* The CPU backend's paged KV ops (kernels/backend.h kv_write, attention): the cache layout of
 * tsr_kv_layout, and the two-pass reference attention threaded over (token, head) items. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/cpu/cpu_internal.h"

/* ---------------- paged KV ---------------- */

static inline int64_t tsr__kv_offset(const tsr_kv_layout *kv, int64_t block, int64_t head, int64_t slot) {
    return ((block * kv->n_kv_head + head) * kv->block_len + slot) * kv->head_dim;
}

void tsr__cpu_kv_write(tsr_backend *be, void *k_cache, void *v_cache, const tsr_kv_layout *kv,
                              const void *k, const void *v, int64_t ld, const tsr_attn_batch *b) {
    if (kv->quant_bits) {   /* int8 / int4 slots: cpu_kvq.c */
        tsr__cpu_kv_write_q(be, k_cache, v_cache, kv, k, v, ld, b);
        return;
    }
    size_t row = sizeof(float) * (size_t)kv->head_dim;
    for (int64_t s = 0; s < b->n_seq; s++) {
        const int32_t *bt = b->block_tables + s * b->max_blocks;
        for (int64_t t = b->q_start[s]; t < b->q_start[s + 1]; t++) {
            int64_t pos = b->positions[t];
            TSR_ASSERT(pos >= 0 && pos / kv->block_len < b->max_blocks);
            int64_t blk = bt[pos / kv->block_len], slot = pos % kv->block_len;
            TSR_ASSERT(blk >= 0);
            for (int64_t g = 0; g < kv->n_kv_head; g++) {
                int64_t off = tsr__kv_offset(kv, blk, g, slot);
                memcpy((float *)k_cache + off, (const float *)k + t * ld + g * kv->head_dim, row);
                memcpy((float *)v_cache + off, (const float *)v + t * ld + g * kv->head_dim, row);
            }
        }
    }
}

typedef struct {
    float *out;
    const float *q;
    int64_t ld_q;
    const float *kc, *vc;
    const tsr_kv_layout *kv;
    int64_t n_head;
    const tsr_attn_batch *b;
    float scale;
    float *scratch;
    int64_t scratch_per_thread;
} tsr__attn_job;

/* One item = (new token t, query head h).  Two passes over the visible keys: scores with their
 * max, then the softmax-weighted sum of values. */
static void tsr__attn_items(void *ctx, int64_t i0, int64_t i1, int tid) {
    const tsr__attn_job *j = ctx;
    const tsr_kv_layout *kv = j->kv;
    int64_t hd = kv->head_dim, bl = kv->block_len, group = j->n_head / kv->n_kv_head;
    float *sc = j->scratch + tid * j->scratch_per_thread;
    for (int64_t it = i0; it < i1; it++) {
        int64_t t = it / j->n_head, h = it % j->n_head, g = h / group;
        int64_t s = tsr__seq_of(j->b, t);
        const int32_t *bt = j->b->block_tables + s * j->b->max_blocks;
        int64_t n_vis = (int64_t)j->b->positions[t] + 1;
        TSR_ASSERT(n_vis <= j->b->ctx_len[s] && n_vis <= j->scratch_per_thread);
        /* sliding window: keys p0 .. n_vis - 1 only, i.e. q - window < key <= q (HF) */
        const int64_t p0 = j->b->window > 0 && n_vis > j->b->window ? n_vis - j->b->window : 0;
        const float *qv = j->q + t * j->ld_q + h * hd;
        float mx = -INFINITY;
        for (int64_t p = p0; p < n_vis; p++) {
            const float *kr = j->kc + tsr__kv_offset(kv, bt[p / bl], g, p % bl);
            float v = tsr__dot(qv, kr, hd) * j->scale;
            sc[p] = v;
            if (v > mx) mx = v;
        }
        double sum = 0;
        for (int64_t p = p0; p < n_vis; p++) {
            sc[p] = expf(sc[p] - mx);
            sum += sc[p];
        }
        float inv = (float)(1.0 / sum);
        float *restrict o = j->out + t * j->n_head * hd + h * hd;
        for (int64_t i = 0; i < hd; i++) o[i] = 0;
        /* four value rows per pass: o makes a quarter of the round trips through memory */
        int64_t p = p0;
        for (; p + 4 <= n_vis; p += 4) {
            const float *restrict v0 = j->vc + tsr__kv_offset(kv, bt[p / bl], g, p % bl);
            const float *restrict v1 = j->vc + tsr__kv_offset(kv, bt[(p + 1) / bl], g, (p + 1) % bl);
            const float *restrict v2 = j->vc + tsr__kv_offset(kv, bt[(p + 2) / bl], g, (p + 2) % bl);
            const float *restrict v3 = j->vc + tsr__kv_offset(kv, bt[(p + 3) / bl], g, (p + 3) % bl);
            float w0 = sc[p] * inv, w1 = sc[p + 1] * inv, w2 = sc[p + 2] * inv, w3 = sc[p + 3] * inv;
            for (int64_t i = 0; i < hd; i++) o[i] += (w0 * v0[i] + w1 * v1[i]) + (w2 * v2[i] + w3 * v3[i]);
        }
        for (; p < n_vis; p++) {
            const float *restrict vr = j->vc + tsr__kv_offset(kv, bt[p / bl], g, p % bl);
            float wgt = sc[p] * inv;
            for (int64_t i = 0; i < hd; i++) o[i] += wgt * vr[i];
        }
    }
}

void tsr__cpu_attention(tsr_backend *be, void *out, const void *q, int64_t ld_q,
                               const void *k_cache, const void *v_cache, const tsr_kv_layout *kv,
                               int64_t n_head, const tsr_attn_batch *b, float scale) {
    if (kv->quant_bits) {   /* int8 / int4 slots: cpu_kvq.c */
        tsr__cpu_attention_q(be, out, q, ld_q, k_cache, v_cache, kv, n_head, b, scale);
        return;
    }
    tsr__cpu_ctx *c = tsr__ctx(be);
    TSR_ASSERT(n_head % kv->n_kv_head == 0);
    tsr__cpu_attn_scratch(c, b->max_ctx);
    tsr__attn_job j = {out, q, ld_q, k_cache, v_cache, kv, n_head, b, scale, c->scratch, c->scratch_per_thread};
    tsr__cpu_attn_run(c, b, n_head, kv->head_dim, tsr__attn_items, &j);
}
