/* `tessera lite SUB`: offline quantization (issue 13).  `lite auto_awq` calibrates the model on a
 * text (tools/lite_stats.h), or reuses the work dir's calib_stats.safetensors, and writes an
 * AutoAWQ GEMM checkpoint (tools/lite_awq.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/tokenizer.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/lite_awq.h"
#include "tools/lite_stats.h"
#include "worker/kv_pool.h"
#include "worker/runtime.h"

#define TSR__LITE_DEFAULT_TEXT "/usr/share/common-licenses/GPL-3"   /* Debian package base-files */

/* Token ids: the text tokenized whole (no BOS, no template), or a file of ids. */
static int tsr__lite_tokens(const char *model_path, const char *text, const char *ids_path, int32_t **out, int64_t *n) {
    char *s = NULL;
    size_t len;
    if (tsr_read_file(ids_path ? ids_path : text, (size_t)1 << 30, &s, &len) != TSR_OK) {
        tsr_cli_err("tessera lite auto_awq: %s\n", tsr_last_error());
        return -1;
    }
    if (ids_path) {
        int64_t cap = 1024, k = 0;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
        char *p = s, *end;
        for (long long v; ids && (v = strtoll(p, &end, 10), end != p); p = end) {
            if (v < 0 || v > INT32_MAX) break;
            if (k == cap) {
                int32_t *r = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
                if (!r) free(ids);
                ids = r;
                if (!ids) break;
            }
            ids[k++] = (int32_t)v;
            while (*end == ',') end++;
        }
        free(s);
        if (!ids) {
            tsr_cli_err("tessera lite auto_awq: out of memory\n");
            return -1;
        }
        *out = ids, *n = k;
        return 0;
    }
    tsr_tokenizer *tok = NULL;
    int rc = -1;
    if (tsr_tokenizer_load_model(model_path, &tok) != TSR_OK)
        tsr_cli_err("tessera lite auto_awq: no tokenizer for %s (%s); give token ids with --calib-ids FILE\n", model_path,
                    tsr_last_error());
    else if (tsr_tokenizer_encode(tok, s, len, false, false, out, n) != TSR_OK)
        tsr_cli_err("tessera lite auto_awq: cannot tokenize %s: %s\n", text, tsr_last_error());
    else
        rc = 0;
    tsr_tokenizer_free(tok);
    free(s);
    return rc;
}

