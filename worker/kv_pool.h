/* Paged KV memory of one rank (DESIGN.md): blocks of block_len (cache_block_seq_len) tokens,
 * per layer, per local KV head.  The pool is memory addressed by block id and nothing else: it
 * is allocated once at start, keeps no per-block state and hands out no ids.  Which id holds
 * what is decided in one place, the block manager on rank 0 (coordinator/block_manager.h), and
 * block ids mean the same on every rank, so every worker writes into the same slots.  The pool
 * is one backend allocation laid out as
 *   [n_layer][2 (K, V)][n_blocks][n_kv_head_l][block_len][head_dim]
 * (tsr_kv_layout in kernels/backend.h describes one layer's K or V part).  With quant_policy 8
 * or 4 the innermost [block_len][head_dim] of each (block, head) becomes int8 / int4 codes plus a
 * per-token (scale, zero) (kernels/kv_quant.h): the same block ids, fewer bytes per block.  With
 * int4 a layer's K part is larger than its V part (K keeps a pair per group of channels). */
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
    size_t part_bytes;            /* bytes of one layer's K: n_blocks * block bytes */
    size_t v_part_bytes;          /* ... and of its V (less than K's with int4: K has group params) */
    size_t mapped_bytes;          /* host backends: the anonymous mapping's size (0: ops->alloc) */
    float *static_qp;             // [n_layer][n_kv_head_l][4] host (kv_qparams), or NULL: online
    float *k_shift;               // [n_layer][n_kv_head_l][head_dim] host (kv_qparams' K channel offsets), or NULL
    tsr_kv_layout *layers;        // [n_layer] layouts pointing into static_qp / k_shift, or NULL
} tsr_kv_pool;

/* Bytes one block takes across all layers, K and V (for sizing from a memory budget), with KV
 * stored as quant_policy says (0: be->dtype; 8, 4: int8, int4 + per-token scale and zero). */
size_t tsr_kv_block_bytes(const tsr_model *m, int64_t block_len, int64_t quant_policy);

tsr_status tsr_kv_pool_init(tsr_kv_pool *p, tsr_backend *be, int64_t n_layer, int64_t n_kv_head_local,
                            int64_t head_dim, int64_t block_len, int64_t n_blocks);
/* The same with quant_policy 0 / 8 / 4 (tsr_kvq_policy_check: other values, or a backend without
 * quantized KV kernels, are errors). */
tsr_status tsr_kv_pool_init_q(tsr_kv_pool *p, tsr_backend *be, int64_t n_layer, int64_t n_kv_head_local,
                              int64_t head_dim, int64_t block_len, int64_t n_blocks, int64_t quant_policy);
/* With the model's local sizes. block_len <= 0 means TSR_KV_DEFAULT_BLOCK_LEN. */
tsr_status tsr_kv_pool_init_for_model(tsr_kv_pool *p, const tsr_model *m, int64_t block_len, int64_t n_blocks);
tsr_status tsr_kv_pool_init_for_model_q(tsr_kv_pool *p, const tsr_model *m, int64_t block_len, int64_t n_blocks,
                                        int64_t quant_policy);
/* Static parameters of a quantized pool (`lite kv_qparams`): qp [n_layer][n_kv_head_l][4] =
 * K scale, K zp, V scale, V zp in LMDeploy's convention (value = signed code * scale + zp);
 * from now on the writer uses them instead of each token's range. */
tsr_status tsr_kv_pool_set_static(tsr_kv_pool *p, const float *qp);
/* Calibrated K channel offsets of an int4 pool (kernels/backend.h k_shift): shift
 * [n_layer][n_kv_head_l][head_dim], copied; quantization stays online. */
tsr_status tsr_kv_pool_set_k_shift(tsr_kv_pool *p, const float *shift);
void tsr_kv_pool_free(tsr_kv_pool *p);

/* The layout layer l's ops take (carries that layer's static parameters, if any). */
const tsr_kv_layout *tsr_kv_pool_layout(const tsr_kv_pool *p, int64_t layer);

/* Device pointers of layer l's K and V parts (what the attention ops take). */
void *tsr_kv_pool_k(const tsr_kv_pool *p, int64_t layer);
void *tsr_kv_pool_v(const tsr_kv_pool *p, int64_t layer);
/* Device pointer of one KV head's slot in one block: [block_len][head_dim] elements (or a
 * quantized slot, kernels/kv_quant.h) of layer l's K (v == 0) or V (v == 1) part.  Any id in [0, n_blocks) is valid: nothing is allocated. */
void *tsr_kv_pool_slot(const tsr_kv_pool *p, int64_t layer, int v, int32_t block, int64_t head);

/* One sequence's block table for single-sequence callers of tsr_forward_seq (tools, tests):
 * zero-initialize; the ids are the block manager's (tsr_bm_seq_reserve and friends fill and
 * empty it).  n_tokens counts tokens whose KV is in the cache (advanced by tsr_forward_seq). */
typedef struct tsr_kv_seq {
    int32_t *blocks;      // [cap]
    int64_t n_blocks, cap;
    int64_t n_tokens;
} tsr_kv_seq;

#endif
