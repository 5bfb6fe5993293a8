/* The CPU backend's quantized KV ops (quant_policy 8 / 4; slot layout in kernels/kv_quant.h):
 * the writer quantizes each new token's K and V rows per head, and attention reads the codes
 * and dequantizes on the fly, never a float copy of the cache:
 *   q . (s k + z)           = s (q . k) + z sum(q)        one multiply-add per key
 *   sum_j w_j (s_j v_j + z_j) = sum_j (w_j s_j) v_j + sum_j w_j z_j
 * cpu_attention.c hands layouts with quant_bits != 0 to these. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/tensor.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/kv_quant.h"

/* Start of one (block, head) slot of a quantized layer's K (v == 0) or V (v == 1) part. */
static inline const uint8_t *tsr__kvq_slot(const void *cache, const tsr_kv_layout *kv, int64_t block, int64_t head, int v) {
    size_t sb = tsr_kvq_slot_bytes(kv->quant_bits, kv->block_len, kv->head_dim, 0, v);
    return (const uint8_t *)cache + (size_t)(block * kv->n_kv_head + head) * sb;
}

void tsr__cpu_kv_write_q(tsr_backend *be, void *k_cache, void *v_cache, const tsr_kv_layout *kv, const void *k,
                         const void *v, int64_t ld, const tsr_attn_batch *b) {
    (void)be;
    const int64_t bits = kv->quant_bits, hd = kv->head_dim, bl = kv->block_len;
    const size_t rb = tsr_kvq_row_bytes(bits, hd);
    const int rot = tsr_kvq_rotated(bits, hd, kv->static_qp);
    float tmp[TSR_KVQ_MAX_HEAD_DIM];
    TSR_ASSERT(hd <= TSR_KVQ_MAX_HEAD_DIM);
    for (int64_t s = 0; s < b->n_seq; s++) {
        const int32_t *bt = b->block_tables + s * b->max_blocks;
        for (int64_t t = b->q_start[s]; t < b->q_start[s + 1]; t++) {
            int64_t pos = b->positions[t];
            TSR_ASSERT(pos >= 0 && pos / bl < b->max_blocks);
            int64_t blk = bt[pos / bl], slot = pos % bl;
            TSR_ASSERT(blk >= 0);
            for (int64_t g = 0; g < kv->n_kv_head; g++) {
                const float *qp = kv->static_qp ? kv->static_qp + 4 * g : NULL;
                for (int part = 0; part < 2; part++) {
                    const int64_t ng = tsr_kvq_n_groups(bits, hd, part);
                    uint8_t *base = (uint8_t *)tsr__kvq_slot(part ? v_cache : k_cache, kv, blk, g, part);
                    const float *x = (const float *)(part ? v : k) + t * ld + g * hd;
                    if (!part && kv->k_shift) {   /* softmax ignores a shift of every key (backend.h) */
                        for (int64_t i = 0; i < hd; i++) tmp[i] = x[i] - kv->k_shift[g * hd + i];
                        x = tmp;
                    }
                    if (rot) {
                        if (x != tmp) memcpy(tmp, x, sizeof(float) * (size_t)hd);
                        tsr_kvq_hadamard(tmp, hd);
                        x = tmp;
                    }
                    uint16_t sz[2 * TSR_KVQ_MAX_HEAD_DIM / TSR_KVQ_K_GROUP];
                    tsr_kvq_quantize_row_g(x, hd, bits, ng, qp ? qp + 2 * part : NULL, base + slot * rb, sz);
                    memcpy(base + bl * rb + slot * ng * 2 * sizeof(uint16_t), sz, (size_t)ng * 2 * sizeof(uint16_t));
                }
            }
        }
    }
}

typedef struct {
    float *out;
    const float *q;
    int64_t ld_q;
    const void *kc, *vc;
    const tsr_kv_layout *kv;
    int64_t n_head;
    const tsr_attn_batch *b;
    float scale;
    float *scratch;
    int64_t scratch_per_thread;
} tsr__attnq_job;

/* a . b for float a and byte codes b, 16 partial sums as tsr__dot */
static inline float tsr__dot_u8(const float *a, const uint8_t *b, int64_t n) {
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j] * (float)b[i + j];
    for (int j = 0; j < 8; j++) acc[j] += acc[j + 8];
    for (int j = 0; j < 4; j++) acc[j] += acc[j + 4];
    float s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (; i < n; i++) s += a[i] * (float)b[i];
    return s;
}

static inline void tsr__unpack_u4(const uint8_t *c, int64_t n, float *out) {
    for (int64_t i = 0; i < n / 2; i++) {
        out[2 * i] = (float)(c[i] & 15);
        out[2 * i + 1] = (float)(c[i] >> 4);
    }
}

/* (scale, zero) of group g of row i of a slot with ng pairs per row */
static inline void tsr__kvq_params(const uint8_t *slot, int64_t bl, size_t rb, int64_t ng, int64_t i, int64_t g,
                                   float *s, float *z) {
    uint16_t sz[2];
    memcpy(sz, slot + bl * rb + (i * ng + g) * sizeof sz, sizeof sz);
    *s = tsr_f16_to_f32(sz[0]);
    *z = tsr_f16_to_f32(sz[1]);
}

