/* `tessera bench generate`: prefill and decode speed of one sequence (a batch of one on the
 * engine, as `tessera generate` runs) on a backend, with
 * random prompt ids (a fixed seed, so runs compare), greedy decoding and EOS ignored, so every
 * run does exactly --prompt-len prefill tokens and --gen-len decode steps.  Decode on one
 * sequence reads every weight once per token, so weight bytes / decode time is the memory
 * bandwidth it reached; the GPU version will print that against the device's peak (the
 * roofline ratio).  The CPU figures answer issue 3's aim (prefill >= 300 tok/s for 256
 * tokens, decode >= 20 tok/s on the 2-core CI machine). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/engine.h"
#include "worker/group.h"
#include "tools/bench_forward.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/gen_opts.h"

static int tsr__cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double tsr__median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, tsr__cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int tsr_bench_generate(int argc, char **argv) {
    const char *backend = "cpu", *dummy = NULL, *dtype = "bf16";
    int64_t prompt_len = -1, gen_len = -1, runs = 3, threads = 0, seed = 1, batch = 64, ctx = 512, tp = 0;
    tsr_opt opts[] = {
        {"--backend", TSR_OPT_STR, &backend, "NAME", "cpu (default), cuda or auto"},
        {"--prompt-len", TSR_OPT_INT, &prompt_len, "N",
         "prompt tokens to prefill (default 256; with --dummy-config the TTFT prompt, default 2048, 0 skips)"},
        {"--gen-len", TSR_OPT_INT, &gen_len, "N", "tokens to decode (default 64; with --dummy-config 128)"},
        {"--dummy-config", TSR_OPT_STR, &dummy, "NAME|PATH",
         "GPU speed figures on random weights made on the GPU: llama3-8b or a config.json (no MODEL needed); "
         "batch-1/batch-N decode and TTFT against the measured copy bandwidth and GEMM rate"},
        {"--batch", TSR_OPT_INT, &batch, "N", "with --dummy-config: batch of the batched decode (default 64, 0 skips)"},
        {"--ctx", TSR_OPT_INT, &ctx, "N", "with --dummy-config: context of the batched decode (default 512)"},
        {"--dtype", TSR_OPT_STR, &dtype, "T", "with --dummy-config: bf16 (default) or f16"},
        {"--tp", TSR_OPT_INT, &tp, "N", "expected tensor-parallel size: run under mpirun -np N"},
        {"--runs", TSR_OPT_INT, &runs, "N", "measured runs after one warm-up (default 3)"},
        {"--threads", TSR_OPT_INT, &threads, "N", "CPU threads (default: all cores)"},
        {"--seed", TSR_OPT_INT, &seed, "S", "seed of the random prompt (default 1)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera bench generate [MODEL] [--backend cpu|cuda] [--prompt-len N] [--gen-len N] [--runs N]\n"
                           "       tessera bench generate --dummy-config llama3-8b|PATH [--batch N] [--ctx N] [--prompt-len N] [--tp N]",
                           "Measures prefill and decode tok/s of one sequence (random prompt ids, greedy, EOS "
                           "ignored).",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    if (dummy) {
        if (n_pos > 0) {
            tsr_cli_err("tessera bench generate: --dummy-config takes no MODEL\n");
            return 1;
        }
        if (batch < 0 || ctx < 1 || tp < 0) {
            tsr_cli_err("tessera bench generate: --batch must be >= 0, --ctx > 0\n");
            return 1;
        }
        tsr_bench_forward_opts bo;
        tsr_bench_forward_opts_default(&bo);
        bo.config = dummy;
        bo.dtype = dtype;
        bo.batch = batch;
        bo.ctx = ctx;
        bo.tp = tp;
        if (prompt_len >= 0) bo.prompt = prompt_len;
        if (gen_len > 0) bo.decode_steps = gen_len;
        return tsr_bench_forward(&bo, &argc, &argv);
    }
    if (prompt_len < 0) prompt_len = 256;
    if (gen_len < 0) gen_len = 64;
    if (strcmp(backend, "cpu") != 0 && strcmp(backend, "cuda") != 0 && strcmp(backend, "auto") != 0) {
        tsr_cli_err("tessera bench generate: unknown backend '%s' (cpu, cuda or auto)\n", backend);
        return 1;
    }
    if (prompt_len < 1 || gen_len < 1 || runs < 1 || threads < 0) {
        tsr_cli_err("tessera bench generate: --prompt-len, --gen-len and --runs must be positive\n");
        return 1;
    }
    const char *path = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!path) return 1;
    tsr_engine_config ec;
    tsr__gen_engine_config(&ec, path);
    ec.threads = threads;
    ec.backend = backend;
    ec.tp = tp;
    ec.session_len = prompt_len + gen_len + 1;
    /* the whole prompt in one step, as a single-sequence prefill */
    if (prompt_len > ec.max_prefill_token_num) ec.max_prefill_token_num = prompt_len;
    tsr_engine *e = NULL;
    if (tsr_engine_open(&ec, &argc, &argv, &e) != TSR_OK) {
        if (tsr_group_world_rank() == 0) tsr_cli_err("tessera bench generate: %s\n", tsr_last_error());
        return 1;
    }
    if (!e) return 0; /* a TP worker */
    int exit_code = 1;
    int32_t *ids = malloc((size_t)prompt_len * sizeof *ids);
    double *pre = calloc((size_t)runs, sizeof *pre), *dec = calloc((size_t)runs, sizeof *dec);
    if (!ids || !pre || !dec) {
        tsr_cli_err("tessera bench generate: out of memory\n");
        goto done;
    }
    /* Ids from the ordinary part of the vocabulary (past the first 100, where the special
     * tokens of most tokenizers sit). */
    const int64_t V = tsr_engine_vocab_size(e);
    uint64_t x = (uint64_t)seed;
    for (int64_t i = 0; i < prompt_len; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)(100 + (int64_t)((x >> 33) % (uint64_t)(V > 200 ? V - 100 : V)));
        if (ids[i] >= V) ids[i] = (int32_t)(ids[i] % V);
    }
    tsr_engine_request req;
    tsr_engine_request_default(&req);
    req.prompt_ids = ids;
    req.n_prompt_ids = prompt_len;
    req.max_new_tokens = gen_len;
    req.sampling.temperature = 0;
    req.ignore_eos = true;
    fprintf(stderr, "bench generate: backend %s, prompt %lld tokens, %lld decode steps, %lld runs (+1 warm-up)\n",
            backend, (long long)prompt_len, (long long)gen_len, (long long)runs);
    for (int64_t r = -1; r < runs; r++) {
        tsr__gen_result st;   /* a fresh sequence each run (no prefix cache: tsr__gen_engine_config) */
        if (tsr__gen_run(e, &req, NULL, NULL, &st) != TSR_OK) {
            tsr_cli_err("tessera bench generate: %s\n", tsr_last_error());
            goto done;
        }
        double p = st.prefill_s > 0 ? (double)prompt_len / st.prefill_s : 0;
        double d = st.decode_s > 0 && st.n_generated > 1 ? (double)(st.n_generated - 1) / st.decode_s : 0;
        if (r >= 0) {
            pre[r] = p;
            dec[r] = d;
        }
        fprintf(stderr, "  %s: prefill %.1f tok/s (%.3f s), decode %.1f tok/s (%lld tokens, %.3f s)\n",
                r < 0 ? "warm-up" : "run", p, st.prefill_s, d, (long long)st.n_generated, st.decode_s);
        tsr_progress("bench generate", r + 2, runs + 1);
        tsr__gen_result_free(&st);
    }
    double pm = tsr__median(pre, (int)runs), dm = tsr__median(dec, (int)runs);
    printf("prefill: %.1f tok/s (prompt %lld tokens, median of %lld runs)\n", pm, (long long)prompt_len,
           (long long)runs);
    printf("decode:  %.1f tok/s (%lld tokens, median of %lld runs)\n", dm, (long long)gen_len, (long long)runs);
    printf("bench-generate: decode_tok_s=%.2f prefill_tok_s=%.2f\n", dm, pm);   /* what `bench sweep` reads */
    size_t wb = tsr_engine_weight_bytes(e);
    if (wb && dm > 0)
        printf("decode weight traffic: %.1f MB per token, %.2f GB/s\n", (double)wb / 1e6, (double)wb * dm / 1e9);
    exit_code = 0;
done:
    free(ids);
    free(pre);
    free(dec);
    tsr_engine_close(e);
    return exit_code;
}
