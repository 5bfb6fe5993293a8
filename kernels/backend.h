/* The backend op table (ggml's backend interface, DESIGN.md "Backends as op tables"): a struct
 * of function pointers plus a context.  worker/forward.c is written once against it; the CPU
 * backend (kernels/cpu) is the reference and the oracle every later backend (kernels/cuda) is
 * tested against.
 *
 * Conventions shared by every op:
 *  - All tensor pointers are DEVICE pointers returned by ops->alloc (host pointers for the CPU
 *    backend).  Activations and weights are of the backend's compute type be->dtype (f32 on
 *    the CPU); index arrays are int32.
 *  - Row-major, innermost dimension last.  Weights keep the HF layout [out, in].
 *  - "ld" arguments are row strides in elements, so an op can read the q, k or v columns of
 *    one fused qkv activation [n_tok][ld] without copying.
 *  - Ops are enqueued in order on the backend's one stream; download() and synchronize()
 *    wait.  Ops never fail for valid shapes (invariants are TSR_ASSERTed); only alloc can
 *    fail (NULL = out of memory).
 *  - The cross-rank all-reduce is not a backend op: it belongs to the communicator
 *    (worker/comm.h), which is handed device pointers on the same stream. */
#ifndef TSR_BACKEND_H
#define TSR_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rope_type.h"
#include "common/status.h"
#include "common/tensor.h"
#include "common/wtype.h"

/* One step's varlen batch as attention, RoPE and the KV writer see it.  The new tokens of all
 * sequences are flattened: sequence s owns rows [q_start[s], q_start[s+1]) of every activation,
 * its new tokens sit at positions ctx_len[s] - n_new .. ctx_len[s] - 1, and its KV lives in
 * the blocks block_tables[s][0 .. ceil(ctx_len[s] / block_len)). */
typedef struct tsr_attn_batch {
    int64_t n_seq;
    int64_t n_tok;                /* q_start[n_seq]: rows of every activation this step */
    int64_t max_ctx;              /* max over s of ctx_len[s] (host-known: scratch, grids) */
    int64_t max_blocks;           /* row stride of block_tables */
    const int32_t *q_start;       /* device [n_seq + 1] */
    const int32_t *ctx_len;       /* device [n_seq]: cached + new tokens after this step */
    const int32_t *positions;     /* device [n_tok]: absolute position of each new token */
    const int32_t *block_tables;  /* device [n_seq][max_blocks] */
    /* Sliding-window attention (Mistral, Qwen2 use_sliding_window): > 0, a query at position p
     * sees only the keys at positions p - window + 1 .. p (HF's convention); 0: every earlier
     * key.  The forward pass sets it per layer.  A backend whose attention does not implement it
     * must not be given a model that uses it (the loader refuses). */
    int64_t window;
} tsr_attn_batch;

/* Paged KV layout of ONE layer on one rank.  K and V each are
 *   [n_blocks][n_kv_head][block_len][head_dim]
 * so a block holds block_len consecutive tokens of every local KV head; token t of a sequence
 * lives in block block_table[t / block_len], slot t % block_len. */
typedef struct tsr_kv_layout {
    int64_t block_len;   /* cache_block_seq_len */
    int64_t n_kv_head;   /* KV heads on this rank */
    int64_t head_dim;
    /* quant_policy (kernels/kv_quant.h): 0, elements of be->dtype as above; 8 / 4, each
     * (block, head) slot is block_len rows of int8 / packed int4 codes, then block_len (scale,
     * zero) f16 pairs, value = code * scale + zero.  The writer quantizes per token and head
     * (online) unless static_qp holds this layer's calibrated parameters. */
    int64_t quant_bits;
    const float *static_qp;   // [n_kv_head][4] host: K scale, K zero, V scale, V zero (or NULL)
    /* Calibrated per-channel K offsets (int4 `lite kv_qparams`), subtracted from K before it is
     * quantized and never added back: q . (k - c) differs from q . k by q . c, the same for every
     * key of a query, which softmax ignores. */
    const float *k_shift;     // [n_kv_head][head_dim] host (or NULL)
} tsr_kv_layout;

