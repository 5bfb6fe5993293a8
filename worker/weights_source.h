/* The interface every weight source implements (internal to worker/): a SOURCE presents each
 * logical tensor (kind, layer) in HF orientation [out, in] and reads any set of its rows and a
 * column range as f32.  The sources are worker/weights_hf.c (safetensors), weights_gguf.c,
 * weights_workspace.c and weights_dummy.c; worker/weights_reader.c picks one for a path and
 * reads a rank's slices through it, for the loader (weights.c) and the workspace writer
 * (workspace_convert.c). */
#ifndef TSR_WEIGHTS_SOURCE_H
#define TSR_WEIGHTS_SOURCE_H

#include <stdint.h>
#include <stdio.h>

#include "common/model_config.h"
#include "common/status.h"
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
    const char *kind_name;
    const tsr_shard *shard;   /* set by the loader before the first shape/read */
    int ws_tp;                /* a workspace: the TP size it was split for (0 otherwise) */
};

/* A tensor's name in a source's naming table (printf patterns taking the layer). */
static inline void tsr__weights_name(char *buf, size_t n, const char *const *table, tsr_wkind k, int layer) {
    snprintf(buf, n, table[k], layer);
}

#endif