static int tsr__lite_auto_awq(int argc, char **argv) {
    const char *text = NULL, *ids = NULL, *dir = NULL, *backend = "auto";
    int64_t bits = 4, group = 128, samples = 128, seqlen = 512, rows = 256, threads = 0, n_grid = 20;
    bool search = false, rtn = false, no_awq = false, clip = false, clip_qk = false, duo = false;
    const tsr_opt opts[] = {
        {"--w-bits", TSR_OPT_INT, &bits, "N", "weight bits (4; the only width written)"},
        {"--w-group-size", TSR_OPT_INT, &group, "G", "input channels per quantization group (default 128)"},
        {"--search-scale", TSR_OPT_FLAG, &search, NULL, "grid-search the scale exponent per layer group (output MSE)"},
        {"--duo-scaling", TSR_OPT_FLAG, &duo, NULL, "the search also tries scales from activation and weight magnitudes"},
        {"--auto-clip", TSR_OPT_FLAG, &clip, NULL, "clip each (output row, group) weight range by the ratio of least output error"},
        {"--clip-qk", TSR_OPT_FLAG, &clip_qk, NULL, "with --auto-clip, clip q_proj and k_proj too (AutoAWQ does not)"},
        {"--rtn", TSR_OPT_FLAG, &rtn, NULL, "round to nearest: the same groups, no activation-aware scales"},
        {"--no-awq", TSR_OPT_FLAG, &no_awq, NULL, "the same as --rtn"},
        {"--calib-text", TSR_OPT_STR, &text, "FILE", "calibration text (default " TSR__LITE_DEFAULT_TEXT ", Debian base-files)"},
        {"--calib-ids", TSR_OPT_STR, &ids, "FILE", "calibration token ids (spaces or commas) instead of a text"},
        {"--calib-samples", TSR_OPT_INT, &samples, "N", "at most N calibration windows (default 128)"},
        {"--calib-seqlen", TSR_OPT_INT, &seqlen, "N", "tokens per window (default 512)"},
        {"--search-tokens", TSR_OPT_INT, &rows, "N", "activation rows kept per layer input for the search and the error report (default 256)"},
        {"--n-grid", TSR_OPT_INT, &n_grid, "N", "--search-scale tries exponents i/N, i < N (default 20)"},
        {"--work-dir", TSR_OPT_STR, &dir, "DIR", "where the checkpoint is written (required)"},
        {"--threads", TSR_OPT_INT, &threads, "N", "CPU threads for calibration (default: all cores)"},
        {"--backend", TSR_OPT_STR, &backend, "NAME", "calibration backend: auto, cpu or cuda"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera lite auto_awq [MODEL] --w-bits 4 --w-group-size 128 [--search-scale] --work-dir DIR",
                           "Activation-aware 4-bit weight quantization (AWQ): per-channel scales from calibration "
                           "activations folded into the preceding norm or linear layer, then asymmetric group "
                           "quantization with zero points.  Writes an AutoAWQ GEMM checkpoint (model.safetensors, "
                           "config.json with quantization_config, tokenizer) and awq_report.json to DIR.  Uses "
                           "DIR/calib_stats.safetensors when present (and neither search nor clipping), else "
                           "calibrates and writes it.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc == TSR_CLI_HELP) return 0;
    if (rc != TSR_CLI_OK) return 1;
    rtn = rtn || no_awq;
    if (!dir) {
        tsr_cli_err("tessera lite auto_awq: give the output directory with --work-dir DIR\n");
        return 1;
    }
    if (bits != 4) {
        tsr_cli_err("tessera lite auto_awq: --w-bits %lld: only 4-bit weights are written (AutoAWQ GEMM)\n", (long long)bits);
        return 1;
    }
    if (group < 32 || group % 32 || samples < 1 || seqlen < 2 || rows < 1 || n_grid < 2 || threads < 0) {
        tsr_cli_err("tessera lite auto_awq: --w-group-size must be a positive multiple of 32; --calib-samples, "
                    "--search-tokens positive, --calib-seqlen >= 2, --n-grid >= 2\n");
        return 1;
    }
    if (duo && !search) {
        tsr_cli_err("tessera lite auto_awq: --duo-scaling widens --search-scale's grid: give --search-scale too\n");
        return 1;
    }
    if (clip_qk && !clip) {
        tsr_cli_err("tessera lite auto_awq: --clip-qk needs --auto-clip\n");
        return 1;
    }
    if (search && rtn) {
        tsr_cli_err("tessera lite auto_awq: --search-scale and --rtn exclude each other\n");
        return 1;
    }
    const char *model_path = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!model_path) return 1;
    tsr_awq_opts o = {.bits = bits, .group = group, .search = search, .rtn = rtn, .n_grid = n_grid, .alpha = 0.5,
                      .duo = duo, .clip = clip, .clip_qk = clip_qk, .n_clip = 20};
    if (tsr_lite_auto_awq_check(model_path, &o) != TSR_OK) {
        tsr_cli_err("tessera lite auto_awq: %s\n", tsr_last_error());
        return 1;
    }
    tsr_lite_stats *stats = NULL;
    char *stats_path = tsr_path_join(dir, "calib_stats.safetensors");
    int status = 1;
    if (!search && !clip && !text && !ids && tsr_path_exists(stats_path)) {
        if (tsr_lite_stats_read(stats_path, &stats) != TSR_OK) {
            tsr_cli_err("tessera lite auto_awq: %s\n", tsr_last_error());
            goto done;
        }
        TSR_LOGI("auto_awq: activation statistics from %s", stats_path);
    } else {
        int32_t *toks = NULL;
        int64_t n_toks = 0;
        if (tsr__lite_tokens(model_path, text ? text : TSR__LITE_DEFAULT_TEXT, ids, &toks, &n_toks)) goto done;
        tsr_runtime rt;
        tsr_runtime_opts ro;
        tsr_runtime_opts_default(&ro);
        ro.model_path = model_path;
        ro.backend = backend;
        ro.threads = threads;
        ro.session_len = seqlen;
        ro.cache_max_entry_count = (double)((seqlen + TSR_KV_DEFAULT_BLOCK_LEN - 1) / TSR_KV_DEFAULT_BLOCK_LEN);
        ro.block_len = TSR_KV_DEFAULT_BLOCK_LEN;
        if (tsr_runtime_open(&rt, &ro, &argc, &argv) != TSR_OK) {
            tsr_cli_err("tessera lite auto_awq: %s\n", tsr_last_error());
            free(toks);
            goto done;
        }
        tsr_status st = tsr_lite_stats_collect(&rt, toks, n_toks, samples, seqlen, rows, &stats);
        tsr_runtime_close(&rt);
        free(toks);
        if (st == TSR_OK) snprintf(stats->model, sizeof stats->model, "%s", model_path);
        if (st != TSR_OK) {
            tsr_cli_err("tessera lite auto_awq: %s\n", tsr_last_error());
            goto done;
        }
    }
    if (tsr_lite_auto_awq(model_path, stats, &o, dir) != TSR_OK) {
        tsr_cli_err("tessera lite auto_awq: %s\n", tsr_last_error());
        goto done;
    }
    if (stats->pt[0].n_rows && tsr_lite_stats_write(stats, stats_path) != TSR_OK) {
        tsr_cli_err("tessera lite auto_awq: %s\n", tsr_last_error());
        goto done;
    }
    printf("wrote %s (AutoAWQ GEMM, %lld-bit, group %lld, %s)\n", dir, (long long)bits, (long long)group,
           rtn ? "round to nearest" : search ? "AWQ, searched scales" : "AWQ");
    if (clip) printf("  weights clipped per group (auto_clip)\n");
    status = 0;
done:
    tsr_lite_stats_free(stats);
    free(stats_path);
    return status;
}

int tsr_cmd_lite(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        if (tsr_cli_is_root())
            fprintf(f, "usage: tessera lite <tool> [options]\n\ntools:\n"
                       "  calibrate    activation statistics (K/V ranges and more) into DIR/calib_stats.safetensors\n"
                       "  kv_qparams   static int8/int4 KV cache parameters from them, into a workspace\n"
                       "  auto_awq     4-bit AWQ weight quantization into an AutoAWQ GEMM checkpoint (tessera lite auto_awq --help)\n");
        return argc < 2 ? 1 : 0;
    }
    if (!strcmp(argv[1], "auto_awq")) {
        static char name[] = "lite auto_awq";
        argv[1] = name;
        return tsr__lite_auto_awq(argc - 1, argv + 1);
    }
    if (!strcmp(argv[1], "calibrate") || !strcmp(argv[1], "kv_qparams")) {
        static char cal[] = "lite calibrate", kvq[] = "lite kv_qparams";
        bool is_cal = !strcmp(argv[1], "calibrate");
        argv[1] = is_cal ? cal : kvq;
        return is_cal ? tsr_lite_calibrate(argc - 1, argv + 1) : tsr_lite_kv_qparams(argc - 1, argv + 1);
    }
    tsr_cli_err("tessera lite: unknown tool '%s' (known: calibrate, kv_qparams, auto_awq)\n", argv[1]);
    return 1;
}
