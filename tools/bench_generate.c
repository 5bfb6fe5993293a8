/* `tessera bench generate`: prefill and decode speed of one sequence (a batch of one on the
 * engine, as `tessera generate` runs) on a backend, with random prompt ids (a fixed seed, so
 * runs compare), greedy decoding and EOS ignored.  Each case of the product of the lists
 * --prompt-len x --depth x --gen-len measures, --runs times (mean and sample std):
 *   - prefill tok/s of a prompt of prompt-len tokens (submit to first token);
 *   - decode tok/s of gen-len decode steps after a context of depth tokens (depth 0: a prompt
 *     of one token); without --depth the context is the prompt, timed in the same request.
 * Decode on one sequence reads every weight once per token, so weight bytes x decode tok/s is
 * the memory bandwidth it reached.  Also printed: the process's peak RSS (VmHWM) and the time
 * from process start to a ready model.  --json puts all of it in one JSON document on stdout,
 * to compare with other tools' figures.  --dummy-config runs tools/bench_forward.c's GPU
 * figures instead (roofline ratios on random weights). */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/engine.h"
#include "worker/group.h"
#include "worker/weights.h"
#include "tools/bench_forward.h"
#include "tools/bench_util.h"
#include "kernels/kv_quant.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/gen_opts.h"

enum { TSR__BG_MAX_ITEMS = 16, TSR__BG_MAX_RUNS = 1000 };
#define TSR__BG_MAX_LEN ((int64_t)1 << 20)
#define TSR__BG_CMD "tessera bench generate"

typedef struct {
    int64_t prompt, depth, gen;
    double *pre, *dec;   /* tok/s of each run */
    double pre_mean, pre_std, dec_mean, dec_std;
} tsr__bg_case;

/* The command line; INT64_MIN / NULL: not given (so an option the mode does not use is
 * refused, not ignored). */
typedef struct {
    const char *backend, *dummy, *dtype, *load_format, *prompt_s, *gen_s, *depth_s;
    int64_t runs, threads, seed, batch, ctx, tp, session_len, quant_policy;
    bool json;
} tsr__bg_cli;

/* --dummy-config: one size of each, handed to bench_forward.c (the GPU). */
static int tsr__bg_dummy(const tsr__bg_cli *o, int n_pos, int *argc, char ***argv) {
    if (n_pos > 0 || o->depth_s || o->runs != INT64_MIN || o->json || o->load_format ||
        o->session_len != INT64_MIN || o->threads != INT64_MIN || o->seed != INT64_MIN) {
        tsr_cli_err(TSR__BG_CMD ": --dummy-config takes no MODEL, --depth, --runs, --json, --load-format, "
                    "--session-len, --threads or --seed\n");
        return 1;
    }
    if (o->backend && strcmp(o->backend, "cuda") != 0 && strcmp(o->backend, "auto") != 0) {
        tsr_cli_err(TSR__BG_CMD ": --dummy-config runs on the GPU (--backend cuda or auto, not '%s')\n", o->backend);
        return 1;
    }
    int64_t qp;
    if (tsr_cli_quant_policy("bench generate", o->quant_policy, &qp)) return 1;
    if (qp > 0 && tsr_kvq_policy_check(qp, "cuda", NULL) != TSR_OK) {   /* --dummy-config runs on the GPU */
        tsr_cli_err(TSR__BG_CMD ": %s\n", tsr_last_error());
        return 1;
    }
    const char *prompt_s = o->prompt_s, *gen_s = o->gen_s;
    int64_t batch = o->batch, ctx = o->ctx, tp = o->tp;
    if (batch == INT64_MIN) batch = 64;
    if (ctx == INT64_MIN) ctx = 512;
    if (batch < 0 || batch > 65536 || ctx < 1 || ctx > TSR__BG_MAX_LEN || tp < 0) {
        tsr_cli_err(TSR__BG_CMD ": --batch must be in 0..65536, --ctx in 1..%lld, --tp >= 0\n",
                    (long long)TSR__BG_MAX_LEN);
        return 1;
    }
    tsr_bench_forward_opts bo;
    tsr_bench_forward_opts_default(&bo);
    int64_t v;
    int n;
    if (prompt_s) {
        if (tsr__bench_parse_list(TSR__BG_CMD, "--prompt-len", prompt_s, 0, TSR__BG_MAX_LEN, &v, 1, &n)) return 1;
        bo.prompt = v;
    }
    if (gen_s) {
        if (tsr__bench_parse_list(TSR__BG_CMD, "--gen-len", gen_s, 1, TSR__BG_MAX_LEN, &v, 1, &n)) return 1;
        bo.decode_steps = v;
    }
    bo.config = o->dummy;
    bo.dtype = o->dtype ? o->dtype : "bf16";
    bo.batch = batch;
    bo.ctx = ctx;
    bo.tp = tp;
    return tsr_bench_forward(&bo, argc, argv);
}

