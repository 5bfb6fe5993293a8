/* `tessera convert` (worker/workspace_convert.c): writing a workspace (worker/workspace.h) from
 * an HF directory or a GGUF file. */
#ifndef TSR_WORKSPACE_CONVERT_H
#define TSR_WORKSPACE_CONVERT_H

#include "common/status.h"
#include "common/tensor.h"

/* `tessera convert`: MODEL (HF dir or GGUF) -> dir, split for tp ranks, weights stored as
 * dtype (TSR_F32 / TSR_F16 / TSR_BF16).  Shows progress. */
tsr_status tsr_workspace_convert(const char *model_path, const char *dir, int tp, tsr_dtype dtype);

/* Writes rank `rank` of `size` of a model (HF dir or GGUF) as one workspace rank file: every
 * kind's local slice, named by kind, stored as dtype. */
tsr_status tsr_workspace_write_rank(const char *model_path, int rank, int size, tsr_dtype dtype, const char *out_path);

#endif
