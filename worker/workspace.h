/* Workspaces (LMDeploy's `lmdeploy convert`, TurboMind's layout): a directory that holds a
 * model already split for a TP size, so loading splits nothing:
 *   config.ini                 [llama] model fields + runtime knobs (TurboMind's keys)
 *   rank0.safetensors ...      one file per rank: that rank's tensors, local shapes, named by
 *                              kind ("layers.3.q", "tok_embd", ...; weights_workspace.c)
 *   tokenizer.json (+ tokenizer_config.json) from an HF source, or tokenizer.gguf (the
 *                              source GGUF's tokenizer.* and general.* metadata)
 * The runtime knobs take effect when a user edits config.ini; the model fields are checked
 * against the weights when a rank loads.  This file is config.ini; `tessera convert` is
 * worker/workspace_convert.h. */
#ifndef TSR_WORKSPACE_H
#define TSR_WORKSPACE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/model_config.h"
#include "common/status.h"
#include "common/tensor.h"

/* Runtime knobs of config.ini; a field that config.ini does not set keeps its value. */
typedef struct tsr_ws_knobs {
    int64_t session_len;
    int64_t max_batch_size;
    double cache_max_entry_count;
    int64_t cache_block_seq_len;
    int64_t quant_policy;
    int64_t max_prefill_token_num;   /* max_context_token_num */
    char unused[64];                 /* TurboMind keys present that nothing reads ("" if none) */
} tsr_ws_knobs;

bool tsr_workspace_is(const char *path);   /* a directory holding config.ini */
/* Model config and the TP size the workspace was made for. */
tsr_status tsr_workspace_read_config(const char *dir, tsr_model_config *cfg, int *tp, tsr_dtype *weight_type);
tsr_status tsr_workspace_read_knobs(const char *dir, tsr_ws_knobs *knobs);
/* Writes config.ini. */
tsr_status tsr_workspace_write_config(const char *dir, const tsr_model_config *cfg, int tp, tsr_dtype weight_type,
                                      int64_t session_len);

#endif