/* One request of n prompt ids and max_new tokens; its prefill seconds and decode tok/s. */
static int tsr__bg_request(tsr_engine *e, const int32_t *ids, int64_t n, int64_t max_new, double *prefill_s,
                           double *decode_tok_s) {
    tsr_engine_request req;
    tsr_engine_request_default(&req);
    req.prompt_ids = ids;
    req.n_prompt_ids = n;
    req.max_new_tokens = max_new;
    req.sampling.temperature = 0;
    req.ignore_eos = true;
    tsr__gen_result st;   /* a fresh sequence each time (no prefix cache: tsr__gen_engine_config) */
    if (tsr__gen_run(e, &req, NULL, NULL, &st) != TSR_OK) {
        tsr_cli_err(TSR__BG_CMD ": %s\n", tsr_last_error());
        return 1;
    }
    int64_t got = st.n_generated;
    *prefill_s = st.prefill_s;
    *decode_tok_s = st.decode_s > 0 && got > 1 ? (double)(got - 1) / st.decode_s : 0;
    tsr__gen_result_free(&st);
    if (got != max_new) {
        tsr_cli_err(TSR__BG_CMD ": a request of %lld tokens ended after %lld\n", (long long)max_new, (long long)got);
        return 1;
    }
    return 0;
}

/* One run of a case: its prefill and decode tok/s. */
static int tsr__bg_run(tsr_engine *e, const int32_t *ids, const tsr__bg_case *c, double *pre, double *dec) {
    double ps, d;
    if (c->depth == c->prompt) {   /* the prompt is the context: one request times both */
        if (tsr__bg_request(e, ids, c->prompt, c->gen + 1, &ps, &d)) return 1;
        *pre = ps > 0 ? (double)c->prompt / ps : 0;
        *dec = d;
        return 0;
    }
    if (tsr__bg_request(e, ids, c->prompt, 1, &ps, &d)) return 1;
    *pre = ps > 0 ? (double)c->prompt / ps : 0;
    if (tsr__bg_request(e, ids, c->depth > 0 ? c->depth : 1, c->gen + 1, &ps, &d)) return 1;
    *dec = d;
    return 0;
}

/* What the machine and process were like: load averages at the start and end of the runs. */
typedef struct {
    double load_start, load_end;
} tsr__bg_host;

