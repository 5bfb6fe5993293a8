/* `tessera logits [MODEL] --ids 1,2,3 [--all] [--out FILE]`: runs the forward pass on given
 * token ids (no tokenizer, no sampling) and prints the top logits per position, or writes the
 * raw little-endian f32 logits [n_positions][vocab].  It is what the golden tests compare
 * against HF transformers, and a debugging aid: --chunk feeds the ids in several steps through
 * the KV cache, --block-len changes the cache paging, so any difference between them is a bug. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/status.h"
#include "coordinator/block_manager.h"
#include "kernels/backend.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "worker/forward.h"
#include "worker/kv_pool.h"
#include "worker/runtime.h"

static int tsr__parse_ids(const char *s, int32_t **out, int64_t *n) {
    int64_t cap = 16, k = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids) return -1;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            free(ids);
            return -1;
        }
        if (k == cap) {
            cap *= 2;
            int32_t *r = realloc(ids, sizeof(int32_t) * (size_t)cap);
            if (!r) {
                free(ids);
                return -1;
            }
            ids = r;
        }
        ids[k++] = (int32_t)v;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    if (k == 0) {
        free(ids);
        return -1;
    }
    *out = ids;
    *n = k;
    return 0;
}

static void tsr__print_top(const float *row, int64_t vocab, int top) {
    int best[32];
    int nb = 0;
    for (int64_t v = 0; v < vocab; v++) {
        /* insertion into a tiny sorted list: ties keep the smaller id first */
        int at = nb;
        while (at > 0 && row[best[at - 1]] < row[v]) at--;
        if (at >= top) continue;
        if (nb < top) nb++;
        for (int i = nb - 1; i > at; i--) best[i] = best[i - 1];
        best[at] = (int)v;
    }
    for (int i = 0; i < nb; i++) printf("  %d (%.5f)", best[i], (double)row[best[i]]);
    printf("\n");
}

int tsr_cmd_logits(int argc, char **argv) {
    const char *ids_s = NULL, *out_path = NULL;
    bool all = false;
    int64_t top = 5, threads = 0, block_len = TSR_KV_DEFAULT_BLOCK_LEN, chunk = 512, tp = 0;
    const char *backend = "auto", *load_format = NULL;
    const tsr_opt opts[] = {
        {"--ids", TSR_OPT_STR, &ids_s, "LIST", "token ids, comma-separated (required)"},
        {"--all", TSR_OPT_FLAG, &all, NULL, "logits of every position (default: the last only)"},
        {"--out", TSR_OPT_STR, &out_path, "FILE", "write raw little-endian f32 logits [positions][vocab] to FILE"},
        {"--top", TSR_OPT_INT, &top, "N", "how many top logits to print per position (default 5, max 32)"},
        {"--threads", TSR_OPT_INT, &threads, "N", "CPU threads (default: $TESSERA_THREADS or all cores)"},
        {"--block-len", TSR_OPT_INT, &block_len, "N", "KV cache block length in tokens (default 64)"},
        {"--chunk", TSR_OPT_INT, &chunk, "N", "feed the ids in steps of at most N tokens (default 512)"},
        {"--backend", TSR_OPT_STR, &backend, "NAME", "auto (GPU when there is one), cpu or cuda"},
        {"--load-format", TSR_OPT_STR, &load_format, "F", TSR_LOAD_FORMAT_HELP},
        {"--tp", TSR_OPT_INT, &tp, "N", "expected tensor-parallel size (the mpirun -np N group)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera logits [MODEL] --ids 1,2,3 [--all] [--out FILE]",
                           "Runs the model on token ids and prints the top logits per position, or writes the raw "
                           "f32 logits.  MODEL: an HF directory or a GGUF file (default: the default model).",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc == TSR_CLI_HELP) return 0;
    if (rc != TSR_CLI_OK) return 1;
    if (!ids_s) {
        tsr_cli_err("tessera logits: --ids is required (e.g. --ids 1,2,3)\n");
        return 1;
    }
    if (top < 1 || top > 32 || block_len < 1 || chunk < 1 || threads < 0) {
        tsr_cli_err("tessera logits: --top must be 1..32, --block-len and --chunk positive\n");
        return 1;
    }
    int32_t *ids;
    int64_t n;
    if (tsr__parse_ids(ids_s, &ids, &n) != 0) {
        tsr_cli_err("tessera logits: --ids must be non-negative integers separated by commas\n");
        return 1;
    }
    const char *model_path = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!model_path) {
        free(ids);
        return 1;
    }

    int status = 1;
    tsr_runtime rt;
    tsr_kv_seq seq = {0};
    tsr_block_manager *bm = NULL;   /* the pool's block ids */
    float *logits = NULL;
    tsr_runtime_opts ro;
    tsr_runtime_opts_default(&ro);
    ro.model_path = model_path;
    ro.backend = backend;
    ro.load_format = load_format;
    ro.tp = tp;
    ro.threads = threads;
    ro.block_len = block_len;
    ro.cache_max_entry_count = (double)((n + block_len - 1) / block_len);
    if (tsr_runtime_open(&rt, &ro, &argc, &argv) != TSR_OK) {
        if (rt.group.rank == 0) tsr_cli_err("tessera logits: %s\n", tsr_last_error());
        free(ids);
        return 1;
    }
    if (rt.group.rank != 0) {
        free(ids);
        return tsr_runtime_worker_main(&rt);
    }
    tsr_model *m = rt.model;
    tsr_kv_pool *kv = &rt.kv;
    tsr_forward_state *fs = rt.fs;
    int64_t vocab = m->cfg.vocab_size, n_out = all ? n : 1;
    logits = malloc(sizeof(float) * (size_t)(n_out * vocab));
    if (!logits) {
        tsr_cli_err("tessera logits: out of memory for %lld x %lld logits\n", (long long)n_out, (long long)vocab);
        goto done;
    }
    if (tsr_bm_init(kv->n_blocks, kv->layout.block_len, &bm) != TSR_OK || tsr_bm_seq_reserve(bm, &seq, n) != TSR_OK)
        goto fail;
    double t0 = tsr_now();
    if (tsr_forward_seq(fs, kv, &seq, ids, n, all, chunk, logits) != TSR_OK) goto fail;
    TSR_LOGI("%lld tokens in %.3f s (%.1f tok/s)", (long long)n, tsr_now() - t0, (double)n / (tsr_now() - t0));
    if (out_path) {
        FILE *f = fopen(out_path, "wb");
        if (!f || fwrite(logits, sizeof(float), (size_t)(n_out * vocab), f) != (size_t)(n_out * vocab)) {
            tsr_cli_err("tessera logits: cannot write %s: %s\n", out_path, strerror(errno));
            if (f) fclose(f);
            goto done;
        }
        if (fclose(f) != 0) {
            tsr_cli_err("tessera logits: cannot write %s: %s\n", out_path, strerror(errno));
            goto done;
        }
    } else {
        for (int64_t i = 0; i < n_out; i++) {
            int64_t p = all ? i : n - 1;
            printf("pos %lld (id %d):", (long long)p, ids[p]);
            tsr__print_top(logits + i * vocab, vocab, (int)top);
        }
    }
    status = 0;
    goto done;
fail:
    tsr_cli_err("tessera logits: %s\n", tsr_last_error());
done:
    if (bm) tsr_bm_seq_release(bm, &seq);
    tsr_bm_free(bm);
    free(logits);
    tsr_runtime_close(&rt);
    free(ids);
    return status;
}
