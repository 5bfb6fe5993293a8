/* Tensor parallelism's ONE shard-rule table (DESIGN.md "The forward pass and tensor
 * parallelism"): the logical tensors of a Llama-family layer stack, how each is split across a
 * TP group, and the plan that turns the table into this rank's heads, channels and vocabulary.
 * The weight sources, the loader and the workspace writer all cut tensors through it. */
#ifndef TSR_SHARD_RULES_H
#define TSR_SHARD_RULES_H

#include <stdbool.h>
#include <stdint.h>

#include "common/model_config.h"
#include "common/status.h"
#include "common/wtype.h"
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

/* The unsplit HF shape [rows, cols] of a kind; cols == 1 for vectors. */
void tsr__shard_global_shape(const tsr_model_config *c, tsr_wkind k, int64_t *rows, int64_t *cols);
/* This rank's slice of a kind: rows [r0, r0 + nr), columns [c0, c0 + nc) of the HF tensor. */
void tsr__shard_local_slice(const tsr_model_config *c, const tsr_shard *sh, tsr_wkind k, int64_t *r0, int64_t *nr,
                            int64_t *c0, int64_t *nc);

/* OK when rank `rank` of a group of `size`'s slice of kind k (tsr__shard_local_slice) starts and
 * ends on block edges of w, the whole tensor as stored (common/wtype.h; row offsets of a view
 * that begins at row v_r0, column v_c0 of the tensor are its own).  Otherwise INVALID_ARG naming
 * the tensor, the block, and the group sizes up to 2 size whose every rank's slice keeps whole
 * blocks.  Balanced splits may be uneven (9 heads on 4 ranks), so this checks the cuts the plan
 * makes, not equal parts. */
tsr_status tsr_shard_check_blocks(const tsr_model_config *c, tsr_wkind k, const tsr_wtensor *w, const char *name,
                                  int rank, int size);

#endif
