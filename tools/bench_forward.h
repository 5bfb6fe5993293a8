/* The forward pass against the hardware's limits on dummy weights (issue 5's speed figures):
 * shared by `tessera bench generate --dummy-config ...` (tools/bench_generate.c) and the
 * stand-alone tests/kernel/bench_cuda_forward (which compiles bench_forward.c into itself), so
 * the figures have one definition.  See bench_forward.c for what is measured. */
#ifndef TSR_BENCH_FORWARD_H
#define TSR_BENCH_FORWARD_H

#include <stdint.h>

typedef struct tsr_bench_forward_opts {
    const char *config;       /* "llama3-8b" (built in) or a config.json / HF directory */
    const char *dtype;        /* "bf16" (default) or "f16" */
    int64_t decode_steps;     /* batch-1 decode steps measured (default 128) */
    int64_t batch;            /* batch-B decode; 0 skips it (default 64) */
    int64_t ctx;              /* context of the batch-B decode (default 512) */
    int64_t prompt;           /* TTFT prompt length; 0 skips it (default 2048) */
    int64_t tp;               /* expected group size (mpirun -np); 0: whatever it is */
} tsr_bench_forward_opts;

void tsr_bench_forward_opts_default(tsr_bench_forward_opts *o);

/* Runs the benchmark on this rank's GPU (local rank % GPUs); under mpirun every rank runs the
 * same steps as one TP group (NCCL) and rank 0 prints.  The markdown table goes to stdout,
 * progress to stderr; one line "bench-forward: tp=N batch1_tok_s=X" for scripts.  Returns the
 * process exit code. */
int tsr_bench_forward(const tsr_bench_forward_opts *o, int *argc, char ***argv);

#endif
