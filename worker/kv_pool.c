/* Paged KV memory (see kv_pool.h for the layout and who owns block ids). */
#include "worker/kv_pool.h"

#include <stdlib.h>
#include <string.h>

size_t tsr_kv_block_bytes(const tsr_model *m, int64_t block_len) {
    if (block_len <= 0) block_len = TSR_KV_DEFAULT_BLOCK_LEN;
    return (size_t)m->cfg.n_layer * 2 * (size_t)m->shard.n_kv_head * (size_t)block_len * (size_t)m->cfg.head_dim *
           tsr_dtype_size(m->be->dtype);
}

tsr_status tsr_kv_pool_init(tsr_kv_pool *p, tsr_backend *be, int64_t n_layer, int64_t n_kv_head_local,
                            int64_t head_dim, int64_t block_len, int64_t n_blocks) {
    memset(p, 0, sizeof *p);
    if (block_len <= 0) block_len = TSR_KV_DEFAULT_BLOCK_LEN;
    if (n_blocks <= 0 || n_blocks > INT32_MAX)
        return tsr_errorf(TSR_ERR_INVALID_ARG, "KV pool: bad block count %lld", (long long)n_blocks);
    p->be = be;
    p->layout.block_len = block_len;
    p->layout.n_kv_head = n_kv_head_local;
    p->layout.head_dim = head_dim;
    p->n_layer = n_layer;
    p->n_blocks = n_blocks;
    p->part_bytes = (size_t)n_blocks * (size_t)n_kv_head_local * (size_t)block_len * (size_t)head_dim *
                    tsr_dtype_size(be->dtype);
    size_t total = p->part_bytes * 2 * (size_t)n_layer;
    p->data = be->ops->alloc(be, total);
    if (!p->data)
        return tsr_errorf(TSR_ERR_OOM, "KV pool: cannot allocate %lld blocks of %lld tokens (%.1f MB) on %s",
                          (long long)n_blocks, (long long)block_len, (double)total / 1e6, be->ops->name);
    /* Zeroed so that a stale read of an unwritten slot is at least deterministic. */
    be->ops->memset0(be, p->data, total);
    p->free_ids = malloc(sizeof(int32_t) * (size_t)n_blocks);
    if (!p->free_ids) {
        be->ops->dfree(be, p->data);
        return tsr_errorf(TSR_ERR_OOM, "out of memory");
    }
    /* a stack popped from the end: ids come out 0, 1, 2, ... */
    for (int64_t i = 0; i < n_blocks; i++) p->free_ids[i] = (int32_t)(n_blocks - 1 - i);
    p->n_free = n_blocks;
    return TSR_OK;
}

tsr_status tsr_kv_pool_init_for_model(tsr_kv_pool *p, const tsr_model *m, int64_t block_len, int64_t n_blocks) {
    return tsr_kv_pool_init(p, m->be, m->cfg.n_layer, m->shard.n_kv_head, m->cfg.head_dim, block_len, n_blocks);
}

void tsr_kv_pool_free(tsr_kv_pool *p) {
    if (!p || !p->be) return;
    p->be->ops->dfree(p->be, p->data);
    free(p->free_ids);
    memset(p, 0, sizeof *p);
}

void *tsr_kv_pool_k(const tsr_kv_pool *p, int64_t layer) {
    TSR_ASSERT(layer >= 0 && layer < p->n_layer);
    return (char *)p->data + (size_t)(2 * layer) * p->part_bytes;
}

void *tsr_kv_pool_v(const tsr_kv_pool *p, int64_t layer) {
    TSR_ASSERT(layer >= 0 && layer < p->n_layer);
    return (char *)p->data + (size_t)(2 * layer + 1) * p->part_bytes;
}

tsr_status tsr_kv_pool_alloc_blocks(tsr_kv_pool *p, int64_t n, int32_t *out) {
    if (n > p->n_free)
        return tsr_errorf(TSR_ERR_KV_FULL, "KV cache full: %lld blocks needed, %lld of %lld free", (long long)n,
                          (long long)p->n_free, (long long)p->n_blocks);
    for (int64_t i = 0; i < n; i++) out[i] = p->free_ids[--p->n_free];
    return TSR_OK;
}

void tsr_kv_pool_free_blocks(tsr_kv_pool *p, int64_t n, const int32_t *ids) {
    for (int64_t i = 0; i < n; i++) {
        TSR_ASSERT(ids[i] >= 0 && ids[i] < p->n_blocks && p->n_free < p->n_blocks);
        p->free_ids[p->n_free++] = ids[i];
    }
}

tsr_status tsr_kv_seq_reserve(tsr_kv_pool *p, tsr_kv_seq *s, int64_t n_total) {
    int64_t need = (n_total + p->layout.block_len - 1) / p->layout.block_len;
    if (need <= s->n_blocks) return TSR_OK;
    if (need > s->cap) {
        int64_t cap = s->cap ? s->cap : 8;
        while (cap < need) cap *= 2;
        int32_t *b = realloc(s->blocks, sizeof(int32_t) * (size_t)cap);
        if (!b) return tsr_errorf(TSR_ERR_OOM, "out of memory");
        s->blocks = b, s->cap = cap;
    }
    TSR_TRY(tsr_kv_pool_alloc_blocks(p, need - s->n_blocks, s->blocks + s->n_blocks));
    s->n_blocks = need;
    return TSR_OK;
}

void tsr_kv_seq_truncate(tsr_kv_pool *p, tsr_kv_seq *s, int64_t n_keep) {
    if (n_keep < 0) n_keep = 0;
    if (n_keep < s->n_tokens) s->n_tokens = n_keep;
    int64_t keep_blocks = (n_keep + p->layout.block_len - 1) / p->layout.block_len;
    if (keep_blocks < s->n_blocks) {
        tsr_kv_pool_free_blocks(p, s->n_blocks - keep_blocks, s->blocks + keep_blocks);
        s->n_blocks = keep_blocks;
    }
}

void tsr_kv_seq_release(tsr_kv_pool *p, tsr_kv_seq *s) {
    tsr_kv_seq_truncate(p, s, 0);
    free(s->blocks);
    memset(s, 0, sizeof *s);
}
