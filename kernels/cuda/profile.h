/* Instruments of the CUDA backend for the benchmark (tools/bench_forward.c): per-op GPU time of
 * eager steps, and how often the decode step really came from a CUDA graph. */
#ifndef TSR_CUDA_PROFILE_H
#define TSR_CUDA_PROFILE_H

#include <stdio.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* From here on every op of `be` is bracketed by a cudaEvent pair and graphs are off (steps run
 * eagerly); times are summed per op kind, matmuls per (n, k) shape. */
void tsr_cuda_profile_start(tsr_backend *be);
/* Back to the plain table; prints a markdown table of the kinds (calls, us and % per step) for
 * the n_steps steps run since start, whose host wall time totalled wall_s, with the rest of
 * the step (gaps between kernels, host work, syncs) as its own row. */
void tsr_cuda_profile_stop(tsr_backend *be, FILE *f, int n_steps, double wall_s);
/* counts[0] steps run eagerly because their graph key was new, [1] recorded, [2] replayed. */
void tsr_cuda_graph_counts(tsr_backend *be, long counts[3]);

#ifdef __cplusplus
}
#endif

#endif