/* RoPE, HF style (rotate_half / GPT-NeoX: dimension i pairs with i + rot_dim/2).
 * inv_freq[i] = theta^(-2i/rot_dim), then per type:
 *   DEFAULT  angle = pos * inv_freq
 *   LINEAR   angle = pos / factor * inv_freq
 *   LLAMA3   inv_freq smoothed by wavelength (low/high_freq_factor, original_max_pos)
 *   DYNAMIC  NTK: for a sequence of L = ctx_len tokens with L > max_pos, theta is replaced by
 *            theta * (factor * L / max_pos - (factor - 1)) ^ (rot_dim / (rot_dim - 2))
 *            (HF's dynamic rope with L = max position + 1 of the sequence in this step)
 *   YARN     HF's _compute_yarn_parameters: a linear ramp (beta_fast, beta_slow over
 *            original_max_pos, truncated to whole dims when yarn_truncate) between
 *            inv_freq / factor and inv_freq
 *   LONGROPE inv_freq / long_factor[i] when the sequence's L (as for DYNAMIC) is greater than
 *            original_max_pos, else inv_freq / short_factor[i]
 * attn_factor (yarn, longrope; 0 means 1) multiplies cos and sin, as HF's attention_scaling.
 * use_logn_attn (Qwen): q at position p is also scaled by log(p + 1) / log(max_pos) when
 * p + 1 > max_pos. */
typedef struct tsr_rope_params {
    tsr_rope_type type;
    float theta;
    float factor;
    float low_freq_factor, high_freq_factor;
    int64_t original_max_pos;   /* llama3, yarn, longrope */
    float attn_factor;          /* yarn, longrope */
    float beta_fast, beta_slow; /* yarn */
    bool yarn_truncate;         /* yarn */
    const float *short_factor, *long_factor;  /* longrope, host [rot_dim / 2] (CPU backend only) */
    int64_t max_pos;            /* max_position_embeddings (dynamic NTK, logn) */
    int64_t rot_dim;            /* rotated dims per head (== head_dim for every model here) */
    bool use_logn_attn;
    /* GGUF order: dimension 2i pairs with 2i + 1 (frequency i) instead of i with i + rot_dim/2.
     * llama.cpp's converter permutes each Q/K head's rows that way; a model that keeps those rows
     * as the file has them (mapped, not copied) rotates in this order, and since q and k are
     * permuted alike their dot products are HF's.  Only a backend with host_memory is given it. */
    bool interleaved;
} tsr_rope_params;

/* One row of the optional device sampler (the `sample` op): worker/sampling.h's parameters as
 * plain data, the row of logits to sample and the sequence's history (host pointers; only read
 * when a penalty is on).  The semantics are exactly tsr_sample()'s (worker/sampling.h), the
 * CPU twin and oracle: n_output is also the RNG counter. */
#define TSR_SAMPLE_MAX_TOP 20
typedef struct tsr_sample_req {
    int64_t row;                 /* logits row */
    float temperature;
    int32_t top_k;
    float top_p, min_p;
    float repetition_penalty, presence_penalty, frequency_penalty;
    uint64_t seed;
    int32_t n_logprobs;          /* -1: none; else the chosen token's and the top N (<= 20) */
    int32_t logprobs_processed;  /* 0: raw logits; 1: after penalties and temperature */
    const int32_t *prompt_ids;
    int64_t n_prompt;
    const int32_t *output_ids;
    int64_t n_output;
} tsr_sample_req;

/* The same layout as worker/sampling.h's tsr_sample_result. */
typedef struct tsr_sample_out {
    int32_t token;
    float logprob;
    int32_t n_top;
    struct {
        int32_t id;
        float logprob;
    } top[TSR_SAMPLE_MAX_TOP];
} tsr_sample_out;

typedef struct tsr_backend tsr_backend;

