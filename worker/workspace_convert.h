/* `tessera convert` (worker/workspace_convert.c): writing a workspace (worker/workspace.h) from
 * an HF directory or a GGUF file. */
#ifndef TSR_WORKSPACE_CONVERT_H
#define TSR_WORKSPACE_CONVERT_H

#include <stdbool.h>

#include "common/status.h"
#include "common/tensor.h"

/* `tessera convert`: MODEL (HF dir or GGUF) -> dir, split for tp ranks, weights stored as
 * dtype (TSR_F32 / TSR_F16 / TSR_BF16), except, with keep_quantized, the matrices a GGUF stores
 * in a block type: those keep their blocks (U8 rows; the type and columns in the rank file's
 * metadata as "tsr.wtype.NAME" and "tsr.cols.NAME").  Shows progress. */
tsr_status tsr_workspace_convert(const char *model_path, const char *dir, int tp, tsr_dtype dtype, bool keep_quantized);

/* Writes rank `rank` of `size` of a model (HF dir or GGUF) as one workspace rank file: every
 * kind's local slice, named by kind, stored as dtype (or as its blocks, see above). */
tsr_status tsr_workspace_write_rank(const char *model_path, int rank, int size, tsr_dtype dtype, bool keep_quantized,
                                    const char *out_path);

/* The tokenizer and chat template of a model, in the form they came in, into dir: a GGUF's
 * tokenizer metadata as tokenizer.gguf, an HF directory's tokenizer files copied (a workspace, an
 * auto_awq checkpoint). */
tsr_status tsr_copy_tokenizer(const char *model_path, const char *dir);

/* `convert --model-format F [--group-size G]` (LMDeploy's flags): OK when the model is what F
 * names -- "awq", "gptq" or "compressed-tensors": an HF directory whose quantization_config has
 * that quant_method (and, when group > 0, that group size); "hf": an HF directory; "gguf": a
 * GGUF file -- else INVALID_ARG saying what the model is. */
tsr_status tsr_workspace_check_model_format(const char *model_path, const char *format, int64_t group);

#endif
