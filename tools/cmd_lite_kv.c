/* `tessera lite calibrate` and `tessera lite kv_qparams` (issue 14): LMDeploy's static KV flow.
 * calibrate runs the model over windows of a text and writes DIR/calib_stats.safetensors
 * (tools/lite_stats.h); kv_qparams turns its K/V ranges into one (scale, zp) per layer and KV
 * head (worker/kv_qparams.h), prints them per layer and TP rank as LMDeploy does, writes them into
 * a workspace and sets its config.ini's quant_policy.  Per-head ranges are taken over a head's
 * channels, so they do not depend on the channel order (a GGUF's K is interleaved per head,
 * a workspace's is HF's): statistics of the GGUF a workspace came from serve that workspace.
 * int4 also writes each K channel's midpoint (kv_qparams.h k_channel_zp), which does depend on
 * it: the statistics file says its K order and channels are put in the workspace's (HF) order. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/tokenizer.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/lite_stats.h"
#include "worker/kv_pool.h"
#include "worker/kv_qparams.h"
#include "worker/runtime.h"
#include "worker/shard_rules.h"
#include "worker/workspace.h"

#define TSR__CAL_DEFAULT_TEXT "/usr/share/common-licenses/GPL-3"   /* Debian package base-files */
#define TSR__CAL_FILE "calib_stats.safetensors"