typedef struct tsr_backend_ops {
    const char *name;
    void (*free)(tsr_backend *be);

    /* ---- memory ---- */
    void *(*alloc)(tsr_backend *be, size_t nbytes);          /* NULL when out of memory */
    void (*dfree)(tsr_backend *be, void *p);                  /* NULL is fine */
    void (*upload)(tsr_backend *be, void *dst, const void *src_host, size_t nbytes);
    void (*download)(tsr_backend *be, void *dst_host, const void *src, size_t nbytes);
    void (*memset0)(tsr_backend *be, void *dst, size_t nbytes);
    void (*synchronize)(tsr_backend *be);

    /* ---- ops ---- */
    /* out[i][:] = table[rows[i]][:]              out [n][d], table [*][d], rows device [n]
     * (embedding lookup, and gathering the last token of each sequence); a negative row id
     * gives a row of zeros (a vocab-parallel embedding's tokens owned by another rank) */
    void (*get_rows)(tsr_backend *be, void *out, const void *table, const int32_t *rows,
                     int64_t n, int64_t d);
    /* out = x / sqrt(mean(x^2) + eps) * w        x, out [n_tok][d], w [d] (out may be x) */
    void (*rmsnorm)(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok,
                    int64_t d, float eps);
    /* residual += x, then out = rmsnorm(residual) * w     residual, x, out [n_tok][d] */
    void (*add_rmsnorm)(tsr_backend *be, void *residual, const void *x, void *out, const void *w,
                        int64_t n_tok, int64_t d, float eps);
    /* out = x @ w^T          x [n_tok][k], w [n][k] (HF [out, in]), out [n_tok][n] */
    void (*matmul)(tsr_backend *be, void *out, const void *x, const void *w, int64_t n_tok,
                   int64_t n, int64_t k);
    /* x[t][j] += b[j]         x [n_tok][ld], b [n], first n columns of each row */
    void (*add_bias)(tsr_backend *be, void *x, const void *b, int64_t n_tok, int64_t n, int64_t ld);
    /* In place on q [n_tok][ld] (n_head heads of head_dim from column 0) and k [n_tok][ld]
     * (n_kv_head heads); positions and per-sequence lengths from the batch. */
    void (*rope)(tsr_backend *be, void *q, void *k, int64_t ld, int64_t n_head, int64_t n_kv_head,
                 int64_t head_dim, const tsr_attn_batch *b, const tsr_rope_params *p);
    /* out[t][j] = silu(gu[t][j]) * gu[t][n_ff + j]     gu [n_tok][2 n_ff] (gate | up),
     * out [n_tok][n_ff] */
    void (*silu_mul)(tsr_backend *be, void *out, const void *gate_up, int64_t n_tok, int64_t n_ff);
    /* Stores k, v [n_tok][ld] (n_kv_head heads each) of the new tokens into the layer's paged
     * cache at their positions. */
    void (*kv_write)(tsr_backend *be, void *k_cache, void *v_cache, const tsr_kv_layout *kv,
                     const void *k, const void *v, int64_t ld, const tsr_attn_batch *b);
    /* Paged attention, varlen: for each new token t of sequence s at position p and query head
     * h, with kv head g = h / (n_head / n_kv_head) (GQA/MQA: a KV head serves its whole query
     * group, nothing copied):
     *   out[t][h] = sum_{j <= p} softmax_j(scale * q[t][h] . K_s[j][g]) V_s[j][g]
     * i.e. causal over the new tokens and the cached prefix alike.  q [n_tok][ld_q], out
     * [n_tok][n_head * head_dim].  The new tokens' K/V must already be written. */
    void (*attention)(tsr_backend *be, void *out, const void *q, int64_t ld_q,
                      const void *k_cache, const void *v_cache, const tsr_kv_layout *kv,
                      int64_t n_head, const tsr_attn_batch *b, float scale);

    /* ---- optional (NULL where the backend has no faster way; callers fall back) ---- */
    /* dst_host [n] f32 = src [n] of be->dtype, converted on the device (logits of a half
     * precision backend).  Fallback for an f32 backend: download(). */
    void (*download_f32)(tsr_backend *be, float *dst_host, const void *src, int64_t n);
    /* Dummy weights made on the device: dst [n_rows][n_cols] (row-major, of be->dtype) with
     *   dst[i][j] = offset + scale * tsr_hash_uniform(key, first + i * row_stride + j)
     * (the formula of worker/weights_dummy.c's host generator, so both make the same values).
     * Fallback: generate on the host and upload. */
    void (*fill_hash)(tsr_backend *be, void *dst, int64_t n_rows, int64_t n_cols, uint64_t key,
                      int64_t first, int64_t row_stride, float scale, float offset);
    /* Free and total device memory in bytes (for sizing the KV pool).  Fallback: host memory. */
    void (*mem_info)(tsr_backend *be, size_t *free_bytes, size_t *total_bytes);
    /* Graph capture of a whole step (CUDA graphs): begin() starts recording the ops that follow
     * instead of running them, end() stops and replays them once; replay() reruns the last
     * recording of slot `key` and returns false when there is none.  The forward pass uses it
     * only for steps whose shapes match a recording (decode), so recorded kernels must read
     * every per-step value (positions, lengths, tables) from device memory. */
    bool (*graph_begin)(tsr_backend *be, int64_t key);
    void (*graph_end)(tsr_backend *be, int64_t key);
    bool (*graph_replay)(tsr_backend *be, int64_t key);
    /* Fusions of two ops above into one pass (fewer launches and round trips in a decode step);
     * each computes exactly what the pair does.  NULL: the caller runs the pair.
     * rope_kv_write = rope(q, k, ld, n_head, kv->n_kv_head, kv->head_dim, b, p) followed by
     *                 kv_write(k_cache, v_cache, kv, k, v, ld, b).
     * matmul_silu   = matmul(gu, x, w, n_tok, 2 n_ff, k) followed by silu_mul(out, gu, n_tok, n_ff)
     *                 (gu [n_tok][2 n_ff] is scratch; a backend may leave it unwritten). */
    void (*rope_kv_write)(tsr_backend *be, void *q, void *k, const void *v, int64_t ld, int64_t n_head,
                          const tsr_attn_batch *b, const tsr_rope_params *p, void *k_cache, void *v_cache,
                          const tsr_kv_layout *kv);
    void (*matmul_silu)(tsr_backend *be, void *out, void *gu, const void *x, const void *w, int64_t n_tok,
                        int64_t n_ff, int64_t k);
    /* Samples rows of logits on the device: logits [*][vocab] of be->dtype (packed), ids past
     * n_valid masked to -inf (the tokenizer's vocabulary may be smaller than the model's), one
     * tsr_sample_req per row; only ids_out [n_rows] (host) and, where outs (host [n_rows]) is
     * given and a row asks for logprobs, its tsr_sample_out come back.  Returns false (nothing
     * sampled) when the device is out of memory for its scratch: the caller falls back to
     * downloading the logits and sampling on the host.  NULL on the CPU backend, whose twin is
     * worker/sampling.c. */
    bool (*sample)(tsr_backend *be, const void *logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
                   const tsr_sample_req *reqs, int32_t *ids_out, tsr_sample_out *outs);

    /* Optional (NULL: ops cannot fail).  The ops above return nothing, so one that could not do
     * its work -- no memory for a scratch buffer, a stream wait past its deadline -- leaves a
     * status here (message in tsr_last_error of the caller) and the forward pass fails the step
     * with it.  Reading it clears it. */
    tsr_status (*take_error)(tsr_backend *be);

    /* ---- typed weights (common/wtype.h; issue 12) ---- */
    /* The backend's buffers are host memory: the loader may hand it views into a mapped file. */
    bool host_memory;
    /* Whether matmul_w and get_rows_w compute with weights of type t as they are stored (NULL:
     * only be->dtype, through matmul / get_rows; the loader dequantizes everything else, saying
     * so in a log line). */
    bool (*wtype_native)(tsr_backend *be, tsr_wtype t);
    /* out[t * ldo + j] = x[t] . W[j] for t < n_tok, j < w->rows:  x [n_tok][w->cols] of
     * be->dtype, W of a native type; ldo >= w->rows lets parts of a stacked weight (q | k | v)
     * write their own columns of one output. */
    void (*matmul_w)(tsr_backend *be, void *out, int64_t ldo, const void *x, const tsr_wtensor *w, int64_t n_tok);
    /* out[i][:] = row rows[i] of table converted to be->dtype (a negative id: zeros), out [n][table->cols]. */
    void (*get_rows_w)(tsr_backend *be, void *out, const tsr_wtensor *table, const int32_t *rows, int64_t n);
} tsr_backend_ops;

