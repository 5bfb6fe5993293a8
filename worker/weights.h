/* Loading a model's weights onto one rank: the architecture name tables (HF Llama/Mistral/
 * Qwen2, HF InternLM2, GGUF `llama`), the ONE shard-rule table of tensor parallelism, and the
 * readers that fetch only this rank's slice of each tensor (safetensors: straight from the
 * mmap; GGUF: dequantized row by row).  See DESIGN.md "The forward pass and tensor
 * parallelism". */
#ifndef TSR_WEIGHTS_H
#define TSR_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/model_config.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "worker/model.h"

/* The logical tensors of a Llama-family layer stack, in HF orientation [out, in]. */
typedef enum tsr_wkind {
    TSR_W_TOK_EMBD = 0,  /* [vocab][d_model] */
    TSR_W_ATTN_NORM,     /* [d_model] per layer */
    TSR_W_Q,             /* [n_head * head_dim][d_model] */
    TSR_W_K,             /* [n_kv_head * head_dim][d_model] */
    TSR_W_V,             /* [n_kv_head * head_dim][d_model] */
    TSR_W_Q_BIAS,        /* [n_head * head_dim] (optional) */
    TSR_W_K_BIAS,        /* [n_kv_head * head_dim] (optional) */
    TSR_W_V_BIAS,        /* [n_kv_head * head_dim] (optional) */
    TSR_W_O,             /* [d_model][n_head * head_dim] */
    TSR_W_O_BIAS,        /* [d_model] (optional) */
    TSR_W_FFN_NORM,      /* [d_model] */
    TSR_W_GATE,          /* [d_ff][d_model] */
    TSR_W_UP,            /* [d_ff][d_model] */
    TSR_W_DOWN,          /* [d_model][d_ff] */
    TSR_W_OUT_NORM,      /* [d_model] */
    TSR_W_LM_HEAD,       /* [vocab][d_model] (absent: tied to the embedding) */
    TSR_W_COUNT
} tsr_wkind;

/* How a tensor is split across the TP group. */
typedef enum tsr_split {
    TSR_SPLIT_NONE = 0,  /* replicated */
    TSR_SPLIT_OUT,       /* column-parallel: rows of [out, in] */
    TSR_SPLIT_IN,        /* row-parallel: columns of [out, in]; an all-reduce follows */
} tsr_split;

/* The unit a split keeps whole. */
typedef enum tsr_split_unit {
    TSR_UNIT_NONE = 0,
    TSR_UNIT_HEAD,       /* query heads of head_dim rows/cols */
    TSR_UNIT_KV_HEAD,    /* KV heads (replicated when there are fewer than ranks) */
    TSR_UNIT_FF,         /* one intermediate channel */
    TSR_UNIT_VOCAB,      /* one vocabulary entry */
} tsr_split_unit;

typedef struct tsr_shard_rule {
    tsr_wkind kind;
    const char *what;    /* for messages */
    bool per_layer;
    bool optional;       /* may be absent from a checkpoint */
    tsr_split split;
    tsr_split_unit unit;
} tsr_shard_rule;

/* The shard-rule table, indexed by tsr_wkind. */
const tsr_shard_rule *tsr_shard_rule_of(tsr_wkind kind);

/* Balanced contiguous split of n items over size ranks: rank gets [*first, *first + *count);
 * the first n % size ranks get one more. */
void tsr_shard_split(int64_t n, int rank, int size, int64_t *first, int64_t *count);

/* This rank's share of a model in a group of tp_size; TSR_ERR_INVALID_ARG naming the
 * dimension when tp_size cannot split it (e.g. "n_head 9 is not divisible by tp_size 2"). */
tsr_status tsr_shard_plan(const tsr_model_config *cfg, int tp_rank, int tp_size, tsr_shard *out);

typedef struct tsr_load_opts {
    int tp_rank, tp_size;   /* 0, 1 for a group of one */
    bool progress;          /* draw a progress line (rank 0) */
} tsr_load_opts;

/* path: an HF directory (config.json + *.safetensors, single or sharded), a .safetensors file
 * with config.json beside it, or a .gguf file.  Weights are converted / dequantized to the
 * backend's type (f32 on the CPU).  opts may be NULL (TP = 1, no progress). */
tsr_status tsr_model_load(const char *path, tsr_backend *be, const tsr_load_opts *opts, tsr_model **out);

/* Random weights of the right shapes (tests, `--load-format dummy`).  The value of every
 * element is a hash of (seed, tensor, layer, row, column) of the UNSPLIT tensor, so the shards
 * of a TP group equal the slices of the TP = 1 model. */
tsr_status tsr_model_init_dummy(const tsr_model_config *cfg, tsr_backend *be, const tsr_load_opts *opts,
                                uint64_t seed, tsr_model **out);

void tsr_model_free(tsr_model *m);

/* Writes rank `rank` of `size` of a model (HF dir or GGUF) as one workspace rank file: every
 * kind's local slice, named by kind, stored as dtype (worker/workspace.h). */
tsr_status tsr_workspace_write_rank(const char *model_path, int rank, int size, tsr_dtype dtype, const char *out_path);

/* Reads the model config only (same path rules as tsr_model_load). */
tsr_status tsr_model_config_load(const char *path, tsr_model_config *cfg);

#endif
