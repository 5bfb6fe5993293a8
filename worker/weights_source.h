/* The interface every weight source implements (internal to worker/): a SOURCE presents each
 * logical tensor (kind, layer) in HF orientation [out, in] and reads any set of its rows and a
 * column range as f32.  The sources are worker/weights_hf.c (safetensors), weights_gguf.c,
 * weights_workspace.c and weights_dummy.c; worker/weights_reader.c picks one for a path and
 * reads a rank's slices through it, for the loader (weights.c) and the workspace writer
 * (workspace_convert.c). */
#ifndef TSR_WEIGHTS_SOURCE_H
#define TSR_WEIGHTS_SOURCE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/model_config.h"
#include "common/status.h"
#include "common/wtype.h"
#include "worker/model.h"
#include "worker/shard_rules.h"

typedef struct tsr__src tsr__src;
struct tsr__src {
    const tsr_model_config *cfg;
    /* The HF-orientation shape of (kind, layer); TSR_ERR_NOT_FOUND when absent. */
    tsr_status (*shape)(tsr__src *s, tsr_wkind k, int layer, int64_t *rows, int64_t *cols);
    /* dst[i][j] = T[rows[i]][c0 + j] for i < n_rows, j < n_cols. */
    tsr_status (*read)(tsr__src *s, tsr_wkind k, int layer, const int64_t *rows, int64_t n_rows, int64_t c0,
                       int64_t n_cols, float *dst);
    void (*close)(tsr__src *s);
    /* Optional (NULL: read() only): the whole tensor as the file stores it -- its type, HF shape
     * [rows = out][cols = in] and a view of its blocks that stays valid until close().  Rows are
     * in the file's order (file_row maps HF rows to them; with keep_file_order they are the
     * order the model computes in).  UNSUPPORTED (last error cleared by the caller) for a tensor
     * it cannot offer so.  *row0, *col0: where the view starts in the whole tensor (0, 0; a
     * workspace rank file holds only its rank's slice). */
    tsr_status (*raw)(tsr__src *s, tsr_wkind k, int layer, tsr_wtensor *out, int64_t *row0, int64_t *col0);
    /* Set by the loader before the first read: GGUF Q/K rows (and biases) come in the file's
     * per-head interleaved order, not HF's (the model then rotates them interleaved). */
    bool keep_file_order;
    /* Optional (NULL: the same row): the row of raw()'s view that holds HF row r of (kind) --
     * a GGUF's Q/K rows are permuted per head (weights_gguf.c) -- so a writer can copy whole
     * quantized rows into HF order. */
    int64_t (*file_row)(tsr__src *s, tsr_wkind k, int64_t r);
    const char *kind_name;
    const tsr_shard *shard;   /* set by the loader before the first shape/read */
    int ws_tp;                /* a workspace: the TP size it was split for (0 otherwise) */
};

/* A tensor's name in a source's naming table (printf patterns taking the layer). */
static inline void tsr__weights_name(char *buf, size_t n, const char *const *table, tsr_wkind k, int layer) {
    snprintf(buf, n, table[k], layer);
}

#endif