struct tsr_backend {
    const tsr_backend_ops *ops;
    tsr_dtype dtype;      /* compute / weight type of activations */
    void *ctx;            /* the implementation's state */
};

/* The CPU backend: f32, GEMMs through OpenBLAS (kept single-threaded), everything else
 * threaded on a small pool of n_threads (0: one per online core, or $TESSERA_THREADS). */
tsr_backend *tsr_backend_cpu_init(int n_threads);

/* The CUDA backend (kernels/cuda): one device, one stream, compute type bf16 or f16 with f32
 * accumulation, GEMMs through cuBLAS.  NULL (with tsr_last_error set) when the device cannot
 * be opened or the build has no CUDA. */
tsr_backend *tsr_backend_cuda_init(int device, tsr_dtype dtype);
/* The backend's cudaStream_t (for the NCCL communicator), as void *. */
void *tsr_backend_cuda_stream(tsr_backend *be);
/* In a multi-rank group the stream can hold collectives that wait on peers: every host wait on
 * it then gives up after timeout_s (> 0; 0: wait as long as it takes) with TSR_ERR_COMM in
 * take_error, instead of hanging on a dead rank. */
void tsr_backend_cuda_set_wait_timeout(tsr_backend *be, double timeout_s);
/* The backend's switches (common/knobs.h), copied from tsr_knobs_get() at init and read from
 * there on every step; tests and benches change them in place. */
struct tsr_cuda_knobs *tsr_backend_cuda_knobs(tsr_backend *be);

/* The uniform value in [-1, 1) behind dummy weights (splitmix64 of key ^ index, 53 bits). */
static inline uint64_t tsr_hash_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
static inline float tsr_hash_uniform(uint64_t key, uint64_t index) {
    uint64_t h = tsr_hash_mix(key ^ index);
    return (float)((double)(h >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static inline void tsr_backend_free(tsr_backend *be) {
    if (be) be->ops->free(be);
}

#endif