int tsr_lite_calibrate(int argc, char **argv) {
    const char *text = TSR__CAL_DEFAULT_TEXT, *dir = NULL, *backend = "auto";
    int64_t samples = 128, seqlen = 2048, threads = 0;
    const tsr_opt opts[] = {
        {"--calib-text", TSR_OPT_STR, &text, "FILE", "calibration text (default " TSR__CAL_DEFAULT_TEXT ", Debian base-files)"},
        {"--calib-samples", TSR_OPT_INT, &samples, "N", "at most N windows (default 128)"},
        {"--calib-seqlen", TSR_OPT_INT, &seqlen, "N", "tokens per window (default 2048)"},
        {"--work-dir", TSR_OPT_STR, &dir, "DIR", "where calib_stats.safetensors is written (required; made if missing)"},
        {"--threads", TSR_OPT_INT, &threads, "N", "CPU threads (default: all cores)"},
        {"--backend", TSR_OPT_STR, &backend, "NAME", "auto, cpu or cuda"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera lite calibrate [MODEL] [--calib-text FILE] [--calib-samples 128] [--calib-seqlen 2048] "
                           "--work-dir DIR",
                           "Runs MODEL (a GGUF, an HF directory or a workspace; one rank) over consecutive windows of "
                           "the text and writes per-layer, per-channel activation statistics (max, min, mean, absmax, "
                           "absmean of every linear input and of K after RoPE and V) to DIR/" TSR__CAL_FILE
                           ", which `lite kv_qparams` and `lite auto_awq` read.",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc == TSR_CLI_HELP) return 0;
    if (rc != TSR_CLI_OK) return 1;
    if (!dir) {
        tsr_cli_err("tessera lite calibrate: give the output directory with --work-dir DIR\n");
        return 1;
    }
    if (samples < 1 || seqlen < 2 || threads < 0) {
        tsr_cli_err("tessera lite calibrate: --calib-samples must be positive and --calib-seqlen at least 2\n");
        return 1;
    }
    const char *model_path = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!model_path) return 1;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        tsr_cli_err("tessera lite calibrate: --work-dir %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char *s = NULL;
    size_t len = 0;
    int32_t *toks = NULL;
    int64_t n_toks = 0;
    tsr_tokenizer *tok = NULL;
    if (tsr_read_file(text, (size_t)1 << 30, &s, &len) != TSR_OK) {
        tsr_cli_err("tessera lite calibrate: %s\n", tsr_last_error());
        return 1;
    }
    tsr_status st = tsr_tokenizer_load_model(model_path, &tok);
    if (st == TSR_OK) st = tsr_tokenizer_encode(tok, s, len, false, false, &toks, &n_toks);
    tsr_tokenizer_free(tok);
    free(s);
    if (st != TSR_OK) {
        tsr_cli_err("tessera lite calibrate: tokenizing %s: %s\n", text, tsr_last_error());
        return 1;
    }
    if (n_toks < seqlen) {
        tsr_cli_err("tessera lite calibrate: %s has %lld tokens, fewer than one window of --calib-seqlen %lld\n", text,
                    (long long)n_toks, (long long)seqlen);
        free(toks);
        return 1;
    }
    tsr_runtime rt;
    tsr_runtime_opts ro;
    tsr_runtime_opts_default(&ro);
    ro.model_path = model_path;
    ro.backend = backend;
    ro.threads = threads;
    ro.session_len = seqlen;
    ro.quant_policy = 0;   /* the statistics of the unquantized model, whatever config.ini says */
    ro.cache_max_entry_count = (double)((seqlen + TSR_KV_DEFAULT_BLOCK_LEN - 1) / TSR_KV_DEFAULT_BLOCK_LEN);
    ro.block_len = TSR_KV_DEFAULT_BLOCK_LEN;
    if (tsr_runtime_open(&rt, &ro, &argc, &argv) != TSR_OK) {
        tsr_cli_err("tessera lite calibrate: %s\n", tsr_last_error());
        free(toks);
        return 1;
    }
    tsr_lite_stats *stats = NULL;
    double t0 = tsr_now();
    st = tsr_lite_stats_collect(&rt, toks, n_toks, samples, seqlen, 0, &stats);
    tsr_runtime_close(&rt);
    free(toks);
    char *path = tsr_path_join(dir, TSR__CAL_FILE);
    if (st == TSR_OK) {
        snprintf(stats->model, sizeof stats->model, "%s", model_path);
        st = path ? tsr_lite_stats_write(stats, path) : tsr_errorf(TSR_ERR_OOM, "path");
    }
    if (st == TSR_OK)
        printf("wrote %s: %lld windows of %lld tokens, %lld layers (%.1f s)\n", path, (long long)stats->samples,
               (long long)stats->seqlen, (long long)stats->n_layer, tsr_now() - t0);
    else
        tsr_cli_err("tessera lite calibrate: %s\n", tsr_last_error());
    tsr_lite_stats_free(stats);
    free(path);
    return st == TSR_OK ? 0 : 1;
}

/* config.ini's quant_policy line set to v (added at the end when there is none). */
static tsr_status tsr__ws_set_policy(const char *ws, int64_t v) {
    char *path = tsr_path_join(ws, "config.ini"), *s = NULL, *out = NULL;
    size_t len = 0, n = 0;
    tsr_status st = path ? tsr_read_file(path, (size_t)1 << 20, &s, &len) : tsr_errorf(TSR_ERR_OOM, "path");
    if (st == TSR_OK && !(out = malloc(len + 64))) st = tsr_errorf(TSR_ERR_OOM, "config.ini");
    bool done = false;
    for (const char *p = s; st == TSR_OK && p < s + len;) {
        const char *e = memchr(p, '\n', (size_t)(s + len - p));
        size_t l = e ? (size_t)(e - p) + 1 : (size_t)(s + len - p);
        const char *q = p;
        while (q < p + l && (*q == ' ' || *q == '\t')) q++;
        size_t kl = strlen("quant_policy");
        if (!done && (size_t)(p + l - q) > kl && !strncmp(q, "quant_policy", kl) &&
            (q[kl] == ' ' || q[kl] == '=' || q[kl] == '\t')) {
            n += (size_t)sprintf(out + n, "quant_policy = %lld\n", (long long)v);
            done = true;
        } else {
            memcpy(out + n, p, l);
            n += l;
        }
        p += l;
    }
    if (st == TSR_OK && !done) {
        if (n && out[n - 1] != '\n') out[n++] = '\n';
        n += (size_t)sprintf(out + n, "quant_policy = %lld\n", (long long)v);
    }
    if (st == TSR_OK) st = tsr_write_file(path, out, n);
    free(out);
    free(s);
    free(path);
    return st;
}

static void tsr__print_list(const float *qp, int64_t n, int k) {
    for (int64_t h = 0; h < n; h++) printf("%s%.6g", h ? "," : "", (double)qp[4 * h + k]);
}

int tsr_lite_kv_qparams(int argc, char **argv) {
    const char *dir = NULL, *ws = NULL;
    int64_t bits = 8, tp = 0;
    bool sym = false;
    const tsr_opt opts[] = {
        {"--work-dir", TSR_OPT_STR, &dir, "DIR", "where `lite calibrate` wrote calib_stats.safetensors (required)"},
        {"--workspace", TSR_OPT_STR, &ws, "WS", "the workspace (`tessera convert`) to write kv_qparams.json into (required)"},
        {"--kv-bits", TSR_OPT_INT, &bits, "N", "8 (int8, default) or 4 (int4)"},
        {"--kv-sym", TSR_OPT_FLAG, &sym, NULL, "symmetric: zp = 0, scale = absmax / (2^(bits-1) - 1)"},
        {"--tp", TSR_OPT_INT, &tp, "N", "tensor-parallel size; must be the workspace's tensor_para_size (default)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera lite kv_qparams --work-dir DIR --workspace WS [--kv-sym] [--kv-bits 8|4] [--tp N]",
                           "Static KV cache quantization parameters from `lite calibrate`'s K and V ranges: per layer and "
                           "KV head, asymmetric zp = (min+max)/2, scale = (max-min)/(2^bits-1) (or --kv-sym), in "
                           "LMDeploy's convention value = signed code * scale + zp.  Prints them per layer and TP rank, "
                           "writes WS/" TSR_KV_QPARAMS_FILE " and sets quant_policy in WS/config.ini to the bits.",
                           opts, argc, argv, NULL, 0, &n_pos);
    if (rc == TSR_CLI_HELP) return 0;
    if (rc != TSR_CLI_OK) return 1;
    if (!dir || !ws) {
        tsr_cli_err("tessera lite kv_qparams: give --work-dir DIR (the statistics) and --workspace WS\n");
        return 1;
    }
    if (bits != 8 && bits != 4) {
        tsr_cli_err("tessera lite kv_qparams: --kv-bits %lld: must be 8 (int8) or 4 (int4)\n", (long long)bits);
        return 1;
    }
    tsr_model_config cfg;
    int ws_tp = 0;
    tsr_dtype wt;
    if (!tsr_workspace_is(ws)) {
        tsr_cli_err("tessera lite kv_qparams: --workspace %s: not a workspace (no config.ini; make one with tessera convert)\n", ws);
        return 1;
    }
    if (tsr_workspace_read_config(ws, &cfg, &ws_tp, &wt) != TSR_OK) {
        tsr_cli_err("tessera lite kv_qparams: %s\n", tsr_last_error());
        return 1;
    }
    if (tp == 0) tp = ws_tp;
    if (tp != ws_tp) {
        tsr_cli_err("tessera lite kv_qparams: --tp %lld: the workspace %s was converted for tensor_para_size %d; "
                    "give --tp %d (or convert again with --tp %lld)\n",
                    (long long)tp, ws, ws_tp, ws_tp, (long long)tp);
        return 1;
    }
    char *path = tsr_path_join(dir, TSR__CAL_FILE);
    tsr_lite_stats *s = NULL;
    if (!path || tsr_lite_stats_read(path, &s) != TSR_OK) {
        tsr_cli_err("tessera lite kv_qparams: %s (run tessera lite calibrate --work-dir %s first)\n", tsr_last_error(), dir);
        free(path);
        return 1;
    }
    const int64_t L = cfg.n_layer, H = cfg.n_kv_head, hd = cfg.head_dim;
    int status = 1;
    tsr_kv_qparams q = {.bits = bits, .symmetric = sym, .n_layer = L, .n_kv_head = H};
    if (s->n_layer != L || s->pt[TSR_OBS_K].dim != H * hd || s->pt[TSR_OBS_V].dim != H * hd) {
        tsr_cli_err("tessera lite kv_qparams: %s holds %lld layers of K/V width %lld; the workspace's model has %lld "
                    "layers of %lld KV heads x %lld (calibrate this model: tessera lite calibrate %s --work-dir %s)\n",
                    path, (long long)s->n_layer, (long long)s->pt[TSR_OBS_K].dim, (long long)L, (long long)H,
                    (long long)hd, ws, dir);
        goto done;
    }
    q.qp = malloc(sizeof(float) * 4 * (size_t)(L * H));
    if (!q.qp) {
        tsr_cli_err("tessera lite kv_qparams: out of memory\n");
        goto done;
    }
    const float half = (float)((1 << (bits - 1)) - 1), full = (float)((1 << bits) - 1);
    for (int64_t l = 0; l < L; l++)
        for (int part = 0; part < 2; part++) {
            const tsr_lite_point *p = &s->pt[l * TSR_LITE_N_POINTS + (part ? TSR_OBS_V : TSR_OBS_K)];
            for (int64_t h = 0; h < H; h++) {
                float mn = INFINITY, mx = -INFINITY, am = 0;
                for (int64_t c = h * hd; c < (h + 1) * hd; c++) {
                    mn = fminf(mn, p->min[c]);
                    mx = fmaxf(mx, p->max[c]);
                    am = fmaxf(am, p->absmax[c]);
                }
                if (!(mx >= mn) || !isfinite(mn) || !isfinite(mx)) {
                    tsr_cli_err("tessera lite kv_qparams: %s: layer %lld %s head %lld has no finite range\n", path,
                                (long long)l, part ? "V" : "K", (long long)h);
                    goto done;
                }
                float *o = q.qp + (l * H + h) * 4 + 2 * part;
                o[0] = sym ? am / half : (mx - mn) / full;
                o[1] = sym ? 0.0f : 0.5f * (mn + mx);
            }
        }
    if (bits == 4) {   /* K channel midpoints, in the workspace's (HF) channel order */
        if (s->k_gguf_order < 0) {
            tsr_cli_err("tessera lite kv_qparams: %s does not say its K channel order (an older file): run tessera lite "
                        "calibrate again\n", path);
            goto done;
        }
        q.head_dim = hd;
        q.k_chan = malloc(sizeof(float) * (size_t)(L * H * hd));
        if (!q.k_chan) {
            tsr_cli_err("tessera lite kv_qparams: out of memory\n");
            goto done;
        }
        for (int64_t l = 0; l < L; l++) {
            const tsr_lite_point *p = &s->pt[l * TSR_LITE_N_POINTS + TSR_OBS_K];
            for (int64_t h = 0; h < H; h++)
                for (int64_t j = 0; j < hd; j++) {   /* GGUF dim j is HF's (j % 2) * hd/2 + j / 2 */
                    int64_t c = h * hd + j, to = h * hd + (s->k_gguf_order ? (j % 2) * (hd / 2) + j / 2 : j);
                    q.k_chan[l * H * hd + to] = 0.5f * (p->min[c] + p->max[c]);
                }
        }
    }
    for (int64_t l = 0; l < L; l++)
        for (int r = 0; r < tp; r++) {
            tsr_shard sh;
            if (tsr_shard_plan(&cfg, r, (int)tp, &sh) != TSR_OK) {
                tsr_cli_err("tessera lite kv_qparams: %s\n", tsr_last_error());
                goto done;
            }
            const float *lq = q.qp + (l * H + sh.kv_head0) * 4;
            printf("Layer %lld MP %d qparam: k_scale ", (long long)l, r);
            tsr__print_list(lq, sh.n_kv_head, 0);
            printf(" k_zp ");
            tsr__print_list(lq, sh.n_kv_head, 1);
            printf(" v_scale ");
            tsr__print_list(lq, sh.n_kv_head, 2);
            printf(" v_zp ");
            tsr__print_list(lq, sh.n_kv_head, 3);
            printf("\n");
        }
    if (tsr_kv_qparams_save(ws, &q) != TSR_OK || tsr__ws_set_policy(ws, bits) != TSR_OK) {
        tsr_cli_err("tessera lite kv_qparams: %s\n", tsr_last_error());
        goto done;
    }
    printf("wrote %s/%s (int%lld, %s, %lld layers x %lld KV heads, TP %lld%s) and quant_policy = %lld in %s/config.ini\n",
           ws, TSR_KV_QPARAMS_FILE, (long long)bits, sym ? "symmetric" : "asymmetric", (long long)L, (long long)H,
           (long long)tp, bits == 4 ? ", K channel midpoints: the runtime uses these with online int4 scales" : "",
           (long long)bits, ws);
    status = 0;
done:
    tsr_kv_qparams_free(&q);
    tsr_lite_stats_free(s);
    free(path);
    return status;
}