static void tsr__bg_print_json(const char *model, const char *backend, int64_t threads, int64_t runs,
                               const tsr__bg_case *cs, int n_cases, size_t wb, int64_t rss, double ready_s,
                               const tsr__bg_host *h) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", model);
    cJSON_AddStringToObject(root, "backend", backend);
    cJSON_AddNumberToObject(root, "threads_requested", (double)threads);   /* 0: TESSERA_THREADS, else all cores */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cJSON_AddNumberToObject(root, "host_cpus", (double)(ncpu > 0 ? ncpu : 0));
    cJSON_AddNumberToObject(root, "loadavg_1m_start", h->load_start);
    cJSON_AddNumberToObject(root, "loadavg_1m_end", h->load_end);
    cJSON_AddNumberToObject(root, "runs", (double)runs);
    cJSON_AddStringToObject(root, "std", "sample (n - 1); 0 for one run");
    if (rss >= 0) cJSON_AddNumberToObject(root, "peak_rss_bytes", (double)rss);
    else cJSON_AddNullToObject(root, "peak_rss_bytes");
    if (wb) cJSON_AddNumberToObject(root, "weight_bytes", (double)wb);
    else cJSON_AddNullToObject(root, "weight_bytes");
    if (ready_s >= 0) cJSON_AddNumberToObject(root, "ready_s", ready_s);
    else cJSON_AddNullToObject(root, "ready_s");
    cJSON *arr = cJSON_AddArrayToObject(root, "cases");
    for (int i = 0; i < n_cases; i++) {
        const tsr__bg_case *c = &cs[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "prompt_len", (double)c->prompt);
        cJSON_AddNumberToObject(o, "depth", (double)c->depth);
        cJSON_AddNumberToObject(o, "gen_len", (double)c->gen);
        cJSON_AddNumberToObject(o, "runs", (double)runs);
        cJSON_AddNumberToObject(o, "prefill_tok_s_mean", c->pre_mean);
        cJSON_AddNumberToObject(o, "prefill_tok_s_std", c->pre_std);
        cJSON_AddNumberToObject(o, "decode_tok_s_mean", c->dec_mean);
        cJSON_AddNumberToObject(o, "decode_tok_s_std", c->dec_std);
        cJSON_AddItemToObject(o, "prefill_tok_s", cJSON_CreateDoubleArray(c->pre, (int)runs));
        cJSON_AddItemToObject(o, "decode_tok_s", cJSON_CreateDoubleArray(c->dec, (int)runs));
        cJSON_AddItemToArray(arr, o);
    }
    char *s = cJSON_Print(root);
    if (s) printf("%s\n", s);
    free(s);
    cJSON_Delete(root);
}

static void tsr__bg_print_table(const char *model, const char *backend, int64_t runs, const tsr__bg_case *cs,
                                int n_cases, size_t wb, int64_t rss, double ready_s, const tsr__bg_host *h) {
    printf("bench generate: %s, backend %s, %lld run%s per case after one warm-up; mean +- std (tok/s)\n", model,
           backend, (long long)runs, runs == 1 ? "" : "s");
    printf("| %7s | %7s | %7s | %21s | %21s | %12s |\n", "prompt", "depth", "gen", "prefill tok/s", "decode tok/s",
           "decode GB/s");
    printf("|---------|---------|---------|-----------------------|-----------------------|--------------|\n");
    for (int i = 0; i < n_cases; i++) {
        const tsr__bg_case *c = &cs[i];
        char pre[32], dec[32];
        snprintf(pre, sizeof pre, "%.1f +- %.1f", c->pre_mean, c->pre_std);
        snprintf(dec, sizeof dec, "%.1f +- %.1f", c->dec_mean, c->dec_std);
        printf("| %7lld | %7lld | %7lld | %21s | %21s | %12.2f |\n", (long long)c->prompt, (long long)c->depth,
               (long long)c->gen, pre, dec, (double)wb * c->dec_mean / 1e9);
    }
    for (int i = 0; i < n_cases; i++)   /* what `bench sweep` reads */
        printf("bench-generate: prompt_len=%lld depth=%lld gen_len=%lld decode_tok_s=%.2f prefill_tok_s=%.2f\n",
               (long long)cs[i].prompt, (long long)cs[i].depth, (long long)cs[i].gen, cs[i].dec_mean,
               cs[i].pre_mean);
    if (wb) printf("weights: %.1f MiB resident, all read once per decoded token (decode GB/s above)\n",
                   (double)wb / 1048576.0);
    if (rss >= 0) printf("peak RSS: %.1f MiB (VmHWM of the whole process)\n", (double)rss / 1048576.0);
    if (ready_s >= 0) printf("model ready %.2f s after process start\n", ready_s);
    if (h->load_start >= 0)
        printf("host load average (1 min): %.2f at the start, %.2f at the end\n", h->load_start, h->load_end);
}

