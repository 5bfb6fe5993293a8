/* The forward pass: one batched step for prefill and decode alike, written once against the
 * backend op table (DESIGN.md "The forward pass and tensor parallelism").  The new tokens of all
 * sequences are flattened into one varlen batch; attention reads each sequence's paged KV
 * through its block table; after the row-parallel o_proj and down_proj the communicator sums
 * the partial results (a no-op for a group of one).
 *
 * Per layer, with h the residual stream:
 *   xn = rmsnorm(h) * attn_norm                  (fused with the previous layer's h += mlp)
 *   qkv = xn @ wqkv^T (+ bqkv); rope(q, k); write k, v into the cache
 *   a = paged_attention(q, cache); o = a @ wo^T; all-reduce(o) (+ bo)
 *   h += o; xn = rmsnorm(h) * ffn_norm
 *   m = silu(xn @ w_gate^T) * (xn @ w_up^T); d = m @ w_down^T; all-reduce(d)
 * then h += d, out_norm, and the LM head on the rows whose logits are wanted. */
#ifndef TSR_FORWARD_H
#define TSR_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "worker/comm.h"
#include "worker/kv_pool.h"
#include "worker/model.h"
#include "worker/sampling.h"

/* One sequence's share of a step. */
typedef struct tsr_seq_step {
    const int32_t *tokens;        /* [n_new] the new tokens */
    int64_t n_new;                /* >= 1 */
    int64_t n_past;               /* tokens already in the cache; new ones get positions n_past.. */
    const int32_t *block_table;   /* [n_blocks] ids covering n_past + n_new tokens */
    int64_t n_blocks;
} tsr_seq_step;

typedef struct tsr_step {
    const tsr_seq_step *seqs;     /* [n_seq] */
    int64_t n_seq;
    bool all_logits;              /* logits of every new token, not only each sequence's last */
} tsr_step;

/* Mutable run state (llama2.c's RunState): activations sized for cap_tok rows, grown on demand.
 * Local sizes: qkv_dim = (n_head_l + 2 n_kv_head_l) * head_dim. */
typedef struct tsr_forward_state {
    tsr_model *model;             /* not owned */
    tsr_comm *comm;               /* owned when created by init with comm == NULL */
    bool own_comm;
    int64_t cap_tok, cap_out;
    void *h;                      // [cap_tok][d_model]  residual stream
    void *xn;                     // [cap_tok][d_model]  normed input of the current sublayer
    void *qkv;                    // [cap_tok][qkv_dim]
    void *attn;                   // [cap_tok][n_head_l * head_dim]
    void *proj;                   // [cap_tok][d_model]  o_proj / down_proj out (summed in place)
    void *gu;                     // [cap_tok][2 d_ff_l] gate | up
    void *act;                    // [cap_tok][d_ff_l]
    void *rows_out;               // [cap_out][d_model]  final-normed rows whose logits are wanted
    void *logits;                 // [cap_out][vocab_l]
    float *gather;                // host [tp][cap_out][vocab_l] when tp > 1
    int32_t *ints_host;           /* host staging of the step's index arrays */
    int32_t *ints;                /* device copy: tokens, positions, q_start, ctx_len, out rows, tables */
    int64_t ints_cap;
    /* Rank 0 of a TP group: called with every valid step before it runs, so the executor
     * (worker/executor.c) broadcasts the plan and the workers replay it; NULL elsewhere.
     * want_logits tells the workers whether to join the logits gather. */
    tsr_status (*on_step)(void *ctx, const tsr_step *step, bool want_logits);
    void *on_step_ctx;
    /* Every rank of a TP group (NULL for a group of one): called with this rank's status once the
     * step's memory is allocated, before its first collective; returns the group's verdict, so
     * either every rank runs the step or every rank fails it (worker/executor.c). */
    tsr_status (*on_agree)(void *ctx, tsr_status mine);
    void *on_agree_ctx;
    bool fail_next;               /* the next step cannot run here (set by the executor) */
    /* Test-only fault hook, read once by tsr_forward_state_init from TESSERA_FAULT_INJECT, a
     * comma list of "step_alloc:N" (the activation allocation of this rank's Nth step, from 1,
     * fails as out of memory) or "step_alloc:N@R" (only on rank R).  Never set in production. */
    int64_t fault_steps[4];
    int64_t n_steps;              /* steps that reached allocation on this rank */
    /* sample on the host even where the device could (TESSERA_HOST_SAMPLING, read by
     * tsr_forward_state_init; bench generate flips it to time both) */
    bool host_sampling;
    /* tsr_forward_sample's host fallback and staging (grown on demand) */
    tsr_sampler *sampler;
    float *host_logits;           /* [cap_sample][vocab] */
    void *sample_reqs;            /* tsr_sample_req [cap_sample] */
    void *sample_outs;            /* tsr_sample_out [cap_sample] */
    int32_t *sample_ids;          /* [cap_sample] */
    int64_t cap_sample;
    /* Calibration observer (tsr_forward_set_observer); NULL: none */
    struct tsr_forward_observer_slot {
        void (*fn)(void *user, int64_t layer, int what, const float *x, int64_t n_tok, int64_t ld, int64_t dim);
        void *user;
        float *host;              /* staging for a device backend's activations */
        int64_t host_cap;
    } obs;
} tsr_forward_state;

