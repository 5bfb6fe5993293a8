/* Paged KV memory of one rank (DESIGN.md): blocks of block_len (cache_block_seq_len) tokens,
 * per layer, per local KV head.  Block ids mean the same on every rank, so the coordinator's
 * block manager can hand out ids once and every worker writes into the same slots.  The pool is
 * one backend allocation laid out as
 *   [n_layer][2 (K, V)][n_blocks][n_kv_head_l][block_len][head_dim]
 * (tsr_kv_layout in kernels/backend.h describes one layer's K or V part).
 *
 * Also here, for single-process users (tools, tests, the generation loop before the scheduler
 * exists): a free-list allocator of block ids and tsr_kv_seq, one sequence's growing block
 * table.  Under the scheduler those ids come from the coordinator's block manager instead. */
#ifndef TSR_KV_POOL_H
#define TSR_KV_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/backend.h"
#include "worker/model.h"

#define TSR_KV_DEFAULT_BLOCK_LEN 64

typedef struct tsr_kv_pool {
    tsr_backend *be;              /* not owned */
    tsr_kv_layout layout;         /* block_len, local KV heads, head_dim */
    int64_t n_layer;
    int64_t n_blocks;
    void *data;                   // [n_layer][2][n_blocks][n_kv_head_l][block_len][head_dim]
    size_t part_bytes;            /* bytes of one layer's K (or V): n_blocks * block bytes */
    /* single-process allocator (a stack of free ids) */
    int32_t *free_ids;            // [n_blocks]
    int64_t n_free;
} tsr_kv_pool;

/* Bytes one block takes across all layers, K and V (for sizing from a memory budget). */
size_t tsr_kv_block_bytes(const tsr_model *m, int64_t block_len);

tsr_status tsr_kv_pool_init(tsr_kv_pool *p, tsr_backend *be, int64_t n_layer, int64_t n_kv_head_local,
                            int64_t head_dim, int64_t block_len, int64_t n_blocks);
/* With the model's local sizes. block_len <= 0 means TSR_KV_DEFAULT_BLOCK_LEN. */
tsr_status tsr_kv_pool_init_for_model(tsr_kv_pool *p, const tsr_model *m, int64_t block_len, int64_t n_blocks);
void tsr_kv_pool_free(tsr_kv_pool *p);

/* Device pointers of layer l's K and V parts. */
void *tsr_kv_pool_k(const tsr_kv_pool *p, int64_t layer);
void *tsr_kv_pool_v(const tsr_kv_pool *p, int64_t layer);

/* n ids into out; TSR_ERR_KV_FULL (nothing taken) when fewer are free. */
tsr_status tsr_kv_pool_alloc_blocks(tsr_kv_pool *p, int64_t n, int32_t *out);
void tsr_kv_pool_free_blocks(tsr_kv_pool *p, int64_t n, const int32_t *ids);

/* One sequence's block table for single-process use; zero-initialize, then reserve before
 * each step.  n_tokens counts tokens whose KV is in the cache (advanced by tsr_forward_seq). */
typedef struct tsr_kv_seq {
    int32_t *blocks;      // [cap]
    int64_t n_blocks, cap;
    int64_t n_tokens;
} tsr_kv_seq;

/* Makes the table cover n_total tokens (taking blocks from the pool as needed). */
tsr_status tsr_kv_seq_reserve(tsr_kv_pool *p, tsr_kv_seq *s, int64_t n_total);
/* Keeps the first n_keep tokens (frees blocks past them); n_keep = 0 empties it. */
void tsr_kv_seq_truncate(tsr_kv_pool *p, tsr_kv_seq *s, int64_t n_keep);
/* Returns every block and frees the table. */
void tsr_kv_seq_release(tsr_kv_pool *p, tsr_kv_seq *s);

#endif