int tsr_bench_generate(int argc, char **argv) {
    tsr__bg_cli o = {.runs = INT64_MIN, .threads = INT64_MIN, .seed = INT64_MIN, .batch = INT64_MIN,
                     .ctx = INT64_MIN, .session_len = INT64_MIN, .quant_policy = INT64_MIN};
    tsr_opt opts[] = {
        {"--backend", TSR_OPT_STR, &o.backend, "NAME", "cpu (default), cuda or auto"},
        {"--prompt-len", TSR_OPT_STR, &o.prompt_s, "LIST",
         "prompt tokens whose prefill is timed, e.g. 128,512 (default 256; with --dummy-config one size, the TTFT "
         "prompt, default 2048, 0 skips)"},
        {"--depth", TSR_OPT_STR, &o.depth_s, "LIST",
         "context before the timed decode, e.g. 0,256 (default: the prompt itself)"},
        {"--gen-len", TSR_OPT_STR, &o.gen_s, "LIST", "decode steps timed (default 64; with --dummy-config one, 128)"},
        {"--runs", TSR_OPT_INT, &o.runs, "N", "measured runs of each case after one warm-up; mean and std (default 1)"},
        {"--json", TSR_OPT_FLAG, &o.json, NULL, "one JSON document on stdout (per case mean/std, peak RSS, weight bytes)"},
        {"--session-len", TSR_OPT_INT, &o.session_len, "N",
         "longest sequence allowed (default: the model's context); a case past it is refused"},
        {"--load-format", TSR_OPT_STR, &o.load_format, "F", TSR_LOAD_FORMAT_HELP},
        {"--quant-policy", TSR_OPT_INT, &o.quant_policy, "N", TSR_QUANT_POLICY_HELP},
        {"--dummy-config", TSR_OPT_STR, &o.dummy, "NAME|PATH",
         "GPU speed figures on random weights made on the GPU: llama3-8b or a config.json (no MODEL needed); "
         "batch-1/batch-N decode and TTFT against the measured copy bandwidth and GEMM rate"},
        {"--batch", TSR_OPT_INT, &o.batch, "N", "with --dummy-config: batch of the batched decode (default 64, 0 skips)"},
        {"--ctx", TSR_OPT_INT, &o.ctx, "N", "with --dummy-config: context of the batched decode (default 512)"},
        {"--dtype", TSR_OPT_STR, &o.dtype, "T", "with --dummy-config: bf16 (default) or f16"},
        {"--tp", TSR_OPT_INT, &o.tp, "N", "expected tensor-parallel size: run under mpirun -np N"},
        {"--threads", TSR_OPT_INT, &o.threads, "N", "CPU threads (default: all cores)"},
        {"--seed", TSR_OPT_INT, &o.seed, "S", "seed of the random prompt (default 1)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse(TSR__BG_CMD " [MODEL] [--backend cpu|cuda] [--prompt-len 128,512] [--depth 0,256] "
                           "[--gen-len 128] [--runs N] [--json]\n"
                           "       " TSR__BG_CMD " --dummy-config llama3-8b|PATH [--batch N] [--ctx N] [--prompt-len N] [--tp N]",
                           "Measures prefill and decode tok/s of one sequence (random prompt ids, greedy, EOS "
                           "ignored) for each\ncombination of the lists, the peak RSS and the time to a ready model.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc != TSR_CLI_OK) return rc == TSR_CLI_HELP ? 0 : 1;
    if (o.dummy) return tsr__bg_dummy(&o, n_pos, &argc, &argv);
    if (o.batch != INT64_MIN || o.ctx != INT64_MIN || o.dtype) {
        tsr_cli_err(TSR__BG_CMD ": --batch, --ctx and --dtype go with --dummy-config\n");
        return 1;
    }
    const char *backend = o.backend ? o.backend : "cpu", *prompt_s = o.prompt_s, *gen_s = o.gen_s,
               *depth_s = o.depth_s;
    int64_t runs = o.runs == INT64_MIN ? 1 : o.runs, threads = o.threads == INT64_MIN ? 0 : o.threads,
            seed = o.seed == INT64_MIN ? 1 : o.seed, tp = o.tp, session_len = o.session_len;
    bool json = o.json;
    int64_t quant_policy;
    if (tsr_cli_quant_policy("bench generate", o.quant_policy, &quant_policy)) return 1;
    if (strcmp(backend, "cpu") != 0 && strcmp(backend, "cuda") != 0 && strcmp(backend, "auto") != 0) {
        tsr_cli_err(TSR__BG_CMD ": unknown backend '%s' (cpu, cuda or auto)\n", backend);
        return 1;
    }
    int64_t ps[TSR__BG_MAX_ITEMS], ds[TSR__BG_MAX_ITEMS], gs[TSR__BG_MAX_ITEMS];
    int np = 0, nd = 0, ng = 0;
    if (tsr__bench_parse_list(TSR__BG_CMD, "--prompt-len", prompt_s ? prompt_s : "256", 1, TSR__BG_MAX_LEN, ps,
                              TSR__BG_MAX_ITEMS, &np) ||
        (depth_s && tsr__bench_parse_list(TSR__BG_CMD, "--depth", depth_s, 0, TSR__BG_MAX_LEN, ds,
                                          TSR__BG_MAX_ITEMS, &nd)) ||
        tsr__bench_parse_list(TSR__BG_CMD, "--gen-len", gen_s ? gen_s : "64", 1, TSR__BG_MAX_LEN, gs,
                              TSR__BG_MAX_ITEMS, &ng))
        return 1;
    if (runs < 1 || runs > TSR__BG_MAX_RUNS) {
        tsr_cli_err(TSR__BG_CMD ": --runs %lld is out of range 1..%d\n", (long long)runs, TSR__BG_MAX_RUNS);
        return 1;
    }
    if (threads < 0 || threads > 4096) {
        tsr_cli_err(TSR__BG_CMD ": --threads %lld is out of range 0..4096 (0: all cores)\n", (long long)threads);
        return 1;
    }
    if (session_len == INT64_MIN) session_len = 0;   /* the model's context */
    else if (session_len < 1 || session_len > TSR__BG_MAX_LEN) {
        tsr_cli_err(TSR__BG_CMD ": --session-len %lld is out of range 1..%lld\n", (long long)session_len,
                    (long long)TSR__BG_MAX_LEN);
        return 1;
    }
    if (tp < 0 || tp > 4096) {
        tsr_cli_err(TSR__BG_CMD ": --tp %lld is out of range 1..4096\n", (long long)tp);
        return 1;
    }
    const char *path = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!path) return 1;

    /* The cases, and the longest sequence they need: a prompt and its first token, a context
     * and its gen + 1 tokens (the first comes from the context's prefill). */
    int n_cases = np * (nd ? nd : 1) * ng;
    tsr__bg_case *cs = calloc((size_t)n_cases, sizeof *cs);
    double *samples = calloc((size_t)n_cases * 2 * (size_t)runs, sizeof *samples);
    int32_t *ids = NULL;
    tsr_engine *e = NULL;
    int exit_code = 1;
    if (!cs || !samples) {
        tsr_cli_err(TSR__BG_CMD ": out of memory\n");
        goto done;
    }
    int64_t need = 0, max_ids = 1;
    for (int i = 0, k = 0; i < np; i++)
        for (int j = 0; j < (nd ? nd : 1); j++)
            for (int l = 0; l < ng; l++, k++) {
                tsr__bg_case *c = &cs[k];
                c->prompt = ps[i];
                c->depth = nd ? ds[j] : ps[i];
                c->gen = gs[l];
                c->pre = samples + (size_t)k * 2 * (size_t)runs;
                c->dec = c->pre + runs;
                int64_t ctx_len = c->depth > 0 ? c->depth : 1, n = ctx_len + c->gen + 1;
                if (c->prompt + 1 > n) n = c->prompt + 1;
                if (n > need) need = n;
                if (c->prompt > max_ids) max_ids = c->prompt;
                if (ctx_len > max_ids) max_ids = ctx_len;
            }
    /* Refuse what does not fit before loading anything: the session length given, else the
     * model's context. */
    int64_t limit = session_len;
    const char *limit_what = "--session-len";
    if (!limit) {
        tsr_model_config cfg;
        if (tsr_model_config_load(path, &cfg) != TSR_OK) {
            tsr_cli_err(TSR__BG_CMD ": %s\n", tsr_last_error());
            goto done;
        }
        limit = cfg.max_position_embeddings > 0 ? cfg.max_position_embeddings : TSR__BG_MAX_LEN;
        limit_what = "the model's context (max_position_embeddings)";
    }
    for (int k = 0; k < n_cases; k++) {
        const tsr__bg_case *c = &cs[k];
        int64_t ctx_len = c->depth > 0 ? c->depth : 1;
        if (c->prompt + 1 > limit) {
            tsr_cli_err(TSR__BG_CMD ": --prompt-len %lld and its first token need %lld tokens, more than %s, %lld\n",
                        (long long)c->prompt, (long long)(c->prompt + 1), limit_what, (long long)limit);
            goto done;
        }
        if (ctx_len + c->gen + 1 > limit) {
            tsr_cli_err(TSR__BG_CMD ": %s %lld + --gen-len %lld need %lld tokens (context, first token, decode "
                        "steps), more than %s, %lld\n", nd ? "--depth" : "--prompt-len (the context without --depth)",
                        (long long)c->depth, (long long)c->gen,
                        (long long)(ctx_len + c->gen + 1), limit_what, (long long)limit);
            goto done;
        }
    }

    tsr_engine_config ec;
    tsr__gen_engine_config(&ec, path);
    ec.threads = threads;
    ec.backend = backend;
    ec.tp = tp;
    ec.load_format = o.load_format;
    ec.quant_policy = quant_policy;
    ec.session_len = session_len ? session_len : need;   /* the KV pool holds one such session */
    /* the whole prompt in one step, as a single-sequence prefill */
    if (max_ids > ec.max_prefill_token_num) ec.max_prefill_token_num = max_ids;
    if (tsr_engine_open(&ec, &argc, &argv, &e) != TSR_OK) {
        if (tsr_group_world_rank() == 0) tsr_cli_err(TSR__BG_CMD ": %s\n", tsr_last_error());
        goto done;
    }
    if (!e) {   /* a TP worker */
        exit_code = 0;
        goto done;
    }
    double ready_s = tsr__bench_since_start();
    tsr__bg_host host = {.load_start = tsr__bench_loadavg()};
    ids = malloc((size_t)max_ids * sizeof *ids);
    if (!ids) {
        tsr_cli_err(TSR__BG_CMD ": out of memory\n");
        goto done;
    }
    /* Ids from the ordinary part of the vocabulary (past the first 100, where the special
     * tokens of most tokenizers sit). */
    const int64_t V = tsr_engine_vocab_size(e);
    uint64_t x = (uint64_t)seed;
    for (int64_t i = 0; i < max_ids; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)(100 + (int64_t)((x >> 33) % (uint64_t)(V > 200 ? V - 100 : V)));
        if (ids[i] >= V) ids[i] = (int32_t)(ids[i] % V);
    }
    fprintf(stderr, "bench generate: backend %s, %d case%s x %lld run%s (+1 warm-up), model ready %.2f s after start\n",
            backend, n_cases, n_cases == 1 ? "" : "s", (long long)runs, runs == 1 ? "" : "s", ready_s);
    /* warm-up: the first case once, untimed (pages in the weights, grows the scratch) */
    double pre, dec;
    if (tsr__bg_run(e, ids, &cs[0], &pre, &dec)) goto done;
    fprintf(stderr, "  warm-up: prefill %.1f tok/s, decode %.1f tok/s\n", pre, dec);
    tsr_progress("bench generate", 1, (int64_t)n_cases * runs + 1);
    for (int k = 0; k < n_cases; k++) {
        tsr__bg_case *c = &cs[k];
        for (int64_t r = 0; r < runs; r++) {
            if (tsr__bg_run(e, ids, c, &c->pre[r], &c->dec[r])) goto done;
            fprintf(stderr, "  prompt %lld, depth %lld, gen %lld, run %lld: prefill %.1f tok/s, decode %.1f tok/s\n",
                    (long long)c->prompt, (long long)c->depth, (long long)c->gen, (long long)r + 1, c->pre[r],
                    c->dec[r]);
            tsr_progress("bench generate", (int64_t)k * runs + r + 2, (int64_t)n_cases * runs + 1);
        }
        tsr__bench_mean_std(c->pre, (int)runs, &c->pre_mean, &c->pre_std);
        tsr__bench_mean_std(c->dec, (int)runs, &c->dec_mean, &c->dec_std);
    }
    size_t wb = tsr_engine_weight_bytes(e);
    int64_t rss = tsr__bench_peak_rss();
    host.load_end = tsr__bench_loadavg();
    if (json)
        tsr__bg_print_json(tsr_engine_model_name(e), backend, threads, runs, cs, n_cases, wb, rss, ready_s, &host);
    else tsr__bg_print_table(tsr_engine_model_name(e), backend, runs, cs, n_cases, wb, rss, ready_s, &host);
    exit_code = 0;
done:
    free(ids);
    free(cs);
    free(samples);
    if (e) tsr_engine_close(e);
    return exit_code;
}
