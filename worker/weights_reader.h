/* What the loader (worker/weights.c) and the workspace writer (worker/workspace_convert.c)
 * share: opening the right weight source for a path (a workspace directory, a GGUF file, or
 * an HF directory / .safetensors file), and reading THIS rank's slice of each tensor through
 * the shard-rule table into a host staging buffer as f32. */
#ifndef TSR_WEIGHTS_READER_H
#define TSR_WEIGHTS_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model_config.h"
#include "common/status.h"
#include "worker/model.h"
#include "worker/weights_source.h"

/* Reads and validates the model config of path into *cfg and opens its source. */
tsr_status tsr__reader_open_source(const char *path, tsr_model_config *cfg, tsr__src **out);

/* A source, the model whose cfg and shard say what to read, and scratch buffers. */
typedef struct {
    tsr_model *m;         /* cfg and shard are read; the loader fills the rest */
    tsr__src *src;
    float *stage;         /* host staging for one fused tensor */
    size_t stage_cap;     /* floats */
    int64_t *rows;        /* row-index scratch */
    size_t rows_cap;
    bool typed;           /* weights the backend runs as stored are views of the source (weights.c) */
    unsigned warned_types;   /* ggml types already logged as dequantized */
} tsr__slice_reader;

/* Grows the staging buffer to hold n_floats. */
tsr_status tsr__reader_stage(tsr__slice_reader *L, size_t n_floats);
/* Checks a kind's shape against the config; *present is false for an absent optional one. */
tsr_status tsr__reader_check(tsr__slice_reader *L, tsr_wkind k, int layer, bool *present);
/* Reads this rank's slice of (kind, layer) into dst ([nr][nc] floats); *n_out = nr * nc. */
tsr_status tsr__reader_read_local(tsr__slice_reader *L, tsr_wkind k, int layer, float *dst, int64_t *n_out);
/* Frees the staging buffers (not the model or the source). */
void tsr__reader_free(tsr__slice_reader *L);

#endif
