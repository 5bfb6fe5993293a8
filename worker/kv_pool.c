/* Paged KV memory addressed by block id (see kv_pool.h for the layout; block ids are the
 * block manager's). */
#include "worker/kv_pool.h"

#include <sys/mman.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kv_quant.h"

size_t tsr_kv_block_bytes(const tsr_model *m, int64_t block_len, int64_t quant_policy) {
    if (block_len <= 0) block_len = TSR_KV_DEFAULT_BLOCK_LEN;
    size_t es = tsr_dtype_size(m->be->dtype);
    return (size_t)m->cfg.n_layer * (size_t)m->shard.n_kv_head *
           (tsr_kvq_slot_bytes(quant_policy, block_len, m->cfg.head_dim, es, 0) +
            tsr_kvq_slot_bytes(quant_policy, block_len, m->cfg.head_dim, es, 1));
}

tsr_status tsr_kv_pool_init(tsr_kv_pool *p, tsr_backend *be, int64_t n_layer, int64_t n_kv_head_local,
                            int64_t head_dim, int64_t block_len, int64_t n_blocks) {
    return tsr_kv_pool_init_q(p, be, n_layer, n_kv_head_local, head_dim, block_len, n_blocks, 0);
}

tsr_status tsr_kv_pool_init_q(tsr_kv_pool *p, tsr_backend *be, int64_t n_layer, int64_t n_kv_head_local,
                              int64_t head_dim, int64_t block_len, int64_t n_blocks, int64_t quant_policy) {
    memset(p, 0, sizeof *p);
    if (block_len <= 0) block_len = TSR_KV_DEFAULT_BLOCK_LEN;
    if (n_blocks <= 0 || n_blocks > INT32_MAX)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "KV pool: bad block count %lld", (long long)n_blocks);
    int64_t bits = 0;
    TSR_TRY(tsr_kvq_policy_check(quant_policy, be->ops->name, &bits));
    if (bits && (head_dim % 2 || head_dim > TSR_KVQ_MAX_HEAD_DIM))
        return tsr_errorf(TSR_ERR_UNSUPPORTED, "quant_policy %lld: head_dim %lld must be even and at most %d",
                          (long long)quant_policy, (long long)head_dim, TSR_KVQ_MAX_HEAD_DIM);
    p->be = be;
    p->layout.block_len = block_len;
    p->layout.n_kv_head = n_kv_head_local;
    p->layout.head_dim = head_dim;
    p->layout.quant_bits = bits;
    p->n_layer = n_layer;
    p->n_blocks = n_blocks;
    p->part_bytes = (size_t)n_blocks * (size_t)n_kv_head_local *
                    tsr_kvq_slot_bytes(bits, block_len, head_dim, tsr_dtype_size(be->dtype), 0);
    p->v_part_bytes = (size_t)n_blocks * (size_t)n_kv_head_local *
                      tsr_kvq_slot_bytes(bits, block_len, head_dim, tsr_dtype_size(be->dtype), 1);
    size_t total = (p->part_bytes + p->v_part_bytes) * (size_t)n_layer;
    if (be->ops->host_memory) {
        /* Host memory: anonymous pages are zero and become resident only when a block is first
         * written, so an idle pool costs nothing and start-up does not touch it. */
        void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        p->data = m == MAP_FAILED ? NULL : m;
        p->mapped_bytes = p->data ? total : 0;
    } else {
        p->data = be->ops->alloc(be, total);
    }
    if (!p->data)
        return tsr_errorf(TSR_ERR_OOM, "KV pool: cannot allocate %lld blocks of %lld tokens (%.1f MB) on %s",
                          (long long)n_blocks, (long long)block_len, (double)total / 1e6, be->ops->name);
    /* Zeroed so that a stale read of an unwritten slot is at least deterministic. */
    if (!p->mapped_bytes) be->ops->memset0(be, p->data, total);
    return TSR_OK;
}

tsr_status tsr_kv_pool_init_for_model(tsr_kv_pool *p, const tsr_model *m, int64_t block_len, int64_t n_blocks) {
    return tsr_kv_pool_init(p, m->be, m->cfg.n_layer, m->shard.n_kv_head, m->cfg.head_dim, block_len, n_blocks);
}

tsr_status tsr_kv_pool_init_for_model_q(tsr_kv_pool *p, const tsr_model *m, int64_t block_len, int64_t n_blocks,
                                        int64_t quant_policy) {
    return tsr_kv_pool_init_q(p, m->be, m->cfg.n_layer, m->shard.n_kv_head, m->cfg.head_dim, block_len, n_blocks,
                              quant_policy);
}

