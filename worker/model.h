/* A loaded model on one rank (llama2.c's split: the immutable config, the weights, and -- in
 * worker/forward.h -- the mutable run state, each its own struct).  Every weight is a backend
 * (device) buffer holding THIS RANK's share, in the HF layout [out, in]; the shapes below use
 * the local sizes of tsr_shard (n_head_l = n_head / tp, and so on).
 *
 * Typical use (single process, TP = 1):
 *
 *   tsr_backend *be = tsr_backend_cpu_init(0);
 *   tsr_model *m;
 *   TSR_TRY(tsr_model_load(path, be, NULL, &m));          // worker/weights.h
 *   tsr_kv_pool kv;
 *   TSR_TRY(tsr_kv_pool_init_for_model(&kv, m, 64, n_blocks));   // worker/kv_pool.h
 *   tsr_forward_state *fs;
 *   TSR_TRY(tsr_forward_state_init(m, NULL, &fs));       // worker/forward.h
 *   tsr_block_manager *bm;                                // block ids: coordinator/block_manager.h
 *   TSR_TRY(tsr_bm_init(kv.n_blocks, kv.layout.block_len, &bm));
 *   tsr_kv_seq seq = {0};
 *   TSR_TRY(tsr_bm_seq_reserve(bm, &seq, n));
 *   TSR_TRY(tsr_forward_seq(fs, &kv, &seq, ids, n, false, 0, logits));  // logits [vocab]
 *   ... (reserve and append one token at a time the same way; tsr_bm_seq_release at the end) */
#ifndef TSR_MODEL_H
#define TSR_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model_config.h"
#include "kernels/backend.h"

/* What this rank holds of a TP group of `size` (worker/shard_rules.c tsr_shard_plan computes it
 * from the one shard-rule table). */
typedef struct tsr_shard {
    int rank, size;
    int64_t n_head, head0;         /* local query heads and the first one's global index */
    int64_t n_kv_head, kv_head0;   /* local KV heads (replicated when n_kv_head < tp size) */
    int64_t d_ff, ff0;             /* local slice of the MLP's intermediate dimension */
    int64_t vocab, vocab0;         /* local slice of the LM head (vocab-parallel) */
    int64_t vocab_pad;             /* the largest local vocab of any rank: the gather's stride */
} tsr_shard;

/* A matmul weight: one or more typed parts (common/wtype.h) stacked along `out`; part i's output
 * columns follow part i - 1's.  q | k | v and gate | up are fused this way: one part where the
 * loader could copy them into one buffer of the backend's type, separate parts where they stay
 * as a GGUF file stores them (mapped, each in its own block type).  The parts' data are device
 * pointers; buf[i] is what the model owns and frees (NULL where a part is a view of the file). */
typedef struct tsr_wmat {
    int n_parts;
    int64_t rows, cols;    /* sum of the parts' rows; their common cols */
    tsr_wtensor part[3];
    void *buf[3];
} tsr_wmat;

typedef struct tsr_layer_weights {
    void *attn_norm;   // [d_model]
    tsr_wmat wqkv;     // [(n_head_l + 2 n_kv_head_l) * head_dim][d_model]: q rows | k rows | v rows
    void *bqkv;        // [(n_head_l + 2 n_kv_head_l) * head_dim] or NULL (Qwen2 has them)
    tsr_wmat wo;       // [d_model][n_head_l * head_dim]   (row-parallel: partial sums)
    void *bo;          // [d_model] or NULL: added once, after the all-reduce
    void *ffn_norm;    // [d_model]
    tsr_wmat w_gate_up;   // [2 d_ff_l][d_model]: gate rows | up rows
    tsr_wmat w_down;      // [d_model][d_ff_l]                (row-parallel: partial sums)
} tsr_layer_weights;

typedef struct tsr_model_weights {
    tsr_wmat tok_embd;           // [vocab_l][d_model] (vocab-parallel: rows vocab0..; see forward.c)
    void *out_norm;              // [d_model]
    tsr_wmat lm_head;            // [vocab_l][d_model]; aliases tok_embd when tied
    bool lm_head_aliases_embd;   // then lm_head is not freed separately
    tsr_layer_weights *layers;   // [n_layer]
} tsr_model_weights;

typedef struct tsr_model {
    tsr_model_config cfg;        /* the global (unsplit) model */
    tsr_shard shard;
    tsr_model_weights w;
    tsr_backend *be;             /* not owned */
    size_t weight_bytes;         /* bytes of this rank's weights: device buffers and mapped views */
    size_t mapped_bytes;         /* of which views into the mapped file (no copy) */
    char source[16];             /* "gguf", "safetensors" or "dummy" */
    bool qk_interleaved;         /* Q/K rows in GGUF order: RoPE pairs 2i with 2i + 1 (backend.h) */
    void *mapping;               /* the open source whose mapping the views point into (owned) */
    void (*mapping_close)(void *mapping);
} tsr_model;

/* RoPE parameters of a config, as the backend's rope op takes them. */
tsr_rope_params tsr_model_rope_params(const tsr_model_config *cfg);

#endif
