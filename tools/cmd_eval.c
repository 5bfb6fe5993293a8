/* `tessera eval SUB`: model evaluations.  `eval ppl` is perplexity over a text file, defined
 * as llama.cpp's perplexity tool defines it, so figures can be set side by side:
 *
 *   - the whole file is tokenized once, without the chat template; when the model's tokenizer
 *     adds BOS (add_special), BOS is put before the stream and, as llama.cpp does, the first
 *     token of every window is replaced by BOS;
 *   - windows of --ctx tokens start every --stride tokens (default: ctx, non-overlapping), each
 *     run from an empty KV cache;
 *   - in each window only the second half is scored: tokens ctx/2 .. ctx-1, each predicted from
 *     the logits of the token before it (llama.cpp scores ctx/2+1 .. ctx-1: one fewer per
 *     window);
 *   - ppl = exp(mean NLL), log-softmax over the full model vocabulary in double on rank 0.
 *
 * The forward passes go through worker/runtime.h exactly like `tessera logits`, so it runs on
 * any backend and under mpirun (rank 0 drives; the other ranks replay its steps). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "common/status.h"
#include "coordinator/block_manager.h"
#include "coordinator/tokenizer.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "worker/forward.h"
#include "worker/kv_pool.h"
#include "worker/runtime.h"

#define TSR__EVAL_MAX_TEXT ((size_t)1 << 30)

/* Token ids from a file of integers separated by white space or commas (--ids). */
static int tsr__eval_read_ids(const char *path, int32_t **out, int64_t *n) {
    char *s;
    size_t len;
    if (tsr_read_file(path, TSR__EVAL_MAX_TEXT, &s, &len) != TSR_OK) {
        tsr_cli_err("tessera eval ppl: %s\n", tsr_last_error());
        return -1;
    }
    int64_t cap = 256, k = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    const char *p = s;
    while (ids) {
        while (*p == ',' || *p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            tsr_cli_err("tessera eval ppl: %s: expected non-negative token ids separated by spaces or commas\n", path);
            free(ids);
            free(s);
            return -1;
        }
        if (k == cap) {
            cap *= 2;
            int32_t *r = realloc(ids, sizeof(int32_t) * (size_t)cap);
            if (!r) free(ids);
            ids = r;
            if (!ids) break;
        }
        ids[k++] = (int32_t)v;
        p = end;
    }
    free(s);
    if (!ids) {
        tsr_cli_err("tessera eval ppl: out of memory reading %s\n", path);
        return -1;
    }
    *out = ids;
    *n = k;
    return 0;
}

/* The text file tokenized as one stream; BOS first (and *bos set) when the tokenizer adds it. */
static int tsr__eval_tokenize(const char *model_path, const char *path, int32_t **out, int64_t *n, int32_t *bos) {
    char *text = NULL;
    size_t len;
    tsr_tokenizer *tok = NULL;
    int32_t *ids = NULL, *pre = NULL;
    int64_t n_ids = 0, n_pre = 0;
    int rc = -1;
    if (tsr_read_file(path, TSR__EVAL_MAX_TEXT, &text, &len) != TSR_OK) {
        tsr_cli_err("tessera eval ppl: --text: %s\n", tsr_last_error());
        return -1;
    }
    if (tsr_tokenizer_load_model(model_path, &tok) != TSR_OK) {
        tsr_cli_err("tessera eval ppl: no tokenizer for %s (%s); give token ids with --ids FILE instead\n",
                    model_path, tsr_last_error());
        goto done;
    }
    /* The tokenizer adds a BOS when add_special puts a token before a plain "a" (that token is
     * the BOS, also where the tokenizer's config names none, as an HF post-processor may). */
    if (tsr_tokenizer_encode(tok, "a", 1, true, false, &pre, &n_pre) != TSR_OK ||
        tsr_tokenizer_encode(tok, "a", 1, false, false, &ids, &n_ids) != TSR_OK) {
        tsr_cli_err("tessera eval ppl: cannot tokenize: %s\n", tsr_last_error());
        goto done;
    }
    *bos = n_pre > n_ids && n_ids > 0 && pre[0] != ids[0] ? pre[0] : -1;
    free(ids);
    ids = NULL;
    if (tsr_tokenizer_encode(tok, text, len, false, false, &ids, &n_ids) != TSR_OK) {
        tsr_cli_err("tessera eval ppl: cannot tokenize %s: %s\n", path, tsr_last_error());
        goto done;
    }
    int32_t *all = malloc(sizeof(int32_t) * (size_t)(n_ids + 1));
    if (!all) {
        tsr_cli_err("tessera eval ppl: out of memory for %lld tokens\n", (long long)n_ids);
        goto done;
    }
    int64_t k = 0;
    if (*bos >= 0) all[k++] = *bos;
    if (n_ids) memcpy(all + k, ids, sizeof(int32_t) * (size_t)n_ids);
    *out = all;
    *n = k + n_ids;
    rc = 0;
done:
    free(pre);
    free(ids);
    tsr_tokenizer_free(tok);
    free(text);
    return rc;
}