tsr_status tsr_kv_pool_set_static(tsr_kv_pool *p, const float *qp) {
    const int64_t bits = p->layout.quant_bits, n = p->n_layer * p->layout.n_kv_head;
    if (!bits) return tsr_errorf(TSR_ERR_INVALID_ARG, "static KV parameters need quant_policy 8 or 4");
    float *sq = malloc(sizeof(float) * 4 * (size_t)n);
    tsr_kv_layout *ls = malloc(sizeof *ls * (size_t)p->n_layer);
    if (!sq || !ls) {
        free(sq);
        free(ls);
        return tsr_errorf(TSR_ERR_OOM, "KV pool: static parameters");
    }
    for (int64_t i = 0; i < n; i++)
        for (int part = 0; part < 2; part++) {
            float s = qp[4 * i + 2 * part], zp = qp[4 * i + 2 * part + 1];
            if (!(s >= 0) || !isfinite(s) || !isfinite(zp)) {
                free(sq);
                free(ls);
                return tsr_errorf(TSR_ERR_FORMAT, "static KV parameters: layer %lld head %lld: bad %s scale %g / zero point %g",
                                  (long long)(i / p->layout.n_kv_head), (long long)(i % p->layout.n_kv_head),
                                  part ? "V" : "K", (double)s, (double)zp);
            }
            sq[4 * i + 2 * part] = s;
            sq[4 * i + 2 * part + 1] = tsr_kvq_static_zero(s, zp, bits);
        }
    for (int64_t l = 0; l < p->n_layer; l++) {
        ls[l] = p->layout;
        ls[l].static_qp = sq + 4 * l * p->layout.n_kv_head;
    }
    free(p->static_qp);
    free(p->layers);
    p->static_qp = sq;
    p->layers = ls;
    return TSR_OK;
}

tsr_status tsr_kv_pool_set_k_shift(tsr_kv_pool *p, const float *shift) {
    const int64_t n = p->n_layer * p->layout.n_kv_head * p->layout.head_dim;
    if (p->layout.quant_bits != 4) return tsr_errorf(TSR_ERR_INVALID_ARG, "K channel offsets need quant_policy 4");
    float *ks = malloc(sizeof(float) * (size_t)n);
    tsr_kv_layout *ls = p->layers ? p->layers : malloc(sizeof *ls * (size_t)p->n_layer);
    if (!ks || !ls) {
        free(ks);
        if (ls != p->layers) free(ls);
        return tsr_errorf(TSR_ERR_OOM, "KV pool: K channel offsets");
    }
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(shift[i])) {
            free(ks);
            if (ls != p->layers) free(ls);
            return tsr_errorf(TSR_ERR_FORMAT, "K channel offsets: value %lld is not finite", (long long)i);
        }
        ks[i] = shift[i];
    }
    for (int64_t l = 0; l < p->n_layer; l++) {
        if (!p->layers) ls[l] = p->layout;
        ls[l].k_shift = ks + l * p->layout.n_kv_head * p->layout.head_dim;
    }
    free(p->k_shift);
    p->k_shift = ks;
    p->layers = ls;
    return TSR_OK;
}

const tsr_kv_layout *tsr_kv_pool_layout(const tsr_kv_pool *p, int64_t layer) {
    TSR_ASSERT(layer >= 0 && layer < p->n_layer);
    return p->layers ? &p->layers[layer] : &p->layout;
}

void tsr_kv_pool_free(tsr_kv_pool *p) {
    if (!p || !p->be) return;
    free(p->static_qp);
    free(p->k_shift);
    free(p->layers);
    if (p->mapped_bytes) munmap(p->data, p->mapped_bytes);
    else p->be->ops->dfree(p->be, p->data);
    memset(p, 0, sizeof *p);
}

void *tsr_kv_pool_k(const tsr_kv_pool *p, int64_t layer) {
    TSR_ASSERT(layer >= 0 && layer < p->n_layer);
    return (char *)p->data + (size_t)layer * (p->part_bytes + p->v_part_bytes);
}

void *tsr_kv_pool_v(const tsr_kv_pool *p, int64_t layer) {
    TSR_ASSERT(layer >= 0 && layer < p->n_layer);
    return (char *)p->data + (size_t)layer * (p->part_bytes + p->v_part_bytes) + p->part_bytes;
}

void *tsr_kv_pool_slot(const tsr_kv_pool *p, int64_t layer, int v, int32_t block, int64_t head) {
    TSR_ASSERT(layer >= 0 && layer < p->n_layer && (v == 0 || v == 1) && block >= 0 && block < p->n_blocks &&
               head >= 0 && head < p->layout.n_kv_head);
    size_t slot = tsr_kvq_slot_bytes(p->layout.quant_bits, p->layout.block_len, p->layout.head_dim,
                                     tsr_dtype_size(p->be->dtype), v);
    return (char *)(v ? tsr_kv_pool_v(p, layer) : tsr_kv_pool_k(p, layer)) +
           ((size_t)block * (size_t)p->layout.n_kv_head + (size_t)head) * slot;
}
