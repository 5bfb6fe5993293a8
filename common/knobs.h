/* Environment knobs: every TESSERA_* switch the runtime reads from the environment, parsed once
 * per process from one table (common/knobs.c, which documents each: name, type, default,
 * meaning; README.md "Environment knobs" lists them for users).  Nothing reads getenv on a hot
 * path: a backend copies what it needs into its context when it starts.  A value that does not
 * parse or is out of range is ignored with a warning (the default stays). */
#ifndef TSR_KNOBS_H
#define TSR_KNOBS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/tensor.h"

/* The CUDA backend's switches (copied into its context at init; tests change the copy,
 * tsr_backend_cuda_knobs in kernels/backend.h). */
typedef struct tsr_cuda_knobs {
    bool no_gemv;          /* TESSERA_NO_GEMV: cuBLAS for every matmul */
    int gemv_max_tok;      /* TESSERA_GEMV_MAX_TOK: largest n_tok the GEMV takes (0..8) */
    bool no_fuse;          /* TESSERA_NO_FUSE: GEMM + silu_mul instead of the fused GEMV */
    bool no_vec_norm;      /* TESSERA_NO_VEC_NORM: the scalar rmsnorm kernels */
    bool no_wmma;          /* TESSERA_NO_WMMA: prefill attention without tensor cores */
    bool no_graphs;        /* TESSERA_NO_GRAPHS: every step eager */
    int decode_splits;     /* TESSERA_DECODE_SPLITS: flash-decoding splits (0: the heuristic) */
} tsr_cuda_knobs;

typedef struct tsr_knobs {
    int log_level;         /* TESSERA_LOG: a tsr_log_level (common/log.h) */
    int threads;           /* TESSERA_THREADS: CPU backend threads (0: one per online core) */
    tsr_dtype cuda_dtype;  /* TESSERA_DTYPE: the CUDA backend's compute type */
    double comm_timeout_s; /* TESSERA_COMM_TIMEOUT: deadline of a step's group operations */
    double nccl_timeout_s; /* TESSERA_NCCL_TIMEOUT: deadline of NCCL setup and waits */
    bool host_sampling;    /* TESSERA_HOST_SAMPLING: sample on the host, never on the device */
    bool profile;          /* TESSERA_PROFILE: bench generate's per-op GPU profile */
    int qmm_gemm_tok;      /* TESSERA_QMM_GEMM_TOK: CPU batches this large run quantized weights as
                              dequantized tiles through OpenBLAS (0: never) */
    char fault_inject[128];/* TESSERA_FAULT_INJECT (test-only): worker/forward.h's fault hook */
    tsr_cuda_knobs cuda;
} tsr_knobs;

/* The value of one variable, or NULL when it is not set (getenv's contract). */
typedef const char *(*tsr_knob_lookup)(const char *name, void *ctx);

/* Fills *k with every knob's default, then with the values lookup finds (an empty value counts
 * as unset).  A value that does not parse or is out of range keeps the default and is
 * described in why ("NAME=value: expected ...", "; "-separated, truncated to why_len; why may
 * be NULL).  Returns how many values were rejected. */
int tsr_knobs_parse(tsr_knobs *k, tsr_knob_lookup lookup, void *ctx, char *why, size_t why_len);

/* The process's knobs, parsed from the environment on the first call (thread-safe) and never
 * again; the rejected values are reported once on stderr. */
const tsr_knobs *tsr_knobs_get(void);

#endif
