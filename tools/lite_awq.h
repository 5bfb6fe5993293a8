/* `tessera lite auto_awq` (issue 13): activation-aware weight quantization of a model into an
 * HF-style checkpoint in the AutoAWQ GEMM layout.
 *
 * Per layer, as AutoAWQ does for llama: four groups share an input, each with per-channel scales
 * s = absmean(x)^alpha / sqrt(max * min) (alpha 0.5, or the best of i/n_grid, i < n_grid, by the
 * group's output error with --search-scale): q|k|v (s folded into input_layernorm), o (into
 * v_proj's rows, only when v and o have the same shape, i.e. no GQA), gate|up (into
 * post_attention_layernorm), down (into up_proj's rows).  Then each linear layer is quantized
 * asymmetrically to 4 bits in groups of g along `in`, per group scale = (max - min) / 15 (f16),
 * zero = clamp(-round(min / scale), 0, 15), q = clamp(round(w / scale) + zero, 0, 15), and
 * W ~ (q - zero) * scale.  rtn: the same groups with no scaling (alpha 0).
 *
 * Written to DIR: model.safetensors (per layer ...{q,k,v,o,gate,up,down}_proj.{qweight int32
 * [in, out/8], qzeros int32 [in/g, out/8], scales f16 [in/g, out]}, nibble p of a word holding
 * output 8j + [0,2,4,6,1,3,5,7][p]; norms, embeddings, LM head and biases f16), config.json with
 * quantization_config, the tokenizer (an HF source's files, a GGUF's metadata as tokenizer.gguf),
 * and awq_report.json (per layer and group: alpha, output MSE of the chosen scales and of RTN on
 * the kept calibration rows, when rows were kept).
 *
 * Under GQA the o scales are tied across the query heads of one KV head (the mean of their
 * channels' statistics), so they fold into v_proj's rows too.  --duo-scaling adds AutoAWQ's duo
 * scales s = absmean(x)^a / wmean^(1-a) (wmean: per input channel, the mean over output rows of
 * |w| over its group's absmax) to the search grid.  auto_clip (after scaling): per linear layer
 * (not q/k unless clip_qk), per output row and group, the range [min, max] is shrunk to
 * r [min, max] for the r of 1 - 0.5 i / n_clip minimizing that group's share of the output error
 * on the kept rows (as AutoAWQ, which clips symmetrically), and the weights are clamped to it;
 * the report gives each clipped layer's output MSE with and without clipping (clipping is kept
 * only where it lowers it). */
#ifndef TSR_LITE_AWQ_H
#define TSR_LITE_AWQ_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "tools/lite_stats.h"

typedef struct tsr_awq_opts {
    int64_t bits;          /* 4 */
    int64_t group;         /* group size along `in` */
    bool search;           /* grid search of alpha per group */
    bool rtn;              /* no scaling: round to nearest */
    int64_t n_grid;        /* 20 */
    double alpha;          /* without search: 0.5 */
    bool duo;              /* the search also tries duo scales absmean(x)^a / wmean(w)^(1-a) */
    bool clip;             /* auto_clip: per (output row, group) range clipping (needs kept rows) */
    bool clip_qk;          /* clip q_proj and k_proj too (AutoAWQ skips them) */
    int64_t n_clip;        /* clipping ratios 1 - 0.5 i / n_clip, i < n_clip (20) */
} tsr_awq_opts;

/* Refuses (by name) what cannot be written: bits, a group size that does not divide an input
 * size, an architecture or RoPE scaling the writer does not handle. */
tsr_status tsr_lite_auto_awq_check(const char *model_path, const tsr_awq_opts *o);
/* Quantizes model_path with stats (whose kept rows, if any, give the error report and the
 * search) into dir (created). */
tsr_status tsr_lite_auto_awq(const char *model_path, const tsr_lite_stats *stats, const tsr_awq_opts *o,
                             const char *dir);

#endif
