/* Loading a model's weights onto one rank (worker/weights.c): every source (an HF directory,
 * a GGUF file, a workspace, or random dummy weights) is read through the ONE shard-rule table
 * (worker/shard_rules.h), so a rank fetches only its slice of each tensor and fuses q|k|v and
 * gate|up.  The sources live in worker/weights_{hf,gguf,workspace,dummy}.c; writing a workspace
 * is worker/workspace_convert.c.  See DESIGN.md "The forward pass and tensor parallelism". */
#ifndef TSR_WEIGHTS_H
#define TSR_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/model_config.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "worker/model.h"
#include "worker/shard_rules.h"

typedef struct tsr_load_opts {
    int tp_rank, tp_size;   /* 0, 1 for a group of one */
    bool progress;          /* draw a progress line (rank 0) */
    bool dequantize;        /* every weight as a copy of the backend's compute type, even where the
                             * backend runs the stored type (`--load-format dequantized`) */
} tsr_load_opts;

/* path: an HF directory (config.json + *.safetensors, single or sharded), a .safetensors file
 * with config.json beside it, or a .gguf file.  A matmul weight whose stored type the backend
 * runs (backend.h wtype_native: the CPU runs every GGUF block type) stays as stored, a view of
 * the mapped file; the rest are converted / dequantized to the backend's type.  opts may be NULL (TP = 1, no progress). */
tsr_status tsr_model_load(const char *path, tsr_backend *be, const tsr_load_opts *opts, tsr_model **out);

/* Random weights of the right shapes (tests, `--load-format dummy`).  The value of every
 * element is a hash of (seed, tensor, layer, row, column) of the UNSPLIT tensor, so the shards
 * of a TP group equal the slices of the TP = 1 model. */
tsr_status tsr_model_init_dummy(const tsr_model_config *cfg, tsr_backend *be, const tsr_load_opts *opts,
                                uint64_t seed, tsr_model **out);

void tsr_model_free(tsr_model *m);

/* Reads the model config only (same path rules as tsr_model_load). */
tsr_status tsr_model_config_load(const char *path, tsr_model_config *cfg);

#endif
