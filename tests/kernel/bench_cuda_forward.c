/* The CUDA forward pass against the hardware's limits, stand-alone (no tessera binary needed):
 * the same code as `tessera bench generate --dummy-config ...`, compiled in from
 * tools/bench_forward.c (see there for what is measured).
 * Usage: bench_cuda_forward [--config llama3-8b|PATH/config.json] [--dtype bf16|f16]
 *                           [--decode-steps N] [--batch B] [--ctx C] [--prompt P] [--tp N]
 * Prints a table (markdown) on stdout; progress on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/bench_forward.c"

int main(int argc, char **argv) {
    tsr_bench_forward_opts o;
    tsr_bench_forward_opts_default(&o);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--config")) o.config = argv[i + 1];
        else if (!strcmp(argv[i], "--dtype")) o.dtype = argv[i + 1];
        else if (!strcmp(argv[i], "--decode-steps")) o.decode_steps = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) o.batch = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--ctx")) o.ctx = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) o.prompt = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--tp")) o.tp = atoll(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    return tsr_bench_forward(&o, &argc, &argv);
}