/* Where an observer sees the activations of a layer (`tessera lite calibrate`): the input of
 * each linear layer (after the norm for q|k|v and gate|up), and K and V as the cache stores
 * them (K after RoPE; a GGUF model's K dims in the file's interleaved order, model.h). */
typedef enum tsr_obs_point {
    TSR_OBS_QKV_IN = 0,   /* [n_tok][d_model]: input of q, k and v */
    TSR_OBS_O_IN,         /* [n_tok][n_head_l * head_dim]: input of o_proj */
    TSR_OBS_GATE_UP_IN,   /* [n_tok][d_model]: input of gate and up */
    TSR_OBS_DOWN_IN,      /* [n_tok][d_ff_l]: input of down_proj */
    TSR_OBS_K,            /* [n_tok][n_kv_head_l * head_dim] (row stride ld) */
    TSR_OBS_V,            /* [n_tok][n_kv_head_l * head_dim] (row stride ld) */
    TSR_OBS_COUNT
} tsr_obs_point;

/* fn(user, layer, what, x, n_tok, ld, dim) is called on this rank during every later step, for
 * every layer and point: x is host f32 [n_tok] rows of stride ld, dim values each (this rank's
 * shard).  Steps with an observer never replay a recorded graph.  fn NULL removes it. */
void tsr_forward_set_observer(tsr_forward_state *st,
                              void (*fn)(void *user, int64_t layer, int what, const float *x, int64_t n_tok,
                                         int64_t ld, int64_t dim),
                              void *user);

/* comm NULL: a group of one (tsr_comm_single). */
tsr_status tsr_forward_state_init(tsr_model *m, tsr_comm *comm, tsr_forward_state **out);
void tsr_forward_state_free(tsr_forward_state *st);

/* Runs one step.  logits (host) receives [n_out][vocab] f32 in the order of the sequences (and
 * of their tokens when all_logits): n_out = n_seq, or the total of n_new when all_logits.  With
 * TP every rank gets the full rows.  Bad steps (token ids, block tables too short, ...) are
 * TSR_ERR_INVALID_ARG and change nothing. */
tsr_status tsr_forward(tsr_forward_state *st, tsr_kv_pool *kv, const tsr_step *step, float *logits);

/* What one sequence of a step wants sampled from its last logits (tsr_forward_sample). */
typedef struct tsr_seq_sample {
    const tsr_sampling_params *params;   /* NULL: this sequence samples nothing this step */
    tsr_sample_history hist;
} tsr_seq_sample;

/* Runs one step (all_logits must be false) and samples the next token of every sequence whose
 * params are set: ids[s] (-1 for the others) and, where res is given and params->logprobs >= 0,
 * res[s].  Logit columns >= n_valid are masked out (the tokenizer's vocabulary may be smaller
 * than the model's; <= 0: none).  Where the backend has the `sample` op and TP == 1, sampling
 * runs on the device (kernels/cuda/sampling.cu) and only the ids and requested logprobs come
 * back; otherwise (CPU backend, TP > 1: the gathered logits are interleaved on the host, the
 * device out of scratch memory, or st->host_sampling: TESSERA_HOST_SAMPLING=1) the f32 logits are downloaded and
 * worker/sampling.c samples them -- the same function either way (the GPU twin is tested
 * against the CPU sampler). */
tsr_status tsr_forward_sample(tsr_forward_state *st, tsr_kv_pool *kv, const tsr_step *step,
                              const tsr_seq_sample *samples, int64_t n_valid, int32_t *ids, tsr_sample_result *res);

/* Convenience for one sequence in a single process: feeds `tokens` after the seq->n_tokens
 * already cached (in chunks of at most max_chunk tokens; <= 0: 512), advances seq->n_tokens.
 * seq->blocks must already cover n_tokens + n (the caller reserves them from the block
 * manager, tsr_bm_seq_reserve); TSR_ERR_INVALID_ARG and nothing fed when they do not.
 * logits: [n][vocab] when all_logits, else [vocab] of the last token; may be NULL. */
tsr_status tsr_forward_seq(tsr_forward_state *st, tsr_kv_pool *kv, tsr_kv_seq *seq, const int32_t *tokens,
                           int64_t n, bool all_logits, int64_t max_chunk, float *logits);

/* tsr_forward_seq that samples from the last token's logits (tsr_forward_sample) into *id
 * (and *res when logprobs are wanted). */
tsr_status tsr_forward_seq_sample(tsr_forward_state *st, tsr_kv_pool *kv, tsr_kv_seq *seq, const int32_t *tokens,
                                  int64_t n, int64_t max_chunk, const tsr_seq_sample *sample, int64_t n_valid,
                                  int32_t *id, tsr_sample_result *res);

#endif