typedef struct tsr__ppl_sum {
    double nll, nll2;   /* sums of -log p and its square over the scored tokens */
    int64_t n;
} tsr__ppl_sum;

/* rows [n][vocab]: row i predicts next[i]. */
static void tsr__ppl_score(const float *rows, int64_t n, int64_t vocab, const int32_t *next, tsr__ppl_sum *s) {
    for (int64_t i = 0; i < n; i++) {
        const float *r = rows + i * vocab;
        double mx = r[0];
        for (int64_t v = 1; v < vocab; v++) mx = r[v] > mx ? r[v] : mx;
        double z = 0;
        for (int64_t v = 0; v < vocab; v++) z += exp((double)r[v] - mx);
        double nll = log(z) + mx - (double)r[next[i]];
        s->nll += nll;
        s->nll2 += nll * nll;
        s->n++;
    }
}

static int tsr__eval_ppl(int argc, char **argv) {
    const char *text_path = NULL, *ids_path = NULL, *backend = "auto", *load_format = NULL;
    int64_t ctx = 512, stride = 0, max_windows = 0, threads = 0, tp = 0, chunk = 512, quant_policy_arg = INT64_MIN;
    bool json = false;
    const tsr_opt opts[] = {
        {"--text", TSR_OPT_STR, &text_path, "FILE", "UTF-8 text to evaluate (tokenized whole, no chat template)"},
        {"--ids", TSR_OPT_STR, &ids_path, "FILE", "token ids (spaces or commas) instead of --text; used as given, no BOS"},
        {"--ctx", TSR_OPT_INT, &ctx, "N", "window length in tokens (default 512); the second half is scored"},
        {"--stride", TSR_OPT_INT, &stride, "N", "a window starts every N tokens (default: ctx, non-overlapping)"},
        {"--max-windows", TSR_OPT_INT, &max_windows, "K", "evaluate at most the first K windows (default: all)"},
        {"--json", TSR_OPT_FLAG, &json, NULL, "print the result as one JSON object on stdout"},
        {"--chunk", TSR_OPT_INT, &chunk, "N", "feed a window in forward steps of at most N tokens (default 512)"},
        {"--threads", TSR_OPT_INT, &threads, "N", "CPU threads (default: all cores)"},
        {"--backend", TSR_OPT_STR, &backend, "NAME", "auto (the GPU when there is one), cpu or cuda"},
        {"--tp", TSR_OPT_INT, &tp, "N", "expected tensor-parallel size: run under mpirun -np N"},
        {"--load-format", TSR_OPT_STR, &load_format, "F", "auto (the files) or dummy (random weights of the model's shapes)"},
        {"--quant-policy", TSR_OPT_INT, &quant_policy_arg, "N", TSR_QUANT_POLICY_HELP},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera eval ppl [MODEL] --text FILE [--ctx 512] [--stride N] [--max-windows K] [--json]",
                           "Perplexity over a text file as llama.cpp's perplexity tool computes it: windows of --ctx "
                           "tokens, each from an empty cache (BOS first when the tokenizer adds it), the second half "
                           "of each scored, ppl = exp(mean NLL).  MODEL: an HF directory, a GGUF file or a workspace "
                           "(default: the default model).",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc == TSR_CLI_HELP) return 0;
    if (rc != TSR_CLI_OK) return 1;
    if (!text_path == !ids_path) {
        tsr_cli_err("tessera eval ppl: give the text to evaluate with --text FILE (or token ids with --ids FILE)\n");
        return 1;
    }
    int64_t quant_policy;
    if (tsr_cli_quant_policy("eval ppl", quant_policy_arg, &quant_policy)) return 1;
    if (stride == 0) stride = ctx;
    if (ctx < 2 || stride < 1 || max_windows < 0 || chunk < 1 || threads < 0) {
        tsr_cli_err("tessera eval ppl: --ctx must be at least 2, --stride and --chunk positive, --max-windows >= 0\n");
        return 1;
    }
    const char *model_path = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!model_path) return 1;

    /* Every rank reads the input, so a bad file stops the group before it loads anything. */
    int32_t *toks = NULL, bos = -1;
    int64_t n_toks = 0;
    if (ids_path ? tsr__eval_read_ids(ids_path, &toks, &n_toks) : tsr__eval_tokenize(model_path, text_path, &toks, &n_toks, &bos))
        return 1;
    if (n_toks < ctx) {
        tsr_cli_err("tessera eval ppl: %s has %lld tokens, fewer than one window of --ctx %lld\n",
                    ids_path ? ids_path : text_path, (long long)n_toks, (long long)ctx);
        free(toks);
        return 1;
    }
    int64_t n_win = (n_toks - ctx) / stride + 1;
    if (max_windows > 0 && n_win > max_windows) n_win = max_windows;

    tsr_runtime rt;
    tsr_runtime_opts ro;
    tsr_runtime_opts_default(&ro);
    ro.model_path = model_path;
    ro.backend = backend;
    ro.tp = tp;
    ro.threads = threads;
    ro.load_format = load_format;
    ro.quant_policy = quant_policy;
    ro.session_len = ctx;
    ro.cache_max_entry_count = (double)((ctx + TSR_KV_DEFAULT_BLOCK_LEN - 1) / TSR_KV_DEFAULT_BLOCK_LEN);
    ro.block_len = TSR_KV_DEFAULT_BLOCK_LEN;
    if (tsr_runtime_open(&rt, &ro, &argc, &argv) != TSR_OK) {
        tsr_cli_err("tessera eval ppl: %s\n", tsr_last_error());
        free(toks);
        return 1;
    }
    if (rt.group.rank != 0) {
        free(toks);
        return tsr_runtime_worker_main(&rt);
    }

    int status = 1;
    tsr_model *m = rt.model;
    tsr_kv_seq seq = {0};
    tsr_block_manager *bm = NULL;
    float *logits = NULL;
    int32_t *win = NULL;
    int64_t vocab = m->cfg.vocab_size, max_pos = m->cfg.max_position_embeddings;
    int64_t first = ctx / 2;           /* the first scored position */
    int64_t n_fed = ctx - 1;           /* the last token predicts nothing: it is not fed */
    if (max_pos > 0 && ctx > max_pos) {
        tsr_cli_err("tessera eval ppl: --ctx %lld is longer than the model's context (%lld tokens)\n", (long long)ctx,
                    (long long)max_pos);
        goto done;
    }
    for (int64_t i = 0; i < n_toks; i++)
        if (toks[i] >= vocab) {
            tsr_cli_err("tessera eval ppl: token id %d at %lld is outside the model's vocabulary (%lld)\n", toks[i],
                        (long long)i, (long long)vocab);
            goto done;
        }
    logits = malloc(sizeof(float) * (size_t)((ctx - first) * vocab));
    win = malloc(sizeof(int32_t) * (size_t)ctx);
    if (!logits || !win) {
        tsr_cli_err("tessera eval ppl: out of memory for %lld x %lld logits\n", (long long)(ctx - first), (long long)vocab);
        goto done;
    }
    if (tsr_bm_init(rt.kv.n_blocks, rt.kv.layout.block_len, &bm) != TSR_OK || tsr_bm_seq_reserve(bm, &seq, ctx) != TSR_OK)
        goto fail;

    tsr__ppl_sum sum = {0};
    double fwd_s = 0;
    tsr_progress("ppl windows", 0, n_win);
    for (int64_t w = 0; w < n_win; w++) {
        memcpy(win, toks + w * stride, sizeof(int32_t) * (size_t)ctx);
        if (bos >= 0) win[0] = bos;
        seq.n_tokens = 0;   /* every window starts from an empty cache; its blocks are reused */
        double t0 = tsr_now();
        /* positions 0 .. first-2 only fill the cache; first-1 .. ctx-2 give the scored logits */
        if (first > 1 && tsr_forward_seq(rt.fs, &rt.kv, &seq, win, first - 1, false, chunk, NULL) != TSR_OK) goto fail;
        if (tsr_forward_seq(rt.fs, &rt.kv, &seq, win + first - 1, ctx - first, true, chunk, logits) != TSR_OK) goto fail;
        fwd_s += tsr_now() - t0;
        tsr__ppl_score(logits, ctx - first, vocab, win + first, &sum);
        tsr_progress("ppl windows", w + 1, n_win);
    }
    double mean = sum.nll / (double)sum.n, ppl = exp(mean);
    /* llama.cpp's uncertainty: the standard error of the mean NLL, carried through exp */
    double var = sum.n > 1 ? (sum.nll2 / (double)sum.n - mean * mean) * (double)sum.n / (double)(sum.n - 1) : 0;
    double ppl_err = ppl * sqrt(var > 0 ? var / (double)sum.n : 0);
    double tps = fwd_s > 0 ? (double)(n_win * n_fed) / fwd_s : 0;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", model_path);
        cJSON_AddStringToObject(o, "input", ids_path ? ids_path : text_path);
        cJSON_AddNumberToObject(o, "tokens_in_input", (double)n_toks);
        cJSON_AddNumberToObject(o, "ctx", (double)ctx);
        cJSON_AddNumberToObject(o, "stride", (double)stride);
        cJSON_AddBoolToObject(o, "bos", bos >= 0);
        cJSON_AddNumberToObject(o, "windows", (double)n_win);
        cJSON_AddNumberToObject(o, "tokens_scored", (double)sum.n);
        cJSON_AddNumberToObject(o, "nll_mean", mean);
        cJSON_AddNumberToObject(o, "ppl", ppl);
        cJSON_AddNumberToObject(o, "ppl_stderr", ppl_err);
        cJSON_AddNumberToObject(o, "forward_seconds", fwd_s);
        cJSON_AddNumberToObject(o, "tokens_per_second", tps);
        cJSON_AddNumberToObject(o, "ranks", (double)rt.group.size);
        cJSON_AddNumberToObject(o, "quant_policy", (double)rt.quant_policy);
        cJSON_AddBoolToObject(o, "kv_static", rt.kv_static);
        char *s = cJSON_PrintUnformatted(o);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("windows %lld of %lld tokens (stride %lld%s), tokens scored %lld\n", (long long)n_win, (long long)ctx,
               (long long)stride, bos >= 0 ? ", BOS first" : "", (long long)sum.n);
        printf("ppl %.4f +/- %.4f  (mean NLL %.6f)\n", ppl, ppl_err, mean);
        printf("forward %.2f s, %.1f tok/s\n", fwd_s, tps);
    }
    status = 0;
    goto done;
fail:
    tsr_cli_err("tessera eval ppl: %s\n", tsr_last_error());
done:
    if (bm) tsr_bm_seq_release(bm, &seq);
    tsr_bm_free(bm);
    free(win);
    free(logits);
    free(toks);
    tsr_runtime_close(&rt);
    return status;
}

int tsr_cmd_eval(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        if (tsr_cli_is_root())
            fprintf(f, "usage: tessera eval <evaluation> [options]\n\nevaluations:\n"
                       "  ppl          perplexity over a text file (llama.cpp's definition; tessera eval ppl --help)\n");
        return argc < 2 ? 1 : 0;
    }
    if (!strcmp(argv[1], "ppl")) {
        static char name[] = "eval ppl";   /* the option parser's messages say "tessera eval ppl: ..." */
        argv[1] = name;
        return tsr__eval_ppl(argc - 1, argv + 1);
    }
    tsr_cli_err("tessera eval: unknown evaluation '%s' (known: ppl)\n", argv[1]);
    return 1;
}
