/* Calibration statistics for `tessera lite` (issue 13): runs a model over calibration windows
 * with the forward pass's observer (worker/forward.h) and keeps, per layer and observer point,
 * per-channel max, min, sum, absmax and sum of |x| (so mean and absmean), and optionally a
 * subsample of the activation rows themselves (the AWQ scale search needs them).
 *
 * File format (tsr_lite_stats_write): DIR/calib_stats.safetensors, f32 tensors
 *   "layers.L.POINT.STAT"  [dim]   POINT: qkv_in | o_in | gate_up_in | down_in | k | v
 *                                  STAT:  max | min | mean | absmax | absmean
 * (k and v: [n_kv_head * head_dim], head-major, as the cache stores them), and metadata
 * format "tessera-calib-stats", version "1", model, tokens (observed per point), samples,
 * seqlen, k_order ("hf", or "gguf" when K's dims were in a GGUF's interleaved order: per head,
 * dim 2i is HF's i and 2i + 1 HF's i + head_dim/2).  Single rank only (the observer sees one
 * rank's shard). */
#ifndef TSR_LITE_STATS_H
#define TSR_LITE_STATS_H

#include <stdint.h>

#include "common/status.h"
#include "worker/forward.h"
#include "worker/runtime.h"

#define TSR_LITE_N_POINTS TSR_OBS_COUNT

typedef struct tsr_lite_point {
    int64_t dim;
    int64_t n;              /* rows observed */
    float *max, *min, *absmax;   /* [dim] */
    double *sum, *abssum;        /* [dim] */
    float *rows;            /* [rows_cap][dim] kept rows (NULL: none kept) */
    int64_t n_rows, rows_cap, stride;   /* every stride-th row observed is kept */
} tsr_lite_point;

typedef struct tsr_lite_stats {
    int64_t n_layer;
    tsr_lite_point *pt;     /* [n_layer][TSR_LITE_N_POINTS] */
    int64_t samples, seqlen;
    int k_gguf_order;       /* 1: K dims in GGUF's interleaved order, 0: HF's, -1: unknown (older file) */
    char model[512];
} tsr_lite_stats;

/* The name of an observer point in the file ("qkv_in", ...). */
const char *tsr_lite_point_name(int what);

/* Runs rt's model (a group of one, opened by the caller with session_len >= seqlen) over up to
 * `samples` consecutive windows of `seqlen` tokens of toks, each from an empty cache, and
 * gathers the statistics; keep_rows > 0 keeps about that many rows per layer and linear input
 * point, spread over the tokens. */
tsr_status tsr_lite_stats_collect(tsr_runtime *rt, const int32_t *toks, int64_t n_toks, int64_t samples,
                                  int64_t seqlen, int64_t keep_rows, tsr_lite_stats **out);
/* Writes the file format above to path. */
tsr_status tsr_lite_stats_write(const tsr_lite_stats *s, const char *path);
/* Reads a file of that format (kept rows are not stored: n_rows 0). */
tsr_status tsr_lite_stats_read(const char *path, tsr_lite_stats **out);
void tsr_lite_stats_free(tsr_lite_stats *s);

/* absmean of channel c of (layer, what). */
static inline float tsr_lite_absmean(const tsr_lite_point *p, int64_t c) {
    return p->n ? (float)(p->abssum[c] / (double)p->n) : 0.0f;
}

#endif
