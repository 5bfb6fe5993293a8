/* `tessera bench batch`: what continuous batching buys.  For each concurrency C it submits C
 * requests at once (random prompt ids, greedy, EOS ignored, so each does exactly --prompt-len
 * prefill and --gen-len decode tokens) and reports the aggregate decode tok/s, measured from the
 * moment every request has its first token to the end.  With C sequences per step the weight
 * matrices are read once for C tokens (GEMV becomes GEMM), so tok/s should grow with C until
 * compute, not memory bandwidth, limits it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/engine.h"
#include "worker/weights.h"
#include "tools/bench_util.h"
#include "tools/cli.h"

typedef struct {
    double t_first, t_done;
    int64_t n;
} tsr__bb_req;

static void tsr__bb_event(void *user, const tsr_engine_event *ev) {
    tsr__bb_req *r = user;
    if (ev->type == TSR_EVENT_TOKEN) {
        if (r->n++ == 0) r->t_first = tsr_now();
    } else {
        r->t_done = tsr_now();
    }
}

int tsr_bench_batch(int argc, char **argv) {
    const char *backend = "cpu", *load_format = NULL;
    const char *conc = "1,8,32";
    int64_t prompt_len = 32, gen_len = 32, threads = 0, seed = 1;
    tsr_opt opts[] = {
        {"--backend", TSR_OPT_STR, &backend, "NAME", "cpu (default) | cuda | auto"},
        {"--concurrency", TSR_OPT_STR, &conc, "LIST", "comma-separated concurrent request counts (default 1,8,32)"},
        {"--prompt-len", TSR_OPT_INT, &prompt_len, "N", "prompt tokens per request (default 32)"},
        {"--gen-len", TSR_OPT_INT, &gen_len, "N", "tokens generated per request (default 32)"},
        {"--threads", TSR_OPT_INT, &threads, "N", "CPU threads (default: all cores)"},
        {"--load-format", TSR_OPT_STR, &load_format, "F", TSR_LOAD_FORMAT_HELP},
        {"--seed", TSR_OPT_INT, &seed, "S", "seed of the random prompts (default 1)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera bench batch [MODEL] [--concurrency 1,8,32] [--gen-len N] [--prompt-len N]",
                           "Aggregate decode tok/s of 1 vs many concurrent requests through the batching engine.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    int64_t cs[16], max_c = 0;
    int n_c = 0;
    if (tsr__bench_parse_list("tessera bench batch", "--concurrency", conc, 1, 4096, cs, 16, &n_c)) return 1;
    for (int i = 0; i < n_c; i++)
        if (cs[i] > max_c) max_c = cs[i];
    if (prompt_len < 1 || prompt_len > ((int64_t)1 << 20) || gen_len < 2 || gen_len > ((int64_t)1 << 20)) {
        tsr_cli_err("tessera bench batch: --prompt-len must be in 1..1048576 and --gen-len in 2..1048576\n");
        return 1;
    }
    if (threads < 0 || threads > 4096) {
        tsr_cli_err("tessera bench batch: --threads %lld is out of range 0..4096 (0: all cores)\n", (long long)threads);
        return 1;
    }
    const char *path = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!path) return 1;
    tsr_model_config cfg;   /* refuse a request longer than the model's context before loading it */
    if (tsr_model_config_load(path, &cfg) != TSR_OK) {
        tsr_cli_err("tessera bench batch: %s\n", tsr_last_error());
        return 1;
    }
    if (cfg.max_position_embeddings > 0 && prompt_len + gen_len + 1 > cfg.max_position_embeddings) {
        tsr_cli_err("tessera bench batch: --prompt-len %lld + --gen-len %lld need %lld tokens, more than the model's "
                    "context (max_position_embeddings), %lld\n", (long long)prompt_len, (long long)gen_len,
                    (long long)(prompt_len + gen_len + 1), (long long)cfg.max_position_embeddings);
        return 1;
    }
    tsr_engine_config c;
    tsr_engine_config_default(&c);
    c.model_path = path;
    c.backend = backend;
    c.threads = threads;
    c.load_format = load_format;
    c.max_batch_size = max_c;
    c.session_len = prompt_len + gen_len + 1;
    c.enable_prefix_cache = false;   /* random prompts share nothing; keep the figure honest */
    int64_t blocks_per = (prompt_len + gen_len + 15) / 16 + 1;
    c.cache_block_seq_len = 16;
    c.cache_max_entry_count = (double)(blocks_per * max_c + 8);
    tsr_engine *e = NULL;
    if (tsr_engine_open(&c, &argc, &argv, &e) != TSR_OK) {
        tsr_cli_err("tessera bench batch: %s\n", tsr_last_error());
        return 1;
    }
    if (!e) return 0;   /* a worker rank */
    tsr__bb_req *reqs = calloc((size_t)max_c, sizeof *reqs);
    int32_t *ids = malloc((size_t)prompt_len * sizeof *ids);
    uint64_t rng = (uint64_t)seed * 0x9e3779b97f4a7c15ULL + 1;
    printf("model %s, prompt %lld + gen %lld tokens per request, greedy, EOS ignored\n", tsr_engine_model_name(e),
           (long long)prompt_len, (long long)gen_len);
    printf("%12s %14s %14s %12s %10s\n", "concurrency", "decode tok/s", "total tok/s", "wall s", "vs 1");
    double base = 0;
    int status = 0;
    for (int k = -1; k < n_c && !status; k++) {   /* k = -1: warm-up with one request */
        int64_t C = k < 0 ? 1 : cs[k];
        memset(reqs, 0, (size_t)C * sizeof *reqs);
        double t0 = tsr_now();
        for (int64_t i = 0; i < C; i++) {
            for (int64_t j = 0; j < prompt_len; j++) {
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                ids[j] = (int32_t)(100 + (rng >> 33) % 20000);
            }
            tsr_engine_request rq;
            tsr_engine_request_default(&rq);
            rq.prompt_ids = ids;
            rq.n_prompt_ids = prompt_len;
            rq.max_new_tokens = gen_len;
            rq.sampling.temperature = 0;
            rq.ignore_eos = true;
            if (tsr_engine_submit(e, &rq, tsr__bb_event, &reqs[i], NULL) != TSR_OK) {
                tsr_cli_err("tessera bench batch: %s\n", tsr_last_error());
                status = 1;
                break;
            }
        }
        tsr_engine_drain(e);
        if (k < 0 || status) continue;
        double t_first = 0, t_end = 0;
        int64_t n_tok = 0;
        for (int64_t i = 0; i < C; i++) {
            if (reqs[i].t_first > t_first) t_first = reqs[i].t_first;
            if (reqs[i].t_done > t_end) t_end = reqs[i].t_done;
            n_tok += reqs[i].n;
        }
        /* decode: the tokens after each request's first over the time after the last first
         * token (all C prompts are admitted in one step, so the first tokens come together) */
        double dec = t_end > t_first ? (double)(n_tok - C) / (t_end - t_first) : 0;
        double tot = (double)(n_tok + C * prompt_len) / (t_end - t0);
        if (k == 0 || base == 0) base = dec;
        printf("%12lld %14.1f %14.1f %12.2f %9.2fx\n", (long long)C, dec, tot, t_end - t0, base > 0 ? dec / base : 0);
        fflush(stdout);
    }
    free(reqs);
    free(ids);
    tsr_engine_close(e);
    return status;
}