/* One item = (new token t, query head h), the two passes of cpu_attention.c over codes. */
static void tsr__attnq_items(void *ctx, int64_t i0, int64_t i1, int tid) {
    const tsr__attnq_job *j = ctx;
    const tsr_kv_layout *kv = j->kv;
    const int64_t hd = kv->head_dim, bl = kv->block_len, group = j->n_head / kv->n_kv_head, bits = kv->quant_bits;
    const size_t rb = tsr_kvq_row_bytes(bits, hd);
    float *sc = j->scratch + tid * j->scratch_per_thread;
    float tmp[TSR_KVQ_MAX_HEAD_DIM], qrot[TSR_KVQ_MAX_HEAD_DIM];
    const int rot = tsr_kvq_rotated(bits, hd, kv->static_qp);
    const int64_t ngk = tsr_kvq_n_groups(bits, hd, 0), gl = hd / ngk;
    for (int64_t it = i0; it < i1; it++) {
        int64_t t = it / j->n_head, h = it % j->n_head, g = h / group;
        int64_t s = tsr__seq_of(j->b, t);
        const int32_t *bt = j->b->block_tables + s * j->b->max_blocks;
        int64_t pos = j->b->positions[t], n_vis = pos + 1;
        /* sliding window: keys pos - window + 1 .. pos */
        int64_t p0 = j->b->window > 0 && pos - j->b->window + 1 > 0 ? pos - j->b->window + 1 : 0;
        TSR_ASSERT(n_vis <= j->b->ctx_len[s] && n_vis <= j->scratch_per_thread);
        const float *qv = j->q + t * j->ld_q + h * hd;
        if (rot) {   /* q . k = (H q) . (H k) */
            memcpy(qrot, qv, sizeof(float) * (size_t)hd);
            tsr_kvq_hadamard(qrot, hd);
            qv = qrot;
        }
        float qsum[TSR_KVQ_MAX_HEAD_DIM / TSR_KVQ_K_GROUP] = {0};   /* per K group */
        for (int64_t i = 0; i < hd; i++) qsum[i / gl] += qv[i];
        float mx = -INFINITY;
        for (int64_t p = p0; p < n_vis; p++) {
            const uint8_t *slot = tsr__kvq_slot(j->kc, kv, bt[p / bl], g, 0), *codes = slot + (p % bl) * rb;
            float ks, kz, v = 0;
            if (bits == 8) {
                tsr__kvq_params(slot, bl, rb, 1, p % bl, 0, &ks, &kz);
                v = ks * tsr__dot_u8(qv, codes, hd) + kz * qsum[0];
            } else {
                tsr__unpack_u4(codes, hd, tmp);
                for (int64_t k = 0; k < ngk; k++) {
                    tsr__kvq_params(slot, bl, rb, ngk, p % bl, k, &ks, &kz);
                    v += ks * tsr__dot(qv + k * gl, tmp + k * gl, gl) + kz * qsum[k];
                }
            }
            v *= j->scale;
            sc[p] = v;
            if (v > mx) mx = v;
        }
        double sum = 0;
        for (int64_t p = p0; p < n_vis; p++) {
            sc[p] = expf(sc[p] - mx);
            sum += sc[p];
        }
        float inv = (float)(1.0 / sum), zacc = 0;
        float *restrict o = j->out + t * j->n_head * hd + h * hd;
        for (int64_t i = 0; i < hd; i++) o[i] = 0;
        for (int64_t p = p0; p < n_vis; p++) {
            const uint8_t *slot = tsr__kvq_slot(j->vc, kv, bt[p / bl], g, 1), *codes = slot + (p % bl) * rb;
            float vs, vz, w = sc[p] * inv;
            tsr__kvq_params(slot, bl, rb, 1, p % bl, 0, &vs, &vz);
            const float ws = w * vs;
            zacc += w * vz;
            if (bits == 8) {
                for (int64_t i = 0; i < hd; i++) o[i] += ws * (float)codes[i];
            } else {
                tsr__unpack_u4(codes, hd, tmp);
                for (int64_t i = 0; i < hd; i++) o[i] += ws * tmp[i];
            }
        }
        for (int64_t i = 0; i < hd; i++) o[i] += zacc;
        if (rot) tsr_kvq_hadamard(o, hd);   /* back from H v */
    }
}

void tsr__cpu_attention_q(tsr_backend *be, void *out, const void *q, int64_t ld_q, const void *k_cache,
                          const void *v_cache, const tsr_kv_layout *kv, int64_t n_head, const tsr_attn_batch *b,
                          float scale) {
    tsr__cpu_ctx *c = tsr__ctx(be);
    TSR_ASSERT(n_head % kv->n_kv_head == 0 && kv->head_dim <= TSR_KVQ_MAX_HEAD_DIM && kv->head_dim % 2 == 0);
    TSR_ASSERT(kv->quant_bits == 8 || kv->quant_bits == 4);
    tsr__cpu_attn_scratch(c, b->max_ctx);
    tsr__attnq_job j = {out, q, ld_q, k_cache, v_cache, kv, n_head, b, scale, c->scratch, c->scratch_per_thread};
    tsr__cpu_attn_run(c, b, n_head, kv->head_dim, tsr__attnq_items, &j);
}
