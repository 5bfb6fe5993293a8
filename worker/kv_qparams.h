/* Static KV quantization parameters of a workspace (`tessera lite kv_qparams` writes them, the
 * runtime reads them when quant_policy matches their bits): kv_qparams.json beside config.ini,
 *   {"format": "tessera-kv-qparams", "version": 1, "bits": 8, "symmetric": false,
 *    "n_layer": L, "n_kv_head": H,
 *    "k_scale": [[H floats] x L], "k_zp": ..., "v_scale": ..., "v_zp": ...}
 * in LMDeploy's convention: value = signed code * scale + zp (int8 codes -128..127, int4 -8..7);
 * every KV head of the model (a rank takes its own heads, worker/model.h tsr_shard).  Optional:
 *   "head_dim": D, "k_channel_zp": [[H * D floats] x L]
 * each K channel's (min+max)/2, in the cache's channel order (a workspace's: HF's).  With int4
 * the runtime uses these instead of the per-head pairs: it subtracts them from K and quantizes
 * online (kernels/backend.h k_shift), which the per-head pairs cannot match at 16 levels. */
#ifndef TSR_KV_QPARAMS_H
#define TSR_KV_QPARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

#define TSR_KV_QPARAMS_FILE "kv_qparams.json"

typedef struct tsr_kv_qparams {
    int64_t bits;                 /* 8 or 4 */
    bool symmetric;
    int64_t n_layer, n_kv_head;
    float *qp;                    // [n_layer][n_kv_head][4]: K scale, K zp, V scale, V zp
    int64_t head_dim;             /* of k_chan (0 without) */
    float *k_chan;                // [n_layer][n_kv_head][head_dim] K channel midpoints, or NULL
} tsr_kv_qparams;

/* *found false (and TSR_OK) when dir has no such file; a malformed one is an error. */
tsr_status tsr_kv_qparams_load(const char *dir, tsr_kv_qparams *q, bool *found);
tsr_status tsr_kv_qparams_save(const char *dir, const tsr_kv_qparams *q);
/* This rank's heads [head0, head0 + n) of every layer: [n_layer][n][4] (malloc'd) */
float *tsr_kv_qparams_local(const tsr_kv_qparams *q, int64_t head0, int64_t n);
/* The same of k_chan: [n_layer][n][head_dim] (malloc'd; NULL without k_chan) */
float *tsr_kv_qparams_local_chan(const tsr_kv_qparams *q, int64_t head0, int64_t n);
void tsr_kv_qparams_free(tsr_kv_qparams *q);

#endif
